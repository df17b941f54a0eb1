//! The server: sessions, sequencing, durable commit, membership, push and pull.
//!
//! The rules it keeps, in the order a message meets them:
//! 1. Only a logged-in session may send, and only as its own user, and only to a conversation the
//!    user is a member of now. A membership change is a message like any other.
//! 2. Sender FIFO: per (device, conversation) the server accepts `client_seq` `k + 1` only after
//!    `k` is resolved (committed or refused). A later one arriving first is dropped; the device
//!    retransmits in order. So a device's messages take seqs in the order the user sent them.
//! 3. Idempotence: a retransmit of a resolved message gets the original answer (same seq).
//! 4. Store, then ack: a seq is handed out when the write is issued, but nothing about the message
//!    (ack, push, pull) leaves the server before the write is durable. A crash can lose an
//!    unsynced write; its seq was never visible, so reusing it after recovery is safe.
//! 5. Delivery: each durable entry goes to the devices of the users who may see it (members at
//!    its seq), except the sending device: pushed, or for a group above
//!    `notify_threshold_members` announced by a merged notice and pulled. Devices catch up on
//!    anything else by pull, prompted by heads at login, the heartbeat's sync key or a gap.
//!
//! `commit.rs` holds rules 1–4, `delivery.rs` rule 5 and the reads; `receipts.rs` the read
//! receipts and `presence.rs` who is online.

mod commit;
mod delivery;
mod presence;
mod receipts;

use crate::config::{PresenceMode, ProtocolConfig};
use crate::directory::Directory;
use crate::event::{Event, SessionEnd};
use crate::ids::{Address, ClientMsgId, ClientSeq, ConvId, DeviceId, Seq, SessionId, UserId};
use crate::membership::Membership;
use crate::output::Output;
use crate::storage::Storage;
use crate::time::Time;
use crate::variant::Variant;
use crate::wire::{Message, Packet, PresenceEntry, Rejection};
use receipts::Receipts;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

pub struct Server {
    config: ProtocolConfig,
    directory: Directory,
    storage: Storage,
    /// Restarts so far; session ids are unique across them.
    incarnation: u64,
    conversations: BTreeMap<ConvId, Conversation>,
    /// Every conversation a user was ever a member of.
    conversations_of: BTreeMap<UserId, BTreeSet<ConvId>>,
    /// Fan-out write only: each user's inbox, the seqs copied to it per conversation.
    inboxes: BTreeMap<(UserId, ConvId), Vec<Seq>>,
    /// Per (device, conversation): the highest `client_seq` resolved (committed or refused).
    resolved: BTreeMap<(DeviceId, ConvId), ClientSeq>,
    /// Per (device, client_msg_id): how its send was resolved, for idempotent retransmits.
    outcomes: BTreeMap<(DeviceId, ClientMsgId), Outcome>,
    sync_in_flight: bool,
    /// VARIANT store-only-offline: entries pushed to a user who was online at commit, which
    /// are therefore not kept for that user's pulls.
    push_only: BTreeSet<(UserId, ConvId, Seq)>,
    /// Large groups with news whose merged notices go out at the given time.
    announcements: BTreeMap<ConvId, Time>,
    /// Per large group, the head its last round of notices announced.
    announced: BTreeMap<ConvId, Seq>,
    receipts: Receipts,
    sessions: BTreeMap<Address, Session>,
    session_of_device: BTreeMap<DeviceId, Address>,
    sessions_of_user: BTreeMap<UserId, u32>,
    sessions_opened: u64,
    /// Status of users that changed since the restart; the others are offline at `boot_version`.
    presence: BTreeMap<UserId, PresenceEntry>,
    boot_version: u64,
    /// Each user's 1:1 peers: who subscribes to its presence in push mode.
    contacts: BTreeMap<UserId, Vec<UserId>>,
    /// Housekeeping runs on a grid of `server_tick_ms` from the last tick, but only at grid
    /// times when something is due: a session to expire, a push or notice to retry, a round of
    /// notices or read counts to send. `None`: nothing is due at all.
    next_tick: Option<Time>,
    last_tick: Time,
    outputs: VecDeque<Output>,
    armed: Option<Time>,
}

