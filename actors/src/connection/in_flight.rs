//! The count of calls in flight, which the shutdown drain waits on, kept in per-thread stripes.
//!
//! Every call adds itself when admitted and takes itself off when it ends. One shared counter
//! meant two writes per call to a cache line that every worker of the runtime writes in turn,
//! on the line next to the link's state that every admission reads; and, at one caller, a
//! call that took the count back to zero woke the drain's `Notify` (a lock) although no drain
//! was waiting. So the count is kept like the call metrics (`metrics/striped.rs`): each call
//! adds to its thread's stripe and takes itself off the same stripe, and the drain sums the
//! stripes. Only while a drain waits does a call that ends wake it.

use std::{
    sync::atomic::{AtomicBool, AtomicUsize, Ordering},
    time::Duration,
};

use crossbeam_utils::CachePadded;
use tokio::sync::Notify;

use crate::metrics::striped::{stripe, STRIPES};

/// Calls in flight (see the module's docs).
#[derive(Default)]
pub(super) struct InFlightCount {
    stripes: [CachePadded<AtomicUsize>; STRIPES],
    /// Set once a drain waits: from then on, every call that ends wakes it.
    draining: CachePadded<AtomicBool>,
    ended: Notify,
}

impl InFlightCount {
    /// Counts a call in; returns the stripe to take it off again with [`InFlightCount::leave`].
    ///
    /// `SeqCst`, like the sums a drain reads: a caller that adds itself and then finds the
    /// link not stopped (after a full fence) is in every sum read after the link stopped.
    pub(super) fn enter(&self) -> usize {
        let stripe = stripe();
        self.stripes[stripe].fetch_add(1, Ordering::SeqCst);
        stripe
    }

    /// Counts a call out, from the stripe it entered on (whatever thread it ends on).
    pub(super) fn leave(&self, stripe: usize) {
        self.stripes[stripe].fetch_sub(1, Ordering::SeqCst);
        // Either this sees the flag and wakes the drain, or the drain set it later and its
        // sum sees this call gone.
        if self.draining.load(Ordering::SeqCst) {
            self.ended.notify_waiters();
        }
    }

    /// Calls in flight now.
    pub(super) fn get(&self) -> usize {
        self.stripes
            .iter()
            .map(|s| s.load(Ordering::SeqCst))
            .fold(0, usize::wrapping_add)
    }

    /// Waits until no call is in flight, for at most `timeout`; whether none is.
    pub(super) async fn drained(&self, timeout: Duration) -> bool {
        self.draining.store(true, Ordering::SeqCst);
        let wait = async {
            loop {
                // Created before the sum is read: a call that ends after it wakes it.
                let ended = self.ended.notified();
                if self.get() == 0 {
                    return;
                }
                ended.await;
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Instant};

    use super::*;

    #[test]
    fn calls_that_end_on_other_threads_leave_the_sum_at_zero() {
        let count = Arc::new(InFlightCount::default());
        // Entered on this thread, left on others, as calls that migrate between workers.
        let stripes: Vec<usize> = (0..64).map(|_| count.enter()).collect();
        assert_eq!(count.get(), 64);
        std::thread::scope(|s| {
            for chunk in stripes.chunks(16) {
                let count = &count;
                s.spawn(move || chunk.iter().for_each(|&st| count.leave(st)));
            }
        });
        assert_eq!(count.get(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_drain_waits_for_the_last_call_and_no_longer() {
        let count = Arc::new(InFlightCount::default());
        assert!(
            count.drained(Duration::from_millis(10)).await,
            "nothing in flight"
        );

        let stripe = count.enter();
        let ender = {
            let count = count.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(150)).await;
                count.leave(stripe);
            })
        };
        let started = Instant::now();
        assert!(count.drained(Duration::from_secs(5)).await);
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(150), "{took:?}");
        assert!(
            took < Duration::from_secs(2),
            "woken when the call ended: {took:?}"
        );
        ender.await.unwrap();

        // A call that never ends: the drain gives up at its timeout.
        let _stuck = count.enter();
        assert!(!count.drained(Duration::from_millis(50)).await);
        assert_eq!(count.get(), 1);
    }
}
