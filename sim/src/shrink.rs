//! Shrinking: a failing run made small while the same invariant still fails, so a person can
//! read the whole story. The run is first written out in its explicit form (see [`explicit`]),
//! which must fail the same way; then passes cut it down, round after round until none makes
//! progress or the run budget is spent:
//!
//! - fault entries (each packet fault class and each of its links, each partition, crash,
//!   restart and clock skew) and user actions (`workload.script`), by delta debugging: drop
//!   large chunks first, halve the chunks when none can go, down to single entries;
//! - conversations, users and device slots, dropped the same way and the rest renumbered
//!   (see `cut`);
//! - the tail: the run ended as early as it still fails (later actions and faults go with it);
//! - time: `workload.duration_ms` cut to the last action or fault, else bisected; idle gaps
//!   between actions and faults bisected down;
//! - for a safety failure, once nothing else goes, the liveness quiet period (a liveness
//!   failure keeps its bound: a shorter wait would make any run fail), then another round;
//! - then single parts ([`one_part_less`]) until none can go, so the result is 1-minimal;
//! - last, message bodies replaced by the short default.
//!
//! A candidate is kept when its run violates the target invariant and nothing that the current
//! best does not, so a shrink never trades its failure for another one, and when its history is
//! no longer (so no axis a shrink reports ever grows); only the 1-minimal pass keeps a cut that
//! also breaks something else or makes the history longer. The seed is kept: the
//! schedule (madsim's and the fault rules' streams) comes from it. [`shrink_passing`] shrinks a
//! passing run the same way while a property of its history holds, for regression cases.

mod cut;

use crate::explicit::{codes, explicit, failing, Size};
use crate::run::RunOutcome;
use crate::scenario::{Pinned, Scenario};
use cut::{duration_floor, keep_topology, moments, shift_earlier, truncate, Keep};
use imsim_history::check::{Class, Family, Invariant};
use imsim_history::Fnv1a;
use std::collections::{BTreeSet, HashSet};
use std::fmt;

/// Makes one run: [`crate::run`] for the correct protocol; a protocol variant brings its own.
pub type Runner<'a> = &'a dyn Fn(&Scenario, u64) -> RunOutcome;

/// A shrink's default budget: a few seconds of release-build runs for a small scenario.
pub const RUNS_MAX_DEFAULT: u64 = 3_000;

#[derive(Clone, Debug)]
pub struct ShrinkOptions {
    /// The invariant that must keep failing; by default the run's first violation (safety
    /// before liveness), a cost overrun (C1) only when nothing else fails.
    pub target: Option<Invariant>,
    /// At most this many runs, the explicit form's included.
    pub runs_max: u64,
}

impl Default for ShrinkOptions {
    fn default() -> Self {
        ShrinkOptions {
            target: None,
            runs_max: RUNS_MAX_DEFAULT,
        }
    }
}

