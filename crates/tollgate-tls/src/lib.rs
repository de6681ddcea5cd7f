//! TLS on every Tollgate link, with rustls (ring provider) and TLS 1.3.
//!
//! - [`identity`]: who a certificate says its holder is — a SPIFFE ID such
//!   as `spiffe://acme.example/region/eu/node/2` — and which kinds of peer a
//!   link admits ([`Allow`]).
//! - [`material`]: the CA bundle, certificate and key files, checked
//!   together (key matches, chain leads to the CA, in date, the node's own
//!   identity) and reloaded without a restart ([`Tls::spawn_reloader`]).
//! - [`server`]: a port's policy ([`ClientAuth`]), handshakes bounded in
//!   number and time, every refusal logged and counted by reason, and the
//!   connections for tonic and axum ([`listen`], [`Incoming`], [`PeerInfo`]).
//! - [`limits`]: a port's connection limits ([`PortLimits`]: open
//!   connections, handshake, idle and header read timeouts, keepalive) and
//!   the one refusal metric, `tollgate_requests_refused_total{port,reason}`;
//!   [`http`]: an HTTP port served with them.
//! - [`client`]: a connector for tonic channels that checks who answered
//!   ([`Expect`]).
//! - [`ca`]: a CA and certificates for operators, `tollgate dev` and tests.
//!
//! A node runs with a [`Transport`]: TLS with its material, or plaintext,
//! which only an explicit `insecure_plaintext = true` selects.

pub mod ca;
pub mod client;
mod crypto;
pub mod http;
pub mod identity;
pub mod io;
pub mod limits;
pub mod material;
pub mod net;
pub mod server;
pub mod track;
mod verify;

use std::path::PathBuf;
use std::sync::Arc;

pub use client::{web_client_config, Alpn, Connector, Expect};
pub use identity::{Allow, Identity, Subject};
pub use limits::PortLimits;
pub use material::{Tls, TlsFiles};
pub use server::{listen, listen_with, ClientAuth, Incoming, PeerInfo, Port, ServerIo, ServerTls};
pub use verify::IdentityRefused;

/// `error` and every error under it (`source`), joined with `: `; a
/// message already part of one above it is left out (reqwest, hyper and
/// tonic often repeat their cause). Why a TLS connection failed (an
/// unknown CA, a name mismatch) is only in the sources, so every error a
/// user or a log reads about a connection goes through this.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(error);
    while let Some(e) = next {
        let message = e.to_string();
        let known = parts.iter().any(|p| p.contains(&message));
        if !message.is_empty() && !known {
            parts.push(message);
        }
        next = e.source();
    }
    if parts.is_empty() {
        return "unknown error".into();
    }
    parts.join(": ")
}

/// A client's TLS options, as command lines and SDK builders take them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTlsOptions {
    /// CA bundle (PEM) the server's certificate must chain to; `None`: the
    /// operating system's CA store.
    pub ca: Option<PathBuf>,
    /// A client certificate (PEM) to present, for ports that ask for one.
    pub cert: Option<PathBuf>,
    /// Its private key (PEM).
    pub key: Option<PathBuf>,
}

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{what} {}: {why}", path.display())]
    File {
        path: PathBuf,
        what: String,
        why: String,
    },
    #[error("TLS: {0}")]
    Config(String),
}

/// How a node's links are carried: TLS with the node's material, or (only
/// when configured on purpose) plaintext.
#[derive(Clone)]
pub enum Transport {
    Tls(Arc<Tls>),
    Plaintext,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Transport::Tls(tls) => match tls.identity() {
                Some(identity) => write!(f, "Tls({identity})"),
                None => f.write_str("Tls"),
            },
            Transport::Plaintext => f.write_str("Plaintext"),
        }
    }
}

/// A node's TLS, as `/v1/status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TlsStatus {
    /// `tls`, or `insecure_plaintext` when configured so on purpose.
    pub mode: &'static str,
    /// The SPIFFE ID in this node's certificate.
    pub identity: Option<String>,
    /// Seconds until this node's certificate expires.
    pub certificate_expires_in_seconds: Option<i64>,
    /// Seconds until the first CA certificate of the bundle expires.
    pub ca_expires_in_seconds: Option<i64>,
}

/// How often a link made by [`Transport::endpoint`] pings its peer over
/// HTTP/2, idle or not.
pub const KEEPALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);
/// How long such a ping may go unanswered before the connection is given up.
pub const KEEPALIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

impl Transport {
    /// What `/v1/status` shows, `now` in Unix seconds.
    pub fn status(&self, now: i64) -> TlsStatus {
        match self {
            Transport::Tls(tls) => {
                let (own, ca) = tls.expires_in(now);
                TlsStatus {
                    mode: "tls",
                    identity: tls.identity().map(|i| i.to_string()),
                    certificate_expires_in_seconds: own,
                    ca_expires_in_seconds: Some(ca),
                }
            }
            Transport::Plaintext => TlsStatus {
                mode: "insecure_plaintext",
                identity: None,
                certificate_expires_in_seconds: None,
                ca_expires_in_seconds: None,
            },
        }
    }

    /// Whether links are encrypted.
    pub fn is_tls(&self) -> bool {
        matches!(self, Transport::Tls(_))
    }

