//! The vendor console's account side over HTTP: searching accounts,
//! changing and granting entitlements (each change naming its revision),
//! a revision's progress to the regions, the access-request queue and
//! auto-approval rules, and orders. Every change must land in the audit
//! log as the signed-in member of staff, with the reason given.

mod common;

use common::*;
use tollgate_api::OriginStore;
use tollgate_model::*;
use tollgate_origin::keys;
use tollgate_origin::{AuditRecord, Op};

fn stored<T: serde::de::DeserializeOwned>(portal: &TestPortal, key: &[u8]) -> Option<T> {
    portal
        .store
        .get(key)
        .unwrap()
        .map(|b| serde_json::from_slice(&b).unwrap())
}

fn entitlement(portal: &TestPortal, id: &str) -> Entitlement {
    let id = EntitlementId::try_from(id.to_string()).unwrap();
    stored(portal, &keys::entitlement(&id)).expect("the entitlement exists")
}

fn audit(portal: &TestPortal, revision: u64) -> AuditRecord {
    stored(portal, &keys::audit(revision)).expect("an audit record")
}

/// The revision a change's redirect names.
fn saved_revision(answer: &Answer, account: &str) -> u64 {
    assert_eq!(answer.status, 303, "{}", answer.body);
    let location = answer.location().unwrap();
    let prefix = format!("/portal/vendor/accounts/{account}?done=changed&revision=");
    location
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("{location}"))
        .parse()
        .unwrap()
}

async fn vendor(portal: &TestPortal) -> Browser {
    let browser = Browser::new(&portal.base);
    let signed_in = browser.sign_in(VENDOR, PASSWORD).await;
    assert_eq!(signed_in.status, 303);
    browser
}

async fn api_post(portal: &TestPortal, path: &str, body: serde_json::Value) -> serde_json::Value {
    let response = reqwest::Client::new()
        .post(format!("{}{path}", portal.base))
        .bearer_auth(&portal.admin_token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "{path}: {}",
        response.status()
    );
    response.json().await.unwrap()
}

