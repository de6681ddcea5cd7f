//! Per-request limits every port shares, whatever it speaks: a concurrency
//! limit that sheds load at once (never a queue), a request timeout (for
//! gRPC, the client's `grpc-timeout` capped by the server's; only the call
//! itself is timed, never a streamed response, so `Watch` and
//! `Changefeed.Subscribe` run as long as they like), and a per-key token
//! bucket rate limiter ([`RateLimiter`]). A refusal is answered by the
//! port's own `refuse` function (problem+json on REST, a status with a
//! `tollgate-error-code` on gRPC; [`grpc_refusal`]) and counted in
//! `tollgate_requests_refused_total{port,reason}`.
//!
//! Which limiter key a port uses is the port's choice: the origin's REST
//! layer keys requests without an API key by IP ([`peer_ip_key`]) and the
//! routes count a proven API key by its id; the check port counts a
//! verified application credential by its id ([`RateLimiter::check_grpc`]),
//! a call without one by IP.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
pub use tollgate_tls::limits::count_refusal;
use tonic::Code;

/// Stable code of a request refused because the port is at its
/// concurrency limit.
pub const OVERLOADED: &str = "OVERLOADED";
/// Stable code of a request that took longer than the port allows.
pub const TIMEOUT: &str = "TIMEOUT";
/// Stable code of a request over its caller's rate.
pub const RATE_LIMITED: &str = "RATE_LIMITED";
/// The gRPC metadata key (and HTTP header, as `Retry-After`) saying how
/// many seconds to wait before retrying.
pub const RETRY_AFTER_KEY: &str = "retry-after";

/// A node's limits, the same on each of its ports (`[limits]` in the
/// config file; every default documented in `deploy/config/*.example.toml`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Longest a request may take (gRPC: the client's `grpc-timeout`, if
    /// shorter, instead; a streamed response is not bounded).
    pub request_timeout: Duration,
    /// Most requests answered at once per port; past it a request is
    /// refused at once (503 / UNAVAILABLE `OVERLOADED`).
    pub concurrency_max: usize,
    /// Most connections open at once per port.
    pub connections_max: usize,
    /// Time a client gets to finish its TLS handshake.
    pub handshake_timeout: Duration,
    /// Time a client gets to send an HTTP/1 request head.
    pub header_read_timeout: Duration,
    /// A connection with no request in flight this long is closed.
    pub idle_timeout: Duration,
    /// HTTP/2 keepalive ping interval (and the time its answer may take).
    pub keepalive_interval: Duration,
    /// Each caller's sustained request rate (0: no rate limit).
    pub rate_per_second: u32,
    /// Each caller's burst.
    pub rate_burst: u32,
    /// Most callers whose rate is remembered (least recently seen first
    /// forgotten).
    pub rate_keys_max: usize,
    /// Messages buffered per `Watch` stream (region nodes); a watcher that
    /// lets them pile up longer than `request_timeout` is dropped.
    pub watch_buffer: usize,
    /// The whole of a node's shutdown: stop accepting, drain what is in
    /// flight, flush usage, close streams, stop Raft. The default fits
    /// Kubernetes' 30 s termination grace with room to spare.
    pub shutdown_deadline: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        let port = tollgate_tls::PortLimits::default();
        Limits {
            request_timeout: Duration::from_secs(30),
            shutdown_deadline: Duration::from_secs(25),
            concurrency_max: 1024,
            connections_max: port.connections_max,
            handshake_timeout: port.handshake_timeout,
            header_read_timeout: port.header_read_timeout,
            idle_timeout: port.idle_timeout,
            keepalive_interval: port.keepalive_interval,
            rate_per_second: 1000,
            rate_burst: 2000,
            rate_keys_max: 100_000,
            watch_buffer: 16,
        }
    }
}

