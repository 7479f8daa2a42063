//! [`CallRuntime`]: the tokio runtime a database's calls run on and its pooled sockets belong
//! to, and [`Run`], the future a caller awaits for one call.
//!
//! By default that runtime is warden's own (`io.rs`): a few threads per database, started with
//! the first connect, so that neither a busy caller nor the actors' arbiter slows calls down.
//! The price is two cross-thread wake-ups per call: the caller's thread hands the call to an
//! I/O thread, and that thread wakes the caller with the answer.
//!
//! An application that runs its own multi-threaded tokio runtime can host the pools there
//! instead ([`WardenBuilder::call_runtime`](crate::WardenBuilder::call_runtime)). A call
//! awaited on that runtime then runs inside the awaiting task itself, like a call on a pool
//! used directly: no hand-off at all. The probes, the supervision and health stay on warden's
//! arbiter, with the probe's own connection, so a saturated application still cannot delay
//! the detection of an outage or the health it publishes (`tests/call_runtime.rs` shows both).
//!
//! Whatever runs where, a call keeps the guarantees of a spawned one: dropping a [`Run`]
//! stops waiting, not the call (what is left of it is spawned on the call runtime), and a call
//! that can no longer run because its runtime is gone ends with a typed error
//! ([`WardenError::CallRuntimeGone`] for a hosting runtime, [`WardenError::Stopped`] for
//! warden's own), never a hang.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use futures_util::future::BoxFuture;
use tokio::runtime::{Handle, RuntimeFlavor};

use crate::{
    error::{Database, WardenError},
    settings::SettingsError,
};

/// Where a database's calls run and its pooled sockets live.
///
/// Shared behind an `Arc` of warden's own: each call keeps one while it runs, and cloning
/// tokio's `Handle` instead would write, on every call, the reference count tokio keeps on the
/// cache line of its scheduler's shared state, which every worker reads.
#[derive(Clone, Debug)]
pub struct CallRuntime(Arc<Place>);

#[derive(Debug)]
struct Place {
    handle: Handle,
    /// The application's runtime (`true`), or warden's own I/O threads.
    hosted: bool,
}

impl CallRuntime {
    /// Warden's own I/O threads.
    pub(crate) fn own(handle: Handle) -> Self {
        Self(Arc::new(Place {
            handle,
            hosted: false,
        }))
    }

    /// An application's runtime. Refuses a current-thread runtime: it runs tasks only while
    /// its owner blocks on it, so a call spawned there from another thread (a message to the
    /// actor's address, a caller elsewhere) could wait without bound, past its deadline.
    pub(crate) fn hosted(handle: Handle) -> Result<Self, SettingsError> {
        if handle.runtime_flavor() != RuntimeFlavor::MultiThread {
            return Err(SettingsError {
                key: "call_runtime".into(),
                value: format!("{:?}", handle.runtime_flavor()),
                reason: "calls need a multi-threaded tokio runtime (a current-thread one runs \
                         nothing unless its owner blocks on it)"
                    .into(),
            });
        }
        Ok(Self(Arc::new(Place {
            handle,
            hosted: true,
        })))
    }

    /// The runtime's handle: where to spawn, and the context to create a pool in.
    pub(crate) fn handle(&self) -> &Handle {
        &self.0.handle
    }

    /// Whether this is an application's runtime rather than warden's own threads.
    pub fn is_hosted(&self) -> bool {
        self.0.hosted
    }

    /// The error of a call that cannot run because this runtime has shut down.
    pub(crate) fn gone(&self, database: Database) -> WardenError {
        if self.0.hosted {
            WardenError::CallRuntimeGone { database }
        } else {
            // Warden's own threads end only when the actor is dropped.
            WardenError::Stopped { database }
        }
    }

    /// Whether the current thread is one of this runtime's (or blocks on it).
    fn is_current(&self) -> bool {
        Handle::try_current().is_ok_and(|current| current.id() == self.0.handle.id())
    }

