//! Judging the invariants of DESIGN.md §6 on a black-box history, from the outside only.
//!
//! The server's archive as the final read returned it is the truth: order is archive order,
//! durability is presence in the final read. Each invariant is either judged (with how many
//! facts it looked at), or listed as not judged with the reason — a missing record, nothing
//! of that kind in the history, or a fact no client can observe.

use super::format::{BlackBoxHistory, ConversationKind};
use super::index::{Index, MessageKey};
pub use super::verdict::{finding, Verdict};
use crate::check::Invariant;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Invariants a client can never observe on any black-box history, with the reason.
const NEVER_OBSERVABLE: [(Invariant, &str); 13] = [
    (Invariant::O1SeqMonotonic, "the server hands out no sequence numbers (stanza ids are opaque strings); the final read's archive order is the order"),
    (Invariant::D3CursorContiguous, "a client's sync cursor is internal to it and not recorded"),
    (Invariant::M3CursorMonotonic, "a client's sync cursor is internal to it and not recorded"),
    (Invariant::M4SessionDistinct, "the server's sessions are not recorded; a client sees only its own"),
    (Invariant::G1MemberOnlyDelivery, "membership changes are not part of the black-box profile"),
    (Invariant::G2MemberOnlySend, "membership changes are not part of the black-box profile"),
    (Invariant::R4GroupReadCount, "the server keeps no per-message read counts (markers are per reader)"),
    (Invariant::M2ReadStateConverges, "read state shared between a user's devices is not recorded"),
    (Invariant::P1PresenceConverges, "presence is not recorded in the black-box profile"),
    (Invariant::P2OfflineDetectedInTime, "presence is not recorded in the black-box profile"),
    (Invariant::P3PresenceFanoutBounded, "presence is not recorded in the black-box profile"),
    (Invariant::D5SendResolves, "judged with D4 here: an invoked send must be acked, failed visibly or in the final read"),
    (Invariant::T1DeliveredInTime, "the health of each client's link and session at the server is not observable"),
];

/// Judges every invariant that the history allows.
pub fn judge(history: &BlackBoxHistory) -> Verdict {
    let index = Index::new(history);
    let mut verdict = Verdict::default();
    if index.unknown_records > 0 {
        verdict.notes.push(format!(
            "{} records of types this checker does not know were ignored",
            index.unknown_records
        ));
    }
    no_duplicate_display(&index, &mut verdict);
    no_phantom(&index, &mut verdict);
    if index.final_reads.is_empty() {
        for name in [
            Invariant::O2DisplayOrder,
            Invariant::O3SenderFifo,
            Invariant::O4Agreement,
            Invariant::E2IdempotentCommit,
            Invariant::D1AckedIsDurable,
            Invariant::D2EventualDelivery,
            Invariant::D4NoSilentLoss,
        ] {
            verdict.not_judged.push((
                name,
                "no final_read records: the archive order and content are unknown".to_string(),
            ));
        }
    } else {
        display_order(&index, &mut verdict);
        sender_fifo(&index, &mut verdict);
        agreement(&index, &mut verdict);
        idempotent_commit(&index, &mut verdict);
        acked_is_durable(&index, &mut verdict);
        if index.run_ended {
            eventual_delivery(&index, &mut verdict);
            no_silent_loss(&index, &mut verdict);
        } else {
            for name in [Invariant::D2EventualDelivery, Invariant::D4NoSilentLoss] {
                verdict.not_judged.push((name, "no run_ended record: the history counts as cut short, so liveness is not judged".to_string()));
            }
        }
    }
    super::receipts::judge_markers(&index, &mut verdict);
    if index.final_reads.is_empty() {
        verdict.not_judged.push((
            Invariant::M1DevicesConverge,
            "no final_read records: what the devices should converge to is unknown".to_string(),
        ));
    } else if index.run_ended {
        devices_converge(&index, &mut verdict);
    } else {
        verdict.not_judged.push((
            Invariant::M1DevicesConverge,
            "no run_ended record: liveness is not judged".to_string(),
        ));
    }
    for (name, why) in NEVER_OBSERVABLE {
        verdict.not_judged.push((name, why.to_string()));
    }
    verdict
}

