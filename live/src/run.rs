//! `imsim live`: one scenario run for real on loopback, judged like a simulated run.
//!
//! 1. From the seed, the same setup as the simulator (`Setup::new`): topology, fault profile,
//!    workload plan. They are drawn the same way; what happens next is not replayable.
//! 2. Start `imsim serve` as a child process on a free port with a fresh data directory, and
//!    every device of the scenario in this process, each with its own UDP socket.
//! 3. Safety phase on the wall clock: the plan's commands at their times; packet faults at the
//!    device sockets ([`crate::faults`], the simulator's own rules); a server crash is SIGKILL
//!    of the child and a new child on the same data directory after the downtime; a device
//!    restart drops the device and starts it again from its state file.
//! 4. Liveness phase: faults end, every device is told to go online, the run waits the quiet
//!    period. Then SIGTERM (the server syncs and stops), and the durable timelines are read
//!    from the log file itself.
//! 5. The server's events (written by the child) and the devices' and harness's (recorded
//!    here) merge on the one monotonic clock into a history for the usual checkers.

use crate::clock::Clock;
use crate::device::{run_device, DeviceSlot};
use crate::directory::token;
use crate::faults::LiveHarness;
use crate::log::parse_log;
use crate::merge::{events_file, merge, read_server_files, unpublished_events};
use crate::server::ServeCounts;
use imsim_history::stats::RunStats;
use imsim_history::{check_all, HarnessEvent, History, Node, RunStart, Traffic};
use imsim_model::{DeviceId, DeviceIdentity};
use imsim_sim::{RunOutcome, Scenario, Setup};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

/// A server child gets this long (real time) to open its data directory and bind.
const SERVER_START_TIMEOUT: Duration = Duration::from_secs(20);
/// A server child gets this long to stop after SIGTERM before it is killed.
const SERVER_STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// How to run one live run.
pub struct LiveOptions {
    /// The scenario, its variant already applied. The server children read it from a copy in
    /// the run directory, so a scenario built in memory (the bench's) runs as well.
    pub scenario: Scenario,
    pub seed: u64,
    /// Real time per scenario time (0.1: ten times faster).
    pub time_scale: f64,
    /// The `imsim` binary, started as `imsim serve`.
    pub imsim: PathBuf,
}

/// A finished live run.
pub struct LiveOutcome {
    pub outcome: RunOutcome,
    pub wall: Duration,
    /// Per server incarnation, what its socket and disk did (none for a killed one).
    pub server_counts: Vec<ServeCounts>,
    /// Torn tails found at restarts, undecodable datagrams, state files that failed …
    pub notes: Vec<String>,
    /// Where the run's files are (data directory, events, server logs); kept on failure.
    pub run_dir: PathBuf,
}

/// What the controller does at a moment of the run.
#[derive(Clone, Debug)]
enum Action {
    CrashServer,
    RestartServer,
    CrashDevice(DeviceId),
    RestartDevice(DeviceId),
    Partition(imsim_history::faults::PartitionFault),
    Heal(DeviceId),
    Liveness,
}

/// Every action in time order. Crashes of one node are played one after another, as in the
/// simulator: a crash that falls inside the previous downtime waits for the restart.
fn schedule(setup: &Setup) -> Vec<(u64, Action)> {
    let faults = &setup.faults;
    let mut actions = Vec::new();
    let mut windows = |list: Vec<(u64, u64)>, crash: Action, restart: Action| {
        let mut free_ms = 0;
        let mut list = list;
        list.sort();
        for (at_ms, downtime_ms) in list {
            let at_ms = at_ms.max(free_ms);
            actions.push((at_ms, crash.clone()));
            actions.push((at_ms + downtime_ms, restart.clone()));
            free_ms = at_ms + downtime_ms;
        }
    };
    let server: Vec<(u64, u64)> = faults
        .server_crashes
        .iter()
        .map(|c| (c.at_ms, c.downtime_ms))
        .collect();
    windows(server, Action::CrashServer, Action::RestartServer);
    let mut by_device: BTreeMap<DeviceId, Vec<(u64, u64)>> = BTreeMap::new();
    for restart in &faults.device_restarts {
        by_device
            .entry(restart.device)
            .or_default()
            .push((restart.at_ms, restart.downtime_ms));
    }
    for (device, list) in by_device {
        windows(
            list,
            Action::CrashDevice(device),
            Action::RestartDevice(device),
        );
    }
    for partition in &faults.partitions {
        actions.push((partition.start_ms, Action::Partition(partition.clone())));
        let healed_ms = partition.start_ms + partition.duration_ms;
        actions.push((healed_ms, Action::Heal(partition.device)));
    }
    actions.push((setup.scenario.workload.duration_ms, Action::Liveness));
    actions.sort_by_key(|(at_ms, _)| *at_ms);
    actions
}

