//! `ctl cluster`: Raft membership of a region's (or the origin's) cluster,
//! through the cluster admin service every node serves on its Raft port
//! (`tollgate.cluster.v1.ClusterAdmin`).
//!
//! Membership changes must reach the leader: a follower answers NOT_LEADER
//! with the leader's address, and the call is sent there once.
//!
//! The Raft port admits only the cluster's own nodes and operators: over
//! TLS, `ctl cluster` must present an operator certificate (`--cert`,
//! `--key`, from `tollgate ctl certs issue --operator NAME`), and trust the
//! nodes' CA (`--ca`).

use super::check::grpc_error;
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
    /// A member's Raft address, where the cluster admin service is served:
    /// `host:port` (TLS, as `https://host:port`), or `http://host:port` for
    /// a node running with tls.insecure_plaintext. Needs an operator
    /// certificate (--cert, --key) over TLS.
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
            let endpoint = endpoint_url(&target.endpoint, None)?;
            let mut client = ClusterAdminClient::new(admin_channel(&endpoint, global).await?);
            let s = client
                .status(pb::StatusRequest {})
                .await
                .map_err(|e| admin_error(global, &endpoint, &e))?
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
            let endpoint = endpoint_url(&args.target.endpoint, None)?;
            let mut client = ClusterAdminClient::new(admin_channel(&endpoint, global).await?);
            let status = client
                .status(pb::StatusRequest {})
                .await
                .map_err(|e| admin_error(global, &endpoint, &e))?
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
            let endpoint = endpoint_url(&target.endpoint, None)?;
            let mut client = ClusterAdminClient::new(admin_channel(&endpoint, global).await?);
            let reply = client
                .trigger_snapshot(pb::TriggerSnapshotRequest {})
                .await
                .map_err(|e| admin_error(global, &endpoint, &e))?
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

/// `host:port` → `https://host:port` (or, for a leader's address learnt
/// from `like`, with `like`'s scheme); a URL is kept as given.
fn endpoint_url(raw: &str, like: Option<&str>) -> CtlResult<String> {
    let scheme = match like {
        Some(url) if url.starts_with("http://") => "http",
        _ => "https",
    };
    let url = if raw.contains("://") {
        raw.to_string()
    } else {
        format!("{scheme}://{raw}")
    };
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .unwrap_or("");
    if rest.is_empty() || rest.trim_end_matches('/').contains('/') {
        return Err(CtlError::usage(format!(
            "--endpoint {raw:?}: expected host:port, https://host:port, or http://host:port \
             for a node running with tls.insecure_plaintext"
        )));
    }
    Ok(url)
}

/// What to add to a failure at the cluster admin service over TLS: the
/// port requires an operator certificate. Without one, say so; with one and
/// no other explanation (the node may close the connection before its
/// refusal is read), say it may be the certificate.
fn cert_hint(global: &Global, endpoint: &str, message: &str) -> String {
    if !endpoint.starts_with("https://") || message.contains("--cert and --key") {
        return String::new();
    }
    if global.tls.cert.is_none() {
        return format!("\n  hint: {NO_CERT_HINT}");
    }
    if message.contains("hint:") {
        return String::new();
    }
    format!("\n  hint: {REFUSED_CERT_HINT}")
}

const NO_CERT_HINT: &str = "the Raft port's cluster admin service admits only the \
    cluster's nodes and operators: give --cert and --key (or TOLLGATE_CERT and TOLLGATE_KEY) \
    with an operator certificate (`tollgate ctl certs issue --ca-dir DIR --operator NAME`), \
    and --ca with the CA the nodes' certificates chain to";

const REFUSED_CERT_HINT: &str = "the node closed the connection; if it refused the \
    client certificate, that must be an operator certificate (`tollgate ctl certs show` \
    prints its identity: spiffe://<trust-domain>/operator/<name>) of the CA the nodes \
    trust, and in date; the node's log says why it refused";

/// A channel to a node's cluster admin service.
async fn admin_channel(endpoint: &str, global: &Global) -> CtlResult<tonic::transport::Channel> {
    super::check::connect_channel(endpoint, global)
        .await
        .map_err(|mut e| {
            // A TLS failure (it has a hint): the certificate will be needed too.
            if e.code == "UNREACHABLE" && e.message.contains("hint:") {
                e.message.push_str(&cert_hint(global, endpoint, &e.message));
            }
            e
        })
}

