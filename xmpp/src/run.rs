//! One run against a real server: start it (or use the one given), put a fault proxy in front
//! of every client, play the seed's schedule (safety phase: workload and faults), heal
//! everything and wait for quiet (liveness phase), read every conversation's archive (the
//! final read), and hand back the black-box history.

use crate::client::{Client, Command, Status};
use crate::plan::{schedule, Action, Cast, FaultProfile, ROOM};
use crate::proxy::{FaultProxy, Flow};
use crate::record::Recorder;
use crate::server::{self, Prosody};
use crate::session::Account;
use imsim_history::blackbox::{BlackBoxEvent, BlackBoxHistory};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// How long every client may take to log in at the start.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(15);
/// The liveness phase ends when every client is connected with nothing outstanding and no
/// record was written for this long …
const QUIET_MS: u64 = 2_000;
/// … or after this long at most.
const LIVENESS_TIMEOUT: Duration = Duration::from_secs(45);
/// Attempts and the wait for one final read.
const FINAL_READ_ATTEMPTS_MAX: u32 = 5;
const FINAL_READ_TIMEOUT: Duration = Duration::from_secs(15);
/// Commands queued per client.
const COMMANDS_MAX: usize = 256;

/// A server someone else runs: its c2s address, XMPP domain and accounts (user, password).
#[derive(Clone, Debug)]
pub struct ExternalServer {
    pub address: SocketAddr,
    pub domain: String,
    pub accounts: Vec<(String, String)>,
}

#[derive(Clone, Debug)]
pub struct XmppOptions {
    pub seed: u64,
    pub messages: u32,
    pub users: usize,
    /// Fault classes chosen by flag; `None` draws them from the seed.
    pub faults: Option<Vec<String>>,
    pub server: Option<ExternalServer>,
    /// Print every record as it happens.
    pub verbose: bool,
    /// XEP-0198 hibernation of the server the adapter starts, in seconds.
    pub hibernation_s: u64,
    /// Clients re-send unacknowledged messages on a new session without first looking for
    /// them in the archive (the naive at-least-once client).
    pub naive_resend: bool,
}

/// What a run produced.
pub struct XmppOutcome {
    pub history: BlackBoxHistory,
    pub profile: FaultProfile,
    pub system: String,
    pub wall: Duration,
}

/// The fault profile a run of these options will use (printed before the run starts).
pub fn profile_of(options: &XmppOptions) -> Result<FaultProfile, String> {
    let profile = FaultProfile::draw(options.seed, options.faults.as_deref())?;
    if options.server.is_some() && profile.server_kill {
        return Err("--faults server_kill needs a server the adapter starts itself (drop --server, or leave server_kill out of --faults)".to_string());
    }
    Ok(profile)
}

/// The faults the seed places, one line each, for the run header. Targets are client ids,
/// which do not depend on the account names, so the plan is known before the server is.
pub fn fault_plan(options: &XmppOptions) -> Result<Vec<String>, String> {
    let profile = profile_of(options)?;
    let names: Vec<String> = (1..=options.users)
        .map(|index| format!("u{index}"))
        .collect();
    let cast = Cast::standard(&names, server::DOMAIN, server::MUC_DOMAIN);
    Ok(schedule(options.seed, &cast, options.messages, &profile)
        .into_iter()
        .filter_map(|step| match step.action {
            Action::Fault {
                fault,
                target,
                detail,
                duration_ms,
                delay_ms,
            } => Some(match fault.as_str() {
                "reset" => format!("at {} ms: reset {target}", step.at_ms),
                "delay" => format!(
                    "at {} ms: delay {target} by {delay_ms} ms for {duration_ms} ms",
                    step.at_ms
                ),
                "server_kill" => format!(
                    "at {} ms: kill -9 the server, restart after {duration_ms} ms",
                    step.at_ms
                ),
                _ => format!(
                    "at {} ms: {fault} {target} {detail} for {duration_ms} ms",
                    step.at_ms
                )
                .replace("  ", " "),
            }),
            _ => None,
        })
        .collect())
}

pub fn run(options: &XmppOptions) -> Result<XmppOutcome, String> {
    if !(2..=6).contains(&options.users) {
        return Err(format!("--users {}: between 2 and 6 users", options.users));
    }
    let profile = profile_of(options)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|error| format!("cannot start the tokio runtime: {error}"))?;
    runtime.block_on(drive(options, profile))
}

struct Harness {
    cast: Arc<Cast>,
    recorder: Recorder,
    proxies: HashMap<String, FaultProxy>,
    commands: HashMap<String, mpsc::Sender<Command>>,
    statuses: Vec<Arc<Mutex<Status>>>,
    server: Arc<Mutex<Option<Prosody>>>,
}

