//! The portal's refusals, tried from outside over HTTP as an attacker on
//! the network would: another account's pages, forms without their CSRF
//! token or from another site, a stolen cookie after sign-out, guessing
//! passwords, and the headers every response must carry.

mod common;

use common::*;
use std::time::Duration;
use tollgate_api::OriginStore;
use tollgate_origin::keys;

#[tokio::test]
async fn a_customer_session_gets_404_for_another_accounts_pages_and_the_console() {
    let portal = serve(test_config()).await;
    let browser = Browser::new(&portal.base);
    let signed_in = browser.sign_in(CUSTOMER, PASSWORD).await;
    assert_eq!(signed_in.status, 303);
    assert_eq!(signed_in.location(), Some("/portal/a/acme"));
    // Its own account: shown.
    let own = browser.get("/portal/a/acme").await;
    assert_eq!(own.status, 200, "{}", own.body);
    assert!(own.body.contains("Studio Pro"), "the plan is shown");
    let csrf = own.csrf();
    for page in [
        "",
        "/usage",
        "/seats",
        "/licenses",
        "/requests",
        "/audit",
        "/users",
    ] {
        let other = browser.get(&format!("/portal/a/globex{page}")).await;
        assert_eq!(other.status, 404, "/portal/a/globex{page}");
        assert!(!other.body.contains("Globex"), "nothing of globex leaks");
        let unknown = browser.get(&format!("/portal/a/nosuch{page}")).await;
        assert_eq!(unknown.status, 404, "/portal/a/nosuch{page}");
    }
    for page in ["/portal/vendor", "/portal/vendor/requests"] {
        assert_eq!(browser.get(page).await.status, 404, "{page}");
    }
    // A valid form of this session, aimed at another account: refused,
    // and nothing written.
    let add = browser
        .post(
            "/portal/a/globex/people",
            &[("csrf", &csrf), ("id", "mallory"), ("kind", "user")],
        )
        .await;
    assert_eq!(add.status, 404);
    assert!(portal
        .store
        .get(b"subject/globex/mallory")
        .unwrap()
        .is_none());
    // A member reaches its own account but not its users page.
    let member = Browser::new(&portal.base);
    member.sign_in(MEMBER, PASSWORD).await;
    assert_eq!(member.get("/portal/a/acme").await.status, 200);
    assert_eq!(member.get("/portal/a/acme/users").await.status, 404);
}

#[tokio::test]
async fn a_form_without_its_csrf_token_or_from_another_site_is_refused() {
    let portal = serve(test_config()).await;
    let browser = Browser::new(&portal.base);
    browser.sign_in(CUSTOMER, PASSWORD).await;
    let csrf = browser.get("/portal/a/acme/seats").await.csrf();
    let path = "/portal/a/acme/people";
    let missing = browser.post(path, &[("id", "eve"), ("kind", "user")]).await;
    assert_eq!(missing.status, 403, "{}", missing.body);
    let wrong = browser
        .post(path, &[("csrf", "AAAA"), ("id", "eve"), ("kind", "user")])
        .await;
    assert_eq!(wrong.status, 403);
    let cross_site = browser
        .post_with(
            path,
            &[("csrf", &csrf), ("id", "eve"), ("kind", "user")],
            &[("sec-fetch-site", "cross-site")],
        )
        .await;
    assert_eq!(cross_site.status, 403);
    let foreign_origin = browser
        .post_with(
            path,
            &[("csrf", &csrf), ("id", "eve"), ("kind", "user")],
            &[("origin", "https://evil.example")],
        )
        .await;
    assert_eq!(foreign_origin.status, 403);
    assert!(portal.store.get(b"subject/acme/eve").unwrap().is_none());
    // The same form with its token is accepted.
    let ok = browser
        .post(path, &[("csrf", &csrf), ("id", "eve"), ("kind", "user")])
        .await;
    assert_eq!(ok.status, 303, "{}", ok.body);
    assert!(portal.store.get(b"subject/acme/eve").unwrap().is_some());
    // Sign-out needs it too; without it the session lives on.
    let out = browser.post("/portal/sign-out", &[]).await;
    assert_eq!(out.status, 403);
    assert_eq!(browser.get("/portal/a/acme").await.status, 200);
    // The sign-in form has a token of its own (login CSRF).
    let anonymous = Browser::new(&portal.base);
    let forged = anonymous
        .post(
            "/portal/sign-in",
            &[("email", CUSTOMER), ("password", PASSWORD), ("csrf", "x")],
        )
        .await;
    assert_eq!(forged.status, 403);
    assert!(anonymous.session().is_none());
}

