//! A Tollgate Raft group against etcd, side by side, in one run on one
//! machine: a three-member etcd (fsync on, as it always is) and three
//! Tollgate Raft nodes (one process each, every append fsynced in the log's
//! journal before it counts, as deployed), each measured with the same
//! client code:
//! - one client writing sequentially: commit latency p50 and p99;
//! - 64 clients, each on its own connection, for a fixed time: commits a
//!   second.
//!
//! Both are written to at their leader (an etcd follower forwards a put to
//! its leader; a Tollgate follower forwards a write too: neither pays that
//! hop here). Keys and values are the same shape for both (`key-N`, a
//! 22-byte value). A Tollgate write is a `ClientWrite` of the key-value
//! test state machine's `Put` over gRPC: the log store, the replication
//! and the state machine a region's writes go through, with a trivial
//! apply.
//!
//! Run: `bench/vs-etcd.sh` (installs Debian's etcd-server
//! where `etcd` is missing, then runs this bench). Flags after `--`:
//! `--writes N` (sequential writes, default 3000), `--seconds S` (each
//! concurrent phase, default 10), `--clients C` (default 64).

use std::net::TcpListener as StdListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tollgate_proto::cluster::v1 as pb;
use tollgate_proto::cluster::v1::cluster_admin_client::ClusterAdminClient;
use tollgate_raft::KvCommand;
use tonic::transport::{Channel, Endpoint};

/// etcd's `KV.Put` and `Maintenance.Status`, the fields this bench uses
/// (from etcd's `rpc.proto`; unknown fields are skipped on decode).
mod etcd {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PutRequest {
        #[prost(bytes = "vec", tag = "1")]
        pub key: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        pub value: Vec<u8>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PutResponse {
        #[prost(message, optional, tag = "1")]
        pub header: Option<ResponseHeader>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ResponseHeader {
        #[prost(uint64, tag = "2")]
        pub member_id: u64,
        #[prost(int64, tag = "3")]
        pub revision: i64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StatusRequest {}
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StatusResponse {
        #[prost(message, optional, tag = "1")]
        pub header: Option<ResponseHeader>,
        #[prost(uint64, tag = "4")]
        pub leader: u64,
    }
}

struct Options {
    writes: usize,
    seconds: u64,
    clients: usize,
}

fn options() -> Options {
    let mut options = Options {
        writes: 3000,
        seconds: 10,
        clients: 64,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = |name: &str| -> u64 {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} needs a whole number"))
        };
        match flag.as_str() {
            "--writes" => options.writes = value("--writes") as usize,
            "--seconds" => options.seconds = value("--seconds"),
            "--clients" => options.clients = value("--clients") as usize,
            // cargo bench passes `--bench`; criterion-style filters are ignored.
            _ => {}
        }
    }
    options
}

/// A free port on 127.0.0.1 (bound, then let go for the server to take).
fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// Children killed when this is dropped, however the bench ends.
struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for child in &mut self.0 {
            // Already gone is fine: this is cleanup.
            let _gone = child.kill();
            let _reaped = child.wait();
        }
    }
}

fn connect_timeout() -> Duration {
    Duration::from_secs(2)
}

async fn channel(addr: &str) -> Result<Channel, String> {
    Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| e.to_string())?
        .connect_timeout(connect_timeout())
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| format!("{addr}: {e}"))
}

