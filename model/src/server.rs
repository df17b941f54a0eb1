//! The server: sessions, sequencing, durable commit, push and pull.
//!
//! The rules it keeps, in the order a message meets them:
//! 1. Only a logged-in session may send, and only as its own user, and only to a conversation the
//!    user is a member of.
//! 2. Sender FIFO: per (device, conversation) the server accepts `client_seq` `k + 1` only after
//!    `k` is resolved (committed or refused). A later one arriving first is dropped; the device
//!    retransmits in order. So a device's messages take seqs in the order the user sent them.
//! 3. Idempotence: a retransmit of a resolved message gets the original answer (same seq).
//! 4. Store, then ack: a seq is handed out when the write is issued, but nothing about the message
//!    (ack, push, pull) leaves the server before the write is durable. A crash can lose an
//!    unsynced write; its seq was never visible, so reusing it after recovery is safe.
//! 5. Delivery: push each durable message to the members' online devices (not the sending one);
//!    retry unacknowledged pushes with backoff, bounded; devices catch up on anything else by
//!    pull, prompted by heads at login, the heartbeat's sync key or a gap.

use crate::config::ProtocolConfig;
use crate::directory::Directory;
use crate::event::{Event, SessionEnd};
use crate::ids::{Address, ClientMsgId, ClientSeq, ConvId, DeviceId, Seq, SessionId, UserId};
use crate::output::Output;
use crate::storage::{Record, Storage};
use crate::time::Time;
use crate::wire::{Head, Message, Packet, Rejection};
use std::collections::{BTreeMap, VecDeque};

pub struct Server {
    config: ProtocolConfig,
    directory: Directory,
    storage: Storage,
    /// Restarts so far; session ids are unique across them.
    incarnation: u64,
    /// Every written message per conversation (index = seq - 1) and how far it is durable.
    timelines: BTreeMap<ConvId, Timeline>,
    /// Per (device, conversation): the highest `client_seq` resolved (committed or refused).
    resolved: BTreeMap<(DeviceId, ConvId), ClientSeq>,
    /// Per (device, client_msg_id): how its send was resolved, for idempotent retransmits.
    outcomes: BTreeMap<(DeviceId, ClientMsgId), Outcome>,
    sync_in_flight: bool,
    sessions: BTreeMap<Address, Session>,
    session_of_device: BTreeMap<DeviceId, Address>,
    sessions_opened: u64,
    next_tick: Time,
    outputs: VecDeque<Output>,
    armed: Option<Time>,
}

#[derive(Default)]
struct Timeline {
    messages: Vec<Message>,
    durable_head: Seq,
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
    last_heard: Time,
    /// Pushes not yet covered by the device's cumulative ack.
    pushes: BTreeMap<(ConvId, Seq), PushState>,
}

struct PushState {
    attempts: u32,
    retry_at: Time,
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
        let mut server = Server {
            config,
            directory,
            storage: Storage::new(),
            incarnation,
            timelines: BTreeMap::new(),
            resolved: BTreeMap::new(),
            outcomes: BTreeMap::new(),
            sync_in_flight: false,
            sessions: BTreeMap::new(),
            session_of_device: BTreeMap::new(),
            sessions_opened: 0,
            next_tick: now,
            outputs: VecDeque::new(),
            armed: None,
        };
        for (position, record) in storage.durable().iter().enumerate() {
            server.apply(record, position as u64);
        }
        for timeline in server.timelines.values_mut() {
            timeline.durable_head = Seq(timeline.messages.len() as u64);
        }
        server.storage = storage;
        if incarnation > 0 {
            let messages = server
                .timelines
                .values()
                .map(|t| t.messages.len() as u64)
                .sum();
            server.emit(Event::Recovered {
                messages,
                lost_unsynced_writes,
            });
        }
        server.rearm();
        server
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

