//! Wire messages between devices and the server. They are serde types so a trace or a history
//! can show them, and so the same model could later run over a real socket with any encoding.

use crate::ids::{Address, ClientMsgId, ClientSeq, ConvId, DeviceId, Seq, SessionId, UserId};
pub use crate::message::{MembershipChange, Message, Rejection};
use crate::storage::Record;
use serde::{Deserialize, Serialize};

/// What a user may see of a conversation: everything after `floor` up to `seq`. `seq` is the
/// durable head, or the entry that removed the user; `floor` is the seq before the user's
/// latest join (zero for a founding member or a 1:1 conversation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub conv: ConvId,
    pub seq: Seq,
    pub floor: Seq,
}

/// Everything that crosses the network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Packet {
    // Device → server.
    /// `connection` numbers the device's connections: its login retries share one, and the
    /// next login after a logout or a lost session takes the next.
    Login {
        user: UserId,
        device: DeviceId,
        token: u64,
        connection: u64,
    },
    /// Ends the session of `connection` only: a logout overtaken by the next login (the
    /// network reorders them) must not end the new session.
    Logout {
        connection: u64,
    },
    Heartbeat,
    Send {
        conv: ConvId,
        /// The user the device claims to send as; must equal the session's user.
        sender: UserId,
        client_msg_id: ClientMsgId,
        client_seq: ClientSeq,
        body: String,
        client_time_ms: u64,
        change: Option<MembershipChange>,
    },
    /// Cumulative: the device has displayed every seq of `conv` up to `watermark`.
    Ack {
        conv: ConvId,
        watermark: Seq,
    },
    /// Fetch up to `limit` durable messages of `conv` with seq > `after`.
    Pull {
        conv: ConvId,
        after: Seq,
        limit: u32,
    },
    /// Ask for the heads of all the user's conversations.
    SyncRequest,
    /// The user read `conv` on this device up to `up_to`, a seq the device displayed.
    Read {
        conv: ConvId,
        up_to: Seq,
    },
    /// Ask for the user's read state: its watermarks, its 1:1 peers' watermarks and the read
    /// counts of its group messages (sent when the heartbeat's receipt key disagrees).
    ReceiptSyncRequest,
    /// Ask who read the user's own message `seq` and who has not (the sender taps the read
    /// count).
    ReadersQuery {
        conv: ConvId,
        seq: Seq,
    },
    /// Ask who is online: `None` for the user's contacts (push mode, when the heartbeat's
    /// presence key disagrees), a conversation for its members (pull mode, when it is open).
    PresenceQuery {
        conv: Option<ConvId>,
    },

    // Server → device.
    LoginOk {
        session: SessionId,
        heads: Vec<Head>,
    },
    /// The server refused a packet; `refused` names the packet kind.
    Error {
        reason: Rejection,
        refused: String,
    },
    /// `sync_key` is the sum of the durable heads of the user's conversations: a device whose own
    /// sum of cursors is lower knows it is behind without being told which conversation.
    /// `receipt_key` and `presence_key` do the same for read state and contacts' presence: a
    /// device whose own sum differs asks for the whole state.
    HeartbeatAck {
        sync_key: u64,
        #[serde(default)]
        receipt_key: u64,
        #[serde(default)]
        presence_key: u64,
    },
    SendAck {
        conv: ConvId,
        client_msg_id: ClientMsgId,
        seq: Seq,
    },
    /// The send was refused for good; `client_seq` is resolved and the device must not resend it.
    SendRejected {
        conv: ConvId,
        client_msg_id: ClientMsgId,
        reason: Rejection,
    },
    /// A push of one newly durable message.
    Deliver {
        message: Message,
    },
    /// Notify-then-pull for large groups: "`conv` has news up to `head`; pull it". At most one
    /// is outstanding per device and group; later news merges into it.
    Notify {
        conv: ConvId,
        head: Seq,
    },
    PullResponse {
        conv: ConvId,
        messages: Vec<Message>,
        head: Seq,
    },
    SyncState {
        heads: Vec<Head>,
    },
    /// `user`'s read watermark in `conv` is durable at `up_to` (to the user's own devices, and
    /// in 1:1 to the peer's).
    ReadUpdate {
        conv: ConvId,
        user: UserId,
        up_to: Seq,
    },
    /// How many members read each of the receiving user's messages in a group.
    ReadCounts {
        conv: ConvId,
        counts: Vec<ReadCount>,
    },
    /// The whole read state of a user (the answer to `ReceiptSyncRequest`).
    ReceiptState {
        watermarks: Vec<ReadMark>,
        counts: Vec<(ConvId, Vec<ReadCount>)>,
    },
    /// The answer to `ReadersQuery`: the members at `seq` (its sender excluded) split into those
    /// who read it and those who have not.
    Readers {
        conv: ConvId,
        seq: Seq,
        readers: Vec<UserId>,
        unread: Vec<UserId>,
    },
    /// A contact went online or offline (push mode).
    Presence(PresenceEntry),
    /// The status of several users (at login in push mode, and the answer to `PresenceQuery`).
    PresenceState {
        entries: Vec<PresenceEntry>,
    },

    // Gateway ↔ logic (the cluster topology, `model/src/cluster/`).
    /// A device's packet, forwarded by the gateway that holds the device's connection.
    Upstream {
        device: Address,
        packet: Box<Packet>,
    },
    /// A packet for a device, sent to the gateway the session registry names.
    Downstream {
        device: Address,
        packet: Box<Packet>,
    },
    /// The gateway holds no connection of `device`: the route the logic used is stale.
    Unroutable {
        device: Address,
    },
    /// Sharded logic: `device` is alive behind this gateway (it sent a packet to another
    /// shard), so its session and route here stay fresh. Never answered.
    KeepAlive {
        device: Address,
    },
    /// Logic → gateway: the logic (the sending shard) started again, after a crash or on a new
    /// node after a handover, and holds no sessions. The gateway tells the devices it holds to
    /// log in again, so none waits for a refused heartbeat to learn it. Never answered.
    Restarted,
    // The queue topology (`cluster::queue`), between the logic, the queue and its consumer.
    /// Logic → queue: the record at `offset` of the logic's storage log, from the producer of
    /// `epoch` (the server's incarnation: the queue refuses a fenced, older one).
    Enqueue {
        epoch: u64,
        offset: u64,
        record: Record,
    },
    /// Queue → consumer: store this record at `offset` (a redelivery sends it again).
    QueueDeliver {
        offset: u64,
        record: Record,
    },
    /// Consumer → queue: every offset below `through` is durable at the consumer.
    QueueAck {
        through: u64,
    },
    /// Consumer (or the queue, repeating the consumer's ack) → logic: every offset below
    /// `through` is durable in storage.
    Stored {
        through: u64,
    },
}

