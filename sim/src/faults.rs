//! The fault model. A [`FaultProfile`] is data: drawn from the seed by [`FaultProfile::swarm`]
//! (each fault class on or off, its parameters drawn), or fixed by the scenario, printed at the
//! start of every run and stored in the history. Packet faults are an ordered list of
//! [`Rule`]s; the first verdict that is not `Pass` wins.

use crate::history::Direction;
use imsim_model::DeviceId;
use serde::{Deserialize, Serialize};

/// Every fault of one run. Times are simulated milliseconds since the start of the run; all
/// faults end with the safety phase.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultProfile {
    /// Packets on the listed devices' links are lost with this probability, each way.
    pub loss: Option<LinkFault>,
    /// Packets on the listed devices' links are delivered twice with this probability.
    pub duplication: Option<LinkFault>,
    /// Packets are delayed by up to `delay_ms_max` on top of the network's own latency, so they
    /// overtake each other.
    pub delay: Option<DelayFault>,
    /// Packets are held and released together at the end of a window of `hold_ms_max`.
    pub hold: Option<DelayFault>,
    /// A device's link to the server is cut, both ways or one way.
    pub partitions: Vec<PartitionFault>,
    /// The server crashes (losing unsynced writes) and restarts after `downtime_ms`.
    pub server_crashes: Vec<CrashFault>,
    /// A device's app is killed and restarted after `downtime_ms`; its local database survives,
    /// its session and hold-back buffer do not.
    pub device_restarts: Vec<DeviceCrashFault>,
    /// Offsets of device clocks from true time. Only a protocol that trusts timestamps notices.
    pub clock_skew: Vec<ClockSkew>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkFault {
    pub probability: f64,
    /// The devices whose links are affected (both directions).
    pub devices: Vec<DeviceId>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DelayFault {
    pub probability: f64,
    pub delay_ms_max: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionFault {
    pub device: DeviceId,
    pub direction: Direction,
    pub start_ms: u64,
    pub duration_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrashFault {
    pub at_ms: u64,
    pub downtime_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceCrashFault {
    pub device: DeviceId,
    pub at_ms: u64,
    pub downtime_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClockSkew {
    pub device: DeviceId,
    pub offset_ms: i64,
}
