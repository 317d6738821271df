//! HTTP/1.1 on the wire: what a client sees when it talks raw TCP to the real binary.
//!
//! Each test starts its own server on a free loopback port (see `support`), sends bytes
//! exactly as written here, and reads the answers with `support::Reader`. Every read and
//! write has a timeout, every loop is bounded, and nothing waits on a fixed sleep.
//!
//! Read in order: persistence (keep-alive, pipelining, `Connection: close`, HTTP/1.0),
//! request bodies (Content-Length, chunked, `Expect: 100-continue`), HEAD, the reference
//! routes, then every way a request can be refused, then a client that never reads and
//! one that never stops.

mod support;

use std::io::{ErrorKind, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use support::{PATIENCE, Reader, Response, Server, get};

const PLAINTEXT: &str = "Hello, World!";
const JSON: &str = r#"{"message":"Hello, World!"}"#;
const LIVE: &str = r#"{"status":"ok"}"#;

/// A fresh raw connection to `server`, wrapped in a response reader.
fn open(server: &Server) -> Reader {
    Reader::new(server.connect())
}

/// `GET path` on HTTP/1.1 with a Host and nothing else (the connection persists).
fn get_request(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n")
}

/// The body `/stream?chunks=n` sends, all chunks joined.
fn stream_body(n: usize) -> String {
    (1..=n).map(|i| format!("chunk {i} of {n}\n")).collect()
}

/// Asserts the API's error shape: JSON `{"error":"..."}`.
fn assert_error_json(r: &Response, context: &str) {
    let body = r.body_text();
    assert_eq!(
        r.header("content-type"),
        Some("application/json"),
        "{context}: error content type"
    );
    assert!(
        body.starts_with(r#"{"error":""#) && body.ends_with(r#""}"#),
        "{context}: error body is not {{\"error\":...}}: {body:?}"
    );
}

/// The server still answers a new connection normally.
fn assert_serving(server: &Server) {
    let r = get(server, "/live");
    assert_eq!(r.status, 200, "a fresh connection is served");
    assert_eq!(r.body_text(), LIVE);
}

/// Resident memory of a process in KiB, from `/proc/<pid>/status`.
fn vm_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

// ---------------------------------------------------------------------------------------
// Persistence: keep-alive, pipelining, Connection: close, HTTP/1.0
// ---------------------------------------------------------------------------------------

#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    let server = Server::start(&[], &[]);
    let mut c = open(&server);
    for (path, body) in [
        ("/plaintext", PLAINTEXT),
        ("/json", JSON),
        ("/live", LIVE),
        ("/plaintext", PLAINTEXT),
        ("/json", JSON),
    ] {
        c.send(get_request(path).as_bytes());
        let r = c
            .response()
            .expect("a response on the kept-alive connection");
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.body_text(), body, "{path}");
        assert!(!r.closes(), "{path}: HTTP/1.1 persists by default");
    }
}

#[test]
fn empty_lines_before_a_request_are_ignored() {
    // RFC 9112 §2.2. Sent one by one, as a client that trickles them would, then
    // between two pipelined requests.
    let server = Server::start(&[], &[]);
    let mut c = open(&server);
    c.stream.set_nodelay(true).unwrap();
    for _ in 0..200 {
        c.send(b"\r\n");
    }
    c.send(b"\n");
    c.send(get_request("/plaintext").as_bytes());
    let r = c.response().expect("answered after the empty lines");
    assert_eq!((r.status, r.body_text().as_str()), (200, PLAINTEXT));
    c.send(format!("\r\n\n{}", get_request("/json")).as_bytes());
    let r = c.response().expect("answered on the same connection");
    assert_eq!((r.status, r.body_text().as_str()), (200, JSON));
}

#[test]
fn pipelined_requests_in_one_write_are_answered_in_order() {
    let server = Server::start(&[], &[]);
    // Sixteen requests of mixed kinds (immediate, timer-delayed, streamed, HEAD, 404), each
    // with a distinct query or path, written in one go.
    let mut wire = String::new();
    let mut expected: Vec<(&str, u16, String)> = Vec::new();
    for i in 0..16usize {
        let (method, target, status, body) = match i % 6 {
            0 => (
                "GET",
                format!("/plaintext?i={i}"),
                200,
                PLAINTEXT.to_owned(),
            ),
            1 => ("GET", format!("/json?i={i}"), 200, JSON.to_owned()),
            2 => ("GET", format!("/live?i={i}"), 200, LIVE.to_owned()),
            3 => (
                "GET",
                format!("/stream?chunks={}&ms=0", i + 1),
                200,
                stream_body(i + 1),
            ),
            // Later requests wait less: an answer that overtook its turn would show.
            4 => (
                "GET",
                format!("/work?ms={}", (16 - i) * 3),
                200,
                r#"{"done":true}"#.to_owned(),
            ),
            _ => ("HEAD", format!("/json?i={i}"), 200, String::new()),
        };
        wire.push_str(&format!("{method} {target} HTTP/1.1\r\nHost: test\r\n\r\n"));
        expected.push((method, status, body));
    }
    let mut c = open(&server);
    c.send(wire.as_bytes());
    for (i, (method, status, body)) in expected.iter().enumerate() {
        let r = c
            .response_to(method)
            .unwrap_or_else(|e| panic!("response {i}: {e:?}"));
        assert_eq!(r.status, *status, "response {i}");
        assert_eq!(&r.body_text(), body, "response {i} out of order or wrong");
        assert!(r.complete, "response {i} complete");
    }
    // Nothing extra after the sixteenth answer, and the connection is still usable.
    c.send(get_request("/plaintext?after").as_bytes());
    let r = c.response().expect("a seventeenth response");
    assert_eq!(r.body_text(), PLAINTEXT);
}

