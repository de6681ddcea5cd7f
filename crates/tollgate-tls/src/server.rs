//! Serving TLS: a port's policy (who may connect), the handshakes (bounded
//! in number and time, each refusal logged and counted with its reason), and
//! the connections they yield, for tonic and axum alike. Every connection,
//! over TLS or not, holds one of its port's [`Port`] slots from accept to
//! close and is closed when idle (see [`crate::limits`]).

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::net::{TcpListener, TcpStream};
use arc_swap::ArcSwapOption;
use futures::{Stream, StreamExt};
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Semaphore;

use crate::limits::{count_refusal, monotonic_ms, ConnActivity, PortLimits};

use crate::identity::{Allow, Identity};
use crate::material::Tls;
use crate::verify::{check_identity, describe_error, refusal_reason, PeerClientVerifier};
use crate::{TlsError, Transport};

/// Handshakes in progress on one listener, at most; past it a new
/// connection is closed at once (`reason="busy"`).
pub const HANDSHAKES_IN_FLIGHT_MAX: usize = 1024;
pub use crate::limits::HANDSHAKE_TIMEOUT;
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
    /// The connection's requests in flight, for
    /// [`crate::track::TrackRequests`] (`None` outside a served port).
    pub activity: Option<Arc<ConnActivity>>,
}

type RawIo = crate::io::Io<tokio_rustls::server::TlsStream<TcpStream>>;

/// An accepted connection, over TLS or (only when configured so) not,
/// holding its port's slot until dropped, and ending itself (a read fails
/// with `TimedOut`) once idle for its port's `idle_timeout`.
pub struct ServerIo {
    io: RawIo,
    activity: Arc<ConnActivity>,
    idle: Option<IdleWatch>,
    _slot: Slot,
}

struct IdleWatch {
    port: &'static str,
    timeout: Duration,
    /// Requests are counted by the server; otherwise a byte read counts.
    tracked: bool,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl ServerIo {
    fn new(io: RawIo, port: &Port, (slot, activity): (Slot, Arc<ConnActivity>)) -> ServerIo {
        let limits = &port.limits;
        ServerIo {
            io,
            activity,
            idle: Some(IdleWatch {
                port: port.name,
                timeout: limits.idle_timeout,
                tracked: limits.requests_tracked,
                timer: Box::pin(tokio::time::sleep(limits.idle_timeout)),
            }),
            _slot: slot,
        }
    }

    /// The TLS session, when the connection is over TLS.
    pub fn tls_connection(&self) -> Option<&rustls::ServerConnection> {
        match &self.io {
            RawIo::Tls(stream) => Some(stream.get_ref().1),
            RawIo::Plain(_) => None,
        }
    }

    /// The address at the other end (no certificate parsed).
    pub fn remote(&self) -> Option<SocketAddr> {
        match &self.io {
            RawIo::Plain(stream) => stream.peer_addr().ok(),
            RawIo::Tls(stream) => stream.get_ref().0.peer_addr().ok(),
        }
    }

    /// Whether the connection has been idle past its timeout; otherwise
    /// the timer is set (and registered with `cx`) for when it could be.
    fn idle_expired(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(idle) = self.idle.as_mut() else {
            return false;
        };
        loop {
            if std::future::Future::poll(idle.timer.as_mut(), cx).is_pending() {
                return false;
            }
            match self.activity.idle_past(idle.timeout) {
                Ok(()) => return true,
                Err(at_ms) => {
                    let wait = Duration::from_millis(at_ms.saturating_sub(monotonic_ms()));
                    idle.timer
                        .as_mut()
                        .reset(tokio::time::Instant::now() + wait);
                }
            }
        }
    }

    /// Who is at the other end: read once per connection (tonic copies it
    /// into each request). The verifier admitted only certificates naming
    /// an identity of ours, so one that does not parse here cannot occur;
    /// it would count as no identity, which admits least.
    pub fn peer(&self) -> PeerInfo {
        let activity = Some(self.activity.clone());
        match &self.io {
            RawIo::Plain(stream) => PeerInfo {
                remote: stream.peer_addr().ok(),
                tls: false,
                identity: None,
                activity,
            },
            RawIo::Tls(stream) => {
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
                    activity,
                }
            }
        }
    }
}

