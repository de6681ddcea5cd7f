//! `tollgate bench check`: a load generator against region nodes, over gRPC
//! or the HTTP/JSON API (`--protocol`; `both` measures gRPC and then HTTP
//! in one run and prints their ratios). A fixed number of requests in
//! flight over a few connections (HTTP/1.1: one per request in flight), a
//! mix of accounts, features and IPs, for a duration; prints throughput,
//! latency percentiles from an HDR histogram, the decisions by reason and
//! the errors by code. `--compare-plain` measures plain checks and then
//! consuming checks in one run, so the two throughputs compare.

use crate::ctl::tls::{status_cause, ClientTlsArgs};
use crate::{exit, Output};
use anyhow::Context;
use clap::{Args, Subcommand};
use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tollgate_engine::{Check, CheckRequest, Consistency, Location};
use tollgate_model::{AccountId, FeatureId, SubjectId};
use tollgate_proto::check::v1 as pb;
use tollgate_proto::check::v1::check_service_client::CheckServiceClient;

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    what: BenchWhat,
}

#[derive(Debug, Subcommand)]
enum BenchWhat {
    /// Load region nodes with Check calls.
    Check(CheckBench),
}

#[derive(Debug, Args)]
struct CheckBench {
    /// Region node check endpoints, `https://host:port` (`http://` for
    /// nodes running with tls.insecure_plaintext); repeatable, connections
    /// are spread over them.
    #[arg(long = "endpoint", default_value = "https://127.0.0.1:7300")]
    endpoints: Vec<String>,
    /// gRPC connections (HTTP/2), shared by the requests in flight.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// How long to measure, after the warm-up.
    #[arg(long, default_value_t = 10)]
    duration_seconds: u64,
    #[arg(long, default_value_t = 1)]
    warmup_seconds: u64,
    /// Accounts to check, round-robin (the demo data's by default).
    #[arg(long = "account", default_values_t = ["acme".to_string(), "globex".to_string(), "initech".to_string()])]
    accounts: Vec<String>,
    #[arg(long = "feature", default_values_t = ["export".to_string(), "render".to_string(), "sso".to_string()])]
    features: Vec<String>,
    /// The subject (user or device) every check names; none by default.
    /// Named seats and roles need one: the demo's acme allows `export` to
    /// `alice`, and answers SEAT_LIMIT to a check without a subject.
    #[arg(long)]
    subject: Option<String>,
    /// Caller IPs (the demo geography's by default).
    #[arg(long = "ip", default_values_t = ["192.0.2.10".to_string(), "198.51.100.10".to_string(), "203.0.113.10".to_string(), "2001:db8::10".to_string()])]
    ips: Vec<String>,
    /// Units each check consumes (0: plain checks). Pick an account and a
    /// metered feature whose cap the run will not exhaust, e.g. the demo's
    /// `--account hooli --feature render`.
    #[arg(long, default_value_t = 0)]
    consume: u64,
    /// With `--consume`: first measure the same checks without consuming,
    /// then with, and print both and the ratio of their throughputs.
    #[arg(long, requires = "consume", conflicts_with = "protocol")]
    compare_plain: bool,
    /// gRPC (`CheckService/Check`), the HTTP/JSON API (`POST /v1/check`,
    /// HTTP/1.1 with one keep-alive connection per request in flight), or
    /// both, one after the other, with the ratios of HTTP to gRPC.
    #[arg(long, value_enum, default_value_t = Protocol::Grpc)]
    protocol: Protocol,
    /// A request not answered within this long counts as an error.
    #[arg(long, default_value_t = 5_000)]
    timeout_ms: u64,
    /// Load generator threads; 0 picks one for a single request in flight
    /// (no cross-thread hand-offs inflating the latency measured) and one
    /// per core otherwise.
    #[arg(long, default_value_t = 0)]
    threads: usize,
    #[arg(long, value_enum, default_value_t)]
    output: Output,
    #[command(flatten)]
    tls: ClientTlsArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Protocol {
    Grpc,
    Http,
    Both,
}

/// What the load is sent with.
enum Target {
    Grpc(Vec<CheckServiceClient<crate::ctl::tls::AppChannel>>),
    Http {
        client: reqwest::Client,
        /// `<endpoint>/v1/check`, one per endpoint.
        urls: Vec<String>,
        /// `Bearer <credential>`, if one was given.
        authorization: Option<String>,
    },
}

pub fn run(args: BenchArgs) -> u8 {
    let BenchWhat::Check(args) = args.what;
    let threads = match args.threads {
        0 if args.concurrency == 1 => 1,
        0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
        n => n,
    };
    let runtime = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(error) => {
            eprintln!("error: {error}");
            return exit::FAILURE;
        }
    };
    match runtime.block_on(bench_check(args)) {
        Ok(()) => exit::OK,
        Err(error) => {
            eprintln!("error: {error:#}");
            exit::FAILURE
        }
    }
}

