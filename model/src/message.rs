//! What the server stores and refuses: a committed message, the membership change it may carry,
//! and the reasons for a refusal. Shared by the wire (`wire.rs`) and storage (`storage.rs`), so
//! neither depends on the other for them.

use crate::ids::{ClientMsgId, ClientSeq, ConvId, DeviceId, Seq, UserId};
use serde::{Deserialize, Serialize};

/// A committed message as the server stores and delivers it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub conv: ConvId,
    pub seq: Seq,
    pub sender_user: UserId,
    pub sender_device: DeviceId,
    pub client_msg_id: ClientMsgId,
    pub client_seq: ClientSeq,
    pub body: String,
    /// The sender's local clock when the user pressed send. Informational only: order is `seq`.
    pub client_time_ms: u64,
    /// A group membership change instead of (or with) text: it takes its place in the timeline
    /// like any message, so every device agrees on who was a member at which seq.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<MembershipChange>,
}

/// A change of a group's members, sent by a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MembershipChange {
    Add(UserId),
    Remove(UserId),
    /// The sender leaves.
    Leave,
}

impl MembershipChange {
    /// The user whose membership this changes, given who sent it.
    pub fn subject(self, sender: UserId) -> UserId {
        match self {
            MembershipChange::Add(user) | MembershipChange::Remove(user) => user,
            MembershipChange::Leave => sender,
        }
    }
}

/// Why the server refused a packet. Every refusal is sent back to the peer, never swallowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rejection {
    /// A packet other than `Login` from an address with no session.
    NotLoggedIn,
    /// The login's token does not match the directory's token for (user, device).
    BadCredentials,
    /// The packet claims a user other than the session's.
    WrongUser,
    /// The sender is not a member of the conversation.
    NotMember,
    /// The server holds `sessions_max` sessions already.
    ServerFull,
    /// A message body longer than `body_bytes_max`.
    BodyTooLarge,
    /// A membership change that adds a user the directory does not know.
    UnknownUser,
    /// A membership change that changes nothing (adding a member, removing a non-member).
    NoEffect,
    /// A packet that makes no sense in this state (a server-bound kind sent to a device, a
    /// `client_seq` reused with another `client_msg_id`).
    Unexpected,
}
