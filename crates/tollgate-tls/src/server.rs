//! Serving TLS: a port's policy (who may connect), the handshakes (bounded
//! in number and time, each refusal logged and counted with its reason), and
//! the connections they yield, for tonic and axum alike.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use futures::{Stream, StreamExt};
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};

use crate::identity::{Allow, Identity};
use crate::material::Tls;
use crate::verify::{check_identity, describe_error, refusal_reason, PeerClientVerifier};
use crate::{TlsError, Transport};

/// Handshakes in progress on one listener, at most; past it a new
/// connection is closed at once (`reason="busy"`).
pub const HANDSHAKES_IN_FLIGHT_MAX: usize = 1024;
/// Time a client gets to finish its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections handshaken and waiting for the server to take them.
const READY_CONNECTIONS_MAX: usize = 64;
/// At most one WARN per port and reason in this long (the metric counts
/// every refusal).
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// How long the acceptor pauses after a failed `accept`.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(10);

/// Who may connect to a port.
#[derive(Debug, Clone)]
pub struct ClientAuth {
    /// Refuse a client without a certificate.
    pub required: bool,
    /// The identities admitted (`None`: any identity of the trust domain).
    /// A client certificate, when presented, is always checked.
    pub allow: Option<Vec<Allow>>,
}

impl ClientAuth {
    /// Anyone may connect; a certificate, if presented, must be ours.
    pub fn optional() -> ClientAuth {
        ClientAuth {
            required: false,
            allow: None,
        }
    }

    /// Only holders of a certificate of ours that `allow` admits.
    pub fn required(allow: Vec<Allow>) -> ClientAuth {
        ClientAuth {
            required: true,
            allow: Some(allow),
        }
    }
}

/// One port's TLS: the holder's material, who may connect, and the
/// protocols it speaks (ALPN). The server config is rebuilt when the
/// material is reloaded.
pub struct ServerTls {
    tls: Arc<Tls>,
    port: &'static str,
    auth: ClientAuth,
    alpn: Vec<Vec<u8>>,
    built: ArcSwapOption<(u64, Arc<ServerConfig>)>,
}

impl ServerTls {
    /// `port` names the port in logs and metrics (`raft`, `check`, ...);
    /// `http1` also offers HTTP/1.1 (for REST and `/metrics`).
    pub fn new(
        tls: Arc<Tls>,
        port: &'static str,
        auth: ClientAuth,
        http1: bool,
    ) -> Result<Arc<ServerTls>, TlsError> {
        let mut alpn = vec![b"h2".to_vec()];
        if http1 {
            alpn.push(b"http/1.1".to_vec());
        }
        let server = ServerTls {
            tls,
            port,
            auth,
            alpn,
            built: ArcSwapOption::empty(),
        };
        server.config()?;
        Ok(Arc::new(server))
    }

    /// The config for a new connection.
    pub fn config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let material = self.tls.current();
        if let Some(built) = self.built.load().as_ref() {
            if built.0 == material.generation {
                return Ok(built.1.clone());
            }
        }
        let key = material
            .key
            .as_ref()
            .ok_or_else(|| TlsError::Config("a server needs a certificate and key".into()))?;
        let verifier = PeerClientVerifier::new(
            material.roots.clone(),
            self.auth.required,
            material.identity.as_ref().map(|i| i.trust_domain.clone()),
            self.auth.allow.clone(),
        )
        .map_err(|e| TlsError::Config(e.to_string()))?;
        let mut config = ServerConfig::builder_with_provider(crate::crypto::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_client_cert_verifier(Arc::new(verifier))
            .with_single_cert(material.chain.clone(), key.clone_key())
            .map_err(|e| TlsError::Config(format!("certificate: {e}")))?;
        config.alpn_protocols = self.alpn.clone();
        let config = Arc::new(config);
        self.built
            .store(Some(Arc::new((material.generation, config.clone()))));
        Ok(config)
    }

    /// The port's name in logs and metrics.
    pub fn port(&self) -> &'static str {
        self.port
    }
}

/// What a connection's peer proved: its address and, over TLS with a
/// client certificate, its identity. tonic puts it in every request's
/// extensions.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub remote: Option<SocketAddr>,
    pub tls: bool,
    pub identity: Option<Arc<Identity>>,
}

