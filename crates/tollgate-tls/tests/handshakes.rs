//! Handshakes over real TCP on 127.0.0.1: who gets in, who is refused (and
//! that a refused client never comes out of the server's `Incoming`), hot
//! reload of the certificate files, and `Tls::load`'s refusals.
//!
//! Nothing here sleeps for a fixed time to let something happen: every wait
//! is for a condition, bounded by [`WAIT`].

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{AlertDescription, ClientConfig, ClientConnection, RootCertStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use tollgate_tls::ca::{self, Pem, Request};
use tollgate_tls::client::ClientIo;
use tollgate_tls::{
    Allow, ClientAuth, Expect, Identity, Incoming, ServerIo, Subject, Tls, TlsFiles, Transport,
};

/// The longest any awaited condition may take before the test fails.
const WAIT: Duration = Duration::from_secs(10);
const HOUR: i64 = 3600;
const DAY: i64 = 86_400;
const DOMAIN: &str = "test.example";

// ---------------------------------------------------------------------------
// Certificates and files
// ---------------------------------------------------------------------------

/// The wall clock in Unix seconds (also the reloader's clock).
fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs() as i64
}

fn eu(node: u64) -> Subject {
    Subject::RegionNode {
        region: "eu".into(),
        node,
    }
}

fn eu_uri(node: u64) -> String {
    format!("spiffe://{DOMAIN}/region/eu/node/{node}")
}

/// A certificate for `uri` signed by `ca`, also naming 127.0.0.1 and
/// localhost (so a stock rustls client can check the server by address).
fn issue_by(ca: &Pem, uri: &str, not_before: i64, not_after: i64) -> Pem {
    ca::issue(
        ca,
        &Request {
            identity: Identity::parse(uri).expect("a valid identity"),
            dns: vec!["localhost".into()],
            ips: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
            not_before,
            not_after,
        },
    )
    .expect("issue a certificate")
}

/// A temp dir with a CA for `test.example` written as `ca.pem`/`ca.key`.
struct Pki {
    dir: tempfile::TempDir,
    ca: Pem,
    ca_path: PathBuf,
    now: i64,
}

impl Pki {
    fn new() -> Pki {
        let now = now();
        let dir = tempfile::tempdir().expect("a temp dir");
        let ca = ca::create_ca(DOMAIN, now - HOUR, now + DAY).expect("create a CA");
        let (ca_path, _) = ca::write(dir.path(), "ca", &ca).expect("write the CA");
        Pki {
            dir,
            ca,
            ca_path,
            now,
        }
    }

    /// A certificate of this CA for `uri`, valid from an hour ago for a day.
    fn issue(&self, uri: &str) -> Pem {
        issue_by(&self.ca, uri, self.now - HOUR, self.now + DAY)
    }

    /// Writes `pem` as `<name>.pem`/`<name>.key`; the files with this CA.
    fn write(&self, name: &str, pem: &Pem) -> TlsFiles {
        let (cert, key) = ca::write(self.dir.path(), name, pem).expect("write a certificate");
        TlsFiles {
            ca: self.ca_path.clone(),
            cert: Some(cert),
            key: Some(key),
        }
    }

    /// Issues, writes and loads the material of the node `subject` (whose
    /// SPIFFE ID is `uri`).
    fn node(&self, name: &str, uri: &str, subject: Subject) -> (Arc<Tls>, TlsFiles, Pem) {
        let pem = self.issue(uri);
        let files = self.write(name, &pem);
        let tls = Tls::load(files.clone(), Some(subject), self.now).expect("load node material");
        (tls, files, pem)
    }
}

fn cert_der(pem: &Pem) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.cert.as_bytes()).expect("a PEM certificate")
}

fn file_der(path: &Path) -> CertificateDer<'static> {
    CertificateDer::from_pem_file(path).expect("a PEM certificate file")
}

// ---------------------------------------------------------------------------
// Servers and clients
// ---------------------------------------------------------------------------

/// Awaits `future`, failing the test if it takes longer than [`WAIT`].
async fn within<F: Future>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(WAIT, future).await {
        Ok(output) => output,
        Err(_) => panic!("{what}: not done within {WAIT:?}"),
    }
}

