//! `ctl cluster`: Raft membership of a region's (or the origin's) cluster,
//! through the cluster admin service every node serves on its Raft port
//! (`tollgate.cluster.v1.ClusterAdmin`).
//!
//! Membership changes must reach the leader: a follower answers NOT_LEADER
//! with the leader's address, and the call is sent there once.

use super::check::{connect, grpc_error};
use super::table::{print_fields, Table};
use super::{exit, print_json, CtlError, CtlResult, Format, Global};
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use tollgate_proto::cluster::v1 as pb;
use tollgate_proto::cluster::v1::cluster_admin_client::ClusterAdminClient;
use tollgate_proto::convert::{self, remove_node_request, ChangeMembership, ClusterMember};

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// One node's view of its cluster: role, term, leader, log indexes,
    /// voters and learners.
    Status(Target),
    /// Add a node as a learner (it receives the log; it votes once promoted).
    AddLearner(AddLearner),
    /// Make a learner a voter.
    Promote(NodeArg),
    /// Remove a node from the voters and the learners.
    Remove(NodeArg),
    /// Build a snapshot of one node's applied state now (before a backup,
    /// or to purge a long log).
    Snapshot(Target),
    /// Copy a STOPPED node's data directory, with SHA-256 digests.
    Backup(super::backup::BackupArgs),
    /// Copy a backup into an empty data directory, after checking every
    /// digest.
    Restore(super::backup::RestoreArgs),
}

#[derive(Debug, Args)]
pub struct Target {
    /// A member's Raft address (`host:port` or `http://host:port`), where
    /// the cluster admin service is served.
    #[arg(long)]
    endpoint: String,
}

#[derive(Debug, Args)]
pub struct AddLearner {
    #[command(flatten)]
    target: Target,
    /// The new node's Raft id (unique in the cluster, never reused, not 0).
    #[arg(long)]
    node_id: u64,
    /// The new node's Raft address, `host:port`, reachable by every member.
    #[arg(long)]
    addr: String,
    /// Answer only once the learner has caught up with the leader's log.
    #[arg(long)]
    wait_caught_up: bool,
}

#[derive(Debug, Args)]
pub struct NodeArg {
    #[command(flatten)]
    target: Target,
    #[arg(long)]
    node_id: u64,
}

pub async fn run(global: &Global, command: ClusterCommand) -> CtlResult<u8> {
    match command {
        ClusterCommand::Status(target) => {
            let endpoint = endpoint_url(&target.endpoint)?;
            let mut client = ClusterAdminClient::new(connect(&endpoint, global).await?);
            let s = client
                .status(pb::StatusRequest {})
                .await
                .map_err(|e| grpc_error(&endpoint, &e))?
                .into_inner();
            print_status(global, &s);
            Ok(exit::OK)
        }
        ClusterCommand::AddLearner(args) => {
            if args.node_id == 0 {
                return Err(CtlError::usage("--node-id: must not be 0"));
            }
            let request = pb::AddLearnerRequest::from(convert::AddLearner {
                member: ClusterMember {
                    node_id: args.node_id,
                    addr: args.addr.clone(),
                },
                wait_caught_up: args.wait_caught_up,
            });
            let reply = on_leader(global, &args.target.endpoint, |mut c| {
                let request = request.clone();
                async move { c.add_learner(request).await }
            })
            .await?;
            print_membership(
                global,
                &reply,
                &format!("node {} added as a learner", args.node_id),
            );
            Ok(exit::OK)
        }
        ClusterCommand::Promote(args) => {
            let endpoint = endpoint_url(&args.target.endpoint)?;
            let mut client = ClusterAdminClient::new(connect(&endpoint, global).await?);
            let status = client
                .status(pb::StatusRequest {})
                .await
                .map_err(|e| grpc_error(&endpoint, &e))?
                .into_inner();
            if status.voters.iter().any(|m| m.node_id == args.node_id) {
                return Err(CtlError::new(
                    super::exit::CONFLICT,
                    "ALREADY_VOTER",
                    format!("node {} is already a voter", args.node_id),
                ));
            }
            if !status.learners.iter().any(|m| m.node_id == args.node_id) {
                return Err(CtlError::new(
                    super::exit::NOT_FOUND,
                    "NOT_A_LEARNER",
                    format!(
                        "node {} is not a learner of this cluster (add it with add-learner first)",
                        args.node_id
                    ),
                ));
            }
            let mut voters: BTreeSet<u64> = status.voters.iter().map(|m| m.node_id).collect();
            voters.insert(args.node_id);
            let request = pb::ChangeMembershipRequest::from(ChangeMembership {
                voters,
                keep_removed_as_learners: false,
            });
            let reply = on_leader(global, &args.target.endpoint, |mut c| {
                let request = request.clone();
                async move { c.change_membership(request).await }
            })
            .await?;
            print_membership(
                global,
                &reply,
                &format!("node {} promoted to voter", args.node_id),
            );
            Ok(exit::OK)
        }
        ClusterCommand::Snapshot(target) => {
            let endpoint = endpoint_url(&target.endpoint)?;
            let mut client = ClusterAdminClient::new(connect(&endpoint, global).await?);
            let reply = client
                .trigger_snapshot(pb::TriggerSnapshotRequest {})
                .await
                .map_err(|e| grpc_error(&endpoint, &e))?
                .into_inner();
            if global.output == super::Format::Json {
                println!(
                    "{}",
                    serde_json::json!({"snapshot_index": reply.snapshot_index})
                );
            } else {
                println!("snapshot at log index {}", reply.snapshot_index);
            }
            Ok(exit::OK)
        }
        ClusterCommand::Backup(args) => super::backup::backup(global, args),
        ClusterCommand::Restore(args) => super::backup::restore(global, args),
        ClusterCommand::Remove(args) => {
            let request = remove_node_request(args.node_id);
            let reply = on_leader(global, &args.target.endpoint, |mut c| async move {
                c.remove_node(request).await
            })
            .await?;
            print_membership(global, &reply, &format!("node {} removed", args.node_id));
            Ok(exit::OK)
        }
    }
}

