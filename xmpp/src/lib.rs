//! imsim-xmpp: judges a real XMPP server (Prosody) from what its clients see.
//!
//! The adapter starts Prosody itself (or uses one given), puts a TCP fault proxy in front of
//! every client, drives 1:1 chats, a group room, stream management with resumption, archive
//! catch-up, receipts, markers and carbons over real loopback TCP, and records a black-box
//! history that the judges in `blackbox` check against the final read of every archive.

pub mod blackbox;
mod client;
pub mod plan;
pub mod proxy;
mod record;
pub mod run;
pub mod server;
mod session;
mod stanza;
mod xml;

pub use run::{profile_of, run, ExternalServer, XmppOptions, XmppOutcome};
