//! Numbers shared by every chat and subscriber task while a run goes on. Locks are held for a
//! few pushes at a time (one lock per finished turn, one per batch of relay samples).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use super::integrity::IntegrityCounts;
use super::report::{Report, RunConfig};
use super::stats::{Reservoir, RESERVOIR_CAPACITY};

/// Error details printed per kind before going quiet (the counts stay exact).
const DETAILS_PER_KIND: u64 = 3;

pub struct Recorder {
    turns_planned: u64,
    turns_done: AtomicU64,
    error_total: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
    integrity: Mutex<IntegrityCounts>,
    latencies: Mutex<Latencies>,
    window: Mutex<Window>,
    /// Streams reopened from their last event id (server resync hints or read errors).
    stream_reconnects: AtomicU64,
    /// `retry` events received (the worker retried the model; informational).
    retries: AtomicU64,
    /// Requests answered 429 `rate_limited` and sent again after `Retry-After`, as a
    /// well-behaved client does (informational: the per-token rate limit paced the run).
    throttled: AtomicU64,
    /// Completed turns in which a subscriber never saw `status: running` (the hub may
    /// coalesce status changes; informational, those turns have no acquire sample).
    running_not_seen: AtomicU64,
}

struct Latencies {
    acquire: Reservoir,
    ttft: Reservoir,
    relay: Reservoir,
    turn: Reservoir,
}

/// From the first POST of a turn to the last turn completion: the span turns/s is over.
#[derive(Default)]
struct Window {
    first_post: Option<Instant>,
    last_completion: Option<Instant>,
}

/// What one subscriber saw of one completed turn, in milliseconds since the POST was sent.
#[derive(Debug, Clone, Copy)]
pub struct TurnSample {
    pub acquire_ms: Option<f64>,
    pub ttft_ms: Option<f64>,
    pub turn_ms: f64,
}

/// A snapshot for the progress line.
pub struct Progress {
    pub turns_done: u64,
    pub turns_planned: u64,
    pub errors: u64,
    pub integrity_violations: u64,
}

impl Recorder {
    pub fn new(turns_planned: u64) -> Recorder {
        Recorder {
            turns_planned,
            turns_done: AtomicU64::new(0),
            error_total: AtomicU64::new(0),
            errors: Mutex::new(BTreeMap::new()),
            integrity: Mutex::new(IntegrityCounts::default()),
            latencies: Mutex::new(Latencies {
                acquire: Reservoir::new(RESERVOIR_CAPACITY),
                ttft: Reservoir::new(RESERVOIR_CAPACITY),
                relay: Reservoir::new(RESERVOIR_CAPACITY),
                turn: Reservoir::new(RESERVOIR_CAPACITY),
            }),
            window: Mutex::new(Window::default()),
            stream_reconnects: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            running_not_seen: AtomicU64::new(0),
        }
    }

    /// Counts one error; the first few of each kind are also printed with their details.
    pub fn error(&self, kind: &str, detail: &str) {
        self.error_total.fetch_add(1, Ordering::Relaxed);
        let count = {
            let mut errors = lock(&self.errors);
            let count = errors.entry(kind.to_string()).or_insert(0);
            *count += 1;
            *count
        };
        if count <= DETAILS_PER_KIND {
            eprintln!("scaletest: error {kind}: {detail}");
        } else if count == DETAILS_PER_KIND + 1 {
            eprintln!("scaletest: more {kind} errors (counted, not printed)");
        }
    }

    /// Adds this recorder's error counts to `other`'s and clears them here (warm-up turns
    /// count their errors in the run's report, nothing else).
    pub fn move_errors_to(&self, other: &Recorder) {
        let errors = std::mem::take(&mut *lock(&self.errors));
        self.error_total.store(0, Ordering::Relaxed);
        let total: u64 = errors.values().sum();
        other.error_total.fetch_add(total, Ordering::Relaxed);
        let mut into = lock(&other.errors);
        for (kind, count) in errors {
            *into.entry(kind).or_insert(0) += count;
        }
    }

