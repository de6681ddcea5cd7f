//! Random bytes (key ids, tokens, nonces, salts, keys), drawn in one place:
//! from the operating system (`getrandom`) everywhere, except on a thread
//! where a deterministic simulation seeded a generator ([`seed_thread`]).
//! A simulation runs every node on one thread, so one seed then replays
//! one run down to the ids and keys its nodes draw, and its log with them.
//!
//! Nothing but a simulation seeds a thread: a seeded thread's bytes are as
//! predictable as its seed. `tests/one_clock.rs` fails when another crate
//! calls `getrandom` itself.

use std::cell::RefCell;

use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

thread_local! {
    static SEEDED: RefCell<Option<StdRng>> = const { RefCell::new(None) };
}

/// From now on, the bytes [`fill`] draws on this thread come from `seed`
/// (for a simulation only); `None` returns the thread to the operating
/// system's randomness.
pub fn seed_thread(seed: Option<u64>) {
    SEEDED.with(|rng| *rng.borrow_mut() = seed.map(StdRng::seed_from_u64));
}

/// Fills `dest` with random bytes: the operating system's, or this
/// thread's seeded generator's when a simulation set one.
pub fn fill(dest: &mut [u8]) -> Result<(), getrandom::Error> {
    let seeded = SEEDED.with(|rng| match rng.borrow_mut().as_mut() {
        Some(rng) => {
            rng.fill_bytes(dest);
            true
        }
        None => false,
    });
    match seeded {
        true => Ok(()),
        false => getrandom::fill(dest),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draw() -> [u8; 16] {
        let mut bytes = [0u8; 16];
        fill(&mut bytes).expect("random bytes");
        bytes
    }

    #[test]
    fn a_seed_replays_its_bytes_and_none_returns_to_the_system() {
        seed_thread(Some(7));
        let first = (draw(), draw());
        seed_thread(Some(7));
        let again = (draw(), draw());
        seed_thread(Some(8));
        let other = draw();
        seed_thread(None);
        let system = (draw(), draw());
        assert_eq!(first, again, "one seed, one sequence");
        assert_ne!(first.0, first.1);
        assert_ne!(first.0, other, "another seed, other bytes");
        assert_ne!(system.0, system.1, "the system's bytes");
        assert_ne!(system.0, first.0);
    }

    #[test]
    fn a_seed_holds_on_its_own_thread_only() {
        seed_thread(Some(7));
        let here = draw();
        let there = std::thread::spawn(|| {
            seed_thread(Some(7));
            let seeded = draw();
            seed_thread(None);
            (seeded, draw())
        })
        .join()
        .expect("the other thread");
        seed_thread(None);
        assert_eq!(here, there.0, "the same seed on another thread");
        assert_ne!(there.1, here, "that thread back on the system's bytes");
    }
}
