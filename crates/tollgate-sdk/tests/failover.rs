//! The client against stand-in nodes on 127.0.0.1:0 (a tonic server whose
//! answers the test sets): failover order, the idempotency key kept across
//! failovers, which errors are retried, the deadline.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tollgate_engine::{Decision, Reason};
use tollgate_proto::check::v1 as pb;
use tollgate_proto::check::v1::check_service_server::{CheckService, CheckServiceServer};
use tollgate_sdk::{check_request, Client, SdkError};
use tonic::{Code, Request, Response, Status};

/// How a stand-in node answers `Check`.
#[derive(Clone, Copy)]
enum Answer {
    Allow,
    Fail(Code),
}

#[derive(Clone)]
struct StandIn {
    name: &'static str,
    answer: Answer,
    received: Arc<Mutex<Vec<pb::CheckRequest>>>,
}

fn allow() -> Decision {
    Decision {
        reason: Reason::Allow,
        entitlement: None,
        limit: None,
        remaining: None,
        overage: false,
        valid_until: None,
        upgrade_hint: None,
        seats: None,
        config: Default::default(),
        trial: false,
        staleness_seconds: Some(0),
        revision: 1,
        metering: None,
    }
}

#[tonic::async_trait]
impl CheckService for StandIn {
    async fn check(
        &self,
        request: Request<pb::CheckRequest>,
    ) -> Result<Response<pb::CheckResponse>, Status> {
        self.received.lock().unwrap().push(request.into_inner());
        match self.answer {
            Answer::Allow => Ok(Response::new(pb::CheckResponse {
                decision: Some(tollgate_proto::convert::decision_to_proto(allow())),
                revision: 1,
                staleness_seconds: Some(0),
                answered_by: self.name.into(),
            })),
            Answer::Fail(code) => Err(Status::new(code, format!("{} says no", self.name))),
        }
    }

    async fn batch_check(
        &self,
        _: Request<pb::BatchCheckRequest>,
    ) -> Result<Response<pb::BatchCheckResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    type WatchStream = tokio_stream::Empty<Result<pb::WatchResponse, Status>>;

    async fn watch(
        &self,
        _: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("not in this test"))
    }
}

