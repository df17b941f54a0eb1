//! The progress of a sweep on stderr: a bar on a terminal; elsewhere (a CI log, a pipe) a plain
//! line now and then, so that a long sweep shows it is alive without flooding the log.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// On a non-terminal, a progress line at most this often: a 17,000-run sweep of about ten
/// minutes then logs some twenty lines.
const PROGRESS_LINE_EVERY: Duration = Duration::from_secs(30);

/// A bar on a terminal (stderr), an occasional plain line otherwise.
pub enum Progress {
    Bar(ProgressBar),
    Lines { total: u64, last: Instant },
}

impl Progress {
    pub fn new(total: u64) -> Progress {
        if std::io::stderr().is_terminal() {
            let style = ProgressStyle::with_template(
                "{elapsed_precise} [{bar:40}] {pos}/{len} seeds, eta {eta}, {msg}",
            )
            .expect("a constant template parses")
            .progress_chars("=> ");
            Progress::Bar(ProgressBar::new(total).with_style(style))
        } else {
            Progress::Lines {
                total,
                last: Instant::now(),
            }
        }
    }

    /// Prints through `print` without tearing the bar.
    pub fn print(&self, print: impl FnOnce()) {
        match self {
            Progress::Bar(bar) => bar.suspend(print),
            Progress::Lines { .. } => print(),
        }
    }

    pub fn advance(&mut self, done: u64, failed: u64, started: Instant) {
        match self {
            Progress::Bar(bar) => {
                bar.set_position(done);
                let rate = done as f64 / started.elapsed().as_secs_f64().max(1e-9);
                bar.set_message(format!("{rate:.0} seeds/s, {failed} failed"));
            }
            Progress::Lines { total, last } => {
                if last.elapsed() < PROGRESS_LINE_EVERY || done == *total {
                    return;
                }
                *last = Instant::now();
                let rate = done as f64 / started.elapsed().as_secs_f64().max(1e-9);
                eprintln!(
                    "progress: {done}/{total} seeds ({:.0}%), {failed} failed, {rate:.1} seeds/s",
                    100.0 * done as f64 / (*total).max(1) as f64
                );
            }
        }
    }

    pub fn finish(&self) {
        if let Progress::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}
