//! The fault profile a run carries: which faults it has, as data. It is drawn from the seed by
//! the simulator's swarm (each fault class on or off, its parameters drawn) or fixed by the
//! scenario, printed at the start of every run and stored in the history's first record, where
//! the checkers read it (presence bounds, healthy links).
//!
//! Every operation that is the same for all faults of one shape (list the entries, keep some,
//! rename devices, move start times, find the end) goes through the three tables of
//! [`FaultProfile`] (`links`, `globals`, `items`), so a new fault class of an existing shape is
//! one field, one [`FaultClass`] and one table row here, plus how the simulator draws and applies
//! it (`sim/src/faults/`).

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
    /// Cluster topology: a gateway crashes, losing its connections, and restarts after
    /// `downtime_ms`. (Absent from the record when empty, so a single-server history is
    /// unchanged.)
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub gateway_crashes: Vec<GatewayCrashFault>,
    /// Cluster topology: the link between a gateway and the logic is cut both ways.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub gateway_partitions: Vec<GatewayPartitionFault>,
    /// Faults placed at the protocol's sensitive moments (FoundationDB's BUGGIFY): armed at a
    /// time, each fires at the first such moment in the [`PLACEMENT_ARMED_MS`] after it. (Absent
    /// from the record when empty.)
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub placements: Vec<PlacementFault>,
    /// Sharded logic: a logic node crashes (its unsynced writes lost); another node takes its
    /// shards over at once, and it restarts empty after `downtime_ms`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub logic_crashes: Vec<LogicCrashFault>,
    /// Queue topology: packets on the queue's links (logic → queue, queue ↔ consumer, consumer
    /// → logic) are lost with this probability. (Absent from the record when unset, like every
    /// queue fault.)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_loss: Option<QueueLinkFault>,
    /// Queue topology: packets on the queue's links are delivered twice with this probability.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_duplication: Option<QueueLinkFault>,
    /// Queue topology: packets on the queue's links are delayed by up to `delay_ms_max`, so they
    /// overtake each other.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_delay: Option<DelayFault>,
    /// Queue topology: the queue's consumer crashes (losing its unsynced writes) and restarts
    /// after `downtime_ms`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub consumer_crashes: Vec<CrashFault>,
}

/// A probability on every packet of the queue's links.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueLinkFault {
    pub probability: f64,
}

/// A placement fires at the first matching moment within this long of being armed; a placement
/// that finds none lapses (it happens in none of the run's time after that).
pub const PLACEMENT_ARMED_MS: u64 = 5_000;

/// A fault placed at a moment the protocol is sensitive to, rather than at a time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlacementFault {
    pub kind: PlacementKind,
    /// Armed from this moment (simulated ms since the start of the run).
    pub after_ms: u64,
    /// How long the server stays down, for the kinds that crash it (0 for the others).
    #[serde(default)]
    pub downtime_ms: u64,
}

/// The moments a placement waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PlacementKind {
    /// The server crashes right after asking for a storage sync and before it completes: the
    /// write it just made is lost.
    CrashInSyncWindow,
    /// A device's send reaches the server twice, back to back, and the server crashes before
    /// the write they made is synced.
    DuplicateBeforeCrash,
    /// A membership change reaches the server while a message of the same group waits for its
    /// storage sync: the change is held (as a slow network would) until such a sync is asked for.
    MembershipInSyncWindow,
}

impl PlacementKind {
    pub const ALL: [PlacementKind; 3] = [
        PlacementKind::CrashInSyncWindow,
        PlacementKind::DuplicateBeforeCrash,
        PlacementKind::MembershipInSyncWindow,
    ];

    /// Whether the placement crashes the server.
    pub fn crashes_server(self) -> bool {
        self != PlacementKind::MembershipInSyncWindow
    }
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

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayCrashFault {
    /// The gateway's number, counted from 0.
    pub gateway: u32,
    pub at_ms: u64,
    pub downtime_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayPartitionFault {
    /// The gateway's number, counted from 0.
    pub gateway: u32,
    pub start_ms: u64,
    pub duration_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogicCrashFault {
    /// The logic node's number, counted from 0.
    pub logic: u32,
    pub at_ms: u64,
    pub downtime_ms: u64,
}

/// Which way a partition cuts a device's link to the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Both,
    /// Packets from the device to the server are lost; the other way works.
    ToServer,
    /// Packets from the server to the device are lost; the other way works.
    FromServer,
}

/// The fault classes the swarm switches on and off.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultClass {
    Loss,
    Duplication,
    Delay,
    Hold,
    Partition,
    ServerCrash,
    DeviceRestart,
    ClockSkew,
    /// Cluster topology only.
    GatewayCrash,
    /// Cluster topology only.
    GatewayPartition,
    /// Faults placed at sensitive moments ([`PlacementFault`]); drawn from a stream of their
    /// own, after the other classes.
    Placement,
    /// Sharded logic only (`topology.logic` > 1).
    LogicCrash,
    /// Queue topology only (`topology.queue`).
    QueueLoss,
    /// Queue topology only.
    QueueDuplication,
    /// Queue topology only.
    QueueDelay,
    /// Queue topology only.
    ConsumerCrash,
}

impl FaultClass {
    /// The classes of the cluster topology (`topology.gateways`): a scenario without gateways
    /// cannot have them, and they are not in [`FaultClass::all`].
    pub fn cluster() -> Vec<FaultClass> {
        vec![
            FaultClass::GatewayCrash,
            FaultClass::GatewayPartition,
            FaultClass::LogicCrash,
        ]
    }

