//! Responses: what a handler returns, and how it becomes bytes on the wire.
//!
//! What it is: [`Response`] (status, content type, extra fields, body), and the encoders
//! that append a response head, a whole response, or one chunk of a streamed body to an
//! output buffer.
//!
//! What it is not: it never writes to a socket. The connection decides *whether* the
//! connection persists (RFC 9112 §9.3) and passes that in as [`Delivery`]; this module only
//! spells the decision out in header fields.
//!
//! Invariant: encoding never allocates beyond growing the output buffer it is given; the
//! common response (static body, no extra fields) costs one `extend` per field.

use std::borrow::Cow;
use std::fmt::{self, Write};

use super::date::DATE_LEN;
use super::request::Version;

/// A status code. A newtype rather than an enum so a handler may use any code, with
/// constants for the ones this crate sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status(pub u16);

impl Status {
    /// 100 Continue: send the body (RFC 9110 §15.2.1).
    pub const CONTINUE: Status = Status(100);
    /// 200 OK.
    pub const OK: Status = Status(200);
    /// 400: the request broke a rule of HTTP.
    pub const BAD_REQUEST: Status = Status(400);
    /// 404: no such route.
    pub const NOT_FOUND: Status = Status(404);
    /// 405: the route exists; `Allow` says which methods.
    pub const METHOD_NOT_ALLOWED: Status = Status(405);
    /// 408: the request did not arrive in time.
    pub const REQUEST_TIMEOUT: Status = Status(408);
    /// 413: the body is over `MAX_BODY_BYTES`.
    pub const PAYLOAD_TOO_LARGE: Status = Status(413);
    /// 414: the request line is over 8 KiB.
    pub const URI_TOO_LONG: Status = Status(414);
    /// 417: an `Expect` other than `100-continue`.
    pub const EXPECTATION_FAILED: Status = Status(417);
    /// 431: the head is over `MAX_HEADER_BYTES`.
    pub const HEADER_FIELDS_TOO_LARGE: Status = Status(431);
    /// 500: the handler failed.
    pub const INTERNAL_SERVER_ERROR: Status = Status(500);
    /// 501: a method or transfer coding not implemented here.
    pub const NOT_IMPLEMENTED: Status = Status(501);
    /// 503: no database, or the shutdown deadline.
    pub const SERVICE_UNAVAILABLE: Status = Status(503);
    /// 505: not HTTP/1.x.
    pub const HTTP_VERSION_NOT_SUPPORTED: Status = Status(505);

    /// The status as it can go on the wire. "All valid status codes are within the range
    /// of 100 to 599, inclusive" (RFC 9110 §15): a handler's code outside it cannot be
    /// sent as it is, and goes out as 500, the answer to a handler bug.
    pub fn sendable(self) -> Status {
        if (100..=599).contains(&self.0) {
            self
        } else {
            Status::INTERNAL_SERVER_ERROR
        }
    }

    /// `HTTP/1.1 NNN `: the status line up to its reason phrase, in one piece.
    pub fn line_start(self) -> [u8; 13] {
        let code = self.sendable().0;
        let mut line = *b"HTTP/1.1 000 ";
        line[9] += (code / 100) as u8;
        line[10] += (code / 10 % 10) as u8;
        line[11] += (code % 10) as u8;
        line
    }

    statuses! {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        414 => "URI Too Long",
        417 => "Expectation Failed",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
    }
}

/// From one list of codes and reason phrases: [`Status::reason`], and the constant start
/// of a head for each of those codes, so that encoding it is one copy, not three.
macro_rules! statuses {
    ($($code:literal => $reason:literal,)*) => {
        /// The reason phrase (RFC 9110 §15). Clients ignore it; humans reading a trace do
        /// not.
        pub fn reason(self) -> &'static str {
            match self.0 {
                $($code => $reason,)*
                _ => "",
            }
        }

        /// For a code with a reason phrase here: the head up to the `Date` value (status
        /// line, `Server`, the `Date` name), compiled in.
        fn head_start(self) -> Option<&'static [u8]> {
            match self.0 {
                $($code => Some(
                    concat!("HTTP/1.1 ", $code, " ", $reason, "\r\nServer: lastcall\r\nDate: ")
                        .as_bytes(),
                ),)*
                _ => None,
            }
        }
    };
}
use statuses;

