//! Read receipt invariants (DESIGN.md §6):
//! - R1 watermark-monotonic: a user's read watermark never goes back, at the server
//!   (`read_advanced`) or on any device that shows it (`read_seen`).
//! - R2 read-le-delivered: read ≤ received ≤ committed. A device marks read only what it
//!   received; the server records and devices show only watermarks within the committed timeline.
//! - R3 read-after-display: a device marks read only what it displayed; the server records, and
//!   any device shows (a sender's "read" tick), a user's read of seq s only after a device of
//!   that user displayed s (or later).
//! - R4 group-read-count: a group message's read count is the number of members at its seq, its
//!   sender excluded, whose watermark covers it (membership entries have no read count). What a
//!   sender's device shows never exceeds that count and only rises, and after the quiet period
//!   every device of the sender shows it exactly. A reader list names as readers only members
//!   whose watermark covers the message, and splits exactly the members at its seq (its sender
//!   excluded) into readers and unread.

use super::index::{device_name, Findings};
use super::{HistoryIndex, Invariant, Violation};
use crate::{History, Node};
use imsim_model::{ConvId, DeviceId, Event, Seq, UserId};
use std::collections::{BTreeMap, BTreeSet};

pub(super) fn check(history: &History, index: &HistoryIndex) -> Vec<Violation> {
    let mut findings = Findings::new();
    let mut pass = Pass {
        index,
        head: BTreeMap::new(),
        received: BTreeMap::new(),
        displayed: BTreeMap::new(),
        watermark: BTreeMap::new(),
        shown: BTreeMap::new(),
        readers: BTreeMap::new(),
        counts_shown: BTreeMap::new(),
    };
    for (record, line, event) in history.protocol_events() {
        pass.event(record, line.node, event, &mut findings);
    }
    if index.run_ended().is_some() {
        pass.counts_converge(&mut findings);
    }
    findings.into_violations()
}

struct Pass<'a> {
    index: &'a HistoryIndex,
    /// Per conversation: the highest committed seq so far.
    head: BTreeMap<ConvId, Seq>,
    /// Per (conv, device): the highest seq received (displayed, held back or dropped as a
    /// duplicate) and the highest displayed, with the record that displayed it.
    received: BTreeMap<(ConvId, DeviceId), Seq>,
    displayed: BTreeMap<(ConvId, DeviceId), Seq>,
    /// Per (conv, user): the server's watermark and its record.
    watermark: BTreeMap<(ConvId, UserId), (Seq, usize)>,
    /// Per (conv, device, user): the watermark the device shows, and its record.
    shown: BTreeMap<(ConvId, DeviceId, UserId), (Seq, usize)>,
    /// Per group message: who read it (R4's truth), and the record that made each one count.
    readers: BTreeMap<(ConvId, Seq), BTreeSet<UserId>>,
    /// Per (device, conv, seq): the read count the device shows last, and its record.
    counts_shown: BTreeMap<(DeviceId, ConvId, Seq), (u32, usize)>,
}

