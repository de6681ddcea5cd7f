//! Helpers shared by the integration tests.
#![allow(dead_code)] // Each test binary uses a different subset.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use tollgate_model::{Continent, CountryCode, GeoFacts, SubdivisionCode};

/// Routes `tracing` output to the test harness, once per binary.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .try_init();
}

pub fn ip(text: &str) -> IpAddr {
    text.parse().expect("test address")
}

/// The `GeoFacts` location part from codes, for table rows.
pub fn location(country: &str, continent: &str, subdivisions: &[&str]) -> GeoFacts {
    let country = CountryCode::new(country).expect("test country");
    GeoFacts {
        country: Some(country),
        continent: Some(Continent::from_code(continent).expect("test continent")),
        subdivisions: subdivisions
            .iter()
            .map(|s| SubdivisionCode::from_parts(country, s).expect("test subdivision"))
            .collect(),
        anonymous: None,
    }
}

/// Writes `bytes` next to `path` and renames it into place, as a deploy
/// tool should, so a reader never sees half a file.
pub fn replace_file(path: &Path, bytes: &[u8]) {
    let staging = path.with_extension("staging");
    std::fs::write(&staging, bytes).expect("write staging file");
    std::fs::rename(&staging, path).expect("rename into place");
}

/// `shared/geoip/` if it exists: `$TOLLGATE_SHARED_DIR/geoip`, else the
/// `shared/` beside the repository checkout.
pub fn shared_geoip_dir() -> Option<PathBuf> {
    let shared = match std::env::var_os("TOLLGATE_SHARED_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared"),
    };
    let geoip = shared.join("geoip");
    geoip.is_dir().then_some(geoip)
}
