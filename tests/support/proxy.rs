//! A TCP proxy in front of a real server, for faults the server itself cannot produce on cue.
//! It runs on its own thread and runtime, independent of the actix system under test, counts
//! and timestamps the connections it accepts, tracks the peak of connections open at once, and
//! stops when dropped. Faults, each on until turned off (`heal()` turns all of them off):
//!
//! - `hang()`: every connection, old and new, stops moving bytes; sockets stay open (a peer
//!   that vanished without closing: no FIN, no RST, nothing). `resume()` forwards again.
//! - `hang_new(true)`: connections accepted from now on get no answer (a peer that accepts and
//!   never answers); established ones keep working.
//! - `reset()`: every open connection closes now (a flap); `close_new(true)`: new connections
//!   are accepted and closed at once (a server that is not ready).
//! - `latency(d)`: every chunk is delivered `d` after it was read, each way, pipelined (the
//!   link is long, not slow).
//! - `bandwidth(Some(bytes_per_s))`: each direction is capped to that rate.
//! - `cut_results(Some(n))`: a server-to-client burst of at least `n` bytes (only a large
//!   result is that large) is forwarded in half, then the client gets a reset: a connection
//!   that breaks in the middle of a result.
//!
//! While a connection is held (hung), the proxy keeps reading what each side sends, so a client
//! that gives up and closes is noticed and stops counting as open, as a kernel would see it.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{
        tcp::{OwnedReadHalf, OwnedWriteHalf},
        TcpListener, TcpStream,
    },
    sync::{mpsc, watch},
};

/// How long after its accept a connection starts to count (and to relay).
const SETTLE: Duration = Duration::from_millis(2);

/// Connections open through the proxy right now, and the most ever open at once: what the
/// client holds, with no sampling (a connection counts from `SETTLE` after its accept until
/// the client closes it).
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

/// The faults in force; every connection watches it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Faults {
    /// No connection moves bytes.
    hang: bool,
    /// Connections accepted while this is on move no bytes until it is off.
    hang_new: bool,
    /// New connections are accepted and closed at once (nothing upstream).
    close_new: bool,
    /// Added to every chunk's delivery, each way.
    latency: Duration,
    /// Bytes per second each way.
    bandwidth: Option<u64>,
    /// A server-to-client burst at least this large is cut in half by a reset.
    cut_results: Option<usize>,
    /// Bumped by reset(): connections from an older generation close.
    generation: u64,
    /// A reset spares the connections accepted before this one (0: none is spared).
    spare_below: usize,
}

/// What a connection knows about itself, to judge the faults that apply to it.
#[derive(Debug, Clone, Copy)]
struct Conn {
    generation: u64,
    index: usize,
    accepted_hung: bool,
}

impl Conn {
    /// Whether the faults hold this connection's bytes.
    fn held(&self, f: &Faults) -> bool {
        f.hang || (self.accepted_hung && f.hang_new)
    }

    /// Whether a reset since it was accepted closes it.
    fn cut(&self, f: &Faults) -> bool {
        f.generation != self.generation && self.index >= f.spare_below
    }
}

