//! API keys' owners, as apply enforces them whoever proposed the command:
//! an account's key exists only for an existing account and only with the
//! scopes an account key may hold; keys stored before owners existed read
//! as the tenant's.

use tollgate_model::*;
use tollgate_origin::keys;
use tollgate_origin::*;
use tollgate_raft::{ApplyContext, MemState};

const NOW: UnixSeconds = UnixSeconds(1_795_821_662);

fn apply(state: &mut MemState, op: Op) -> OriginResponse {
    let ctx = ApplyContext {
        log_index: 1,
        term: 1,
        position_in_entry: 0,
    };
    let cmd = OriginCommand {
        actor: "key-admin".into(),
        at: NOW,
        reason: None,
        op,
    };
    state
        .apply(&OriginLogic, &ctx, &cmd)
        .expect("reads never fail in memory")
}

fn key(id: &str, owner: KeyOwner, scopes: &[Scope]) -> ApiKeyRecord {
    ApiKeyRecord {
        id: id.into(),
        name: "portal".into(),
        secret_sha256: "ab".repeat(32),
        scopes: scopes.iter().copied().collect(),
        created_at: NOW,
        revoked: false,
        owner,
    }
}

fn acme() -> KeyOwner {
    KeyOwner::Account(AccountId::new("acme").unwrap())
}

/// A state holding account acme.
fn with_acme() -> MemState {
    let mut state = MemState::default();
    let r = apply(
        &mut state,
        Op::PutAccount(Account {
            id: AccountId::new("acme").unwrap(),
            name: "Acme".into(),
            status: AccountStatus::default(),
        }),
    );
    assert!(matches!(r, OriginResponse::Committed { .. }), "{r:?}");
    state
}

fn assert_rejected(state: &mut MemState, op: Op, code: RejectCode, needle: &str) {
    let before = state.clone();
    match apply(state, op) {
        OriginResponse::Rejected(r) => {
            assert_eq!(r.code, code, "{}", r.message);
            assert!(r.message.contains(needle), "{needle:?} in {:?}", r.message);
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert_eq!(*state, before, "a refused key writes nothing");
}

#[test]
fn an_account_key_holds_only_the_account_scopes() {
    let mut state = with_acme();
    for scope in [
        Scope::Admin,
        Scope::CatalogWrite,
        Scope::OrdersWrite,
        Scope::AccessApprove,
    ] {
        assert_rejected(
            &mut state,
            Op::PutApiKey(key("key-portal", acme(), &[Scope::Read, scope])),
            RejectCode::Invalid,
            scope.name(),
        );
    }
    let portal = key(
        "key-portal",
        acme(),
        &[Scope::Read, Scope::AccountsWrite, Scope::AccessRequest],
    );
    let r = apply(&mut state, Op::PutApiKey(portal.clone()));
    assert!(matches!(r, OriginResponse::Committed { .. }), "{r:?}");
    let stored: ApiKeyRecord =
        serde_json::from_slice(state.data.get(&keys::api_key("key-portal")).unwrap()).unwrap();
    assert_eq!(stored, portal);
    assert_eq!(stored.account().map(AccountId::as_str), Some("acme"));
}

#[test]
fn an_account_key_needs_its_account_to_exist() {
    let mut state = with_acme();
    assert_rejected(
        &mut state,
        Op::PutApiKey(key(
            "key-ghost",
            KeyOwner::Account(AccountId::new("globex").unwrap()),
            &[Scope::Read],
        )),
        RejectCode::NotFound,
        "globex",
    );
}

#[test]
fn tenant_keys_hold_any_scope_and_old_keys_are_the_tenants() {
    let mut state = MemState::default();
    let admin = key("key-admin", KeyOwner::Tenant, &[Scope::Admin]);
    let r = apply(&mut state, Op::PutApiKey(admin));
    assert!(matches!(r, OriginResponse::Committed { .. }), "{r:?}");

    // A key as stored before keys had owners.
    let old = r#"{"id":"key-old","name":"CRM","secret_sha256":"abababababababababababababababababababababababababababababababab",
        "scopes":["orders:write"],"created_at":1795821662,"revoked":false}"#;
    let old: ApiKeyRecord = serde_json::from_str(old).unwrap();
    assert_eq!(old.owner, KeyOwner::Tenant);
    assert_eq!(old.account(), None);
    let owned = serde_json::to_value(key("k", acme(), &[Scope::Read])).unwrap();
    assert_eq!(owned["owner"], serde_json::json!({"account": "acme"}));
    let tenant = serde_json::to_value(key("k", KeyOwner::Tenant, &[Scope::Read])).unwrap();
    assert_eq!(tenant["owner"], "tenant");
}
