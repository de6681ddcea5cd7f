//! A cluster of real nodes on 127.0.0.1, in this process, for the tests.
//!
//! Synchronisation is always "wait for a condition, with a deadline":
//! openraft's metrics wait, or `tollgate_testkit::wait_until`.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use tokio::net::TcpListener;
use tollgate_raft::node::membership_of;
use tollgate_raft::store::{MemDisk, StorageConfig};
use tollgate_raft::{
    Error, KvCommand, KvLogic, KvResponse, Node, NodeConfig, NodeId, WriteOutcome,
};
use tollgate_testkit::wait_until;

pub const DEADLINE: Duration = Duration::from_secs(20);

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,openraft=warn,tollgate_raft=info".into()),
        )
        .with_test_writer()
        .try_init();
}

pub fn put(key: impl Into<String>, value: impl Into<String>) -> KvCommand {
    KvCommand::Put {
        key: key.into(),
        value: value.into(),
    }
}

pub struct Cluster {
    pub base: tempfile::TempDir,
    pub addrs: BTreeMap<NodeId, SocketAddr>,
    pub nodes: BTreeMap<NodeId, Node<KvLogic>>,
    pub tune: fn(&mut NodeConfig),
    /// Each node's disk, for a cluster kept in memory ([`Cluster::in_memory`]).
    pub disks: Option<BTreeMap<NodeId, MemDisk>>,
}

impl Cluster {
    pub fn new(tune: fn(&mut NodeConfig)) -> anyhow::Result<Self> {
        Ok(Cluster {
            base: tempfile::tempdir()?,
            addrs: BTreeMap::new(),
            nodes: BTreeMap::new(),
            tune,
            disks: None,
        })
    }

    /// A cluster whose nodes keep their data on memory disks, which the
    /// test can fail and crash ([`Cluster::disk`], [`Cluster::power_loss`]).
    pub async fn in_memory(ids: &[NodeId], tune: fn(&mut NodeConfig)) -> anyhow::Result<Self> {
        let mut cluster = Cluster::new(tune)?;
        cluster.disks = Some(ids.iter().map(|id| (*id, MemDisk::new())).collect());
        cluster.form(ids).await?;
        Ok(cluster)
    }

    /// Node `id`'s memory disk.
    pub fn disk(&self, id: NodeId) -> anyhow::Result<MemDisk> {
        self.disks
            .as_ref()
            .and_then(|d| d.get(&id))
            .cloned()
            .ok_or_else(|| anyhow!("node {id} has no memory disk"))
    }

    /// Node `id` loses power: it stops without a word, and its disk keeps
    /// what was flushed plus the first `unflushed_kept` writes after that.
    /// [`Cluster::start`] brings it back on what survived.
    pub async fn power_loss(&mut self, id: NodeId, unflushed_kept: usize) -> anyhow::Result<()> {
        let disk = self.disk(id)?;
        let survived = disk.crash(unflushed_kept);
        if let Some(node) = self.nodes.remove(&id) {
            node.crash().await;
        }
        if let Some(disks) = self.disks.as_mut() {
            disks.insert(id, survived);
        }
        Ok(())
    }

    pub fn data_dir(&self, id: NodeId) -> PathBuf {
        self.base.path().join(format!("node-{id}"))
    }

    pub fn config(&self, id: NodeId) -> NodeConfig {
        let mut config = NodeConfig::new(id, self.data_dir(id));
        config.storage.cache_capacity_bytes = 8 * 1024 * 1024;
        if let Some(disk) = self.disks.as_ref().and_then(|d| d.get(&id)) {
            config.storage = StorageConfig::in_memory(disk.clone());
        }
        (self.tune)(&mut config);
        config
    }

