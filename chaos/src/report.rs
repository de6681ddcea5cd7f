//! What a run reports: `report.json` in its run directory, and a table for
//! people.

use crate::checker::{Stats, Violation};
use crate::nemesis::Schedule;
use serde::Serialize;
use std::fmt::Write as _;

#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub scenario: String,
    pub seed: u64,
    pub duration_seconds: u64,
    pub passed: bool,
    /// The command that replays the run's schedule.
    pub replay: String,
    pub run_dir: String,
    pub schedule: Schedule,
    pub violations: Vec<Violation>,
    pub stats: Stats,
}

fn seconds(ms: Option<u64>) -> String {
    ms.map_or("-".into(), |ms| format!("{:.1}", ms as f64 / 1000.0))
}

/// The convergence column: the slowest revocation made during a cut, or
/// "never", or "-" without one.
fn convergence(stats: &Stats) -> String {
    let measured: Vec<_> = stats
        .convergence
        .iter()
        .filter(|c| c.revision.is_some())
        .collect();
    if measured.is_empty() {
        return "-".into();
    }
    if measured.iter().any(|c| c.converged_after_ms.is_none()) {
        return "never".into();
    }
    seconds(measured.iter().filter_map(|c| c.converged_after_ms).max())
}

/// One line per run.
pub fn table(reports: &[RunReport]) -> String {
    let header = [
        "scenario",
        "seed",
        "result",
        "checks ok/sent",
        "avail %",
        "sdk ok %",
        "stale s",
        "lag rev",
        "revoke conv s",
        "elections",
        "elect max s",
        "cap used/cap",
        "overshoot/bound",
        "seats max/n",
        "faults",
        "violations",
    ];
    let rows: Vec<Vec<String>> = reports
        .iter()
        .map(|r| {
            let s = &r.stats;
            vec![
                r.scenario.clone(),
                r.seed.to_string(),
                if r.passed { "PASS" } else { "FAIL" }.into(),
                format!("{}/{}", s.checks_answered, s.checks_attempted),
                format!("{:.2}", s.availability_percent),
                format!("{:.2}", s.sdk_answered_percent),
                s.max_staleness_seconds
                    .map_or("-".into(), |x| x.to_string()),
                s.max_lag_revisions.to_string(),
                convergence(s),
                s.elections.to_string(),
                s.election_ms_max
                    .map_or("-".into(), |ms| format!("{:.1}", ms as f64 / 1000.0)),
                format!("{}/{}", s.cap.allowed, s.cap.cap),
                format!("{}/{}", s.cap.overshoot, s.cap.outstanding_observed_max),
                format!("{}/{}", s.seats.max_concurrent, s.seats.seat_count),
                s.faults.to_string(),
                r.violations.len().to_string(),
            ]
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<String>, out: &mut String| {
        let cells: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", cells.join("  ").trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect(), &mut out);
    line(widths.iter().map(|w| "-".repeat(*w)).collect(), &mut out);
    for row in rows {
        line(row, &mut out);
    }
    out
}

/// Per-region numbers, the convergence after each cut, and every
/// violation, for one run.
pub fn details(r: &RunReport) -> String {
    let s = &r.stats;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} seed {}: writes acked {} (revocations {}), failed {}, unknown {}; \
         cap {} allowed of {} (billed {}{}, attempts {}, lost answers {}, never answered {}); \
         seat grants {} (FULL {}); {} window(s) with no answer in a region",
        r.scenario,
        r.seed,
        s.writes_acked,
        s.revocations_acked,
        s.writes_failed,
        s.writes_indeterminate,
        s.cap.allowed,
        s.cap.cap,
        s.cap.billed.map_or("-".into(), |b| b.to_string()),
        match s.cap.billing_settled {
            Some(false) => ", not settled",
            _ => "",
        },
        s.cap.attempts,
        s.cap.errors,
        s.cap.unanswered,
        s.seats.grants,
        s.seats.full,
        s.unavailable_windows,
    );
    for (name, region) in &s.regions {
        let _ = writeln!(
            out,
            "  region {name}: checks {}/{} ({:.2} %), SDK checks answered {}/{} ({:.2} %, \
             slowest {} s), max staleness {} s, max lag {} revisions, elections {}{}, \
             consumed {}, seat grants {}",
            region.checks_answered,
            region.checks_attempted,
            region.availability_percent,
            region.sdk_checks_answered,
            region.sdk_checks_attempted,
            region.sdk_answered_percent,
            seconds(region.sdk_check_ms_max),
            region
                .max_staleness_seconds
                .map_or("-".into(), |x| x.to_string()),
            region.max_lag_revisions,
            region.elections,
            if region.election_ms.is_empty() {
                String::new()
            } else {
                let each: Vec<String> = region
                    .election_ms
                    .iter()
                    .map(|ms| format!("{:.1}", *ms as f64 / 1000.0))
                    .collect();
                format!(" ({} s)", each.join(", "))
            },
            region.consumed_allowed,
            region.seat_grants,
        );
    }
    for c in &s.convergence {
        let _ = writeln!(
            out,
            "  cut #{} of {}: revocation at revision {} reached every node {} s after the heal",
            c.step,
            c.regions.join(", "),
            c.revision.map_or("-".into(), |x| x.to_string()),
            match (c.revision, c.converged_after_ms) {
                (None, _) => "(none made during the cut)".to_string(),
                (Some(_), None) => "never".to_string(),
                (Some(_), Some(ms)) => format!("{:.1}", ms as f64 / 1000.0),
            }
        );
    }
    if let Some(example) = &s.answer_labelled_below_its_data {
        let _ = writeln!(
            out,
            "  note: {} answer(s) were labelled with a lower revision than their data, e.g. {example}",
            s.answers_labelled_below_their_data
        );
    }
    for v in &r.violations {
        let _ = writeln!(out, "  VIOLATION {}: {}", v.invariant, v.detail);
    }
    if !r.passed {
        let _ = writeln!(out, "  reproduce: {}", r.replay);
        let _ = writeln!(out, "  history, logs and data: {}", r.run_dir);
    }
    out
}
