//! `tollgate-sim`: run one seed (the replay command a failing seed
//! prints), or many, and say how many seeds a minute this machine runs.
//!
//! Many seeds run `--jobs` at a time, each seed in a process of its own:
//! a seed's run is then the run its replay command gives (two simulations
//! on two threads of one process were seen to differ by a tick), and the
//! output is printed in seed order whatever order they finish in.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::PathBuf;
use std::process::{Command as Process, ExitCode, Output, Stdio};
use std::sync::{mpsc, Condvar, Mutex};
use std::time::Instant;

use clap::{Parser, Subcommand};
use tollgate_sim::system::{run_system, SystemOptions};
use tollgate_sim::{run, Options};

#[derive(Parser)]
#[command(about = "Deterministic simulation of a Tollgate cluster under faults")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct Shape {
    /// Simulated seconds of workload under faults.
    #[arg(long, default_value_t = 60)]
    fault_seconds: u64,
    /// Concurrent writers.
    #[arg(long, default_value_t = 4)]
    writers: usize,
    /// Cluster members.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
}

#[derive(Subcommand)]
enum Command {
    /// Run one seed and print its history (the replay of a failing seed).
    Run {
        #[arg(long)]
        seed: u64,
        #[command(flatten)]
        shape: Shape,
        /// Print only the summary, not every event.
        #[arg(long)]
        quiet: bool,
        /// Also print the nodes' log lines to stderr, filtered like
        /// RUST_LOG (e.g. `info,openraft=debug`); each line names its host.
        #[arg(long)]
        log: Option<String>,
    },
    /// Run seeds `from`, `from + 1`, ... and report every failure.
    Many {
        /// How many seeds.
        #[arg(long, default_value_t = 1000)]
        seeds: u64,
        /// The first seed.
        #[arg(long, default_value_t = 1)]
        from: u64,
        #[command(flatten)]
        shape: Shape,
        /// Seeds run at once, each in a process of its own (by default,
        /// one per core).
        #[arg(long)]
        jobs: Option<usize>,
    },
    /// The whole system (a three-node origin, two regions of three, the
    /// meter and seats) under the chaos workload and checker: one seed, or
    /// `--seeds N` from `--seed`.
    System {
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// How many seeds, from `--seed`.
        #[arg(long, default_value_t = 1)]
        seeds: u64,
        /// Simulated seconds of workload under faults.
        #[arg(long, default_value_t = 30)]
        fault_seconds: u64,
        /// Print the history (one chaos event a line) of each seed.
        #[arg(long)]
        history: bool,
        /// Also print the nodes' log lines to stderr, filtered like
        /// RUST_LOG; each line names its host.
        #[arg(long)]
        log: Option<String>,
        /// Seeds run at once, each in a process of its own (by default,
        /// one per core).
        #[arg(long)]
        jobs: Option<usize>,
    },
}

/// Log lines stamped with the simulation's clock.
struct SimTime;

impl tracing_subscriber::fmt::time::FormatTime for SimTime {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        let at = turmoil::sim_elapsed().unwrap_or_default();
        write!(w, "{:>9}", at.as_millis())
    }
}

fn options(seed: u64, shape: &Shape) -> Options {
    Options {
        seed,
        fault_seconds: shape.fault_seconds,
        writers: shape.writers,
        nodes: shape.nodes,
    }
}

fn log_to_stderr(filter: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        // Simulated milliseconds: the real time differs between runs, the
        // simulated time does not.
        .with_timer(SimTime)
        .with_writer(std::io::stderr)
        .init();
}

/// How many seeds run at once: `--jobs`, or one per core.
fn jobs(asked: Option<usize>) -> usize {
    asked
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
        .max(1)
}

/// Finished seeds held back, per job, behind one still running (their
/// output waits to be printed in seed order): a slow seed pauses the others
/// rather than letting what they printed pile up.
const HELD_BACK_PER_JOB: u64 = 4;

