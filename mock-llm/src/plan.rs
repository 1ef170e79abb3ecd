//! Decides what the mock answers to one request, before anything is sent.
//!
//! A [`Plan`] is plain data: the content chunks (reasoning tokens, then text tokens or tool-call
//! fragments), the pacing, and the failure to inject. The streaming and JSON writers only render
//! it, so every behaviour is decided in one place.

use std::ops::Range;
use std::time::Duration;

use crate::conversation::{Conversation, Ending, ToolResult};
use crate::directives::{parse_directives, Directives, Echo, StreamErrorKind};
use crate::reply::{generated_token, piece_ends, reasoning_seed, reply_seed, tool_results_reply};

mod tool_calls;

#[cfg(test)]
use tool_calls::fragment_ranges;
use tool_calls::planned_tool_calls;

/// Reply length when no `tokens` directive is given.
pub const DEFAULT_TOKENS: usize = 12;

#[derive(Debug)]
pub struct Plan {
    pub model: String,
    /// The protocol's response id, chosen by the caller (e.g. `chatcmpl-mock-<body hash>`).
    pub response_id: String,
    /// Words of all text in the conversation (see [`Conversation::prompt_words`]).
    pub prompt_tokens: usize,
    /// How many of `prompt_tokens` are reported as read from the prompt cache (≤ prompt_tokens).
    pub cached_tokens: usize,
    pub reasoning: TextSource,
    pub output: Output,
    pub finish: Finish,
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
    /// `error_message_bytes`: an injected error status carries a message this long.
    pub error_message_bytes: Option<usize>,
    /// `forget_responses`: the Responses route clears its store and does not store this answer.
    pub forget_responses: bool,
}

/// Why the answer ends, in protocol-neutral terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    Stop,
    /// The reasoning and text were cut at the request's output limit.
    Length,
    ToolCalls,
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
    /// Stream this many content chunks, then end the body without a terminal event.
    Cut {
        after: usize,
    },
    /// Stream this many content chunks, then the protocol's in-stream error event, then end.
    StreamError {
        after: usize,
        kind: StreamErrorKind,
    },
    /// `stall_ms` with `fail_times` (and no other failure): the failing requests stall
    /// mid-stream, the later ones stream without the stall.
    Stall,
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
    /// `<prefix><n>` (e.g. `call_3`), numbered after the tool calls already in the conversation.
    pub id: String,
    /// `n` of the id, for protocols that derive more ids from it (Responses item ids).
    pub number: usize,
    pub name: String,
    /// The arguments as JSON text, streamed in 2-3 fragments.
    pub arguments: String,
    /// The same arguments as a value (Anthropic sends an object in non-streaming answers).
    pub arguments_value: serde_json::Value,
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

    /// The first `max` tokens. A generated text keeps its seed, so it reads like
    /// [`crate::reply_text`] with `max` tokens.
    fn truncated(self, max: usize) -> TextSource {
        match self {
            TextSource::Generated { seed, count } => TextSource::Generated {
                seed,
                count: count.min(max),
            },
            TextSource::Fixed { text, mut ends } => {
                ends.truncate(max);
                let text = match ends.last() {
                    Some(&end) => text.get(..end).unwrap_or_default().to_owned(),
                    None => String::new(),
                };
                TextSource::Fixed { text, ends }
            }
        }
    }
}

impl Plan {
    /// Plans the answer to `conversation`; `Err` is the message of a 400 answer. Tool call ids
    /// are `tool_call_prefix` followed by a number.
    pub fn from_conversation(
        conversation: &Conversation,
        response_id: String,
        tool_call_prefix: &str,
    ) -> Result<Plan, String> {
        let directives = parse_directives(&conversation.last_user_text)?;
        let budget = conversation
            .max_tokens
            .map_or(usize::MAX, |max| usize::try_from(max).unwrap_or(usize::MAX));
        let requested_reasoning = directives.reasoning_tokens.unwrap_or(0);
        let reasoning_count = requested_reasoning.min(budget);
        let mut truncated = reasoning_count < requested_reasoning;
        let text_budget = budget - reasoning_count;
        let output = match planned_tool_calls(conversation, &directives, tool_call_prefix) {
            Some(calls) => Output::ToolCalls(calls),
            None => {
                let text = match (&conversation.ending, directives.echo) {
                    (_, Some(echo)) => {
                        let text = echo_text(conversation, echo);
                        TextSource::Fixed {
                            ends: piece_ends(&text),
                            text,
                        }
                    }
                    (Ending::ToolResults(results), None) => quote_tool_results(results),
                    _ => TextSource::Generated {
                        seed: reply_seed(&conversation.last_user_text),
                        count: directives.tokens.unwrap_or(DEFAULT_TOKENS),
                    },
                };
                truncated |= text.token_count() > text_budget;
                Output::Text(text.truncated(text_budget))
            }
        };
        let finish = match (&output, truncated) {
            (Output::ToolCalls(_), _) => Finish::ToolCalls,
            (Output::Text(_), true) => Finish::Length,
            (Output::Text(_), false) => Finish::Stop,
        };
        let mut plan = Plan {
            model: conversation.model.clone(),
            response_id,
            prompt_tokens: conversation.prompt_words,
            cached_tokens: directives
                .cached_tokens
                .unwrap_or(0)
                .min(conversation.prompt_words),
            reasoning: TextSource::Generated {
                seed: reasoning_seed(&conversation.last_user_text),
                count: reasoning_count,
            },
            output,
            finish,
            ttft: Duration::from_millis(directives.ttft_ms.unwrap_or(0)),
            chunk_interval: directives
                .tokens_per_second
                .filter(|rate| *rate > 0.0)
                .and_then(|rate| Duration::try_from_secs_f64(1.0 / rate).ok()),
            stall: Duration::from_millis(directives.stall_ms.unwrap_or(0)),
            stall_at: 0,
            fail_times: directives.fail_times,
            error_message_bytes: directives.error_message_bytes,
            failure: failure_of(&directives),
            forget_responses: directives.forget_responses.unwrap_or(false),
        };
        plan.stall_at = plan.content_chunks() / 2;
        Ok(plan)
    }

