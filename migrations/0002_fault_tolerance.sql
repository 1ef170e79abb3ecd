-- Issue 7: idempotent worker commits and fast crash recovery.

-- The key of the last fenced commit (step, turn end, attempt renewal) a worker applied to the
-- chat. A commit retried after its reply was lost finds its own key and writes nothing twice.
ALTER TABLE chats ADD COLUMN last_commit_key uuid;

-- The last seq the writing attempt had streamed when an assistant/tool row was committed: a
-- reader that is behind replays the attempt's previews up to here before the row, so a message
-- never overtakes its own previews nor trails the next step's.
ALTER TABLE chat_messages ADD COLUMN stream_seq bigint;

-- Which workers hold leases: the liveness check looks up the distinct lease holders often.
CREATE INDEX chats_worker ON chats (worker_id) WHERE worker_id IS NOT NULL;