    /// The durable messages of a conversation, in seq order.
    pub fn durable_timeline(&self, conv: ConvId) -> &[Message] {
        self.timelines
            .get(&conv)
            .map_or(&[], |t| &t.messages[..t.durable_head.0 as usize])
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
        } = packet
        {
            self.handle_login(now, from, user, device, token);
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
            Packet::Logout => self.close_session(from, SessionEnd::Logout),
            Packet::Heartbeat => {
                let sync_key = self.sync_key(user);
                self.transmit(from, Packet::HeartbeatAck { sync_key });
            }
            Packet::Send {
                conv,
                sender,
                client_msg_id,
                client_seq,
                body,
                client_time_ms,
            } => {
                let send = IncomingSend {
                    conv,
                    client_msg_id,
                    client_seq,
                    body,
                    client_time_ms,
                };
                if sender != user {
                    self.refuse(from, Some(device), Rejection::WrongUser, "send");
                } else {
                    self.handle_send(from, user, device, send);
                }
            }
            Packet::Ack { conv, watermark } => {
                if let Some(session) = self.sessions.get_mut(&from) {
                    session
                        .pushes
                        .retain(|&(c, seq), _| c != conv || seq > watermark);
                }
            }
            Packet::Pull { conv, after, limit } => {
                self.handle_pull(from, user, device, conv, after, limit)
            }
            Packet::SyncRequest => {
                let heads = self.heads(user);
                self.transmit(from, Packet::SyncState { heads });
            }
            other => self.refuse(from, Some(device), Rejection::Unexpected, other.kind()),
        }
        self.rearm();
    }

    pub fn handle_timeout(&mut self, now: Time) {
        // The driver's timer is spent: whatever is due next must be armed again.
        self.armed = None;
        if now >= self.next_tick {
            self.expire_sessions(now);
            self.retry_pushes(now);
            self.next_tick = now.plus_ms(self.config.server_tick_ms);
        }
        self.rearm();
    }

    /// The storage finished a sync requested by `Output::SyncStorage { through }`.
    pub fn handle_storage_synced(&mut self, now: Time, through: u64) {
        let first = self.storage.synced();
        let newly_durable = self.storage.sync(through).to_vec();
        self.sync_in_flight = false;
        for (offset, record) in newly_durable.into_iter().enumerate() {
            debug_assert!(first + offset as u64 == self.outcome_position(&record));
            self.publish(now, record);
        }
        if self.storage.written() > self.storage.synced() {
            self.request_sync();
        }
        self.rearm();
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    // ---- sessions ----

    fn handle_login(
        &mut self,
        now: Time,
        from: Address,
        user: UserId,
        device: DeviceId,
        token: u64,
    ) {
        if self.directory.token(user, device) != Some(token) {
            self.refuse(from, Some(device), Rejection::BadCredentials, "login");
            return;
        }
        if let Some(old) = self.session_of_device.get(&device).copied() {
            self.close_session(old, SessionEnd::Replaced);
        }
        if self.sessions.contains_key(&from) {
            self.close_session(from, SessionEnd::Replaced);
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
            last_heard: now,
            pushes: BTreeMap::new(),
        };
        self.sessions.insert(from, state);
        self.session_of_device.insert(device, from);
        self.emit(Event::SessionOpened {
            session,
            user,
            device,
        });
        let heads = self.heads(user);
        self.transmit(from, Packet::LoginOk { session, heads });
    }

    fn close_session(&mut self, address: Address, reason: SessionEnd) {
        if let Some(session) = self.sessions.remove(&address) {
            self.session_of_device.remove(&session.device);
            self.emit(Event::SessionClosed {
                session: session.id,
                device: session.device,
                reason,
            });
        }
    }

    fn expire_sessions(&mut self, now: Time) {
        let timeout_ms = self.config.session_timeout_ms;
        let expired: Vec<Address> = self
            .sessions
            .iter()
            .filter(|(_, session)| now.since_ms(session.last_heard) >= timeout_ms)
            .map(|(address, _)| *address)
            .collect();
        for address in expired {
            self.close_session(address, SessionEnd::Timeout);
        }
    }

    fn heads(&self, user: UserId) -> Vec<Head> {
        self.directory
            .conversations_of(user)
            .map(|conv| Head {
                conv,
                seq: self.durable_head(conv),
            })
            .collect()
    }

    /// The sum of the user's durable heads: it only grows, so a device whose sum of cursors is
    /// lower knows it is missing something.
    fn sync_key(&self, user: UserId) -> u64 {
        self.heads(user).iter().map(|head| head.seq.0).sum()
    }

    fn durable_head(&self, conv: ConvId) -> Seq {
        self.timelines
            .get(&conv)
            .map_or(Seq::ZERO, |t| t.durable_head)
    }

    // ---- send: FIFO, idempotence, store then ack ----

    fn handle_send(&mut self, from: Address, user: UserId, device: DeviceId, send: IncomingSend) {
        if let Some(outcome) = self.outcomes.get(&(device, send.client_msg_id)).copied() {
            self.answer_retransmit(from, device, send.client_msg_id, outcome);
            return;
        }
        let resolved = self
            .resolved
            .get(&(device, send.conv))
            .copied()
            .unwrap_or_default();
        let expected = resolved.next();
        if send.client_seq < expected {
            // A resolved client_seq under a new client_msg_id: the device broke its own numbering.
            self.refuse(from, Some(device), Rejection::Unexpected, "send");
            return;
        }
        if send.client_seq > expected {
            let (conv, client_seq) = (send.conv, send.client_seq);
            self.emit(Event::OutOfOrderDropped {
                device,
                conv,
                client_seq,
                expected,
            });
            return;
        }
        let refusal = if !self.directory.is_member(send.conv, user) {
            Some(Rejection::NotMember)
        } else if send.body.len() > self.config.body_bytes_max as usize {
            Some(Rejection::BodyTooLarge)
        } else {
            None
        };
        let log_position = self.storage.written();
        let record = match refusal {
            Some(reason) => Record::Refused {
                conv: send.conv,
                sender_device: device,
                client_msg_id: send.client_msg_id,
                client_seq: send.client_seq,
                reason,
            },
            None => {
                let timeline = self.timelines.entry(send.conv).or_default();
                let seq = Seq(timeline.messages.len() as u64 + 1);
                let message = Message {
                    conv: send.conv,
                    seq,
                    sender_user: user,
                    sender_device: device,
                    client_msg_id: send.client_msg_id,
                    client_seq: send.client_seq,
                    body: send.body,
                    client_time_ms: send.client_time_ms,
                };
                Record::Committed(message)
            }
        };
        self.apply(&record, log_position);
        self.storage.append(record);
        self.request_sync();
    }

    /// A retransmit of a send that is already resolved gets the original answer, once that answer
    /// is durable; before that, the answer goes out when the sync completes.
    fn answer_retransmit(
        &mut self,
        from: Address,
        device: DeviceId,
        client_msg_id: ClientMsgId,
        outcome: Outcome,
    ) {
        if outcome.log_position >= self.storage.synced() {
            return;
        }
        match outcome.resolution {
            Resolution::Committed(seq) => {
                let conv = outcome.conv;
                self.emit(Event::RetransmitDeduplicated {
                    device,
                    client_msg_id,
                    seq,
                });
                self.emit(Event::AckSent {
                    device,
                    conv,
                    client_msg_id,
                    seq,
                });
                self.transmit(
                    from,
                    Packet::SendAck {
                        conv,
                        client_msg_id,
                        seq,
                    },
                );
            }
            Resolution::Refused(reason) => {
                let conv = outcome.conv;
                self.transmit(
                    from,
                    Packet::SendRejected {
                        conv,
                        client_msg_id,
                        reason,
                    },
                );
            }
        }
    }

    /// Updates the indices for a record written at `log_position` (on write, and on recovery).
    fn apply(&mut self, record: &Record, log_position: u64) {
        let (conv, device, client_msg_id, client_seq, resolution) = match record {
            Record::Committed(message) => {
                let timeline = self.timelines.entry(message.conv).or_default();
                assert_eq!(
                    message.seq.0,
                    timeline.messages.len() as u64 + 1,
                    "timeline has a hole"
                );
                timeline.messages.push(message.clone());
                let resolution = Resolution::Committed(message.seq);
                (
                    message.conv,
                    message.sender_device,
                    message.client_msg_id,
                    message.client_seq,
                    resolution,
                )
            }
            Record::Refused {
                conv,
                sender_device,
                client_msg_id,
                client_seq,
                reason,
            } => (
                *conv,
                *sender_device,
                *client_msg_id,
                *client_seq,
                Resolution::Refused(*reason),
            ),
        };
        let resolved = self.resolved.entry((device, conv)).or_default();
        assert!(client_seq > *resolved, "client_seq resolved twice");
        *resolved = client_seq;
        self.outcomes.insert(
            (device, client_msg_id),
            Outcome {
                conv,
                resolution,
                log_position,
            },
        );
    }

    fn outcome_position(&self, record: &Record) -> u64 {
        let key = match record {
            Record::Committed(message) => (message.sender_device, message.client_msg_id),
            Record::Refused {
                sender_device,
                client_msg_id,
                ..
            } => (*sender_device, *client_msg_id),
        };
        self.outcomes
            .get(&key)
            .map_or(u64::MAX, |outcome| outcome.log_position)
    }

    fn request_sync(&mut self) {
        if !self.sync_in_flight {
            self.sync_in_flight = true;
            self.outputs.push_back(Output::SyncStorage {
                through: self.storage.written(),
            });
        }
    }

    /// A record became durable: now, and only now, the world may learn about it.
    fn publish(&mut self, now: Time, record: Record) {
        match record {
            Record::Committed(message) => {
                let timeline = self.timelines.entry(message.conv).or_default();
                assert_eq!(
                    timeline.durable_head.next(),
                    message.seq,
                    "durable out of order"
                );
                timeline.durable_head = message.seq;
                self.emit(Event::Committed {
                    conv: message.conv,
                    seq: message.seq,
                    sender_user: message.sender_user,
                    sender_device: message.sender_device,
                    client_msg_id: message.client_msg_id,
                    client_seq: message.client_seq,
                    body: message.body.clone(),
                });
                if let Some(address) = self.session_of_device.get(&message.sender_device).copied() {
                    let (conv, client_msg_id, seq) =
                        (message.conv, message.client_msg_id, message.seq);
                    self.emit(Event::AckSent {
                        device: message.sender_device,
                        conv,
                        client_msg_id,
                        seq,
                    });
                    self.transmit(
                        address,
                        Packet::SendAck {
                            conv,
                            client_msg_id,
                            seq,
                        },
                    );
                }
                self.push(now, &message);
            }
            Record::Refused {
                conv,
                sender_device,
                client_msg_id,
                reason,
                ..
            } => {
                if let Some(address) = self.session_of_device.get(&sender_device).copied() {
                    self.transmit(
                        address,
                        Packet::SendRejected {
                            conv,
                            client_msg_id,
                            reason,
                        },
                    );
                }
            }
        }
    }

    // ---- delivery ----

    fn push(&mut self, now: Time, message: &Message) {
        let mut targets = Vec::new();
        for user in self.directory.members(message.conv) {
            for device in self.directory.devices(*user) {
                if device == message.sender_device {
                    continue;
                }
                if let Some(address) = self.session_of_device.get(&device) {
                    targets.push(*address);
                }
            }
        }
        let retry_at = now.plus_ms(self.config.push_retry_initial_ms);
        for address in targets {
            let Some(session) = self.sessions.get_mut(&address) else {
                continue;
            };
            if session.pushes.len() >= self.config.push_window_max as usize {
                // Window full: the device is far behind and will catch up by pull.
                continue;
            }
            session.pushes.insert(
                (message.conv, message.seq),
                PushState {
                    attempts: 1,
                    retry_at,
                },
            );
            self.transmit(
                address,
                Packet::Deliver {
                    message: message.clone(),
                },
            );
        }
    }

    fn retry_pushes(&mut self, now: Time) {
        let mut resend = Vec::new();
        let mut abandoned = Vec::new();
        for (address, session) in &mut self.sessions {
            session.pushes.retain(|&(conv, seq), push| {
                if push.retry_at > now {
                    return true;
                }
                if push.attempts >= self.config.push_attempts_max {
                    abandoned.push((session.device, conv, seq));
                    return false;
                }
                let backoff_ms = self.config.push_retry_initial_ms << push.attempts.min(16);
                push.attempts += 1;
                push.retry_at = now.plus_ms(backoff_ms.min(self.config.push_retry_max_ms));
                resend.push((*address, conv, seq));
                true
            });
        }
        for (device, conv, seq) in abandoned {
            self.emit(Event::PushAbandoned { device, conv, seq });
        }
        for (address, conv, seq) in resend {
            let message = self.timelines[&conv].messages[seq.0 as usize - 1].clone();
            self.transmit(address, Packet::Deliver { message });
        }
    }

    fn handle_pull(
        &mut self,
        from: Address,
        user: UserId,
        device: DeviceId,
        conv: ConvId,
        after: Seq,
        limit: u32,
    ) {
        if !self.directory.is_member(conv, user) {
            self.refuse(from, Some(device), Rejection::NotMember, "pull");
            return;
        }
        let durable = self.durable_timeline(conv);
        let start = (after.0 as usize).min(durable.len());
        let count = limit.clamp(1, self.config.pull_page_max) as usize;
        let messages = durable[start..(start + count).min(durable.len())].to_vec();
        let head = self.durable_head(conv);
        self.transmit(
            from,
            Packet::PullResponse {
                conv,
                messages,
                head,
            },
        );
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
        if self.armed != Some(self.next_tick) {
            self.armed = Some(self.next_tick);
            self.outputs
                .push_back(Output::ArmTimer { at: self.next_tick });
        }
    }
}

struct IncomingSend {
    conv: ConvId,
    client_msg_id: ClientMsgId,
    client_seq: ClientSeq,
    body: String,
    client_time_ms: u64,
}
