//! Serving gRPC the same way on every port of every node: TCP_NODELAY, a
//! bound on streams per connection, the standard health service (NOT_SERVING
//! until the node says it is ready, per service), server reflection in both
//! `v1` and `v1alpha` (older grpcurl and grpcio clients ask for the latter),
//! and a `tollgate-error-code` trailer on every error status, whoever
//! produced it (a service, or tonic refusing an oversized message). Every
//! port built here ([`server_for`], [`serve_port`], [`serve_on_threads`])
//! carries its [`GrpcPort`] limits: connections and idle time (the
//! listener's [`tollgate_tls::Port`]), HTTP/2 keepalive, a concurrency
//! limit that sheds load, a per-call timeout (unary calls; a stream runs
//! on) and, where the port has one, a per-caller rate limit.

use std::sync::Arc;

use http::{HeaderName, HeaderValue};
pub use tollgate_proto::code_name;
use tollgate_tls::track::TrackRequestsLayer;
pub use tollgate_tls::ServerTls;
use tonic::transport::server::{Router, Server};
use tonic::Code;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;
use tower::layer::util::{Identity, Stack};
use tower::util::MapResponseLayer;

use crate::limits::{grpc_refusal, Limits, RateLimiter, RequestLimits, RequestLimitsLayer};

/// The metadata key carrying an error's stable, machine-readable code.
pub use crate::status::ERROR_CODE_KEY;
/// The stable code of a request refused for its size.
pub const MESSAGE_TOO_LARGE: &str = "MESSAGE_TOO_LARGE";
/// How tonic's refusal of an oversized message begins, as it travels in
/// `grpc-message` (percent-encoded: a space is `%20`).
const TONIC_TOO_LARGE_PREFIX: &[u8] = b"Error,%20decoded%20message%20length%20too%20large";
/// Most concurrent streams one client connection may open.
pub const STREAMS_PER_CONNECTION_MAX: u32 = 1024;

/// Adds the `tollgate-error-code` trailer to an error response that lacks
/// one (the gRPC code's name, e.g. `RESOURCE_EXHAUSTED`), so a client can
/// always switch on it. Errors answered before any message travel in the
/// response headers (a "trailers-only" response), which is where tonic puts
/// both a service's error and its own refusals.
type ErrorCodeLayer =
    MapResponseLayer<fn(http::Response<tonic::body::Body>) -> http::Response<tonic::body::Body>>;

type Layers = Stack<
    RequestLimitsLayer<http::Response<tonic::body::Body>>,
    Stack<TrackRequestsLayer, Stack<ErrorCodeLayer, Identity>>,
>;
/// A gRPC server builder with the house settings, the error-code layer
/// and the port's request limits.
pub type GrpcServer = Server<Layers>;
/// A router built from [`server`].
pub type GrpcRouter = Router<Layers>;

/// One gRPC port's limits: its connections ([`tollgate_tls::Port`]), its
/// requests, and its callers' rate (`None`: no rate limit).
#[derive(Clone)]
pub struct GrpcPort {
    pub port: tollgate_tls::Port,
    pub requests: RequestLimits,
    pub rate: Option<(Arc<RateLimiter>, crate::limits::RateKey)>,
    pub keepalive_interval: std::time::Duration,
}

impl GrpcPort {
    /// `name` labels the port in metrics (`check`, `feed`, ...).
    pub fn new(name: &'static str, limits: &Limits) -> GrpcPort {
        GrpcPort {
            port: limits.port(name),
            requests: limits.requests(name, true),
            rate: None,
            keepalive_interval: limits.keepalive_interval,
        }
    }

    /// Each caller, as `key` names it, at most at `limiter`'s rate.
    pub fn with_rate(mut self, limiter: Arc<RateLimiter>, key: crate::limits::RateKey) -> Self {
        self.rate = Some((limiter, key));
        self
    }
}

/// A server builder with the default limits (tests, tools); a node's
/// ports use [`server_for`].
pub fn server() -> GrpcServer {
    server_for(&GrpcPort::new("grpc", &Limits::default()))
}

