//! A TCP proxy the tests put between a process and PostgreSQL to black-hole the network
//! (R7). While cut, nothing is forwarded in either direction and new connections are not
//! passed on, but every socket stays open — as when packets are dropped on the way, and
//! unlike a reset. On heal, what was held back is delivered (as TCP retransmission would).

// Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub struct Proxy {
    pub port: u16,
    cut: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `target` (`host:port`).
    pub async fn start(target: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let cut = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let cut = cut.clone();
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    let cut = cut.clone();
                    let target = target.clone();
                    tokio::spawn(async move {
                        wait_healed(&cut).await;
                        let Ok(server) = TcpStream::connect(&target).await else {
                            return;
                        };
                        let (client_read, client_write) = client.into_split();
                        let (server_read, server_write) = server.into_split();
                        tokio::spawn(pump(client_read, server_write, cut.clone()));
                        pump(server_read, client_write, cut).await;
                    });
                }
            }
        });
        Proxy { port, cut, task }
    }

    /// The same URL with host and port replaced by this proxy's.
    pub fn url_for(&self, database_url: &str) -> String {
        let (scheme_and_user, rest) = database_url.split_once('@').expect("url with a user");
        let path = rest.split_once('/').map(|(_, path)| path).unwrap_or("");
        format!("{scheme_and_user}@127.0.0.1:{}/{path}", self.port)
    }

    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
    }

    pub fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn wait_healed(cut: &AtomicBool) {
    while cut.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Copies `from` to `to`, holding data back while the network is cut.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    cut: Arc<AtomicBool>,
) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        wait_healed(&cut).await;
        if to.write_all(&buffer[..read]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
