//! The request head: request line and header fields, parsed by `httparse` and then judged
//! against the rules of RFC 9110/9112 that `httparse` leaves to us. A head of the common
//! shape is read by `plain.rs` instead, in one pass, to the same verdict.
//!
//! What it is: a pure function, [`parse_head`], from bytes to one of three outcomes —
//! a complete [`Head`], "not enough bytes yet" (`Ok(None)`), or a [`RequestError`] — and
//! the borrowed [`Request`] view that handlers read.
//!
//! What it is not: it never touches a socket or the clock, and it never allocates. A `Head`
//! stores *offsets* into the bytes it was parsed from, so it can be kept while a body
//! arrives without copying the path or the headers anywhere.
//!
//! Invariants:
//! - every partial outcome is bounded: a head longer than `max_head` bytes is 431 (or 414
//!   when the request line alone is too long), so a peer cannot make us buffer forever;
//! - the message framing decided here (RFC 9112 §6.3) is the only one the connection uses:
//!   anything ambiguous is rejected, never guessed (request smuggling defence).

use std::mem::MaybeUninit;
use std::ops::Range;

use super::body::Framing;
use super::error::RequestError;
use super::fields::judge_fields;
use super::plain::{self, Plain};
use super::uri::{T_OK, T_QUERY, check_target_bytes, split_target, target_classes};
pub use super::view::Request;

/// At most this many header fields in one request; more is 431 (nginx and Go cap similarly).
pub const MAX_HEADERS: usize = 64;

/// The request line alone may not exceed this many bytes (414 URI Too Long past it).
/// 8 KiB is what nginx's `large_client_header_buffers` allows for one line.
pub const MAX_REQUEST_LINE: usize = 8 * 1024;

/// The request methods we recognise (RFC 9110 §9). Anything else is 501 (§9.1: "An origin
/// server that receives a request method that is unrecognized or not implemented SHOULD
/// respond with the 501 (Not Implemented) status code").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `GET` (RFC 9110 §9.3.1).
    Get,
    /// `HEAD`: as `GET`, without the body (§9.3.2).
    Head,
    /// `POST` (§9.3.3).
    Post,
    /// `PUT` (§9.3.4).
    Put,
    /// `DELETE` (§9.3.5).
    Delete,
    /// `OPTIONS` (§9.3.7).
    Options,
    /// `PATCH` (RFC 5789).
    Patch,
    /// `TRACE` (§9.3.8): known, and routed like any method (405 where not allowed).
    Trace,
    /// `CONNECT` (§9.3.6): known, but its authority-form target is refused: not a proxy.
    Connect,
}

impl Method {
    /// Methods are case-sensitive (RFC 9110 §9.1): `get` is not `GET`.
    #[inline(always)] // the hot path's method check: one compare of a few bytes
    pub(super) fn from_token(token: &[u8]) -> Option<Method> {
        Some(match token {
            b"GET" => Method::Get,
            b"HEAD" => Method::Head,
            b"POST" => Method::Post,
            b"PUT" => Method::Put,
            b"DELETE" => Method::Delete,
            b"OPTIONS" => Method::Options,
            b"PATCH" => Method::Patch,
            b"TRACE" => Method::Trace,
            b"CONNECT" => Method::Connect,
            _ => return None,
        })
    }

    /// The method as it is spelled on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Options => "OPTIONS",
            Method::Patch => "PATCH",
            Method::Trace => "TRACE",
            Method::Connect => "CONNECT",
        }
    }
}

/// The protocol version of a request. HTTP/2 and later never arrive here in this form,
/// and `httparse` rejects versions other than 1.0 and 1.1 (answered 505).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// HTTP/1.0: closes after each answer unless it asks for `keep-alive`.
    Http10,
    /// HTTP/1.1 (and 1.2 to 1.9, served as 1.1).
    Http11,
}

/// Whether the connection may carry another request after this one (RFC 9112 §9.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persistence {
    /// Another request may follow on this connection.
    KeepAlive,
    /// The connection closes after this request's answer.
    Close,
}

/// A parsed request head. Ranges index the bytes the head was parsed from; the head itself
/// is `len` bytes long, so the body (if any) starts at `len`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// The request method.
    pub method: Method,
    /// The protocol version.
    pub version: Version,
    /// The path of the target, without the query (origin-form, or taken out of absolute-form).
    pub path: Range<usize>,
    /// The query after `?`, without the `?`.
    pub query: Option<Range<usize>>,
    /// How the body is framed (RFC 9112 §6.3).
    pub framing: Framing,
    /// Whether the connection may carry another request (RFC 9112 §9.3).
    pub persistence: Persistence,
    /// The client sent `Expect: 100-continue` (RFC 9110 §10.1.1) and will wait for a
    /// `100 Continue` before it sends the body.
    pub expect_continue: bool,
    /// Bytes of the head, final empty line included.
    pub len: usize,
}

/// The longest method we implement (`OPTIONS`, `CONNECT`). A method token that has grown
/// past it is one nobody here implements: 501 at once, however long it would have become.
const MAX_METHOD: usize = 7;

