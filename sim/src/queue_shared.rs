//! What the queue topology's nodes and the server's driver share: the queue and the consumer's
//! machines (behind locks, so a restarting server can see whether the queue drained and read the
//! consumer's store back), apart from the nodes' drivers (`queue.rs`) so that the server's
//! driver does not depend on them.

use crate::sync::lock;
use imsim_model::cluster::{Consumer, Queue};
use imsim_model::Record;
use std::sync::Mutex;

/// How often a restarting server looks whether the queue has drained.
pub(crate) const DRAIN_POLL_MS: u64 = 10;

/// The consumer outlives its node's incarnations: a crash drops the node's tasks, and the
/// restarted node recovers a new `Consumer` from the old one's durable store.
pub(crate) struct ConsumerSlot {
    pub(crate) consumer: Consumer,
    pub(crate) started: bool,
}

/// What the queue's node, the consumer's node and the server's driver share.
pub(crate) struct QueueShared {
    pub(crate) queue: Mutex<Queue>,
    pub(crate) consumer: Mutex<ConsumerSlot>,
}

impl QueueShared {
    /// Whether everything the queue accepted is durable at the consumer: a restarted server
    /// may then read the store back and go on from its end without reusing an offset or a seq.
    pub(crate) fn drained(&self) -> bool {
        let end = lock(&self.queue).end();
        lock(&self.consumer).consumer.durable_through() >= end
    }

    /// Whether the consumer holds writes not yet synced.
    pub(crate) fn unsynced(&self) -> bool {
        let slot = lock(&self.consumer);
        slot.consumer.storage().written() > slot.consumer.storage().synced()
    }

    /// The consumer's durable records (what a server restarting now reads back).
    pub(crate) fn durable_records(&self) -> Vec<Record> {
        lock(&self.consumer).consumer.storage().durable().to_vec()
    }

    /// Fences the producers before `epoch` and returns one past the last offset the queue
    /// accepted (see `Queue::fence`).
    pub(crate) fn fence(&self, epoch: u64) -> u64 {
        lock(&self.queue).fence(epoch)
    }
}
