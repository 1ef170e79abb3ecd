//! The owner's spend limit, checked before each model step.

use chatd_shared::domain::ChatError;

use super::{TurnContext, TurnDeps};

/// The `spend_limit_exceeded` error when the chat's owner is at or over their limit for the
/// current period (`None` while limits are off, under the limit, or when the check cannot be
/// read: a database hiccup does not fail turns; the next step checks again).
pub async fn spend_limit_reached(deps: &TurnDeps, turn: &TurnContext) -> Option<ChatError> {
    // Usually known without a connection (limits off, or a fresh status).
    let status = match deps.spend.cached(turn.owner_id) {
        Some(known) => Ok(known),
        None => {
            async {
                let client = deps.pool.get().await?;
                anyhow::Ok(deps.spend.status(&*client, turn.owner_id).await?)
            }
            .await
        }
    };
    let status = match status {
        Ok(status) => status?,
        Err(error) => {
            tracing::warn!(error = format!("{error:#}"), chat_id = %turn.chat_id, "read the owner's spend");
            return None;
        }
    };
    let limit = status.limit_micros?;
    if status.spent_micros < limit {
        return None;
    }
    let resets_at = status
        .resets_at
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    Some(ChatError::new(
        "spend_limit_exceeded",
        format!(
            "the spend limit is reached: {} of {} micro-dollars spent this {}; it resets at {resets_at}",
            status.spent_micros, limit, status.period
        ),
    ))
}
