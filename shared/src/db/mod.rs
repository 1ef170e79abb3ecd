//! Database access: pool, migrations, row types and the reads both sides share.
//!
//! State transitions live with the side that performs them (`chatd-api` store module,
//! `chatd-worker` store module); this module holds what both need.

pub mod admin;
pub mod migrate;
pub mod pool;
pub mod queue;
pub mod reads;
pub mod rows;
pub mod tool_calls;
