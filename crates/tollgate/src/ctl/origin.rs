//! The origin's REST API as `ctl` uses it: JSON in and out, an API key,
//! a timeout on every request, and problem documents (`code`, `detail`)
//! turned into exit codes: 404 → 3, 409 → 4, 401/403 → 5, other 4xx → 2,
//! the rest → 1.

use super::{exit, CtlError, CtlResult, Global};
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// Largest response body read, in bytes: the origin's pages are bounded
/// (500 items), this only stops a misdirected URL from filling memory.
const RESPONSE_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Longest API key accepted (the origin refuses longer headers anyway).
const API_KEY_LEN_MAX: usize = 512;

/// A client of one origin.
#[derive(Clone)]
pub struct Origin {
    http: reqwest::Client,
    base: String,
    api_key: Option<String>,
    reason: Option<String>,
}

impl Origin {
    pub fn new(global: &Global) -> CtlResult<Origin> {
        let base = global.origin.trim_end_matches('/').to_string();
        let rest = base
            .strip_prefix("https://")
            .or_else(|| base.strip_prefix("http://"))
            .unwrap_or("");
        if rest.is_empty() || rest.starts_with('/') {
            return Err(CtlError::usage(format!(
                "--origin {:?}: expected https://host:port (http:// only for an origin running \
                 with tls.insecure_plaintext)",
                global.origin
            )));
        }
        let api_key = match &global.api_key_file {
            Some(path) => {
                let text = read_bounded(path, API_KEY_LEN_MAX as u64 + 64).map_err(|e| {
                    CtlError::usage(format!("--api-key-file {}: {e}", path.display()))
                })?;
                Some(text.trim().to_string())
            }
            None => global.api_key.as_ref().map(|k| k.trim().to_string()),
        };
        if let Some(key) = &api_key {
            if key.is_empty()
                || key.len() > API_KEY_LEN_MAX
                || !key.bytes().all(|b| b.is_ascii_graphic())
            {
                return Err(CtlError::usage(format!(
                    "the API key must be 1..={API_KEY_LEN_MAX} visible ASCII characters (tg_<id>.<secret>)"
                )));
            }
        }
        let http = global
            .tls
            .http_client(&base)
            .map_err(|e| CtlError::usage(format!("{base}: {e}")))?
            .timeout(global.timeout())
            .connect_timeout(global.timeout())
            .build()
            .map_err(|e| CtlError::failure(format!("cannot build an HTTP client: {e}")))?;
        Ok(Origin {
            http,
            base,
            api_key,
            reason: global.reason.clone(),
        })
    }

    pub fn has_api_key(&self) -> bool {
        self.api_key.is_some()
    }

    pub async fn get(&self, path: &str) -> CtlResult<Value> {
        self.call(Method::GET, path, None, true).await
    }

    /// A GET that needs no API key (the public key set).
    pub async fn get_public(&self, path: &str) -> CtlResult<Value> {
        self.call(Method::GET, path, None, false).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> CtlResult<Value> {
        self.call(Method::PUT, path, Some(body), true).await
    }

    pub async fn post(&self, path: &str, body: Option<&Value>) -> CtlResult<Value> {
        self.call(Method::POST, path, body, true).await
    }

    pub async fn delete(&self, path: &str) -> CtlResult<Value> {
        self.call(Method::DELETE, path, None, true).await
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        authenticated: bool,
    ) -> CtlResult<Value> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method.clone(), &url);
        if authenticated {
            let key = self.api_key.as_deref().ok_or_else(|| {
                CtlError::new(
                    exit::UNAUTHORIZED,
                    "UNAUTHENTICATED",
                    "an API key is required: --api-key, TOLLGATE_API_KEY or --api-key-file",
                )
            })?;
            request = request.bearer_auth(key);
        }
        if method != Method::GET {
            if let Some(reason) = &self.reason {
                request = request.header("x-tollgate-reason", reason);
            }
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let mut response = request.send().await.map_err(|e| transport(&url, e))?;
        let status = response.status();
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| transport(&url, e))? {
            if bytes.len() + chunk.len() > RESPONSE_BYTES_MAX {
                return Err(CtlError::failure(format!(
                    "{method} {url}: the response exceeds {RESPONSE_BYTES_MAX} bytes"
                )));
            }
            bytes.extend_from_slice(&chunk);
        }
        if status.is_success() {
            if bytes.iter().all(u8::is_ascii_whitespace) {
                return Ok(Value::Null);
            }
            return serde_json::from_slice(&bytes).map_err(|e| {
                CtlError::failure(format!("{method} {url}: the answer is not JSON: {e}"))
            });
        }
        Err(problem(status, &bytes))
    }
}

