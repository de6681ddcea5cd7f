//! What openraft reports at ERROR that is not an error of ours: a peer that
//! is not listening yet, answers late, or is stopping. Members of a cluster
//! start a few milliseconds apart, a node busy starting answers an append
//! after the 50 ms heartbeat timeout, and a node that shuts down drops its
//! connections; openraft logs each failed vote request and append as ERROR
//! (`while requesting vote`, `timeout`, `RPCError`), and each request that
//! reaches a core that has stopped (`failure sending RaftMsg to RaftCore`,
//! `core_result=Err(Stopped)`), so an alert on ERROR lines would page on
//! every normal start and stop.
//!
//! [`QuietUnreachable`] drops exactly those events; nothing is lost, because
//! [`Reachability`] (in the Raft network client) reports the same fact once
//! per outage, at a level that matches how long it lasts: DEBUG at first,
//! WARN once a peer has not answered for [`UNREACHABLE_WARN_AFTER`], and
//! INFO when it answers again; and `tollgate_raft_rpc_failures_total{kind}`
//! counts every failed call. Kept at ERROR: an error the remote peer
//! returned, storage errors, and a core that stopped on an error.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

use crate::NodeId;

/// A peer that has not answered this long is worth a WARN line.
pub const UNREACHABLE_WARN_AFTER: Duration = Duration::from_secs(10);

/// The kinds of `tollgate_raft_rpc_failures_total`.
pub const FAILURE_KINDS: [&str; 3] = ["unreachable", "timeout", "network"];

/// Drops openraft's ERROR events about a peer that did not answer (in
/// time) and about requests that met a stopped core; every other event
/// passes. Add it to the subscriber beside the formatter.
#[derive(Debug, Default, Clone, Copy)]
pub struct QuietUnreachable;

#[derive(Default)]
struct Fields {
    message: String,
    error: String,
    core_result: String,
}

impl Fields {
    fn set(&mut self, field: &Field, value: String) {
        match field.name() {
            "message" => self.message = value,
            "error" | "err" => self.error = value,
            "core_result" => self.core_result = value,
            _ => {}
        }
    }
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.set(field, format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.set(field, value.to_string());
    }
}

/// Whether `event` is openraft, at ERROR, saying a peer did not answer (in
/// time) or a request reached a core that stopped as asked.
pub fn is_unreachable_noise(event: &Event<'_>) -> bool {
    let meta = event.metadata();
    if *meta.level() != Level::ERROR || !meta.target().starts_with("openraft") {
        return false;
    }
    let mut fields = Fields::default();
    event.record(&mut fields);
    match fields.message.as_str() {
        // A vote request that failed or timed out: the peer is down, slow
        // or stopping.
        "while requesting vote" => true,
        "timeout" => fields.error.starts_with("timeout after"),
        // An append or a snapshot that did not get through; an error the
        // peer itself returned is kept.
        "RPCError" => !fields.error.starts_with("error occur on remote peer"),
        // A request that met a core stopped by shutdown.
        message => message.starts_with("failure ") && fields.core_result == "Err(Stopped)",
    }
}

impl<S: Subscriber> Layer<S> for QuietUnreachable {
    fn event_enabled(&self, event: &Event<'_>, _ctx: Context<'_, S>) -> bool {
        !is_unreachable_noise(event)
    }
}

/// How each peer has answered lately, so an outage is reported once, at
/// the level its length deserves.
#[derive(Debug, Default)]
pub struct Reachability {
    /// Peers that failed, with when they first failed in this outage and
    /// whether it was reported at WARN.
    down: Mutex<HashMap<NodeId, (Instant, bool)>>,
    /// How many peers `down` holds, read without the lock: every append
    /// that is answered asks, and almost always none is down.
    down_count: AtomicUsize,
}

impl Reachability {
    /// `peer` (at `addr`) did not answer, or not in time (`kind`, one of
    /// [`FAILURE_KINDS`]): `error` says why.
    pub fn failed(&self, peer: NodeId, addr: &str, kind: &'static str, error: &dyn fmt::Display) {
        metrics::counter!("tollgate_raft_rpc_failures_total", "kind" => kind).increment(1);
        let Ok(mut down) = self.down.lock() else {
            return;
        };
        let (since, warned) = down.entry(peer).or_insert_with(|| {
            self.down_count.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(peer, addr, %error, "Raft peer not reachable (yet), or late.");
            (Instant::now(), false)
        });
        if !*warned && since.elapsed() >= UNREACHABLE_WARN_AFTER {
            *warned = true;
            metrics::counter!("tollgate_raft_peer_outages_total").increment(1);
            tracing::warn!(
                peer,
                addr,
                %error,
                seconds = since.elapsed().as_secs(),
                "A Raft peer has not answered for a while; it is down, overloaded, or cut off from this node."
            );
        }
    }

    /// `peer` answered.
    pub fn answered(&self, peer: NodeId, addr: &str) {
        if self.down_count.load(Ordering::Relaxed) == 0 {
            return;
        }
        let Ok(mut down) = self.down.lock() else {
            return;
        };
        if let Some((since, warned)) = down.remove(&peer) {
            self.down_count.fetch_sub(1, Ordering::Relaxed);
            if warned {
                tracing::info!(
                    peer,
                    addr,
                    seconds = since.elapsed().as_secs(),
                    "A Raft peer answers again."
                );
            }
        }
    }
}
