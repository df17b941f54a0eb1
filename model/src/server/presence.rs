//! Presence. A user is online while at least one of its devices holds a live session; a session
//! ends on logout, on replacement, or when nothing was heard from it for `session_timeout_ms`.
//!
//! - Push mode: each change goes to the subscribers, the devices of the user's 1:1 contacts
//!   (never to anyone else: the change counts its notifications, the storm coefficient). A device
//!   gets its contacts' status at login, and the heartbeat's presence key (the sum of the
//!   contacts' versions) tells it when it missed a change.
//! - Pull mode: nothing is pushed; a device asks for the members of the conversation it has open.
//!
//! Status is not durable: after a restart nobody holds a session, so everyone is offline, at a
//! version taken from the restart time, above every version handed out before.

use super::Server;
use crate::config::PresenceMode;
use crate::directory::Directory;
use crate::event::Event;
use crate::ids::{Address, ConvId, DeviceId, UserId};
use crate::time::Time;
use crate::wire::{Packet, PresenceEntry, Rejection};
use std::collections::{BTreeMap, BTreeSet};

/// Versions are the server's clock in milliseconds times this, plus a counter, so they grow
/// across restarts without being stored.
const VERSIONS_PER_MS: u64 = 1 << 10;

/// The version every user's status has right after a (re)start at `now`.
pub(super) fn boot_version(now: Time) -> u64 {
    now.0 * VERSIONS_PER_MS
}

/// Each user's 1:1 peers, from the directory (1:1 conversations never change members).
pub(super) fn contacts_of(directory: &Directory) -> BTreeMap<UserId, Vec<UserId>> {
    let mut contacts: BTreeMap<UserId, BTreeSet<UserId>> = BTreeMap::new();
    for conv in directory
        .conversations()
        .filter(|c| !directory.is_group(*c))
    {
        let members = directory.members(conv);
        for a in members {
            let peers = members.iter().filter(|b| *b != a);
            contacts.entry(*a).or_default().extend(peers);
        }
    }
    contacts
        .into_iter()
        .map(|(user, peers)| (user, peers.into_iter().collect()))
        .collect()
}

impl Server {
    pub(super) fn presence_of(&self, user: UserId) -> PresenceEntry {
        self.presence.get(&user).copied().unwrap_or(PresenceEntry {
            user,
            online: false,
            version: self.boot_version,
        })
    }

    /// A session of `user` opened (`opened`) or ended: the user's status may change.
    pub(super) fn session_count_changed(&mut self, now: Time, user: UserId, opened: bool) {
        let count = self.sessions_of_user.entry(user).or_default();
        let was_online = *count > 0;
        if opened {
            *count += 1;
        } else {
            *count = count.saturating_sub(1);
        }
        let online = *count > 0;
        if online == was_online {
            return;
        }
        let previous = self.presence_of(user).version;
        let version = (previous + 1).max(now.0 * VERSIONS_PER_MS);
        let entry = PresenceEntry {
            user,
            online,
            version,
        };
        self.presence.insert(user, entry);
        let mut notified: Vec<DeviceId> = Vec::new();
        if self.config.presence == PresenceMode::Push {
            for contact in self.contacts(user) {
                for device in self.directory.devices(contact).collect::<Vec<_>>() {
                    if let Some(address) = self.session_of_device.get(&device).copied() {
                        self.transmit(address, Packet::Presence(entry));
                        notified.push(device);
                    }
                }
            }
        }
        self.emit(Event::PresenceChanged {
            user,
            online,
            notified,
        });
    }

    /// The users who subscribe to `user`'s status in push mode: its 1:1 peers.
    pub(super) fn contacts(&self, user: UserId) -> Vec<UserId> {
        self.contacts.get(&user).cloned().unwrap_or_default()
    }

    /// The contacts' status versions summed: what a device that missed no change also has.
    pub(super) fn presence_key(&self, user: UserId) -> u64 {
        if self.config.presence != PresenceMode::Push {
            return 0;
        }
        self.contacts(user).into_iter().fold(0u64, |key, contact| {
            key.wrapping_add(self.presence_of(contact).version)
        })
    }

    pub(super) fn handle_presence_query(
        &mut self,
        from: Address,
        user: UserId,
        device: DeviceId,
        conv: Option<ConvId>,
    ) {
        let users = match conv {
            None => self.contacts(user),
            Some(conv) => match self.conversations.get(&conv) {
                Some(conversation) if conversation.membership.is_member(user) => conversation
                    .membership
                    .members()
                    .filter(|member| *member != user)
                    .collect(),
                _ => {
                    self.refuse(from, Some(device), Rejection::NotMember, "presence_query");
                    return;
                }
            },
        };
        let entries = users.into_iter().map(|u| self.presence_of(u)).collect();
        self.transmit(from, Packet::PresenceState { entries });
    }
}
