//! Read receipt invariants (DESIGN.md §6):
//! - R1 watermark-monotonic: a user's read watermark never goes back, at the server
//!   (`read_advanced`) or on any device that shows it (`read_seen`).
//! - R2 read-le-delivered: read ≤ received ≤ committed. A device marks read only what it
//!   received; the server records and devices show only watermarks within the committed timeline.
//! - R3 read-after-display: a device marks read only what it displayed, and the server records a
//!   read of seq s only after a device of that user displayed s (or later).
//! - R4 group-read-count: a group message's read count is the number of members at its seq, its
//!   sender excluded, whose watermark covers it. What a sender's device shows never exceeds that
//!   count, and after the quiet period every device of the sender shows it exactly.

use super::index::{device_name, Findings};
use super::{HistoryIndex, Invariant, Violation};
use crate::history::{History, Node};
use imsim_model::{ConvId, DeviceId, Event, Seq, UserId};
use std::collections::{BTreeMap, BTreeSet};

pub(super) fn check(history: &History, index: &HistoryIndex) -> Vec<Violation> {
    let mut findings = Findings::new();
    let groups: BTreeSet<ConvId> = history
        .topology()
        .map(|t| {
            t.conversations
                .iter()
                .filter(|c| c.group)
                .map(|c| c.conv)
                .collect()
        })
        .unwrap_or_default();
    let mut pass = Pass {
        index,
        groups,
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
    groups: BTreeSet<ConvId>,
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
        let devices = self.index.devices_of(user);
        let displayed = devices
            .iter()
            .filter_map(|d| self.displayed.get(&(conv, *d)))
            .max()
            .copied()
            .unwrap_or_default();
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
        if !self.groups.contains(&conv) {
            return;
        }
        let periods = self.index.periods(conv, user);
        for seq in before.0 + 1..=up_to.0 {
            let seq = Seq(seq);
            let Some(commit) = self.index.commits_at(conv, seq).next() else {
                continue;
            };
            if commit.sender_user != user && periods.visible(seq) {
                self.readers.entry((conv, seq)).or_default().insert(user);
            }
        }
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
                    "{who} showed {readers} readers of {conv} {seq}, but only {truth} members \
                     (its sender excluded) had read it."
                );
                (text, vec![record])
            });
        }
        self.counts_shown
            .insert((device, conv, seq), (readers, record));
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
                            "After the quiet period {who} shows {count} readers of {conv} \
                             {seq}, but {truth} members read it."
                        );
                        (text, vec![witness])
                    });
                }
            }
        }
    }
}
