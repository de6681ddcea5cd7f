//! The seed corpus: valid inputs for every target, built from the project's
//! own values (the demo data set, the example configs, MaxMind databases
//! from `mmdb-writer` through `tollgate_geo::fixtures`) and signed with the
//! fixed fuzzing keys.
//!
//! `TOLLGATE_UPDATE_FUZZ_CORPUS=1 cargo test -p tollgate-fuzz --test corpus`
//! writes them to `fuzz/corpus/<target>/seed-*` (files libFuzzer found are
//! kept beside them). Without the variable the test runs every seed through
//! its target and checks each is checked in.

use openraft::raft::{AppendEntriesRequest, VoteRequest, VoteResponse};
use openraft::{BasicNode, CommittedLeaderId, Entry, EntryPayload, LogId, Membership, Vote};
use prost::Message as _;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use tollgate_fuzz::fixtures::{
    origin_keys, origin_ring, origin_secret, region_certificate, region_secret, seal_key, AUDIENCE,
    NOW, REGION,
};
use tollgate_fuzz::input::Output;
use tollgate_fuzz::TARGETS;
use tollgate_license::{LicenseClaims, LicenseEntitlement, RandomId, ISSUER_ORIGIN};
use tollgate_model::{ChangeRecord, Dataset, Mutation, UnixSeconds};
use tollgate_proto::check::v1 as check;
use tollgate_proto::cluster::v1 as cluster;
use tollgate_proto::convert::{ChangeMembership, FeedMessage, Subscription};
use tollgate_proto::origin::v1 as origin;
use tollgate_raft::store::{encode_pair, SNAPSHOT_MAGIC};
use tollgate_raft::TypeConfig;
use tollgate_region::{RegionCommand, RegionLogic};
use tollgate_signing::{CONTEXT_CHANGE_RECORD, CONTEXT_REGION_CERTIFICATE};

