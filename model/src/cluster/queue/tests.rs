//! The queue topology's machines driven by hand: redelivery, deduplication, acks only after a
//! sync, overflow, and a consumer crash losing its unsynced writes.

use super::*;
use crate::ids::{ConvId, UserId};

fn record(n: u32) -> Record {
    Record::Read {
        conv: ConvId(1),
        user: UserId(n),
        device: crate::ids::DeviceId(n),
        up_to: crate::ids::Seq(u64::from(n)),
    }
}

fn enqueue(offset: u64) -> Packet {
    Packet::Enqueue {
        epoch: 0,
        offset,
        record: record(offset as u32),
    }
}

fn drain(outputs: impl FnMut() -> Option<QueueOutput>) -> Vec<QueueOutput> {
    std::iter::from_fn(outputs).collect()
}

/// The packets sent to `role`.
fn sent_to(outputs: &[QueueOutput], role: Role) -> Vec<Packet> {
    outputs
        .iter()
        .filter_map(|output| match output {
            QueueOutput::Transmit { to, packet } if *to == role => Some(packet.clone()),
            _ => None,
        })
        .collect()
}

fn delivered_offsets(outputs: &[QueueOutput]) -> Vec<u64> {
    sent_to(outputs, Role::Consumer)
        .into_iter()
        .filter_map(|packet| match packet {
            Packet::QueueDeliver { offset, .. } => Some(offset),
            _ => None,
        })
        .collect()
}

fn deliver(offset: u64) -> Packet {
    Packet::QueueDeliver {
        offset,
        record: record(offset as u32),
    }
}

#[test]
fn the_queue_delivers_in_order_and_redelivers_from_the_ack_point_after_the_timeout() {
    let mut queue = Queue::new();
    for offset in 0..3 {
        queue.handle_packet(Time(0), enqueue(offset));
    }
    // A copy is ignored; an offset beyond a gap waits for the gap to fill.
    queue.handle_packet(Time(0), enqueue(1));
    queue.handle_packet(Time(0), enqueue(4));
    assert_eq!(queue.end(), 3);
    let outputs = drain(|| queue.poll_output());
    assert_eq!(delivered_offsets(&outputs), vec![0, 1, 2]);
    queue.handle_packet(Time(0), enqueue(3));
    assert_eq!(queue.end(), 5, "3 filled the gap before 4");
    let outputs = drain(|| queue.poll_output());
    assert_eq!(delivered_offsets(&outputs), vec![3, 4]);
    queue.handle_packet(Time(10), Packet::QueueAck { through: 1 });
    // An ack beyond what was delivered is refused: the redelivery below starts at 1.
    queue.handle_packet(Time(10), Packet::QueueAck { through: 9 });
    drain(|| queue.poll_output());
    queue.handle_timeout(Time(10 + QUEUE_ACK_TIMEOUT_MS - 1));
    assert!(drain(|| queue.poll_output()).is_empty(), "not yet");
    queue.handle_timeout(Time(10 + QUEUE_ACK_TIMEOUT_MS));
    let outputs = drain(|| queue.poll_output());
    assert!(outputs.contains(&QueueOutput::Note(QueueNote::Redelivered {
        from: 1,
        through: 5
    })));
    assert_eq!(delivered_offsets(&outputs), vec![1, 2, 3, 4]);
}

#[test]
fn the_queue_refuses_with_an_overflow_when_full_and_answers_a_stored_offset() {
    let mut queue = Queue::new();
    for offset in 0..QUEUE_RECORDS_MAX as u64 {
        queue.handle_packet(Time(0), enqueue(offset));
    }
    drain(|| queue.poll_output());
    let full = QUEUE_RECORDS_MAX as u64;
    queue.handle_packet(Time(0), enqueue(full));
    assert_eq!(
        drain(|| queue.poll_output()),
        vec![QueueOutput::Note(QueueNote::Overflowed { offset: full })]
    );
    assert_eq!(queue.end(), full, "refused, not dropped silently");
    queue.handle_packet(Time(1), Packet::QueueAck { through: 2 });
    drain(|| queue.poll_output());
    queue.handle_packet(Time(1), enqueue(0));
    let outputs = drain(|| queue.poll_output());
    assert_eq!(
        sent_to(&outputs, Role::Logic),
        vec![Packet::Stored { through: 2 }]
    );
}

#[test]
fn the_consumer_acks_only_after_the_sync_and_skips_a_redelivery() {
    let mut consumer = Consumer::new(Variant::Correct);
    consumer.handle_packet(Time(0), deliver(0));
    consumer.handle_packet(Time(0), deliver(1));
    // Ahead of its log: not stored, it waits for the hole to fill.
    consumer.handle_packet(Time(0), deliver(3));
    let outputs = drain(|| consumer.poll_output());
    assert_eq!(outputs, vec![QueueOutput::SyncStorage { through: 1 }]);
    assert_eq!(consumer.storage().written(), 2);
    consumer.handle_storage_synced(Time(2), 1);
    let outputs = drain(|| consumer.poll_output());
    assert_eq!(
        sent_to(&outputs, Role::Queue),
        vec![Packet::QueueAck { through: 1 }]
    );
    assert_eq!(
        sent_to(&outputs, Role::Logic),
        vec![Packet::Stored { through: 1 }]
    );
    assert!(outputs.contains(&QueueOutput::SyncStorage { through: 2 }));
    consumer.handle_storage_synced(Time(4), 2);
    drain(|| consumer.poll_output());
    consumer.handle_packet(Time(5), deliver(0));
    let outputs = drain(|| consumer.poll_output());
    assert!(
        outputs.contains(&QueueOutput::Note(QueueNote::DuplicateSkipped {
            offset: 0
        }))
    );
    assert_eq!(
        sent_to(&outputs, Role::Queue),
        vec![Packet::QueueAck { through: 2 }],
        "a redelivery is acked again"
    );
    assert_eq!(consumer.storage().written(), 2, "and not stored twice");
}

