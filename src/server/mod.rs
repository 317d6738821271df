//! The event loop: one thread, one `mio::Poll`, and everything that touches its
//! `Registry` — the listener, the connections, the waker, the signals — plus the timers
//! and the shutdown phase.
//!
//! What it is: [`Server::bind`] sets up in the order the shutdown contract needs (signals
//! first, then the listener), and [`Server::run`] turns events into calls on connections
//! until the shutdown phase machine says `Done`.
//!
//! What it is not: it does not parse HTTP or decide responses (that is `conn` and
//! `http`), and it does not decide *when* a shutdown moves on (that is `shutdown`): it
//! carries out those decisions.
//!
//! One turn of the loop:
//! 1. `poll` until an event or the nearest deadline (timers, shutdown phase, accept pause),
//!    measured from the previous turn's `now`;
//! 2. read the clock once (`now`), and bring the `Date` value up to it;
//! 3. resume the connections that yielded last turn, then handle events: accept,
//!    deliver replies, signals, connection readiness;
//! 4. fire due timers;
//! 5. once a shutdown has begun, let its phase advance (`Empty`, `Tick`, `Empty`).
//!
//! Invariants: the loop never blocks except in `poll` — and, once, in the last shutdown
//! step, which waits (within `POOL_CLOSE_BOUND`) for the database workers to disconnect,
//! when there is nothing left to serve; on the loop's thread only this
//! module calls `Instant::now()`; tokens are never reused for a new socket while an event or a reply
//! may still name the old one (see `slab`).

mod shutdown;
mod slab;
mod timers;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
pub use signal_hook_mio::v1_0::Signals;

pub use shutdown::{Outcome, Phase, Signal};

use crate::config::Config;
use crate::conn::{BufPool, CloseReason, Conn, Limits, LoopCx, Timeouts};
use crate::db::Pool;
use crate::handler::{Handler, Inbox, ReplyId};
use crate::http::date::DateCache;
use crate::http::response::Response;
use shutdown::{Budget, Event, Step};
use slab::{FIRST_RESERVED, Slab};
use timers::Timers;

const LISTENER: Token = Token(FIRST_RESERVED);
const WAKER: Token = Token(FIRST_RESERVED + 1);
const SIGNALS: Token = Token(FIRST_RESERVED + 2);

/// How long to stop accepting after the process or system ran out of file descriptors.
/// Retrying at once would spin on the same error; nginx waits 500 ms, we retry sooner
/// because a closing connection frees a descriptor quickly.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// How long the pool may take to close after the drain (or the deadline). Idle workers
/// disconnect in milliseconds; this bounds a worker stuck in a query that ignores cancel.
const POOL_CLOSE_BOUND: Duration = Duration::from_secs(2);

/// At most one "at MAX_CONNECTIONS" warning this often.
const OVERLOAD_WARNING_EVERY: Duration = Duration::from_secs(10);

/// Timers fired per loop turn at most, so a flood of due timers (thousands of
/// connections timing out together) cannot hold one turn while sockets wait; the rest
/// fire on the next turn (the poll timeout is then zero).
const MAX_TIMERS_PER_TURN: usize = 4096;

/// Stale timer entries tolerated beyond twice the live connections before they are
/// dropped (see `Server::close`).
const TIMER_SLACK: usize = 1024;

/// Whether the listener is being accepted from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Accept {
    Open,
    /// At `MAX_CONNECTIONS`: the kernel's backlog holds new clients until one closes.
    Full,
    /// Out of file descriptors: try again at `until`.
    Paused {
        until: Instant,
    },
}

/// Why [`Server::bind`] failed, by the step that failed. `main` prints it as one line and
/// exits 1.
#[derive(Debug)]
pub enum BindError {
    /// The listening socket: the address is in use, not this host's, or needs privileges.
    Listen { addr: SocketAddr, error: io::Error },
    /// The event loop's own parts: the poll, its waker, or registering the signals or the
    /// listener with it.
    EventLoop(io::Error),
    /// `DATABASE_URL` cannot be used: it does not parse, or this build has no PostgreSQL
    /// support. `main` checks it first (`db::check_url`) and exits 2; this is for an
    /// embedder that did not.
    Database(String),
}