/// `host:port` → `http://host:port`.
fn endpoint_url(raw: &str) -> CtlResult<String> {
    let url = if raw.contains("://") {
        raw.to_string()
    } else {
        format!("http://{raw}")
    };
    if !url.starts_with("http://") {
        return Err(CtlError::usage(format!(
            "--endpoint {raw:?}: expected host:port or http://host:port"
        )));
    }
    Ok(url)
}

/// Calls `call` at `endpoint`; on NOT_LEADER naming the leader, once more
/// at the leader.
async fn on_leader<F, Fut>(
    global: &Global,
    endpoint: &str,
    call: F,
) -> CtlResult<pb::MembershipResponse>
where
    F: Fn(ClusterAdminClient<tonic::transport::Channel>) -> Fut,
    Fut: std::future::Future<
        Output = Result<tonic::Response<pb::MembershipResponse>, tonic::Status>,
    >,
{
    let mut endpoint = endpoint_url(endpoint)?;
    let mut redirected = false;
    loop {
        let client = ClusterAdminClient::new(connect(&endpoint, global).await?);
        match call(client).await {
            Ok(reply) => return Ok(reply.into_inner()),
            Err(status) => {
                let leader = status
                    .metadata()
                    .get("tollgate-leader-addr")
                    .and_then(|v| v.to_str().ok())
                    .filter(|a| !a.is_empty())
                    .map(str::to_string);
                match leader {
                    Some(addr) if !redirected => {
                        eprintln!("{endpoint} is not the leader; asking the leader at {addr}");
                        endpoint = endpoint_url(&addr)?;
                        redirected = true;
                    }
                    _ => return Err(grpc_error(&endpoint, &status)),
                }
            }
        }
    }
}

fn members(list: &[pb::Member]) -> Value {
    Value::Array(
        list.iter()
            .map(|m| json!({"node_id": m.node_id, "addr": m.addr}))
            .collect(),
    )
}

fn member_cell(list: &[pb::Member]) -> String {
    if list.is_empty() {
        return "-".into();
    }
    list.iter()
        .map(|m| format!("{} ({})", m.node_id, m.addr))
        .collect::<Vec<_>>()
        .join(", ")
}

fn state_name(s: &pb::StatusResponse) -> String {
    s.state()
        .as_str_name()
        .trim_start_matches("SERVER_STATE_")
        .to_lowercase()
}

fn print_status(global: &Global, s: &pb::StatusResponse) {
    match global.output {
        Format::Json => print_json(&json!({
            "node_id": s.node_id,
            "state": state_name(s),
            "term": s.current_term,
            "leader_id": (s.leader_id != 0).then_some(s.leader_id),
            "leader_addr": (!s.leader_addr.is_empty()).then_some(&s.leader_addr),
            "last_log_index": s.last_log_index,
            "last_applied_index": s.last_applied_index,
            "snapshot_index": s.snapshot_index,
            "purged_index": s.purged_index,
            "voters": members(&s.voters),
            "learners": members(&s.learners),
        })),
        Format::Table => {
            print_fields(&[
                ("node", s.node_id.to_string()),
                ("state", state_name(s)),
                ("term", s.current_term.to_string()),
                (
                    "leader",
                    if s.leader_id == 0 {
                        "none known".into()
                    } else {
                        format!("{} ({})", s.leader_id, s.leader_addr)
                    },
                ),
                (
                    "log",
                    format!(
                        "last {}, applied {}, snapshot {}, purged {}",
                        s.last_log_index, s.last_applied_index, s.snapshot_index, s.purged_index
                    ),
                ),
            ]);
            let mut table = Table::new(&["NODE", "ADDR", "MEMBERSHIP"]);
            for (list, kind) in [(&s.voters, "voter"), (&s.learners, "learner")] {
                for m in list {
                    table.row(vec![m.node_id.to_string(), m.addr.clone(), kind.into()]);
                }
            }
            table.print();
        }
    }
}

fn print_membership(global: &Global, m: &pb::MembershipResponse, what: &str) {
    match global.output {
        Format::Json => print_json(&json!({
            "log_index": m.log_index,
            "voters": members(&m.voters),
            "learners": members(&m.learners),
        })),
        Format::Table => {
            println!("{what} (log index {})", m.log_index);
            print_fields(&[
                ("voters", member_cell(&m.voters)),
                ("learners", member_cell(&m.learners)),
            ]);
        }
    }
}
