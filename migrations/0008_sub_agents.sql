-- Issue 11: sub-agents. A chat whose step waits for its sub-agents (`wait_agent`) is
-- `awaiting_agents`: it holds no worker and no slot; it becomes `pending` again when the
-- sub-agents it waits for have ended, or at the wait's deadline (`action_deadline_at`).
-- Builds before this one cannot read the new status: compatible only from here.
ALTER TABLE chats DROP CONSTRAINT chats_status_check;
ALTER TABLE chats ADD CONSTRAINT chats_status_check CHECK (status IN
    ('waiting', 'pending', 'running', 'interrupting', 'requires_action', 'awaiting_agents', 'error'));
CREATE INDEX chats_awaiting_deadline ON chats (action_deadline_at) WHERE status = 'awaiting_agents';

-- How deep a chat is in its tree (a root is 0): `--max-agent-depth` bounds `spawn_agent`.
ALTER TABLE chats ADD COLUMN depth smallint NOT NULL DEFAULT 0;
WITH RECURSIVE tree AS (
    SELECT id, 0 AS depth FROM chats WHERE parent_chat_id IS NULL
    UNION ALL
    SELECT c.id, tree.depth + 1 FROM chats c JOIN tree ON c.parent_chat_id = tree.id)
UPDATE chats c SET depth = tree.depth FROM tree WHERE c.id = tree.id AND tree.depth > 0;
