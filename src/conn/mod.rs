//! One client connection: the I/O shell around the state machine in `state.rs`.
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

mod buf;
mod close;
mod state;

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::ops::Range;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::Token;
use mio::net::TcpStream;

pub use buf::BufPool;
pub use close::CloseReason;
pub use state::{LINGER, LINGER_MAX, Timeouts};

use crate::db::Pool;
use crate::handler::{Answer, Ctx, Handler, Inbox, ReplyId};
use crate::http::body::{BodyDecoder, Framing};
use crate::http::error::RequestError;
use crate::http::request::{self, Head, Method, Persistence, Request, Version};
use crate::http::response::{self, Delivery, Length, Response, Status};
use buf::{InBuf, OutBuf};
use state::{BodyState, Discarding, Exchange, State, Streaming, Waiting, body_deadline};

/// Stop taking new requests off the input while this much output waits for the client:
/// a client that pipelines without reading cannot make us buffer without bound.
const OUTPUT_HIGH_WATER: usize = 64 * 1024;

/// The longest body that is read and dropped to keep a connection after answering its
/// request from the head alone (a 404 or 405 to a POST, say). Longer, and the answer says
/// `Connection: close` instead: the client is told at once, and nobody waits for an upload
/// that only gets thrown away. Go's net/http draws the same line at 256 KiB
/// (`maxPostHandlerReadBytes`).
const DISCARD_MAX: u64 = 256 * 1024;

/// During a shutdown, how long a connection that has not sent a request yet may take to
/// send its first one, counted from its accept. Long enough for a client that has just
/// connected; short enough not to hold the drain up for a client that never will.
pub const FRESH_GRACE: Duration = Duration::from_secs(1);

/// Read-handle-write rounds one call may run before the connection yields the loop to
/// the others. A client that keeps its socket full (pipelining, or a flood during a
/// lingering close) always has more to read: without a bound it would hold the loop, and
/// every other connection, timer and signal, for as long as it likes. A well-behaved
/// client needs one or two rounds, so this bound is never felt. (A round reads at most
/// one input buffer, or what is left of a body up to `MAX_BODY_BYTES`.)
const ROUNDS_PER_CALL: usize = 8;

/// The furthest a handler's timer may reach. `Instant + Duration` panics on overflow,
/// and a handler that asks for longer than this has asked for "never": a year is as good.
const MAX_HANDLER_WAIT: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// When a wait a handler asked for ends.
fn after(now: Instant, wait: Duration) -> Instant {
    now + wait.min(MAX_HANDLER_WAIT)
}

/// What one round of discarding input found.
enum Discarded {
    /// The socket was empty.
    Nothing,
    /// Some bytes, then the socket was empty.
    Some,
    /// EOF (or an error): the client's side is done.
    Finished,
}

/// The answer to a handler that failed: it panicked, or broke its contract.
fn internal_error() -> Response {
    Response::error(Status::INTERNAL_SERVER_ERROR, "internal error")
}

/// What the loop lends a connection for the length of one call.
pub struct LoopCx<'a> {
    pub now: Instant,
    pub token: Token,
    /// The current `Date` value, formatted once a second by the loop.
    pub date: &'a [u8],
    pub limits: &'a Limits,
    pub bufs: &'a mut BufPool,
    pub handler: &'a dyn Handler,
    pub inbox: &'a Arc<Inbox>,
    /// The database pool, when one is configured.
    pub db: Option<&'a Pool>,
    /// Where the server's shutdown stands.
    pub stage: Stage,
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
    pub timeouts: Timeouts,
    pub max_head: usize,
    pub max_body: usize,
}

/// What we know about the socket's read side. Events are edge-triggered: after a
/// readable event we must read until the socket is drained, and we must remember that we
/// stopped early (buffer full, back-pressure) because no new event will remind us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadSide {
    /// There may be bytes to read. A read that returns less than it asked for has
    /// emptied the kernel's queue, so it counts as empty without a second read to see
    /// `WouldBlock` (nginx does the same): anything arriving later raises a new edge.
    Ready,
    /// The event also said the peer hung up: its FIN is queued behind the data and raises
    /// no further edge, so read until the read returns 0, short reads or not.
    ReadyUntilEof,
    /// The socket's queue is empty: wait for an event.
    Empty,
    /// The client shut its write side (read returned 0).
    Eof,
}

