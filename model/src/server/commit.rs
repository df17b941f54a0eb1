//! Rules 1–4 of the server: who may send, sender FIFO, idempotent retransmits, and store then
//! ack. A send is resolved exactly once, as committed (it takes the next seq) or refused (a
//! durable record too, so the device's `client_seq` stays resolved across a restart).

use super::{Outcome, Resolution, Server};
use crate::event::Event;
use crate::ids::{Address, ClientMsgId, ClientSeq, ConvId, DeviceId, Seq, UserId};
use crate::storage::Record;
use crate::time::Time;
use crate::variant::Variant;
use crate::wire::{MembershipChange, Message, Packet, Rejection};

pub(super) struct IncomingSend {
    pub conv: ConvId,
    pub client_msg_id: ClientMsgId,
    pub client_seq: ClientSeq,
    pub body: String,
    pub client_time_ms: u64,
    pub change: Option<MembershipChange>,
}

impl Server {
    pub(super) fn handle_send(
        &mut self,
        from: Address,
        user: UserId,
        device: DeviceId,
        send: IncomingSend,
    ) {
        let variant = self.config.variant;
        if let Some(outcome) = self.outcomes.get(&(device, send.client_msg_id)).copied() {
            // VARIANT non-idempotent-commit: a retransmit of a committed message is not
            // recognised; it is committed again below, with a new seq.
            let committed = matches!(outcome.resolution, Resolution::Committed(_));
            if !(variant == Variant::NonIdempotentCommit && committed) {
                self.answer_retransmit(from, device, send.client_msg_id, outcome);
                return;
            }
        }
        let resolved = self
            .resolved
            .get(&(device, send.conv))
            .copied()
            .unwrap_or_default();
        let expected = resolved.next();
        // VARIANT retry-reorders: no sender FIFO, any client_seq is committed as it arrives.
        // VARIANT non-idempotent-commit: a retransmit's client_seq is resolved already.
        let any_order = matches!(
            variant,
            Variant::RetryReorders | Variant::NonIdempotentCommit
        );
        if !any_order && send.client_seq < expected {
            // A resolved client_seq under a new client_msg_id: the device broke its own numbering.
            self.refuse(from, Some(device), Rejection::Unexpected, "send");
            return;
        }
        if !any_order && send.client_seq > expected {
            let (conv, client_seq) = (send.conv, send.client_seq);
            self.emit(Event::OutOfOrderDropped {
                device,
                conv,
                client_seq,
                expected,
            });
            return;
        }
        let log_position = self.storage.written();
        let record = match self.refusal(user, &send) {
            Some(reason) => Record::Refused {
                conv: send.conv,
                sender_device: device,
                client_msg_id: send.client_msg_id,
                client_seq: send.client_seq,
                reason,
            },
            None => {
                let conversation = &self.conversations[&send.conv];
                let message = Message {
                    conv: send.conv,
                    seq: Seq(conversation.messages.len() as u64 + 1),
                    sender_user: user,
                    sender_device: device,
                    client_msg_id: send.client_msg_id,
                    client_seq: send.client_seq,
                    body: send.body,
                    client_time_ms: send.client_time_ms,
                    change: send.change,
                };
                Record::Committed(message)
            }
        };
        let copies = self.inbox_copies(&record);
        self.apply(&record, log_position);
        if variant == Variant::AckBeforeStore {
            // VARIANT ack-before-store: the ack leaves when the write is issued, before the sync
            // that makes it durable; a crash in between loses an acked message.
            if let Record::Committed(message) = &record {
                self.ack_sender(from, message);
            }
        }
        self.storage.append(record);
        for copy in copies {
            self.apply(&copy, self.storage.written());
            self.storage.append(copy);
        }
        self.request_sync();
    }

    /// Why the send must be refused, if it must.
    fn refusal(&self, user: UserId, send: &IncomingSend) -> Option<Rejection> {
        let Some(conversation) = self.conversations.get(&send.conv) else {
            return Some(Rejection::NotMember);
        };
        if !conversation.membership.is_member(user) {
            return Some(Rejection::NotMember);
        }
        if send.body.len() > self.config.body_bytes_max as usize {
            return Some(Rejection::BodyTooLarge);
        }
        match send.change {
            Some(_) if !conversation.is_group => Some(Rejection::Unexpected),
            Some(MembershipChange::Add(added)) if !self.directory.exists(added) => {
                Some(Rejection::UnknownUser)
            }
            Some(change) => conversation.membership.check(user, change).err(),
            None => None,
        }
    }

