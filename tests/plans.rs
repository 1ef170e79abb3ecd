//! Plans that stay right at any table size. Pooled sessions run generic plans, made on a
//! connection's first run of a statement and kept until the statistics change, so a replica
//! that started while every chat was short keeps the plan it made then (ARCHITECTURE.md,
//! "Plans that hold for every chat"). Each test builds that state on a real PostgreSQL
//! (hundreds of three-message chats, analysed) and reads the generic plan, or the buffers an
//! execution touched, of chatd's own statement through a pooled session.

mod common;

use chatd_shared::db::pool::{build_pool, Pooler};
use common::pg::test_database;

/// A database of `chats` short chats (three messages each) of one owner, analysed.
async fn short_chats(client: &tokio_postgres::Client, chats: i32) -> anyhow::Result<()> {
    client
        .batch_execute(&format!(
            "INSERT INTO users (username) VALUES ('plans'); \
             INSERT INTO chats (owner_id, status) \
                 SELECT (SELECT id FROM users WHERE username = 'plans'), 'waiting' \
                 FROM generate_series(1, {chats}); \
             INSERT INTO chat_messages (chat_id, role, content) \
                 SELECT c.id, (ARRAY['user', 'assistant', 'user'])[k], '[]'::jsonb \
                 FROM chats c, generate_series(1, 3) k ORDER BY k, c.id; \
             ANALYZE chats; ANALYZE chat_messages;"
        ))
        .await?;
    Ok(())
}

/// A fresh database of 400 short chats and a session of chatd's own pool on it (the database
/// lives as long as the first element is kept).
async fn pooled_session_on_short_chats(
) -> anyhow::Result<(common::pg::TestDatabase, chatd_shared::db::pool::PgClient)> {
    pooled_session_on(400).await
}

/// A fresh database of `chats` short chats and a session of chatd's own pool on it.
async fn pooled_session_on(
    chats: i32,
) -> anyhow::Result<(common::pg::TestDatabase, chatd_shared::db::pool::PgClient)> {
    let database = test_database().await;
    let pool = build_pool(&database.url, "chatd-test", 1, Pooler::None, &database.url)?;
    let client = pool.get().await?;
    short_chats(&client, chats).await?;
    Ok((database, client))
}

/// The generic plan of `sql` (parameter types `types`, arguments `arguments`) as text.
async fn generic_plan(
    client: &tokio_postgres::Client,
    sql: &str,
    types: &str,
    arguments: &str,
) -> anyhow::Result<String> {
    let mode: String = client
        .query_one("SELECT current_setting('plan_cache_mode')", &[])
        .await?
        .get(0);
    assert_eq!(
        mode, "force_generic_plan",
        "pooled sessions run generic plans"
    );
    client
        .batch_execute(&format!("PREPARE probe ({types}) AS {sql}"))
        .await?;
    let rows = client
        .query(&format!("EXPLAIN EXECUTE probe ({arguments})"), &[])
        .await?;
    client.batch_execute("DEALLOCATE probe").await?;
    Ok(rows
        .iter()
        .map(|row| row.get::<_, String>(0))
        .collect::<Vec<_>>()
        .join("\n"))
}

