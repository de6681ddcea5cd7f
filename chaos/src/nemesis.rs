//! The nemesis: a schedule of faults generated from a seed (printed before
//! the run, so a failure can be replayed with `--seed`), and the executor
//! that applies each fault, waits, and undoes it.
//!
//! A schedule names targets by role where the role only exists at run
//! time ("the leader of eu"); the executor resolves them and records what
//! it actually did in the history. Every step runs on its own timer, so
//! steps whose windows overlap are in force together: most scenarios space
//! their faults out (effects easy to attribute), `overlapping` layers them.

use crate::cluster::{Cluster, ORIGIN};
use crate::history::{now_ms, Event, Fault as FaultEvent, Phase, Recorder};
use crate::net::{Direction, Rule};
use crate::rng::Rng;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// No fault before the workload has run this long.
pub const WARMUP_MS: u64 = 3_000;
/// The `step` of the final heal in the history.
pub const HEAL_STEP: u32 = u32::MAX;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// Cut one region off from the origin (both directions), heal, repeat.
    PartitionRegion,
    /// Kill -9 a region's leader, restart it from its data, repeat.
    KillLeader,
    /// SIGSTOP a node (often the leader), SIGCONT it, repeat.
    PauseNode,
    /// Random faults of every kind, one at a time.
    Mixed,
    /// Slow links: latency (with jitter) on a region's link to the origin,
    /// or between a region's members.
    SlowLinks,
    /// Two timelines at once: a degraded link (slow or lossy) under node
    /// and partition faults.
    Overlapping,
}

impl Scenario {
    pub const ALL: [Scenario; 6] = [
        Scenario::PartitionRegion,
        Scenario::KillLeader,
        Scenario::PauseNode,
        Scenario::Mixed,
        Scenario::SlowLinks,
        Scenario::Overlapping,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::PartitionRegion => "partition-region",
            Scenario::KillLeader => "kill-leader",
            Scenario::PauseNode => "pause-node",
            Scenario::Mixed => "mixed",
            Scenario::SlowLinks => "slow-links",
            Scenario::Overlapping => "overlapping",
        }
    }

    /// Whether every check an application makes through the SDK (every
    /// node of the region as an endpoint) must be answered: the scenarios
    /// whose faults take at most one node of a region away, or cut the
    /// region off from the origin only, and never the harness off from a
    /// node. The others may too, but are not held to it (yet).
    pub fn sdk_checks_must_answer(self) -> bool {
        matches!(
            self,
            Scenario::KillLeader | Scenario::PauseNode | Scenario::PartitionRegion
        )
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Scenario {
    type Err = String;
    fn from_str(s: &str) -> Result<Scenario, String> {
        Scenario::ALL
            .into_iter()
            .find(|x| x.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown scenario {s:?}; one of: {}",
                    Scenario::ALL.map(Scenario::name).join(", ")
                )
            })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "fault", rename_all = "snake_case")]
