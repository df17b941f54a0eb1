//! A device's state file: its local database (cursors, outbox, ids, read and presence state,
//! the model's [`LocalStore`]) as JSON, so a device that is dropped and started again resumes
//! where it was, as an app does after it is killed.
//!
//! The file is replaced whole on every change (a temporary file renamed over it), so a reader
//! sees the old state or the new, never a mix. It is not fsynced: the fault it survives is the
//! app being killed, which keeps whatever was handed to the kernel; a phone losing power is not
//! modelled for devices (the simulator does not model it either).

use crate::StorageError;
use imsim_model::{DeviceId, LocalStore, UserId};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The format of the file; a file of another version is refused, not guessed at.
pub const DEVICE_STATE_VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceStateFile {
    version: u32,
    user: UserId,
    device: DeviceId,
    store: LocalStore,
}

/// A device's state file in a directory.
#[derive(Clone, Debug)]
pub struct DeviceState {
    path: PathBuf,
    user: UserId,
    device: DeviceId,
    /// The bytes last written: an unchanged store is not written again.
    last_written: Option<String>,
}

impl DeviceState {
    pub fn new(dir: &Path, user: UserId, device: DeviceId) -> DeviceState {
        DeviceState {
            path: dir.join(format!("device-{}.json", device.0)),
            user,
            device,
            last_written: None,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The stored local database, `None` when the device never ran (no file).
    pub fn load(&mut self) -> Result<Option<LocalStore>, StorageError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StorageError::Io {
                    path: self.path.clone(),
                    op: "read",
                    source,
                })
            }
        };
        let bad = |reason: String| StorageError::BadFile {
            path: self.path.clone(),
            reason,
        };
        let file: DeviceStateFile = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        if file.version != DEVICE_STATE_VERSION {
            return Err(bad(format!(
                "field `version`: {} (this build reads version {DEVICE_STATE_VERSION})",
                file.version
            )));
        }
        if (file.user, file.device) != (self.user, self.device) {
            return Err(bad(format!(
                "fields `user`/`device`: the file belongs to {}/{}, not {}/{}",
                file.user, file.device, self.user, self.device
            )));
        }
        self.last_written = Some(text);
        Ok(Some(file.store))
    }

    /// Writes the store if it changed since the last write. Returns whether it wrote.
    pub fn save(&mut self, store: &LocalStore) -> Result<bool, StorageError> {
        let file = DeviceStateFile {
            version: DEVICE_STATE_VERSION,
            user: self.user,
            device: self.device,
            store: store.clone(),
        };
        // A LocalStore is plain data with integer map keys, which serde_json writes as strings.
        let text = serde_json::to_string(&file).expect("a local store always serialises");
        if self.last_written.as_deref() == Some(text.as_str()) {
            return Ok(false);
        }
        let temporary = self.path.with_extension("json.tmp");
        let io = |op: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| StorageError::Io { path, op, source }
        };
        std::fs::write(&temporary, &text).map_err(io("write", &temporary))?;
        std::fs::rename(&temporary, &self.path).map_err(io("rename", &self.path))?;
        self.last_written = Some(text);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use imsim_model::{
        Address, Client, Command, ConvId, DeviceIdentity, Output, Packet, ProtocolConfig, Time,
    };

    fn identity() -> DeviceIdentity {
        DeviceIdentity {
            user: UserId(1),
            device: DeviceId(2),
            token: 7,
            server: Address(0),
        }
    }

    /// A client that sent two messages nobody acknowledged and is online.
    fn busy_client() -> Client {
        let mut client = Client::new(ProtocolConfig::default(), identity());
        client.handle_command(Time(0), Command::GoOnline);
        for body in ["one", "two"] {
            client.handle_command(
                Time(1),
                Command::Send {
                    conv: ConvId(3),
                    body: body.to_string(),
                },
            );
        }
        while client.poll_output().is_some() {}
        client
    }

    #[test]
    fn a_resumed_device_has_its_outbox_and_ids_and_logs_in_again() {
        let dir = tempfile::tempdir().unwrap();
        let client = busy_client();
        let mut state = DeviceState::new(dir.path(), UserId(1), DeviceId(2));
        assert_eq!(state.load().unwrap(), None);
        assert!(state.save(client.local_store()).unwrap());
        assert!(!state.save(client.local_store()).unwrap(), "unchanged");

        let mut fresh = DeviceState::new(dir.path(), UserId(1), DeviceId(2));
        let store = fresh.load().unwrap().expect("stored");
        assert_eq!(&store, client.local_store());
        let mut resumed = Client::resume(ProtocolConfig::default(), identity(), store, Time(50));
        assert_eq!(resumed.outbox_len(), 2);
        // It wanted to be online: it logs in at once.
        resumed.handle_timeout(Time(50));
        let sent: Vec<Packet> = std::iter::from_fn(|| resumed.poll_output())
            .filter_map(|output| match output {
                Output::Transmit { packet, .. } => Some(packet),
                _ => None,
            })
            .collect();
        assert!(
            sent.iter().any(|p| matches!(p, Packet::Login { .. })),
            "{sent:?}"
        );
        // A new send continues the ids where the old process left them.
        resumed.handle_command(
            Time(60),
            Command::Send {
                conv: ConvId(3),
                body: "three".to_string(),
            },
        );
        let events: Vec<String> = std::iter::from_fn(|| resumed.poll_output())
            .filter_map(|output| match output {
                Output::Event(event) => Some(format!("{event:?}")),
                _ => None,
            })
            .collect();
        assert!(events[0].contains("client_seq: ClientSeq(3)"), "{events:?}");
    }

    #[test]
    fn a_foreign_or_garbled_state_file_is_an_error_naming_file_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let mut other = DeviceState::new(dir.path(), UserId(9), DeviceId(2));
        other.save(busy_client().local_store()).unwrap();
        let mut mine = DeviceState::new(dir.path(), UserId(1), DeviceId(2));
        let error = mine.load().unwrap_err().to_string();
        assert!(
            error.contains("device-2.json") && error.contains("`user`"),
            "{error}"
        );

        std::fs::write(mine.path(), "{\"version\": 1, \"user\": 1").unwrap();
        let error = mine.load().unwrap_err().to_string();
        assert!(
            error.contains("device-2.json") && error.contains("line 1"),
            "{error}"
        );
    }
}
