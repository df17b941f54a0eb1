//! The client: one device of one user.
//!
//! What it promises its user, and how:
//! - **Sending.** Every message gets a `client_msg_id` and a per-conversation `client_seq` when the
//!   user presses send, and waits in the outbox (bounded by `outbox_max`; a send beyond it is
//!   refused at once) until the server acks it. Up to `send_window_max` messages per conversation
//!   are in flight, always sent in `client_seq` order; on a timeout the whole window is sent again
//!   in order (the server drops a `client_seq` that arrives before its predecessor), with
//!   exponential backoff. Messages wait across disconnects and app restarts.
//! - **Display.** Each conversation is shown as the server's timeline: seq 1, 2, 3 … with no hole
//!   and no repeat. A message ahead of a hole waits in the hold-back buffer; a hole that does not
//!   fill within `gap_timeout_ms` is pulled. The device's own message takes its place when the
//!   server's ack names its seq.
//! - **Cursor.** Per conversation, the highest seq such that everything up to it is displayed.
//!   It is acked to the server (cumulative), persisted, and used to resume after a disconnect.
//! - **Connection.** Log in with backoff; heartbeat; drop the session after a silence of
//!   `server_silence_timeout_ms` and reconnect; pull whatever the server's heads show is missing.

use crate::config::ProtocolConfig;
use crate::event::{Event, PullReason, SendFailure, SessionEnd};
use crate::ids::{Address, ClientMsgId, ClientSeq, ConvId, DeviceId, Seq, SessionId, UserId};
use crate::output::Output;
use crate::time::Time;
use crate::variant::Variant;
use crate::wire::{Head, MembershipChange, Message, Packet, Rejection};
use std::collections::{BTreeMap, VecDeque};

/// Who a device is and where its server is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceIdentity {
    pub user: UserId,
    pub device: DeviceId,
    pub token: u64,
    pub server: Address,
}

/// What the user does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Send {
        conv: ConvId,
        body: String,
    },
    /// Add or remove a member of a group, or leave it: sent like a message (same outbox, order
    /// and idempotence), it takes its place in the group's timeline.
    ChangeMembership {
        conv: ConvId,
        change: MembershipChange,
    },
    /// Open the app: connect and stay connected.
    GoOnline,
    /// Log out: disconnect and stay offline until `GoOnline`.
    GoOffline,
}

pub struct Client {
    config: ProtocolConfig,
    identity: DeviceIdentity,
    /// The device's local database; it survives an app restart.
    store: LocalStore,
    // Volatile state, lost when the app restarts.
    link: Link,
    hold_back: BTreeMap<ConvId, BTreeMap<Seq, Message>>,
    /// Per conversation with a hole: when the hole was last seen to make no progress.
    gap_since: BTreeMap<ConvId, Time>,
    /// Per conversation with a pull in flight: when to give up waiting for its answer.
    pull_deadline: BTreeMap<ConvId, Time>,
    /// Per conversation with displayed but unacknowledged messages: how many, since when.
    ack_pending: BTreeMap<ConvId, (u32, Time)>,
    /// Per conversation with sends in flight: retransmission deadline and timeout.
    retransmit: BTreeMap<ConvId, Retransmit>,
    outputs: VecDeque<Output>,
    armed: Option<Time>,
}

#[derive(Default)]
struct LocalStore {
    online_wanted: bool,
    next_client_msg_id: u64,
    conversations: BTreeMap<ConvId, Conversation>,
}

#[derive(Default)]
struct Conversation {
    cursor: Seq,
    last_client_seq: ClientSeq,
    outbox: VecDeque<Outgoing>,
}

struct Outgoing {
    client_msg_id: ClientMsgId,
    client_seq: ClientSeq,
    body: String,
    client_time_ms: u64,
    change: Option<MembershipChange>,
    /// Sent in the current session (reset when the session ends).
    sent: bool,
}

