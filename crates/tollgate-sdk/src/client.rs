//! The remote client: every call goes to one of the region's nodes over
//! gRPC, fails over to the next endpoint when one is unreachable, hung or
//! unavailable, hedges to a second node when the first is slow to answer,
//! and is bounded by a deadline.
//!
//! Why every call may be sent more than once: see [`Client`].

use crate::answer::{BatchChecked, Checked, Seat, UsageReported};
use crate::error::{classify, Failure, SdkError};
use crate::wire;
use futures::stream::{FuturesUnordered, StreamExt};
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tollgate_clock::Clock;
use tollgate_engine::{Check, CheckRequest, Consistency, Location, BATCH_CHECKS_MAX, CONSUME_MAX};
use tollgate_model::{AccountId, FeatureId, SubjectId};
use tollgate_proto::check::v1 as pb;
use tollgate_proto::check::v1::check_service_client::CheckServiceClient;
use tollgate_proto::convert::{batch_to_proto, SeatHolder, UsageReport};
use tollgate_proto::usage::v1 as usage;
use tollgate_proto::usage::v1::usage_client::UsageClient;
use tollgate_tls::{ClientTlsOptions, Expect, Transport};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::Channel;
use tonic::Status;

/// Default for [`ClientBuilder::deadline`].
pub const DEADLINE_DEFAULT: Duration = Duration::from_secs(2);
/// Default for [`ClientBuilder::connect_timeout`].
pub const CONNECT_TIMEOUT_DEFAULT: Duration = Duration::from_millis(500);
/// Most endpoints one client holds.
pub const ENDPOINTS_MAX: usize = 64;
/// Largest response accepted (a full batch, a watch message of 512 change
/// records). tonic's default of 4 MiB is too small for the latter.
pub(crate) const MESSAGE_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Default for [`ClientBuilder::attempt_timeout_min`].
pub const ATTEMPT_TIMEOUT_MIN_DEFAULT: Duration = Duration::from_millis(250);
/// Default for [`ClientBuilder::hedge_delay_min`].
pub const HEDGE_DELAY_MIN_DEFAULT: Duration = Duration::from_millis(100);
/// Default for [`ClientBuilder::hedge_delay_max`].
pub const HEDGE_DELAY_MAX_DEFAULT: Duration = Duration::from_millis(500);
/// Default for [`ClientBuilder::suspect_for`].
pub const SUSPECT_FOR_DEFAULT: Duration = Duration::from_secs(10);
/// Default for [`ClientBuilder::keepalive_interval`].
pub const KEEPALIVE_INTERVAL_DEFAULT: Duration = Duration::from_secs(2);
/// Default for [`ClientBuilder::keepalive_timeout`].
pub const KEEPALIVE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(1);
/// The hedge delay before any answer was timed (within the builder's
/// bounds).
const HEDGE_DELAY_INITIAL: Duration = Duration::from_millis(200);
/// Attempts of one call in flight at once: the first and one hedge. A
/// third starts only when one of them failed, so a slow region sees at
/// most twice its load, never three times.
const ATTEMPTS_IN_FLIGHT_MAX: usize = 2;
/// Pause after every endpoint failed once, doubling up to the maximum, so a
/// region that is down is not hammered until the deadline.
const ROUND_BACKOFF_MIN: Duration = Duration::from_millis(20);
const ROUND_BACKOFF_MAX: Duration = Duration::from_millis(500);

struct Endpoint {
    uri: String,
    channel: Conn,
    /// Until when (milliseconds since [`Inner::epoch`], plus one; 0: not
    /// suspect) calls try this endpoint after the others: it failed or
    /// timed out lately.
    suspect_until_ms: AtomicU64,
}

/// A connection to one node whose calls carry the client's application
/// credential, when it has one.
pub(crate) type Conn = InterceptedService<Channel, WithCredential>;

/// Adds an application credential (`authorization: Bearer tgc_...`) to
/// every call of a gRPC client: what [`Client`] does with
/// [`ClientBuilder::credential`], for code that builds its own tonic
/// clients (`CheckServiceClient::with_interceptor(channel, credential)`).
#[derive(Clone, Default)]
pub struct WithCredential(Option<MetadataValue<Ascii>>);

impl WithCredential {
    /// Adds nothing.
    pub fn none() -> WithCredential {
        WithCredential(None)
    }

    /// Adds `token` as it is (a region refuses one that is not
    /// `tgc_<id>.<secret>` of a credential it holds); an error only when it
    /// cannot travel in a header.
    pub fn new(token: &str) -> Result<WithCredential, SdkError> {
        format!("Bearer {token}")
            .parse()
            .map(|v| WithCredential(Some(v)))
            .map_err(|_| SdkError::Config("the credential holds characters a header cannot".into()))
    }
}

impl std::fmt::Debug for WithCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.write_str(if self.0.is_some() {
            "WithCredential(..)"
        } else {
            "WithCredential(none)"
        })
    }
}

