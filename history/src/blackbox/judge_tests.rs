//! The black-box judges on hand-made histories: a clean one holds everything it can judge, and
//! each invariant is shown failing on a history that breaks it.

use super::super::format::*;
use super::{judge, Verdict};
use crate::check::Class;

/// A hand-made history: u1 (devices a1, a2) and u2 (device b1), a 1:1 chat `c` and a group `g`.
struct Story {
    records: Vec<BlackBoxRecord>,
}

impl Story {
    fn new() -> Story {
        let clients = [("a1", "u1"), ("a2", "u1"), ("b1", "u2")]
            .iter()
            .map(|(client, user)| ClientInfo {
                client: client.to_string(),
                user: user.to_string(),
            })
            .collect();
        let conversation = |conv: &str, kind| ConversationInfo {
            conv: conv.to_string(),
            kind,
            members: vec!["u1".to_string(), "u2".to_string()],
        };
        let mut story = Story {
            records: Vec::new(),
        };
        story.push(BlackBoxEvent::BlackboxStarted {
            system: "hand-made".to_string(),
            seed: None,
            faults: serde_json::Value::Null,
            clients,
            conversations: vec![
                conversation("c", ConversationKind::Direct),
                conversation("g", ConversationKind::Group),
            ],
        });
        story
    }

    fn push(&mut self, event: BlackBoxEvent) -> &mut Story {
        let t_ms = self.records.len() as u64 * 10;
        self.records.push(BlackBoxRecord { t_ms, event });
        self
    }

    fn send(&mut self, client: &str, conv: &str, msg: &str) -> &mut Story {
        self.push(BlackBoxEvent::SendInvoked {
            client: client.into(),
            conv: conv.into(),
            msg: msg.into(),
            body: format!("body of {msg}"),
        })
    }

    fn ack(&mut self, client: &str, conv: &str, msg: &str) -> &mut Story {
        self.push(BlackBoxEvent::SendAcked {
            client: client.into(),
            conv: conv.into(),
            msg: msg.into(),
            server_id: None,
        })
    }

    fn display(&mut self, client: &str, conv: &str, sender: &str, msg: &str) -> &mut Story {
        self.push(BlackBoxEvent::Received {
            client: client.into(),
            session: "s".into(),
            conv: conv.into(),
            msg: Some(msg.into()),
            sender: sender.into(),
            body: format!("body of {msg}"),
            server_id: None,
            order: None,
            via: Via::Live,
        });
        self.push(BlackBoxEvent::Displayed {
            client: client.into(),
            conv: conv.into(),
            msg: msg.into(),
            sender: sender.into(),
            body: format!("body of {msg}"),
        })
    }

    /// `entries`: (sender user, msg) in archive order.
    fn final_read(&mut self, conv: &str, reader: &str, entries: &[(&str, &str)]) -> &mut Story {
        let entries = entries
            .iter()
            .enumerate()
            .map(|(at, (sender, msg))| ArchiveEntry {
                server_id: format!("{reader}-{at}"),
                msg: Some(msg.to_string()),
                sender: sender.to_string(),
                body: format!("body of {msg}"),
            })
            .collect();
        self.push(BlackBoxEvent::FinalRead {
            conv: conv.into(),
            reader: reader.into(),
            entries,
        })
    }

    fn end(&mut self) -> &mut Story {
        self.push(BlackBoxEvent::RunEnded)
    }

    /// One message a1 → b1 in `c`, seen by everyone, archived by both users.
    fn clean() -> Story {
        let mut story = Story::new();
        story
            .send("a1", "c", "m1")
            .ack("a1", "c", "m1")
            .display("b1", "c", "u1", "m1")
            .display("a2", "c", "u1", "m1")
            .final_read("c", "u1", &[("u1", "m1")])
            .final_read("c", "u2", &[("u1", "m1")])
            .end();
        story
    }

    fn verdict(&self) -> Verdict {
        judge(&BlackBoxHistory {
            records: self.records.clone(),
        })
    }
}

fn failed(verdict: &Verdict) -> Vec<String> {
    verdict
        .findings
        .iter()
        .map(|finding| finding.invariant.to_string())
        .collect()
}

