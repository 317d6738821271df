//! One event loop: one thread, one `mio::Poll`, and everything that touches its
//! `Registry` — its copy of the listener, its connections, its waker — plus its timers,
//! its buffers, its `Date` and its own shutdown phase.
//!
//! What it is: [`Loop`], built from a [`Seed`] on the thread that runs it, and
//! [`Loop::run`], which turns events into calls on connections until its phase machine
//! says `Done`, then returns what the coordinator needs for the report ([`Ended`]).
//! `WORKERS` loops run side by side and share nothing but the listening socket, the
//! handler and the database pool: no lock is taken on the request path.
//!
//! What it is not: it does not parse HTTP or decide responses (that is `conn` and `http`),
//! it does not decide *when* a shutdown moves on (that is `shutdown`), and it does not
//! read signals or talk to the application's handle: the coordinator (`coordinator.rs`)
//! does, and sends every loop the same stop order, with the instant of the one signal.
//!
//! One turn of the loop:
//! 1. `poll` until an event or the nearest deadline (timers, shutdown phase, accept pause),
//!    measured from the previous turn's `now`;
//! 2. read the clock once (`now`), and bring the `Date` value up to it;
//! 3. resume the connections that yielded last turn, then handle events: accept, deliver
//!    replies and take the coordinator's stop order (both ring the waker), give the
//!    coordinator a turn (loop 0 only), connection readiness;
//! 4. fire due timers;
//! 5. once a shutdown has begun, let its phase advance (`Empty`, `Tick`, `Empty`).
//!
//! Invariants:
//! - the loop never blocks except in `poll`;
//! - on the loop's thread only this module calls `Instant::now()` (and `steps.rs`, in the
//!   loop's last step, to time the report);
//! - tokens are never reused for a new socket while an event or a reply may still name
//!   the old one (see `slab`);
//! - a reply reaches the loop that owns its connection: each loop has its own inbox, and a
//!   reply handle carries the inbox of the loop that made it.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use super::accept::Acceptor;
use super::balance::Balance;
use super::coordinator::{Board, Coordinator, Ended, Orders};
use super::resume::ResumeList;
use super::shutdown::{Budget, Event, Phase};
use super::slab::{FIRST_RESERVED, Slab};
use super::steps::Shutdown;
use super::timers::Timers;
use crate::access_log::AccessLog;
use crate::conn::{BufPool, CloseReason, Conn, ConnId, Detail, Limits, LoopCx, Stage};
use crate::db::Pool;
use crate::handler::{Handler, Inbox, ReplyId};
use crate::http::date::DateCache;
use crate::http::response::Response;
use crate::stats::{Stats, Telemetry};

/// The listener's token in every loop's poll.
pub(super) const LISTENER: Token = Token(FIRST_RESERVED);
/// The waker's token in every loop's poll.
pub(super) const WAKER: Token = Token(FIRST_RESERVED + 1);
/// The coordinator's poll, nested in loop 0's.
pub(super) const COORDINATOR: Token = Token(FIRST_RESERVED + 2);

/// Timers fired per loop turn at most, so a flood of due timers (thousands of
/// connections timing out together) cannot hold one turn while sockets wait; the rest
/// fire on the next turn (the poll timeout is then zero).
const MAX_TIMERS_PER_TURN: usize = 4096;

/// Stale timer entries tolerated beyond twice the live connections before they are
/// dropped (see `Loop::close`).
const TIMER_SLACK: usize = 1024;

