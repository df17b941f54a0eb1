//! The feature swarm: per seed, each workload feature and protocol mode of a scenario is on or
//! off (swarm testing, as for faults), so features meet each other and the faults in ways no
//! hand-written scenario combines: group reads during membership churn on a user's second
//! device, a roaming device catching up through notify-then-pull under fan-out write, a crash
//! storm with duplicated packets.
//!
//! A scenario with `[features] swarm = true` states every feature at its "on" value; the draw
//! switches some off. So what a scenario can reach (coverage applicability) is read from the
//! scenario as written, and each feature is on in about half the seeds. The draw has its own
//! generator, seeded from the run seed alone: a scenario without the table runs exactly as
//! before, and the explicit form of a run (`explicit`) writes the drawn values out.

use crate::scenario::Scenario;
use imsim_history::faults::{CrashFault, LinkFault};
use imsim_model::{DeviceId, PresenceMode};
use rand::Rng;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

/// Mixed into the run seed to seed the feature draw ("feature" in ASCII).
const FEATURES_SEED_SALT: u64 = 0x66_6561_7475_7265;

/// Server crashes a storm adds, at least and at most.
const STORM_CRASHES: std::ops::RangeInclusive<usize> = 4..=8;

/// What one seed drew, for the run's header (`imsim run -v`, the report).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Drawn {
    pub reads: bool,
    pub membership_churn: bool,
    pub multi_device: bool,
    pub roaming: bool,
    pub presence_pull: bool,
    pub notify_then_pull: bool,
    pub fanout_write: bool,
    pub storm: bool,
    pub edge_requests: bool,
}

/// `scenario` with this seed's features drawn (unchanged without `[features] swarm = true`).
pub fn draw(scenario: &Scenario, seed: u64) -> (Scenario, Option<Drawn>) {
    if !scenario.features.swarm {
        return (scenario.clone(), None);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ FEATURES_SEED_SALT);
    let mut drawn = scenario.clone();
    drawn.features.swarm = false;
    let on = Drawn {
        reads: rng.gen_bool(0.5),
        membership_churn: rng.gen_bool(0.5),
        multi_device: rng.gen_bool(0.5),
        roaming: rng.gen_bool(0.5),
        presence_pull: rng.gen_bool(0.5),
        notify_then_pull: rng.gen_bool(0.5),
        fanout_write: rng.gen_bool(0.5),
        storm: rng.gen_bool(0.25),
        edge_requests: rng.gen_bool(0.5),
    };
    let (workload, topology) = (&mut drawn.workload, &mut drawn.topology);
    if !on.reads {
        workload.reads = 0;
    }
    if !on.membership_churn {
        workload.membership_changes = 0;
    }
    if !on.edge_requests {
        workload.edge_requests = 0;
    }
    if !on.multi_device {
        topology.devices_per_user = 1;
    }
    if !on.roaming || topology.devices_per_user < 2 {
        workload.roaming_devices = 0;
    }
    let protocol = &mut drawn.protocol;
    if on.presence_pull {
        protocol.presence = PresenceMode::Pull;
    }
    if !on.notify_then_pull {
        // Every group pushes: the threshold is above the largest group.
        let largest = topology.groups.iter().map(|g| g.size).max().unwrap_or(0);
        protocol.notify_threshold_members = protocol.notify_threshold_members.max(largest);
    }
    protocol.fanout_write = on.fanout_write;
    if on.storm {
        storm(&mut drawn, &mut rng);
    }
    let on = Drawn {
        multi_device: drawn.topology.devices_per_user > 1,
        roaming: drawn.workload.roaming_devices > 0,
        ..on
    };
    (drawn, Some(on))
}

/// A fault storm: several short server crashes spread over the safety phase, and duplication on
/// every device's link, on top of whatever the scenario's faults draw.
fn storm(scenario: &mut Scenario, rng: &mut ChaCha8Rng) {
    let duration_ms = scenario.workload.duration_ms;
    let profile = &mut scenario.faults.profile;
    let crashes = rng.gen_range(STORM_CRASHES);
    for slot in 0..crashes as u64 {
        // One crash per slot of the phase, so crashes never overlap.
        let slot_ms = duration_ms / crashes as u64;
        let downtime_ms = rng.gen_range(50..=400).min(slot_ms / 2);
        let at_ms = slot * slot_ms + rng.gen_range(0..slot_ms - downtime_ms);
        profile
            .server_crashes
            .push(CrashFault { at_ms, downtime_ms });
    }
    profile.server_crashes.sort_by_key(|crash| crash.at_ms);
    let devices = scenario.topology.users * scenario.topology.devices_per_user;
    profile.duplication = Some(LinkFault {
        probability: (rng.gen_range(0.05..0.2_f64) * 1000.0).round() / 1000.0,
        devices: (1..=devices).map(DeviceId).collect(),
    });
}