impl Limits {
    /// A listener's connection limits (its server counts requests).
    pub fn port(&self, name: &'static str) -> tollgate_tls::Port {
        tollgate_tls::Port::new(
            name,
            tollgate_tls::PortLimits {
                connections_max: self.connections_max,
                handshake_timeout: self.handshake_timeout,
                idle_timeout: self.idle_timeout,
                header_read_timeout: self.header_read_timeout,
                keepalive_interval: self.keepalive_interval,
                requests_tracked: true,
            },
        )
    }

    /// A port's request limits.
    pub fn requests(&self, name: &'static str, grpc: bool) -> RequestLimits {
        RequestLimits::new(name, self.concurrency_max, self.request_timeout, grpc)
    }

    /// The per-caller rate limiter, or `None` when `rate_per_second` is 0.
    pub fn rate_limiter(&self) -> Option<Arc<RateLimiter>> {
        (self.rate_per_second > 0).then(|| {
            Arc::new(RateLimiter::new(
                self.rate_per_second,
                self.rate_burst,
                self.rate_keys_max,
            ))
        })
    }
}

/// How long a rate-limited caller should wait before trying again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter(pub Duration);

impl RetryAfter {
    /// Whole seconds, rounded up, at least 1 (what `Retry-After` carries).
    pub fn seconds(&self) -> u64 {
        let secs = self.0.as_secs() + u64::from(self.0.subsec_nanos() > 0);
        secs.max(1)
    }
}

/// Number of independently locked shards: a check takes one short lock,
/// and callers with different keys rarely share it.
const SHARDS: usize = 16;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// One shard: two generations of buckets. A key is looked up in the
/// current one, then the previous (and moved up); when the current one is
/// full, the previous is dropped and the current takes its place. So a
/// shard holds at most twice its half, every operation is O(1), and the
/// keys evicted are those unused for a whole generation (a new bucket is
/// full, so an evicted key loses nothing but its debt).
#[derive(Debug, Default)]
struct Shard {
    current: HashMap<String, Bucket>,
    previous: HashMap<String, Bucket>,
}

/// A token bucket per key: `rate_per_second` sustained, `burst` at once;
/// at most `keys_max` keys remembered.
#[derive(Debug)]
pub struct RateLimiter {
    rate_per_second: f64,
    burst: f64,
    generation_max: usize,
    shards: Vec<Mutex<Shard>>,
    hasher: std::collections::hash_map::RandomState,
}

impl RateLimiter {
    /// `rate_per_second` 0 turns the limiter off (every check passes).
    pub fn new(rate_per_second: u32, burst: u32, keys_max: usize) -> RateLimiter {
        RateLimiter {
            rate_per_second: f64::from(rate_per_second),
            burst: f64::from(burst.max(1)),
            // Two generations per shard hold at most `keys_max` in all.
            generation_max: (keys_max / (2 * SHARDS)).max(1),
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    /// Takes one token of `key`'s bucket, or says how long until one is
    /// there.
    pub fn check(&self, key: &str) -> Result<(), RetryAfter> {
        // tokio's clock: the machine's, or a simulation's.
        self.check_at(key, tokio::time::Instant::now().into_std())
    }

    /// [`RateLimiter::check`] at `now` (tests pass their own clock).
    pub fn check_at(&self, key: &str, now: Instant) -> Result<(), RetryAfter> {
        if self.rate_per_second <= 0.0 {
            return Ok(());
        }
        let shard = &self.shards[self.hasher.hash_one(key) as usize % SHARDS];
        let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
        let bucket = match shard.current.get_mut(key) {
            Some(bucket) => bucket,
            None => {
                let bucket = shard.previous.remove(key).unwrap_or(Bucket {
                    tokens: self.burst,
                    at: now,
                });
                if shard.current.len() >= self.generation_max {
                    shard.previous = std::mem::take(&mut shard.current);
                }
                shard.current.entry(key.to_string()).or_insert(bucket)
            }
        };
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate_per_second).min(self.burst);
        bucket.at = now.max(bucket.at);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) / self.rate_per_second;
            Err(RetryAfter(Duration::from_secs_f64(wait)))
        }
    }

    /// Keys remembered now (at most `keys_max`).
    pub fn keys(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let s = s.lock().unwrap_or_else(|p| p.into_inner());
                s.current.len() + s.previous.len()
            })
            .sum()
    }

    /// [`RateLimiter::check`] for a gRPC service: a refusal is counted
    /// (`port`, `rate_limited`) and is RESOURCE_EXHAUSTED with
    /// `tollgate-error-code: RATE_LIMITED` and `retry-after` in seconds.
    pub fn check_grpc(&self, port: &'static str, key: &str) -> Result<(), tonic::Status> {
        self.check(key).map_err(|retry| {
            count_refusal(port, "rate_limited");
            rate_limited_status(retry)
        })
    }
}

