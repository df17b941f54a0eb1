//! Starting, crashing and restarting a Prosody of our own on loopback.
//!
//! The config is generated into a fresh temporary directory (its own c2s port, data dir, pid
//! file and log), accounts are registered with `prosodyctl`, and the server runs in the
//! foreground as the unprivileged `prosody` user through `setpriv` (Prosody refuses root).
//! `setpriv` execs, so the child's pid is the server's and SIGKILL on it is a real crash. The
//! directory and the process are cleaned up on drop, so a failing run never leaves a server
//! behind.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The XMPP domain of the generated server, and of its group-chat component.
pub const DOMAIN: &str = "localhost";
pub const MUC_DOMAIN: &str = "conference.localhost";

/// How long a dropped session can still be resumed (XEP-0198 hibernation) unless the run
/// says otherwise, in seconds.
pub const HIBERNATION_S_DEFAULT: u64 = 30;

/// How long the server may take to listen after it was started.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// The unprivileged user Debian's package creates.
const SERVER_USER: &str = "prosody";

/// A Prosody process this adapter started, with its directory.
pub struct Prosody {
    directory: PathBuf,
    config: PathBuf,
    port: u16,
    child: Option<Child>,
    as_root: bool,
}

impl Prosody {
    /// Writes a config, registers `accounts` (user, password) and starts the server.
    pub fn start(accounts: &[(String, String)], hibernation_s: u64) -> Result<Prosody, String> {
        which("prosody")?;
        let as_root = command_output("id", &["-u"])?.trim() == "0";
        let port = free_port()?;
        let directory =
            std::env::temp_dir().join(format!("imsim-xmpp-{}-{}", std::process::id(), port));
        std::fs::create_dir_all(directory.join("data"))
            .and_then(|()| std::fs::create_dir_all(directory.join("certs")))
            .map_err(|error| format!("{}: cannot create: {error}", directory.display()))?;
        let config = directory.join("prosody.cfg.lua");
        std::fs::write(&config, config_text(&directory, port, hibernation_s))
            .map_err(|error| format!("{}: cannot write: {error}", config.display()))?;
        let mut server = Prosody {
            directory,
            config,
            port,
            child: None,
            as_root,
        };
        if as_root {
            let status = Command::new("chown")
                .args(["-R", &format!("{SERVER_USER}:{SERVER_USER}")])
                .arg(&server.directory)
                .status()
                .map_err(|error| format!("chown: {error}"))?;
            if !status.success() {
                return Err(format!("chown of {} failed", server.directory.display()));
            }
        }
        for (user, password) in accounts {
            server.register(user, password)?;
        }
        server.spawn()?;
        Ok(server)
    }

    pub fn address(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The version line of the installed Prosody, for the history header.
    pub fn version() -> String {
        command_output("prosodyctl", &["about"])
            .ok()
            .and_then(|text| text.lines().next().map(str::to_string))
            .unwrap_or_else(|| "Prosody (version unknown)".to_string())
    }

    /// SIGKILL: the server gets no chance to flush or say goodbye.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same config and data directory (if it is not running).
    pub fn restart(&mut self) -> Result<(), String> {
        if self.child.is_some() {
            return Ok(());
        }
        self.spawn()
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    fn command(&self, program: &str) -> Command {
        if self.as_root {
            let mut command = Command::new("setpriv");
            command.args([
                &format!("--reuid={SERVER_USER}"),
                &format!("--regid={SERVER_USER}"),
                "--init-groups",
                program,
            ]);
            command
        } else {
            Command::new(program)
        }
    }

    fn register(&self, user: &str, password: &str) -> Result<(), String> {
        let output = self
            .command("prosodyctl")
            .arg("--config")
            .arg(&self.config)
            .args(["register", user, DOMAIN, password])
            .output()
            .map_err(|error| format!("prosodyctl: {error}"))?;
        if !output.status.success() {
            return Err(format!(
                "prosodyctl register {user} failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        Ok(())
    }

    fn spawn(&mut self) -> Result<(), String> {
        let child = self
            .command("prosody")
            .arg("--config")
            .arg(&self.config)
            .arg("-F")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|error| format!("cannot start prosody: {error}"))?;
        self.child = Some(child);
        let started = Instant::now();
        while started.elapsed() < START_TIMEOUT {
            if TcpStream::connect_timeout(&self.address(), Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Err(format!(
                        "prosody exited at start ({status}); its log: {}",
                        self.log_tail()
                    ));
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill();
        Err(format!(
            "prosody did not listen on {} within {START_TIMEOUT:?}; its log: {}",
            self.address(),
            self.log_tail()
        ))
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.directory.join("prosody.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }
}

impl Drop for Prosody {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.directory);
    }
}

/// A loopback port nobody listens on now (the OS picks it; a race with another process taking
/// it in between shows up as a clear start-up error).
fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|error| format!("cannot find a free loopback port: {error}"))?;
    listener
        .local_addr()
        .map(|address| address.port())
        .map_err(|error| error.to_string())
}

fn which(program: &str) -> Result<(), String> {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .map(|status| status.success())
        .unwrap_or(false);
    if found {
        Ok(())
    } else {
        Err(format!(
            "`{program}` is not installed (apt-get install -y prosody), or pass --server HOST:PORT --accounts FILE"
        ))
    }
}

/// True when a Prosody binary is on PATH (tests skip without it).
pub fn installed() -> bool {
    which("prosody").is_ok()
}

fn command_output(program: &str, arguments: &[&str]) -> Result<String, String> {
    let output = Command::new(program)
        .args(arguments)
        .output()
        .map_err(|error| format!("{program}: {error}"))?;
    Ok(String::from_utf8_lossy(&output.stdout).to_string())
}

/// The generated config: loopback only, plain auth (no TLS on loopback), file storage in our
/// directory, archives that never expire, stream management with resumption, one MUC service
/// that archives every room.
fn config_text(directory: &Path, port: u16, hibernation_s: u64) -> String {
    let dir = directory.display();
    format!(
        r#"-- generated by imsim-xmpp; removed with its directory at the end of the run
pidfile = "{dir}/prosody.pid"
certificates = "{dir}/certs"
data_path = "{dir}/data"
prosody_user = "{SERVER_USER}"
log = {{ info = "{dir}/prosody.log" }}
interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {port} }}
s2s_ports = {{ }}
c2s_direct_tls_ports = {{ }}
s2s_direct_tls_ports = {{ }}
http_ports = {{ }}
https_ports = {{ }}
component_ports = {{ }}
modules_enabled = {{ "roster", "saslauth", "disco", "carbons", "mam", "smacks", "ping", "register", "posix" }}
modules_disabled = {{ "s2s", "tls", "dialback" }}
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
authentication = "internal_plain"
storage = "internal"
default_archive_policy = true
archive_expires_after = "never"
max_archive_query_results = 500
smacks_hibernation_time = {hibernation_s}
smacks_max_unacked_stanzas = 5
limits = {{ c2s = {{ rate = "10mb/s" }} }}

VirtualHost "{DOMAIN}"

Component "{MUC_DOMAIN}" "muc"
    modules_enabled = {{ "muc_mam" }}
    muc_room_default_persistent = true
    muc_room_default_history_length = 0
    muc_log_by_default = true
    muc_log_all_rooms = true
    restrict_room_creation = false
    muc_room_locking = false
    max_archive_query_results = 500
"#
    )
}