/// What `Server::bind` prepares for one loop on the binding thread, so that every
/// failure (a poll, a waker, registering the listener) is a bind error, before any
/// thread starts. `Send`: it moves to the loop's thread, where [`Loop::new`] builds the
/// rest (connections may hold a handler's stream, which need not be `Send`).
pub(super) struct Seed {
    /// The loop's number, from 0: in its thread's name and its log lines.
    pub(super) index: usize,
    pub(super) poll: Poll,
    /// This loop's copy of the shared listener, registered in `poll`.
    pub(super) accept: Acceptor,
    /// Where reply handles made on this loop deliver; its waker rings `poll`.
    pub(super) inbox: Arc<Inbox>,
    /// The coordinator's stop order for this loop.
    pub(super) orders: Arc<Orders>,
    /// Where this loop tells the coordinator how its shutdown goes.
    pub(super) board: Arc<Board>,
    pub(super) handler: Arc<dyn Handler>,
    pub(super) pool: Option<Arc<Pool>>,
    pub(super) limits: Limits,
    /// This loop's share of `BUFFER_BUDGET_BYTES`.
    pub(super) buffer_budget: usize,
    /// Another holder keeps the listening socket (systemd's socket unit): a shutdown
    /// leaves the accept queue to the next instance instead of serving it.
    pub(super) queue_kept: bool,
    /// This loop's view of every loop's connection count.
    pub(super) balance: Balance,
    pub(super) budget: Budget,
    /// Every loop's numbers (`/metrics`); this loop writes its own cells only.
    pub(super) stats: Arc<Stats>,
    /// Loops in all: connection ids are spread over them (see `ConnId`).
    pub(super) loops: usize,
    /// The loop's access log, when it is on.
    pub(super) access_log: Option<AccessLog>,
}

/// One event loop and everything it owns.
pub(super) struct Loop {
    pub(super) index: usize,
    pub(super) poll: Poll,
    pub(super) accept: Acceptor,
    pub(super) conns: Conns,
    pub(super) services: Services,
    pub(super) shutdown: Shutdown,
    orders: Arc<Orders>,
    pub(super) board: Arc<Board>,
    /// See [`Seed::queue_kept`].
    pub(super) queue_kept: bool,
    balance: Balance,
    /// Loops in all (see [`Seed::loops`]).
    loops: u64,
}

/// Every open connection, and when the loop must call each one again: at a time
/// (`timers`), or next turn (`resume`).
pub(super) struct Conns {
    pub(super) slab: Slab<Conn>,
    timers: Timers,
    resume: ResumeList,
}

/// What the loop lends a connection on every call (the makings of its `LoopCx`), and the
/// reply inbox's side that the loop reads.
pub(super) struct Services {
    bufs: BufPool,
    date: DateCache,
    limits: Limits,
    handler: Arc<dyn Handler>,
    /// Where reply handles deliver; its waker makes `poll` return.
    inbox: Arc<Inbox>,
    /// Reused vector for draining the inbox without allocating per wake-up.
    replies: Vec<(ReplyId, Response)>,
    /// The database pool every loop shares; the coordinator closes it after the last
    /// loop has drained.
    pub(super) pool: Option<Arc<Pool>>,
    /// This loop's counting and logging.
    pub(super) telemetry: Telemetry,
}

impl Services {
    /// What a call on the connection `token`, named `id`, is lent.
    fn cx(&mut self, now: Instant, token: Token, id: ConnId, stage: Stage) -> LoopCx<'_> {
        LoopCx {
            now,
            token,
            id,
            date: self.date.as_bytes(),
            limits: &self.limits,
            bufs: &mut self.bufs,
            handler: &*self.handler,
            inbox: &self.inbox,
            db: self.pool.as_deref(),
            stage,
            telemetry: &mut self.telemetry,
        }
    }
}

impl Loop {
    /// Builds the loop's own parts around its seed, on the loop's thread.
    pub(super) fn new(seed: Seed) -> Loop {
        Loop {
            index: seed.index,
            poll: seed.poll,
            accept: seed.accept,
            conns: Conns {
                slab: Slab::new(),
                timers: Timers::default(),
                resume: ResumeList::default(),
            },
            services: Services {
                bufs: BufPool::new(seed.limits.max_head, seed.buffer_budget),
                date: DateCache::new(Instant::now(), SystemTime::now()),
                limits: seed.limits,
                handler: seed.handler,
                inbox: seed.inbox,
                replies: Vec::new(),
                pool: seed.pool,
                telemetry: Telemetry::new(seed.stats, seed.index, seed.access_log),
            },
            shutdown: Shutdown::new(seed.budget),
            orders: seed.orders,
            board: seed.board,
            queue_kept: seed.queue_kept,
            balance: seed.balance,
            loops: seed.loops as u64,
        }
    }

