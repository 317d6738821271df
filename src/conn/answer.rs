//! From a handler's answer to bytes on their way out: the other half of `exchange.rs`
//! (which turns input into requests and calls the handler).
//!
//! What it is: `act` (an answer now, after a timer, from a reply, or as a stream), the
//! one place that decides whether a connection persists after a response (`delivery`,
//! RFC 9112 §9.3), the encoding of complete responses and of a stream's chunks, and the
//! server's own answers: a request that broke a rule, a timeout, the shutdown's 503
//! (`encode_last`). Every response whose head is encoded is accounted for here
//! (`Conn::answered`, `account.rs`).
//!
//! What it is not: writing (`io.rs`) or closing (`lifecycle.rs`): a response only moves
//! the connection to `Idle` or `Closing`.

use std::panic::{AssertUnwindSafe, catch_unwind};

use super::account::Answered;
use super::state::{Exchange, State, Streaming, Waiting, after};
use super::{BufPool, CloseReason, Conn, LoopCx, Socket};
use crate::handler::Answer;
use crate::http::error::RequestError;
use crate::http::request::{Persistence, Version};
use crate::http::response::{self, Delivery, Length, Response};
use crate::stats::ROUTE_NONE;

impl<S: Socket> Conn<S> {
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
