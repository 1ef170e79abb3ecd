// Each test binary uses only part of the harness.
#![allow(dead_code)]

pub mod chats;
pub mod cluster;
pub mod leases;
pub mod mcp;
pub mod models;
pub mod pg;
pub mod proxy;
pub mod sdks;
pub mod sse;

/// A server binary from a Debian package (`/usr/sbin` or `/usr/bin`, off `PATH` for
/// non-root users); panics naming the package when it is missing.
pub fn debian_binary(name: &str) -> std::path::PathBuf {
    for dir in ["/usr/sbin", "/usr/bin"] {
        let candidate = std::path::Path::new(dir).join(name);
        if candidate.exists() {
            return candidate;
        }
    }
    panic!(
        "{name} not found: scripts/test installs it when run as root; otherwise \
         `sudo apt-get install -y {name}`"
    );
}
