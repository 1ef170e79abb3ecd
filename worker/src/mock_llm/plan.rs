//! Decides what the mock answers to one request, before anything is sent.
//!
//! A [`Plan`] is plain data: the content chunks (reasoning tokens, then text tokens or tool-call
//! fragments), the pacing, and the failure to inject. The streaming and JSON writers only render
//! it, so every behaviour is decided in one place.

use std::ops::Range;
use std::time::Duration;

use crate::mock_llm::directives::{parse_directives, Directives};
use crate::mock_llm::reply::{
    count_words, generated_token, piece_ends, reasoning_seed, reply_seed, tool_results_reply,
};
use crate::provider::openai_chat::wire::ChatRequest;

/// Reply length when no `tokens` directive is given.
pub const DEFAULT_TOKENS: usize = 12;

#[derive(Debug)]
pub struct Plan {
    pub model: String,
    /// `chatcmpl-mock-<hash of the request body>`: stable across identical requests.
    pub response_id: String,
    pub include_usage: bool,
    /// Whitespace-separated words in all request messages.
    pub prompt_tokens: usize,
    pub reasoning: TextSource,
    pub output: Output,
    pub ttft: Duration,
    /// Time between content chunks; `None` streams as fast as possible.
    pub chunk_interval: Option<Duration>,
    /// Pause before the content chunk at `stall_at`.
    pub stall: Duration,
    pub stall_at: usize,
    /// `fail_times` from the directive; `None` means the failure applies to every request.
    pub fail_times: Option<u32>,
    /// What a failing request gets (see [`Failure`]).
    pub failure: Failure,
}

/// The injected failure of a request that is meant to fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    None,
    /// Answer with this HTTP status and an OpenAI-style error body.
    Status {
        status: u16,
        retry_after_s: Option<u64>,
    },
    /// Stream this many content chunks, then end the body without a finish chunk or `[DONE]`.
    Cut {
        after: usize,
    },
}

#[derive(Debug)]
pub enum Output {
    Text(TextSource),
    ToolCalls(Vec<PlannedToolCall>),
}

/// A sequence of text tokens, generated on demand or cut from a fixed text.
#[derive(Debug)]
pub enum TextSource {
    Generated { seed: u64, count: usize },
    Fixed { text: String, ends: Vec<usize> },
}

#[derive(Debug)]
pub struct PlannedToolCall {
    /// `call_<n>`, numbered after the tool calls already in the conversation.
    pub id: String,
    pub name: String,
    /// The arguments as JSON text, streamed in 2-3 fragments.
    pub arguments: String,
    pub fragments: Vec<Range<usize>>,
}

