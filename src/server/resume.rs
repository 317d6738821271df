//! The resume list: connections that yielded with work left, to be called again next turn
//! (nginx's "posted events").
//!
//! What it is: two reused vectors of tokens — the list being filled for the next turn,
//! and the one being resumed this turn — so posting never allocates once the loop has
//! warmed up. A connection stops after `ROUNDS_PER_CALL` rounds so one busy client cannot
//! hold the loop; events are edge-triggered, so nothing would call it again for the bytes
//! already in its socket: this list does.
//!
//! What it is not: it never calls a connection (the loop does, through `with_conn`) and
//! never checks that a token is still open (the slab does: a token closed since it was
//! posted finds nothing, like a stale event). Lifecycle step: step 3 of a loop turn,
//! before the turn's events.
//!
//! Invariants: a connection is on the list at most once (its own `posted` mark, kept
//! like `scheduled` is for the timers); a connection posted during a turn is resumed on
//! the next turn, never the same one, so each gets one share a turn.

use mio::Token;

#[derive(Default)]
pub(super) struct ResumeList {
    /// Posted this turn: resumed next turn.
    posted: Vec<Token>,
    /// The list being resumed, kept between turns for its capacity.
    resuming: Vec<Token>,
}

impl ResumeList {
    /// Puts `token` on the list for the next turn unless `on_list` (the connection's own
    /// mark) says it is there already.
    pub(super) fn post(&mut self, token: Token, on_list: &mut bool) {
        if !*on_list {
            *on_list = true;
            self.posted.push(token);
        }
    }

    /// Nothing waits: the loop may sleep in `poll`.
    pub(super) fn is_empty(&self) -> bool {
        self.posted.is_empty()
    }

    /// This turn's list. Posting goes on into a fresh list for the next turn meanwhile;
    /// give this one back with [`ResumeList::done`] to keep its capacity.
    pub(super) fn take(&mut self) -> Vec<Token> {
        std::mem::replace(&mut self.posted, std::mem::take(&mut self.resuming))
    }

    /// Returns the list [`ResumeList::take`] handed out, emptied.
    pub(super) fn done(&mut self, mut list: Vec<Token>) {
        list.clear();
        self.resuming = list;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_list_holds_a_connection_once() {
        let mut list = ResumeList::default();
        let mut posted = false;
        list.post(Token(7), &mut posted);
        list.post(Token(7), &mut posted);
        assert!(posted);
        assert_eq!(list.take(), [Token(7)]);
    }

    #[test]
    fn resume_list_keeps_posts_made_during_a_turn_for_the_next_turn() {
        let mut list = ResumeList::default();
        let (mut a, mut b) = (false, false);
        list.post(Token(1), &mut a);
        let turn = list.take();
        assert!(list.is_empty(), "the turn took everything posted before it");
        // A connection resumed this turn yields again: it waits for the next turn.
        a = false;
        list.post(Token(1), &mut a);
        list.post(Token(2), &mut b);
        assert_eq!(turn, [Token(1)]);
        list.done(turn);
        assert_eq!(list.take(), [Token(1), Token(2)]);
    }
}
