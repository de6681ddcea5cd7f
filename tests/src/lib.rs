//! Shared helpers for the cross-crate integration tests.

use std::time::Duration;

pub mod app;
pub mod pki;
pub use app::{test_credential, AppChannel};
pub use pki::{channel, https, lazy_channel, pki};

// The wait helpers live in `tollgate-testkit`, shared with every other
// suite; re-exported so the scenarios keep calling `tollgate_tests::wait_until`.
pub use tollgate_testkit::{wait_until, Seen, POLL_INTERVAL};

/// Installs a test-friendly tracing subscriber once (output captured per
/// test by the harness). `RUST_LOG` overrides the default `info` filter.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// The wall clock in Unix seconds, read in one place: a test that needs
/// "now" for data the node will judge against its own clock reads it here,
/// once, instead of writing a fixed date that turns stale.
pub fn wall_clock_now() -> tollgate_model::UnixSeconds {
    tollgate_clock::Clock::system().now()
}

/// The demo data set that `tollgate eval` and `tollgate dev` use.
pub const DEMO_DATA: &str = include_str!("../../crates/tollgate/data/demo.json");

/// A TCP proxy between a region and the origin that a test can cut and
/// heal: a partition without root, network namespaces or fixed sleeps.
pub struct CutProxy {
    addr: std::net::SocketAddr,
    open: std::sync::Arc<tokio::sync::watch::Sender<bool>>,
}

impl CutProxy {
    /// Listens on 127.0.0.1:0 and forwards every connection to `target`.
    pub async fn start(target: std::net::SocketAddr) -> anyhow::Result<CutProxy> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let open = std::sync::Arc::new(tokio::sync::watch::channel(true).0);
        let gate = open.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !*gate.borrow() {
                    continue; // cut: the connection is dropped at once
                }
                let mut cut = gate.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.wait_for(|open| !*open) => {}
                    }
                });
            }
        });
        Ok(CutProxy { addr, open })
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// Drops every connection through the proxy and refuses new ones.
    pub fn cut(&self) {
        self.open.send_replace(false);
    }

    /// Lets connections through again.
    pub fn heal(&self) {
        self.open.send_replace(true);
    }
}

/// A listener on a free loopback port, bound as a node binds its ports.
pub async fn loopback() -> tokio::net::TcpListener {
    tollgate_tls::net::bind(([127, 0, 0, 1], 0).into()).expect("bind 127.0.0.1:0")
}

/// A one-node origin, initialised, with its bootstrap admin key and a REST
/// client that uses it.
pub struct TestOrigin {
    pub node: tollgate_origin_node::OriginNode,
    pub token: String,
    http: reqwest::Client,
}

impl TestOrigin {
    /// Starts `config` as a one-node origin and waits for it to lead. A
    /// config left plaintext (the library default) gets the origin node's
    /// TLS from the tests' CA: the tests run as production does.
    pub async fn start(
        mut config: tollgate_origin_node::OriginConfig,
        dir: &std::path::Path,
    ) -> TestOrigin {
        if !config.raft.transport.is_tls() {
            config.raft.transport = pki().origin_node(config.raft.node_id);
        }
        let node = tollgate_origin_node::OriginNode::start(
            config,
            tollgate_origin_node::OriginListeners {
                raft: loopback().await.into(),
                http: loopback().await.into(),
                feed: loopback().await.into(),
            },
        )
        .await
        .expect("origin starts");
        let id = node.raft().id();
        node.raft()
            .initialize(&[(id, node.raft().addr().to_string())])
            .await
            .expect("origin initialises");
        node.raft()
            .wait_until(Duration::from_secs(20), "origin leader", |m| {
                m.current_leader == Some(id)
            })
            .await
            .expect("origin elects itself");
        node.wait_for_keys(Duration::from_secs(20))
            .await
            .expect("the origin makes its signing keys");
        let token = node
            .bootstrap_admin_key(&dir.join("admin.token"))
            .await
            .expect("bootstrap key")
            .expect("a fresh origin issues a key");
        // The credential every test client presents to regions.
        let command = tollgate_origin::OriginCommand {
            actor: "tests".into(),
            at: tollgate_model::UnixSeconds(0),
            reason: None,
            op: tollgate_origin::Op::PutCredential(app::test_credential_record()),
        };
        if let tollgate_origin::OriginResponse::Rejected(r) = node
            .raft()
            .write(command)
            .await
            .expect("the tests' credential commits")
            .response
        {
            panic!("the tests' credential was refused: {}", r.message)
        }
        TestOrigin {
            node,
            token,
            http: pki().http_client(),
        }
    }

    /// The REST API's base URL.
    pub fn base(&self) -> String {
        https(self.node.http_addr())
    }

    /// The changefeed's URL, as region nodes follow it.
    pub fn feed_url(&self) -> String {
        https(self.node.feed_addr())
    }