impl Interceptor for WithCredential {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

struct Inner {
    endpoints: Vec<Endpoint>,
    /// The endpoint that answered last: calls start there.
    preferred: AtomicUsize,
    /// Suspect marks count from here.
    epoch: Instant,
    policy: Policy,
    /// How long nodes take to answer, to hedge only the slow tail.
    latency: Mutex<Latency>,
    /// Every reading of the wall clock (see [`ClientBuilder::clock`]).
    clock: Clock,
}

/// How a call spreads its attempts (the builder's settings).
#[derive(Debug, Clone, Copy)]
struct Policy {
    hedging: bool,
    hedge_delay_min: Duration,
    hedge_delay_max: Duration,
    attempt_timeout_min: Duration,
    suspect_for: Duration,
}

/// A smoothed answer time and its mean deviation (TCP's retransmission
/// timer, RFC 6298): the hedge delay is their sum with four deviations,
/// which only a slow tail of answers exceeds.
#[derive(Debug, Clone, Copy, Default)]
struct Latency {
    smoothed: Option<Duration>,
    deviation: Duration,
}

impl Latency {
    fn observe(&mut self, sample: Duration) {
        match self.smoothed {
            None => {
                self.smoothed = Some(sample);
                self.deviation = sample / 2;
            }
            Some(smoothed) => {
                self.deviation = (self.deviation * 3 + smoothed.abs_diff(sample)) / 4;
                self.smoothed = Some((smoothed * 7 + sample) / 8);
            }
        }
    }

    /// When to hedge, within `min..=max`.
    fn hedge_delay(&self, min: Duration, max: Duration) -> Duration {
        self.smoothed
            .map_or(HEDGE_DELAY_INITIAL, |s| {
                s.saturating_add(self.deviation.saturating_mul(4))
            })
            .clamp(min, max)
    }
}

/// What one attempt may spend: an equal share of the time left among the
/// endpoints not yet tried in this round (this one included), at least
/// `floor`, never more than is left. One hung endpoint then costs its share,
/// not the whole deadline, and the last endpoint gets everything left.
fn attempt_budget(left: Duration, endpoints_left: usize, floor: Duration) -> Duration {
    let share = left / u32::try_from(endpoints_left.max(1)).unwrap_or(u32::MAX);
    share.max(floor).min(left)
}

/// How a call's node is expected to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Pace {
    /// At once, from memory (a plain check): attempts share the deadline
    /// ([`attempt_budget`]), and how long the answer took trains the hedge
    /// delay.
    Prompt,
    /// After a write through the region's log (a consumption, a usage
    /// report, a seat): attempts share the deadline, but the time, which
    /// is the log's as much as the node's (an election in the region
    /// stretches it), does not train the hedge delay.
    Logged,
    /// Possibly after waiting for a revision (`AtLeastRevision`) as long as
    /// the request's deadline allows: each attempt gets all the time left
    /// (a share would cut the wait short), and its time says nothing about
    /// the node's speed. Hedging still applies.
    MayWait,
}

impl Pace {
    fn of(request: &CheckRequest) -> Pace {
        match (&request.consistency, request.check.consume) {
            (Consistency::AtLeastRevision(_), _) => Pace::MayWait,
            (Consistency::Local, 0) => Pace::Prompt,
            (Consistency::Local, _) => Pace::Logged,
        }
    }
}

/// A client of a region's nodes. Cheap to clone (clones share the
/// connections); safe to use from many tasks at once.
///
/// # Every call may be sent more than once
///
/// A call that failed over or was hedged may have been carried out by the
/// node it left behind too (a hung node may wake up and answer nobody), so
/// the SDK sends nothing through it that would do harm twice:
///
/// - A plain check changes nothing.
/// - A consuming check always carries an idempotency key (the caller's, or
///   one generated before the first attempt), the same for every attempt:
///   the region counts a key once. Likewise each consuming item of a batch.
/// - `report_usage` always carries its key (given or generated), counted
///   once by the region.
/// - Seat calls carry no key (`usage.v1.SeatRequest` has none), but the
///   region keys a lease by its holder: `tollgate_region::seats::seat_command`
///   applies one action to one (entitlement, subject), and acquiring a seat
///   the subject holds renews it (the later expiry wins), renewing a held
///   lease extends it, releasing one that is gone answers RELEASED. The
///   node's usage service (`try_seats`) tries the account's floating
///   entitlements granting the feature in a fixed order, acquire stopping
///   at the first that holds the subject or has a free seat, release
///   releasing the subject from every one. So a duplicate renew or release
///   of one call leaves what one left, and so does a duplicate acquire
///   with one floating entitlement per feature (the usual case). Two
///   things a duplicate can do that one call would not, both as an
///   application calling acquire twice could: an acquire held up on a hung
///   node and applied after the holder's release takes the seat again, and
///   with several such entitlements a duplicate acquire may find a seat
///   freed in between in an earlier one and hold that as well. Either way
///   the subject's next release frees every seat it holds, and a seat
///   nobody releases lapses with its lease, as a crashed client's does.
///   Safe to retry and hedge, then.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
    deadline: Duration,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoints", &self.endpoints())
            .field("deadline", &self.deadline)
            .finish()
    }
}

