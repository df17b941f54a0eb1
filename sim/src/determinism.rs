//! The determinism self-check: the same scenario and seed must give the same history, byte for
//! byte, however often and in whichever process it runs. A run is compared with a rerun by trace
//! hash; when the hashes differ, `imsim_history::divergence` finds the first history record that
//! differs, which is where a person starts looking (a `HashMap` iterated, a `select!` without
//! `biased;`, a clock or RNG read outside the seed: MADSIM-NOTES.md lists the traps).

use crate::run::{simulate, Setup};
use crate::scenario::Scenario;
pub use imsim_history::divergence::{first_divergence, Divergence};
use imsim_history::History;

/// Runs the seed again in this process, from scratch (setup derivation included), and returns
/// the new history for comparison with the first run's.
pub fn rerun(scenario: &Scenario, seed: u64) -> History {
    simulate(&Setup::new(scenario, seed))
}

/// Whether `seed` is one that `imsim run` reruns to check determinism when it checks every
/// `every`-th seed (0: none). Chosen by the seed's value, not its position in the sweep, so a
/// seed is checked or not whatever the range or shard it is run in.
pub fn is_sampled(seed: u64, every: u64) -> bool {
    seed.checked_rem(every) == Some(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use imsim_history::divergence::first_divergence;

    #[test]
    fn sampling_is_by_seed_value() {
        let sampled: Vec<u64> = (0..45).filter(|seed| is_sampled(*seed, 20)).collect();
        assert_eq!(sampled, vec![0, 20, 40]);
        assert!((0..5).all(|seed| is_sampled(seed, 1)));
        assert!((0..5).all(|seed| !is_sampled(seed, 0)));
    }

    #[test]
    fn a_rerun_gives_the_same_history() {
        let scenario = Scenario::default_scenario();
        let first = crate::run(&scenario, 5).history;
        assert_eq!(first_divergence(&first, &rerun(&scenario, 5)), None);
    }
}