/// One content chunk of a plan.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece<'a> {
    Reasoning(&'a str),
    Text(&'a str),
    /// The first chunk of a call: id and name, empty arguments.
    ToolCallHeader {
        index: usize,
        id: &'a str,
        name: &'a str,
    },
    ToolCallArguments {
        index: usize,
        fragment: &'a str,
    },
}

impl TextSource {
    pub fn token_count(&self) -> usize {
        match self {
            TextSource::Generated { count, .. } => *count,
            TextSource::Fixed { ends, .. } => ends.len(),
        }
    }

    pub fn piece(&self, index: usize) -> &str {
        match self {
            TextSource::Generated { seed, count } => generated_token(*seed, index, *count),
            TextSource::Fixed { text, ends } => {
                let start = index.checked_sub(1).and_then(|previous| ends.get(previous));
                let end = ends.get(index);
                match (start.copied().unwrap_or(0), end) {
                    (start, Some(&end)) => text.get(start..end).unwrap_or(""),
                    _ => "",
                }
            }
        }
    }

    pub fn full_text(&self) -> String {
        (0..self.token_count())
            .map(|index| self.piece(index))
            .collect()
    }
}

impl Plan {
    /// Plans the answer to `request`; `Err` is the message of a 400 answer.
    pub fn from_request(request: &ChatRequest, body_hash: u64) -> Result<Plan, String> {
        let last_user_text = request
            .messages
            .iter()
            .rev()
            .find(|message| message.role == "user")
            .and_then(|message| message.content.as_ref())
            .map(|content| content.text().into_owned())
            .unwrap_or_default();
        let directives = parse_directives(&last_user_text)?;
        let last_role = request.messages.last().map(|message| message.role.as_str());
        let output = match (last_role, &directives.tool_calls) {
            (Some("tool"), _) => Output::Text(quote_tool_results(request)),
            (Some("user"), Some(calls)) if !calls.is_empty() => {
                let first_number = request
                    .messages
                    .iter()
                    .filter_map(|message| message.tool_calls.as_ref())
                    .map(Vec::len)
                    .sum::<usize>();
                Output::ToolCalls(
                    calls
                        .iter()
                        .enumerate()
                        .map(|(index, call)| {
                            let arguments = call.arguments.to_string();
                            PlannedToolCall {
                                id: format!("call_{}", first_number + index),
                                name: call.name.clone(),
                                fragments: fragment_ranges(&arguments),
                                arguments,
                            }
                        })
                        .collect(),
                )
            }
            _ => Output::Text(TextSource::Generated {
                seed: reply_seed(&last_user_text),
                count: directives.tokens.unwrap_or(DEFAULT_TOKENS),
            }),
        };
        let prompt_tokens = request
            .messages
            .iter()
            .filter_map(|message| message.content.as_ref())
            .map(|content| count_words(&content.text()))
            .sum();
        let reasoning = TextSource::Generated {
            seed: reasoning_seed(&last_user_text),
            count: directives.reasoning_tokens.unwrap_or(0),
        };
        let mut plan = Plan {
            model: if request.model.is_empty() {
                "mock".to_owned()
            } else {
                request.model.clone()
            },
            response_id: format!("chatcmpl-mock-{body_hash:016x}"),
            include_usage: request
                .stream_options
                .is_some_and(|options| options.include_usage),
            prompt_tokens,
            reasoning,
            output,
            ttft: Duration::from_millis(directives.ttft_ms.unwrap_or(0)),
            chunk_interval: directives
                .tokens_per_second
                .filter(|rate| *rate > 0.0)
                .and_then(|rate| Duration::try_from_secs_f64(1.0 / rate).ok()),
            stall: Duration::from_millis(directives.stall_ms.unwrap_or(0)),
            stall_at: 0,
            fail_times: directives.fail_times,
            failure: failure_of(&directives),
        };
        plan.stall_at = plan.content_chunks() / 2;
        Ok(plan)
    }

    /// Reasoning tokens plus text tokens or tool-call chunks (header and fragments).
    pub fn content_chunks(&self) -> usize {
        self.reasoning.token_count() + self.output_chunks()
    }

    pub fn output_chunks(&self) -> usize {
        match &self.output {
            Output::Text(text) => text.token_count(),
            Output::ToolCalls(calls) => calls.iter().map(|call| 1 + call.fragments.len()).sum(),
        }
    }

    /// Content chunk `index` (< [`Plan::content_chunks`]).
    pub fn piece(&self, index: usize) -> Piece<'_> {
        let reasoning = self.reasoning.token_count();
        if index < reasoning {
            return Piece::Reasoning(self.reasoning.piece(index));
        }
        let mut offset = index - reasoning;
        match &self.output {
            Output::Text(text) => Piece::Text(text.piece(offset)),
            Output::ToolCalls(calls) => {
                for (call_index, call) in calls.iter().enumerate() {
                    if offset == 0 {
                        return Piece::ToolCallHeader {
                            index: call_index,
                            id: &call.id,
                            name: &call.name,
                        };
                    }
                    if let Some(range) = call.fragments.get(offset - 1) {
                        return Piece::ToolCallArguments {
                            index: call_index,
                            fragment: call.arguments.get(range.clone()).unwrap_or(""),
                        };
                    }
                    offset -= 1 + call.fragments.len();
                }
                Piece::Text("")
            }
        }
    }

    pub fn finish_reason(&self) -> &'static str {
        match self.output {
            Output::Text(_) => "stop",
            Output::ToolCalls(_) => "tool_calls",
        }
    }
}

