//! A TCP proxy in front of a real server, for faults the server itself cannot produce on cue:
//! `hang()` keeps every socket open but stops moving bytes (a peer that accepts and never
//! answers), `reset()` drops every open connection at once (a flap), `resume()` goes back to
//! forwarding. It also counts and timestamps the connections it accepts. It runs on its own
//! thread and runtime, independent of the actix system under test, and stops when dropped.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Instant,
};

/// Connections open through the proxy right now, and the most ever open at once: exactly what
/// the client holds, with no sampling.
#[derive(Default)]
struct OpenCount {
    now: AtomicUsize,
    peak: AtomicUsize,
}

/// Counts one open connection for as long as it lives.
struct Open(Arc<OpenCount>);

impl Open {
    fn new(count: &Arc<OpenCount>) -> Self {
        let now = count.now.fetch_add(1, Ordering::SeqCst) + 1;
        count.peak.fetch_max(now, Ordering::SeqCst);
        Self(count.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::SeqCst);
    }
}

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::watch,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Forward,
    Hang,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct State {
    mode: Mode,
    /// Bumped by reset(): connections from an older generation close.
    generation: u64,
    /// When set, new connections are accepted and closed at once (nothing upstream).
    close_new: bool,
    /// A reset spares the connections accepted before this one (0: none is spared).
    spare_below: usize,
}

/// The proxy; listening on 127.0.0.1:`port`.
pub struct Proxy {
    pub port: u16,
    state: watch::Sender<State>,
    accepted: Arc<Mutex<Vec<Instant>>>,
    open: Arc<OpenCount>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Proxy {
    /// Forwards 127.0.0.1:`port` (a fresh port) to 127.0.0.1:`upstream`.
    pub fn start(upstream: u16) -> Self {
        let (state_tx, state_rx) = watch::channel(State {
            mode: Mode::Forward,
            generation: 0,
            close_new: false,
            spare_below: 0,
        });
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let acc = accepted.clone();
        let open = Arc::new(OpenCount::default());
        let counter = open.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy bind");
                port_tx
                    .send(listener.local_addr().expect("addr").port())
                    .expect("port");
                loop {
                    tokio::select! {
                        _ = &mut stop_rx => break,
                        conn = listener.accept() => {
                            let Ok((client, _)) = conn else { continue };
                            let index = {
                                let mut acc = acc.lock().expect("lock");
                                acc.push(Instant::now());
                                acc.len() - 1
                            };
                            let rx = state_rx.clone();
                            if rx.borrow().close_new {
                                drop(client);
                                continue;
                            }
                            let guard = Open::new(&counter);
                            tokio::spawn(async move {
                                relay(client, upstream, rx, index).await;
                                drop(guard);
                            });
                        }
                    }
                }
            });
        });
        let port = port_rx.recv().expect("proxy port");
        Self {
            port,
            state: state_tx,
            accepted,
            open,
            shutdown: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// Stops moving bytes on every connection, old and new; sockets stay open.
    pub fn hang(&self) {
        self.state.send_modify(|s| s.mode = Mode::Hang);
    }

    /// Forwards again.
    pub fn resume(&self) {
        self.state.send_modify(|s| s.mode = Mode::Forward);
    }

    /// Closes every open connection now.
    pub fn reset(&self) {
        self.reset_from(0);
    }

    /// Closes the open connections accepted as the `first`-th (0-based) or later; the earlier
    /// ones stay up (say, a probe connection, while the pool's connections break).
    pub fn reset_from(&self, first: usize) {
        self.state.send_modify(|s| {
            s.generation += 1;
            s.spare_below = first;
        });
    }

    /// New connections are accepted and closed at once (as a server that is not ready).
    pub fn close_new(&self, on: bool) {
        self.state.send_modify(|s| s.close_new = on);
    }

    /// Connections open through the proxy right now.
    pub fn open_now(&self) -> usize {
        self.open.now.load(Ordering::SeqCst)
    }

    /// The most connections ever open through the proxy at once.
    pub fn peak_open(&self) -> usize {
        self.open.peak.load(Ordering::SeqCst)
    }

    /// When each connection was accepted.
    pub fn accepted(&self) -> Vec<Instant> {
        self.accepted.lock().expect("lock").clone()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.reset();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Whether a state change closes connection `index` of generation `generation`.
fn cut(state: &State, generation: u64, index: usize) -> bool {
    state.generation != generation && index >= state.spare_below
}

async fn relay(client: TcpStream, upstream: u16, mut rx: watch::Receiver<State>, index: usize) {
    let generation = rx.borrow().generation;
    // While hung, do not even connect upstream: the client sees a silent peer.
    while rx.borrow().mode == Mode::Hang {
        if rx.changed().await.is_err() || cut(&rx.borrow(), generation, index) {
            return;
        }
    }
    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
        return;
    };
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let up = pump(cr, sw, rx.clone(), generation, index);
    let down = pump(sr, cw, rx.clone(), generation, index);
    tokio::select! {
        _ = up => {},
        _ = down => {},
        _ = async {
            loop {
                if rx.changed().await.is_err() || cut(&rx.borrow(), generation, index) {
                    return;
                }
            }
        } => {},
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut rx: watch::Receiver<State>,
    generation: u64,
    index: usize,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // Hold the bytes while hung: the other side sees nothing.
        while rx.borrow().mode == Mode::Hang {
            if rx.changed().await.is_err() || cut(&rx.borrow(), generation, index) {
                return;
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
