//! A certificate authority for operators without one (`tollgate ctl certs`),
//! for `tollgate dev` and for the tests: ECDSA P-256 keys (what every TLS
//! client accepts: curl, grpcurl, browsers), one SPIFFE ID per certificate.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, PKCS_ECDSA_P256_SHA256,
};

use crate::identity::{Identity, Subject};
use crate::TlsError;

/// A certificate and its key, both PEM.
#[derive(Debug, Clone)]
pub struct Pem {
    pub cert: String,
    pub key: String,
}

/// What a certificate is for and when it is valid.
#[derive(Debug, Clone)]
pub struct Request {
    pub identity: Identity,
    /// DNS names the holder is reached by (clients that check names: curl,
    /// grpcurl, the SDK).
    pub dns: Vec<String>,
    /// IP addresses the holder is reached by.
    pub ips: Vec<IpAddr>,
    /// Valid from, Unix seconds.
    pub not_before: i64,
    /// Valid until, Unix seconds.
    pub not_after: i64,
}

fn when(unix: i64) -> Result<time::OffsetDateTime, TlsError> {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .map_err(|e| TlsError::Config(format!("time {unix}: {e}")))
}

fn rc(what: &str) -> impl Fn(rcgen::Error) -> TlsError + '_ {
    move |e| TlsError::Config(format!("{what}: {e}"))
}

/// A new CA for `trust_domain`, valid from `not_before` to `not_after`.
pub fn create_ca(trust_domain: &str, not_before: i64, not_after: i64) -> Result<Pem, TlsError> {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "Tollgate");
    name.push(
        DnType::CommonName,
        format!("Tollgate CA for {trust_domain}"),
    );
    params.distinguished_name = name;
    // The trust domain's own SPIFFE ID, so `issue` knows it from the CA.
    let domain_id = format!("spiffe://{trust_domain}")
        .try_into()
        .map_err(rc("trust domain"))?;
    params.subject_alt_names.push(SanType::URI(domain_id));
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = when(not_before)?;
    params.not_after = when(not_after)?;
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(rc("CA key"))?;
    let cert = params.self_signed(&key).map_err(rc("CA certificate"))?;
    Ok(Pem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// The trust domain a CA made by [`create_ca`] is for (its
/// `spiffe://<trust-domain>` URI SAN).
pub fn trust_domain_of(ca_cert_pem: &str) -> Result<String, TlsError> {
    use rustls::pki_types::pem::PemObject;
    let der = rustls::pki_types::CertificateDer::from_pem_slice(ca_cert_pem.as_bytes())
        .map_err(|e| TlsError::Config(format!("the CA certificate is not PEM: {e}")))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| TlsError::Config(format!("the CA certificate is not X.509: {e}")))?;
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::URI(uri) = name {
                if let Some(domain) = uri.strip_prefix("spiffe://") {
                    if !domain.is_empty() && !domain.contains('/') {
                        return Ok(domain.to_string());
                    }
                }
            }
        }
    }
    Err(TlsError::Config(
        "the CA certificate names no trust domain (no spiffe://<domain> URI SAN); \
         give --trust-domain"
            .into(),
    ))
}

/// A certificate for `request`, signed by `ca`. Nodes and applications get
/// both server and client use; operators only client use.
pub fn issue(ca: &Pem, request: &Request) -> Result<Pem, TlsError> {
    let ca_key = KeyPair::from_pem(&ca.key).map_err(rc("CA key"))?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert, ca_key).map_err(rc("CA certificate"))?;
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "Tollgate");
    name.push(DnType::CommonName, request.identity.to_string());
    params.distinguished_name = name;
    let uri = request
        .identity
        .to_string()
        .try_into()
        .map_err(rc("identity URI"))?;
    params.subject_alt_names.push(SanType::URI(uri));
    for dns in &request.dns {
        let dns = dns.clone().try_into().map_err(rc("DNS name"))?;
        params.subject_alt_names.push(SanType::DnsName(dns));
    }
    for ip in &request.ips {
        params.subject_alt_names.push(SanType::IpAddress(*ip));
    }
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = match request.identity.subject {
        // Nodes serve and call each other; applications call, and may
        // serve too (a webhook receiver, an app's own API).
        Subject::OriginNode(_) | Subject::RegionNode { .. } | Subject::App(_) => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
        Subject::Operator(_) => vec![ExtendedKeyUsagePurpose::ClientAuth],
    };
    params.use_authority_key_identifier_extension = true;
    params.not_before = when(request.not_before)?;
    params.not_after = when(request.not_after)?;
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(rc("key"))?;
    let cert = params.signed_by(&key, &issuer).map_err(rc("certificate"))?;
    Ok(Pem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// Writes `pem` as `<dir>/<name>.pem` and `<dir>/<name>.key` (the key
/// readable by its owner only), replacing each file in one rename so a
/// node reloading never reads half of one. Returns both paths.
pub fn write(dir: &Path, name: &str, pem: &Pem) -> Result<(PathBuf, PathBuf), TlsError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |e: std::io::Error| TlsError::File {
            path: path.clone(),
            what: "output".into(),
            why: e.to_string(),
        }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}.key"));
    write_atomic(&key, pem.key.as_bytes(), true).map_err(io(&key))?;
    write_atomic(&cert, pem.cert.as_bytes(), false).map_err(io(&cert))?;
    Ok((cert, key))
}

/// Replaces `path` with `bytes` in one rename.
pub fn write_atomic(path: &Path, bytes: &[u8], secret: bool) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension(format!(
        "{}.tmp",
        path.extension().and_then(|e| e.to_str()).unwrap_or("")
    ));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if secret { 0o600 } else { 0o644 });
    }
    let mut file = options.open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)
}

/// Reads a CA written by [`write`].
pub fn read_ca(dir: &Path, name: &str) -> Result<Pem, TlsError> {
    let read = |path: PathBuf| {
        std::fs::read_to_string(&path).map_err(|e| TlsError::File {
            path,
            what: "CA".into(),
            why: e.to_string(),
        })
    };
    Ok(Pem {
        cert: read(dir.join(format!("{name}.pem")))?,
        key: read(dir.join(format!("{name}.key")))?,
    })
}
