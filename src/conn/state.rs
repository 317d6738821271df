//! The connection state machine: where one connection is in its life, as an enum whose
//! variants carry what that state needs and nothing more.
//!
//! ```text
//!            bytes arrive        head parsed: the handler is called
//!   Idle ─────────────────▶ Head ─────────────────────────────────┐ ReadBody
//!    ▲  ╲                                                         ▼
//!    │   ╲ timeout/EOF/        ┌───── body complete: called again ─ Body
//!    │    ╲ shutdown           ▼
//!    │     ╲           answer: Now: respond   After/Later: Waiting   Stream: Streaming
//!    │      ▼                  │                     │ reply/timer        │ last chunk
//!    │   (closed)           respond ◀────────────────┴────────────────────┘
//!    │                         │ keep-alive                     │ Connection: close
//!    ├─────────────────────────┤                                ▼
//!    │ body read and dropped   │ answered before its body
//!    └──────────── Discarding ◀┘    Closing ──output flushed──▶ Lingering ──EOF/quiet/bound──▶ (closed)
//!                                     ▲  └──client already sent EOF──▶ (closed)
//!   Head, Body ──bad request / 408────┤
//!   Head, Body, Discarding ──EOF──────┤ (answers still unsent go out first)
//!   Discarding ──too long, bad, slow──┤
//!   Streaming ──its chunks panic──────┤
//!   Idle still writing at shutdown ───┤
//!   Discarding at shutdown ───────────┘
//!
//!   any state ──reset, write timeout, shutdown deadline──▶ (closed)
//! ```
//!
//! One line per state:
//! - `Idle` — between requests (or before the first); may still be writing the last
//!   answer; timer: keep-alive idle, from when that answer is out (during a shutdown, a
//!   connection that never sent a request gets only a short grace).
//! - `Head` — part of a request head has arrived; timer: header read, from its first byte
//!   (and the request timeout, from the same byte).
//! - `Body` — the handler asked for the body and it is arriving; timers: body read (a
//!   gap, reset on progress) and the request timeout (a total, from the head's first byte).
//! - `Discarding` — answered from the head alone; the body on the wire is read and dropped
//!   so the next request can be found; timers as in `Body`.
//! - `Waiting` — the handler answers later (loop timer or reply handle); no read timer.
//! - `Streaming` — response head sent, chunks go out on a timer.
//! - `Closing` — the last response is queued; once written, the write side is shut.
//! - `Lingering` — write side shut; input is read and discarded until EOF, until the client
//!   has been quiet for `LINGER`, or at `LINGER_MAX`, so unread client bytes do not turn
//!   into an RST that destroys our response (RFC 9112 §9.6).
//!
//! Output pending in any state adds one more timer: write progress.
//!
//! Invariants: this file never touches a socket; every change of state goes through
//! [`State::set`], which logs `old=>new` at trace level.

use std::time::{Duration, Instant};

use crate::http::body::BodyDecoder;
use crate::http::request::{Head, Persistence, Version};
use crate::http::response::Response;

use super::close::CloseReason;

// An explicit tag byte. Without it the compiler keeps the variant in a spare bit
// pattern of an `Instant`'s nanoseconds, and every match on the state (several per
// request) and every replacement (its drop) must decode that first.
#[repr(u8)]
pub enum State {
    Idle {
        since: Instant,
    },
    /// `seen`: bytes already found to be a partial head. A head can only complete when a
    /// line does, so new bytes without a line feed are not parsed again (a client that
    /// trickles a head byte by byte must not cost a full re-parse per byte).
    Head {
        since: Instant,
        seen: usize,
    },
    Body(Box<BodyState>),
    Discarding(Box<Discarding>),
    Waiting(Box<Waiting>),
    Streaming(Box<Streaming>),
    Closing {
        reason: CloseReason,
    },
    /// `until`: LINGER after the client last sent something; `stop`: LINGER_MAX after
    /// lingering began, whatever the client does.
    Lingering {
        until: Instant,
        stop: Instant,
        reason: CloseReason,
    },
}

/// A request whose body is being read. The input buffer holds, from its front:
/// `[head: head.len][decoded body: decoded][spent framing: raw - head.len - decoded][unread]`.
/// Decoding moves chunk data down over the framing in place, so a chunked body is never
/// copied into a second buffer and a Content-Length body is never copied at all.
pub struct BodyState {
    pub head: Head,
    pub decoder: BodyDecoder,
    /// Decoded body bytes, stored right after the head.
    pub decoded: usize,
    /// Where undecoded input starts (an offset in the input buffer).
    pub raw: usize,
    /// Last time the body made progress (the body timer runs from here).
    pub since: Instant,
    /// The first byte of the request's head (the request timer runs from here).
    pub started: Instant,
}

/// A request answered before its body was read (the handler did not need it). The body
/// still arrives, framed as the head said, and must be read past to find the next request
/// (RFC 9112 §6.3). Its bytes are dropped as they are decoded, never kept; the decoder's
/// limit is `DISCARD_MAX`, past which the connection closes instead.
pub struct Discarding {
    pub decoder: BodyDecoder,
    /// Last time the body made progress.
    pub since: Instant,
    /// The first byte of the request's head.
    pub started: Instant,
}

/// When a body that is arriving (read or discarded) has taken too long: a gap of `body`
/// without progress, or `request` in all since the head's first byte, whichever is first.
pub fn body_deadline(since: Instant, started: Instant, t: &Timeouts) -> Instant {
    (since + t.body).min(started + t.request)
}

/// The furthest a handler's timer may reach. `Instant + Duration` panics on overflow,
/// and a handler that asks for longer than this has asked for "never": a year is as good.
const MAX_HANDLER_WAIT: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// When a wait a handler asked for ends.
pub fn after(now: Instant, wait: Duration) -> Instant {
    now + wait.min(MAX_HANDLER_WAIT)
}

