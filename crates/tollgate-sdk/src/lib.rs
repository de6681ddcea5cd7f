//! Tollgate's Rust SDK, for application teams: ask a region whether a
//! subject may use a feature, meter consumption, hold floating seats, and
//! (optionally) keep a local replica that answers checks in-process.
//!
//! # The remote client
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use tollgate_sdk::{check_request, Client};
//!
//! let client = Client::builder()
//!     .endpoints(["https://eu-1.example.com:7300", "https://eu-2.example.com:7300"])
//!     // The cluster's CA (`tollgate ctl certs`); without it, the OS CA store.
//!     .ca_file("/etc/tollgate/ca.pem")
//!     // Only for ports that ask for a client certificate.
//!     .client_identity("/etc/tollgate/app.pem", "/etc/tollgate/app.key")
//!     .deadline(Duration::from_secs(2))
//!     .connect_timeout(Duration::from_millis(500))
//!     .build()?;
//! let request = check_request("acme".parse()?, Some("alice".parse()?), "export".parse()?);
//! let answer = client.check(request).await?;
//! println!("{} by {}", answer.decision.reason, answer.answered_by);
//! # Ok(())
//! # }
//! ```
//!
//! - **TLS, verified.** `https://` endpoints are encrypted, and each
//!   node's certificate must chain to the CA bundle given with
//!   [`ClientBuilder::ca_file`] (or the operating system's CA store) and
//!   name the endpoint's host (DNS or IP subject alternative name). A
//!   client certificate is presented if given
//!   ([`ClientBuilder::client_identity`]). `http://` is only for nodes run
//!   with `insecure_plaintext = true`; one client's endpoints all use the
//!   same scheme, and the files are read once, when the client is built.
//! - **One lazily connected channel per endpoint.** Nothing is dialled
//!   until the first call.
//! - **Every call has a deadline**, failovers and hedges included: the
//!   builder's (2 s by default), or another one through
//!   [`Client::with_deadline`].
//! - **Failover.** A call starts with the endpoint that answered last,
//!   then tries the others round-robin, those that failed or timed out
//!   lately ([`ClientBuilder::suspect_for`], 10 s) last. When an endpoint
//!   cannot be reached (connection refused, connect or TLS handshake
//!   timeout, connection broken), answers `UNAVAILABLE`,
//!   `RESOURCE_EXHAUSTED` or `DEADLINE_EXCEEDED`, or does not answer
//!   within its attempt's share of the deadline, the next one is tried at
//!   once, with a short pause after each full round, until the deadline:
//!   then [`SdkError::Unavailable`] (or [`SdkError::DeadlineExceeded`]
//!   when the time ran out on an endpoint that did not answer). Any other
//!   answer ends the call: a bad request is [`SdkError::InvalidRequest`]
//!   from every node, so it is never retried.
//! - **A hung node costs a fraction of the deadline, not all of it.** Each
//!   attempt gets an equal share of the time left among the endpoints not
//!   yet tried, at least [`ClientBuilder::attempt_timeout_min`] (250 ms),
//!   except a check that waits for a revision, which gets all of it.
//!   **Hedging**: an attempt with no answer after the hedge delay is
//!   joined by one on the next endpoint, the first answer wins and the
//!   other is cancelled; the delay follows how long answers take (smoothed
//!   plus four deviations, within 100–500 ms by default:
//!   [`ClientBuilder::hedge_delay_min`], [`ClientBuilder::hedge_delay_max`],
//!   [`ClientBuilder::hedging`]). **HTTP/2 keepalive** pings a silent
//!   connection after 2 s and drops it when the ping is not answered
//!   within 1 s ([`ClientBuilder::keepalive_interval`],
//!   [`ClientBuilder::keepalive_timeout`]), so a stopped node or a dead
//!   NAT entry is noticed and the next attempt dials afresh.
//! - **Every call is safe to send twice**, which failover and hedging may
//!   do: checks change nothing, consumption and usage reports carry one
//!   idempotency key for every attempt, and seat calls are idempotent per
//!   holder at the region (see [`Client`]).
//! - **Consumption is counted once.** A check that consumes gets an
//!   idempotency key when the caller gave none, and the same key goes to
//!   every endpoint tried; the key is in the answer so the caller can retry
//!   later too. `report_usage` does the same.
//! - **A denial is not an error**: it is a [`Decision`] with a [`Reason`].
//!   Errors are typed ([`SdkError`], with a stable [`SdkError::code`]).
//!
//! # The local replica
//!
//! [`Replica`] follows a node's `Watch` stream for one account (plus the
//! catalog) or all of them, keeps the data in memory, rebuilds the engine's
//! views at every revision, and answers [`Replica::check`] with the same
//! `tollgate_engine::decide` call a node makes, so the same inputs give the
//! same decision. It resumes from its revision on the next endpoint when a
//! stream ends or fails, and keeps answering from its last state while no
//! node can be reached, its staleness growing (offline policies apply to
//! it as they do on a node).
//!
//! What it cannot answer, it refuses with [`SdkError::NeedsRegion`]:
//! consumption (metering is the region's), an IP address (the replica
//! resolves none; give a resolved country or continent), an account outside
//! its scope. Usage counters and floating-seat leases live only in the
//! region: a decision that read them is flagged
//! [`LocalDecision::approximate`].
//!
//! # Offline license verification
//!
//! [`OfflineVerifier`] checks license tokens with the origin's public key
//! set alone: from a file shipped with the application
//! ([`OfflineVerifier::from_file`]), or fetched from the origin's
//! `https://<origin>/.well-known/tollgate-keys.json` over verified TLS
//! ([`OfflineVerifier::fetch`]; never over `http://`). Call
//! [`OfflineVerifier::refresh_from`] now and then to pick up rotated keys:
//! the new set is swapped in atomically, so verifications running
//! meanwhile are not disturbed, and a failed refresh leaves the old set in
//! use.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use tollgate_sdk::{ClientTlsOptions, OfflineVerifier};
//!
//! let url = "https://origin.example.com:7400/.well-known/tollgate-keys.json";
//! let tls = ClientTlsOptions {
//!     ca: Some("/etc/tollgate/ca.pem".into()),
//!     ..ClientTlsOptions::default()
//! };
//! let verifier = OfflineVerifier::fetch(url, &tls, "studio", Duration::from_secs(5)).await?;
//! # let token = "";
//! let license = verifier.verify(token, None)?;
//! // Later, on a timer:
//! let rotated = verifier.refresh_from(url, &tls, Duration::from_secs(5)).await?;
//! # let _ = (license, rotated);
//! # Ok(())
//! # }
//! ```
//!
//! # Architecture invariants
//!
//! - The SDK never decides anything itself: remote answers come from a
//!   node, local ones from `tollgate_engine::decide`.
//! - Nothing a node sends is trusted to convert: a response that does not
//!   is [`SdkError::Protocol`], never a panic.
//! - Limits: at most [`ENDPOINTS_MAX`] endpoints, 128 checks per batch,
//!   a bounded response size, a bounded replica ([`ReplicaBuilder::objects_max`]).

