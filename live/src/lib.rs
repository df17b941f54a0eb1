//! # imsim-live: the protocol model for real
//!
//! The same `imsim-model` state machines that the simulator drives under madsim, driven here
//! over real UDP sockets, a real append-only log with `fdatasync`, and the wall clock, with the
//! real tokio runtime (never madsim):
//!
//! - [`wire`]: one packet per datagram, versioned, size-limited, never panicking on bad input;
//! - [`log`]: the server's durable log (length + CRC32 frames, torn-tail recovery);
//! - [`data_dir`]: the server's locked data directory and its recovery;
//! - [`device_state`]: a device's local database in a file, so a restarted device resumes;
//! - [`clock`]: scenario time from the machine's monotonic clock, shared by every process;
//! - [`server`]: `imsim serve`, the model's server on a socket and a log;
//! - [`device`]: a device on its own socket with its state file;
//! - [`faults`], [`run`] and [`merge`]: `imsim live`, a scenario run for real, its history
//!   merged from the server's and the devices' records, and checked;
//! - [`bench`]: the live figures of `imsim bench`.

pub mod bench;
pub mod clock;
pub mod data_dir;
pub mod device;
pub mod device_state;
pub mod directory;
pub mod faults;
pub mod log;
pub mod merge;
pub mod run;
pub mod server;
pub mod wire;

use std::fmt;
use std::path::PathBuf;

/// A failure of the data directory or of a state file. Every variant names the file; the CLI
/// reports it and exits 2 (bad input) — a server never starts on data it cannot trust.
#[derive(Debug)]
pub enum StorageError {
    Io {
        path: PathBuf,
        op: &'static str,
        source: std::io::Error,
    },
    /// A log that cannot be trusted from `offset` on (never skipped, never truncated).
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    /// A state file that cannot be read (syntax, a wrong field).
    BadFile { path: PathBuf, reason: String },
    /// Another server holds the data directory.
    Locked { path: PathBuf },
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageError::Io { path, op, source } => {
                write!(f, "{}: {op} failed: {source}", path.display())
            }
            StorageError::Corrupt {
                path,
                offset,
                reason,
            } => write!(
                f,
                "{}: corrupt at offset {offset}: {reason}",
                path.display()
            ),
            StorageError::BadFile { path, reason } => write!(f, "{}: {reason}", path.display()),
            StorageError::Locked { path } => write!(
                f,
                "{}: the data directory is in use by another imsim serve (its lock is held)",
                path.display()
            ),
        }
    }
}

impl std::error::Error for StorageError {}

/// Equality for tests: an I/O error compares by its kind.
impl PartialEq for StorageError {
    fn eq(&self, other: &StorageError) -> bool {
        use StorageError::*;
        match (self, other) {
            (
                Io { path, op, source },
                Io {
                    path: p,
                    op: o,
                    source: s,
                },
            ) => path == p && op == o && source.kind() == s.kind(),
            (
                Corrupt {
                    path,
                    offset,
                    reason,
                },
                Corrupt {
                    path: p,
                    offset: o,
                    reason: r,
                },
            ) => path == p && offset == o && reason == r,
            (BadFile { path, reason }, BadFile { path: p, reason: r }) => path == p && reason == r,
            (Locked { path }, Locked { path: p }) => path == p,
            _ => false,
        }
    }
}

/// A socket error that only says a peer's port is gone (an ICMP "port unreachable" reported
/// on a later call): the packet is lost, as on a real network; the socket itself is fine.
pub fn is_peer_gone(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::ConnectionReset
    )
}
