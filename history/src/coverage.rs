//! Coverage signals: the "sometimes" properties. A [`Signal`] names an event a healthy sweep must
//! reach at least once — a retransmit deduplicated by the server, a crash between store and ack,
//! a hole in the hold-back buffer filled by a pull, a membership change racing a send. Unlike an
//! invariant, no single run has to hit a signal; a sweep that never hits one did not test what it
//! claims to, however green it is.
//!
//! Counts come from the recorded history only ([`signals`], in [`count`]), so a replayed or
//! loaded history counts the same. Whether a scenario can reach a signal at all is a rule over
//! the scenario, each signal's [`Need`]s, judged by the simulator (`imsim_sim::reach`): the fault
//! classes it can draw or has fixed, its topology and workload. `imsim run --require-coverage` fails when an applicable signal was never hit.
//!
//! Adding a signal: one line in the `signals!` table below (name, description, what it needs),
//! and its counting in [`count`], with a unit test there that shows it counted when it happens
//! and not otherwise.

mod count;

pub use count::signals;

use crate::faults::FaultClass;
use serde::{Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;

/// What a scenario must be able to produce for a signal to be required of it. A signal applies
/// when the scenario meets every one of its needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// At least one of these fault classes can occur: the swarm may draw it, or the fixed
    /// profile has it.
    AnyFault(&'static [FaultClass]),
    /// Membership changes: `workload.membership_changes`, or a scripted add, remove or leave.
    MembershipChanges,
    /// A group above `protocol.notify_threshold_members` (notify-then-pull instead of push).
    LargeGroup,
    /// Devices go offline on purpose: offline periods, an online share below 1, or a scripted
    /// `go-offline`.
    Offline,
    /// Users with more than one device.
    MultiDevice,
    /// Sends in bursts (`workload.burst_max` above 1), so several are in flight at once.
    Bursts,
    /// A conversation's traffic, on average, fills a pull page (`protocol.pull_page_max`), and
    /// something can leave a device that far behind (offline periods, partitions, lost packets,
    /// app restarts), so a pull can come back full.
    Pages,
    /// A partition can cut a link, in the direction given, for longer than the protocol waits.
    Silence(Silence),
    /// Users read conversations: `workload.reads`, or a scripted `read`.
    Reads,
    /// 1:1 conversations.
    OneToOne,
    /// Group conversations.
    Groups,
    /// Devices installed mid-run (`workload.roaming_devices`).
    Roaming,
    /// Requests at the protocol's limits (`workload.edge_requests`).
    EdgeRequests,
    /// More devices than a gateway (`topology.gateway_connections_max`) or the server
    /// (`protocol.sessions_max`) holds connections for, so a login can be refused as full.
    Capacity,
}

/// The long silences some signals need; each names the direction cut and the protocol bound it
/// must outlast.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Silence {
    /// The device hears nothing for `server_silence_timeout_ms`.
    DeviceHearsNothing,
    /// The server hears nothing from a device for `session_timeout_ms`.
    ServerHearsNothing,
    /// Every try of a push (`push_attempts_max` tries with backoff) goes unanswered while the
    /// session lives on: under loss, or behind a one-way partition towards the device, and only
    /// if the tries end before the device's own silence timeout would end the session.
    PushesLost,
}

use FaultClass::{
    ClockSkew, ConsumerCrash, Delay, DeviceRestart, Duplication, GatewayCrash, GatewayPartition,
    Hold, LogicCrash, Loss, Partition, Placement, QueueDelay, QueueDuplication, QueueLoss,
    ServerCrash,
};

/// Faults that can keep an ack or an answer from arriving in time.
const ANSWER_LOST: &[FaultClass] = &[Loss, Partition, ServerCrash, Hold, DeviceRestart];
/// Faults that can lose a pull or its answer while the session stays up (a server crash ends
/// the session: the device resumes instead of retrying).
const PULL_LOST: &[FaultClass] = &[Loss, Partition, Hold];
/// Faults that can bring a packet to its receiver twice or after a retry already did.
const DELIVERED_TWICE: &[FaultClass] = &[Loss, Duplication, Partition, ServerCrash, Hold];
/// Faults that can open a hole longer than `gap_timeout_ms` in a device's stream while its
/// session stays up (after a server crash the device resumes instead).
const LONG_HOLE: &[FaultClass] = &[Loss, Partition, Hold, Delay];
/// Faults that can leave a device many messages behind.
pub const FALLS_BEHIND: &[FaultClass] = &[Loss, Partition, Hold, DeviceRestart];
/// Faults that can reorder or lose the sends of a burst on their way to the server.
const SENDS_REORDERED: &[FaultClass] = &[Loss, Partition, Hold, Delay, ServerCrash];