    /// Start (or restart, on the same port and data directory) node `id`.
    pub async fn start(&mut self, id: NodeId) -> anyhow::Result<()> {
        let listener = match self.addrs.get(&id) {
            // A crashed node's listener closes as its accept task ends,
            // which may be a moment after the crash.
            Some(addr) => wait_until(&format!("rebinding {addr}"), DEADLINE, || async {
                TcpListener::bind(addr).await.map_err(|e| e.to_string())
            })
            .await
            .with_context(|| format!("rebinding {addr}"))?,
            None => TcpListener::bind("127.0.0.1:0").await?,
        };
        self.addrs.insert(id, listener.local_addr()?);
        let node = Node::start(self.config(id), KvLogic, listener).await?;
        self.nodes.insert(id, node);
        Ok(())
    }

    /// Start nodes `ids` and form a cluster of them.
    pub async fn three() -> anyhow::Result<Self> {
        Self::formed(&[1, 2, 3], |_| {}).await
    }

    pub async fn formed(ids: &[NodeId], tune: fn(&mut NodeConfig)) -> anyhow::Result<Self> {
        let mut cluster = Cluster::new(tune)?;
        cluster.form(ids).await?;
        Ok(cluster)
    }

    async fn form(&mut self, ids: &[NodeId]) -> anyhow::Result<()> {
        for id in ids {
            self.start(*id).await?;
        }
        let members: Vec<(NodeId, String)> = ids
            .iter()
            .map(|id| (*id, self.addrs[id].to_string()))
            .collect();
        self.node(ids[0])?.initialize(&members).await?;
        self.leader().await?;
        Ok(())
    }

    pub fn node(&self, id: NodeId) -> anyhow::Result<&Node<KvLogic>> {
        self.nodes
            .get(&id)
            .ok_or_else(|| anyhow!("node {id} is not running"))
    }

    /// The leader that every running voter agrees on.
    pub async fn leader(&self) -> anyhow::Result<NodeId> {
        wait_until(
            "a leader that the running nodes agree on",
            DEADLINE,
            || async {
                let seen: BTreeMap<NodeId, Option<NodeId>> = self
                    .nodes
                    .iter()
                    .map(|(id, node)| (*id, node.metrics().current_leader))
                    .collect();
                let leaders: BTreeSet<Option<NodeId>> = seen.values().copied().collect();
                match (leaders.len(), leaders.first()) {
                    (1, Some(Some(leader)))
                        if self
                            .nodes
                            .get(leader)
                            .is_some_and(|n| n.metrics().state.is_leader()) =>
                    {
                        Ok(*leader)
                    }
                    _ => Err(format!("the leader each node knows: {seen:?}")),
                }
            },
        )
        .await
    }

    /// Write through any running node, retrying while there is no leader
    /// (or the one known is gone), until the deadline. Any other error
    /// ends the wait at once.
    pub async fn write(&self, command: KvCommand) -> anyhow::Result<WriteOutcome<KvResponse>> {
        wait_until("a node to accept the write", DEADLINE, || async {
            let mut refusals = Vec::new();
            for (id, node) in &self.nodes {
                match node.write(command.clone()).await {
                    Ok(outcome) => return Ok(Ok(outcome)),
                    Err(
                        e @ (Error::NotLeader { .. }
                        | Error::Unavailable(_)
                        | Error::ShuttingDown
                        | Error::Raft(_)
                        | Error::Timeout(_)),
                    ) => refusals.push(format!("node {id}: {e}")),
                    Err(e) => return Ok(Err(anyhow::Error::from(e))),
                }
            }
            Err(match refusals.is_empty() {
                true => "no node running".to_string(),
                false => refusals.join("; "),
            })
        })
        .await?
    }

    /// Wait until every running node has applied `index` and they all hold
    /// the same state; returns that state.
    pub async fn converged(&self, index: u64) -> anyhow::Result<BTreeMap<Vec<u8>, Vec<u8>>> {
        for node in self.nodes.values() {
            node.wait_until(DEADLINE, "applied the index", |m| {
                m.last_applied.is_some_and(|l| l.index >= index)
            })
            .await?;
        }
        wait_until(
            "every running node to hold the same state",
            DEADLINE,
            || async {
                let mut states = Vec::new();
                for (id, node) in &self.nodes {
                    let state = node
                        .view()
                        .dump()
                        .map_err(|e| format!("node {id} cannot dump its state: {e}"))?;
                    states.push(state);
                }
                match states.windows(2).all(|w| w[0] == w[1]) {
                    true => states.pop().ok_or_else(|| "no node running".to_string()),
                    false => Err(format!(
                        "the states differ; keys per node: {:?}",
                        self.nodes
                            .keys()
                            .zip(states.iter().map(|s| s.len()))
                            .collect::<Vec<_>>()
                    )),
                }
            },
        )
        .await
    }