/// A conversation's timeline (index = seq - 1, written entries, durable up to `durable_head`)
/// and its membership as of the last written entry.
struct Conversation {
    messages: Vec<Message>,
    durable_head: Seq,
    membership: Membership,
    is_group: bool,
}

/// How a send was resolved, and where in the log (durable once the log is synced past it).
#[derive(Clone, Copy)]
struct Outcome {
    conv: ConvId,
    resolution: Resolution,
    log_position: u64,
}

#[derive(Clone, Copy)]
enum Resolution {
    Committed(Seq),
    Refused(Rejection),
}

struct Session {
    id: SessionId,
    user: UserId,
    device: DeviceId,
    /// The device's connection number the login gave (`Packet::Login`).
    connection: u64,
    last_heard: Time,
    /// Pushes not yet covered by the device's cumulative ack.
    pushes: BTreeMap<(ConvId, Seq), Retry>,
    /// Large groups with a notice outstanding (cleared by a pull, or an ack of the head).
    notices: BTreeMap<ConvId, Notice>,
}

struct Retry {
    attempts: u32,
    retry_at: Time,
}

/// A notice sent and not yet answered.
struct Notice {
    retry: Retry,
    /// The head the notice last told of; news committed since merged into it.
    head: Seq,
}

impl Server {
    /// A server with empty storage.
    pub fn new(config: ProtocolConfig, directory: Directory, now: Time) -> Server {
        Server::recover(config, directory, &Storage::new(), 0, now)
    }

    /// A server restarted after a crash: only the durable records of `storage_at_crash` survive,
    /// every index is rebuilt from them, and sessions start empty.
    pub fn recover(
        config: ProtocolConfig,
        directory: Directory,
        storage_at_crash: &Storage,
        incarnation: u64,
        now: Time,
    ) -> Server {
        let (storage, lost_unsynced_writes) = storage_at_crash.crash();
        let mut conversations = BTreeMap::new();
        let mut conversations_of: BTreeMap<UserId, BTreeSet<ConvId>> = BTreeMap::new();
        for conv in directory.conversations() {
            let members = directory.members(conv);
            for user in members {
                conversations_of.entry(*user).or_default().insert(conv);
            }
            let conversation = Conversation {
                messages: Vec::new(),
                durable_head: Seq::ZERO,
                membership: Membership::founded(members),
                is_group: directory.is_group(conv),
            };
            conversations.insert(conv, conversation);
        }
        let contacts = presence::contacts_of(&directory);
        let mut server = Server {
            config,
            directory,
            storage: Storage::new(),
            incarnation,
            conversations,
            conversations_of,
            inboxes: BTreeMap::new(),
            resolved: BTreeMap::new(),
            outcomes: BTreeMap::new(),
            sync_in_flight: false,
            push_only: BTreeSet::new(),
            announcements: BTreeMap::new(),
            announced: BTreeMap::new(),
            receipts: Receipts::default(),
            sessions: BTreeMap::new(),
            session_of_device: BTreeMap::new(),
            sessions_of_user: BTreeMap::new(),
            sessions_opened: 0,
            presence: BTreeMap::new(),
            boot_version: presence::boot_version(now),
            contacts,
            next_tick: Some(now),
            last_tick: now,
            outputs: VecDeque::new(),
            armed: None,
        };
        for (position, record) in storage.durable().iter().enumerate() {
            server.apply(record, position as u64);
        }
        for conversation in server.conversations.values_mut() {
            if server.config.variant == Variant::SeqReuseAfterRestart && incarnation > 0 {
                // VARIANT seq-reuse-after-restart: the timeline (and with it the seq counter) is
                // kept in memory only; after a crash it restarts empty, so the next send takes
                // seq 1 again although seq 1 is durable.
                conversation.messages.clear();
            }
            conversation.durable_head = Seq(conversation.messages.len() as u64);
        }
        server.storage = storage;
        if incarnation > 0 {
            let messages = server
                .conversations
                .values()
                .map(|c| c.messages.len() as u64)
                .sum();
            server.emit(Event::Recovered {
                messages,
                lost_unsynced_writes,
            });
        }
        server.rearm();
        server
    }