type Seeds = Vec<(&'static str, String, Vec<u8>)>;

fn demo() -> Dataset {
    serde_json::from_str(include_str!("../../tollgate/data/demo.json")).expect("demo data parses")
}

fn claims(iss: &str, device_bound: bool) -> Vec<u8> {
    let demo = demo();
    let account = demo.accounts[0].id.clone();
    let entitlements = demo
        .entitlements
        .iter()
        .filter(|e| e.account == account)
        .filter_map(|e| {
            LicenseEntitlement::resolve(e, &demo.catalog, demo.catalog.default_offline_policy)
        })
        .collect();
    let claims = LicenseClaims {
        iss: iss.to_owned(),
        sub: LicenseClaims::subject_of(&account, None),
        aud: AUDIENCE.to_owned(),
        iat: UnixSeconds(NOW.0 - 60),
        nbf: UnixSeconds(NOW.0 - 60),
        exp: UnixSeconds(NOW.0 + 3600),
        jti: RandomId::from_bytes([1; 16]),
        account,
        subject: None,
        revision: 42,
        device_bound,
        entitlements,
    };
    claims.to_json().expect("seed claims are valid")
}

fn mutations() -> Vec<Mutation> {
    let demo = demo();
    let mut out = Vec::new();
    out.extend(
        demo.catalog
            .products
            .values()
            .cloned()
            .map(Mutation::PutProduct),
    );
    out.extend(
        demo.catalog
            .features
            .values()
            .take(3)
            .cloned()
            .map(Mutation::PutFeature),
    );
    out.extend(
        demo.catalog
            .plans
            .values()
            .take(1)
            .cloned()
            .map(Mutation::PutPlan),
    );
    out.extend(
        demo.accounts
            .iter()
            .take(1)
            .cloned()
            .map(Mutation::PutAccount),
    );
    out.extend(
        demo.entitlements
            .iter()
            .take(2)
            .cloned()
            .map(Mutation::PutEntitlement),
    );
    out
}

fn token(seeds: &mut Seeds) {
    let signed = tollgate_token::sign(origin_secret(), b"{\"a\":1}", b"{\"kid\":\"k\"}", b"")
        .expect("a seed token");
    let bare = tollgate_token::sign(origin_secret(), b"message", b"", b"").expect("a seed token");
    for (name, text) in [
        ("raw-footer", signed.as_str()),
        ("raw-bare", bare.as_str()),
        ("raw-local", "v4.local.AAAA"),
        ("raw-sections", "v4.public.AAAA.AAAA.AAAA"),
    ] {
        seeds.push((
            "token",
            name.into(),
            Output::default().u8(0).rest(text.as_bytes()).finish(),
        ));
    }
    for op in 0..5u8 {
        let input = Output::default()
            .u8(1)
            .u8(op)
            .u16(u16::from(op) * 13)
            .u8(b'A')
            .field(b"{\"sub\":\"acme\"}")
            .field(if op % 2 == 0 {
                b"{\"kid\":\"ed25519-1\"}"
            } else {
                b""
            })
            .field(if op == 3 { b"device" } else { b"" })
            .finish();
        seeds.push(("token", format!("signed-op{op}"), input));
    }
}

fn license_token(seeds: &mut Seeds) {
    let region_iss = format!("tollgate-region:{REGION}");
    for (mode, iss) in [(0u8, ISSUER_ORIGIN), (1, region_iss.as_str())] {
        for (op, device) in [(0u8, &b""[..]), (0, b"device-1"), (1, b""), (2, b"")] {
            let input = Output::default()
                .u8(mode)
                .u8(op)
                .u16(40)
                .u8(b'x')
                .i32(if op == 2 { 7200 } else { 0 })
                .field(device)
                .field(&claims(iss, !device.is_empty()))
                .finish();
            let bound = if device.is_empty() { "" } else { "-device" };
            seeds.push(("license_token", format!("mode{mode}-op{op}{bound}"), input));
        }
    }
    let footer = serde_json::json!({ "kid": origin_ring().active_kid() }).to_string();
    let text = tollgate_token::sign(
        origin_secret(),
        &claims(ISSUER_ORIGIN, false),
        footer.as_bytes(),
        b"",
    )
    .expect("a seed token");
    seeds.push((
        "license_token",
        "mode2-origin".into(),
        Output::default()
            .u8(2)
            .u8(0)
            .u16(0)
            .u8(0)
            .i32(0)
            .field(b"")
            .rest(text.as_bytes())
            .finish(),
    ));
}

fn region_certificate_seeds(seeds: &mut Seeds) {
    let (cert, signed) = region_certificate();
    let payload = serde_json::to_vec(cert).expect("a certificate serialises");
    for (part, op, at) in [
        (0u8, 0u8, 0i32),
        (0, 1, 0),
        (1, 1, 0),
        (2, 1, 0),
        (0, 0, 40 * 86_400),
    ] {
        let input = Output::default()
            .u8(0)
            .i32(at)
            .u8(part)
            .u8(op)
            .u16(20)
            .u8(b'7')
            .field(&payload)
            .finish();
        seeds.push((
            "region_certificate",
            format!("part{part}-op{op}-at{at}"),
            input,
        ));
    }
    let json = serde_json::to_vec(signed).expect("a signed certificate serialises");
    seeds.push((
        "region_certificate",
        "json".into(),
        Output::default().u8(1).i32(0).rest(&json).finish(),
    ));
    let other = origin_ring().sign(CONTEXT_REGION_CERTIFICATE, b"{}".to_vec());
    let json = serde_json::to_vec(&other).expect("a signed value serialises");
    seeds.push((
        "region_certificate",
        "json-empty".into(),
        Output::default().u8(1).i32(0).rest(&json).finish(),
    ));
}

fn key_set(seeds: &mut Seeds) {
    let json = serde_json::to_vec(origin_keys()).expect("a key set serialises");
    seeds.push((
        "key_set",
        "json".into(),
        Output::default().u8(0).rest(&json).finish(),
    ));
    let wire = origin::PublicKeySet::from(origin_keys().clone()).encode_to_vec();
    seeds.push((
        "key_set",
        "proto".into(),
        Output::default().u8(1).rest(&wire).finish(),
    ));
    for op in 0..2u8 {
        let input = Output::default()
            .u8(2)
            .u8(op)
            .u16(9)
            .u8(b'0')
            .field(&json)
            .finish();
        seeds.push(("key_set", format!("endorsed-op{op}"), input));
    }
}

fn sealed_keys(seeds: &mut Seeds) {
    let sealed = origin_ring().seal(&seal_key()).expect("the ring seals");
    let json = serde_json::to_vec(&sealed).expect("records serialise");
    seeds.push((
        "sealed_keys",
        "json".into(),
        Output::default().u8(0).rest(&json).finish(),
    ));
    for (op, at) in [(0u8, 0u16), (1, 30), (1, 200), (4, 150)] {
        let input = Output::default().u8(1).u8(op).u16(at).u8(b'B').finish();
        seeds.push(("sealed_keys", format!("altered-op{op}-at{at}"), input));
    }
}

fn proto_requests(seeds: &mut Seeds) {
    for which in 0..32u8 {
        seeds.push(("proto_requests", format!("empty-{which:02}"), vec![which]));
    }
    let request = check::CheckRequest {
        account_id: "acme".into(),
        subject_id: Some("alice".into()),
        feature_id: "export".into(),
        consume: 1,
        location: Some(check::check_request::Location::Ip("192.0.2.1".into())),
        consistency: None,
        idempotency_key: Some("key-1".into()),
        explain: true,
    };
    let batch = check::BatchCheckRequest {
        checks: vec![request.clone(), request.clone()],
        consistency: None,
    };
    let subscribe = origin::SubscribeRequest::from(Subscription {
        from_revision: 7,
        max_batch_records: 100,
        subscriber: "eu/node-1".into(),
    });
    let membership = cluster::ChangeMembershipRequest::from(ChangeMembership {
        voters: [1, 2, 3].into_iter().collect(),
        keep_removed_as_learners: true,
    });
    for (which, bytes) in [
        (0u8, request.encode_to_vec()),
        (1, batch.encode_to_vec()),
        (7, subscribe.encode_to_vec()),
        (16, membership.encode_to_vec()),
    ] {
        seeds.push((
            "proto_requests",
            format!("valid-{which:02}"),
            Output::default().u8(which).rest(&bytes).finish(),
        ));
    }
}

fn changefeed(seeds: &mut Seeds) {
    let record = ChangeRecord {
        revision: 5,
        committed_at: NOW,
        mutations: mutations(),
    };
    let payload = serde_json::to_vec(&record).expect("a record serialises");
    for op in 0..2u8 {
        let input = Output::default()
            .u8(0)
            .u64(5)
            .u8(op)
            .u16(33)
            .u8(b'9')
            .field(&payload)
            .finish();
        seeds.push(("changefeed", format!("record-op{op}"), input));
    }
    let signed = origin_ring().sign(CONTEXT_CHANGE_RECORD, payload.clone());
    for (name, message) in [
        ("records", FeedMessage::Records(vec![(5, signed.clone())])),
        (
            "heartbeat",
            FeedMessage::Heartbeat {
                head_revision: 9,
                origin_time: NOW,
            },
        ),
        ("chunk", FeedMessage::SnapshotChunk(signed)),
    ] {
        let wire = origin::SubscribeResponse::from(message).encode_to_vec();
        seeds.push((
            "changefeed",
            format!("message-{name}"),
            Output::default().u8(1).rest(&wire).finish(),
        ));
    }
    let chunk = serde_json::json!({
        "revision": 5, "index": 0, "last": true, "mutations": mutations(),
    });
    let chunk = serde_json::to_vec(&chunk).expect("a chunk serialises");
    seeds.push((
        "changefeed",
        "snapshot-chunk".into(),
        Output::default().u8(2).rest(&chunk).finish(),
    ));
}

fn raft_log(seeds: &mut Seeds) {
    type RegionEntry = Entry<TypeConfig<RegionLogic>>;
    let log_id = LogId::new(CommittedLeaderId::new(3, 1), 17);
    let nodes: BTreeMap<u64, BasicNode> = (1..=3)
        .map(|id| {
            (
                id,
                BasicNode {
                    addr: format!("10.0.0.{id}:7000"),
                },
            )
        })
        .collect();
    let voters: BTreeSet<u64> = [1, 2, 3].into_iter().collect();
    let command = RegionCommand::OriginContact {
        head_revision: 9,
        heard_at: NOW,
    };
    let apply = RegionCommand::ApplyChanges {
        records: vec![ChangeRecord {
            revision: 5,
            committed_at: NOW,
            mutations: mutations(),
        }],
        heard_at: NOW,
    };
    let entries: Vec<RegionEntry> = vec![
        Entry {
            log_id,
            payload: EntryPayload::Blank,
        },
        Entry {
            log_id,
            payload: EntryPayload::Membership(Membership::new(vec![voters], nodes)),
        },
        Entry {
            log_id,
            payload: EntryPayload::Normal(vec![command.clone(), apply.clone()]),
        },
    ];
    let mut add = |which: u8, name: &str, bytes: Vec<u8>| {
        seeds.push((
            "raft_log",
            format!("{which:02}-{name}"),
            Output::default().u8(which).rest(&bytes).finish(),
        ));
    };
    for (i, entry) in entries.iter().enumerate() {
        add(1, &format!("entry{i}"), json(entry));
    }
    let vote = Vote::new_committed(3, 1);
    add(
        3,
        "append",
        json(&AppendEntriesRequest::<TypeConfig<RegionLogic>> {
            vote,
            prev_log_id: Some(log_id),
            entries,
            leader_commit: Some(log_id),
        }),
    );
    add(
        5,
        "vote-request",
        json(&VoteRequest::new(vote, Some(log_id))),
    );
    add(
        6,
        "vote-response",
        json(&VoteResponse::new(vote, Some(log_id), true)),
    );
    add(8, "vote", json(&vote));
    add(10, "command", json(&apply));
    add(10, "command-contact", json(&command));
    add(13, "built", b"\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f\x10\x11\x12\x13\x14\x15\x16\x17\x18\x19\x1a".to_vec());
}

fn json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("a Raft value serialises")
}

