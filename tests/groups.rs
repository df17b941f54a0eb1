//! Group access on scripted runs, judged on the recorded history: a removed member's send is
//! refused and never committed, a removed member's devices show the removal and nothing after
//! it, a re-added member and a new joiner see the group from their join point on. The checkers
//! judge every run as well (G1, G2, D2 …); these tests pin down the exact story.

use imsim_history::{Entry, Node};
use imsim_model::{ClientMsgId, DeviceId, Event, MembershipChange, Rejection, SendFailure, UserId};
use imsim_sim::{run, RunOutcome, Scenario};

/// Seeds per scripted story: the script is fixed, the seed moves madsim's schedule (link delays,
/// task order) and so the interleaving of pushes, acks and pulls.
const SEEDS: std::ops::Range<u64> = 0..20;

/// A scripted run: `users` users with `devices` devices each, one group of the listed founding
/// members (conversation c1), no faults, and the given script entries (TOML inline tables).
fn scripted(users: u32, devices: u32, founders: &[u32], script: &[&str]) -> Scenario {
    scripted_with(users, devices, founders, script, "")
}

/// [`scripted`] with `[protocol]` settings (TOML lines).
fn scripted_with(
    users: u32,
    devices: u32,
    founders: &[u32],
    script: &[&str],
    protocol: &str,
) -> Scenario {
    let members: Vec<String> = founders.iter().map(|u| u.to_string()).collect();
    let text = format!(
        r#"
        name = "scripted-group"
        [topology]
        users = {users}
        devices_per_user = {devices}
        conversations = []
        [[topology.groups]]
        size = {size}
        members = [{members}]
        [workload]
        duration_ms = 10_000
        messages = 0
        script = [
            {script}
        ]
        [faults]
        swarm = false
        [protocol]
        {protocol}
        "#,
        size = founders.len(),
        members = members.join(", "),
        script = script.join(",\n            "),
    );
    Scenario::parse("scripted-group.toml", &text).expect("a valid scripted scenario")
}