#[tokio::test]
async fn staff_find_an_account_and_every_change_names_its_revision_and_reason() {
    let portal = serve(test_config()).await;
    let browser = vendor(&portal).await;

    tracing::info!("A search matches ids and names in any case and links each account.");
    let found = browser.get("/portal/vendor?q=ACM").await;
    assert_eq!(found.status, 200, "{}", found.body);
    assert!(found.body.contains("href=\"/portal/vendor/accounts/acme\""));
    assert!(!found
        .body
        .contains("href=\"/portal/vendor/accounts/globex\""));
    let by_name = browser.get("/portal/vendor?q=glob").await;
    assert!(by_name
        .body
        .contains("href=\"/portal/vendor/accounts/globex\""));

    tracing::info!("The account page shows each entitlement with its revision.");
    let page = browser.get("/portal/vendor/accounts/acme").await;
    assert_eq!(page.status, 200, "{}", page.body);
    let before = entitlement(&portal, "acme-pro");
    assert!(page.body.contains(&format!(
        "href=\"/portal/vendor/revisions/{}\"",
        before.revision
    )));
    assert!(page.body.contains("href=\"/portal/a/acme\""));
    assert!(page.body.contains("href=\"/portal/a/acme/audit\""));
    let csrf = page.csrf();
    let change = "/portal/vendor/accounts/acme/change";

    tracing::info!("Suspending records the reason and the member of staff.");
    let suspended = browser
        .post(
            change,
            &[
                ("csrf", &csrf),
                ("entitlement", "acme-pro"),
                ("action", "suspend"),
                ("reason", "unpaid invoice 42"),
            ],
        )
        .await;
    let revision = saved_revision(&suspended, "acme");
    assert_eq!(
        entitlement(&portal, "acme-pro").status,
        EntitlementStatus::Suspended
    );
    let record = audit(&portal, revision);
    assert_eq!(record.action, "entitlement.suspend");
    assert_eq!(record.actor, format!("portal:{VENDOR}"));
    assert_eq!(record.reason.as_deref(), Some("unpaid invoice 42"));
    let after = browser.get(suspended.location().unwrap()).await;
    assert!(after
        .body
        .contains(&format!("Saved at revision {revision}.")));
    assert!(after
        .body
        .contains(&format!("href=\"/portal/vendor/revisions/{revision}\"")));

    tracing::info!("Resume, a new end date, and seats (named, as it had none).");
    let resumed = browser
        .post(
            change,
            &[
                ("csrf", &csrf),
                ("entitlement", "acme-pro"),
                ("action", "resume"),
            ],
        )
        .await;
    saved_revision(&resumed, "acme");
    let extended = browser
        .post(
            change,
            &[
                ("csrf", &csrf),
                ("entitlement", "acme-pro"),
                ("action", "extend"),
                ("valid_until", "2030-01-31"),
            ],
        )
        .await;
    saved_revision(&extended, "acme");
    let seats = browser
        .post(
            change,
            &[
                ("csrf", &csrf),
                ("entitlement", "acme-pro"),
                ("action", "seats"),
                ("seats", "7"),
                ("mode", "named"),
            ],
        )
        .await;
    saved_revision(&seats, "acme");
    let now = entitlement(&portal, "acme-pro");
    assert_eq!(now.status, EntitlementStatus::Active);
    assert_eq!(
        now.valid_until,
        Some(UnixSeconds(1_896_048_000)),
        "2030-01-31 00:00 UTC"
    );
    assert_eq!(now.seats.as_ref().map(|s| s.count), Some(7));
    assert!(matches!(now.seats.unwrap().mode, SeatMode::Named { .. }));

    tracing::info!("Bad input is refused and changes nothing.");
    for form in [
        [("action", "revoke"), ("reason", "")],
        [("action", "extend"), ("valid_until", "2030-02-30")],
        [("action", "seats"), ("seats", "many")],
        [("action", "suspend"), ("reason", "r\u{e9}sum\u{e9}")],
    ] {
        let mut fields = vec![("csrf", csrf.as_str()), ("entitlement", "acme-pro")];
        fields.extend(form);
        let refused = browser.post(change, &fields).await;
        assert_eq!(refused.status, 400, "{form:?}");
    }
    assert_eq!(
        entitlement(&portal, "acme-pro").status,
        EntitlementStatus::Active
    );

    tracing::info!("Another account's entitlement is not reachable through this account's page.");
    let other = browser
        .post(
            change,
            &[
                ("csrf", &csrf),
                ("entitlement", "globex-pro"),
                ("action", "suspend"),
            ],
        )
        .await;
    assert_eq!(other.status, 404);
    assert_eq!(
        entitlement(&portal, "globex-pro").status,
        EntitlementStatus::Active
    );

    tracing::info!("A grant gets a fresh id under the account.");
    let granted = browser
        .post(
            "/portal/vendor/accounts/acme/grant",
            &[
                ("csrf", &csrf),
                ("grant", "plan:studio-pro"),
                ("valid_until", ""),
                ("seats", "3"),
                ("mode", "floating"),
                ("reason", "pilot"),
            ],
        )
        .await;
    let revision = saved_revision(&granted, "acme");
    let record = audit(&portal, revision);
    assert_eq!(record.action, "entitlement.grant");
    let id = record
        .target
        .strip_prefix("entitlement/")
        .unwrap()
        .to_string();
    assert!(
        id.starts_with("acme-") && id.len() == "acme-".len() + 8,
        "{id}"
    );
    let new = entitlement(&portal, &id);
    assert_eq!(new.account.as_str(), "acme");
    assert_eq!(new.valid_until, None);
    assert!(matches!(
        new.seats.map(|s| s.mode),
        Some(SeatMode::Floating { .. })
    ));

    tracing::info!("Revoking needs a reason, then leaves no forms for it.");
    let revoked = browser
        .post(
            change,
            &[
                ("csrf", &csrf),
                ("entitlement", &id),
                ("action", "revoke"),
                ("reason", "pilot over"),
            ],
        )
        .await;
    saved_revision(&revoked, "acme");
    assert_eq!(entitlement(&portal, &id).status, EntitlementStatus::Revoked);
    let page = browser.get("/portal/vendor/accounts/acme").await;
    assert!(!page
        .body
        .contains(&format!("name=\"entitlement\" value=\"{id}\"")));
}

