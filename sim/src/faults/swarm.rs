//! Swarm testing: per seed, each fault class is on or off and its parameters are drawn
//! (TigerBeetle's `options_swarm`). The draws come from the run's seeded generator only.
//!
//! Drawn partitions and app kills are short: they delay, they do not end sessions. Some seeds
//! add one long silence ([`draw_long_silence`]): every device of one user partitioned or killed
//! for longer than the server takes to notice, which is what a presence bug (a session that never
//! expires) needs to show.

use imsim_history::faults::{
    ClockSkew, CrashFault, DelayFault, DeviceCrashFault, Direction, FaultClass, FaultProfile,
    GatewayCrashFault, GatewayPartitionFault, LinkFault, LogicCrashFault, PartitionFault,
    QueueLinkFault,
};
use imsim_history::Topology;
use imsim_model::DeviceId;
use rand::{Rng, RngCore};

/// The longest partition the swarm draws per class. Shorter than every default silence timeout:
/// a drawn partition delays, it does not end sessions (a scenario's fixed profile may, and so
/// does the occasional long silence of [`draw_long_silence`]).
pub const PARTITION_MS_MAX: u64 = 10_000;

/// The share of seeds that get a long silence, among those whose partition or device-restart
/// class is on and whose safety phase has room for one.
pub const LONG_SILENCE_PROBABILITY: f64 = 0.25;

/// A long silence outlasts the server's offline detection (session timeout plus one tick) by at
/// least this much: room for packets still in flight under the drawn delays (at most 0.5 s) and
/// holds (at most 2 s), so a session that should expire has expired before the silence ends.
pub const LONG_SILENCE_MARGIN_MS: u64 = 5_000;

/// The longest a drawn gateway crash or gateway–logic partition lasts: long enough that a device
/// may notice the silence and fail over, or not, depending on the draw.
pub const GATEWAY_FAULT_MS_MAX: u64 = 8_000;

/// The shortest drawn logic-node downtime. Its shards move at once, but the node stays down a
/// while, so a second crash may find it gone and hand a shard on to a third node.
pub const LOGIC_DOWNTIME_MS_MIN: u64 = 1_000;

/// The longest drawn consumer downtime: long enough that the queue times out and redelivers
/// several times, short enough that the senders' retransmissions keep being deduplicated.
pub const CONSUMER_DOWNTIME_MS_MAX: u64 = 3_000;

/// The cluster's shape as the swarm needs it: gateways, logic nodes, whether there is a queue.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub gateways: u32,
    pub logic: u32,
    pub queue: bool,
}

