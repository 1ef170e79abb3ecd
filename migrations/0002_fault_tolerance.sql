-- Issue 7: idempotent worker commits and fast crash recovery.

-- The key of the last fenced commit (step, turn end, attempt renewal) a worker applied to the
-- chat. A commit retried after its reply was lost finds its own key and writes nothing twice.
ALTER TABLE chats ADD COLUMN last_commit_key uuid;

-- Which workers hold leases: the liveness check looks up the distinct lease holders often.
CREATE INDEX chats_worker ON chats (worker_id) WHERE worker_id IS NOT NULL;
