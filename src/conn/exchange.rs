//! From bytes to requests: the part of a connection that speaks HTTP on the way in (`http`
//! turns bytes into a head; this decides what happens with it).
//!
//! What it is: `process` (buffered input → requests, in order, under back-pressure), the
//! handler call and the body policy (read when the handler asks, dropped or refused when
//! it answers from the head). What the handler answers goes out through `answer.rs`.
//!
//! What it is not: reading or writing the socket (`io.rs`), encoding answers
//! (`answer.rs`), or deciding when a connection closes (`lifecycle.rs`).

use std::ops::Range;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

use super::account::Detail;
use super::io::ReadSide;
use super::state::{BodyState, Discarding, Exchange, State};
use super::{CloseReason, Conn, LoopCx, Socket};
use crate::handler::{Answer, Ctx, ReplyId};
use crate::http::body::{BodyDecoder, Framing};
use crate::http::error::RequestError;
use crate::http::request::{self, Head, Persistence, Request, Version};
use crate::http::response::{self, Response};
use crate::stats::ROUTE_NONE;

/// Stop taking new requests off the input while this much output waits for the client:
/// a client that pipelines without reading cannot make us buffer without bound.
pub(super) const OUTPUT_HIGH_WATER: usize = 64 * 1024;

/// The longest body that is read and dropped to keep a connection after answering its
/// request from the head alone (a 404 or 405 to a POST, say). Longer, and the answer says
/// `Connection: close` instead: the client is told at once, and nobody waits for an upload
/// that only gets thrown away. Go's net/http draws the same line at 256 KiB
/// (`maxPostHandlerReadBytes`).
const DISCARD_MAX: u64 = 256 * 1024;