impl fmt::Display for BindError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BindError::Listen { addr, error } => write!(f, "cannot listen on {addr}: {error}"),
            BindError::EventLoop(error) => write!(f, "cannot set up the event loop: {error}"),
            BindError::Database(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for BindError {}

/// What `bind` produced.
pub enum Started {
    Ready(Box<Server>),
    /// A shutdown signal (not a SIGHUP) arrived during start-up: never report ready, exit 0.
    Signalled(Signal),
}

pub struct Server {
    poll: Poll,
    listener: Option<TcpListener>,
    local_addr: SocketAddr,
    signals: Signals,
    accept: Accept,
    /// Failed accepts in a row, so a long EMFILE episode logs once, not ten times a second.
    accept_failures: u64,
    /// When the connection limit was last reported.
    full_warned: Option<Instant>,
    max_connections: usize,
    conns: Slab<Conn>,
    timers: Timers,
    bufs: BufPool,
    date: DateCache,
    limits: Limits,
    handler: Arc<dyn Handler>,
    /// Where reply handles deliver; its waker makes `poll` return.
    inbox: Arc<Inbox>,
    /// Reused vector for draining the inbox without allocating per wake-up.
    replies: Vec<(ReplyId, Response)>,
    /// Connections that yielded with work left (`Conn::take_yielded`): resumed next turn,
    /// which polls without waiting while any are queued.
    posted: Vec<Token>,
    /// The list being resumed this turn, reused so posting does not allocate.
    resuming: Vec<Token>,
    /// The database pool; closed after the last connection (`finish`).
    pool: Option<Pool>,
    phase: Phase,
    budget: Budget,
    report: Report,
    /// Set by the last shutdown step: the loop returns it.
    exit: Option<Outcome>,
}

impl Server {
    /// Registers the signal handlers (installed by [`install_signal_handlers`], first thing
    /// in `main`), then binds the listener. In that order: a SIGTERM that arrives while we
    /// start must not kill us half-started, it must stop us cleanly.
    pub fn bind(
        config: &Config,
        handler: impl Handler,
        mut signals: Signals,
    ) -> Result<Started, BindError> {
        let poll = Poll::new().map_err(BindError::EventLoop)?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)
            .map_err(BindError::EventLoop)?;

        let listen = |error| BindError::Listen {
            addr: config.listen,
            error,
        };
        let mut listener = TcpListener::bind(config.listen).map_err(listen)?;
        let local_addr = listener.local_addr().map_err(listen)?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)
            .map_err(BindError::EventLoop)?;
        let waker = Waker::new(poll.registry(), WAKER).map_err(BindError::EventLoop)?;

        if let Some(signal) = shutdown_signals(signals.pending()).next() {
            return Ok(Started::Signalled(signal));
        }
        let pool = start_pool(config)?;

        let limits = Limits {
            timeouts: Timeouts {
                keepalive: config.keepalive_timeout,
                header: config.header_timeout,
                body: config.body_timeout,
                request: config.request_timeout,
                write: config.write_timeout,
            },
            max_head: config.max_header_bytes,
            max_body: config.max_body_bytes,
        };
        Ok(Started::Ready(Box::new(Server {
            poll,
            listener: Some(listener),
            local_addr,
            signals,
            accept: Accept::Open,
            accept_failures: 0,
            full_warned: None,
            max_connections: config.max_connections,
            conns: Slab::new(),
            timers: Timers::default(),
            bufs: BufPool::new(config.max_header_bytes),
            date: DateCache::new(Instant::now(), SystemTime::now()),
            limits,
            handler: Arc::new(handler),
            inbox: Arc::new(Inbox::new(waker)),
            replies: Vec::new(),
            posted: Vec::new(),
            resuming: Vec::new(),
            phase: Phase::Serving,
            budget: Budget {
                drain_delay: config.drain_delay,
                shutdown_timeout: config.shutdown_timeout,
            },
            pool,
            report: Report::default(),
            exit: None,
        })))
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Runs until the shutdown is complete; the outcome decides the exit code.
    pub fn run(mut self) -> io::Result<Outcome> {
        log::info!("Listening on http://{}", self.local_addr);
        let mut events = Events::with_capacity(1024);
        let mut now = Instant::now();
        loop {
            // One clock reading a turn, as nginx does: the poll timeout is measured from
            // the reading the previous turn used, so a wake-up comes late by at most the
            // time that turn took — microseconds normally, milliseconds after a turn that
            // drains, accepts or times out thousands of connections — and never early.
            let timeout = self.poll_timeout(now);
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    // The poll may have slept a while before it was interrupted.
                    now = Instant::now();
                    continue;
                }
                return Err(e);
            }
            // The clock reading every step of this turn uses.
            now = Instant::now();
            self.date.update(now, SystemTime::now);

            self.resume_posted(now);
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept_all(now),
                    WAKER => self.deliver_replies(now),
                    SIGNALS => self.take_signals(now),
                    token => {
                        let hung_up = event.is_read_closed() || event.is_error();
                        let readable = event.is_readable();
                        self.with_conn(token, now, |conn, cx| conn.ready(cx, readable, hung_up));
                    }
                }
            }
            self.fire_timers(now);
            if let Accept::Paused { until } = self.accept
                && now >= until
            {
                self.accept = Accept::Open;
                self.accept_all(now);
            }
            // Serving has no timed transitions, so only a shutdown feeds the phase
            // machine every turn. Empty before Tick: a drain that completes in the turn
            // its deadline passes is a clean drain. Empty after Tick too: the Tick that
            // ends a drain delay starts the drain, and it may find nothing left to drain.
            if self.phase.shutting_down() {
                if self.conns.is_empty() {
                    self.advance(Event::Empty(now), now);
                }
                self.advance(Event::Tick(now), now);
                if self.conns.is_empty() {
                    self.advance(Event::Empty(now), now);
                }
            }
            if let Some(outcome) = self.exit {
                return Ok(outcome);
            }
        }
    }

    /// The nearest thing the loop must wake up for.
    fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        if !self.posted.is_empty() {
            // Work is waiting: look for events, but do not sleep.
            return Some(Duration::ZERO);
        }
        let phase = self
            .phase
            .deadline()
            .map(|d| d.saturating_duration_since(now));
        let accept = match self.accept {
            Accept::Paused { until } => Some(until.saturating_duration_since(now)),
            _ => None,
        };
        [self.timers.next_in(now), phase, accept]
            .into_iter()
            .flatten()
            .min()
    }

    /// Accepts until `WouldBlock`, the connection limit, or descriptor exhaustion.
    fn accept_all(&mut self, now: Instant) {
        while self.accept == Accept::Open {
            let Some(listener) = self.listener.as_ref() else {
                return;
            };
            // Draining, the limit no longer applies: this is the one last accept of the
            // backlog (its clients connected before we stopped), and the listener closes
            // right after.
            if !self.phase.draining() && self.conns.len() >= self.max_connections {
                // Under sustained overload this happens at every close: warn at most
                // once per `OVERLOAD_WARNING_EVERY`.
                if self
                    .full_warned
                    .is_none_or(|t| now >= t + OVERLOAD_WARNING_EVERY)
                {
                    log::warn!(
                        "at MAX_CONNECTIONS ({}): new connections wait in the backlog",
                        self.max_connections
                    );
                    self.full_warned = Some(now);
                }
                self.accept = Accept::Full;
                return;
            }
            match listener.accept() {
                Ok((socket, _peer)) => {
                    if self.accept_failures > 0 {
                        log::info!(
                            "accepting again after {} failed attempts",
                            self.accept_failures
                        );
                        self.accept_failures = 0;
                    }
                    self.add_conn(socket, now);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // The client gave up between the handshake and our accept: nothing to do.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
                    ) => {}
                Err(e) => {
                    // EMFILE/ENFILE/ENOBUFS/ENOMEM and anything unexpected: retrying now
                    // would fail the same way and spin the loop. Warn once per episode,
                    // not every 100 ms.
                    if self.accept_failures == 0 {
                        log::warn!(
                            "accept failed: {e}; pausing accepts for {}ms at a time until it works",
                            ACCEPT_PAUSE.as_millis()
                        );
                    }
                    self.accept_failures += 1;
                    self.accept = Accept::Paused {
                        until: now + ACCEPT_PAUSE,
                    };
                }
            }
        }
    }

    fn add_conn(&mut self, socket: mio::net::TcpStream, now: Instant) {
        // Responses are written whole; Nagle would only delay the last segment.
        let _ = socket.set_nodelay(true);
        let token = self.conns.insert(Conn::new(socket, now));
        let Some(conn) = self.conns.get_mut(token) else {
            return;
        };
        // Both interests once, for the connection's life: edge-triggered events cost
        // nothing while nothing changes, and re-registering would cost a syscall.
        let interests = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = self
            .poll
            .registry()
            .register(conn.socket_mut(), token, interests)
        {
            log::warn!("cannot register a new connection: {e}");
            self.conns.remove(token);
            return;
        }
        self.timers.schedule(
            token,
            conn.deadline(&self.limits, self.phase.stage()),
            &mut conn.scheduled,
        );
        if self.phase.shutting_down() {
            // During the drain delay, or the last accept of the backlog.
            self.report.accepted_after_signal += 1;
        }
        if matches!(self.phase, Phase::Delaying { .. }) {
            self.report.last_accept_in_delay = Some(now);
        }
    }

    /// Runs `f` on the connection named by `token` (ignoring stale tokens), then either
    /// reschedules its timer or closes it.
    fn with_conn<F>(&mut self, token: Token, now: Instant, f: F)
    where
        F: FnOnce(&mut Conn, &mut LoopCx<'_>) -> Result<(), CloseReason>,
    {
        let Some(conn) = self.conns.get_mut(token) else {
            return; // a stale event or reply for a connection already closed
        };
        let stage = self.phase.stage();
        let mut cx = LoopCx {
            now,
            token,
            date: self.date.as_bytes(),
            limits: &self.limits,
            bufs: &mut self.bufs,
            handler: &*self.handler,
            inbox: &self.inbox,
            db: self.pool.as_ref(),
            stage,
        };
        match f(conn, &mut cx) {
            Ok(()) => {
                let at = conn.deadline(&self.limits, stage);
                self.timers.schedule(token, at, &mut conn.scheduled);
                if conn.take_yielded() && !conn.posted {
                    conn.posted = true;
                    self.posted.push(token);
                }
            }
            Err(reason) => self.close(token, reason, now),
        }
    }

    fn close(&mut self, token: Token, reason: CloseReason, now: Instant) {
        let Some(mut conn) = self.conns.remove(token) else {
            return;
        };
        conn.release(&mut self.bufs);
        let _ = self.poll.registry().deregister(conn.socket_mut());
        drop(conn);
        if reason.is_routine() {
            log::debug!("conn {}: closed ({reason})", token.0);
        } else {
            log::info!("conn {}: closed ({reason})", token.0);
        }
        if self.phase.shutting_down() {
            self.report.count(reason);
        }
        // A closed connection's timer entries stay in the heap until their time comes:
        // with a long keep-alive timeout and many short connections they would pile up.
        // Once they outnumber the live connections, keep only each connection's current
        // entry (amortised, O(1) per close).
        if self.timers.len() > 2 * self.conns.len() + TIMER_SLACK {
            let conns = &mut self.conns;
            self.timers.retain(|at, token| {
                conns
                    .get_mut(token)
                    .is_some_and(|conn| conn.scheduled == Some(at))
            });
        }
        if self.accept == Accept::Full {
            self.accept = Accept::Open;
            self.accept_all(now);
        }
    }

    /// Gives the connections that yielded last turn their next share before this turn's
    /// events: a connection with endless input gets one share a turn, like any other.
    fn resume_posted(&mut self, now: Instant) {
        if self.posted.is_empty() {
            return;
        }
        let mut resuming = std::mem::replace(&mut self.posted, std::mem::take(&mut self.resuming));
        for token in resuming.drain(..) {
            // A token closed since it was posted no longer exists: ignored like a stale event.
            self.with_conn(token, now, |conn, cx| conn.resume(cx));
        }
        self.resuming = resuming;
    }

    fn deliver_replies(&mut self, now: Instant) {
        let mut replies = std::mem::take(&mut self.replies);
        self.inbox.drain_into(&mut replies);
        for (id, response) in replies.drain(..) {
            self.with_conn(id.token, now, |conn, cx| conn.reply(cx, id.seq, response));
        }
        self.replies = replies;
    }

    fn fire_timers(&mut self, now: Instant) {
        for _ in 0..MAX_TIMERS_PER_TURN {
            let Some((at, token)) = self.timers.pop_due(now) else {
                return;
            };
            let Some(conn) = self.conns.get_mut(token) else {
                continue;
            };
            if conn.scheduled == Some(at) {
                conn.scheduled = None;
            }
            self.with_conn(token, now, |conn, cx| conn.timer(cx));
        }
    }

    fn take_signals(&mut self, now: Instant) {
        let signals: Vec<Signal> = shutdown_signals(self.signals.pending()).collect();
        for signal in signals {
            self.advance(Event::Signal(signal, now), now);
        }
    }

    /// Feeds the shutdown phase machine and carries out the step it returns.
    fn advance(&mut self, event: Event, now: Instant) {
        match self.phase.on(event, self.budget) {
            Step::Nothing => {}
            Step::Announce { drain_now } => {
                self.announce(now);
                if drain_now {
                    self.start_drain(now);
                }
            }
            Step::IgnoreSignal(signal) => {
                log::info!(
                    "{} received again: already shutting down, ignored",
                    signal.name()
                );
            }
            Step::StartDrain => self.start_drain(now),
            Step::Force => {
                self.force(now);
                self.finish(Outcome::TimedOut);
            }
            Step::Finish(outcome) => self.finish(outcome),
        }
    }

    /// Step 1 of the shutdown: say so. Readiness flips with the phase itself.
    fn announce(&mut self, now: Instant) {
        let signal = match self.phase {
            Phase::Delaying { signal, .. } | Phase::Draining { signal, .. } => signal,
            _ => return,
        };
        log::info!(
            "{} received: starting graceful shutdown (draining, max {}ms)",
            signal.name(),
            self.budget.shutdown_timeout.as_millis()
        );
        if !self.budget.drain_delay.is_zero() {
            log::info!(
                "drain delay: still accepting for {}ms while /health answers 503",
                self.budget.drain_delay.as_millis()
            );
        }
        self.report.signal_at = Some(now);
        self.report.open_at_signal = self.conns.len();
    }

    /// Steps 3 and 4: take the backlog, close the listener, close idle connections.
    fn start_drain(&mut self, now: Instant) {
        if let Phase::Draining { at, .. } = self.phase
            && !self.budget.drain_delay.is_zero()
        {
            match self.report.last_accept_in_delay.take() {
                Some(t) => log::info!(
                    "drain delay over: last new connection arrived {}ms after the signal",
                    t.saturating_duration_since(at).as_millis()
                ),
                None => log::info!("drain delay over: no new connection arrived during it"),
            }
        }
        self.report.drain_at = Some(now);
        // Clients in the backlog completed their handshake before we stopped: they are
        // ours to serve. Take them regardless of the connection limit (`accept_all`).
        self.accept = Accept::Open;
        self.accept_all(now);
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
            drop(listener);
            log::info!("listener closed: new connections are refused");
        }
        for token in self.conns.tokens() {
            self.with_conn(token, now, |conn, cx| conn.start_drain(cx));
        }
    }

    /// Step 7: the deadline passed.
    fn force(&mut self, now: Instant) {
        let cut_before = self.report.answered_503 + self.report.cut;
        if let Some(pool) = self.pool.as_ref() {
            let cancelled = pool.cancel_in_flight();
            if cancelled > 0 {
                log::warn!("cancelled {cancelled} database queries still running");
            }
        }
        for token in self.conns.tokens() {
            self.with_conn(token, now, |conn, cx| Err(conn.force_close(cx)));
        }
        let forced = self.report.answered_503 + self.report.cut - cut_before;
        log::warn!("Drain timed out — forcing exit ({forced} connections answered 503 or cut)");
    }

    /// Step 6 (and the end of 7): release resources, log the report, and settle the
    /// outcome the process exits with.
    fn finish(&mut self, outcome: Outcome) {
        // The last step reads the clock itself: closing thousands of sockets, or the
        // pool's threads, can take far longer than the turn that started it, and the
        // report must say how long the shutdown really took.
        let now = Instant::now();
        // The pool closes after the last connection: no request can need it any more.
        let pool_started = now;
        let mut outcome = outcome;
        if let Some(pool) = self.pool.take() {
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
                if outcome == Outcome::Drained {
                    outcome = Outcome::StepFailed;
                }
            }
        }
        let pool_ms = pool_started.elapsed().as_millis();
        if outcome == Outcome::Drained {
            let drain_ms = self
                .report
                .drain_at
                .map_or(0, |t| now.saturating_duration_since(t).as_millis());
            log::info!("Drained requests and closed DB pool. Bye. (drain took {drain_ms}ms)");
        }
        self.report.log(outcome, now, pool_ms);
        self.exit = Some(outcome);
    }
}

