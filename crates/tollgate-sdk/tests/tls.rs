//! TLS in the SDK, over real sockets on 127.0.0.1:0: the origin's key set
//! fetched and refreshed over verified TLS (served by axum on
//! `tollgate_tls::listen`), what a refresh refuses while the old key set
//! keeps verifying, and the client builder's TLS settings (with a stand-in
//! check service over TLS).
//!
//! Nothing here sleeps for a fixed time: every wait is for a condition,
//! bounded by [`WAIT`].

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::watch;

use tollgate_license::{Issuer, LicenseClaims, LicenseError, RandomId, ISSUER_ORIGIN};
use tollgate_model::{AccountId, UnixSeconds};
use tollgate_proto::check::v1 as pb;
use tollgate_proto::check::v1::check_service_server::{CheckService, CheckServiceServer};
use tollgate_sdk::{
    check_request, Client, ClientTlsOptions, Clock, OfflineVerifier, SdkError, KEY_SET_PATH,
};
use tollgate_signing::{KeyRing, PublicKeySet};
use tollgate_tls::ca::{self, Pem, Request};
use tollgate_tls::{ClientAuth, Identity, Subject, Tls, TlsFiles, Transport};

/// The longest any awaited condition (a fetch, a call) may take.
const WAIT: Duration = Duration::from_secs(10);
const HOUR: i64 = 3600;
const DAY: i64 = 86_400;
const DOMAIN: &str = "test.example";
const AUDIENCE: &str = "studio";

fn now() -> i64 {
    Clock::system().now_secs()
}

// ---------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------

/// A CA in a temp dir, and certificates it issues.
struct Pki {
    dir: tempfile::TempDir,
    domain: &'static str,
    ca: Pem,
    ca_path: PathBuf,
    now: i64,
}

impl Pki {
    /// A CA for [`DOMAIN`]. Two of them have the same name: a client
    /// trusting one finds the other's signature bad.
    fn new() -> Pki {
        Pki::for_domain(DOMAIN)
    }

    /// A CA for `domain` (another name: a client trusting another CA
    /// finds no issuer for its certificates).
    fn for_domain(domain: &'static str) -> Pki {
        let now = now();
        let dir = tempfile::tempdir().expect("a temp dir");
        let ca = ca::create_ca(domain, now - HOUR, now + DAY).expect("create a CA");
        let (ca_path, _) = ca::write(dir.path(), "ca", &ca).expect("write the CA");
        Pki {
            dir,
            domain,
            ca,
            ca_path,
            now,
        }
    }

    /// What a client trusting this CA gives.
    fn client_options(&self) -> ClientTlsOptions {
        ClientTlsOptions {
            ca: Some(self.ca_path.clone()),
            ..ClientTlsOptions::default()
        }
    }

    /// A server's transport: a region node's certificate of this CA,
    /// valid for `dns` and `ips`.
    fn server(&self, dns: &[&str], ips: &[IpAddr]) -> Transport {
        let subject = Subject::RegionNode {
            region: "eu".into(),
            node: 1,
        };
        let pem = ca::issue(
            &self.ca,
            &Request {
                identity: Identity::new(self.domain, subject.clone()).expect("an identity"),
                dns: dns.iter().map(|d| d.to_string()).collect(),
                ips: ips.to_vec(),
                not_before: self.now - HOUR,
                not_after: self.now + DAY,
            },
        )
        .expect("issue a server certificate");
        let (cert, key) = ca::write(self.dir.path(), "server", &pem).expect("write it");
        let files = TlsFiles {
            ca: self.ca_path.clone(),
            cert: Some(cert),
            key: Some(key),
        };
        Transport::Tls(Tls::load(files, Some(subject), self.now).expect("load the server's TLS"))
    }

    /// A server certificate for `localhost` and 127.0.0.1.
    fn loopback_server(&self) -> Transport {
        self.server(&["localhost"], &[IpAddr::V4(Ipv4Addr::LOCALHOST)])
    }
}

// ---------------------------------------------------------------------------
// The origin's key set, served
// ---------------------------------------------------------------------------

