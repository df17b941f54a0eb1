//! What several checkers need from a history, gathered in one pass so that no checker scans the
//! history again to answer "who is this device's user", "what was committed at c1 #4" or "what
//! did device-3 show in c1, in order" or "which seqs of c1 may u3 see". The index holds record
//! indices and small copyable keys, never message bodies: a checker that needs a body reads it
//! from the record. Building it is O(n log n) in the length of the history.
//!
//! The file also holds [`Findings`], the violation collector every checker reports through (it
//! caps each invariant so a broken run stays readable), and, for tests, the history builder the
//! checkers' tests share.

use super::periods::{self, Periods};
use super::{Invariant, Violation};
use crate::{Entry, HarnessEvent, History, Node, TimelineEntry, Topology};
use imsim_model::{ClientMsgId, ClientSeq, ConvId, DeviceId, Event, MembershipChange, Seq, UserId};
use std::collections::BTreeMap;
use std::fmt;
use std::ops::Bound;

/// How many violations of one invariant a checker reports; beyond that it only counts them.
/// One broken mechanism usually breaks the same invariant many times, and twenty examples are
/// more than enough to see the pattern.
pub const VIOLATIONS_PER_INVARIANT_MAX: usize = 20;

/// A message's identity across the whole run: its sender device's own name for it
/// (`client_msg_id` is unique per device, so the pair is unique in the run).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageKey {
    pub sender_device: DeviceId,
    pub client_msg_id: ClientMsgId,
}

impl MessageKey {
    pub fn new(sender_device: DeviceId, client_msg_id: ClientMsgId) -> MessageKey {
        MessageKey {
            sender_device,
            client_msg_id,
        }
    }
}

impl fmt::Display for MessageKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} from {}", self.client_msg_id, self.sender_device)
    }
}

/// One `Committed` event of the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Commit {
    pub record: usize,
    pub conv: ConvId,
    pub seq: Seq,
    pub message: MessageKey,
    pub client_seq: ClientSeq,
    /// The user the server committed it for.
    pub sender_user: UserId,
    pub change: Option<MembershipChange>,
}

/// One `SendRequested` event of a device (the message's sender).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Send {
    pub record: usize,
    pub conv: ConvId,
    pub client_seq: ClientSeq,
    pub change: Option<MembershipChange>,
}

/// One `Displayed` event; the device and conversation are the key it is filed under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shown {
    pub record: usize,
    pub seq: Seq,
    pub message: MessageKey,
}

/// A conversation's `FinalTimeline`, looked up both ways.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FinalTimeline {
    pub record: usize,
    by_seq: BTreeMap<Seq, MessageKey>,
    by_message: BTreeMap<MessageKey, Seq>,
    /// Entries whose seq or message an earlier entry already had, in storage order (D6).
    pub repeated: Vec<(Seq, MessageKey)>,
}

impl FinalTimeline {
    fn new(record: usize, entries: &[TimelineEntry]) -> FinalTimeline {
        let mut timeline = FinalTimeline {
            record,
            ..FinalTimeline::default()
        };
        for entry in entries {
            let message = MessageKey::new(entry.sender_device, entry.client_msg_id);
            // A duplicated seq or message in storage is D6's to judge; keep the first so
            // lookups are deterministic.
            let seq_taken = timeline.by_seq.contains_key(&entry.seq);
            let message_taken = timeline.by_message.contains_key(&message);
            if seq_taken || message_taken {
                timeline.repeated.push((entry.seq, message));
            }
            timeline.by_seq.entry(entry.seq).or_insert(message);
            timeline.by_message.entry(message).or_insert(entry.seq);
        }
        timeline
    }

    /// The message stored at `seq`.
    pub fn at(&self, seq: Seq) -> Option<MessageKey> {
        self.by_seq.get(&seq).copied()
    }

    /// Where `message` is stored.
    pub fn seq_of(&self, message: MessageKey) -> Option<Seq> {
        self.by_message.get(&message).copied()
    }

    /// Every entry, in seq order.
    pub fn entries(&self) -> impl Iterator<Item = (Seq, MessageKey)> + '_ {
        self.by_seq.iter().map(|(seq, message)| (*seq, *message))
    }
}

