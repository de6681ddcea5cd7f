//! OIDC sign-in for vendor staff: the authorization code flow with PKCE
//! (OpenID Connect Core 1.0 §3.1, RFC 7636), as a client with no HTTP
//! server code in it. The portal's routes call [`OidcClient::begin`] to send
//! a browser to the identity provider, keep the [`PendingLogin`] it returns
//! in a short-lived cookie, and call [`OidcClient::complete`] when the
//! browser comes back with `code` and `state`.
//!
//! Every failure is a typed [`OidcError`] whose message says what was wrong,
//! for the logs; what a user is shown should stay generic (an attacker
//! probing the callback learns nothing from it). [`OidcError::reason`] is a
//! short stable code for metrics labels.
//!
//! What this client refuses, and why:
//! - an issuer or endpoint that is not https, except http on a loopback host
//!   (tests and development): a token endpoint reached in the clear would
//!   hand the code and the ID token to anyone on the path;
//! - a discovery document naming another issuer (OIDC Discovery §4.3), and a
//!   provider that advertises PKCE methods without `S256`;
//! - any ID token algorithm but RS256, ES256 and EdDSA: never `none`, never
//!   HS* (an HMAC keyed with the client secret would let anyone holding the
//!   secret mint identities, and confusing a public key for an HMAC secret is
//!   the classic JWT forgery);
//! - keys that are symmetric, meant for encryption, or of another type than
//!   the token's algorithm;
//! - a token whose `iss`, `aud`, `azp`, `exp`, `iat`, `nbf` or `nonce` do not
//!   hold (§3.1.3.7), judged against the `now` the caller passes.
//!
//! Limits: every response body is read to at most [`RESPONSE_BYTES_MAX`],
//! every request has [`HTTP_TIMEOUT`], a JWKS holds at most
//! [`JWKS_KEYS_MAX`] keys, and a token naming an unknown key makes the client
//! refetch the JWKS at most once per refetch interval
//! ([`JWKS_REFETCH_INTERVAL_DEFAULT`]), so forged `kid`s cannot turn the
//! portal into an amplifier against the provider.
//!
//! The `reqwest::Client` handed to [`OidcClient::discover`] should not follow
//! redirects (`redirect::Policy::none()`): the endpoints are checked once, at
//! discovery, and a redirect would take a request elsewhere unchecked.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use reqwest::Url;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tollgate_clock::Clock;

/// The largest response body read from the provider (discovery, JWKS,
/// token endpoint); a larger one is an error, never a truncation.
pub const RESPONSE_BYTES_MAX: usize = 256 * 1024;
/// The timeout on every request to the provider, body included.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a [`PendingLogin`] may wait for the provider's answer.
pub const PENDING_LOGIN_TTL_SECONDS: u64 = 10 * 60;
/// Clock skew tolerated between us and the provider on `exp`, `iat`, `nbf`.
pub const CLOCK_LEEWAY_SECONDS: u64 = 60;
/// By default, a token naming a key we do not hold makes us refetch the
/// JWKS at most this often.
pub const JWKS_REFETCH_INTERVAL_DEFAULT: Duration = Duration::from_secs(60);
/// The most keys a JWKS may hold.
pub const JWKS_KEYS_MAX: usize = 64;
/// The longest authorization code accepted from the browser.
pub const CODE_LEN_MAX: usize = 2048;
/// The longest `state` accepted from the browser.
pub const STATE_LEN_MAX: usize = 512;
/// The longest `sub` (OIDC Core §2: at most 255 ASCII characters).
pub const SUBJECT_LEN_MAX: usize = 255;
/// How much of a provider's error text is kept in an [`OidcError`].
const PROVIDER_TEXT_LEN_MAX: usize = 200;
/// Random bytes in `state`, `nonce` and the PKCE verifier (43 base64url
/// characters: RFC 7636's minimum verifier length, 256 bits).
const RANDOM_BYTES: usize = 32;
/// The shortest `state`, `nonce` or verifier a [`PendingLogin`] may hold
/// (what [`RANDOM_BYTES`] encode to; RFC 7636's minimum verifier length).
const RANDOM_TOKEN_LEN_MIN: usize = 43;

/// The ID token algorithms accepted; nothing else ever is.
pub const ALGORITHMS_ALLOWED: [&str; 3] = ["RS256", "ES256", "EdDSA"];

/// The scopes asked for when the configuration names none.
pub const SCOPES_DEFAULT: [&str; 3] = ["openid", "email", "profile"];

/// What the portal knows about one identity provider. Its `Debug` leaves
/// the client secret out.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OidcConfig {
    /// The issuer identifier, exactly as the provider spells it in its
    /// discovery document and ID tokens (https, or http on loopback).
    pub issuer: String,
    pub client_id: String,
    /// Set: the client authenticates with `client_secret_basic`. Unset: a
    /// public client, `client_id` in the token request body (PKCE still
    /// binds the code to this login).
    pub client_secret: Option<String>,
    /// Where the provider sends the browser back; registered with it.
    pub redirect_url: String,
    /// Scopes asked for; empty means [`SCOPES_DEFAULT`]. `openid` is always
    /// asked for, listed or not.
    #[serde(default)]
    pub scopes: Vec<String>,
}

impl std::fmt::Debug for OidcConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcConfig")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("redirect_url", &self.redirect_url)
            .field("scopes", &self.scopes)
            .finish()
    }
}

impl OidcConfig {
    /// [`SCOPES_DEFAULT`] as owned strings.
    pub fn default_scopes() -> Vec<String> {
        SCOPES_DEFAULT.iter().map(|s| s.to_string()).collect()
    }

