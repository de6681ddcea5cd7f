//! TLS for the tests, as in production: one CA per test process, a
//! certificate per node identity (issued once, reused), clients that verify
//! the server's name against that CA, and certificates made to be refused
//! (expired, another trust domain, a foreign CA) for the refusal tests.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use tollgate_tls::ca::{self, Pem, Request};
use tollgate_tls::{Expect, Identity, Subject, Tls, TlsFiles, Transport};

/// The trust domain of the tests' CA.
pub const TRUST_DOMAIN: &str = "tests.tollgate";

/// The tests' CA and the certificates it issued.
pub struct TestPki {
    dir: tempfile::TempDir,
    ca: Pem,
    issued: Mutex<HashMap<String, TlsFiles>>,
}

fn now() -> i64 {
    crate::wall_clock_now().0
}

/// The process's PKI, made on first use.
pub fn pki() -> &'static TestPki {
    static PKI: OnceLock<TestPki> = OnceLock::new();
    PKI.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a directory for the test PKI");
        let at = now();
        let ca = ca::create_ca(TRUST_DOMAIN, at - 3600, at + 30 * 86_400).expect("a test CA");
        ca::write(dir.path(), "ca", &ca).expect("the test CA is written");
        TestPki {
            dir,
            ca,
            issued: Mutex::new(HashMap::new()),
        }
    })
}

/// A file name for `subject`.
fn file_name(subject: &Subject) -> String {
    match subject {
        Subject::OriginNode(id) => format!("origin-node-{id}"),
        Subject::RegionNode { region, node } => format!("region-{region}-node-{node}"),
        Subject::Operator(name) => format!("operator-{name}"),
        Subject::App(name) => format!("app-{name}"),
    }
}

impl TestPki {
    /// The CA bundle clients trust.
    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The CA (certificate and key), to issue odd certificates with.
    pub fn ca(&self) -> &Pem {
        &self.ca
    }

    /// `subject`'s certificate files (for `127.0.0.1` and `localhost`),
    /// issued on first use.
    pub fn files(&self, subject: &Subject) -> TlsFiles {
        let name = file_name(subject);
        let mut issued = self.issued.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(files) = issued.get(&name) {
            return files.clone();
        }
        let at = now();
        let files = self.issue(
            &name,
            Identity::new(TRUST_DOMAIN, subject.clone()).expect("a valid test identity"),
            at - 3600,
            at + 7 * 86_400,
        );
        issued.insert(name, files.clone());
        files
    }

    /// A certificate for `identity` valid from `not_before` to `not_after`,
    /// written as `<name>.pem`/`<name>.key`, signed by the tests' CA.
    pub fn issue(
        &self,
        name: &str,
        identity: Identity,
        not_before: i64,
        not_after: i64,
    ) -> TlsFiles {
        let pem = ca::issue(
            &self.ca,
            &Request {
                identity,
                dns: vec!["localhost".into()],
                ips: vec![std::net::IpAddr::from([127, 0, 0, 1])],
                not_before,
                not_after,
            },
        )
        .expect("a test certificate");
        let (cert, key) = ca::write(self.dir.path(), name, &pem).expect("written");
        TlsFiles {
            ca: self.ca_path(),
            cert: Some(cert),
            key: Some(key),
        }
    }

    /// A node's transport (mutual TLS as `subject`).
    pub fn node(&self, subject: Subject) -> Transport {
        let files = self.files(&subject);
        Transport::Tls(Tls::load(files, Some(subject), now()).expect("the node's TLS loads"))
    }

    /// Origin node `id`.
    pub fn origin_node(&self, id: u64) -> Transport {
        self.node(Subject::OriginNode(id))
    }

    /// Node `id` of `region`.
    pub fn region_node(&self, region: &str, id: u64) -> Transport {
        self.node(Subject::RegionNode {
            region: region.into(),
            node: id,
        })
    }

    /// A client that trusts the CA and presents no certificate (an
    /// application, a browser-like tool).
    pub fn client(&self) -> Transport {
        Transport::Tls(
            Tls::client(Some(self.ca_path()), None, None, now()).expect("the client TLS loads"),
        )
    }

    /// A client presenting `subject`'s certificate (an operator, an app).
    pub fn client_as(&self, subject: Subject) -> Transport {
        let files = self.files(&subject);
        Transport::Tls(
            Tls::client(Some(self.ca_path()), files.cert, files.key, now())
                .expect("the client TLS loads"),
        )
    }

    /// An HTTP client (reqwest) that trusts the CA.
    pub fn http_client(&self) -> reqwest::Client {
        http_client(&self.client())
    }
}

/// An HTTP/1.1 client over `transport`, checking the server's name.
pub fn http_client(transport: &Transport) -> reqwest::Client {
    let mut builder = reqwest::Client::builder();
    if let Some(config) = transport
        .client_config(&Expect::HostName, tollgate_tls::Alpn::Http1)
        .expect("a client config")
    {
        builder = builder.use_preconfigured_tls((*config).clone());
    }
    builder.build().expect("an HTTP client")
}

/// `https://<addr>`.
pub fn https(addr: impl std::fmt::Display) -> String {
    format!("https://{addr}")
}

/// A gRPC channel to `addr` over TLS, as an application connects
/// (server name checked against the tests' CA, no client certificate),
/// whose calls present the tests' application credential.
pub async fn channel(addr: impl std::fmt::Display) -> crate::app::AppChannel {
    tonic::service::interceptor::InterceptedService::new(
        channel_with(&pki().client(), addr).await,
        crate::app::with_test_credential(),
    )
}

/// A gRPC channel to `addr` over `transport` (checking the server's name).
pub async fn channel_with(
    transport: &Transport,
    addr: impl std::fmt::Display,
) -> tonic::transport::Channel {
    let url = format!("{}://{addr}", transport.scheme());
    let endpoint = transport.endpoint(&url).expect("a valid endpoint");
    transport
        .connect(&endpoint, Expect::HostName, "test")
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {e:?}"))
}

/// A gRPC channel to `addr` that connects on first use, whose calls
/// present the tests' application credential.
pub fn lazy_channel(addr: impl std::fmt::Display) -> crate::app::AppChannel {
    let transport = pki().client();
    let url = format!("https://{addr}");
    let endpoint = transport.endpoint(&url).expect("a valid endpoint");
    tonic::service::interceptor::InterceptedService::new(
        transport.lazy_channel(&endpoint, Expect::HostName, "test"),
        crate::app::with_test_credential(),
    )
}
