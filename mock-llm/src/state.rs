//! What the mock remembers between requests: `fail_times` counters, stored Responses for
//! `previous_response_id`, and request counters for `GET /mock/stats`.
//!
//! **Invariant:** every map here is bounded; the oldest entry is forgotten first, so a mock
//! serving a long load test keeps a constant footprint.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{json, Value};

/// How many distinct request bodies `fail_times` remembers.
const MAX_TRACKED_REQUESTS: usize = 100_000;

/// How many stored Responses `previous_response_id` can refer to.
pub const MAX_STORED_RESPONSES: usize = 10_000;

/// The state shared by all routes of one mock server.
#[derive(Default)]
pub struct MockState {
    pub failures: FailureCounters,
    pub responses: ResponseStore,
    pub stats: RequestStats,
    /// Numbers Responses ids, so every response id is unique even for identical requests.
    next_response_number: AtomicU64,
}

impl MockState {
    /// A fresh number for a response id.
    pub fn next_response_number(&self) -> u64 {
        self.next_response_number.fetch_add(1, Ordering::Relaxed)
    }
}

/// A panic while holding one of these locks cannot leave the maps inconsistent; keep serving.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Requests seen per body hash, for `fail_times`. Bounded: beyond [`MAX_TRACKED_REQUESTS`]
/// bodies the oldest is forgotten (and would fail again if re-sent).
#[derive(Default)]
pub struct FailureCounters {
    inner: Mutex<CounterMap>,
}

#[derive(Default)]
struct CounterMap {
    seen: HashMap<u64, u32>,
    insertion_order: VecDeque<u64>,
}

impl FailureCounters {
    /// Records one request and returns how many identical ones came before it.
    pub fn record(&self, body_hash: u64) -> u32 {
        let mut map = lock(&self.inner);
        if let Some(count) = map.seen.get_mut(&body_hash) {
            let previous = *count;
            *count = count.saturating_add(1);
            return previous;
        }
        if map.seen.len() >= MAX_TRACKED_REQUESTS {
            if let Some(oldest) = map.insertion_order.pop_front() {
                map.seen.remove(&oldest);
            }
        }
        map.seen.insert(body_hash, 1);
        map.insertion_order.push_back(body_hash);
        0
    }
}

/// One stored response: the items it added to its chain (its request's input items, then its
/// output items), and the response it continued.
///
/// A chain is shared, not copied: each response holds only its own items, so a long agent loop
/// stores O(steps) items, not O(steps²).
pub struct StoredResponse {
    parent: Option<Arc<StoredResponse>>,
    items: Vec<Value>,
}

impl StoredResponse {
    /// The responses of the chain ending here, oldest first.
    pub fn chain(self: &Arc<Self>) -> Vec<Arc<StoredResponse>> {
        let mut chain = vec![Arc::clone(self)];
        while let Some(parent) = chain.last().and_then(|last| last.parent.clone()) {
            chain.push(parent);
        }
        chain.reverse();
        chain
    }

    pub fn items(&self) -> &[Value] {
        &self.items
    }
}

/// Drops a long chain iteratively; the derived drop would recurse once per link.
impl Drop for StoredResponse {
    fn drop(&mut self) {
        let mut parent = self.parent.take();
        while let Some(link) = parent {
            parent = match Arc::try_unwrap(link) {
                Ok(mut unique) => unique.parent.take(),
                Err(_) => None, // still shared: whoever holds it drops the rest
            };
        }
    }
}

/// Stored Responses by id, bounded to [`MAX_STORED_RESPONSES`] (oldest evicted first; an
/// evicted response stays reachable as the parent of later ones until they go too).
pub struct ResponseStore {
    capacity: usize,
    inner: Mutex<StoredMap>,
}

#[derive(Default)]
struct StoredMap {
    by_id: HashMap<String, Arc<StoredResponse>>,
    insertion_order: VecDeque<String>,
}

