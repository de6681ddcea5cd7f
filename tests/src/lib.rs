//! Shared helpers for the cross-crate integration tests.

use std::future::Future;
use std::time::{Duration, Instant};

/// Installs a test-friendly tracing subscriber once (output captured per
/// test by the harness). `RUST_LOG` overrides the default `info` filter.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// How often a waiting test re-checks its condition; it only bounds how
/// late success is noticed, it never synchronises anything.
pub const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Polls `condition` until it returns `Some`, or fails with `what` once
/// `deadline` has passed. Never a fixed sleep: the poll interval only bounds
/// how late success is noticed.
pub async fn wait_until<T, F, Fut>(
    what: &str,
    deadline: Duration,
    mut condition: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = condition().await {
            return Ok(value);
        }
        if start.elapsed() > deadline {
            anyhow::bail!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// The demo data set that `tollgate eval` and `tollgate dev` use.
pub const DEMO_DATA: &str = include_str!("../../crates/tollgate/data/demo.json");

/// A TCP proxy between a region and the origin that a test can cut and
/// heal: a partition without root, network namespaces or fixed sleeps.
pub struct CutProxy {
    addr: std::net::SocketAddr,
    open: std::sync::Arc<tokio::sync::watch::Sender<bool>>,
}

impl CutProxy {
    /// Listens on 127.0.0.1:0 and forwards every connection to `target`.
    pub async fn start(target: std::net::SocketAddr) -> anyhow::Result<CutProxy> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let open = std::sync::Arc::new(tokio::sync::watch::channel(true).0);
        let gate = open.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !*gate.borrow() {
                    continue; // cut: the connection is dropped at once
                }
                let mut cut = gate.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.wait_for(|open| !*open) => {}
                    }
                });
            }
        });
        Ok(CutProxy { addr, open })
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// Drops every connection through the proxy and refuses new ones.
    pub fn cut(&self) {
        self.open.send_replace(false);
    }

    /// Lets connections through again.
    pub fn heal(&self) {
        self.open.send_replace(true);
    }
}
