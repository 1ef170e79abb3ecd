//! Automatic titles: after a chat's first exchange the model names it, in the background,
//! bounded in time. The title is published as a change (API replicas emit `title` on the chat
//! stream and on the watch stream).
//!
//! **Invariant:** a title never blocks or fails a turn, and never overwrites a title a user set
//! (the update only applies while the title is still empty).

use std::time::Duration;

use uuid::Uuid;

use chatd_shared::domain::{ContentPart, Role};
use chatd_shared::pubsub::{ChatChange, OwnerEventKind};

use super::context::ModelChoice;
use super::summary::collect_text;
use super::{TurnContext, TurnDeps};
use crate::provider::{ModelRequest, PromptMessage};

/// Longest title kept (characters).
const MAX_TITLE_CHARS: usize = 80;
/// How much of the exchange the title request quotes (characters per side).
const QUOTE_CHARS: usize = 2000;

const TITLE_INSTRUCTION: &str = "Write a short title (at most six words) for the conversation \
below. Reply with the title only: no quotes, no full stop.";

/// Starts title generation for the turn's chat in the background, owned by the worker's
/// side tasks (`TurnDeps::side_tasks`): shutdown stops it and waits for it before the flusher
/// stops, so a stored title's hint is still published.
pub fn spawn(deps: &TurnDeps, turn: &TurnContext, question: String, answer: String) {
    let limit = deps.config.title_timeout;
    if limit.is_zero() {
        return;
    }
    let deps = deps.clone();
    let (chat_id, owner_id, model) = (turn.chat_id, turn.owner_id, turn.model.clone());
    let stop = deps.side_stop.clone();
    deps.side_tasks.clone().spawn(async move {
        let exchange = (question, answer);
        let started = std::time::Instant::now();
        let generated = tokio::select! {
            generated = generate(&deps.http, &model, &exchange, limit) => generated,
            _ = stop.cancelled() => return,
        };
        let Some((title, usage)) = generated else {
            tracing::debug!(%chat_id, "no title generated");
            return;
        };
        // The request was billed whether or not its answer makes a title.
        let runtime_ms = started.elapsed().as_millis() as i64;
        if let Err(error) = record_usage(&deps, chat_id, owner_id, &model, &usage, runtime_ms).await
        {
            tracing::warn!(error = format!("{error:#}"), %chat_id, "record the title's usage");
        }
        match title {
            Some(title) => {
                if let Err(error) = store(&deps, chat_id, owner_id, &title).await {
                    tracing::warn!(error = format!("{error:#}"), %chat_id, "store the chat title");
                }
            }
            None => tracing::debug!(%chat_id, "no title generated"),
        }
    });
}

async fn generate(
    http: &reqwest::Client,
    model: &ModelChoice,
    (question, answer): &(String, String),
    limit: Duration,
) -> Option<(Option<String>, crate::provider::Usage)> {
    let quote = |text: &str| text.chars().take(QUOTE_CHARS).collect::<String>();
    let request = ModelRequest {
        model: model.model.clone(),
        messages: vec![
            PromptMessage {
                role: Role::System,
                content: vec![ContentPart::text(TITLE_INSTRUCTION)],
            },
            PromptMessage {
                role: Role::User,
                content: vec![ContentPart::text(format!(
                    "User: {}\n\nAssistant: {}",
                    quote(question),
                    quote(answer)
                ))],
            },
        ],
        max_output_tokens: Some(32),
        ..ModelRequest::default()
    };
    match collect_text(http, model, &request, limit).await {
        Ok((text, usage)) => Some((clean_title(&text), usage)),
        Err(error) => {
            tracing::debug!(error = %error, "title request failed");
            None
        }
    }
}

/// Stores what the title request cost (`usage_records`), so spend totals and limits count it,
/// and adds it to this worker's cached spend of the owner.
async fn record_usage(
    deps: &TurnDeps,
    chat_id: Uuid,
    owner_id: Uuid,
    model: &ModelChoice,
    usage: &crate::provider::Usage,
    runtime_ms: i64,
) -> anyhow::Result<()> {
    let cost = super::rows::cost_micros(model, usage);
    let client = deps.pool.get().await?;
    crate::store::turn::record_usage(
        &client,
        owner_id,
        chat_id,
        "title",
        model.model_config_id,
        usage,
        cost,
        runtime_ms,
    )
    .await?;
    deps.spend.add_spend(owner_id, cost.unwrap_or(0));
    Ok(())
}

/// First non-empty line, without quotes or a trailing full stop, at most
/// [`MAX_TITLE_CHARS`] characters.
pub fn clean_title(raw: &str) -> Option<String> {
    let line = raw.lines().map(str::trim).find(|line| !line.is_empty())?;
    let line = line
        .trim_start_matches("Title:")
        .trim()
        .trim_matches(|character| matches!(character, '"' | '\'' | '`' | '*'))
        .trim_end_matches('.')
        .trim();
    let title: String = line
        .chars()
        .filter(|character| !character.is_control())
        .take(MAX_TITLE_CHARS)
        .collect();
    let title = title.trim().to_owned();
    (!title.is_empty()).then_some(title)
}

async fn store(deps: &TurnDeps, chat_id: Uuid, owner_id: Uuid, title: &str) -> anyhow::Result<()> {
    let client = deps.pool.get().await?;
    let Some((version, status, attempt)) =
        crate::store::turn::set_title(&client, chat_id, title).await?
    else {
        return Ok(()); // a user titled it meanwhile
    };
    let change = ChatChange::new(chat_id, owner_id, version, status, attempt)
        .with_title(title)
        .with_owner_event(OwnerEventKind::Title);
    deps.flusher.publish_soon(change.notices());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::clean_title;

    #[test]
    fn titles_are_cleaned_and_bounded() {
        assert_eq!(
            clean_title("\n  \"Rust lifetimes.\"\nmore"),
            Some("Rust lifetimes".into())
        );
        assert_eq!(clean_title("Title: Paris trip"), Some("Paris trip".into()));
        assert_eq!(clean_title("   \n "), None);
        assert_eq!(clean_title(&"x".repeat(500)).map(|t| t.len()), Some(80));
    }
}
