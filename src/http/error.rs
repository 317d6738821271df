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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestError {
    /// The request line or a header field does not parse (bad token, obs-fold, bare CR,
    /// control characters, whitespace where none may be).
    Malformed,
    /// The request target is not origin-, absolute- or (for OPTIONS) asterisk-form.
    BadTarget,
    /// HTTP/1.1 without `Host`, or more than one `Host` (RFC 9112 §3.2).
    BadHost,
    /// `Content-Length` is not digits, overflows, or has differing values.
    BadContentLength,
    /// Transfer-Encoding with Content-Length, in HTTP/1.0, or without a final `chunked`.
    AmbiguousFraming,
    /// A transfer coding other than `chunked`.
    UnsupportedTransferCoding,
    /// A method we do not recognise.
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
            BadTarget => (Status::BAD_REQUEST, "invalid request target"),
            BadHost => (Status::BAD_REQUEST, "exactly one Host header is required"),
            BadContentLength => (Status::BAD_REQUEST, "invalid Content-Length"),
            AmbiguousFraming => (Status::BAD_REQUEST, "ambiguous message framing"),
            BadChunk => (Status::BAD_REQUEST, "invalid chunked body"),
            Timeout => (Status::REQUEST_TIMEOUT, "request not received in time"),
            ExpectationFailed => (Status::EXPECTATION_FAILED, "unsupported expectation"),
            BodyTooLarge => (Status::PAYLOAD_TOO_LARGE, "request body too large"),
            UriTooLong => (Status::URI_TOO_LONG, "request target too long"),
            HeadTooLarge => (
                Status::HEADER_FIELDS_TOO_LARGE,
                "request header fields too large",
            ),
            MethodNotImplemented | UnsupportedTransferCoding => {
                (Status::NOT_IMPLEMENTED, "not implemented")
            }
            VersionNotSupported => (
                Status::HTTP_VERSION_NOT_SUPPORTED,
                "HTTP version not supported",
            ),
        }
    }
}
