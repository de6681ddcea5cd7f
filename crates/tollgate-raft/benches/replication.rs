//! Three local nodes, fsync on (sled flush on every durability point),
//! release build. Measures:
//! - single-client commit latency (p50/p99), in-process and over gRPC;
//! - committed writes per second with 16 and 64 concurrent clients;
//! - the time from killing the leader to the next acknowledged write.
//!
//! The figures are printed as a table first (`tollgate-bench:` lines), then
//! criterion runs its own single-client and 64-client benchmarks.
//!
//! Run: `cargo bench -p tollgate-raft --bench replication`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tokio::net::TcpListener;
use tokio::runtime::Runtime;
use tollgate_proto::cluster::v1 as pb;
use tollgate_proto::cluster::v1::cluster_admin_client::ClusterAdminClient;
use tollgate_raft::{KvCommand, KvLogic, Node, NodeConfig, NodeId};

struct Cluster {
    _dir: tempfile::TempDir,
    nodes: Vec<Option<Arc<Node<KvLogic>>>>,
}

fn config(dir: &std::path::Path, id: NodeId) -> NodeConfig {
    let mut config = NodeConfig::new(id, dir.join(format!("node-{id}")));
    config.storage.cache_capacity_bytes = 64 * 1024 * 1024;
    config
}

/// Mutual TLS for member `id` of a bench cluster, from a CA made in `dir`.
fn member_tls(dir: &std::path::Path, id: NodeId) -> tollgate_tls::Transport {
    use tollgate_tls::{ca, Identity, Subject, Tls, TlsFiles, Transport};
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_secs() as i64;
    let ca_pem = match ca::read_ca(dir, "ca") {
        Ok(pem) => pem,
        Err(_) => {
            let pem = ca::create_ca("bench.tollgate", now - 3600, now + 86_400).expect("CA");
            ca::write(dir, "ca", &pem).expect("CA written");
            pem
        }
    };
    let subject = Subject::RegionNode {
        region: "bench".into(),
        node: id,
    };
    let pem = ca::issue(
        &ca_pem,
        &ca::Request {
            identity: Identity::new("bench.tollgate", subject.clone()).expect("identity"),
            dns: vec![],
            ips: vec![std::net::IpAddr::from([127, 0, 0, 1])],
            not_before: now - 3600,
            not_after: now + 86_400,
        },
    )
    .expect("certificate");
    let (cert, key) = ca::write(dir, &format!("node-{id}"), &pem).expect("written");
    let files = TlsFiles {
        ca: dir.join("ca.pem"),
        cert: Some(cert),
        key: Some(key),
    };
    Transport::Tls(Tls::load(files, Some(subject), now).expect("TLS loads"))
}

impl Cluster {
    async fn start() -> Cluster {
        Cluster::start_with(false).await
    }

    /// Three members, talking mutual TLS when `tls`.
    async fn start_with(tls: bool) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut nodes = Vec::new();
        let mut addrs = Vec::new();
        for id in 1..=3 {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            addrs.push(listener.local_addr().expect("addr"));
            let mut node_config = config(dir.path(), id);
            if tls {
                node_config.transport = member_tls(dir.path(), id);
            }
            let node = Node::start(node_config, KvLogic, listener)
                .await
                .expect("start");
            nodes.push(Some(Arc::new(node)));
        }
        let members: Vec<(NodeId, String)> = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| (i as u64 + 1, a.to_string()))
            .collect();
        nodes[0]
            .as_ref()
            .expect("node 1")
            .initialize(&members)
            .await
            .expect("init");
        let cluster = Cluster { _dir: dir, nodes };
        cluster.leader().await;
        cluster
    }

    async fn leader(&self) -> Arc<Node<KvLogic>> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            for node in self.nodes.iter().flatten() {
                if node.metrics().state.is_leader() {
                    return node.clone();
                }
            }
            assert!(Instant::now() < deadline, "no leader");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

