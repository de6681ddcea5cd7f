//! `chaos`: run Tollgate chaos scenarios against real nodes in network
//! namespaces (root only), re-check a recorded history, print a schedule,
//! or clean up what an interrupted run left behind.
//!
//! Exit codes: 0 passed, 1 an invariant was violated, 2 the harness failed
//! (bad arguments, nodes that never started, ...), 3 the machine lacks a
//! prerequisite (root, `ip netns`, iptables), 130 interrupted.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use tollgate_chaos::nemesis::Scenario;
use tollgate_chaos::report::{self, RunReport};
use tollgate_chaos::scenario::{self, RunOptions};
use tollgate_chaos::{checker, history, net};

const EXIT_VIOLATION: u8 = 1;
const EXIT_HARNESS: u8 = 2;
const EXIT_PREREQUISITE: u8 = 3;
const EXIT_INTERRUPTED: u8 = 130;
/// What a run costs beyond its duration: start-up, seeding, catching up,
/// healing, convergence, the final reads (a guess, for `suite`).
const RUN_OVERHEAD_SECONDS: u64 = 50;
const SUITE_DURATION_SECONDS_MIN: u64 = 20;
const SUITE_DURATION_SECONDS_MAX: u64 = 300;

#[derive(Debug, Parser)]
#[command(
    name = "chaos",
    about = "Chaos testing for Tollgate: real nodes, network faults, a checker."
)]
struct Cli {
    /// Log filter for the harness's own messages (stderr).
    #[arg(long, global = true, default_value = "info")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one scenario (needs root).
    Run(RunArgs),
    /// Run the scenarios one after another within a time budget (needs root).
    Suite(SuiteArgs),
    /// Remove namespaces, links and host rules a killed run left behind.
    Cleanup,
    /// Check a recorded history (`<run dir>/history.jsonl`) again.
    Check { history: PathBuf },
    /// Print the schedule a scenario and seed produce, and exit.
    Schedule {
        #[arg(long, value_parser = parse_scenario)]
        scenario: Scenario,
        #[arg(long)]
        seed: u64,
        #[arg(long, default_value_t = 60)]
        duration_seconds: u64,
    },
}

fn parse_scenario(s: &str) -> Result<Scenario, String> {
    s.parse()
}

#[derive(Debug, Args)]
struct Common {
    /// The `tollgate` binary the nodes run.
    #[arg(long, default_value = "target/debug/tollgate")]
    binary: PathBuf,
    /// Where run directories (history, logs, report) are created.
    #[arg(long, default_value = "/tmp/tollgate-chaos")]
    run_dir: PathBuf,
    /// The origin's `[quota] outstanding_max` (the overshoot bound).
    #[arg(long, default_value_t = 40)]
    outstanding_max: u64,
    /// Keep the nodes' data directories after a passing run.
    #[arg(long)]
    keep_data: bool,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// partition-region, kill-leader, pause-node, mixed, slow-links or
    /// overlapping.
    #[arg(long, value_parser = parse_scenario)]
    scenario: Scenario,
    /// The schedule's seed (default: from the clock, printed).
    #[arg(long)]
    seed: Option<u64>,
    /// How long the workload and the nemesis run.
    #[arg(long, default_value_t = 60)]
    duration_seconds: u64,
    /// The hard cap consumers run into (default: sized to the duration).
    #[arg(long)]
    cap: Option<u64>,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Args)]
struct SuiteArgs {
    /// Total time for the suite, overheads included (roughly).
    #[arg(long)]
    budget_seconds: u64,
    /// The first run's seed; each next run adds one (default: the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// Which scenarios, comma-separated (default: all).
    #[arg(long, value_delimiter = ',', value_parser = parse_scenario)]
    scenarios: Vec<Scenario>,
    #[command(flatten)]
    common: Common,
}

fn clock_seed() -> u64 {
    history::now_ms() % 1_000_000
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    ExitCode::from(match cli.command {
        Command::Schedule {
            scenario,
            seed,
            duration_seconds,
        } => {
            print!(
                "{}",
                tollgate_chaos::nemesis::generate(
                    scenario,
                    seed,
                    duration_seconds * 1000,
                    &tollgate_chaos::cluster::Topology::standard()
                        .regions
                        .iter()
                        .map(|(r, ns)| (r.clone(), ns.iter().map(|n| n.name.clone()).collect()))
                        .collect(),
                )
            );
            0
        }
        Command::Check { history } => check_history(&history),
        Command::Cleanup => cleanup(),
        Command::Run(args) => {
            let options = RunOptions {
                scenario: args.scenario,
                seed: args.seed.unwrap_or_else(clock_seed),
                duration_seconds: args.duration_seconds,
                binary: args.common.binary,
                run_root: args.common.run_dir,
                cap: args.cap,
                outstanding_max: args.common.outstanding_max,
                keep_data: args.common.keep_data,
            };
            runs(vec![options], None)
        }
        Command::Suite(args) => {
            let scenarios = if args.scenarios.is_empty() {
                Scenario::ALL.to_vec()
            } else {
                args.scenarios
            };
            let base = args.seed.unwrap_or_else(clock_seed);
            let per_run = (args.budget_seconds / scenarios.len() as u64)
                .saturating_sub(RUN_OVERHEAD_SECONDS)
                .clamp(SUITE_DURATION_SECONDS_MIN, SUITE_DURATION_SECONDS_MAX);
            println!(
                "suite: {} scenario(s), {per_run} s each, first seed {base}, budget {} s",
                scenarios.len(),
                args.budget_seconds
            );
            let options = scenarios
                .into_iter()
                .enumerate()
                .map(|(i, scenario)| RunOptions {
                    scenario,
                    seed: base + i as u64,
                    duration_seconds: per_run,
                    binary: args.common.binary.clone(),
                    run_root: args.common.run_dir.clone(),
                    cap: None,
                    outstanding_max: args.common.outstanding_max,
                    keep_data: args.common.keep_data,
                })
                .collect();
            runs(options, Some(Duration::from_secs(args.budget_seconds)))
        }
    })
}

