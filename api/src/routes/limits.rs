//! Spend limits (admin): the deployment's settings (`/usage-limits`), a user's own limit
//! (`/users/{id}/spend-limit`) and groups whose limit applies to their members (`/groups`).
//! A user's limit is their own when set, else the lowest of their groups', else the default.
//!
//! Every change publishes `chatd_config` (`ConfigKind::Limits`) so API replicas and workers
//! drop their cached spend statuses; [`ensure_within_limit`] is what the routes that start
//! turns call.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use chatd_shared::db::limits::{self, LimitSettings, PERIODS};
use chatd_shared::pubsub::{publish_config_change, ConfigKind, ConfigNotice};

use crate::body::{JsonInt, StrictJson};
use crate::cursor::parse_uuid;
use crate::error::{ApiError, ApiResult};
use crate::routes::admin::AdminUser;
use crate::routes::json_response;
use crate::routes::users::{User, UserResponse};
use crate::state::AppState;
use crate::store::content::plain_field;
use crate::store::users::{self as store, GroupRow};

/// 429 `spend_limit_exceeded` when `user_id` is at or over their limit for the current period.
/// Free while limits are off (a cached "off"); otherwise at most one read per user per 2 s.
pub async fn ensure_within_limit(
    state: &AppState,
    client: &deadpool_postgres::Client,
    user_id: Uuid,
) -> ApiResult<()> {
    let Some(status) = state.spend.status(&**client, user_id).await? else {
        return Ok(());
    };
    match status.limit_micros {
        Some(limit_micros) if status.spent_micros >= limit_micros => Err(ApiError::SpendLimit {
            limit_micros,
            spent_micros: status.spent_micros,
            period: status.period,
            resets_at: status.resets_at,
        }),
        _ => Ok(()),
    }
}

async fn limits_changed(client: &deadpool_postgres::Client, admin: AdminUser, id: Uuid) {
    tracing::info!(admin_id = %admin.0.id, %id, "spend limits changed");
    let notice = ConfigNotice {
        kind: ConfigKind::Limits,
        id,
    };
    if let Err(error) = publish_config_change(client, notice).await {
        tracing::warn!(error = %error, "publish the limits change");
    }
}

fn check_limit(limit: Option<i64>, field: &str) -> ApiResult<()> {
    if limit.is_some_and(|limit| limit < 0) {
        return Err(ApiError::field(
            field,
            format!("{field}: micro-dollars, 0 or more (null: no limit)"),
        ));
    }
    Ok(())
}

/// The deployment's spend limit settings.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UsageLimits {
    /// Off: nobody is limited (spend is still recorded).
    pub enabled: bool,
    /// Calendar periods in UTC; weeks start on Monday.
    #[schema(pattern = "^(day|week|month)$")]
    pub period: String,
    /// For users with no limit of their own or of a group; `null`: no limit for them.
    #[schema(value_type = Option<i64>, minimum = 0)]
    pub default_limit_micros: Option<JsonInt<i64>>,
}

#[utoipa::path(get, path = "/usage-limits", operation_id = "getUsageLimits", tag = "limits",
    responses((status = 200, description = "The spend limit settings", body = UsageLimits)))]
pub async fn get_settings(State(state): State<AppState>, _admin: AdminUser) -> ApiResult<Response> {
    let client = state.pool.get().await?;
    let settings = limits::settings(&*client).await?;
    Ok(json_response(
        StatusCode::OK,
        UsageLimits {
            enabled: settings.enabled,
            period: settings.period,
            default_limit_micros: settings.default_limit_micros.map(JsonInt),
        },
    ))
}

#[utoipa::path(put, path = "/usage-limits", operation_id = "putUsageLimits", tag = "limits",
    request_body = UsageLimits,
    responses((status = 200, description = "The settings, as stored; every replica and worker applies them within a second", body = UsageLimits)))]
