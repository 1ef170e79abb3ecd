//! Extra providers and model configs on a test cluster's mock LLM, one per protocol.

use serde_json::json;

use super::cluster::Cluster;

/// How a test model is configured.
#[derive(Debug, Clone, Copy)]
pub struct ModelOptions {
    pub context_limit: i32,
    pub compression_threshold: i32,
    /// Micro-dollars per million tokens.
    pub input_price_micros: Option<i64>,
    pub output_price_micros: Option<i64>,
    pub cache_read_price_micros: Option<i64>,
}

impl Default for ModelOptions {
    fn default() -> ModelOptions {
        ModelOptions {
            context_limit: 128_000,
            compression_threshold: 70,
            input_price_micros: None,
            output_price_micros: None,
            cache_read_price_micros: None,
        }
    }
}

/// The three protocols the mock speaks, as provider kinds.
pub const PROTOCOLS: &[&str] = &["openai-compatible", "openai-responses", "anthropic"];

/// Adds a provider of `kind` pointing at the cluster's mock and a model config on it; returns
/// the model config id.
pub async fn add_model(cluster: &Cluster, kind: &str, options: ModelOptions) -> String {
    let client = cluster.sql().await;
    let provider = client
        .query_one(
            "INSERT INTO providers (kind, display_name, base_url) VALUES ($1, $1, $2) RETURNING id",
            // Each kind's base URL as its vendor's SDK takes it: OpenAI's with `/v1`,
            // Anthropic's without.
            &[
                &kind,
                &if kind == "anthropic" {
                    cluster.mock_url.clone()
                } else {
                    format!("{}/v1", cluster.mock_url)
                },
            ],
        )
        .await
        .expect("insert provider");
    let provider_id: uuid::Uuid = provider.get(0);
    let model = client
        .query_one(
            "INSERT INTO model_configs (provider_id, model, context_limit, compression_threshold, \
             input_price_micros, output_price_micros, cache_read_price_micros) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
            &[
                &provider_id,
                &format!("mock-{kind}"),
                &options.context_limit,
                &options.compression_threshold,
                &options.input_price_micros,
                &options.output_price_micros,
                &options.cache_read_price_micros,
            ],
        )
        .await
        .expect("insert model config");
    model.get::<_, uuid::Uuid>(0).to_string()
}

/// Creates a chat on `model` with optional dynamic tools; returns (chat id, message id).
pub async fn create_chat_on(
    api: &chatd_client::ApiClient,
    model: &str,
    message: &str,
    dynamic_tools: serde_json::Value,
) -> (String, i64) {
    let (status, body) = api
        .post(
            "/chats",
            &json!({"message": message, "model_config_id": model, "dynamic_tools": dynamic_tools}),
        )
        .await
        .expect("create chat");
    assert_eq!(status, 201, "create chat: {body}");
    (
        body["chat"]["id"].as_str().expect("chat id").to_owned(),
        body["message"]["id"].as_i64().expect("message id"),
    )
}
