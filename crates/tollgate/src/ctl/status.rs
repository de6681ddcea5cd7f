//! `ctl status`: one row per region node, from the node's HTTP
//! `/v1/status` (see `tollgate_region_node::RegionStatus` for the document).
//!
//! Lag in seconds is how long ago the origin committed the oldest revision
//! the node has not applied; it needs the origin's audit log, so it is
//! shown only when an API key is given (and `-` otherwise).

use super::origin::{problem, Origin};
use super::table::{cell, Table};
use super::{exit, now_seconds, print_json, CtlError, CtlResult, Format, Global};
use clap::Args;
use serde_json::{json, Value};

/// Most nodes one call asks: a region is a handful of nodes; this bounds the
/// requests in flight.
const NODES_MAX: usize = 64;

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// A region node's operations address (its `listen.http`, serving
    /// `/v1/status`), e.g. `https://10.0.0.5:7400` (`http://` for a node
    /// running with tls.insecure_plaintext). Repeatable.
    #[arg(long = "node", visible_alias = "region-status", required = true, num_args = 1..)]
    nodes: Vec<String>,
}

pub async fn run(global: &Global, args: StatusArgs) -> CtlResult<u8> {
    if args.nodes.len() > NODES_MAX {
        return Err(CtlError::usage(format!(
            "--node: at most {NODES_MAX} nodes"
        )));
    }
    let mut urls = Vec::with_capacity(args.nodes.len());
    for node in &args.nodes {
        urls.push(status_url(node)?);
    }
    // One client per scheme: the TLS files are read once, not per node.
    let mut clients: Vec<(&str, reqwest::Client)> = Vec::new();
    for url in &urls {
        let scheme = scheme_of(url);
        if clients.iter().any(|(s, _)| *s == scheme) {
            continue;
        }
        let client = global
            .tls
            .http_client(url)
            .map_err(|e| CtlError::usage(format!("{url}: {e}")))?
            .timeout(global.timeout())
            .connect_timeout(global.timeout())
            .build()
            .map_err(|e| CtlError::failure(format!("cannot build an HTTP client: {e}")))?;
        clients.push((scheme, client));
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (i, url) in urls.iter().enumerate() {
        let http = clients
            .iter()
            .find(|(s, _)| *s == scheme_of(url))
            .map(|(_, c)| c.clone())
            .expect("a client for every scheme");
        let url = url.clone();
        tasks.spawn(async move { (i, fetch(&http, &url).await) });
    }
    let mut answers: Vec<Option<Result<Value, String>>> = vec![None; urls.len()];
    while let Some(joined) = tasks.join_next().await {
        let (i, answer) =
            joined.map_err(|e| CtlError::failure(format!("a status request failed: {e}")))?;
        answers[i] = Some(answer);
    }
    let origin = Origin::new(global).ok().filter(Origin::has_api_key);

    let mut rows = Vec::with_capacity(urls.len());
    let mut unreachable = 0;
    for (node, answer) in args.nodes.iter().zip(answers) {
        match answer.unwrap_or_else(|| Err("no answer".into())) {
            Ok(status) => {
                let lag_seconds = lag_seconds(origin.as_ref(), &status).await;
                rows.push(json!({
                    "node": node,
                    "reachable": true,
                    "lag_seconds": lag_seconds,
                    "status": status,
                }));
            }
            Err(error) => {
                unreachable += 1;
                rows.push(json!({"node": node, "reachable": false, "error": error}));
            }
        }
    }

    match global.output {
        Format::Json => print_json(&Value::Array(rows.clone())),
        Format::Table => print_table(&rows),
    }
    if unreachable > 0 {
        eprintln!(
            "error: {unreachable} of {} nodes unreachable",
            args.nodes.len()
        );
        return Ok(exit::FAILURE);
    }
    Ok(exit::OK)
}

/// `https://host:port` (or `http://`, or with `/v1/status` already) → the
/// status URL.
fn status_url(node: &str) -> CtlResult<String> {
    let trimmed = node.trim_end_matches('/');
    let base = trimmed.strip_suffix("/v1/status").unwrap_or(trimmed);
    let rest = base
        .strip_prefix("https://")
        .or_else(|| base.strip_prefix("http://"))
        .ok_or_else(|| {
            CtlError::usage(format!(
                "--node {node:?}: expected the node's operations address, https://host:port \
                 (http:// for a node running with tls.insecure_plaintext)"
            ))
        })?;
    if rest.is_empty() || rest.contains('/') {
        return Err(CtlError::usage(format!(
            "--node {node:?}: expected https://host:port"
        )));
    }
    Ok(format!("{base}/v1/status"))
}

/// `https` or `http` (URLs from [`status_url`]).
fn scheme_of(url: &str) -> &'static str {
    if url.starts_with("https://") {
        "https"
    } else {
        "http"
    }
}

