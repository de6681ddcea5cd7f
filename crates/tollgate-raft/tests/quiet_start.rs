//! A normal start logs no ERROR: members that start a few milliseconds
//! apart, and a restarted member whose config asks to initialise again.
//! openraft's own ERROR lines for a peer that is not listening yet are
//! recognised (and dropped by `QuietUnreachable` in the binary); the Raft
//! network reports the same fact itself at DEBUG.

mod common;

use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tollgate_raft::quiet::{is_unreachable_noise, QuietUnreachable};
use tollgate_raft::{Error, KvLogic, Node, NodeConfig};
use tollgate_testkit::wait_until;
use tracing::field::{Field, Visit};
use tracing::{Level, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

#[derive(Debug, Clone)]
struct Seen {
    level: Level,
    target: String,
    text: String,
    noise: bool,
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Seen>>>);

struct Text(String);

impl Visit for Text {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!(" {}={value:?}", field.name()));
    }
}

impl<S: Subscriber> Layer<S> for Capture {
    fn enabled(&self, meta: &Metadata<'_>, _ctx: Context<'_, S>) -> bool {
        *meta.level() <= Level::WARN || meta.target().starts_with("tollgate_raft::quiet")
    }

    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let mut text = Text(String::new());
        event.record(&mut text);
        self.0.lock().unwrap().push(Seen {
            level: *event.metadata().level(),
            target: event.metadata().target().to_string(),
            text: text.0,
            noise: is_unreachable_noise(event),
        });
    }
}

impl Capture {
    fn seen(&self) -> Vec<Seen> {
        self.0.lock().unwrap().clone()
    }
}

fn config(dir: &std::path::Path, id: u64) -> NodeConfig {
    let mut config = NodeConfig::new(id, dir.join(format!("node-{id}")));
    config.storage.cache_capacity_bytes = 8 * 1024 * 1024;
    config
}

#[tokio::test(flavor = "current_thread")]
async fn members_starting_apart_and_a_restart_that_asks_to_initialise_log_no_error() {
    let capture = Capture::default();
    // Everything on this thread (the runtime is current-thread) goes through
    // the capture; QuietUnreachable is not in this stack, so openraft's
    // lines are seen and classified.
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(capture.clone()));
    let dir = tempfile::tempdir().unwrap();

    // Three addresses; only node 1 listens at first, so 2 and 3 refuse.
    let first = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut addrs = vec![first.local_addr().unwrap()];
    for _ in 0..2 {
        let probe = TcpListener::bind("127.0.0.1:0").await.unwrap();
        addrs.push(probe.local_addr().unwrap());
    }
    let members: Vec<(u64, String)> = (1..=3).zip(addrs.iter().map(|a| a.to_string())).collect();
    let one = Node::start(config(dir.path(), 1), KvLogic, first)
        .await
        .unwrap();
    one.initialize(&members).await.unwrap();
    let noise = wait_until(
        "node 1 to campaign against absent peers",
        common::DEADLINE,
        || async {
            let seen = capture.seen();
            let noise = seen.iter().filter(|s| s.noise).count();
            let reported = seen
                .iter()
                .filter(|s| {
                    s.target.starts_with("tollgate_raft::quiet") && s.text.contains("not reachable")
                })
                .count();
            if noise > 0 && reported > 0 {
                Ok(noise)
            } else {
                Err(format!(
                    "{noise} unreachable lines from openraft, {reported} from the network"
                ))
            }
        },
    )
    .await
    .unwrap();
    assert!(noise > 0);

    let mut nodes = vec![one];
    for (id, addr) in [(2, addrs[1]), (3, addrs[2])] {
        let listener = TcpListener::bind(addr).await.unwrap();
        nodes.push(
            Node::start(config(dir.path(), id), KvLogic, listener)
                .await
                .unwrap(),
        );
    }
    nodes[0]
        .wait_until(common::DEADLINE, "a leader", |m| m.current_leader.is_some())
        .await
        .unwrap();

    // A node whose config keeps bootstrap = true asks again on every start.
    let one = nodes.remove(0);
    one.shutdown().await.unwrap();
    let listener = TcpListener::bind(addrs[0]).await.unwrap();
    let one = Node::start(config(dir.path(), 1), KvLogic, listener)
        .await
        .unwrap();
    assert!(matches!(
        one.initialize(&members).await,
        Err(Error::AlreadyInitialized)
    ));
    one.wait_until(common::DEADLINE, "node 1 to know the leader again", |m| {
        m.current_leader.is_some()
    })
    .await
    .unwrap();

    let errors: Vec<Seen> = capture
        .seen()
        .into_iter()
        .filter(|s| s.level == Level::ERROR && !s.noise)
        .collect();
    assert!(
        errors.is_empty(),
        "ERROR lines on a normal start: {errors:#?}"
    );
    one.shutdown().await.unwrap();
    for node in nodes {
        node.shutdown().await.unwrap();
    }
}

/// openraft's `Fatal`, as its Debug prints it.
#[derive(Debug)]
enum Fatal {
    Stopped,
    Panicked,
}

#[test]
fn the_quiet_layer_drops_only_openrafts_unreachable_lines() {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::registry()
        .with(QuietUnreachable)
        .with(capture.clone());
    tracing::subscriber::with_default(subscriber, || {
        let unreachable = "Unreachable node: transport error";
        tracing::error!(target: "openraft::core::raft_core", error = %unreachable, "while requesting vote");
        tracing::error!(target: "openraft::replication", err = %unreachable, "RPCError");
        tracing::error!(target: "openraft::replication", err = %"timeout after 50ms when AppendEntries 1->2", "RPCError");
        tracing::error!(target: "openraft::core::raft_core", error = %"timeout after 150ms when Vote 1->3", "timeout");
        tracing::error!(target: "openraft::raft::raft_inner", core_result = ?Err::<(), Fatal>(Fatal::Stopped), "failure sending RaftMsg to RaftCore; message: AppendEntries");
        // Kept: what the peer itself answered, storage, a core that died,
        // the same words from elsewhere.
        tracing::error!(target: "openraft::replication", err = %"error occur on remote peer 2: fatal", "RPCError");
        tracing::error!(target: "openraft::replication", error = %"disk full", "error replication to target=2");
        tracing::error!(target: "openraft::raft::raft_inner", core_result = ?Err::<(), Fatal>(Fatal::Panicked), "failure sending RaftMsg to RaftCore; message: AppendEntries");
        tracing::error!(target: "tollgate_raft::network", error = %unreachable, "while requesting vote");
    });
    let kept: Vec<String> = capture.seen().into_iter().map(|s| s.text).collect();
    assert_eq!(kept.len(), 4, "{kept:#?}");
    assert!(kept[0].contains("remote peer"));
    assert!(kept[1].contains("disk full"));
    assert!(kept[2].contains("Panicked"));
    assert!(kept[3].contains("Unreachable node"));
}
