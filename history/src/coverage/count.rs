//! Counting coverage signals in a history: one pass over the records, in order, with the little
//! state the composite signals need (sends not yet acked, commits not yet acked, each device's
//! cursor and hold-back buffer, offline periods, group membership).

use super::Signal;
use crate::faults::PlacementKind;
use crate::{Entry, HarnessEvent, History, Node, Record};
use imsim_model::{
    ClientMsgId, ConvId, DeviceId, Event, MembershipChange, PullReason, Rejection, Seq, SessionEnd,
    UserId, Via,
};
use std::collections::{BTreeMap, BTreeSet};

/// A message committed this long (or less) before its sender's removal or leave races it.
pub const REMOVAL_RACE_MS: u64 = 1_000;

/// A device whose first login comes this long after the start was installed mid-run (the
/// workload brings every other device online within its first half second).
pub const ROAMING_AFTER_MS: u64 = 1_000;

/// Consecutive seqs whose senders' clocks disagree by more than this count as inverted; below
/// it, network delay alone inverts them and the signal would say nothing about skew.
pub const CLOCK_INVERSION_MIN_MS: u64 = 1_000;

/// How often each signal occurred in `history`; every signal is a key (zero when not hit).
pub fn signals(history: &History) -> BTreeMap<Signal, u64> {
    let mut tracker = Tracker::default();
    for record in &history.records {
        tracker.observe(record);
    }
    let mut counts: BTreeMap<Signal, u64> = Signal::ALL.iter().map(|s| (*s, 0)).collect();
    for (signal, count) in tracker.counts {
        counts.insert(signal, count);
    }
    counts
}

/// A send not yet acked or failed, and what the world was like when it was requested.
struct PendingSend {
    server_crashes: u64,
    device_crashes: u64,
    logged_out: bool,
}

/// One device's view of one conversation.
#[derive(Default)]
struct Receiver {
    cursor: Seq,
    /// Seqs waiting in the hold-back buffer.
    held: BTreeSet<Seq>,
    /// The `after` of a gap pull still waiting for the cursor to pass it.
    gap_pull_after: Option<Seq>,
}

#[derive(Default)]
struct Tracker {
    counts: BTreeMap<Signal, u64>,
    /// The protocol's body limit, from the run's header.
    body_bytes_max: Option<usize>,
    devices: Vec<DeviceId>,
    user_of: BTreeMap<DeviceId, UserId>,
    server_crashes: u64,
    device_crashes: BTreeMap<DeviceId, u64>,
    pending_sends: BTreeMap<(DeviceId, ClientMsgId), PendingSend>,
    /// The server crash count when each message was committed.
    committed_after_crashes: BTreeMap<(DeviceId, ClientMsgId), u64>,
    client_time_ms: BTreeMap<(DeviceId, ClientMsgId), u64>,
    /// The sender's clock of each conversation's last commit.
    last_commit_client_time_ms: BTreeMap<ConvId, u64>,
    commit_time_ms: BTreeMap<(ConvId, Seq), u64>,
    /// Logged-out periods of each device, `[start, end)`; the last is open while logged out.
    logged_out: BTreeMap<DeviceId, Vec<(u64, u64)>>,
    receivers: BTreeMap<(DeviceId, ConvId), Receiver>,
    abandoned_pushes: BTreeSet<(DeviceId, ConvId, Seq)>,
    /// Devices whose next resume pull follows a server restart, or their own restart.
    resume_after_server: BTreeSet<DeviceId>,
    resume_after_restart: BTreeSet<DeviceId>,
    /// When each user's last ordinary message in each conversation was committed.
    last_message_ms: BTreeMap<(ConvId, UserId), u64>,
    /// Users removed from (or who left) each conversation and not added back.
    removed: BTreeSet<(ConvId, UserId)>,
    /// The device whose read last moved each (conversation, user) watermark.
    last_reader: BTreeMap<(ConvId, UserId), DeviceId>,
    /// Per (device, user): shown online at the moment.
    shown_online: BTreeSet<(DeviceId, UserId)>,
    /// Sessions the server expired, waiting for the presence change they cause.
    expired: BTreeSet<UserId>,
    /// Each device's first login, and whether it came after the run's first second (roaming).
    first_login_ms: BTreeMap<DeviceId, u64>,
    /// Each device's latest login.
    last_login_ms: BTreeMap<DeviceId, u64>,
    /// Cluster: devices that failed over and have not logged in through the new gateway yet.
    failing_over: BTreeSet<DeviceId>,
    /// Devices whose latest failed login was refused (not merely unanswered), until they log in.
    refused_login: BTreeSet<DeviceId>,
    /// Cluster: devices whose route was reported stale, until their next session opens.
    stale_routes: BTreeSet<DeviceId>,
    /// A placed crash that fired, until the server recovers from it.
    placed_crash: Option<PlacementKind>,
    /// Groups where a placed membership change was let in during a sync, until it commits.
    placed_membership: BTreeSet<ConvId>,
    /// Queue: the consumer crashed and the queue has not redelivered to it since.
    consumer_crashed: bool,
}

