//! One client connection: the I/O shell around the state machine in `state.rs`.
//!
//! | file | role |
//! | --- | --- |
//! | `mod.rs` | [`Conn`] and its entry points: the events the loop brings, and `drive` |
//! | `state.rs` | where a connection is in its life, as an enum, drawn in its doc |
//! | `io.rs` | [`Socket`], reading, writing, discarding, under mio's rules |
//! | `exchange.rs` | from bytes to requests: heads, bodies, the handler call |
//! | `answer.rs` | from the handler's answer to bytes on their way out, and the server's own answers |
//! | `lifecycle.rs` | idle, the drain rule, the deadline rule, the lingering close |
//! | `buf.rs` | the input and output buffers, lent by a pool |
//! | `close.rs` | [`CloseReason`]: why a connection closed |
//! | `account.rs` | what an answer leaves behind: counted, and logged when asked |
//!
//! What it is: [`Conn`] reads from its socket into a lent input buffer, turns the bytes
//! into requests with the sans-IO `http` module, calls the handler, encodes answers into a
//! lent output buffer and writes them out — in order, with back-pressure, under timers.
//!
//! What it is not: it never touches the mio `Registry` (registration is the event
//! loop's), and it never reads the clock (`LoopCx::now` is passed in).
//!
//! How the loop talks to it: every entry point (`ready`, `resume`, `timer`, `reply`,
//! `start_drain`, `force_close`) returns `Ok(())` to keep the connection, or `Err(CloseReason)`
//! to have the loop close it. The loop then asks [`Conn::deadline`] when it next needs a
//! wake-up, and [`Conn::take_yielded`] whether to resume it next turn.
//!
//! mio's rules, followed here: read and write until `WouldBlock` (events are
//! edge-triggered) — or until the round budget runs out, and then remember that the
//! socket may still hold bytes (`yielded`) — retry on `Interrupted`, and treat a short
//! write as progress, keeping the unsent bytes.

mod account;
mod answer;
mod buf;
mod close;
mod exchange;
mod io;
mod lifecycle;
mod state;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Instant;

use mio::Token;
use mio::net::TcpStream;

pub use account::{ConnId, Detail};
pub use buf::BufPool;
pub use close::{CloseReason, Heading};
pub use io::Socket;
pub use lifecycle::FRESH_GRACE;
pub use state::{LINGER, LINGER_MAX, Timeouts};

use crate::db::Pool;
use crate::handler::{Handler, Inbox};
use crate::http::error::RequestError;
use crate::http::response::Response;
use crate::stats::Telemetry;
use buf::{InBuf, OutBuf};
use io::ReadSide;
use state::{State, Waiting, body_deadline};

/// Read-handle-write rounds one call may run before the connection yields the loop to
/// the others. A client that keeps its socket full (pipelining, or a flood during a
/// lingering close) always has more to read: without a bound it would hold the loop, and
/// every other connection, timer and signal, for as long as it likes. A well-behaved
/// client needs one or two rounds, so this bound is never felt. (A round reads at most
/// one input buffer, or what is left of a body up to `MAX_BODY_BYTES`.)
const ROUNDS_PER_CALL: usize = 8;

/// What the loop lends a connection for the length of one call.
pub struct LoopCx<'a> {
    /// The loop's reading of the clock for this turn: the only time a connection sees.
    pub now: Instant,
    /// The connection's token, for reply ids.
    pub token: Token,
    /// The connection's name in logs.
    pub id: ConnId,
    /// The current `Date` value, formatted once a second by the loop.
    pub date: &'a [u8],
    /// Size limits and timeouts.
    pub limits: &'a Limits,
    /// The pool input and output buffers are lent from.
    pub bufs: &'a mut BufPool,
    /// The application that answers requests.
    pub handler: &'a dyn Handler,
    /// Where reply handles deliver answers that come later.
    pub inbox: &'a Arc<Inbox>,
    /// The database pool, when one is configured.
    pub db: Option<&'a Pool>,
    /// Where the server's shutdown stands.
    pub stage: Stage,
    /// The loop's counting and logging: its cells in `/metrics`, its access log.
    pub telemetry: &'a mut Telemetry,
}

/// Where the server's shutdown stands, as far as a connection is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// No shutdown: a connection persists as long as its client and its timeouts allow.
    Serving,
    /// A shutdown signal came and the drain has not begun (the drain delay): still
    /// serving, but every response from now on carries `Connection: close`, and a
    /// connection closes after its current request.
    Announced,
    /// The drain has begun: as `Announced`, and a connection that has not sent a request
    /// yet is closed once its grace is over (see `Conn::fresh_until`).
    Draining,
}

impl Stage {
    /// From the signal on: answers close their connection.
    pub fn shutting_down(self) -> bool {
        self != Stage::Serving
    }
}

/// Size limits and timeouts, from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The timeouts every connection obeys.
    pub timeouts: Timeouts,
    /// `MAX_HEADER_BYTES`: request line and header fields at most.
    pub max_head: usize,
    /// `MAX_BODY_BYTES`: a request body at most.
    pub max_body: usize,
}

