//! The call slots of a pool, and the deadlines of the calls in them, kept by one watcher task
//! instead of a timer per call.
//!
//! Every call runs under its `query_timeout`. A tokio timer per call goes through the runtime's
//! timer driver twice (registered on the first poll that waits, cancelled when the call ends),
//! each time under the one mutex the whole runtime's timers share; on the hosted path, where a
//! `SELECT 1` costs the caller a few tens of µs of CPU, that was the largest single cost warden
//! added to the pool used directly, most of it the two workers contending for that lock
//! (`scripts/bench sql`, perf).
//!
//! A call already holds one of the pool's slots while it runs (`permits.rs` bounds calls to
//! the pool's size), so the slot is where its deadline goes: the call writes it into a cache
//! line of its own, and one watcher task, asleep until the earliest deadline written, wakes the
//! calls whose deadline has passed. Calls with the same `query_timeout` get their deadlines in
//! the order they start, so the watcher is told nothing while it is asleep: it wakes once per
//! `query_timeout` under load, not once per call. A call that ends in time writes only its own
//! slot and reads one word the watcher rarely writes.
//!
//! The watcher starts with the first call, on the runtime that call runs on (warden's I/O
//! threads or the application's runtime, whichever hosts the pool), and starts again with the
//! next call if that runtime has gone. It ends when the link is dropped.
//!
//! How many calls may be in the slots at once is counted apart, without a lock while a slot
//! is free (`permits.rs`).

use std::{
    cell::Cell,
    future::Future,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    task::Poll,
    time::Instant,
};

use crossbeam_utils::CachePadded;
use futures_util::task::AtomicWaker;
use tokio::sync::Notify;

mod permits;
mod watcher;

use permits::Permits;
use watcher::watch;

/// A slot's deadline word: no call in it.
const FREE: u64 = 0;
/// A slot's deadline word: the watcher found the call's deadline passed.
const EXPIRED: u64 = 1;
/// `next_look` while the watcher waits to be told of a deadline.
const NEVER: u64 = u64::MAX;

/// One place in the pool. Kept on cache lines of its own (`CachePadded`) so that a call writing
/// its own slot never invalidates a line another call (on another thread) is writing.
#[derive(Default)]
struct Slot {
    busy: AtomicBool,
    /// Nanoseconds after [`Slots::base`] (≥ 2), [`FREE`] or [`EXPIRED`].
    deadline: AtomicU64,
    /// The task of the call in this slot, woken by the watcher when its deadline passes.
    waker: AtomicWaker,
}

/// The pool's slots: how many calls may hold a pooled connection at once, and the deadline of
/// each call holding one.
pub(crate) struct Slots {
    /// How many more calls may come in, and the line of those waiting. Every call writes it:
    /// on a line of its own, away from the words below that every call reads.
    permits: Permits,
    slots: Box<[CachePadded<Slot>]>,
    base: Instant,
    /// When the watcher looks next, in nanoseconds after `base`; [`NEVER`] while it waits to
    /// be told. A call whose deadline comes before it tells the watcher.
    next_look: AtomicU64,
    /// Tells the watcher of an earlier deadline, or that the link is gone.
    nudge: Notify,
    /// Whether a watcher task is alive.
    watching: AtomicBool,
    closed: AtomicBool,
}

/// A slot held by a call; freed when dropped.
pub(crate) struct Held<'a> {
    slots: &'a Arc<Slots>,
    index: usize,
}

thread_local! {
    /// The slot this thread last held: tried first, so that a thread keeps writing lines its
    /// own cache already holds.
    static HINT: Cell<usize> = const { Cell::new(0) };
}

impl Slots {
    pub(crate) fn new(count: usize) -> Self {
        let count = count.max(1);
        Self {
            permits: Permits::new(count),
            slots: (0..count).map(|_| CachePadded::default()).collect(),
            base: Instant::now(),
            next_look: AtomicU64::new(NEVER),
            nudge: Notify::new(),
            watching: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        }
    }

