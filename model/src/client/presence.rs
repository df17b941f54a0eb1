//! Presence on the device: it shows the newest status it heard for each user. In push mode the
//! server sends changes and the status of all contacts at login; the heartbeat's presence key
//! says when one was missed. In pull mode the device asks for the members of the conversation
//! the user has open, when it opens and every `presence_poll_ms` while it stays open.

use super::*;
use crate::config::PresenceMode;

impl Client {
    pub(super) fn handle_presence(&mut self, entry: PresenceEntry) {
        let shown = self.store.presence.get(&entry.user).copied();
        if shown.is_some_and(|shown| shown.version >= entry.version) {
            return;
        }
        self.store.presence.insert(entry.user, entry);
        if shown.map(|s| s.online) != Some(entry.online) {
            self.emit(Event::PresenceSeen {
                user: entry.user,
                online: entry.online,
            });
        }
    }

    pub(super) fn check_presence_key(&mut self, presence_key: u64) {
        if self.config.presence != PresenceMode::Push {
            return;
        }
        let ours = self
            .store
            .presence
            .values()
            .fold(0u64, |key, entry| key.wrapping_add(entry.version));
        if ours != presence_key {
            self.transmit(Packet::PresenceQuery { conv: None });
        }
    }

    /// Pull mode: ask for the open conversation's members now, and again after a poll interval.
    pub(super) fn poll_presence(&mut self, now: Time) {
        self.presence_poll_at = None;
        if self.config.presence != PresenceMode::Pull || !self.is_online() {
            return;
        }
        if let Some(conv) = self.store.open_conv {
            self.transmit(Packet::PresenceQuery { conv: Some(conv) });
            self.presence_poll_at = Some(now.plus_ms(self.config.presence_poll_ms));
        }
    }

    pub(super) fn presence_timeouts(&mut self, now: Time) {
        if self.presence_poll_at.is_some_and(|at| now >= at) {
            self.poll_presence(now);
        }
    }
}
