//! A port's connection limits over real TCP on 127.0.0.1, in plaintext and
//! over TLS: past `connections_max` a new connection takes the place of an
//! idle one (oldest first), or is closed at once when every connection has
//! a request in flight;
//! a connection with no request in flight is closed after `idle_timeout`,
//! whether it sends nothing or drips bytes; one with a request in flight
//! is not; a client that never finishes its handshake is cut after
//! `handshake_timeout`.
//!
//! Every wait is for a condition with a deadline, never a fixed sleep.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use tollgate_testkit::wait_until;
use tollgate_tls::ca::{self, Request};
use tollgate_tls::limits::InFlight;
use tollgate_tls::{ClientAuth, Identity, Port, PortLimits, Subject, Tls, Transport};

const WAIT: Duration = Duration::from_secs(10);
const DOMAIN: &str = "test.example";

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs() as i64
}

/// A server on 127.0.0.1 that holds every connection it is given, reading
/// until the connection ends; `keep` says whether to hold a request "in
/// flight" on it (as a server would while answering).
struct Server {
    addr: SocketAddr,
    port: Port,
    served: Arc<AtomicUsize>,
    in_flight: Arc<Mutex<Vec<InFlight>>>,
    _stop: watch::Sender<bool>,
}

/// The first `busy` connections served hold a request in flight.
async fn serve(transport: &Transport, limits: PortLimits, busy: usize) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local address");
    let (stop, stop_rx) = watch::channel(false);
    let port = Port::new("test", limits);
    let mut incoming = tollgate_tls::listen_with(
        listener,
        transport,
        ClientAuth::optional(),
        port.clone(),
        true,
        stop_rx,
    )
    .expect("listen");
    let served = Arc::new(AtomicUsize::new(0));
    let in_flight = Arc::new(Mutex::new(Vec::new()));
    let (count, held) = (served.clone(), in_flight.clone());
    tokio::spawn(async move {
        while let Some(Ok(mut io)) = incoming.next().await {
            let n = count.fetch_add(1, Ordering::SeqCst);
            if n < busy {
                let activity = io.peer().activity.expect("a served connection's activity");
                held.lock().unwrap().push(activity.begin());
            }
            tokio::spawn(async move {
                let mut buf = [0u8; 256];
                while let Ok(read) = io.read(&mut buf).await {
                    if read == 0 {
                        break;
                    }
                }
            });
        }
    });
    Server {
        addr,
        port,
        served,
        in_flight,
        _stop: stop,
    }
}

fn limits(connections_max: usize, idle_ms: u64) -> PortLimits {
    PortLimits {
        connections_max,
        handshake_timeout: Duration::from_millis(500),
        idle_timeout: Duration::from_millis(idle_ms),
        header_read_timeout: Duration::from_millis(500),
        keepalive_interval: Duration::from_secs(20),
        requests_tracked: true,
    }
}

/// Whether the server has closed `stream` (a read ends or fails), without
/// waiting: a clean close reads 0 bytes, an abort fails.
async fn closed(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    match tokio::time::timeout(Duration::from_millis(1), stream.read(&mut buf)).await {
        Err(_) => false,
        Ok(Ok(0)) | Ok(Err(_)) => true,
        // TLS records from the server: still open.
        Ok(Ok(_)) => false,
    }
}

async fn wait_closed(what: &str, stream: &mut TcpStream) {
    let stream = tokio::sync::Mutex::new(stream);
    wait_until(what, WAIT, || async {
        let mut s = stream.lock().await;
        closed(&mut s).await.then_some(())
    })
    .await
    .expect(what);
}