#[tokio::test]
async fn a_stolen_session_cookie_is_useless_after_sign_out() {
    let portal = serve(test_config()).await;
    let browser = Browser::new(&portal.base);
    browser.sign_in(CUSTOMER, PASSWORD).await;
    let stolen = browser.session().expect("a session cookie");
    let thief = Browser::new(&portal.base);
    thief
        .cookies
        .lock()
        .unwrap()
        .insert("tg_session".into(), stolen.clone());
    assert_eq!(
        thief.get("/portal/a/acme").await.status,
        200,
        "the copy works while signed in"
    );
    let csrf = browser.get("/portal/a/acme").await.csrf();
    let out = browser.post("/portal/sign-out", &[("csrf", &csrf)]).await;
    assert_eq!(out.status, 303);
    assert_eq!(out.location(), Some("/portal/sign-in?signed_out=1"));
    assert!(browser.session().is_none(), "the cookie is cleared");
    let after = thief.get("/portal/a/acme").await;
    assert_eq!(after.status, 303, "back to sign-in");
    assert!(after.location().unwrap().starts_with("/portal/sign-in"));
    // The origin keeps only the token's hash, and not even that now.
    let hash = tollgate_portal_test_hash(&stolen);
    assert!(portal
        .store
        .get(&keys::portal_session(&hash))
        .unwrap()
        .is_none());
}