pub struct Conn {
    socket: TcpStream,
    state: State,
    read: ReadSide,
    /// Lent by the loop while a request is in progress; `None` when idle.
    input: Option<Box<InBuf>>,
    /// Lent by the loop while output is pending; `None` when everything is written.
    output: Option<Box<OutBuf>>,
    /// When pending output last made progress; the write timer runs from here.
    write_since: Option<Instant>,
    /// Number of the current request on this connection, for [`ReplyId`].
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
}

impl Conn {
    pub fn new(socket: TcpStream, now: Instant) -> Conn {
        Conn {
            socket,
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

    pub fn socket_mut(&mut self) -> &mut TcpStream {
        &mut self.socket
    }

    /// Idle between requests with nothing buffered: safe to close without losing a byte
    /// of any request we have seen.
    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Idle { .. }) && self.input.is_none() && self.output.is_none()
    }

    /// For a connection that has not sent a request yet: until when, during a shutdown,
    /// it may still send its first one — `FRESH_GRACE` from its accept (Go's `Shutdown`
    /// treats `StateNew` alike). `None` once it has carried a request.
    fn fresh_until(&self) -> Option<Instant> {
        match self.state {
            State::Idle { since } if self.seq == 0 => Some(since + FRESH_GRACE),
            _ => None,
        }
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

    /// A timer may have expired.
    pub fn timer(&mut self, cx: &mut LoopCx<'_>) -> Result<(), CloseReason> {
        let now = cx.now;
        let t = cx.limits.timeouts;
        if self.write_since.is_some_and(|since| now >= since + t.write) {
            return Err(CloseReason::WriteTimeout);
        }
        let idle = self.is_idle();
        let grace_over =
            cx.stage == Stage::Draining && self.fresh_until().is_some_and(|end| now >= end);
        match &mut self.state {
            // Rule: during a shutdown, a connection that never sent a request is closed
            // once its grace is over.
            State::Idle { .. } if idle && grace_over => Err(CloseReason::IdleOnShutdown),
            // Rule: an idle connection past its keep-alive timeout is closed silently. A
            // connection whose responses are still being written is not idle.
            State::Idle { since } if idle && now >= *since + t.keepalive => {
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
                self.state.set(closing, cx.token);
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

    /// The server began its graceful shutdown. Read what the client has already sent:
    /// a request already on the wire is served (with `Connection: close`), not dropped.
    /// Only a connection with truly nothing in progress is closed at once.
    pub fn start_drain(&mut self, cx: &mut LoopCx<'_>) -> Result<(), CloseReason> {
        if self.read == ReadSide::Empty {
            self.read = ReadSide::Ready;
        }
        self.drive(cx)?;
        if self.yielded {
            // Stopped at its round budget: the socket may hold a request still, so
            // "idle" cannot be judged yet. `resume` comes back here.
            return Ok(());
        }
        if self.is_idle() {
            // A connection that has not carried a request yet may be a client that
            // connected just before the signal (perhaps one we just took from the
            // backlog) and is about to send its first request: it gets its grace.
            if self.fresh_until().is_some_and(|end| cx.now < end) {
                return Ok(());
            }
            return Err(CloseReason::IdleOnShutdown);
        }
        // Idle but still writing its last response with no request left behind it, or
        // answered and only reading past a body: close once the answer is out (lingering,
        // like any answered connection).
        let answered = match self.state {
            State::Idle { .. } => self.input.is_none(),
            State::Discarding(_) => true,
            _ => false,
        };
        if answered {
            let closing = State::Closing {
                reason: CloseReason::Done,
            };
            self.state.set(closing, cx.token);
        }
        Ok(())
    }

    /// The shutdown deadline passed. A request whose response has not started gets a
    /// real 503 with `Retry-After`; anything already being sent is cut. Always closes.
    pub fn force_close(&mut self, cx: &mut LoopCx<'_>) -> CloseReason {
        let reason = match &self.state {
            State::Idle { .. } if self.output.is_none() => CloseReason::IdleOnShutdown,
            // Still writing its last answer: that answer is cut.
            State::Idle { .. } => CloseReason::CutAtDeadline,
            // Answered, and reading past the body: closed as answered, or cut if that
            // answer is still being written.
            State::Discarding(_) if self.output.is_none() => CloseReason::Done,
            State::Discarding(_) => CloseReason::CutAtDeadline,
            State::Head { .. } | State::Body(_) | State::Waiting(_) => {
                let head_only = match &self.state {
                    State::Body(b) => b.head.method == Method::Head,
                    State::Waiting(w) => match **w {
                        Waiting::Timer { exchange, .. } | Waiting::Reply { exchange, .. } => {
                            exchange.head_only
                        }
                    },
                    _ => false,
                };
                let response =
                    Response::error(Status::SERVICE_UNAVAILABLE, "server is shutting down")
                        .with_header("Retry-After", "1");
                self.encode_last(cx, &response, head_only);
                CloseReason::AnsweredUnavailable
            }
            State::Streaming(_) => CloseReason::CutAtDeadline,
            State::Closing { reason } if self.output.is_none() => *reason,
            State::Closing { .. } => CloseReason::CutAtDeadline,
            State::Lingering { reason, .. } => *reason,
        };
        // One last write attempt: a 503 fits a socket buffer, and a cut response is cut
        // wherever this write stops.
        let _ = self.flush(cx);
        if reason == CloseReason::AnsweredUnavailable {
            let _ = self.socket.shutdown(Shutdown::Write);
            // Discard what the client sent so closing does not answer it with an RST
            // that could destroy the 503 in flight.
            self.discard_input(cx);
        }
        self.release(cx.bufs);
        reason
    }

    /// When the loop must next call [`Conn::timer`].
    pub fn deadline(&self, limits: &Limits, stage: Stage) -> Option<Instant> {
        let grace = match stage {
            Stage::Draining => self.fresh_until(),
            Stage::Serving | Stage::Announced => None,
        };
        let state = match &self.state {
            // Not idle while responses are still going out (the write timer guards
            // that), and a stream held back by a full output buffer waits for writes.
            State::Idle { .. } if !self.is_idle() => None,
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

    /// Reads, handles and writes until nothing more can happen without a new event.
    fn drive(&mut self, cx: &mut LoopCx<'_>) -> Result<(), CloseReason> {
        for _ in 0..ROUNDS_PER_CALL {
            let read = self.fill(cx)?;
            let handled = self.process(cx);
            let wrote = self.flush(cx)?;
            self.settle(cx)?;
            if !(read || handled || wrote) {
                return Ok(());
            }
        }
        // Still making progress after the last round: let the others have the loop.
        self.yielded = true;
        Ok(())
    }

    /// Reads into the input buffer until `WouldBlock`, EOF, or the buffer's limit.
    /// Returns whether any byte was read.
    fn fill(&mut self, cx: &mut LoopCx<'_>) -> Result<bool, CloseReason> {
        if !self.state.reads_input()
            || !matches!(self.read, ReadSide::Ready | ReadSide::ReadyUntilEof)
        {
            return Ok(false);
        }
        let limit = match &mut self.state {
            State::Body(b) => {
                // Close the gap of spent chunk framing first, so it does not count
                // against the limit (see `BodyState`).
                let body_end = b.head.len + b.decoded;
                if let Some(input) = self.input.as_mut() {
                    input.cut(body_end, b.raw);
                }
                b.raw = body_end;
                b.head.len + cx.limits.max_body + cx.limits.max_head
            }
            _ => cx.limits.max_head,
        };
        let input = self.input.get_or_insert_with(|| cx.bufs.take_input());
        let mut any = false;
        loop {
            let spare = input.spare(limit);
            let asked = spare.len();
            if asked == 0 {
                break; // full: the parser will decide (431/413) or make room
            }
            match self.socket.read(spare) {
                Ok(0) => {
                    self.read = ReadSide::Eof;
                    break;
                }
                Ok(n) => {
                    input.filled(n);
                    any = true;
                    if n < asked && self.read == ReadSide::Ready {
                        self.read = ReadSide::Empty;
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.read = ReadSide::Empty;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::debug!("conn {}: read failed: {e}", cx.token.0);
                    return Err(CloseReason::PeerReset);
                }
            }
        }
        Ok(any)
    }

    /// Turns buffered input into requests and answers, in order, until input runs out,
    /// an answer is pending, or output backs up. Returns whether any state changed.
    fn process(&mut self, cx: &mut LoopCx<'_>) -> bool {
        let mut changed = false;
        loop {
            if self.backed_up() {
                return changed; // back-pressure: let the client read first
            }
            if let State::Streaming(s) = &self.state {
                if cx.now < s.next_at {
                    return changed;
                }
                self.next_chunk(cx);
                changed = true;
                continue;
            }
            let Some(input) = self.input.as_mut().filter(|i| !i.is_empty()) else {
                return changed;
            };
            // Rule: empty lines before a request line are dropped as they come.
            if matches!(input.bytes()[0], b'\r' | b'\n')
                && let State::Idle { .. } | State::Head { .. } = self.state
            {
                let empty = request::leading_empty_lines(input.bytes());
                if empty > 0 {
                    input.consume(empty);
                    match &mut self.state {
                        // A CR and its LF came in separate reads, and nothing else: no
                        // request has begun after all. Idle again, counted from the CR.
                        State::Head { since, .. } if input.is_empty() => {
                            let idle = State::Idle { since: *since };
                            self.state.set(idle, cx.token);
                        }
                        State::Head { seen, .. } => *seen = seen.saturating_sub(empty),
                        _ => {}
                    }
                    changed = true;
                    continue;
                }
            }
            match &mut self.state {
                // Rule: no new line, no new verdict — unless the bytes reach a limit,
                // which `parse_head` turns into 414 or 431, or the method token is
                // already one nobody implements (501).
                State::Head { seen, .. }
                    if !input.bytes()[*seen..].contains(&b'\n')
                        && input.len() < cx.limits.max_head
                        && !request::request_line_too_long(input.bytes())
                        && !request::method_refused(input.bytes()) =>
                {
                    *seen = input.len();
                    return changed;
                }
                State::Idle { .. } | State::Head { .. } => {
                    match request::parse_head(input.bytes(), cx.limits.max_head) {
                        // Rule: a partial head starts the header timer at its first byte.
                        Ok(None) => {
                            let seen = input.len();
                            match &mut self.state {
                                State::Head { seen: s, .. } => *s = seen,
                                _ => {
                                    let head = State::Head {
                                        since: cx.now,
                                        seen,
                                    };
                                    self.state.set(head, cx.token);
                                    changed = true;
                                }
                            }
                            return changed;
                        }
                        Ok(Some(head)) => {
                            // The request timer runs from the head's first byte.
                            let started = match self.state {
                                State::Head { since, .. } => since,
                                _ => cx.now,
                            };
                            self.begin(cx, head, started);
                        }
                        // Rule: a head that breaks a rule is answered and the connection closes.
                        Err(e) => self.reject(cx, e),
                    }
                }
                State::Body(_) => {
                    if !self.decode_body(cx) {
                        return changed;
                    }
                }
                State::Discarding(_) => {
                    if !self.discard_body(cx) {
                        return changed;
                    }
                }
                _ => return changed,
            }
            changed = true;
        }
    }

    /// Output waits for the client beyond the high-water mark: take no new work.
    fn backed_up(&self) -> bool {
        self.output
            .as_ref()
            .is_some_and(|o| o.len() >= OUTPUT_HIGH_WATER)
    }

    /// A head is complete: call the handler. A request with a body is refused at once when
    /// it declares more than `MAX_BODY_BYTES`; otherwise the handler decides from the head
    /// whether the body is read.
    fn begin(&mut self, cx: &mut LoopCx<'_>, head: Head, started: Instant) {
        if head.framing == Framing::None {
            let len = head.len;
            return self.dispatch(cx, &head, len..len);
        }
        let decoder = match BodyDecoder::new(head.framing, cx.limits.max_body as u64) {
            Ok(decoder) => decoder,
            // Rule: a declared length over the limit is refused before reading it.
            Err(e) => return self.reject(cx, e.into()),
        };
        match self.call(cx, &head, None) {
            // Rule: the handler needs the body: read it, then call the handler again. The
            // head stays in the buffer for that call.
            Answer::ReadBody => self.read_body(cx, head, decoder, started),
            answer => self.answered_before_body(cx, &head, answer, started),
        }
    }

    /// The handler asked for the body: start reading it.
    fn read_body(
        &mut self,
        cx: &mut LoopCx<'_>,
        head: Head,
        decoder: BodyDecoder,
        started: Instant,
    ) {
        let body_arrived = self.input.as_ref().is_some_and(|i| i.len() > head.len);
        if head.expect_continue && head.version == Version::Http11 && !body_arrived {
            // RFC 9110 §10.1.1: the client waits for this before sending the body. Sent
            // only now that the handler wants the body, never before a final answer.
            self.out(cx.bufs).extend_from_slice(response::CONTINUE);
        }
        let raw = head.len;
        let body = BodyState {
            head,
            decoder,
            decoded: 0,
            raw,
            since: cx.now,
            started,
        };
        self.state.set(State::Body(Box::new(body)), cx.token);
    }

    /// Decodes as much body as is buffered. Returns whether progress was made; a
    /// completed body is dispatched.
    fn decode_body(&mut self, cx: &mut LoopCx<'_>) -> bool {
        let (State::Body(b), Some(input)) = (&mut self.state, self.input.as_mut()) else {
            return false;
        };
        let mut progressed = false;
        loop {
            let step = match b.decoder.decode(&input.bytes()[b.raw..]) {
                Ok(step) => step,
                Err(e) => {
                    self.reject(cx, e.into());
                    return true;
                }
            };
            if step.consumed == 0 && !step.done {
                break;
            }
            progressed = true;
            // Move this run of data down to the end of the decoded body (a no-op for
            // Content-Length bodies, where data follows data).
            let body_end = b.head.len + b.decoded;
            let data = b.raw + step.data.start..b.raw + step.data.end;
            input.bytes_mut().copy_within(data.clone(), body_end);
            b.decoded += data.len();
            b.raw += step.consumed;
            if step.done {
                // Drop the spent framing so the request is `[head][body]` and the
                // next pipelined request follows it directly.
                let body_end = b.head.len + b.decoded;
                input.cut(body_end, b.raw);
                let (head, range) = (b.head.clone(), b.head.len..body_end);
                self.dispatch(cx, &head, range);
                return true;
            }
        }
        if progressed {
            b.since = cx.now;
        }
        progressed
    }

    /// Reads past the body of a request answered from its head, dropping the bytes as
    /// they are decoded. Returns whether progress was made.
    fn discard_body(&mut self, cx: &mut LoopCx<'_>) -> bool {
        let (State::Discarding(d), Some(input)) = (&mut self.state, self.input.as_mut()) else {
            return false;
        };
        let mut progressed = false;
        let next = loop {
            match d.decoder.decode(input.bytes()) {
                Ok(step) if step.consumed == 0 && !step.done => break None,
                Ok(step) => {
                    input.consume(step.consumed);
                    progressed = true;
                    // Rule: the body is behind us: idle again, ready for the next request.
                    if step.done {
                        break Some(State::Idle { since: cx.now });
                    }
                }
                // Rule: a body that outgrows `DISCARD_MAX` or breaks its framing ends the
                // connection: where the next request starts is unknown, and this one has
                // its answer already.
                Err(_) => {
                    input.consume(input.len());
                    break Some(State::Closing {
                        reason: CloseReason::UnreadBody,
                    });
                }
            }
        };
        match next {
            Some(next) => self.state.set(next, cx.token),
            None if progressed => d.since = cx.now,
            None => {}
        }
        progressed
    }

    /// Calls the handler with a complete request (its body, if any, in `body`), then acts
    /// on its answer.
    fn dispatch(&mut self, cx: &mut LoopCx<'_>, head: &Head, body: Range<usize>) {
        let answer = self.call(cx, head, Some(body.clone()));
        // The handler has taken what it needs: the request's bytes can go.
        if let Some(input) = self.input.as_mut() {
            input.consume(body.end);
        }
        self.act(cx, Exchange::of(head), answer);
    }

    /// Calls the handler with the request in the input buffer: its body at `body`, or
    /// `None` while the body has not been read.
    #[inline(always)] // on the hot path: the answer it returns is then matched in place
    fn call(&mut self, cx: &mut LoopCx<'_>, head: &Head, body: Option<Range<usize>>) -> Answer {
        // Every call gets its own number, so a reply promised by an earlier call (one that
        // then asked for the body after all) is recognised as stale and dropped.
        self.seq = self.seq.wrapping_add(1);
        let id = ReplyId {
            token: cx.token,
            seq: self.seq,
        };
        let Some(input) = self.input.as_ref() else {
            return Answer::Now(internal_error()); // a head always comes from the input
        };
        let bytes = input.bytes();
        let request = Request::new(head, bytes, body.map(|range| &bytes[range]));
        let mut ctx = Ctx::new(cx.stage.shutting_down(), id, cx.inbox, cx.db);
        // A panicking handler costs its request a 500, never the loop.
        catch_unwind(AssertUnwindSafe(|| cx.handler.handle(&request, &mut ctx))).unwrap_or_else(
            |_| {
                log::error!(
                    "handler panicked on {} {}",
                    head.method.as_str(),
                    request.path
                );
                Answer::Now(internal_error())
            },
        )
    }

    /// Rule: answered from the head alone (RFC 9110 §10.1.1: a server that answers before
    /// the body says whether it reads the body or closes). A small body still on its way
    /// is read and dropped, so the connection can carry the next request. The answer says
    /// `Connection: close` instead, and the lingering close takes the body, when the
    /// client waits on `Expect: 100-continue` (it may never send that body), when the body
    /// may be longer than `DISCARD_MAX`, or when the answer comes later (nothing is read
    /// meanwhile).
    fn answered_before_body(
        &mut self,
        cx: &mut LoopCx<'_>,
        head: &Head,
        answer: Answer,
        started: Instant,
    ) {
        if let Some(input) = self.input.as_mut() {
            input.consume(head.len);
        }
        let mut exchange = Exchange::of(head);
        let discard = match answer {
            Answer::Now(_) if !head.expect_continue => {
                BodyDecoder::new(head.framing, DISCARD_MAX).ok()
            }
            _ => None,
        };
        if discard.is_none() {
            exchange.persistence = Persistence::Close;
        }
        self.act(cx, exchange, answer);
        // The answer is out (or queued) and the connection persists: read past the body.
        if let Some(decoder) = discard
            && matches!(self.state, State::Idle { .. })
        {
            let discarding = Discarding {
                decoder,
                since: cx.now,
                started,
            };
            self.state
                .set(State::Discarding(Box::new(discarding)), cx.token);
        }
    }

    /// Acts on a handler's answer: encode it now, or wait for its timer, reply or chunks.
    #[inline(always)] // see `call`
    fn act(&mut self, cx: &mut LoopCx<'_>, exchange: Exchange, answer: Answer) {
        match answer {
            Answer::Now(response) => self.respond(cx, exchange, &response),
            Answer::After(delay, response) => {
                let waiting = Waiting::Timer {
                    at: after(cx.now, delay),
                    response,
                    exchange,
                };
                self.state.set(State::Waiting(Box::new(waiting)), cx.token);
            }
            Answer::Later(pending) => {
                let waiting = Waiting::Reply {
                    seq: pending.0.seq,
                    exchange,
                };
                self.state.set(State::Waiting(Box::new(waiting)), cx.token);
            }
            Answer::Stream(stream) => {
                let delivery = Self::delivery(cx, exchange, Length::Streamed);
                let out = self.out(cx.bufs);
                response::encode_head(&stream.head, delivery, cx.date, Length::Streamed, out);
                if exchange.head_only {
                    return self.finish_response(cx, delivery.close);
                }
                let streaming = Streaming {
                    exchange,
                    chunks: stream.chunks.peekable(),
                    interval: stream.interval,
                    next_at: after(cx.now, stream.interval),
                };
                self.state
                    .set(State::Streaming(Box::new(streaming)), cx.token);
            }
            // Rule: asking for a body the handler already has is a bug in the handler: 500.
            Answer::ReadBody => {
                log::error!(
                    "conn {}: the handler asked to read a body it was given",
                    cx.token.0
                );
                self.respond(cx, exchange, &internal_error());
            }
        }
    }

    /// How this response is to be framed: whether the connection persists after it
    /// (RFC 9112 §9.3), decided here and nowhere else.
    fn delivery(cx: &LoopCx<'_>, exchange: Exchange, length: Length) -> Delivery {
        let close = exchange.persistence == Persistence::Close
            || cx.stage.shutting_down()
            // A 1.0 client cannot read chunks: a streamed body ends when the connection does.
            || (length == Length::Streamed && exchange.version == Version::Http10);
        Delivery {
            version: exchange.version,
            close,
            head_only: exchange.head_only,
        }
    }

    /// Encodes a complete response and moves on to the next request or to closing.
    fn respond(&mut self, cx: &mut LoopCx<'_>, exchange: Exchange, response: &Response) {
        let length = Length::Known(response.body.as_bytes().len());
        let delivery = Self::delivery(cx, exchange, length);
        response::encode(response, delivery, cx.date, self.out(cx.bufs));
        self.finish_response(cx, delivery.close);
    }

    /// The response is fully encoded: the connection persists or closes.
    fn finish_response(&mut self, cx: &mut LoopCx<'_>, close: bool) {
        let next = if close {
            State::Closing {
                reason: CloseReason::Done,
            }
        } else {
            State::Idle { since: cx.now }
        };
        self.state.set(next, cx.token);
    }

    /// Sends the next chunk of a stream, and the end of the body with the last one.
    fn next_chunk(&mut self, cx: &mut LoopCx<'_>) {
        let State::Streaming(s) = &mut self.state else {
            return;
        };
        let out = self.output.get_or_insert_with(|| cx.bufs.take_output());
        let chunked = s.exchange.version == Version::Http11;
        // The chunks come from handler code: a panic there ends this response after the
        // chunks already produced (without its last chunk), never the loop.
        let Ok(data) = catch_unwind(AssertUnwindSafe(|| s.chunks.next())) else {
            return self.stream_failed(cx);
        };
        if let Some(data) = data {
            if chunked {
                response::encode_chunk(&data, out.vec());
            } else {
                out.vec().extend_from_slice(&data);
            }
        }
        match catch_unwind(AssertUnwindSafe(|| s.chunks.peek().is_some())) {
            Ok(true) => {
                s.next_at = after(cx.now, s.interval);
                return;
            }
            Ok(false) => {}
            Err(_) => return self.stream_failed(cx),
        }
        if chunked {
            out.vec().extend_from_slice(response::LAST_CHUNK);
        }
        let close = Self::delivery(cx, s.exchange, Length::Streamed).close;
        self.finish_response(cx, close);
    }

    /// A stream's chunks panicked: what was sent stays sent, the body never gets its end,
    /// and the connection closes once the output is out.
    fn stream_failed(&mut self, cx: &mut LoopCx<'_>) {
        log::error!("conn {}: a stream's chunks panicked", cx.token.0);
        let closing = State::Closing {
            reason: CloseReason::StreamFailed,
        };
        self.state.set(closing, cx.token);
    }

    /// A head or body that did not arrive in time: 408, then close.
    fn time_out(&mut self, cx: &mut LoopCx<'_>) -> Result<(), CloseReason> {
        self.reject(cx, RequestError::Timeout);
        self.drive(cx)
    }

    /// Answers a request that broke a rule, then closes: after a framing error the start
    /// of the next request cannot be trusted (see `http::error`).
    fn reject(&mut self, cx: &mut LoopCx<'_>, error: RequestError) {
        let (status, reason) = error.status();
        log::debug!("conn {}: rejected with {}: {reason}", cx.token.0, status.0);
        self.encode_last(cx, &Response::error(status, reason), false);
        if let Some(input) = self.input.as_mut() {
            input.consume(input.len());
        }
        let reason = match error {
            RequestError::Timeout => CloseReason::RequestTimeout,
            _ => CloseReason::Rejected,
        };
        self.state.set(State::Closing { reason }, cx.token);
    }

    /// Encodes the connection's last response: `Connection: close`, and framed for 1.1,
    /// because the request it answers may not have parsed far enough to know better.
    fn encode_last(&mut self, cx: &mut LoopCx<'_>, response: &Response, head_only: bool) {
        let delivery = Delivery {
            version: Version::Http11,
            close: true,
            head_only,
        };
        response::encode(response, delivery, cx.date, self.out(cx.bufs));
    }

    /// The output buffer, borrowed from the pool when there is none.
    fn out(&mut self, bufs: &mut BufPool) -> &mut Vec<u8> {
        self.output.get_or_insert_with(|| bufs.take_output()).vec()
    }

    /// Writes pending output until `WouldBlock`. Returns whether any byte was written.
    fn flush(&mut self, cx: &mut LoopCx<'_>) -> Result<bool, CloseReason> {
        let Some(out) = self.output.as_mut() else {
            return Ok(false);
        };
        let mut wrote = false;
        while !out.is_empty() {
            match self.socket.write(out.pending()) {
                Ok(0) => return Err(CloseReason::PeerReset),
                Ok(n) => {
                    out.advance(n);
                    wrote = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::debug!("conn {}: write failed: {e}", cx.token.0);
                    return Err(CloseReason::PeerReset);
                }
            }
        }
        if out.is_empty() {
            if let Some(out) = self.output.take() {
                cx.bufs.give_output(out);
            }
            self.write_since = None;
            // The keep-alive idle time starts when the last response is out, not when
            // it was queued.
            if let State::Idle { since } = &mut self.state {
                *since = cx.now;
            }
        } else if wrote || self.write_since.is_none() {
            self.write_since = Some(cx.now);
        }
        Ok(wrote)
    }

    /// After reading, handling and writing: the transitions that depend on what the
    /// socket said (EOF) and on output having drained.
    fn settle(&mut self, cx: &mut LoopCx<'_>) -> Result<(), CloseReason> {
        let input_empty = self.input.as_ref().is_none_or(|i| i.is_empty());
        if input_empty && let Some(buf) = self.input.take() {
            cx.bufs.give_input(buf);
        }
        match &self.state {
            // Rule: EOF between requests is an ordinary close.
            State::Idle { .. }
                if self.read == ReadSide::Eof && input_empty && self.output.is_none() =>
            {
                Err(CloseReason::PeerClosed)
            }
            // Rule: EOF inside a head or body: that request can never complete. The
            // requests before it were answered, so what is still buffered of their
            // responses goes out first (then `Closing` sees the EOF and closes).
            State::Head { .. } | State::Body(_) | State::Discarding(_)
                if self.read == ReadSide::Eof =>
            {
                if self.output.is_none() {
                    return Err(CloseReason::PeerClosedMidRequest);
                }
                if let Some(input) = self.input.as_mut() {
                    input.consume(input.len());
                }
                let closing = State::Closing {
                    reason: CloseReason::PeerClosedMidRequest,
                };
                self.state.set(closing, cx.token);
                Ok(())
            }
            // Rule: once the last response is out, shut our write side and linger —
            // unless the client already closed its side, then there is nothing to wait for.
            State::Closing { reason } if self.output.is_none() => {
                let reason = *reason;
                if self.read == ReadSide::Eof {
                    return Err(reason);
                }
                let _ = self.socket.shutdown(Shutdown::Write);
                let lingering = State::Lingering {
                    until: cx.now + LINGER,
                    stop: cx.now + LINGER_MAX,
                    reason,
                };
                self.state.set(lingering, cx.token);
                self.linger(cx)
            }
            State::Lingering { .. } => self.linger(cx),
            _ => Ok(()),
        }
    }

    /// Reads and discards until EOF (then the close is clean) or `WouldBlock`.
    fn linger(&mut self, cx: &mut LoopCx<'_>) -> Result<(), CloseReason> {
        match self.discard_input(cx) {
            Discarded::Finished => match self.state {
                State::Lingering { reason, .. } => Err(reason),
                _ => Ok(()),
            },
            // The client is still sending: it is alive and may not have read our
            // response yet, so wait for it a little longer (up to `stop`).
            Discarded::Some => {
                if let State::Lingering { until, .. } = &mut self.state {
                    *until = cx.now + LINGER;
                }
                Ok(())
            }
            Discarded::Nothing => Ok(()),
        }
    }

    /// Reads and throws away whatever the socket holds, until `WouldBlock`, EOF or an
    /// error — or `ROUNDS_PER_CALL` full buffers: then it yields (see `drive`), and at the
    /// shutdown deadline the connection closes with those bytes unread.
    fn discard_input(&mut self, cx: &mut LoopCx<'_>) -> Discarded {
        let mut scratch = self.input.take().unwrap_or_else(|| cx.bufs.take_input());
        let mut outcome = Discarded::Nothing;
        let mut rounds = 0;
        loop {
            if rounds == ROUNDS_PER_CALL {
                self.yielded = true;
                break;
            }
            rounds += 1;
            scratch.consume(scratch.len());
            match self.socket.read(scratch.spare(usize::MAX)) {
                Ok(0) => {
                    outcome = Discarded::Finished;
                    break;
                }
                Ok(_) => outcome = Discarded::Some,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    outcome = Discarded::Finished;
                    break;
                }
            }
        }
        scratch.consume(scratch.len());
        cx.bufs.give_input(scratch);
        outcome
    }
}