/// RESOURCE_EXHAUSTED, `RATE_LIMITED`, with `retry-after` (seconds).
pub fn rate_limited_status(retry: RetryAfter) -> tonic::Status {
    let mut status = crate::status::error_status(
        Code::ResourceExhausted,
        RATE_LIMITED,
        format!(
            "too many requests from this caller; retry after {} s",
            retry.seconds()
        ),
    );
    if let Ok(value) = retry.seconds().to_string().parse() {
        status.metadata_mut().insert(RETRY_AFTER_KEY, value);
    }
    status
}

/// Why a request was refused before (or instead of) its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The port is at its concurrency limit.
    Overloaded,
    /// The request took longer than allowed.
    Timeout(Duration),
    /// The caller is over its rate.
    RateLimited(RetryAfter),
}

/// What a refused request spoke, so its refusal is in the same terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// `content-type: application/grpc...`: a gRPC status.
    Grpc,
    /// Anything else: an HTTP status with a problem document.
    Http,
}

impl Wire {
    pub fn of(headers: &http::HeaderMap) -> Wire {
        let grpc = headers
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        if grpc {
            Wire::Grpc
        } else {
            Wire::Http
        }
    }
}

/// An RFC 9457 problem document (`application/problem+json`) for
/// `refused`: 503 `OVERLOADED` or `TIMEOUT` (another node may answer),
/// 429 `RATE_LIMITED`, each with `Retry-After` in seconds.
pub fn problem_refusal(refused: Refused) -> http::Response<String> {
    let (status, code, detail, retry_after) = match refused {
        Refused::Overloaded => (
            http::StatusCode::SERVICE_UNAVAILABLE,
            OVERLOADED,
            "the server is answering as many requests as it allows; retry shortly".to_string(),
            1,
        ),
        Refused::Timeout(after) => (
            http::StatusCode::SERVICE_UNAVAILABLE,
            TIMEOUT,
            format!("no answer within {} ms", after.as_millis()),
            1,
        ),
        Refused::RateLimited(retry) => (
            http::StatusCode::TOO_MANY_REQUESTS,
            RATE_LIMITED,
            format!(
                "too many requests from this caller; retry after {} s",
                retry.seconds()
            ),
            retry.seconds(),
        ),
    };
    let mut response = crate::status::problem(status, code, &detail);
    let headers = response.headers_mut();
    headers.insert(http::header::RETRY_AFTER, retry_after.into());
    response
}

/// A gRPC answer for `refused`: UNAVAILABLE `OVERLOADED` (another node may
/// answer), DEADLINE_EXCEEDED `TIMEOUT`, RESOURCE_EXHAUSTED `RATE_LIMITED`
/// with `retry-after`. A request that did not speak gRPC (the check port's
/// HTTP/JSON routes) gets [`problem_refusal`] instead.
pub fn grpc_refusal(refused: Refused, wire: Wire) -> http::Response<tonic::body::Body> {
    if wire == Wire::Http {
        return problem_refusal(refused).map(tonic::body::Body::new);
    }
    let status = match refused {
        Refused::Overloaded => crate::status::error_status(
            Code::Unavailable,
            OVERLOADED,
            "this node is answering as many requests as it allows; retry shortly or try another node",
        ),
        Refused::Timeout(after) => crate::status::error_status(
            Code::DeadlineExceeded,
            TIMEOUT,
            format!("no answer within {} ms", after.as_millis()),
        ),
        Refused::RateLimited(retry) => rate_limited_status(retry),
    };
    status.into_http()
}