    /// The scopes asked for: the configured ones (or the default), with
    /// `openid` first.
    fn effective_scopes(&self) -> Vec<String> {
        let configured = if self.scopes.is_empty() {
            Self::default_scopes()
        } else {
            self.scopes.clone()
        };
        let mut scopes = vec!["openid".to_string()];
        for scope in configured {
            if !scopes.contains(&scope) {
                scopes.push(scope);
            }
        }
        scopes
    }
}

/// A sign-in begun and not yet completed: what the callback needs to check
/// the provider's answer. The portal keeps it in a short-lived HttpOnly
/// cookie (`SameSite=Lax`: the browser must send it on the top-level
/// redirect back from the provider); it holds secrets of this one login
/// (the PKCE verifier, the nonce), so it must not be readable by scripts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingLogin {
    pub state: String,
    pub nonce: String,
    pub code_verifier: String,
    /// Unix seconds when the login began; it expires
    /// [`PENDING_LOGIN_TTL_SECONDS`] later.
    pub created_at: u64,
}

/// Who signed in, as the provider vouches for them in a verified ID token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityClaims {
    /// `sub`: stable and unique at this issuer; the key to map to an account.
    pub subject: String,
    pub email: Option<String>,
    /// `email_verified`; absent means false. Never link an account by an
    /// email the provider has not verified.
    pub email_verified: bool,
    pub name: Option<String>,
}

/// Why discovery or a sign-in failed. Messages are for logs, not users.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("invalid OIDC configuration: {field}: {why}")]
    InvalidConfig { field: &'static str, why: String },
    #[error("{what} URL {url:?} is refused: {why}")]
    InsecureUrl {
        what: &'static str,
        url: String,
        why: &'static str,
    },
    #[error("request for the {what} failed: {source}")]
    Http {
        what: &'static str,
        #[source]
        source: reqwest::Error,
    },
    #[error("the {what} answered HTTP {status}")]
    HttpStatus { what: &'static str, status: u16 },
    #[error("the {what} is larger than {limit_bytes} bytes")]
    ResponseTooLarge {
        what: &'static str,
        limit_bytes: usize,
    },
    #[error("the {what} is not the JSON expected: {source}")]
    InvalidJson {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("the discovery document names issuer {found:?}, not the configured {expected:?}")]
    DiscoveryIssuerMismatch { expected: String, found: String },
    #[error("the provider does not support PKCE with S256 (it lists {supported:?})")]
    PkceS256Unsupported { supported: Vec<String> },
    #[error("the JWKS holds {count} keys, more than the {limit} allowed")]
    TooManyKeys { count: usize, limit: usize },
    #[error("no system randomness: {0}")]
    Random(String),
    #[error("the pending login is not one begin made (a secret is missing or short)")]
    InvalidPendingLogin,
    #[error("the returned state does not match the pending login's")]
    StateMismatch,
    #[error("the pending login began at {created_at} and expired (now {now}, lifetime {PENDING_LOGIN_TTL_SECONDS} s)")]
    PendingLoginExpired { created_at: u64, now: u64 },
    #[error("the authorization code is empty or longer than {CODE_LEN_MAX} bytes")]
    InvalidCode,
    #[error(
        "the token endpoint refused the code: HTTP {status}, error {error:?}: {description:?}"
    )]
    TokenRejected {
        status: u16,
        error: String,
        description: Option<String>,
    },
    #[error("the token response holds no id_token")]
    MissingIdToken,
    #[error("the ID token is malformed: {0}")]
    MalformedToken(String),
    #[error("the ID token's algorithm {alg:?} is not allowed (only RS256, ES256, EdDSA)")]
    AlgorithmNotAllowed { alg: String },
    #[error("the ID token's header marks extensions critical, which are not supported: {0}")]
    CriticalHeader(String),
    #[error("the ID token names no kid and the JWKS does not hold exactly one key for {alg}")]
    MissingKeyId { alg: String },
    #[error("no key with kid {kid:?} in the provider's JWKS ({refetch})")]
    UnknownKey { kid: String, refetch: &'static str },
    #[error("key {kid:?} cannot verify {alg}: {why}")]
    KeyAlgorithmMismatch {
        kid: String,
        alg: String,
        why: &'static str,
    },
    #[error("key {kid:?} is not a usable public key: {why}")]
    InvalidKey { kid: String, why: String },
    #[error("the ID token's signature does not verify with key {kid:?}")]
    BadSignature { kid: String },
    #[error("the ID token's iss {found:?} is not the issuer {expected:?}")]
    IssuerMismatch { expected: String, found: String },
    #[error("the ID token's aud {found:?} does not contain our client_id")]
    AudienceMismatch { found: Vec<String> },
    #[error("the ID token has several audiences {aud:?} and no azp naming us")]
    MissingAuthorizedParty { aud: Vec<String> },
    #[error("the ID token's azp {found:?} is not our client_id")]
    AuthorizedPartyMismatch { found: String },
    #[error("the ID token expired at {exp} (now {now}, leeway {CLOCK_LEEWAY_SECONDS} s)")]
    TokenExpired { exp: u64, now: u64 },
    #[error("the ID token was issued in the future, at {iat} (now {now}, leeway {CLOCK_LEEWAY_SECONDS} s)")]
    IssuedInFuture { iat: u64, now: u64 },
    #[error("the ID token is not valid before {nbf} (now {now}, leeway {CLOCK_LEEWAY_SECONDS} s)")]
    NotYetValid { nbf: u64, now: u64 },
    #[error("the ID token holds no nonce")]
    MissingNonce,
    #[error("the ID token's nonce is not the pending login's")]
    NonceMismatch,
    #[error("the ID token's sub is empty or longer than {SUBJECT_LEN_MAX} bytes")]
    InvalidSubject,
}

