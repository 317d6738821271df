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
//! Where each concern lives:
//!
//! | file | concern |
//! | --- | --- |
//! | `mod.rs` | `bind`, the loop turn, calling a connection and closing it |
//! | `accept.rs` | the listener: accepting, `MAX_CONNECTIONS`, the EMFILE pause |
//! | `resume.rs` | connections that yielded, resumed next turn |
//! | `timers.rs` | connections' wake-ups |
//! | `slab.rs` | connections by token, tokens never reused |
//! | `signals.rs` | which signals are caught and what each one means |
//! | `handle.rs` | the application's way to ask for the shutdown: [`ShutdownHandle`] |
//! | `shutdown.rs` | the phase machine: when the shutdown moves on |
//! | `steps.rs` | the shutdown steps, carried out |
//! | `report.rs` | the one-line shutdown report |
//!
//! One turn of the loop:
//! 1. `poll` until an event or the nearest deadline (timers, shutdown phase, accept pause),
//!    measured from the previous turn's `now`;
//! 2. read the clock once (`now`), and bring the `Date` value up to it;
//! 3. resume the connections that yielded last turn, then handle events: accept,
//!    deliver replies and take a shutdown request (both ring the waker), signals,
//!    connection readiness;
//! 4. fire due timers;
//! 5. once a shutdown has begun, let its phase advance (`Empty`, `Tick`, `Empty`).
//!
//! Invariants:
//! - the loop never blocks except in `poll` — and once, in the last shutdown step
//!   (`steps.rs`, `finish`): after the last connection is gone, `Pool::close` waits for
//!   the database workers to disconnect, at most `POOL_CLOSE_BOUND` (2 s);
//! - on the loop's thread only this module calls `Instant::now()` — and `Pool::close`,
//!   in that same step, to keep its wait within the bound;
//! - tokens are never reused for a new socket while an event or a reply may still name
//!   the old one (see `slab`).

mod accept;
mod handle;
mod report;
mod resume;
mod shutdown;
mod signals;
mod slab;
mod steps;
mod timers;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};

pub use handle::ShutdownHandle;
pub use shutdown::{Budget, Event, Outcome, Phase, Source, Step};
pub use signals::{Signal, Signals, install_signal_handlers};

use crate::config::Config;
use crate::conn::{BufPool, CloseReason, Conn, Limits, LoopCx, Stage, Timeouts};
use crate::db::Pool;
use crate::handler::{Handler, Inbox, ReplyId};
use crate::http::date::DateCache;
use crate::http::response::Response;
use accept::Acceptor;
use resume::ResumeList;
use signals::shutdown_signals;
use slab::{FIRST_RESERVED, Slab};
use steps::Shutdown;
use timers::Timers;

const LISTENER: Token = Token(FIRST_RESERVED);
const WAKER: Token = Token(FIRST_RESERVED + 1);
const SIGNALS: Token = Token(FIRST_RESERVED + 2);

/// Timers fired per loop turn at most, so a flood of due timers (thousands of
/// connections timing out together) cannot hold one turn while sockets wait; the rest
/// fire on the next turn (the poll timeout is then zero).
const MAX_TIMERS_PER_TURN: usize = 4096;

/// Stale timer entries tolerated beyond twice the live connections before they are
/// dropped (see `Server::close`).
const TIMER_SLACK: usize = 1024;

/// Why [`Server::bind`] failed, by the step that failed. `main` prints it as one line and
/// exits 1.
#[derive(Debug)]
pub enum BindError {
    /// The listening socket: the address is in use, not this host's, or needs privileges.
    Listen {
        /// The address asked for.
        addr: SocketAddr,
        /// What the system said.
        error: io::Error,
    },
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
    /// Bound and ready: call [`Server::run`].
    Ready(Box<Server>),
    /// A shutdown signal (not a SIGHUP) arrived during start-up: never report ready, exit 0.
    Signalled(Signal),
}

/// The engine: one event loop serving one listener with one [`Handler`], and shutting
/// down gracefully when a signal or a [`ShutdownHandle`] asks.
///
/// [`Server::bind`] it, take a [`Server::shutdown_handle`] if the application wants to
/// stop it itself, then [`Server::run`] it; `run` returns the [`Outcome`] once the
/// shutdown is over. A `Server` is not `Send` (a connection may hold a handler's
/// [`Stream`](crate::handler::Stream), whose iterator need not be): bind it on the thread
/// that will run it, and send the shutdown handle, which is `Send`, wherever it is needed.
pub struct Server {
    poll: Poll,
    signals: Signals,
    accept: Acceptor,
    conns: Conns,
    services: Services,
    shutdown: Shutdown,
}

/// Every open connection, and when the loop must call each one again: at a time
/// (`timers`), or next turn (`resume`).
struct Conns {
    slab: Slab<Conn>,
    timers: Timers,
    resume: ResumeList,
}

