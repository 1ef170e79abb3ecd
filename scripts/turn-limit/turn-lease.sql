-- turn.sql on the prototype schema of lease-schema.sql: the same five steps, with the queue
-- and the lease in their own tables (run by scripts/turn-limit/compare).
\set own random(1, :chats)
-- (1) the user's message; the chat becomes pending and joins the queue
WITH m AS (
    INSERT INTO chat_messages (chat_id, role, content, created_by)
    VALUES (md5('turn-limit' || :own)::uuid, 'user',
            '[{"type": "text", "text": "a question of about ten words for the model to answer"}]',
            (SELECT owner_id FROM chats WHERE id = md5('turn-limit' || :own)::uuid))
    RETURNING chat_id),
u AS (
    UPDATE chats SET status = 'pending', version = version + 1, updated_at = now()
    WHERE id = (SELECT chat_id FROM m) AND status IN ('waiting', 'pending')
    RETURNING id)
INSERT INTO chat_queue (chat_id) SELECT id FROM u ON CONFLICT DO NOTHING;
-- (2) a worker claims the oldest queued chat (SKIP LOCKED) and takes its lease
WITH picked AS (
    DELETE FROM chat_queue WHERE chat_id = (
        SELECT chat_id FROM chat_queue ORDER BY pending_since LIMIT 1 FOR UPDATE SKIP LOCKED)
    RETURNING chat_id),
target AS (
    SELECT coalesce((SELECT chat_id FROM picked), md5('turn-limit' || :own)::uuid) AS id),
leased AS (
    INSERT INTO chat_leases (chat_id, owner_id, worker_id)
    SELECT c.id, c.owner_id, '00000000-0000-0000-0000-00000000b0b0' FROM chats c, target
    WHERE c.id = target.id
    ON CONFLICT (chat_id) DO UPDATE SET heartbeat_at = now())
UPDATE chats SET status = 'running', worker_id = '00000000-0000-0000-0000-00000000b0b0',
       attempt = attempt + 1, heartbeat_at = now(), version = version + 1, updated_at = now()
WHERE id = (SELECT id FROM target)
RETURNING title::int AS claimed, attempt AS attempt \gset
-- (3) the prompt: the chat's last 10 messages
SELECT role, content FROM chat_messages
WHERE chat_id = md5('turn-limit' || :claimed)::uuid AND NOT deleted
ORDER BY id DESC LIMIT 10;
-- (4) the 20-token answer; the chat waits again and its lease ends
WITH m AS (
    INSERT INTO chat_messages (chat_id, role, content, attempt, input_tokens, output_tokens,
                               runtime_ms)
    VALUES (md5('turn-limit' || :claimed)::uuid, 'assistant',
            '[{"type": "text", "text": "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty"}]',
            :attempt, 120, 20, 3)
    RETURNING chat_id),
released AS (
    DELETE FROM chat_leases WHERE chat_id = (SELECT chat_id FROM m))
UPDATE chats SET status = 'waiting', worker_id = NULL, heartbeat_at = NULL,
       version = version + 1, updated_at = now()
WHERE id = (SELECT chat_id FROM m);
-- (5) one frame of the resume log, and its notification
WITH f AS (
    INSERT INTO chat_stream_frames (chat_id, attempt, seq_from, seq_to, events)
    VALUES (md5('turn-limit' || :claimed)::uuid, :attempt, 1, 20,
            '[{"t": "text", "d": "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty"}]')
    ON CONFLICT DO NOTHING
    RETURNING chat_id)
SELECT pg_notify('chatd_chat_' || (:claimed % 64),
                 '{"c":"' || md5('turn-limit' || :claimed) || '","a":' || :attempt || ',"s":20}')
FROM f;
