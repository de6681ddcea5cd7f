//! Outgoing webhooks from a real origin node: delivered over HTTPS to a
//! receiver with its own CA (the receiver's certificate verified), signed
//! with the origin's key, retried with backoff, recorded in the delivery
//! log; a dead receiver does not stop the others; a receiver whose
//! certificate the origin cannot verify gets nothing; plain http:// only
//! with an opt-in that the audit log records.

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

/// A receiver's own PKI: a CA of its own (not the cluster's), and a
/// certificate for 127.0.0.1 signed by it.
struct ReceiverPki {
    dir: tempfile::TempDir,
    ca: tollgate_tls::ca::Pem,
}

impl ReceiverPki {
    fn new(domain: &str) -> ReceiverPki {
        let now = tollgate_tests::wall_clock_now().0;
        let dir = tempfile::tempdir().unwrap();
        let ca = tollgate_tls::ca::create_ca(domain, now - 3600, now + 86_400).unwrap();
        tollgate_tls::ca::write(dir.path(), "ca", &ca).unwrap();
        ReceiverPki { dir, ca }
    }

    fn ca_path(&self) -> std::path::PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The receiver's server TLS.
    fn server(&self) -> tollgate_tls::Transport {
        let now = tollgate_tests::wall_clock_now().0;
        let identity = tollgate_tls::Identity::new(
            &tollgate_tls::ca::trust_domain_of(&self.ca.cert).unwrap(),
            tollgate_tls::Subject::App("receiver".into()),
        )
        .unwrap();
        let pem = tollgate_tls::ca::issue(
            &self.ca,
            &tollgate_tls::ca::Request {
                identity,
                dns: vec!["localhost".into()],
                ips: vec![std::net::IpAddr::from([127, 0, 0, 1])],
                not_before: now - 3600,
                not_after: now + 86_400,
            },
        )
        .unwrap();
        let (cert, key) = tollgate_tls::ca::write(self.dir.path(), "receiver", &pem).unwrap();
        let files = tollgate_tls::TlsFiles {
            ca: self.ca_path(),
            cert: Some(cert),
            key: Some(key),
        };
        tollgate_tls::Transport::Tls(tollgate_tls::Tls::load(files, None, now).unwrap())
    }
}

