//! Read receipts. A read is durable before anyone hears of it (store, then tell), like a
//! message, so a watermark never goes back, also across a crash.
//!
//! - Per (conversation, user) the server keeps a read-up-to watermark; a read that would not move
//!   it forward (late, duplicated, reordered, or from a sibling device that is behind) is
//!   ignored, and the device is told the current watermark.
//! - Who hears of a watermark: the user's own devices (so a sibling stops showing the
//!   conversation unread), and in 1:1 the peer's devices (the "read" tick).
//! - Groups: per message, the number of members who read it (members at its seq, its sender
//!   excluded; membership entries are not counted) goes to the sender's devices: at once for a small group; for a group above
//!   `notify_threshold_members`, once per `receipt_batch_ms` with the window's reads merged.
//! - The heartbeat's receipt key (the sum of everything the user's devices should show) lets a
//!   device that missed an update ask for the whole state.

use super::Server;
use crate::event::Event;
use crate::ids::{Address, ConvId, DeviceId, Seq, UserId};
use crate::storage::Record;
use crate::time::Time;
use crate::variant::Variant;
use crate::wire::{Packet, ReadCount, ReadMark, Rejection};
use std::collections::{BTreeMap, BTreeSet};

/// Whose reads a read count counts: a user; VARIANT read-count-double: a device.
pub(super) type Reader = (UserId, Option<DeviceId>);

/// The server's read state; rebuilt from the durable `Read` records after a crash.
#[derive(Default)]
pub(super) struct Receipts {
    /// Per (conversation, user): the durable watermark.
    watermarks: BTreeMap<(ConvId, UserId), Seq>,
    /// Per (conversation, reader): how far its reads are counted.
    counted: BTreeMap<(ConvId, Reader), Seq>,
    /// Per (conversation, reader): the highest read written, durable or not.
    written: BTreeMap<(ConvId, Reader), Seq>,
    /// Per group message: the members who read it.
    counts: BTreeMap<(ConvId, Seq), u32>,
    /// Per user: the sum of the watermarks and read counts its devices should show.
    keys: BTreeMap<UserId, u64>,
    /// Large groups: read counts changed in the current window, and when the window closes.
    batches: BTreeMap<ConvId, (Time, BTreeSet<Seq>)>,
}

impl Receipts {
    /// When the earliest window of batched read counts closes.
    pub(super) fn batch_due(&self) -> Option<Time> {
        self.batches.values().map(|(at, _)| *at).min()
    }
}

impl Server {
    fn reader(&self, user: UserId, device: DeviceId) -> Reader {
        // VARIANT read-count-double: reads are counted per device.
        let per_device = self.config.variant == Variant::ReadCountDouble;
        (user, per_device.then_some(device))
    }

    pub(super) fn handle_read(
        &mut self,
        from: Address,
        user: UserId,
        device: DeviceId,
        conv: ConvId,
        up_to: Seq,
    ) {
        let Some(conversation) = self.conversations.get(&conv) else {
            self.refuse(from, Some(device), Rejection::Unexpected, "read");
            return;
        };
        // A removed member may still read what it saw while it was one (the phone keeps it);
        // only a user who was never a member is refused.
        if conversation
            .membership
            .window(user, conversation.durable_head)
            .is_none()
        {
            self.refuse(from, Some(device), Rejection::NotMember, "read");
            return;
        }
        // A device can only have displayed what is durable.
        if up_to > conversation.durable_head || up_to == Seq::ZERO {
            self.refuse(from, Some(device), Rejection::Unexpected, "read");
            return;
        }
        let reader = self.reader(user, device);
        let written = self.receipts.written.entry((conv, reader)).or_default();
        if up_to <= *written {
            let watermark = self.watermark(conv, user);
            self.emit(Event::ReadIgnored {
                conv,
                user,
                device,
                up_to,
                watermark,
            });
            if watermark > Seq::ZERO {
                let update = Packet::ReadUpdate {
                    conv,
                    user,
                    up_to: watermark,
                };
                self.transmit(from, update);
            }
            return;
        }
        *written = up_to;
        self.storage.append(Record::Read {
            conv,
            user,
            device,
            up_to,
        });
        self.request_sync();
    }