/// Runs one scenario for real. Errors are failures of the harness (the server would not start,
/// a file could not be written), not of the protocol.
pub fn run_live(options: &LiveOptions) -> Result<LiveOutcome, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| format!("cannot start the runtime: {error}"))?;
    runtime.block_on(Controller::run(options))
}

struct Controller<'a> {
    options: &'a LiveOptions,
    setup: Setup,
    clock: Clock,
    harness: Arc<LiveHarness>,
    run_dir: PathBuf,
    listen: std::net::SocketAddr,
    server: Option<Child>,
    /// Server children started so far (each writes its own events file).
    server_starts: u32,
    devices: BTreeMap<DeviceId, (Arc<DeviceSlot>, JoinHandle<()>)>,
}

impl<'a> Controller<'a> {
    async fn run(options: &'a LiveOptions) -> Result<LiveOutcome, String> {
        let started = Instant::now();
        let mut setup = Setup::new(&options.scenario, options.seed);
        // Placements wait for moments inside the server's driver (a sync asked for, a send just
        // taken in), which a real server's process does not expose to this harness: a live run
        // plays the timed faults only, and its history says so.
        setup.faults.placements.clear();
        let run_dir = tempfile::Builder::new()
            .prefix("imsim-live-")
            .tempdir()
            .map_err(|error| format!("cannot create a run directory: {error}"))?
            .keep();
        std::fs::create_dir_all(run_dir.join("devices"))
            .map_err(|error| format!("{}: {error}", run_dir.display()))?;
        let scenario_file = run_dir.join("scenario.toml");
        std::fs::write(&scenario_file, options.scenario.to_toml())
            .map_err(|error| format!("{}: {error}", scenario_file.display()))?;
        let listen = free_port()?;
        let clock = Clock::starting_now(options.time_scale);
        let safety_end_ms = setup.scenario.workload.duration_ms;
        let harness = Arc::new(LiveHarness::new(&setup, clock, safety_end_ms));
        let mut controller = Controller {
            options,
            setup,
            clock,
            harness,
            run_dir,
            listen,
            server: None,
            server_starts: 0,
            devices: BTreeMap::new(),
        };
        let result = controller.play().await;
        // Whatever happened, no child outlives the run (kill_on_drop covers a panic).
        if let Some(mut child) = controller.server.take() {
            let _ = child.kill().await;
        }
        for (_, task) in controller.devices.values() {
            task.abort();
        }
        let (server_counts, mut notes) = result?;
        let (history, note) = controller.merge()?;
        notes.extend(note);
        let violations = check_all(&history);
        let stats = RunStats::of(&history);
        let ok = violations.is_empty();
        let run_dir = controller.run_dir.clone();
        if ok {
            let _ = std::fs::remove_dir_all(&run_dir);
        }
        Ok(LiveOutcome {
            outcome: RunOutcome {
                setup: controller.setup,
                history,
                violations,
                stats,
            },
            wall: started.elapsed(),
            server_counts,
            notes,
            run_dir,
        })
    }

    fn data_dir(&self) -> PathBuf {
        self.run_dir.join("data")
    }