/// What one measured phase saw.
struct Phase {
    latencies: Histogram<u64>,
    /// Answered checks by decision reason (`REASON_ALLOW`, ...).
    reasons: BTreeMap<String, u64>,
    /// Failed calls by gRPC code.
    errors: BTreeMap<String, u64>,
    /// The first failure's message (and cause) by gRPC code.
    error_samples: BTreeMap<String, String>,
    seconds: u64,
}

impl Phase {
    fn new(seconds: u64) -> Phase {
        Phase {
            latencies: Histogram::new_with_bounds(1, 60_000_000, 3)
                .expect("valid histogram bounds"),
            reasons: BTreeMap::new(),
            errors: BTreeMap::new(),
            error_samples: BTreeMap::new(),
            seconds,
        }
    }

    fn merge(&mut self, other: Phase) -> anyhow::Result<()> {
        self.latencies
            .add(&other.latencies)
            .context("merging histograms")?;
        for (reason, n) in other.reasons {
            *self.reasons.entry(reason).or_default() += n;
        }
        for (code, n) in other.errors {
            *self.errors.entry(code).or_default() += n;
        }
        for (code, sample) in other.error_samples {
            self.error_samples.entry(code).or_insert(sample);
        }
        Ok(())
    }

    fn throughput(&self) -> f64 {
        self.latencies.len() as f64 / self.seconds as f64
    }

    fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    fn json(&self, concurrency: usize, connections: usize) -> serde_json::Value {
        let h = &self.latencies;
        serde_json::json!({
            "checks": h.len(), "errors": self.error_count(),
            "checks_per_second": self.throughput(),
            "concurrency": concurrency, "connections": connections,
            "p50_us": h.value_at_quantile(0.5), "p99_us": h.value_at_quantile(0.99),
            "p999_us": h.value_at_quantile(0.999), "max_us": h.max(),
            "reasons": self.reasons, "errors_by_code": self.errors,
            "error_samples": self.error_samples,
        })
    }

