//! One device of one user: an XMPP client task that keeps its session alive through faults and
//! records what it observes.
//!
//! The client does what a careful real client does. It enables stream management (XEP-0198)
//! and resumes its session after a dropped connection; when resumption fails it opens a new
//! session, catches up from the archives (XEP-0313, after the last archive id it saw) while
//! holding back live messages, and re-sends the messages the server never acknowledged. It
//! dedupes by (conversation, sender, message id) before displaying, answers receipt requests
//! (XEP-0184) and sends displayed markers (XEP-0333) on request. Every observation becomes a
//! black-box record; the judging happens elsewhere, on the history alone.

use crate::plan::Cast;
use crate::record::Recorder;
use crate::session::{self, Account, Outcome, Reader, Writer, NS_SM};
use crate::stanza;
use crate::xml::{Element, StreamEvent};
use imsim_history::blackbox::{ArchiveEntry, BlackBoxEvent, Via};
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

mod inbox;

/// How long connecting and logging in may take before the attempt counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(4);
/// Silence after which the client asks the server for an ack, and how long it then waits
/// before declaring the connection dead.
const SILENCE_BEFORE_PING: Duration = Duration::from_secs(2);
const PING_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one request (an iq, one archive page) may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Reconnect backoff bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_millis(1600);
/// Sessions a message is sent on before the client shows it as failed.
const SEND_ATTEMPTS_MAX: u32 = 3;

/// What the harness asks a client to do.
pub enum Command {
    Send {
        conv: String,
        msg: String,
        body: String,
    },
    MarkRead {
        conv: String,
    },
    FinalRead {
        conv: String,
        reply: oneshot::Sender<Result<Vec<ArchiveEntry>, String>>,
    },
    Shutdown,
}

/// What the harness can see of a client, for the quiet-period check.
#[derive(Clone, Copy, Debug, Default)]
pub struct Status {
    pub connected: bool,
    /// Messages sent or waiting to be sent that the server has not acknowledged.
    pub outstanding: usize,
}

/// A stanza sent on the current session and not yet acknowledged.
struct Outbound {
    stanza: Element,
    message: Option<(String, String)>,
}

pub struct Client {
    pub id: String,
    account: Account,
    cast: Arc<Cast>,
    recorder: Recorder,
    proxy: SocketAddr,
    pub status: Arc<Mutex<Status>>,
    sm_id: Option<String>,
    /// Stanzas received on this session (our `h`), and the server's `h` for ours.
    inbound: u64,
    acked: u64,
    unacked: VecDeque<Outbound>,
    waiting: VecDeque<(String, String, String)>,
    attempts: HashMap<String, u32>,
    conv_of_msg: HashMap<String, String>,
    displayed: HashSet<(String, String, String)>,
    last_displayed: HashMap<String, (String, String)>,
    last_marked: HashMap<String, String>,
    /// The last archive id seen per archive (`by`): where a catch-up starts.
    cursor: HashMap<String, String>,
    /// Live messages held back while a catch-up runs, so displays follow archive order.
    holding: Option<Vec<Element>>,
    /// Archive results of the query in progress.
    results: Vec<(String, Element)>,
    next_stanza: u64,
    /// Our own messages the server shows it stored (the room's reflection, the archive), by
    /// message id, with the server's id for them.
    stored_own: HashMap<String, String>,
    /// Before re-sending on a new session, look for the message in what the catch-up
    /// returned: the server may have stored it although its ack was lost.
    pub resend_checks_archive: bool,
}

enum Exit {
    Shutdown,
    Lost(String),
}

impl Client {
    pub fn new(
        id: &str,
        account: Account,
        cast: Arc<Cast>,
        recorder: Recorder,
        proxy: SocketAddr,
    ) -> Client {
        Client {
            id: id.to_string(),
            account,
            cast,
            recorder,
            proxy,
            status: Arc::new(Mutex::new(Status::default())),
            sm_id: None,
            inbound: 0,
            acked: 0,
            unacked: VecDeque::new(),
            waiting: VecDeque::new(),
            attempts: HashMap::new(),
            conv_of_msg: HashMap::new(),
            displayed: HashSet::new(),
            last_displayed: HashMap::new(),
            last_marked: HashMap::new(),
            cursor: HashMap::new(),
            holding: None,
            results: Vec::new(),
            next_stanza: 0,
            stored_own: HashMap::new(),
            resend_checks_archive: true,
        }
    }

