//! Multi-device invariants (DESIGN.md §6). For now only M3 cursor-monotonic: a device's sync
//! cursor in a conversation never moves back, not even across a restart, because the cursor
//! lives in the device's local database and a restart keeps it. A cursor that went back makes the
//! device pull and possibly show again what it already showed. M1 and M2 (devices and read state
//! converge) come with read receipts and roaming.

use super::index::{device_name, Findings};
use super::{HistoryIndex, Invariant, Violation};
use crate::history::{History, Node};
use imsim_model::{ConvId, DeviceId, Event, Seq};
use std::collections::BTreeMap;

pub(super) fn check(history: &History, _index: &HistoryIndex) -> Vec<Violation> {
    let mut findings = Findings::new();
    cursor_monotonic(history, &mut findings);
    findings.into_violations()
}

/// M3: each `CursorAdvanced` is at least the previous one of its device and conversation. The
/// comparison is with the previous cursor, not the highest: a cursor reset once is one report,
/// and the climb back up after it is not reported again.
fn cursor_monotonic(history: &History, findings: &mut Findings) {
    let mut previous: BTreeMap<(ConvId, DeviceId), (Seq, usize)> = BTreeMap::new();
    for (record, line, event) in history.protocol_events() {
        let (Node::Device(device), Event::CursorAdvanced { conv, cursor }) = (line.node, event)
        else {
            continue;
        };
        let Some((before, before_record)) = previous.insert((*conv, device), (*cursor, record))
        else {
            continue;
        };
        if *cursor < before {
            findings.report(Invariant::M3CursorMonotonic, || {
                let text = format!(
                    "{}'s {conv} cursor went back from {before} to {cursor}.",
                    device_name(device)
                );
                (text, vec![before_record, record])
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::*;

    fn multi_device(story: &Story) -> Vec<Violation> {
        run(story, check)
    }

    #[test]
    fn cursors_that_survive_a_restart_pass() {
        let mut story = Story::one_to_one();
        story.message(D1, C1, m(1));
        story.crash(Node::Device(D3));
        story.restart(Node::Device(D3));
        story.message(D1, C1, m(2));
        story.cursor(D3, C1, 2); // re-announced after the restart: equal is not backwards
        story.finish();
        assert_eq!(multi_device(&story), vec![]);
    }

    #[test]
    fn m3_a_cursor_reset_by_a_restart_is_reported_once() {
        let mut story = Story::one_to_one();
        story.message(D1, C1, m(1));
        story.message(D1, C1, m(2));
        let before = story.cursor(D3, C1, 2);
        story.crash(Node::Device(D3));
        story.restart(Node::Device(D3));
        // The device forgot its cursor and climbs back up from the start.
        let reset = story.cursor(D3, C1, 1);
        story.cursor(D3, C1, 2);
        let violation = single(multi_device(&story), Invariant::M3CursorMonotonic);
        assert_eq!(violation.witness, vec![before, reset]);
        assert_eq!(
            violation.explanation,
            "device-3's c1 cursor went back from #2 to #1."
        );
    }

    #[test]
    fn m3_cursors_are_per_device_and_conversation() {
        let mut story = Story::group();
        story.cursor(D1, C1, 5);
        story.cursor(D2, C1, 1);
        story.cursor(D1, C2, 1);
        assert_eq!(multi_device(&story), vec![]);
    }
}
