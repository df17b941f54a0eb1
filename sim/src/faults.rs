//! The fault model. A [`FaultProfile`] is data: drawn from the seed by [`FaultProfile::swarm`]
//! (each fault class on or off, its parameters drawn), or fixed by the scenario, printed at the
//! start of every run and stored in the history. Packet faults are an ordered list of
//! [`Rule`]s; the first verdict that is not `Pass` wins.

use crate::history::Direction;
use crate::scenario::check_range;
use imsim_model::DeviceId;
use rand::{Rng, RngCore};
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

/// The longest partition the swarm draws. Shorter than every default silence timeout: a drawn
/// partition delays, it does not end sessions (a scenario's fixed profile may).
pub const PARTITION_MS_MAX: u64 = 10_000;

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
}

impl FaultClass {
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
        ]
    }
}

/// What a rule decides for one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Drop,
    /// Deliver twice.
    Duplicate,
    /// Deliver after this many extra milliseconds.
    Delay(u64),
    /// Hold until this simulated time (ms since the start of the run), then release.
    Hold(u64),
}

/// A packet as the rules see it.
#[derive(Clone, Copy, Debug)]
pub struct PacketMeta {
    /// The device at the other end of the link (every link joins a device and the server).
    pub device: DeviceId,
    pub to_server: bool,
    pub now_ms: u64,
}

/// One packet rule. Rules are applied in order; the first verdict that is not `Pass` wins.
#[derive(Clone, Debug)]
pub enum Rule {
    Partition(Vec<PartitionFault>),
    Loss(LinkFault),
    Duplication(LinkFault),
    Hold(DelayFault),
    Delay(DelayFault),
}

impl Rule {
    /// `draw` returns a uniform number in [0, 1); it is only called when the rule needs one, so
    /// the sequence of draws (and the run) depends only on the seed.
    pub fn verdict(&self, packet: &PacketMeta, draw: &mut dyn FnMut() -> f64) -> Verdict {
        match self {
            Rule::Partition(partitions) => {
                let cut = partitions.iter().any(|p| {
                    p.device == packet.device
                        && packet.now_ms >= p.start_ms
                        && packet.now_ms < p.start_ms + p.duration_ms
                        && match p.direction {
                            Direction::Both => true,
                            Direction::ToServer => packet.to_server,
                            Direction::FromServer => !packet.to_server,
                        }
                });
                if cut {
                    Verdict::Drop
                } else {
                    Verdict::Pass
                }
            }
            Rule::Loss(fault)
                if fault.devices.contains(&packet.device) && draw() < fault.probability =>
            {
                Verdict::Drop
            }
            Rule::Duplication(fault)
                if fault.devices.contains(&packet.device) && draw() < fault.probability =>
            {
                Verdict::Duplicate
            }
            Rule::Hold(fault) if draw() < fault.probability => {
                // Held packets are released together at the end of the current window.
                let window_ms = fault.delay_ms_max.max(1);
                Verdict::Hold((packet.now_ms / window_ms + 1) * window_ms)
            }
            Rule::Delay(fault) if draw() < fault.probability => {
                Verdict::Delay(1 + (draw() * fault.delay_ms_max as f64) as u64)
            }
            _ => Verdict::Pass,
        }
    }
}

impl FaultProfile {
    /// The packet rules of this profile, in the order they apply.
    pub fn rules(&self) -> Vec<Rule> {
        let mut rules = Vec::new();
        if !self.partitions.is_empty() {
            rules.push(Rule::Partition(self.partitions.clone()));
        }
        rules.extend(self.loss.clone().map(Rule::Loss));
        rules.extend(self.duplication.clone().map(Rule::Duplication));
        rules.extend(self.hold.clone().map(Rule::Hold));
        rules.extend(self.delay.clone().map(Rule::Delay));
        rules
    }

    /// The fault classes present in this profile.
    pub fn classes(&self) -> Vec<FaultClass> {
        let present = [
            (FaultClass::Loss, self.loss.is_some()),
            (FaultClass::Duplication, self.duplication.is_some()),
            (FaultClass::Delay, self.delay.is_some()),
            (FaultClass::Hold, self.hold.is_some()),
            (FaultClass::Partition, !self.partitions.is_empty()),
            (FaultClass::ServerCrash, !self.server_crashes.is_empty()),
            (FaultClass::DeviceRestart, !self.device_restarts.is_empty()),
            (FaultClass::ClockSkew, !self.clock_skew.is_empty()),
        ];
        present
            .into_iter()
            .filter(|(_, on)| *on)
            .map(|(class, _)| class)
            .collect()
    }

