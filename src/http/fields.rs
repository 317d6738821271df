//! The header fields of a request head, judged: the rules of RFC 9110/9112 that httparse
//! leaves to us, in one pass over the fields.
//!
//! What it is: the `Host` rule (exactly one in HTTP/1.1, and a valid `host[:port]`), the
//! framing of the body (RFC 9112 §6.3, in its order: the smuggling defences), persistence
//! (`Connection`, §9.3) and `Expect` (RFC 9110 §10.1.1).
//!
//! What it is not: the request line (`request.rs`) or the body (`body.rs`). It never
//! allocates and never guesses: anything ambiguous is an error.

use super::body::Framing;
use super::error::RequestError;
use super::request::{Persistence, Version};
use super::uri::{ALPHA, DIGIT, SUB_DELIMS, UNRESERVED_MARKS, byte_table};

/// What the header fields say about framing and persistence.
pub(super) struct Fields {
    pub(super) framing: Framing,
    close: bool,
    keep_alive: bool,
    pub(super) expect_continue: bool,
}

impl Fields {
    /// RFC 9112 §9.3: `close` wins; otherwise 1.1 persists by default and 1.0 only when
    /// the client asked for `keep-alive`.
    pub(super) fn persistence(&self, version: Version) -> Persistence {
        match (self.close, version, self.keep_alive) {
            (true, _, _) => Persistence::Close,
            (false, Version::Http11, _) => Persistence::KeepAlive,
            (false, Version::Http10, true) => Persistence::KeepAlive,
            (false, Version::Http10, false) => Persistence::Close,
        }
    }
}

