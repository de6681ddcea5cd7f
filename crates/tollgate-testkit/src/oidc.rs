//! A small in-process OpenID provider for tests: discovery, a JWKS, an
//! authorize endpoint without a login page, and a token endpoint that signs
//! ID tokens with Ed25519 (EdDSA). It serves plain HTTP on `127.0.0.1:0`,
//! which OIDC clients allow only on loopback.
//!
//! The test chooses who signs in beforehand ([`TestProvider::sign_in_as`]);
//! the authorize endpoint then redirects straight back with a code. It
//! checks what a real provider checks (client id, registered redirect URI,
//! one-time codes, client secret, PKCE S256), and misbehaves on request
//! ([`TokenFault`], [`TestProvider::rotate_key`],
//! [`TestProvider::advertise_issuer`]) so clients can be shown to refuse.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use ed25519_dalek::{Signer as _, SigningKey};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// How long the ID tokens the provider issues are valid.
pub const ID_TOKEN_LIFETIME_SECONDS: u64 = 300;

/// The one client the provider knows.
#[derive(Clone, Debug)]
pub struct ProviderConfig {
    pub client_id: String,
    /// Set: the token endpoint requires it (`client_secret_basic`). Unset:
    /// a public client, which sends its `client_id` in the body.
    pub client_secret: Option<String>,
    /// The one registered redirect URI, compared exactly.
    pub redirect_url: String,
}

/// A way for the token endpoint to get an ID token wrong. Set with
/// [`TestProvider::misbehave`]; it holds for every token from then on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenFault {
    /// `nonce` is not the one the authorization request carried.
    WrongNonce,
    /// `aud` names another client.
    WrongAudience,
    /// `iss` names another issuer.
    WrongIssuer,
    /// Issued two hours ago, expired an hour ago.
    Expired,
    /// Signed by a key the JWKS never publishes (its own kid).
    UnknownKey,
    /// `alg: none` and an empty signature.
    AlgNone,
    /// HS256, keyed with the client secret, under the current kid.
    Hs256,
}

/// The issuer a fault makes the provider claim.
pub const WRONG_ISSUER: &str = "https://impostor.example";
/// The audience a fault makes the provider name.
pub const WRONG_AUDIENCE: &str = "some-other-client";

/// A user signed in at the provider.
#[derive(Clone, Debug)]
struct User {
    subject: String,
    email: String,
    name: String,
}

/// What an authorization code stands for until it is redeemed.
struct Grant {
    user: User,
    nonce: Option<String>,
    code_challenge: String,
    redirect_uri: String,
}

/// A signing key and the kid it is published under.
struct Key {
    kid: String,
    signing: SigningKey,
}

impl Key {
    fn generate(kid: String) -> Key {
        Key {
            kid,
            signing: SigningKey::from_bytes(&random_bytes()),
        }
    }

    fn jwk(&self) -> Value {
        json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "x": URL_SAFE_NO_PAD.encode(self.signing.verifying_key().as_bytes()),
            "kid": self.kid,
            "alg": "EdDSA",
            "use": "sig",
        })
    }
}

struct ProviderState {
    signed_in: Option<User>,
    key: Key,
    key_generation: u32,
    /// Signs [`TokenFault::UnknownKey`] tokens; never in the JWKS.
    stray_key: Key,
    fault: Option<TokenFault>,
    advertised_issuer: Option<String>,
    codes: HashMap<String, Grant>,
    jwks_fetches: usize,
}