    /// The safety and liveness phases; returns what the servers counted and the run's notes.
    async fn play(&mut self) -> Result<(Vec<ServeCounts>, Vec<String>), String> {
        // Scenario time starts once the first server process is up (see `start_server`).
        self.start_server().await?;
        let scenario = &self.setup.scenario;
        self.harness.record_harness(
            0,
            HarnessEvent::RunStarted(Box::new(RunStart {
                scenario: scenario.name.clone(),
                seed: self.setup.seed,
                variant: scenario.protocol.variant.name().to_string(),
                topology: self.setup.topology.clone(),
                faults: self.setup.faults.clone(),
                protocol: scenario.protocol.clone(),
                budget: scenario.budget.clone(),
            })),
        );
        let devices: Vec<(imsim_model::UserId, DeviceId)> = self
            .setup
            .topology
            .users
            .iter()
            .flat_map(|user| user.devices.iter().map(move |d| (user.user, *d)))
            .collect();
        for (user, device) in devices {
            self.start_device(user, device, false);
        }
        for (at_ms, action) in schedule(&self.setup) {
            self.sleep_until_ms(at_ms).await;
            self.act(action).await?;
        }
        let end_ms =
            self.setup.scenario.workload.duration_ms + self.setup.scenario.quiet_period_ms();
        self.sleep_until_ms(end_ms).await;
        for (_, task) in self.devices.values() {
            task.abort();
        }
        self.stop_server().await?;
        let files = read_server_files(&self.run_dir, self.server_starts)?;
        let mut notes = files.notes;
        notes.extend(self.harness.troubles());
        Ok((files.counts, notes))
    }

    async fn sleep_until_ms(&self, at_ms: u64) {
        tokio::time::sleep(self.clock.real_until(at_ms * 1_000)).await;
    }

    async fn act(&mut self, action: Action) -> Result<(), String> {
        let now_us = self.clock.now_us();
        match action {
            Action::CrashServer => {
                if let Some(mut child) = self.server.take() {
                    // SIGKILL: the process gets no chance to write or sync anything more.
                    child
                        .kill()
                        .await
                        .map_err(|error| format!("kill the server: {error}"))?;
                }
                let crashed = Node::Server;
                self.harness
                    .record_harness(self.clock.now_us(), HarnessEvent::NodeCrashed { crashed });
            }
            Action::RestartServer => {
                let restarted = Node::Server;
                self.harness
                    .record_harness(now_us, HarnessEvent::NodeRestarted { restarted });
                self.start_server().await?;
            }
            Action::CrashDevice(device) => {
                if let Some((_, task)) = self.devices.get(&device) {
                    task.abort();
                }
                let crashed = Node::Device(device);
                self.harness
                    .record_harness(now_us, HarnessEvent::NodeCrashed { crashed });
            }
            Action::RestartDevice(device) => {
                let restarted = Node::Device(device);
                self.harness
                    .record_harness(now_us, HarnessEvent::NodeRestarted { restarted });
                let user = self.devices[&device].0.identity.user;
                self.start_device(user, device, true);
            }
            Action::Partition(partition) => {
                let (device, direction) = (partition.device, partition.direction);
                self.harness
                    .record_harness(now_us, HarnessEvent::PartitionStarted { device, direction });
            }
            Action::Heal(device) => {
                self.harness
                    .record_harness(now_us, HarnessEvent::PartitionHealed { device });
            }
            Action::Liveness => {
                let quiet_period_ms = self.setup.scenario.quiet_period_ms();
                self.harness.record_harness(
                    now_us,
                    HarnessEvent::LivenessPhaseStarted { quiet_period_ms },
                );
            }
        }
        Ok(())
    }

    fn start_device(&mut self, user: imsim_model::UserId, device: DeviceId, resume: bool) {
        let slot = match self.devices.get(&device) {
            Some((slot, _)) => slot.clone(),
            None => Arc::new(DeviceSlot {
                identity: DeviceIdentity {
                    user,
                    device,
                    token: token(device),
                    server: imsim_model::Address(0),
                },
                config: self.setup.scenario.protocol.clone(),
                server: self.listen,
                skew_ms: self.harness.skew_ms(device),
                plan: self
                    .setup
                    .plan
                    .commands
                    .get(&device)
                    .cloned()
                    .unwrap_or_default(),
                next_command: AtomicUsize::new(0),
                state_dir: self.run_dir.join("devices"),
            }),
        };
        let harness: Arc<dyn crate::device::Harness> = self.harness.clone();
        let run = run_device(slot.clone(), harness.clone(), self.clock, resume);
        let task = tokio::spawn(async move {
            // A device task ends only with an error (its socket failed, its state file could
            // not be read): say so, or its silence would look like the protocol's.
            if let Err(message) = run.await {
                harness.trouble(device, format!("stopped: {message}"));
            }
        });
        self.devices.insert(device, (slot, task));
    }