    /// VARIANT handover-restarts-seqs (`cluster::take_over`): the timelines read back from
    /// storage are dropped, and with them every conversation's last seq.
    pub(crate) fn forget_timelines(&mut self) {
        for conversation in self.conversations.values_mut() {
            conversation.messages.clear();
            conversation.durable_head = Seq::ZERO;
        }
    }

    // ---- getters ----

    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    pub fn directory(&self) -> &Directory {
        &self.directory
    }

    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// The durable entries of a conversation, in seq order.
    pub fn durable_timeline(&self, conv: ConvId) -> &[Message] {
        self.conversations
            .get(&conv)
            .map_or(&[], |c| &c.messages[..c.durable_head.0 as usize])
    }

    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    // ---- inputs ----

    pub fn handle_packet(&mut self, now: Time, from: Address, packet: Packet) {
        if let Packet::Login {
            user,
            device,
            token,
            connection,
        } = packet
        {
            self.handle_login(now, from, user, device, token, connection);
            self.rearm();
            return;
        }
        let Some(session) = self.sessions.get_mut(&from) else {
            self.refuse(from, None, Rejection::NotLoggedIn, packet.kind());
            self.rearm();
            return;
        };
        session.last_heard = now;
        let (user, device) = (session.user, session.device);
        match packet {
            Packet::Logout { connection } => {
                // A logout of an earlier connection, overtaken by this session's login, is
                // stale: the device is logged in.
                if self.sessions[&from].connection == connection {
                    self.close_session(now, from, SessionEnd::Logout);
                }
            }
            Packet::Heartbeat => {
                let ack = Packet::HeartbeatAck {
                    sync_key: self.sync_key(user),
                    receipt_key: self.receipt_key(user),
                    presence_key: self.presence_key(user),
                };
                self.transmit(from, ack);
            }
            Packet::Send {
                conv,
                sender,
                client_msg_id,
                client_seq,
                body,
                client_time_ms,
                change,
            } => {
                let send = commit::IncomingSend {
                    conv,
                    client_msg_id,
                    client_seq,
                    body,
                    client_time_ms,
                    change,
                };
                if sender != user {
                    self.refuse(from, Some(device), Rejection::WrongUser, "send");
                } else {
                    self.handle_send(from, user, device, send);
                }
            }
            Packet::Ack { conv, watermark } => {
                let head = self
                    .conversations
                    .get(&conv)
                    .map_or(Seq::ZERO, |c| c.durable_head);
                if let Some(session) = self.sessions.get_mut(&from) {
                    session
                        .pushes
                        .retain(|&(c, seq), _| c != conv || seq > watermark);
                    // A device that has everything needs no notice: a later round may reach it.
                    // One that has what its notice told of answered it without the news merged
                    // into it since (its ack crossed a commit): that news goes out now.
                    let answered = session.notices.get(&conv).map(|notice| notice.head);
                    if watermark >= head {
                        session.notices.remove(&conv);
                    } else if answered.is_some_and(|told| watermark >= told) {
                        self.notify(now, from, conv);
                    }
                }
            }
            Packet::Pull { conv, after, limit } => {
                self.handle_pull(from, user, device, conv, after, limit)
            }
            Packet::SyncRequest => {
                let heads = self.heads(user);
                self.transmit(from, Packet::SyncState { heads });
            }
            Packet::Read { conv, up_to } => self.handle_read(from, user, device, conv, up_to),
            Packet::ReadersQuery { conv, seq } => {
                self.handle_readers_query(from, user, device, conv, seq)
            }
            Packet::ReceiptSyncRequest => {
                let state = self.receipt_state(user);
                self.transmit(from, state);
            }
            Packet::PresenceQuery { conv } => self.handle_presence_query(from, user, device, conv),
            other => self.refuse(from, Some(device), Rejection::Unexpected, other.kind()),
        }
        self.rearm();
    }

