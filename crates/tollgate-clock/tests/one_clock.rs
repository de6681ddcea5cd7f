//! The wall clock is read in one place: no crate's code but this one calls
//! `SystemTime::now`, so a simulation (or a test) that hands a node its
//! clock controls every reading of the time that node makes.

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

#[test]
fn no_other_crate_reads_the_system_clock() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("crates/");
    let mut files = Vec::new();
    for entry in std::fs::read_dir(crates).expect("crates/ is readable") {
        let dir = entry.expect("a crate directory").path();
        // The clock itself; and the test kit, whose in-process OIDC
        // provider stands in for an identity provider outside Tollgate,
        // with a clock of its own.
        if dir
            .file_name()
            .is_some_and(|n| n == "tollgate-clock" || n == "tollgate-testkit")
        {
            continue;
        }
        rust_files(&dir.join("src"), &mut files);
    }
    assert!(files.len() > 100, "found only {} files", files.len());
    let readers: Vec<String> = files
        .iter()
        .filter_map(|file| {
            let text = std::fs::read_to_string(file).expect("a readable source file");
            text.contains("SystemTime::now").then(|| {
                file.strip_prefix(crates)
                    .unwrap_or(file)
                    .display()
                    .to_string()
            })
        })
        .collect();
    assert!(
        readers.is_empty(),
        "these read the system clock themselves; take a tollgate_clock::Clock instead: {readers:?}"
    );
}