    /// Starts `imsim serve` on the run's port and data directory and waits until it listens.
    ///
    /// The first start also fixes scenario time zero: the child says `started` once its process
    /// is up (exec, loading, its data directory opened and synced), and only then does the
    /// run's clock start and the child read its origin from stdin. Starting a process can take
    /// longer than a short scenario at a small time scale (a debug build beside busy tests took
    /// 0.4 s against the bench's 0.2 s run): with the clock started first, the whole schedule
    /// had passed before any device ran, and the run recorded no packets (the bench's flake).
    async fn start_server(&mut self) -> Result<(), String> {
        let first = self.server_starts == 0;
        self.server_starts += 1;
        let events = self
            .run_dir
            .join(format!("server-events-{}.jsonl", self.server_starts));
        debug_assert_eq!(events, events_file(&self.run_dir, self.server_starts));
        let stderr = std::fs::File::create(
            self.run_dir
                .join(format!("server-{}.log", self.server_starts)),
        )
        .map_err(|error| format!("server log: {error}"))?;
        let scenario = &self.setup.scenario;
        let mut command = Command::new(&self.options.imsim);
        command
            .arg("serve")
            .arg("--listen")
            .arg(self.listen.to_string())
            .arg("--data")
            .arg(self.data_dir())
            .arg("--scenario")
            .arg(self.run_dir.join("scenario.toml"))
            .arg("--seed")
            .arg(self.setup.seed.to_string())
            .arg("--variant")
            .arg(scenario.protocol.variant.name())
            .arg("--time-scale")
            .arg(self.clock.scale().to_string())
            .arg("--events-out")
            .arg(&events)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true);
        if first {
            command.arg("--clock-origin-stdin").stdin(Stdio::piped());
        } else {
            command
                .arg("--clock-origin-ns")
                .arg(self.clock.origin_ns().to_string())
                .stdin(Stdio::null());
        }
        let mut child = command
            .spawn()
            .map_err(|error| format!("cannot start {}: {error}", self.options.imsim.display()))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut lines = BufReader::new(stdout).lines();
        if first {
            let started = tokio::time::timeout(SERVER_START_TIMEOUT, lines.next_line()).await;
            if !matches!(&started, Ok(Ok(Some(line))) if line == "started") {
                let _ = child.kill().await;
                return Err(self.server_start_error());
            }
            self.clock = Clock::starting_now(self.options.time_scale);
            let safety_end_ms = self.setup.scenario.workload.duration_ms;
            self.harness = Arc::new(LiveHarness::new(&self.setup, self.clock, safety_end_ms));
            let mut stdin = child.stdin.take().expect("stdin is piped");
            let origin = format!("{}\n", self.clock.origin_ns());
            if let Err(error) = stdin.write_all(origin.as_bytes()).await {
                let _ = child.kill().await;
                return Err(format!("cannot give the server its clock origin: {error}"));
            }
        }
        let ready = tokio::time::timeout(SERVER_START_TIMEOUT, lines.next_line()).await;
        match ready {
            Ok(Ok(Some(line))) if line.starts_with("listening ") => {
                self.server = Some(child);
                Ok(())
            }
            _ => {
                let _ = child.kill().await;
                Err(self.server_start_error())
            }
        }
    }

    /// The error for a server that did not start, with its log.
    fn server_start_error(&self) -> String {
        let log = self
            .run_dir
            .join(format!("server-{}.log", self.server_starts));
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        format!(
            "the server did not start (its log, {}):\n{text}",
            log.display()
        )
    }

    /// SIGTERM, then wait for the clean stop (a final sync).
    async fn stop_server(&mut self) -> Result<(), String> {
        let Some(mut child) = self.server.take() else {
            return Ok(());
        };
        if let Some(pid) = child.id() {
            // SAFETY: signalling our own child process by the pid tokio gave us; it has not
            // been reaped, so the pid is still the child's.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        }
        match tokio::time::timeout(SERVER_STOP_TIMEOUT, child.wait()).await {
            Ok(Ok(status)) if status.success() => Ok(()),
            Ok(Ok(status)) => Err(format!("the server stopped with {status}")),
            Ok(Err(error)) => Err(format!("waiting for the server: {error}")),
            Err(_) => {
                let _ = child.kill().await;
                Err("the server did not stop within 20 s of SIGTERM".to_string())
            }
        }
    }

    /// The durable log as the last server left it.
    fn final_records(&self) -> Result<Vec<imsim_model::Record>, String> {
        let path = self.data_dir().join(crate::data_dir::LOG_FILE);
        let bytes = std::fs::read(&path).map_err(|error| format!("{}: {error}", path.display()))?;
        let contents = parse_log(&path, &bytes).map_err(|error| error.to_string())?;
        Ok(contents.records)
    }

    /// One history from the servers' lines and this process's records.
    /// Also a note when records became durable at a kill before their events were written.
    fn merge(&self) -> Result<(History, Option<String>), String> {
        let files = read_server_files(&self.run_dir, self.server_starts)?;
        let log = self.final_records()?;
        let unpublished = unpublished_events(&files.starts, &log).len();
        let note = (unpublished > 0).then(|| {
            format!(
                "{unpublished} events of records that became durable while a server was being \
                 killed, before it wrote them, were recorded from the log"
            )
        });
        let history = merge(
            self.harness.take_records(),
            &files.starts,
            &log,
            &self.setup,
            self.setup.scenario.protocol.clone(),
            self.clock.now().0,
            Traffic {
                packets: self.harness.packet_stats(),
                synced_writes: log.len() as u64,
                message_writes: log.iter().filter(|r| r.stores_message()).count() as u64,
            },
        );
        Ok((history, note))
    }
}

