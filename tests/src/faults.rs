//! A TCP proxy a test puts between the server and PostgreSQL or Redis, to make the network fail
//! on demand without stopping any real service: it forwards, refuses new connections, cuts the
//! open ones, or blackholes everything (accepts and holds, passes nothing on — the way a dead
//! host or a dropped route looks).

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the proxy does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Passes everything on, both ways.
    None,
    /// Stops listening (new connections are refused) and cuts the open ones.
    Refuse,
    /// Accepts connections and holds every byte, both ways, until the fault ends.
    Blackhole,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct State {
    fault: Fault,
    /// Bumped by [`FaultyProxy::cut`]: connections opened before it end.
    cuts: u64,
}

/// The proxy; it stops when dropped.
pub struct FaultyProxy {
    port: u16,
    state: watch::Sender<State>,
    task: JoinHandle<()>,
}

impl FaultyProxy {
    /// Listens on a free local port and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> FaultyProxy {
        let listener =
            TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("proxy: {e}"));
        let port = listener.local_addr().map(|a| a.port()).unwrap_or_else(|e| panic!("{e}"));
        let state = watch::Sender::new(State { fault: Fault::None, cuts: 0 });
        let task = tokio::spawn(accept_loop(listener, port, upstream, state.subscribe()));
        FaultyProxy { port, state, task }
    }

    /// The port to connect to instead of the upstream's.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Starts (or, with [`Fault::None`], ends) a fault.
    pub fn set(&self, fault: Fault) {
        self.state.send_modify(|s| s.fault = fault);
    }

    /// Closes every connection open now; new ones are handled as the current fault says.
    pub fn cut(&self) {
        self.state.send_modify(|s| s.cuts += 1);
    }
}

impl Drop for FaultyProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(
    mut listener: TcpListener,
    port: u16,
    upstream: SocketAddr,
    mut state: watch::Receiver<State>,
) {
    loop {
        if state.borrow().fault == Fault::Refuse {
            // Not listening at all: connections are refused by the kernel.
            drop(listener);
            while state.borrow_and_update().fault == Fault::Refuse {
                if state.changed().await.is_err() {
                    return;
                }
            }
            listener = match TcpListener::bind(("127.0.0.1", port)).await {
                Ok(listener) => listener,
                Err(e) => panic!("proxy cannot listen again on {port}: {e}"),
            };
        }
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((client, _)) = accepted {
                    tokio::spawn(connection(client, upstream, state.clone()));
                }
            }
            changed = state.changed() => if changed.is_err() { return },
        }
    }
}

/// Waits out a blackhole; false if the connection must end (cut, refused, proxy gone).
async fn usable(state: &mut watch::Receiver<State>, born: u64) -> bool {
    loop {
        let now = *state.borrow_and_update();
        if now.cuts != born || now.fault == Fault::Refuse {
            return false;
        }
        if now.fault == Fault::None {
            return true;
        }
        if state.changed().await.is_err() {
            return false;
        }
    }
}

async fn connection(
    mut client: TcpStream,
    upstream: SocketAddr,
    mut state: watch::Receiver<State>,
) {
    let born = state.borrow().cuts;
    if !usable(&mut state, born).await {
        return;
    }
    let Ok(mut server) = TcpStream::connect(upstream).await else { return };
    let (mut client_read, mut client_write) = client.split();
    let (mut server_read, mut server_write) = server.split();
    let (mut up, mut down) = (vec![0u8; 16 * 1024], vec![0u8; 16 * 1024]);
    loop {
        if !usable(&mut state, born).await {
            return;
        }
        tokio::select! {
            read = client_read.read(&mut up) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    // Held, not passed on, while a blackhole lasts.
                    if !usable(&mut state, born).await || server_write.write_all(&up[..n]).await.is_err() {
                        return;
                    }
                }
            },
            read = server_read.read(&mut down) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if !usable(&mut state, born).await || client_write.write_all(&down[..n]).await.is_err() {
                        return;
                    }
                }
            },
            changed = state.changed() => if changed.is_err() { return },
        }
    }
}
