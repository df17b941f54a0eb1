//! Cost: what a run may spend on the network and the disk for the work it did. The repair
//! paths deliver everything in the end, so a bug that only wastes traffic — acks dropped and the
//! push retried, a notice sent to the wrong audience, a pull asked again and again — passes
//! every other invariant. C1 bounds the cost per unit of work:
//!
//! - **C1 within-budget**: message-path packets per delivery, storage writes per committed
//!   entry, notices per delivery, receipt packets per read, (in push mode) presence packets
//!   per status change and (in the queue topology) queue packets per committed entry stay
//!   within the budget the scenario declares (`[budget]`, recorded in `run_started`). The
//!   figures are those of [`crate::stats::RunStats`], read from the driver's `traffic` record; a figure is
//!   judged once the run did enough of its work ([`WORK_MIN`]) for a ratio to mean something.
//!   The write figure has a floor too: every entry of a final timeline is a durable write, so a
//!   driver that counts fewer message writes than those entries undercounts, and the budget
//!   would pass anything. And a ceiling under the records' total: every durable read
//!   (`read_advanced`, each watermark once) is a record that stores no message, so a driver that
//!   counts reads as message writes is caught where the margin would hide it.
//!   In pull mode the presence traffic follows `presence_poll_ms` and the open conversations,
//!   not the status changes, so the presence figure is judged in push mode only.
//! - **C2 fanout-by-size**: a group above `notify_threshold_members` gets notify-then-pull, and
//!   a smaller conversation gets pushes (DESIGN.md's fan-out by group size). Judged where the
//!   size cannot have crossed the threshold during the run, whatever was written and lost: a
//!   group whose founders minus every remove and leave a device asked for are still above it
//!   shows no message by push on any device, and a conversation whose founders plus every add
//!   asked for stay at or below it shows none by a notified pull. Pushing a large group costs
//!   the burst notify-then-pull exists to avoid, and every other invariant passes it.
//! - **C3 login-backs-off**: a device whose login failed (`login_failed`: unanswered within
//!   `login_timeout_ms`, or refused) waits before the next (`login_sent` with `attempt` n > 0)
//!   at least the reconnect backoff of n failures in a row: `reconnect_backoff_initial_ms`,
//!   doubling, capped at `reconnect_backoff_max_ms` (`ProtocolConfig::reconnect_backoff_ms`).
//!   Devices that retry faster hammer a server that is down or overloaded (a reconnect storm,
//!   all its devices at once after a crash), and nothing else notices: the logins fail either
//!   way. The wait may fall short by a tenth of the backoff, for a clock that reads the time
//!   after the client did (a live run's scheduler); a simulated run is exact. Giving a login up
//!   early is the same hammering: one is unanswered (`refused: false`) only once
//!   `login_timeout_ms` passed since it was sent, less the same tenth.
//! - **C4 notified-pull-has-news**: a device pulls on a notice only for news it lacks: a pull
//!   for `notified` asks after a seq below the conversation's highest commit so far. A notice
//!   of news the device already holds (its own message, merged into a round) is answered with
//!   an ack; pulling on it costs a round trip that fetches nothing, inside C1's margin.

use super::index::{device_name, Findings};
use super::{HistoryIndex, Invariant, Violation};
use crate::stats::RunStats;
use crate::{Entry, HarnessEvent, History, Node, RunStart};
use imsim_model::{ConvId, DeviceId, Event, MembershipChange, PresenceMode, PullReason, Seq, Via};
use std::collections::BTreeMap;

/// A ratio is judged only when its denominator (deliveries, committed entries, status changes)
/// reaches this: two deliveries after a dozen logins say nothing about the protocol's cost.
pub const WORK_MIN: u64 = 20;

