//! The stop signal every task of a node watches.

/// Resolves once `stop` is set (or its sender is gone: a node that was
/// dropped stops too).
pub async fn stopped(mut stop: tokio::sync::watch::Receiver<bool>) {
    // An error means the sender is gone, which is a stop as well.
    if stop.wait_for(|stopped| *stopped).await.is_err() {
        tracing::debug!("The stop signal's sender is gone; stopping.");
    }
}
