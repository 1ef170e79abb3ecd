-- Issue 11: attachments, and an index for sub-chats. Files live in PostgreSQL (bytea) by
-- default, owned by a user and linked to the chats whose messages use them (deleting a chat
-- unlinks). A model config says whether its model accepts images.
CREATE TABLE files (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    owner_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name        text NOT NULL DEFAULT '',
    media_type  text NOT NULL,
    size_bytes  bigint NOT NULL,
    sha256      bytea NOT NULL,
    data        bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX files_owner ON files (owner_id, created_at);

CREATE TABLE chat_files (
    chat_id uuid NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
    file_id uuid NOT NULL REFERENCES files (id) ON DELETE CASCADE,
    PRIMARY KEY (chat_id, file_id)
);
CREATE INDEX chat_files_file ON chat_files (file_id);

ALTER TABLE model_configs ADD COLUMN supports_images boolean NOT NULL DEFAULT true;

-- Sub-chats by parent (`GET /chats/{id}` lists them; archive and delete walk the tree). Root
-- chats, most of the table, are not in it.
CREATE INDEX chats_parent ON chats (parent_chat_id) WHERE parent_chat_id IS NOT NULL;
