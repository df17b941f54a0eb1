//! Swarm testing: per seed, each fault class is on or off and its parameters are drawn
//! (TigerBeetle's `options_swarm`). The draws come from the run's seeded generator only.

use imsim_history::faults::{
    ClockSkew, CrashFault, DelayFault, DeviceCrashFault, Direction, FaultClass, FaultProfile,
    GatewayCrashFault, GatewayPartitionFault, LinkFault, PartitionFault,
};
use imsim_model::DeviceId;
use rand::{Rng, RngCore};

/// The longest partition the swarm draws. Shorter than every default silence timeout: a drawn
/// partition delays, it does not end sessions (a scenario's fixed profile may).
pub const PARTITION_MS_MAX: u64 = 10_000;

/// The longest a drawn gateway crash or gateway–logic partition lasts: long enough that a device
/// may notice the silence and fail over, or not, depending on the draw.
pub const GATEWAY_FAULT_MS_MAX: u64 = 8_000;

/// Swarm testing: each class in `classes` is on with probability 1/2; its parameters are
/// drawn. Every fault ends before `duration_ms` (the end of the safety phase). The cluster
/// classes are drawn only when there are `gateways` (without one, they take no draw at all, so
/// the single-server runs draw exactly what they always drew).
pub fn draw(
    rng: &mut impl Rng,
    classes: &[FaultClass],
    devices: u32,
    gateways: u32,
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
        if gateways == 0 && FaultClass::cluster().contains(class) {
            continue;
        }
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
                    let direction = [Direction::Both, Direction::ToServer, Direction::FromServer]
                        [rng.gen_range(0..3)];
                    let (start_ms, duration_ms) = window(rng, duration_ms, 500, PARTITION_MS_MAX);
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
            FaultClass::GatewayCrash => {
                for _ in 0..rng.gen_range(1..=3) {
                    let gateway = rng.gen_range(0..gateways);
                    let (at_ms, downtime_ms) = window(rng, duration_ms, 100, GATEWAY_FAULT_MS_MAX);
                    profile.gateway_crashes.push(GatewayCrashFault {
                        gateway,
                        at_ms,
                        downtime_ms,
                    });
                }
                profile.gateway_crashes.sort_by_key(|crash| crash.at_ms);
            }
            FaultClass::GatewayPartition => {
                for _ in 0..rng.gen_range(1..=2) {
                    let gateway = rng.gen_range(0..gateways);
                    let (start_ms, duration_ms) =
                        window(rng, duration_ms, 100, GATEWAY_FAULT_MS_MAX);
                    profile.gateway_partitions.push(GatewayPartitionFault {
                        gateway,
                        start_ms,
                        duration_ms,
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