/// A server builder every node port starts from, with `port`'s limits.
pub fn server_for(port: &GrpcPort) -> GrpcServer {
    let mut requests = port.requests.layer(grpc_refusal);
    if let Some((limiter, key)) = &port.rate {
        requests = requests.with_rate(limiter.clone(), *key);
    }
    Server::builder()
        .tcp_nodelay(true)
        .max_concurrent_streams(Some(STREAMS_PER_CONNECTION_MAX))
        // A dead peer's connection is dropped when a ping goes unanswered.
        .http2_keepalive_interval(Some(port.keepalive_interval))
        .http2_keepalive_timeout(Some(port.keepalive_interval))
        .layer(MapResponseLayer::new(
            add_error_code
                as fn(http::Response<tonic::body::Body>) -> http::Response<tonic::body::Body>,
        ))
        .layer(TrackRequestsLayer)
        .layer(requests)
}

fn add_error_code(
    mut response: http::Response<tonic::body::Body>,
) -> http::Response<tonic::body::Body> {
    let headers = response.headers_mut();
    if headers.contains_key(ERROR_CODE_KEY) {
        return response;
    }
    let Some(code) = headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
    else {
        return response;
    };
    if code == 0 {
        return response;
    }
    /// The stable code of a request whose bytes are not the message.
    const MALFORMED_MESSAGE: &str = "MALFORMED_MESSAGE";
    /// How tonic's refusals of a request's bytes begin in `grpc-message`
    /// (percent-encoded), all of which it answers INTERNAL: prost could not
    /// decode the message (`prost::DecodeError`'s Display), the frame's
    /// compression flag is bad, or the body ended inside a frame.
    const TONIC_MALFORMED_PREFIXES: [&[u8]; 3] = [
        b"failed%20to%20decode%20Protobuf%20message",
        b"protocol%20error:%20received%20message%20with",
        b"Unexpected%20EOF%20decoding%20stream",
    ];
    let mut error_code = code_name(Code::from_i32(code));
    let message = headers
        .get("grpc-message")
        .map(|m| m.as_bytes())
        .unwrap_or_default();
    // tonic refuses a message over the service's limit with OUT_OF_RANGE,
    // from the frame's length prefix before it buffers the body; every
    // limit of ours answers RESOURCE_EXHAUSTED, so say that.
    let too_large = code == Code::OutOfRange as i32 && message.starts_with(TONIC_TOO_LARGE_PREFIX);
    // Bytes that are not a valid message are the caller's error, not ours:
    // INVALID_ARGUMENT, as for any other invalid request. (A service that
    // passed on, as its own INTERNAL error, a peer's undecodable answer
    // with prost's words would be relabelled too; none does.)
    let malformed = code == Code::Internal as i32
        && TONIC_MALFORMED_PREFIXES
            .iter()
            .any(|prefix| message.starts_with(prefix));
    if too_large {
        headers.insert(
            "grpc-status",
            HeaderValue::from(Code::ResourceExhausted as i32),
        );
        error_code = MESSAGE_TOO_LARGE;
        metrics::counter!("tollgate_grpc_requests_refused_total", "reason" => "message_too_large")
            .increment(1);
    } else if malformed {
        headers.insert(
            "grpc-status",
            HeaderValue::from(Code::InvalidArgument as i32),
        );
        error_code = MALFORMED_MESSAGE;
        metrics::counter!("tollgate_grpc_requests_refused_total", "reason" => "malformed_message")
            .increment(1);
    }
    headers.insert(
        HeaderName::from_static(ERROR_CODE_KEY),
        HeaderValue::from_static(error_code),
    );
    response
}

pub use crate::status::{error_status, parse_grpc_timeout, request_timeout};

/// The health of one port's services, as the standard health service
/// reports it. Every named service, and the server as a whole (`""`),
/// starts NOT_SERVING; the node calls [`Health::set_ready`] as its
/// readiness changes, so a gRPC probe agrees with `/readyz`.
#[derive(Clone)]
pub struct Health {
    reporter: HealthReporter,
    services: Vec<&'static str>,
}

impl Health {
    /// Serving or not, for every service of the port and the server.
    pub async fn set_ready(&self, ready: bool) {
        let status = if ready {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        self.reporter.set_service_status("", status).await;
        for service in &self.services {
            self.reporter.set_service_status(*service, status).await;
        }
    }
}

impl Health {
    /// Keeps the health in line with `ready`, asked every `interval`, until
    /// `stop` (then NOT_SERVING), so a gRPC probe agrees with the node.
    pub fn follow(
        self,
        interval: std::time::Duration,
        stop: tokio::sync::watch::Receiver<bool>,
        ready: impl Fn() -> bool + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let stopped = crate::shutdown::stopped(stop);
            tokio::pin!(stopped);
            let mut tick = tokio::time::interval(interval);
            loop {
                tokio::select! {
                    _ = tick.tick() => self.set_ready(ready()).await,
                    _ = &mut stopped => {
                        self.set_ready(false).await;
                        return;
                    }
                }
            }
        })
    }
}

