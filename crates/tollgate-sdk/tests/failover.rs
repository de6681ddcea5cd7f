//! The client against stand-in nodes on 127.0.0.1:0 (a tonic server whose
//! answers the test sets): failover order, the idempotency key kept across
//! failovers, which errors are retried, the deadline; and against nodes
//! that hang (a handler that never answers, a port that accepts and never
//! speaks, a link that goes silent): hedging, the deadline shared among
//! attempts, suspect endpoints tried last, the keepalive.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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
    /// Never answers (a node stuck mid-request).
    Hang,
}

#[derive(Clone)]
struct StandIn {
    name: &'static str,
    answer: Arc<Mutex<Answer>>,
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
        let answer = *self.answer.lock().unwrap();
        match answer {
            Answer::Allow => Ok(Response::new(pb::CheckResponse {
                decision: Some(tollgate_proto::convert::decision_to_proto(allow())),
                revision: 1,
                staleness_seconds: Some(0),
                answered_by: self.name.into(),
            })),
            Answer::Fail(code) => Err(Status::new(code, format!("{} says no", self.name))),
            Answer::Hang => std::future::pending().await,
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
            answer: Arc::new(Mutex::new(answer)),
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

    /// Answers `answer` from now on.
    fn set(&self, answer: Answer) {
        *self.answer.lock().unwrap() = answer;
    }
}

/// An endpoint nothing listens on: bound, then closed.
async fn dead() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    format!("http://{}", listener.local_addr().unwrap())
}

/// A port that accepts connections (the kernel does, for a stopped
/// process too) and never reads or writes a byte: a hung node.
async fn silent() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let uri = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    uri
}

fn builder(endpoints: &[&String], deadline: Duration) -> tollgate_sdk::ClientBuilder {
    Client::builder()
        .endpoints(endpoints.iter().map(|e| e.to_string()))
        .deadline(deadline)
        .connect_timeout(Duration::from_millis(200))
}