impl OidcError {
    /// A short stable code for this kind of failure (a bounded set: fit
    /// for a metric label).
    pub fn reason(&self) -> &'static str {
        match self {
            OidcError::InvalidConfig { .. } => "invalid_config",
            OidcError::InsecureUrl { .. } => "insecure_url",
            OidcError::Http { .. } => "http",
            OidcError::HttpStatus { .. } => "http_status",
            OidcError::ResponseTooLarge { .. } => "response_too_large",
            OidcError::InvalidJson { .. } => "invalid_json",
            OidcError::DiscoveryIssuerMismatch { .. } => "discovery_issuer_mismatch",
            OidcError::PkceS256Unsupported { .. } => "pkce_s256_unsupported",
            OidcError::TooManyKeys { .. } => "too_many_keys",
            OidcError::Random(_) => "random",
            OidcError::InvalidPendingLogin => "invalid_pending_login",
            OidcError::StateMismatch => "state_mismatch",
            OidcError::PendingLoginExpired { .. } => "pending_login_expired",
            OidcError::InvalidCode => "invalid_code",
            OidcError::TokenRejected { .. } => "token_rejected",
            OidcError::MissingIdToken => "missing_id_token",
            OidcError::MalformedToken(_) => "malformed_token",
            OidcError::AlgorithmNotAllowed { .. } => "algorithm_not_allowed",
            OidcError::CriticalHeader(_) => "critical_header",
            OidcError::MissingKeyId { .. } => "missing_key_id",
            OidcError::UnknownKey { .. } => "unknown_key",
            OidcError::KeyAlgorithmMismatch { .. } => "key_algorithm_mismatch",
            OidcError::InvalidKey { .. } => "invalid_key",
            OidcError::BadSignature { .. } => "bad_signature",
            OidcError::IssuerMismatch { .. } => "issuer_mismatch",
            OidcError::AudienceMismatch { .. } => "audience_mismatch",
            OidcError::MissingAuthorizedParty { .. } => "missing_authorized_party",
            OidcError::AuthorizedPartyMismatch { .. } => "authorized_party_mismatch",
            OidcError::TokenExpired { .. } => "token_expired",
            OidcError::IssuedInFuture { .. } => "issued_in_future",
            OidcError::NotYetValid { .. } => "not_yet_valid",
            OidcError::MissingNonce => "missing_nonce",
            OidcError::NonceMismatch => "nonce_mismatch",
            OidcError::InvalidSubject => "invalid_subject",
        }
    }
}

/// The fields of a discovery document this client uses
/// (OIDC Discovery §3).
#[derive(Deserialize)]
struct DiscoveryDocument {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
    #[serde(default)]
    code_challenge_methods_supported: Option<Vec<String>>,
}

/// The signing keys last fetched, and when a token naming an unknown key
/// last made us refetch them.
struct KeyCache {
    keys: Vec<Jwk>,
    last_refetch: Option<Instant>,
}

/// A client of one identity provider, discovered and holding its keys.
/// Cheap to share (`Arc`) between requests.
pub struct OidcClient {
    config: OidcConfig,
    http: reqwest::Client,
    authorization_endpoint: Url,
    token_endpoint: Url,
    jwks_uri: Url,
    jwks_refetch_interval: Duration,
    /// Held across a refetch, so concurrent logins naming a new key wait
    /// for one fetch instead of starting one each.
    keys: tokio::sync::Mutex<KeyCache>,
}

impl std::fmt::Debug for OidcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the client secret.
        f.debug_struct("OidcClient")
            .field("issuer", &self.config.issuer)
            .field("client_id", &self.config.client_id)
            .field("token_endpoint", &self.token_endpoint.as_str())
            .finish_non_exhaustive()
    }
}

impl OidcClient {
    /// Fetches the provider's discovery document and its JWKS, and checks
    /// them: the document's issuer must be the configured one exactly, and
    /// every endpoint https (or http on loopback).
    pub async fn discover(
        config: OidcConfig,
        http: reqwest::Client,
    ) -> Result<OidcClient, OidcError> {
        let issuer_url = checked_url("issuer", &config.issuer)?;
        if issuer_url.query().is_some() || issuer_url.fragment().is_some() {
            return Err(OidcError::InvalidConfig {
                field: "issuer",
                why: "an issuer has no query or fragment".into(),
            });
        }
        if config.client_id.is_empty() {
            return Err(OidcError::InvalidConfig {
                field: "client_id",
                why: "empty".into(),
            });
        }
        if let Err(error) = Url::parse(&config.redirect_url) {
            return Err(OidcError::InvalidConfig {
                field: "redirect_url",
                why: error.to_string(),
            });
        }
        // OIDC Discovery §4: a terminating `/` is removed before appending.
        let discovery_url = checked_url(
            "discovery",
            &format!(
                "{}/.well-known/openid-configuration",
                config.issuer.trim_end_matches('/')
            ),
        )?;
        let document: DiscoveryDocument =
            get_json(&http, discovery_url, "discovery document").await?;
        if document.issuer != config.issuer {
            return Err(OidcError::DiscoveryIssuerMismatch {
                expected: config.issuer.clone(),
                found: clip(&document.issuer),
            });
        }
        if let Some(supported) = document.code_challenge_methods_supported {
            if !supported.iter().any(|method| method == "S256") {
                return Err(OidcError::PkceS256Unsupported { supported });
            }
        }
        let authorization_endpoint =
            checked_url("authorization_endpoint", &document.authorization_endpoint)?;
        let token_endpoint = checked_url("token_endpoint", &document.token_endpoint)?;
        let jwks_uri = checked_url("jwks_uri", &document.jwks_uri)?;
        let keys = fetch_keys(&http, &jwks_uri).await?;
        Ok(OidcClient {
            config,
            http,
            authorization_endpoint,
            token_endpoint,
            jwks_uri,
            jwks_refetch_interval: JWKS_REFETCH_INTERVAL_DEFAULT,
            keys: tokio::sync::Mutex::new(KeyCache {
                keys,
                last_refetch: None,
            }),
        })
    }

