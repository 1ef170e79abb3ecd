//! `chatd admin …`: users, tokens, providers and model configs from the command line. Provider
//! and model-config commands write through the same store functions (and checks) as the admin
//! API.

use crate::cli::{AdminCommand, DatabaseArgs};

async fn connect(database: &DatabaseArgs) -> anyhow::Result<tokio_postgres::Client> {
    chatd_shared::db::pool::connect_url(&database.database_url, "chatd-admin").await
}

/// A client for the provider and model-config commands, which write through the same store
/// functions (and checks) as the admin API.
async fn models_client(
    database: &DatabaseArgs,
) -> anyhow::Result<chatd_shared::db::pool::PgClient> {
    chatd_shared::db::pool::one_client(&database.database_url, "chatd-admin").await
}

/// Runs one `chatd admin` command.
pub async fn run(command: AdminCommand) -> anyhow::Result<()> {
    use chatd_shared::db::admin as store;
    use chatd_shared::db::models;
    match command {
        AdminCommand::CreateUser {
            database,
            username,
            admin,
        } => {
            let client = connect(&database).await?;
            println!("{}", store::create_user(&client, &username, admin).await?);
        }
        AdminCommand::CreateToken {
            database,
            username,
            name,
        } => {
            let client = connect(&database).await?;
            println!("{}", store::create_token(&client, &username, &name).await?);
        }
        AdminCommand::CreateProvider {
            database,
            kind,
            base_url,
            api_key,
            encryption_key,
        } => {
            let sealed_api_key = match api_key {
                None => None,
                Some(api_key) => {
                    let key = encryption_key.ok_or_else(|| {
                        anyhow::anyhow!("--api-key needs --encryption-key (or CHATD_ENCRYPTION_KEY) to encrypt it at rest")
                    })?;
                    let api_key = chatd_shared::validate::api_key(&api_key)?;
                    let key = chatd_shared::crypto::parse_key(&key)?;
                    Some(chatd_shared::crypto::seal(&key, api_key)?)
                }
            };
            let client = models_client(&database).await?;
            let row = models::create_provider(
                &client,
                models::NewProvider {
                    display_name: kind.clone(),
                    kind,
                    base_url,
                    sealed_api_key,
                    enabled: true,
                },
            )
            .await?;
            println!("{}", row.id);
        }
        AdminCommand::CreateModel {
            database,
            provider,
            model,
            context_limit,
            default,
        } => {
            let mut fields = models::ModelConfigFields::new(provider, &model)?;
            if let Some(limit) = context_limit {
                fields.context_limit = limit;
            }
            fields.is_default = default;
            let mut client = models_client(&database).await?;
            let row = models::create_model_config(&mut client, fields).await?;
            println!("{}", row.id);
        }
    }
    Ok(())
}