async fn fetch(http: &reqwest::Client, url: &str) -> Result<Value, String> {
    let response = http.get(url).send().await.map_err(|e| {
        // reqwest's Display leaves out the cause: show the chain under it.
        let chain = std::error::Error::source(&e)
            .map(super::tls::error_chain)
            .unwrap_or_else(|| e.to_string());
        let hint = super::tls::hint(&chain)
            .map(|h| format!(" (hint: {h})"))
            .unwrap_or_default();
        if e.is_timeout() {
            format!("timed out ({chain}){hint}")
        } else {
            format!("{chain}{hint}")
        }
    })?;
    let status = response.status();
    let bytes = response.bytes().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(problem(status, &bytes).to_string());
    }
    let value: Value = serde_json::from_slice(&bytes).map_err(|_| {
        "answered, but not with a node status (is this the node's operations port?)".to_string()
    })?;
    if value.get("applied_revision").is_none() || value.get("role").is_none() {
        return Err(
            "answered, but not with a node status (is this the node's operations port?)".into(),
        );
    }
    Ok(value)
}

/// Seconds since the origin committed the oldest revision `status` lacks:
/// 0 when caught up, `None` when it cannot be told.
async fn lag_seconds(origin: Option<&Origin>, status: &Value) -> Option<i64> {
    let lag = status["lag_revisions"].as_u64()?;
    if lag == 0 {
        return Some(0);
    }
    let applied = status["applied_revision"].as_u64()?;
    let page = origin?
        .get(&format!("/v1/audit?after={applied}&limit=1"))
        .await
        .ok()?;
    let at = page["items"].get(0)?["at"].as_i64()?;
    Some(now_seconds().saturating_sub(at).max(0))
}

/// A node certificate expiring sooner than this gets a note under the table.
const CERT_EXPIRY_WARN_SECONDS: i64 = 14 * 86_400;

/// The TLS column: days the node's certificate has left, or PLAINTEXT.
fn tls_cell(tls: &Value) -> String {
    match tls["mode"].as_str() {
        Some("tls") => tls["certificate_expires_in_seconds"]
            .as_i64()
            .map_or("tls".into(), |s| format!("tls {}d", s / 86_400)),
        Some("insecure_plaintext") => "PLAINTEXT".into(),
        _ => "-".into(),
    }
}

