//! Sign-in, sessions and sign-out; invitations; OIDC for the vendor's staff.
//!
//! - Passwords are argon2id (19 MiB, 2 passes: OWASP's minimum), hashed off
//!   the async threads, at most [`crate::PortalConfig::hash_concurrency`]
//!   at once. An unknown user costs the same hash as a known one.
//! - A session is a random 256-bit token in an HttpOnly, SameSite=Lax,
//!   `__Host-` cookie; the origin keeps only its SHA-256, so a copy of the
//!   state signs no one in, and sign-out ends it on every origin node.
//! - Wrong passwords are counted in the replicated state:
//!   [`crate::PortalConfig::lock_after`] in a row lock the user out for
//!   [`crate::PortalConfig::lock_seconds`], whichever node is asked.

use crate::oidc::{OidcClient, PendingLogin};
use crate::web::{
    check_form, cookie, cookie_name, page, random_token, set_cookie, sha256_hex, Chrome,
    ChromeUser, NavLink, PageError, Same, COOKIE_FORM, COOKIE_OIDC,
};
use crate::{Portal, Shared, BASE};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use askama::Template;
use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use serde::Deserialize;
use std::collections::BTreeSet;
use std::sync::LazyLock;
use std::time::Duration;
use tollgate_api::auth::Caller;
use tollgate_api::OriginStore;
use tollgate_origin::portal::{PortalRole, PortalSession, PortalUser, SignInMethod};
use tollgate_origin::{keys, ApiKeyRecord, KeyOwner, Op, OriginCommand, OriginResponse, Scope};

/// Shortest and longest password accepted, in characters.
pub const PASSWORD_CHARS_MIN: usize = 12;
pub const PASSWORD_CHARS_MAX: usize = 128;
/// Sign-ins by outcome: `ok`, `wrong_password` (counted toward lockout),
/// `refused` (unknown, disabled or locked-out user: told apart only here).
const SIGN_INS: &str = "tollgate_portal_sign_ins_total";
/// How long a follower waits to apply a session the leader committed.
const APPLY_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("a password must be {PASSWORD_CHARS_MIN} to {PASSWORD_CHARS_MAX} characters")]
    Length,
    #[error("hashing the password failed: {0}")]
    Hash(String),
}

