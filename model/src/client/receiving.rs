//! Receiving: placing each message (display, hold back or drop), the cursor and its batched
//! acks, join points, holes and pulls.

use super::*;

impl Client {
    /// Places one message: display it if it is next, hold it back if it is ahead of a hole, drop
    /// it if it was displayed already. `via` is the packet that brought it.
    pub(super) fn accept(&mut self, message: Message, via: Via) {
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
                self.emit(displayed_event(message, via));
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
                self.display(message, via);
                return;
            }
            self.hold(message, via);
            return;
        }
        if variant == Variant::TimestampOrder {
            self.display_by_timestamp(message, via);
            return;
        }
        self.display(message, via);
        loop {
            let next = self.cursor(conv).next();
            let Some(held) = self
                .hold_back
                .get_mut(&conv)
                .and_then(|held| held.remove(&next))
            else {
                break;
            };
            self.display(held.0, held.1);
        }
    }

    /// Moves the cursor up to a join point (never down), dropping what is held below it.
    pub(super) fn raise_cursor(&mut self, conv: ConvId, floor: Seq) {
        let conversation = self.store.conversations.entry(conv).or_default();
        if floor > conversation.cursor {
            conversation.cursor = floor;
            if let Some(held) = self.hold_back.get_mut(&conv) {
                held.retain(|seq, _| *seq > floor);
            }
        }
    }

    pub(super) fn display(&mut self, message: Message, via: Via) {
        let conversation = self.store.conversations.entry(message.conv).or_default();
        assert_eq!(
            message.seq,
            conversation.cursor.next(),
            "display must be contiguous"
        );
        conversation.cursor = message.seq;
        conversation.displayed_up_to = message.seq;
        self.emit(displayed_event(message, via));
    }

    /// VARIANT timestamp-order: the contiguous run that `message` opens (it and what it
    /// releases from the hold-back buffer) is shown sorted by the sender's clock, not by seq.
    pub(super) fn display_by_timestamp(&mut self, message: Message, via: Via) {
        let conv = message.conv;
        let mut next = message.seq.next();
        let mut run = vec![(message, via)];
        while let Some(held) = self
            .hold_back
            .get_mut(&conv)
            .and_then(|held| held.remove(&next))
        {
            run.push(held);
            next = next.next();
        }
        run.sort_by_key(|(m, _)| (m.client_time_ms, m.seq));
        let last = Seq(next.0 - 1);
        let conversation = self.store.conversations.entry(conv).or_default();
        conversation.cursor = last;
        conversation.displayed_up_to = last;
        for (message, via) in run {
            self.emit(displayed_event(message, via));
        }
    }

    pub(super) fn hold(&mut self, message: Message, via: Via) {
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
        self.hold_back
            .entry(conv)
            .or_default()
            .insert(seq, (message, via));
        self.emit(Event::HeldBack { conv, seq });
    }

    /// After a packet for `conv` was placed: report and ack cursor progress, track the hole.
    pub(super) fn after_accept(&mut self, now: Time, conv: ConvId, before: Seq) {
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

    pub(super) fn send_ack(&mut self, conv: ConvId) {
        self.ack_pending.remove(&conv);
        if self.is_online() {
            self.transmit(Packet::Ack {
                conv,
                watermark: self.cursor(conv),
            });
        }
    }

    pub(super) fn ack_timeouts(&mut self, now: Time) {
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

    pub(super) fn gap_timeouts(&mut self, now: Time) {
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

    pub(super) fn pull_behind(&mut self, now: Time, heads: &[Head]) {
        for head in heads {
            self.raise_cursor(head.conv, head.floor);
            if head.seq > self.cursor(head.conv) {
                self.pull(now, head.conv, PullReason::Resume);
            }
        }
    }

    pub(super) fn pull(&mut self, now: Time, conv: ConvId, reason: PullReason) {
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
        // A retry or a next page continues the pull that started the round: the path is its.
        if !matches!(reason, PullReason::Retry | PullReason::NextPage)
            || !self.pull_cause.contains_key(&conv)
        {
            self.pull_cause.insert(conv, reason);
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

    pub(super) fn handle_pull_response(
        &mut self,
        now: Time,
        conv: ConvId,
        messages: Vec<Message>,
        head: Seq,
    ) {
        self.pull_deadline.remove(&conv);
        let before = self.cursor(conv);
        let cause = self.pull_cause.get(&conv).copied();
        let via = Via::Pull(cause.unwrap_or(PullReason::Resume));
        for message in messages.into_iter().filter(|m| m.conv == conv) {
            self.accept(message, via);
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
            return;
        }
        // A notice that came while this pull was in flight announced news the answer may not
        // hold (it was read before that news was durable): pull for it now rather than wait
        // for the notice's retry.
        // Only while answers make progress: what a notice announced may lie beyond what this
        // device may see (a member removed in the meantime), and asking again for nothing would
        // never end.
        let progressed = self.cursor(conv) > before;
        match self.notified_head.get(&conv) {
            Some(notified) if *notified > self.cursor(conv) && progressed && !stalled => {
                self.pull(now, conv, PullReason::Notified);
            }
            Some(_) => {
                self.notified_head.remove(&conv);
            }
            None => {}
        }
    }

    pub(super) fn pull_timeouts(&mut self, now: Time) {
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
}

pub(super) fn displayed_event(message: Message, via: Via) -> Event {
    Event::Displayed {
        conv: message.conv,
        seq: message.seq,
        sender_user: message.sender_user,
        sender_device: message.sender_device,
        client_msg_id: message.client_msg_id,
        body: message.body,
        via: Some(via),
    }
}
