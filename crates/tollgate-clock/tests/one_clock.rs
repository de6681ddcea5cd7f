//! The wall clock is read in one place: no crate's code but this one calls
//! `SystemTime::now`, so a simulation (or a test) that hands a node its
//! clock controls every reading of the time that node makes. Random bytes
//! likewise come from this crate only.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let path = entry.expect("a readable directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every source file of every crate but this one and the test kit (whose
/// in-process OIDC provider stands in for an identity provider outside
/// Tollgate, with a clock and randomness of its own), with its path under
/// `crates/`, whose text contains `needle`.
fn files_containing(needle: &str) -> Vec<String> {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("crates/");
    let mut files = Vec::new();
    for entry in std::fs::read_dir(crates).expect("crates/ is readable") {
        let dir = entry.expect("a crate directory").path();
        if dir
            .file_name()
            .is_some_and(|n| n == "tollgate-clock" || n == "tollgate-testkit")
        {
            continue;
        }
        rust_files(&dir.join("src"), &mut files);
    }
    assert!(files.len() > 100, "found only {} files", files.len());
    files
        .iter()
        .filter_map(|file| {
            let text = std::fs::read_to_string(file).expect("a readable source file");
            text.contains(needle).then(|| {
                file.strip_prefix(crates)
                    .unwrap_or(file)
                    .display()
                    .to_string()
            })
        })
        .collect()
}

#[test]
fn no_other_crate_reads_the_system_clock() {
    let readers = files_containing("SystemTime::now");
    assert!(
        readers.is_empty(),
        "these read the system clock themselves; take a tollgate_clock::Clock instead: {readers:?}"
    );
}

/// Random bytes come from `tollgate_clock::random`, which a simulation
/// seeds: a crate drawing from `getrandom` itself would make one seed's
/// runs differ.
#[test]
fn no_other_crate_draws_random_bytes_itself() {
    let drawers = files_containing("getrandom::");
    assert!(
        drawers.is_empty(),
        "these draw random bytes themselves; call tollgate_clock::random::fill instead: {drawers:?}"
    );
}
