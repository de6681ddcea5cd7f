//! Crash safety with real processes: three `tollgate-raft-testnode`
//! processes on 127.0.0.1, the leader killed with SIGKILL in the middle of a
//! write burst, restarted from its data directory. Every acknowledged write
//! must be readable on every node afterwards.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{anyhow, ensure, Context};
use common::{init_tracing, write_over_grpc, DEADLINE};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tollgate_proto::cluster::v1 as pb;
use tollgate_proto::cluster::v1::cluster_admin_client::ClusterAdminClient;
use tollgate_testkit::wait_until;
use tracing::info;

type Client = ClusterAdminClient<tonic::transport::Channel>;

struct Proc {
    child: Child,
    addr: String,
}

async fn spawn_node(id: u64, data_dir: &Path, listen: &str) -> anyhow::Result<Proc> {
    let log = std::fs::File::create(data_dir.with_extension("log"))?;
    let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate-raft-testnode"))
        .args(["--id", &id.to_string(), "--listen", listen])
        .arg("--data-dir")
        .arg(data_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .context("spawning tollgate-raft-testnode")?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(DEADLINE, lines.next_line())
        .await
        .context("node did not report READY in time")??
        .ok_or_else(|| anyhow!("node {id} exited before READY"))?;
    let addr = line
        .strip_prefix("READY ")
        .ok_or_else(|| anyhow!("unexpected line {line:?}"))?
        .to_string();
    Ok(Proc { child, addr })
}

async fn client(addr: &str) -> anyhow::Result<Client> {
    Ok(ClusterAdminClient::connect(format!("http://{addr}")).await?)
}

async fn status(addr: &str) -> Option<pb::StatusResponse> {
    let mut c = client(addr).await.ok()?;
    Some(c.status(pb::StatusRequest {}).await.ok()?.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_with_sigkill_mid_burst_recovers_and_converges() -> anyhow::Result<()> {
    init_tracing();
    let base = tempfile::tempdir()?;
    let dir = |id: u64| -> PathBuf { base.path().join(format!("node-{id}")) };
    let mut procs: BTreeMap<u64, Proc> = BTreeMap::new();
    for id in 1..=3 {
        procs.insert(id, spawn_node(id, &dir(id), "127.0.0.1:0").await?);
    }
    let addrs: BTreeMap<u64, String> = procs.iter().map(|(id, p)| (*id, p.addr.clone())).collect();
    let members = addrs
        .iter()
        .map(|(id, addr)| pb::Member {
            node_id: *id,
            addr: addr.clone(),
        })
        .collect();
    client(&addrs[&1])
        .await?
        .initialize(pb::InitializeRequest { members })
        .await?;
    let leader = wait_until("node 1 to know a leader", DEADLINE, || async {
        match status(&addrs[&1]).await {
            Some(s) if s.leader_id != 0 => Ok(s.leader_id),
            Some(s) => Err(format!("no leader at term {}", s.current_term)),
            None => Err("no status from node 1".to_string()),
        }
    })
    .await?;

    info!(
        leader,
        "Phase 1 proves nothing yet: 8 writers start a burst of 40 writes each over gRPC."
    );
    let acked: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
    let all_addrs: Vec<String> = addrs.values().cloned().collect();
    let mut writers = Vec::new();
    for w in 0..8usize {
        let addrs = all_addrs.clone();
        let acked = acked.clone();
        writers.push(tokio::spawn(async move {
            let deadline = Instant::now() + DEADLINE * 2;
            for i in 0..40 {
                let key = format!("w{w}-{i}");
                // Each retry goes to the next node.
                let index = write_over_grpc(&addrs, w, &key, deadline).await?;
                acked
                    .lock()
                    .map_err(|_| anyhow!("poisoned"))?
                    .push((key, index));
            }
            anyhow::Ok(())
        }));
    }
    let acked_count = || acked.lock().map(|a| a.len()).unwrap_or(0);
    wait_until("50 acked writes", DEADLINE, || async {
        match acked_count() {
            acked if acked >= 50 => Ok(()),
            acked => Err(format!("{acked} acked")),
        }
    })
    .await?;

    info!(leader, "Phase 2 proves: the leader process is killed with SIGKILL mid-burst and the survivors keep acknowledging writes.");
    let mut victim = procs
        .remove(&leader)
        .ok_or_else(|| anyhow!("leader process missing"))?;
    victim.child.kill().await?;
    let at_kill = acked_count();
    wait_until("30 more acked writes after the kill", DEADLINE, || async {
        match acked_count() {
            acked if acked >= at_kill + 30 => Ok(()),
            acked => Err(format!("{} acked since the kill", acked - at_kill)),
        }
    })
    .await?;

    info!("Phase 3 proves: the killed node restarts from its data directory and every acked write is on every node.");
    procs.insert(
        leader,
        spawn_node(leader, &dir(leader), &victim.addr).await?,
    );
    for writer in writers {
        writer.await??;
    }
    let acked = acked.lock().map_err(|_| anyhow!("poisoned"))?.clone();
    ensure!(acked.len() == 320, "{} writes acked", acked.len());
    let last = acked.iter().map(|(_, i)| *i).max().unwrap_or(0);
    for addr in addrs.values() {
        wait_until(&format!("{addr} to apply {last}"), DEADLINE, || async {
            match status(addr).await {
                Some(s) if s.last_applied_index >= last => Ok(()),
                Some(s) => Err(format!("applied {}", s.last_applied_index)),
                None => Err("no status".to_string()),
            }
        })
        .await?;
        let mut c = client(addr).await?;
        // A killed node answers reads once it has caught up with a leader
        // (`tollgate_raft::recovery`), which may be a moment after it has
        // applied that far.
        wait_until(&format!("{addr} to answer reads"), DEADLINE, || {
            let mut c = c.clone();
            async move {
                c.read_local(pb::ReadLocalRequest { key: b"k".to_vec() })
                    .await
                    .map(|_| ())
                    .map_err(|status| status.to_string())
            }
        })
        .await?;
        for (key, _) in &acked {
            let r = c
                .read_local(pb::ReadLocalRequest {
                    key: key.clone().into_bytes(),
                })
                .await?
                .into_inner();
            ensure!(
                r.found && r.value == b"1",
                "{addr}: key {key} missing after recovery"
            );
        }
    }
    for p in procs.values_mut() {
        p.child.kill().await?;
    }
    Ok(())
}
