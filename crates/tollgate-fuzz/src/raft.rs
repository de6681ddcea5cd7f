//! The Raft log entries and RPC payloads (JSON, read back from sled and
//! received from peers) and the snapshot codec (binary, received from the
//! leader and read back from sled) of `tollgate-raft`, for both roles.

use crate::input::Input;
use arbitrary::Unstructured;
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, VoteRequest, VoteResponse};
use openraft::{BasicNode, CommittedLeaderId, Entry, EntryPayload, LogId, Membership, Vote};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use tollgate_origin::{OriginCommand, OriginLogic, OriginResponse};
use tollgate_raft::codec::{decode, decode_log_entry, decode_stored, encode, encode_log_entry};
use tollgate_raft::logic::{KEY_BYTES_MAX, VALUE_BYTES_MAX};
use tollgate_raft::store::value::{self, FieldNames};
use tollgate_raft::store::{
    decode_snapshot, encode_pair, encode_snapshot, SnapshotData, SNAPSHOT_MAGIC_V1,
};
use tollgate_raft::{NodeId, TypeConfig};
use tollgate_region::{RegionCommand, RegionLogic, RegionResponse};

type OriginEntry = Entry<TypeConfig<OriginLogic>>;
type RegionEntry = Entry<TypeConfig<RegionLogic>>;
type SnapshotMeta = openraft::SnapshotMeta<NodeId, BasicNode>;

/// A value that decodes re-encodes to bytes that decode and encode to the
/// same bytes: what a node writes back is what it read.
fn round_trip<T: Serialize + DeserializeOwned>(bytes: &[u8]) {
    let Ok(value) = decode_stored::<T>("fuzz", bytes) else {
        return;
    };
    let encoded = encode(&value).expect("a decoded value encodes");
    let again: T = decode(&encoded).expect("a re-encoded value decodes");
    assert_eq!(
        encode(&again).expect("and encodes"),
        encoded,
        "encoding is a fixed point"
    );
}

/// The first byte picks what the rest is read as: a log entry of either
/// role, a Raft RPC or its answer, a snapshot's metadata, a client write's
/// command or response, or (last) a log entry built from fuzzed fields,
/// which must round-trip to itself.
pub fn raft_log(data: &[u8]) {
    let mut input = Input::new(data);
    let which = input.u8();
    let bytes = input.rest();
    match which % 14 {
        0 => round_trip::<OriginEntry>(bytes),
        1 => round_trip::<RegionEntry>(bytes),
        2 => round_trip::<AppendEntriesRequest<TypeConfig<OriginLogic>>>(bytes),
        3 => round_trip::<AppendEntriesRequest<TypeConfig<RegionLogic>>>(bytes),
        4 => round_trip::<AppendEntriesResponse<NodeId>>(bytes),
        5 => round_trip::<VoteRequest<NodeId>>(bytes),
        6 => round_trip::<VoteResponse<NodeId>>(bytes),
        7 => round_trip::<SnapshotMeta>(bytes),
        8 => round_trip::<Vote<NodeId>>(bytes),
        9 => round_trip::<OriginCommand>(bytes),
        10 => round_trip::<RegionCommand>(bytes),
        11 => round_trip::<OriginResponse>(bytes),
        12 => round_trip::<RegionResponse>(bytes),
        _ => {
            if let Ok(entry) = built_entry(&mut Unstructured::new(bytes)) {
                let shown = format!("{entry:?}");
                let encoded = encode(&entry).expect("an entry encodes");
                let again: RegionEntry =
                    decode_stored("raft.log entry", &encoded).expect("an encoded entry decodes");
                assert_eq!(format!("{again:?}"), shown);
                // As the log store keeps it (compressed when that is shorter).
                let (stored, json_len) = encode_log_entry(&entry).expect("an entry encodes");
                let again: RegionEntry = decode_log_entry("raft.log entry", &stored, json_len)
                    .expect("a stored entry decodes");
                assert_eq!(format!("{again:?}"), shown);
            }
        }
    }
}

fn built_entry(u: &mut Unstructured<'_>) -> arbitrary::Result<RegionEntry> {
    let term: u64 = u.arbitrary()?;
    let leader: NodeId = u.arbitrary()?;
    let index: u64 = u.arbitrary()?;
    let payload = match u.int_in_range(0..=1u8)? {
        0 => EntryPayload::Blank,
        _ => {
            let configs: Vec<BTreeSet<NodeId>> = u.arbitrary()?;
            let learners: BTreeMap<NodeId, String> = u.arbitrary()?;
            let nodes: BTreeMap<NodeId, BasicNode> = learners
                .into_iter()
                .map(|(id, addr)| (id, BasicNode { addr }))
                .collect();
            EntryPayload::Membership(Membership::new(configs, nodes))
        }
    };
    Ok(Entry {
        log_id: LogId::new(CommittedLeaderId::new(term, leader), index),
        payload,
    })
}