    /// Reasoning tokens plus text tokens or tool-call chunks (header and fragments); also the
    /// output token count every protocol reports.
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

    /// Chat Completions' name of [`Plan::finish`].
    pub fn finish_reason(&self) -> &'static str {
        match self.finish {
            Finish::Stop => "stop",
            Finish::Length => "length",
            Finish::ToolCalls => "tool_calls",
        }
    }
}

/// Without `fail_times` the failure applies to every request; with it, the first requests fail
/// with `error_status`, else the `cut_after` cut, else the `stream_error_after` error, else the
/// `stall_ms` stall, else a 500.
fn failure_of(directives: &Directives) -> Failure {
    let status = directives.error_status.map(|status| Failure::Status {
        status,
        retry_after_s: directives.retry_after_s,
    });
    let cut = directives.cut_after.map(|after| Failure::Cut { after });
    let stream_error = directives
        .stream_error_after
        .map(|after| Failure::StreamError {
            after,
            kind: directives.stream_error_type.unwrap_or_default(),
        });
    match (status.or(cut).or(stream_error), directives.fail_times) {
        (Some(failure), _) => failure,
        (None, Some(_)) if directives.stall_ms.is_some() => Failure::Stall,
        (None, Some(_)) => Failure::Status {
            status: 500,
            retry_after_s: directives.retry_after_s,
        },
        (None, None) => Failure::None,
    }
}

/// The reply to trailing tool results: [`tool_results_reply`], one piece per word.
fn quote_tool_results(results: &[ToolResult]) -> TextSource {
    let text = tool_results_reply(
        results
            .iter()
            .map(|result| (result.name.as_str(), result.content.as_str())),
    );
    TextSource::Fixed {
        ends: piece_ends(&text),
        text,
    }
}