fn argon2() -> Result<Argon2<'static>, PasswordError> {
    let params =
        Params::new(19 * 1024, 2, 1, None).map_err(|e| PasswordError::Hash(e.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// An argon2id PHC string for `password`, with a random salt. Blocking
/// (tens of milliseconds): call it off the async threads.
pub fn hash_password(password: &str) -> Result<String, PasswordError> {
    let chars = password.chars().count();
    if !(PASSWORD_CHARS_MIN..=PASSWORD_CHARS_MAX).contains(&chars) {
        return Err(PasswordError::Length);
    }
    let mut salt = [0u8; 16];
    tollgate_clock::random::fill(&mut salt).map_err(|e| PasswordError::Hash(e.to_string()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| PasswordError::Hash(e.to_string()))?;
    Ok(argon2()?
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| PasswordError::Hash(e.to_string()))?
        .to_string())
}

/// Whether `password` matches `hash`; a malformed hash matches nothing.
fn verify_password(hash: &str, password: &str) -> bool {
    if password.chars().count() > PASSWORD_CHARS_MAX {
        return false;
    }
    match PasswordHash::new(hash) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// Verified in place of a user that does not exist, so that the answer
/// takes as long as for one that does.
static DUMMY_HASH: LazyLock<Option<String>> =
    LazyLock::new(|| hash_password("not-a-password-anyone-has").ok());

impl<S: OriginStore> Portal<S> {
    /// Runs `verify_password` on the blocking pool, at most
    /// `hash_concurrency` at once.
    async fn verify(&self, hash: Option<String>, password: String) -> Result<bool, PageError> {
        let permit = tokio::time::timeout(
            Duration::from_millis(self.config.hash_wait_ms),
            self.hashing.acquire(),
        )
        .await
        .map_err(|_| PageError::Unavailable("too many sign-ins at once".into()))?
        .map_err(|_| PageError::Unavailable("the portal is stopping".into()))?;
        let result = tokio::task::spawn_blocking(move || match hash {
            Some(hash) => verify_password(&hash, &password),
            None => {
                if let Some(dummy) = DUMMY_HASH.as_deref() {
                    verify_password(dummy, &password);
                }
                false
            }
        })
        .await
        .map_err(|e| PageError::Internal(format!("password check: {e}")))?;
        drop(permit);
        Ok(result)
    }

    /// Hashes a new password on the blocking pool.
    pub(crate) async fn hash(&self, password: String) -> Result<String, PageError> {
        let permit = tokio::time::timeout(
            Duration::from_millis(self.config.hash_wait_ms),
            self.hashing.acquire(),
        )
        .await
        .map_err(|_| PageError::Unavailable("too many password changes at once".into()))?
        .map_err(|_| PageError::Unavailable("the portal is stopping".into()))?;
        let result = tokio::task::spawn_blocking(move || hash_password(&password))
            .await
            .map_err(|e| PageError::Internal(format!("password hash: {e}")))?;
        drop(permit);
        result.map_err(|e| match e {
            PasswordError::Length => PageError::Invalid(e.to_string()),
            PasswordError::Hash(m) => PageError::Internal(m),
        })
    }

    /// Commits one of the portal's own commands as `actor`; a refusal is
    /// returned as its message.
    pub(crate) async fn commit(
        &self,
        actor: &str,
        op: Op,
    ) -> Result<Result<u64, String>, PageError> {
        let command = OriginCommand {
            actor: format!("portal:{actor}"),
            at: self.app.clock.now(),
            reason: None,
            op,
        };
        let revision = match self.app.store.write(command).await? {
            OriginResponse::Committed { revision, .. }
            | OriginResponse::Leased { revision, .. }
            | OriginResponse::Unchanged { revision, .. } => revision,
            OriginResponse::Rejected(r) => return Ok(Err(r.message)),
        };
        // Forwarded writes return before this node applies them: the next
        // page (read here) must see it.
        self.app.store.wait_applied(revision, APPLY_WAIT).await?;
        Ok(Ok(revision))
    }

    pub(crate) fn read_user(&self, id: &str) -> Result<Option<PortalUser>, PageError> {
        read_json(&*self.app.store, &keys::portal_user(id))
    }

    /// Refuses a form sent before any session (sign-in, invitation)
    /// without the token its page set as a cookie.
    fn check_signed_out_form(&self, headers: &HeaderMap, sent: &str) -> Result<(), PageError> {
        let expected = cookie(
            headers,
            &cookie_name(COOKIE_FORM, self.config.secure_cookies),
        );
        check_form(headers, sent, expected.unwrap_or(""))
    }

    fn session_cookie(&self) -> String {
        cookie_name("tg_session", self.config.secure_cookies)
    }
}

pub(crate) fn read_json<S: OriginStore, T: serde::de::DeserializeOwned>(
    store: &S,
    key: &[u8],
) -> Result<Option<T>, PageError> {
    match store.get(key)? {
        Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            PageError::Internal(format!(
                "stored {} is unreadable: {e}",
                String::from_utf8_lossy(key)
            ))
        }),
        None => Ok(None),
    }
}

/// The API key a portal user acts as, for one request: the scopes of the
/// role, the user's account or the tenant.
pub(crate) fn caller_for(user: &PortalUser) -> Caller {
    let scopes: BTreeSet<Scope> = match user.role {
        PortalRole::VendorAdmin => [Scope::Admin].into(),
        PortalRole::VendorSupport => {
            [Scope::Read, Scope::AccessApprove, Scope::AccountsWrite].into()
        }
        PortalRole::CustomerAdmin => {
            [Scope::Read, Scope::AccessRequest, Scope::AccountsWrite].into()
        }
        PortalRole::CustomerMember => [Scope::Read, Scope::AccessRequest].into(),
    };
    let owner = match &user.account {
        Some(account) => KeyOwner::Account(account.clone()),
        None => KeyOwner::Tenant,
    };
    Caller {
        key: ApiKeyRecord {
            id: format!("portal:{}", user.id),
            name: user.name.clone(),
            secret_sha256: String::new(),
            scopes,
            created_at: user.created_at,
            revoked: false,
            owner,
        },
    }
}

/// The signed-in user of a request.
pub(crate) struct Viewer {
    pub user: PortalUser,
    pub session: PortalSession,
    pub caller: Caller,
}

impl Viewer {
    pub fn is_vendor(&self) -> bool {
        self.user.role.is_vendor()
    }

    /// Whether the viewer may see `account`'s pages: the vendor's staff
    /// any, a customer only their own.
    pub fn sees(&self, account: &str) -> bool {
        self.is_vendor()
            || self
                .user
                .account
                .as_ref()
                .is_some_and(|a| a.as_str() == account)
    }

    /// The page frame for this viewer.
    pub fn chrome(&self, title: impl Into<String>, nav: Vec<NavLink>) -> Chrome {
        Chrome {
            title: title.into(),
            user: Some(ChromeUser {
                name: self.user.name.clone(),
                role: self.user.role.label(),
            }),
            csrf: self.session.csrf.clone(),
            nav,
            ..Chrome::bare("")
        }
    }

    /// Refuses a form without this session's CSRF token.
    pub fn check(&self, headers: &HeaderMap, sent: &str) -> Result<(), PageError> {
        check_form(headers, sent, &self.session.csrf)
    }
}

impl<S: OriginStore> FromRequestParts<Shared<S>> for Viewer {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, portal: &Shared<S>) -> Result<Self, PageError> {
        let next = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| BASE.to_string());
        let sign_in = || PageError::SignIn { next: next.clone() };
        let Some(token) = cookie(&parts.headers, &portal.session_cookie()) else {
            return Err(sign_in());
        };
        if token.is_empty() || token.len() > 64 {
            return Err(sign_in());
        }
        let session: PortalSession = match read_json(
            &*portal.app.store,
            &keys::portal_session(&sha256_hex(token)),
        )? {
            Some(s) => s,
            None => return Err(sign_in()),
        };
        if session.expires_at <= portal.app.clock.now() {
            return Err(sign_in());
        }
        let user = match portal.read_user(&session.user)? {
            Some(u) if !u.disabled => u,
            _ => return Err(sign_in()),
        };
        Ok(Viewer {
            caller: caller_for(&user),
            user,
            session,
        })
    }
}

