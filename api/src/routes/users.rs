//! Users and API tokens: the admin routes (`/users`, `/users/{id}`, `/users/{id}/tokens`) and
//! the caller's own (`/users/me`, `/users/me/tokens`).
//!
//! A token's secret is in the creation answer only (only its hash is stored). Deleting a
//! token, suspending a user or changing their admin rights publishes `chatd_config`
//! (`ConfigKind::Auth`): every replica evicts the user's cached tokens at once and their open
//! streams recheck their token, so the change holds everywhere within a second.

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use chatd_shared::pubsub::{publish_config_change, ConfigKind, ConfigNotice};

use crate::auth::CurrentUser;
use crate::body::StrictJson;
use crate::cursor::{parse_limit, parse_uuid, query_pairs};
use crate::error::{ApiError, ApiResult};
use crate::routes::admin::AdminUser;
use crate::routes::json_response;
use crate::state::AppState;
use crate::store::content::plain_field;
use crate::store::users::{self as store, TokenRow, UserPatch, UserRow};

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct User {
    pub id: Uuid,
    pub username: String,
    pub display_name: String,
    pub is_admin: bool,
    /// A suspended user's tokens do not authenticate.
    pub suspended: bool,
    /// The user's own spend limit (`PUT /users/{id}/spend-limit`); `null`: their groups' or
    /// the default applies.
    pub spend_limit_micros: Option<i64>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl From<&UserRow> for User {
    fn from(row: &UserRow) -> User {
        User {
            id: row.id,
            username: row.username.clone(),
            display_name: row.display_name.clone(),
            is_admin: row.is_admin,
            suspended: row.suspended,
            spend_limit_micros: row.spend_limit_micros,
            created_at: row.created_at,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UserResponse {
    pub user: User,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UserList {
    pub items: Vec<User>,
    pub has_more: bool,
    /// Pass as `after` for the next page.
    pub next: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUserRequest {
    #[schema(min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9_.-]{1,64}$")]
    pub username: String,
    /// Default: the username.
    #[schema(max_length = 200, pattern = r"^[^\u0000]*$")]
    pub display_name: Option<String>,
    #[serde(default)]
    pub is_admin: bool,
}

/// Absent or `null` fields are unchanged.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchUserRequest {
    #[schema(max_length = 200, pattern = r"^[^\u0000]*$")]
    pub display_name: Option<String>,
    pub is_admin: Option<bool>,
    pub suspended: Option<bool>,
}

/// A token as listed: never its secret.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Token {
    pub id: Uuid,
    pub user_id: Uuid,
    pub name: String,
    /// The token's public part (`chatd_<prefix>_…`), to tell tokens apart.
    pub prefix: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Updated at most once a minute.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_used_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<OffsetDateTime>,
}

impl From<&TokenRow> for Token {
    fn from(row: &TokenRow) -> Token {
        Token {
            id: row.id,
            user_id: row.user_id,
            name: row.name.clone(),
            prefix: row.prefix.clone(),
            created_at: row.created_at,
            last_used_at: row.last_used_at,
            expires_at: row.expires_at,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenList {
    pub items: Vec<Token>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreatedToken {
    pub token: Token,
    /// The bearer token. Shown only here: store it now.
    pub secret: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenRequest {
    #[schema(max_length = 200, pattern = r"^[^\u0000]*$")]
    pub name: String,
    /// RFC 3339, in the future; default: never expires.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<OffsetDateTime>,
}

/// Publishes that `user_id`'s access changed (after the commit). Logged on failure: the cache
/// TTL still bounds how long the old access lasts.
pub(crate) async fn access_changed(client: &deadpool_postgres::Client, user_id: Uuid) {
    let notice = ConfigNotice {
        kind: ConfigKind::Auth,
        id: user_id,
    };
    if let Err(error) = publish_config_change(client, notice).await {
        tracing::warn!(%user_id, error = %error, "publish the access change");
    }
}

#[utoipa::path(get, path = "/users", operation_id = "listUsers", tag = "users",
    params(
        ("after" = Option<String>, Query, max_length = 64, pattern = r"^[A-Za-z0-9_.-]{1,64}$", description = "`next` of the previous page"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 100, description = "Default 50"),
    ),
    responses((status = 200, description = "Users by username", body = UserList)))]
pub async fn list(
    State(state): State<AppState>,
    _admin: AdminUser,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let mut after = None;
    let mut limit = None;
    for (key, value) in query_pairs(raw.as_deref())? {
        match key.as_str() {
            "after" => {
                check_username(&value, "after")?;
                after = Some(value);
            }
            "limit" => limit = Some(value),
            other => return Err(ApiError::unknown_query_parameter(other)),
        }
    }
    let limit = parse_limit(limit.as_deref(), 50, 100)?;
    let client = state.pool.get().await?;
    let mut rows = store::list_users(&*client, after.as_deref(), limit + 1).await?;
    let has_more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next = rows
        .last()
        .filter(|_| has_more)
        .map(|row| row.username.clone());
    Ok(json_response(
        StatusCode::OK,
        UserList {
            items: rows.iter().map(User::from).collect(),
            has_more,
            next,
        },
    ))
}

fn check_username(username: &str, field: &str) -> ApiResult<()> {
    let valid = !username.is_empty()
        && username.len() <= 64
        && username
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
    if valid {
        Ok(())
    } else {
        Err(ApiError::field(
            field,
            format!("{field}: 1 to 64 characters of [A-Za-z0-9_.-]"),
        ))
    }
}

#[utoipa::path(post, path = "/users", operation_id = "createUser", tag = "users",
    request_body = CreateUserRequest,
    responses((status = 201, description = "Created (409 when the username is taken)", body = UserResponse)))]
pub async fn create(
    State(state): State<AppState>,
    admin: AdminUser,
    StrictJson(request): StrictJson<CreateUserRequest>,
) -> ApiResult<Response> {
    check_username(&request.username, "username")?;
    let display_name = request.display_name.unwrap_or(request.username.clone());
    plain_field(&display_name, "display_name", 200)?;
    let client = state.pool.get().await?;
    let row =
        store::create_user(&*client, &request.username, &display_name, request.is_admin).await?;
    tracing::info!(admin_id = %admin.0.id, user_id = %row.id, "user created");
    Ok(json_response(
        StatusCode::CREATED,
        UserResponse {
            user: User::from(&row),
        },
    ))
}

#[utoipa::path(get, path = "/users/me", operation_id = "getMe", tag = "users",
    responses((status = 200, description = "The caller", body = UserResponse)))]
pub async fn me(State(state): State<AppState>, user: CurrentUser) -> ApiResult<Response> {
    let client = state.pool.get().await?;
    let row = store::get_user(&*client, user.id).await?;
    Ok(json_response(
        StatusCode::OK,
        UserResponse {
            user: User::from(&row),
        },
    ))
}

#[utoipa::path(get, path = "/users/{user_id}", operation_id = "getUser", tag = "users",
    params(("user_id" = Uuid, Path, description = "A user")),
    responses((status = 200, description = "The user", body = UserResponse)))]
pub async fn get(
    State(state): State<AppState>,
    _admin: AdminUser,
    Path(user_id): Path<String>,
) -> ApiResult<Response> {
    let user_id = parse_uuid(&user_id, "user_id")?;
    let client = state.pool.get().await?;
    let row = store::get_user(&*client, user_id).await?;
    Ok(json_response(
        StatusCode::OK,
        UserResponse {
            user: User::from(&row),
        },
    ))
}

#[utoipa::path(patch, path = "/users/{user_id}", operation_id = "patchUser", tag = "users",
    params(("user_id" = Uuid, Path, description = "A user")), request_body = PatchUserRequest,
    responses((status = 200, description = "The user after the change. Suspending a user or changing their admin rights holds on every replica within a second (their open streams end); 409 when it would leave no active admin.", body = UserResponse)))]