/// A failed call to the cluster admin service: [`grpc_error`], and the
/// certificate hint when the server cut the connection (TLS 1.3 servers
/// refuse a missing client certificate after the client thinks the
/// handshake is done, so it shows on the first call).
fn admin_error(global: &Global, endpoint: &str, status: &tonic::Status) -> CtlError {
    let mut error = grpc_error(endpoint, status);
    if super::tls::is_transport_failure(status) {
        error
            .message
            .push_str(&cert_hint(global, endpoint, &error.message));
    }
    error
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
    let mut endpoint = endpoint_url(endpoint, None)?;
    let mut redirected = false;
    loop {
        let client = ClusterAdminClient::new(admin_channel(&endpoint, global).await?);
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
                        endpoint = endpoint_url(&addr, Some(&endpoint))?;
                        redirected = true;
                    }
                    _ => return Err(admin_error(global, &endpoint, &status)),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctl::certs::testing::{pki, Pki};
    use crate::ctl::tls::ClientTlsArgs;
    use std::path::PathBuf;
    use tollgate_proto::cluster::v1::cluster_admin_server::{ClusterAdmin, ClusterAdminServer};
    use tollgate_tls::{Allow, ClientAuth, Subject, Tls, TlsFiles, Transport};
    use tonic::{Request, Response, Status};

    /// A cluster admin service that knows its status and nothing else.
    struct Fake;

    #[tonic::async_trait]
    impl ClusterAdmin for Fake {
        async fn initialize(
            &self,
            _: Request<pb::InitializeRequest>,
        ) -> Result<Response<pb::MembershipResponse>, Status> {
            Err(Status::unimplemented("fake"))
        }
        async fn add_learner(
            &self,
            _: Request<pb::AddLearnerRequest>,
        ) -> Result<Response<pb::MembershipResponse>, Status> {
            Err(Status::unimplemented("fake"))
        }
        async fn change_membership(
            &self,
            _: Request<pb::ChangeMembershipRequest>,
        ) -> Result<Response<pb::MembershipResponse>, Status> {
            Err(Status::unimplemented("fake"))
        }
        async fn remove_node(
            &self,
            _: Request<pb::RemoveNodeRequest>,
        ) -> Result<Response<pb::MembershipResponse>, Status> {
            Err(Status::unimplemented("fake"))
        }
        async fn status(
            &self,
            _: Request<pb::StatusRequest>,
        ) -> Result<Response<pb::StatusResponse>, Status> {
            Ok(Response::new(pb::StatusResponse {
                node_id: 1,
                ..Default::default()
            }))
        }
        async fn client_write(
            &self,
            _: Request<pb::ClientWriteRequest>,
        ) -> Result<Response<pb::ClientWriteResponse>, Status> {
            Err(Status::unimplemented("fake"))
        }
        async fn read_local(
            &self,
            _: Request<pb::ReadLocalRequest>,
        ) -> Result<Response<pb::ReadLocalResponse>, Status> {
            Err(Status::unimplemented("fake"))
        }
        async fn trigger_snapshot(
            &self,
            _: Request<pb::TriggerSnapshotRequest>,
        ) -> Result<Response<pb::TriggerSnapshotResponse>, Status> {
            Ok(Response::new(pb::TriggerSnapshotResponse {
                snapshot_index: 7,
            }))
        }
    }

    /// Serves [`Fake`] as an origin node's Raft port does: TLS with `node`'s
    /// certificate, admitting only origin nodes and operators. Returns the
    /// port and the stop switch.
    async fn raft_port(
        pki: &Pki,
        node: &(PathBuf, PathBuf),
        id: u64,
    ) -> (u16, tokio::sync::watch::Sender<bool>) {
        let tls = Tls::load(
            TlsFiles {
                ca: pki.ca.clone(),
                cert: Some(node.0.clone()),
                key: Some(node.1.clone()),
            },
            Some(Subject::OriginNode(id)),
            tollgate_clock::Clock::system().now_secs(),
        )
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let incoming = tollgate_tls::listen(
            listener,
            &Transport::Tls(tls),
            ClientAuth::required(vec![Allow::Operators, Allow::OriginNodes]),
            "raft",
            false,
            stop_rx,
        )
        .unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(ClusterAdminServer::new(Fake))
                .serve_with_incoming(incoming),
        );
        (port, stop)
    }

    fn client(ca: &std::path::Path, cert: Option<&(PathBuf, PathBuf)>) -> Global {
        Global::for_test(ClientTlsArgs {
            ca: Some(ca.to_path_buf()),
            cert: cert.map(|c| c.0.clone()),
            key: cert.map(|c| c.1.clone()),
            credential: None,
        })
    }

    fn status_of(endpoint: String) -> ClusterCommand {
        ClusterCommand::Status(Target { endpoint })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_cluster_admin_port_needs_an_operator_certificate() {
        let pki = pki();
        let (port, _stop) = raft_port(&pki, &pki.node, 1).await;
        let endpoint = format!("127.0.0.1:{port}");

        // An operator of this trust domain, over TLS (host:port means https).
        let operator = client(&pki.ca, Some(&pki.operator));
        assert_eq!(run(&operator, status_of(endpoint.clone())).await, Ok(0));
        let snapshot = ClusterCommand::Snapshot(Target {
            endpoint: format!("https://localhost:{port}"),
        });
        assert_eq!(run(&operator, snapshot).await, Ok(0));

        // No client certificate: refused, and told what to give.
        let error = run(&client(&pki.ca, None), status_of(endpoint.clone()))
            .await
            .unwrap_err();
        assert_eq!(
            (error.exit, error.code.as_str()),
            (exit::FAILURE, "UNREACHABLE")
        );
        // The refusal (CertificateRequired), or a broken pipe when the node
        // closed the connection before the client read it: a hint either way.
        assert!(error.message.contains("--cert and --key"), "{error}");
        assert!(error.message.contains("--operator"), "{error}");

        // An application's certificate is not an operator's.
        let error = run(
            &client(&pki.ca, Some(&pki.app)),
            status_of(endpoint.clone()),
        )
        .await
        .unwrap_err();
        assert_eq!(error.code, "UNREACHABLE", "{error}");
        assert!(
            error.message.contains("refused the client certificate")
                || error
                    .message
                    .contains("if it refused the client certificate"),
            "{error}"
        );

        // An operator of another CA: the node does not know its issuer,
        // and this client does not know the node's.
        let error = run(
            &client(&pki.other_ca, Some(&pki.other_operator)),
            status_of(endpoint.clone()),
        )
        .await
        .unwrap_err();
        assert!(error.message.contains("UnknownIssuer"), "{error}");
        assert!(error.message.contains("give --ca"), "{error}");

        // No --ca: the system's store does not know our CA either.
        let system = Global::for_test(ClientTlsArgs {
            ca: None,
            cert: Some(pki.operator.0.clone()),
            key: Some(pki.operator.1.clone()),
            credential: None,
        });
        if let Err(error) = run(&system, status_of(endpoint.clone())).await {
            assert!(error.message.contains("--ca"), "{error}");
        }

        // Plain http:// to a TLS port, with a certificate: refused before
        // connecting (a CA or certificate with http:// is a mistake).
        let error = run(&operator, status_of(format!("http://{endpoint}")))
            .await
            .unwrap_err();
        assert_eq!(error.exit, exit::INVALID_INPUT, "{error}");
        assert!(error.message.contains("https://"), "{error}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_node_certificate_must_name_the_host_dialled() {
        let pki = pki();
        // Node 2's certificate names only node2.acme.example.
        let (port, _stop) = raft_port(&pki, &pki.node_no_names, 2).await;
        let operator = client(&pki.ca, Some(&pki.operator));
        let error = run(&operator, status_of(format!("127.0.0.1:{port}")))
            .await
            .unwrap_err();
        assert_eq!(error.code, "UNREACHABLE", "{error}");
        assert!(error.message.contains("not valid for name"), "{error}");
        assert!(error.message.contains("--dns/--ip"), "{error}");
    }

    #[test]
    fn endpoints_default_to_tls_and_redirects_keep_the_scheme() {
        assert_eq!(endpoint_url("h:1", None).unwrap(), "https://h:1");
        assert_eq!(endpoint_url("http://h:1", None).unwrap(), "http://h:1");
        assert_eq!(endpoint_url("https://h:1/", None).unwrap(), "https://h:1/");
        assert_eq!(
            endpoint_url("l:2", Some("http://h:1")).unwrap(),
            "http://l:2"
        );
        assert_eq!(
            endpoint_url("l:2", Some("https://h:1")).unwrap(),
            "https://l:2"
        );
        assert_eq!(endpoint_url("ftp://h:1", None).unwrap_err().exit, 2);
        assert_eq!(endpoint_url("https://h:1/x", None).unwrap_err().exit, 2);
    }
}
