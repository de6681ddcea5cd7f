//! Limits on every port, tried from outside: 2,000 idle or dripping
//! connections on the origin's REST port and a region's check port (some
//! never finishing their TLS handshake, some handshaken and then silent,
//! some dripping a request a byte at a time) while a normal client keeps
//! getting answers, the process's descriptors stay bounded and fall back
//! once the attackers are cut, and every refusal is counted; then a
//! rate-limited, a shed and a timed-out request, each with its status,
//! code and `Retry-After`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tollgate_origin_node::OriginConfig;
use tollgate_server::limits::Limits;
use tollgate_tests::{channel, init_tracing, pki, start_region, wait_until, TestOrigin};
use tollgate_tls::{Alpn, Expect};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tracing::info;

const DEADLINE: Duration = Duration::from_secs(60);
/// Attacking connections, over both ports.
const ATTACKERS: usize = 2_000;
/// Each port's connection cap in these tests.
const CONNECTIONS_MAX: usize = 200;

/// Short limits, so the attack is cut within seconds.
fn test_limits() -> Limits {
    Limits {
        connections_max: CONNECTIONS_MAX,
        handshake_timeout: Duration::from_millis(1_000),
        header_read_timeout: Duration::from_millis(1_000),
        idle_timeout: Duration::from_millis(2_000),
        request_timeout: Duration::from_secs(10),
        ..Limits::default()
    }
}

/// This process's open file descriptors.
fn fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// Lets this process open the attackers' descriptors as well as the
/// nodes' (the soft limit up to the hard one).
fn raise_descriptor_limit() {
    // SAFETY: plain getrlimit/setrlimit on a local struct.
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// `tollgate_requests_refused_total{port,reason}` as this process's
/// registry renders it.
fn refused(port: &str, reason: &str) -> u64 {
    let wanted = format!("port=\"{port}\"");
    let reason = format!("reason=\"{reason}\"");
    tollgate_server::telemetry::render()
        .lines()
        .filter(|l| l.starts_with("tollgate_requests_refused_total{"))
        .filter(|l| l.contains(&wanted) && l.contains(&reason))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kind {
    /// TCP only: never starts its handshake.
    NoHandshake,
    /// Handshakes, then sends nothing.
    Silent,
    /// Handshakes, then sends its request a byte every 200 ms.
    Dripping,
}

/// Where the attacking connections still open are: by kind, port and
/// stage, so a wait that times out says which the server failed to cut.
type Stages = Arc<std::sync::Mutex<std::collections::BTreeMap<String, usize>>>;

fn stage(stages: &Stages, kind: Kind, h2: bool, what: &str, delta: isize) {
    let key = format!("{kind:?} {} {what}", if h2 { "check" } else { "rest" });
    let mut stages = stages.lock().unwrap();
    let count = stages.entry(key.clone()).or_insert(0);
    *count = count.checked_add_signed(delta).expect("a stage count");
    if *count == 0 {
        stages.remove(&key);
    }
}

/// One attacking connection: holds its socket until the server closes it
/// (or the test's deadline), counted in `open` meanwhile.
async fn attack(
    addr: std::net::SocketAddr,
    kind: Kind,
    h2: bool,
    config: Arc<rustls::ClientConfig>,
    open: Arc<AtomicUsize>,
    stages: Stages,
) {
    // Counted from the moment the socket exists, so that this process's
    // descriptors less `open` are the server's.
    let Ok(socket) = tokio::net::TcpSocket::new_v4() else {
        return;
    };
    open.fetch_add(1, Ordering::SeqCst);
    let mut at = "connecting";
    stage(&stages, kind, h2, at, 1);
    let mut moved = |to: &'static str| {
        stage(&stages, kind, h2, at, -1);
        stage(&stages, kind, h2, to, 1);
        at = to;
    };
    let give_up = tokio::time::Instant::now() + DEADLINE;
    let mut buf = [0u8; 512];
    if let Ok(Ok(tcp)) = tokio::time::timeout_at(give_up, socket.connect(addr)).await {
        probe_while_idle(&tcp);
        match kind {
            Kind::NoHandshake => {
                moved("connected");
                let mut tcp = tcp;
                let _ = tokio::time::timeout_at(give_up, async {
                    while let Ok(n) = tcp.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                    }
                })
                .await;
            }
            Kind::Silent | Kind::Dripping => {
                moved("handshaking");
                let name = rustls::pki_types::ServerName::try_from("localhost").expect("a name");
                let connector = tokio_rustls::TlsConnector::from(config);
                if let Ok(Ok(tls)) =
                    tokio::time::timeout_at(give_up, connector.connect(name, tcp)).await
                {
                    moved("handshaken");
                    hold(tls, kind, h2, give_up, &mut buf).await;
                }
            }
        }
    }
    stage(&stages, kind, h2, at, -1);
    open.fetch_sub(1, Ordering::SeqCst);
}

