//! The harness's TLS without root: the run's PKI loads as the nodes load
//! it, and a write's outcome is classified over TLS as it was in clear —
//! "certainly not applied" only when the request cannot have left the
//! harness (no TCP connection, or no finished handshake), "unknown" once
//! it may have.

use futures::StreamExt;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tollgate_chaos::cluster::{http_client, NodeSpec, Pki, Topology};
use tollgate_chaos::history::Ack;
use tollgate_chaos::workload::write_outcome;
use tollgate_tls::{Allow, ClientAuth, Tls, TlsFiles, Transport};

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// An origin at 127.0.0.1 and one region node at 127.0.0.2 (both on the
/// loopback interface, no namespaces needed).
fn loopback_topology() -> Topology {
    let mut regions = BTreeMap::new();
    regions.insert(
        "eu".to_string(),
        vec![NodeSpec {
            name: "eu-1".into(),
            region: Some("eu".into()),
            node_id: 1,
            ip: Ipv4Addr::new(127, 0, 0, 2),
        }],
    );
    Topology {
        origin: NodeSpec {
            name: "origin".into(),
            region: None,
            node_id: 1,
            ip: Ipv4Addr::LOCALHOST,
        },
        regions,
    }
}

/// `node`'s TLS as `tollgate serve` loads it: its files, checked against
/// its own identity.
fn node_transport(pki: &Pki, node: &NodeSpec) -> Transport {
    let files = TlsFiles {
        ca: pki.ca(),
        cert: Some(pki.cert(&node.name)),
        key: Some(pki.key(&node.name)),
    };
    Transport::Tls(Tls::load(files, Some(node.subject()), now()).expect("the node's TLS loads"))
}

#[test]
fn every_node_of_the_standard_topology_loads_its_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let topology = Topology::standard();
    let pki = Pki::create(dir.path(), &topology, now()).unwrap();
    for node in topology.all() {
        let transport = node_transport(&pki, node);
        let identity = transport.identity().expect("a node identity");
        assert_eq!(identity.subject, node.subject(), "{}", node.name);
        let section = pki.node_section(&node.name);
        assert!(section.starts_with("[tls]\n"), "{section}");
        assert!(section.contains(&format!("{}.pem", node.name)), "{section}");
    }
    let client = pki.client(now()).unwrap();
    assert_eq!(
        client.identity().unwrap().to_string(),
        "spiffe://chaos.tollgate/operator/chaos"
    );
}

/// Serves TLS as `node` on `addr` (REST's policy, or `auth`); each
/// connection is handed to `answer`.
async fn tls_server<F, Fut>(
    pki: &Pki,
    node: &NodeSpec,
    addr: SocketAddr,
    auth: ClientAuth,
    answer: F,
) -> (SocketAddr, tokio::sync::watch::Sender<bool>)
where
    F: Fn(tollgate_tls::ServerIo) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind(addr).await.unwrap();
    let local = listener.local_addr().unwrap();
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let mut incoming = tollgate_tls::listen(
        listener,
        &node_transport(pki, node),
        auth,
        "rest",
        true,
        stop_rx,
    )
    .unwrap();
    tokio::spawn(async move {
        while let Some(Ok(io)) = incoming.next().await {
            tokio::spawn(answer(io));
        }
    });
    (local, stop)
}

/// Reads one HTTP request's head.
async fn read_head(io: &mut tollgate_tls::ServerIo) -> String {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match io.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

async fn post(client: &reqwest::Client, addr: SocketAddr) -> Ack {
    let result = async {
        let response = client
            .post(format!("https://{addr}/v1/entitlements"))
            .json(&serde_json::json!({"id": "x"}))
            .send()
            .await?;
        let status = response.status();
        let text = response.text().await?;
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        ))
    }
    .await;
    write_outcome(result)
}

fn is_failed(ack: &Ack) -> bool {
    matches!(ack, Ack::Failed { .. })
}

fn is_indeterminate(ack: &Ack) -> bool {
    matches!(ack, Ack::Indeterminate { .. })
}

#[tokio::test]
async fn writes_are_classified_over_tls_as_they_were_in_clear() {
    let dir = tempfile::tempdir().unwrap();
    let topology = loopback_topology();
    let pki = Pki::create(dir.path(), &topology, now()).unwrap();
    let client = http_client(&pki.client(now()).unwrap(), Duration::from_millis(800)).unwrap();
    let origin = &topology.origin;
    let other = &topology.regions["eu"][0];
    let any = SocketAddr::from((origin.ip, 0));

    // Nothing listening: refused, as before.
    let closed = TcpListener::bind(any).await.unwrap().local_addr().unwrap();
    let ack = post(&client, closed).await;
    assert!(is_failed(&ack), "{ack:?}");

    // TCP accepted, then closed before the handshake finished (a node
    // killed mid-handshake): the request was never written.
    let listener = TcpListener::bind(any).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            drop(stream);
        }
    });
    let ack = post(&client, addr).await;
    assert!(is_failed(&ack), "{ack:?}");

    // Something that does not speak TLS: the handshake fails.
    let listener = TcpListener::bind(any).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let _ = stream
                .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                .await;
        }
    });
    let ack = post(&client, addr).await;
    assert!(is_failed(&ack), "{ack:?}");

    // A certificate for another address (a wrong IP SAN): the harness
    // refuses it in the handshake, before sending anything.
    let (addr, _stop_wrong) =
        tls_server(&pki, other, any, ClientAuth::optional(), |_io| async {}).await;
    let ack = post(&client, addr).await;
    match &ack {
        Ack::Failed { error } => assert!(error.contains("certificate"), "{error}"),
        other => panic!("{other:?}"),
    }

    // TCP accepted, the handshake never answered (a paused node): the
    // request's timeout, of unknown outcome, as a paused node always was.
    let listener = TcpListener::bind(any).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (hold_tx, mut hold_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = hold_tx.send(stream);
        }
    });
    let ack = post(&client, addr).await;
    assert!(is_indeterminate(&ack), "{ack:?}");
    hold_rx.close();

    // The handshake finished and the request was read, then the
    // connection closed without an answer: it may have been applied.
    let (addr, _stop_dropped) = tls_server(
        &pki,
        origin,
        any,
        ClientAuth::optional(),
        |mut io| async move {
            let head = read_head(&mut io).await;
            assert!(head.starts_with("POST /v1/entitlements"), "{head}");
        },
    )
    .await;
    let ack = post(&client, addr).await;
    assert!(is_indeterminate(&ack), "{ack:?}");

    // Answered: acknowledged, with the harness's operator certificate
    // accepted by a port that requires one (as the origin's feed does).
    let (addr, _stop_answered) = tls_server(
        &pki,
        origin,
        any,
        ClientAuth::required(vec![
            Allow::RegionNodes,
            Allow::OriginNodes,
            Allow::Operators,
        ]),
        |mut io| async move {
            let peer = io.peer();
            assert_eq!(
                peer.identity.map(|i| i.to_string()).as_deref(),
                Some("spiffe://chaos.tollgate/operator/chaos")
            );
            read_head(&mut io).await;
            let body = r#"{"revision":7}"#;
            let _ = io
                .write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                         content-length: {}\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                )
                .await;
            let _ = io.shutdown().await;
        },
    )
    .await;
    let ack = post(&client, addr).await;
    assert_eq!(ack, Ack::Acked { revision: 7 });
}
