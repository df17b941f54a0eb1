//! Simulated time as the report writes it.

/// `1.5 s`, `250 ms`: simulated time for a label.
pub fn seconds(ms: u64) -> String {
    if ms < 1_000 {
        format!("{ms} ms")
    } else if ms.is_multiple_of(1_000) {
        format!("{} s", ms / 1_000)
    } else {
        format!("{:.1} s", ms as f64 / 1000.0)
    }
}

/// `12.345 s`: a point in simulated time, to the millisecond.
pub fn seconds_precise(ms: u64) -> String {
    format!("{}.{:03} s", ms / 1000, ms % 1000)
}