/// The worker's two claim statements: (name, text, parameter types, arguments of a batch of
/// eight, a cap of four per owner where the statement has one).
fn claim_statements() -> [(&'static str, &'static str, &'static str, String); 2] {
    let worker = "'00000000-0000-0000-0000-000000000001'::uuid";
    [
        (
            "fair-share claim",
            chatd_worker::store::CLAIM_FAIR_SHARE_SQL,
            "uuid, bigint, bigint, float8",
            format!("{worker}, 8, 4, 0.1"),
        ),
        (
            "claim",
            chatd_worker::store::CLAIM_SQL,
            "uuid, bigint, float8",
            format!("{worker}, 8, 0.1"),
        ),
    ]
}

#[tokio::test]
async fn the_claim_reads_a_chats_rows_from_its_anchor_on() -> anyhow::Result<()> {
    let (_database, client) = pooled_session_on_short_chats().await?;

    for (name, sql, types, arguments) in claim_statements() {
        let plan = generic_plan(&client, sql, types, &arguments).await?;
        // The estimate of a chat's rows is the average chat's (three here): planned for it,
        // the tail is a bitmap scan of the chat's rows and a sort, which read all of a long
        // chat's rows (529 per claimed chat of B8's 500-message chats) until the tail was
        // bounded by the chat's prompt anchor. Whatever the scan, its index condition bounds
        // it; the same holds for the statement's move of the anchor.
        let tail_scans: Vec<&str> = plan
            .lines()
            .filter(|line| line.contains("Index Cond: ((chat_id = "))
            .collect();
        assert!(!tail_scans.is_empty(), "the {name} reads a tail:\n{plan}");
        for scan in tail_scans {
            assert!(
                scan.contains("(id >= COALESCE("),
                "the {name} reads a chat's rows from its anchor on only:\n{plan}"
            );
        }
    }
    Ok(())
}

#[tokio::test]
async fn the_resume_log_insert_finds_each_frames_chat_by_its_key() -> anyhow::Result<()> {
    let (_database, client) = pooled_session_on_short_chats().await?;

    let plan = generic_plan(
        &client,
        chatd_worker::flusher::FRAMES_INSERT_SQL,
        "uuid[], int[], bigint[], bigint[], json[], uuid",
        "ARRAY[gen_random_uuid()], ARRAY[1], ARRAY[1::bigint], ARRAY[2::bigint], \
         ARRAY['[]'::json], gen_random_uuid()",
    )
    .await?;
    assert!(
        plan.contains("Index Scan using chats_pkey on chats"),
        "each frame's chat is one primary-key probe:\n{plan}"
    );
    assert!(
        !plan.contains("Seq Scan on chats") && !plan.contains("chats_running_owner"),
        "no flush reads other chats than its frames':\n{plan}"
    );
    Ok(())
}

#[tokio::test]
async fn the_fenced_commit_finds_its_chat_by_its_key() -> anyhow::Result<()> {
    let (_database, client) = pooled_session_on_short_chats().await?;

    for sql in [
        chatd_worker::store::commit::COMMIT_SQL,
        chatd_worker::store::commit::COMMIT_WITH_QUEUE_SQL,
    ] {
        let plan = generic_plan(
            &client,
            sql,
            "uuid, uuid, int, text[], jsonb[], uuid[], int8[], int8[], int8[], int8[], int8[], \
             int8[], int8[], text[], bool, text, jsonb, bool, bool[], float8, uuid, bigint",
            "gen_random_uuid(), gen_random_uuid(), 1, '{}', '{}', '{}', '{}', '{}', '{}', '{}', \
             '{}', '{}', '{}', '{}', true, 'waiting', NULL, false, '{}', 0, gen_random_uuid(), \
             NULL",
        )
        .await?;
        // With no chat leased, the index of the leased chats is the cheapest scan of all: a
        // plan made then, with `worker_id = $2`, read every leased chat on each commit ever
        // after.
        assert!(
            !plan.contains("chats_running_owner") && !plan.contains("chats_worker"),
            "the commit reads no other leased chat:\n{plan}"
        );
        assert!(
            plan.contains("Index Scan using chats_pkey on chats"),
            "the commit locks its chat by its key:\n{plan}"
        );
    }
    Ok(())
}

/// Whether `plan` finds chats through the primary key only (probes, or a bitmap of keys) and
/// reads no other chat.
fn chats_by_key_only(plan: &str) -> bool {
    let by_key = plan.contains("Index Scan using chats_pkey on chats")
        || plan.contains("Bitmap Index Scan on chats_pkey");
    let other_chat_index = plan.lines().any(|line| {
        line.contains("Index Scan") && line.contains(" on chats") && !line.contains("chats_pkey")
    });
    by_key && !other_chat_index && !plan.contains("Seq Scan on chats")
}

#[tokio::test]
async fn the_batched_commit_finds_each_chat_by_its_key() -> anyhow::Result<()> {
    // 2,000 chats: a scan of them all would be the plan for a batch estimated at many.
    let (_database, client) = pooled_session_on(2_000).await?;

    let plan = generic_plan(
        &client,
        chatd_worker::store::commit_batch::commit_batch_sql(),
        "uuid[], uuid[], int4[], bool[], text[], jsonb[], float8[], uuid[], int8[], int8[], \
         text[], jsonb[], uuid[], int8[], int8[], int8[], int8[], int8[], int8[], int8[], \
         text[], bool[]",
        "ARRAY[gen_random_uuid()], ARRAY[gen_random_uuid()], ARRAY[1], ARRAY[true], \
         ARRAY['waiting'], ARRAY[NULL::jsonb], ARRAY[0::float8], ARRAY[gen_random_uuid()], \
         ARRAY[NULL::int8], ARRAY[1::int8], ARRAY['assistant'], ARRAY['[]'::jsonb], \
         ARRAY[NULL::uuid], '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', ARRAY[false]",
    )
    .await?;
    assert!(
        chats_by_key_only(&plan),
        "the batch reads and writes its chats by key only:\n{plan}"
    );
    Ok(())
}

#[tokio::test]
async fn the_batched_send_finds_each_chat_by_its_key() -> anyhow::Result<()> {
    // 2,000 idle chats: a scan of them all would be the plan for a batch estimated at many.
    let (_database, client) = pooled_session_on(2_000).await?;

    let plan = generic_plan(
        &client,
        chatd_api::store::send_batch::send_batch_sql(),
        "uuid[], uuid[], jsonb[]",
        "ARRAY[gen_random_uuid()], ARRAY[gen_random_uuid()], ARRAY['[]'::jsonb]",
    )
    .await?;
    assert!(
        chats_by_key_only(&plan),
        "a send reads no chat it does not send to:\n{plan}"
    );
    Ok(())
}

/// Shared buffers (hit or read) the execution of prepared `probe (arguments)` touched, inner
/// functions included, on its second run (the first also fills the session's catalog caches).
async fn buffers_touched(client: &tokio_postgres::Client, arguments: &str) -> anyhow::Result<i64> {
    let mut touched = 0;
    for _ in 0..2 {
        let row = client
            .query_one(
                &format!("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE probe ({arguments})"),
                &[],
            )
            .await?;
        let explained: serde_json::Value = row.get(0);
        let plan = &explained[0]["Plan"];
        touched = plan["Shared Hit Blocks"].as_i64().unwrap_or(0)
            + plan["Shared Read Blocks"].as_i64().unwrap_or(0);
    }
    Ok(touched)
}

#[tokio::test]
async fn a_page_of_a_long_chats_messages_reads_the_page() -> anyhow::Result<()> {
    let (_database, client) = pooled_session_on_short_chats().await?;

    // The statistics stay those of the short chats (as when the API replica made its plan);
    // then one chat grows to 5,000 messages, interleaved with another's as chats' rows are.
    client
        .batch_execute(
            "ALTER TABLE chat_messages SET (autovacuum_enabled = off); \
             INSERT INTO chat_messages (chat_id, role, content) \
                 SELECT (SELECT id FROM chats ORDER BY id OFFSET (k % 2) LIMIT 1), \
                        'user', '[]'::jsonb \
                 FROM generate_series(1, 10000) k ORDER BY k;",
        )
        .await?;
    let long: uuid::Uuid = client
        .query_one(
            "SELECT chat_id FROM chat_messages GROUP BY chat_id ORDER BY count(*) DESC LIMIT 1",
            &[],
        )
        .await?
        .get(0);
    let newest: Vec<i64> = client
        .query(
            "SELECT id FROM chat_messages WHERE chat_id = $1 ORDER BY id DESC LIMIT 51",
            &[&long],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let oldest: i64 = client
        .query_one(
            "SELECT min(id) FROM chat_messages WHERE chat_id = $1",
            &[&long],
        )
        .await?
        .get(0);

    let sql = chatd_api::store::reads::newest_messages_sql();
    let page = chatd_api::store::reads::newest_messages(&client, long, None, None, 51).await?;
    assert_eq!(
        page.iter().map(|message| message.id).collect::<Vec<_>>(),
        newest,
        "the newest page is the chat's 51 newest messages"
    );

    let plan = generic_plan(
        &client,
        &sql,
        "uuid, bigint, bigint, bigint",
        &format!("'{long}', NULL, NULL, 51"),
    )
    .await?;
    client
        .batch_execute(&format!(
            "PREPARE probe (uuid, bigint, bigint, bigint) AS {sql}"
        ))
        .await?;
    // `GET /chats/{id}/messages` (no cursor) and a stream's snapshot from the chat's start.
    for (name, arguments) in [
        ("the newest page", format!("'{long}', NULL, NULL, 51")),
        (
            "a snapshot from the start",
            format!("'{long}', {oldest}, NULL, 51"),
        ),
    ] {
        let touched = buffers_touched(&client, &arguments).await?;
        // The chat's 5,000 rows fill over a hundred pages; a page of 51 rows is a few index
        // pages and the two or three heap pages they sit on. Planned for the average chat
        // (three rows here), the read was a bitmap scan of all 5,000 and a sort.
        assert!(
            touched < 30,
            "{name} of a 5,000-message chat touched {touched} buffers:\n{plan}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn the_claim_reads_no_chat_it_did_not_pick() -> anyhow::Result<()> {
    // Statistics taken under load (half of 2,000 chats pending) and at rest (50 of 1,100 or
    // of 400), a hundred chats leased in each.
    for (chats, pending) in [(2000, 1000), (1100, 50), (400, 50)] {
        let (_database, client) = pooled_session_on(chats).await?;
        client
            .batch_execute(&format!(
                "UPDATE chats SET status = 'pending' \
                 WHERE id IN (SELECT id FROM chats LIMIT {pending}); \
                 UPDATE chats SET status = 'running', worker_id = gen_random_uuid(), \
                     heartbeat_at = now() \
                 WHERE id IN (SELECT id FROM chats WHERE status = 'waiting' LIMIT 100); \
                 ANALYZE chats;"
            ))
            .await?;

        for (name, sql, types, arguments) in claim_statements() {
            let plan = generic_plan(&client, sql, types, &arguments).await?;
            // A batch's size is a parameter, estimated at a tenth of the pending chats:
            // joined to that many, the update was a hash join over a scan of every chat
            // (under load). Named as an array of ten, it is ten primary-key probes, which
            // the default `random_page_cost` priced above a scan of a table this small.
            assert!(
                !plan.contains("Seq Scan on chats"),
                "the {name} reads no chat it did not pick ({pending} of {chats} pending):\n{plan}"
            );
            assert!(
                plan.contains("Index Scan using chats_pending on chats"),
                "the {name} takes the oldest pending chats in order:\n{plan}"
            );
        }
    }
    Ok(())
}
