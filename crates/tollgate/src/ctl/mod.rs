//! `tollgate ctl`: the operator's and admin's client. It talks to region
//! nodes (their HTTP `/v1/status`, their gRPC check service, their cluster
//! admin service), to the origin's REST API (`--origin`, with an API key),
//! and to local files (license tokens, key sets, MaxMind databases, the
//! certificates of `ctl certs`).
//!
//! Every link is TLS (`https://`): `--ca` names the CA bundle the nodes'
//! certificates chain to (the system's CA store without it), and
//! `--cert`/`--key` a client certificate, which the Raft port's cluster
//! admin service requires (an operator certificate). `http://` URLs reach
//! nodes running with `tls.insecure_plaintext`.
//!
//! Tables for people by default, `--output json` for scripts. Errors go to
//! stderr as one `error:` line; a problem the origin answered is shown with
//! its stable `code` and its `detail`.
//!
//! Exit codes (also printed by `tollgate ctl --help`):
//!
//! | code | meaning |
//! | ---- | ------- |
//! | 0    | done (for `check`: allowed; for `license verify`: the token is valid) |
//! | 1    | failure: the server failed, a node or the origin is unreachable, a network error, an import with failed lines |
//! | 2    | usage or invalid input: flags, files, ids, a body the origin refused as invalid (400, 413, 415, 422) |
//! | 3    | not found (404) |
//! | 4    | conflict (409): e.g. an order id reused with another body, a revoked entitlement resumed |
//! | 5    | not authorised (401, 403): no API key, a wrong or revoked one, or one that lacks the scope |
//! | 10   | `check` was denied, or `license verify` refused the token |

mod admin;
mod api_keys;
mod backup;
mod certs;
mod check;
mod cluster;
mod credentials;
mod geo;
mod import;
mod license;
mod origin;
mod portal_users;
mod status;
mod table;
pub(crate) mod tls;

pub use check::{run_alias as run_check_alias, CheckAlias};

use clap::{Args, Subcommand, ValueEnum};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// The exit codes of `tollgate ctl` (see the module documentation).
pub mod exit {
    pub use crate::exit::{DENIED, FAILURE, INVALID_INPUT, OK};
    /// The object asked for does not exist (HTTP 404).
    pub const NOT_FOUND: u8 = 3;
    /// The change contradicts the current state (HTTP 409).
    pub const CONFLICT: u8 = 4;
    /// The API key is missing, wrong, revoked or lacks the scope (HTTP 401, 403).
    pub const UNAUTHORIZED: u8 = 5;
}

const EXIT_CODES_HELP: &str = "\
Exit codes:
  0   done (check: allowed; license verify: the token is valid)
  1   failure: server error, unreachable node or origin, network; an import with failed lines
  2   usage or invalid input (flags, files, ids; 400/413/415/422 from the origin)
  3   not found (404)
  4   conflict (409)
  5   not authorised (401/403): no API key, a wrong or revoked one, or a missing scope
  10  check denied, or license token refused";

/// Longest time any one request may take when `--timeout-seconds` is not given.
const TIMEOUT_SECONDS_DEFAULT: u64 = 10;
/// The longest `--timeout-seconds` accepted: an hour is a hang, not a wait.
const TIMEOUT_SECONDS_MAX: u64 = 3600;

#[derive(Debug, Args)]
#[command(after_help = EXIT_CODES_HELP)]
pub struct CtlArgs {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: CtlCommand,
}

/// Options every `ctl` command takes (before or after the command's name).
#[derive(Debug, Clone, Args)]
pub struct Global {
    /// The origin's REST API, `https://host:port` (`http://` only for an
    /// origin running with tls.insecure_plaintext).
    #[arg(
        long,
        env = "TOLLGATE_ORIGIN",
        default_value = "https://127.0.0.1:8080",
        global = true
    )]
    origin: String,
    /// API key for the origin (`tg_<id>.<secret>`).
    #[arg(long, env = "TOLLGATE_API_KEY", hide_env_values = true, global = true)]
    api_key: Option<String>,
    /// Read the API key from this file (e.g. the origin's `admin.token`);
    /// takes precedence over --api-key and TOLLGATE_API_KEY.
    #[arg(long, global = true)]
    api_key_file: Option<PathBuf>,
    /// Tables for people, or JSON for scripts.
    #[arg(long, value_enum, default_value_t, global = true)]
    pub(crate) output: Format,
    /// Give up on any one request after this long (connecting included).
    #[arg(long, default_value_t = TIMEOUT_SECONDS_DEFAULT, global = true)]
    timeout_seconds: u64,
    /// Why: recorded with every change in the origin's audit log
    /// (`X-Tollgate-Reason`).
    #[arg(long, global = true)]
    reason: Option<String>,
    #[command(flatten)]
    pub(crate) tls: tls::ClientTlsArgs,
}