/// `router` with the standard gRPC health service for `services` (all
/// NOT_SERVING until [`Health::set_ready`]) and server reflection (`v1`
/// and `v1alpha`) over every Tollgate proto, so off-the-shelf tools
/// (grpcurl, grpc-health-probe, Kubernetes gRPC probes) can list, call and
/// probe the port.
pub async fn with_standard_services(
    router: GrpcRouter,
    services: &[&'static str],
) -> Result<(GrpcRouter, Health), crate::NodeError> {
    let (reporter, health_service) = tonic_health::server::health_reporter();
    let health = Health {
        reporter,
        services: services.to_vec(),
    };
    health.set_ready(false).await;
    let (v1, v1alpha) = tollgate_proto::reflection_services()
        .map_err(|e| crate::NodeError::Other(format!("gRPC reflection: {e}")))?;
    Ok((
        router
            .add_service(health_service)
            .add_service(v1)
            .add_service(v1alpha),
        health,
    ))
}

/// Connections accepted and waiting for their thread, per thread: past it
/// the acceptor waits, and the listen backlog holds the rest.
const HANDOFF_CONNECTIONS_MAX: usize = 64;

/// Serves `router` on `listener` from `threads` threads of its own, each
/// running a single-threaded runtime that serves its connections to the
/// end, until `stop`. A request then never changes threads: on the shared
/// multi-threaded runtime every request's task wakes an idle worker (a
/// futex call, and on a virtual machine a wake-up of an idle vCPU), which
/// costs more than answering a check. One acceptor, on the caller's
/// runtime, deals connections to the threads in turn, so a few busy
/// connections cannot all land on one thread. The returned task ends when
/// every thread has.
///
/// With `tls`, each thread runs the handshakes of its own connections, so
/// a connection's TLS state never changes threads either.
pub fn serve_on_threads(
    router: GrpcRouter,
    listener: impl Into<tollgate_tls::net::TcpListener>,
    tls: Option<Arc<ServerTls>>,
    port: &GrpcPort,
    threads: usize,
    stop: tokio::sync::watch::Receiver<bool>,
    what: &'static str,
) -> Result<tokio::task::JoinHandle<()>, crate::NodeError> {
    // A simulation's listener is served on its host's runtime: threads of
    // their own would escape the simulation's clock and scheduler.
    let listener = match listener.into().into_os() {
        Ok(listener) => listener,
        Err(simulated) => return Ok(serve_port(router, simulated, tls, port, stop, what)),
    };
    let local = listener
        .local_addr()
        .map_err(|source| crate::NodeError::Io {
            context: format!("{what}: the listener's address"),
            source,
        })?;
    let io = |context: &str| {
        let context = format!("{what}: {context}");
        move |source| crate::NodeError::Io { context, source }
    };
    let mut handoffs = Vec::new();
    let mut handles = Vec::new();
    for n in 0..threads.max(1) {
        let (handoff, accepted) =
            tokio::sync::mpsc::channel::<std::net::TcpStream>(HANDOFF_CONNECTIONS_MAX);
        handoffs.push(handoff);
        let router = router.clone();
        let stop = stop.clone();
        let tls = tls.clone();
        let port = port.port.clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(io("building a runtime"))?;
        let handle = std::thread::Builder::new()
            .name(format!("tollgate-grpc-{n}"))
            .spawn(move || {
                runtime.block_on(async move {
                    // Registered with this thread's reactor as they arrive.
                    let tcp = tokio_stream::StreamExt::filter_map(
                        tokio_stream::wrappers::ReceiverStream::new(accepted),
                        move |stream| match tokio::net::TcpStream::from_std(stream) {
                            Ok(stream) => Some(tollgate_tls::net::TcpStream::from(stream)),
                            Err(error) => {
                                tracing::warn!(%error, server = what, "A connection could not be registered.");
                                None
                            }
                        },
                    );
                    let incoming = tollgate_tls::server::incoming(tcp, tls, Ok(local), port);
                    if let Err(error) = router
                        .serve_with_incoming_shutdown(incoming, crate::shutdown::stopped(stop))
                        .await
                    {
                        tracing::error!(%error, server = what, "A gRPC server failed.");
                    }
                });
            })
            .map_err(io("starting a thread"))?;
        handles.push(handle);
    }
    let acceptor_stop = stop.clone();
    let acceptor = tokio::spawn(async move {
        let stopped = crate::shutdown::stopped(acceptor_stop);
        tokio::pin!(stopped);
        let mut turn = 0usize;
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = &mut stopped => return,
            };
            let stream = match accepted.and_then(|(stream, _)| {
                stream.set_nodelay(true)?;
                stream.into_std()
            }) {
                Ok(stream) => stream,
                Err(error) => {
                    // Out of descriptors or memory: refusing for a moment
                    // beats spinning on the error.
                    tracing::warn!(%error, server = what, "Accepting a connection failed.");
                    metrics::counter!("tollgate_grpc_accept_errors_total").increment(1);
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            };
            let handoff = &handoffs[turn % handoffs.len()];
            turn = turn.wrapping_add(1);
            if handoff.send(stream).await.is_err() {
                // That thread has stopped: the node is shutting down.
                return;
            }
        }
    });
    Ok(tokio::spawn(async move {
        if acceptor.await.is_err() {
            tracing::error!(server = what, "The gRPC acceptor panicked.");
        }
        let joined = tokio::task::spawn_blocking(move || {
            for handle in handles {
                if handle.join().is_err() {
                    tracing::error!(server = what, "A gRPC server thread panicked.");
                }
            }
        });
        if joined.await.is_err() {
            tracing::error!(server = what, "Waiting for the gRPC server threads failed.");
        }
    }))
}

