//! OIDC sign-in against an in-process provider (`tollgate_testkit::oidc`):
//! the whole authorization code flow with PKCE, and each way a sign-in must
//! be refused, each asserting the specific error.

use tollgate_clock::Clock;
use tollgate_portal::oidc::{
    IdentityClaims, OidcClient, OidcConfig, OidcError, PendingLogin, PENDING_LOGIN_TTL_SECONDS,
};
use tollgate_testkit::oidc::{
    ProviderConfig, TestProvider, TokenFault, WRONG_AUDIENCE, WRONG_ISSUER,
};
use tracing::info;

const CLIENT_ID: &str = "tollgate-portal";
/// Characters that client_secret_basic must form-encode before the header.
const CLIENT_SECRET: &str = "s3cret: with spaces/and%+";
const REDIRECT_URL: &str = "https://portal.example.com/portal/oidc/callback";

/// A provider and a client discovered from it.
struct Setup {
    provider: TestProvider,
    client: OidcClient,
}

fn provider_config(client_secret: Option<&str>) -> ProviderConfig {
    ProviderConfig {
        client_id: CLIENT_ID.into(),
        client_secret: client_secret.map(String::from),
        redirect_url: REDIRECT_URL.into(),
    }
}

fn client_config(issuer: &str, client_secret: Option<&str>) -> OidcConfig {
    OidcConfig {
        issuer: issuer.into(),
        client_id: CLIENT_ID.into(),
        client_secret: client_secret.map(String::from),
        redirect_url: REDIRECT_URL.into(),
        scopes: OidcConfig::default_scopes(),
    }
}

/// A client that, like the browser's first hop, does not follow redirects.
fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("an HTTP client")
}

fn now() -> u64 {
    Clock::system()
        .since_epoch()
        .expect("the clock is after 1970")
        .as_secs()
}

async fn setup_with(client_secret: Option<&str>) -> Setup {
    let provider = TestProvider::start(provider_config(client_secret)).await;
    provider.sign_in_as("staff-42", "ada@vendor.example", "Ada Lovelace");
    let client = OidcClient::discover(client_config(provider.issuer(), client_secret), http())
        .await
        .expect("discovery against the test provider");
    Setup { provider, client }
}

async fn setup() -> Setup {
    setup_with(Some(CLIENT_SECRET)).await
}

/// What the browser brings back to the callback.
struct Callback {
    pending: PendingLogin,
    state: String,
    code: String,
}

/// Begins a sign-in and follows the authorize URL as a browser would,
/// reading the code and state from the redirect's Location.
async fn sign_in(client: &OidcClient) -> Callback {
    let (authorize_url, pending) = client.begin(&Clock::system()).expect("begin");
    let response = http()
        .get(&authorize_url)
        .send()
        .await
        .expect("the authorize endpoint answers");
    assert_eq!(
        response.status(),
        reqwest::StatusCode::FOUND,
        "{authorize_url}"
    );
    let location = response.headers()[reqwest::header::LOCATION]
        .to_str()
        .expect("an ASCII Location")
        .to_string();
    assert!(
        location.starts_with(&format!("{REDIRECT_URL}?")),
        "redirected back to the registered URI: {location}"
    );
    let location = reqwest::Url::parse(&location).expect("a URL");
    let param = |name: &str| {
        location
            .query_pairs()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.into_owned())
            .unwrap_or_else(|| panic!("{name} in {location}"))
    };
    Callback {
        pending,
        state: param("state"),
        code: param("code"),
    }
}

/// A full sign-in: begin, authorize, complete.
async fn complete(client: &OidcClient) -> Result<IdentityClaims, OidcError> {
    let callback = sign_in(client).await;
    client
        .complete(&callback.pending, &callback.state, &callback.code, now())
        .await
}

fn ada() -> IdentityClaims {
    IdentityClaims {
        subject: "staff-42".into(),
        email: Some("ada@vendor.example".into()),
        email_verified: true,
        name: Some("Ada Lovelace".into()),
    }
}