    fn print(&self, label: &str, concurrency: usize, connections: usize) {
        let h = &self.latencies;
        println!(
            "{label}{} checks in {} s ({:.0}/s), {} errors; {} in flight over {} connections",
            h.len(),
            self.seconds,
            self.throughput(),
            self.error_count(),
            concurrency,
            connections
        );
        println!(
            "{label}latency: p50 {} us, p99 {} us, p99.9 {} us, max {} us",
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.max()
        );
        let list = |m: &BTreeMap<String, u64>| {
            m.iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!("{label}decisions: {}", list(&self.reasons));
        if !self.errors.is_empty() {
            println!("{label}errors: {}", list(&self.errors));
            for (code, sample) in &self.error_samples {
                println!("{label}  first {code}: {sample}");
            }
        }
    }
}

async fn bench_check(args: CheckBench) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.concurrency >= 1 && args.concurrency <= 10_000,
        "--concurrency: must be 1..=10000"
    );
    anyhow::ensure!(
        args.connections >= 1 && args.connections <= 1_000,
        "--connections: must be 1..=1000"
    );
    anyhow::ensure!(
        args.duration_seconds >= 1,
        "--duration-seconds: must be at least 1"
    );
    anyhow::ensure!(
        !args.accounts.is_empty() && !args.features.is_empty() && !args.ips.is_empty(),
        "--account, --feature and --ip need at least one value each"
    );
    // One transport per endpoint: the TLS files are read once, and each
    // connection does its own handshake (as applications' would).
    let mut transports = Vec::with_capacity(args.endpoints.len());
    for endpoint in &args.endpoints {
        let transport = args
            .tls
            .transport(endpoint)
            .map_err(|e| anyhow::anyhow!("--endpoint {endpoint:?}: {e}"))?;
        transports.push(transport);
    }
    let timeout = Duration::from_millis(args.timeout_ms.max(1));
    let credential = args.tls.credential().map_err(|e| anyhow::anyhow!(e))?;
    let mut phases: Vec<(&str, u64, Target)> = Vec::new();
    if args.protocol != Protocol::Http {
        let mut clients = Vec::with_capacity(args.connections);
        for i in 0..args.connections {
            let endpoint = &args.endpoints[i % args.endpoints.len()];
            let transport = &transports[i % transports.len()];
            let channel = crate::ctl::tls::grpc_channel(transport, endpoint, timeout)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            clients.push(CheckServiceClient::new(
                tonic::service::interceptor::InterceptedService::new(channel, credential.clone()),
            ));
        }
        if args.compare_plain {
            phases.push(("plain", 0, Target::Grpc(clients.clone())));
            phases.push(("consume", args.consume, Target::Grpc(clients)));
        } else {
            let label = if args.protocol == Protocol::Both {
                "grpc"
            } else {
                ""
            };
            phases.push((label, args.consume, Target::Grpc(clients)));
        }
    }
    if args.protocol != Protocol::Grpc {
        let builder =
            crate::ctl::tls::http_client(&transports[0]).map_err(|e| anyhow::anyhow!(e))?;
        let client = builder
            .tcp_nodelay(true)
            .timeout(timeout)
            .pool_max_idle_per_host(args.concurrency)
            .build()
            .context("building the HTTP client")?;
        let urls = args
            .endpoints
            .iter()
            .map(|e| format!("{}/v1/check", e.trim_end_matches('/')))
            .collect();
        let authorization = args.tls.credential.as_ref().map(|t| format!("Bearer {t}"));
        let label = if args.protocol == Protocol::Both {
            "http"
        } else {
            ""
        };
        phases.push((
            label,
            args.consume,
            Target::Http {
                client,
                urls,
                authorization,
            },
        ));
    }
    let mut results = Vec::new();
    for (label, consume, target) in phases {
        // HTTP/1.1 holds one connection per request in flight.
        let connections = match target {
            Target::Grpc(_) => args.connections,
            Target::Http { .. } => args.concurrency,
        };
        let phase = measure(&args, target, consume).await?;
        anyhow::ensure!(
            !phase.latencies.is_empty(),
            "no check succeeded ({} errors: {:?}; first of each: {:?})",
            phase.error_count(),
            phase.errors,
            phase.error_samples
        );
        results.push((label, phase, connections));
    }
    let concurrency = args.concurrency;
    let ratio = match results.as_slice() {
        [(_, plain, _), (_, consume, _)] if args.compare_plain => {
            Some(consume.throughput() / plain.throughput())
        }
        _ => None,
    };
    let http_to_grpc = match results.as_slice() {
        [(_, grpc, _), (_, http, _)] if args.protocol == Protocol::Both => Some((
            http.latencies.value_at_quantile(0.5) as f64
                / grpc.latencies.value_at_quantile(0.5).max(1) as f64,
            http.throughput() / grpc.throughput(),
        )),
        _ => None,
    };
    match args.output {
        Output::Json => {
            let value = match (&results[..], ratio, http_to_grpc) {
                ([(_, plain, connections), (_, consume, _)], Some(ratio), _) => serde_json::json!({
                    "plain": plain.json(concurrency, *connections),
                    "consume": consume.json(concurrency, *connections),
                    "consume_to_plain_throughput": ratio,
                }),
                (
                    [(_, grpc, grpc_connections), (_, http, http_connections)],
                    _,
                    Some((p50, throughput)),
                ) => serde_json::json!({
                    "grpc": grpc.json(concurrency, *grpc_connections),
                    "http": http.json(concurrency, *http_connections),
                    "http_to_grpc_p50": p50,
                    "http_to_grpc_throughput": throughput,
                }),
                _ => results[0].1.json(concurrency, results[0].2),
            };
            println!("{value}");
        }
        Output::Text => {
            for (label, phase, connections) in &results {
                let label = if label.is_empty() {
                    String::new()
                } else {
                    format!("{label}: ")
                };
                phase.print(&label, concurrency, *connections);
            }
            if let Some(ratio) = ratio {
                println!(
                    "consuming checks ran at {:.0} % of the plain throughput",
                    ratio * 100.0
                );
            }
            if let Some((p50, throughput)) = http_to_grpc {
                println!("HTTP/JSON against gRPC: p50 {p50:.2}x, throughput {throughput:.2}x");
            }
        }
    }
    Ok(())
}

