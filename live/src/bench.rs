//! Figures of the live driver for `imsim bench`: how many packets per second the codec and the
//! loopback UDP stack carry, and the real time-compression figure — one scenario and seed,
//! simulated, then run for real at time scale 1.

use crate::run::{run_live, LiveOptions};
use crate::wire;
use imsim_model::{ClientMsgId, ClientSeq, ConvId, DeviceId, Message, Packet, Seq, UserId};
use imsim_sim::{simulate, Scenario, Setup};
use std::net::UdpSocket;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Datagrams in flight at once: well below a loopback socket's default receive buffer, so the
/// figure measures the stack and the codec, not drops.
const WINDOW: u64 = 64;

/// The encoded size, in bytes with the version byte, of the packets a chat sends most: a
/// heartbeat, a send and its ack, a push, a cumulative ack.
pub fn datagram_sizes() -> Vec<(&'static str, usize)> {
    let message = sample_message();
    let packets = [
        Packet::Heartbeat,
        Packet::Send {
            conv: message.conv,
            sender: message.sender_user,
            client_msg_id: message.client_msg_id,
            client_seq: message.client_seq,
            body: message.body.clone(),
            client_time_ms: message.client_time_ms,
            change: None,
        },
        Packet::SendAck {
            conv: message.conv,
            client_msg_id: message.client_msg_id,
            seq: message.seq,
        },
        Packet::Deliver { message },
        Packet::Ack {
            conv: ConvId(3),
            watermark: Seq(41),
        },
    ];
    packets
        .iter()
        // Each of these is a few dozen bytes: far below the datagram limit.
        .map(|packet| (packet.kind(), wire::encode(packet).expect("small").len()))
        .collect()
}

/// A message as the workload writes them (`u1/d1 #40`), well into a conversation.
fn sample_message() -> Message {
    Message {
        conv: ConvId(3),
        seq: Seq(41),
        sender_user: UserId(1),
        sender_device: DeviceId(1),
        client_msg_id: ClientMsgId(40),
        client_seq: ClientSeq(40),
        body: "u1/d1 #40".to_string(),
        client_time_ms: 1_000_012_345,
        change: None,
    }
}

/// Encodes, sends, receives and decodes `datagrams` pushes of a short message between two
/// sockets on 127.0.0.1, `WINDOW` at a time: packets per second.
pub fn loopback_packets_per_s(datagrams: u64) -> Result<f64, String> {
    let io = |error: std::io::Error| format!("loopback: {error}");
    let sender = UdpSocket::bind("127.0.0.1:0").map_err(io)?;
    let receiver = UdpSocket::bind("127.0.0.1:0").map_err(io)?;
    receiver
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(io)?;
    let to = receiver.local_addr().map_err(io)?;
    let packet = Packet::Deliver {
        message: sample_message(),
    };
    let mut buffer = vec![0u8; wire::DATAGRAM_BYTES_MAX + 1];
    let started = Instant::now();
    let mut done = 0;
    while done < datagrams {
        let window = WINDOW.min(datagrams - done);
        for _ in 0..window {
            let datagram = wire::encode(&packet).map_err(|error| error.to_string())?;
            sender.send_to(&datagram, to).map_err(io)?;
        }
        for _ in 0..window {
            let (length, _) = receiver.recv_from(&mut buffer).map_err(io)?;
            let decoded = wire::decode(&buffer[..length]).map_err(|error| error.to_string())?;
            std::hint::black_box(decoded);
        }
        done += window;
    }
    Ok(datagrams as f64 / started.elapsed().as_secs_f64())
}

/// One scenario and seed, simulated and then live.
pub struct Compression {
    /// Scenario time of the run (workload and quiet period), in seconds.
    pub scenario_s: f64,
    pub simulated_wall_s: f64,
    pub live_wall_s: f64,
    /// Protocol packets per wall second of the live run (counted at the device sockets).
    pub live_packets_per_s: f64,
    /// Mean write + fdatasync of the last server process, in milliseconds.
    pub fdatasync_ms_mean: f64,
    pub live_ok: bool,
}

/// A short scenario for the comparison: the default topology, `duration_ms` of traffic and the
/// same again of quiet, no faults.
pub fn short_scenario(duration_ms: u64) -> Scenario {
    let mut scenario = Scenario::default_scenario();
    scenario.name = "bench-live".to_string();
    scenario.faults.swarm = false;
    scenario.workload.duration_ms = duration_ms;
    scenario.workload.messages = 20;
    scenario.workload.offline_periods_per_device = 0;
    scenario.liveness.quiet_period_ms = Some(duration_ms);
    scenario
}

/// Runs `scenario` with `seed` in the simulator and live at `time_scale`.
pub fn compression(
    scenario: &Scenario,
    seed: u64,
    time_scale: f64,
    imsim: PathBuf,
) -> Result<Compression, String> {
    let started = Instant::now();
    std::hint::black_box(simulate(&Setup::new(scenario, seed)));
    let simulated_wall_s = started.elapsed().as_secs_f64();
    let live = run_live(&LiveOptions {
        scenario: scenario.clone(),
        seed,
        time_scale,
        imsim,
    })?;
    let live_wall_s = live.wall.as_secs_f64();
    let counts = live.server_counts.last().cloned().unwrap_or_default();
    Ok(Compression {
        scenario_s: (scenario.workload.duration_ms + scenario.quiet_period_ms()) as f64 / 1e3,
        simulated_wall_s,
        live_wall_s,
        live_packets_per_s: live.outcome.stats.packets.sent as f64 / live_wall_s,
        fdatasync_ms_mean: counts.sync_us as f64 / 1e3 / counts.syncs.max(1) as f64,
        live_ok: live.outcome.ok(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_common_packets_fit_in_a_few_dozen_bytes() {
        for (kind, bytes) in datagram_sizes() {
            assert!((2..64).contains(&bytes), "{kind}: {bytes} bytes");
        }
    }

    #[test]
    fn loopback_carries_every_datagram_it_counts() {
        let rate = loopback_packets_per_s(500).unwrap();
        assert!(rate > 100.0, "{rate} packets/s");
    }
}
