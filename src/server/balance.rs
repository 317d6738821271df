//! Spreading new clients over the loops that share one listener.
//!
//! What it is: [`Balance`], each loop's view of how many connections every loop holds,
//! and the one rule a loop asks before it accepts ([`Balance::ahead`]): a loop that holds
//! clearly more than the least-loaded loop with room leaves the next client to that one.
//!
//! Why: every loop waits on the same accept queue, and the kernel wakes them all for a
//! new client; whichever runs first takes it. That is mostly the loop already on a CPU, so
//! a burst of connects lands on one loop (224 of wrk's 256 connections, measured on two
//! cores) while the others idle, and a multi-core server serves on one core. nginx's
//! answer is its `accept_mutex`; this one takes no lock: each loop publishes its count,
//! and the loop that holds back was woken by the same event as the one it defers to.
//!
//! Invariants: only a loop's own thread writes its count (relaxed stores, read by the
//! others as a hint, never for correctness); a loop never defers to a loop at its share of
//! `MAX_CONNECTIONS`, so some loop always accepts while any has room; the drain's last
//! accept of the backlog ignores the balance.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// How far ahead of the least-loaded loop a loop may go before it defers: a few, so one
/// loop's quick turn can take a small burst whole instead of waiting on another thread.
const SLACK: usize = 4;

/// One loop's view of every loop's connection count.
#[derive(Debug, Clone)]
pub(super) struct Balance {
    open: Arc<[AtomicUsize]>,
    index: usize,
    /// Each loop's share of `MAX_CONNECTIONS`.
    room: usize,
}

impl Balance {
    /// The views for `loops` loops, each with room for `room` connections.
    pub(super) fn new(loops: usize, room: usize) -> Vec<Balance> {
        let open: Arc<[AtomicUsize]> = (0..loops).map(|_| AtomicUsize::new(0)).collect();
        (0..loops)
            .map(|index| Balance {
                open: Arc::clone(&open),
                index,
                room,
            })
            .collect()
    }

    /// This loop now holds `n` connections. Its own thread only.
    pub(super) fn set_open(&self, n: usize) {
        self.open[self.index].store(n, Ordering::Relaxed);
    }

    /// This loop holds `mine` connections: true when another loop with room holds fewer
    /// than `mine - SLACK`, so that one should take the next client.
    pub(super) fn ahead(&self, mine: usize) -> bool {
        let least = self
            .open
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != self.index)
            .map(|(_, n)| n.load(Ordering::Relaxed))
            .filter(|&n| n < self.room)
            .min();
        least.is_some_and(|least| mine > least + SLACK)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loop_defers_only_to_a_loop_well_behind_with_room() {
        let views = Balance::new(3, 10);
        let (a, b, c) = (&views[0], &views[1], &views[2]);
        a.set_open(5);
        b.set_open(0);
        c.set_open(9);
        assert!(a.ahead(5), "5 against 0: defer");
        assert!(!a.ahead(4), "within the slack");
        assert!(!b.ahead(0));
        // The loop behind is full: nobody to defer to but the one left.
        b.set_open(10);
        assert!(!a.ahead(5), "c holds 9, a 5");
        c.set_open(10);
        assert!(!a.ahead(9), "every other loop is full");
    }

    #[test]
    fn one_loop_never_defers() {
        let views = Balance::new(1, 10);
        views[0].set_open(9);
        assert!(!views[0].ahead(9));
    }
}