#[tokio::test]
async fn past_connections_max_a_new_connection_is_closed_when_all_are_busy() {
    let server = serve(&Transport::Plaintext, limits(4, 60_000), 4).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(server.addr).await.expect("connect"));
    }
    wait_until("four connections open", WAIT, || async {
        let open = server.port.connections_open();
        (open == 4).then_some(()).ok_or(format!("{open} open"))
    })
    .await
    .expect("four open");
    let mut fifth = TcpStream::connect(server.addr).await.expect("connect");
    wait_closed("the fifth connection closed", &mut fifth).await;
    assert_eq!(server.served.load(Ordering::SeqCst), 4, "only four served");
    for stream in &mut held {
        assert!(
            !closed(stream).await,
            "a connection within the cap stays open"
        );
    }
    // A slot freed is a slot taken again.
    drop(held.pop());
    wait_until("a slot freed", WAIT, || async {
        (server.port.connections_open() == 3).then_some(())
    })
    .await
    .expect("slot freed");
    let _again = TcpStream::connect(server.addr).await.expect("connect");
    wait_until("a new connection served", WAIT, || async {
        (server.served.load(Ordering::SeqCst) == 5).then_some(())
    })
    .await
    .expect("served again");
}

#[tokio::test]
async fn past_connections_max_a_new_connection_takes_the_place_of_the_oldest_idle_one() {
    // The first connection is busy; the others idle.
    let server = serve(&Transport::Plaintext, limits(3, 60_000), 1).await;
    let mut connections = Vec::new();
    for n in 1..=3 {
        connections.push(TcpStream::connect(server.addr).await.expect("connect"));
        wait_until("the connection served", WAIT, || async {
            (server.served.load(Ordering::SeqCst) == n).then_some(())
        })
        .await
        .expect("served");
    }
    // Full: the fourth takes the place of the oldest idle one (the
    // second), never of the busy first.
    let _fourth = TcpStream::connect(server.addr).await.expect("connect");
    wait_until("the fourth connection served", WAIT, || async {
        (server.served.load(Ordering::SeqCst) == 4).then_some(())
    })
    .await
    .expect("served");
    wait_closed("the oldest idle connection evicted", &mut connections[1]).await;
    assert!(!closed(&mut connections[0]).await, "the busy one stays");
    assert!(
        !closed(&mut connections[2]).await,
        "the younger idle one stays"
    );
    wait_until("three open again", WAIT, || async {
        let open = server.port.connections_open();
        (open == 3).then_some(()).ok_or(format!("{open} open"))
    })
    .await
    .expect("three open");
}

#[tokio::test]
async fn idle_and_dripping_connections_are_closed_but_not_one_with_a_request_in_flight() {
    let server = serve(&Transport::Plaintext, limits(16, 300), 1).await;
    // The first connection served holds a request in flight.
    let mut busy = TcpStream::connect(server.addr).await.expect("connect");
    wait_until("the busy connection served", WAIT, || async {
        (server.in_flight.lock().unwrap().len() == 1).then_some(())
    })
    .await
    .expect("busy served");
    let mut silent = TcpStream::connect(server.addr).await.expect("connect");
    let mut dripping = TcpStream::connect(server.addr).await.expect("connect");
    let drip = tokio::spawn({
        let mut writer = dripping.into_split();
        async move {
            // A header byte every 50 ms: bytes, but never a request.
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            loop {
                tick.tick().await;
                if writer.1.write_all(b"X").await.is_err() {
                    return writer;
                }
            }
        }
    });
    wait_closed("the silent connection closed", &mut silent).await;
    dripping = {
        let (mut read, write) = tokio::time::timeout(WAIT, async {
            // The dripping one is closed too (its writes then fail).
            drip.await.expect("the dripping task")
        })
        .await
        .expect("the dripping connection closed");
        let mut buf = [0u8; 1];
        let _ = read.read(&mut buf).await;
        read.reunite(write).expect("reunite")
    };
    drop(dripping);
    assert!(
        !closed(&mut busy).await,
        "a connection with a request in flight stays open past the idle timeout"
    );
    // Once its request ends, it too is idle, and closed.
    server.in_flight.lock().unwrap().clear();
    wait_closed("the formerly busy connection closed", &mut busy).await;
}