pub enum Fault {
    /// Drop everything between the region's nodes and the origin.
    PartitionRegion {
        region: String,
    },
    /// Drop only what the origin sends to the region.
    PartitionOneWay {
        region: String,
    },
    /// Drop everything between the region's leader and its followers.
    IsolateLeader {
        region: String,
    },
    /// SIGKILL a node; restart it from its data directory when undone.
    KillNode {
        node: String,
    },
    KillLeader {
        region: String,
    },
    /// SIGSTOP a node; SIGCONT when undone.
    PauseNode {
        node: String,
    },
    PauseLeader {
        region: String,
    },
    /// Stop the origin (SIGTERM, or SIGKILL), start it again when undone.
    RestartOrigin {
        graceful: bool,
    },
    /// Drop `percent` % of the packets between the region's nodes, and
    /// between them and the origin.
    RandomDrop {
        region: String,
        percent: u32,
    },
    /// Delay everything between the region's nodes and the origin, both
    /// ways, by `delay_ms` plus up to `jitter_ms` (the latency proxy).
    SlowOrigin {
        region: String,
        delay_ms: u64,
        jitter_ms: u64,
    },
    /// Delay Raft traffic between the region's members, each way (every
    /// connection into a member passes its proxy).
    SlowRegion {
        region: String,
        delay_ms: u64,
        jitter_ms: u64,
    },
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::PartitionRegion { region } => {
                write!(f, "partition region {region} from the origin")
            }
            Fault::PartitionOneWay { region } => {
                write!(f, "drop what the origin sends to region {region}")
            }
            Fault::IsolateLeader { region } => {
                write!(f, "isolate the leader of {region} from its followers")
            }
            Fault::KillNode { node } => write!(f, "kill -9 {node}, then restart it"),
            Fault::KillLeader { region } => {
                write!(f, "kill -9 the leader of {region}, then restart it")
            }
            Fault::PauseNode { node } => write!(f, "SIGSTOP {node}, then SIGCONT"),
            Fault::PauseLeader { region } => {
                write!(f, "SIGSTOP the leader of {region}, then SIGCONT")
            }
            Fault::RestartOrigin { graceful: true } => write!(f, "stop the origin (SIGTERM)"),
            Fault::RestartOrigin { graceful: false } => write!(f, "kill -9 the origin"),
            Fault::RandomDrop { region, percent } => {
                write!(f, "drop {percent}% of region {region}'s packets")
            }
            Fault::SlowOrigin {
                region,
                delay_ms,
                jitter_ms,
            } => write!(
                f,
                "add {delay_ms}–{} ms each way between region {region} and the origin",
                delay_ms + jitter_ms
            ),
            Fault::SlowRegion {
                region,
                delay_ms,
                jitter_ms,
            } => write!(
                f,
                "add {delay_ms}–{} ms each way between the members of region {region}",
                delay_ms + jitter_ms
            ),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    /// When the fault starts, after the nemesis starts.
    pub at_ms: u64,
    /// How long it lasts before it is undone.
    pub duration_ms: u64,
    pub fault: Fault,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Schedule {
    pub scenario: Scenario,
    pub seed: u64,
    pub duration_ms: u64,
    pub steps: Vec<Step>,
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "schedule: scenario {} seed {} over {:.0} s, {} step(s)",
            self.scenario,
            self.seed,
            self.duration_ms as f64 / 1000.0,
            self.steps.len()
        )?;
        for (i, s) in self.steps.iter().enumerate() {
            writeln!(
                f,
                "  #{i:<2} at +{:>5.1} s for {:>4.1} s: {}",
                s.at_ms as f64 / 1000.0,
                s.duration_ms as f64 / 1000.0,
                s.fault
            )?;
        }
        Ok(())
    }
}

/// The schedule for `scenario` and `seed` over `duration_ms` of workload,
/// for `regions` (region → its nodes' names). A pure function of its
/// arguments.
pub fn generate(
    scenario: Scenario,
    seed: u64,
    duration_ms: u64,
    regions: &BTreeMap<String, Vec<String>>,
) -> Schedule {
    assert!(!regions.is_empty(), "a schedule needs regions");
    let mut rng = Rng::new(seed);
    let steps = match scenario {
        Scenario::Overlapping => {
            // Two independent timelines, merged: what one does is in force
            // while the other acts.
            let mut steps = timeline(Timeline::Degrade, &mut rng.fork(1), duration_ms, regions);
            steps.extend(timeline(
                Timeline::Break,
                &mut rng.fork(2),
                duration_ms,
                regions,
            ));
            steps.sort_by_key(|s| s.at_ms);
            steps
        }
        _ => timeline(Timeline::Of(scenario), &mut rng, duration_ms, regions),
    };
    Schedule {
        scenario,
        seed,
        duration_ms,
        steps,
    }
}