/// Builds a [`Client`]; see [`Client::builder`].
///
/// # TLS
///
/// Region nodes serve TLS. Give their endpoints as `https://host:port`:
/// every connection is then encrypted and the node's certificate is
/// verified, both that it chains to a trusted CA and that it names the
/// host of the endpoint (a DNS or IP subject alternative name), so a
/// machine that merely answers on the address is not believed. The CA is
/// the bundle given with [`ClientBuilder::ca_file`] (the cluster's own CA,
/// as `tollgate ctl certs` makes it), or without one the operating
/// system's CA store (nodes with publicly issued certificates). A node
/// port that asks for a client certificate gets the one given with
/// [`ClientBuilder::client_identity`].
///
/// `http://` endpoints carry everything in clear and verify nothing: they
/// are only for nodes run with `insecure_plaintext = true` (local
/// development). A CA or client certificate given with `http://`
/// endpoints is an error, not ignored, and all endpoints of one client
/// must use the same scheme.
///
/// The files are read once, by [`ClientBuilder::build`]; to pick up a
/// renewed client certificate, build a new client.
#[derive(Clone)]
pub struct ClientBuilder {
    endpoints: Vec<String>,
    deadline: Duration,
    connect_timeout: Duration,
    tls: ClientTlsOptions,
    credential: Option<String>,
    policy: Policy,
    keepalive_interval: Duration,
    keepalive_timeout: Duration,
    keepalive_while_idle: bool,
    clock: Clock,
}

impl std::fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the credential's secret: its id only.
        let credential = self
            .credential
            .as_deref()
            .map(|t| tollgate_model::split_credential_token(t).map_or("(malformed)", |(id, _)| id));
        f.debug_struct("ClientBuilder")
            .field("endpoints", &self.endpoints)
            .field("deadline", &self.deadline)
            .field("connect_timeout", &self.connect_timeout)
            .field("tls", &self.tls)
            .field("credential", &credential)
            .field("policy", &self.policy)
            .field("keepalive_interval", &self.keepalive_interval)
            .field("keepalive_timeout", &self.keepalive_timeout)
            .field("keepalive_while_idle", &self.keepalive_while_idle)
            .field("clock", &self.clock)
            .finish()
    }
}

impl ClientBuilder {
    /// The application credential every call presents
    /// (`tgc_<id>.<secret>`, from the origin's `POST /v1/credentials`);
    /// region nodes refuse calls without one (UNAUTHENTICATED) unless run
    /// with credentials off, and calls outside its scope
    /// (PERMISSION_DENIED).
    pub fn credential(mut self, token: impl Into<String>) -> Self {
        self.credential = Some(token.into());
        self
    }

    /// The region nodes' check endpoints, e.g. `https://eu-1.example:7300`
    /// (added to those given before). All must be `https://` (verified
    /// TLS) or all `http://` (nodes run with `insecure_plaintext`).
    pub fn endpoints<I, S>(mut self, endpoints: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.endpoints.extend(endpoints.into_iter().map(Into::into));
        self
    }

    /// Every call's deadline, failovers included (default 2 s). Override
    /// per call with [`Client::with_deadline`].
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// How long to wait for one endpoint to accept a connection before
    /// trying the next (default 500 ms).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Whether a call that has had no answer from its endpoint within the
    /// hedge delay also asks the next endpoint, taking whichever answers
    /// first and cancelling the other (default on). At most two attempts
    /// of a call are in flight at once. Every call is safe to send twice:
    /// see [`Client`].
    pub fn hedging(mut self, on: bool) -> Self {
        self.policy.hedging = on;
        self
    }

    /// A fixed hedge delay, instead of one learnt from how long answers
    /// take (sets both [`ClientBuilder::hedge_delay_min`] and
    /// [`ClientBuilder::hedge_delay_max`]).
    pub fn hedge_delay(mut self, delay: Duration) -> Self {
        self.policy.hedge_delay_min = delay;
        self.policy.hedge_delay_max = delay;
        self
    }

    /// The shortest hedge delay (default 100 ms). The delay follows the
    /// answers' time (smoothed, plus four mean deviations, as TCP times
    /// its retransmissions), so only the slow tail of calls is hedged;
    /// this floor keeps a fast region from being asked twice for every
    /// hiccup.
    pub fn hedge_delay_min(mut self, delay: Duration) -> Self {
        self.policy.hedge_delay_min = delay;
        self
    }

    /// The longest hedge delay (default 500 ms): however slow answers have
    /// been, a call waits no longer than this before asking a second node.
    pub fn hedge_delay_max(mut self, delay: Duration) -> Self {
        self.policy.hedge_delay_max = delay;
        self
    }

    /// The least time one attempt is given (default 250 ms). An attempt
    /// gets an equal share of the time left among the endpoints not yet
    /// tried (so one hung node costs a third of the deadline with three
    /// endpoints, not all of it), but never less than this, nor more than
    /// is left. A check that waits for a revision (`AtLeastRevision`) is
    /// given all the time left instead.
    pub fn attempt_timeout_min(mut self, timeout: Duration) -> Self {
        self.policy.attempt_timeout_min = timeout;
        self
    }

    /// How long an endpoint that failed or timed out is tried only after
    /// the others (default 10 s), so calls that follow start on a node
    /// that answers. A suspect endpoint is still tried when the others
    /// fail; it is cleared when it answers.
    pub fn suspect_for(mut self, period: Duration) -> Self {
        self.policy.suspect_for = period;
        self
    }

    /// How long a connection may stay silent before the client pings it
    /// (HTTP/2 PING, default 2 s). With [`ClientBuilder::keepalive_timeout`],
    /// a hung node (stopped, or behind a dead NAT entry) is noticed
    /// and its connection dropped, so the next attempt dials afresh.
    pub fn keepalive_interval(mut self, interval: Duration) -> Self {
        self.keepalive_interval = interval;
        self
    }

