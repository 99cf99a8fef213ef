//! Locks that stay usable after a holder panicked.
//!
//! Every lock these helpers take guards state that each update leaves whole (a count, a map
//! insert, a SQLite transaction that rolls back), so a panic elsewhere, which poisons the lock,
//! must not make the state unusable for everyone else: the guard is taken either way.

use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Locks `mutex`, poisoned or not.
pub fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Takes `lock` for reading, poisoned or not.
pub fn read<T: ?Sized>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

/// Takes `lock` for writing, poisoned or not.
pub fn write<T: ?Sized>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::sync::{Mutex, RwLock};

    use super::*;

    /// Poisons the lock by panicking while `hold` holds it.
    fn poison(hold: impl FnOnce() + std::panic::UnwindSafe) {
        assert!(std::panic::catch_unwind(hold).is_err());
    }

    #[test]
    fn a_poisoned_mutex_still_gives_its_value() {
        let counter = Mutex::new(1);
        poison(|| {
            let mut held = lock(&counter);
            *held += 1;
            panic!("holder panics");
        });
        assert!(counter.is_poisoned());
        *lock(&counter) += 1;
        assert_eq!(*lock(&counter), 3);
    }

    #[test]
    fn a_poisoned_rwlock_still_reads_and_writes() {
        let names = RwLock::new(vec!["a"]);
        poison(|| {
            let mut held = write(&names);
            held.push("b");
            panic!("holder panics");
        });
        assert!(names.is_poisoned());
        write(&names).push("c");
        assert_eq!(*read(&names), ["a", "b", "c"]);
    }
}