/// `name = "kebab-name", "one-line description", [needs];` for each signal, in report order.
macro_rules! signals {
    ($($variant:ident = $name:literal, $description:literal, [$($need:expr),* $(,)?];)*) => {
        /// A coverage signal. The kebab-case name is stable: sweeps, reports and tests use it.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Signal {
            $($variant,)*
        }

        impl Signal {
            /// Every signal, in the order the summary and the report list them.
            pub const ALL: &'static [Signal] = &[$(Signal::$variant,)*];

            pub fn name(self) -> &'static str {
                match self {
                    $(Signal::$variant => $name,)*
                }
            }

            pub fn description(self) -> &'static str {
                match self {
                    $(Signal::$variant => $description,)*
                }
            }

            /// What a scenario needs for this signal to be reachable.
            pub fn needs(self) -> &'static [Need] {
                match self {
                    $(Signal::$variant => &[$($need),*],)*
                }
            }
        }
    };
}

signals! {
    // ---- sending ----
    Retransmitted = "retransmitted",
        "a device resent unacknowledged messages",
        [Need::AnyFault(ANSWER_LOST)];
    RetransmitDeduplicated = "retransmit-deduplicated",
        "the server recognised a resent message as committed and acked its original seq",
        [Need::AnyFault(DELIVERED_TWICE)];
    OutOfOrderSendDropped = "out-of-order-send-dropped",
        "the server dropped a send that overtook an earlier one of its device (sender FIFO)",
        [Need::Bursts, Need::AnyFault(SENDS_REORDERED)];
    OfflineSendDelivered = "offline-send-delivered",
        "a message sent while its device was logged out was acked after the device came back",
        [Need::Offline];
    PartitionHealedWithPendingSends = "partition-healed-with-pending-sends",
        "a partition healed while its device had sends not yet acked",
        [Need::AnyFault(&[Partition])];
    BodyAtLimitCommitted = "body-at-limit-committed",
        "a message whose body is exactly body_bytes_max bytes long was committed",
        [Need::EdgeRequests];
    BodyTooLargeRefused = "body-too-large-refused",
        "the server refused a send whose body is over body_bytes_max",
        [Need::EdgeRequests];
    UnknownUserAddRefused = "unknown-user-add-refused",
        "the server refused a membership change that adds a user nobody knows",
        [Need::EdgeRequests, Need::Groups];
    SendSurvivedDeviceRestart = "send-survived-device-restart",
        "a message requested before its device's app was killed was acked after the restart",
        [Need::AnyFault(&[DeviceRestart])];

    // ---- server crashes ----
    SendSpannedServerCrash = "send-spanned-server-crash",
        "a message requested before a server crash was acked after the restart",
        [Need::AnyFault(&[ServerCrash])];
    CrashBetweenStoreAndAck = "crash-between-store-and-ack",
        "durable before a server crash, its ack reached the device only after the restart",
        [Need::AnyFault(&[ServerCrash])];
    UnsyncedWritesLost = "unsynced-writes-lost",
        "a server crash lost writes that were issued but not yet synced",
        [Need::AnyFault(&[ServerCrash])];
    SessionForgottenByServer = "session-forgotten-by-server",
        "a device learnt that the server no longer knew its session (it restarted)",
        [Need::AnyFault(&[ServerCrash])];
    ResumeAfterServerCrash = "resume-after-server-crash",
        "a device pulled to resume after the server restarted",
        [Need::AnyFault(&[ServerCrash])];

    // ---- device restarts and sessions ----
    ResumeAfterDeviceRestart = "resume-after-device-restart",
        "a device pulled to resume after its app was killed and restarted",
        [Need::AnyFault(&[DeviceRestart])];
    SessionReplaced = "session-replaced",
        "a device logged in again while the server still held its old session",
        [Need::AnyFault(&[DeviceRestart])];
    SessionTimedOut = "session-timed-out",
        "a device heard nothing from the server for the silence timeout and dropped its session",
        [Need::Silence(Silence::DeviceHearsNothing)];
    SessionExpiredByServer = "session-expired-by-server",
        "the server expired a session it heard nothing from for the session timeout",
        [Need::Silence(Silence::ServerHearsNothing)];

    // ---- receiving ----
    DuplicateDropped = "duplicate-dropped",
        "a device dropped a message it had already displayed (a duplicate push or pull answer)",
        [Need::AnyFault(DELIVERED_TWICE)];
    HeldBack = "held-back",
        "a message arrived ahead of a hole and waited in the hold-back buffer",
        [];
    HoleFilledByPush = "hole-filled-by-push",
        "a hole in the hold-back buffer closed without a gap pull (a late push arrived)",
        [];
    GapFilledByPull = "gap-filled-by-pull",
        "a hole outlived the gap timeout, was pulled, and the cursor moved past it",
        [Need::AnyFault(LONG_HOLE)];
    PullRetried = "pull-retried",
        "a pull got no answer in time and was sent again",
        [Need::AnyFault(PULL_LOST)];
    PagedPull = "paged-pull",
        "a pull page came back full and the next page was pulled",
        [Need::Pages];
    BatchedAck = "batched-ack",
        "one cursor advance, and the ack that follows it, covered several messages",
        [];
    NotifyThenPull = "notify-then-pull",
        "a large group's notice made a device pull",
        [Need::LargeGroup];
    PushAbandoned = "push-abandoned",
        "the server gave up a push after its last try (sync must catch up)",
        [Need::Silence(Silence::PushesLost)];
    AbandonedPushCaughtUp = "abandoned-push-caught-up",
        "a device displayed a message whose push to it had been abandoned",
        [Need::Silence(Silence::PushesLost)];
    SyncKeyRepaired = "sync-key-repaired",
        "a device logged in since before a commit got the message from a resume pull (the sync key's repair)",
        [Need::Silence(Silence::PushesLost)];
    DeliveredAfterOffline = "delivered-after-offline",
        "a device displayed a message committed while it was logged out",
        [Need::Offline];
    MultiDeviceEcho = "multi-device-echo",
        "a device displayed a message its own user sent from another device",
        [Need::MultiDevice];
    ClockOrderInverted = "clock-order-inverted",
        "consecutive seqs whose senders' clocks disagree with seq order by more than a second",
        [Need::AnyFault(&[ClockSkew])];

    // ---- groups ----
    MemberAdded = "member-added",
        "a member was added to a group",
        [Need::MembershipChanges];
    MemberRemoved = "member-removed",
        "a member was removed from a group",
        [Need::MembershipChanges];
    MemberLeft = "member-left",
        "a member left a group",
        [Need::MembershipChanges];
    MemberReadded = "member-readded",
        "a user removed from (or who left) a group was added back",
        [Need::MembershipChanges];
    SendRefusedNotMember = "send-refused-not-member",
        "the server refused a send because its sender was no longer a member",
        [Need::MembershipChanges];
    SendRacesRemoval = "send-races-removal",
        "a message was committed shortly before its sender was removed or left",
        [Need::MembershipChanges];
    MembershipChangeNoEffect = "membership-change-no-effect",
        "a membership change was refused because a racing change had already made it",
        [Need::MembershipChanges];

    // ---- receipts and presence ----
    ReadAdvanced = "read-advanced",
        "a read was stored and moved its user's watermark",
        [Need::Reads];
    ReadIgnoredStale = "read-ignored-stale",
        "a late, duplicated or sibling's lower read was ignored without moving a watermark back",
        [Need::Reads, Need::AnyFault(DELIVERED_TWICE)];
    ReadTickSeen = "read-tick-seen",
        "a device showed its 1:1 peer's read watermark (the read tick)",
        [Need::Reads, Need::OneToOne];
    ReadSyncedToSibling = "read-synced-to-sibling",
        "a device showed its own user's watermark moved by a read on another device",
        [Need::Reads, Need::MultiDevice];
    ReadCountSeen = "read-count-seen",
        "a sender's device showed a group message's read count",
        [Need::Reads, Need::Groups];
    ReaderListSeen = "reader-list-seen",
        "a sender's device showed who read its message and who has not, with a reader in it",
        [Need::Reads];
    OfflineByTimeout = "offline-by-timeout",
        "a user went offline because the server expired its last session (no logout)",
        [Need::Silence(Silence::ServerHearsNothing)];
    ContactSeenOffline = "contact-seen-offline",
        "a device showed a user it had shown online as offline",
        [Need::Offline, Need::OneToOne];
    RoamingDeviceCaughtUp = "roaming-device-caught-up",
        "a device installed mid-run displayed a message committed before it first logged in",
        [Need::Roaming];

    // ---- placements (faults at sensitive moments) ----
    PlacedCrashInSyncWindow = "placed-crash-in-sync-window",
        "a crash placed between a write and its sync lost that write",
        [Need::AnyFault(&[Placement])];
    PlacedDuplicateBeforeCrash = "placed-duplicate-before-crash",
        "a send reached the server twice back to back and the server crashed before syncing it",
        [Need::AnyFault(&[Placement])];
    PlacedMembershipInSyncWindow = "placed-membership-in-sync-window",
        "a membership change was committed while a message of its group waited for its sync",
        [Need::AnyFault(&[Placement]), Need::MembershipChanges];

    // ---- cluster ----
    LoginRefusedThenIn = "login-refused-then-in",
        "a login was refused because its gateway or the server was full, and the device got in later",
        [Need::Capacity];
    FailedOver = "failed-over",
        "a device lost its gateway and logged in again through another one",
        [Need::AnyFault(&[GatewayCrash, GatewayPartition])];
    StaleRouteRepaired = "stale-route-repaired",
        "a gateway said it no longer held a routed device; its session ended and it logged in again",
        [Need::AnyFault(&[GatewayCrash])];
    ShardHandedOver = "shard-handed-over",
        "a logic node crashed and another took its shard over, recovering it from storage",
        [Need::AnyFault(&[LogicCrash])];

    // ---- queue ----
    QueueRedeliveryDeduplicated = "queue-redelivery-deduplicated",
        "the queue delivered an offset the consumer had already stored; it was skipped and acked again",
        [Need::AnyFault(&[QueueLoss, QueueDuplication, QueueDelay, ConsumerCrash])];
    QueueRedeliveredAfterConsumerCrash = "queue-redelivered-after-consumer-crash",
        "the consumer crashed with deliveries unacked, and the queue redelivered them to it",
        [Need::AnyFault(&[ConsumerCrash])];
}

