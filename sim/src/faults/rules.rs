//! Packet faults as an ordered list of rules (turmoil's `rule.rs`): each returns pass, drop,
//! duplicate, delay or hold for one packet; the first verdict that is not `Pass` wins.

use imsim_history::faults::{
    DelayFault, Direction, FaultProfile, GatewayPartitionFault, LinkFault, PartitionFault,
    QueueLinkFault,
};
use imsim_model::DeviceId;

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
    /// Cluster topology: cuts the links between gateways and the logic. It judges only those
    /// links (`Rule::internal_verdict`); the device rules above judge only devices' links.
    GatewayPartition(Vec<GatewayPartitionFault>),
    /// Queue topology: the queue's links (logic → queue, queue ↔ consumer, consumer → logic).
    /// These judge only those links (`Rule::queue_verdict`).
    QueueLoss(QueueLinkFault),
    QueueDuplication(QueueLinkFault),
    QueueDelay(DelayFault),
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

impl Rule {
    /// The verdict for a packet between `gateway` and the logic (either way) at `now_ms`. The
    /// links inside the cluster are neither lossy nor slow in this model: only a gateway
    /// partition cuts them, and it draws nothing.
    pub fn internal_verdict(&self, gateway: u32, now_ms: u64) -> Verdict {
        match self {
            Rule::GatewayPartition(partitions)
                if partitions.iter().any(|p| {
                    p.gateway == gateway
                        && now_ms >= p.start_ms
                        && now_ms < p.start_ms + p.duration_ms
                }) =>
            {
                Verdict::Drop
            }
            _ => Verdict::Pass,
        }
    }
}

impl Rule {
    /// The verdict for a packet on one of the queue's links at `now_ms`: lost, duplicated or
    /// delayed (reordered) by the queue rules; every other rule passes it.
    pub fn queue_verdict(&self, draw: &mut dyn FnMut() -> f64) -> Verdict {
        match self {
            Rule::QueueLoss(fault) if draw() < fault.probability => Verdict::Drop,
            Rule::QueueDuplication(fault) if draw() < fault.probability => Verdict::Duplicate,
            Rule::QueueDelay(fault) if draw() < fault.probability => {
                Verdict::Delay(1 + (draw() * fault.delay_ms_max as f64) as u64)
            }
            _ => Verdict::Pass,
        }
    }
}

/// The packet rules of this profile, in the order they apply.
pub fn rules(profile: &FaultProfile) -> Vec<Rule> {
    let mut rules = Vec::new();
    if !profile.partitions.is_empty() {
        rules.push(Rule::Partition(profile.partitions.clone()));
    }
    rules.extend(profile.loss.clone().map(Rule::Loss));
    rules.extend(profile.duplication.clone().map(Rule::Duplication));
    rules.extend(profile.hold.clone().map(Rule::Hold));
    rules.extend(profile.delay.clone().map(Rule::Delay));
    if !profile.gateway_partitions.is_empty() {
        rules.push(Rule::GatewayPartition(profile.gateway_partitions.clone()));
    }
    rules.extend(profile.queue_loss.clone().map(Rule::QueueLoss));
    rules.extend(
        profile
            .queue_duplication
            .clone()
            .map(Rule::QueueDuplication),
    );
    rules.extend(profile.queue_delay.clone().map(Rule::QueueDelay));
    rules
}
