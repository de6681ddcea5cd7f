//! The changefeed: signed change records and snapshot chunks as a region's
//! follower receives them (`tollgate-feed`, `tollgate-proto` changefeed).

use crate::fixtures::{mutate, origin_keys, origin_ring, NOW};
use crate::input::Input;
use prost::Message as _;
use tollgate_feed::{verify_record, SnapshotChunkPayload};
use tollgate_model::ChangeRecord;
use tollgate_proto::convert::FeedMessage;
use tollgate_proto::origin::v1 as pb;
use tollgate_signing::CONTEXT_CHANGE_RECORD;

/// Mode 0: a fuzzed record payload signed by the origin, altered (or not),
/// verified as revision `n`: never accepted altered, accepted only as a
/// record of revision `n` that round-trips. Mode 1: any bytes as a
/// `SubscribeResponse`: a message that converts converts back to the same
/// message. Mode 2: any JSON as a snapshot chunk payload (what a follower
/// parses once the chunk's signature verified): it round-trips.
pub fn changefeed(data: &[u8]) {
    let mut input = Input::new(data);
    match input.u8() % 3 {
        0 => {
            let revision = input.u64();
            let op = input.u8();
            let position = input.u16();
            let byte = input.u8();
            let payload = input.field();
            let signed = origin_ring().sign(CONTEXT_CHANGE_RECORD, payload.to_vec());
            let mut altered = signed.clone();
            altered.payload = mutate(&signed.payload, op, position, byte);
            let Ok(record) = verify_record(origin_keys(), revision, revision, &altered, NOW) else {
                return;
            };
            assert_eq!(altered, signed, "an altered change record was accepted");
            assert_eq!(record.revision, revision);
            let encoded = serde_json::to_vec(&record).expect("a record serialises");
            let again: ChangeRecord = serde_json::from_slice(&encoded).expect("and parses back");
            assert_eq!(again, record);
        }
        1 => {
            let Ok(message) = pb::SubscribeResponse::decode(input.rest()) else {
                return;
            };
            let Ok(converted) = FeedMessage::try_from(message) else {
                return;
            };
            let shown = format!("{converted:?}");
            let back = pb::SubscribeResponse::from(converted);
            let again = FeedMessage::try_from(back).expect("a converted message converts back");
            assert_eq!(format!("{again:?}"), shown);
        }
        _ => {
            let Ok(payload) = serde_json::from_slice::<SnapshotChunkPayload>(input.rest()) else {
                return;
            };
            let encoded = serde_json::to_vec(&payload).expect("a chunk serialises");
            let again: SnapshotChunkPayload =
                serde_json::from_slice(&encoded).expect("and parses back");
            assert_eq!(again, payload);
        }
    }
}
