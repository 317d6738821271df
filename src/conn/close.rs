//! Why a connection closed, as a value.
//!
//! Every socket the server closes is closed for exactly one [`CloseReason`]. The reason is
//! logged, counted in the shutdown report, and asserted on in tests; it is never inferred
//! after the fact from flags.
//!
//! What it is not: it decides nothing. The connection picks the reason where the close is
//! decided; the loop logs it (ordinary client behaviour at debug) and counts it.

use std::fmt;

/// Why a connection closed: one value per close, logged and counted in the shutdown
/// report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// The client closed its side with no request in progress.
    PeerClosed,
    /// The client closed its side in the middle of a request head or body.
    PeerClosedMidRequest,
    /// A read or write failed (reset, broken pipe): an ordinary client disconnect.
    PeerReset,
    /// We answered with `Connection: close` (the client asked, HTTP/1.0, or a drain) and
    /// the response went out in full.
    Done,
    /// A request broke a rule of HTTP (400, 413, 414, 431, 501, 505, 417): answered, then
    /// closed, because the start of the next request cannot be trusted.
    Rejected,
    /// The request was answered from its head, and the body it declared could not be read
    /// past: longer than the bound for dropping it, or broken framing.
    UnreadBody,
    /// Idle longer than `KEEPALIVE_TIMEOUT_MS`.
    IdleTimeout,
    /// A request head or body did not arrive in time; answered 408 (unless the request
    /// was answered from its head already, and only its body was being read past).
    RequestTimeout,
    /// The client did not read our output for `WRITE_TIMEOUT_MS`.
    WriteTimeout,
    /// Idle keep-alive connection closed because the server is shutting down.
    IdleOnShutdown,
    /// The shutdown deadline passed before the response started; answered 503.
    AnsweredUnavailable,
    /// The shutdown deadline passed while the response was being sent; cut short.
    CutAtDeadline,
    /// The handler's stream panicked mid-body: the response ends without its last
    /// chunk, so a chunked client can tell it is incomplete (an HTTP/1.0 body just ends).
    StreamFailed,
}

impl CloseReason {
    /// An ordinary event in a client's life, logged at debug rather than info/warn.
    pub fn is_routine(self) -> bool {
        !matches!(
            self,
            CloseReason::CutAtDeadline
                | CloseReason::AnsweredUnavailable
                | CloseReason::StreamFailed
        )
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            CloseReason::PeerClosed => "peer closed",
            CloseReason::PeerClosedMidRequest => "peer closed mid-request",
            CloseReason::PeerReset => "peer reset",
            CloseReason::Done => "done",
            CloseReason::Rejected => "rejected",
            CloseReason::UnreadBody => "answered, body not read",
            CloseReason::IdleTimeout => "idle timeout",
            CloseReason::RequestTimeout => "request timeout (408)",
            CloseReason::WriteTimeout => "write timeout",
            CloseReason::IdleOnShutdown => "idle at shutdown",
            CloseReason::AnsweredUnavailable => "deadline: answered 503",
            CloseReason::CutAtDeadline => "deadline: cut",
            CloseReason::StreamFailed => "stream panicked: cut",
        };
        f.write_str(text)
    }
}