/// Serves whatever body it holds at [`KEY_SET_PATH`], over `transport`.
struct KeyServer {
    port: u16,
    body: Arc<Mutex<Vec<u8>>>,
    /// Keeps the acceptor running (it stops when this is dropped).
    _stop: watch::Sender<bool>,
}

impl KeyServer {
    async fn start(transport: &Transport, keys: &PublicKeySet) -> KeyServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("an address").port();
        let (stop, stop_rx) = watch::channel(false);
        let incoming = tollgate_tls::listen(
            listener,
            transport,
            ClientAuth::optional(),
            "test",
            true,
            stop_rx,
        )
        .expect("listen");
        let body = Arc::new(Mutex::new(Vec::new()));
        let router = axum::Router::new()
            .route(KEY_SET_PATH, get(serve_body))
            .with_state(body.clone());
        tokio::spawn(async move {
            let _ = axum::serve(incoming, router).await;
        });
        let server = KeyServer {
            port,
            body,
            _stop: stop,
        };
        server.set(keys);
        server
    }

    fn set(&self, keys: &PublicKeySet) {
        self.set_raw(serde_json::to_vec(keys).expect("a key set encodes"));
    }

    fn set_raw(&self, body: Vec<u8>) {
        *self.body.lock().unwrap() = body;
    }

    fn url(&self, scheme: &str, host: &str) -> String {
        format!("{scheme}://{host}:{}{KEY_SET_PATH}", self.port)
    }

    /// `https://127.0.0.1:<port>/.well-known/tollgate-keys.json`.
    fn https(&self) -> String {
        self.url("https", "127.0.0.1")
    }
}

async fn serve_body(State(body): State<Arc<Mutex<Vec<u8>>>>) -> impl axum::response::IntoResponse {
    let body = body.lock().unwrap().clone();
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
}

// ---------------------------------------------------------------------------
// License tokens
// ---------------------------------------------------------------------------

fn ring() -> KeyRing {
    KeyRing::generate(UnixSeconds(now())).expect("the OS random source works in tests")
}

/// A token for `acme`, valid for an hour, signed by `ring`'s active key.
fn token(ring: &KeyRing, jti: u8) -> String {
    let account = AccountId::new("acme").unwrap();
    let at = UnixSeconds(now());
    let claims = LicenseClaims {
        iss: ISSUER_ORIGIN.to_owned(),
        sub: LicenseClaims::subject_of(&account, None),
        aud: AUDIENCE.to_owned(),
        iat: at,
        nbf: at,
        exp: at.plus_seconds(HOUR as u64),
        jti: RandomId::from_bytes([jti; 16]),
        account,
        subject: None,
        revision: 1,
        device_bound: false,
        entitlements: Vec::new(),
    };
    Issuer::origin(ring)
        .issue(&claims, None)
        .expect("the claims issue")
}

fn error_text(error: &SdkError) -> String {
    format!("{error} {error:?}")
}

// ---------------------------------------------------------------------------
// Key set: fetch and refresh
// ---------------------------------------------------------------------------

