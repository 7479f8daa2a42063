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
//! A call already holds one of the pool's slots while it runs (the semaphore bounds calls to
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
//! Taking a slot and giving it back is one atomic add on a count of free slots while there is
//! one to take. Only callers that find none wait in a tokio `Semaphore` (first come, first
//! served), which a release feeds only while someone waits: tokio's semaphore takes the lock
//! of its wait queue on every release, and sqlx's pool, which every call goes through next,
//! already takes its own.

use std::{
    cell::Cell,
    future::Future,
    sync::{
        atomic::{AtomicBool, AtomicIsize, AtomicU64, Ordering},
        Arc,
    },
    task::Poll,
    time::{Duration, Instant},
};

use crossbeam_utils::CachePadded;
use futures_util::task::AtomicWaker;
use tokio::sync::{Notify, Semaphore};

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
    /// Slots free to take, minus the callers waiting for one (each of those owes one). Every
    /// call writes it: on a line of its own, away from the words below that every call reads.
    free: CachePadded<AtomicIsize>,
    /// Where callers that found no free slot wait, first come, first served. Its permits are
    /// slots a release handed over because the count above was negative (someone waited).
    /// A waiter that gives up after its slot was handed over finds the permit back there
    /// (tokio returns a permit assigned to an `Acquire` that is dropped) and gives it back to
    /// the count (see `Owed`); a permit it cannot find yet, the next waiter takes.
    queue: Semaphore,
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
            free: CachePadded::new(AtomicIsize::new(count as isize)),
            queue: Semaphore::new(0),
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
        let mut free = self.free.load(Ordering::Relaxed);
        while free > 0 {
            match self.free.compare_exchange_weak(
                free,
                free - 1,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(self.claim()),
                Err(now) => free = now,
            }
        }
        None
    }

    /// Waits for a slot (first come, first served). Dropped while it waits (its deadline ran
    /// out), it gives its place up, or passes on the slot it was just handed.
    pub(crate) async fn hold(self: &Arc<Self>) -> Held<'_> {
        if self.free.fetch_sub(1, Ordering::Acquire) > 0 {
            return self.claim();
        }
        // Owed a slot: a release hands it over through `queue`.
        let owed = Owed(self);
        let handed = self.queue.acquire();
        handed
            .await
            .expect("the slots' queue is never closed")
            .forget();
        std::mem::forget(owed);
        self.claim()
    }

    /// Gives a slot back: to the count, or to the first waiter if someone waits.
    fn release(&self) {
        if self.free.fetch_add(1, Ordering::Release) < 0 {
            self.queue.add_permits(1);
        }
    }

    /// Slots free right now (in the count or handed over to no one yet).
    #[cfg(test)]
    pub(crate) fn available(&self) -> usize {
        self.free.load(Ordering::SeqCst).max(0) as usize + self.queue.available_permits()
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
        self.slots.release();
    }
}

/// A waiter's claim on the next slot given back; dropped only if the waiter gives up.
struct Owed<'a>(&'a Slots);

impl Drop for Owed<'_> {
    fn drop(&mut self) {
        let slots = self.0;
        let mut free = slots.free.load(Ordering::Relaxed);
        while free < 0 {
            // Not handed over yet: no longer owed.
            match slots.free.compare_exchange_weak(
                free,
                free + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(now) => free = now,
            }
        }
        // Handed over already: the permit is in `queue` (the dropped `Acquire` gave it back),
        // where the next waiter would take it. Taken back if it is there, it goes to the count,
        // so that calls keep the lock-free path.
        if let Ok(permit) = slots.queue.try_acquire() {
            permit.forget();
            slots.release();
        }
    }
}

/// Clears `watching` when the watcher task ends or is dropped (its runtime shut down), so that
/// the next call starts another.
struct Watching(Arc<Slots>);

impl Drop for Watching {
    fn drop(&mut self) {
        self.0.watching.store(false, Ordering::Release);
    }
}