pub async fn patch(
    State(state): State<AppState>,
    admin: AdminUser,
    Path(user_id): Path<String>,
    StrictJson(request): StrictJson<PatchUserRequest>,
) -> ApiResult<Response> {
    let user_id = parse_uuid(&user_id, "user_id")?;
    if let Some(display_name) = &request.display_name {
        plain_field(display_name, "display_name", 200)?;
    }
    let mut client = state.pool.get().await?;
    let (row, access) = store::patch_user(
        &mut client,
        user_id,
        UserPatch {
            display_name: request.display_name,
            is_admin: request.is_admin,
            suspended: request.suspended,
        },
    )
    .await?;
    if access {
        tracing::info!(admin_id = %admin.0.id, %user_id, is_admin = row.is_admin,
            suspended = row.suspended, "user access changed");
        access_changed(&client, user_id).await;
    }
    Ok(json_response(
        StatusCode::OK,
        UserResponse {
            user: User::from(&row),
        },
    ))
}

async fn tokens_of(state: &AppState, user_id: Uuid) -> ApiResult<Response> {
    let client = state.pool.get().await?;
    store::get_user(&*client, user_id).await?;
    let rows = store::list_tokens(&*client, user_id).await?;
    Ok(json_response(
        StatusCode::OK,
        TokenList {
            items: rows.iter().map(Token::from).collect(),
        },
    ))
}

