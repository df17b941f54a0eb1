//! Shrunk witnesses are 1-minimal: for every variant of the known-bug catalogue,
//! `tests/fixtures/shrunk/<variant>.toml` is what `imsim shrink <scenario> --seed N --variant
//! <variant> --invariant <the catalogue's invariant>` wrote for the variant's first failing seed.
//! Its run must still break that invariant in at most [`EVENTS_MAX`] history records, and taking
//! away any one remaining part (a user, a device slot, a conversation, a scripted action, a fault
//! entry: `shrink::one_part_less`) must make that failure go away. The files are small, so the
//! whole check costs a few hundred short runs.
//!
//! Regenerate a fixture after a protocol or shrinker change with the command in its header.

use imsim_history::Invariant;
use imsim_model::{Variant, CATALOGUE};
use imsim_sim::explicit::failing;
use imsim_sim::shrink::one_part_less;
use imsim_sim::{run, Scenario};
use std::path::Path;

/// The bound on a shrunk witness run.
const EVENTS_MAX: usize = 60;

/// Witnesses that cannot fit in [`EVENTS_MAX`], with their own bound and the reason.
const EVENTS_OVER: &[(Variant, usize, &str)] = &[(
    Variant::DedupeWithoutAck,
    77,
    "D5 send-resolves is a liveness invariant, so the witness keeps its whole quiet period (the \
     protocol's convergence bound, 144 s); the sender retransmits the unacked message every 8 s \
     of it and the server drops each retransmit unanswered: 36 of the events are those pairs, \
     and they are the bug itself (retries that never end); 3 are the devices' login_sent",
)];

fn fixture(variant: Variant) -> Scenario {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/shrunk")
        .join(format!("{variant}.toml"));
    let path = path.to_str().expect("a UTF-8 path");
    Scenario::load(path).unwrap_or_else(|error| panic!("{error}"))
}

fn target(variant: Variant) -> Invariant {
    let entry = variant.catalogue_entry().expect("a broken variant");
    *Invariant::ALL
        .iter()
        .find(|invariant| invariant.name() == entry.invariant)
        .expect("the catalogue names a real invariant")
}

fn check_one_minimal(variant: Variant) {
    let scenario = fixture(variant);
    assert_eq!(
        scenario.protocol.variant, variant,
        "the fixture runs {variant}"
    );
    let seed = scenario.pinned.as_ref().expect("a pinned fixture").seed;
    let target = target(variant);
    let outcome = run(&scenario, seed);
    assert!(
        failing(&outcome).contains(&target),
        "{variant}: the shrunk witness no longer breaks {target}:\n{}",
        outcome.failure_report(&format!("tests/fixtures/shrunk/{variant}.toml"))
    );
    let smaller = one_part_less(&scenario);
    assert!(!smaller.is_empty(), "{variant}: nothing to take away");
    for (what, candidate) in smaller {
        let outcome = run(&candidate, seed);
        assert!(
            !failing(&outcome).contains(&target),
            "{variant}: not 1-minimal: without {what} the run still breaks {target}"
        );
    }
    let events = outcome.history.records.len();
    let (events_max, why) = EVENTS_OVER
        .iter()
        .find(|(over, _, _)| *over == variant)
        .map_or((EVENTS_MAX, "the issue's bound"), |(_, max, why)| {
            (*max, *why)
        });
    assert!(
        events <= events_max,
        "{variant}: the witness run has {events} events, more than {events_max} ({why})"
    );
}

macro_rules! one_minimal {
    ($($test:ident: $variant:ident,)*) => {
        $(
            #[test]
            fn $test() {
                check_one_minimal(Variant::$variant);
            }
        )*

        #[test]
        fn every_catalogue_entry_has_a_minimality_test() {
            let tested = [$(Variant::$variant),*];
            for entry in CATALOGUE {
                assert!(tested.contains(&entry.variant), "{} has no test", entry.variant);
            }
        }
    };
}

one_minimal! {
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
    failover_without_resync: FailoverWithoutResync,
    stale_route_counted_delivered: StaleRouteCountedDelivered,
    audience_from_current_members: AudienceFromCurrentMembers,
    handover_restarts_seqs: HandoverRestartsSeqs,
    consumer_acks_before_durable: ConsumerAcksBeforeDurable,
    non_idempotent_consumer: NonIdempotentConsumer,
}