#[derive(Clone, Copy)]
struct Retransmit {
    deadline: Time,
    timeout_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Link {
    /// The user does not want to be online.
    Offline,
    /// Will try to log in at `retry_at`.
    Waiting {
        retry_at: Time,
        backoff_ms: u64,
    },
    LoggingIn {
        deadline: Time,
        backoff_ms: u64,
    },
    /// `next_heartbeat` is `heartbeat_interval_ms` after the last heartbeat while the server
    /// answers, and `heartbeat_probe_ms` after it while the last one is unanswered.
    Online {
        session: SessionId,
        last_heard: Time,
        last_heartbeat: Time,
        next_heartbeat: Time,
    },
}

impl Client {
    /// A device installed fresh: no local state, offline until told `GoOnline`.
    pub fn new(config: ProtocolConfig, identity: DeviceIdentity) -> Client {
        Client {
            config,
            identity,
            store: LocalStore::default(),
            link: Link::Offline,
            hold_back: BTreeMap::new(),
            gap_since: BTreeMap::new(),
            pull_deadline: BTreeMap::new(),
            ack_pending: BTreeMap::new(),
            retransmit: BTreeMap::new(),
            outputs: VecDeque::new(),
            armed: None,
        }
    }

    /// The app was killed and started again: the local database survives, nothing else does.
    pub fn restart(&mut self, now: Time) {
        self.link = Link::Offline;
        self.hold_back.clear();
        self.gap_since.clear();
        self.pull_deadline.clear();
        self.ack_pending.clear();
        self.retransmit.clear();
        self.outputs.clear();
        self.armed = None;
        for conversation in self.store.conversations.values_mut() {
            conversation
                .outbox
                .iter_mut()
                .for_each(|outgoing| outgoing.sent = false);
        }
        if self.store.online_wanted {
            self.link = self.waiting(now, 0);
        }
        self.rearm();
    }

    // ---- getters ----

    pub fn identity(&self) -> DeviceIdentity {
        self.identity
    }

    pub fn is_online(&self) -> bool {
        matches!(self.link, Link::Online { .. })
    }

    pub fn cursor(&self, conv: ConvId) -> Seq {
        self.store
            .conversations
            .get(&conv)
            .map_or(Seq::ZERO, |c| c.cursor)
    }

    /// Messages waiting for an ack, over all conversations.
    pub fn outbox_len(&self) -> usize {
        self.store
            .conversations
            .values()
            .map(|c| c.outbox.len())
            .sum()
    }

    // ---- inputs ----

    pub fn handle_command(&mut self, now: Time, command: Command) {
        match command {
            Command::Send { conv, body } => self.handle_send(now, conv, body, None),
            Command::ChangeMembership { conv, change } => {
                let body = match change {
                    MembershipChange::Add(user) => format!("adds {user}"),
                    MembershipChange::Remove(user) => format!("removes {user}"),
                    MembershipChange::Leave => "leaves".to_string(),
                };
                self.handle_send(now, conv, body, Some(change));
            }
            Command::GoOnline => {
                self.store.online_wanted = true;
                if self.link == Link::Offline {
                    self.link = self.waiting(now, 0);
                }
            }
            Command::GoOffline => {
                self.store.online_wanted = false;
                if self.is_online() {
                    self.transmit(Packet::Logout);
                    self.lose_session(now, SessionEnd::Logout);
                }
                self.link = Link::Offline;
            }
        }
        self.rearm();
    }

    pub fn handle_packet(&mut self, now: Time, from: Address, packet: Packet) {
        // A logged-out device listens to nothing; only the server speaks to a device.
        if from != self.identity.server || self.link == Link::Offline {
            return;
        }
        let heartbeat_interval_ms = self.config.heartbeat_interval_ms;
        if let Link::Online {
            last_heard,
            last_heartbeat,
            next_heartbeat,
            ..
        } = &mut self.link
        {
            // The server answered: the next heartbeat is a regular one, not a probe.
            *last_heard = now;
            *next_heartbeat = last_heartbeat.plus_ms(heartbeat_interval_ms);
        }
        match packet {
            Packet::LoginOk { session, heads } => self.handle_login_ok(now, session, heads),
            Packet::Error { reason, refused } => self.handle_error(now, reason, &refused),
            Packet::HeartbeatAck { sync_key } => self.handle_sync_key(sync_key),
            Packet::SendAck {
                conv,
                client_msg_id,
                seq,
            } => self.handle_send_ack(now, conv, client_msg_id, seq),
            Packet::SendRejected {
                conv,
                client_msg_id,
                reason,
            } => self.handle_send_rejected(now, conv, client_msg_id, reason),
            Packet::Deliver { message } => {
                let conv = message.conv;
                let before = self.cursor(conv);
                self.accept(message);
                self.after_accept(now, conv, before);
            }
            Packet::PullResponse {
                conv,
                messages,
                head,
            } => self.handle_pull_response(now, conv, messages, head),
            Packet::SyncState { heads } => self.pull_behind(now, &heads),
            Packet::Notify { conv, head } if head > self.cursor(conv) => {
                self.pull(now, conv, PullReason::Notified);
            }
            // News we already have (our own message, merged into a round): say so, so the server
            // clears the notice and can reach us with the next round.
            Packet::Notify { conv, .. } => self.send_ack(conv),
            // Device-bound kinds only; a server never sends the others.
            _ => {}
        }
        self.rearm();
    }

