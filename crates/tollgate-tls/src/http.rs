//! Serving an HTTP port (REST, operations) on [`Incoming`] connections with
//! the port's limits, which `axum::serve` has no settings for: a bound on
//! the time to read an HTTP/1 request head, HTTP/2 keepalive pings, and
//! requests counted per connection so an idle one is closed (see
//! [`crate::limits`]). Every request carries the connection's
//! [`PeerInfo`] in its extensions, as on the gRPC ports.

use std::future::Future;
use std::task::{Context, Poll};

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;

use crate::server::{Incoming, Port};
use crate::track::TrackRequests;
use crate::PeerInfo;

/// Most request headers hyper parses on an HTTP/1 connection.
pub const HTTP1_HEADERS_MAX: usize = 512;

/// Serves `router` on `incoming` until `shutdown`, then lets the requests
/// in flight finish (the caller bounds how long it waits).
pub async fn serve_http(
    mut incoming: Incoming,
    router: axum::Router,
    port: Port,
    shutdown: impl Future<Output = ()> + Send,
) {
    let limits = *port.limits();
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // Above what the applications accept (the REST API: 100), so that
        // they, not hyper, refuse a request with too many headers, with a
        // body that says why; past this hyper refuses with an empty 431.
        .max_headers(HTTP1_HEADERS_MAX);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.keepalive_interval)
        .keep_alive_timeout(limits.keepalive_interval);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let io = tokio::select! {
            io = futures::StreamExt::next(&mut incoming) => match io {
                Some(Ok(io)) => io,
                Some(Err(_)) => continue,
                None => break,
            },
            () = &mut shutdown => break,
        };
        let service = WithPeer {
            peer: io.peer(),
            inner: tower::Layer::layer(&crate::track::TrackRequestsLayer, router.clone()),
        };
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let name = port.name();
        tokio::spawn(async move {
            let connection = builder.serve_connection_with_upgrades(
                TokioIo::new(io),
                TowerToHyperService::new(service),
            );
            if let Err(error) = watcher.watch(connection).await {
                tracing::debug!(%error, port = name, "An HTTP connection ended with an error.");
            }
        });
    }
    graceful.shutdown().await;
}

/// Puts the connection's [`PeerInfo`] in every request's extensions.
#[derive(Clone)]
struct WithPeer<S> {
    peer: PeerInfo,
    inner: S,
}

impl<S, B> tower::Service<http::Request<B>> for WithPeer<TrackRequests<S>>
where
    TrackRequests<S>: tower::Service<http::Request<B>>,
{
    type Response = <TrackRequests<S> as tower::Service<http::Request<B>>>::Response;
    type Error = <TrackRequests<S> as tower::Service<http::Request<B>>>::Error;
    type Future = <TrackRequests<S> as tower::Service<http::Request<B>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        request.extensions_mut().insert(self.peer.clone());
        self.inner.call(request)
    }
}