fn raft_snapshot(seeds: &mut Seeds) {
    let mut snapshot = SNAPSHOT_MAGIC.to_vec();
    encode_pair(&mut snapshot, b"region/head", b"42");
    encode_pair(&mut snapshot, b"origin/account/acme", br#"{"id":"acme"}"#);
    encode_pair(&mut snapshot, b"empty", b"");
    seeds.push((
        "raft_snapshot",
        "valid".into(),
        Output::default().u8(1).u16(0).rest(&snapshot).finish(),
    ));
    seeds.push((
        "raft_snapshot",
        "empty".into(),
        Output::default().u8(1).u16(0).finish(),
    ));
    seeds.push((
        "raft_snapshot",
        "pairs".into(),
        Output::default()
            .u8(0)
            .u16(11)
            .rest(b"\x03\x02ab\x01c\x05hello\x02\x00xyz")
            .finish(),
    ));
}

fn geo_database(seeds: &mut Seeds) {
    let mut addresses = Vec::new();
    for ip in [
        "8.8.8.8",
        "1.1.1.1",
        "81.2.69.142",
        "2001:4860:4860::8888",
        "::ffff:81.2.69.160",
    ] {
        let ip: std::net::IpAddr = ip.parse().expect("an address");
        let v6 = match ip {
            std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            std::net::IpAddr::V6(v6) => v6,
        };
        addresses.extend_from_slice(&v6.octets());
    }
    let city = tollgate_geo::fixtures::demo_city().expect("the demo city database");
    let anonymous =
        tollgate_geo::fixtures::demo_anonymous_ip().expect("the demo anonymous IP database");
    seeds.push((
        "geo_database",
        "demo-city".into(),
        Output::default()
            .u8(0)
            .field(&addresses)
            .rest(&city)
            .finish(),
    ));
    seeds.push((
        "geo_database",
        "demo-anonymous".into(),
        Output::default()
            .u8(1)
            .field(&addresses)
            .rest(&anonymous)
            .finish(),
    ));
    seeds.push((
        "geo_database",
        "city-as-anonymous".into(),
        Output::default()
            .u8(1)
            .field(&addresses)
            .rest(&city)
            .finish(),
    ));
}

fn node_config(seeds: &mut Seeds) {
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/config");
    for role in ["origin", "region"] {
        let text =
            std::fs::read(deploy.join(format!("{role}.example.toml"))).expect("an example config");
        seeds.push((
            "node_config",
            format!("{role}-example"),
            Output::default().field(b"").rest(&text).finish(),
        ));
        let env = b"TOLLGATE_NODE_ID=7\nTOLLGATE_LIMITS_CONCURRENCY_MAX=64\nTOLLGATE_RAFT_PORT=1\n";
        seeds.push((
            "node_config",
            format!("{role}-env"),
            Output::default().field(env).rest(&text).finish(),
        ));
    }
}

fn http_check_body(seeds: &mut Seeds) {
    let check = serde_json::json!({
        "account": "acme", "subject": "alice", "feature": "export", "consume": 1,
        "location": {"country": "DE", "continent": "EU", "subdivisions": ["DE-BE"], "anonymous_network": false},
        "at_least_revision": 5, "idempotency_key": "k-1", "explain": true,
    });
    let ip = serde_json::json!({"account": "acme", "feature": "export", "ip": "81.2.69.142"});
    let batch = serde_json::json!({"checks": [check.clone(), ip.clone()], "at_least_revision": 3});
    for (name, mode, body) in [
        ("check", 0u8, &check),
        ("check-ip", 0, &ip),
        ("batch", 1, &batch),
    ] {
        let body = serde_json::to_vec(body).expect("a body serialises");
        seeds.push((
            "http_check_body",
            name.into(),
            Output::default().u8(mode).rest(&body).finish(),
        ));
    }
}

fn seeds() -> Seeds {
    let mut seeds = Seeds::new();
    token(&mut seeds);
    license_token(&mut seeds);
    region_certificate_seeds(&mut seeds);
    key_set(&mut seeds);
    sealed_keys(&mut seeds);
    proto_requests(&mut seeds);
    changefeed(&mut seeds);
    raft_log(&mut seeds);
    raft_snapshot(&mut seeds);
    geo_database(&mut seeds);
    node_config(&mut seeds);
    http_check_body(&mut seeds);
    let _ = region_secret();
    seeds
}

#[test]
fn seeds_are_checked_in_and_pass_their_targets() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    let update = std::env::var_os("TOLLGATE_UPDATE_FUZZ_CORPUS").is_some_and(|v| v == "1");
    let mut missing = Vec::new();
    for (target, name, bytes) in seeds() {
        let (_, run) = TARGETS
            .iter()
            .find(|(t, _)| *t == target)
            .expect("a seed for a known target");
        run(&bytes);
        let path = corpus.join(target).join(format!("seed-{name}"));
        if update {
            std::fs::create_dir_all(path.parent().expect("a corpus directory"))
                .expect("create the corpus directory");
            std::fs::write(&path, &bytes).expect("write a seed");
        } else if !path.is_file() {
            // Not compared byte for byte: sealing draws a random nonce.
            missing.push(path.display().to_string());
        }
    }
    assert!(
        missing.is_empty(),
        "seeds missing (generate them: TOLLGATE_UPDATE_FUZZ_CORPUS=1 cargo test -p tollgate-fuzz --test corpus):\n{}",
        missing.join("\n")
    );
}