pub async fn put_settings(
    State(state): State<AppState>,
    admin: AdminUser,
    StrictJson(request): StrictJson<UsageLimits>,
) -> ApiResult<Response> {
    if !PERIODS.contains(&request.period.as_str()) {
        return Err(ApiError::field("period", "period: day, week or month"));
    }
    let default_limit_micros = request.default_limit_micros.map(|limit| limit.0);
    check_limit(default_limit_micros, "default_limit_micros")?;
    let client = state.pool.get().await?;
    let settings = LimitSettings {
        enabled: request.enabled,
        period: request.period,
        default_limit_micros,
    };
    limits::set_settings(&*client, &settings).await?;
    limits_changed(&client, admin, Uuid::nil()).await;
    Ok(json_response(
        StatusCode::OK,
        UsageLimits {
            enabled: settings.enabled,
            period: settings.period,
            default_limit_micros: settings.default_limit_micros.map(JsonInt),
        },
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SpendLimitRequest {
    /// Micro-dollars per period; `null` removes the user's own limit.
    #[schema(value_type = Option<i64>, minimum = 0)]
    pub limit_micros: Option<JsonInt<i64>>,
}

#[utoipa::path(put, path = "/users/{user_id}/spend-limit", operation_id = "putUserSpendLimit", tag = "limits",
    params(("user_id" = Uuid, Path, description = "A user")), request_body = SpendLimitRequest,
    responses((status = 200, description = "The user with their own limit", body = UserResponse)))]
pub async fn put_user_limit(
    State(state): State<AppState>,
    admin: AdminUser,
    Path(user_id): Path<String>,
    StrictJson(request): StrictJson<SpendLimitRequest>,
) -> ApiResult<Response> {
    let user_id = parse_uuid(&user_id, "user_id")?;
    let limit_micros = request.limit_micros.map(|limit| limit.0);
    check_limit(limit_micros, "limit_micros")?;
    let client = state.pool.get().await?;
    let row = store::set_spend_limit(&*client, user_id, limit_micros).await?;
    limits_changed(&client, admin, user_id).await;
    Ok(json_response(
        StatusCode::OK,
        UserResponse {
            user: User::from(&row),
        },
    ))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Group {
    pub id: Uuid,
    pub name: String,
    /// Applies to members without a limit of their own (the lowest of their groups' wins).
    pub spend_limit_micros: Option<i64>,
    pub members: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl From<&GroupRow> for Group {
    fn from(row: &GroupRow) -> Group {
        Group {
            id: row.id,
            name: row.name.clone(),
            spend_limit_micros: row.spend_limit_micros,
            members: row.members,
            created_at: row.created_at,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct GroupResponse {
    pub group: Group,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct GroupList {
    pub items: Vec<Group>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MemberList {
    pub items: Vec<User>,
}

/// A group's name and limit (create and replace).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupRequest {
    /// Must contain a non-whitespace character; no NUL.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\u0000]*[^\u0000\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\u0000]*$"
    )]
    pub name: String,
    #[schema(value_type = Option<i64>, minimum = 0)]
    pub spend_limit_micros: Option<JsonInt<i64>>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMemberRequest {
    pub user_id: Uuid,
}

fn check_group(request: &GroupRequest) -> ApiResult<()> {
    plain_field(&request.name, "name", 100)?;
    if request.name.trim().is_empty() {
        return Err(ApiError::field("name", "name: must not be blank"));
    }
    check_limit(
        request.spend_limit_micros.map(|limit| limit.0),
        "spend_limit_micros",
    )
}

#[utoipa::path(get, path = "/groups", operation_id = "listGroups", tag = "limits",
    responses((status = 200, description = "Groups by name", body = GroupList)))]
pub async fn list_groups(State(state): State<AppState>, _admin: AdminUser) -> ApiResult<Response> {
    let client = state.pool.get().await?;
    let rows = store::list_groups(&*client).await?;
    Ok(json_response(
        StatusCode::OK,
        GroupList {
            items: rows.iter().map(Group::from).collect(),
        },
    ))
}

#[utoipa::path(post, path = "/groups", operation_id = "createGroup", tag = "limits",
    request_body = GroupRequest,
    responses((status = 201, description = "Created (409 when the name is taken)", body = GroupResponse)))]
pub async fn create_group(
    State(state): State<AppState>,
    admin: AdminUser,
    StrictJson(request): StrictJson<GroupRequest>,
) -> ApiResult<Response> {
    check_group(&request)?;
    let client = state.pool.get().await?;
    let limit = request.spend_limit_micros.map(|limit| limit.0);
    let row = store::create_group(&*client, &request.name, limit).await?;
    limits_changed(&client, admin, row.id).await;
    Ok(json_response(
        StatusCode::CREATED,
        GroupResponse {
            group: Group::from(&row),
        },
    ))
}

#[utoipa::path(get, path = "/groups/{group_id}", operation_id = "getGroup", tag = "limits",
    params(("group_id" = Uuid, Path, description = "A group")),
    responses((status = 200, description = "The group", body = GroupResponse)))]
