//! Admin over the origin's REST API: accounts, entitlements, orders,
//! access requests and the audit log. Every write prints the revision it
//! committed under (pass it to `ctl check --at-least-revision` to read your
//! own write at a region).

use super::origin::{read_json_file, seg, Origin};
use super::table::{cell, print_fields, time_cell, Table};
use super::{exit, print_json, CtlError, CtlResult, Format, Global};
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Duration;

/// Largest JSON file read for a body: the origin refuses more than 1 MiB.
const BODY_FILE_BYTES_MAX: u64 = tollgate_api::BODY_BYTES_MAX as u64;
/// Most items a `list` prints when `--limit` is not given.
pub(super) const LIST_LIMIT_DEFAULT: usize = 1_000;
/// Items asked per page (the origin's maximum).
const PAGE_LIMIT: usize = tollgate_api::PAGE_LIMIT_MAX;
/// How often `audit tail --follow` asks for new records, by default.
const FOLLOW_POLL_INTERVAL_MS_DEFAULT: u64 = 1_000;

#[derive(Debug, Subcommand)]
pub enum AccountsCommand {
    /// List accounts in id order.
    List(ListArgs),
    /// Read one account.
    Get { id: String },
    /// Create an account, or change its name or status (the rest is kept).
    Put(PutAccount),
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print at most this many items.
    #[arg(long, default_value_t = LIST_LIMIT_DEFAULT)]
    limit: usize,
}

