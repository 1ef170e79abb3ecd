-- Issue 10: spend limits, fair share, users and tokens.
--
-- `usage_records`: billed requests that are not messages (chat titles), so spend totals and
-- limits count them. Steps and compaction summaries carry their usage on their message rows.
CREATE TABLE usage_records (
    id                 bigserial PRIMARY KEY,
    owner_id           uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    chat_id            uuid REFERENCES chats (id) ON DELETE SET NULL,
    kind               text NOT NULL CHECK (kind IN ('title')),
    model_config_id    uuid,
    input_tokens       bigint NOT NULL DEFAULT 0,
    output_tokens      bigint NOT NULL DEFAULT 0,
    reasoning_tokens   bigint NOT NULL DEFAULT 0,
    cache_read_tokens  bigint NOT NULL DEFAULT 0,
    cache_write_tokens bigint NOT NULL DEFAULT 0,
    cost_micros        bigint,
    runtime_ms         bigint,
    created_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX usage_records_owner ON usage_records (owner_id, created_at);

-- A suspended user's tokens stop working on every replica within a second.
ALTER TABLE users ADD COLUMN suspended boolean NOT NULL DEFAULT false;

-- Fair share: the claim counts each candidate owner's running chats.
CREATE INDEX chats_running_owner ON chats (owner_id) WHERE worker_id IS NOT NULL;

-- One group limit per group; a user's own limit wins, else the lowest of their groups'.
CREATE INDEX group_members_user ON group_members (user_id);
