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
    /// A region node's HTTP status address (its `listen.http`, serving
    /// `/v1/status`), e.g. `http://10.0.0.5:7400`. Repeatable.
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
    let http = reqwest::Client::builder()
        .timeout(global.timeout())
        .connect_timeout(global.timeout())
        .build()
        .map_err(|e| CtlError::failure(format!("cannot build an HTTP client: {e}")))?;
    let mut tasks = tokio::task::JoinSet::new();
    for (i, url) in urls.iter().enumerate() {
        let http = http.clone();
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

/// `http://host:port` (or with `/v1/status` already) → the status URL.
fn status_url(node: &str) -> CtlResult<String> {
    let trimmed = node.trim_end_matches('/');
    let base = trimmed.strip_suffix("/v1/status").unwrap_or(trimmed);
    let rest = base.strip_prefix("http://").ok_or_else(|| {
        CtlError::usage(format!(
            "--node {node:?}: expected the node's HTTP status address, http://host:port"
        ))
    })?;
    if rest.is_empty() || rest.contains('/') {
        return Err(CtlError::usage(format!(
            "--node {node:?}: expected http://host:port"
        )));
    }
    Ok(format!("{base}/v1/status"))
}

async fn fetch(http: &reqwest::Client, url: &str) -> Result<Value, String> {
    let response = http.get(url).send().await.map_err(|e| {
        let mut cause = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            cause = s.to_string();
            source = s.source();
        }
        if e.is_timeout() {
            format!("timed out ({cause})")
        } else {
            cause
        }
    })?;
    let status = response.status();
    let bytes = response.bytes().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(problem(status, &bytes).to_string());
    }
    let value: Value = serde_json::from_slice(&bytes).map_err(|_| {
        "answered, but not with a node status (is this the node's HTTP status port?)".to_string()
    })?;
    if value.get("applied_revision").is_none() || value.get("role").is_none() {
        return Err(
            "answered, but not with a node status (is this the node's HTTP status port?)".into(),
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
        "READY",
    ]);
    let mut notes = Vec::new();
    for row in rows {
        let node = cell(&row["node"]);
        if row["reachable"] != Value::Bool(true) {
            notes.push(format!("{node}: unreachable: {}", cell(&row["error"])));
            let mut cells = vec![node, "-".into(), "UNREACHABLE".into()];
            cells.resize(12, "-".into());
            table.row(cells);
            continue;
        }
        let s = &row["status"];
        let geo = &s["geo"]["location"];
        let geo_build = geo["build_epoch_seconds"]
            .as_i64()
            .map(|t| super::format_time(t).chars().take(10).collect())
            .unwrap_or_else(|| "-".into());
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
        assert_eq!(status_url("h:1").unwrap_err().exit, 2);
        assert_eq!(status_url("http://h:1/other").unwrap_err().exit, 2);
    }
}
