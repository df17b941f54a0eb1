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
//!
//! - **Reads and presence.** The user reads what this device displayed; the device shows the
//!   watermarks, read counts and statuses the server sends, newest first, never going back.
//!
//! `connection.rs`, `sending.rs`, `receiving.rs`, `receipts.rs` and `presence.rs` hold those
//! parts; this file holds the state, the inputs and the outputs.

mod connection;
mod presence;
mod receipts;
mod receiving;
mod sending;

use crate::config::ProtocolConfig;
use crate::event::{Event, PullReason, SendFailure, SessionEnd, Via};
use crate::ids::{Address, ClientMsgId, ClientSeq, ConvId, DeviceId, Seq, SessionId, UserId};
use crate::output::Output;
use crate::time::Time;
use crate::variant::Variant;
use crate::wire::{
    Head, MembershipChange, Message, Packet, PresenceEntry, ReadCount, ReadMark, Rejection,
};
use serde::{Deserialize, Serialize};
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
    /// Open a conversation and read what the device displayed of it.
    Read {
        conv: ConvId,
    },
}

pub struct Client {
    config: ProtocolConfig,
    identity: DeviceIdentity,
    /// The device's local database; it survives an app restart.
    store: LocalStore,
    // Volatile state, lost when the app restarts.
    link: Link,
    hold_back: BTreeMap<ConvId, BTreeMap<Seq, (Message, Via)>>,
    /// Per conversation with a hole: when the hole was last seen to make no progress.
    gap_since: BTreeMap<ConvId, Time>,
    /// Per conversation with a pull in flight: when to give up waiting for its answer.
    pull_deadline: BTreeMap<ConvId, Time>,
    /// Why the current (or last) pull round of each conversation started: the path of what
    /// its answers bring.
    pull_cause: BTreeMap<ConvId, PullReason>,
    /// The newest head a notice announced per conversation, while the cursor is below it. A
    /// notice that arrives while a pull is in flight cannot start another pull; the answer may
    /// predate the news, so the device pulls again when the answer leaves it short. One entry
    /// per conversation at most.
    notified_head: BTreeMap<ConvId, Seq>,
    /// Per conversation with displayed but unacknowledged messages: how many, since when.
    ack_pending: BTreeMap<ConvId, (u32, Time)>,
    /// Per conversation with sends in flight: retransmission deadline and timeout.
    retransmit: BTreeMap<ConvId, Retransmit>,
    /// Per conversation with a read the server has not confirmed: when to send it again.
    read_deadline: BTreeMap<ConvId, Time>,
    /// Pull-mode presence: when to ask again about the open conversation's members.
    presence_poll_at: Option<Time>,
    outputs: VecDeque<Output>,
    armed: Option<Time>,
}

