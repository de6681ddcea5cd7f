//! Scale measurement (not part of the default run): one region node holding
//! 100,000 accounts × 10 entitlements. Reports the load time, resident
//! memory, on-disk size, and the time from starting the node again on the
//! same data directory to its first answered check. Run with
//!
//! ```text
//! cargo test --release -p tollgate-tests --test e2e region_scale -- --ignored --nocapture
//! ```
//!
//! `TOLLGATE_SCALE_ACCOUNTS` changes the number of accounts. The records
//! are proposed to the region's log directly, as the leader proposes the
//! origin's verified records, so the origin's own cost is not measured.
//!
//! With `TOLLGATE_SCALE_REDIS=<host:port>` (a Redis on loopback that may be
//! emptied; `bench/vs-redis.sh` starts one), the same records are then
//! loaded into it as hashes (one per entitlement, account and subject, each
//! field a hash field, nested ones dotted, plus a set per account naming its
//! entitlements, the region's index) and its resident memory is reported
//! beside the node's.

use std::time::{Duration, Instant};
use tollgate_model::*;
use tollgate_proto::check::v1 as pb;
use tollgate_proto::check::v1::check_service_client::CheckServiceClient;
use tollgate_region::{RegionCommand, RegionResponse};
use tollgate_region_node::{RegionConfig, RegionListeners, RegionNode};
use tollgate_tests::{feature_entitlement, init_tracing, loopback, wait_until, wall_clock_now};

const ENTITLEMENTS_PER_ACCOUNT: usize = 10;
const FEATURES: usize = 20;
/// Keeps each proposed command well under the storage layer's command limit.
const COMMAND_BYTES_TARGET: usize = 200 * 1024;

fn id<T: TryFrom<String, Error = ModelError>>(s: String) -> T {
    T::try_from(s).unwrap()
}

fn catalog_record(now: UnixSeconds) -> ChangeRecord {
    let mut mutations = vec![
        // The check port answers only callers with a credential.
        Mutation::PutCredential(tollgate_tests::app::test_credential_record()),
        Mutation::PutProduct(Product {
            id: id("studio".into()),
            name: "Studio".into(),
        }),
    ];
    for f in 0..FEATURES {
        mutations.push(Mutation::PutFeature(Feature {
            id: id(format!("feature-{f:02}")),
            product: id("studio".into()),
            name: format!("Feature {f}"),
            kind: FeatureKind::Boolean,
            geo_rule: GeoRule::default(),
            offline_policy: None,
            config: ConfigValues::new(),
            auto_approve: None,
        }));
    }
    ChangeRecord {
        revision: 1,
        committed_at: now,
        mutations,
    }
}

fn account_record(now: UnixSeconds, revision: u64, account: usize) -> ChangeRecord {
    let account_id: AccountId = id(format!("account-{account:06}"));
    let mut mutations = vec![
        Mutation::PutAccount(Account {
            id: account_id.clone(),
            name: format!("Account {account}"),
            status: AccountStatus::Active,
        }),
        Mutation::PutSubject(Subject {
            id: id("user-1".into()),
            account: account_id.clone(),
            kind: SubjectKind::User,
            roles: Default::default(),
            groups: Default::default(),
        }),
    ];
    for e in 0..ENTITLEMENTS_PER_ACCOUNT {
        mutations.push(Mutation::PutEntitlement(Entitlement {
            // Valid to a year after the run: the checks are judged
            // against the node's wall clock.
            valid_until: Some(now.plus_seconds(365 * 86_400)),
            grace_period_seconds: 86_400,
            ..feature_entitlement(
                &format!("ent-{account:06}-{e:02}"),
                account_id.as_str(),
                &format!("feature-{:02}", (account + e) % FEATURES),
                now,
                revision,
            )
        }));
    }
    ChangeRecord {
        revision,
        committed_at: now,
        mutations,
    }
}