/// What one sequence of faults is made of.
#[derive(Debug, Clone, Copy)]
enum Timeline {
    Of(Scenario),
    /// Long degraded links: slow, or lossy.
    Degrade,
    /// Short sharp faults: kills, pauses, partitions, a restarted origin.
    Break,
}

fn slow_origin(rng: &mut Rng, region: String) -> Fault {
    Fault::SlowOrigin {
        region,
        // At most 0.8 s each way: a subscription (one round trip) still
        // fits in the harness's 2.5 s connect timeout.
        delay_ms: rng.range(100, 600),
        jitter_ms: rng.range(0, 200),
    }
}

fn slow_region(rng: &mut Rng, region: String) -> Fault {
    // Raft's election timeout is 150–300 ms and a round trip crosses two
    // proxies: from harmless to an election now and then.
    Fault::SlowRegion {
        region,
        delay_ms: rng.range(10, 100),
        jitter_ms: rng.range(0, 40),
    }
}

/// One sequence of faults, each ending before the next starts.
fn timeline(
    kind: Timeline,
    rng: &mut Rng,
    duration_ms: u64,
    regions: &BTreeMap<String, Vec<String>>,
) -> Vec<Step> {
    let names: Vec<&String> = regions.keys().collect();
    let nodes: Vec<&String> = regions.values().flatten().collect();
    // The last faults must end a little before the workload does.
    let end = duration_ms.saturating_sub(1_000);
    let mut steps = Vec::new();
    let mut at = WARMUP_MS;
    let mut turn = rng.below(names.len() as u64) as usize;
    loop {
        let scenario = match kind {
            Timeline::Of(s) => s,
            Timeline::Degrade => Scenario::SlowLinks,
            Timeline::Break => Scenario::Mixed,
        };
        let (fault, duration_ms, gap_ms) = match scenario {
            Scenario::PartitionRegion => {
                // Alternate regions, starting with a random one.
                let region = names[turn % names.len()].clone();
                turn += 1;
                (
                    Fault::PartitionRegion { region },
                    rng.range(8_000, 15_000),
                    rng.range(3_000, 6_000),
                )
            }
            Scenario::KillLeader => (
                Fault::KillLeader {
                    region: (*rng.pick(&names)).clone(),
                },
                rng.range(2_000, 5_000),
                rng.range(2_000, 5_000),
            ),
            Scenario::PauseNode => {
                let fault = if rng.chance(50) {
                    Fault::PauseLeader {
                        region: (*rng.pick(&names)).clone(),
                    }
                } else {
                    Fault::PauseNode {
                        node: (*rng.pick(&nodes)).clone(),
                    }
                };
                (fault, rng.range(3_000, 8_000), rng.range(2_000, 4_000))
            }
            Scenario::Mixed => {
                let region = (*rng.pick(&names)).clone();
                // A breaking timeline under a degrading one draws only the
                // sharp faults (the degrading kinds are 8 and up).
                let kinds = match kind {
                    Timeline::Break => 8,
                    _ => 11,
                };
                let (fault, lo, hi) = match rng.below(kinds) {
                    0 => (Fault::PartitionRegion { region }, 5_000, 12_000),
                    1 => (Fault::PartitionOneWay { region }, 5_000, 12_000),
                    2 => (Fault::IsolateLeader { region }, 4_000, 10_000),
                    3 => (
                        Fault::KillNode {
                            node: (*rng.pick(&nodes)).clone(),
                        },
                        2_000,
                        5_000,
                    ),
                    4 => (Fault::KillLeader { region }, 2_000, 5_000),
                    5 => (
                        Fault::PauseNode {
                            node: (*rng.pick(&nodes)).clone(),
                        },
                        2_000,
                        6_000,
                    ),
                    6 => (Fault::PauseLeader { region }, 2_000, 6_000),
                    7 => (
                        Fault::RestartOrigin {
                            graceful: rng.chance(50),
                        },
                        1_000,
                        4_000,
                    ),
                    8 => (
                        Fault::RandomDrop {
                            region,
                            percent: rng.range(10, 40) as u32,
                        },
                        4_000,
                        10_000,
                    ),
                    9 => (slow_origin(rng, region), 4_000, 10_000),
                    _ => (slow_region(rng, region), 4_000, 10_000),
                };
                (fault, rng.range(lo, hi), rng.range(1_000, 4_000))
            }
            Scenario::SlowLinks => {
                // Alternate regions; mostly the long-haul link, sometimes
                // the region's own; in a degrading timeline, also loss.
                let region = names[turn % names.len()].clone();
                turn += 1;
                let fault = match (kind, rng.below(10)) {
                    (Timeline::Degrade, 0..=2) => Fault::RandomDrop {
                        region,
                        percent: rng.range(5, 30) as u32,
                    },
                    (_, 0..=5) => slow_origin(rng, region),
                    _ => slow_region(rng, region),
                };
                let gap = match kind {
                    Timeline::Degrade => rng.range(1_000, 3_000),
                    _ => rng.range(2_000, 5_000),
                };
                (fault, rng.range(6_000, 14_000), gap)
            }
            Scenario::Overlapping => unreachable!("made of two timelines"),
        };
        if at + duration_ms > end {
            if steps.is_empty() && at + 1_000 <= end {
                // A short run still gets one (shortened) fault.
                steps.push(Step {
                    at_ms: at,
                    duration_ms: end - at,
                    fault,
                });
            }
            break;
        }
        steps.push(Step {
            at_ms: at,
            duration_ms,
            fault,
        });
        at += duration_ms + gap_ms;
    }
    steps
}

