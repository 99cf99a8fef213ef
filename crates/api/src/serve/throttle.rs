//! A log line per reason at most every few seconds, however many times the reason occurs: a flood
//! of refused connections must not become a flood of log lines.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// At most one report per reason in this time.
const REPORT_EVERY: Duration = Duration::from_secs(5);

pub(crate) struct Throttle {
    /// When the last report was made, and how many occurrences went unreported since.
    state: Mutex<(Option<Instant>, u64)>,
}

impl Throttle {
    pub(crate) fn new() -> Self {
        Throttle {
            state: Mutex::new((None, 0)),
        }
    }

    /// Called at each occurrence: `Some(occurrences held back since the last report)` when this
    /// one is to be reported.
    pub(crate) fn report(&self) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let (last, held_back) = &mut *state;
        let now = Instant::now();
        if last.is_some_and(|last| now < last + REPORT_EVERY) {
            *held_back += 1;
            return None;
        }
        *last = Some(now);
        Some(std::mem::take(held_back))
    }
}
