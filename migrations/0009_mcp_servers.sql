-- Issue 11: MCP servers an administrator configures; their tools are offered to chats as
-- `<name>__<tool>`. The secret of `bearer` and `headers` auth is sealed like provider API keys.
CREATE TABLE mcp_servers (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name            text NOT NULL CHECK (name ~ '^[a-z0-9_-]{1,32}$'),
    url             text NOT NULL,
    transport       text NOT NULL CHECK (transport IN ('streamable-http', 'sse')),
    auth_type       text NOT NULL DEFAULT 'none' CHECK (auth_type IN ('none', 'bearer', 'headers')),
    auth_encrypted  bytea,
    tool_allowlist  text[],
    tool_denylist   text[],
    availability    text NOT NULL DEFAULT 'default_on'
                    CHECK (availability IN ('force_on', 'default_on', 'default_off')),
    enabled         boolean NOT NULL DEFAULT true,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX mcp_servers_name ON mcp_servers (name);

-- The servers a chat picked at creation (`force_on` ones apply without being listed).
ALTER TABLE chats ADD COLUMN mcp_server_ids uuid[] NOT NULL DEFAULT '{}';