    /// Sets how often a token naming an unknown key may make us refetch the
    /// JWKS (default [`JWKS_REFETCH_INTERVAL_DEFAULT`]).
    pub fn with_jwks_refetch_interval(mut self, interval: Duration) -> OidcClient {
        self.jwks_refetch_interval = interval;
        self
    }

    pub fn config(&self) -> &OidcConfig {
        &self.config
    }

    /// Begins a sign-in now, as `clock` reads it: see
    /// [`OidcClient::begin_at`].
    pub fn begin(&self, clock: &Clock) -> Result<(String, PendingLogin), OidcError> {
        let now = clock.since_epoch().map_or(0, |since| since.as_secs());
        self.begin_at(now)
    }

    /// Begins a sign-in at `now` (Unix seconds): the URL to send the
    /// browser to, and what the callback needs to check the answer (a
    /// fresh random `state`, `nonce` and PKCE S256 verifier).
    pub fn begin_at(&self, now: u64) -> Result<(String, PendingLogin), OidcError> {
        let pending = PendingLogin {
            state: random_token()?,
            nonce: random_token()?,
            code_verifier: random_token()?,
            created_at: now,
        };
        let mut url = self.authorization_endpoint.clone();
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.config.client_id)
            .append_pair("redirect_uri", &self.config.redirect_url)
            .append_pair("scope", &self.config.effective_scopes().join(" "))
            .append_pair("state", &pending.state)
            .append_pair("nonce", &pending.nonce)
            .append_pair("code_challenge", &pkce_challenge(&pending.code_verifier))
            .append_pair("code_challenge_method", "S256");
        Ok((url.into(), pending))
    }

    /// Completes a sign-in: checks the browser's `state` against the
    /// pending login, exchanges `code` at the token endpoint and verifies
    /// the ID token, judging its times against `now` (Unix seconds).
    pub async fn complete(
        &self,
        pending: &PendingLogin,
        returned_state: &str,
        code: &str,
        now: u64,
    ) -> Result<IdentityClaims, OidcError> {
        // A pending login comes back from a cookie: one with an empty
        // secret would match an empty `state` or `nonce`.
        if [&pending.state, &pending.nonce, &pending.code_verifier]
            .iter()
            .any(|secret| secret.len() < RANDOM_TOKEN_LEN_MIN)
        {
            return Err(OidcError::InvalidPendingLogin);
        }
        if returned_state.len() > STATE_LEN_MAX
            || !constant_time_eq(returned_state.as_bytes(), pending.state.as_bytes())
        {
            return Err(OidcError::StateMismatch);
        }
        let expires_at = pending.created_at.saturating_add(PENDING_LOGIN_TTL_SECONDS);
        if now >= expires_at || pending.created_at > now.saturating_add(CLOCK_LEEWAY_SECONDS) {
            return Err(OidcError::PendingLoginExpired {
                created_at: pending.created_at,
                now,
            });
        }
        if code.is_empty() || code.len() > CODE_LEN_MAX {
            return Err(OidcError::InvalidCode);
        }
        let id_token = self.exchange_code(pending, code).await?;
        self.verify_id_token(&id_token, &pending.nonce, now).await
    }

    /// The token request (RFC 6749 §4.1.3 with RFC 7636's verifier): the
    /// ID token it answers with.
    async fn exchange_code(&self, pending: &PendingLogin, code: &str) -> Result<String, OidcError> {
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", self.config.redirect_url.as_str()),
            ("code_verifier", pending.code_verifier.as_str()),
        ];
        let mut request = self
            .http
            .post(self.token_endpoint.clone())
            .header(reqwest::header::ACCEPT, "application/json");
        match &self.config.client_secret {
            Some(secret) => {
                // client_secret_basic: RFC 6749 §2.3.1 form-encodes both
                // before they are joined (reqwest's basic_auth does not).
                let credentials = format!(
                    "{}:{}",
                    form_urlencode(&self.config.client_id),
                    form_urlencode(secret)
                );
                let encoded = base64::engine::general_purpose::STANDARD.encode(credentials);
                request =
                    request.header(reqwest::header::AUTHORIZATION, format!("Basic {encoded}"));
            }
            None => form.push(("client_id", self.config.client_id.as_str())),
        }
        let what = "token endpoint";
        let response = request
            .form(&form)
            .timeout(HTTP_TIMEOUT)
            .send()
            .await
            .map_err(|source| OidcError::Http { what, source })?;
        let status = response.status();
        let body = read_bounded(response, what).await?;
        if !status.is_success() {
            #[derive(Deserialize)]
            struct ErrorBody {
                error: String,
                error_description: Option<String>,
            }
            return Err(match serde_json::from_slice::<ErrorBody>(&body) {
                Ok(refusal) => OidcError::TokenRejected {
                    status: status.as_u16(),
                    error: clip(&refusal.error),
                    description: refusal.error_description.as_deref().map(clip),
                },
                Err(_) => OidcError::HttpStatus {
                    what,
                    status: status.as_u16(),
                },
            });
        }
        #[derive(Deserialize)]
        struct TokenResponse {
            id_token: Option<String>,
        }
        let answer: TokenResponse = serde_json::from_slice(&body)
            .map_err(|source| OidcError::InvalidJson { what, source })?;
        answer.id_token.ok_or(OidcError::MissingIdToken)
    }

    /// OIDC Core §3.1.3.7: the signature with a key from the provider's
    /// JWKS under an allowed algorithm, then the claims.
    async fn verify_id_token(
        &self,
        token: &str,
        expected_nonce: &str,
        now: u64,
    ) -> Result<IdentityClaims, OidcError> {
        let header = TokenHeader::parse(token)?;
        // Checked on the raw header, before anything else reads the token:
        // jsonwebtoken cannot even represent `none`, so without this the
        // refusal would be a vague parse error.
        let algorithm = match header.alg.as_str() {
            "RS256" => Algorithm::RS256,
            "ES256" => Algorithm::ES256,
            "EdDSA" => Algorithm::EdDSA,
            _ => {
                return Err(OidcError::AlgorithmNotAllowed {
                    alg: clip(&header.alg),
                })
            }
        };
        if let Some(crit) = header.crit {
            return Err(OidcError::CriticalHeader(clip(&crit.to_string())));
        }
        let jwk = self.key_for(header.kid.as_deref(), &header.alg).await?;
        let kid = jwk.common.key_id.clone().unwrap_or_default();
        check_key_fits(&jwk, &kid, &header.alg)?;
        let key = DecodingKey::from_jwk(&jwk).map_err(|error| OidcError::InvalidKey {
            kid: kid.clone(),
            why: error.to_string(),
        })?;

        // jsonwebtoken checks the signature only; the claims are checked
        // below against the caller's `now` (its own checks read the clock).
        let mut validation = Validation::new(algorithm);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        let claims = match jsonwebtoken::decode::<IdTokenClaims>(token, &key, &validation) {
            Ok(data) => data.claims,
            Err(error) => {
                return Err(match error.kind() {
                    jsonwebtoken::errors::ErrorKind::InvalidSignature => {
                        OidcError::BadSignature { kid }
                    }
                    _ => OidcError::MalformedToken(error.to_string()),
                })
            }
        };
        check_claims(
            claims,
            &self.config.issuer,
            &self.config.client_id,
            expected_nonce,
            now,
        )
    }

    /// The key a token names: from the cache, else from one refetch of the
    /// JWKS if the last refetch was long enough ago (key rotation), else
    /// [`OidcError::UnknownKey`].
    async fn key_for(&self, kid: Option<&str>, alg: &str) -> Result<Jwk, OidcError> {
        let mut cache = self.keys.lock().await;
        let Some(kid) = kid else {
            // OIDC Core §10.1: a kid may be left out when the JWKS holds
            // one key for the algorithm; never guess among several.
            let mut fitting = cache
                .keys
                .iter()
                .filter(|jwk| check_key_fits(jwk, "", alg).is_ok());
            return match (fitting.next(), fitting.next()) {
                (Some(jwk), None) => Ok(jwk.clone()),
                _ => Err(OidcError::MissingKeyId {
                    alg: alg.to_string(),
                }),
            };
        };
        if let Some(jwk) = find_key(&cache.keys, kid) {
            return Ok(jwk);
        }
        let refetch_allowed = cache
            .last_refetch
            .is_none_or(|last| last.elapsed() >= self.jwks_refetch_interval);
        if !refetch_allowed {
            return Err(OidcError::UnknownKey {
                kid: clip(kid),
                refetch: "refetch suppressed: the JWKS was refetched recently",
            });
        }
        // Counted before the fetch, so a failing provider is not hammered.
        cache.last_refetch = Some(Instant::now());
        cache.keys = fetch_keys(&self.http, &self.jwks_uri).await?;
        find_key(&cache.keys, kid).ok_or_else(|| OidcError::UnknownKey {
            kid: clip(kid),
            refetch: "not there after refetching the JWKS",
        })
    }
}

