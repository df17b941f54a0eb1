//! The message queue between the logic and storage (issue 16, stage 3; DESIGN.md §8, "WeChat
//! async queue"): the logic's commits reach storage through an at-least-once queue, and only
//! what storage made durable is acked to the sender.
//!
//! ```text
//!  logic (Server + Producer) ── Enqueue{offset, record} ──► Queue ── QueueDeliver{offset} ──► Consumer
//!        ▲                      ◄── Stored{through} (dup)    ▲  ◄── QueueAck{through} ────────┘ │
//!        └──────────────────────────── Stored{through} ─────────────────────────────────────────┘
//! ```
//!
//! - Offsets are positions in the logic's storage log: the record the server wrote n-th has
//!   offset n, and the consumer's store holds the same records at the same positions.
//! - The [`Producer`] (at the logic) enqueues every record the server asks to sync, in log
//!   order, and resends what is not yet stored after [`PRODUCER_RESEND_MS`]. The server learns
//!   that records are durable (`handle_storage_synced`) only from `Stored`.
//! - The [`Queue`] (the broker) is durable and does not crash, like a replicated log. It accepts
//!   offsets only in order, holds at most [`QUEUE_RECORDS_MAX`] records (a full queue refuses
//!   with an explicit [`QueueNote::Overflowed`]; the producer resends later), delivers at most
//!   [`QUEUE_WINDOW_MAX`] beyond the consumer's cumulative ack, and after
//!   [`QUEUE_ACK_TIMEOUT_MS`] without progress redelivers everything from the ack point
//!   (go-back-N).
//! - The [`Consumer`] (the storage writer, which can crash) stores records strictly in offset
//!   order: a redelivered offset it already has is skipped and acked again, and one that
//!   overtook an earlier (lost or delayed) delivery is held in memory, within the window, until
//!   the hole fills. Without that hold every reordered delivery stalled the log until the
//!   queue's timeout and went back N (measured on `queue-faults`: 25.5 queue packets per
//!   committed entry instead of 4.2). It acks the queue and tells the logic `Stored` only once
//!   a sync made the records durable.

use crate::storage::{Record, Storage};
use crate::time::Time;
use crate::variant::Variant;
use crate::wire::Packet;
use std::collections::{BTreeMap, VecDeque};

/// The most records the queue holds that the consumer has not acked.
pub const QUEUE_RECORDS_MAX: usize = 4_096;
/// The most deliveries in flight beyond the consumer's cumulative ack.
pub const QUEUE_WINDOW_MAX: u64 = 64;
/// The queue redelivers from the ack point when no ack moved it for this long.
pub const QUEUE_ACK_TIMEOUT_MS: u64 = 100;
/// The producer resends what is enqueued but not stored after this long without progress.
pub const PRODUCER_RESEND_MS: u64 = 250;

/// The roles of the queue topology, as outputs name them (the driver knows their addresses).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Logic,
    Queue,
    Consumer,
}

/// What the queue, the consumer and the producer observed that the history records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueNote {
    /// The queue was full and refused this offset (the producer resends it later).
    Overflowed { offset: u64 },
    /// No ack came in time: the queue delivers again from `from` (its ack point); `through`
    /// (exclusive) was the furthest it had delivered.
    Redelivered { from: u64, through: u64 },
    /// The consumer got an offset it had already stored and skipped it.
    DuplicateSkipped { offset: u64 },
}

/// What a queue-topology machine asks of its driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QueueOutput {
    Transmit {
        to: Role,
        packet: Packet,
    },
    ArmTimer {
        at: Time,
    },
    /// The consumer asks its storage to sync records up to `through` (exclusive).
    SyncStorage {
        through: u64,
    },
    Note(QueueNote),
}

/// The logic's side: what it has enqueued and not yet seen stored.
#[derive(Clone, Debug, Default)]
pub struct Producer {
    /// The server incarnation this producer enqueues for.
    epoch: u64,
    /// Offsets below this are durable at the consumer (a `Stored` said so).
    stored: u64,
    /// The records of offsets `stored..stored + pending.len()`, enqueued and not yet stored.
    pending: VecDeque<Record>,
    resend_at: Option<Time>,
    outputs: VecDeque<QueueOutput>,
}