/// The shared index; see the module documentation.
#[derive(Clone, Debug, Default)]
pub struct HistoryIndex {
    /// The record of the `RunStarted` whose topology this index holds.
    run_started: Option<usize>,
    user_of_device: BTreeMap<DeviceId, UserId>,
    devices_of_user: BTreeMap<UserId, Vec<DeviceId>>,
    /// Each topology conversation's founding members.
    founders: BTreeMap<ConvId, Vec<UserId>>,
    /// The topology's group conversations.
    groups: std::collections::BTreeSet<ConvId>,
    /// Each user's membership periods per conversation; a user who was never a member of a
    /// conversation has no entry.
    periods: BTreeMap<(ConvId, UserId), Periods>,
    /// What a device the topology does not know may see: everything (see `view`).
    founding: Periods,
    /// Per topology conversation: every device of every user who was ever a member, sorted.
    member_devices: BTreeMap<ConvId, Vec<DeviceId>>,
    /// In history order.
    commits: Vec<Commit>,
    /// Positions in `commits`, sorted by (conv, seq, history order).
    commits_by_seq: Vec<usize>,
    /// Position in `commits` of each message's first commit.
    first_commit: BTreeMap<MessageKey, usize>,
    /// Each message's first `SendRequested`.
    sends: BTreeMap<MessageKey, Send>,
    /// Record of each message's first `SendFailed`.
    failures: BTreeMap<MessageKey, usize>,
    /// Each device's displays per conversation, in history order.
    displays: BTreeMap<(ConvId, DeviceId), Vec<Shown>>,
    final_timelines: BTreeMap<ConvId, FinalTimeline>,
    run_ended: Option<usize>,
}

impl HistoryIndex {
    pub fn new(history: &History) -> HistoryIndex {
        let mut index = HistoryIndex::default();
        for (record, line) in history.records.iter().enumerate() {
            match &line.entry {
                Entry::Harness(harness) => index.add_harness(record, harness),
                Entry::Protocol(event) => match line.node {
                    Node::Server => index.add_server(record, event),
                    Node::Device(device) => index.add_device(record, device, event),
                    // The harness reports no protocol events; nothing to learn from one.
                    Node::Harness => {}
                },
            }
        }
        let commits = &index.commits;
        index.commits_by_seq = (0..commits.len()).collect();
        // A stable sort keeps history order among commits that share (conv, seq).
        index
            .commits_by_seq
            .sort_by_key(|&at| (commits[at].conv, commits[at].seq));
        index.add_membership();
        index
    }

    /// Periods from the founders and the committed changes, then each conversation's devices.
    fn add_membership(&mut self) {
        let founders = self
            .founders
            .iter()
            .map(|(conv, users)| (*conv, users.as_slice()));
        let in_seq_order = self.commits_by_seq.iter().filter_map(|at| {
            let commit = &self.commits[*at];
            commit.change.map(|change| periods::ChangeAt {
                record: commit.record,
                conv: commit.conv,
                seq: commit.seq,
                sender_user: commit.sender_user,
                change,
            })
        });
        self.periods = periods::membership(founders, in_seq_order);
        self.founding = Periods::founding();
        for (conv, devices) in self.member_devices.iter_mut() {
            let users = self
                .periods
                .range((*conv, UserId(u32::MIN))..=(*conv, UserId(u32::MAX)));
            devices.extend(users.flat_map(|((_, user), _)| {
                self.devices_of_user
                    .get(user)
                    .map_or(&[][..], Vec::as_slice)
            }));
            devices.sort();
            devices.dedup();
        }
    }

    fn add_harness(&mut self, record: usize, event: &HarnessEvent) {
        match event {
            HarnessEvent::RunStarted(start) if self.run_started.is_none() => {
                let topology = &start.topology;
                self.run_started = Some(record);
                self.add_topology(topology);
            }
            HarnessEvent::FinalTimeline { conv, entries } => {
                self.final_timelines
                    .entry(*conv)
                    .or_insert_with(|| FinalTimeline::new(record, entries));
            }
            HarnessEvent::RunEnded => {
                self.run_ended.get_or_insert(record);
            }
            _ => {}
        }
    }