impl<S: Socket> Conn<S> {
    /// Turns buffered input into requests and answers, in order, until input runs out,
    /// an answer is pending, or output backs up. Returns whether any state changed.
    #[inline(always)] // one round of `drive`: kept in its loop, as before the split into files
    pub(super) fn process(&mut self, cx: &mut LoopCx<'_>) -> bool {
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
            let Some(&first) = self.input.as_ref().and_then(|i| i.bytes().first()) else {
                return changed;
            };
            let progressed = match self.state {
                // Rule: empty lines before a request line are dropped as they come.
                State::Idle { .. } | State::Head { .. } if matches!(first, b'\r' | b'\n') => {
                    self.drop_empty_lines(cx) || self.take_head(cx, &mut changed)
                }
                State::Idle { .. } | State::Head { .. } => self.take_head(cx, &mut changed),
                State::Body(_) => self.decode_body(cx),
                State::Discarding(_) => self.discard_body(cx),
                _ => false,
            };
            if !progressed {
                return changed;
            }
            changed = true;
        }
    }

    /// Drops the empty lines at the front of the input (RFC 9112 §2.2). Returns whether
    /// there were any.
    #[cold]
    pub(super) fn drop_empty_lines(&mut self, cx: &mut LoopCx<'_>) -> bool {
        let Some(input) = self.input.as_mut() else {
            return false;
        };
        let empty = request::leading_empty_lines(input.bytes());
        if empty == 0 {
            return false;
        }
        input.consume(empty);
        match &mut self.state {
            // A CR and its LF came in separate reads, and nothing else: no request has
            // begun after all. Idle again, counted from the CR.
            State::Head { since, .. } if input.is_empty() => {
                let idle = State::Idle { since: *since };
                self.state.set(idle, cx);
            }
            State::Head { seen, .. } => *seen = seen.saturating_sub(empty),
            _ => {}
        }
        true
    }

    /// Parses the head at the front of the input, when new bytes can change the verdict,
    /// and acts on it: a complete head is dispatched, a broken one rejected. Returns
    /// whether one was (then the input is looked at again); `changed` is set when a head
    /// has begun.
    #[inline(always)] // once per request, from `process` only: keep the hot loop whole
    pub(super) fn take_head(&mut self, cx: &mut LoopCx<'_>, changed: &mut bool) -> bool {
        let Some(input) = self.input.as_mut() else {
            return false;
        };
        // Rule: no new line, no new verdict — unless the bytes reach a limit, which
        // `parse_head` turns into 414 or 431, the method token is already one nobody
        // implements (501), a byte arrived that can never be valid where it stands
        // (400), or the client has ended its side (what it sent is all there will be: a
        // broken head is answered before the close, as it would have been in one read).
        // The answer does not depend on how the head was split.
        if let State::Head { seen, .. } = &mut self.state
            && self.read != ReadSide::Eof
            && !input.bytes()[*seen..].contains(&b'\n')
            && input.len() < cx.limits.max_head
            && !request::request_line_too_long(input.bytes())
            && !request::method_refused(input.bytes())
            && !request::decides_early(
                &input.bytes()[*seen..],
                !input.bytes()[..*seen].contains(&b'\n'),
            )
        {
            *seen = input.len();
            return false;
        }
        match request::parse_request(input.bytes(), cx.limits.max_head) {
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
                        self.state.set(head, cx);
                        *changed = true;
                    }
                }
                false
            }
            // The common request, without a body, answered while its head is still borrowed:
            // the handler's path is the `&str` the parse checked (`begin` serves the rest).
            Ok(Some(parsed)) if parsed.head.framing == Framing::None && !cx.bufs.over_budget() => {
                let request = Request::parsed(&parsed, input.bytes(), Some(&[]));
                let mut route = ROUTE_NONE;
                let answer =
                    Self::call_handler(&mut self.seq, &mut self.detail, cx, &request, &mut route);
                let head = parsed.head;
                // The handler has taken what it needs: the request's bytes can go.
                input.consume(head.len);
                // From its first byte: an earlier turn's, if the head came in pieces.
                let started = match self.state {
                    State::Head { since, .. } => since,
                    _ => cx.now,
                };
                self.act(cx, Exchange::of(&head, route, started), answer);
                true
            }
            Ok(Some(parsed)) => {
                let head = parsed.head;
                // The request timer runs from the head's first byte.
                let started = self.state.request_started(cx.now);
                self.begin(cx, head, started);
                true
            }
            // Rule: a head that breaks a rule is answered and the connection closes.
            Err(e) => {
                self.reject(cx, e);
                true
            }
        }
    }

    /// Output waits for the client beyond the high-water mark, or a shared body is still
    /// going out (what came next would overtake it): take no new work.
    pub(super) fn backed_up(&self) -> bool {
        self.output
            .as_ref()
            .is_some_and(|o| o.len() >= OUTPUT_HIGH_WATER || o.has_shared())
    }

    /// A head is complete: call the handler. A request with a body is refused at once when
    /// it declares more than `MAX_BODY_BYTES`; otherwise the handler decides from the head
    /// whether the body is read.
    #[inline(always)] // see `take_head`
    pub(super) fn begin(&mut self, cx: &mut LoopCx<'_>, head: Head, started: Instant) {
        // Rule: while the loop's buffers are over their budget, a new request is refused
        // (503) rather than given more memory.
        if cx.bufs.over_budget() {
            return self.reject(cx, RequestError::Overloaded);
        }
        if head.framing == Framing::None {
            let len = head.len;
            return self.dispatch(cx, &head, len..len, started);
        }
        let decoder = match BodyDecoder::new(head.framing, cx.limits.max_body as u64) {
            Ok(decoder) => decoder,
            // Rule: a declared length over the limit is refused before reading it.
            Err(e) => return self.reject(cx, e.into()),
        };
        let mut route = ROUTE_NONE;
        match self.call(cx, &head, None, &mut route) {
            // Rule: the handler needs the body: read it, then call the handler again. The
            // head stays in the buffer for that call.
            Answer::ReadBody => self.read_body(cx, head, decoder, started),
            answer => {
                let exchange = Exchange::of(&head, route, started);
                self.answered_before_body(cx, &head, exchange, answer);
            }
        }
    }

    /// The handler asked for the body: start reading it.
    pub(super) fn read_body(
        &mut self,
        cx: &mut LoopCx<'_>,
        head: Head,
        decoder: BodyDecoder,
        started: Instant,
    ) {
        // Rule: the body's room is counted against the budget before it is read: its
        // declared length, or `MAX_BODY_BYTES` when chunked (its length is unknown).
        let room = match head.framing {
            Framing::Length(n) => usize::try_from(n).unwrap_or(usize::MAX),
            _ => cx.limits.max_body,
        };
        let reserved = match self.input.as_mut() {
            Some(input) => cx
                .bufs
                .reserve(input, room.saturating_sub(cx.limits.max_head)),
            None => false,
        };
        if !reserved {
            return self.reject(cx, RequestError::Overloaded);
        }
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
        self.state.set(State::Body(Box::new(body)), cx);
    }

    /// Decodes as much body as is buffered. Returns whether progress was made; a
    /// completed body is dispatched.
    pub(super) fn decode_body(&mut self, cx: &mut LoopCx<'_>) -> bool {
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
                let (head, range, started) = (b.head.clone(), b.head.len..body_end, b.started);
                self.dispatch(cx, &head, range, started);
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
    pub(super) fn discard_body(&mut self, cx: &mut LoopCx<'_>) -> bool {
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
            Some(next) => self.state.set(next, cx),
            None if progressed => d.since = cx.now,
            None => {}
        }
        progressed
    }

    /// Calls the handler with a complete request (its body, if any, in `body`), begun at
    /// `started`, then acts on its answer.
    pub(super) fn dispatch(
        &mut self,
        cx: &mut LoopCx<'_>,
        head: &Head,
        body: Range<usize>,
        started: Instant,
    ) {
        let mut route = ROUTE_NONE;
        let answer = self.call(cx, head, Some(body.clone()), &mut route);
        // The handler has taken what it needs: the request's bytes can go.
        if let Some(input) = self.input.as_mut() {
            input.consume(body.end);
        }
        self.act(cx, Exchange::of(head, route, started), answer);
    }

    /// Calls the handler with the request in the input buffer: its body at `body`, or
    /// `None` while the body has not been read. Returns its answer; `route` is set to the
    /// route the handler named.
    #[inline(always)] // on the hot path: the answer it returns is then matched in place
    pub(super) fn call(
        &mut self,
        cx: &mut LoopCx<'_>,
        head: &Head,
        body: Option<Range<usize>>,
        route: &mut &'static str,
    ) -> Answer {
        let Some(input) = self.input.as_ref() else {
            return Answer::Now(Response::internal_error()); // a head always comes from the input
        };
        let bytes = input.bytes();
        let request = Request::new(head, bytes, body.map(|range| &bytes[range]));
        Self::call_handler(&mut self.seq, &mut self.detail, cx, &request, route)
    }

    /// Calls the handler under the next request number, and keeps the request's details
    /// for its log lines when they are read (`seq` and `detail` alone: the input may be
    /// held). Returns the answer; `route` is set to the route the handler named (an out
    /// parameter: returned in a pair, the large answer would be copied once more).
    #[inline(always)] // see `call`
    pub(super) fn call_handler(
        seq: &mut u32,
        detail: &mut Option<Box<Detail>>,
        cx: &mut LoopCx<'_>,
        req: &Request<'_>,
        route: &mut &'static str,
    ) -> Answer {
        if cx.telemetry.details {
            detail.get_or_insert_with(Box::default).capture(req);
        }
        // Every call gets its own number, so a reply promised by an earlier call (one that
        // then asked for the body after all) is recognised as stale and dropped.
        *seq = seq.wrapping_add(1);
        let id = ReplyId {
            token: cx.token,
            seq: *seq,
        };
        let mut ctx = Ctx::new(
            cx.stage.shutting_down(),
            id,
            cx.inbox,
            cx.db,
            &cx.telemetry.stats,
            cx.now,
        );
        // A panicking handler costs its request a 500, never the loop.
        let answer = catch_unwind(AssertUnwindSafe(|| cx.handler.handle(req, &mut ctx)))
            .unwrap_or_else(|_| {
                log::error!("handler panicked on {} {}", req.method.as_str(), req.path);
                Answer::Now(Response::internal_error())
            });
        *route = ctx.route_name();
        answer
    }

    /// Rule: answered from the head alone (RFC 9110 §10.1.1: a server that answers before
    /// the body says whether it reads the body or closes). A small body still on its way
    /// is read and dropped, so the connection can carry the next request. The answer says
    /// `Connection: close` instead, and the lingering close takes the body, when the
    /// client waits on `Expect: 100-continue` (it may never send that body), when the body
    /// may be longer than `DISCARD_MAX`, or when the answer comes later (nothing is read
    /// meanwhile).
    pub(super) fn answered_before_body(
        &mut self,
        cx: &mut LoopCx<'_>,
        head: &Head,
        mut exchange: Exchange,
        answer: Answer,
    ) {
        if let Some(input) = self.input.as_mut() {
            input.consume(head.len);
        }
        let started = exchange.started;
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
            self.state.set(State::Discarding(Box::new(discarding)), cx);
        }
    }
}