impl Default for ResponseStore {
    fn default() -> Self {
        ResponseStore::with_capacity(MAX_STORED_RESPONSES)
    }
}

impl ResponseStore {
    pub fn with_capacity(capacity: usize) -> ResponseStore {
        ResponseStore {
            capacity: capacity.max(1),
            inner: Mutex::new(StoredMap::default()),
        }
    }

    pub fn get(&self, id: &str) -> Option<Arc<StoredResponse>> {
        lock(&self.inner).by_id.get(id).cloned()
    }

    pub fn insert(&self, id: String, parent: Option<Arc<StoredResponse>>, items: Vec<Value>) {
        let stored = Arc::new(StoredResponse { parent, items });
        let mut map = lock(&self.inner);
        if map.by_id.insert(id.clone(), stored).is_some() {
            return; // already in the eviction order
        }
        map.insertion_order.push_back(id);
        while map.by_id.len() > self.capacity {
            let Some(oldest) = map.insertion_order.pop_front() else {
                break;
            };
            map.by_id.remove(&oldest);
        }
    }

    /// Forgets every stored response; returns how many there were.
    pub fn clear(&self) -> usize {
        let mut map = lock(&self.inner);
        let count = map.by_id.len();
        map.by_id.clear();
        map.insertion_order.clear();
        count
    }

    pub fn len(&self) -> usize {
        lock(&self.inner).by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Requests per route since the server started.
#[derive(Default)]
pub struct RequestStats {
    pub chat: AtomicU64,
    pub responses: AtomicU64,
    /// Responses requests whose `previous_response_id` was found.
    pub responses_chained: AtomicU64,
    pub messages: AtomicU64,
    /// Streamed answers whose body is still being sent (the client has not gone away).
    pub open_streams: Arc<std::sync::atomic::AtomicI64>,
}

/// Counts one open stream while alive (see [`RequestStats::open_streams`]).
pub struct OpenStream(Arc<std::sync::atomic::AtomicI64>);

impl OpenStream {
    pub fn new(counter: &Arc<std::sync::atomic::AtomicI64>) -> OpenStream {
        counter.fetch_add(1, Ordering::Relaxed);
        OpenStream(counter.clone())
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl RequestStats {
    pub fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The body of `GET /mock/stats` (without the store size, which the caller adds).
    pub fn snapshot(&self) -> Value {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        json!({
            "requests": {
                "chat": read(&self.chat),
                "responses": read(&self.responses),
                "responses_chained": read(&self.responses_chained),
                "messages": read(&self.messages),
            },
            "open_streams": self.open_streams.load(Ordering::Relaxed),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_counters_count_identical_bodies() {
        let counters = FailureCounters::default();
        assert_eq!(counters.record(7), 0);
        assert_eq!(counters.record(7), 1);
        assert_eq!(counters.record(8), 0);
    }

    #[test]
    fn store_evicts_the_oldest_and_keeps_chains_readable() {
        let store = ResponseStore::with_capacity(2);
        store.insert("a".to_owned(), None, vec![json!(1)]);
        let a = store.get("a");
        store.insert("b".to_owned(), a, vec![json!(2)]);
        store.insert("c".to_owned(), store.get("b"), vec![json!(3)]);
        assert!(store.get("a").is_none(), "evicted");
        assert_eq!(store.len(), 2);
        let chain = store.get("c").expect("stored").chain();
        let items: Vec<&Value> = chain.iter().flat_map(|link| link.items()).collect();
        assert_eq!(items, [&json!(1), &json!(2), &json!(3)]);
        assert_eq!(store.clear(), 2);
        assert!(store.is_empty() && store.get("c").is_none());
    }

    #[test]
    fn a_long_chain_drops_without_recursion() {
        let store = ResponseStore::with_capacity(1);
        let mut previous = None;
        for step in 0..200_000 {
            let id = format!("r{step}");
            store.insert(id.clone(), previous.take(), Vec::new());
            previous = store.get(&id);
        }
        drop(previous);
        store.clear();
    }
}
