//! What every page shares: security headers, cookies, CSRF checks, the page
//! frame, errors as pages, the static files and the CSP report endpoint.

use crate::api::ApiError;
use crate::{Shared, BASE};
use askama::Template;
use axum::body::Bytes;
use axum::extract::{Path, Request};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use sha2::{Digest, Sha256};
use std::sync::LazyLock;
use tollgate_api::OriginStore;

/// The policy every portal response carries: scripts and styles only from
/// the portal's own files (no inline script, no inline style, no `eval`),
/// images only its own, forms post only to itself, never in a frame.
/// Violations are reported to [`BASE`]`/csp-report`.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                       connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
                       base-uri 'none'; report-uri /portal/csp-report";

/// The session cookie over TLS: `__Host-` binds it to this host, path `/`,
/// `Secure`.
pub const COOKIE_SESSION: &str = "__Host-tg_session";
/// The session cookie when the origin serves in clear (on purpose only).
pub const COOKIE_SESSION_INSECURE: &str = "tg_session";
/// The pre-session CSRF cookie of the sign-in form.
pub(crate) const COOKIE_FORM: &str = "tg_form";
/// A pending OIDC sign-in.
pub(crate) const COOKIE_OIDC: &str = "tg_oidc";
/// Longest Cookie header read, in bytes.
const COOKIE_HEADER_MAX: usize = 8 * 1024;
/// Largest CSP report read, in bytes.
const CSP_REPORT_MAX: usize = 16 * 1024;

/// 32 random bytes, base64url: session tokens, CSRF tokens, invitations.
pub(crate) fn random_token() -> Result<String, PageError> {
    let mut bytes = [0u8; 32];
    tollgate_clock::random::fill(&mut bytes)
        .map_err(|e| PageError::Internal(format!("no randomness: {e}")))?;
    Ok(B64.encode(bytes))
}

pub(crate) fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Adds the security headers to every portal response; pages are never
/// stored (a shared computer's back button shows nothing after sign-out).
pub(crate) async fn security_headers(mut request: Request, next: Next) -> Response {
    // HTTP/2 carries the host as the `:authority` pseudo-header, which
    // hyper puts in the URI and not in `Host`: the form checks compare
    // `Origin` with `Host`, so give them one.
    if !request.headers().contains_key(header::HOST) {
        if let Some(authority) = request
            .uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            request.headers_mut().insert(header::HOST, authority);
        }
    }
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let set = |headers: &mut HeaderMap, name: &'static str, value: &'static str| {
        headers.insert(name, HeaderValue::from_static(value));
    };
    set(headers, "content-security-policy", CSP);
    set(headers, "x-frame-options", "DENY");
    set(headers, "x-content-type-options", "nosniff");
    set(headers, "referrer-policy", "same-origin");
    set(headers, "cross-origin-opener-policy", "same-origin");
    set(headers, "cross-origin-resource-policy", "same-origin");
    set(
        headers,
        "permissions-policy",
        "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
    );
    if !headers.contains_key(header::CACHE_CONTROL) {
        set(headers, "cache-control", "no-store");
    }
    response
}

/// The value of cookie `name`, if the request carries it.
pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter(|v| v.len() <= COOKIE_HEADER_MAX)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// SameSite for a cookie.
#[derive(Clone, Copy)]
pub(crate) enum Same {
    Lax,
    Strict,
}

/// A `Set-Cookie` value: HttpOnly always, `Secure` over TLS, `max_age`
/// seconds (0: delete it now).
pub(crate) fn set_cookie(
    name: &str,
    value: &str,
    max_age: u64,
    secure: bool,
    same: Same,
) -> HeaderValue {
    let same = match same {
        Same::Lax => "Lax",
        Same::Strict => "Strict",
    };
    let secure = if secure { "; Secure" } else { "" };
    let name = if secure.is_empty() {
        name.to_string()
    } else {
        format!("__Host-{name}")
    };
    // Values are base64url or JSON made base64url: no `;` or spaces.
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite={same}{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("tg_invalid=; Max-Age=0"))
}

