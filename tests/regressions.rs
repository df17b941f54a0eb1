//! The regression corpus: every file in `tests/regressions/` is a pinned scenario (`[pinned]`
//! seed, expect, note), written by `imsim shrink` or `imsim run --save-failures`. Each is
//! replayed and must violate exactly the invariants it expects (`expect = []`: all hold).
//!
//! Some passing cases pin a schedule worth keeping rather than a failure; a change to the
//! protocol's timing can make such a case miss its schedule and silently guard nothing, so
//! `pinned_schedules_still_happen` checks each still shows it. When one goes stale, re-pin it:
//! `cargo test --test regressions -- --ignored repin` writes fresh candidates to
//! `target/tmp/repinned/` to review and copy over.

use imsim_history::{Entry, Node};
use imsim_model::Event;
use imsim_sim::explicit::{codes, failing, render};
use imsim_sim::shrink::shrink_passing;
use imsim_sim::{run, RunOutcome, Scenario};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn corpus() -> Vec<(PathBuf, Scenario)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/regressions");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/regressions exists")
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let scenario = Scenario::load(path.to_str().expect("a UTF-8 path"))
                .unwrap_or_else(|error| panic!("{error}"));
            (path, scenario)
        })
        .collect()
}

#[test]
fn every_case_violates_exactly_what_it_expects() {
    let corpus = corpus();
    assert!(corpus.len() >= 3, "the corpus lost its seed cases");
    for (path, scenario) in corpus {
        let name = path.display();
        let pinned = scenario
            .pinned
            .as_ref()
            .unwrap_or_else(|| panic!("{name}: a regression case needs [pinned]"));
        assert!(
            !pinned.note.trim().is_empty() && !pinned.note.contains('\n'),
            "{name}: [pinned] note must be a one-line postmortem"
        );
        let outcome = run(&scenario, pinned.seed);
        let violated = codes(&failing(&outcome));
        let expected: BTreeSet<&str> = pinned.expect.iter().map(String::as_str).collect();
        let got: BTreeSet<&str> = violated.iter().map(String::as_str).collect();
        assert_eq!(
            got,
            expected,
            "{name}: violations differ from [pinned] expect\n{}",
            outcome.failure_report(&name.to_string())
        );
    }
}

/// A schedule a passing case exists to exercise: its file, the shipped scenario it was shrunk
/// from, and how to recognise it in the history.
struct Schedule {
    file: &'static str,
    source: &'static str,
    shows: fn(&RunOutcome) -> bool,
    note: &'static str,
}

const SCHEDULES: [Schedule; 2] = [
    Schedule {
        file: "crash-between-write-and-sync.toml",
        source: "server-crash",
        shows: loses_an_unsynced_write,
        note: "Guards D1/E2/O1 across a crash between a write and its sync: the server dies \
               before the sync, loses the write (recovered: lost_unsynced_writes > 0), and the \
               sender's retransmission commits the message once, at a fresh seq.",
    },
    Schedule {
        file: "burst-overtakes-itself.toml",
        source: "sender-retry-order",
        shows: drops_an_out_of_order_send,
        note: "Guards O3 sender-fifo: a burst sent 1 ms apart overtakes itself on the network's \
               1-10 ms latency; the server drops client_seq 2 while 1 is missing, and the \
               sender's retransmission commits it after 1.",
    },
];

/// The server recovered from a crash that lost writes it had not synced.
fn loses_an_unsynced_write(outcome: &RunOutcome) -> bool {
    outcome.history.records.iter().any(|record| {
        matches!(
            record.entry,
            Entry::Protocol(Event::Recovered { lost_unsynced_writes, .. }) if lost_unsynced_writes > 0
        )
    })
}

/// The server dropped a send that overtook an earlier one of a device that was logged in when
/// it sent them (a burst, not a queue flushed at login).
fn drops_an_out_of_order_send(outcome: &RunOutcome) -> bool {
    let mut logged_in = BTreeSet::new();
    let mut sent_online = BTreeSet::new();
    for record in &outcome.history.records {
        match (record.node, &record.entry) {
            (Node::Device(device), Entry::Protocol(Event::LoggedIn { .. })) => {
                logged_in.insert(device);
            }
            (Node::Device(device), Entry::Protocol(Event::SendRequested { .. }))
                if logged_in.contains(&device) =>
            {
                sent_online.insert(device);
            }
            (_, Entry::Protocol(Event::OutOfOrderDropped { device, .. }))
                if sent_online.contains(device) =>
            {
                return true;
            }
            _ => {}
        }
    }
    false
}

#[test]
fn pinned_schedules_still_happen() {
    for schedule in &SCHEDULES {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/regressions")
            .join(schedule.file);
        let scenario = Scenario::load(path.to_str().unwrap()).unwrap();
        let seed = scenario.pinned.as_ref().expect("pinned").seed;
        let outcome = run(&scenario, seed);
        assert!(
            (schedule.shows)(&outcome),
            "{} no longer shows the schedule it pins; re-pin it (see the top of this file)",
            schedule.file
        );
    }
}

/// Not a check: finds a fresh seed of each schedule's source scenario and writes its shrunk
/// form to `target/tmp/repinned/`, for a person to review and copy into `tests/regressions/`.
#[test]
#[ignore]
fn repin() {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("repinned");
    std::fs::create_dir_all(&out).unwrap();
    for schedule in &SCHEDULES {
        let scenario = Scenario::load(schedule.source).unwrap();
        // Shrink the first few seeds that show the schedule and keep the smallest result.
        let (seed, shrunk) = (0..10_000)
            .filter(|seed| {
                let outcome = run(&scenario, *seed);
                outcome.ok() && (schedule.shows)(&outcome)
            })
            .take(5)
            .map(|seed| {
                let shrunk =
                    shrink_passing(&scenario, seed, &schedule.shows, 3_000, &run, &mut |_| {})
                        .unwrap_or_else(|error| panic!("{}: {error}", schedule.file));
                (seed, shrunk)
            })
            .min_by_key(|(_, shrunk)| (shrunk.after.devices, shrunk.after.events))
            .expect("a seed that shows the schedule");
        let mut pinned = shrunk.scenario;
        pinned.pinned.as_mut().unwrap().note = schedule.note.to_string();
        let header = format!(
            "Shrunk from `{} --seed {seed}` by shrink_passing ({} runs) while every invariant\n\
             held and the schedule below still happened (tests/regressions.rs, `{}`).\n\
             Before: {}.\nAfter:  {}.\n\
             Replay: imsim run <this file>   or   imsim replay <this file> --seed {seed}\n",
            schedule.source, shrunk.runs, schedule.file, shrunk.before, shrunk.after
        );
        let path = out.join(schedule.file);
        std::fs::write(&path, render(&pinned, &header)).unwrap();
        println!("wrote {}", path.display());
    }
}