#[tokio::test]
async fn the_key_set_is_fetched_over_tls_and_a_rotation_is_picked_up() {
    let pki = Pki::new();
    let mut ring = ring();
    let old_token = token(&ring, 1);
    let server = KeyServer::start(&pki.loopback_server(), &ring.public_set()).await;
    let tls = pki.client_options();

    let verifier = OfflineVerifier::fetch(&server.https(), &tls, AUDIENCE, WAIT)
        .await
        .expect("fetch the key set over TLS with the test CA");
    assert_eq!(*verifier.key_set(), ring.public_set());
    verifier
        .verify(&old_token, None)
        .expect("the old key verifies");
    assert!(
        !verifier
            .refresh_from(&server.https(), &tls, WAIT)
            .await
            .expect("refresh with the same set"),
        "the same set is no change"
    );

    // The origin rotates: the old key overlaps, a new one signs.
    ring.rotate(UnixSeconds(now()), HOUR as u64)
        .expect("rotate");
    let new_token = token(&ring, 2);
    assert!(
        verifier.verify(&new_token, None).is_err(),
        "the new key is not known before the refresh"
    );
    server.set(&ring.public_set());
    let before = verifier.verifier();

    // Verifications keep working, with the old key, while the set is swapped.
    let verifier = Arc::new(verifier);
    let stop = Arc::new(AtomicBool::new(false));
    let verified = Arc::new(AtomicUsize::new(0));
    let hammer = {
        let (verifier, stop, verified, token) = (
            verifier.clone(),
            stop.clone(),
            verified.clone(),
            old_token.clone(),
        );
        std::thread::spawn(move || loop {
            verifier
                .verify(&token, None)
                .expect("a token of the overlapping key verifies throughout");
            verified.fetch_add(1, Ordering::Relaxed);
            if stop.load(Ordering::Relaxed) {
                return;
            }
        })
    };
    let changed = verifier
        .refresh_from(&server.https(), &tls, WAIT)
        .await
        .expect("refresh after the rotation");
    stop.store(true, Ordering::Relaxed);
    hammer
        .join()
        .expect("no verification failed during the swap");
    assert!(changed, "the rotated set is a change");
    assert!(verified.load(Ordering::Relaxed) > 0);
    assert_eq!(*verifier.key_set(), ring.public_set());
    verifier
        .verify(&new_token, None)
        .expect("the new key verifies after the refresh");
    verifier
        .verify(&old_token, None)
        .expect("the old key still verifies in its overlap");
    assert!(
        before
            .verify(&new_token, UnixSeconds(now()), None, &())
            .is_err(),
        "a verifier taken before the refresh is a snapshot of the old set"
    );

    // The old key is retired: its tokens stop verifying.
    let old_kid = ring.public_set().keys[0].kid.clone();
    ring.retire(&old_kid).expect("retire the old key");
    server.set(&ring.public_set());
    assert!(verifier
        .refresh_from(&server.https(), &tls, WAIT)
        .await
        .expect("refresh after the retirement"));
    assert!(matches!(
        verifier.verify(&old_token, None),
        Err(LicenseError::RetiredKey(_))
    ));
    verifier
        .verify(&new_token, None)
        .expect("the new key verifies");
}

