//! The swimlanes of a report: which node each lane shows, in which order.

use crate::report::{Lane, LaneKind};
use imsim_history::{Entry, HarnessEvent, History, Node};
use imsim_model::DeviceId;
use std::collections::BTreeMap;

/// The lanes of a run: the server first, then each device in topology order (user by user),
/// then devices the topology does not list, then the harness if it recorded an event the report
/// has no band for.
pub struct Lanes {
    pub lanes: Vec<Lane>,
    by_node: BTreeMap<Node, usize>,
}

impl Lanes {
    pub fn new(history: &History) -> Lanes {
        let mut lanes = Lanes {
            lanes: Vec::new(),
            by_node: BTreeMap::new(),
        };
        lanes.add(Node::Server, "server".to_string(), None);
        for user in history
            .topology()
            .map(|t| t.users.as_slice())
            .unwrap_or(&[])
        {
            for device in &user.devices {
                lanes.add(
                    Node::Device(*device),
                    format!("{} · {}", device, user.user),
                    Some(user.user.0),
                );
            }
        }
        for record in &history.records {
            match record.node {
                Node::Device(device) if !lanes.by_node.contains_key(&record.node) => {
                    lanes.add(record.node, device.to_string(), None);
                }
                Node::Harness if !lanes.by_node.contains_key(&Node::Harness) => {
                    if let Entry::Harness(event) = &record.entry {
                        if !is_drawn_as_band(event) {
                            lanes.add(Node::Harness, "harness".to_string(), None);
                        }
                    }
                }
                _ => {}
            }
        }
        lanes
    }

    fn add(&mut self, node: Node, label: String, user: Option<u32>) {
        if self.by_node.contains_key(&node) {
            return;
        }
        let (kind, device) = match node {
            Node::Server => (LaneKind::Server, None),
            Node::Device(device) => (LaneKind::Device, Some(device.0)),
            Node::Harness => (LaneKind::Harness, None),
        };
        self.by_node.insert(node, self.lanes.len());
        self.lanes.push(Lane {
            id: node.to_string(),
            label,
            kind,
            device,
            user,
        });
    }

    pub fn of(&self, node: Node) -> Option<usize> {
        self.by_node.get(&node).copied()
    }

    pub fn of_device(&self, device: DeviceId) -> Option<usize> {
        self.of(Node::Device(device))
    }
}

/// Harness events that become bands, or that only set the run up or close it: not marks.
pub fn is_drawn_as_band(event: &HarnessEvent) -> bool {
    matches!(
        event,
        HarnessEvent::RunStarted(_)
            | HarnessEvent::PartitionStarted { .. }
            | HarnessEvent::PartitionHealed { .. }
            | HarnessEvent::NodeCrashed { .. }
            | HarnessEvent::NodeRestarted { .. }
            | HarnessEvent::LivenessPhaseStarted { .. }
            | HarnessEvent::FinalTimeline { .. }
            | HarnessEvent::RunEnded
    )
}