struct Server {
    addr: SocketAddr,
    incoming: Incoming,
    stop: watch::Sender<bool>,
}

/// A TLS server of `tls` on 127.0.0.1, an ephemeral port.
async fn serve(tls: &Arc<Tls>, auth: ClientAuth) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local address");
    let (stop, stop_rx) = watch::channel(false);
    let incoming = tollgate_tls::listen(
        listener,
        &Transport::Tls(tls.clone()),
        auth,
        "test",
        false,
        stop_rx,
    )
    .expect("listen");
    Server {
        addr,
        incoming,
        stop,
    }
}

impl Server {
    fn uri(&self) -> http::Uri {
        format!("https://127.0.0.1:{}", self.addr.port())
            .parse()
            .expect("a URI")
    }

    /// The next handshaken connection.
    async fn next(&mut self) -> ServerIo {
        within("the server yielding a connection", self.incoming.next())
            .await
            .expect("the server's Incoming ended")
            .expect("the server's Incoming failed")
    }
}

/// Connects with `tls`'s connector, checking the server as `expect` says.
async fn connect(tls: &Arc<Tls>, expect: Expect, uri: http::Uri) -> io::Result<ClientIo> {
    let mut connector = Transport::Tls(tls.clone()).connector(expect, "test");
    within("connecting", tower::Service::call(&mut connector, uri))
        .await
        .map(TokioIo::into_inner)
}

/// What a region/eu client expects of the server region/eu/node/1.
fn expect_eu1() -> Expect {
    Expect::Peers(vec![Allow::Exactly(eu(1))])
}

/// The ring provider, as the crate uses it (deprecated in rustls 0.23.48
/// for lacking post-quantum key exchange).
#[allow(deprecated)]
fn ring() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A stock rustls client config, built by hand: trusts `ca`, checks the
/// server by its IP address, presents `client`, speaks only `versions`.
fn raw_client_config(
    ca: &Pem,
    client: &Pem,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(cert_der(ca)).expect("a usable CA certificate");
    let key = PrivateKeyDer::from_pem_slice(client.key.as_bytes()).expect("a PEM key");
    let mut config = ClientConfig::builder_with_provider(ring())
        .with_protocol_versions(versions)
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_client_auth_cert(vec![cert_der(client)], key)
        .expect("a client certificate");
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

/// Connects to `addr` with a hand-built config.
async fn raw_connect(config: Arc<ClientConfig>, addr: SocketAddr) -> io::Result<ClientIo> {
    within("connecting", async {
        let tcp = tollgate_tls::net::TcpStream::from(TcpStream::connect(addr).await?);
        let name = ServerName::IpAddress(addr.ip().into());
        let stream = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await?;
        Ok(ClientIo::Tls(Box::new(stream)))
    })
    .await
}

fn client_tls(io: &ClientIo) -> &ClientConnection {
    match io {
        ClientIo::Tls(stream) => stream.get_ref().1,
        ClientIo::Plain(_) => panic!("the connector connected in plaintext"),
    }
}

fn client_local(io: &ClientIo) -> SocketAddr {
    match io {
        ClientIo::Tls(stream) => stream.get_ref().0.local_addr().expect("local address"),
        ClientIo::Plain(stream) => stream.local_addr().expect("local address"),
    }
}

fn server_tls(io: &ServerIo) -> &rustls::ServerConnection {
    io.tls_connection()
        .expect("the server accepted in plaintext")
}

/// The certificate the server showed this client.
fn server_cert(io: &ClientIo) -> CertificateDer<'static> {
    client_tls(io)
        .peer_certificates()
        .and_then(|certs| certs.first())
        .expect("the server presented a certificate")
        .clone()
        .into_owned()
}

/// Echoes whatever `io` receives, until it closes.
fn spawn_echo(io: ServerIo) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let (mut read, mut write) = tokio::io::split(io);
        let _ = tokio::io::copy(&mut read, &mut write).await;
    })
}

