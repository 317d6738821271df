//! From a complete head to an answer on the way out: the part of a connection that
//! speaks HTTP (`http` turns bytes into a head and a response into bytes; this decides
//! what happens between the two).
//!
//! What it is: `process` (buffered input → requests, in order, under back-pressure), the
//! handler call and the body policy (read when the handler asks, dropped or refused when
//! it answers from the head), and the ways an answer goes out: now, after a timer, from a
//! reply, as a stream, or as the refusal of a request that broke a rule.
//!
//! What it is not: reading or writing the socket (`io.rs`), or deciding when a connection
//! closes (`lifecycle.rs`): an answer here only says whether its connection persists
//! (RFC 9112 §9.3), in one place, `delivery`.

use std::ops::Range;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

use super::account::{Answered, Detail};
use super::io::ReadSide;
use super::state::{BodyState, Discarding, Exchange, State, Streaming, Waiting, after};
use super::{BufPool, CloseReason, Conn, LoopCx, Socket};
use crate::handler::{Answer, Ctx, ReplyId};
use crate::http::body::{BodyDecoder, Framing};
use crate::http::error::RequestError;
use crate::http::request::{self, Head, Persistence, Request, Version};
use crate::http::response::{self, Delivery, Length, Response};
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

    /// Acts on a handler's answer: encode it now, or wait for its timer, reply or chunks.
    #[inline(always)] // see `call`
    pub(super) fn act(&mut self, cx: &mut LoopCx<'_>, exchange: Exchange, answer: Answer) {
        match answer {
            Answer::Now(response) => self.respond(cx, exchange, &response),
            Answer::After(delay, response) => {
                let waiting = Waiting::Timer {
                    at: after(cx.now, delay),
                    response,
                    exchange,
                };
                self.state.set(State::Waiting(Box::new(waiting)), cx);
            }
            Answer::Later(pending) => {
                let waiting = Waiting::Reply {
                    seq: pending.0.seq,
                    exchange,
                };
                self.state.set(State::Waiting(Box::new(waiting)), cx);
            }
            Answer::Stream(stream) => {
                let delivery = Self::delivery(cx, exchange, true);
                let out = self.out(cx.bufs);
                response::encode_head(&stream.head, delivery, cx.date, Length::Streamed, out);
                let answered = Answered {
                    route: exchange.route,
                    started: exchange.started,
                    response: &stream.head,
                    closes: false,
                    ends: None,
                };
                self.answered(cx, answered);
                if exchange.head_only {
                    return self.finish_response(cx, delivery.close);
                }
                let streaming = Streaming {
                    exchange,
                    chunks: stream.chunks.peekable(),
                    interval: stream.interval,
                    next_at: after(cx.now, stream.interval),
                };
                self.state.set(State::Streaming(Box::new(streaming)), cx);
            }
            // Rule: asking for a body the handler already has is a bug in the handler: 500.
            Answer::ReadBody => {
                log::error!("{}: the handler asked to read a body it was given", cx.id);
                self.respond(cx, exchange, &Response::internal_error());
            }
        }
    }

    /// How this response is to be framed: whether the connection persists after it
    /// (RFC 9112 §9.3), decided here and nowhere else. `streamed`: its body goes out in
    /// chunks, its length unknown.
    pub(super) fn delivery(cx: &LoopCx<'_>, exchange: Exchange, streamed: bool) -> Delivery {
        let close = exchange.persistence == Persistence::Close
            || cx.stage.shutting_down()
            // A 1.0 client cannot read chunks: a streamed body ends when the connection does.
            || (streamed && exchange.version == Version::Http10);
        Delivery {
            version: exchange.version,
            close,
            head_only: exchange.head_only,
        }
    }

    /// Encodes a complete response and moves on to the next request or to closing.
    #[inline(always)] // once a request, from `act`: in line, no registers saved around it
    pub(super) fn respond(&mut self, cx: &mut LoopCx<'_>, exchange: Exchange, response: &Response) {
        let delivery = Self::delivery(cx, exchange, false);
        self.encode(cx, response, delivery);
        let answered = Answered {
            route: exchange.route,
            started: exchange.started,
            response,
            closes: delivery.close,
            ends: None,
        };
        self.answered(cx, answered);
        self.finish_response(cx, delivery.close);
    }

    /// The response is fully encoded: the connection persists or closes.
    pub(super) fn finish_response(&mut self, cx: &mut LoopCx<'_>, close: bool) {
        let next = if close {
            State::Closing {
                reason: CloseReason::Done,
            }
        } else {
            State::Idle { since: cx.now }
        };
        self.state.set(next, cx);
    }

    /// Sends the next chunk of a stream, and the end of the body with the last one.
    pub(super) fn next_chunk(&mut self, cx: &mut LoopCx<'_>) {
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
        let close = Self::delivery(cx, s.exchange, true).close;
        self.finish_response(cx, close);
    }

    /// A stream's chunks panicked: what was sent stays sent, the body never gets its end,
    /// and the connection closes once the output is out.
    pub(super) fn stream_failed(&mut self, cx: &mut LoopCx<'_>) {
        log::error!("{}: a stream's chunks panicked", cx.id);
        let closing = State::Closing {
            reason: CloseReason::StreamFailed,
        };
        self.state.set(closing, cx);
    }

    /// A head or body that did not arrive in time: 408, then close.
    pub(super) fn time_out(&mut self, cx: &mut LoopCx<'_>) -> Result<(), CloseReason> {
        self.reject(cx, RequestError::Timeout);
        self.drive(cx)
    }

    /// Answers a request that broke a rule, then closes: after a framing error the start
    /// of the next request cannot be trusted (see `http::error`).
    pub(super) fn reject(&mut self, cx: &mut LoopCx<'_>, error: RequestError) {
        let (status, reason) = error.status();
        log::debug!("{}: rejected with {}: {reason}", cx.id, status.0);
        let ends = match error {
            RequestError::Timeout => CloseReason::RequestTimeout,
            _ => CloseReason::Rejected,
        };
        self.encode_last(cx, &Response::error(status, reason), false, ends);
        if let Some(input) = self.input.as_mut() {
            input.consume(input.len());
        }
        let reason = ends;
        self.state.set(State::Closing { reason }, cx);
    }

    /// Encodes the connection's last response, the server's own (it closes for `ends`):
    /// `Connection: close`, and framed for 1.1, because the request it answers may not
    /// have parsed far enough to know better.
    pub(super) fn encode_last(
        &mut self,
        cx: &mut LoopCx<'_>,
        response: &Response,
        head_only: bool,
        ends: CloseReason,
    ) {
        let delivery = Delivery {
            version: Version::Http11,
            close: true,
            head_only,
        };
        self.encode(cx, response, delivery);
        let answered = Answered {
            route: ROUTE_NONE,
            started: self.state.request_started(cx.now),
            response,
            closes: true,
            ends: Some(ends),
        };
        self.answered(cx, answered);
    }

    /// Encodes a response into the output buffer; a large static body the encoder left
    /// out follows it from where it lives.
    #[inline(always)] // once a request, from `respond`
    fn encode(&mut self, cx: &mut LoopCx<'_>, response: &Response, delivery: Delivery) {
        let out = self.output.get_or_insert_with(|| cx.bufs.take_output());
        if let Some(body) = response::encode(response, delivery, cx.date, out.vec()) {
            out.follow_with(body.into());
        }
    }

    /// The output buffer, borrowed from the pool when there is none.
    pub(super) fn out(&mut self, bufs: &mut BufPool) -> &mut Vec<u8> {
        self.output.get_or_insert_with(|| bufs.take_output()).vec()
    }
}
