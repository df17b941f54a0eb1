//! madsim's own datagram ceiling: how many datagrams per wall second one node can send another
//! with the transport the protocol uses (`send_to_raw` / `recv_from_raw`, a boxed payload), with
//! nothing else running. `imsim bench` divides the protocol's packet rate by this.

use madsim::net::Endpoint;
use madsim::runtime::{Handle, Runtime};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

const TAG: u64 = 0xce1;
const PORT: u16 = 7000;

/// Sends `datagrams` datagrams from one node to another in a fresh runtime on its own thread and
/// returns datagrams per wall second. The clock is read on the calling thread, outside the
/// runtime (inside it, time is virtual).
pub fn datagrams_per_s(datagrams: u64) -> f64 {
    let started = Instant::now();
    let thread = std::thread::Builder::new()
        .name("imsim-ceiling".to_string())
        .spawn(move || {
            Runtime::with_seed_and_config(1, madsim::Config::default()).block_on(pump(datagrams))
        })
        .expect("spawn the ceiling thread");
    let received = match thread.join() {
        Ok(received) => received,
        Err(panic) => std::panic::resume_unwind(panic),
    };
    assert_eq!(
        received, datagrams,
        "madsim lost datagrams with no faults configured"
    );
    datagrams as f64 / started.elapsed().as_secs_f64()
}

/// One sender sends sequentially; one receiver takes them in. Returns how many arrived.
async fn pump(datagrams: u64) -> u64 {
    let handle = Handle::current();
    let receiver_address = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 9, 0, 2)), PORT);
    let receiver = handle
        .create_node()
        .name("ceiling-receiver")
        .ip(receiver_address.ip())
        .build();
    let sender = handle
        .create_node()
        .name("ceiling-sender")
        .ip(IpAddr::V4(Ipv4Addr::new(10, 9, 0, 1)))
        .build();
    let endpoint = receiver
        .spawn(async move { Endpoint::bind(receiver_address).await })
        .await
        .expect("the bind task ran")
        .expect("bind the receiver");
    let receiving = receiver.spawn(async move {
        let mut received = 0;
        while received < datagrams {
            let (payload, _) = endpoint.recv_from_raw(TAG).await.expect("receive");
            debug_assert!(payload.downcast_ref::<u64>().is_some());
            received += 1;
        }
        received
    });
    sender
        .spawn(async move {
            let local = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 9, 0, 1)), PORT);
            let endpoint = Endpoint::bind(local).await.expect("bind the sender");
            for number in 0..datagrams {
                endpoint
                    .send_to_raw(receiver_address, TAG, Box::new(number))
                    .await
                    .expect("send");
            }
        })
        .await
        .expect("the sending task ran");
    receiving.await.expect("the receiving task ran")
}
