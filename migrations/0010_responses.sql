-- Issue 12: the OpenAI-compatible front door (`/v1`). A response is a turn of a chat; this table
-- keeps what OpenAI's API says about a response that the chat does not (the requested model
-- name, instructions, metadata, tools, `previous_response_id`) and where its rows begin.

-- `hidden`: not listed (`GET /chats`, the watch stream): Chat Completions requests and
-- `store: false` responses. `purge_after_s`: an ephemeral chat, deleted (and its contents
-- emptied; spend stays counted) this many seconds after its last change once it is idle.
ALTER TABLE chats ADD COLUMN hidden boolean NOT NULL DEFAULT false;
ALTER TABLE chats ADD COLUMN purge_after_s integer CHECK (purge_after_s > 0);
CREATE INDEX chats_purge ON chats (updated_at) WHERE purge_after_s IS NOT NULL AND NOT deleted;

CREATE TABLE responses (
    id                   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    chat_id              uuid NOT NULL REFERENCES chats (id),
    owner_id             uuid NOT NULL REFERENCES users (id),
    previous_response_id uuid REFERENCES responses (id),
    -- The response's input rows are (after the previous response's rows) up to and including
    -- `input_last_id`; its output rows follow, until the next user row or the next response.
    input_first_id       bigint NOT NULL,
    input_last_id        bigint NOT NULL,
    -- `chats.attempt` when it was created: its turn runs in later attempts.
    start_attempt        integer NOT NULL,
    model                text NOT NULL,
    instructions         text,
    metadata             jsonb NOT NULL DEFAULT '{}',
    tools                jsonb NOT NULL DEFAULT '[]',
    store                boolean NOT NULL,
    background           boolean NOT NULL,
    cancelled            boolean NOT NULL DEFAULT false,
    created_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX responses_chat ON responses (chat_id, input_first_id);
