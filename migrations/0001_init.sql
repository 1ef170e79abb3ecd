-- chatd initial schema. See DESIGN.md section 3 and ARCHITECTURE.md.

CREATE TABLE users (
    id                      uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    username                text NOT NULL UNIQUE,
    display_name            text NOT NULL DEFAULT '',
    is_admin                boolean NOT NULL DEFAULT false,
    chat_spend_limit_micros bigint,
    created_at              timestamptz NOT NULL DEFAULT now()
);

-- Tokens are `chatd_<prefix>_<secret>`; only sha256(secret) is stored. The prefix is the
-- lookup key, so verification is one indexed read plus a constant-time compare.
CREATE TABLE api_tokens (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id      uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         text NOT NULL DEFAULT '',
    prefix       text NOT NULL UNIQUE,
    secret_hash  bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    expires_at   timestamptz
);
CREATE INDEX api_tokens_user ON api_tokens (user_id);

CREATE TABLE groups (
    id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name               text NOT NULL UNIQUE,
    spend_limit_micros bigint,
    created_at         timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE group_members (
    group_id uuid NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
    user_id  uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    PRIMARY KEY (group_id, user_id)
);

CREATE TABLE providers (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    kind              text NOT NULL CHECK (kind IN ('openai', 'openai-responses', 'anthropic', 'openai-compatible', 'mock')),
    display_name      text NOT NULL DEFAULT '',
    base_url          text NOT NULL,
    -- AES-256-GCM(nonce || ciphertext) under the configured key; NULL = no key.
    api_key_encrypted bytea,
    enabled           boolean NOT NULL DEFAULT true,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE model_configs (
    id                          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    provider_id                 uuid NOT NULL REFERENCES providers (id),
    model                       text NOT NULL,
    display_name                text NOT NULL DEFAULT '',
    context_limit               integer NOT NULL DEFAULT 128000 CHECK (context_limit > 0),
    compression_threshold       integer NOT NULL DEFAULT 70 CHECK (compression_threshold BETWEEN 0 AND 100),
    max_output_tokens           integer CHECK (max_output_tokens > 0),
    input_price_micros          bigint CHECK (input_price_micros >= 0),
    output_price_micros         bigint CHECK (output_price_micros >= 0),
    cache_read_price_micros     bigint CHECK (cache_read_price_micros >= 0),
    cache_write_price_micros    bigint CHECK (cache_write_price_micros >= 0),
    is_default                  boolean NOT NULL DEFAULT false,
    enabled                     boolean NOT NULL DEFAULT true,
    deleted                     boolean NOT NULL DEFAULT false,
    created_at                  timestamptz NOT NULL DEFAULT now(),
    updated_at                  timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX model_configs_one_default ON model_configs ((true)) WHERE is_default AND NOT deleted;

CREATE TABLE chats (
    id                   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    owner_id             uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    parent_chat_id       uuid REFERENCES chats (id) ON DELETE CASCADE,
    root_chat_id         uuid REFERENCES chats (id) ON DELETE CASCADE,
    title                text NOT NULL DEFAULT '',
    status               text NOT NULL DEFAULT 'waiting'
                         CHECK (status IN ('waiting', 'pending', 'running', 'interrupting', 'requires_action', 'error')),
    -- Bumped by every durable change; every notification carries the version it describes.
    version              bigint NOT NULL DEFAULT 1,
    worker_id            uuid,
    -- Lease epoch: bumped on every acquire (and on edits), fences every worker write.
    attempt              integer NOT NULL DEFAULT 0,
    heartbeat_at         timestamptz,
    action_deadline_at   timestamptz,
    model_config_id      uuid REFERENCES model_configs (id),
    labels               jsonb NOT NULL DEFAULT '{}'::jsonb,
    dynamic_tools        jsonb NOT NULL DEFAULT '[]'::jsonb,
    mode                 text NOT NULL DEFAULT 'default',
    archived             boolean NOT NULL DEFAULT false,
    pin_order            integer NOT NULL DEFAULT 0,
    last_error           jsonb,
    last_read_message_id bigint,
    -- Consecutive acquisitions whose turn never finished (crash loop guard, R14).
    crash_count          integer NOT NULL DEFAULT 0,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    CHECK ((status IN ('running', 'interrupting')) = (worker_id IS NOT NULL))
);
CREATE INDEX chats_pending ON chats (updated_at) WHERE status = 'pending' AND NOT archived;
CREATE INDEX chats_leased ON chats (heartbeat_at) WHERE status IN ('running', 'interrupting');
CREATE INDEX chats_owner_list ON chats (owner_id, created_at DESC, id DESC) WHERE parent_chat_id IS NULL;
CREATE INDEX chats_labels ON chats USING gin (labels jsonb_path_ops);
CREATE INDEX chats_action_deadline ON chats (action_deadline_at) WHERE status = 'requires_action';

CREATE TABLE chat_messages (
    id                   bigserial PRIMARY KEY,
    chat_id              uuid NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
    role                 text NOT NULL CHECK (role IN ('system', 'user', 'assistant', 'tool')),
    content              jsonb NOT NULL,
    content_version      integer NOT NULL DEFAULT 1,
    visibility           text NOT NULL DEFAULT 'both' CHECK (visibility IN ('user', 'model', 'both')),
    created_by           uuid,
    model_config_id      uuid,
    input_tokens         bigint,
    output_tokens        bigint,
    reasoning_tokens     bigint,
    cache_read_tokens    bigint,
    cache_write_tokens   bigint,
    cost_micros          bigint,
    runtime_ms           bigint,
    provider_response_id text,
    -- The attempt (lease epoch) that wrote an assistant/tool row.
    attempt              integer,
    compressed           boolean NOT NULL DEFAULT false,
    deleted              boolean NOT NULL DEFAULT false,
    created_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX chat_messages_chat ON chat_messages (chat_id, id);

CREATE TABLE chat_queued_messages (
    id              bigserial PRIMARY KEY,
    chat_id         uuid NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
    content         jsonb NOT NULL,
    model_config_id uuid,
    created_by      uuid,
    -- Queue order: the head is the smallest position; promote moves a row to the front.
    position        double precision NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX chat_queued_messages_chat ON chat_queued_messages (chat_id, position);

-- Resume log of in-flight turns. UNLOGGED: losing it on a crash only costs resumability of
-- previews; the durable messages are elsewhere.
CREATE UNLOGGED TABLE chat_stream_frames (
    chat_id    uuid NOT NULL,
    attempt    integer NOT NULL,
    seq_from   bigint NOT NULL,
    seq_to     bigint NOT NULL,
    events     jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (chat_id, attempt, seq_from)
);

CREATE TABLE usage_limits (
    singleton      boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    enabled        boolean NOT NULL DEFAULT false,
    default_limit_micros bigint,
    period         text NOT NULL DEFAULT 'month' CHECK (period IN ('day', 'week', 'month'))
);
INSERT INTO usage_limits DEFAULT VALUES;

CREATE TABLE site_config (
    key        text PRIMARY KEY,
    value      jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