impl Producer {
    /// A producer whose log is durable up to `stored` (a recovered server's storage length),
    /// for the server incarnation `epoch`.
    pub fn new(stored: u64, epoch: u64) -> Producer {
        Producer {
            epoch,
            stored,
            ..Producer::default()
        }
    }

    /// One past the last offset enqueued.
    pub fn end(&self) -> u64 {
        self.stored + self.pending.len() as u64
    }

    /// The server asked to sync `storage` through `through`: enqueues the records not yet
    /// enqueued, in log order.
    pub fn handle_sync_requested(&mut self, now: Time, storage: &Storage, through: u64) {
        let first = storage.synced();
        while self.end() < through {
            let offset = self.end();
            let Some(record) = offset
                .checked_sub(first)
                .and_then(|index| storage.unsynced().get(index as usize))
            else {
                break;
            };
            self.pending.push_back(record.clone());
            let packet = Packet::Enqueue {
                epoch: self.epoch,
                offset,
                record: record.clone(),
            };
            self.outputs.push_back(QueueOutput::Transmit {
                to: Role::Queue,
                packet,
            });
        }
        if !self.pending.is_empty() && self.resend_at.is_none() {
            self.arm(now.plus_ms(PRODUCER_RESEND_MS));
        }
    }

    /// `Stored{through}` arrived: returns the new durable point for the server's
    /// `handle_storage_synced`, or `None` when it moves nothing (a late or duplicated answer).
    pub fn handle_stored(&mut self, now: Time, through: u64) -> Option<u64> {
        if through <= self.stored || through > self.end() {
            return None;
        }
        self.pending.drain(..(through - self.stored) as usize);
        self.stored = through;
        self.resend_at = None;
        if !self.pending.is_empty() {
            self.arm(now.plus_ms(PRODUCER_RESEND_MS));
        }
        Some(through)
    }

    /// Resends everything enqueued and not stored, when nothing moved for a while.
    pub fn handle_timeout(&mut self, now: Time) {
        if self.resend_at.is_none_or(|at| at > now) {
            return;
        }
        self.resend_at = None;
        for (index, record) in self.pending.iter().enumerate() {
            let packet = Packet::Enqueue {
                epoch: self.epoch,
                offset: self.stored + index as u64,
                record: record.clone(),
            };
            self.outputs.push_back(QueueOutput::Transmit {
                to: Role::Queue,
                packet,
            });
        }
        if !self.pending.is_empty() {
            self.arm(now.plus_ms(PRODUCER_RESEND_MS));
        }
    }

    fn arm(&mut self, at: Time) {
        self.resend_at = Some(at);
        self.outputs.push_back(QueueOutput::ArmTimer { at });
    }

    pub fn poll_output(&mut self) -> Option<QueueOutput> {
        self.outputs.pop_front()
    }
}

/// The broker: durable, never crashes.
#[derive(Clone, Debug, Default)]
pub struct Queue {
    /// The newest producer epoch: enqueues from an older one are refused (fenced).
    epoch: u64,
    /// The consumer's cumulative ack: offsets below it are stored and dropped here.
    acked: u64,
    /// The records of offsets `acked..acked + records.len()`.
    records: VecDeque<Record>,
    /// Enqueues that overtook an earlier one, within [`QUEUE_WINDOW_MAX`] of the end: held
    /// until the offsets before them arrive.
    ahead: BTreeMap<u64, Record>,
    /// The next offset to deliver.
    next_delivery: u64,
    /// When the deliveries beyond `acked` time out.
    deadline: Option<Time>,
    outputs: VecDeque<QueueOutput>,
}

impl Queue {
    pub fn new() -> Queue {
        Queue::default()
    }

    /// One past the last offset accepted: everything below it will be stored.
    pub fn end(&self) -> u64 {
        self.acked + self.records.len() as u64
    }

    /// A restarting server's producer of `epoch` takes over: enqueues from older ones are
    /// refused from now on. Returns [`Queue::end`], where the new producer goes on.
    pub fn fence(&mut self, epoch: u64) -> u64 {
        if epoch > self.epoch {
            self.epoch = epoch;
            // What overtook a gap was the old producer's: its successor writes those offsets.
            self.ahead.clear();
        }
        self.end()
    }

