//! Replays every checked-in fuzz input through its target: the seed corpus
//! (`fuzz/corpus/<target>/`) and every crash found so far
//! (`fuzz/regressions/<target>/`), so a fixed crash stays fixed in the
//! default `cargo test`. Fails naming each file whose target panicked, each
//! target without a corpus directory (a new target needs seeds) and each
//! corpus, regression or libFuzzer target that names no target.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use tollgate_fuzz::TARGETS;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.expect("a directory entry").path())
            .filter(|p| p.is_file())
            .collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    files
}

fn names(dir: &Path) -> Vec<String> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.expect("a directory entry").path())
            .filter_map(|p| Some(p.file_stem()?.to_str()?.to_owned()))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// The message and place of the last panic, kept by the hook below.
static LAST_PANIC: Mutex<Option<String>> = Mutex::new(None);

#[test]
fn every_corpus_and_regression_input_passes_its_target() {
    let fuzz = fuzz_dir();
    // Panics are expected to be caught and reported per file, not printed
    // as they happen.
    std::panic::set_hook(Box::new(|info| {
        *LAST_PANIC.lock().unwrap_or_else(|e| e.into_inner()) = Some(info.to_string());
    }));
    let mut failures = Vec::new();
    let mut replayed = 0;
    for (name, target) in TARGETS {
        let corpus = fuzz.join("corpus").join(name);
        if files(&corpus).is_empty() {
            failures.push(format!(
                "{name}: no seeds in {} (generate them: TOLLGATE_UPDATE_FUZZ_CORPUS=1 cargo test -p tollgate-fuzz --test corpus)",
                corpus.display()
            ));
        }
        if !fuzz
            .join("fuzz_targets")
            .join(format!("{name}.rs"))
            .is_file()
        {
            failures.push(format!("{name}: no fuzz/fuzz_targets/{name}.rs"));
        }
        for file in files(&corpus)
            .into_iter()
            .chain(files(&fuzz.join("regressions").join(name)))
        {
            let bytes = std::fs::read(&file).expect("read a fuzz input");
            replayed += 1;
            if std::panic::catch_unwind(|| target(&bytes)).is_err() {
                let panic = LAST_PANIC
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take()
                    .unwrap_or_default();
                failures.push(format!(
                    "{name}: {} failed: {panic}\n  reproduce: cargo test -p tollgate-fuzz --test replay, or fuzz/run.sh's `cargo fuzz run {name} --sanitizer none {}`",
                    file.display(),
                    file.display()
                ));
            }
        }
    }
    let _ = std::panic::take_hook();
    let known: Vec<&str> = TARGETS.iter().map(|(name, _)| *name).collect();
    for dir in ["corpus", "regressions", "fuzz_targets"] {
        for name in names(&fuzz.join(dir)) {
            if !known.contains(&name.as_str()) {
                failures.push(format!(
                    "fuzz/{dir}/{name}: not a target in tollgate_fuzz::TARGETS"
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {replayed} fuzz inputs or targets failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
