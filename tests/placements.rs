//! Faults placed at sensitive moments (`sim/src/faults/placement.rs`): each kind fires at its
//! moment and does what it says (a crash inside a sync window loses the write it just made; a
//! membership change lands inside another message's sync window), its coverage signal counts it,
//! the correct protocol passes, and a bug that needs the moment is caught because of it.

use imsim_history::coverage::{signals, Signal};
use imsim_history::faults::PlacementKind;
use imsim_history::{Entry, HarnessEvent, Node};
use imsim_model::{Event, Variant};
use imsim_sim::{run, RunOutcome, Scenario};

/// Three users in a group (conversation 1); user 1 sends at 1 s and 2 s, user 1 removes user 3
/// at 3 s and user 2 sends at 3.4 s, 4 s and 5 s. No faults but `placements` (TOML
/// array-of-tables entries, or nothing).
fn story(placements: &str, variant: Option<&str>) -> Scenario {
    let variant = variant.map_or(String::new(), |v| format!("variant = \"{v}\""));
    let text = format!(
        r#"
        name = "placements"
        [topology]
        users = 3
        devices_per_user = 1
        conversations = []
        [[topology.groups]]
        size = 3
        members = [1, 2, 3]
        [workload]
        duration_ms = 20_000
        messages = 0
        script = [
            {{ at_ms = 0, device = 1, action = "go-online" }},
            {{ at_ms = 0, device = 2, action = "go-online" }},
            {{ at_ms = 0, device = 3, action = "go-online" }},
            {{ at_ms = 1_000, device = 1, action = "send", conv = 1, body = "one" }},
            {{ at_ms = 2_000, device = 1, action = "send", conv = 1, body = "two" }},
            {{ at_ms = 3_000, device = 1, action = "remove", conv = 1, user = 3 }},
            {{ at_ms = 3_400, device = 2, action = "send", conv = 1, body = "three" }},
            {{ at_ms = 4_000, device = 2, action = "send", conv = 1, body = "four" }},
            {{ at_ms = 5_000, device = 2, action = "send", conv = 1, body = "five" }},
        ]
        [faults]
        swarm = false
        {placements}
        [protocol]
        {variant}
        "#
    );
    Scenario::parse("placements.toml", &text).expect("a valid scripted scenario")
}

fn placement(kind: &str, after_ms: u64, downtime_ms: u64) -> String {
    format!(
        "[[faults.profile.placements]]\nkind = \"{kind}\"\nafter_ms = {after_ms}\n\
         downtime_ms = {downtime_ms}\n"
    )
}

fn fired(outcome: &RunOutcome) -> Vec<(usize, u64, PlacementKind)> {
    let records = &outcome.history.records;
    (0..records.len())
        .filter_map(|i| match &records[i].entry {
            Entry::Harness(HarnessEvent::PlacementFired { kind, .. }) => {
                Some((i, records[i].t_ms, *kind))
            }
            _ => None,
        })
        .collect()
}

fn run_ok(scenario: &Scenario, seed: u64) -> RunOutcome {
    let outcome = run(scenario, seed);
    assert!(
        outcome.ok(),
        "seed {seed}:\n{}",
        outcome.failure_report("placements.toml")
    );
    outcome
}

/// The crash follows the placement at the same instant, and the server's recovery reports the
/// write it had not synced as lost.
fn assert_crashed_with_unsynced_write(outcome: &RunOutcome, at: usize, seed: u64) {
    let records = &outcome.history.records;
    let crash = records[at..]
        .iter()
        .find(|r| {
            matches!(
                r.entry,
                Entry::Harness(HarnessEvent::NodeCrashed {
                    crashed: Node::Server
                })
            )
        })
        .expect("the placement crashes the server");
    assert_eq!(crash.t_ms, records[at].t_ms, "seed {seed}: crash at once");
    let lost = records[at..].iter().find_map(|r| match r.entry {
        Entry::Protocol(Event::Recovered {
            lost_unsynced_writes,
            ..
        }) => Some(lost_unsynced_writes),
        _ => None,
    });
    assert!(lost.is_some_and(|lost| lost > 0), "seed {seed}: {lost:?}");
}

