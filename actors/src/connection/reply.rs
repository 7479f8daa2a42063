//! A database actor's answer to a call.

use actix::prelude::*;
use futures_util::future::BoxFuture;

use crate::call_runtime::CallRuntime;

/// A database actor's answer to a call: known at once (a refusal by the circuit or the link
/// state), sent back without spawning anything, or a future that runs by itself, detached
/// from the actor's context (so a restart cannot drop it), on the runtime its driver runs
/// calls on. Refusals are the path that must stay cheap while a database is down. The future
/// sends the answer itself: it goes straight back to the caller, not through the actor again.
pub enum Reply<T> {
    /// The answer, now.
    Now(T),
    /// The answer, later, from a future on the database's call runtime; or `lost` if that
    /// runtime has shut down and drops the future unrun.
    Spawned {
        /// Where the future runs.
        runtime: CallRuntime,
        /// The call.
        call: BoxFuture<'static, T>,
        /// The answer when the runtime is gone.
        lost: T,
    },
}

impl<A, M, T> actix::dev::MessageResponse<A, M> for Reply<T>
where
    A: Actor,
    M: Message<Result = T>,
    T: Send + 'static,
{
    fn handle(self, _: &mut A::Context, tx: Option<actix::dev::OneshotSender<T>>) {
        // A caller that stopped waiting has dropped its receiver: nobody to tell.
        let answer = |value| {
            if let Some(tx) = tx {
                let _ = tx.send(value);
            }
        };
        match self {
            Reply::Now(value) => answer(value),
            Reply::Spawned {
                runtime,
                call,
                lost,
            } => runtime.spawn_answering(call, lost, answer),
        }
    }
}
