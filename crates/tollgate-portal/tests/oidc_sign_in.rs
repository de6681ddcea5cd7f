//! The portal's OIDC sign-in for the vendor's staff, through its own routes,
//! against the in-process identity provider: a vendor user signs in and
//! reaches the console; an identity that is not a vendor user, a customer,
//! a callback without its pending sign-in and a second subject claiming a
//! bound user are all refused, with no session.

mod common;

use common::*;
use tollgate_portal::oidc::OidcConfig;
use tollgate_testkit::oidc::{ProviderConfig, TestProvider};

struct Setup {
    portal: TestPortal,
    provider: TestProvider,
}

async fn setup() -> Setup {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let redirect_url = format!("{base}/portal/oidc/callback");
    let provider = TestProvider::start(ProviderConfig {
        client_id: "tollgate-portal".into(),
        client_secret: Some("portal-secret".into()),
        redirect_url: redirect_url.clone(),
    })
    .await;
    let mut config = test_config();
    config.oidc = Some(OidcConfig {
        issuer: provider.issuer().to_string(),
        client_id: "tollgate-portal".into(),
        client_secret: Some("portal-secret".into()),
        redirect_url,
        scopes: OidcConfig::default_scopes(),
    });
    let portal = serve_on(listener, config).await;
    Setup { portal, provider }
}

/// Follows start → the provider → the callback; the callback's answer.
async fn sign_in_with_provider(setup: &Setup, browser: &Browser) -> Answer {
    let start = browser.get("/portal/oidc/start").await;
    assert_eq!(start.status, 303, "{}", start.body);
    let authorize = start.location().expect("to the provider").to_string();
    assert!(
        authorize.starts_with(setup.provider.issuer()),
        "{authorize}"
    );
    let at_provider = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(&authorize)
        .send()
        .await
        .unwrap();
    assert!(
        at_provider.status().is_redirection(),
        "{}",
        at_provider.status()
    );
    let back = at_provider.headers()["location"]
        .to_str()
        .unwrap()
        .to_string();
    let path = back
        .strip_prefix(&setup.portal.base)
        .expect("back to the portal")
        .to_string();
    browser.get(&path).await
}

#[tokio::test]
async fn a_vendor_user_signs_in_with_the_identity_provider() {
    let setup = setup().await;
    let browser = Browser::new(&setup.portal.base);
    let form = browser.get("/portal/sign-in").await;
    assert!(
        form.body.contains("/portal/oidc/start"),
        "the option is offered"
    );
    setup.provider.sign_in_as("idp-vera", VENDOR, "Vera");
    let callback = sign_in_with_provider(&setup, &browser).await;
    assert_eq!(callback.status, 303, "{}", callback.body);
    assert_eq!(callback.location(), Some("/portal/vendor"));
    assert!(browser.session().is_some());
    assert_eq!(browser.get("/portal/vendor").await.status, 200);
    // The first sign-in bound the provider's subject to the user: another
    // subject with the same address is refused from now on.
    let impostor = Browser::new(&setup.portal.base);
    setup
        .provider
        .sign_in_as("idp-someone-else", VENDOR, "Not Vera");
    let refused = sign_in_with_provider(&setup, &impostor).await;
    assert_eq!(refused.location(), Some("/portal/sign-in?failed=1"));
    assert!(impostor.session().is_none());
}

#[tokio::test]
async fn identities_that_are_not_vendor_users_get_no_session() {
    let setup = setup().await;
    for (subject, email) in [
        ("idp-stranger", "stranger@vendor.example"),
        ("idp-customer", CUSTOMER),
    ] {
        let browser = Browser::new(&setup.portal.base);
        setup.provider.sign_in_as(subject, email, "Someone");
        let refused = sign_in_with_provider(&setup, &browser).await;
        assert_eq!(refused.status, 303, "{email}");
        assert_eq!(
            refused.location(),
            Some("/portal/sign-in?failed=1"),
            "{email}"
        );
        assert!(browser.session().is_none(), "{email}");
    }
    // A callback without the browser's pending sign-in (a forged or
    // replayed link) is refused.
    let browser = Browser::new(&setup.portal.base);
    let forged = browser
        .get("/portal/oidc/callback?code=stolen&state=guessed")
        .await;
    assert_eq!(forged.location(), Some("/portal/sign-in?failed=1"));
    assert!(browser.session().is_none());
}
