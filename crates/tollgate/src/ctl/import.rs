//! `ctl orders import`: orders in bulk, from CSV or JSON Lines.
//!
//! - Streaming: the file is read once to count its lines (for the progress
//!   bar) and once to send them; memory does not grow with the file.
//! - Bounded: `--concurrency` workers (default 8), each with a short queue,
//!   so at most that many orders are in flight. Orders of one account go to
//!   one worker and are applied in file order (a `new` before its `renew`);
//!   different accounts go in parallel.
//! - Every line gets an outcome: succeeded, unchanged (the origin had
//!   already applied that order id: imports can be re-run), or failed with
//!   its line number, a code (the origin's problem code, or
//!   `MALFORMED_LINE` for a line that never left this process) and a detail.
//! - Orders are idempotent by id, so a request that failed in transit
//!   (unreachable, 503) is retried a few times with backoff.
//! - A refused API key stops the import at once (every line would fail).
//!
//! CSV: a header row naming the order's fields (`id,account,sku,kind,
//! quantity,term_start[,term_end,tier,entitlement,grace_period_seconds]`),
//! then one order per row; an empty cell is an absent field; times are Unix
//! seconds or RFC 3339 (`2026-01-01T00:00:00Z`); fields may be quoted, but
//! not span lines.

use super::origin::Origin;
use super::{exit, print_json, CtlError, CtlResult, Format, Global};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Map, Value};
use std::collections::BTreeSet;
use std::hash::{Hash, Hasher};
use std::io::{BufRead, BufReader, IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Longest line accepted, in bytes: an order is a few hundred bytes, and
/// the origin refuses bodies over 1 MiB.
const LINE_BYTES_MAX: usize = 64 * 1024;
/// Most workers (orders in flight) `--concurrency` may ask for.
const CONCURRENCY_MAX: usize = 64;
/// Orders queued per worker ahead of the one in flight.
const WORKER_QUEUE_LEN: usize = 16;
/// Attempts per order when the origin is unreachable or unavailable.
const ATTEMPTS_MAX: u32 = 3;
/// Wait before the first retry; doubles after each.
const RETRY_BACKOFF_MS_FIRST: u64 = 200;
/// Failures listed in the table output; the JSON output lists them all.
const FAILURES_SHOWN_MAX: usize = 1_000;

/// The columns a CSV header may name: the fields of an order.
const COLUMNS: &[&str] = &[
    "id",
    "account",
    "sku",
    "tier",
    "kind",
    "quantity",
    "term_start",
    "term_end",
    "entitlement",
    "grace_period_seconds",
];
/// Columns holding a count.
const NUMBER_COLUMNS: &[&str] = &["quantity", "grace_period_seconds"];
/// Columns holding an instant.
const TIME_COLUMNS: &[&str] = &["term_start", "term_end"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ImportFormat {
    /// A header row naming the order's fields, then one order per row.
    Csv,
    /// One JSON order per line, as `POST /v1/orders` takes it.
    Jsonl,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The file of orders (`.csv`, or `.jsonl` / `.ndjson`).
    file: PathBuf,
    /// The file's format (default: by its extension).
    #[arg(long, value_enum)]
    format: Option<ImportFormat>,
    /// Orders in flight at once (1..=64).
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
}

/// What became of one line.
#[derive(Debug, Clone)]
enum Outcome {
    Succeeded { revision: u64 },
    Unchanged,
    Failed { code: String, detail: String },
}

#[derive(Debug)]
struct LineOutcome {
    line: u64,
    order_id: Option<String>,
    outcome: Outcome,
}

/// Outcomes so far, and the progress bar they move.
struct Tally {
    outcomes: Mutex<Vec<LineOutcome>>,
    bar: ProgressBar,
    /// Set when the API key is refused: nothing more is sent.
    abort: AtomicBool,
}

impl Tally {
    fn record(&self, line: u64, order_id: Option<String>, outcome: Outcome) {
        if let Outcome::Failed { code, .. } = &outcome {
            if code == "UNAUTHENTICATED" || code == "FORBIDDEN" {
                self.abort.store(true, Ordering::SeqCst);
            }
        }
        self.outcomes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(LineOutcome {
                line,
                order_id,
                outcome,
            });
        self.bar.inc(1);
    }
}

pub async fn run(global: &Global, origin: Origin, args: ImportArgs) -> CtlResult<u8> {
    if args.concurrency == 0 || args.concurrency > CONCURRENCY_MAX {
        return Err(CtlError::usage(format!(
            "--concurrency: must be 1..={CONCURRENCY_MAX}"
        )));
    }
    if !origin.has_api_key() {
        return Err(CtlError::new(
            exit::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "an API key is required: --api-key, TOLLGATE_API_KEY or --api-key-file",
        ));
    }
    let format = match args.format {
        Some(f) => f,
        None => format_of(&args.file)?,
    };
    let total = count_lines(&args.file)?;
    let bar = if std::io::stderr().is_terminal() {
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        if let Ok(style) =
            ProgressStyle::with_template("{bar:40} {pos}/{len} lines  {elapsed} elapsed  eta {eta}")
        {
            bar.set_style(style);
        }
        bar
    } else {
        ProgressBar::hidden()
    };
    let tally = Arc::new(Tally {
        outcomes: Mutex::new(Vec::new()),
        bar,
        abort: AtomicBool::new(false),
    });

    let mut senders = Vec::with_capacity(args.concurrency);
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency {
        let (tx, rx) = tokio::sync::mpsc::channel::<(u64, Value)>(WORKER_QUEUE_LEN);
        senders.push(tx);
        workers.spawn(worker(origin.clone(), rx, tally.clone()));
    }

    let file = std::fs::File::open(&args.file)
        .map_err(|e| CtlError::usage(format!("{}: {e}", args.file.display())))?;
    let mut reader = BufReader::new(file);
    let mut header: Option<Vec<String>> = None;
    let mut line_number = 0u64;
    let mut buf = Vec::new();
    loop {
        if tally.abort.load(Ordering::SeqCst) {
            break;
        }
        buf.clear();
        let read = read_line_bounded(&mut reader, &mut buf)
            .map_err(|e| CtlError::failure(format!("{}: {e}", args.file.display())))?;
        let Some(too_long) = read else { break };
        line_number += 1;
        if too_long {
            tally.record(
                line_number,
                None,
                Outcome::Failed {
                    code: "MALFORMED_LINE".into(),
                    detail: format!("longer than {LINE_BYTES_MAX} bytes"),
                },
            );
            continue;
        }
        let text = match std::str::from_utf8(&buf) {
            Ok(t) => t,
            Err(_) => {
                tally.record(line_number, None, malformed("not UTF-8"));
                continue;
            }
        };
        let text = text
            .trim_start_matches('\u{feff}')
            .trim_end_matches(['\n', '\r']);
        if text.trim().is_empty() {
            tally.bar.inc(1);
            continue;
        }
        let order = match format {
            ImportFormat::Jsonl => parse_json_line(text),
            ImportFormat::Csv => match &header {
                None => {
                    header = Some(parse_header(text).map_err(|e| {
                        CtlError::usage(format!(
                            "{} line {line_number}: the header: {e}",
                            args.file.display()
                        ))
                    })?);
                    tally.bar.inc(1);
                    continue;
                }
                Some(columns) => parse_csv_row(columns, text),
            },
        };
        match order {
            Ok(order) => {
                let account = order["account"].as_str().unwrap_or_default();
                let mut hasher = std::collections::hash_map::DefaultHasher::new();
                account.hash(&mut hasher);
                let worker = (hasher.finish() % senders.len() as u64) as usize;
                if senders[worker].send((line_number, order)).await.is_err() {
                    return Err(CtlError::failure("an import worker stopped"));
                }
            }
            Err(detail) => tally.record(line_number, None, malformed(&detail)),
        }
    }
    drop(senders);
    while let Some(joined) = workers.join_next().await {
        joined.map_err(|e| CtlError::failure(format!("an import worker failed: {e}")))?;
    }
    tally.bar.finish_and_clear();

    let mut outcomes =
        std::mem::take(&mut *tally.outcomes.lock().unwrap_or_else(|p| p.into_inner()));
    outcomes.sort_by_key(|o| o.line);
    let aborted = tally.abort.load(Ordering::SeqCst);
    summarise(global, &args.file, &outcomes, aborted)
}

fn malformed(detail: &str) -> Outcome {
    Outcome::Failed {
        code: "MALFORMED_LINE".into(),
        detail: detail.to_string(),
    }
}

async fn worker(
    origin: Origin,
    mut queue: tokio::sync::mpsc::Receiver<(u64, Value)>,
    tally: Arc<Tally>,
) {
    while let Some((line, order)) = queue.recv().await {
        let id = order["id"].as_str().map(str::to_string);
        if tally.abort.load(Ordering::SeqCst) {
            continue;
        }
        let outcome = place(&origin, &order).await;
        tally.record(line, id, outcome);
    }
}

/// Places one order, retrying what may succeed on another try.
async fn place(origin: &Origin, order: &Value) -> Outcome {
    let mut backoff = Duration::from_millis(RETRY_BACKOFF_MS_FIRST);
    let mut attempt = 1;
    loop {
        match origin.post("/v1/orders", Some(order)).await {
            Ok(result) => {
                return if result["unchanged"] == Value::Bool(true) {
                    Outcome::Unchanged
                } else {
                    Outcome::Succeeded {
                        revision: result["revision"].as_u64().unwrap_or(0),
                    }
                }
            }
            Err(e) => {
                let transient = matches!(
                    e.code.as_str(),
                    "UNREACHABLE" | "NOT_LEADER" | "UNAVAILABLE" | "SERVICE_UNAVAILABLE"
                );
                if !transient || attempt >= ATTEMPTS_MAX {
                    return Outcome::Failed {
                        code: e.code,
                        detail: e.message,
                    };
                }
                tokio::time::sleep(backoff).await;
                backoff *= 2;
                attempt += 1;
            }
        }
    }
}

fn summarise(
    global: &Global,
    file: &Path,
    outcomes: &[LineOutcome],
    aborted: bool,
) -> CtlResult<u8> {
    let mut succeeded = 0u64;
    let mut unchanged = 0u64;
    let mut revision = 0u64;
    let mut failures = Vec::new();
    for o in outcomes {
        match &o.outcome {
            Outcome::Succeeded { revision: r } => {
                succeeded += 1;
                revision = revision.max(*r);
            }
            Outcome::Unchanged => unchanged += 1,
            Outcome::Failed { code, detail } => failures.push((o, code, detail)),
        }
    }
    match global.output {
        Format::Json => print_json(&json!({
            "file": file.display().to_string(),
            "succeeded": succeeded,
            "unchanged": unchanged,
            "failed": failures.len(),
            "aborted": aborted,
            "revision": revision,
            "failures": failures.iter().map(|(o, code, detail)| json!({
                "line": o.line,
                "order": o.order_id,
                "code": code,
                "detail": detail,
            })).collect::<Vec<_>>(),
        })),
        Format::Table => {
            println!(
                "{}: {succeeded} succeeded, {unchanged} unchanged, {} failed{}",
                file.display(),
                failures.len(),
                if revision > 0 {
                    format!(" (origin revision {revision})")
                } else {
                    String::new()
                }
            );
            for (o, code, detail) in failures.iter().take(FAILURES_SHOWN_MAX) {
                let order = o
                    .order_id
                    .as_deref()
                    .map(|id| format!(" (order {id})"))
                    .unwrap_or_default();
                println!("line {}{order}: {code}: {detail}", o.line);
            }
            if failures.len() > FAILURES_SHOWN_MAX {
                println!(
                    "... and {} more failures (--output json lists them all)",
                    failures.len() - FAILURES_SHOWN_MAX
                );
            }
        }
    }
    if aborted {
        eprintln!("error: the origin refused the API key; the import stopped");
        return Ok(exit::UNAUTHORIZED);
    }
    Ok(if failures.is_empty() {
        exit::OK
    } else {
        exit::FAILURE
    })
}

fn format_of(file: &Path) -> CtlResult<ImportFormat> {
    match file
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_lowercase)
        .as_deref()
    {
        Some("csv") => Ok(ImportFormat::Csv),
        Some("jsonl" | "ndjson") => Ok(ImportFormat::Jsonl),
        _ => Err(CtlError::usage(format!(
            "{}: cannot tell the format from the name; give --format csv or --format jsonl",
            file.display()
        ))),
    }
}

/// Lines in the file (for the progress bar), read in bounded chunks.
fn count_lines(file: &Path) -> CtlResult<u64> {
    let mut f = std::fs::File::open(file)
        .map_err(|e| CtlError::usage(format!("{}: {e}", file.display())))?;
    let mut chunk = vec![0u8; 64 * 1024];
    let mut lines = 0u64;
    let mut last = b'\n';
    loop {
        let n = f
            .read(&mut chunk)
            .map_err(|e| CtlError::failure(format!("{}: {e}", file.display())))?;
        if n == 0 {
            break;
        }
        lines += chunk[..n].iter().filter(|&&b| b == b'\n').count() as u64;
        last = chunk[n - 1];
    }
    Ok(lines + u64::from(last != b'\n'))
}

/// Reads one line into `buf`: `None` at the end of the file, `Some(true)`
/// when the line was longer than [`LINE_BYTES_MAX`] (the rest of it is
/// skipped), `Some(false)` otherwise.
fn read_line_bounded(
    reader: &mut impl BufRead,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<bool>> {
    let n = reader
        .by_ref()
        .take(LINE_BYTES_MAX as u64 + 1)
        .read_until(b'\n', buf)?;
    if n == 0 {
        return Ok(None);
    }
    if buf.len() > LINE_BYTES_MAX && buf.last() != Some(&b'\n') {
        // Skip to the end of the over-long line.
        let mut rest = Vec::new();
        loop {
            rest.clear();
            let m = reader
                .by_ref()
                .take(LINE_BYTES_MAX as u64)
                .read_until(b'\n', &mut rest)?;
            if m == 0 || rest.last() == Some(&b'\n') {
                break;
            }
        }
        return Ok(Some(true));
    }
    Ok(Some(false))
}

fn parse_json_line(text: &str) -> Result<Value, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    if !value.is_object() {
        return Err("not a JSON object".into());
    }
    check_order(value)
}

/// Checks the shape of an order here, so a typo is reported with its line
/// and never reaches the origin. The origin still validates the content.
fn check_order(value: Value) -> Result<Value, String> {
    serde_json::from_value::<tollgate_origin::Order>(value.clone())
        .map_err(|e| format!("not an order: {e}"))?;
    Ok(value)
}

fn parse_header(text: &str) -> Result<Vec<String>, String> {
    let columns: Vec<String> = split_csv(text)?
        .into_iter()
        .map(|c| c.to_lowercase())
        .collect();
    let mut seen = BTreeSet::new();
    for c in &columns {
        if !COLUMNS.contains(&c.as_str()) {
            return Err(format!(
                "unknown column {c:?} (known: {})",
                COLUMNS.join(", ")
            ));
        }
        if !seen.insert(c.as_str()) {
            return Err(format!("column {c:?} named twice"));
        }
    }
    for required in ["id", "account", "sku", "kind", "quantity", "term_start"] {
        if !seen.contains(required) {
            return Err(format!("the required column {required:?} is missing"));
        }
    }
    Ok(columns)
}

fn parse_csv_row(columns: &[String], text: &str) -> Result<Value, String> {
    let fields = split_csv(text)?;
    if fields.len() != columns.len() {
        return Err(format!(
            "{} fields, but the header names {} columns",
            fields.len(),
            columns.len()
        ));
    }
    let mut order = Map::new();
    for (column, field) in columns.iter().zip(fields) {
        if field.is_empty() {
            continue;
        }
        let value = if NUMBER_COLUMNS.contains(&column.as_str()) {
            let n: u64 = field
                .parse()
                .map_err(|_| format!("{column}: {field:?} is not a whole number"))?;
            json!(n)
        } else if TIME_COLUMNS.contains(&column.as_str()) {
            match field.parse::<i64>() {
                Ok(n) => json!(n),
                Err(_) => json!(
                    tollgate_license::parse_rfc3339(&field)
                        .ok_or_else(|| format!(
                            "{column}: {field:?} is neither Unix seconds nor an RFC 3339 time"
                        ))?
                        .0
                ),
            }
        } else {
            json!(field)
        };
        order.insert(column.clone(), value);
    }
    check_order(Value::Object(order))
}

/// One CSV record on one line: fields separated by commas, optionally in
/// double quotes (a quote inside doubled), unquoted fields trimmed.
fn split_csv(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut in_quotes = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if in_quotes {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => in_quotes = false,
                c => field.push(c),
            }
            continue;
        }
        match c {
            ',' => {
                fields.push(finish(&mut field, quoted));
                quoted = false;
            }
            '"' if field.trim().is_empty() && !quoted => {
                field.clear();
                quoted = true;
                in_quotes = true;
            }
            '"' => return Err("a quote inside an unquoted field".into()),
            c if quoted && !c.is_whitespace() => return Err("text after a closing quote".into()),
            c => field.push(c),
        }
    }
    if in_quotes {
        return Err("an unterminated quote (a field may not span lines)".into());
    }
    fields.push(finish(&mut field, quoted));
    Ok(fields)
}

