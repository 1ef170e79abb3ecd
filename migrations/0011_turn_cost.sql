-- Issue 14: a turn that costs the same at message 500 as at message 5.

-- The worker that last claimed the chat. Workers keep the prompts of the chats they ran
-- (`worker/src/turn/prompt_cache.rs`) and read only the rows after the last one they have;
-- acquisition gives that worker the first chance at the chat's next turn (others take it after
-- a short grace), so the cache is hit. No index: it is only read with the chat's row.
ALTER TABLE chats ADD COLUMN last_worker_id uuid;

-- Where the prompt starts (the newest compaction summary): found by one index probe instead
-- of a walk over the chat's whole history.
CREATE INDEX chat_messages_summaries ON chat_messages (chat_id, id) WHERE compressed AND NOT deleted;

-- Chats without labels (most) no longer get an entry in the labels index on every update of
-- their row (every status change is a non-HOT update); label filters say `labels <> '{}'` so
-- the index still serves them.
DROP INDEX chats_labels;
CREATE INDEX chats_labels ON chats USING gin (labels jsonb_path_ops) WHERE labels <> '{}'::jsonb;
