//! An application never sees a leader loss: a region of three node
//! processes (`tollgate-test-region-node`) behind one SDK client with all
//! three endpoints, checks running all along, while the node the client
//! talks to is first SIGSTOPped (hung, not dead: its ports still accept
//! connections and never answer) and later, after it came back, the
//! leader is killed with SIGKILL. Every check is answered within its
//! deadline, by hedging past the hung node, failing over from the dead
//! one, and starting the calls that follow on a node that answers.

use reqwest::Method;
use serde_json::json;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tollgate_origin_node::OriginConfig;
use tollgate_sdk::{check_request, Client, Reason, DEADLINE_DEFAULT};
use tollgate_testkit::KillOnDrop;
use tollgate_tests::{https, init_tracing, pki, wait_until, TestOrigin};
use tollgate_tls::Subject;
use tracing::info;

const DEADLINE: Duration = Duration::from_secs(60);
/// Every check's deadline: the SDK's default, as an application has it.
const CHECK_DEADLINE: Duration = DEADLINE_DEFAULT;
/// Checks in flight at once (each loop waits for its answer).
const CHECKERS: usize = 4;
/// Checks that must be answered after a fault before it is judged.
const CHECKS_AFTER_FAULT_MIN: usize = 40;
const REGION: &str = "region";

/// One node process, and the pipes that keep it alive: it exits when its
/// stdin closes.
struct NodeProcess {
    id: u64,
    child: KillOnDrop,
    stdin: ChildStdin,
    _stdout: BufReader<ChildStdout>,
    grpc: SocketAddr,
    raft: SocketAddr,
    http: SocketAddr,
}

impl NodeProcess {
    /// Starts node `id` of the region and reads the addresses it bound.
    async fn start(id: u64, dir: &std::path::Path, feed: &str, keys: &std::path::Path) -> Self {
        let files = pki().files(&Subject::RegionNode {
            region: REGION.into(),
            node: id,
        });
        let log = std::fs::File::create(dir.join(format!("node-{id}.log"))).unwrap();
        let mut child = KillOnDrop(
            Command::new(env!("CARGO_BIN_EXE_tollgate-test-region-node"))
                .arg(format!("id={id}"))
                .arg(format!("dir={}", dir.join(format!("node-{id}")).display()))
                .arg(format!("feed={feed}"))
                .arg(format!("keys={}", keys.display()))
                .arg(format!("ca={}", files.ca.display()))
                .arg(format!("cert={}", files.cert.unwrap().display()))
                .arg(format!("key={}", files.key.unwrap().display()))
                .arg(format!("region={REGION}"))
                .arg(format!("name=eu-{id}"))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let (stdout, banner) = tokio::time::timeout(
            DEADLINE,
            tokio::task::spawn_blocking(move || {
                let mut line = String::new();
                stdout.read_line(&mut line).map(|_| (stdout, line))
            }),
        )
        .await
        .unwrap_or_else(|_| panic!("node {id} printed no addresses within {DEADLINE:?}"))
        .unwrap()
        .unwrap();
        let addr = |name: &str| -> SocketAddr {
            banner
                .split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{name}=")))
                .unwrap_or_else(|| panic!("node {id}'s banner {banner:?} names no {name}"))
                .parse()
                .unwrap()
        };
        NodeProcess {
            id,
            grpc: addr("grpc"),
            raft: addr("raft"),
            http: addr("http"),
            child,
            stdin,
            _stdout: stdout,
        }
    }

    fn pid(&self) -> libc::pid_t {
        self.child.id() as libc::pid_t
    }

    fn endpoint(&self) -> String {
        https(self.grpc)
    }
}

/// SIGSTOPs a process; SIGCONTs it when dropped, also when the test fails
/// half way (then the node's own guard kills it).
struct Stopped(libc::pid_t);

impl Stopped {
    fn stop(pid: libc::pid_t) -> Stopped {
        // SAFETY: kill(2) with a pid this test spawned and still holds.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0, "SIGSTOP");
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        // SAFETY: as above; the process may be gone already, which is fine.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

/// What `/v1/status` says (the fields read here).
#[derive(Debug)]
struct NodeStatus {
    node_id: u64,
    role: String,
    term: u64,
    leader: Option<u64>,
    applied_revision: u64,
}

async fn status(http: &reqwest::Client, node: &NodeProcess) -> Result<NodeStatus, String> {
    let body: serde_json::Value = http
        .get(format!("https://{}/v1/status", node.http))
        .timeout(Duration::from_millis(500))
        .send()
        .await
        .map_err(|e| format!("node {}: {e}", node.id))?
        .json()
        .await
        .map_err(|e| format!("node {}: {e}", node.id))?;
    Ok(NodeStatus {
        node_id: node.id,
        role: body["role"].as_str().unwrap_or("?").to_string(),
        term: body["term"].as_u64().unwrap_or(0),
        leader: body["leader"].as_u64(),
        applied_revision: body["applied_revision"].as_u64().unwrap_or(0),
    })
}

/// Waits until every node in `nodes` names the same leader, one of them,
/// in one term, and has applied `revision`; that leader's id.
async fn agreed_leader(http: &reqwest::Client, nodes: &[&NodeProcess], revision: u64) -> u64 {
    wait_until(
        "the nodes to agree on a leader among them and apply the data",
        DEADLINE,
        || async {
            let mut seen = Vec::new();
            for node in nodes {
                seen.push(status(http, node).await?);
            }
            let leader = seen[0].leader;
            let agreed = leader.is_some_and(|l| nodes.iter().any(|n| n.id == l))
                && seen
                    .iter()
                    .all(|s| s.leader == leader && s.term == seen[0].term);
            let applied = seen.iter().all(|s| s.applied_revision >= revision);
            match (agreed, applied) {
                (true, true) => Ok(leader.unwrap()),
                _ => Err(format!(
                    "{:?}",
                    seen.iter()
                        .map(|s| (
                            s.node_id,
                            s.role.as_str(),
                            s.term,
                            s.leader,
                            s.applied_revision
                        ))
                        .collect::<Vec<_>>()
                )),
            }
        },
    )
    .await
    .unwrap()
}

/// One check's outcome: when it ended, how long it took, who answered or
/// what failed.
#[derive(Debug, Clone)]
struct Outcome {
    ended: Instant,
    took: Duration,
    result: Result<String, String>,
}

/// `CHECKERS` loops checking through `client` until stopped.
struct Checks {
    outcomes: Arc<Mutex<Vec<Outcome>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Checks {
    fn start(client: &Client) -> Checks {
        let outcomes = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..CHECKERS)
            .map(|_| {
                let (client, outcomes, stop) = (client.clone(), outcomes.clone(), stop.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::SeqCst) {
                        let request = check_request(
                            "acme".parse().unwrap(),
                            Some("alice".parse().unwrap()),
                            "export".parse().unwrap(),
                        );
                        let started = Instant::now();
                        let result = match client.check(request).await {
                            Ok(a) if a.decision.reason == Reason::Allow => Ok(a.answered_by),
                            Ok(a) => Err(format!("{} by {}", a.decision.reason, a.answered_by)),
                            Err(e) => Err(e.to_string()),
                        };
                        outcomes.lock().unwrap().push(Outcome {
                            ended: Instant::now(),
                            took: started.elapsed(),
                            result,
                        });
                    }
                })
            })
            .collect();
        Checks {
            outcomes,
            stop,
            tasks,
        }
    }

