//! What every pooled chatd connection sets for its session on a real PostgreSQL: the
//! timeouts that keep a stuck transaction from holding the notify queue, generic plans for
//! prepared statements (planning each execution anew was a measured share of a turn's
//! database CPU; BENCHMARKS.md, "Issue 14, third step") and random pages priced for cached
//! data.

mod common;

use chatd_shared::db::pool::{build_pool, Pooler};
use chatd_shared::db::sql::Sql;
use common::pg::test_database;

#[tokio::test]
async fn pooled_sessions_set_the_timeouts_and_run_generic_plans() -> anyhow::Result<()> {
    let database = test_database().await;
    let pool = build_pool(&database.url, "chatd-test", 2, Pooler::None, &database.url)?;
    let client = pool.get().await?;

    let settings = client
        .query_one(
            "SELECT current_setting('plan_cache_mode'), current_setting('statement_timeout'), \
             current_setting('idle_in_transaction_session_timeout'), \
             current_setting('random_page_cost')",
            &[],
        )
        .await?;
    assert_eq!(settings.get::<_, String>(0), "force_generic_plan");
    assert_eq!(settings.get::<_, String>(1), "1min");
    assert_eq!(settings.get::<_, String>(2), "1min");
    assert_eq!(settings.get::<_, String>(3), "1.1");

    // A statement through the store's path (prepared once, cached) runs its generic plan from
    // its first execution on, where the default would plan the first five anew.
    let sql = "SELECT count(*) FROM chats WHERE owner_id = $1 AND status = 'pending'";
    let owner = uuid::Uuid::new_v4();
    for _ in 0..3 {
        let row = client.row(sql, &[&owner]).await?;
        assert_eq!(row.get::<_, i64>(0), 0);
    }
    let plans = client
        .query_one(
            "SELECT generic_plans, custom_plans FROM pg_prepared_statements \
             WHERE statement = $1",
            &[&sql],
        )
        .await?;
    assert_eq!(plans.get::<_, i64>(0), 3, "generic plans");
    assert_eq!(plans.get::<_, i64>(1), 0, "custom plans");
    Ok(())
}