    /// A slot now, if one is free and nobody waits for one: no future, no timer, no lock (the
    /// common case).
    pub(crate) fn try_hold(self: &Arc<Self>) -> Option<Held<'_>> {
        self.permits.try_take().then(|| self.claim())
    }

    /// Waits for a slot (first come, first served). Dropped while it waits (its deadline ran
    /// out), it gives its place up, or passes on the slot it was just handed.
    pub(crate) async fn hold(self: &Arc<Self>) -> Held<'_> {
        self.permits.take().await;
        self.claim()
    }

    /// Slots free right now (in the count or handed over to no one yet).
    #[cfg(test)]
    pub(crate) fn available(&self) -> usize {
        self.permits.available()
    }

    /// A free slot for a caller the count (or a hand-over) let in: there is always one, since
    /// at most as many callers are let in as there are slots, and each frees its slot before
    /// it gives it back.
    fn claim(self: &Arc<Self>) -> Held<'_> {
        let n = self.slots.len();
        let start = HINT.get() % n;
        loop {
            for i in (start..n).chain(0..start) {
                let slot = &self.slots[i];
                if !slot.busy.load(Ordering::Relaxed)
                    && slot
                        .busy
                        .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                        .is_ok()
                {
                    HINT.set(i);
                    return Held {
                        slots: self,
                        index: i,
                    };
                }
            }
            // Freed behind the scan while others claimed ahead of it: look again.
            std::hint::spin_loop();
        }
    }

    fn nanos(&self, at: Instant) -> u64 {
        let nanos = at.saturating_duration_since(self.base).as_nanos();
        u64::try_from(nanos).unwrap_or(NEVER - 1).max(EXPIRED + 1)
    }

    /// The watcher's clock: tokio's, so that a paused test clock moves deadlines as it moves
    /// tokio's timers.
    fn now(&self) -> u64 {
        self.nanos(tokio::time::Instant::now().into_std())
    }

    /// Marks every call whose deadline is at or before `now` as expired and wakes it; returns
    /// the earliest deadline still to come ([`NEVER`] if none).
    fn expire(&self, now: u64) -> u64 {
        let mut next = NEVER;
        for slot in self.slots.iter() {
            let deadline = slot.deadline.load(Ordering::SeqCst);
            if deadline <= EXPIRED {
                continue;
            }
            if deadline > now {
                next = next.min(deadline);
            } else if slot
                .deadline
                .compare_exchange(deadline, EXPIRED, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                // Fails if the call ended meanwhile (or another call took the slot).
                slot.waker.wake();
            }
        }
        next
    }

    /// Ends the watcher (the link is gone).
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.nudge.notify_one();
    }

    /// Starts the watcher on the current runtime unless one is alive.
    fn ensure_watcher(self: &Arc<Self>) {
        if self.watching.load(Ordering::Acquire) || self.watching.swap(true, Ordering::AcqRel) {
            return;
        }
        tokio::spawn(watch(Arc::clone(self)));
    }
}

impl Held<'_> {
    /// Runs `fut` until it ends or `deadline` passes (`None`).
    ///
    /// A plain function returning [`Within`], not an `async fn`: an `async fn` keeps its
    /// argument as passed beside the pinned copy it polls, so every call's future would hold
    /// its attempt twice (312 bytes more for an `Sql` call, whose box then no longer fits the
    /// allocator's per-thread cache of small chunks).
    pub(crate) fn within<F: Future>(&self, deadline: Instant, fut: F) -> Within<'_, F> {
        self.slots.ensure_watcher();
        let slot = &*self.slots.slots[self.index];
        let at = self.slots.nanos(deadline);
        slot.deadline.store(at, Ordering::SeqCst);
        // Either the watcher's look is due in time, or it is told; a watcher that has just
        // decided when to look reads the slots again after publishing it (see `watch`), so one
        // of the two sees the other.
        if at < self.slots.next_look.load(Ordering::SeqCst) {
            self.slots.nudge.notify_one();
        }
        Within { slot, fut }
    }
}

pin_project_lite::pin_project! {
    /// An attempt running in its slot until it ends (`Some`) or the watcher marks its deadline
    /// passed (`None`): see [`Held::within`].
    pub(crate) struct Within<'a, F> {
        slot: &'a Slot,
        #[pin]
        fut: F,
    }
}

impl<F: Future> Future for Within<'_, F> {
    type Output = Option<F::Output>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let slot = *this.slot;
        if slot.deadline.load(Ordering::Acquire) == EXPIRED {
            return Poll::Ready(None);
        }
        if let Poll::Ready(out) = this.fut.poll(cx) {
            return Poll::Ready(Some(out));
        }
        slot.waker.register(cx.waker());
        // Expired between the check above and the registration: the watcher woke the waker
        // from before (or none).
        if slot.deadline.load(Ordering::Acquire) == EXPIRED {
            return Poll::Ready(None);
        }
        Poll::Pending
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let slot = &self.slots.slots[self.index];
        slot.deadline.store(FREE, Ordering::Release);
        // Freed before it is given back, so the caller it goes to finds it free.
        slot.busy.store(false, Ordering::Release);
        self.slots.permits.give_back();
    }
}

#[cfg(test)]
mod tests;