/// An accepted connection, over TLS or (only when configured so) not.
pub type ServerIo = crate::io::Io<tokio_rustls::server::TlsStream<TcpStream>>;

impl ServerIo {
    /// The address at the other end (no certificate parsed).
    pub fn remote(&self) -> Option<SocketAddr> {
        match self {
            ServerIo::Plain(stream) => stream.peer_addr().ok(),
            ServerIo::Tls(stream) => stream.get_ref().0.peer_addr().ok(),
        }
    }

    /// Who is at the other end: read once per connection (tonic copies it
    /// into each request). The verifier admitted only certificates naming
    /// an identity of ours, so one that does not parse here cannot occur;
    /// it would count as no identity, which admits least.
    pub fn peer(&self) -> PeerInfo {
        match self {
            ServerIo::Plain(stream) => PeerInfo {
                remote: stream.peer_addr().ok(),
                tls: false,
                identity: None,
            },
            ServerIo::Tls(stream) => {
                let (tcp, connection) = stream.get_ref();
                let identity = connection
                    .peer_certificates()
                    .and_then(|certs| certs.first())
                    .and_then(|cert| check_identity(cert, None, None).ok())
                    .map(Arc::new);
                PeerInfo {
                    remote: tcp.peer_addr().ok(),
                    tls: true,
                    identity,
                }
            }
        }
    }
}

impl tonic::transport::server::Connected for ServerIo {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.peer()
    }
}

/// Connections ready to serve: TCP accepted and, with TLS, handshaken.
pub struct Incoming {
    ready: tokio::sync::mpsc::Receiver<ServerIo>,
    local: io::Result<SocketAddr>,
}

impl Stream for Incoming {
    type Item = io::Result<ServerIo>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.ready.poll_recv(cx).map(|io| io.map(Ok))
    }
}

impl axum::serve::Listener for Incoming {
    type Io = ServerIo;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (ServerIo, SocketAddr) {
        match self.ready.recv().await {
            Some(io) => {
                let addr = io
                    .remote()
                    .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
                (io, addr)
            }
            // The acceptor stopped: the server is shutting down.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        match &self.local {
            Ok(addr) => Ok(*addr),
            Err(error) => Err(io::Error::new(error.kind(), error.to_string())),
        }
    }
}

/// Accepted TCP connections from `listener` (TCP_NODELAY set), until
/// `stop` (or its sender is dropped); an accept error (out of descriptors)
/// pauses briefly and counts.
pub fn accept_tcp(
    listener: TcpListener,
    stop: tokio::sync::watch::Receiver<bool>,
    port: &'static str,
) -> impl Stream<Item = TcpStream> + Send + 'static {
    futures::stream::unfold((listener, stop), move |(listener, mut stop)| async move {
        loop {
            if *stop.borrow() {
                return None;
            }
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                // A closed channel is a stop too (and `changed` would
                // return at once forever: a busy loop).
                changed = stop.changed() => match changed {
                    Ok(()) => continue,
                    Err(_) => return None,
                },
            };
            match accepted.and_then(|(stream, _)| stream.set_nodelay(true).map(|()| stream)) {
                Ok(stream) => return Some((stream, (listener, stop))),
                Err(error) => {
                    tracing::warn!(%error, port, "Accepting a connection failed.");
                    metrics::counter!("tollgate_accept_errors_total", "port" => port).increment(1);
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            }
        }
    })
}

/// Serves connections from `tcp` as `transport` says: over TLS, each
/// handshake on a task of its own (at most [`HANDSHAKES_IN_FLIGHT_MAX`] at
/// once, each at most [`HANDSHAKE_TIMEOUT`]); plaintext, as they come.
/// Spawns on the current runtime.
pub fn incoming(
    tcp: impl Stream<Item = TcpStream> + Send + 'static,
    tls: Option<Arc<ServerTls>>,
    local: io::Result<SocketAddr>,
) -> Incoming {
    let (ready_tx, ready) = tokio::sync::mpsc::channel(READY_CONNECTIONS_MAX);
    tokio::spawn(async move {
        let slots = Arc::new(tokio::sync::Semaphore::new(HANDSHAKES_IN_FLIGHT_MAX));
        let mut tcp = std::pin::pin!(tcp);
        while let Some(stream) = tcp.next().await {
            let Some(tls) = tls.clone() else {
                if ready_tx.send(ServerIo::Plain(stream)).await.is_err() {
                    return;
                }
                continue;
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                refused(tls.port, "busy", "too many handshakes in progress", &stream);
                continue;
            };
            let ready_tx = ready_tx.clone();
            tokio::spawn(async move {
                let _slot = slot;
                if let Some(io) = handshake(&tls, stream).await {
                    // The server stopped taking connections: drop it.
                    let _closed = ready_tx.send(io).await;
                }
            });
        }
    });
    Incoming { ready, local }
}