/// Sends `message` and reads it back from an echoing server.
async fn round_trip(io: &mut ClientIo, message: &[u8]) {
    io.write_all(message).await.expect("write");
    io.flush().await.expect("flush");
    let mut back = vec![0; message.len()];
    within("reading the echo", io.read_exact(&mut back))
        .await
        .expect("read the echo");
    assert_eq!(back, message);
}

/// How the client learned it was refused: its connect failed, or the
/// server's alert (or a close) ended its first read. A server that wrongly
/// let it in sends nothing, so the read times out and the test fails.
async fn refusal(connected: io::Result<ClientIo>) -> io::Error {
    let mut io = match connected {
        Err(error) => return error,
        Ok(io) => io,
    };
    let mut buf = [0u8; 64];
    match within("the client learning it was refused", io.read(&mut buf)).await {
        Ok(0) => io::Error::new(io::ErrorKind::UnexpectedEof, "closed without an alert"),
        Ok(n) => panic!("the refused client read {n} bytes of application data"),
        Err(error) => error,
    }
}

fn rustls_error(error: &io::Error) -> Option<&rustls::Error> {
    error.get_ref()?.downcast_ref::<rustls::Error>()
}

/// The client learned of its refusal from the server's `alert`.
fn assert_alert(error: &io::Error, alert: AlertDescription) {
    match rustls_error(error) {
        Some(rustls::Error::AlertReceived(got)) => assert_eq!(*got, alert, "{error}"),
        _ => panic!("expected the server's {alert:?} alert, got: {error:?}"),
    }
}

/// After a refused attempt: a good client (region/eu/node/2) connects and
/// the first connection the server yields is that one, so the refused one
/// never came out of `Incoming`.
async fn assert_next_is_good(pki: &Pki, server: &mut Server) {
    let (good, _, _) = pki.node("good", &eu_uri(2), eu(2));
    let client = connect(&good, expect_eu1(), server.uri())
        .await
        .expect("the good client connects");
    let io = server.next().await;
    let peer = io.peer();
    assert_eq!(peer.remote, Some(client_local(&client)));
    assert_eq!(
        peer.identity.as_deref().map(ToString::to_string),
        Some(eu_uri(2))
    );
}

/// The server of most tests: region/eu/node/1, admitting region/eu nodes.
async fn eu_server(pki: &Pki) -> (Server, Arc<Tls>, TlsFiles) {
    let (tls, files, _) = pki.node("node1", &eu_uri(1), eu(1));
    let server = serve(
        &tls,
        ClientAuth::required(vec![Allow::RegionNodesOf("eu".into())]),
    )
    .await;
    (server, tls, files)
}

// ---------------------------------------------------------------------------
// 1. The happy path
// ---------------------------------------------------------------------------

#[tokio::test]
async fn mutual_tls_between_region_nodes_carries_bytes_and_identities() {
    let pki = Pki::new();
    let (mut server, server_tls_material, _) = eu_server(&pki).await;
    assert_eq!(
        server_tls_material.identity().map(|i| i.to_string()),
        Some(eu_uri(1))
    );
    let (client_material, _, _) = pki.node("node2", &eu_uri(2), eu(2));

    let mut client = connect(&client_material, expect_eu1(), server.uri())
        .await
        .expect("node 2 connects to node 1");
    let mut io = server.next().await;

    // Both ends speak TLS 1.3 and agreed on h2.
    let version = Some(rustls::ProtocolVersion::TLSv1_3);
    assert_eq!(client_tls(&client).protocol_version(), version);
    assert_eq!(server_tls(&io).protocol_version(), version);
    assert_eq!(client_tls(&client).alpn_protocol(), Some(&b"h2"[..]));

    // The server knows who called, the client who answered.
    let peer = io.peer();
    assert!(peer.tls);
    assert_eq!(peer.remote, Some(client_local(&client)));
    let identity = peer.identity.expect("the client's identity");
    assert_eq!(identity.to_string(), eu_uri(2));
    assert_eq!(identity.subject, eu(2));
    assert_eq!(identity.trust_domain, DOMAIN);
    let shown = client_tls(&client)
        .peer_certificates()
        .and_then(|c| c.first())
        .expect("the server's certificate")
        .clone();
    assert_eq!(shown, file_der(pki.dir.path().join("node1.pem").as_path()));

    // Bytes go through, both ways.
    client.write_all(b"hello, node 1").await.unwrap();
    client.flush().await.unwrap();
    let mut got = [0u8; 13];
    within("the server reading", io.read_exact(&mut got))
        .await
        .unwrap();
    assert_eq!(&got, b"hello, node 1");
    io.write_all(&got).await.unwrap();
    io.flush().await.unwrap();
    let mut back = [0u8; 13];
    within("the client reading", client.read_exact(&mut back))
        .await
        .unwrap();
    assert_eq!(&back, b"hello, node 1");
}