    pub fn integrity(&self, counts: IntegrityCounts) {
        if counts.is_zero() {
            return;
        }
        let mut total = lock(&self.integrity);
        total.gaps += counts.gaps;
        total.duplicates += counts.duplicates;
        total.out_of_order += counts.out_of_order;
        total.text_mismatches += counts.text_mismatches;
    }

    /// Moves relay samples (ms) out of a subscriber's local buffer.
    pub fn relay(&self, samples: &mut Vec<f64>) {
        if samples.is_empty() {
            return;
        }
        let mut latencies = lock(&self.latencies);
        for sample in samples.drain(..) {
            latencies.relay.record(sample);
        }
    }

    pub fn stream_reconnect(&self) {
        self.stream_reconnects.fetch_add(1, Ordering::Relaxed);
    }

    pub fn throttled(&self) {
        self.throttled.fetch_add(1, Ordering::Relaxed);
    }

    pub fn retry_seen(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    pub fn post_sent(&self, at: Instant) {
        let mut window = lock(&self.window);
        if window.first_post.is_none_or(|first| at < first) {
            window.first_post = Some(at);
        }
    }

    /// One turn finished for all of its subscribers.
    pub fn turn_completed(&self, at: Instant, samples: &[TurnSample]) {
        {
            let mut latencies = lock(&self.latencies);
            for sample in samples {
                match sample.acquire_ms {
                    Some(acquire_ms) => latencies.acquire.record(acquire_ms),
                    None => {
                        self.running_not_seen.fetch_add(1, Ordering::Relaxed);
                    }
                }
                if let Some(ttft_ms) = sample.ttft_ms {
                    latencies.ttft.record(ttft_ms);
                }
                latencies.turn.record(sample.turn_ms);
            }
        }
        {
            let mut window = lock(&self.window);
            if window.last_completion.is_none_or(|last| at > last) {
                window.last_completion = Some(at);
            }
        }
        self.turns_done.fetch_add(1, Ordering::Relaxed);
    }

    pub fn progress(&self) -> Progress {
        let integrity = *lock(&self.integrity);
        Progress {
            turns_done: self.turns_done.load(Ordering::Relaxed),
            turns_planned: self.turns_planned,
            errors: self.error_total.load(Ordering::Relaxed),
            integrity_violations: integrity.gaps
                + integrity.duplicates
                + integrity.out_of_order
                + integrity.text_mismatches,
        }
    }

    pub fn report(&self, config: RunConfig) -> Report {
        let turns = self.turns_done.load(Ordering::Relaxed);
        let wall_s = {
            let window = lock(&self.window);
            match (window.first_post, window.last_completion) {
                (Some(first), Some(last)) => last.saturating_duration_since(first).as_secs_f64(),
                _ => 0.0,
            }
        };
        let integrity = *lock(&self.integrity);
        let latencies = lock(&self.latencies);
        Report {
            config,
            turns_planned: self.turns_planned,
            turns,
            turns_per_second: if wall_s > 0.0 {
                turns as f64 / wall_s
            } else {
                0.0
            },
            wall_s,
            acquire_ms: latencies.acquire.summary(),
            ttft_ms: latencies.ttft.summary(),
            relay_ms: latencies.relay.summary(),
            turn_ms: latencies.turn.summary(),
            gaps: integrity.gaps,
            duplicates: integrity.duplicates,
            out_of_order: integrity.out_of_order,
            text_mismatches: integrity.text_mismatches,
            errors: lock(&self.errors).clone(),
            stream_reconnects: self.stream_reconnects.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            throttled: self.throttled.load(Ordering::Relaxed),
            running_not_seen: self.running_not_seen.load(Ordering::Relaxed),
            relay_samples_stored: latencies.relay.stored(),
            reservoir_capacity: RESERVOIR_CAPACITY,
        }
    }
}

/// A poisoned lock only means another task panicked mid-update of plain counters: keep going.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
