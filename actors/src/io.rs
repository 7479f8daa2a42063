//! The runtime PostgreSQL calls run on: a small multi-threaded tokio runtime that PostgresActor
//! owns, next to (not instead of) the dedicated arbiter.
//!
//! Why: the actors, their timers and their probes live on one dedicated arbiter, which is a
//! single thread. When every call's driver work (encoding, socket reads and writes, decoding,
//! JSON rows) ran there too, that one thread capped warden at what one core can drive, about
//! 60 % of a pool used directly from two threads (`scripts/bench sql`, profiled with `perf`:
//! 86 % of the samples on the arbiter thread). Whoever admits a call (the handler on the
//! arbiter, or a [`PostgresHandle`](crate::PostgresHandle) on the caller's thread; the check is
//! a few atomic loads) hands it to this runtime, whose threads also own the pool's sockets: the
//! pool is created inside it, so sockets belong to the runtime that opened them.

use tokio::runtime::{Builder, Handle, Runtime};

/// A multi-threaded tokio runtime that is shut down without blocking when dropped, so that it
/// may be dropped from inside another runtime (an actor is dropped on its arbiter).
pub(crate) struct IoRuntime {
    runtime: Option<Runtime>,
    handle: Handle,
}

impl IoRuntime {
    /// Starts `threads` worker threads named `name-N`.
    pub(crate) fn new(name: &str, threads: usize) -> std::io::Result<Self> {
        let prefix = name.to_owned();
        let counter = std::sync::atomic::AtomicUsize::new(0);
        let runtime = Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name_fn(move || {
                let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                format!("{prefix}-{n}")
            })
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        Ok(Self {
            runtime: Some(runtime),
            handle,
        })
    }

    /// Where to spawn calls, and the context to create the pool in.
    pub(crate) fn handle(&self) -> &Handle {
        &self.handle
    }
}

impl Drop for IoRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            // Calls still running here are past the shutdown drain; their callers get an
            // error rather than a hang (`Stopped` through a handle, a mailbox error through
            // the address).
            runtime.shutdown_background();
        }
    }
}
