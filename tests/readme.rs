//! The README's sample outputs are the binary's real output. Each sample is a code block right
//! after a marker line
//!
//! ```text
//! <!-- sample: ARGS ; OPTION ; OPTION … -->
//! ```
//!
//! where ARGS are `imsim`'s arguments and the options shape what is shown, in this order:
//! `env K=V` (set a variable), `stderr` (show stderr instead of stdout), `keep A|B|…` (only lines
//! containing one of these), `lines A..B` (1-based, B included), `cut N` (each line at most N
//! characters, then `...`), `prompt` (a first line `$ imsim ARGS`). This test fails when a sample
//! drifts from the binary; `scripts/readme-samples.sh` (`UPDATE_README=1`) rewrites them.

use std::path::Path;
use std::process::Command;

const MARKER: &str = "<!-- sample: ";

/// One marker's recipe.
#[derive(Debug, Default)]
struct Recipe {
    args: Vec<String>,
    env: Vec<(String, String)>,
    stderr: bool,
    keep: Vec<String>,
    lines: Option<(usize, usize)>,
    cut: Option<usize>,
    prompt: bool,
}

fn recipe(marker: &str) -> Recipe {
    let body = marker
        .trim()
        .strip_prefix(MARKER)
        .and_then(|rest| rest.strip_suffix("-->"))
        .unwrap_or_else(|| panic!("a sample marker ends with -->: {marker}"));
    let mut parts = body.split(" ; ").map(str::trim);
    let args = parts.next().unwrap_or_default();
    let mut recipe = Recipe {
        args: args.split_whitespace().map(str::to_string).collect(),
        ..Recipe::default()
    };
    for option in parts {
        let (name, value) = option.split_once(' ').unwrap_or((option, ""));
        match name {
            "env" => {
                let (key, value) = value.split_once('=').expect("env K=V");
                recipe.env.push((key.to_string(), value.to_string()));
            }
            "stderr" => recipe.stderr = true,
            "keep" => recipe.keep = value.split('|').map(str::to_string).collect(),
            "lines" => {
                let (from, to) = value.split_once("..").expect("lines A..B");
                recipe.lines = Some((from.parse().unwrap(), to.parse().unwrap()));
            }
            "cut" => recipe.cut = Some(value.parse().expect("cut N")),
            "prompt" => recipe.prompt = true,
            other => panic!("unknown sample option `{other}` in {marker}"),
        }
    }
    recipe
}

/// What the binary prints for a recipe, shaped by its options.
fn produce(recipe: &Recipe) -> Vec<String> {
    let output = Command::new(env!("CARGO_BIN_EXE_imsim"))
        .args(&recipe.args)
        .envs(recipe.env.iter().map(|(k, v)| (k, v)))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run imsim");
    let bytes = if recipe.stderr {
        &output.stderr
    } else {
        &output.stdout
    };
    let text = String::from_utf8_lossy(bytes);
    let mut lines: Vec<String> = text
        .lines()
        .filter(|line| recipe.keep.is_empty() || recipe.keep.iter().any(|k| line.contains(k)))
        .map(str::to_string)
        .collect();
    if let Some((from, to)) = recipe.lines {
        lines = lines
            .into_iter()
            .skip(from - 1)
            .take(to + 1 - from)
            .collect();
    }
    if let Some(max) = recipe.cut {
        for line in &mut lines {
            if line.chars().count() > max {
                *line = line.chars().take(max).collect::<String>() + "...";
            }
        }
    }
    if recipe.prompt {
        lines.insert(0, format!("$ imsim {}", recipe.args.join(" ")));
    }
    lines
}

/// The README with every sample block replaced by what `produce` gives, and the markers whose
/// block differed.
fn regenerate(readme: &str, produce: impl Fn(&Recipe) -> Vec<String>) -> (String, Vec<String>) {
    let lines: Vec<&str> = readme.lines().collect();
    let (mut out, mut drifted) = (Vec::new(), Vec::new());
    let mut index = 0;
    while index < lines.len() {
        let line = lines[index];
        out.push(line.to_string());
        index += 1;
        if !line.starts_with(MARKER) {
            continue;
        }
        assert!(
            lines.get(index).is_some_and(|l| l.starts_with("```")),
            "a code block must follow {line}"
        );
        out.push(lines[index].to_string());
        let end = (index + 1..lines.len())
            .find(|at| lines[*at] == "```")
            .unwrap_or_else(|| panic!("the block after {line} is not closed"));
        let now: Vec<String> = lines[index + 1..end]
            .iter()
            .map(|l| l.to_string())
            .collect();
        let fresh = produce(&recipe(line));
        if fresh != now {
            drifted.push(line.to_string());
        }
        out.extend(fresh);
        out.push("```".to_string());
        index = end + 1;
    }
    let mut text = out.join("\n");
    text.push('\n');
    (text, drifted)
}

#[test]
fn the_readme_samples_are_what_the_binary_prints() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let readme = std::fs::read_to_string(&path).unwrap();
    assert!(
        readme.matches(MARKER).count() >= 3,
        "the README has its samples"
    );
    let (fresh, drifted) = regenerate(&readme, produce);
    if std::env::var_os("UPDATE_README").is_some() {
        std::fs::write(&path, fresh).unwrap();
        return;
    }
    assert!(
        drifted.is_empty(),
        "README samples differ from the binary's output; run scripts/readme-samples.sh and \
         review the diff: {drifted:#?}"
    );
}

#[test]
fn a_changed_output_is_caught_as_drift() {
    let readme = "intro\n<!-- sample: variants ; lines 1..2 -->\n```\nold line\n```\nend\n";
    let produce = |_: &Recipe| vec!["new line".to_string()];
    let (fresh, drifted) = regenerate(readme, produce);
    assert_eq!(drifted.len(), 1);
    assert_eq!(
        fresh,
        "intro\n<!-- sample: variants ; lines 1..2 -->\n```\nnew line\n```\nend\n"
    );
    let same = |_: &Recipe| vec!["old line".to_string()];
    assert_eq!(regenerate(readme, same).1, Vec::<String>::new());
}

#[test]
fn recipes_shape_the_output() {
    let recipe = recipe(
        "<!-- sample: variants ; keep ack-before|VARIANT ; lines 2..2 ; cut 20 ; prompt -->",
    );
    assert_eq!(
        produce(&recipe),
        vec![
            "$ imsim variants".to_string(),
            "ack-before-store    ...".to_string()
        ]
    );
}