impl Global {
    fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_seconds)
    }

    /// Defaults, with `tls`, for the tests of the commands.
    #[cfg(test)]
    pub(crate) fn for_test(tls: tls::ClientTlsArgs) -> Global {
        Global {
            origin: "https://127.0.0.1:8080".into(),
            api_key: None,
            api_key_file: None,
            output: Format::Table,
            timeout_seconds: 5,
            reason: None,
            tls,
        }
    }
}

/// How results are printed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns, for people.
    #[default]
    Table,
    /// JSON on stdout, for scripts.
    Json,
}

#[derive(Debug, Subcommand)]
enum CtlCommand {
    /// The state of region nodes, one row per node, from their operations
    /// port's `/v1/status`: role, term, leader, applied revision, lag,
    /// staleness, geo database, TLS certificate. Exits 1 if any node is
    /// unreachable.
    Status(status::StatusArgs),
    /// Ask a region node one check and explain the decision. Exits 0 when
    /// allowed, 10 when denied.
    Check(check::CheckArgs),
    /// Customer accounts at the origin.
    #[command(subcommand)]
    Accounts(admin::AccountsCommand),
    /// Entitlements at the origin: list, read, grant, and the lifecycle.
    #[command(subcommand)]
    Entitlements(admin::EntitlementsCommand),
    /// Orders from a CRM or billing system: one, or a bulk import.
    #[command(subcommand)]
    Orders(admin::OrdersCommand),
    /// Access requests: list (the approval queue), read, approve, deny.
    #[command(subcommand, name = "access-requests")]
    AccessRequests(admin::AccessRequestsCommand),
    /// The origin's audit log.
    #[command(subcommand)]
    Audit(admin::AuditCommand),
    /// License tokens: issue, inspect, verify offline, revoke.
    #[command(subcommand)]
    License(license::LicenseCommand),
    /// The origin's signing keys: list, rotate, retire.
    #[command(subcommand)]
    Keys(license::KeysCommand),
    /// REST API keys at the origin: create (the tenant's, or with
    /// --account one customer account's), list, revoke.
    #[command(subcommand, name = "api-keys")]
    ApiKeys(api_keys::ApiKeysCommand),
    /// Application credentials for region check ports: create (scoped to
    /// accounts, products and verbs; the token is shown once), list, show,
    /// revoke.
    #[command(subcommand)]
    Credentials(credentials::CredentialsCommand),
    /// Portal users at the origin: list, invite (prints the invitation's
    /// URL: how a deployment gets its first vendor administrator),
    /// reinvite, remove.
    #[command(subcommand, name = "portal-users")]
    PortalUsers(portal_users::PortalUsersCommand),
    /// Resolve an IP address with MaxMind databases, as a region node does.
    #[command(subcommand)]
    Geo(geo::GeoCommand),
    /// Raft membership of a cluster (region or origin), over its cluster
    /// admin service on the Raft port.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// A CA and certificates for nodes, operators and applications, made
    /// offline: init (the CA), issue, show.
    #[command(subcommand)]
    Certs(certs::CertsCommand),
}

/// A command that did not succeed: the exit code, a stable code (the
/// origin's problem code, or one of ours) and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CtlError {
    pub exit: u8,
    pub code: String,
    pub message: String,
}

impl CtlError {
    pub fn new(exit: u8, code: impl Into<String>, message: impl Into<String>) -> CtlError {
        CtlError {
            exit,
            code: code.into(),
            message: message.into(),
        }
    }

    /// Bad flags, files or ids: the caller's input.
    pub fn usage(message: impl Into<String>) -> CtlError {
        CtlError::new(exit::INVALID_INPUT, "INVALID_INPUT", message)
    }

    /// A server, network or local failure that is not the caller's input.
    pub fn failure(message: impl Into<String>) -> CtlError {
        CtlError::new(exit::FAILURE, "FAILURE", message)
    }