    /// The classes of the queue topology (`topology.queue`): a scenario without the queue
    /// cannot have them, and they are not in [`FaultClass::all`].
    pub fn queue() -> Vec<FaultClass> {
        vec![
            FaultClass::QueueLoss,
            FaultClass::QueueDuplication,
            FaultClass::QueueDelay,
            FaultClass::ConsumerCrash,
        ]
    }

    /// The classes of every topology: the swarm's default.
    pub fn all() -> Vec<FaultClass> {
        use FaultClass::*;
        vec![
            Loss,
            Duplication,
            Delay,
            Hold,
            Partition,
            ServerCrash,
            DeviceRestart,
            ClockSkew,
            Placement,
        ]
    }
}

/// One fault entry the shrinker may drop, named by class: one device of a link fault, a global
/// fault, or one item of a list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultEntry {
    Link(FaultClass, DeviceId),
    Global(FaultClass),
    Item(FaultClass, usize),
}

/// What generic code needs of one item of a fault list.
pub trait TimedFault: Clone {
    /// The device it affects, if it affects one device.
    fn device_mut(&mut self) -> Option<&mut DeviceId>;
    /// When it starts, if it happens at a moment (a clock skew lasts the whole run).
    fn start_mut(&mut self) -> Option<&mut u64>;
    /// How long it lasts from its start.
    fn length_ms(&self) -> u64;
}

impl TimedFault for PartitionFault {
    fn device_mut(&mut self) -> Option<&mut DeviceId> {
        Some(&mut self.device)
    }
    fn start_mut(&mut self) -> Option<&mut u64> {
        Some(&mut self.start_ms)
    }
    fn length_ms(&self) -> u64 {
        self.duration_ms
    }
}

impl TimedFault for CrashFault {
    fn device_mut(&mut self) -> Option<&mut DeviceId> {
        None
    }
    fn start_mut(&mut self) -> Option<&mut u64> {
        Some(&mut self.at_ms)
    }
    fn length_ms(&self) -> u64 {
        self.downtime_ms
    }
}

impl TimedFault for DeviceCrashFault {
    fn device_mut(&mut self) -> Option<&mut DeviceId> {
        Some(&mut self.device)
    }
    fn start_mut(&mut self) -> Option<&mut u64> {
        Some(&mut self.at_ms)
    }
    fn length_ms(&self) -> u64 {
        self.downtime_ms
    }
}

impl TimedFault for GatewayCrashFault {
    fn device_mut(&mut self) -> Option<&mut DeviceId> {
        None
    }
    fn start_mut(&mut self) -> Option<&mut u64> {
        Some(&mut self.at_ms)
    }
    fn length_ms(&self) -> u64 {
        self.downtime_ms
    }
}

impl TimedFault for GatewayPartitionFault {
    fn device_mut(&mut self) -> Option<&mut DeviceId> {
        None
    }
    fn start_mut(&mut self) -> Option<&mut u64> {
        Some(&mut self.start_ms)
    }
    fn length_ms(&self) -> u64 {
        self.duration_ms
    }
}

impl TimedFault for PlacementFault {
    fn device_mut(&mut self) -> Option<&mut DeviceId> {
        None
    }
    fn start_mut(&mut self) -> Option<&mut u64> {
        Some(&mut self.after_ms)
    }
    /// Armed for [`PLACEMENT_ARMED_MS`], then the crash it may cause.
    fn length_ms(&self) -> u64 {
        PLACEMENT_ARMED_MS + self.downtime_ms
    }
}

impl TimedFault for LogicCrashFault {
    fn device_mut(&mut self) -> Option<&mut DeviceId> {
        None
    }
    fn start_mut(&mut self) -> Option<&mut u64> {
        Some(&mut self.at_ms)
    }
    fn length_ms(&self) -> u64 {
        self.downtime_ms
    }
}

impl TimedFault for ClockSkew {
    fn device_mut(&mut self) -> Option<&mut DeviceId> {
        Some(&mut self.device)
    }
    fn start_mut(&mut self) -> Option<&mut u64> {
        None
    }
    fn length_ms(&self) -> u64 {
        0
    }
}

