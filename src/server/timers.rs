//! Wake-ups for connections, as a min-heap of `(when, token)`.
//!
//! What it is: the loop's one timer queue. Each connection says when it next needs
//! attention ([`crate::conn::Conn::deadline`]); the loop keeps the earliest of those in a
//! heap, and the poll timeout runs to the heap's top.
//!
//! Why lazy: a deadline that moves *later* (an idle timer reset by a new request) is not
//! pushed again; when the old, earlier entry fires, the connection finds nothing due and
//! is rescheduled at its real deadline. Only a deadline that moves *earlier* is pushed.
//! So a busy keep-alive connection costs no heap work per request. The price is stale
//! entries (superseded ones, and those of closed connections), which would otherwise wait
//! for their time: the loop drops them with [`Timers::retain`] once they outnumber the
//! live connections.
//!
//! Invariant: never reads the clock; `now` is passed in.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use mio::Token;

#[derive(Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<(Instant, Token)>>,
}

impl Timers {
    /// Makes sure a wake-up at `at` (or earlier) is queued. `scheduled` is the earliest
    /// entry already queued for this token, kept by the caller.
    pub fn schedule(&mut self, token: Token, at: Option<Instant>, scheduled: &mut Option<Instant>) {
        if let Some(at) = at
            && scheduled.is_none_or(|s| at < s)
        {
            self.heap.push(Reverse((at, token)));
            *scheduled = Some(at);
        }
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Keeps only the entries `keep` accepts.
    pub fn retain(&mut self, mut keep: impl FnMut(Instant, Token) -> bool) {
        self.heap.retain(|Reverse((at, token))| keep(*at, *token));
    }

    /// Pops the next entry due at `now`, if any.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Instant, Token)> {
        match self.heap.peek() {
            Some(Reverse((at, _))) if *at <= now => self.heap.pop().map(|Reverse(e)| e),
            _ => None,
        }
    }

    /// The earliest entry, for the poll timeout.
    pub fn next_at(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timers_push_only_earlier_deadlines() {
        let t0 = Instant::now();
        let mut timers = Timers::default();
        let mut scheduled = None;
        timers.schedule(Token(1), Some(t0 + Duration::from_secs(5)), &mut scheduled);
        timers.schedule(Token(1), Some(t0 + Duration::from_secs(9)), &mut scheduled);
        assert_eq!(timers.heap.len(), 1, "a later deadline is not pushed");
        timers.schedule(Token(1), Some(t0 + Duration::from_secs(1)), &mut scheduled);
        assert_eq!(timers.heap.len(), 2);
        assert_eq!(timers.next_at(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(timers.pop_due(t0), None);
        assert_eq!(
            timers.pop_due(t0 + Duration::from_secs(1)),
            Some((t0 + Duration::from_secs(1), Token(1)))
        );
    }

    #[test]
    fn retain_drops_what_it_is_told_and_keeps_the_order() {
        let t0 = Instant::now();
        let mut timers = Timers::default();
        for i in 0..10u64 {
            let mut scheduled = None;
            let at = t0 + Duration::from_secs(10 - i);
            timers.schedule(Token(i as usize), Some(at), &mut scheduled);
        }
        timers.retain(|_, token| token.0 % 2 == 0);
        assert_eq!(timers.len(), 5);
        let late = t0 + Duration::from_secs(60);
        let order: Vec<usize> = std::iter::from_fn(|| timers.pop_due(late))
            .map(|(_, token)| token.0)
            .collect();
        assert_eq!(order, [8, 6, 4, 2, 0], "earliest first");
    }
}
