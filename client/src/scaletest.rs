//! `chatd scaletest`: drives a running cluster through the public API only, like real clients,
//! and reports latencies, throughput, stream integrity and errors (BENCHMARKS.md).
//!
//! Per chat `i`: create it (empty) on replica `i % n`, open `--subscribers` streams on the
//! other replica(s) (`(i + 1) % n`, …) so every token crosses replicas, then for each turn
//! POST a message carrying a `@mock` directive on the first replica and wait until every
//! stream saw the turn's assistant message followed by `status: waiting`. Chats run
//! concurrently (bounded by `--concurrency`); every turn is bounded by `--timeout-s`, so a run
//! always ends. The process fails after printing the report when any integrity counter or
//! error count is non-zero, or a turn did not complete.
//!
//! Module map: `driver` runs one chat, `subscriber` reads one stream, `integrity` checks seq
//! and text per connection, `recorder` collects numbers across tasks, `stats` holds bounded
//! samples and percentiles, `report` renders the table and the JSON.
//!
//! Each open stream is a TCP connection: with many chats in flight, raise the open-files limit
//! (`ulimit -n`) of this process and of the API replicas.

mod driver;
pub mod integrity;
mod recorder;
mod report;
mod stats;
mod subscriber;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use self::driver::{drive_chat, ChatPlan, Warmup};
use self::recorder::Recorder;
use self::report::RunConfig;
use super::ApiClient;

/// How often the progress line is printed.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(2);

#[derive(clap::Args, Debug)]
pub struct ScaletestArgs {
    /// API base URLs (repeat the flag or separate with commas); clients are spread over them:
    /// chats are created and messaged on one replica and streamed from another.
    #[arg(
        long = "api",
        env = "CHATD_SCALETEST_API",
        value_delimiter = ',',
        required = true
    )]
    pub api: Vec<String>,
    /// API token of the user that owns the test chats (with `--users 1`, or without
    /// `--database-url`).
    #[arg(long, env = "CHATD_SCALETEST_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Users the chats are spread over, round robin [default: one per 10 chats], so the run
    /// stays within per-user limits (`--max-streams-per-user`) as real traffic would. More
    /// than one needs `--database-url`: the users `scaletest-<run>-<n>` and their tokens are
    /// created there.
    #[arg(long, env = "CHATD_SCALETEST_USERS", value_parser = clap::value_parser!(u64).range(1..))]
    pub users: Option<u64>,
    /// Database of the cluster under test, to create the `--users` (not needed for one user
    /// with `--token`).
    #[arg(
        long = "database-url",
        env = "CHATD_SCALETEST_DATABASE_URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,
    /// Number of chats.
    #[arg(long, env = "CHATD_SCALETEST_CHATS", default_value_t = 10)]
    pub chats: usize,
    /// Turns (user message → assistant reply) per chat, sent one after another.
    #[arg(long, env = "CHATD_SCALETEST_TURNS", default_value_t = 3)]
    pub turns: usize,
    /// Chats in flight at once [default: --chats].
    #[arg(long, env = "CHATD_SCALETEST_CONCURRENCY", value_parser = clap::value_parser!(u64).range(1..))]
    pub concurrency: Option<u64>,
    /// Reply length in tokens (the mock model's `tokens` directive).
    #[arg(long, env = "CHATD_SCALETEST_TOKENS", default_value_t = 20)]
    pub tokens: u64,
    /// Pace of the mock model's reply; 0 = instant.
    #[arg(long, env = "CHATD_SCALETEST_TOKENS_PER_SECOND", default_value_t = 0.0)]
    pub tokens_per_second: f64,
    /// Streams opened per chat (each on another replica than the chat's own when possible).
    #[arg(long, env = "CHATD_SCALETEST_SUBSCRIBERS", default_value_t = 1,
        value_parser = clap::value_parser!(u64).range(1..))]
    pub subscribers: u64,
    /// Write the JSON report to this file (`-` = stdout; the table then goes to stderr).
    #[arg(long, env = "CHATD_SCALETEST_JSON")]
    pub json: Option<PathBuf>,
    /// Time limit of one turn in seconds (POST → the reply and `status: waiting` on every
    /// stream); also bounds creating the chat and opening its streams.
    #[arg(long = "timeout-s", env = "CHATD_SCALETEST_TIMEOUT_S", default_value_t = 60,
        value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout_s: u64,
    /// Give every chat this many earlier messages before its first turn, written straight
    /// into `--database-url` (user questions, tool calls with their results, answers), to
    /// measure turns on long chats (BENCHMARKS.md B8).
    #[arg(long, env = "CHATD_SCALETEST_HISTORY", default_value_t = 0)]
    pub history: u32,
    /// Turns each chat runs before its `--turns`, left out of the report (their errors
    /// count); the measured turns start once every chat is warm, so `--concurrency` must not
    /// be below `--chats`. With `--history`, a worker first reads a chat's whole history in
    /// the warm-up (BENCHMARKS.md B8).
    #[arg(long, env = "CHATD_SCALETEST_WARMUP_TURNS", default_value_t = 0)]
    pub warmup_turns: usize,
    /// A shell command run once every chat finished its warm-up, before the measured turns
    /// (e.g. resetting `pg_stat_statements`); the run fails if it fails.
    #[arg(long, env = "CHATD_SCALETEST_AFTER_WARMUP", requires = "warmup_turns")]
    pub after_warmup: Option<String>,
}