/// Every combination of the flags' accounts, features and IPs, as checks
/// consuming `consume` units each; a bad flag is an error before any load.
fn check_requests(args: &CheckBench, consume: u64) -> anyhow::Result<Vec<pb::CheckRequest>> {
    let accounts = args
        .accounts
        .iter()
        .map(|a| AccountId::new(a.as_str()).with_context(|| format!("--account {a:?}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let features = args
        .features
        .iter()
        .map(|f| FeatureId::new(f.as_str()).with_context(|| format!("--feature {f:?}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let ips = args
        .ips
        .iter()
        .map(|ip| ip.parse().with_context(|| format!("--ip {ip:?}")))
        .collect::<anyhow::Result<Vec<std::net::IpAddr>>>()?;
    let subject = args
        .subject
        .as_deref()
        .map(|s| SubjectId::new(s).with_context(|| format!("--subject {s:?}")))
        .transpose()?;
    let mut requests = Vec::with_capacity(accounts.len() * features.len() * ips.len());
    for account in &accounts {
        for feature in &features {
            for ip in &ips {
                let check = CheckRequest {
                    check: Check {
                        account: account.clone(),
                        subject: subject.clone(),
                        feature: feature.clone(),
                        consume,
                    },
                    location: Location::Ip(*ip),
                    consistency: Consistency::Local,
                    idempotency_key: None,
                };
                requests.push(check.into());
            }
        }
    }
    Ok(requests)
}

/// A check request as the HTTP/JSON API takes it.
fn json_body(request: &pb::CheckRequest) -> bytes::Bytes {
    let ip = match &request.location {
        Some(pb::check_request::Location::Ip(ip)) => Some(ip.as_str()),
        _ => None,
    };
    let body = serde_json::json!({
        "account": request.account_id,
        "subject": request.subject_id,
        "feature": request.feature_id,
        "consume": request.consume,
        "ip": ip,
    });
    bytes::Bytes::from(body.to_string())
}

/// What one call answered: the reason, or the error's code and message.
type Answer = Result<String, (String, String)>;

async fn http_check(
    client: &reqwest::Client,
    url: &str,
    authorization: Option<&str>,
    body: bytes::Bytes,
) -> Answer {
    #[derive(serde::Deserialize)]
    struct Reply {
        reason: Option<String>,
        code: Option<String>,
        detail: Option<String>,
    }
    let mut request = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body);
    if let Some(authorization) = authorization {
        request = request.header(reqwest::header::AUTHORIZATION, authorization);
    }
    let response = request
        .send()
        .await
        .map_err(|e| ("TRANSPORT".to_string(), format!("{e:#}")))?;
    let status = response.status();
    let bytes = response
        .bytes()
        .await
        .map_err(|e| ("TRANSPORT".to_string(), format!("{e:#}")))?;
    let reply: Reply = serde_json::from_slice(&bytes)
        .map_err(|e| (status.as_u16().to_string(), format!("not JSON: {e}")))?;
    match (status.is_success(), reply.reason) {
        (true, Some(reason)) => Ok(format!("REASON_{reason}")),
        _ => Err((
            reply.code.unwrap_or_else(|| status.as_u16().to_string()),
            reply.detail.unwrap_or_default(),
        )),
    }
}

/// One phase: warm up, then keep `--concurrency` checks in flight for
/// `--duration-seconds`, each consuming `consume` units.
async fn measure(args: &CheckBench, target: Target, consume: u64) -> anyhow::Result<Phase> {
    let requests = check_requests(args, consume)?;
    let bodies: Vec<bytes::Bytes> = requests.iter().map(json_body).collect();
    let requests = std::sync::Arc::new(requests);
    let bodies = std::sync::Arc::new(bodies);
    let target = std::sync::Arc::new(target);
    let warmup_end = Instant::now() + Duration::from_secs(args.warmup_seconds);
    let end = warmup_end + Duration::from_secs(args.duration_seconds);
    let seconds = args.duration_seconds;
    let mut workers = Vec::with_capacity(args.concurrency);
    for w in 0..args.concurrency {
        let requests = requests.clone();
        let bodies = bodies.clone();
        let target = target.clone();
        workers.push(tokio::spawn(async move {
            let mut phase = Phase::new(seconds);
            let mut grpc = match target.as_ref() {
                Target::Grpc(clients) => Some(clients[w % clients.len()].clone()),
                Target::Http { .. } => None,
            };
            let mut i = w;
            while Instant::now() < end {
                let n = i % requests.len();
                i += 1;
                let start = Instant::now();
                let answer: Answer = match (&mut grpc, target.as_ref()) {
                    (Some(client), _) => match client.check(requests[n].clone()).await {
                        Ok(response) => Ok(response
                            .into_inner()
                            .decision
                            .and_then(|d| pb::Reason::try_from(d.reason).ok())
                            .unwrap_or(pb::Reason::Unspecified)
                            .as_str_name()
                            .to_string()),
                        Err(status) => Err((
                            format!("{:?}", status.code()),
                            format!("{}{}", status.message(), status_cause(&status)),
                        )),
                    },
                    (
                        None,
                        Target::Http {
                            client,
                            urls,
                            authorization,
                        },
                    ) => {
                        http_check(
                            client,
                            &urls[w % urls.len()],
                            authorization.as_deref(),
                            bodies[n].clone(),
                        )
                        .await
                    }
                    (None, Target::Grpc(_)) => unreachable!("a gRPC target has a client"),
                };
                if start < warmup_end {
                    continue;
                }
                match answer {
                    Ok(reason) => {
                        let micros = start.elapsed().as_micros().min(60_000_000) as u64;
                        let _ = phase.latencies.record(micros.max(1));
                        *phase.reasons.entry(reason).or_default() += 1;
                    }
                    Err((code, message)) => {
                        phase.error_samples.entry(code.clone()).or_insert(message);
                        *phase.errors.entry(code).or_default() += 1;
                    }
                }
            }
            phase
        }));
    }
    let mut total = Phase::new(seconds);
    for worker in workers {
        total.merge(worker.await.context("a load worker failed")?)?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::FromArgMatches as _;

    #[test]
    fn tls_options_parse() {
        let command = BenchArgs::augment_args(clap::Command::new("bench"));
        command.clone().debug_assert();
        let matches = command
            .try_get_matches_from([
                "bench",
                "check",
                "--ca",
                "ca.pem",
                "--endpoint",
                "https://h:1",
            ])
            .unwrap();
        let BenchWhat::Check(args) = BenchArgs::from_arg_matches(&matches).unwrap().what;
        assert_eq!(args.tls.ca, Some("ca.pem".into()));
        assert_eq!(args.endpoints, ["https://h:1"]);
    }
}
