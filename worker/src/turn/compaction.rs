//! Compaction: when a step's input tokens reach the model's threshold of
//! its context window, the model summarises the conversation; the summary is stored as a
//! `compressed` row and later prompts (this turn's next step included) start from it.
//!
//! **Invariant:** compaction never loses the conversation: old rows stay (prompts merely start
//! later), and a failed summary leaves the prompt as it was.

use std::time::Duration;

use chatd_shared::domain::{ContentPart, Role};

use super::context::ModelChoice;
use super::summary::collect_text;
use crate::provider::{ModelRequest, PromptMessage, Usage};
use crate::store::NewRow;

/// What the summarising request asks for.
pub const SUMMARY_INSTRUCTION: &str = "The conversation above is about to exceed the context \
window. Write a summary that lets you continue the work without it. Keep: the user's goals \
and constraints, decisions made and why, concrete names (files, functions, commands, URLs, \
identifiers, numbers), errors met and how they were handled, the current state, and the exact \
next action. Write only the summary.";

/// Visible first line of a summary row: the marker users see in the history.
pub const SUMMARY_HEADING: &str = "[Conversation summarised] Summary of the conversation so far:";

/// Bound on one summary request.
const SUMMARY_TIMEOUT: Duration = Duration::from_secs(180);

/// Whether a step that read `input_tokens` filled the window past the threshold.
pub fn should_compact(model: &ModelChoice, usage: &Usage) -> bool {
    model.compression_threshold > 0
        && model.context_limit > 0
        && usage.input_tokens.saturating_mul(100)
            >= model
                .context_limit
                .saturating_mul(model.compression_threshold)
}

/// The file parts of `prompt`'s non-system messages; without `with_bytes`, uploaded ones are
/// stripped of their bytes (inline ones keep them: they have no file to reload).
fn carried_attachments(prompt: &[PromptMessage], with_bytes: bool) -> Vec<ContentPart> {
    prompt
        .iter()
        .filter(|message| message.role != Role::System)
        .flat_map(|message| &message.content)
        .filter_map(|part| match part {
            ContentPart::File {
                media_type,
                file_id,
                data,
                name,
            } => Some(ContentPart::File {
                media_type: media_type.clone(),
                file_id: file_id.clone(),
                data: if file_id.is_some() && !with_bytes {
                    None
                } else {
                    data.clone()
                },
                name: name.clone(),
            }),
            _ => None,
        })
        .collect()
}

/// A summary ready to store: the row and the prompt that replaces the current one.
pub struct Compaction {
    pub row: NewRow,
    pub prompt: Vec<PromptMessage>,
}

/// Asks the model for a summary of `prompt`. `None` (logged) when the model fails; the turn
/// then goes on uncompacted.
pub async fn summarise(
    http: &reqwest::Client,
    model: &ModelChoice,
    prompt: &[PromptMessage],
) -> Option<Compaction> {
    let mut messages = prompt.to_vec();
    messages.push(PromptMessage {
        role: Role::User,
        content: vec![ContentPart::text(SUMMARY_INSTRUCTION)],
    });
    let request = ModelRequest {
        model: model.model.clone(),
        messages,
        max_output_tokens: model.max_output_tokens,
        ..ModelRequest::default()
    };
    let started = std::time::Instant::now();
    let (summary, usage) = match collect_text(http, model, &request, SUMMARY_TIMEOUT).await {
        Ok(answer) => answer,
        Err(error) => {
            tracing::warn!(error = %error, "compaction summary failed; continuing uncompacted");
            metrics::counter!("chatd_compactions_total", "outcome" => "failed").increment(1);
            return None;
        }
    };
    if summary.trim().is_empty() {
        tracing::warn!("compaction summary was empty; continuing uncompacted");
        return None;
    }
    metrics::counter!("chatd_compactions_total", "outcome" => "done").increment(1);
    let mut content = vec![ContentPart::text(format!(
        "{SUMMARY_HEADING}\n\n{}",
        summary.trim().replace('\0', "\u{FFFD}")
    ))];
    // Attachments survive by reference: the summary carries the summarised messages' file
    // parts — in this turn's prompt with their bytes, in the stored row without (the next
    // turn loads them again).
    let stored_attachments = carried_attachments(prompt, false);
    let mut stored = content.clone();
    stored.extend(stored_attachments);
    content.extend(carried_attachments(prompt, true));
    let mut next_prompt: Vec<PromptMessage> = prompt
        .iter()
        .filter(|message| message.role == Role::System)
        .cloned()
        .collect();
    next_prompt.push(PromptMessage {
        role: Role::User,
        content: content.clone(),
    });
    let row = NewRow {
        role: Role::User,
        content: serde_json::to_value(&stored).unwrap_or_default(),
        model_config_id: Some(model.model_config_id),
        // The summary request is billed like a step; its spend is recorded on its row.
        usage: Some(super::rows::billed(model, &usage)),
        runtime_ms: Some(started.elapsed().as_millis() as i64),
        provider_response_id: None,
        compressed: true,
    };
    Some(Compaction {
        row,
        prompt: next_prompt,
    })
}