    /// Runs the loop on this thread until its shutdown is complete, and returns how it
    /// went. An error means the poll itself failed, which leaves nothing to drain with.
    /// Loop 0 hosts the coordinator: its poll, nested in this one under `COORDINATOR`,
    /// gets a turn whenever it is readable.
    pub(super) fn run(mut self, mut host: Option<&mut Coordinator>) -> io::Result<Ended> {
        let mut events = Events::with_capacity(1024);
        let mut now = Instant::now();
        loop {
            // One clock reading a turn, as nginx does: the poll timeout is measured from
            // the reading the previous turn used, so a wake-up comes late by at most the
            // time that turn took — microseconds normally, milliseconds after a turn that
            // drains, accepts or times out thousands of connections — and never early.
            // Loop 0 also wakes when the coordinator must look without being rung (the
            // watchdog's feed, a starting successor's check).
            let mut host_wakeup = host.as_deref().and_then(|c| c.next_wakeup(now));
            let timeout = self.poll_timeout(now, host_wakeup);
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
                        self.take_stop_order(now);
                    }
                    COORDINATOR => {
                        if let Some(coordinator) = host.as_deref_mut() {
                            coordinator.turn(now);
                            host_wakeup = coordinator.next_wakeup(now);
                        }
                    }
                    token => {
                        let hung_up = event.is_read_closed() || event.is_error();
                        let readable = event.is_readable();
                        self.with_conn(token, now, |conn, cx| conn.ready(cx, readable, hung_up));
                    }
                }
            }
            // The wake-up asked for before the poll (or after the coordinator's turn above)
            // still holds: only the coordinator's turn changes it, and where it depends on
            // the clock (a successor not yet checked) it is due at any reading.
            if let Some(coordinator) = host.as_deref_mut()
                && host_wakeup.is_some_and(|at| now >= at)
            {
                coordinator.turn(now);
            }
            self.fire_timers(now);
            if self.accept.pause_over(now) {
                self.accept_all(now);
            }
            // The access log's lines go to the writer in batches (see `access_log.rs`).
            if let Some(log) = self.services.telemetry.access_log.as_mut() {
                log.flush_due(now);
            }
            // Only a shutdown feeds the phase machine, and only a shutdown ends the loop.
            if self.shutdown.phase.shutting_down()
                && let Some(ended) = self.advance_phase(now)
            {
                return Ok(ended);
            }
        }
    }

    /// The nearest thing the loop must wake up for; `host`: the coordinator's own wake-up,
    /// on loop 0.
    fn poll_timeout(&self, now: Instant, host: Option<Instant>) -> Option<Duration> {
        if !self.conns.resume.is_empty() {
            // Work is waiting: look for events, but do not sleep.
            return Some(Duration::ZERO);
        }
        // The nearest instant first, then one subtraction: comparing instants is a few
        // compares, while each `Instant` subtraction is a checked one with a borrow (this
        // runs every turn, so once a request for a client that sends one at a time).
        let nearest = earliest(
            earliest(self.conns.timers.next_at(), self.shutdown.phase.deadline()),
            earliest(self.accept.paused_until(), host),
        );
        let log = self.services.telemetry.access_log.as_ref();
        let nearest = earliest(nearest, log.and_then(AccessLog::flush_at));
        nearest.map(|at| at.saturating_duration_since(now))
    }

    /// Accepts until `WouldBlock`, the connection limit, or descriptor exhaustion. With
    /// several loops, every loop is woken for a new client and the fastest takes it; the
    /// others find `WouldBlock` (see the README on the shared listener).
    pub(super) fn accept_all(&mut self, now: Instant) {
        // Draining, the limit no longer applies: this is the one last accept of the
        // backlog (its clients connected before we stopped), and the listener closes
        // right after.
        let limited = !self.shutdown.phase.draining();
        loop {
            let open = self.conns.slab.len();
            // Another loop, well behind, was woken for the same clients: leave them to it.
            if limited && self.balance.ahead(open) {
                return;
            }
            let Some((socket, peer)) = self.accept.next(now, open, limited) else {
                return;
            };
            self.add_conn(socket, peer, now);
        }
    }

    fn add_conn(&mut self, socket: TcpStream, peer: SocketAddr, now: Instant) {
        // Responses are written whole; Nagle would only delay the last segment.
        let _ = socket.set_nodelay(true);
        let cells = &self.services.telemetry.cells;
        let id = ConnId(cells.accepted.get() * self.loops + self.index as u64 + 1);
        // The access log's first field is the client's address: kept from the start.
        let detail = self
            .services
            .telemetry
            .access_log
            .is_some()
            .then(|| Box::new(Detail::of_peer(Some(peer))));
        let token = self.conns.slab.insert(Conn::new(socket, now, id, detail));
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
        // Counted before the `open` gauge rises (and in `close`, before it falls): a
        // scrape never sees a connection open that it does not see accepted, or gone
        // without its reason. New, it is idle: the `idle` gauge follows its state from
        // here (`State::set`).
        let cells = &self.services.telemetry.cells;
        cells.accepted.add(1);
        cells.idle_changed(true);
        if phase.shutting_down() {
            // During the drain delay, or the last accept of the backlog.
            cells.accepted_after_signal.add(1);
        }
        self.set_open();
        if matches!(phase, Phase::Delaying { .. }) {
            self.accept.accepted_in_delay(now);
        }
    }

    /// Runs `f` on the connection named by `token` (ignoring stale tokens), then either
    /// reschedules its timer or closes it.
    pub(super) fn with_conn<F>(&mut self, token: Token, now: Instant, f: F)
    where
        F: FnOnce(&mut Conn, &mut LoopCx<'_>) -> Result<(), CloseReason>,
    {
        let Some(conn) = self.conns.slab.get_mut(token) else {
            return; // a stale event or reply for a connection already closed
        };
        let stage = self.shutdown.phase.stage();
        let result = f(conn, &mut self.services.cx(now, token, conn.id, stage));
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
        if conn.is_idle() {
            self.services.telemetry.cells.idle_changed(false);
        }
        let _ = self.poll.registry().deregister(conn.socket_mut());
        let id = conn.id;
        drop(conn);
        if reason.is_routine() {
            log::debug!("{id}: closed ({reason})");
        } else {
            log::info!("{id}: closed ({reason})");
        }
        // Counted once, for `/metrics` and the shutdown report alike (`Report::of_loop`).
        let shutting_down = self.shutdown.phase.shutting_down();
        self.services.telemetry.cells.closed(reason, shutting_down);
        self.set_open();
        self.drop_stale_timers();
        if self.accept.slot_freed() {
            self.accept_all(now);
        }
    }

    /// The loop's connection count changed: tell the balance and `/metrics`.
    fn set_open(&mut self) {
        let open = self.conns.slab.len();
        self.balance.set_open(open);
        self.services.telemetry.cells.open.set(open as u64);
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

    /// The coordinator rings the waker to order the stop (the one signal, or the
    /// application's request, with the instant it came): fed to the phase machine, whose
    /// deadline then counts from that instant in every loop alike.
    fn take_stop_order(&mut self, now: Instant) {
        if let Some((by, at)) = self.orders.take() {
            self.advance(Event::Stop(by, at), now);
        }
    }

    /// Step 5 of a turn, once a shutdown has begun (`Serving` has no timed transitions):
    /// lets the phase advance, and returns how the loop ended once it is `Done`. Empty
    /// before Tick: a drain that completes in the turn its deadline passes is a clean
    /// drain. Empty after Tick too: the Tick that ends a drain delay starts the drain, and
    /// it may find nothing left to drain.
    fn advance_phase(&mut self, now: Instant) -> Option<Ended> {
        if self.conns.slab.is_empty() {
            self.advance(Event::Empty(now), now);
        }
        self.advance(Event::Tick(now), now);
        if self.conns.slab.is_empty() {
            self.advance(Event::Empty(now), now);
        }
        let outcome = self.shutdown.phase.outcome()?;
        Some(self.ended(outcome))
    }
}

/// The earlier of two optional instants; `None` is "never".
fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
