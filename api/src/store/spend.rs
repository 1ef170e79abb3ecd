//! Spend reads: totals over billed rows, by model (and by day).
//!
//! Billed rows are assistant messages and compaction summaries (message rows with usage),
//! including deleted (edited away) ones and those of deleted chats — the money was spent —
//! and `usage_records` (chat titles). `cost_micros` is what the worker stored per row (ceil to whole
//! micro-dollars; NULL = the model had no price), so a total is exact and a NULL total means
//! no counted row was priced.

use chatd_shared::db::sql::Sql;
use deadpool_postgres::Client;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::{ApiError, ApiResult};

/// Sums over a set of assistant rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpendTotals {
    /// Sum of the priced rows' costs; `None` when no row was priced.
    pub cost_micros: Option<i64>,
    /// Rows without a price (`cost_micros IS NULL`).
    pub unpriced_messages: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub reasoning_tokens: i64,
    pub cache_read_tokens: i64,
    pub cache_write_tokens: i64,
    pub runtime_ms: i64,
    /// Billed rows counted (assistant messages, compaction summaries, titles).
    pub messages: i64,
}

impl SpendTotals {
    /// Adds `other` (saturating: totals never wrap).
    pub fn add(&mut self, other: &SpendTotals) {
        self.cost_micros = match (self.cost_micros, other.cost_micros) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0).saturating_add(b.unwrap_or(0))),
        };
        self.unpriced_messages = self
            .unpriced_messages
            .saturating_add(other.unpriced_messages);
        self.input_tokens = self.input_tokens.saturating_add(other.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(other.output_tokens);
        self.reasoning_tokens = self.reasoning_tokens.saturating_add(other.reasoning_tokens);
        self.cache_read_tokens = self
            .cache_read_tokens
            .saturating_add(other.cache_read_tokens);
        self.cache_write_tokens = self
            .cache_write_tokens
            .saturating_add(other.cache_write_tokens);
        self.runtime_ms = self.runtime_ms.saturating_add(other.runtime_ms);
        self.messages = self.messages.saturating_add(other.messages);
    }
}

/// Totals of one model config (and, for usage, one UTC day).
#[derive(Debug, Clone)]
pub struct SpendGroup {
    pub model_config_id: Option<Uuid>,
    /// From the model config (also when it is deleted); `None` if the row names none.
    pub model: Option<String>,
    pub display_name: Option<String>,
    /// `YYYY-MM-DD` in UTC (usage only).
    pub day: Option<String>,
    pub totals: SpendTotals,
}

/// The columns of a billed row (`m`: a message or a usage record) the sums read.
const BILLED: &str = "m.model_config_id, m.cost_micros, m.input_tokens, m.output_tokens, \
    m.reasoning_tokens, m.cache_read_tokens, m.cache_write_tokens, m.runtime_ms, m.created_at";

/// Which message rows are billed: assistant messages and compaction summaries (a summary is
/// a user-role row that carries the summary request's usage).
const BILLED_ROW: &str = "(m.role = 'assistant' OR m.input_tokens IS NOT NULL)";

/// The aggregate columns shared by both reads (`m` = chat_messages). Sums are numeric in
/// PostgreSQL; they are cast back to bigint.
const SUMS: &str = "sum(m.cost_micros)::bigint, \
    count(*) FILTER (WHERE m.cost_micros IS NULL), \
    coalesce(sum(m.input_tokens), 0)::bigint, coalesce(sum(m.output_tokens), 0)::bigint, \
    coalesce(sum(m.reasoning_tokens), 0)::bigint, coalesce(sum(m.cache_read_tokens), 0)::bigint, \
    coalesce(sum(m.cache_write_tokens), 0)::bigint, coalesce(sum(m.runtime_ms), 0)::bigint, \
    count(*)";

fn totals_at(row: &tokio_postgres::Row, offset: usize) -> SpendTotals {
    SpendTotals {
        cost_micros: row.get(offset),
        unpriced_messages: row.get(offset + 1),
        input_tokens: row.get(offset + 2),
        output_tokens: row.get(offset + 3),
        reasoning_tokens: row.get(offset + 4),
        cache_read_tokens: row.get(offset + 5),
        cache_write_tokens: row.get(offset + 6),
        runtime_ms: row.get(offset + 7),
        messages: row.get(offset + 8),
    }
}