impl AsyncRead for ServerIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.activity.poll_evicted(cx) {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "closed to make room for a new connection",
            )));
        }
        if this.idle_expired(cx) {
            let port = this.idle.as_ref().map_or("-", |i| i.port);
            count_refusal(port, "idle");
            // Never again: the server drops the connection on this error.
            this.idle = None;
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the connection was idle for too long",
            )));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &polled {
            let untracked = this.idle.as_ref().is_some_and(|i| !i.tracked);
            if untracked && buf.filled().len() > before {
                this.activity.touch();
            }
        }
        polled
    }
}

impl AsyncWrite for ServerIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// One port: its name in logs and metrics, its limits, and its open
/// connections (shared by every thread serving the port).
#[derive(Clone)]
pub struct Port {
    name: &'static str,
    limits: PortLimits,
    shared: Arc<PortShared>,
}

struct PortShared {
    open: std::sync::atomic::AtomicUsize,
    /// Every open connection's activity, to pick one to evict.
    connections: Mutex<Vec<std::sync::Weak<ConnActivity>>>,
}

/// One open connection's place on its port, given back when dropped.
pub(crate) struct Slot(Arc<PortShared>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0
            .open
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Port {
    pub fn new(name: &'static str, limits: PortLimits) -> Port {
        Port {
            name,
            limits,
            shared: Arc::new(PortShared {
                open: std::sync::atomic::AtomicUsize::new(0),
                connections: Mutex::new(Vec::new()),
            }),
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn limits(&self) -> &PortLimits {
        &self.limits
    }

    /// Connections open on the port now (evicted ones until they close).
    pub fn connections_open(&self) -> usize {
        self.shared.open.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A place for a new connection: a free one, or that of an evicted
    /// idle connection; `None` (counted and logged) when every connection
    /// has a request in flight. Evicted connections still count until they
    /// close (at their next poll), so the port never holds more than twice
    /// its cap even for a moment.
    fn admit(&self, stream: &TcpStream) -> Option<(Slot, Arc<ConnActivity>)> {
        let open = self
            .shared
            .open
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let slot = Slot(self.shared.clone());
        let max = self.limits.connections_max.max(1);
        let mut connections = self
            .shared
            .connections
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if open >= max {
            connections.retain(|c| c.strong_count() > 0);
            let victim = connections
                .iter()
                .filter_map(|c| c.upgrade())
                .filter_map(|c| c.eviction_rank().map(|rank| (rank, c)))
                .min_by_key(|(rank, _)| *rank);
            match victim {
                Some((_, victim)) => {
                    victim.evict();
                    count_refusal(self.name, "evicted");
                }
                None => {
                    drop(connections);
                    drop(slot);
                    count_refusal(self.name, "connections_max");
                    if first_in_interval("server", self.name, "connections_max") {
                        let peer = stream
                            .peer_addr()
                            .map_or_else(|_| "-".into(), |p| p.to_string());
                        tracing::warn!(
                            port = self.name,
                            connections_max = self.limits.connections_max,
                            %peer,
                            "Closed a new connection: every open one has a request in flight \
                             (one line per port every 10 s; \
                             tollgate_requests_refused_total{{reason=\"connections_max\"}} counts them all)."
                        );
                    }
                    return None;
                }
            }
        } else if connections.len() >= 2 * max {
            connections.retain(|c| c.strong_count() > 0);
        }
        let activity = ConnActivity::new();
        connections.push(Arc::downgrade(&activity));
        Some((slot, activity))
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
    listener: impl Into<TcpListener>,
    stop: tokio::sync::watch::Receiver<bool>,
    port: &'static str,
) -> impl Stream<Item = TcpStream> + Send + 'static {
    futures::stream::unfold(
        (listener.into(), stop),
        move |(listener, mut stop)| async move {
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
                        metrics::counter!("tollgate_accept_errors_total", "port" => port)
                            .increment(1);
                        tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    }
                }
            }
        },
    )
}

/// Serves connections from `tcp` as `transport` says, each holding one of
/// `port`'s slots (past [`PortLimits::connections_max`] a new connection is
/// closed at once): over TLS, each handshake on a task of its own (at most
/// [`HANDSHAKES_IN_FLIGHT_MAX`] at once, each at most the port's
/// `handshake_timeout`); plaintext, as they come. Spawns on the current
/// runtime.
pub fn incoming(
    tcp: impl Stream<Item = TcpStream> + Send + 'static,
    tls: Option<Arc<ServerTls>>,
    local: io::Result<SocketAddr>,
    port: Port,
) -> Incoming {
    let (ready_tx, ready) = tokio::sync::mpsc::channel(READY_CONNECTIONS_MAX);
    tokio::spawn(async move {
        let handshakes = Arc::new(Semaphore::new(HANDSHAKES_IN_FLIGHT_MAX));
        let mut tcp = std::pin::pin!(tcp);
        while let Some(stream) = tcp.next().await {
            let Some(slot) = port.admit(&stream) else {
                continue;
            };
            let Some(tls) = tls.clone() else {
                let io = ServerIo::new(RawIo::Plain(stream), &port, slot);
                if ready_tx.send(io).await.is_err() {
                    return;
                }
                continue;
            };
            let Ok(handshaking) = handshakes.clone().try_acquire_owned() else {
                refused(tls.port, "busy", "too many handshakes in progress", &stream);
                continue;
            };
            let ready_tx = ready_tx.clone();
            let port = port.clone();
            tokio::spawn(async move {
                let _handshaking = handshaking;
                let timeout = port.limits.handshake_timeout;
                let activity = slot.1.clone();
                let evicted = std::future::poll_fn(|cx| {
                    if activity.poll_evicted(cx) {
                        Poll::Ready(())
                    } else {
                        Poll::Pending
                    }
                });
                let handshaken = tokio::select! {
                    io = handshake(&tls, stream, timeout) => io,
                    () = evicted => None,
                };
                if let Some(io) = handshaken {
                    let io = ServerIo::new(io, &port, slot);
                    // The server stopped taking connections: drop it.
                    let _closed = ready_tx.send(io).await;
                }
            });
        }
    });
    Incoming { ready, local }
}

/// Accepts on `listener` as [`incoming`] does, with the default
/// [`PortLimits`] (idle: nothing read).
pub fn listen(
    listener: impl Into<TcpListener>,
    transport: &Transport,
    auth: ClientAuth,
    port: &'static str,
    http1: bool,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<Incoming, TlsError> {
    listen_with(
        listener,
        transport,
        auth,
        Port::new(port, PortLimits::default()),
        http1,
        stop,
    )
}

/// Accepts on `listener` as [`incoming`] does, with `port`'s limits.
pub fn listen_with(
    listener: impl Into<TcpListener>,
    transport: &Transport,
    auth: ClientAuth,
    port: Port,
    http1: bool,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<Incoming, TlsError> {
    let tls = transport.server(port.name, auth, http1)?;
    let listener = listener.into();
    let local = listener.local_addr();
    Ok(incoming(
        accept_tcp(listener, stop, port.name),
        tls,
        local,
        port,
    ))
}

async fn handshake(tls: &ServerTls, stream: TcpStream, timeout: Duration) -> Option<RawIo> {
    let config = match tls.config() {
        Ok(config) => config,
        Err(error) => {
            tracing::error!(%error, port = tls.port, "No TLS config to answer a connection with.");
            return None;
        }
    };
    let peer = stream.peer_addr().ok();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => {
            metrics::counter!("tollgate_tls_handshakes_total", "port" => tls.port).increment(1);
            Some(RawIo::Tls(Box::new(stream)))
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
