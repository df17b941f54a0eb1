//! The queue topology (`[topology] queue = true`): consumer crashes that fall between a write and
//! its sync lose that write, the queue redelivers what the consumer had not acked, the consumer
//! skips what it already stored, and the correct protocol passes; a consumer that acks before
//! its sync loses acked messages (D1), and one that stores redeliveries again stores a message
//! twice (D6). Also: a scenario that asks for a queue with sharded logic is refused.

use imsim_history::coverage::{signals, Signal};
use imsim_history::{Entry, HarnessEvent};
use imsim_sim::{run, RunOutcome, Scenario};

/// Four users, 1:1 and a group, a steady stream of sends, and only consumer crashes (eight,
/// every two seconds, 300 ms down): each aims at a sync window.
fn story(variant: &str) -> Scenario {
    let crashes: String = (1..=8)
        .map(|i| {
            format!(
                "[[faults.profile.consumer_crashes]]\nat_ms = {}\ndowntime_ms = 300\n",
                i * 2_000
            )
        })
        .collect();
    let text = format!(
        r#"
        name = "queue-story"
        [topology]
        users = 4
        conversations = "all-pairs"
        queue = true
        [[topology.groups]]
        size = 4
        [workload]
        duration_ms = 20_000
        messages = 400
        burst_max = 3
        [faults]
        swarm = false
        {crashes}
        [protocol]
        variant = "{variant}"
        "#
    );
    Scenario::parse("queue-story.toml", &text).expect("a valid queue scenario")
}

fn harness(outcome: &RunOutcome) -> impl Iterator<Item = &HarnessEvent> {
    outcome
        .history
        .records
        .iter()
        .filter_map(|r| match &r.entry {
            Entry::Harness(event) => Some(event),
            _ => None,
        })
}

fn invariants(outcome: &RunOutcome) -> Vec<&'static str> {
    let names = outcome.violations.iter().map(|v| v.invariant.name());
    names.collect()
}

#[test]
fn a_consumer_crash_in_a_sync_window_is_redelivered_and_the_correct_protocol_passes() {
    let outcome = run(&story("correct"), 1);
    assert!(outcome.ok(), "{}", outcome.failure_report("queue-story"));
    let crashed = harness(&outcome)
        .filter(|e| matches!(e, HarnessEvent::ConsumerCrashed))
        .count();
    assert_eq!(crashed, 8);
    let lost: u64 = harness(&outcome)
        .map(|e| match e {
            HarnessEvent::ConsumerRestarted {
                lost_unsynced_writes,
            } => *lost_unsynced_writes,
            _ => 0,
        })
        .sum();
    assert!(lost > 0, "some crash fell between a write and its sync");
    let counts = signals(&outcome.history);
    assert!(counts[&Signal::QueueRedeliveredAfterConsumerCrash] > 0);
    assert!(counts[&Signal::QueueRedeliveryDeduplicated] > 0);
}

#[test]
fn a_consumer_that_acks_before_its_sync_loses_acked_messages() {
    let outcome = run(&story("consumer-acks-before-durable"), 1);
    let fired = invariants(&outcome);
    assert!(fired.contains(&"acked-is-durable"), "{fired:?}");
}

#[test]
fn a_consumer_that_stores_redeliveries_again_stores_a_message_twice() {
    let outcome = run(&story("non-idempotent-consumer"), 1);
    let fired = invariants(&outcome);
    assert!(fired.contains(&"stored-once"), "{fired:?}");
}

#[test]
fn a_queue_with_sharded_logic_is_refused_naming_the_field() {
    let text = r#"
        name = "bad"
        [topology]
        users = 4
        gateways = 2
        logic = 2
        queue = true
        [workload]
        duration_ms = 1_000
        messages = 1
        [faults]
        swarm = false
    "#;
    let error = Scenario::parse("bad.toml", text)
        .expect_err("refused")
        .to_string();
    assert!(
        error.contains("bad.toml") && error.contains("topology.queue"),
        "{error}"
    );
}

#[test]
fn a_queue_fault_without_a_queue_is_refused() {
    let text = r#"
        name = "bad"
        [topology]
        users = 2
        [workload]
        duration_ms = 1_000
        messages = 1
        [faults]
        swarm = true
        swarm_classes = ["consumer-crash"]
    "#;
    let error = Scenario::parse("bad.toml", text)
        .expect_err("refused")
        .to_string();
    assert!(error.contains("topology.queue = true"), "{error}");
}