pub(super) fn check(history: &History, _: &HistoryIndex) -> Vec<Violation> {
    let mut violations = fanout_by_size(history);
    violations.extend(login_backs_off(history));
    violations.extend(notified_pulls_have_news(history));
    let (Some(start), Some(traffic_at)) = (history.run_start(), traffic_record(history)) else {
        return violations;
    };
    let stats = RunStats::of(history);
    violations.extend(writes_counted(history, &stats, traffic_at));
    violations.extend(reads_not_counted_as_messages(history, traffic_at));
    for figure in figures(start, &stats) {
        if figure.work < WORK_MIN || figure.value <= figure.budget {
            continue;
        }
        let busiest = busiest_kinds(&stats, figure.kinds);
        violations.push(Violation {
            invariant: Invariant::C1WithinBudget,
            explanation: format!(
                "{:.2} {} ({} for {} {}), over the budget of {:.2} ([budget] {}){busiest}: \
                 the run spent more than the protocol needs for its work.",
                figure.value,
                figure.what,
                figure.spent,
                figure.work,
                figure.unit,
                figure.budget,
                figure.field,
            ),
            witness: vec![traffic_at],
        });
    }
    violations
}

/// C1's floor under the write figure: every entry of a final timeline is a durable message write,
/// so a traffic record that counts fewer writes than that undercounts, and `writes_per_message`
/// would pass any number of writes.
fn writes_counted(history: &History, stats: &RunStats, traffic_at: usize) -> Option<Violation> {
    let stored: u64 = history
        .records
        .iter()
        .map(|record| match &record.entry {
            Entry::Harness(HarnessEvent::FinalTimeline { entries, .. }) => entries.len() as u64,
            _ => 0,
        })
        .sum();
    (stats.message_writes < stored).then(|| Violation {
        invariant: Invariant::C1WithinBudget,
        explanation: format!(
            "the traffic record counts {} message writes, but the final timelines hold {stored} \
             durable entries, each one written: the driver undercounts the writes, and the \
             writes_per_message budget judges a figure that is too low.",
            stats.message_writes
        ),
        witness: vec![traffic_at],
    })
}

/// C1's ceiling on the write figure under the records' total: each durable read is a record of
/// its own that stores no message, so the records that are not messages number at least the
/// distinct read watermarks made durable. (A restarted server publishes its durable reads
/// again: the same watermarks, counted once.)
fn reads_not_counted_as_messages(history: &History, traffic_at: usize) -> Option<Violation> {
    let Entry::Harness(HarnessEvent::Traffic(traffic)) = &history.records[traffic_at].entry else {
        return None;
    };
    let reads: std::collections::BTreeSet<(ConvId, imsim_model::UserId, Seq)> = history
        .protocol_events()
        .filter_map(|(_, _, event)| match event {
            Event::ReadAdvanced {
                conv, user, up_to, ..
            } => Some((*conv, *user, *up_to)),
            _ => None,
        })
        .collect();
    let others = traffic.synced_writes.saturating_sub(traffic.message_writes);
    (others < reads.len() as u64).then(|| Violation {
        invariant: Invariant::C1WithinBudget,
        explanation: format!(
            "the traffic record counts {} message writes of {} records, so {others} records that \
             store no message, but {} durable reads were published, each a record of its own: \
             the driver counts other records as message writes, and the writes_per_message \
             budget judges a figure that is too high.",
            traffic.message_writes,
            traffic.synced_writes,
            reads.len()
        ),
        witness: vec![traffic_at],
    })
}

/// C2: the fan-out mode each conversation's size allows, where the size stayed on one side of
/// the threshold (see the module's documentation).
fn fanout_by_size(history: &History) -> Vec<Violation> {
    let mut findings = Findings::new();
    let Some(start) = history.run_start() else {
        return findings.into_violations();
    };
    let threshold = start.protocol.notify_threshold_members as usize;
    // Per conversation: (is a group, fewest members it can have had, most).
    let mut sizes: BTreeMap<ConvId, (bool, usize, usize)> = start
        .topology
        .conversations
        .iter()
        .map(|spec| {
            let founders = spec.members.len();
            (spec.conv, (spec.group, founders, founders))
        })
        .collect();
    for (_, record, event) in history.protocol_events() {
        if let (
            Node::Device(_),
            Event::SendRequested {
                conv,
                change: Some(change),
                ..
            },
        ) = (record.node, event)
        {
            if let Some((_, fewest, most)) = sizes.get_mut(conv) {
                match change {
                    MembershipChange::Add(_) => *most += 1,
                    MembershipChange::Remove(_) | MembershipChange::Leave => {
                        *fewest = fewest.saturating_sub(1)
                    }
                }
            }
        }
    }
    for (index, record, event) in history.protocol_events() {
        let (Node::Device(device), Event::Displayed { conv, seq, via, .. }) = (record.node, event)
        else {
            continue;
        };
        let Some(&(group, fewest, most)) = sizes.get(conv) else {
            continue;
        };
        let large = group && fewest > threshold;
        let small = !group || most <= threshold;
        let wrong = match via {
            Some(Via::Push) if large => "by push, though the group had more than",
            Some(Via::Pull(PullReason::Notified)) if small => {
                "by a notice and its pull, though the conversation never had more than"
            }
            _ => continue,
        };
        findings.report(Invariant::C2FanoutBySize, || {
            let text = format!(
                "{conv} {seq} reached {} {wrong} notify_threshold_members ({threshold}) members: \
                 groups above the threshold are notified and pull, smaller conversations are \
                 pushed.",
                device_name(device)
            );
            (text, vec![index])
        });
    }
    findings.into_violations()
}