/// One client connection: its socket, where it is in its life (`state.rs`), and the
/// buffers it has been lent. Generic over its [`Socket`] so it can be driven without
/// one in tests.
pub struct Conn<S = TcpStream> {
    socket: S,
    /// The connection's name in logs (`c17`).
    pub id: ConnId,
    state: State,
    read: ReadSide,
    /// Lent by the loop while a request is in progress; `None` when idle.
    input: Option<Box<InBuf>>,
    /// Lent by the loop while output is pending; `None` when everything is written.
    output: Option<Box<OutBuf>>,
    /// When pending output last made progress; the write timer runs from here.
    write_since: Option<Instant>,
    /// Number of the current request on this connection, for
    /// [`ReplyId`](crate::handler::ReplyId).
    seq: u32,
    /// Earliest wake-up the loop has queued for this connection (see `server::timers`).
    pub scheduled: Option<Instant>,
    /// The last call stopped at `ROUNDS_PER_CALL` with work perhaps left. Events are
    /// edge-triggered, so none may come for what is already in the socket: the loop must
    /// call [`Conn::resume`] on its next turn (nginx's posted events).
    yielded: bool,
    /// On the loop's list of connections to resume next turn (kept by the loop, like
    /// `scheduled`): at most once on it, and not driven by events meanwhile.
    pub posted: bool,
    /// What the log lines say of the request in progress, once anyone reads them (see
    /// `account.rs`); kept for the connection's life.
    detail: Option<Box<Detail>>,
}

impl<S: Socket> Conn<S> {
    /// A connection just accepted at `now`, named `id`: idle, nothing read, nothing owed.
    /// `detail`: kept from the start when the access log wants the client's address.
    pub fn new(socket: S, now: Instant, id: ConnId, detail: Option<Box<Detail>>) -> Conn<S> {
        Conn {
            socket,
            id,
            detail,
            state: State::Idle { since: now },
            read: ReadSide::Ready,
            input: None,
            output: None,
            write_since: None,
            seq: 0,
            scheduled: None,
            yielded: false,
            posted: false,
        }
    }

    /// The socket, for the loop to register and deregister.
    pub fn socket_mut(&mut self) -> &mut S {
        &mut self.socket
    }

    /// The socket is readable (perhaps with the peer hung up) or writable: do all the
    /// work that allows.
    pub fn ready(
        &mut self,
        cx: &mut LoopCx<'_>,
        readable: bool,
        hung_up: bool,
    ) -> Result<(), CloseReason> {
        if self.read != ReadSide::Eof {
            if hung_up {
                self.read = ReadSide::ReadyUntilEof;
            } else if readable && self.read == ReadSide::Empty {
                self.read = ReadSide::Ready;
            }
        }
        if self.posted {
            // Its turn comes when the loop resumes it: noted, not driven twice a turn.
            return Ok(());
        }
        self.drive(cx)
    }

    /// Whether the last call yielded with work left (and the loop must come back); asking
    /// clears it.
    pub fn take_yielded(&mut self) -> bool {
        std::mem::take(&mut self.yielded)
    }

    /// The loop's next turn after a call yielded: carry on where it stopped (during a
    /// drain, the drain's decisions wait until the socket has been read out).
    pub fn resume(&mut self, cx: &mut LoopCx<'_>) -> Result<(), CloseReason> {
        self.posted = false;
        if cx.stage == Stage::Draining {
            self.start_drain(cx)
        } else {
            self.drive(cx)
        }
    }

    /// A timer may have expired. (One arm per timer rule, each with its one-line rule
    /// above it: the table reads best whole, so it is longer than most functions here.)
    pub fn timer(&mut self, cx: &mut LoopCx<'_>) -> Result<(), CloseReason> {
        let now = cx.now;
        let t = cx.limits.timeouts;
        if self.write_since.is_some_and(|since| now >= since + t.write) {
            return Err(CloseReason::WriteTimeout);
        }
        let quiet = self.is_quiet();
        let grace_over =
            cx.stage == Stage::Draining && self.fresh_until().is_some_and(|end| now >= end);
        match &mut self.state {
            // Rule: during a shutdown, a connection that never sent a request is closed
            // once its grace is over.
            State::Idle { .. } if quiet && grace_over => Err(CloseReason::IdleOnShutdown),
            // Rule: a quiet connection past its keep-alive timeout is closed silently. A
            // connection whose responses are still being written is not quiet.
            State::Idle { since } if quiet && now >= *since + t.keepalive => {
                Err(CloseReason::IdleTimeout)
            }
            // Rule: a head or body that does not arrive in time is answered 408: the head
            // within the header timeout, the body without a gap longer than the body
            // timeout, and the whole request within the request timeout.
            State::Head { since, .. } if now >= *since + t.header.min(t.request) => {
                self.time_out(cx)
            }
            State::Body(b) if now >= body_deadline(b.since, b.started, &t) => self.time_out(cx),
            // Rule: a body being discarded that does not arrive in time ends the
            // connection; its request has been answered already.
            State::Discarding(d) if now >= body_deadline(d.since, d.started, &t) => {
                let closing = State::Closing {
                    reason: CloseReason::RequestTimeout,
                };
                self.state.set(closing, cx);
                self.drive(cx)
            }
            // Rule: an `After` answer goes out when its timer fires.
            State::Waiting(w) => match &**w {
                Waiting::Timer {
                    at,
                    response,
                    exchange,
                } if now >= *at => {
                    // A clone, because `respond` borrows `self`: cheap for the static and
                    // inline bodies timer answers carry, one copy for a large one.
                    let (response, exchange) = (response.clone(), *exchange);
                    self.respond(cx, exchange, &response);
                    self.drive(cx)
                }
                _ => Ok(()),
            },
            // Rule: a stream sends its next chunk (or its end) when its timer fires
            // (`process` does it, subject to back-pressure).
            State::Streaming(s) if now >= s.next_at => self.drive(cx),
            // Rule: a lingering close ends at its bound.
            // Rule: a lingering close ends when the client has been quiet for LINGER, or
            // at LINGER_MAX; what arrived meanwhile is read first, so it cannot turn the
            // close into an RST.
            State::Lingering {
                until,
                stop,
                reason,
            } if now >= (*until).min(*stop) => {
                let reason = *reason;
                self.discard_input(cx);
                Err(reason)
            }
            _ => Ok(()),
        }
    }

