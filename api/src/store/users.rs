//! Users and their API tokens (the admin and self-service routes), and groups with spend limits.

use chatd_shared::db::sql::Sql;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::{ApiError, ApiResult};

/// A `users` row as the API shows it.
pub struct UserRow {
    pub id: Uuid,
    pub username: String,
    pub display_name: String,
    pub is_admin: bool,
    pub suspended: bool,
    pub spend_limit_micros: Option<i64>,
    pub created_at: OffsetDateTime,
}

const USER_COLUMNS: &str = "u.id, u.username, u.display_name, u.is_admin, u.suspended, \
    u.chat_spend_limit_micros, u.created_at";

impl UserRow {
    fn from_row(row: &tokio_postgres::Row) -> UserRow {
        UserRow {
            id: row.get(0),
            username: row.get(1),
            display_name: row.get(2),
            is_admin: row.get(3),
            suspended: row.get(4),
            spend_limit_micros: row.get(5),
            created_at: row.get(6),
        }
    }
}

/// An `api_tokens` row without its hash.
pub struct TokenRow {
    pub id: Uuid,
    pub user_id: Uuid,
    pub name: String,
    pub prefix: String,
    pub created_at: OffsetDateTime,
    pub last_used_at: Option<OffsetDateTime>,
    pub expires_at: Option<OffsetDateTime>,
}

const TOKEN_COLUMNS: &str =
    "t.id, t.user_id, t.name, t.prefix, t.created_at, t.last_used_at, t.expires_at";

impl TokenRow {
    fn from_row(row: &tokio_postgres::Row) -> TokenRow {
        TokenRow {
            id: row.get(0),
            user_id: row.get(1),
            name: row.get(2),
            prefix: row.get(3),
            created_at: row.get(4),
            last_used_at: row.get(5),
            expires_at: row.get(6),
        }
    }
}

pub async fn get_user(client: &impl Sql, user_id: Uuid) -> ApiResult<UserRow> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users u WHERE u.id = $1");
    let row = client
        .row_opt(&sql, &[&user_id])
        .await?
        .ok_or(ApiError::NotFound("user"))?;
    Ok(UserRow::from_row(&row))
}

/// Users by username, after `after`.
pub async fn list_users(
    client: &impl Sql,
    after: Option<&str>,
    limit: i64,
) -> ApiResult<Vec<UserRow>> {
    let sql = format!(
        "SELECT {USER_COLUMNS} FROM users u WHERE ($1::text IS NULL OR u.username > $1) \
         ORDER BY u.username LIMIT $2"
    );
    let rows = client.rows(&sql, &[&after, &limit]).await?;
    Ok(rows.iter().map(UserRow::from_row).collect())
}

pub async fn create_user(
    client: &impl Sql,
    username: &str,
    display_name: &str,
    is_admin: bool,
) -> ApiResult<UserRow> {
    let sql = format!(
        "INSERT INTO users AS u (username, display_name, is_admin) VALUES ($1, $2, $3) \
         ON CONFLICT (username) DO NOTHING RETURNING {USER_COLUMNS}"
    );
    let row = client
        .row_opt(&sql, &[&username, &display_name, &is_admin])
        .await?
        .ok_or_else(|| ApiError::Conflict(format!("the username {username:?} is taken")))?;
    Ok(UserRow::from_row(&row))
}

/// Validated input of `PATCH /users/{id}`.
pub struct UserPatch {
    pub display_name: Option<String>,
    pub is_admin: Option<bool>,
    pub suspended: Option<bool>,
}