/// C3: the wait from each failed login to the device's next (see the module's documentation).
fn login_backs_off(history: &History) -> Vec<Violation> {
    let mut findings = Findings::new();
    let Some(start) = history.run_start() else {
        return findings.into_violations();
    };
    let protocol = &start.protocol;
    // Per device: when its last login failed, and that record; when its last login was sent.
    let mut failed: BTreeMap<DeviceId, (u64, usize)> = BTreeMap::new();
    let mut sent: BTreeMap<DeviceId, (u64, usize)> = BTreeMap::new();
    let timeout_ms = protocol.login_timeout_ms;
    for (index, record, event) in history.protocol_events() {
        let Node::Device(device) = record.node else {
            continue;
        };
        match event {
            Event::LoginFailed { refused } => {
                failed.insert(device, (record.t_ms, index));
                let Some((sent_ms, login)) = sent.remove(&device) else {
                    continue;
                };
                let waited_ms = record.t_ms.saturating_sub(sent_ms);
                if !refused && waited_ms < timeout_ms - timeout_ms / 10 {
                    findings.report(Invariant::C3LoginBacksOff, || {
                        let text = format!(
                            "{} gave up a login as unanswered {waited_ms} ms after sending it; \
                             it waits login_timeout_ms ({timeout_ms} ms) for the answer.",
                            device_name(device)
                        );
                        (text, vec![login, index])
                    });
                }
            }
            Event::LoginSent { attempt } => {
                sent.insert(device, (record.t_ms, index));
                let Some((failed_ms, failure)) = failed.remove(&device) else {
                    continue;
                };
                if *attempt == 0 {
                    continue; // a fresh start (going online, an app restart): no wait owed
                }
                let backoff_ms = protocol.reconnect_backoff_ms(*attempt);
                let waited_ms = record.t_ms.saturating_sub(failed_ms);
                if waited_ms < backoff_ms - backoff_ms / 10 {
                    findings.report(Invariant::C3LoginBacksOff, || {
                        let text = format!(
                            "{} sent login attempt {attempt} {waited_ms} ms after its previous \
                             login failed; after {attempt} failed logins in a row it waits at \
                             least {backoff_ms} ms (reconnect_backoff_initial_ms {}, doubling, \
                             reconnect_backoff_max_ms {}).",
                            device_name(device),
                            protocol.reconnect_backoff_initial_ms,
                            protocol.reconnect_backoff_max_ms
                        );
                        (text, vec![failure, index])
                    });
                }
            }
            _ => {}
        }
    }
    findings.into_violations()
}

fn notified_pulls_have_news(history: &History) -> Vec<Violation> {
    let mut findings = Findings::new();
    // Per conversation: the highest seq committed so far, and its record.
    let mut head: BTreeMap<ConvId, (Seq, usize)> = BTreeMap::new();
    for (index, record, event) in history.protocol_events() {
        match (record.node, event) {
            (_, Event::Committed { conv, seq, .. }) => {
                let highest = head.entry(*conv).or_insert((*seq, index));
                if *seq >= highest.0 {
                    *highest = (*seq, index);
                }
            }
            (
                Node::Device(device),
                Event::PullSent {
                    conv,
                    after,
                    reason: PullReason::Notified,
                },
            ) => {
                let (highest, committed) = head.get(conv).copied().unwrap_or((Seq::ZERO, index));
                if *after >= highest {
                    findings.report(Invariant::C4NotifiedPullHasNews, || {
                        let text = format!(
                            "{} pulled {conv} after {after} on a notice, but nothing beyond \
                             {highest} was ever committed there: a notice of news the device \
                             holds is answered with an ack, not a pull.",
                            device_name(device)
                        );
                        (text, vec![committed, index])
                    });
                }
            }
            _ => {}
        }
    }
    findings.into_violations()
}