/// Where to go after signing in: a portal path, never another site.
fn safe_next(next: Option<&str>) -> Option<String> {
    let next = next?;
    let ok = next.starts_with(&format!("{BASE}/"))
        && !next.contains("//")
        && !next.contains('\\')
        && next.len() <= 512
        && next.bytes().all(|b| b.is_ascii_graphic());
    ok.then(|| next.to_string())
}

/// A user's home page.
pub(crate) fn home_of(user: &PortalUser) -> String {
    match &user.account {
        Some(account) => format!("{BASE}/a/{account}"),
        None => format!("{BASE}/vendor"),
    }
}

#[derive(Template)]
#[template(path = "sign_in.html")]
struct SignInPage {
    chrome: Chrome,
    form_token: String,
    next: String,
    email: String,
    oidc: bool,
}

#[derive(Deserialize)]
struct SignInQuery {
    next: Option<String>,
    signed_out: Option<String>,
    failed: Option<String>,
}

/// A fresh pre-session form token, set as a cookie and put in the form.
fn form_token_cookie(secure: bool) -> Result<(String, HeaderValue), PageError> {
    let token = random_token()?;
    let cookie = set_cookie(COOKIE_FORM, &token, 3600, secure, Same::Strict);
    Ok((token, cookie))
}

fn sign_in_page<S: OriginStore>(
    portal: &Portal<S>,
    next: String,
    email: String,
    notice: Option<String>,
    error: Option<String>,
) -> Result<Response, PageError> {
    let (form_token, cookie) = form_token_cookie(portal.config.secure_cookies)?;
    let mut chrome = Chrome::bare("Sign in");
    chrome.notice = notice;
    chrome.error = error.clone();
    let mut response = page(&SignInPage {
        chrome,
        form_token,
        next,
        email,
        oidc: portal.config.oidc.is_some(),
    })?;
    if error.is_some() {
        *response.status_mut() = axum::http::StatusCode::UNAUTHORIZED;
    }
    response.headers_mut().append(header::SET_COOKIE, cookie);
    Ok(response)
}