pub async fn run(args: ScaletestArgs) -> anyhow::Result<()> {
    let config = run_config(&args)?;
    let http = reqwest::Client::builder()
        // Every open stream holds its own connection (streams are never idle); requests reuse
        // a modest idle pool, so the API under test is not charged for thousands of idle
        // keep-alive connections a real client would not hold.
        .pool_max_idle_per_host(256)
        .connect_timeout(Duration::from_secs(10))
        .tcp_nodelay(true)
        .build()
        .context("build the HTTP client")?;
    let tokens = user_tokens(&args, config.chats).await?;
    let prefill = match (args.history, args.database_url.as_deref()) {
        (0, _) => None,
        (_, None) => anyhow::bail!("--history needs --database-url (it writes the history there)"),
        (_, Some(url)) => {
            let client = chatd_shared::db::pool::connect_url(url, "chatd-scaletest-history")
                .await
                .context("connect to --database-url")?;
            Some(Arc::new(client))
        }
    };
    // clients[user][replica]
    let clients: Vec<Vec<ApiClient>> = tokens
        .iter()
        .map(|token| {
            config
                .api
                .iter()
                .map(|url| ApiClient::new(url, token, http.clone()))
                .collect()
        })
        .collect();
    let turns_planned = (config.chats as u64).saturating_mul(config.turns_per_chat as u64);
    let recorder = Arc::new(Recorder::new(turns_planned));
    eprintln!(
        "scaletest: {} chats × {} turns{}, concurrency {}, {} subscriber(s), {} replica(s), {} user(s)",
        config.chats,
        config.turns_per_chat,
        if args.warmup_turns > 0 {
            format!(" after {} warm-up turn(s)", args.warmup_turns)
        } else {
            String::new()
        },
        config.concurrency,
        config.subscribers,
        config.api.len(),
        clients.len()
    );

    let progress_stop = CancellationToken::new();
    let progress = tokio::spawn(print_progress(Arc::clone(&recorder), progress_stop.clone()));
    let warmup = (args.warmup_turns > 0).then(|| {
        Arc::new(Warmup::new(
            args.warmup_turns,
            config.chats,
            args.after_warmup.clone(),
        ))
    });
    let slots = Arc::new(Semaphore::new(config.concurrency));
    let mut chats = JoinSet::new();
    for index in 0..config.chats {
        let slot = Arc::clone(&slots)
            .acquire_owned()
            .await
            .context("wait for a free chat slot")?;
        let mut plan = chat_plan(&config, &clients[index % clients.len()], index);
        plan.history = prefill.clone().map(|client| (client, args.history));
        plan.warmup = warmup.clone();
        let chat_recorder = Arc::clone(&recorder);
        chats.spawn(async move {
            drive_chat(plan, chat_recorder).await;
            drop(slot);
        });
        // Reap finished chats as we go so the set stays as small as the concurrency.
        while let Some(joined) = chats.try_join_next() {
            count_panic(&recorder, joined);
        }
    }
    while let Some(joined) = chats.join_next().await {
        count_panic(&recorder, joined);
    }
    progress_stop.cancel();
    let _ = progress.await;

    let report = recorder.report(config);
    let table = report.render_table();
    match &args.json {
        Some(path) if path.as_os_str() == "-" => {
            eprint!("{table}");
            println!(
                "{}",
                serde_json::to_string_pretty(&report).context("encode the report")?
            );
        }
        Some(path) => {
            print!("{table}");
            let json = serde_json::to_vec_pretty(&report).context("encode the report")?;
            std::fs::write(path, json)
                .with_context(|| format!("write the report to {}", path.display()))?;
            eprintln!("scaletest: report written to {}", path.display());
        }
        None => print!("{table}"),
    }
    let problems = report.problems();
    if !problems.is_empty() {
        anyhow::bail!("scaletest failed: {}", problems.join(", "));
    }
    Ok(())
}

