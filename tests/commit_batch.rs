//! The worker's batched commit (`worker/src/store/commit_batch.rs`): one statement commits
//! many turns' steps, returns the rows as stored, and writes nothing for a commit the single
//! statement must decide — a lost lease, a key already applied, a queued message behind a
//! normal end, a chat another transaction holds (not waited for), a second commit for a chat
//! already in the batch. The single statement then decides it as before.

mod common;

use std::time::Duration;

use serde_json::{json, Value};
use uuid::Uuid;

use chatd_shared::domain::{ChatStatus, Role};
use chatd_worker::store::commit_batch::{commit_batch, Batched, BatchedCommit};
use chatd_worker::store::{commit, CommitOutcome, Lease, NewRow, RowUsage, TurnEnd};
use common::cluster::Cluster;
use common::leases::{leased_chat, stored_rows, RowLock};

fn row(role: Role, content: Value) -> NewRow {
    NewRow {
        role,
        content,
        model_config_id: None,
        usage: None,
        runtime_ms: None,
        provider_response_id: None,
        compressed: false,
    }
}

fn answer(text: &str) -> NewRow {
    NewRow {
        usage: Some(RowUsage {
            input_tokens: 12,
            output_tokens: 3,
            reasoning_tokens: 1,
            cache_read_tokens: 4,
            cache_write_tokens: 0,
            cost_micros: Some(7),
        }),
        runtime_ms: Some(15),
        provider_response_id: Some("resp-1".into()),
        ..row(Role::Assistant, json!([{"type": "text", "text": text}]))
    }
}

fn batched(lease: Lease, rows: Vec<NewRow>, end: TurnEnd, key: Uuid) -> BatchedCommit {
    BatchedCommit {
        lease,
        rows,
        end,
        key,
        stream_seq: Some(20),
    }
}

/// The single statement's commit of one answer.
async fn single(
    client: &mut chatd_shared::db::pool::PgClient,
    lease: Lease,
    end: TurnEnd,
    key: Uuid,
) -> CommitOutcome {
    commit(client, lease, &[answer("single")], &[], &end, key, None)
        .await
        .expect("commit")
}

