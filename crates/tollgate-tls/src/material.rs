//! Certificate files: a CA bundle, a certificate chain and its key, read
//! and checked together, held behind a pointer that a reload swaps whole.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::RootCertStore;
use sha2::{Digest, Sha256};

use crate::identity::{Identity, Subject};
use crate::TlsError;

/// Largest certificate or key file read, in bytes.
pub const FILE_BYTES_MAX: u64 = 1024 * 1024;

/// Where a holder's TLS files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA certificates (PEM) that peers' certificates must chain to.
    pub ca: PathBuf,
    /// This holder's certificate chain (PEM, its own certificate first).
    /// `None` for a client without a certificate.
    pub cert: Option<PathBuf>,
    /// The private key of `cert` (PEM: PKCS#8, SEC1 or PKCS#1).
    pub key: Option<PathBuf>,
}

/// What was read from the files and found consistent.
pub struct Material {
    pub(crate) roots: Arc<RootCertStore>,
    pub(crate) chain: Vec<CertificateDer<'static>>,
    pub(crate) key: Option<Arc<PrivateKeyDer<'static>>>,
    /// The identity in this holder's certificate, if it has one of ours.
    pub(crate) identity: Option<Identity>,
    /// When this holder's certificate expires (Unix seconds).
    pub(crate) not_after: Option<i64>,
    /// When the first CA certificate of the bundle expires (Unix seconds).
    pub(crate) ca_not_after: i64,
    /// SHA-256 of the files' bytes: a reload with the same bytes is a no-op.
    digest: [u8; 32],
    /// Counts loads, so configs built from older material are rebuilt.
    pub(crate) generation: u64,
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, TlsError> {
    let bad = |why: String| TlsError::File {
        path: path.to_path_buf(),
        what: what.to_string(),
        why,
    };
    let meta = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?;
    if meta.len() > FILE_BYTES_MAX {
        return Err(bad(format!(
            "{} bytes, more than the {FILE_BYTES_MAX} a {what} may have",
            meta.len()
        )));
    }
    std::fs::read(path).map_err(|e| bad(e.to_string()))
}

fn certificates(
    bytes: &[u8],
    path: &Path,
    what: &str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bad = |why: String| TlsError::File {
        path: path.to_path_buf(),
        what: what.to_string(),
        why,
    };
    let certs = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(bad("no CERTIFICATE block in it".into()));
    }
    Ok(certs)
}

/// A certificate's expiry (Unix seconds) and its identity URI SANs.
fn inspect(cert: &CertificateDer<'_>) -> Result<(i64, Vec<String>), String> {
    let (_, parsed) =
        x509_parser::parse_x509_certificate(cert).map_err(|e| format!("not X.509: {e}"))?;
    let not_after = parsed.validity().not_after.timestamp();
    let mut uris = Vec::new();
    if let Ok(Some(san)) = parsed.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::URI(uri) = name {
                uris.push(uri.to_string());
            }
        }
    }
    Ok((not_after, uris))
}

/// The one SPIFFE identity of ours in a certificate's URI SANs.
pub(crate) fn identity_of(cert: &CertificateDer<'_>) -> Result<Identity, String> {
    let (_, uris) = inspect(cert)?;
    let spiffe: Vec<&String> = uris.iter().filter(|u| u.starts_with("spiffe://")).collect();
    match spiffe.as_slice() {
        [one] => Identity::parse(one).map_err(|e| e.to_string()),
        [] => Err("the certificate has no spiffe:// URI SAN".into()),
        _ => Err("the certificate has more than one spiffe:// URI SAN".into()),
    }
}

