//! # imsim-model: the IM protocol as sans-IO state machines
//!
//! This crate is the protocol's specification. It has no async, no clock, no randomness and no
//! network: a [`Client`] (one device of one user) and a [`Server`] are plain values that are told
//! what happened and what time it is, and say what to do next.
//!
//! - Inputs: `handle_packet(now, from, packet)`, `handle_timeout(now)`, `handle_command(now, ..)`
//!   and, for the server, `handle_storage_synced(now, through)`.
//! - Outputs: after every input, drain `poll_output()` until it returns `None`. An [`Output`] is a
//!   packet to transmit, a timer to arm, a storage sync to start, or an observable [`Event`].
//!
//! The simulator (`imsim-sim`) drives these machines under madsim with faults; unit tests drive
//! them with a plain loop. Neither can break an invariant the model keeps, because the model
//! decides everything; they only decide *when* inputs happen.

pub mod client;
pub mod cluster;
pub mod config;
pub mod directory;
pub mod event;
pub mod ids;
pub mod membership;
pub mod message;
mod output;
pub mod server;
pub mod storage;
pub mod time;
pub mod variant;
pub mod wire;

pub use client::{Client, Command, DeviceIdentity, LocalStore};
pub use config::{PresenceMode, ProtocolConfig};
pub use directory::Directory;
pub use event::{Event, PullReason, SendFailure, SessionEnd, Via};
pub use ids::{Address, ClientMsgId, ClientSeq, ConvId, DeviceId, Seq, SessionId, UserId};
pub use membership::Membership;
pub use output::Output;
pub use server::Server;
pub use storage::{Record, Storage};
pub use time::Time;
pub use variant::{CatalogueEntry, Variant, CATALOGUE};
pub use wire::{
    Head, MembershipChange, Message, Packet, PresenceEntry, ReadCount, ReadMark, Rejection,
};