#[tokio::test]
async fn a_server_of_another_ca_is_refused_and_the_old_keys_keep_working() {
    let ours = Pki::new();
    let theirs = Pki::for_domain("impostor.example");
    let genuine = ring();
    let token = token(&genuine, 1);
    let verifier = OfflineVerifier::new(&genuine.public_set(), AUDIENCE).expect("a verifier");

    // An impostor with a certificate of another CA serves other keys.
    let impostor = ring();
    let server = KeyServer::start(&theirs.loopback_server(), &impostor.public_set()).await;
    let error = verifier
        .refresh_from(&server.https(), &ours.client_options(), WAIT)
        .await
        .expect_err("a server whose certificate is of another CA is refused");
    let text = error_text(&error);
    assert!(matches!(error, SdkError::Unavailable { .. }), "{text}");
    assert!(text.contains("certificate"), "{text}");
    assert_eq!(*verifier.key_set(), genuine.public_set());
    verifier
        .verify(&token, None)
        .expect("the old key set is still in use");
    let error = OfflineVerifier::fetch(&server.https(), &ours.client_options(), AUDIENCE, WAIT)
        .await
        .expect_err("fetch refuses it too");
    assert!(error_text(&error).contains("certificate"), "{error}");

    // The same server, trusted through its own CA, is reachable: what was
    // refused was its certificate.
    assert!(
        OfflineVerifier::fetch(&server.https(), &theirs.client_options(), AUDIENCE, WAIT)
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn a_certificate_for_another_host_name_is_refused() {
    let pki = Pki::new();
    let ring = ring();
    // Valid for localhost only, not for the address 127.0.0.1.
    let server = KeyServer::start(&pki.server(&["localhost"], &[]), &ring.public_set()).await;
    let error = OfflineVerifier::fetch(&server.https(), &pki.client_options(), AUDIENCE, WAIT)
        .await
        .expect_err("the certificate does not name 127.0.0.1");
    let text = error_text(&error);
    assert!(text.contains("certificate"), "{text}");
    assert!(text.contains("127.0.0.1"), "{text}");
    OfflineVerifier::fetch(
        &server.url("https", "localhost"),
        &pki.client_options(),
        AUDIENCE,
        WAIT,
    )
    .await
    .expect("by the name it has, the server is believed");
}

#[tokio::test]
async fn a_key_set_over_plain_http_is_refused() {
    let genuine = ring();
    let verifier = OfflineVerifier::new(&genuine.public_set(), AUDIENCE).expect("a verifier");
    // A real plaintext server: without the refusal, these would succeed.
    let server = KeyServer::start(&Transport::Plaintext, &ring().public_set()).await;
    for host in ["127.0.0.1", "localhost"] {
        let url = server.url("http", host);
        let error = verifier
            .refresh_from(&url, &ClientTlsOptions::default(), WAIT)
            .await
            .expect_err("http:// is refused");
        assert!(matches!(error, SdkError::Config(_)), "{error:?}");
        assert!(error.to_string().contains("https://"), "{error}");
        let error = OfflineVerifier::fetch(&url, &ClientTlsOptions::default(), AUDIENCE, WAIT)
            .await
            .expect_err("http:// is refused");
        assert!(matches!(error, SdkError::Config(_)), "{error:?}");
    }
    assert_eq!(*verifier.key_set(), genuine.public_set());
}

#[tokio::test]
async fn an_empty_malformed_or_oversized_key_set_is_refused() {
    let pki = Pki::new();
    let genuine = ring();
    let token = token(&genuine, 1);
    let server = KeyServer::start(&pki.loopback_server(), &genuine.public_set()).await;
    let tls = pki.client_options();
    let verifier = OfflineVerifier::fetch(&server.https(), &tls, AUDIENCE, WAIT)
        .await
        .expect("fetch");

    let mut bad_key = ring().public_set();
    bad_key.keys[0].public_key = "AAAA".into();
    let oversized = {
        let mut body = serde_json::to_vec(&ring().public_set()).unwrap();
        body.extend(std::iter::repeat_n(b' ', 1024 * 1024));
        body
    };
    let cases: [(&str, Vec<u8>); 5] = [
        ("empty", br#"{"keys": []}"#.to_vec()),
        ("not JSON", b"<html>hello</html>".to_vec()),
        ("not a key set", br#"{"kids": ["a"]}"#.to_vec()),
        ("a malformed key", serde_json::to_vec(&bad_key).unwrap()),
        ("oversized", oversized),
    ];
    for (what, body) in cases {
        server.set_raw(body);
        let error = verifier
            .refresh_from(&server.https(), &tls, WAIT)
            .await
            .expect_err(what);
        assert!(matches!(error, SdkError::Protocol(_)), "{what}: {error:?}");
        assert_eq!(*verifier.key_set(), genuine.public_set(), "{what}");
        verifier
            .verify(&token, None)
            .unwrap_or_else(|e| panic!("{what}: the old set is still in use: {e}"));
    }
}

// ---------------------------------------------------------------------------
// The client builder
// ---------------------------------------------------------------------------

fn config_error(result: Result<Client, SdkError>) -> String {
    match result {
        Err(SdkError::Config(message)) => message,
        other => panic!("expected a configuration error, got {other:?}"),
    }
}

#[tokio::test]
async fn the_builder_refuses_mixed_schemes_and_unusable_tls_files() {
    let pki = Pki::new();
    let message = config_error(
        Client::builder()
            .endpoints(["https://127.0.0.1:7300", "https://127.0.0.1:7301"])
            .endpoints(["http://127.0.0.1:7302"])
            .ca_file(&pki.ca_path)
            .build(),
    );
    assert!(message.contains("\"http://127.0.0.1:7302\""), "{message}");
    assert!(
        message.contains("same scheme") || message.contains("all endpoints"),
        "{message}"
    );

    let missing = pki.dir.path().join("no-such-ca.pem");
    let message = config_error(
        Client::builder()
            .endpoints(["https://127.0.0.1:7300"])
            .ca_file(&missing)
            .build(),
    );
    assert!(
        message.contains(&missing.display().to_string()),
        "{message}"
    );

    let not_pem = pki.dir.path().join("not-pem.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    let message = config_error(
        Client::builder()
            .endpoints(["https://127.0.0.1:7300"])
            .ca_file(&not_pem)
            .build(),
    );
    assert!(
        message.contains(&not_pem.display().to_string()),
        "{message}"
    );

    let missing_key = pki.dir.path().join("no-such.key");
    let message = config_error(
        Client::builder()
            .endpoints(["https://127.0.0.1:7300"])
            .ca_file(&pki.ca_path)
            .client_identity(&pki.ca_path, &missing_key)
            .build(),
    );
    assert!(
        message.contains(&missing_key.display().to_string()),
        "{message}"
    );

    let message = config_error(
        Client::builder()
            .endpoints(["http://127.0.0.1:7300"])
            .ca_file(&pki.ca_path)
            .build(),
    );
    assert!(message.contains("https://"), "{message}");

    Client::builder()
        .endpoints(["https://127.0.0.1:7300", "https://localhost:7301"])
        .ca_file(&pki.ca_path)
        .build()
        .expect("https:// endpoints and a usable CA");
    Client::builder()
        .endpoints(["http://127.0.0.1:7300", "http://127.0.0.1:7301"])
        .build()
        .expect("plaintext endpoints without TLS files");
}

/// A check service that answers every check with FAILED_PRECONDITION, so
/// a client sees that its call arrived.
struct StandIn;

#[tonic::async_trait]
impl CheckService for StandIn {
    async fn check(
        &self,
        _: tonic::Request<pb::CheckRequest>,
    ) -> Result<tonic::Response<pb::CheckResponse>, tonic::Status> {
        Err(tonic::Status::failed_precondition("the stand-in heard you"))
    }

    async fn batch_check(
        &self,
        _: tonic::Request<pb::BatchCheckRequest>,
    ) -> Result<tonic::Response<pb::BatchCheckResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("not in this test"))
    }

    type WatchStream = tokio_stream::Empty<Result<pb::WatchResponse, tonic::Status>>;

    async fn watch(
        &self,
        _: tonic::Request<pb::WatchRequest>,
    ) -> Result<tonic::Response<Self::WatchStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("not in this test"))
    }
}

