//! Provider-layer overhead: parse throughput of each protocol's stream parser (MB/s,
//! events/s) and the latency one event adds between its bytes arriving and its
//! `ProviderEvent` coming out. Prints a table; numbers go to BENCHMARKS.md.
//!
//! `cargo run --release -p chatd-worker --example provider_bench [-- <events>]`

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use chatd_worker::provider::anthropic::AnthropicStreamParser;
use chatd_worker::provider::http::{ParsedItem, StreamParser};
use chatd_worker::provider::openai_chat::ChatStreamParser;
use chatd_worker::provider::openai_responses::ResponsesStreamParser;

/// A typical streamed token: a word and a space (with one non-ASCII in ten).
fn word(index: usize) -> &'static str {
    const WORDS: [&str; 10] = [
        "the ", "model ", "streams ", "tokens ", "über ", "quickly ", "and ", "chatd ", "relays ",
        "them ",
    ];
    WORDS[index % WORDS.len()]
}

/// Each protocol's stream of `count` text deltas, as separate SSE events (bytes per event).
fn chat_events(count: usize) -> Vec<String> {
    let mut events: Vec<String> = (0..count)
        .map(|index| {
            format!(
                "data: {{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\
                 \"model\":\"gpt-x\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{}\"}},\
                 \"finish_reason\":null}}]}}\n\n",
                word(index)
            )
        })
        .collect();
    events.push("data: {\"id\":\"chatcmpl-1\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n".into());
    events.push(format!("data: {{\"id\":\"chatcmpl-1\",\"choices\":[],\"usage\":{{\"prompt_tokens\":10,\"completion_tokens\":{count},\"total_tokens\":{}}}}}\n\n", count + 10));
    events.push("data: [DONE]\n\n".into());
    events
}

fn responses_events(count: usize) -> Vec<String> {
    let mut events = vec![
        "event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_1\",\"status\":\"in_progress\"}}\n\n".to_owned(),
    ];
    events.extend((0..count).map(|index| {
        format!(
            "event: response.output_text.delta\ndata: {{\"type\":\"response.output_text.delta\",\
             \"sequence_number\":{},\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,\
             \"delta\":\"{}\"}}\n\n",
            index + 1,
            word(index)
        )
    }));
    events.push(format!("event: response.completed\ndata: {{\"type\":\"response.completed\",\"sequence_number\":{},\"response\":{{\"id\":\"resp_1\",\"status\":\"completed\",\"output\":[],\"usage\":{{\"input_tokens\":10,\"output_tokens\":{count},\"total_tokens\":{}}}}}}}\n\n", count + 1, count + 10));
    events
}

fn anthropic_events(count: usize) -> Vec<String> {
    let mut events = vec![
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-x\",\"usage\":{\"input_tokens\":10,\"output_tokens\":1}}}\n\n".to_owned(),
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n".to_owned(),
    ];
    events.extend((0..count).map(|index| {
        format!(
            "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\
             \"delta\":{{\"type\":\"text_delta\",\"text\":\"{}\"}}}}\n\n",
            word(index)
        )
    }));
    events.push(
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n".into(),
    );
    events.push(format!("event: message_delta\ndata: {{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":\"end_turn\"}},\"usage\":{{\"output_tokens\":{count}}}}}\n\n"));
    events.push("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n".into());
    events
}

/// Parses `body` fed in `chunk`-byte pieces; returns (events, elapsed).
fn throughput<P: StreamParser>(make: fn() -> P, body: &[u8], chunk: usize) -> (usize, Duration) {
    let mut parser = make();
    let mut out: VecDeque<ParsedItem> = VecDeque::new();
    let mut events = 0;
    let started = Instant::now();
    for piece in body.chunks(chunk) {
        parser.push(piece, &mut out);
        events += out.drain(..).filter(|item| item.is_ok()).count();
    }
    parser.finish(&mut out);
    events += out.drain(..).filter(|item| item.is_ok()).count();
    (events, started.elapsed())
}

/// Per-event latency: each event's bytes pushed alone, timed until its event is out.
fn per_event<P: StreamParser>(make: fn() -> P, events: &[String]) -> Vec<Duration> {
    let mut parser = make();
    let mut out: VecDeque<ParsedItem> = VecDeque::new();
    let mut latencies = Vec::with_capacity(events.len());
    for event in events {
        let started = Instant::now();
        parser.push(event.as_bytes(), &mut out);
        let produced = !out.is_empty();
        let elapsed = started.elapsed();
        out.clear();
        if produced {
            latencies.push(elapsed);
        }
    }
    latencies
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * fraction).round() as usize]
}

fn run<P: StreamParser>(name: &str, make: fn() -> P, events: Vec<String>) {
    let body: String = events.concat();
    // Warm-up, then the best of three runs (the machine is shared).
    throughput(make, body.as_bytes(), 16 * 1024);
    let (count, elapsed) = (0..3)
        .map(|_| throughput(make, body.as_bytes(), 16 * 1024))
        .min_by_key(|(_, elapsed)| *elapsed)
        .unwrap_or_default();
    let seconds = elapsed.as_secs_f64().max(1e-9);
    let mut latencies = per_event(make, &events);
    latencies.sort();
    println!(
        "| {name} | {:.1} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} |",
        body.len() as f64 / 1e6,
        body.len() as f64 / 1e6 / seconds,
        count as f64 / seconds,
        percentile(&latencies, 0.5).as_secs_f64() * 1e6,
        percentile(&latencies, 0.99).as_secs_f64() * 1e6,
        percentile(&latencies, 0.999).as_secs_f64() * 1e6,
    );
}

fn main() {
    let count: usize = std::env::args()
        .nth(1)
        .and_then(|text| text.parse().ok())
        .unwrap_or(200_000);
    println!(
        "{count} text deltas per stream, 16 KiB reads; per-event = one event's bytes pushed alone"
    );
    println!("| protocol | body MB | MB/s | events/s | per-event p50 µs | p99 µs | p99.9 µs |");
    println!("|---|---|---|---|---|---|---|");
    run("OpenAI Chat", ChatStreamParser::new, chat_events(count));
    run(
        "OpenAI Responses",
        ResponsesStreamParser::new,
        responses_events(count),
    );
    run(
        "Anthropic Messages",
        AnthropicStreamParser::new,
        anthropic_events(count),
    );
}
