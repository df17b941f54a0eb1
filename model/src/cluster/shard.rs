//! Sharded logic (`[topology] logic = L`): conversations are spread over L logic shards, each a
//! [`Server`] behind its own [`Logic`](super::Logic) with its own storage log, and every shard
//! runs on one of the L logic nodes (shard `s` starts on node `s`; when a node crashes, another
//! takes its shards over, see [`take_over`]).
//!
//! The rules, in the order a packet meets them:
//! 1. **A conversation has one owner.** `shard_of(conv) = conv mod L`. Everything about a
//!    conversation (sender FIFO, seqs, idempotence, the timeline, read receipts, pushes and
//!    pulls) happens at its shard alone, so per-conversation seqs are exactly as correct as with
//!    one server.
//! 2. **Packets tied to a conversation** (send, ack, pull, read, readers query) go from the
//!    gateway to its owner only.
//! 3. **Packets of the device** (login, logout, heartbeat, sync request, receipt sync request)
//!    go to every shard: each shard keeps a session for the device, so each can push what it
//!    commits. The gateway merges the answers ([`Merge`]): a login, heartbeat, sync or receipt
//!    sync is answered to the device once every shard answered, with the heads and read state of
//!    each conversation taken from its owner and the keys summed (each shard's sync and receipt
//!    keys cover its own conversations only). A packet that goes to one shard also keeps the
//!    device alive at the others (`KeepAlive`, at most once per shard per gateway tick), since
//!    each expires its sessions on its own. Each shard's link reorders on its own, so a logout
//!    names the connection it ends (`Packet::Logout`): one overtaken by the next login ends
//!    nothing.
//! 4. **Presence belongs to the session shard** (shard 0): presence queries go there, and only
//!    its presence pushes and its presence key reach devices. Its sessions are the ones the
//!    history shows (`session_opened`, `presence_changed` are recorded from it alone); the other
//!    shards' sessions are delivery mirrors. A gateway that no longer holds a device tells
//!    every shard (`Unroutable`), so a session one shard can no longer reach ends at the
//!    session shard too, as the history must show it.
//! 5. **Handover.** A shard's storage is shared and durable; the node that takes a shard over
//!    recovers its server from that storage (the last durable seq of every conversation
//!    included), so its seqs continue where the old owner's durable ones stopped. Its sessions
//!    start empty, so it tells every gateway (`Packet::Restarted`), and each has the devices it
//!    holds log in again; a device whose packet reaches it first is answered `NotLoggedIn`.

use super::LOGIC_ADDRESS;
use crate::config::ProtocolConfig;
use crate::directory::Directory;
use crate::ids::{Address, ConvId};
use crate::server::Server;
use crate::storage::Storage;
use crate::time::Time;
use crate::variant::Variant;
use crate::wire::{Head, Packet, ReadCount, ReadMark};
use std::collections::BTreeMap;

/// The most logic shards (and logic nodes) a topology may have.
pub const LOGIC_SHARDS_MAX: u32 = 16;
/// Shard addresses (other than shard 0's, which is the single logic's `Address(0)`) start here.
pub const SHARD_ADDRESS_BASE: u32 = 0x5000_0000;
/// The shard whose sessions and presence the devices and the history see (rule 4).
pub const SESSION_SHARD: u32 = 0;

/// The shard that owns `conv` among `shards`.
pub fn shard_of(conv: ConvId, shards: u32) -> u32 {
    assert!(shards > 0, "there is at least one shard");
    conv.0 % shards
}

/// The address a shard's server is reached at (whichever node runs it).
pub fn shard_address(shard: u32) -> Address {
    assert!(shard < LOGIC_SHARDS_MAX, "shard {shard} out of range");
    if shard == 0 {
        LOGIC_ADDRESS
    } else {
        Address(SHARD_ADDRESS_BASE + shard)
    }
}

/// The shard number of `address`, if it is a shard's.
pub fn shard_at(address: Address) -> Option<u32> {
    if address == LOGIC_ADDRESS {
        return Some(0);
    }
    address
        .0
        .checked_sub(SHARD_ADDRESS_BASE)
        .filter(|shard| (1..LOGIC_SHARDS_MAX).contains(shard))
}

/// Where a gateway sends a device's packet (rules 2–4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Destination {
    Shard(u32),
    EveryShard,
}

pub fn destination(packet: &Packet, shards: u32) -> Destination {
    match packet {
        Packet::Send { conv, .. }
        | Packet::Ack { conv, .. }
        | Packet::Pull { conv, .. }
        | Packet::Read { conv, .. }
        | Packet::ReadersQuery { conv, .. } => Destination::Shard(shard_of(*conv, shards)),
        Packet::PresenceQuery { .. } => Destination::Shard(SESSION_SHARD),
        // With one logic, every shard is shard 0.
        _ => Destination::EveryShard,
    }
}

