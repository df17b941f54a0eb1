//! Detection: every variant of the known-bug catalogue (`imsim variants`) is caught by the
//! invariant the catalogue names, on its scenario, within a few seeds. A variant's first failing
//! seed must break the expected invariant, and nothing outside the documented set (`also`: the
//! invariants the same bug legitimately breaks in the same run). The correct protocol passes
//! these scenarios (`tests/scenarios.rs`).

use imsim_history::Invariant;
use imsim_model::{Variant, CATALOGUE};
use imsim_sim::{run, Scenario};

/// The bound; the shipped scenarios catch every variant far sooner (README table).
const SEEDS_MAX: u64 = 1_000;

/// The seed (counted from 0) at which the variant is first caught.
fn seeds_to_detection(variant: Variant) -> u64 {
    let entry = variant.catalogue_entry().expect("a broken variant");
    let mut scenario = Scenario::load(entry.scenario).expect("shipped scenario");
    scenario.protocol.variant = variant;
    for seed in 0..SEEDS_MAX {
        let outcome = run(&scenario, seed);
        if outcome.ok() {
            continue;
        }
        let fired: Vec<&str> = outcome
            .violations
            .iter()
            .map(|violation| violation.invariant.name())
            .collect();
        let report = outcome.failure_report(entry.scenario);
        assert!(
            fired.contains(&entry.invariant),
            "{variant} on {} seed {seed}: expected {} to fire first, got {fired:?}\n{report}",
            entry.scenario,
            entry.invariant
        );
        for name in &fired {
            assert!(
                *name == entry.invariant || entry.also.contains(name),
                "{variant} seed {seed}: {name} fired, which the catalogue does not expect\n{report}"
            );
        }
        assert!(
            report.contains(&format!("--variant {variant}")),
            "the replay command names the variant:\n{report}"
        );
        return seed + 1;
    }
    panic!(
        "{variant} on {} was not caught in {SEEDS_MAX} seeds",
        entry.scenario
    );
}

macro_rules! detected {
    ($($test:ident: $variant:ident,)*) => {
        $(
            #[test]
            fn $test() {
                let seeds = seeds_to_detection(Variant::$variant);
                println!("{}: caught at seed {}", Variant::$variant, seeds - 1);
            }
        )*

        #[test]
        fn every_catalogue_entry_has_a_detection_test() {
            let tested = [$(Variant::$variant),*];
            for entry in CATALOGUE {
                assert!(tested.contains(&entry.variant), "{} has no test", entry.variant);
            }
        }
    };
}

detected! {
    no_receiver_dedupe: NoReceiverDedupe,
    ack_before_store: AckBeforeStore,
    non_idempotent_commit: NonIdempotentCommit,
    seq_reuse_after_restart: SeqReuseAfterRestart,
    retry_reorders: RetryReorders,
    watermark_skips_gap: WatermarkSkipsGap,
    no_gap_pull: NoGapPull,
    sync_off_by_one: SyncOffByOne,
    store_only_offline: StoreOnlyOffline,
    removed_member_still_receives: RemovedMemberStillReceives,
    timestamp_order: TimestampOrder,
    read_before_display: ReadBeforeDisplay,
    read_count_double: ReadCountDouble,
    ghost_online: GhostOnline,
    push_to_one_device: PushToOneDevice,
    dedupe_without_ack: DedupeWithoutAck,
    stale_route_counted_delivered: StaleRouteCountedDelivered,
    failover_without_resync: FailoverWithoutResync,
    audience_from_current_members: AudienceFromCurrentMembers,
    handover_restarts_seqs: HandoverRestartsSeqs,
    consumer_acks_before_durable: ConsumerAcksBeforeDurable,
    non_idempotent_consumer: NonIdempotentConsumer,
}

#[test]
fn catalogue_names_real_invariants_and_shipped_scenarios() {
    let names: Vec<&str> = Invariant::ALL.iter().map(|i| i.name()).collect();
    for entry in CATALOGUE {
        assert!(names.contains(&entry.invariant), "{}", entry.invariant);
        for also in entry.also {
            assert!(names.contains(also), "{also}");
        }
        assert!(Scenario::load(entry.scenario).is_ok(), "{}", entry.scenario);
    }
}

#[test]
fn the_run_records_its_variant() {
    let mut scenario = Scenario::load("one-to-one").unwrap();
    let correct = run(&scenario, 3);
    scenario.protocol.variant = Variant::NoReceiverDedupe;
    let broken = run(&scenario, 3);
    let variant_of = |outcome: &imsim_sim::RunOutcome| {
        outcome
            .history
            .to_jsonl()
            .lines()
            .next()
            .unwrap()
            .to_string()
    };
    assert!(variant_of(&correct).contains("\"variant\":\"correct\""));
    assert!(variant_of(&broken).contains("\"variant\":\"no-receiver-dedupe\""));
    assert_ne!(correct.history.trace_hash(), broken.history.trace_hash());
}
