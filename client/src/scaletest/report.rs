//! The end-of-run report: one struct, serialised as the `--json` file and rendered as the
//! human-readable table.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

use super::stats::Summary;

/// The parameters of the run, repeated in the report so a JSON file stands on its own.
#[derive(Debug, Clone, Serialize)]
pub struct RunConfig {
    pub api: Vec<String>,
    pub chats: usize,
    pub turns_per_chat: usize,
    pub concurrency: usize,
    pub tokens: u64,
    pub tokens_per_second: f64,
    pub subscribers: usize,
    pub timeout_s: u64,
}

/// Latencies are milliseconds. `acquire_ms`, `ttft_ms` and `turn_ms` have one sample per
/// completed turn per subscriber (what each client saw); `relay_ms` one per `message_part`
/// received on any connection.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub config: RunConfig,
    pub turns_planned: u64,
    /// Turns completed (assistant message then `status: waiting` seen on every subscriber).
    pub turns: u64,
    /// `turns` / `wall_s`.
    pub turns_per_second: f64,
    /// From the first message POST to the last turn completion.
    pub wall_s: f64,
    pub acquire_ms: Summary,
    pub ttft_ms: Summary,
    pub relay_ms: Summary,
    pub turn_ms: Summary,
    pub gaps: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub text_mismatches: u64,
    /// Count per kind: `http_<status>`, `timeout`, `request`, `stream_open`, `stream_read`,
    /// `status_error`, `bad_response`, …
    pub errors: BTreeMap<String, u64>,
    pub stream_reconnects: u64,
    pub retries: u64,
    /// Requests the per-token rate limit answered with 429, sent again after `Retry-After`.
    #[serde(default)]
    pub throttled: u64,
    pub running_not_seen: u64,
    /// Relay samples kept for percentiles; past `reservoir_capacity` they are a uniform random
    /// subset (counts and max stay exact).
    pub relay_samples_stored: usize,
    pub reservoir_capacity: usize,
}

impl Report {
    /// Why the run failed, if it did: integrity violations, errors, or unfinished turns.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (name, count) in [
            ("gaps", self.gaps),
            ("duplicates", self.duplicates),
            ("out_of_order", self.out_of_order),
            ("text_mismatches", self.text_mismatches),
        ] {
            if count > 0 {
                problems.push(format!("{count} {name}"));
            }
        }
        let errors: u64 = self.errors.values().sum();
        if errors > 0 {
            problems.push(format!("{errors} errors"));
        }
        if self.turns < self.turns_planned {
            problems.push(format!(
                "{} of {} turns completed",
                self.turns, self.turns_planned
            ));
        }
        problems
    }

    pub fn render_table(&self) -> String {
        let config = &self.config;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "chatd scaletest: {} chats × {} turns, concurrency {}, {} tokens at {} tokens/s, \
             {} subscriber(s) per chat, {} API replica(s)",
            config.chats,
            config.turns_per_chat,
            config.concurrency,
            config.tokens,
            config.tokens_per_second,
            config.subscribers,
            config.api.len(),
        );
        let _ = writeln!(
            out,
            "\n{:<12} {:>9} {:>10} {:>10} {:>10} {:>10}",
            "metric (ms)", "count", "p50", "p90", "p99", "max"
        );
        for (name, summary) in [
            ("acquire", &self.acquire_ms),
            ("ttft", &self.ttft_ms),
            ("relay", &self.relay_ms),
            ("turn", &self.turn_ms),
        ] {
            let _ = writeln!(
                out,
                "{:<12} {:>9} {:>10} {:>10} {:>10} {:>10}",
                name,
                summary.count,
                cell(summary.p50),
                cell(summary.p90),
                cell(summary.p99),
                cell(summary.max),
            );
        }
        let _ = writeln!(
            out,
            "\nturns        {}/{} in {:.3} s = {:.1} turns/s",
            self.turns, self.turns_planned, self.wall_s, self.turns_per_second
        );
        let _ = writeln!(
            out,
            "integrity    gaps {}, duplicates {}, out_of_order {}, text_mismatches {}",
            self.gaps, self.duplicates, self.out_of_order, self.text_mismatches
        );
        if self.errors.is_empty() {
            let _ = writeln!(out, "errors       none");
        } else {
            let listed: Vec<String> = self
                .errors
                .iter()
                .map(|(kind, count)| format!("{kind} {count}"))
                .collect();
            let _ = writeln!(out, "errors       {}", listed.join(", "));
        }
        let _ = writeln!(
            out,
            "notes        stream reconnects {}, model retries {}, turns without a visible \
             `running` {}, requests paced by the rate limit {}",
            self.stream_reconnects, self.retries, self.running_not_seen, self.throttled
        );
        if self.relay_ms.count > self.relay_samples_stored as u64 {
            let _ = writeln!(
                out,
                "             relay percentiles from a uniform sample of {} of {} values",
                self.relay_samples_stored, self.relay_ms.count
            );
        }
        out
    }
}

fn cell(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_string(), |value| format!("{value:.3}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(count: u64) -> Summary {
        Summary {
            count,
            p50: (count > 0).then_some(1.5),
            p90: (count > 0).then_some(2.0),
            p99: (count > 0).then_some(3.25),
            max: (count > 0).then_some(4.0),
        }
    }

    fn report() -> Report {
        Report {
            config: RunConfig {
                api: vec!["http://a".into(), "http://b".into()],
                chats: 2,
                turns_per_chat: 1,
                concurrency: 2,
                tokens: 20,
                tokens_per_second: 0.0,
                subscribers: 1,
                timeout_s: 60,
            },
            turns_planned: 2,
            turns: 2,
            turns_per_second: 4.0,
            wall_s: 0.5,
            acquire_ms: summary(2),
            ttft_ms: summary(2),
            relay_ms: summary(40),
            turn_ms: summary(0),
            gaps: 0,
            duplicates: 0,
            out_of_order: 0,
            text_mismatches: 0,
            errors: BTreeMap::new(),
            stream_reconnects: 0,
            retries: 0,
            throttled: 0,
            running_not_seen: 0,
            relay_samples_stored: 40,
            reservoir_capacity: 200_000,
        }
    }

    #[test]
    fn a_clean_run_has_no_problems() {
        assert!(report().problems().is_empty());
    }

    #[test]
    fn violations_errors_and_missing_turns_are_problems() {
        let mut report = report();
        report.duplicates = 2;
        report.errors.insert("timeout".into(), 1);
        report.turns = 1;
        assert_eq!(
            report.problems(),
            vec!["2 duplicates", "1 errors", "1 of 2 turns completed"]
        );
    }

    #[test]
    fn json_uses_the_documented_field_names() {
        let json = serde_json::to_value(report()).unwrap_or_default();
        for field in [
            "acquire_ms",
            "ttft_ms",
            "relay_ms",
            "turn_ms",
            "turns",
            "turns_per_second",
            "wall_s",
            "gaps",
            "duplicates",
            "out_of_order",
            "text_mismatches",
            "errors",
        ] {
            assert!(json.get(field).is_some(), "missing {field}");
        }
        assert_eq!(json["relay_ms"]["count"], 40);
        assert_eq!(json["acquire_ms"]["p99"], 3.25);
        assert_eq!(json["turn_ms"]["p50"], serde_json::Value::Null);
    }

    #[test]
    fn the_table_shows_every_metric() {
        let table = report().render_table();
        for needle in [
            "acquire",
            "ttft",
            "relay",
            "turn ",
            "3.250",
            "turns/s",
            "errors       none",
        ] {
            assert!(table.contains(needle), "{needle} missing from\n{table}");
        }
    }
}
