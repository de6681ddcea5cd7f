//! Helpers that Tollgate's test suites share.
//!
//! Synchronisation in a test is "wait for a condition, with a deadline",
//! never a fixed sleep: [`wait_until`] (async) and [`wait_until_blocking`]
//! (for tests without a runtime) poll a condition until it holds, and a
//! timed-out wait names what it waited for, the deadline and the last thing
//! the condition saw.

pub mod oidc;

use std::future::Future;
use std::time::{Duration, Instant};

/// How often a waiting test re-checks its condition; it only bounds how
/// late success is noticed, it never synchronises anything.
pub const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// What one look at a waited-for condition found: the value waited for, or
/// (for a `Result`) a description of what was there instead, which a
/// timed-out wait reports so a failure says what it last saw.
pub trait Seen<T> {
    fn seen(self) -> Result<T, Option<String>>;
}

impl<T> Seen<T> for Option<T> {
    fn seen(self) -> Result<T, Option<String>> {
        self.ok_or(None)
    }
}

impl<T, E: std::fmt::Display> Seen<T> for Result<T, E> {
    fn seen(self) -> Result<T, Option<String>> {
        self.map_err(|e| Some(e.to_string()))
    }
}

/// Polls `condition` until it returns `Some` (or `Ok`), or fails with
/// `what` once `deadline` has passed, naming the last thing the condition
/// saw when it returns `Err(description)`. Never a fixed sleep: the poll
/// interval only bounds how late success is noticed.
pub async fn wait_until<T, R, F, Fut>(
    what: &str,
    deadline: Duration,
    condition: F,
) -> anyhow::Result<T>
where
    R: Seen<T>,
    F: FnMut() -> Fut,
    Fut: Future<Output = R>,
{
    wait_until_every(what, deadline, POLL_INTERVAL, condition).await
}

/// [`wait_until`], looking every `interval`: for conditions that cost the
/// system they observe (a status request to every node of a cluster).
pub async fn wait_until_every<T, R, F, Fut>(
    what: &str,
    deadline: Duration,
    interval: Duration,
    mut condition: F,
) -> anyhow::Result<T>
where
    R: Seen<T>,
    F: FnMut() -> Fut,
    Fut: Future<Output = R>,
{
    let start = Instant::now();
    let mut last_seen = None;
    loop {
        match condition().await.seen() {
            Ok(value) => return Ok(value),
            Err(Some(seen)) => last_seen = Some(seen),
            Err(None) => {}
        }
        if start.elapsed() > deadline {
            return Err(timed_out(what, deadline, last_seen));
        }
        tokio::time::sleep(interval).await;
    }
}

