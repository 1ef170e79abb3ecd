//! The web UI every API replica serves at `/`: its HTTP contract (caching, the
//! Content-Security-Policy, the build-scoped asset URLs), then the UI itself in a real browser —
//! Debian's Chromium driven by Playwright (`tests/web_ui/ui.mjs`) against two API replicas:
//! sign in, a streamed answer, queue while busy, interrupt, promote, edit and rerun, a client
//! tool call answered in a form, images attached by file picker and drag-and-drop and seen by
//! the mock, Markdown that cannot run script, the chat list (unread, search, labels, pin),
//! archive, the same chat live on the other replica, a reconnect across a replica restart,
//! usage, an admin creating a model config, an ordinary user without admin, a phone screen.
//! Screenshots of every screen land in `target/ui-screenshots/` (not committed).

mod common;

use std::path::PathBuf;
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use common::cluster::Cluster;
use common::sdks;

/// The pinned Playwright driver (it drives Debian's Chromium; it downloads no browser).
const PLAYWRIGHT: &str = "playwright-core@1.65.1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ui_is_served_with_caching_and_a_strict_policy() {
    let cluster = Cluster::start(1, 0).await;
    let http = reqwest::Client::new();
    let base = &cluster.apis[0].url;

    let page = http.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let headers = page.headers().clone();
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    assert_eq!(headers["cache-control"], "no-cache");
    let policy = headers["content-security-policy"].to_str().unwrap();
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(
            policy.contains(directive),
            "{directive} missing in {policy}"
        );
    }
    assert!(!policy.contains("unsafe-inline") && !policy.contains("unsafe-eval"));
    assert_eq!(headers["x-content-type-options"], "nosniff");
    let etag = headers["etag"].to_str().unwrap().to_string();
    let html = page.text().await.unwrap();
    let build = etag.trim_matches('"');
    let script = format!("/ui/{build}/js/main.js");
    assert!(html.contains(&script), "the page does not name {script}");

    // Revalidation: the same build answers 304.
    let again = http
        .get(format!("{base}/"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);

    // Assets of this build are immutable; each has its type.
    for (path, kind) in [
        ("js/main.js", "text/javascript; charset=utf-8"),
        ("app.css", "text/css; charset=utf-8"),
        ("favicon.svg", "image/svg+xml"),
    ] {
        let asset = http
            .get(format!("{base}/ui/{build}/{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(asset.status(), 200, "{path}");
        assert_eq!(asset.headers()["content-type"], kind, "{path}");
        assert_eq!(
            asset.headers()["cache-control"],
            "public, max-age=31536000, immutable"
        );
        assert!(!asset.bytes().await.unwrap().is_empty());
    }
    // Another build's assets (a page from before an upgrade) and unknown files: 404, never cached.
    for path in [
        "/ui/0000000000000000/js/main.js".to_string(),
        format!("/ui/{build}/js/nope.js"),
        format!("/ui/{build}/../Cargo.toml"),
    ] {
        let missing = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(missing.status(), 404, "{path}");
        if !path.contains("..") {
            assert_eq!(missing.headers()["cache-control"], "no-store", "{path}");
        }
    }
    // The API is unchanged beside it: unknown API routes are still JSON 404s.
    let api = http
        .get(format!("{base}/api/v1/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 404);
    assert!(api.text().await.unwrap().contains("route not found"));

    // An API-only replica (`--web-ui false`) serves no page.
    let mut cluster = cluster;
    cluster
        .add_api_with(&["--web-ui", "false"])
        .await
        .expect("an API-only replica");
    let base = &cluster.apis[1].url;
    for path in ["/", &format!("/ui/{build}/js/main.js")] {
        let page = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(page.status(), 404, "{path} on an API-only replica");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ui_in_chromium_against_two_replicas() {
    let chromium = chromium();
    let modules = sdks::npm_packages("playwright-core-1.65.1", &[PLAYWRIGHT]);
    let mut cluster = Cluster::start(2, 2).await;
    // A third replica whose stream snapshots hold 4 messages, for paging back.
    cluster
        .add_api_with(&["--stream-snapshot-messages", "4"])
        .await
        .expect("a third replica");
    cluster.make_admin("alice").await;
    let user_token = cluster.create_user("bob").await;
    let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/ui-screenshots");
    let _ = std::fs::remove_dir_all(&shots); // only this run's screens

    let mut child = tokio::process::Command::new("node")
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/web_ui/ui.mjs"))
        .env("NODE_PATH", &modules)
        .env("CHATD_A", &cluster.apis[0].url)
        .env("CHATD_B", &cluster.apis[1].url)
        .env("CHATD_C", &cluster.apis[2].url)
        .env("CHATD_TOKEN", &cluster.token)
        .env("CHATD_USER_TOKEN", &user_token)
        .env("SHOTS", &shots)
        .env("CHROMIUM", &chromium)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run node (Node 20 is needed for the browser tests)");
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    let run = async {
        while let Some(line) = stdout.next_line().await.unwrap() {
            if line == "restart-api-0" {
                cluster.restart_api(0, 1).await.expect("restart replica A");
                stdin.write_all(b"restarted\n").await.unwrap();
            }
            seen.push(line);
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(300), run)
        .await
        .expect("the browser run took over 5 minutes");
    let output = child.wait_with_output().await.unwrap();
    let stdout = seen.join("\n");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the browser run failed (screenshots in {})\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        shots.display()
    );
    for scenario in [
        "sign_in",
        "stream",
        "keyboard",
        "queue_and_interrupt",
        "edit_and_rerun",
        "tool_call",
        "attachments",
        "safe_markdown",
        "reasoning_retry_and_error",
        "paging",
        "chat_list",
        "archive",
        "other_replica_live",
        "reconnect",
        "usage",
        "admin_model_config",
        "admin_and_tokens",
        "not_admin",
        "phone",
        "console_clean",
    ] {
        assert!(
            seen.iter().any(|line| line == &format!("ok {scenario}")),
            "{scenario} did not pass\n{stdout}\n{stderr}"
        );
    }
}

/// Debian's Chromium (`scripts/test` installs it), or `$CHROMIUM`.
fn chromium() -> PathBuf {
    let path = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        path.exists(),
        "{} not found: the browser tests need Chromium (Debian: apt-get install chromium)",
        path.display()
    );
    path
}