    fn since(&self, at: Instant) -> Vec<Outcome> {
        self.outcomes
            .lock()
            .unwrap()
            .iter()
            .filter(|o| o.ended >= at)
            .cloned()
            .collect()
    }

    async fn stop(self) -> Vec<Outcome> {
        self.stop.store(true, Ordering::SeqCst);
        for task in self.tasks {
            task.await.unwrap();
        }
        Arc::try_unwrap(self.outcomes)
            .unwrap()
            .into_inner()
            .unwrap()
    }
}

/// Runs checks through a client whose first endpoint is `target`'s, lets
/// them settle there, applies `fault` to it, and keeps checking until the
/// others have elected a leader, `CHECKS_AFTER_FAULT_MIN` checks ended
/// after the fault and twice the check deadline passed (so a check that
/// hung for its whole deadline has ended too). Every check's outcome
/// since the fault, and the leader elected.
async fn checks_through<F, G>(
    http: &reqwest::Client,
    nodes: &[&NodeProcess],
    target: &NodeProcess,
    revision: u64,
    fault: F,
) -> (Vec<Outcome>, u64, G)
where
    F: FnOnce() -> G,
{
    let mut endpoints = vec![target.endpoint()];
    endpoints.extend(
        nodes
            .iter()
            .filter(|n| n.id != target.id)
            .map(|n| n.endpoint()),
    );
    let client = Client::builder()
        .endpoints(endpoints)
        .ca_file(pki().ca_path())
        .credential(tollgate_tests::test_credential())
        .deadline(CHECK_DEADLINE)
        .build()
        .unwrap();
    let checks = Checks::start(&client);
    let warm = Instant::now();
    wait_until(
        "checks to be answered by the first endpoint",
        DEADLINE,
        || async {
            let by_target = checks
                .since(warm)
                .iter()
                .filter(|o| o.result.as_deref() == Ok(format!("eu-{}", target.id).as_str()))
                .count();
            (by_target >= 20)
                .then_some(())
                .ok_or(format!("{by_target} answered by eu-{}", target.id))
        },
    )
    .await
    .unwrap();
    let at = Instant::now();
    let guard = fault();
    let survivors: Vec<&NodeProcess> = nodes
        .iter()
        .copied()
        .filter(|n| n.id != target.id)
        .collect();
    let leader = agreed_leader(http, &survivors, revision).await;
    wait_until("checks to go on past the fault", DEADLINE, || async {
        let ended = checks.since(at).len();
        let waited = at.elapsed();
        (ended >= CHECKS_AFTER_FAULT_MIN && waited > 2 * CHECK_DEADLINE)
            .then_some(())
            .ok_or(format!("{ended} checks ended in {waited:?}"))
    })
    .await
    .unwrap();
    let outcomes: Vec<Outcome> = checks
        .stop()
        .await
        .into_iter()
        .filter(|o| o.ended >= at)
        .collect();
    (outcomes, leader, guard)
}

/// Asserts every check answered ALLOW within its deadline; the slowest.
fn every_check_answered(phase: &str, outcomes: &[Outcome], gone: u64) -> Duration {
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| o.result.is_err()).collect();
    assert!(
        failed.is_empty(),
        "{phase}: {} of {} checks failed, e.g. {:?}",
        failed.len(),
        outcomes.len(),
        &failed[..failed.len().min(3)]
    );
    let slowest = outcomes.iter().map(|o| o.took).max().unwrap_or_default();
    assert!(slowest < CHECK_DEADLINE, "{phase}: {slowest:?}");
    let gone = format!("eu-{gone}");
    let by_gone = outcomes
        .iter()
        .filter(|o| o.result.as_deref() == Ok(gone.as_str()))
        .count();
    let mut took: Vec<Duration> = outcomes.iter().map(|o| o.took).collect();
    took.sort();
    info!(
        phase,
        checks = outcomes.len(),
        answered_by_the_lost_node = by_gone,
        median_ms = took[took.len() / 2].as_secs_f64() * 1000.0,
        slowest_ms = slowest.as_secs_f64() * 1000.0,
        "Every check answered."
    );
    // Visible with --nocapture: the measurement the issue asks for.
    println!(
        "{phase}: {} checks after the fault, 0 failed; median {:?}, slowest {slowest:?} \
         (deadline {CHECK_DEADLINE:?})",
        outcomes.len(),
        took[took.len() / 2]
    );
    slowest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_never_sees_a_hung_or_killed_node() {
    init_tracing();
    // Three node processes under constant load: not beside the tests whose
    // timing against idle timeouts it would stretch.
    let _heavy = tollgate_tests::heavy_test().await;
    let dir = tempfile::tempdir().unwrap();
    let origin =
        TestOrigin::start(OriginConfig::new(1, dir.path().join("origin")), dir.path()).await;
    origin.seed(&["export"]).await;
    let written = origin
        .ok(
            Method::POST,
            "/v1/entitlements",
            json!({"id": "e-export", "account": "acme",
                "grant": {"feature": {"feature": "export"}}, "valid_from": 1_700_000_000}),
        )
        .await;
    let revision = written["revision"].as_u64().unwrap();
    let keys = dir.path().join("origin-keys.public.json");
    std::fs::write(
        &keys,
        serde_json::to_vec(&origin.node.public_keys().unwrap()).unwrap(),
    )
    .unwrap();

    info!("Starting a region of three node processes.");
    let mut nodes = Vec::new();
    for id in 1..=3 {
        nodes.push(NodeProcess::start(id, dir.path(), &origin.feed_url(), &keys).await);
    }
    let members: Vec<String> = nodes
        .iter()
        .map(|n| format!("{}={}", n.id, n.raft))
        .collect();
    writeln!(nodes[0].stdin, "init {}", members.join(" ")).unwrap();
    nodes[0].stdin.flush().unwrap();
    let http = pki().http_client();
    let all: Vec<&NodeProcess> = nodes.iter().collect();
    let leader = agreed_leader(&http, &all, revision).await;

    info!(
        leader,
        "Proving a SIGSTOPped leader delays no check past its deadline."
    );
    let target = nodes.iter().find(|n| n.id == leader).unwrap();
    let pid = target.pid();
    let (outcomes, new_leader, stopped) =
        checks_through(&http, &all, target, revision, || Stopped::stop(pid)).await;
    every_check_answered("SIGSTOP of the leader", &outcomes, leader);
    assert_ne!(new_leader, leader);
    drop(stopped);
    info!(
        leader,
        "Continued the stopped node; waiting for it to rejoin."
    );
    let leader = agreed_leader(&http, &all, revision).await;

    info!(
        leader,
        "Proving a SIGKILLed leader fails no check made with every endpoint."
    );
    let index = nodes.iter().position(|n| n.id == leader).unwrap();
    let (outcomes, new_leader, ()) = {
        let all: Vec<&NodeProcess> = nodes.iter().collect();
        let target = &nodes[index];
        let pid = target.pid();
        checks_through(&http, &all, target, revision, || {
            // SAFETY: kill(2) with a pid this test spawned and still holds.
            assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0, "SIGKILL");
        })
        .await
    };
    every_check_answered("SIGKILL of the leader", &outcomes, leader);
    assert_ne!(new_leader, leader);

    drop(nodes);
    origin.node.shutdown().await.unwrap();
}
