//! `imsim serve`: the model's `Server` as a long-running process on a real UDP socket, with its
//! storage in a real log file.
//!
//! One loop on a current-thread tokio runtime, the same shape as the simulator's node driver:
//! wait for a datagram, the timer, a finished sync or SIGTERM; feed it to the model; then copy
//! the records the model wrote into the log's buffer and drain `poll_output` completely —
//! packets are encoded and sent, the timer re-armed, events written to the events file, and a
//! `SyncStorage` hands the buffered records to a blocking thread that writes them and calls
//! `fdatasync`, then feeds `Synced` back. The loop never blocks on the disk.
//!
//! Events are written one line per `write` before any packet of the same drain is sent, so a
//! SIGKILL can lose an event only if it also lost everything that event caused.

use crate::clock::Clock;
use crate::data_dir::DataDir;
use crate::log::{write_and_sync, LogFile};
use crate::wire::{self, DATAGRAM_BYTES_MAX};
use crate::StorageError;
use imsim_model::{Address, Directory, Event, Output, ProtocolConfig, Server, Time};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

/// What a server needs to run.
pub struct ServeOptions {
    pub listen: SocketAddr,
    pub data: PathBuf,
    pub config: ProtocolConfig,
    pub directory: Directory,
    pub clock: ServeClock,
    /// Where to append the server's events (JSON lines of [`ServerLine`]).
    pub events_out: Option<PathBuf>,
}

/// Where the server's clock origin comes from.
pub enum ServeClock {
    /// Known when the server starts.
    Fixed(Clock),
    /// Asked for once the data directory is open and the runtime built, so that scenario time
    /// zero comes after the process's start-up work (`imsim live`'s first server).
    Deferred {
        scale: f64,
        origin_ns: Box<dyn FnOnce() -> Result<u64, String>>,
    },
}

/// One line of a server's events file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "line", rename_all = "snake_case")]
pub enum ServerLine {
    /// The server started on its data directory.
    Started {
        t_us: u64,
        incarnation: u64,
        records: u64,
    },
    /// The log ended in a torn record, which was truncated.
    TornTail {
        t_us: u64,
        offset: u64,
        bytes: u64,
        reason: String,
    },
    Event {
        t_us: u64,
        event: Event,
    },
    /// Every record below `through` is durable and its events are written above. A record
    /// durable at a SIGKILL but past the last such line has no event yet (see `merge`).
    Published {
        t_us: u64,
        through: u64,
    },
    /// The server stopped cleanly (SIGTERM) after a final sync.
    Stopped {
        t_us: u64,
        counts: ServeCounts,
    },
}

impl ServerLine {
    pub fn t_us(&self) -> Option<u64> {
        match self {
            ServerLine::Started { t_us, .. }
            | ServerLine::TornTail { t_us, .. }
            | ServerLine::Event { t_us, .. }
            | ServerLine::Published { t_us, .. }
            | ServerLine::Stopped { t_us, .. } => Some(*t_us),
        }
    }
}

/// What a server's socket saw.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServeCounts {
    pub received: u64,
    pub sent: u64,
    /// Datagrams that did not decode (each logged), dropped.
    pub bad_datagrams: u64,
    /// Packets too large for one datagram, dropped.
    pub oversized: u64,
    /// Packets the kernel would not take (socket send buffer full), dropped.
    pub send_buffer_full: u64,
    pub syncs: u64,
    /// Total time spent in write + fdatasync, in microseconds of real time.
    pub sync_us: u64,
}

/// Why a server stopped with an error.
#[derive(Debug)]
pub enum ServeError {
    /// The data directory cannot be used (locked, corrupt, unreadable): bad input.
    Storage(StorageError),
    Socket(String),
    /// The deferred clock origin could not be read.
    Clock(String),
}

impl std::fmt::Display for ServeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServeError::Storage(error) => write!(f, "{error}"),
            ServeError::Socket(message) | ServeError::Clock(message) => f.write_str(message),
        }
    }
}