impl Pass<'_> {
    fn event(&mut self, record: usize, node: Node, event: &Event, findings: &mut Findings) {
        match (node, event) {
            (Node::Server, Event::Committed { conv, seq, .. }) => {
                let head = self.head.entry(*conv).or_default();
                *head = (*head).max(*seq);
            }
            (Node::Device(device), Event::Displayed { conv, seq, .. }) => {
                for map in [&mut self.received, &mut self.displayed] {
                    let at = map.entry((*conv, device)).or_default();
                    *at = (*at).max(*seq);
                }
            }
            (
                Node::Device(device),
                Event::HeldBack { conv, seq }
                | Event::DuplicateDropped { conv, seq }
                | Event::HoldBackOverflow { conv, seq },
            ) => {
                let at = self.received.entry((*conv, device)).or_default();
                *at = (*at).max(*seq);
            }
            (Node::Device(device), Event::ReadMarked { conv, up_to }) => {
                self.read_marked(record, device, *conv, *up_to, findings)
            }
            (
                Node::Server,
                Event::ReadAdvanced {
                    conv, user, up_to, ..
                },
            ) => self.read_advanced(record, *conv, *user, *up_to, findings),
            (Node::Device(device), Event::ReadSeen { conv, user, up_to }) => {
                self.read_seen(record, device, *conv, *user, *up_to, findings)
            }
            (Node::Device(device), Event::ReadCountSeen { conv, seq, readers }) => {
                self.count_seen(record, device, *conv, *seq, *readers, findings)
            }
            (
                Node::Device(device),
                Event::ReadersSeen {
                    conv,
                    seq,
                    readers,
                    unread,
                },
            ) => self.readers_seen(record, device, (*conv, *seq), readers, unread, findings),
            _ => {}
        }
    }

    fn read_marked(
        &mut self,
        record: usize,
        device: DeviceId,
        conv: ConvId,
        up_to: Seq,
        findings: &mut Findings,
    ) {
        let received = self
            .received
            .get(&(conv, device))
            .copied()
            .unwrap_or_default();
        let displayed = self
            .displayed
            .get(&(conv, device))
            .copied()
            .unwrap_or_default();
        let who = device_name(device);
        if up_to > received {
            findings.report(Invariant::R2ReadLeDelivered, || {
                let text = format!(
                    "{who} marked {conv} read up to {up_to}, but had received only up to {received}."
                );
                (text, vec![record])
            });
        } else if up_to > displayed {
            findings.report(Invariant::R3ReadAfterDisplay, || {
                let text = format!(
                    "{who} marked {conv} read up to {up_to}, but had displayed only up to \
                     {displayed}: {up_to} was received and not yet shown."
                );
                (text, vec![record])
            });
        }
    }

    fn read_advanced(
        &mut self,
        record: usize,
        conv: ConvId,
        user: UserId,
        up_to: Seq,
        findings: &mut Findings,
    ) {
        let head = self.head.get(&conv).copied().unwrap_or_default();
        if up_to > head {
            findings.report(Invariant::R2ReadLeDelivered, || {
                let text = format!(
                    "The server recorded {user} read {conv} up to {up_to}, beyond the committed \
                     head {head}."
                );
                (text, vec![record])
            });
        }
        let displayed = self.displayed_by(conv, user);
        if up_to > displayed && up_to <= head {
            findings.report(Invariant::R3ReadAfterDisplay, || {
                let text = format!(
                    "The server recorded {user} read {conv} up to {up_to}, but no device of \
                     {user} had displayed more than {displayed}."
                );
                (text, vec![record])
            });
        }
        let (before, before_record) = self
            .watermark
            .get(&(conv, user))
            .copied()
            .unwrap_or((Seq::ZERO, record));
        if up_to <= before && before > Seq::ZERO {
            findings.report(Invariant::R1WatermarkMonotonic, || {
                let text = format!(
                    "The server moved {user}'s {conv} read watermark from {before} to {up_to}: \
                     it must only move forward."
                );
                (text, vec![before_record, record])
            });
            return;
        }
        self.watermark.insert((conv, user), (up_to, record));
        if !self.index.is_group(conv) {
            return;
        }
        let periods = self.index.periods(conv, user);
        for seq in before.0 + 1..=up_to.0 {
            let seq = Seq(seq);
            let Some(commit) = self.index.commits_at(conv, seq).next() else {
                continue;
            };
            let counted = commit.change.is_none() && commit.sender_user != user;
            if counted && periods.visible(seq) {
                self.readers.entry((conv, seq)).or_default().insert(user);
            }
        }
    }

    /// The highest seq of `conv` that any device of `user` has displayed so far.
    fn displayed_by(&self, conv: ConvId, user: UserId) -> Seq {
        let devices = self.index.devices_of(user);
        devices
            .iter()
            .filter_map(|d| self.displayed.get(&(conv, *d)))
            .max()
            .copied()
            .unwrap_or_default()
    }

    fn read_seen(
        &mut self,
        record: usize,
        device: DeviceId,
        conv: ConvId,
        user: UserId,
        up_to: Seq,
        findings: &mut Findings,
    ) {
        let who = device_name(device);
        let head = self.head.get(&conv).copied().unwrap_or_default();
        if up_to > head {
            findings.report(Invariant::R2ReadLeDelivered, || {
                let text = format!(
                    "{who} showed {user} read {conv} up to {up_to}, beyond the committed head \
                     {head}."
                );
                (text, vec![record])
            });
        }
        let displayed = self.displayed_by(conv, user);
        if up_to > displayed && up_to <= head {
            findings.report(Invariant::R3ReadAfterDisplay, || {
                let text = format!(
                    "{who} showed {user} read {conv} up to {up_to}, but no device of {user} had \
                     displayed more than {displayed} by then."
                );
                (text, vec![record])
            });
        }
        if let Some((before, before_record)) =
            self.shown.insert((conv, device, user), (up_to, record))
        {
            if up_to < before {
                findings.report(Invariant::R1WatermarkMonotonic, || {
                    let text = format!(
                        "{who} showed {user}'s {conv} read watermark go back from {before} to \
                         {up_to}."
                    );
                    (text, vec![before_record, record])
                });
            }
        }
    }

    fn count_seen(
        &mut self,
        record: usize,
        device: DeviceId,
        conv: ConvId,
        seq: Seq,
        readers: u32,
        findings: &mut Findings,
    ) {
        let truth = self.readers.get(&(conv, seq)).map_or(0, BTreeSet::len) as u32;
        if readers > truth {
            let who = device_name(device);
            findings.report(Invariant::R4GroupReadCount, || {
                let text = format!(
                    "{who} showed a read count of {readers} for {conv} {seq}, but only {} (its sender \
                     excluded) had read it.",
                    members(truth as usize)
                );
                (text, vec![record])
            });
        }
        // Readers are never taken back, so each count a device shows is above its last one: one
        // at the same value is a count shown again as if it had changed, a lower one a count
        // that went back.
        let previous = self
            .counts_shown
            .insert((device, conv, seq), (readers, record));
        if let Some((before, before_record)) = previous.filter(|(before, _)| readers <= *before) {
            let who = device_name(device);
            findings.report(Invariant::R4GroupReadCount, || {
                let moved = if readers < before {
                    "went back"
                } else {
                    "was shown again"
                };
                let text = format!(
                    "{who}'s read count of {conv} {seq} {moved}: {before}, then {readers}."
                );
                (text, vec![before_record, record])
            });
        }
    }

    fn readers_seen(
        &self,
        record: usize,
        device: DeviceId,
        (conv, seq): (ConvId, Seq),
        readers: &[UserId],
        unread: &[UserId],
        findings: &mut Findings,
    ) {
        let who = device_name(device);
        let watermark = |user: &UserId| {
            self.watermark
                .get(&(conv, *user))
                .map_or(Seq::ZERO, |(up_to, _)| *up_to)
        };
        if let Some(early) = readers.iter().find(|user| watermark(user) < seq) {
            let read = watermark(early);
            findings.report(Invariant::R4GroupReadCount, || {
                let text = format!(
                    "{who} listed {early} as a reader of {conv} {seq}, but {early} had read only \
                     up to {read}."
                );
                (text, vec![record])
            });
            return;
        }
        let Some(commit) = self.index.commits_at(conv, seq).next() else {
            return;
        };
        let members: BTreeSet<UserId> = self
            .index
            .users()
            .filter(|u| *u != commit.sender_user && self.index.periods(conv, *u).visible(seq))
            .collect();
        let listed: Vec<UserId> = readers.iter().chain(unread).copied().collect();
        let distinct: BTreeSet<UserId> = listed.iter().copied().collect();
        if distinct != members || distinct.len() != listed.len() {
            findings.report(Invariant::R4GroupReadCount, || {
                let text = format!(
                    "{who}'s reader list of {conv} {seq} names {} user(s) as read or unread, \
                     but {} (its sender excluded) could see it.",
                    listed.len(),
                    self::members(members.len())
                );
                (text, vec![record, commit.record])
            });
        }
    }

    /// After the quiet period every device of a group message's sender shows its read count.
    fn counts_converge(&self, findings: &mut Findings) {
        for ((conv, seq), readers) in &self.readers {
            let Some(commit) = self.index.commits_at(*conv, *seq).next() else {
                continue;
            };
            let truth = readers.len() as u32;
            for device in self.index.devices_of(commit.sender_user) {
                let shown = self.counts_shown.get(&(*device, *conv, *seq));
                let (count, witness) = shown.map_or((0, commit.record), |(n, at)| (*n, *at));
                if count != truth {
                    let who = device_name(*device);
                    findings.report(Invariant::R4GroupReadCount, || {
                        let text = format!(
                            "After the quiet period {who} shows a read count of {count} for {conv} \
                             {seq}, but {} read it.",
                            members(truth as usize)
                        );
                        (text, vec![witness])
                    });
                }
            }
        }
    }
}