#[tokio::test]
async fn a_confidential_client_signs_in() {
    let Setup {
        client,
        provider: _provider,
    } = setup().await;
    info!("Proving the authorize URL asks for a code with PKCE S256 and the default scopes.");
    let (authorize_url, pending) = client.begin(&Clock::system()).expect("begin");
    let url = reqwest::Url::parse(&authorize_url).expect("a URL");
    let pairs: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
    assert_eq!(pairs["response_type"], "code");
    assert_eq!(pairs["client_id"], CLIENT_ID);
    assert_eq!(pairs["redirect_uri"], REDIRECT_URL);
    assert_eq!(pairs["scope"], "openid email profile");
    assert_eq!(pairs["state"], pending.state);
    assert_eq!(pairs["nonce"], pending.nonce);
    assert_eq!(pairs["code_challenge_method"], "S256");
    assert_eq!(
        pairs["code_challenge"],
        tollgate_portal::oidc::pkce_challenge(&pending.code_verifier)
    );
    assert_eq!(
        pending.code_verifier.len(),
        43,
        "32 random bytes, base64url"
    );

    info!("Proving a sign-in with client_secret_basic yields the provider's claims.");
    assert_eq!(complete(&client).await.expect("sign-in"), ada());
}

#[tokio::test]
async fn a_public_client_signs_in() {
    let Setup {
        client,
        provider: _provider,
    } = setup_with(None).await;
    info!("Proving a client without a secret signs in with its client_id in the body.");
    assert_eq!(complete(&client).await.expect("sign-in"), ada());
}

#[tokio::test]
async fn each_login_gets_fresh_secrets() {
    let Setup {
        client,
        provider: _provider,
    } = setup().await;
    let (_, first) = client.begin(&Clock::system()).expect("begin");
    let (_, second) = client.begin(&Clock::system()).expect("begin");
    assert_ne!(first.state, second.state);
    assert_ne!(first.nonce, second.nonce);
    assert_ne!(first.code_verifier, second.code_verifier);
    let json = serde_json::to_string(&first).expect("a pending login serialises");
    let back: PendingLogin = serde_json::from_str(&json).expect("and back");
    assert_eq!(back, first);
}

#[tokio::test]
async fn a_wrong_state_is_refused() {
    let Setup {
        client,
        provider: _provider,
    } = setup().await;
    let callback = sign_in(&client).await;
    info!("Proving a callback whose state is not the pending login's is refused.");
    let (_, other) = client.begin(&Clock::system()).expect("begin");
    for state in [other.state.as_str(), "", &callback.state[1..]] {
        let error = client
            .complete(&callback.pending, state, &callback.code, now())
            .await
            .unwrap_err();
        assert!(matches!(error, OidcError::StateMismatch), "{error}");
    }
}

#[tokio::test]
async fn a_pending_login_with_empty_secrets_is_refused() {
    let Setup {
        client,
        provider: _provider,
    } = setup().await;
    let callback = sign_in(&client).await;
    info!("Proving a pending login (a cookie) with an empty state cannot match an empty state.");
    let mut pending = callback.pending.clone();
    pending.state = String::new();
    let error = client
        .complete(&pending, "", &callback.code, now())
        .await
        .unwrap_err();
    assert!(matches!(error, OidcError::InvalidPendingLogin), "{error}");
}

#[tokio::test]
async fn an_expired_pending_login_is_refused() {
    let Setup {
        client,
        provider: _provider,
    } = setup().await;
    let callback = sign_in(&client).await;
    info!("Proving a pending login older than its lifetime is refused.");
    let late = callback.pending.created_at + PENDING_LOGIN_TTL_SECONDS;
    let error = client
        .complete(&callback.pending, &callback.state, &callback.code, late)
        .await
        .unwrap_err();
    assert!(
        matches!(error, OidcError::PendingLoginExpired { now, .. } if now == late),
        "{error}"
    );
    info!("Proving the code was not spent by the refused attempt.");
    let claims = client
        .complete(&callback.pending, &callback.state, &callback.code, now())
        .await
        .expect("the same callback in time");
    assert_eq!(claims, ada());
}

#[tokio::test]
async fn a_code_is_good_once() {
    let Setup {
        client,
        provider: _provider,
    } = setup().await;
    let callback = sign_in(&client).await;
    client
        .complete(&callback.pending, &callback.state, &callback.code, now())
        .await
        .expect("the first redemption");
    info!("Proving a second redemption of the same code is refused by the provider.");
    let error = client
        .complete(&callback.pending, &callback.state, &callback.code, now())
        .await
        .unwrap_err();
    assert!(
        matches!(&error, OidcError::TokenRejected { status: 400, error, description }
            if error == "invalid_grant"
                && description.as_deref() == Some("unknown or already used code")),
        "{error}"
    );
}

