//! TLS on real nodes, tried from outside as an attacker on the network
//! would: a plaintext client, a certificate from a foreign CA, an expired
//! one, one naming a peer the port does not admit, a TLS 1.2-only client.
//! Each is refused at the handshake, counted in
//! `tollgate_tls_handshakes_refused_total` by reason, and nothing it sent
//! is applied. Then a certificate is replaced under a running node.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tollgate_origin_node::OriginConfig;
use tollgate_proto::check::v1 as check;
use tollgate_proto::check::v1::check_service_client::CheckServiceClient;
use tollgate_proto::cluster::v1 as cluster;
use tollgate_proto::cluster::v1::cluster_admin_client::ClusterAdminClient;
use tollgate_proto::cluster::v1::raft_service_client::RaftServiceClient;
use tollgate_tests::pki::{channel_with, TRUST_DOMAIN};
use tollgate_tests::{init_tracing, pki, start_region, wait_until, TestOrigin};
use tollgate_tls::{Expect, Identity, Subject, Tls, TlsFiles, Transport};
use tracing::info;

const DEADLINE: Duration = Duration::from_secs(20);

fn now() -> i64 {
    tollgate_tests::wall_clock_now().0
}

/// The ring provider, for hand-built clients (what an attacker's tool is).
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client config built by hand: trusting the tests' CA, presenting
/// `files`' certificate (loaded without any of our checks), speaking only
/// `versions`.
fn raw_client(
    files: Option<&TlsFiles>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(pki().ca_path()).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match files {
        Some(files) => {
            let chain = CertificateDer::pem_file_iter(files.cert.as_ref().unwrap())
                .unwrap()
                .map(|c| c.unwrap())
                .collect();
            let key = PrivateKeyDer::from_pem_file(files.key.as_ref().unwrap()).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

/// Opens a TLS connection with `config` and reads: Ok(()) when the server
/// accepted it (the read timed out with the connection open), the error
/// otherwise. In TLS 1.3 a server refuses a client certificate after the
/// client's side of the handshake is done, so a refusal shows on the read.
async fn try_tls(
    addr: std::net::SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> Result<(), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut stream = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    // The HTTP/2 preface: a server that accepted us answers with SETTINGS.
    stream
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = [0u8; 64];
    match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await {
        Ok(Ok(0)) => Err("closed".into()),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer".into()),
    }
}

/// The value of `name` with every label in `labels`, from Prometheus text.
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| line.starts_with(name) && !line.starts_with('#'))
        .filter(|line| {
            labels
                .iter()
                .all(|(k, v)| line.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The origin's `/metrics`, over TLS.
async fn origin_metrics(origin: &TestOrigin) -> String {
    let (status, text) = origin.get_text("/metrics").await;
    assert!(status.is_success(), "/metrics: {status}");
    text
}

/// A vote request for `term` from `candidate`, encoded as members send it.
fn vote(term: u64, candidate: u64) -> cluster::VoteRequest {
    let payload = serde_json::to_vec(&json!({
        "vote": {"leader_id": {"term": term, "node_id": candidate}, "committed": false},
        "last_log_id": null
    }))
    .unwrap();
    tollgate_proto::convert::vote_request(payload)
}

/// Sends `vote` to the Raft port at `addr` as `transport` (any server
/// certificate of the trust domain is accepted: the attacker's tool does
/// not care who answers).
async fn send_vote(
    transport: &Transport,
    addr: &str,
    request: cluster::VoteRequest,
) -> Result<(), tonic::Status> {
    let endpoint = transport
        .endpoint(&format!("https://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5));
    let channel = transport.lazy_channel(
        &endpoint,
        Expect::Peers(vec![
            tollgate_tls::Allow::OriginNodes,
            tollgate_tls::Allow::RegionNodes,
        ]),
        "attacker",
    );
    RaftServiceClient::new(channel)
        .vote(request)
        .await
        .map(|_| ())
}

#[tokio::test]
async fn the_raft_port_refuses_every_stranger_and_applies_nothing_from_them() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let origin =
        TestOrigin::start(OriginConfig::new(1, dir.path().join("origin")), dir.path()).await;
    let raft_addr = origin.node.raft().addr().to_string();
    let socket: std::net::SocketAddr = raft_addr.parse().unwrap();
    let (code, status) = origin
        .rest(reqwest::Method::GET, "/v1/status", serde_json::Value::Null)
        .await;
    assert!(code.is_success(), "{code} {status}");
    assert_eq!(status["tls"]["mode"], "tls");
    assert_eq!(
        status["tls"]["identity"],
        format!("spiffe://{TRUST_DOMAIN}/origin/node/1")
    );
    assert!(
        status["tls"]["certificate_expires_in_seconds"]
            .as_i64()
            .unwrap()
            > 0
    );
    let term = origin.node.raft().metrics().current_term;
    let before = origin_metrics(&origin).await;
    let refused = |text: &str, reason: &str| {
        metric(
            text,
            "tollgate_tls_handshakes_refused_total",
            &[("port", "raft"), ("reason", reason)],
        )
    };

    info!("A plaintext client: refused.");
    let plain = tonic::transport::Endpoint::from_shared(format!("http://{raft_addr}"))
        .unwrap()
        .timeout(Duration::from_secs(5))
        .connect_lazy();
    let error = RaftServiceClient::new(plain)
        .vote(vote(term + 100, 9))
        .await
        .unwrap_err();
    info!(%error, "plaintext");

    info!("A certificate from a foreign CA, naming an origin node: refused.");
    let foreign_dir = tempfile::tempdir().unwrap();
    let foreign_ca =
        tollgate_tls::ca::create_ca(TRUST_DOMAIN, now() - 3600, now() + 86_400).unwrap();
    let foreign = tollgate_tls::ca::issue(
        &foreign_ca,
        &tollgate_tls::ca::Request {
            identity: Identity::new(TRUST_DOMAIN, Subject::OriginNode(9)).unwrap(),
            dns: vec![],
            ips: vec![],
            not_before: now() - 3600,
            not_after: now() + 86_400,
        },
    )
    .unwrap();
    let (cert, key) = tollgate_tls::ca::write(foreign_dir.path(), "impostor", &foreign).unwrap();
    let impostor = Transport::Tls(
        Tls::client(
            Some(pki().ca_path()),
            Some(cert.clone()),
            Some(key.clone()),
            now(),
        )
        .unwrap(),
    );
    send_vote(&impostor, &raft_addr, vote(term + 200, 9))
        .await
        .expect_err("an impostor's vote");

    info!("An expired certificate of our own CA, naming an origin node: refused.");
    let expired = pki().issue(
        "expired-origin-9",
        Identity::new(TRUST_DOMAIN, Subject::OriginNode(9)).unwrap(),
        now() - 2 * 86_400,
        now() - 86_400,
    );
    let outcome = try_tls(
        socket,
        raw_client(Some(&expired), &[&rustls::version::TLS13]),
    )
    .await;
    assert!(outcome.is_err(), "an expired certificate was let in");

    info!("A region node's certificate, valid, on the origin's Raft port: refused.");
    let region_node = pki().client_as(Subject::RegionNode {
        region: "eu".into(),
        node: 1,
    });
    send_vote(&region_node, &raft_addr, vote(term + 300, 9))
        .await
        .expect_err("a region node's vote at the origin");

    info!("An application's certificate: refused too; the Raft port is for members and operators.");
    let app = pki().client_as(Subject::App("billing".into()));
    send_vote(&app, &raft_addr, vote(term + 400, 9))
        .await
        .expect_err("an application's vote");

    info!("A TLS 1.2-only client: refused.");
    let member = pki().files(&Subject::OriginNode(9));
    let outcome = try_tls(
        socket,
        raw_client(Some(&member), &[&rustls::version::TLS12]),
    )
    .await;
    assert!(outcome.is_err(), "a TLS 1.2 client was let in");

    info!("Nothing any of them sent was applied: the origin keeps its term and leads.");
    let metrics = origin.node.raft().metrics();
    assert_eq!(metrics.current_term, term, "a refused peer moved the term");
    assert_eq!(metrics.current_leader, Some(1));

    let after = origin_metrics(&origin).await;
    for reason in [
        "not_tls",
        "unknown_ca",
        "expired",
        "wrong_identity",
        "protocol_version",
    ] {
        assert!(
            refused(&after, reason) > refused(&before, reason),
            "tollgate_tls_handshakes_refused_total{{port=raft,reason={reason}}} did not move:\n{}",
            after
                .lines()
                .filter(|l| l.contains("tls_handshakes_refused"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }

    info!("An operator's certificate is admitted to the cluster admin service.");
    let operator = pki().client_as(Subject::Operator("ops".into()));
    let channel = channel_with(&operator, &raft_addr).await;
    let status = ClusterAdminClient::new(channel.clone())
        .status(cluster::StatusRequest {})
        .await
        .expect("an operator reads the cluster status")
        .into_inner();
    assert_eq!(status.node_id, 1);

    info!("Each admitted caller keeps to its own methods: an operator may not append a raw command, vote or open an append stream.");
    let head = origin.node.head_revision();
    let denied = |status: tonic::Status| {
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
        assert_eq!(
            status
                .metadata()
                .get("tollgate-error-code")
                .and_then(|v| v.to_str().ok()),
            Some("CALLER_NOT_ALLOWED"),
            "{status:?}"
        );
    };
    denied(
        ClusterAdminClient::new(channel.clone())
            .client_write(cluster::ClientWriteRequest {
                command: b"{}".to_vec(),
                forward_hops: 0,
            })
            .await
            .unwrap_err(),
    );
    denied(
        RaftServiceClient::new(channel.clone())
            .vote(vote(term + 600, 9))
            .await
            .unwrap_err(),
    );
    denied(
        RaftServiceClient::new(channel.clone())
            .append_entries_stream(tokio_stream::iter(vec![cluster::AppendEntriesRequest {
                payload: b"{}".to_vec(),
            }]))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        origin.node.head_revision(),
        head,
        "an operator's raw command was applied"
    );
    info!("A member may not change the membership; that takes an operator.");
    let member_channel = channel_with(&pki().client_as(Subject::OriginNode(9)), &raft_addr).await;
    denied(
        ClusterAdminClient::new(member_channel)
            .add_learner(cluster::AddLearnerRequest {
                member: Some(cluster::Member {
                    node_id: 9,
                    addr: "127.0.0.1:9".into(),
                }),
                wait_caught_up: false,
            })
            .await
            .unwrap_err(),
    );
    let members = origin.node.raft().metrics();
    assert_eq!(
        members.membership_config.membership().nodes().count(),
        1,
        "a member's AddLearner changed the membership"
    );

    info!("Control: the same vote from a member of the cluster reaches Raft and is answered (the leader's lease refuses it), so the probes above were refused by TLS, not by the request.");
    let sibling = pki().client_as(Subject::OriginNode(9));
    send_vote(&sibling, &raft_addr, vote(term + 500, 9))
        .await
        .expect("a member's vote is answered");
}

#[tokio::test]
async fn the_feed_and_check_ports_refuse_strangers_and_a_region_refuses_a_false_origin() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let origin =
        TestOrigin::start(OriginConfig::new(1, dir.path().join("origin")), dir.path()).await;
    origin.seed(&["export"]).await;
    let feed: std::net::SocketAddr = origin.node.feed_addr();

    info!("The changefeed carries every customer's data: an application may not subscribe.");
    let app = pki().files(&Subject::App("curious".into()));
    let outcome = try_tls(feed, raw_client(Some(&app), &[&rustls::version::TLS13])).await;
    assert!(
        outcome.is_err(),
        "an application subscribed to the changefeed"
    );
    info!("Nor may a client without a certificate.");
    let outcome = try_tls(feed, raw_client(None, &[&rustls::version::TLS13])).await;
    assert!(
        outcome.is_err(),
        "an anonymous client reached the changefeed"
    );
    info!("A region node may.");
    let region_node = pki().files(&Subject::RegionNode {
        region: "eu".into(),
        node: 1,
    });
    try_tls(
        feed,
        raw_client(Some(&region_node), &[&rustls::version::TLS13]),
    )
    .await
    .expect("a region node reaches the changefeed");

    info!("A region node may report only for its own region.");
    let us_node = pki().client_as(Subject::RegionNode {
        region: "us".into(),
        node: 1,
    });
    let mut quota = tollgate_proto::origin::v1::quota_client::QuotaClient::new(
        channel_with(&us_node, feed).await,
    );
    let head = origin.node.head_revision();
    let refused = quota
        .sync(tollgate_proto::origin::v1::SyncRequest {
            region: "eu".into(),
            entries: vec![],
        })
        .await
        .expect_err("region us reporting for region eu");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert_eq!(
        refused
            .metadata()
            .get("tollgate-error-code")
            .and_then(|v| v.to_str().ok()),
        Some("CALLER_NOT_ALLOWED")
    );
    assert_eq!(
        origin.node.head_revision(),
        head,
        "a refused report was recorded"
    );
    // Its own region passes the check (whatever the origin then makes of
    // an empty report).
    if let Err(status) = quota
        .sync(tollgate_proto::origin::v1::SyncRequest {
            region: "us".into(),
            entries: vec![],
        })
        .await
    {
        assert_ne!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    }

    info!("A region that follows a server holding a region node's certificate (not an origin's) refuses it.");
    // The false origin: a TLS port with a valid certificate of our CA,
    // but naming a region node. It serves the real origin's bytes through.
    let false_origin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let false_addr = false_origin.local_addr().unwrap();
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let mut incoming = tollgate_tls::listen(
        false_origin,
        &pki().region_node("eu", 7),
        tollgate_tls::ClientAuth::optional(),
        "false-origin",
        false,
        stop_rx,
    )
    .unwrap();
    let accepted = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        use tokio_stream::StreamExt;
        while let Some(Ok(io)) = incoming.next().await {
            count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            drop(io);
        }
    });
    let region = start_region(
        1,
        dir.path(),
        &origin.node,
        tollgate_tests::https(false_addr),
        None,
        |config| {
            config.geo_required = false;
            config.origin_connect_timeout = Duration::from_secs(1);
            config.reconnect_backoff_max = Duration::from_millis(200);
        },
    )
    .await;
    let node = &region[0];
    let refusals = wait_until(
        "the region to refuse the false origin",
        DEADLINE,
        || async {
            let text = tollgate_server::telemetry::render();
            let n = metric(
                &text,
                "tollgate_tls_connections_refused_total",
                &[("link", "feed"), ("reason", "wrong_identity")],
            );
            if n >= 1.0 {
                Ok(n)
            } else {
                Err(format!(
                    "refusals {n}, connections to the false origin {}, applied {}",
                    accepted.load(std::sync::atomic::Ordering::Relaxed),
                    node.applied_revision()
                ))
            }
        },
    )
    .await
    .unwrap();
    assert!(refusals >= 1.0);
    assert_eq!(
        node.applied_revision(),
        0,
        "the region applied data from a false origin"
    );

    info!("The check port: a plaintext client and a TLS 1.2-only client are refused; a TLS client is answered.");
    let check_addr = node.grpc_addr();
    let plain = tonic::transport::Endpoint::from_shared(format!("http://{check_addr}"))
        .unwrap()
        .timeout(Duration::from_secs(5))
        .connect_lazy();
    let request = check::CheckRequest {
        account_id: "acme".into(),
        feature_id: "export".into(),
        ..Default::default()
    };
    CheckServiceClient::new(plain)
        .check(request.clone())
        .await
        .expect_err("a plaintext check");
    let outcome = try_tls(check_addr, raw_client(None, &[&rustls::version::TLS12])).await;
    assert!(outcome.is_err(), "a TLS 1.2 client reached the check port");
    let answered = CheckServiceClient::new(tollgate_tests::channel(check_addr).await)
        .check(request)
        .await;
    // Not ready (it follows nothing real) but it answered over TLS: any
    // gRPC status from the service proves the connection was served.
    if let Err(status) = &answered {
        assert_ne!(status.code(), tonic::Code::Unknown, "{status:?}");
    }
    let text = tollgate_server::telemetry::render();
    for reason in ["not_tls", "protocol_version"] {
        assert!(
            metric(
                &text,
                "tollgate_tls_handshakes_refused_total",
                &[("port", "check"), ("reason", reason)]
            ) >= 1.0,
            "check port, {reason}"
        );
    }
    stop.send_replace(true);
    for n in region {
        n.shutdown().await.unwrap();
    }
}

/// The certificate a server at `addr` presents now.
async fn presented(addr: std::net::SocketAddr) -> Vec<u8> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let stream = tokio_rustls::TlsConnector::from(raw_client(None, &[&rustls::version::TLS13]))
        .connect(name, tcp)
        .await
        .unwrap();
    stream.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

fn pem_der(path: &std::path::Path) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_file_iter(path)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .to_vec()
}

#[tokio::test]
async fn a_replaced_certificate_reaches_new_connections_and_a_corrupt_one_is_refused() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let origin =
        TestOrigin::start(OriginConfig::new(1, dir.path().join("origin")), dir.path()).await;
    origin.seed(&["export"]).await;

    // The region node's own files, in a directory of its own, so the test
    // can replace them as cert-manager would.
    let certs = tempfile::tempdir().unwrap();
    let subject = Subject::RegionNode {
        region: "reload".into(),
        node: 1,
    };
    let issue = |name: &str| {
        let pem = tollgate_tls::ca::issue(
            pki().ca(),
            &tollgate_tls::ca::Request {
                identity: Identity::new(TRUST_DOMAIN, subject.clone()).unwrap(),
                dns: vec!["localhost".into()],
                ips: vec![std::net::IpAddr::from([127, 0, 0, 1])],
                not_before: now() - 3600,
                not_after: now() + 86_400,
            },
        )
        .unwrap();
        info!(name, "Issued the region node's certificate.");
        tollgate_tls::ca::write(certs.path(), "node", &pem).unwrap()
    };
    let (cert, key) = issue("first");
    let first = pem_der(&cert);
    let files = TlsFiles {
        ca: pki().ca_path(),
        cert: Some(cert.clone()),
        key: Some(key.clone()),
    };
    let transport = Transport::Tls(Tls::load(files, Some(subject.clone()), now()).unwrap());
    let region = start_region(
        1,
        dir.path(),
        &origin.node,
        origin.feed_url(),
        None,
        |config| {
            config.region = "reload".into();
            config.geo_required = false;
            config.raft.transport = transport.clone();
            config.tls_reload_interval = Duration::from_millis(50);
        },
    )
    .await;
    let node = &region[0];
    let head = origin.node.head_revision();
    wait_until("the region to catch up", DEADLINE, || async {
        (node.applied_revision() >= head).then_some(())
    })
    .await
    .unwrap();
    assert_eq!(presented(node.grpc_addr()).await, first);
    let mut open = CheckServiceClient::new(tollgate_tests::channel(node.grpc_addr()).await);
    let request = check::CheckRequest {
        account_id: "acme".into(),
        feature_id: "export".into(),
        subject_id: Some("alice".into()),
        ..Default::default()
    };
    open.check(request.clone())
        .await
        .expect("a check before the rotation");

    info!(
        "Replacing the certificate: new connections get the new one, the open one keeps working."
    );
    let (cert, _) = issue("second");
    let second = pem_der(&cert);
    assert_ne!(first, second);
    wait_until(
        "new connections to see the new certificate",
        DEADLINE,
        || async { (presented(node.grpc_addr()).await == second).then_some(()) },
    )
    .await
    .unwrap();
    open.check(request.clone())
        .await
        .expect("the connection opened before the rotation still works");
    let status = node.status();
    assert_eq!(status.tls.mode, "tls");
    assert_eq!(
        status.tls.identity.as_deref(),
        Some(format!("spiffe://{TRUST_DOMAIN}/region/reload/node/1").as_str())
    );

    info!("A corrupt replacement is refused and the second certificate stays.");
    let refused_before = metric(
        &tollgate_server::telemetry::render(),
        "tollgate_tls_reloads_total",
        &[("outcome", "refused")],
    );
    tollgate_tls::ca::write_atomic(&cert, b"-----BEGIN CERTIFICATE-----\ngarbage\n", false)
        .unwrap();
    wait_until(
        "the reloader to refuse the corrupt file",
        DEADLINE,
        || async {
            let refused = metric(
                &tollgate_server::telemetry::render(),
                "tollgate_tls_reloads_total",
                &[("outcome", "refused")],
            );
            (refused > refused_before).then_some(())
        },
    )
    .await
    .unwrap();
    assert_eq!(presented(node.grpc_addr()).await, second);
    let mut fresh = CheckServiceClient::new(tollgate_tests::channel(node.grpc_addr()).await);
    fresh
        .check(request)
        .await
        .expect("a new connection after the refused reload");
    let expiry = metric(
        &tollgate_server::telemetry::render(),
        "tollgate_tls_certificate_expiry_seconds",
        &[("certificate", "own")],
    );
    assert!(expiry > 0.0, "the expiry gauge: {expiry}");
    for n in region {
        n.shutdown().await.unwrap();
    }
}