struct Shared {
    config: ProviderConfig,
    issuer: String,
    state: Mutex<ProviderState>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, ProviderState> {
        // A handler that panicked leaves a usable state; the test fails on
        // its own assertions.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A running provider; it stops when dropped.
pub struct TestProvider {
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for TestProvider {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl TestProvider {
    /// Starts serving on `127.0.0.1:0`; the issuer is `http://127.0.0.1:<port>`.
    pub async fn start(config: ProviderConfig) -> TestProvider {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the test OIDC provider to 127.0.0.1:0");
        let address = listener.local_addr().expect("the provider's address");
        let shared = Arc::new(Shared {
            config,
            issuer: format!("http://{address}"),
            state: Mutex::new(ProviderState {
                signed_in: None,
                key: Key::generate("key-1".into()),
                key_generation: 1,
                stray_key: Key::generate("stray".into()),
                fault: None,
                advertised_issuer: None,
                codes: HashMap::new(),
                jwks_fetches: 0,
            }),
        });
        let router = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/authorize", get(authorize))
            .route("/token", post(token))
            .with_state(shared.clone());
        let server = tokio::spawn(async move {
            let _ended = axum::serve(listener, router).await;
        });
        TestProvider { shared, server }
    }

    /// The issuer identifier, as discovery and ID tokens spell it.
    pub fn issuer(&self) -> &str {
        &self.shared.issuer
    }

    /// Whom the next authorization requests sign in (email verified).
    pub fn sign_in_as(&self, subject: &str, email: &str, name: &str) {
        self.shared.state().signed_in = Some(User {
            subject: subject.into(),
            email: email.into(),
            name: name.into(),
        });
    }

    /// Gets every ID token from now on wrong in the way `fault` says.
    pub fn misbehave(&self, fault: TokenFault) {
        self.shared.state().fault = Some(fault);
    }

    /// Issues correct ID tokens again.
    pub fn behave(&self) {
        self.shared.state().fault = None;
    }

    /// Makes the discovery document claim `issuer` instead of the real one.
    pub fn advertise_issuer(&self, issuer: &str) {
        self.shared.state().advertised_issuer = Some(issuer.into());
    }

    /// Replaces the signing key with a new one under a new kid, which the
    /// JWKS then publishes alone. Returns the new kid.
    pub fn rotate_key(&self) -> String {
        let mut state = self.shared.state();
        state.key_generation += 1;
        state.key = Key::generate(format!("key-{}", state.key_generation));
        state.key.kid.clone()
    }

    /// The kid ID tokens are signed under now.
    pub fn kid(&self) -> String {
        self.shared.state().key.kid.clone()
    }

    /// How many times the JWKS was fetched.
    pub fn jwks_fetches(&self) -> usize {
        self.shared.state().jwks_fetches
    }
}

async fn discovery(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let issuer = &shared.issuer;
    let advertised = shared.state().advertised_issuer.clone();
    Json(json!({
        "issuer": advertised.as_deref().unwrap_or(issuer),
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
        "jwks_uri": format!("{issuer}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["EdDSA"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "none"],
    }))
}

async fn jwks(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let mut state = shared.state();
    state.jwks_fetches += 1;
    Json(json!({ "keys": [state.key.jwk()] }))
}

/// No login page: signs in whoever the test chose, then redirects back.
/// An unknown client or unregistered redirect URI gets a 400 and never a
/// redirect (RFC 6749 §4.1.2.1); other problems go back as `error=`.
async fn authorize(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let param = |name: &str| query.get(name).map(String::as_str);
    if param("client_id") != Some(shared.config.client_id.as_str()) {
        return (StatusCode::BAD_REQUEST, "unknown client_id").into_response();
    }
    let Some(redirect_uri) = param("redirect_uri") else {
        return (StatusCode::BAD_REQUEST, "no redirect_uri").into_response();
    };
    if redirect_uri != shared.config.redirect_url {
        return (StatusCode::BAD_REQUEST, "redirect_uri is not registered").into_response();
    }
    let state_param = param("state");
    let back = |pairs: &[(&str, &str)]| {
        let mut location = redirect_uri.to_string();
        let mut separator = if location.contains('?') { '&' } else { '?' };
        for (name, value) in pairs.iter().chain(state_param.map(|s| ("state", s)).iter()) {
            location.push(separator);
            location.push_str(&format!("{name}={}", form_urlencode(value)));
            separator = '&';
        }
        (StatusCode::FOUND, [(header::LOCATION, location)]).into_response()
    };
    let error = |code: &str| back(&[("error", code)]);
    if param("response_type") != Some("code") {
        return error("unsupported_response_type");
    }
    if !param("scope").is_some_and(|scope| scope.split(' ').any(|s| s == "openid")) {
        return error("invalid_scope");
    }
    let (Some(code_challenge), Some("S256")) =
        (param("code_challenge"), param("code_challenge_method"))
    else {
        return error("invalid_request");
    };
    let mut state = shared.state();
    let Some(user) = state.signed_in.clone() else {
        drop(state);
        return error("login_required");
    };
    let code = URL_SAFE_NO_PAD.encode(random_bytes());
    state.codes.insert(
        code.clone(),
        Grant {
            user,
            nonce: param("nonce").map(String::from),
            code_challenge: code_challenge.into(),
            redirect_uri: redirect_uri.into(),
        },
    );
    drop(state);
    back(&[("code", &code)])
}

/// An OAuth error answer (RFC 6749 §5.2).
fn refuse(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        Json(json!({ "error": error, "error_description": description })),
    )
        .into_response()
}

async fn token(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let param = |name: &str| form.get(name).map(String::as_str);
    let config = &shared.config;
    let client_ok = match &config.client_secret {
        Some(secret) => basic_credentials(&headers)
            .is_some_and(|(id, given)| id == config.client_id && given == *secret),
        None => param("client_id") == Some(config.client_id.as_str()),
    };
    if !client_ok {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client authentication failed",
        );
    }
    if param("grant_type") != Some("authorization_code") {
        return refuse(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "only authorization_code",
        );
    }
    let mut state = shared.state();
    // Removed whatever follows: a code is good for one attempt.
    let Some(grant) = param("code").and_then(|code| state.codes.remove(code)) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "unknown or already used code",
        );
    };
    if param("redirect_uri") != Some(grant.redirect_uri.as_str()) {
        return refuse(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "redirect_uri differs from the authorization request's",
        );
    }
    let verifier = param("code_verifier").unwrap_or_default();
    if URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())) != grant.code_challenge {
        return refuse(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "PKCE verification failed",
        );
    }
    let id_token = id_token(&shared, &state, &grant);
    drop(state);
    Json(json!({
        "access_token": URL_SAFE_NO_PAD.encode(random_bytes()),
        "token_type": "Bearer",
        "expires_in": ID_TOKEN_LIFETIME_SECONDS,
        "id_token": id_token,
    }))
    .into_response()
}