#[test]
fn a_clean_history_holds_and_says_what_it_judged() {
    let verdict = Story::clean().verdict();
    assert_eq!(failed(&verdict), Vec::<&str>::new());
    let judged: Vec<String> = verdict
        .judged
        .iter()
        .map(|(name, _)| name.to_string())
        .collect();
    for name in [
        "E1 no-duplicate-display",
        "E3 no-phantom",
        "O2 display-order",
        "O4 agreement",
        "E2 idempotent-commit",
        "D1 acked-is-durable",
        "D2 eventual-delivery",
        "D4 no-silent-loss",
        "M1 devices-converge",
    ] {
        assert!(
            judged.iter().any(|judged| judged == name),
            "{name} not judged: {judged:?}"
        );
    }
    let not_judged: Vec<String> = verdict
        .not_judged
        .iter()
        .map(|(name, _)| name.to_string())
        .collect();
    assert!(not_judged.iter().any(|name| name == "O1 seq-monotonic"));
    assert!(
        not_judged
            .iter()
            .any(|name| name == "R3 read-after-display"),
        "no markers: nothing to judge"
    );
}

#[test]
fn a_second_display_of_one_message_is_e1() {
    let mut story = Story::clean();
    story.records.pop();
    story.display("b1", "c", "u1", "m1").end();
    let verdict = story.verdict();
    assert_eq!(failed(&verdict), vec!["E1 no-duplicate-display"]);
    assert_eq!(verdict.findings[0].class(), Class::Safety);
}

#[test]
fn an_acked_message_missing_from_an_archive_is_d1_and_d2_misses_nothing_it_cannot_see() {
    let mut story = Story::new();
    story
        .send("a1", "c", "m1")
        .ack("a1", "c", "m1")
        .final_read("c", "u1", &[("u1", "m1")])
        .final_read("c", "u2", &[])
        .end();
    let verdict = story.verdict();
    assert!(
        failed(&verdict)
            .iter()
            .any(|name| name == "D1 acked-is-durable"),
        "{verdict:?}"
    );
    assert!(verdict
        .findings
        .iter()
        .any(|f| f.invariant.to_string() == "D1 acked-is-durable"
            && f.explanation.contains("read by u2")));
}

#[test]
fn a_message_stored_twice_is_e2_not_o4() {
    let mut story = Story::new();
    story
        .send("a1", "c", "m1")
        .send("a1", "c", "m2")
        .ack("a1", "c", "m1")
        .ack("a1", "c", "m2")
        .display("b1", "c", "u1", "m1")
        .display("b1", "c", "u1", "m2")
        .display("a2", "c", "u1", "m1")
        .display("a2", "c", "u1", "m2")
        .final_read("c", "u1", &[("u1", "m1"), ("u1", "m2")])
        .final_read("c", "u2", &[("u1", "m1"), ("u1", "m2"), ("u1", "m1")])
        .end();
    assert_eq!(failed(&story.verdict()), vec!["E2 idempotent-commit"]);
}

#[test]
fn displays_against_archive_order_are_o2_and_archives_that_disagree_are_o4() {
    let mut story = Story::new();
    story
        .send("b1", "g", "m1")
        .send("b1", "g", "m2")
        .ack("b1", "g", "m1")
        .ack("b1", "g", "m2")
        .display("a1", "g", "u2", "m2")
        .display("a1", "g", "u2", "m1")
        .display("a2", "g", "u2", "m1")
        .display("a2", "g", "u2", "m2")
        .final_read("g", "u1", &[("u2", "m1"), ("u2", "m2")])
        .end();
    assert_eq!(failed(&story.verdict()), vec!["O2 display-order"]);
    let mut disagree = Story::new();
    disagree
        .send("a1", "c", "m1")
        .send("b1", "c", "m2")
        .final_read("c", "u1", &[("u1", "m1"), ("u2", "m2")])
        .final_read("c", "u2", &[("u2", "m2"), ("u1", "m1")]);
    let verdict = disagree.verdict();
    assert!(
        failed(&verdict).iter().any(|name| name == "O4 agreement"),
        "{verdict:?}"
    );
    assert!(verdict
        .not_judged
        .iter()
        .any(|(name, why)| name.to_string() == "D4 no-silent-loss" && why.contains("run_ended")));
}

