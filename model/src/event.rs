//! Observable events: what a device or the server did that a checker may need to see. The
//! simulator stamps each with simulated time and the node, and appends it to the run's history.
//! Checkers read nothing else, so every fact an invariant depends on must be an event here.

use crate::ids::{ClientMsgId, ClientSeq, ConvId, DeviceId, Seq, SessionId, UserId};
use crate::wire::{MembershipChange, Rejection};
use serde::{Deserialize, Serialize};

/// Why a device's session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionEnd {
    /// The user logged out (the device goes offline on purpose).
    Logout,
    /// Nothing was heard from the peer within the silence timeout.
    Timeout,
    /// The server answered `NotLoggedIn` (it restarted or expired the session).
    ServerForgot,
    /// The same device logged in again, from here or elsewhere.
    Replaced,
    /// Cluster topology: the device's gateway answered that it no longer holds the device's
    /// connection (a stale route), so the logic cannot reach the device and ends its session.
    Unroutable,
}

/// Why a send ended in a failure the user sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SendFailure {
    /// The device's outbox holds `outbox_max` unacknowledged messages already.
    OutboxFull,
    /// The server refused the message for good.
    Rejected(Rejection),
}

/// Why a device asked the server for messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PullReason {
    /// The server's head is beyond the cursor (after login, or the heartbeat's sync key).
    Resume,
    /// A hole in the hold-back buffer did not fill within `gap_timeout_ms`.
    Gap,
    /// The previous page was full: fetch the next one.
    NextPage,
    /// The previous pull got no answer within `pull_timeout_ms`.
    Retry,
    /// A large group's notice said there is news.
    Notified,
}

/// How a displayed message reached the device: the path a checker and a report can tell apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    /// The server pushed it to this session (the primary path of small conversations).
    Push,
    /// The device's own message, placed in its timeline when the server acknowledged it.
    Ack,
    /// A pull brought it; the reason is what started the pull (a retried or next-page pull
    /// keeps the reason of the pull it continues): `notified` is the primary path of large
    /// groups, `resume` a login's or the heartbeat's repair, `gap` a hole's repair.
    Pull(PullReason),
}

/// Everything the model reports. Device events come from `Client`, the rest from `Server`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    // ---- device ----
    LoggedIn {
        session: SessionId,
    },
    SessionLost {
        reason: SessionEnd,
    },
    /// The device sent a login. `attempt` counts the logins that failed since it started
    /// trying (going online, an app restart, a lost session): 0 is a first try, and each later
    /// one waits the reconnect backoff after the failure before it.
    LoginSent {
        attempt: u32,
    },
    /// A login went unanswered for `login_timeout_ms`, or was `refused`: the next one waits the
    /// reconnect backoff.
    LoginFailed {
        refused: bool,
    },
    /// The user pressed send and the message entered the outbox with its identity.
    SendRequested {
        conv: ConvId,
        client_msg_id: ClientMsgId,
        client_seq: ClientSeq,
        body: String,
        client_time_ms: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        change: Option<MembershipChange>,
    },
    /// The user pressed send and was told at once that it failed; the message got no identity.
    SendRefused {
        conv: ConvId,
        body: String,
        reason: SendFailure,
    },
    /// A queued message failed for good; the user sees it marked failed.
    SendFailed {
        conv: ConvId,
        client_msg_id: ClientMsgId,
        reason: SendFailure,
    },
    /// The server acknowledged the message: it is durable at `seq`.
    SendAcked {
        conv: ConvId,
        client_msg_id: ClientMsgId,
        seq: Seq,
    },
    /// The device showed a message to the user.
    Displayed {
        conv: ConvId,
        seq: Seq,
        sender_user: UserId,
        sender_device: DeviceId,
        client_msg_id: ClientMsgId,
        body: String,
        /// The packet that brought the message (absent in histories of systems that do not
        /// say).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        via: Option<Via>,
    },
    /// The device's contiguous cursor moved: every seq up to `cursor` is displayed, and the device
    /// acknowledged `cursor` to the server.
    CursorAdvanced {
        conv: ConvId,
        cursor: Seq,
    },
    /// A message arrived that the device already displayed, and was dropped.
    DuplicateDropped {
        conv: ConvId,
        seq: Seq,
    },
    /// A message arrived ahead of a hole and waits in the hold-back buffer.
    HeldBack {
        conv: ConvId,
        seq: Seq,
    },
    /// The hold-back buffer was full: the message was dropped and will be pulled later.
    HoldBackOverflow {
        conv: ConvId,
        seq: Seq,
    },
    PullSent {
        conv: ConvId,
        after: Seq,
        reason: PullReason,
    },
    /// The device retransmitted unacknowledged messages of a conversation.
    Retransmitted {
        conv: ConvId,
        count: u32,
    },
    /// The user opened `conv` on this device (to read it; in pull-mode presence the device asks
    /// who of its members is online).
    ConversationOpened {
        conv: ConvId,
    },
    /// The user read `conv` on this device up to `up_to` (the device will tell the server).
    ReadMarked {
        conv: ConvId,
        up_to: Seq,
    },
    /// The device now shows `user`'s read watermark in `conv` at `up_to` (its own user's, or
    /// in 1:1 the peer's "read" tick).
    ReadSeen {
        conv: ConvId,
        user: UserId,
        up_to: Seq,
    },
    /// The device now shows `readers` as the read count of its user's message `seq`.
    ReadCountSeen {
        conv: ConvId,
        seq: Seq,
        readers: u32,
    },
    /// The device shows who read its user's message `seq` and who has not.
    ReadersSeen {
        conv: ConvId,
        seq: Seq,
        readers: Vec<UserId>,
        unread: Vec<UserId>,
    },
    /// The device now shows `user` online or offline.
    PresenceSeen {
        user: UserId,
        online: bool,
    },

    // ---- server ----
    SessionOpened {
        session: SessionId,
        user: UserId,
        device: DeviceId,
    },
    SessionClosed {
        session: SessionId,
        device: DeviceId,
        reason: SessionEnd,
    },
    /// A message is durable at `seq` (emitted when the write is synced, not when it is issued).
    Committed {
        conv: ConvId,
        seq: Seq,
        sender_user: UserId,
        sender_device: DeviceId,
        client_msg_id: ClientMsgId,
        client_seq: ClientSeq,
        body: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        change: Option<MembershipChange>,
    },
    /// The server acknowledged a send to its device.
    AckSent {
        device: DeviceId,
        conv: ConvId,
        client_msg_id: ClientMsgId,
        seq: Seq,
    },
    /// A retransmitted send was recognised as already committed and acked with its original seq.
    RetransmitDeduplicated {
        device: DeviceId,
        client_msg_id: ClientMsgId,
        seq: Seq,
    },
    /// A send arrived ahead of an earlier `client_seq` of its device and was dropped (sender FIFO:
    /// the device retransmits in order).
    OutOfOrderDropped {
        device: DeviceId,
        conv: ConvId,
        client_seq: ClientSeq,
        expected: ClientSeq,
    },
    /// A packet was refused; `device` when the sender's identity is known.
    Rejected {
        device: Option<DeviceId>,
        refused: String,
        reason: Rejection,
    },
    /// The server restarted from durable storage.
    Recovered {
        messages: u64,
        lost_unsynced_writes: u64,
    },
    /// `user`'s read watermark in `conv` is durable at `up_to`; `device` sent the read.
    ReadAdvanced {
        conv: ConvId,
        user: UserId,
        device: DeviceId,
        up_to: Seq,
    },
    /// A read that would not move the watermark forward (late, duplicated or reordered) was
    /// ignored; `device` sent it, and is answered with the current watermark.
    ReadIgnored {
        conv: ConvId,
        user: UserId,
        device: DeviceId,
        up_to: Seq,
        watermark: Seq,
    },
    /// A user went online (its first live session) or offline (its last one ended). `notified`
    /// are the devices the change was pushed to.
    PresenceChanged {
        user: UserId,
        online: bool,
        notified: Vec<DeviceId>,
    },
    /// A push to a session was given up after `push_attempts_max` tries; sync will catch up.
    PushAbandoned {
        device: DeviceId,
        conv: ConvId,
        seq: Seq,
    },
    /// Cluster topology: a gateway answered that it holds no connection of `device` although
    /// the registry routed to it; the route is dropped and the session closed, and the device's
    /// next login re-registers it and re-syncs.
    RouteStale {
        device: DeviceId,
        gateway: u32,
    },

    // ---- device, cluster topology ----
    /// The device lost its gateway (its session was lost, or a login went unanswered) and
    /// connects to another one.
    FailedOver {
        from_gateway: u32,
        to_gateway: u32,
    },
}