async fn sign_in_form<S: OriginStore>(
    State(portal): State<Shared<S>>,
    Query(q): Query<SignInQuery>,
) -> Result<Response, PageError> {
    let next = safe_next(q.next.as_deref()).unwrap_or_default();
    let notice = q.signed_out.map(|_| "You are signed out.".to_string());
    let error = q.failed.map(|_| {
        "Signing in with your identity provider did not work. Try again, or use a password."
            .to_string()
    });
    sign_in_page(&portal, next, String::new(), notice, error)
}

#[derive(Deserialize)]
struct SignInForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    next: String,
}

const SIGN_IN_FAILED: &str = "The e-mail address or password is wrong, or this user is locked out \
                              after too many wrong passwords. Try again later.";

async fn sign_in<S: OriginStore>(
    State(portal): State<Shared<S>>,
    headers: HeaderMap,
    Form(form): Form<SignInForm>,
) -> Result<Response, PageError> {
    portal.check_signed_out_form(&headers, &form.csrf)?;
    let email = form.email.trim().to_lowercase();
    let next = safe_next(Some(&form.next));
    if email.len() > tollgate_origin::portal::USER_ID_LEN_MAX {
        return sign_in_page(
            &portal,
            form.next,
            String::new(),
            None,
            Some(SIGN_IN_FAILED.into()),
        );
    }
    let user = portal.read_user(&email)?;
    let usable = user
        .as_ref()
        .filter(|u| !u.disabled && !u.locked_at(portal.app.clock.now()))
        .and_then(|u| u.password_hash.clone());
    let right = portal.verify(usable.clone(), form.password).await?;
    let user = match (user, right) {
        (Some(user), true) if usable.is_some() => user,
        (Some(user), false) if usable.is_some() => {
            tracing::info!(user = %user.id, "A portal sign-in gave a wrong password.");
            metrics::counter!(SIGN_INS, "outcome" => "wrong_password").increment(1);
            portal
                .commit(
                    &user.id,
                    Op::PortalSignInFailed {
                        user: user.id.clone(),
                        lock_after: portal.config.lock_after,
                        lock_seconds: portal.config.lock_seconds,
                    },
                )
                .await?
                .map_err(PageError::Internal)?;
            return sign_in_page(&portal, form.next, email, None, Some(SIGN_IN_FAILED.into()));
        }
        _ => {
            metrics::counter!(SIGN_INS, "outcome" => "refused").increment(1);
            return sign_in_page(&portal, form.next, email, None, Some(SIGN_IN_FAILED.into()));
        }
    };
    let target = next.unwrap_or_else(|| home_of(&user));
    start_session(&portal, &user, SignInMethod::Password, &target).await
}

/// Starts a session for `user` and sends the browser to `target`.
async fn start_session<S: OriginStore>(
    portal: &Portal<S>,
    user: &PortalUser,
    method: SignInMethod,
    target: &str,
) -> Result<Response, PageError> {
    let token = random_token()?;
    let at = portal.app.clock.now();
    let session = PortalSession {
        id: sha256_hex(&token),
        user: user.id.clone(),
        created_at: at,
        expires_at: at.plus_seconds(portal.config.session_seconds),
        csrf: random_token()?,
        method,
    };
    if let Err(refused) = portal
        .commit(&user.id, Op::StartPortalSession(session))
        .await?
    {
        tracing::info!(user = %user.id, "A portal session was refused: {refused}");
        return sign_in_page(
            portal,
            String::new(),
            user.id.clone(),
            None,
            Some(SIGN_IN_FAILED.into()),
        );
    }
    tracing::info!(user = %user.id, ?method, "A portal user signed in.");
    metrics::counter!(SIGN_INS, "outcome" => "ok").increment(1);
    let secure = portal.config.secure_cookies;
    let mut response = Redirect::to(target).into_response();
    let headers = response.headers_mut();
    headers.append(
        header::SET_COOKIE,
        set_cookie(
            "tg_session",
            &token,
            portal.config.session_seconds,
            secure,
            Same::Lax,
        ),
    );
    headers.append(
        header::SET_COOKIE,
        set_cookie(COOKIE_FORM, "", 0, secure, Same::Strict),
    );
    Ok(response)
}

#[derive(Deserialize)]
pub(crate) struct CsrfOnly {
    #[serde(default)]
    pub csrf: String,
}