    fn add_topology(&mut self, topology: &Topology) {
        for spec in &topology.users {
            self.devices_of_user
                .entry(spec.user)
                .or_default()
                .extend(&spec.devices);
            for device in &spec.devices {
                self.user_of_device.insert(*device, spec.user);
            }
        }
        for spec in &topology.conversations {
            if spec.group {
                self.groups.insert(spec.conv);
            }
            self.founders
                .entry(spec.conv)
                .or_default()
                .extend(&spec.members);
            // Filled once the membership changes are known (`add_membership`).
            self.member_devices.entry(spec.conv).or_default();
        }
    }

    fn add_server(&mut self, record: usize, event: &Event) {
        if let Event::Committed {
            conv,
            seq,
            sender_user,
            sender_device,
            client_msg_id,
            client_seq,
            change,
            ..
        } = event
        {
            let message = MessageKey::new(*sender_device, *client_msg_id);
            self.first_commit
                .entry(message)
                .or_insert(self.commits.len());
            self.commits.push(Commit {
                record,
                conv: *conv,
                seq: *seq,
                message,
                client_seq: *client_seq,
                sender_user: *sender_user,
                change: *change,
            });
        }
    }

    fn add_device(&mut self, record: usize, device: DeviceId, event: &Event) {
        match event {
            Event::SendRequested {
                conv,
                client_msg_id,
                client_seq,
                change,
                ..
            } => {
                let send = Send {
                    record,
                    conv: *conv,
                    client_seq: *client_seq,
                    change: *change,
                };
                self.sends
                    .entry(MessageKey::new(device, *client_msg_id))
                    .or_insert(send);
            }
            Event::SendFailed { client_msg_id, .. } => {
                self.failures
                    .entry(MessageKey::new(device, *client_msg_id))
                    .or_insert(record);
            }
            Event::Displayed {
                conv,
                seq,
                sender_device,
                client_msg_id,
                ..
            } => {
                let message = MessageKey::new(*sender_device, *client_msg_id);
                let shown = Shown {
                    record,
                    seq: *seq,
                    message,
                };
                self.displays
                    .entry((*conv, device))
                    .or_default()
                    .push(shown);
            }
            _ => {}
        }
    }

    /// Whether the history has a `RunStarted` with a topology.
    pub fn topology_known(&self) -> bool {
        self.run_started.is_some()
    }

    /// The record of `RunStarted`, which holds the topology.
    pub fn run_started(&self) -> Option<usize> {
        self.run_started
    }

    /// The user a device belongs to, from the topology.
    pub fn user_of(&self, device: DeviceId) -> Option<UserId> {
        self.user_of_device.get(&device).copied()
    }

    /// Whether the topology marks `conv` a group.
    pub fn is_group(&self, conv: ConvId) -> bool {
        self.groups.contains(&conv)
    }

    /// A user's devices, from the topology.
    pub fn devices_of(&self, user: UserId) -> &[DeviceId] {
        self.devices_of_user.get(&user).map_or(&[], Vec::as_slice)
    }

