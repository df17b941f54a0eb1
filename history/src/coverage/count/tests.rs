//! Counting on hand-made histories: each composite signal is counted when its story happens,
//! and not when a near miss does.

use super::*;
use crate::faults::FaultProfile;
use crate::{ConversationSpec, Direction, RunStart, Topology, UserSpec};
use imsim_model::{ClientSeq, Event, ProtocolConfig};

const U1: UserId = UserId(1);
const U2: UserId = UserId(2);
/// u1 owns d1 and d3; u2 owns d2.
const D1: DeviceId = DeviceId(1);
const D2: DeviceId = DeviceId(2);
const D3: DeviceId = DeviceId(3);
const C1: ConvId = ConvId(1);

fn m(id: u64) -> ClientMsgId {
    ClientMsgId(id)
}

/// A hand-made history: every call appends one record 10 ms after the previous one.
struct Story {
    history: History,
    t_ms: u64,
}

impl Story {
    fn new() -> Story {
        let topology = Topology {
            users: vec![
                UserSpec {
                    user: U1,
                    devices: vec![D1, D3],
                },
                UserSpec {
                    user: U2,
                    devices: vec![D2],
                },
            ],
            conversations: vec![ConversationSpec {
                conv: C1,
                members: vec![U1, U2],
                group: true,
            }],
        };
        let mut story = Story {
            history: History::default(),
            t_ms: 0,
        };
        story.harness(HarnessEvent::RunStarted(Box::new(RunStart {
            scenario: "hand-made".to_string(),
            seed: 0,
            variant: "correct".to_string(),
            topology,
            faults: FaultProfile::default(),
            protocol: Default::default(),
            budget: Default::default(),
        })));
        story
    }

    fn push(&mut self, node: Node, entry: Entry) {
        self.t_ms += 10;
        self.history.push(self.t_ms, node, entry);
    }

    /// Lets `ms` pass before the next record.
    fn wait(&mut self, ms: u64) {
        self.t_ms += ms;
    }

    fn harness(&mut self, event: HarnessEvent) {
        self.push(Node::Harness, Entry::Harness(event));
    }

    fn device(&mut self, device: DeviceId, event: Event) {
        self.push(Node::Device(device), Entry::Protocol(event));
    }

    fn server(&mut self, event: Event) {
        self.push(Node::Server, Entry::Protocol(event));
    }

    fn send(&mut self, device: DeviceId, id: u64, client_time_ms: u64) {
        let event = Event::SendRequested {
            conv: C1,
            client_msg_id: m(id),
            client_seq: ClientSeq(id),
            body: format!("m{id}"),
            client_time_ms,
            change: None,
        };
        self.device(device, event);
    }

    fn commit(&mut self, device: DeviceId, id: u64, seq: u64) {
        self.commit_change(device, id, seq, None);
    }

    fn commit_change(
        &mut self,
        device: DeviceId,
        id: u64,
        seq: u64,
        change: Option<MembershipChange>,
    ) {
        let sender_user = if device == D2 { U2 } else { U1 };
        self.server(Event::Committed {
            conv: C1,
            seq: Seq(seq),
            sender_user,
            sender_device: device,
            client_msg_id: m(id),
            client_seq: ClientSeq(id),
            body: format!("m{id}"),
            change,
        });
    }

    fn ack(&mut self, device: DeviceId, id: u64, seq: u64) {
        let event = Event::SendAcked {
            conv: C1,
            client_msg_id: m(id),
            seq: Seq(seq),
        };
        self.device(device, event);
    }

    fn display(&mut self, device: DeviceId, seq: u64, sender: DeviceId) {
        self.display_via(device, seq, sender, imsim_model::Via::Push);
    }

    fn display_via(&mut self, device: DeviceId, seq: u64, sender: DeviceId, via: imsim_model::Via) {
        let sender_user = if sender == D2 { U2 } else { U1 };
        self.device(
            device,
            Event::Displayed {
                conv: C1,
                seq: Seq(seq),
                sender_user,
                sender_device: sender,
                client_msg_id: m(seq),
                body: String::new(),
                via: Some(via),
            },
        );
    }

