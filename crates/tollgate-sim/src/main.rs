//! `tollgate-sim`: run one seed (the replay command a failing seed
//! prints), or many, and say how many seeds a minute this machine runs.

use std::process::ExitCode;
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

fn system(seed: u64, seeds: u64, fault_seconds: u64, history: bool) -> ExitCode {
    let started = Instant::now();
    let mut failed = Vec::new();
    for seed in seed..seed.saturating_add(seeds) {
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
            failed.push(seed);
        }
    }
    let minutes = started.elapsed().as_secs_f64() / 60.0;
    println!(
        "{seeds} system seeds ({fault_seconds} simulated seconds of faults each) in {:.1} s: {:.1} seeds a minute; {} failed {failed:?}",
        started.elapsed().as_secs_f64(),
        seeds as f64 / minutes.max(f64::MIN_POSITIVE),
        failed.len()
    );
    match failed.is_empty() {
        true => ExitCode::SUCCESS,
        false => ExitCode::FAILURE,
    }
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::System {
            seed,
            seeds,
            fault_seconds,
            history,
            log,
        } => {
            if let Some(filter) = log {
                log_to_stderr(&filter);
            }
            system(seed, seeds, fault_seconds, history)
        }
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
        Command::Many { seeds, from, shape } => {
            let started = Instant::now();
            let mut failed = Vec::new();
            for seed in from..from.saturating_add(seeds) {
                let options = options(seed, &shape);
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
            let minutes = started.elapsed().as_secs_f64() / 60.0;
            println!(
                "{seeds} seeds ({} simulated seconds of faults each) in {:.1} s: {:.0} seeds a minute; {} failed {failed:?}",
                shape.fault_seconds,
                started.elapsed().as_secs_f64(),
                seeds as f64 / minutes.max(f64::MIN_POSITIVE),
                failed.len()
            );
            match failed.is_empty() {
                true => ExitCode::SUCCESS,
                false => ExitCode::FAILURE,
            }
        }
    }
}