/// The name a cookie set by [`set_cookie`] is read back under.
pub(crate) fn cookie_name(name: &str, secure: bool) -> String {
    if secure {
        format!("__Host-{name}")
    } else {
        name.to_string()
    }
}

/// Refuses a form the browser says came from another site, or whose
/// `Origin` is not this host; then compares the form's token with the
/// expected one in constant time.
pub(crate) fn check_form(headers: &HeaderMap, sent: &str, expected: &str) -> Result<(), PageError> {
    if let Some(site) = headers.get("sec-fetch-site") {
        if !matches!(site.as_bytes(), b"same-origin" | b"none") {
            return Err(PageError::Csrf("the form came from another site"));
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let host = headers.get(header::HOST).map(|h| h.as_bytes());
        let origin_host = origin
            .to_str()
            .ok()
            .and_then(|o| o.split_once("://"))
            .map(|(_, rest)| rest.as_bytes());
        if host.is_none() || origin_host != host {
            return Err(PageError::Csrf("the form came from another origin"));
        }
    }
    if sent.is_empty()
        || expected.is_empty()
        || !tollgate_signing::digest::constant_time_eq(sent.as_bytes(), expected.as_bytes())
    {
        return Err(PageError::Csrf("the form's token is missing or wrong"));
    }
    Ok(())
}

/// A page that could not be shown.
#[derive(Debug)]
pub(crate) enum PageError {
    /// No session: to the sign-in page, then back to `next`.
    SignIn {
        next: String,
    },
    NotFound,
    Csrf(&'static str),
    Invalid(String),
    Unavailable(String),
    Internal(String),
}

impl From<ApiError> for PageError {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::NotFound(_) => PageError::NotFound,
            ApiError::Refused(m) => PageError::Invalid(m),
            ApiError::Unavailable(m) => PageError::Unavailable(m),
            ApiError::Internal(m) => PageError::Internal(m),
        }
    }
}

impl From<tollgate_api::StoreError> for PageError {
    fn from(e: tollgate_api::StoreError) -> Self {
        match e {
            tollgate_api::StoreError::Internal(m) => PageError::Internal(m),
            other => PageError::Unavailable(other.to_string()),
        }
    }
}

impl From<askama::Error> for PageError {
    fn from(e: askama::Error) -> Self {
        PageError::Internal(format!("rendering a page: {e}"))
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    chrome: Chrome,
    message: String,
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, title, message) = match self {
            PageError::SignIn { next } => {
                let target = format!("{BASE}/sign-in?next={}", encode_query(&next));
                return Redirect::to(&target).into_response();
            }
            PageError::NotFound => (
                StatusCode::NOT_FOUND,
                "Not found",
                "There is no such page, or it is not yours to see.".to_string(),
            ),
            PageError::Csrf(why) => {
                tracing::warn!("Refused a portal form: {why}.");
                (
                    StatusCode::FORBIDDEN,
                    "Form refused",
                    "This form has expired or did not come from this site. Go back, reload the page and try again."
                        .to_string(),
                )
            }
            PageError::Invalid(m) => (StatusCode::BAD_REQUEST, "Not done", m),
            PageError::Unavailable(m) => {
                tracing::warn!("A portal page is unavailable: {m}");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Try again shortly",
                    "The service is busy or electing a leader; nothing was changed. Try again in a few seconds."
                        .to_string(),
                )
            }
            PageError::Internal(m) => {
                tracing::error!("A portal page failed: {m}");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong",
                    "The page could not be shown; the error is in the origin's log.".to_string(),
                )
            }
        };
        let page = ErrorPage {
            chrome: Chrome::bare(title),
            message,
        };
        match page.render() {
            Ok(html) => (status, Html(html)).into_response(),
            Err(_) => (status, message_text(title)).into_response(),
        }
    }
}

fn message_text(title: &str) -> String {
    title.to_string()
}

/// An HTML body.
pub(crate) struct Html(pub String);

impl IntoResponse for Html {
    fn into_response(self) -> Response {
        ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], self.0).into_response()
    }
}

/// Renders a page.
pub(crate) fn page<T: Template>(template: &T) -> Result<Response, PageError> {
    Ok(Html(template.render()?).into_response())
}

