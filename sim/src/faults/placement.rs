//! Faults placed at the protocol's sensitive moments (FoundationDB's BUGGIFY): a crash between a
//! write and its sync, a duplicate send just before a crash, a membership change inside another
//! message's sync window. A timed fault lands in such a window by luck (the window is 1–5 ms
//! wide); a placement waits for it.
//!
//! A placement is data in the profile (`imsim_history::faults::PlacementFault`): its kind, the
//! moment it is armed, the downtime of the crash it causes. The server's driver (`node.rs`) asks
//! [`Placements`] at each candidate moment whether one fires; what happens is recorded
//! (`placement_fired`, then `node_crashed` / `node_restarted`), so a history shows it and a
//! replay repeats it.

use imsim_history::faults::{
    CrashFault, FaultProfile, PlacementFault, PlacementKind, PLACEMENT_ARMED_MS,
};
use rand::Rng;

/// The share of swarm seeds that get placements (when the scenario's swarm may draw the
/// `placement` class).
pub const PLACEMENT_PROBABILITY: f64 = 0.3;

/// The longest a placed crash keeps the server down, like a drawn server crash.
pub const PLACED_DOWNTIME_MS_MAX: u64 = 5_000;

/// How long a held membership change waits for a sync of its group before it goes on anyway.
/// Below every protocol's retransmit timeout would be better, but the device's retransmissions
/// of the change are held with it, so the wait only looks like a slow network.
pub const HOLD_MS_MAX: u64 = 2_000;

/// A crash is not placed this close before a timed server crash (nor during one): the two would
/// overlap, and one node's crashes are played one after another.
const CRASH_CLEARANCE_MS: u64 = 1_000;

/// Maybe adds placements to `profile`: with [`PLACEMENT_PROBABILITY`], one to three, each of a
/// kind drawn from those the run can meet (`membership`: the workload changes members), armed at
/// a moment that leaves room for its window and crash before `duration_ms`. `rng` is a stream of
/// its own, so a seed without placements runs as it did before there were any.
pub fn draw(rng: &mut impl Rng, profile: &mut FaultProfile, membership: bool, duration_ms: u64) {
    let longest_ms = PLACEMENT_ARMED_MS + PLACED_DOWNTIME_MS_MAX;
    if duration_ms <= longest_ms || !rng.gen_bool(PLACEMENT_PROBABILITY) {
        return;
    }
    let kinds: Vec<PlacementKind> = PlacementKind::ALL
        .into_iter()
        .filter(|kind| membership || *kind != PlacementKind::MembershipInSyncWindow)
        .collect();
    for _ in 0..rng.gen_range(1..=3) {
        let kind = kinds[rng.gen_range(0..kinds.len())];
        let downtime_ms = if kind.crashes_server() {
            rng.gen_range(100..=PLACED_DOWNTIME_MS_MAX)
        } else {
            0
        };
        profile.placements.push(PlacementFault {
            kind,
            after_ms: rng.gen_range(0..duration_ms - longest_ms),
            downtime_ms,
        });
    }
    profile
        .placements
        .sort_by_key(|placement| placement.after_ms);
}

/// The run's placements and which have fired, as the server's driver asks about them.
pub(crate) struct Placements {
    armed: Vec<PlacementFault>,
    /// The timed server crashes, which placed crashes keep clear of.
    timed_crashes: Vec<CrashFault>,
    /// A placed crash keeps the server down until then; none is placed before.
    down_until_ms: u64,
}

impl Placements {
    pub(crate) fn new(profile: &FaultProfile) -> Placements {
        Placements {
            armed: profile.placements.clone(),
            timed_crashes: profile.server_crashes.clone(),
            down_until_ms: 0,
        }
    }

    /// The first armed placement of `kind` whose window holds `now_ms`, taken: it fires now.
    /// A crash is not placed where it would overlap a timed server crash or another placed one.
    pub(crate) fn fire(&mut self, kind: PlacementKind, now_ms: u64) -> Option<PlacementFault> {
        let index = self.armed.iter().position(|placement| {
            placement.kind == kind
                && (placement.after_ms..placement.after_ms + PLACEMENT_ARMED_MS).contains(&now_ms)
                && (!kind.crashes_server() || self.crash_fits(now_ms, placement.downtime_ms))
        })?;
        let placement = self.armed.remove(index);
        if kind.crashes_server() {
            self.down_until_ms = now_ms + placement.downtime_ms;
        }
        Some(placement)
    }