/// Parses a request head from the front of `buf`.
///
/// Returns `Ok(None)` while the head is incomplete and still within `max_head` bytes.
///
/// ```
/// use lastcall::http::body::Framing;
/// use lastcall::http::error::{RequestError, TargetRule};
/// use lastcall::http::request::{Method, parse_head};
///
/// let wire = b"POST /echo?x=1 HTTP/1.1\r\nHost: example.com\r\nContent-Length: 5\r\n\r\nhello";
/// // Not enough bytes yet is not an error: wait for more.
/// assert_eq!(parse_head(&wire[..20], 16 * 1024), Ok(None));
/// // Complete: offsets into the bytes, and the framing of the body that follows.
/// let head = parse_head(wire, 16 * 1024).unwrap().unwrap();
/// assert_eq!(head.method, Method::Post);
/// assert_eq!(&wire[head.path.clone()], b"/echo");
/// assert_eq!(head.framing, Framing::Length(5));
/// assert_eq!(&wire[head.len..], b"hello");
/// // Broken: the error names the rule, and says which status answers it.
/// let fragment = parse_head(b"GET /a#b HTTP/1.1\r\nHost: h\r\n\r\n", 16 * 1024);
/// assert_eq!(fragment, Err(RequestError::BadTarget(TargetRule::Fragment)));
/// assert_eq!(fragment.unwrap_err().status().0 .0, 400);
/// ```
///
/// The verdict does not depend on how the bytes were split. Whether httparse finds the
/// head complete, partial or broken, the rules are judged in one order, each on bytes a
/// shorter prefix would have judged the same way: the method token, then the bytes of the
/// target, then the limits (414, 431), then the version, the target's form and the
/// header fields.
pub fn parse_head(buf: &[u8], max_head: usize) -> Result<Option<Head>, RequestError> {
    Ok(parse_request(buf, max_head)?.map(|parsed| parsed.head))
}

/// A complete head, and its request target as httparse handed it out: already checked
/// to be UTF-8, so a [`Request`] can borrow its path from it without checking the bytes
/// a second time (see [`Request::parsed`]).
pub struct Parsed<'a> {
    /// The head, with offsets into the bytes it was parsed from.
    pub head: Head,
    /// The whole target, path and query, as a slice of those bytes; `None` for the rare
    /// head parsed from a copy (a `HTTP/1.2` served as 1.1), whose target is elsewhere.
    pub target: Option<&'a str>,
}

/// [`parse_head`], keeping the target `&str` httparse produced: what the connection
/// calls, so the path a handler reads is validated once per request, not twice.
pub fn parse_request(buf: &[u8], max_head: usize) -> Result<Option<Parsed<'_>>, RequestError> {
    // The common head first, read without httparse; anything it does not vouch for goes
    // the general way below (see `plain.rs`).
    if let Some(plain) = plain::read(buf) {
        return plain_head(buf, plain, max_head).map(Some);
    }
    parse_general(buf, max_head)
}

/// Any head, by httparse and then the rules httparse leaves to us.
pub(super) fn parse_general(
    buf: &[u8],
    max_head: usize,
) -> Result<Option<Parsed<'_>>, RequestError> {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut slots) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return partial(buf, max_head).map(|_| None),
        Err(error) => {
            let head = refused(buf, error, max_head)?;
            return Ok(head.map(|head| Parsed { head, target: None }));
        }
    };

    // httparse returns Complete only with all three request-line parts present.
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(RequestError::Malformed);
    };
    let method = Method::from_token(method.as_bytes()).ok_or(RequestError::MethodNotImplemented)?;
    let start = offset_of(buf, target);
    // One pass over the target says whether it is all plain bytes (nearly always) and
    // whether it has a query; only a target with something else is looked at again.
    let classes = target_classes(target.as_bytes());
    if classes & !T_QUERY != T_OK {
        let visible = target
            .len()
            .min(judged_window(max_head).saturating_sub(start));
        check_target_bytes(&target.as_bytes()[..visible], visible == target.len())?;
    }
    check_limits(buf, len, max_head)?;
    let version = if minor == 0 {
        Version::Http10
    } else {
        Version::Http11
    };
    let (path, query) = split_target(start, target, method, classes & T_QUERY != 0)?;

    let fields = judge_fields(req.headers, version)?;
    let head = Head {
        method,
        version,
        path,
        query,
        framing: fields.framing,
        persistence: fields.persistence(version),
        expect_continue: fields.expect_continue,
        len,
    };
    Ok(Some(Parsed {
        head,
        target: Some(target),
    }))
}

/// A complete plain head, judged in [`parse_head`]'s order: its method and target bytes
/// are fine by construction, then come the limits, the target's form and the fields.
pub(super) fn plain_head<'a>(
    buf: &'a [u8],
    plain: Plain<'a>,
    max_head: usize,
) -> Result<Parsed<'a>, RequestError> {
    check_limits(buf, plain.len, max_head)?;
    let (path, query) = split_target(plain.start, plain.target, plain.method, plain.has_query)?;
    if let Some(e) = plain.field_error {
        return Err(e);
    }
    let fields = plain.judge.finish(plain.version)?;
    let head = Head {
        method: plain.method,
        version: plain.version,
        path,
        query,
        framing: fields.framing,
        persistence: fields.persistence(plain.version),
        expect_continue: fields.expect_continue,
        len: plain.len,
    };
    Ok(Parsed {
        head,
        target: Some(plain.target),
    })
}

