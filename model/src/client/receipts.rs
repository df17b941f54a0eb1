//! Read receipts on the device: the user reads a conversation up to what this device displayed;
//! the device tells the server until the server confirms; it shows the watermarks and read counts
//! the server sends, never moving one back.

use super::*;

impl Client {
    /// The user opened `conv` and read what is on screen, and looks at who read its own latest
    /// message there (enterprise IM's reader list, fetched on demand; in 1:1, the peer or no one).
    pub(super) fn handle_read(&mut self, now: Time, conv: ConvId) {
        self.store.open_conv = Some(conv);
        self.emit(Event::ConversationOpened { conv });
        self.poll_presence(now);
        let last_own = self
            .store
            .conversations
            .get(&conv)
            .map_or(Seq::ZERO, |c| c.last_own);
        if last_own > Seq::ZERO && self.is_online() {
            self.transmit(Packet::ReadersQuery {
                conv,
                seq: last_own,
            });
        }
        let own = self.identity.user;
        let held = self
            .hold_back
            .get(&conv)
            .and_then(|held| held.keys().next_back().copied());
        let variant = self.config.variant;
        let Some(conversation) = self.store.conversations.get_mut(&conv) else {
            return;
        };
        let mut up_to = conversation.displayed_up_to;
        if variant == Variant::ReadBeforeDisplay {
            // VARIANT read-before-display: what arrived counts as read, also what still waits
            // in the hold-back buffer behind a hole.
            up_to = up_to.max(held.unwrap_or_default());
        }
        let known = conversation.read_local.max(conversation.watermark(own));
        if up_to <= known {
            return;
        }
        conversation.read_local = up_to;
        self.emit(Event::ReadMarked { conv, up_to });
        self.send_read(now, conv);
    }

    /// Sends this device's read of `conv` if the server has not confirmed it yet.
    pub(super) fn send_read(&mut self, now: Time, conv: ConvId) {
        let own = self.identity.user;
        let Some(conversation) = self.store.conversations.get(&conv) else {
            return;
        };
        let up_to = conversation.read_local;
        if up_to <= conversation.watermark(own) || !self.is_online() {
            self.read_deadline.remove(&conv);
            return;
        }
        self.transmit(Packet::Read { conv, up_to });
        self.read_deadline
            .insert(conv, now.plus_ms(self.config.pull_timeout_ms));
    }

    pub(super) fn send_reads(&mut self, now: Time) {
        let convs: Vec<ConvId> = self.store.conversations.keys().copied().collect();
        for conv in convs {
            self.send_read(now, conv);
        }
    }

    pub(super) fn read_timeouts(&mut self, now: Time) {
        let due: Vec<ConvId> = self
            .read_deadline
            .iter()
            .filter(|(_, deadline)| now >= **deadline)
            .map(|(conv, _)| *conv)
            .collect();
        for conv in due {
            self.send_read(now, conv);
        }
    }

    /// A watermark from the server: shown if it is newer than what is shown.
    pub(super) fn handle_read_update(&mut self, now: Time, conv: ConvId, user: UserId, up_to: Seq) {
        let conversation = self.store.conversations.entry(conv).or_default();
        let shown = conversation.watermarks.entry(user).or_default();
        if up_to > *shown {
            *shown = up_to;
            self.emit(Event::ReadSeen { conv, user, up_to });
        }
        if user == self.identity.user {
            self.send_read(now, conv);
        }
    }

    pub(super) fn handle_read_counts(&mut self, conv: ConvId, counts: Vec<ReadCount>) {
        let conversation = self.store.conversations.entry(conv).or_default();
        let mut seen = Vec::new();
        for ReadCount { seq, readers } in counts {
            let shown = conversation.read_counts.entry(seq).or_default();
            if readers > *shown {
                *shown = readers;
                seen.push(Event::ReadCountSeen { conv, seq, readers });
            }
        }
        seen.into_iter().for_each(|event| self.emit(event));
    }

    pub(super) fn handle_receipt_state(
        &mut self,
        now: Time,
        watermarks: Vec<ReadMark>,
        counts: Vec<(ConvId, Vec<ReadCount>)>,
    ) {
        for ReadMark { conv, user, up_to } in watermarks {
            self.handle_read_update(now, conv, user, up_to);
        }
        for (conv, counts) in counts {
            self.handle_read_counts(conv, counts);
        }
    }

    /// The heartbeat's receipt key is the sum of what the user's devices should show; a device
    /// showing another sum missed an update and asks for the whole state.
    pub(super) fn check_receipt_key(&mut self, receipt_key: u64) {
        let ours: u64 = self
            .store
            .conversations
            .values()
            .map(|c| {
                let marks: u64 = c.watermarks.values().map(|seq| seq.0).sum();
                let counts: u64 = c.read_counts.values().map(|n| u64::from(*n)).sum();
                marks + counts
            })
            .sum();
        if ours != receipt_key {
            self.transmit(Packet::ReceiptSyncRequest);
        }
    }
}

impl Conversation {
    /// The watermark shown for `user` (zero: nothing read).
    pub(super) fn watermark(&self, user: UserId) -> Seq {
        self.watermarks.get(&user).copied().unwrap_or_default()
    }
}