/// Mode 0: pairs built with `arbitrary`, encoded as a snapshot (compressed
/// blocks, and the older uncompressed format): they decode to the same
/// pairs, and a snapshot cut anywhere decodes to a prefix of them or is
/// refused; the uncompressed one is refused unless cut between two pairs.
/// Mode 1: any bytes as a snapshot: one that decodes re-encodes to the same
/// pairs (an uncompressed one to exactly those bytes: it has one
/// spelling), and is read back unchanged through `SnapshotData`.
pub fn raft_snapshot(data: &[u8]) {
    let mut input = Input::new(data);
    let mode = input.u8() % 2;
    let cut = usize::from(input.u16());
    if mode == 0 {
        let mut u = input.unstructured();
        let Ok(pairs) = u.arbitrary::<Vec<(Vec<u8>, Vec<u8>)>>() else {
            return;
        };
        let pairs: Vec<_> = pairs
            .into_iter()
            .filter(|(k, v)| k.len() <= KEY_BYTES_MAX && v.len() <= VALUE_BYTES_MAX)
            .collect();
        let compressed = encode_snapshot(pairs.iter().map(|(k, v)| (k.as_slice(), v.as_slice())));
        assert_eq!(
            decode_snapshot(&compressed).expect("a snapshot decodes"),
            pairs
        );
        if let Ok(fewer) = decode_snapshot(&compressed[..cut % compressed.len()]) {
            assert_eq!(
                fewer,
                pairs[..fewer.len()],
                "a cut snapshot read other pairs"
            );
        }
        let mut encoded = SNAPSHOT_MAGIC_V1.to_vec();
        let mut boundaries = vec![encoded.len()];
        for (key, value) in &pairs {
            encode_pair(&mut encoded, key, value);
            boundaries.push(encoded.len());
        }
        assert_eq!(
            decode_snapshot(&encoded).expect("a snapshot decodes"),
            pairs
        );
        let cut = cut % encoded.len();
        match decode_snapshot(&encoded[..cut]) {
            Ok(fewer) => {
                let n = boundaries.iter().position(|b| *b == cut);
                assert!(cut == 0 || n.is_some(), "a snapshot cut at {cut} decoded");
                assert_eq!(fewer, pairs[..n.unwrap_or(0)]);
            }
            Err(_) => assert!(!boundaries.contains(&cut) && cut != 0),
        }
    } else {
        let bytes = input.rest();
        let Ok(pairs) = decode_snapshot(bytes) else {
            return;
        };
        if bytes.starts_with(SNAPSHOT_MAGIC_V1) {
            let mut encoded = SNAPSHOT_MAGIC_V1.to_vec();
            for (key, value) in &pairs {
                encode_pair(&mut encoded, key, value);
            }
            assert_eq!(encoded, bytes, "an uncompressed snapshot has one encoding");
        }
        let again = encode_snapshot(pairs.iter().map(|(k, v)| (k.as_slice(), v.as_slice())));
        assert_eq!(decode_snapshot(&again).expect("re-encoded decodes"), pairs);
        // Values as the state machine stores them: a stored value either
        // decodes or is refused, and what the encoder stores reads back as
        // exactly what it was given.
        let names = FieldNames::new(tollgate_model::stored::STORED_FIELD_NAMES);
        for (_, value) in &pairs {
            // Read as stored (these bytes came from a snapshot): what it
            // gives back is stored again as itself.
            if let Ok(json) = value::decode(value, &names) {
                let again = value::encode(&json, &names);
                let back = value::decode(&again, &names).expect("a stored value decodes");
                assert_eq!(
                    back.as_ref(),
                    json.as_ref(),
                    "a decoded value changed in storage"
                );
            }
            let stored = value::encode(value, &names);
            let back = value::decode(&stored, &names).expect("a stored value decodes");
            assert_eq!(
                back.as_ref(),
                value.as_slice(),
                "a value changed in storage"
            );
        }
        let data = SnapshotData::from_bytes(bytes.to_vec());
        assert_eq!(data.len(), bytes.len() as u64);
        assert_eq!(data.to_vec().expect("in-memory data reads"), bytes);
    }
}