/// Spend of the caller's chat `chat_id` and, when it is a root chat, of its sub-chats (every
/// chat whose `root_chat_id` is it). Returns the number of chats counted and the totals by
/// model config. `NotFound` for missing and foreign chats alike.
pub async fn chat_cost(
    client: &Client,
    chat_id: Uuid,
    owner_id: Uuid,
) -> ApiResult<(i64, Vec<SpendGroup>)> {
    let chats = client
        .row_opt(
            "SELECT 1 + (SELECT count(*) FROM chats k \
                     WHERE k.root_chat_id = c.id AND k.owner_id = c.owner_id) \
                     FROM chats c WHERE c.id = $1 AND c.owner_id = $2 AND NOT c.deleted",
            &[&chat_id, &owner_id],
        )
        .await?
        .ok_or(ApiError::NotFound("chat"))?
        .get::<_, i64>(0);
    let sql = format!(
        "WITH tree AS ( \
             SELECT $1::uuid AS id \
             UNION ALL \
             SELECT k.id FROM chats k WHERE k.root_chat_id = $1 AND k.owner_id = $2) \
         SELECT m.model_config_id, mc.model, mc.display_name, {SUMS} \
         FROM (SELECT {BILLED} FROM tree t JOIN chat_messages m ON m.chat_id = t.id \
               WHERE {BILLED_ROW} \
               UNION ALL \
               SELECT {BILLED} FROM tree t JOIN usage_records m ON m.chat_id = t.id) m \
         LEFT JOIN model_configs mc ON mc.id = m.model_config_id \
         GROUP BY m.model_config_id, mc.model, mc.display_name \
         ORDER BY m.model_config_id"
    );
    let rows = client.rows(&sql, &[&chat_id, &owner_id]).await?;
    let groups = rows
        .iter()
        .map(|row| SpendGroup {
            model_config_id: row.get(0),
            model: row.get(1),
            display_name: row.get(2),
            day: None,
            totals: totals_at(row, 3),
        })
        .collect();
    Ok((chats, groups))
}

/// Spend of all the caller's chats with assistant rows created in `[from, to)`, by model
/// config and UTC day.
///
/// The read starts from the owner's chats (a chat created at or after `to` cannot have rows
/// in the window) and reaches their messages through `chat_messages_chat (chat_id, id)`.
pub async fn user_usage(
    client: &Client,
    owner_id: Uuid,
    from: OffsetDateTime,
    to: OffsetDateTime,
) -> ApiResult<Vec<SpendGroup>> {
    let sql = format!(
        "SELECT m.model_config_id, mc.model, mc.display_name, \
         to_char(m.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day, {SUMS} \
         FROM (SELECT {BILLED} FROM chats c JOIN chat_messages m ON m.chat_id = c.id \
               WHERE c.owner_id = $1 AND c.created_at < $3 AND {BILLED_ROW} \
               AND m.created_at >= $2 AND m.created_at < $3 \
               UNION ALL \
               SELECT {BILLED} FROM usage_records m WHERE m.owner_id = $1 \
               AND m.created_at >= $2 AND m.created_at < $3) m \
         LEFT JOIN model_configs mc ON mc.id = m.model_config_id \
         GROUP BY day, m.model_config_id, mc.model, mc.display_name \
         ORDER BY day, m.model_config_id"
    );
    let rows = client.rows(&sql, &[&owner_id, &from, &to]).await?;
    Ok(rows
        .iter()
        .map(|row| SpendGroup {
            model_config_id: row.get(0),
            model: row.get(1),
            display_name: row.get(2),
            day: row.get(3),
            totals: totals_at(row, 4),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_stays_null_until_a_priced_row_is_added() {
        let unpriced = SpendTotals {
            unpriced_messages: 2,
            input_tokens: 10,
            messages: 2,
            ..SpendTotals::default()
        };
        let mut total = SpendTotals::default();
        total.add(&unpriced);
        assert_eq!(total.cost_micros, None);
        assert_eq!(total.unpriced_messages, 2);
        let priced = SpendTotals {
            cost_micros: Some(7),
            output_tokens: 3,
            messages: 1,
            ..SpendTotals::default()
        };
        total.add(&priced);
        total.add(&unpriced);
        assert_eq!(total.cost_micros, Some(7));
        assert_eq!(
            (total.input_tokens, total.output_tokens, total.messages),
            (20, 3, 5)
        );
        let huge = SpendTotals {
            cost_micros: Some(i64::MAX),
            ..SpendTotals::default()
        };
        total.add(&huge);
        assert_eq!(total.cost_micros, Some(i64::MAX));
    }
}
