//! `tollgate`: one binary for every role: `dev` (an origin and two regions
//! in one process), `serve` (an origin or a region node from a config
//! file), `ctl` (the operator's and admin's client, `ctl check` included),
//! `bench check` (a load generator) and `eval` (a check decided offline).
//! Only commands that work are exposed. `tollgate check` is a hidden alias
//! of `tollgate ctl check`, kept for scripts written before there was one
//! check command.

mod bench;
mod config;
mod ctl;
mod dev;
mod eval;
mod serve;

use clap::{Parser, Subcommand, ValueEnum};
use std::process::ExitCode;

/// Exit codes that scripts can rely on.
pub mod exit {
    /// The command succeeded (for `eval`: the check was allowed).
    pub const OK: u8 = 0;
    /// Something failed that is not the caller's input (I/O, internal).
    pub const FAILURE: u8 = 1;
    /// The input was invalid: flags, a data file, an id.
    pub const INVALID_INPUT: u8 = 2;
    /// `eval`, `ctl check`: the check was answered, and the answer is a
    /// denial (the reason code says why).
    pub const DENIED: u8 = 10;
    /// `dev`: stopped by SIGINT (Ctrl-C) before it was ready (128 + 2).
    pub const INTERRUPTED: u8 = 130;
    /// `dev`: stopped by SIGTERM before it was ready (128 + 15).
    pub const TERMINATED: u8 = 143;
}

#[derive(Debug, Parser)]
#[command(
    name = "tollgate",
    version,
    about = "Tollgate: an edge-replicated software-entitlement cache."
)]
struct Cli {
    /// Log filter (tracing's EnvFilter syntax), e.g. `info` or `tollgate=debug`.
    /// The default leaves out openraft's warnings, which at every election
    /// report vote replies that arrived after the vote was decided; `warn`
    /// shows them.
    #[arg(
        long,
        env = "TOLLGATE_LOG",
        default_value = "warn,openraft=error",
        global = true
    )]
    log: String,

    /// Log lines as text (for people) or JSON (one object per line, for
    /// log pipelines).
    #[arg(
        long,
        env = "TOLLGATE_LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run an origin and two three-node regions in one process on loopback,
    /// with demo data and a demo geography, until Ctrl-C.
    Dev(dev::DevArgs),
    /// `tollgate ctl check`, under its old name: the same flags, output
    /// and exit codes.
    #[command(hide = true)]
    Check(Box<ctl::CheckAlias>),
    /// Load generators: throughput and latency percentiles.
    Bench(Box<bench::BenchArgs>),
    /// Decide one check offline, with the same engine the nodes run,
    /// against a data set file (or the built-in demo data).
    Eval(Box<eval::EvalArgs>),
    /// Run an origin or a region node from a config file until SIGINT or
    /// SIGTERM (examples: deploy/config/origin.example.toml and
    /// deploy/config/region.example.toml).
    Serve(serve::ServeArgs),
    /// The operator's and admin's client: node status, checks (`ctl
    /// check`: exit 0 allowed, 10 denied), accounts,
    /// entitlements, orders (and bulk import), access requests, the audit
    /// log, license tokens, signing keys, geo lookups, Raft membership.
    Ctl(Box<ctl::CtlArgs>),
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// How results are printed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// For people.
    #[default]
    Text,
    /// One JSON document, for scripts.
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = match tracing_subscriber::EnvFilter::try_new(&cli.log) {
        Ok(filter) => filter,
        Err(error) => {
            eprintln!("error: --log {:?} is not a valid filter: {error}", cli.log);
            return ExitCode::from(exit::INVALID_INPUT);
        }
    };
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    // openraft's ERROR lines for a peer not listening yet are dropped: the
    // Raft network reports an outage itself, at WARN once it lasts.
    let subscriber = tracing_subscriber::registry()
        .with(filter)
        .with(tollgate_raft::quiet::QuietUnreachable);
    match cli.log_format {
        LogFormat::Text => subscriber.with(logs).init(),
        LogFormat::Json => subscriber.with(logs.json().flatten_event(true)).init(),
    }

    let code = match cli.command {
        Command::Dev(args) => dev::run(args),
        Command::Check(args) => ctl::run_check_alias(*args),
        Command::Bench(args) => bench::run(*args),
        Command::Eval(args) => eval::run(*args),
        Command::Serve(args) => serve::run(args),
        Command::Ctl(args) => ctl::run(*args),
    };
    ExitCode::from(code)
}