/// A fault on every packet of some links, seen through what generic code needs of it: whether
/// the profile has it, and dropping it.
pub trait GlobalFault {
    fn present(&self) -> bool;
    fn clear(&mut self);
}

impl<T> GlobalFault for Option<T> {
    fn present(&self) -> bool {
        self.is_some()
    }
    fn clear(&mut self) {
        *self = None;
    }
}

/// A list of fault items seen through [`TimedFault`], so one table can hold lists of any item
/// type.
pub trait FaultList {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Keeps the items whose index `keep` accepts.
    fn retain_index(&mut self, keep: &dyn Fn(usize) -> bool);
    /// Renames each item's device; an item whose device `map` drops goes.
    fn map_devices(&mut self, map: &dyn Fn(DeviceId) -> Option<DeviceId>);
    /// The (start, end) of each item that happens at a moment.
    fn windows(&mut self) -> Vec<(u64, u64)>;
    /// Moves each start at or after `from_ms` `by_ms` earlier.
    fn shift_earlier(&mut self, from_ms: u64, by_ms: u64);
}

impl<T: TimedFault> FaultList for Vec<T> {
    fn len(&self) -> usize {
        Vec::len(self)
    }
    fn retain_index(&mut self, keep: &dyn Fn(usize) -> bool) {
        let mut index = 0;
        self.retain(|_| {
            index += 1;
            keep(index - 1)
        });
    }
    fn map_devices(&mut self, map: &dyn Fn(DeviceId) -> Option<DeviceId>) {
        self.retain_mut(|item| match item.device_mut() {
            Some(device) => map(*device).map(|renamed| *device = renamed).is_some(),
            None => true,
        });
    }
    fn windows(&mut self) -> Vec<(u64, u64)> {
        self.iter_mut()
            .filter_map(|item| {
                let length_ms = item.length_ms();
                item.start_mut().map(|start| (*start, *start + length_ms))
            })
            .collect()
    }
    fn shift_earlier(&mut self, from_ms: u64, by_ms: u64) {
        for item in self.iter_mut() {
            if let Some(start) = item.start_mut() {
                if *start >= from_ms {
                    *start -= by_ms;
                }
            }
        }
    }
}

impl FaultProfile {
    /// The link faults (a probability on some devices' links), by class.
    fn links(&mut self) -> [(FaultClass, &mut Option<LinkFault>); 2] {
        [
            (FaultClass::Loss, &mut self.loss),
            (FaultClass::Duplication, &mut self.duplication),
        ]
    }

    /// The faults on every packet of some links (a probability, perhaps a time), by class.
    fn globals(&mut self) -> [(FaultClass, &mut dyn GlobalFault); 5] {
        [
            (FaultClass::Delay, &mut self.delay),
            (FaultClass::Hold, &mut self.hold),
            (FaultClass::QueueLoss, &mut self.queue_loss),
            (FaultClass::QueueDuplication, &mut self.queue_duplication),
            (FaultClass::QueueDelay, &mut self.queue_delay),
        ]
    }

    /// The lists of faults that each have a device or a moment, by class.
    fn items(&mut self) -> [(FaultClass, &mut dyn FaultList); 9] {
        [
            (FaultClass::Partition, &mut self.partitions),
            (FaultClass::ServerCrash, &mut self.server_crashes),
            (FaultClass::DeviceRestart, &mut self.device_restarts),
            (FaultClass::ClockSkew, &mut self.clock_skew),
            (FaultClass::GatewayCrash, &mut self.gateway_crashes),
            (FaultClass::GatewayPartition, &mut self.gateway_partitions),
            (FaultClass::Placement, &mut self.placements),
            (FaultClass::LogicCrash, &mut self.logic_crashes),
            (FaultClass::ConsumerCrash, &mut self.consumer_crashes),
        ]
    }

    /// Whether the server may crash: a timed crash, or a placement that crashes it.
    pub fn server_may_crash(&self) -> bool {
        !self.server_crashes.is_empty() || self.placements.iter().any(|p| p.kind.crashes_server())
    }

    /// The fault classes present in this profile, in [`FaultClass`] order.
    pub fn classes(&self) -> Vec<FaultClass> {
        let mut profile = self.clone();
        let mut present: Vec<FaultClass> = Vec::new();
        let links = profile.links().map(|(class, f)| (class, f.is_some()));
        let globals = profile.globals().map(|(class, f)| (class, f.present()));
        let items = profile
            .items()
            .map(|(class, list)| (class, !list.is_empty()));
        for (class, on) in links.into_iter().chain(globals).chain(items) {
            if on {
                present.push(class);
            }
        }
        present.sort();
        present
    }