#[test]
fn a_crash_placed_in_a_sync_window_loses_the_write_and_the_protocol_recovers() {
    let scenario = story(&placement("crash-in-sync-window", 1_500, 1_000), None);
    for seed in 0..5 {
        let outcome = run_ok(&scenario, seed);
        let fired = fired(&outcome);
        assert_eq!(fired.len(), 1, "seed {seed}: {fired:?}");
        let (at, t_ms, kind) = fired[0];
        assert_eq!(kind, PlacementKind::CrashInSyncWindow);
        assert!(
            (2_000..2_100).contains(&t_ms),
            "seed {seed}: at the send of 2 s, {t_ms}"
        );
        assert_crashed_with_unsynced_write(&outcome, at, seed);
        assert_eq!(
            signals(&outcome.history)[&Signal::PlacedCrashInSyncWindow],
            1
        );
    }
}

#[test]
fn a_duplicate_placed_before_a_crash_is_committed_once() {
    let scenario = story(&placement("duplicate-before-crash", 1_500, 2_000), None);
    for seed in 0..5 {
        let outcome = run_ok(&scenario, seed);
        let fired = fired(&outcome);
        assert_eq!(fired.len(), 1, "seed {seed}: {fired:?}");
        assert_eq!(fired[0].2, PlacementKind::DuplicateBeforeCrash);
        assert_crashed_with_unsynced_write(&outcome, fired[0].0, seed);
        assert_eq!(
            signals(&outcome.history)[&Signal::PlacedDuplicateBeforeCrash],
            1
        );
    }
}

/// The removal of 3 s is held until user 2's send of 3.4 s asks for its sync, and is committed
/// right after it, inside that window.
#[test]
fn a_membership_change_placed_in_a_sync_window_commits_right_after_the_message() {
    let scenario = story(&placement("membership-in-sync-window", 2_500, 0), None);
    for seed in 0..5 {
        let outcome = run_ok(&scenario, seed);
        let fired = fired(&outcome);
        assert_eq!(fired.len(), 1, "seed {seed}: {fired:?}");
        let (_, t_ms, kind) = fired[0];
        assert_eq!(kind, PlacementKind::MembershipInSyncWindow);
        assert!((3_400..3_500).contains(&t_ms), "seed {seed}: {t_ms}");
        let commits: Vec<(u64, bool)> = outcome
            .history
            .records
            .iter()
            .filter_map(|r| match &r.entry {
                Entry::Protocol(Event::Committed { seq, change, .. }) => {
                    Some((seq.0, change.is_some()))
                }
                _ => None,
            })
            .collect();
        assert_eq!(
            commits,
            [
                (1, false),
                (2, false),
                (3, false),
                (4, true),
                (5, false),
                (6, false)
            ],
            "seed {seed}: the removal comes right after the message of 3.4 s"
        );
        assert_eq!(
            signals(&outcome.history)[&Signal::PlacedMembershipInSyncWindow],
            1
        );
    }
}

/// A placement that meets no moment in its window lapses: nothing fires, nothing crashes.
#[test]
fn a_placement_with_no_moment_in_its_window_lapses() {
    let scenario = story(&placement("crash-in-sync-window", 6_000, 1_000), None);
    let outcome = run_ok(&scenario, 0);
    assert!(fired(&outcome).is_empty());
    assert_eq!(outcome.stats.counts.server_crashes, 0);
}

/// `audience-from-current-members` pushes a message to the members at the moment it becomes
/// durable. Only a change committed inside the message's sync window makes that differ from the
/// members at its seq, and the placement puts one there: user 3, removed right after message 3,
/// is not pushed message 3 and gets it only by a gap pull, which T1 calls a repair. Without the
/// placement the same story passes.
#[test]
fn a_bug_that_needs_a_change_in_a_sync_window_is_caught_with_the_placement_only() {
    let variant = Some(Variant::AudienceFromCurrentMembers.name());
    let unplaced = story("", variant);
    for seed in 0..5 {
        run_ok(&unplaced, seed);
    }
    let placed = story(&placement("membership-in-sync-window", 2_500, 0), variant);
    for seed in 0..5 {
        let outcome = run(&placed, seed);
        let invariants: Vec<&str> = outcome
            .violations
            .iter()
            .map(|v| v.invariant.name())
            .collect();
        assert!(
            invariants.contains(&"delivered-in-time"),
            "seed {seed}: {invariants:?}"
        );
    }
}
