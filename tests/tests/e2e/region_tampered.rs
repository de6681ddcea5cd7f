//! A change record altered on its way from the origin is refused: the
//! region stays on the last good revision on every node, keeps answering
//! from it, and catches up exactly once the genuine record gets through.
//!
//! The attacker is a real man in the middle: a changefeed server that
//! relays the origin's stream and flips one byte of one record's payload
//! while `tamper` is on. It holds valid TLS credentials of the deployment
//! (it serves as an origin node and follows the origin as a region node),
//! so only the records' signatures stand between it and the region.

use reqwest::Method;
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_stream::StreamExt;
use tollgate_origin_node::OriginConfig;
use tollgate_proto::origin::v1 as feed;
use tollgate_proto::origin::v1::changefeed_client::ChangefeedClient;
use tollgate_proto::origin::v1::changefeed_server::{Changefeed, ChangefeedServer};
use tollgate_tests::{https, init_tracing, loopback, pki, start_region, wait_until, TestOrigin};
use tollgate_tls::{Allow, ClientAuth, Expect, Transport};
use tonic::{Request, Response, Status};
use tracing::info;

const DEADLINE: Duration = Duration::from_secs(20);

/// Relays the origin's changefeed, corrupting the record at `target`.
struct ManInTheMiddle {
    origin: String,
    /// How it reaches the origin: TLS as a region node.
    transport: Transport,
    target: Arc<AtomicU64>,
    tamper: Arc<AtomicBool>,
}

impl ManInTheMiddle {
    /// A changefeed client to the real origin, which must prove it is an
    /// origin node.
    async fn upstream(&self) -> Result<ChangefeedClient<tonic::transport::Channel>, Status> {
        let endpoint = self
            .transport
            .endpoint(&self.origin)
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let channel = self
            .transport
            .connect(&endpoint, Expect::Peers(vec![Allow::OriginNodes]), "mitm")
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(ChangefeedClient::new(channel))
    }
}

type Relay = std::pin::Pin<
    Box<dyn tokio_stream::Stream<Item = Result<feed::SubscribeResponse, Status>> + Send>,
>;

#[tonic::async_trait]
impl Changefeed for ManInTheMiddle {
    type SubscribeStream = Relay;

    async fn subscribe(
        &self,
        request: Request<feed::SubscribeRequest>,
    ) -> Result<Response<Relay>, Status> {
        let mut client = self.upstream().await?;
        let upstream = client.subscribe(request.into_inner()).await?.into_inner();
        let (target, tamper) = (self.target.clone(), self.tamper.clone());
        let relayed = upstream.map(move |message| {
            let mut message = message?;
            if let Some(feed::subscribe_response::Event::Records(batch)) = &mut message.event {
                for record in &mut batch.records {
                    if tamper.load(Ordering::SeqCst)
                        && record.revision == target.load(Ordering::SeqCst)
                    {
                        let last = record.payload.len() - 2;
                        record.payload[last] ^= 0x01;
                    }
                }
            }
            Ok(message)
        });
        Ok(Response::new(Box::pin(relayed)))
    }

    async fn get_public_keys(
        &self,
        request: Request<feed::GetPublicKeysRequest>,
    ) -> Result<Response<feed::PublicKeySet>, Status> {
        let mut client = self.upstream().await?;
        client.get_public_keys(request.into_inner()).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_record_is_refused_and_the_region_stays_on_the_last_good_revision() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let mut origin_config = OriginConfig::new(1, dir.path().join("origin"));
    origin_config.feed.heartbeat_interval = Duration::from_millis(100);
    let origin = TestOrigin::start(origin_config, dir.path()).await;
    origin.seed(&["export"]).await;

    let target = Arc::new(AtomicU64::new(u64::MAX));
    let tamper = Arc::new(AtomicBool::new(true));
    let listener = loopback().await;
    let mitm_addr = listener.local_addr().unwrap();
    let mitm = ManInTheMiddle {
        origin: origin.feed_url(),
        transport: pki().region_node("eu", 99),
        target: target.clone(),
        tamper: tamper.clone(),
    };
    // It serves TLS as an origin node, admitting region nodes, as the
    // origin's changefeed port does.
    let mitm_tls = pki()
        .origin_node(1)
        .server(
            "feed",
            ClientAuth::required(vec![Allow::RegionNodes]),
            false,
        )
        .unwrap();
    let (_stop_mitm, stop_rx) = tokio::sync::watch::channel(false);
    tollgate_server::grpc::serve(
        tollgate_server::grpc::server().add_service(ChangefeedServer::new(mitm)),
        listener,
        mitm_tls,
        stop_rx,
        "the man in the middle",
    );

    let region = start_region(3, dir.path(), &origin.node, https(mitm_addr), None, |c| {
        c.reconnect_backoff_max = Duration::from_millis(100)
    })
    .await;
    let good = origin.node.head_revision();
    for node in &region {
        wait_until("the region to catch up", DEADLINE, || async {
            (node.applied_revision() >= good).then_some(())
        })
        .await
        .unwrap();
    }

    info!("The next record, a grant, is tampered with on the wire.");
    target.store(good + 1, Ordering::SeqCst);
    let granted = origin
        .ok(
            Method::POST,
            "/v1/entitlements",
            json!({"id": "e1", "account": "acme",
                "grant": {"feature": {"feature": "export"}}, "valid_from": 1_700_000_000}),
        )
        .await["revision"]
        .as_u64()
        .unwrap();
    assert_eq!(granted, good + 1);
    let after = origin
        .ok(
            Method::PUT,
            "/v1/accounts/globex",
            json!({"id": "globex", "name": "Globex"}),
        )
        .await["revision"]
        .as_u64()
        .unwrap();

    // Refused again on every reconnection: wait until it has been refused
    // repeatedly, then the region must still be on the last good revision.
    wait_until(
        "the tampered record to be refused repeatedly",
        DEADLINE,
        || async {
            let refused: u64 = region
                .iter()
                .map(|n| n.sync_stats().refused.load(Ordering::Relaxed))
                .sum();
            (refused >= 3).then_some(())
        },
    )
    .await
    .unwrap();
    for node in &region {
        assert_eq!(
            node.applied_revision(),
            good,
            "node {} stays on the last good revision",
            node.raft().id()
        );
        let data = node.served_dataset().unwrap();
        assert!(
            data.entitlements.is_empty(),
            "nothing of the tampered grant"
        );
    }

    info!("The attacker stops: the genuine records apply, each exactly once.");
    tamper.store(false, Ordering::SeqCst);
    for node in &region {
        wait_until("the region to catch up", DEADLINE, || async {
            (node.applied_revision() >= after).then_some(())
        })
        .await
        .unwrap();
        assert!(node.served_dataset().unwrap() == origin.node.served_dataset().unwrap());
    }
    for node in region {
        node.shutdown().await.unwrap();
    }
    origin.node.shutdown().await.unwrap();
}