fn tollgate_portal_test_hash(token: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn wrong_passwords_lock_the_user_out_for_a_while() {
    let portal = serve(test_config()).await;
    let browser = Browser::new(&portal.base);
    for attempt in 1..=3 {
        let wrong = browser.sign_in(CUSTOMER, "not the password!").await;
        assert_eq!(wrong.status, 401, "attempt {attempt}");
        assert!(browser.session().is_none());
    }
    // Locked: the right password does not sign in, and says nothing more
    // than a wrong one would.
    let locked = browser.sign_in(CUSTOMER, PASSWORD).await;
    assert_eq!(locked.status, 401);
    assert!(browser.session().is_none());
    assert!(locked.body.contains("locked out"), "{}", locked.body);
    // An unknown user gets the same answer.
    let unknown = browser.sign_in("nobody@acme.example", PASSWORD).await;
    assert_eq!(unknown.status, 401);
    // Another user is not affected.
    assert_eq!(
        Browser::new(&portal.base)
            .sign_in(MEMBER, PASSWORD)
            .await
            .status,
        303
    );
    // The lock ends (3 s in tests): wait for it with a deadline.
    tollgate_testkit::wait_until("the lock to end", Duration::from_secs(20), || async {
        let status = Browser::new(&portal.base)
            .sign_in(CUSTOMER, PASSWORD)
            .await
            .status;
        if status == 303 {
            Ok(())
        } else {
            Err(format!("sign-in answered {status}"))
        }
    })
    .await
    .expect("the user can sign in once the lock ends");
    // Every failure is in the account's own audit trail.
    let audit: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/v1/accounts/acme/audit?limit=100", portal.base))
        .bearer_auth(&portal.admin_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let failures = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "portal.sign_in_failed")
        .count();
    assert_eq!(failures, 3, "{audit}");
}

#[tokio::test]
async fn every_response_sends_csp_frame_ancestors_and_no_store() {
    let portal = serve(test_config()).await;
    let browser = Browser::new(&portal.base);
    let mut answers = vec![
        ("sign-in", browser.get("/portal/sign-in").await),
        ("not found", browser.get("/portal/nosuch").await),
        ("signed out", browser.get("/portal/a/acme").await),
    ];
    browser.sign_in(CUSTOMER, PASSWORD).await;
    for page in [
        "",
        "/usage",
        "/seats",
        "/licenses",
        "/requests",
        "/audit",
        "/users",
    ] {
        let path = format!("/portal/a/acme{page}");
        let answer = browser.get(&path).await;
        assert_eq!(answer.status, 200, "{path}: {}", answer.body);
        answers.push(("page", answer));
    }
    answers.push(("404", browser.get("/portal/a/globex").await));
    for (what, answer) in &answers {
        let header = |name: &str| {
            answer
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        let csp = header("content-security-policy");
        assert!(csp.contains("script-src 'self'"), "{what}: {csp}");
        assert!(!csp.contains("unsafe-inline"), "{what}: {csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{what}: {csp}");
        assert!(csp.contains("form-action 'self'"), "{what}: {csp}");
        assert_eq!(header("x-frame-options"), "DENY", "{what}");
        assert_eq!(header("cache-control"), "no-store", "{what}");
        assert_eq!(header("x-content-type-options"), "nosniff", "{what}");
        // Pages hold no inline script and no inline style.
        assert!(!answer.body.contains("<script>"), "{what}: inline script");
        assert!(!answer.body.contains(" style=\""), "{what}: inline style");
        assert!(!answer.body.contains("<style"), "{what}: style element");
    }
    // The session cookie is HttpOnly, SameSite and scoped to the site.
    let fresh = Browser::new(&portal.base);
    let signed_in = fresh.sign_in(CUSTOMER, PASSWORD).await;
    let cookie = signed_in
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.starts_with("tg_session="))
        .expect("a session cookie");
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Lax"), "{cookie}");
    assert!(cookie.contains("Path=/"), "{cookie}");
    // Static files are cacheable, and still carry the policy.
    let page = fresh.get("/portal/a/acme").await;
    let css = page
        .body
        .split("href=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_string();
    let asset = fresh.get(&css).await;
    assert_eq!(asset.status, 200, "{css}");
    assert!(asset.headers["cache-control"]
        .to_str()
        .unwrap()
        .contains("immutable"));
    assert!(asset.headers.contains_key("content-security-policy"));
}

#[tokio::test]
async fn portal_changes_are_audited_with_the_users_name() {
    let portal = serve(test_config()).await;
    let browser = Browser::new(&portal.base);
    browser.sign_in(CUSTOMER, PASSWORD).await;
    let csrf = browser.get("/portal/a/acme/seats").await.csrf();
    let added = browser
        .post(
            "/portal/a/acme/people",
            &[("csrf", &csrf), ("id", "bob"), ("kind", "user")],
        )
        .await;
    assert_eq!(added.status, 303);
    let activity = browser.get("/portal/a/acme/audit").await;
    assert_eq!(activity.status, 200);
    assert!(
        activity.body.contains(&format!("portal:{CUSTOMER}")),
        "{}",
        activity.body
    );
    assert!(activity.body.contains("subject/acme/bob"));
    assert!(activity.body.contains("portal.sign_in"));
    // globex's trail has none of it.
    let other = Browser::new(&portal.base);
    other.sign_in(OTHER, PASSWORD).await;
    let theirs = other.get("/portal/a/globex/audit").await;
    assert_eq!(theirs.status, 200);
    // The audit record's own words: a bare "bob" can turn up inside a
    // random token on the page (a CSRF token is base64url).
    assert!(!theirs.body.contains("subject/acme/bob"), "{}", theirs.body);
    assert!(!theirs.body.contains(CUSTOMER), "{}", theirs.body);
}

#[tokio::test]
async fn the_portals_root_sends_each_user_home_and_strangers_to_sign_in() {
    let portal = serve(test_config()).await;
    let browser = Browser::new(&portal.base);
    let slash = browser.get("/portal/").await;
    assert_eq!(slash.status, 303);
    assert_eq!(slash.location(), Some("/portal"));
    for root in ["/portal"] {
        let answer = browser.get(root).await;
        assert_eq!(answer.status, 303, "{root}: {}", answer.body);
        assert!(
            answer.location().unwrap().starts_with("/portal/sign-in"),
            "{root}: {:?}",
            answer.location()
        );
    }
    browser.sign_in(CUSTOMER, PASSWORD).await;
    assert_eq!(
        browser.get("/portal").await.location(),
        Some("/portal/a/acme")
    );
    let vendor = Browser::new(&portal.base);
    vendor.sign_in(VENDOR, PASSWORD).await;
    assert_eq!(
        vendor.get("/portal").await.location(),
        Some("/portal/vendor")
    );
    // A sign-in that names where to go next goes there, and never off site.
    let next = Browser::new(&portal.base);
    let form = next
        .get("/portal/sign-in?next=/portal/a/acme/licenses")
        .await;
    let csrf = form.csrf();
    let there = next
        .post(
            "/portal/sign-in",
            &[
                ("email", CUSTOMER),
                ("password", PASSWORD),
                ("csrf", &csrf),
                ("next", "/portal/a/acme/licenses"),
            ],
        )
        .await;
    assert_eq!(there.location(), Some("/portal/a/acme/licenses"));
    let away = Browser::new(&portal.base);
    let csrf = away.get("/portal/sign-in").await.csrf();
    let refused = away
        .post(
            "/portal/sign-in",
            &[
                ("email", CUSTOMER),
                ("password", PASSWORD),
                ("csrf", &csrf),
                ("next", "//evil.example/portal/"),
            ],
        )
        .await;
    assert_eq!(refused.location(), Some("/portal/a/acme"));
}
