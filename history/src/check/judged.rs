//! What a history lets the checkers judge. A passing verdict on a history that recorded no reads
//! says nothing about receipts; a history without presence records cannot be judged on
//! presence at all. For each invariant: judged (the history has what it reads), vacuous (judged,
//! but the history has none of the events it is about), or not judged, with the reason.

use super::{Class, Family, Invariant};
use crate::{Entry, HarnessEvent, History, Node};
use imsim_model::Event;

/// How an invariant fared on one history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Judgement {
    Judged,
    /// Judged, but there was nothing for it to judge: the reason names what is absent.
    Vacuous(&'static str),
    /// Not judged: the history lacks what the checker needs.
    NotJudged(&'static str),
}

/// What a history holds, as far as the judgements need.
#[derive(Default)]
struct Holds {
    run_started: bool,
    run_ended: bool,
    traffic: bool,
    messages: bool,
    membership_changes: bool,
    reads: bool,
    group_reads: bool,
    presence: bool,
    logins: bool,
    sessions: bool,
    pushes_abandoned: bool,
    logins_failed: bool,
    pulls: bool,
    notified_pulls: bool,
    pulled_displays: bool,
}

impl Holds {
    fn of(history: &History) -> Holds {
        let mut holds = Holds::default();
        for record in &history.records {
            match (&record.node, &record.entry) {
                (_, Entry::Harness(HarnessEvent::RunStarted(_))) => holds.run_started = true,
                (_, Entry::Harness(HarnessEvent::RunEnded)) => holds.run_ended = true,
                (_, Entry::Harness(HarnessEvent::Traffic(_))) => holds.traffic = true,
                (_, Entry::Harness(_)) => {}
                (node, Entry::Protocol(event)) => holds.note(*node, event),
            }
        }
        holds
    }

    fn note(&mut self, node: Node, event: &Event) {
        match event {
            Event::Committed { change, .. } => {
                self.messages = true;
                self.membership_changes |= change.is_some();
            }
            Event::Displayed { via, .. } => {
                self.messages = true;
                self.pulled_displays |= matches!(via, Some(imsim_model::Via::Pull(_)));
            }
            Event::SendRequested { .. } => self.messages = true,
            Event::PullSent { reason, .. } => {
                self.pulls = true;
                self.notified_pulls |= *reason == imsim_model::PullReason::Notified;
            }
            Event::ReadMarked { .. } | Event::ReadSeen { .. } | Event::ReadAdvanced { .. } => {
                self.reads = true
            }
            Event::ReadCountSeen { .. } | Event::ReadersSeen { .. } => {
                self.reads = true;
                self.group_reads = true;
            }
            Event::PresenceChanged { .. } => self.presence = true,
            Event::LoggedIn { .. } if matches!(node, Node::Device(_)) => self.logins = true,
            Event::SessionOpened { .. } => self.sessions = true,
            Event::LoginFailed { .. } => self.logins_failed = true,
            Event::PushAbandoned { seq, .. } if *seq != imsim_model::Seq::ZERO => {
                self.pushes_abandoned = true
            }
            _ => {}
        }
    }
}

/// Every invariant with how it fares on `history`, in table order.
pub fn judgements(history: &History) -> Vec<(Invariant, Judgement)> {
    let holds = Holds::of(history);
    Invariant::ALL
        .iter()
        .map(|invariant| (*invariant, judge(&holds, *invariant)))
        .collect()
}

fn judge(holds: &Holds, invariant: Invariant) -> Judgement {
    use Judgement::{Judged, NotJudged, Vacuous};
    if invariant.class() == Class::Liveness && !holds.run_ended {
        return NotJudged("no run_ended record: the history may be cut short");
    }
    match invariant {
        Invariant::D2EventualDelivery if !holds.run_started => {
            NotJudged("no run_started record: the conversations' members are unknown")
        }
        Invariant::T1DeliveredInTime if !holds.run_started => {
            NotJudged("no run_started record: the protocol settings that give the bound")
        }
        Invariant::T1DeliveredInTime if !(holds.logins && holds.sessions) => {
            NotJudged("no logged_in and session_opened records: nothing shows a device online")
        }
        Invariant::T5PushKeptToSchedule if !holds.run_started => {
            NotJudged("no run_started record: the protocol settings that give the schedule")
        }
        Invariant::T5PushKeptToSchedule if !holds.pushes_abandoned => {
            Vacuous("no push of a message was given up")
        }
        Invariant::T6PathRecorded if !holds.pulls => {
            NotJudged("no pull_sent record: the history does not record the devices' pulls")
        }
        Invariant::T6PathRecorded if !holds.pulled_displays => {
            Vacuous("no display was brought by a pull")
        }
        Invariant::C4NotifiedPullHasNews if !holds.pulls => {
            NotJudged("no pull_sent record: the history does not record the devices' pulls")
        }
        Invariant::C4NotifiedPullHasNews if !holds.notified_pulls => Vacuous("no pull on a notice"),
        Invariant::C2FanoutBySize if !holds.run_started => {
            NotJudged("no run_started record: the threshold and the conversations' founders")
        }
        Invariant::C3LoginBacksOff if !holds.run_started => {
            NotJudged("no run_started record: the protocol settings that give the backoff")
        }
        Invariant::C3LoginBacksOff if !holds.logins_failed => Vacuous("no login failed"),
        Invariant::C1WithinBudget if !(holds.run_started && holds.traffic) => {
            NotJudged("no run_started and traffic records: the budget and the run's packet counts")
        }
        Invariant::P1PresenceConverges | Invariant::P2OfflineDetectedInTime if !holds.presence => {
            NotJudged("no presence_changed record: the history does not record presence")
        }
        Invariant::P3PresenceFanoutBounded if !holds.presence => {
            Vacuous("no presence_changed record")
        }
        Invariant::R4GroupReadCount if !holds.group_reads => {
            Vacuous("no read_count_seen or readers_seen record")
        }
        Invariant::M2ReadStateConverges if !holds.reads => Vacuous("no read records"),
        Invariant::M4SessionDistinct if !holds.sessions => {
            NotJudged("no session_opened record: the history does not record the server's sessions")
        }
        _ if invariant.family() == Family::Receipts && !holds.reads => Vacuous("no read records"),
        Invariant::G1MemberOnlyDelivery | Invariant::G2MemberOnlySend
            if !holds.membership_changes =>
        {
            Vacuous("no membership change was committed")
        }
        _ if !holds.messages => Vacuous("no message was sent, committed or displayed"),
        _ => Judged,
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::*;

    fn of(history: &History, invariant: Invariant) -> Judgement {
        judgements(history)
            .into_iter()
            .find(|(i, _)| *i == invariant)
            .map(|(_, judgement)| judgement)
            .expect("every invariant is listed")
    }

    #[test]
    fn a_cut_short_history_judges_no_liveness_and_says_why() {
        let mut story = Story::one_to_one();
        story.message(D1, C1, m(1));
        let history = story.history();
        assert_eq!(of(history, Invariant::O2DisplayOrder), Judgement::Judged);
        assert!(matches!(
            of(history, Invariant::D2EventualDelivery),
            Judgement::NotJudged(why) if why.contains("run_ended")
        ));
        assert!(matches!(
            of(history, Invariant::R1WatermarkMonotonic),
            Judgement::Vacuous(_)
        ));
        assert!(matches!(
            of(history, Invariant::P2OfflineDetectedInTime),
            Judgement::NotJudged(why) if why.contains("presence")
        ));
        assert!(matches!(
            of(history, Invariant::T1DeliveredInTime),
            Judgement::NotJudged(_)
        ));
        assert!(matches!(
            of(history, Invariant::C1WithinBudget),
            Judgement::NotJudged(why) if why.contains("traffic")
        ));
        assert!(matches!(
            of(history, Invariant::T6PathRecorded),
            Judgement::NotJudged(why) if why.contains("pull_sent")
        ));
        assert_eq!(judgements(history).len(), Invariant::ALL.len());
    }

    #[test]
    fn a_complete_history_judges_liveness() {
        let mut story = Story::one_to_one();
        story.message(D1, C1, m(1));
        story.finish();
        assert_eq!(
            of(story.history(), Invariant::D2EventualDelivery),
            Judgement::Judged
        );
    }
}
