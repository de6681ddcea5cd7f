//! Outgoing webhooks from a real origin node: signed with the origin's key,
//! retried with backoff, recorded in the delivery log, and a dead receiver
//! does not stop the others.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tollgate_model::UnixSeconds;
use tollgate_origin_node::{OriginConfig, OriginListeners, OriginNode, WebhookConfig};
use tollgate_signing::{Signed, CONTEXT_WEBHOOK};
use tollgate_tests::{init_tracing, wait_until};
use tracing::info;

const DEADLINE: Duration = Duration::from_secs(20);

#[derive(Default)]
struct Receiver {
    received: Mutex<Vec<(HeaderMap, Bytes)>>,
    failures_left: Mutex<u32>,
}

async fn receive(State(r): State<Arc<Receiver>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    r.received.lock().unwrap().push((headers, body));
    let mut left = r.failures_left.lock().unwrap();
    if *left > 0 {
        *left -= 1;
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    }
}

async fn receiver(failures: u32) -> (Arc<Receiver>, String) {
    let r = Arc::new(Receiver {
        received: Mutex::new(Vec::new()),
        failures_left: Mutex::new(failures),
    });
    let app = axum::Router::new()
        .route("/hook", post(receive))
        .with_state(r.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (r, url)
}

#[tokio::test]
async fn webhooks_are_signed_retried_logged_and_independent() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let mut config = OriginConfig::new(1, dir.path().join("node"));
    config.webhooks = WebhookConfig {
        poll_interval: Duration::from_millis(20),
        request_timeout: Duration::from_secs(2),
        attempts_max: 4,
        backoff_initial: Duration::from_millis(10),
        backoff_max: Duration::from_millis(50),
    };
    let origin = OriginNode::start(
        config,
        OriginListeners {
            raft: TcpListener::bind("127.0.0.1:0").await.unwrap(),
            http: TcpListener::bind("127.0.0.1:0").await.unwrap(),
            feed: TcpListener::bind("127.0.0.1:0").await.unwrap(),
        },
    )
    .await
    .unwrap();
    origin
        .raft()
        .initialize(&[(1, origin.raft().addr().to_string())])
        .await
        .unwrap();
    origin
        .raft()
        .wait_until(DEADLINE, "leader", |m| m.current_leader == Some(1))
        .await
        .unwrap();
    let token = origin
        .bootstrap_admin_key(&dir.path().join("admin.token"))
        .await
        .unwrap()
        .unwrap();
    let http = reqwest::Client::new();
    let base = format!("http://{}", origin.http_addr());
    let call = |method: reqwest::Method, path: &str, body: Value| {
        http.request(method, format!("{base}{path}"))
            .bearer_auth(&token)
            .json(&body)
            .send()
    };

    let (good, good_url) = receiver(2).await;
    let dead_url = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        format!("http://{}/hook", l.local_addr().unwrap())
    };
    for (id, url) in [("dead", dead_url.as_str()), ("good", good_url.as_str())] {
        let r = call(reqwest::Method::PUT, &format!("/v1/webhooks/{id}"),
            json!({"id": id, "url": url, "events": ["entitlement.changed", "access_request.created"]})).await.unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }
    for (path, body) in [
        (
            "/v1/products/studio",
            json!({"id": "studio", "name": "Studio"}),
        ),
        (
            "/v1/features/export",
            json!({"id": "export", "product": "studio", "name": "Export", "kind": "boolean"}),
        ),
        ("/v1/accounts/acme", json!({"id": "acme", "name": "Acme"})),
    ] {
        assert!(call(reqwest::Method::PUT, path, body)
            .await
            .unwrap()
            .status()
            .is_success());
    }

    info!("Proving an entitlement grant reaches the receiver after two failed attempts, signed.");
    let granted: Value = call(
        reqwest::Method::POST,
        "/v1/entitlements",
        json!({"id": "e1", "account": "acme",
        "grant": {"feature": {"feature": "export"}}, "valid_from": 1_795_000_000}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let revision = granted["revision"].as_u64().unwrap();
    let (headers, body) = wait_until("a successful delivery", DEADLINE, || async {
        let received = good.received.lock().unwrap();
        (received.len() >= 3).then(|| received[2].clone())
    })
    .await
    .unwrap();
    let event: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(event["type"], "entitlement.changed");
    assert_eq!(event["revision"], revision);
    assert_eq!(event["entitlements"], json!(["e1"]));
    assert_eq!(headers["tollgate-event"], "entitlement.changed");
    let sig = headers["tollgate-signature"].to_str().unwrap();
    let field = |name: &str| {
        sig.split(',')
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .unwrap()
            .to_string()
    };
    let mut payload = format!("{}.", field("t")).into_bytes();
    payload.extend_from_slice(&body);
    let signed = Signed {
        kid: field("kid"),
        payload: payload.clone(),
        signature: base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(field("sig"))
            .unwrap(),
    };
    let keys = origin.public_keys();
    keys.verify(CONTEXT_WEBHOOK, &signed, UnixSeconds(0))
        .expect("the signature verifies with the public key set");
    let mut tampered = signed.clone();
    tampered.payload[payload.len() - 2] ^= 1;
    assert!(keys
        .verify(CONTEXT_WEBHOOK, &tampered, UnixSeconds(0))
        .is_err());

    info!("Proving the delivery log records the attempts, and a dead receiver is given up on.");
    let log = wait_until(
        "both delivery logs to record the grant",
        DEADLINE,
        || async {
            let good: Value = call(
                reqwest::Method::GET,
                "/v1/webhooks/good/deliveries",
                json!(null),
            )
            .await
            .ok()?
            .json()
            .await
            .ok()?;
            let dead: Value = call(
                reqwest::Method::GET,
                "/v1/webhooks/dead/deliveries",
                json!(null),
            )
            .await
            .ok()?
            .json()
            .await
            .ok()?;
            (!good["items"].as_array()?.is_empty() && !dead["items"].as_array()?.is_empty())
                .then_some((good, dead))
        },
    )
    .await
    .unwrap();
    assert_eq!(log.0["items"][0]["outcome"], "delivered");
    assert_eq!(log.0["items"][0]["attempts"], 3);
    assert_eq!(log.1["items"][0]["outcome"], "gave_up");
    assert_eq!(log.1["items"][0]["attempts"], 4);

    info!("Proving later events still flow to the good receiver, once each, in order.");
    call(
        reqwest::Method::POST,
        "/v1/access-requests",
        json!({"id": "ar-1", "account": "acme",
        "target": {"feature": "export"}, "justification": "more"}),
    )
    .await
    .unwrap();
    let types = wait_until("the access request event", DEADLINE, || async {
        let received = good.received.lock().unwrap();
        let ok: Vec<String> = received[2..]
            .iter()
            .map(|(_, b)| {
                serde_json::from_slice::<Value>(b).unwrap()["type"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        (ok.len() >= 2).then_some(ok)
    })
    .await
    .unwrap();
    assert_eq!(types, ["entitlement.changed", "access_request.created"]);
    origin.shutdown().await.unwrap();
}