impl Signal {
    /// The signal with this kebab-case name.
    pub fn parse(name: &str) -> Option<Signal> {
        Signal::ALL
            .iter()
            .copied()
            .find(|signal| signal.name() == name)
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for Signal {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

/// The signals of many runs of one scenario: how often each was hit, and in how many runs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Coverage {
    pub runs: u64,
    /// Occurrences of each signal over all runs.
    pub hits: BTreeMap<Signal, u64>,
    /// Runs in which each signal occurred at least once.
    pub runs_hit: BTreeMap<Signal, u64>,
}

impl Coverage {
    /// Adds one run's counts (as [`signals`] returns them).
    pub fn add(&mut self, counts: &BTreeMap<Signal, u64>) {
        self.runs += 1;
        for (signal, count) in counts {
            if *count > 0 {
                *self.hits.entry(*signal).or_insert(0) += count;
                *self.runs_hit.entry(*signal).or_insert(0) += 1;
            }
        }
    }

    pub fn hits(&self, signal: Signal) -> u64 {
        self.hits.get(&signal).copied().unwrap_or(0)
    }

    pub fn runs_hit(&self, signal: Signal) -> u64 {
        self.runs_hit.get(&signal).copied().unwrap_or(0)
    }

    /// The signals that `applies` accepts (those the sweep's scenario can reach) and no run
    /// hit, in list order.
    pub fn missing(&self, applies: impl Fn(Signal) -> bool) -> Vec<Signal> {
        Signal::ALL
            .iter()
            .copied()
            .filter(|signal| applies(*signal) && self.hits(*signal) == 0)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn names_are_unique_kebab_case_and_parse_back() {
        let names: BTreeSet<&str> = Signal::ALL.iter().map(|s| s.name()).collect();
        assert_eq!(names.len(), Signal::ALL.len());
        assert!(Signal::ALL.len() >= 30, "{} signals", Signal::ALL.len());
        for signal in Signal::ALL {
            let name = signal.name();
            assert!(
                name.chars().all(|c| c.is_ascii_lowercase() || c == '-'),
                "{name}"
            );
            assert_eq!(Signal::parse(name), Some(*signal));
            assert!(!signal.description().is_empty());
        }
        assert_eq!(Signal::parse("no-such-signal"), None);
    }
}
