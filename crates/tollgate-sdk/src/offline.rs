//! License tokens checked offline: with the origin's public key set alone
//! (no server at all), and, when the application runs a [`Replica`], also
//! against the revocations the replica has received: a token or region
//! certificate the origin revoked is refused as soon as the revocation
//! reaches the replica, and the replica keeps refusing it while cut off.
//!
//! The key set can be shipped with the application
//! ([`OfflineVerifier::from_file`]) or fetched from the origin over
//! verified TLS ([`OfflineVerifier::fetch`]), and refreshed later without
//! stopping verification ([`OfflineVerifier::refresh_from`]).

use crate::{Replica, SdkError};
use arc_swap::ArcSwap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tollgate_clock::Clock;
use tollgate_license::{License, LicenseError, Revocations, Verifier};
use tollgate_signing::PublicKeySet;
use tollgate_tls::{Alpn, ClientTlsOptions, Expect, Transport};

/// Largest key set read, from a file or from the origin, in bytes.
const KEY_SET_FILE_BYTES_MAX: u64 = 1024 * 1024;

/// Where the origin serves its public key set, under its base URL.
pub const KEY_SET_PATH: &str = "/.well-known/tollgate-keys.json";

/// Verifies license tokens for one audience (product) with the origin's
/// public key set, without the network.
///
/// The key set in use can be replaced while tokens are being verified
/// ([`OfflineVerifier::refresh_from`], [`OfflineVerifier::replace_keys`]):
/// the swap is atomic, so every verification uses either the old set or
/// the new one, whole, and never waits for a refresh.
///
/// Tokens are verified at the time its clock reads: the system clock
/// unless another is given ([`OfflineVerifier::with_clock`]).
pub struct OfflineVerifier {
    current: ArcSwap<Current>,
    /// What tokens' validity (and, on a refresh, the TLS files'
    /// certificates) are checked against.
    clock: Clock,
}

/// A key set and the verifier built from it, swapped together.
struct Current {
    keys: Arc<PublicKeySet>,
    verifier: Arc<Verifier>,
}

impl std::fmt::Debug for OfflineVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OfflineVerifier")
            .field("verifier", &self.current.load().verifier)
            .field("clock", &self.clock)
            .finish()
    }
}

fn build(keys: &PublicKeySet, audience: &str) -> Result<Verifier, LicenseError> {
    Verifier::new(keys, audience)
}

impl OfflineVerifier {
    /// A verifier for tokens whose `aud` is `audience`, trusting `keys` (as
    /// the origin serves them at `/.well-known/tollgate-keys.json`).
    pub fn new(keys: &PublicKeySet, audience: &str) -> Result<OfflineVerifier, SdkError> {
        let verifier = build(keys, audience)
            .map_err(|e| SdkError::Config(format!("the origin key set: {e}")))?;
        Ok(OfflineVerifier {
            current: ArcSwap::from_pointee(Current {
                keys: Arc::new(keys.clone()),
                verifier: Arc::new(verifier),
            }),
            clock: Clock::system(),
        })
    }

    /// Reads the key set from a JSON file shipped with the application.
    pub fn from_file(path: &Path, audience: &str) -> Result<OfflineVerifier, SdkError> {
        let shown = path.display();
        let len = std::fs::metadata(path)
            .map_err(|e| SdkError::Config(format!("{shown}: {e}")))?
            .len();
        if len > KEY_SET_FILE_BYTES_MAX {
            return Err(SdkError::Config(format!(
                "{shown}: {len} bytes is more than a key set ({KEY_SET_FILE_BYTES_MAX})"
            )));
        }
        let text =
            std::fs::read_to_string(path).map_err(|e| SdkError::Config(format!("{shown}: {e}")))?;
        let keys: PublicKeySet = serde_json::from_str(&text)
            .map_err(|e| SdkError::Config(format!("{shown}: not a key set: {e}")))?;
        OfflineVerifier::new(&keys, audience)
    }