/// OIDC Core §3.1.3.7, steps 2-11 after the signature: the claims of a
/// verified ID token, judged against `now`. Pure, so tested by table.
fn check_claims(
    claims: IdTokenClaims,
    issuer: &str,
    client_id: &str,
    expected_nonce: &str,
    now: u64,
) -> Result<IdentityClaims, OidcError> {
    if claims.iss != issuer {
        return Err(OidcError::IssuerMismatch {
            expected: issuer.to_string(),
            found: clip(&claims.iss),
        });
    }
    let aud = claims.aud.into_vec();
    if !aud.iter().any(|a| a == client_id) {
        return Err(OidcError::AudienceMismatch {
            found: aud.iter().map(|a| clip(a)).collect(),
        });
    }
    match &claims.azp {
        Some(azp) if azp != client_id => {
            return Err(OidcError::AuthorizedPartyMismatch { found: clip(azp) })
        }
        None if aud.len() > 1 => {
            return Err(OidcError::MissingAuthorizedParty {
                aud: aud.iter().map(|a| clip(a)).collect(),
            })
        }
        _ => {}
    }
    if claims.exp.saturating_add(CLOCK_LEEWAY_SECONDS) <= now {
        return Err(OidcError::TokenExpired {
            exp: claims.exp,
            now,
        });
    }
    if claims.iat > now.saturating_add(CLOCK_LEEWAY_SECONDS) {
        return Err(OidcError::IssuedInFuture {
            iat: claims.iat,
            now,
        });
    }
    if let Some(nbf) = claims.nbf {
        if nbf > now.saturating_add(CLOCK_LEEWAY_SECONDS) {
            return Err(OidcError::NotYetValid { nbf, now });
        }
    }
    match &claims.nonce {
        None => return Err(OidcError::MissingNonce),
        Some(nonce) if !constant_time_eq(nonce.as_bytes(), expected_nonce.as_bytes()) => {
            return Err(OidcError::NonceMismatch)
        }
        Some(_) => {}
    }
    if claims.sub.is_empty() || claims.sub.len() > SUBJECT_LEN_MAX {
        return Err(OidcError::InvalidSubject);
    }
    Ok(IdentityClaims {
        subject: claims.sub,
        email: claims.email,
        email_verified: claims.email_verified.is_some_and(|v| v.is_true()),
        name: claims.name,
    })
}

