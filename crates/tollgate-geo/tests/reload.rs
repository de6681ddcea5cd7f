//! Hot reload: a changed good file is swapped in, a changed bad file is
//! refused and the database in service stays.

mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{init_tracing, ip, location, replace_file};
use tollgate_geo::fixtures::{self, FixturePlace};
use tollgate_geo::{spawn_watcher, GeoConfig, GeoDatabases, GeoError, SlotReload};
use tollgate_model::{AnonymousNetwork, CountryCode};
use tollgate_testkit::{wait_until, wait_until_blocking};
use tracing::info;

const DEADLINE: Duration = Duration::from_secs(20);

/// A City database that puts all of 192.0.2.0/24 in `country` (and the
/// probe anchor in London, so that it loads).
fn city(country: &str, continent: &str) -> Vec<u8> {
    fixtures::location_db(
        "GeoIP2-City",
        1_700_000_000,
        &[
            (
                "192.0.2.0/24",
                FixturePlace {
                    country,
                    continent,
                    subdivisions: &[],
                    city: None,
                },
            ),
            fixtures::PROBE_ANCHOR,
        ],
    )
    .unwrap()
}

fn anonymous(vpn: bool, tor_exit_node: bool) -> Vec<u8> {
    let flags = AnonymousNetwork {
        vpn,
        tor_exit_node,
        ..AnonymousNetwork::default()
    };
    fixtures::anonymous_ip_db(
        "GeoIP2-Anonymous-IP",
        1_700_000_000,
        &[("192.0.2.0/24", flags)],
    )
    .unwrap()
}

struct Files {
    _dir: tempfile::TempDir,
    city: PathBuf,
    anonymous: PathBuf,
}

fn files() -> Files {
    let dir = tempfile::tempdir().unwrap();
    let city_path = dir.path().join("GeoIP2-City.mmdb");
    let anonymous_path = dir.path().join("GeoIP2-Anonymous-IP.mmdb");
    std::fs::write(&city_path, city("DE", "EU")).unwrap();
    std::fs::write(&anonymous_path, anonymous(true, false)).unwrap();
    Files {
        _dir: dir,
        city: city_path,
        anonymous: anonymous_path,
    }
}

fn open(files: &Files) -> GeoDatabases {
    GeoDatabases::open(&GeoConfig::new(&files.city).with_anonymous(&files.anonymous)).unwrap()
}

fn country_of(holder: &GeoDatabases, address: &str) -> Option<CountryCode> {
    holder.resolve(ip(address)).unwrap().country
}

fn country(code: &str) -> Option<CountryCode> {
    Some(CountryCode::new(code).unwrap())
}

fn truncated(bytes: Vec<u8>) -> Vec<u8> {
    let half = bytes.len() / 2;
    bytes[..half].to_vec()
}

#[test]
fn reload_swaps_good_files_and_keeps_the_old_database_for_bad_ones() {
    init_tracing();
    let files = files();
    let holder = open(&files);
    assert_eq!(country_of(&holder, "192.0.2.1"), country("DE"));

    info!("Proving an unchanged file is not reloaded.");
    let report = holder.reload_if_changed();
    assert!(
        matches!(report.location, SlotReload::Unchanged),
        "{report:?}"
    );
    assert!(
        matches!(report.anonymous, Some(SlotReload::Unchanged)),
        "{report:?}"
    );

    info!("Proving a new good file replaces the database in service.");
    replace_file(&files.city, &city("FR", "EU"));
    let report = holder.reload_if_changed();
    assert!(
        matches!(report.location, SlotReload::Reloaded(_)),
        "{report:?}"
    );
    assert_eq!(
        holder.resolve(ip("192.0.2.1")).unwrap().continent,
        location("FR", "EU", &[]).continent
    );
    assert_eq!(country_of(&holder, "192.0.2.1"), country("FR"));
    assert_eq!(holder.reloads_total(), 1);

    let bad_files: [(&str, Vec<u8>, &str); 4] = [
        ("truncated", truncated(city("US", "NA")), "GEO_DB_INVALID"),
        ("wrong type", anonymous(false, true), "GEO_DB_WRONG_TYPE"),
        (
            "garbage",
            b"this is not a MaxMind database".to_vec(),
            "GEO_DB_INVALID",
        ),
        ("empty", Vec::new(), "GEO_DB_INVALID"),
    ];
    for (n, (what, bytes, reason)) in bad_files.into_iter().enumerate() {
        info!(what, "Proving a changed but bad file is refused, counted and recorded, and the old database kept.");
        replace_file(&files.city, &bytes);
        let report = holder.reload_if_changed();
        assert!(
            matches!(report.location, SlotReload::Rejected(_)),
            "{what}: {report:?}"
        );
        assert_eq!(report.rejected_count(), 1, "{what}");
        assert_eq!(country_of(&holder, "192.0.2.1"), country("FR"), "{what}");
        assert_eq!(holder.reload_failures_total(), n as u64 + 1, "{what}");
        let health = holder.health();
        let last_error = health.location.last_error.expect("last error recorded");
        assert_eq!(last_error.reason, reason, "{what}: {}", last_error.message);
        assert_eq!(health.location.database_type, "GeoIP2-City");

        info!(
            what,
            "Proving the same bad file is not retried or counted again."
        );
        let report = holder.reload_if_changed();
        assert!(
            matches!(report.location, SlotReload::Unchanged),
            "{what}: {report:?}"
        );
        assert_eq!(holder.reload_failures_total(), n as u64 + 1, "{what}");
    }

    info!("Proving a deleted file is a refused reload, not a lost database.");
    std::fs::remove_file(&files.city).unwrap();
    let report = holder.reload_if_changed();
    assert!(
        matches!(report.location, SlotReload::Rejected(GeoError::Io { .. })),
        "{report:?}"
    );
    assert_eq!(country_of(&holder, "192.0.2.1"), country("FR"));
    assert_eq!(holder.reload_failures_total(), 5);

    info!("Proving a good file after bad ones is taken and clears the last error.");
    std::fs::write(&files.city, city("JP", "AS")).unwrap();
    let report = holder.reload_if_changed();
    assert!(
        matches!(report.location, SlotReload::Reloaded(_)),
        "{report:?}"
    );
    assert_eq!(country_of(&holder, "192.0.2.1"), country("JP"));
    assert_eq!(holder.health().location.last_error, None);
    assert_eq!(holder.reloads_total(), 2);
}