/// A port's request limits, shared by every connection (and thread) of
/// the port.
#[derive(Debug, Clone)]
pub struct RequestLimits {
    port: &'static str,
    permits: Arc<Semaphore>,
    timeout_max: Duration,
    grpc: bool,
}

impl RequestLimits {
    /// At most `concurrency_max` requests at once, each at most
    /// `timeout_max`; `grpc`: the client's `grpc-timeout`, if shorter,
    /// bounds its call instead.
    pub fn new(
        port: &'static str,
        concurrency_max: usize,
        timeout_max: Duration,
        grpc: bool,
    ) -> RequestLimits {
        RequestLimits {
            port,
            permits: Arc::new(Semaphore::new(concurrency_max.max(1))),
            timeout_max,
            grpc,
        }
    }

    /// The layer, answering refusals with `refuse`.
    pub fn layer<R>(&self, refuse: fn(Refused, Wire) -> R) -> RequestLimitsLayer<R> {
        RequestLimitsLayer {
            limits: self.clone(),
            refuse,
            rate: None,
        }
    }
}

/// Picks the rate limiter's key for a request (`None`: not limited).
pub type RateKey = fn(&http::Extensions, &http::HeaderMap) -> Option<String>;

/// The caller's IP address, from the connection's `PeerInfo`.
pub fn peer_ip_key(extensions: &http::Extensions, _headers: &http::HeaderMap) -> Option<String> {
    let peer = extensions.get::<tollgate_tls::PeerInfo>()?;
    Some(peer.remote?.ip().to_string())
}

/// See [`RequestLimits`].
pub struct RequestLimitsLayer<R> {
    limits: RequestLimits,
    refuse: fn(Refused, Wire) -> R,
    rate: Option<(Arc<RateLimiter>, RateKey)>,
}

impl<R> Clone for RequestLimitsLayer<R> {
    fn clone(&self) -> Self {
        RequestLimitsLayer {
            limits: self.limits.clone(),
            refuse: self.refuse,
            rate: self.rate.clone(),
        }
    }
}

impl<R> RequestLimitsLayer<R> {
    /// Also limits each caller's rate, the caller named by `key`.
    pub fn with_rate(mut self, limiter: Arc<RateLimiter>, key: RateKey) -> Self {
        self.rate = Some((limiter, key));
        self
    }
}

impl<S, R> tower::Layer<S> for RequestLimitsLayer<R> {
    type Service = RequestLimitsService<S, R>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestLimitsService {
            inner,
            layer: self.clone(),
        }
    }
}

/// See [`RequestLimits`].
pub struct RequestLimitsService<S, R> {
    inner: S,
    layer: RequestLimitsLayer<R>,
}

impl<S: Clone, R> Clone for RequestLimitsService<S, R> {
    fn clone(&self) -> Self {
        RequestLimitsService {
            inner: self.inner.clone(),
            layer: self.layer.clone(),
        }
    }
}

