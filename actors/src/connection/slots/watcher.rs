//! The watcher of a pool's slots: one task that sleeps until the earliest deadline written
//! in them (or until told of an earlier one) and wakes the calls whose deadline has passed.

use std::{
    future::Future,
    sync::{atomic::Ordering, Arc},
    task::Poll,
    time::Duration,
};

use super::{Slots, NEVER};

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
pub(super) async fn watch(slots: Arc<Slots>) {
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
