//! `imsim shrink` and `imsim run --save-failures`: a failing run written out as a replayable
//! scenario file (its explicit form, pinned to the seed), shrunk when asked. Files are never
//! overwritten silently: `shrink --out` refuses an existing file without `--force`, and
//! `--save-failures` adds a suffix (`-2`, `-3` …) unless the same file is already there.

use crate::output::say;
use imsim_history::Invariant;
use imsim_sim::explicit::{codes, explicit, failing, render, Size};
use imsim_sim::shrink::{shrink, ShrinkOptions, Shrunk, RUNS_MAX_DEFAULT};
use imsim_sim::{run, RunOutcome, Scenario};
use std::fs::OpenOptions;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(clap::Args)]
pub struct ShrinkArgs {
    /// A scenario file or a shipped scenario name.
    scenario: String,
    /// The failing seed; a scenario with `[pinned]` defaults to its seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Where to write the shrunk scenario.
    #[arg(long)]
    out: PathBuf,
    /// The invariant that must keep failing (a code such as D2, or a name); by default the
    /// run's first violation.
    #[arg(long)]
    invariant: Option<String>,
    /// At most this many runs.
    #[arg(long, default_value_t = RUNS_MAX_DEFAULT)]
    runs_max: u64,
    /// Write the explicit form without minimising it (also for a passing seed: a pinned case).
    #[arg(long)]
    explicit: bool,
    /// The file's `[pinned] note`: a one-line postmortem.
    #[arg(long)]
    note: Option<String>,
    /// Overwrite `--out` if it exists.
    #[arg(long)]
    force: bool,
    /// Shrink a failure of a deliberately broken protocol (see `imsim variants`).
    #[arg(long, value_name = "NAME", value_parser = crate::args::parse_variant)]
    variant: Option<imsim_model::Variant>,
}

pub fn command_shrink(args: ShrinkArgs) -> Result<bool, String> {
    let scenario = crate::args::load(&args.scenario, args.variant)?;
    let seed = args
        .seed
        .or(scenario.pinned.as_ref().map(|pinned| pinned.seed))
        .ok_or("--seed is required (the scenario has no [pinned] seed)")?;
    let target = args.invariant.as_deref().map(parse_invariant).transpose()?;
    if args.out.exists() && !args.force {
        return Err(format!(
            "{}: already exists; refusing to overwrite it (--force to replace it)",
            args.out.display()
        ));
    }
    let reference = variant_suffix(
        format!("{} --seed {seed}", args.scenario),
        scenario.protocol.variant,
    );
    let out = args.out.display().to_string();
    let (mut pinned, header) = if args.explicit {
        let (form, outcome) = explicit_form(&scenario, seed);
        say!("explicit form: {}", Size::of(&outcome));
        let header = explicit_header(&reference, &form, seed);
        (form, header)
    } else {
        let started = Instant::now();
        let options = ShrinkOptions {
            target,
            runs_max: args.runs_max,
        };
        let shrunk = shrink(&scenario, seed, &options, &run, &mut |line| {
            eprintln!("shrink: {line}")
        })
        .map_err(|error| format!("{reference}: {error}"))?;
        let wall_s = started.elapsed().as_secs_f64();
        let target = shrunk.target.map(|t| t.to_string()).unwrap_or_default();
        say!("shrink: {reference}: {target} still fails");
        say!("before: {}", shrunk.before);
        say!("after:  {}", shrunk.after);
        say!("runs:   {} in {wall_s:.2}s", shrunk.runs);
        let header = shrunk_header(&reference, &shrunk, seed);
        (shrunk.scenario, header)
    };
    let note = pinned_note(&pinned, &reference, args.explicit);
    let pin = pinned.pinned.get_or_insert_with(Default::default);
    pin.note = args.note.unwrap_or(note);
    say!("expect: [{}]", pin.expect.join(", "));
    std::fs::write(&args.out, render(&pinned, &header))
        .map_err(|error| format!("{out}: cannot write: {error}"))?;
    say!("wrote {out}; replay: imsim run {out}  (or imsim replay {out} --seed {seed})");
    Ok(true)
}

/// `D2`, `d2` or `eventual-delivery`.
fn parse_invariant(text: &str) -> Result<Invariant, String> {
    Invariant::ALL
        .iter()
        .copied()
        .find(|i| i.code().eq_ignore_ascii_case(text) || i.name() == text)
        .ok_or_else(|| {
            let known: Vec<&str> = Invariant::ALL.iter().map(|i| i.code()).collect();
            format!(
                "--invariant {text}: no such invariant (known: {})",
                known.join(", ")
            )
        })
}