    /// Fan-out write: a committed entry is copied to the inbox of every user who may see it, and
    /// acked only once every copy is durable. Store once (the default) writes nothing more.
    fn inbox_copies(&self, record: &Record) -> Vec<Record> {
        let Record::Committed(message) = record else {
            return Vec::new();
        };
        if !self.config.fanout_write {
            return Vec::new();
        }
        let mut membership = self.conversations[&message.conv].membership.clone();
        if let Some(change) = message.change {
            membership.apply(message.seq, message.sender_user, change);
        }
        membership
            .audience(message.seq)
            .map(|user| Record::InboxCopy {
                user,
                conv: message.conv,
                seq: message.seq,
            })
            .collect()
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
        let conv = outcome.conv;
        match outcome.resolution {
            Resolution::Committed(seq) => {
                self.emit(Event::RetransmitDeduplicated {
                    device,
                    client_msg_id,
                    seq,
                });
                if self.config.variant == Variant::DedupeWithoutAck {
                    // VARIANT dedupe-without-ack: the retransmit is recognised and dropped, but
                    // not acked again, so a sender whose first ack was lost resends for ever.
                    return;
                }
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
    pub(super) fn apply(&mut self, record: &Record, log_position: u64) {
        let (conv, device, client_msg_id, client_seq, resolution) = match record {
            Record::Committed(message) => {
                let conversation = self
                    .conversations
                    .get_mut(&message.conv)
                    .expect("validated conversation");
                let stored = message.seq.0.checked_sub(1);
                if stored.and_then(|i| conversation.messages.get(i as usize)) == Some(message) {
                    // A store that holds a row twice (the queue topology's non-idempotent
                    // consumer) reads back once; the final timeline shows the store as it is.
                    return;
                }
                if self.config.variant == Variant::SeqReuseAfterRestart {
                    // VARIANT seq-reuse-after-restart: a reused seq overwrites the durable entry
                    // that had it (and drops what followed it) when the log is read back.
                    conversation.messages.truncate(message.seq.0 as usize - 1);
                }
                assert_eq!(
                    message.seq.0,
                    conversation.messages.len() as u64 + 1,
                    "timeline has a hole"
                );
                conversation.messages.push(message.clone());
                if let Some(change) = message.change {
                    conversation
                        .membership
                        .apply(message.seq, message.sender_user, change);
                    let subject = change.subject(message.sender_user);
                    self.conversations_of
                        .entry(subject)
                        .or_default()
                        .insert(message.conv);
                }
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
            Record::InboxCopy { user, conv, seq } => {
                self.inboxes.entry((*user, *conv)).or_default().push(*seq);
                return;
            }
            // Reads change state only once durable: see `publish`. Here: recovery.
            Record::Read {
                conv,
                user,
                device,
                up_to,
            } => {
                self.apply_read(*conv, *user, *device, *up_to);
                return;
            }
        };
        let resolved = self.resolved.entry((device, conv)).or_default();
        // VARIANT retry-reorders, non-idempotent-commit: a client_seq may be resolved out of
        // order or twice; the highest stays the mark.
        let any_order = matches!(
            self.config.variant,
            Variant::RetryReorders | Variant::NonIdempotentCommit
        );
        assert!(
            any_order || client_seq > *resolved,
            "client_seq resolved twice"
        );
        *resolved = client_seq.max(*resolved);
        self.outcomes.insert(
            (device, client_msg_id),
            Outcome {
                conv,
                resolution,
                log_position,
            },
        );
    }

    pub(super) fn request_sync(&mut self) {
        if !self.sync_in_flight {
            self.sync_in_flight = true;
            let through = self.storage.written();
            self.outputs
                .push_back(crate::output::Output::SyncStorage { through });
        }
    }

    /// A record became durable: now, and only now, the world may learn about it.
    pub(super) fn publish(&mut self, now: Time, record: Record) {
        match record {
            Record::Committed(message) => {
                let conversation = self
                    .conversations
                    .get_mut(&message.conv)
                    .expect("committed conversation");
                assert_eq!(
                    conversation.durable_head.next(),
                    message.seq,
                    "durable out of order"
                );
                conversation.durable_head = message.seq;
                self.emit(Event::Committed {
                    conv: message.conv,
                    seq: message.seq,
                    sender_user: message.sender_user,
                    sender_device: message.sender_device,
                    client_msg_id: message.client_msg_id,
                    client_seq: message.client_seq,
                    body: message.body.clone(),
                    change: message.change,
                });
                // VARIANT ack-before-store: acked at write time already.
                let acked = self.config.variant == Variant::AckBeforeStore;
                if let Some(address) = self.session_of_device.get(&message.sender_device).copied() {
                    if !acked {
                        self.ack_sender(address, &message);
                    }
                }
                self.deliver(now, &message);
            }
            Record::Refused {
                conv,
                sender_device,
                client_msg_id,
                reason,
                ..
            } => {
                // The history shows the refusal where the commit would have been.
                let device = Some(sender_device);
                self.emit(Event::Rejected {
                    device,
                    refused: "send".to_string(),
                    reason,
                });
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
            Record::InboxCopy { .. } => {}
            Record::Read {
                conv,
                user,
                device,
                up_to,
            } => self.publish_read(now, conv, user, device, up_to),
        }
    }

    fn ack_sender(&mut self, address: Address, message: &Message) {
        let (conv, client_msg_id, seq) = (message.conv, message.client_msg_id, message.seq);
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
}