impl Tracker {
    fn hit(&mut self, signal: Signal) {
        *self.counts.entry(signal).or_insert(0) += 1;
    }

    fn observe(&mut self, record: &Record) {
        match (&record.entry, record.node) {
            (Entry::Harness(event), _) => self.harness(event),
            (Entry::Protocol(event), Node::Device(device)) => {
                self.device(record.t_ms, device, event)
            }
            (Entry::Protocol(event), _) => self.server(record.t_ms, event),
        }
    }

    fn harness(&mut self, event: &HarnessEvent) {
        match event {
            HarnessEvent::RunStarted(start) => {
                self.body_bytes_max = Some(start.protocol.body_bytes_max as usize);
                for user in &start.topology.users {
                    for device in &user.devices {
                        self.devices.push(*device);
                        self.user_of.insert(*device, user.user);
                    }
                }
            }
            HarnessEvent::PartitionHealed { device } => {
                let low = (*device, ClientMsgId(0));
                let high = (*device, ClientMsgId(u64::MAX));
                if self.pending_sends.range(low..=high).next().is_some() {
                    self.hit(Signal::PartitionHealedWithPendingSends);
                }
            }
            HarnessEvent::NodeCrashed {
                crashed: Node::Server,
            } => self.server_crashes += 1,
            HarnessEvent::ShardHandedOver { .. } => self.hit(Signal::ShardHandedOver),
            HarnessEvent::QueueDuplicateSkipped { .. } => {
                self.hit(Signal::QueueRedeliveryDeduplicated)
            }
            HarnessEvent::ConsumerCrashed => self.consumer_crashed = true,
            // A redelivery always covers deliveries not acked (`from < through`): after a
            // consumer crash, those the crashed consumer took or would have taken.
            HarnessEvent::QueueRedelivered { from, through }
                if self.consumer_crashed && from < through =>
            {
                self.consumer_crashed = false;
                self.hit(Signal::QueueRedeliveredAfterConsumerCrash);
            }
            HarnessEvent::NodeCrashed {
                crashed: Node::Device(device),
            } => {
                *self.device_crashes.entry(*device).or_insert(0) += 1;
                // The hold-back buffer is in memory: it dies with the app.
                for ((owner, _), receiver) in self.receivers.iter_mut() {
                    if owner == device {
                        receiver.held.clear();
                        receiver.gap_pull_after = None;
                    }
                }
            }
            HarnessEvent::NodeRestarted {
                restarted: Node::Server,
            } => self
                .resume_after_server
                .extend(self.devices.iter().copied()),
            HarnessEvent::NodeRestarted {
                restarted: Node::Device(device),
            } => {
                self.resume_after_restart.insert(*device);
            }
            HarnessEvent::PlacementFired {
                kind: PlacementKind::MembershipInSyncWindow,
                conv,
            } => {
                self.placed_membership.insert(*conv);
            }
            HarnessEvent::PlacementFired { kind, .. } => self.placed_crash = Some(*kind),
            _ => {}
        }
    }