/// What the loop lends a connection on every call (the makings of its `LoopCx`), and the
/// reply inbox's side that the loop reads.
struct Services {
    bufs: BufPool,
    date: DateCache,
    limits: Limits,
    handler: Arc<dyn Handler>,
    /// Where reply handles deliver; its waker makes `poll` return.
    inbox: Arc<Inbox>,
    /// Reused vector for draining the inbox without allocating per wake-up.
    replies: Vec<(ReplyId, Response)>,
    /// The database pool; closed after the last connection (shutdown step 6).
    pool: Option<Pool>,
}

impl Services {
    /// What a call on the connection `token` is lent.
    fn cx(&mut self, now: Instant, token: Token, stage: Stage) -> LoopCx<'_> {
        LoopCx {
            now,
            token,
            date: self.date.as_bytes(),
            limits: &self.limits,
            bufs: &mut self.bufs,
            handler: &*self.handler,
            inbox: &self.inbox,
            db: self.pool.as_ref(),
            stage,
        }
    }
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
        let accept = Acceptor::bind(
            config.listen,
            config.listen_backlog,
            config.max_connections,
            poll.registry(),
            LISTENER,
        )?;
        let waker = Waker::new(poll.registry(), WAKER).map_err(BindError::EventLoop)?;

        if let Some(signal) = shutdown_signals(signals.pending()).next() {
            return Ok(Started::Signalled(signal));
        }
        let pool = start_pool(config)?;

        let services = Services {
            bufs: BufPool::new(config.max_header_bytes, config.buffer_budget_bytes),
            date: DateCache::new(Instant::now(), SystemTime::now()),
            limits: limits(config),
            handler: Arc::new(handler),
            inbox: Arc::new(Inbox::new(waker)),
            replies: Vec::new(),
            pool,
        };
        let budget = Budget {
            drain_delay: config.drain_delay,
            shutdown_timeout: config.shutdown_timeout,
        };
        Ok(Started::Ready(Box::new(Server {
            poll,
            signals,
            accept,
            conns: Conns {
                slab: Slab::new(),
                timers: Timers::default(),
                resume: ResumeList::default(),
            },
            services,
            shutdown: Shutdown::new(budget),
        })))
    }

    /// The address the server listens on: the real port when the configuration asked for
    /// port 0.
    pub fn local_addr(&self) -> SocketAddr {
        self.accept.local_addr()
    }

    /// Runs the loop on this thread until the shutdown is complete, and returns how it
    /// went; [`Outcome::exit_code`] is the code to exit with. An error means the poll
    /// itself failed, which leaves nothing to drain with.
    pub fn run(mut self) -> io::Result<Outcome> {
        log::info!("Listening on http://{}", self.local_addr());
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
            self.services.date.update(now, SystemTime::now);

            self.resume_posted(now);
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept_all(now),
                    WAKER => {
                        self.deliver_replies(now);
                        self.take_shutdown_request(now);
                    }
                    SIGNALS => self.take_signals(now),
                    token => {
                        let hung_up = event.is_read_closed() || event.is_error();
                        let readable = event.is_readable();
                        self.with_conn(token, now, |conn, cx| conn.ready(cx, readable, hung_up));
                    }
                }
            }
            self.fire_timers(now);
            if self.accept.pause_over(now) {
                self.accept_all(now);
            }
            // Only a shutdown feeds the phase machine, and only a shutdown ends the loop.
            if self.shutdown.phase.shutting_down()
                && let Some(outcome) = self.advance_phase(now)
            {
                return Ok(outcome);
            }
        }
    }

    /// The nearest thing the loop must wake up for.
    fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        if !self.conns.resume.is_empty() {
            // Work is waiting: look for events, but do not sleep.
            return Some(Duration::ZERO);
        }
        let until = |at: Instant| at.saturating_duration_since(now);
        let phase = self.shutdown.phase.deadline().map(until);
        let accept = self.accept.paused_until().map(until);
        [self.conns.timers.next_in(now), phase, accept]
            .into_iter()
            .flatten()
            .min()
    }

    /// Accepts until `WouldBlock`, the connection limit, or descriptor exhaustion.
    fn accept_all(&mut self, now: Instant) {
        // Draining, the limit no longer applies: this is the one last accept of the
        // backlog (its clients connected before we stopped), and the listener closes
        // right after.
        let limited = !self.shutdown.phase.draining();
        while let Some(socket) = self.accept.next(now, self.conns.slab.len(), limited) {
            self.add_conn(socket, now);
        }
    }

    fn add_conn(&mut self, socket: TcpStream, now: Instant) {
        // Responses are written whole; Nagle would only delay the last segment.
        let _ = socket.set_nodelay(true);
        let token = self.conns.slab.insert(Conn::new(socket, now));
        let Some(conn) = self.conns.slab.get_mut(token) else {
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
            self.conns.slab.remove(token);
            return;
        }
        let phase = self.shutdown.phase;
        let at = conn.deadline(&self.services.limits, phase.stage());
        self.conns.timers.schedule(token, at, &mut conn.scheduled);
        if phase.shutting_down() {
            // During the drain delay, or the last accept of the backlog.
            self.shutdown.report.accepted_after_start += 1;
        }
        if matches!(phase, Phase::Delaying { .. }) {
            self.accept.accepted_in_delay(now);
        }
    }

    /// Runs `f` on the connection named by `token` (ignoring stale tokens), then either
    /// reschedules its timer or closes it.
    fn with_conn<F>(&mut self, token: Token, now: Instant, f: F)
    where
        F: FnOnce(&mut Conn, &mut LoopCx<'_>) -> Result<(), CloseReason>,
    {
        let Some(conn) = self.conns.slab.get_mut(token) else {
            return; // a stale event or reply for a connection already closed
        };
        let stage = self.shutdown.phase.stage();
        let result = f(conn, &mut self.services.cx(now, token, stage));
        match result {
            Ok(()) => {
                let at = conn.deadline(&self.services.limits, stage);
                self.conns.timers.schedule(token, at, &mut conn.scheduled);
                if conn.take_yielded() {
                    self.conns.resume.post(token, &mut conn.posted);
                }
            }
            Err(reason) => self.close(token, reason, now),
        }
    }

    fn close(&mut self, token: Token, reason: CloseReason, now: Instant) {
        let Some(mut conn) = self.conns.slab.remove(token) else {
            return;
        };
        conn.release(&mut self.services.bufs);
        let _ = self.poll.registry().deregister(conn.socket_mut());
        drop(conn);
        if reason.is_routine() {
            log::debug!("conn {}: closed ({reason})", token.0);
        } else {
            log::info!("conn {}: closed ({reason})", token.0);
        }
        if self.shutdown.phase.shutting_down() {
            self.shutdown.report.count(reason);
        }
        self.drop_stale_timers();
        if self.accept.slot_freed() {
            self.accept_all(now);
        }
    }

    /// A closed connection's timer entries stay in the heap until their time comes: with
    /// a long keep-alive timeout and many short connections they would pile up. Once they
    /// outnumber the live connections, keep only each connection's current entry
    /// (amortised, O(1) per close).
    fn drop_stale_timers(&mut self) {
        let Conns { slab, timers, .. } = &mut self.conns;
        if timers.len() > 2 * slab.len() + TIMER_SLACK {
            timers.retain(|at, token| {
                slab.get_mut(token)
                    .is_some_and(|conn| conn.scheduled == Some(at))
            });
        }
    }

    /// Gives the connections that yielded last turn their next share before this turn's
    /// events: a connection with endless input gets one share a turn, like any other.
    fn resume_posted(&mut self, now: Instant) {
        if self.conns.resume.is_empty() {
            return;
        }
        let mut turn = self.conns.resume.take();
        for token in turn.drain(..) {
            // A token closed since it was posted no longer exists: ignored like a stale event.
            self.with_conn(token, now, |conn, cx| conn.resume(cx));
        }
        self.conns.resume.done(turn);
    }

    fn deliver_replies(&mut self, now: Instant) {
        let mut replies = std::mem::take(&mut self.services.replies);
        self.services.inbox.drain_into(&mut replies);
        for (id, response) in replies.drain(..) {
            self.with_conn(id.token, now, |conn, cx| conn.reply(cx, id.seq, response));
        }
        self.services.replies = replies;
    }

    fn fire_timers(&mut self, now: Instant) {
        for _ in 0..MAX_TIMERS_PER_TURN {
            let Some((at, token)) = self.conns.timers.pop_due(now) else {
                return;
            };
            let Some(conn) = self.conns.slab.get_mut(token) else {
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
            self.advance(Event::Stop(Source::Signal(signal), now), now);
        }
    }

    /// The waker also rings for a [`ShutdownHandle`]: a request is fed to the phase
    /// machine like a signal.
    fn take_shutdown_request(&mut self, now: Instant) {
        if self.shutdown.requests.take() {
            self.advance(Event::Stop(Source::Application, now), now);
        }
    }

    /// Step 5 of a turn, once a shutdown has begun (`Serving` has no timed transitions):
    /// lets the phase advance, and returns the outcome once it is `Done`. Empty before
    /// Tick: a drain that completes in the turn its deadline passes is a clean drain. Empty
    /// after Tick too: the Tick that ends a drain delay starts the drain, and it may find
    /// nothing left to drain.
    fn advance_phase(&mut self, now: Instant) -> Option<Outcome> {
        if self.conns.slab.is_empty() {
            self.advance(Event::Empty(now), now);
        }
        self.advance(Event::Tick(now), now);
        if self.conns.slab.is_empty() {
            self.advance(Event::Empty(now), now);
        }
        self.shutdown.phase.outcome()
    }
}

/// The connection limits and timeouts, from the configuration.
fn limits(config: &Config) -> Limits {
    Limits {
        timeouts: Timeouts {
            keepalive: config.keepalive_timeout,
            header: config.header_timeout,
            body: config.body_timeout,
            request: config.request_timeout,
            write: config.write_timeout,
        },
        max_head: config.max_header_bytes,
        max_body: config.max_body_bytes,
    }
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
