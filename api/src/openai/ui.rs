//! What the AI SDK UI message stream (`crate::aisdk`) uses of the front door: a turn is created
//! and followed exactly as a response is.

pub use super::create::{create, NewResponse};
pub use super::input::Item;
pub use super::models::model_entry;
pub use super::response_id;
pub use super::store::{current_turn, ResponseRow};
pub use super::stream::follow;
