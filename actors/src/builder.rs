//! [`WardenBuilder`]: how an application starts warden with more than settings, such as its own
//! tokio runtime to host the databases' calls on.

use tokio::runtime::Handle;

use crate::{call_runtime::CallRuntime, SettingsError, Warden, WardenSettings};

/// Starts a [`Warden`]; `Warden::builder(settings).start()` is [`Warden::start`].
#[must_use = "a builder does nothing until `start`"]
pub struct WardenBuilder {
    settings: WardenSettings,
    call_runtime: Option<Handle>,
}

impl WardenBuilder {
    pub(crate) fn new(settings: WardenSettings) -> Self {
        Self {
            settings,
            call_runtime: None,
        }
    }

    /// Hosts both databases' pools and calls on the application's own multi-threaded tokio
    /// runtime instead of warden's I/O threads (`postgres.io_threads`, `neo4j.io_threads`,
    /// which are then not started).
    ///
    /// A call awaited on that runtime then runs inside the awaiting task, with no thread
    /// hand-off: the throughput of a pool used directly (see the README's "Where calls run").
    /// The probes, the supervision, the breaker and health stay on warden's own arbiter, with
    /// the probe's own connection, so an application that saturates its runtime still cannot
    /// delay the detection of an outage or the health warden publishes; its own calls do wait
    /// for its busy threads, deadlines included (the task that wakes calls at their deadline
    /// needs a free worker too).
    ///
    /// Shut warden down before that runtime: once it is gone, calls end with
    /// [`WardenError::CallRuntimeGone`](crate::WardenError::CallRuntimeGone).
    /// [`start`](Self::start) refuses a current-thread runtime.
    pub fn call_runtime(mut self, runtime: Handle) -> Self {
        self.call_runtime = Some(runtime);
        self
    }

    /// Validates the settings, reads secret files, and starts the four actors in the current
    /// actix `System`, as [`Warden::start`] does.
    pub fn start(mut self) -> Result<Warden, SettingsError> {
        let hosted = self.call_runtime.map(CallRuntime::hosted).transpose()?;
        self.settings.load_secret_files()?;
        self.settings.validate()?;
        Warden::start_validated(self.settings, hosted)
    }
}
