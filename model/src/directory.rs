//! The directory: who the users are, their devices' credentials, and who is in which
//! conversation. In a real system this is the account and relation service; here it is given to
//! the server when it starts and is not part of what a crash can lose.

use crate::ids::{ConvId, DeviceId, UserId};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Directory {
    /// user → device → login token.
    devices: BTreeMap<UserId, BTreeMap<DeviceId, u64>>,
    /// Founding members of every conversation.
    members: BTreeMap<ConvId, Vec<UserId>>,
    groups: BTreeSet<ConvId>,
}

impl Directory {
    pub fn new() -> Directory {
        Directory::default()
    }

    pub fn add_device(&mut self, user: UserId, device: DeviceId, token: u64) {
        self.devices.entry(user).or_default().insert(device, token);
    }

    pub fn add_conversation(&mut self, conv: ConvId, members: Vec<UserId>) {
        self.members.insert(conv, members);
    }

    /// A group: its members change through membership entries in its timeline.
    pub fn add_group(&mut self, conv: ConvId, founders: Vec<UserId>) {
        self.groups.insert(conv);
        self.add_conversation(conv, founders);
    }

    pub fn is_group(&self, conv: ConvId) -> bool {
        self.groups.contains(&conv)
    }

    pub fn exists(&self, user: UserId) -> bool {
        self.devices.contains_key(&user)
    }

    pub fn token(&self, user: UserId, device: DeviceId) -> Option<u64> {
        self.devices.get(&user)?.get(&device).copied()
    }

    /// The founding members (a group's current members are the server's business).
    pub fn members(&self, conv: ConvId) -> &[UserId] {
        self.members.get(&conv).map_or(&[], Vec::as_slice)
    }

    pub fn devices(&self, user: UserId) -> impl Iterator<Item = DeviceId> + '_ {
        self.devices
            .get(&user)
            .into_iter()
            .flat_map(|devices| devices.keys().copied())
    }

    pub fn conversations(&self) -> impl Iterator<Item = ConvId> + '_ {
        self.members.keys().copied()
    }
}