/// A response body that is known in full when the response is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// No content.
    Empty,
    /// A body compiled into the binary: no allocation to send it.
    Static(&'static [u8]),
    /// A short body built per request, held inline: no allocation either.
    Inline(Inline),
    /// A body built per request on the heap.
    Bytes(Vec<u8>),
    /// `len` bytes of `unit` repeated (the last repetition cut short): a large generated
    /// body that is written from its one static copy as the socket takes it, never
    /// copied per connection.
    Repeat {
        /// The bytes repeated.
        unit: &'static [u8],
        /// The length of the body.
        len: usize,
    },
}

/// A static body at least this long is written from where it lives rather than copied
/// next to its head: below it, one copy costs less than the second write it saves.
const BY_REFERENCE_MIN: usize = 8 * 1024;

impl Body {
    /// The length of the body.
    pub fn len(&self) -> usize {
        match self {
            Body::Repeat { unit, len } if !unit.is_empty() => *len,
            Body::Repeat { .. } => 0,
            body => body.contiguous().len(),
        }
    }

    /// Whether the body is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes of the body, copied out: for tests, and for a caller that needs them in
    /// one piece.
    pub fn to_vec(&self) -> Vec<u8> {
        match self {
            Body::Repeat { unit, .. } => unit.iter().copied().cycle().take(self.len()).collect(),
            body => body.contiguous().to_vec(),
        }
    }

    /// The bytes of a body held in one piece (every kind but `Repeat`).
    fn contiguous(&self) -> &[u8] {
        match self {
            Body::Empty | Body::Repeat { .. } => b"",
            Body::Static(b) => b,
            Body::Inline(b) => b.as_bytes(),
            Body::Bytes(b) => b,
        }
    }
}

/// A body [`encode`] left out of the output, for the caller to write from its static
/// memory after the head: `len` bytes of `unit` repeated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByReference {
    /// The bytes repeated.
    pub unit: &'static [u8],
    /// The length of the body.
    pub len: usize,
}

/// Bytes an [`Inline`] body can hold.
pub const INLINE_CAPACITY: usize = 64;

/// A small body written with `write!` into a fixed array. A JSON object serialised per
/// request (TechEmpower's rule for `/json`) then costs no trip to the allocator; a body
/// that does not fit makes `write!` return an error instead of growing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inline {
    len: usize,
    bytes: [u8; INLINE_CAPACITY],
}

impl Default for Inline {
    fn default() -> Self {
        Inline {
            len: 0,
            bytes: [0; INLINE_CAPACITY],
        }
    }
}

impl Inline {
    /// The bytes written so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl fmt::Write for Inline {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        let room = self.bytes.get_mut(self.len..end).ok_or(fmt::Error)?;
        room.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// What a handler answers: a status, a content type, extra fields and a body known in
/// full. `Server`, `Date`, `Content-Length` and `Connection` are added when it is
/// encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: Status,
    /// The `Content-Type`, when there is content to type.
    pub content_type: Option<&'static str>,
    /// Fields beyond the ones every response gets (`Allow`, `Retry-After`, ...). Empty for
    /// the hot routes, and an empty `Vec` does not allocate.
    pub headers: Vec<(&'static str, Cow<'static, str>)>,
    /// The content.
    pub body: Body,
}

/// The JSON media type (RFC 8259 §11).
pub const JSON: &str = "application/json";
/// Plain text.
pub const TEXT: &str = "text/plain";

impl Response {
    /// A response with a content type and a body, and no extra fields.
    pub fn new(status: Status, content_type: &'static str, body: Body) -> Response {
        Response {
            status,
            content_type: Some(content_type),
            headers: Vec::new(),
            body,
        }
    }

    /// A response without a `Content-Type` field: for no content at all, or for a type
    /// the handler only learns at run time (it adds the field itself).
    pub fn bare(status: Status, body: Body) -> Response {
        Response {
            status,
            content_type: None,
            headers: Vec::new(),
            body,
        }
    }