/// The device's local database: what survives an app restart (`Client::restart`) and what a
/// driver keeps in a file so a device process can resume (`Client::local_store`,
/// `Client::resume`). Its fields are the protocol's business; drivers only store it whole.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalStore {
    online_wanted: bool,
    /// The number of the device's current connection (`Packet::Login`): it moves on when a
    /// session ends or the app restarts, and survives a restart so that it never repeats.
    #[serde(default)]
    connection: u64,
    next_client_msg_id: u64,
    conversations: BTreeMap<ConvId, Conversation>,
    /// The conversation the user has open (the last one read).
    open_conv: Option<ConvId>,
    /// The newest status heard per user.
    presence: BTreeMap<UserId, PresenceEntry>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Conversation {
    cursor: Seq,
    /// The highest seq displayed (the cursor may be above it: a join point).
    displayed_up_to: Seq,
    last_client_seq: ClientSeq,
    outbox: VecDeque<Outgoing>,
    /// The highest seq the user read on this device.
    read_local: Seq,
    /// The read watermarks shown: the user's own, and in 1:1 the peer's.
    watermarks: BTreeMap<UserId, Seq>,
    /// The read counts shown for the user's own messages (groups).
    read_counts: BTreeMap<Seq, u32>,
    /// The seq of the latest message this device sent here.
    last_own: Seq,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Outgoing {
    client_msg_id: ClientMsgId,
    client_seq: ClientSeq,
    body: String,
    client_time_ms: u64,
    change: Option<MembershipChange>,
    /// Sent in the current session (reset when the session ends). Not stored: a resumed device
    /// has no session.
    #[serde(skip)]
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
    /// Will try to log in at `retry_at`; `attempt` logins failed since the device started
    /// trying (going online, an app restart, a lost session), and `backoff_ms` is the wait after
    /// the next failure.
    Waiting {
        retry_at: Time,
        backoff_ms: u64,
        attempt: u32,
    },
    LoggingIn {
        deadline: Time,
        backoff_ms: u64,
        attempt: u32,
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
            pull_cause: BTreeMap::new(),
            notified_head: BTreeMap::new(),
            ack_pending: BTreeMap::new(),
            retransmit: BTreeMap::new(),
            read_deadline: BTreeMap::new(),
            presence_poll_at: None,
            outputs: VecDeque::new(),
            armed: None,
        }
    }

    /// The app was killed and started again: the local database survives, nothing else does.
    pub fn restart(&mut self, now: Time) {
        self.link = Link::Offline;
        self.store.connection += 1;
        self.hold_back.clear();
        self.gap_since.clear();
        self.pull_deadline.clear();
        self.ack_pending.clear();
        self.retransmit.clear();
        self.read_deadline.clear();
        self.presence_poll_at = None;
        self.outputs.clear();
        self.armed = None;
        for conversation in self.store.conversations.values_mut() {
            conversation
                .outbox
                .iter_mut()
                .for_each(|outgoing| outgoing.sent = false);
        }
        if self.store.online_wanted {
            self.link = self.waiting(now, 0, 0);
        }
        self.rearm();
    }

    /// A device whose app starts again from its local database, in another process or after the
    /// old `Client` is gone: the same as `restart` on a client that held `store`.
    pub fn resume(
        config: ProtocolConfig,
        identity: DeviceIdentity,
        store: LocalStore,
        now: Time,
    ) -> Client {
        let mut client = Client::new(config, identity);
        client.store = store;
        client.restart(now);
        client
    }

    // ---- getters ----

    /// The local database as it is now (what a restart keeps).
    pub fn local_store(&self) -> &LocalStore {
        &self.store
    }

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
                    self.link = self.waiting(now, 0, 0);
                }
            }
            Command::GoOffline => {
                self.store.online_wanted = false;
                if self.is_online() {
                    let connection = self.store.connection;
                    self.transmit(Packet::Logout { connection });
                    self.lose_session(now, SessionEnd::Logout);
                }
                self.link = Link::Offline;
            }
            Command::Read { conv } => self.handle_read(now, conv),
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
            Packet::HeartbeatAck {
                sync_key,
                receipt_key,
                presence_key,
            } => {
                self.handle_sync_key(sync_key);
                self.check_receipt_key(receipt_key);
                self.check_presence_key(presence_key);
            }
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
                self.accept(message, Via::Push);
                self.after_accept(now, conv, before);
            }
            Packet::PullResponse {
                conv,
                messages,
                head,
            } => self.handle_pull_response(now, conv, messages, head),
            Packet::SyncState { heads } => self.pull_behind(now, &heads),
            Packet::Notify { conv, head } if head > self.cursor(conv) => {
                let notified = self.notified_head.entry(conv).or_insert(head);
                *notified = (*notified).max(head);
                self.pull(now, conv, PullReason::Notified);
            }
            // News we already have (our own message, merged into a round): say so, so the server
            // clears the notice and can reach us with the next round.
            Packet::Notify { conv, .. } => self.send_ack(conv),
            Packet::ReadUpdate { conv, user, up_to } => {
                self.handle_read_update(now, conv, user, up_to)
            }
            Packet::ReadCounts { conv, counts } => self.handle_read_counts(conv, counts),
            Packet::ReceiptState { watermarks, counts } => {
                self.handle_receipt_state(now, watermarks, counts)
            }
            Packet::Readers {
                conv,
                seq,
                readers,
                unread,
            } => self.emit(Event::ReadersSeen {
                conv,
                seq,
                readers,
                unread,
            }),
            Packet::Presence(entry) => self.handle_presence(entry),
            Packet::PresenceState { entries } => {
                entries.into_iter().for_each(|e| self.handle_presence(e))
            }
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
            self.read_timeouts(now);
            self.presence_timeouts(now);
        }
        self.rearm();
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
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
        let reads = self.read_deadline.values().copied();
        link.into_iter()
            .chain(retransmit)
            .chain(pulls)
            .chain(acks)
            .chain(gaps)
            .chain(reads)
            .chain(self.presence_poll_at)
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