fn show(key: &MessageKey) -> String {
    format!("{} from {} in {}", key.2, key.1, key.0)
}

fn no_duplicate_display(index: &Index, verdict: &mut Verdict) {
    let mut first: HashMap<(&str, &MessageKey), usize> = HashMap::new();
    for seen in &index.displays {
        if let Some(earlier) = first.insert((seen.client.as_str(), &seen.key), seen.index) {
            verdict.findings.push(finding(
                Invariant::E1NoDuplicateDisplay,
                format!("{} displayed {} twice", seen.client, show(&seen.key)),
                vec![earlier, seen.index],
            ));
        }
    }
    verdict.judged.push((
        Invariant::E1NoDuplicateDisplay,
        format!("{} displays", index.displays.len()),
    ));
}

fn no_phantom(index: &Index, verdict: &mut Verdict) {
    let mut checked = 0;
    for seen in &index.displays {
        checked += 1;
        if !index.sends.contains_key(&seen.key) {
            verdict.findings.push(finding(
                Invariant::E3NoPhantom,
                format!(
                    "{} displayed {}, which no client of {} sent",
                    seen.client,
                    show(&seen.key),
                    seen.key.1
                ),
                vec![seen.index],
            ));
        }
    }
    for read in &index.final_reads {
        for entry in &read.entries {
            checked += 1;
            let key = (
                read.conv.clone(),
                entry.sender.clone(),
                entry.msg.clone().unwrap_or_default(),
            );
            match index.sends.get(&key) {
                Some(send) if send.body == entry.body => {}
                Some(send) => verdict.findings.push(finding(Invariant::E3NoPhantom,
                    format!("the archive of {} read by {} has {} with body {:?}, but it was sent as {:?}", read.conv, read.reader, show(&key), entry.body, send.body),
                    vec![send.index, read.index])),
                None => verdict.findings.push(finding(Invariant::E3NoPhantom,
                    format!("the archive of {} read by {} has entry {} ({:?} from {}) that no client sent", read.conv, read.reader, entry.server_id, entry.body, entry.sender),
                    vec![read.index])),
            }
        }
    }
    verdict.judged.push((
        Invariant::E3NoPhantom,
        format!("{checked} displays and archive entries against the sends"),
    ));
}

fn display_order(index: &Index, verdict: &mut Verdict) {
    let mut last: HashMap<(&str, &str), (usize, usize)> = HashMap::new();
    let mut reported: BTreeSet<(&str, &str)> = BTreeSet::new();
    let mut positions_cache: HashMap<usize, HashMap<MessageKey, usize>> = HashMap::new();
    let mut checked = 0;
    for seen in &index.displays {
        let Some(read) = index.archive_for(&seen.client, &seen.key.0) else {
            continue;
        };
        let positions = positions_cache
            .entry(read.index)
            .or_insert_with(|| read.positions());
        let Some(&position) = positions.get(&seen.key) else {
            continue;
        };
        checked += 1;
        let slot = (seen.client.as_str(), seen.key.0.as_str());
        if let Some(&(previous_position, previous_index)) = last.get(&slot) {
            if position < previous_position && reported.insert(slot) {
                verdict.findings.push(finding(Invariant::O2DisplayOrder,
                    format!("{} displayed {} after a message that comes later in the archive of {} read by {} (positions {} then {}); later inversions of this client and conversation are not listed",
                        seen.client, show(&seen.key), read.conv, read.reader, previous_position, position),
                    vec![previous_index, seen.index, read.index]));
            }
        }
        if last
            .get(&slot)
            .is_none_or(|&(previous, _)| position > previous)
        {
            last.insert(slot, (position, seen.index));
        }
    }
    verdict.judged.push((
        Invariant::O2DisplayOrder,
        format!("{checked} displays against archive order"),
    ));
}