fn find_key(keys: &[Jwk], kid: &str) -> Option<Jwk> {
    keys.iter()
        .find(|jwk| jwk.common.key_id.as_deref() == Some(kid))
        .cloned()
}

/// Whether `jwk` may verify a token signed with `alg`: its type, curve,
/// use and declared algorithm must all fit. An HMAC key (`oct`) never
/// does: the JWKS is public.
fn check_key_fits(jwk: &Jwk, kid: &str, alg: &str) -> Result<(), OidcError> {
    let mismatch = |why| {
        Err(OidcError::KeyAlgorithmMismatch {
            kid: kid.to_string(),
            alg: alg.to_string(),
            why,
        })
    };
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return mismatch("the key is for encryption");
    }
    let declared = jwk
        .common
        .key_algorithm
        .as_ref()
        .map(|declared| match declared {
            KeyAlgorithm::RS256 => "RS256",
            KeyAlgorithm::ES256 => "ES256",
            KeyAlgorithm::EdDSA => "EdDSA",
            _ => "another",
        });
    if declared.is_some_and(|declared| declared != alg) {
        return mismatch("the key declares another algorithm");
    }
    let fits = match (&jwk.algorithm, alg) {
        (AlgorithmParameters::RSA(_), "RS256") => true,
        (AlgorithmParameters::EllipticCurve(ec), "ES256") => ec.curve == EllipticCurve::P256,
        (AlgorithmParameters::OctetKeyPair(okp), "EdDSA") => okp.curve == EllipticCurve::Ed25519,
        _ => false,
    };
    if fits {
        Ok(())
    } else {
        mismatch("the key's type or curve is not the algorithm's")
    }
}

/// The JOSE header fields looked at before any verification.
#[derive(Deserialize)]
struct TokenHeader {
    alg: String,
    kid: Option<String>,
    crit: Option<serde_json::Value>,
}

impl TokenHeader {
    fn parse(token: &str) -> Result<TokenHeader, OidcError> {
        let mut parts = token.split('.');
        let (Some(header), Some(_payload), Some(_signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(OidcError::MalformedToken(
                "not three dot-separated parts (a JWS in compact form)".into(),
            ));
        };
        let bytes = URL_SAFE_NO_PAD
            .decode(header)
            .map_err(|error| OidcError::MalformedToken(format!("header: {error}")))?;
        serde_json::from_slice(&bytes)
            .map_err(|error| OidcError::MalformedToken(format!("header: {error}")))
    }
}

/// The ID token claims this client reads (OIDC Core §2, §5.1).
#[derive(Deserialize)]
struct IdTokenClaims {
    iss: String,
    sub: String,
    aud: Audience,
    exp: u64,
    iat: u64,
    nbf: Option<u64>,
    nonce: Option<String>,
    azp: Option<String>,
    email: Option<String>,
    email_verified: Option<Flag>,
    name: Option<String>,
}

/// `aud`: one string or an array of them.
#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    fn into_vec(self) -> Vec<String> {
        match self {
            Audience::One(one) => vec![one],
            Audience::Many(many) => many,
        }
    }
}

/// A boolean claim; some providers send `"true"` as a string.
#[derive(Deserialize)]
#[serde(untagged)]
enum Flag {
    Bool(bool),
    Text(String),
}

impl Flag {
    fn is_true(&self) -> bool {
        match self {
            Flag::Bool(value) => *value,
            Flag::Text(text) => text == "true",
        }
    }
}