#[test]
fn sends_archived_out_of_order_are_o3() {
    let mut story = Story::new();
    story
        .send("a1", "c", "m1")
        .send("a1", "c", "m2")
        .final_read("c", "u1", &[("u1", "m2"), ("u1", "m1")]);
    assert!(failed(&story.verdict())
        .iter()
        .any(|name| name == "O3 sender-fifo"));
}

#[test]
fn an_unanswered_send_is_d4_unless_it_failed_visibly() {
    let mut story = Story::new();
    story
        .send("a1", "c", "m1")
        .final_read("c", "u1", &[])
        .final_read("c", "u2", &[])
        .end();
    assert_eq!(failed(&story.verdict()), vec!["D4 no-silent-loss"]);
    let mut visible = Story::new();
    visible
        .send("a1", "c", "m1")
        .push(BlackBoxEvent::SendFailed {
            client: "a1".into(),
            conv: "c".into(),
            msg: "m1".into(),
            reason: "gave up".into(),
        })
        .final_read("c", "u1", &[])
        .final_read("c", "u2", &[])
        .end();
    assert_eq!(failed(&visible.verdict()), Vec::<&str>::new());
}

#[test]
fn an_archived_message_a_member_never_saw_is_d2_and_m1() {
    let mut story = Story::new();
    story
        .send("a1", "c", "m1")
        .ack("a1", "c", "m1")
        .display("b1", "c", "u1", "m1")
        .final_read("c", "u1", &[("u1", "m1")])
        .final_read("c", "u2", &[("u1", "m1")])
        .end();
    let verdict = story.verdict();
    assert_eq!(
        failed(&verdict),
        vec!["D2 eventual-delivery", "M1 devices-converge"]
    );
    assert!(verdict.findings[0]
        .explanation
        .starts_with("a2 never displayed 1 message"));
    assert_eq!(verdict.findings[0].class(), Class::Liveness);
}

#[test]
fn a_display_nobody_sent_is_e3() {
    let mut story = Story::new();
    story.display("b1", "c", "u1", "ghost");
    assert_eq!(failed(&story.verdict()), vec!["E3 no-phantom"]);
}

#[test]
fn markers_before_display_or_receipt_and_going_back_are_flagged() {
    let marker_sent = |client: &str, msg: &str| BlackBoxEvent::MarkerSent {
        client: client.into(),
        conv: "c".into(),
        msg: msg.into(),
        sender: "u1".into(),
        kind: MarkerKind::Displayed,
    };
    let marker_received = |msg: &str| BlackBoxEvent::MarkerReceived {
        client: "a1".into(),
        conv: "c".into(),
        msg: msg.into(),
        from: "u2".into(),
        kind: MarkerKind::Displayed,
    };
    let mut early = Story::new();
    early
        .send("a1", "c", "m1")
        .push(marker_sent("b1", "m1"))
        .push(marker_received("m1"));
    let verdict = early.verdict();
    assert_eq!(
        failed(&verdict),
        vec![
            "R3 read-after-display",
            "R3 read-after-display",
            "R2 read-le-delivered"
        ]
    );
    let mut back = Story::new();
    back.send("a1", "c", "m1")
        .send("a1", "c", "m2")
        .display("b1", "c", "u1", "m1")
        .display("b1", "c", "u1", "m2")
        .push(marker_sent("b1", "m2"))
        .push(marker_received("m2"))
        .push(marker_sent("b1", "m1"))
        .push(marker_received("m1"))
        .final_read("c", "u1", &[("u1", "m1"), ("u1", "m2")]);
    assert_eq!(failed(&back.verdict()), vec!["R1 watermark-monotonic"]);
}

#[test]
fn without_final_reads_the_archive_invariants_are_not_judged() {
    let mut story = Story::new();
    story
        .send("a1", "c", "m1")
        .display("b1", "c", "u1", "m1")
        .end();
    let verdict = story.verdict();
    assert_eq!(failed(&verdict), Vec::<&str>::new());
    for name in [
        "O2 display-order",
        "D1 acked-is-durable",
        "D2 eventual-delivery",
    ] {
        assert!(
            verdict
                .not_judged
                .iter()
                .any(|(judged, why)| judged.to_string() == name && why.contains("no final_read")),
            "{name}: {verdict:?}"
        );
    }
}
