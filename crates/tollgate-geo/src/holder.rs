//! The databases a node serves from, swapped without stopping lookups.

use std::future::Future;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};
use tollgate_clock::Clock;

use arc_swap::ArcSwap;
use serde::Serialize;
use tokio::task::JoinHandle;
use tollgate_model::GeoFacts;
use tracing::{info, warn};

use crate::database::{resolve_with, DatabaseInfo, DatabaseKind, GeoDatabase};
use crate::{GeoError, FILE_SIZE_BYTES_MAX_DEFAULT};

/// Shortest poll interval the watcher accepts; a zero interval from a
/// config typo would otherwise spin on the file system.
pub const WATCH_INTERVAL_MS_MIN: u64 = 10;

/// Where the databases live and how big they may be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeoConfig {
    /// A GeoIP2/GeoLite2 City or Country database. Required.
    pub location_path: PathBuf,
    /// MaxMind's Anonymous IP database. Without it every lookup reports
    /// `anonymous: None` (unknown).
    pub anonymous_path: Option<PathBuf>,
    /// Most bytes one file may hold; a bigger file is refused.
    pub file_size_bytes_max: u64,
    /// When a refused reload happened is read from it.
    pub clock: Clock,
}

impl GeoConfig {
    pub fn new(location_path: impl Into<PathBuf>) -> Self {
        GeoConfig {
            location_path: location_path.into(),
            anonymous_path: None,
            file_size_bytes_max: FILE_SIZE_BYTES_MAX_DEFAULT,
            clock: Clock::system(),
        }
    }

    pub fn with_anonymous(mut self, path: impl Into<PathBuf>) -> Self {
        self.anonymous_path = Some(path.into());
        self
    }

    pub fn with_file_size_bytes_max(mut self, size_bytes_max: u64) -> Self {
        self.file_size_bytes_max = size_bytes_max;
        self
    }
}

/// One consistent pair of databases. Lookups load the current pair once,
/// so a reload between the location and the anonymous lookup cannot mix
/// two generations.
#[derive(Debug, Clone)]
pub struct GeoResolver {
    location: Arc<GeoDatabase>,
    anonymous: Option<Arc<GeoDatabase>>,
}

impl GeoResolver {
    pub fn new(location: Arc<GeoDatabase>, anonymous: Option<Arc<GeoDatabase>>) -> Self {
        debug_assert_eq!(location.kind(), DatabaseKind::Location);
        debug_assert!(anonymous
            .as_ref()
            .is_none_or(|db| db.kind() == DatabaseKind::AnonymousIp));
        GeoResolver {
            location,
            anonymous,
        }
    }

    /// Turns `ip` into [`GeoFacts`]. An address the location database does
    /// not list has an unknown location; `anonymous` is `None` without an
    /// anonymous database and `Some(default)` for an address it does not
    /// list. An error concerns this address only.
    pub fn resolve(&self, ip: IpAddr) -> Result<GeoFacts, GeoError> {
        resolve_with(&self.location, self.anonymous.as_deref(), ip)
    }

    pub fn location(&self) -> &GeoDatabase {
        &self.location
    }

    pub fn anonymous(&self) -> Option<&GeoDatabase> {
        self.anonymous.as_deref()
    }
}

/// What a reload did with one slot.
#[derive(Debug)]
pub enum SlotReload {
    /// The file looks as it did at the last check (same size, modification
    /// time and inode), or the slot has no file.
    Unchanged,
    /// A new, valid database is now in service.
    Reloaded(DatabaseInfo),
    /// The file changed but was refused; the previous database stays.
    Rejected(GeoError),
}

/// What one [`GeoDatabases::reload_if_changed`] did.
#[derive(Debug)]
pub struct ReloadReport {
    pub location: SlotReload,
    /// `None` when no anonymous database is configured.
    pub anonymous: Option<SlotReload>,
}

impl ReloadReport {
    pub fn reloaded_count(&self) -> usize {
        self.slots()
            .filter(|s| matches!(s, SlotReload::Reloaded(_)))
            .count()
    }

    pub fn rejected_count(&self) -> usize {
        self.slots()
            .filter(|s| matches!(s, SlotReload::Rejected(_)))
            .count()
    }