async fn drive(options: &XmppOptions, profile: FaultProfile) -> Result<XmppOutcome, String> {
    let started = Instant::now();
    let (address, domain, accounts, prosody, system) = match &options.server {
        Some(external) => (
            external.address,
            external.domain.clone(),
            external.accounts.clone(),
            None,
            format!("XMPP server at {}", external.address),
        ),
        None => {
            let accounts: Vec<(String, String)> = (1..=options.users)
                .map(|index| (format!("u{index}"), format!("imsim-u{index}")))
                .collect();
            let prosody =
                tokio::task::block_in_place(|| Prosody::start(&accounts, options.hibernation_s))?;
            (
                prosody.address(),
                server::DOMAIN.to_string(),
                accounts,
                Some(prosody),
                Prosody::version(),
            )
        }
    };
    if accounts.len() < options.users {
        return Err(format!(
            "{} accounts given, {} users needed",
            accounts.len(),
            options.users
        ));
    }
    let accounts = &accounts[..options.users];
    let names: Vec<String> = accounts.iter().map(|(user, _)| user.clone()).collect();
    let mut cast = Cast::standard(&names, &domain, &format!("conference.{domain}"));
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    cast.archive_start = Some(crate::plan::utc_date_time(now_s));
    let cast = Arc::new(cast);
    let recorder = Recorder::new(options.verbose);
    recorder.record(BlackBoxEvent::BlackboxStarted {
        system: system.clone(),
        seed: Some(options.seed),
        faults: serde_json::to_value(&profile).unwrap_or_default(),
        clients: cast.clients.clone(),
        conversations: cast.conversations.clone(),
    });
    let mut harness = Harness {
        cast: Arc::clone(&cast),
        recorder: recorder.clone(),
        proxies: HashMap::new(),
        commands: HashMap::new(),
        statuses: Vec::new(),
        server: Arc::new(Mutex::new(prosody)),
    };
    let mut tasks = Vec::new();
    for info in &cast.clients {
        let proxy = FaultProxy::start(address).await?;
        let password = accounts
            .iter()
            .find(|(user, _)| *user == info.user)
            .map(|(_, password)| password.clone())
            .unwrap_or_default();
        let account = Account {
            user: info.user.clone(),
            password,
            domain: domain.clone(),
            resource: info.client.clone(),
        };
        let mut client = Client::new(
            &info.client,
            account,
            Arc::clone(&cast),
            recorder.clone(),
            proxy.address(),
        );
        client.resend_checks_archive = !options.naive_resend;
        let (sender, receiver) = mpsc::channel(COMMANDS_MAX);
        harness.statuses.push(Arc::clone(&client.status));
        harness.proxies.insert(info.client.clone(), proxy);
        harness.commands.insert(info.client.clone(), sender);
        tasks.push(tokio::spawn(client.run(receiver)));
    }
    let result = harness.play(options, &profile).await;
    for sender in harness.commands.values() {
        let _ = sender.send(Command::Shutdown).await;
    }
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    if let Some(mut prosody) = lock(&harness.server).take() {
        tokio::task::block_in_place(|| prosody.kill());
    }
    result?;
    Ok(XmppOutcome {
        history: recorder.history(),
        profile,
        system,
        wall: started.elapsed(),
    })
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Only whole values are stored under these locks; a panic cannot leave one half-written.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Harness {
    async fn play(&mut self, options: &XmppOptions, profile: &FaultProfile) -> Result<(), String> {
        self.wait_until(LOGIN_TIMEOUT, 0)
            .await
            .then_some(())
            .ok_or_else(|| format!("not every client could log in within {LOGIN_TIMEOUT:?}"))?;
        let steps = schedule(options.seed, &self.cast, options.messages, profile);
        let start = Instant::now();
        let mut heals = Vec::new();
        for step in steps {
            let due = start + Duration::from_millis(step.at_ms);
            tokio::time::sleep_until(due.into()).await;
            match step.action {
                Action::Send {
                    client,
                    conv,
                    msg,
                    body,
                } => {
                    self.recorder.record(BlackBoxEvent::SendInvoked {
                        client: client.clone(),
                        conv: conv.clone(),
                        msg: msg.clone(),
                        body: body.clone(),
                    });
                    self.command(&client, Command::Send { conv, msg, body })
                        .await;
                }
                Action::MarkRead { client, conv } => {
                    self.command(&client, Command::MarkRead { conv }).await;
                }
                Action::Fault {
                    fault,
                    target,
                    detail,
                    duration_ms,
                    delay_ms,
                } => {
                    heals.push(self.apply(&fault, &target, &detail, duration_ms, delay_ms)?);
                }
            }
        }
        // Liveness phase: every fault heals (the server is back), then the run waits for quiet.
        for heal in heals {
            let _ = heal.await;
        }
        self.ensure_server()?;
        self.wait_until(LIVENESS_TIMEOUT, QUIET_MS).await;
        self.final_reads().await?;
        self.recorder.record(BlackBoxEvent::RunEnded);
        Ok(())
    }

    async fn command(&self, client: &str, command: Command) {
        if let Some(sender) = self.commands.get(client) {
            let _ = sender.send(command).await;
        }
    }

    /// Applies one fault now and returns the task that heals it after `duration_ms`.
    fn apply(
        &self,
        fault: &str,
        target: &str,
        detail: &str,
        duration_ms: u64,
        delay_ms: u64,
    ) -> Result<tokio::task::JoinHandle<()>, String> {
        let detail_text = match fault {
            "delay" => format!("{delay_ms} ms per chunk for {duration_ms} ms"),
            "reset" => "both directions".to_string(),
            _ => format!("{detail} for {duration_ms} ms"),
        };
        self.recorder.record(BlackBoxEvent::Fault {
            fault: fault.to_string(),
            target: target.to_string(),
            detail: Some(detail_text),
        });
        let recorder = self.recorder.clone();
        let (fault, target) = (fault.to_string(), target.to_string());
        if fault == "server_kill" {
            if let Some(prosody) = lock(&self.server).as_mut() {
                prosody.kill();
            }
            let server = Arc::clone(&self.server);
            return Ok(tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(duration_ms)).await;
                let restarted = tokio::task::spawn_blocking(move || {
                    lock(&server).as_mut().map_or(Ok(()), Prosody::restart)
                })
                .await;
                if matches!(restarted, Ok(Ok(()))) {
                    recorder.record(BlackBoxEvent::FaultHealed { fault, target });
                }
            }));
        }
        let proxy = self
            .proxies
            .get(&target)
            .ok_or_else(|| format!("no client `{target}` to fault"))?
            .clone();
        let flow = if fault == "stall" {
            Flow::Stall
        } else {
            Flow::Blackhole
        };
        let mut state = proxy.state();
        match fault.as_str() {
            "reset" => {
                proxy.reset();
                return Ok(tokio::spawn(async {}));
            }
            "refuse" => {
                state.refuse = true;
                proxy.reset();
            }
            "delay" => state.delay_ms = delay_ms,
            _ => {
                if detail != "to_client" {
                    state.to_server = flow;
                }
                if detail != "to_server" {
                    state.to_client = flow;
                }
            }
        }
        proxy.set(state);
        Ok(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(duration_ms)).await;
            proxy.heal();
            recorder.record(BlackBoxEvent::FaultHealed { fault, target });
        }))
    }

    /// A server that failed to restart is restarted once more before the liveness phase.
    fn ensure_server(&self) -> Result<(), String> {
        let mut server = lock(&self.server);
        match server.as_mut() {
            Some(prosody) if !prosody.is_running() => {
                tokio::task::block_in_place(|| prosody.restart())
            }
            _ => Ok(()),
        }
    }

    /// Waits until every client is connected with nothing outstanding and the history has
    /// been quiet for `quiet_ms`; false when `timeout` passes first.
    async fn wait_until(&self, timeout: Duration, quiet_ms: u64) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let settled = self.statuses.iter().all(|status| {
                let status = *lock(status);
                status.connected && status.outstanding == 0
            });
            let quiet = self
                .recorder
                .last_t_ms()
                .is_none_or(|last| self.recorder.now_ms().saturating_sub(last) >= quiet_ms);
            if settled && quiet {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    /// Reads every conversation's archive: each member's own archive of a 1:1 chat (XMPP keeps
    /// one per user), the room's shared archive once.
    async fn final_reads(&self) -> Result<(), String> {
        for conversation in &self.cast.conversations {
            let readers: Vec<&String> = if conversation.conv == ROOM {
                conversation.members.iter().take(1).collect()
            } else {
                conversation.members.iter().collect()
            };
            for reader in readers {
                let client = self
                    .cast
                    .clients
                    .iter()
                    .find(|info| &info.user == reader)
                    .map(|info| info.client.clone())
                    .unwrap_or_default();
                let entries = self.final_read(&client, &conversation.conv).await?;
                self.recorder.record(BlackBoxEvent::FinalRead {
                    conv: conversation.conv.clone(),
                    reader: reader.clone(),
                    entries,
                });
            }
        }
        Ok(())
    }

    async fn final_read(
        &self,
        client: &str,
        conv: &str,
    ) -> Result<Vec<imsim_history::blackbox::ArchiveEntry>, String> {
        let mut last_error = String::new();
        for _ in 0..FINAL_READ_ATTEMPTS_MAX {
            let (reply, answer) = oneshot::channel();
            self.command(
                client,
                Command::FinalRead {
                    conv: conv.to_string(),
                    reply,
                },
            )
            .await;
            match tokio::time::timeout(FINAL_READ_TIMEOUT, answer).await {
                Ok(Ok(Ok(entries))) => return Ok(entries),
                Ok(Ok(Err(error))) => last_error = error,
                _ => last_error = "no answer".to_string(),
            }
            self.wait_until(Duration::from_secs(5), 0).await;
        }
        Err(format!(
            "final read of {conv} by {client} failed: {last_error}"
        ))
    }
}
