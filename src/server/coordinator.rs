//! The coordinator: one shutdown for every event loop.
//!
//! What it is: what there is one of — the signals, the application's shutdown requests,
//! the database pool, the report and the outcome — on the thread that called
//! [`Server::run`](super::Server::run). That thread also runs loop 0, so the coordinator's
//! `Poll` (signals, and the [`Board`]'s waker for requests and loops' notes) is nested in
//! loop 0's, which calls [`Coordinator::turn`] when it is readable: `WORKERS=1` is one
//! thread, as a single loop always was. Once loop 0 has ended (or died) the coordinator
//! waits in its own poll ([`Coordinator::run`]) for the others. Either way it
//! - on a SIGHUP while serving, starts a successor and keeps serving until it is ready or
//!   has failed (`supervise.rs`, which also speaks to systemd);
//! - on the first stop (a signal, the application's request, a loop that died, or a
//!   successor ready) sends every loop the same order ([`Orders`]): who asked and *when*,
//!   so every loop's drain delay and deadline count from the one instant;
//! - says each step once, when every loop has taken it: `starting graceful shutdown` when
//!   every loop has flipped its readiness, `listener closed` when every copy of the
//!   listener is closed (the socket is closed only then);
//! - after the last loop has ended, closes the pool, logs `Bye.` and the one report
//!   summing the loops, and returns the worst outcome ([`Outcome::worst`]).
//!
//! What it is not: it serves no connection and decides nothing about one; each loop runs
//! its own phase machine (`shutdown.rs`) on its own connections. A turn never blocks (it
//! runs inside loop 0); only `finish`, after every loop has ended, waits on the pool.
//!
//! Where the shutdown stands, as the coordinator sees it:
//!
//! ```text
//!   Serving ──first stop: order every loop──▶ Ordered ──every loop announced──▶ Announced
//!   Announced ──every copy of the listener closed──▶ Closed ──every loop ended──▶ (run returns)
//! ```
//!
//! Invariants: every loop gets one stop order, with the instant of the first request; a
//! loop that ends without being asked (a panic: a bug) stops the others rather than leave
//! the process half-alive, and makes the outcome [`Outcome::LoopDied`]; the pool closes
//! only once every loop has ended, so no request can need it any more.

use std::any::Any;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token, Waker};

use super::handle::Requests;
use super::report::Report;
use super::shutdown::{Budget, Outcome, Source};
use super::signals::{Asked, Signals, asked};
use super::supervise::{Succession, Supervision};
use crate::access_log::Writer;
use crate::db::Pool;
use crate::handler::Inbox;
use crate::stats::{Phase, Stats};

/// The signals' token in the coordinator's poll.
pub(super) const SIGNALS: Token = Token(0);
/// The board's waker in the coordinator's poll.
pub(super) const BOARD: Token = Token(1);
/// A starting successor's notify socket in the coordinator's poll.
const SUCCESSOR: Token = Token(2);

/// How long the access log's writer may take to write what the loops left it, after the
/// last loop: an output that does not take it by then (a stalled pipe) loses it, rather
/// than hold the exit.
const ACCESS_LOG_FLUSH_BOUND: Duration = Duration::from_secs(1);

/// How long the pool may take to close after the drain (or the deadline). Idle workers
/// disconnect in milliseconds; this bounds a worker stuck in a query that ignores cancel.
const POOL_CLOSE_BOUND: Duration = Duration::from_secs(2);

/// What a loop tells the coordinator, in the order it happens.
pub(super) enum Note {
    /// The loop took the stop order: its readiness answers 503.
    Announced(usize),
    /// The loop accepted its backlog and closed its copy of the listener.
    ListenerClosed {
        index: usize,
        /// When its last client accepted during the drain delay arrived, if one did.
        last_in_delay: Option<Instant>,
    },
    /// The loop's thread is ending: how its shutdown went, or why it died.
    Exited {
        index: usize,
        ended: Result<Ended, String>,
    },
}

/// How a loop's shutdown went: its outcome, its share of the report, when it ended.
pub(super) struct Ended {
    pub(super) outcome: Outcome,
    pub(super) report: Report,
    pub(super) at: Instant,
}

