//! TLS for the command-line clients (`tollgate ctl`, `ctl check` included,
//! `tollgate bench`): the `--ca`, `--cert` and `--key` options, the
//! transport they select for a URL (`https://` → TLS, `http://` →
//! plaintext, for a node running with `insecure_plaintext`), gRPC channels
//! and reqwest clients over it, and connection errors that show their
//! whole cause chain with a hint when TLS is what failed.

use clap::Args;
use std::path::PathBuf;
use std::time::Duration;
use tollgate_tls::{Alpn, ClientTlsOptions, Expect, Transport};

/// The link name connections from the command line carry in logs and
/// metrics.
pub const LINK: &str = "ctl";

/// TLS options of a client command.
#[derive(Debug, Clone, Default, Args)]
pub struct ClientTlsArgs {
    /// CA bundle (PEM) the nodes' certificates chain to; without it, the
    /// system's CA store.
    #[arg(long = "ca", value_name = "FILE", env = "TOLLGATE_CA", global = true)]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM) to present (an operator certificate from
    /// `tollgate ctl certs issue --operator`); the Raft/cluster admin ports
    /// require one. Needs --key.
    #[arg(
        long = "cert",
        value_name = "FILE",
        env = "TOLLGATE_CERT",
        global = true,
        requires = "key"
    )]
    pub cert: Option<PathBuf>,
    /// The private key (PEM) of --cert.
    #[arg(
        long = "key",
        value_name = "FILE",
        env = "TOLLGATE_KEY",
        global = true,
        requires = "cert"
    )]
    pub key: Option<PathBuf>,
    /// Application credential (`tgc_<id>.<secret>`) presented on a region's
    /// check port, from the origin's `POST /v1/credentials` (`tollgate dev`
    /// writes one to `<data-dir>/app.credential`). Better in the
    /// environment than on a command line others can read.
    #[arg(
        long = "credential",
        value_name = "TOKEN",
        env = "TOLLGATE_CREDENTIAL",
        global = true,
        hide_env_values = true
    )]
    pub credential: Option<String>,
}

pub use tollgate_sdk::WithCredential;

/// A channel whose calls carry the `--credential`.
pub type AppChannel =
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, WithCredential>;

/// Why a client could not be set up or could not connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectError {
    /// The caller's input: a URL, a file, a CA or certificate with
    /// `http://`.
    Usage(String),
    /// The server could not be reached, or the TLS handshake failed.
    Unreachable(String),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Usage(message) | ConnectError::Unreachable(message) => {
                f.write_str(message)
            }
        }
    }
}

impl ClientTlsArgs {
    /// What adds `--credential` to calls; a token of the wrong shape is
    /// the caller's error.
    pub fn credential(&self) -> Result<WithCredential, String> {
        match &self.credential {
            None => Ok(WithCredential::none()),
            Some(token) => {
                if tollgate_model::split_credential_token(token).is_none() {
                    return Err("--credential: expected tgc_<id>.<secret>".into());
                }
                WithCredential::new(token).map_err(|e| format!("--credential: {e}"))
            }
        }
    }

    pub fn options(&self) -> ClientTlsOptions {
        ClientTlsOptions {
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
        }
    }

    /// The transport for `url`: TLS for `https://`, plaintext for `http://`.
    /// A bad file, or a CA or certificate given with `http://`, is the
    /// caller's error (`Err` with the message).
    pub fn transport(&self, url: &str) -> Result<Transport, String> {
        if self.cert.is_some() != self.key.is_some() {
            return Err("--cert and --key go together: give both or neither".into());
        }
        Transport::for_client(
            url,
            &self.options(),
            tollgate_clock::Clock::system().now_secs(),
        )
        .map_err(|e| e.to_string())
    }

    /// A reqwest client builder for `url` (HTTP/1.1), with this TLS, or
    /// `http://` in plaintext.
    pub fn http_client(&self, url: &str) -> Result<reqwest::ClientBuilder, String> {
        let transport = self.transport(url)?;
        http_client(&transport)
    }

    /// A gRPC channel to `url`, connected now, with `timeout` on connecting
    /// and on every call; the server's certificate must name the URL's
    /// host.
    pub async fn grpc_channel(
        &self,
        url: &str,
        timeout: Duration,
    ) -> Result<tonic::transport::Channel, ConnectError> {
        let transport = self.transport(url).map_err(ConnectError::Usage)?;
        grpc_channel(&transport, url, timeout).await
    }
}

/// A reqwest client builder over `transport` (HTTP/1.1).
pub fn http_client(transport: &Transport) -> Result<reqwest::ClientBuilder, String> {
    let mut builder = reqwest::Client::builder();
    if let Some(config) = transport
        .client_config(&Expect::HostName, Alpn::Http1)
        .map_err(|e| e.to_string())?
    {
        builder = builder.use_preconfigured_tls((*config).clone());
    }
    Ok(builder)
}

