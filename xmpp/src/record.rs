//! The recorder every client task and the harness write black-box records into.
//!
//! One mutex-guarded list with one clock: records get their `t_ms` under the lock, so the
//! history's line order is the order things happened and `t_ms` never decreases.

use imsim_history::blackbox::{BlackBoxEvent, BlackBoxHistory, BlackBoxRecord};
use std::sync::{Arc, Mutex};
use std::time::Instant;

#[derive(Clone)]
pub struct Recorder {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    started: Instant,
    records: Vec<BlackBoxRecord>,
    /// When set, every record is also printed as it happens (`--verbose`).
    echo: bool,
}

impl Recorder {
    pub fn new(echo: bool) -> Recorder {
        Recorder {
            inner: Arc::new(Mutex::new(Inner {
                started: Instant::now(),
                records: Vec::new(),
                echo,
            })),
        }
    }

    pub fn record(&self, event: BlackBoxEvent) {
        let mut inner = self.lock();
        let elapsed = u64::try_from(inner.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let t_ms = inner
            .records
            .last()
            .map_or(elapsed, |last| last.t_ms.max(elapsed));
        let record = BlackBoxRecord { t_ms, event };
        if inner.echo {
            if let Ok(line) = serde_json::to_string(&record) {
                eprintln!("{line}");
            }
        }
        inner.records.push(record);
    }

    /// Milliseconds since the first record was possible, for quiet-period checks.
    pub fn last_t_ms(&self) -> Option<u64> {
        self.lock().records.last().map(|record| record.t_ms)
    }

    pub fn now_ms(&self) -> u64 {
        u64::try_from(self.lock().started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    pub fn history(&self) -> BlackBoxHistory {
        BlackBoxHistory {
            records: self.lock().records.clone(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Records are pushed whole; a panicking writer cannot leave the list half-written.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