    /// Runs until `Shutdown`, reconnecting with backoff whenever the session is lost.
    pub async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut backoff = BACKOFF_MIN;
        loop {
            let opened = tokio::time::timeout(CONNECT_TIMEOUT, self.connect()).await;
            match opened {
                Ok(Ok((mut reader, mut writer))) => {
                    backoff = BACKOFF_MIN;
                    let exit = self.serve(&mut reader, &mut writer, &mut commands).await;
                    self.set_status(false);
                    match exit {
                        Exit::Shutdown => return,
                        Exit::Lost(reason) => self.record(BlackBoxEvent::SessionLost {
                            client: self.id.clone(),
                            session: self.sm_id.clone().unwrap_or_default(),
                            reason,
                        }),
                    }
                }
                Ok(Err(_)) | Err(_) => {
                    let wait = tokio::time::sleep(backoff);
                    tokio::pin!(wait);
                    loop {
                        // `biased;`: the branches are tried in order, so the choice is the code's
                        // (house rule), not tokio's thread-local random draw.
                        tokio::select! {
                            biased;
                            _ = &mut wait => break,
                            command = commands.recv() => match command {
                                None | Some(Command::Shutdown) => return,
                                Some(command) => self.handle_offline(command),
                            },
                        }
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    fn handle_offline(&mut self, command: Command) {
        match command {
            Command::Send { conv, msg, body } => self.waiting.push_back((conv, msg, body)),
            Command::FinalRead { reply, .. } => {
                let _ = reply.send(Err(format!("{} is not connected", self.id)));
            }
            Command::MarkRead { .. } | Command::Shutdown => {}
        }
        self.set_status(false);
    }

    /// Opens a connection and brings the session up: resumed, or new and caught up.
    async fn connect(&mut self) -> Result<(Reader, Writer), String> {
        let resume = self.sm_id.clone().map(|id| (id, self.inbound));
        let (mut reader, mut writer, outcome) = session::open(
            self.proxy,
            &self.account,
            resume.as_ref().map(|(id, inbound)| (id.as_str(), *inbound)),
        )
        .await?;
        match outcome {
            Outcome::Resumed { acked } => {
                self.handle_ack(acked);
                self.record(BlackBoxEvent::SessionResumed {
                    client: self.id.clone(),
                    session: self.sm_id.clone().unwrap_or_default(),
                });
                // XEP-0198: what the server did not count is sent again on the resumed stream.
                for outbound in &self.unacked {
                    writer.send(&outbound.stanza.to_xml()).await?;
                }
            }
            Outcome::Fresh {
                sm_id,
                previous_acked,
            } => {
                if let Some(acked) = previous_acked {
                    self.handle_ack(acked);
                }
                let lost = std::mem::take(&mut self.unacked);
                self.sm_id = Some(sm_id.clone());
                self.inbound = 0;
                self.acked = 0;
                self.record(BlackBoxEvent::SessionStarted {
                    client: self.id.clone(),
                    session: sm_id,
                });
                self.set_up(&mut reader, &mut writer).await?;
                self.resend(lost, &mut writer).await?;
            }
        }
        while let Some((conv, msg, body)) = self.waiting.pop_front() {
            self.send_message(&conv, &msg, &body, &mut writer).await?;
        }
        self.set_status(true);
        Ok((reader, writer))
    }

    /// A new session: carbons, catch-up with live messages held back, presence, the room.
    async fn set_up(&mut self, reader: &mut Reader, writer: &mut Writer) -> Result<(), String> {
        let id = self.stanza_id("carbons");
        self.request(reader, writer, stanza::carbons_enable(&id))
            .await?;
        self.holding = Some(Vec::new());
        let room = self.cast.room_jid();
        let nick = format!("{room}/{}", self.id);
        self.send_stanza(Element::new("presence"), None, writer)
            .await?;
        self.send_stanza(stanza::room_join(&nick), None, writer)
            .await?;
        let own = self.account.bare();
        for (archive, to) in [(own.clone(), None), (room.clone(), Some(room.as_str()))] {
            let after = self.cursor.get(&archive).cloned();
            let entries = match self
                .read_archive(reader, writer, to, None, after.as_deref())
                .await
            {
                Ok(entries) => entries,
                // The archive id we remembered may be unknown after a crash: read it all.
                Err(_) => self.read_archive(reader, writer, to, None, None).await?,
            };
            for (archive_id, message) in entries {
                let mut incoming = stanza::read_plain(&message, Via::Catchup);
                incoming.server_id = Some((archive_id, archive.clone()));
                self.handle_incoming(incoming, writer).await?;
            }
        }
        for held in self.holding.take().unwrap_or_default() {
            self.handle_message(&held, writer).await?;
        }
        Ok(())
    }

    /// Sends again, on a new session, the messages the old one never got acknowledged.
    async fn resend(
        &mut self,
        lost: VecDeque<Outbound>,
        writer: &mut Writer,
    ) -> Result<(), String> {
        for outbound in lost {
            let Some((conv, msg)) = outbound.message else {
                continue;
            };
            if let Some(server_id) = self
                .stored_own
                .get(&msg)
                .filter(|_| self.resend_checks_archive)
            {
                self.record(BlackBoxEvent::SendAcked {
                    client: self.id.clone(),
                    conv,
                    msg,
                    server_id: Some(server_id.clone()),
                });
                continue;
            }
            let attempts = self.attempts.entry(msg.clone()).or_insert(1);
            if *attempts >= SEND_ATTEMPTS_MAX {
                self.record(BlackBoxEvent::SendFailed {
                    client: self.id.clone(),
                    conv,
                    msg,
                    reason: format!("not acknowledged on {SEND_ATTEMPTS_MAX} sessions"),
                });
                continue;
            }
            *attempts += 1;
            self.record(BlackBoxEvent::SendRetried {
                client: self.id.clone(),
                conv: conv.clone(),
                msg: msg.clone(),
            });
            self.send_stanza(outbound.stanza, Some((conv, msg)), writer)
                .await?;
        }
        Ok(())
    }

    async fn serve(
        &mut self,
        reader: &mut Reader,
        writer: &mut Writer,
        commands: &mut mpsc::Receiver<Command>,
    ) -> Exit {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let mut ping_sent: Option<Instant> = None;
        loop {
            // `biased;`: the harness's commands first (they are few and finite, so they never
            // starve the stream), then the server's stanzas, then the keep-alive tick.
            let step = tokio::select! {
                biased;
                command = commands.recv() => match command {
                    None | Some(Command::Shutdown) => return Exit::Shutdown,
                    Some(command) => self.handle_command(command, reader, writer).await,
                },
                event = reader.next_event() => match event {
                    Ok(StreamEvent::Element(element)) => self.handle_element(element, writer).await,
                    Ok(StreamEvent::Closed) => Err("the server closed the stream".to_string()),
                    Ok(StreamEvent::Opened(_)) => Err("a second stream header".to_string()),
                    Err(error) => Err(error),
                },
                _ = tick.tick() => {
                    let silent = reader.last_inbound.elapsed();
                    match ping_sent {
                        Some(sent) if reader.last_inbound < sent && sent.elapsed() > PING_TIMEOUT => {
                            Err(format!("timeout: no answer for {PING_TIMEOUT:?}"))
                        }
                        Some(sent) if reader.last_inbound >= sent => {
                            ping_sent = None;
                            Ok(())
                        }
                        None if silent > SILENCE_BEFORE_PING => {
                            ping_sent = Some(Instant::now());
                            writer.send(&Element::new("r").with("xmlns", NS_SM).to_xml()).await
                        }
                        _ => Ok(()),
                    }
                }
            };
            if let Err(reason) = step {
                return Exit::Lost(reason);
            }
            self.set_status(true);
        }
    }

    async fn handle_command(
        &mut self,
        command: Command,
        reader: &mut Reader,
        writer: &mut Writer,
    ) -> Result<(), String> {
        match command {
            Command::Send { conv, msg, body } => {
                self.send_message(&conv, &msg, &body, writer).await
            }
            Command::MarkRead { conv } => self.mark_read(&conv, writer).await,
            Command::FinalRead { conv, reply } => {
                let result = self.final_read(&conv, reader, writer).await;
                let failed = result.as_ref().err().cloned();
                let _ = reply.send(result);
                failed.map_or(Ok(()), Err)
            }
            Command::Shutdown => Ok(()),
        }
    }

    async fn send_message(
        &mut self,
        conv: &str,
        msg: &str,
        body: &str,
        writer: &mut Writer,
    ) -> Result<(), String> {
        let (to, group) = self
            .cast
            .address_of(conv, &self.account.user, &self.account.domain);
        self.conv_of_msg.insert(msg.to_string(), conv.to_string());
        self.attempts.entry(msg.to_string()).or_insert(1);
        let stanza = stanza::message(&to, group, msg, body);
        self.send_stanza(stanza, Some((conv.to_string(), msg.to_string())), writer)
            .await?;
        writer
            .send(&Element::new("r").with("xmlns", NS_SM).to_xml())
            .await
    }

    /// Sends an iq and handles everything else that arrives until its answer does.
    async fn request(
        &mut self,
        reader: &mut Reader,
        writer: &mut Writer,
        iq: Element,
    ) -> Result<Element, String> {
        let id = iq.attribute("id").unwrap_or_default().to_string();
        self.send_stanza(iq, None, writer).await?;
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let element = tokio::time::timeout(left, reader.next_element())
                .await
                .map_err(|_| format!("timeout: no answer to request {id}"))??;
            let is_answer = element.name == "iq" && element.attribute("id") == Some(id.as_str());
            if is_answer {
                self.inbound += 1;
                return Ok(element);
            }
            self.handle_element(element, writer).await?;
        }
    }

    async fn handle_element(
        &mut self,
        element: Element,
        writer: &mut Writer,
    ) -> Result<(), String> {
        match element.local_name() {
            "r" => {
                let answer = Element::new("a")
                    .with("xmlns", NS_SM)
                    .with("h", &self.inbound.to_string());
                writer.send(&answer.to_xml()).await
            }
            "a" => {
                self.handle_ack(session::count_attribute(&element)?);
                Ok(())
            }
            "message" => {
                self.inbound += 1;
                if let Some((_, archive_id, message)) = stanza::archive_result(&element) {
                    self.results.push((archive_id, message.clone()));
                    return Ok(());
                }
                if let Some(held) = self.holding.as_mut() {
                    held.push(element);
                    return Ok(());
                }
                self.handle_message(&element, writer).await
            }
            "iq" => {
                self.inbound += 1;
                if matches!(element.attribute("type"), Some("get" | "set")) {
                    // A ping or anything else we do not serve: answer so the server is not left waiting.
                    let answer = Element::new("iq")
                        .with("type", "result")
                        .with("id", element.attribute("id").unwrap_or_default())
                        .with("to", element.attribute("from").unwrap_or_default());
                    self.send_stanza(answer, None, writer).await?;
                }
                Ok(())
            }
            "presence" => {
                self.inbound += 1;
                Ok(())
            }
            "error" => Err(format!("stream error: {}", element.to_xml())),
            _ => Ok(()),
        }
    }

    /// The server counted `acked` of our stanzas: the ones newly counted are acknowledged.
    fn handle_ack(&mut self, acked: u64) {
        let newly = acked.saturating_sub(self.acked);
        for _ in 0..newly {
            let Some(outbound) = self.unacked.pop_front() else {
                break;
            };
            if let Some((conv, msg)) = outbound.message {
                self.record(BlackBoxEvent::SendAcked {
                    client: self.id.clone(),
                    conv,
                    msg,
                    server_id: None,
                });
            }
        }
        self.acked = self.acked.max(acked);
        self.set_status(true);
    }

    /// Sends a stanza that stream management counts, keeping it until it is acknowledged.
    async fn send_stanza(
        &mut self,
        stanza: Element,
        message: Option<(String, String)>,
        writer: &mut Writer,
    ) -> Result<(), String> {
        let text = stanza.to_xml();
        self.unacked.push_back(Outbound { stanza, message });
        writer.send(&text).await
    }

    fn stanza_id(&mut self, purpose: &str) -> String {
        self.next_stanza += 1;
        format!("{}-{purpose}-{}", self.id, self.next_stanza)
    }

    fn record(&self, event: BlackBoxEvent) {
        self.recorder.record(event);
    }

    fn set_status(&self, connected: bool) {
        let outstanding =
            self.waiting.len() + self.unacked.iter().filter(|o| o.message.is_some()).count();
        let mut status = self
            .status
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *status = Status {
            connected,
            outstanding,
        };
    }
}