#[tokio::test]
async fn the_console_is_404_and_its_forms_refused_for_customers_and_without_csrf() {
    let portal = serve(test_config()).await;
    let customer = Browser::new(&portal.base);
    customer.sign_in(CUSTOMER, PASSWORD).await;
    let csrf = customer.get("/portal/a/acme").await.csrf();
    for page in [
        "/portal/vendor",
        "/portal/vendor/accounts/acme",
        "/portal/vendor/revisions/1",
        "/portal/vendor/requests",
        "/portal/vendor/orders",
        "/portal/vendor/orders/ord-1",
    ] {
        assert_eq!(customer.get(page).await.status, 404, "{page}");
    }
    let suspend = [
        ("csrf", csrf.as_str()),
        ("entitlement", "acme-pro"),
        ("action", "suspend"),
    ];
    let refused = customer
        .post("/portal/vendor/accounts/acme/change", &suspend)
        .await;
    assert_eq!(refused.status, 404);
    assert_eq!(
        entitlement(&portal, "acme-pro").status,
        EntitlementStatus::Active
    );

    let staff = vendor(&portal).await;
    let no_token = staff
        .post(
            "/portal/vendor/accounts/acme/change",
            &[("entitlement", "acme-pro"), ("action", "suspend")],
        )
        .await;
    assert_eq!(no_token.status, 403);
    assert_eq!(
        entitlement(&portal, "acme-pro").status,
        EntitlementStatus::Active
    );
}

#[tokio::test]
async fn a_revisions_page_says_which_nodes_have_applied_it() {
    let portal = serve(test_config()).await;
    let browser = vendor(&portal).await;
    let revision = entitlement(&portal, "acme-pro").revision;

    tracing::info!("Before any region reports, the page says so.");
    let empty = browser
        .get(&format!("/portal/vendor/revisions/{revision}"))
        .await;
    assert_eq!(empty.status, 200, "{}", empty.body);
    assert!(empty.body.contains("No region has reported yet."));
    assert!(empty.body.contains("entitlement.grant"));
    assert_eq!(browser.get("/portal/vendor/revisions/x").await.status, 404);

    tracing::info!("One node behind, one ahead, one unreachable.");
    let member = |node: u64, applied: Option<u64>| {
        serde_json::json!({
            "node_id": node,
            "addr": format!("10.0.0.{node}:7000"),
            "role": if node == 1 { "leader" } else { "follower" },
            "reachable": applied.is_some(),
            "error": if applied.is_none() { Some("timed out") } else { None },
            "facts": applied.map(|a| serde_json::json!({
                "applied_revision": a,
                "origin_head_revision": a,
                "last_origin_contact": null,
                "staleness_seconds": null,
            })),
        })
    };
    let report = serde_json::json!({
        "region": "eu",
        "node_id": 1,
        "leader_id": 1,
        "term": 1,
        "members": [member(1, Some(revision)), member(2, Some(revision - 1)), member(3, None)],
        "seats": [],
    });
    commit(
        &portal.store,
        Op::RecordRegionReport(serde_json::from_value(report).unwrap()),
    )
    .await;
    let page = browser
        .get(&format!("/portal/vendor/revisions/{revision}"))
        .await;
    assert!(
        page.body.contains("Waiting for: eu node 2."),
        "{}",
        page.body
    );
    assert!(page.body.contains("Not reporting: eu node 3."));
    assert!(page.body.contains("not reported"));
    assert!(page.body.contains(&format!(
        "<a href=\"/portal/vendor/revisions/{revision}\">Refresh</a>"
    )));
    let older = browser
        .get(&format!("/portal/vendor/revisions/{}", revision - 1))
        .await;
    assert!(older
        .body
        .contains("Applied by every reporting node of every region."));
}

