//! The shutdown steps, carried out: what the loop does for each [`Step`] the phase
//! machine returns.
//!
//! What it is: [`Shutdown`], the state a shutdown keeps (the phase, the budget, the
//! report, the handles' requests), and `Server::advance`, the one door through which
//! events reach the phase machine, with one method per step: `announce` (step 1),
//! `start_drain` (steps 3 and 4), `force` (step 7) and `finish` (steps 6 and 9).
//!
//! The shutdown sequence, as `server` numbers its steps:
//! 1. announce: log who asked; readiness answers 503, every response closes;
//! 2. the drain delay, if set: keep accepting and serving that long;
//! 3. accept what the listen backlog holds, then close the listener;
//! 4. close idle connections; active ones finish their request, then close;
//! 5. each close is a lingering close (the connection's own, in `conn`);
//! 6. no connection left: close the database pool, say "Bye.";
//! 7. the deadline first: answer 503 or cut whatever is left;
//! 8. a repeated request, signal or handle, is logged and ignored;
//! 9. the one-line report, the last line logged.
//!
//! What it is not: it does not decide when a step is due (that is `Phase::on`, in
//! `shutdown`), and it knows nothing of a connection's own drain rule (that is
//! `Conn::start_drain` and `Conn::force_close`): it calls them on every connection.
//!
//! Invariants: every step runs at most once per shutdown, because each is the answer to
//! one transition of the phase machine; `finish` is the only step that reads the clock
//! itself, and the only one that may block (on the pool, within `POOL_CLOSE_BOUND`).

use std::time::{Duration, Instant};

use super::Server;
use super::handle::Requests;
use super::report::Report;
use super::shutdown::{Budget, Event, Outcome, Phase, Step};

/// How long the pool may take to close after the drain (or the deadline). Idle workers
/// disconnect in milliseconds; this bounds a worker stuck in a query that ignores cancel.
const POOL_CLOSE_BOUND: Duration = Duration::from_secs(2);

/// Where the shutdown stands, what it may spend, and what it will report.
pub(super) struct Shutdown {
    pub(super) phase: Phase,
    budget: Budget,
    pub(super) report: Report,
    /// What the application's [`ShutdownHandle`](super::ShutdownHandle)s ask.
    pub(super) requests: Requests,
}

impl Shutdown {
    pub(super) fn new(budget: Budget) -> Shutdown {
        Shutdown {
            phase: Phase::Serving,
            budget,
            report: Report::default(),
            requests: Requests::default(),
        }
    }
}

impl Server {
    /// Feeds the shutdown phase machine and carries out the step it returns.
    pub(super) fn advance(&mut self, event: Event, now: Instant) {
        let budget = self.shutdown.budget;
        match self.shutdown.phase.on(event, budget) {
            Step::Nothing => {}
            Step::Announce { drain_now } => {
                self.announce(now);
                if drain_now {
                    self.start_drain(now);
                }
            }
            Step::IgnoreRepeat(by) => {
                log::info!("{by} again: already shutting down, ignored");
            }
            Step::StartDrain => self.start_drain(now),
            Step::Force => {
                self.force(now);
                self.finish();
            }
            Step::Finish => self.finish(),
        }
    }

    /// Step 1 of the shutdown: say so, and who asked. Readiness flips with the phase
    /// itself.
    fn announce(&mut self, now: Instant) {
        let by = match self.shutdown.phase {
            Phase::Delaying { by, .. } | Phase::Draining { by, .. } => by,
            _ => return,
        };
        let budget = self.shutdown.budget;
        log::info!(
            "{by}: starting graceful shutdown (draining, max {}ms)",
            budget.shutdown_timeout.as_millis()
        );
        if !budget.drain_delay.is_zero() {
            log::info!(
                "drain delay: still accepting for {}ms while /health answers 503",
                budget.drain_delay.as_millis()
            );
        }
        let report = &mut self.shutdown.report;
        report.began_at = Some(now);
        report.open_at_start = self.conns.slab.len();
    }

    /// Steps 3 and 4: take the backlog, close the listener, close idle connections.
    fn start_drain(&mut self, now: Instant) {
        if let Phase::Draining { by, at, .. } = self.shutdown.phase
            && !self.shutdown.budget.drain_delay.is_zero()
        {
            match self.accept.take_last_in_delay() {
                Some(t) => log::info!(
                    "drain delay over: last new connection arrived {}ms after {}",
                    t.saturating_duration_since(at).as_millis(),
                    by.noun()
                ),
                None => log::info!("drain delay over: no new connection arrived during it"),
            }
        }
        self.shutdown.report.drain_at = Some(now);
        // Clients in the backlog completed their handshake before we stopped: they are
        // ours to serve. Take them regardless of the connection limit (`accept_all`).
        self.accept.reopen();
        self.accept_all(now);
        self.accept.close(self.poll.registry());
        for token in self.conns.slab.tokens() {
            self.with_conn(token, now, |conn, cx| conn.start_drain(cx));
        }
    }

    /// Step 7: the deadline passed.
    fn force(&mut self, now: Instant) {
        let forced_before = self.shutdown.report.forced();
        if let Some(pool) = self.services.pool.as_ref() {
            let cancelled = pool.cancel_in_flight();
            if cancelled > 0 {
                log::warn!("cancelled {cancelled} database queries still running");
            }
        }
        for token in self.conns.slab.tokens() {
            self.with_conn(token, now, |conn, cx| Err(conn.force_close(cx)));
        }
        let forced = self.shutdown.report.forced() - forced_before;
        log::warn!("Drain timed out — forcing exit ({forced} connections answered 503 or cut)");
    }

    /// Step 6 (and the end of 7): release resources and log the report. The phase is
    /// `Done` already; a pool that misses its bound turns a clean drain's outcome into
    /// `StepFailed` through the phase machine, which keeps the outcome.
    fn finish(&mut self) {
        // The last step reads the clock itself: closing thousands of sockets, or the
        // pool's threads, can take far longer than the turn that started it, and the
        // report must say how long the shutdown really took.
        let now = Instant::now();
        // The pool closes after the last connection: no request can need it any more.
        let pool_started = now;
        if let Some(pool) = self.services.pool.take() {
            let closed = pool.close(POOL_CLOSE_BOUND);
            if closed.joined == closed.workers {
                log::info!(
                    "DB pool closed: {} workers disconnected and joined",
                    closed.workers
                );
            } else {
                log::warn!(
                    "DB pool close timed out: {} of {} workers joined",
                    closed.joined,
                    closed.workers
                );
                self.advance(Event::StepFailed, now);
            }
        }
        let pool_ms = pool_started.elapsed().as_millis();
        let Some(outcome) = self.shutdown.phase.outcome() else {
            return; // not reached: `finish` answers a transition into `Done`
        };
        if outcome == Outcome::Drained {
            let drain_ms = self
                .shutdown
                .report
                .drain_at
                .map_or(0, |t| now.saturating_duration_since(t).as_millis());
            log::info!("Drained requests and closed DB pool. Bye. (drain took {drain_ms}ms)");
        }
        self.shutdown.report.log(outcome, now, pool_ms);
    }
}
