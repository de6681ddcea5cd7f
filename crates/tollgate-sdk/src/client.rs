//! The remote client: every call goes to one of the region's nodes over
//! gRPC, fails over to the next endpoint when one is unreachable, and is
//! bounded by a deadline.

use crate::answer::{BatchChecked, Checked, Seat, UsageReported};
use crate::error::{classify, Failure, SdkError};
use crate::wire;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
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
/// Pause after every endpoint failed once, doubling up to the maximum, so a
/// region that is down is not hammered until the deadline.
const ROUND_BACKOFF_MIN: Duration = Duration::from_millis(20);
const ROUND_BACKOFF_MAX: Duration = Duration::from_millis(500);

struct Endpoint {
    uri: String,
    channel: Conn,
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
}

/// A client of a region's nodes. Cheap to clone (clones share the
/// connections); safe to use from many tasks at once.
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
    /// [`SdkError::Config`] for no or too many endpoints, a zero deadline or
    /// connect timeout, no Tokio runtime, an endpoint that is not an
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
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(SdkError::Config(
                "build the client inside a Tokio runtime (its connections run there)".into(),
            ));
        }
        let transport = transport_for(&self.endpoints, &self.tls)?;
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
                    .tcp_nodelay(true);
                let channel = InterceptedService::new(
                    transport.lazy_channel(&endpoint, Expect::HostName, "sdk"),
                    credential.clone(),
                );
                Ok(Endpoint { uri, channel })
            })
            .collect::<Result<_, SdkError>>()?;
        Ok(Client {
            inner: Arc::new(Inner {
                endpoints,
                preferred: AtomicUsize::new(0),
            }),
            deadline: self.deadline,
        })
    }
}

/// The wall clock in Unix seconds (certificates' validity is checked
/// against it).
pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The scheme of `uri` (`https`, `http`, or whatever precedes `://`).
fn scheme_of(uri: &str) -> Option<&str> {
    uri.split_once("://").map(|(scheme, _)| scheme)
}

/// The one transport for all of `endpoints`: they must share a scheme,
/// and the TLS files are read here, once.
fn transport_for(endpoints: &[String], tls: &ClientTlsOptions) -> Result<Transport, SdkError> {
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
    Transport::for_client(first, tls, unix_now()).map_err(|e| SdkError::Config(e.to_string()))
}

/// A fresh idempotency key: `sdk-` and 32 hex digits of OS randomness.
pub fn new_idempotency_key() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // No OS randomness: fall back to the clock and a counter, which is
        // still unique within this process.
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
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

    /// Runs `attempt` against the endpoints in turn, starting with the one
    /// that answered last, until one answers or the deadline passes. Only
    /// transport failures, UNAVAILABLE and RESOURCE_EXHAUSTED move on to
    /// the next endpoint; any other answer ends the call. The attempt gets
    /// the channel and the time left.
    async fn call<T, F, Fut>(&self, mut attempt: F) -> Result<(T, &str), SdkError>
    where
        F: FnMut(Conn, Duration) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let deadline = Instant::now() + self.deadline;
        let count = self.inner.endpoints.len();
        let first = self.preferred();
        let mut tried: Vec<String> = Vec::new();
        let mut last = String::new();
        let mut timed_out = false;
        let mut backoff = ROUND_BACKOFF_MIN;
        loop {
            for step in 0..count {
                let index = (first + step) % count;
                let endpoint = &self.inner.endpoints[index];
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(self.exhausted(tried, last, timed_out));
                }
                if !tried.contains(&endpoint.uri) {
                    tried.push(endpoint.uri.clone());
                }
                let failure =
                    match tokio::time::timeout(left, attempt(endpoint.channel.clone(), left)).await
                    {
                        Ok(Ok(value)) => {
                            self.inner.preferred.store(index, Ordering::Relaxed);
                            return Ok((value, &endpoint.uri));
                        }
                        Ok(Err(status)) => classify(&status, self.deadline),
                        Err(_) => Failure::Retry {
                            message: "no answer before the deadline".into(),
                            timed_out: true,
                        },
                    };
                match failure {
                    Failure::Retry {
                        message,
                        timed_out: t,
                    } => {
                        tracing::debug!(endpoint = %endpoint.uri, %message, "Endpoint failed; trying the next.");
                        last = format!("{}: {message}", endpoint.uri);
                        timed_out = t;
                    }
                    Failure::Fatal(error) => {
                        // It answered: it is reachable.
                        self.inner.preferred.store(index, Ordering::Relaxed);
                        return Err(error);
                    }
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(self.exhausted(tried, last, timed_out));
            }
            tokio::time::sleep(backoff.min(left)).await;
            backoff = (backoff * 2).min(ROUND_BACKOFF_MAX);
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
        let message = pb::CheckRequest::from(request);
        let (response, endpoint) = self
            .call(|channel, left| {
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
            .call(|channel, left| {
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
            .call(|channel, left| {
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
        let (response, endpoint) = self
            .call(|channel, left| {
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
