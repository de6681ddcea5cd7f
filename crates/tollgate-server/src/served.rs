//! Reading a node's applied state: the helpers the origin and region nodes
//! share (they store what regions serve under the same keys).

use crate::NodeError;
use tollgate_api::store::Entries;
use tollgate_model::UnixSeconds;
use tollgate_raft::StateView;

/// Key prefixes of what regions serve (catalog, accounts, subjects,
/// entitlements).
pub(crate) const SERVED_PREFIXES: [&str; 6] = [
    "catalog/",
    "account/",
    "subject/",
    "entitlement/",
    tollgate_origin::keys::REVOKED_LICENSE_PREFIX,
    tollgate_origin::keys::REVOKED_CERTIFICATE_PREFIX,
];
/// Most entries read per scan call when reading a whole prefix.
const SCAN_CHUNK: usize = 4096;

/// A counter stored as JSON (0 when absent).
pub(crate) fn read_u64(view: &StateView, key: &[u8]) -> Result<u64, String> {
    match view.get(key).map_err(|e| e.to_string())? {
        Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| e.to_string()),
        None => Ok(0),
    }
}

/// Every entry under `prefix`, read in bounded chunks.
pub(crate) fn scan_all(view: &StateView, prefix: &str) -> Result<Entries, tollgate_raft::Error> {
    let mut out = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let chunk = view.scan(prefix.as_bytes(), after.as_deref(), SCAN_CHUNK)?;
        let done = chunk.len() < SCAN_CHUNK;
        after = chunk.last().map(|(k, _)| k.clone());
        out.extend(chunk);
        if done {
            return Ok(out);
        }
    }
}

/// Every entry of what regions serve.
pub(crate) fn served_entries(view: &StateView) -> Result<Entries, tollgate_raft::Error> {
    let mut entries = Vec::new();
    for prefix in SERVED_PREFIXES {
        entries.extend(scan_all(view, prefix)?);
    }
    Ok(entries)
}

/// What a node serves, as a data set.
pub(crate) fn served_dataset(view: &StateView) -> Result<tollgate_model::Dataset, NodeError> {
    tollgate_origin::dataset_from_entries(served_entries(view)?).map_err(NodeError::Other)
}

/// The wall clock, in Unix seconds: stamped into commands by proposers
/// (apply functions never read a clock).
pub(crate) fn now() -> UnixSeconds {
    UnixSeconds(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0),
    )
}

/// `router` with the standard gRPC health service (`services` and the
/// server as a whole SERVING) and server reflection over every Tollgate
/// proto, so off-the-shelf tools (grpcurl, grpc-health-probe, Kubernetes
/// gRPC probes) can list, call and probe the node.
pub(crate) async fn with_standard_services(
    router: tonic::transport::server::Router,
    services: &[&str],
) -> Result<tonic::transport::server::Router, crate::NodeError> {
    let (reporter, health) = tonic_health::server::health_reporter();
    for service in services {
        reporter
            .set_service_status(*service, tonic_health::ServingStatus::Serving)
            .await;
    }
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(tollgate_proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| crate::NodeError::Other(format!("gRPC reflection: {e}")))?;
    Ok(router.add_service(health).add_service(reflection))
}

/// Resolves once `stop` is set (or its sender is gone).
pub(crate) async fn stopped(mut stop: tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

/// Serves `router` on `listener` (TCP_NODELAY on every connection) until
/// `stop`; a failure is logged as `what` failing.
pub(crate) fn serve_grpc(
    router: tonic::transport::server::Router,
    listener: tokio::net::TcpListener,
    stop: tokio::sync::watch::Receiver<bool>,
    what: &'static str,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        if let Err(error) = router
            .serve_with_incoming_shutdown(incoming, stopped(stop))
            .await
        {
            tracing::error!(%error, server = what, "A gRPC server failed.");
        }
    })
}