/// Swarm testing: each class in `classes` is on with probability 1/2; its parameters are
/// drawn. Every fault ends before `duration_ms` (the end of the safety phase). The cluster
/// classes are drawn only when there are `gateways` (without one, they take no draw at all, so
/// the single-server runs draw exactly what they always drew); `logic-crash` only when there is
/// more than one `logic` node to hand a shard over to; the queue classes only with a `queue`.
pub fn draw(
    rng: &mut impl Rng,
    classes: &[FaultClass],
    devices: u32,
    shape: Shape,
    duration_ms: u64,
) -> FaultProfile {
    let Shape {
        gateways,
        logic,
        queue,
    } = shape;
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
        // Placements take no draw here: they come from a stream of their own (`placement`).
        if *class == FaultClass::Placement {
            continue;
        }
        if logic <= 1 && *class == FaultClass::LogicCrash {
            continue;
        }
        if !queue && FaultClass::queue().contains(class) {
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
            FaultClass::Placement => {}
            FaultClass::LogicCrash => {
                for _ in 0..rng.gen_range(1..=2) {
                    let logic = rng.gen_range(0..logic);
                    let (at_ms, downtime_ms) = window(
                        rng,
                        duration_ms,
                        LOGIC_DOWNTIME_MS_MIN,
                        GATEWAY_FAULT_MS_MAX,
                    );
                    profile.logic_crashes.push(LogicCrashFault {
                        logic,
                        at_ms,
                        downtime_ms,
                    });
                }
                profile.logic_crashes.sort_by_key(|crash| crash.at_ms);
            }
            FaultClass::QueueLoss => {
                let probability = round3(rng.gen_range(0.01..0.3));
                profile.queue_loss = Some(QueueLinkFault { probability });
            }
            FaultClass::QueueDuplication => {
                let probability = round3(rng.gen_range(0.01..0.2));
                profile.queue_duplication = Some(QueueLinkFault { probability });
            }
            FaultClass::QueueDelay => {
                let probability = round3(rng.gen_range(0.05..0.5));
                profile.queue_delay = Some(DelayFault {
                    probability,
                    delay_ms_max: rng.gen_range(10..300),
                });
            }
            FaultClass::ConsumerCrash => {
                for _ in 0..rng.gen_range(1..=3) {
                    let (at_ms, downtime_ms) =
                        window(rng, duration_ms, 50, CONSUMER_DOWNTIME_MS_MAX);
                    profile
                        .consumer_crashes
                        .push(CrashFault { at_ms, downtime_ms });
                }
                profile.consumer_crashes.sort_by_key(|crash| crash.at_ms);
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

/// The shortest and longest long silence for a protocol that detects a silent user within
/// `detection_ms`, with a safety phase of `duration_ms`; `None` when it has no room for one.
pub fn long_silence_bounds_ms(detection_ms: u64, duration_ms: u64) -> Option<(u64, u64)> {
    let min_ms = detection_ms + LONG_SILENCE_MARGIN_MS;
    let max_ms = (detection_ms + detection_ms / 2 + LONG_SILENCE_MARGIN_MS).min(duration_ms);
    (min_ms <= max_ms).then_some((min_ms, max_ms))
}

/// Maybe adds one long silence to a drawn `profile`: with [`LONG_SILENCE_PROBABILITY`], every
/// device of one user is partitioned both ways (when the swarm drew partitions) or killed (when
/// it drew app kills) at the same moment, for between `detection_ms` +
/// [`LONG_SILENCE_MARGIN_MS`] and half as long again, ending within the safety phase. The
/// shorter drawn entries of the same kind on those devices are dropped, so the silence is one
/// unbroken window (a short partition healing inside it would end it early). `rng` is a stream
/// of its own, so a seed that draws no long silence runs as it did before there were any.
pub fn draw_long_silence(
    rng: &mut impl Rng,
    profile: &mut FaultProfile,
    topology: &Topology,
    detection_ms: u64,
    duration_ms: u64,
) {
    let mut kinds = Vec::new();
    if !profile.partitions.is_empty() {
        kinds.push(FaultClass::Partition);
    }
    if !profile.device_restarts.is_empty() {
        kinds.push(FaultClass::DeviceRestart);
    }
    let Some((min_ms, max_ms)) = long_silence_bounds_ms(detection_ms, duration_ms) else {
        return;
    };
    if kinds.is_empty() || topology.users.is_empty() || !rng.gen_bool(LONG_SILENCE_PROBABILITY) {
        return;
    }
    let kind = kinds[rng.gen_range(0..kinds.len())];
    let user = &topology.users[rng.gen_range(0..topology.users.len())];
    let length_ms = rng.gen_range(min_ms..=max_ms);
    let start_ms = rng.gen_range(0..=duration_ms - length_ms);
    let silenced = |device: &DeviceId| user.devices.contains(device);
    if kind == FaultClass::Partition {
        profile.partitions.retain(|p| !silenced(&p.device));
        profile
            .partitions
            .extend(user.devices.iter().map(|device| PartitionFault {
                device: *device,
                direction: Direction::Both,
                start_ms,
                duration_ms: length_ms,
            }));
    } else {
        profile.device_restarts.retain(|r| !silenced(&r.device));
        profile
            .device_restarts
            .extend(user.devices.iter().map(|device| DeviceCrashFault {
                device: *device,
                at_ms: start_ms,
                downtime_ms: length_ms,
            }));
    }
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
    use imsim_history::UserSpec;
    use imsim_model::UserId;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    /// Two users with two devices each.
    fn topology() -> Topology {
        Topology {
            users: (1..=2)
                .map(|user| UserSpec {
                    user: UserId(user),
                    devices: vec![DeviceId(2 * user - 1), DeviceId(2 * user)],
                })
                .collect(),
            conversations: Vec::new(),
        }
    }

    #[test]
    fn a_long_silence_needs_room_in_the_safety_phase() {
        assert_eq!(long_silence_bounds_ms(30_250, 30_000), None);
        assert_eq!(long_silence_bounds_ms(30_250, 35_249), None);
        assert_eq!(
            long_silence_bounds_ms(20_000, 90_000),
            Some((25_000, 35_000))
        );
        assert_eq!(
            long_silence_bounds_ms(20_000, 30_000),
            Some((25_000, 30_000))
        );
    }

    /// Drawn as a run draws it: in about a quarter of the seeds with partitions, every device
    /// of one user is cut both ways for the same window, longer than the detection bound; the
    /// short partitions of those devices are gone; nothing else changes.
    #[test]
    fn a_long_silence_silences_every_device_of_one_user_past_the_session_timeout() {
        let (detection_ms, duration_ms) = (25_250, 90_000);
        let short = PartitionFault {
            device: DeviceId(1),
            direction: Direction::ToServer,
            start_ms: 100,
            duration_ms: 1_000,
        };
        let drawn = FaultProfile {
            partitions: vec![short.clone()],
            ..FaultProfile::default()
        };
        let mut silenced = 0;
        for seed in 0..1_000 {
            let mut profile = drawn.clone();
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            draw_long_silence(
                &mut rng,
                &mut profile,
                &topology(),
                detection_ms,
                duration_ms,
            );
            if profile == drawn {
                continue;
            }
            silenced += 1;
            let long: Vec<&PartitionFault> = profile
                .partitions
                .iter()
                .filter(|p| p.duration_ms > 10_000)
                .collect();
            let devices: Vec<DeviceId> = long.iter().map(|p| p.device).collect();
            assert!(
                devices == [DeviceId(1), DeviceId(2)] || devices == [DeviceId(3), DeviceId(4)],
                "seed {seed}: {devices:?}"
            );
            for p in &long {
                assert_eq!(p.direction, Direction::Both);
                assert_eq!(
                    (p.start_ms, p.duration_ms),
                    (long[0].start_ms, long[0].duration_ms)
                );
                assert!(p.duration_ms >= detection_ms + LONG_SILENCE_MARGIN_MS);
                assert!(p.start_ms + p.duration_ms <= duration_ms);
            }
            let kept_short = profile.partitions.contains(&short);
            assert_eq!(kept_short, devices[0] != DeviceId(1), "seed {seed}");
            assert!(
                profile.device_restarts.is_empty(),
                "no class the swarm did not draw"
            );
        }
        assert!((200..=300).contains(&silenced), "{silenced} of 1000 seeds");
    }

    #[test]
    fn no_long_silence_without_partitions_or_app_kills() {
        let drawn = FaultProfile {
            server_crashes: vec![CrashFault {
                at_ms: 10,
                downtime_ms: 10,
            }],
            ..FaultProfile::default()
        };
        for seed in 0..200 {
            let mut profile = drawn.clone();
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            draw_long_silence(&mut rng, &mut profile, &topology(), 25_250, 90_000);
            assert_eq!(profile, drawn);
        }
    }
}
