//! Code shared by `chatd-api` and `chatd-worker`: domain types, database access, pub/sub,
//! auth tokens, telemetry and the embedded PostgreSQL used by `chatd dev` and the tests.
//!
//! **Invariant:** this crate never depends on `chatd-api` or `chatd-worker`.

pub mod auth;
pub mod crypto;
pub mod db;
pub mod domain;
pub mod files;
pub mod pg_embed;
pub mod pubsub;
pub mod sse;
pub mod telemetry;
pub mod tool_decl;
pub mod validate;