    pub(super) fn watermark(&self, conv: ConvId, user: UserId) -> Seq {
        self.receipts
            .watermarks
            .get(&(conv, user))
            .copied()
            .unwrap_or_default()
    }

    /// Applies a durable read: moves the watermark and the read counts. Returns whether the
    /// user's watermark moved and which group messages gained a reader.
    pub(super) fn apply_read(
        &mut self,
        conv: ConvId,
        user: UserId,
        device: DeviceId,
        up_to: Seq,
    ) -> (bool, Vec<Seq>) {
        let reader = self.reader(user, device);
        let written = self.receipts.written.entry((conv, reader)).or_default();
        *written = up_to.max(*written);
        let counted = self.receipts.counted.entry((conv, reader)).or_default();
        let from = *counted;
        *counted = up_to.max(from);
        let mut gained = Vec::new();
        let conversation = &self.conversations[&conv];
        if conversation.is_group {
            for seq in from.0 + 1..=up_to.0 {
                let Some(message) = conversation.messages.get(seq as usize - 1) else {
                    break;
                };
                let seq = Seq(seq);
                let counted = message.change.is_none() && message.sender_user != user;
                if counted && conversation.membership.visible(user, seq) {
                    *self.receipts.counts.entry((conv, seq)).or_default() += 1;
                    *self.receipts.keys.entry(message.sender_user).or_default() += 1;
                    gained.push(seq);
                }
            }
        }
        let watermark = self.receipts.watermarks.entry((conv, user)).or_default();
        let moved = up_to > *watermark;
        if moved {
            let delta = up_to.0 - watermark.0;
            *watermark = up_to;
            *self.receipts.keys.entry(user).or_default() += delta;
            if !conversation.is_group {
                for peer in self.directory.members(conv).to_vec() {
                    if peer != user {
                        *self.receipts.keys.entry(peer).or_default() += delta;
                    }
                }
            }
        }
        (moved, gained)
    }

    /// A read became durable: record it and tell whoever shows it.
    pub(super) fn publish_read(
        &mut self,
        now: Time,
        conv: ConvId,
        user: UserId,
        device: DeviceId,
        up_to: Seq,
    ) {
        let (moved, gained) = self.apply_read(conv, user, device, up_to);
        if moved {
            self.emit(Event::ReadAdvanced {
                conv,
                user,
                device,
                up_to,
            });
            let mut watchers = vec![user];
            if !self.conversations[&conv].is_group {
                watchers.extend(self.directory.members(conv).iter().filter(|u| **u != user));
            }
            for watcher in watchers {
                for address in self.addresses_of(watcher) {
                    self.transmit(address, Packet::ReadUpdate { conv, user, up_to });
                }
            }
        }
        if gained.is_empty() {
            return;
        }
        let conversation = &self.conversations[&conv];
        let large =
            conversation.membership.member_count() > self.config.notify_threshold_members as usize;
        if large {
            let due = now.plus_ms(self.config.receipt_batch_ms);
            let batch = self
                .receipts
                .batches
                .entry(conv)
                .or_insert((due, BTreeSet::new()));
            batch.1.extend(gained);
            let due = batch.0;
            self.housekeeping_at(due);
        } else {
            self.send_counts(conv, gained);
        }
    }