/// A user's read watermark in one conversation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadMark {
    pub conv: ConvId,
    pub user: UserId,
    pub up_to: Seq,
}

/// The members who read one group message (its sender excluded).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadCount {
    pub seq: Seq,
    pub readers: u32,
}

/// A user's status as the server sees it. `version` grows with every change, also across server
/// restarts (it is derived from the server's clock), so a device keeps the newest it heard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceEntry {
    pub user: UserId,
    pub online: bool,
    pub version: u64,
}

impl Packet {
    /// The packet's kind as it appears on the wire (`"send"`, `"deliver"` …).
    pub fn kind(&self) -> &'static str {
        match self {
            Packet::Login { .. } => "login",
            Packet::Logout { .. } => "logout",
            Packet::Heartbeat => "heartbeat",
            Packet::Send { .. } => "send",
            Packet::Ack { .. } => "ack",
            Packet::Pull { .. } => "pull",
            Packet::SyncRequest => "sync_request",
            Packet::Read { .. } => "read",
            Packet::ReceiptSyncRequest => "receipt_sync_request",
            Packet::ReadersQuery { .. } => "readers_query",
            Packet::PresenceQuery { .. } => "presence_query",
            Packet::LoginOk { .. } => "login_ok",
            Packet::Error { .. } => "error",
            Packet::HeartbeatAck { .. } => "heartbeat_ack",
            Packet::SendAck { .. } => "send_ack",
            Packet::SendRejected { .. } => "send_rejected",
            Packet::Deliver { .. } => "deliver",
            Packet::Notify { .. } => "notify",
            Packet::PullResponse { .. } => "pull_response",
            Packet::SyncState { .. } => "sync_state",
            Packet::ReadUpdate { .. } => "read_update",
            Packet::ReadCounts { .. } => "read_counts",
            Packet::ReceiptState { .. } => "receipt_state",
            Packet::Readers { .. } => "readers",
            Packet::Presence(_) => "presence",
            Packet::PresenceState { .. } => "presence_state",
            Packet::Upstream { .. } => "upstream",
            Packet::Downstream { .. } => "downstream",
            Packet::Unroutable { .. } => "unroutable",
            Packet::KeepAlive { .. } => "keep_alive",
            Packet::Restarted => "restarted",
            Packet::Enqueue { .. } => "enqueue",
            Packet::QueueDeliver { .. } => "queue_deliver",
            Packet::QueueAck { .. } => "queue_ack",
            Packet::Stored { .. } => "stored",
        }
    }
}