/// Serves the stand-in over `transport`; its port and the acceptor's stop.
async fn stand_in(transport: &Transport) -> (u16, watch::Sender<bool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("an address").port();
    let (stop, stop_rx) = watch::channel(false);
    let incoming = tollgate_tls::listen(
        listener,
        transport,
        ClientAuth::optional(),
        "check",
        false,
        stop_rx,
    )
    .expect("listen");
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(CheckServiceServer::new(StandIn))
            .serve_with_incoming(incoming)
            .await;
    });
    (port, stop)
}

#[tokio::test]
async fn the_client_calls_over_tls_and_refuses_a_node_of_another_ca() {
    let ours = Pki::new();
    let theirs = Pki::new();
    let (port, _stop) = stand_in(&ours.loopback_server()).await;
    let (impostor, _impostor_stop) = stand_in(&theirs.loopback_server()).await;
    let request = || check_request("acme".parse().unwrap(), None, "export".parse().unwrap());

    let client = Client::builder()
        .endpoints([format!("https://127.0.0.1:{port}")])
        .ca_file(&ours.ca_path)
        .deadline(WAIT)
        .build()
        .expect("a TLS client");
    match client.check(request()).await {
        Err(SdkError::Refused { code, message }) => {
            assert_eq!(code, "FAILED_PRECONDITION");
            assert_eq!(message, "the stand-in heard you");
        }
        other => panic!("the call should reach the stand-in over TLS: {other:?}"),
    }

    let deadline = Duration::from_millis(500);
    let refused = Client::builder()
        .endpoints([format!("https://127.0.0.1:{impostor}")])
        .ca_file(&ours.ca_path)
        .deadline(deadline)
        .build()
        .expect("a TLS client");
    match refused.check(request()).await {
        Err(error @ (SdkError::Unavailable { .. } | SdkError::DeadlineExceeded { .. })) => {
            let text = error_text(&error);
            assert!(text.contains("certificate"), "{text}");
        }
        other => panic!("a node of another CA must not be believed: {other:?}"),
    }
}