/// One token per user the chats are spread over: `--token` for a single user, else users
/// `scaletest-<run>-<n>` created in `--database-url`.
async fn user_tokens(args: &ScaletestArgs, chats: usize) -> anyhow::Result<Vec<String>> {
    let users = args
        .users
        .map_or(chats.div_ceil(10).max(1), |users| users as usize);
    let Some(database_url) = args.database_url.as_deref().filter(|_| users > 1) else {
        let token = args.token.clone().context(
            "--token is required (or --database-url, to create the users the chats are spread over)",
        )?;
        if users > 1 {
            eprintln!(
                "scaletest: warning: all {chats} chats use one user (--users {users} needs \
                 --database-url); per-user limits may refuse streams"
            );
        }
        return Ok(vec![token]);
    };
    let client = chatd_shared::db::pool::connect_url(database_url, "chatd-scaletest")
        .await
        .context("connect to --database-url")?;
    let run = uuid::Uuid::new_v4().simple().to_string();
    let mut tokens = Vec::with_capacity(users);
    for index in 0..users {
        let username = format!("scaletest-{}-{index}", &run[..8]);
        chatd_shared::db::admin::create_user(&client, &username, false)
            .await
            .with_context(|| format!("create user {username}"))?;
        tokens.push(
            chatd_shared::db::admin::create_token(&client, &username, "scaletest")
                .await
                .with_context(|| format!("create a token for {username}"))?,
        );
        if users >= 100 && (index + 1) % 100 == 0 {
            eprintln!("scaletest: created {}/{users} users", index + 1);
        }
    }
    Ok(tokens)
}

/// Validated parameters.
fn run_config(args: &ScaletestArgs) -> anyhow::Result<RunConfig> {
    let api: Vec<String> = args
        .api
        .iter()
        .map(|url| url.trim().to_string())
        .filter(|url| !url.is_empty())
        .collect();
    if api.is_empty() {
        anyhow::bail!("--api: give at least one API base URL");
    }
    if !args.tokens_per_second.is_finite() || args.tokens_per_second < 0.0 {
        anyhow::bail!("--tokens-per-second: expected a number ≥ 0");
    }
    let concurrency = args
        .concurrency
        .map_or(args.chats, |concurrency| {
            usize::try_from(concurrency).unwrap_or(usize::MAX)
        })
        .clamp(1, Semaphore::MAX_PERMITS);
    if args.warmup_turns > 0 && concurrency < args.chats {
        anyhow::bail!(
            "--warmup-turns: every chat waits for the others' warm-up, so --concurrency ({concurrency}) must be at least --chats ({})",
            args.chats
        );
    }
    Ok(RunConfig {
        api,
        chats: args.chats,
        turns_per_chat: args.turns,
        concurrency,
        tokens: args.tokens,
        tokens_per_second: args.tokens_per_second,
        subscribers: usize::try_from(args.subscribers).unwrap_or(1),
        timeout_s: args.timeout_s,
    })
}