    /// The server could not be reached or did not answer in time.
    pub fn unreachable(message: impl Into<String>) -> CtlError {
        CtlError::new(exit::FAILURE, "UNREACHABLE", message)
    }
}

impl fmt::Display for CtlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

pub type CtlResult<T> = Result<T, CtlError>;

pub fn run(args: CtlArgs) -> u8 {
    if args.global.timeout_seconds == 0 || args.global.timeout_seconds > TIMEOUT_SECONDS_MAX {
        eprintln!("error: --timeout-seconds: must be 1..={TIMEOUT_SECONDS_MAX}");
        return exit::INVALID_INPUT;
    }
    // Two workers: an import keeps a few requests in flight, nothing here
    // is CPU-bound.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return exit::FAILURE;
        }
    };
    let global = args.global;
    let outcome = runtime.block_on(async move {
        match args.command {
            CtlCommand::Status(a) => status::run(&global, a).await,
            CtlCommand::Check(a) => check::run(&global, a).await,
            CtlCommand::Accounts(c) => admin::accounts(&global, c).await,
            CtlCommand::Entitlements(c) => admin::entitlements(&global, c).await,
            CtlCommand::Orders(c) => admin::orders(&global, c).await,
            CtlCommand::AccessRequests(c) => admin::access_requests(&global, c).await,
            CtlCommand::Audit(c) => admin::audit(&global, c).await,
            CtlCommand::License(c) => license::license(&global, c).await,
            CtlCommand::Keys(c) => license::keys(&global, c).await,
            CtlCommand::ApiKeys(c) => api_keys::run(&global, c).await,
            CtlCommand::Credentials(c) => credentials::run(&global, c).await,
            CtlCommand::PortalUsers(c) => portal_users::run(&global, c).await,
            CtlCommand::Geo(c) => geo::run(&global, c),
            CtlCommand::Cluster(c) => cluster::run(&global, c).await,
            CtlCommand::Certs(c) => certs::run(&global, c),
        }
    });
    match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error}");
            error.exit
        }
    }
}

/// Prints `value` as pretty JSON on stdout.
pub fn print_json(value: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
    );
}

/// A Unix time as RFC 3339 (UTC), or the number if it is out of range.
pub fn format_time(seconds: i64) -> String {
    tollgate_license::format_rfc3339(tollgate_model::UnixSeconds(seconds))
        .unwrap_or_else(|| seconds.to_string())
}

/// The current Unix time.
pub fn now_seconds() -> i64 {
    tollgate_clock::Clock::system().now_secs()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::FromArgMatches as _;

    fn command() -> clap::Command {
        CtlArgs::augment_args(clap::Command::new("ctl"))
    }

    fn parse(args: &[&str]) -> Result<CtlArgs, clap::Error> {
        let matches =
            command().try_get_matches_from(std::iter::once("ctl").chain(args.iter().copied()))?;
        CtlArgs::from_arg_matches(&matches)
    }

    #[test]
    fn the_flags_are_consistent() {
        command().debug_assert();
    }

    #[test]
    fn tls_options_go_before_or_after_the_command() {
        let args = parse(&[
            "--ca",
            "ca.pem",
            "cluster",
            "status",
            "--endpoint",
            "h:1",
            "--cert",
            "op.pem",
            "--key",
            "op.key",
        ])
        .unwrap();
        assert_eq!(args.global.tls.ca, Some(PathBuf::from("ca.pem")));
        assert_eq!(args.global.tls.cert, Some(PathBuf::from("op.pem")));
        assert_eq!(args.global.tls.key, Some(PathBuf::from("op.key")));
        let error = parse(&["--cert", "op.pem", "certs", "show", "x.pem"])
            .err()
            .unwrap();
        assert_eq!(
            error.kind(),
            clap::error::ErrorKind::MissingRequiredArgument
        );
        let args = parse(&[
            "certs", "issue", "--ca-dir", "pki", "--region", "eu", "--node", "2", "--dns", "a.b",
            "--dns", "c.d", "--ip", "10.0.0.1",
        ])
        .unwrap();
        assert!(matches!(args.command, CtlCommand::Certs(_)));
        assert!(parse(&[
            "certs",
            "issue",
            "--ca-dir",
            "pki",
            "--operator",
            "a",
            "--app",
            "b"
        ])
        .is_err());
        assert!(parse(&["certs", "issue", "--ca-dir", "pki", "--region", "eu"]).is_err());
    }
}
