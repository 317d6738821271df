//! The plain head: the shape nearly every request head has, read in one pass without
//! httparse.
//!
//! What it is: a reader for a strict subset of request heads — a request line
//! `METHOD SP target SP HTTP/1.x CRLF` with a method we implement and a target of plain
//! bytes only (`uri.rs`: no `%`, `#`, brackets or bytes above 0x7F), then field lines
//! `name ":" OWS value OWS CRLF` of token names and visible-ASCII values, then CRLF. It
//! hands each field to the [`FieldJudge`] as it reads it, so no list of fields is kept.
//!
//! What it is not: a second HTTP parser with verdicts of its own. Every head in the subset
//! is one httparse reads the same way (same method, target, version, fields and length);
//! for anything else — a head not complete yet, a bare LF, obs-text, an empty line before
//! the request line, a 65th field — it answers `None`, and `request::parse_request` takes
//! the general way (httparse, then the rules), which decides the head as before. So it
//! changes no answer, only what the common head costs.
//!
//! Why it exists: httparse is general (run-time SIMD dispatch, header slots, a UTF-8 check
//! of the target) and spent some 450 instructions on the TechEmpower request head, a third
//! of everything lastcall did per pipelined request; this reads the same head in about a
//! third of that.

use super::error::RequestError;
use super::fields::{FieldJudge, is_host_name};
use super::request::{MAX_HEADERS, Method, Version};
use super::uri::{ALPHA, DIGIT, T_OK, T_QUERY, byte_table, target_class};

/// What the plain reader found: the request line, the judge holding what the fields said,
/// and the first rule a field broke (judged after the limits, as `parse_head` does).
pub(super) struct Plain<'a> {
    pub(super) method: Method,
    /// The target, its bytes all plain ASCII (so the `&str` costs no UTF-8 walk).
    pub(super) target: &'a str,
    /// Where the target starts in the buffer.
    pub(super) start: usize,
    /// The target holds a `?`.
    pub(super) has_query: bool,
    pub(super) version: Version,
    /// Bytes of the head, final empty line included.
    pub(super) len: usize,
    pub(super) judge: FieldJudge,
    pub(super) field_error: Option<RequestError>,
}

/// Kinds of byte on a field line.
const OTHER: u8 = 0;
/// `tchar` (RFC 9110 §5.6.2): a field name's bytes.
const TOKEN: u8 = 1;
/// A visible ASCII byte that is not a `tchar` (a value may hold it, a name may not).
const VISIBLE: u8 = 2;
/// SP or HTAB: inside a value, or optional whitespace around it.
const BLANK: u8 = 3;
const FIELD_BYTE: [u8; 256] = {
    let mut table = byte_table(
        OTHER,
        &[
            (ALPHA, TOKEN),
            (DIGIT, TOKEN),
            (b"!#$%&'*+-.^_`|~", TOKEN),
            (b"\"(),/:;<=>?@[\\]{}", VISIBLE),
            (b" \t", BLANK),
        ],
    );
    // Not a letter, digit, mark or delimiter above, yet visible ASCII: none is left, but
    // spell the rule out rather than trust the lists above to be complete.
    let mut b = 0x21;
    while b < 0x7f {
        if table[b] == OTHER {
            table[b] = VISIBLE;
        }
        b += 1;
    }
    table
};