    /// Runs an admitted call for a caller: on warden's own threads it starts now; on a hosting
    /// runtime it runs inside the task that awaits it, if that task runs there, and is spawned
    /// there otherwise (when first polled).
    pub(crate) fn run<T: Send + 'static>(
        self,
        call: BoxFuture<'static, Result<T, WardenError>>,
        database: Database,
    ) -> Run<T> {
        let state = if self.0.hosted {
            State::Unstarted(call)
        } else {
            State::Spawned(self.0.handle.spawn(call))
        };
        Run {
            runtime: self,
            database,
            state,
        }
    }

    /// Spawns an admitted call whose answer goes to `answer`; if the runtime drops it unrun
    /// (it has shut down), `answer` gets `lost` instead, so no caller waits for ever.
    pub(crate) fn spawn_answering<T: Send + 'static>(
        &self,
        call: BoxFuture<'static, T>,
        lost: T,
        answer: impl FnOnce(T) + Send + 'static,
    ) {
        let mut guard = AnswerGuard {
            answer: Some((Box::new(answer) as Answer<T>, lost)),
        };
        self.0.handle.spawn(async move {
            let value = call.await;
            if let Some((answer, _)) = guard.answer.take() {
                answer(value);
            }
        });
    }
}

/// Answers `lost` when dropped before the call answered, unless a panic drops it (the caller
/// then sees its answer channel closed, as for any panicking handler).
struct AnswerGuard<T> {
    /// Where the answer goes, and the one to give if the call never answers.
    answer: Option<(Answer<T>, T)>,
}

/// Sends a call's answer to its caller.
type Answer<T> = Box<dyn FnOnce(T) + Send>;

impl<T> Drop for AnswerGuard<T> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        if let Some((answer, lost)) = self.answer.take() {
            answer(lost);
        }
    }
}

/// One admitted call, as its caller awaits it: see [`CallRuntime::run`].
pub struct Run<T: Send + 'static> {
    runtime: CallRuntime,
    database: Database,
    state: State<T>,
}

enum State<T> {
    /// On a hosting runtime, not polled yet.
    Unstarted(BoxFuture<'static, Result<T, WardenError>>),
    /// Running inside the awaiting task.
    Inline(BoxFuture<'static, Result<T, WardenError>>),
    /// Running as a task of its own on the call runtime.
    Spawned(tokio::task::JoinHandle<Result<T, WardenError>>),
    /// Answered (or panicked while polled inline).
    Done,
}

impl<T: Send + 'static> Future for Run<T> {
    type Output = Result<T, WardenError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if let State::Unstarted(_) = this.state {
            let State::Unstarted(call) = std::mem::replace(&mut this.state, State::Done) else {
                unreachable!()
            };
            this.state = if this.runtime.is_current() {
                State::Inline(call)
            } else {
                State::Spawned(this.runtime.handle().spawn(call))
            };
        }
        match &mut this.state {
            State::Inline(_) => {
                // Taken out while polled: a panic leaves `Done`, and a panicked call is never
                // spawned again by `drop`.
                let State::Inline(mut call) = std::mem::replace(&mut this.state, State::Done)
                else {
                    unreachable!()
                };
                match call.as_mut().poll(cx) {
                    Poll::Ready(result) => Poll::Ready(result),
                    Poll::Pending => {
                        this.state = State::Inline(call);
                        Poll::Pending
                    }
                }
            }
            State::Spawned(task) => match Pin::new(task).poll(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(joined) => {
                    this.state = State::Done;
                    Poll::Ready(match joined {
                        Ok(result) => result,
                        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                        // Nothing aborts these tasks: the runtime shut down under the call.
                        Err(_) => Err(this.runtime.gone(this.database)),
                    })
                }
            },
            State::Unstarted(_) | State::Done => Poll::Ready(Err(this.runtime.gone(this.database))),
        }
    }
}

impl<T: Send + 'static> Drop for Run<T> {
    /// Dropping stops waiting, not the call: what is left of a call that was running inline
    /// (or never polled) runs on as a task of the call runtime. If that runtime is gone, the
    /// call is dropped, which releases its connection and its place in the shutdown drain.
    fn drop(&mut self) {
        match std::mem::replace(&mut self.state, State::Done) {
            State::Unstarted(call) | State::Inline(call) => {
                drop(self.runtime.handle().spawn(call));
            }
            State::Spawned(_) | State::Done => {}
        }
    }
}