/// Installs the handlers for every signal [`Received`] knows (SIGTERM, SIGINT, SIGHUP).
/// From here on those signals no longer kill the process; they queue up until the loop
/// reads them, so `main` calls this before anything else.
pub fn install_signal_handlers() -> io::Result<Signals> {
    Signals::new(Received::HANDLED)
}

/// Starts the worker pool when `DATABASE_URL` is set. The workers connect in the
/// background: a database that is down does not keep the server from starting.
#[cfg(feature = "postgres")]
fn start_pool(config: &Config) -> Result<Option<Pool>, BindError> {
    let Some(url) = config.database_url.as_deref() else {
        return Ok(None);
    };
    Pool::start(url, config.db_pool_size)
        .map(Some)
        .map_err(|e| BindError::Database(format!("invalid DATABASE_URL: {e}")))
}

/// Without PostgreSQL support there is no pool, and a `DATABASE_URL` is refused by
/// `db::check_url`, which `main` reports first as a configuration error (exit 2). Refused
/// here too, for an embedder that skipped that check: a database that was asked for is
/// never silently done without.
#[cfg(not(feature = "postgres"))]
fn start_pool(config: &Config) -> Result<Option<Pool>, BindError> {
    match config.database_url.as_deref().map(crate::db::check_url) {
        Some(Err(e)) => Err(BindError::Database(e)),
        Some(Ok(())) | None => Ok(None),
    }
}