/// How to undo an applied fault.
enum Undo {
    Rules(Vec<Rule>),
    /// Take the added latency away again.
    Delays(Vec<crate::proxy::LinkDelay>),
    Restart(String),
    Resume(String),
}

struct Applied {
    description: String,
    cut_from_origin: Vec<String>,
    undo: Undo,
}

fn record(recorder: &Recorder, step: u32, phase: Phase, description: &str, cut: &[String]) {
    recorder.record(Event::Fault(FaultEvent {
        at_ms: now_ms(),
        step,
        phase,
        description: description.into(),
        cut_from_origin: cut.to_vec(),
    }));
}

/// Both directions between `a` and `b`, as rules in both namespaces.
fn cut_pair(cluster: &Cluster, a: &str, b: &str, rules: &mut Vec<Rule>) {
    let (Some(ip_a), Some(ip_b)) = (cluster.links.ip(a), cluster.links.ip(b)) else {
        return;
    };
    for (node, peer) in [(a, ip_b), (b, ip_a)] {
        for direction in [Direction::In, Direction::Out] {
            rules.push(Rule {
                node: node.into(),
                direction,
                peer,
                probability: None,
            });
        }
    }
}

fn region_nodes(cluster: &Cluster, region: &str) -> Vec<String> {
    cluster
        .topology
        .regions
        .get(region)
        .map(|ns| ns.iter().map(|n| n.name.clone()).collect())
        .unwrap_or_default()
}

/// The leader of `region`, or (with none to be found) its first node.
async fn leader_or_first(cluster: &Cluster, region: &str) -> (String, bool) {
    match cluster.leader(region).await {
        Some(l) => (l, true),
        None => (
            region_nodes(cluster, region)
                .into_iter()
                .next()
                .unwrap_or_default(),
            false,
        ),
    }
}

