//! imsim-xmpp: judges a real XMPP server (Prosody) from what its clients see.
//!
//! The adapter starts Prosody itself (or uses one given), puts a TCP fault proxy in front of
//! every client, drives 1:1 chats, a group room, stream management with resumption, archive
//! catch-up, receipts, markers and carbons over real loopback TCP, and records a black-box
//! history (the profile in `imsim_history::blackbox`, which also judges it against the final
//! read of every archive).

mod client;
pub mod plan;
pub mod proxy;
mod record;
pub mod run;
pub mod server;
mod session;
mod stanza;
mod xml;

pub use run::{fault_plan, profile_of, run, ExternalServer, XmppOptions, XmppOutcome};