#[test]
fn deliveries_that_overtook_a_delayed_one_are_stored_in_order_when_it_comes() {
    let mut consumer = Consumer::new(Variant::Correct);
    consumer.handle_packet(Time(0), deliver(0));
    // 1 is delayed: 3 and 2 overtake it, and one beyond the window is not held.
    for offset in [3, 2, 1 + QUEUE_WINDOW_MAX] {
        consumer.handle_packet(Time(1), deliver(offset));
    }
    assert_eq!(consumer.next_offset(), 1, "nothing is stored past the hole");
    consumer.handle_packet(Time(2), deliver(1));
    assert_eq!(
        consumer.next_offset(),
        4,
        "the hole filled: 1, 2 and 3 are stored"
    );
    assert_eq!(consumer.offsets, vec![0, 1, 2, 3], "in offset order");
    let records: Vec<&Record> = consumer.storage().unsynced().iter().collect();
    assert_eq!(
        records,
        vec![&record(0), &record(1), &record(2), &record(3)]
    );
    // What was held is lost in a crash, like the unsynced writes: the queue redelivers it.
    let mut consumer = Consumer::new(Variant::Correct);
    consumer.handle_packet(Time(0), deliver(1));
    let (mut recovered, _) = Consumer::recover(&consumer);
    recovered.handle_packet(Time(1), deliver(0));
    assert_eq!(recovered.next_offset(), 1);
}

#[test]
fn a_consumer_crash_loses_its_unsynced_writes_and_takes_them_again() {
    let mut consumer = Consumer::new(Variant::Correct);
    consumer.handle_packet(Time(0), deliver(0));
    consumer.handle_storage_synced(Time(1), 1);
    consumer.handle_packet(Time(2), deliver(1));
    drain(|| consumer.poll_output());
    let (mut recovered, lost) = Consumer::recover(&consumer);
    assert_eq!((lost, recovered.next_offset()), (1, 1));
    recovered.handle_packet(Time(3), deliver(1));
    recovered.handle_storage_synced(Time(4), 2);
    let outputs = drain(|| recovered.poll_output());
    assert!(sent_to(&outputs, Role::Queue).contains(&Packet::QueueAck { through: 2 }));
}

#[test]
fn the_broken_consumers_ack_before_the_sync_or_store_a_redelivery_twice() {
    let mut early = Consumer::new(Variant::ConsumerAcksBeforeDurable);
    early.handle_packet(Time(0), deliver(0));
    let outputs = drain(|| early.poll_output());
    assert_eq!(
        sent_to(&outputs, Role::Logic),
        vec![Packet::Stored { through: 1 }],
        "reported stored before any sync"
    );
    let (recovered, _) = Consumer::recover(&early);
    assert_eq!(recovered.storage().written(), 0, "and the crash lost it");

    let mut twice = Consumer::new(Variant::NonIdempotentConsumer);
    twice.handle_packet(Time(0), deliver(0));
    twice.handle_packet(Time(0), deliver(0));
    assert_eq!(twice.storage().written(), 2);
}

#[test]
fn the_producer_enqueues_in_log_order_resends_and_passes_stored_on_once() {
    let mut storage = Storage::new();
    storage.append(record(0));
    storage.append(record(1));
    let mut producer = Producer::new(0, 0);
    producer.handle_sync_requested(Time(0), &storage, 2);
    producer.handle_sync_requested(Time(0), &storage, 2);
    let outputs = drain(|| producer.poll_output());
    assert_eq!(sent_to(&outputs, Role::Queue), vec![enqueue(0), enqueue(1)]);
    producer.handle_timeout(Time(PRODUCER_RESEND_MS));
    let outputs = drain(|| producer.poll_output());
    assert_eq!(sent_to(&outputs, Role::Queue), vec![enqueue(0), enqueue(1)]);
    assert_eq!(producer.handle_stored(Time(300), 1), Some(1));
    assert_eq!(producer.handle_stored(Time(300), 1), None, "a copy");
    assert_eq!(producer.handle_stored(Time(300), 5), None, "beyond the log");
    assert_eq!(producer.end(), 2);
}

#[test]
fn a_fenced_producers_enqueues_are_refused() {
    let mut queue = Queue::new();
    queue.handle_packet(Time(0), enqueue(0));
    queue.handle_packet(Time(0), enqueue(2));
    assert_eq!(
        queue.fence(1),
        1,
        "2 waits beyond the gap, and goes with the fence"
    );
    queue.handle_packet(Time(0), enqueue(1));
    assert_eq!(queue.end(), 1, "the old producer's late enqueue is refused");
    let packet = Packet::Enqueue {
        epoch: 1,
        offset: 1,
        record: record(9),
    };
    queue.handle_packet(Time(0), packet);
    assert_eq!(
        queue.end(),
        2,
        "the old producer's 2 is not taken after the new 1"
    );
}