    /// An HTTP client trusting the tests' CA.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Calls the REST API as the admin; the status and the JSON body.
    pub async fn rest(
        &self,
        method: reqwest::Method,
        path: &str,
        body: serde_json::Value,
    ) -> (reqwest::StatusCode, serde_json::Value) {
        let resp = self
            .http
            .request(method, format!("{}{path}", self.base()))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .expect("the origin answers HTTP");
        let status = resp.status();
        (status, resp.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// GETs `path` as the admin; the status and the body as text.
    pub async fn get_text(&self, path: &str) -> (reqwest::StatusCode, String) {
        self.try_get_text(path)
            .await
            .expect("the origin answers HTTP")
    }

    /// [`TestOrigin::get_text`], with a transport error as an error.
    pub async fn try_get_text(
        &self,
        path: &str,
    ) -> Result<(reqwest::StatusCode, String), reqwest::Error> {
        let resp = self
            .http
            .get(format!("{}{path}", self.base()))
            .bearer_auth(&self.token)
            .send()
            .await?;
        let status = resp.status();
        Ok((status, resp.text().await.unwrap_or_default()))
    }

    /// Like [`TestOrigin::rest`], asserting success; the JSON body.
    pub async fn ok(
        &self,
        method: reqwest::Method,
        path: &str,
        body: serde_json::Value,
    ) -> serde_json::Value {
        let (status, value) = self.rest(method, path, body).await;
        assert!(status.is_success(), "{path}: {status} {value}");
        value
    }

    /// Product `studio` with boolean features `features`, account `acme`
    /// and its user `alice`.
    pub async fn seed(&self, features: &[&str]) {
        use reqwest::Method;
        use serde_json::json;
        self.ok(
            Method::PUT,
            "/v1/products/studio",
            json!({"id": "studio", "name": "Studio"}),
        )
        .await;
        for f in features {
            self.ok(
                Method::PUT,
                &format!("/v1/features/{f}"),
                json!({"id": f, "product": "studio", "name": f, "kind": "boolean"}),
            )
            .await;
        }
        self.ok(
            Method::PUT,
            "/v1/accounts/acme",
            json!({"id": "acme", "name": "Acme"}),
        )
        .await;
        self.ok(
            Method::PUT,
            "/v1/accounts/acme/subjects/alice",
            json!({"id": "alice", "account": "acme", "kind": "user"}),
        )
        .await;
    }
}

/// Region node `id`'s config as [`start_region`] makes it, before its
/// `configure`: data in `<dir>/region-<id>`, named `eu-<id>`, following
/// `origin_feed`, no region reports.
pub fn region_config(
    id: u64,
    dir: &std::path::Path,
    origin: &tollgate_origin_node::OriginNode,
    origin_feed: String,
) -> tollgate_region_node::RegionConfig {
    let mut config = tollgate_region_node::RegionConfig::new(
        id,
        dir.join(format!("region-{id}")),
        origin_feed,
        origin.public_keys().expect("the origin holds its keys"),
    );
    config.name = format!("eu-{id}");
    // Each region report commits an origin revision: off unless a test
    // asks for them, so tests that count revisions see only their own.
    config.report_interval = None;
    config
}

/// Starts a region of `size` nodes following `origin_feed` (node names
/// `eu-<id>`), lets `configure` adjust each config, and initialises it.
/// A node left plaintext gets its TLS (as node `<id>` of its `region`)
/// from the tests' CA.
pub async fn start_region(
    size: u64,
    dir: &std::path::Path,
    origin: &tollgate_origin_node::OriginNode,
    origin_feed: String,
    geo: Option<std::sync::Arc<tollgate_geo::GeoDatabases>>,
    configure: impl Fn(&mut tollgate_region_node::RegionConfig),
) -> Vec<tollgate_region_node::RegionNode> {
    let mut region = Vec::new();
    for id in 1..=size {
        let mut config = region_config(id, dir, origin, origin_feed.clone());
        configure(&mut config);
        if !config.raft.transport.is_tls() {
            config.raft.transport = pki().region_node(&config.region, id);
        }
        region.push(
            tollgate_region_node::RegionNode::start(
                config,
                tollgate_region_node::RegionListeners {
                    raft: loopback().await.into(),
                    grpc: loopback().await.into(),
                    http: Some(loopback().await.into()),
                },
                geo.clone(),
            )
            .await
            .expect("region node starts"),
        );
    }
    let members: Vec<_> = region
        .iter()
        .map(|n| (n.raft().id(), n.raft().addr().to_string()))
        .collect();
    region[0]
        .raft()
        .initialize(&members)
        .await
        .expect("region initialises");
    region
}

/// An active entitlement of `account` to one feature, valid from a day
/// before `now` with no end and no grace: tests override what they need
/// (`Entitlement { valid_until: .., ..feature_entitlement(..) }`).
pub fn feature_entitlement(
    id: &str,
    account: &str,
    feature: &str,
    now: tollgate_model::UnixSeconds,
    revision: u64,
) -> tollgate_model::Entitlement {
    use tollgate_model::*;
    Entitlement {
        id: EntitlementId::new(id).expect("a valid entitlement id"),
        account: AccountId::new(account).expect("a valid account id"),
        grant: Grant::Feature(FeatureGrant::new(
            FeatureId::new(feature).expect("a valid feature id"),
        )),
        valid_from: UnixSeconds(now.0 - 86_400),
        valid_until: None,
        grace_period_seconds: 0,
        seats: None,
        usage_cap_overrides: Default::default(),
        status: EntitlementStatus::Active,
        geo_rule: GeoRule::default(),
        offline_policy: None,
        required_role: None,
        allowed_groups: Default::default(),
        source_order: None,
        revision,
        trial: false,
    }
}

/// Held for the whole of a test that loads the machine heavily (a
/// consumption storm, a flood of connections) or measures timing against
/// idle timeouts: such tests run one at a time in this process, so one's
/// load never stretches another's timing past its limits on a 2-core
/// machine.
pub async fn heavy_test() -> tokio::sync::MutexGuard<'static, ()> {
    static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    HEAVY.lock().await
}