/// "Not enough bytes yet", within bounds: what has arrived of the request line breaks no
/// rule, and no size limit has been crossed.
fn partial(buf: &[u8], max_head: usize) -> Result<Option<Head>, RequestError> {
    judge_line_start(buf, max_head)?;
    // A partial head of `max_head` bytes can only complete longer than that.
    check_limits(buf, buf.len() + 1, max_head)?;
    Ok(None)
}

/// The size limits, each judged at the byte that crosses it, so whichever comes first
/// wins: a request line longer than `MAX_REQUEST_LINE` is 414, a head of `head_len` bytes
/// longer than `max_head` is 431. (With `max_head` at most `MAX_REQUEST_LINE`, a line
/// that long has crossed `max_head` first.)
fn check_limits(buf: &[u8], head_len: usize, max_head: usize) -> Result<(), RequestError> {
    if MAX_REQUEST_LINE < max_head && request_line_too_long(buf) {
        return Err(RequestError::UriTooLong);
    }
    if head_len > max_head {
        return Err(RequestError::HeadTooLarge);
    }
    Ok(())
}

/// httparse refused the head. It stops at the first byte it cannot take and says little
/// about why, so the rules with their own answers are judged here first.
fn refused(
    buf: &[u8],
    error: httparse::Error,
    max_head: usize,
) -> Result<Option<Head>, RequestError> {
    judge_line_start(buf, max_head)?;
    // httparse stops at its first fault, which may lie past a size limit that a shorter
    // prefix would already have been answered for (414, 431): judge the prefix that ends
    // where the first limit is crossed instead, so a fault beyond it cannot win.
    if let Some(cut) = limit_crossed_at(buf, max_head)
        && cut < buf.len()
    {
        return parse_head(&buf[..cut], max_head);
    }
    match error {
        httparse::Error::TooManyHeaders => Err(RequestError::HeadTooLarge),
        // httparse rejects a version at its first unexpected byte; whether that is a
        // version we do not speak (505) or no version at all (400) shows only once the
        // line is complete (its own line: the empty lines httparse skipped before it do
        // not count). Until then it is partial, so the answer does not depend on how the
        // bytes were split.
        httparse::Error::Version if !buf[leading_empty_lines(buf)..].contains(&b'\n') => {
            partial(buf, max_head)
        }
        httparse::Error::Version => match line_version(buf) {
            // RFC 9110 §2.5: a higher minor version of a major version we implement
            // SHOULD be processed as the highest minor we support. httparse takes only
            // 1.0 and 1.1, so parse a copy that says 1.1: a `Head` holds offsets, and
            // the copy has the same ones. (A rare request: the copy costs nothing to
            // anyone else.)
            Some(LineVersion {
                major: b'1',
                minor_at: Some(minor_at),
            }) => {
                let mut as_11 = buf.to_vec();
                as_11[minor_at] = b'1';
                parse_head(&as_11, max_head)
            }
            Some(_) => Err(RequestError::VersionNotSupported),
            None => Err(RequestError::Malformed),
        },
        _ => Err(RequestError::Malformed),
    }
}

/// Where `buf` crosses a size limit, if it does: the byte past `MAX_REQUEST_LINE` of a
/// request line with no end in sight (414), or the byte past `max_head` (431), whichever
/// comes first — the lengths at which `partial` would already have answered.
fn limit_crossed_at(buf: &[u8], max_head: usize) -> Option<usize> {
    let line =
        (MAX_REQUEST_LINE < max_head && request_line_too_long(buf)).then_some(MAX_REQUEST_LINE + 1);
    let head = (buf.len() > max_head).then_some(max_head);
    line.into_iter().chain(head).min()
}

/// How far into the buffer the request line's own rules (method, target bytes) are
/// judged: the 414 and 431 limits are decided at these bytes, so a rule broken further
/// on must not win over them in a complete head when it could not in a partial one.
fn judged_window(max_head: usize) -> usize {
    MAX_REQUEST_LINE.min(max_head)
}

/// The request line as far as it has arrived, judged in [`parse_head`]'s order: the
/// method token, then the bytes of the target. Used where httparse gave no complete line.
fn judge_line_start(buf: &[u8], max_head: usize) -> Result<(), RequestError> {
    let window = &buf[..buf.len().min(judged_window(max_head))];
    // httparse skips empty lines before a request line (RFC 9112 §2.2); so do we.
    let line = &window[leading_empty_lines(window)..];
    let Some(method_len) = judge_method(line)? else {
        return Ok(());
    };
    let rest = &line[method_len + 1..];
    match rest.iter().position(|&b| matches!(b, b' ' | b'\r' | b'\n')) {
        Some(end) => check_target_bytes(&rest[..end], true),
        None => check_target_bytes(rest, false),
    }
}