/// Reads a plain head from the front of `buf`, or says `None`: not plain, or not complete.
pub(super) fn read(buf: &[u8]) -> Option<Plain<'_>> {
    // The method: one we implement, then a single space (`GET` tried first, in one
    // compare of four bytes: nearly every request is one).
    let (method, space) = match buf.get(..4)? {
        b"GET " => (Method::Get, 3),
        _ => {
            let space = buf.iter().take(8).position(|&b| b == b' ')?;
            (Method::from_token(&buf[..space])?, space)
        }
    };

    // The target: plain bytes up to the next space, their kinds folded as they pass.
    // (An iterator, not `buf.get(end)` a byte at a time: no bounds check per byte.)
    let start = space + 1;
    let mut classes = T_OK;
    let len = buf.get(start..)?.iter().position(|&b| {
        if b == b' ' {
            return true;
        }
        classes |= target_class(b);
        false
    })?;
    let end = start + len;
    if end == start || classes & !T_QUERY != T_OK {
        return None;
    }
    // All ASCII (checked just above), so this never fails. Through `utf8_chunks`, not
    // `str::from_utf8`: both check every byte (safe code has no other way to a `&str`),
    // but for a slice this short `from_utf8` pays for setting up a word-at-a-time walk
    // it never reaches (113 instructions for `/plaintext`, against 94).
    let target = match buf[start..end].utf8_chunks().next() {
        Some(chunk) if chunk.invalid().is_empty() => chunk.valid(),
        _ => return None,
    };

    // The version, and the line's end.
    // As arrays, not slices: an array pattern compiles to a few word compares, a byte
    // string pattern on a slice to a length check and a `memcmp` call.
    const HTTP11: [u8; 11] = *b" HTTP/1.1\r\n";
    const HTTP10: [u8; 11] = *b" HTTP/1.0\r\n";
    let version = match <[u8; 11]>::try_from(buf.get(end..end + 11)?).ok()? {
        HTTP11 => Version::Http11,
        HTTP10 => Version::Http10,
        _ => return None,
    };

    // The field lines, each handed to the judge; the first broken rule is kept for later.
    let mut at = end + 11;
    let mut judge = FieldJudge::default();
    let mut field_error = None;
    let mut fields = 0;
    loop {
        if *buf.get(at)? == b'\r' {
            if *buf.get(at + 1)? != b'\n' {
                return None;
            }
            at += 2;
            break;
        }
        let (name, value, next) = field_line(buf, at)?;
        fields += 1;
        if fields > MAX_HEADERS {
            return None; // httparse's answer: 431
        }
        if field_error.is_none()
            && let Err(e) = judge.field(name, value)
        {
            field_error = Some(e);
        }
        at = next;
    }
    Some(Plain {
        method,
        target,
        start,
        has_query: classes & T_QUERY != 0,
        version,
        len: at,
        judge,
        field_error,
    })
}

/// One field line at `at`: its name, its value without the whitespace around it, and
/// where the next line starts.
#[inline(always)] // once per field, from one loop
fn field_line(buf: &[u8], at: usize) -> Option<(&[u8], &[u8], usize)> {
    let mut i = at;
    // `Host:`, in any case, the field every request has: its name known in one compare.
    match buf.get(at..at + 5)? {
        [name @ .., b':'] if is_host_name(name) => i += 4,
        _ => {
            while FIELD_BYTE[usize::from(*buf.get(i)?)] == TOKEN {
                i += 1;
            }
        }
    }
    if i == at || buf[i] != b':' {
        return None;
    }
    let name = &buf[at..i];
    i += 1;
    while FIELD_BYTE[usize::from(*buf.get(i)?)] == BLANK {
        i += 1;
    }
    let value_start = i;
    loop {
        i += visible_run(buf.get(i..)?);
        // The run stops at a byte outside 0x20..=0x7E: HTAB carries on, anything
        // else ends the value (CR, we hope).
        if *buf.get(i)? != b'\t' {
            break;
        }
        i += 1;
    }
    if buf[i] != b'\r' || *buf.get(i + 1)? != b'\n' {
        return None;
    }
    let value = buf[value_start..i].trim_ascii_end();
    Some((name, value, i + 2))
}