/// The result: a pinned explicit scenario whose `expect` lists what its run violates.
#[derive(Clone, Debug)]
pub struct Shrunk {
    pub scenario: Scenario,
    /// The invariant that still fails (none for [`shrink_passing`]).
    pub target: Option<Invariant>,
    pub before: Size,
    pub after: Size,
    /// Runs made, the original's and the explicit form's included.
    pub runs: u64,
    /// The shrunk scenario's run.
    pub outcome: RunOutcome,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShrinkError {
    /// Every invariant held: there is nothing to shrink.
    Passes,
    /// The run fails, but not the invariant asked for.
    TargetHolds {
        target: Invariant,
        failing: Vec<Invariant>,
    },
    /// The explicit form does not fail like the run: a bug in the explicit form.
    Unfaithful {
        target: Invariant,
        failing: Vec<Invariant>,
    },
    /// [`shrink_passing`] on a run (or explicit form) that violates these.
    Fails(Vec<Invariant>),
    /// [`shrink_passing`] on a run that does not show what it should keep.
    NotShown,
    /// The run (or its explicit form) panicked: a bug in the model or the harness, which a
    /// shrink cannot aim at since no invariant names it. The panic's message.
    Panicked(String),
}

impl fmt::Display for ShrinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |failing: &[Invariant]| {
            let names: Vec<String> = failing.iter().map(|i| i.to_string()).collect();
            names.join(", ")
        };
        match self {
            ShrinkError::Passes => write!(f, "every invariant held: nothing to shrink"),
            ShrinkError::TargetHolds { target, failing } => write!(
                f,
                "{target} held in this run; it violated {}",
                list(failing)
            ),
            ShrinkError::Unfaithful { target, failing } => write!(
                f,
                "the explicit form of the run does not violate {target} (it violated: {}); \
                 please report this as a bug",
                list(failing)
            ),
            ShrinkError::Fails(failing) => write!(f, "the run violates {}", list(failing)),
            ShrinkError::NotShown => write!(f, "the run does not show the schedule to keep"),
            ShrinkError::Panicked(message) => write!(
                f,
                "the run panicked ({message}): a bug in the model or the harness, not a \
                 violation a shrink can keep; replay the seed to see where"
            ),
        }
    }
}

impl std::error::Error for ShrinkError {}

/// Runs `scenario` with `seed`, turning a panic into [`ShrinkError::Panicked`].
fn run_caught(runner: Runner, scenario: &Scenario, seed: u64) -> Result<RunOutcome, ShrinkError> {
    let run = std::panic::AssertUnwindSafe(|| runner(scenario, seed));
    std::panic::catch_unwind(run).map_err(|payload| ShrinkError::Panicked(panic_message(&*payload)))
}

/// The message a panic was raised with.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string())
}

/// Shrinks the failing run of `scenario` with `seed`. `progress` gets a line whenever a pass
/// made the scenario smaller.
pub fn shrink(
    scenario: &Scenario,
    seed: u64,
    options: &ShrinkOptions,
    runner: Runner,
    progress: &mut dyn FnMut(&str),
) -> Result<Shrunk, ShrinkError> {
    let original = run_caught(runner, scenario, seed)?;
    let violated = failing(&original);
    let first = original.violations.first().ok_or(ShrinkError::Passes)?;
    // A cost overrun (C1) needs enough work to be judged at all, so it cannot shrink far: the
    // default target is the first violation of any other family, when there is one.
    let first = original
        .violations
        .iter()
        .find(|violation| violation.invariant.family() != Family::Cost)
        .unwrap_or(first);
    let target = options.target.unwrap_or(first.invariant);
    if !violated.contains(&target) {
        return Err(ShrinkError::TargetHolds {
            target,
            failing: violated.into_iter().collect(),
        });
    }
    let form = explicit(scenario, seed);
    let outcome = run_caught(runner, &form, seed)?;
    let form_violated = failing(&outcome);
    if !form_violated.contains(&target) {
        return Err(ShrinkError::Unfaithful {
            target,
            failing: form_violated.into_iter().collect(),
        });
    }
    let before = Size::of(&original);
    progress(&format!(
        "shrinking {target}: {before} (the explicit form reproduces it)"
    ));
    let keep = move |outcome: &RunOutcome| failing(outcome).contains(&target);
    let mut shrinker = Shrinker {
        seed,
        keep: &keep,
        shrink_quiet_period: target.class() == Class::Safety,
        runner,
        runs: 2,
        runs_max: options.runs_max,
        best: form,
        best_outcome: outcome,
        allowed: form_violated,
        tried: HashSet::new(),
        progress,
    };
    shrinker.minimise();
    Ok(shrinker.finish(Some(target), before))
}

