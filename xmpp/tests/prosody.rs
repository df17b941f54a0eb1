//! A short session against a Prosody the test starts itself: the adapter logs in, chats, uses
//! the room and carbons, reads every archive, and the black-box judges find nothing. Without
//! `prosody` installed the test says so and returns (CI installs it, so CI runs it).

use imsim_history::blackbox::{judge, report, BlackBoxEvent};
use imsim_xmpp::{run, server, XmppOptions};

fn options(seed: u64, messages: u32, faults: &str) -> XmppOptions {
    XmppOptions {
        seed,
        messages,
        users: 3,
        faults: Some(faults.split(',').map(str::to_string).collect()),
        server: None,
        verbose: std::env::var_os("IMSIM_XMPP_VERBOSE").is_some(),
        hibernation_s: server::HIBERNATION_S_DEFAULT,
        naive_resend: false,
    }
}

#[test]
fn a_short_session_without_faults_holds_every_judged_invariant() {
    if !server::installed() {
        eprintln!(
            "SKIPPED: `prosody` is not installed (apt-get install -y prosody); CI installs it"
        );
        return;
    }
    let outcome = run(&options(1, 12, "none")).expect("the run completes");
    let verdict = judge(&outcome.history);
    let text = report::verdict_text(&outcome.history, &verdict);
    eprintln!("{}\n{text}", report::counts(&outcome.history));
    assert!(verdict.findings.is_empty(), "{text}");
    let records = &outcome.history.records;
    let count =
        |wanted: fn(&BlackBoxEvent) -> bool| records.iter().filter(|r| wanted(&r.event)).count();
    assert_eq!(
        count(|e| matches!(e, BlackBoxEvent::SendInvoked { .. })),
        12
    );
    assert_eq!(count(|e| matches!(e, BlackBoxEvent::SendAcked { .. })), 12);
    assert!(count(|e| matches!(e, BlackBoxEvent::Displayed { .. })) >= 12);
    assert_eq!(count(|e| matches!(e, BlackBoxEvent::FinalRead { .. })), 7);
    assert!(matches!(
        records.last().map(|r| &r.event),
        Some(BlackBoxEvent::RunEnded)
    ));
    for judged in [
        "E1 no-duplicate-display",
        "O2 display-order",
        "D1 acked-is-durable",
        "D2 eventual-delivery",
    ] {
        assert!(
            verdict
                .judged
                .iter()
                .any(|(name, _)| name.to_string() == judged),
            "{judged} not judged: {text}"
        );
    }
}