async fn mint(state: &AppState, user_id: Uuid, request: CreateTokenRequest) -> ApiResult<Response> {
    plain_field(&request.name, "name", 200)?;
    if request
        .expires_at
        .is_some_and(|at| at <= OffsetDateTime::now_utc())
    {
        return Err(ApiError::field(
            "expires_at",
            "expires_at: must be in the future",
        ));
    }
    let client = state.pool.get().await?;
    let (row, secret) =
        store::create_token(&*client, user_id, &request.name, request.expires_at).await?;
    Ok(json_response(
        StatusCode::CREATED,
        CreatedToken {
            token: Token::from(&row),
            secret,
        },
    ))
}

async fn revoke(state: &AppState, user_id: Uuid, token_id: &str) -> ApiResult<Response> {
    let token_id = parse_uuid(token_id, "token_id")?;
    let client = state.pool.get().await?;
    store::delete_token(&*client, user_id, token_id).await?;
    access_changed(&client, user_id).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[utoipa::path(get, path = "/users/me/tokens", operation_id = "listMyTokens", tag = "users",
    responses((status = 200, description = "The caller's tokens (never their secrets)", body = TokenList)))]
pub async fn my_tokens(State(state): State<AppState>, user: CurrentUser) -> ApiResult<Response> {
    tokens_of(&state, user.id).await
}

#[utoipa::path(post, path = "/users/me/tokens", operation_id = "createMyToken", tag = "users",
    request_body = CreateTokenRequest,
    responses((status = 201, description = "The new token with its secret, shown only here", body = CreatedToken)))]
pub async fn create_my_token(
    State(state): State<AppState>,
    user: CurrentUser,
    StrictJson(request): StrictJson<CreateTokenRequest>,
) -> ApiResult<Response> {
    mint(&state, user.id, request).await
}

#[utoipa::path(delete, path = "/users/me/tokens/{token_id}", operation_id = "deleteMyToken", tag = "users",
    params(("token_id" = Uuid, Path, description = "One of the caller's tokens")),
    responses((status = 204, description = "Revoked on every replica within a second; its open streams end")))]
pub async fn delete_my_token(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(token_id): Path<String>,
) -> ApiResult<Response> {
    revoke(&state, user.id, &token_id).await
}

#[utoipa::path(get, path = "/users/{user_id}/tokens", operation_id = "listUserTokens", tag = "users",
    params(("user_id" = Uuid, Path, description = "A user")),
    responses((status = 200, description = "The user's tokens (never their secrets)", body = TokenList)))]
pub async fn user_tokens(
    State(state): State<AppState>,
    _admin: AdminUser,
    Path(user_id): Path<String>,
) -> ApiResult<Response> {
    let user_id = parse_uuid(&user_id, "user_id")?;
    tokens_of(&state, user_id).await
}

#[utoipa::path(post, path = "/users/{user_id}/tokens", operation_id = "createUserToken", tag = "users",
    params(("user_id" = Uuid, Path, description = "A user")),
    request_body = CreateTokenRequest,
    responses((status = 201, description = "The new token with its secret, shown only here", body = CreatedToken)))]
pub async fn create_user_token(
    State(state): State<AppState>,
    admin: AdminUser,
    Path(user_id): Path<String>,
    StrictJson(request): StrictJson<CreateTokenRequest>,
) -> ApiResult<Response> {
    let user_id = parse_uuid(&user_id, "user_id")?;
    tracing::info!(admin_id = %admin.0.id, %user_id, "token created for a user");
    mint(&state, user_id, request).await
}

#[utoipa::path(delete, path = "/users/{user_id}/tokens/{token_id}", operation_id = "deleteUserToken", tag = "users",
    params(("user_id" = Uuid, Path, description = "A user"), ("token_id" = Uuid, Path, description = "One of the user's tokens")),
    responses((status = 204, description = "Revoked on every replica within a second; its open streams end")))]
pub async fn delete_user_token(
    State(state): State<AppState>,
    admin: AdminUser,
    Path((user_id, token_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let user_id = parse_uuid(&user_id, "user_id")?;
    tracing::info!(admin_id = %admin.0.id, %user_id, %token_id, "token revoked");
    revoke(&state, user_id, &token_id).await
}