/// The method token at the front of `line`: `Ok(Some(len))` once it is complete (a space
/// follows) and one we implement, `Ok(None)` while it may still become one (or is not a
/// token at all: httparse's `Malformed`), 501 as soon as it cannot.
fn judge_method(line: &[u8]) -> Result<Option<usize>, RequestError> {
    let head = &line[..line.len().min(MAX_METHOD + 1)];
    let len = head
        .iter()
        .position(|&b| !is_tchar(b))
        .unwrap_or(head.len());
    if len > MAX_METHOD {
        return Err(RequestError::MethodNotImplemented);
    }
    match line.get(len) {
        Some(b' ') if len > 0 => match Method::from_token(&line[..len]) {
            Some(_) => Ok(Some(len)),
            None => Err(RequestError::MethodNotImplemented),
        },
        _ => Ok(None),
    }
}

/// Whether the method token at the front of a partial head already decides the answer
/// (501). The connection asks this before waiting for a line end: a method nobody
/// implements is refused as soon as it is known, not after up to 8 KiB of line.
pub fn method_refused(buf: &[u8]) -> bool {
    judge_method(&buf[leading_empty_lines(buf)..]).is_err()
}

/// Whether bytes that just arrived in a partial head may decide its verdict before a line
/// ends, so the connection parses it again now rather than at the next line end (which
/// keeps a head trickled byte by byte from being re-parsed per byte). They may when one
/// of them can never be valid where it stands: a control other than HTAB, CR and LF, or
/// DEL, anywhere in a head (RFC 9110 §5.5, RFC 9112 §3); and while the request line is
/// still arriving, a byte above 0x7F, HTAB or one of `"<>\{}`, which neither a method
/// token, a request target, a version nor the single spaces between them may hold. Such a request is then answered 400 when the
/// byte arrives, however the head was split; every other byte waits for its line end.
pub fn decides_early(new: &[u8], in_request_line: bool) -> bool {
    new.iter().any(|&b| {
        let control = (b < 0x20 && !matches!(b, b'\t' | b'\r' | b'\n')) || b == 0x7f;
        control || (in_request_line && (b >= 0x80 || b"\t\"<>\\{}".contains(&b)))
    })
}

/// `tchar` (RFC 9110 §5.6.2): the bytes a method token is made of.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The version at the end of a complete request line `METHOD SP target SP version`.
struct LineVersion {
    major: u8,
    /// Where the minor digit sits in the buffer, when there is one (`HTTP/3` has none).
    minor_at: Option<usize>,
}

/// httparse says `Version` both for `HTTP/2.0` (a version: 505, or 1.1 for `HTTP/1.2`)
/// and for a request line that has no version where one should be (`GET /a b HTTP/1.1`:
/// 400). Only the first is a version: three words, the last `HTTP/d.d` or `HTTP/d`.
fn line_version(buf: &[u8]) -> Option<LineVersion> {
    let skipped = leading_empty_lines(buf);
    let line = buf[skipped..].split(|&b| b == b'\n').next()?;
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.split(|&b| b == b' ').count() != 3 {
        return None;
    }
    let (major, minor_at) = match line.rsplit(|&b| b == b' ').next()? {
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor] if minor.is_ascii_digit() => {
            (*major, Some(skipped + line.len() - 1))
        }
        [b'H', b'T', b'T', b'P', b'/', major] => (*major, None),
        _ => return None,
    };
    major
        .is_ascii_digit()
        .then_some(LineVersion { major, minor_at })
}

/// How many bytes of empty lines (CRLF, or a bare LF) open `buf`. RFC 9112 §2.2: a server
/// SHOULD ignore at least one empty line before a request line (clients sometimes send a
/// CRLF after a POST body). The caller drops them as they arrive: left in the buffer,
/// every new line would make the whole head be parsed again, and a client sending only
/// empty lines would cost time quadratic in their number.
pub fn leading_empty_lines(buf: &[u8]) -> usize {
    let mut n = 0;
    loop {
        match &buf[n..] {
            [b'\r', b'\n', ..] => n += 2,
            [b'\n', ..] => n += 1,
            _ => return n,
        }
    }
}

/// True when no line end appears within the first `MAX_REQUEST_LINE` bytes.
pub fn request_line_too_long(buf: &[u8]) -> bool {
    let window = &buf[..buf.len().min(MAX_REQUEST_LINE + 1)];
    window.len() > MAX_REQUEST_LINE && !window.contains(&b'\n')
}