// ---------------------------------------------------------------------------
// 2. Refusals
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_plaintext_client_is_closed_without_an_answer() {
    let pki = Pki::new();
    let (mut server, _, _) = eu_server(&pki).await;

    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    // Read until the server closes: at most a TLS alert record comes back,
    // never an HTTP/2 SETTINGS frame.
    let mut received = Vec::new();
    let closed = within("the server closing the plaintext connection", async {
        let mut buf = [0u8; 1024];
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) => return Ok(()),
                Ok(n) => received.extend_from_slice(&buf[..n]),
                Err(error) => return Err(error),
            }
        }
    })
    .await;
    if let Err(error) = closed {
        assert_eq!(error.kind(), io::ErrorKind::ConnectionReset, "{error}");
    }
    assert!(
        received.is_empty() || received[0] == 0x15,
        "the server answered plaintext with {received:?}"
    );

    assert_next_is_good(&pki, &mut server).await;
}

/// A client that trusts our CA (so it accepts the server) but holds a
/// certificate for region/eu/node/2 from `foreign`. As a client (no
/// expected identity), `Tls::load` does not insist its own chain leads to
/// the bundle.
async fn foreign_client(pki: &Pki, server: &Server, foreign: &Pem) -> io::Error {
    let pem = issue_by(foreign, &eu_uri(2), pki.now - HOUR, pki.now + DAY);
    let files = pki.write("foreign", &pem);
    let client = Tls::load(files, None, pki.now).expect("a client may load it");
    refusal(connect(&client, expect_eu1(), server.uri()).await).await
}

#[tokio::test]
async fn a_client_certificate_from_a_foreign_ca_is_refused() {
    let pki = Pki::new();
    let (mut server, _, _) = eu_server(&pki).await;

    let foreign = ca::create_ca("foreign.example", pki.now - HOUR, pki.now + DAY).unwrap();
    let error = foreign_client(&pki, &server, &foreign).await;
    assert_alert(&error, AlertDescription::UnknownCA);

    assert_next_is_good(&pki, &mut server).await;
}

#[tokio::test]
async fn a_client_certificate_from_an_impostor_ca_of_the_same_name_is_refused() {
    let pki = Pki::new();
    let (mut server, _, _) = eu_server(&pki).await;

    // Another CA with our CA's very name: the issuer is found by name, and
    // its signature does not verify.
    let impostor = ca::create_ca(DOMAIN, pki.now - HOUR, pki.now + DAY).unwrap();
    let error = foreign_client(&pki, &server, &impostor).await;
    assert_alert(&error, AlertDescription::DecryptError);

    assert_next_is_good(&pki, &mut server).await;
}

#[tokio::test]
async fn an_expired_client_certificate_is_refused() {
    let pki = Pki::new();
    let (mut server, _, _) = eu_server(&pki).await;

    let expired = issue_by(&pki.ca, &eu_uri(2), pki.now - 2 * DAY, pki.now - DAY);
    let files = pki.write("expired", &expired);
    let error = match Tls::load(files, Some(eu(2)), pki.now) {
        Err(error) => error.to_string(),
        Ok(_) => panic!("Tls::load accepted an expired certificate"),
    };
    assert!(error.contains("expired"), "{error}");

    let config = raw_client_config(&pki.ca, &expired, &[&rustls::version::TLS13]);
    let error = refusal(raw_connect(config, server.addr).await).await;
    assert_alert(&error, AlertDescription::CertificateExpired);

    assert_next_is_good(&pki, &mut server).await;
}