/// A free UDP port on loopback: bound, read and released (the server binds it a moment later;
/// another process taking it in between would make the server fail to start, loudly).
fn free_port() -> Result<std::net::SocketAddr, String> {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0")
        .map_err(|error| format!("cannot find a free port: {error}"))?;
    socket
        .local_addr()
        .map_err(|error| format!("cannot find a free port: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::directory_of;
    use imsim_history::faults::{CrashFault, DeviceCrashFault};

    fn setup(crashes: &[(u64, u64)], device_restarts: &[(u64, u64)]) -> Setup {
        let mut scenario = Scenario::default_scenario();
        scenario.faults.swarm = false;
        let mut setup = Setup::new(&scenario, 1);
        setup.faults.server_crashes = crashes
            .iter()
            .map(|&(at_ms, downtime_ms)| CrashFault { at_ms, downtime_ms })
            .collect();
        setup.faults.device_restarts = device_restarts
            .iter()
            .map(|&(at_ms, downtime_ms)| DeviceCrashFault {
                device: DeviceId(2),
                at_ms,
                downtime_ms,
            })
            .collect();
        setup
    }

    fn names(actions: &[(u64, Action)]) -> Vec<String> {
        actions
            .iter()
            .map(|(at_ms, action)| format!("{at_ms} {action:?}"))
            .collect()
    }

    #[test]
    fn a_crash_inside_the_previous_downtime_waits_for_the_restart() {
        let actions = schedule(&setup(&[(3_000, 500), (1_000, 4_000)], &[(2_000, 100)]));
        assert_eq!(
            names(&actions),
            [
                "1000 CrashServer",
                "2000 CrashDevice(DeviceId(2))",
                "2100 RestartDevice(DeviceId(2))",
                "5000 RestartServer",
                "5000 CrashServer",
                "5500 RestartServer",
                "30000 Liveness",
            ]
        );
    }

    #[test]
    fn the_directory_lets_every_device_log_in_with_its_token() {
        let setup = setup(&[], &[]);
        let directory = directory_of(&setup.topology);
        for user in &setup.topology.users {
            for device in &user.devices {
                assert_eq!(directory.token(user.user, *device), Some(token(*device)));
            }
        }
    }
}