/// Runs this program once per seed of `seeds`, `jobs` at a time, with the
/// arguments `args` gives for the seed, and relays what each printed in seed
/// order (a passing seed's only with `print_passing`); the seeds that failed.
fn in_processes(
    seeds: Range<u64>,
    jobs: usize,
    args: &(dyn Fn(u64) -> Vec<String> + Sync),
    print_passing: bool,
) -> Result<Vec<u64>, String> {
    let program: PathBuf = std::env::current_exe()
        .map_err(|error| format!("cannot find this program to run seeds in: {error}"))?;
    let held_back_max = jobs as u64 * HELD_BACK_PER_JOB;
    // The next seed to start, and the next to print.
    let progress = Mutex::new((seeds.start, seeds.start));
    let printed = Condvar::new();
    let (done, finished) = mpsc::channel();
    let mut failed = Vec::new();
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            let (progress, printed, done, program) = (&progress, &printed, done.clone(), &program);
            let end = seeds.end;
            scope.spawn(move || loop {
                let seed = {
                    let mut progress = progress.lock().unwrap_or_else(|p| p.into_inner());
                    while progress.0 < end && progress.0 >= progress.1 + held_back_max {
                        progress = printed.wait(progress).unwrap_or_else(|p| p.into_inner());
                    }
                    if progress.0 >= end {
                        break;
                    }
                    progress.0 += 1;
                    progress.0 - 1
                };
                let output = Process::new(program)
                    .args(args(seed))
                    .stdin(Stdio::null())
                    .output();
                if done.send((seed, output)).is_err() {
                    break;
                }
            });
        }
        drop(done);
        let mut waiting = BTreeMap::new();
        let mut due = seeds.start;
        for (seed, output) in finished {
            waiting.insert(seed, output);
            while let Some(output) = waiting.remove(&due) {
                if !relay(due, output, print_passing) {
                    failed.push(due);
                }
                due += 1;
                progress.lock().unwrap_or_else(|p| p.into_inner()).1 = due;
                printed.notify_all();
            }
        }
    });
    Ok(failed)
}

