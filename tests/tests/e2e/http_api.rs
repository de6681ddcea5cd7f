//! The HTTP/JSON check API on a region node's check port, beside gRPC:
//! the same answers as gRPC gives on the same node, the same refusals as
//! problem documents (tried from outside, as an attacker would), and the
//! Server-Sent Events twin of `Watch`, resumed with `Last-Event-ID`.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;
use tollgate_origin_node::OriginConfig;
use tollgate_proto::check::v1 as pb;
use tollgate_proto::check::v1::check_service_client::CheckServiceClient;
use tollgate_region_node::RegionNode;
use tollgate_tests::app::test_credential;
use tollgate_tests::{init_tracing, pki, start_region, wait_until, TestOrigin, POLL_INTERVAL};
use tracing::info;

const DEADLINE: Duration = Duration::from_secs(20);

fn url(node: &RegionNode, path: &str) -> String {
    format!("https://{}{path}", node.grpc_addr())
}

/// POSTs `body` as JSON with `token` (none: no credential).
async fn post(
    http: &reqwest::Client,
    node: &RegionNode,
    path: &str,
    token: Option<&str>,
    body: &Value,
) -> (StatusCode, Option<String>, Value) {
    let mut request = http.post(url(node, path)).json(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    answer(request.send().await.expect("the node answers")).await
}

async fn answer(response: reqwest::Response) -> (StatusCode, Option<String>, Value) {
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let text = response.text().await.unwrap();
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, content_type, value)
}