fn check_history(path: &std::path::Path) -> u8 {
    let events = match history::load(path) {
        Ok(e) => e,
        Err(error) => {
            eprintln!("error: {error:#}");
            return EXIT_HARNESS;
        }
    };
    let checked = checker::check(&events);
    println!(
        "{}",
        serde_json::to_string_pretty(&checked.stats).unwrap_or_default()
    );
    for v in &checked.violations {
        println!("VIOLATION {}: {}", v.invariant, v.detail);
    }
    if checked.passed() {
        println!("passed: no invariant was violated");
        0
    } else {
        EXIT_VIOLATION
    }
}

fn cleanup() -> u8 {
    if let Some(missing) = net::missing_prerequisite() {
        eprintln!("chaos cleanup: {missing}");
        return EXIT_PREREQUISITE;
    }
    match net::cleanup_leftovers() {
        Ok(c) => {
            println!(
                "removed {} process(es), {} namespace(s) {:?}, {} link(s) {:?}, {} host rule(s)",
                c.processes,
                c.namespaces.len(),
                c.namespaces,
                c.links.len(),
                c.links,
                c.host_rules
            );
            0
        }
        Err(error) => {
            eprintln!("chaos cleanup: {error:#}");
            EXIT_HARNESS
        }
    }
}

/// Resolves when the process is asked to stop (SIGINT or SIGTERM).
async fn interrupted() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Runs `options` in order (stopping when `budget` would be overrun),
/// prints the table, writes the suite report; the exit code.
fn runs(options: Vec<RunOptions>, budget: Option<Duration>) -> u8 {
    if let Some(missing) = net::missing_prerequisite() {
        eprintln!("chaos: cannot run here: {missing}");
        return EXIT_PREREQUISITE;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(error) => {
            eprintln!("chaos: starting the async runtime: {error}");
            return EXIT_HARNESS;
        }
    };
    let started = Instant::now();
    let mut reports: Vec<RunReport> = Vec::new();
    let mut code = 0;
    let run_root = options.first().map(|o| o.run_root.clone());
    for option in options {
        if let Some(budget) = budget {
            let needed = Duration::from_secs(option.duration_seconds + RUN_OVERHEAD_SECONDS);
            if started.elapsed() + needed > budget && !reports.is_empty() {
                println!(
                    "suite: skipping {} (seed {}): not enough budget left",
                    option.scenario, option.seed
                );
                continue;
            }
        }
        let replay = option.replay_command();
        // Dropping the run (on a signal) drops its guard: nodes are killed
        // and the network is torn down before the process exits.
        let outcome = runtime.block_on(async {
            tokio::select! {
                r = scenario::run(option) => Some(r),
                _ = interrupted() => None,
            }
        });
        match outcome {
            None => {
                eprintln!("chaos: interrupted; nodes stopped and the network removed");
                runtime.shutdown_background();
                return EXIT_INTERRUPTED;
            }
            Some(Err(error)) => {
                eprintln!("chaos: the run failed: {error:#}\n  reproduce: {replay}");
                code = code.max(EXIT_HARNESS);
            }
            Some(Ok(report)) => {
                if !report.passed {
                    code = code.max(EXIT_VIOLATION);
                }
                print!("{}", report::details(&report));
                reports.push(report);
            }
        }
    }
    runtime.shutdown_background();
    if !reports.is_empty() {
        println!();
        print!("{}", report::table(&reports));
    }
    if let (Some(root), Some(_)) = (run_root, budget) {
        let path = root.join(format!("suite-{}.json", history::now_ms()));
        match serde_json::to_vec_pretty(&reports) {
            Ok(bytes) => match std::fs::write(&path, bytes) {
                Ok(()) => println!("suite report: {}", path.display()),
                Err(error) => eprintln!("chaos: writing {}: {error}", path.display()),
            },
            Err(error) => eprintln!("chaos: the suite report: {error}"),
        }
    }
    for r in &reports {
        println!("report: {}/report.json", r.run_dir);
    }
    code
}
