//! Built-in tools. Small on purpose: the product's real tools (workspace access, MCP servers)
//! plug into the same trait; the sub-agent tools live in `super::agents`.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use serde_json::{json, Value};

use super::{Tool, ToolContext};
use crate::provider::ToolSpec;

/// Names accepted by `--tools`.
pub const NAMES: &[&str] = &["current_time", "sleep", "spawn_agent", "wait_agent"];
/// The names among [`NAMES`] that are agent tools (`super::agents`), built per turn.
pub const AGENT_NAMES: &[&str] = &["spawn_agent", "wait_agent"];

pub fn by_name(name: &str) -> Option<Arc<dyn Tool>> {
    match name {
        "current_time" => Some(Arc::new(CurrentTime)),
        "sleep" => Some(Arc::new(Sleep)),
        _ => None,
    }
}

/// The current UTC time (models do not know the date).
pub struct CurrentTime;

impl Tool for CurrentTime {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "current_time".to_owned(),
            description: "Returns the current date and time in UTC (RFC 3339).".to_owned(),
            parameters: json!({"type": "object", "properties": {}, "additionalProperties": false}),
        }
    }

    fn call(
        &self,
        _args: Value,
        _context: ToolContext,
    ) -> BoxFuture<'static, Result<Value, String>> {
        async {
            time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .map(Value::String)
                .map_err(|error| format!("format the time: {error}"))
        }
        .boxed()
    }
}

/// Longest pause `sleep` accepts.
const MAX_SLEEP_SECONDS: f64 = 300.0;

/// Waits a number of seconds, e.g. before checking on something external again. It must run
/// alone: waiting while other calls of the same step race ahead is never what a model means.
pub struct Sleep;

impl Tool for Sleep {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "sleep".to_owned(),
            description: format!(
                "Waits the given number of seconds (at most {MAX_SLEEP_SECONDS}) and returns. \
                 Call it on its own, not together with other tools."
            ),
            parameters: json!({
                "type": "object",
                "properties": {"seconds": {"type": "number", "minimum": 0, "maximum": MAX_SLEEP_SECONDS}},
                "required": ["seconds"],
                "additionalProperties": false
            }),
        }
    }

    fn exclusive(&self) -> bool {
        true
    }

    fn call(
        &self,
        args: Value,
        _context: ToolContext,
    ) -> BoxFuture<'static, Result<Value, String>> {
        async move {
            let seconds = args
                .get("seconds")
                .and_then(Value::as_f64)
                .ok_or_else(|| "`seconds` must be a number".to_owned())?;
            if !(0.0..=MAX_SLEEP_SECONDS).contains(&seconds) {
                return Err(format!(
                    "`seconds` must be between 0 and {MAX_SLEEP_SECONDS}"
                ));
            }
            tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
            Ok(json!({"slept_seconds": seconds}))
        }
        .boxed()
    }
}