    /// An `Enqueue` from the logic or a `QueueAck` from the consumer; anything else is ignored.
    pub fn handle_packet(&mut self, now: Time, packet: Packet) {
        match packet {
            Packet::Enqueue {
                epoch,
                offset,
                record,
            } => {
                // A crashed server's enqueues still in flight must not take offsets its
                // successor reads back and reuses.
                if epoch < self.epoch {
                    return;
                }
                if epoch > self.epoch {
                    self.fence(epoch);
                }
                self.handle_enqueue(now, offset, record)
            }
            Packet::QueueAck { through } => self.handle_ack(now, through),
            _ => {}
        }
    }

    fn handle_enqueue(&mut self, now: Time, offset: u64, record: Record) {
        if offset < self.acked {
            // Already stored: the producer missed a `Stored`; tell it again (the ack point is
            // the consumer's durable point).
            let packet = Packet::Stored {
                through: self.acked,
            };
            self.outputs.push_back(QueueOutput::Transmit {
                to: Role::Logic,
                packet,
            });
            return;
        }
        // The log is held in order: a copy of a held offset is ignored, one beyond a gap waits
        // in `ahead` (bounded; beyond it, for the producer's resend).
        if offset < self.end() || offset >= self.end() + QUEUE_WINDOW_MAX {
            return;
        }
        if self.records.len() >= QUEUE_RECORDS_MAX {
            self.outputs
                .push_back(QueueOutput::Note(QueueNote::Overflowed { offset }));
            return;
        }
        self.ahead.insert(offset, record);
        while self.records.len() < QUEUE_RECORDS_MAX {
            let Some(record) = self.ahead.remove(&self.end()) else {
                break;
            };
            self.records.push_back(record);
        }
        self.deliver(now);
    }

    fn handle_ack(&mut self, now: Time, through: u64) {
        // A consumer's ack is input: one beyond what was delivered is refused, not trusted.
        if through <= self.acked || through > self.next_delivery {
            return;
        }
        self.records.drain(..(through - self.acked) as usize);
        self.acked = through;
        self.deadline = None;
        self.deliver(now);
        if self.next_delivery > self.acked && self.deadline.is_none() {
            self.arm(now.plus_ms(QUEUE_ACK_TIMEOUT_MS));
        }
    }

    /// Go-back-N: nothing acked in time, so everything from the ack point goes again.
    pub fn handle_timeout(&mut self, now: Time) {
        if self.deadline.is_none_or(|at| at > now) {
            return;
        }
        self.deadline = None;
        if self.next_delivery > self.acked {
            let note = QueueNote::Redelivered {
                from: self.acked,
                through: self.next_delivery,
            };
            self.outputs.push_back(QueueOutput::Note(note));
            self.next_delivery = self.acked;
            self.deliver(now);
        }
    }

    /// Delivers the accepted records the window allows.
    fn deliver(&mut self, now: Time) {
        let window_end = (self.acked + QUEUE_WINDOW_MAX).min(self.end());
        let sent = self.next_delivery < window_end;
        while self.next_delivery < window_end {
            let offset = self.next_delivery;
            let record = self.records[(offset - self.acked) as usize].clone();
            let packet = Packet::QueueDeliver { offset, record };
            self.outputs.push_back(QueueOutput::Transmit {
                to: Role::Consumer,
                packet,
            });
            self.next_delivery += 1;
        }
        if sent && self.deadline.is_none() {
            self.arm(now.plus_ms(QUEUE_ACK_TIMEOUT_MS));
        }
    }

    fn arm(&mut self, at: Time) {
        self.deadline = Some(at);
        self.outputs.push_back(QueueOutput::ArmTimer { at });
    }

    pub fn poll_output(&mut self) -> Option<QueueOutput> {
        self.outputs.pop_front()
    }
}

/// The storage writer: its own node, its own [`Storage`]; it can crash.
#[derive(Clone, Debug)]
pub struct Consumer {
    storage: Storage,
    /// The queue offset of each record in `storage`, as a real consumer keeps the offset with
    /// the row. With the correct protocol record n has offset n.
    offsets: Vec<u64>,
    /// Deliveries that overtook an earlier one, within [`QUEUE_WINDOW_MAX`] of the next
    /// offset: held in memory until the offsets before them arrive (lost in a crash).
    ahead: BTreeMap<u64, Record>,
    /// A sync is in flight.
    syncing: bool,
    variant: Variant,
    outputs: VecDeque<QueueOutput>,
}

