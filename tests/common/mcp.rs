//! The MCP reference server, `@modelcontextprotocol/server-everything` from npm (pinned),
//! run as a real process for the MCP tests: installed once into `target/mcp-everything`
//! (an install into a temporary directory renamed into place, so concurrent test processes
//! never see half of it), started on a free port with the transport asked for.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The pinned version (its tools include `echo` and `get-sum`).
pub const EVERYTHING_VERSION: &str = "2026.8.31";

/// A running reference server; killed on drop.
pub struct Everything {
    child: Child,
    pub port: u16,
}

impl Everything {
    /// `transport`: `streamableHttp` (endpoint `/mcp`) or `sse` (endpoint `/sse`).
    pub async fn start(transport: &str) -> Everything {
        let entry = install();
        let port = super::cluster::free_port();
        let log_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-logs");
        std::fs::create_dir_all(&log_dir).expect("log dir");
        let log = std::fs::File::create(log_dir.join(format!("mcp-everything-{port}.log")))
            .expect("log file");
        let child = Command::new("node")
            .arg(&entry)
            .arg(transport)
            .env("PORT", port.to_string())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start the MCP reference server (node)");
        let deadline = Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "the MCP reference server did not listen"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Everything { child, port }
    }

    /// The URL chatd is configured with.
    pub fn url(&self, transport: &str) -> String {
        let path = if transport == "sse" { "sse" } else { "mcp" };
        format!("http://127.0.0.1:{}/{path}", self.port)
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Everything {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Installs the package (once per target directory) and returns its entry point.
fn install() -> PathBuf {
    let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target");
    let home = target.join(format!("mcp-everything-{EVERYTHING_VERSION}"));
    let entry = home.join("node_modules/@modelcontextprotocol/server-everything/dist/index.js");
    if entry.exists() {
        return entry;
    }
    let staging = target.join(format!("mcp-everything-staging-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).expect("staging dir");
    let status = Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--silent", "--prefix"])
        .arg(&staging)
        .arg(format!(
            "@modelcontextprotocol/server-everything@{EVERYTHING_VERSION}"
        ))
        .status()
        .expect("run npm (Node 20 is needed for the MCP tests)");
    assert!(
        status.success(),
        "npm install of the MCP reference server failed"
    );
    if std::fs::rename(&staging, &home).is_err() {
        // Another test process installed it first.
        let _ = std::fs::remove_dir_all(&staging);
    }
    assert!(
        entry.exists(),
        "{} missing after the install",
        entry.display()
    );
    entry
}
