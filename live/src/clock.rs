//! The wall clock of a live run, one for every process in it.
//!
//! Time is read from `CLOCK_MONOTONIC`, which on Linux is one clock for the whole machine: the
//! server process and the device process read the same clock, so their events merge into one
//! history in the order they happened (an event written before a packet was sent reads an
//! earlier time than any event caused by its arrival). A run fixes an `origin` (a reading of
//! that clock) and a `scale`: scenario time = (clock − origin) / scale. At scale 0.1 every
//! scenario duration and every protocol timeout passes ten times faster, and the history, the
//! model and the checkers all see scenario milliseconds, as in a simulated run.
//!
//! A standalone `imsim serve` uses origin 0 and scale 1: milliseconds since boot, which keep
//! growing across restarts of the server (presence versions depend on that).

use imsim_model::Time;
use std::time::Duration;

/// Scenario time from the machine's monotonic clock.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Clock {
    origin_ns: u64,
    scale: f64,
}

/// The machine's monotonic clock in nanoseconds.
pub fn monotonic_ns() -> u64 {
    let mut spec = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `spec` is a valid, writable timespec; CLOCK_MONOTONIC exists on every Linux and
    // cannot fail with a valid pointer.
    let status = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut spec) };
    assert_eq!(status, 0, "clock_gettime(CLOCK_MONOTONIC) failed");
    spec.tv_sec as u64 * 1_000_000_000 + spec.tv_nsec as u64
}

impl Clock {
    /// `scale` is real time per scenario time (0.1: ten times faster); it must be positive.
    pub fn new(origin_ns: u64, scale: f64) -> Clock {
        assert!(scale > 0.0 && scale.is_finite(), "time scale {scale}");
        Clock { origin_ns, scale }
    }

    /// A clock whose scenario time starts now.
    pub fn starting_now(scale: f64) -> Clock {
        Clock::new(monotonic_ns(), scale)
    }

    pub fn origin_ns(&self) -> u64 {
        self.origin_ns
    }

    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// Scenario microseconds since the origin.
    pub fn now_us(&self) -> u64 {
        let real_ns = monotonic_ns().saturating_sub(self.origin_ns);
        (real_ns as f64 / 1_000.0 / self.scale) as u64
    }

    /// Scenario time now, as the model takes it.
    pub fn now(&self) -> Time {
        Time(self.now_us() / 1_000)
    }

    /// How long from now until scenario time `at_ms` (zero if it is past), in real time.
    pub fn real_until(&self, at_us: u64) -> Duration {
        let due_ns = self.origin_ns as f64 + at_us as f64 * 1_000.0 * self.scale;
        Duration::from_nanos((due_ns - monotonic_ns() as f64).max(0.0) as u64)
    }

    /// A scenario duration in real time.
    pub fn real(&self, duration_ms: u64) -> Duration {
        Duration::from_secs_f64(duration_ms as f64 / 1_000.0 * self.scale)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenario_time_runs_faster_at_a_smaller_scale() {
        let clock = Clock::new(monotonic_ns(), 0.1);
        std::thread::sleep(Duration::from_millis(20));
        let now = clock.now().0;
        assert!(
            (200..2_000).contains(&now),
            "20 ms real is about 200 ms: {now}"
        );
        assert_eq!(clock.real(1_000), Duration::from_millis(100));
        assert!(clock.real_until(clock.now_us() + 1_000_000) <= Duration::from_millis(100));
        assert_eq!(clock.real_until(0), Duration::ZERO);
    }

    #[test]
    fn two_readings_never_go_back() {
        let clock = Clock::new(0, 1.0);
        let first = clock.now_us();
        assert!(clock.now_us() >= first);
    }
}
