//! Shared state of one API replica.

use std::sync::Arc;

use chatd_shared::db::pool::PgPool;
use chatd_shared::pubsub::Listener;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::auth::TokenCache;
use crate::config::ApiConfig;
use crate::hub::Hubs;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<ApiConfig>,
    pub pool: PgPool,
    pub listener: Listener,
    pub hubs: Arc<Hubs>,
    pub tokens: Arc<TokenCache>,
    pub metrics: PrometheusHandle,
}
