//! The protocol for real: `imsim live` runs over loopback UDP with a server child process that
//! is SIGKILLed, and `imsim serve` on data directories with a torn tail, a corrupt record, and
//! a second server. Every server these tests start binds 127.0.0.1 only and is killed when its
//! guard drops, also when an assertion fails.

use imsim_live::log::{encode_frame, write_and_sync, LogFile};
use imsim_model::{ClientMsgId, ClientSeq, ConvId, DeviceId, Message, Record, Seq, UserId};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const IMSIM: &str = env!("CARGO_BIN_EXE_imsim");

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn live(scenario: &str, seed: u64, variant: Option<&str>) -> (Output, Value) {
    let mut command = Command::new(IMSIM);
    command.args(["live", scenario, "--seed", &seed.to_string()]);
    command.args(["--time-scale", "0.1", "--format", "json"]);
    if let Some(variant) = variant {
        command.args(["--variant", variant]);
    }
    let output = command.output().expect("run imsim live");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let json: Value = stdout
        .lines()
        .last()
        .and_then(|line| serde_json::from_str(line).ok())
        .unwrap_or_else(|| {
            panic!(
                "no JSON line; stdout:\n{stdout}\nstderr:\n{}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
    // A failed run keeps its files for a person to read; a test reads the JSON instead.
    if let Some(run_dir) = json["live"]["run_dir"].as_str() {
        let _ = std::fs::remove_dir_all(run_dir);
    }
    (output, json)
}

#[test]
fn a_live_run_with_loss_duplication_and_a_sigkill_holds_every_invariant() {
    let (output, json) = live(&fixture("live-small.toml"), 1, None);
    assert!(
        output.status.success() && json["ok"] == true,
        "violations: {:#}",
        json["violations"]
    );
    let stats = &json["stats"];
    assert_eq!(stats["server_crashes"], 1, "one real SIGKILL: {stats:#}");
    assert!(
        stats["packets"]["dropped"].as_u64().unwrap() > 0,
        "{stats:#}"
    );
    assert!(
        stats["packets"]["duplicated"].as_u64().unwrap() > 0,
        "{stats:#}"
    );
    assert_eq!(stats["committed"], stats["sends"], "{stats:#}");
}

/// The proof that durability checking is real: acking before the fdatasync, with the server
/// SIGKILLed under load, loses an acked message on a real disk, and D1 says so.
#[test]
fn ack_before_store_with_server_kills_is_caught_by_d1_within_five_runs() {
    let mut seen = Vec::new();
    for seed in 1..=5 {
        let (output, json) = live(
            &fixture("live-crash-storm.toml"),
            seed,
            Some("ack-before-store"),
        );
        let caught = json["violations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["code"] == "D1");
        if caught {
            assert_eq!(output.status.code(), Some(1));
            return;
        }
        seen.push(json["stats"]["acked"].clone());
    }
    panic!("D1 never caught ack-before-store in 5 live runs (acked per run: {seen:?})");
}

/// A server process, killed when the guard drops.
struct Server {
    child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts `imsim serve` on `data` and waits (at most 20 s) for its "listening" line.
    fn start(data: &Path, events: &Path) -> Server {
        let mut child = serve_command(data, events)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start imsim serve");
        let stdout = child.stdout.take().unwrap();
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            let line = BufReader::new(stdout).lines().next();
            let _ = sender.send(line);
        });
        let server = Server { child };
        let line = receiver.recv_timeout(Duration::from_secs(20));
        assert!(
            matches!(&line, Ok(Some(Ok(text))) if text.starts_with("listening 127.0.0.1:")),
            "{line:?}"
        );
        server
    }

    /// SIGTERM, then the exit status and standard error.
    fn stop(mut self) -> (std::process::ExitStatus, String) {
        // SAFETY: signalling our own child, not yet reaped.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let status = self.child.wait().unwrap();
        let mut stderr = String::new();
        std::io::Read::read_to_string(self.child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
        (status, stderr)
    }
}

fn serve_command(data: &Path, events: &Path) -> Command {
    let mut command = Command::new(IMSIM);
    command.args(["serve", "--listen", "127.0.0.1:0", "--data"]);
    command.arg(data).arg("--events-out").arg(events);
    command.stdin(Stdio::null());
    command
}

fn record(seq: u64) -> Record {
    Record::Committed(Message {
        conv: ConvId(1),
        seq: Seq(seq),
        sender_user: UserId(1),
        sender_device: DeviceId(1),
        client_msg_id: ClientMsgId(seq),
        client_seq: ClientSeq(seq),
        body: format!("message {seq}"),
        client_time_ms: 0,
        change: None,
    })
}

/// A data directory whose log holds `count` synced records; returns the log's path.
fn data_with_records(data: &Path, count: u64) -> std::path::PathBuf {
    std::fs::create_dir_all(data).unwrap();
    let path = data.join("log");
    let (mut log, _) = LogFile::open(&path).unwrap();
    for seq in 1..=count {
        log.append(&record(seq));
    }
    let (file, bytes) = log.take_through(count);
    write_and_sync(&path, &file, &bytes).unwrap();
    path
}

#[test]
fn a_torn_tail_is_truncated_and_reported_and_the_server_runs() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = data_with_records(&data, 2);
    let whole = std::fs::metadata(&log).unwrap().len();
    // A crash in the middle of writing a third record: half of its frame reached the file.
    let third = encode_frame(&record(3));
    let mut bytes = std::fs::read(&log).unwrap();
    bytes.extend(&third[..third.len() / 2]);
    std::fs::write(&log, &bytes).unwrap();

    let events = dir.path().join("events.jsonl");
    let (status, stderr) = Server::start(&data, &events).stop();
    assert!(status.success(), "{status}: {stderr}");
    assert!(stderr.contains("torn tail"), "{stderr}");
    assert_eq!(std::fs::metadata(&log).unwrap().len(), whole, "truncated");
    let lines = std::fs::read_to_string(&events).unwrap();
    let torn: Value = lines
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .find(|line| line["line"] == "torn_tail")
        .expect("a torn_tail line");
    assert_eq!(torn["offset"], whole);
    assert_eq!(torn["bytes"], third.len() / 2);
    assert!(
        lines.contains("\"records\":2"),
        "both records replayed: {lines}"
    );
}

#[test]
fn a_corrupt_record_in_the_middle_exits_2_naming_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = data_with_records(&data, 3);
    let mut bytes = std::fs::read(&log).unwrap();
    let second = 12 + encode_frame(&record(1)).len();
    bytes[second + 8 + 3] ^= 0x40;
    std::fs::write(&log, &bytes).unwrap();

    let output = serve_command(&data, &dir.path().join("events.jsonl"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&log.display().to_string()), "{stderr}");
    assert!(stderr.contains(&format!("offset {second}")), "{stderr}");
    assert_eq!(
        std::fs::read(&log).unwrap(),
        bytes,
        "the log was not touched"
    );
}

#[test]
fn a_second_server_on_the_same_data_directory_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let first = Server::start(&data, &dir.path().join("first.jsonl"));
    let output = serve_command(&data, &dir.path().join("second.jsonl"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("in use by another imsim serve"), "{stderr}");
    let (status, _) = first.stop();
    assert!(status.success(), "the first server was not disturbed");
}