    /// A reply arrived through a [`ReplyHandle`](crate::handler::ReplyHandle).
    pub fn reply(
        &mut self,
        cx: &mut LoopCx<'_>,
        seq: u32,
        response: Response,
    ) -> Result<(), CloseReason> {
        match &self.state {
            // Rule: only the request this connection is waiting on gets the reply; a reply
            // for an earlier request (one answered 500 after a panic) is dropped.
            State::Waiting(w) => match **w {
                Waiting::Reply { seq: s, exchange } if s == seq => {
                    self.respond(cx, exchange, &response);
                    self.drive(cx)
                }
                _ => Ok(()),
            },
            _ => Ok(()),
        }
    }

    /// When the loop must next call [`Conn::timer`].
    #[inline(always)] // after every call on a connection: its common case is a few compares
    pub fn deadline(&self, limits: &Limits, stage: Stage) -> Option<Instant> {
        // Nothing buffered either way and no drain: no grace to weigh, no write timer
        // (one runs only while output waits), and no rule below applies but the state's
        // own. The case after nearly every call, answered early.
        if self.input.is_none() && self.output.is_none() && stage != Stage::Draining {
            return self.state.deadline(&limits.timeouts);
        }
        let grace = match stage {
            Stage::Draining => self.fresh_until(),
            Stage::Serving | Stage::Announced => None,
        };
        let state = match &self.state {
            // Not idle while responses are still going out (the write timer guards
            // that), and a stream held back by a full output buffer waits for writes.
            State::Idle { .. } if !self.is_quiet() => None,
            State::Idle { since } if grace.is_some() => {
                grace.map(|end| end.min(*since + limits.timeouts.keepalive))
            }
            State::Streaming(_) if self.backed_up() => None,
            state => state.deadline(&limits.timeouts),
        };
        let write = self.write_since.map(|since| since + limits.timeouts.write);
        match (state, write) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Hands the buffers back to the pool; the connection is about to be dropped.
    pub fn release(&mut self, bufs: &mut BufPool) {
        if let Some(buf) = self.input.take() {
            bufs.give_input(buf);
        }
        if let Some(buf) = self.output.take() {
            bufs.give_output(buf);
        }
    }

    /// Nothing more can happen until the client sends more: a partial request keeps its
    /// bytes, not a whole buffer (see `buf.rs`). A body's buffer stays, counted against
    /// the budget since the body was accepted. Returns whether the request was refused
    /// instead: a head still arriving while the loop is over its budget gets 503 — it
    /// holds memory, and would be refused at its end anyway.
    fn park(&mut self, cx: &mut LoopCx<'_>) -> bool {
        if matches!(self.state, State::Head { .. }) && cx.bufs.over_budget() {
            self.reject(cx, RequestError::Overloaded);
            return true;
        }
        if !matches!(self.state, State::Body(_))
            && let Some(input) = self.input.take()
        {
            self.input = Some(cx.bufs.park_input(input));
        }
        false
    }

    /// Reads, handles and writes until nothing more can happen without a new event.
    fn drive(&mut self, cx: &mut LoopCx<'_>) -> Result<(), CloseReason> {
        for _ in 0..ROUNDS_PER_CALL {
            let read = self.fill(cx)?;
            let handled = self.process(cx);
            let wrote = self.flush(cx)?;
            self.settle(cx)?;
            // Quiet, and the socket said it is empty: the next round would read nothing,
            // handle nothing, write nothing and park nothing, so it is not run (a client
            // that sends one request at a time ends every call here).
            if self.is_quiet() && self.read == ReadSide::Empty {
                return Ok(());
            }
            if !(read || handled || wrote) {
                if self.park(cx) {
                    continue; // refused: the answer goes out in the next round
                }
                return Ok(());
            }
        }
        // Still making progress after the last round: let the others have the loop.
        self.yielded = true;
        Ok(())
    }
}
