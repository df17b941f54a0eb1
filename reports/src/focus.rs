//! The window the timeline opens on. A failing run opens on its first violation's witness; a
//! passing one on the whole active run if it stays readable, else on its densest stretch. The
//! overview strip and the zoom controls reach everything else.

use crate::report::{Focus, FocusReason, TimelineEvent};

/// How many events the timeline should show at once for a run to stay readable; the first
/// window is the densest stretch that holds no more than this.
pub const FOCUS_EVENTS_TARGET: usize = 1_500;

/// Window widths tried for the densest stretch, in milliseconds.
const FOCUS_WIDTHS_MS: [u64; 14] = [
    500, 1_000, 2_000, 5_000, 10_000, 20_000, 30_000, 60_000, 120_000, 300_000, 600_000, 1_800_000,
    3_600_000, 7_200_000,
];

/// The window the timeline opens on: around the first violation's witness when there is one;
/// otherwise the densest stretch that stays readable, or the whole active run if it all is.
pub fn focus(events: &[TimelineEvent], witness_times: &[u64], duration_ms: u64) -> Focus {
    if let (Some(first), Some(last)) = (witness_times.iter().min(), witness_times.iter().max()) {
        let pad_ms = ((last - first) / 4).max(1_500);
        return Focus {
            start_ms: first.saturating_sub(pad_ms),
            end_ms: (last + pad_ms).min(duration_ms.max(last + 1)),
            reason: FocusReason::Witness,
        };
    }
    let times: Vec<u64> = events.iter().map(|e| e.t_ms).collect();
    let active_end_ms = times
        .last()
        .map_or(duration_ms, |last| last + last / 50 + 1);
    if times.len() <= FOCUS_EVENTS_TARGET {
        return Focus {
            start_ms: 0,
            end_ms: active_end_ms.min(duration_ms.max(1)),
            reason: FocusReason::WholeRun,
        };
    }
    let mut chosen = (FOCUS_WIDTHS_MS[0], densest(&times, FOCUS_WIDTHS_MS[0]).0);
    for width_ms in FOCUS_WIDTHS_MS {
        let (start_ms, count) = densest(&times, width_ms);
        if count > FOCUS_EVENTS_TARGET {
            break;
        }
        chosen = (width_ms, start_ms);
    }
    let (width_ms, start_ms) = chosen;
    // A little context before the densest stretch.
    let start_ms = start_ms.saturating_sub(width_ms / 10);
    Focus {
        start_ms,
        end_ms: start_ms + width_ms,
        reason: FocusReason::Densest,
    }
}

/// The start of the window of `width_ms` holding the most events (`times` sorted), and how many
/// it holds.
pub fn densest(times: &[u64], width_ms: u64) -> (u64, usize) {
    let (mut best_start, mut best_count, mut first) = (0, 0, 0);
    for (last, t) in times.iter().enumerate() {
        while times[first] + width_ms <= *t {
            first += 1;
        }
        if last + 1 - first > best_count {
            (best_start, best_count) = (times[first], last + 1 - first);
        }
    }
    (best_start, best_count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn densest_window_finds_the_busiest_stretch() {
        let times = [0, 10, 1_000, 1_001, 1_002, 1_003, 5_000];
        assert_eq!(densest(&times, 100), (1_000, 4));
        assert_eq!(densest(&times, 2_000), (0, 6));
        assert_eq!(densest(&[], 100), (0, 0));
    }

    fn events_at(times: &[u64]) -> Vec<TimelineEvent> {
        times
            .iter()
            .enumerate()
            .map(|(index, t_ms)| TimelineEvent {
                index,
                t_ms: *t_ms,
                lane: 0,
                kind: "displayed".to_string(),
                category: "display".to_string(),
                conv: None,
                message: None,
                detail: String::new(),
            })
            .collect()
    }

    #[test]
    fn focus_is_the_witness_else_the_whole_run_else_the_densest_stretch() {
        let few = events_at(&[100, 200, 50_000]);
        let witness = focus(&few, &[10_000, 12_000], 60_000);
        assert_eq!(
            (witness.start_ms, witness.end_ms, witness.reason),
            (8_500, 13_500, FocusReason::Witness)
        );
        let whole = focus(&few, &[], 60_000);
        assert_eq!((whole.start_ms, whole.reason), (0, FocusReason::WholeRun));
        assert!(whole.end_ms > 50_000 && whole.end_ms <= 60_000);
        // Many events, most of them in a burst around 30 s: the first view is that burst.
        let mut times: Vec<u64> = (0..FOCUS_EVENTS_TARGET as u64).map(|i| i * 100).collect();
        times.extend((0..FOCUS_EVENTS_TARGET as u64).map(|i| 300_000 + i));
        times.sort();
        let dense = focus(&events_at(&times), &[], 400_000);
        assert_eq!(dense.reason, FocusReason::Densest);
        assert!(
            dense.start_ms <= 300_000 && dense.end_ms >= 300_000 + 1_500,
            "{dense:?}"
        );
        assert!(dense.end_ms - dense.start_ms < 400_000);
    }
}
