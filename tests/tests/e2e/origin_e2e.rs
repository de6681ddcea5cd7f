//! The origin end to end: real origin nodes (Raft on sled, REST over HTTPS,
//! the changefeed over gRPC with mutual TLS) on 127.0.0.1:0, one node and
//! three.

use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;
use tokio::net::TcpListener;
use tollgate_feed::{FollowEvent, Follower, FollowerConfig};
use tollgate_model::{Dataset, Mutation};
use tollgate_origin_node::{OriginConfig, OriginListeners, OriginNode};
use tollgate_tests::{https, init_tracing, wait_until};
use tracing::info;

const DEADLINE: Duration = Duration::from_secs(20);

async fn listeners() -> OriginListeners {
    OriginListeners {
        raft: TcpListener::bind("127.0.0.1:0").await.unwrap().into(),
        http: TcpListener::bind("127.0.0.1:0").await.unwrap().into(),
        feed: TcpListener::bind("127.0.0.1:0").await.unwrap().into(),
    }
}

/// Node `id`'s config; every node of one cluster is given the seal key at
/// `seal` (the first node to start creates it).
fn config(id: u64, dir: &Path, seal: &Path) -> OriginConfig {
    let mut config = OriginConfig::new(id, dir.join(format!("node-{id}")));
    config.seal_key_path = seal.to_path_buf();
    config.feed.heartbeat_interval = Duration::from_millis(100);
    config.compaction_interval = Duration::from_millis(50);
    config.raft.transport = tollgate_tests::pki().origin_node(id);
    config
}

async fn start(config: OriginConfig) -> OriginNode {
    OriginNode::start(config, listeners().await)
        .await
        .expect("origin node starts")
}

async fn wait_for_leader(nodes: &[&OriginNode]) -> u64 {
    wait_until("a leader every node agrees on", DEADLINE, || async {
        let leaders: Vec<_> = nodes
            .iter()
            .map(|n| n.raft().metrics().current_leader)
            .collect();
        match leaders.first() {
            Some(Some(l)) if leaders.iter().all(|x| *x == Some(*l)) => Some(*l),
            _ => None,
        }
    })
    .await
    .unwrap()
}

struct Rest {
    http: Client,
    token: String,
}

impl Rest {
    async fn call(
        &self,
        node: &OriginNode,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", https(node.http_addr())))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn ok(&self, node: &OriginNode, method: Method, path: &str, body: Value) -> Value {
        let (status, value) = self.call(node, method, path, Some(body)).await;
        assert!(status.is_success(), "{path}: {status} {value}");
        value
    }
}

async fn seed_catalog(rest: &Rest, node: &OriginNode) {
    rest.ok(
        node,
        Method::PUT,
        "/v1/products/studio",
        json!({"id": "studio", "name": "Studio"}),
    )
    .await;
    for f in ["export", "render", "sso"] {
        rest.ok(
            node,
            Method::PUT,
            &format!("/v1/features/{f}"),
            json!({"id": f, "product": "studio", "name": f, "kind": "boolean"}),
        )
        .await;
    }
    rest.ok(
        node,
        Method::PUT,
        "/v1/plans/starter",
        json!({"id": "starter", "product": "studio", "name": "Starter",
        "tier": 1, "features": [{"feature": "export"}]}),
    )
    .await;
    rest.ok(
        node,
        Method::PUT,
        "/v1/plans/pro",
        json!({"id": "pro", "product": "studio", "name": "Pro",
        "tier": 2, "features": [{"feature": "export"}, {"feature": "render"}, {"feature": "sso"}]}),
    )
    .await;
    rest.ok(
        node,
        Method::PUT,
        "/v1/addons/sso-pack",
        json!({"id": "sso-pack", "product": "studio",
        "name": "SSO", "features": [{"feature": "sso"}]}),
    )
    .await;
    rest.ok(
        node,
        Method::PUT,
        "/v1/skus/STU-STARTER",
        json!({"id": "STU-STARTER", "name": "Starter", "target": {"plan": "starter"}}),
    )
    .await;
    rest.ok(
        node,
        Method::PUT,
        "/v1/skus/STU-PRO",
        json!({"id": "STU-PRO", "name": "Pro", "target": {"plan": "pro"}}),
    )
    .await;
    rest.ok(
        node,
        Method::PUT,
        "/v1/accounts/acme",
        json!({"id": "acme", "name": "Acme"}),
    )
    .await;
}

