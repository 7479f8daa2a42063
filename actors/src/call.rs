//! [`Call`]: a message that, once admitted, runs by itself on its database's call runtime
//! (warden's I/O threads by default, or the application's own: see `call_runtime.rs`).
//!
//! Both database actors, the breaker and health share one dedicated arbiter: a single thread,
//! which also runs every probe. A call's driver work (encoding, socket reads and writes,
//! decoding, converting rows to JSON) and a caller's closure would compete there with the
//! probes and with every refusal the actors answer; a closure that keeps its thread busy for
//! a second would hold them all for that second. So no call runs there: each database has an
//! I/O runtime of its own (`io.rs`), whose threads own its pool's sockets.
//!
//! Whoever admits a call starts it there through the same code: the actor's handler for a
//! message sent to its address, or a [`CallHandle`](crate::CallHandle) on the caller's own
//! thread, without the actor. Either way the call answers its caller directly.

use crate::{
    call_runtime::CallRuntime,
    connection::{ConnectionActor, Driver, Reply},
    error::WardenError,
};

/// A call to the database behind driver `D`, which runs on that database's I/O threads once
/// admitted: [`Sql`](crate::Sql), [`WithPool`](crate::WithPool),
/// [`Transaction`](crate::Transaction) and [`WithTransaction`](crate::WithTransaction) for
/// PostgreSQL; [`Cypher`](crate::Cypher), [`WithGraph`](crate::WithGraph) and
/// [`CypherTransaction`](crate::CypherTransaction) for the graph. Sealed: only warden's
/// messages implement it, so an admission stays warden's own.
pub trait Call<D: Driver>:
    actix::Message<Result = Result<Self::Output, WardenError>> + Send + sealed::Start<D>
{
    /// What the call returns.
    type Output: Send + 'static;
}

/// A driver's client whose calls run on a runtime of their own: the one its pooled sockets
/// belong to (warden's I/O threads, or the application's runtime: see `call_runtime.rs`).
pub trait IoClient {
    /// Where calls with this client run.
    fn io(&self) -> &CallRuntime;
}

// `Start` is reachable only as a supertrait of `Call`: outside this crate it can be neither
// named nor implemented, and its method not called, so the crate-private `Admitted` in its
// signature stays private in fact.
#[allow(private_interfaces)]
pub(crate) mod sealed {
    use futures_util::future::BoxFuture;

    use crate::connection::{Admitted, Driver};

    /// How an admitted call starts. Outside the crate this trait cannot be named, so nothing
    /// else can implement [`Call`](super::Call).
    pub trait Start<D: Driver>: actix::Message + Sized {
        /// The call, to run on the client's I/O runtime.
        fn start(self, admitted: Admitted<D::Client>) -> BoxFuture<'static, Self::Result>;
    }
}

/// Admits a call sent to the actor's address and starts it on the database's I/O threads, or
/// refuses it at once.
pub(crate) fn start<D, M>(
    actor: &ConnectionActor<D>,
    msg: M,
) -> Reply<Result<M::Output, WardenError>>
where
    D: Driver,
    D::Client: IoClient,
    M: Call<D>,
{
    match actor.admit_call() {
        Ok(admitted) => {
            let runtime = admitted.client().io().clone();
            Reply::Spawned {
                lost: Err(runtime.gone(D::DATABASE)),
                runtime,
                call: sealed::Start::start(msg, admitted),
            }
        }
        Err(refused) => Reply::Now(Err(refused)),
    }
}