/// The ID token for `grant`, got wrong as the current fault says.
fn id_token(shared: &Shared, state: &ProviderState, grant: &Grant) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs();
    let fault = state.fault;
    let (iat, exp) = if fault == Some(TokenFault::Expired) {
        (now - 7200, now - 3600)
    } else {
        (now, now + ID_TOKEN_LIFETIME_SECONDS)
    };
    let claims = json!({
        "iss": if fault == Some(TokenFault::WrongIssuer) { WRONG_ISSUER } else { &shared.issuer },
        "sub": grant.user.subject,
        "aud": if fault == Some(TokenFault::WrongAudience) {
            WRONG_AUDIENCE
        } else {
            &shared.config.client_id
        },
        "iat": iat,
        "exp": exp,
        "nonce": if fault == Some(TokenFault::WrongNonce) {
            Some("not-the-nonce-that-was-asked-for")
        } else {
            grant.nonce.as_deref()
        },
        "email": grant.user.email,
        "email_verified": true,
        "name": grant.user.name,
    });
    let key = match fault {
        Some(TokenFault::UnknownKey) => &state.stray_key,
        _ => &state.key,
    };
    let alg = match fault {
        Some(TokenFault::AlgNone) => "none",
        Some(TokenFault::Hs256) => "HS256",
        _ => "EdDSA",
    };
    let header = json!({ "alg": alg, "typ": "JWT", "kid": key.kid });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = match fault {
        Some(TokenFault::AlgNone) => Vec::new(),
        Some(TokenFault::Hs256) => {
            let secret = shared.config.client_secret.as_deref().unwrap_or("secret");
            hmac_sha256(secret.as_bytes(), signing_input.as_bytes()).to_vec()
        }
        _ => key
            .signing
            .sign(signing_input.as_bytes())
            .to_bytes()
            .to_vec(),
    };
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// The client id and secret of an `Authorization: Basic` header, each
/// form-urldecoded (RFC 6749 §2.3.1).
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let decoded = STANDARD.decode(value.strip_prefix("Basic ")?).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((form_urldecode(id)?, form_urldecode(secret)?))
}

fn form_urlencode(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for byte in raw.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                out.push(byte as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

fn form_urldecode(encoded: &str) -> Option<String> {
    let mut out = Vec::with_capacity(encoded.len());
    let mut bytes = encoded.bytes();
    while let Some(byte) = bytes.next() {
        match byte {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = [bytes.next()?, bytes.next()?];
                out.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
            }
            _ => out.push(byte),
        }
    }
    String::from_utf8(out).ok()
}

/// HMAC-SHA256 (RFC 2104), for the HS256 fault only.
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.map(|k| k ^ byte);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

fn random_bytes() -> [u8; 32] {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("system randomness");
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_sha256_is_rfc_4231s_test_case_2() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn form_urlencoding_round_trips() {
        let raw = "a b:c%d/é+";
        assert_eq!(form_urldecode(&form_urlencode(raw)).as_deref(), Some(raw));
    }
}
