//! The origin's signing keys as replicated state: the first ring once,
//! rotation and retirement audited, and every proposal that would leave a
//! node unable to open the ring refused with nothing written.

use tollgate_model::UnixSeconds;
use tollgate_origin::keys;
use tollgate_origin::*;
use tollgate_raft::{ApplyContext, MemState};
use tollgate_signing::{KeyId, KeyStatus, SealKey, SealedKey};

const NOW: UnixSeconds = UnixSeconds(1_795_821_662);

struct Origin {
    state: MemState,
}

impl Origin {
    fn apply(&mut self, op: Op) -> OriginResponse {
        let ctx = ApplyContext {
            log_index: 1,
            term: 1,
            position_in_entry: 0,
        };
        let cmd = OriginCommand {
            actor: "key-ops".into(),
            at: NOW,
            reason: Some("quarterly rotation".into()),
            op,
        };
        self.state
            .apply(&OriginLogic, &ctx, &cmd)
            .expect("reads never fail in memory")
    }

    fn committed(&mut self, op: Op) -> u64 {
        match self.apply(op) {
            OriginResponse::Committed { revision, .. } => revision,
            other => panic!("expected a commit, got {other:?}"),
        }
    }

    fn rejected(&mut self, op: Op, code: RejectCode, needle: &str) {
        let before = self.state.clone();
        match self.apply(op) {
            OriginResponse::Rejected(r) => {
                assert_eq!(r.code, code, "{}", r.message);
                assert!(r.message.contains(needle), "{needle:?} in {:?}", r.message);
            }
            other => panic!("expected a rejection, got {other:?}"),
        }
        assert_eq!(self.state, before, "a refused command writes nothing");
    }

    fn ring(&self) -> SigningRing {
        serde_json::from_slice(self.state.data.get(keys::SIGNING_RING).expect("a ring")).unwrap()
    }

    fn audit(&self, revision: u64) -> AuditRecord {
        serde_json::from_slice(self.state.data.get(&keys::audit(revision)).unwrap()).unwrap()
    }
}

fn origin_with_ring(seal: &SealKey) -> (Origin, KeyId) {
    let mut o = Origin {
        state: MemState::default(),
    };
    let first = SealedKey::generate(NOW, seal).unwrap();
    let kid = first.kid.clone();
    let rev = o.committed(Op::InitSigningKeys { keys: vec![first] });
    let audit = o.audit(rev);
    assert_eq!(audit.action, "signing_key.init");
    assert_eq!(audit.target, format!("signing-key/{kid}"));
    assert_eq!(o.ring().revision, rev);
    (o, kid)
}

#[test]
fn the_first_ring_is_made_once_and_later_proposals_change_nothing() {
    let seal = SealKey::generate().unwrap();
    let (mut o, kid) = origin_with_ring(&seal);
    let before = o.state.clone();
    // Every node may propose at start; only the first commit counts.
    match o.apply(Op::InitSigningKeys {
        keys: vec![SealedKey::generate(NOW, &seal).unwrap()],
    }) {
        OriginResponse::Unchanged { revision, note, .. } => {
            assert_eq!(revision, 1);
            assert!(note.contains("already has signing keys"), "{note}");
        }
        other => panic!("expected Unchanged, got {other:?}"),
    }
    assert_eq!(o.state, before);
    assert_eq!(o.ring().keys[0].kid, kid);
}

#[test]
fn a_first_ring_that_no_node_could_use_is_refused() {
    let seal = SealKey::generate().unwrap();
    let other = SealKey::generate().unwrap();
    let mut o = Origin {
        state: MemState::default(),
    };
    let a = SealedKey::generate(NOW, &seal).unwrap();
    let mut b = SealedKey::generate(NOW, &other).unwrap();
    o.rejected(
        Op::InitSigningKeys { keys: vec![] },
        RejectCode::Invalid,
        "1..=",
    );
    b.status = KeyStatus::Retired;
    o.rejected(
        Op::InitSigningKeys {
            keys: vec![a.clone(), b.clone()],
        },
        RejectCode::Invalid,
        "one seal key seals a ring",
    );
    let mut retired = a.clone();
    retired.status = KeyStatus::Retired;
    o.rejected(
        Op::InitSigningKeys {
            keys: vec![retired],
        },
        RejectCode::Invalid,
        "exactly one active key",
    );
    o.rejected(
        Op::InitSigningKeys {
            keys: vec![a.clone(), a.clone()],
        },
        RejectCode::Invalid,
        "appears twice",
    );
    let mut wrong_id = a.clone();
    wrong_id.public_key = SealedKey::generate(NOW, &seal).unwrap().public_key;
    o.rejected(
        Op::InitSigningKeys {
            keys: vec![wrong_id],
        },
        RejectCode::Invalid,
        "is not its public key's",
    );
}