#[test]
fn connection_close_is_honoured_with_eof_after_the_response() {
    let server = Server::start(&[], &[]);
    let mut c = open(&server);
    c.send(b"GET /plaintext HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    let r = c.response().expect("a response");
    assert_eq!(r.status, 200);
    assert_eq!(r.body_text(), PLAINTEXT);
    assert!(r.closes(), "the response says Connection: close");
    assert!(c.at_eof(), "the server closes after the response");
}

#[test]
fn connection_close_token_is_found_in_a_list_in_any_case() {
    let server = Server::start(&[], &[]);
    let mut c = open(&server);
    c.send(b"GET /json HTTP/1.1\r\nHost: test\r\nConnection: keep-alive, CLOSE\r\n\r\n");
    let r = c.response().expect("a response");
    assert_eq!(r.body_text(), JSON);
    assert!(r.closes());
    assert!(c.at_eof());
}

#[test]
fn pipelined_request_after_connection_close_is_not_answered() {
    let server = Server::start(&[], &[]);
    let mut c = open(&server);
    c.send(
        b"GET /plaintext HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n\
          GET /json HTTP/1.1\r\nHost: test\r\n\r\n",
    );
    let r = c.response().expect("the first response");
    assert_eq!(r.body_text(), PLAINTEXT);
    assert!(r.closes());
    assert!(c.at_eof(), "nothing follows the response that closed");
}

#[test]
fn http10_request_closes_by_default() {
    let server = Server::start(&[], &[]);
    let mut c = open(&server);
    c.send(b"GET /plaintext HTTP/1.0\r\n\r\n");
    let r = c.response().expect("a response");
    assert_eq!(r.status, 200);
    assert_eq!(r.body_text(), PLAINTEXT);
    assert!(
        r.closes(),
        "1.0 without keep-alive is answered Connection: close"
    );
    assert!(c.at_eof());
}

#[test]
fn http10_request_with_keep_alive_keeps_the_connection() {
    let server = Server::start(&[], &[]);
    let mut c = open(&server);
    for path in ["/plaintext", "/json"] {
        c.send(format!("GET {path} HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").as_bytes());
        let r = c.response().expect("a response");
        assert_eq!(r.status, 200, "{path}");
        assert!(
            r.header("connection")
                .is_some_and(|v| v.eq_ignore_ascii_case("keep-alive")),
            "{path}: a 1.0 client is told keep-alive explicitly, got {:?}",
            r.header("connection")
        );
        assert!(
            r.header("content-length").is_some(),
            "{path}: a 1.0 keep-alive body has a length"
        );
    }
    // The third request omits keep-alive: answered, then closed.
    c.send(b"GET /live HTTP/1.0\r\n\r\n");
    let r = c.response().expect("a third response");
    assert_eq!(r.body_text(), LIVE);
    assert!(r.closes());
    assert!(c.at_eof());
}

// ---------------------------------------------------------------------------------------
// Request bodies
// ---------------------------------------------------------------------------------------

/// A 405 for `POST /health`: answered, not a framing error, so the connection stays.
fn assert_405(r: &Response, context: &str) {
    assert_eq!(r.status, 405, "{context}");
    assert_eq!(r.header("allow"), Some("GET, HEAD, OPTIONS"), "{context}");
    assert!(!r.closes(), "{context}: a 405 keeps the connection");
    assert_error_json(r, context);
}

/// `/echo`'s answer: the body back, and the connection stays.
fn assert_echo(r: &Response, body: &str, context: &str) {
    assert_eq!(r.status, 200, "{context}");
    assert_eq!(r.body_text(), body, "{context}");
    assert!(!r.closes(), "{context}: an echo keeps the connection");
}

#[test]
fn chunked_body_is_framed_so_the_next_pipelined_request_is_answered() {
    let server = Server::start(&[], &[]);
    let mut c = open(&server);
    c.send(
        b"POST /echo HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n\
          5\r\nhello\r\n7;ext=\"a b\"\r\n, world\r\n0\r\nX-Trailer: yes\r\n\r\n\
          GET /live HTTP/1.1\r\nHost: test\r\n\r\n",
    );
    let r = c.response().expect("the POST's answer");
    assert_echo(&r, "hello, world", "chunked POST");
    assert_eq!(
        r.header("content-length"),
        Some("12"),
        "chunked in, length out"
    );
    let r = c.response().expect("the pipelined GET's answer");
    assert_eq!(r.status, 200);
    assert_eq!(r.body_text(), LIVE);
}

#[test]
fn content_length_body_is_framed_so_the_next_pipelined_request_is_answered() {
    let server = Server::start(&[], &[]);
    let mut c = open(&server);
    // The body looks like a request on purpose: it must be skipped as body, not run.
    let body = "GET /json HTTP/1.1\r\nHost: x\r\n\r\n";
    c.send(
        format!(
            "POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n\r\n{body}\
             GET /live HTTP/1.1\r\nHost: test\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    assert_echo(
        &c.response().expect("the POST's answer"),
        body,
        "Content-Length POST",
    );
    let r = c.response().expect("the pipelined GET's answer");
    assert_eq!(r.status, 200);
    assert_eq!(r.body_text(), LIVE, "the body was not taken for a request");
}

#[test]
fn body_split_across_writes_is_reassembled() {
    let server = Server::start(&[], &[]);
    let mut c = open(&server);
    c.send(b"POST /echo HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhe");
    c.stream.flush().unwrap();
    c.send(b"llo\r\n0\r\n\r\nGET /live HTTP/1.1\r\nHost: test\r\n\r\n");
    assert_echo(
        &c.response().expect("the POST's answer"),
        "hello",
        "split chunked POST",
    );
    assert_eq!(c.response().expect("the GET").body_text(), LIVE);
}

#[test]
fn expect_100_continue_gets_continue_before_the_body_is_sent() {
    let server = Server::start(&[], &[]);
    let mut c = open(&server);
    c.send(
        b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\n\
          Expect: 100-continue\r\n\r\n",
    );
    let interim = c.response().expect("an interim response");
    assert_eq!(interim.status, 100, "100 Continue before the body");
    c.send(b"hello");
    assert_echo(
        &c.response().expect("the final answer"),
        "hello",
        "after 100 Continue",
    );
    // The connection goes on.
    c.send(get_request("/plaintext").as_bytes());
    assert_eq!(c.response().expect("next").body_text(), PLAINTEXT);
}

#[test]
fn expect_100_continue_with_oversized_length_is_refused_without_continue() {
    let server = Server::start(&[("MAX_BODY_BYTES", "16")], &[]);
    let mut c = open(&server);
    c.send(
        b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 1000\r\n\
          Expect: 100-continue\r\n\r\n",
    );
    let r = c.response().expect("a response");
    assert_eq!(r.status, 413, "refused before the client sends its body");
    assert!(r.closes());
    assert!(c.at_eof());
}

// ---------------------------------------------------------------------------------------
// Answers that do not depend on the body come before it
// ---------------------------------------------------------------------------------------

#[test]
fn request_with_expect_continue_to_a_path_that_takes_no_body_gets_its_4xx_without_100() {
    // RFC 9110 §10.1.1: the client waits for a 100 before its body; a 404 or 405 comes
    // instead, with `Connection: close` (the client may never send that body).
    let server = Server::start(&[], &[]);
    for (path, status) in [("/nope", 404), ("/json", 405), ("/", 405)] {
        let mut c = open(&server);
        c.send(
            format!(
                "POST {path} HTTP/1.1\r\nHost: test\r\nContent-Length: 100000\r\n\
                 Expect: 100-continue\r\n\r\n"
            )
            .as_bytes(),
        );
        let r = c.response().expect("a final answer, no body sent");
        assert_eq!(r.status, status, "{path}: a final status, not 100");
        assert_error_json(&r, path);
        assert!(r.closes(), "{path}: closes rather than wait for the body");
        assert!(c.at_eof(), "{path}");
    }
}

#[test]
fn small_body_of_an_answered_request_is_skipped_and_the_connection_kept() {
    let server = Server::start(&[], &[]);
    let mut c = open(&server);
    // The 404 goes out at once, before the body has even been written.
    // The body looks like a request on purpose: it is skipped as body, not run.
    let body = "GET /json HTTP/1.1\r\nHost: x\r\n\r\n";
    c.send(
        format!(
            "POST /nope HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    let r = c.response().expect("answered from the head");
    assert_eq!(r.status, 404);
    assert!(
        !r.closes(),
        "a small body is read past, not a reason to close"
    );
    let (first, rest) = body.split_at(10);
    c.send(first.as_bytes());
    c.send(rest.as_bytes());
    c.send(b"POST /json HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n");
    let r = c.response().expect("the chunked POST's answer");
    assert_405(&r, "chunked POST to /json");
    c.send(b"3\r\nabc\r\n0\r\n\r\n");
    c.send(get_request("/plaintext").as_bytes());
    let r = c.response().expect("the request after both bodies");
    assert_eq!((r.status, r.body_text().as_str()), (200, PLAINTEXT));
}

#[test]
fn large_declared_body_of_an_answered_request_closes_the_connection() {
    // Over 256 KiB the body is not worth reading only to drop it: the answer says
    // `Connection: close`, before the client has sent a byte of it.
    let server = Server::start(&[], &[]);
    let mut c = open(&server);
    c.send(b"POST /plaintext HTTP/1.1\r\nHost: test\r\nContent-Length: 300000\r\n\r\n");
    let r = c.response().expect("answered from the head");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD, OPTIONS"));
    assert!(r.closes(), "a large body is not read past");
    assert!(c.at_eof());
}

#[test]
fn chunked_body_of_an_answered_request_past_the_bound_ends_the_connection() {
    // A chunked body has no declared length: it is read past up to 256 KiB, and a longer
    // one ends the connection after the answer that already went out.
    let server = Server::start(&[], &[]);
    let mut c = open(&server);
    c.send(
        b"POST /nope HTTP/1.1
Host: test
Transfer-Encoding: chunked

",
    );
    let r = c.response().expect("answered from the head");
    assert_eq!(r.status, 404);
    let mut writer = c.stream.try_clone().expect("clone the socket");
    let chunk = format!(
        "4000
{}
",
        "x".repeat(0x4000)
    );
    // 20 chunks of 16 KiB: 320 KiB. The server may close before the last ones arrive,
    // so write errors are expected and ignored.
    let sender = thread::spawn(move || {
        for _ in 0..20 {
            if writer.write_all(chunk.as_bytes()).is_err() {
                break;
            }
        }
    });
    assert!(
        c.at_eof(),
        "the connection ends once the body outgrows the bound"
    );
    sender.join().expect("the writer thread");
    assert_serving(&server);
}

// ---------------------------------------------------------------------------------------
// HEAD
// ---------------------------------------------------------------------------------------

#[test]
fn head_response_has_length_but_no_body() {
    let server = Server::start(&[], &[]);
    let mut c = open(&server);
    c.send(b"HEAD /plaintext HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    let r = c.response_to("HEAD").expect("a response");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-length"),
        Some("13"),
        "HEAD announces GET's length"
    );
    assert_eq!(r.header("content-type"), Some("text/plain"));
    assert!(c.at_eof(), "no body bytes follow a HEAD response");
}

#[test]
fn head_response_leaves_the_next_pipelined_response_intact() {
    let server = Server::start(&[], &[]);
    let mut c = open(&server);
    c.send(
        b"HEAD /json HTTP/1.1\r\nHost: test\r\n\r\n\
          HEAD /stream?chunks=2&ms=0 HTTP/1.1\r\nHost: test\r\n\r\n\
          GET /plaintext HTTP/1.1\r\nHost: test\r\n\r\n",
    );
    let head = c.response_to("HEAD").expect("the HEAD answer");
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("content-length"),
        Some(&*JSON.len().to_string())
    );
    let head = c.response_to("HEAD").expect("the streamed HEAD answer");
    assert_eq!(head.status, 200);
    let r = c.response().expect("the GET after the HEADs");
    assert_eq!(r.status, 200);
    assert_eq!(r.body_text(), PLAINTEXT);
}

// ---------------------------------------------------------------------------------------
// The reference routes and the fields every response carries
// ---------------------------------------------------------------------------------------

#[test]
fn every_response_names_the_server_and_carries_a_date() {
    let server = Server::start(&[], &[]);
    for path in ["/plaintext", "/json", "/nope"] {
        let r = get(&server, path);
        assert_eq!(r.header("server"), Some("lastcall"), "{path}");
        let date = r
            .header("date")
            .unwrap_or_else(|| panic!("{path}: no Date"));
        // IMF-fixdate: `Sun, 06 Nov 1994 08:49:37 GMT`.
        assert_eq!(date.len(), 29, "{path}: Date {date:?}");
        assert!(date.ends_with(" GMT"), "{path}: Date {date:?}");
        assert_eq!(&date[3..5], ", ", "{path}: Date {date:?}");
    }
}

#[test]
fn plaintext_and_json_bodies_are_exact() {
    let server = Server::start(&[], &[]);
    let r = get(&server, "/plaintext");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/plain"));
    assert_eq!(r.body, PLAINTEXT.as_bytes());
    let r = get(&server, "/json");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.body, JSON.as_bytes());
}

#[test]
fn unknown_path_is_404_json() {
    let server = Server::start(&[], &[]);
    let r = get(&server, "/no/such/thing");
    assert_eq!(r.status, 404);
    assert_eq!(r.body_text(), r#"{"error":"not found"}"#);
    assert_error_json(&r, "404");
}

#[test]
fn wrong_method_on_known_path_is_405_with_allow() {
    let server = Server::start(&[], &[]);
    let mut c = open(&server);
    c.send(b"POST /health HTTP/1.1\r\nHost: test\r\n\r\n");
    assert_405(&c.response().expect("a response"), "POST /health");
    c.send(b"DELETE /json HTTP/1.1\r\nHost: test\r\n\r\n");
    assert_405(&c.response().expect("a response"), "DELETE /json");
}

#[test]
fn options_star_lists_every_method_and_options_on_a_path_its_own() {
    let server = Server::start(&[], &[]);
    let mut c = open(&server);
    for (target, allow) in [
        ("*", "GET, HEAD, POST, OPTIONS"),
        ("/json", "GET, HEAD, OPTIONS"),
        ("/echo", "POST, OPTIONS"),
    ] {
        c.send(format!("OPTIONS {target} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes());
        let r = c.response().expect("an OPTIONS answer");
        assert_eq!(r.status, 200, "{target}");
        assert_eq!(r.header("allow"), Some(allow), "{target}");
        assert_eq!(r.header("content-length"), Some("0"), "{target}");
        assert_eq!(r.header("content-type"), None, "{target}");
        assert!(r.body.is_empty() && !r.closes(), "{target}");
    }
    c.send(b"OPTIONS /nope HTTP/1.1\r\nHost: test\r\n\r\n");
    assert_eq!(c.response().expect("a 404").status, 404);
}

#[test]
fn index_names_the_server_its_version_and_routes() {
    let server = Server::start(&[], &[]);
    let r = get(&server, "/");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let body = r.body_text();
    let start = format!(
        r#"{{"name":"lastcall","version":"{}","routes":["#,
        env!("CARGO_PKG_VERSION")
    );
    assert!(body.starts_with(&start), "{body}");
    for route in ["\"GET /plaintext\"", "\"POST /echo\"", "\"GET /health\""] {
        assert!(body.contains(route), "{route} missing from {body}");
    }
}

#[test]
fn echo_answers_the_body_back_with_its_content_type() {
    let server = Server::start(&[("MAX_BODY_BYTES", "64")], &[]);
    let mut c = open(&server);
    c.send(
        b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Type: application/x-thing; v=1\r\n\
          Content-Length: 4\r\n\r\nabcd",
    );
    let r = c.response().expect("the echo");
    assert_eq!((r.status, r.body_text().as_str()), (200, "abcd"));
    assert_eq!(r.header("content-type"), Some("application/x-thing; v=1"));
    c.send(b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\n\r\n");
    let r = c.response().expect("an empty echo");
    assert_eq!((r.status, r.body.len()), (200, 0));
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    // Bounded like any body.
    c.send(b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 65\r\n\r\n");
    assert_eq!(c.response().expect("a 413").status, 413);
}

#[test]
fn work_answers_done_after_its_timer() {
    let server = Server::start(&[], &[]);
    let r = get(&server, "/work?ms=100");
    assert_eq!(r.status, 200);
    assert_eq!(r.body_text(), r#"{"done":true}"#);
}

#[test]
fn stream_sends_its_chunks_and_the_last_chunk() {
    let server = Server::start(&[], &[]);
    let mut c = open(&server);
    c.send(get_request("/stream?chunks=3&ms=20").as_bytes());
    let r = c.response().expect("a streamed response");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert_eq!(r.header("content-length"), None);
    assert!(r.complete, "the body ends with the terminating chunk");
    assert_eq!(r.body_text(), stream_body(3));
    // A finished stream leaves the connection usable.
    c.send(get_request("/plaintext").as_bytes());
    assert_eq!(
        c.response().expect("after the stream").body_text(),
        PLAINTEXT
    );
}

#[test]
fn stream_over_http10_is_close_delimited() {
    let server = Server::start(&[], &[]);
    let mut c = open(&server);
    // Even a 1.0 client asking for keep-alive gets a close-delimited stream: it cannot
    // read chunks, so the end of the body is the end of the connection.
    c.send(b"GET /stream?chunks=3&ms=20 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    let r = c.response().expect("a streamed response");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("transfer-encoding"), None, "no chunks for 1.0");
    assert_eq!(r.header("content-length"), None);
    assert!(r.closes());
    assert_eq!(r.body_text(), stream_body(3), "the body runs to EOF");
}

// A panicking handler costs its request a 500, never the server. No route of the
// reference application panics on any input, so that cannot be provoked from here:
// `tests/panic.rs` embeds the engine with a handler that does.

// ---------------------------------------------------------------------------------------
// Refused requests: each answered with its status and a JSON error, then closed
// ---------------------------------------------------------------------------------------

/// One refused request: what is sent and the status it must get.
struct Refused {
    name: &'static str,
    request: Vec<u8>,
    status: u16,
}

fn refused(name: &'static str, request: impl Into<Vec<u8>>, status: u16) -> Refused {
    Refused {
        name,
        request: request.into(),
        status,
    }
}

/// Sends each case on its own connection; checks the status, the JSON error, the
/// `Connection: close`, the EOF after it, and that a fresh connection is still served.
/// Collects every failure so one run reports them all.
fn check_refused(server: &Server, cases: &[Refused]) {
    let mut failures = Vec::new();
    for case in cases {
        let mut c = open(server);
        // A request larger than the server reads may meet a closed socket: that is fine,
        // the answer is already on its way.
        let _ = c.stream.write_all(&case.request);
        let outcome = match c.response() {
            Ok(r) => {
                let body = r.body_text();
                let json = r.header("content-type") == Some("application/json")
                    && body.starts_with(r#"{"error":""#)
                    && body.ends_with(r#""}"#);
                if r.status != case.status {
                    Err(format!("status {} (body {body:?})", r.status))
                } else if !json {
                    Err(format!(
                        "error body is not JSON {{\"error\":...}}: {body:?}"
                    ))
                } else if !r.closes() {
                    Err("no Connection: close".to_owned())
                } else if !c.at_eof() {
                    Err("connection not closed after the error".to_owned())
                } else {
                    Ok(())
                }
            }
            Err(e) => Err(format!("no response: {e:?}")),
        };
        if let Err(why) = outcome {
            failures.push(format!("{} (want {}): {why}", case.name, case.status));
        }
        let r = get(server, "/live");
        if r.status != 200 {
            failures.push(format!("{}: next connection got {}", case.name, r.status));
        }
    }
    assert!(
        failures.is_empty(),
        "refused requests misbehaved:\n  {}",
        failures.join("\n  ")
    );
}

#[test]
fn malformed_and_ambiguous_requests_are_400_and_close() {
    let server = Server::start(&[], &[]);
    let post = "POST /echo HTTP/1.1\r\nHost: test\r\n";
    check_refused(
        &server,
        &[
            refused(
                "header without colon",
                "GET /live HTTP/1.1\r\nHost: test\r\nBad Header\r\n\r\n",
                400,
            ),
            refused(
                "space before colon",
                "GET /live HTTP/1.1\r\nHost : test\r\n\r\n",
                400,
            ),
            refused("empty method", " /live HTTP/1.1\r\nHost: test\r\n\r\n", 400),
            refused(
                "double space in request line",
                "GET  /live HTTP/1.1\r\nHost: test\r\n\r\n",
                400,
            ),
            refused(
                "junk after version",
                "GET /live HTTP/1.1 x\r\nHost: test\r\n\r\n",
                400,
            ),
            refused(
                "target not origin-form",
                "GET live HTTP/1.1\r\nHost: test\r\n\r\n",
                400,
            ),
            refused(
                "CL and TE together",
                format!("{post}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
                400,
            ),
            refused(
                "conflicting Content-Length fields",
                format!("{post}Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"),
                400,
            ),
            refused(
                "conflicting Content-Length list",
                format!("{post}Content-Length: 5, 6\r\n\r\nhello!"),
                400,
            ),
            refused(
                "non-numeric Content-Length",
                format!("{post}Content-Length: 5x\r\n\r\nhello"),
                400,
            ),
            refused(
                "signed Content-Length",
                format!("{post}Content-Length: +5\r\n\r\nhello"),
                400,
            ),
            refused(
                "Content-Length overflowing u64",
                format!("{post}Content-Length: 99999999999999999999999\r\n\r\n"),
                400,
            ),
            refused(
                "bad chunk size",
                format!("{post}Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"),
                400,
            ),
            refused(
                "chunk size with bare LF",
                format!("{post}Transfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n"),
                400,
            ),
            refused(
                "chunk data without CRLF",
                format!("{post}Transfer-Encoding: chunked\r\n\r\n5\r\nhelloX0\r\n\r\n"),
                400,
            ),
            refused(
                "chunked not last",
                format!("{post}Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n"),
                400,
            ),
            refused(
                "chunked twice",
                format!("{post}Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n"),
                400,
            ),
            refused(
                "Transfer-Encoding in HTTP/1.0",
                "POST /health HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                400,
            ),
            refused(
                "obs-fold",
                "GET /live HTTP/1.1\r\nHost: test\r\nX-A: b\r\n c\r\n\r\n",
                400,
            ),
            refused(
                "bare CR in a field value",
                "GET /live HTTP/1.1\r\nHost: test\r\nX-A: b\rc\r\n\r\n",
                400,
            ),
            refused(
                "control character in a field value",
                "GET /live HTTP/1.1\r\nHost: test\r\nX-A: b\x01c\r\n\r\n",
                400,
            ),
            refused(
                "NUL in a field value",
                "GET /live HTTP/1.1\r\nHost: test\r\nX-A: b\x00c\r\n\r\n",
                400,
            ),
            refused(
                "DEL in a field value",
                "GET /live HTTP/1.1\r\nHost: test\r\nX-A: b\x7fc\r\n\r\n",
                400,
            ),
        ],
    );
    assert_serving(&server);
}

#[test]
fn request_line_with_space_in_target_is_400() {
    // An invalid request-line is a 400 (RFC 9112 §3); 505 means a well-formed version the
    // server does not support (RFC 9110 §15.6.6), and `b HTTP/1.1` is no version at all.
    let server = Server::start(&[], &[]);
    check_refused(
        &server,
        &[
            refused(
                "space inside the target",
                "GET /a b HTTP/1.1\r\nHost: test\r\n\r\n",
                400,
            ),
            refused(
                "version in lower case",
                "GET /live http/1.1\r\nHost: test\r\n\r\n",
                400,
            ),
            refused(
                "request line without a version",
                "GET /live\r\nHost: test\r\n\r\n",
                400,
            ),
        ],
    );
}

#[test]
fn http11_request_without_exactly_one_host_is_400() {
    let server = Server::start(&[], &[]);
    check_refused(
        &server,
        &[
            refused("no Host", "GET /live HTTP/1.1\r\n\r\n", 400),
            refused(
                "two Hosts",
                "GET /live HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
                400,
            ),
        ],
    );
    // HTTP/1.0 needs no Host.
    let mut c = open(&server);
    c.send(b"GET /live HTTP/1.0\r\n\r\n");
    assert_eq!(c.response().expect("a 1.0 response").status, 200);
}

#[test]
fn oversized_bodies_are_413_and_close() {
    let server = Server::start(&[("MAX_BODY_BYTES", "16")], &[]);
    let post = "POST /echo HTTP/1.1\r\nHost: test\r\n";
    check_refused(
        &server,
        &[
            refused(
                "Content-Length over the limit",
                format!("{post}Content-Length: 17\r\n\r\n{}", "x".repeat(17)),
                413,
            ),
            refused(
                "Content-Length far over the limit, no body sent",
                format!("{post}Content-Length: 1000000000\r\n\r\n"),
                413,
            ),
            refused(
                "one chunk over the limit",
                format!(
                    "{post}Transfer-Encoding: chunked\r\n\r\n11\r\n{}\r\n0\r\n\r\n",
                    "x".repeat(17)
                ),
                413,
            ),
            refused(
                "chunks adding up over the limit",
                format!(
                    "{post}Transfer-Encoding: chunked\r\n\r\n10\r\n{}\r\n1\r\nx\r\n0\r\n\r\n",
                    "x".repeat(16)
                ),
                413,
            ),
        ],
    );
    // A body of exactly the limit is taken.
    let mut c = open(&server);
    c.send(
        format!(
            "{post}Transfer-Encoding: chunked\r\n\r\n10\r\n{}\r\n0\r\n\r\n",
            "x".repeat(16)
        )
        .as_bytes(),
    );
    assert_echo(
        &c.response().expect("a response"),
        &"x".repeat(16),
        "body at the limit",
    );
}

#[test]
fn oversized_heads_are_414_or_431_and_close() {
    let server = Server::start(&[], &[]);
    let long_target = format!("/{}", "a".repeat(9 * 1024));
    let big_headers: String = (0..20)
        .map(|i| format!("X-Filler-{i}: {}\r\n", "b".repeat(1000)))
        .collect();
    let many_headers: String = (0..70).map(|i| format!("X-H{i}: v\r\n")).collect();
    check_refused(
        &server,
        &[
            refused(
                "request line over 8 KiB",
                format!("GET {long_target} HTTP/1.1\r\nHost: test\r\n\r\n"),
                414,
            ),
            refused(
                "request line over 8 KiB, never ended",
                format!("GET {long_target}"),
                414,
            ),
            refused(
                "head over MAX_HEADER_BYTES",
                format!("GET /live HTTP/1.1\r\nHost: test\r\n{big_headers}\r\n"),
                431,
            ),
            refused(
                "more header fields than allowed",
                format!("GET /live HTTP/1.1\r\nHost: test\r\n{many_headers}\r\n"),
                431,
            ),
        ],
    );
}

#[test]
fn small_max_header_bytes_is_enforced() {
    let server = Server::start(&[("MAX_HEADER_BYTES", "512")], &[]);
    check_refused(
        &server,
        &[refused(
            "head over a 512-byte limit",
            format!(
                "GET /live HTTP/1.1\r\nHost: test\r\nX-Pad: {}\r\n\r\n",
                "p".repeat(600)
            ),
            431,
        )],
    );
    // A head under the limit is fine.
    assert_serving(&server);
}

#[test]
fn unknown_methods_and_codings_are_501_and_close() {
    let server = Server::start(&[], &[]);
    check_refused(
        &server,
        &[
            refused("BREW", "BREW /pot HTTP/1.1\r\nHost: test\r\n\r\n", 501),
            refused(
                "lower-case method",
                "get /live HTTP/1.1\r\nHost: test\r\n\r\n",
                501,
            ),
            refused(
                "gzip, chunked",
                "POST /health HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
                501,
            ),
        ],
    );
}

#[test]
fn host_without_a_host_or_with_a_bad_port_is_400_and_close() {
    let server = Server::start(&[], &[]);
    let case = |name, host: &str| {
        refused(
            name,
            format!("GET /live HTTP/1.1\r\nHost:{host}\r\n\r\n"),
            400,
        )
    };
    check_refused(
        &server,
        &[
            case("empty Host", ""),
            case("blank Host", " "),
            case("port that is not digits", " example.com:abc"),
            case("port without a host", " :80"),
            case("unclosed IPv6 literal", " [::1"),
        ],
    );
    // A port is optional, and an IPv6 literal may carry one.
    for host in ["example.com", "example.com:8080", "[::1]:80"] {
        let mut c = open(&server);
        c.send(format!("GET /live HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes());
        assert_eq!(c.response().expect("served").status, 200, "{host}");
    }
}

#[test]
fn request_target_outside_the_uri_grammar_is_400_naming_the_rule() {
    let server = Server::start(&[], &[]);
    let cases: &[(&[u8], &str)] = &[
        (b"/plaintext#frag", "'#' is not allowed"),
        ("/caf\u{e9}".as_bytes(), "must be percent-encoded"),
        (b"/caf\xe9", "must be percent-encoded"),
        (b"/a%zz", "two hex digits"),
        (b"/a<b>", "outside the URI grammar"),
        (b"/a{b}", "outside the URI grammar"),
        (b"/a\x01b", "outside the URI grammar"),
    ];
    for (target, rule) in cases {
        let mut c = open(&server);
        let mut request = b"GET ".to_vec();
        request.extend_from_slice(target);
        request.extend_from_slice(b" HTTP/1.1\r\nHost: test\r\n\r\n");
        // However the bytes arrive: whole, or one at a time.
        for (i, chunk) in request
            .chunks(if target.len() % 2 == 0 { 1 } else { 4096 })
            .enumerate()
        {
            if i > 0 {
                c.stream.flush().unwrap();
            }
            c.send(chunk);
        }
        let what = String::from_utf8_lossy(target);
        let r = c.response().expect("a 400");
        assert_eq!(r.status, 400, "{what}");
        assert_error_json(&r, &what);
        assert!(r.body_text().contains(rule), "{what}: {}", r.body_text());
        assert!(r.closes() && c.at_eof(), "{what}");
    }
    // Percent-encoded bytes are fine and are routed as sent, not decoded.
    assert_eq!(get(&server, "/%70laintext").status, 404);
    assert_eq!(get(&server, "/plaintext?q=caf%C3%A9").status, 200);
}

#[test]
fn control_byte_split_from_its_head_is_400_when_it_arrives_not_408_later() {
    // With a header timeout far beyond this test's patience, a 408 would fail it.
    let server = Server::start(&[("HEADER_TIMEOUT_MS", "600000")], &[]);
    let mut c = open(&server);
    c.stream.set_nodelay(true).unwrap();
    c.send(b"G");
    // A slow client's pause between its writes, so the two arrive apart.
    thread::sleep(Duration::from_millis(50));
    c.send(b"ET/\x03");
    let r = c.response().expect("a 400 once the byte arrived");
    assert_eq!(r.status, 400);
    assert_error_json(&r, "control byte");
    assert!(r.closes() && c.at_eof());
}

#[test]
fn higher_minor_versions_of_http_1_are_served_as_1_1() {
    let server = Server::start(&[], &[]);
    for minor in [2, 5, 9] {
        let mut c = open(&server);
        c.send(format!("GET /plaintext HTTP/1.{minor}\r\nHost: test\r\n\r\n").as_bytes());
        let mut status_line = [0u8; 15];
        std::io::Read::read_exact(&mut c.stream, &mut status_line).expect("a status line");
        assert_eq!(&status_line, b"HTTP/1.1 200 OK", "HTTP/1.{minor}");
    }
    // Still 1.1 in every other way: Host is required.
    check_refused(
        &server,
        &[refused(
            "HTTP/1.2 without Host",
            "GET /live HTTP/1.2\r\n\r\n",
            400,
        )],
    );
}

#[test]
fn unknown_method_is_501_however_long_and_as_soon_as_it_is_known() {
    let server = Server::start(&[], &[]);
    let long = "X".repeat(20 * 1024);
    check_refused(
        &server,
        &[
            refused(
                "20 KiB method",
                format!("{long} / HTTP/1.1\r\nHost: test\r\n\r\n"),
                501,
            ),
            refused("9 KiB method, no line end", "Y".repeat(9 * 1024), 501),
        ],
    );
    // Eight letters are more than any method here: 501 without waiting for the line.
    for partial in ["PROPFIND", "BREW "] {
        let mut c = open(&server);
        c.send(partial.as_bytes());
        let r = c.response().expect("answered before the line ends");
        assert_eq!(r.status, 501, "{partial}");
        assert_eq!(r.body_text(), r#"{"error":"method not implemented"}"#);
    }
}

#[test]
fn unsupported_versions_are_505_and_close() {
    let server = Server::start(&[], &[]);
    check_refused(
        &server,
        &[
            refused("HTTP/2.0", "GET /live HTTP/2.0\r\nHost: test\r\n\r\n", 505),
            refused("HTTP/0.9", "GET /live HTTP/0.9\r\nHost: test\r\n\r\n", 505),
            refused("HTTP/3", "GET /live HTTP/3\r\nHost: test\r\n\r\n", 505),
        ],
    );
}

#[test]
fn unknown_expectation_is_417_and_close() {
    let server = Server::start(&[], &[]);
    check_refused(
        &server,
        &[refused(
            "Expect: something-else",
            "POST /health HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\nExpect: something-else\r\n\r\nhello",
            417,
        )],
    );
}

#[test]
fn refused_request_is_not_followed_by_its_pipelined_successor() {
    // After a framing error the next request's start cannot be trusted: it is dropped.
    let server = Server::start(&[], &[]);
    let mut c = open(&server);
    c.send(
        b"POST /health HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n\
          GET /live HTTP/1.1\r\nHost: test\r\n\r\n",
    );
    let r = c.response().expect("the 400");
    assert_eq!(r.status, 400);
    assert!(c.at_eof(), "the pipelined GET is not answered");
    assert_serving(&server);
}

// ---------------------------------------------------------------------------------------
// A client that pipelines without reading
// ---------------------------------------------------------------------------------------

#[test]
fn half_close_after_a_partial_request_still_delivers_every_answered_response() {
    // Large answers, then the start of a request the client never finishes, then its
    // FIN; the client reads slowly. That last request can never complete, but the ones
    // before it were answered: every byte of their responses must arrive before the
    // close. (The EOF usually comes while answers are still queued in the server. That
    // the unfinished head is seen while some of the last answer is still in the
    // server's own buffer needs a send buffer smaller than loopback's, as on a real
    // network early in a connection; `Conn::settle` keeps that case too.)
    const ANSWERED: usize = 16;
    const BODY: usize = 1 << 20;
    let server = Server::start(&[], &[]);
    let mut c = server.connect();
    let wire = get_request("/bytes/1048576").repeat(ANSWERED) + "GET /never HTT";
    c.write_all(wire.as_bytes()).unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let mut got = Vec::with_capacity(ANSWERED * (BODY + 256));
    let mut buf = vec![0u8; 64 * 1024];
    let start = Instant::now();
    loop {
        assert!(
            start.elapsed() < PATIENCE,
            "no EOF after {} bytes",
            got.len()
        );
        match std::io::Read::read(&mut c, &mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => panic!("read failed after {} bytes: {e}", got.len()),
        }
        thread::sleep(Duration::from_micros(500)); // a slow reader
    }
    let head = got
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head")
        + 4;
    assert!(got.starts_with(b"HTTP/1.1 200 OK\r\n"));
    assert_eq!(
        got.len(),
        ANSWERED * (head + BODY),
        "every answered response whole, nothing after them"
    );
}

#[test]
fn pipelining_client_that_never_reads_is_held_back_without_buffering() {
    // ~7 MiB of requests whose answers (~25 MiB) are far more than the socket buffers
    // hold: the server must stop reading (back-pressure) rather than buffer them.
    const REQUESTS: usize = 200_000;
    const PIECE: usize = 64 * 1024;
    let server = Server::start(&[], &[]);
    let rss_before = vm_rss_kib(server.pid());

    let c = server.connect();
    let mut writer_stream = c.try_clone().expect("clone the stream");
    let written = Arc::new(AtomicUsize::new(0));
    let progress = Arc::clone(&written);
    let wire = get_request("/plaintext").repeat(REQUESTS);
    let total = wire.len();
    let writer = thread::spawn(move || {
        for piece in wire.as_bytes().chunks(PIECE) {
            writer_stream.write_all(piece)?;
            progress.fetch_add(piece.len(), Ordering::SeqCst);
        }
        Ok::<(), std::io::Error>(())
    });

    // Wait until the writer is done or held back (no progress for a while), bounded.
    let start = Instant::now();
    let mut last = (0, Instant::now());
    loop {
        let now_written = written.load(Ordering::SeqCst);
        if now_written == total || writer.is_finished() {
            break;
        }
        if now_written != last.0 {
            last = (now_written, Instant::now());
        } else if last.1.elapsed() > Duration::from_millis(300) {
            break; // held back
        }
        assert!(
            start.elapsed() < PATIENCE,
            "writer neither finished nor stalled"
        );
        thread::sleep(Duration::from_millis(20));
    }

    eprintln!(
        "held back after {} of {total} request bytes ({:?})",
        written.load(Ordering::SeqCst),
        start.elapsed()
    );
    // While that client reads nothing, others are served at once: the loop is not stuck.
    for _ in 0..5 {
        assert_serving(&server);
    }
    if let (Some(before), Some(after)) = (rss_before, vm_rss_kib(server.pid())) {
        assert!(
            after < before + 16 * 1024,
            "resident memory grew from {before} KiB to {after} KiB with {} of {total} \
             request bytes written",
            written.load(Ordering::SeqCst)
        );
    }

    // When the client finally reads, every answer is there, whole and in order.
    let mut r = Reader::new(c);
    for i in 0..REQUESTS {
        let resp = r
            .response()
            .unwrap_or_else(|e| panic!("response {i} of {REQUESTS}: {e:?}"));
        assert_eq!(resp.status, 200, "response {i}");
        assert_eq!(resp.body, PLAINTEXT.as_bytes(), "response {i}");
    }
    writer
        .join()
        .expect("writer thread")
        .expect("all requests written");
    assert_serving(&server);
}

#[test]
fn client_that_never_stops_pipelining_cannot_starve_the_others() {
    // Requests of 60 short fields each, which take the server longer to parse than the
    // client takes to write, written for as long as the test lasts; the answers are read
    // as fast as they come. The server can always read and always write on this
    // connection, so only a bound on each turn's share lets anyone else in.
    let server = Server::start(&[], &[]);
    let flood = server.connect();
    let mut writer_stream = flood.try_clone().expect("clone the stream");
    let mut reader_stream = flood.try_clone().expect("clone the stream");
    let received = Arc::new(AtomicUsize::new(0));
    let flooding = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let request = format!(
        "GET /plaintext HTTP/1.1\r\nHost: test\r\n{}\r\n",
        "X-Field: x\r\n".repeat(60)
    );
    let batch = request.repeat(64);
    let still = Arc::clone(&flooding);
    let writer = thread::spawn(move || {
        // Ends on its own only after PATIENCE / 2, which the probe must not need.
        let start = Instant::now();
        while start.elapsed() < PATIENCE / 2 {
            if writer_stream.write_all(batch.as_bytes()).is_err() {
                break;
            }
        }
        still.store(false, Ordering::SeqCst);
    });
    let count = Arc::clone(&received);
    let reader = thread::spawn(move || {
        let mut buf = vec![0u8; 256 * 1024];
        while let Ok(n) = std::io::Read::read(&mut reader_stream, &mut buf) {
            if n == 0 {
                break;
            }
            count.fetch_add(n, Ordering::SeqCst);
        }
    });
    let start = Instant::now();
    while received.load(Ordering::SeqCst) < 1 << 20 {
        assert!(start.elapsed() < PATIENCE, "the flood never got going");
        thread::sleep(Duration::from_millis(5));
    }

    let r = get(&server, "/plaintext");
    let answered_during_flood = flooding.load(Ordering::SeqCst);
    assert_eq!(r.status, 200);
    assert!(
        answered_during_flood,
        "the probe was answered only once the flooding client stopped"
    );
    let _ = flood.shutdown(std::net::Shutdown::Both);
    writer.join().expect("writer thread");
    reader.join().expect("reader thread");
    assert_serving(&server);
}

// ---------------------------------------------------------------------------------------
// Overload
// ---------------------------------------------------------------------------------------

/// CPU time (user + system) a process has used, in clock ticks, from `/proc/<pid>/stat`.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    // Fields after the `(comm)`; utime and stime are the 12th and 13th of those.
    let after_comm = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = after_comm.split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn connection_over_max_connections_waits_in_the_backlog_without_spinning() {
    // One loop, whatever LASTCALL_TEST_WORKERS says: with several, each holds its share of
    // the limit, rounded up, and a third client would find a loop with room.
    let server = Server::start(&[("MAX_CONNECTIONS", "2")], &["--workers", "1"]);
    let mut a = open(&server);
    let mut b = open(&server);
    for client in [&mut a, &mut b] {
        client.send(get_request("/live").as_bytes());
        assert_eq!(
            client.response().expect("served under the limit").status,
            200
        );
    }

    // The third connection completes its handshake (the kernel's backlog takes it) but
    // is not accepted while two are open.
    let mut c = open(&server);
    c.send(get_request("/plaintext").as_bytes());
    let before = cpu_ticks(server.pid());
    c.stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut byte = [0u8; 1];
    let waited = c.stream.peek(&mut byte);
    assert!(
        matches!(&waited, Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)),
        "not answered while at the limit: {waited:?}"
    );
    // Half a second at the limit must not cost the server half a second of CPU.
    let spent = cpu_ticks(server.pid()) - before;
    assert!(
        spent < 20,
        "the loop spun at the limit: {spent} ticks in 0.5 s"
    );

    // One connection closes: the waiting one is accepted and answered.
    drop(a);
    c.stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let r = c.response().expect("served once a slot is free");
    assert_eq!(r.status, 200);
    assert_eq!(r.body_text(), PLAINTEXT);
    server.wait_for_log("at MAX_CONNECTIONS (2)");
}

#[test]
fn clients_beyond_max_connections_all_wait_in_the_listen_backlog() {
    // With the library's backlog of 128 the kernel drops the SYNs of the waiters past it,
    // and they retry only after a second: a connect that has not completed in 900 ms is
    // one of those. LISTEN_BACKLOG (4096 by default) holds them all.
    const WAITERS: usize = 300;
    let server = Server::start(&[("MAX_CONNECTIONS", "1")], &[]);
    let held = open(&server);
    let waiters: Vec<std::net::TcpStream> = (0..WAITERS)
        .map(|i| {
            std::net::TcpStream::connect_timeout(&server.addr, Duration::from_millis(900))
                .unwrap_or_else(|e| panic!("waiter {i} was not held in the backlog: {e}"))
        })
        .collect();
    // A slot frees: every waiter is accepted in turn and served.
    drop(held);
    for (i, stream) in waiters.into_iter().enumerate() {
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        stream.set_write_timeout(Some(PATIENCE)).unwrap();
        let mut c = Reader::new(stream);
        c.send(b"GET /live HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        let r = c.response().unwrap_or_else(|e| panic!("waiter {i}: {e:?}"));
        assert_eq!(r.status, 200, "waiter {i}");
    }
}
