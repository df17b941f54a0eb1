//! The queue topology in the simulator (`[topology] queue = true`): a node for the queue (the
//! broker; it never crashes) and one for its consumer (the storage writer; `consumer-crash`
//! kills it), each a thin driver around its machine in `imsim_model::cluster::queue`. The logic
//! side (the `Producer`) lives in the server's driver (`node::run_server`).
//!
//! The consumer's store is the authority on what is durable: the run's final timelines are read
//! from it, and a restarted server recovers from it, once the queue has drained (see
//! [`QueueShared::drained`]).

use crate::discovery::{consumer_ip, queue_ip, socket_of_role};
use crate::node::{lock, Driver, Input, Later, World, SYNC_MS_MAX, SYNC_MS_MIN};
use crate::queue_shared::{ConsumerSlot, QueueShared};
use crate::trace::NET;
use imsim_history::faults::FaultProfile;
use imsim_history::{Entry, HarnessEvent, Node, TimelineEntry};
use imsim_model::cluster::{Consumer, Queue, QueueNote, QueueOutput};
use imsim_model::{ConvId, Record, Storage, Time, Variant};
use madsim::runtime::{Handle, NodeHandle};
use madsim::time::Duration;
use rand::Rng;
use std::sync::{Arc, Mutex};

/// Receive loops of the queue's and the consumer's nodes (each takes in about a thousand
/// datagrams per simulated second; the queue carries every record twice).
const RECEIVERS: usize = 16;

/// The longest a consumer crash waits for a sync window to crash in.
pub(crate) const CRASH_AIM_MS_MAX: u64 = 500;

pub(crate) struct QueueTier {
    pub shared: Arc<QueueShared>,
    pub nodes: [NodeHandle; 2],
}

impl QueueTier {
    pub(crate) fn start(handle: &Handle, world: &Arc<World>, variant: Variant) -> QueueTier {
        let shared = Arc::new(QueueShared {
            queue: Mutex::new(Queue::new()),
            consumer: Mutex::new(ConsumerSlot {
                consumer: Consumer::new(variant),
                started: false,
            }),
        });
        let (queue_world, queue_shared) = (world.clone(), shared.clone());
        let queue = handle
            .create_node()
            .name("queue")
            .ip(queue_ip())
            .init(move || run_queue(queue_world.clone(), queue_shared.clone()))
            .build();
        let (consumer_world, consumer_shared) = (world.clone(), shared.clone());
        let consumer = handle
            .create_node()
            .name("consumer")
            .ip(consumer_ip())
            .init(move || run_consumer(consumer_world.clone(), consumer_shared.clone()))
            .build();
        QueueTier {
            shared,
            nodes: [queue, consumer],
        }
    }

    /// Consumer crashes, one after another: each kills the node, which restarts after its
    /// downtime and recovers from its durable store (`consumer_restarted`, in `run_consumer`).
    /// A crash aims at a sync window: from its moment it waits (up to [`CRASH_AIM_MS_MAX`], and
    /// never past the safety phase) for the consumer to hold writes not yet synced for a
    /// millisecond, since a
    /// crash between a write and its sync is what an at-least-once consumer must survive
    /// (measured: unaimed, `consumer-acks-before-durable` failed 3 of 200 seeds).
    pub(crate) fn play(&self, world: &Arc<World>, faults: &FaultProfile, safety_end_ms: u64) {
        let mut windows: Vec<(u64, u64)> = faults
            .consumer_crashes
            .iter()
            .map(|crash| (crash.at_ms, crash.downtime_ms))
            .collect();
        if windows.is_empty() {
            return;
        }
        windows.sort();
        let (world, id) = (world.clone(), self.nodes[1].id());
        let shared = self.shared.clone();
        madsim::task::spawn(async move {
            let handle = Handle::current();
            for (at_ms, downtime_ms) in windows {
                world.sleep_until_ms(at_ms).await;
                let aim_end_ms = (world.now_ms() + CRASH_AIM_MS_MAX)
                    .min(safety_end_ms.saturating_sub(downtime_ms));
                // Unsynced at two polls a millisecond apart: whatever the consumer sent on its
                // write (a send takes at least a millisecond) has left the node by then.
                let mut polls_unsynced = 0;
                while world.now_ms() < aim_end_ms && polls_unsynced < 2 {
                    polls_unsynced = if shared.unsynced() {
                        polls_unsynced + 1
                    } else {
                        0
                    };
                    madsim::time::sleep(Duration::from_millis(1)).await;
                }
                handle.kill(id);
                world.record(Node::Harness, Entry::Harness(HarnessEvent::ConsumerCrashed));
                madsim::time::sleep(Duration::from_millis(downtime_ms)).await;
                handle.restart(id);
            }
        });
    }