/// A receiver failing its first `failures` requests, over HTTPS with
/// `tls` (or plain HTTP with `None`).
async fn receiver(failures: u32, tls: Option<&tollgate_tls::Transport>) -> (Arc<Receiver>, String) {
    let r = Arc::new(Receiver {
        received: Mutex::new(Vec::new()),
        failures_left: Mutex::new(failures),
    });
    let app = axum::Router::new()
        .route("/hook", post(receive))
        .with_state(r.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let transport = tls.cloned().unwrap_or(tollgate_tls::Transport::Plaintext);
    let url = format!("{}://{addr}/hook", transport.scheme());
    // The receiver's stop sender lives as long as the test process.
    let stop = Box::leak(Box::new(tokio::sync::watch::channel(false).0)).subscribe();
    let incoming = tollgate_tls::listen(
        listener,
        &transport,
        tollgate_tls::ClientAuth::optional(),
        "receiver",
        true,
        stop,
    )
    .unwrap();
    tokio::spawn(async move { axum::serve(incoming, app).await });
    (r, url)
}

#[tokio::test]
async fn webhooks_are_signed_retried_logged_and_independent() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let receivers = ReceiverPki::new("receivers.example");
    let mut config = OriginConfig::new(1, dir.path().join("node"));
    config.raft.transport = tollgate_tests::pki().origin_node(1);
    config.webhooks = WebhookConfig {
        poll_interval: Duration::from_millis(20),
        request_timeout: Duration::from_secs(2),
        attempts_max: 4,
        backoff_initial: Duration::from_millis(10),
        backoff_max: Duration::from_millis(50),
        // The receivers' CA, trusted besides the system's store.
        ca: Some(receivers.ca_path()),
    };
    let origin = OriginNode::start(
        config,
        OriginListeners {
            raft: TcpListener::bind("127.0.0.1:0").await.unwrap().into(),
            http: TcpListener::bind("127.0.0.1:0").await.unwrap().into(),
            feed: TcpListener::bind("127.0.0.1:0").await.unwrap().into(),
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
    origin.wait_for_keys(DEADLINE).await.unwrap();
    let token = origin
        .bootstrap_admin_key(&dir.path().join("admin.token"))
        .await
        .unwrap()
        .unwrap();
    let http = tollgate_tests::pki().http_client();
    let base = tollgate_tests::https(origin.http_addr());
    let call = |method: reqwest::Method, path: &str, body: Value| {
        http.request(method, format!("{base}{path}"))
            .bearer_auth(&token)
            .json(&body)
            .send()
    };

    let (good, good_url) = receiver(2, Some(&receivers.server())).await;
    assert!(good_url.starts_with("https://"));
    let dead_url = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        format!("https://{}/hook", l.local_addr().unwrap())
    };
    // A receiver whose certificate comes from a CA the origin does not
    // trust: it must never be sent an event.
    let strangers = ReceiverPki::new("strangers.example");
    let (untrusted, untrusted_url) = receiver(0, Some(&strangers.server())).await;
    for (id, url) in [
        ("dead", dead_url.as_str()),
        ("good", good_url.as_str()),
        ("untrusted", untrusted_url.as_str()),
    ] {
        let r = call(reqwest::Method::PUT, &format!("/v1/webhooks/{id}"),
            json!({"id": id, "url": url, "events": ["entitlement.changed", "access_request.created"]})).await.unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }

    info!("Proving a plain http:// receiver is refused without its opt-in, and audited with it.");
    let (plain, plain_url) = receiver(0, None).await;
    let refused = call(
        reqwest::Method::PUT,
        "/v1/webhooks/plain",
        json!({"id": "plain", "url": plain_url, "events": ["entitlement.changed"]}),
    )
    .await
    .unwrap();
    assert_eq!(
        refused.status(),
        422,
        "a plain http:// webhook without allow_plaintext"
    );
    let refusal: Value = refused.json().await.unwrap();
    assert!(
        refusal["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("allow_plaintext"),
        "{refusal}"
    );
    let accepted = call(
        reqwest::Method::PUT,
        "/v1/webhooks/plain",
        json!({"id": "plain", "url": plain_url, "events": ["entitlement.changed"],
            "allow_plaintext": true}),
    )
    .await
    .unwrap();
    assert_eq!(accepted.status(), 200, "{}", accepted.text().await.unwrap());
    let audit: Value = call(
        reqwest::Method::GET,
        "/v1/audit?limit=500&action=webhook.put.insecure_plaintext",
        json!(null),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let plaintext_entries: Vec<&Value> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["target"] == "webhook/plain")
        .collect();
    assert_eq!(plaintext_entries.len(), 1, "{audit}");
    assert_eq!(
        plaintext_entries[0]["action"],
        "webhook.put.insecure_plaintext"
    );
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
    let keys = origin.public_keys().unwrap();
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

    info!(
        "Proving the receiver with an unverifiable certificate got nothing, and the log says why."
    );
    let untrusted_log = wait_until(
        "the untrusted receiver's delivery log",
        DEADLINE,
        || async {
            let log: Value = call(
                reqwest::Method::GET,
                "/v1/webhooks/untrusted/deliveries",
                json!(null),
            )
            .await
            .ok()?
            .json()
            .await
            .ok()?;
            (!log["items"].as_array()?.is_empty()).then_some(log)
        },
    )
    .await
    .unwrap();
    assert_eq!(untrusted_log["items"][0]["outcome"], "gave_up");
    let error = untrusted_log["items"][0]["last_error"]
        .as_str()
        .unwrap_or_default();
    assert!(
        error.contains("certificate") || error.contains("UnknownIssuer"),
        "{error}"
    );
    assert!(
        untrusted.received.lock().unwrap().is_empty(),
        "no event may reach a receiver whose certificate did not verify"
    );
    info!("Proving the opted-in plain receiver got the grant.");
    wait_until("the plain receiver's delivery", DEADLINE, || async {
        (!plain.received.lock().unwrap().is_empty()).then_some(())
    })
    .await
    .unwrap();

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

/// Usage crossing 80 % and then 100 % of a soft cap (never leased: checks
/// past it are allowed and billed as overage) reaches a receiver as two
/// `usage.threshold` events, once each, from consumption checked at a
/// region: region log → the region leader's usage report → the origin's
/// audit → the webhook.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_thresholds_reach_a_webhook_at_80_and_100_percent() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let receivers = ReceiverPki::new("receivers.example");
    let mut config = OriginConfig::new(1, dir.path().join("origin"));
    config.webhooks = WebhookConfig {
        poll_interval: Duration::from_millis(20),
        ca: Some(receivers.ca_path()),
        ..WebhookConfig::default()
    };
    let origin = tollgate_tests::TestOrigin::start(config, dir.path()).await;
    origin.seed(&[]).await;
    let (hooks, url) = receiver(0, Some(&receivers.server())).await;
    origin
        .ok(
            reqwest::Method::PUT,
            "/v1/webhooks/thresholds",
            json!({"id": "thresholds", "url": url, "events": ["usage.threshold"]}),
        )
        .await;
    origin
        .ok(
            reqwest::Method::PUT,
            "/v1/features/renders",
            json!({"id": "renders", "product": "studio", "name": "renders",
                "kind": {"metered": {"unit": "render", "period": "month"}}}),
        )
        .await;
    let head = origin
        .ok(
            reqwest::Method::POST,
            "/v1/entitlements",
            json!({"id": "e-renders", "account": "acme",
                "grant": {"feature": {"feature": "renders",
                    "usage_cap": {"limit": 10, "enforcement": "soft"}}},
                "valid_from": 1_700_000_000}),
        )
        .await["revision"]
        .as_u64()
        .unwrap();
    let region =
        tollgate_tests::start_region(1, dir.path(), &origin.node, origin.feed_url(), None, |_| {})
            .await;
    wait_until("the region to catch up", DEADLINE, || async {
        (region[0].applied_revision() >= head).then_some(())
    })
    .await
    .unwrap();
    let client = tollgate_sdk::Client::builder()
        .endpoints([tollgate_tests::https(region[0].grpc_addr())])
        .ca_file(tollgate_tests::pki().ca_path())
        .credential(tollgate_tests::test_credential())
        .build()
        .unwrap();
    let consume = |n: u64| {
        let client = client.clone();
        async move {
            for _ in 0..n {
                let checked = client
                    .consume(
                        "acme".parse().unwrap(),
                        None,
                        "renders".parse().unwrap(),
                        1,
                        None,
                    )
                    .await
                    .unwrap();
                assert!(checked.decision.reason.is_allowed(), "{checked:?}");
            }
        }
    };
    let thresholds = || -> Vec<String> {
        hooks
            .received
            .lock()
            .unwrap()
            .iter()
            .map(|(_, body)| serde_json::from_slice::<Value>(body).unwrap())
            .filter(|e| e["type"] == "usage.threshold")
            .map(|e| e["target"].as_str().unwrap_or("?").to_string())
            .collect()
    };
    let waited_for = |count: usize| async move {
        wait_until("the threshold webhooks", DEADLINE, || async {
            let seen = thresholds();
            if seen.len() >= count {
                Ok(seen)
            } else {
                Err(format!("received {seen:?}"))
            }
        })
        .await
        .unwrap()
    };

    info!("8 of a soft cap of 10: the 80 % event.");
    consume(8).await;
    let seen = waited_for(1).await;
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(
        seen[0].starts_with("usage/acme/renders/") && seen[0].ends_with("/80"),
        "{seen:?}"
    );

    info!("3 more (past the soft cap, still allowed): the 100 % event, and nothing twice.");
    consume(3).await;
    let seen = waited_for(2).await;
    assert!(seen[1].ends_with("/100"), "{seen:?}");
    consume(1).await;
    // The region reports again (its total moved); nothing new is announced.
    wait_until("the origin to bill all 12", DEADLINE, || async {
        let (_, rows) = origin
            .rest(
                reqwest::Method::GET,
                "/v1/accounts/acme/usage?feature=renders",
                json!(null),
            )
            .await;
        match rows["items"][0]["consumed"].as_u64() {
            Some(12) => Ok(()),
            _ => Err(format!("usage {rows}")),
        }
    })
    .await
    .unwrap();
    assert_eq!(thresholds().len(), 2, "{:?}", thresholds());
    for node in region {
        node.shutdown().await.unwrap();
    }
}

/// An operator asks for an event to be delivered again: the receiver gets
/// the same event (same id, same `Tollgate-Delivery`) a second time, the
/// delivery log records it as a redelivery after the first, and the queue
/// empties through the log. A revision the webhook was never sent is
/// refused with 404, as is an unknown webhook.
#[tokio::test]
async fn a_delivered_event_is_redelivered_on_request_with_the_same_id() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let receivers = ReceiverPki::new("receivers.example");
    let mut config = OriginConfig::new(1, dir.path().join("origin"));
    config.webhooks = WebhookConfig {
        poll_interval: Duration::from_millis(20),
        ca: Some(receivers.ca_path()),
        ..WebhookConfig::default()
    };
    let origin = tollgate_tests::TestOrigin::start(config, dir.path()).await;
    origin.seed(&["export"]).await;
    let (hooks, url) = receiver(0, Some(&receivers.server())).await;
    origin
        .ok(
            reqwest::Method::PUT,
            "/v1/webhooks/crm",
            json!({"id": "crm", "url": url, "events": ["entitlement.changed"]}),
        )
        .await;

    info!("Proving the first delivery of a grant arrives once.");
    let revision = origin
        .ok(
            reqwest::Method::POST,
            "/v1/entitlements",
            json!({"id": "e1", "account": "acme",
                "grant": {"feature": {"feature": "export"}}, "valid_from": 1_795_000_000}),
        )
        .await["revision"]
        .as_u64()
        .unwrap();
    wait_until("the first delivery to be logged", DEADLINE, || async {
        let (_, log) = origin
            .rest(
                reqwest::Method::GET,
                "/v1/webhooks/crm/deliveries",
                json!(null),
            )
            .await;
        (log["items"].as_array()?.len() == 1).then_some(())
    })
    .await
    .unwrap();
    let first = hooks.received.lock().unwrap().clone();
    assert_eq!(first.len(), 1);

    info!("Proving a revision the webhook was never sent, and an unknown webhook, are 404.");
    for path in [
        format!("/v1/webhooks/crm/deliveries/{}/redeliver", revision + 1_000),
        format!("/v1/webhooks/crm/deliveries/{}/redeliver", revision - 1),
        format!("/v1/webhooks/nobody/deliveries/{revision}/redeliver"),
    ] {
        let (status, body) = origin.rest(reqwest::Method::POST, &path, json!(null)).await;
        assert_eq!(status, 404, "{path}: {body}");
    }

    info!("Proving a redelivery reaches the receiver with the same event id and delivery header.");
    origin
        .ok(
            reqwest::Method::POST,
            &format!("/v1/webhooks/crm/deliveries/{revision}/redeliver"),
            json!(null),
        )
        .await;
    let (headers, body) = wait_until("the redelivery", DEADLINE, || async {
        let received = hooks.received.lock().unwrap();
        (received.len() >= 2).then(|| received[1].clone())
    })
    .await
    .unwrap();
    let again: Value = serde_json::from_slice(&body).unwrap();
    let once: Value = serde_json::from_slice(&first[0].1).unwrap();
    assert_eq!(again["id"], once["id"], "the same event id");
    assert_eq!(again["id"], format!("crm-{revision}"));
    assert_eq!(again["revision"], revision);
    assert_eq!(again, once, "the same event");
    assert_eq!(
        headers["tollgate-delivery"], first[0].0["tollgate-delivery"],
        "the same idempotency header"
    );

    info!("Proving the log records the redelivery after the first, and the queue is empty.");
    let log = wait_until("the redelivery to be logged", DEADLINE, || async {
        let (_, log) = origin
            .rest(
                reqwest::Method::GET,
                "/v1/webhooks/crm/deliveries",
                json!(null),
            )
            .await;
        (log["items"].as_array()?.len() == 2).then_some(log)
    })
    .await
    .unwrap();
    assert_eq!(log["items"][0]["revision"], revision);
    assert!(log["items"][0].get("redelivery").is_none(), "{log}");
    assert_eq!(log["items"][1]["revision"], revision);
    assert_eq!(log["items"][1]["redelivery"], true, "{log}");
    assert_eq!(log["items"][1]["outcome"], "delivered");
    // Queued again (the queue emptied through the log): accepted, and
    // delivered a third time.
    origin
        .ok(
            reqwest::Method::POST,
            &format!("/v1/webhooks/crm/deliveries/{revision}/redeliver"),
            json!(null),
        )
        .await;
    wait_until("the third delivery", DEADLINE, || async {
        (hooks.received.lock().unwrap().len() >= 3).then_some(())
    })
    .await
    .unwrap();
    assert_eq!(
        hooks.received.lock().unwrap().len(),
        3,
        "nothing else was sent"
    );
    origin.node.shutdown().await.unwrap();
}