/// How long the acceptor pauses after a failed `accept`.
const ACCEPT_ERROR_PAUSE: std::time::Duration = std::time::Duration::from_millis(10);

/// Serves `router` on `listener` (TCP_NODELAY on every connection, TLS
/// with `tls`) with the default connection limits until `stop`; a failure
/// is logged as `what` failing.
pub fn serve(
    router: GrpcRouter,
    listener: impl Into<tollgate_tls::net::TcpListener>,
    tls: Option<Arc<ServerTls>>,
    stop: tokio::sync::watch::Receiver<bool>,
    what: &'static str,
) -> tokio::task::JoinHandle<()> {
    let port = GrpcPort::new("grpc", &Limits::default());
    serve_port(router, listener, tls, &port, stop, what)
}

/// [`serve`] with `port`'s connection limits.
pub fn serve_port(
    router: GrpcRouter,
    listener: impl Into<tollgate_tls::net::TcpListener>,
    tls: Option<Arc<ServerTls>>,
    port: &GrpcPort,
    stop: tokio::sync::watch::Receiver<bool>,
    what: &'static str,
) -> tokio::task::JoinHandle<()> {
    let listener = listener.into();
    let local = listener.local_addr();
    let tcp = tollgate_tls::server::accept_tcp(listener, stop.clone(), port.port.name());
    let incoming = tollgate_tls::server::incoming(tcp, tls, local, port.port.clone());
    tokio::spawn(async move {
        if let Err(error) = router
            .serve_with_incoming_shutdown(incoming, crate::shutdown::stopped(stop))
            .await
        {
            tracing::error!(%error, server = what, "A gRPC server failed.");
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn grpc_timeout_headers_parse_by_the_spec() {
        let rows = [
            ("1S", Some(Duration::from_secs(1))),
            ("250m", Some(Duration::from_millis(250))),
            ("2M", Some(Duration::from_secs(120))),
            ("1H", Some(Duration::from_secs(3600))),
            ("99999999u", Some(Duration::from_micros(99_999_999))),
            ("5n", Some(Duration::from_nanos(5))),
            ("S", None),
            ("123456789S", None),
            ("10x", None),
            ("-1S", None),
        ];
        for (header, expected) in rows {
            let mut request = tonic::Request::new(());
            request
                .metadata_mut()
                .insert("grpc-timeout", header.parse().unwrap());
            assert_eq!(request_timeout(&request), expected, "{header:?}");
        }
        assert_eq!(request_timeout(&tonic::Request::new(())), None, "no header");
    }
}