    /// Fetches the key set from the origin at `url` (its
    /// `https://<origin>/.well-known/tollgate-keys.json`, see
    /// [`KEY_SET_PATH`]) and builds a verifier for `audience` from it.
    /// The origin's certificate is checked against the system clock, and
    /// so are tokens, unless [`OfflineVerifier::with_clock`] gives another.
    ///
    /// The fetch is over verified TLS only: the origin's certificate must
    /// chain to `tls.ca` (or, without one, to the operating system's CA
    /// store) and name the URL's host; `tls.cert`/`tls.key` are presented
    /// if the origin asks for a client certificate. `timeout` bounds the
    /// whole fetch (connecting, the handshake, reading the body).
    ///
    /// # Errors
    /// As [`OfflineVerifier::refresh_from`].
    pub async fn fetch(
        url: &str,
        tls: &ClientTlsOptions,
        audience: &str,
        timeout: Duration,
    ) -> Result<OfflineVerifier, SdkError> {
        let keys = fetch_key_set(url, tls, timeout, &Clock::system()).await?;
        let verifier = build(&keys, audience).map_err(|e| refused_set(url, &e.to_string()))?;
        Ok(OfflineVerifier {
            current: ArcSwap::from_pointee(Current {
                keys: Arc::new(keys),
                verifier: Arc::new(verifier),
            }),
            clock: Clock::system(),
        })
    }

    /// Fetches the key set again, as [`OfflineVerifier::fetch`] does, and
    /// swaps it in if it differs from the one in use. Returns whether it
    /// changed.
    ///
    /// Verifications running meanwhile are not disturbed: they finish with
    /// the set they started with, and the next ones use the new set. On any
    /// error the set in use stays as it was.
    ///
    /// # Errors
    /// - [`SdkError::Config`]: `url` is not `https://` (a key set fetched in
    ///   clear could be anyone's: `http://` is refused, loopback included),
    ///   or a TLS file in `tls` cannot be used (the message names it).
    /// - [`SdkError::Unavailable`]: the origin could not be reached, its
    ///   certificate was refused (the message says why: an unknown issuer,
    ///   a name that does not match the host, ...), or it answered with a
    ///   server error or `429`.
    /// - [`SdkError::DeadlineExceeded`]: `timeout` passed.
    /// - [`SdkError::Protocol`]: the origin answered, but not with a usable
    ///   key set: another HTTP status, a body over the size limit (1 MiB),
    ///   not a key set, an empty set, a malformed key.
    pub async fn refresh_from(
        &self,
        url: &str,
        tls: &ClientTlsOptions,
        timeout: Duration,
    ) -> Result<bool, SdkError> {
        let keys = fetch_key_set(url, tls, timeout, &self.clock).await?;
        self.swap(keys)
            .map_err(|e| refused_set(url, &e.to_string()))
    }

    /// Replaces the key set in use with `keys` (obtained some other way),
    /// atomically, as [`OfflineVerifier::refresh_from`] does. Returns
    /// whether it changed; an invalid set is refused
    /// ([`SdkError::Config`]) and the old one kept.
    pub fn replace_keys(&self, keys: &PublicKeySet) -> Result<bool, SdkError> {
        self.swap(keys.clone())
            .map_err(|e| SdkError::Config(format!("the origin key set: {e}")))
    }

    fn swap(&self, keys: PublicKeySet) -> Result<bool, LicenseError> {
        let current = self.current.load();
        if *current.keys == keys {
            return Ok(false);
        }
        let verifier = build(&keys, current.verifier.audience())?;
        self.current.store(Arc::new(Current {
            keys: Arc::new(keys),
            verifier: Arc::new(verifier),
        }));
        Ok(true)
    }

    /// The same verifier reading `clock` (instead of the system clock) for
    /// every later [`OfflineVerifier::verify`],
    /// [`OfflineVerifier::verify_with_replica`] and the origin certificate's
    /// validity in [`OfflineVerifier::refresh_from`].
    pub fn with_clock(mut self, clock: Clock) -> OfflineVerifier {
        self.clock = clock;
        self
    }

    /// The wall clock tokens are verified against.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Verifies `token` now (as the verifier's clock reads,
    /// [`OfflineVerifier::with_clock`]), knowing of no revocation. `device`
    /// is this device's fingerprint, for tokens bound to one.
    pub fn verify(&self, token: &str, device: Option<&[u8]>) -> Result<License, LicenseError> {
        self.current
            .load()
            .verifier
            .verify(token, self.clock.now(), device, &())
    }

    /// Verifies `token` now, refusing what `replica` knows to be revoked.
    pub fn verify_with_replica(
        &self,
        token: &str,
        device: Option<&[u8]>,
        replica: &Replica,
    ) -> Result<License, LicenseError> {
        self.current
            .load()
            .verifier
            .verify(token, self.clock.now(), device, replica)
    }