    /// The users of the topology, in id order.
    pub fn users(&self) -> impl Iterator<Item = UserId> + '_ {
        self.devices_of_user.keys().copied()
    }

    /// The conversations of the topology, in id order.
    pub fn conversations(&self) -> impl Iterator<Item = ConvId> + '_ {
        self.member_devices.keys().copied()
    }

    /// Every device of every user who was ever a member of `conv` (a founder, or added later),
    /// sorted.
    pub fn member_devices(&self, conv: ConvId) -> &[DeviceId] {
        self.member_devices.get(&conv).map_or(&[], Vec::as_slice)
    }

    /// `user`'s membership periods in `conv`; none if it was never a member.
    pub fn periods(&self, conv: ConvId, user: UserId) -> &Periods {
        static NEVER: Periods = Periods::never();
        self.periods.get(&(conv, user)).unwrap_or(&NEVER)
    }

    /// What `device` may see of `conv`: its user's periods. A device whose user is unknown (the
    /// history has no topology, or the topology does not list the device) is judged as a member
    /// from seq 1 on, so histories recorded elsewhere keep the rules of a 1:1 conversation;
    /// whether such a device may see anything at all is not for the ordering checkers to say.
    pub fn view(&self, conv: ConvId, device: DeviceId) -> &Periods {
        match self.user_of(device) {
            Some(user) => self.periods(conv, user),
            None => &self.founding,
        }
    }

    /// Every `Committed` event, in history order.
    pub fn commits(&self) -> &[Commit] {
        &self.commits
    }

    /// The commits of `conv` at `seq`, in history order (more than one only if O1 is broken).
    pub fn commits_at(&self, conv: ConvId, seq: Seq) -> impl Iterator<Item = &Commit> + '_ {
        let key = |at: &usize| (self.commits[*at].conv, self.commits[*at].seq);
        let start = self
            .commits_by_seq
            .partition_point(|at| key(at) < (conv, seq));
        self.commits_by_seq[start..]
            .iter()
            .take_while(move |at| key(at) == (conv, seq))
            .map(|at| &self.commits[*at])
    }

    /// The commits of `conv` sorted by seq (history order among equal seqs).
    pub fn commits_of(&self, conv: ConvId) -> impl Iterator<Item = &Commit> + '_ {
        let start = self
            .commits_by_seq
            .partition_point(|at| self.commits[*at].conv < conv);
        self.commits_by_seq[start..]
            .iter()
            .map(|at| &self.commits[*at])
            .take_while(move |commit| commit.conv == conv)
    }

    /// The first commit of `message`.
    pub fn first_commit(&self, message: MessageKey) -> Option<&Commit> {
        self.first_commit.get(&message).map(|at| &self.commits[*at])
    }

    /// The first `SendRequested` of `message`.
    pub fn send(&self, message: MessageKey) -> Option<&Send> {
        self.sends.get(&message)
    }

    /// The record of the first `SendFailed` of `message`.
    pub fn failure(&self, message: MessageKey) -> Option<usize> {
        self.failures.get(&message).copied()
    }

    /// Every device's displays, per (conversation, device), each in history order.
    pub fn displays(&self) -> impl Iterator<Item = (ConvId, DeviceId, &[Shown])> + '_ {
        self.displays
            .iter()
            .map(|((conv, device), shown)| (*conv, *device, shown.as_slice()))
    }

    /// The displays in `conv`, per device.
    pub fn displays_in(&self, conv: ConvId) -> impl Iterator<Item = (DeviceId, &[Shown])> + '_ {
        let from = (conv, DeviceId(u32::MIN));
        let to = (conv, DeviceId(u32::MAX));
        self.displays
            .range((Bound::Included(from), Bound::Included(to)))
            .map(|((_, device), shown)| (*device, shown.as_slice()))
    }

    /// What `device` displayed in `conv`, in history order.
    pub fn displays_of(&self, conv: ConvId, device: DeviceId) -> &[Shown] {
        self.displays
            .get(&(conv, device))
            .map_or(&[], Vec::as_slice)
    }

    /// The final durable timeline of `conv`, if the history got that far.
    pub fn final_timeline(&self, conv: ConvId) -> Option<&FinalTimeline> {
        self.final_timelines.get(&conv)
    }

    /// The record of `RunEnded`; `None` for an incomplete history.
    pub fn run_ended(&self) -> Option<usize> {
        self.run_ended
    }
}

/// The protocol event of a record, for checkers that need a field the index does not keep.
pub(super) fn event_at(history: &History, record: usize) -> Option<&Event> {
    match &history.records.get(record)?.entry {
        Entry::Protocol(event) => Some(event),
        Entry::Harness(_) => None,
    }
}

/// How a device is named in explanations (`device-3`), as in the history's `node` field.
pub(super) fn device_name(device: DeviceId) -> Node {
    Node::Device(device)
}

/// Collects violations, at most [`VIOLATIONS_PER_INVARIANT_MAX`] per invariant; the last one
/// reported says how many more were found.
#[derive(Debug, Default)]
pub(super) struct Findings {
    violations: Vec<Violation>,
    found: BTreeMap<Invariant, usize>,
}

impl Findings {
    pub(super) fn new() -> Findings {
        Findings::default()
    }