/// The process's resident memory, after handing freed heap back to the
/// kernel, so memory a stopped node freed is not counted against the next.
fn resident_mib() -> f64 {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free heap pages; it has no
    // preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

fn disk_mib(path: &std::path::Path) -> f64 {
    fn walk(path: &std::path::Path) -> u64 {
        let Ok(meta) = std::fs::symlink_metadata(path) else {
            return 0;
        };
        if meta.is_dir() {
            std::fs::read_dir(path)
                .map(|entries| entries.flatten().map(|e| walk(&e.path())).sum())
                .unwrap_or(0)
        } else {
            use std::os::unix::fs::MetadataExt;
            meta.blocks() * 512
        }
    }
    walk(path) as f64 / (1024.0 * 1024.0)
}

/// The bytes of keys and values in each sled tree of a stopped node: what
/// the data weighs before sled's own overhead.
fn logical_mib_by_tree(data: &std::path::Path) -> Vec<(String, f64)> {
    let db = tollgate_raft::open_db_for_inspection(data).unwrap();
    db.tree_names()
        .into_iter()
        .map(|name| {
            let tree = db.open_tree(&name).unwrap();
            let bytes: usize = tree
                .iter()
                .map(|kv| {
                    let (k, v) = kv.unwrap();
                    k.len() + v.len()
                })
                .sum();
            (
                String::from_utf8_lossy(&name).into_owned(),
                bytes as f64 / (1024.0 * 1024.0),
            )
        })
        .collect()
}

/// Loads the same records into the Redis at `addr` as hashes (after
/// emptying it) and returns its `used_memory_rss` and `used_memory`, in
/// MiB. Speaks RESP directly: a few commands do not earn a client crate.
fn redis_memory_mib(addr: &str, now: UnixSeconds, accounts: usize) -> (f64, f64) {
    use std::io::{BufRead, BufReader, Write};
    let stream = std::net::TcpStream::connect(addr).expect("the Redis to measure");
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = std::io::BufWriter::new(stream);
    fn command(out: &mut Vec<u8>, args: &[&[u8]]) {
        out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for arg in args {
            out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            out.extend_from_slice(arg);
            out.extend_from_slice(b"\r\n");
        }
    }
    /// Nested objects become dotted fields (`geo_rule.allow_countries`),
    /// so every value stays short enough for Redis's compact hash encoding
    /// (values of at most `hash-max-listpack-value`, 64 bytes, by default).
    fn flatten(prefix: &str, object: &serde_json::Value, out: &mut Vec<(String, Vec<u8>)>) {
        for (field, value) in object.as_object().expect("records are objects") {
            let name = match prefix {
                "" => field.clone(),
                _ => format!("{prefix}.{field}"),
            };
            match value {
                serde_json::Value::Object(_) => flatten(&name, value, out),
                serde_json::Value::String(s) => out.push((name, s.clone().into_bytes())),
                other => out.push((name, serde_json::to_vec(other).unwrap())),
            }
        }
    }
    fn hash(out: &mut Vec<u8>, key: &str, object: &serde_json::Value) {
        let mut fields = Vec::new();
        flatten("", object, &mut fields);
        let mut args: Vec<&[u8]> = vec![b"HSET", key.as_bytes()];
        for (field, value) in &fields {
            args.push(field.as_bytes());
            args.push(value);
        }
        command(out, &args);
    }
    let mut replies = 0usize;
    let read_replies = |reader: &mut BufReader<std::net::TcpStream>, n: usize| {
        let mut line = String::new();
        for _ in 0..n {
            line.clear();
            reader.read_line(&mut line).unwrap();
            assert!(!line.starts_with('-'), "Redis refused a command: {line}");
        }
    };
    let mut batch = Vec::new();
    command(&mut batch, &[b"FLUSHALL"]);
    writer.write_all(&batch).unwrap();
    writer.flush().unwrap();
    read_replies(&mut reader, 1);
    for account in 0..accounts {
        batch.clear();
        let record = account_record(now, account as u64 + 2, account);
        let mut sent = 0;
        let account_id = format!("account-{account:06}");
        for m in &record.mutations {
            let (key, object) = match m {
                Mutation::PutAccount(a) => (format!("account:{}", a.id), serde_json::to_value(a)),
                Mutation::PutSubject(s) => (
                    format!("subject:{}:{}", s.account, s.id),
                    serde_json::to_value(s),
                ),
                Mutation::PutEntitlement(e) => {
                    command(
                        &mut batch,
                        &[
                            b"SADD",
                            format!("account-entitlements:{account_id}").as_bytes(),
                            e.id.as_str().as_bytes(),
                        ],
                    );
                    sent += 1;
                    (format!("entitlement:{}", e.id), serde_json::to_value(e))
                }
                other => panic!("an account record holds {other:?}"),
            };
            hash(&mut batch, &key, &object.unwrap());
            sent += 1;
        }
        writer.write_all(&batch).unwrap();
        replies += sent;
        // Keep a bounded number of replies outstanding.
        if account % 100 == 99 {
            writer.flush().unwrap();
            read_replies(&mut reader, replies);
            replies = 0;
        }
    }
    writer.flush().unwrap();
    read_replies(&mut reader, replies);
    batch.clear();
    command(&mut batch, &[b"INFO", b"memory"]);
    writer.write_all(&batch).unwrap();
    writer.flush().unwrap();
    let mut header = String::new();
    reader.read_line(&mut header).unwrap();
    let len: usize = header.trim_start_matches('$').trim().parse().unwrap();
    let mut body = vec![0; len + 2];
    std::io::Read::read_exact(&mut reader, &mut body).unwrap();
    let info = String::from_utf8_lossy(&body);
    let field = |name: &str| -> f64 {
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("INFO memory has no {name}"))
            / (1024.0 * 1024.0)
    };
    (field("used_memory_rss"), field("used_memory"))
}