/// The proxy; listening on 127.0.0.1:`port`.
pub struct Proxy {
    pub port: u16,
    faults: watch::Sender<Faults>,
    accepted: Arc<Mutex<Vec<Instant>>>,
    open: Arc<OpenCount>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Proxy {
    /// Forwards 127.0.0.1:`port` (a fresh port) to 127.0.0.1:`upstream`.
    pub fn start(upstream: u16) -> Self {
        let (faults_tx, faults_rx) = watch::channel(Faults::default());
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
                            let faults = *faults_rx.borrow();
                            if faults.close_new {
                                drop(client);
                                continue;
                            }
                            let conn = Conn {
                                generation: faults.generation,
                                index,
                                accepted_hung: faults.hang_new,
                            };
                            let (counter, rx) = (counter.clone(), faults_rx.clone());
                            tokio::spawn(async move {
                                // A client that closed one connection and then opened this one
                                // has its close in the kernel already; let the proxy see it
                                // first, or one reconnect would count as two connections.
                                tokio::time::sleep(SETTLE).await;
                                relay(client, upstream, rx, conn, Open::new(&counter)).await;
                            });
                        }
                    }
                }
            });
        });
        let port = port_rx.recv().expect("proxy port");
        Self {
            port,
            faults: faults_tx,
            accepted,
            open,
            shutdown: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// Stops moving bytes on every connection, old and new; sockets stay open.
    pub fn hang(&self) {
        self.faults.send_modify(|f| f.hang = true);
    }

    /// Forwards again after `hang()`.
    pub fn resume(&self) {
        self.faults.send_modify(|f| f.hang = false);
    }

    /// Connections accepted from now on (while on) get no answer; established ones flow.
    pub fn hang_new(&self, on: bool) {
        self.faults.send_modify(|f| f.hang_new = on);
    }

    /// Closes every open connection now.
    pub fn reset(&self) {
        self.reset_from(0);
    }

    /// Closes the open connections accepted as the `first`-th (0-based) or later; the earlier
    /// ones stay up (say, a probe connection, while the pool's connections break).
    pub fn reset_from(&self, first: usize) {
        self.faults.send_modify(|f| {
            f.generation += 1;
            f.spare_below = first;
        });
    }

    /// New connections are accepted and closed at once (as a server that is not ready).
    pub fn close_new(&self, on: bool) {
        self.faults.send_modify(|f| f.close_new = on);
    }

    /// Delivers every chunk `delay` after it was read, each way (zero: no added latency).
    pub fn latency(&self, delay: Duration) {
        self.faults.send_modify(|f| f.latency = delay);
    }

    /// Caps each direction to `bytes_per_second` (None: no cap).
    pub fn bandwidth(&self, bytes_per_second: Option<u64>) {
        self.faults
            .send_modify(|f| f.bandwidth = bytes_per_second.map(|b| b.max(1)));
    }

    /// Cuts a server-to-client burst of at least `min_bytes` in half with a reset (None: off).
    pub fn cut_results(&self, min_bytes: Option<usize>) {
        self.faults.send_modify(|f| f.cut_results = min_bytes);
    }

    /// Turns every fault off (open connections stay open).
    pub fn heal(&self) {
        self.faults.send_modify(|f| {
            *f = Faults {
                generation: f.generation,
                spare_below: f.spare_below,
                ..Faults::default()
            }
        });
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
        self.heal();
        self.reset();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Waits until `ok` holds for the faults in force; false if the proxy is gone.
async fn until(faults: &mut watch::Receiver<Faults>, ok: impl Fn(&Faults) -> bool) -> bool {
    loop {
        if ok(&faults.borrow_and_update()) {
            return true;
        }
        if faults.changed().await.is_err() {
            return false;
        }
    }
}

/// Bytes read from one side, with when they were read; empty bytes mean that side closed.
struct Chunk {
    read_at: Instant,
    bytes: Vec<u8>,
}

/// Relays one client connection; `open` counts it until the client closes it (bytes the proxy
/// still holds for the server then do not count as a connection the client holds).
async fn relay(
    mut client: TcpStream,
    upstream: u16,
    mut faults: watch::Receiver<Faults>,
    conn: Conn,
    open: Open,
) {
    // While held, do not even connect upstream (the client sees a silent peer), but keep what
    // the client sends for later, and notice when it gives up.
    let mut early = Vec::new();
    let mut buf = [0u8; 4096];
    while conn.held(&faults.borrow_and_update()) {
        tokio::select! {
            read = client.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => early.extend_from_slice(&buf[..n]),
            },
            changed = faults.changed() => {
                if changed.is_err() || conn.cut(&faults.borrow()) {
                    return;
                }
            }
        }
    }
    let Ok(mut server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
        return;
    };
    if server.write_all(&early).await.is_err() {
        return;
    }
    let (client_r, client_w) = client.into_split();
    let (server_r, server_w) = server.into_split();
    let (up_tx, up_rx) = mpsc::unbounded_channel();
    let (down_tx, down_rx) = mpsc::unbounded_channel();
    // Whichever ends first (a side closed, a reset, a cut) closes both sockets.
    tokio::select! {
        _ = read_side(client_r, up_tx, faults.clone(), conn, Some(open)) => {},
        _ = write_side(up_rx, server_w, faults.clone(), conn, false) => {},
        _ = read_side(server_r, down_tx, faults.clone(), conn, None) => {},
        _ = write_side(down_rx, client_w, faults.clone(), conn, true) => {},
        _ = until(&mut faults, |f| conn.cut(f)) => {},
    }
}

/// Reads one side into `to` until it closes (the client's side drops `open` then). Then the
/// writer delivers what is queued and the close, unless the connection is held: then nothing
/// is delivered and the connection ends now.
async fn read_side(
    mut from: OwnedReadHalf,
    to: mpsc::UnboundedSender<Chunk>,
    mut faults: watch::Receiver<Faults>,
    conn: Conn,
    open: Option<Open>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = from.read(&mut buf).await.unwrap_or(0);
        let chunk = Chunk {
            read_at: Instant::now(),
            bytes: buf[..n].to_vec(),
        };
        if to.send(chunk).is_err() || n == 0 {
            break;
        }
    }
    drop(open);
    until(&mut faults, |f| conn.held(f)).await;
}

/// Delivers chunks to the other side, applying the faults in force when each is delivered.
/// Returns when the side that was read closed, or after cutting a result.
async fn write_side(
    mut from: mpsc::UnboundedReceiver<Chunk>,
    mut to: OwnedWriteHalf,
    mut faults: watch::Receiver<Faults>,
    conn: Conn,
    to_client: bool,
) {
    while let Some(chunk) = from.recv().await {
        if !until(&mut faults, |f| !conn.held(f)).await {
            return;
        }
        let f = *faults.borrow();
        tokio::time::sleep_until((chunk.read_at + f.latency).into()).await;
        if chunk.bytes.is_empty() {
            let _ = to.shutdown().await;
            return;
        }
        let mut bytes = &chunk.bytes[..];
        if to_client && f.cut_results.is_some_and(|min| bytes.len() >= min) {
            let _ = to.write_all(&bytes[..bytes.len() / 2]).await;
            // Zero linger, and no shutdown on drop: closing sends an RST, not a FIN.
            let _ = to.as_ref().set_zero_linger();
            to.forget();
            return;
        }
        // Under a cap, write in slices of 50 ms worth, pausing after each.
        let slice = f
            .bandwidth
            .map_or(bytes.len(), |rate| (rate as usize / 20).max(1));
        while !bytes.is_empty() {
            let (now, rest) = bytes.split_at(slice.min(bytes.len()));
            if to.write_all(now).await.is_err() {
                return;
            }
            if let Some(rate) = f.bandwidth {
                let pause = Duration::from_secs_f64(now.len() as f64 / rate as f64);
                tokio::time::sleep(pause).await;
            }
            bytes = rest;
        }
    }
}