fn order(id: &str, sku: &str, kind: &str, quantity: u32) -> Value {
    json!({"id": id, "account": "acme", "sku": sku, "kind": kind, "quantity": quantity,
           "term_start": 1_795_000_000, "term_end": 1_830_000_000})
}

/// Follows the changefeed until `target`, building a replica.
async fn replicate(node: &OriginNode, from: u64, target: u64) -> (Dataset, Vec<u64>, usize) {
    let config = FollowerConfig {
        endpoint: https(node.feed_addr()),
        transport: tollgate_tests::pki().region_node("eu", 9),
        keys: node.wait_for_keys(DEADLINE).await.unwrap(),
        max_batch_records: 0,
        subscriber: "e2e".into(),
        connect_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(5),
        clock: tollgate_clock::Clock::system(),
    };
    let mut follower = Follower::connect(&config, from).await.unwrap();
    let mut replica = Dataset::default();
    let (mut revisions, mut chunks, mut staged) = (Vec::new(), 0, Vec::<Mutation>::new());
    while follower.applied() < target {
        match follower.next().await.unwrap() {
            FollowEvent::Records(records) => {
                for r in records {
                    revisions.push(r.revision);
                    r.mutations.into_iter().for_each(|m| replica.apply(m));
                }
            }
            FollowEvent::SnapshotChunk {
                last, mutations, ..
            } => {
                chunks += 1;
                staged.extend(mutations);
                if last {
                    replica = Dataset::default();
                    staged.drain(..).for_each(|m| replica.apply(m));
                }
            }
            FollowEvent::Heartbeat { .. } => {}
        }
    }
    (replica.canonical(), revisions, chunks)
}

#[tokio::test]
async fn one_origin_node_end_to_end_and_across_a_restart() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("origin-seal.key");
    let origin = start(config(1, dir.path(), &keys)).await;
    origin
        .raft()
        .initialize(&[(1, origin.raft().addr().to_string())])
        .await
        .unwrap();
    wait_for_leader(&[&origin]).await;
    origin.wait_for_keys(DEADLINE).await.unwrap();
    let token = origin
        .bootstrap_admin_key(&dir.path().join("admin.token"))
        .await
        .unwrap()
        .expect("a fresh origin issues a key");
    assert!(
        origin
            .bootstrap_admin_key(&dir.path().join("again.token"))
            .await
            .unwrap()
            .is_none(),
        "never twice"
    );
    let rest = Rest {
        http: tollgate_tests::pki().http_client(),
        token,
    };

    info!("Proving the catalog, orders (replayed, upgraded, cancelled) and access requests work over HTTP.");
    seed_catalog(&rest, &origin).await;
    let first = rest
        .ok(
            &origin,
            Method::POST,
            "/v1/orders",
            order("ord-1", "STU-STARTER", "new", 3),
        )
        .await;
    let again = rest
        .ok(
            &origin,
            Method::POST,
            "/v1/orders",
            order("ord-1", "STU-STARTER", "new", 3),
        )
        .await;
    assert_eq!(
        (again["unchanged"].clone(), again["revision"].clone()),
        (json!(true), first["revision"].clone())
    );
    rest.ok(
        &origin,
        Method::POST,
        "/v1/orders",
        order("ord-2", "STU-PRO", "change", 5),
    )
    .await;
    let (_, ent) = rest
        .call(&origin, Method::GET, "/v1/entitlements/ord-1", None)
        .await;
    assert_eq!(ent["grant"], json!({"plan": "pro"}));
    for (id, verdict) in [("ar-1", "approve"), ("ar-2", "deny")] {
        rest.ok(
            &origin,
            Method::POST,
            "/v1/access-requests",
            json!({"id": id, "account": "acme",
            "target": {"addon": "sso-pack"}, "justification": "pilot"}),
        )
        .await;
        rest.ok(
            &origin,
            Method::POST,
            &format!("/v1/access-requests/{id}/{verdict}"),
            json!(null),
        )
        .await;
    }
    let mut cancel = order("ord-3", "STU-PRO", "cancel", 5);
    cancel["term_end"] = Value::Null;
    let cancelled = rest.ok(&origin, Method::POST, "/v1/orders", cancel).await;
    let (_, trail) = rest
        .call(&origin, Method::GET, "/v1/audit?action=order.place", None)
        .await;
    assert_eq!(
        trail["items"].as_array().unwrap().len(),
        3,
        "three orders applied, the replay not recorded"
    );

    info!("Proving a changefeed subscriber from 0 rebuilds exactly the origin's data, every record verified.");
    let head = origin.head_revision();
    assert_eq!(head, cancelled["revision"].as_u64().unwrap());
    let (replica, revisions, _) = replicate(&origin, 0, head).await;
    assert_eq!(
        revisions,
        (1..=head).collect::<Vec<_>>(),
        "no gap, no duplicate"
    );
    let ent_in_replica = replica
        .entitlements
        .iter()
        .find(|e| e.id.as_str() == "ord-1")
        .unwrap();
    assert_eq!(
        serde_json::to_value(ent_in_replica).unwrap()["status"],
        "revoked"
    );
    assert!(replica.entitlements.iter().any(|e| e.id.as_str() == "ar-1"));
    assert!(!replica.entitlements.iter().any(|e| e.id.as_str() == "ar-2"));

    info!("Proving a subscriber resumes at an arbitrary revision.");
    let (_, revisions, _) = replicate(&origin, head - 4, head).await;
    assert_eq!(revisions, ((head - 3)..=head).collect::<Vec<_>>());

    info!("Proving a restarted origin keeps its data, keys, revisions and API keys.");
    let public_keys = origin.public_keys().unwrap();
    origin.shutdown().await.unwrap();
    let origin = start(config(1, dir.path(), &keys)).await;
    wait_for_leader(&[&origin]).await;
    assert_eq!(origin.head_revision(), head);
    assert_eq!(origin.wait_for_keys(DEADLINE).await.unwrap(), public_keys);
    let (status, ent) = rest
        .call(&origin, Method::GET, "/v1/entitlements/ord-1", None)
        .await;
    assert_eq!(status, StatusCode::OK, "the admin key still works");
    assert_eq!(ent["status"], "revoked");
    let next = rest
        .ok(
            &origin,
            Method::PUT,
            "/v1/accounts/globex",
            json!({"id": "globex", "name": "Globex"}),
        )
        .await;
    assert_eq!(
        next["revision"].as_u64().unwrap(),
        head + 1,
        "revisions continue without a gap"
    );
    origin.shutdown().await.unwrap();
}

