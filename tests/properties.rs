//! Property tests: proptest generates whole scenarios (topology, workload, protocol bounds, swarm
//! fault classes) and a seed; every invariant must hold. On a failure proptest shrinks the
//! scenario, and the message names a scenario file written for it and the command that replays
//! the failing run.

use imsim_history::traffic::CostBudget;
use imsim_model::PresenceMode;
use imsim_sim::faults::FaultClass;
use imsim_sim::scenario::{Conversations, GroupSpec};
use imsim_sim::{run, Scenario};
use proptest::prelude::*;

/// The cost budget of a random scenario. The shipped scenarios' budgets are measured for their
/// own settings; random ones (one-message pages, 50 ms gap timeouts, logouts, fan-out write into
/// groups that grow) legitimately cost up to about twice as much, so C1 here catches runaway
/// traffic, not a tuned figure.
fn loose_budget() -> CostBudget {
    let default = CostBudget::default();
    CostBudget {
        packets_per_delivery: 2.0 * default.packets_per_delivery,
        writes_per_message: None,
        notices_per_delivery: 2.0 * default.notices_per_delivery,
        presence_packets_per_change: 2.0 * default.presence_packets_per_change,
        receipt_packets_per_read: 2.0 * default.receipt_packets_per_read,
        queue_packets_per_message: 2.0 * default.queue_packets_per_message,
    }
}

fn scenarios() -> impl Strategy<Value = (Scenario, u64)> {
    let topology = (2u32..7, 1u32..3, prop::option::of(1u32..6));
    let workload = (1_000u64..30_000, 0u32..80, 1u32..8, 0u32..3, 500u64..10_000);
    let protocol = (1u32..9, 1u32..9, 1u32..20, 50u64..2_000);
    let classes = prop::sample::subsequence(FaultClass::all(), 0..=8);
    (topology, workload, protocol, classes, any::<u64>()).prop_map(
        |((users, devices, pairs), workload, protocol, classes, seed)| {
            let mut scenario = Scenario::default_scenario();
            scenario.budget = loose_budget();
            scenario.name = "property".to_string();
            scenario.topology.users = users;
            scenario.topology.devices_per_user = devices;
            scenario.topology.conversations = match pairs {
                Some(pairs) => Conversations::Pairs(pairs.min(users * (users - 1) / 2)),
                None => Conversations::AllPairs,
            };
            let (duration_ms, messages, burst_max, offline_periods, offline_ms_max) = workload;
            scenario.workload.duration_ms = duration_ms;
            scenario.workload.messages = messages;
            scenario.workload.burst_max = burst_max;
            scenario.workload.offline_periods_per_device = offline_periods;
            scenario.workload.offline_ms_max = offline_ms_max;
            let (send_window, hold_back, page, gap_timeout_ms) = protocol;
            scenario.protocol.send_window_max = send_window;
            scenario.protocol.hold_back_max = hold_back;
            scenario.protocol.pull_page_max = page;
            scenario.protocol.gap_timeout_ms = gap_timeout_ms;
            scenario.faults.swarm_classes = classes;
            (scenario, seed)
        },
    )
}

