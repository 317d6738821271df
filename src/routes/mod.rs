//! The reference application: the whole API as one `match` on (method, path).
//!
//! What it is: plain functions from a [`Request`] to an [`Answer`], testable without
//! sockets. Slow routes never block: `/work` answers after a loop timer, `/stream` sends
//! its chunks on loop timers, and the database routes go through the worker pool.
//!
//! What it is not: HTTP framing. HEAD is routed like GET and the connection drops the
//! body; `Connection`, `Date` and lengths are added by the encoder. Routing is decided
//! from the head: only `/echo` asks for the request body (`Answer::ReadBody`), so every
//! other route answers a request with a body before that body is read.

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

/// The methods a read-only route answers, as `Allow` says them (RFC 9110 §10.2.1).
const ALLOW_GET: &str = "GET, HEAD, OPTIONS";
/// The methods `/echo` answers.
const ALLOW_POST: &str = "POST, OPTIONS";
/// Every method some route answers: the `Allow` of `OPTIONS *`.
const ALLOW_ANY: &str = "GET, HEAD, POST, OPTIONS";

/// Every route, for the index at `/`.
const ROUTES: &[&str] = &[
    "GET /",
    "GET /health",
    "GET /live",
    "GET /work?ms=N",
    "GET /users/:id",
    "GET /db",
    "GET /stream?chunks=N&ms=M",
    "GET /plaintext",
    "GET /json",
    "GET /bytes/:n",
    "POST /echo",
    "GET /metrics",
];

/// The route table.
pub fn handle(req: &Request<'_>, ctx: &mut Ctx<'_>) -> Answer {
    use Method::{Get, Head, Options, Post};
    // The two benchmark routes by their whole path first: one compare each, where the
    // table below would first split the path into segments. The table still lists them,
    // so it stays the whole API on one screen.
    // Each route names itself for `/metrics` (`ctx.route`): the template, not the path.
    match (req.method, req.path) {
        (Get | Head, "/plaintext") => {
            ctx.route("/plaintext");
            return plaintext();
        }
        (Get | Head, "/json") => {
            ctx.route("/json");
            return json();
        }
        _ => {}
    }
    let mut buf = [""; MAX_SEGMENTS];
    let Some(path) = segments(req.path, &mut buf) else {
        return not_found();
    };
    let mut route = |name| ctx.route(name);
    match (req.method, path) {
        (Get | Head, []) => {
            route("/");
            index()
        }
        (Get | Head, ["health"]) => {
            route("/health");
            health(ctx)
        }
        (Get | Head, ["live"]) => {
            route("/live");
            Answer::Now(Response::json_static(Status::OK, r#"{"status":"ok"}"#))
        }
        (Get | Head, ["work"]) => {
            route("/work");
            work(req)
        }
        (Get | Head, ["users", id]) => {
            route("/users/:id");
            user(id, ctx)
        }
        (Get | Head, ["db"]) => {
            route("/db");
            db::random_world(ctx)
        }
        (Get | Head, ["stream"]) => {
            route("/stream");
            stream(req)
        }
        (Get | Head, ["plaintext"]) => {
            route("/plaintext");
            plaintext()
        }
        (Get | Head, ["json"]) => {
            route("/json");
            json()
        }
        (Get | Head, ["bytes", n]) => {
            route("/bytes/:n");
            bytes(n)
        }
        (Post, ["echo"]) => {
            route("/echo");
            echo(req)
        }
        (Get | Head, ["metrics"]) => {
            route("/metrics");
            Answer::Now(ctx.metrics())
        }
        // A known path and another method: what it does allow (OPTIONS), or 405 with
        // the same list (RFC 9110 §15.5.6: a 405 MUST carry `Allow`).
        (
            method,
            []
            | ["health" | "live" | "work" | "stream" | "plaintext" | "json" | "db" | "metrics"]
            | ["users" | "bytes", _],
        ) => other_method(method, ALLOW_GET),
        (method, ["echo"]) => other_method(method, ALLOW_POST),
        // `OPTIONS *` asks about the server as a whole (RFC 9110 §9.3.7); the asterisk is
        // only ever an OPTIONS target (the parser refuses it elsewhere), and `/*` is a
        // path like any other.
        (Options, ["*"]) if req.path == "*" => options(ALLOW_ANY),
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

/// A small JSON index: what this is, its version, and its routes — the page a scanner or
/// a curious person meets first.
fn index() -> Answer {
    let mut body = String::from("{\"name\":\"lastcall\",\"version\":");
    // Writing to a String cannot fail.
    let _ = response::write_json_string(&mut body, env!("CARGO_PKG_VERSION"));
    body.push_str(",\"routes\":[");
    for (i, route) in ROUTES.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        let _ = response::write_json_string(&mut body, route);
    }
    body.push_str("]}");
    Answer::Now(Response::json(Status::OK, body))
}

/// The request body back, with its `Content-Type` (`application/octet-stream` when it
/// had none): the body path, testable end to end from outside. A chunked body comes
/// back with a `Content-Length`; `MAX_BODY_BYTES` bounds it like any body.
fn echo(req: &Request<'_>) -> Answer {
    let Some(body) = req.body() else {
        return Answer::ReadBody;
    };
    // httparse has already refused control characters in field values, so the value
    // is safe to send back as it came.
    let content_type = req
        .header("content-type")
        .and_then(|v| std::str::from_utf8(v).ok())
        .unwrap_or("application/octet-stream")
        .to_owned();
    let response = Response::bare(Status::OK, Body::Bytes(body.to_vec()));
    Answer::Now(response.with_header("Content-Type", content_type))
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
        Err(_) => Response::internal_error(),
    })
}

/// The most `/bytes/:n` serves: large enough to measure throughput, small enough that a
/// typo cannot ask for gigabytes.
const BYTES_MAX: usize = 1 << 20;

/// `n` bytes of a fixed pattern (`abc…xyz` repeated), for harnesses that need a body of a
/// given size. The body is a slice of, or the repetition of, one pattern compiled into the
/// binary: nothing is allocated or copied per request, and a large body is written from
/// that one copy as the socket takes it — 2,000 clients that ask for 1 MiB and never read
/// cost a response head each, not 2 GiB.
fn bytes(raw: &str) -> Answer {
    // A whole number of alphabets, so the repetition carries on where the pattern ends.
    const PATTERN_LEN: usize = 26 * 2520;
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
        None => Body::Repeat {
            unit: &PATTERN,
            len: n,
        },
    };
    Answer::Now(Response::new(Status::OK, "application/octet-stream", body))
}