    /// The verifier of the key set in use, for batches or a caller-supplied
    /// clock. It is a snapshot: a refresh after this call does not change
    /// it (call again for the new set).
    pub fn verifier(&self) -> Arc<Verifier> {
        self.current.load().verifier.clone()
    }

    /// The key set in use.
    pub fn key_set(&self) -> Arc<PublicKeySet> {
        self.current.load().keys.clone()
    }
}

fn refused_set(url: &str, why: &str) -> SdkError {
    SdkError::Protocol(format!("{url}: not a usable key set: {why}"))
}

/// GETs the key set at `url` over verified TLS, within `timeout`, checking
/// the TLS files' certificates against `clock`.
async fn fetch_key_set(
    url: &str,
    tls: &ClientTlsOptions,
    timeout: Duration,
    clock: &Clock,
) -> Result<PublicKeySet, SdkError> {
    if !url.starts_with("https://") {
        return Err(SdkError::Config(format!(
            "{url:?}: the key set is fetched over verified TLS only, so the URL must start \
             with https://"
        )));
    }
    if timeout.is_zero() {
        return Err(SdkError::Config(
            "the fetch timeout must be above zero".into(),
        ));
    }
    let transport = Transport::for_client(url, tls, clock.now_secs())
        .map_err(|e| SdkError::Config(e.to_string()))?;
    let config = transport
        .client_config(&Expect::HostName, Alpn::Http1)
        .map_err(|e| SdkError::Config(e.to_string()))?
        .ok_or_else(|| SdkError::Config(format!("{url:?}: no TLS for an https:// URL")))?;
    let client = reqwest::Client::builder()
        .use_preconfigured_tls((*config).clone())
        .https_only(true)
        // A redirect could lead anywhere; the origin serves the set itself.
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(timeout)
        .timeout(timeout)
        .build()
        .map_err(|e| {
            SdkError::Config(format!("an HTTP client: {}", tollgate_tls::error_chain(&e)))
        })?;
    let unavailable = |last: String| SdkError::Unavailable {
        tried: vec![url.to_string()],
        last,
    };
    let failed = |e: reqwest::Error| {
        if e.is_timeout() {
            SdkError::DeadlineExceeded {
                deadline: timeout,
                last: Some(tollgate_tls::error_chain(&e)),
            }
        } else {
            // reqwest's message names the URL.
            unavailable(tollgate_tls::error_chain(&e))
        }
    };
    let fetch = async {
        let mut response = client.get(url).send().await.map_err(failed)?;
        let status = response.status();
        if status.is_server_error() || status.as_u16() == 429 {
            return Err(unavailable(format!("{url}: HTTP {status}")));
        }
        if !status.is_success() {
            return Err(SdkError::Protocol(format!(
                "{url}: HTTP {status}, not a key set (is this the origin's \
                 {KEY_SET_PATH}?)"
            )));
        }
        let too_big = || {
            SdkError::Protocol(format!(
                "{url}: the key set is larger than {KEY_SET_FILE_BYTES_MAX} bytes"
            ))
        };
        if response
            .content_length()
            .is_some_and(|len| len > KEY_SET_FILE_BYTES_MAX)
        {
            return Err(too_big());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(failed)? {
            if (body.len() + chunk.len()) as u64 > KEY_SET_FILE_BYTES_MAX {
                return Err(too_big());
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice::<PublicKeySet>(&body).map_err(|e| refused_set(url, &e.to_string()))
    };
    match tokio::time::timeout(timeout, fetch).await {
        Ok(result) => result,
        Err(_) => Err(SdkError::DeadlineExceeded {
            deadline: timeout,
            last: Some(format!("{url}: the key set did not arrive in time")),
        }),
    }
}

/// A replica refuses what the origin revoked, as of its revision. Region
/// certificates are global; a replica scoped to one account knows that
/// account's revoked tokens only.
impl Revocations for Replica {
    fn license_revoked(&self, jti: &str) -> bool {
        self.with_revocations(|data| data.revoked_licenses.iter().any(|r| r.id == jti))
    }
    fn certificate_revoked(&self, serial: &str) -> bool {
        self.with_revocations(|data| data.revoked_certificates.iter().any(|r| r.serial == serial))
    }
}
