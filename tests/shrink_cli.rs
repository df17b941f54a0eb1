//! `imsim shrink` and `imsim run --save-failures`: the files they write replay the failure with
//! `imsim run FILE` and `imsim replay FILE --seed N`; existing files are never overwritten
//! silently; bad input exits 2.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const MADE_TO_FAIL: &str = "tests/fixtures/quiet-period-1ms.toml";

fn imsim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_imsim"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run imsim")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).to_string()
}

/// A fresh, empty scratch directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("shrink-cli")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn shrink_writes_a_file_that_replays_the_failure() {
    let out = scratch("shrink").join("d2.toml");
    let out_arg = out.to_str().unwrap();
    let shrink = imsim(&["shrink", MADE_TO_FAIL, "--seed", "3", "--out", out_arg]);
    assert_eq!(shrink.status.code(), Some(0), "{shrink:?}");
    let text = stdout(&shrink);
    assert!(
        text.contains("before: devices 6") && text.contains("after:  devices 2"),
        "{text}"
    );
    assert!(
        String::from_utf8_lossy(&shrink.stderr).contains("shrink:"),
        "progress on stderr"
    );
    let file = std::fs::read_to_string(&out).unwrap();
    assert!(file.starts_with("# Shrunk by `imsim shrink"), "{file}");
    assert!(
        file.contains("[pinned]\nseed = 3\nexpect = [\"D2\"]"),
        "{file}"
    );

    // `run` picks the pinned seed; both commands exit 1 on the same invariant.
    let rerun = imsim(&["run", out_arg]);
    assert_eq!(rerun.status.code(), Some(1));
    assert!(stdout(&rerun).contains(" seed 3 ") && stdout(&rerun).contains("VIOLATION D2"));
    let replay = imsim(&["replay", out_arg, "--seed", "3"]);
    assert_eq!(replay.status.code(), Some(1));
    assert!(stdout(&replay).contains("VIOLATION D2"));
    assert!(stdout(&replay).contains("trace-hash: "));

    // Never overwritten without --force.
    std::fs::write(&out, "precious").unwrap();
    let again = imsim(&["shrink", MADE_TO_FAIL, "--seed", "3", "--out", out_arg]);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "precious");
    let forced = imsim(&[
        "shrink",
        MADE_TO_FAIL,
        "--seed",
        "3",
        "--out",
        out_arg,
        "--force",
    ]);
    assert_eq!(forced.status.code(), Some(0));
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        file,
        "shrinking is deterministic"
    );
}

#[test]
fn explicit_only_pins_a_passing_seed() {
    let out = scratch("explicit").join("one-to-one-seed4.toml");
    let out_arg = out.to_str().unwrap();
    let pin = imsim(&[
        "shrink",
        "one-to-one",
        "--seed",
        "4",
        "--explicit",
        "--note",
        "a note",
        "--out",
        out_arg,
    ]);
    assert_eq!(pin.status.code(), Some(0), "{pin:?}");
    let file = std::fs::read_to_string(&out).unwrap();
    assert!(
        file.contains("expect = []") && file.contains("note = \"a note\""),
        "{file}"
    );
    let original = imsim(&["replay", "one-to-one", "--seed", "4"]);
    let pinned = imsim(&["replay", out_arg, "--seed", "4"]);
    let hash = |output: &Output| stdout(output).lines().last().unwrap_or("").to_string();
    assert_eq!(pinned.status.code(), Some(0));
    assert_eq!(
        hash(&pinned),
        hash(&original),
        "the explicit form is the same run"
    );
}

#[test]
fn shrink_rejects_bad_input_with_exit_two() {
    let out = scratch("bad").join("out.toml");
    let out_arg = out.to_str().unwrap();
    let cases: [&[&str]; 5] = [
        // Seed 45 of the fixture passes: nothing to shrink.
        &["shrink", MADE_TO_FAIL, "--seed", "45", "--out", out_arg],
        &[
            "shrink",
            MADE_TO_FAIL,
            "--seed",
            "3",
            "--invariant",
            "Z9",
            "--out",
            out_arg,
        ],
        &[
            "shrink",
            MADE_TO_FAIL,
            "--seed",
            "3",
            "--invariant",
            "O1",
            "--out",
            out_arg,
        ],
        // No --seed, and the scenario pins none.
        &["shrink", MADE_TO_FAIL, "--out", out_arg],
        &[
            "shrink",
            "no-such-scenario.toml",
            "--seed",
            "1",
            "--out",
            out_arg,
        ],
    ];
    for args in cases {
        let output = imsim(args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(!out.exists(), "{args:?} wrote a file");
    }
}

#[test]
fn save_failures_writes_each_failing_seed_once() {
    let dir = scratch("saved").join("new-dir");
    let dir_arg = dir.to_str().unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec![
            "run",
            MADE_TO_FAIL,
            "--seeds",
            "44..48",
            "--save-failures",
            dir_arg,
        ];
        args.extend(extra);
        imsim(&args)
    };
    let names = || {
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        names.sort();
        names
    };
    // Seeds 44 and 47 fail (on D4, on D2 and D4), 45 and 46 pass.
    assert_eq!(run(&[]).status.code(), Some(1));
    let explicit = [
        "quiet-period-1ms-seed44.toml",
        "quiet-period-1ms-seed47.toml",
    ];
    assert_eq!(names(), explicit);
    // The same sweep again finds the same files and adds nothing.
    assert_eq!(run(&[]).status.code(), Some(1));
    assert_eq!(names(), explicit);
    // Shrunk, the files differ: they get a suffix instead of replacing the explicit forms.
    assert_eq!(run(&["--shrink"]).status.code(), Some(1));
    assert_eq!(
        names(),
        [
            "quiet-period-1ms-seed44-2.toml",
            "quiet-period-1ms-seed44.toml",
            "quiet-period-1ms-seed47-2.toml",
            "quiet-period-1ms-seed47.toml"
        ]
    );
    for name in names() {
        let path = dir.join(&name);
        let text = std::fs::read_to_string(&path).unwrap();
        let expect = text
            .lines()
            .find_map(|line| line.strip_prefix("expect = "))
            .unwrap_or_else(|| panic!("{name}: no expect: {text}"));
        let codes: Vec<&str> = expect
            .trim_matches(|c| c == '[' || c == ']')
            .split(", ")
            .map(|code| code.trim_matches('"'))
            .collect();
        assert!(!codes.is_empty() && !codes[0].is_empty(), "{name}: {text}");
        let replay = imsim(&["run", path.to_str().unwrap()]);
        assert_eq!(replay.status.code(), Some(1), "{name}");
        for code in codes {
            let line = format!("VIOLATION {code}");
            assert!(stdout(&replay).contains(&line), "{name}: no {line}");
        }
    }
    let shrink_alone = imsim(&["run", MADE_TO_FAIL, "--seed", "7", "--shrink"]);
    assert_eq!(
        shrink_alone.status.code(),
        Some(2),
        "--shrink needs --save-failures"
    );
}
