//! Where a test's warden runs its calls: on its own I/O threads (the default), or hosted on a
//! runtime the test plays the application with (`WardenBuilder::call_runtime`). Tests of a
//! guarantee run in both modes through [`Host`].

use std::future::Future;

use warden_actors::{Warden, WardenSettings};

/// Where calls run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Warden's own I/O threads.
    Own,
    /// An application's 2-worker tokio runtime (threads named `app-N`).
    Hosted,
}

/// The application side of a test: in `Hosted` mode, its runtime, which hosts warden's calls
/// and runs the test's callers.
pub struct Host {
    pub mode: Mode,
    runtime: Option<tokio::runtime::Runtime>,
}

/// A 2-worker runtime whose threads are named `app-N`, like a small application's.
pub fn app_runtime() -> tokio::runtime::Runtime {
    let n = std::sync::atomic::AtomicUsize::new(0);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name_fn(move || {
            format!(
                "app-{}",
                n.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            )
        })
        .enable_all()
        .build()
        .expect("the application's runtime")
}

impl Host {
    pub fn new(mode: Mode) -> Self {
        let runtime = (mode == Mode::Hosted).then(app_runtime);
        Self { mode, runtime }
    }

    /// The hosting runtime's handle, if any.
    pub fn handle(&self) -> Option<tokio::runtime::Handle> {
        self.runtime.as_ref().map(|rt| rt.handle().clone())
    }

    /// Starts a warden in this mode (in the current actix System).
    pub fn start(&self, settings: WardenSettings) -> Warden {
        let mut builder = Warden::builder(settings);
        if let Some(handle) = self.handle() {
            builder = builder.call_runtime(handle);
        }
        builder.start().expect("valid settings")
    }

    /// Starts a warden in this mode and waits until PostgreSQL is connected.
    pub async fn pg_started(&self, settings: WardenSettings) -> Warden {
        let warden = self.start(settings);
        super::pg_connected(&warden).await;
        warden
    }

    /// Runs a caller: on the hosting runtime (where a handle's calls run inside the caller's
    /// task), or as a task of the current runtime.
    pub fn spawn<F>(&self, caller: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match &self.runtime {
            Some(rt) => rt.spawn(caller),
            None => tokio::spawn(caller),
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        // Dropped inside the test's actix System: a runtime must not block there.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}