impl Consumer {
    pub fn new(variant: Variant) -> Consumer {
        Consumer {
            storage: Storage::new(),
            offsets: Vec::new(),
            ahead: BTreeMap::new(),
            syncing: false,
            variant,
            outputs: VecDeque::new(),
        }
    }

    /// After a crash: the durable records survive, the unsynced ones are lost. Returns the
    /// consumer and how many writes were lost.
    pub fn recover(crashed: &Consumer) -> (Consumer, u64) {
        let (storage, lost) = crashed.storage.crash();
        let mut offsets = crashed.offsets.clone();
        offsets.truncate(storage.synced() as usize);
        let consumer = Consumer {
            storage,
            offsets,
            ahead: BTreeMap::new(),
            syncing: false,
            variant: crashed.variant,
            outputs: VecDeque::new(),
        };
        (consumer, lost)
    }

    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// The next offset this consumer stores.
    pub fn next_offset(&self) -> u64 {
        self.offsets.iter().max().map_or(0, |last| last + 1)
    }

    /// The offsets below this are durable here.
    pub fn durable_through(&self) -> u64 {
        let durable = &self.offsets[..self.storage.synced() as usize];
        durable.iter().max().map_or(0, |last| last + 1)
    }

    /// A `QueueDeliver` from the queue; anything else is ignored.
    pub fn handle_packet(&mut self, _now: Time, packet: Packet) {
        let Packet::QueueDeliver { offset, record } = packet else {
            return;
        };
        let next = self.next_offset();
        if offset < next && self.variant != Variant::NonIdempotentConsumer {
            self.outputs
                .push_back(QueueOutput::Note(QueueNote::DuplicateSkipped { offset }));
            // The ack that covered it was lost: ack what is durable again.
            if !self.syncing {
                self.acknowledge();
            }
            return;
        }
        // VARIANT non-idempotent-consumer: a redelivered offset is stored again.
        if offset > next {
            // A hole before it (a delivery lost or delayed): held until the hole fills.
            if offset < next + QUEUE_WINDOW_MAX {
                self.ahead.insert(offset, record);
            }
            return;
        }
        self.store(offset, record);
        let mut next = self.next_offset();
        while let Some(record) = self.ahead.remove(&next) {
            self.store(next, record);
            next += 1;
        }
        if !self.syncing {
            self.syncing = true;
            let through = self.storage.written();
            self.outputs.push_back(QueueOutput::SyncStorage { through });
        }
    }

    /// Appends the record of `offset` to the store (not yet durable).
    fn store(&mut self, offset: u64, record: Record) {
        self.storage.append(record);
        self.offsets.push(offset);
        if self.variant == Variant::ConsumerAcksBeforeDurable {
            // VARIANT consumer-acks-before-durable: acked and reported stored on append.
            self.report(self.next_offset());
        }
    }

    /// The sync through `through` (a record count) finished: the records are durable, so the
    /// queue gets its ack and the logic learns they are stored.
    pub fn handle_storage_synced(&mut self, _now: Time, through: u64) {
        self.storage.sync(through);
        self.syncing = false;
        self.acknowledge();
        if self.storage.written() > self.storage.synced() {
            self.syncing = true;
            let through = self.storage.written();
            self.outputs.push_back(QueueOutput::SyncStorage { through });
        }
    }

    /// Acks what is durable (with the variant that acks on append: what is written).
    fn acknowledge(&mut self) {
        let through = match self.variant {
            Variant::ConsumerAcksBeforeDurable => self.next_offset(),
            _ => self.durable_through(),
        };
        if through > 0 {
            self.report(through);
        }
    }

    fn report(&mut self, through: u64) {
        for (to, packet) in [
            (Role::Queue, Packet::QueueAck { through }),
            (Role::Logic, Packet::Stored { through }),
        ] {
            self.outputs.push_back(QueueOutput::Transmit { to, packet });
        }
    }

    pub fn poll_output(&mut self) -> Option<QueueOutput> {
        self.outputs.pop_front()
    }
}

#[cfg(test)]
mod tests;