/// Applies `patch`; returns the user after it and whether their access changed (admin rights
/// or suspension). Refuses (409) to leave the deployment without an active admin.
pub async fn patch_user(
    client: &mut deadpool_postgres::Client,
    user_id: Uuid,
    patch: UserPatch,
) -> ApiResult<(UserRow, bool)> {
    let transaction = client.transaction().await?;
    // Serialises admin changes, so two demotions cannot each see the other admin.
    transaction
        .exec(
            "SELECT pg_advisory_xact_lock(hashtext('chatd_admins'))",
            &[],
        )
        .await?;
    let sql = format!("SELECT {USER_COLUMNS} FROM users u WHERE u.id = $1 FOR UPDATE");
    let before = transaction
        .row_opt(&sql, &[&user_id])
        .await?
        .map(|row| UserRow::from_row(&row))
        .ok_or(ApiError::NotFound("user"))?;
    let sql = format!(
        "UPDATE users u SET display_name = coalesce($2, u.display_name), \
         is_admin = coalesce($3, u.is_admin), suspended = coalesce($4, u.suspended) \
         WHERE u.id = $1 RETURNING {USER_COLUMNS}"
    );
    let after = UserRow::from_row(
        &transaction
            .row(
                &sql,
                &[
                    &user_id,
                    &patch.display_name,
                    &patch.is_admin,
                    &patch.suspended,
                ],
            )
            .await?,
    );
    let was_active_admin = before.is_admin && !before.suspended;
    let is_active_admin = after.is_admin && !after.suspended;
    if was_active_admin && !is_active_admin {
        let others = transaction
            .row(
                "SELECT count(*) FROM users WHERE is_admin AND NOT suspended AND id <> $1",
                &[&user_id],
            )
            .await?
            .get::<_, i64>(0);
        if others == 0 {
            return Err(ApiError::Conflict(
                "this is the last active admin: make another user an admin first".into(),
            ));
        }
    }
    transaction.commit().await?;
    let access_changed = before.is_admin != after.is_admin || before.suspended != after.suspended;
    Ok((after, access_changed))
}

pub async fn list_tokens(client: &impl Sql, user_id: Uuid) -> ApiResult<Vec<TokenRow>> {
    let sql = format!(
        "SELECT {TOKEN_COLUMNS} FROM api_tokens t WHERE t.user_id = $1 \
         ORDER BY t.created_at, t.id"
    );
    let rows = client.rows(&sql, &[&user_id]).await?;
    Ok(rows.iter().map(TokenRow::from_row).collect())
}

/// Mints a token for `user_id`; returns its row and the secret (shown once, never stored).
pub async fn create_token(
    client: &impl Sql,
    user_id: Uuid,
    name: &str,
    expires_at: Option<OffsetDateTime>,
) -> ApiResult<(TokenRow, String)> {
    let minted = chatd_shared::auth::mint_token();
    let sql = format!(
        "INSERT INTO api_tokens AS t (user_id, name, prefix, secret_hash, expires_at) \
         SELECT u.id, $2, $3, $4, $5 FROM users u WHERE u.id = $1 RETURNING {TOKEN_COLUMNS}"
    );
    let row = client
        .row_opt(
            &sql,
            &[
                &user_id,
                &name,
                &minted.prefix,
                &minted.secret_hash,
                &expires_at,
            ],
        )
        .await?
        .ok_or(ApiError::NotFound("user"))?;
    Ok((TokenRow::from_row(&row), minted.token))
}

/// Deletes one of `user_id`'s tokens (404 when it is not theirs).
pub async fn delete_token(client: &impl Sql, user_id: Uuid, token_id: Uuid) -> ApiResult<()> {
    let deleted = client
        .exec(
            "DELETE FROM api_tokens WHERE id = $1 AND user_id = $2",
            &[&token_id, &user_id],
        )
        .await?;
    if deleted == 0 {
        return Err(ApiError::NotFound("token"));
    }
    Ok(())
}

/// Sets (or clears) the user's own spend limit.
pub async fn set_spend_limit(
    client: &impl Sql,
    user_id: Uuid,
    limit_micros: Option<i64>,
) -> ApiResult<UserRow> {
    let sql = format!(
        "UPDATE users u SET chat_spend_limit_micros = $2 WHERE u.id = $1 RETURNING {USER_COLUMNS}"
    );
    let row = client
        .row_opt(&sql, &[&user_id, &limit_micros])
        .await?
        .ok_or(ApiError::NotFound("user"))?;
    Ok(UserRow::from_row(&row))
}

/// A `groups` row with its member count.
pub struct GroupRow {
    pub id: Uuid,
    pub name: String,
    pub spend_limit_micros: Option<i64>,
    pub members: i64,
    pub created_at: OffsetDateTime,
}

const GROUP_COLUMNS: &str = "g.id, g.name, g.spend_limit_micros, \
    (SELECT count(*) FROM group_members gm WHERE gm.group_id = g.id), g.created_at";

impl GroupRow {
    fn from_row(row: &tokio_postgres::Row) -> GroupRow {
        GroupRow {
            id: row.get(0),
            name: row.get(1),
            spend_limit_micros: row.get(2),
            members: row.get(3),
            created_at: row.get(4),
        }
    }
}

