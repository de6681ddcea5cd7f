//! The changefeed end to end over real gRPC on 127.0.0.1:0: an origin's
//! state machine (in memory) behind the feed service, and followers that
//! start at revision 0, resume anywhere, fall below the retention floor,
//! and refuse what does not verify.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;
use tollgate_feed::*;
use tollgate_model::*;
use tollgate_origin::{dataset_from_entries, keys, Op, OriginCommand, OriginLogic, OriginResponse};
use tollgate_raft::{ApplyContext, MemState};
use tollgate_signing::{KeyRing, SharedRing, Signed, VerifyError, CONTEXT_CHANGE_RECORD};
use tracing::info;

const NOW: UnixSeconds = UnixSeconds(1_795_821_662);

/// The origin's real state machine, in memory, with compaction.
struct MemOrigin {
    state: Mutex<MemState>,
    floor: AtomicU64,
    head: watch::Sender<u64>,
}

impl MemOrigin {
    fn new() -> Arc<MemOrigin> {
        Arc::new(MemOrigin {
            state: Mutex::new(MemState::default()),
            floor: AtomicU64::new(0),
            head: watch::channel(0).0,
        })
    }

    fn commit(&self, op: Op) -> u64 {
        let ctx = ApplyContext {
            log_index: 0,
            term: 0,
            position_in_entry: 0,
        };
        let cmd = OriginCommand {
            actor: "test".into(),
            at: NOW,
            reason: None,
            op,
        };
        let response = self
            .state
            .lock()
            .unwrap()
            .apply(&OriginLogic, &ctx, &cmd)
            .unwrap();
        let OriginResponse::Committed { revision, .. } = response else {
            panic!("{response:?}")
        };
        self.head.send_replace(revision);
        revision
    }

    fn account(&self, id: &str) -> u64 {
        self.commit(Op::PutAccount(Account {
            id: AccountId::new(id).unwrap(),
            name: id.to_string(),
            status: AccountStatus::Active,
        }))
    }

    /// Drops the change records up to `floor`, as retention does.
    fn compact(&self, floor: u64) {
        let mut state = self.state.lock().unwrap();
        for rev in 1..=floor {
            state.data.remove(&keys::change(rev));
        }
        self.floor.store(floor, Ordering::SeqCst);
    }

    fn dataset(&self) -> Dataset {
        dataset_from_entries(self.state.lock().unwrap().data.clone()).unwrap()
    }
}

impl ChangeSource for MemOrigin {
    fn head(&self) -> Result<u64, FeedError> {
        Ok(*self.head.borrow())
    }
    fn floor(&self) -> Result<u64, FeedError> {
        Ok(self.floor.load(Ordering::SeqCst))
    }
    fn records(&self, after: u64, limit: usize) -> Result<Vec<ChangeRecord>, FeedError> {
        let state = self.state.lock().unwrap();
        let from = keys::change(after + 1);
        Ok(state
            .data
            .range(from..)
            .take_while(|(k, _)| k.starts_with(keys::CHANGE_PREFIX.as_bytes()))
            .take(limit)
            .map(|(_, v)| serde_json::from_slice(v).unwrap())
            .collect())
    }
    fn snapshot(&self) -> Result<(u64, Vec<Mutation>), FeedError> {
        Ok((self.head()?, self.dataset().to_mutations()))
    }
    fn head_changes(&self) -> watch::Receiver<u64> {
        self.head.subscribe()
    }
}

struct Feed {
    origin: Arc<MemOrigin>,
    ring: SharedRing,
    endpoint: String,
}

async fn start() -> Feed {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let origin = MemOrigin::new();
    let ring = SharedRing::new(KeyRing::generate(NOW).unwrap());
    let service = FeedService::new(
        origin.clone(),
        ring.clone(),
        FeedConfig {
            heartbeat_interval: Duration::from_millis(50),
            batch_records_default: 4,
            channel_capacity: 2,
            // The keys were made at NOW; the whole test lives then.
            clock: tollgate_clock::Clock::fixed(NOW),
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service.into_server())
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    Feed {
        origin,
        ring,
        endpoint,
    }
}

impl Feed {
    fn config(&self) -> FollowerConfig {
        FollowerConfig {
            endpoint: self.endpoint.clone(),
            // The feed protocol on its own; TLS is the end-to-end suite's.
            transport: tollgate_tls::Transport::Plaintext,
            keys: self.ring.current().unwrap().public_set(),
            max_batch_records: 0,
            subscriber: "test region".into(),
            connect_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(5),
            clock: tollgate_clock::Clock::fixed(NOW),
        }
    }
}

/// Applies events to `replica` until it has applied `target`; returns how
/// many heartbeats and snapshot chunks were seen on the way.
async fn follow_until(
    follower: &mut Follower,
    replica: &mut Dataset,
    target: u64,
) -> (usize, usize) {
    let (mut heartbeats, mut chunks) = (0, 0);
    let mut staged: Vec<Mutation> = Vec::new();
    while follower.applied() < target {
        match follower.next().await.expect("a verified event") {
            FollowEvent::Records(records) => {
                for r in records {
                    r.mutations.into_iter().for_each(|m| replica.apply(m));
                }
            }
            FollowEvent::SnapshotChunk {
                last, mutations, ..
            } => {
                chunks += 1;
                staged.extend(mutations);
                if last {
                    *replica = Dataset::default();
                    staged.drain(..).for_each(|m| replica.apply(m));
                }
            }
            FollowEvent::Heartbeat { .. } => heartbeats += 1,
        }
    }
    (heartbeats, chunks)
}

#[tokio::test]
async fn a_subscriber_from_zero_gets_every_revision_in_order_then_live_changes_and_heartbeats() {
    let feed = start().await;
    for i in 0..10 {
        feed.origin.account(&format!("acct-{i}"));
    }
    info!("Proving a subscriber from revision 0 receives all 10 revisions, verified, in order.");
    let mut follower = Follower::connect(&feed.config(), 0).await.unwrap();
    let mut replica = Dataset::default();
    follow_until(&mut follower, &mut replica, 10).await;
    assert_eq!(follower.applied(), 10);
    assert_eq!(replica.clone().canonical(), feed.origin.dataset());

    info!("Proving an idle stream carries heartbeats with the head revision.");
    match follower.next().await.unwrap() {
        FollowEvent::Heartbeat { head_revision, .. } => assert_eq!(head_revision, 10),
        other => panic!("expected a heartbeat, got {other:?}"),
    }

    info!("Proving a new commit is streamed live.");
    let rev = feed.origin.account("late");
    let mut replica2 = replica.clone();
    follow_until(&mut follower, &mut replica2, rev).await;
    assert_eq!(replica2.canonical(), feed.origin.dataset());
}

#[tokio::test]
async fn a_subscriber_resumes_at_any_revision_without_gap_or_duplicate() {
    let feed = start().await;
    for i in 0..9 {
        feed.origin.account(&format!("acct-{i}"));
    }
    for from in [0u64, 1, 4, 8, 9] {
        info!(
            from,
            "Proving a subscriber resuming after revision {from} gets exactly the rest."
        );
        let mut follower = Follower::connect(&feed.config(), from).await.unwrap();
        let mut seen = Vec::new();
        while follower.applied() < 9 {
            if let FollowEvent::Records(records) = follower.next().await.unwrap() {
                seen.extend(records.iter().map(|r| r.revision));
            }
        }
        assert_eq!(seen, ((from + 1)..=9).collect::<Vec<_>>());
    }
    info!("Proving a subscriber ahead of the origin is refused.");
    let err = Follower::connect(&feed.config(), 99)
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("ahead of the origin"), "{err}");
}

