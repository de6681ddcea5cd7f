//! The simulation as part of `cargo test`: a bounded number of seeds, the
//! seeds that once found a bug, and the proof that a seed replays exactly.
//!
//! `TOLLGATE_SIM_SEEDS` (default 50) and `TOLLGATE_SIM_FAULT_SECONDS`
//! (default 5) size the run; `cargo run --release -p tollgate-sim -- many`
//! runs thousands.

use tollgate_sim::{run, Options};

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a whole number")),
        Err(_) => default,
    }
}

fn assert_passes(options: &Options) {
    let outcome = run(options);
    assert!(
        outcome.passed(),
        "seed {} broke an invariant: {:?}\nthe last events:\n{}\nreplay: {}",
        options.seed,
        outcome.violations,
        outcome.history[outcome.history.len().saturating_sub(40)..].join("\n"),
        options.replay_command()
    );
    assert!(
        outcome.acknowledged > 0 && outcome.faults > 0,
        "seed {} proved nothing: {} writes acknowledged, {} faults",
        options.seed,
        outcome.acknowledged,
        outcome.faults
    );
}

#[test]
fn bounded_seeds_keep_every_acknowledged_write() {
    let seeds = env_u64("TOLLGATE_SIM_SEEDS", 50);
    let fault_seconds = env_u64("TOLLGATE_SIM_FAULT_SECONDS", 5);
    for seed in 1..=seeds {
        assert_passes(&Options {
            fault_seconds,
            ..Options::seed(seed)
        });
    }
}

/// Seeds that once broke an invariant, one per line of
/// `regressions.txt` (`seed fault_seconds writers nodes  # what it found`),
/// each fixed since.
#[test]
fn seeds_that_found_bugs_stay_fixed() {
    let text = include_str!("../regressions.txt");
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let numbers: Vec<u64> = line
            .split_whitespace()
            .map(|n| n.parse().expect("regressions.txt holds numbers"))
            .collect();
        let [seed, fault_seconds, writers, nodes] = numbers[..] else {
            panic!("regressions.txt: {line:?} is not `seed fault_seconds writers nodes`");
        };
        assert_passes(&Options {
            seed,
            fault_seconds,
            writers: writers as usize,
            nodes: nodes as usize,
        });
    }
}

#[test]
fn one_seed_replays_the_same_history() {
    let options = Options {
        fault_seconds: 8,
        ..Options::seed(7)
    };
    let first = run(&options);
    let second = run(&options);
    assert!(first.faults > 0, "the run injected no fault");
    assert_eq!(
        first.history.len(),
        second.history.len(),
        "two runs of seed 7 saw different numbers of events"
    );
    for (a, b) in first.history.iter().zip(&second.history) {
        assert_eq!(a, b, "two runs of seed 7 diverged");
    }
    let other = run(&Options {
        seed: 8,
        ..options.clone()
    });
    assert_ne!(
        first.history, other.history,
        "seeds 7 and 8 ran the same history: the seed steers nothing"
    );
}