#[tokio::test]
async fn below_the_retention_floor_a_subscriber_gets_a_snapshot() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(1, dir.path(), &dir.path().join("keys.json"));
    cfg.retention_revisions = 3;
    let origin = start(cfg).await;
    origin
        .raft()
        .initialize(&[(1, origin.raft().addr().to_string())])
        .await
        .unwrap();
    wait_for_leader(&[&origin]).await;
    origin.wait_for_keys(DEADLINE).await.unwrap();
    let token = origin
        .bootstrap_admin_key(&dir.path().join("admin.token"))
        .await
        .unwrap()
        .unwrap();
    let rest = Rest {
        http: tollgate_tests::pki().http_client(),
        token,
    };
    seed_catalog(&rest, &origin).await;
    rest.ok(
        &origin,
        Method::POST,
        "/v1/orders",
        order("ord-1", "STU-PRO", "new", 2),
    )
    .await;

    info!("Proving retention compacts old change records on its own.");
    wait_until("the changefeed to be compacted", DEADLINE, || async {
        let (_, trail) = rest
            .call(
                &origin,
                Method::GET,
                "/v1/audit?action=changefeed.compact",
                None,
            )
            .await;
        (!trail["items"].as_array()?.is_empty()).then_some(())
    })
    .await
    .unwrap();

    info!("Proving a subscriber from revision 0 gets a snapshot, then the records after it.");
    let head = origin.head_revision();
    let (replica, _, chunks) = replicate(&origin, 0, head).await;
    assert!(chunks >= 1, "a snapshot was sent");
    assert!(replica
        .entitlements
        .iter()
        .any(|e| e.id.as_str() == "ord-1"));
    assert_eq!(replica.catalog.plans.len(), 2);
    origin.shutdown().await.unwrap();
}

