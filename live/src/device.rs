//! A device for real: the model's `Client` on its own UDP socket, with its local database in a
//! state file, playing its user's plan on the wall clock.
//!
//! The loop mirrors the simulator's device node: wait for a datagram, the timer, a due command
//! or a delayed packet; feed it to the client; drain `poll_output`; save the local database if
//! it changed. Packet faults are applied here, at the device's socket, in both directions: the
//! [`Harness`] decides each packet's fate (drop, pass, duplicate, delay) from the scenario's
//! fault rules, so the server process runs unmodified.
//!
//! Restarting a device is dropping its task (its socket and every volatile state go with it)
//! and starting a new one, which resumes the client from the state file.

use crate::clock::Clock;
use crate::device_state::DeviceState;
use crate::wire::{self, DATAGRAM_BYTES_MAX};
use imsim_model::{
    Address, Client, Command, DeviceId, DeviceIdentity, Event, Output, Packet, ProtocolConfig, Time,
};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::net::UdpSocket;

/// Device clocks start this far after scenario zero, as in the simulator, so a negative clock
/// skew never goes below zero.
pub const CLOCK_BASE_MS: i64 = 1_000_000_000;

/// What happens to one packet at a device's socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    Drop,
    /// Deliver `copies` copies after `delay_ms` scenario milliseconds.
    Pass {
        copies: u32,
        delay_ms: u64,
    },
}

/// What the devices share with the run: the fault decision and the history.
pub trait Harness: Send + Sync + 'static {
    /// The fate of a packet on `device`'s link (`to_server`: sent by the device).
    fn fate(&self, device: DeviceId, to_server: bool, packet: &Packet) -> Fate;
    /// A device event at scenario time `t_us`.
    fn record(&self, device: DeviceId, t_us: u64, event: Event);
    /// A problem that is not a protocol event (a datagram that did not decode, a state file
    /// that could not be written): counted and reported by the run.
    fn trouble(&self, device: DeviceId, message: String);
}

/// One device of a run: who it is, its plan and its state file. Shared by its incarnations.
pub struct DeviceSlot {
    pub identity: DeviceIdentity,
    pub config: ProtocolConfig,
    pub server: SocketAddr,
    pub skew_ms: i64,
    /// (scenario ms, command), in time order.
    pub plan: Vec<(u64, Command)>,
    /// The next command of the plan not yet handed to the client.
    pub next_command: AtomicUsize,
    pub state_dir: std::path::PathBuf,
}

impl DeviceSlot {
    fn local(&self, scenario_ms: u64) -> Time {
        Time((scenario_ms as i64 + CLOCK_BASE_MS + self.skew_ms).max(0) as u64)
    }

    fn scenario_ms(&self, local: Time) -> u64 {
        (local.0 as i64 - CLOCK_BASE_MS - self.skew_ms).max(0) as u64
    }
}

/// Work queued for later: a delayed packet to send or to hand to the client.
enum Later {
    Send(Vec<u8>),
    Deliver(Packet),
}

struct Device {
    slot: Arc<DeviceSlot>,
    harness: Arc<dyn Harness>,
    clock: Clock,
    client: Client,
    state: DeviceState,
    socket: UdpSocket,
    /// The client's timer, in scenario µs.
    alarm_us: Option<u64>,
    /// Delayed packets by (scenario µs, order).
    later: BTreeMap<(u64, u64), Later>,
    scheduled: u64,
}

/// Runs one incarnation of a device until its task is dropped. `resume`: the app restarted, so
/// the client comes from the state file and the commands missed while it was down are skipped
/// (only going online or offline still follows the plan, as in the simulator).
pub async fn run_device(
    slot: Arc<DeviceSlot>,
    harness: Arc<dyn Harness>,
    clock: Clock,
    resume: bool,
) -> Result<(), String> {
    let device = slot.identity.device;
    let mut state = DeviceState::new(&slot.state_dir, slot.identity.user, device);
    let now_ms = clock.now().0;
    let local = slot.local(now_ms);
    let client = match state.load().map_err(|error| error.to_string())? {
        Some(store) => Client::resume(slot.config.clone(), slot.identity, store, local),
        None => Client::new(slot.config.clone(), slot.identity),
    };
    let socket = UdpSocket::bind("127.0.0.1:0")
        .await
        .map_err(|error| format!("device {device}: bind: {error}"))?;
    let mut this = Device {
        slot,
        harness,
        clock,
        client,
        state,
        socket,
        alarm_us: None,
        later: BTreeMap::new(),
        scheduled: 0,
    };
    if resume {
        this.skip_missed(now_ms);
    }
    this.event_loop().await
}

impl Device {
    fn skip_missed(&mut self, now_ms: u64) {
        let local = self.slot.local(now_ms);
        loop {
            let index = self.slot.next_command.load(Ordering::SeqCst);
            match self.slot.plan.get(index) {
                Some((at_ms, command)) if *at_ms < now_ms => {
                    self.slot.next_command.store(index + 1, Ordering::SeqCst);
                    if matches!(command, Command::GoOnline | Command::GoOffline) {
                        self.client.handle_command(local, command.clone());
                    }
                }
                _ => break,
            }
        }
    }