async fn sign_out<S: OriginStore>(
    State(portal): State<Shared<S>>,
    viewer: Viewer,
    headers: HeaderMap,
    Form(form): Form<CsrfOnly>,
) -> Result<Response, PageError> {
    viewer.check(&headers, &form.csrf)?;
    if let Err(refused) = portal
        .commit(
            &viewer.user.id,
            Op::EndPortalSession {
                id: viewer.session.id.clone(),
            },
        )
        .await?
    {
        return Err(PageError::Internal(format!("sign-out refused: {refused}")));
    }
    tracing::info!(user = %viewer.user.id, "A portal user signed out.");
    let mut response = Redirect::to(&format!("{BASE}/sign-in?signed_out=1")).into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie("tg_session", "", 0, portal.config.secure_cookies, Same::Lax),
    );
    Ok(response)
}

async fn home(viewer: Viewer) -> Response {
    Redirect::to(&home_of(&viewer.user)).into_response()
}

#[derive(Template)]
#[template(path = "invite.html")]
struct InvitePage {
    chrome: Chrome,
    user: String,
    name: String,
    token: String,
    form_token: String,
}

#[derive(Deserialize)]
struct InviteQuery {
    #[serde(default)]
    user: String,
    #[serde(default)]
    token: String,
}

/// The invited user, if `token` is their live invitation.
fn invited<S: OriginStore>(
    portal: &Portal<S>,
    user: &str,
    token: &str,
) -> Result<PortalUser, PageError> {
    let user = portal
        .read_user(&user.trim().to_lowercase())?
        .ok_or(PageError::NotFound)?;
    let live = user.invite.as_ref().is_some_and(|invite| {
        invite.expires_at > portal.app.clock.now()
            && tollgate_signing::digest::constant_time_eq(
                sha256_hex(token).as_bytes(),
                invite.token_sha256.as_bytes(),
            )
    });
    if !live || user.disabled {
        return Err(PageError::NotFound);
    }
    Ok(user)
}

async fn invite_form<S: OriginStore>(
    State(portal): State<Shared<S>>,
    Query(q): Query<InviteQuery>,
) -> Result<Response, PageError> {
    let user = invited(&portal, &q.user, &q.token)?;
    let (form_token, cookie) = form_token_cookie(portal.config.secure_cookies)?;
    let mut response = page(&InvitePage {
        chrome: Chrome::bare("Choose your password"),
        user: user.id,
        name: user.name,
        token: q.token,
        form_token,
    })?;
    response.headers_mut().append(header::SET_COOKIE, cookie);
    Ok(response)
}

#[derive(Deserialize)]
struct InviteForm {
    #[serde(default)]
    user: String,
    #[serde(default)]
    token: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    confirm: String,
    #[serde(default)]
    csrf: String,
}

async fn accept_invite<S: OriginStore>(
    State(portal): State<Shared<S>>,
    headers: HeaderMap,
    Form(form): Form<InviteForm>,
) -> Result<Response, PageError> {
    portal.check_signed_out_form(&headers, &form.csrf)?;
    let user = invited(&portal, &form.user, &form.token)?;
    if form.password != form.confirm {
        return Err(PageError::Invalid("The two passwords differ.".into()));
    }
    if form.password.to_lowercase().contains(&user.id) {
        return Err(PageError::Invalid(
            "A password must not contain your e-mail address.".into(),
        ));
    }
    let hash = portal.hash(form.password).await?;
    portal
        .commit(
            &user.id,
            Op::SetPortalPassword {
                user: user.id.clone(),
                password_hash: hash,
                keep_session: None,
            },
        )
        .await?
        .map_err(PageError::Invalid)?;
    let target = home_of(&user);
    start_session(&portal, &user, SignInMethod::Password, &target).await
}

impl<S: OriginStore> Portal<S> {
    async fn oidc_client(&self) -> Result<&OidcClient, PageError> {
        let config = self.config.oidc.clone().ok_or(PageError::NotFound)?;
        self.oidc
            .get_or_try_init(|| async {
                let mut builder = reqwest::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .redirect(reqwest::redirect::Policy::none());
                let tls = tollgate_tls::web_client_config(self.config.oidc_ca_path.as_deref())
                    .map_err(|e| PageError::Internal(format!("OIDC TLS: {e}")))?;
                builder = builder.use_preconfigured_tls((*tls).clone());
                let http = builder
                    .build()
                    .map_err(|e| PageError::Internal(format!("OIDC HTTP client: {e}")))?;
                OidcClient::discover(config, http).await.map_err(|e| {
                    tracing::warn!(error = %e, "OIDC discovery failed.");
                    PageError::Unavailable(format!("OIDC discovery: {e}"))
                })
            })
            .await
    }
}

