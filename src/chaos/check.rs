//! The soak's verdict: invariants checked from the database and from every client's own
//! record of what it sent and received.
//!
//! - I4: once faults stop, every chat reaches a terminal state.
//! - I8: every message a client had accepted is stored exactly once.
//! - I2 (and I6): exactly one answer per message — for a plain turn exactly the mock's text;
//!   for an interrupted one at most one answer, a prefix of it; for a tool turn every call
//!   stored once with exactly one result.
//! - I1, I3: every client's streams had no gap, duplicate or reordering, and the deltas of
//!   each answer's final attempt equal the stored text (`chatd scaletest`'s checker).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;

use chatd_client::content_text;
use chatd_mock_llm::reply_text;

use super::load::{ClientRecord, Scenario};

/// Violations by invariant.
#[derive(Debug, Default)]
pub struct Verdict {
    pub violations: BTreeMap<&'static str, u64>,
    /// Details of the first violations, for the report.
    pub examples: Vec<String>,
    pub answers: u64,
    pub chats: u64,
}

impl Verdict {
    fn violation(&mut self, invariant: &'static str, detail: String) {
        *self.violations.entry(invariant).or_insert(0) += 1;
        if self.examples.len() < 20 {
            self.examples.push(format!("{invariant}: {detail}"));
        }
    }

    pub fn total(&self) -> u64 {
        self.violations.values().sum()
    }
}

/// Waits for quiescence (at most `settle`), then checks.
pub async fn check(
    database_url: &str,
    records: &[ClientRecord],
    settle: Duration,
) -> anyhow::Result<Verdict> {
    let client = chatd_shared::db::pool::connect_url(database_url, "chaos-check")
        .await
        .context("connect for the check")?;
    let mut verdict = Verdict::default();

    let deadline = tokio::time::Instant::now() + settle;
    let busy = loop {
        let busy: i64 = client
            .query_one(
                "SELECT count(*) FROM chats c WHERE c.status IN ('pending', 'running', 'interrupting') \
                 OR EXISTS (SELECT 1 FROM chat_queued_messages q WHERE q.chat_id = c.id)",
                &[],
            )
            .await?
            .get(0);
        if busy == 0 || tokio::time::Instant::now() >= deadline {
            break busy;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    if busy > 0 {
        let rows = client
            .query(
                "SELECT id::text, status FROM chats c WHERE c.status IN ('pending', 'running', 'interrupting') \
                 OR EXISTS (SELECT 1 FROM chat_queued_messages q WHERE q.chat_id = c.id)",
                &[],
            )
            .await?;
        for row in rows {
            verdict.violation(
                "I4 stuck chat",
                format!(
                    "{} still {}",
                    row.get::<_, String>(0),
                    row.get::<_, String>(1)
                ),
            );
        }
    }

    // Every chat's visible history: (role, content), oldest first.
    let rows = client
        .query(
            "SELECT chat_id::text, role, content FROM chat_messages WHERE NOT deleted ORDER BY chat_id, id",
            &[],
        )
        .await?;
    let mut histories: HashMap<String, Vec<(String, Value)>> = HashMap::new();
    for row in rows {
        histories
            .entry(row.get(0))
            .or_default()
            .push((row.get(1), row.get(2)));
    }
    verdict.chats = histories.len() as u64;
    verdict.answers = histories
        .values()
        .flatten()
        .filter(|(role, content)| role == "assistant" && !content_text(content).is_empty())
        .count() as u64;

    for sent in records.iter().flat_map(|record| &record.sent) {
        let Some(history) = histories.get(&sent.chat_id) else {
            verdict.violation(
                "I8 lost message",
                format!("chat {} has no messages", sent.chat_id),
            );
            continue;
        };
        let positions: Vec<usize> = history
            .iter()
            .enumerate()
            .filter(|(_, (role, content))| {
                role == "user" && content.to_string().contains(&sent.nonce)
            })
            .map(|(index, _)| index)
            .collect();
        let position = match positions.as_slice() {
            [position] => *position,
            [] => {
                verdict.violation(
                    "I8 lost message",
                    format!("{} in chat {}", sent.nonce, sent.chat_id),
                );
                continue;
            }
            _ => {
                verdict.violation(
                    "I8 duplicated message",
                    format!("{} stored {} times", sent.nonce, positions.len()),
                );
                continue;
            }
        };
        let answer: Vec<&(String, Value)> = history[position + 1..]
            .iter()
            .take_while(|(role, _)| role != "user")
            .collect();
        check_answer(&mut verdict, sent, &answer);
    }

    for record in records {
        let counts = record.integrity;
        for (invariant, count) in [
            ("I1 stream gap", counts.gaps),
            ("I1 stream duplicate", counts.duplicates),
            ("I1 stream out of order", counts.out_of_order),
            ("I3 streamed != stored", counts.text_mismatches),
        ] {
            if count > 0 {
                *verdict.violations.entry(invariant).or_insert(0) += count;
            }
        }
    }
    Ok(verdict)
}

fn check_answer(
    verdict: &mut Verdict,
    sent: &super::load::SentMessage,
    answer: &[&(String, Value)],
) {
    let assistant_texts: Vec<String> = answer
        .iter()
        .filter(|(role, _)| role == "assistant")
        .map(|(_, content)| content_text(content))
        .filter(|text| !text.is_empty())
        .collect();
    match sent.scenario {
        Scenario::Stream { tokens } | Scenario::ProviderError { tokens } => {
            let expected = reply_text(&sent.text, tokens);
            if assistant_texts != [expected] {
                verdict.violation(
                    "I2 not exactly one answer",
                    format!("{}: {} answers", sent.nonce, assistant_texts.len()),
                );
            }
        }
        Scenario::Interrupted { tokens } => {
            let full = reply_text(&sent.text, tokens);
            if assistant_texts.len() > 1
                || assistant_texts
                    .iter()
                    .any(|text| !full.starts_with(text.as_str()))
            {
                verdict.violation(
                    "I2 interrupted turn answered twice or wrongly",
                    format!("{}: {:?}", sent.nonce, assistant_texts),
                );
            }
        }
        Scenario::Tools => {
            let parts = |role: &str, kind: &str| -> Vec<String> {
                answer
                    .iter()
                    .filter(|(r, _)| r == role)
                    .flat_map(|(_, content)| content.as_array().cloned().unwrap_or_default())
                    .filter(|part| part["type"] == kind)
                    .map(|part| part["tool_call_id"].as_str().unwrap_or_default().to_owned())
                    .collect()
            };
            let mut calls = parts("assistant", "tool-call");
            let mut results = parts("tool", "tool-result");
            calls.sort();
            results.sort();
            let unique_calls = {
                let mut unique = calls.clone();
                unique.dedup();
                unique
            };
            if calls.len() != 2
                || unique_calls.len() != 2
                || calls != results
                || assistant_texts.len() != 1
            {
                verdict.violation(
                    "I2 tool turn not stored exactly once",
                    format!(
                        "{}: calls {calls:?}, results {results:?}, {} answers",
                        sent.nonce,
                        assistant_texts.len()
                    ),
                );
            }
        }
    }
}
