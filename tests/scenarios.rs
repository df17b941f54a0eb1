//! Named scenarios: every shipped scenario holds every invariant over a band of seeds. The full
//! sweeps (`imsim run --seeds 0..200`) are commands, not tests; these seeds keep `cargo test`
//! fast while still crossing crashes, partitions and swarm faults.

use imsim_history::coverage::Signal;
use imsim_history::{Entry, HarnessEvent, Node};
use imsim_model::{Event, PullReason, Rejection, SendFailure};
use imsim_sim::{run, RunOutcome, Scenario};
use std::collections::BTreeMap;
use std::ops::Range;

const SEEDS: Range<u64> = 0..60;

fn holds_over_seeds(name: &str) {
    holds_over(name, SEEDS);
}

fn holds_over(name: &str, seeds: Range<u64>) {
    let scenario = Scenario::load(name).expect("shipped scenarios are valid");
    for seed in seeds {
        let outcome = run(&scenario, seed);
        assert!(
            outcome.ok(),
            "{name} seed {seed}:\n{}",
            outcome.failure_report(name)
        );
        assert_eq!(
            outcome.stats.counts.sends, outcome.stats.counts.committed,
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
    assert_eq!(crashes.stats.counts.server_crashes, 3);
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
        assert_eq!(outcome.stats.counts.sends, 2);
        // Device 2 went offline before the second message; the liveness phase brings it back.
        assert_eq!(outcome.stats.counts.displayed, 4);
    }
    let mixed = text.replace("messages = 0", "messages = 5");
    let error = Scenario::parse("mixed.toml", &mixed).unwrap_err();
    assert!(error.message.contains("workload.script"), "{error}");
}

#[test]
fn a_scripted_add_of_a_user_nobody_owns_is_refused_and_the_run_passes() {
    let text = r#"
        name = "unknown-add"
        [topology]
        users = 3
        conversations = [[1, 2]]
        [[topology.groups]]
        size = 3
        members = [1, 2, 3]
        [workload]
        duration_ms = 3_000
        messages = 0
        script = [
            { at_ms = 100, device = 1, action = "add", conv = 2, user = 6 },
            { at_ms = 200, device = 1, action = "send", conv = 2, body = "still here" },
        ]
        [faults]
        swarm = false
    "#;
    let scenario = Scenario::parse("unknown-add.toml", text).expect("valid");
    let outcome = run(&scenario, 1);
    assert!(
        outcome.ok(),
        "{}",
        outcome.failure_report("unknown-add.toml")
    );
    let counts = imsim_history::coverage::signals(&outcome.history);
    assert_eq!(counts[&Signal::UnknownUserAddRefused], 1);
    // Only the next few ids are "nobody": further out is a typo, named as such.
    let typo = text.replace("user = 6", "user = 7");
    let error = Scenario::parse("typo.toml", &typo).unwrap_err();
    assert!(error.message.contains("script[0].user"), "{error}");
    let remove = text.replace("action = \"add\"", "action = \"remove\"");
    let error = Scenario::parse("remove.toml", &remove).unwrap_err();
    assert!(error.message.contains("script[0].user"), "{error}");
}

// ---- groups ----
//
// Seed bands sized so each test takes a few seconds in the debug test profile (about 25 ms a
// seed for group-small and fanout-write, 12 ms for the churn, 17 ms for the disorder case).

#[test]
fn group_small() {
    holds_over("group-small", 0..100);
}

#[test]
fn group_disorder() {
    holds_over("group-disorder", 0..150);
}

#[test]
fn fanout_write() {
    holds_over("fanout-write", 0..100);
}

/// Churn refuses sends: a member removed before its message arrives gets `not_member`, an add of
/// a member or a remove of a non-member `no_effect`. Every send commits or fails with one of
/// those, and the band must see both (a churn scenario that never refuses tests nothing).
#[test]
fn group_membership_churn() {
    let name = "group-membership-churn";
    let scenario = Scenario::load(name).expect("shipped scenarios are valid");
    let mut refusals: BTreeMap<Rejection, u64> = BTreeMap::new();
    let mut changes_committed = 0;
    for seed in 0..200 {
        let outcome = run(&scenario, seed);
        assert!(
            outcome.ok(),
            "{name} seed {seed}:\n{}",
            outcome.failure_report(name)
        );
        let mut rejected = 0;
        for event in device_events(&outcome) {
            if let Event::SendFailed {
                reason: SendFailure::Rejected(reason),
                ..
            } = event
            {
                assert!(
                    matches!(reason, Rejection::NotMember | Rejection::NoEffect),
                    "{name} seed {seed}: a send failed as {reason:?}"
                );
                *refusals.entry(*reason).or_default() += 1;
                rejected += 1;
            }
        }
        assert_eq!(
            outcome.stats.counts.sends,
            outcome.stats.counts.committed + rejected,
            "{name} seed {seed}: every send commits or is refused"
        );
        changes_committed += commits(&outcome)
            .filter(|event| {
                matches!(
                    event,
                    Event::Committed {
                        change: Some(_),
                        ..
                    }
                )
            })
            .count();
    }
    assert!(
        refusals.get(&Rejection::NotMember) > Some(&0)
            && refusals.get(&Rejection::NoEffect) > Some(&0)
            && changes_committed > 0,
        "refusals {refusals:?}, changes committed {changes_committed}"
    );
}

/// group-500: one 500-member group at the push threshold; about 0.8 s a seed in debug.
#[test]
fn group_500() {
    holds_over("group-500", 0..2);
}

fn device_events(outcome: &RunOutcome) -> impl Iterator<Item = &Event> {
    outcome
        .history
        .records
        .iter()
        .filter_map(|record| match (&record.node, &record.entry) {
            (Node::Device(_), Entry::Protocol(event)) => Some(event),
            _ => None,
        })
}

fn commits(outcome: &RunOutcome) -> impl Iterator<Item = &Event> {
    outcome
        .history
        .records
        .iter()
        .filter_map(|record| match (&record.node, &record.entry) {
            (Node::Server, Entry::Protocol(event @ Event::Committed { .. })) => Some(event),
            _ => None,
        })
}

/// What each device displayed: (conversation, seq, sending device, client_msg_id), in order.
type Shown = BTreeMap<u32, Vec<(u32, u64, u32, u64)>>;

fn shown(outcome: &RunOutcome) -> Shown {
    let mut shown = Shown::new();
    for record in &outcome.history.records {
        if let (
            Node::Device(device),
            Entry::Protocol(Event::Displayed {
                conv,
                seq,
                sender_device,
                client_msg_id,
                ..
            }),
        ) = (&record.node, &record.entry)
        {
            shown.entry(device.0).or_default().push((
                conv.0,
                seq.0,
                sender_device.0,
                client_msg_id.0,
            ));
        }
    }
    shown
}

/// Store once and fan-out write on the same seed: the same messages at the same seqs on every
/// device, and a storage cost of exactly one write per message against one per message plus a
/// copy per member who may see it.
#[test]
fn store_once_and_fanout_write_deliver_the_same_at_different_storage_cost() {
    let store_once = Scenario::load("group-small").expect("shipped");
    let fanout = Scenario::load("fanout-write").expect("shipped");
    assert!(!store_once.protocol.fanout_write && fanout.protocol.fanout_write);
    for seed in 0..10 {
        let once = run(&store_once, seed);
        let copied = run(&fanout, seed);
        assert!(once.ok(), "{}", once.failure_report("group-small"));
        assert!(copied.ok(), "{}", copied.failure_report("fanout-write"));
        assert_eq!(
            once.setup.topology, copied.setup.topology,
            "seed {seed}: the same draw"
        );
        let (shown_once, shown_copied) = (shown(&once), shown(&copied));
        assert_eq!(shown_once, shown_copied, "seed {seed}: the same deliveries");
        assert_eq!(once.stats.counts.delivered, copied.stats.counts.delivered);
        assert_eq!(
            once.stats.writes_per_message(),
            1.0,
            "seed {seed}: store once writes each message once"
        );
        // The audience of a message is its conversation's members (no membership changes here).
        let members: BTreeMap<u32, usize> = copied
            .setup
            .topology
            .conversations
            .iter()
            .map(|c| (c.conv.0, c.members.len()))
            .collect();
        let audiences: Vec<usize> = commits(&copied)
            .map(|event| match event {
                Event::Committed { conv, .. } => members[&conv.0],
                _ => unreachable!("commits() yields commits"),
            })
            .collect();
        let mean_audience = audiences.iter().sum::<usize>() as f64 / audiences.len() as f64;
        let writes = copied.stats.writes_per_message();
        // The message and a copy for each member: one more than the audience (a write lost in
        // a crash and redone counts again), so well above the audience minus one.
        assert!(
            writes > mean_audience - 1.0 && writes >= 1.0 + mean_audience - 1e-9,
            "seed {seed}: fan-out write costs {writes:.2} writes a message, \
             mean audience {mean_audience:.2}"
        );
    }
}

/// Above `notify_threshold_members` a group gets notify-then-pull: `notify` packets instead of
/// `deliver`, merged while one is outstanding (fewer notices than commits × other members online),
/// pulls marked `notified`, and acks batched. The same run under the threshold pushes.
#[test]
fn a_group_above_the_notify_threshold_is_notified_and_pulls() {
    let text = r#"
        name = "notify-then-pull"
        [topology]
        users = 30
        conversations = 0
        [[topology.groups]]
        size = 30
        [workload]
        duration_ms = 10_000
        messages = 60
        burst_max = 4
        [faults]
        swarm = true
        swarm_classes = ["loss", "delay", "duplication"]
        [protocol]
        notify_threshold_members = 10
        ack_batch_max = 10
    "#;
    let notified = Scenario::parse("notify-then-pull.toml", text).expect("valid");
    let pushed = Scenario::parse(
        "push.toml",
        &text.replace(
            "notify_threshold_members = 10",
            "notify_threshold_members = 30",
        ),
    )
    .expect("valid");
    for seed in 0..5 {
        let outcome = run(&notified, seed);
        assert!(
            outcome.ok(),
            "{}",
            outcome.failure_report("notify-then-pull")
        );
        let stats = &outcome.stats;
        let kind = |name: &str| stats.packets.by_kind.get(name).copied().unwrap_or(0);
        // Every member is online for the whole run (online_fraction = 1).
        let members = 30;
        assert!(
            kind("notify") > 0,
            "seed {seed}: {:?}",
            stats.packets.by_kind
        );
        assert_eq!(
            kind("deliver"),
            0,
            "seed {seed}: no message of the group is pushed"
        );
        // Unmerged, each commit would notify the 29 other members' devices (seeds 0..5 send 10
        // to 19 notices a message, retries included).
        assert!(
            kind("notify") < stats.counts.committed * (members - 1),
            "seed {seed}: notices are merged: {} for {} commits × {} other members",
            kind("notify"),
            stats.counts.committed,
            members - 1
        );
        assert!(stats.notices_per_message() < members as f64);
        let notified_pulls = device_events(&outcome)
            .filter(|event| {
                matches!(
                    event,
                    Event::PullSent {
                        reason: PullReason::Notified,
                        ..
                    }
                )
            })
            .count();
        assert!(notified_pulls > 0, "seed {seed}: devices pull on notice");
        // Batched acks: fewer ack packets than messages displayed on recipients' devices.
        assert!(
            kind("ack") < stats.counts.delivered,
            "seed {seed}: {} acks for {} deliveries",
            kind("ack"),
            stats.counts.delivered
        );

        let push = run(&pushed, seed);
        assert!(push.ok(), "{}", push.failure_report("push"));
        let push_kind = |name: &str| push.stats.packets.by_kind.get(name).copied().unwrap_or(0);
        assert_eq!(
            push_kind("notify"),
            0,
            "seed {seed}: at the threshold, push"
        );
        assert!(push_kind("deliver") > 0);
        // Either way every device ends up showing every message.
        assert_eq!(
            push.stats.counts.displayed, stats.counts.displayed,
            "seed {seed}"
        );
        assert_eq!(
            stats.counts.displayed,
            stats.counts.committed * members,
            "seed {seed}"
        );
    }
}

// ---- receipts, presence, multi-device ----

#[test]
fn receipts_1to1() {
    holds_over_seeds("receipts-1to1");
}

#[test]
fn multi_device() {
    holds_over_seeds("multi-device");
}

#[test]
fn roaming() {
    holds_over_seeds("roaming");
}

#[test]
fn cluster_failover() {
    holds_over_seeds("cluster-failover");
}

/// The cluster scenario is not vacuous: devices fail over to other gateways, a gateway reports
/// a stale route and the device logs in again, and every message still reaches every device.
#[test]
fn devices_fail_over_and_stale_routes_are_repaired() {
    let scenario = Scenario::load("cluster-failover").unwrap();
    let (mut failovers, mut stale, mut reopened) = (0, 0, 0);
    for seed in 0..10 {
        let outcome = run(&scenario, seed);
        failovers += count_events(&outcome, |node, event| {
            matches!(node, Node::Device(_)) && matches!(event, Event::FailedOver { .. })
        });
        let stale_devices: Vec<_> = device_of_stale_routes(&outcome);
        stale += stale_devices.len();
        reopened += count_events(&outcome, |node, event| {
            *node == Node::Server
                && matches!(event, Event::SessionOpened { device, .. } if stale_devices.contains(device))
        });
    }
    assert!(failovers >= 10, "{failovers} failovers in 10 seeds");
    assert!(stale > 0, "no stale route in 10 seeds");
    assert!(reopened > 0, "no device with a stale route logged in again");
}

/// `cluster-failover`'s gateways hold five connections for their four devices: the devices of
/// a dead gateway overflow the next one, are refused as full, and still get in (through the gateway
/// after, or the same one once a connection expires).
#[test]
fn a_full_gateway_refuses_logins_and_the_refused_devices_get_in_later() {
    let scenario = Scenario::load("cluster-failover").unwrap();
    let (mut refused, mut in_later) = (0, 0);
    for seed in 0..10 {
        let outcome = run(&scenario, seed);
        let mut waiting = std::collections::BTreeSet::new();
        for record in &outcome.history.records {
            let (Node::Device(device), Entry::Protocol(event)) = (&record.node, &record.entry)
            else {
                continue;
            };
            match event {
                Event::LoginFailed { refused: true } => {
                    refused += 1;
                    waiting.insert(*device);
                }
                Event::LoggedIn { .. } if waiting.remove(device) => in_later += 1,
                _ => {}
            }
        }
        assert!(
            waiting.is_empty(),
            "seed {seed}: {waiting:?} refused and never got in"
        );
    }
    assert!(refused >= 10, "{refused} refused logins in 10 seeds");
    assert!(in_later > 0);
}

#[test]
fn a_gateway_connection_cap_without_gateways_or_of_zero_is_refused() {
    let scenario = |topology: &str| {
        format!(
            "name = \"bad\"\n[topology]\nusers = 2\n{topology}\n[workload]\n\
             duration_ms = 1_000\nmessages = 1\n[faults]\nswarm = false\n"
        )
    };
    let error = Scenario::parse("bad.toml", &scenario("gateway_connections_max = 4"))
        .expect_err("no gateways")
        .to_string();
    assert!(
        error.contains("bad.toml") && error.contains("topology.gateway_connections_max needs"),
        "{error}"
    );
    let error = Scenario::parse(
        "bad.toml",
        &scenario("gateways = 2\ngateway_connections_max = 0"),
    )
    .expect_err("zero")
    .to_string();
    assert!(
        error.contains("topology.gateway_connections_max = 0 is out of range"),
        "{error}"
    );
    Scenario::parse(
        "good.toml",
        &scenario("gateways = 2\ngateway_connections_max = 1"),
    )
    .expect("one connection per gateway is allowed");
}

#[test]
fn sharded_logic() {
    holds_over_seeds("sharded-logic");
}

/// The sharded scenario is not vacuous: every shard commits, logic crashes hand shards over, and
/// a handed-over shard goes on committing after the last seq its old owner stored.
#[test]
fn every_shard_commits_and_shards_are_handed_over() {
    let scenario = Scenario::load("sharded-logic").unwrap();
    let (mut handovers, mut shards) = (0, std::collections::BTreeSet::new());
    for seed in 0..10 {
        let outcome = run(&scenario, seed);
        handovers += outcome
            .history
            .records
            .iter()
            .filter(|r| {
                matches!(
                    r.entry,
                    Entry::Harness(HarnessEvent::ShardHandedOver { .. })
                )
            })
            .count();
        for event in server_events(&outcome) {
            if let Event::Committed { conv, .. } = event {
                shards.insert(imsim_model::cluster::shard_of(*conv, 3));
            }
        }
    }
    assert!(handovers > 0, "no shard handed over in 10 seeds");
    assert_eq!(shards.len(), 3, "commits on shards {shards:?}");
}

fn device_of_stale_routes(outcome: &RunOutcome) -> Vec<imsim_model::DeviceId> {
    server_events(outcome)
        .filter_map(|event| match event {
            Event::RouteStale { device, .. } => Some(*device),
            _ => None,
        })
        .collect()
}

fn server_events(outcome: &RunOutcome) -> impl Iterator<Item = &Event> {
    outcome
        .history
        .records
        .iter()
        .filter(|record| record.node == Node::Server)
        .filter_map(|record| match &record.entry {
            Entry::Protocol(event) => Some(event),
            Entry::Harness(_) => None,
        })
}

#[test]
fn presence_push() {
    holds_over("presence-push", 0..20);
}

#[test]
fn presence_pull() {
    holds_over("presence-pull", 0..20);
}

#[test]
fn presence_flapping() {
    holds_over_seeds("presence-flapping");
}

/// receipts-group: a 500-member group; about a second a seed in the test profile.
#[test]
fn receipts_group() {
    holds_over("receipts-group", 0..2);
}

fn count_events(outcome: &RunOutcome, matches: impl Fn(&Node, &Event) -> bool) -> usize {
    outcome
        .history
        .records
        .iter()
        .filter(|record| match &record.entry {
            Entry::Protocol(event) => matches(&record.node, event),
            Entry::Harness(_) => false,
        })
        .count()
}

/// The receipt scenarios are not vacuous: reads are recorded, peers and siblings see the ticks,
/// and senders see read counts.
#[test]
fn reads_reach_peers_siblings_and_senders() {
    let outcome = run(&Scenario::load("receipts-1to1").unwrap(), 1);
    let advanced = count_events(&outcome, |_, e| matches!(e, Event::ReadAdvanced { .. }));
    let seen = count_events(&outcome, |_, e| matches!(e, Event::ReadSeen { .. }));
    assert!(advanced >= 10, "reads recorded: {advanced}");
    assert!(
        seen >= 2 * advanced,
        "each read seen by the peer and the sibling: {seen}"
    );
    let outcome = run(&Scenario::load("multi-device").unwrap(), 1);
    let counts = count_events(&outcome, |_, e| matches!(e, Event::ReadCountSeen { .. }));
    assert!(counts > 0, "group senders see read counts");
}

/// presence-flapping's dead phones are detected by the session timeout, and contacts hear it.
#[test]
fn dead_phones_go_offline_by_timeout_and_contacts_hear_it() {
    let outcome = run(&Scenario::load("presence-flapping").unwrap(), 1);
    let timeouts = count_events(&outcome, |node, e| {
        *node == Node::Server
            && matches!(
                e,
                Event::SessionClosed {
                    reason: imsim_model::SessionEnd::Timeout,
                    ..
                }
            )
    });
    assert!(timeouts >= 2, "sessions expired: {timeouts}");
    let offline_seen = count_events(&outcome, |_, e| {
        matches!(e, Event::PresenceSeen { online: false, .. })
    });
    assert!(offline_seen > 0);
}

/// Same population and seed: push sends each change to the contacts; pull sends nothing per
/// change but answers the open conversation's polls.
#[test]
fn push_and_pull_presence_differ_in_what_they_send() {
    let push = run(&Scenario::load("presence-push").unwrap(), 1);
    let pull = run(&Scenario::load("presence-pull").unwrap(), 1);
    let kind = |outcome: &RunOutcome, kind: &str| {
        outcome
            .stats
            .packets
            .by_kind
            .get(kind)
            .copied()
            .unwrap_or(0)
    };
    assert!(kind(&push, "presence") > 0);
    assert_eq!(kind(&pull, "presence"), 0, "pull mode pushes nothing");
    assert!(kind(&pull, "presence_query") > 0);
    assert!(push.stats.counts.presence_changes > 0 && pull.stats.counts.presence_changes > 0);
}

/// A roaming device starts empty, pulls the history in pages, and ends showing everything.
#[test]
fn a_roaming_device_pulls_history_in_pages() {
    let outcome = run(&Scenario::load("roaming").unwrap(), 1);
    let roaming: Vec<_> = outcome
        .setup
        .plan
        .commands
        .iter()
        .filter(|(_, commands)| commands.first().is_some_and(|(at_ms, _)| *at_ms > 1_000))
        .map(|(device, _)| *device)
        .collect();
    assert_eq!(roaming.len(), 4, "{roaming:?}");
    let pages = count_events(&outcome, |node, e| {
        matches!(node, Node::Device(d) if roaming.contains(d))
            && matches!(
                e,
                Event::PullSent {
                    reason: PullReason::NextPage,
                    ..
                }
            )
    });
    assert!(pages > 0, "a fresh device pages through the history");
}