/// (status, version, message count) of a chat.
async fn chat_state(sql: &tokio_postgres::Client, chat_id: Uuid) -> (String, i64, i64) {
    let row = sql
        .query_one(
            "SELECT status, version, (SELECT count(*) FROM chat_messages WHERE chat_id = c.id) \
             FROM chats c WHERE id = $1",
            &[&chat_id],
        )
        .await
        .expect("the chat");
    (row.get(0), row.get(1), row.get(2))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_commits_every_owned_chat_and_leaves_the_rest_to_the_single_statement() {
    let cluster = Cluster::start(1, 0).await;
    let sql = cluster.sql().await;
    let (_, done_id, mut client, done) = leased_chat(&cluster).await;
    let (_, step_id, _, step) = leased_chat(&cluster).await;
    let (_, lost_id, _, mut lost) = leased_chat(&cluster).await;
    lost.attempt += 1; // a lease this worker no longer holds
    let (queued_chat, queued_id, _, queued) = leased_chat(&cluster).await;
    let (status, _) = cluster
        .api(0)
        .post(
            &format!("/chats/{queued_chat}/messages"),
            &json!({"content": "next"}),
        )
        .await
        .expect("send");
    assert_eq!(status, 202, "queued behind the running turn");
    let (_, locked_id, _, locked) = leased_chat(&cluster).await;
    let (_, applied_id, _, applied) = leased_chat(&cluster).await;
    let applied_key = Uuid::new_v4();
    let first = commit(
        &mut client,
        applied,
        &[answer("applied before")],
        &[],
        &TurnEnd::Continue,
        applied_key,
        None,
    )
    .await
    .expect("commit");
    assert!(matches!(first, CommitOutcome::Committed(..)));

    let commits = vec![
        batched(done, vec![answer("the end")], TurnEnd::Done, Uuid::new_v4()),
        batched(
            step,
            vec![
                answer("calling"),
                row(
                    Role::Tool,
                    json!([{"type": "tool_result", "call_id": "c1", "output": "2"}]),
                ),
            ],
            TurnEnd::Continue,
            Uuid::new_v4(),
        ),
        batched(done, vec![answer("twice")], TurnEnd::Done, Uuid::new_v4()),
        batched(lost, vec![answer("lost")], TurnEnd::Done, Uuid::new_v4()),
        batched(
            queued,
            vec![answer("before the queue")],
            TurnEnd::Done,
            Uuid::new_v4(),
        ),
        batched(
            locked,
            vec![answer("locked")],
            TurnEnd::Done,
            Uuid::new_v4(),
        ),
        batched(
            applied,
            vec![answer("applied before")],
            TurnEnd::Continue,
            applied_key,
        ),
    ];
    let untouched = [lost_id, queued_id, locked_id, applied_id];
    let mut before = Vec::new();
    for chat_id in untouched {
        before.push(chat_state(&sql, chat_id).await);
    }
    let versions = [
        chat_state(&sql, done_id).await.1,
        chat_state(&sql, step_id).await.1,
    ];
    let holder = RowLock::take(&cluster, locked_id).await;
    let outcomes = tokio::time::timeout(Duration::from_secs(10), commit_batch(&*client, &commits))
        .await
        .expect("the batch waited for a locked chat");
    holder.release().await;

    assert_eq!(outcomes.len(), commits.len());
    for (index, outcome) in outcomes.iter().enumerate() {
        match (index, outcome) {
            (0 | 1, Batched::Committed(change)) => {
                let commit = &commits[index];
                assert_eq!(change.chat_id, commit.lease.chat_id);
                assert_eq!(change.version, versions[index] + 1, "the version moves");
                let expected = if index == 0 {
                    ChatStatus::Waiting
                } else {
                    ChatStatus::Running
                };
                assert_eq!(change.status, expected);
                let ids: Vec<i64> = change.new_messages.iter().map(|m| m.id).collect();
                assert_eq!(ids.len(), commit.rows.len(), "every row comes back");
                let returned: Vec<Value> = change
                    .new_messages
                    .iter()
                    .map(|m| serde_json::to_value(m).expect("encode"))
                    .collect();
                assert_eq!(
                    returned,
                    stored_rows(&sql, &ids).await,
                    "the rows as stored"
                );
            }
            (2..=6, Batched::Single) => {}
            (index, outcome) => panic!("commit {index}: {outcome:?}"),
        }
    }
    for (chat_id, state) in untouched.iter().zip(&before) {
        assert_eq!(
            chat_state(&sql, *chat_id).await,
            *state,
            "the batch wrote nothing for {chat_id}"
        );
    }
    let (status, _, count) = chat_state(&sql, done_id).await;
    assert_eq!(
        (status.as_str(), count),
        ("waiting", 2),
        "one answer, not two"
    );

    // The single statement decides what the batch left, as before.
    assert!(matches!(
        single(&mut client, lost, TurnEnd::Done, Uuid::new_v4()).await,
        CommitOutcome::LeaseLost
    ));
    assert!(matches!(
        single(&mut client, applied, TurnEnd::Continue, applied_key).await,
        CommitOutcome::AlreadyCommitted(_)
    ));
    match single(&mut client, queued, TurnEnd::Done, Uuid::new_v4()).await {
        CommitOutcome::Committed(change, _) => {
            assert!(change.queue, "the queue head is promoted");
            assert_eq!(change.status, ChatStatus::Pending);
        }
        _ => panic!("the queued chat's end is committed"),
    }
    assert!(matches!(
        single(&mut client, locked, TurnEnd::Done, Uuid::new_v4()).await,
        CommitOutcome::Committed(..)
    ));
}