#[tokio::test]
async fn a_node_of_another_region_is_refused() {
    let pki = Pki::new();
    let (mut server, _, _) = eu_server(&pki).await;

    let (us1, _, _) = pki.node(
        "us1",
        &format!("spiffe://{DOMAIN}/region/us/node/1"),
        Subject::RegionNode {
            region: "us".into(),
            node: 1,
        },
    );
    let error = refusal(connect(&us1, expect_eu1(), server.uri()).await).await;
    assert_alert(&error, AlertDescription::CertificateUnknown);

    assert_next_is_good(&pki, &mut server).await;
}

#[tokio::test]
async fn a_client_of_another_trust_domain_is_refused_even_from_our_ca() {
    let pki = Pki::new();
    let (mut server, _, _) = eu_server(&pki).await;

    // Same CA, a subject the port admits (region/eu), the wrong trust
    // domain. A stock client, so that only the server judges it.
    let evil = pki.issue("spiffe://evil.example/region/eu/node/2");
    let config = raw_client_config(&pki.ca, &evil, &[&rustls::version::TLS13]);
    let error = refusal(raw_connect(config, server.addr).await).await;
    assert_alert(&error, AlertDescription::CertificateUnknown);

    assert_next_is_good(&pki, &mut server).await;
}

#[tokio::test]
async fn the_client_refuses_a_server_naming_another_node() {
    let pki = Pki::new();
    let (mut server, _, _) = eu_server(&pki).await;
    let (client, _, _) = pki.node("node2", &eu_uri(2), eu(2));

    let expect = Expect::Peers(vec![Allow::Exactly(eu(3))]);
    let error = match connect(&client, expect, server.uri()).await {
        Err(error) => error,
        Ok(_) => panic!("the client accepted region/eu/node/1 while expecting node 3"),
    };
    match rustls_error(&error) {
        Some(rustls::Error::InvalidCertificate(rustls::CertificateError::Other(_))) => {}
        _ => panic!("expected an identity refusal, got {error:?}"),
    }
    let message = format!("{error}");
    assert!(
        message.contains("region/eu/node/1") && message.contains("not admitted"),
        "{message}"
    );

    assert_next_is_good(&pki, &mut server).await;
}

#[tokio::test]
async fn a_tls12_only_client_is_refused() {
    let pki = Pki::new();
    let (mut server, _, _) = eu_server(&pki).await;

    // A valid node certificate: only the protocol version is wrong.
    let pem = pki.issue(&eu_uri(2));
    let config = raw_client_config(&pki.ca, &pem, &[&rustls::version::TLS12]);
    let error = match raw_connect(config, server.addr).await {
        Err(error) => error,
        Ok(_) => panic!("a TLS 1.2 client completed a handshake"),
    };
    assert_alert(&error, AlertDescription::ProtocolVersion);

    assert_next_is_good(&pki, &mut server).await;
}

/// The control for the hand-built client of the refusal tests: the same
/// construction with a good certificate and TLS 1.3 gets in, so those
/// refusals are the server's judgement of the certificate, not a broken
/// client.
#[tokio::test]
async fn a_hand_built_client_with_a_good_certificate_gets_in() {
    let pki = Pki::new();
    let (mut server, _, _) = eu_server(&pki).await;

    let pem = pki.issue(&eu_uri(2));
    let config = raw_client_config(&pki.ca, &pem, &[&rustls::version::TLS13]);
    let mut client = raw_connect(config, server.addr)
        .await
        .expect("a good hand-built client connects");
    let io = server.next().await;
    assert_eq!(io.peer().remote, Some(client_local(&client)));
    assert_eq!(io.peer().identity.map(|i| i.to_string()), Some(eu_uri(2)));
    spawn_echo(io);
    round_trip(&mut client, b"ping").await;
}

// ---------------------------------------------------------------------------
// 3. Hot reload
// ---------------------------------------------------------------------------

