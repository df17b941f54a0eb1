//! Shrinking (`sim/src/shrink.rs`) and the explicit form it starts from. The correct protocol
//! fails nothing, so failures are made: `tests/fixtures/quiet-period-1ms.toml` judges liveness
//! 1 ms after the safety phase (D2 fails), and a runner that corrupts real runs' histories stands
//! in for a broken protocol to give a safety failure.

use imsim_history::Entry;
use imsim_history::{check_all, Invariant};
use imsim_model::Event;
use imsim_sim::explicit::{codes, explicit, failing, render, Size};
use imsim_sim::scenario::default_set;
use imsim_sim::shrink::{shrink, ShrinkError, ShrinkOptions, RUNS_MAX_DEFAULT};
use imsim_sim::{run, RunOutcome, Scenario};

const MADE_TO_FAIL: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/quiet-period-1ms.toml"
);

fn made_to_fail() -> Scenario {
    Scenario::load(MADE_TO_FAIL).expect("the fixture is valid")
}

/// Renders and parses back, as a file on disk would be.
fn through_a_file(scenario: &Scenario) -> Scenario {
    let text = render(scenario, "written by a test");
    Scenario::parse("shrunk.toml", &text).unwrap_or_else(|error| panic!("{error}\n{text}"))
}

#[test]
fn shrunk_liveness_failure_still_fails_and_is_smaller() {
    let scenario = made_to_fail();
    for seed in [0, 3] {
        let options = ShrinkOptions::default();
        let shrunk = shrink(&scenario, seed, &options, &run, &mut |_| {}).unwrap();
        assert_eq!(shrunk.target, Some(Invariant::D2EventualDelivery));
        assert!(shrunk.runs <= RUNS_MAX_DEFAULT);
        let file = through_a_file(&shrunk.scenario);
        assert_eq!(file, shrunk.scenario);
        let pinned = file.pinned.clone().expect("pinned");
        assert_eq!(pinned.seed, seed);
        let outcome = run(&file, seed);
        let violated = failing(&outcome);
        assert!(
            violated.contains(&Invariant::D2EventualDelivery),
            "seed {seed}"
        );
        assert_eq!(
            codes(&violated),
            pinned.expect,
            "expect lists exactly what fails"
        );
        let (before, after) = (shrunk.before, Size::of(&outcome));
        assert_eq!(after, shrunk.after, "the file is the shrunk run");
        assert!(after.within(&before), "seed {seed}: {before} -> {after}");
        assert!(
            after.devices < before.devices
                && after.messages < before.messages
                && after.events < before.events,
            "seed {seed}: {before} -> {after}"
        );
        assert_eq!(
            file.quiet_period_ms(),
            1,
            "a liveness failure keeps its quiet period"
        );
    }
}

/// The explicit form is faithful: the same run, byte for byte, for every shipped scenario.
#[test]
fn explicit_form_of_a_run_is_the_same_run() {
    for name in default_set() {
        let scenario = Scenario::load(name).unwrap();
        for seed in 0..3 {
            let original = run(&scenario, seed);
            let form = through_a_file(&explicit(&scenario, seed));
            assert_eq!(form.pinned.as_ref().map(|p| p.seed), Some(seed));
            let replayed = run(&form, seed);
            assert!(original.ok() && replayed.ok(), "{name} seed {seed}");
            assert_eq!(
                replayed.history.trace_hash(),
                original.history.trace_hash(),
                "{name} seed {seed}: the explicit form runs differently"
            );
        }
    }
    let scenario = made_to_fail();
    let original = run(&scenario, 2);
    let replayed = run(&through_a_file(&explicit(&scenario, 2)), 2);
    assert!(!original.ok());
    assert_eq!(replayed.history.to_jsonl(), original.history.to_jsonl());
}

/// Stands in for a broken protocol (known-bug variants come with another issue): a device shows
/// the first message it displays after holding one back twice — E1 no-duplicate-display, only
/// on schedules where a message overtook another one.
fn redisplays_after_hold_back(scenario: &Scenario, seed: u64) -> RunOutcome {
    let mut outcome = run(scenario, seed);
    let records = &mut outcome.history.records;
    let held_back = |e: &Entry| matches!(e, Entry::Protocol(Event::HeldBack { .. }));
    let displayed = |e: &Entry| matches!(e, Entry::Protocol(Event::Displayed { .. }));
    if let Some(held) = records.iter().position(|r| held_back(&r.entry)) {
        let node = records[held].node;
        let shown = records[held..]
            .iter()
            .position(|r| r.node == node && displayed(&r.entry));
        if let Some(shown) = shown {
            let copy = records[held + shown].clone();
            records.insert(held + shown + 1, copy);
        }
    }
    outcome.violations = check_all(&outcome.history);
    outcome
}

