//! Counting each connection's requests in flight, for the limits of
//! [`crate::limits`]: a tower layer that opens an [`InFlight`] guard when
//! a request arrives on a served connection (its `PeerInfo` carries the
//! connection's activity) and keeps it until the response body ends, so a
//! streamed response keeps its connection busy.

use crate::limits::InFlight;
use http_body::Body as HttpBody;
use std::pin::Pin;
use std::task::{Context, Poll};

/// A response body that keeps its request in flight until it ends.
pub struct TrackedBody<B> {
    inner: B,
    guard: Option<InFlight>,
}

impl<B: HttpBody + Unpin> HttpBody for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) | Poll::Ready(Some(Err(_))) = &polled {
            self.guard = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A tower layer counting a connection's requests (see the module docs).
#[derive(Debug, Clone, Copy, Default)]
pub struct TrackRequestsLayer;

impl<S> tower::Layer<S> for TrackRequestsLayer {
    type Service = TrackRequests<S>;

    fn layer(&self, inner: S) -> TrackRequests<S> {
        TrackRequests { inner }
    }
}

/// See [`TrackRequestsLayer`]; `wrap` turns the tracked body into the
/// server's body type.
#[derive(Debug, Clone)]
pub struct TrackRequests<S> {
    inner: S,
}

impl<S, ReqB, ResB> tower::Service<http::Request<ReqB>> for TrackRequests<S>
where
    S: tower::Service<http::Request<ReqB>, Response = http::Response<ResB>>,
    S::Future: Send + 'static,
    ResB: TrackableBody,
{
    type Response = http::Response<ResB>;
    type Error = S::Error;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<http::Response<ResB>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqB>) -> Self::Future {
        let guard = request
            .extensions()
            .get::<crate::PeerInfo>()
            .and_then(|peer| peer.activity.as_ref())
            .map(|activity| activity.begin());
        let future = self.inner.call(request);
        Box::pin(async move {
            let response = future.await?;
            Ok(match guard {
                Some(guard) => response.map(|body| body.track(guard)),
                None => response,
            })
        })
    }
}

/// A server's response body that can carry an [`InFlight`] guard to its
/// end (tonic's and axum's bodies).
pub trait TrackableBody: Sized {
    fn track(self, guard: InFlight) -> Self;
}

impl TrackableBody for axum::body::Body {
    fn track(self, guard: InFlight) -> Self {
        axum::body::Body::new(TrackedBody {
            inner: self,
            guard: Some(guard),
        })
    }
}

impl TrackableBody for tonic::body::Body {
    fn track(self, guard: InFlight) -> Self {
        tonic::body::Body::new(TrackedBody {
            inner: self,
            guard: Some(guard),
        })
    }
}