#[tokio::test]
async fn reload_reaches_new_connections_and_spares_open_ones() {
    let pki = Pki::new();
    let (mut server, tls, files) = eu_server(&pki).await;
    let cert_path = files.cert.clone().unwrap();
    let first = file_der(&cert_path);
    let (client, _, _) = pki.node("node2", &eu_uri(2), eu(2));

    // An open connection, on the first certificate.
    let mut open = connect(&client, expect_eu1(), server.uri()).await.unwrap();
    assert_eq!(server_cert(&open), first);
    spawn_echo(server.next().await);
    round_trip(&mut open, b"before").await;

    // Nothing changed: nothing to do.
    assert!(!tls.reload(now()).expect("reload unchanged files"));

    // A new certificate for the same node.
    let second_pem = pki.issue(&eu_uri(1));
    pki.write("node1", &second_pem);
    let second = file_der(&cert_path);
    assert_eq!(second, cert_der(&second_pem));
    assert_ne!(second, first);
    assert!(tls.reload(now()).expect("reload a new certificate"));

    let mut fresh = connect(&client, expect_eu1(), server.uri()).await.unwrap();
    assert_eq!(server_cert(&fresh), second);
    spawn_echo(server.next().await);
    round_trip(&mut fresh, b"after").await;
    // The connection opened before the reload still works.
    round_trip(&mut open, b"still here").await;

    // A corrupt certificate file is refused; the second one stays.
    ca::write_atomic(&cert_path, b"this is not a certificate", false).unwrap();
    let error = tls.reload(now()).expect_err("a garbage certificate file");
    let message = error.to_string();
    assert!(
        message.contains(&cert_path.display().to_string()) && message.contains("CERTIFICATE"),
        "{message}"
    );
    let mut third = connect(&client, expect_eu1(), server.uri()).await.unwrap();
    assert_eq!(server_cert(&third), second);
    spawn_echo(server.next().await);
    round_trip(&mut third, b"corrupt file").await;

    // A certificate naming another node is refused; the second one stays.
    pki.write("node1", &pki.issue(&eu_uri(3)));
    let error = tls
        .reload(now())
        .expect_err("a certificate of another node");
    let message = error.to_string();
    assert!(
        message.contains(&format!("names {}", eu_uri(3))),
        "{message}"
    );
    let mut fourth = connect(&client, expect_eu1(), server.uri()).await.unwrap();
    assert_eq!(server_cert(&fourth), second);
    spawn_echo(server.next().await);
    round_trip(&mut fourth, b"other node").await;

    // And the identity the server claims is still node 1.
    assert_eq!(tls.identity().map(|i| i.subject), Some(eu(1)));
    round_trip(&mut open, b"to the end").await;
}

#[tokio::test]
async fn reload_refuses_a_certificate_of_another_trust_domain() {
    let pki = Pki::new();
    let (tls, _, _) = pki.node("node1", &eu_uri(1), eu(1));
    let generation = Arc::as_ptr(&tls.current());
    pki.write(
        "node1",
        &pki.issue("spiffe://other.example/region/eu/node/1"),
    );
    let error = tls.reload(now()).expect_err("another trust domain");
    assert!(
        error.to_string().contains("another trust domain"),
        "{error}"
    );
    // The old material stays in use.
    assert_eq!(Arc::as_ptr(&tls.current()), generation);
    assert_eq!(tls.identity().map(|i| i.to_string()), Some(eu_uri(1)));
}

#[tokio::test]
async fn the_reloader_picks_up_a_new_certificate_by_itself() {
    let pki = Pki::new();
    let (mut server, tls, files) = eu_server(&pki).await;
    let cert_path = files.cert.clone().unwrap();
    let first = file_der(&cert_path);
    let (client, _, _) = pki.node("node2", &eu_uri(2), eu(2));

    let (stop, stop_rx) = watch::channel(false);
    let reloader = tls.spawn_reloader(Duration::from_millis(20), stop_rx, now);

    let before = connect(&client, expect_eu1(), server.uri()).await.unwrap();
    assert_eq!(server_cert(&before), first);
    server.next().await;

    pki.write("node1", &pki.issue(&eu_uri(1)));
    let second = file_der(&cert_path);
    assert_ne!(second, first);

    // New connections until one shows the new certificate.
    let server = tokio::sync::Mutex::new(server);
    tollgate_testkit::wait_until("the reloader loading the new certificate", WAIT, || async {
        let mut server = server.lock().await;
        let io = connect(&client, expect_eu1(), server.uri()).await.unwrap();
        server.next().await;
        let shown = server_cert(&io);
        assert!(
            shown == first || shown == second,
            "neither the old nor the new certificate"
        );
        if shown == second {
            Ok(())
        } else {
            Err("the old certificate".to_string())
        }
    })
    .await
    .unwrap();

    // It stops when told to.
    stop.send(true).unwrap();
    within("the reloader stopping", reloader).await.unwrap();
}

