//! Tests of the slots and their deadlines (the lock-free count's own are in `permits.rs`).

use std::time::Duration;

use super::*;

pub(super) fn runtime() -> tokio::runtime::Runtime {
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
