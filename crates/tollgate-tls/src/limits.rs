//! What bounds one port's connections, whatever speaks on them: how many
//! may be open at once, how long a client gets for its TLS handshake and
//! for an HTTP/1 request head, how long a connection may stay open with no
//! request in flight, and how often an HTTP/2 peer is pinged.
//!
//! Idle means *no request in flight*, not *no bytes*: a client that drips a
//! byte every few hundred milliseconds and never completes a request is as
//! idle as one that sends nothing, and is closed as soon. A server counts
//! its requests by wrapping its service in [`crate::track::TrackRequests`], which reads
//! the connection's [`ConnActivity`] from the request's [`crate::PeerInfo`];
//! a request is in flight until its response body ends, so a long-lived
//! stream (Watch, the changefeed) keeps its connection. A port whose server
//! does not count requests ([`PortLimits::requests_tracked`] false) falls
//! back to counting bytes read: only a peer that sends nothing is idle.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::Context;
use std::time::{Duration, Instant};

/// Default most connections open at once on one port: well under the
/// common 1,024 descriptor limit, leaving room for a node's own files,
/// Raft links and a second port.
pub const CONNECTIONS_MAX_DEFAULT: usize = 512;
/// Default time a connection may stay open with no request in flight.
pub const IDLE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(60);
/// Default time a client gets to send a whole HTTP/1 request head.
pub const HEADER_READ_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);
/// Default interval of HTTP/2 pings to a quiet peer (and how long its
/// answer may take), so a dead peer's connection is dropped.
pub const KEEPALIVE_INTERVAL_DEFAULT: Duration = Duration::from_secs(20);

/// One port's connection limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortLimits {
    /// Most connections open at once (handshaking or served). A new
    /// connection past it takes the place of one with no request in flight
    /// (one that never began a request first, oldest first; then the one
    /// idle longest), which is closed (`reason="evicted"`); when every
    /// connection has a request in flight, the new one is closed at once
    /// (`reason="connections_max"`). So idle and dripping connections can
    /// never keep a client out, and busy ones are never cut.
    pub connections_max: usize,
    /// Time a client gets to finish its TLS handshake.
    pub handshake_timeout: Duration,
    /// A connection with no request in flight for this long is closed
    /// (`reason="idle"`).
    pub idle_timeout: Duration,
    /// Time a client gets to send an HTTP/1 request head (HTTP ports).
    pub header_read_timeout: Duration,
    /// HTTP/2 keepalive: a ping after this long without a frame, and the
    /// connection is dropped when its answer takes as long.
    pub keepalive_interval: Duration,
    /// Whether the server counts requests ([`crate::track::TrackRequests`]); without,
    /// idle means no bytes read.
    pub requests_tracked: bool,
}

impl Default for PortLimits {
    fn default() -> PortLimits {
        PortLimits {
            connections_max: CONNECTIONS_MAX_DEFAULT,
            handshake_timeout: HANDSHAKE_TIMEOUT,
            idle_timeout: IDLE_TIMEOUT_DEFAULT,
            header_read_timeout: HEADER_READ_TIMEOUT_DEFAULT,
            keepalive_interval: KEEPALIVE_INTERVAL_DEFAULT,
            requests_tracked: false,
        }
    }
}

/// Counts a request or connection a port refused or cut, by reason
/// (`overloaded`, `timeout`, `rate_limited`, `connections_max`, `evicted`,
/// `idle`, `watcher_too_slow`): one metric for every limit of every port.
pub fn count_refusal(port: &'static str, reason: &'static str) {
    metrics::counter!("tollgate_requests_refused_total", "port" => port, "reason" => reason)
        .increment(1);
}

/// Milliseconds since this process first asked (a monotonic clock that
/// fits an atomic); inside a simulation, the simulation's elapsed time, so
/// idle timeouts and evictions follow its clock, not the machine's.
pub(crate) fn monotonic_ms() -> u64 {
    #[cfg(feature = "sim")]
    if let Some(elapsed) = turmoil::sim_elapsed() {
        return u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
    }
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// Time a client gets to finish its handshake, by default
/// ([`PortLimits::handshake_timeout`]).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a connection that was answered must have been idle before a
/// new connection may take its place on a full port.
pub const SERVED_IDLE_BEFORE_EVICTION: Duration = Duration::from_secs(5);

/// What one connection is doing: requests in flight, and when it last had
/// one (or, untracked, last read a byte).
#[derive(Debug)]
pub struct ConnActivity {
    in_flight: AtomicUsize,
    last_ms: AtomicU64,
    /// When it was accepted, and whether a request ever began on it.
    accepted_ms: u64,
    served: AtomicBool,
    /// Set to close the connection (room for a new one on a full port);
    /// `waker` wakes whoever reads it.
    evicted: AtomicBool,
    waker: futures::task::AtomicWaker,
}

impl ConnActivity {
    pub(crate) fn new() -> Arc<ConnActivity> {
        let now = monotonic_ms();
        Arc::new(ConnActivity {
            in_flight: AtomicUsize::new(0),
            last_ms: AtomicU64::new(now),
            accepted_ms: now,
            served: AtomicBool::new(false),
            evicted: AtomicBool::new(false),
            waker: futures::task::AtomicWaker::new(),
        })
    }

    /// Closes the connection at its next poll (it is woken for it).
    pub(crate) fn evict(&self) {
        self.evicted.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Whether the connection was evicted; registers `cx` to learn of it.
    pub(crate) fn poll_evicted(&self, cx: &mut Context<'_>) -> bool {
        if self.evicted.load(Ordering::Acquire) {
            return true;
        }
        self.waker.register(cx.waker());
        self.evicted.load(Ordering::Acquire)
    }

    /// How fit the connection is to be evicted, or `None` when it must not
    /// be (a request in flight, already evicted, or a client that was
    /// answered and is between requests): first connections that never
    /// began a request (a slowloris never does), oldest first; then the one
    /// idle longest, if idle at least [`SERVED_IDLE_BEFORE_EVICTION`] — a
    /// working client's keep-alive connection is never given up for a
    /// stranger's new one.
    pub(crate) fn eviction_rank(&self) -> Option<(bool, u64)> {
        if self.in_flight.load(Ordering::Relaxed) > 0 || self.evicted.load(Ordering::Relaxed) {
            return None;
        }
        if self.served.load(Ordering::Relaxed) {
            let last = self.last_ms.load(Ordering::Relaxed);
            let idle_min = SERVED_IDLE_BEFORE_EVICTION.as_millis() as u64;
            (monotonic_ms().saturating_sub(last) >= idle_min).then_some((true, last))
        } else {
            Some((false, self.accepted_ms))
        }
    }

    /// A request began; it ends when the guard drops.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        if !self.served.load(Ordering::Relaxed) {
            self.served.store(true, Ordering::Relaxed);
        }
        InFlight(self.clone())
    }

    pub(crate) fn touch(&self) {
        self.last_ms.store(monotonic_ms(), Ordering::Relaxed);
    }

    /// When the connection is idle past `timeout`: `Ok(())`; otherwise
    /// the earliest moment (ms) it could be.
    pub(crate) fn idle_past(&self, timeout: Duration) -> Result<(), u64> {
        let now = monotonic_ms();
        let timeout = timeout.as_millis() as u64;
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return Err(now + timeout);
        }
        let deadline = self.last_ms.load(Ordering::Relaxed) + timeout;
        if now >= deadline {
            Ok(())
        } else {
            Err(deadline)
        }
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// A request in flight on a connection.
#[derive(Debug)]
pub struct InFlight(Arc<ConnActivity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