/// Percent-encodes a query value.
pub(crate) fn encode_query(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A link of the navigation bar.
#[derive(Debug, Clone)]
pub(crate) struct NavLink {
    pub href: String,
    pub label: &'static str,
    pub current: bool,
}

/// The signed-in user as the frame shows them.
#[derive(Debug, Clone)]
pub(crate) struct ChromeUser {
    pub name: String,
    pub role: &'static str,
}

/// The frame of every page: title, navigation, who is signed in, the
/// sign-out form's token, a notice or an error.
#[derive(Debug, Clone)]
pub(crate) struct Chrome {
    pub title: String,
    pub user: Option<ChromeUser>,
    pub csrf: String,
    pub nav: Vec<NavLink>,
    pub notice: Option<String>,
    pub error: Option<String>,
    pub css: &'static str,
    pub js: &'static str,
    pub icon: &'static str,
}

impl Chrome {
    /// A frame with no one signed in.
    pub fn bare(title: &str) -> Chrome {
        Chrome {
            title: title.to_string(),
            user: None,
            csrf: String::new(),
            nav: Vec::new(),
            notice: None,
            error: None,
            css: &ASSETS.css_url,
            js: &ASSETS.js_url,
            icon: &ASSETS.icon_url,
        }
    }
}

struct Assets {
    css_url: String,
    js_url: String,
    icon_url: String,
}

const CSS: &str = include_str!("../assets/portal.css");
const JS: &str = include_str!("../assets/portal.js");
/// Named by every page, so browsers do not ask the origin for
/// `/favicon.ico` (a 404 in their console).
const ICON: &str = include_str!("../assets/favicon.svg");

fn fingerprint(text: &str) -> String {
    sha256_hex(text)[..12].to_string()
}

/// Asset URLs carry their content's hash, so they can be cached for good.
static ASSETS: LazyLock<Assets> = LazyLock::new(|| Assets {
    css_url: format!("{BASE}/static/portal-{}.css", fingerprint(CSS)),
    js_url: format!("{BASE}/static/portal-{}.js", fingerprint(JS)),
    icon_url: format!("{BASE}/static/favicon-{}.svg", fingerprint(ICON)),
});

async fn static_file(Path(name): Path<String>) -> Response {
    let (body, kind) = if format!("{BASE}/static/{name}") == ASSETS.css_url {
        (CSS, "text/css; charset=utf-8")
    } else if format!("{BASE}/static/{name}") == ASSETS.js_url {
        (JS, "text/javascript; charset=utf-8")
    } else if format!("{BASE}/static/{name}") == ASSETS.icon_url {
        (ICON, "image/svg+xml")
    } else {
        return PageError::NotFound.into_response();
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
        ],
        body,
    )
        .into_response()
}

/// A browser's report of a blocked script, style or frame: logged and
/// counted, never trusted further.
async fn csp_report(body: Bytes) -> StatusCode {
    if body.len() > CSP_REPORT_MAX {
        return StatusCode::PAYLOAD_TOO_LARGE;
    }
    let report: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => return StatusCode::BAD_REQUEST,
    };
    let inner = report.get("csp-report").unwrap_or(&report);
    let field = |name: &str| {
        inner
            .get(name)
            .and_then(|v| v.as_str())
            .unwrap_or("-")
            .chars()
            .take(200)
            .collect::<String>()
    };
    metrics::counter!("tollgate_portal_csp_reports_total").increment(1);
    tracing::warn!(
        document = %field("document-uri"),
        directive = %field("violated-directive"),
        blocked = %field("blocked-uri"),
        "A browser reported a Content-Security-Policy violation on a portal page."
    );
    StatusCode::NO_CONTENT
}

pub(crate) async fn not_found() -> Response {
    PageError::NotFound.into_response()
}

pub(crate) fn routes<S: OriginStore>() -> Router<Shared<S>> {
    Router::new()
        .route("/static/{name}", get(static_file))
        .route(
            "/csp-report",
            post(csp_report).layer(axum::extract::DefaultBodyLimit::max(CSP_REPORT_MAX)),
        )
}
