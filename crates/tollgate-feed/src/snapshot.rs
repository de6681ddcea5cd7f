use serde::{Deserialize, Serialize};
use tollgate_model::Mutation;

/// Largest payload of one snapshot chunk, in bytes (before signing).
pub const SNAPSHOT_CHUNK_BYTES_MAX: usize = 1024 * 1024;

/// What one snapshot chunk signs. The revision, index and `last` flag are
/// inside the signed bytes, so chunks cannot be reordered, mixed between
/// snapshots or cut short without the follower noticing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotChunkPayload {
    pub revision: u64,
    pub index: u32,
    pub last: bool,
    pub mutations: Vec<Mutation>,
}

/// Splits `mutations` into chunk payloads of at most
/// [`SNAPSHOT_CHUNK_BYTES_MAX`] serialised bytes (one oversized mutation
/// gets a chunk of its own).
pub fn chunk(revision: u64, mutations: Vec<Mutation>) -> Vec<Vec<u8>> {
    let mut groups: Vec<Vec<Mutation>> = vec![Vec::new()];
    let mut size = 0;
    for m in mutations {
        let len = serde_json::to_vec(&m).map(|b| b.len()).unwrap_or(0);
        if size + len > SNAPSHOT_CHUNK_BYTES_MAX && !groups.last().is_some_and(Vec::is_empty) {
            groups.push(Vec::new());
            size = 0;
        }
        size += len;
        groups.last_mut().expect("at least one group").push(m);
    }
    let count = groups.len();
    groups
        .into_iter()
        .enumerate()
        .map(|(index, mutations)| {
            serde_json::to_vec(&SnapshotChunkPayload {
                revision,
                index: index as u32,
                last: index + 1 == count,
                mutations,
            })
            .expect("model values serialise")
        })
        .collect()
}
