//! Multi-node tests: real nodes on 127.0.0.1, in this process, talking gRPC.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{anyhow, ensure};
use common::{expect_value, init_tracing, put, write_over_grpc, Cluster, DEADLINE};
use tollgate_proto::cluster::v1 as pb;
use tollgate_proto::cluster::v1::cluster_admin_client::ClusterAdminClient;
use tollgate_raft::server::{ERROR_CODE_KEY, LEADER_ADDR_KEY};
use tollgate_raft::{KvCommand, KvResponse};
use tollgate_testkit::wait_until;
use tracing::info;

async fn admin(addr: &str) -> anyhow::Result<ClusterAdminClient<tonic::transport::Channel>> {
    Ok(ClusterAdminClient::connect(format!("http://{addr}")).await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_every_acked_write_is_on_all_three() -> anyhow::Result<()> {
    init_tracing();
    let cluster = Cluster::three().await?;
    let leader = cluster.leader().await?;

    info!("Phase 1 proves: writes sent to any node (followers forward) are acked by the leader and applied on all three.");
    let mut last = 0;
    for i in 0..30u64 {
        let via = [1, 2, 3][(i % 3) as usize];
        let out = cluster
            .node(via)?
            .write(put(format!("k{i}"), format!("v{i}")))
            .await?;
        ensure!(
            out.leader_id == leader,
            "write {i} acked by {} not leader {leader}",
            out.leader_id
        );
        last = last.max(out.log_index);
    }
    let state = cluster.converged(last).await?;
    for i in 0..30 {
        expect_value(&state, &format!("k{i}"), &format!("v{i}"))?;
    }

    info!("Phase 2 proves: 200 concurrent writers are all acked and applied everywhere, sharing log entries; each follower flushes its appends inline, the leader on its flusher thread.");
    let leader_node = cluster.node(leader)?;
    let flushes = |id: u64| -> anyhow::Result<(u64, u64)> {
        let stats = cluster.node(id)?.flush_stats();
        Ok((
            stats.appends.load(Ordering::Relaxed),
            stats.inline_appends.load(Ordering::Relaxed),
        ))
    };
    let before: Vec<(u64, (u64, u64))> = cluster
        .nodes
        .keys()
        .map(|id| Ok((*id, flushes(*id)?)))
        .collect::<anyhow::Result<_>>()?;
    let writes = (0..200).map(|i| leader_node.write(put(format!("c{i}"), format!("{i}"))));
    let outcomes = futures::future::join_all(writes).await;
    let mut indexes = BTreeSet::new();
    for outcome in outcomes {
        let outcome = outcome?;
        indexes.insert(outcome.log_index);
        last = last.max(outcome.log_index);
    }
    info!(
        entries = indexes.len(),
        writes = 200,
        "Concurrent writes were batched into entries."
    );
    let state = cluster.converged(last).await?;
    for i in 0..200 {
        expect_value(&state, &format!("c{i}"), &format!("{i}"))?;
    }
    for (id, (appends_before, inline_before)) in before {
        let (appends, inline) = flushes(id)?;
        let (appends, inline) = (appends - appends_before, inline - inline_before);
        ensure!(appends > 0, "node {id} appended nothing in phase 2");
        if id == leader {
            ensure!(
                inline == 0,
                "the leader flushed {inline} of {appends} appends inline, holding up replication"
            );
        } else {
            ensure!(
                inline == appends,
                "follower {id} flushed {inline} of {appends} appends inline"
            );
        }
    }

    info!("Phase 3 proves: the admin service forwards a follower's ClientWrite to the leader over gRPC.");
    let follower = *cluster
        .nodes
        .keys()
        .find(|id| **id != leader)
        .ok_or_else(|| anyhow!("no follower"))?;
    let mut client = admin(cluster.node(follower)?.addr()).await?;
    let command = serde_json::to_vec(&put("via-grpc", "yes"))?;
    let reply = client
        .client_write(pb::ClientWriteRequest {
            command: command.clone(),
            forward_hops: 0,
        })
        .await?;
    let reply = reply.into_inner();
    let response: KvResponse = serde_json::from_slice(&reply.response)?;
    ensure!(
        response.changed && reply.leader_id == leader,
        "unexpected reply {reply:?}"
    );
    let state = cluster.converged(reply.log_index).await?;
    expect_value(&state, "via-grpc", "yes")?;

    info!("Phase 4 proves: a follower that may not forward (hop limit reached) answers NOT_LEADER naming the leader's address.");
    let status = client
        .client_write(pb::ClientWriteRequest {
            command,
            forward_hops: 1,
        })
        .await
        .err()
        .ok_or_else(|| anyhow!("a follower accepted a write past the hop limit"))?;
    let code = status
        .metadata()
        .get(ERROR_CODE_KEY)
        .and_then(|v| v.to_str().ok());
    let addr = status
        .metadata()
        .get(LEADER_ADDR_KEY)
        .and_then(|v| v.to_str().ok());
    ensure!(code == Some("ERROR_CODE_NOT_LEADER"), "code {code:?}");
    ensure!(
        addr == Some(cluster.node(leader)?.addr()),
        "leader addr {addr:?}"
    );

    info!("Phase 5 proves: Status over gRPC reports the leader and the three voters.");
    let status = client.status(pb::StatusRequest {}).await?.into_inner();
    ensure!(
        status.leader_id == leader && status.voters.len() == 3,
        "status {status:?}"
    );
    ensure!(
        status.state == pb::ServerState::Follower as i32,
        "status {status:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_stops_new_leader_takes_writes_old_leader_rejoins() -> anyhow::Result<()> {
    init_tracing();
    let mut cluster = Cluster::three().await?;
    let mut last = 0;
    for i in 0..20 {
        last = last.max(
            cluster
                .write(put(format!("before{i}"), "1"))
                .await?
                .log_index,
        );
    }
    let old_leader = cluster.leader().await?;

    info!(
        old_leader,
        "Phase 1 proves: after the leader stops, a new leader is elected and writes continue."
    );
    let stopped_at = Instant::now();
    cluster.stop(old_leader).await?;
    let first = cluster.write(put("first-after-stop", "1")).await?;
    info!(
        elapsed_ms = stopped_at.elapsed().as_millis() as u64,
        "First write acked after the leader stopped."
    );
    let new_leader = cluster.leader().await?;
    ensure!(new_leader != old_leader, "leader did not change");
    last = last.max(first.log_index);
    for i in 0..20 {
        last = last.max(
            cluster
                .write(put(format!("after{i}"), "2"))
                .await?
                .log_index,
        );
    }

    info!("Phase 2 proves: the old leader restarts from its data directory, rejoins as follower and converges.");
    cluster.start(old_leader).await?;
    let state = cluster.converged(last).await?;
    for i in 0..20 {
        expect_value(&state, &format!("before{i}"), "1")?;
        expect_value(&state, &format!("after{i}"), "2")?;
    }
    expect_value(&state, "first-after-stop", "1")?;
    ensure!(cluster.node(old_leader)?.metrics().current_leader == Some(new_leader));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_three_restart_from_disk_with_same_state_and_membership() -> anyhow::Result<()> {
    init_tracing();
    let mut cluster = Cluster::three().await?;

    info!("Phase 1 proves nothing yet: it writes 40 acknowledged values, some overwritten and deleted.");
    let mut last = 0;
    for i in 0..40 {
        last = last.max(
            cluster
                .write(put(format!("k{i}"), format!("v{i}")))
                .await?
                .log_index,
        );
    }
    last = last.max(cluster.write(put("k0", "overwritten")).await?.log_index);
    last = last.max(
        cluster
            .write(KvCommand::Delete { key: "k1".into() })
            .await?
            .log_index,
    );
    let before = cluster.converged(last).await?;
    let membership_before = cluster.membership(1)?;

    info!("Phase 2 proves: a clean stop leaves every apply in sled, and after all three restart from disk, state and membership are the same.");
    cluster.shutdown_all().await?;
    for id in [1, 2, 3] {
        // Opened without Raft: nothing applies the log again, so this is
        // what the stop wrote (applies wait in memory while a node runs).
        let config = tollgate_raft::StorageConfig::new(cluster.data_dir(id));
        let (_log, sm) =
            tollgate_raft::open_storage(&config, std::sync::Arc::new(tollgate_raft::KvLogic))?;
        let view = sm.view();
        let applied = view.last_applied()?.map(|l| l.index);
        ensure!(
            applied >= Some(last),
            "node {id} stopped cleanly with last_applied {applied:?} in sled, below {last}"
        );
        ensure!(view.dump()? == before, "node {id}'s stored state differs");
    }
    for id in [1, 2, 3] {
        cluster.start(id).await?;
    }
    cluster.leader().await?;
    let after = cluster.converged(last).await?;
    ensure!(after == before, "state differs after restart");
    expect_value(&after, "k0", "overwritten")?;
    ensure!(
        !after.contains_key(b"k1".as_slice()),
        "deleted key came back"
    );
    for id in [1, 2, 3] {
        ensure!(
            cluster.membership(id)? == membership_before,
            "membership of {id} changed"
        );
    }

    info!("Phase 3 proves: the restarted cluster takes new writes.");
    let out = cluster.write(put("after-restart", "1")).await?;
    ensure!(out.log_index > last, "log index went backwards");
    Ok(())
}

fn small_snapshots(config: &mut tollgate_raft::NodeConfig) {
    config.snapshot_logs_since_last = 20;
    config.max_in_snapshot_log_to_keep = 0;
    // Several chunks per snapshot.
    config.snapshot_chunk_bytes_max = 1024;
}

/// openraft 0.9 counts entries; a few large entries (a region catching up
/// on the origin) must still lead to a snapshot and a purged log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_grown_by_bytes_is_snapshotted_on_every_node() -> anyhow::Result<()> {
    init_tracing();
    let cluster = Cluster::formed(&[1, 2, 3], |config| {
        config.snapshot_logs_since_last = 10_000;
        config.max_in_snapshot_log_to_keep = 0;
        config.snapshot_log_bytes_max = 1024 * 1024;
    })
    .await?;
    let leader = cluster.leader().await?;
    let before = cluster.node(leader)?.raft().metrics().borrow().snapshot;
    ensure!(before.is_none(), "a snapshot before any write: {before:?}");
    // 16 entries of 120 KiB that do not compress (the log store keeps
    // entries LZ4-compressed): far from 10,000 entries, past 1 MiB.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut last = 0;
    for i in 0..16 {
        let value: String = (0..120 * 1024)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                char::from(b'a' + (seed % 26) as u8)
            })
            .collect();
        last = cluster
            .write(put(format!("big{i:02}"), value))
            .await?
            .log_index;
    }
    for id in [1, 2, 3] {
        let m = cluster
            .node(id)?
            .wait_until(DEADLINE, "a snapshot and a purged log", |m| {
                m.snapshot.is_some() && m.purged.is_some()
            })
            .await?;
        ensure!(
            m.snapshot.is_some_and(|s| s.index <= last),
            "node {id}: snapshot {:?} beyond the last write {last}",
            m.snapshot
        );
    }
    let state = cluster.converged(last).await?;
    ensure!(state.len() == 16, "state has {} keys", state.len());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fourth_node_catches_up_by_snapshot_then_membership_changes() -> anyhow::Result<()> {
    init_tracing();
    let mut cluster = Cluster::formed(&[1, 2, 3], small_snapshots).await?;
    let value = "x".repeat(200);

    info!("Phase 1 proves: the leader snapshots and purges its log after the configured number of entries.");
    let mut last = 0;
    for i in 0..70 {
        last = last.max(
            cluster
                .write(put(format!("k{i:03}"), value.clone()))
                .await?
                .log_index,
        );
    }
    let leader = cluster.leader().await?;
    let metrics = cluster
        .node(leader)?
        .wait_until(DEADLINE, "log purged", |m| {
            m.purged.is_some_and(|p| p.index >= 20)
        })
        .await?;
    let purged = metrics.purged.map(|p| p.index).unwrap_or(0);

    info!(purged, "Phase 2 proves: a new node added as learner after the purge catches up through a chunked snapshot.");
    cluster.start(4).await?;
    let addr4 = cluster.addrs[&4].to_string();
    cluster.node(leader)?.add_learner(4, &addr4, true).await?;
    let m4 = cluster
        .node(4)?
        .wait_until(DEADLINE, "learner applied everything", |m| {
            m.last_applied.is_some_and(|l| l.index >= last)
        })
        .await?;
    ensure!(
        m4.snapshot.is_some_and(|s| s.index >= purged),
        "node 4 has no snapshot covering {purged}: {m4:?}"
    );
    let state = cluster.converged(last).await?;
    ensure!(state.len() == 70, "state has {} keys", state.len());

    info!("Phase 3 proves: the learner is promoted to voter.");
    cluster
        .node(leader)?
        .change_membership(BTreeSet::from([1, 2, 3, 4]), false)
        .await?;
    wait_until("node 4 to see itself as a voter", DEADLINE, || async {
        let (voters, _) = cluster.membership(4)?;
        match voters.contains(&4) {
            true => Ok(()),
            false => Err(anyhow!("voters {voters:?}")),
        }
    })
    .await?;

    info!("Phase 4 proves: a voter is removed and the remaining three keep committing.");
    let victim = *[1, 2, 3, 4]
        .iter()
        .find(|id| **id != leader)
        .ok_or_else(|| anyhow!("no victim"))?;
    cluster.node(leader)?.remove_node(victim).await?;
    let (voters, learners) = cluster.membership(leader)?;
    ensure!(
        !voters.contains(&victim) && !learners.contains(&victim),
        "{victim} still a member"
    );
    cluster.stop(victim).await?;
    let out = cluster.write(put("after-remove", "1")).await?;
    let state = cluster.converged(out.log_index).await?;
    expect_value(&state, "after-remove", "1")?;

    info!("Phase 5 proves: a learner (read capacity) is added, serves the state, and is removed again.");
    cluster.start(5).await?;
    let addr5 = cluster.addrs[&5].to_string();
    cluster.node(leader)?.add_learner(5, &addr5, true).await?;
    let state = cluster.converged(out.log_index).await?;
    expect_value(&state, "after-remove", "1")?;
    cluster.node(leader)?.remove_node(5).await?;
    let (voters, learners) = cluster.membership(leader)?;
    ensure!(
        !voters.contains(&5) && !learners.contains(&5),
        "5 still a member"
    );
    cluster.stop(5).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_crash_mid_burst_recovers_and_converges() -> anyhow::Result<()> {
    init_tracing();
    let mut cluster = Cluster::three().await?;
    let addrs: Vec<String> = cluster.addrs.values().map(|a| a.to_string()).collect();
    let acked: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();

    info!("Phase 1 proves nothing yet: 8 gRPC writers start a burst against all three nodes.");
    let mut writers = Vec::new();
    for w in 0..8 {
        let addrs = addrs.clone();
        let acked = acked.clone();
        writers.push(tokio::spawn(async move {
            let deadline = Instant::now() + DEADLINE * 2;
            for i in 0..40 {
                let key = format!("w{w}-{i}");
                // Each retry goes to the next node.
                let log_index = write_over_grpc(&addrs, w, &key, deadline).await?;
                acked
                    .lock()
                    .map_err(|_| anyhow!("poisoned"))?
                    .push((key, log_index));
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

    let victim = cluster.leader().await?;
    info!(
        victim,
        "Phase 2 proves: the leader is dropped without shutdown mid-burst and the burst goes on."
    );
    cluster.crash(victim).await?;
    let at_crash = acked_count();
    wait_until("30 more acked writes after the crash", DEADLINE, || async {
        match acked_count() {
            acked if acked >= at_crash + 30 => Ok(()),
            acked => Err(format!("{} acked since the crash", acked - at_crash)),
        }
    })
    .await?;

    info!("Phase 3 proves: the crashed node restarts from its data directory and converges; no acked write is lost.");
    cluster.start(victim).await?;
    for writer in writers {
        writer.await??;
    }
    let acked = acked.lock().map_err(|_| anyhow!("poisoned"))?.clone();
    let last = acked.iter().map(|(_, i)| *i).max().unwrap_or(0);
    let state = cluster.converged(last).await?;
    ensure!(acked.len() == 320, "{} writes acked", acked.len());
    for (key, _) in &acked {
        expect_value(&state, key, "1")?;
    }
    Ok(())
}

/// The append stream a leader keeps to each follower, from outside: each
/// request is answered in order (a stale leader's heartbeat with the vote
/// that beats it, a current one with success), and a malformed request
/// ends the stream with INVALID_ARGUMENT, the follower unharmed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_append_stream_answers_in_order_and_ends_on_a_malformed_request() -> anyhow::Result<()>
{
    use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse};
    use tollgate_proto::cluster::v1::raft_service_client::RaftServiceClient;
    use tollgate_raft::{KvLogic, NodeId, TypeConfig};

    init_tracing();
    let cluster = Cluster::three().await?;
    let leader = cluster.leader().await?;
    let follower = *cluster
        .nodes
        .keys()
        .find(|id| **id != leader)
        .ok_or_else(|| anyhow!("no follower"))?;
    let metrics = cluster.node(leader)?.raft().metrics().borrow().clone();
    let term = metrics.current_term;
    let heartbeat = |term: u64| -> anyhow::Result<pb::AppendEntriesRequest> {
        let request = AppendEntriesRequest::<TypeConfig<KvLogic>> {
            vote: openraft::Vote::new_committed(term, leader),
            prev_log_id: None,
            leader_commit: None,
            entries: Vec::new(),
        };
        Ok(pb::AppendEntriesRequest {
            payload: serde_json::to_vec(&request)?,
        })
    };
    let requests = vec![
        heartbeat(term - 1)?,
        heartbeat(term)?,
        pb::AppendEntriesRequest {
            payload: b"{not json".to_vec(),
        },
    ];
    let channel = tonic::transport::Endpoint::from_shared(format!(
        "http://{}",
        cluster.node(follower)?.addr()
    ))?
    .connect()
    .await?;
    let mut answers = RaftServiceClient::new(channel.clone())
        .append_entries_stream(tokio_stream::iter(requests))
        .await?
        .into_inner();
    let answer =
        |response: Option<pb::RaftResponse>| -> anyhow::Result<AppendEntriesResponse<NodeId>> {
            let response = response.ok_or_else(|| anyhow!("the stream ended early"))?;
            match response.result {
                Some(pb::raft_response::Result::Ok(bytes)) => Ok(serde_json::from_slice(&bytes)?),
                other => Err(anyhow!("not a success: {other:?}")),
            }
        };
    let stale = answer(answers.message().await?)?;
    ensure!(
        matches!(stale, AppendEntriesResponse::HigherVote(_)),
        "a heartbeat of term {} was answered {stale:?}",
        term - 1
    );
    let current = answer(answers.message().await?)?;
    ensure!(
        matches!(current, AppendEntriesResponse::Success),
        "a heartbeat of the current term was answered {current:?}"
    );
    let status = answers
        .message()
        .await
        .err()
        .ok_or_else(|| anyhow!("a malformed request was answered"))?;
    ensure!(
        status.code() == tonic::Code::InvalidArgument,
        "a malformed request ended the stream with {status:?}"
    );
    info!("The follower still takes the leader's writes.");
    let out = cluster
        .node(leader)?
        .write(put("after-the-stream", "yes"))
        .await?;
    let state = cluster.converged(out.log_index).await?;
    expect_value(&state, "after-the-stream", "yes")?;

    info!("A follower that stops ends the streams open to it, cleanly: its server's drain does not wait on them.");
    let (open, requests) = tokio::sync::mpsc::channel(1);
    open.send(heartbeat(term)?).await?;
    let mut answers = RaftServiceClient::new(channel)
        .append_entries_stream(tokio_stream::wrappers::ReceiverStream::new(requests))
        .await?
        .into_inner();
    answer(answers.message().await?)?;
    let mut cluster = cluster;
    let node = cluster
        .nodes
        .remove(&follower)
        .ok_or_else(|| anyhow!("no follower {follower}"))?;
    let stopped = tokio::spawn(node.shutdown());
    // Still open from this side (`open` is held): only the server ends it,
    // with a clean end of stream; a connection cut at the drain's timeout
    // would be an error instead.
    let end = tokio::time::timeout(DEADLINE, answers.message())
        .await
        .map_err(|_| anyhow!("the stream to a stopping follower stayed open for {DEADLINE:?}"))?;
    ensure!(
        matches!(end, Ok(None)),
        "the stream to a stopping follower ended with {end:?}"
    );
    stopped.await??;
    drop(open);
    Ok(())
}