/// The reply of an `echo` directive: a view of what the request carried.
fn echo_text(conversation: &Conversation, echo: Echo) -> String {
    let (lines, none): (Vec<&str>, &str) = match echo {
        Echo::System => (
            [conversation.system_text.as_str()]
                .into_iter()
                .filter(|text| !text.is_empty())
                .collect(),
            "(no system text)",
        ),
        Echo::Attachments => (
            conversation
                .attachments
                .iter()
                .map(String::as_str)
                .collect(),
            "(no attachments)",
        ),
        Echo::Tools => (
            conversation.tool_names.iter().map(String::as_str).collect(),
            "(no tools)",
        ),
    };
    if lines.is_empty() {
        none.to_owned()
    } else {
        lines.join("\n")
    }
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
            failure_of(&directives(r#"{"fail_times": 1, "stall_ms": 100}"#)),
            Failure::Stall
        );
        assert_eq!(
            failure_of(&directives(r#"{"stall_ms": 100}"#)),
            Failure::None
        );
        assert_eq!(
            failure_of(&directives(r#"{"fail_times": 1, "cut_after": 3}"#)),
            Failure::Cut { after: 3 }
        );
        assert_eq!(
            failure_of(&directives(
                r#"{"fail_times": 1, "stream_error_after": 2, "stream_error_type": "server_error"}"#
            )),
            Failure::StreamError {
                after: 2,
                kind: StreamErrorKind::ServerError
            }
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

    fn conversation(text: &str, ending: Ending, offers_tools: bool) -> Conversation {
        Conversation {
            model: "m".to_owned(),
            last_user_text: text.to_owned(),
            ending,
            offers_tools,
            prompt_words: 7,
            ..Conversation::default()
        }
    }

    fn plan(conversation: &Conversation) -> Plan {
        Plan::from_conversation(conversation, "id".to_owned(), "call_").expect("valid plan")
    }

    #[test]
    fn tool_calls_need_offered_tools_and_stop_after_tool_steps() {
        let script = r#"@mock {"tool_calls": [{"name": "t"}], "tool_steps": 2}"#;
        let results = Ending::ToolResults(vec![ToolResult {
            name: "t".to_owned(),
            content: "r".to_owned(),
        }]);
        let without_tools = plan(&conversation(script, Ending::UserMessage, false));
        assert!(matches!(without_tools.output, Output::Text(_)));
        assert_eq!(without_tools.finish, Finish::Stop);
        let first = plan(&conversation(script, Ending::UserMessage, true));
        assert_eq!(first.finish, Finish::ToolCalls);
        let mut second_step = conversation(script, results.clone(), true);
        second_step.tool_rounds_since_user = 1;
        second_step.tool_calls_so_far = 1;
        let second = plan(&second_step);
        match &second.output {
            Output::ToolCalls(calls) => assert_eq!(calls[0].id, "call_1"),
            Output::Text(_) => panic!("the second step calls the tool again"),
        }
        second_step.tool_rounds_since_user = 2;
        let answer = plan(&second_step);
        match &answer.output {
            Output::Text(text) => assert_eq!(text.full_text(), "Tool results: t: r"),
            Output::ToolCalls(_) => panic!("after tool_steps rounds the mock answers"),
        }
    }

    #[test]
    fn a_tool_script_calls_other_tools_per_step_with_earlier_results() {
        let script = r#"@mock {"tool_script": [[{"name": "spawn", "arguments": {"n": 1}}, {"name": "spawn"}], [{"name": "wait", "arguments": {"id": "$result.chat_id", "second": "$result[1].chat_id", "missing": "$result.nope", "list": ["$result[0].chat_id"]}}]]}"#;
        let first = plan(&conversation(script, Ending::UserMessage, true));
        match &first.output {
            Output::ToolCalls(calls) => {
                assert_eq!(calls.len(), 2);
                assert_eq!(calls[0].name, "spawn");
                assert_eq!(calls[0].arguments_value, serde_json::json!({"n": 1}));
            }
            Output::Text(_) => panic!("step 1 calls spawn"),
        }
        let results = Ending::ToolResults(vec![
            ToolResult {
                name: "spawn".to_owned(),
                content: r#"{"chat_id": "a"}"#.to_owned(),
            },
            ToolResult {
                name: "spawn".to_owned(),
                content: r#"{"chat_id": "b"}"#.to_owned(),
            },
        ]);
        let mut second_step = conversation(script, results, true);
        second_step.tool_rounds_since_user = 1;
        second_step.tool_calls_so_far = 2;
        match &plan(&second_step).output {
            Output::ToolCalls(calls) => {
                assert_eq!(calls[0].id, "call_2");
                assert_eq!(
                    calls[0].arguments_value,
                    serde_json::json!({"id": "a", "second": "b", "missing": "$result.nope", "list": ["a"]})
                );
                assert_eq!(
                    serde_json::from_str::<serde_json::Value>(&calls[0].arguments).unwrap(),
                    calls[0].arguments_value
                );
            }
            Output::Text(_) => panic!("step 2 calls wait"),
        }
        second_step.tool_rounds_since_user = 2;
        assert!(matches!(plan(&second_step).output, Output::Text(_)));
        assert!(parse_directives(
            r#"@mock {"tool_script": [[{"name": "a"}]], "tool_calls": [{"name": "a"}]}"#
        )
        .unwrap_err()
        .contains("replaces"));
        assert!(parse_directives(r#"@mock {"tool_script": [[]]}"#).is_err());
    }

    #[test]
    fn max_tokens_cuts_reasoning_then_text_and_cached_tokens_are_bounded() {
        let mut limited = conversation(
            r#"@mock {"tokens": 10, "reasoning_tokens": 3, "cached_tokens": 50}"#,
            Ending::UserMessage,
            false,
        );
        limited.max_tokens = Some(5);
        let cut = plan(&limited);
        assert_eq!(cut.finish, Finish::Length);
        assert_eq!(cut.finish_reason(), "length");
        assert_eq!(cut.content_chunks(), 5);
        assert_eq!(cut.reasoning.token_count(), 3);
        assert_eq!(cut.cached_tokens, 7, "at most the prompt");
        limited.max_tokens = Some(13);
        assert_eq!(plan(&limited).finish, Finish::Stop);
        let mut quoted = conversation(
            "",
            Ending::ToolResults(vec![ToolResult {
                name: "t".to_owned(),
                content: "one two three".to_owned(),
            }]),
            false,
        );
        quoted.max_tokens = Some(3);
        match plan(&quoted).output {
            Output::Text(text) => assert_eq!(text.full_text(), "Tool results: t: "),
            Output::ToolCalls(_) => panic!("text expected"),
        }
    }

    #[test]
    fn echo_system_answers_with_the_system_text() {
        let mut with_system = conversation(
            r#"@mock {"echo": "system", "tokens": 3}"#,
            Ending::UserMessage,
            false,
        );
        with_system.system_text = "be brief\n\nsay hi".to_owned();
        let Output::Text(text) = plan(&with_system).output else {
            panic!("a text answer");
        };
        assert_eq!(text.full_text(), "be brief\n\nsay hi");
        let without = conversation(r#"@mock {"echo": "system"}"#, Ending::UserMessage, false);
        let Output::Text(text) = plan(&without).output else {
            panic!("a text answer");
        };
        assert_eq!(text.full_text(), "(no system text)");
        assert!(parse_directives(r#"@mock {"echo": "everything"}"#).is_err());
    }
}
