//! The stop signal every task of a node watches.

/// Resolves once `stop` is set (or its sender is gone: a node that was
/// dropped stops too).
pub async fn stopped(mut stop: tokio::sync::watch::Receiver<bool>) {
    // An error means the sender is gone, which is a stop as well.
    if stop.wait_for(|stopped| *stopped).await.is_err() {
        tracing::debug!("The stop signal's sender is gone; stopping.");
    }
}

/// Waits for `task` until `deadline`, one phase of a node's shutdown; a
/// task that overruns is logged (and left to end with the process) so the
/// next phase still runs within the whole shutdown's deadline.
pub async fn within(deadline: std::time::Instant, what: &str, task: tokio::task::JoinHandle<()>) {
    let left = deadline.saturating_duration_since(std::time::Instant::now());
    if tokio::time::timeout(left, task).await.is_err() {
        tracing::warn!(
            what,
            "A shutdown phase did not finish before its deadline; going on."
        );
    }
}