    /// A JSON body compiled in, e.g. `{"status":"ok"}`.
    pub fn json_static(status: Status, body: &'static str) -> Response {
        Response::new(status, JSON, Body::Static(body.as_bytes()))
    }

    /// A JSON body built per request.
    pub fn json(status: Status, body: String) -> Response {
        Response::new(status, JSON, Body::Bytes(body.into_bytes()))
    }

    /// The error shape of the whole API: `{"error":"<reason>"}`.
    pub fn error(status: Status, reason: &str) -> Response {
        let mut body = String::with_capacity(reason.len() + 12);
        // Writing to a String cannot fail.
        let _ = body.write_str("{\"error\":");
        let _ = write_json_string(&mut body, reason);
        body.push('}');
        Response::json(status, body)
    }

    /// The answer to code that failed (a handler that panicked or broke its contract, a
    /// job that panicked): a 500 that never says why, the details being for the log.
    pub fn internal_error() -> Response {
        Response::error(Status::INTERNAL_SERVER_ERROR, "internal error")
    }

    /// Adds a field (`Allow`, `Retry-After`, ...) to the head.
    pub fn with_header(mut self, name: &'static str, value: impl Into<Cow<'static, str>>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

/// Writes `s` as a JSON string literal (RFC 8259 §7), quotes included.
///
/// The runs between escapes are written whole: one `write_str` per run rather than one
/// `write_char` per character. Every byte that needs an escape is ASCII, and no byte of a
/// multi-byte UTF-8 character is, so the runs end at character boundaries and pass
/// through unchanged.
pub fn write_json_string(out: &mut impl Write, s: &str) -> fmt::Result {
    out.write_str("\"")?;
    json_pieces(s, |piece| out.write_str(piece))?;
    out.write_str("\"")
}

/// [`write_json_string`] into bytes: the access log's lines are bytes, not a `String`.
pub fn push_json_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let _: fmt::Result = json_pieces(s, |piece| {
        out.extend_from_slice(piece.as_bytes());
        Ok(())
    });
    out.push(b'"');
}

/// Hands `put` the contents of `s` as a JSON string holds them, piece by piece: each run
/// that needs no escape whole, then each escape.
#[inline(always)] // two callers, each with its own `put`: keep the loop specialised
fn json_pieces(s: &str, mut put: impl FnMut(&str) -> fmt::Result) -> fmt::Result {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    let mut run = 0;
    loop {
        let i = run + unescaped_run(&bytes[run..]);
        put(&s[run..i])?;
        match bytes.get(i) {
            None => return Ok(()),
            Some(b'"') => put("\\\"")?,
            Some(b'\\') => put("\\\\")?,
            Some(b'\n') => put("\\n")?,
            Some(b'\r') => put("\\r")?,
            Some(b'\t') => put("\\t")?,
            Some(&b) => {
                let hex = [HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]];
                put("\\u00")?;
                // Two ASCII hex digits: always UTF-8.
                put(std::str::from_utf8(&hex).unwrap_or("00"))?;
            }
        }
        run = i + 1;
    }
}

/// The bytes a JSON string may not hold as they are: `"`, `\` and the controls.
const JSON_ESCAPED: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = true;
        b += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table
};

/// How many bytes at the front of `bytes` a JSON string holds as they are (see
/// [`JSON_ESCAPED`]).
///
/// Eight bytes a turn, as one `u64` (`/json` serialises its message per request; a byte at
/// a time cost six instructions a byte). In each byte's top bit: `w - 0x20` and not `w` is
/// set for a byte below 0x20, and `x - 1` and not `x`, with `x` the word XOR a byte
/// repeated, for that byte (`"`, `\`). A borrow between bytes only runs upward from a
/// byte that is itself flagged, so the lowest flag is exact: that is where the run ends.
/// The last word ends at the last byte, overlapping the one before it: the bytes read
/// twice were found clean the first time, so they flag nothing.
fn unescaped_run(bytes: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const TOPS: u64 = 0x8080_8080_8080_8080;
    let zero_byte = |x: u64| x.wrapping_sub(ONES) & !x;
    let len = bytes.len();
    if len < 8 {
        return bytes
            .iter()
            .position(|&b| JSON_ESCAPED[usize::from(b)])
            .unwrap_or(len);
    }
    let mut at = 0;
    loop {
        let from = at.min(len - 8);
        let Ok(eight) = <[u8; 8]>::try_from(&bytes[from..from + 8]) else {
            return from; // a slice of eight is eight: never taken
        };
        let w = u64::from_le_bytes(eight);
        let control = w.wrapping_sub(ONES * 0x20) & !w;
        let quote = zero_byte(w ^ (ONES * u64::from(b'"')));
        let backslash = zero_byte(w ^ (ONES * u64::from(b'\\')));
        let flags = (control | quote | backslash) & TOPS;
        if flags != 0 {
            return from + flags.trailing_zeros() as usize / 8;
        }
        if from + 8 == len {
            return len;
        }
        at = from + 8;
    }
}

