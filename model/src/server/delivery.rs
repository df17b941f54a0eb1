//! Rule 5 of the server and the reads: push (or, for large groups, notify-then-pull) each durable
//! entry to the devices that may see it, retry what is not acknowledged, serve pulls, and tell a
//! device what it may see (heads with their floors, and the sync key).

use super::{Notice, Retry, Server};
use crate::event::Event;
use crate::ids::{Address, ConvId, DeviceId, Seq, UserId};
use crate::membership::Membership;
use crate::time::Time;
use crate::variant::Variant;
use crate::wire::{Head, Message, Packet, Rejection};

impl Server {
    /// Sends a newly durable entry to the online devices of its audience (not the sender's).
    pub(super) fn deliver(&mut self, now: Time, message: &Message) {
        let conversation = &self.conversations[&message.conv];
        let notify = conversation.is_group
            && conversation.membership.member_count()
                > self.config.notify_threshold_members as usize;
        if notify {
            if self.config.notify_merge_ms == 0 {
                self.announce(now, message.conv, Some(message.sender_device));
            } else {
                // Merge the news of a window into one round of notices.
                let at = now.plus_ms(self.config.notify_merge_ms);
                let at = *self.announcements.entry(message.conv).or_insert(at);
                self.housekeeping_at(at);
            }
            return;
        }
        let variant = self.config.variant;
        let audience: Vec<UserId> = if variant == Variant::RemovedMemberStillReceives {
            // VARIANT removed-member-still-receives: fan-out reads the founding member list.
            Membership::founded(self.directory.members(message.conv))
                .audience(message.seq)
                .collect()
        } else if variant == Variant::AudienceFromCurrentMembers && message.change.is_none() {
            // VARIANT audience-from-current-members: the members now, when the message became
            // durable; a change committed while it waited for its sync is already in them.
            conversation.membership.members().collect()
        } else {
            conversation.membership.audience(message.seq).collect()
        };
        let mut targets = Vec::new();
        for user in audience {
            let mut online = false;
            for device in self.directory.devices(user) {
                if device == message.sender_device {
                    continue;
                }
                if variant == Variant::PushToOneDevice && online {
                    // VARIANT push-to-one-device: only the user's first online device gets the
                    // push; its other devices learn of the message from the heartbeat's sync key.
                    break;
                }
                if let Some(address) = self.session_of_device.get(&device) {
                    targets.push(*address);
                    online = true;
                }
            }
            if variant == Variant::StoreOnlyOffline && online {
                // VARIANT store-only-offline: a user online now gets the push and nothing is
                // kept for its pulls; if the push fails the entry is lost to it.
                self.push_only.insert((user, message.conv, message.seq));
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
                Retry {
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
            self.housekeeping_at(retry_at);
        }
    }

    /// Notify-then-pull: tells each online device that may see the durable head of `conv` (but
    /// `except`) that there is news up to it. One notice is outstanding per device and group;
    /// later news merges into it until the device pulls (or acks what the notice told of: the
    /// merged news then goes out at once, see `Packet::Ack`), unless the outstanding one was
    /// already sent again: unanswered through a retry, it is likely lost, and its retry has
    /// backed off (seconds, where a notice round trip is milliseconds). That news goes out now
    /// as a new notice (seed 136 of `scenarios/group-2000-cluster.toml`: a notice lost in a
    /// partition held the news after the heal back 3.6 s).
    pub(super) fn announce(&mut self, now: Time, conv: ConvId, except: Option<DeviceId>) {
        let conversation = &self.conversations[&conv];
        let head = conversation.durable_head;
        // Everyone who may see any entry since the last round: a member removed within a
        // merge window must still hear of its removal.
        let since = self
            .announced
            .insert(conv, head)
            .unwrap_or_default()
            .next()
            .min(head);
        let mut targets = Vec::new();
        for user in conversation.membership.audience_between(since, head) {
            for device in self.directory.devices(user) {
                if Some(device) == except {
                    continue;
                }
                if let Some(address) = self.session_of_device.get(&device) {
                    targets.push(*address);
                }
            }
        }
        for address in targets {
            let Some(session) = self.sessions.get(&address) else {
                continue;
            };
            if session
                .notices
                .get(&conv)
                .is_some_and(|outstanding| outstanding.retry.attempts == 1)
            {
                continue;
            }
            self.notify(now, address, conv);
        }
    }

    /// Sends the session at `address` a fresh notice of the durable head of `conv`.
    pub(super) fn notify(&mut self, now: Time, address: Address, conv: ConvId) {
        let Some(session) = self.sessions.get_mut(&address) else {
            return;
        };
        let head = self.conversations[&conv].durable_head;
        let retry_at = now.plus_ms(self.config.push_retry_initial_ms);
        let retry = Retry {
            attempts: 1,
            retry_at,
        };
        session.notices.insert(conv, Notice { retry, head });
        self.transmit(address, Packet::Notify { conv, head });
        self.housekeeping_at(retry_at);
    }

    /// Sends the merged notices whose window has closed.
    pub(super) fn announce_due(&mut self, now: Time) {
        let due: Vec<ConvId> = self
            .announcements
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(conv, _)| *conv)
            .collect();
        for conv in due {
            self.announcements.remove(&conv);
            self.announce(now, conv, None);
        }
    }

    /// Resends pushes and notices whose time has come, with backoff; gives up after
    /// `push_attempts_max` tries (the heartbeat's sync key catches the device up).
    pub(super) fn retry_deliveries(&mut self, now: Time) {
        let config = &self.config;
        let backoff = |attempts: u32| {
            let backoff_ms = config.push_retry_initial_ms << attempts.min(16);
            now.plus_ms(backoff_ms.min(config.push_retry_max_ms))
        };
        let mut resend = Vec::new();
        let mut abandoned = Vec::new();
        for (address, session) in &mut self.sessions {
            let mut due = |key: (ConvId, Seq), retry: &mut Retry, notice: bool| {
                if retry.retry_at > now {
                    return true;
                }
                if retry.attempts >= config.push_attempts_max {
                    abandoned.push((session.device, key.0, key.1));
                    return false;
                }
                retry.retry_at = backoff(retry.attempts);
                retry.attempts += 1;
                resend.push((*address, key.0, key.1, notice));
                true
            };
            session.pushes.retain(|&key, retry| due(key, retry, false));
            session
                .notices
                .retain(|&conv, notice| due((conv, Seq::ZERO), &mut notice.retry, true));
        }
        for (device, conv, seq) in abandoned {
            self.emit(Event::PushAbandoned { device, conv, seq });
        }
        for (address, conv, seq, notice) in resend {
            let conversation = &self.conversations[&conv];
            let packet = if notice {
                let head = conversation.durable_head;
                let session = self.sessions.get_mut(&address);
                if let Some(notice) = session.and_then(|s| s.notices.get_mut(&conv)) {
                    notice.head = head;
                }
                Packet::Notify { conv, head }
            } else {
                Packet::Deliver {
                    message: conversation.messages[seq.0 as usize - 1].clone(),
                }
            };
            self.transmit(address, packet);
        }
    }

    /// Serves up to `limit` durable entries after `after` that the user may see.
    pub(super) fn handle_pull(
        &mut self,
        from: Address,
        user: UserId,
        device: DeviceId,
        conv: ConvId,
        after: Seq,
        limit: u32,
    ) {
        let Some((floor, cap)) = self.window(user, conv) else {
            self.refuse(from, Some(device), Rejection::NotMember, "pull");
            return;
        };
        if let Some(session) = self.sessions.get_mut(&from) {
            session.notices.remove(&conv);
        }
        let limit = limit.clamp(1, self.config.pull_page_max) as usize;
        let conversation = &self.conversations[&conv];
        let start = after.max(floor);
        let seqs: Vec<Seq> = if self.config.fanout_write {
            // Fan-out write reads the user's own inbox.
            let inbox = self
                .inboxes
                .get(&(user, conv))
                .map_or(&[][..], Vec::as_slice);
            let first = inbox.partition_point(|seq| *seq <= start);
            inbox[first..]
                .iter()
                .copied()
                .take_while(|seq| *seq <= cap)
                .take(limit)
                .collect()
        } else {
            // Store once reads the shared timeline, filtered by membership.
            // Saturating: a hostile `after` of u64::MAX asks for nothing, it must not wrap.
            (start.0.saturating_add(1)..=cap.0)
                .map(Seq)
                .filter(|seq| conversation.membership.visible(user, *seq))
                // VARIANT store-only-offline: what was pushed to the user is not kept for it.
                .filter(|seq| !self.push_only.contains(&(user, conv, *seq)))
                .take(limit)
                .collect()
        };
        let messages = seqs
            .iter()
            .map(|seq| conversation.messages[seq.0 as usize - 1].clone())
            .collect();
        self.transmit(
            from,
            Packet::PullResponse {
                conv,
                messages,
                head: cap,
            },
        );
    }

    /// What `user` may see of `conv` now: `(floor, cap)` over the durable timeline.
    fn window(&self, user: UserId, conv: ConvId) -> Option<(Seq, Seq)> {
        let conversation = self.conversations.get(&conv)?;
        conversation
            .membership
            .window(user, conversation.durable_head)
    }

    pub(super) fn heads(&self, user: UserId) -> Vec<Head> {
        let Some(conversations) = self.conversations_of.get(&user) else {
            return Vec::new();
        };
        conversations
            .iter()
            .filter_map(|conv| {
                self.window(user, *conv).map(|(floor, seq)| Head {
                    conv: *conv,
                    seq,
                    floor,
                })
            })
            .collect()
    }

    /// The sum of what the user may see of each conversation: it only grows while the user
    /// stays in its groups, so a device whose sum of cursors is lower knows it is missing
    /// something.
    pub(super) fn sync_key(&self, user: UserId) -> u64 {
        self.heads(user).iter().map(|head| head.seq.0).sum()
    }
}