fn not_found() -> Answer {
    Answer::Now(Response::error(Status::NOT_FOUND, "not found"))
}

/// A known path asked with a method it does not answer: `OPTIONS` learns which it does
/// (200, empty body, RFC 9110 §9.3.7), anything else gets 405 with the same `Allow`.
fn other_method(method: Method, allow: &'static str) -> Answer {
    if method == Method::Options {
        return options(allow);
    }
    Answer::Now(
        Response::error(Status::METHOD_NOT_ALLOWED, "method not allowed")
            .with_header("Allow", allow),
    )
}

/// 200 with `Allow` and no content; the encoder still sends `Content-Length: 0`, which
/// RFC 9110 §9.3.7 requires of an OPTIONS answer without content.
fn options(allow: &'static str) -> Answer {
    Answer::Now(Response::bare(Status::OK, Body::Empty).with_header("Allow", allow))
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

    /// Calls the route table on a raw request head, without sockets, as the connection
    /// does first: a body the head declares is not read yet.
    fn call(raw: &str, shutting_down: bool) -> Answer {
        call_with_body(raw, shutting_down, None)
    }

    fn call_with_body(raw: &str, shutting_down: bool, body: Option<&[u8]>) -> Answer {
        let poll = mio::Poll::new().unwrap();
        let waker = mio::Waker::new(poll.registry(), mio::Token(0)).unwrap();
        let inbox = Arc::new(Inbox::new(waker));
        let head = parse_head(raw.as_bytes(), 8192).unwrap().unwrap();
        let body = match head.framing {
            crate::http::body::Framing::None => Some(&b""[..]),
            _ => body,
        };
        let req = Request::new(&head, raw.as_bytes(), body);
        let id = ReplyId {
            token: mio::Token(1),
            seq: 1,
        };
        let stats = crate::stats::Stats::new(1, true);
        let now = std::time::Instant::now();
        handle(
            &req,
            &mut Ctx::new(shutting_down, id, &inbox, None, &stats, now),
        )
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
            assert_eq!(r.body.to_vec(), body.as_bytes(), "{path}");
        }
    }

    #[test]
    fn bytes_repeats_the_pattern_past_the_static_slice() {
        for n in [26, 65_520, 65_521, 65_536, 1 << 20] {
            let r = now(call(&get(&format!("/bytes/{n}")), false));
            let body = r.body.to_vec();
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
        assert_eq!(r.body.to_vec(), br#"{"status":"shutting_down"}"#);
        assert_eq!(now(call(&get("/live"), true)).status, Status::OK);
    }

    #[test]
    fn wrong_method_on_a_known_path_is_405_with_allow() {
        let r = now(call("POST /health HTTP/1.1\r\nHost: t\r\n\r\n", false));
        assert_eq!(r.status, Status::METHOD_NOT_ALLOWED);
        assert!(
            r.headers
                .iter()
                .any(|(n, v)| *n == "Allow" && v == "GET, HEAD, OPTIONS")
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

    fn allow_of(r: &Response) -> Option<&str> {
        r.headers
            .iter()
            .find(|(n, _)| *n == "Allow")
            .map(|(_, v)| v.as_ref())
    }

    #[test]
    fn options_lists_what_a_path_allows_and_star_lists_every_method() {
        let cases: &[(&str, u16, Option<&str>)] = &[
            (
                "OPTIONS * HTTP/1.1\r\nHost: t\r\n\r\n",
                200,
                Some(ALLOW_ANY),
            ),
            (
                "OPTIONS /json HTTP/1.1\r\nHost: t\r\n\r\n",
                200,
                Some(ALLOW_GET),
            ),
            (
                "OPTIONS / HTTP/1.1\r\nHost: t\r\n\r\n",
                200,
                Some(ALLOW_GET),
            ),
            (
                "OPTIONS /users/7 HTTP/1.1\r\nHost: t\r\n\r\n",
                200,
                Some(ALLOW_GET),
            ),
            (
                "OPTIONS /echo HTTP/1.1\r\nHost: t\r\n\r\n",
                200,
                Some(ALLOW_POST),
            ),
            (
                "GET /echo HTTP/1.1\r\nHost: t\r\n\r\n",
                405,
                Some(ALLOW_POST),
            ),
            ("POST / HTTP/1.1\r\nHost: t\r\n\r\n", 405, Some(ALLOW_GET)),
            ("OPTIONS /nope HTTP/1.1\r\nHost: t\r\n\r\n", 404, None),
            // `/*` is a path like any other, not the asterisk.
            ("OPTIONS /* HTTP/1.1\r\nHost: t\r\n\r\n", 404, None),
        ];
        for (raw, status, allow) in cases {
            let r = now(call(raw, false));
            assert_eq!(r.status.0, *status, "{raw:?}");
            assert_eq!(allow_of(&r), *allow, "{raw:?}");
            if *status == 200 {
                assert_eq!(r.body, Body::Empty, "{raw:?}");
                assert_eq!(r.content_type, None, "{raw:?}");
            }
        }
    }

    #[test]
    fn index_lists_name_version_and_every_route() {
        let r = now(call(&get("/"), false));
        assert_eq!(r.status, Status::OK);
        let body = String::from_utf8(r.body.to_vec().to_vec()).unwrap();
        let version = env!("CARGO_PKG_VERSION");
        assert!(
            body.starts_with(&format!(
                r#"{{"name":"lastcall","version":"{version}","routes":["GET /","#
            )),
            "{body}"
        );
        assert!(body.ends_with(r#""GET /metrics"]}"#), "{body}");
        assert_eq!(body.matches(',').count(), 2 + ROUTES.len() - 1, "{body}");
    }

    #[test]
    fn echo_asks_for_the_body_then_answers_it_with_its_type() {
        let raw = "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Type: text/csv; charset=utf-8\r\nContent-Length: 5\r\n\r\n";
        assert!(matches!(call(raw, false), Answer::ReadBody));
        let r = now(call_with_body(raw, false, Some(b"a,b,c")));
        assert_eq!(r.status, Status::OK);
        assert_eq!(r.body.to_vec(), b"a,b,c");
        assert_eq!(r.content_type, None);
        assert!(
            r.headers
                .iter()
                .any(|(n, v)| *n == "Content-Type" && v == "text/csv; charset=utf-8")
        );
        // No Content-Type in, octet-stream out; no body is an empty echo.
        let r = now(call("POST /echo HTTP/1.1\r\nHost: t\r\n\r\n", false));
        assert_eq!(r.body.to_vec(), b"");
        assert!(
            r.headers
                .iter()
                .any(|(n, v)| *n == "Content-Type" && v == "application/octet-stream")
        );
    }

    #[test]
    fn routes_that_take_no_body_answer_before_it_is_read() {
        for raw in [
            "POST /nope HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\n",
            "POST /json HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\n",
            "GET /json HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            assert!(matches!(call(raw, false), Answer::Now(_)), "{raw:?}");
        }
    }
}
