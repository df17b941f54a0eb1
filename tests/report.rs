//! `imsim report`: the three files, the refusal to overwrite, and the page as a browser renders
//! it (headless Chromium: the DOM after the page's script ran must hold the timeline and the
//! invariant table).

use imsim_history::check_all;
use imsim_history::{Entry, History};
use imsim_reports::{Report, RunSummary};
use imsim_sim::{run, Scenario};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn imsim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_imsim"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run imsim")
}

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("report")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// The issue's acceptance scenario once groups exist; the default scenario until then.
fn scenario() -> &'static str {
    let group = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/group-small.toml");
    if group.exists() {
        "scenarios/group-small.toml"
    } else {
        "scenarios/one-to-one.toml"
    }
}

/// Writes a report with the CLI and returns its directory.
fn cli_report(name: &str) -> PathBuf {
    let dir = scratch(name);
    let out = dir.to_str().unwrap();
    let output = imsim(&["report", scenario(), "--seed", "1", "--out", out]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    dir
}

#[test]
fn report_writes_html_json_and_markdown() {
    let dir = cli_report("files");
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    let json = std::fs::read_to_string(dir.join("report.json")).unwrap();
    let markdown = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(html.contains("<svg"));
    assert!(html.contains(r#"id="timeline""#));
    assert!(html.contains(r#"<table id="invariants""#));
    assert!(html.contains(r#"id="inv-O1""#) && html.contains(r#"id="inv-D2""#));
    // Self-contained: nothing is fetched from anywhere.
    for external in ["http://", "https://", "<link", "src="] {
        let found = html.replace("http://www.w3.org/2000/svg", "");
        assert!(!found.contains(external), "the page refers to `{external}`");
    }
    let value: serde_json::Value = serde_json::from_str(&json).expect("report.json parses");
    assert_eq!(value["seed"], 1);
    assert_eq!(value["ok"], true);
    assert_eq!(
        value["invariants"].as_array().unwrap().len(),
        imsim_history::Invariant::ALL.len()
    );
    assert!(markdown.contains("| O1 | seq-monotonic | always | held |"));
    assert!(markdown.contains("replay: `imsim replay"));
}

#[test]
fn report_refuses_to_overwrite_without_force() {
    let dir = cli_report("overwrite");
    let out = dir.to_str().unwrap();
    std::fs::write(dir.join("report.md"), "kept").unwrap();
    let again = imsim(&["report", scenario(), "--seed", "2", "--out", out]);
    assert_eq!(again.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(
        stderr.contains("already exist") && stderr.contains("--force"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("report.md")).unwrap(),
        "kept"
    );
    let forced = imsim(&["report", scenario(), "--seed", "2", "--out", out, "--force"]);
    assert_eq!(forced.status.code(), Some(0));
    assert!(std::fs::read_to_string(dir.join("report.md"))
        .unwrap()
        .contains("seed 2"));
}

#[test]
fn report_of_an_unknown_scenario_is_bad_input() {
    let dir = scratch("unknown");
    let output = imsim(&[
        "report",
        "no-such-scenario",
        "--seed",
        "1",
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert!(!dir.exists(), "nothing is written for bad input");
}

/// Where Debian's `chromium` is, if installed.
fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("chromium"))
        .find(|candidate| candidate.is_file())
}

/// Chromium's DOM of a page after its scripts ran, or a panic after 60 s.
fn rendered_dom(browser: &Path, page: &Path, scratch_dir: &Path) -> String {
    std::fs::create_dir_all(scratch_dir).unwrap();
    let dom_path = scratch_dir.join("dom.html");
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
        ])
        .arg(format!(
            "--user-data-dir={}",
            scratch_dir.join("profile").display()
        ))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.canonicalize().unwrap().display()))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&dom_path).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().expect("wait for chromium") {
            assert!(status.success(), "chromium failed: {status}");
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::fs::read_to_string(dom_path).unwrap()
}

/// A report of a real run with one `displayed` record shown again later: a duplicate display.
fn failing_report(dir: &Path) -> PathBuf {
    let outcome = run(&Scenario::load("one-to-one").unwrap(), 1);
    let mut history: History = outcome.history.clone();
    let first = history
        .records
        .iter()
        .position(|r| matches!(&r.entry, Entry::Protocol(e) if e.name() == "displayed"))
        .unwrap();
    let mut copy = history.records[first].clone();
    copy.t_ms = history.records[first + 30].t_ms;
    history.records.insert(first + 30, copy);
    let violations = check_all(&history);
    assert!(!violations.is_empty());
    let summary = RunSummary {
        scenario: "one-to-one",
        seed: 1,
        history: &history,
        violations: &violations,
        stats: None,
    };
    let report = Report::build(&summary);
    imsim_reports::write(&report, dir, imsim_reports::Overwrite::Refuse).unwrap();
    dir.join("report.html")
}

#[test]
fn report_renders_in_headless_chromium() {
    let Some(browser) = chromium() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI installs chromium (.ci/run), but it is not on PATH"
        );
        println!(
            "SKIPPED report_renders_in_headless_chromium: `chromium` is not installed \
             (apt-get install chromium); CI installs it and runs this test"
        );
        return;
    };
    let dir = cli_report("chromium");
    let dom = rendered_dom(&browser, &dir.join("report.html"), &dir.join("browser"));
    assert!(
        dom.contains(r#"data-ready="timeline""#),
        "the page's script ran to its end"
    );
    assert!(
        dom.contains(r#"<svg id="timeline""#),
        "the timeline is in the DOM"
    );
    assert!(dom.contains(r#"<svg id="overview""#));
    assert!(
        dom.contains(r#"<table id="invariants""#),
        "the invariant table is in the DOM"
    );
    assert!(dom.contains(r#"<tr id="inv-E1" class="held">"#));
    assert!(dom.contains(r#"id="latency-histogram""#));
    assert!(
        dom.contains(r#"class="tick""#),
        "the script drew the time axis"
    );

    let failing = scratch("chromium-failing");
    let page = failing_report(&failing);
    let dom = rendered_dom(&browser, &page, &failing.join("browser"));
    assert!(dom.contains(r#"data-ready="timeline""#));
    assert!(dom.contains(r#"<tr id="inv-E1" class="violated">"#));
    assert!(dom.contains(r#"id="witness""#) && dom.contains("witness-ring"));
    assert!(dom.contains("imsim replay one-to-one --seed 1"));
}
