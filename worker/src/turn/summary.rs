//! Side requests to the chat's model that are not steps of the conversation: compaction
//! summaries and titles. Their text is collected, never streamed to clients.

use std::time::Duration;

use futures::StreamExt;

use crate::provider::{self, ModelRequest, ProviderError, ProviderEvent, Usage};

use super::context::ModelChoice;

/// Streams one request to the end and returns its text and usage. Bounded by `limit`.
pub async fn collect_text(
    http: &reqwest::Client,
    model: &ModelChoice,
    request: &ModelRequest,
    limit: Duration,
) -> Result<(String, Usage), ProviderError> {
    let work = async {
        let mut events = provider::stream(http, &model.endpoint, request).await?;
        let mut text = String::new();
        let mut usage = Usage::default();
        while let Some(event) = events.next().await {
            match event? {
                ProviderEvent::TextDelta(delta) => text.push_str(&delta),
                ProviderEvent::Usage(reported) => usage = reported,
                ProviderEvent::Finish { .. } => return Ok((text, usage)),
                _ => {}
            }
        }
        Err(ProviderError::truncated())
    };
    tokio::time::timeout(limit, work).await.map_err(|_| {
        ProviderError::new(
            provider::ErrorKind::Timeout,
            format!("no complete answer within {limit:?}"),
            true,
        )
    })?
}
