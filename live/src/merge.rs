//! One history from a live run's pieces: the server processes' events files, the devices' and
//! harness's records, and the durable log as the last server left it.
//!
//! One gap needs closing. In the simulator a record becomes durable and its event (`committed`,
//! a refusal, `read_advanced`) is emitted in the same step (`handle_storage_synced`). A real
//! server learns that its records are durable when `fdatasync` returns, and writes their events
//! a moment later; a SIGKILL in between leaves records in the log whose events no one wrote.
//! Nobody was told about them (no ack, no push left), but the next server serves them, and a
//! checker that reads `committed` events would see a displayed seq that "nothing committed".
//! So each server writes a `published` line after the events of every sync, and here the
//! records between the last published point of a killed server and the log's length at the
//! next start get the events `publish` would have written, stamped just after the dead
//! server's last line. They are counted in the run's notes.

use crate::data_dir::storage_of;
use crate::directory::directory_of;
use crate::server::{ServeCounts, ServerLine};
use imsim_history::{Entry, HarnessEvent, History, Node, TimelineEntry, Traffic};
use imsim_model::{ConvId, Event, ProtocolConfig, Record, Seq, Server, Time, UserId};
use imsim_sim::Setup;
use std::collections::BTreeMap;
use std::path::Path;

/// What the server processes of a run wrote: their lines, one list per start, the counts of
/// those that stopped cleanly, and notes worth reporting (torn tails).
pub struct ServerFiles {
    pub starts: Vec<Vec<ServerLine>>,
    pub counts: Vec<ServeCounts>,
    pub notes: Vec<String>,
}

/// The events file of server start `start` (1, 2, …) in a run directory.
pub fn events_file(run_dir: &Path, start: u32) -> std::path::PathBuf {
    run_dir.join(format!("server-events-{start}.jsonl"))
}

/// Reads every server's events file; a last line cut short by SIGKILL is left out (its
/// event's effects, sent after it, never happened).
pub fn read_server_files(run_dir: &Path, starts: u32) -> Result<ServerFiles, String> {
    let mut files = ServerFiles {
        starts: Vec::new(),
        counts: Vec::new(),
        notes: Vec::new(),
    };
    for start in 1..=starts {
        let path = events_file(run_dir, start);
        let text = std::fs::read_to_string(&path)
            .map_err(|error| format!("{}: {error}", path.display()))?;
        let complete = text.rfind('\n').map_or("", |end| &text[..end]);
        let mut lines = Vec::new();
        for (number, line) in complete.lines().enumerate() {
            let line: ServerLine = serde_json::from_str(line)
                .map_err(|error| format!("{}:{}: {error}", path.display(), number + 1))?;
            match &line {
                ServerLine::TornTail {
                    offset,
                    bytes,
                    reason,
                    ..
                } => files.notes.push(format!(
                    "server start {start}: torn log tail of {bytes} bytes at offset {offset} \
                     truncated ({reason})"
                )),
                ServerLine::Stopped { counts, .. } => files.counts.push(counts.clone()),
                _ => {}
            }
            lines.push(line);
        }
        files.starts.push(lines);
    }
    Ok(files)
}

/// The events of records that became durable while their server was being killed: for each
/// server after the first, the records from its predecessor's last published point to the log
/// length it found. Returns them stamped, and how many there were.
pub fn unpublished_events(starts: &[Vec<ServerLine>], log: &[Record]) -> Vec<(u64, Node, Entry)> {
    let mut events = Vec::new();
    for pair in starts.windows(2) {
        let (dead, next) = (&pair[0], &pair[1]);
        let started_with = |lines: &[ServerLine]| {
            lines.iter().find_map(|line| match line {
                ServerLine::Started { records, .. } => Some(*records),
                _ => None,
            })
        };
        let published = dead
            .iter()
            .filter_map(|line| match line {
                ServerLine::Published { through, .. } => Some(*through),
                _ => None,
            })
            .max()
            .or(started_with(dead))
            .unwrap_or(0) as usize;
        let found = (started_with(next).unwrap_or(0) as usize).min(log.len());
        if found <= published {
            continue;
        }
        let last_t_us = dead.iter().filter_map(ServerLine::t_us).max().unwrap_or(0);
        let mut watermarks = read_watermarks(&log[..published]);
        for record in &log[published..found] {
            if let Some(event) = published_event(record, &mut watermarks) {
                events.push((last_t_us, Node::Server, Entry::Protocol(event)));
            }
        }
    }
    events
}

/// The highest read per (conversation, user) in these records.
fn read_watermarks(records: &[Record]) -> BTreeMap<(ConvId, UserId), Seq> {
    let mut watermarks = BTreeMap::new();
    for record in records {
        if let Record::Read {
            conv, user, up_to, ..
        } = record
        {
            let mark = watermarks.entry((*conv, *user)).or_insert(Seq::ZERO);
            *mark = (*mark).max(*up_to);
        }
    }
    watermarks
}