    fn slots(&self) -> impl Iterator<Item = &SlotReload> {
        std::iter::once(&self.location).chain(self.anonymous.as_ref())
    }
}

/// The last time a file was refused, for health output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoadFailure {
    /// A stable code from [`GeoError::reason`].
    pub reason: &'static str,
    pub message: String,
    pub at_unix_seconds: u64,
}

/// Health of one slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SlotHealth {
    pub kind: DatabaseKind,
    /// The watched file, if the slot was loaded from one.
    pub path: Option<PathBuf>,
    /// The database in service.
    pub database_type: String,
    pub build_epoch_seconds: u64,
    pub size_bytes: u64,
    /// The most recent refusal of this slot's file, cleared by the next
    /// successful load.
    pub last_error: Option<LoadFailure>,
}

/// Health of the geography layer, for `/healthz` and `ctl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GeoHealth {
    pub location: SlotHealth,
    pub anonymous: Option<SlotHealth>,
    pub reloads_total: u64,
    pub reload_failures_total: u64,
}

/// The file's identity at one check. Size, modification time and inode
/// (on Unix, also the change time) are enough to notice both an in-place
/// rewrite and the recommended atomic rename, without hashing a large file
/// on every poll.
#[derive(Debug, Clone, PartialEq, Eq)]
enum FileStamp {
    Present {
        size_bytes: u64,
        modified: Option<SystemTime>,
        inode: u64,
        changed_ns: i128,
    },
    /// Could not stat the file; the kind is kept so that a new kind of
    /// failure is reported once, not on every poll.
    Unreadable(std::io::ErrorKind),
}

impl FileStamp {
    fn of(path: &Path) -> (FileStamp, Option<std::io::Error>) {
        match std::fs::metadata(path) {
            Ok(meta) => {
                #[cfg(unix)]
                let (inode, changed_ns) = {
                    use std::os::unix::fs::MetadataExt;
                    (
                        meta.ino(),
                        i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
                    )
                };
                #[cfg(not(unix))]
                let (inode, changed_ns) = (0, 0);
                (
                    FileStamp::Present {
                        size_bytes: meta.len(),
                        modified: meta.modified().ok(),
                        inode,
                        changed_ns,
                    },
                    None,
                )
            }
            Err(error) => (FileStamp::Unreadable(error.kind()), Some(error)),
        }
    }
}

#[derive(Debug)]
struct Slot {
    kind: DatabaseKind,
    path: Option<PathBuf>,
    state: Mutex<SlotState>,
}

#[derive(Debug, Default)]
struct SlotState {
    /// The stamp of the file version last tried, good or bad, so a bad
    /// file is reported once and retried only when it changes.
    seen: Option<FileStamp>,
    last_error: Option<LoadFailure>,
}