async fn oidc_start<S: OriginStore>(
    State(portal): State<Shared<S>>,
) -> Result<Response, PageError> {
    let client = portal.oidc_client().await?;
    let (url, pending) = client
        .begin(&portal.app.clock)
        .map_err(|e| PageError::Internal(format!("OIDC: {e}")))?;
    let pending = serde_json::to_vec(&pending)
        .map_err(|e| PageError::Internal(format!("OIDC state: {e}")))?;
    let mut response = Redirect::to(&url).into_response();
    // Lax: the identity provider sends the browser back with a top-level
    // GET, which carries Lax cookies and no Strict ones.
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(
            COOKIE_OIDC,
            &B64.encode(pending),
            600,
            portal.config.secure_cookies,
            Same::Lax,
        ),
    );
    Ok(response)
}

#[derive(Deserialize)]
struct OidcCallback {
    #[serde(default)]
    code: String,
    #[serde(default)]
    state: String,
    error: Option<String>,
}

async fn oidc_callback<S: OriginStore>(
    State(portal): State<Shared<S>>,
    headers: HeaderMap,
    Query(q): Query<OidcCallback>,
) -> Result<Response, PageError> {
    let failed = || Redirect::to(&format!("{BASE}/sign-in?failed=1")).into_response();
    let client = portal.oidc_client().await?;
    let pending: Option<PendingLogin> = cookie(
        &headers,
        &cookie_name(COOKIE_OIDC, portal.config.secure_cookies),
    )
    .and_then(|c| B64.decode(c).ok())
    .and_then(|bytes| serde_json::from_slice(&bytes).ok());
    let Some(pending) = pending else {
        tracing::info!("An OIDC callback came without its pending sign-in.");
        return Ok(failed());
    };
    if let Some(error) = q.error {
        tracing::info!(error = %error.chars().take(100).collect::<String>(), "The identity provider refused a sign-in.");
        return Ok(failed());
    }
    let claims = match client
        .complete(
            &pending,
            &q.state,
            &q.code,
            portal.app.clock.now().0.max(0) as u64,
        )
        .await
    {
        Ok(claims) => claims,
        Err(e) => {
            tracing::warn!(error = %e, "An OIDC sign-in failed.");
            return Ok(failed());
        }
    };
    // Only a verified address that is already a vendor user signs in: the
    // identity provider proves who someone is, the portal decides what
    // they may do.
    let user = match claims.email.as_ref().filter(|_| claims.email_verified) {
        Some(email) => portal.read_user(&email.trim().to_lowercase())?,
        None => None,
    };
    let Some(mut user) = user.filter(|u| u.role.is_vendor() && !u.disabled) else {
        tracing::info!(subject = %claims.subject, "An OIDC identity matches no vendor user.");
        return Ok(failed());
    };
    match &user.oidc_subject {
        Some(bound) if *bound != claims.subject => {
            tracing::warn!(user = %user.id, "An OIDC identity with another subject claimed a bound user.");
            return Ok(failed());
        }
        Some(_) => {}
        None => {
            user.oidc_subject = Some(claims.subject.clone());
            portal
                .commit(&user.id, Op::PutPortalUser(user.clone()))
                .await?
                .map_err(PageError::Internal)?;
        }
    }
    let target = home_of(&user);
    let mut response = start_session(&portal, &user, SignInMethod::Oidc, &target).await?;
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(COOKIE_OIDC, "", 0, portal.config.secure_cookies, Same::Lax),
    );
    Ok(response)
}

pub(crate) fn routes<S: OriginStore>() -> Router<Shared<S>> {
    Router::new()
        .route("/", get(home))
        .route("/sign-in", get(sign_in_form::<S>).post(sign_in::<S>))
        .route("/sign-out", post(sign_out::<S>))
        .route("/invite", get(invite_form::<S>).post(accept_invite::<S>))
        .route("/oidc/start", get(oidc_start::<S>))
        .route("/oidc/callback", get(oidc_callback::<S>))
}