#[tokio::test]
async fn below_the_retention_floor_a_signed_snapshot_comes_first() {
    let feed = start().await;
    for i in 0..12 {
        feed.origin.account(&format!("acct-{i}"));
    }
    feed.origin.compact(8);
    info!("Proving a subscriber at revision 3, below the floor 8, gets a snapshot then the rest.");
    let mut follower = Follower::connect(&feed.config(), 3).await.unwrap();
    let mut replica = Dataset::default();
    let (_, chunks) = follow_until(&mut follower, &mut replica, 12).await;
    assert!(chunks >= 1, "a snapshot was sent");
    assert_eq!(replica.clone().canonical(), feed.origin.dataset());
    let rev = feed.origin.account("after-snapshot");
    follow_until(&mut follower, &mut replica, rev).await;
    assert_eq!(replica.clone().canonical(), feed.origin.dataset());
}

#[tokio::test]
async fn records_that_do_not_verify_are_refused_and_the_follower_does_not_advance() {
    let feed = start().await;
    for i in 0..3 {
        feed.origin.account(&format!("acct-{i}"));
    }
    let trusted = feed.config();
    let mut follower = Follower::connect(&trusted, 0).await.unwrap();
    let mut replica = Dataset::default();
    follow_until(&mut follower, &mut replica, 3).await;

    info!("Proving records signed by a key the region does not trust are refused.");
    let mut rotated = KeyRing::clone(&feed.ring.current().unwrap());
    rotated.rotate(NOW, 0).unwrap();
    feed.ring.replace(rotated);
    feed.origin.account("after-rotation");
    let err = loop {
        match follower.next().await {
            Ok(FollowEvent::Heartbeat { .. }) => continue,
            Ok(other) => panic!("accepted {other:?}"),
            Err(e) => break e,
        }
    };
    assert!(
        matches!(
            err,
            FeedError::Signature {
                revision: 4,
                source: VerifyError::UnknownKey(_)
            }
        ),
        "{err}"
    );
    assert_eq!(
        follower.applied(),
        3,
        "the follower stays on the last good revision"
    );

    info!("Proving a single flipped bit in a signed record is refused.");
    let keys = feed.ring.current().unwrap().public_set();
    let record = ChangeRecord {
        revision: 5,
        committed_at: NOW,
        mutations: vec![],
    };
    let signed = feed
        .ring
        .current()
        .unwrap()
        .sign(CONTEXT_CHANGE_RECORD, serde_json::to_vec(&record).unwrap());
    assert_eq!(verify_record(&keys, 5, 5, &signed, NOW).unwrap(), record);
    for i in 0..signed.payload.len() {
        let mut tampered: Signed = signed.clone();
        tampered.payload[i] ^= 0x10;
        assert!(
            verify_record(&keys, 5, 5, &tampered, NOW).is_err(),
            "byte {i}"
        );
    }
    assert!(
        verify_record(&keys, 6, 6, &signed, NOW).is_err(),
        "a record replayed under another revision is refused"
    );
    assert!(
        verify_record(&keys, 4, 5, &signed, NOW).is_err(),
        "a gap is refused"
    );
}

#[tokio::test]
async fn oversized_requests_are_refused() {
    let feed = start().await;
    let mut config = feed.config();
    config.max_batch_records = 10_000;
    let err = Follower::connect(&config, 0).await.err().expect("refused");
    assert!(err.to_string().contains("max_batch_records"), "{err}");
    let keys = fetch_public_keys(
        &feed.endpoint,
        &tollgate_tls::Transport::Plaintext,
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert_eq!(keys, feed.ring.current().unwrap().public_set());
}