    fn device(&mut self, t_ms: u64, device: DeviceId, event: &Event) {
        match event {
            Event::LoggedIn { .. } => {
                if self.failing_over.remove(&device) {
                    self.hit(Signal::FailedOver);
                }
                if self.refused_login.remove(&device) {
                    self.hit(Signal::LoginRefusedThenIn);
                }
                self.first_login_ms.entry(device).or_insert(t_ms);
                self.last_login_ms.insert(device, t_ms);
                if let Some(period) = self
                    .logged_out
                    .get_mut(&device)
                    .and_then(|periods| periods.last_mut())
                {
                    period.1 = period.1.min(t_ms);
                }
            }
            Event::SessionLost { reason } => {
                self.forget_gap_pulls(device);
                match reason {
                    SessionEnd::Logout => self
                        .logged_out
                        .entry(device)
                        .or_default()
                        .push((t_ms, u64::MAX)),
                    SessionEnd::Timeout => self.hit(Signal::SessionTimedOut),
                    SessionEnd::ServerForgot => self.hit(Signal::SessionForgottenByServer),
                    SessionEnd::Replaced | SessionEnd::Unroutable => {}
                }
            }
            Event::FailedOver { .. } => {
                self.failing_over.insert(device);
            }
            Event::LoginFailed { refused: true } => {
                self.refused_login.insert(device);
            }
            Event::SendRequested {
                client_msg_id,
                client_time_ms,
                ..
            } => {
                let pending = PendingSend {
                    server_crashes: self.server_crashes,
                    device_crashes: self.device_crashes.get(&device).copied().unwrap_or(0),
                    logged_out: self.is_logged_out(device, t_ms),
                };
                self.pending_sends.insert((device, *client_msg_id), pending);
                self.client_time_ms
                    .insert((device, *client_msg_id), *client_time_ms);
            }
            Event::SendAcked { client_msg_id, .. } => self.send_acked(device, *client_msg_id),
            Event::SendFailed { client_msg_id, .. } => {
                self.pending_sends.remove(&(device, *client_msg_id));
            }
            Event::Retransmitted { .. } => self.hit(Signal::Retransmitted),
            Event::ReadSeen { conv, user, .. } => {
                if self.user_of.get(&device) != Some(user) {
                    self.hit(Signal::ReadTickSeen);
                } else if self
                    .last_reader
                    .get(&(*conv, *user))
                    .is_some_and(|reader| *reader != device)
                {
                    self.hit(Signal::ReadSyncedToSibling);
                }
            }
            Event::ReadCountSeen { .. } => self.hit(Signal::ReadCountSeen),
            Event::ReadersSeen { readers, .. } if !readers.is_empty() => {
                self.hit(Signal::ReaderListSeen)
            }
            Event::PresenceSeen { user, online } => {
                let was_online = if *online {
                    !self.shown_online.insert((device, *user))
                } else {
                    self.shown_online.remove(&(device, *user))
                };
                if was_online && !*online {
                    self.hit(Signal::ContactSeenOffline);
                }
            }
            Event::DuplicateDropped { .. } => self.hit(Signal::DuplicateDropped),
            Event::HeldBack { conv, seq } => {
                self.hit(Signal::HeldBack);
                self.receiver(device, *conv).held.insert(*seq);
            }
            Event::HoldBackOverflow { conv, seq } => {
                self.receiver(device, *conv).held.remove(seq);
            }
            Event::PullSent {
                conv,
                after,
                reason,
            } => self.pull_sent(device, *conv, *after, *reason),
            Event::CursorAdvanced { conv, cursor } => self.cursor_advanced(device, *conv, *cursor),
            Event::Displayed {
                conv,
                seq,
                sender_user,
                sender_device,
                via,
                ..
            } => {
                let committed_ms = self.commit_time_ms.get(&(*conv, *seq)).copied();
                let logged_in_ms = self.last_login_ms.get(&device).copied();
                // Brought by a resume pull in a session that began before the commit: not a
                // login's catch-up but the heartbeat's sync key repairing a lost delivery.
                if *via == Some(Via::Pull(PullReason::Resume))
                    && logged_in_ms.is_some_and(|login| committed_ms.is_some_and(|c| login < c))
                {
                    self.hit(Signal::SyncKeyRepaired);
                }
                if self.abandoned_pushes.remove(&(device, *conv, *seq)) {
                    self.hit(Signal::AbandonedPushCaughtUp);
                }
                if committed_ms.is_some_and(|t| self.is_logged_out(device, t)) {
                    self.hit(Signal::DeliveredAfterOffline);
                }
                if *sender_device != device && self.user_of.get(&device) == Some(sender_user) {
                    self.hit(Signal::MultiDeviceEcho);
                }
                let first_login = self.first_login_ms.get(&device).copied();
                let late = first_login.filter(|first| *first > ROAMING_AFTER_MS);
                if late.is_some_and(|first| committed_ms.is_some_and(|c| c < first)) {
                    self.hit(Signal::RoamingDeviceCaughtUp);
                }
            }
            _ => {}
        }
    }