/// "1 member", "2 members": a count of members in words.
fn members(count: usize) -> String {
    if count == 1 {
        "1 member".to_string()
    } else {
        format!("{count} members")
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::*;

    fn receipts(story: &Story) -> Vec<Violation> {
        run(story, check)
    }

    fn marked(story: &mut Story, device: DeviceId, conv: ConvId, up_to: u64) -> usize {
        let up_to = Seq(up_to);
        story.device(device, Event::ReadMarked { conv, up_to })
    }

    fn advanced(story: &mut Story, device: DeviceId, user: UserId, up_to: u64) -> usize {
        story.server(Event::ReadAdvanced {
            conv: C1,
            user,
            device,
            up_to: Seq(up_to),
        })
    }

    fn seen(story: &mut Story, device: DeviceId, user: UserId, up_to: u64) -> usize {
        let up_to = Seq(up_to);
        story.device(
            device,
            Event::ReadSeen {
                conv: C1,
                user,
                up_to,
            },
        )
    }

    fn count(story: &mut Story, device: DeviceId, seq: u64, readers: u32) -> usize {
        let seq = Seq(seq);
        story.device(
            device,
            Event::ReadCountSeen {
                conv: C1,
                seq,
                readers,
            },
        )
    }

    /// u2 reads u1's two messages on d3; u1's devices and d3 see the watermark.
    fn read_one_to_one() -> Story {
        let mut story = Story::one_to_one();
        story.message(D1, C1, m(1));
        story.message(D1, C1, m(2));
        marked(&mut story, D3, C1, 2);
        advanced(&mut story, D3, U2, 2);
        for device in [D1, D2, D3] {
            seen(&mut story, device, U2, 2);
        }
        story
    }

    #[test]
    fn reads_of_displayed_messages_pass() {
        let mut story = read_one_to_one();
        story.finish();
        assert_eq!(receipts(&story), vec![]);
    }

    #[test]
    fn r1_a_server_watermark_that_goes_back_fires() {
        let mut story = read_one_to_one();
        let back = advanced(&mut story, D3, U2, 1);
        let violation = single(receipts(&story), Invariant::R1WatermarkMonotonic);
        assert!(violation.witness.contains(&back), "{violation:?}");
        assert!(
            violation.explanation.contains("from #2 to #1"),
            "{violation:?}"
        );
    }

    #[test]
    fn r1_a_device_showing_a_watermark_go_back_fires() {
        let mut story = read_one_to_one();
        seen(&mut story, D1, U2, 1);
        let violation = single(receipts(&story), Invariant::R1WatermarkMonotonic);
        assert!(violation.explanation.contains("device-1"), "{violation:?}");
    }

    #[test]
    fn r2_a_read_beyond_what_was_received_or_committed_fires() {
        let mut story = Story::one_to_one();
        story.message(D1, C1, m(1));
        marked(&mut story, D3, C1, 2);
        let violation = single(receipts(&story), Invariant::R2ReadLeDelivered);
        assert!(violation.explanation.contains("received only up to #1"));

        let mut story = Story::one_to_one();
        story.message(D1, C1, m(1));
        seen(&mut story, D1, U2, 3);
        let violation = single(receipts(&story), Invariant::R2ReadLeDelivered);
        assert!(violation
            .explanation
            .contains("beyond the committed head #1"));
    }

    #[test]
    fn r3_a_read_of_a_held_back_message_fires() {
        let mut story = Story::one_to_one();
        story.message(D1, C1, m(1));
        story.send(D1, C1, m(2));
        story.commit(C1, D1, m(2));
        story.send(D1, C1, m(3));
        story.commit(C1, D1, m(3));
        // #3 arrives ahead of the hole at #2 and waits; the device marks it read anyway.
        let seq = Seq(3);
        story.device(D3, Event::HeldBack { conv: C1, seq });
        let read = marked(&mut story, D3, C1, 3);
        let violation = single(receipts(&story), Invariant::R3ReadAfterDisplay);
        assert_eq!(violation.witness, vec![read]);
    }

    #[test]
    fn r3_a_server_read_no_device_displayed_fires() {
        let mut story = Story::one_to_one();
        story.send(D1, C1, m(1));
        story.commit(C1, D1, m(1));
        let read = advanced(&mut story, D3, U2, 1);
        let violation = single(receipts(&story), Invariant::R3ReadAfterDisplay);
        assert_eq!(violation.witness, vec![read]);
    }

    #[test]
    fn r3_a_read_tick_shown_before_the_reader_displayed_fires() {
        // u1 sends #1; d1 shows u2's read tick while d3 has not displayed #1 yet, and shows it
        // only 18 s later.
        let mut story = Story::one_to_one();
        story.send(D1, C1, m(1));
        story.commit(C1, D1, m(1));
        let tick = seen(&mut story, D1, U2, 1);
        story.wait(18_000);
        story.display(D3, C1, 1);
        marked(&mut story, D3, C1, 1);
        advanced(&mut story, D3, U2, 1);
        let violation = single(receipts(&story), Invariant::R3ReadAfterDisplay);
        assert_eq!(violation.witness, vec![tick]);
        assert!(
            violation
                .explanation
                .contains("device-1 showed u2 read c1 up to #1, but no device of u2 had displayed"),
            "{violation:?}"
        );
    }

    #[test]
    fn r3_a_read_tick_shown_after_another_device_of_the_reader_displayed_passes() {
        // u1 reads on d1; d2 (u1's other device) and d3 show u1's watermark afterwards.
        let mut story = Story::one_to_one();
        story.message(D3, C1, m(1));
        marked(&mut story, D1, C1, 1);
        advanced(&mut story, D1, U1, 1);
        seen(&mut story, D2, U1, 1);
        seen(&mut story, D3, U1, 1);
        assert_eq!(receipts(&story), vec![]);
    }

    /// A group of u1, u2 and u3 (added at #1); u1 sends #2 on d1.
    fn group_message() -> Story {
        let mut story = Story::team();
        story.add(C1, D1, U3);
        story.deliver(C1, 1);
        story.message(D1, C1, m(1));
        story
    }

    #[test]
    fn r4_read_counts_shown_to_every_sender_device_pass() {
        let mut story = group_message();
        advanced(&mut story, D3, U2, 2);
        count(&mut story, D1, 2, 1);
        advanced(&mut story, D4, U3, 2);
        // A second device of u3 reads too: u3 is still one reader.
        advanced(&mut story, D5, U3, 2);
        count(&mut story, D1, 2, 2);
        count(&mut story, D2, 2, 2);
        story.finish();
        let violations: Vec<_> = receipts(&story)
            .into_iter()
            .filter(|v| v.invariant != Invariant::R1WatermarkMonotonic)
            .collect();
        assert_eq!(violations, vec![]);
    }

    fn readers(story: &mut Story, seq: u64, readers: &[UserId], unread: &[UserId]) -> usize {
        story.device(
            D1,
            Event::ReadersSeen {
                conv: C1,
                seq: Seq(seq),
                readers: readers.to_vec(),
                unread: unread.to_vec(),
            },
        )
    }

    #[test]
    fn r4_reader_lists_name_readers_and_the_unread_members() {
        let mut story = group_message();
        advanced(&mut story, D3, U2, 2);
        readers(&mut story, 2, &[U2], &[U3]);
        assert_eq!(receipts(&story), vec![]);

        let early = readers(&mut story, 2, &[U2, U3], &[]);
        let violation = single(receipts(&story), Invariant::R4GroupReadCount);
        assert_eq!(violation.witness, vec![early]);
        assert!(
            violation.explanation.contains("listed u3 as a reader"),
            "{violation:?}"
        );
    }

    #[test]
    fn r4_a_reader_list_missing_a_member_fires() {
        let mut story = group_message();
        readers(&mut story, 2, &[], &[U2]);
        let violation = single(receipts(&story), Invariant::R4GroupReadCount);
        assert!(
            violation.explanation.contains("names 1 user(s)"),
            "{violation:?}"
        );
        assert!(
            violation.explanation.contains("but 2 members"),
            "{violation:?}"
        );
    }

    #[test]
    fn r4_a_count_above_the_readers_fires() {
        let mut story = group_message();
        advanced(&mut story, D4, U3, 2);
        // The same user read on a second device, and was counted again.
        let double = count(&mut story, D1, 2, 2);
        let violation = single(receipts(&story), Invariant::R4GroupReadCount);
        assert_eq!(violation.witness, vec![double]);
        assert!(
            violation.explanation.contains("only 1 member (its sender"),
            "{violation:?}"
        );
    }

    #[test]
    fn r4_a_count_shown_again_or_lower_fires() {
        let mut story = group_message();
        advanced(&mut story, D3, U2, 2);
        advanced(&mut story, D4, U3, 2);
        let first = count(&mut story, D1, 2, 1);
        count(&mut story, D2, 2, 2); // another device: its own count
        let again = count(&mut story, D1, 2, 1);
        let risen = count(&mut story, D1, 2, 2);
        let lower = count(&mut story, D1, 2, 1);
        let violations = receipts(&story);
        let r4: Vec<_> = violations
            .iter()
            .filter(|v| v.invariant == Invariant::R4GroupReadCount)
            .collect();
        assert_eq!(r4.len(), 2, "{violations:?}");
        assert_eq!(r4[0].witness, vec![first, again]);
        assert_eq!(
            r4[0].explanation,
            "device-1's read count of c1 #2 was shown again: 1, then 1."
        );
        assert_eq!(r4[1].witness, vec![risen, lower]);
        assert!(
            r4[1].explanation.contains("went back: 2, then 1"),
            "{:?}",
            r4[1]
        );
    }

    #[test]
    fn r4_a_sender_device_left_with_a_stale_count_fires_after_the_quiet_period() {
        let mut story = group_message();
        advanced(&mut story, D3, U2, 2);
        count(&mut story, D1, 2, 1);
        story.finish();
        let violation = single(receipts(&story), Invariant::R4GroupReadCount);
        assert!(
            violation
                .explanation
                .contains("device-2 shows a read count of 0"),
            "{violation:?}"
        );
    }
}
