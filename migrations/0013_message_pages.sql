-- Issue 14: a page of a chat's messages reads the page, however long the chat.
--
-- The API's message pages (`GET /chats/{id}/messages` and a stream's snapshot) ask for a
-- chat's newest visible rows before or after a cursor. Pooled sessions run generic plans,
-- and PostgreSQL estimates a chat's rows as the average chat's: planned while chats were
-- short, a page was a bitmap scan of all the chat's rows plus a sort (5,003 rows read to
-- return 51 of a 5,000-message chat, ≈5 ms). The statement runs in this function with the
-- bitmap scan, the sequential scan and the sort switched off while it is planned, which
-- leaves one plan: the backward scan of `chat_messages_chat`, which stops after `n` visible
-- rows. PL/pgSQL keeps the plan for the session (a SQL function with `SET` clauses would be
-- planned on every call). `after_id` and `before_id` are exclusive bounds; NULL for none.
CREATE FUNCTION chat_messages_newest(chat uuid, after_id bigint, before_id bigint, n bigint)
    RETURNS SETOF chat_messages
    LANGUAGE plpgsql STABLE
    SET enable_bitmapscan = off
    SET enable_seqscan = off
    SET enable_sort = off
AS $$
BEGIN
    RETURN QUERY
    SELECT * FROM chat_messages m
    WHERE m.chat_id = chat
      AND m.id > coalesce(after_id, 0)
      AND m.id < coalesce(before_id, 9223372036854775807)
      AND NOT m.deleted AND m.visibility <> 'model'
    ORDER BY m.id DESC
    LIMIT n;
END
$$;