    fn cursor(&mut self, device: DeviceId, seq: u64) {
        let event = Event::CursorAdvanced {
            conv: C1,
            cursor: Seq(seq),
        };
        self.device(device, event);
    }

    fn pull(&mut self, device: DeviceId, after: u64, reason: PullReason) {
        let event = Event::PullSent {
            conv: C1,
            after: Seq(after),
            reason,
        };
        self.device(device, event);
    }

    fn session_lost(&mut self, device: DeviceId, reason: SessionEnd) {
        self.device(device, Event::SessionLost { reason });
    }

    fn logged_in(&mut self, device: DeviceId) {
        let session = imsim_model::SessionId(self.t_ms);
        self.device(device, Event::LoggedIn { session });
    }

    fn crash_and_restart(&mut self, node: Node) {
        self.harness(HarnessEvent::NodeCrashed { crashed: node });
        self.harness(HarnessEvent::NodeRestarted { restarted: node });
    }

    fn count(&self, signal: Signal) -> u64 {
        signals(&self.history)[&signal]
    }
}

#[test]
fn every_signal_is_a_key_and_an_empty_history_hits_nothing() {
    let counts = signals(&Story::new().history);
    assert_eq!(counts.len(), Signal::ALL.len());
    assert!(counts.values().all(|count| *count == 0));
}

#[test]
fn partition_healed_counts_only_with_sends_pending() {
    let partition = |story: &mut Story| {
        story.harness(HarnessEvent::PartitionStarted {
            device: D1,
            direction: Direction::Both,
        })
    };
    let heal = HarnessEvent::PartitionHealed { device: D1 };
    let mut pending = Story::new();
    partition(&mut pending);
    pending.send(D1, 1, 0);
    pending.harness(heal.clone());
    assert_eq!(pending.count(Signal::PartitionHealedWithPendingSends), 1);

    let mut acked = Story::new();
    acked.send(D1, 1, 0);
    acked.commit(D1, 1, 1);
    acked.ack(D1, 1, 1);
    partition(&mut acked);
    // Another device's pending send does not count either.
    acked.send(D2, 1, 0);
    acked.harness(heal);
    assert_eq!(acked.count(Signal::PartitionHealedWithPendingSends), 0);
}

#[test]
fn crash_between_store_and_ack_needs_the_commit_before_the_crash() {
    let mut story = Story::new();
    story.send(D1, 1, 0);
    story.commit(D1, 1, 1);
    story.crash_and_restart(Node::Server);
    story.ack(D1, 1, 1);
    assert_eq!(story.count(Signal::CrashBetweenStoreAndAck), 1);
    assert_eq!(story.count(Signal::SendSpannedServerCrash), 1);

    // Committed only after the restart: the send spanned the crash, the store did not.
    let mut later = Story::new();
    later.send(D1, 1, 0);
    later.crash_and_restart(Node::Server);
    later.commit(D1, 1, 1);
    later.ack(D1, 1, 1);
    assert_eq!(later.count(Signal::CrashBetweenStoreAndAck), 0);
    assert_eq!(later.count(Signal::SendSpannedServerCrash), 1);

    // Acked before the crash: neither.
    let mut before = Story::new();
    before.send(D1, 1, 0);
    before.commit(D1, 1, 1);
    before.ack(D1, 1, 1);
    before.crash_and_restart(Node::Server);
    assert_eq!(before.count(Signal::CrashBetweenStoreAndAck), 0);
    assert_eq!(before.count(Signal::SendSpannedServerCrash), 0);
}

#[test]
fn a_send_survives_its_own_device_restart_only() {
    let mut story = Story::new();
    story.send(D1, 1, 0);
    story.crash_and_restart(Node::Device(D2));
    story.ack(D1, 1, 1);
    assert_eq!(story.count(Signal::SendSurvivedDeviceRestart), 0);
    story.send(D1, 2, 0);
    story.crash_and_restart(Node::Device(D1));
    story.ack(D1, 2, 2);
    assert_eq!(story.count(Signal::SendSurvivedDeviceRestart), 1);
}

