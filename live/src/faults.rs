//! The live run's harness: the simulator's packet fault rules applied at the device sockets,
//! and the records of the devices and of the harness itself.
//!
//! The rules are `imsim_sim`'s own: its `FaultLayer` (`Rule::verdict` over the run's
//! `FaultProfile`, the counts, the end of the safety phase), drawn from a generator seeded like
//! the simulator's, so a seed has the same fault profile live and
//! simulated. What differs is when each packet is judged: live, that is the wall clock.

use crate::clock::Clock;
use crate::device::{Fate, Harness};
use imsim_history::stats::PacketStats;
use imsim_history::{Entry, HarnessEvent, Node};
use imsim_model::{DeviceId, Event, Packet};
use imsim_sim::faults::{rules, FaultLayer};
use imsim_sim::Setup;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

/// Mixed into the run seed for the fault rules' generator: the simulator's salt ("faults").
const FAULT_SEED_SALT: u64 = 0x6661_756c_7473;

/// Troubles kept for the report; beyond this they are only counted.
const TROUBLES_MAX: usize = 100;

pub struct LiveHarness {
    clock: Clock,
    skews: BTreeMap<DeviceId, i64>,
    /// The simulator's fault layer: its rules, its seeded generator and its counts.
    faults: Mutex<FaultLayer>,
    /// (scenario µs, node, entry), in the order recorded.
    records: Mutex<Vec<(u64, Node, Entry)>>,
    troubles: Mutex<(Vec<String>, u64)>,
}

/// Locks a mutex. The harness runs on one thread and never holds a lock across an await, so a
/// lock is poisoned only if a device task already panicked.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .expect("a device task panicked while holding a lock")
}

impl LiveHarness {
    /// Packet faults apply until `safety_end_ms`, the end of the safety phase.
    pub fn new(setup: &Setup, clock: Clock, safety_end_ms: u64) -> LiveHarness {
        let rng = ChaCha8Rng::seed_from_u64(setup.seed ^ FAULT_SEED_SALT);
        LiveHarness {
            clock,
            skews: setup
                .faults
                .clock_skew
                .iter()
                .map(|skew| (skew.device, skew.offset_ms))
                .collect(),
            faults: Mutex::new(FaultLayer::new(rules(&setup.faults), rng, safety_end_ms)),
            records: Mutex::new(Vec::new()),
            troubles: Mutex::new((Vec::new(), 0)),
        }
    }

    pub fn skew_ms(&self, device: DeviceId) -> i64 {
        self.skews.get(&device).copied().unwrap_or(0)
    }

    pub fn record_harness(&self, t_us: u64, event: HarnessEvent) {
        lock(&self.records).push((t_us, Node::Harness, Entry::Harness(event)));
    }

    pub fn take_records(&self) -> Vec<(u64, Node, Entry)> {
        std::mem::take(&mut *lock(&self.records))
    }

    pub fn packet_stats(&self) -> PacketStats {
        lock(&self.faults).stats()
    }

    /// The troubles kept, and a line counting those that were not.
    pub fn troubles(&self) -> Vec<String> {
        let (kept, total) = &*lock(&self.troubles);
        let mut lines = kept.clone();
        if *total > kept.len() as u64 {
            lines.push(format!("… {} more", *total - kept.len() as u64));
        }
        lines
    }
}

impl Harness for LiveHarness {
    fn fate(&self, device: DeviceId, to_server: bool, packet: &Packet) -> Fate {
        let now_ms = self.clock.now().0;
        let verdict = lock(&self.faults).judge(packet.kind(), device, to_server, now_ms);
        match verdict.copies_and_delay_ms(now_ms) {
            Some((copies, delay_ms)) => Fate::Pass { copies, delay_ms },
            None => Fate::Drop,
        }
    }

    fn record(&self, device: DeviceId, t_us: u64, event: Event) {
        let entry = Entry::Protocol(event);
        lock(&self.records).push((t_us, Node::Device(device), entry));
    }

    fn trouble(&self, device: DeviceId, message: String) {
        tracing::warn!("device {device}: {message}");
        let mut troubles = lock(&self.troubles);
        troubles.1 += 1;
        if troubles.0.len() < TROUBLES_MAX {
            troubles.0.push(format!("device {device}: {message}"));
        }
    }
}