#[test]
fn an_in_place_rewrite_is_noticed() {
    init_tracing();
    info!("Proving a file rewritten in place (not renamed) is reloaded.");
    let files = files();
    let holder = open(&files);
    std::fs::write(&files.city, city("US", "NA")).unwrap();
    let report = holder.reload_if_changed();
    assert!(
        matches!(report.location, SlotReload::Reloaded(_)),
        "{report:?}"
    );
    assert_eq!(country_of(&holder, "192.0.2.1"), country("US"));
}

#[test]
fn the_anonymous_slot_reloads_on_its_own() {
    init_tracing();
    let files = files();
    let holder = open(&files);
    let flags = |h: &GeoDatabases| h.resolve(ip("192.0.2.1")).unwrap().anonymous.unwrap();
    assert!(flags(&holder).vpn);

    info!("Proving a City file put in the anonymous slot's place is refused and the flags kept.");
    replace_file(&files.anonymous, &city("US", "NA"));
    let report = holder.reload_if_changed();
    assert!(
        matches!(report.location, SlotReload::Unchanged),
        "{report:?}"
    );
    assert!(
        matches!(
            report.anonymous,
            Some(SlotReload::Rejected(GeoError::WrongType { .. }))
        ),
        "{report:?}"
    );
    assert!(flags(&holder).vpn);
    assert!(holder.health().anonymous.unwrap().last_error.is_some());
    assert!(holder.health().location.last_error.is_none());

    info!("Proving a good anonymous file is swapped in without touching the location database.");
    replace_file(&files.anonymous, &anonymous(false, true));
    let report = holder.reload_if_changed();
    assert!(
        matches!(report.anonymous, Some(SlotReload::Reloaded(_))),
        "{report:?}"
    );
    let now = flags(&holder);
    assert!(!now.vpn && now.tor_exit_node, "{now:?}");
    assert_eq!(country_of(&holder, "192.0.2.1"), country("DE"));
}

#[test]
fn lookups_keep_answering_while_files_are_swapped() {
    init_tracing();
    info!("Proving concurrent lookups always get an answer from one generation or the other during reloads.");
    let files = files();
    let holder = Arc::new(open(&files));
    let stop = Arc::new(AtomicBool::new(false));
    let lookups = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (holder, stop, lookups) =
                (Arc::clone(&holder), Arc::clone(&stop), Arc::clone(&lookups));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let facts = holder
                        .resolve(ip("192.0.2.1"))
                        .expect("lookup during reload");
                    let code = facts.country.expect("known country");
                    assert!(["DE", "FR"].contains(&code.as_str()), "{code}");
                    lookups.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let (de, fr, bad) = (
        city("DE", "EU"),
        city("FR", "EU"),
        truncated(city("US", "NA")),
    );
    for round in 0..30 {
        let bytes = match round % 3 {
            0 => &fr,
            1 => &bad,
            _ => &de,
        };
        replace_file(&files.city, bytes);
        holder.reload_if_changed();
    }
    wait_until_blocking(
        "the readers to do over 100 lookups",
        DEADLINE,
        || match lookups.load(Ordering::Relaxed) {
            done if done > 100 => Ok(()),
            done => Err(format!("{done} lookups")),
        },
    )
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        reader.join().expect("reader thread");
    }
    assert_eq!(holder.reload_failures_total(), 10);
    assert_eq!(holder.reloads_total(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watcher_picks_up_changes_and_stops_on_shutdown() {
    init_tracing();
    let files = files();
    let holder = Arc::new(open(&files));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let watcher = spawn_watcher(Arc::clone(&holder), Duration::from_millis(20), async {
        let _ = stopped.await;
    });

    info!("Proving the watcher swaps in a changed good file by itself.");
    replace_file(&files.city, &city("US", "NA"));
    wait_until("the watcher to reload the US database", DEADLINE, || {
        std::future::ready(match country_of(&holder, "192.0.2.1") {
            seen if seen == country("US") => Ok(()),
            seen => Err(format!("192.0.2.1 in {seen:?}")),
        })
    })
    .await
    .unwrap();

    info!("Proving the watcher refuses a corrupt file, counts it and keeps the database.");
    replace_file(&files.city, &truncated(city("JP", "AS")));
    wait_until("the watcher to count the corrupt file", DEADLINE, || {
        std::future::ready(match holder.reload_failures_total() {
            1 => Ok(()),
            failures => Err(format!("{failures} reload failures")),
        })
    })
    .await
    .unwrap();
    assert_eq!(country_of(&holder, "192.0.2.1"), country("US"));

    info!("Proving the watcher stops when shutdown completes.");
    stop.send(()).unwrap();
    tokio::time::timeout(DEADLINE, watcher)
        .await
        .expect("watcher stops before the deadline")
        .expect("watcher task does not panic");
}