/// Where `sub` (a slice of `buf`) sits inside `buf`. httparse hands out subslices of the
/// input, so this is pointer arithmetic, not a search.
pub(super) fn offset_of(buf: &[u8], sub: &str) -> usize {
    sub.as_ptr() as usize - buf.as_ptr() as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::error::TargetRule;

    const MAX: usize = 16 * 1024;

    fn parse(input: &str) -> Result<Option<Head>, RequestError> {
        parse_head(input.as_bytes(), MAX)
    }

    fn path_of(input: &str) -> (String, Option<String>) {
        let head = parse(input).unwrap().unwrap();
        let s = |r: Range<usize>| input[r].to_string();
        (s(head.path), head.query.map(s))
    }

    #[test]
    fn parse_head_accepts_valid_requests() {
        let cases: &[(&str, Method, Version, Framing, Persistence, bool)] = &[
            (
                "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
                Method::Get,
                Version::Http11,
                Framing::None,
                Persistence::KeepAlive,
                false,
            ),
            (
                "HEAD /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
                Method::Head,
                Version::Http11,
                Framing::None,
                Persistence::Close,
                false,
            ),
            (
                "GET / HTTP/1.0\r\n\r\n",
                Method::Get,
                Version::Http10,
                Framing::None,
                Persistence::Close,
                false,
            ),
            (
                "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
                Method::Get,
                Version::Http10,
                Framing::None,
                Persistence::KeepAlive,
                false,
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nConnection: foo, CLOSE\r\n\r\n",
                Method::Get,
                Version::Http11,
                Framing::None,
                Persistence::Close,
                false,
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nConnection: closed\r\n\r\n",
                Method::Get,
                Version::Http11,
                Framing::None,
                Persistence::KeepAlive,
                false,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n",
                Method::Post,
                Version::Http11,
                Framing::Length(5),
                Persistence::KeepAlive,
                false,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n",
                Method::Post,
                Version::Http11,
                Framing::Length(5),
                Persistence::KeepAlive,
                false,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
                Method::Post,
                Version::Http11,
                Framing::None,
                Persistence::KeepAlive,
                false,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
                Method::Post,
                Version::Http11,
                Framing::Chunked,
                Persistence::KeepAlive,
                false,
            ),
            (
                "PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n",
                Method::Put,
                Version::Http11,
                Framing::Length(3),
                Persistence::KeepAlive,
                true,
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
                Method::Get,
                Version::Http11,
                Framing::None,
                Persistence::KeepAlive,
                false,
            ),
            (
                "GET / HTTP/1.1\nHost: a\n\n",
                Method::Get,
                Version::Http11,
                Framing::None,
                Persistence::KeepAlive,
                false,
            ),
        ];
        for (input, method, version, framing, persistence, expect) in cases {
            let head = parse(input)
                .unwrap_or_else(|e| panic!("{input:?}: {e:?}"))
                .unwrap();
            assert_eq!(head.method, *method, "{input:?}");
            assert_eq!(head.version, *version, "{input:?}");
            assert_eq!(head.framing, *framing, "{input:?}");
            assert_eq!(head.persistence, *persistence, "{input:?}");
            assert_eq!(head.expect_continue, *expect, "{input:?}");
            assert_eq!(head.len, input.len(), "{input:?}");
        }
    }

    #[test]
    fn parse_head_rejects_bad_requests() {
        use RequestError::*;
        let long_target = format!(
            "GET /{} HTTP/1.1\r\nHost: a\r\n\r\n",
            "a".repeat(MAX_REQUEST_LINE)
        );
        let many_headers = format!(
            "GET / HTTP/1.1\r\nHost: a\r\n{}\r\n",
            "X: y\r\n".repeat(MAX_HEADERS)
        );
        let cases: &[(&str, RequestError)] = &[
            ("GET / HTTP/1.1\r\n\r\n", HostCount),
            ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", HostCount),
            ("GET / HTTP/1.1\r\nHost: a b\r\n\r\n", BadHost),
            ("GET / HTTP/1.1\r\nHost: a/b@c\r\n\r\n", BadHost),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n",
                BadContentLength,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: ,\r\n\r\n",
                BadContentLength,
            ),
            ("GET / HTTP/2.0\r\nHost: a\r\n\r\n", VersionNotSupported),
            ("GET / HTTP/0.9\r\nHost: a\r\n\r\n", VersionNotSupported),
            ("GET / HTTP/3\r\nHost: a\r\n\r\n", VersionNotSupported),
            ("GET / HTTP/1.2\r\n\r\n", HostCount),
            ("GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", Malformed),
            ("GET / http/1.1\r\nHost: a\r\n\r\n", Malformed),
            ("GET / HTTP/1.1x\r\nHost: a\r\n\r\n", Malformed),
            ("BREW / HTTP/1.1\r\nHost: a\r\n\r\n", MethodNotImplemented),
            (
                "GET x HTTP/1.1\r\nHost: a\r\n\r\n",
                BadTarget(TargetRule::Form),
            ),
            (
                "GET * HTTP/1.1\r\nHost: a\r\n\r\n",
                BadTarget(TargetRule::Form),
            ),
            (
                "CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n",
                BadTarget(TargetRule::Form),
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
                BadContentLength,
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\n",
                BadContentLength,
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n",
                BadContentLength,
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
                BadContentLength,
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x10\r\n\r\n",
                BadContentLength,
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n",
                BadContentLength,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
                AmbiguousFraming,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
                AmbiguousFraming,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n",
                AmbiguousFraming,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
                AmbiguousFraming,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                UnsupportedTransferCoding,
            ),
            (
                "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
                AmbiguousFraming,
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nExpect: teapot\r\n\r\n",
                ExpectationFailed,
            ),
            ("GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", Malformed),
            ("GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n", Malformed),
            ("GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n\r\n", Malformed),
            ("GET / HTTP/1.1\r\nHost: a\r\nX: a\x7fb\r\n\r\n", Malformed),
            ("GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n", Malformed),
            ("GET / HTTP/1.1\r\nHo st: a\r\n\r\n", Malformed),
            ("GET  / HTTP/1.1\r\nHost: a\r\n\r\n", Malformed),
            ("GET / HTTP/1.1\r\n: a\r\n\r\n", Malformed),
            (&long_target, UriTooLong),
            (&many_headers, HeadTooLarge),
        ];
        for (input, want) in cases {
            assert_eq!(parse(input).as_ref().err(), Some(want), "{input:?}");
        }
    }

    #[test]
    fn parse_head_is_partial_for_every_prefix_of_a_valid_head() {
        let input = "POST /users/7?x=1 HTTP/1.1\r\nHost: example\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\n";
        for end in 0..input.len() {
            assert_eq!(
                parse(&input[..end]),
                Ok(None),
                "prefix {end}: {:?}",
                &input[..end]
            );
        }
        assert!(parse(input).unwrap().is_some());
    }

    #[test]
    fn parse_head_answers_a_version_the_same_however_it_is_split() {
        for input in [
            "GET / HTTP/2.0\r\nHost: a\r\n\r\n",
            "GET /a b HTTP/1.1\r\nHost: a\r\n\r\n",
        ] {
            let whole = parse(input);
            for end in 0..input.len() {
                let prefix = parse(&input[..end]);
                assert!(
                    prefix == Ok(None) || prefix == whole,
                    "{input:?} cut at {end}: {prefix:?} vs {whole:?}"
                );
            }
        }
        assert_eq!(
            parse("GET / HTTP/2.0\r\nHost: a\r\n\r\n"),
            Err(RequestError::VersionNotSupported)
        );
        assert_eq!(parse("GET / HTTP/2"), Ok(None));
    }

    #[test]
    fn parse_head_refuses_nul_and_del_deep_in_long_values() {
        for bad in ["\x00", "\x7f", "\x01", "\x1f"] {
            let value = format!("{}{bad}{}", "v".repeat(70), "w".repeat(70));
            let input = format!("GET / HTTP/1.1\r\nHost: a\r\nX-Long: {value}\r\n\r\n");
            assert_eq!(parse(&input), Err(RequestError::Malformed), "{bad:?}");
        }
    }

    #[test]
    fn parse_head_accepts_host_forms() {
        for host in [
            "example.com",
            "example.com:8080",
            "[::1]:80",
            "127.0.0.1",
            "example.com:",
            "[v1.x]",
            "xn--caf-dma.example",
        ] {
            let input = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
            assert!(parse(&input).is_ok_and(|h| h.is_some()), "{host:?}");
        }
    }

    #[test]
    fn parse_head_refuses_host_values_outside_the_grammar() {
        for host in [
            "",
            " ",
            "example.com:abc",
            "example.com:80:81",
            ":80",
            "[::1",
            "[]",
            "[]:80",
            "[::1]x",
            "[::1]:8a",
            "a[b]",
            "a b",
            "a/b@c",
            "caf\u{e9}.example",
        ] {
            let input = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
            assert_eq!(parse(&input), Err(RequestError::BadHost), "{host:?}");
        }
        // HTTP/1.0 needs no Host, but one that is sent must still be a host.
        assert_eq!(
            parse("GET / HTTP/1.0\r\nHost:\r\n\r\n"),
            Err(RequestError::BadHost)
        );
    }

    /// Request targets against the origin-form grammar: (target, the rule it breaks).
    const TARGETS: &[(&str, Option<TargetRule>)] = &[
        ("/plaintext", None),
        ("/a-b_c.d~e!f$g&h'i(j)k*l+m,n;o=p:q@r", None),
        ("/path?x=1&y=/a?b", None),
        ("/caf%C3%A9", None),
        ("/%2f%2F", None),
        ("/plaintext#frag", Some(TargetRule::Fragment)),
        ("/#", Some(TargetRule::Fragment)),
        ("/caf\u{e9}", Some(TargetRule::NonAscii)),
        ("/\u{1F600}", Some(TargetRule::NonAscii)),
        ("/a%", Some(TargetRule::PercentEncoding)),
        ("/a%4", Some(TargetRule::PercentEncoding)),
        ("/a%zz", Some(TargetRule::PercentEncoding)),
        ("/a%4g", Some(TargetRule::PercentEncoding)),
        ("/a<b", Some(TargetRule::Byte)),
        ("/a>b", Some(TargetRule::Byte)),
        ("/a\"b", Some(TargetRule::Byte)),
        ("/a\\b", Some(TargetRule::Byte)),
        ("/a^b", Some(TargetRule::Byte)),
        ("/a`b", Some(TargetRule::Byte)),
        ("/a{b}", Some(TargetRule::Byte)),
        ("/a|b", Some(TargetRule::Byte)),
        ("/a[]=1", Some(TargetRule::Byte)),
        ("/?a[]=1", Some(TargetRule::Byte)),
        ("/a\x01b", Some(TargetRule::Byte)),
        ("/a\x7fb", Some(TargetRule::Byte)),
        ("/a\tb", Some(TargetRule::Byte)),
        // The first bad byte names the rule.
        ("/\u{e9}#", Some(TargetRule::NonAscii)),
        ("/#\u{e9}", Some(TargetRule::Fragment)),
        ("/%zz#", Some(TargetRule::PercentEncoding)),
        // Absolute-form may carry an IPv6 host in brackets, and nothing else new.
        ("http://[::1]:80/p?q", None),
        ("http://[::1]/p#f", Some(TargetRule::Fragment)),
        ("http://h/[x]", None),
    ];

    #[test]
    fn parse_head_judges_every_byte_of_the_target() {
        for (target, rule) in TARGETS {
            let input = format!("GET {target} HTTP/1.1\r\nHost: a\r\n\r\n");
            match rule {
                None => assert!(parse(&input).is_ok_and(|h| h.is_some()), "{target:?}"),
                Some(rule) => assert_eq!(
                    parse(&input),
                    Err(RequestError::BadTarget(*rule)),
                    "{target:?}"
                ),
            }
        }
        // Percent-encoded bytes stay as they were sent.
        assert_eq!(
            path_of("GET /caf%C3%A9?q=%20 HTTP/1.1\r\nHost: a\r\n\r\n").0,
            "/caf%C3%A9"
        );
    }

    /// Every prefix of `input` is either still partial or already the whole input's
    /// verdict: the answer does not depend on how the bytes arrive.
    /// (A long input is cut at every byte near the limits and its end, and every 61st
    /// byte elsewhere: each cut re-parses the whole prefix.)
    fn assert_split_consistent(input: &[u8], max_head: usize) {
        let whole = parse_head(input, max_head);
        let near = |end: usize, at: usize| end.abs_diff(at) < 300;
        let cuts = (0..input.len()).filter(|&end| {
            input.len() < 2000
                || end % 61 == 0
                || [max_head, MAX_REQUEST_LINE, input.len()]
                    .iter()
                    .any(|&at| near(end, at))
        });
        for end in cuts {
            let prefix = parse_head(&input[..end], max_head);
            assert!(
                prefix == Ok(None) || prefix == whole,
                "{:?} cut at {end}: {prefix:?} vs {whole:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn parse_head_judges_the_request_line_the_same_however_it_is_split() {
        let long = "a".repeat(MAX_REQUEST_LINE);
        let mut inputs: Vec<String> = TARGETS
            .iter()
            .map(|(target, _)| format!("GET {target} HTTP/1.1\r\nHost: a\r\n\r\n"))
            .collect();
        inputs.extend(
            [
                "GET / HTTP/2.0\r\nHost: a\r\n\r\n",
                "GET / HTTP/1.2\r\nHost: a\r\n\r\n",
                "GET /# HTTP/2.0\r\nHost: a\r\n\r\n",
                "GET /a b HTTP/1.1\r\nHost: a\r\n\r\n",
                "GET /a#b HTTP/1.1\r\nBad Field\r\n\r\n",
                "BREW / HTTP/1.1\r\nHost: a\r\n\r\n",
                "BREW /# HTTP/2.0\r\n\r\n",
                "PROPFIND / HTTP/1.1\r\nHost: a\r\n\r\n",
                "get / HTTP/1.1\r\nHost: a\r\n\r\n",
                "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
                "\r\nGET /a#b HTTP/1.1\r\nHost: a\r\n\r\n",
            ]
            .map(String::from),
        );
        // Found by the `head_split` fuzz target: a fault past the limit, and a version
        // fault after a leading empty line.
        inputs.push(format!("GET /{} HTTP/1.1x\r\n\r\n", "a".repeat(70)));
        inputs.push(
            "GET /plaintext HTTP/1.1\r\nHost: test1\r\nHost: test\r\nConnection: close\r\n\r|\n"
                .to_owned(),
        );
        inputs.push("\r\nGET b HTTP/0.a/aT /a#b HTTP/1.a\r\n\r\n".to_owned());
        inputs.push("\nGET http://[::1]//[::1]:80/p?q HTTP/0.1\r\nHost: a\r\n\r\n".to_owned());
        inputs.push(format!("GET /{long}# HTTP/1.1\r\nHost: a\r\n\r\n"));
        inputs.push(format!("GET /#{long} HTTP/1.1\r\nHost: a\r\n\r\n"));
        inputs.push(format!("{long} / HTTP/1.1\r\nHost: a\r\n\r\n"));
        for input in &inputs {
            assert_split_consistent(input.as_bytes(), MAX);
            assert_split_consistent(input.as_bytes(), 256);
            assert_split_consistent(input.as_bytes(), 64);
        }
    }

    #[test]
    fn parse_head_serves_higher_minor_versions_of_1_as_1_1() {
        for minor in 2..=9 {
            let input = format!("GET /json?x HTTP/1.{minor}\r\nHost: a\r\n\r\n");
            let head = parse(&input)
                .unwrap_or_else(|e| panic!("1.{minor}: {e:?}"))
                .unwrap();
            assert_eq!(head.version, Version::Http11);
            assert_eq!(head.len, input.len());
            assert_eq!(path_of(&input), ("/json".to_owned(), Some("x".to_owned())));
        }
        // A 1.x request is still partial until its head is complete.
        assert_eq!(parse("GET / HTTP/1.5\r\nHost: a\r\n"), Ok(None));
    }

    #[test]
    fn parse_head_refuses_unknown_methods_with_501_whatever_their_length() {
        use RequestError::MethodNotImplemented;
        let long = "X".repeat(MAX_REQUEST_LINE + 100);
        for input in [
            "BREW / HTTP/1.1\r\nHost: a\r\n\r\n".to_owned(),
            "get / HTTP/1.1\r\nHost: a\r\n\r\n".to_owned(),
            format!("{long} / HTTP/1.1\r\nHost: a\r\n\r\n"),
            // Known as soon as it is longer than any method we implement...
            "PROPFIND".to_owned(),
            long.clone(),
            // ...or complete and not ours.
            "BREW ".to_owned(),
        ] {
            assert_eq!(
                parse(&input),
                Err(MethodNotImplemented),
                "{:?}",
                &input[..input.len().min(20)]
            );
            assert!(method_refused(input.as_bytes()));
        }
        for partial in ["", "G", "GET", "OPTIONS", "GET ", "CONNECT", "G@T"] {
            assert!(!method_refused(partial.as_bytes()), "{partial:?}");
        }
        assert_eq!(parse("OPTIONS"), Ok(None));
    }

    #[test]
    fn decides_early_only_for_bytes_never_valid_where_they_stand() {
        for bad in [&b"\x00"[..], b"\x03", b"\x1f", b"\x7f", b"ab\x01"] {
            assert!(decides_early(bad, false), "{bad:?} in a field line");
            assert!(decides_early(bad, true), "{bad:?} in the request line");
        }
        for bad in [
            &b"\x80"[..],
            b"\xff",
            b"\t",
            b"\"",
            b"<",
            b">",
            b"\\",
            b"{",
            b"}",
        ] {
            assert!(decides_early(bad, true), "{bad:?} in the request line");
            assert!(
                !decides_early(bad, false),
                "{bad:?} may stand in a field value"
            );
        }
        // Valid somewhere in a request line (a method token may hold `#|^`), or anywhere.
        for fine in [&b"GET /a?b=c HTTP/1.1"[..], b"#|^`", b"\r", b""] {
            assert!(!decides_early(fine, true), "{fine:?}");
        }
        assert!(
            !decides_early(b"\t", false),
            "HTAB may stand in a field value"
        );
    }

    #[test]
    fn parse_head_bounds_a_partial_head() {
        let endless = format!("GET / HTTP/1.1\r\nHost: a\r\nX: {}", "a".repeat(MAX));
        assert_eq!(parse(&endless), Err(RequestError::HeadTooLarge));
        let endless_line = format!("GET /{}", "a".repeat(MAX_REQUEST_LINE + 10));
        assert_eq!(parse(&endless_line), Err(RequestError::UriTooLong));
        let complete_but_large = format!(
            "GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n",
            "a".repeat(MAX)
        );
        assert_eq!(parse(&complete_but_large), Err(RequestError::HeadTooLarge));
    }

    #[test]
    fn leading_empty_lines_counts_crlf_and_bare_lf_only() {
        assert_eq!(leading_empty_lines(b""), 0);
        assert_eq!(leading_empty_lines(b"GET / HTTP/1.1\r\n"), 0);
        assert_eq!(leading_empty_lines(b"\r\n\n\r\nGET"), 5);
        // A lone CR may be the first half of a CRLF still on its way: kept.
        assert_eq!(leading_empty_lines(b"\r\n\r"), 2);
        assert_eq!(leading_empty_lines(b"\r\r\n"), 0);
    }

    #[test]
    fn parse_head_splits_targets() {
        let cases: &[(&str, &str, Option<&str>)] = &[
            (
                "GET /a/b?x=1&y HTTP/1.1\r\nHost: a\r\n\r\n",
                "/a/b",
                Some("x=1&y"),
            ),
            ("GET /? HTTP/1.1\r\nHost: a\r\n\r\n", "/", Some("")),
            (
                "GET http://h:1/p?q HTTP/1.1\r\nHost: a\r\n\r\n",
                "/p",
                Some("q"),
            ),
            ("GET HTTP://h HTTP/1.1\r\nHost: a\r\n\r\n", "", None),
            ("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", "*", None),
        ];
        for (input, path, query) in cases {
            let (p, q) = path_of(input);
            assert_eq!((p.as_str(), q.as_deref()), (*path, *query), "{input:?}");
        }
    }

    #[test]
    fn request_reads_headers_and_query_params() {
        let input = b"GET /work?ms=5&x HTTP/1.1\r\nHost: a\r\nX-Thing: yes\r\n\r\n";
        let head = parse_head(input, MAX).unwrap().unwrap();
        let req = Request::new(&head, input, Some(b""));
        assert_eq!(req.path, "/work");
        assert_eq!(req.query_param("ms"), Some("5"));
        assert_eq!(req.query_param("x"), Some(""));
        assert_eq!(req.query_param("y"), None);
        assert_eq!(req.header("x-thing"), Some(&b"yes"[..]));
        assert_eq!(req.header("missing"), None);
    }
}