    /// Swarm testing: each class in `classes` is on with probability 1/2; its parameters are
    /// drawn. Every fault ends before `duration_ms` (the end of the safety phase).
    pub fn swarm(
        rng: &mut impl Rng,
        classes: &[FaultClass],
        devices: u32,
        duration_ms: u64,
    ) -> FaultProfile {
        let mut profile = FaultProfile::default();
        let device_ids: Vec<DeviceId> = (1..=devices).map(DeviceId).collect();
        let some_devices = |rng: &mut dyn RngCore| -> Vec<DeviceId> {
            let chosen: Vec<DeviceId> = device_ids
                .iter()
                .copied()
                .filter(|_| rng.gen_bool(0.5))
                .collect();
            if chosen.is_empty() {
                vec![device_ids[rng.gen_range(0..device_ids.len())]]
            } else {
                chosen
            }
        };
        for class in classes {
            if !rng.gen_bool(0.5) {
                continue;
            }
            match class {
                FaultClass::Loss => {
                    let devices = some_devices(rng);
                    profile.loss = Some(LinkFault {
                        probability: round3(rng.gen_range(0.01..0.3)),
                        devices,
                    });
                }
                FaultClass::Duplication => {
                    let devices = some_devices(rng);
                    profile.duplication = Some(LinkFault {
                        probability: round3(rng.gen_range(0.01..0.2)),
                        devices,
                    });
                }
                FaultClass::Delay => {
                    let probability = round3(rng.gen_range(0.05..0.5));
                    profile.delay = Some(DelayFault {
                        probability,
                        delay_ms_max: rng.gen_range(10..500),
                    });
                }
                FaultClass::Hold => {
                    let probability = round3(rng.gen_range(0.01..0.1));
                    profile.hold = Some(DelayFault {
                        probability,
                        delay_ms_max: rng.gen_range(50..2_000),
                    });
                }
                FaultClass::Partition => {
                    for _ in 0..rng.gen_range(1..=3) {
                        let device = DeviceId(rng.gen_range(1..=devices));
                        let direction =
                            [Direction::Both, Direction::ToServer, Direction::FromServer]
                                [rng.gen_range(0..3)];
                        let (start_ms, duration_ms) =
                            window(rng, duration_ms, 500, PARTITION_MS_MAX);
                        profile.partitions.push(PartitionFault {
                            device,
                            direction,
                            start_ms,
                            duration_ms,
                        });
                    }
                }
                FaultClass::ServerCrash => {
                    for _ in 0..rng.gen_range(1..=2) {
                        let (at_ms, downtime_ms) = window(rng, duration_ms, 100, 5_000);
                        profile
                            .server_crashes
                            .push(CrashFault { at_ms, downtime_ms });
                    }
                    profile.server_crashes.sort_by_key(|crash| crash.at_ms);
                }
                FaultClass::DeviceRestart => {
                    for _ in 0..rng.gen_range(1..=3) {
                        let device = DeviceId(rng.gen_range(1..=devices));
                        let (at_ms, downtime_ms) = window(rng, duration_ms, 100, 5_000);
                        profile.device_restarts.push(DeviceCrashFault {
                            device,
                            at_ms,
                            downtime_ms,
                        });
                    }
                }
                FaultClass::ClockSkew => {
                    for device in &device_ids {
                        let offset_ms = rng.gen_range(-60_000..=60_000);
                        profile.clock_skew.push(ClockSkew {
                            device: *device,
                            offset_ms,
                        });
                    }
                }
            }
        }
        profile
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
        for skew in &other.clock_skew {
            self.clock_skew.retain(|s| s.device != skew.device);
            self.clock_skew.push(skew.clone());
        }
    }

