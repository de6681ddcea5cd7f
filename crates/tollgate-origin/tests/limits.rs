//! The limits on how many objects the origin holds: subjects per account
//! and catalog entries. Each is enforced at the production constant: the
//! N-th new object commits, the (N+1)-th is refused with a message naming
//! the limit and writes nothing, and replacing an object already held still
//! commits. The counts behind them stay equal to what the state holds.

use proptest::prelude::*;
use tollgate_model::limits::{CATALOG_ENTRIES_MAX, SUBJECTS_PER_ACCOUNT_MAX};
use tollgate_model::*;
use tollgate_origin::keys;
use tollgate_origin::*;
use tollgate_raft::{ApplyContext, MemState};

const NOW: UnixSeconds = UnixSeconds(1_795_821_662);
const CTX: ApplyContext = ApplyContext {
    log_index: 1,
    term: 1,
    position_in_entry: 0,
};

fn id<T: TryFrom<String, Error = ModelError>>(s: &str) -> T {
    T::try_from(s.to_string()).unwrap()
}

/// What a row expects of its command.
#[derive(Debug, Clone, Copy)]
enum Expect<'a> {
    Commit,
    Refuse(RejectCode, &'a str),
}

fn apply(state: &mut MemState, op: Op) -> OriginResponse {
    let cmd = OriginCommand {
        actor: "key-admin".into(),
        at: NOW,
        reason: None,
        op,
    };
    state
        .apply(&OriginLogic, &CTX, &cmd)
        .expect("reads never fail in memory")
}

/// Applies `op` and checks it did what `expect` says; a refusal must write
/// nothing.
fn check(state: &mut MemState, row: &str, op: Op, expect: Expect<'_>) {
    let before = state.clone();
    let response = apply(state, op);
    match (expect, &response) {
        (Expect::Commit, OriginResponse::Committed { .. }) => {}
        (Expect::Refuse(code, needle), OriginResponse::Rejected(r)) => {
            assert_eq!(r.code, code, "{row}: {}", r.message);
            assert!(
                r.message.contains(needle),
                "{row}: expected {needle:?} in {:?}",
                r.message
            );
            assert!(*state == before, "{row}: a refused command writes nothing");
        }
        (expect, response) => panic!("{row}: expected {expect:?}, got {response:?}"),
    }
}

fn commit(state: &mut MemState, op: Op) {
    let action = op.action();
    match apply(state, op) {
        OriginResponse::Committed { .. } => {}
        other => panic!("{action}: expected a commit, got {other:?}"),
    }
}

fn read_u64(state: &MemState, key: &[u8]) -> u64 {
    state
        .data
        .get(key)
        .map_or(0, |v| serde_json::from_slice(v).unwrap())
}

fn keys_under(state: &MemState, prefix: &str) -> u64 {
    state
        .data
        .range(prefix.as_bytes().to_vec()..)
        .take_while(|(k, _)| k.starts_with(prefix.as_bytes()))
        .count() as u64
}

fn account(name: &str) -> Op {
    Op::PutAccount(Account {
        id: id(name),
        name: name.into(),
        status: AccountStatus::Active,
    })
}

fn subject(account: &str, name: &str, role: Option<&str>) -> Op {
    Op::PutSubject(Subject {
        id: id(name),
        account: id(account),
        kind: SubjectKind::User,
        roles: role.into_iter().map(id).collect(),
        groups: Default::default(),
    })
}

fn product(name: &str, display: &str) -> Op {
    Op::PutProduct(Product {
        id: id(name),
        name: display.into(),
    })
}

fn feature(name: &str, product: &str) -> Op {
    Op::PutFeature(Feature {
        id: id(name),
        product: id(product),
        name: name.into(),
        kind: FeatureKind::Boolean,
        geo_rule: GeoRule::default(),
        offline_policy: None,
        config: ConfigValues::new(),
        auto_approve: None,
    })
}

fn plan(name: &str, tier: u32) -> Op {
    Op::PutPlan(Plan {
        id: id(name),
        product: id("studio"),
        name: name.into(),
        tier,
        features: vec![FeatureGrant::new(id("export"))],
        included_seats: None,
        geo_rule: GeoRule::default(),
        offline_policy: None,
    })
}