pub async fn list_groups(client: &impl Sql) -> ApiResult<Vec<GroupRow>> {
    let sql = format!("SELECT {GROUP_COLUMNS} FROM groups g ORDER BY g.name");
    let rows = client.rows(&sql, &[]).await?;
    Ok(rows.iter().map(GroupRow::from_row).collect())
}

pub async fn create_group(
    client: &impl Sql,
    name: &str,
    spend_limit_micros: Option<i64>,
) -> ApiResult<GroupRow> {
    let sql = format!(
        "WITH g AS (INSERT INTO groups (name, spend_limit_micros) VALUES ($1, $2) \
         ON CONFLICT (name) DO NOTHING RETURNING *) SELECT {GROUP_COLUMNS} FROM g"
    );
    let row = client
        .row_opt(&sql, &[&name, &spend_limit_micros])
        .await?
        .ok_or_else(|| ApiError::Conflict(format!("a group named {name:?} exists")))?;
    Ok(GroupRow::from_row(&row))
}

pub async fn get_group(client: &impl Sql, group_id: Uuid) -> ApiResult<GroupRow> {
    let sql = format!("SELECT {GROUP_COLUMNS} FROM groups g WHERE g.id = $1");
    let row = client
        .row_opt(&sql, &[&group_id])
        .await?
        .ok_or(ApiError::NotFound("group"))?;
    Ok(GroupRow::from_row(&row))
}

/// Replaces the group's name and limit.
pub async fn put_group(
    client: &impl Sql,
    group_id: Uuid,
    name: &str,
    spend_limit_micros: Option<i64>,
) -> ApiResult<GroupRow> {
    let taken = client
        .row_opt(
            "SELECT 1 FROM groups WHERE name = $1 AND id <> $2",
            &[&name, &group_id],
        )
        .await?;
    if taken.is_some() {
        return Err(ApiError::Conflict(format!("a group named {name:?} exists")));
    }
    let updated = client
        .exec(
            "UPDATE groups SET name = $2, spend_limit_micros = $3 WHERE id = $1",
            &[&group_id, &name, &spend_limit_micros],
        )
        .await?;
    if updated == 0 {
        return Err(ApiError::NotFound("group"));
    }
    get_group(client, group_id).await
}

pub async fn delete_group(client: &impl Sql, group_id: Uuid) -> ApiResult<()> {
    let deleted = client
        .exec("DELETE FROM groups WHERE id = $1", &[&group_id])
        .await?;
    if deleted == 0 {
        return Err(ApiError::NotFound("group"));
    }
    Ok(())
}

pub async fn group_members(client: &impl Sql, group_id: Uuid) -> ApiResult<Vec<UserRow>> {
    get_group(client, group_id).await?;
    let sql = format!(
        "SELECT {USER_COLUMNS} FROM group_members gm JOIN users u ON u.id = gm.user_id \
         WHERE gm.group_id = $1 ORDER BY u.username"
    );
    let rows = client.rows(&sql, &[&group_id]).await?;
    Ok(rows.iter().map(UserRow::from_row).collect())
}

/// Adds `user_id` to the group (idempotent). 404 for the group, 422 for the user.
pub async fn add_member(client: &impl Sql, group_id: Uuid, user_id: Uuid) -> ApiResult<()> {
    get_group(client, group_id).await?;
    let inserted = client
        .row_opt(
            "INSERT INTO group_members (group_id, user_id) SELECT $1, u.id FROM users u \
             WHERE u.id = $2 ON CONFLICT DO NOTHING RETURNING 1",
            &[&group_id, &user_id],
        )
        .await?;
    if inserted.is_none() {
        let exists = client
            .row_opt("SELECT 1 FROM users WHERE id = $1", &[&user_id])
            .await?;
        if exists.is_none() {
            return Err(ApiError::MissingReference {
                field: "user_id".into(),
                message: "user_id: no such user".into(),
            });
        }
    }
    Ok(())
}

pub async fn remove_member(client: &impl Sql, group_id: Uuid, user_id: Uuid) -> ApiResult<()> {
    let deleted = client
        .exec(
            "DELETE FROM group_members WHERE group_id = $1 AND user_id = $2",
            &[&group_id, &user_id],
        )
        .await?;
    if deleted == 0 {
        return Err(ApiError::NotFound("group member"));
    }
    Ok(())
}