fn finish(field: &mut String, quoted: bool) -> String {
    let value = std::mem::take(field);
    if quoted {
        value
    } else {
        value.trim().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_split_with_quotes() {
        assert_eq!(split_csv("a, b ,c").unwrap(), ["a", "b", "c"]);
        assert_eq!(
            split_csv(r#""x,y","say ""hi""",,z"#).unwrap(),
            ["x,y", r#"say "hi""#, "", "z"]
        );
        assert!(split_csv(r#""open"#).is_err());
        assert!(split_csv(r#"a"b"#).is_err());
        assert!(split_csv(r#""a"b"#).is_err());
    }

    #[test]
    fn csv_rows_become_orders_or_say_what_is_wrong() {
        let header = parse_header("id,account,sku,kind,quantity,term_start,term_end").unwrap();
        let order = parse_csv_row(&header, "o1,acme,STU-PRO,new,3,2026-01-01T00:00:00Z,").unwrap();
        assert_eq!(
            order,
            json!({"id": "o1", "account": "acme", "sku": "STU-PRO", "kind": "new", "quantity": 3, "term_start": 1767225600})
        );
        let e = parse_csv_row(&header, "o1,acme,STU-PRO,new,three,0,").unwrap_err();
        assert!(e.contains("quantity"), "{e}");
        let e = parse_csv_row(&header, "o1,acme").unwrap_err();
        assert!(e.contains("2 fields"), "{e}");
        let e = parse_csv_row(&header, "o1,acme,STU-PRO,sideways,1,0,").unwrap_err();
        assert!(e.contains("kind") || e.contains("variant"), "{e}");
        assert!(parse_header("id,account,colour").is_err());
        assert!(parse_header("id,account,sku,kind,quantity").is_err());
    }

    #[test]
    fn json_lines_are_checked_for_shape() {
        assert!(parse_json_line("{").unwrap_err().contains("not JSON"));
        assert!(parse_json_line("[1]").unwrap_err().contains("object"));
        assert!(parse_json_line(r#"{"id":"o1"}"#)
            .unwrap_err()
            .contains("not an order"));
    }

    #[test]
    fn over_long_lines_are_reported_and_skipped() {
        let mut text = vec![b'x'; LINE_BYTES_MAX + 10];
        text.extend_from_slice(b"\nnext\n");
        let mut reader = std::io::Cursor::new(text);
        let mut buf = Vec::new();
        assert_eq!(
            read_line_bounded(&mut reader, &mut buf).unwrap(),
            Some(true)
        );
        buf.clear();
        assert_eq!(
            read_line_bounded(&mut reader, &mut buf).unwrap(),
            Some(false)
        );
        assert_eq!(buf, b"next\n");
        buf.clear();
        assert_eq!(read_line_bounded(&mut reader, &mut buf).unwrap(), None);
    }
}