/// p50, p99 and the slowest of some durations.
fn percentiles(mut took: Vec<Duration>) -> String {
    took.sort();
    let at = |q: f64| {
        took.get(((took.len() as f64 * q) as usize).min(took.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    format!(
        "p50 {:?}, p99 {:?}, slowest {:?}",
        at(0.5),
        at(0.99),
        took.last().copied().unwrap_or_default()
    )
}

async fn start(dir: &std::path::Path) -> RegionNode {
    // No origin: the leader's follower retries quietly in the background.
    let keys = tollgate_signing::KeyRing::generate(wall_clock_now())
        .unwrap()
        .public_set();
    let mut config = RegionConfig::new(1, dir, "https://127.0.0.1:9".into(), keys);
    config.raft.transport = tollgate_tests::pki().region_node(&config.region, 1);
    config.reconnect_backoff_max = Duration::from_secs(30);
    RegionNode::start(
        config,
        RegionListeners {
            raft: loopback().await.into(),
            grpc: loopback().await.into(),
            http: None,
        },
        None,
    )
    .await
    .unwrap()
}

async fn first_allowed_check(node: &RegionNode, account: usize) -> Duration {
    let started = Instant::now();
    let transport = tollgate_tests::pki().client();
    let endpoint = transport
        .endpoint(&tollgate_tests::https(node.grpc_addr()))
        .unwrap();
    wait_until(
        "a first answered check",
        Duration::from_secs(600),
        || async {
            let channel = transport
                .connect(&endpoint, tollgate_tls::Expect::HostName, "test")
                .await
                .map_err(|e| format!("connect: {e}"))?;
            let mut client = CheckServiceClient::with_interceptor(
                channel,
                tollgate_tests::app::with_test_credential(),
            );
            let reply = client
                .check(pb::CheckRequest {
                    explain: false,
                    idempotency_key: None,
                    account_id: format!("account-{account:06}"),
                    subject_id: Some("user-1".into()),
                    feature_id: format!("feature-{:02}", account % FEATURES),
                    consume: 0,
                    location: None,
                    consistency: None,
                })
                .await
                .map_err(|status| format!("check: {status}"))?
                .into_inner();
            match reply.decision.map(|d| d.reason()) {
                Some(pb::Reason::Allow) => Ok(()),
                other => Err(format!("reason {other:?} at revision {}", reply.revision)),
            }
        },
    )
    .await
    .unwrap();
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run with --release -- --ignored --nocapture"]
async fn a_region_node_holding_a_million_entitlements() {
    init_tracing();
    // One reading of the wall clock for every date in the data: the node
    // judges staleness and validity against its own clock, so a fixed date
    // here would turn every check STALE_DATA once the offline grace passed.
    let now = wall_clock_now();
    let accounts: usize = std::env::var("TOLLGATE_SCALE_ACCOUNTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("region-1");
    let node = start(&data).await;
    node.raft()
        .initialize(&[(1, node.raft().addr().to_string())])
        .await
        .unwrap();
    node.raft()
        .wait_until(Duration::from_secs(20), "leader", |m| {
            m.current_leader == Some(1)
        })
        .await
        .unwrap();

    let load_started = Instant::now();
    let baseline = resident_mib();
    let mut pending = vec![catalog_record(now)];
    let mut pending_bytes = 0;
    let mut revision = 1;
    let propose = |records: Vec<ChangeRecord>| {
        let node = &node;
        async move {
            let last = records.last().map(|r| r.revision).unwrap_or(0);
            let outcome = node
                .raft()
                .write(RegionCommand::ApplyChanges {
                    records,
                    heard_at: now,
                })
                .await
                .unwrap();
            assert_eq!(outcome.response, RegionResponse::Applied { revision: last });
        }
    };
    for account in 0..accounts {
        revision += 1;
        let record = account_record(now, revision, account);
        let size = serde_json::to_vec(&record).unwrap().len();
        if pending_bytes + size > COMMAND_BYTES_TARGET {
            propose(std::mem::take(&mut pending)).await;
            pending_bytes = 0;
        }
        pending_bytes += size;
        pending.push(record);
    }
    propose(pending).await;
    let load = load_started.elapsed();
    let entitlements = accounts * ENTITLEMENTS_PER_ACCOUNT;
    let first = first_allowed_check(&node, accounts / 2).await;
    let loaded_rss = resident_mib();
    let loaded_disk = disk_mib(&data);
    // Origin records keep arriving while the snapshot is built: the
    // slowest of them says how long applies wait on a snapshot.
    let snapshot_started = Instant::now();
    let built = std::sync::atomic::AtomicBool::new(false);
    let (snapshot_took, (written_meanwhile, slowest_write)) = tokio::join!(
        async {
            node.raft()
                .trigger_snapshot(Duration::from_secs(600))
                .await
                .unwrap();
            built.store(true, std::sync::atomic::Ordering::SeqCst);
            snapshot_started.elapsed()
        },
        async {
            let mut took = Vec::new();
            while !built.load(std::sync::atomic::Ordering::SeqCst) {
                revision += 1;
                let started = Instant::now();
                propose(vec![account_record(now, revision, accounts + took.len())]).await;
                took.push(started.elapsed());
            }
            (took.len(), percentiles(took))
        }
    );
    let snapshot_disk = disk_mib(&data);
    node.shutdown().await.unwrap();

    let restart = Instant::now();
    let node = start(&data).await;
    let started_in = restart.elapsed();
    let to_first_check = first_allowed_check(&node, accounts - 1).await + started_in;
    let restarted_rss = resident_mib();
    // A spread of cold accounts, each a fresh view build.
    let cold = Instant::now();
    for account in (0..accounts).step_by((accounts / 100).max(1)) {
        first_allowed_check(&node, account).await;
    }
    let cold_each = cold.elapsed() / 100;
    let disk = disk_mib(&data);
    node.shutdown().await.unwrap();
    let trees = logical_mib_by_tree(&data);

    println!("region scale: {accounts} accounts x {ENTITLEMENTS_PER_ACCOUNT} = {entitlements} entitlements");
    println!(
        "  load through the region's log: {:.1} s ({:.0} entitlements/s)",
        load.as_secs_f64(),
        entitlements as f64 / load.as_secs_f64()
    );
    println!("  first check after the load: {first:?}");
    println!("  resident memory: {baseline:.0} MiB before, {loaded_rss:.0} MiB after loading");
    println!(
        "  on disk: {loaded_disk:.0} MiB after loading; {snapshot_disk:.0} MiB after a snapshot (built in {snapshot_took:?}) purged the log; {disk:.0} MiB after the restart"
    );
    println!(
        "  while the snapshot was built: {written_meanwhile} records applied one at a time: {slowest_write}"
    );
    println!("  stored keys and values by sled tree (the rest is sled's own overhead):");
    for (tree, mib) in trees {
        println!("    {tree}: {mib:.1} MiB");
    }
    println!(
        "  restart: node started in {started_in:?}, first check answered {to_first_check:?} after start; {restarted_rss:.0} MiB resident"
    );
    println!("  a cold account's first check (connect + view build): {cold_each:?}");
    if let Ok(redis) = std::env::var("TOLLGATE_SCALE_REDIS") {
        let (rss, used) = redis_memory_mib(&redis, now, accounts);
        println!(
            "  Redis holding the same records as hashes: {rss:.0} MiB resident ({used:.0} MiB used); node/Redis resident: {:.2} after loading, {:.2} after the restart",
            loaded_rss / rss,
            restarted_rss / rss
        );
    }
}
