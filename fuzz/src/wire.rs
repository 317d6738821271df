//! What a client would make of the bytes a connection wrote: a strict reader of HTTP/1.1
//! responses, for the `conn` target's checks.
//!
//! What it is: [`requests`], which finds the methods of the complete requests a client
//! sent (each response answers one of them, in order, and a response to `HEAD` has no
//! body), and [`responses`], which reads the written bytes as responses: status line,
//! header fields, then a body framed by `Content-Length`, chunked, or (for HTTP/1.0
//! streams) by the close.
//!
//! What it is not: a general HTTP client. It reads only what `lastcall` writes, and it is
//! strict where a lenient client would guess: anything it cannot place is an error.
//!
//! Invariants: every loop advances through its input or stops; it never panics on any
//! bytes (it runs on what the fuzzer leads the server to write).

use lastcall::http::body::{BodyDecoder, Framing};
use lastcall::http::request::{Method, leading_empty_lines, parse_head};

/// The methods of the complete requests at the front of `sent`, in order, as the server's
/// own parser reads them (it is split-independent, so reading the bytes whole is reading
/// them as the server did). Stops at the first request that is broken or incomplete.
pub fn requests(sent: &[u8], max_head: usize) -> Vec<Method> {
    let mut methods = Vec::new();
    let mut rest = sent;
    while !rest.is_empty() {
        rest = &rest[leading_empty_lines(rest)..];
        let Ok(Some(head)) = parse_head(rest, max_head) else {
            break;
        };
        methods.push(head.method);
        let Some(body) = body_len(head.framing, &rest[head.len..]) else {
            break;
        };
        rest = &rest[head.len + body..];
    }
    methods
}

/// How many bytes a complete body framed as `framing` takes at the front of `bytes`, if
/// it is complete and well framed.
fn body_len(framing: Framing, bytes: &[u8]) -> Option<usize> {
    let mut decoder = BodyDecoder::new(framing, u64::MAX).ok()?;
    let mut used = 0;
    // Each call consumes a byte at least, or stops.
    for _ in 0..=bytes.len() {
        let step = decoder.decode(&bytes[used..]).ok()?;
        used += step.consumed;
        if step.done {
            return Some(used);
        }
        if step.consumed == 0 {
            return None;
        }
    }
    None
}

/// What the written bytes hold.
#[derive(Debug, PartialEq, Eq)]
pub struct Responses {
    /// Complete final (non-1xx) responses.
    pub complete: usize,
    /// The bytes end inside a response (its head or its body).
    pub cut: bool,
}

/// Reads `written` as a sequence of responses to requests with `methods`. A response whose
/// request is not among them (an answer to a request that broke a rule) has a body as its
/// head says. `Err` says what is not a response, or what follows a `Connection: close`.
pub fn responses(written: &[u8], methods: &[Method]) -> Result<Responses, String> {
    let mut at = 0;
    let mut complete = 0;
    // One response per pass: at least its status line, or the loop ends.
    while at < written.len() {
        let rest = &written[at..];
        let Some(head_len) = find(rest, b"\r\n\r\n").map(|i| i + 4) else {
            let ok = prefix_of_status_line(rest);
            return ok
                .then_some(Responses {
                    complete,
                    cut: true,
                })
                .ok_or_else(|| format!("not a response at byte {at}: {:?}", lossy(rest)));
        };
        let head = Head::read(&rest[..head_len]).map_err(|e| format!("at byte {at}: {e}"))?;
        let after = &rest[head_len..];
        if head.status < 200 {
            at += head_len;
            continue;
        }
        let head_request = methods.get(complete) == Some(&Method::Head);
        let body = if head.status == 204 || head.status == 304 {
            Some(0)
        } else if head_request && (after.is_empty() || after.starts_with(b"HTTP/1.")) {
            // A HEAD answer has no body; one refused before routing (413) has one, and
            // its body is text, never a status line.
            Some(0)
        } else if let Some(n) = head.length {
            (after.len() >= n).then_some(n)
        } else if head.chunked {
            body_len(Framing::Chunked, after)
        } else if head.close {
            // HTTP/1.0 stream: the body is everything up to the close.
            Some(after.len())
        } else {
            return Err(format!(
                "response at byte {at} has no framing: {:?}",
                lossy(rest)
            ));
        };
        let Some(body) = body else {
            return Ok(Responses {
                complete,
                cut: true,
            });
        };
        complete += 1;
        at += head_len + body;
        if head.close && at < written.len() {
            return Err(format!(
                "bytes after a Connection: close response, at byte {at}: {:?}",
                lossy(&written[at..])
            ));
        }
    }
    Ok(Responses {
        complete,
        cut: false,
    })
}

/// What a response head says about what follows it.
struct Head {
    status: u16,
    length: Option<usize>,
    chunked: bool,
    close: bool,
}

impl Head {
    /// Reads a complete head, final empty line included.
    fn read(head: &[u8]) -> Result<Head, String> {
        let mut lines = head[..head.len() - 4].split(|&b| b == b'\n');
        let line = lines.next().unwrap_or_default();
        let status_line = line.strip_suffix(b"\r").unwrap_or(line);
        let status = status_of(status_line)
            .ok_or_else(|| format!("bad status line {:?}", lossy(status_line)))?;
        let mut parsed = Head {
            status,
            length: None,
            chunked: false,
            close: false,
        };
        for line in lines {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let (name, value) =
                field(line).ok_or_else(|| format!("bad field {:?}", lossy(line)))?;
            match name.to_ascii_lowercase().as_slice() {
                b"content-length" if parsed.length.is_none() => {
                    let n = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok());
                    parsed.length = Some(n.ok_or("bad Content-Length")?);
                }
                b"content-length" => return Err("two Content-Length fields".into()),
                b"transfer-encoding" if value == b"chunked" => parsed.chunked = true,
                b"transfer-encoding" => return Err(format!("coding {:?}", lossy(value))),
                b"connection" => parsed.close |= value.eq_ignore_ascii_case(b"close"),
                _ => {}
            }
        }
        if parsed.length.is_some() && parsed.chunked {
            return Err("both Content-Length and chunked".into());
        }
        Ok(parsed)
    }
}

/// `HTTP/1.1 NNN reason` (or 1.0): the status code.
fn status_of(line: &[u8]) -> Option<u16> {
    let rest = line
        .strip_prefix(b"HTTP/1.1 ")
        .or_else(|| line.strip_prefix(b"HTTP/1.0 "))?;
    let (code, reason) = (rest.get(..3)?, rest.get(3..)?);
    let visible = reason.iter().all(|&b| b == b' ' || b.is_ascii_graphic());
    let code: u16 = std::str::from_utf8(code).ok()?.parse().ok()?;
    (code.to_string().len() == 3 && (reason.is_empty() || reason[0] == b' ') && visible)
        .then_some(code)
}

/// `name: value`, the name a token and the value free of control bytes.
fn field(line: &[u8]) -> Option<(&[u8], &[u8])> {
    let colon = line.iter().position(|&b| b == b':')?;
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    let token = !name.is_empty() && name.iter().all(|&b| b.is_ascii_graphic() && b != b':');
    let value = value.strip_prefix(b" ").unwrap_or(value);
    let clean = value
        .iter()
        .all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f));
    (token && clean).then_some((name, value))
}

/// The bytes could still grow into a status line: a cut response head.
fn prefix_of_status_line(rest: &[u8]) -> bool {
    let want = b"HTTP/1.";
    let n = rest.len().min(want.len());
    rest[..n] == want[..n] && !rest.contains(&0)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).into_owned()
}
