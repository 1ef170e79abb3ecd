-- Issue 10: conversation management.
--
-- `deleted`: DELETE /chats/{id} hides a chat tree from every route; its messages stay, so spend
-- history keeps them.
-- `history_epoch`: bumped by every edit-and-rerun (the visible history stopped being
-- append-only); API replicas compare it to tell their streams `history_reset`.
-- `last_reply_id`: the newest visible assistant message, kept by the worker's commit and by
-- edits; `has_unread` compares it with `last_read_message_id` without a subquery.
ALTER TABLE chats ADD COLUMN deleted boolean NOT NULL DEFAULT false;
ALTER TABLE chats ADD COLUMN history_epoch integer NOT NULL DEFAULT 0;
ALTER TABLE chats ADD COLUMN last_reply_id bigint;

UPDATE chats c SET last_reply_id = r.id
FROM (SELECT chat_id, max(id) AS id FROM chat_messages
      WHERE role = 'assistant' AND NOT deleted GROUP BY chat_id) r
WHERE r.chat_id = c.id;
-- Chats that existed before unread tracking start read.
UPDATE chats SET last_read_message_id = last_reply_id
WHERE last_reply_id IS NOT NULL AND last_read_message_id IS NULL;

-- Pins are listed first; at most a handful per user.
CREATE INDEX chats_owner_pinned ON chats (owner_id, pin_order) WHERE pin_order > 0;
