//! Why a connection closed, as a value.
//!
//! Every socket the server closes is closed for exactly one [`CloseReason`]. The reason is
//! logged, counted in the shutdown report, and asserted on in tests; it is never inferred
//! after the fact from flags.
//!
//! [`Heading`]: under which heading of the shutdown report (and of `/metrics`) a close
//! during a shutdown is counted.
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
    /// Every reason, in the order of their cells in `/metrics`.
    pub const ALL: [CloseReason; 13] = [
        CloseReason::PeerClosed,
        CloseReason::PeerClosedMidRequest,
        CloseReason::PeerReset,
        CloseReason::Done,
        CloseReason::Rejected,
        CloseReason::UnreadBody,
        CloseReason::IdleTimeout,
        CloseReason::RequestTimeout,
        CloseReason::WriteTimeout,
        CloseReason::IdleOnShutdown,
        CloseReason::AnsweredUnavailable,
        CloseReason::CutAtDeadline,
        CloseReason::StreamFailed,
    ];

    /// Where this reason is in [`CloseReason::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The reason as a Prometheus label value: `snake_case`, stable.
    pub fn label(self) -> &'static str {
        match self {
            CloseReason::PeerClosed => "peer_closed",
            CloseReason::PeerClosedMidRequest => "peer_closed_mid_request",
            CloseReason::PeerReset => "peer_reset",
            CloseReason::Done => "done",
            CloseReason::Rejected => "rejected",
            CloseReason::UnreadBody => "unread_body",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::RequestTimeout => "request_timeout",
            CloseReason::WriteTimeout => "write_timeout",
            CloseReason::IdleOnShutdown => "idle_on_shutdown",
            CloseReason::AnsweredUnavailable => "answered_503",
            CloseReason::CutAtDeadline => "cut_at_deadline",
            CloseReason::StreamFailed => "stream_failed",
        }
    }

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

/// The report's headings: every connection closed during a shutdown is counted under
/// exactly one, in the report and in `/metrics` alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heading {
    /// Idle keep-alive connections closed at once.
    IdleClosed,
    /// Finished their request and closed, or the client closed them.
    Drained,
    /// Ended by the client's fault during the drain: a reset, a timeout, a request left
    /// half-sent.
    Failed,
    /// The deadline passed before their response started: answered 503.
    Answered503,
    /// The deadline passed while their response was being sent: cut short.
    Cut,
}

impl Heading {
    /// Every heading, in the order of their cells in `/metrics`.
    pub const ALL: [Heading; 5] = [
        Heading::IdleClosed,
        Heading::Drained,
        Heading::Failed,
        Heading::Answered503,
        Heading::Cut,
    ];

    /// The heading a close during the shutdown is counted under.
    pub fn of(reason: CloseReason) -> Heading {
        match reason {
            CloseReason::IdleOnShutdown => Heading::IdleClosed,
            CloseReason::AnsweredUnavailable => Heading::Answered503,
            CloseReason::CutAtDeadline => Heading::Cut,
            CloseReason::Done | CloseReason::PeerClosed => Heading::Drained,
            CloseReason::PeerReset
            | CloseReason::Rejected
            | CloseReason::PeerClosedMidRequest
            | CloseReason::UnreadBody
            | CloseReason::IdleTimeout
            | CloseReason::RequestTimeout
            | CloseReason::WriteTimeout
            | CloseReason::StreamFailed => Heading::Failed,
        }
    }

    /// The heading as the report line and the `/metrics` label write it.
    pub fn label(self) -> &'static str {
        match self {
            Heading::IdleClosed => "idle_closed",
            Heading::Drained => "drained",
            Heading::Failed => "failed",
            Heading::Answered503 => "answered_503",
            Heading::Cut => "cut",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_is_at_its_index() {
        for (i, reason) in CloseReason::ALL.iter().enumerate() {
            assert_eq!(reason.index(), i, "{reason}");
        }
    }
}