/// The event the model's `publish` emits for a record that became durable.
fn published_event(
    record: &Record,
    watermarks: &mut BTreeMap<(ConvId, UserId), Seq>,
) -> Option<Event> {
    match record {
        Record::Committed(message) => Some(Event::Committed {
            conv: message.conv,
            seq: message.seq,
            sender_user: message.sender_user,
            sender_device: message.sender_device,
            client_msg_id: message.client_msg_id,
            client_seq: message.client_seq,
            body: message.body.clone(),
            change: message.change,
        }),
        Record::Refused {
            sender_device,
            reason,
            ..
        } => Some(Event::Rejected {
            device: Some(*sender_device),
            refused: "send".to_string(),
            reason: *reason,
        }),
        Record::Read {
            conv,
            user,
            device,
            up_to,
        } => {
            let mark = watermarks.entry((*conv, *user)).or_insert(Seq::ZERO);
            (*up_to > *mark).then(|| {
                *mark = *up_to;
                Event::ReadAdvanced {
                    conv: *conv,
                    user: *user,
                    device: *device,
                    up_to: *up_to,
                }
            })
        }
        Record::InboxCopy { .. } => None,
    }
}

/// Everything in clock order, then the durable timelines read from the log and the end.
pub fn merge(
    mut records: Vec<(u64, Node, Entry)>,
    starts: &[Vec<ServerLine>],
    log: &[Record],
    setup: &Setup,
    config: ProtocolConfig,
    now_ms: u64,
    traffic: Traffic,
) -> History {
    for lines in starts {
        for line in lines {
            if let ServerLine::Event { t_us, event } = line {
                records.push((*t_us, Node::Server, Entry::Protocol(event.clone())));
            }
        }
    }
    records.extend(unpublished_events(starts, log));
    // Stable: records of one source keep their order at equal times.
    records.sort_by_key(|(t_us, _, _)| *t_us);
    let mut history = History::default();
    // The run ends now, after the quiet period, whenever the last event was.
    let mut end_ms = now_ms;
    for (t_us, node, entry) in records {
        end_ms = end_ms.max(t_us / 1_000);
        history.push(t_us / 1_000, node, entry);
    }
    let directory = directory_of(&setup.topology);
    // Incarnation 0: a reader of the log, not a restart (no `Recovered` event).
    let server = Server::recover(config, directory, &storage_of(log), 0, Time(end_ms));
    for conversation in &setup.topology.conversations {
        let entries = server
            .durable_timeline(conversation.conv)
            .iter()
            .map(TimelineEntry::from)
            .collect();
        let conv = conversation.conv;
        let event = HarnessEvent::FinalTimeline { conv, entries };
        history.push(end_ms, Node::Harness, Entry::Harness(event));
    }
    let traffic = Entry::Harness(HarnessEvent::Traffic(Box::new(traffic)));
    history.push(end_ms, Node::Harness, traffic);
    let end = Entry::Harness(HarnessEvent::RunEnded);
    history.push(end_ms, Node::Harness, end);
    history
}

#[cfg(test)]
mod tests {
    use super::*;
    use imsim_model::{ClientMsgId, ClientSeq, DeviceId, Message};

    fn committed(seq: u64) -> Record {
        Record::Committed(Message {
            conv: ConvId(1),
            seq: Seq(seq),
            sender_user: UserId(1),
            sender_device: DeviceId(1),
            client_msg_id: ClientMsgId(seq),
            client_seq: ClientSeq(seq),
            body: String::new(),
            client_time_ms: 0,
            change: None,
        })
    }

    fn started(t_us: u64, records: u64) -> ServerLine {
        ServerLine::Started {
            t_us,
            incarnation: 0,
            records,
        }
    }

    #[test]
    fn records_durable_but_unpublished_at_a_kill_get_their_events() {
        let log: Vec<Record> = (1..=4).map(committed).collect();
        let starts = vec![
            vec![
                started(10, 0),
                ServerLine::Published {
                    t_us: 50,
                    through: 2,
                },
            ],
            // The second server found 4 records: 3 and 4 were durable, never published.
            vec![started(90, 4)],
        ];
        let events = unpublished_events(&starts, &log);
        let seqs: Vec<String> = events
            .iter()
            .map(|(t_us, _, entry)| format!("{t_us} {entry:?}"))
            .collect();
        assert_eq!(events.len(), 2, "{seqs:?}");
        assert!(seqs[0].starts_with("50 ") && seqs[0].contains("seq: Seq(3)"));
        assert!(seqs[1].contains("seq: Seq(4)"));
    }

    #[test]
    fn a_server_that_published_everything_leaves_nothing_to_add() {
        let log: Vec<Record> = (1..=2).map(committed).collect();
        let starts = vec![
            vec![
                started(10, 0),
                ServerLine::Published {
                    t_us: 50,
                    through: 2,
                },
            ],
            vec![started(90, 2)],
        ];
        assert!(unpublished_events(&starts, &log).is_empty());
    }

    #[test]
    fn only_reads_that_advance_are_published() {
        let read = |up_to| Record::Read {
            conv: ConvId(1),
            user: UserId(2),
            device: DeviceId(2),
            up_to: Seq(up_to),
        };
        let log = vec![read(3), read(2), read(5)];
        let starts = vec![vec![started(10, 0)], vec![started(90, 3)]];
        let events = unpublished_events(&starts, &log);
        assert_eq!(events.len(), 2, "3 advances, 2 does not, 5 does");
    }
}