/// Walks the header fields once, enforcing the rules httparse does not.
pub(super) fn judge_fields(
    headers: &[httparse::Header<'_>],
    version: Version,
) -> Result<Fields, RequestError> {
    let mut judge = FieldJudge::default();
    for h in headers {
        judge.field(h.name.as_bytes(), h.value)?;
    }
    judge.finish(version)
}

/// The rules on header fields, one field at a time, then on all of them (`finish`): so a
/// parser can hand each field over as it reads it, with no list of fields in between.
/// (Longer than most functions here: the per-field rules, then RFC 9112 §6.3's steps in
/// their order, read best in one place.)
#[derive(Default)]
pub(super) struct FieldJudge {
    hosts: u32,
    content_length: Option<u64>,
    transfer_encoding: bool,
    te_chunked_last: bool,
    te_unknown: bool,
    te_chunked_count: u32,
    close: bool,
    keep_alive: bool,
    expect_continue: bool,
}

impl FieldJudge {
    /// One field, in the order they came. httparse (or the plain parser) has already
    /// refused obs-fold, bare CR and every control character but HTAB in field values
    /// (NUL and DEL included; the tests pin this down).
    #[inline(always)] // once per field, from two loops: keep the `Host` test inline
    pub(super) fn field(&mut self, name: &[u8], value: &[u8]) -> Result<(), RequestError> {
        if is_host_name(name) {
            self.hosts += 1;
            if !is_host(value) {
                return Err(RequestError::BadHost);
            }
        } else {
            self.other_field(name, value)?;
        }
        Ok(())
    }

    /// Every field but `Host`: the framing, persistence and expectation fields.
    fn other_field(&mut self, name: &[u8], value: &[u8]) -> Result<(), RequestError> {
        if name.eq_ignore_ascii_case(b"content-length") {
            // RFC 9110 §8.6: a list of identical values may be taken as that value; differing
            // values, or anything that is not digits — an empty value included — is an
            // unrecoverable framing error.
            if list_items(value).next().is_none() {
                return Err(RequestError::BadContentLength);
            }
            for item in list_items(value) {
                let n = parse_decimal(item).ok_or(RequestError::BadContentLength)?;
                match self.content_length {
                    Some(prev) if prev != n => return Err(RequestError::BadContentLength),
                    _ => self.content_length = Some(n),
                }
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            self.transfer_encoding = true;
            for coding in list_items(value) {
                if coding.eq_ignore_ascii_case(b"chunked") {
                    self.te_chunked_count += 1;
                    self.te_chunked_last = true;
                } else {
                    self.te_unknown = true;
                    self.te_chunked_last = false;
                }
            }
        } else if name.eq_ignore_ascii_case(b"connection") {
            // RFC 9110 §7.6.1: Connection is a comma-separated list of case-insensitive
            // tokens. Parse the list; never substring-search it.
            for token in list_items(value) {
                if token.eq_ignore_ascii_case(b"close") {
                    self.close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    self.keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case(b"expect") {
            // RFC 9110 §10.1.1: 100-continue is the only expectation defined; any other is
            // answered 417.
            for item in list_items(value) {
                if item.eq_ignore_ascii_case(b"100-continue") {
                    self.expect_continue = true;
                } else {
                    return Err(RequestError::ExpectationFailed);
                }
            }
        }
        Ok(())
    }

    /// The rules on the fields as a whole, once the last has been seen.
    pub(super) fn finish(self, version: Version) -> Result<Fields, RequestError> {
        // RFC 9112 §3.2: "A server MUST respond with a 400 (Bad Request) status code to any
        // HTTP/1.1 request message that lacks a Host header field and to any request message
        // that contains more than one Host header field".
        if self.hosts > 1 || (self.hosts == 0 && version == Version::Http11) {
            return Err(RequestError::HostCount);
        }

        // RFC 9112 §6.3, in its order, for requests.
        let framing = if self.transfer_encoding {
            // §6.1: a 1.0 message with Transfer-Encoding is faulty (1.0 has no chunked coding).
            // §6.3 step 3: TE and CL together "ought to be handled as an error" — the classic
            // smuggling vector, so we refuse rather than let TE override.
            if version == Version::Http10 || self.content_length.is_some() {
                return Err(RequestError::AmbiguousFraming);
            }
            // §6.3 step 4: chunked must be the final coding of a request, or its length cannot
            // be determined; §7.1: it must not be applied twice.
            if !self.te_chunked_last || self.te_chunked_count > 1 {
                return Err(RequestError::AmbiguousFraming);
            }
            // §6.1: a coding we do not implement (gzip, deflate, ...) is 501.
            if self.te_unknown {
                return Err(RequestError::UnsupportedTransferCoding);
            }
            Framing::Chunked
        } else {
            match self.content_length {
                // §6.3 step 7: a request with neither has no body (step 6 is a valid
                // Content-Length).
                None | Some(0) => Framing::None,
                Some(n) => Framing::Length(n),
            }
        };
        Ok(Fields {
            framing,
            close: self.close,
            keep_alive: self.keep_alive,
            // With no body there is nothing to wait for: a 100 Continue would only
            // confuse the client.
            expect_continue: self.expect_continue && framing != Framing::None,
        })
    }
}

/// `Host = uri-host [ ":" port ]` (RFC 9110 §7.2), where `uri-host` is an IP literal in
/// brackets, or a reg-name (IPv4 addresses included) of unreserved, pct-encoded and
/// sub-delim characters, and `port = *DIGIT` (RFC 3986 §3.2). The host may not be empty:
/// an http URI with an empty host is invalid and its recipient MUST reject it (RFC 9110
/// §4.2.1). Space, `/`, `@`, `?` and `#` cannot be part of a Host at all.
///
/// Every request has a Host, so this runs per request: the grammar as a small state
/// machine, walked in one pass with one table lookup per byte and no branch. (Its length
/// is the state table, spelled out.)
fn is_host(value: &[u8]) -> bool {
    // What a byte is to this grammar.
    const NAME: u8 = 0; // a reg-name character other than a digit
    const NUMERAL: u8 = 1; // a digit
    const COLON: u8 = 2;
    const OPEN: u8 = 3; // `[`
    const CLOSE: u8 = 4; // `]`
    const BAD: u8 = 5;
    const KIND: [u8; 256] = byte_table(
        BAD,
        &[
            (ALPHA, NAME),
            (DIGIT, NUMERAL),
            (UNRESERVED_MARKS, NAME),
            (SUB_DELIMS, NAME),
            (b"%", NAME), // pct-encoded
            (b":", COLON),
            (b"[", OPEN),
            (b"]", CLOSE),
        ],
    );
    // Where in `uri-host [ ":" port ]` the bytes so far have led.
    const START: u8 = 0; // nothing yet
    const HOST: u8 = 1; // a reg-name, not empty
    const PORT: u8 = 2; // after the `:`, digits only (may be none)
    const OPENED: u8 = 3; // after `[`
    const LITERAL: u8 = 4; // inside `[...]`, not empty
    const CLOSED: u8 = 5; // after `]`
    const FAIL: u8 = 6;
    const F: u8 = FAIL;
    /// The next state, by state and kind of byte.
    const RULES: [[u8; 6]; 7] = [
        // NAME    NUMERAL  COLON    OPEN    CLOSE   BAD
        [HOST, HOST, F, OPENED, F, F],             // START
        [HOST, HOST, PORT, F, F, F],               // HOST
        [F, PORT, F, F, F, F],                     // PORT
        [LITERAL, LITERAL, LITERAL, F, F, F],      // OPENED
        [LITERAL, LITERAL, LITERAL, F, CLOSED, F], // LITERAL
        [F, F, PORT, F, F, F],                     // CLOSED
        [F, F, F, F, F, F],                        // FAIL
    ];
    /// The rules spelled out for every byte value, so a step is one lookup. A state is
    /// kept as the offset of its row (`state * 256`): the next index is that plus the byte.
    const NEXT: [u16; 8 * 256] = {
        let mut next = [FAIL as u16 * 256; 8 * 256];
        let mut state = 0;
        while state < RULES.len() {
            let mut b = 0;
            while b < 256 {
                next[state * 256 + b] = RULES[state][KIND[b] as usize] as u16 * 256;
                b += 1;
            }
            state += 1;
        }
        next
    };
    let step = |row: u16, b: u8| NEXT[usize::from(row + u16::from(b)) & (8 * 256 - 1)];
    // Four steps a turn: the loop's own count and branch then come once per four bytes
    // (a Host is typically 10 to 20 bytes, and every request has one).
    let mut quads = value.chunks_exact(4);
    let mut row = u16::from(START) * 256;
    for q in &mut quads {
        row = step(step(step(step(row, q[0]), q[1]), q[2]), q[3]);
    }
    let end = quads.remainder().iter().fold(row, |row, &b| step(row, b));
    [HOST, PORT, CLOSED]
        .map(|state| u16::from(state) * 256)
        .contains(&end)
}

/// Whether a field name is `Host`, in any case (RFC 9110 §5.1: names are
/// case-insensitive). Every request has one, so it is compared as one 4-byte word rather
/// than byte by byte: setting bit 5 (0x20) turns an ASCII capital into its small letter,
/// and the only bytes it turns into a small letter are that letter and its capital, so
/// for a name of letters the word compare is exactly `eq_ignore_ascii_case`.
pub(super) fn is_host_name(name: &[u8]) -> bool {
    <[u8; 4]>::try_from(name)
        .is_ok_and(|word| u32::from_le_bytes(word) | 0x2020_2020 == u32::from_le_bytes(*b"host"))
}

/// The items of a comma-separated field value (RFC 9110 §5.6.1), trimmed of optional
/// whitespace, empty items skipped.
fn list_items(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(|item| item.trim_ascii())
        .filter(|item| !item.is_empty())
}

/// `1*DIGIT` into a u64; no sign, no spaces, no overflow.
fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &b| {
        if b.is_ascii_digit() {
            n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}