/// Random group workloads: 4..20 users, 1..4 groups of 2..=users founding members, optional
/// 1:1 pairs beside them, membership churn (adds, removes, leaves racing with sends), devices
/// online for only part of the safety phase, and the group protocol's settings: push or
/// notify-then-pull (a threshold low enough to cross, notices sent at once or merged over a
/// window), batched acks, store once or fan-out write.
fn group_scenarios() -> impl Strategy<Value = (Scenario, u64)> {
    let topology = (
        4u32..20,
        1u32..3,
        prop::collection::vec(0u32..1_000, 1..4),
        prop::option::of(1u32..6),
    );
    let workload = (
        1_000u64..20_000,
        0u32..60,
        1u32..6,
        0u32..20,
        prop_oneof![Just(1.0), 0.3f64..1.0],
        0u32..2,
    );
    let protocol = (
        1u32..9,
        1u32..9,
        1u32..20,
        1u32..20,
        prop_oneof![Just(500u32), 1u32..12],
        prop_oneof![Just(0u64), 1u64..2_000],
        50u64..1_000,
        any::<bool>(),
    );
    let classes = prop::sample::subsequence(FaultClass::all(), 0..=8);
    (topology, workload, protocol, classes, any::<u64>()).prop_map(
        |((users, devices, sizes, pairs), workload, protocol, classes, seed)| {
            let mut scenario = Scenario::default_scenario();
            scenario.budget = loose_budget();
            scenario.name = "property-groups".to_string();
            scenario.topology.users = users;
            scenario.topology.devices_per_user = devices;
            scenario.topology.conversations =
                Conversations::Pairs(pairs.map_or(0, |pairs| pairs.min(users * (users - 1) / 2)));
            scenario.topology.groups = groups(sizes, users);
            let (duration_ms, messages, burst_max, changes, online_fraction, offline_periods) =
                workload;
            scenario.workload.duration_ms = duration_ms;
            scenario.workload.messages = messages;
            scenario.workload.burst_max = burst_max;
            scenario.workload.membership_changes = changes;
            scenario.workload.online_fraction = online_fraction;
            scenario.workload.offline_periods_per_device = offline_periods;
            scenario.workload.offline_ms_max = 5_000;
            let (
                send_window,
                hold_back,
                page,
                ack_batch,
                threshold,
                notify_merge_ms,
                ack_delay_ms,
                fanout_write,
            ) = protocol;
            scenario.protocol.send_window_max = send_window;
            scenario.protocol.hold_back_max = hold_back;
            scenario.protocol.pull_page_max = page;
            scenario.protocol.ack_batch_max = ack_batch;
            scenario.protocol.ack_delay_ms = ack_delay_ms;
            scenario.protocol.notify_threshold_members = threshold;
            scenario.protocol.notify_merge_ms = notify_merge_ms;
            scenario.protocol.fanout_write = fanout_write;
            scenario.faults.swarm_classes = classes;
            (scenario, seed)
        },
    )
}

/// Mixed workloads, every invariant family at once: 1:1 pairs and groups side by side, 1..4
/// devices per user (some installed mid-run, roaming), reads at random times, presence pushed or
/// pulled with heartbeats and timeouts drawn, users logging out and in (presence churn), read
/// counts batched for groups over a low threshold, membership churn.
fn mixed_scenarios() -> impl Strategy<Value = (Scenario, u64)> {
    let topology = (
        3u32..12,
        1u32..5,
        prop::collection::vec(0u32..1_000, 0..3),
        1u32..8,
    );
    let workload = (
        2_000u64..30_000,
        0u32..60,
        0u32..80,
        0u32..3,
        0u32..8,
        0u32..4,
    );
    let protocol = (
        any::<bool>(),
        1_000u64..15_000,
        2u64..4,
        prop_oneof![Just(500u32), 1u32..6],
        100u64..2_000,
        1u32..9,
    );
    let classes = prop::sample::subsequence(FaultClass::all(), 0..=8);
    (topology, workload, protocol, classes, any::<u64>()).prop_map(
        |((users, devices, sizes, pairs), workload, protocol, classes, seed)| {
            let mut scenario = Scenario::default_scenario();
            scenario.budget = loose_budget();
            scenario.name = "property-mixed".to_string();
            scenario.topology.users = users;
            scenario.topology.devices_per_user = devices;
            scenario.topology.conversations =
                Conversations::Pairs(pairs.min(users * (users - 1) / 2));
            scenario.topology.groups = groups(sizes, users);
            let (duration_ms, messages, reads, offline_periods, changes, roaming) = workload;
            scenario.workload.duration_ms = duration_ms;
            scenario.workload.messages = messages;
            scenario.workload.reads = reads;
            scenario.workload.offline_periods_per_device = offline_periods;
            scenario.workload.offline_ms_max = 5_000;
            if !scenario.topology.groups.is_empty() {
                scenario.workload.membership_changes = changes;
            }
            scenario.workload.roaming_devices = roaming.min(users * (devices - 1));
            let (pull, heartbeat_ms, timeout_factor, threshold, batch_ms, page) = protocol;
            scenario.protocol.presence = if pull {
                PresenceMode::Pull
            } else {
                PresenceMode::Push
            };
            scenario.protocol.presence_poll_ms = heartbeat_ms * 2;
            scenario.protocol.heartbeat_interval_ms = heartbeat_ms;
            scenario.protocol.session_timeout_ms = heartbeat_ms * timeout_factor;
            scenario.protocol.server_silence_timeout_ms = heartbeat_ms * timeout_factor;
            scenario.protocol.notify_threshold_members = threshold;
            scenario.protocol.receipt_batch_ms = batch_ms;
            scenario.protocol.pull_page_max = page;
            scenario.faults.swarm_classes = classes;
            (scenario, seed)
        },
    )
}

