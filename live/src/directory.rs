//! Who may log in: the server's directory for a run's topology, and each device's token. The
//! server process and the device process build the same one from the same setup.

use imsim_history::Topology;
use imsim_model::{DeviceId, Directory};

/// The login token of a device: any fixed function works; the server's directory and the
/// device agree on it.
pub fn token(device: DeviceId) -> u64 {
    0x5eed_0000_0000 | u64::from(device.0)
}

/// The server's directory for a topology.
pub fn directory_of(topology: &Topology) -> Directory {
    let mut directory = Directory::new();
    for user in &topology.users {
        for device in &user.devices {
            directory.add_device(user.user, *device, token(*device));
        }
    }
    for conversation in &topology.conversations {
        let members = conversation.members.clone();
        if conversation.group {
            directory.add_group(conversation.conv, members);
        } else {
            directory.add_conversation(conversation.conv, members);
        }
    }
    directory
}
