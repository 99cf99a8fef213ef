//! A byte budget for messages in progress, shared by every chunk reader of a process.
//!
//! Each reader bounds its own reassembly buffers by [`Limits::max_buffered`](super::Limits), but a
//! server facing the internet also needs a bound on all of them together: a thousand connections
//! each holding its own maximum is more than the machine has. A reader given a [`SharedBudget`]
//! reserves a multi-chunk message's declared length from it when the message starts, and gives it
//! back when the message completes, is aborted or replaced, or the reader is dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Bytes that all messages in progress, in every reader sharing this budget, may hold together.
/// Cloning is cheap and shares the same counter.
#[derive(Debug, Clone)]
pub struct SharedBudget {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    max_bytes: usize,
    in_use: AtomicUsize,
}

impl SharedBudget {
    /// A budget of `max_bytes`, none of it in use.
    pub fn new(max_bytes: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                max_bytes,
                in_use: AtomicUsize::new(0),
            }),
        }
    }

    /// The bytes all readers may hold together.
    pub fn max_bytes(&self) -> usize {
        self.inner.max_bytes
    }

    /// The bytes reserved now, by all readers together.
    pub fn in_use(&self) -> usize {
        self.inner.in_use.load(Ordering::Relaxed)
    }

    /// Takes `bytes` if they fit; all or nothing.
    pub(crate) fn try_reserve(&self, bytes: usize) -> bool {
        let max = self.inner.max_bytes;
        // A compare-and-swap loop, not `fetch_add` then undo: readers racing for the last bytes must
        // never see the counter above the maximum, nor refuse each other for a sum never committed.
        self.inner
            .in_use
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|total| *total <= max)
            })
            .is_ok()
    }

    /// Gives back `bytes` reserved earlier.
    pub(crate) fn release(&self, bytes: usize) {
        // Saturating, so a bookkeeping slip could never wrap the counter to "full forever".
        let _ = self
            .inner
            .in_use
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                Some(used.saturating_sub(bytes))
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserves_up_to_the_maximum_and_releases() {
        let budget = SharedBudget::new(100);
        let other = budget.clone();
        assert!(budget.try_reserve(60));
        assert!(!other.try_reserve(41), "all or nothing");
        assert_eq!(budget.in_use(), 60);
        assert!(other.try_reserve(40));
        assert_eq!(budget.in_use(), 100);
        assert!(!budget.try_reserve(1));
        budget.release(60);
        assert_eq!(other.in_use(), 40);
        assert!(!budget.try_reserve(usize::MAX), "an overflowing sum is refused");
        other.release(40);
        assert_eq!(budget.in_use(), 0);
        assert_eq!(budget.max_bytes(), 100);
    }

    #[test]
    fn threads_never_take_more_than_the_maximum() {
        let budget = SharedBudget::new(1000);
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let budget = budget.clone();
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        if budget.try_reserve(7) {
                            assert!(budget.in_use() <= 1000);
                            budget.release(7);
                        }
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.join().unwrap();
        }
        assert_eq!(budget.in_use(), 0);
    }
}