impl From<StorageError> for ServeError {
    fn from(error: StorageError) -> ServeError {
        ServeError::Storage(error)
    }
}

/// Peers the server has heard from, as the model's opaque addresses.
#[derive(Default)]
struct Peers {
    address_of: BTreeMap<SocketAddr, Address>,
    socket_of: BTreeMap<Address, SocketAddr>,
}

/// Distinct peers remembered. Each device socket is one; a device that restarts gets a new
/// one. Beyond this, datagrams from new peers are dropped (and counted as bad).
const PEERS_MAX: usize = 1 << 20;

impl Peers {
    fn address(&mut self, socket: SocketAddr) -> Option<Address> {
        if let Some(address) = self.address_of.get(&socket) {
            return Some(*address);
        }
        if self.address_of.len() >= PEERS_MAX {
            return None;
        }
        // Address 0 is the server's own in the model; peers count from 1.
        let address = Address(self.address_of.len() as u32 + 1);
        self.address_of.insert(socket, address);
        self.socket_of.insert(address, socket);
        Some(address)
    }
}

/// The events file: one line per write, so each line reaches the kernel whole.
struct EventSink {
    file: Option<File>,
    clock: Clock,
}

impl EventSink {
    fn write(&mut self, line: &ServerLine) {
        let Some(file) = &mut self.file else { return };
        let mut text = serde_json::to_string(line).expect("a server line serialises");
        text.push('\n');
        if let Err(error) = file.write_all(text.as_bytes()) {
            tracing::error!("events file: {error}; no more events are recorded");
            self.file = None;
        }
    }

    fn event(&mut self, event: Event) {
        let t_us = self.clock.now_us();
        self.write(&ServerLine::Event { t_us, event });
    }
}

/// The sync running on a blocking thread: up to which record, and since when (real µs).
struct SyncInFlight {
    through: u64,
    started_ns: u64,
    task: JoinHandle<Result<(), StorageError>>,
}

struct Loop {
    server: Server,
    log: LogFile,
    socket: UdpSocket,
    peers: Peers,
    sink: EventSink,
    clock: Clock,
    alarm: Option<Time>,
    sync: Option<SyncInFlight>,
    /// A sync the model asked for while one was still running.
    sync_wanted: Option<u64>,
    /// A sync the model was just told of: its `published` line follows its events.
    published: Option<u64>,
    counts: ServeCounts,
}

/// Runs a server until SIGTERM (or SIGINT). `ready` is called with the bound address once the
/// data directory is open and the socket bound.
pub fn serve(options: ServeOptions, ready: impl FnOnce(SocketAddr)) -> Result<(), ServeError> {
    let data = DataDir::open(&options.data)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| ServeError::Socket(format!("cannot start the runtime: {error}")))?;
    let clock = match options.clock {
        ServeClock::Fixed(clock) => clock,
        ServeClock::Deferred { scale, origin_ns } => {
            Clock::new(origin_ns().map_err(ServeError::Clock)?, scale)
        }
    };
    runtime.block_on(run(
        Started {
            listen: options.listen,
            config: options.config,
            directory: options.directory,
            clock,
            events_out: options.events_out,
        },
        data,
        ready,
    ))
}

/// [`ServeOptions`] with the clock known.
struct Started {
    listen: SocketAddr,
    config: ProtocolConfig,
    directory: Directory,
    clock: Clock,
    events_out: Option<PathBuf>,
}