#[test]
fn rotation_and_retirement_are_audited_changes_of_the_ring() {
    let seal = SealKey::generate().unwrap();
    let (mut o, first) = origin_with_ring(&seal);
    let next = SealedKey::generate(NOW, &seal).unwrap();
    let rev = o.committed(Op::RotateSigningKey {
        key: next.clone(),
        overlap_seconds: 3600,
    });
    let ring = o.ring();
    assert_eq!(ring.revision, rev);
    assert_eq!(
        ring.keys[0].status,
        KeyStatus::Overlap {
            until: UnixSeconds(NOW.0 + 3600)
        }
    );
    assert_eq!(
        (&ring.keys[1].kid, ring.keys[1].status),
        (&next.kid, KeyStatus::Active)
    );
    let audit = o.audit(rev);
    assert_eq!(
        (
            audit.action.as_str(),
            audit.actor.as_str(),
            audit.target.clone()
        ),
        (
            "signing_key.rotate",
            "key-ops",
            format!("signing-key/{}", next.kid)
        )
    );
    assert_eq!(audit.reason.as_deref(), Some("quarterly rotation"));
    // No secret in the clear reaches the change record regions read.
    let change: tollgate_model::ChangeRecord =
        serde_json::from_slice(o.state.data.get(&keys::change(rev)).unwrap()).unwrap();
    assert!(change.mutations.is_empty(), "keys never leave the origin");

    o.rejected(
        Op::RetireSigningKey {
            kid: next.kid.clone(),
        },
        RejectCode::Conflict,
        "active key",
    );
    let rev = o.committed(Op::RetireSigningKey { kid: first.clone() });
    assert_eq!(o.ring().keys[0].status, KeyStatus::Retired);
    assert_eq!(o.audit(rev).action, "signing_key.retire");
    // A retry of the retirement is answered, and writes nothing.
    let before = o.state.clone();
    assert!(matches!(
        o.apply(Op::RetireSigningKey { kid: first }),
        OriginResponse::Unchanged { .. }
    ));
    assert_eq!(o.state, before);
    let unknown = SealedKey::generate(NOW, &seal).unwrap().kid;
    o.rejected(
        Op::RetireSigningKey { kid: unknown },
        RejectCode::NotFound,
        "no key",
    );
}

#[test]
fn a_rotation_no_node_could_open_or_that_breaks_a_bound_is_refused() {
    let seal = SealKey::generate().unwrap();
    let (mut o, _) = origin_with_ring(&seal);
    // A node given another seal key would add a key the others cannot open.
    let stranger = SealedKey::generate(NOW, &SealKey::generate().unwrap()).unwrap();
    o.rejected(
        Op::RotateSigningKey {
            key: stranger,
            overlap_seconds: 0,
        },
        RejectCode::Conflict,
        "same seal key",
    );
    let key = SealedKey::generate(NOW, &seal).unwrap();
    o.rejected(
        Op::RotateSigningKey {
            key: key.clone(),
            overlap_seconds: ROTATION_OVERLAP_MAX_SECONDS + 1,
        },
        RejectCode::Invalid,
        "overlap_seconds",
    );
    let mut damaged = key.clone();
    damaged.sealed_secret.truncate(10);
    o.rejected(
        Op::RotateSigningKey {
            key: damaged,
            overlap_seconds: 0,
        },
        RejectCode::Invalid,
        "sealed secret",
    );
    o.committed(Op::RotateSigningKey {
        key: key.clone(),
        overlap_seconds: 0,
    });
    o.rejected(
        Op::RotateSigningKey {
            key,
            overlap_seconds: 0,
        },
        RejectCode::Conflict,
        "already in the ring",
    );
}

#[test]
fn nothing_rotates_before_the_first_ring() {
    let seal = SealKey::generate().unwrap();
    let mut o = Origin {
        state: MemState::default(),
    };
    o.rejected(
        Op::RotateSigningKey {
            key: SealedKey::generate(NOW, &seal).unwrap(),
            overlap_seconds: 0,
        },
        RejectCode::NotFound,
        "no signing keys yet",
    );
}