#[test]
fn shrunk_safety_failure_still_fails_and_is_smaller() {
    let scenario = Scenario::load("sender-retry-order").unwrap();
    let seed = (0..50)
        .find(|seed| !redisplays_after_hold_back(&scenario, *seed).ok())
        .expect("a seed where a message is held back");
    let options = ShrinkOptions {
        target: Some(Invariant::E1NoDuplicateDisplay),
        ..ShrinkOptions::default()
    };
    let mut lines = Vec::new();
    let shrunk = shrink(
        &scenario,
        seed,
        &options,
        &redisplays_after_hold_back,
        &mut |line| lines.push(line.to_string()),
    )
    .unwrap();
    assert!(!lines.is_empty(), "progress is reported");
    let file = through_a_file(&shrunk.scenario);
    let outcome = redisplays_after_hold_back(&file, seed);
    let violated = failing(&outcome);
    assert!(violated.contains(&Invariant::E1NoDuplicateDisplay));
    assert_eq!(codes(&violated), file.pinned.clone().unwrap().expect);
    let (before, after) = (shrunk.before, Size::of(&outcome));
    let quiet_ms = file.quiet_period_ms();
    println!(
        "seed {seed}: {before} -> {after} in {} runs, quiet {quiet_ms} ms",
        shrunk.runs
    );
    assert!(after.within(&before), "{before} -> {after}");
    assert!(after.messages < before.messages && after.events < before.events);
    assert!(
        file.quiet_period_ms() <= scenario.quiet_period_ms(),
        "a safety failure may shorten the quiet period"
    );
    // The correct protocol on the same schedule displays nothing twice.
    let correct = run(&shrunk.scenario, seed);
    assert!(!failing(&correct).contains(&Invariant::E1NoDuplicateDisplay));
}

#[test]
fn the_run_budget_bounds_a_shrink() {
    let options = ShrinkOptions {
        target: None,
        runs_max: 12,
    };
    let mut lines = Vec::new();
    let shrunk = shrink(&made_to_fail(), 0, &options, &run, &mut |line| {
        lines.push(line.to_string())
    })
    .unwrap();
    assert!(shrunk.runs <= 12, "{} runs", shrunk.runs);
    assert!(
        lines.iter().any(|line| line.contains("budget")),
        "{lines:?}"
    );
    let outcome = run(&shrunk.scenario, 0);
    assert!(failing(&outcome).contains(&Invariant::D2EventualDelivery));
}

#[test]
fn nothing_to_shrink_is_an_error() {
    let passing = shrink(
        &Scenario::load("one-to-one").unwrap(),
        1,
        &ShrinkOptions::default(),
        &run,
        &mut |_| {},
    );
    assert_eq!(passing.unwrap_err(), ShrinkError::Passes);
    let options = ShrinkOptions {
        target: Some(Invariant::O1SeqMonotonic),
        ..ShrinkOptions::default()
    };
    let other = shrink(&made_to_fail(), 0, &options, &run, &mut |_| {});
    assert!(
        matches!(other, Err(ShrinkError::TargetHolds { .. })),
        "{other:?}"
    );
}

/// `redisplays_after_hold_back`, except that a run with fewer than three users panics, as a
/// model bug hit only by small topologies would.
fn panics_when_small(scenario: &Scenario, seed: u64) -> RunOutcome {
    let users = scenario.topology.users;
    assert!(users >= 3, "a bug hit with {users} users");
    redisplays_after_hold_back(scenario, seed)
}

#[test]
fn a_panicking_candidate_is_not_kept_and_the_shrink_goes_on() {
    let scenario = Scenario::load("sender-retry-order").unwrap();
    let seed = (0..50)
        .find(|seed| !redisplays_after_hold_back(&scenario, *seed).ok())
        .expect("a seed where a message is held back");
    assert!(
        scenario.topology.users >= 3,
        "the original run does not panic"
    );
    let options = ShrinkOptions {
        target: Some(Invariant::E1NoDuplicateDisplay),
        ..ShrinkOptions::default()
    };
    let mut lines = Vec::new();
    let shrunk = shrink(&scenario, seed, &options, &panics_when_small, &mut |line| {
        lines.push(line.to_string())
    })
    .expect("the shrink survives panicking candidates");
    assert!(
        lines
            .iter()
            .any(|line| line.contains("a candidate panicked (a bug hit with")),
        "{lines:#?}"
    );
    let outcome = panics_when_small(&shrunk.scenario, seed);
    assert!(failing(&outcome).contains(&Invariant::E1NoDuplicateDisplay));
    assert!(shrunk.scenario.topology.users >= 3);
}

#[test]
fn a_run_that_panics_is_an_error_not_a_crash() {
    // Found shrinking non-idempotent-consumer's seed 2, whose server panics on the store the bug
    // leaves: `imsim shrink` died with the panic instead of saying why it cannot shrink it.
    let always = |_: &Scenario, _: u64| -> RunOutcome { panic!("a bug hit on every run") };
    let scenario = Scenario::load("one-to-one").unwrap();
    let error = shrink(
        &scenario,
        0,
        &ShrinkOptions::default(),
        &always,
        &mut |_| {},
    )
    .unwrap_err();
    assert_eq!(
        error,
        ShrinkError::Panicked("a bug hit on every run".to_string())
    );
    assert!(error.to_string().contains("replay the seed"), "{error}");
}

#[test]
fn a_cost_overrun_beside_another_failure_is_not_the_default_target() {
    // sync-off-by-one's repair loop both loses messages (D2) and wastes traffic (C1) at seed 0;
    // C1 needs 20 deliveries to be judged, so a shrink that kept it could not get small.
    let mut scenario = Scenario::load("offline-resume").expect("shipped");
    scenario.protocol.variant = imsim_model::Variant::SyncOffByOne;
    let violated = failing(&run(&scenario, 0));
    assert!(
        violated.contains(&Invariant::C1WithinBudget)
            && violated.contains(&Invariant::D2EventualDelivery),
        "{violated:?}"
    );
    let options = ShrinkOptions {
        target: None,
        runs_max: 40,
    };
    let shrunk = shrink(&scenario, 0, &options, &run, &mut |_| {}).unwrap();
    assert_eq!(shrunk.target, Some(Invariant::D2EventualDelivery));
}