    /// How long a ping may go unanswered before the connection is closed
    /// (default 1 s); its calls in flight fail over.
    pub fn keepalive_timeout(mut self, timeout: Duration) -> Self {
        self.keepalive_timeout = timeout;
        self
    }

    /// Whether idle connections are pinged too (default on): a connection
    /// that died while unused is noticed before a call is sent on it.
    pub fn keepalive_while_idle(mut self, on: bool) -> Self {
        self.keepalive_while_idle = on;
        self
    }

    /// The wall clock for every reading of it that the client, and the
    /// replicas built from it ([`Replica::builder`](crate::Replica::builder),
    /// [`Replica::start`](crate::Replica::start)), make: the validity of
    /// the TLS certificates when the client is built, a replica's
    /// staleness and its estimate of the region's last origin contact, the
    /// time its local checks decide at. Default: the system clock
    /// ([`Clock::system`]); a simulated or trusted clock given here
    /// controls all of them.
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Trust this CA bundle (PEM) for the nodes' certificates instead of
    /// the operating system's CA store. Only with `https://` endpoints.
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.tls.ca = Some(path.into());
        self
    }

    /// Present this client certificate (PEM chain, own certificate first)
    /// and its private key (PEM) to nodes that ask for one. Only with
    /// `https://` endpoints.
    pub fn client_identity(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.tls.cert = Some(cert.into());
        self.tls.key = Some(key.into());
        self
    }

    /// All TLS settings at once (replacing [`ClientBuilder::ca_file`] and
    /// [`ClientBuilder::client_identity`]), as command lines take them.
    pub fn tls_options(mut self, options: ClientTlsOptions) -> Self {
        self.tls = options;
        self
    }

    /// Checks the settings, reads the TLS files (once, for every
    /// endpoint) and makes one lazily connected channel per endpoint
    /// (nothing is dialled until the first call). Must run inside a Tokio
    /// runtime.
    ///
    /// # Errors
    /// [`SdkError::Config`] for no or too many endpoints, a zero deadline,
    /// connect timeout, attempt timeout, hedge delay or keepalive setting,
    /// a minimum hedge delay above the maximum, no Tokio runtime, an
    /// endpoint that is not an
    /// `http://` or `https://` URI, endpoints mixing the two schemes, TLS
    /// files given with `http://` endpoints, or a TLS file that cannot be
    /// used (the message names the file and why: missing, not PEM, expired,
    /// a key that does not match its certificate, ...).
    pub fn build(self) -> Result<Client, SdkError> {
        if self.endpoints.is_empty() {
            return Err(SdkError::Config("at least one endpoint is needed".into()));
        }
        if self.endpoints.len() > ENDPOINTS_MAX {
            return Err(SdkError::Config(format!(
                "{} endpoints given, at most {ENDPOINTS_MAX} are allowed",
                self.endpoints.len()
            )));
        }
        if self.deadline.is_zero() || self.connect_timeout.is_zero() {
            return Err(SdkError::Config(
                "deadline and connect_timeout must be above zero".into(),
            ));
        }
        let policy = self.policy;
        for (name, value) in [
            ("attempt_timeout_min", policy.attempt_timeout_min),
            ("hedge_delay_min", policy.hedge_delay_min),
            ("hedge_delay_max", policy.hedge_delay_max),
            ("keepalive_interval", self.keepalive_interval),
            ("keepalive_timeout", self.keepalive_timeout),
        ] {
            if value.is_zero() {
                return Err(SdkError::Config(format!("{name} must be above zero")));
            }
        }
        if policy.hedge_delay_min > policy.hedge_delay_max {
            return Err(SdkError::Config(format!(
                "hedge_delay_min ({:?}) is above hedge_delay_max ({:?})",
                policy.hedge_delay_min, policy.hedge_delay_max
            )));
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(SdkError::Config(
                "build the client inside a Tokio runtime (its connections run there)".into(),
            ));
        }
        let transport = transport_for(&self.endpoints, &self.tls, self.clock.now_secs())?;
        let credential = match &self.credential {
            None => WithCredential::none(),
            Some(token) => {
                if tollgate_model::split_credential_token(token).is_none() {
                    return Err(SdkError::Config(
                        "the credential is not a token of the form tgc_<id>.<secret>".into(),
                    ));
                }
                WithCredential::new(token)?
            }
        };
        let endpoints = self
            .endpoints
            .into_iter()
            .map(|uri| {
                let endpoint = transport
                    .endpoint(&uri)
                    .map_err(|e| SdkError::Config(format!("endpoint {uri:?}: {e}")))?
                    .connect_timeout(self.connect_timeout)
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(self.keepalive_interval)
                    .keep_alive_timeout(self.keepalive_timeout)
                    .keep_alive_while_idle(self.keepalive_while_idle);
                let channel = InterceptedService::new(
                    transport.lazy_channel(&endpoint, Expect::HostName, "sdk"),
                    credential.clone(),
                );
                Ok(Endpoint {
                    uri,
                    channel,
                    suspect_until_ms: AtomicU64::new(0),
                })
            })
            .collect::<Result<_, SdkError>>()?;
        Ok(Client {
            inner: Arc::new(Inner {
                endpoints,
                preferred: AtomicUsize::new(0),
                epoch: Instant::now(),
                policy,
                latency: Mutex::new(Latency::default()),
                clock: self.clock,
            }),
            deadline: self.deadline,
        })
    }
}