async fn apply(cluster: &Cluster, fault: &Fault) -> anyhow::Result<Applied> {
    let cause = "the nemesis";
    let applied = match fault {
        Fault::PartitionRegion { region } => {
            let mut rules = Vec::new();
            for n in region_nodes(cluster, region) {
                cut_pair(cluster, ORIGIN, &n, &mut rules);
            }
            Applied {
                description: fault.to_string(),
                cut_from_origin: vec![region.clone()],
                undo: Undo::Rules(rules),
            }
        }
        Fault::PartitionOneWay { region } => {
            let origin_ip = cluster.links.ip(ORIGIN).expect("the origin has an address");
            let mut rules = Vec::new();
            for n in region_nodes(cluster, region) {
                let ip = cluster.links.ip(&n).expect("a node has an address");
                rules.push(Rule {
                    node: ORIGIN.into(),
                    direction: Direction::Out,
                    peer: ip,
                    probability: None,
                });
                rules.push(Rule {
                    node: n,
                    direction: Direction::In,
                    peer: origin_ip,
                    probability: None,
                });
            }
            Applied {
                description: fault.to_string(),
                cut_from_origin: vec![region.clone()],
                undo: Undo::Rules(rules),
            }
        }
        Fault::IsolateLeader { region } => {
            let (leader, found) = leader_or_first(cluster, region).await;
            let mut rules = Vec::new();
            for n in region_nodes(cluster, region) {
                if n != leader {
                    cut_pair(cluster, &leader, &n, &mut rules);
                }
            }
            Applied {
                description: format!(
                    "isolate {leader} ({}) of {region} from its followers",
                    if found {
                        "the leader"
                    } else {
                        "no leader seen"
                    }
                ),
                cut_from_origin: vec![],
                undo: Undo::Rules(rules),
            }
        }
        Fault::KillNode { node } => {
            cluster.kill(node, cause)?;
            Applied {
                description: format!("kill -9 {node}"),
                cut_from_origin: vec![],
                undo: Undo::Restart(node.clone()),
            }
        }
        Fault::KillLeader { region } => {
            let (leader, found) = leader_or_first(cluster, region).await;
            cluster.kill(&leader, cause)?;
            Applied {
                description: format!(
                    "kill -9 {leader} ({} of {region})",
                    if found {
                        "the leader"
                    } else {
                        "no leader seen"
                    }
                ),
                cut_from_origin: vec![],
                undo: Undo::Restart(leader),
            }
        }
        Fault::PauseNode { node } => {
            cluster.pause(node, cause)?;
            Applied {
                description: format!("SIGSTOP {node}"),
                cut_from_origin: vec![],
                undo: Undo::Resume(node.clone()),
            }
        }
        Fault::PauseLeader { region } => {
            let (leader, found) = leader_or_first(cluster, region).await;
            cluster.pause(&leader, cause)?;
            Applied {
                description: format!(
                    "SIGSTOP {leader} ({} of {region})",
                    if found {
                        "the leader"
                    } else {
                        "no leader seen"
                    }
                ),
                cut_from_origin: vec![],
                undo: Undo::Resume(leader),
            }
        }
        Fault::RestartOrigin { graceful } => {
            if *graceful {
                cluster.stop(ORIGIN, cause).await?;
            } else {
                cluster.kill(ORIGIN, cause)?;
            }
            Applied {
                description: fault.to_string(),
                cut_from_origin: vec![],
                undo: Undo::Restart(ORIGIN.into()),
            }
        }
        Fault::RandomDrop { region, percent } => {
            let members = region_nodes(cluster, region);
            let mut rules = Vec::new();
            for n in &members {
                for peer in members
                    .iter()
                    .filter(|p| *p != n)
                    .chain([&ORIGIN.to_string()])
                {
                    rules.push(Rule {
                        node: n.clone(),
                        direction: Direction::In,
                        peer: cluster.links.ip(peer).expect("a node has an address"),
                        probability: Some(f64::from(*percent) / 100.0),
                    });
                }
            }
            Applied {
                description: fault.to_string(),
                cut_from_origin: vec![],
                undo: Undo::Rules(rules),
            }
        }
        Fault::SlowOrigin {
            region,
            delay_ms,
            jitter_ms,
        }
        | Fault::SlowRegion {
            region,
            delay_ms,
            jitter_ms,
        } => {
            let links: Vec<_> = if matches!(fault, Fault::SlowOrigin { .. }) {
                cluster.origin_delay(region).cloned().into_iter().collect()
            } else {
                region_nodes(cluster, region)
                    .iter()
                    .filter_map(|n| cluster.raft_delay(n).cloned())
                    .collect()
            };
            anyhow::ensure!(
                !links.is_empty(),
                "region {region} has no such proxied link"
            );
            for link in &links {
                link.set(
                    Duration::from_millis(*delay_ms),
                    Duration::from_millis(*jitter_ms),
                );
            }
            Applied {
                description: fault.to_string(),
                cut_from_origin: vec![],
                undo: Undo::Delays(links),
            }
        }
    };
    if let Undo::Rules(rules) = &applied.undo {
        for rule in rules {
            cluster.links.add(rule)?;
        }
    }
    Ok(applied)
}

