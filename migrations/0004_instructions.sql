-- Issue 10: per-user instructions, added to every turn's prompt after the deployment's system
-- prompt (site_config key `system_prompt`). Additive: older chatd versions ignore the column.
ALTER TABLE users ADD COLUMN instructions text NOT NULL DEFAULT '';
