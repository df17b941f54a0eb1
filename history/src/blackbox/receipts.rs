//! Receipts and read markers judged from outside (R1–R3): a displayed marker only after the
//! reader displayed the message, a receipt only after a device of the reader received it, and
//! read markers that never move back in archive order.

use super::format::MarkerKind;
use super::index::Index;
use super::verdict::{finding, Verdict};
use crate::check::Invariant;
use std::collections::HashMap;

pub fn judge_markers(index: &Index, verdict: &mut Verdict) {
    if index.markers_sent.is_empty() && index.markers_received.is_empty() {
        for name in [
            Invariant::R1WatermarkMonotonic,
            Invariant::R2ReadLeDelivered,
            Invariant::R3ReadAfterDisplay,
        ] {
            verdict.not_judged.push((
                name,
                "nothing to judge: no read markers or receipts in this history".to_string(),
            ));
        }
        return;
    }
    read_after_display(index, verdict);
    receipt_after_receive(index, verdict);
    watermark_monotonic(index, verdict);
}

/// R3: a displayed marker a client sends, or one that arrives from a user, refers to a
/// message that client (or some device of that user) displayed earlier in the history.
fn read_after_display(index: &Index, verdict: &mut Verdict) {
    let displayed_before =
        |client: Option<&str>, user: &str, key: &super::index::MessageKey, at: usize| {
            index.displays.iter().any(|seen| {
                seen.index < at
                    && &seen.key == key
                    && client.map_or(index.user_of(&seen.client) == user, |client| {
                        seen.client == client
                    })
            })
        };
    let mut checked = 0;
    for (seen, kind) in index.markers_sent.iter().zip(&index.marker_kinds_sent) {
        if *kind != MarkerKind::Displayed {
            continue;
        }
        checked += 1;
        if !displayed_before(Some(&seen.client), "", &seen.key, seen.index) {
            verdict.findings.push(finding(
                Invariant::R3ReadAfterDisplay,
                format!(
                    "{} sent a read marker for {} of {} before displaying it",
                    seen.client, seen.key.2, seen.key.1
                ),
                vec![seen.index],
            ));
        }
    }
    for marker in index
        .markers_received
        .iter()
        .filter(|marker| marker.kind == MarkerKind::Displayed)
    {
        checked += 1;
        if !displayed_before(None, &marker.from, &marker.key, marker.index) {
            verdict.findings.push(finding(
                Invariant::R3ReadAfterDisplay,
                format!(
                    "{} got a read marker from {} for {}, which no device of {} had displayed",
                    marker.client, marker.from, marker.key.2, marker.from
                ),
                vec![marker.index],
            ));
        }
    }
    verdict.judged.push((
        Invariant::R3ReadAfterDisplay,
        format!("{checked} read markers sent or received"),
    ));
}

/// R2 (outside view): a delivery receipt from a user arrives only after a device of that user
/// received the message.
fn receipt_after_receive(index: &Index, verdict: &mut Verdict) {
    let mut checked = 0;
    for marker in &index.markers_received {
        checked += 1;
        let received = index.received.iter().chain(&index.displays).any(|seen| {
            seen.index < marker.index
                && seen.key == marker.key
                && index.user_of(&seen.client) == marker.from
        });
        if !received {
            verdict.findings.push(finding(
                Invariant::R2ReadLeDelivered,
                format!(
                    "{} got a {:?} marker from {} for {}, which no device of {} had received",
                    marker.client, marker.kind, marker.from, marker.key.2, marker.from
                )
                .to_lowercase(),
                vec![marker.index],
            ));
        }
    }
    verdict.judged.push((
        Invariant::R2ReadLeDelivered,
        format!("{checked} receipts and markers received"),
    ));
}

/// R1: the read markers one client sees from one user in one conversation never point at an
/// earlier message (in that client's archive) than the one before (XEP-0333: a marker means
/// everything up to that message was read).
fn watermark_monotonic(index: &Index, verdict: &mut Verdict) {
    let mut last: HashMap<(&str, &str, &str), (usize, usize)> = HashMap::new();
    let mut checked = 0;
    for marker in index
        .markers_received
        .iter()
        .filter(|marker| marker.kind == MarkerKind::Displayed)
    {
        let Some(read) = index.archive_for(&marker.client, &marker.key.0) else {
            continue;
        };
        let Some(&position) = read.positions().get(&marker.key) else {
            continue;
        };
        checked += 1;
        let slot = (
            marker.client.as_str(),
            marker.from.as_str(),
            marker.key.0.as_str(),
        );
        if let Some(&(previous, previous_index)) = last.get(&slot) {
            if position < previous {
                verdict.findings.push(finding(Invariant::R1WatermarkMonotonic,
                    format!("{}'s read marker seen by {} in {} went back from archive position {previous} to {position}", marker.from, marker.client, marker.key.0),
                    vec![previous_index, marker.index]));
            }
        }
        last.insert(slot, (position, marker.index));
    }
    verdict.judged.push((
        Invariant::R1WatermarkMonotonic,
        format!("{checked} read markers against archive order"),
    ));
}