/// The scheme of `uri` (`https`, `http`, or whatever precedes `://`).
fn scheme_of(uri: &str) -> Option<&str> {
    uri.split_once("://").map(|(scheme, _)| scheme)
}

/// The one transport for all of `endpoints`: they must share a scheme,
/// and the TLS files are read here, once, their certificates' validity
/// checked at `now` (Unix seconds, from the client's clock).
fn transport_for(
    endpoints: &[String],
    tls: &ClientTlsOptions,
    now: i64,
) -> Result<Transport, SdkError> {
    let first = &endpoints[0];
    let scheme = scheme_of(first);
    if let Some(odd) = endpoints.iter().find(|e| scheme_of(e) != scheme) {
        let shown = |s: Option<&str>| s.map(|s| format!("{s}://")).unwrap_or("no scheme".into());
        return Err(SdkError::Config(format!(
            "endpoint {odd:?} is {}, but {first:?} is {}: all endpoints must be https:// \
             (or all http://, for nodes run with insecure_plaintext)",
            shown(scheme_of(odd)),
            shown(scheme),
        )));
    }
    if scheme == Some("http") && tls.key.is_some() {
        return Err(SdkError::Config(format!(
            "the endpoints are plain http:// ({first:?}), but a client key was given: use https://"
        )));
    }
    Transport::for_client(first, tls, now).map_err(|e| SdkError::Config(e.to_string()))
}

/// A fresh idempotency key: `sdk-` and 32 hex digits of OS randomness.
pub fn new_idempotency_key() -> String {
    let mut bytes = [0u8; 16];
    if tollgate_clock::random::fill(&mut bytes).is_err() {
        // No OS randomness: fall back to the clock and a counter, which is
        // still unique within this process.
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let nanos = Clock::system()
            .since_epoch()
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        bytes[..8].copy_from_slice(&(nanos as u64).to_le_bytes());
        bytes[8..].copy_from_slice(&(COUNTER.fetch_add(1, Ordering::Relaxed) as u64).to_le_bytes());
    }
    let mut key = String::with_capacity(36);
    key.push_str("sdk-");
    for b in bytes {
        key.push_str(&format!("{b:02x}"));
    }
    key
}

fn with_timeout<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    // Tells the node how long the caller will wait.
    request.set_timeout(timeout);
    request
}

impl Client {
    pub fn builder() -> ClientBuilder {
        ClientBuilder {
            endpoints: Vec::new(),
            deadline: DEADLINE_DEFAULT,
            connect_timeout: CONNECT_TIMEOUT_DEFAULT,
            tls: ClientTlsOptions::default(),
            credential: None,
            policy: Policy {
                hedging: true,
                hedge_delay_min: HEDGE_DELAY_MIN_DEFAULT,
                hedge_delay_max: HEDGE_DELAY_MAX_DEFAULT,
                attempt_timeout_min: ATTEMPT_TIMEOUT_MIN_DEFAULT,
                suspect_for: SUSPECT_FOR_DEFAULT,
            },
            keepalive_interval: KEEPALIVE_INTERVAL_DEFAULT,
            keepalive_timeout: KEEPALIVE_TIMEOUT_DEFAULT,
            keepalive_while_idle: true,
            clock: Clock::system(),
        }
    }

    /// The same client (same connections) with another deadline for every
    /// call made through the returned value.
    pub fn with_deadline(&self, deadline: Duration) -> Client {
        Client {
            inner: self.inner.clone(),
            deadline,
        }
    }

    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// The wall clock the client reads, and hands to the replicas built
    /// from it ([`ClientBuilder::clock`]).
    pub fn clock(&self) -> &Clock {
        &self.inner.clock
    }

    pub fn endpoints(&self) -> Vec<&str> {
        self.inner
            .endpoints
            .iter()
            .map(|e| e.uri.as_str())
            .collect()
    }

    /// The endpoint calls start with: the one that answered last.
    pub fn preferred_endpoint(&self) -> &str {
        &self.inner.endpoints[self.preferred()].uri
    }

    pub(crate) fn preferred(&self) -> usize {
        self.inner.preferred.load(Ordering::Relaxed) % self.inner.endpoints.len()
    }

    pub(crate) fn endpoint_count(&self) -> usize {
        self.inner.endpoints.len()
    }

    /// The URI and channel of endpoint `index` (modulo their number).
    pub(crate) fn endpoint(&self, index: usize) -> (&str, Conn) {
        let e = &self.inner.endpoints[index % self.inner.endpoints.len()];
        (&e.uri, e.channel.clone())
    }

    /// The order a call tries the endpoints in: the one that answered
    /// last first, then the others round-robin, every suspect one (failed
    /// or timed out within [`ClientBuilder::suspect_for`]) after every
    /// other.
    fn order(&self) -> Vec<usize> {
        let count = self.inner.endpoints.len();
        let first = self.preferred();
        let now = self.elapsed_ms();
        let (mut order, suspect): (Vec<usize>, Vec<usize>) = (0..count)
            .map(|step| (first + step) % count)
            .partition(|&i| {
                self.inner.endpoints[i]
                    .suspect_until_ms
                    .load(Ordering::Relaxed)
                    <= now
            });
        order.extend(suspect);
        order
    }

