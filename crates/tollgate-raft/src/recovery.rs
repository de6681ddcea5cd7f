//! Whether this node may answer reads from its applied state, after a
//! start that followed an unclean stop.
//!
//! The commit index is written with every commit but not flushed before
//! the entries it covers are applied (that flush was one fsync on every
//! write's path, ≈ 0.3 ms of a commit on three nodes). Nor is the applied
//! state flushed. So after a power loss or a crash a node can come back
//! with its state machine behind a revision it had already answered, and
//! would answer below it (the whole-system simulation found a region node
//! going back from 52 to 51 this way, when the commit index was not
//! stored at all).
//!
//! The rule that keeps answers from going back: a node that did not stop
//! cleanly answers reads only once it has applied at least a commit index
//! that covers everything it can have answered. Such an index comes from a
//! leader that has committed an entry of its own term:
//! - an `AppendEntries` this node accepted, whose `leader_commit` is of the
//!   leader's term. The leader of that term committed its first entry
//!   after everything committed before its term, and a leader's commit
//!   index only grows, so it covers every entry this node applied before it
//!   stopped (this node's stored vote, flushed before it accepted entries
//!   from any leader, keeps older leaders out);
//! - or, when this node leads, its own applied entry of its current term.
//!
//! A clean stop (`Node::shutdown`) flushes everything and leaves a marker;
//! the next start takes the marker away (flushed) and serves at once. A
//! node that never voted has never accepted an entry, so has answered
//! nothing: it serves at once too.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use openraft::RaftMetrics;
use tokio::sync::watch;

use crate::types::{LogId, NodeId, Raft};

/// Whether reads may be answered, and, while not, what would let them.
#[derive(Debug)]
pub struct Serving {
    /// Only ever turns true; read on every check (an atomic, no lock).
    serving: AtomicBool,
    /// The log index this node had applied when it opened (0: it served
    /// from its start). What a reader builds from the applied state must
    /// cover it before answering from it.
    opened_at: AtomicU64,
    /// The least commit index that opens reads, once a leader gave one.
    target: watch::Sender<Option<u64>>,
}

impl Serving {
    pub(crate) fn new(serving: bool) -> Arc<Serving> {
        Arc::new(Serving {
            serving: AtomicBool::new(serving),
            opened_at: AtomicU64::new(0),
            target: watch::channel(None).0,
        })
    }

    /// Whether this node answers reads from its applied state now.
    pub fn is_serving(&self) -> bool {
        self.serving.load(Ordering::Acquire)
    }

    /// The log index applied when this node opened after an unclean stop
    /// (0 when it served from its start). A reader that keeps its own
    /// copy of the applied state (the region's check views) answers only
    /// once that copy covers this index: the state machine opening does not
    /// mean the copy has caught up.
    pub fn opened_at(&self) -> u64 {
        self.opened_at.load(Ordering::Acquire)
    }

    /// An `AppendEntries` from the leader of `leader_term` was accepted,
    /// carrying `leader_commit`.
    pub(crate) fn leader_committed(&self, leader_term: u64, leader_commit: Option<&LogId>) {
        if self.is_serving() {
            return;
        }
        let Some(commit) = leader_commit else { return };
        // Only an index committed in the leader's own term covers what any
        // earlier leader committed.
        if commit.leader_id.term != leader_term {
            return;
        }
        self.target.send_if_modified(|target| match target {
            Some(_) => false,
            None => {
                *target = Some(commit.index);
                true
            }
        });
    }

    /// Whether `metrics` and the target open reads.
    /// The applied log index reads open at, if the rule allows now.
    fn opens(&self, id: NodeId, metrics: &RaftMetrics<NodeId, openraft::BasicNode>) -> Option<u64> {
        let applied = metrics.last_applied.as_ref()?;
        let leads_and_applied_own = metrics.current_leader == Some(id)
            && metrics.vote.is_committed()
            && applied.leader_id.term == metrics.vote.leader_id().term;
        let caught_up = (*self.target.borrow()).is_some_and(|target| applied.index >= target);
        (leads_and_applied_own || caught_up).then_some(applied.index)
    }

    /// Opens reads once the rule above allows: run from the start of a node
    /// that stopped uncleanly, ends when reads are open or Raft stops.
    pub(crate) async fn watch(
        self: Arc<Self>,
        id: NodeId,
        raft: Raft<impl crate::logic::StateMachineLogic>,
    ) {
        let mut metrics = raft.metrics();
        let mut target = self.target.subscribe();
        loop {
            let open = self.opens(id, &metrics.borrow_and_update());
            if let Some(applied) = open {
                tracing::info!(
                    node_id = id,
                    applied,
                    "Caught up with the leader after an unclean stop; answering reads again."
                );
                self.opened_at.store(applied, Ordering::Release);
                self.serving.store(true, Ordering::Release);
                return;
            }
            tokio::select! {
                changed = metrics.changed() => if changed.is_err() { return },
                changed = target.changed() => if changed.is_err() { return },
            }
        }
    }
}
