//! Sending: the outbox, the in-order window, retransmission with backoff, and acks and
//! refusals from the server.

use super::*;

impl Client {
    pub(super) fn handle_send(
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
    pub(super) fn send_window(&mut self, now: Time, conv: ConvId) {
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

    pub(super) fn retransmit_timeouts(&mut self, now: Time) {
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

    pub(super) fn handle_send_ack(
        &mut self,
        now: Time,
        conv: ConvId,
        client_msg_id: ClientMsgId,
        seq: Seq,
    ) {
        let Some(outgoing) = self.take_outgoing(now, conv, client_msg_id) else {
            return; // A duplicate ack: the message already left the outbox.
        };
        self.emit(Event::SendAcked {
            conv,
            client_msg_id,
            seq,
        });
        let conversation = self.store.conversations.entry(conv).or_default();
        conversation.last_own = conversation.last_own.max(seq);
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
        self.accept(message, Via::Ack);
        self.after_accept(now, conv, before);
    }

    pub(super) fn handle_send_rejected(
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
    pub(super) fn take_outgoing(
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
}

pub(super) fn send_packet(conv: ConvId, sender: UserId, outgoing: &Outgoing) -> Packet {
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
