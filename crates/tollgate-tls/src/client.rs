//! Connecting to a TLS port: who the server must be, and a connector tonic
//! channels (and reqwest, through [`Transport::client_config`]) use.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::net::TcpStream;
use arc_swap::ArcSwapOption;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;

use crate::crypto::provider;
use crate::identity::Allow;
use crate::material::Tls;
use crate::verify::{refusal_reason, PeerServerVerifier};
use crate::{TlsError, Transport};

/// Who the server at the other end must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// One of ours, by the SPIFFE identity in its certificate (chain to our
    /// CA; DNS names are not consulted).
    Peers(Vec<Allow>),
    /// Whoever the URL names, by the standard check of the host name
    /// against the certificate's DNS or IP names.
    HostName,
}

/// The application protocol a client speaks over TLS (ALPN).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    /// gRPC: HTTP/2.
    H2,
    /// HTTP/1.1 clients (reqwest as this workspace builds it).
    Http1,
}

/// Builds the client config for `expect` from `tls`'s current material.
pub(crate) fn client_config(
    tls: &Tls,
    expect: &Expect,
    alpn: Alpn,
) -> Result<Arc<ClientConfig>, TlsError> {
    let material = tls.current();
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match expect {
        Expect::Peers(allow) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PeerServerVerifier {
                roots: material.roots.clone(),
                trust_domain: material.identity.as_ref().map(|i| i.trust_domain.clone()),
                allow: allow.clone(),
                provider: provider(),
            })),
        Expect::HostName => builder.with_root_certificates(material.roots.clone()),
    };
    let mut config = match &material.key {
        Some(key) => builder
            .with_client_auth_cert(material.chain.clone(), key.clone_key())
            .map_err(|e| TlsError::Config(format!("client certificate: {e}")))?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = match alpn {
        Alpn::H2 => vec![b"h2".to_vec()],
        Alpn::Http1 => vec![b"http/1.1".to_vec()],
    };
    Ok(Arc::new(config))
}

/// Opens connections for a tonic channel: TCP (TCP_NODELAY), then TLS
/// when the transport has it, checking the server as `expect` says. A
/// refused server is logged (WARN, once per link and reason every 10 s)
/// and counted in `tollgate_tls_connections_refused_total{link,reason}`.
#[derive(Clone)]
pub struct Connector {
    tls: Option<Arc<Tls>>,
    expect: Arc<Expect>,
    link: &'static str,
    built: Arc<ArcSwapOption<(u64, Arc<ClientConfig>)>>,
}

impl Connector {
    pub(crate) fn new(transport: &Transport, expect: Expect, link: &'static str) -> Connector {
        Connector {
            tls: match transport {
                Transport::Tls(tls) => Some(tls.clone()),
                Transport::Plaintext => None,
            },
            expect: Arc::new(expect),
            link,
            built: Arc::new(ArcSwapOption::empty()),
        }
    }

    fn config(&self, tls: &Tls) -> Result<Arc<ClientConfig>, TlsError> {
        let generation = tls.current().generation;
        if let Some(built) = self.built.load().as_ref() {
            if built.0 == generation {
                return Ok(built.1.clone());
            }
        }
        let config = client_config(tls, &self.expect, Alpn::H2)?;
        self.built
            .store(Some(Arc::new((generation, config.clone()))));
        Ok(config)
    }
}

impl tower::Service<http::Uri> for Connector {
    type Response = TokioIo<ClientIo>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<TokioIo<ClientIo>>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let connector = self.clone();
        Box::pin(async move {
            let host = uri
                .host()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no host in the URL"))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let tls = connector.tls.clone();
            let port = uri
                .port_u16()
                .unwrap_or(if tls.is_some() { 443 } else { 80 });
            let tcp = TcpStream::connect(&host, port).await?;
            let Some(tls) = tls else {
                return Ok(TokioIo::new(ClientIo::Plain(tcp)));
            };
            let config = connector
                .config(&tls)
                .map_err(|e| io::Error::other(e.to_string()))?;
            let name = ServerName::try_from(host.clone())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
            let peer = tcp.peer_addr().ok();
            match tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
            {
                Ok(stream) => Ok(TokioIo::new(ClientIo::Tls(Box::new(stream)))),
                Err(error) => {
                    if let Some(tls_error) = error
                        .get_ref()
                        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                    {
                        crate::server::log_client_refusal(
                            connector.link,
                            refusal_reason(tls_error),
                            &crate::verify::describe_error(tls_error),
                            peer,
                        );
                    }
                    Err(error)
                }
            }
        })
    }
}

/// A connection opened by [`Connector`].
pub type ClientIo = crate::io::Io<tokio_rustls::client::TlsStream<TcpStream>>;

/// A client config for servers we do not run (webhook receivers): the
/// operating system's CA store plus `extra_ca` (a bundle of the operator's
/// own CA), the server's name checked, TLS 1.3 or 1.2 (receivers behind
/// older load balancers still speak only 1.2), HTTP/1.1.
pub fn web_client_config(
    extra_ca: Option<&std::path::Path>,
) -> Result<Arc<ClientConfig>, TlsError> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    let (system, _unusable) = roots.add_parsable_certificates(found.certs);
    if let Some(path) = extra_ca {
        let bytes = std::fs::read(path).map_err(|e| TlsError::File {
            path: path.to_path_buf(),
            what: "webhook CA bundle".into(),
            why: e.to_string(),
        })?;
        let bad = |why: String| TlsError::File {
            path: path.to_path_buf(),
            what: "webhook CA bundle".into(),
            why,
        };
        let certs = rustls::pki_types::CertificateDer::pem_slice_iter(&bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(format!("not PEM certificates: {e}")))?;
        if certs.is_empty() {
            return Err(bad("no CERTIFICATE block in it".into()));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| bad(format!("not a usable CA certificate: {e}")))?;
        }
    } else if system == 0 {
        return Err(TlsError::Config(
            "no CA certificate in the operating system's store and no webhooks.ca: \
             https:// receivers cannot be verified"
                .into(),
        ));
    }
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