#[test]
fn offline_signals_follow_logout_periods() {
    let mut story = Story::new();
    story.logged_in(D2);
    story.session_lost(D2, SessionEnd::Logout);
    story.send(D2, 1, 0);
    story.commit(D1, 1, 1);
    story.logged_in(D2);
    story.ack(D2, 1, 2);
    story.display(D2, 1, D1);
    assert_eq!(story.count(Signal::OfflineSendDelivered), 1);
    assert_eq!(story.count(Signal::DeliveredAfterOffline), 1);

    // Online throughout: neither. A timeout is not a logout.
    let mut online = Story::new();
    online.logged_in(D2);
    online.send(D2, 1, 0);
    online.commit(D1, 1, 1);
    online.session_lost(D2, SessionEnd::Timeout);
    online.ack(D2, 1, 2);
    online.display(D2, 1, D1);
    assert_eq!(online.count(Signal::OfflineSendDelivered), 0);
    assert_eq!(online.count(Signal::DeliveredAfterOffline), 0);
    assert_eq!(online.count(Signal::SessionTimedOut), 1);
}

#[test]
fn a_hole_is_filled_by_push_or_by_pull() {
    let mut push = Story::new();
    push.cursor(D2, 1);
    push.device(
        D2,
        Event::HeldBack {
            conv: C1,
            seq: Seq(3),
        },
    );
    push.cursor(D2, 3);
    assert_eq!(push.count(Signal::HeldBack), 1);
    assert_eq!(push.count(Signal::HoleFilledByPush), 1);
    assert_eq!(push.count(Signal::GapFilledByPull), 0);
    assert_eq!(
        push.count(Signal::BatchedAck),
        1,
        "1 to 3 covers two messages"
    );

    let mut pull = Story::new();
    pull.cursor(D2, 1);
    pull.device(
        D2,
        Event::HeldBack {
            conv: C1,
            seq: Seq(3),
        },
    );
    pull.pull(D2, 1, PullReason::Gap);
    pull.cursor(D2, 3);
    assert_eq!(pull.count(Signal::GapFilledByPull), 1);
    assert_eq!(pull.count(Signal::HoleFilledByPush), 0);

    // The session ended before the cursor moved: the resume filled it, not the gap pull.
    let mut lost = Story::new();
    lost.cursor(D2, 1);
    lost.device(
        D2,
        Event::HeldBack {
            conv: C1,
            seq: Seq(3),
        },
    );
    lost.pull(D2, 1, PullReason::Gap);
    lost.session_lost(D2, SessionEnd::ServerForgot);
    lost.cursor(D2, 3);
    assert_eq!(lost.count(Signal::GapFilledByPull), 0);
    assert_eq!(lost.count(Signal::SessionForgottenByServer), 1);
}

#[test]
fn batched_ack_needs_a_jump() {
    let mut story = Story::new();
    story.cursor(D2, 1);
    story.cursor(D2, 2);
    assert_eq!(story.count(Signal::BatchedAck), 0);
    story.cursor(D2, 5);
    assert_eq!(story.count(Signal::BatchedAck), 1);
}

#[test]
fn resumes_count_once_after_each_restart() {
    let mut story = Story::new();
    story.pull(D1, 0, PullReason::Resume);
    assert_eq!(story.count(Signal::ResumeAfterServerCrash), 0);
    story.crash_and_restart(Node::Server);
    story.pull(D1, 0, PullReason::Resume);
    story.pull(D1, 0, PullReason::Resume);
    story.pull(D2, 0, PullReason::Resume);
    assert_eq!(story.count(Signal::ResumeAfterServerCrash), 2);
    assert_eq!(story.count(Signal::ResumeAfterDeviceRestart), 0);
    story.crash_and_restart(Node::Device(D2));
    story.pull(D2, 0, PullReason::Resume);
    assert_eq!(story.count(Signal::ResumeAfterDeviceRestart), 1);
}

