//! A Unix datagram socket playing a service manager's side of a protocol: systemd's notify
//! socket (`NOTIFY_SOCKET`) or journald's socket. Every datagram is kept, with when it arrived.

use std::{
    os::unix::net::UnixDatagram,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc,
    },
    time::{Duration, Instant},
};

/// A datagram socket playing systemd's notify socket (or journald's), with every datagram
/// received kept with the time it arrived.
pub struct Listener {
    path: PathBuf,
    rx: mpsc::Receiver<(Instant, Vec<u8>)>,
    /// Each datagram as text (the notify protocol is text).
    pub seen: Vec<(Instant, String)>,
    /// Each datagram as sent (journald's values may be binary).
    pub raw: Vec<Vec<u8>>,
    stop: Arc<AtomicBool>,
    _dir: tempfile::TempDir,
}

impl Listener {
    /// Binds `<temp dir>/<name>`.
    pub fn bind(name: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join(name);
        let socket = UnixDatagram::bind(&path).expect("bind the datagram socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("read timeout");
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 256 * 1024];
            while !stopped.load(Ordering::Relaxed) {
                if let Ok(n) = socket.recv(&mut buf) {
                    if tx.send((Instant::now(), buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
            }
        });
        Self {
            path,
            rx,
            seen: Vec::new(),
            raw: Vec::new(),
            stop,
            _dir: dir,
        }
    }

    pub fn dir(&self) -> &Path {
        self._dir.path()
    }

    /// `NOTIFY_SOCKET=<path>`.
    pub fn notify_env(&self) -> (&'static str, String) {
        ("NOTIFY_SOCKET", self.path.display().to_string())
    }

    pub fn drain(&mut self, wait: Duration) -> bool {
        match self.rx.recv_timeout(wait) {
            Ok(first) => {
                for (at, bytes) in std::iter::once(first).chain(self.rx.try_iter()) {
                    self.seen
                        .push((at, String::from_utf8_lossy(&bytes).into_owned()));
                    self.raw.push(bytes);
                }
                true
            }
            Err(_) => false,
        }
    }

    /// Waits until a datagram received from now on has a line for which `pred` holds;
    /// returns that line and when it arrived. Panics with `what` and everything seen.
    pub fn expect(
        &mut self,
        within: Duration,
        what: &str,
        pred: impl Fn(&str) -> bool,
    ) -> (Instant, String) {
        self.expect_since(self.seen.len(), within, what, pred)
    }

    /// [`expect`](Self::expect), looking at datagrams from the `from`th on.
    pub fn expect_since(
        &mut self,
        from: usize,
        within: Duration,
        what: &str,
        pred: impl Fn(&str) -> bool,
    ) -> (Instant, String) {
        let deadline = Instant::now() + within;
        loop {
            let found = self.seen[from..]
                .iter()
                .find_map(|(at, d)| d.lines().find(|l| pred(l)).map(|l| (*at, l.to_owned())));
            if let Some(found) = found {
                return found;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "{what}: not seen within {within:?}; seen: {:#?}",
                self.lines()
            );
            self.drain(left.min(Duration::from_millis(100)));
        }
    }

    /// Collects for `period`.
    pub fn collect(&mut self, period: Duration) {
        let until = Instant::now() + period;
        while Instant::now() < until {
            self.drain(until.saturating_duration_since(Instant::now()));
        }
    }

    /// Every line received so far.
    pub fn lines(&self) -> Vec<String> {
        self.seen
            .iter()
            .flat_map(|(_, d)| d.lines().map(str::to_owned).collect::<Vec<_>>())
            .collect()
    }

    /// When each line equal to `line` arrived.
    pub fn times_of(&self, line: &str) -> Vec<Instant> {
        self.seen
            .iter()
            .filter(|(_, d)| d.lines().any(|l| l == line))
            .map(|(at, _)| *at)
            .collect()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
