//! `chatd dev`: the whole system on one machine for a newcomer — embedded PostgreSQL,
//! migrations, the mock LLM, one API and one worker in-process, a seeded default model and an
//! admin token.

use std::path::Path;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use chatd_shared::pg_embed::{EmbeddedOptions, EmbeddedPostgres};

/// `chatd dev` flags.
#[derive(clap::Args, Debug)]
pub struct DevArgs {
    /// Folder for the embedded PostgreSQL data and the dev encryption key.
    #[arg(long, env = "CHATD_DATA_DIR", default_value = ".chatd-dev")]
    pub data_dir: std::path::PathBuf,
    /// Address of the API.
    #[arg(long, env = "CHATD_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: std::net::SocketAddr,
}

const DATABASE: &str = "chatd";
const MOCK_PROVIDER_NAME: &str = "chatd-dev-mock";

pub async fn run(args: DevArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("create {}", args.data_dir.display()))?;
    let data_dir = args
        .data_dir
        .canonicalize()
        .with_context(|| format!("resolve {}", args.data_dir.display()))?;
    eprintln!(
        "==> starting PostgreSQL in {}",
        data_dir.join("postgres").display()
    );
    let postgres = EmbeddedPostgres::start(EmbeddedOptions::new(data_dir.join("postgres")))
        .await
        .context("start the embedded PostgreSQL")?;
    let result = run_services(&args, &data_dir, &postgres, shutdown).await;
    eprintln!("==> stopping PostgreSQL");
    if let Err(error) = postgres.stop().await {
        eprintln!("warning: stop PostgreSQL: {error:#}");
    }
    result
}

async fn run_services(
    args: &DevArgs,
    data_dir: &Path,
    postgres: &EmbeddedPostgres,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    if let Err(error) = postgres.create_database(DATABASE, None).await {
        let text = format!("{error:#}");
        if !text.contains("already exists") {
            return Err(error.context("create the chatd database"));
        }
    }
    let database_url = postgres.url(DATABASE);
    eprintln!("==> applying migrations");
    chatd_shared::db::migrate::run_url(&database_url).await?;
    let key_text = dev_encryption_key(data_dir)?;
    let key = chatd_shared::crypto::parse_key(&key_text)?;

    let mock_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("bind the mock LLM")?;
    let mock_addr = mock_listener.local_addr()?;
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(chatd_mock_llm::run(mock_listener, shutdown.clone()));

    let token = seed(&database_url, &format!("http://{mock_addr}/v1")).await?;

    let api_listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .with_context(|| format!("listen on {} (pass --addr to choose another)", args.addr))?;
    let api_addr = api_listener.local_addr()?;
    let mut api_config = chatd_api::ApiConfig::new(database_url.clone());
    api_config.encryption_key = Some(chatd_api::config::EncryptionKey(key));
    tasks.spawn(chatd_api::run(api_listener, api_config, shutdown.clone()));
    let mut worker_config = chatd_worker::WorkerConfig::new(database_url.clone());
    worker_config.encryption_key = Some(key);
    tasks.spawn(chatd_worker::run(worker_config, shutdown.clone()));

    let url = format!("http://{api_addr}");
    println!();
    println!("chatd dev is running");
    println!("  URL:      {url}");
    println!("  web UI:   open {url} in a browser and sign in with the token");
    println!("  token:    {token}");
    println!("  database: {database_url}");
    println!("  mock LLM: http://{mock_addr}/v1");
    println!();
    println!("try:");
    println!("  export CHATD_URL={url} CHATD_TOKEN={token}");
    println!("  chatd chat \"hello\"");
    println!();
    println!("Ctrl-C stops everything.");

    let mut first_error = None;
    tokio::select! {
        _ = shutdown.cancelled() => {}
        Some(result) = tasks.join_next() => {
            first_error = flatten(result).err();
            shutdown.cancel();
        }
    }
    while let Some(result) = tasks.join_next().await {
        if let Err(error) = flatten(result) {
            first_error.get_or_insert(error);
        }
    }
    match first_error {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

fn flatten(result: Result<anyhow::Result<()>, tokio::task::JoinError>) -> anyhow::Result<()> {
    result.context("service task panicked")?
}

/// The dev encryption key, generated once and kept in the data folder.
fn dev_encryption_key(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join("encryption.key");
    if let Ok(text) = std::fs::read_to_string(&path) {
        return Ok(text.trim().to_string());
    }
    let key = chatd_shared::crypto::generate_key();
    std::fs::write(&path, &key).with_context(|| format!("write {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
    }
    Ok(key)
}

/// Points the dev provider at this run's mock LLM, makes sure a default model and the admin
/// user exist, and mints a token for this session.
async fn seed(database_url: &str, mock_base_url: &str) -> anyhow::Result<String> {
    use chatd_shared::db::models;
    let mut client = chatd_shared::db::pool::one_client(database_url, "chatd-dev").await?;
    // The mock's port changes every run: re-point the provider of earlier runs.
    let existing = client
        .query_opt(
            "SELECT id FROM providers WHERE display_name = $1 AND NOT deleted",
            &[&MOCK_PROVIDER_NAME],
        )
        .await?;
    let provider_id: uuid::Uuid = match existing {
        Some(row) => {
            let id = row.get(0);
            models::patch_provider(
                &mut client,
                id,
                models::ProviderPatch {
                    base_url: Some(mock_base_url.to_owned()),
                    ..Default::default()
                },
            )
            .await?;
            id
        }
        None => {
            models::create_provider(
                &client,
                models::NewProvider {
                    kind: "openai-compatible".into(),
                    display_name: MOCK_PROVIDER_NAME.into(),
                    base_url: mock_base_url.to_owned(),
                    sealed_api_key: None,
                    enabled: true,
                },
            )
            .await?
            .id
        }
    };
    let has_default = client
        .query_opt(
            "SELECT 1 FROM model_configs WHERE is_default AND NOT deleted",
            &[],
        )
        .await?
        .is_some();
    if !has_default {
        let mut model = models::ModelConfigFields::new(provider_id, "mock")?;
        model.display_name = "Mock model".into();
        model.is_default = true;
        models::create_model_config(&mut client, model).await?;
    }
    chatd_shared::db::admin::ensure_user(&client, "admin", true).await?;
    chatd_shared::db::admin::create_token(&client, "admin", "chatd-dev").await
}