fn client(endpoints: &[&String], deadline: Duration) -> Client {
    builder(endpoints, deadline).build().unwrap()
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
        // No hedge: on a slow machine one could reach `ok` before the
        // refusal comes back, which says nothing about retries.
        let client = builder(&[&refusing_uri, &ok_uri], Duration::from_secs(5))
            .hedging(false)
            .build()
            .unwrap();
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
        Client::builder()
            .endpoints(["http://127.0.0.1:1"])
            .attempt_timeout_min(Duration::ZERO)
            .build(),
        Client::builder()
            .endpoints(["http://127.0.0.1:1"])
            .hedge_delay_min(Duration::from_secs(2))
            .hedge_delay_max(Duration::from_secs(1))
            .build(),
        Client::builder()
            .endpoints(["http://127.0.0.1:1"])
            .keepalive_timeout(Duration::ZERO)
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

#[tokio::test]
async fn a_hung_endpoint_is_hedged_past_and_the_next_call_starts_elsewhere() {
    for hung in ["a handler that never answers", "a port that never speaks"] {
        let (stuck, stuck_uri) = StandIn::start("stuck", Answer::Hang).await;
        let hung_uri = match hung {
            "a handler that never answers" => stuck_uri,
            _ => silent().await,
        };
        let (ok, ok_uri) = StandIn::start("ok", Answer::Allow).await;
        let deadline = Duration::from_secs(10);
        let client = builder(&[&hung_uri, &ok_uri], deadline)
            .hedge_delay(Duration::from_millis(100))
            .build()
            .unwrap();
        let started = Instant::now();
        let answer = client.check(plain()).await.unwrap();
        let took = started.elapsed();
        assert_eq!(answer.answered_by, "ok", "{hung}");
        // Without the hedge the first attempt would have had half the
        // deadline (5 s) before the second endpoint was asked.
        assert!(took < deadline / 4, "{hung}: answered after {took:?}");
        assert_eq!(ok.calls(), 1, "{hung}");
        if hung == "a handler that never answers" {
            assert_eq!(stuck.calls(), 1, "the hung endpoint was asked first");
        }
        assert_eq!(client.preferred_endpoint(), ok_uri, "{hung}");

        // The next calls start where the answer came from: not one more
        // request reaches the hung endpoint.
        let before = stuck.calls();
        for _ in 0..5 {
            assert_eq!(client.check(plain()).await.unwrap().answered_by, "ok");
        }
        assert_eq!(stuck.calls(), before, "{hung}");
    }
}

#[tokio::test]
async fn without_hedging_a_hung_endpoint_costs_its_share_of_the_deadline_not_all_of_it() {
    let hung = silent().await;
    let (ok, ok_uri) = StandIn::start("ok", Answer::Allow).await;
    let deadline = Duration::from_secs(6);
    let client = builder(&[&hung, &ok_uri], deadline)
        .hedging(false)
        .build()
        .unwrap();
    let started = Instant::now();
    let answer = client.check(plain()).await.unwrap();
    let took = started.elapsed();
    assert_eq!(answer.answered_by, "ok");
    assert_eq!(ok.calls(), 1);
    // Half the deadline on the hung endpoint, then the other at once.
    assert!(
        took >= deadline / 2 - Duration::from_millis(50) && took < deadline,
        "answered after {took:?}"
    );
}

#[tokio::test]
async fn an_endpoint_that_failed_is_tried_after_those_that_did_not() {
    let (a, a_uri) = StandIn::start("a", Answer::Allow).await;
    let (b, b_uri) = StandIn::start("b", Answer::Allow).await;
    let (c, c_uri) = StandIn::start("c", Answer::Allow).await;
    let client = builder(&[&a_uri, &b_uri, &c_uri], Duration::from_secs(5))
        .hedging(false)
        .build()
        .unwrap();
    assert_eq!(client.check(plain()).await.unwrap().answered_by, "a");

    // a fails: b answers, and a is suspect.
    a.set(Answer::Fail(Code::Unavailable));
    assert_eq!(client.check(plain()).await.unwrap().answered_by, "b");
    assert_eq!(a.calls(), 2);

    // a would answer again, but b (where calls start) fails: c is asked
    // before a, which failed lately.
    a.set(Answer::Allow);
    b.set(Answer::Fail(Code::Unavailable));
    assert_eq!(client.check(plain()).await.unwrap().answered_by, "c");
    assert_eq!((a.calls(), b.calls(), c.calls()), (2, 2, 1));

    // Everyone but the suspects failing: a suspect is still tried.
    c.set(Answer::Fail(Code::Unavailable));
    assert_eq!(client.check(plain()).await.unwrap().answered_by, "a");
}

/// A TCP relay to `target` that can go silent: while `frozen`, nothing
/// passes either way (what a stopped node or a dead NAT entry looks like
/// from the client), but the client's side is still read, to notice when
/// the client closes the connection. Counts connections closed by the
/// client.
async fn freezable_relay(target: String) -> (String, Arc<AtomicBool>, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let uri = format!("http://{}", listener.local_addr().unwrap());
    let target = target.trim_start_matches("http://").to_string();
    let frozen = Arc::new(AtomicBool::new(false));
    let closed = Arc::new(AtomicUsize::new(0));
    let (f, c) = (frozen.clone(), closed.clone());
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(&target).await else {
                continue;
            };
            let (frozen, closed) = (f.clone(), c.clone());
            tokio::spawn(async move {
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                let up = async {
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        match client_read.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) if !frozen.load(Ordering::SeqCst) => {
                                if server_write.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                            }
                            Ok(_) => {}
                        }
                    }
                    closed.fetch_add(1, Ordering::SeqCst);
                };
                let down = async {
                    let mut buf = vec![0u8; 16 * 1024];
                    while let Ok(n) = server_read.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        if !frozen.load(Ordering::SeqCst)
                            && client_write.write_all(&buf[..n]).await.is_err()
                        {
                            break;
                        }
                    }
                    std::future::pending::<()>().await;
                };
                tokio::select! {
                    () = up => {}
                    () = down => {}
                }
            });
        }
    });
    (uri, frozen, closed)
}

#[tokio::test]
async fn the_keepalive_drops_a_connection_that_went_silent() {
    let (_ok, ok_uri) = StandIn::start("ok", Answer::Allow).await;
    let (relay, frozen, closed) = freezable_relay(ok_uri).await;
    let client = builder(&[&relay], Duration::from_secs(5))
        .keepalive_interval(Duration::from_millis(200))
        .keepalive_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    assert_eq!(client.check(plain()).await.unwrap().answered_by, "ok");
    // Idle and answering pings: the connection stays.
    let pinged_for = Instant::now();
    tollgate_testkit::wait_until(
        "an idle connection to live through a few pings",
        Duration::from_secs(5),
        || async {
            match closed.load(Ordering::SeqCst) {
                0 if pinged_for.elapsed() > Duration::from_secs(1) => Ok(()),
                0 => Err(format!("open after {:?}", pinged_for.elapsed())),
                n => Err(format!("{n} connection(s) closed while the node answered")),
            }
        },
    )
    .await
    .unwrap();

    frozen.store(true, Ordering::SeqCst);
    tollgate_testkit::wait_until(
        "the client to drop the silent connection",
        Duration::from_secs(5),
        || async {
            match closed.load(Ordering::SeqCst) {
                0 => Err("still open".to_string()),
                _ => Ok(()),
            }
        },
    )
    .await
    .unwrap();
}