    /// Whether `device` was logged out (on purpose) at `t_ms`.
    fn is_logged_out(&self, device: DeviceId, t_ms: u64) -> bool {
        self.logged_out.get(&device).is_some_and(|periods| {
            periods
                .iter()
                .any(|(start, end)| *start <= t_ms && t_ms < *end)
        })
    }

    fn send_acked(&mut self, device: DeviceId, client_msg_id: ClientMsgId) {
        let Some(pending) = self.pending_sends.remove(&(device, client_msg_id)) else {
            return;
        };
        if pending.server_crashes < self.server_crashes {
            self.hit(Signal::SendSpannedServerCrash);
        }
        // Durable before a crash, but its ack reached the device only after the restart: the
        // crash fell between store and ack (the ack was lost, or the server never sent it).
        let committed = self
            .committed_after_crashes
            .get(&(device, client_msg_id))
            .copied();
        if committed.is_some_and(|crashes| crashes < self.server_crashes) {
            self.hit(Signal::CrashBetweenStoreAndAck);
        }
        if pending.device_crashes < self.device_crashes.get(&device).copied().unwrap_or(0) {
            self.hit(Signal::SendSurvivedDeviceRestart);
        }
        if pending.logged_out {
            self.hit(Signal::OfflineSendDelivered);
        }
    }

    fn receiver(&mut self, device: DeviceId, conv: ConvId) -> &mut Receiver {
        self.receivers.entry((device, conv)).or_default()
    }

    /// Forgets every gap pull of `device`: their answers are lost with the session, and what
    /// moves the cursor next is the resume after the next login.
    fn forget_gap_pulls(&mut self, device: DeviceId) {
        for ((owner, _), receiver) in self.receivers.iter_mut() {
            if *owner == device {
                receiver.gap_pull_after = None;
            }
        }
    }

    fn pull_sent(&mut self, device: DeviceId, conv: ConvId, after: Seq, reason: PullReason) {
        match reason {
            PullReason::Resume => {
                if self.resume_after_server.remove(&device) {
                    self.hit(Signal::ResumeAfterServerCrash);
                }
                if self.resume_after_restart.remove(&device) {
                    self.hit(Signal::ResumeAfterDeviceRestart);
                }
            }
            PullReason::Gap => self.receiver(device, conv).gap_pull_after = Some(after),
            PullReason::NextPage => self.hit(Signal::PagedPull),
            PullReason::Retry => self.hit(Signal::PullRetried),
            PullReason::Notified => self.hit(Signal::NotifyThenPull),
        }
    }

    fn cursor_advanced(&mut self, device: DeviceId, conv: ConvId, cursor: Seq) {
        let receiver = self.receiver(device, conv);
        let jumped = cursor.0 > receiver.cursor.0 + 1;
        receiver.cursor = cursor;
        let mut released = false;
        while receiver.held.first().is_some_and(|seq| *seq <= cursor) {
            receiver.held.pop_first();
            released = true;
        }
        let pulled = receiver.gap_pull_after.is_some_and(|after| cursor > after);
        let by_push = released && receiver.gap_pull_after.is_none();
        if pulled {
            receiver.gap_pull_after = None;
        }
        if jumped {
            self.hit(Signal::BatchedAck);
        }
        if pulled {
            self.hit(Signal::GapFilledByPull);
        }
        if by_push {
            self.hit(Signal::HoleFilledByPush);
        }
    }

