//! Portal users and sessions at the origin: what apply keeps, refuses and
//! ends. A create never replaces; a put never moves a user to another
//! account nor touches the password, the wrong-password count or the
//! sessions; sessions are bounded and end with a new password, a disabled
//! user or a deleted one; wrong passwords lock a user out.

use tollgate_model::*;
use tollgate_origin::portal::*;
use tollgate_origin::*;
use tollgate_raft::{ApplyContext, MemState, ReadState};

const NOW: UnixSeconds = UnixSeconds(1_795_821_662);
const CTX: ApplyContext = ApplyContext {
    log_index: 0,
    term: 0,
    position_in_entry: 0,
};
const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA";

fn run_at(state: &mut MemState, at: UnixSeconds, op: Op) -> OriginResponse {
    let cmd = OriginCommand {
        actor: "tester".into(),
        at,
        reason: None,
        op,
    };
    state.apply(&OriginLogic, &CTX, &cmd).unwrap()
}

fn run(state: &mut MemState, op: Op) -> OriginResponse {
    run_at(state, NOW, op)
}

fn committed(answer: OriginResponse) {
    assert!(
        matches!(answer, OriginResponse::Committed { .. }),
        "not committed: {answer:?}"
    );
}

fn rejected(answer: OriginResponse, code: RejectCode) -> String {
    match answer {
        OriginResponse::Rejected(r) if r.code == code => r.message,
        other => panic!("expected {code:?}, got {other:?}"),
    }
}

fn user(id: &str, account: Option<&str>) -> PortalUser {
    PortalUser {
        id: id.into(),
        name: "Someone".into(),
        role: if account.is_some() {
            PortalRole::CustomerAdmin
        } else {
            PortalRole::VendorAdmin
        },
        account: account.map(|a| AccountId::try_from(a.to_string()).unwrap()),
        password_hash: Some(HASH.into()),
        oidc_subject: None,
        invite: None,
        failed_sign_ins: 0,
        locked_until: None,
        disabled: false,
        created_at: NOW,
        sessions: Vec::new(),
    }
}

fn stored(state: &MemState, id: &str) -> Option<PortalUser> {
    state
        .get(&keys::portal_user(id))
        .unwrap()
        .map(|b| serde_json::from_slice(&b).unwrap())
}

fn session(n: u8, user: &str) -> PortalSession {
    PortalSession {
        id: format!("{n:02x}").repeat(32),
        user: user.into(),
        created_at: NOW,
        expires_at: NOW.plus_seconds(3_600),
        csrf: "c".repeat(43),
        method: SignInMethod::Password,
    }
}

fn has_session(state: &MemState, n: u8) -> bool {
    state
        .get(&keys::portal_session(&format!("{n:02x}").repeat(32)))
        .unwrap()
        .is_some()
}

fn with_accounts() -> MemState {
    let mut state = MemState::default();
    for a in ["acme", "globex"] {
        committed(run(
            &mut state,
            Op::PutAccount(Account {
                id: AccountId::try_from(a.to_string()).unwrap(),
                name: a.into(),
                status: Default::default(),
            }),
        ));
    }
    state
}

#[test]
fn a_create_never_replaces_and_a_put_keeps_what_apply_owns() {
    let mut state = with_accounts();
    committed(run(
        &mut state,
        Op::CreatePortalUser(user("a@acme.example", Some("acme"))),
    ));
    let again = rejected(
        run(
            &mut state,
            Op::CreatePortalUser(user("a@acme.example", Some("acme"))),
        ),
        RejectCode::Conflict,
    );
    assert!(again.contains("already exists"), "{again}");
    // A wrong password is counted; a put (a rename) keeps the count, the
    // hash and the sessions, whatever it carries.
    committed(run(
        &mut state,
        Op::PortalSignInFailed {
            user: "a@acme.example".into(),
            lock_after: 5,
            lock_seconds: 60,
        },
    ));
    committed(run(
        &mut state,
        Op::StartPortalSession(session(1, "a@acme.example")),
    ));
    let mut renamed = user("a@acme.example", Some("acme"));
    renamed.name = "Renamed".into();
    renamed.password_hash = Some("$argon2id$v=19$other".into());
    renamed.failed_sign_ins = 0;
    committed(run(&mut state, Op::PutPortalUser(renamed)));
    let kept = stored(&state, "a@acme.example").unwrap();
    assert_eq!(kept.name, "Renamed");
    assert_eq!(kept.password_hash.as_deref(), Some(HASH));
    assert_eq!(kept.sessions.len(), 1);
    assert!(has_session(&state, 1));
    // Never to another account, nor to the vendor.
    for account in [Some("globex"), None] {
        let mut moved = user("a@acme.example", account);
        if account.is_none() {
            moved.role = PortalRole::VendorAdmin;
        }
        rejected(
            run(&mut state, Op::PutPortalUser(moved)),
            RejectCode::Conflict,
        );
    }
    // A customer role needs its account, and the account must exist.
    rejected(
        run(
            &mut state,
            Op::CreatePortalUser(user("b@acme.example", Some("nosuch"))),
        ),
        RejectCode::NotFound,
    );
    let mut orphan = user("c@acme.example", None);
    orphan.role = PortalRole::CustomerMember;
    rejected(
        run(&mut state, Op::CreatePortalUser(orphan)),
        RejectCode::Invalid,
    );
    let mut plain = user("d@acme.example", Some("acme"));
    plain.password_hash = Some("not a phc string".into());
    rejected(
        run(&mut state, Op::CreatePortalUser(plain)),
        RejectCode::Invalid,
    );
}