impl StandIn {
    /// Serves on a fresh loopback port; the endpoint URI.
    async fn start(name: &'static str, answer: Answer) -> (StandIn, String) {
        let node = StandIn {
            name,
            answer,
            received: Arc::default(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let uri = format!("http://{}", listener.local_addr().unwrap());
        let service = CheckServiceServer::new(node.clone());
        tokio::spawn(async move {
            let incoming = tonic::transport::server::TcpIncoming::from(listener);
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(incoming)
                .await;
        });
        (node, uri)
    }

    fn calls(&self) -> usize {
        self.received.lock().unwrap().len()
    }
}

/// An endpoint nothing listens on: bound, then closed.
async fn dead() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    format!("http://{}", listener.local_addr().unwrap())
}

fn client(endpoints: &[&String], deadline: Duration) -> Client {
    Client::builder()
        .endpoints(endpoints.iter().map(|e| e.to_string()))
        .deadline(deadline)
        .connect_timeout(Duration::from_millis(200))
        .build()
        .unwrap()
}

fn plain() -> tollgate_sdk::CheckRequest {
    check_request("acme".parse().unwrap(), None, "export".parse().unwrap())
}

#[tokio::test]
async fn failover_goes_round_robin_and_the_next_call_starts_where_one_answered() {
    let dead = dead().await;
    let (busy, busy_uri) = StandIn::start("busy", Answer::Fail(Code::ResourceExhausted)).await;
    let (ok, ok_uri) = StandIn::start("ok", Answer::Allow).await;
    let client = client(&[&busy_uri, &dead, &ok_uri], Duration::from_secs(5));

    let first = client.check(plain()).await.unwrap();
    assert_eq!(first.answered_by, "ok");
    assert_eq!(first.endpoint, ok_uri);
    assert_eq!(busy.calls(), 1, "the first endpoint was tried first");
    assert_eq!(client.preferred_endpoint(), ok_uri);

    let second = client.check(plain()).await.unwrap();
    assert_eq!(second.answered_by, "ok");
    assert_eq!(
        busy.calls(),
        1,
        "the next call started with the endpoint that answered"
    );
    assert_eq!(ok.calls(), 2);
}

#[tokio::test]
async fn a_consumption_keeps_its_generated_key_across_failovers() {
    let (down, down_uri) = StandIn::start("down", Answer::Fail(Code::Unavailable)).await;
    let (ok, ok_uri) = StandIn::start("ok", Answer::Allow).await;
    let client = client(&[&down_uri, &ok_uri], Duration::from_secs(5));

    let answer = client
        .consume(
            "acme".parse().unwrap(),
            None,
            "renders".parse().unwrap(),
            3,
            None,
        )
        .await
        .unwrap();
    let key = answer.idempotency_key.clone().expect("a generated key");
    assert!(
        tollgate_proto::convert::valid_idempotency_key(&key),
        "{key}"
    );
    let sent: Vec<_> = [&down, &ok]
        .iter()
        .flat_map(|n| n.received.lock().unwrap().clone())
        .collect();
    assert_eq!(sent.len(), 2);
    for request in sent {
        assert_eq!(request.idempotency_key.as_deref(), Some(key.as_str()));
        assert_eq!(request.consume, 3);
    }

    let again = client
        .consume(
            "acme".parse().unwrap(),
            None,
            "renders".parse().unwrap(),
            3,
            None,
        )
        .await
        .unwrap();
    assert_ne!(
        again.idempotency_key, answer.idempotency_key,
        "one key per call"
    );
}

#[tokio::test]
async fn a_refusal_every_node_would_repeat_is_not_retried() {
    for (code, expected) in [
        (Code::InvalidArgument, "INVALID_REQUEST"),
        (Code::NotFound, "NOT_FOUND"),
        (Code::FailedPrecondition, "REFUSED"),
    ] {
        let (refusing, refusing_uri) = StandIn::start("refusing", Answer::Fail(code)).await;
        let (ok, ok_uri) = StandIn::start("ok", Answer::Allow).await;
        let client = client(&[&refusing_uri, &ok_uri], Duration::from_secs(5));
        let error = client.check(plain()).await.unwrap_err();
        assert_eq!(error.code(), expected, "{code:?}: {error}");
        assert!(error.to_string().contains("refusing says no"), "{error}");
        assert_eq!((refusing.calls(), ok.calls()), (1, 0), "{code:?}");
    }
}

#[tokio::test]
async fn with_every_endpoint_down_the_call_is_unavailable_by_its_deadline() {
    let (a, b) = (dead().await, dead().await);
    let deadline = Duration::from_millis(300);
    let client = client(&[&a, &b], Duration::from_secs(30)).with_deadline(deadline);
    let started = Instant::now();
    match client.check(plain()).await {
        Err(SdkError::Unavailable { tried, last }) => {
            assert_eq!(tried, vec![a.clone(), b.clone()]);
            assert!(last.starts_with(&a) || last.starts_with(&b), "{last}");
        }
        other => panic!("{other:?}"),
    }
    // Generous: a loaded CI machine may be slow to schedule the last round.
    assert!(started.elapsed() < deadline + Duration::from_secs(2));
}

#[tokio::test]
async fn the_builder_refuses_what_cannot_work() {
    let none: [&str; 0] = [];
    let cases = [
        Client::builder().endpoints(none).build(),
        Client::builder().endpoints(["not a uri"]).build(),
        Client::builder()
            .endpoints(["http://127.0.0.1:1"])
            .deadline(Duration::ZERO)
            .build(),
    ];
    for case in cases {
        assert_eq!(case.unwrap_err().code(), "CONFIG");
    }
    let outside = std::thread::spawn(|| {
        Client::builder()
            .endpoints(["http://127.0.0.1:1"])
            .build()
            .unwrap_err()
            .code()
    })
    .join()
    .unwrap();
    assert_eq!(outside, "CONFIG");
}