    /// The durable timeline of `conv` as the consumer's store holds it, in log order: every
    /// committed entry, a repeated one included (storage is the authority, D6 judges it).
    pub(crate) fn durable_timeline(&self, conv: ConvId) -> Vec<TimelineEntry> {
        let slot = lock(&self.shared.consumer);
        let records = slot.consumer.storage().durable().iter();
        records
            .filter_map(|record| match record {
                Record::Committed(m) if m.conv == conv => Some(TimelineEntry::from(m)),
                _ => None,
            })
            .collect()
    }

    pub(crate) fn storage(&self) -> Storage {
        lock(&self.shared.consumer).consumer.storage().clone()
    }
}

fn note_event(note: QueueNote) -> HarnessEvent {
    match note {
        QueueNote::Overflowed { offset } => HarnessEvent::QueueOverflowed { offset },
        QueueNote::Redelivered { from, through } => {
            HarnessEvent::QueueRedelivered { from, through }
        }
        QueueNote::DuplicateSkipped { offset } => HarnessEvent::QueueDuplicateSkipped { offset },
    }
}

/// Carries out a queue-topology machine's outputs (but a sync, which only the consumer asks).
fn carry_out(world: &World, driver: &mut Driver, output: QueueOutput) {
    match output {
        QueueOutput::Transmit { to, packet } => driver.transmit_queue(socket_of_role(to), packet),
        QueueOutput::ArmTimer { at } => driver.arm(at.0),
        QueueOutput::Note(note) => world.record(Node::Harness, Entry::Harness(note_event(note))),
        QueueOutput::SyncStorage { through } => {
            // madsim's generator, seeded from the run seed: sync latencies replay.
            let sync_ms = madsim::rand::thread_rng().gen_range(SYNC_MS_MIN..=SYNC_MS_MAX);
            driver.schedule(world.now_ms() + sync_ms, Later::Synced(through));
        }
    }
}

async fn run_queue(world: Arc<World>, shared: Arc<QueueShared>) {
    let mut driver = Driver::bind(world.clone(), queue_ip(), RECEIVERS).await;
    loop {
        let outputs: Vec<QueueOutput> = {
            let mut queue = lock(&shared.queue);
            std::iter::from_fn(|| queue.poll_output()).collect()
        };
        for output in outputs {
            carry_out(&world, &mut driver, output);
        }
        let input = driver.next().await;
        let now = Time(world.now_ms());
        let mut queue = lock(&shared.queue);
        match input {
            Input::Packet(packet, from) => {
                tracing::trace!(target: NET, "queue receive from {from} {packet:?}");
                queue.handle_packet(now, packet);
            }
            Input::Alarm => queue.handle_timeout(now),
            _ => {}
        }
    }
}

async fn run_consumer(world: Arc<World>, shared: Arc<QueueShared>) {
    {
        let mut slot = lock(&shared.consumer);
        if slot.started {
            let (consumer, lost_unsynced_writes) = Consumer::recover(&slot.consumer);
            slot.consumer = consumer;
            let restarted = HarnessEvent::ConsumerRestarted {
                lost_unsynced_writes,
            };
            world.record(Node::Harness, Entry::Harness(restarted));
        }
        slot.started = true;
    }
    let mut driver = Driver::bind(world.clone(), consumer_ip(), RECEIVERS).await;
    loop {
        let outputs: Vec<QueueOutput> = {
            let mut slot = lock(&shared.consumer);
            std::iter::from_fn(|| slot.consumer.poll_output()).collect()
        };
        for output in outputs {
            carry_out(&world, &mut driver, output);
        }
        let input = driver.next().await;
        let now = Time(world.now_ms());
        let mut slot = lock(&shared.consumer);
        match input {
            Input::Packet(packet, from) => {
                tracing::trace!(target: NET, "consumer receive from {from} {packet:?}");
                slot.consumer.handle_packet(now, packet);
            }
            Input::Synced(through) => slot.consumer.handle_storage_synced(now, through),
            _ => {}
        }
    }
}