fn addon(name: &str, display: &str) -> Op {
    Op::PutAddon(Addon {
        id: id(name),
        product: id("studio"),
        name: display.into(),
        features: vec![FeatureGrant::new(id("export"))],
        compatible_plans: Default::default(),
        geo_rule: GeoRule::default(),
        offline_policy: None,
        auto_approve: None,
    })
}

fn sku(name: &str, display: &str) -> Op {
    Op::PutSku(Sku {
        id: id(name),
        name: display.into(),
        target: SkuTarget::Plan(id("pro")),
        quantity: SkuQuantity::NamedSeats,
    })
}

fn policy(grace_seconds: u64) -> Op {
    Op::SetDefaultOfflinePolicy(OfflinePolicy {
        offline_grace_seconds: grace_seconds,
        after_grace: AfterGrace::Deny,
    })
}

#[test]
fn an_account_holds_at_most_the_subject_limit_and_may_still_replace_one() {
    let mut state = MemState::default();
    commit(&mut state, account("acme"));
    commit(&mut state, account("globex"));
    for i in 0..SUBJECTS_PER_ACCOUNT_MAX {
        commit(&mut state, subject("acme", &format!("u-{i}"), None));
    }
    assert_eq!(
        keys_under(&state, "subject/acme/"),
        SUBJECTS_PER_ACCOUNT_MAX as u64,
        "the {SUBJECTS_PER_ACCOUNT_MAX}-th subject was accepted"
    );

    let full =
        format!("account acme already holds {SUBJECTS_PER_ACCOUNT_MAX} subjects, the maximum");
    let full = full.as_str();
    let rows = [
        (
            "a new subject past the limit",
            subject("acme", "u-new", None),
            Expect::Refuse(RejectCode::Invalid, full),
        ),
        (
            "replacing a subject the full account holds",
            subject("acme", "u-0", Some("admin")),
            Expect::Commit,
        ),
        (
            "the limit is per account",
            subject("globex", "u-new", None),
            Expect::Commit,
        ),
        (
            "other checks come first: an unknown account",
            subject("nobody", "u-new", None),
            Expect::Refuse(RejectCode::NotFound, "unknown account nobody"),
        ),
        (
            "deleting a subject makes room",
            Op::DeleteSubject {
                account: id("acme"),
                subject: id("u-1"),
            },
            Expect::Commit,
        ),
        (
            "for exactly one new subject",
            subject("acme", "u-new", None),
            Expect::Commit,
        ),
        (
            "and no more",
            subject("acme", "u-newer", None),
            Expect::Refuse(RejectCode::Invalid, full),
        ),
    ];
    for (row, op, expect) in rows {
        check(&mut state, row, op, expect);
    }
    let stored: Subject =
        serde_json::from_slice(&state.data[&keys::subject(&id("acme"), &id("u-0"))]).unwrap();
    assert!(
        stored.roles.contains(&id::<RoleName>("admin")),
        "the replacement was written"
    );
    assert_eq!(
        read_u64(&state, &keys::account_subject_count(&id("acme"))),
        keys_under(&state, "subject/acme/"),
    );
}