async fn undo(cluster: &Cluster, undo: Undo) -> anyhow::Result<()> {
    match undo {
        Undo::Rules(rules) => {
            for rule in &rules {
                cluster.links.remove(rule)?;
            }
        }
        Undo::Restart(node) => {
            if cluster.state(&node) != Some(crate::history::NodeState::Up) {
                cluster.start(&node, "restarted by the nemesis")?;
            }
        }
        Undo::Resume(node) => cluster.resume(&node, "continued by the nemesis")?,
        Undo::Delays(delays) => delays.iter().for_each(crate::proxy::LinkDelay::clear),
    }
    Ok(())
}

/// Runs `schedule` until its end or until `stop` turns true; faults in
/// progress are undone either way. Each step runs on its own timer, so
/// overlapping steps are in force together.
pub async fn run(
    cluster: Arc<Cluster>,
    recorder: Arc<Recorder>,
    schedule: Schedule,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let tasks: Vec<_> = schedule
        .steps
        .into_iter()
        .enumerate()
        .map(|(i, step)| {
            let (cluster, recorder, stop) = (cluster.clone(), recorder.clone(), stop.clone());
            tokio::spawn(
                async move { run_step(&cluster, &recorder, i as u32, step, t0, stop).await },
            )
        })
        .collect();
    for task in tasks {
        task.await?;
    }
    Ok(())
}

async fn run_step(
    cluster: &Cluster,
    recorder: &Recorder,
    i: u32,
    step: Step,
    t0: Instant,
    mut stop: watch::Receiver<bool>,
) {
    tokio::select! {
        _ = tokio::time::sleep_until(t0 + Duration::from_millis(step.at_ms)) => {}
        _ = stop.wait_for(|s| *s) => return,
    }
    let applied = match apply(cluster, &step.fault).await {
        Ok(a) => a,
        Err(error) => {
            // A fault that cannot be applied (e.g. its node is down) is
            // skipped, loudly: the run goes on.
            tracing::warn!(step = i, %error, "Could not apply a fault; skipping it.");
            record(
                recorder,
                i,
                Phase::Start,
                &format!("{} (failed: {error:#})", step.fault),
                &[],
            );
            record(recorder, i, Phase::Stop, "skipped", &[]);
            return;
        }
    };
    tracing::info!(step = i, fault = %applied.description, "Fault on.");
    record(
        recorder,
        i,
        Phase::Start,
        &applied.description,
        &applied.cut_from_origin,
    );
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_millis(step.duration_ms)) => {}
        _ = stop.wait_for(|s| *s) => {}
    }
    let description = applied.description.clone();
    if let Err(error) = undo(cluster, applied.undo).await {
        tracing::warn!(step = i, %error, "Could not undo a fault; the final heal will.");
    }
    tracing::info!(step = i, fault = %description, "Fault off.");
    record(recorder, i, Phase::Stop, &description, &[]);
}