    async fn event_loop(&mut self) -> Result<(), String> {
        let mut buffer = vec![0u8; DATAGRAM_BYTES_MAX + 1];
        loop {
            self.after_input();
            let next_command_us = self
                .slot
                .plan
                .get(self.slot.next_command.load(Ordering::SeqCst))
                .map(|(at_ms, _)| at_ms * 1_000);
            let queued_us = self.later.first_key_value().map(|(&(at, _), _)| at);
            let wake_us = [next_command_us, queued_us, self.alarm_us]
                .into_iter()
                .flatten()
                .min();
            let sleep = wake_us.map(|at| self.clock.real_until(at));
            tokio::select! {
                biased;
                received = self.socket.recv_from(&mut buffer) => match received {
                    Ok((length, from)) => self.handle_datagram(&buffer[..length], from),
                    Err(error) if crate::is_peer_gone(&error) => {}
                    Err(error) => return Err(format!("device receive: {error}")),
                },
                _ = tokio::time::sleep(sleep.unwrap_or_default()), if sleep.is_some() => {
                    self.handle_due(next_command_us, queued_us);
                }
            }
        }
    }

    /// Whatever is due now: a command first, then delayed packets, then the client's timer.
    fn handle_due(&mut self, next_command_us: Option<u64>, queued_us: Option<u64>) {
        let now_us = self.clock.now_us();
        let local = self.slot.local(now_us / 1_000);
        if next_command_us.is_some_and(|at| at <= now_us) {
            let index = self.slot.next_command.fetch_add(1, Ordering::SeqCst);
            let command = self.slot.plan[index].1.clone();
            self.client.handle_command(local, command);
        } else if queued_us.is_some_and(|at| at <= now_us) {
            match self.later.pop_first().map(|(_, later)| later) {
                Some(Later::Send(datagram)) => self.send(&datagram),
                Some(Later::Deliver(packet)) => {
                    self.client.handle_packet(local, Address(0), packet)
                }
                None => {}
            }
        } else if self.alarm_us.is_some_and(|at| at <= now_us) {
            self.alarm_us = None;
            self.client.handle_timeout(local);
        }
    }

    fn handle_datagram(&mut self, datagram: &[u8], from: SocketAddr) {
        let device = self.slot.identity.device;
        if from != self.slot.server {
            return;
        }
        let packet = match wire::decode(datagram) {
            Ok(packet) => packet,
            Err(error) => {
                let message = format!("dropped a datagram from {from}: {error}");
                self.harness.trouble(device, message);
                return;
            }
        };
        let Fate::Pass { copies, delay_ms } = self.harness.fate(device, false, &packet) else {
            return;
        };
        for _ in 0..copies {
            if delay_ms == 0 {
                let local = self.slot.local(self.clock.now().0);
                self.client.handle_packet(local, Address(0), packet.clone());
            } else {
                self.schedule(delay_ms, Later::Deliver(packet.clone()));
            }
        }
    }

    fn schedule(&mut self, delay_ms: u64, later: Later) {
        self.scheduled += 1;
        let at_us = self.clock.now_us() + delay_ms * 1_000;
        self.later.insert((at_us, self.scheduled), later);
    }

    /// Drains the client's outputs and saves its local database if it changed.
    fn after_input(&mut self) {
        let device = self.slot.identity.device;
        while let Some(output) = self.client.poll_output() {
            match output {
                Output::Transmit { packet, .. } => self.transmit(&packet),
                Output::ArmTimer { at } => {
                    self.alarm_us = Some(self.slot.scenario_ms(at) * 1_000);
                }
                Output::Event(event) => self.harness.record(device, self.clock.now_us(), event),
                Output::SyncStorage { .. } => {}
            }
        }
        if let Err(error) = self.state.save(self.client.local_store()) {
            self.harness.trouble(device, error.to_string());
        }
    }

    fn transmit(&mut self, packet: &Packet) {
        let device = self.slot.identity.device;
        let datagram = match wire::encode(packet) {
            Ok(datagram) => datagram,
            Err(error) => {
                self.harness.trouble(device, format!("not sent: {error}"));
                return;
            }
        };
        let Fate::Pass { copies, delay_ms } = self.harness.fate(device, true, packet) else {
            return;
        };
        for _ in 0..copies {
            if delay_ms == 0 {
                self.send(&datagram);
            } else {
                self.schedule(delay_ms, Later::Send(datagram.clone()));
            }
        }
    }

    fn send(&mut self, datagram: &[u8]) {
        let device = self.slot.identity.device;
        match self.socket.try_send_to(datagram, self.slot.server) {
            Ok(_) => {}
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                let message = "not sent: socket send buffer full".to_string();
                self.harness.trouble(device, message);
            }
            // The server is down (ICMP port unreachable comes back as an error on a later
            // send): the packet is lost, as it would be on the way to a dead server.
            Err(error) => tracing::debug!("device {device}: send: {error}"),
        }
    }
}
