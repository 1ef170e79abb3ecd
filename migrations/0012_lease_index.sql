-- Issue 14: fewer index entries per status change.
--
-- Every status change of a chat is a non-HOT update (`status` and `updated_at` are in index
-- predicates and keys), so each one adds an entry to every index of `chats` whose predicate
-- the new row meets. A claim (pending → running) added five: the primary key, the owner's
-- list, and three indexes of the same rows, the leased chats — `chats_leased` (heartbeat_at,
-- for the stale-lease sweep), `chats_worker` (worker_id, for the dead-worker release) and
-- `chats_running_owner` (owner_id, for the fair-share count). A worker leases at most its
-- concurrency in chats (and `chats_check` makes `worker_id IS NOT NULL` exactly the running
-- and interrupting chats), so the sweeps can read the whole of one small index and filter;
-- `chats_running_owner` stays and serves all three (their statements say
-- `worker_id IS NOT NULL`, its predicate). Heartbeats, which change only `heartbeat_at`,
-- can be HOT updates.
DROP INDEX chats_leased;
DROP INDEX chats_worker;