/// The explicit form of a run, pinned with what it violates.
/// How a run is named in notes: with `--variant NAME` when the protocol is a broken one.
fn variant_suffix(reference: String, variant: imsim_model::Variant) -> String {
    match variant {
        imsim_model::Variant::Correct => reference,
        variant => format!("{reference} --variant {variant}"),
    }
}

fn explicit_form(scenario: &Scenario, seed: u64) -> (Scenario, RunOutcome) {
    let mut form = explicit(scenario, seed);
    let outcome = run(&form, seed);
    if let Some(pinned) = &mut form.pinned {
        pinned.expect = codes(&failing(&outcome));
    }
    (form, outcome)
}

fn explicit_header(reference: &str, form: &Scenario, seed: u64) -> String {
    let expect = form.pinned.as_ref().map(|p| p.expect.join(", "));
    format!(
        "The explicit form of `{reference}` (imsim {}): its topology, every user action and its\n\
         faults written out. Its run violates: [{}].\n\
         Replay: imsim run <this file>   or   imsim replay <this file> --seed {seed}\n",
        env!("CARGO_PKG_VERSION"),
        expect.unwrap_or_default()
    )
}

fn shrunk_header(reference: &str, shrunk: &Shrunk, seed: u64) -> String {
    let target = shrunk.target.map(|t| t.to_string()).unwrap_or_default();
    format!(
        "Shrunk by `imsim shrink {reference}` (imsim {}, {} runs): {} still fails.\n\
         Before: {}.\n\
         After:  {}.\n\
         Replay: imsim run <this file>   or   imsim replay <this file> --seed {seed}\n",
        env!("CARGO_PKG_VERSION"),
        shrunk.runs,
        target,
        shrunk.before,
        shrunk.after
    )
}

/// The default note: where the case comes from, to be replaced by a postmortem.
fn pinned_note(form: &Scenario, reference: &str, explicit_only: bool) -> String {
    let expect = form
        .pinned
        .as_ref()
        .map(|p| p.expect.join(", "))
        .unwrap_or_default();
    let how = if explicit_only {
        "explicit form"
    } else {
        "shrunk"
    };
    match expect.as_str() {
        "" => format!("{how} from {reference}; every invariant holds"),
        _ => format!("{how} from {reference}; violates {expect}"),
    }
}

/// `--save-failures DIR [--shrink]`: writes a failing run to `DIR/<scenario>-seed<N>.toml`
/// and returns the path.
pub fn save_failure(
    dir: &Path,
    scenario_ref: &str,
    scenario: &Scenario,
    outcome: &RunOutcome,
    shrink_it: bool,
) -> Result<PathBuf, String> {
    let seed = outcome.setup.seed;
    let reference = variant_suffix(
        format!("{scenario_ref} --seed {seed}"),
        scenario.protocol.variant,
    );
    let stem: String = scenario
        .name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let stem = format!("{stem}-seed{seed}");
    let (mut form, header) = if shrink_it {
        let shrunk = shrink(
            scenario,
            seed,
            &ShrinkOptions::default(),
            &run,
            &mut |line| eprintln!("shrink {reference}: {line}"),
        )
        .map_err(|error| format!("{reference}: {error}"))?;
        let header = shrunk_header(&reference, &shrunk, seed);
        (shrunk.scenario, header)
    } else {
        let mut form = explicit(scenario, seed);
        if let Some(pinned) = &mut form.pinned {
            pinned.expect = codes(&failing(outcome));
        }
        let header = explicit_header(&reference, &form, seed);
        (form, header)
    };
    let note = pinned_note(&form, &reference, !shrink_it);
    if let Some(pinned) = &mut form.pinned {
        pinned.note = note;
    }
    write_unique(dir, &stem, &render(&form, &header))
}

/// Writes `DIR/STEM.toml`, or `STEM-2.toml`, `STEM-3.toml` … when taken by a different file;
/// a file with the same text already there is the same case saved before, and is kept.
fn write_unique(dir: &Path, stem: &str, text: &str) -> Result<PathBuf, String> {
    for n in 1u32.. {
        let name = match n {
            1 => format!("{stem}.toml"),
            n => format!("{stem}-{n}.toml"),
        };
        let path = dir.join(name);
        match std::fs::read_to_string(&path) {
            Ok(existing) if existing == text => return Ok(path),
            Ok(_) => continue,
            Err(error) if error.kind() == ErrorKind::NotFound => {}
            Err(error) => return Err(format!("{}: cannot read: {error}", path.display())),
        }
        let written = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .and_then(|mut file| file.write_all(text.as_bytes()));
        return match written {
            Ok(()) => Ok(path),
            Err(error) => Err(format!("{}: cannot write: {error}", path.display())),
        };
    }
    unreachable!("u32 suffixes run out only after four billion files")
}