#[tokio::test]
async fn staff_decide_access_requests_and_set_auto_approval() {
    let portal = serve(test_config()).await;
    let browser = vendor(&portal).await;
    for (id, why) in [("req-a", "need exports"), ("req-b", "also exports")] {
        api_post(
            &portal,
            "/v1/accounts/acme/access-requests",
            serde_json::json!({
                "id": id, "account": "acme", "target": {"feature": "export"}, "justification": why,
            }),
        )
        .await;
    }

    tracing::info!("The queue lists pending requests, oldest first, with their account.");
    let queue = browser.get("/portal/vendor/requests").await;
    assert_eq!(queue.status, 200, "{}", queue.body);
    let a = queue
        .body
        .find("id=\"request-req-a\"")
        .expect("req-a waits");
    let b = queue
        .body
        .find("id=\"request-req-b\"")
        .expect("req-b waits");
    assert!(a < b);
    assert!(queue.body.contains("need exports"));
    let csrf = queue.csrf();

    tracing::info!("Denying needs a reason; approving does not.");
    let no_reason = browser
        .post(
            "/portal/vendor/requests/decide",
            &[("csrf", &csrf), ("id", "req-b"), ("decision", "deny")],
        )
        .await;
    assert_eq!(no_reason.status, 400);
    let approved = browser
        .post(
            "/portal/vendor/requests/decide",
            &[("csrf", &csrf), ("id", "req-a"), ("decision", "approve")],
        )
        .await;
    assert_eq!(approved.status, 303, "{}", approved.body);
    let denied = browser
        .post(
            "/portal/vendor/requests/decide",
            &[
                ("csrf", &csrf),
                ("id", "req-b"),
                ("decision", "deny"),
                ("reason", "not in the contract"),
            ],
        )
        .await;
    assert_eq!(denied.status, 303);
    let location = denied.location().unwrap();
    let revision: u64 = location
        .strip_prefix("/portal/vendor/requests?done=changed&revision=")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        audit(&portal, revision).reason.as_deref(),
        Some("not in the contract")
    );
    let after = browser.get(location).await;
    assert!(after
        .body
        .contains(&format!("Saved at revision {revision}.")));
    assert!(
        !after.body.contains("id=\"request-req-a\""),
        "no longer pending"
    );
    assert!(after.body.contains("id=\"decided-req-a\""));
    assert!(after.body.contains("id=\"decided-req-b\""));
    assert!(after.body.contains("not in the contract"));

    tracing::info!("An auto-approval rule is set on the feature and cleared again.");
    let set = browser
        .post(
            "/portal/vendor/requests/rules",
            &[
                ("csrf", &csrf),
                ("kind", "feature"),
                ("id", "export"),
                ("rule", "on"),
                ("max_days", "30"),
                ("require_subject", "yes"),
            ],
        )
        .await;
    assert_eq!(set.status, 303, "{}", set.body);
    let feature: Feature = stored(
        &portal,
        &keys::feature(&FeatureId::try_from("export".to_string()).unwrap()),
    )
    .unwrap();
    assert_eq!(
        feature.auto_approve,
        Some(AutoApprove {
            max_duration_seconds: Some(30 * 86_400),
            require_subject: true,
        })
    );
    assert_eq!(feature.name, "Export", "the rest is kept");
    let shown = browser.get("/portal/vendor/requests").await;
    assert!(shown
        .body
        .contains("Approved when filed, for at most 30 days, if it names a user or device"));
    let cleared = browser
        .post(
            "/portal/vendor/requests/rules",
            &[
                ("csrf", &csrf),
                ("kind", "feature"),
                ("id", "export"),
                ("rule", "off"),
            ],
        )
        .await;
    assert_eq!(cleared.status, 303);
    let feature: Feature = stored(
        &portal,
        &keys::feature(&FeatureId::try_from("export".to_string()).unwrap()),
    )
    .unwrap();
    assert_eq!(feature.auto_approve, None);
}

#[tokio::test]
async fn orders_are_listed_newest_first_and_each_shows_what_it_touched() {
    let portal = serve(test_config()).await;
    let browser = vendor(&portal).await;
    let response = reqwest::Client::new()
        .put(format!("{}/v1/skus/PRO", portal.base))
        .bearer_auth(&portal.admin_token)
        .json(&serde_json::json!({
            "id": "PRO", "name": "Pro", "target": {"plan": "studio-pro"}, "quantity": "named_seats",
        }))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    for n in 0..3 {
        api_post(
            &portal,
            "/v1/orders",
            serde_json::json!({
                "id": format!("ord-{n}"), "account": "globex", "sku": "PRO", "kind": "new",
                "quantity": 2 + n, "term_start": 1_790_000_000, "term_end": 1_830_000_000,
            }),
        )
        .await;
    }

    tracing::info!("The list is newest first and links each order.");
    let list = browser.get("/portal/vendor/orders").await;
    assert_eq!(list.status, 200, "{}", list.body);
    let positions: Vec<usize> = (0..3)
        .map(|n| {
            list.body
                .find(&format!("href=\"/portal/vendor/orders/ord-{n}\""))
                .expect("listed")
        })
        .collect();
    assert!(positions[2] < positions[1] && positions[1] < positions[0]);

    tracing::info!("An order shows its account, SKU, kind, quantity, term and entitlement.");
    let order = browser.get("/portal/vendor/orders/ord-1").await;
    assert_eq!(order.status, 200, "{}", order.body);
    for text in [
        "href=\"/portal/vendor/accounts/globex\"",
        "<code>PRO</code>",
        "<dd>New</dd>",
        "<dd>3</dd>",
        "2026-09-21 to 2027-12-28",
        "href=\"/portal/vendor/accounts/globex#ent-",
    ] {
        assert!(order.body.contains(text), "{text} in {}", order.body);
    }
    assert_eq!(browser.get("/portal/vendor/orders/ord-9").await.status, 404);
}