/// Devices 1..=`devices` go online at 0, except the listed ones.
fn online_at_start(devices: u32, except: &[u32]) -> Vec<String> {
    (1..=devices)
        .filter(|d| !except.contains(d))
        .map(|d| format!(r#"{{ at_ms = 0, device = {d}, action = "go-online" }}"#))
        .collect()
}

fn run_ok(scenario: &Scenario, seed: u64) -> RunOutcome {
    let outcome = run(scenario, seed);
    assert!(
        outcome.ok(),
        "seed {seed}:\n{}",
        outcome.failure_report("scripted-group.toml")
    );
    outcome
}

/// The protocol events one device recorded, in order.
fn events_of(outcome: &RunOutcome, device: u32) -> impl Iterator<Item = &Event> {
    outcome
        .history
        .records
        .iter()
        .filter_map(move |record| match (&record.node, &record.entry) {
            (Node::Device(d), Entry::Protocol(event)) if d.0 == device => Some(event),
            _ => None,
        })
}

/// The seqs of c1 a device displayed, in display order.
fn displayed(outcome: &RunOutcome, device: u32) -> Vec<u64> {
    events_of(outcome, device)
        .filter_map(|event| match event {
            Event::Displayed { conv, seq, .. } if conv.0 == 1 => Some(seq.0),
            _ => None,
        })
        .collect()
}

/// A commit the server recorded.
struct Commit {
    seq: u64,
    body: String,
    change: Option<MembershipChange>,
    sender_device: u32,
    client_msg_id: ClientMsgId,
}

fn commits(outcome: &RunOutcome) -> Vec<Commit> {
    outcome
        .history
        .records
        .iter()
        .filter_map(|record| match (&record.node, &record.entry) {
            (
                Node::Server,
                Entry::Protocol(Event::Committed {
                    seq,
                    body,
                    change,
                    sender_device,
                    client_msg_id,
                    ..
                }),
            ) => Some(Commit {
                seq: seq.0,
                body: body.clone(),
                change: *change,
                sender_device: sender_device.0,
                client_msg_id: *client_msg_id,
            }),
            _ => None,
        })
        .collect()
}

/// The seq the server gave the membership change `change`.
fn seq_of_change(outcome: &RunOutcome, change: MembershipChange) -> u64 {
    let found: Vec<u64> = commits(outcome)
        .iter()
        .filter(|commit| commit.change == Some(change))
        .map(|commit| commit.seq)
        .collect();
    assert_eq!(found.len(), 1, "{change:?} committed once: {found:?}");
    found[0]
}

/// The committed head of c1.
fn head(outcome: &RunOutcome) -> u64 {
    commits(outcome).iter().map(|c| c.seq).max().unwrap_or(0)
}

/// Issue 3: "a non-member's send is seen rejected in a run's history". u3 is removed from the
/// group and then sends: its device records `send_failed` with `rejected: not_member`, the
/// server commits nothing of it, and the members never see it. Added back, it sends again and
/// that send commits.
#[test]
fn a_removed_members_send_is_rejected_and_never_committed() {
    let mut script = online_at_start(3, &[]);
    script.extend(
        [
            r#"{ at_ms = 100, device = 1, action = "send", conv = 1, body = "before" }"#,
            r#"{ at_ms = 1_000, device = 1, action = "remove", conv = 1, user = 3 }"#,
            r#"{ at_ms = 3_000, device = 3, action = "send", conv = 1, body = "after removal" }"#,
            r#"{ at_ms = 4_000, device = 2, action = "send", conv = 1, body = "later" }"#,
            r#"{ at_ms = 5_000, device = 2, action = "add", conv = 1, user = 3 }"#,
            r#"{ at_ms = 6_000, device = 3, action = "send", conv = 1, body = "back" }"#,
        ]
        .map(String::from),
    );
    let script: Vec<&str> = script.iter().map(String::as_str).collect();
    let scenario = scripted(3, 1, &[1, 2, 3], &script);
    for seed in SEEDS {
        let outcome = run_ok(&scenario, seed);
        // The device named the message, and then saw it fail with the server's reason.
        let id = events_of(&outcome, 3)
            .find_map(|event| match event {
                Event::SendRequested {
                    body,
                    client_msg_id,
                    ..
                } if body == "after removal" => Some(*client_msg_id),
                _ => None,
            })
            .expect("device 3 requested the send");
        let failures: Vec<SendFailure> = events_of(&outcome, 3)
            .filter_map(|event| match event {
                Event::SendFailed {
                    client_msg_id,
                    reason,
                    ..
                } if *client_msg_id == id => Some(*reason),
                _ => None,
            })
            .collect();
        assert_eq!(
            failures,
            vec![SendFailure::Rejected(Rejection::NotMember)],
            "seed {seed}: device 3's send after its removal fails once, as not_member"
        );
        let server_refusals = outcome
            .history
            .records
            .iter()
            .filter(|record| {
                record.node == Node::Server
                    && matches!(
                        &record.entry,
                        Entry::Protocol(Event::Rejected { device: Some(DeviceId(3)), reason: Rejection::NotMember, refused })
                            if refused == "send"
                    )
            })
            .count();
        assert_eq!(
            server_refusals, 1,
            "seed {seed}: the server's durable refusal is in the history"
        );
        assert!(
            !events_of(&outcome, 3).any(|event| matches!(
                event,
                Event::SendAcked { client_msg_id, .. } if *client_msg_id == id
            )),
            "seed {seed}: the refused send is never acked"
        );
        let commits = commits(&outcome);
        assert!(
            !commits
                .iter()
                .any(|c| c.sender_device == 3 && c.client_msg_id == id),
            "seed {seed}: the server committed the non-member's send"
        );
        assert!(!commits.iter().any(|c| c.body == "after removal"));
        // Added back, u3 sends again: the refused client_seq did not block its next one.
        let back = commits
            .iter()
            .find(|c| c.body == "back")
            .expect("u3's send after its re-add commits");
        assert_eq!(back.sender_device, 3);
        // before, the removal, later, the re-add, back: nothing else took a seq.
        let bodies: Vec<&str> = commits.iter().map(|c| c.body.as_str()).collect();
        assert_eq!(commits.len(), 5, "seed {seed}: {bodies:?}");
        assert_eq!(back.seq, 5, "seed {seed}: {bodies:?}");
        for device in [1, 2] {
            assert_eq!(
                displayed(&outcome, device),
                vec![1, 2, 3, 4, 5],
                "seed {seed}"
            );
        }
        // u3 saw up to its removal, then from its re-add: not "later".
        assert_eq!(displayed(&outcome, 3), vec![1, 2, 4, 5], "seed {seed}");
    }
}

/// u3 is removed and stays out; u4 is removed and added back. Each user has two devices, and
/// one device of each is offline across the changes, so the removal and the re-add reach it by
/// pull at login rather than by push. The removed devices show the removal entry and nothing
/// after it; the re-added ones show the re-add entry and everything after it, nothing between.
#[test]
fn a_removed_member_sees_its_removal_and_nothing_after_and_a_readded_one_its_new_join_point() {
    // u1: d1 d2, u2: d3 d4, u3: d5 d6, u4: d7 d8. d6 and d8 are offline from 200 ms to 7 s.
    let mut script = online_at_start(8, &[]);
    script.extend(
        [
            r#"{ at_ms = 100, device = 1, action = "send", conv = 1, body = "one" }"#,
            r#"{ at_ms = 200, device = 6, action = "go-offline" }"#,
            r#"{ at_ms = 200, device = 8, action = "go-offline" }"#,
            r#"{ at_ms = 1_000, device = 1, action = "remove", conv = 1, user = 3 }"#,
            r#"{ at_ms = 1_500, device = 3, action = "remove", conv = 1, user = 4 }"#,
            r#"{ at_ms = 2_000, device = 2, action = "send", conv = 1, body = "members only" }"#,
            r#"{ at_ms = 2_500, device = 4, action = "send", conv = 1, body = "still members only" }"#,
            r#"{ at_ms = 3_000, device = 1, action = "add", conv = 1, user = 4 }"#,
            r#"{ at_ms = 4_000, device = 7, action = "send", conv = 1, body = "back again" }"#,
            r#"{ at_ms = 5_000, device = 3, action = "send", conv = 1, body = "welcome back" }"#,
            r#"{ at_ms = 7_000, device = 6, action = "go-online" }"#,
            r#"{ at_ms = 7_000, device = 8, action = "go-online" }"#,
        ]
        .map(String::from),
    );
    let script: Vec<&str> = script.iter().map(String::as_str).collect();
    let scenario = scripted(4, 2, &[1, 2, 3, 4], &script);
    for seed in SEEDS {
        let outcome = run_ok(&scenario, seed);
        let removed = seq_of_change(&outcome, MembershipChange::Remove(UserId(3)));
        let removed_then = seq_of_change(&outcome, MembershipChange::Remove(UserId(4)));
        let readded = seq_of_change(&outcome, MembershipChange::Add(UserId(4)));
        let head = head(&outcome);
        assert!(removed < removed_then && removed_then + 1 < readded && readded < head);
        for device in [5, 6] {
            // Everything up to and with its removal, in order, and nothing after it.
            assert_eq!(
                displayed(&outcome, device),
                (1..=removed).collect::<Vec<_>>(),
                "seed {seed}: u3's device {device} (removed at #{removed})"
            );
        }
        let members: Vec<u64> = (1..=head).collect();
        for device in [1, 2, 3, 4] {
            assert_eq!(displayed(&outcome, device), members, "seed {seed}");
        }
        // d7 was online throughout: its first period up to its removal, then the second from
        // the re-add on. d8 was offline across both changes: it owes only its latest period.
        let second_period: Vec<u64> = (readded..=head).collect();
        let both: Vec<u64> = (1..=removed_then).chain(readded..=head).collect();
        assert_eq!(
            displayed(&outcome, 7),
            both,
            "seed {seed}: d7 (u4 removed at #{removed_then}, re-added at #{readded})"
        );
        let shown_by_d8 = displayed(&outcome, 8);
        assert!(
            shown_by_d8.ends_with(&second_period),
            "seed {seed}: d8 shows its latest period whole: {shown_by_d8:?}"
        );
        assert!(
            shown_by_d8
                .iter()
                .all(|seq| *seq <= removed_then || *seq >= readded),
            "seed {seed}: d8 shows nothing between its removal and re-add: {shown_by_d8:?}"
        );
    }
}

/// A member added later sees the group from its join point on: the first thing each of its
/// devices shows is the entry that added it, then everything after. u3 is online when it is
/// added; u4 is offline and logs in afterwards, so its join point comes from the login heads.
#[test]
fn a_joiner_sees_the_group_from_its_join_point_on() {
    let mut script = online_at_start(4, &[4]);
    script.extend(
        [
            r#"{ at_ms = 100, device = 1, action = "send", conv = 1, body = "founders one" }"#,
            r#"{ at_ms = 200, device = 2, action = "send", conv = 1, body = "founders two" }"#,
            r#"{ at_ms = 1_000, device = 1, action = "add", conv = 1, user = 3 }"#,
            r#"{ at_ms = 2_000, device = 2, action = "send", conv = 1, body = "hello u3" }"#,
            r#"{ at_ms = 2_500, device = 3, action = "add", conv = 1, user = 4 }"#,
            r#"{ at_ms = 3_000, device = 3, action = "send", conv = 1, body = "hello all" }"#,
            r#"{ at_ms = 5_000, device = 4, action = "go-online" }"#,
            r#"{ at_ms = 6_000, device = 4, action = "send", conv = 1, body = "thanks" }"#,
        ]
        .map(String::from),
    );
    let script: Vec<&str> = script.iter().map(String::as_str).collect();
    let scenario = scripted(4, 1, &[1, 2], &script);
    for seed in SEEDS {
        let outcome = run_ok(&scenario, seed);
        let head = head(&outcome);
        assert_eq!(head, 7, "seed {seed}: 5 messages and 2 adds");
        for (device, user) in [(3, 3), (4, 4)] {
            let joined = seq_of_change(&outcome, MembershipChange::Add(UserId(user)));
            let shown = displayed(&outcome, device);
            assert_eq!(
                shown.first(),
                Some(&joined),
                "seed {seed}: device {device}'s first display is its add at #{joined}"
            );
            assert_eq!(shown, (joined..=head).collect::<Vec<_>>(), "seed {seed}");
        }
        for device in [1, 2] {
            assert_eq!(displayed(&outcome, device), (1..=head).collect::<Vec<_>>());
        }
    }
}

// ---- notify-then-pull with merged notices ----
//
// Two latency defects `notify_merge_ms` had when it landed, now fixed. No invariant catches
// them (every device still converges, by the heartbeat's sync key), so these tests bound the
// delay on fault-free runs.

/// When a commit was durable, and when a device displayed it (simulated ms).
fn commit_time(outcome: &RunOutcome, seq: u64) -> u64 {
    outcome
        .history
        .records
        .iter()
        .find_map(|record| match (&record.node, &record.entry) {
            (Node::Server, Entry::Protocol(Event::Committed { seq: s, .. })) if s.0 == seq => {
                Some(record.t_ms)
            }
            _ => None,
        })
        .expect("committed")
}

fn display_time(outcome: &RunOutcome, device: u32, seq: u64) -> Option<u64> {
    outcome
        .history
        .records
        .iter()
        .find_map(|record| match (&record.node, &record.entry) {
            (Node::Device(d), Entry::Protocol(Event::Displayed { seq: s, .. }))
                if d.0 == device && s.0 == seq =>
            {
                Some(record.t_ms)
            }
            _ => None,
        })
}

const MERGED_NOTICES: &str = "notify_threshold_members = 10\nnotify_merge_ms = 200";

/// With merged notices the sender's own device is notified of its message, which it already
/// shows. The stale notice used to stay outstanding (the client ignored it, the server cleared a
/// notice only on a pull), so the device missed the next round: d1 showed d2's message at the
/// heartbeat, about 6 s late. Now the client acks a stale notice and the ack clears it.
#[test]
fn merged_notices_reach_an_up_to_date_device_promptly() {
    let mut script = online_at_start(3, &[]);
    script.extend(
        [
            r#"{ at_ms = 1_000, device = 1, action = "send", conv = 1, body = "first" }"#,
            r#"{ at_ms = 9_000, device = 2, action = "send", conv = 1, body = "second" }"#,
        ]
        .map(String::from),
    );
    let script: Vec<&str> = script.iter().map(String::as_str).collect();
    let founders: Vec<u32> = (1..=12).collect();
    let scenario = scripted_with(12, 1, &founders, &script, MERGED_NOTICES);
    for seed in 0..5 {
        let outcome = run_ok(&scenario, seed);
        let committed = commit_time(&outcome, 2);
        let shown = display_time(&outcome, 1, 2).expect("d1 shows the second message");
        assert!(
            shown - committed <= 1_500,
            "seed {seed}: d1 showed #2 {} ms after its commit",
            shown - committed
        );
        let abandoned = outcome
            .history
            .records
            .iter()
            .filter(|r| matches!(&r.entry, Entry::Protocol(Event::PushAbandoned { .. })))
            .count();
        assert_eq!(
            abandoned, 0,
            "seed {seed}: a fault-free run abandons nothing"
        );
    }
}

/// A merged round of notices used to go to the audience of the head when the window closed, so
/// a member removed inside the window was not told and showed its own removal only at its next
/// heartbeat (about 14 s late). A round now reaches everyone who may see any entry since the
/// last round.
#[test]
fn a_member_removed_inside_a_merge_window_is_told_promptly() {
    let mut script = online_at_start(3, &[]);
    script.extend(
        [
            r#"{ at_ms = 1_000, device = 1, action = "remove", conv = 1, user = 3 }"#,
            r#"{ at_ms = 1_100, device = 2, action = "send", conv = 1, body = "right after" }"#,
        ]
        .map(String::from),
    );
    let script: Vec<&str> = script.iter().map(String::as_str).collect();
    let founders: Vec<u32> = (1..=12).collect();
    let scenario = scripted_with(12, 1, &founders, &script, MERGED_NOTICES);
    for seed in 0..5 {
        let outcome = run_ok(&scenario, seed);
        let removal = seq_of_change(&outcome, MembershipChange::Remove(UserId(3)));
        let committed = commit_time(&outcome, removal);
        let shown = display_time(&outcome, 3, removal).expect("d3 shows its removal");
        assert!(
            shown - committed <= 1_500,
            "seed {seed}: d3 showed its removal #{removal} {} ms after its commit",
            shown - committed
        );
    }
}