/// [`wait_until`] for a test without an async runtime: the same condition
/// semantics and the same failure message, polling on the calling thread.
pub fn wait_until_blocking<T, R, F>(
    what: &str,
    deadline: Duration,
    mut condition: F,
) -> anyhow::Result<T>
where
    R: Seen<T>,
    F: FnMut() -> R,
{
    let start = Instant::now();
    let mut last_seen = None;
    loop {
        match condition().seen() {
            Ok(value) => return Ok(value),
            Err(Some(seen)) => last_seen = Some(seen),
            Err(None) => {}
        }
        if start.elapsed() > deadline {
            return Err(timed_out(what, deadline, last_seen));
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// The one spelling of a timed-out wait, shared by both waits.
fn timed_out(what: &str, deadline: Duration, last_seen: Option<String>) -> anyhow::Error {
    match last_seen {
        Some(seen) => {
            anyhow::anyhow!("timed out after {deadline:?} waiting for {what}; last saw: {seen}")
        }
        None => anyhow::anyhow!("timed out after {deadline:?} waiting for {what}"),
    }
}

/// Runs every row of a table test, then fails once, naming each row whose
/// `check` found something other than expected (`Some(why)`) or panicked,
/// not only the first. Two rows with one name are a mistake in the table.
pub fn check_rows<R>(rows: &[R], name: impl Fn(&R) -> &str, check: impl Fn(&R) -> Option<String>) {
    let mut names = std::collections::BTreeSet::new();
    let mut failures = Vec::new();
    for row in rows {
        let name = name(row);
        assert!(names.insert(name), "two rows are named {name:?}");
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(row))) {
            Ok(None) => {}
            Ok(Some(why)) => failures.push(format!("{name}: {why}")),
            Err(panic) => failures.push(format!("{name}: panicked: {}", panic_text(&*panic))),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n- {}",
        failures.len(),
        rows.len(),
        failures.join("\n- ")
    );
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(not a string)")
}

/// A child process killed when the guard drops, so a test that fails half
/// way does not leave its `tollgate dev` or `serve` running (and eating the
/// machine) after the test binary ends. Derefs to the `Child`.
pub struct KillOnDrop(pub std::process::Child);

impl std::ops::Deref for KillOnDrop {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // Already exited (the test stopped it): nothing to do. Otherwise
        // kill and reap; errors here can only mean it is gone already.
        if matches!(self.0.try_wait(), Ok(None)) && self.0.kill().is_ok() {
            let _reaped = self.0.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Long enough to poll a few times; what the tests wait on never holds
    /// or holds at once, so nothing here races the clock.
    const SHORT: Duration = Duration::from_millis(30);

    /// A condition that holds on its `at`-th look and reports each earlier
    /// look as `Err("look n")`.
    fn holds_at(at: u32) -> impl FnMut() -> Result<u32, String> {
        let mut looks = 0;
        move || {
            looks += 1;
            if looks >= at {
                Ok(looks)
            } else {
                Err(format!("look {looks}"))
            }
        }
    }

    #[tokio::test]
    async fn a_condition_that_comes_to_hold_returns_its_value() {
        let mut condition = holds_at(3);
        let value = wait_until("the third look", Duration::from_secs(20), || {
            std::future::ready(condition())
        })
        .await
        .unwrap();
        assert_eq!(value, 3);
        let value =
            wait_until_blocking("the third look", Duration::from_secs(20), holds_at(3)).unwrap();
        assert_eq!(value, 3);
    }

    #[tokio::test]
    async fn a_timeout_names_what_the_deadline_and_the_last_thing_seen() {
        let mut condition = holds_at(u32::MAX);
        let error = wait_until("the impossible", SHORT, || std::future::ready(condition()))
            .await
            .unwrap_err()
            .to_string();
        let blocking = wait_until_blocking("the impossible", SHORT, holds_at(u32::MAX))
            .unwrap_err()
            .to_string();
        for error in [error, blocking] {
            assert!(
                error.starts_with(
                    "timed out after 30ms waiting for the impossible; last saw: look "
                ),
                "{error}"
            );
            let look: u32 = error.rsplit(' ').next().unwrap().parse().unwrap();
            assert!(
                look > 1,
                "the last look is reported, not the first: {error}"
            );
        }
    }

    #[tokio::test]
    async fn an_option_condition_times_out_without_a_last_sight() {
        let error = wait_until("nothing", SHORT, || async { None::<()> })
            .await
            .unwrap_err()
            .to_string();
        let blocking = wait_until_blocking("nothing", SHORT, || None::<()>)
            .unwrap_err()
            .to_string();
        for error in [error, blocking] {
            assert_eq!(error, "timed out after 30ms waiting for nothing");
        }
    }

    /// A look that either says what it saw or says nothing.
    enum Look {
        Saw(String),
        Nothing,
    }

    impl Seen<()> for Look {
        fn seen(self) -> Result<(), Option<String>> {
            match self {
                Look::Saw(what) => Err(Some(what)),
                Look::Nothing => Err(None),
            }
        }
    }

    #[test]
    fn a_look_that_says_nothing_keeps_the_last_thing_seen() {
        let mut looks = 0;
        let error = wait_until_blocking("a sighting", SHORT, || {
            looks += 1;
            if looks == 1 {
                Look::Saw("the first look".into())
            } else {
                Look::Nothing
            }
        })
        .unwrap_err()
        .to_string();
        assert_eq!(
            error,
            "timed out after 30ms waiting for a sighting; last saw: the first look"
        );
    }

    #[test]
    fn a_table_reports_every_failing_row_by_name() {
        let rows = [("fine", 1), ("wrong", 2), ("panics", 3), ("also wrong", 4)];
        let failed = std::panic::catch_unwind(|| {
            check_rows(
                &rows,
                |(name, _)| name,
                |(_, n)| match n {
                    3 => panic!("row three blew up"),
                    n if n % 2 == 0 => Some(format!("expected odd, got {n}")),
                    _ => None,
                },
            )
        })
        .expect_err("two rows answered otherwise and one panicked");
        let message = failed
            .downcast_ref::<String>()
            .expect("an assertion message");
        assert!(message.starts_with("3 of 4 rows failed"), "{message}");
        for part in [
            "wrong: expected odd, got 2",
            "panics: panicked: row three blew up",
            "also wrong: expected odd, got 4",
        ] {
            assert!(message.contains(part), "{part:?} in {message}");
        }
        assert!(!message.contains("fine"), "{message}");
    }
}