    fn server(&mut self, t_ms: u64, event: &Event) {
        match event {
            Event::Committed {
                conv,
                seq,
                sender_user,
                sender_device,
                client_msg_id,
                change,
                body,
                ..
            } => {
                if Some(body.len()) == self.body_bytes_max {
                    self.hit(Signal::BodyAtLimitCommitted);
                }
                self.commit_time_ms.entry((*conv, *seq)).or_insert(t_ms);
                self.committed_after_crashes
                    .entry((*sender_device, *client_msg_id))
                    .or_insert(self.server_crashes);
                match change {
                    Some(change) => {
                        if self.placed_membership.remove(conv) {
                            self.hit(Signal::PlacedMembershipInSyncWindow);
                        }
                        self.membership_changed(t_ms, *conv, *sender_user, *change)
                    }
                    None => {
                        self.last_message_ms.insert((*conv, *sender_user), t_ms);
                        self.clock_order(*conv, *sender_device, *client_msg_id);
                    }
                }
            }
            Event::RetransmitDeduplicated { .. } => self.hit(Signal::RetransmitDeduplicated),
            Event::OutOfOrderDropped { .. } => self.hit(Signal::OutOfOrderSendDropped),
            Event::Rejected { reason, .. } => match reason {
                Rejection::NotMember => self.hit(Signal::SendRefusedNotMember),
                Rejection::NoEffect => self.hit(Signal::MembershipChangeNoEffect),
                Rejection::BodyTooLarge => self.hit(Signal::BodyTooLargeRefused),
                Rejection::UnknownUser => self.hit(Signal::UnknownUserAddRefused),
                _ => {}
            },
            Event::Recovered {
                lost_unsynced_writes,
                ..
            } => {
                let placed = self.placed_crash.take();
                if *lost_unsynced_writes > 0 {
                    self.hit(Signal::UnsyncedWritesLost);
                    match placed {
                        Some(PlacementKind::CrashInSyncWindow) => {
                            self.hit(Signal::PlacedCrashInSyncWindow)
                        }
                        Some(PlacementKind::DuplicateBeforeCrash) => {
                            self.hit(Signal::PlacedDuplicateBeforeCrash)
                        }
                        _ => {}
                    }
                }
            }
            Event::PushAbandoned { device, conv, seq } => {
                self.hit(Signal::PushAbandoned);
                self.abandoned_pushes.insert((*device, *conv, *seq));
            }
            Event::SessionClosed { reason, device, .. } => match reason {
                SessionEnd::Timeout => {
                    self.hit(Signal::SessionExpiredByServer);
                    if let Some(user) = self.user_of.get(device).copied() {
                        self.expired.insert(user);
                    }
                }
                SessionEnd::Replaced => self.hit(Signal::SessionReplaced),
                SessionEnd::Logout | SessionEnd::ServerForgot | SessionEnd::Unroutable => {}
            },
            Event::RouteStale { device, .. } => {
                self.stale_routes.insert(*device);
            }
            Event::SessionOpened { device, .. } if self.stale_routes.remove(device) => {
                self.hit(Signal::StaleRouteRepaired);
            }
            Event::ReadAdvanced {
                conv, user, device, ..
            } => {
                self.hit(Signal::ReadAdvanced);
                self.last_reader.insert((*conv, *user), *device);
            }
            Event::ReadIgnored { .. } => self.hit(Signal::ReadIgnoredStale),
            Event::PresenceChanged { user, online, .. } => {
                // Any change settles the expiry; only going offline is the signal.
                let expired = self.expired.remove(user);
                if expired && !*online {
                    self.hit(Signal::OfflineByTimeout);
                }
            }
            _ => {}
        }
    }

    fn membership_changed(
        &mut self,
        t_ms: u64,
        conv: ConvId,
        sender: UserId,
        change: MembershipChange,
    ) {
        let subject = change.subject(sender);
        match change {
            MembershipChange::Add(_) => {
                self.hit(Signal::MemberAdded);
                if self.removed.remove(&(conv, subject)) {
                    self.hit(Signal::MemberReadded);
                }
                return;
            }
            MembershipChange::Remove(_) => self.hit(Signal::MemberRemoved),
            MembershipChange::Leave => self.hit(Signal::MemberLeft),
        }
        self.removed.insert((conv, subject));
        let last = self.last_message_ms.get(&(conv, subject)).copied();
        if last.is_some_and(|last| t_ms.saturating_sub(last) <= REMOVAL_RACE_MS) {
            self.hit(Signal::SendRacesRemoval);
        }
    }

    fn clock_order(&mut self, conv: ConvId, sender: DeviceId, client_msg_id: ClientMsgId) {
        let Some(this_ms) = self.client_time_ms.get(&(sender, client_msg_id)).copied() else {
            return;
        };
        let previous = self.last_commit_client_time_ms.insert(conv, this_ms);
        if previous.is_some_and(|previous| previous > this_ms + CLOCK_INVERSION_MIN_MS) {
            self.hit(Signal::ClockOrderInverted);
        }
    }
}

#[cfg(test)]
mod tests;
