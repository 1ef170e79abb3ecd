//! `chatd chaos --measure`: the recovery benchmarks on the standard cluster, with every
//! default (30 s leases).
//!
//! - B6 crash recovery: `--chats` chats stream long answers; the worker holding the most is
//!   SIGKILLed; for each of its chats, the time from the kill to the claim by the other worker
//!   (polled from the database every 5 ms). Afterwards every chat must hold exactly one answer.
//! - B7 interrupt latency: `--samples` times, a turn streams, `POST …/interrupt` is sent, and
//!   the time until the client's stream shows the turn's end (`status: waiting`) is taken.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use serde_json::json;
use uuid::Uuid;

use chatd_client::ApiClient;

use super::cluster::ChaosCluster;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn summary(name: &str, mut values: Vec<f64>) {
    values.sort_by(f64::total_cmp);
    println!(
        "{name}: n={} p50={:.0} ms p90={:.0} ms p99={:.0} ms max={:.0} ms",
        values.len(),
        percentile(&values, 50.0),
        percentile(&values, 90.0),
        percentile(&values, 99.0),
        values.last().copied().unwrap_or(f64::NAN)
    );
}

pub async fn run(cluster: &mut ChaosCluster, chats: usize, samples: usize) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let api = ApiClient::new(&cluster.api_urls[0], &cluster.token, http.clone());
    let other = ApiClient::new(&cluster.api_urls[1], &cluster.token, http);
    let sql = chatd_shared::db::pool::connect_url(&cluster.database_url, "chaos-measure").await?;

    // B6.
    let mut chat_ids = Vec::new();
    for index in 0..chats {
        let message = format!(
            "recovery {index}\n@mock {}",
            json!({"tokens": 300, "tokens_per_second": 10})
        );
        let (status, body) = api.post("/chats", &json!({"message": message})).await?;
        anyhow::ensure!(status == 201, "create chat: {status} {body}");
        let id: Uuid = body["chat"]["id"].as_str().unwrap_or_default().parse()?;
        chat_ids.push(id);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let owners: Vec<(Uuid, Uuid, i32)> = loop {
        let rows = sql
            .query(
                "SELECT id, worker_id, attempt FROM chats WHERE id = ANY($1) AND status = 'running'",
                &[&chat_ids],
            )
            .await?;
        if rows.len() == chats {
            break rows
                .iter()
                .map(|row| (row.get(0), row.get(1), row.get(2)))
                .collect();
        }
        anyhow::ensure!(Instant::now() < deadline, "not every chat started running");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut per_worker: HashMap<Uuid, usize> = HashMap::new();
    for (_, worker, _) in &owners {
        *per_worker.entry(*worker).or_default() += 1;
    }
    let (victim_id, _) = per_worker
        .iter()
        .max_by_key(|(_, count)| **count)
        .map(|(id, count)| (*id, *count))
        .context("no owner")?;
    // Which process is the victim: the worker whose liveness session carries its lock cannot
    // be told from outside, so ask each worker's log for its id.
    let victim = cluster
        .worker_index_of(victim_id)
        .context("find the victim worker's process")?;
    let affected: HashMap<Uuid, i32> = owners
        .iter()
        .filter(|(_, worker, _)| *worker == victim_id)
        .map(|(chat, _, attempt)| (*chat, *attempt))
        .collect();
    println!(
        "B6: {} chats running, {} on the victim worker; SIGKILL at t=0",
        chats,
        affected.len()
    );
    let killed_at = Instant::now();
    cluster.workers[victim].signal(libc::SIGKILL);
    let affected_ids: Vec<Uuid> = affected.keys().copied().collect();
    let mut claimed: HashMap<Uuid, f64> = HashMap::new();
    while claimed.len() < affected.len() {
        anyhow::ensure!(
            killed_at.elapsed() < Duration::from_secs(120),
            "only {} of {} chats were claimed again",
            claimed.len(),
            affected.len()
        );
        let rows = sql
            .query(
                "SELECT id, worker_id, attempt FROM chats WHERE id = ANY($1)",
                &[&affected_ids],
            )
            .await?;
        let now = killed_at.elapsed().as_secs_f64() * 1000.0;
        for row in rows {
            let chat: Uuid = row.get(0);
            let worker: Option<Uuid> = row.get(1);
            let attempt: i32 = row.get(2);
            if worker.is_some_and(|worker| worker != victim_id) && attempt > affected[&chat] {
                claimed.entry(chat).or_insert(now);
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    summary(
        "B6 SIGKILL → claimed by another worker",
        claimed.into_values().collect(),
    );
    cluster.restart_worker(victim)?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let row = sql
            .query_one(
                "SELECT count(*) FILTER (WHERE status = 'waiting'), \
                 (SELECT count(*) FROM chat_messages m WHERE m.chat_id = ANY($1) AND m.role = 'assistant') \
                 FROM chats WHERE id = ANY($1)",
                &[&chat_ids],
            )
            .await?;
        let (waiting, answers): (i64, i64) = (row.get(0), row.get(1));
        if waiting as usize == chats {
            anyhow::ensure!(
                answers as usize == chats,
                "{answers} answers for {chats} chats (I2)"
            );
            println!("B6: all {chats} chats finished with exactly one answer each");
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "chats did not finish");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // B7.
    let mut latencies = Vec::new();
    for index in 0..samples {
        let message = format!(
            "interrupt {index}\n@mock {}",
            json!({"tokens": 400, "tokens_per_second": 50})
        );
        let (status, body) = api.post("/chats", &json!({"message": message})).await?;
        anyhow::ensure!(status == 201, "create chat: {status} {body}");
        let chat_id = body["chat"]["id"].as_str().unwrap_or_default().to_owned();
        let message_id = body["message"]["id"].as_i64().unwrap_or(0);
        let mut events = other
            .stream(&chat_id, Some(&format!("{message_id}-0-0")))
            .await?;
        let mut parts = 0;
        while let Some(event) = events.next().await {
            if event?.event == "message_part" {
                parts += 1;
                if parts == 10 {
                    break;
                }
            }
        }
        let sent_at = Instant::now();
        let (status, body) = api
            .post(&format!("/chats/{chat_id}/interrupt"), &json!({}))
            .await?;
        anyhow::ensure!(status < 300, "interrupt: {status} {body}");
        let mut ended = None;
        while let Some(event) = events.next().await {
            let event = event?;
            if event.event == "status" && event.data["status"] == "waiting" {
                ended = Some(sent_at.elapsed());
                break;
            }
        }
        latencies.push(ended.context("the stream ended early")?.as_secs_f64() * 1000.0);
    }
    summary(
        "B7 POST interrupt → the turn's end on the stream",
        latencies,
    );
    Ok(())
}
