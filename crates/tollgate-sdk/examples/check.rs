//! One check asked two ways: remotely, of a region node, and locally, of a
//! replica that follows the region. Against `tollgate dev` (TLS, with the
//! CA it wrote):
//!
//! ```text
//! cargo run -p tollgate-sdk --example check -- \
//!     --endpoint https://127.0.0.1:7300 --endpoint https://127.0.0.1:7301 \
//!     --ca <tollgate dev --data-dir>/tls/ca.pem \
//!     --account acme --subject alice --feature export
//! ```
//!
//! `https://` endpoints are verified against `--ca` (or the operating
//! system's CA store without it), host name included; `--cert`/`--key`
//! present a client certificate. `http://` endpoints are for nodes run with
//! `insecure_plaintext = true` only.

use anyhow::Context;
use clap::Parser;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tollgate_sdk::{check_request, Client, ClientTlsOptions, Replica};

#[derive(Debug, Parser)]
struct Args {
    /// A region node's check endpoint; repeat for failover.
    #[arg(long = "endpoint", default_value = "https://127.0.0.1:7300")]
    endpoints: Vec<String>,
    /// CA bundle (PEM) the nodes' certificates must chain to; without it,
    /// the operating system's CA store.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Client certificate (PEM) to present, for ports that ask for one.
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    #[arg(long)]
    account: String,
    #[arg(long)]
    subject: Option<String>,
    #[arg(long)]
    feature: String,
    /// Every call's deadline, in milliseconds.
    #[arg(long, default_value_t = 2_000)]
    deadline_ms: u64,
    /// How long to wait for the replica to catch up and hear how fresh the
    /// region is, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    replica_wait_ms: u64,
}

/// How often the example looks at whether the replica knows the region's
/// freshness yet.
const FRESHNESS_POLL: Duration = Duration::from_millis(50);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let account = args.account.parse().context("--account")?;
    let subject = args
        .subject
        .as_deref()
        .map(str::parse)
        .transpose()
        .context("--subject")?;
    let feature = args.feature.parse().context("--feature")?;
    let request = check_request(account, subject, feature);

    let client = Client::builder()
        .endpoints(args.endpoints.clone())
        .tls_options(ClientTlsOptions {
            ca: args.ca.clone(),
            cert: args.cert.clone(),
            key: args.key.clone(),
        })
        .deadline(Duration::from_millis(args.deadline_ms))
        .build()?;

    let started = Instant::now();
    let remote = client.check(request.clone()).await?;
    println!(
        "remote  {:<16} {} (revision {}, answered by {} at {}, {:?} since the region heard from the origin, {:?})",
        remote.decision.reason.to_string(),
        remote.decision.explain(),
        remote.revision,
        remote.answered_by,
        remote.endpoint,
        remote.staleness_seconds.map(Duration::from_secs),
        started.elapsed(),
    );

    let replica = Replica::start(&client, Some(request.check.account.clone()))?;
    let wait = Duration::from_millis(args.replica_wait_ms);
    replica.wait_for_revision(remote.revision, wait).await?;
    // A node says how fresh the region is in its heartbeats (every few
    // seconds when idle); until one arrives the replica dates the data by
    // its changes' commit times, which can be older.
    let deadline = Instant::now() + wait;
    while replica
        .staleness()
        .origin_seconds
        .is_none_or(|s| s > remote.staleness_seconds.unwrap_or(0) + 60)
        && Instant::now() < deadline
    {
        tokio::time::sleep(FRESHNESS_POLL).await;
    }

    let started = Instant::now();
    let local = replica.check(&request)?;
    let took = started.elapsed();
    println!(
        "local   {:<16} {} (revision {}, {:?} since the region heard from the origin, {:?} since the replica heard from the region, {took:?}){}",
        local.decision.reason.to_string(),
        local.decision.explain(),
        local.revision,
        local.staleness.origin_seconds.map(Duration::from_secs),
        local.staleness.since_region,
        if local.approximate {
            " (approximate: usage and floating seats live in the region)"
        } else {
            ""
        },
    );
    Ok(())
}