/// What the connection remembers of a request once its handler has been called: enough
/// to frame the response, nothing that borrows the input buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exchange {
    pub version: Version,
    pub head_only: bool,
    pub persistence: Persistence,
    /// The route the handler named, for `/metrics`.
    pub route: &'static str,
    /// The request's first byte: its duration runs from here to its answer.
    pub started: Instant,
}

impl Exchange {
    /// What the answer to the request `head` needs to know of it: `route` as the handler
    /// named it, from its first byte at `started`.
    pub fn of(head: &Head, route: &'static str, started: Instant) -> Exchange {
        Exchange {
            version: head.version,
            head_only: head.method == crate::http::request::Method::Head,
            persistence: head.persistence,
            route,
            started,
        }
    }
}

/// Boxed inside `State`, so the size of the `Timer` variant does not grow every
/// connection.
#[allow(clippy::large_enum_variant)]
pub enum Waiting {
    /// `Answer::After`: the response is ready and goes out at `at`.
    Timer {
        at: Instant,
        response: Response,
        exchange: Exchange,
    },
    /// `Answer::Later`: a reply handle for request number `seq` is out.
    Reply { seq: u32, exchange: Exchange },
}

pub struct Streaming {
    pub exchange: Exchange,
    /// The handler's chunks, peeked so the last one goes out with the end of the body
    /// instead of an interval later.
    pub chunks: std::iter::Peekable<Box<dyn Iterator<Item = Vec<u8>>>>,
    pub interval: Duration,
    pub next_at: Instant,
}

/// The timeouts a connection obeys, named after what they bound.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// `KEEPALIVE_TIMEOUT_MS`: how long a quiet connection is kept.
    pub keepalive: Duration,
    /// `HEADER_TIMEOUT_MS`: from a head's first byte to its end.
    pub header: Duration,
    /// `BODY_TIMEOUT_MS`: the longest gap without body progress.
    pub body: Duration,
    /// From a request's first byte to the end of its body, whatever the gaps.
    pub request: Duration,
    /// `WRITE_TIMEOUT_MS`: the longest gap without write progress.
    pub write: Duration,
}

/// How long a lingering close waits for the client's EOF after the client last sent
/// anything. Go's net/http waits 500 ms for the same reason (`rstAvoidanceDelay`); long
/// enough for a client to read a response and close.
pub const LINGER: Duration = Duration::from_millis(500);

/// The most a lingering close lasts, even for a client that keeps sending (nginx's
/// `lingering_time` is the same idea): short enough not to hold a shutdown up.
pub const LINGER_MAX: Duration = Duration::from_secs(2);

impl State {
    /// A short name for logs and the transition trace.
    pub fn name(&self) -> &'static str {
        match self {
            State::Idle { .. } => "Idle",
            State::Head { .. } => "Head",
            State::Body(_) => "Body",
            State::Discarding(_) => "Discarding",
            State::Waiting(_) => "Waiting",
            State::Streaming(_) => "Streaming",
            State::Closing { .. } => "Closing",
            State::Lingering { .. } => "Lingering",
        }
    }

    /// The one funnel for state changes. Inlined: at most call sites the new state is
    /// known, so only its own arm of the drop match and of the gauge test is left, where
    /// a call would save and restore registers around a handful of moves (a request
    /// answered at once passes here once, `Idle` to `Idle`).
    #[inline(always)]
    pub fn set(&mut self, new: State, cx: &super::LoopCx<'_>) {
        log::trace!("{}: {}=>{}", cx.id, self.name(), new.name());
        let old = std::mem::replace(self, new);
        // The `idle` gauge follows the one transition it counts, in the one place every
        // transition passes (a request answered at once goes `Idle` to `Idle`: no change).
        let (was_idle, idle) = (
            matches!(old, State::Idle { .. }),
            matches!(self, State::Idle { .. }),
        );
        if was_idle != idle {
            cx.telemetry.cells.idle_changed(idle);
        }
        match old {
            State::Body(_) | State::Discarding(_) | State::Waiting(_) | State::Streaming(_) => {
                drop(old)
            }
            // These own nothing to free. Forgetting one skips a call into the drop glue,
            // which saves and restores six registers before it finds that out, once a
            // request (`Idle` to `Idle`).
            State::Idle { .. }
            | State::Head { .. }
            | State::Closing { .. }
            | State::Lingering { .. } => std::mem::forget(old),
        }
    }

    /// When this state next needs the loop's attention, if ever (write timer aside).
    #[inline(always)] // after every call on a connection, from `Conn::deadline`
    pub fn deadline(&self, t: &Timeouts) -> Option<Instant> {
        match self {
            State::Idle { since } => Some(*since + t.keepalive),
            State::Head { since, .. } => Some(*since + t.header.min(t.request)),
            State::Body(b) => Some(body_deadline(b.since, b.started, t)),
            State::Discarding(d) => Some(body_deadline(d.since, d.started, t)),
            State::Waiting(w) => match **w {
                Waiting::Timer { at, .. } => Some(at),
                Waiting::Reply { .. } => None,
            },
            State::Streaming(s) => Some(s.next_at),
            State::Closing { .. } => None,
            State::Lingering { until, stop, .. } => Some((*until).min(*stop)),
        }
    }

    /// Whether this state wants bytes from the socket. `Waiting` and `Streaming` do not:
    /// pipelined requests wait in the kernel until their turn (responses go out in order),
    /// and `Closing` reads nothing more once its answer is decided.
    pub fn reads_input(&self) -> bool {
        matches!(
            self,
            State::Idle { .. } | State::Head { .. } | State::Body(_) | State::Discarding(_)
        )
    }
}