/// Success when no seed failed.
fn exit_code(failed: &[u64]) -> ExitCode {
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Whether a seed's process passed; what it printed (its standard output
/// and error: `--log` lines, or the panic that says why it failed) is
/// relayed, a passing seed's only with `print_passing`.
fn relay(seed: u64, output: std::io::Result<Output>, print_passing: bool) -> bool {
    match output {
        Ok(output) => {
            let passed = output.status.success();
            if print_passing || !passed {
                print!("{}", String::from_utf8_lossy(&output.stdout));
                eprint!("{}", String::from_utf8_lossy(&output.stderr));
            }
            if !passed && output.status.code().is_none() {
                println!(
                    "seed {seed}: its process ended without an exit code ({})",
                    output.status
                );
            }
            passed
        }
        Err(error) => {
            println!("seed {seed}: its process did not start: {error}");
            false
        }
    }
}

fn system(
    seed: u64,
    seeds: u64,
    fault_seconds: u64,
    history: bool,
    log: Option<String>,
    jobs: usize,
) -> ExitCode {
    let started = Instant::now();
    let range = seed..seed.saturating_add(seeds);
    let mut failed = Vec::new();
    if seeds == 1 || jobs == 1 {
        if let Some(filter) = &log {
            log_to_stderr(filter);
        }
        for seed in range {
            if !system_seed(seed, fault_seconds, history) {
                failed.push(seed);
            }
        }
    } else {
        let args = |seed: u64| {
            let mut args = vec![
                "system".to_string(),
                format!("--seed={seed}"),
                format!("--fault-seconds={fault_seconds}"),
            ];
            if history {
                args.push("--history".into());
            }
            if let Some(filter) = &log {
                args.push(format!("--log={filter}"));
            }
            args
        };
        match in_processes(range, jobs, &args, true) {
            Ok(failures) => failed = failures,
            Err(error) => {
                println!("{error}");
                return ExitCode::FAILURE;
            }
        }
    }
    if seeds > 1 {
        let minutes = started.elapsed().as_secs_f64() / 60.0;
        println!(
            "{seeds} system seeds ({fault_seconds} simulated seconds of faults each, {jobs} at a time) in {:.1} s: {:.1} seeds a minute; {} failed {failed:?}",
            started.elapsed().as_secs_f64(),
            seeds as f64 / minutes.max(f64::MIN_POSITIVE),
            failed.len()
        );
    }
    exit_code(&failed)
}

/// Runs one seed of the whole system here and prints what it saw; whether
/// it passed.
fn system_seed(seed: u64, fault_seconds: u64, history: bool) -> bool {
    let options = SystemOptions {
        seed,
        fault_seconds,
    };
    let run_started = Instant::now();
    let outcome = run_system(&options);
    if history {
        for line in &outcome.history {
            println!("{line}");
        }
    }
    println!(
        "seed {seed}: {} events, {} faults, {:.1} s simulated in {:.2} s; {}",
        outcome.history.len(),
        outcome.faults,
        outcome.simulated.as_secs_f64(),
        run_started.elapsed().as_secs_f64(),
        outcome.stats
    );
    if !outcome.passed() {
        for violation in &outcome.violations {
            println!("VIOLATION: {violation}");
        }
        println!("FAIL; replay: {}", options.replay_command());
    }
    outcome.passed()
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::System {
            seed,
            seeds,
            fault_seconds,
            history,
            log,
            jobs: asked,
        } => system(seed, seeds, fault_seconds, history, log, jobs(asked)),
        Command::Run {
            seed,
            shape,
            quiet,
            log,
        } => {
            if let Some(filter) = log {
                log_to_stderr(&filter);
            }
            let options = options(seed, &shape);
            let started = Instant::now();
            let outcome = run(&options);
            if !quiet {
                for line in &outcome.history {
                    println!("{line}");
                }
            }
            println!(
                "seed {seed}: {} acknowledged, {} unacknowledged writes, {} faults, {:.1} s simulated in {:.2} s",
                outcome.acknowledged,
                outcome.unacknowledged,
                outcome.faults,
                outcome.simulated.as_secs_f64(),
                started.elapsed().as_secs_f64()
            );
            if outcome.passed() {
                println!("PASS");
                ExitCode::SUCCESS
            } else {
                for violation in &outcome.violations {
                    println!("VIOLATION: {violation}");
                }
                println!("FAIL; replay: {}", options.replay_command());
                ExitCode::FAILURE
            }
        }
        Command::Many {
            seeds,
            from,
            shape,
            jobs: asked,
        } => many(from..from.saturating_add(seeds), &shape, jobs(asked)),
    }
}

fn many(range: Range<u64>, shape: &Shape, jobs: usize) -> ExitCode {
    let started = Instant::now();
    let seeds = range.end - range.start;
    let mut failed = Vec::new();
    if jobs == 1 {
        for seed in range {
            let options = options(seed, shape);
            let outcome = run(&options);
            if !outcome.passed() {
                println!(
                    "seed {seed} FAILED: {}; replay: {}",
                    outcome.violations.join("; "),
                    options.replay_command()
                );
                failed.push(seed);
            }
        }
    } else {
        let args = |seed: u64| {
            vec![
                "run".to_string(),
                "--quiet".to_string(),
                format!("--seed={seed}"),
                format!("--fault-seconds={}", shape.fault_seconds),
                format!("--writers={}", shape.writers),
                format!("--nodes={}", shape.nodes),
            ]
        };
        match in_processes(range, jobs, &args, false) {
            Ok(failures) => failed = failures,
            Err(error) => {
                println!("{error}");
                return ExitCode::FAILURE;
            }
        }
    }
    let minutes = started.elapsed().as_secs_f64() / 60.0;
    println!(
        "{seeds} seeds ({} simulated seconds of faults each, {jobs} at a time) in {:.1} s: {:.0} seeds a minute; {} failed {failed:?}",
        shape.fault_seconds,
        started.elapsed().as_secs_f64(),
        seeds as f64 / minutes.max(f64::MIN_POSITIVE),
        failed.len()
    );
    exit_code(&failed)
}
