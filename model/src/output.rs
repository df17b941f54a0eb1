//! What a state machine asks its driver to do.

use crate::event::Event;
use crate::ids::Address;
use crate::time::Time;
use crate::wire::Packet;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Send `packet` to `to`. Delivery is not guaranteed: the protocol copes with loss.
    Transmit { to: Address, packet: Packet },
    /// Call `handle_timeout` once the local clock reaches `at`. Replaces any earlier request.
    ArmTimer { at: Time },
    /// Make the storage log durable up to record number `through` (exclusive), then call
    /// `handle_storage_synced(now, through)`. Server only. A crash before that loses the records.
    SyncStorage { through: u64 },
    /// Something observable happened; the driver records it in the history.
    Event(Event),
}