#[tokio::test]
async fn three_origin_nodes_accept_writes_anywhere_and_agree() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("origin-seal.key");
    let mut nodes = Vec::new();
    for id in 1..=3 {
        nodes.push(start(config(id, dir.path(), &keys)).await);
    }
    let members: Vec<_> = nodes
        .iter()
        .map(|n| (n.raft().id(), n.raft().addr().to_string()))
        .collect();
    nodes[0].raft().initialize(&members).await.unwrap();
    let leader = wait_for_leader(&nodes.iter().collect::<Vec<_>>()).await;
    let leader_node = nodes.iter().find(|n| n.raft().id() == leader).unwrap();
    let token = leader_node
        .bootstrap_admin_key(&dir.path().join("admin.token"))
        .await
        .unwrap()
        .unwrap();
    let rest = Rest {
        http: tollgate_tests::pki().http_client(),
        token,
    };
    let follower = nodes.iter().find(|n| n.raft().id() != leader).unwrap();

    info!("Proving writes sent to a follower commit through the leader.");
    wait_until("the admin key to reach the follower", DEADLINE, || async {
        let (status, _) = rest.call(follower, Method::GET, "/v1/products", None).await;
        (status == StatusCode::OK).then_some(())
    })
    .await
    .unwrap();
    seed_catalog(&rest, follower).await;
    let done = rest
        .ok(
            follower,
            Method::POST,
            "/v1/orders",
            order("ord-1", "STU-PRO", "new", 4),
        )
        .await;
    let revision = done["revision"].as_u64().unwrap();

    info!("Proving every node applies the write and serves the same data and changefeed.");
    for node in &nodes {
        wait_until("every node to apply the order", DEADLINE, || async {
            (node.head_revision() >= revision).then_some(())
        })
        .await
        .unwrap();
        let (status, ent) = rest
            .call(node, Method::GET, "/v1/entitlements/ord-1", None)
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(ent["seats"]["count"], 4);
    }
    let (a, _, _) = replicate(&nodes[0], 0, revision).await;
    let (b, _, _) = replicate(&nodes[2], 0, revision).await;
    assert_eq!(a, b, "two origin nodes serve the same changefeed");
    for node in nodes {
        node.shutdown().await.unwrap();
    }
}

/// Every node's active key id, as its public key set says.
fn active_kids(nodes: &[&OriginNode]) -> Vec<Option<String>> {
    nodes
        .iter()
        .map(|n| {
            n.public_keys().ok().and_then(|set| {
                set.keys
                    .into_iter()
                    .find(|k| k.status == tollgate_signing::KeyStatus::Active)
                    .map(|k| k.kid.to_string())
            })
        })
        .collect()
}

