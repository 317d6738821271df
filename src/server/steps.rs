//! The shutdown steps, carried out by one event loop: what the loop does for each
//! [`Step`] its phase machine returns.
//!
//! What it is: [`Shutdown`], the state a loop's shutdown keeps (the phase, the budget, the
//! report), and `Loop::advance`, the one door through which events reach the phase
//! machine, with one method per step: `announce` (step 1), `start_drain` (steps 3 and 4),
//! `force` (step 7) and `ended` (the loop's end, for steps 6 and 9).
//!
//! The shutdown sequence, as `server` numbers its steps:
//! 1. announce: readiness answers 503, every response closes; the loop tells the
//!    coordinator, which logs who asked once every loop has;
//! 2. the drain delay, if set: keep accepting and serving that long;
//! 3. accept what the listen backlog holds, then close this loop's copy of the listener
//!    (the socket closes with the last copy; the coordinator logs it then) — after a
//!    hand-over, close it without taking the backlog, which is the successor's;
//! 4. close idle connections; active ones finish their request, then close;
//! 5. each close is a lingering close (the connection's own, in `conn`);
//! 6. no connection left: the loop ends; after the last loop the coordinator closes the
//!    database pool and says "Bye.";
//! 7. the deadline first: answer 503 or cut whatever is left;
//! 8. a repeated request, signal or handle, is logged and ignored (by the coordinator,
//!    which orders each loop to stop once);
//! 9. the one-line report over every loop, logged by the coordinator.
//!
//! What it is not: it does not decide when a step is due (that is `Phase::on`, in
//! `shutdown`), and it knows nothing of a connection's own drain rule (that is
//! `Conn::start_drain` and `Conn::force_close`): it calls them on every connection.
//!
//! Invariants: every step runs at most once per shutdown, because each is the answer to
//! one transition of the phase machine; `ended` is the only step that reads the clock
//! itself; no step blocks.

use std::time::Instant;

use super::coordinator::{Ended, Note};
use super::event_loop::Loop;
use super::report::Report;
use super::shutdown::{Budget, Event, Outcome, Phase, Step};

/// Where a loop's shutdown stands, what it may spend, and when its drain began (for the
/// report; its counts are the loop's cells, `stats.rs`).
pub(super) struct Shutdown {
    pub(super) phase: Phase,
    budget: Budget,
    pub(super) drain_at: Option<Instant>,
}

impl Shutdown {
    pub(super) fn new(budget: Budget) -> Shutdown {
        Shutdown {
            phase: Phase::Serving,
            budget,
            drain_at: None,
        }
    }
}

impl Loop {
    /// Feeds the shutdown phase machine and carries out the step it returns.
    pub(super) fn advance(&mut self, event: Event, now: Instant) {
        let budget = self.shutdown.budget;
        match self.shutdown.phase.on(event, budget) {
            Step::Nothing | Step::Finish => {}
            Step::Announce { drain_now } => {
                self.announce();
                if drain_now {
                    self.start_drain(now);
                }
            }
            // The coordinator orders each loop to stop once; a repeat would be its bug.
            Step::IgnoreRepeat(by) => {
                log::debug!("loop {}: {by} again: ignored", self.index);
            }
            Step::StartDrain => self.start_drain(now),
            Step::Force => self.force(now),
        }
    }

    /// Step 1 of the shutdown: readiness flipped with the phase itself; tell the
    /// coordinator, which says so once every loop has.
    fn announce(&mut self) {
        log::debug!("loop {}: shutting down", self.index);
        let open = self.conns.slab.len() as u64;
        self.services.telemetry.cells.open_at_signal.set(open);
        self.board.note(Note::Announced(self.index));
    }

    /// Steps 3 and 4: take the backlog, close this loop's copy of the listener, close
    /// idle connections.
    pub(super) fn start_drain(&mut self, now: Instant) {
        self.shutdown.drain_at = Some(now);
        // Clients in the backlog completed their handshake before we stopped: they are
        // ours to serve. Take them regardless of the connection limit (`accept_all`) —
        // unless the socket outlives us (a successor holds it now, or systemd's socket
        // unit keeps it for the next start): then the queue is theirs to accept from.
        if !self.shutdown.phase.handed_over() && !self.queue_kept {
            self.accept.reopen();
            self.accept_all(now);
        }
        self.accept.close(self.poll.registry());
        log::debug!("loop {}: listener copy closed", self.index);
        self.board.note(Note::ListenerClosed {
            index: self.index,
            last_in_delay: self.accept.take_last_in_delay(),
        });
        for token in self.conns.slab.tokens() {
            self.with_conn(token, now, |conn, cx| conn.start_drain(cx));
        }
    }

    /// Step 7: the deadline passed.
    fn force(&mut self, now: Instant) {
        let forced_before = Report::of_loop(&self.services.telemetry.cells, None).forced();
        // Every loop's deadline is the same instant: the first to get here cancels every
        // query the shared pool is running, the others find none left.
        if let Some(pool) = self.services.pool.as_deref() {
            let cancelled = pool.cancel_in_flight();
            if cancelled > 0 {
                log::warn!("cancelled {cancelled} database queries still running");
            }
        }
        for token in self.conns.slab.tokens() {
            self.with_conn(token, now, |conn, cx| Err(conn.force_close(cx)));
        }
        let forced = Report::of_loop(&self.services.telemetry.cells, None).forced() - forced_before;
        log::debug!(
            "loop {}: deadline: {forced} connections answered 503 or cut",
            self.index
        );
    }

    /// The loop's end (its phase is `Done`): what the coordinator sums into the report.
    pub(super) fn ended(&mut self, outcome: Outcome) -> Ended {
        // The last step reads the clock itself: closing thousands of sockets can take far
        // longer than the turn that started it, and the report must say how long the
        // shutdown really took.
        let at = Instant::now();
        // This last turn's access-log lines, which the turn's end will not reach.
        if let Some(log) = self.services.telemetry.access_log.as_mut() {
            log.flush();
        }
        let report = Report::of_loop(&self.services.telemetry.cells, self.shutdown.drain_at);
        report.log_loop(
            self.index,
            self.services.telemetry.cells.accepted.get(),
            outcome,
        );
        Ended {
            outcome,
            report,
            at,
        }
    }
}
