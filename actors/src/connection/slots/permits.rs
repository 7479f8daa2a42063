//! How many calls may be in a pool's slots at once, and the line of those waiting for one.
//!
//! Taking a slot and giving it back is one atomic operation on a count of free slots while
//! there is one to take. Only callers that find none wait in a tokio `Semaphore` (first come,
//! first served), which a release feeds only while someone waits: tokio's semaphore takes the
//! lock of its wait queue on every release, and sqlx's pool, which every call goes through
//! next, already takes its own.
//!
//! Every slot is in exactly one place: in the count, held by a call, or a permit in the
//! semaphore on its way to a waiter. So no more callers are let in than there are slots.

use std::sync::atomic::{AtomicIsize, Ordering};

use crossbeam_utils::CachePadded;
use tokio::sync::Semaphore;

/// The count of a pool's free slots and the line of callers waiting for one.
pub(super) struct Permits {
    /// Slots free to take, minus the callers waiting for one (each of those owes one).
    free: CachePadded<AtomicIsize>,
    /// Where callers that found no free slot wait, first come, first served. Its permits are
    /// slots a release handed over because the count above was negative (someone waited).
    /// A waiter that gives up after its slot was handed over finds the permit back there
    /// (tokio returns a permit assigned to an `Acquire` that is dropped) and gives it back to
    /// the count (see `Owed`); a permit it cannot find yet, the next waiter takes.
    queue: Semaphore,
}

impl Permits {
    pub(super) fn new(count: usize) -> Self {
        Self {
            free: CachePadded::new(AtomicIsize::new(count as isize)),
            queue: Semaphore::new(0),
        }
    }

    /// Takes a slot if one is free and nobody waits for one: no future, no lock.
    pub(super) fn try_take(&self) -> bool {
        let mut free = self.free.load(Ordering::Relaxed);
        while free > 0 {
            match self.free.compare_exchange_weak(
                free,
                free - 1,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => free = now,
            }
        }
        false
    }

    /// Waits for a slot (first come, first served). Dropped while it waits (its deadline ran
    /// out), it gives its place up, or passes on the slot it was just handed.
    pub(super) async fn take(&self) {
        if self.free.fetch_sub(1, Ordering::Acquire) > 0 {
            return;
        }
        // Owed a slot: a release hands it over through `queue`.
        let owed = Owed(self);
        let handed = self.queue.acquire();
        handed
            .await
            .expect("the slots' queue is never closed")
            .forget();
        std::mem::forget(owed);
    }

    /// Gives a slot back: to the count, or to the first waiter if someone waits.
    pub(super) fn give_back(&self) {
        if self.free.fetch_add(1, Ordering::Release) < 0 {
            self.queue.add_permits(1);
        }
    }

    /// Slots free right now (in the count or handed over to no one yet).
    #[cfg(test)]
    pub(super) fn available(&self) -> usize {
        self.free.load(Ordering::SeqCst).max(0) as usize + self.queue.available_permits()
    }
}

/// A waiter's claim on the next slot given back; dropped only if the waiter gives up.
struct Owed<'a>(&'a Permits);

impl Drop for Owed<'_> {
    fn drop(&mut self) {
        let permits = self.0;
        let mut free = permits.free.load(Ordering::Relaxed);
        while free < 0 {
            // Not handed over yet: no longer owed.
            match permits.free.compare_exchange_weak(
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
        if let Ok(permit) = permits.queue.try_acquire() {
            permit.forget();
            permits.give_back();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        future::Future,
        sync::{atomic::AtomicUsize, Arc},
        task::Poll,
        time::Duration,
    };

    use super::super::{tests::runtime, Slots};
    use super::*;

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
        let inside = Arc::new(AtomicUsize::new(0));
        let served = Arc::new(AtomicUsize::new(0));
        let gave_up = Arc::new(AtomicUsize::new(0));
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
}