/// One judged ratio: `spent / work` against `budget`.
struct Figure {
    field: &'static str,
    what: &'static str,
    unit: &'static str,
    value: f64,
    spent: u64,
    work: u64,
    budget: f64,
    /// The packet kinds the figure counts (for the busiest-kinds hint); empty for writes.
    kinds: &'static [&'static str],
}

fn figures(start: &RunStart, stats: &RunStats) -> Vec<Figure> {
    let budget = &start.budget;
    let counts = &stats.counts;
    let packets = &stats.packets;
    // Fan-out write: a copy per user who may see the message (any user may be added).
    let derived = match start.protocol.fanout_write {
        true => start.topology.users.len() as f64 + 2.0,
        false => 2.0,
    };
    let writes_budget = budget.writes_per_message.unwrap_or(derived);
    let mut figures = vec![
        Figure {
            field: "packets_per_delivery",
            what: "message-path packets per delivery",
            unit: "deliveries",
            value: stats.packets_per_delivery(),
            spent: packets.message_path(),
            work: counts.delivered,
            budget: budget.packets_per_delivery,
            kinds: &crate::traffic::MESSAGE_PATH,
        },
        Figure {
            field: "writes_per_message",
            what: "message writes per committed entry",
            unit: "committed entries",
            value: stats.writes_per_message(),
            spent: stats.message_writes,
            work: counts.committed,
            budget: writes_budget,
            kinds: &[],
        },
        Figure {
            field: "notices_per_delivery",
            what: "notices per delivery",
            unit: "deliveries",
            value: stats.notices_per_delivery(),
            spent: packets.of_kind("notify"),
            work: counts.delivered,
            budget: budget.notices_per_delivery,
            kinds: &["notify"],
        },
    ];
    figures.push(Figure {
        field: "receipt_packets_per_read",
        what: "receipt packets per read",
        unit: "reads",
        value: stats.receipt_packets_per_read(),
        spent: packets.receipt_path(),
        work: counts.reads,
        budget: budget.receipt_packets_per_read,
        kinds: &crate::traffic::RECEIPT_PATH,
    });
    // Outside the queue topology no queue packet is sent: the figure is 0.
    figures.push(Figure {
        field: "queue_packets_per_message",
        what: "queue packets per committed entry",
        unit: "committed entries",
        value: stats.queue_packets_per_message(),
        spent: packets.queue_path(),
        work: counts.committed,
        budget: budget.queue_packets_per_message,
        kinds: &crate::traffic::QUEUE_PATH,
    });
    if start.protocol.presence == PresenceMode::Push {
        figures.push(Figure {
            field: "presence_packets_per_change",
            what: "presence packets per status change",
            unit: "status changes",
            value: stats.presence_packets_per_change(),
            spent: packets.of_kind("presence") + packets.of_kind("presence_state"),
            work: counts.presence_changes,
            budget: budget.presence_packets_per_change,
            kinds: &["presence", "presence_state"],
        });
    }
    figures
}

/// "; busiest: deliver 600, pull 300" for the figure's packet kinds, most first.
fn busiest_kinds(stats: &RunStats, kinds: &[&str]) -> String {
    let mut counted: Vec<(u64, &str)> = kinds
        .iter()
        .map(|kind| (stats.packets.of_kind(kind), *kind))
        .filter(|(n, _)| *n > 0)
        .collect();
    if counted.len() < 2 {
        return String::new();
    }
    counted.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
    let listed: Vec<String> = counted
        .iter()
        .take(3)
        .map(|(n, kind)| format!("{kind} {n}"))
        .collect();
    format!("; busiest: {}", listed.join(", "))
}