#[test]
fn the_catalog_holds_at_most_its_limit_and_may_still_replace_an_entry() {
    let mut state = MemState::default();
    // One object of each kind to replace (and to refer to), then products
    // up to the limit: the last of them is the N-th entry.
    commit(&mut state, product("studio", "Studio"));
    commit(&mut state, feature("export", "studio"));
    commit(&mut state, plan("pro", 2));
    commit(&mut state, addon("pack", "Pack"));
    commit(&mut state, sku("PRO", "Pro"));
    for i in 5..CATALOG_ENTRIES_MAX {
        commit(&mut state, product(&format!("p-{i}"), "Filler"));
    }
    assert_eq!(
        keys_under(&state, "catalog/"),
        CATALOG_ENTRIES_MAX as u64,
        "the {CATALOG_ENTRIES_MAX}-th entry was accepted"
    );

    let full = format!("the catalog already holds {CATALOG_ENTRIES_MAX} entries, the maximum");
    let full = full.as_str();
    let rows = [
        (
            "a new product",
            product("p-new", "New"),
            Expect::Refuse(RejectCode::Invalid, full),
        ),
        (
            "a new feature",
            feature("f-new", "studio"),
            Expect::Refuse(RejectCode::Invalid, full),
        ),
        (
            "a new plan",
            plan("p-new", 3),
            Expect::Refuse(RejectCode::Invalid, full),
        ),
        (
            "a new add-on",
            addon("a-new", "New"),
            Expect::Refuse(RejectCode::Invalid, full),
        ),
        (
            "a new SKU",
            sku("S-NEW", "New"),
            Expect::Refuse(RejectCode::Invalid, full),
        ),
        (
            "the default offline policy, set for the first time",
            policy(60),
            Expect::Refuse(RejectCode::Invalid, full),
        ),
        (
            "other checks come first: a feature of an unknown product",
            feature("f-new", "nothing"),
            Expect::Refuse(RejectCode::NotFound, "unknown product nothing"),
        ),
        (
            "replacing a product",
            product("studio", "Studio 2"),
            Expect::Commit,
        ),
        (
            "replacing a feature",
            feature("export", "studio"),
            Expect::Commit,
        ),
        ("replacing a plan", plan("pro", 5), Expect::Commit),
        (
            "replacing an add-on",
            addon("pack", "Pack 2"),
            Expect::Commit,
        ),
        ("replacing an SKU", sku("PRO", "Pro 2"), Expect::Commit),
        (
            "replacing a filler product",
            product("p-5", "Filler 2"),
            Expect::Commit,
        ),
    ];
    for (row, op, expect) in rows {
        check(&mut state, row, op, expect);
    }
    assert_eq!(
        read_u64(&state, keys::CATALOG_ENTRIES),
        CATALOG_ENTRIES_MAX as u64
    );
    assert_eq!(keys_under(&state, "catalog/"), CATALOG_ENTRIES_MAX as u64);
}

#[test]
fn the_default_offline_policy_counts_once_as_a_catalog_entry() {
    let mut state = MemState::default();
    for (row, op, count) in [
        ("first set", policy(60), 1),
        ("set again", policy(120), 1),
        ("a product", product("studio", "Studio"), 2),
        ("the product again", product("studio", "Studio 2"), 2),
    ] {
        commit(&mut state, op);
        assert_eq!(read_u64(&state, keys::CATALOG_ENTRIES), count, "{row}");
    }
}

/// One step of a random history of subjects and catalog objects, some of
/// them refused (unknown account, unknown product, unknown subject).
#[derive(Debug, Clone)]
enum Step {
    Account(usize),
    PutSubject(usize, usize),
    DeleteSubject(usize, usize),
    Product(usize),
    Feature(usize, usize),
    Policy(u64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0..3usize).prop_map(Step::Account),
        (0..3usize, 0..5usize).prop_map(|(a, s)| Step::PutSubject(a, s)),
        (0..3usize, 0..5usize).prop_map(|(a, s)| Step::DeleteSubject(a, s)),
        (0..4usize).prop_map(Step::Product),
        (0..4usize, 0..4usize).prop_map(|(f, p)| Step::Feature(f, p)),
        (0..3u64).prop_map(Step::Policy),
    ]
}

const ACCOUNTS: [&str; 3] = ["a0", "a1", "a2"];

proptest! {
    #[test]
    fn the_counts_equal_what_the_state_holds(steps in prop::collection::vec(step(), 1..60)) {
        let mut state = MemState::default();
        for step in steps {
            let op = match step {
                Step::Account(a) => account(ACCOUNTS[a]),
                Step::PutSubject(a, s) => subject(ACCOUNTS[a], &format!("u{s}"), None),
                Step::DeleteSubject(a, s) => Op::DeleteSubject {
                    account: id(ACCOUNTS[a]),
                    subject: id(&format!("u{s}")),
                },
                Step::Product(p) => product(&format!("p{p}"), "P"),
                Step::Feature(f, p) => feature(&format!("f{f}"), &format!("p{p}")),
                Step::Policy(g) => policy(g),
            };
            apply(&mut state, op);
            for a in ACCOUNTS {
                prop_assert_eq!(
                    read_u64(&state, &keys::account_subject_count(&id(a))),
                    keys_under(&state, &format!("subject/{a}/")),
                    "subjects of {}", a
                );
            }
            prop_assert_eq!(
                read_u64(&state, keys::CATALOG_ENTRIES),
                keys_under(&state, "catalog/")
            );
        }
    }
}