/// How many bytes at the front of `bytes` are visible ASCII or SP (0x20..=0x7E).
///
/// Eight bytes a turn, as one `u64` ("SWAR"), since a field value is mostly such bytes and
/// a byte-by-byte loop costs some seven instructions a byte. In each byte's top bit:
/// `w - 0x20` (and not `w`) is set for a byte below 0x20, `w + 1` for 0x7F, and `w` for
/// 0x80 and up. A borrow or carry between bytes only runs upward from a byte that is
/// itself flagged, so the lowest flag is exact: that is where the run ends.
fn visible_run(bytes: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const TOPS: u64 = 0x8080_8080_8080_8080;
    let mut run = 0;
    for chunk in bytes.chunks_exact(8) {
        let Ok(eight) = <[u8; 8]>::try_from(chunk) else {
            break;
        };
        let w = u64::from_le_bytes(eight);
        let flags = ((w.wrapping_sub(ONES * 0x20) & !w) | w.wrapping_add(ONES) | w) & TOPS;
        if flags != 0 {
            return run + flags.trailing_zeros() as usize / 8;
        }
        run += 8;
    }
    run + bytes[run..]
        .iter()
        .position(|&b| !(0x20..=0x7e).contains(&b))
        .unwrap_or(bytes.len() - run)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::request::{parse_general, plain_head};

    /// Whatever the plain reader vouches for, the general way reads the same: the same
    /// head or the same error, for every prefix of every case (a prefix it does not vouch
    /// for is the general way's alone, so that is the one verdict there is).
    #[test]
    fn plain_heads_read_as_httparse_reads_them() {
        let cases: &[&[u8]] = &[
            b"GET /plaintext HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n",
            b"GET /json HTTP/1.0\r\n\r\n",
            b"HEAD /a?b=c HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
            b"POST /echo HTTP/1.1\r\nhost: h\r\nContent-Length: 5, 5\r\n\r\nhello",
            b"POST /echo HTTP/1.1\r\nHOST: h\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"PUT /x HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nX-Empty:\r\nX-Blank: \t \r\nX-Pad:  v \t\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nExpect: nope\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET / HTTP/1.1\r\n\r\n",
            b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET * HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET http://h/p?q HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET /a HTTP/1.1\r\nHost : h\r\n\r\n",
            b"GET /a HTTP/1.1\r\nHost: h\r\n X: folded\r\n\r\n",
            b"GET /a HTTP/1.1\r\nHost: h\rX: y\r\n\r\n",
            b"GET /a HTTP/1.1\nHost: h\n\n",
            b"GET /a HTTP/1.2\r\nHost: h\r\n\r\n",
            b"GET /%41 HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET /a HTTP/1.1\r\nHost: h\r\nX: caf\xc3\xa9\r\n\r\n",
            b"GET /a HTTP/1.1\r\nHost: h\r\nX-Long: a value\tlonger than eight\x7f\r\n\r\n",
            b"GET /a HTTP/1.1\r\nHost: h\r\nX-Long: a value\tlonger than eight \t\r\n\r\n",
            b"GET /a HTTP/1.1\r\nHost: h\r\nX-Nul: abcdefgh\x00ij\r\n\r\n",
            b"GET /a HTTP/1.1\r\nHost: example.com:8080\r\nUser-Agent: a/1 (b; c)\r\n\r\n",
            b"GET  /a HTTP/1.1\r\nHost: h\r\n\r\n",
            b"get /a HTTP/1.1\r\nHost: h\r\n\r\n",
            b"\r\nGET /a HTTP/1.1\r\nHost: h\r\n\r\n",
        ];
        for max_head in [16 * 1024, 40] {
            for case in cases {
                for end in 0..=case.len() {
                    let buf = &case[..end];
                    let Some(plain) = read(buf) else { continue };
                    let fast = plain_head(buf, plain, max_head).map(|p| (p.head, p.target));
                    let general = parse_general(buf, max_head)
                        .map(|p| p.map(|p| (p.head, p.target)))
                        .transpose()
                        .unwrap_or_else(|| panic!("plain but partial: {buf:?}"));
                    assert_eq!(fast, general, "{}", String::from_utf8_lossy(buf));
                }
            }
        }
    }

    #[test]
    fn visible_run_stops_at_the_first_byte_outside_visible_ascii() {
        for len in 0..20 {
            for at in 0..=len {
                for odd in [0x00, b'\t', b'\r', 0x1f, 0x7f, 0x80, 0xff] {
                    let mut bytes = vec![b'a'; len];
                    if at < len {
                        bytes[at] = odd;
                        // What follows the odd byte must not matter, whatever it is.
                        for b in &mut bytes[at + 1..] {
                            *b = 0xff;
                        }
                    }
                    assert_eq!(visible_run(&bytes), at, "{bytes:?}");
                }
            }
        }
        let all: Vec<u8> = (0x20..=0x7e).collect();
        assert_eq!(visible_run(&all), all.len());
    }

    #[test]
    fn plain_reader_leaves_the_unusual_to_the_general_way() {
        let unusual: &[&[u8]] = &[
            b"GET /a HTTP/1.1\nHost: h\n\n",
            b"\r\nGET /a HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET /%41 HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET /a HTTP/1.1\r\nHost: h\r\nX: caf\xc3\xa9\r\n\r\n",
            b"GET /a HTTP/1.2\r\nHost: h\r\n\r\n",
            b"BREW /a HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET /a HTTP/1.1\r\nHost: h\r\n",
        ];
        for head in unusual {
            assert!(read(head).is_none(), "{}", String::from_utf8_lossy(head));
        }
        let many = format!(
            "GET / HTTP/1.1\r\n{}\r\n",
            "Host: h\r\n".repeat(MAX_HEADERS + 1)
        );
        assert!(read(many.as_bytes()).is_none());
    }
}