/// One group per raw draw, of 2..=users founding members drawn at random.
fn groups(sizes: Vec<u32>, users: u32) -> Vec<GroupSpec> {
    sizes
        .into_iter()
        .map(|raw| GroupSpec {
            size: 2 + raw % (users - 1),
            count: 1,
            members: Vec::new(),
        })
        .collect()
}

/// Writes a failing scenario where a person can replay it, and says how.
fn replay_hint(scenario: &Scenario, seed: u64) -> String {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("proptest-failures");
    std::fs::create_dir_all(&dir).expect("create the failures folder");
    let path = dir.join(format!("{}-{seed}.toml", scenario.name));
    std::fs::write(&path, scenario.to_toml()).expect("write the failing scenario");
    path.display().to_string()
}

/// Runs a generated scenario; a failure names the scenario file written for it and the command
/// that replays the failing run.
fn every_invariant_holds(scenario: &Scenario, seed: u64) -> Result<(), TestCaseError> {
    scenario.validate().expect("generated scenarios are valid");
    let outcome = run(scenario, seed);
    if !outcome.ok() {
        let path = replay_hint(scenario, seed);
        prop_assert!(false, "{}", outcome.failure_report(&path));
    }
    Ok(())
}

/// A scenario written out as TOML reads back as the same scenario, so a shrunk or generated
/// failure can be saved and replayed exactly.
fn round_trips_through_toml(scenario: Scenario) -> Result<(), TestCaseError> {
    let text = scenario.to_toml();
    let parsed = Scenario::parse("round-trip.toml", &text)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(parsed, scenario);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

        #[test]
    fn every_invariant_holds_under_swarm_faults((scenario, seed) in scenarios()) {
        every_invariant_holds(&scenario, seed)?;
    }

    /// A scenario written out as TOML reads back as the same scenario, so a shrunk or generated
    /// failure can be saved and replayed exactly.
    #[test]
        fn scenarios_round_trip_through_toml((scenario, _seed) in scenarios()) {
        round_trips_through_toml(scenario)?;
    }
}

proptest! {
    // About 7 ms a case in the debug test profile (45 ms at most): 512 cases take about 4 s.
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
        fn every_invariant_holds_for_groups_with_churn_under_swarm_faults(
        (scenario, seed) in group_scenarios()
    ) {
        every_invariant_holds(&scenario, seed)?;
    }

    #[test]
        fn group_scenarios_round_trip_through_toml((scenario, _seed) in group_scenarios()) {
        round_trips_through_toml(scenario)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn every_invariant_family_holds_for_mixed_workloads_under_swarm_faults(
        (scenario, seed) in mixed_scenarios()
    ) {
        every_invariant_holds(&scenario, seed)?;
    }

    #[test]
    fn mixed_scenarios_round_trip_through_toml((scenario, _seed) in mixed_scenarios()) {
        round_trips_through_toml(scenario)?;
    }
}