/// Chat `index` is created and messaged on replica `index % n`; its subscribers read from the
/// other replicas in turn (the same one when there is only one).
fn chat_plan(config: &RunConfig, clients: &[ApiClient], index: usize) -> ChatPlan {
    let replicas = clients.len();
    let home = index % replicas;
    let readers = (0..config.subscribers)
        .map(|subscriber| {
            let replica = if replicas == 1 {
                home
            } else {
                (home + 1 + subscriber % (replicas - 1)) % replicas
            };
            clients[replica].clone()
        })
        .collect();
    ChatPlan {
        index,
        sender: clients[home].clone(),
        readers,
        turns: config.turns_per_chat,
        tokens: config.tokens,
        tokens_per_second: config.tokens_per_second,
        turn_timeout: Duration::from_secs(config.timeout_s),
        history: None,
        warmup: None,
    }
}

fn count_panic(recorder: &Recorder, joined: Result<(), tokio::task::JoinError>) {
    if let Err(error) = joined {
        recorder.error("panic", &error.to_string());
    }
}

async fn print_progress(recorder: Arc<Recorder>, stop: CancellationToken) {
    let started = tokio::time::Instant::now();
    let mut ticks = tokio::time::interval_at(started + PROGRESS_INTERVAL, PROGRESS_INTERVAL);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let progress = recorder.progress();
        eprintln!(
            "scaletest: {:>6.1} s  turns {}/{}  errors {}  integrity violations {}",
            started.elapsed().as_secs_f64(),
            progress.turns_done,
            progress.turns_planned,
            progress.errors,
            progress.integrity_violations,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(api: usize, subscribers: usize) -> RunConfig {
        RunConfig {
            api: (0..api)
                .map(|replica| format!("http://replica{replica}"))
                .collect(),
            chats: 4,
            turns_per_chat: 1,
            concurrency: 4,
            tokens: 20,
            tokens_per_second: 0.0,
            subscribers,
            timeout_s: 60,
        }
    }

    fn plan_urls(config: &RunConfig, index: usize) -> (String, Vec<String>) {
        let clients: Vec<ApiClient> = config
            .api
            .iter()
            .map(|url| ApiClient::new(url, "token", reqwest::Client::new()))
            .collect();
        let plan = chat_plan(config, &clients, index);
        let readers = plan
            .readers
            .iter()
            .map(|client| client.base_url.clone())
            .collect();
        (plan.sender.base_url, readers)
    }

    #[test]
    fn streams_read_from_other_replicas() {
        let two = config(2, 1);
        assert_eq!(
            plan_urls(&two, 0),
            ("http://replica0".into(), vec!["http://replica1".into()])
        );
        assert_eq!(
            plan_urls(&two, 1),
            ("http://replica1".into(), vec!["http://replica0".into()])
        );

        let three = config(3, 3);
        let (sender, readers) = plan_urls(&three, 2);
        assert_eq!(sender, "http://replica2");
        assert_eq!(
            readers,
            vec!["http://replica0", "http://replica1", "http://replica0"]
        );

        let one = config(1, 2);
        assert_eq!(
            plan_urls(&one, 3),
            (
                "http://replica0".into(),
                vec!["http://replica0".into(), "http://replica0".into()]
            )
        );
    }

    #[test]
    fn flags_parse_with_defaults_and_comma_lists() {
        use clap::Parser;

        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: ScaletestArgs,
        }
        let cli = Cli::try_parse_from([
            "scaletest",
            "--api",
            "http://a:1,http://b:2",
            "--api",
            "http://c:3",
            "--token",
            "t",
        ]);
        let Ok(Cli { args }) = cli else {
            panic!("flags should parse");
        };
        assert_eq!(args.api, vec!["http://a:1", "http://b:2", "http://c:3"]);
        assert_eq!(
            (args.chats, args.turns, args.tokens, args.subscribers),
            (10, 3, 20, 1)
        );
        assert_eq!(args.timeout_s, 60);
        let config = run_config(&args).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(config.concurrency, 10);
    }
}