    pub fn membership(&self, id: NodeId) -> anyhow::Result<(BTreeSet<NodeId>, BTreeSet<NodeId>)> {
        Ok(membership_of(&self.node(id)?.metrics()))
    }

    pub async fn stop(&mut self, id: NodeId) -> anyhow::Result<()> {
        let node = self
            .nodes
            .remove(&id)
            .ok_or_else(|| anyhow!("node {id} is not running"))?;
        node.shutdown().await?;
        Ok(())
    }

    pub async fn crash(&mut self, id: NodeId) -> anyhow::Result<()> {
        let node = self
            .nodes
            .remove(&id)
            .ok_or_else(|| anyhow!("node {id} is not running"))?;
        node.crash().await;
        Ok(())
    }

    pub async fn shutdown_all(&mut self) -> anyhow::Result<()> {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            self.stop(id).await?;
        }
        Ok(())
    }
}

pub fn expect_value(
    state: &BTreeMap<Vec<u8>, Vec<u8>>,
    key: &str,
    value: &str,
) -> anyhow::Result<()> {
    match state.get(key.as_bytes()) {
        Some(v) if v == value.as_bytes() => Ok(()),
        other => bail!(
            "key {key}: expected {value}, found {:?}",
            other.map(|v| String::from_utf8_lossy(v).into_owned())
        ),
    }
}

/// Writes `key` = "1" through the cluster-admin service, trying `addrs` in
/// turn from `first` (a node that is down or not leading sends the writer
/// on to the next) until `deadline`; the log index it committed at.
pub async fn write_over_grpc(
    addrs: &[String],
    first: usize,
    key: &str,
    deadline: std::time::Instant,
) -> anyhow::Result<u64> {
    use tollgate_proto::cluster::v1 as pb;
    use tollgate_proto::cluster::v1::cluster_admin_client::ClusterAdminClient;
    let command = serde_json::to_vec(&put(key, "1"))?;
    let mut attempt = 0usize;
    wait_until(
        &format!("a write of {key}"),
        deadline.saturating_duration_since(std::time::Instant::now()),
        || {
            let addr = addrs[(first + attempt) % addrs.len()].clone();
            attempt += 1;
            let request = pb::ClientWriteRequest {
                command: command.clone(),
                forward_hops: 0,
            };
            async move {
                let mut client = ClusterAdminClient::connect(format!("http://{addr}"))
                    .await
                    .map_err(|e| format!("{addr}: {e}"))?;
                match client.client_write(request).await {
                    Ok(reply) => Ok(reply.into_inner().log_index),
                    Err(status) => Err(format!("{addr}: {status}")),
                }
            }
        },
    )
    .await
}

/// Node `id`'s own value of `key` through the cluster-admin `ReadLocal`,
/// as a caller on the network sees it: `None` when it holds no such key.
pub async fn read_local_over_grpc(
    cluster: &Cluster,
    id: NodeId,
    key: &str,
) -> Result<Option<Vec<u8>>, tonic::Status> {
    use tollgate_proto::cluster::v1 as pb;
    use tollgate_proto::cluster::v1::cluster_admin_client::ClusterAdminClient;
    let addr = cluster
        .addrs
        .get(&id)
        .ok_or_else(|| tonic::Status::not_found(format!("node {id} has no address")))?;
    let mut client = ClusterAdminClient::connect(format!("http://{addr}"))
        .await
        .map_err(|e| tonic::Status::unavailable(format!("{addr}: {e}")))?;
    let reply = client
        .read_local(pb::ReadLocalRequest {
            key: key.as_bytes().to_vec(),
        })
        .await?
        .into_inner();
    Ok(reply.found.then_some(reply.value))
}