#[tokio::test]
async fn the_signing_keys_are_the_clusters_rotated_through_any_node_and_audited() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    // The seal key as Kubernetes mounts a Secret: read-only. And the key
    // file origins kept before the ring was replicated, given to every node.
    let seal = dir.path().join("seal.key");
    std::fs::write(
        &seal,
        tollgate_signing::SealKey::generate()
            .unwrap()
            .to_file_text(),
    )
    .unwrap();
    let legacy_path = dir.path().join("origin-keys.json");
    let legacy =
        tollgate_signing::KeyRing::generate(tollgate_model::UnixSeconds(1_795_000_000)).unwrap();
    legacy.save(&legacy_path).unwrap();
    #[cfg(unix)]
    for file in [&seal, &legacy_path] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o400)).unwrap();
    }
    let legacy_bytes = std::fs::read(&legacy_path).unwrap();
    let node_config = |id: u64, seal: &Path| {
        let mut config = config(id, dir.path(), seal);
        config.import_keys_path = legacy_path.clone();
        config
    };
    let mut nodes = Vec::new();
    for id in 1..=3 {
        nodes.push(start(node_config(id, &seal)).await);
    }
    let members: Vec<_> = nodes
        .iter()
        .map(|n| (n.raft().id(), n.raft().addr().to_string()))
        .collect();
    nodes[0].raft().initialize(&members).await.unwrap();
    let leader = wait_for_leader(&nodes.iter().collect::<Vec<_>>()).await;

    info!("The leader imports the key file into the replicated ring; every node loads it.");
    for node in &nodes {
        assert_eq!(
            node.wait_for_keys(DEADLINE).await.unwrap(),
            legacy.public_set(),
            "node {} signs with the imported keys",
            node.raft().id()
        );
    }
    let leader_node = nodes.iter().find(|n| n.raft().id() == leader).unwrap();
    let token = leader_node
        .bootstrap_admin_key(&dir.path().join("admin.token"))
        .await
        .unwrap()
        .unwrap();
    let admin_id = token
        .strip_prefix("tg_")
        .and_then(|t| t.split_once('.'))
        .map(|(id, _)| id.to_string())
        .unwrap();
    let rest = Rest {
        http: tollgate_tests::pki().http_client(),
        token,
    };
    let followers: Vec<&OriginNode> = nodes.iter().filter(|n| n.raft().id() != leader).collect();
    wait_until("the admin key to reach the followers", DEADLINE, || async {
        for follower in &followers {
            let (status, _) = rest.call(follower, Method::GET, "/v1/keys", None).await;
            if status != StatusCode::OK {
                return None;
            }
        }
        Some(())
    })
    .await
    .unwrap();

    info!("A rotation through a follower signs on every node.");
    let rotation_started = std::time::Instant::now();
    let rotated = rest
        .ok(
            followers[0],
            Method::POST,
            "/v1/keys/rotate",
            json!({"overlap_seconds": 600}),
        )
        .await;
    let new_kid = rotated["active_kid"].as_str().unwrap().to_string();
    assert_ne!(new_kid, legacy.active_kid().as_str());
    let all: Vec<&OriginNode> = nodes.iter().collect();
    wait_until("every node to sign with the new key", DEADLINE, || async {
        let kids = active_kids(&all);
        kids.iter()
            .all(|k| k.as_deref() == Some(new_kid.as_str()))
            .then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}: nodes' active keys {:?}", active_kids(&all)));
    info!(
        elapsed_ms = rotation_started.elapsed().as_millis() as u64,
        "Every node signs with the rotated key."
    );
    for node in &nodes {
        let (status, set) = rest
            .call(node, Method::GET, "/.well-known/tollgate-keys.json", None)
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(set["keys"].as_array().unwrap().len(), 2, "{set}");
    }

    info!("A retirement through the other follower, then both are in the audit log.");
    let old_kid = legacy.active_kid().to_string();
    rest.ok(
        followers[1],
        Method::POST,
        &format!("/v1/keys/{old_kid}/retire"),
        Value::Null,
    )
    .await;
    let (status, audit) = rest
        .call(leader_node, Method::GET, "/v1/audit?limit=100", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{audit}");
    let entries = audit["items"].as_array().unwrap();
    let find = |action: &str| {
        entries
            .iter()
            .find(|e| e["action"] == action)
            .unwrap_or_else(|| panic!("no {action} in {audit}"))
    };
    let rotation = find("signing_key.rotate");
    assert_eq!(rotation["actor"], admin_id.as_str());
    assert_eq!(rotation["target"], format!("signing-key/{new_kid}"));
    let retirement = find("signing_key.retire");
    assert_eq!(retirement["actor"], admin_id.as_str());
    assert_eq!(retirement["target"], format!("signing-key/{old_kid}"));
    assert_eq!(
        find("signing_key.init")["actor"],
        format!("origin-node-{leader}")
    );
    assert_eq!(
        std::fs::read(&legacy_path).unwrap(),
        legacy_bytes,
        "no node writes a key file any more"
    );

    info!("A node restarted with another seal key signs nothing and says why.");
    let third = nodes
        .iter()
        .position(|n| n.raft().id() == followers[1].raft().id())
        .unwrap();
    let moved = nodes.remove(third);
    let id = moved.raft().id();
    moved.shutdown().await.unwrap();
    let wrong_seal = dir.path().join("another-seal.key");
    let restarted = start(node_config(id, &wrong_seal)).await;
    let status = wait_until(
        "the restarted node to report its key failure",
        DEADLINE,
        || async {
            let (status, body) = rest.call(&restarted, Method::GET, "/v1/status", None).await;
            (status == StatusCode::OK && body["signing"]["error"].is_string()).then_some(body)
        },
    )
    .await
    .unwrap();
    assert_eq!(status["signing"]["loaded"], false, "{status}");
    assert_eq!(status["ready"], false, "{status}");
    let error = status["signing"]["error"].as_str().unwrap();
    assert!(
        error.contains("same seal key")
            && error.contains(status["signing"]["seal"].as_str().unwrap()),
        "{error}"
    );
    let (code, body) = rest
        .call(
            &restarted,
            Method::GET,
            "/.well-known/tollgate-keys.json",
            None,
        )
        .await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["code"], "KEYS_NOT_LOADED");
    // And it cannot add a key the others could not open.
    let (code, body) = rest
        .call(&restarted, Method::POST, "/v1/keys/rotate", Some(json!({})))
        .await;
    assert_eq!(code, StatusCode::CONFLICT, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("same seal key"),
        "{body}"
    );
    let healthy: Vec<&OriginNode> = nodes.iter().collect();
    assert!(active_kids(&healthy)
        .iter()
        .all(|k| k.as_deref() == Some(new_kid.as_str())));
    restarted.shutdown().await.unwrap();
    for node in nodes {
        node.shutdown().await.unwrap();
    }
}
