//! The prompts of the chats this worker ran, so a turn reads only the rows written since
//! (B8: a turn's database cost must not grow with the chat's length).
//!
//! An entry holds a chat's prompt rows as the full read would return them (system rows and
//! everything from the newest compaction summary on, deleted and user-only rows left out),
//! the id of the newest row it has and the chat's `history_epoch`. The next turn asks the
//! database for rows after that id only, in the same one statement that reads the chat's
//! state (`store::turn::load_prompt`), unless the epoch moved (an edit rewrote the history):
//! then it reads everything, as without a cache. Rows are only ever appended to a chat
//! otherwise — a compaction summary is a new row, after which the rows before it leave the
//! prompt here as they do in the full read.
//!
//! While a turn runs, its chat's entry is out of the cache (`take`), and it is put back when
//! the prompt is loaded: a chat runs on one worker at a time, and an entry from a lost lease
//! is harmless (the next load checks the epoch and reads only ids it does not have).
//! Bounded by the bytes of the rows' stored content; the least recently used go first.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use chatd_shared::domain::{ContentPart, Role};
use uuid::Uuid;

/// One stored row of a chat's prompt.
#[derive(Debug, Clone)]
pub struct PromptRow {
    pub id: i64,
    pub role: Role,
    /// Decoded, blank parts dropped (may be empty: the row still names a model).
    pub parts: Vec<ContentPart>,
    pub model_config_id: Option<Uuid>,
    pub provider_response_id: Option<String>,
    pub compressed: bool,
    /// Bytes of the stored content, for the cache's bound.
    pub bytes: usize,
}

/// A chat's prompt rows as of `last_id`, under `epoch`.
#[derive(Debug, Clone, Default)]
pub struct CachedPrompt {
    pub epoch: i32,
    pub last_id: i64,
    pub rows: Vec<PromptRow>,
}

impl CachedPrompt {
    fn bytes(&self) -> usize {
        self.rows.iter().map(|row| row.bytes + 64).sum::<usize>() + 64
    }

    /// Appends rows read after `last_id` (in id order), applying the full read's rule: a
    /// compaction summary drops the non-system rows before it.
    pub fn extend(&mut self, rows: Vec<PromptRow>) {
        for row in rows {
            if row.id <= self.last_id {
                continue; // never twice
            }
            if row.compressed {
                self.rows.retain(|kept| kept.role == Role::System);
            }
            self.last_id = row.id;
            self.rows.push(row);
        }
    }
}

#[derive(Default)]
struct State {
    entries: HashMap<Uuid, (CachedPrompt, usize, u64)>,
    /// Use order: tick → chat.
    order: BTreeMap<u64, Uuid>,
    bytes: usize,
    tick: u64,
}

/// The worker's prompt cache (`--prompt-cache-bytes`; 0 turns it off).
pub struct PromptCache {
    max_bytes: usize,
    state: Mutex<State>,
}

impl PromptCache {
    pub fn new(max_bytes: usize) -> PromptCache {
        PromptCache {
            max_bytes,
            state: Mutex::default(),
        }
    }

    /// Takes the chat's entry out (the running turn owns it until it puts it back).
    pub fn take(&self, chat_id: Uuid) -> Option<CachedPrompt> {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let (entry, bytes, tick) = state.entries.remove(&chat_id)?;
        state.order.remove(&tick);
        state.bytes -= bytes;
        Some(entry)
    }

    /// Keeps `entry` for the chat's next turn, evicting the least recently used beyond the
    /// bound (an entry larger than the whole bound is not kept).
    pub fn put(&self, chat_id: Uuid, entry: CachedPrompt) {
        let bytes = entry.bytes();
        if bytes > self.max_bytes {
            return;
        }
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if let Some((_, old_bytes, old_tick)) = state.entries.remove(&chat_id) {
            state.order.remove(&old_tick);
            state.bytes -= old_bytes;
        }
        while state.bytes + bytes > self.max_bytes {
            let Some((_, victim)) = state.order.pop_first() else {
                break;
            };
            if let Some((_, victim_bytes, _)) = state.entries.remove(&victim) {
                state.bytes -= victim_bytes;
            }
        }
        state.tick += 1;
        let tick = state.tick;
        state.order.insert(tick, chat_id);
        state.entries.insert(chat_id, (entry, bytes, tick));
        state.bytes += bytes;
        metrics::gauge!("chatd_prompt_cache_bytes").set(state.bytes as f64);
    }

    pub fn enabled(&self) -> bool {
        self.max_bytes > 0
    }

    /// (entries, bytes) held now.
    pub fn size(&self) -> (usize, usize) {
        let state = self
            .state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        (state.entries.len(), state.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64, role: Role, text: &str, compressed: bool) -> PromptRow {
        PromptRow {
            id,
            role,
            parts: vec![ContentPart::text(text)],
            model_config_id: None,
            provider_response_id: None,
            compressed,
            bytes: text.len(),
        }
    }

    #[test]
    fn a_summary_drops_what_came_before_it_but_system_rows() {
        let mut prompt = CachedPrompt::default();
        prompt.extend(vec![
            row(1, Role::System, "sys", false),
            row(2, Role::User, "a", false),
            row(3, Role::Assistant, "b", false),
        ]);
        prompt.extend(vec![
            row(3, Role::Assistant, "b", false),
            row(4, Role::User, "summary", true),
            row(5, Role::Assistant, "c", false),
        ]);
        let ids: Vec<i64> = prompt.rows.iter().map(|row| row.id).collect();
        assert_eq!(ids, [1, 4, 5]);
        assert_eq!(prompt.last_id, 5);
    }

    #[test]
    fn the_least_recently_used_are_evicted_by_bytes() {
        let cache = PromptCache::new(1_000);
        let entry = |text: &str| CachedPrompt {
            epoch: 0,
            last_id: 1,
            rows: vec![row(1, Role::User, text, false)],
        };
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        cache.put(a, entry(&"x".repeat(300)));
        cache.put(b, entry(&"y".repeat(300)));
        cache.put(c, entry(&"z".repeat(300)));
        assert!(cache.take(a).is_none(), "the oldest entry was evicted");
        assert!(cache.take(b).is_some());
        assert!(cache.take(c).is_some());
        assert_eq!(cache.size(), (0, 0));
        cache.put(a, entry(&"x".repeat(2_000)));
        assert!(
            cache.take(a).is_none(),
            "an entry over the bound is not kept"
        );
    }
}
