//! One pass over a black-box history, collecting what the judges ask about: sends, acks,
//! failures, displays, markers, final reads, and the archive positions of each message.

use super::format::{ArchiveEntry, BlackBoxEvent, BlackBoxHistory, ConversationKind, MarkerKind};
use std::collections::{BTreeMap, HashMap};

/// A message as every judge names it: (conversation, sending user, the sender's message id).
pub type MessageKey = (String, String, String);

/// An invoked send.
pub struct Send {
    pub index: usize,
    pub client: String,
    pub body: String,
}

/// A display, a marker, an ack: where it is in the history and who did it.
pub struct Seen {
    pub index: usize,
    pub client: String,
    pub key: MessageKey,
}

/// A marker or receipt that arrived: from which user, about which message.
pub struct MarkerSeen {
    pub index: usize,
    pub client: String,
    pub from: String,
    pub key: MessageKey,
    pub kind: MarkerKind,
}

/// A final read of one conversation by one user.
pub struct FinalRead {
    pub index: usize,
    pub conv: String,
    pub reader: String,
    pub entries: Vec<ArchiveEntry>,
}

#[derive(Default)]
pub struct Index {
    pub user_of_client: BTreeMap<String, String>,
    pub kind_of_conv: BTreeMap<String, ConversationKind>,
    pub members: BTreeMap<String, Vec<String>>,
    pub sends: BTreeMap<MessageKey, Send>,
    /// Per (client, conversation): the client's message ids in the order it sent them.
    pub send_order: BTreeMap<(String, String), Vec<(usize, String)>>,
    pub acks: Vec<Seen>,
    pub failed: BTreeMap<MessageKey, usize>,
    /// The `send_retried` records of each message.
    pub retries: BTreeMap<MessageKey, Vec<usize>>,
    pub displays: Vec<Seen>,
    pub received: Vec<Seen>,
    pub markers_sent: Vec<Seen>,
    pub marker_kinds_sent: Vec<MarkerKind>,
    pub markers_received: Vec<MarkerSeen>,
    pub final_reads: Vec<FinalRead>,
    pub run_ended: bool,
    pub unknown_records: usize,
    pub faults: usize,
}

impl Index {
    pub fn new(history: &BlackBoxHistory) -> Index {
        let mut index = Index::default();
        for (at, record) in history.records.iter().enumerate() {
            index.add(at, &record.event);
        }
        index
    }

    fn user(&self, client: &str) -> String {
        self.user_of_client
            .get(client)
            .cloned()
            .unwrap_or_else(|| client.to_string())
    }

    fn add(&mut self, at: usize, event: &BlackBoxEvent) {
        match event {
            BlackBoxEvent::BlackboxStarted {
                clients,
                conversations,
                ..
            } => {
                for info in clients {
                    self.user_of_client
                        .insert(info.client.clone(), info.user.clone());
                }
                for conversation in conversations {
                    self.kind_of_conv
                        .insert(conversation.conv.clone(), conversation.kind);
                    self.members
                        .insert(conversation.conv.clone(), conversation.members.clone());
                }
            }
            BlackBoxEvent::SendInvoked {
                client,
                conv,
                msg,
                body,
            } => {
                let key = (conv.clone(), self.user(client), msg.clone());
                self.sends.insert(
                    key,
                    Send {
                        index: at,
                        client: client.clone(),
                        body: body.clone(),
                    },
                );
                self.send_order
                    .entry((client.clone(), conv.clone()))
                    .or_default()
                    .push((at, msg.clone()));
            }
            BlackBoxEvent::SendAcked {
                client, conv, msg, ..
            } => {
                let key = (conv.clone(), self.user(client), msg.clone());
                self.acks.push(Seen {
                    index: at,
                    client: client.clone(),
                    key,
                });
            }
            BlackBoxEvent::SendFailed {
                client, conv, msg, ..
            } => {
                let key = (conv.clone(), self.user(client), msg.clone());
                self.failed.insert(key, at);
            }
            BlackBoxEvent::SendRetried { client, conv, msg } => {
                let key = (conv.clone(), self.user(client), msg.clone());
                self.retries.entry(key).or_default().push(at);
            }
            BlackBoxEvent::Received {
                client,
                conv,
                msg: Some(msg),
                sender,
                ..
            } => {
                let key = (conv.clone(), sender.clone(), msg.clone());
                self.received.push(Seen {
                    index: at,
                    client: client.clone(),
                    key,
                });
            }
            BlackBoxEvent::Displayed {
                client,
                conv,
                msg,
                sender,
                ..
            } => {
                let key = (conv.clone(), sender.clone(), msg.clone());
                self.displays.push(Seen {
                    index: at,
                    client: client.clone(),
                    key,
                });
            }
            BlackBoxEvent::MarkerSent {
                client,
                conv,
                msg,
                sender,
                kind,
            } => {
                let key = (conv.clone(), sender.clone(), msg.clone());
                self.markers_sent.push(Seen {
                    index: at,
                    client: client.clone(),
                    key,
                });
                self.marker_kinds_sent.push(*kind);
            }
            BlackBoxEvent::MarkerReceived {
                client,
                conv,
                msg,
                from,
                kind,
            } => {
                // A marker names a message of the client's own user.
                let key = (conv.clone(), self.user(client), msg.clone());
                self.markers_received.push(MarkerSeen {
                    index: at,
                    client: client.clone(),
                    from: from.clone(),
                    key,
                    kind: *kind,
                });
            }
            BlackBoxEvent::FinalRead {
                conv,
                reader,
                entries,
            } => self.final_reads.push(FinalRead {
                index: at,
                conv: conv.clone(),
                reader: reader.clone(),
                entries: entries.clone(),
            }),
            BlackBoxEvent::Fault { .. } => self.faults += 1,
            BlackBoxEvent::RunEnded => self.run_ended = true,
            BlackBoxEvent::Unknown => self.unknown_records += 1,
            BlackBoxEvent::Received { .. }
            | BlackBoxEvent::SessionStarted { .. }
            | BlackBoxEvent::SessionLost { .. }
            | BlackBoxEvent::SessionResumed { .. }
            | BlackBoxEvent::FaultHealed { .. } => {}
        }
    }

    pub fn user_of(&self, client: &str) -> String {
        self.user(client)
    }

    /// The clients of `user` named in the header (or seen in the history).
    pub fn clients_of(&self, user: &str) -> Vec<String> {
        self.user_of_client
            .iter()
            .filter(|(_, owner)| owner.as_str() == user)
            .map(|(client, _)| client.clone())
            .collect()
    }

    /// The final read a client's view of `conv` is judged against: its own user's archive of
    /// a 1:1 chat, the one shared archive of a group.
    pub fn archive_for(&self, client: &str, conv: &str) -> Option<&FinalRead> {
        let user = self.user(client);
        let reads: Vec<&FinalRead> = self
            .final_reads
            .iter()
            .filter(|read| read.conv == conv)
            .collect();
        reads
            .iter()
            .find(|read| read.reader == user)
            .or_else(|| {
                (self.kind_of_conv.get(conv) == Some(&ConversationKind::Group))
                    .then(|| reads.first())
                    .flatten()
            })
            .copied()
    }
}

impl FinalRead {
    /// Each message's first position in this archive.
    pub fn positions(&self) -> HashMap<MessageKey, usize> {
        let mut positions = HashMap::new();
        for (position, entry) in self.entries.iter().enumerate() {
            if let Some(msg) = &entry.msg {
                positions
                    .entry((self.conv.clone(), entry.sender.clone(), msg.clone()))
                    .or_insert(position);
            }
        }
        positions
    }
}