/// How the connection wants this response framed. Decided by the connection, spelled out
/// here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// The request's version: a 1.0 client gets `keep-alive` spelled out, and no chunks.
    pub version: Version,
    /// Close the connection after this response (`Connection: close`).
    pub close: bool,
    /// The request was HEAD: send the head only, with the length GET would have had
    /// (RFC 9110 §9.3.2).
    pub head_only: bool,
}

/// Appends a complete response for a body known in full: the head, and the body unless
/// it is large and in static memory — then it is returned, for the caller to write from
/// there after the head (and so the answer costs no copy of it per connection).
#[must_use = "a body left out of the output must be written after it"]
#[inline] // once a response: its caller's registers need not be saved around it
pub fn encode(
    resp: &Response,
    delivery: Delivery,
    date: &[u8],
    out: &mut Vec<u8>,
) -> Option<ByReference> {
    // One match decides both the length and where the body goes.
    let (copied, by_reference) = match resp.body {
        Body::Repeat { unit, .. } => {
            let len = resp.body.len();
            (&b""[..], Some(ByReference { unit, len }))
        }
        Body::Static(unit) if unit.len() >= BY_REFERENCE_MIN => {
            let len = unit.len();
            (&b""[..], Some(ByReference { unit, len }))
        }
        ref body => (body.contiguous(), None),
    };
    let len = by_reference.map_or(copied.len(), |body| body.len);
    encode_head(resp, delivery, date, Length::Known(len), out);
    if delivery.head_only {
        return None;
    }
    out.extend_from_slice(copied);
    by_reference
}

/// The length a response head announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Length {
    /// `Content-Length: n`.
    Known(usize),
    /// The body follows in chunks (RFC 9112 §7.1) — or, for a 1.0 client that cannot read
    /// chunks, until the connection closes (§6.3 step 8).
    Streamed,
}

/// `Status::OK.head_start()`, as an array: 200 is nearly every answer, and an array's
/// length is known at compile time, so its copy is a few moves rather than a call to
/// `memcpy` (a test keeps the two the same).
const OK_HEAD_START: &[u8; 41] = b"HTTP/1.1 200 OK\r\nServer: lastcall\r\nDate: ";

/// The `Content-Type` field of [`TEXT`] and of [`JSON`], as arrays (see `encode_head`).
const TEXT_FIELD: &[u8; 26] = b"\r\nContent-Type: text/plain";
const JSON_FIELD: &[u8; 32] = b"\r\nContent-Type: application/json";