/// TCP keepalive every second once the connection is quiet for two.
///
/// 2,000 connects at once overflow the listeners' queues, and the kernel
/// then answers some connects with a SYN cookie, keeping no state: when
/// the final ACK finds the accept queue still full it is dropped, and the
/// client believes a connection the server never had. One that sends
/// nothing (`NoHandshake`) would never learn it and hold its socket until
/// the test's deadline. A keepalive probe is the first thing it sends:
/// the server's kernel answers it with a reset when it holds nothing (and
/// with an ACK, changing nothing, when it does), so the count of open
/// attackers falls to zero exactly when the server holds none of them.
fn probe_while_idle(tcp: &TcpStream) {
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(2))
        .with_interval(Duration::from_secs(1));
    socket2::SockRef::from(tcp)
        .set_tcp_keepalive(&keepalive)
        .expect("keepalive on an attacking connection");
}

/// Holds a handshaken attacking connection until the server closes it:
/// silent, or dripping its request a byte at a time.
async fn hold(
    tls: tokio_rustls::client::TlsStream<TcpStream>,
    kind: Kind,
    h2: bool,
    give_up: tokio::time::Instant,
    buf: &mut [u8],
) {
    let (mut read, mut write) = tokio::io::split(tls);
    let request: &[u8] = if h2 {
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    } else {
        b"GET /v1/status HTTP/1.1\r\nHost: localhost\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n"
    };
    let mut next = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let _ = tokio::time::timeout_at(give_up, async {
        loop {
            tokio::select! {
                n = read.read(buf) => match n {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                },
                _ = tick.tick(), if matches!(kind, Kind::Dripping) => {
                    // Never the last byte: the request never completes.
                    if next + 1 < request.len() {
                        if write.write_all(&request[next..next + 1]).await.is_err()
                            || write.flush().await.is_err()
                        {
                            return;
                        }
                        next += 1;
                    }
                }
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slowloris_on_rest_and_check_ports_starves_no_one() {
    init_tracing();
    let _heavy = tollgate_tests::heavy_test().await;
    raise_descriptor_limit();
    let dir = tempfile::tempdir().unwrap();
    let mut config = OriginConfig::new(1, dir.path().join("origin"));
    config.limits = test_limits();
    let origin = TestOrigin::start(config, dir.path()).await;
    let region = start_region(1, dir.path(), &origin.node, origin.feed_url(), None, |c| {
        c.limits = test_limits();
        c.check_threads = 2;
    })
    .await;
    let rest_addr = origin.node.http_addr();
    let check_addr = region[0].grpc_addr();

    // The normal clients connect before the attack, as applications do:
    // the SDK's client on the check port (which, like any gRPC client,
    // reconnects when the server closed its connection while idle — here
    // while the REST call in between was slow), reqwest's pool on REST.
    let app = tollgate_sdk::Client::builder()
        .endpoints([tollgate_tests::https(check_addr)])
        .ca_file(pki().ca_path())
        .credential(tollgate_tests::test_credential())
        .deadline(Duration::from_secs(10))
        .build()
        .expect("an SDK client");
    let ask =
        || tollgate_sdk::check_request("acme".parse().unwrap(), None, "export".parse().unwrap());
    // The region knows the tests' credential once it applied the head.
    let head = origin.node.head_revision();
    wait_until("the region applied the origin's head", DEADLINE, || async {
        let applied = region[0].applied_revision();
        if applied >= head {
            Ok(())
        } else {
            Err(format!("applied {applied}, want {head}"))
        }
    })
    .await
    .unwrap();
    app.check(ask()).await.expect("the check port answers");
    let (status, _) = origin.get_text("/v1/status").await;
    assert!(status.is_success(), "REST answers: {status}");
    let baseline = fds();
    info!(
        baseline,
        "Proving 2,000 idle or dripping connections starve no normal client."
    );

    let transport = pki().client();
    let h1 = transport
        .client_config(&Expect::HostName, Alpn::Http1)
        .expect("a client config")
        .expect("TLS");
    let h2 = transport
        .client_config(&Expect::HostName, Alpn::H2)
        .expect("a client config")
        .expect("TLS");
    let open = Arc::new(AtomicUsize::new(0));
    let stages = Stages::default();
    let kinds = [Kind::NoHandshake, Kind::Silent, Kind::Dripping];
    let mut attackers = Vec::new();
    for n in 0..ATTACKERS {
        let kind = kinds[n % 3];
        let (addr, is_h2, config) = if n % 2 == 0 {
            (rest_addr, false, h1.clone())
        } else {
            (check_addr, true, h2.clone())
        };
        attackers.push(tokio::spawn(attack(
            addr,
            kind,
            is_h2,
            config,
            open.clone(),
            stages.clone(),
        )));
    }

    // Normal requests while the attack is on, on connections opened
    // before it; every one must be answered.
    let mut rest_ms = Vec::new();
    let mut check_ms = Vec::new();
    let mut server_fds_max = 0;
    // A connection the server closed (idle past its limit on a loaded
    // machine, or evicted as idle to let a new one in while the port is
    // full) is met as real clients meet it: the GET is sent again, on a new
    // connection, at most twice. Starving would be never being answered.
    let mut rest_resent = 0;
    for _ in 0..40 {
        let started = Instant::now();
        let mut attempt = 0;
        let (status, body) = loop {
            match origin.try_get_text("/v1/status").await {
                Ok(answer) => break answer,
                Err(error) if attempt < 2 && error.is_request() => {
                    attempt += 1;
                    rest_resent += 1;
                    info!(%error, "REST connection closed under the attack; sending again.");
                }
                Err(error) => panic!("REST during the attack: {error}"),
            }
        };
        assert!(
            status.is_success(),
            "REST during the attack: {status} {body}"
        );
        rest_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        let started = Instant::now();
        app.check(ask())
            .await
            .expect("the check port answers during the attack");
        check_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        // The server's share of this process's descriptors: all of them
        // but the attackers' own.
        let server_fds = fds().saturating_sub(open.load(Ordering::SeqCst));
        server_fds_max = server_fds_max.max(server_fds);
    }
    let attackers_open_peak = open.load(Ordering::SeqCst);
    let summary = |ms: &mut Vec<f64>| {
        ms.sort_by(|a, b| a.total_cmp(b));
        (ms[ms.len() / 2], ms[ms.len() - 1])
    };
    let (rest_p50, rest_max) = summary(&mut rest_ms);
    let (check_p50, check_max) = summary(&mut check_ms);
    info!(
        rest_p50_ms = format!("{rest_p50:.1}"),
        rest_max_ms = format!("{rest_max:.1}"),
        check_p50_ms = format!("{check_p50:.1}"),
        check_max_ms = format!("{check_max:.1}"),
        baseline,
        server_fds_max,
        attackers_open = attackers_open_peak,
        rest_resent,
        "Normal clients were answered during the attack."
    );
    println!(
        "slowloris: REST p50 {rest_p50:.1} ms max {rest_max:.1} ms; check p50 {check_p50:.1} ms \
         max {check_max:.1} ms; descriptors: baseline {baseline}, server share at most \
         {server_fds_max}, attackers holding {attackers_open_peak}"
    );
    // Each port holds at most twice its cap (its cap, and connections
    // evicted to make room that are still closing), and a socket per
    // refused connection for the moment it takes to close it: far below
    // the 2,000 an unbounded server would hold.
    assert!(
        server_fds_max <= baseline + 2 * 2 * CONNECTIONS_MAX + 100,
        "the server's descriptors stayed bounded: {server_fds_max} with a baseline of \
         {baseline} and two ports of {CONNECTIONS_MAX}"
    );

    info!("Proving every attacking connection is cut and the descriptors come back.");
    wait_until(
        "every attacking connection closed by the server",
        DEADLINE,
        || async {
            let left = open.load(Ordering::SeqCst);
            (left == 0)
                .then_some(())
                .ok_or(format!("{left} still open: {:?}", stages.lock().unwrap()))
        },
    )
    .await
    .unwrap();
    for attacker in attackers {
        attacker.await.expect("an attacker task");
    }
    wait_until("descriptors back near the baseline", DEADLINE, || async {
        let now = fds();
        (now <= baseline + 16)
            .then_some(())
            .ok_or(format!("{now} open, baseline {baseline}"))
    })
    .await
    .unwrap();
    println!(
        "slowloris: descriptors back to {} (baseline {baseline})",
        fds()
    );
    for port in ["rest", "check"] {
        // A full port closed idle attackers to let new connections in
        // (`evicted`); the rest were cut when idle (`idle`).
        for reason in ["evicted", "idle"] {
            let count = refused(port, reason);
            info!(port, reason, count, "Refusals counted.");
            assert!(count > 0, "{port} counted its {reason} refusals");
        }
    }
    // A new client, after the attack, connects and is answered.
    let fresh = tollgate_tests::pki::http_client(&pki().client());
    let response = fresh
        .get(format!("{}/v1/status", origin.base()))
        .bearer_auth(&origin.token)
        .send()
        .await
        .expect("a new REST client is answered");
    assert!(response.status().is_success());
    let mut fresh_health = HealthClient::new(channel(check_addr).await);
    fresh_health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("a new check client is answered");
    for node in region {
        node.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn rate_limited_shed_and_timed_out_requests_say_so_with_retry_after() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let mut config = OriginConfig::new(1, dir.path().join("origin"));
    config.limits = Limits {
        concurrency_max: 1,
        request_timeout: Duration::from_millis(1_500),
        rate_per_second: 1,
        rate_burst: 3,
        ..Limits::default()
    };
    let origin = TestOrigin::start(config, dir.path()).await;

    info!("Proving a full port sheds a request at once with 503 OVERLOADED, and a slow one times out.");
    // A request whose body never comes holds the port's one slot.
    let config = pki()
        .client()
        .client_config(&Expect::HostName, Alpn::Http1)
        .unwrap()
        .unwrap();
    let tcp = TcpStream::connect(origin.node.http_addr()).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut slow = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .unwrap();
    // Authorized, so the route waits for the body it was promised.
    let head = format!(
        "PUT /v1/products/slow HTTP/1.1\r\nHost: localhost\r\n\
         Authorization: Bearer {}\r\nContent-Type: application/json\r\n\
         Content-Length: 100\r\n\r\n{{",
        origin.token
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    slow.flush().await.unwrap();
    let shed = wait_until(
        "a request shed while the slot is held",
        DEADLINE,
        || async {
            let response = origin
                .http()
                .get(format!("{}/v1/status", origin.base()))
                .bearer_auth("tg_other.secret")
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if response.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE {
                Ok(response)
            } else {
                Err(format!("answered {}", response.status()))
            }
        },
    )
    .await
    .unwrap();
    assert!(shed.headers().get("retry-after").is_some(), "Retry-After");
    let body: serde_json::Value = shed.json().await.unwrap();
    assert_eq!(body["code"], "OVERLOADED", "{body}");
    assert!(refused("rest", "overloaded") > 0);
    // The held request itself ends with 503 TIMEOUT.
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(DEADLINE, async {
        let mut buf = [0u8; 1024];
        while let Ok(n) = slow.read(&mut buf).await {
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
            if answer.windows(9).any(|w| w == b"\"TIMEOUT\"") {
                break;
            }
        }
    })
    .await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("\"TIMEOUT\""), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 1"),
        "{answer}"
    );
    assert!(refused("rest", "timeout") > 0);

    info!("Proving an API key over its rate gets 429 RATE_LIMITED with Retry-After.");
    let mut limited = None;
    for _ in 0..10 {
        let response = origin
            .http()
            .get(format!("{}/v1/status", origin.base()))
            .bearer_auth(&origin.token)
            .send()
            .await
            .expect("REST answers");
        if response.status() == reqwest::StatusCode::TOO_MANY_REQUESTS {
            limited = Some(response);
            break;
        }
    }
    let response = limited.expect("the API key was rate limited within 10 requests");
    let retry_after: u64 = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("a Retry-After header in seconds");
    assert!(retry_after >= 1, "Retry-After: {retry_after}");
    assert_eq!(
        response.headers().get("content-type").unwrap(),
        "application/problem+json"
    );
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], "RATE_LIMITED", "{body}");
    assert_eq!(body["status"], 429, "{body}");
    assert!(refused("rest", "rate_limited") > 0);

    info!("Proving a credential over its rate on the check port gets RESOURCE_EXHAUSTED RATE_LIMITED with retry-after.");
    let region = start_region(1, dir.path(), &origin.node, origin.feed_url(), None, |c| {
        c.limits = Limits {
            rate_per_second: 1,
            rate_burst: 2,
            ..Limits::default()
        };
    })
    .await;
    // The region knows the tests' credential once it applied the origin's
    // head; the rate is counted per credential, after it is verified.
    let head = origin.node.head_revision();
    wait_until(
        "the region applied the origin's head",
        Duration::from_secs(30),
        || async {
            let applied = region[0].applied_revision();
            if applied >= head {
                Ok(())
            } else {
                Err(format!("applied {applied}, want {head}"))
            }
        },
    )
    .await
    .unwrap();
    let mut checks = tollgate_proto::check::v1::check_service_client::CheckServiceClient::new(
        channel(region[0].grpc_addr()).await,
    );
    let ask = tollgate_proto::check::v1::CheckRequest {
        account_id: "acme".into(),
        feature_id: "export".into(),
        ..Default::default()
    };
    let mut status = None;
    for _ in 0..10 {
        if let Err(s) = checks.check(ask.clone()).await {
            status = Some(s);
            break;
        }
    }
    let status = status.expect("the check port limited this caller within 10 calls");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert_eq!(
        status.metadata().get("tollgate-error-code").unwrap(),
        "RATE_LIMITED"
    );
    let retry: u64 = status
        .metadata()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("retry-after in seconds");
    assert!(retry >= 1);
    assert!(refused("check", "rate_limited") > 0);
    for node in region {
        node.shutdown().await.unwrap();
    }
}
