//! The one lock helper of the simulator.

use std::sync::{Mutex, MutexGuard};

/// Locks a mutex. The simulation runs on one thread and no lock is held across an `await`, so
/// a lock is never contended and never poisoned unless a node already panicked.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().expect("a node panicked while holding a lock")
}
