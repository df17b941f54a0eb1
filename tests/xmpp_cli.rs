//! `imsim xmpp` and `imsim check` on black-box histories, through the binary: a real Prosody
//! history (tests/fixtures/blackbox-prosody.jsonl, recorded with `imsim xmpp --seed 1
//! --messages 8 --faults none`) passes with its judged and not-judged invariants listed, a
//! tampered copy fails, a malformed one is refused with its line and field, and a short run
//! against a Prosody the command starts exits 0 (skipped, saying so, without `prosody`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const FIXTURE: &str = "tests/fixtures/blackbox-prosody.jsonl";

fn imsim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_imsim"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run imsim")
}

fn scratch(name: &str, text: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("xmpp-cli");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn fixture() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(FIXTURE)).unwrap()
}

#[test]
fn check_lists_what_it_judged_and_what_it_could_not() {
    let output = imsim(&["check", FIXTURE]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("black-box history"), "{stdout}");
    assert!(
        stdout.contains("judged D1 acked-is-durable: held"),
        "{stdout}"
    );
    assert!(stdout.contains("not judged O1 seq-monotonic"), "{stdout}");
    assert!(
        !stdout.contains("invariants checked"),
        "no single total: {stdout}"
    );
}

#[test]
fn a_message_stored_twice_fails_the_check() {
    // The first archive entry of the first final read appears twice.
    let text: String = fixture()
        .lines()
        .map(|line| {
            if !line.contains("\"type\":\"final_read\"") {
                return line.to_string();
            }
            let start = line.find("[{").unwrap() + 1;
            let end = start + line[start..].find('}').unwrap() + 1;
            let entry = &line[start..end];
            line.replacen(entry, &format!("{entry},{entry}"), 1)
        })
        .collect::<Vec<_>>()
        .join("\n");
    let path = scratch("stored-twice.jsonl", &text);
    let output = imsim(&["check", path.to_str().unwrap(), "--format", "json"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    let verdict: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(verdict["ok"], false);
    assert_eq!(verdict["violations"][0]["code"], "E2");
    assert!(verdict["not_judged"].as_array().unwrap().len() >= 8);
}

#[test]
fn a_malformed_black_box_line_is_refused_with_its_line_and_field() {
    let mut lines: Vec<String> = fixture().lines().map(str::to_string).collect();
    lines[3] = r#"{"t_ms":99999,"type":"send_acked","client":"d1","msg":"d1-1"}"#.to_string();
    let path = scratch("malformed.jsonl", &lines.join("\n"));
    let output = imsim(&["check", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("malformed.jsonl:4:"), "{stderr}");
    assert!(stderr.contains("missing field `conv`"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn bad_xmpp_flags_exit_2() {
    let output = imsim(&["xmpp", "--faults", "flood"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("unknown fault `flood`"), "{stderr}");
    let accounts = scratch("accounts.txt", "u1\n");
    let output = imsim(&[
        "xmpp",
        "--server",
        "127.0.0.1:9",
        "--accounts",
        accounts.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("accounts.txt:1: accounts: expected `user password`"),
        "{stderr}"
    );
}

#[test]
fn a_short_run_against_a_started_prosody_exits_0() {
    let installed = Command::new("sh")
        .args(["-c", "command -v prosody"])
        .output()
        .is_ok_and(|output| output.status.success());
    if !installed {
        eprintln!(
            "SKIPPED: `prosody` is not installed (apt-get install -y prosody); CI installs it"
        );
        return;
    }
    let output = imsim(&["xmpp", "--seed", "1", "--messages", "6", "--faults", "none"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("ok: Prosody"), "{stdout}");
    assert!(
        stdout.contains("judged E1 no-duplicate-display: held"),
        "{stdout}"
    );
}