#[tokio::test]
async fn a_pkce_verifier_that_does_not_match_is_refused() {
    let Setup {
        client,
        provider: _provider,
    } = setup().await;
    let mut callback = sign_in(&client).await;
    info!("Proving a code redeemed with another login's verifier is refused.");
    let (_, other) = client.begin(&Clock::system()).expect("begin");
    callback.pending.code_verifier = other.code_verifier;
    let error = client
        .complete(&callback.pending, &callback.state, &callback.code, now())
        .await
        .unwrap_err();
    assert!(
        matches!(&error, OidcError::TokenRejected { status: 400, error, description }
            if error == "invalid_grant"
                && description.as_deref() == Some("PKCE verification failed")),
        "{error}"
    );
}

#[tokio::test]
async fn a_wrong_client_secret_is_refused() {
    let provider = TestProvider::start(provider_config(Some(CLIENT_SECRET))).await;
    provider.sign_in_as("staff-42", "ada@vendor.example", "Ada Lovelace");
    let client = OidcClient::discover(client_config(provider.issuer(), Some("guess")), http())
        .await
        .expect("discovery");
    let error = complete(&client).await.unwrap_err();
    assert!(
        matches!(&error, OidcError::TokenRejected { status: 401, error, .. } if error == "invalid_client"),
        "{error}"
    );
}

/// A sign-in against a provider getting its ID tokens wrong as `fault`
/// says; the refusal.
async fn refused_for(fault: TokenFault) -> (OidcError, Setup) {
    let setup = setup().await;
    setup.provider.misbehave(fault);
    info!(?fault, "Proving an ID token got wrong this way is refused.");
    let error = complete(&setup.client)
        .await
        .expect_err("the ID token must be refused");
    (error, setup)
}

#[tokio::test]
async fn a_wrong_nonce_is_refused() {
    let (error, _) = refused_for(TokenFault::WrongNonce).await;
    assert!(matches!(error, OidcError::NonceMismatch), "{error}");
}

#[tokio::test]
async fn a_wrong_audience_is_refused() {
    let (error, _) = refused_for(TokenFault::WrongAudience).await;
    assert!(
        matches!(&error, OidcError::AudienceMismatch { found } if found == &[WRONG_AUDIENCE]),
        "{error}"
    );
}

#[tokio::test]
async fn a_wrong_issuer_is_refused() {
    let (error, setup) = refused_for(TokenFault::WrongIssuer).await;
    assert!(
        matches!(&error, OidcError::IssuerMismatch { expected, found }
            if found == WRONG_ISSUER && expected == setup.provider.issuer()),
        "{error}"
    );
}

#[tokio::test]
async fn an_expired_token_is_refused() {
    let (error, _) = refused_for(TokenFault::Expired).await;
    assert!(matches!(error, OidcError::TokenExpired { .. }), "{error}");
}

#[tokio::test]
async fn alg_none_is_refused() {
    let (error, _) = refused_for(TokenFault::AlgNone).await;
    assert!(
        matches!(&error, OidcError::AlgorithmNotAllowed { alg } if alg == "none"),
        "{error}"
    );
}

#[tokio::test]
async fn an_hs256_token_keyed_with_the_client_secret_is_refused() {
    let (error, _) = refused_for(TokenFault::Hs256).await;
    assert!(
        matches!(&error, OidcError::AlgorithmNotAllowed { alg } if alg == "HS256"),
        "{error}"
    );
}

#[tokio::test]
async fn a_token_signed_by_an_unpublished_key_is_refused_without_amplification() {
    let (error, setup) = refused_for(TokenFault::UnknownKey).await;
    assert!(
        matches!(&error, OidcError::UnknownKey { kid, refetch }
            if kid == "stray" && refetch.contains("after refetching")),
        "{error}"
    );
    assert_eq!(
        setup.provider.jwks_fetches(),
        2,
        "discovery, then one refetch for the unknown kid"
    );
    info!("Proving a second unknown-kid token right after does not refetch the JWKS.");
    let error = complete(&setup.client).await.unwrap_err();
    assert!(
        matches!(&error, OidcError::UnknownKey { refetch, .. } if refetch.contains("suppressed")),
        "{error}"
    );
    assert_eq!(setup.provider.jwks_fetches(), 2, "no second refetch");
}