/// Accepts on `listener` as [`incoming`] does.
pub fn listen(
    listener: TcpListener,
    transport: &Transport,
    auth: ClientAuth,
    port: &'static str,
    http1: bool,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<Incoming, TlsError> {
    let tls = transport.server(port, auth, http1)?;
    let local = listener.local_addr();
    Ok(incoming(accept_tcp(listener, stop, port), tls, local))
}

async fn handshake(tls: &ServerTls, stream: TcpStream) -> Option<ServerIo> {
    let config = match tls.config() {
        Ok(config) => config,
        Err(error) => {
            tracing::error!(%error, port = tls.port, "No TLS config to answer a connection with.");
            return None;
        }
    };
    let peer = stream.peer_addr().ok();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => {
            metrics::counter!("tollgate_tls_handshakes_total", "port" => tls.port).increment(1);
            Some(ServerIo::Tls(Box::new(stream)))
        }
        Ok(Err(error)) => {
            let (reason, why) = match error
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            {
                Some(tls_error) => (refusal_reason(tls_error), describe_error(tls_error)),
                None if error.kind() == io::ErrorKind::UnexpectedEof => {
                    ("closed", "the client closed the connection".to_string())
                }
                None => ("io", error.to_string()),
            };
            log_refusal(tls.port, reason, &why, peer);
            None
        }
        Err(_) => {
            log_refusal(
                tls.port,
                "timeout",
                "the handshake did not finish in time",
                peer,
            );
            None
        }
    }
}

fn refused(port: &'static str, reason: &'static str, why: &str, stream: &TcpStream) {
    log_refusal(port, reason, why, stream.peer_addr().ok());
}

/// Counts a connection this server refused and logs it, at most once per
/// port and reason every [`REFUSAL_LOG_INTERVAL`].
pub(crate) fn log_refusal(
    port: &'static str,
    reason: &'static str,
    why: &str,
    peer: Option<SocketAddr>,
) {
    metrics::counter!("tollgate_tls_handshakes_refused_total", "port" => port, "reason" => reason)
        .increment(1);
    if first_in_interval("server", port, reason) {
        let peer = peer.map(|p| p.to_string()).unwrap_or_else(|| "-".into());
        tracing::warn!(
            port,
            reason,
            %peer,
            "Refused a TLS connection: {why} (one line per port and reason every 10 s; \
             tollgate_tls_handshakes_refused_total counts them all)."
        );
    }
}

/// Counts a server this client refused (or that refused this client) and
/// logs it, at most once per link and reason every [`REFUSAL_LOG_INTERVAL`].
pub(crate) fn log_client_refusal(
    link: &'static str,
    reason: &'static str,
    why: &str,
    peer: Option<SocketAddr>,
) {
    metrics::counter!("tollgate_tls_connections_refused_total", "link" => link, "reason" => reason)
        .increment(1);
    if first_in_interval("client", link, reason) {
        let peer = peer.map(|p| p.to_string()).unwrap_or_else(|| "-".into());
        tracing::warn!(
            link,
            reason,
            %peer,
            "A TLS connection failed: {why} (one line per link and reason every 10 s; \
             tollgate_tls_connections_refused_total counts them all)."
        );
    }
}

fn first_in_interval(side: &'static str, name: &'static str, reason: &'static str) -> bool {
    type Last = HashMap<(&'static str, &'static str, &'static str), Instant>;
    static LAST: Mutex<Option<Last>> = Mutex::new(None);
    let now = Instant::now();
    let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
    let last = last.get_or_insert_with(HashMap::new);
    match last.get(&(side, name, reason)) {
        Some(at) if now.duration_since(*at) < REFUSAL_LOG_INTERVAL => false,
        _ => {
            last.insert((side, name, reason), now);
            true
        }
    }
}
