//! The worker: acquires runnable chats, runs turns, publishes stream frames.
//!
//! **Invariant:** this crate never depends on `chatd-api`; it never knows the public wire
//! format except the SSE `data` of stream events it publishes (README.md's event table).

pub mod config;
pub mod flusher;
pub mod liveness;
pub mod mcp;
pub mod metrics_server;
pub mod provider;
pub mod recovery;
pub mod retention;
pub mod runtime;
pub mod store;
pub mod tool;
pub mod turn;

pub use config::WorkerConfig;
pub use runtime::run;