fn traffic_record(history: &History) -> Option<usize> {
    history
        .records
        .iter()
        .rposition(|record| matches!(record.entry, Entry::Harness(HarnessEvent::Traffic(_))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::testkit::*;
    use crate::traffic::{PacketStats, Traffic};

    /// Ends `story` with a traffic record of `kinds` (packets sent per kind) and `writes`
    /// message writes, all the records the storage holds.
    fn finish_with_traffic(story: Story, kinds: &[(&str, u64)], writes: u64) -> Story {
        finish_with_writes(story, kinds, writes, writes)
    }

    /// As `finish_with_traffic`, with `records` in the storage of which `writes` store messages.
    fn finish_with_writes(
        mut story: Story,
        kinds: &[(&str, u64)],
        records: u64,
        writes: u64,
    ) -> Story {
        let mut packets = PacketStats::default();
        for (kind, n) in kinds {
            packets.by_kind.insert(kind.to_string(), *n);
            packets.sent += n;
        }
        let traffic = Traffic {
            packets,
            synced_writes: records,
            message_writes: writes,
        };
        story.harness(HarnessEvent::Traffic(Box::new(traffic)));
        story.finish();
        story
    }

    /// A story in which d1 sends `messages` messages, each displayed on d2 and d3 (two
    /// deliveries), ending with a `traffic` record of `pushes` pushes, a send, a send ack and
    /// two acks per message.
    fn story_with_pushes(messages: u64, pushes: u64) -> Story {
        let mut story = Story::one_to_one();
        for n in 1..=messages {
            story.message(D1, C1, m(n));
        }
        let kinds = [
            ("send", messages),
            ("send_ack", messages),
            ("deliver", pushes),
            ("ack", 2 * messages),
        ];
        finish_with_traffic(story, &kinds, messages)
    }

    #[test]
    fn a_run_within_its_budget_passes() {
        // 180 packets for 60 deliveries: 3 per delivery, the default allows 16.
        let story = story_with_pushes(30, 60);
        assert_eq!(run(&story, check), vec![]);
    }

    #[test]
    fn pushes_retried_without_end_break_the_budget_with_their_figures() {
        // Every push sent 20 times (its acks lost to a bug): 22 packets per delivery.
        let story = story_with_pushes(30, 1_200);
        let violation = single(run(&story, check), Invariant::C1WithinBudget);
        assert!(
            violation.explanation.starts_with(
                "22.00 message-path packets per delivery (1320 for 60 deliveries), over the \
                 budget of 16.00 ([budget] packets_per_delivery); busiest: deliver 1200, ack \
                 60, send 30"
            ),
            "{}",
            violation.explanation
        );
        let witness = &story.history().records[violation.witness[0]];
        assert!(matches!(
            witness.entry,
            Entry::Harness(HarnessEvent::Traffic(_))
        ));
    }

    #[test]
    fn a_traffic_record_that_counts_fewer_writes_than_the_final_timelines_hold_breaks_c1() {
        // 30 entries committed and still in the final timeline; the driver counted 29 writes
        // (a_run_within_its_budget_passes counts exactly 30, the floor).
        let mut story = Story::one_to_one();
        for n in 1..=30 {
            story.message(D1, C1, m(n));
        }
        let story = finish_with_traffic(story, &[("deliver", 60)], 29);
        let violation = single(run(&story, check), Invariant::C1WithinBudget);
        assert!(
            violation.explanation.starts_with(
                "the traffic record counts 29 message writes, but the final timelines hold 30 \
                 durable entries"
            ),
            "{}",
            violation.explanation
        );
        let witness = &story.history().records[violation.witness[0]];
        assert!(matches!(
            witness.entry,
            Entry::Harness(HarnessEvent::Traffic(_))
        ));
    }

    #[test]
    fn a_traffic_record_that_counts_reads_as_message_writes_breaks_c1() {
        // 30 entries and two durable reads of d2's user; the driver counts 32 records.
        let story = |message_writes: u64| {
            let mut story = Story::one_to_one();
            for n in 1..=30 {
                story.message(D1, C1, m(n));
            }
            for up_to in [10, 30] {
                story.server(Event::ReadAdvanced {
                    conv: C1,
                    user: U1,
                    device: D2,
                    up_to: Seq(up_to),
                });
            }
            finish_with_writes(story, &[("deliver", 60)], 32, message_writes)
        };
        assert_eq!(run(&story(30), check), vec![]);
        let violation = single(run(&story(31), check), Invariant::C1WithinBudget);
        assert!(
            violation.explanation.starts_with(
                "the traffic record counts 31 message writes of 32 records, so 1 records that \
                 store no message, but 2 durable reads were published"
            ),
            "{}",
            violation.explanation
        );
    }

    /// A story of 25 status changes and `lists` status lists sent, in `mode`.
    fn presence_story(mode: PresenceMode, lists: u64) -> Story {
        let mut story = Story::one_to_one();
        story.set_protocol(imsim_model::ProtocolConfig {
            presence: mode,
            ..Default::default()
        });
        for n in 0..25 {
            story.server(imsim_model::Event::PresenceChanged {
                user: imsim_model::UserId(1),
                online: n % 2 == 0,
                notified: Vec::new(),
            });
        }
        finish_with_traffic(story, &[("presence_state", lists)], 0)
    }

    #[test]
    fn presence_lists_beyond_the_budget_break_it_in_push_mode_only() {
        // 400 status lists for 25 changes: 16 per change, the default allows 10.5.
        let push = presence_story(PresenceMode::Push, 400);
        let violation = single(run(&push, check), Invariant::C1WithinBudget);
        assert!(
            violation
                .explanation
                .starts_with("16.00 presence packets per status change (400 for 25"),
            "{}",
            violation.explanation
        );
        // In pull mode the same lists answer polls, whose rate the poll interval sets.
        let pull = presence_story(PresenceMode::Pull, 400);
        assert_eq!(run(&pull, check), vec![]);
        // And a push-mode run within the budget passes.
        let quiet = presence_story(PresenceMode::Push, 100);
        assert_eq!(run(&quiet, check), vec![]);
    }

    #[test]
    fn receipt_syncs_asked_on_every_heartbeat_break_the_budget() {
        // 25 reads; a receipt key that never matches makes each heartbeat ask for the whole
        // receipt state: 400 requests and 400 answers.
        let story_with = |syncs: u64| {
            let mut story = Story::one_to_one();
            for n in 1..=25 {
                story.device(
                    D2,
                    imsim_model::Event::ReadMarked {
                        conv: C1,
                        up_to: imsim_model::Seq(n),
                    },
                );
            }
            let kinds = [
                ("read", 25),
                ("receipt_sync_request", syncs),
                ("receipt_state", syncs),
            ];
            finish_with_traffic(story, &kinds, 0)
        };
        let violation = single(run(&story_with(400), check), Invariant::C1WithinBudget);
        assert!(
            violation.explanation.starts_with(
                "33.00 receipt packets per read (825 for 25 reads), over the budget of 12.00 \
                 ([budget] receipt_packets_per_read); busiest: receipt_state 400, \
                 receipt_sync_request 400, read 25"
            ),
            "{}",
            violation.explanation
        );
        // A sync now and then (after a lost update) is what the key is for.
        assert_eq!(run(&story_with(10), check), vec![]);
    }

    #[test]
    fn a_queue_that_redelivers_what_was_stored_breaks_the_budget() {
        // 30 committed entries, each enqueued, acked and reported stored once; the queue
        // delivers each `deliveries` times (an ack it refused, a reordering that stalls it).
        let story_with = |deliveries: u64| {
            let mut story = Story::one_to_one();
            for n in 1..=30 {
                story.message(D1, C1, m(n));
            }
            let kinds = [
                ("enqueue", 30),
                ("queue_deliver", 30 * deliveries),
                ("queue_ack", 30),
                ("stored", 30),
            ];
            finish_with_traffic(story, &kinds, 30)
        };
        let violation = single(run(&story_with(20), check), Invariant::C1WithinBudget);
        assert!(
            violation.explanation.starts_with(
                "23.00 queue packets per committed entry (690 for 30 committed entries), over \
                 the budget of 16.00 ([budget] queue_packets_per_message); busiest: \
                 queue_deliver 600, enqueue 30, queue_ack 30"
            ),
            "{}",
            violation.explanation
        );
        // A redelivery now and then (a consumer crash, a lost ack) is what the queue is for.
        assert_eq!(run(&story_with(2), check), vec![]);
    }

    #[test]
    fn too_little_work_is_not_judged() {
        // 10 deliveries: 125 packets per delivery is start-up noise, not a verdict.
        let story = story_with_pushes(5, 1_200);
        assert_eq!(run(&story, check), vec![]);
    }

    #[test]
    fn a_history_without_traffic_is_not_judged() {
        let mut story = Story::one_to_one();
        for n in 1..=30 {
            story.message(D1, C1, m(n));
        }
        story.finish();
        assert_eq!(run(&story, check), vec![]);
    }

    fn threshold(story: &mut Story, notify_threshold_members: u32) {
        story.set_protocol(imsim_model::ProtocolConfig {
            notify_threshold_members,
            ..Default::default()
        });
    }

    #[test]
    fn c2_a_group_above_the_threshold_all_run_that_is_pushed_fires() {
        // Found by cargo-mutants: `member_count > threshold` as `==` pushes every group above
        // the threshold; pushes are cheaper per delivery in small groups, so C1 stayed quiet.
        let mut story = Story::team();
        threshold(&mut story, 1);
        story.message(D1, C1, m(1));
        story.finish();
        let violations = run(&story, check);
        // The story shows it by push everywhere, the sender's own device too.
        assert_eq!(violations.len(), 3, "{violations:#?}");
        assert!(violations
            .iter()
            .all(|v| v.invariant == Invariant::C2FanoutBySize));
        assert!(
            violations[2]
                .explanation
                .starts_with("c1 #1 reached device-3 by push, though the group had more than"),
            "{}",
            violations[2].explanation
        );
    }

    #[test]
    fn c2_a_group_that_may_have_shrunk_to_the_threshold_is_not_judged() {
        let mut story = Story::team();
        threshold(&mut story, 1);
        story.remove(C1, D1, U2);
        story.message(D1, C1, m(1));
        story.finish();
        assert_eq!(run(&story, check), vec![]);
    }

    #[test]
    fn c2_a_small_conversation_announced_by_a_notice_fires_and_a_pushed_one_passes() {
        let mut story = Story::one_to_one();
        story.message(D1, C1, m(1));
        story.send(D1, C1, m(2));
        story.commit(C1, D1, m(2));
        let notified = story.device(
            D3,
            Event::Displayed {
                conv: C1,
                seq: imsim_model::Seq(2),
                sender_user: U1,
                sender_device: D1,
                client_msg_id: m(2),
                body: body_of(D1, m(2)),
                via: Some(Via::Pull(PullReason::Notified)),
            },
        );
        story.finish();
        let violation = single(run(&story, check), Invariant::C2FanoutBySize);
        assert_eq!(violation.witness, vec![notified]);
        assert!(
            violation.explanation.contains("by a notice and its pull"),
            "{}",
            violation.explanation
        );
    }

    /// D1 fails `failures` logins in a row (the first sent on going online), each next login
    /// sent `waits_ms[n]` after the n-th failure; then a fresh start after going offline and
    /// online again, whose first login follows a failure at once. Returns the story and the
    /// records of each failure and each login.
    fn logins(waits_ms: &[u64]) -> (Story, Vec<usize>, Vec<usize>) {
        let mut story = Story::one_to_one();
        let (mut failures, mut sent) = (Vec::new(), Vec::new());
        sent.push(story.device(D1, Event::LoginSent { attempt: 0 }));
        for (n, wait_ms) in (1..).zip(waits_ms) {
            story.wait(2_000);
            failures.push(story.device(D1, Event::LoginFailed { refused: n == 2 }));
            story.wait(wait_ms - 10); // each record moves the story's clock 10 ms on
            sent.push(story.device(D1, Event::LoginSent { attempt: n }));
        }
        story.wait(2_000);
        story.device(D1, Event::LoginFailed { refused: false });
        story.wait(1);
        story.device(D1, Event::LoginSent { attempt: 0 });
        story.finish();
        (story, failures, sent)
    }

    #[test]
    fn c3_a_login_retried_sooner_than_its_backoff_fires() {
        // cargo-mutants' survivor `backoff_ms * 2` as `backoff_ms + 2`: the wait stays at the
        // initial 250 ms, so the device retries four times a second for as long as the server
        // is down, and every other invariant passes (the logins fail either way).
        let (story, failures, sent) = logins(&[250, 252, 254]);
        let violations = run(&story, check);
        assert_eq!(violations.len(), 2, "{violations:#?}");
        assert!(violations
            .iter()
            .all(|v| v.invariant == Invariant::C3LoginBacksOff));
        assert_eq!(violations[0].witness, vec![failures[1], sent[2]]);
        assert!(
            violations[0].explanation.starts_with(
                "device-1 sent login attempt 2 252 ms after its previous login failed; after 2 \
                 failed logins in a row it waits at least 500 ms"
            ),
            "{}",
            violations[0].explanation
        );
        assert!(violations[1].explanation.contains("at least 1000 ms"));
    }

    #[test]
    fn c3_logins_that_keep_to_the_backoff_pass() {
        // The schedule from going online: 250, 500, 1000, ... capped at 8 s; a fresh start
        // (attempt 0) owes no wait.
        let (story, _, _) = logins(&[250, 500, 1_000, 2_000, 4_000, 8_000, 8_000]);
        assert_eq!(run(&story, check), vec![]);
        // A tenth of the backoff short is still on time (a live clock reads late); more is not.
        let (story, _, _) = logins(&[250, 450]);
        assert_eq!(run(&story, check), vec![]);
        let (story, _, _) = logins(&[250, 449]);
        single(run(&story, check), Invariant::C3LoginBacksOff);
    }
    /// d3 holds c1 #1; d1 commits #2 and d3 is notified of news: it pulls after `first`, then
    /// (its answer in) after `second`.
    fn notified_pulls(first: u64, second: u64) -> Story {
        let mut story = Story::one_to_one();
        story.message(D1, C1, m(1));
        story.send(D1, C1, m(2));
        story.commit(C1, D1, m(2));
        for after in [first, second] {
            story.device(
                D3,
                Event::PullSent {
                    conv: C1,
                    after: Seq(after),
                    reason: PullReason::Notified,
                },
            );
        }
        story.finish();
        story
    }

    #[test]
    fn c4_pulls_on_notices_of_news_beyond_the_cursor_pass() {
        assert_eq!(run(&notified_pulls(1, 1), check), vec![]);
    }

    #[test]
    fn c4_a_pull_on_a_notice_of_news_the_device_holds_fires() {
        // Found by cargo-mutants: a device that pulls on every notice (`client/mod.rs:367`,
        // the guard `head > cursor` as `>=` or `true`) fetches nothing for its own messages.
        let violation = single(
            run(&notified_pulls(1, 2), check),
            Invariant::C4NotifiedPullHasNews,
        );
        assert!(
            violation
                .explanation
                .starts_with("device-3 pulled c1 after #2 on a notice, but nothing beyond #2"),
            "{}",
            violation.explanation
        );
        assert_eq!(violation.witness.len(), 2);
    }
    #[test]
    fn c3_a_login_given_up_before_its_timeout_fires_and_a_refused_one_passes() {
        // A client that gives a login up before its timeout, then keeps to the backoff. Written
        // for cargo-mutants' `now >= deadline` as `true` in `Client::link_timeouts`, which turned
        // out equivalent (mutants/equivalent.txt): a logging-in model client arms no other timer.
        let timeout_ms = imsim_model::ProtocolConfig::default().login_timeout_ms;
        let give_up = |refused: bool, after_ms: u64| {
            let mut story = Story::one_to_one();
            let login = story.device(D1, Event::LoginSent { attempt: 0 });
            story.wait(after_ms - 10); // the record itself moves the clock 10 ms on
            let failed = story.device(D1, Event::LoginFailed { refused });
            story.finish();
            (run(&story, check), vec![login, failed])
        };
        let (violations, witness) = give_up(false, 500);
        let violation = single(violations, Invariant::C3LoginBacksOff);
        assert!(
            violation
                .explanation
                .starts_with("device-1 gave up a login as unanswered 500 ms after sending it"),
            "{}",
            violation.explanation
        );
        assert_eq!(violation.witness, witness);
        assert_eq!(give_up(true, 500).0, vec![]);
        assert_eq!(give_up(false, timeout_ms - timeout_ms / 10).0, vec![]);
    }
}
