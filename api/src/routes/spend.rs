//! `GET /chats/{chat_id}/cost` and `GET /users/me/usage`: what the caller's chats cost.
//!
//! Prices are micro-dollars per million tokens; every assistant row stores its own cost,
//! computed by the worker when it was written (rounded up to a whole micro-dollar), so these
//! routes only add stored figures up. Deleted and compressed rows count: spend history
//! survives edits and compaction.

use std::collections::BTreeMap;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use time::{Date, OffsetDateTime, Time};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::CurrentUser;
use crate::cursor::{parse_uuid, query_pairs};
use crate::error::{ApiError, ApiResult};
use crate::routes::json_response;
use crate::state::AppState;
use crate::store::spend::{self as store, SpendGroup, SpendTotals};

/// Totals in the wire format (flattened into every spend object).
#[derive(Debug, Serialize, ToSchema)]
pub struct Totals {
    /// Sum over priced rows, micro-dollars; `null` only when no row was priced.
    pub cost_micros: Option<i64>,
    pub unpriced_messages: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub reasoning_tokens: i64,
    pub cache_read_tokens: i64,
    pub cache_write_tokens: i64,
    pub runtime_ms: i64,
    /// Assistant messages counted.
    pub messages: i64,
}

impl From<&SpendTotals> for Totals {
    fn from(totals: &SpendTotals) -> Totals {
        Totals {
            cost_micros: totals.cost_micros,
            unpriced_messages: totals.unpriced_messages,
            input_tokens: totals.input_tokens,
            output_tokens: totals.output_tokens,
            reasoning_tokens: totals.reasoning_tokens,
            cache_read_tokens: totals.cache_read_tokens,
            cache_write_tokens: totals.cache_write_tokens,
            runtime_ms: totals.runtime_ms,
            messages: totals.messages,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelSpend {
    /// `null` for rows that name no model config.
    pub model_config_id: Option<Uuid>,
    /// The config's model and display name, also when it was deleted since.
    pub model: Option<String>,
    pub display_name: Option<String>,
    #[serde(flatten)]
    pub totals: Totals,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DaySpend {
    /// `YYYY-MM-DD`, UTC.
    #[schema(format = Date)]
    pub day: String,
    #[serde(flatten)]
    pub totals: Totals,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChatCost {
    pub chat_id: Uuid,
    /// Chats counted: the chat and, for a root chat, its sub-chats.
    pub chats: i64,
    #[serde(flatten)]
    pub totals: Totals,
    pub by_model: Vec<ModelSpend>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserUsage {
    pub user_id: Uuid,
    /// The window `[from, to)`.
    #[serde(with = "time::serde::rfc3339")]
    pub from: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub to: OffsetDateTime,
    #[serde(flatten)]
    pub totals: Totals,
    pub by_model: Vec<ModelSpend>,
    /// Days with at least one assistant message, oldest first.
    pub days: Vec<DaySpend>,
    /// The caller's spend limit in the current period; `null` while limits are off.
    pub limit: Option<SpendLimitState>,
}

/// Where the caller stands against their spend limit (the current calendar period in UTC,
/// whatever `from`/`to` asked for).
#[derive(Debug, Serialize, ToSchema)]
pub struct SpendLimitState {
    /// `null`: no limit applies to the caller.
    pub limit_micros: Option<i64>,
    pub spent_micros: i64,
    /// `limit_micros - spent_micros`, never below 0; `null` without a limit.
    pub remaining_micros: Option<i64>,
    /// `day`, `week` or `month`.
    pub period: String,
    #[serde(with = "time::serde::rfc3339")]
    pub period_start: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub resets_at: OffsetDateTime,
}

#[utoipa::path(get, path = "/chats/{chat_id}/cost", operation_id = "getChatCost", tag = "spend",
    params(("chat_id" = Uuid, Path, description = "A chat of the caller")),
    responses((status = 200, description = "The chat's spend (with its sub-chats for a root chat)", body = ChatCost)))]
pub async fn chat_cost(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(chat_id): Path<String>,
) -> ApiResult<Response> {
    let chat_id = parse_uuid(&chat_id, "chat_id")?;
    let client = state.pool.get().await?;
    let (chats, groups) = store::chat_cost(&client, chat_id, user.id).await?;
    let (totals, by_model) = by_model(&groups);
    Ok(json_response(
        StatusCode::OK,
        ChatCost {
            chat_id,
            chats,
            totals: Totals::from(&totals),
            by_model,
        },
    ))
}

#[utoipa::path(get, path = "/users/me/usage", operation_id = "getUsage", tag = "spend",
    params(
        ("from" = Option<String>, Query, format = DateTime, description = "RFC 3339; default: the start of the current UTC month"),
        ("to" = Option<String>, Query, format = DateTime, description = "RFC 3339, not before `from`; default: the start of the next UTC month"),
    ),
    responses((status = 200, description = "The caller's spend in `[from, to)`", body = UserUsage)))]
pub async fn user_usage(
    State(state): State<AppState>,
    user: CurrentUser,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let (from, to) = usage_window(raw.as_deref(), OffsetDateTime::now_utc())?;
    let client = state.pool.get().await?;
    let groups = store::user_usage(&client, user.id, from, to).await?;
    let (_, limit) = chatd_shared::db::limits::status(&*client, user.id).await?;
    let limit = limit.map(|status| SpendLimitState {
        limit_micros: status.limit_micros,
        spent_micros: status.spent_micros,
        remaining_micros: status
            .limit_micros
            .map(|limit| (limit - status.spent_micros).max(0)),
        period: status.period,
        period_start: status.period_start,
        resets_at: status.resets_at,
    });
    let (totals, by_model) = by_model(&groups);
    let mut days: BTreeMap<String, SpendTotals> = BTreeMap::new();
    for group in &groups {
        if let Some(day) = &group.day {
            days.entry(day.clone()).or_default().add(&group.totals);
        }
    }
    Ok(json_response(
        StatusCode::OK,
        UserUsage {
            user_id: user.id,
            from,
            to,
            totals: Totals::from(&totals),
            by_model,
            days: days
                .iter()
                .map(|(day, totals)| DaySpend {
                    day: day.clone(),
                    totals: Totals::from(totals),
                })
                .collect(),
            limit,
        },
    ))
}

/// The overall totals and one entry per model config (merging usage's per-day groups).
fn by_model(groups: &[SpendGroup]) -> (SpendTotals, Vec<ModelSpend>) {
    let mut total = SpendTotals::default();
    let mut models: BTreeMap<Option<Uuid>, (Option<String>, Option<String>, SpendTotals)> =
        BTreeMap::new();
    for group in groups {
        total.add(&group.totals);
        let entry = models.entry(group.model_config_id).or_insert_with(|| {
            (
                group.model.clone(),
                group.display_name.clone(),
                SpendTotals::default(),
            )
        });
        entry.2.add(&group.totals);
    }
    let by_model = models
        .into_iter()
        .map(
            |(model_config_id, (model, display_name, totals))| ModelSpend {
                model_config_id,
                model,
                display_name,
                totals: Totals::from(&totals),
            },
        )
        .collect();
    (total, by_model)
}

/// `from` and `to` (RFC 3339) from the query; each defaults to the current calendar month in
/// UTC (`from` = its first instant, `to` = the next month's first instant).
fn usage_window(
    raw: Option<&str>,
    now: OffsetDateTime,
) -> ApiResult<(OffsetDateTime, OffsetDateTime)> {
    let (month_start, next_month_start) = month_bounds(now);
    let mut from = month_start;
    let mut to = next_month_start;
    for (key, value) in query_pairs(raw)? {
        match key.as_str() {
            "from" => from = parse_timestamp(&value, "from")?,
            "to" => to = parse_timestamp(&value, "to")?,
            other => return Err(ApiError::unknown_query_parameter(other)),
        }
    }
    if from > to {
        return Err(ApiError::field("from", "from: must not be after `to`"));
    }
    Ok((from, to))
}

/// An RFC 3339 timestamp. A `+` offset that arrived unencoded in a query string decodes as a
/// space; it is put back.
fn parse_timestamp(text: &str, field: &str) -> ApiResult<OffsetDateTime> {
    OffsetDateTime::parse(text, &Rfc3339)
        .or_else(|_| OffsetDateTime::parse(&text.replace(' ', "+"), &Rfc3339))
        .map_err(|_| {
            ApiError::field(
                field,
                format!("{field}: expected an RFC 3339 timestamp such as 2025-01-31T00:00:00Z"),
            )
        })
}

fn month_bounds(now: OffsetDateTime) -> (OffsetDateTime, OffsetDateTime) {
    let now = now.to_offset(time::UtcOffset::UTC);
    let first = |year: i32, month: time::Month| {
        Date::from_calendar_date(year, month, 1)
            .map(|date| date.with_time(Time::MIDNIGHT).assume_utc())
            .unwrap_or(now)
    };
    let start = first(now.year(), now.month());
    let next = match now.month() {
        time::Month::December => first(now.year() + 1, time::Month::January),
        month => first(now.year(), month.next()),
    };
    (start, next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn the_default_window_is_the_current_utc_month() {
        let now = datetime!(2024-12-31 23:30 -02:00); // 2025-01-01 01:30 UTC
        let (from, to) = usage_window(None, now).unwrap();
        assert_eq!(from, datetime!(2025-01-01 0:00 UTC));
        assert_eq!(to, datetime!(2025-02-01 0:00 UTC));
        let (from, to) = usage_window(None, datetime!(2024-12-15 12:00 UTC)).unwrap();
        assert_eq!(
            (from, to),
            (
                datetime!(2024-12-01 0:00 UTC),
                datetime!(2025-01-01 0:00 UTC)
            )
        );
    }

    #[test]
    fn windows_are_parsed_and_checked() {
        let now = datetime!(2025-03-10 12:00 UTC);
        let (from, to) = usage_window(
            Some("from=2025-01-01T00:00:00Z&to=2025-01-02T00:00:00+01:00"),
            now,
        )
        .unwrap();
        assert_eq!(from, datetime!(2025-01-01 0:00 UTC));
        assert_eq!(to, datetime!(2025-01-01 23:00 UTC));
        let (from, _) = usage_window(Some("from=2025-03-01T00:00:00%2B00:00"), now).unwrap();
        assert_eq!(from, datetime!(2025-03-01 0:00 UTC));
        for (query, field) in [
            ("from=yesterday", "from"),
            ("to=2025-13-01T00:00:00Z", "to"),
            ("from=2025-03-05T00:00:00Z&to=2025-03-04T00:00:00Z", "from"),
            ("from=2025-04-02T00:00:00Z", "from"),
            ("since=2025-01-01T00:00:00Z", "since"),
        ] {
            match usage_window(Some(query), now) {
                Err(ApiError::Validation { field: named, .. }) => assert_eq!(named, field),
                other => panic!("{query}: {other:?}"),
            }
        }
    }
}