fn transport(url: &str, error: reqwest::Error) -> CtlError {
    let what = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    // reqwest's Display leaves out the cause (connection refused, an
    // unknown CA, ...): show the whole chain under it.
    let chain = std::error::Error::source(&error)
        .map(super::tls::error_chain)
        .unwrap_or_default();
    let hint = super::tls::hint(&chain)
        .map(|h| format!("\n  hint: {h}"))
        .unwrap_or_default();
    CtlError::unreachable(format!(
        "{url}: {what}{}{hint}",
        if chain.is_empty() {
            String::new()
        } else {
            format!(" ({chain})")
        }
    ))
}

/// A refusal: the origin's problem document when it sent one, mapped to an
/// exit code by its HTTP status.
pub fn problem(status: StatusCode, body: &[u8]) -> CtlError {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let code = parsed
        .as_ref()
        .and_then(|p| p["code"].as_str())
        .map(str::to_string)
        .unwrap_or_else(|| {
            status
                .canonical_reason()
                .unwrap_or("ERROR")
                .to_uppercase()
                .replace(' ', "_")
        });
    let detail = parsed
        .as_ref()
        .and_then(|p| p["detail"].as_str())
        .map(str::to_string)
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned());
    let exit = match status.as_u16() {
        404 => exit::NOT_FOUND,
        409 => exit::CONFLICT,
        401 | 403 => exit::UNAUTHORIZED,
        400..=499 => exit::INVALID_INPUT,
        _ => exit::FAILURE,
    };
    CtlError::new(exit, code, format!("{detail} (HTTP {})", status.as_u16()))
}

/// One path segment, percent-encoded: ids are `[A-Za-z0-9._:@-]`, but what
/// a user types is not trusted to be one.
pub fn seg(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for b in raw.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:@".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Reads a small text file, refusing one over `len_max` bytes.
pub fn read_bounded(path: &std::path::Path, len_max: u64) -> std::io::Result<String> {
    use std::io::Read;
    let file = std::fs::File::open(path)?;
    let mut text = String::new();
    file.take(len_max + 1).read_to_string(&mut text)?;
    if text.len() as u64 > len_max {
        return Err(std::io::Error::other(format!(
            "larger than {len_max} bytes"
        )));
    }
    Ok(text)
}

/// Reads a JSON document from a file (`-` for stdin), bounded.
pub fn read_json_file(path: &std::path::Path, len_max: u64) -> CtlResult<Value> {
    let text = if path.as_os_str() == "-" {
        use std::io::Read;
        let mut text = String::new();
        std::io::stdin()
            .take(len_max + 1)
            .read_to_string(&mut text)
            .map_err(|e| CtlError::usage(format!("stdin: {e}")))?;
        if text.len() as u64 > len_max {
            return Err(CtlError::usage(format!(
                "stdin: larger than {len_max} bytes"
            )));
        }
        text
    } else {
        read_bounded(path, len_max)
            .map_err(|e| CtlError::usage(format!("{}: {e}", path.display())))?
    };
    serde_json::from_str(&text)
        .map_err(|e| CtlError::usage(format!("{}: not JSON: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_map_to_exit_codes_and_keep_code_and_detail() {
        let body = br#"{"type":"about:blank","title":"Not Found","status":404,"code":"NOT_FOUND","detail":"unknown account x"}"#;
        let e = problem(StatusCode::NOT_FOUND, body);
        assert_eq!((e.exit, e.code.as_str()), (3, "NOT_FOUND"));
        assert!(e.message.contains("unknown account x"));
        assert_eq!(problem(StatusCode::CONFLICT, b"").exit, 4);
        assert_eq!(problem(StatusCode::UNAUTHORIZED, b"").exit, 5);
        assert_eq!(problem(StatusCode::UNPROCESSABLE_ENTITY, b"").exit, 2);
        let e = problem(StatusCode::SERVICE_UNAVAILABLE, b"busy");
        assert_eq!((e.exit, e.code.as_str()), (1, "SERVICE_UNAVAILABLE"));
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(seg("acme-1.x"), "acme-1.x");
        assert_eq!(seg("a/b?c"), "a%2Fb%3Fc");
    }
}