impl Slot {
    fn new(kind: DatabaseKind, path: Option<PathBuf>, seen: Option<FileStamp>) -> Self {
        Slot {
            kind,
            path,
            state: Mutex::new(SlotState {
                seen,
                last_error: None,
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, SlotState> {
        // The state is two plain fields; a panic elsewhere cannot leave them
        // half-written, so a poisoned lock is still usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn health(&self, db: &GeoDatabase) -> SlotHealth {
        let info = db.info();
        SlotHealth {
            kind: self.kind,
            path: self.path.clone(),
            database_type: info.database_type.clone(),
            build_epoch_seconds: info.build_epoch_seconds,
            size_bytes: info.size_bytes,
            last_error: self.state().last_error.clone(),
        }
    }
}

/// The databases a node resolves addresses with, hot-swappable.
///
/// Lookups take no lock: they load the current [`GeoResolver`] through an
/// `ArcSwap` (a few atomic operations) and never wait for a reload, which
/// reads and validates the new file before a single pointer store makes it
/// visible.
#[derive(Debug)]
pub struct GeoDatabases {
    current: ArcSwap<GeoResolver>,
    location: Slot,
    anonymous: Option<Slot>,
    file_size_bytes_max: u64,
    clock: Clock,
    /// Serialises reloads, so two callers cannot both swap a slot and lose
    /// one another's update. Lookups never touch it.
    reload_lock: Mutex<()>,
    reloads_total: AtomicU64,
    reload_failures_total: AtomicU64,
}

impl GeoDatabases {
    /// Loads and validates the configured files. Any refusal is an error:
    /// a node must not start with a geo database it cannot trust.
    pub fn open(config: &GeoConfig) -> Result<Self, GeoError> {
        let size_bytes_max = config.file_size_bytes_max;
        let (location_stamp, _) = FileStamp::of(&config.location_path);
        let location = GeoDatabase::open(
            DatabaseKind::Location,
            &config.location_path,
            size_bytes_max,
        )?;
        let (anonymous, anonymous_slot) = match &config.anonymous_path {
            Some(path) => {
                let (stamp, _) = FileStamp::of(path);
                let db = GeoDatabase::open(DatabaseKind::AnonymousIp, path, size_bytes_max)?;
                (
                    Some(Arc::new(db)),
                    Some(Slot::new(
                        DatabaseKind::AnonymousIp,
                        Some(path.clone()),
                        Some(stamp),
                    )),
                )
            }
            None => (None, None),
        };
        let holder = GeoDatabases {
            current: ArcSwap::from_pointee(GeoResolver::new(Arc::new(location), anonymous)),
            location: Slot::new(
                DatabaseKind::Location,
                Some(config.location_path.clone()),
                Some(location_stamp),
            ),
            anonymous: anonymous_slot,
            file_size_bytes_max: size_bytes_max,
            clock: config.clock.clone(),
            reload_lock: Mutex::new(()),
            reloads_total: AtomicU64::new(0),
            reload_failures_total: AtomicU64::new(0),
        };
        let health = holder.health();
        info!(
            location_type = %health.location.database_type,
            location_build_epoch_seconds = health.location.build_epoch_seconds,
            anonymous_type = health.anonymous.as_ref().map(|a| a.database_type.as_str()),
            "Loaded geo databases."
        );
        Ok(holder)
    }

    /// Serves already-validated databases that no file backs (the demo
    /// geography of `tollgate dev`, tests). Reloads do nothing.
    pub fn from_databases(
        location: GeoDatabase,
        anonymous: Option<GeoDatabase>,
    ) -> Result<Self, GeoError> {
        for (db, kind) in [
            (Some(&location), DatabaseKind::Location),
            (anonymous.as_ref(), DatabaseKind::AnonymousIp),
        ] {
            if let Some(db) = db {
                if db.kind() != kind {
                    return Err(GeoError::WrongType {
                        origin: db.info().origin.clone(),
                        expected: kind.expected(),
                        found: db.info().database_type.clone(),
                    });
                }
            }
        }
        let anonymous_slot = anonymous
            .as_ref()
            .map(|_| Slot::new(DatabaseKind::AnonymousIp, None, None));
        Ok(GeoDatabases {
            current: ArcSwap::from_pointee(GeoResolver::new(
                Arc::new(location),
                anonymous.map(Arc::new),
            )),
            location: Slot::new(DatabaseKind::Location, None, None),
            anonymous: anonymous_slot,
            file_size_bytes_max: FILE_SIZE_BYTES_MAX_DEFAULT,
            clock: Clock::system(),
            reload_lock: Mutex::new(()),
            reloads_total: AtomicU64::new(0),
            reload_failures_total: AtomicU64::new(0),
        })
    }

    /// Resolves `ip` with the databases in service now.
    pub fn resolve(&self, ip: IpAddr) -> Result<GeoFacts, GeoError> {
        self.current.load().resolve(ip)
    }

    /// The current pair, to resolve a batch against one generation.
    pub fn resolver(&self) -> Arc<GeoResolver> {
        self.current.load_full()
    }

    /// Reloads every file that changed since it was last tried. A new file
    /// is read and validated completely before it replaces the old one; a
    /// refused file leaves the old database in service, logs a WARN, counts
    /// in [`Self::reload_failures_total`] and shows in [`Self::health`].
    ///
    /// Blocking (file I/O and verification): call it from a blocking
    /// thread, as [`spawn_watcher`] does.
    pub fn reload_if_changed(&self) -> ReloadReport {
        let _reloading = self
            .reload_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let location = self.reload_slot(&self.location);
        let anonymous = self.anonymous.as_ref().map(|slot| self.reload_slot(slot));
        ReloadReport {
            location,
            anonymous,
        }
    }

    fn reload_slot(&self, slot: &Slot) -> SlotReload {
        let Some(path) = &slot.path else {
            return SlotReload::Unchanged;
        };
        let (stamp, stat_error) = FileStamp::of(path);
        if slot.state().seen.as_ref() == Some(&stamp) {
            return SlotReload::Unchanged;
        }
        let loaded = match stat_error {
            Some(source) => Err(GeoError::Io {
                path: path.clone(),
                source,
            }),
            None => GeoDatabase::open(slot.kind, path, self.file_size_bytes_max),
        };
        let mut state = slot.state();
        state.seen = Some(stamp);
        match loaded {
            Ok(db) => {
                let db = Arc::new(db);
                let info = db.info().clone();
                // Only reloads write `current`, and they hold reload_lock,
                // so this read-modify-write cannot race another one.
                let old = self.current.load_full();
                let next = match slot.kind {
                    DatabaseKind::Location => GeoResolver::new(db, old.anonymous.clone()),
                    DatabaseKind::AnonymousIp => GeoResolver::new(old.location.clone(), Some(db)),
                };
                self.current.store(Arc::new(next));
                state.last_error = None;
                self.reloads_total.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("tollgate_geo_reloads_total", "kind" => slot.kind.as_str())
                    .increment(1);
                info!(
                    kind = %slot.kind,
                    path = %path.display(),
                    database_type = %info.database_type,
                    build_epoch_seconds = info.build_epoch_seconds,
                    "Reloaded geo database."
                );
                SlotReload::Reloaded(info)
            }
            Err(error) => {
                self.reload_failures_total.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(
                    "tollgate_geo_reload_failures_total",
                    "kind" => slot.kind.as_str(),
                    "reason" => error.reason()
                )
                .increment(1);
                warn!(
                    kind = %slot.kind,
                    path = %path.display(),
                    reason = error.reason(),
                    %error,
                    "Refused changed geo database; keeping the one in service."
                );
                state.last_error = Some(LoadFailure {
                    reason: error.reason(),
                    message: error.to_string(),
                    at_unix_seconds: u64::try_from(self.clock.now_secs()).unwrap_or(0),
                });
                SlotReload::Rejected(error)
            }
        }
    }

    /// Files refused by reloads since start (`tollgate_geo_reload_failures_total`).
    pub fn reload_failures_total(&self) -> u64 {
        self.reload_failures_total.load(Ordering::Relaxed)
    }

    /// Files swapped in by reloads since start (`tollgate_geo_reloads_total`).
    pub fn reloads_total(&self) -> u64 {
        self.reloads_total.load(Ordering::Relaxed)
    }

    pub fn health(&self) -> GeoHealth {
        let current = self.current.load();
        GeoHealth {
            location: self.location.health(&current.location),
            anonymous: match (&self.anonymous, &current.anonymous) {
                (Some(slot), Some(db)) => Some(slot.health(db)),
                _ => None,
            },
            reloads_total: self.reloads_total(),
            reload_failures_total: self.reload_failures_total(),
        }
    }
}

/// Polls the files every `interval` (at least [`WATCH_INTERVAL_MS_MIN`])
/// and reloads those that changed, until `shutdown` completes. The file
/// work runs on tokio's blocking pool, so it never stalls the runtime.
pub fn spawn_watcher<F>(
    holder: Arc<GeoDatabases>,
    interval: Duration,
    shutdown: F,
) -> JoinHandle<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let interval = interval.max(Duration::from_millis(WATCH_INTERVAL_MS_MIN));
    tokio::spawn(async move {
        tokio::pin!(shutdown);
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick fires at once; the files were just loaded.
        ticker.tick().await;
        info!(
            interval_ms = interval.as_millis() as u64,
            "Started geo database watcher."
        );
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                _ = ticker.tick() => {
                    let holder = Arc::clone(&holder);
                    if let Err(error) = tokio::task::spawn_blocking(move || holder.reload_if_changed()).await {
                        warn!(%error, "Geo database reload task failed.");
                    }
                }
            }
        }
        info!("Stopped geo database watcher.");
    })
}