fn print_table(rows: &[Value]) {
    let mut table = Table::new(&[
        "NODE",
        "NAME",
        "ROLE",
        "TERM",
        "LEADER",
        "APPLIED",
        "LAG_REV",
        "LAG_S",
        "STALE_S",
        "GEO",
        "GEO_BUILD",
        "TLS",
        "READY",
    ]);
    let mut notes = Vec::new();
    for row in rows {
        let node = cell(&row["node"]);
        if row["reachable"] != Value::Bool(true) {
            notes.push(format!("{node}: unreachable: {}", cell(&row["error"])));
            let mut cells = vec![node, "-".into(), "UNREACHABLE".into()];
            cells.resize(13, "-".into());
            table.row(cells);
            continue;
        }
        let s = &row["status"];
        let geo = &s["geo"]["location"];
        let geo_build = geo["build_epoch_seconds"]
            .as_i64()
            .map(|t| super::format_time(t).chars().take(10).collect())
            .unwrap_or_else(|| "-".into());
        let tls = tls_cell(&s["tls"]);
        if let Some(left) = s["tls"]["certificate_expires_in_seconds"].as_i64() {
            if left < CERT_EXPIRY_WARN_SECONDS {
                notes.push(format!(
                    "{node}: its certificate expires in {} days: renew it (`tollgate ctl certs issue`)",
                    left / 86_400
                ));
            }
        }
        let ready = if s["ready"] == Value::Bool(true) {
            "yes".to_string()
        } else {
            let reasons: Vec<String> = s["not_ready"]
                .as_array()
                .map(|a| a.iter().map(cell).collect())
                .unwrap_or_default();
            notes.push(format!("{node}: not ready: {}", reasons.join("; ")));
            "no".to_string()
        };
        table.row(vec![
            node,
            cell(&s["name"]),
            cell(&s["role"]),
            cell(&s["term"]),
            cell(&s["leader"]),
            cell(&s["applied_revision"]),
            cell(&s["lag_revisions"]),
            cell(&row["lag_seconds"]),
            cell(&s["staleness_seconds"]),
            cell(&geo["database_type"]),
            geo_build,
            tls,
            ready,
        ]);
    }
    table.print();
    for note in notes {
        println!("{note}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_addresses_become_status_urls() {
        assert_eq!(
            status_url("http://127.0.0.1:7400").unwrap(),
            "http://127.0.0.1:7400/v1/status"
        );
        assert_eq!(
            status_url("http://h:1/v1/status/").unwrap(),
            "http://h:1/v1/status"
        );
        assert_eq!(status_url("https://h:1").unwrap(), "https://h:1/v1/status");
        assert_eq!(scheme_of("https://h:1/v1/status"), "https");
        assert_eq!(
            tls_cell(&json!({"mode": "tls", "certificate_expires_in_seconds": 86_400 * 30})),
            "tls 30d"
        );
        assert_eq!(
            tls_cell(&json!({"mode": "insecure_plaintext"})),
            "PLAINTEXT"
        );
        assert_eq!(tls_cell(&Value::Null), "-");
        assert_eq!(status_url("h:1").unwrap_err().exit, 2);
        assert_eq!(status_url("http://h:1/other").unwrap_err().exit, 2);
    }

    /// An operations port: TLS with origin node 1's certificate (HTTP/1.1
    /// offered), answering every request with `body` as JSON.
    async fn https_json(
        pki: &crate::ctl::certs::testing::Pki,
        body: Value,
    ) -> (u16, tokio::sync::watch::Sender<bool>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        use tonic::codegen::tokio_stream::StreamExt;
        let tls = tollgate_tls::Tls::load(
            tollgate_tls::TlsFiles {
                ca: pki.ca.clone(),
                cert: Some(pki.node.0.clone()),
                key: Some(pki.node.1.clone()),
            },
            Some(tollgate_tls::Subject::OriginNode(1)),
            tollgate_clock::Clock::system().now_secs(),
        )
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let mut incoming = tollgate_tls::listen(
            listener,
            &tollgate_tls::Transport::Tls(tls),
            tollgate_tls::ClientAuth::optional(),
            "ops",
            true,
            stop_rx,
        )
        .unwrap();
        let body = body.to_string();
        tokio::spawn(async move {
            while let Some(Ok(mut io)) = incoming.next().await {
                let body = body.clone();
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match io.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                         content-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = io.write_all(answer.as_bytes()).await;
                    let _ = io.shutdown().await;
                });
            }
        });
        (port, stop)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn status_and_the_origin_are_read_over_tls() {
        use crate::ctl::tls::ClientTlsArgs;
        let pki = crate::ctl::certs::testing::pki();
        let status = json!({"role": "leader", "applied_revision": 3});
        let (port, _stop) = https_json(&pki, status.clone()).await;
        let with_ca = ClientTlsArgs {
            ca: Some(pki.ca.clone()),
            ..ClientTlsArgs::default()
        };

        let url = status_url(&format!("https://localhost:{port}")).unwrap();
        let http = with_ca.http_client(&url).unwrap().build().unwrap();
        assert_eq!(fetch(&http, &url).await.unwrap(), status);
        let global = Global::for_test(with_ca.clone());
        let args = StatusArgs {
            nodes: vec![format!("https://127.0.0.1:{port}")],
        };
        assert_eq!(run(&global, args).await, Ok(exit::OK));

        // The origin's REST client, with an operator certificate as well.
        let mut global = Global::for_test(ClientTlsArgs {
            cert: Some(pki.operator.0.clone()),
            key: Some(pki.operator.1.clone()),
            ..with_ca.clone()
        });
        global.origin = format!("https://127.0.0.1:{port}");
        let origin = Origin::new(&global).unwrap();
        assert_eq!(origin.get_public("/v1/keys").await.unwrap(), status);

        // Another CA: the node is not trusted, and the error says why.
        let other = ClientTlsArgs {
            ca: Some(pki.other_ca.clone()),
            ..ClientTlsArgs::default()
        };
        let http = other.http_client(&url).unwrap().build().unwrap();
        let error = fetch(&http, &url).await.unwrap_err();
        assert!(error.contains("UnknownIssuer"), "{error}");
        assert!(error.contains("give --ca"), "{error}");
        global.tls = other;
        let error = Origin::new(&global)
            .unwrap()
            .get_public("/v1/keys")
            .await
            .unwrap_err();
        assert_eq!(error.code, "UNREACHABLE");
        assert!(error.message.contains("UnknownIssuer"), "{error}");
        assert!(error.message.contains("hint:"), "{error}");

        // A CA with http:// is a mistake, not ignored.
        global.origin = format!("http://127.0.0.1:{port}");
        assert_eq!(
            Origin::new(&global).err().unwrap().exit,
            exit::INVALID_INPUT
        );
    }
}
