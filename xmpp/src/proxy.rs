//! A TCP fault proxy between one client and the server (tokio, loopback only).
//!
//! Each client connects to its own proxy, so every fault targets one client. The proxy
//! forwards bytes both ways and applies the faults the harness sets: a reset closes every open
//! connection with RST (zero linger); a stall stops forwarding one direction (bytes wait in
//! the kernel, as on a stuck path); a blackhole reads one direction and throws it away (a
//! one-way partition: the connection is useless afterwards, so healing it also resets); a delay
//! holds each chunk before forwarding it; refusing closes new connections at once.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

/// How often a waiting pump looks at the fault state again.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// The largest chunk read at once.
const CHUNK_BYTES_MAX: usize = 16 * 1024;

/// What happens to the bytes of one direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Flow {
    #[default]
    Pass,
    /// Not forwarded until healed; nothing is lost.
    Stall,
    /// Read and dropped.
    Blackhole,
}

/// The faults currently set on one proxy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultState {
    pub to_server: Flow,
    pub to_client: Flow,
    pub delay_ms: u64,
    pub refuse: bool,
}

/// The harness's handle on one proxy.
#[derive(Clone)]
pub struct FaultProxy {
    address: SocketAddr,
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<FaultState>,
    /// Bumped by every reset: connections opened under an older generation close.
    generation: AtomicU64,
}

impl FaultProxy {
    /// Listens on a fresh loopback port and forwards every connection to `server`.
    pub async fn start(server: SocketAddr) -> Result<FaultProxy, String> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|error| format!("proxy: cannot listen on loopback: {error}"))?;
        let address = listener
            .local_addr()
            .map_err(|error| format!("proxy: {error}"))?;
        let shared = Arc::new(Shared {
            state: Mutex::new(FaultState::default()),
            generation: AtomicU64::new(0),
        });
        let accepting = Arc::clone(&shared);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let shared = Arc::clone(&accepting);
                tokio::spawn(forward(client, server, shared));
            }
        });
        Ok(FaultProxy { address, shared })
    }

    /// Where the client should connect.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn state(&self) -> FaultState {
        *lock(&self.shared.state)
    }

    pub fn set(&self, state: FaultState) {
        *lock(&self.shared.state) = state;
    }

    /// Closes every open connection with a reset.
    pub fn reset(&self) {
        self.shared.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Clears every fault; a blackhole lost bytes mid-stream, so its connections are reset.
    pub fn heal(&self) {
        let previous = self.state();
        self.set(FaultState::default());
        if previous.to_server == Flow::Blackhole || previous.to_client == Flow::Blackhole {
            self.reset();
        }
    }
}

fn lock(state: &Mutex<FaultState>) -> std::sync::MutexGuard<'_, FaultState> {
    // The state is plain data written whole: a panicking writer cannot leave it half-set.
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

async fn forward(client: TcpStream, server: SocketAddr, shared: Arc<Shared>) {
    if lock(&shared.state).refuse {
        let _ = client.set_zero_linger();
        return;
    }
    let generation = shared.generation.load(Ordering::SeqCst);
    let Ok(upstream) = TcpStream::connect(server).await else {
        let _ = client.set_zero_linger();
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let _ = client.set_zero_linger();
    let _ = upstream.set_zero_linger();
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = upstream.into_split();
    // When either direction ends (EOF, error, reset), both sockets are dropped with zero
    // linger, which sends RST both ways.
    // Each pump runs until its direction closes; `biased;` keeps the polling order explicit.
    tokio::select! {
        biased;
        _ = pump(client_read, server_write, &shared, generation, true) => {}
        _ = pump(server_read, client_write, &shared, generation, false) => {}
    }
}

async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    shared: &Shared,
    generation: u64,
    to_server: bool,
) {
    let mut buffer = vec![0u8; CHUNK_BYTES_MAX];
    loop {
        if shared.generation.load(Ordering::SeqCst) != generation {
            return;
        }
        let state = *lock(&shared.state);
        let flow = if to_server {
            state.to_server
        } else {
            state.to_client
        };
        if flow == Flow::Stall {
            tokio::time::sleep(POLL_INTERVAL).await;
            continue;
        }
        let read = tokio::time::timeout(POLL_INTERVAL, from.read(&mut buffer)).await;
        let count = match read {
            Err(_) => continue,
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(count)) => count,
        };
        // The flow is read again: a fault set while the read waited applies to its bytes.
        let state = loop {
            let state = *lock(&shared.state);
            let flow = if to_server {
                state.to_server
            } else {
                state.to_client
            };
            if flow != Flow::Stall || shared.generation.load(Ordering::SeqCst) != generation {
                break state;
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        };
        let flow = if to_server {
            state.to_server
        } else {
            state.to_client
        };
        if flow == Flow::Blackhole {
            continue;
        }
        if state.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(state.delay_ms)).await;
        }
        if shared.generation.load(Ordering::SeqCst) != generation {
            return;
        }
        if to.write_all(&buffer[..count]).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buffer = [0u8; 64];
                    while let Ok(count) = stream.read(&mut buffer).await {
                        if count == 0 || stream.write_all(&buffer[..count]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        address
    }

    async fn round_trip(stream: &mut TcpStream, wait: Duration) -> Option<Vec<u8>> {
        stream.write_all(b"ping").await.ok()?;
        let mut buffer = [0u8; 4];
        match tokio::time::timeout(wait, stream.read_exact(&mut buffer)).await {
            Ok(Ok(_)) => Some(buffer.to_vec()),
            _ => None,
        }
    }

    #[tokio::test]
    async fn forwards_stalls_and_resets() {
        let proxy = FaultProxy::start(echo_server().await).await.unwrap();
        let mut stream = TcpStream::connect(proxy.address()).await.unwrap();
        let wait = Duration::from_millis(300);
        assert_eq!(round_trip(&mut stream, wait).await, Some(b"ping".to_vec()));
        proxy.set(FaultState {
            to_client: Flow::Stall,
            ..FaultState::default()
        });
        assert_eq!(round_trip(&mut stream, wait).await, None, "stalled");
        proxy.heal();
        let mut late = [0u8; 4];
        stream.read_exact(&mut late).await.unwrap();
        assert_eq!(&late, b"ping", "a stall loses nothing");
        proxy.reset();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(round_trip(&mut stream, wait).await, None, "reset");
    }
}
