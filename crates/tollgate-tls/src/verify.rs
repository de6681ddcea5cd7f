//! Checking the certificate at the other end: it chains to our CA, it is in
//! date, it carries an identity of our trust domain, and that identity is
//! one the link admits. DNS names are not consulted between our own nodes
//! (the SPIFFE ID is the name); clients of other makes check DNS names as
//! usual, so node certificates carry those too.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore};
use rustls::{Error, OtherError, SignatureScheme};

use crate::crypto::provider;
use crate::identity::{describe, Allow, Identity};
use crate::material::identity_of;

/// The peer's certificate is ours but names someone this link does not
/// admit (or names nobody, or another trust domain).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct IdentityRefused(pub String);

fn refused(why: String) -> Error {
    Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(
        IdentityRefused(why),
    ))))
}

/// Whether `cert` names an identity of `trust_domain` that `allow` admits
/// (`None`: any identity of the trust domain).
pub(crate) fn check_identity(
    cert: &CertificateDer<'_>,
    trust_domain: Option<&str>,
    allow: Option<&[Allow]>,
) -> Result<Identity, Error> {
    let identity = identity_of(cert).map_err(refused)?;
    if let Some(domain) = trust_domain {
        if identity.trust_domain != domain {
            return Err(refused(format!(
                "{identity} is from trust domain {:?}, not {domain:?}",
                identity.trust_domain
            )));
        }
    }
    if let Some(allow) = allow {
        if !allow.iter().any(|rule| rule.admits(&identity.subject)) {
            return Err(refused(format!(
                "{identity} is not admitted here (admitted: {})",
                describe(allow)
            )));
        }
    }
    Ok(identity)
}

/// A server's check of client certificates: WebPKI chain and validity,
/// then the identity.
#[derive(Debug)]
pub(crate) struct PeerClientVerifier {
    pub(crate) inner: Arc<dyn ClientCertVerifier>,
    pub(crate) trust_domain: Option<String>,
    pub(crate) allow: Option<Vec<Allow>>,
}

impl PeerClientVerifier {
    pub(crate) fn new(
        roots: Arc<RootCertStore>,
        required: bool,
        trust_domain: Option<String>,
        allow: Option<Vec<Allow>>,
    ) -> Result<PeerClientVerifier, Error> {
        let builder = WebPkiClientVerifier::builder_with_provider(roots, provider());
        let builder = if required {
            builder
        } else {
            builder.allow_unauthenticated()
        };
        let inner = builder
            .build()
            .map_err(|e| Error::General(format!("client verifier: {e}")))?;
        Ok(PeerClientVerifier {
            inner,
            trust_domain,
            allow,
        })
    }
}

impl ClientCertVerifier for PeerClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        self.inner
            .verify_client_cert(end_entity, intermediates, now)?;
        check_identity(
            end_entity,
            self.trust_domain.as_deref(),
            self.allow.as_deref(),
        )?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A client's check of one of our servers: chain and validity against our
/// CA, then the SPIFFE identity (not the DNS name).
#[derive(Debug)]
pub(crate) struct PeerServerVerifier {
    pub(crate) roots: Arc<RootCertStore>,
    pub(crate) trust_domain: Option<String>,
    pub(crate) allow: Vec<Allow>,
    pub(crate) provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PeerServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let parsed = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        check_identity(end_entity, self.trust_domain.as_deref(), Some(&self.allow))?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Why a handshake failed, for people: rustls' own text, except that an
/// identity refusal says just what was refused.
pub fn describe_error(error: &Error) -> String {
    if let Error::InvalidCertificate(CertificateError::Other(other)) = error {
        return format!("the peer's certificate was refused: {}", other.0);
    }
    match error {
        Error::PeerIncompatible(
            rustls::PeerIncompatible::SupportedVersionsExtensionRequired
            | rustls::PeerIncompatible::Tls12NotOffered
            | rustls::PeerIncompatible::Tls12NotOfferedOrEnabled,
        ) => format!("{error} (this port speaks TLS 1.3 only)"),
        Error::InvalidMessage(_) | Error::InappropriateMessage { .. } => {
            format!("{error} (not TLS: a plaintext client on a TLS port?)")
        }
        _ => error.to_string(),
    }
}

/// Why a handshake failed, as a short label for metrics and logs.
pub fn refusal_reason(error: &Error) -> &'static str {
    match error {
        Error::InvalidMessage(_) | Error::InappropriateMessage { .. } => "not_tls",
        Error::NoCertificatesPresented => "no_client_certificate",
        Error::PeerIncompatible(
            rustls::PeerIncompatible::SupportedVersionsExtensionRequired
            | rustls::PeerIncompatible::Tls12NotOffered
            | rustls::PeerIncompatible::Tls12NotOfferedOrEnabled
            | rustls::PeerIncompatible::ServerDoesNotSupportTls12Or13
            | rustls::PeerIncompatible::ServerTlsVersionIsDisabledByOurConfig,
        ) => "protocol_version",
        Error::PeerIncompatible(_) => "incompatible",
        Error::AlertReceived(_) => "peer_refused_us",
        Error::InvalidCertificate(error) => match error {
            CertificateError::UnknownIssuer | CertificateError::BadSignature => "unknown_ca",
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => "expired",
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "not_yet_valid"
            }
            CertificateError::NotValidForName
            | CertificateError::NotValidForNameContext { .. }
            | CertificateError::Other(_) => "wrong_identity",
            _ => "bad_certificate",
        },
        _ => "other",
    }
}
