//! One run, start to end: network and nodes up, data seeded, workload and
//! nemesis for the scenario's duration, then the final heal, convergence
//! (with a deadline), the final state, the checker, the teardown.

use crate::checker;
use crate::cluster::{Cluster, Settings, Topology};
use crate::history::{now_ms, Event, Final, FinalNode, Meta, Recorder};
use crate::nemesis::{self, Scenario, Schedule};
use crate::report::RunReport;
use crate::workload::{self, Clients, Plan};
use anyhow::Context;
use reqwest::Method;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tollgate_testkit::wait_until_every;

/// Regions must catch up with the seeded origin within this long.
const CATCH_UP_DEADLINE: Duration = Duration::from_secs(120);
/// After the final heal, every node must reach the origin's head within
/// this long, or the run reports that it did not converge.
pub const CONVERGE_DEADLINE: Duration = Duration::from_secs(90);
/// A restarted or continued node counts as up for availability only after
/// this long.
const UP_GRACE_MS: u64 = 5_000;
/// Windows shorter than this in which a region failed every check are not
/// violations: two rounds of probes timing out on a loaded machine.
const UNAVAILABLE_WINDOW_MS_MIN: u64 = 2 * workload::RPC_TIMEOUT.as_millis() as u64;
/// Retries of one final check (a node just restarted may still be binding).
const FINAL_CHECK_ATTEMPTS: usize = 5;

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub scenario: Scenario,
    pub seed: u64,
    pub duration_seconds: u64,
    /// The `tollgate` binary the nodes run.
    pub binary: PathBuf,
    /// Each run gets a directory under this one.
    pub run_root: PathBuf,
    /// Overrides the plan's cap.
    pub cap: Option<u64>,
    /// The origin's `[quota] outstanding_max`.
    pub outstanding_max: u64,
    /// Keep the nodes' data directories after a passing run.
    pub keep_data: bool,
}

impl RunOptions {
    /// The command that replays this run.
    pub fn replay_command(&self) -> String {
        format!(
            "chaos run --scenario {} --seed {} --duration-seconds {} --binary {}",
            self.scenario,
            self.seed,
            self.duration_seconds,
            self.binary.display()
        )
    }
}

/// The schedule a run with `options` follows (printed before it starts).
pub fn schedule_for(options: &RunOptions) -> Schedule {
    nemesis::generate(
        options.scenario,
        options.seed,
        options.duration_seconds * 1000,
        &region_names(&Topology::standard()),
    )
}

fn region_names(topology: &Topology) -> BTreeMap<String, Vec<String>> {
    topology
        .regions
        .iter()
        .map(|(r, ns)| (r.clone(), ns.iter().map(|n| n.name.clone()).collect()))
        .collect()
}