impl Material {
    /// Reads and checks `files`. `expect` is who this holder must be (a
    /// node's own identity); `now` is the wall clock in Unix seconds.
    pub(crate) fn load(
        files: &TlsFiles,
        system_roots: bool,
        expect: Option<&Subject>,
        now: i64,
        generation: u64,
    ) -> Result<Material, TlsError> {
        let mut hasher = Sha256::new();
        let ca_certs = if system_roots {
            let found = rustls_native_certs::load_native_certs();
            if found.certs.is_empty() {
                let why = found
                    .errors
                    .first()
                    .map(|e| e.to_string())
                    .unwrap_or_else(|| "none found".into());
                return Err(TlsError::Config(format!(
                    "no CA certificates in the operating system's store ({why}): give a CA bundle"
                )));
            }
            for cert in &found.certs {
                hasher.update(cert.as_ref());
            }
            found.certs
        } else {
            let ca_bytes = read(&files.ca, "CA bundle")?;
            hasher.update(&ca_bytes);
            certificates(&ca_bytes, &files.ca, "CA bundle")?
        };
        let ca_bad = |why: String| TlsError::File {
            path: files.ca.clone(),
            what: "CA bundle".into(),
            why,
        };
        let mut roots = RootCertStore::empty();
        let mut ca_not_after = i64::MAX;
        if system_roots {
            // The system's store holds hundreds of roots, some expired or in
            // encodings webpki refuses: keep what is usable, as browsers do.
            let (added, _ignored) = roots.add_parsable_certificates(ca_certs.iter().cloned());
            if added == 0 {
                return Err(TlsError::Config(
                    "no usable CA certificate in the operating system's store".into(),
                ));
            }
        }
        for cert in ca_certs.iter().filter(|_| !system_roots) {
            let (not_after, _) = inspect(cert).map_err(&ca_bad)?;
            ca_not_after = ca_not_after.min(not_after);
            roots
                .add(cert.clone())
                .map_err(|e| ca_bad(format!("not a usable CA certificate: {e}")))?;
        }
        if ca_not_after <= now {
            return Err(ca_bad("a CA certificate in it has expired".into()));
        }

        let (chain, key, identity, not_after) = match (&files.cert, &files.key) {
            (None, None) => (Vec::new(), None, None, None),
            (Some(cert_path), Some(key_path)) => {
                let cert_bytes = read(cert_path, "certificate")?;
                let key_bytes = read(key_path, "private key")?;
                hasher.update(&cert_bytes);
                hasher.update(&key_bytes);
                let chain = certificates(&cert_bytes, cert_path, "certificate")?;
                let cert_bad = |why: String| TlsError::File {
                    path: cert_path.clone(),
                    what: "certificate".into(),
                    why,
                };
                let key =
                    PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| TlsError::File {
                        path: key_path.clone(),
                        what: "private key".into(),
                        why: format!("not a PEM private key: {e}"),
                    })?;
                let signing =
                    rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| {
                        TlsError::File {
                            path: key_path.clone(),
                            what: "private key".into(),
                            why: format!("not a key TLS can use: {e}"),
                        }
                    })?;
                rustls::sign::CertifiedKey::new(chain.clone(), signing)
                    .keys_match()
                    .map_err(|e| {
                        cert_bad(format!("it does not match {}: {e}", key_path.display()))
                    })?;
                let (not_after, _) = inspect(&chain[0]).map_err(&cert_bad)?;
                if not_after <= now {
                    return Err(cert_bad("it has expired".into()));
                }
                // The chain must lead to the bundle, as peers will check.
                let parsed = ParsedCertificate::try_from(&chain[0])
                    .map_err(|e| cert_bad(format!("not a usable certificate: {e}")))?;
                let at =
                    UnixTime::since_unix_epoch(std::time::Duration::from_secs(now.max(0) as u64));
                let provider = crate::crypto::provider();
                let algorithms = provider.signature_verification_algorithms.all;
                if expect.is_some() {
                    rustls::client::verify_server_cert_signed_by_trust_anchor(
                        &parsed,
                        &roots,
                        &chain[1..],
                        at,
                        algorithms,
                    )
                    .map_err(|e| {
                        cert_bad(format!(
                            "it does not chain to the CA bundle {}: {e}",
                            files.ca.display()
                        ))
                    })?;
                }
                let identity = match identity_of(&chain[0]) {
                    Ok(identity) => Some(identity),
                    Err(why) if expect.is_some() => return Err(cert_bad(why)),
                    Err(_) => None,
                };
                if let (Some(want), Some(got)) = (expect, &identity) {
                    if &got.subject != want {
                        return Err(cert_bad(format!(
                            "it names {got}, but this node is {}",
                            crate::identity::Allow::Exactly(want.clone())
                        )));
                    }
                }
                (chain, Some(Arc::new(key)), identity, Some(not_after))
            }
            _ => {
                return Err(TlsError::Config(
                    "a certificate needs its key and a key its certificate: set both or neither"
                        .into(),
                ))
            }
        };
        if expect.is_some() && chain.is_empty() {
            return Err(TlsError::Config(
                "a node needs its own certificate and key".into(),
            ));
        }
        Ok(Material {
            roots: Arc::new(roots),
            chain,
            key,
            identity,
            not_after,
            ca_not_after,
            digest: hasher.finalize().into(),
            generation,
        })
    }
}

/// A holder's TLS material, reloadable: configs are built from what
/// [`Tls::current`] holds when a connection starts, so a reload reaches
/// every new connection and leaves open ones alone.
pub struct Tls {
    files: TlsFiles,
    /// Trust the operating system's CA store instead of `files.ca`.
    system_roots: bool,
    expect: Option<Subject>,
    material: ArcSwap<Material>,
    generations: AtomicU64,
}