/// What a signal means to the server. The one place raw signal numbers get a meaning, so
/// the shutdown phase machine only ever sees shutdown signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Received {
    /// SIGTERM or SIGINT: start the graceful shutdown (or, during one, a repeat).
    Shutdown(Signal),
    /// SIGHUP: its default action would kill the process on the spot, with no drain, so
    /// it is caught. Daemons use it for "reload" (nginx) and systemd's `ExecReload` often
    /// sends it; lastcall has nothing to reload yet (DESIGN.md reserves it for handing the
    /// listener to a new process), so it is logged and otherwise ignored, in any phase.
    Hangup,
}

impl Received {
    /// The signals [`install_signal_handlers`] catches; [`Received::of`] names each one.
    const HANDLED: [i32; 3] = [SIGTERM, SIGINT, SIGHUP];

    fn of(raw: i32) -> Option<Received> {
        match raw {
            SIGTERM => Some(Received::Shutdown(Signal::Term)),
            SIGINT => Some(Received::Shutdown(Signal::Int)),
            SIGHUP => Some(Received::Hangup),
            _ => None,
        }
    }
}

/// The shutdown signals among `raw` (as `Signals::pending` reads them), in order; each
/// SIGHUP is logged on the way and goes no further, so neither start-up nor the phase
/// machine counts it as a reason to stop.
fn shutdown_signals(raw: impl Iterator<Item = i32>) -> impl Iterator<Item = Signal> {
    raw.filter_map(|raw| match Received::of(raw)? {
        Received::Shutdown(signal) => Some(signal),
        Received::Hangup => {
            log::info!("SIGHUP received: ignored (nothing to reload; SIGTERM stops gracefully)");
            None
        }
    })
}