/// Runs one scenario end to end. An error means the harness could not do
/// its job (e.g. the nodes never started); broken invariants are in the
/// report.
pub async fn run(options: RunOptions) -> anyhow::Result<RunReport> {
    let topology = Topology::standard();
    let schedule = schedule_for(&options);
    println!("{schedule}");
    println!("replay: {}", options.replay_command());
    let run_dir = options.run_root.join(format!(
        "{}-{}-{}",
        options.scenario,
        options.seed,
        now_ms()
    ));
    std::fs::create_dir_all(&run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
    println!("run directory: {}", run_dir.display());
    std::fs::write(
        run_dir.join("schedule.json"),
        serde_json::to_vec_pretty(&schedule)?,
    )?;
    let recorder = Arc::new(Recorder::to_file(&run_dir.join("history.jsonl"))?);
    let mut plan = Plan::for_duration(options.duration_seconds);
    if let Some(cap) = options.cap {
        plan.cap = cap;
    }
    let plan = Arc::new(plan);
    recorder.record(Event::Meta(Meta {
        scenario: options.scenario.to_string(),
        seed: options.seed,
        duration_seconds: options.duration_seconds,
        regions: region_names(&topology),
        slots: plan.slots,
        cap: plan.cap,
        outstanding_max: options.outstanding_max,
        seat_count: u64::from(plan.seat_count),
        up_grace_ms: UP_GRACE_MS,
        unavailable_window_ms_min: UNAVAILABLE_WINDOW_MS_MIN,
        sdk_checks_must_answer: options.scenario.sdk_checks_must_answer(),
    }));

    let settings = Settings {
        binary: options.binary.clone(),
        run_dir: run_dir.clone(),
        outstanding_max: options.outstanding_max,
    };
    let (cluster, mut guard) = Cluster::create(topology, &settings, recorder.clone())?;
    tracing::info!("Starting the origin, then both regions.");
    cluster.start_all().await?;
    let head = workload::seed(&cluster, &plan)
        .await
        .context("seeding the origin")?;
    tracing::info!(
        head,
        "Seeded the origin; waiting for every region node to catch up."
    );
    let (caught_up, _) = wait_converged(&cluster, head, CATCH_UP_DEADLINE).await;
    anyhow::ensure!(
        caught_up,
        "the regions did not catch up with the seeded origin within {CATCH_UP_DEADLINE:?}; \
         see the logs in {}",
        run_dir.join("logs").display()
    );

    tracing::info!(
        seconds = options.duration_seconds,
        "Running the workload and the nemesis."
    );
    let (load_tx, load_rx) = watch::channel(false);
    let (observe_tx, observe_rx) = watch::channel(false);
    let (nemesis_tx, nemesis_rx) = watch::channel(false);
    let work = workload::spawn(
        cluster.clone(),
        recorder.clone(),
        plan.clone(),
        options.seed,
        load_rx,
        observe_rx,
    )?;
    let nemesis = tokio::spawn(nemesis::run(
        cluster.clone(),
        recorder.clone(),
        schedule.clone(),
        nemesis_rx,
    ));
    tokio::time::sleep(Duration::from_secs(options.duration_seconds)).await;
    nemesis_tx.send_replace(true);
    match nemesis.await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::warn!(%error, "The nemesis stopped with an error."),
        Err(error) => tracing::warn!(%error, "The nemesis task failed."),
    }
    load_tx.send_replace(true);
    for task in work.load {
        let _ = task.await;
    }

    tracing::info!("Healing everything; waiting for every node to reach the origin's head.");
    nemesis::heal_all(&cluster, &recorder).await?;
    let last_acked = recorder
        .events()
        .iter()
        .filter_map(|e| match e {
            Event::Write(w) => match w.outcome {
                crate::history::Ack::Acked { revision } => Some(revision),
                _ => None,
            },
            _ => None,
        })
        .max()
        .unwrap_or(head);
    let healed = Instant::now();
    let (converged, origin_head) = wait_converged(&cluster, last_acked, CONVERGE_DEADLINE).await;
    tracing::info!(
        converged,
        origin_head,
        seconds = healed.elapsed().as_secs_f64(),
        "Convergence wait over."
    );
    // Every consumption gets a definite outcome, then the billed total is
    // read once the regions have reported all of it: the checker compares
    // the two exactly (`billing_mismatch`).
    let unresolved = workload::resolve_consumptions(&cluster, &recorder).await?;
    if !unresolved.is_empty() {
        tracing::warn!(
            keys = unresolved.len(),
            "Some consumptions never got an answer, even after the heal."
        );
    }
    let billing = workload::settled_billing(&cluster).await;
    tracing::info!(
        billed = ?billing.0,
        settled = billing.1,
        "Read the origin's billed total."
    );
    let fin = final_state(&cluster, &plan, converged, origin_head, billing).await?;
    recorder.record(Event::Final(fin));
    observe_tx.send_replace(true);
    for task in work.observers {
        let _ = task.await;
    }
    if let Err(error) = recorder.flush() {
        tracing::warn!(%error, "Writing the history failed; the report uses the in-memory copy.");
    }
    guard.teardown();

    let checked = checker::check(&recorder.events());
    let report = RunReport {
        scenario: options.scenario.to_string(),
        seed: options.seed,
        duration_seconds: options.duration_seconds,
        passed: checked.passed(),
        replay: options.replay_command(),
        run_dir: run_dir.display().to_string(),
        schedule,
        violations: checked.violations,
        stats: checked.stats,
    };
    std::fs::write(
        run_dir.join("report.json"),
        serde_json::to_vec_pretty(&report)?,
    )?;
    if report.passed && !options.keep_data {
        cluster.remove_data();
    }
    Ok(report)
}