fn put(i: u64) -> KvCommand {
    KvCommand::Put {
        key: format!("key-{}", i % 100_000),
        value: format!("value-{i:016}"),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn single_client_direct(node: &Node<KvLogic>, n: u64) -> Vec<Duration> {
    let mut lat = Vec::with_capacity(n as usize);
    for i in 0..n {
        let t = Instant::now();
        node.write(put(i)).await.expect("write");
        lat.push(t.elapsed());
    }
    lat.sort();
    lat
}

async fn single_client_grpc(addr: &str, n: u64) -> Vec<Duration> {
    let mut client = ClusterAdminClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    let mut lat = Vec::with_capacity(n as usize);
    for i in 0..n {
        let command = serde_json::to_vec(&put(i)).expect("encode");
        let t = Instant::now();
        client
            .client_write(pb::ClientWriteRequest {
                command,
                forward_hops: 0,
            })
            .await
            .expect("write");
        lat.push(t.elapsed());
    }
    lat.sort();
    lat
}

/// `clients` concurrent writers for `duration`; returns (writes/s, sorted latencies).
async fn concurrent(
    node: Arc<Node<KvLogic>>,
    grpc_addr: Option<String>,
    clients: u64,
    duration: Duration,
) -> (f64, Vec<Duration>) {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let node = node.clone();
        let grpc_addr = grpc_addr.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = match &grpc_addr {
                Some(addr) => Some(
                    ClusterAdminClient::connect(format!("http://{addr}"))
                        .await
                        .expect("connect"),
                ),
                None => None,
            };
            let mut lat = Vec::new();
            let mut i = c * 1_000_000;
            while start.elapsed() < duration {
                let t = Instant::now();
                match client.as_mut() {
                    Some(client) => {
                        let command = serde_json::to_vec(&put(i)).expect("encode");
                        client
                            .client_write(pb::ClientWriteRequest {
                                command,
                                forward_hops: 0,
                            })
                            .await
                            .expect("write");
                    }
                    None => {
                        node.write(put(i)).await.expect("write");
                    }
                }
                lat.push(t.elapsed());
                i += 1;
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("client task"));
    }
    let elapsed = start.elapsed();
    all.sort();
    (all.len() as f64 / elapsed.as_secs_f64(), all)
}

struct Proc {
    child: tokio::process::Child,
    addr: String,
}

async fn spawn_node(id: NodeId, dir: &std::path::Path, listen: &str) -> Proc {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tollgate-raft-testnode"))
        .args(["--id", &id.to_string(), "--listen", listen])
        .arg("--data-dir")
        .arg(dir.join(format!("node-{id}")))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn testnode");
    let stdout = child.stdout.take().expect("stdout");
    let line = tokio::io::BufReader::new(stdout)
        .lines()
        .next_line()
        .await
        .expect("read")
        .expect("READY line");
    let addr = line.strip_prefix("READY ").expect("READY").to_string();
    Proc { child, addr }
}

async fn status(addr: &str) -> Option<pb::StatusResponse> {
    let mut c = ClusterAdminClient::connect(format!("http://{addr}"))
        .await
        .ok()?;
    Some(c.status(pb::StatusRequest {}).await.ok()?.into_inner())
}

/// Kill the leader process with SIGKILL, `rounds` times; each time, the
/// time until a write is acknowledged by the survivors (a client retrying
/// every millisecond against both), then restart it and let it catch up.
async fn find_leader(procs: &std::collections::BTreeMap<NodeId, Proc>) -> NodeId {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for p in procs.values() {
            if let Some(s) = status(&p.addr).await {
                if s.state == pb::ServerState::Leader as i32 {
                    return s.node_id;
                }
            }
        }
        assert!(Instant::now() < deadline, "no leader");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `clients` concurrent gRPC writers against `addr` for `duration`.
async fn concurrent_grpc(addr: &str, clients: u64, duration: Duration) -> (f64, Vec<Duration>) {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let addr = addr.to_string();
        tasks.push(tokio::spawn(async move {
            let mut client = ClusterAdminClient::connect(format!("http://{addr}"))
                .await
                .expect("connect");
            let mut lat = Vec::new();
            let mut i = c * 1_000_000;
            while start.elapsed() < duration {
                let command = serde_json::to_vec(&put(i)).expect("encode");
                let t = Instant::now();
                client
                    .client_write(pb::ClientWriteRequest {
                        command,
                        forward_hops: 0,
                    })
                    .await
                    .expect("write");
                lat.push(t.elapsed());
                i += 1;
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("client task"));
    }
    let elapsed = start.elapsed();
    all.sort();
    (all.len() as f64 / elapsed.as_secs_f64(), all)
}

async fn failover_processes(rounds: usize) -> Vec<Duration> {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut procs = std::collections::BTreeMap::new();
    for id in 1..=3u64 {
        procs.insert(id, spawn_node(id, dir.path(), "127.0.0.1:0").await);
    }
    let members = procs
        .iter()
        .map(|(id, p)| pb::Member {
            node_id: *id,
            addr: p.addr.clone(),
        })
        .collect();
    let mut admin = ClusterAdminClient::connect(format!("http://{}", procs[&1].addr))
        .await
        .expect("connect");
    admin
        .initialize(pb::InitializeRequest { members })
        .await
        .expect("initialize");
    // The same figures as in-process, but with one process per node (as
    // deployed), each with its own runtime; the clients run in this process.
    {
        let leader = find_leader(&procs).await;
        let addr = procs[&leader].addr.clone();
        single_client_grpc(&addr, 500).await;
        let lat = single_client_grpc(&addr, 3000).await;
        println!(
            "tollgate-bench: single client (gRPC ClientWrite, one process per node): p50 {:.3} ms, p99 {:.3} ms, n={}",
            ms(percentile(&lat, 0.5)),
            ms(percentile(&lat, 0.99)),
            lat.len()
        );
        for clients in [16u64, 64] {
            let (rate, lat) = concurrent_grpc(&addr, clients, Duration::from_secs(4)).await;
            println!(
                "tollgate-bench: {clients} clients (gRPC ClientWrite, one process per node): {rate:.0} writes/s, p50 {:.3} ms, p99 {:.3} ms",
                ms(percentile(&lat, 0.5)),
                ms(percentile(&lat, 0.99)),
            );
        }
    }
    let mut results = Vec::new();
    let mut key = 0u64;
    for _ in 0..rounds {
        let leader = find_leader(&procs).await;
        // Steady load before the kill, so the followers are mid-stream.
        let mut clients = Vec::new();
        for p in procs.values() {
            clients.push(
                ClusterAdminClient::connect(format!("http://{}", p.addr))
                    .await
                    .expect("connect"),
            );
        }
        for _ in 0..50 {
            key += 1;
            let command = serde_json::to_vec(&put(key)).expect("encode");
            let _ = clients[0]
                .client_write(pb::ClientWriteRequest {
                    command,
                    forward_hops: 0,
                })
                .await;
        }
        let mut victim = procs.remove(&leader).expect("leader");
        victim.child.kill().await.expect("kill");
        let killed_at = Instant::now();
        let mut survivors = Vec::new();
        for p in procs.values() {
            survivors.push(
                ClusterAdminClient::connect(format!("http://{}", p.addr))
                    .await
                    .expect("connect"),
            );
        }
        let mut i = 0usize;
        let elapsed = loop {
            key += 1;
            let command = serde_json::to_vec(&put(key)).expect("encode");
            let mut request = tonic::Request::new(pb::ClientWriteRequest {
                command,
                forward_hops: 0,
            });
            request.set_timeout(Duration::from_millis(500));
            let n = survivors.len();
            if survivors[i % n].client_write(request).await.is_ok() {
                break killed_at.elapsed();
            }
            i += 1;
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        results.push(elapsed);
        let restarted = spawn_node(leader, dir.path(), &victim.addr).await;
        let target = status(&procs.values().next().expect("survivor").addr)
            .await
            .map(|s| s.last_applied_index)
            .unwrap_or(0);
        let deadline = Instant::now() + Duration::from_secs(30);
        while status(&restarted.addr)
            .await
            .is_none_or(|s| s.last_applied_index < target)
        {
            assert!(Instant::now() < deadline, "restarted node did not catch up");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        procs.insert(leader, restarted);
    }
    for p in procs.values_mut() {
        let _ = p.child.kill().await;
    }
    results
}

/// One-client commit latency and 16-client throughput of a three-member
/// cluster with mutual TLS against plaintext, alternating, in one run.
async fn tls_against_plaintext() {
    let mut p50 = [Vec::new(), Vec::new()];
    let mut rates = [Vec::new(), Vec::new()];
    for round in 0..2 {
        for tls in [false, true] {
            let mut cluster = Cluster::start_with(tls).await;
            let leader = cluster.leader().await;
            single_client_direct(&leader, 300).await;
            let lat = single_client_direct(&leader, 2000).await;
            let (rate, _) = concurrent(leader.clone(), None, 16, Duration::from_secs(3)).await;
            println!(
                "tollgate-bench: round {round}, {}: single client p50 {:.3} ms, p99 {:.3} ms; 16 clients {rate:.0} writes/s",
                if tls { "mutual TLS" } else { "plaintext" },
                ms(percentile(&lat, 0.5)),
                ms(percentile(&lat, 0.99)),
            );
            p50[tls as usize].push(ms(percentile(&lat, 0.5)));
            rates[tls as usize].push(rate);
            drop(leader);
            for node in cluster.nodes.iter_mut() {
                if let Some(node) = node.take() {
                    if let Ok(node) = Arc::try_unwrap(node) {
                        let _ = node.shutdown().await;
                    }
                }
            }
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    println!(
        "tollgate-bench: mutual TLS / plaintext: single-client commit p50 {:.2}x, 16-client throughput {:.2}x",
        mean(&p50[1]) / mean(&p50[0]),
        mean(&rates[1]) / mean(&rates[0]),
    );
}

fn report(rt: &Runtime) {
    rt.block_on(tls_against_plaintext());
    rt.block_on(async {
        let mut cluster = Cluster::start().await;
        let leader = cluster.leader().await;
        let leader_addr = leader.addr().to_string();
        // Warm up: connections, sled, caches.
        single_client_direct(&leader, 500).await;

        let lat = single_client_direct(&leader, 3000).await;
        println!(
            "tollgate-bench: single client (in-process Node::write): p50 {:.3} ms, p99 {:.3} ms, n={}",
            ms(percentile(&lat, 0.5)),
            ms(percentile(&lat, 0.99)),
            lat.len()
        );
        let lat = single_client_grpc(&leader_addr, 3000).await;
        println!(
            "tollgate-bench: single client (gRPC ClientWrite): p50 {:.3} ms, p99 {:.3} ms, n={}",
            ms(percentile(&lat, 0.5)),
            ms(percentile(&lat, 0.99)),
            lat.len()
        );
        for clients in [16u64, 64] {
            for grpc in [false, true] {
                let stats = leader.flush_stats();
                let appends0 = stats.appends.load(std::sync::atomic::Ordering::Relaxed);
                let flushes0 = stats.flushes.load(std::sync::atomic::Ordering::Relaxed);
                let addr = grpc.then(|| leader_addr.clone());
                let (rate, lat) = concurrent(leader.clone(), addr, clients, Duration::from_secs(4)).await;
                let appends = stats.appends.load(std::sync::atomic::Ordering::Relaxed) - appends0;
                let flushes = stats.flushes.load(std::sync::atomic::Ordering::Relaxed) - flushes0;
                println!(
                    "tollgate-bench: {clients} clients ({}): {rate:.0} writes/s, p50 {:.3} ms, p99 {:.3} ms; leader log appends {appends}, flushes {flushes}",
                    if grpc { "gRPC ClientWrite" } else { "in-process Node::write" },
                    ms(percentile(&lat, 0.5)),
                    ms(percentile(&lat, 0.99)),
                );
            }
        }
        drop(leader);
        let mut rounds = failover_processes(10).await;
        let shown: Vec<String> = rounds.iter().map(|d| format!("{:.0}", ms(*d))).collect();
        rounds.sort();
        println!(
            "tollgate-bench: leader process SIGKILLed -> next acked write: median {:.0} ms, max {:.0} ms (rounds: {} ms)",
            ms(percentile(&rounds, 0.5)),
            ms(rounds[rounds.len() - 1]),
            shown.join(", ")
        );
        for node in cluster.nodes.iter_mut() {
            if let Some(node) = node.take() {
                if let Ok(node) = Arc::try_unwrap(node) {
                    let _ = node.shutdown().await;
                }
            }
        }
    });
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    report(&rt);

    let cluster = rt.block_on(Cluster::start());
    let leader = rt.block_on(cluster.leader());
    let mut group = c.benchmark_group("commit");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(5));
    let mut i = 0u64;
    group.throughput(Throughput::Elements(1));
    group.bench_function("single_client", |b| {
        b.iter(|| {
            i += 1;
            rt.block_on(leader.write(put(i))).expect("write")
        })
    });
    for clients in [16u64, 64] {
        group.bench_function(format!("{clients}_clients"), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    let per_client = iters.div_ceil(clients);
                    let mut tasks = Vec::new();
                    for c in 0..clients {
                        let leader = leader.clone();
                        tasks.push(tokio::spawn(async move {
                            for j in 0..per_client {
                                leader.write(put(c * 1_000_000 + j)).await.expect("write");
                            }
                        }));
                    }
                    for t in tasks {
                        t.await.expect("task");
                    }
                    // Per-write time: criterion reports elements/s from it.
                    start.elapsed() / (per_client * clients) as u32 * iters as u32
                })
            })
        });
    }
    group.finish();
}

fn criterion() -> Criterion {
    // Keep criterion's reports under the workspace's target directory
    // rather than this package's (which git does not ignore).
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("criterion");
    Criterion::default().output_directory(&out)
}

criterion_group! {
    name = replication;
    config = criterion();
    targets = benches
}
criterion_main!(replication);
