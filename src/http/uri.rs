//! The URI grammar (RFC 3986) where it meets a request: which bytes a request target may
//! hold, which form it takes (RFC 9112 §3.2), and the character sets the `Host` check is
//! built from.
//!
//! What it is: byte tables built at compile time from RFC 3986's named sets, a fold that
//! says in one pass whether a target is all plain bytes, the slow path that names the rule
//! a bad byte breaks, and the split of a target into path and query.
//!
//! What it is not: it never decodes (percent-encoded bytes stay as sent, and routes see
//! them so), and it decides nothing about the rest of the head (`request.rs`).

use std::ops::Range;

use super::error::{RequestError, TargetRule};
use super::request::Method;

/// What a byte may be in a request target, as bit flags, so a whole target folds into
/// one value without a branch per byte; a target of plain bytes folds to `T_OK`.
pub(super) const T_OK: u8 = 0;
const T_BAD: u8 = 1;
const T_PERCENT: u8 = 2;
const T_HASH: u8 = 4;
const T_HIGH: u8 = 8;
const T_BRACKET: u8 = 16;
/// `?`: valid, and where the query starts.
pub(super) const T_QUERY: u8 = 32;

/// The request-target alphabet (RFC 9112 §3.2.1, RFC 3986 §3.3–3.4): origin-form is
/// `absolute-path [ "?" query ]` of `pchar = unreserved / pct-encoded / sub-delims / ":" /
/// "@"`, plus `/` and `?`. Every other byte has a rule of its own to name, or is `T_BAD`.
/// `[` and `]` are let through only in an absolute-form target, for an IPv6 host.
const TARGET_CLASS: [u8; 256] = {
    let mut table = byte_table(
        T_BAD,
        &[
            (ALPHA, T_OK),
            (DIGIT, T_OK),
            (UNRESERVED_MARKS, T_OK),
            (SUB_DELIMS, T_OK),
            (b":@/", T_OK),
            (b"?", T_QUERY),
            (b"%", T_PERCENT),
            (b"#", T_HASH),
            (b"[]", T_BRACKET),
        ],
    );
    let mut b = 0x80;
    while b < 256 {
        table[b] = T_HIGH;
        b += 1;
    }
    table
};

/// RFC 3986's character sets, as the byte tables below are built from them.
pub(super) const ALPHA: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
pub(super) const DIGIT: &[u8] = b"0123456789";
/// `unreserved` besides ALPHA and DIGIT (§2.3).
pub(super) const UNRESERVED_MARKS: &[u8] = b"-._~";
/// `sub-delims` (§2.2).
pub(super) const SUB_DELIMS: &[u8] = b"!$&'()*+,;=";

/// A table from byte to kind, built at compile time: `default` for every byte, then the
/// kind of each `(bytes, kind)` entry for its bytes.
pub(super) const fn byte_table(default: u8, entries: &[(&[u8], u8)]) -> [u8; 256] {
    let mut table = [default; 256];
    let mut e = 0;
    while e < entries.len() {
        let (bytes, kind) = entries[e];
        let mut i = 0;
        while i < bytes.len() {
            table[bytes[i] as usize] = kind;
            i += 1;
        }
        e += 1;
    }
    table
}

/// What one byte may be in a request target (`T_OK`, `T_QUERY`, or a rule to look at).
#[inline(always)] // one table lookup, in the plain reader's loop
pub(super) fn target_class(b: u8) -> u8 {
    TARGET_CLASS[usize::from(b)]
}

/// Every class found among the target's bytes, folded into one value without a branch
/// per byte.
pub(super) fn target_classes(target: &[u8]) -> u8 {
    target
        .iter()
        .fold(T_OK, |found, &b| found | TARGET_CLASS[usize::from(b)])
}

/// Checks every byte of a request target (or of as much of it as has arrived, when
/// `complete` is false) against the target alphabet, and names the rule the first bad
/// byte breaks. Percent-encoded bytes are fine and stay encoded: routing sees the path
/// exactly as sent.
pub(super) fn check_target_bytes(target: &[u8], complete: bool) -> Result<(), RequestError> {
    if target_classes(target) & !T_QUERY == T_OK {
        return Ok(());
    }
    // Something to look at (rare): find the first byte that breaks a rule.
    let brackets_allowed = strip_scheme(target).is_some();
    for (i, &b) in target.iter().enumerate() {
        let rule = match TARGET_CLASS[usize::from(b)] {
            T_OK | T_QUERY => continue,
            T_BRACKET if brackets_allowed => continue,
            T_PERCENT => match target.get(i + 1..i + 3) {
                Some(&[hi, lo]) if hi.is_ascii_hexdigit() && lo.is_ascii_hexdigit() => continue,
                // The target ends within `%XX`: its last bytes have not arrived yet.
                None if !complete && target[i + 1..].iter().all(u8::is_ascii_hexdigit) => {
                    return Ok(());
                }
                _ => TargetRule::PercentEncoding,
            },
            T_HASH => TargetRule::Fragment,
            T_HIGH => TargetRule::NonAscii,
            _ => TargetRule::Byte,
        };
        return Err(RequestError::BadTarget(rule));
    }
    Ok(())
}

/// Splits the request target, which starts at `start` in the buffer, into path and query
/// (RFC 9112 §3.2). Its bytes have been checked already (and found to hold a `?` or not);
/// this decides its form.
///
/// - origin-form `/path?query`: the usual case;
/// - absolute-form `http://host/path?query`: a server MUST accept it (§3.2.2), we route by
///   its path;
/// - asterisk-form `*`: only for `OPTIONS` (§3.2.4); it routes as the path `*`;
/// - authority-form (`CONNECT host:port`) and anything else is a 400: we are not a proxy.
#[inline(always)] // once per request, from one place: no call for the common origin-form
pub(super) fn split_target(
    start: usize,
    target: &str,
    method: Method,
    has_query: bool,
) -> Result<(Range<usize>, Option<Range<usize>>), RequestError> {
    let rel = if target.starts_with('/') || (target == "*" && method == Method::Options) {
        0
    } else if let Some(rest) = strip_scheme(target.as_bytes()) {
        match rest.iter().position(|&b| b == b'/') {
            Some(slash) => target.len() - rest.len() + slash,
            // `http://host` with no path means `/` (RFC 9112 §3.2.2), which has no bytes
            // in the buffer to point at: route it as the empty path, which routes as `/`.
            None => target.len(),
        }
    } else {
        return Err(RequestError::BadTarget(TargetRule::Form));
    };
    let query_at = match has_query {
        true => target[rel..].bytes().position(|b| b == b'?'),
        false => None,
    };
    Ok(match query_at {
        Some(q) => (
            start + rel..start + rel + q,
            Some(start + rel + q + 1..start + target.len()),
        ),
        None => (start + rel..start + target.len(), None),
    })
}

/// The target after its `http://` or `https://` (any case), if it has one.
fn strip_scheme(target: &[u8]) -> Option<&[u8]> {
    [&b"http://"[..], b"https://"]
        .into_iter()
        .find_map(|scheme| {
            let head = target.get(..scheme.len())?;
            head.eq_ignore_ascii_case(scheme)
                .then(|| &target[scheme.len()..])
        })
}