    /// `https` or `http`.
    pub fn scheme(&self) -> &'static str {
        if self.is_tls() {
            "https"
        } else {
            "http"
        }
    }

    /// Whether `peer` is a member of this node's own cluster, and whether
    /// it is an operator, both in this node's trust domain; read from the
    /// current material without copying it (a Raft port asks on every RPC).
    pub fn classify(&self, peer: &Identity) -> (bool, bool) {
        let Transport::Tls(tls) = self else {
            return (false, false);
        };
        let material = tls.current();
        let Some(me) = material.identity.as_ref() else {
            return (false, false);
        };
        let operator =
            me.trust_domain == peer.trust_domain && matches!(peer.subject, Subject::Operator(_));
        (me.same_cluster(peer), operator)
    }

    /// The identity in this holder's certificate.
    pub fn identity(&self) -> Option<Identity> {
        match self {
            Transport::Tls(tls) => tls.identity(),
            Transport::Plaintext => None,
        }
    }

    /// A port's TLS, or `None` in plaintext.
    pub fn server(
        &self,
        port: &'static str,
        auth: ClientAuth,
        http1: bool,
    ) -> Result<Option<Arc<ServerTls>>, TlsError> {
        match self {
            Transport::Tls(tls) => ServerTls::new(tls.clone(), port, auth, http1).map(Some),
            Transport::Plaintext => Ok(None),
        }
    }

    /// A connector for tonic channels; `link` names the link in logs and
    /// metrics.
    pub fn connector(&self, expect: Expect, link: &'static str) -> Connector {
        Connector::new(self, expect, link)
    }

    /// `url` checked against this transport: `https://` with TLS, `http://`
    /// without, so a config never silently sends in clear what it meant to
    /// encrypt (or the reverse).
    pub fn check_url(&self, url: &str) -> Result<(), TlsError> {
        let scheme = url.split_once("://").map(|(s, _)| s);
        match (self, scheme) {
            (Transport::Tls(_), Some("https")) | (Transport::Plaintext, Some("http")) => Ok(()),
            (Transport::Tls(_), _) => Err(TlsError::Config(format!(
                "{url:?}: TLS is on, so the URL must start with https://"
            ))),
            (Transport::Plaintext, _) => Err(TlsError::Config(format!(
                "{url:?}: TLS is off (insecure_plaintext), so the URL must start with http://"
            ))),
        }
    }

    /// A tonic endpoint for `url` (checked with [`Transport::check_url`]),
    /// with HTTP/2 keepalive pings while idle too ([`KEEPALIVE_INTERVAL`],
    /// [`KEEPALIVE_TIMEOUT`]; a caller may tighten them): a connection a
    /// partition left half-open, with no reset ever arriving, is given up
    /// and dialled anew within their sum, instead of swallowing call after
    /// call until the kernel gives up on it (the whole-system simulation
    /// found such links between Raft peers and from a region to its origin).
    pub fn endpoint(&self, url: &str) -> Result<tonic::transport::Endpoint, TlsError> {
        self.check_url(url)?;
        Ok(tonic::transport::Endpoint::from_shared(url.to_string())
            .map_err(|e| TlsError::Config(format!("{url:?}: {e}")))?
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true))
    }

    /// A channel over `endpoint` (from [`Transport::endpoint`], with the
    /// caller's timeouts), connecting on first use; the server must be as
    /// `expect` says.
    pub fn lazy_channel(
        &self,
        endpoint: &tonic::transport::Endpoint,
        expect: Expect,
        link: &'static str,
    ) -> tonic::transport::Channel {
        endpoint.connect_with_connector_lazy(self.connector(expect, link))
    }

    /// A channel over `endpoint`, connected now.
    pub async fn connect(
        &self,
        endpoint: &tonic::transport::Endpoint,
        expect: Expect,
        link: &'static str,
    ) -> Result<tonic::transport::Channel, tonic::transport::Error> {
        endpoint
            .connect_with_connector(self.connector(expect, link))
            .await
    }

    /// A rustls client config for other HTTP clients (reqwest: `Alpn::Http1`),
    /// checking the server as `expect` says. `None` in plaintext.
    pub fn client_config(
        &self,
        expect: &Expect,
        alpn: Alpn,
    ) -> Result<Option<Arc<rustls::ClientConfig>>, TlsError> {
        match self {
            Transport::Tls(tls) => client::client_config(tls, expect, alpn).map(Some),
            Transport::Plaintext => Ok(None),
        }
    }

    /// What a command-line client or an SDK uses to reach `url`: TLS for
    /// `https://` (trusting `options.ca`, or the operating system's CA store
    /// without one; presenting `options.cert` if given), plaintext for
    /// `http://`. A CA or certificate given with an `http://` URL is an
    /// error, not ignored.
    pub fn for_client(
        url: &str,
        options: &ClientTlsOptions,
        now: i64,
    ) -> Result<Transport, TlsError> {
        match url.split_once("://").map(|(scheme, _)| scheme) {
            Some("https") => Tls::client(
                options.ca.clone(),
                options.cert.clone(),
                options.key.clone(),
                now,
            )
            .map(Transport::Tls),
            Some("http") => {
                if options.ca.is_some() || options.cert.is_some() {
                    return Err(TlsError::Config(format!(
                        "{url:?} is plain http://, but a CA or client certificate was given: \
                         use https://"
                    )));
                }
                Ok(Transport::Plaintext)
            }
            _ => Err(TlsError::Config(format!(
                "{url:?}: the URL must start with https:// (or http:// for a node \
                 running with insecure_plaintext)"
            ))),
        }
    }
}