#[derive(Debug, Args)]
pub struct PutAccount {
    id: String,
    /// The account's display name (required for a new account).
    #[arg(long)]
    name: Option<String>,
    /// `active`, or `suspended` (every check of the account is denied).
    #[arg(long, value_parser = ["active", "suspended"])]
    status: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum EntitlementsCommand {
    /// Every entitlement of an account.
    List {
        #[arg(long)]
        account: String,
    },
    /// Read one entitlement.
    Get { id: String },
    /// Grant a new entitlement from a JSON file (`-` for stdin), as
    /// `POST /v1/entitlements` takes it.
    Grant {
        #[arg(long)]
        file: PathBuf,
    },
    /// Revoke an entitlement for good.
    Revoke { id: String },
    /// Suspend an entitlement (it can be resumed).
    Suspend { id: String },
    /// Resume a suspended entitlement.
    Resume { id: String },
}

#[derive(Debug, Subcommand)]
pub enum OrdersCommand {
    /// Place one order from a JSON file (`-` for stdin). Idempotent by
    /// order id.
    Place {
        #[arg(long)]
        file: PathBuf,
    },
    /// Read an applied order.
    Get { id: String },
    /// Import orders in bulk from CSV (a header row naming the order's
    /// fields) or JSON Lines (one order per line). Orders of one account
    /// are applied in file order; several accounts in parallel. Prints how
    /// many succeeded, were unchanged (already applied) or failed, and each
    /// failing line. Exits 0 only if no line failed.
    Import(super::import::ImportArgs),
}

#[derive(Debug, Subcommand)]
pub enum AccessRequestsCommand {
    /// List access requests, oldest first (by when they were filed, then
    /// id); `--status pending` is the approval queue. Follows the origin's
    /// pages up to --limit; when more remain, says on stderr how to go on
    /// (`--after <cursor>`).
    List(AccessListArgs),
    /// Read an access request.
    Get { id: String },
    /// Approve: grants the entitlement asked for (give --reason).
    Approve { id: String },
    /// Deny (give --reason).
    Deny { id: String },
}

#[derive(Debug, Args)]
pub struct AccessListArgs {
    /// Only requests with this status.
    #[arg(long, value_parser = ["pending", "approved", "denied"])]
    status: Option<String>,
    /// Only this account's requests (an account's own API key sees only
    /// its own account anyway).
    #[arg(long)]
    account: Option<String>,
    /// Only requests filed at least this many seconds ago.
    #[arg(long)]
    older_than_seconds: Option<u64>,
    /// Only requests filed less than this many seconds ago.
    #[arg(long)]
    newer_than_seconds: Option<u64>,
    /// Only requests filed strictly after this Unix time (seconds).
    #[arg(long, allow_hyphen_values = true)]
    created_after: Option<i64>,
    /// Only requests filed strictly before this Unix time (seconds).
    #[arg(long, allow_hyphen_values = true)]
    created_before: Option<i64>,
    /// Print at most this many requests.
    #[arg(long, default_value_t = LIST_LIMIT_DEFAULT)]
    limit: usize,
    /// Start after this cursor, as a previous `list` printed it.
    #[arg(long)]
    after: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// The newest records of the audit log, oldest first; with --follow,
    /// then every new record as it commits, until interrupted.
    Tail(TailArgs),
}

#[derive(Debug, Args)]
pub struct TailArgs {
    /// How many of the newest records to print first (0..=500).
    #[arg(long, default_value_t = 20)]
    limit: usize,
    /// Keep printing new records as they commit (polls the origin).
    #[arg(long)]
    follow: bool,
    /// With --follow: how often to ask for new records.
    #[arg(long, default_value_t = FOLLOW_POLL_INTERVAL_MS_DEFAULT)]
    poll_interval_ms: u64,
}

pub async fn accounts(global: &Global, command: AccountsCommand) -> CtlResult<u8> {
    let origin = Origin::new(global)?;
    match command {
        AccountsCommand::List(args) => {
            let items = list_all(&origin, "/v1/accounts", args.limit).await?;
            print_items(global, &items, &["ID", "NAME", "STATUS"], |a| {
                vec![cell(&a["id"]), cell(&a["name"]), status_cell(&a["status"])]
            });
        }
        AccountsCommand::Get { id } => {
            let account = origin.get(&format!("/v1/accounts/{}", seg(&id))).await?;
            print_object(global, &account, |a| {
                print_fields(&[
                    ("id", cell(&a["id"])),
                    ("name", cell(&a["name"])),
                    ("status", status_cell(&a["status"])),
                ])
            });
        }
        AccountsCommand::Put(args) => {
            let path = format!("/v1/accounts/{}", seg(&args.id));
            let mut account = match origin.get(&path).await {
                Ok(existing) => existing,
                Err(e) if e.exit == exit::NOT_FOUND => json!({"id": args.id}),
                Err(e) => return Err(e),
            };
            if let Some(name) = args.name {
                account["name"] = json!(name);
            }
            if let Some(status) = args.status {
                account["status"] = json!(status);
            }
            if account.get("name").is_none() {
                return Err(CtlError::usage(format!(
                    "account {} does not exist yet: --name is required",
                    args.id
                )));
            }
            let result = origin.put(&path, &account).await?;
            print_write(global, &result, &format!("account {}", args.id));
        }
    }
    Ok(exit::OK)
}

pub async fn entitlements(global: &Global, command: EntitlementsCommand) -> CtlResult<u8> {
    let origin = Origin::new(global)?;
    match command {
        EntitlementsCommand::List { account } => {
            let page = origin
                .get(&format!("/v1/accounts/{}/entitlements", seg(&account)))
                .await?;
            let items = page["items"].as_array().cloned().unwrap_or_default();
            print_items(
                global,
                &items,
                &[
                    "ID",
                    "GRANT",
                    "STATUS",
                    "VALID_FROM",
                    "VALID_UNTIL",
                    "SEATS",
                    "REVISION",
                ],
                |e| {
                    vec![
                        cell(&e["id"]),
                        grant_cell(&e["grant"]),
                        status_cell(&e["status"]),
                        time_cell(&e["valid_from"]),
                        time_cell(&e["valid_until"]),
                        seats_cell(&e["seats"]),
                        cell(&e["revision"]),
                    ]
                },
            );
        }
        EntitlementsCommand::Get { id } => {
            let e = origin
                .get(&format!("/v1/entitlements/{}", seg(&id)))
                .await?;
            // An entitlement has too many optional parts for a table:
            // people get the document too, pretty-printed.
            print_json(&e);
        }
        EntitlementsCommand::Grant { file } => {
            let body = read_json_file(&file, BODY_FILE_BYTES_MAX)?;
            let result = origin.post("/v1/entitlements", Some(&body)).await?;
            print_write(global, &result, "granted");
        }
        EntitlementsCommand::Revoke { id } => {
            lifecycle(global, &origin, &id, "revoke", "revoked").await?
        }
        EntitlementsCommand::Suspend { id } => {
            lifecycle(global, &origin, &id, "suspend", "suspended").await?
        }
        EntitlementsCommand::Resume { id } => {
            lifecycle(global, &origin, &id, "resume", "resumed").await?
        }
    }
    Ok(exit::OK)
}

async fn lifecycle(
    global: &Global,
    origin: &Origin,
    id: &str,
    action: &str,
    done: &str,
) -> CtlResult<()> {
    let result = origin
        .post(&format!("/v1/entitlements/{}/{action}", seg(id)), None)
        .await?;
    print_write(global, &result, &format!("entitlement {id} {done}"));
    Ok(())
}

pub async fn orders(global: &Global, command: OrdersCommand) -> CtlResult<u8> {
    let origin = Origin::new(global)?;
    match command {
        OrdersCommand::Place { file } => {
            let body = read_json_file(&file, BODY_FILE_BYTES_MAX)?;
            let result = origin.post("/v1/orders", Some(&body)).await?;
            let what = format!("order {}", cell(&body["id"]));
            print_write(global, &result, &what);
        }
        OrdersCommand::Get { id } => {
            let record = origin.get(&format!("/v1/orders/{}", seg(&id))).await?;
            print_json(&record);
        }
        OrdersCommand::Import(args) => return super::import::run(global, origin, args).await,
    }
    Ok(exit::OK)
}

pub async fn access_requests(global: &Global, command: AccessRequestsCommand) -> CtlResult<u8> {
    let origin = Origin::new(global)?;
    let (id, action) = match command {
        AccessRequestsCommand::List(args) => {
            list_access_requests(global, &origin, args).await?;
            return Ok(exit::OK);
        }
        AccessRequestsCommand::Get { id } => {
            let r = origin
                .get(&format!("/v1/access-requests/{}", seg(&id)))
                .await?;
            print_object(global, &r, |r| {
                let spec = &r["spec"];
                print_fields(&[
                    ("id", cell(&spec["id"])),
                    ("account", cell(&spec["account"])),
                    ("subject", cell(&spec["subject"])),
                    ("target", grant_cell(&spec["target"])),
                    ("justification", cell(&spec["justification"])),
                    ("status", status_cell(&r["status"])),
                    (
                        "requested",
                        format!(
                            "{} by {}",
                            time_cell(&r["requested_at"]),
                            cell(&r["requested_by"])
                        ),
                    ),
                    (
                        "decided",
                        format!(
                            "{} by {}",
                            time_cell(&r["decided_at"]),
                            cell(&r["decided_by"])
                        ),
                    ),
                    ("decision reason", cell(&r["decision_reason"])),
                ])
            });
            return Ok(exit::OK);
        }
        AccessRequestsCommand::Approve { id } => (id, "approve"),
        AccessRequestsCommand::Deny { id } => (id, "deny"),
    };
    let result = origin
        .post(&format!("/v1/access-requests/{}/{action}", seg(&id)), None)
        .await?;
    let done = if action == "approve" {
        "approved"
    } else {
        "denied"
    };
    print_write(global, &result, &format!("access request {id} {done}"));
    Ok(exit::OK)
}

async fn list_access_requests(
    global: &Global,
    origin: &Origin,
    args: AccessListArgs,
) -> CtlResult<()> {
    if args.limit == 0 {
        return Err(CtlError::usage("--limit: must be at least 1"));
    }
    let mut filters = Vec::new();
    if let Some(status) = &args.status {
        filters.push(format!("status={}", seg(status)));
    }
    if let Some(account) = &args.account {
        filters.push(format!("account={}", seg(account)));
    }
    for (name, value) in [
        (
            "older_than_seconds",
            args.older_than_seconds.map(|v| v.to_string()),
        ),
        (
            "newer_than_seconds",
            args.newer_than_seconds.map(|v| v.to_string()),
        ),
        ("created_after", args.created_after.map(|v| v.to_string())),
        ("created_before", args.created_before.map(|v| v.to_string())),
    ] {
        if let Some(value) = value {
            filters.push(format!("{name}={value}"));
        }
    }
    let path = if filters.is_empty() {
        "/v1/access-requests".to_string()
    } else {
        format!("/v1/access-requests?{}", filters.join("&"))
    };
    let (items, next) = list_pages(origin, &path, args.limit, args.after).await?;
    print_items(
        global,
        &items,
        &[
            "ID",
            "ACCOUNT",
            "SUBJECT",
            "TARGET",
            "DURATION_SECONDS",
            "STATUS",
            "REQUESTED_AT",
            "REQUESTED_BY",
        ],
        |r| {
            let spec = &r["spec"];
            vec![
                cell(&spec["id"]),
                cell(&spec["account"]),
                cell(&spec["subject"]),
                grant_cell(&spec["target"]),
                cell(&spec["duration_seconds"]),
                status_cell(&r["status"]),
                time_cell(&r["requested_at"]),
                cell(&r["requested_by"]),
            ]
        },
    );
    if let Some(next) = next {
        // On stderr, so the JSON on stdout stays one document.
        eprintln!(
            "note: more access requests follow; continue with --after {next} (or raise --limit)"
        );
    }
    Ok(())
}

pub async fn audit(global: &Global, command: AuditCommand) -> CtlResult<u8> {
    let AuditCommand::Tail(args) = command;
    if args.limit > PAGE_LIMIT {
        return Err(CtlError::usage(format!("--limit: at most {PAGE_LIMIT}")));
    }
    if args.poll_interval_ms == 0 {
        return Err(CtlError::usage("--poll-interval-ms: must be at least 1"));
    }
    let origin = Origin::new(global)?;
    let head = head_revision(&origin).await?;
    let mut after = head.saturating_sub(args.limit as u64);
    if args.limit > 0 {
        let page = origin
            .get(&format!("/v1/audit?after={after}&limit={}", args.limit))
            .await?;
        after = print_audit(global, &page, after, true);
    } else {
        after = head;
    }
    if !args.follow {
        return Ok(exit::OK);
    }
    let interval = Duration::from_millis(args.poll_interval_ms);
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(exit::OK),
            _ = tokio::time::sleep(interval) => {}
        }
        // Every page of new records, then wait again. An origin that is
        // briefly away (restart, election) is waited for, not fatal.
        loop {
            let page = match origin
                .get(&format!("/v1/audit?after={after}&limit={PAGE_LIMIT}"))
                .await
            {
                Ok(page) => page,
                Err(e) if e.exit == exit::FAILURE => {
                    eprintln!("warning: {e}; trying again");
                    break;
                }
                Err(e) => return Err(e),
            };
            let full = page["items"]
                .as_array()
                .is_some_and(|a| a.len() == PAGE_LIMIT);
            after = print_audit(global, &page, after, false);
            if !full {
                break;
            }
        }
    }
}