/// Removes every fault rule, continues paused nodes and starts stopped
/// ones: the final heal before convergence is checked.
pub async fn heal_all(cluster: &Cluster, recorder: &Recorder) -> anyhow::Result<()> {
    record(recorder, HEAL_STEP, Phase::Start, "heal everything", &[]);
    cluster.links.heal_all()?;
    cluster.clear_delays();
    cluster.reap_exits();
    let (down, paused) = cluster.not_up();
    for node in paused {
        cluster.resume(&node, "continued by the final heal")?;
    }
    for node in down {
        cluster.start(&node, "restarted by the final heal")?;
    }
    record(recorder, HEAL_STEP, Phase::Stop, "heal everything", &[]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regions() -> BTreeMap<String, Vec<String>> {
        BTreeMap::from([
            (
                "eu".into(),
                vec!["eu-1".into(), "eu-2".into(), "eu-3".into()],
            ),
            (
                "us".into(),
                vec!["us-1".into(), "us-2".into(), "us-3".into()],
            ),
        ])
    }

    #[test]
    fn a_seed_replays_the_same_schedule() {
        for scenario in Scenario::ALL {
            let a = generate(scenario, 42, 90_000, &regions());
            let b = generate(scenario, 42, 90_000, &regions());
            assert_eq!(a, b);
            assert!(!a.steps.is_empty(), "{scenario}");
            for s in &a.steps {
                assert!(s.at_ms >= WARMUP_MS && s.at_ms + s.duration_ms <= 89_000);
            }
            if scenario != Scenario::Overlapping {
                for w in a.steps.windows(2) {
                    assert!(w[0].at_ms + w[0].duration_ms <= w[1].at_ms, "sequential");
                }
            }
        }
        assert_ne!(
            generate(Scenario::Mixed, 1, 90_000, &regions()),
            generate(Scenario::Mixed, 2, 90_000, &regions())
        );
    }

    #[test]
    fn overlapping_layers_sharp_faults_over_degraded_links() {
        let s = generate(Scenario::Overlapping, 7, 120_000, &regions());
        let degrading = |f: &Fault| {
            matches!(
                f,
                Fault::SlowOrigin { .. } | Fault::SlowRegion { .. } | Fault::RandomDrop { .. }
            )
        };
        let (slow, sharp): (Vec<&Step>, Vec<&Step>) =
            s.steps.iter().partition(|st| degrading(&st.fault));
        assert!(!slow.is_empty() && !sharp.is_empty(), "{s}");
        // Each timeline on its own is sequential ...
        for line in [&slow, &sharp] {
            for w in line.windows(2) {
                assert!(w[0].at_ms + w[0].duration_ms <= w[1].at_ms, "{s}");
            }
        }
        // ... and together they overlap.
        let overlaps = sharp.iter().any(|b| {
            slow.iter()
                .any(|d| d.at_ms < b.at_ms + b.duration_ms && b.at_ms < d.at_ms + d.duration_ms)
        });
        assert!(overlaps, "{s}");
        assert!(s.steps.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
    }

    #[test]
    fn slow_link_faults_stay_in_their_ranges() {
        for seed in 0..20 {
            for s in generate(Scenario::SlowLinks, seed, 90_000, &regions()).steps {
                match s.fault {
                    Fault::SlowOrigin {
                        delay_ms,
                        jitter_ms,
                        ..
                    } => assert!((100..=600).contains(&delay_ms) && jitter_ms <= 200),
                    Fault::SlowRegion {
                        delay_ms,
                        jitter_ms,
                        ..
                    } => assert!((10..=100).contains(&delay_ms) && jitter_ms <= 40),
                    other => panic!("not a slow link: {other}"),
                }
            }
        }
    }

    #[test]
    fn a_short_run_still_gets_one_fault() {
        let s = generate(Scenario::PartitionRegion, 3, 8_000, &regions());
        assert_eq!(s.steps.len(), 1, "{s}");
    }

    #[test]
    fn scenario_names_parse_back() {
        for s in Scenario::ALL {
            assert_eq!(s.name().parse::<Scenario>().unwrap(), s);
        }
        assert!("nope".parse::<Scenario>().is_err());
    }
}
