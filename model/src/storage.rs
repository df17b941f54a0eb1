//! The server's durable storage: an append-only log of records. A record is durable only after a
//! sync; a crash keeps the durable prefix and loses the rest. The server rebuilds all of its state
//! from the durable records when it restarts ([`crate::Server::recover`]).
//!
//! The model decides what to write and when to ask for a sync; the driver decides how long a sync
//! takes and whether a crash comes first. That split is what makes "crash between store and ack"
//! a schedule the simulator can produce.

use crate::ids::{ClientMsgId, ClientSeq, ConvId, DeviceId, Seq, UserId};
use crate::message::{Message, Rejection};
use serde::{Deserialize, Serialize};

/// One durable fact.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "snake_case")]
pub enum Record {
    /// A message took its place in a conversation's timeline.
    Committed(Message),
    /// A send was refused for good. Durable, because it resolves the sender's `client_seq`: the
    /// server must keep expecting the next one after a restart.
    Refused {
        conv: ConvId,
        sender_device: DeviceId,
        client_msg_id: ClientMsgId,
        client_seq: ClientSeq,
        reason: Rejection,
    },
    /// A user's read watermark moved to `up_to` (sent by `device`).
    Read {
        conv: ConvId,
        user: UserId,
        device: DeviceId,
        up_to: Seq,
    },
    /// Fan-out write: a committed entry copied to one user's inbox.
    InboxCopy {
        user: UserId,
        conv: ConvId,
        seq: Seq,
    },
}

impl Record {
    /// A timeline entry or a fan-out inbox copy.
    pub fn stores_message(&self) -> bool {
        matches!(self, Record::Committed(_) | Record::InboxCopy { .. })
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Storage {
    durable: Vec<Record>,
    unsynced: Vec<Record>,
}

impl Storage {
    pub fn new() -> Storage {
        Storage::default()
    }

    /// Appends a record; it is not durable until `sync` covers it.
    pub fn append(&mut self, record: Record) {
        self.unsynced.push(record);
    }

    /// Number of records written so far, durable or not. A sync requested now covers up to here.
    pub fn written(&self) -> u64 {
        (self.durable.len() + self.unsynced.len()) as u64
    }

    /// Records written so far, durable or not, that store a message: timeline entries and
    /// fan-out inbox copies (not refusals or reads).
    pub fn message_writes(&self) -> u64 {
        let records = self.durable.iter().chain(&self.unsynced);
        records.filter(|record| record.stores_message()).count() as u64
    }

    /// Number of durable records.
    pub fn synced(&self) -> u64 {
        self.durable.len() as u64
    }

    /// Makes records durable up to `through` (exclusive) and returns the newly durable ones.
    pub fn sync(&mut self, through: u64) -> &[Record] {
        let start = self.durable.len();
        let count = (through.saturating_sub(start as u64) as usize).min(self.unsynced.len());
        self.durable.extend(self.unsynced.drain(..count));
        &self.durable[start..]
    }

    /// The records written but not yet synced, in log order (record number `synced()` first): a
    /// driver that keeps a real log writes these when the model asks for a sync.
    pub fn unsynced(&self) -> &[Record] {
        &self.unsynced
    }

    pub fn durable(&self) -> &[Record] {
        &self.durable
    }

    /// What survives a crash: the durable records. Returns the surviving storage and how many
    /// unsynced records were lost.
    pub fn crash(&self) -> (Storage, u64) {
        let survivor = Storage {
            durable: self.durable.clone(),
            unsynced: Vec::new(),
        };
        (survivor, self.unsynced.len() as u64)
    }
}
