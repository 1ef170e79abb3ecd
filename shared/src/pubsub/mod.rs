//! PostgreSQL LISTEN/NOTIFY: channel names, payload types, post-commit publishing and the
//! dedicated listener connection.
//!
//! **Invariant:** a notification is a hint. Every consumer stays correct if one is lost,
//! duplicated, delayed or reordered: payloads carry versions/seqs, and every (re)connect is
//! followed by a re-read from the database.

pub mod change;
pub mod config;
pub mod listener;
pub mod notices;
pub mod publish;

pub use change::ChatChange;
pub use config::{publish_config_change, ConfigKind, ConfigNotice};
pub use listener::{Listener, ListenerEvent};
pub use notices::*;
pub use publish::{publish, Publisher};
