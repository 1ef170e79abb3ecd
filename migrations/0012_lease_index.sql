-- Issue 14: fewer index entries per status change, and a claim's read bounded by its anchor.
--
-- Every status change of a chat is a non-HOT update (`status` and `updated_at` are in index
-- predicates and keys), so each one adds an entry to every index of `chats` whose predicate
-- the new row meets. A claim (pending → running) added five: the primary key, the owner's
-- list and three indexes of the leased chats — `chats_leased` (heartbeat_at, for the
-- stale-lease sweep), `chats_worker` (worker_id: the dead-worker release, a worker's
-- heartbeat) and `chats_running_owner` (owner_id: the fair-share count). The leased chats are
-- at most the workers' concurrency, so the stale-lease sweep can read a whole index of them
-- and filter by `heartbeat_at` (its statement says `worker_id IS NOT NULL`,
-- those indexes' predicate; `chats_check` makes that exactly the running and interrupting
-- chats). `chats_leased` goes: a claim writes four entries, and a heartbeat, which changes
-- only `heartbeat_at`, can be a HOT update. `chats_worker` stays: without it, statements
-- that name a worker (`worker_id = $1`) turn to scanning all of `chats_running_owner`.
DROP INDEX chats_leased;

-- The newest prompt row the chat's last claim saw (`worker/src/store/mod.rs`, `claim_picked!`):
-- the next claim reads the chat's newest rows from there on, which is where a worker's cached
-- prompt of the chat ends. Without the bound the read was planned for the average chat and,
-- when that was short, read a long chat's whole history to return six rows.
ALTER TABLE chats ADD COLUMN prompt_anchor_id bigint;
