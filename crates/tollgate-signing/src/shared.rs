//! The key ring one origin node signs with, shared by its REST API,
//! changefeed, license service and webhooks.

use crate::KeyRing;
use std::sync::Arc;
use tokio::sync::watch;

/// The ring is not loaded on this node yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("this origin node has not loaded the origin's signing keys yet (they come from the origin cluster once it has a leader)")]
pub struct RingNotLoaded;

/// Empty until the node has loaded the cluster's replicated ring; replaced
/// whole when a rotation or a retirement commits. Readers take the ring
/// they are given and keep it for one signature, so a swap never waits on
/// a signer.
#[derive(Clone)]
pub struct SharedRing {
    ring: Arc<watch::Sender<Option<Arc<KeyRing>>>>,
}

impl std::fmt::Debug for SharedRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SharedRing")
            .field(&*self.ring.borrow())
            .finish()
    }
}

impl SharedRing {
    /// No ring yet: every signature is refused until [`SharedRing::replace`].
    pub fn empty() -> SharedRing {
        SharedRing {
            ring: Arc::new(watch::channel(None).0),
        }
    }

    /// A ring that is loaded from the start (tests, single-process tools).
    pub fn new(ring: KeyRing) -> SharedRing {
        let shared = SharedRing::empty();
        shared.replace(ring);
        shared
    }

    /// The ring to sign with now.
    pub fn current(&self) -> Result<Arc<KeyRing>, RingNotLoaded> {
        self.ring.borrow().clone().ok_or(RingNotLoaded)
    }

    pub fn replace(&self, ring: KeyRing) {
        self.ring.send_replace(Some(Arc::new(ring)));
    }

    /// Sees every replacement (the public key file follows rotations).
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<KeyRing>>> {
        self.ring.subscribe()
    }
}