mod answer;
mod client;
mod error;
mod offline;
mod replica;
mod store;
mod wire;

pub use answer::{BatchChecked, Checked, Seat, SeatStatus, UsageReported};
pub use client::{
    new_idempotency_key, Client, ClientBuilder, WithCredential, ATTEMPT_TIMEOUT_MIN_DEFAULT,
    CONNECT_TIMEOUT_DEFAULT, DEADLINE_DEFAULT, ENDPOINTS_MAX, HEDGE_DELAY_MAX_DEFAULT,
    HEDGE_DELAY_MIN_DEFAULT, KEEPALIVE_INTERVAL_DEFAULT, KEEPALIVE_TIMEOUT_DEFAULT,
    SUSPECT_FOR_DEFAULT,
};
pub use error::SdkError;
pub use offline::{OfflineVerifier, KEY_SET_PATH};
pub use replica::{
    LocalDecision, Replica, ReplicaBuilder, Staleness, IDLE_TIMEOUT_DEFAULT, OBJECTS_MAX_DEFAULT,
    RECONNECT_BACKOFF_MAX_DEFAULT, RECONNECT_BACKOFF_MIN_DEFAULT,
};
/// The wall clock the SDK reads, handed in by the application
/// ([`ClientBuilder::clock`], [`Replica::with_clock`],
/// [`OfflineVerifier::with_clock`]); the system clock by default.
pub use tollgate_clock::Clock;
pub use tollgate_license::{License, LicenseError};
/// The TLS settings of [`ClientBuilder::tls_options`] and
/// [`OfflineVerifier::fetch`].
pub use tollgate_tls::ClientTlsOptions;
// The vocabulary of a check, re-exported so applications need no other
// Tollgate crate for the common cases.
pub use tollgate_engine::{Check, CheckRequest, Consistency, Decision, Location, Reason};
pub use tollgate_model::{AccountId, FeatureId, GeoFacts, SubjectId};

/// A plain check (no consumption, no location, answered at once) of
/// `feature` for `subject` of `account`; set the other fields as needed.
pub fn check_request(
    account: AccountId,
    subject: Option<SubjectId>,
    feature: FeatureId,
) -> CheckRequest {
    CheckRequest {
        check: Check {
            account,
            subject,
            feature,
            consume: 0,
        },
        location: Location::Unknown,
        consistency: Consistency::Local,
        idempotency_key: None,
    }
}