/// `raw` as a URL if it may be used for `what`: https anywhere, http only
/// on a loopback host.
fn checked_url(what: &'static str, raw: &str) -> Result<Url, OidcError> {
    let refuse = |why| OidcError::InsecureUrl {
        what,
        url: clip(raw),
        why,
    };
    let url = Url::parse(raw).map_err(|_| refuse("not an absolute URL"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(refuse("credentials in a URL are not allowed"));
    }
    match url.scheme() {
        "https" => Ok(url),
        "http" if is_loopback(&url) => Ok(url),
        "http" => Err(refuse("http is allowed only on a loopback host; use https")),
        _ => Err(refuse("only https (or http on loopback) is allowed")),
    }
}

fn is_loopback(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    // IPv6 hosts come bracketed; the URL parser has already normalised
    // IPv4 forms (`127.1`, `0x7f.0.0.1`) to dotted decimal.
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

async fn get_json<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    url: Url,
    what: &'static str,
) -> Result<T, OidcError> {
    let response = http
        .get(url)
        .header(reqwest::header::ACCEPT, "application/json")
        .timeout(HTTP_TIMEOUT)
        .send()
        .await
        .map_err(|source| OidcError::Http { what, source })?;
    let status = response.status();
    if !status.is_success() {
        return Err(OidcError::HttpStatus {
            what,
            status: status.as_u16(),
        });
    }
    let body = read_bounded(response, what).await?;
    serde_json::from_slice(&body).map_err(|source| OidcError::InvalidJson { what, source })
}

/// The JWKS's signing keys of a kind we can use. Keys we cannot parse
/// (other types, other parameters) are skipped, not fatal: a provider may
/// publish keys for other clients.
async fn fetch_keys(http: &reqwest::Client, jwks_uri: &Url) -> Result<Vec<Jwk>, OidcError> {
    #[derive(Deserialize)]
    struct RawJwkSet {
        keys: Vec<serde_json::Value>,
    }
    let set: RawJwkSet = get_json(http, jwks_uri.clone(), "JWKS").await?;
    if set.keys.len() > JWKS_KEYS_MAX {
        return Err(OidcError::TooManyKeys {
            count: set.keys.len(),
            limit: JWKS_KEYS_MAX,
        });
    }
    Ok(set
        .keys
        .into_iter()
        .filter_map(|key| serde_json::from_value::<Jwk>(key).ok())
        .filter(|jwk| !matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)))
        .collect())
}

