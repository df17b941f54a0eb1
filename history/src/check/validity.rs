//! Request validity (DESIGN.md §4 "Bounds"): the server enforces the protocol's limits on what a
//! device asks, and only those.
//!
//! - **V1 limits-enforced**: no committed message has a body longer than `body_bytes_max`, no
//!   committed membership change adds a user the run does not know, and no send whose body is
//!   within `body_bytes_max` is refused as too large. The first two are what a server that
//!   forgets a check lets through (and every device then stores and shows); the third is a
//!   check off by one the other way, refusing what the user may send. The body limit is judged
//!   where the history carries the protocol settings, the unknown user where it carries the
//!   topology.

use super::index::{device_name, Findings};
use super::{HistoryIndex, Invariant, Violation};
use crate::{History, Node};
use imsim_model::{ClientMsgId, DeviceId, Event, MembershipChange, Rejection, SendFailure, UserId};
use std::collections::{BTreeMap, BTreeSet};

pub(super) fn check(history: &History, _index: &HistoryIndex) -> Vec<Violation> {
    let mut findings = Findings::new();
    let body_max = history
        .run_start()
        .map(|start| start.protocol.body_bytes_max as usize);
    let known: Option<BTreeSet<UserId>> = history
        .topology()
        .map(|topology| topology.users.iter().map(|spec| spec.user).collect());
    // The body length of each send, by (device, client_msg_id), and the record that asked.
    let mut requested: BTreeMap<(DeviceId, ClientMsgId), (usize, usize)> = BTreeMap::new();
    for (index, record, event) in history.protocol_events() {
        match (record.node, event) {
            (
                Node::Device(device),
                Event::SendRequested {
                    client_msg_id,
                    body,
                    ..
                },
            ) => {
                requested.insert((device, *client_msg_id), (body.len(), index));
            }
            (
                _,
                Event::Committed {
                    conv,
                    seq,
                    sender_device,
                    body,
                    change,
                    ..
                },
            ) => {
                if let Some(max) = body_max.filter(|max| body.len() > *max) {
                    findings.report(Invariant::V1LimitsEnforced, || {
                        let text = format!(
                            "{conv} {seq} from {} was committed with a body of {} bytes, over \
                             body_bytes_max ({max}): the server must refuse it (body_too_large).",
                            device_name(*sender_device),
                            body.len()
                        );
                        (text, vec![index])
                    });
                }
                if let (Some(known), Some(MembershipChange::Add(user))) = (&known, change) {
                    if !known.contains(user) {
                        findings.report(Invariant::V1LimitsEnforced, || {
                            let text = format!(
                                "{conv} {seq} from {} adds {user}, a user the run does not \
                                 know: the server must refuse the change.",
                                device_name(*sender_device)
                            );
                            (text, vec![index])
                        });
                    }
                }
            }
            (
                Node::Device(device),
                Event::SendFailed {
                    conv,
                    client_msg_id,
                    reason: SendFailure::Rejected(Rejection::BodyTooLarge),
                },
            ) => {
                let Some(max) = body_max else { continue };
                let Some(&(len, asked)) = requested.get(&(device, *client_msg_id)) else {
                    continue;
                };
                if len <= max {
                    findings.report(Invariant::V1LimitsEnforced, || {
                        let text = format!(
                            "{} was told its send {client_msg_id} in {conv} was too large, but \
                             its body is {len} bytes, within body_bytes_max ({max}).",
                            device_name(device)
                        );
                        (text, vec![asked, index])
                    });
                }
            }
            _ => {}
        }
    }
    findings.into_violations()
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::*;
    use imsim_model::ClientSeq;

    fn limited(story: &mut Story, body_bytes_max: u32) {
        story.set_protocol(imsim_model::ProtocolConfig {
            body_bytes_max,
            ..Default::default()
        });
    }

    #[test]
    fn fires_on_a_committed_body_over_the_limit() {
        let mut story = Story::one_to_one();
        limited(&mut story, 8);
        let long = "x".repeat(9);
        story.send_as(D1, C1, m(1), ClientSeq(1), &long);
        story.commit(C1, D1, m(1));
        let violation = single(run(&story, check), Invariant::V1LimitsEnforced);
        assert!(violation.explanation.contains("9 bytes"), "{violation:?}");
    }

    #[test]
    fn fires_on_a_body_within_the_limit_refused_as_too_large() {
        let mut story = Story::one_to_one();
        limited(&mut story, 8);
        story.send_as(D1, C1, m(1), ClientSeq(1), &"x".repeat(8));
        story.device(
            D1,
            Event::SendFailed {
                conv: C1,
                client_msg_id: m(1),
                reason: SendFailure::Rejected(Rejection::BodyTooLarge),
            },
        );
        let violation = single(run(&story, check), Invariant::V1LimitsEnforced);
        assert!(violation.explanation.contains("within"), "{violation:?}");
    }

    #[test]
    fn fires_on_a_committed_add_of_an_unknown_user() {
        let mut story = Story::team();
        story.add(C1, D1, UserId(99));
        let violation = single(run(&story, check), Invariant::V1LimitsEnforced);
        assert!(
            violation.explanation.contains("does not know"),
            "{violation:?}"
        );
    }

    #[test]
    fn passes_a_body_at_the_limit_committed_and_one_over_it_refused() {
        let mut story = Story::team();
        limited(&mut story, 8);
        story.send_as(D1, C1, m(1), ClientSeq(1), &"x".repeat(8));
        story.commit(C1, D1, m(1));
        story.send_as(D1, C1, m(2), ClientSeq(2), &"x".repeat(9));
        story.device(
            D1,
            Event::SendFailed {
                conv: C1,
                client_msg_id: m(2),
                reason: SendFailure::Rejected(Rejection::BodyTooLarge),
            },
        );
        story.add(C1, D1, U3); // a user the run knows
        assert!(run(&story, check).is_empty());
    }
}