/// Shrinks a run in which every invariant holds, while `keep` still holds of it: a pinned case
/// that guards a schedule worth keeping (a crash between a write and its sync, a
/// retransmission that restores sender order), made small enough to read. The quiet period is
/// left alone.
pub fn shrink_passing(
    scenario: &Scenario,
    seed: u64,
    keep: &dyn Fn(&RunOutcome) -> bool,
    runs_max: u64,
    runner: Runner,
    progress: &mut dyn FnMut(&str),
) -> Result<Shrunk, ShrinkError> {
    let original = run_caught(runner, scenario, seed)?;
    let form = explicit(scenario, seed);
    let outcome = run_caught(runner, &form, seed)?;
    for run in [&original, &outcome] {
        if !run.ok() {
            return Err(ShrinkError::Fails(failing(run).into_iter().collect()));
        }
        if !keep(run) {
            return Err(ShrinkError::NotShown);
        }
    }
    let before = Size::of(&original);
    progress(&format!("shrinking while the schedule shows it: {before}"));
    let mut shrinker = Shrinker {
        seed,
        keep,
        shrink_quiet_period: false,
        runner,
        runs: 2,
        runs_max,
        best: form,
        best_outcome: outcome,
        allowed: BTreeSet::new(),
        tried: HashSet::new(),
        progress,
    };
    shrinker.minimise();
    Ok(shrinker.finish(None, before))
}

/// Every scenario one part smaller than `scenario` (an explicit one), each with what it lacks: one
/// user (with its devices), one device slot (of every user), one conversation or group, one
/// scripted action (a send, membership change, read, login or logout) or one fault entry. A
/// shrunk scenario is 1-minimal when none of them still fails the target. Parts a cut cannot
/// remove alone (the second of two users, the last conversation) are not listed.
pub fn one_part_less(scenario: &Scenario) -> Vec<(String, Scenario)> {
    let all = Keep::all(scenario);
    let without = |parts: &[u32], part: u32| -> Vec<u32> {
        parts.iter().copied().filter(|p| *p != part).collect()
    };
    let mut smaller = Vec::new();
    let mut topology = |what: String, keep: Keep| {
        if let Some(cut) = keep_topology(scenario, &keep) {
            smaller.push((what, cut));
        }
    };
    for user in &all.users {
        let users = without(&all.users, *user);
        topology(
            format!("user u{user}"),
            Keep {
                users,
                ..all.clone()
            },
        );
    }
    for slot in &all.slots {
        let slots = without(&all.slots, *slot);
        topology(
            format!("device slot {slot}"),
            Keep {
                slots,
                ..all.clone()
            },
        );
    }
    for conv in &all.conversations {
        let conversations = without(&all.conversations, *conv);
        topology(
            format!("conversation c{conv}"),
            Keep {
                conversations,
                ..all.clone()
            },
        );
    }
    for (i, action) in scenario.workload.script.iter().enumerate() {
        let mut cut = scenario.clone();
        cut.workload.script.remove(i);
        let what = format!(
            "workload.script[{i}] ({:?} by d{} at {} ms)",
            action.action, action.device, action.at_ms
        );
        smaller.push((what, cut));
    }
    let entries = scenario.faults.profile.entries();
    for (i, entry) in entries.iter().enumerate() {
        let mut kept = entries.clone();
        kept.remove(i);
        let mut cut = scenario.clone();
        cut.faults.profile = scenario.faults.profile.keep(&kept);
        smaller.push((format!("fault {entry:?}"), cut));
    }
    smaller
        .into_iter()
        .filter(|(_, cut)| cut.validate().is_ok())
        .collect()
}

/// Builds a candidate from the pass's starting scenario and the indices of the parts it keeps.
type Build<'b> = &'b dyn Fn(&Scenario, &[usize]) -> Option<Scenario>;

