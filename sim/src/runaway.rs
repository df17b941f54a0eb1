//! The runaway guard: a run whose traffic grows far beyond the work it does is stopped, not
//! left to slow a sweep down. A protocol loop (a device pulling again and again for news it may
//! not see, a push retried without end) shows as packets without progress; the guard compares
//! the packets sent with the work the run did so far and stops it with a message naming the
//! figures. A sweep reports the stopped seed as a failure with its replay command.
//!
//! The allowance: correct runs of every shipped scenario send at most about 4 packets per unit
//! of work (a display, a send, or a device online for a simulated second; measured on the
//! default set, seeds 0..50: crash-storm 3.9, sender-retry-order 1.8, the rest below 1.5).
//! [`PACKETS_PER_WORK_MAX`] leaves a margin of five times that.

/// Packets allowed per unit of work before a run counts as a runaway.
pub const PACKETS_PER_WORK_MAX: u64 = 20;
/// Packets any run may send before the guard looks at all (start-up: logins, resume pulls).
pub const PACKETS_FREE: u64 = 20_000;
/// The guard looks once per this many packets, so it costs nothing per packet.
pub const CHECK_EVERY_PACKETS: u64 = 4_096;

/// What a run has done so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Work {
    pub displays: u64,
    pub sends: u64,
}

/// `Err` with a message when `packets` exceed the allowance for `work` by `now_ms`.
pub fn check(packets: u64, work: Work, devices: u64, now_ms: u64) -> Result<(), String> {
    let device_seconds = devices * (now_ms / 1_000 + 1);
    let units = work.displays + work.sends + device_seconds;
    let allowance = PACKETS_FREE + PACKETS_PER_WORK_MAX * units;
    if packets <= allowance {
        return Ok(());
    }
    Err(format!(
        "runaway: {packets} packets by {:.3}s of simulated time, more than the allowance of \
         {allowance} ({PACKETS_PER_WORK_MAX} per unit of work: {} displays, {} sends, \
         {device_seconds} device-seconds; plus {PACKETS_FREE}). The protocol is looping: \
         replay the seed with RUST_LOG=imsim=trace to see which packets repeat.",
        now_ms as f64 / 1000.0,
        work.displays,
        work.sends
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traffic_in_proportion_to_work_passes() {
        let work = Work {
            displays: 100,
            sends: 50,
        };
        assert_eq!(check(20_000, Work::default(), 0, 0), Ok(()));
        assert_eq!(check(30_000, work, 10, 60_000), Ok(()));
    }

    #[test]
    fn a_loop_without_progress_is_stopped_with_its_figures() {
        // One device pulling every millisecond for ten seconds, nothing displayed.
        let error = check(30_000, Work::default(), 1, 10_000).unwrap_err();
        assert!(
            error.starts_with("runaway: 30000 packets by 10.000s"),
            "{error}"
        );
        assert!(error.contains("11 device-seconds"), "{error}");
    }
}