    /// Every entry of the profile: each device of a link fault, each global fault, each item.
    pub fn entries(&self) -> Vec<FaultEntry> {
        let mut profile = self.clone();
        let mut entries = Vec::new();
        for (class, fault) in profile.links() {
            if let Some(fault) = fault {
                entries.extend(fault.devices.iter().map(|d| FaultEntry::Link(class, *d)));
            }
        }
        for (class, fault) in profile.globals() {
            if fault.present() {
                entries.push(FaultEntry::Global(class));
            }
        }
        for (class, list) in profile.items() {
            entries.extend((0..list.len()).map(|i| FaultEntry::Item(class, i)));
        }
        entries
    }

    /// The number of faults: a link fault counts once however many devices it names.
    pub fn count(&self) -> usize {
        let mut profile = self.clone();
        let links = profile.links().iter().filter(|(_, f)| f.is_some()).count();
        let globals = profile
            .globals()
            .iter()
            .filter(|(_, f)| f.present())
            .count();
        let items: usize = profile.items().iter().map(|(_, list)| list.len()).sum();
        links + globals + items
    }

    /// The profile with only the `kept` entries; a link fault goes with its last device.
    pub fn keep(&self, kept: &[FaultEntry]) -> FaultProfile {
        let mut profile = self.clone();
        for (class, fault) in profile.links() {
            if let Some(link) = fault {
                link.devices
                    .retain(|d| kept.contains(&FaultEntry::Link(class, *d)));
            }
            if fault.as_ref().is_some_and(|link| link.devices.is_empty()) {
                *fault = None;
            }
        }
        for (class, fault) in profile.globals() {
            if !kept.contains(&FaultEntry::Global(class)) {
                fault.clear();
            }
        }
        for (class, list) in profile.items() {
            list.retain_index(&|i| kept.contains(&FaultEntry::Item(class, i)));
        }
        profile
    }

    /// The profile with every device renamed by `map`; faults on devices it drops go too.
    pub fn map_devices(&self, map: &dyn Fn(DeviceId) -> Option<DeviceId>) -> FaultProfile {
        let mut profile = self.clone();
        for (_, fault) in profile.links() {
            if let Some(link) = fault {
                link.devices = link.devices.iter().filter_map(|d| map(*d)).collect();
            }
            if fault.as_ref().is_some_and(|link| link.devices.is_empty()) {
                *fault = None;
            }
        }
        for (_, list) in profile.items() {
            list.map_devices(map);
        }
        profile
    }

    /// (start, end) of every fault that happens at a moment, in table order.
    pub fn windows(&self) -> Vec<(u64, u64)> {
        let mut profile = self.clone();
        let items = profile.items();
        items
            .into_iter()
            .flat_map(|(_, list)| list.windows())
            .collect()
    }

    /// Moves every fault that starts at or after `from_ms` `by_ms` earlier; windows keep their
    /// length.
    pub fn shift_earlier(&mut self, from_ms: u64, by_ms: u64) {
        for (_, list) in self.items() {
            list.shift_earlier(from_ms, by_ms);
        }
    }

    /// Adds the faults of `other` (scripted ones) to this profile; a class set in both keeps
    /// `other`'s parameters.
    pub fn merge(&mut self, other: &FaultProfile) {
        self.loss = other.loss.clone().or(self.loss.take());
        self.duplication = other.duplication.clone().or(self.duplication.take());
        self.delay = other.delay.clone().or(self.delay.take());
        self.hold = other.hold.clone().or(self.hold.take());
        self.partitions.extend(other.partitions.iter().cloned());
        self.server_crashes
            .extend(other.server_crashes.iter().cloned());
        self.server_crashes.sort_by_key(|crash| crash.at_ms);
        self.device_restarts
            .extend(other.device_restarts.iter().cloned());
        self.gateway_crashes
            .extend(other.gateway_crashes.iter().cloned());
        self.gateway_crashes.sort_by_key(|crash| crash.at_ms);
        self.gateway_partitions
            .extend(other.gateway_partitions.iter().cloned());
        self.placements.extend(other.placements.iter().cloned());
        self.placements.sort_by_key(|placement| placement.after_ms);
        self.logic_crashes
            .extend(other.logic_crashes.iter().cloned());
        self.logic_crashes.sort_by_key(|crash| crash.at_ms);
        self.queue_loss = other.queue_loss.clone().or(self.queue_loss.take());
        self.queue_duplication = other
            .queue_duplication
            .clone()
            .or(self.queue_duplication.take());
        self.queue_delay = other.queue_delay.clone().or(self.queue_delay.take());
        self.consumer_crashes
            .extend(other.consumer_crashes.iter().cloned());
        self.consumer_crashes.sort_by_key(|crash| crash.at_ms);
        for skew in &other.clock_skew {
            self.clock_skew.retain(|s| s.device != skew.device);
            self.clock_skew.push(skew.clone());
        }
    }
}
