//! Disks that fail and machines that lose power, with real nodes on
//! 127.0.0.1 whose storage is a memory disk ([`MemDisk`]): an fsync that
//! fails, a write the disk refuses, and power lost on two of three nodes at
//! once with part of what they wrote since their last flush gone.
//!
//! The invariant each test holds: a write the cluster acknowledged is on
//! every node after the faults heal (a majority had made it durable before
//! it was acknowledged, whichever node's disk failed), and a node whose disk
//! failed comes back on what it flushed.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure};
use common::{
    expect_value, init_tracing, put, read_local_over_grpc, write_over_grpc, Cluster, DEADLINE,
};
use tollgate_raft::store::Faults;
use tollgate_raft::NodeId;
use tollgate_testkit::wait_until;
use tracing::info;

fn follower_of(cluster: &Cluster, leader: NodeId) -> NodeId {
    *cluster
        .nodes
        .keys()
        .find(|id| **id != leader)
        .expect("a cluster of three has followers")
}

/// A leader replicates an entry while its own flush runs (the vendored
/// openraft's change), so a write may still be acknowledged when the
/// leader's fsync fails: by the two followers, which hold it durably. What
/// must hold is that nothing acknowledged is lost, and that the leader,
/// whose disk failed, stops and comes back on what it flushed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_fsync_fails_loses_no_acknowledged_write_and_the_cluster_moves_on(
) -> anyhow::Result<()> {
    init_tracing();
    let mut cluster = Cluster::in_memory(&[1, 2, 3], |_| {}).await?;
    let before = cluster.write(put("before", "1")).await?;
    let leader = cluster.leader().await?;

    info!(
        leader,
        "Failing the leader's fsync, then writing through it."
    );
    let disk = cluster.disk(leader)?;
    disk.set_faults(Faults {
        fail_flushes: true,
        ..Faults::default()
    });
    let answer =
        tokio::time::timeout(DEADLINE, cluster.node(leader)?.write(put("during", "1"))).await;
    let acknowledged = match answer {
        Ok(Ok(outcome)) => {
            info!(?outcome, "The followers committed the write.");
            true
        }
        Ok(Err(error)) => {
            info!(%error, "The leader refused the write.");
            false
        }
        Err(_) => bail!("the leader neither answered nor failed the write within {DEADLINE:?}"),
    };
    ensure!(
        disk.stats().failed_flushes >= 1,
        "the fault was never hit: {disk:?}"
    );

    info!("Proving that the other two elect a leader and go on.");
    cluster.power_loss(leader, 0).await?;
    let after = cluster.write(put("after", "1")).await?;
    ensure!(after.log_index > before.log_index);

    info!("Proving that the failed node comes back on what it flushed and catches up.");
    cluster.start(leader).await?;
    let state = cluster.converged(after.log_index).await?;
    expect_value(&state, "before", "1")?;
    expect_value(&state, "after", "1")?;
    if acknowledged {
        expect_value(&state, "during", "1")?;
    }
    cluster.shutdown_all().await
}