/// The node that takes a shard over (or restarts it) rebuilds its server from the shard's
/// durable storage: unsynced writes of the dead owner are lost, every durable entry (and with it
/// the last seq) is read back.
pub fn take_over(
    config: ProtocolConfig,
    directory: Directory,
    storage: &Storage,
    incarnation: u64,
    now: Time,
) -> Server {
    assert!(incarnation > 0, "a take-over follows a first start");
    let variant = config.variant;
    let mut server = Server::recover(config, directory, storage, incarnation, now);
    if variant == Variant::HandoverRestartsSeqs {
        // VARIANT handover-restarts-seqs: the new owner starts handing out seqs without
        // reading the last one stored, so its first commit in a conversation takes seq 1 again.
        server.forget_timelines();
    }
    server
}

/// A gateway's merge of the answers to a packet it sent to every shard (rule 3). Each answer
/// kind keeps at most one answer per shard and device: a later one replaces an earlier one, and
/// the merge goes out when every shard has answered.
#[derive(Clone, Debug)]
pub struct Merge {
    shards: u32,
    answers: BTreeMap<(Address, &'static str), BTreeMap<u32, Packet>>,
}

impl Merge {
    pub fn new(shards: u32) -> Merge {
        assert!((1..=LOGIC_SHARDS_MAX).contains(&shards));
        Merge {
            shards,
            answers: BTreeMap::new(),
        }
    }

    /// Shard `shard` sent `packet` for `device`: what to hand the device now, if anything.
    pub fn handle_answer(&mut self, device: Address, shard: u32, packet: Packet) -> Option<Packet> {
        if self.shards == 1 {
            return Some(packet);
        }
        match packet {
            Packet::LoginOk { .. }
            | Packet::HeartbeatAck { .. }
            | Packet::SyncState { .. }
            | Packet::ReceiptState { .. } => {
                let kind = packet.kind();
                let answers = self.answers.entry((device, kind)).or_default();
                answers.insert(shard, packet);
                if answers.len() < self.shards as usize {
                    return None;
                }
                let answers = self.answers.remove(&(device, kind)).unwrap_or_default();
                Some(self.combine(answers))
            }
            Packet::Presence(_) | Packet::PresenceState { .. } => {
                (shard == SESSION_SHARD).then_some(packet)
            }
            _ => Some(packet),
        }
    }

    /// Forgets the answers for devices `keep` rejects (their connections closed).
    pub fn retain_devices(&mut self, keep: impl Fn(Address) -> bool) {
        self.answers.retain(|(device, _), _| keep(*device));
    }

    /// One answer from one per shard, all of one kind.
    fn combine(&self, answers: BTreeMap<u32, Packet>) -> Packet {
        debug_assert_eq!(answers.len(), self.shards as usize);
        let owned = |shard: u32, conv: ConvId| shard_of(conv, self.shards) == shard;
        let heads_of = |answers: &BTreeMap<u32, Packet>| -> Vec<Head> {
            let mut heads: Vec<Head> = answers
                .iter()
                .flat_map(|(shard, packet)| match packet {
                    Packet::LoginOk { heads, .. } | Packet::SyncState { heads } => heads
                        .iter()
                        .filter(|head| owned(*shard, head.conv))
                        .copied()
                        .collect(),
                    _ => Vec::new(),
                })
                .collect();
            heads.sort_by_key(|head| head.conv);
            heads
        };
        match &answers[&SESSION_SHARD] {
            Packet::LoginOk { session, .. } => Packet::LoginOk {
                session: *session,
                heads: heads_of(&answers),
            },
            Packet::SyncState { .. } => Packet::SyncState {
                heads: heads_of(&answers),
            },
            Packet::HeartbeatAck { presence_key, .. } => {
                let (mut sync_key, mut receipt_key) = (0, 0);
                for packet in answers.values() {
                    if let Packet::HeartbeatAck {
                        sync_key: sync,
                        receipt_key: receipt,
                        ..
                    } = packet
                    {
                        sync_key += sync;
                        receipt_key += receipt;
                    }
                }
                Packet::HeartbeatAck {
                    sync_key,
                    receipt_key,
                    presence_key: *presence_key,
                }
            }
            Packet::ReceiptState { .. } => {
                let mut watermarks: Vec<ReadMark> = Vec::new();
                let mut counts: Vec<(ConvId, Vec<ReadCount>)> = Vec::new();
                for (shard, packet) in &answers {
                    if let Packet::ReceiptState {
                        watermarks: marks,
                        counts: read_counts,
                    } = packet
                    {
                        watermarks.extend(marks.iter().filter(|m| owned(*shard, m.conv)));
                        counts.extend(
                            read_counts
                                .iter()
                                .filter(|(conv, _)| owned(*shard, *conv))
                                .cloned(),
                        );
                    }
                }
                watermarks.sort_by_key(|mark| (mark.conv, mark.user));
                counts.sort_by_key(|(conv, _)| *conv);
                Packet::ReceiptState { watermarks, counts }
            }
            // Only the kinds above are collected.
            other => other.clone(),
        }
    }
}
