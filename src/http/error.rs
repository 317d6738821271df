//! Why a request could not be taken, and the one place that turns that into a status code.
//!
//! What it is: [`RequestError`], a small flat enum named after where the request failed,
//! and [`RequestError::status`], the only mapping from errors to statuses in the crate.
//!
//! Invariant: every request error closes the connection after its answer. Once the
//! framing of one message is in doubt, the next message's start is in doubt too (RFC 9112
//! §6.3: "the server MUST ... close the connection" after an invalid framing), so keeping
//! the connection would invite request smuggling.

use super::body::BodyError;
use super::response::Status;

/// Why a request was refused; [`RequestError::status`] says how it is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestError {
    /// The request line or a header field does not parse (bad token, obs-fold, bare CR,
    /// control characters, whitespace where none may be).
    Malformed,
    /// The request target breaks the rule named by [`TargetRule`].
    BadTarget(TargetRule),
    /// HTTP/1.1 without `Host`, or more than one `Host` (RFC 9112 §3.2).
    HostCount,
    /// A `Host` value that is not `uri-host [ ":" port ]` with a non-empty host
    /// (RFC 9110 §7.2, §4.2.1).
    BadHost,
    /// `Content-Length` is not digits, overflows, or has differing values.
    BadContentLength,
    /// Transfer-Encoding with Content-Length, in HTTP/1.0, or without a final `chunked`.
    AmbiguousFraming,
    /// A transfer coding other than `chunked`.
    UnsupportedTransferCoding,
    /// A method we do not recognise, whatever its length.
    MethodNotImplemented,
    /// Not HTTP/1.0 or HTTP/1.1.
    VersionNotSupported,
    /// An `Expect` other than `100-continue`.
    ExpectationFailed,
    /// The request line alone is longer than we accept.
    UriTooLong,
    /// The head is longer than `MAX_HEADER_BYTES`, or has too many fields.
    HeadTooLarge,
    /// The body is longer than `MAX_BODY_BYTES`.
    BodyTooLarge,
    /// The chunked body's framing is broken.
    BadChunk,
    /// The head or body did not arrive within its timeout.
    Timeout,
    /// The loop's buffers are over `BUFFER_BUDGET_BYTES`: the request was fine, the
    /// server has no memory to give it now.
    Overloaded,
}

/// The rule of the request-target grammar (RFC 9112 §3.2, RFC 3986) a target broke: the
/// JSON error names it, so a client author can see what to fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetRule {
    /// Not origin-form (`/path?query`), absolute-form (`http://host/path`) or, for
    /// OPTIONS only, asterisk-form (`*`).
    Form,
    /// A `#`: the fragment stays with the client and is never sent.
    Fragment,
    /// A raw byte above 0x7F: outside ASCII, a target carries percent-encoded bytes only.
    NonAscii,
    /// A `%` not followed by two hex digits.
    PercentEncoding,
    /// Any other byte outside the grammar: a control, `"`, `<`, `>`, `\`, `^`, `` ` ``,
    /// `{`, `|`, `}`, or `[`/`]` outside an IPv6 host.
    Byte,
}

impl From<BodyError> for RequestError {
    fn from(e: BodyError) -> Self {
        match e {
            BodyError::TooLarge => RequestError::BodyTooLarge,
            BodyError::BadChunkSize
            | BodyError::BadChunkEnd
            | BodyError::BadChunkSyntax
            | BodyError::LineTooLong => RequestError::BadChunk,
        }
    }
}

impl RequestError {
    /// The status and the reason shown to the client in `{"error": ...}`. The reason names
    /// the rule that was broken so a client author can fix the request, and nothing more.
    pub fn status(self) -> (Status, &'static str) {
        use RequestError::*;
        match self {
            Malformed => (Status::BAD_REQUEST, "malformed request head"),
            BadTarget(rule) => (Status::BAD_REQUEST, rule.reason()),
            HostCount => (Status::BAD_REQUEST, "exactly one Host header is required"),
            BadHost => (
                Status::BAD_REQUEST,
                "invalid Host: a non-empty host and an optional numeric port (RFC 9110 §7.2)",
            ),
            BadContentLength => (Status::BAD_REQUEST, "invalid Content-Length"),
            AmbiguousFraming => (Status::BAD_REQUEST, "ambiguous message framing"),
            BadChunk => (Status::BAD_REQUEST, "invalid chunked body"),
            Timeout => (Status::REQUEST_TIMEOUT, "request not received in time"),
            Overloaded => (
                Status::SERVICE_UNAVAILABLE,
                "server busy: its buffers are full, retry later",
            ),
            ExpectationFailed => (Status::EXPECTATION_FAILED, "unsupported expectation"),
            BodyTooLarge => (Status::PAYLOAD_TOO_LARGE, "request body too large"),
            UriTooLong => (Status::URI_TOO_LONG, "request target too long"),
            HeadTooLarge => (
                Status::HEADER_FIELDS_TOO_LARGE,
                "request header fields too large",
            ),
            MethodNotImplemented => (Status::NOT_IMPLEMENTED, "method not implemented"),
            UnsupportedTransferCoding => {
                (Status::NOT_IMPLEMENTED, "transfer coding not implemented")
            }
            VersionNotSupported => (
                Status::HTTP_VERSION_NOT_SUPPORTED,
                "HTTP version not supported",
            ),
        }
    }
}

impl TargetRule {
    /// The reason shown to the client, naming the rule and where it is written.
    fn reason(self) -> &'static str {
        match self {
            TargetRule::Form => {
                "invalid request target: not /path, http://host/path or OPTIONS * (RFC 9112 §3.2)"
            }
            TargetRule::Fragment => {
                "invalid request target: '#' is not allowed, a fragment is never sent (RFC 9112 §3.2.1)"
            }
            TargetRule::NonAscii => {
                "invalid request target: bytes above 0x7F must be percent-encoded (RFC 3986 §2.1)"
            }
            TargetRule::PercentEncoding => {
                "invalid request target: '%' must be followed by two hex digits (RFC 3986 §2.1)"
            }
            TargetRule::Byte => {
                "invalid request target: a byte outside the URI grammar (RFC 9112 §3.2.1, RFC 3986 §3.3)"
            }
        }
    }
}