fn sender_fifo(index: &Index, verdict: &mut Verdict) {
    let mut checked = 0;
    for ((client, conv), sends) in &index.send_order {
        let user = index.user_of(client);
        for read in index.final_reads.iter().filter(|read| &read.conv == conv) {
            let positions = read.positions();
            let mut latest: Option<(usize, usize, &str)> = None;
            for (at, msg) in sends {
                let Some(&position) = positions.get(&(conv.clone(), user.clone(), msg.clone()))
                else {
                    continue;
                };
                checked += 1;
                if let Some((previous, previous_at, previous_msg)) = latest {
                    if position < previous {
                        verdict.findings.push(finding(Invariant::O3SenderFifo,
                            format!("{client} sent {previous_msg} before {msg} in {conv}, but the archive read by {} stores them the other way round", read.reader),
                            vec![previous_at, *at, read.index]));
                        break;
                    }
                }
                latest = Some((position, *at, msg));
            }
        }
    }
    verdict.judged.push((
        Invariant::O3SenderFifo,
        format!("{checked} archived sends against invocation order"),
    ));
}

fn agreement(index: &Index, verdict: &mut Verdict) {
    let mut by_conv: BTreeMap<&str, Vec<&super::index::FinalRead>> = BTreeMap::new();
    for read in &index.final_reads {
        by_conv.entry(read.conv.as_str()).or_default().push(read);
    }
    let mut pairs = 0;
    for reads in by_conv.values() {
        for (first_at, first) in reads.iter().enumerate() {
            for second in &reads[first_at + 1..] {
                pairs += 1;
                // Each message at its first position in both archives: a stored duplicate is
                // E2's finding, not a disagreement about order.
                let positions = second.positions();
                let mut in_first: Vec<(usize, MessageKey)> = first
                    .positions()
                    .into_iter()
                    .map(|(key, at)| (at, key))
                    .collect();
                in_first.sort();
                let shared: Vec<usize> = in_first
                    .iter()
                    .filter_map(|(_, key)| positions.get(key).copied())
                    .collect();
                if shared.windows(2).any(|pair| pair[1] < pair[0]) {
                    verdict.findings.push(finding(Invariant::O4Agreement,
                        format!("the archives of {} read by {} and by {} order their shared messages differently", first.conv, first.reader, second.reader),
                        vec![first.index, second.index]));
                }
            }
        }
    }
    if pairs == 0 {
        verdict.not_judged.push((
            Invariant::O4Agreement,
            "no conversation was read by two readers".to_string(),
        ));
    } else {
        verdict.judged.push((
            Invariant::O4Agreement,
            format!("{pairs} pairs of archives of one conversation"),
        ));
    }
}

fn idempotent_commit(index: &Index, verdict: &mut Verdict) {
    let mut entries = 0;
    for read in &index.final_reads {
        let mut seen: HashMap<(&str, &str), &str> = HashMap::new();
        for entry in &read.entries {
            entries += 1;
            let Some(msg) = &entry.msg else { continue };
            if let Some(first) = seen.insert(
                (entry.sender.as_str(), msg.as_str()),
                entry.server_id.as_str(),
            ) {
                let key = (read.conv.clone(), entry.sender.clone(), msg.clone());
                let mut witness: Vec<usize> = index
                    .sends
                    .get(&key)
                    .map(|send| send.index)
                    .into_iter()
                    .collect();
                witness.extend(index.retries.get(&key).into_iter().flatten());
                witness.push(read.index);
                verdict.findings.push(finding(Invariant::E2IdempotentCommit,
                    format!("the archive of {} read by {} stores {msg} from {} twice (server ids {first} and {})", read.conv, read.reader, entry.sender, entry.server_id),
                    witness));
            }
        }
    }
    verdict.judged.push((
        Invariant::E2IdempotentCommit,
        format!("{entries} archive entries"),
    ));
}

fn acked_is_durable(index: &Index, verdict: &mut Verdict) {
    let mut checked = 0;
    for ack in &index.acks {
        for read in index
            .final_reads
            .iter()
            .filter(|read| read.conv == ack.key.0)
        {
            checked += 1;
            if !read.positions().contains_key(&ack.key) {
                verdict.findings.push(finding(Invariant::D1AckedIsDurable,
                    format!("the server acknowledged {} to {}, but the archive read by {} does not have it", show(&ack.key), ack.client, read.reader),
                    vec![ack.index, read.index]));
            }
        }
    }
    verdict.judged.push((
        Invariant::D1AckedIsDurable,
        format!("{checked} (ack, archive) pairs"),
    ));
}

