//! Protocol settings at their edges still give a working system.

use imsim_sim::{run, Scenario};

/// A login timeout shorter than any round trip: every answer arrives after the device gave up
/// waiting. It must still log in (taking the late answer) rather than retry for ever.
#[test]
fn a_login_timeout_below_the_round_trip_still_logs_in() {
    let mut scenario = Scenario::default_scenario();
    scenario.protocol.login_timeout_ms = 1;
    scenario.validate().expect("valid");
    for seed in 0..20 {
        let outcome = run(&scenario, seed);
        assert!(
            outcome.ok(),
            "seed {seed}:\n{}",
            outcome.failure_report("one-to-one with login_timeout_ms = 1")
        );
        assert_eq!(outcome.stats.counts.committed, outcome.stats.counts.sends);
    }
}
