//! `chatd chaos`: a soak under faults. Starts the standard cluster as real processes on a
//! PostgreSQL of its own, runs a mixed load for `--minutes` while injecting faults at random
//! (each kind at least once a minute), then checks the invariants and prints faults injected,
//! turns run and violations found — which must be 0. A tool to run, not a CI test.
//!
//! `--binary` runs the API replicas and workers from another build, e.g. one with a fixed
//! defect put back, to see that the check finds it.

mod check;
mod cluster;
mod faults;
mod load;
mod measure;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::SeedableRng;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use chatd_client::ApiClient;

#[derive(clap::Args, Debug)]
pub struct ChaosArgs {
    /// How long the load and the faults run, in minutes (fractions allowed).
    #[arg(long, env = "CHATD_CHAOS_MINUTES", default_value_t = 10.0)]
    pub minutes: f64,
    /// Concurrent clients, each running chats of a few turns.
    #[arg(long, env = "CHATD_CHAOS_CLIENTS", default_value_t = 8)]
    pub clients: usize,
    /// Where PostgreSQL's data and the processes' logs go.
    #[arg(long, env = "CHATD_CHAOS_DATA_DIR", default_value = ".chatd-chaos")]
    pub data_dir: PathBuf,
    /// The `chatd` build that runs the API replicas and workers [default: this one].
    #[arg(long, env = "CHATD_CHAOS_BINARY")]
    pub binary: Option<PathBuf>,
    /// Seed of the random choices (load and faults) [default: random]; printed, so a run can
    /// be repeated.
    #[arg(long, env = "CHATD_CHAOS_SEED")]
    pub seed: Option<u64>,
    /// Instead of the soak, measure crash recovery (B6: SIGKILL a worker holding
    /// `--measure-chats` streaming chats) and interrupt latency (B7, `--measure-samples` times).
    #[arg(long, env = "CHATD_CHAOS_MEASURE")]
    pub measure: bool,
    #[arg(long, env = "CHATD_CHAOS_MEASURE_CHATS", default_value_t = 100)]
    pub measure_chats: usize,
    #[arg(long, env = "CHATD_CHAOS_MEASURE_SAMPLES", default_value_t = 50)]
    pub measure_samples: usize,
}

pub async fn run(args: ChaosArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.minutes.is_finite() && args.minutes > 0.0,
        "--minutes: expected a positive number"
    );
    anyhow::ensure!(args.clients > 0, "--clients: expected at least 1");
    let binary = match &args.binary {
        Some(binary) => binary
            .canonicalize()
            .with_context(|| format!("--binary {}", binary.display()))?,
        None => std::env::current_exe().context("locate this executable")?,
    };
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("create {}", args.data_dir.display()))?;
    let data_dir = args.data_dir.canonicalize()?;
    let seed = args.seed.unwrap_or_else(rand::random);
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    eprintln!(
        "chaos: run {run}, seed {seed}, {} min, {} clients, cluster from {}",
        args.minutes,
        args.clients,
        binary.display()
    );
    let mut cluster = cluster::ChaosCluster::start(&data_dir, &binary, &run).await?;
    eprintln!(
        "chaos: cluster up (APIs {}, logs in {})",
        cluster.api_urls.join(", "),
        cluster.log_dir().display()
    );
    if args.measure {
        let result = measure::run(&mut cluster, args.measure_chats, args.measure_samples).await;
        cluster.stop().await;
        return result;
    }
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .build()?;
    let stream_http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .build()?;
    let apis: Vec<ApiClient> = cluster
        .api_urls
        .iter()
        .map(|url| ApiClient::new(url, &cluster.token, http.clone()))
        .collect();
    let stream_apis: Vec<ApiClient> = cluster
        .api_urls
        .iter()
        .map(|url| ApiClient::new(url, &cluster.token, stream_http.clone()))
        .collect();
    let database_url = cluster.database_url.clone();
    let cluster = Arc::new(Mutex::new(cluster));

    let started = Instant::now();
    let stop_faults = CancellationToken::new();
    let stop_load = CancellationToken::new();
    let faults = tokio::spawn(faults::inject(
        cluster.clone(),
        rand::rngs::StdRng::seed_from_u64(seed),
        stop_faults.clone(),
    ));
    let load = tokio::spawn(load::run(
        apis,
        stream_apis,
        args.clients,
        seed,
        stop_load.clone(),
    ));
    tokio::time::sleep(Duration::from_secs_f64(args.minutes * 60.0)).await;
    stop_faults.cancel();
    let injected = faults.await.context("the fault injector")?;
    eprintln!("chaos: faults stopped; letting the clients finish their chats");
    stop_load.cancel();
    let records = load.await.context("the load")?;
    let elapsed = started.elapsed();
    eprintln!("chaos: checking invariants");
    let verdict = check::check(&database_url, &records, Duration::from_secs(120)).await?;

    let turns: u64 = records.iter().map(|record| record.turns).sum();
    let sent: usize = records.iter().map(|record| record.sent.len()).sum();
    let holes: u64 = records.iter().map(|record| record.holes).sum();
    let reconnects: u64 = records.iter().map(|record| record.reconnects).sum();
    let request_errors: u64 = records.iter().map(|record| record.request_errors).sum();
    println!(
        "chatd chaos: run {run}, seed {seed}, {:.1} min",
        elapsed.as_secs_f64() / 60.0
    );
    println!("faults injected:");
    for (fault, count) in &injected {
        println!("  {:<22} {count}", fault.name());
    }
    println!(
        "load: {sent} messages sent, {turns} turns completed, {} answers stored in {} chats",
        verdict.answers, verdict.chats
    );
    println!(
        "clients: {reconnects} stream reconnects, {holes} announced holes, {request_errors} failed requests retried"
    );
    println!("violations: {}", verdict.total());
    for (invariant, count) in &verdict.violations {
        println!("  {invariant:<40} {count}");
    }
    for example in &verdict.examples {
        println!("  e.g. {example}");
    }
    let cluster = Arc::try_unwrap(cluster)
        .map_err(|_| anyhow::anyhow!("the cluster is still in use"))?
        .into_inner();
    for (chat_id, transcript) in records.iter().flat_map(|record| &record.transcripts) {
        let path = cluster.log_dir().join(format!("stream-{chat_id}.txt"));
        if std::fs::write(&path, transcript).is_ok() {
            println!("  stream of a chat with a violation: {}", path.display());
        }
    }
    cluster.stop().await;
    anyhow::ensure!(
        verdict.total() == 0,
        "{} invariant violations",
        verdict.total()
    );
    Ok(())
}