pub async fn get_group(
    State(state): State<AppState>,
    _admin: AdminUser,
    Path(group_id): Path<String>,
) -> ApiResult<Response> {
    let group_id = parse_uuid(&group_id, "group_id")?;
    let client = state.pool.get().await?;
    let row = store::get_group(&*client, group_id).await?;
    Ok(json_response(
        StatusCode::OK,
        GroupResponse {
            group: Group::from(&row),
        },
    ))
}

#[utoipa::path(put, path = "/groups/{group_id}", operation_id = "putGroup", tag = "limits",
    params(("group_id" = Uuid, Path, description = "A group")), request_body = GroupRequest,
    responses((status = 200, description = "The group with its new name and limit", body = GroupResponse)))]
pub async fn put_group(
    State(state): State<AppState>,
    admin: AdminUser,
    Path(group_id): Path<String>,
    StrictJson(request): StrictJson<GroupRequest>,
) -> ApiResult<Response> {
    let group_id = parse_uuid(&group_id, "group_id")?;
    check_group(&request)?;
    let client = state.pool.get().await?;
    let limit = request.spend_limit_micros.map(|limit| limit.0);
    let row = store::put_group(&*client, group_id, &request.name, limit).await?;
    limits_changed(&client, admin, group_id).await;
    Ok(json_response(
        StatusCode::OK,
        GroupResponse {
            group: Group::from(&row),
        },
    ))
}

#[utoipa::path(delete, path = "/groups/{group_id}", operation_id = "deleteGroup", tag = "limits",
    params(("group_id" = Uuid, Path, description = "A group")),
    responses((status = 204, description = "Deleted; its limit no longer applies to its members")))]
pub async fn delete_group(
    State(state): State<AppState>,
    admin: AdminUser,
    Path(group_id): Path<String>,
) -> ApiResult<Response> {
    let group_id = parse_uuid(&group_id, "group_id")?;
    let client = state.pool.get().await?;
    store::delete_group(&*client, group_id).await?;
    limits_changed(&client, admin, group_id).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[utoipa::path(get, path = "/groups/{group_id}/members", operation_id = "listGroupMembers", tag = "limits",
    params(("group_id" = Uuid, Path, description = "A group")),
    responses((status = 200, description = "The members by username", body = MemberList)))]
pub async fn members(
    State(state): State<AppState>,
    _admin: AdminUser,
    Path(group_id): Path<String>,
) -> ApiResult<Response> {
    let group_id = parse_uuid(&group_id, "group_id")?;
    let client = state.pool.get().await?;
    let rows = store::group_members(&*client, group_id).await?;
    Ok(json_response(
        StatusCode::OK,
        MemberList {
            items: rows.iter().map(User::from).collect(),
        },
    ))
}

#[utoipa::path(post, path = "/groups/{group_id}/members", operation_id = "addGroupMember", tag = "limits",
    params(("group_id" = Uuid, Path, description = "A group")), request_body = AddMemberRequest,
    responses((status = 200, description = "The group after adding the user (adding a member twice changes nothing; an unknown user is 422)", body = GroupResponse)))]
pub async fn add_member(
    State(state): State<AppState>,
    admin: AdminUser,
    Path(group_id): Path<String>,
    StrictJson(request): StrictJson<AddMemberRequest>,
) -> ApiResult<Response> {
    let group_id = parse_uuid(&group_id, "group_id")?;
    let client = state.pool.get().await?;
    store::add_member(&*client, group_id, request.user_id).await?;
    limits_changed(&client, admin, group_id).await;
    let row = store::get_group(&*client, group_id).await?;
    Ok(json_response(
        StatusCode::OK,
        GroupResponse {
            group: Group::from(&row),
        },
    ))
}

#[utoipa::path(delete, path = "/groups/{group_id}/members/{user_id}", operation_id = "removeGroupMember", tag = "limits",
    params(("group_id" = Uuid, Path, description = "A group"), ("user_id" = Uuid, Path, description = "A member")),
    responses((status = 204, description = "Removed from the group")))]
pub async fn remove_member(
    State(state): State<AppState>,
    admin: AdminUser,
    Path((group_id, user_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let group_id = parse_uuid(&group_id, "group_id")?;
    let user_id = parse_uuid(&user_id, "user_id")?;
    let client = state.pool.get().await?;
    store::remove_member(&*client, group_id, user_id).await?;
    limits_changed(&client, admin, group_id).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}