#[test]
fn membership_signals() {
    let mut story = Story::new();
    story.commit(D2, 1, 1);
    story.wait(REMOVAL_RACE_MS / 2);
    story.commit_change(D1, 101, 2, Some(MembershipChange::Remove(U2)));
    assert_eq!(story.count(Signal::MemberRemoved), 1);
    assert_eq!(story.count(Signal::SendRacesRemoval), 1);
    assert_eq!(story.count(Signal::MemberReadded), 0);
    story.commit_change(D1, 102, 3, Some(MembershipChange::Add(U2)));
    assert_eq!(story.count(Signal::MemberAdded), 1);
    assert_eq!(story.count(Signal::MemberReadded), 1);
    // Long after u2's last message: no race.
    story.wait(REMOVAL_RACE_MS * 2);
    story.commit_change(D2, 2, 4, Some(MembershipChange::Leave));
    assert_eq!(story.count(Signal::MemberLeft), 1);
    assert_eq!(story.count(Signal::SendRacesRemoval), 1);
    let refused = |reason| Event::Rejected {
        device: Some(D2),
        refused: "send".to_string(),
        reason,
    };
    story.server(refused(Rejection::NotMember));
    story.server(refused(Rejection::NoEffect));
    story.server(refused(Rejection::BodyTooLarge));
    assert_eq!(story.count(Signal::SendRefusedNotMember), 1);
    assert_eq!(story.count(Signal::MembershipChangeNoEffect), 1);
    assert_eq!(story.count(Signal::BodyTooLargeRefused), 1);
    assert_eq!(story.count(Signal::UnknownUserAddRefused), 0);
    story.server(refused(Rejection::UnknownUser));
    assert_eq!(story.count(Signal::UnknownUserAddRefused), 1);
}

#[test]
fn a_body_at_the_limit_counts_only_at_the_limit() {
    let mut story = Story::new();
    let max = ProtocolConfig::default().body_bytes_max as usize;
    let commit = |body: String| Event::Committed {
        conv: C1,
        seq: Seq(1),
        sender_user: U1,
        sender_device: D1,
        client_msg_id: m(1),
        client_seq: ClientSeq(1),
        body,
        change: None,
    };
    story.server(commit("x".repeat(max - 1)));
    assert_eq!(story.count(Signal::BodyAtLimitCommitted), 0);
    story.server(commit("x".repeat(max)));
    assert_eq!(story.count(Signal::BodyAtLimitCommitted), 1);
}

#[test]
fn clock_order_inverted_needs_more_than_a_second() {
    let mut story = Story::new();
    story.send(D1, 1, 10_000);
    story.send(D2, 1, 10_000 - CLOCK_INVERSION_MIN_MS);
    story.send(
        D2,
        2,
        10_000 - CLOCK_INVERSION_MIN_MS - 1 - CLOCK_INVERSION_MIN_MS,
    );
    story.commit(D1, 1, 1);
    story.commit(D2, 1, 2);
    assert_eq!(story.count(Signal::ClockOrderInverted), 0);
    story.commit(D2, 2, 3);
    assert_eq!(story.count(Signal::ClockOrderInverted), 1);
}

#[test]
fn an_abandoned_push_is_caught_up_by_a_later_display() {
    let abandoned = Event::PushAbandoned {
        device: D2,
        conv: C1,
        seq: Seq(1),
    };
    let mut story = Story::new();
    story.display(D2, 1, D1);
    story.server(abandoned.clone());
    assert_eq!(story.count(Signal::PushAbandoned), 1);
    assert_eq!(story.count(Signal::AbandonedPushCaughtUp), 0);
    story.server(abandoned);
    story.display(D2, 1, D1);
    assert_eq!(story.count(Signal::AbandonedPushCaughtUp), 1);
}