/// A gRPC channel to `url` over `transport`, connected now.
pub async fn grpc_channel(
    transport: &Transport,
    url: &str,
    timeout: Duration,
) -> Result<tonic::transport::Channel, ConnectError> {
    let endpoint = transport
        .endpoint(url)
        .map_err(|e| ConnectError::Usage(e.to_string()))?
        .connect_timeout(timeout)
        .timeout(timeout);
    transport
        .connect(&endpoint, Expect::HostName, LINK)
        .await
        .map_err(|e| {
            let chain = error_chain(&e);
            ConnectError::Unreachable(format!(
                "{url}: cannot connect: {chain}{}",
                hint(&chain)
                    .map(|h| format!("\n  hint: {h}"))
                    .unwrap_or_default()
            ))
        })
}

pub use tollgate_tls::error_chain;

/// What to do about a connection that failed as `chain` (from
/// [`error_chain`]) says, when TLS is the cause.
pub fn hint(chain: &str) -> Option<&'static str> {
    const RULES: &[(&[&str], &str)] = &[
        (
            &["alert: CertificateRequired"],
            "the server requires a client certificate: give --cert and --key (an operator \
             certificate from `tollgate ctl certs issue --operator NAME`; the Raft port's \
             cluster admin service admits only operators and the cluster's own nodes)",
        ),
        (
            &[
                "alert: CertificateUnknown",
                "alert: BadCertificate",
                "alert: UnknownCA",
                "alert: AccessDenied",
                "alert: UnsupportedCertificate",
                "alert: CertificateExpired",
            ],
            "the server refused the client certificate (--cert): it must be in date, chain to \
             the CA the server trusts and name an identity the port admits (an operator \
             certificate for the Raft/cluster admin port); check it with `tollgate ctl certs \
             show`",
        ),
        (
            &["UnknownIssuer"],
            "the server's certificate does not chain to the CA trusted here: give --ca (or \
             TOLLGATE_CA) with the CA bundle the nodes' certificates chain to (without it, only \
             the system's CA store is trusted)",
        ),
        (
            &["not valid for name", "NotValidForName"],
            "the server's certificate does not name the host in the URL: connect by a DNS name \
             or IP address the certificate carries (see `tollgate ctl certs show`), or issue it \
             again with --dns/--ip",
        ),
        (
            &[
                "certificate expired",
                "Expired",
                "not valid yet",
                "NotValidYet",
            ],
            "the server's certificate is out of date (or this machine's clock is wrong): renew \
             it with `tollgate ctl certs issue`",
        ),
        (
            &["InvalidContentType", "CorruptMessage", "corrupt message"],
            "the server did not answer with TLS: if the node runs with \
             tls.insecure_plaintext, use an http:// URL",
        ),
    ];
    RULES
        .iter()
        .find(|(needles, _)| needles.iter().any(|n| chain.contains(n)))
        .map(|(_, hint)| *hint)
}

/// A gRPC status's cause chain and hint, when it has a cause (a transport
/// failure: refused handshake, reset connection); empty otherwise.
pub fn status_cause(status: &tonic::Status) -> String {
    let Some(source) = std::error::Error::source(status) else {
        return String::new();
    };
    let chain = error_chain(source);
    let message = status.message();
    let mut out = match chain.strip_prefix(message) {
        // "transport error" and a chain starting with it: say it once.
        Some(rest) if !message.is_empty() => rest.to_string(),
        _ if message.contains(&chain) => String::new(),
        _ => format!(" ({chain})"),
    };
    if let Some(hint) = hint(&chain) {
        out.push_str(&format!("\n  hint: {hint}"));
    }
    out
}

/// Whether a gRPC status is a failed connection rather than an answer: a
/// transport error under it (a refused handshake; or a connection closed
/// under the call, as a server that refused the client certificate after
/// the handshake may do before the client reads why).
pub fn is_transport_failure(status: &tonic::Status) -> bool {
    std::error::Error::source(status).is_some()
        && matches!(
            status.code(),
            tonic::Code::Unknown | tonic::Code::Unavailable | tonic::Code::Cancelled
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);

    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn error_chains_show_every_cause_once() {
        let error = Layer(
            "transport error",
            Some(Box::new(Layer(
                "invalid peer certificate: UnknownIssuer",
                Some(Box::new(Layer("UnknownIssuer", None))),
            ))),
        );
        let chain = error_chain(&error);
        assert_eq!(
            chain,
            "transport error: invalid peer certificate: UnknownIssuer"
        );
        assert!(hint(&chain).unwrap().contains("--ca"));
        assert!(hint("received fatal alert: CertificateRequired")
            .unwrap()
            .contains("--cert and --key"));
        assert!(hint("received fatal alert: CertificateUnknown")
            .unwrap()
            .contains("refused the client certificate"));
        assert!(hint("certificate not valid for name \"h\"; ...")
            .unwrap()
            .contains("--dns"));
        assert_eq!(hint("Connection refused (os error 111)"), None);
    }

    #[test]
    fn a_ca_with_plain_http_is_refused() {
        let args = ClientTlsArgs {
            ca: Some("ca.pem".into()),
            ..ClientTlsArgs::default()
        };
        let error = args.transport("http://127.0.0.1:1").unwrap_err();
        assert!(error.contains("https://"), "{error}");
        assert!(matches!(
            ClientTlsArgs::default().transport("http://127.0.0.1:1"),
            Ok(Transport::Plaintext)
        ));
        let error = ClientTlsArgs::default()
            .transport("127.0.0.1:1")
            .unwrap_err();
        assert!(error.contains("https://"), "{error}");
    }
}