async fn run(
    options: Started,
    data: DataDir,
    ready: impl FnOnce(SocketAddr),
) -> Result<(), ServeError> {
    let clock = options.clock;
    let events = match &options.events_out {
        Some(path) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|source| StorageError::Io {
                    path: path.clone(),
                    op: "open",
                    source,
                })?,
        ),
        None => None,
    };
    let mut sink = EventSink {
        file: events,
        clock,
    };
    let records = data.contents.records.len() as u64;
    sink.write(&ServerLine::Started {
        t_us: clock.now_us(),
        incarnation: data.incarnation,
        records,
    });
    if let Some(torn) = &data.contents.torn {
        tracing::warn!(
            "{}: torn tail of {} bytes at offset {} ({}) truncated",
            data.log.path().display(),
            torn.bytes,
            torn.offset,
            torn.reason
        );
        sink.write(&ServerLine::TornTail {
            t_us: clock.now_us(),
            offset: torn.offset,
            bytes: torn.bytes,
            reason: torn.reason.clone(),
        });
    }
    let server = data.recover_server(options.config, options.directory, clock.now())?;
    tracing::info!(
        "data {}: incarnation {}, {records} records replayed",
        data.path().display(),
        data.incarnation
    );
    let socket = UdpSocket::bind(options.listen)
        .await
        .map_err(|error| ServeError::Socket(format!("bind {}: {error}", options.listen)))?;
    let local = socket
        .local_addr()
        .map_err(|error| ServeError::Socket(format!("local address: {error}")))?;
    let DataDir { log, .. } = data;
    let mut state = Loop {
        server,
        log,
        socket,
        peers: Peers::default(),
        sink,
        clock,
        alarm: None,
        sync: None,
        sync_wanted: None,
        published: None,
        counts: ServeCounts::default(),
    };
    state.after_input()?;
    // The handlers exist before anyone is told the server is up: a SIGTERM right after the
    // "listening" line must stop it cleanly, not kill it.
    let signal = |kind| {
        tokio::signal::unix::signal(kind)
            .map_err(|error| ServeError::Socket(format!("signal handler: {error}")))
    };
    let terminate = signal(tokio::signal::unix::SignalKind::terminate())?;
    let interrupt = signal(tokio::signal::unix::SignalKind::interrupt())?;
    ready(local);
    tracing::info!("listening on {local}");
    state.event_loop(terminate, interrupt).await
}

impl Loop {
    async fn event_loop(
        &mut self,
        mut terminate: tokio::signal::unix::Signal,
        mut interrupt: tokio::signal::unix::Signal,
    ) -> Result<(), ServeError> {
        let mut buffer = vec![0u8; DATAGRAM_BYTES_MAX + 1];
        loop {
            let alarm = self.alarm.map(|at| self.clock.real_until(at.0 * 1_000));
            tokio::select! {
                biased;
                _ = terminate.recv() => break,
                _ = interrupt.recv() => break,
                finished = async { (&mut self.sync.as_mut().expect("guarded").task).await },
                    if self.sync.is_some() => {
                    let sync = self.sync.take().expect("guarded");
                    self.finish_sync(sync, finished)?;
                }
                received = self.socket.recv_from(&mut buffer) => match received {
                    Ok((length, from)) => self.handle_datagram(&buffer[..length], from),
                    Err(error) if crate::is_peer_gone(&error) => {}
                    Err(error) => return Err(ServeError::Socket(format!("receive: {error}"))),
                },
                _ = tokio::time::sleep(alarm.unwrap_or_default()), if alarm.is_some() => {
                    self.alarm = None;
                    self.server.handle_timeout(self.clock.now());
                }
            }
            self.after_input()?;
        }
        self.shut_down().await
    }

    fn handle_datagram(&mut self, datagram: &[u8], from: SocketAddr) {
        self.counts.received += 1;
        match (wire::decode(datagram), self.peers.address(from)) {
            (Ok(packet), Some(address)) => {
                self.server.handle_packet(self.clock.now(), address, packet)
            }
            (Err(error), _) => {
                self.counts.bad_datagrams += 1;
                tracing::warn!("dropped a datagram from {from}: {error}");
            }
            (Ok(_), None) => {
                self.counts.bad_datagrams += 1;
                tracing::warn!("dropped a datagram from {from}: {PEERS_MAX} peers already");
            }
        }
    }

