//! Reading a node's applied state: the helpers the origin and region nodes
//! share (they store what regions serve under the same keys).

use crate::NodeError;
use tollgate_raft::StateView;

/// Key prefixes of what regions serve (catalog, accounts, subjects,
/// entitlements).
pub const SERVED_PREFIXES: [&str; 6] = [
    "catalog/",
    "account/",
    "subject/",
    "entitlement/",
    tollgate_origin::keys::REVOKED_LICENSE_PREFIX,
    tollgate_origin::keys::REVOKED_CERTIFICATE_PREFIX,
];
/// Keys and values, in key order.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// Most entries read per scan call when reading a whole prefix.
const SCAN_CHUNK: usize = 4096;

/// A counter stored as JSON (0 when absent).
pub fn read_u64(view: &StateView, key: &[u8]) -> Result<u64, String> {
    match view.get(key).map_err(|e| e.to_string())? {
        Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| e.to_string()),
        None => Ok(0),
    }
}

/// Every entry under `prefix`, read in bounded chunks.
pub fn scan_all(view: &StateView, prefix: &str) -> Result<Entries, tollgate_raft::Error> {
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
pub fn served_entries(view: &StateView) -> Result<Entries, tollgate_raft::Error> {
    let mut entries = Vec::new();
    for prefix in SERVED_PREFIXES {
        entries.extend(scan_all(view, prefix)?);
    }
    Ok(entries)
}

/// What a node serves, as a data set.
pub fn served_dataset(view: &StateView) -> Result<tollgate_model::Dataset, NodeError> {
    tollgate_origin::dataset_from_entries(served_entries(view)?).map_err(NodeError::Other)
}
