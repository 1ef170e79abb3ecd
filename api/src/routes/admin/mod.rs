//! Admin routes: `/providers`, `/model-configs` and `/mcp-servers`.
//!
//! Every route needs an admin token (403 `forbidden` otherwise, checked before the body is
//! read), except the reads of `/model-configs`, which ordinary users need to pick a model
//! and which then show only usable configs with public fields. After every committed change
//! a hint goes out on `chatd_config` so processes drop cached configuration.

pub mod mcp;
pub mod models;
pub mod providers;
pub use chatd_shared::validate;
pub mod wire;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use uuid::Uuid;

use chatd_shared::pubsub::{publish_config_change, ConfigKind, ConfigNotice};

use crate::auth::CurrentUser;
use crate::error::ApiError;
use crate::state::AppState;

/// An authenticated administrator: 401 without a valid token, 403 for other users.
///
/// Admin rights are cached with the token (`ApiConfig::token_cache_ttl`), so revoking them
/// takes effect within that time.
#[derive(Debug, Clone, Copy)]
pub struct AdminUser(pub CurrentUser);

impl FromRequestParts<AppState> for AdminUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let user = CurrentUser::from_request_parts(parts, state).await?;
        if !user.is_admin {
            return Err(ApiError::Forbidden);
        }
        Ok(AdminUser(user))
    }
}

/// Logs a committed change (who changed what) and publishes the `chatd_config` hint.
/// A failed publish is logged, not returned: the change is durable and caches expire on
/// their own.
pub(crate) async fn config_changed(
    client: &deadpool_postgres::Client,
    admin: AdminUser,
    kind: ConfigKind,
    id: Uuid,
) {
    tracing::info!(admin_id = %admin.0.id, ?kind, %id, "configuration changed");
    if let Err(error) = publish_config_change(client, ConfigNotice { kind, id }).await {
        tracing::warn!(%id, error = %error, "publish the configuration change hint");
    }
}
