//! The loops of the test servers (a scripted connection's reader, a fault proxy's
//! connections), each waiting in a poller of its own, woken at once when their server
//! stops or its settings change: one registry for both.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::net::Waker;

/// The wakers of the loops waiting now, by number.
#[derive(Debug, Default)]
pub(crate) struct Loops {
    /// Loops enlisted so far, which numbers them in the order they enlisted.
    enlisted: AtomicU64,
    waiting: Mutex<HashMap<u64, Waker>>,
}

impl Loops {
    /// Registers a loop's waker until the guard drops; returns the loop's number.
    pub(crate) fn enlist(self: &Arc<Loops>, waker: Waker) -> (u64, Enlisted) {
        let number = self.enlisted.fetch_add(1, Ordering::SeqCst);
        self.waiting.lock().insert(number, waker);
        (number, Enlisted(self.clone(), number))
    }

    /// Makes every registered loop's wait (running now or next) return.
    pub(crate) fn wake_all(&self) {
        for waker in self.waiting.lock().values() {
            waker.wake_poller();
        }
    }

    /// How many loops have enlisted so far.
    pub(crate) fn enlisted(&self) -> u64 {
        self.enlisted.load(Ordering::SeqCst)
    }
}

/// A loop's registration, removed when dropped.
#[derive(Debug)]
pub(crate) struct Enlisted(Arc<Loops>, u64);

impl Drop for Enlisted {
    fn drop(&mut self) {
        self.0.waiting.lock().remove(&self.1);
    }
}