impl Tls {
    /// Reads `files`; `expect` is the identity a node's certificate must
    /// carry (`None` for a client). Refuses files that do not agree.
    pub fn load(files: TlsFiles, expect: Option<Subject>, now: i64) -> Result<Arc<Tls>, TlsError> {
        let material = Material::load(&files, false, expect.as_ref(), now, 1)?;
        Ok(Arc::new(Tls {
            files,
            system_roots: false,
            expect,
            material: ArcSwap::from_pointee(material),
            generations: AtomicU64::new(1),
        }))
    }

    /// A client's material: the CA bundle `ca` (or, with `None`, the
    /// operating system's CA store, for servers with public certificates),
    /// and optionally a client certificate and its key.
    pub fn client(
        ca: Option<PathBuf>,
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
        now: i64,
    ) -> Result<Arc<Tls>, TlsError> {
        let system_roots = ca.is_none();
        let files = TlsFiles {
            ca: ca.unwrap_or_default(),
            cert,
            key,
        };
        let material = Material::load(&files, system_roots, None, now, 1)?;
        Ok(Arc::new(Tls {
            files,
            system_roots,
            expect: None,
            material: ArcSwap::from_pointee(material),
            generations: AtomicU64::new(1),
        }))
    }

    /// The material in use.
    pub fn current(&self) -> Arc<Material> {
        self.material.load_full()
    }

    /// The files this material comes from.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// The identity in this holder's certificate (as of the last load).
    pub fn identity(&self) -> Option<Identity> {
        self.material.load().identity.clone()
    }

    /// Reads the files again. Changed and valid: swapped in, `Ok(true)`.
    /// Unchanged: `Ok(false)`. Invalid: the error, and the old material
    /// stays in use.
    pub fn reload(&self, now: i64) -> Result<bool, TlsError> {
        let generation = self.generations.load(Ordering::Relaxed) + 1;
        let fresh = Material::load(
            &self.files,
            self.system_roots,
            self.expect.as_ref(),
            now,
            generation,
        )?;
        if fresh.digest == self.material.load().digest {
            return Ok(false);
        }
        if let (Some(old), Some(new)) = (&self.material.load().identity, &fresh.identity) {
            if old.trust_domain != new.trust_domain {
                return Err(TlsError::Config(format!(
                    "the new certificate names {new}, in another trust domain than {old}; \
                     a trust domain changes only with a restart"
                )));
            }
        }
        self.generations.store(generation, Ordering::Relaxed);
        self.material.store(Arc::new(fresh));
        Ok(true)
    }

    /// Seconds until this holder's certificate, and the CA bundle's first
    /// certificate to expire, expire.
    pub fn expires_in(&self, now: i64) -> (Option<i64>, i64) {
        let material = self.material.load();
        (
            material.not_after.map(|t| t - now),
            material.ca_not_after - now,
        )
    }

    /// Checks the files every `interval` until `stop`, the way the geo
    /// databases are reloaded: a changed, valid set is swapped in (INFO), a
    /// bad one refused and the old kept (WARN, and
    /// `tollgate_tls_reloads_total{outcome="refused"}`), and the seconds
    /// until expiry are kept in `tollgate_tls_certificate_expiry_seconds`.
    pub fn spawn_reloader(
        self: &Arc<Self>,
        interval: std::time::Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
        now: impl Fn() -> i64 + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let tls = self.clone();
        tls.publish_expiry(now());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.changed() => return,
                }
                if *stop.borrow() {
                    return;
                }
                let at = now();
                match tls.reload(at) {
                    Ok(true) => {
                        let identity = tls
                            .identity()
                            .map(|i| i.to_string())
                            .unwrap_or_else(|| "-".into());
                        tracing::info!(
                            cert = ?tls.files.cert,
                            %identity,
                            "Loaded a new TLS certificate; new connections use it."
                        );
                        metrics::counter!("tollgate_tls_reloads_total", "outcome" => "loaded")
                            .increment(1);
                    }
                    Ok(false) => {}
                    Err(error) => {
                        tracing::warn!(
                            %error,
                            "Refused a replaced TLS file; still serving with the previous certificate."
                        );
                        metrics::counter!("tollgate_tls_reloads_total", "outcome" => "refused")
                            .increment(1);
                    }
                }
                tls.publish_expiry(at);
            }
        })
    }

    fn publish_expiry(&self, now: i64) {
        let (own, ca) = self.expires_in(now);
        if let Some(own) = own {
            metrics::gauge!("tollgate_tls_certificate_expiry_seconds", "certificate" => "own")
                .set(own as f64);
        }
        metrics::gauge!("tollgate_tls_certificate_expiry_seconds", "certificate" => "ca")
            .set(ca as f64);
    }
}