fn problem_code(status: StatusCode, content_type: &Option<String>, body: &Value) -> String {
    assert_eq!(
        content_type.as_deref(),
        Some("application/problem+json"),
        "{status} {body}"
    );
    assert_eq!(body["status"], status.as_u16(), "{body}");
    assert!(
        body["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{body}"
    );
    body["code"].as_str().unwrap_or_default().to_string()
}

async fn grpc_check(node: &RegionNode, request: pb::CheckRequest) -> pb::CheckResponse {
    CheckServiceClient::new(tollgate_tests::channel(node.grpc_addr()).await)
        .check(request)
        .await
        .expect("gRPC answers")
        .into_inner()
}

/// The gRPC answer in the HTTP API's terms, to compare field by field.
fn as_json(answer: pb::CheckResponse) -> Value {
    let d = answer.decision.unwrap();
    let reason = pb::Reason::try_from(d.reason).unwrap().as_str_name();
    json!({
        "allowed": d.allowed,
        "reason": reason.strip_prefix("REASON_").unwrap(),
        "explanation": d.explanation,
        "entitlement": (!d.entitlement_id.is_empty()).then_some(d.entitlement_id),
        "limit": d.limit,
        "remaining": d.remaining,
        "overage": d.overage,
        "valid_until": d.valid_until,
        "trial": d.trial,
        "seats": d.seats.map(|s| json!({"used": s.used, "total": s.total, "holders": s.holders})),
        "upgrade_hint": Value::Null,
        "config": d.config,
        "revision": answer.revision,
        "staleness_seconds": answer.staleness_seconds,
        "answered_by": answer.answered_by,
    })
}

async fn start() -> (tempfile::TempDir, TestOrigin, Vec<RegionNode>, u64) {
    start_with(|_| {}).await
}

async fn start_with(
    configure: impl Fn(&mut tollgate_region_node::RegionConfig),
) -> (tempfile::TempDir, TestOrigin, Vec<RegionNode>, u64) {
    let dir = tempfile::tempdir().unwrap();
    let mut origin_config = OriginConfig::new(1, dir.path().join("origin"));
    origin_config.feed.heartbeat_interval = Duration::from_millis(100);
    let origin = TestOrigin::start(origin_config, dir.path()).await;
    origin.seed(&["export", "render"]).await;
    let head = origin
        .ok(
            Method::POST,
            "/v1/entitlements",
            json!({"id": "e-acme", "account": "acme",
                "grant": {"feature": {"feature": "export"}}, "valid_from": 1_700_000_000}),
        )
        .await["revision"]
        .as_u64()
        .unwrap();
    let region = start_region(1, dir.path(), &origin.node, origin.feed_url(), None, |c| {
        c.watch_heartbeat = Duration::from_millis(200);
        c.revision_wait_max = Duration::from_millis(300);
        configure(c);
    })
    .await;
    wait_until("the region to catch up", DEADLINE, || async {
        let applied = region[0].applied_revision();
        (applied >= head)
            .then_some(())
            .ok_or(format!("applied {applied} of {head}"))
    })
    .await
    .unwrap();
    (dir, origin, region, head)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_json_answers_what_grpc_answers_on_the_same_node() {
    init_tracing();
    let (_dir, _origin, region, head) = start().await;
    let node = &region[0];
    let http = pki().http_client();
    let token = Some(test_credential());

    info!("The same checks over both: every field equal.");
    let cases = [
        ("acme", Some("alice"), "export"),
        ("acme", Some("alice"), "render"),
        ("acme", Some("nobody"), "export"),
        ("acme", None, "export"),
        ("initech", None, "export"),
    ];
    for (account, subject, feature) in cases {
        let (status, content_type, body) = post(
            &http,
            node,
            "/v1/check",
            token,
            &json!({"account": account, "subject": subject, "feature": feature, "explain": true}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(content_type.as_deref(), Some("application/json"));
        let grpc = grpc_check(
            node,
            pb::CheckRequest {
                account_id: account.into(),
                subject_id: subject.map(str::to_string),
                feature_id: feature.into(),
                explain: true,
                ..Default::default()
            },
        )
        .await;
        // The seconds since the origin's last word may tick between the two.
        let (mut body, mut grpc) = (body, as_json(grpc));
        let staleness = |v: &Value| v["staleness_seconds"].as_u64().unwrap();
        assert!(
            staleness(&body).abs_diff(staleness(&grpc)) <= 1,
            "{body} {grpc}"
        );
        body["staleness_seconds"] = Value::Null;
        grpc["staleness_seconds"] = Value::Null;
        assert_eq!(body, grpc, "{account}/{subject:?}/{feature}");
    }
    let (_, _, allowed) = post(
        &http,
        node,
        "/v1/check",
        token,
        &json!({"account": "acme", "subject": "alice", "feature": "export"}),
    )
    .await;
    assert_eq!(
        (
            &allowed["allowed"],
            &allowed["reason"],
            &allowed["entitlement"],
            &allowed["explanation"]
        ),
        (&json!(true), &json!("ALLOW"), &json!("e-acme"), &json!("")),
        "unexplained unless asked: {allowed}"
    );
    assert!(allowed["revision"].as_u64().unwrap() >= head);
    assert_eq!(allowed["answered_by"], "eu-1");

    info!("A batch: decisions and an item's own error, in order.");
    let (status, _, batch) = post(
        &http,
        node,
        "/v1/checks",
        token,
        &json!({"checks": [
            {"account": "acme", "subject": "alice", "feature": "export"},
            {"account": "acme", "subject": "alice", "feature": "render"},
            {"account": "acme", "feature": "export", "consume": 2_000_000_000u64},
        ]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{batch}");
    let results = batch["results"].as_array().unwrap();
    assert_eq!(results.len(), 3, "{batch}");
    assert_eq!(results[0]["decision"]["reason"], "ALLOW", "{batch}");
    assert_eq!(results[1]["decision"]["reason"], "NOT_ENTITLED", "{batch}");
    assert_eq!(results[2]["error"]["code"], "INVALID_ARGUMENT", "{batch}");
    assert_eq!(batch["answered_by"], "eu-1");

    info!("A revision the node has not applied: 504 after the wait.");
    let (status, content_type, body) = post(
        &http,
        node,
        "/v1/check",
        token,
        &json!({"account": "acme", "feature": "export", "at_least_revision": head + 1000}),
    )
    .await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert_eq!(
        problem_code(status, &content_type, &body),
        "REVISION_NOT_APPLIED"
    );
    let (status, _, body) = post(
        &http,
        node,
        "/v1/check",
        token,
        &json!({"account": "acme", "feature": "export", "at_least_revision": head}),
    )
    .await;
    assert_eq!((status, &body["reason"]), (StatusCode::OK, &json!("ALLOW")));

    info!("The OpenAPI document is served, and is the checked-in one.");
    let served = http
        .get(url(node, "/v1/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(served.status(), StatusCode::OK);
    let served: Value = served.json().await.unwrap();
    assert_eq!(
        served,
        serde_json::to_value(tollgate_region_node::openapi_document()).unwrap()
    );
}

/// What is tried, the route, the credential, the body; the status and code.
type Refusal<'a> = (
    &'a str,
    &'a str,
    Option<&'a str>,
    Value,
    StatusCode,
    &'a str,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_is_a_problem_document_with_a_stable_code() {
    init_tracing();
    let (_dir, origin, region, head) = start().await;
    let node = &region[0];
    let http = pki().http_client();
    let token = Some(test_credential());
    let ok = json!({"account": "acme", "subject": "alice", "feature": "export"});

    let scoped = origin
        .ok(
            Method::POST,
            "/v1/credentials",
            json!({"name": "acme checks", "accounts": ["acme"], "products": ["studio"],
                   "verbs": ["check"]}),
        )
        .await;
    let scoped_token = scoped["token"].as_str().unwrap().to_string();
    let revision = scoped["revision"].as_u64().unwrap();
    wait_until("the credential reaches the region", DEADLINE, || async {
        (node.applied_revision() >= revision).then_some(())
    })
    .await
    .unwrap();

    let big = "x".repeat(tollgate_region_node::JSON_BODY_BYTES_MAX + 1);
    let many: Vec<Value> = (0..129).map(|_| ok.clone()).collect();
    let rows: Vec<Refusal> = vec![
        (
            "no credential",
            "/v1/check",
            None,
            ok.clone(),
            StatusCode::UNAUTHORIZED,
            "CREDENTIAL_REQUIRED",
        ),
        (
            "a made-up credential",
            "/v1/check",
            Some("tgc_nobody.secret"),
            ok.clone(),
            StatusCode::UNAUTHORIZED,
            "CREDENTIAL_INVALID",
        ),
        (
            "another account",
            "/v1/check",
            Some(&scoped_token),
            json!({"account": "globex", "feature": "export"}),
            StatusCode::FORBIDDEN,
            "CREDENTIAL_SCOPE",
        ),
        (
            "a verb not granted",
            "/v1/check",
            Some(&scoped_token),
            json!({"account": "acme", "feature": "export", "consume": 1, "idempotency_key": "k"}),
            StatusCode::FORBIDDEN,
            "CREDENTIAL_SCOPE",
        ),
        (
            "malformed JSON",
            "/v1/check",
            token,
            Value::String("{\"account\":".into()),
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
        ),
        (
            "an unknown field",
            "/v1/check",
            token,
            json!({"account": "acme", "feature": "export", "admin": true}),
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
        ),
        (
            "no feature",
            "/v1/check",
            token,
            json!({"account": "acme"}),
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
        ),
        (
            "an empty account",
            "/v1/check",
            token,
            json!({"account": "", "feature": "export"}),
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
        ),
        (
            "ip and location",
            "/v1/check",
            token,
            json!({"account": "acme", "feature": "export", "ip": "192.0.2.1", "location": {"country": "DE"}}),
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
        ),
        (
            "a bad address",
            "/v1/check",
            token,
            json!({"account": "acme", "feature": "export", "ip": "nope"}),
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
        ),
        (
            "a body over the limit",
            "/v1/check",
            token,
            json!({"account": "acme", "feature": "export", "idempotency_key": big}),
            StatusCode::PAYLOAD_TOO_LARGE,
            "MESSAGE_TOO_LARGE",
        ),
        (
            "too many checks in a batch",
            "/v1/checks",
            token,
            json!({"checks": many}),
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
        ),
        (
            "an unknown route",
            "/v1/admin",
            token,
            ok.clone(),
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
        ),
    ];
    for (what, path, token, body, status, code) in rows {
        let mut request = http.post(url(node, path));
        request = match &body {
            Value::String(raw) => request
                .header("content-type", "application/json")
                .body(raw.clone()),
            _ => request.json(&body),
        };
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let (got, content_type, answer) = answer(request.send().await.unwrap()).await;
        assert_eq!(got, status, "{what}: {answer}");
        assert_eq!(
            problem_code(got, &content_type, &answer),
            code,
            "{what}: {answer}"
        );
    }

    info!("Not JSON: 415; the wrong method: 405.");
    let (status, content_type, body) = answer(
        http.post(url(node, "/v1/check"))
            .bearer_auth(test_credential())
            .header("content-type", "text/plain")
            .body("account=acme")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(
        problem_code(status, &content_type, &body),
        "UNSUPPORTED_MEDIA_TYPE"
    );
    let (status, content_type, body) = answer(
        http.get(url(node, "/v1/check"))
            .bearer_auth(test_credential())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        problem_code(status, &content_type, &body),
        "METHOD_NOT_ALLOWED"
    );

    info!("Watching: another account's data, or every account's, is refused.");
    for (what, query, token) in [
        ("no credential", "account=acme", None),
        (
            "another account",
            "account=globex",
            Some(scoped_token.as_str()),
        ),
        ("every account", "", Some(scoped_token.as_str())),
    ] {
        let mut request = http.get(url(node, &format!("/v1/watch?{query}")));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let (status, content_type, body) = answer(request.send().await.unwrap()).await;
        assert!(
            status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN,
            "{what}: {status} {body}"
        );
        problem_code(status, &content_type, &body);
    }
    let (status, content_type, body) = answer(
        http.get(url(node, "/v1/watch?account=acme"))
            .bearer_auth(test_credential())
            .header("last-event-id", "yesterday")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(
        problem_code(status, &content_type, &body),
        "INVALID_ARGUMENT"
    );

    info!("Nothing refused was metered, and the node still answers.");
    assert_eq!(node.status().metering.unreported_units, 0);
    let (status, _, body) = post(&http, node, "/v1/check", token, &ok).await;
    assert_eq!((status, &body["reason"]), (StatusCode::OK, &json!("ALLOW")));
    assert!(body["revision"].as_u64().unwrap() >= head);
}

/// Reads Server-Sent Events from a response.
struct Events {
    response: reqwest::Response,
    buffer: String,
}

#[derive(Debug)]
struct Event {
    name: String,
    id: Option<String>,
    data: Value,
}

impl Events {
    async fn next(&mut self) -> Event {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut name, mut id, mut data) = (String::new(), None, String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim().to_string());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if name.is_empty() && data.is_empty() {
                    continue; // a comment
                }
                return Event {
                    name,
                    id,
                    data: serde_json::from_str(&data).unwrap(),
                };
            }
            let chunk = tokio::time::timeout(DEADLINE, self.response.chunk())
                .await
                .expect("an event in time")
                .expect("the stream is healthy")
                .expect("the stream is open");
            self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    /// The next event that is not a heartbeat.
    async fn next_change(&mut self) -> Event {
        loop {
            let event = self.next().await;
            if event.name != "heartbeat" {
                return event;
            }
        }
    }
}

async fn watch(node: &RegionNode, last_event_id: Option<u64>) -> Events {
    let mut request = pki()
        .http_client()
        .get(url(node, "/v1/watch?account=acme&from_revision=0"))
        .bearer_auth(test_credential());
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id.to_string());
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    Events {
        response,
        buffer: String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_sends_the_state_then_changes_and_resumes_from_last_event_id() {
    init_tracing();
    let (_dir, origin, region, head) = start().await;
    let node = &region[0];

    info!("From revision 0: every change of the account and the catalog so far.");
    let mut events = watch(node, None).await;
    let mut mutations = Vec::new();
    loop {
        let event = events.next_change().await;
        let (kind, at) = match event.name.as_str() {
            "state" => {
                mutations.extend(event.data["mutations"].as_array().unwrap().clone());
                (event.name.clone(), event.data["revision"].as_u64().unwrap())
            }
            "changes" => {
                for change in event.data["changes"].as_array().unwrap() {
                    mutations.extend(change["mutations"].as_array().unwrap().clone());
                }
                (
                    event.name.clone(),
                    event.data["through_revision"].as_u64().unwrap(),
                )
            }
            other => panic!("unexpected {other}: {event:?}"),
        };
        if kind == "changes" || event.data["last"] == true {
            assert_eq!(event.id, Some(at.to_string()), "{event:?}");
        }
        if at >= head {
            break;
        }
    }
    assert!(
        mutations
            .iter()
            .any(|m| m["put_entitlement"]["id"] == "e-acme"),
        "{mutations:?}"
    );
    assert!(
        mutations
            .iter()
            .all(|m| m.get("put_credential").is_none() && m.get("release_seat").is_none()),
        "no credential ever reaches a client: {mutations:?}"
    );

    info!("A change at the origin arrives as a `changes` event.");
    let granted = origin
        .ok(
            Method::POST,
            "/v1/entitlements",
            json!({"id": "e-render", "account": "acme",
                "grant": {"feature": {"feature": "render"}}, "valid_from": 1_700_000_000}),
        )
        .await["revision"]
        .as_u64()
        .unwrap();
    let through = loop {
        let event = events.next_change().await;
        assert_eq!(event.name, "changes", "{event:?}");
        let through = event.data["through_revision"].as_u64().unwrap();
        assert_eq!(event.id, Some(through.to_string()));
        if through >= granted {
            let last = event.data["changes"].as_array().unwrap().last().cloned();
            let last = last.expect("the grant's record");
            assert_eq!(last["revision"], granted);
            assert_eq!(
                last["mutations"][0]["put_entitlement"]["id"], "e-render",
                "{last}"
            );
            break through;
        }
    };
    let heartbeat = loop {
        let event = events.next().await;
        if event.name == "heartbeat" {
            break event;
        }
    };
    assert!(heartbeat.data["applied_revision"].as_u64().unwrap() >= granted);
    drop(events);

    info!("Resumed with Last-Event-ID: no state again, only what came after.");
    let mut resumed = watch(node, Some(through)).await;
    let suspended = origin
        .ok(
            Method::PUT,
            "/v1/accounts/acme",
            json!({"id": "acme", "name": "Acme", "status": "suspended"}),
        )
        .await["revision"]
        .as_u64()
        .unwrap();
    let event = resumed.next_change().await;
    assert_eq!(event.name, "changes", "no state on resume: {event:?}");
    let first = &event.data["changes"][0];
    assert_eq!(first["revision"], through + 1, "{event:?}");
    let record = event.data["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["revision"] == suspended)
        .cloned()
        .expect("the suspension's record");
    assert_eq!(
        record["mutations"][0]["put_account"]["status"], "suspended",
        "{record}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_port_and_a_caller_over_its_rate_get_problems_with_retry_after() {
    init_tracing();
    let (_dir, _origin, region, head) = start_with(|c| {
        c.limits = tollgate_server::limits::Limits {
            concurrency_max: 1,
            rate_per_second: 1,
            // The second phase spends it within its 60 requests.
            rate_burst: 20,
            ..tollgate_server::limits::Limits::default()
        };
        c.revision_wait_max = Duration::from_secs(2);
    })
    .await;
    let node = &region[0];
    let http = pki().http_client();

    info!("One request holds the port's only slot; another is shed with 503 OVERLOADED.");
    // The probes carry no credential: the port sheds before it asks who is
    // calling, and a credential's rate is counted only once verified, so
    // the probes never spend the budget the holder needs. (With the
    // credential, on a loaded machine the probes spent the burst before the
    // holder arrived, the holder was refused 429 at once, and no probe was
    // ever shed.) A probe holds the slot too while it is refused 401, so a
    // holder that arrives during one is itself shed: then another holder
    // tries, and the wait reports what the last one got.
    let hold = || {
        let (http, url) = (http.clone(), url(node, "/v1/check"));
        tokio::spawn(async move {
            http.post(url)
                .bearer_auth(test_credential())
                .json(&json!({"account": "acme", "feature": "export", "at_least_revision": head + 1000}))
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    let (shed, holder) = wait_until("a request to be shed while a holder waits", DEADLINE, || async {
        let holder = hold();
        let mut last_probe = String::from("no probe answered");
        while !holder.is_finished() {
            let response = http
                .post(url(node, "/v1/check"))
                .json(&json!({"account": "acme", "feature": "export"}))
                .send()
                .await
                .unwrap();
            let retry_after = response.headers().get("retry-after").cloned();
            let (status, content_type, body) = answer(response).await;
            if status == StatusCode::SERVICE_UNAVAILABLE {
                return Ok(((status, content_type, body, retry_after), holder));
            }
            last_probe = format!("{status} {body}");
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        let holder = holder.await.unwrap();
        Err(format!("the holder ended {holder} before a probe was shed; the last probe got {last_probe}"))
    })
    .await
    .unwrap();
    let (status, content_type, body, retry_after) = shed;
    assert_eq!(problem_code(status, &content_type, &body), "OVERLOADED");
    assert!(retry_after.is_some(), "{body}");
    assert_eq!(
        holder.await.unwrap(),
        StatusCode::GATEWAY_TIMEOUT,
        "the holder waited for a revision that never came"
    );

    info!("A caller over its rate: 429 RATE_LIMITED with Retry-After.");
    let mut limited = None;
    for _ in 0..60 {
        let response = http
            .post(url(node, "/v1/check"))
            .bearer_auth(test_credential())
            .json(&json!({"account": "acme", "feature": "export"}))
            .send()
            .await
            .unwrap();
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(response);
            break;
        }
    }
    let limited = limited.expect("the caller was limited within 60 requests");
    let retry: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1);
    let (status, content_type, body) = answer(limited).await;
    assert_eq!(problem_code(status, &content_type, &body), "RATE_LIMITED");
}
