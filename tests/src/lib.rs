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