/// The newest revision in the audit log (0 when it is empty), found by
/// asking whether any record follows a revision: doubling, then bisecting,
/// so a log of n revisions costs about 2·log2(n) small requests.
async fn head_revision(origin: &Origin) -> CtlResult<u64> {
    async fn any_after(origin: &Origin, revision: u64) -> CtlResult<bool> {
        let page = origin
            .get(&format!("/v1/audit?after={revision}&limit=1"))
            .await?;
        Ok(page["items"].as_array().is_some_and(|a| !a.is_empty()))
    }
    if !any_after(origin, 0).await? {
        return Ok(0);
    }
    // Invariant: a record follows `low`; none follows `high`.
    let mut low = 0u64;
    let mut high = 1u64;
    while any_after(origin, high).await? {
        low = high;
        high = high
            .checked_mul(2)
            .ok_or_else(|| CtlError::failure("the audit log's revisions do not end"))?;
    }
    while high - low > 1 {
        let mid = low + (high - low) / 2;
        if any_after(origin, mid).await? {
            low = mid;
        } else {
            high = mid;
        }
    }
    Ok(high)
}

/// Prints a page of audit records (JSON: one object per line, so a follow
/// stream can be piped); returns the newest revision seen.
fn print_audit(global: &Global, page: &Value, mut after: u64, header: bool) -> u64 {
    let items = page["items"].as_array().cloned().unwrap_or_default();
    let mut table = Table::new(&["REVISION", "AT", "ACTOR", "ACTION", "TARGET", "REASON"]);
    for r in &items {
        after = after.max(r["revision"].as_u64().unwrap_or(0));
        match global.output {
            Format::Json => println!("{r}"),
            Format::Table => table.row(vec![
                cell(&r["revision"]),
                time_cell(&r["at"]),
                cell(&r["actor"]),
                cell(&r["action"]),
                cell(&r["target"]),
                cell(&r["reason"]),
            ]),
        }
    }
    if global.output == Format::Table && (header || !items.is_empty()) {
        let text = table.render();
        // After the first page, rows only: the columns were named once.
        let text = if header {
            text.as_str()
        } else {
            text.split_once('\n').map_or("", |(_, rows)| rows)
        };
        print!("{text}");
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();
    after
}

/// Every item of the list at `path`, page after page, up to `limit`.
pub(super) async fn list_all(origin: &Origin, path: &str, limit: usize) -> CtlResult<Vec<Value>> {
    Ok(list_pages(origin, path, limit, None).await?.0)
}

/// The items of the list at `path` (which may carry a query already) from
/// the cursor `after`, page after page, up to `limit`; and the cursor to
/// go on from when the list goes on past them.
pub(super) async fn list_pages(
    origin: &Origin,
    path: &str,
    limit: usize,
    mut after: Option<String>,
) -> CtlResult<(Vec<Value>, Option<String>)> {
    let joiner = if path.contains('?') { '&' } else { '?' };
    let mut items = Vec::new();
    while items.len() < limit {
        let page_limit = (limit - items.len()).min(PAGE_LIMIT);
        let query = match &after {
            Some(a) => format!("{path}{joiner}limit={page_limit}&after={}", seg(a)),
            None => format!("{path}{joiner}limit={page_limit}"),
        };
        let page = origin.get(&query).await?;
        // An answer of another shape is an error, not an empty list.
        let Some(page_items) = page["items"].as_array() else {
            return Err(CtlError::new(
                exit::FAILURE,
                "UNEXPECTED_ANSWER",
                format!("the origin answered {query} without a list of items: {page}"),
            ));
        };
        items.extend(page_items.iter().cloned());
        match page["next_after"].as_str() {
            Some(next) => after = Some(next.to_string()),
            None => return Ok((items, None)),
        }
    }
    Ok((items, after))
}

pub(super) fn print_items(
    global: &Global,
    items: &[Value],
    headers: &[&'static str],
    row: impl Fn(&Value) -> Vec<String>,
) {
    match global.output {
        Format::Json => print_json(&Value::Array(items.to_vec())),
        Format::Table => {
            let mut table = Table::new(headers);
            for item in items {
                table.row(row(item));
            }
            table.print();
        }
    }
}

fn print_object(global: &Global, value: &Value, fields: impl Fn(&Value)) {
    match global.output {
        Format::Json => print_json(value),
        Format::Table => fields(value),
    }
}

/// What a write answered: `{revision, unchanged, entitlements, note}`.
pub(super) fn print_write(global: &Global, result: &Value, what: &str) {
    match global.output {
        Format::Json => print_json(result),
        Format::Table => {
            let unchanged = result["unchanged"] == Value::Bool(true);
            let entitlements: Vec<String> = result["entitlements"]
                .as_array()
                .map(|a| a.iter().map(cell).collect())
                .unwrap_or_default();
            println!(
                "{what}: {} at revision {}{}{}",
                if unchanged { "unchanged" } else { "committed" },
                cell(&result["revision"]),
                if entitlements.is_empty() {
                    String::new()
                } else {
                    format!(" (entitlements: {})", entitlements.join(", "))
                },
                result["note"]
                    .as_str()
                    .map(|n| format!(": {n}"))
                    .unwrap_or_default()
            );
        }
    }
}

/// `"active"`, or for a tagged status (`{"approved": {...}}`) its tag.
fn status_cell(value: &Value) -> String {
    match value {
        Value::Object(map) => map
            .iter()
            .next()
            .map(|(k, v)| {
                let detail: Vec<String> = match v {
                    Value::Object(o) => o.values().map(cell).collect(),
                    Value::Null => Vec::new(),
                    other => vec![cell(other)],
                };
                format!("{k} {}", detail.join(" ")).trim().to_string()
            })
            .unwrap_or_default(),
        Value::Null => "active".into(),
        other => cell(other),
    }
}

/// `{"plan": "pro"}` → `plan pro`; `{"feature": {"feature": "export", ..}}`
/// → `feature export`.
fn grant_cell(value: &Value) -> String {
    match value {
        Value::Object(map) if map.len() == 1 => {
            let (kind, inner) = map.iter().next().expect("one entry");
            let id = match inner {
                Value::Object(o) => o
                    .get(kind)
                    .or_else(|| o.get("entitlement"))
                    .or_else(|| o.values().next())
                    .map(cell)
                    .unwrap_or_default(),
                other => cell(other),
            };
            format!("{kind} {id}")
        }
        Value::Object(map) => map
            .get("entitlement")
            .map(cell)
            .unwrap_or_else(|| cell(value)),
        other => cell(other),
    }
}

fn seats_cell(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        v => {
            let mode = v["mode"]
                .as_object()
                .and_then(|m| m.keys().next().cloned())
                .unwrap_or_else(|| cell(&v["mode"]));
            format!("{} {mode}", cell(&v["count"]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_summarise_grants_statuses_and_seats() {
        assert_eq!(grant_cell(&json!({"plan": "pro"})), "plan pro");
        assert_eq!(
            grant_cell(&json!({"feature": {"feature": "export", "usage_cap": null}})),
            "feature export"
        );
        assert_eq!(status_cell(&json!("suspended")), "suspended");
        assert_eq!(
            status_cell(&json!({"approved": {"entitlement": "e1"}})),
            "approved e1"
        );
        assert_eq!(
            seats_cell(&json!({"count": 5, "mode": {"floating": {"lease_ttl_seconds": 300}}})),
            "5 floating"
        );
    }
}
