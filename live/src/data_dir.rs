//! A server's data directory: the durable log (`log`), the incarnation counter
//! (`incarnation`) and a lock (`lock`) that keeps a second server off it.
//!
//! Opening it takes the lock (a second `imsim serve` on the same directory fails at once with
//! [`StorageError::Locked`]; the lock dies with the process, also on SIGKILL), replays the log
//! (a torn tail is truncated and reported, corruption is an error), and counts one more
//! incarnation, so the restarted server's session ids differ from the dead one's. The model is
//! then rebuilt with `Server::recover` from the replayed records, exactly as the simulator
//! rebuilds it from its modelled storage after a crash.

use crate::log::{LogContents, LogFile};
use crate::StorageError;
use imsim_model::{
    ClientSeq, ConvId, DeviceId, Directory, ProtocolConfig, Record, Server, Storage, Time, Variant,
};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

pub const LOG_FILE: &str = "log";
pub const LOCK_FILE: &str = "lock";
pub const INCARNATION_FILE: &str = "incarnation";

/// An open, locked data directory.
pub struct DataDir {
    path: PathBuf,
    /// Held for the life of the process: the lock is released when this closes.
    _lock: File,
    pub log: LogFile,
    pub contents: LogContents,
    /// 0 for a directory's first server, then one more per start.
    pub incarnation: u64,
}

