-- Issue 14: the resume log keeps each frame's events as the worker wrote them.
--
-- `chat_stream_frames.events` is written once per flush, by every turn, and read back only
-- when a client resumes a stream. As `jsonb` every frame was parsed and rebuilt into
-- PostgreSQL's binary form on insert (and turned back into text on each read); `json` only
-- checks that the text is valid JSON and stores it as it is. An insert of seven 20-token
-- frames takes ≈0.7 ms instead of ≈1.3–1.5 ms (`scripts/turn-limit/frames`: pgbench, one
-- client). Builds at version 13 keep running: their `jsonb` frames are cast to `json` on
-- insert (an assignment cast), and they read the column as JSON either way.
ALTER TABLE chat_stream_frames ALTER COLUMN events TYPE json USING events::json;