#[tokio::test]
async fn over_tls_a_silent_client_and_one_that_never_handshakes_are_cut() {
    let now = now();
    let ca = ca::create_ca(DOMAIN, now - 3600, now + 86_400).expect("a CA");
    let dir = tempfile::tempdir().expect("a temp dir");
    let (ca_path, _) = ca::write(dir.path(), "ca", &ca).expect("write the CA");
    let node = ca::issue(
        &ca,
        &Request {
            identity: Identity::parse(&format!("spiffe://{DOMAIN}/region/eu/node/1"))
                .expect("an identity"),
            dns: vec!["localhost".into()],
            ips: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
            not_before: now - 3600,
            not_after: now + 86_400,
        },
    )
    .expect("a node certificate");
    let (cert, key) = ca::write(dir.path(), "node", &node).expect("write the node");
    let files = tollgate_tls::TlsFiles {
        ca: ca_path,
        cert: Some(cert),
        key: Some(key),
    };
    let subject = Subject::RegionNode {
        region: "eu".into(),
        node: 1,
    };
    let tls = Tls::load(files, Some(subject), now).expect("load");
    let server = serve(&Transport::Tls(tls), limits(16, 300), 0).await;

    // Never handshakes: cut after the handshake timeout.
    let mut mute = TcpStream::connect(server.addr).await.expect("connect");
    // Handshakes, then sends nothing: cut after the idle timeout.
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.cert.as_bytes()).expect("the CA"))
        .expect("a root");
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(server.addr).await.expect("connect");
    let mut silent = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::IpAddress(Ipv4Addr::LOCALHOST.into()), tcp)
        .await
        .expect("the handshake");
    wait_until("the handshaken connection served", WAIT, || async {
        (server.served.load(Ordering::SeqCst) == 1).then_some(())
    })
    .await
    .expect("served");
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(WAIT, silent.read(&mut buf))
        .await
        .expect("the silent TLS connection closed within the deadline");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "the server closed the silent TLS connection: {read:?}"
    );
    wait_closed("the connection that never handshook closed", &mut mute).await;
    wait_until("every slot free again", WAIT, || async {
        let open = server.port.connections_open();
        (open == 0).then_some(()).ok_or(format!("{open} open"))
    })
    .await
    .expect("slots free");
}

/// A burst of connections larger than Rust's default listen queue (128),
/// as when every client of a region reconnects at once, is completed and
/// held by the kernel until the server accepts it: none waits on a
/// resent SYN (1 s, 3 s, 7 s...) or believes in a connection the server
/// never had (a SYN cookie whose ACK met a full queue).
#[tokio::test]
async fn a_burst_of_connections_waits_whole_in_the_listen_queue() {
    const BURST: usize = 300;
    let listener = tollgate_tls::net::bind(([127, 0, 0, 1], 0).into()).expect("bind");
    let addr = listener.local_addr().expect("local address");
    let connected = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..BURST)
        .map(|_| {
            let connected = connected.clone();
            tokio::spawn(async move {
                let stream = TcpStream::connect(addr).await.expect("a connect");
                connected.fetch_add(1, Ordering::SeqCst);
                stream
            })
        })
        .collect();
    // Nothing is accepted yet: only the kernel's queue holds them.
    wait_until("the whole burst connected", WAIT, || async {
        let n = connected.load(Ordering::SeqCst);
        (n == BURST).then_some(()).ok_or(format!("{n} of {BURST}"))
    })
    .await
    .expect("the burst connected");
    let mut streams = Vec::new();
    for client in clients {
        streams.push(client.await.expect("a client task"));
    }
    let accepted = tokio::sync::Mutex::new(Vec::new());
    wait_until("the whole burst accepted", WAIT, || async {
        let mut accepted = accepted.lock().await;
        while let Ok(Ok((stream, _))) =
            tokio::time::timeout(Duration::from_millis(50), listener.accept()).await
        {
            accepted.push(stream);
        }
        let n = accepted.len();
        (n == BURST).then_some(()).ok_or(format!("{n} of {BURST}"))
    })
    .await
    .expect("the burst accepted");
    let mut accepted = accepted.into_inner();
    // Each accepted connection is one of the burst's: a byte sent by the
    // client arrives on it.
    for stream in &mut streams {
        stream.write_all(b"x").await.expect("a write");
    }
    for stream in &mut accepted {
        let mut byte = [0u8; 1];
        stream
            .read_exact(&mut byte)
            .await
            .expect("the client's byte");
        assert_eq!(&byte, b"x");
    }
}