/// The numbers behind the one-line shutdown report.
#[derive(Debug, Default)]
struct Report {
    signal_at: Option<Instant>,
    drain_at: Option<Instant>,
    last_accept_in_delay: Option<Instant>,
    open_at_signal: usize,
    accepted_after_signal: usize,
    idle_closed: usize,
    /// Finished their request and closed, or the client closed them.
    drained: usize,
    /// Ended by the client's fault during the drain: a reset, a timeout, a request left
    /// half-sent.
    failed: usize,
    answered_503: usize,
    cut: usize,
}

impl Report {
    fn count(&mut self, reason: CloseReason) {
        match reason {
            CloseReason::IdleOnShutdown => self.idle_closed += 1,
            CloseReason::AnsweredUnavailable => self.answered_503 += 1,
            CloseReason::CutAtDeadline => self.cut += 1,
            CloseReason::Done | CloseReason::PeerClosed => self.drained += 1,
            CloseReason::PeerReset
            | CloseReason::Rejected
            | CloseReason::PeerClosedMidRequest
            | CloseReason::UnreadBody
            | CloseReason::IdleTimeout
            | CloseReason::RequestTimeout
            | CloseReason::WriteTimeout
            | CloseReason::StreamFailed => self.failed += 1,
        }
    }

    fn log(&self, outcome: Outcome, now: Instant, pool_ms: u128) {
        let ms = |from: Option<Instant>, to: Option<Instant>| match (from, to) {
            (Some(a), Some(b)) => b.saturating_duration_since(a).as_millis(),
            _ => 0,
        };
        log::info!(
            "shutdown report: delay={}ms drain={}ms pool={}ms total={}ms; connections at signal={} accepted after={} idle_closed={} drained={} failed={} answered_503={} cut={}; exit {}",
            ms(self.signal_at, self.drain_at),
            ms(self.drain_at, Some(now)),
            pool_ms,
            ms(self.signal_at, Some(now)) + pool_ms,
            self.open_at_signal,
            self.accepted_after_signal,
            self.idle_closed,
            self.drained,
            self.failed,
            self.answered_503,
            self.cut,
            outcome.exit_code()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn received_names_every_handled_signal() {
        for raw in Received::HANDLED {
            assert!(
                Received::of(raw).is_some(),
                "signal {raw} is caught but means nothing"
            );
        }
    }

    #[test]
    fn shutdown_signals_pass_sigterm_and_sigint_and_drop_sighup() {
        let read: Vec<Signal> =
            shutdown_signals([SIGHUP, SIGTERM, SIGHUP, SIGINT].into_iter()).collect();
        assert_eq!(read, [Signal::Term, Signal::Int]);
        // What `bind` asks during start-up: a SIGHUP alone is no reason to stop.
        assert_eq!(shutdown_signals([SIGHUP].into_iter()).next(), None);
    }
}