/// Where the loops and the application's handles leave word for the coordinator: notes
/// behind a lock, the handles' request flag, and the waker that makes its poll return.
pub(super) struct Board {
    notes: Mutex<Vec<Note>>,
    /// What the application's [`ShutdownHandle`](super::ShutdownHandle)s ask.
    pub(super) requests: Requests,
    waker: Waker,
}

impl Board {
    pub(super) fn new(waker: Waker) -> Board {
        Board {
            notes: Mutex::new(Vec::new()),
            requests: Requests::default(),
            waker,
        }
    }

    /// Leaves a note and wakes the coordinator. A few notes per loop per shutdown: never
    /// on the request path.
    pub(super) fn note(&self, note: Note) {
        self.notes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(note);
        self.wake();
    }

    /// Makes the coordinator's `poll` return.
    pub(super) fn wake(&self) {
        // Failing to wake means the coordinator is gone; nobody is left to tell.
        let _ = self.waker.wake();
    }

    fn take_notes(&self) -> Vec<Note> {
        std::mem::take(&mut *self.notes.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// The coordinator's order to one loop: stop, for whoever asked, counting from when they
/// asked. Delivered through the loop's inbox waker, which replies ring too.
pub(super) struct Orders {
    stop: Mutex<Option<(Source, Instant)>>,
    inbox: Arc<Inbox>,
}

impl Orders {
    pub(super) fn new(inbox: Arc<Inbox>) -> Orders {
        Orders {
            stop: Mutex::new(None),
            inbox,
        }
    }

    fn stop(&self, by: Source, at: Instant) {
        *self.stop.lock().unwrap_or_else(PoisonError::into_inner) = Some((by, at));
        self.inbox.wake();
    }

    /// The order, once: the loop takes it when its waker rings.
    pub(super) fn take(&self) -> Option<(Source, Instant)> {
        self.stop
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

/// Where one loop stands, as far as its notes have told; ordered, each a later step.
enum Progress {
    Serving,
    Announced,
    ListenerClosed,
    Exited(Result<Ended, String>),
}

impl Progress {
    /// How far along: a loop that ended (even by dying) has passed every step.
    fn rank(&self) -> u8 {
        match self {
            Progress::Serving => 0,
            Progress::Announced => 1,
            Progress::ListenerClosed => 2,
            Progress::Exited(_) => 3,
        }
    }
}

/// Where the shutdown of every loop stands (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Serving,
    /// Every loop was ordered to stop; waiting for each to flip its readiness.
    Ordered {
        by: Source,
        at: Instant,
    },
    /// Every loop announced; waiting for every copy of the listener to close.
    Announced {
        by: Source,
        at: Instant,
    },
    /// The listener is closed; waiting for every loop to end.
    Closed {
        by: Source,
        at: Instant,
    },
}

/// The coordinator's state; see the module doc.
pub(super) struct Coordinator {
    poll: Poll,
    events: Events,
    signals: Signals,
    pub(super) board: Arc<Board>,
    orders: Vec<Arc<Orders>>,
    loops: Vec<Progress>,
    stage: Stage,
    budget: Budget,
    /// The database pool every loop shares; `Server::bind` puts it here last.
    pub(super) pool: Option<Arc<Pool>>,
    /// The last client accepted during the drain delay, over every loop: kept apart from
    /// the loops' progress, which a loop's next note may overtake in the same batch.
    last_in_delay: Option<Instant>,
    /// The supervisor (sd_notify) and a successor (hand-over).
    supervision: Supervision,
    /// Where `/metrics` reads the shutdown's phase.
    stats: Arc<Stats>,
    /// The access log's writer, finished after the last loop.
    pub(super) access_log: Option<Writer>,
}

impl Coordinator {
    pub(super) fn new(
        poll: Poll,
        signals: Signals,
        board: Arc<Board>,
        budget: Budget,
        supervision: Supervision,
        stats: Arc<Stats>,
    ) -> Coordinator {
        Coordinator {
            poll,
            events: Events::with_capacity(16),
            signals,
            board,
            orders: Vec::new(),
            loops: Vec::new(),
            stage: Stage::Serving,
            budget,
            pool: None,
            last_in_delay: None,
            supervision,
            stats,
            access_log: None,
        }
    }

    /// The loops run: tell the supervisor (or, for a successor, the parent).
    pub(super) fn ready(&mut self, status: &str) {
        self.supervision.ready(status);
    }

    /// When loop 0 must give the coordinator a turn even if nothing rang: the
    /// watchdog's next feed, or a starting successor's next check.
    pub(super) fn next_wakeup(&self, now: Instant) -> Option<Instant> {
        self.supervision.next_wakeup(now)
    }

    /// Adds a loop's orders; loops are numbered in the order they are added.
    pub(super) fn add_loop(&mut self, orders: Arc<Orders>) {
        self.orders.push(orders);
        self.loops.push(Progress::Serving);
    }

    /// The coordinator's poll, for loop 0 to nest in its own: readable when a signal, a
    /// request or a note is waiting.
    pub(super) fn fd(&self) -> RawFd {
        self.poll.as_raw_fd()
    }

    /// One look at everything, without blocking: what loop 0 calls when the nested poll
    /// is readable. `now` is loop 0's clock reading.
    pub(super) fn turn(&mut self, now: Instant) {
        // Only to take the events out of the nested poll, so it reports the next ones:
        // each source is looked at below whichever rang. A failed look changes nothing.
        let _ = self.poll.poll(&mut self.events, Some(Duration::ZERO));
        self.supervision.feed_watchdog(now);
        self.take_everything(now);
    }

    /// Whether every loop has ended.
    fn all_exited(&self) -> bool {
        self.loops.iter().all(|p| matches!(p, Progress::Exited(_)))
    }

    /// Once loop 0 has ended: waits for the others, drives their shutdown, and returns the
    /// process's outcome once every loop has ended and the pool is closed. `threads` are
    /// the other loops' threads (`None` for one that could not start: its `Exited` note is
    /// already on the board).
    pub(super) fn run(mut self, threads: Vec<Option<JoinHandle<()>>>) -> io::Result<Outcome> {
        loop {
            self.take_everything(Instant::now());
            if self.all_exited() {
                break;
            }
            let now = Instant::now();
            let timeout = self
                .next_wakeup(now)
                .map(|at| at.saturating_duration_since(now));
            if let Err(e) = self.poll.poll(&mut self.events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // Deaf to signals from here on: stop every loop rather than serve on
                // with no way to be stopped, and report the failure.
                self.stop(Source::Application, Instant::now());
                return Err(e);
            }
        }
        for thread in threads.into_iter().flatten() {
            // Each thread left its `Exited` note as its last act; joining is immediate.
            let _ = thread.join();
        }
        Ok(self.finish())
    }

    /// Whichever source rang, look at every one: each look is cheap, and one wake-up may
    /// stand for several reasons.
    fn take_everything(&mut self, now: Instant) {
        let signals: Vec<_> = asked(self.signals.pending()).collect();
        for signal in signals {
            match signal {
                Asked::Stop(signal) => self.stop(Source::Signal(signal), now),
                Asked::HandOver => self.hand_over(now),
            }
        }
        if let Succession::Ready(pid) = self.supervision.check_successor(now) {
            self.stop(Source::HandedOver(pid), now);
        }
        if self.board.requests.take() {
            self.stop(Source::Application, now);
        }
        for note in self.board.take_notes() {
            self.take_note(note, now);
        }
        self.advance();
    }

    /// The first stop orders every loop; a later one is logged and ignored.
    fn stop(&mut self, by: Source, at: Instant) {
        if self.stage != Stage::Serving {
            log::info!("{by} again: already shutting down, ignored");
            return;
        }
        log::trace!("coordinator: Serving=>Ordered");
        self.stage = Stage::Ordered { by, at };
        self.stats.set_phase(Phase::Announced, Some(at));
        self.supervision.stopping(&by.to_string());
        for orders in &self.orders {
            orders.stop(by, at);
        }
    }

    /// SIGHUP: start a successor, while serving; during a shutdown there is nothing to
    /// hand over. A successor that cannot even be started leaves us serving.
    fn hand_over(&mut self, now: Instant) {
        if self.stage != Stage::Serving {
            log::info!("SIGHUP received during the shutdown: ignored");
            return;
        }
        if let Err(e) = self.supervision.start_successor(now) {
            log::warn!("hand-over failed: cannot start a successor: {e}; still serving");
            return;
        }
        if let Some(socket) = self.supervision.successor_socket() {
            // Its `READY=1` wakes the coordinator; the socket leaves the poll when it is
            // closed, with the successor's end.
            let fd = socket.as_raw_fd();
            let registered = self.poll.registry().register(
                &mut mio::unix::SourceFd(&fd),
                SUCCESSOR,
                mio::Interest::READABLE,
            );
            if let Err(e) = registered {
                log::debug!("successor socket not polled ({e}): checked on a timer only");
            }
        }
    }

    fn take_note(&mut self, note: Note, now: Instant) {
        match note {
            Note::Announced(index) => self.progress(index, Progress::Announced),
            Note::ListenerClosed {
                index,
                last_in_delay,
            } => {
                self.last_in_delay = self.last_in_delay.max(last_in_delay);
                self.progress(index, Progress::ListenerClosed);
            }
            Note::Exited { index, ended } => {
                let died = ended.is_err();
                if let Err(why) = &ended {
                    log::error!("event loop {index} {why}; its connections are lost");
                }
                self.progress(index, Progress::Exited(ended));
                if died {
                    // A bug killed one loop: the rest drain, and the exit says so.
                    self.stop(Source::LoopDied(index), now);
                }
            }
        }
    }

    /// Records a loop's step; notes from one loop arrive in order, so progress only grows.
    fn progress(&mut self, index: usize, next: Progress) {
        if let Some(slot) = self.loops.get_mut(index)
            && next.rank() > slot.rank()
        {
            *slot = next;
        }
    }

    /// Every loop at least this far along.
    fn all_reached(&self, rank: u8) -> bool {
        self.loops.iter().all(|p| p.rank() >= rank)
    }

    /// Says each step once, when every loop has taken it. In a loop, since one batch of
    /// notes may complete several steps; they are logged in their order.
    fn advance(&mut self) {
        loop {
            self.stage = match self.stage {
                Stage::Ordered { by, at } if self.all_reached(1) => {
                    self.announce(by);
                    Stage::Announced { by, at }
                }
                Stage::Announced { by, at } if self.all_reached(2) => {
                    self.listener_closed(by, at);
                    self.stats.set_phase(Phase::Draining, None);
                    Stage::Closed { by, at }
                }
                _ => return,
            };
        }
    }

    /// Step 1, said once every loop answers `/health` with 503.
    fn announce(&self, by: Source) {
        log::info!(
            "{by}: starting graceful shutdown (draining, max {}ms)",
            self.budget.shutdown_timeout.as_millis()
        );
        if !self.budget.drain_delay.is_zero() {
            log::info!(
                "drain delay: still accepting for {}ms while /health answers 503",
                self.budget.drain_delay.as_millis()
            );
        }
    }

    /// Step 3, said once every loop has taken its backlog and closed its copy.
    fn listener_closed(&self, by: Source, at: Instant) {
        if !self.budget.drain_delay.is_zero() {
            match self.last_in_delay {
                Some(t) => log::info!(
                    "drain delay over: last new connection arrived {}ms after {}",
                    t.saturating_duration_since(at).as_millis(),
                    by.noun()
                ),
                None => log::info!("drain delay over: no new connection arrived during it"),
            }
        }
        match by {
            // The socket lives on in the successor: nothing is refused.
            Source::HandedOver(pid) => {
                log::info!("listener left to successor {pid}: it accepts every new connection");
            }
            _ if self.supervision.listener_kept() => log::info!(
                "listener left to the socket's keeper (systemd's socket unit): new connections wait for the next start"
            ),
            _ => log::info!("listener closed: new connections are refused"),
        }
    }

    /// Steps 6 and 9, after the last loop: the outcome over the loops, the pool closed,
    /// `Bye.`, the report.
    fn finish(&mut self) -> Outcome {
        let began_at = match self.stage {
            Stage::Ordered { at, .. } | Stage::Announced { at, .. } | Stage::Closed { at, .. } => {
                Some(at)
            }
            Stage::Serving => None,
        };
        let mut outcome = Outcome::Drained;
        let mut report = Report::default();
        let mut ended_at = None;
        for (index, progress) in self.loops.iter().enumerate() {
            match progress {
                Progress::Exited(Ok(ended)) => {
                    outcome = outcome.worst(ended.outcome);
                    report.add(&ended.report);
                    ended_at = ended_at.max(Some(ended.at));
                }
                Progress::Exited(Err(_)) => outcome = outcome.worst(Outcome::LoopDied { index }),
                // Not reached: `run` finishes once every loop has exited.
                Progress::Serving | Progress::Announced | Progress::ListenerClosed => {}
            }
        }
        let now = Instant::now();
        let ended_at = ended_at.unwrap_or(now);
        if outcome == Outcome::TimedOut {
            log::warn!(
                "Drain timed out — forcing exit ({} connections answered 503 or cut)",
                report.forced()
            );
        }
        self.stats.set_phase(Phase::Stopped, None);
        // The pool closes after the last loop: no request can need it any more.
        let pool_started = Instant::now();
        let had_pool = self.pool.is_some();
        if let Some(pool) = self.pool.take() {
            self.stats.pool_closing(&pool);
            outcome = outcome.worst(close_pool(pool));
        }
        let pool_ms = pool_started.elapsed().as_millis();
        if let Some(writer) = self.access_log.take() {
            let dropped = writer.finish(ACCESS_LOG_FLUSH_BOUND);
            if dropped > 0 {
                log::warn!("access log: {dropped} lines dropped, the output did not keep up");
            }
        }
        if let Outcome::LoopDied { index } = outcome {
            log::error!("event loop {index} died: exit 1 although the others drained");
        }
        if outcome == Outcome::Drained {
            let drain_ms = report
                .drain_at
                .map_or(0, |t| ended_at.saturating_duration_since(t).as_millis());
            let what = if had_pool {
                "Drained requests and closed DB pool"
            } else {
                "Drained requests"
            };
            log::info!("{what}. Bye. (drain took {drain_ms}ms)");
        }
        self.supervision
            .status(&format!("stopped: exit {}", outcome.exit_code()));
        report.log(
            self.loops.len(),
            outcome,
            began_at.unwrap_or(ended_at),
            ended_at,
            pool_ms,
        );
        outcome
    }
}

/// Closes the shared pool, once every loop (each holding a share of it) has ended;
/// `StepFailed` when a worker misses the bound.
fn close_pool(pool: Arc<Pool>) -> Outcome {
    let Ok(pool) = Arc::try_unwrap(pool) else {
        // Not reached: every other share belonged to a loop, and every loop has ended.
        log::warn!("DB pool still shared after the last loop: left to the process exit");
        return Outcome::StepFailed;
    };
    let closed = pool.close(POOL_CLOSE_BOUND);
    if closed.joined == closed.workers {
        log::info!(
            "DB pool closed: {} workers disconnected and joined",
            closed.workers
        );
        Outcome::Drained
    } else {
        log::warn!(
            "DB pool close timed out: {} of {} workers joined",
            closed.joined,
            closed.workers
        );
        Outcome::StepFailed
    }
}

/// A panic's message, for the log line naming the loop it killed.
pub(super) fn panic_message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic with no message")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::signals::Signal;

    fn stats() -> Arc<Stats> {
        Arc::new(Stats::new(1, true))
    }

    /// A coordinator of `n` loops, each represented by its orders (and the poll its
    /// waker rings, kept alive).
    fn coordinator(n: usize) -> (Coordinator, Vec<Arc<Orders>>, Vec<Poll>) {
        let poll = Poll::new().unwrap();
        let board = Arc::new(Board::new(Waker::new(poll.registry(), BOARD).unwrap()));
        let signals = Signals::new(Vec::<i32>::new()).unwrap();
        let budget = Budget {
            drain_delay: Duration::ZERO,
            shutdown_timeout: Duration::from_secs(10),
        };
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let supervision = Supervision::new(
            &listener,
            false,
            Duration::from_secs(1),
            Instant::now(),
            stats(),
        );
        let mut c = Coordinator::new(poll, signals, board, budget, supervision, stats());
        let (mut orders, mut polls) = (Vec::new(), Vec::new());
        for _ in 0..n {
            let loop_poll = Poll::new().unwrap();
            let waker = Waker::new(loop_poll.registry(), Token(0)).unwrap();
            let o = Arc::new(Orders::new(Arc::new(Inbox::new(waker))));
            c.add_loop(Arc::clone(&o));
            orders.push(o);
            polls.push(loop_poll);
        }
        (c, orders, polls)
    }

    fn ended(outcome: Outcome, at: Instant) -> Result<Ended, String> {
        Ok(Ended {
            outcome,
            report: Report::default(),
            at,
        })
    }

    #[test]
    fn coordinator_orders_every_loop_once_with_the_first_request_and_its_instant() {
        let (mut c, orders, _polls) = coordinator(2);
        let t0 = Instant::now();
        let term = Source::Signal(Signal::Term);
        c.stop(term, t0);
        c.stop(Source::Application, t0 + Duration::from_millis(5));
        for o in &orders {
            assert_eq!(o.take(), Some((term, t0)), "the same order for every loop");
            assert_eq!(o.take(), None, "taken once; the repeat was not sent");
        }
        assert_eq!(c.stage, Stage::Ordered { by: term, at: t0 });
    }

    #[test]
    fn coordinator_says_each_step_once_every_loop_has_taken_it() {
        let (mut c, _orders, _polls) = coordinator(2);
        let t0 = Instant::now();
        let by = Source::Application;
        c.stop(by, t0);
        c.take_note(Note::Announced(0), t0);
        c.advance();
        assert_eq!(
            c.stage,
            Stage::Ordered { by, at: t0 },
            "loop 1 still serves"
        );
        // Loop 1's notes in one batch, its end included: every step it took counts.
        c.take_note(Note::Announced(1), t0);
        c.take_note(
            Note::ListenerClosed {
                index: 1,
                last_in_delay: None,
            },
            t0,
        );
        c.take_note(
            Note::Exited {
                index: 1,
                ended: ended(Outcome::Drained, t0),
            },
            t0,
        );
        c.advance();
        assert_eq!(
            c.stage,
            Stage::Announced { by, at: t0 },
            "loop 0's copy is open"
        );
        c.take_note(
            Note::ListenerClosed {
                index: 0,
                last_in_delay: None,
            },
            t0,
        );
        c.advance();
        assert_eq!(c.stage, Stage::Closed { by, at: t0 });
        assert!(!c.all_exited());
    }

    #[test]
    fn coordinator_drains_the_others_when_a_loop_dies_and_names_it_in_the_outcome() {
        let (mut c, orders, _polls) = coordinator(3);
        let t0 = Instant::now();
        let died = Note::Exited {
            index: 1,
            ended: Err("panicked: a bug".to_owned()),
        };
        c.take_note(died, t0);
        assert_eq!(orders[0].take(), Some((Source::LoopDied(1), t0)));
        assert_eq!(orders[2].take(), Some((Source::LoopDied(1), t0)));
        for index in [0, 2] {
            let ended = ended(Outcome::Drained, t0);
            c.take_note(Note::Exited { index, ended }, t0);
        }
        assert!(c.all_exited());
        assert_eq!(c.finish(), Outcome::LoopDied { index: 1 });
    }

    #[test]
    fn coordinator_outcome_is_the_worst_of_the_loops() {
        let (mut c, _orders, _polls) = coordinator(2);
        let t0 = Instant::now();
        c.stop(Source::Signal(Signal::Int), t0);
        let outcomes = [Outcome::Drained, Outcome::TimedOut];
        for (index, outcome) in outcomes.into_iter().enumerate() {
            let ended = ended(outcome, t0);
            c.take_note(Note::Exited { index, ended }, t0);
        }
        assert_eq!(c.finish(), Outcome::TimedOut);
    }
}