/// Appends a response head. Field order follows the convention of most servers: status,
/// `Server`, `Date`, type, length, connection, then the response's own fields.
pub fn encode_head(
    resp: &Response,
    delivery: Delivery,
    date: &[u8],
    length: Length,
    out: &mut Vec<u8>,
) {
    let status = resp.status.sendable();
    match status.head_start() {
        _ if status == Status::OK => out.extend_from_slice(OK_HEAD_START),
        Some(start) => out.extend_from_slice(start),
        // A code without a reason phrase here (a handler's 418, say): built in pieces.
        None => {
            out.extend_from_slice(&status.line_start());
            out.extend_from_slice(b"\r\nServer: lastcall\r\nDate: ");
        }
    }
    // The loop's date is always `DATE_LEN` bytes: as an array, its copy has a length known
    // at compile time, a few moves instead of a call to `memcpy`.
    match <&[u8; DATE_LEN]>::try_from(date) {
        Ok(fixed) => out.extend_from_slice(fixed),
        Err(_) => out.extend_from_slice(date),
    }
    match resp.content_type {
        // The two types the benchmark routes send, known by address (a type is a
        // constant, and one constant is one address; a copy elsewhere takes the general
        // arm): the whole field as an array, a few moves rather than a call to `memcpy`.
        Some(ct) if std::ptr::eq(ct, TEXT) => out.extend_from_slice(TEXT_FIELD),
        Some(ct) if std::ptr::eq(ct, JSON) => out.extend_from_slice(JSON_FIELD),
        Some(ct) => {
            out.extend_from_slice(b"\r\nContent-Type: ");
            out.extend_from_slice(ct.as_bytes());
        }
        None => {}
    }
    match (length, delivery.version) {
        (Length::Known(n), _) => {
            out.extend_from_slice(b"\r\nContent-Length: ");
            push_decimal(out, n as u64);
        }
        (Length::Streamed, Version::Http11) => {
            out.extend_from_slice(b"\r\nTransfer-Encoding: chunked");
        }
        // A 1.0 client reads a streamed body until the connection closes; the
        // connection has already decided to close (see `conn`).
        (Length::Streamed, Version::Http10) => {}
    }
    match (delivery.close, delivery.version) {
        (true, _) => out.extend_from_slice(b"\r\nConnection: close"),
        (false, Version::Http10) => out.extend_from_slice(b"\r\nConnection: keep-alive"),
        (false, Version::Http11) => {}
    }
    for (name, value) in &resp.headers {
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
    }
    out.extend_from_slice(b"\r\n\r\n");
}