impl DataDir {
    /// Creates the directory if needed, locks it, replays its log and counts the start.
    pub fn open(path: &Path) -> Result<DataDir, StorageError> {
        let io = |op: &'static str, file: &Path| {
            let path = file.to_path_buf();
            move |source| StorageError::Io { path, op, source }
        };
        std::fs::create_dir_all(path).map_err(io("create directory", path))?;
        let lock_path = path.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(io("open", &lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StorageError::Locked { path: lock_path });
            }
            Err(std::fs::TryLockError::Error(source)) => {
                return Err(StorageError::Io {
                    path: lock_path,
                    op: "lock",
                    source,
                });
            }
        }
        let (log, contents) = LogFile::open(&path.join(LOG_FILE))?;
        let incarnation = next_incarnation(path)?;
        Ok(DataDir {
            path: path.to_path_buf(),
            _lock: lock,
            log,
            contents,
            incarnation,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The model's server, rebuilt from the replayed records (all of them durable: they were
    /// synced, or they would not be whole in the file). The records must fit the directory
    /// the server serves: a data directory made for another scenario is refused here, naming
    /// the first record that does not fit, instead of tripping the model's assertions.
    pub fn recover_server(
        &self,
        config: ProtocolConfig,
        directory: Directory,
        now: Time,
    ) -> Result<Server, StorageError> {
        let path = self.log.path();
        check_fits(&self.contents, &directory, config.variant, path)?;
        let storage = storage_of(&self.contents.records);
        Ok(Server::recover(
            config,
            directory,
            &storage,
            self.incarnation,
            now,
        ))
    }
}

/// Checks what recovery assumes of a log: every record names a conversation of the directory,
/// committed seqs follow each other per conversation, and a device's `client_seq`s are resolved
/// in order per conversation.
pub fn check_fits(
    contents: &LogContents,
    directory: &Directory,
    variant: Variant,
    path: &Path,
) -> Result<(), StorageError> {
    let mut heads: BTreeMap<ConvId, u64> = BTreeMap::new();
    let mut resolved: BTreeMap<(DeviceId, ConvId), ClientSeq> = BTreeMap::new();
    let known: BTreeSet<ConvId> = directory.conversations().collect();
    for (record, offset) in contents.records.iter().zip(&contents.offsets) {
        let misfit = |reason: String| StorageError::Corrupt {
            path: path.to_path_buf(),
            offset: *offset,
            reason: format!("{reason} (is this data directory another scenario's?)"),
        };
        let conv = match record {
            Record::Committed(message) => message.conv,
            Record::Refused { conv, .. } | Record::Read { conv, .. } => *conv,
            Record::InboxCopy { conv, .. } => *conv,
        };
        if !known.contains(&conv) {
            return Err(misfit(format!(
                "conversation {conv} is not in the directory"
            )));
        }
        let (device, client_seq) = match record {
            Record::Committed(message) => {
                let head = heads.entry(conv).or_default();
                // VARIANT seq-reuse-after-restart writes a seq again after a restart.
                let reuse = variant == Variant::SeqReuseAfterRestart;
                let fits = message.seq.0 == *head + 1 || (reuse && message.seq.0 <= *head);
                if !fits || message.seq.0 == 0 {
                    return Err(misfit(format!(
                        "{conv} seq {} follows seq {head}",
                        message.seq.0
                    )));
                }
                *head = message.seq.0;
                (message.sender_device, message.client_seq)
            }
            Record::Refused {
                sender_device,
                client_seq,
                ..
            } => (*sender_device, *client_seq),
            Record::Read { .. } | Record::InboxCopy { .. } => continue,
        };
        let any_order = matches!(
            variant,
            Variant::RetryReorders | Variant::NonIdempotentCommit
        );
        let last = resolved.entry((device, conv)).or_default();
        if !any_order && client_seq <= *last {
            return Err(misfit(format!(
                "{device} {conv} client_seq {} resolved after {}",
                client_seq.0, last.0
            )));
        }
        *last = client_seq.max(*last);
    }
    Ok(())
}

/// A model storage whose records are all durable.
pub fn storage_of(records: &[Record]) -> Storage {
    let mut storage = Storage::new();
    for record in records {
        storage.append(record.clone());
    }
    storage.sync(records.len() as u64);
    storage
}

/// Reads the incarnation counter, stores the next one (written to a temporary file, synced and
/// renamed over the old one, so a crash leaves the old value or the new, never a torn one) and
/// returns it.
fn next_incarnation(dir: &Path) -> Result<u64, StorageError> {
    let path = dir.join(INCARNATION_FILE);
    let incarnation = match std::fs::read_to_string(&path) {
        Ok(text) => {
            let previous: u64 = text.trim().parse().map_err(|_| StorageError::Corrupt {
                path: path.clone(),
                offset: 0,
                reason: format!("incarnation {:?} is not a number", text.trim()),
            })?;
            previous + 1
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => 0,
        Err(source) => {
            return Err(StorageError::Io {
                path,
                op: "read",
                source,
            })
        }
    };
    write_atomically(&path, format!("{incarnation}\n").as_bytes())?;
    Ok(incarnation)
}

/// Replaces `path` with `bytes`: a temporary file beside it, synced, renamed over it, and the
/// directory synced so the rename itself is durable.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), StorageError> {
    let temporary = path.with_extension("tmp");
    let io = |op: &'static str, file: &Path| {
        let path = file.to_path_buf();
        move |source| StorageError::Io { path, op, source }
    };
    let mut file = File::create(&temporary).map_err(io("create", &temporary))?;
    file.write_all(bytes).map_err(io("write", &temporary))?;
    file.sync_data().map_err(io("fdatasync", &temporary))?;
    std::fs::rename(&temporary, path).map_err(io("rename", path))?;
    let parent = path.parent().unwrap_or(Path::new("."));
    File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(io("fsync directory", parent))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::write_and_sync;
    use imsim_model::{ConvId, DeviceId, Seq, UserId};

    fn read_record(up_to: u64) -> Record {
        Record::Read {
            conv: ConvId(1),
            user: UserId(1),
            device: DeviceId(1),
            up_to: Seq(up_to),
        }
    }

    #[test]
    fn a_second_open_of_a_locked_directory_fails_and_names_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDir::open(dir.path()).unwrap();
        let error = DataDir::open(dir.path()).err().expect("locked");
        assert_eq!(
            error,
            StorageError::Locked {
                path: dir.path().join(LOCK_FILE)
            }
        );
        assert!(error.to_string().contains("another"), "{error}");
        drop(first);
        assert!(
            DataDir::open(dir.path()).is_ok(),
            "the lock dies with its holder"
        );
    }

    #[test]
    fn each_start_is_a_new_incarnation_and_keeps_the_synced_records() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut data = DataDir::open(dir.path()).unwrap();
            assert_eq!(data.incarnation, 0);
            data.log.append(&read_record(1));
            data.log.append(&read_record(2));
            let (file, bytes) = data.log.take_through(1);
            write_and_sync(data.log.path(), &file, &bytes).unwrap();
            // Record 2 is still in the buffer when this "process" ends.
        }
        let data = DataDir::open(dir.path()).unwrap();
        assert_eq!(data.incarnation, 1);
        assert_eq!(data.contents.records, vec![read_record(1)]);
        let storage = storage_of(&data.contents.records);
        assert_eq!((storage.synced(), storage.written()), (1, 1));
    }

    #[test]
    fn a_log_of_another_scenario_is_refused_naming_the_record() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut data = DataDir::open(dir.path()).unwrap();
            data.log.append(&read_record(1));
            let (file, bytes) = data.log.take_through(1);
            write_and_sync(data.log.path(), &file, &bytes).unwrap();
        }
        let data = DataDir::open(dir.path()).unwrap();
        let mut directory = Directory::new();
        directory.add_conversation(ConvId(7), vec![UserId(1), UserId(2)]);
        let error = data
            .recover_server(ProtocolConfig::default(), directory.clone(), Time(0))
            .err()
            .expect("refused");
        let text = error.to_string();
        assert!(text.contains("offset 12") && text.contains("c1"), "{text}");
        directory.add_conversation(ConvId(1), vec![UserId(1), UserId(2)]);
        assert!(data
            .recover_server(ProtocolConfig::default(), directory, Time(0))
            .is_ok());
    }

    #[test]
    fn a_garbled_incarnation_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(INCARNATION_FILE), "seven").unwrap();
        let error = DataDir::open(dir.path()).err().expect("refused");
        assert!(error.to_string().contains("incarnation"), "{error}");
        assert_eq!(
            std::fs::read_to_string(dir.path().join(INCARNATION_FILE)).unwrap(),
            "seven",
            "left as it was"
        );
    }
}