impl Event {
    /// The event's `type` name as it appears in the history.
    pub fn name(&self) -> &'static str {
        match self {
            Event::LoggedIn { .. } => "logged_in",
            Event::SessionLost { .. } => "session_lost",
            Event::LoginSent { .. } => "login_sent",
            Event::LoginFailed { .. } => "login_failed",
            Event::SendRequested { .. } => "send_requested",
            Event::SendRefused { .. } => "send_refused",
            Event::SendFailed { .. } => "send_failed",
            Event::SendAcked { .. } => "send_acked",
            Event::Displayed { .. } => "displayed",
            Event::CursorAdvanced { .. } => "cursor_advanced",
            Event::DuplicateDropped { .. } => "duplicate_dropped",
            Event::HeldBack { .. } => "held_back",
            Event::HoldBackOverflow { .. } => "hold_back_overflow",
            Event::PullSent { .. } => "pull_sent",
            Event::Retransmitted { .. } => "retransmitted",
            Event::ConversationOpened { .. } => "conversation_opened",
            Event::ReadMarked { .. } => "read_marked",
            Event::ReadSeen { .. } => "read_seen",
            Event::ReadCountSeen { .. } => "read_count_seen",
            Event::ReadersSeen { .. } => "readers_seen",
            Event::PresenceSeen { .. } => "presence_seen",
            Event::ReadAdvanced { .. } => "read_advanced",
            Event::ReadIgnored { .. } => "read_ignored",
            Event::PresenceChanged { .. } => "presence_changed",
            Event::SessionOpened { .. } => "session_opened",
            Event::SessionClosed { .. } => "session_closed",
            Event::Committed { .. } => "committed",
            Event::AckSent { .. } => "ack_sent",
            Event::RetransmitDeduplicated { .. } => "retransmit_deduplicated",
            Event::OutOfOrderDropped { .. } => "out_of_order_dropped",
            Event::Rejected { .. } => "rejected",
            Event::Recovered { .. } => "recovered",
            Event::PushAbandoned { .. } => "push_abandoned",
            Event::RouteStale { .. } => "route_stale",
            Event::FailedOver { .. } => "failed_over",
        }
    }
}
