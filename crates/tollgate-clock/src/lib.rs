//! The wall clock, read in one place and handed to whoever needs it.
//!
//! Every node, service and tool takes a [`Clock`] from outside (a node from
//! its config) instead of reading the system clock itself: a deployment
//! hands it [`Clock::system`], a deterministic simulation a clock driven by
//! its own time (and skewed per host on purpose), a test a [`Clock::fixed`]
//! instant. Proposers stamp what it reads into commands; apply functions,
//! the engine and the model never read a clock.
//!
//! `tests/one_clock.rs` fails when any other crate reads `SystemTime::now`.
//!
//! Random bytes come from one place too ([`random`]), for the same reason.

pub mod random;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tollgate_model::UnixSeconds;

type Read = dyn Fn() -> Option<Duration> + Send + Sync;

/// A source of wall-clock time. Cheap to clone; every clone reads the same
/// source.
#[derive(Clone, Default)]
pub struct Clock {
    /// `None`: the system clock.
    read: Option<Arc<Read>>,
}

impl Clock {
    /// The operating system's wall clock.
    pub fn system() -> Clock {
        Clock { read: None }
    }

    /// A clock that reads `read`: the time since the Unix epoch, `None`
    /// for a moment before it (read as 0, see [`Clock::now`]).
    pub fn from_fn(read: impl Fn() -> Option<Duration> + Send + Sync + 'static) -> Clock {
        Clock {
            read: Some(Arc::new(read)),
        }
    }

    /// A clock that always reads `at`.
    pub fn fixed(at: UnixSeconds) -> Clock {
        Clock::from_fn(move || u64::try_from(at.0).ok().map(Duration::from_secs))
    }

    /// Whether this is the operating system's clock.
    pub fn is_system(&self) -> bool {
        self.read.is_none()
    }

    /// The time since the Unix epoch; `None` before it.
    pub fn since_epoch(&self) -> Option<Duration> {
        match &self.read {
            None => SystemTime::now().duration_since(UNIX_EPOCH).ok(),
            Some(read) => read(),
        }
    }

    /// The time as a `SystemTime` (for APIs that want one: certificate
    /// validity, HTTP dates). A moment before 1970 reads as the epoch.
    pub fn system_time(&self) -> SystemTime {
        UNIX_EPOCH + self.since_epoch().unwrap_or(Duration::ZERO)
    }

    /// The time in Unix seconds. A clock before 1970 reads as 0, which every
    /// staleness check treats as "long ago" (fails closed).
    pub fn now(&self) -> UnixSeconds {
        UnixSeconds(
            self.since_epoch()
                .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
                .unwrap_or(0),
        )
    }

    /// [`Clock::now`] as plain seconds, for code below the model (TLS
    /// certificate expiry and reloads).
    pub fn now_secs(&self) -> i64 {
        self.now().0
    }

    /// [`Clock::now`] in milliseconds since the epoch (0 before it).
    pub fn now_millis(&self) -> u64 {
        self.since_epoch()
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }
}

/// Two clocks are equal when they read the same source: both the system's,
/// or clones of one [`Clock::from_fn`].
impl PartialEq for Clock {
    fn eq(&self, other: &Clock) -> bool {
        match (&self.read, &other.read) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Eq for Clock {}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.read {
            None => f.write_str("Clock::system"),
            Some(_) => write!(f, "Clock::from_fn(now = {})", self.now().0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicI64, Ordering};

    #[test]
    fn the_system_clock_reads_after_the_crate_was_written() {
        // 2026-01-01: any machine running this is later.
        assert!(Clock::system().now().0 > 1_767_225_600);
        assert!(Clock::default().is_system());
    }

    #[test]
    fn a_given_clock_is_read_by_every_clone_and_before_1970_reads_zero() {
        let offset = Arc::new(AtomicI64::new(1_000));
        let read = offset.clone();
        let clock = Clock::from_fn(move || {
            u64::try_from(read.load(Ordering::SeqCst))
                .ok()
                .map(Duration::from_secs)
        });
        let clone = clock.clone();
        assert_eq!(clone.now(), UnixSeconds(1_000));
        offset.store(2_500, Ordering::SeqCst);
        assert_eq!(clock.now(), UnixSeconds(2_500));
        assert_eq!(clone.now_millis(), 2_500_000);
        assert_eq!(clone.system_time(), UNIX_EPOCH + Duration::from_secs(2_500));
        offset.store(-5, Ordering::SeqCst);
        assert_eq!(clock.now(), UnixSeconds(0), "fails closed: long ago");
        assert_eq!(clock.system_time(), UNIX_EPOCH);
        assert_eq!(Clock::fixed(UnixSeconds(-1)).now(), UnixSeconds(0));
        assert_eq!(Clock::fixed(UnixSeconds(42)).now_secs(), 42);
        assert_eq!(clock, clone, "clones read one source");
        assert_ne!(clock, Clock::fixed(UnixSeconds(42)));
        assert_ne!(clock, Clock::system());
    }
}