// ---------------------------------------------------------------------------
// 4. Tls::load refusals
// ---------------------------------------------------------------------------

fn load_error(files: TlsFiles, expect: Option<Subject>, now: i64) -> String {
    match Tls::load(files, expect, now) {
        Err(error) => error.to_string(),
        Ok(_) => panic!("Tls::load accepted inconsistent files"),
    }
}

#[test]
fn load_refuses_a_key_that_does_not_match_the_certificate() {
    let pki = Pki::new();
    let one = pki.write("one", &pki.issue(&eu_uri(1)));
    let other = pki.write("other", &pki.issue(&eu_uri(1)));
    let mixed = TlsFiles {
        ca: pki.ca_path.clone(),
        cert: one.cert.clone(),
        key: other.key.clone(),
    };
    let error = load_error(mixed, Some(eu(1)), pki.now);
    let key = other.key.unwrap().display().to_string();
    assert!(
        error.contains("does not match") && error.contains(&key),
        "{error}"
    );
    // The matching pair loads.
    Tls::load(one, Some(eu(1)), pki.now).expect("a matching pair");
}

#[test]
fn load_refuses_a_certificate_not_chaining_to_the_bundle() {
    let pki = Pki::new();
    let foreign = ca::create_ca(DOMAIN, pki.now - HOUR, pki.now + DAY).unwrap();
    let pem = issue_by(&foreign, &eu_uri(1), pki.now - HOUR, pki.now + DAY);
    let files = pki.write("foreign", &pem);
    let error = load_error(files, Some(eu(1)), pki.now);
    assert!(
        error.contains("does not chain to the CA bundle")
            && error.contains(&pki.ca_path.display().to_string()),
        "{error}"
    );
}

#[test]
fn load_refuses_a_node_certificate_naming_someone_else() {
    let pki = Pki::new();
    let files = pki.write("node2", &pki.issue(&eu_uri(2)));
    let error = load_error(files.clone(), Some(eu(1)), pki.now);
    assert!(
        error.contains(&format!("names {}", eu_uri(2)))
            && error.contains("this node is region/eu/node/1"),
        "{error}"
    );
    Tls::load(files, Some(eu(2)), pki.now).expect("its own node loads it");
}

#[test]
fn load_refuses_an_empty_ca_file() {
    let pki = Pki::new();
    let mut files = pki.write("node1", &pki.issue(&eu_uri(1)));
    let empty = pki.dir.path().join("empty-ca.pem");
    std::fs::write(&empty, b"").unwrap();
    files.ca = empty.clone();
    let error = load_error(files, Some(eu(1)), pki.now);
    assert!(
        error.contains("CA bundle")
            && error.contains(&empty.display().to_string())
            && error.contains("no CERTIFICATE block"),
        "{error}"
    );
}

// ---------------------------------------------------------------------------
// Stopping
// ---------------------------------------------------------------------------

#[tokio::test]
async fn stop_ends_the_incoming_stream() {
    let pki = Pki::new();
    let (mut server, _, _) = eu_server(&pki).await;
    server.stop.send(true).unwrap();
    let next = within("Incoming ending on stop", server.incoming.next()).await;
    assert!(next.is_none(), "a connection after stop");
}

#[tokio::test]
async fn a_dropped_stop_sender_ends_the_incoming_stream() {
    let pki = Pki::new();
    let (server, _, _) = eu_server(&pki).await;
    let Server {
        mut incoming, stop, ..
    } = server;
    // A closed channel is a stop too (as everywhere in Tollgate), not a
    // reason to spin.
    drop(stop);
    let next = within("Incoming ending on a closed stop channel", incoming.next()).await;
    assert!(next.is_none(), "a connection after stop");
}