/// Waits for `what` to be `Some`, up to a minute, saying what it last saw.
async fn wait_for<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match probe().await {
            Ok(value) => return value,
            Err(last) if Instant::now() >= deadline => {
                panic!("timed out waiting for {what}; last saw: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

// ---- etcd ---------------------------------------------------------------

struct Etcd {
    _procs: Procs,
    _dir: tempfile::TempDir,
    leader: String,
    version: String,
}

fn etcd_binary() -> String {
    std::env::var("ETCD").unwrap_or_else(|_| "etcd".into())
}

async fn etcd_put(grpc: &mut tonic::client::Grpc<Channel>, key: String, value: String) {
    grpc.ready().await.expect("etcd channel ready");
    let path = http::uri::PathAndQuery::from_static("/etcdserverpb.KV/Put");
    let codec = tonic_prost::ProstCodec::<etcd::PutRequest, etcd::PutResponse>::default();
    grpc.unary(
        tonic::Request::new(etcd::PutRequest {
            key: key.into_bytes(),
            value: value.into_bytes(),
        }),
        path,
        codec,
    )
    .await
    .expect("etcd put");
}

async fn etcd_status_on(
    grpc: &mut tonic::client::Grpc<Channel>,
) -> Result<etcd::StatusResponse, String> {
    grpc.ready().await.map_err(|e| e.to_string())?;
    let path = http::uri::PathAndQuery::from_static("/etcdserverpb.Maintenance/Status");
    let codec = tonic_prost::ProstCodec::<etcd::StatusRequest, etcd::StatusResponse>::default();
    grpc.unary(tonic::Request::new(etcd::StatusRequest {}), path, codec)
        .await
        .map(tonic::Response::into_inner)
        .map_err(|e| e.to_string())
}

async fn etcd_status(addr: &str) -> Result<etcd::StatusResponse, String> {
    let mut grpc = tonic::client::Grpc::new(channel(addr).await?);
    etcd_status_on(&mut grpc)
        .await
        .map_err(|e| format!("{addr}: {e}"))
}

async fn start_etcd() -> Etcd {
    let version = Command::new(etcd_binary())
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or("").to_string())
        .unwrap_or_else(|e| {
            panic!(
                "`{}` does not run ({e}): install Debian's etcd-server (vs-etcd.sh does), or set ETCD",
                etcd_binary()
            )
        });
    let dir = tempfile::tempdir().expect("tempdir");
    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let cluster: Vec<String> = ports
        .iter()
        .enumerate()
        .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
        .collect();
    let mut procs = Procs(Vec::new());
    for (i, (client, peer)) in ports.iter().enumerate() {
        let child = Command::new(etcd_binary())
            .args(["--name", &format!("m{i}")])
            .arg("--data-dir")
            .arg(dir.path().join(format!("m{i}")))
            .args([
                "--listen-client-urls",
                &format!("http://127.0.0.1:{client}"),
            ])
            .args([
                "--advertise-client-urls",
                &format!("http://127.0.0.1:{client}"),
            ])
            .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
            .args([
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{peer}"),
            ])
            .args(["--initial-cluster", &cluster.join(",")])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", "tollgate-bench"])
            .args(["--log-level", "error"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd starts");
        procs.0.push(child);
    }
    let addrs: Vec<String> = ports
        .iter()
        .map(|(client, _)| format!("127.0.0.1:{client}"))
        .collect();
    let leader = wait_for("an etcd leader", || {
        let addrs = addrs.clone();
        async move {
            let mut last = String::from("no member answered");
            for addr in &addrs {
                match etcd_status(addr).await {
                    Ok(status) => {
                        let me = status.header.map(|h| h.member_id).unwrap_or(0);
                        if status.leader != 0 && status.leader == me {
                            return Ok(addr.clone());
                        }
                        last = format!("{addr}: leader {:x}, itself {me:x}", status.leader);
                    }
                    Err(e) => last = e,
                }
            }
            Err(last)
        }
    })
    .await;
    Etcd {
        _procs: procs,
        _dir: dir,
        leader,
        version,
    }
}

// ---- Tollgate -------------------------------------------------------------

struct Tollgate {
    _procs: Procs,
    _dir: tempfile::TempDir,
    leader: String,
}

fn spawn_testnode(id: u64, dir: &std::path::Path) -> (Child, String) {
    use std::io::BufRead;
    let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate-raft-testnode"))
        .args(["--id", &id.to_string(), "--listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir.join(format!("node-{id}")))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the test node starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .expect("the test node says where it listens");
    let addr = line
        .trim()
        .strip_prefix("READY ")
        .unwrap_or_else(|| panic!("expected `READY <addr>`, got {line:?}"))
        .to_string();
    (child, addr)
}

async fn start_tollgate() -> Tollgate {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut procs = Procs(Vec::new());
    let mut members = Vec::new();
    for id in 1..=3u64 {
        let (child, addr) = spawn_testnode(id, dir.path());
        procs.0.push(child);
        members.push(pb::Member { node_id: id, addr });
    }
    let mut admin = ClusterAdminClient::new(channel(&members[0].addr).await.expect("node 1"));
    admin
        .initialize(pb::InitializeRequest {
            members: members.clone(),
        })
        .await
        .expect("the group initializes");
    let leader = wait_for("a Tollgate leader", || {
        let members = members.clone();
        async move {
            let mut last = String::from("no node answered");
            for member in &members {
                let mut client = ClusterAdminClient::new(channel(&member.addr).await?);
                match client.status(pb::StatusRequest {}).await {
                    Ok(status) => {
                        let status = status.into_inner();
                        if status.state == pb::ServerState::Leader as i32 {
                            return Ok(member.addr.clone());
                        }
                        last = format!("{}: state {}", member.addr, status.state);
                    }
                    Err(e) => last = format!("{}: {e}", member.addr),
                }
            }
            Err(last)
        }
    })
    .await;
    Tollgate {
        _procs: procs,
        _dir: dir,
        leader,
    }
}

async fn tollgate_put(client: &mut ClusterAdminClient<Channel>, key: String, value: String) {
    let command = serde_json::to_vec(&KvCommand::Put { key, value }).expect("encodes");
    client
        .client_write(pb::ClientWriteRequest {
            command,
            forward_hops: 0,
        })
        .await
        .expect("Tollgate write");
}

// ---- the measurement, the same for both -----------------------------------

#[derive(Clone, Copy)]
enum System {
    Etcd,
    Tollgate,
}

enum Writer {
    Etcd(tonic::client::Grpc<Channel>),
    Tollgate(ClusterAdminClient<Channel>),
}

impl Writer {
    async fn new(system: System, leader: &str) -> Writer {
        let channel = channel(leader).await.expect("the leader answers");
        match system {
            System::Etcd => Writer::Etcd(tonic::client::Grpc::new(channel)),
            System::Tollgate => Writer::Tollgate(ClusterAdminClient::new(channel)),
        }
    }

    async fn put(&mut self, i: u64) {
        let (key, value) = (format!("key-{}", i % 100_000), format!("value-{i:016}"));
        match self {
            Writer::Etcd(grpc) => etcd_put(grpc, key, value).await,
            Writer::Tollgate(client) => tollgate_put(client, key, value).await,
        }
    }

    /// One status call to the leader: a gRPC round trip with no write, the
    /// floor under each system's commit latency.
    async fn status(&mut self) {
        match self {
            Writer::Etcd(grpc) => {
                etcd_status_on(grpc).await.expect("etcd status");
            }
            Writer::Tollgate(client) => {
                client
                    .status(pb::StatusRequest {})
                    .await
                    .expect("Tollgate status");
            }
        }
    }
}

struct Figures {
    round_trip_p50: Duration,
    p50: Duration,
    p99: Duration,
    rate: f64,
    concurrent_p99: Duration,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn measure(system: System, leader: &str, options: &Options) -> Figures {
    let mut writer = Writer::new(system, leader).await;
    // Warm up: connections, caches, the first log segments.
    for i in 0..300 {
        writer.put(i).await;
    }
    let mut latencies = Vec::with_capacity(options.writes);
    for i in 0..options.writes as u64 {
        let started = Instant::now();
        writer.put(1_000 + i).await;
        latencies.push(started.elapsed());
    }
    latencies.sort();
    let mut round_trips = Vec::with_capacity(1_000);
    for _ in 0..1_000 {
        let started = Instant::now();
        writer.status().await;
        round_trips.push(started.elapsed());
    }
    round_trips.sort();
    let run_for = Duration::from_secs(options.seconds);
    let mut writers = Vec::new();
    for _ in 0..options.clients {
        writers.push(Writer::new(system, leader).await);
    }
    let started = Instant::now();
    let tasks: Vec<_> = writers
        .into_iter()
        .enumerate()
        .map(|(c, mut writer)| {
            tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut i = (c as u64 + 1) * 10_000_000;
                while started.elapsed() < run_for {
                    let t = Instant::now();
                    writer.put(i).await;
                    lat.push(t.elapsed());
                    i += 1;
                }
                lat
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("a client task"));
    }
    let elapsed = started.elapsed();
    all.sort();
    Figures {
        round_trip_p50: percentile(&round_trips, 0.5),
        p50: percentile(&latencies, 0.5),
        p99: percentile(&latencies, 0.99),
        rate: all.len() as f64 / elapsed.as_secs_f64(),
        concurrent_p99: percentile(&all, 0.99),
    }
}

fn main() {
    let options = options();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let etcd = start_etcd().await;
        println!("vs-etcd: {} (three members, 127.0.0.1)", etcd.version);
        let etcd_figures = measure(System::Etcd, &etcd.leader, &options).await;
        drop(etcd);
        let tollgate = start_tollgate().await;
        println!("vs-etcd: Tollgate Raft (three test-node processes, 127.0.0.1)");
        let tollgate_figures = measure(System::Tollgate, &tollgate.leader, &options).await;
        drop(tollgate);
        for (name, f) in [("etcd", &etcd_figures), ("tollgate", &tollgate_figures)] {
            println!(
                "vs-etcd: {name:>8}: 1 client p50 {:.3} ms, p99 {:.3} ms (n={}); {} clients {:.0} commits/s, p99 {:.3} ms; status round trip p50 {:.3} ms",
                ms(f.p50),
                ms(f.p99),
                options.writes,
                options.clients,
                f.rate,
                ms(f.concurrent_p99),
                ms(f.round_trip_p50),
            );
        }
        let p50_ratio = ms(tollgate_figures.p50) / ms(etcd_figures.p50);
        let rate_ratio = tollgate_figures.rate / etcd_figures.rate;
        println!(
            "vs-etcd: ratios (tollgate / etcd): 1-client p50 {p50_ratio:.2}x (target <= 1.0), p99 {:.2}x; {}-client throughput {rate_ratio:.2}x (target >= 1.0)",
            ms(tollgate_figures.p99) / ms(etcd_figures.p99),
            options.clients,
        );
    });
}
