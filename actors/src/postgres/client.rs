//! What calls get from the PostgreSQL driver: the client (the shared pool, the runtime its
//! sockets belong to, how its errors map) and the moment since which its idle connections are
//! trusted. `driver.rs` creates it on the first connect.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use futures_util::future::BoxFuture;
use sqlx::PgPool;

use crate::{
    call::IoClient,
    call_runtime::CallRuntime,
    error::WardenError,
    postgres::errors::{from_sqlx, PgBounds},
    postgres::session::Untrusted,
    secret::Secret,
};

/// What calls get: the shared pool, the runtime its sockets belong to (where calls run), the
/// moment since which its idle connections are trusted, and what mapping its errors needs.
///
/// Every admitted call clones it and drops it again, from whichever thread the caller is on:
/// one reference count for the whole, rather than one per field, keeps that to a single
/// atomic add and subtract on a line the threads share.
#[derive(Clone)]
pub struct PgClient(pub(super) Arc<PgShared>);

/// `make()`'s value in a box allocated before `make` runs, so that the compiler can write the
/// value straight into it instead of building it on the stack and copying it in.
#[inline(always)]
fn boxed_in_place<T>(make: impl FnOnce() -> T) -> Box<T> {
    Box::write(Box::new_uninit(), make())
}

/// What a [`PgClient`] points to.
///
/// Aligned to its own cache lines: every call clones and drops a [`PgClient`], and with the
/// reference counts on the line that holds `pool` and `trust`, each of those writes (from
/// whichever worker runs the call) made the next call on another worker miss on the fields it
/// reads.
#[repr(align(128))]
pub struct PgShared {
    pub(super) pool: PgPool,
    pub(super) io: CallRuntime,
    pub(super) trust: Arc<TrustedSince>,
    pub(super) untrusted: Arc<Untrusted>,
    pub(super) bounds: PgBounds,
    pub(super) secrets: Arc<Vec<Secret>>,
}

impl std::ops::Deref for PgClient {
    type Target = PgShared;

    fn deref(&self) -> &PgShared {
        &self.0
    }
}

impl PgShared {
    /// Checks a connection out of the shared pool.
    ///
    /// sqlx's acquire future is about 8.6 KB (it holds a whole connect inline). A future's size
    /// is the size of everything it may hold across an `.await`, so awaited inline it would make
    /// every future above it at least that big: the attempt, its deadline, the retries and the
    /// call, which its caller boxes (18 KB per `Sql` call before this was a plain function,
    /// most of it never touched, but allocated, and a cache's worth of lines for the allocator
    /// to hand out each time). So it is boxed here, where it is created, by a plain function:
    /// no future of warden's has it in its type, and an `Sql` call's future stays under 1 KB.
    /// `Box::pin(self.pool.acquire())` would build the 8.6 KB future on the stack and copy it
    /// into the box on every call (a memcpy counter preloaded into `scripts/bench sql` saw one
    /// 8,656-byte copy per call); the box is allocated first and the future written into it.
    pub(crate) fn acquire(
        &self,
    ) -> BoxFuture<'static, Result<sqlx::pool::PoolConnection<sqlx::Postgres>, sqlx::Error>> {
        Box::into_pin(boxed_in_place(|| self.pool.acquire()))
    }

    /// Maps a driver error; a connection-class one withdraws trust from every idle connection,
    /// so that the next acquires ping them instead of handing out more dead ones.
    pub(crate) fn error(&self, e: &sqlx::Error) -> WardenError {
        let e = from_sqlx(e, self.bounds, &self.secrets);
        if e.is_connection_loss() {
            self.trust.mark();
        }
        e
    }
}

impl IoClient for PgClient {
    fn io(&self) -> &CallRuntime {
        &self.io
    }
}

/// The moment since which idle pooled connections are trusted, readable from any thread.
pub(super) struct TrustedSince {
    base: Instant,
    /// Nanoseconds after `base`.
    at: AtomicU64,
}

impl TrustedSince {
    pub(super) fn new() -> Self {
        Self {
            base: Instant::now(),
            at: AtomicU64::new(0),
        }
    }

    /// Trusts only connections released from now on.
    pub(super) fn mark(&self) {
        let nanos = u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.at.store(nanos, Ordering::Release);
    }

    /// Time since trust was last withdrawn.
    pub(super) fn elapsed(&self) -> Duration {
        let at = Duration::from_nanos(self.at.load(Ordering::Acquire));
        self.base.elapsed().saturating_sub(at)
    }
}
