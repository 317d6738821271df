//! The reference application: the whole API as one `match` on (method, path).
//!
//! What it is: plain functions from a [`Request`] to an [`Answer`], testable without
//! sockets. Slow routes never block: `/work` answers after a loop timer, `/stream` sends
//! its chunks on loop timers, and the database routes go through the worker pool.
//!
//! What it is not: HTTP framing. HEAD is routed like GET and the connection drops the
//! body; `Connection`, `Date` and lengths are added by the encoder.

use std::fmt::Write;
use std::time::Duration;

mod db;

use crate::handler::{Answer, Ctx, Stream};
use crate::http::request::{Method, Request};
use crate::http::response::{self, Body, Inline, Response, Status};

/// Longest path we route, in segments; longer paths are simply not found.
const MAX_SEGMENTS: usize = 8;

/// `/work?ms=` bounds: long enough to outlast any shutdown timeout in a test, short enough
/// that a typo cannot park a request for hours.
const WORK_MS_MAX: u64 = 60_000;
const WORK_MS_DEFAULT: u64 = 3_000;
const STREAM_CHUNKS_MAX: u64 = 10_000;

/// The route table.
pub fn handle(req: &Request<'_>, ctx: &mut Ctx<'_>) -> Answer {
    use Method::{Get, Head};
    let mut buf = [""; MAX_SEGMENTS];
    let Some(path) = segments(req.path, &mut buf) else {
        return not_found();
    };
    match (req.method, path) {
        (Get | Head, ["health"]) => health(ctx),
        (Get | Head, ["live"]) => {
            Answer::Now(Response::json_static(Status::OK, r#"{"status":"ok"}"#))
        }
        (Get | Head, ["work"]) => work(req),
        (Get | Head, ["users", id]) => user(id, ctx),
        (Get | Head, ["db"]) => db::random_world(ctx),
        (Get | Head, ["stream"]) => stream(req),
        (Get | Head, ["plaintext"]) => plaintext(),
        (Get | Head, ["json"]) => json(),
        (Get | Head, ["bytes", n]) => bytes(n),
        (
            _,
            ["health" | "live" | "work" | "stream" | "plaintext" | "json" | "db"]
            | ["users" | "bytes", _],
        ) => method_not_allowed(),
        _ => not_found(),
    }
}

/// Splits `/a/b/c` into `["a", "b", "c"]` in a caller's array (no allocation).
/// `None` for more than `MAX_SEGMENTS` segments.
fn segments<'p, 'b>(path: &'p str, buf: &'b mut [&'p str; MAX_SEGMENTS]) -> Option<&'b [&'p str]> {
    let trimmed = path.strip_prefix('/').unwrap_or(path);
    if trimmed.is_empty() {
        return Some(&buf[..0]);
    }
    // Cut at the byte positions of `/` (ASCII, so always a char boundary) rather than
    // with `str::split`, whose char searcher costs more to set up than these few bytes.
    let mut n = 0;
    let mut start = 0;
    let cuts = trimmed.bytes().enumerate().filter(|&(_, b)| b == b'/');
    for end in cuts.map(|(i, _)| i).chain([trimmed.len()]) {
        *buf.get_mut(n)? = &trimmed[start..end];
        n += 1;
        start = end + 1;
    }
    Some(&buf[..n])
}

/// Readiness: 200 while serving, 503 from the first shutdown signal on, so a load
/// balancer stops sending new work here.
fn health(ctx: &Ctx<'_>) -> Answer {
    Answer::Now(if ctx.shutting_down() {
        Response::json_static(Status::SERVICE_UNAVAILABLE, r#"{"status":"shutting_down"}"#)
    } else {
        Response::json_static(Status::OK, r#"{"status":"ok"}"#)
    })
}

/// Simulated slow work: a loop timer, not a sleeping thread.
fn work(req: &Request<'_>) -> Answer {
    match query_number(req, "ms", WORK_MS_DEFAULT, 0..=WORK_MS_MAX) {
        Ok(ms) => Answer::After(
            Duration::from_millis(ms),
            Response::json_static(Status::OK, r#"{"done":true}"#),
        ),
        Err(reason) => bad_request(&reason),
    }
}

/// A chunked response: `chunks` chunks, one every `ms` milliseconds.
fn stream(req: &Request<'_>) -> Answer {
    let params = query_number(req, "chunks", 10, 1..=STREAM_CHUNKS_MAX)
        .and_then(|chunks| Ok((chunks, query_number(req, "ms", 100, 0..=WORK_MS_MAX)?)));
    let (chunks, ms) = match params {
        Ok(params) => params,
        Err(reason) => return bad_request(&reason),
    };
    Answer::Stream(Stream {
        head: Response::new(Status::OK, response::TEXT, Body::Empty),
        interval: Duration::from_millis(ms),
        chunks: Box::new(
            (1..=chunks).map(move |i| format!("chunk {i} of {chunks}\n").into_bytes()),
        ),
    })
}

/// `SELECT * FROM users WHERE id = $1`, as a JSON object or `null`.
fn user(id: &str, ctx: &mut Ctx<'_>) -> Answer {
    match id.parse::<i64>() {
        Ok(id) => db::user_by_id(ctx, id),
        Err(_) => bad_request("id must be an integer"),
    }
}

/// TechEmpower's plaintext test.
fn plaintext() -> Answer {
    Answer::Now(Response::new(
        Status::OK,
        response::TEXT,
        Body::Static(b"Hello, World!"),
    ))
}

/// TechEmpower's JSON test: the object is serialised per request, as the rules require,
/// into an inline body rather than a heap buffer.
fn json() -> Answer {
    let mut body = Inline::default();
    let written = body
        .write_str("{\"message\":")
        .and_then(|()| response::write_json_string(&mut body, "Hello, World!"))
        .and_then(|()| body.write_char('}'));
    Answer::Now(match written {
        Ok(()) => Response::new(Status::OK, response::JSON, Body::Inline(body)),
        Err(_) => Response::error(Status::INTERNAL_SERVER_ERROR, "internal error"),
    })
}

/// The most `/bytes/:n` serves: large enough to measure throughput, small enough that a
/// typo cannot ask for gigabytes.
const BYTES_MAX: usize = 1 << 20;

/// `n` bytes of a fixed pattern (`abc…xyz` repeated), for harnesses that need a body of a
/// given size. Up to 64 KiB it is a slice of a pattern compiled into the binary (no
/// allocation); beyond, the pattern is repeated into a fresh buffer.
fn bytes(raw: &str) -> Answer {
    const PATTERN_LEN: usize = 64 * 1024;
    static PATTERN: [u8; PATTERN_LEN] = {
        let mut bytes = [0u8; PATTERN_LEN];
        let mut i = 0;
        while i < PATTERN_LEN {
            bytes[i] = b'a' + (i % 26) as u8;
            i += 1;
        }
        bytes
    };
    // Digits only: `parse` alone would also take `+5`.
    let n = match raw.parse::<usize>() {
        Ok(n) if n <= BYTES_MAX && raw.bytes().all(|b| b.is_ascii_digit()) => n,
        _ => return bad_request(&format!("n must be an integer from 0 to {BYTES_MAX}")),
    };
    let body = match PATTERN.get(..n) {
        Some(slice) => Body::Static(slice),
        None => Body::Bytes((0..n).map(|i| b'a' + (i % 26) as u8).collect()),
    };
    Answer::Now(Response::new(Status::OK, "application/octet-stream", body))
}

fn not_found() -> Answer {
    Answer::Now(Response::error(Status::NOT_FOUND, "not found"))
}

fn method_not_allowed() -> Answer {
    Answer::Now(
        Response::error(Status::METHOD_NOT_ALLOWED, "method not allowed")
            .with_header("Allow", "GET, HEAD"),
    )
}

fn bad_request(reason: &str) -> Answer {
    Answer::Now(Response::error(Status::BAD_REQUEST, reason))
}

/// A decimal query parameter within `range`, `default` when absent; otherwise the reason
/// for a 400, naming the parameter.
fn query_number(
    req: &Request<'_>,
    name: &'static str,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<u64, String> {
    let Some(raw) = req.query_param(name) else {
        return Ok(default);
    };
    match raw.parse::<u64>() {
        Ok(n) if range.contains(&n) && raw.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => Err(format!(
            "{name} must be an integer from {} to {}",
            range.start(),
            range.end()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::{Inbox, ReplyId};
    use crate::http::request::parse_head;
    use std::sync::Arc;

    #[test]
    fn segments_split_at_every_slash() {
        let cases: &[(&str, Option<&[&str]>)] = &[
            ("/", Some(&[])),
            ("", Some(&[])),
            ("/plaintext", Some(&["plaintext"])),
            ("/users/7", Some(&["users", "7"])),
            ("/users/", Some(&["users", ""])),
            ("//a", Some(&["", "a"])),
            ("/ü/ß", Some(&["ü", "ß"])),
            (
                "/1/2/3/4/5/6/7/8",
                Some(&["1", "2", "3", "4", "5", "6", "7", "8"]),
            ),
            ("/1/2/3/4/5/6/7/8/9", None),
        ];
        for (path, want) in cases {
            let mut buf = [""; MAX_SEGMENTS];
            assert_eq!(
                segments(path, &mut buf).map(<[&str]>::to_vec),
                want.map(<[&str]>::to_vec),
                "{path}"
            );
        }
    }

    /// Calls the route table on a raw request head, without sockets.
    fn call(raw: &str, shutting_down: bool) -> Answer {
        let poll = mio::Poll::new().unwrap();
        let waker = mio::Waker::new(poll.registry(), mio::Token(0)).unwrap();
        let inbox = Arc::new(Inbox::new(waker));
        let head = parse_head(raw.as_bytes(), 8192).unwrap().unwrap();
        let req = Request::new(&head, raw.as_bytes(), b"");
        let id = ReplyId {
            token: mio::Token(1),
            seq: 1,
        };
        handle(&req, &mut Ctx::new(shutting_down, id, &inbox, None))
    }

    fn now(answer: Answer) -> Response {
        match answer {
            Answer::Now(r) => r,
            _ => panic!("expected an immediate answer"),
        }
    }

    fn get(path: &str) -> String {
        format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n")
    }

    #[test]
    fn routes_answer_with_the_documented_statuses() {
        let cases: &[(&str, u16, &str)] = &[
            ("/health", 200, r#"{"status":"ok"}"#),
            ("/live", 200, r#"{"status":"ok"}"#),
            ("/plaintext", 200, "Hello, World!"),
            ("/json", 200, r#"{"message":"Hello, World!"}"#),
            ("/users/abc", 400, r#"{"error":"id must be an integer"}"#),
            ("/users/7", 503, r#"{"error":"database not configured"}"#),
            ("/nope", 404, r#"{"error":"not found"}"#),
            ("/", 404, r#"{"error":"not found"}"#),
            ("/health/", 404, r#"{"error":"not found"}"#),
            ("/a/b/c/d/e/f/g/h/i", 404, r#"{"error":"not found"}"#),
            (
                "/work?ms=abc",
                400,
                r#"{"error":"ms must be an integer from 0 to 60000"}"#,
            ),
            (
                "/work?ms=60001",
                400,
                r#"{"error":"ms must be an integer from 0 to 60000"}"#,
            ),
            (
                "/stream?chunks=0",
                400,
                r#"{"error":"chunks must be an integer from 1 to 10000"}"#,
            ),
            ("/bytes/5", 200, "abcde"),
            ("/bytes/0", 200, ""),
            (
                "/bytes/1048577",
                400,
                r#"{"error":"n must be an integer from 0 to 1048576"}"#,
            ),
            (
                "/bytes/+5",
                400,
                r#"{"error":"n must be an integer from 0 to 1048576"}"#,
            ),
        ];
        for (path, status, body) in cases {
            let r = now(call(&get(path), false));
            assert_eq!(r.status.0, *status, "{path}");
            assert_eq!(r.body.as_bytes(), body.as_bytes(), "{path}");
        }
    }

    #[test]
    fn bytes_repeats_the_pattern_past_the_static_slice() {
        for n in [26, 65_536, 65_537, 1 << 20] {
            let r = now(call(&get(&format!("/bytes/{n}")), false));
            let body = r.body.as_bytes();
            assert_eq!(body.len(), n);
            assert!(
                body.iter()
                    .enumerate()
                    .all(|(i, &b)| b == b'a' + (i % 26) as u8)
            );
        }
    }

    #[test]
    fn health_says_shutting_down_once_draining() {
        let r = now(call(&get("/health"), true));
        assert_eq!(r.status, Status::SERVICE_UNAVAILABLE);
        assert_eq!(r.body.as_bytes(), br#"{"status":"shutting_down"}"#);
        assert_eq!(now(call(&get("/live"), true)).status, Status::OK);
    }

    #[test]
    fn wrong_method_on_a_known_path_is_405_with_allow() {
        let r = now(call("POST /health HTTP/1.1\r\nHost: t\r\n\r\n", false));
        assert_eq!(r.status, Status::METHOD_NOT_ALLOWED);
        assert!(
            r.headers
                .iter()
                .any(|(n, v)| *n == "Allow" && v == "GET, HEAD")
        );
        let r = now(call("DELETE /users/1 HTTP/1.1\r\nHost: t\r\n\r\n", false));
        assert_eq!(r.status, Status::METHOD_NOT_ALLOWED);
        let r = now(call("POST /nope HTTP/1.1\r\nHost: t\r\n\r\n", false));
        assert_eq!(r.status, Status::NOT_FOUND);
    }

    #[test]
    fn slow_routes_answer_later() {
        assert!(
            matches!(call(&get("/work?ms=250"), false), Answer::After(d, _) if d == Duration::from_millis(250))
        );
        assert!(
            matches!(call(&get("/work"), false), Answer::After(d, _) if d == Duration::from_millis(3000))
        );
        match call(&get("/stream?chunks=3&ms=5"), false) {
            Answer::Stream(s) => {
                assert_eq!(s.interval, Duration::from_millis(5));
                let chunks: Vec<Vec<u8>> = s.chunks.collect();
                assert_eq!(
                    chunks,
                    vec![
                        b"chunk 1 of 3\n".to_vec(),
                        b"chunk 2 of 3\n".to_vec(),
                        b"chunk 3 of 3\n".to_vec()
                    ]
                );
            }
            _ => panic!("expected a stream"),
        }
    }
}