/// Waits until the origin's head is at least `at_least` and every region
/// node has applied it; whether that happened, and the head last read.
async fn wait_converged(cluster: &Cluster, at_least: u64, deadline: Duration) -> (bool, u64) {
    // The head last read, kept across looks: a wait that times out reports
    // it too.
    let head = AtomicU64::new(0);
    // Each look asks the origin and every region node for its status:
    // every 250 ms, as before, not at the tests' 10 ms.
    let converged = wait_until_every(
        &format!("every region node to apply the origin's head (at least {at_least})"),
        deadline,
        Duration::from_millis(250),
        || async {
            cluster.reap_exits();
            if let Ok(h) = cluster.origin_head().await {
                head.store(h, Ordering::Relaxed);
            }
            let head = head.load(Ordering::Relaxed);
            if head < at_least {
                return Err(format!("the origin's head at {head}"));
            }
            let nodes = cluster.topology.region_nodes();
            let statuses = futures::future::join_all(nodes.iter().map(|n| cluster.status(n))).await;
            let behind: Vec<String> = nodes
                .iter()
                .zip(&statuses)
                .filter_map(|(node, status)| match status {
                    Ok(s) if s.applied_revision >= head => None,
                    Ok(s) => Some(format!("{} at {}", node.name, s.applied_revision)),
                    Err(error) => Some(format!("{}: {error}", node.name)),
                })
                .collect();
            match behind.is_empty() {
                true => Ok(()),
                false => Err(format!(
                    "the origin's head at {head}; behind: {}",
                    behind.join(", ")
                )),
            }
        },
    )
    .await;
    if let Err(error) = &converged {
        tracing::warn!(%error, "The nodes did not converge.");
    }
    (converged.is_ok(), head.into_inner())
}

/// The origin's entitlements and what they imply per slot, what every
/// region node answers for every slot, and the billed total read before.
async fn final_state(
    cluster: &Cluster,
    plan: &Plan,
    converged: bool,
    origin_head: u64,
    (billed, billing_settled): (Option<u64>, bool),
) -> anyhow::Result<Final> {
    let mut origin_entitlements = BTreeMap::new();
    // Slot → statuses of its entitlements.
    let mut by_slot: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for a in 0..plan.accounts {
        let body = cluster
            .rest_ok(
                Method::GET,
                &format!("/v1/accounts/a-{a}/entitlements"),
                None,
            )
            .await
            .context("reading the origin's final entitlements")?;
        for e in body["items"].as_array().into_iter().flatten() {
            let id = e["id"].as_str().unwrap_or_default().to_string();
            let status = e["status"].as_str().unwrap_or("active").to_string();
            let slot = e["grant"]["feature"]["feature"]
                .as_str()
                .and_then(|f| plan.slot_of_feature(f))
                .or_else(|| {
                    e["grant"]["plan"]
                        .as_str()
                        .and_then(|p| plan.slot_of_plan(p))
                });
            if let Some(slot) = slot {
                by_slot.entry(slot).or_default().push(status.clone());
            }
            origin_entitlements.insert(id, status);
        }
    }
    let truth: BTreeMap<u32, String> = (0..plan.slots)
        .map(|slot| {
            let statuses = by_slot.get(&slot).cloned().unwrap_or_default();
            // The engine's precedence: the most permissive entitlement
            // decides.
            let decision = if statuses.iter().any(|s| s == "active") {
                "ALLOW"
            } else if statuses.iter().any(|s| s == "suspended") {
                "SUSPENDED"
            } else if statuses.iter().any(|s| s == "revoked") {
                "REVOKED"
            } else {
                "NOT_ENTITLED"
            };
            (slot, decision.to_string())
        })
        .collect();

    let nodes = cluster.topology.region_nodes();
    let clients = Clients::new(cluster.transport(), &nodes, cluster.credential())?;
    let mut finals = Vec::new();
    for node in nodes {
        let applied_revision = cluster.status(node).await.ok().map(|s| s.applied_revision);
        let mut decisions = BTreeMap::new();
        for slot in 0..plan.slots {
            let (account, feature) = (plan.slot_account(slot), Plan::slot_feature(slot));
            let mut last = String::new();
            for _ in 0..FINAL_CHECK_ATTEMPTS {
                match clients.check(&node.name, &account, &feature).await.2 {
                    crate::history::Answer::Answered { reason, .. } => {
                        last = reason;
                        break;
                    }
                    crate::history::Answer::Error { error } => {
                        last = format!("ERROR: {error}");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
            decisions.insert(slot, last);
        }
        finals.push(FinalNode {
            region: node.region.clone().unwrap_or_default(),
            node: node.name.clone(),
            applied_revision,
            decisions,
        });
    }
    Ok(Final {
        at_ms: now_ms(),
        converged,
        origin_head,
        origin_entitlements,
        truth,
        nodes: finals,
        billed,
        billing_settled: Some(billing_settled),
    })
}