    pub fn handle_timeout(&mut self, now: Time) {
        // The driver's timer is spent: whatever is due next must be armed again.
        self.armed = None;
        self.link_timeouts(now);
        if self.is_online() {
            self.retransmit_timeouts(now);
            self.pull_timeouts(now);
            self.gap_timeouts(now);
            self.ack_timeouts(now);
        }
        self.rearm();
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    // ---- connection ----

    fn waiting(&self, now: Time, backoff_ms: u64) -> Link {
        let next_backoff_ms = (backoff_ms * 2).clamp(
            self.config.reconnect_backoff_initial_ms,
            self.config.reconnect_backoff_max_ms,
        );
        Link::Waiting {
            retry_at: now.plus_ms(backoff_ms),
            backoff_ms: next_backoff_ms,
        }
    }

    fn link_timeouts(&mut self, now: Time) {
        match self.link {
            Link::Offline => {}
            Link::Waiting {
                retry_at,
                backoff_ms,
            } if now >= retry_at => {
                let DeviceIdentity {
                    user,
                    device,
                    token,
                    ..
                } = self.identity;
                self.transmit(Packet::Login {
                    user,
                    device,
                    token,
                });
                let deadline = now.plus_ms(self.config.login_timeout_ms);
                self.link = Link::LoggingIn {
                    deadline,
                    backoff_ms,
                };
            }
            Link::LoggingIn {
                deadline,
                backoff_ms,
            } if now >= deadline => {
                self.link = self.waiting(now, backoff_ms);
            }
            Link::Online {
                last_heard,
                next_heartbeat,
                ..
            } => {
                if now.since_ms(last_heard) >= self.config.server_silence_timeout_ms {
                    self.lose_session(now, SessionEnd::Timeout);
                } else if now >= next_heartbeat {
                    self.transmit(Packet::Heartbeat);
                    // Until an answer comes, probe; an answer moves this back to the interval.
                    let probe_at = now.plus_ms(self.config.heartbeat_probe_ms);
                    if let Link::Online {
                        last_heartbeat,
                        next_heartbeat,
                        ..
                    } = &mut self.link
                    {
                        *last_heartbeat = now;
                        *next_heartbeat = probe_at;
                    }
                }
            }
            _ => {}
        }
    }

    fn handle_login_ok(&mut self, now: Time, session: SessionId, heads: Vec<Head>) {
        // A late answer to a login we gave up on is still a session, and taking it is what lets a
        // device log in at all when the round trip outlasts `login_timeout_ms`. Once online, or
        // logged out, an extra answer is ignored.
        if !matches!(self.link, Link::LoggingIn { .. } | Link::Waiting { .. }) {
            return;
        }
        let next_heartbeat = now.plus_ms(self.config.heartbeat_interval_ms);
        self.link = Link::Online {
            session,
            last_heard: now,
            last_heartbeat: now,
            next_heartbeat,
        };
        self.emit(Event::LoggedIn { session });
        self.pull_behind(now, &heads);
        let convs: Vec<ConvId> = self.store.conversations.keys().copied().collect();
        for conv in convs {
            self.send_window(now, conv);
        }
    }

    fn handle_error(&mut self, now: Time, reason: Rejection, refused: &str) {
        match (reason, self.link) {
            (Rejection::NotLoggedIn, Link::Online { .. }) => {
                self.lose_session(now, SessionEnd::ServerForgot)
            }
            (_, Link::LoggingIn { backoff_ms, .. }) if refused == "login" => {
                self.link = self.waiting(now, backoff_ms);
            }
            // Other refusals concern one request (a pull of a conversation we left, say); the
            // request's own timeout deals with it.
            _ => {}
        }
    }

    fn lose_session(&mut self, now: Time, reason: SessionEnd) {
        self.emit(Event::SessionLost { reason });
        self.pull_deadline.clear();
        self.retransmit.clear();
        for conversation in self.store.conversations.values_mut() {
            conversation
                .outbox
                .iter_mut()
                .for_each(|outgoing| outgoing.sent = false);
        }
        self.link = if self.store.online_wanted && reason != SessionEnd::Logout {
            self.waiting(now, self.config.reconnect_backoff_initial_ms)
        } else {
            Link::Offline
        };
    }

    /// The heartbeat's sync key is the sum of the server's heads; ours is the sum of our cursors.
    fn handle_sync_key(&mut self, sync_key: u64) {
        let ours: u64 = self.store.conversations.values().map(|c| c.cursor.0).sum();
        if sync_key > ours && self.pull_deadline.is_empty() {
            self.transmit(Packet::SyncRequest);
        }
    }

    // ---- sending ----

    fn handle_send(
        &mut self,
        now: Time,
        conv: ConvId,
        body: String,
        change: Option<MembershipChange>,
    ) {
        if self.outbox_len() >= self.config.outbox_max as usize {
            self.emit(Event::SendRefused {
                conv,
                body,
                reason: SendFailure::OutboxFull,
            });
            return;
        }
        self.store.next_client_msg_id += 1;
        let client_msg_id = ClientMsgId(self.store.next_client_msg_id);
        let conversation = self.store.conversations.entry(conv).or_default();
        conversation.last_client_seq = conversation.last_client_seq.next();
        let client_seq = conversation.last_client_seq;
        let client_time_ms = now.0;
        conversation.outbox.push_back(Outgoing {
            client_msg_id,
            client_seq,
            body: body.clone(),
            client_time_ms,
            change,
            sent: false,
        });
        self.emit(Event::SendRequested {
            conv,
            client_msg_id,
            client_seq,
            body,
            client_time_ms,
            change,
        });
        self.send_window(now, conv);
    }

    /// Sends the not-yet-sent messages among the first `send_window_max` of the outbox, in order.
    fn send_window(&mut self, now: Time, conv: ConvId) {
        if !self.is_online() {
            return;
        }
        let sender = self.identity.user;
        let window = self.config.send_window_max as usize;
        let Some(conversation) = self.store.conversations.get_mut(&conv) else {
            return;
        };
        let mut packets = Vec::new();
        for outgoing in conversation
            .outbox
            .iter_mut()
            .take(window)
            .filter(|o| !o.sent)
        {
            outgoing.sent = true;
            packets.push(send_packet(conv, sender, outgoing));
        }
        let in_flight = !conversation.outbox.is_empty();
        for packet in packets {
            self.transmit(packet);
        }
        if in_flight && !self.retransmit.contains_key(&conv) {
            let timeout_ms = self.config.retransmit_initial_ms;
            self.retransmit.insert(
                conv,
                Retransmit {
                    deadline: now.plus_ms(timeout_ms),
                    timeout_ms,
                },
            );
        }
    }

    fn retransmit_timeouts(&mut self, now: Time) {
        let due: Vec<ConvId> = self
            .retransmit
            .iter()
            .filter(|(_, r)| now >= r.deadline)
            .map(|(conv, _)| *conv)
            .collect();
        let sender = self.identity.user;
        let window = self.config.send_window_max as usize;
        for conv in due {
            let Some(conversation) = self.store.conversations.get(&conv) else {
                continue;
            };
            let packets: Vec<Packet> = conversation
                .outbox
                .iter()
                .take(window)
                .filter(|o| o.sent)
                .map(|o| send_packet(conv, sender, o))
                .collect();
            let count = packets.len() as u32;
            for packet in packets {
                self.transmit(packet);
            }
            if count > 0 {
                self.emit(Event::Retransmitted { conv, count });
            }
            let retransmit = self.retransmit.get_mut(&conv).expect("due entries exist");
            retransmit.timeout_ms = (retransmit.timeout_ms * 2).min(self.config.retransmit_max_ms);
            retransmit.deadline = now.plus_ms(retransmit.timeout_ms);
        }
    }

    fn handle_send_ack(&mut self, now: Time, conv: ConvId, client_msg_id: ClientMsgId, seq: Seq) {
        let Some(outgoing) = self.take_outgoing(now, conv, client_msg_id) else {
            return; // A duplicate ack: the message already left the outbox.
        };
        self.emit(Event::SendAcked {
            conv,
            client_msg_id,
            seq,
        });
        // Our own message takes its place in the timeline now that we know its seq.
        let message = Message {
            conv,
            seq,
            sender_user: self.identity.user,
            sender_device: self.identity.device,
            client_msg_id,
            client_seq: outgoing.client_seq,
            body: outgoing.body,
            client_time_ms: outgoing.client_time_ms,
            change: outgoing.change,
        };
        let before = self.cursor(conv);
        self.accept(message);
        self.after_accept(now, conv, before);
    }

    fn handle_send_rejected(
        &mut self,
        now: Time,
        conv: ConvId,
        client_msg_id: ClientMsgId,
        reason: Rejection,
    ) {
        if self.take_outgoing(now, conv, client_msg_id).is_some() {
            self.emit(Event::SendFailed {
                conv,
                client_msg_id,
                reason: SendFailure::Rejected(reason),
            });
        }
    }

    /// Removes a resolved message from the outbox; the window slides and the timer restarts.
    fn take_outgoing(
        &mut self,
        now: Time,
        conv: ConvId,
        client_msg_id: ClientMsgId,
    ) -> Option<Outgoing> {
        let conversation = self.store.conversations.get_mut(&conv)?;
        let position = conversation
            .outbox
            .iter()
            .position(|o| o.client_msg_id == client_msg_id)?;
        let outgoing = conversation.outbox.remove(position)?;
        self.retransmit.remove(&conv);
        self.send_window(now, conv);
        Some(outgoing)
    }

    // ---- receiving ----

    /// Places one message: display it if it is next, hold it back if it is ahead of a hole, drop
    /// it if it was displayed already.
    fn accept(&mut self, message: Message) {
        let conv = message.conv;
        let seq = message.seq;
        let joins_me = message.change.is_some_and(|change| {
            matches!(change, MembershipChange::Add(_))
                && change.subject(message.sender_user) == self.identity.user
        });
        if joins_me {
            // Our join point: nothing before it is ours to see (in this membership period).
            self.raise_cursor(conv, Seq(seq.0 - 1));
        }
        let variant = self.config.variant;
        let conversation = self.store.conversations.entry(conv).or_default();
        if seq <= conversation.cursor {
            if variant == Variant::NoReceiverDedupe {
                // VARIANT no-receiver-dedupe: what was displayed already is displayed again.
                self.emit(displayed_event(message));
                return;
            }
            self.emit(Event::DuplicateDropped { conv, seq });
            return;
        }
        if seq != conversation.cursor.next() {
            if variant == Variant::WatermarkSkipsGap {
                // VARIANT watermark-skips-gap: the cursor (and so the acked watermark) jumps over
                // the hole to the highest seq received, and that message is displayed.
                conversation.cursor = Seq(seq.0 - 1);
                self.display(message);
                return;
            }
            self.hold(message);
            return;
        }
        if variant == Variant::TimestampOrder {
            self.display_by_timestamp(message);
            return;
        }
        self.display(message);
        loop {
            let next = self.cursor(conv).next();
            let Some(held) = self
                .hold_back
                .get_mut(&conv)
                .and_then(|held| held.remove(&next))
            else {
                break;
            };
            self.display(held);
        }
    }

    /// Moves the cursor up to a join point (never down), dropping what is held below it.
    fn raise_cursor(&mut self, conv: ConvId, floor: Seq) {
        let conversation = self.store.conversations.entry(conv).or_default();
        if floor > conversation.cursor {
            conversation.cursor = floor;
            if let Some(held) = self.hold_back.get_mut(&conv) {
                held.retain(|seq, _| *seq > floor);
            }
        }
    }

    fn display(&mut self, message: Message) {
        let conversation = self.store.conversations.entry(message.conv).or_default();
        assert_eq!(
            message.seq,
            conversation.cursor.next(),
            "display must be contiguous"
        );
        conversation.cursor = message.seq;
        self.emit(displayed_event(message));
    }

    /// VARIANT timestamp-order: the contiguous run that `message` opens (it and what it
    /// releases from the hold-back buffer) is shown sorted by the sender's clock, not by seq.
    fn display_by_timestamp(&mut self, message: Message) {
        let conv = message.conv;
        let mut run = vec![message];
        let mut next = run[0].seq.next();
        while let Some(held) = self
            .hold_back
            .get_mut(&conv)
            .and_then(|held| held.remove(&next))
        {
            run.push(held);
            next = next.next();
        }
        run.sort_by_key(|m| (m.client_time_ms, m.seq));
        let last = Seq(next.0 - 1);
        self.store.conversations.entry(conv).or_default().cursor = last;
        for message in run {
            self.emit(displayed_event(message));
        }
    }

    fn hold(&mut self, message: Message) {
        let (conv, seq) = (message.conv, message.seq);
        let held = self.hold_back.entry(conv).or_default();
        if held.contains_key(&seq) {
            self.emit(Event::DuplicateDropped { conv, seq });
            return;
        }
        if held.len() >= self.config.hold_back_max as usize {
            // Keep the lowest seqs: they are displayed first. The dropped one is pulled later.
            let highest = *held.keys().next_back().expect("a full buffer is not empty");
            if seq > highest {
                self.emit(Event::HoldBackOverflow { conv, seq });
                return;
            }
            held.remove(&highest);
            self.emit(Event::HoldBackOverflow { conv, seq: highest });
        }
        self.hold_back.entry(conv).or_default().insert(seq, message);
        self.emit(Event::HeldBack { conv, seq });
    }

    /// After a packet for `conv` was placed: report and ack cursor progress, track the hole.
    fn after_accept(&mut self, now: Time, conv: ConvId, before: Seq) {
        let cursor = self.cursor(conv);
        if cursor > before {
            self.emit(Event::CursorAdvanced { conv, cursor });
            // Batched acks: every `ack_batch_max` new messages, or `ack_delay_ms` after the first.
            let pending = self.ack_pending.entry(conv).or_insert((0, now));
            pending.0 += (cursor.0 - before.0) as u32;
            if pending.0 >= self.config.ack_batch_max {
                self.send_ack(conv);
            }
        } else {
            // Nothing new was displayed: a duplicate or a message ahead of a hole. Ack at once so
            // the server stops retrying what we have.
            self.send_ack(conv);
        }
        let hole_open = self
            .hold_back
            .get(&conv)
            .is_some_and(|held| !held.is_empty());
        if !hole_open {
            self.gap_since.remove(&conv);
        } else if cursor > before || !self.gap_since.contains_key(&conv) {
            self.gap_since.insert(conv, now);
        }
    }

    fn send_ack(&mut self, conv: ConvId) {
        self.ack_pending.remove(&conv);
        if self.is_online() {
            self.transmit(Packet::Ack {
                conv,
                watermark: self.cursor(conv),
            });
        }
    }

    fn ack_timeouts(&mut self, now: Time) {
        let delay_ms = self.config.ack_delay_ms;
        let due: Vec<ConvId> = self
            .ack_pending
            .iter()
            .filter(|(_, (_, first))| now.since_ms(*first) >= delay_ms)
            .map(|(c, _)| *c)
            .collect();
        for conv in due {
            self.send_ack(conv);
        }
    }

    fn gap_timeouts(&mut self, now: Time) {
        let due: Vec<ConvId> = self
            .gap_since
            .iter()
            .filter(|(_, since)| now.since_ms(**since) >= self.config.gap_timeout_ms)
            .map(|(conv, _)| *conv)
            .collect();
        for conv in due {
            self.gap_since.insert(conv, now);
            self.pull(now, conv, PullReason::Gap);
        }
    }

    fn pull_behind(&mut self, now: Time, heads: &[Head]) {
        for head in heads {
            self.raise_cursor(head.conv, head.floor);
            if head.seq > self.cursor(head.conv) {
                self.pull(now, head.conv, PullReason::Resume);
            }
        }
    }

    fn pull(&mut self, now: Time, conv: ConvId, reason: PullReason) {
        if !self.is_online() || self.pull_deadline.contains_key(&conv) {
            return;
        }
        let hole_open = self
            .hold_back
            .get(&conv)
            .is_some_and(|held| !held.is_empty());
        if self.config.variant == Variant::NoGapPull && hole_open {
            // VARIANT no-gap-pull: with a hole open the device waits for the missing push
            // instead of pulling, whatever prompted the pull (gap, resume, sync key).
            return;
        }
        let mut after = self.cursor(conv);
        if self.config.variant == Variant::SyncOffByOne {
            // VARIANT sync-off-by-one: the pull starts one past the cursor, skipping an entry.
            after = after.next();
        }
        self.transmit(Packet::Pull {
            conv,
            after,
            limit: self.config.pull_page_max,
        });
        self.pull_deadline
            .insert(conv, now.plus_ms(self.config.pull_timeout_ms));
        self.emit(Event::PullSent {
            conv,
            after,
            reason,
        });
    }

    fn handle_pull_response(&mut self, now: Time, conv: ConvId, messages: Vec<Message>, head: Seq) {
        self.pull_deadline.remove(&conv);
        let before = self.cursor(conv);
        for message in messages.into_iter().filter(|m| m.conv == conv) {
            self.accept(message);
        }
        self.after_accept(now, conv, before);
        // VARIANT sync-off-by-one, store-only-offline: these protocols can answer every pull
        // with a page that moves nothing, which would be asked for again at once, forever; they
        // give up instead. The correct protocol keeps paging (a stale page is followed by one
        // that moves the cursor).
        let stalled = self.cursor(conv) == before
            && matches!(
                self.config.variant,
                Variant::SyncOffByOne | Variant::StoreOnlyOffline
            );
        if self.cursor(conv) < head && !stalled {
            self.pull(now, conv, PullReason::NextPage);
        }
    }

    fn pull_timeouts(&mut self, now: Time) {
        let due: Vec<ConvId> = self
            .pull_deadline
            .iter()
            .filter(|(_, deadline)| now >= **deadline)
            .map(|(conv, _)| *conv)
            .collect();
        for conv in due {
            self.pull_deadline.remove(&conv);
            self.pull(now, conv, PullReason::Retry);
        }
    }

    // ---- outputs ----

    fn transmit(&mut self, packet: Packet) {
        self.outputs.push_back(Output::Transmit {
            to: self.identity.server,
            packet,
        });
    }

    fn emit(&mut self, event: Event) {
        self.outputs.push_back(Output::Event(event));
    }

    /// The earliest moment anything is due.
    fn next_deadline(&self) -> Option<Time> {
        let link = match self.link {
            Link::Offline => None,
            Link::Waiting { retry_at, .. } => Some(retry_at),
            Link::LoggingIn { deadline, .. } => Some(deadline),
            Link::Online {
                last_heard,
                next_heartbeat,
                ..
            } => {
                Some(next_heartbeat.min(last_heard.plus_ms(self.config.server_silence_timeout_ms)))
            }
        };
        if !self.is_online() {
            return link;
        }
        let retransmit = self.retransmit.values().map(|r| r.deadline);
        let pulls = self.pull_deadline.values().copied();
        let gaps = self
            .gap_since
            .values()
            .map(|since| since.plus_ms(self.config.gap_timeout_ms));
        let acks = self
            .ack_pending
            .values()
            .map(|(_, first)| first.plus_ms(self.config.ack_delay_ms));
        link.into_iter()
            .chain(retransmit)
            .chain(pulls)
            .chain(acks)
            .chain(gaps)
            .min()
    }

    fn rearm(&mut self) {
        let deadline = self.next_deadline();
        if deadline != self.armed {
            self.armed = deadline;
            if let Some(at) = deadline {
                self.outputs.push_back(Output::ArmTimer { at });
            }
        }
    }
}

fn displayed_event(message: Message) -> Event {
    Event::Displayed {
        conv: message.conv,
        seq: message.seq,
        sender_user: message.sender_user,
        sender_device: message.sender_device,
        client_msg_id: message.client_msg_id,
        body: message.body,
    }
}

fn send_packet(conv: ConvId, sender: UserId, outgoing: &Outgoing) -> Packet {
    Packet::Send {
        conv,
        sender,
        client_msg_id: outgoing.client_msg_id,
        client_seq: outgoing.client_seq,
        body: outgoing.body.clone(),
        client_time_ms: outgoing.client_time_ms,
        change: outgoing.change,
    }
}