    /// Milliseconds since the client was built, plus one (0 means "never"
    /// in the suspect marks).
    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.inner.epoch.elapsed().as_millis())
            .unwrap_or(u64::MAX - 1)
            .saturating_add(1)
    }

    fn mark_suspect(&self, index: usize) {
        let period = u64::try_from(self.inner.policy.suspect_for.as_millis()).unwrap_or(u64::MAX);
        self.inner.endpoints[index]
            .suspect_until_ms
            .store(self.elapsed_ms().saturating_add(period), Ordering::Relaxed);
    }

    /// Endpoint `index` answered: calls start there, it is no longer
    /// suspect, and (for a prompt call) its time trains the hedge delay.
    fn answered(&self, index: usize, took: Option<Duration>) {
        self.inner.preferred.store(index, Ordering::Relaxed);
        self.inner.endpoints[index]
            .suspect_until_ms
            .store(0, Ordering::Relaxed);
        if let Some(took) = took {
            self.inner
                .latency
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .observe(took);
        }
    }

    /// How long a call waits for an answer before hedging.
    pub(crate) fn hedge_delay(&self) -> Duration {
        let policy = &self.inner.policy;
        self.inner
            .latency
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .hedge_delay(policy.hedge_delay_min, policy.hedge_delay_max)
    }

    /// Runs `attempt` against the endpoints until one answers or the
    /// deadline passes, and returns the first answer with its endpoint.
    ///
    /// - The endpoints are tried in [`Client::order`]; each attempt gets
    ///   [`attempt_budget`] of the time left ([`Pace::MayWait`]: all of
    ///   it), and the node is told so (`grpc-timeout`).
    /// - Transport failures (refused, reset, a connect or TLS handshake
    ///   that timed out, a connection the keepalive gave up on),
    ///   UNAVAILABLE, RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED (the node could
    ///   not answer within the attempt's share) and an attempt out of time
    ///   move on to the next endpoint at once and mark the failed one
    ///   suspect; any other answer ends the call (every node would say the
    ///   same).
    /// - With hedging on, an attempt that has not answered within the
    ///   hedge delay is joined by one on the next endpoint; the first
    ///   answer wins and the other attempt is cancelled (dropped: tonic
    ///   resets its stream). At most [`ATTEMPTS_IN_FLIGHT_MAX`] at once.
    /// - When every endpoint failed once, the next round starts after a
    ///   pause (doubling from [`ROUND_BACKOFF_MIN`]).
    ///
    /// Every call sent this way must be safe to carry out twice: see
    /// [`Client`].
    async fn call<T, F, Fut>(&self, pace: Pace, mut attempt: F) -> Result<(T, &str), SdkError>
    where
        F: FnMut(Conn, Duration) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let policy = self.inner.policy;
        let deadline = Instant::now() + self.deadline;
        let mut round = self.order();
        // The next endpoint of `round` to try.
        let mut next = 0;
        let mut in_flight = FuturesUnordered::new();
        let mut hedge_at: Option<Instant> = None;
        let mut tried: Vec<String> = Vec::new();
        let mut last = String::new();
        let mut timed_out = false;
        let mut backoff = ROUND_BACKOFF_MIN;
        loop {
            // Every pass starts an attempt while there is room: the first,
            // the one after a failure, a hedge whose time came, the first
            // of a new round.
            if next < round.len() && in_flight.len() < ATTEMPTS_IN_FLIGHT_MAX {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    let timed_out = timed_out || !in_flight.is_empty();
                    return Err(self.exhausted(tried, last, timed_out));
                }
                let index: usize = round[next];
                let budget = match pace {
                    Pace::Prompt | Pace::Logged => {
                        attempt_budget(left, round.len() - next, policy.attempt_timeout_min)
                    }
                    Pace::MayWait => left,
                };
                next += 1;
                let endpoint = &self.inner.endpoints[index];
                if !tried.contains(&endpoint.uri) {
                    tried.push(endpoint.uri.clone());
                }
                if !in_flight.is_empty() {
                    tracing::debug!(endpoint = %endpoint.uri, "No answer yet; hedging.");
                }
                let started = Instant::now();
                let pending =
                    tokio::time::timeout(budget, attempt(endpoint.channel.clone(), budget));
                in_flight.push(async move { (index, started, budget, pending.await) });
                hedge_at =
                    (policy.hedging && next < round.len()).then(|| started + self.hedge_delay());
            }
            if in_flight.is_empty() {
                // Every endpoint of this round failed: pause, then start over.
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(self.exhausted(tried, last, timed_out));
                }
                tokio::time::sleep(backoff.min(left)).await;
                backoff = (backoff * 2).min(ROUND_BACKOFF_MAX);
                round = self.order();
                next = 0;
                continue;
            }
            let hedge = match hedge_at {
                Some(at) if in_flight.len() < ATTEMPTS_IN_FLIGHT_MAX && next < round.len() => {
                    futures::future::Either::Left(tokio::time::sleep_until(at.into()))
                }
                _ => futures::future::Either::Right(std::future::pending()),
            };
            tokio::select! {
                Some((index, started, budget, outcome)) = in_flight.next() => {
                    let endpoint = &self.inner.endpoints[index];
                    let failure = match outcome {
                        Ok(Ok(value)) => {
                            self.answered(index, (pace == Pace::Prompt).then(|| started.elapsed()));
                            return Ok((value, &endpoint.uri));
                        }
                        Ok(Err(status)) => classify(&status),
                        Err(_) => Failure::Retry {
                            message: format!("no answer within {budget:?}"),
                            timed_out: true,
                        },
                    };
                    match failure {
                        Failure::Retry { message, timed_out: t } => {
                            tracing::debug!(endpoint = %endpoint.uri, %message, "Endpoint failed; trying the next.");
                            self.mark_suspect(index);
                            last = format!("{}: {message}", endpoint.uri);
                            timed_out = t;
                        }
                        Failure::Fatal(error) => {
                            // It answered: it is reachable.
                            self.answered(index, None);
                            return Err(error);
                        }
                    }
                }
                () = hedge => {}
                () = tokio::time::sleep_until(deadline.into()) => {
                    if last.is_empty() {
                        last = "no endpoint answered before the deadline".into();
                    }
                    return Err(self.exhausted(tried, last, true));
                }
            }
        }
    }

    fn exhausted(&self, tried: Vec<String>, last: String, timed_out: bool) -> SdkError {
        if timed_out {
            SdkError::DeadlineExceeded {
                deadline: self.deadline,
                last: (!last.is_empty()).then_some(last),
            }
        } else {
            SdkError::Unavailable { tried, last }
        }
    }

    /// Asks one check. A check that consumes (`check.consume > 0`) without
    /// an idempotency key gets a generated one, the same for every endpoint
    /// tried, so a failover never counts the consumption twice; the key
    /// used is in the answer.
    pub async fn check(&self, mut request: CheckRequest) -> Result<Checked, SdkError> {
        if request.check.consume > 0 && request.idempotency_key.is_none() {
            request.idempotency_key = Some(new_idempotency_key());
        }
        let key = request.idempotency_key.clone();
        let pace = Pace::of(&request);
        let message = pb::CheckRequest::from(request);
        let (response, endpoint) = self
            .call(pace, |channel, left| {
                let message = message.clone();
                async move {
                    CheckServiceClient::new(channel)
                        .max_decoding_message_size(MESSAGE_BYTES_MAX)
                        .check(with_timeout(message, left))
                        .await
                        .map(tonic::Response::into_inner)
                }
            })
            .await?;
        wire::checked(response, endpoint, key)
    }

    /// Consumes `quantity` units of a metered feature with a check: allowed
    /// only within the cap, and counted once per idempotency key (one is
    /// generated when `None`; it is in the answer, to retry with later).
    pub async fn consume(
        &self,
        account: AccountId,
        subject: Option<SubjectId>,
        feature: FeatureId,
        quantity: u64,
        idempotency_key: Option<String>,
    ) -> Result<Checked, SdkError> {
        if quantity == 0 || quantity > CONSUME_MAX {
            return Err(SdkError::InvalidRequest(format!(
                "quantity: {quantity} is not in 1..={CONSUME_MAX}"
            )));
        }
        self.check(CheckRequest {
            check: Check {
                account,
                subject,
                feature,
                consume: quantity,
            },
            location: Location::Unknown,
            consistency: Consistency::Local,
            idempotency_key,
        })
        .await
    }

    /// Up to 128 checks answered by one node at one revision. The batch
    /// waits for the highest `AtLeastRevision` among the items (the wire
    /// has one consistency per batch). Consuming items without a key get
    /// generated ones, as in [`Client::check`].
    pub async fn batch_check(&self, checks: Vec<CheckRequest>) -> Result<BatchChecked, SdkError> {
        if checks.len() > BATCH_CHECKS_MAX {
            return Err(SdkError::InvalidRequest(format!(
                "checks: {} given, at most {BATCH_CHECKS_MAX} are allowed",
                checks.len()
            )));
        }
        let count = checks.len();
        // The batch waits for its highest revision and its consumptions:
        // the slowest item's pace is the batch's.
        let pace = checks.iter().map(Pace::of).max().unwrap_or(Pace::Prompt);
        let message = batch_to_proto(
            checks
                .into_iter()
                .map(|mut c| {
                    if c.check.consume > 0 && c.idempotency_key.is_none() {
                        c.idempotency_key = Some(new_idempotency_key());
                    }
                    c
                })
                .collect(),
        );
        let (response, endpoint) = self
            .call(pace, |channel, left| {
                let message = message.clone();
                async move {
                    CheckServiceClient::new(channel)
                        .max_decoding_message_size(MESSAGE_BYTES_MAX)
                        .batch_check(with_timeout(message, left))
                        .await
                        .map(tonic::Response::into_inner)
                }
            })
            .await?;
        wire::batch_checked(response, endpoint, count)
    }

    /// Reports usage that already happened (not gated by caps). Counted
    /// once per idempotency key; one is generated when `None`.
    pub async fn report_usage(
        &self,
        account: &AccountId,
        feature: &FeatureId,
        units: u64,
        idempotency_key: Option<String>,
    ) -> Result<UsageReported, SdkError> {
        let key = idempotency_key.unwrap_or_else(new_idempotency_key);
        let message = usage::ReportUsageRequest::from(UsageReport {
            account: account.clone(),
            feature: feature.clone(),
            units,
            idempotency_key: key.clone(),
        });
        let (response, endpoint) = self
            .call(Pace::Logged, |channel, left| {
                let message = message.clone();
                async move {
                    UsageClient::new(channel)
                        .report_usage(with_timeout(message, left))
                        .await
                        .map(tonic::Response::into_inner)
                }
            })
            .await?;
        wire::usage_reported(response, endpoint, key)
    }

    /// Takes a floating seat of the account's entitlement that grants
    /// `feature` (or renews the one the subject holds). A full house is an
    /// answer (`SeatStatus::Full`), not an error.
    pub async fn acquire_seat(
        &self,
        account: &AccountId,
        subject: &SubjectId,
        feature: &FeatureId,
    ) -> Result<Seat, SdkError> {
        self.seat(SeatCall::Acquire, account, subject, feature)
            .await
    }

    /// Extends a held lease; `SeatStatus::NotHeld` once it expired.
    pub async fn heartbeat_seat(
        &self,
        account: &AccountId,
        subject: &SubjectId,
        feature: &FeatureId,
    ) -> Result<Seat, SdkError> {
        self.seat(SeatCall::Renew, account, subject, feature).await
    }

    /// Gives the seat back.
    pub async fn release_seat(
        &self,
        account: &AccountId,
        subject: &SubjectId,
        feature: &FeatureId,
    ) -> Result<Seat, SdkError> {
        self.seat(SeatCall::Release, account, subject, feature)
            .await
    }

    async fn seat(
        &self,
        call: SeatCall,
        account: &AccountId,
        subject: &SubjectId,
        feature: &FeatureId,
    ) -> Result<Seat, SdkError> {
        let message = usage::SeatRequest::from(SeatHolder {
            account: account.clone(),
            subject: subject.clone(),
            feature: feature.clone(),
        });
        // Safe to send twice: the region keys a lease by its holder (see
        // [`Client`]).
        let (response, endpoint) = self
            .call(Pace::Logged, |channel, left| {
                let message = with_timeout(message.clone(), left);
                async move {
                    let mut client = UsageClient::new(channel);
                    match call {
                        SeatCall::Acquire => client.acquire_seat(message).await,
                        SeatCall::Renew => client.renew_seat(message).await,
                        SeatCall::Release => client.release_seat(message).await,
                    }
                    .map(tonic::Response::into_inner)
                }
            })
            .await?;
        wire::seat(response, endpoint)
    }
}