/// A leader may have sent entries that its own disk never made durable, so
/// after a restart it must not lead its old term again: it would write
/// different entries under log ids its followers already hold (the Raft
/// simulation lost acknowledged writes this way, seeds 11 and 255). The
/// followers are kept from campaigning, so only the restarted node can
/// start a term: resuming the old one fails this test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_leader_campaigns_for_a_new_term() -> anyhow::Result<()> {
    init_tracing();
    let mut cluster = Cluster::in_memory(&[1, 2, 3], |_| {}).await?;
    let before = cluster.write(put("before", "1")).await?;
    let leader = cluster.leader().await?;
    let term = cluster.node(leader)?.metrics().current_term;
    for (id, node) in &cluster.nodes {
        if *id != leader {
            node.raft().runtime_config().elect(false);
        }
    }

    info!(
        leader,
        term, "Power-cycling the leader, keeping its whole disk."
    );
    cluster.power_loss(leader, usize::MAX).await?;
    cluster.start(leader).await?;
    let restarted = wait_until(
        "the restarted node to lead a new term",
        DEADLINE,
        || async {
            let metrics = cluster.node(leader).map_err(|e| e.to_string())?.metrics();
            if metrics.state.is_leader() && metrics.current_term > term {
                Ok(metrics.current_term)
            } else {
                Err(format!(
                    "node {leader}: {:?} in term {} (it led term {term})",
                    metrics.state, metrics.current_term
                ))
            }
        },
    )
    .await?;
    info!(restarted, "The restarted node leads a new term.");

    let after = cluster.write(put("after", "1")).await?;
    ensure!(after.log_index > before.log_index);
    let state = cluster.converged(after.log_index).await?;
    expect_value(&state, "before", "1")?;
    expect_value(&state, "after", "1")?;
    cluster.shutdown_all().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_whose_disk_refuses_writes_stops_and_catches_up_once_mended(
) -> anyhow::Result<()> {
    init_tracing();
    let mut cluster = Cluster::in_memory(&[1, 2, 3], |_| {}).await?;
    let leader = cluster.leader().await?;
    let follower = follower_of(&cluster, leader);

    info!(
        follower,
        "Proving that a follower's refused appends do not stop the cluster."
    );
    cluster.disk(follower)?.set_faults(Faults {
        fail_writes: true,
        ..Faults::default()
    });
    let mut last = 0;
    for i in 0..20 {
        last = cluster.write(put(format!("k{i}"), "1")).await?.log_index;
    }
    ensure!(
        cluster.disk(follower)?.stats().failed_writes >= 1,
        "the follower's disk was never asked to write"
    );

    info!(
        follower,
        "Proving that the follower, restarted on a mended disk, has every write."
    );
    cluster.power_loss(follower, usize::MAX).await?;
    cluster.start(follower).await?;
    let state = cluster.converged(last).await?;
    for i in 0..20 {
        expect_value(&state, &format!("k{i}"), "1")?;
    }
    cluster.shutdown_all().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_lost_on_two_nodes_mid_burst_loses_no_acknowledged_write() -> anyhow::Result<()> {
    init_tracing();
    let mut cluster = Cluster::in_memory(&[1, 2, 3], |_| {}).await?;
    cluster.leader().await?;
    let addrs: Vec<String> = cluster.addrs.values().map(|a| a.to_string()).collect();

    // How much of what each node wrote since its last flush survives: none,
    // a little, or all of it; different for the leader and the follower.
    for (round, kept) in [(0usize, [0usize, 3]), (1, [1, 0]), (2, [usize::MAX, 2])] {
        let leader = cluster.leader().await?;
        let follower = follower_of(&cluster, leader);
        info!(
            round,
            leader,
            follower,
            ?kept,
            "Proving that power lost mid-burst on two nodes keeps every acknowledged write."
        );

        let acked = Arc::new(Mutex::new(BTreeSet::new()));
        let writers: Vec<_> = (0..4)
            .map(|writer| {
                let addrs = addrs.clone();
                let acked = acked.clone();
                tokio::spawn(async move {
                    for i in 0..40 {
                        let key = format!("r{round}-w{writer}-{i}");
                        let deadline = Instant::now() + Duration::from_secs(2);
                        if write_over_grpc(&addrs, writer, &key, deadline)
                            .await
                            .is_ok()
                        {
                            acked.lock().expect("no writer panics").insert(key);
                        }
                    }
                })
            })
            .collect();
        // Cut the power once the burst is under way.
        tollgate_testkit::wait_until("the burst to have written", DEADLINE, || {
            let written = acked.lock().expect("no writer panics").len();
            async move {
                match written >= 10 {
                    true => Ok(()),
                    false => Err(format!("{written} writes acknowledged")),
                }
            }
        })
        .await?;
        cluster.power_loss(leader, kept[0]).await?;
        cluster.power_loss(follower, kept[1]).await?;
        cluster.start(leader).await?;
        cluster.start(follower).await?;
        for writer in writers {
            writer.await?;
        }

        let last = cluster.write(put(format!("r{round}-end"), "1")).await?;
        let state = cluster.converged(last.log_index).await?;
        let acked = acked.lock().expect("no writer panics").clone();
        info!(
            round,
            acknowledged = acked.len(),
            "Checking every acknowledged write."
        );
        for key in &acked {
            expect_value(&state, key, "1")?;
        }
    }
    cluster.shutdown_all().await
}

/// What a node applied need not survive the power (neither the commit
/// index nor the applied state is flushed on the write path), but what it
/// answered does: a node that lost power answers reads only once it has
/// caught up with a leader, and by then it is at least where it was (the
/// whole-system simulation once found a region node going back a revision
/// after a power loss). Round 0 cuts the leader's power, the others a
/// follower's, while the leader's heartbeats are held back: that follower
/// comes back behind where it was and must not answer until the leader
/// speaks again. Every sample that says "serving" must show the node at
/// least where it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_loses_power_answers_only_once_back_where_it_had_applied() -> anyhow::Result<()>
{
    init_tracing();
    let mut cluster = Cluster::in_memory(&[1, 2, 3], |_| {}).await?;
    for round in 0..3 {
        let last = cluster.write(put(format!("k{round}"), "1")).await?;
        cluster.converged(last.log_index).await?;
        let leader = cluster.leader().await?;
        let victim = match round {
            0 => leader,
            _ => follower_of(&cluster, leader),
        };
        let applied = applied_index(&cluster, victim)?;
        ensure!(
            applied >= Some(last.log_index),
            "node {victim} applied {applied:?}"
        );
        let held = round > 0;
        if held {
            cluster
                .node(leader)?
                .raft()
                .runtime_config()
                .heartbeat(false);
        }
        info!(
            round,
            victim,
            ?applied,
            "Cutting the power with nothing unflushed kept."
        );
        cluster.power_loss(victim, 0).await?;
        cluster.start(victim).await?;
        let serving = cluster.node(victim)?.serving();
        if held {
            // Nothing was flushed after the last apply, and no leader has
            // spoken since the start.
            let at_start = applied_index(&cluster, victim)?;
            ensure!(
                at_start < applied,
                "node {victim} came back at {at_start:?}, not behind {applied:?}: the power loss kept what it applied"
            );
            ensure!(
                !serving.is_serving(),
                "node {victim} answers reads at {at_start:?}, below the {applied:?} it had applied before the power loss"
            );
            cluster
                .node(leader)?
                .raft()
                .runtime_config()
                .heartbeat(true);
        }
        let caught_up = wait_until(
            "the restarted node to answer reads again",
            DEADLINE,
            || async {
                // Serving first: what it applied only grows after.
                let open = serving.is_serving();
                let now = applied_index(&cluster, victim).map_err(|e| e.to_string())?;
                match (open, now >= applied) {
                    (true, true) => Ok(Ok(now)),
                    (true, false) => Ok(Err(format!(
                        "node {victim} answers reads at {now:?}, below the {applied:?} it had applied before the power loss"
                    ))),
                    (false, _) => Err(format!("not serving yet, applied {now:?} (was {applied:?})")),
                }
            },
        )
        .await?;
        caught_up.map_err(anyhow::Error::msg)?;
        cluster.leader().await?;
    }
    cluster.shutdown_all().await
}

/// A clean stop leaves everything applied on disk and says so: the node
/// answers reads at once when it starts again, even alone. The same node,
/// after a crash and alone, answers nothing (no leader can tell it how far
/// to catch up), over gRPC as to its own region.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stop_serves_at_once_and_a_crash_waits_for_a_leader() -> anyhow::Result<()> {
    init_tracing();
    let mut cluster = Cluster::in_memory(&[1, 2, 3], |_| {}).await?;
    let last = cluster.write(put("k", "v")).await?;
    cluster.converged(last.log_index).await?;
    for id in [1, 2, 3] {
        cluster.stop(id).await?;
    }
    cluster.start(1).await?;
    let node = cluster.node(1)?;
    ensure!(
        node.serving().is_serving(),
        "node 1 stopped cleanly but does not answer reads alone"
    );
    ensure!(applied_index(&cluster, 1)? >= Some(last.log_index));
    let read = read_local_over_grpc(&cluster, 1, "k").await;
    ensure!(
        matches!(&read, Ok(Some(v)) if v == b"v"),
        "a read of a cleanly stopped node: {read:?}"
    );

    cluster.crash(1).await?;
    cluster.start(1).await?;
    ensure!(
        !cluster.node(1)?.serving().is_serving(),
        "node 1 crashed and is alone, yet answers reads"
    );
    let read = read_local_over_grpc(&cluster, 1, "k").await;
    ensure!(
        matches!(&read, Err(status) if status.code() == tonic::Code::Unavailable),
        "a read of a crashed node with no leader: {read:?}"
    );

    // The others come back; a leader is elected and reads open.
    cluster.start(2).await?;
    cluster.start(3).await?;
    cluster.leader().await?;
    let serving = cluster.node(1)?.serving();
    wait_until("node 1 to answer reads again", DEADLINE, || async {
        match serving.is_serving() {
            true => Ok(()),
            false => Err("not serving".to_string()),
        }
    })
    .await?;
    ensure!(applied_index(&cluster, 1)? >= Some(last.log_index));
    cluster.shutdown_all().await
}

fn applied_index(cluster: &Cluster, id: NodeId) -> anyhow::Result<Option<u64>> {
    Ok(cluster.node(id)?.view().last_applied()?.map(|l| l.index))
}