#[test]
fn wrong_passwords_lock_out_and_a_locked_user_gets_no_session() {
    let mut state = with_accounts();
    committed(run(
        &mut state,
        Op::CreatePortalUser(user("a@acme.example", Some("acme"))),
    ));
    let failed = || Op::PortalSignInFailed {
        user: "a@acme.example".into(),
        lock_after: 3,
        lock_seconds: 600,
    };
    committed(run(&mut state, failed()));
    committed(run(&mut state, failed()));
    assert_eq!(stored(&state, "a@acme.example").unwrap().locked_until, None);
    committed(run(&mut state, failed()));
    let locked = stored(&state, "a@acme.example").unwrap();
    assert_eq!(locked.locked_until, Some(NOW.plus_seconds(600)));
    // While locked: no session, and more failures do not move the lock.
    rejected(
        run(
            &mut state,
            Op::StartPortalSession(session(1, "a@acme.example")),
        ),
        RejectCode::Conflict,
    );
    assert!(!has_session(&state, 1));
    assert!(matches!(
        run(&mut state, failed()),
        OriginResponse::Unchanged { .. }
    ));
    // After the lock: a session, and the count starts again.
    let later = NOW.plus_seconds(601);
    committed(run_at(
        &mut state,
        later,
        Op::StartPortalSession(PortalSession {
            expires_at: later.plus_seconds(3_600),
            ..session(1, "a@acme.example")
        }),
    ));
    let signed_in = stored(&state, "a@acme.example").unwrap();
    assert_eq!(
        (signed_in.failed_sign_ins, signed_in.locked_until),
        (0, None)
    );
    // A proposer cannot stamp a lockout that never ends.
    rejected(
        run(
            &mut state,
            Op::PortalSignInFailed {
                user: "a@acme.example".into(),
                lock_after: 0,
                lock_seconds: 60,
            },
        ),
        RejectCode::Invalid,
    );
}

#[test]
fn sessions_are_bounded_and_end_with_a_new_password_a_disabled_or_deleted_user() {
    let mut state = with_accounts();
    committed(run(
        &mut state,
        Op::CreatePortalUser(user("a@acme.example", Some("acme"))),
    ));
    for n in 0..(SESSIONS_PER_USER_MAX as u8 + 2) {
        committed(run(
            &mut state,
            Op::StartPortalSession(session(n, "a@acme.example")),
        ));
    }
    // The oldest two ended to keep the bound.
    assert!(!has_session(&state, 0) && !has_session(&state, 1));
    assert!(has_session(&state, 2));
    assert_eq!(
        stored(&state, "a@acme.example").unwrap().sessions.len(),
        SESSIONS_PER_USER_MAX
    );
    // A session that is not one's own token hash, or too long, is refused.
    let mut odd = session(99, "a@acme.example");
    odd.id = "not-a-hash".into();
    rejected(
        run(&mut state, Op::StartPortalSession(odd)),
        RejectCode::Invalid,
    );
    let mut long = session(98, "a@acme.example");
    long.expires_at = NOW.plus_seconds(60 * 24 * 3600);
    rejected(
        run(&mut state, Op::StartPortalSession(long)),
        RejectCode::Invalid,
    );
    // A new password keeps only the session that set it.
    let keep = format!("{:02x}", 5u8).repeat(32);
    committed(run(
        &mut state,
        Op::SetPortalPassword {
            user: "a@acme.example".into(),
            password_hash: HASH.into(),
            keep_session: Some(keep),
        },
    ));
    assert!(has_session(&state, 5));
    assert!(!has_session(&state, 6));
    // Sign-out ends one; disabling ends the rest; deleting removes all.
    committed(run(
        &mut state,
        Op::EndPortalSession {
            id: format!("{:02x}", 5u8).repeat(32),
        },
    ));
    assert!(!has_session(&state, 5));
    committed(run(
        &mut state,
        Op::StartPortalSession(session(7, "a@acme.example")),
    ));
    let mut disabled = user("a@acme.example", Some("acme"));
    disabled.disabled = true;
    committed(run(&mut state, Op::PutPortalUser(disabled)));
    assert!(!has_session(&state, 7));
    rejected(
        run(
            &mut state,
            Op::StartPortalSession(session(8, "a@acme.example")),
        ),
        RejectCode::Conflict,
    );
    committed(run(
        &mut state,
        Op::DeletePortalUser {
            id: "a@acme.example".into(),
        },
    ));
    assert!(stored(&state, "a@acme.example").is_none());
    assert!(state
        .get(&keys::account_portal_user(
            &AccountId::try_from("acme".to_string()).unwrap(),
            "a@acme.example"
        ))
        .unwrap()
        .is_none());
}

#[test]
fn portal_commands_are_in_the_accounts_own_audit_trail() {
    let mut state = with_accounts();
    committed(run(
        &mut state,
        Op::CreatePortalUser(user("a@acme.example", Some("acme"))),
    ));
    committed(run(
        &mut state,
        Op::StartPortalSession(session(1, "a@acme.example")),
    ));
    committed(run(
        &mut state,
        Op::CreatePortalUser(user("v@vendor.example", None)),
    ));
    let acme = AccountId::try_from("acme".to_string()).unwrap();
    let prefix = keys::account_audit_prefix(&acme);
    let listed: Vec<u64> = state
        .data
        .range(prefix.as_bytes().to_vec()..)
        .take_while(|(k, _)| k.starts_with(prefix.as_bytes()))
        .map(|(_, v)| serde_json::from_slice(v).unwrap())
        .collect();
    // PutAccount, create, sign-in: newest first; the vendor's user is not
    // acme's.
    assert_eq!(listed.len(), 3, "{listed:?}");
    assert!(listed.windows(2).all(|w| w[0] > w[1]), "{listed:?}");
}