impl<S, B, R> tower::Service<http::Request<B>> for RequestLimitsService<S, R>
where
    S: tower::Service<http::Request<B>, Response = R> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
    R: Send + 'static,
{
    type Response = R;
    type Error = S::Error;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<R, S::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        // Readiness is the inner service's at call time (tonic's routers
        // and axum's are always ready); a full port sheds in `call`.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let limits = &self.layer.limits;
        let refuse = self.layer.refuse;
        let port = limits.port;
        let wire = Wire::of(request.headers());
        if let Some((limiter, key)) = &self.layer.rate {
            if let Some(key) = key(request.extensions(), request.headers()) {
                if let Err(retry) = limiter.check(&key) {
                    count_refusal(port, "rate_limited");
                    return Box::pin(std::future::ready(Ok(refuse(
                        Refused::RateLimited(retry),
                        wire,
                    ))));
                }
            }
        }
        let Ok(permit) = limits.permits.clone().try_acquire_owned() else {
            count_refusal(port, "overloaded");
            return Box::pin(std::future::ready(Ok(refuse(Refused::Overloaded, wire))));
        };
        let mut timeout = limits.timeout_max;
        if limits.grpc {
            if let Some(asked) = request
                .headers()
                .get("grpc-timeout")
                .and_then(|v| v.to_str().ok())
                .and_then(crate::status::parse_grpc_timeout)
            {
                timeout = timeout.min(asked);
            }
        }
        // The service that was ready answers; its clone waits for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let _permit = permit;
            let ready = tower::ServiceExt::ready(&mut inner).await?;
            match tokio::time::timeout(timeout, ready.call(request)).await {
                Ok(answer) => answer,
                Err(_) => {
                    count_refusal(port, "timeout");
                    Ok(refuse(Refused::Timeout(timeout), wire))
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let limiter = RateLimiter::new(10, 5, 1000);
        let start = Instant::now();
        for n in 0..5 {
            assert_eq!(
                limiter.check_at("a", start),
                Ok(()),
                "request {n} of the burst"
            );
        }
        let refused = limiter.check_at("a", start).expect_err("past the burst");
        assert_eq!(refused.0, Duration::from_millis(100));
        assert_eq!(refused.seconds(), 1);
        // Another key has a bucket of its own.
        assert_eq!(limiter.check_at("b", start), Ok(()));
        // 100 ms later one token is back, and only one.
        let later = start + Duration::from_millis(100);
        assert_eq!(limiter.check_at("a", later), Ok(()));
        assert!(limiter.check_at("a", later).is_err());
        // A long pause refills to the burst, not beyond.
        let much_later = start + Duration::from_secs(60);
        for _ in 0..5 {
            assert_eq!(limiter.check_at("a", much_later), Ok(()));
        }
        assert!(limiter.check_at("a", much_later).is_err());
    }

    #[test]
    fn a_slow_rate_says_how_many_seconds_to_wait() {
        let limiter = RateLimiter::new(1, 1, 10);
        let now = Instant::now();
        assert_eq!(limiter.check_at("k", now), Ok(()));
        let refused = limiter.check_at("k", now).expect_err("over the rate");
        assert_eq!(refused.seconds(), 1);
        let slower = RateLimiter::new(1, 1, 10);
        assert_eq!(slower.check_at("k", now), Ok(()));
        let half = now + Duration::from_millis(500);
        assert_eq!(
            slower
                .check_at("k", half)
                .expect_err("half a token")
                .seconds(),
            1
        );
    }

    #[test]
    fn the_number_of_keys_is_bounded_and_recent_keys_are_kept() {
        let keys_max = 320;
        let limiter = RateLimiter::new(1, 1, keys_max);
        let now = Instant::now();
        for n in 0..100_000 {
            let _ = limiter.check_at(&format!("invented-{n}"), now);
            if n % 1000 == 0 {
                assert!(
                    limiter.keys() <= keys_max,
                    "{} keys after {n}",
                    limiter.keys()
                );
            }
        }
        assert!(
            limiter.keys() <= keys_max,
            "{} keys remembered, at most {keys_max}",
            limiter.keys()
        );
        // A key just used is still remembered (its bucket is empty).
        assert!(limiter.check_at("invented-99999", now).is_err());
    }

    #[test]
    fn a_zero_rate_turns_the_limiter_off() {
        let limiter = RateLimiter::new(0, 1, 10);
        let now = Instant::now();
        for _ in 0..1000 {
            assert_eq!(limiter.check_at("k", now), Ok(()));
        }
        assert_eq!(limiter.keys(), 0);
    }

    #[test]
    fn a_rate_limited_status_carries_its_code_and_retry_after() {
        let status = rate_limited_status(RetryAfter(Duration::from_millis(1500)));
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(
            status
                .metadata()
                .get(crate::status::ERROR_CODE_KEY)
                .unwrap(),
            RATE_LIMITED
        );
        assert_eq!(status.metadata().get(RETRY_AFTER_KEY).unwrap(), "2");
    }
}
