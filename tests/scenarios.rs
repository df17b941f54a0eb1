//! Named scenarios: every shipped scenario holds every invariant over a band of seeds. The full
//! sweeps (`imsim run --seeds 0..200`) are commands, not tests; these seeds keep `cargo test`
//! fast while still crossing crashes, partitions and swarm faults.

use imsim_sim::{run, Scenario};

const SEEDS: std::ops::Range<u64> = 0..60;

fn holds_over_seeds(name: &str) {
    let scenario = Scenario::load(name).expect("shipped scenarios are valid");
    for seed in SEEDS {
        let outcome = run(&scenario, seed);
        assert!(
            outcome.ok(),
            "{name} seed {seed}:\n{}",
            outcome.failure_report(name)
        );
        assert_eq!(
            outcome.stats.sends, outcome.stats.committed,
            "{name} seed {seed}: every send commits"
        );
    }
}

#[test]
fn one_to_one() {
    holds_over_seeds("one-to-one");
}

#[test]
fn lossy_network() {
    holds_over_seeds("lossy-network");
}

#[test]
fn server_crash() {
    holds_over_seeds("server-crash");
}

#[test]
fn offline_resume() {
    holds_over_seeds("offline-resume");
}

#[test]
fn clock_skew() {
    holds_over_seeds("clock-skew");
}

#[test]
fn crash_storm() {
    holds_over_seeds("crash-storm");
}

#[test]
fn sender_retry_order() {
    holds_over_seeds("sender-retry-order");
}

/// The faults a scenario promises actually happen: a harness whose faults never fire proves
/// nothing.
#[test]
fn faults_reach_the_run() {
    let lossy = run(&Scenario::load("lossy-network").unwrap(), 1);
    let packets = lossy.stats.packets;
    assert!(
        packets.dropped > 0 && packets.duplicated > 0 && packets.delayed > 0 && packets.held > 0,
        "{packets:?}"
    );
    let crashes = run(&Scenario::load("server-crash").unwrap(), 1);
    assert_eq!(crashes.stats.server_crashes, 3);
    // Whether one seed's resume needs a second page depends on its schedule (seed 1 stopped
    // paging when madsim's seed got its own stream); a few seeds together must.
    let offline = Scenario::load("offline-resume").unwrap();
    let resumed_by_pages = (0..4)
        .flat_map(|seed| run(&offline, seed).history.records)
        .filter(|r| r.to_string().contains("next_page"))
        .count();
    assert!(
        resumed_by_pages > 0,
        "offline-resume must resume in several pages"
    );
}

/// A scripted scenario runs exactly its actions, whatever the seed: the form a shrunk failure is
/// saved in.
#[test]
fn scripted_workload_runs_exactly_its_actions() {
    let text = r#"
        name = "scripted"
        [topology]
        users = 3
        conversations = [[1, 2], [2, 3]]
        [workload]
        duration_ms = 5_000
        messages = 0
        script = [
            { at_ms = 0, device = 1, action = "go-online" },
            { at_ms = 0, device = 2, action = "go-online" },
            { at_ms = 100, device = 1, action = "send", conv = 1, body = "hello" },
            { at_ms = 200, device = 2, action = "go-offline" },
            { at_ms = 300, device = 3, action = "send", conv = 2 },
        ]
        [faults]
        swarm = false
    "#;
    let scenario = Scenario::parse("scripted.toml", text).expect("valid");
    for seed in 0..20 {
        let outcome = run(&scenario, seed);
        assert!(outcome.ok(), "{}", outcome.failure_report("scripted.toml"));
        assert_eq!(outcome.stats.sends, 2);
        // Device 2 went offline before the second message; the liveness phase brings it back.
        assert_eq!(outcome.stats.displayed, 4);
    }
    let mixed = text.replace("messages = 0", "messages = 5");
    let error = Scenario::parse("mixed.toml", &mixed).unwrap_err();
    assert!(error.message.contains("workload.script"), "{error}");
}