    /// Whether `invariant` has reached its cap (a checker whose detection is expensive may stop).
    pub(super) fn is_full(&self, invariant: Invariant) -> bool {
        self.found.get(&invariant).copied().unwrap_or(0) >= VIOLATIONS_PER_INVARIANT_MAX
    }

    /// Reports a violation. `describe` returns the explanation and the witness records; it only
    /// runs below the cap, so a flood costs a counter increment per violation.
    pub(super) fn report(
        &mut self,
        invariant: Invariant,
        describe: impl FnOnce() -> (String, Vec<usize>),
    ) {
        let full = self.is_full(invariant);
        *self.found.entry(invariant).or_insert(0) += 1;
        if full {
            return;
        }
        let (explanation, mut witness) = describe();
        witness.sort_unstable();
        witness.dedup();
        self.violations.push(Violation {
            invariant,
            explanation,
            witness,
        });
    }

    pub(super) fn into_violations(mut self) -> Vec<Violation> {
        for (invariant, found) in &self.found {
            let more = found.saturating_sub(VIOLATIONS_PER_INVARIANT_MAX);
            let last = self
                .violations
                .iter_mut()
                .rev()
                .find(|violation| violation.invariant == *invariant);
            if let (true, Some(last)) = (more > 0, last) {
                last.explanation.push_str(&format!(
                    " ({more} more {} violations not shown.)",
                    invariant.code()
                ));
            }
        }
        self.violations
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::*;

    #[test]
    fn member_devices_come_from_the_topology() {
        let story = Story::group();
        let index = HistoryIndex::new(story.history());
        assert!(index.topology_known());
        assert_eq!(index.member_devices(C1), &[D1, D2, D3, D4, D5]);
        assert_eq!(index.member_devices(C2), &[D1, D2, D4, D5]);
        assert_eq!(index.member_devices(ConvId(9)), &[] as &[DeviceId]);
        assert_eq!(index.user_of(D5), Some(U3));
        assert_eq!(index.conversations().collect::<Vec<_>>(), vec![C1, C2]);
    }

    #[test]
    fn commits_are_found_by_seq_and_by_message() {
        let mut story = Story::one_to_one();
        story.send(D1, C1, m(1));
        story.send(D3, C1, m(1));
        let second = story.commit_at(C1, 2, D3, m(1));
        let first = story.commit_at(C1, 1, D1, m(1));
        let again = story.commit_at(C1, 2, D1, m(1));
        let index = HistoryIndex::new(story.history());

        let at_two: Vec<usize> = index
            .commits_at(C1, Seq(2))
            .map(|commit| commit.record)
            .collect();
        assert_eq!(
            at_two,
            vec![second, again],
            "history order among equal seqs"
        );
        let by_seq: Vec<usize> = index.commits_of(C1).map(|commit| commit.record).collect();
        assert_eq!(by_seq, vec![first, second, again]);
        assert_eq!(index.commits_of(C2).count(), 0);
        let first_of_d1 = index
            .first_commit(MessageKey::new(D1, m(1)))
            .map(|commit| commit.record);
        assert_eq!(first_of_d1, Some(first));
    }

    #[test]
    fn displays_are_filed_per_conversation_and_device() {
        let mut story = Story::group();
        let seq = story.message(D1, C2, m(1));
        let index = HistoryIndex::new(story.history());
        let devices: Vec<DeviceId> = index.displays_in(C2).map(|(device, _)| device).collect();
        assert_eq!(devices, vec![D1, D2, D4, D5]);
        assert_eq!(index.displays_in(C1).count(), 0);
        let shown = index.displays_of(C2, D4);
        assert_eq!(shown.len(), 1);
        assert_eq!(
            (shown[0].seq, shown[0].message),
            (Seq(seq), MessageKey::new(D1, m(1)))
        );
    }

    #[test]
    fn final_timeline_and_run_end_are_indexed() {
        let mut story = Story::one_to_one();
        story.message(D1, C1, m(7));
        let ended = story.finish();
        let index = HistoryIndex::new(story.history());
        let timeline = index.final_timeline(C1).expect("finish writes one");
        assert_eq!(timeline.at(Seq(1)), Some(MessageKey::new(D1, m(7))));
        assert_eq!(timeline.seq_of(MessageKey::new(D1, m(7))), Some(Seq(1)));
        assert_eq!(index.run_ended(), Some(ended));
    }

    #[test]
    fn a_correct_run_with_crashes_breaks_no_invariant() {
        let mut story = Story::group();
        story.message(D1, C1, m(1));
        story.crash(Node::Server);
        story.restart(Node::Server);
        story.message(D4, C1, m(1));
        story.message(D5, C2, m(1));
        story.crash(Node::Device(D3));
        story.restart(Node::Device(D3));
        story.message(D3, C1, m(1));
        story.message(D2, C2, m(1));
        story.finish();
        assert_eq!(crate::check::check_all(story.history()), vec![]);
    }

    #[test]
    fn membership_periods_come_from_founders_and_committed_changes() {
        let story = Story::rejoined();
        let index = HistoryIndex::new(story.history());
        let spans = |user| {
            let periods = index.periods(C1, user).all().iter();
            periods
                .map(|p| (p.join.0, p.leave.map(|l| l.0)))
                .collect::<Vec<_>>()
        };
        assert_eq!(spans(U1), vec![(1, None)]);
        assert_eq!(spans(U3), vec![(2, Some(4)), (6, None)]);
        assert_eq!(spans(U4), vec![]);
        let u3 = index.periods(C1, U3).all();
        assert_eq!(u3[0].left_by, Some(story.commit_record(C1, 4)));
        assert_eq!(u3[1].joined_by, Some(story.commit_record(C1, 6)));
        assert_eq!(index.member_devices(C1), &[D1, D2, D3, D4, D5]);
        assert!(index.view(C1, D4).visible(Seq(4)) && !index.view(C1, D5).visible(Seq(5)));
        assert!(
            index.view(C1, DeviceId(99)).visible(Seq(5)),
            "unknown: judged as a founder"
        );
    }

    #[test]
    fn a_group_with_churn_and_a_rejoin_breaks_no_invariant() {
        let mut story = Story::rejoined();
        for seq in 6..=8 {
            story.deliver_to(C1, seq, &[D5]);
        }
        story.add(C1, D4, U4); // added by a re-added member
        story.deliver(C1, 9);
        story.leave(C1, D5); // u3 sees its own leaving
        story.deliver(C1, 10);
        story.message(D6, C1, m(1));
        story.finish();
        assert_eq!(crate::check::check_all(story.history()), vec![]);
    }

    #[test]
    fn a_skipped_entry_in_a_rejoined_period_breaks_o2_d3_d2_and_m1() {
        let mut story = Story::rejoined();
        story.display(D5, C1, 6);
        story.display(D5, C1, 8); // #7 never shown
        story.cursor(D5, C1, 8);
        story.finish();
        let violations = crate::check::check_all(story.history());
        let found: Vec<Invariant> = violations.iter().map(|v| v.invariant).collect();
        assert_eq!(
            found,
            vec![
                Invariant::O2DisplayOrder,
                Invariant::D3CursorContiguous,
                Invariant::D2EventualDelivery,
                // d5 disagrees with its sibling d4 (and the server) at #7.
                Invariant::M1DevicesConverge,
            ],
            "{violations:#?}"
        );
    }

    #[test]
    fn findings_are_capped_per_invariant_and_say_how_many_were_left_out() {
        let mut findings = Findings::new();
        for record in 0..VIOLATIONS_PER_INVARIANT_MAX + 5 {
            findings.report(Invariant::O2DisplayOrder, || {
                (format!("gap {record}."), vec![record, 0])
            });
        }
        findings.report(Invariant::E1NoDuplicateDisplay, || {
            ("twice.".to_string(), vec![3])
        });
        let violations = findings.into_violations();
        assert_eq!(violations.len(), VIOLATIONS_PER_INVARIANT_MAX + 1);
        assert_eq!(
            violations[0].witness,
            vec![0],
            "witness sorted and deduplicated"
        );
        let last_o2 = &violations[VIOLATIONS_PER_INVARIANT_MAX - 1];
        assert_eq!(
            last_o2.explanation,
            "gap 19. (5 more O2 violations not shown.)"
        );
        assert_eq!(
            violations[VIOLATIONS_PER_INVARIANT_MAX].explanation,
            "twice."
        );
    }
}