struct Shrinker<'a> {
    seed: u64,
    /// What a candidate's run must still show (the target invariant failing, say).
    keep: &'a dyn Fn(&RunOutcome) -> bool,
    shrink_quiet_period: bool,
    runner: Runner<'a>,
    runs: u64,
    runs_max: u64,
    best: Scenario,
    best_outcome: RunOutcome,
    /// What the best run violates: a candidate may violate no more.
    allowed: BTreeSet<Invariant>,
    /// Hashes of every candidate already run, so a later round does not run one again.
    tried: HashSet<u64>,
    progress: &'a mut dyn FnMut(&str),
}

impl Shrinker<'_> {
    /// The best scenario, pinned with what its run violates.
    fn finish(self, target: Option<Invariant>, before: Size) -> Shrunk {
        let mut scenario = self.best;
        scenario.pinned = Some(Pinned {
            seed: self.seed,
            expect: codes(&self.allowed),
            note: String::new(),
        });
        Shrunk {
            scenario,
            target,
            before,
            after: Size::of(&self.best_outcome),
            runs: self.runs,
            outcome: self.best_outcome,
        }
    }

    fn minimise(&mut self) {
        type Pass<'p> = (&'static str, fn(&mut Shrinker<'p>) -> bool);
        let passes: [Pass; 8] = [
            ("tail", Shrinker::cut_tail),
            ("faults", Shrinker::cut_faults),
            ("actions", Shrinker::cut_actions),
            ("conversations", Shrinker::cut_conversations),
            ("users", Shrinker::cut_users),
            ("device slots", Shrinker::cut_slots),
            ("duration", Shrinker::cut_duration),
            ("idle time", Shrinker::cut_gaps),
        ];
        // The quiet period goes last: once it is short, nearly any other cut leaves something
        // undelivered at the end, a liveness violation the best run does not have, and is
        // refused. The passes get one more round after it, for what it made possible.
        let mut rounds_after_quiet = 0;
        while rounds_after_quiet < 2 && self.budget_left() {
            let mut changed = true;
            while changed && self.budget_left() {
                changed = false;
                for (name, pass) in passes {
                    if pass(self) {
                        changed = true;
                        self.report(name);
                    }
                }
            }
            if !self.cut_quiet_period() {
                break;
            }
            self.report("quiet period");
            rounds_after_quiet += 1;
        }
        if self.one_minimal() {
            self.report("one part");
        }
        if self.plain_bodies() {
            self.report("bodies");
        }
        if !self.budget_left() {
            (self.progress)(&format!(
                "run budget of {} spent; the result may not be minimal",
                self.runs_max
            ));
        }
    }

    fn report(&mut self, pass: &str) {
        let size = Size::of(&self.best_outcome);
        (self.progress)(&format!("[{:>5} runs] {pass:<13} {size}", self.runs));
    }

    fn budget_left(&self) -> bool {
        self.runs < self.runs_max
    }

    /// Runs `candidate` and keeps it when its run still shows what it must, and violates
    /// nothing new.
    fn attempt(&mut self, candidate: Scenario) -> bool {
        self.attempt_with(candidate, false)
    }

    /// [`Shrinker::attempt`]; `only_keep`: keep the candidate whenever its run shows what it
    /// must, whatever else it violates and however long it is.
    fn attempt_with(&mut self, candidate: Scenario, only_keep: bool) -> bool {
        if !self.budget_left() || candidate.validate().is_err() {
            return false;
        }
        let mut hash = Fnv1a::new();
        hash.write(candidate.to_toml().as_bytes());
        hash.write(&[u8::from(only_keep)]);
        if !self.tried.insert(hash.finish()) {
            return false;
        }
        self.runs += 1;
        // A candidate whose run panics fails, but not the way being shrunk: it is not kept, and
        // the shrink goes on (a bug the cut uncovered is worth knowing, so it is reported).
        let outcome = match run_caught(self.runner, &candidate, self.seed) {
            Ok(outcome) => outcome,
            Err(ShrinkError::Panicked(message)) => {
                (self.progress)(&format!(
                    "[{:>5} runs] a candidate panicked ({message}); not kept",
                    self.runs
                ));
                return false;
            }
            Err(error) => unreachable!("run_caught fails only with a panic: {error}"),
        };
        let violated = failing(&outcome);
        // Never more events either: every axis a shrink reports only goes down.
        let events = outcome.history.records.len();
        let smaller =
            violated.is_subset(&self.allowed) && events <= self.best_outcome.history.records.len();
        if !(self.keep)(&outcome) || !(smaller || only_keep) {
            return false;
        }
        self.best = candidate;
        self.best_outcome = outcome;
        self.allowed = violated;
        true
    }

    /// Delta debugging over `count` parts of the best scenario: try without each chunk of the
    /// parts still kept, starting with all of them as one chunk; when no chunk can go, halve
    /// the chunks, down to single parts. Returns whether anything went.
    fn ddmin(&mut self, count: usize, build: Build) -> bool {
        let base = self.best.clone();
        let mut kept: Vec<usize> = (0..count).collect();
        let mut chunks = 1;
        while !kept.is_empty() && self.budget_left() {
            let size = kept.len().div_ceil(chunks);
            let dropped = (0..kept.len()).step_by(size).find(|start| {
                let rest: Vec<usize> = kept[..*start]
                    .iter()
                    .chain(&kept[(start + size).min(kept.len())..])
                    .copied()
                    .collect();
                let accepted = build(&base, &rest).is_some_and(|c| self.attempt(c));
                if accepted {
                    kept = rest;
                }
                accepted
            });
            if dropped.is_some() {
                chunks = (chunks - 1).max(2).min(kept.len().max(1));
            } else if chunks >= kept.len() {
                break;
            } else {
                chunks = (chunks * 2).min(kept.len());
            }
        }
        kept.len() < count
    }

    /// A small value in [floor, current] whose run still fails; `set` makes the candidate for a
    /// value from the best scenario as it was at the start. Whether a run fails is not monotonic
    /// in a time (every packet's latency draw moves), so plain bisection would stop early: climb
    /// a ladder from `floor` (floor, +1, +3, +7 …) and bisect only between its last two rungs.
    /// Returns whether the value went down.
    fn bisect(&mut self, floor: u64, current: u64, set: &dyn Fn(&mut Scenario, u64)) -> bool {
        let base = self.best.clone();
        let candidate = |value| {
            let mut scenario = base.clone();
            set(&mut scenario, value);
            scenario
        };
        // The highest rung that still passed, and the first that failed.
        let (mut passed, mut failed) = (None, current);
        let (mut rung, mut step) = (floor, 1);
        while rung < current && self.budget_left() {
            if self.attempt(candidate(rung)) {
                failed = rung;
                break;
            }
            passed = Some(rung);
            rung = (floor + step).min(current);
            step = step * 2 + 1;
        }
        if let Some(mut low) = passed {
            while low + 1 < failed && self.budget_left() {
                let middle = low + (failed - low) / 2;
                if self.attempt(candidate(middle)) {
                    failed = middle;
                } else {
                    low = middle;
                }
            }
        }
        failed < current
    }

    fn cut_faults(&mut self) -> bool {
        let entries = self.best.faults.profile.entries();
        self.ddmin(entries.len(), &|base, kept| {
            let kept: Vec<_> = kept.iter().map(|i| entries[*i]).collect();
            let mut scenario = base.clone();
            scenario.faults.profile = base.faults.profile.keep(&kept);
            Some(scenario)
        })
    }

    fn cut_actions(&mut self) -> bool {
        self.ddmin(self.best.workload.script.len(), &|base, kept| {
            let mut scenario = base.clone();
            scenario.workload.script = kept
                .iter()
                .map(|i| base.workload.script[*i].clone())
                .collect();
            Some(scenario)
        })
    }

    fn cut_conversations(&mut self) -> bool {
        let all = Keep::all(&self.best);
        self.ddmin(all.conversations.len(), &|base, kept| {
            let conversations = kept.iter().map(|i| all.conversations[*i]).collect();
            keep_topology(
                base,
                &Keep {
                    conversations,
                    ..all.clone()
                },
            )
        })
    }

    fn cut_users(&mut self) -> bool {
        let all = Keep::all(&self.best);
        self.ddmin(all.users.len(), &|base, kept| {
            let users = kept.iter().map(|i| all.users[*i]).collect();
            keep_topology(
                base,
                &Keep {
                    users,
                    ..all.clone()
                },
            )
        })
    }

    fn cut_slots(&mut self) -> bool {
        let all = Keep::all(&self.best);
        self.ddmin(all.slots.len(), &|base, kept| {
            let slots = kept.iter().map(|i| all.slots[*i]).collect();
            keep_topology(
                base,
                &Keep {
                    slots,
                    ..all.clone()
                },
            )
        })
    }

    /// Ends the run as early as it still fails: everything from some moment on goes at once.
    /// A failure usually shows long before the end, and a bisection on the end costs a few
    /// dozen runs where delta debugging over each action after it costs hundreds.
    fn cut_tail(&mut self) -> bool {
        let current = self.best.workload.duration_ms;
        self.bisect(1, current, &|scenario, end_ms| {
            *scenario = truncate(scenario, end_ms)
        })
    }

    fn cut_duration(&mut self) -> bool {
        let floor = duration_floor(&self.best);
        let current = self.best.workload.duration_ms;
        self.bisect(floor, current, &|scenario, ms| {
            scenario.workload.duration_ms = ms
        })
    }

    fn cut_quiet_period(&mut self) -> bool {
        if !self.shrink_quiet_period {
            return false;
        }
        let current = self.best.quiet_period_ms();
        self.bisect(1, current, &|scenario, ms| {
            scenario.liveness.quiet_period_ms = Some(ms)
        })
    }

    /// Idle stretches make long traces (heartbeats, timeouts) that explain nothing: each gap
    /// between one moment something happens (an action, a fault starting) and the next is
    /// bisected down, everything after it moving earlier together.
    fn cut_gaps(&mut self) -> bool {
        let mut changed = false;
        let mut gap_index = 0;
        while self.budget_left() {
            let moments = moments(&self.best);
            let Some(pair) = moments.get(gap_index..gap_index + 2) else {
                break;
            };
            let (from_ms, gap_ms) = (pair[1], pair[1] - pair[0]);
            changed |= self.bisect(0, gap_ms, &|scenario, new_gap_ms| {
                shift_earlier(scenario, from_ms, gap_ms - new_gap_ms)
            });
            gap_index += 1;
        }
        changed
    }

    /// Makes the result 1-minimal: while taking away any one part ([`one_part_less`]) still
    /// leaves the failure being shrunk, take it away, even when its run is longer or also breaks
    /// something else (those are added to what the file expects). The passes above refuse such
    /// cuts so a shrink never trades its failure for another one; at the end, a witness with a
    /// part that does not matter would mislead its reader more. Returns whether anything went.
    fn one_minimal(&mut self) -> bool {
        // A passing run being shrunk ([`shrink_passing`]) must stay passing.
        let only_keep = !self.allowed.is_empty();
        let mut changed = false;
        let mut progress = true;
        while progress && self.budget_left() {
            progress = false;
            for (_, candidate) in one_part_less(&self.best) {
                if self.attempt_with(candidate, only_keep) {
                    changed = true;
                    progress = true;
                    break;
                }
            }
        }
        changed
    }

    /// Sends with the default body (`d<device> #<n>`) read better than bodies that name the
    /// devices of before the renumbering.
    fn plain_bodies(&mut self) -> bool {
        let mut scenario = self.best.clone();
        for action in &mut scenario.workload.script {
            action.body = None;
        }
        scenario != self.best && self.attempt(scenario)
    }
}