#[tokio::test]
async fn key_rotation_is_followed() {
    let Setup { provider, client } = setup().await;
    assert_eq!(complete(&client).await.expect("before rotation"), ada());
    assert_eq!(provider.jwks_fetches(), 1);

    info!("Proving a token under a new kid makes the client refetch the JWKS and accept it.");
    let new_kid = provider.rotate_key();
    assert_ne!(new_kid, "key-1");
    assert_eq!(complete(&client).await.expect("after rotation"), ada());
    assert_eq!(provider.jwks_fetches(), 2);
    assert_eq!(
        complete(&client).await.expect("again, from the cache"),
        ada()
    );
    assert_eq!(provider.jwks_fetches(), 2, "the refetched keys are cached");

    info!("Proving a second rotation within the refetch interval waits for it.");
    provider.rotate_key();
    let error = complete(&client).await.unwrap_err();
    assert!(
        matches!(&error, OidcError::UnknownKey { refetch, .. } if refetch.contains("suppressed")),
        "{error}"
    );

    info!("Proving a client with a zero refetch interval follows it at once.");
    let client = OidcClient::discover(
        client_config(provider.issuer(), Some(CLIENT_SECRET)),
        http(),
    )
    .await
    .expect("discovery")
    .with_jwks_refetch_interval(std::time::Duration::ZERO);
    provider.rotate_key();
    assert_eq!(
        complete(&client).await.expect("after a third rotation"),
        ada()
    );
}

#[tokio::test]
async fn a_non_loopback_http_issuer_is_refused_at_discovery() {
    info!("Proving http is refused for an issuer that is not on loopback, before any request.");
    for issuer in [
        "http://idp.example.com",
        "http://10.1.2.3:8080",
        "http://localhost.example.com",
    ] {
        let error = OidcClient::discover(client_config(issuer, None), http())
            .await
            .unwrap_err();
        assert!(
            matches!(error, OidcError::InsecureUrl { what: "issuer", .. }),
            "{issuer}: {error}"
        );
    }
}

#[tokio::test]
async fn a_discovery_document_naming_another_issuer_is_refused() {
    let provider = TestProvider::start(provider_config(Some(CLIENT_SECRET))).await;
    let impostor = "http://127.0.0.1:1/elsewhere";
    provider.advertise_issuer(impostor);
    let error = OidcClient::discover(
        client_config(provider.issuer(), Some(CLIENT_SECRET)),
        http(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&error, OidcError::DiscoveryIssuerMismatch { expected, found }
            if found == impostor && expected == provider.issuer()),
        "{error}"
    );
    info!("Proving a configured issuer differing only by a trailing slash is refused too.");
    let provider = TestProvider::start(provider_config(Some(CLIENT_SECRET))).await;
    let with_slash = format!("{}/", provider.issuer());
    let error = OidcClient::discover(client_config(&with_slash, Some(CLIENT_SECRET)), http())
        .await
        .unwrap_err();
    assert!(
        matches!(error, OidcError::DiscoveryIssuerMismatch { .. }),
        "{error}"
    );
}

#[tokio::test]
async fn the_provider_refuses_an_unknown_client_or_redirect_uri() {
    let provider = TestProvider::start(provider_config(Some(CLIENT_SECRET))).await;
    provider.sign_in_as("staff-42", "ada@vendor.example", "Ada Lovelace");
    info!("Proving the test provider itself refuses what a real one would, without redirecting.");
    for (client_id, redirect_url) in [
        ("someone-else", REDIRECT_URL),
        (CLIENT_ID, "https://attacker.example/callback"),
    ] {
        let mut config = client_config(provider.issuer(), Some(CLIENT_SECRET));
        config.client_id = client_id.into();
        config.redirect_url = redirect_url.into();
        let client = OidcClient::discover(config, http())
            .await
            .expect("discovery");
        let (authorize_url, _) = client.begin(&Clock::system()).expect("begin");
        let response = http().get(&authorize_url).send().await.expect("an answer");
        assert_eq!(
            response.status(),
            reqwest::StatusCode::BAD_REQUEST,
            "{client_id} {redirect_url}"
        );
    }
}