fn eventual_delivery(index: &Index, verdict: &mut Verdict) {
    let mut checked = 0;
    for read in &index.final_reads {
        let group = index.kind_of_conv.get(&read.conv) == Some(&ConversationKind::Group);
        let readers: Vec<String> = if group {
            index.members.get(&read.conv).cloned().unwrap_or_default()
        } else {
            vec![read.reader.clone()]
        };
        for user in readers {
            for client in index.clients_of(&user) {
                let mut missing = Vec::new();
                for entry in &read.entries {
                    let Some(msg) = &entry.msg else { continue };
                    let key = (read.conv.clone(), entry.sender.clone(), msg.clone());
                    if index
                        .sends
                        .get(&key)
                        .is_some_and(|send| send.client == client)
                    {
                        continue;
                    }
                    checked += 1;
                    if !index
                        .displays
                        .iter()
                        .any(|seen| seen.client == client && seen.key == key)
                    {
                        missing.push(msg.clone());
                    }
                }
                if !missing.is_empty() {
                    verdict.findings.push(finding(Invariant::D2EventualDelivery,
                        format!("{client} never displayed {} message(s) of the archive of {} read by {}: {}", missing.len(), read.conv, read.reader, missing.iter().take(6).cloned().collect::<Vec<_>>().join(", ")),
                        vec![read.index]));
                }
            }
        }
    }
    verdict.judged.push((
        Invariant::D2EventualDelivery,
        format!("{checked} (archived message, member client) pairs"),
    ));
}

fn no_silent_loss(index: &Index, verdict: &mut Verdict) {
    let acked: BTreeSet<&MessageKey> = index.acks.iter().map(|ack| &ack.key).collect();
    let mut archived: BTreeSet<MessageKey> = BTreeSet::new();
    for read in &index.final_reads {
        archived.extend(read.positions().into_keys());
    }
    for (key, send) in &index.sends {
        if !acked.contains(key) && !index.failed.contains_key(key) && !archived.contains(key) {
            verdict.findings.push(finding(
                Invariant::D4NoSilentLoss,
                format!(
                    "{} sent {}: never acknowledged, never shown as failed, not in any archive",
                    send.client,
                    show(key)
                ),
                vec![send.index],
            ));
        }
    }
    verdict.judged.push((
        Invariant::D4NoSilentLoss,
        format!("{} sends", index.sends.len()),
    ));
}

fn devices_converge(index: &Index, verdict: &mut Verdict) {
    let mut users = 0;
    let archived: BTreeSet<MessageKey> = index
        .final_reads
        .iter()
        .flat_map(|read| read.positions().into_keys())
        .collect();
    let all_users: BTreeSet<String> = index.user_of_client.values().cloned().collect();
    for user in all_users {
        let clients = index.clients_of(&user);
        if clients.len() < 2 {
            continue;
        }
        users += 1;
        let views: Vec<BTreeSet<&MessageKey>> = clients
            .iter()
            .map(|client| {
                let shown = index
                    .displays
                    .iter()
                    .filter(|seen| &seen.client == client)
                    .map(|seen| &seen.key);
                let sent = index
                    .sends
                    .iter()
                    .filter(|(_, send)| &send.client == client)
                    .map(|(key, _)| key);
                // Only what the server kept: a send that never reached the archive is D4's.
                shown
                    .chain(sent)
                    .filter(|key| archived.contains(*key))
                    .collect()
            })
            .collect();
        for (at, view) in views.iter().enumerate().skip(1) {
            let differ: Vec<String> = view
                .symmetric_difference(&views[0])
                .take(6)
                .map(|key| show(key))
                .collect();
            if !differ.is_empty() {
                verdict.findings.push(finding(
                    Invariant::M1DevicesConverge,
                    format!(
                        "devices {} and {} of {user} end up showing different messages, e.g. {}",
                        clients[0],
                        clients[at],
                        differ.join("; ")
                    ),
                    Vec::new(),
                ));
            }
        }
    }
    if users == 0 {
        verdict.not_judged.push((
            Invariant::M1DevicesConverge,
            "no user has two devices in this history".to_string(),
        ));
    } else {
        verdict.judged.push((
            Invariant::M1DevicesConverge,
            format!("{users} user(s) with several devices"),
        ));
    }
}

#[cfg(test)]
#[path = "judge_tests.rs"]
mod tests;
