//! The recorded path of a display (DESIGN.md §6, timeliness). T1 judges a display by the path it
//! names (a gap pull on a healthy pushed link is a failure of the push), and reports and
//! coverage count the paths, so the name must be the true one.
//!
//! - **T6 path-recorded**: a display brought by a pull names the reason of the round that
//!   fetched it: the last pull the device sent for the conversation that began a round. A pull
//!   retried after a timeout (`retry`) or asking for the next page (`next_page`) continues the
//!   round it belongs to, so neither begins one nor is ever the path. Judged from the device's
//!   first pull of the conversation since it last (re)started: an answer that outlived a restart
//!   has no round on the device to name.

use super::index::{device_name, Findings};
use super::{HistoryIndex, Invariant, Violation};
use crate::{Entry, HarnessEvent, History, Node};
use imsim_model::{ConvId, DeviceId, Event, PullReason, Via};
use std::collections::BTreeMap;

pub(super) fn check(history: &History, _index: &HistoryIndex) -> Vec<Violation> {
    let mut findings = Findings::new();
    // Per device and conversation: the reason of the pull that began the current round, and
    // its record.
    let mut rounds: BTreeMap<(DeviceId, ConvId), (PullReason, usize)> = BTreeMap::new();
    for (index, record) in history.records.iter().enumerate() {
        match (&record.node, &record.entry) {
            (
                _,
                Entry::Harness(
                    HarnessEvent::NodeCrashed {
                        crashed: Node::Device(device),
                    }
                    | HarnessEvent::NodeRestarted {
                        restarted: Node::Device(device),
                    },
                ),
            ) => rounds.retain(|(d, _), _| d != device),
            (Node::Device(device), Entry::Protocol(Event::PullSent { conv, reason, .. }))
                if !continues_a_round(*reason) =>
            {
                rounds.insert((*device, *conv), (*reason, index));
            }
            (
                Node::Device(device),
                Entry::Protocol(Event::Displayed {
                    conv,
                    seq,
                    via: Some(Via::Pull(named)),
                    ..
                }),
            ) => {
                let Some(&(began, round)) = rounds.get(&(*device, *conv)) else {
                    continue;
                };
                if *named != began {
                    findings.report(Invariant::T6PathRecorded, || {
                        let text = format!(
                            "{} displayed {conv} {seq} as brought by a pull for {}, but the round \
                             of pulls that fetched it began with a pull for {}: the path of a \
                             display is the reason of its round's first pull.",
                            device_name(*device),
                            reason_name(*named),
                            reason_name(began),
                        );
                        (text, vec![round, index])
                    });
                }
            }
            _ => {}
        }
    }
    findings.into_violations()
}

/// A pull that carries on the round before it rather than beginning one.
fn continues_a_round(reason: PullReason) -> bool {
    matches!(reason, PullReason::Retry | PullReason::NextPage)
}

/// The reason as the history spells it.
fn reason_name(reason: PullReason) -> String {
    serde_json::to_value(reason)
        .ok()
        .and_then(|value| value.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{reason:?}"))
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::*;
    use imsim_model::Seq;

    fn paths(story: &Story) -> Vec<Violation> {
        check(story.history(), &HistoryIndex::new(story.history()))
    }

    fn pull(story: &mut Story, device: DeviceId, after: u64, reason: PullReason) -> usize {
        let event = Event::PullSent {
            conv: C1,
            after: Seq(after),
            reason,
        };
        story.device(device, event)
    }

    /// `device` shows the committed `seq` of c1, naming `via` as its path.
    fn display_via(story: &mut Story, device: DeviceId, seq: u64, via: Via) -> usize {
        let index = story.display(device, C1, seq);
        story.set_via(index, via);
        index
    }

    /// d3 resumes over two pages, then pulls for a gap: each display names its round's reason.
    fn two_rounds(second_page_names: PullReason, gap_names: PullReason) -> Story {
        let mut story = Story::one_to_one();
        for id in 1..=3 {
            story.send(D1, C1, m(id));
            story.commit(C1, D1, m(id));
        }
        pull(&mut story, D3, 0, PullReason::Resume);
        display_via(&mut story, D3, 1, Via::Pull(PullReason::Resume));
        pull(&mut story, D3, 1, PullReason::NextPage);
        pull(&mut story, D3, 1, PullReason::Retry);
        display_via(&mut story, D3, 2, Via::Pull(second_page_names));
        pull(&mut story, D3, 2, PullReason::Gap);
        display_via(&mut story, D3, 3, Via::Pull(gap_names));
        story.finish();
        story
    }

    #[test]
    fn t6_displays_naming_the_reason_their_round_began_with_pass() {
        let story = two_rounds(PullReason::Resume, PullReason::Gap);
        assert_eq!(paths(&story), []);
    }

    #[test]
    fn t6_a_display_naming_the_next_page_that_fetched_it_fires() {
        let story = two_rounds(PullReason::NextPage, PullReason::Gap);
        let violations = paths(&story);
        assert_eq!(violations.len(), 1, "{violations:#?}");
        let violation = &violations[0];
        assert_eq!(violation.invariant, Invariant::T6PathRecorded);
        assert!(
            violation.explanation.contains("for next_page")
                && violation
                    .explanation
                    .contains("began with a pull for resume"),
            "{}",
            violation.explanation
        );
        assert_eq!(violation.witness.len(), 2);
    }

    #[test]
    fn t6_a_display_naming_an_earlier_rounds_reason_fires() {
        let story = two_rounds(PullReason::Resume, PullReason::Resume);
        let violations = paths(&story);
        assert_eq!(violations.len(), 1, "{violations:#?}");
        assert!(violations[0]
            .explanation
            .contains("began with a pull for gap"));
    }

    #[test]
    fn t6_an_answer_that_outlived_a_restart_is_not_judged() {
        let mut story = Story::one_to_one();
        story.send(D1, C1, m(1));
        story.commit(C1, D1, m(1));
        pull(&mut story, D3, 0, PullReason::Gap);
        story.crash(Node::Device(D3));
        story.restart(Node::Device(D3));
        // The client lost the round; the answer is labelled as the client labels a pull of no
        // round it knows.
        display_via(&mut story, D3, 1, Via::Pull(PullReason::Resume));
        story.finish();
        assert_eq!(paths(&story), []);
    }
}
