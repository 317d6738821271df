//! How a connection ends: what "idle" means, the drain rule, the deadline rule, and the
//! close itself (shut our side, linger, close).
//!
//! What it is: the rules a shutdown applies to one connection — `start_drain` when the
//! drain begins, `force_close` at the deadline — and `settle`, which after every round of
//! reading, handling and writing takes the transitions that depend on the socket (EOF) and
//! on output having drained, ending in the lingering close of RFC 9112 §9.6.
//!
//! What it is not: the shutdown's phases and timing (`server::shutdown`) or the request
//! rules (`exchange.rs`); it only answers "what happens to this connection now".

use std::time::{Duration, Instant};

use super::io::{Discarded, ReadSide};
use super::state::{LINGER, LINGER_MAX, State, Waiting};
use super::{CloseReason, Conn, LoopCx, Socket};
use crate::http::request::Method;
use crate::http::response::{Response, Status};

/// During a shutdown, how long a connection that has not sent a request yet may take to
/// send its first one, counted from its accept. Long enough for a client that has just
/// connected; short enough not to hold the drain up for a client that never will.
pub const FRESH_GRACE: Duration = Duration::from_secs(1);

impl<S: Socket> Conn<S> {
    /// Quiet: between requests (state `Idle`) with nothing buffered either way, no byte
    /// of a request read and no byte of an answer owed. The one definition of what a
    /// keep-alive timeout or a drain may close without losing anything. (A connection in
    /// `Idle` that is still writing its last answer is not quiet.)
    pub fn is_quiet(&self) -> bool {
        matches!(self.state, State::Idle { .. }) && self.input.is_none() && self.output.is_none()
    }

    /// Between requests (state `Idle`), whether or not its last answer is still being
    /// written: what the `idle` gauge counts.
    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Idle { .. })
    }

    /// For a connection that has not sent a request yet: until when, during a shutdown,
    /// it may still send its first one — `FRESH_GRACE` from its accept (Go's `Shutdown`
    /// treats `StateNew` alike). `None` once it has carried a request.
    pub(super) fn fresh_until(&self) -> Option<Instant> {
        match self.state {
            State::Idle { since } if self.seq == 0 => Some(since + FRESH_GRACE),
            _ => None,
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
        if self.is_quiet() {
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
            self.state.set(closing, cx);
            // With its answer already out, nothing else would move it on: no write is
            // pending to raise an event, and `Closing` has no timer of its own.
            return self.drive(cx);
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
                self.encode_last(cx, &response, head_only, CloseReason::AnsweredUnavailable);
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
            let _ = self.socket.shutdown_write();
            // Discard what the client sent so closing does not answer it with an RST
            // that could destroy the 503 in flight.
            self.discard_input(cx);
        }
        self.release(cx.bufs);
        reason
    }

    /// After reading, handling and writing: the transitions that depend on what the
    /// socket said (EOF) and on output having drained.
    #[inline(always)] // one round of `drive`: kept in its loop, as before the split into files
    pub(super) fn settle(&mut self, cx: &mut LoopCx<'_>) -> Result<(), CloseReason> {
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
                self.state.set(closing, cx);
                Ok(())
            }
            // Rule: once the last response is out, shut our write side and linger —
            // unless the client already closed its side, then there is nothing to wait for.
            State::Closing { reason } if self.output.is_none() => {
                let reason = *reason;
                if self.read == ReadSide::Eof {
                    return Err(reason);
                }
                let _ = self.socket.shutdown_write();
                let lingering = State::Lingering {
                    until: cx.now + LINGER,
                    stop: cx.now + LINGER_MAX,
                    reason,
                };
                self.state.set(lingering, cx);
                self.linger(cx)
            }
            State::Lingering { .. } => self.linger(cx),
            _ => Ok(()),
        }
    }

    /// Reads and discards until EOF (then the close is clean) or `WouldBlock`.
    pub(super) fn linger(&mut self, cx: &mut LoopCx<'_>) -> Result<(), CloseReason> {
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
}
