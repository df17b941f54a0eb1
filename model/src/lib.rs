//! # imsim-model (bootstrap: client, server and storage land in the next commits)
pub mod config;
pub mod event;
pub mod ids;
mod output;
pub mod time;
pub mod wire;

pub use config::ProtocolConfig;
pub use event::{Event, PullReason, SendFailure, SessionEnd};
pub use ids::{Address, ClientMsgId, ClientSeq, ConvId, DeviceId, Seq, SessionId, UserId};
pub use output::Output;
pub use time::Time;
pub use wire::{Head, Message, Packet, Rejection};
