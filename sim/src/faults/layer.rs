//! The fault layer: the packet rules of a run, the seeded generator their draws come from, and
//! the counts of what they did. Every packet of the safety phase passes through it once; after
//! the safety phase every packet passes. It holds no clock and no network, so any driver can
//! put it in front of its transport.

use super::rules::{PacketMeta, Rule, Verdict};
use imsim_history::stats::PacketStats;
use imsim_model::DeviceId;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;

pub struct FaultLayer {
    rules: Vec<Rule>,
    rng: ChaCha8Rng,
    /// Packet faults apply only before this time (the end of the safety phase).
    safety_end_ms: u64,
    stats: PacketStats,
    /// Packets by kind, kept apart from `stats` so counting a packet allocates nothing.
    by_kind: BTreeMap<&'static str, u64>,
}

impl FaultLayer {
    pub fn new(rules: Vec<Rule>, rng: ChaCha8Rng, safety_end_ms: u64) -> FaultLayer {
        FaultLayer {
            rules,
            rng,
            safety_end_ms,
            stats: PacketStats::default(),
            by_kind: BTreeMap::new(),
        }
    }

    /// The verdict for one packet of kind `kind` on `device`'s link, counted.
    pub fn judge(
        &mut self,
        kind: &'static str,
        device: DeviceId,
        to_server: bool,
        now_ms: u64,
    ) -> Verdict {
        self.stats.sent += 1;
        *self.by_kind.entry(kind).or_default() += 1;
        let verdict = if now_ms < self.safety_end_ms {
            self.first_verdict(device, to_server, now_ms)
        } else {
            Verdict::Pass
        };
        match verdict {
            Verdict::Pass => {}
            Verdict::Drop => self.stats.dropped += 1,
            Verdict::Duplicate => self.stats.duplicated += 1,
            Verdict::Delay(_) => self.stats.delayed += 1,
            Verdict::Hold(_) => self.stats.held += 1,
        }
        verdict
    }

    /// Packets sent so far.
    pub fn sent(&self) -> u64 {
        self.stats.sent
    }

    pub fn stats(&self) -> PacketStats {
        let by_kind = self.by_kind.iter();
        PacketStats {
            by_kind: by_kind.map(|(kind, n)| (kind.to_string(), *n)).collect(),
            ..self.stats.clone()
        }
    }

    /// The verdict for one packet of kind `kind` between `gateway` and the logic, counted.
    pub fn judge_internal(&mut self, kind: &'static str, gateway: u32, now_ms: u64) -> Verdict {
        self.stats.sent += 1;
        *self.by_kind.entry(kind).or_default() += 1;
        let verdict = if now_ms < self.safety_end_ms {
            self.rules
                .iter()
                .map(|rule| rule.internal_verdict(gateway, now_ms))
                .find(|v| *v != Verdict::Pass)
                .unwrap_or(Verdict::Pass)
        } else {
            Verdict::Pass
        };
        if verdict == Verdict::Drop {
            self.stats.dropped += 1;
        }
        verdict
    }

    /// The verdict for one packet of kind `kind` on a queue link, counted.
    pub fn judge_queue(&mut self, kind: &'static str, now_ms: u64) -> Verdict {
        self.stats.sent += 1;
        *self.by_kind.entry(kind).or_default() += 1;
        if now_ms >= self.safety_end_ms {
            return Verdict::Pass;
        }
        let rng = &mut self.rng;
        let mut draw = || rng.gen::<f64>();
        let verdict = self
            .rules
            .iter()
            .map(|rule| rule.queue_verdict(&mut draw))
            .find(|v| *v != Verdict::Pass)
            .unwrap_or(Verdict::Pass);
        match verdict {
            Verdict::Drop => self.stats.dropped += 1,
            Verdict::Duplicate => self.stats.duplicated += 1,
            Verdict::Delay(_) => self.stats.delayed += 1,
            Verdict::Pass | Verdict::Hold(_) => {}
        }
        verdict
    }

    fn first_verdict(&mut self, device: DeviceId, to_server: bool, now_ms: u64) -> Verdict {
        let meta = PacketMeta {
            device,
            to_server,
            now_ms,
        };
        let rng = &mut self.rng;
        let mut draw = || rng.gen::<f64>();
        self.rules
            .iter()
            .map(|rule| rule.verdict(&meta, &mut draw))
            .find(|v| *v != Verdict::Pass)
            .unwrap_or(Verdict::Pass)
    }
}

impl Verdict {
    /// How many copies to send, and after how many milliseconds (`None`: dropped).
    pub fn copies_and_delay_ms(self, now_ms: u64) -> Option<(u32, u64)> {
        match self {
            Verdict::Pass => Some((1, 0)),
            Verdict::Drop => None,
            Verdict::Duplicate => Some((2, 0)),
            Verdict::Delay(delay_ms) => Some((1, delay_ms)),
            Verdict::Hold(until_ms) => Some((1, until_ms.saturating_sub(now_ms))),
        }
    }
}