/// Without `fail_times` the failure applies to every request; with it, the first requests fail
/// with `error_status`, or are cut when only `cut_after` is given, or get a 500.
fn failure_of(directives: &Directives) -> Failure {
    let status = directives.error_status.map(|status| Failure::Status {
        status,
        retry_after_s: directives.retry_after_s,
    });
    let cut = directives.cut_after.map(|after| Failure::Cut { after });
    match (status.or(cut), directives.fail_times) {
        (Some(failure), _) => failure,
        (None, Some(_)) => Failure::Status {
            status: 500,
            retry_after_s: directives.retry_after_s,
        },
        (None, None) => Failure::None,
    }
}

/// The trailing `tool` messages, named after the assistant calls they answer.
fn quote_tool_results(request: &ChatRequest) -> TextSource {
    let trailing = request
        .messages
        .iter()
        .rev()
        .take_while(|message| message.role == "tool")
        .count();
    let first = request.messages.len() - trailing;
    let results: Vec<(String, String)> = request.messages[first..]
        .iter()
        .map(|message| {
            let call_id = message.tool_call_id.clone().unwrap_or_default();
            let name = request
                .messages
                .iter()
                .filter_map(|candidate| candidate.tool_calls.as_ref())
                .flatten()
                .find(|call| call.id == call_id)
                .map_or(call_id.clone(), |call| call.function.name.clone());
            let content = message
                .content
                .as_ref()
                .map(|content| content.text().into_owned())
                .unwrap_or_default();
            (name, content)
        })
        .collect();
    let text = tool_results_reply(
        results
            .iter()
            .map(|(name, content)| (name.as_str(), content.as_str())),
    );
    TextSource::Fixed {
        ends: piece_ends(&text),
        text,
    }
}

/// Splits JSON text into 3 fragments (2 when it is too short), at character boundaries.
fn fragment_ranges(arguments: &str) -> Vec<Range<usize>> {
    let boundaries: Vec<usize> = arguments.char_indices().map(|(offset, _)| offset).collect();
    let parts = boundaries.len().clamp(1, 3);
    let mut ranges = Vec::with_capacity(parts);
    let mut start = 0;
    for part in 1..=parts {
        let end = if part == parts {
            arguments.len()
        } else {
            boundaries
                .get(boundaries.len() * part / parts)
                .copied()
                .unwrap_or(arguments.len())
        };
        ranges.push(start..end);
        start = end;
    }
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragments_cover_the_arguments() {
        for arguments in ["{}", "{\"city\":\"Zürich\"}", "x", "{\"a\":1}"] {
            let ranges = fragment_ranges(arguments);
            assert!(
                (2..=3).contains(&ranges.len()) || arguments.len() < 2,
                "{arguments}"
            );
            let rebuilt: String = ranges
                .iter()
                .map(|range| &arguments[range.clone()])
                .collect();
            assert_eq!(rebuilt, arguments);
        }
        assert_eq!(fragment_ranges("{}"), vec![0..1, 1..2]);
    }

    #[test]
    fn failures_follow_the_directive_rules() {
        let directives = |json: &str| parse_directives(&format!("@mock {json}")).expect("valid");
        assert_eq!(failure_of(&directives("{}")), Failure::None);
        assert_eq!(
            failure_of(&directives(r#"{"fail_times": 2}"#)),
            Failure::Status {
                status: 500,
                retry_after_s: None
            }
        );
        assert_eq!(
            failure_of(&directives(r#"{"fail_times": 1, "cut_after": 3}"#)),
            Failure::Cut { after: 3 }
        );
        assert_eq!(
            failure_of(&directives(
                r#"{"error_status": 429, "retry_after_s": 2, "cut_after": 3}"#
            )),
            Failure::Status {
                status: 429,
                retry_after_s: Some(2)
            }
        );
    }
}
