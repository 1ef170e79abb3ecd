//! The fault injector: every minute, each kind of fault once, in a random order at random
//! moments — SIGKILL and SIGSTOP of workers and API replicas, every chatd backend terminated,
//! PostgreSQL crash-restarted. At least one worker and one API replica stay up at any time.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use super::cluster::{ChaosCluster, Proc};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    WorkerKill,
    WorkerPause,
    ApiKill,
    ApiPause,
    TerminateBackends,
    PostgresRestart,
}

impl Fault {
    const ALL: [Fault; 6] = [
        Fault::WorkerKill,
        Fault::WorkerPause,
        Fault::ApiKill,
        Fault::ApiPause,
        Fault::TerminateBackends,
        Fault::PostgresRestart,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::WorkerKill => "worker SIGKILL",
            Fault::WorkerPause => "worker SIGSTOP",
            Fault::ApiKill => "api SIGKILL",
            Fault::ApiPause => "api SIGSTOP",
            Fault::TerminateBackends => "pg_terminate_backend",
            Fault::PostgresRestart => "postgres restart",
        }
    }
}

/// Injects faults until `stop`; returns how many of each kind were injected.
pub async fn inject(
    cluster: Arc<Mutex<ChaosCluster>>,
    mut rng: StdRng,
    stop: CancellationToken,
) -> BTreeMap<Fault, u64> {
    let mut injected = BTreeMap::new();
    let mut resumes = tokio::task::JoinSet::new();
    'minutes: loop {
        let mut order = Fault::ALL;
        order.shuffle(&mut rng);
        // Six slots of ten seconds; each fault at a random moment of its slot.
        for fault in order {
            let offset = Duration::from_millis(rng.gen_range(500..9_000));
            tokio::select! {
                _ = stop.cancelled() => break 'minutes,
                _ = tokio::time::sleep(offset) => {}
            }
            let result = apply(&cluster, fault, &mut rng, &mut resumes).await;
            match result {
                Ok(true) => {
                    *injected.entry(fault).or_insert(0) += 1;
                    eprintln!("chaos: injected {}", fault.name());
                }
                Ok(false) => eprintln!("chaos: skipped {} (no healthy target)", fault.name()),
                Err(error) => eprintln!("chaos: {} failed: {error:#}", fault.name()),
            }
            tokio::select! {
                _ = stop.cancelled() => break 'minutes,
                _ = tokio::time::sleep(Duration::from_millis(10_000) - offset) => {}
            }
        }
    }
    // Paused processes are continued before the final check.
    while resumes.join_next().await.is_some() {}
    injected
}

/// Applies one fault; false when no target could take it without leaving the cluster with no
/// healthy process of that kind.
async fn apply(
    cluster: &Arc<Mutex<ChaosCluster>>,
    fault: Fault,
    rng: &mut StdRng,
    resumes: &mut tokio::task::JoinSet<()>,
) -> anyhow::Result<bool> {
    match fault {
        Fault::WorkerKill | Fault::ApiKill => {
            let is_worker = fault == Fault::WorkerKill;
            let mut guard = cluster.lock().await;
            let log_dir = guard.log_dir().to_owned();
            let processes = guard.processes(is_worker);
            let Some(index) = pick_healthy(processes, rng) else {
                return Ok(false);
            };
            processes[index].signal(libc::SIGKILL);
            drop(guard);
            // Down for a moment, then back (a new worker id; an API on the same port).
            tokio::time::sleep(Duration::from_millis(rng.gen_range(500..3_000))).await;
            let mut guard = cluster.lock().await;
            let processes = guard.processes(is_worker);
            processes[index].restart(&log_dir)?;
            Ok(true)
        }
        Fault::WorkerPause | Fault::ApiPause => {
            let is_worker = fault == Fault::WorkerPause;
            let pause = if is_worker {
                // Sometimes past the 30 s lease: the worker comes back fenced out.
                Duration::from_millis(rng.gen_range(3_000..40_000))
            } else {
                Duration::from_millis(rng.gen_range(1_000..8_000))
            };
            let mut guard = cluster.lock().await;
            let processes = guard.processes(is_worker);
            let Some(index) = pick_healthy(processes, rng) else {
                return Ok(false);
            };
            processes[index].signal(libc::SIGSTOP);
            drop(guard);
            let cluster = cluster.clone();
            resumes.spawn(async move {
                tokio::time::sleep(pause).await;
                let mut guard = cluster.lock().await;
                let processes = if is_worker {
                    &mut guard.workers
                } else {
                    &mut guard.apis
                };
                processes[index].signal(libc::SIGCONT);
            });
            Ok(true)
        }
        Fault::TerminateBackends => {
            let database_url = cluster.lock().await.database_url.clone();
            // Not named `chatd…`: the query below must not terminate this session.
            let client =
                chatd_shared::db::pool::connect_url(&database_url, "fault-injector").await?;
            let rows = client
                .query(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE datname = current_database() AND application_name LIKE 'chatd%'",
                    &[],
                )
                .await?;
            eprintln!("chaos: terminated {} backends", rows.len());
            Ok(true)
        }
        Fault::PostgresRestart => {
            cluster.lock().await.restart_postgres().await?;
            Ok(true)
        }
    }
}

/// A random process that is running and not paused, if another healthy one remains.
fn pick_healthy(processes: &[Proc], rng: &mut StdRng) -> Option<usize> {
    let healthy: Vec<usize> = (0..processes.len())
        .filter(|index| !processes[*index].paused)
        .collect();
    if healthy.len() < 2 {
        return None;
    }
    healthy.choose(rng).copied()
}