#[derive(Debug, Clone, Copy)]
enum SeatCall {
    Acquire,
    Renew,
    Release,
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn an_attempt_gets_its_share_of_the_time_left_within_the_floor_and_what_is_left() {
        let floor = MS(250);
        // (time left, endpoints not yet tried, budget)
        let rows = [
            (MS(2_000), 3, MS(2_000) / 3),
            (MS(1_334), 2, MS(667)),
            (MS(667), 1, MS(667)),
            // Below the floor: the floor ...
            (MS(600), 3, MS(250)),
            // ... but never more than is left.
            (MS(100), 3, MS(100)),
            (MS(0), 2, MS(0)),
            // One endpoint: everything.
            (MS(2_000), 1, MS(2_000)),
            // A call never has zero endpoints left; if it did, all of it.
            (MS(500), 0, MS(500)),
        ];
        for (left, endpoints_left, expected) in rows {
            assert_eq!(
                attempt_budget(left, endpoints_left, floor),
                expected,
                "{left:?} among {endpoints_left}"
            );
        }
    }

    #[test]
    fn a_call_is_paced_by_what_the_node_must_do_before_it_answers() {
        let request = |consume, consistency| CheckRequest {
            check: Check {
                account: "acme".parse().unwrap(),
                subject: None,
                feature: "export".parse().unwrap(),
                consume,
            },
            location: Location::Unknown,
            consistency,
            idempotency_key: None,
        };
        let rows = [
            (0, Consistency::Local, Pace::Prompt),
            (3, Consistency::Local, Pace::Logged),
            (0, Consistency::AtLeastRevision(9), Pace::MayWait),
            (3, Consistency::AtLeastRevision(9), Pace::MayWait),
        ];
        for (consume, consistency, expected) in rows {
            assert_eq!(
                Pace::of(&request(consume, consistency)),
                expected,
                "consume {consume}, {consistency:?}"
            );
        }
        // A batch goes at its slowest item's pace.
        assert!(Pace::Prompt < Pace::Logged && Pace::Logged < Pace::MayWait);
    }

    #[test]
    fn the_hedge_delay_follows_the_answers_within_its_bounds() {
        let (min, max) = (MS(100), MS(500));
        let mut latency = Latency::default();
        assert_eq!(latency.hedge_delay(min, max), HEDGE_DELAY_INITIAL);
        // Fast, steady answers: the floor.
        for _ in 0..50 {
            latency.observe(MS(2));
        }
        assert_eq!(latency.hedge_delay(min, max), min);
        // Answers of 150 ms ± 50: smoothed about 150, deviation about 50,
        // so a delay above the floor and the answers' spread.
        for i in 0..200 {
            latency.observe(MS(if i % 2 == 0 { 100 } else { 200 }));
        }
        let delay = latency.hedge_delay(min, max);
        assert!(delay > MS(250) && delay < max, "{delay:?}");
        // Very slow answers: the ceiling.
        for _ in 0..50 {
            latency.observe(MS(3_000));
        }
        assert_eq!(latency.hedge_delay(min, max), max);
        // A fixed delay is min = max.
        assert_eq!(latency.hedge_delay(MS(150), MS(150)), MS(150));
    }
}