/// A response body, refused once it passes [`RESPONSE_BYTES_MAX`] (read
/// chunk by chunk: a lying or absent Content-Length does not matter).
async fn read_bounded(
    mut response: reqwest::Response,
    what: &'static str,
) -> Result<Vec<u8>, OidcError> {
    let too_large = OidcError::ResponseTooLarge {
        what,
        limit_bytes: RESPONSE_BYTES_MAX,
    };
    if response
        .content_length()
        .is_some_and(|length| length > RESPONSE_BYTES_MAX as u64)
    {
        return Err(too_large);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|source| OidcError::Http { what, source })?
    {
        if body.len() + chunk.len() > RESPONSE_BYTES_MAX {
            return Err(too_large);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// 32 random bytes from the OS, base64url without padding.
fn random_token() -> Result<String, OidcError> {
    let mut bytes = [0u8; RANDOM_BYTES];
    tollgate_clock::random::fill(&mut bytes)
        .map_err(|error| OidcError::Random(error.to_string()))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// RFC 7636 §4.2: `BASE64URL(SHA256(ASCII(code_verifier)))`.
pub fn pkce_challenge(code_verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(code_verifier.as_bytes()))
}

/// Equality whose time does not depend on where the inputs differ (the
/// length is not secret: ours is always 43 characters).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let difference = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(difference) == 0
}

/// application/x-www-form-urlencoded, as RFC 6749 §2.3.1 asks of the
/// client id and secret before they go into a Basic header.
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

/// Text from the provider or the browser, cut short for a log line.
fn clip(text: &str) -> String {
    if text.len() <= PROVIDER_TEXT_LEN_MAX {
        return text.to_string();
    }
    let mut end = PROVIDER_TEXT_LEN_MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pkce_challenge_is_rfc_7636s_example() {
        // RFC 7636 Appendix B.
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn only_https_or_loopback_http_urls_are_allowed() {
        for allowed in [
            "https://idp.example.com",
            "http://127.0.0.1:8080/realms/x",
            "http://127.9.9.9/",
            "http://[::1]:9000",
            "http://localhost:3000",
        ] {
            assert!(checked_url("issuer", allowed).is_ok(), "{allowed}");
        }
        for refused in [
            "http://idp.example.com",
            "http://10.0.0.1",
            "http://localhost.example.com",
            "ftp://127.0.0.1",
            "https://user:pw@idp.example.com",
            "idp.example.com",
        ] {
            assert!(
                matches!(
                    checked_url("issuer", refused),
                    Err(OidcError::InsecureUrl { .. })
                ),
                "{refused}"
            );
        }
    }

    #[test]
    fn scopes_always_ask_for_openid() {
        let mut config = OidcConfig {
            issuer: "https://idp.example.com".into(),
            client_id: "c".into(),
            client_secret: None,
            redirect_url: "https://portal.example.com/cb".into(),
            scopes: vec![],
        };
        assert_eq!(config.effective_scopes(), ["openid", "email", "profile"]);
        config.scopes = vec!["email".into(), "openid".into()];
        assert_eq!(config.effective_scopes(), ["openid", "email"]);
    }

    const ISSUER: &str = "https://idp.example.com";
    const CLIENT: &str = "portal";
    const NONCE: &str = "the-nonce";
    const NOW: u64 = 1_800_000_000;

    /// A valid ID token's claims, as JSON, for rows to spoil.
    fn good_claims() -> serde_json::Value {
        serde_json::json!({
            "iss": ISSUER, "sub": "u1", "aud": CLIENT, "exp": NOW + 300, "iat": NOW,
            "nonce": NONCE, "email": "u1@example.com", "email_verified": true, "name": "U One",
        })
    }

    /// Every row: a change to the good claims, and the reason expected
    /// (`None`: accepted).
    #[test]
    fn claims_are_checked_by_table() {
        let leeway = CLOCK_LEEWAY_SECONDS;
        let rows: Vec<(&str, serde_json::Value, Option<&str>)> = vec![
            ("valid", serde_json::json!({}), None),
            (
                "another issuer",
                serde_json::json!({"iss": "https://evil.example"}),
                Some("issuer_mismatch"),
            ),
            (
                "issuer with a trailing slash",
                serde_json::json!({"iss": "https://idp.example.com/"}),
                Some("issuer_mismatch"),
            ),
            (
                "another audience",
                serde_json::json!({"aud": "other"}),
                Some("audience_mismatch"),
            ),
            (
                "audience list with us and azp us",
                serde_json::json!({"aud": [CLIENT, "other"], "azp": CLIENT}),
                None,
            ),
            (
                "audience list without azp",
                serde_json::json!({"aud": [CLIENT, "other"]}),
                Some("missing_authorized_party"),
            ),
            (
                "azp of another client",
                serde_json::json!({"azp": "other"}),
                Some("authorized_party_mismatch"),
            ),
            (
                "expired past the leeway",
                serde_json::json!({"exp": NOW - leeway}),
                Some("token_expired"),
            ),
            (
                "expired within the leeway",
                serde_json::json!({"exp": NOW - leeway + 1}),
                None,
            ),
            (
                "issued in the future",
                serde_json::json!({"iat": NOW + leeway + 1}),
                Some("issued_in_future"),
            ),
            (
                "issued within the leeway ahead",
                serde_json::json!({"iat": NOW + leeway}),
                None,
            ),
            (
                "not yet valid",
                serde_json::json!({"nbf": NOW + leeway + 1}),
                Some("not_yet_valid"),
            ),
            (
                "no nonce",
                serde_json::json!({"nonce": null}),
                Some("missing_nonce"),
            ),
            (
                "another nonce",
                serde_json::json!({"nonce": "the-nonc3"}),
                Some("nonce_mismatch"),
            ),
            (
                "empty subject",
                serde_json::json!({"sub": ""}),
                Some("invalid_subject"),
            ),
            (
                "subject too long",
                serde_json::json!({"sub": "x".repeat(SUBJECT_LEN_MAX + 1)}),
                Some("invalid_subject"),
            ),
        ];
        let mut failures = Vec::new();
        for (name, change, expected) in rows {
            let mut claims = good_claims();
            for (key, value) in change.as_object().expect("an object") {
                claims[key] = value.clone();
            }
            let claims: IdTokenClaims = serde_json::from_value(claims).expect("claims");
            let got = check_claims(claims, ISSUER, CLIENT, NONCE, NOW).map_err(|e| e.reason());
            let ok = match (expected, &got) {
                (None, Ok(_)) => true,
                (Some(reason), Err(got)) => reason == *got,
                _ => false,
            };
            if !ok {
                failures.push(format!("{name}: expected {expected:?}, got {got:?}"));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn a_verified_token_yields_its_identity() {
        let mut claims = good_claims();
        claims["email_verified"] = serde_json::json!("true");
        let claims: IdTokenClaims = serde_json::from_value(claims).expect("claims");
        let identity = check_claims(claims, ISSUER, CLIENT, NONCE, NOW).expect("valid");
        assert_eq!(
            identity,
            IdentityClaims {
                subject: "u1".into(),
                email: Some("u1@example.com".into()),
                email_verified: true,
                name: Some("U One".into()),
            }
        );
        let mut claims = good_claims();
        claims
            .as_object_mut()
            .expect("an object")
            .remove("email_verified");
        let claims: IdTokenClaims = serde_json::from_value(claims).expect("claims");
        let identity = check_claims(claims, ISSUER, CLIENT, NONCE, NOW).expect("valid");
        assert!(!identity.email_verified, "absent means not verified");
    }

    #[test]
    fn a_key_must_fit_the_algorithm() {
        let okp = serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"});
        let ec = serde_json::json!({"kty": "EC", "crv": "P-256",
            "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"});
        let rsa = serde_json::json!({"kty": "RSA", "n": "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw", "e": "AQAB"});
        let with = |key: &serde_json::Value, extra: serde_json::Value| -> Jwk {
            let mut key = key.clone();
            for (name, value) in extra.as_object().expect("an object") {
                key[name] = value.clone();
            }
            serde_json::from_value(key).expect("a JWK")
        };
        let none = serde_json::json!({});
        for (key, alg) in [(&okp, "EdDSA"), (&ec, "ES256"), (&rsa, "RS256")] {
            assert!(
                check_key_fits(&with(key, none.clone()), "k", alg).is_ok(),
                "{alg}"
            );
            for other in ["EdDSA", "ES256", "RS256"]
                .into_iter()
                .filter(|o| *o != alg)
            {
                assert!(
                    check_key_fits(&with(key, none.clone()), "k", other).is_err(),
                    "{alg} key for {other}"
                );
            }
        }
        assert!(
            check_key_fits(&with(&okp, serde_json::json!({"use": "enc"})), "k", "EdDSA").is_err()
        );
        assert!(check_key_fits(
            &with(&okp, serde_json::json!({"alg": "ES256"})),
            "k",
            "EdDSA"
        )
        .is_err());
        assert!(check_key_fits(
            &with(&okp, serde_json::json!({"alg": "EdDSA", "use": "sig"})),
            "k",
            "EdDSA"
        )
        .is_ok());
        let secret: Jwk =
            serde_json::from_value(serde_json::json!({"kty": "oct", "k": "c2VjcmV0"}))
                .expect("a JWK");
        assert!(
            check_key_fits(&secret, "k", "RS256").is_err(),
            "an HMAC key never fits"
        );
    }

    #[test]
    fn form_urlencoding_escapes_everything_but_the_unreserved() {
        assert_eq!(form_urlencode("a b:c%d/é"), "a+b%3Ac%25d%2F%C3%A9");
    }
}