/// The watcher: sleeps until the earliest deadline in the slots (or until told of an earlier
/// one), wakes the calls whose deadline has passed, and goes back to sleep.
async fn watch(slots: Arc<Slots>) {
    let alive = Watching(slots);
    let slots = &*alive.0;
    let sleep = tokio::time::sleep(Duration::ZERO);
    let mut sleep = std::pin::pin!(sleep);
    loop {
        let nudged = slots.nudge.notified();
        let mut nudged = std::pin::pin!(nudged);
        // Registered before the slots are read: a nudge from here on is not lost.
        nudged.as_mut().enable();
        if slots.closed.load(Ordering::Acquire) {
            return;
        }
        let mut next = slots.expire(slots.now());
        // Publish when the next look is, then read the slots again: a call that read the old
        // value (and so told nobody) wrote its deadline before this read.
        loop {
            slots.next_look.store(next, Ordering::SeqCst);
            let again = slots.expire(slots.now());
            if again >= next {
                break;
            }
            next = again;
        }
        if next == NEVER {
            nudged.await;
            continue;
        }
        let at = slots.base + Duration::from_nanos(next);
        sleep.as_mut().reset(tokio::time::Instant::from_std(at));
        std::future::poll_fn(|cx| {
            if sleep.as_mut().poll(cx).is_ready() || nudged.as_mut().poll(cx).is_ready() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }

    /// Runs a call that never ends in a slot with `budget`; returns how long it took to time out.
    async fn stuck_call(slots: &Arc<Slots>, budget: Duration) -> Duration {
        let started = Instant::now();
        let held = slots.try_hold().expect("a free slot");
        let out = held
            .within(started + budget, std::future::pending::<()>())
            .await;
        assert!(out.is_none(), "a call that never ends must time out");
        started.elapsed()
    }

    #[test]
    fn a_call_past_its_deadline_is_woken_and_a_call_in_time_is_not() {
        let rt = runtime();
        let slots = Arc::new(Slots::new(2));
        rt.block_on(async {
            // In time: the answer, whatever the watcher does meanwhile.
            let held = slots.try_hold().unwrap();
            let deadline = Instant::now() + Duration::from_secs(5);
            let answer = held
                .within(deadline, async {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    7
                })
                .await;
            assert_eq!(answer, Some(7));
            drop(held);

            let took = stuck_call(&slots, Duration::from_millis(100)).await;
            assert!(took >= Duration::from_millis(100), "{took:?}");
            assert!(took < Duration::from_secs(2), "{took:?}");
        });
        // Both slots are free again.
        assert_eq!(slots.available(), 2);
        assert!(slots.slots.iter().all(|s| !s.busy.load(Ordering::Relaxed)));
    }

    #[test]
    fn a_deadline_earlier_than_the_planned_look_is_kept() {
        let rt = runtime();
        let slots = Arc::new(Slots::new(2));
        rt.block_on(async {
            // A long call makes the watcher plan its next look 10 s ahead ...
            let long = {
                let slots = slots.clone();
                tokio::spawn(async move { stuck_call(&slots, Duration::from_secs(10)).await })
            };
            while slots.next_look.load(Ordering::SeqCst) == NEVER {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            // ... and a call with a shorter budget (a `query_timeout` lowered at run time)
            // still ends at its own deadline.
            let took = stuck_call(&slots, Duration::from_millis(150)).await;
            assert!(took >= Duration::from_millis(150), "{took:?}");
            assert!(took < Duration::from_secs(2), "{took:?}");
            long.abort();
        });
    }

    #[test]
    fn an_attempt_in_its_slot_is_held_once() {
        let rt = runtime();
        let slots = Arc::new(Slots::new(1));
        rt.block_on(async {
            let attempt = async {
                let big = [7u8; 300];
                tokio::task::yield_now().await;
                big[299]
            };
            let alone = std::mem::size_of_val(&attempt);
            let held = slots.try_hold().unwrap();
            let within = held.within(Instant::now() + Duration::from_secs(5), attempt);
            // The attempt and a reference to its slot, not the attempt twice (an `async fn`
            // keeps its argument beside the pinned copy it polls).
            assert!(std::mem::size_of_val(&within) <= alone + 16, "{alone}");
            assert_eq!(within.await, Some(7));
        });
    }

    #[test]
    fn calls_on_many_threads_each_get_their_own_slot() {
        let rt = runtime();
        let slots = Arc::new(Slots::new(3));
        let in_slot: Arc<[AtomicBool; 3]> = Arc::new(Default::default());
        rt.block_on(async {
            let tasks: Vec<_> = (0..12)
                .map(|_| {
                    let slots = slots.clone();
                    let in_slot = in_slot.clone();
                    tokio::spawn(async move {
                        for _ in 0..200 {
                            let held = slots.hold().await;
                            // No other call is in this slot.
                            assert!(!in_slot[held.index].swap(true, Ordering::SeqCst));
                            let deadline = Instant::now() + Duration::from_secs(5);
                            held.within(deadline, tokio::task::yield_now()).await;
                            in_slot[held.index].store(false, Ordering::SeqCst);
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
        });
        assert_eq!(slots.available(), 3);
    }

    /// Polls `fut` once, without a runtime: whether it is still waiting.
    fn pending<F: Future + Unpin>(fut: &mut F) -> bool {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        std::pin::Pin::new(fut).poll(&mut cx).is_pending()
    }

    #[test]
    fn waiters_are_served_in_order_and_one_that_gives_up_loses_no_slot() {
        let slots = Arc::new(Slots::new(1));

        // Gives up before a slot was handed over (its place in line is withdrawn), or just
        // after one was (the slot goes back to the count): either way the next call takes the
        // slot without waiting.
        for handed_over in [false, true] {
            let held = slots.try_hold().unwrap();
            let mut waiter = Box::pin(slots.hold());
            assert!(pending(&mut waiter));
            if handed_over {
                drop(held);
                drop(waiter);
            } else {
                drop(waiter);
                drop(held);
            }
            assert_eq!(slots.available(), 1, "handed over: {handed_over}");
            let again = slots.try_hold();
            assert!(
                again.is_some(),
                "back in the count (handed over: {handed_over})"
            );
        }

        // First come, first served; no one jumps the line while someone waits.
        let held = slots.try_hold().unwrap();
        let mut first = Box::pin(slots.hold());
        let mut second = Box::pin(slots.hold());
        assert!(pending(&mut first) && pending(&mut second));
        drop(held);
        assert!(slots.try_hold().is_none(), "the slot is the first waiter's");
        assert!(pending(&mut second));
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let Poll::Ready(held) = first.as_mut().poll(&mut cx) else {
            panic!("the first waiter has the slot")
        };
        drop(held);
        let Poll::Ready(held) = second.as_mut().poll(&mut cx) else {
            panic!("then the second")
        };
        drop(held);
        assert_eq!(slots.available(), 1);
        assert!(slots.try_hold().is_some());
    }

    #[test]
    fn callers_that_give_up_at_random_never_let_more_in_than_there_are_slots() {
        use rand::Rng;

        const SLOTS: usize = 3;
        let rt = runtime();
        let slots = Arc::new(Slots::new(SLOTS));
        let inside = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let served = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let gave_up = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        rt.block_on(async {
            let tasks: Vec<_> = (0..16)
                .map(|_| {
                    let (slots, inside) = (slots.clone(), inside.clone());
                    let (served, gave_up) = (served.clone(), gave_up.clone());
                    tokio::spawn(async move {
                        for _ in 0..300 {
                            let wait = Duration::from_micros(rand::rng().random_range(0..300));
                            let held = match slots.try_hold() {
                                Some(held) => held,
                                None => match tokio::time::timeout(wait, slots.hold()).await {
                                    Ok(held) => held,
                                    Err(_) => {
                                        gave_up.fetch_add(1, Ordering::Relaxed);
                                        continue;
                                    }
                                },
                            };
                            let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                            assert!(now <= SLOTS, "{now} callers in {SLOTS} slots");
                            tokio::task::yield_now().await;
                            inside.fetch_sub(1, Ordering::SeqCst);
                            served.fetch_add(1, Ordering::Relaxed);
                            drop(held);
                        }
                    })
                })
                .collect();
            let all = async {
                for t in tasks {
                    t.await.unwrap();
                }
            };
            // A slot lost (or let in twice, which `claim` would spin on) hangs the callers.
            tokio::time::timeout(Duration::from_secs(60), all)
                .await
                .expect("every caller finished");
        });
        let (served, gave_up) = (
            served.load(Ordering::Relaxed),
            gave_up.load(Ordering::Relaxed),
        );
        assert!(
            served > 0 && gave_up > 0,
            "served {served}, gave up {gave_up}"
        );
        // Every slot is back, and in the count (the lock-free path), not left in the queue.
        assert_eq!(slots.available(), SLOTS);
        let all: Vec<_> = (0..SLOTS).map(|_| slots.try_hold()).collect();
        assert!(all.iter().all(Option::is_some), "{SLOTS} slots at once");
    }

    #[test]
    fn the_watcher_starts_again_on_the_next_runtime_and_ends_with_the_link() {
        let slots = Arc::new(Slots::new(1));
        // The first runtime's watcher goes with it.
        runtime().block_on(stuck_call(&slots, Duration::from_millis(20)));
        let rt = runtime();
        rt.block_on(async {
            let took = stuck_call(&slots, Duration::from_millis(50)).await;
            assert!(took < Duration::from_secs(2), "{took:?}");
            // Closed, the watcher lets go of the slots.
            slots.close();
            for _ in 0..200 {
                if Arc::strong_count(&slots) == 1 {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            panic!("the watcher still holds the slots after close");
        });
    }
}
