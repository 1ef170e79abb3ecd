-- A prototype of the schema NOTES.md ("Issue 14") proposes, for scripts/turn-limit/compare:
-- the pending queue and the leases leave `chats`, so that no index of `chats` names a column
-- a turn changes (status, worker_id, heartbeat_at, updated_at) and every per-turn update of
-- `chats` can be HOT. Applied to a scratch database only, never to chatd's.
CREATE TABLE chat_queue (
    chat_id       uuid PRIMARY KEY REFERENCES chats (id) ON DELETE CASCADE,
    pending_since timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX chat_queue_order ON chat_queue (pending_since);
CREATE TABLE chat_leases (
    chat_id      uuid PRIMARY KEY REFERENCES chats (id) ON DELETE CASCADE,
    owner_id     uuid NOT NULL,
    worker_id    uuid NOT NULL,
    heartbeat_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX chat_leases_owner ON chat_leases (owner_id);
CREATE INDEX chat_leases_worker ON chat_leases (worker_id);
DROP INDEX chats_pending, chats_leased, chats_worker, chats_running_owner, chats_action_deadline,
    chats_awaiting_deadline, chats_purge;
ALTER TABLE chats SET (fillfactor = 80);
