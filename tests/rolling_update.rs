//! A rolling update behind a real load balancer: nginx (Debian's package) in front of two API
//! replicas, configured as README.md tells operators to (no buffering, long read timeout, a
//! draining replica's 503 on a new stream passed to the other replica). Under a running
//! `chatd scaletest` that goes only through nginx, every API replica and then every worker is
//! restarted one by one the way a Deployment's rolling update does (SIGTERM, wait for the
//! exit, start a new one): every turn completes, with no gap, duplicate or reordering in any
//! stream, no failed request, and the clients' streams did move (reconnects with
//! `Last-Event-ID`).

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::cluster::{free_port, Cluster};

/// The directives README.md gives for a location in front of chatd.
const README_LOCATION: &str = "
            proxy_pass http://chatd_api;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_buffering off;
            proxy_cache off;
            proxy_read_timeout 1h;
            proxy_next_upstream error timeout http_503;
";

struct Nginx {
    child: Child,
    dir: PathBuf,
    url: String,
}

impl Drop for Nginx {
    /// SIGTERM, so the master stops its workers (a SIGKILLed master leaves them running,
    /// holding the port); SIGKILL only if it has not exited within 5 s.
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Kept for a person to read when the test fails.
        let logs = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-logs");
        let _ = std::fs::create_dir_all(&logs);
        let _ = std::fs::copy(self.dir.join("error.log"), logs.join("nginx-error.log"));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Nginx {
    async fn start(upstreams: &[String], name: &str) -> Nginx {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("chatd-nginx-{name}"));
        std::fs::create_dir_all(&dir).expect("create the nginx directory");
        // Worker processes run as `nobody` when nginx starts as root: temp paths writable.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let servers: String = upstreams
            .iter()
            .map(|url| {
                format!(
                    "        server {} max_fails=0;\n",
                    url.trim_start_matches("http://")
                )
            })
            .collect();
        let d = dir.display();
        let config = format!(
            "daemon off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 4096; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    upstream chatd_api {{
{servers}    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{{README_LOCATION}        }}
    }}
}}
"
        );
        std::fs::write(dir.join("nginx.conf"), config).expect("write nginx.conf");
        let child = Command::new(common::debian_binary("nginx"))
            .args(["-p", &dir.display().to_string(), "-c"])
            .arg(dir.join("nginx.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        let nginx = Nginx {
            child,
            dir,
            url: format!("http://127.0.0.1:{port}"),
        };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(response) = http.get(format!("{}/readyz", nginx.url)).send().await {
                if response.status() == 200 {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "nginx did not answer: {}",
                std::fs::read_to_string(nginx.dir.join("error.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        nginx
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rolling_update_behind_nginx_loses_no_turn() {
    let mut cluster = Cluster::start(2, 2).await;
    let upstreams: Vec<String> = cluster.apis.iter().map(|api| api.url.clone()).collect();
    let nginx = Nginx::start(&upstreams, &cluster.db.name).await;

    // 60 chats of 12 turns, each reply 40 tokens at 20 tokens/s: about 30 s of traffic, with
    // a turn streaming on every chat at every moment.
    let report_path = std::env::temp_dir().join(format!("chatd-rolling-{}.json", cluster.db.name));
    let mut scaletest = Command::new(env!("CARGO_BIN_EXE_chatd"))
        .args([
            "scaletest",
            "--api",
            &nginx.url,
            "--database-url",
            &cluster.db.url,
            "--chats",
            "60",
            "--turns",
            "12",
            "--tokens",
            "40",
            "--tokens-per-second",
            "20",
            "--json",
        ])
        .arg(&report_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start chatd scaletest");

    tokio::time::sleep(Duration::from_secs(4)).await;
    for index in 0..cluster.apis.len() {
        cluster
            .restart_api(index, 1)
            .await
            .expect("restart an API replica");
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    for index in 0..cluster.workers.len() {
        cluster
            .restart_worker(index, 1)
            .await
            .expect("restart a worker");
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    assert!(
        scaletest.try_wait().unwrap().is_none(),
        "the load must outlast the rolling update"
    );

    let deadline = Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(status) = scaletest.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "scaletest did not finish");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut stderr = String::new();
    use std::io::Read;
    let _ = scaletest.stderr.take().unwrap().read_to_string(&mut stderr);
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&report_path).unwrap_or_else(|_| panic!("no report: {stderr}")),
    )
    .expect("a JSON report");
    let _ = std::fs::remove_file(&report_path);
    let summary = format!(
        "report: {}\nnginx: {}",
        serde_json::to_string_pretty(&report).unwrap(),
        std::fs::read_to_string(nginx.dir.join("error.log"))
            .unwrap_or_default()
            .lines()
            .filter(|line| line.contains("[error]") || line.contains("[warn]"))
            .take(20)
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(status.success(), "scaletest failed: {stderr}\n{summary}");
    assert_eq!(report["turns"], report["turns_planned"], "{summary}");
    assert_eq!(report["turns"], 60 * 12, "{summary}");
    for key in ["gaps", "duplicates", "out_of_order", "text_mismatches"] {
        assert_eq!(report[key], 0, "{key}: {summary}");
    }
    assert_eq!(
        report["errors"].as_object().map(|errors| errors.len()),
        Some(0),
        "no failed request: {summary}"
    );
    assert!(
        report["stream_reconnects"].as_u64().unwrap_or(0) > 0,
        "the drained replicas' streams moved: {summary}"
    );
}
