//! What an answer leaves behind: the request counted in its loop's cells (`/metrics`),
//! and — when someone reads them — its debug line and its access-log line.
//!
//! What it is: [`ConnId`], the name a connection goes by in every log line (`c17`);
//! [`Detail`], what is kept of a request between its handler call and its answer for the
//! lines to say (method, target, `Referer`, `User-Agent`); and `Conn::answered`, called
//! once for every response whose head is encoded — now, after a timer, from a reply, a
//! stream, a refusal or the shutdown's 503.
//!
//! Why details only on demand: the counting costs a few instructions a request, always;
//! copying the target and two header fields costs a few hundred, and is done only while the
//! access log is on or debug logging is enabled (`Telemetry::details`). A connection keeps
//! its `Detail` for its life, so the copies reuse their buffers.

use std::fmt;
use std::net::SocketAddr;
use std::time::Instant;

use super::state::{State, Waiting};
use super::{CloseReason, Conn, LoopCx, Socket};
use crate::access_log::{Entry, Peer};
use crate::http::request::{Method, Request, Version};
use crate::http::response::Response;

/// A connection's name in logs: its loop's count of accepted connections, spread over the
/// loops (loop `i` of `n` names its `k`-th connection `k·n + i + 1`), so ids are unique in
/// the process without a counter shared by the loops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnId(pub u64);

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{}", self.0)
    }
}

/// What the log lines say of the request in progress, copied at its handler call.
#[derive(Debug, Default)]
pub struct Detail {
    /// The client's address (the access log's first field), when it was asked for.
    peer: Option<Peer>,
    /// The method and version of the request being answered, when the fields below are
    /// its (a refusal before any handler call has none); its answer takes them.
    request: Option<(Method, Version)>,
    /// Path and query, as sent.
    target: String,
    /// `Referer` and `User-Agent`, when sent (`has_*`): buffers reused request after
    /// request.
    referer: Vec<u8>,
    user_agent: Vec<u8>,
    has_referer: bool,
    has_agent: bool,
}

impl Detail {
    /// The details of a connection whose client is at `peer`.
    pub fn of_peer(peer: Option<SocketAddr>) -> Detail {
        Detail {
            peer: peer.map(Peer::new),
            ..Detail::default()
        }
    }

    /// Copies what the lines say of `req`, reusing the buffers of the last request.
    #[cold]
    pub(super) fn capture(&mut self, req: &Request<'_>) {
        self.request = Some((req.method, req.version));
        self.target.clear();
        self.target.push_str(req.path);
        if let Some(query) = req.query {
            self.target.push('?');
            self.target.push_str(query);
        }
        let (referer, user_agent) = (&mut self.referer, &mut self.user_agent);
        referer.clear();
        user_agent.clear();
        let (mut has_referer, mut has_agent) = (false, false);
        req.for_each_header(|name, value| {
            let (into, has) = if name.eq_ignore_ascii_case("referer") {
                (&mut *referer, &mut has_referer)
            } else if name.eq_ignore_ascii_case("user-agent") {
                (&mut *user_agent, &mut has_agent)
            } else {
                return;
            };
            if !*has {
                into.extend_from_slice(value);
                *has = true;
            }
        });
        self.has_referer = has_referer;
        self.has_agent = has_agent;
    }
}

/// How a response went out, for [`Conn::answered`].
pub(super) struct Answered<'r> {
    pub route: &'static str,
    /// The request's first byte.
    pub started: Instant,
    /// The response (a stream's head: its body is not counted).
    pub response: &'r Response,
    /// The connection closes after this answer: for `ends`, or for `CloseReason::Done`
    /// when this is `None`.
    pub closes: bool,
    pub ends: Option<CloseReason>,
}

impl<S: Socket> Conn<S> {
    /// A response's head was encoded: count it, and write its lines when asked for.
    #[inline(always)] // once a request, on the hot path: the counting is a few adds
    pub(super) fn answered(&mut self, cx: &mut LoopCx<'_>, a: Answered<'_>) {
        cx.telemetry
            .cells
            .answered(a.route, a.response.status.0, a.started, cx.now);
        if cx.telemetry.details {
            self.log_answer(cx, &a);
        }
    }

    /// The answer's debug line and access-log line.
    #[cold]
    fn log_answer(&mut self, cx: &mut LoopCx<'_>, a: &Answered<'_>) {
        let detail = self.detail.get_or_insert_with(Box::default);
        let request = detail.request.take();
        let held = request.is_some();
        let (method, target) = match request {
            Some((method, _)) => (method.as_str(), detail.target.as_str()),
            None => ("-", "-"),
        };
        let duration = cx.now.saturating_duration_since(a.started);
        log::debug!(
            "{} {method} {target} {} {:.3}ms",
            cx.id,
            a.response.status.0,
            duration.as_secs_f64() * 1e3
        );
        let Some(access_log) = cx.telemetry.access_log.as_mut() else {
            return;
        };
        let version = match request {
            Some((_, Version::Http10)) => "HTTP/1.0",
            Some((_, Version::Http11)) => "HTTP/1.1",
            None => "-",
        };
        let referer = (held && detail.has_referer).then_some(detail.referer.as_slice());
        let user_agent = (held && detail.has_agent).then_some(detail.user_agent.as_slice());
        access_log.record(&Entry {
            date: cx.date,
            remote: detail.peer.as_ref(),
            method,
            target,
            version,
            status: a.response.status.0,
            bytes: a.response.body.len() as u64,
            duration,
            conn: cx.id.0,
            referer,
            user_agent,
            ended: match (a.ends, a.closes) {
                (Some(reason), _) => Some(reason.label()),
                (None, true) => Some(CloseReason::Done.label()),
                (None, false) => None,
            },
        });
    }
}

impl State {
    /// When the request being refused or cut began: its first byte, as far as the state
    /// knows; `now` for a request that never began (a refusal on arrival).
    pub(super) fn request_started(&self, now: Instant) -> Instant {
        match self {
            State::Head { since, .. } => *since,
            State::Body(b) => b.started,
            State::Discarding(d) => d.started,
            State::Waiting(w) => match &**w {
                Waiting::Timer { exchange, .. } | Waiting::Reply { exchange, .. } => {
                    exchange.started
                }
            },
            State::Streaming(s) => s.exchange.started,
            _ => now,
        }
    }
}