    fn finish_sync(
        &mut self,
        sync: SyncInFlight,
        finished: Result<Result<(), StorageError>, tokio::task::JoinError>,
    ) -> Result<(), ServeError> {
        match finished {
            Ok(Ok(())) => {}
            Ok(Err(error)) => return Err(error.into()),
            Err(error) => return Err(ServeError::Socket(format!("sync thread: {error}"))),
        }
        self.counts.syncs += 1;
        self.counts.sync_us += (crate::clock::monotonic_ns() - sync.started_ns) / 1_000;
        self.server
            .handle_storage_synced(self.clock.now(), sync.through);
        self.published = Some(sync.through);
        Ok(())
    }

    /// After any input: copy the model's new records into the log's buffer, drain the outputs,
    /// and start a sync the model asked for.
    fn after_input(&mut self) -> Result<(), ServeError> {
        let storage = self.server.storage();
        let unsynced = storage.unsynced();
        let already = (self.log.appended() - storage.synced()) as usize;
        for record in &unsynced[already.min(unsynced.len())..] {
            self.log.append(record);
        }
        while let Some(output) = self.server.poll_output() {
            match output {
                Output::Transmit { to, packet } => self.transmit(to, &packet),
                Output::ArmTimer { at } => self.alarm = Some(at),
                Output::SyncStorage { through } => self.sync_wanted = Some(through),
                Output::Event(event) => self.sink.event(event),
            }
        }
        if let Some(through) = self.published.take() {
            let t_us = self.clock.now_us();
            self.sink.write(&ServerLine::Published { t_us, through });
        }
        if self.sync.is_none() {
            if let Some(through) = self.sync_wanted.take() {
                let (file, bytes) = self.log.take_through(through);
                let path = self.log.path().to_path_buf();
                self.sync = Some(SyncInFlight {
                    through,
                    started_ns: crate::clock::monotonic_ns(),
                    task: tokio::task::spawn_blocking(move || write_and_sync(&path, &file, &bytes)),
                });
            }
        }
        Ok(())
    }

    fn transmit(&mut self, to: Address, packet: &imsim_model::Packet) {
        let Some(peer) = self.peers.socket_of.get(&to).copied() else {
            return;
        };
        let datagram = match wire::encode(packet) {
            Ok(datagram) => datagram,
            Err(error) => {
                self.counts.oversized += 1;
                tracing::warn!("not sent to {peer}: {error}");
                return;
            }
        };
        match self.socket.try_send_to(&datagram, peer) {
            Ok(_) => self.counts.sent += 1,
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                self.counts.send_buffer_full += 1;
                tracing::warn!("not sent to {peer}: socket send buffer full");
            }
            // A peer's port that is gone (ICMP unreachable reported on a later send) is the
            // peer's problem, as a lost packet is.
            Err(error) => tracing::debug!("send to {peer}: {error}"),
        }
    }

    /// SIGTERM: finish the running sync, sync everything written since, tell the model (so its
    /// events for those records are written), and stop.
    async fn shut_down(&mut self) -> Result<(), ServeError> {
        if let Some(mut sync) = self.sync.take() {
            let finished = (&mut sync.task).await;
            self.finish_sync(sync, finished)?;
            self.after_input()?;
        }
        if let Some(mut sync) = self.sync.take() {
            let finished = (&mut sync.task).await;
            self.finish_sync(sync, finished)?;
        }
        let written = self.server.storage().written();
        if written > self.server.storage().synced() {
            let (file, bytes) = self.log.take_through(written);
            let path = self.log.path().to_path_buf();
            tokio::task::spawn_blocking(move || write_and_sync(&path, &file, &bytes))
                .await
                .map_err(|error| ServeError::Socket(format!("sync thread: {error}")))??;
            self.server.handle_storage_synced(self.clock.now(), written);
            self.sync_wanted = None;
            while let Some(output) = self.server.poll_output() {
                if let Output::Event(event) = output {
                    self.sink.event(event);
                }
            }
            let t_us = self.clock.now_us();
            self.sink.write(&ServerLine::Published {
                t_us,
                through: written,
            });
        }
        tracing::info!("stopped after a final sync: {:?}", self.counts);
        let (t_us, counts) = (self.clock.now_us(), self.counts.clone());
        self.sink.write(&ServerLine::Stopped { t_us, counts });
        Ok(())
    }
}