    /// Sends the current read counts of `seqs` to their senders' devices.
    fn send_counts(&mut self, conv: ConvId, seqs: impl IntoIterator<Item = Seq>) {
        let mut by_sender: BTreeMap<UserId, Vec<ReadCount>> = BTreeMap::new();
        let conversation = &self.conversations[&conv];
        for seq in seqs {
            let Some(message) = conversation.messages.get(seq.0 as usize - 1) else {
                continue;
            };
            let readers = self.receipts.counts.get(&(conv, seq)).copied().unwrap_or(0);
            by_sender
                .entry(message.sender_user)
                .or_default()
                .push(ReadCount { seq, readers });
        }
        for (sender, counts) in by_sender {
            for address in self.addresses_of(sender) {
                let counts = counts.clone();
                self.transmit(address, Packet::ReadCounts { conv, counts });
            }
        }
    }

    /// Large groups whose batch window closed: send the merged read counts.
    pub(super) fn send_due_counts(&mut self, now: Time) {
        let due: Vec<ConvId> = self
            .receipts
            .batches
            .iter()
            .filter(|(_, (at, _))| now >= *at)
            .map(|(conv, _)| *conv)
            .collect();
        for conv in due {
            if let Some((_, seqs)) = self.receipts.batches.remove(&conv) {
                self.send_counts(conv, seqs);
            }
        }
    }

    /// The reader list of one of the user's own messages: members at its seq, its sender
    /// excluded, split by whether their watermark covers it.
    pub(super) fn handle_readers_query(
        &mut self,
        from: Address,
        user: UserId,
        device: DeviceId,
        conv: ConvId,
        seq: Seq,
    ) {
        let Some(conversation) = self.conversations.get(&conv) else {
            self.refuse(from, Some(device), Rejection::Unexpected, "readers_query");
            return;
        };
        let own = seq <= conversation.durable_head
            && seq > Seq::ZERO
            && conversation.messages[seq.0 as usize - 1].sender_user == user;
        if !own {
            self.refuse(from, Some(device), Rejection::Unexpected, "readers_query");
            return;
        }
        let (readers, unread) = conversation
            .membership
            .audience(seq)
            .filter(|member| *member != user)
            .partition(|member| self.watermark(conv, *member) >= seq);
        let answer = Packet::Readers {
            conv,
            seq,
            readers,
            unread,
        };
        self.transmit(from, answer);
    }

    /// What the user's devices should show; the heartbeat carries it as the receipt key.
    pub(super) fn receipt_key(&self, user: UserId) -> u64 {
        self.receipts.keys.get(&user).copied().unwrap_or(0)
    }

    /// The whole read state a user's devices show.
    pub(super) fn receipt_state(&self, user: UserId) -> Packet {
        let mut watermarks = Vec::new();
        let mut counts = Vec::new();
        for conv in self.conversations_of.get(&user).into_iter().flatten() {
            let conversation = &self.conversations[conv];
            let watchers: Vec<UserId> = if conversation.is_group {
                vec![user]
            } else {
                self.directory.members(*conv).to_vec()
            };
            for watched in watchers {
                let up_to = self.watermark(*conv, watched);
                if up_to > Seq::ZERO {
                    watermarks.push(ReadMark {
                        conv: *conv,
                        user: watched,
                        up_to,
                    });
                }
            }
            if conversation.is_group {
                let mine: Vec<ReadCount> = self
                    .receipts
                    .counts
                    .range((*conv, Seq::ZERO)..=(*conv, Seq(u64::MAX)))
                    .filter(|((_, seq), _)| {
                        let message = conversation.messages.get(seq.0 as usize - 1);
                        message.is_some_and(|m| m.sender_user == user)
                    })
                    .map(|((_, seq), readers)| ReadCount {
                        seq: *seq,
                        readers: *readers,
                    })
                    .collect();
                if !mine.is_empty() {
                    counts.push((*conv, mine));
                }
            }
        }
        Packet::ReceiptState { watermarks, counts }
    }

    /// The addresses of a user's live sessions.
    pub(super) fn addresses_of(&self, user: UserId) -> Vec<Address> {
        self.directory
            .devices(user)
            .filter_map(|device| self.session_of_device.get(&device).copied())
            .collect()
    }
}