    pub fn handle_timeout(&mut self, now: Time) {
        // The driver's timer is spent: whatever is due next must be armed again.
        self.armed = None;
        if self.next_tick.is_some_and(|tick| now >= tick) {
            self.expire_sessions(now);
            self.announce_due(now);
            self.send_due_counts(now);
            self.retry_deliveries(now);
            self.last_tick = now;
            self.next_tick = None;
            if let Some(due) = self.housekeeping_due() {
                self.housekeeping_at(due);
            }
        }
        self.rearm();
    }

    /// The storage finished a sync requested by `Output::SyncStorage { through }`.
    pub fn handle_storage_synced(&mut self, now: Time, through: u64) {
        let newly_durable = self.storage.sync(through).to_vec();
        self.sync_in_flight = false;
        for record in newly_durable {
            self.publish(now, record);
        }
        if self.storage.written() > self.storage.synced() {
            self.request_sync();
        }
        self.rearm();
    }

    /// Queue topology, right after [`Server::recover`]: `records` are what the queue's consumer
    /// stored after the last `Stored` the crashed server heard, in log order. They are written
    /// again and published now, as if that `Stored` had come in: their commits are recorded,
    /// and acks and pushes go to whoever is logged in (the devices' resume pulls repair the
    /// rest).
    pub fn handle_recovered_stored(&mut self, now: Time, records: &[crate::storage::Record]) {
        if records.is_empty() {
            return;
        }
        for record in records {
            if let crate::storage::Record::Committed(message) = record {
                let timeline = self.conversations.get(&message.conv);
                let at = message.seq.0.checked_sub(1);
                let held = timeline.and_then(|c| at.and_then(|i| c.messages.get(i as usize)));
                if held == Some(message) {
                    // A row the store holds twice (a non-idempotent consumer): read once.
                    continue;
                }
            }
            // Reads change state only once durable (`publish`); the others as they are written.
            if !matches!(record, crate::storage::Record::Read { .. }) {
                self.apply(record, self.storage.written());
            }
            self.storage.append(record.clone());
        }
        self.handle_storage_synced(now, self.storage.written());
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// Cluster topology: the logic cannot reach the device at `address` any more (its gateway
    /// answered that the route is stale, or no route is left). Its session ends, so the server
    /// stops counting it online and pushing to it; the device's next login re-syncs it.
    pub fn close_unroutable(&mut self, now: Time, address: Address) {
        self.close_session(now, address, SessionEnd::Unroutable);
        self.rearm();
    }

    /// Sharded logic: the device at `address` was heard by another shard (its gateway says so),
    /// so its session here is as alive as if it had sent this shard a packet. No answer.
    pub fn handle_keep_alive(&mut self, now: Time, address: Address) {
        if let Some(session) = self.sessions.get_mut(&address) {
            session.last_heard = now;
        }
    }

    /// The device whose session is held at `address`, if any.
    pub fn session_device(&self, address: Address) -> Option<DeviceId> {
        self.sessions.get(&address).map(|session| session.device)
    }

    /// The id of the session held at `address`, if any.
    pub fn session_id(&self, address: Address) -> Option<SessionId> {
        self.sessions.get(&address).map(|session| session.id)
    }

    // ---- sessions ----

    fn handle_login(
        &mut self,
        now: Time,
        from: Address,
        user: UserId,
        device: DeviceId,
        token: u64,
        connection: u64,
    ) {
        if self.directory.token(user, device) != Some(token) {
            self.refuse(from, Some(device), Rejection::BadCredentials, "login");
            return;
        }
        if let Some(old) = self.session_of_device.get(&device).copied() {
            self.close_session(now, old, SessionEnd::Replaced);
        }
        if self.sessions.contains_key(&from) {
            self.close_session(now, from, SessionEnd::Replaced);
        }
        if self.sessions.len() >= self.config.sessions_max as usize {
            self.refuse(from, Some(device), Rejection::ServerFull, "login");
            return;
        }
        self.sessions_opened += 1;
        let session = SessionId((self.incarnation << 40) | self.sessions_opened);
        let state = Session {
            id: session,
            user,
            device,
            connection,
            last_heard: now,
            pushes: BTreeMap::new(),
            notices: BTreeMap::new(),
        };
        self.sessions.insert(from, state);
        self.housekeeping_at(now.plus_ms(self.config.session_timeout_ms));
        self.session_of_device.insert(device, from);
        self.emit(Event::SessionOpened {
            session,
            user,
            device,
        });
        let heads = self.heads(user);
        self.transmit(from, Packet::LoginOk { session, heads });
        self.session_count_changed(now, user, true);
        if self.config.presence == PresenceMode::Push {
            let entries = self
                .contacts(user)
                .into_iter()
                .map(|contact| self.presence_of(contact))
                .collect();
            self.transmit(from, Packet::PresenceState { entries });
        }
    }

    fn close_session(&mut self, now: Time, address: Address, reason: SessionEnd) {
        if let Some(session) = self.sessions.remove(&address) {
            self.session_of_device.remove(&session.device);
            let (user, session, device) = (session.user, session.id, session.device);
            self.emit(Event::SessionClosed {
                session,
                device,
                reason,
            });
            self.session_count_changed(now, user, false);
        }
    }

    /// The earliest time any housekeeping is due, from the state (a tick scans it all anyway).
    fn housekeeping_due(&self) -> Option<Time> {
        let expiries = self
            .sessions
            .values()
            .filter(|_| self.config.variant != Variant::GhostOnline)
            .map(|session| session.last_heard.plus_ms(self.config.session_timeout_ms));
        let retries = self.sessions.values().flat_map(|session| {
            let pushes = session.pushes.values();
            let notices = session.notices.values().map(|notice| &notice.retry);
            pushes.chain(notices).map(|r| r.retry_at)
        });
        let announcements = self.announcements.values().copied();
        expiries
            .chain(retries)
            .chain(announcements)
            .chain(self.receipts.batch_due())
            .min()
    }

    /// Something falls due at `due`: the first grid tick at or after it must run.
    fn housekeeping_at(&mut self, due: Time) {
        let tick_ms = self.config.server_tick_ms;
        let ticks = due.since_ms(self.last_tick).div_ceil(tick_ms).max(1);
        let tick = self.last_tick.plus_ms(ticks * tick_ms);
        if !matches!(self.next_tick, Some(next) if next <= tick) {
            self.next_tick = Some(tick);
        }
    }

    fn expire_sessions(&mut self, now: Time) {
        if self.config.variant == Variant::GhostOnline {
            // VARIANT ghost-online: sessions never expire; a device that died stays online
            // until it logs in again.
            return;
        }
        let timeout_ms = self.config.session_timeout_ms;
        let expired: Vec<Address> = self
            .sessions
            .iter()
            .filter(|(_, session)| now.since_ms(session.last_heard) >= timeout_ms)
            .map(|(address, _)| *address)
            .collect();
        for address in expired {
            self.close_session(now, address, SessionEnd::Timeout);
        }
    }

    // ---- outputs ----

    fn refuse(&mut self, to: Address, device: Option<DeviceId>, reason: Rejection, refused: &str) {
        self.emit(Event::Rejected {
            device,
            refused: refused.to_string(),
            reason,
        });
        self.transmit(
            to,
            Packet::Error {
                reason,
                refused: refused.to_string(),
            },
        );
    }

    fn transmit(&mut self, to: Address, packet: Packet) {
        self.outputs.push_back(Output::Transmit { to, packet });
    }

    fn emit(&mut self, event: Event) {
        self.outputs.push_back(Output::Event(event));
    }

    fn rearm(&mut self) {
        if let Some(tick) = self.next_tick.filter(|tick| self.armed != Some(*tick)) {
            self.armed = Some(tick);
            self.outputs.push_back(Output::ArmTimer { at: tick });
        }
    }
}