#[test]
fn a_resume_pull_in_a_session_older_than_the_commit_is_the_sync_keys_repair() {
    let resume = imsim_model::Via::Pull(PullReason::Resume);
    let login = Event::LoggedIn {
        session: imsim_model::SessionId(1),
    };
    let mut story = Story::new();
    story.device(D2, login.clone());
    story.commit(D1, 1, 1);
    story.display(D2, 1, D1);
    assert_eq!(story.count(Signal::SyncKeyRepaired), 0, "a push");
    story.commit(D1, 2, 2);
    story.device(D2, login);
    story.display_via(D2, 2, D1, resume);
    assert_eq!(
        story.count(Signal::SyncKeyRepaired),
        0,
        "a login's catch-up"
    );
    story.commit(D1, 3, 3);
    story.display_via(D2, 3, D1, resume);
    assert_eq!(story.count(Signal::SyncKeyRepaired), 1);
}

#[test]
fn multi_device_echo_is_the_same_user_on_another_device() {
    let mut story = Story::new();
    story.display(D2, 1, D1);
    story.display(D1, 1, D1);
    assert_eq!(story.count(Signal::MultiDeviceEcho), 0);
    story.display(D3, 1, D1);
    assert_eq!(story.count(Signal::MultiDeviceEcho), 1);
}

fn read_seen(story: &mut Story, device: DeviceId, user: UserId, up_to: u64) {
    let up_to = Seq(up_to);
    story.device(
        device,
        Event::ReadSeen {
            conv: C1,
            user,
            up_to,
        },
    );
}

#[test]
fn a_read_tick_is_the_peers_and_a_sibling_sync_another_devices_read() {
    let mut story = Story::new();
    story.server(Event::ReadAdvanced {
        conv: C1,
        user: U1,
        device: D1,
        up_to: Seq(1),
    });
    assert_eq!(story.count(Signal::ReadAdvanced), 1);
    read_seen(&mut story, D1, U1, 1); // the reader itself: neither
    assert_eq!(story.count(Signal::ReadSyncedToSibling), 0);
    assert_eq!(story.count(Signal::ReadTickSeen), 0);
    read_seen(&mut story, D3, U1, 1); // u1's other device
    assert_eq!(story.count(Signal::ReadSyncedToSibling), 1);
    read_seen(&mut story, D2, U1, 1); // the peer
    assert_eq!(story.count(Signal::ReadTickSeen), 1);
}

#[test]
fn a_reader_list_counts_only_with_a_reader_in_it() {
    let mut story = Story::new();
    let list = |readers: Vec<UserId>| Event::ReadersSeen {
        conv: C1,
        seq: Seq(1),
        readers,
        unread: vec![],
    };
    story.device(D1, list(vec![]));
    assert_eq!(story.count(Signal::ReaderListSeen), 0);
    story.device(D1, list(vec![U2]));
    assert_eq!(story.count(Signal::ReaderListSeen), 1);
}

#[test]
fn offline_by_timeout_is_a_presence_change_after_an_expired_session() {
    let offline = Event::PresenceChanged {
        user: U2,
        online: false,
        notified: vec![],
    };
    let closed = |reason| Event::SessionClosed {
        session: imsim_model::SessionId(1),
        device: D2,
        reason,
    };
    let mut story = Story::new();
    story.server(closed(SessionEnd::Logout));
    story.server(offline.clone());
    assert_eq!(story.count(Signal::OfflineByTimeout), 0);
    story.server(closed(SessionEnd::Timeout));
    story.server(offline);
    assert_eq!(story.count(Signal::OfflineByTimeout), 1);
}

#[test]
fn a_contact_seen_offline_was_shown_online_first() {
    let mut story = Story::new();
    let seen = |online| Event::PresenceSeen { user: U2, online };
    story.device(D1, seen(false)); // the status at login: not a change
    assert_eq!(story.count(Signal::ContactSeenOffline), 0);
    story.device(D1, seen(true));
    story.device(D1, seen(false));
    assert_eq!(story.count(Signal::ContactSeenOffline), 1);
}

#[test]
fn a_roaming_device_catches_up_on_what_was_committed_before_it_came() {
    let logged_in = Event::LoggedIn {
        session: imsim_model::SessionId(1),
    };
    let mut story = Story::new();
    story.device(D1, logged_in.clone());
    story.commit(D1, 1, 1);
    story.display(D1, 1, D1); // an early device: not roaming
    story.wait(ROAMING_AFTER_MS);
    story.device(D3, logged_in);
    story.display(D3, 1, D1);
    story.commit(D1, 2, 2);
    story.display(D3, 2, D1); // live traffic after it came: not catching up
    assert_eq!(story.count(Signal::RoamingDeviceCaughtUp), 1);
}