    /// Checks a profile against the run: devices exist, probabilities are probabilities, and
    /// every fault ends within the safety phase. `field` prefixes the names in errors.
    pub fn validate(&self, field: &str, devices: u32, duration_ms: u64) -> Result<(), String> {
        let device_ok = |name: String, device: DeviceId| {
            check_range(
                &format!("{name}.device"),
                device.0.into(),
                1,
                devices.into(),
            )
        };
        for (name, fault) in [("loss", &self.loss), ("duplication", &self.duplication)] {
            if let Some(fault) = fault {
                check_probability(&format!("{field}.{name}.probability"), fault.probability)?;
                for device in &fault.devices {
                    device_ok(format!("{field}.{name}.devices[]"), *device)?;
                }
            }
        }
        for (name, fault) in [("delay", &self.delay), ("hold", &self.hold)] {
            if let Some(fault) = fault {
                check_probability(&format!("{field}.{name}.probability"), fault.probability)?;
                check_range(
                    &format!("{field}.{name}.delay_ms_max"),
                    fault.delay_ms_max,
                    1,
                    60_000,
                )?;
            }
        }
        let ends_in_time = |name: String, start_ms: u64, length_ms: u64| {
            if start_ms.saturating_add(length_ms) > duration_ms {
                Err(format!(
                    "{name} ends at {} ms, after the safety phase (workload.duration_ms = {duration_ms})",
                    start_ms.saturating_add(length_ms)
                ))
            } else {
                Ok(())
            }
        };
        for (i, p) in self.partitions.iter().enumerate() {
            device_ok(format!("{field}.partitions[{i}]"), p.device)?;
            ends_in_time(
                format!("{field}.partitions[{i}]"),
                p.start_ms,
                p.duration_ms,
            )?;
        }
        for (i, c) in self.server_crashes.iter().enumerate() {
            ends_in_time(
                format!("{field}.server_crashes[{i}]"),
                c.at_ms,
                c.downtime_ms,
            )?;
        }
        for (i, c) in self.device_restarts.iter().enumerate() {
            device_ok(format!("{field}.device_restarts[{i}]"), c.device)?;
            ends_in_time(
                format!("{field}.device_restarts[{i}]"),
                c.at_ms,
                c.downtime_ms,
            )?;
        }
        for (i, s) in self.clock_skew.iter().enumerate() {
            device_ok(format!("{field}.clock_skew[{i}]"), s.device)?;
            check_range(
                &format!("{field}.clock_skew[{i}].offset_ms (absolute)"),
                s.offset_ms.unsigned_abs(),
                0,
                86_400_000,
            )?;
        }
        Ok(())
    }
}

fn check_probability(field: &str, value: f64) -> Result<(), String> {
    if !(0.0..=1.0).contains(&value) {
        return Err(format!(
            "{field} = {value} is not a probability: it must be between 0 and 1"
        ));
    }
    Ok(())
}

/// A random window inside [0, duration_ms): (start, length) with length in [min_ms, max_ms],
/// clipped so it ends by `duration_ms`.
fn window(rng: &mut impl Rng, duration_ms: u64, min_ms: u64, max_ms: u64) -> (u64, u64) {
    let start_ms = rng.gen_range(0..duration_ms.max(1));
    let length_ms = rng
        .gen_range(min_ms..=max_ms)
        .min(duration_ms - start_ms)
        .max(1);
    (start_ms.min(duration_ms - length_ms), length_ms)
}

/// Rounds drawn probabilities so the printed profile is short and pastes back exactly.
fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::Setup;
    use crate::scenario::{default_set, Scenario};
    use std::collections::BTreeMap;

    /// Swarm testing only works if each class is off in a good share of seeds (so the other
    /// classes' effects are seen without it) and on in the rest. Drawn exactly as runs draw it,
    /// for every scenario of the default set: a swarm class is on in 20–80% of seeds, a class of
    /// the fixed profile in all of them, any other class in none.
    #[test]
    fn every_swarm_class_is_off_in_a_good_share_of_seeds_and_on_in_the_rest() {
        const SEEDS: u64 = 1_000;
        for name in default_set() {
            let scenario = Scenario::load(name).unwrap();
            let mut on: BTreeMap<FaultClass, u64> = BTreeMap::new();
            for seed in 0..SEEDS {
                for class in Setup::new(&scenario, seed).faults.classes() {
                    *on.entry(class).or_insert(0) += 1;
                }
            }
            let fixed = scenario.faults.profile.classes();
            for class in FaultClass::all() {
                let share = on.get(&class).copied().unwrap_or(0) as f64 / SEEDS as f64;
                let drawn = scenario.faults.swarm && scenario.faults.swarm_classes.contains(&class);
                let (low, high) = if fixed.contains(&class) {
                    (1.0, 1.0)
                } else if drawn {
                    (0.2, 0.8)
                } else {
                    (0.0, 0.0)
                };
                assert!(
                    (low..=high).contains(&share),
                    "{name}: {class:?} is on in {:.1}% of seeds, expected {:.0}–{:.0}%",
                    share * 100.0,
                    low * 100.0,
                    high * 100.0
                );
            }
        }
    }
}