/// The interim response that tells a client waiting on `Expect: 100-continue` to send
/// its body (RFC 9110 §15.2.1).
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Appends one chunk: `size-in-hex CRLF data CRLF` (RFC 9112 §7.1). Empty data is skipped:
/// a zero-size chunk would end the body.
pub fn encode_chunk(data: &[u8], out: &mut Vec<u8>) {
    if data.is_empty() {
        return;
    }
    let mut hex = [0u8; 16];
    let mut i = hex.len();
    let mut n = data.len();
    while {
        i -= 1;
        hex[i] = b"0123456789abcdef"[n & 0xf];
        n >>= 4;
        n > 0
    } {}
    out.extend_from_slice(&hex[i..]);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// The last chunk with an empty trailer section: the end of a chunked body.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Appends `n` in decimal without going through `fmt` (which is slow and allocation-prone
/// on the hot path): two digits a turn, from a table of the pairs `00` to `99`, so half as
/// many divisions as one digit a turn.
#[inline] // a length a response: a call would cost as much as its digits
pub fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    const PAIRS: [u8; 200] = {
        let mut pairs = [0u8; 200];
        let mut i = 0;
        while i < 100 {
            pairs[2 * i] = b'0' + (i / 10) as u8;
            pairs[2 * i + 1] = b'0' + (i % 10) as u8;
            i += 1;
        }
        pairs
    };
    // Two digits, the length of most small bodies: one pair, one push of an array of two.
    if (10..100).contains(&n) {
        let pair = n as usize * 2;
        out.extend_from_slice(&[PAIRS[pair], PAIRS[pair + 1]]);
        return;
    }
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    while n >= 100 {
        let pair = (n % 100) as usize * 2;
        n /= 100;
        i -= 2;
        digits[i..i + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
    }
    if n >= 10 {
        let pair = n as usize * 2;
        i -= 2;
        digits[i..i + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
    } else {
        i -= 1;
        digits[i] = b'0' + n as u8;
    }
    // Pushed one by one: a length is a few digits, and a copy of a length not known at
    // compile time is a call to `memcpy`, which costs more than pushing them.
    for &digit in &digits[i..] {
        out.push(digit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATE: &[u8] = b"Sun, 06 Nov 1994 08:49:37 GMT";

    fn encoded(resp: &Response, delivery: Delivery) -> String {
        let mut out = Vec::new();
        let left_out = encode(resp, delivery, DATE, &mut out);
        assert_eq!(left_out, None, "a small body is copied after its head");
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn every_compiled_head_start_is_its_status_line_and_server_field() {
        for code in 100..=599 {
            let status = Status(code);
            let Some(start) = status.head_start() else {
                assert_eq!(status.reason(), "", "{code} has a reason but no head start");
                continue;
            };
            let mut pieces = status.line_start().to_vec();
            pieces.extend_from_slice(status.reason().as_bytes());
            pieces.extend_from_slice(b"\r\nServer: lastcall\r\nDate: ");
            assert_eq!(start, &pieces[..], "{code}");
        }
    }

    #[test]
    fn large_static_bodies_are_left_out_to_be_written_from_where_they_live() {
        static LARGE: [u8; BY_REFERENCE_MIN] = [b'x'; BY_REFERENCE_MIN];
        let d = delivery(Version::Http11, false, false);
        let cases = [
            (Body::Static(&LARGE), Some((&LARGE[..], BY_REFERENCE_MIN))),
            (Body::Static(&LARGE[1..]), None),
            (
                Body::Repeat {
                    unit: b"ab",
                    len: 5,
                },
                Some((&b"ab"[..], 5)),
            ),
            (Body::Repeat { unit: b"", len: 5 }, Some((&b""[..], 0))),
        ];
        for (body, by_reference) in cases {
            let resp = Response::new(Status::OK, TEXT, body);
            let mut out = Vec::new();
            let left_out = encode(&resp, d, DATE, &mut out);
            assert_eq!(left_out.map(|b| (b.unit, b.len)), by_reference);
            let head = String::from_utf8_lossy(&out);
            let len = format!("Content-Length: {}\r\n", resp.body.len());
            assert!(head.contains(&len), "{head}");
            // HEAD: the same length announced, nothing left to write.
            let mut out = Vec::new();
            let head_only = delivery(Version::Http11, false, true);
            assert_eq!(encode(&resp, head_only, DATE, &mut out), None);
        }
        assert_eq!(
            Body::Repeat {
                unit: b"ab",
                len: 5
            }
            .to_vec(),
            b"ababa"
        );
    }

    fn delivery(version: Version, close: bool, head_only: bool) -> Delivery {
        Delivery {
            version,
            close,
            head_only,
        }
    }

    #[test]
    fn status_line_start_is_a_valid_code() {
        assert_eq!(&Status::OK.line_start(), b"HTTP/1.1 200 ");
        assert_eq!(&Status(100).line_start(), b"HTTP/1.1 100 ");
        assert_eq!(&Status(599).line_start(), b"HTTP/1.1 599 ");
        assert_eq!(&Status(600).line_start(), b"HTTP/1.1 500 ");
        // Not a status code: sent as the 500 it is.
        assert_eq!(&Status(99).line_start(), b"HTTP/1.1 500 ");
        assert_eq!(&Status(1000).line_start(), b"HTTP/1.1 500 ");
        let resp = Response::new(Status(1000), TEXT, Body::Empty);
        assert!(
            encoded(&resp, delivery(Version::Http11, false, false))
                .starts_with("HTTP/1.1 500 Internal Server Error\r\n")
        );
    }

    #[test]
    fn encode_writes_a_keep_alive_response() {
        let resp = Response::new(Status::OK, TEXT, Body::Static(b"Hello, World!"));
        assert_eq!(
            encoded(&resp, delivery(Version::Http11, false, false)),
            "HTTP/1.1 200 OK\r\nServer: lastcall\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\
             Content-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, World!"
        );
    }

    #[test]
    fn encode_spells_out_persistence_and_extra_fields() {
        let resp = Response::error(Status::METHOD_NOT_ALLOWED, "method not allowed")
            .with_header("Allow", "GET, HEAD");
        let text = encoded(&resp, delivery(Version::Http11, true, false));
        assert!(
            text.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
            "{text}"
        );
        assert!(
            text.contains("\r\nConnection: close\r\nAllow: GET, HEAD\r\n\r\n"),
            "{text}"
        );
        assert!(
            text.ends_with("{\"error\":\"method not allowed\"}"),
            "{text}"
        );
        let ka10 = encoded(&resp, delivery(Version::Http10, false, false));
        assert!(ka10.contains("\r\nConnection: keep-alive\r\n"), "{ka10}");
    }

    #[test]
    fn encode_sends_only_the_head_for_head_requests() {
        let resp = Response::json_static(Status::OK, "{\"a\":1}");
        let text = encoded(&resp, delivery(Version::Http11, false, true));
        assert!(text.ends_with("Content-Length: 7\r\n\r\n"), "{text}");
    }

    #[test]
    fn encode_head_announces_streams_by_version() {
        let resp = Response::new(Status::OK, TEXT, Body::Empty);
        let mut out = Vec::new();
        encode_head(
            &resp,
            delivery(Version::Http11, false, false),
            DATE,
            Length::Streamed,
            &mut out,
        );
        assert!(String::from_utf8_lossy(&out).contains("Transfer-Encoding: chunked"));
        out.clear();
        encode_head(
            &resp,
            delivery(Version::Http10, true, false),
            DATE,
            Length::Streamed,
            &mut out,
        );
        let text = String::from_utf8_lossy(&out);
        assert!(
            !text.contains("Transfer-Encoding") && !text.contains("Content-Length"),
            "{text}"
        );
    }

    #[test]
    fn encode_chunk_writes_hex_sizes() {
        let cases: &[(usize, &str)] = &[
            (1, "1\r\n"),
            (15, "f\r\n"),
            (16, "10\r\n"),
            (4096, "1000\r\n"),
        ];
        for (len, prefix) in cases {
            let mut out = Vec::new();
            encode_chunk(&vec![b'x'; *len], &mut out);
            assert!(out.starts_with(prefix.as_bytes()), "{len}");
            assert!(out.ends_with(b"x\r\n"));
        }
        let mut out = Vec::new();
        encode_chunk(b"", &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn unescaped_run_stops_at_the_first_byte_json_must_escape() {
        for len in 0..40 {
            for at in 0..=len {
                for odd in [0x00, b'\t', 0x1f, b'"', b'\\'] {
                    let mut bytes = vec![b'a'; len];
                    if at < len {
                        bytes[at] = odd;
                        // What follows the odd byte must not matter, whatever it is.
                        for b in &mut bytes[at + 1..] {
                            *b = 0x00;
                        }
                    }
                    assert_eq!(unescaped_run(&bytes), at, "{bytes:?}");
                }
            }
        }
        let fine: Vec<u8> = (0x20..=0xff).filter(|&b| b != b'"' && b != b'\\').collect();
        assert_eq!(unescaped_run(&fine), fine.len());
        for b in 0..=255u8 {
            let mut bytes = vec![b'a'; 12];
            bytes[10] = b;
            let want = if JSON_ESCAPED[usize::from(b)] { 10 } else { 12 };
            assert_eq!(unescaped_run(&bytes), want, "{b:#x}");
        }
    }

    #[test]
    fn the_ok_head_start_is_the_one_the_status_table_makes() {
        assert_eq!(Status::OK.head_start(), Some(&OK_HEAD_START[..]));
    }

    #[test]
    fn the_content_type_fields_spell_their_types() {
        for (field, ct) in [(&TEXT_FIELD[..], TEXT), (&JSON_FIELD[..], JSON)] {
            assert_eq!(field, format!("\r\nContent-Type: {ct}").as_bytes());
        }
    }

    #[test]
    fn push_decimal_and_json_strings() {
        for n in [
            0u64,
            7,
            10,
            99,
            100,
            101,
            999,
            1000,
            12345,
            100_000,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            push_decimal(&mut out, n);
            assert_eq!(out, n.to_string().into_bytes());
        }
        let mut s = String::new();
        write_json_string(&mut s, "a\"b\\c\n\u{1}").unwrap();
        assert_eq!(s, "\"a\\\"b\\\\c\\n\\u0001\"");
        for (raw, json) in [
            ("", "\"\""),
            ("Hello, World!", "\"Hello, World!\""),
            ("\u{1f}é\"ü\t", "\"\\u001fé\\\"ü\\t\""),
            ("\r\n\\", "\"\\r\\n\\\\\""),
        ] {
            let mut s = String::new();
            write_json_string(&mut s, raw).unwrap();
            assert_eq!(s, json, "{raw:?}");
        }
    }
}