#[test]
fn a_failover_counts_once_the_device_logs_in_through_the_new_gateway() {
    let logged_in = Event::LoggedIn {
        session: imsim_model::SessionId(2),
    };
    let mut story = Story::new();
    story.device(D1, logged_in.clone()); // an ordinary login
    assert_eq!(story.count(Signal::FailedOver), 0);
    let failed_over = Event::FailedOver {
        from_gateway: 0,
        to_gateway: 1,
    };
    story.device(D1, failed_over);
    assert_eq!(
        story.count(Signal::FailedOver),
        0,
        "not logged in there yet"
    );
    story.device(D1, logged_in);
    assert_eq!(story.count(Signal::FailedOver), 1);
}

#[test]
fn a_refused_login_counts_once_the_device_gets_in() {
    let logged_in = Event::LoggedIn {
        session: imsim_model::SessionId(2),
    };
    let mut story = Story::new();
    story.device(D1, Event::LoginFailed { refused: false }); // unanswered: not refused
    story.device(D1, logged_in.clone());
    assert_eq!(story.count(Signal::LoginRefusedThenIn), 0);
    story.device(D1, Event::LoginFailed { refused: true });
    assert_eq!(story.count(Signal::LoginRefusedThenIn), 0, "not in yet");
    story.device(D1, logged_in);
    assert_eq!(story.count(Signal::LoginRefusedThenIn), 1);
}

#[test]
fn a_stale_route_is_repaired_when_its_device_gets_a_session_again() {
    let opened = |device| Event::SessionOpened {
        session: imsim_model::SessionId(3),
        user: U2,
        device,
    };
    let mut story = Story::new();
    story.server(opened(D2)); // no stale route before: not a repair
    story.server(Event::RouteStale {
        device: D2,
        gateway: 0,
    });
    story.server(opened(D1)); // another device
    assert_eq!(story.count(Signal::StaleRouteRepaired), 0);
    story.server(opened(D2));
    assert_eq!(story.count(Signal::StaleRouteRepaired), 1);
}

#[test]
fn a_shard_handover_is_counted() {
    let mut story = Story::new();
    story.harness(HarnessEvent::LogicCrashed { logic: 0 });
    assert_eq!(story.count(Signal::ShardHandedOver), 0, "a crash alone");
    story.harness(HarnessEvent::ShardHandedOver {
        shard: 0,
        from: 0,
        to: 1,
    });
    assert_eq!(story.count(Signal::ShardHandedOver), 1);
}

#[test]
fn a_skipped_queue_redelivery_is_counted() {
    let mut story = Story::new();
    story.harness(HarnessEvent::QueueRedelivered {
        from: 2,
        through: 5,
    });
    assert_eq!(
        story.count(Signal::QueueRedeliveryDeduplicated),
        0,
        "a redelivery alone"
    );
    story.harness(HarnessEvent::QueueDuplicateSkipped { offset: 2 });
    assert_eq!(story.count(Signal::QueueRedeliveryDeduplicated), 1);
}

#[test]
fn a_redelivery_after_a_consumer_crash_is_counted_once_per_crash() {
    let mut story = Story::new();
    let redelivered = HarnessEvent::QueueRedelivered {
        from: 2,
        through: 5,
    };
    story.harness(redelivered.clone());
    assert_eq!(
        story.count(Signal::QueueRedeliveredAfterConsumerCrash),
        0,
        "no crash before it"
    );
    story.harness(HarnessEvent::ConsumerCrashed);
    story.harness(HarnessEvent::ConsumerRestarted {
        lost_unsynced_writes: 1,
    });
    story.harness(redelivered.clone());
    story.harness(redelivered);
    assert_eq!(story.count(Signal::QueueRedeliveredAfterConsumerCrash), 1);
}