    fn crash_fits(&self, now_ms: u64, downtime_ms: u64) -> bool {
        let end_ms = now_ms + downtime_ms + CRASH_CLEARANCE_MS;
        now_ms >= self.down_until_ms
            && self.timed_crashes.iter().all(|crash| {
                let (start, stop) = (crash.at_ms, crash.at_ms + crash.downtime_ms);
                stop + CRASH_CLEARANCE_MS <= now_ms || end_ms <= start
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn placement(kind: PlacementKind, after_ms: u64, downtime_ms: u64) -> PlacementFault {
        PlacementFault {
            kind,
            after_ms,
            downtime_ms,
        }
    }

    #[test]
    fn about_three_in_ten_seeds_draw_placements_each_ending_in_the_safety_phase() {
        let (mut with, mut membership) = (0, 0);
        for seed in 0..1_000 {
            let mut profile = FaultProfile::default();
            draw(
                &mut ChaCha8Rng::seed_from_u64(seed),
                &mut profile,
                seed % 2 == 0,
                60_000,
            );
            with += u32::from(!profile.placements.is_empty());
            for p in &profile.placements {
                assert!(p.after_ms + PLACEMENT_ARMED_MS + p.downtime_ms <= 60_000);
                assert_eq!(p.kind.crashes_server(), p.downtime_ms > 0, "{p:?}");
                if p.kind == PlacementKind::MembershipInSyncWindow {
                    assert_eq!(seed % 2, 0, "no membership placement without changes");
                    membership += 1;
                }
            }
        }
        assert!((250..=350).contains(&with), "{with} of 1000 seeds");
        assert!(membership > 50, "{membership}");
        let mut short = FaultProfile::default();
        draw(&mut ChaCha8Rng::seed_from_u64(1), &mut short, true, 9_000);
        assert!(short.placements.is_empty(), "no room in a 9 s run");
    }

    #[test]
    fn a_placement_fires_once_inside_its_window_only() {
        let profile = FaultProfile {
            placements: vec![placement(PlacementKind::CrashInSyncWindow, 1_000, 500)],
            ..FaultProfile::default()
        };
        let mut placements = Placements::new(&profile);
        assert!(placements
            .fire(PlacementKind::CrashInSyncWindow, 999)
            .is_none());
        assert!(placements
            .fire(PlacementKind::DuplicateBeforeCrash, 1_000)
            .is_none());
        assert!(placements
            .fire(PlacementKind::CrashInSyncWindow, 1_200)
            .is_some());
        assert!(placements
            .fire(PlacementKind::CrashInSyncWindow, 1_300)
            .is_none());
        let lapsed = FaultProfile {
            placements: vec![placement(PlacementKind::CrashInSyncWindow, 1_000, 500)],
            ..FaultProfile::default()
        };
        let mut placements = Placements::new(&lapsed);
        assert!(placements
            .fire(PlacementKind::CrashInSyncWindow, 1_000 + PLACEMENT_ARMED_MS)
            .is_none());
    }

    #[test]
    fn a_placed_crash_keeps_clear_of_timed_crashes_and_of_another_placed_one() {
        let profile = FaultProfile {
            server_crashes: vec![CrashFault {
                at_ms: 3_000,
                downtime_ms: 1_000,
            }],
            placements: vec![
                placement(PlacementKind::CrashInSyncWindow, 1_000, 500),
                placement(PlacementKind::DuplicateBeforeCrash, 1_000, 500),
            ],
            ..FaultProfile::default()
        };
        let mut placements = Placements::new(&profile);
        // 1,600 + 500 + 1,000 clearance runs into the timed crash at 3,000.
        assert!(placements
            .fire(PlacementKind::CrashInSyncWindow, 1_600)
            .is_none());
        assert!(placements
            .fire(PlacementKind::CrashInSyncWindow, 3_500)
            .is_none());
        assert!(placements
            .fire(PlacementKind::CrashInSyncWindow, 5_000)
            .is_some());
        // The server is down until 5,500.
        assert!(placements
            .fire(PlacementKind::DuplicateBeforeCrash, 5_100)
            .is_none());
        assert!(placements
            .fire(PlacementKind::DuplicateBeforeCrash, 5_500)
            .is_some());
    }
}
