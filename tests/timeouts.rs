//! The connection timeouts on the wire: keep-alive idle, header read (slowloris), body
//! read, the whole request (slow body), and write. Each test starts the real binary with short timeouts and checks
//! what the client sees: a 408 with a JSON error and a close, or a silent close.
//!
//! Tests assert behaviour, not milliseconds. Upper bounds only catch hangs (`PATIENCE`);
//! the few lower bounds are half the configured timeout, which the server cannot beat
//! because it never closes before its own deadline. Sleeps appear only where the test
//! *is* a slow client (pausing between bytes); never to wait for the server.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use support::{PATIENCE, Reader, Response, Server};

/// The short timeout every test here configures, in milliseconds.
const SHORT_MS: u64 = 300;
const SHORT: Duration = Duration::from_millis(SHORT_MS);

/// A server whose read timeouts are all `SHORT`, plus any extra settings.
fn start_short(extra: &[(&str, &str)]) -> Server {
    let short = SHORT_MS.to_string();
    let mut env = vec![
        ("KEEPALIVE_TIMEOUT_MS", short.as_str()),
        ("HEADER_TIMEOUT_MS", short.as_str()),
        ("BODY_TIMEOUT_MS", short.as_str()),
    ];
    env.extend_from_slice(extra);
    Server::start(&env, &[])
}

fn open(server: &Server) -> Reader {
    Reader::new(server.connect())
}

/// A 408 with the API's JSON error shape and `Connection: close`, followed by EOF.
fn assert_408_then_close(r: &Response, c: &mut Reader, context: &str) {
    assert_eq!(r.status, 408, "{context}: status");
    assert_eq!(
        r.header("content-type"),
        Some("application/json"),
        "{context}"
    );
    let body = r.body_text();
    assert!(
        body.starts_with(r#"{"error":""#) && body.ends_with(r#""}"#),
        "{context}: body {body:?}"
    );
    assert!(r.closes(), "{context}: Connection: close");
    assert!(c.at_eof(), "{context}: EOF after the 408");
}

/// Reads until EOF or an error, bounded by `PATIENCE` and a byte cap. Returns how the
/// read side ended (`None` for EOF) and how many bytes came.
fn read_to_end(stream: &mut TcpStream, cap: usize) -> (Option<ErrorKind>, usize) {
    let start = Instant::now();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0;
    while total <= cap {
        assert!(
            start.elapsed() < PATIENCE,
            "connection neither closed nor reset"
        );
        match stream.read(&mut buf) {
            Ok(0) => return (None, total),
            Ok(n) => total += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return (Some(e.kind()), total),
        }
    }
    panic!("more than {cap} bytes: the server kept sending");
}

// ---------------------------------------------------------------------------------------
// Keep-alive idle
// ---------------------------------------------------------------------------------------

#[test]
fn idle_keep_alive_connection_is_closed_after_the_keepalive_timeout() {
    let server = start_short(&[]);
    let mut c = open(&server);
    c.send(b"GET /plaintext HTTP/1.1\r\nHost: test\r\n\r\n");
    let r = c.response().expect("a response");
    assert_eq!(r.status, 200);
    assert!(!r.closes(), "kept alive");
    let idle_from = Instant::now();
    assert!(c.at_eof(), "the server closes the idle connection");
    assert!(
        idle_from.elapsed() >= SHORT / 2,
        "closed after {:?}, long before the keep-alive timeout",
        idle_from.elapsed()
    );
    server.wait_for_log("closed (idle timeout)");
}

#[test]
fn connection_that_sends_only_an_empty_line_is_idle_not_timed_out() {
    // The CR and its LF in separate writes: the server sees a partial line first. Empty
    // lines before a request are ignored, so this connection is idle: closed silently at
    // the keep-alive timeout, with no 408 for a request it never began.
    let server = start_short(&[]);
    let mut c = open(&server);
    c.stream.set_nodelay(true).unwrap();
    c.send(b"\r");
    thread::sleep(SHORT / 6); // a slow client: the two bytes arrive apart
    c.send(b"\n");
    assert!(c.at_eof(), "closed without a response");
    server.wait_for_log("closed (idle timeout)");
}

#[test]
fn connection_that_never_sends_is_closed_after_the_keepalive_timeout() {
    let server = start_short(&[]);
    let mut c = open(&server);
    assert!(
        c.at_eof(),
        "a silent connection is closed without an answer"
    );
}

#[test]
fn keep_alive_connection_used_within_the_timeout_stays_open() {
    let server = start_short(&[]);
    let mut c = open(&server);
    // Three requests, each after a pause shorter than the keep-alive timeout, over a span
    // longer than it: the idle timer restarts after every response.
    for i in 0..3 {
        c.send(b"GET /live HTTP/1.1\r\nHost: test\r\n\r\n");
        let r = c
            .response()
            .unwrap_or_else(|e| panic!("request {i}: {e:?}"));
        assert_eq!(r.status, 200, "request {i}");
        thread::sleep(SHORT / 2);
    }
}

// ---------------------------------------------------------------------------------------
// Header read (slowloris)
// ---------------------------------------------------------------------------------------

#[test]
fn partial_head_is_answered_408_then_closed() {
    let server = start_short(&[]);
    let mut c = open(&server);
    c.send(b"GET /plaintext HTTP/1.1\r\nHost: test\r\n");
    let r = c.response().expect("a 408");
    assert_408_then_close(&r, &mut c, "partial head");
    assert_eq!(support::get(&server, "/live").status, 200, "still serving");
}

/// Writes `bytes` one every 100 ms — a third of `SHORT`, so a timer restarted by each
/// byte would never fire — until the server answers or closes. Returns how many were
/// sent. Pacing comes from the read timeout of `peek`, which waits for the answer.
fn trickle_until_answered(c: &mut Reader, bytes: &[u8]) -> usize {
    c.stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut sent = 0;
    while sent < bytes.len() {
        if c.stream.write_all(&bytes[sent..=sent]).is_err() {
            break; // closed under us: the answer should be readable
        }
        sent += 1;
        match c.stream.peek(&mut [0u8; 1]) {
            Ok(_) => break,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("peek failed after {sent} bytes: {e}"),
        }
    }
    c.stream.set_read_timeout(Some(PATIENCE)).unwrap();
    sent
}

#[test]
fn slowloris_trickling_a_head_gets_408_counted_from_the_first_byte() {
    // Keep-alive is long here so only the header timer can end this.
    let server = start_short(&[("KEEPALIVE_TIMEOUT_MS", "10000")]);
    let stream = server.connect();
    // One byte every 100 ms, a third of the header timeout: a timer restarted by each
    // byte would never fire. Pacing comes from the read timeout of `peek`.
    let mut head = b"GET /plaintext HTTP/1.1\r\nHost: test\r\nX-Slow: ".to_vec();
    head.resize(200, b'z'); // never completes
    let mut c = Reader::new(stream);
    let start = Instant::now();
    let sent = trickle_until_answered(&mut c, &head);
    assert!(
        sent < head.len(),
        "no answer after {sent} bytes over {:?}: the header timer restarts on each byte",
        start.elapsed()
    );
    let r = c.response().expect("a 408");
    assert_408_then_close(&r, &mut c, "slowloris");
    assert!(
        start.elapsed() < PATIENCE,
        "408 only after {:?}",
        start.elapsed()
    );
}

// ---------------------------------------------------------------------------------------
// Body read
// ---------------------------------------------------------------------------------------

#[test]
fn stalled_content_length_body_is_answered_408_then_closed() {
    let server = start_short(&[]);
    let mut c = open(&server);
    c.send(b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 10\r\n\r\nabc");
    let r = c.response().expect("a 408");
    assert_408_then_close(&r, &mut c, "stalled Content-Length body");
}

#[test]
fn stalled_chunked_body_is_answered_408_then_closed() {
    let server = start_short(&[]);
    let mut c = open(&server);
    c.send(b"POST /echo HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhe");
    let r = c.response().expect("a 408");
    assert_408_then_close(&r, &mut c, "stalled chunked body");
}

#[test]
fn body_that_keeps_moving_is_not_timed_out() {
    // The body timer bounds a gap, not the total: 8 bytes, one every 100 ms (800 ms in
    // all, well over the 300 ms body timeout) is a slow upload, not a stalled one.
    let server = start_short(&[]);
    let mut c = open(&server);
    c.send(b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 8\r\n\r\n");
    for byte in b"abcdefgh" {
        thread::sleep(Duration::from_millis(100));
        c.send(&[*byte]);
    }
    let r = c.response().expect("an answer to the whole request");
    assert_eq!(
        (r.status, r.body_text().as_str()),
        (200, "abcdefgh"),
        "the request was read in full"
    );
    assert!(!r.closes());
}

// ---------------------------------------------------------------------------------------
// The whole request: REQUEST_TIMEOUT_MS, from the head's first byte to the body's end
// ---------------------------------------------------------------------------------------

/// The request timeout these tests configure: twice `SHORT`, so a body that never opens
/// a gap of `SHORT` can only be stopped by it.
const REQUEST_MS: u64 = 2 * SHORT_MS;

#[test]
fn slow_body_that_never_stalls_gets_408_at_the_request_timeout() {
    let request_ms = REQUEST_MS.to_string();
    let server = start_short(&[("REQUEST_TIMEOUT_MS", &request_ms)]);
    let mut c = open(&server);
    let start = Instant::now();
    c.send(b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 100\r\n\r\n");
    let sent = trickle_until_answered(&mut c, &[b'x'; 100]);
    let r = c.response().expect("a 408");
    assert!(sent < 100, "the whole body went through");
    assert_408_then_close(&r, &mut c, "slow body");
    assert!(
        start.elapsed() >= Duration::from_millis(REQUEST_MS / 2),
        "408 before the request timeout: {:?}",
        start.elapsed()
    );
    assert_eq!(support::get(&server, "/live").status, 200, "still serving");
}

#[test]
fn slow_body_of_an_answered_request_is_closed_at_the_request_timeout() {
    // Answered from the head (404) and kept to read past its small body; a body that
    // trickles on is cut off by the same bound, with no second answer.
    let request_ms = REQUEST_MS.to_string();
    let server = start_short(&[("REQUEST_TIMEOUT_MS", &request_ms)]);
    let mut c = open(&server);
    c.send(b"POST /nope HTTP/1.1\r\nHost: test\r\nContent-Length: 100\r\n\r\n");
    let r = c.response().expect("the 404, at once");
    assert_eq!((r.status, r.closes()), (404, false));
    let start = Instant::now();
    let sent = trickle_until_answered(&mut c, &[b'x'; 100]);
    assert!(sent < 100, "the whole body went through");
    assert!(c.at_eof(), "closed without another answer");
    assert!(start.elapsed() < PATIENCE);
}

#[test]
fn header_timeout_still_bounds_the_head_under_a_longer_request_timeout() {
    let server = start_short(&[("REQUEST_TIMEOUT_MS", "60000")]);
    let mut c = open(&server);
    c.send(b"GET /live HTTP/1.1\r\nHost: te");
    let r = c.response().expect("a 408");
    assert_408_then_close(&r, &mut c, "partial head");
}

// ---------------------------------------------------------------------------------------
// Responses that take time are not read timeouts
// ---------------------------------------------------------------------------------------

#[test]
fn slow_handler_and_slow_stream_outlast_the_read_timeouts() {
    let server = start_short(&[]);
    let mut c = open(&server);
    c.send(b"GET /work?ms=600 HTTP/1.1\r\nHost: test\r\n\r\n");
    let r = c.response().expect("the slow answer");
    assert_eq!(r.status, 200);
    assert_eq!(r.body_text(), r#"{"done":true}"#);
    c.send(b"GET /stream?chunks=6&ms=100 HTTP/1.1\r\nHost: test\r\n\r\n");
    let r = c.response().expect("the slow stream");
    assert_eq!(r.status, 200);
    assert!(r.complete, "the stream was not cut");
}

// ---------------------------------------------------------------------------------------
// Write
// ---------------------------------------------------------------------------------------

/// Pipelined requests for long streams: ~270 KiB of response each, sent at once (`ms=0`),
/// far more in all than the socket buffers between server and client can hold.
fn flood_request(streams: usize) -> Vec<u8> {
    "GET /stream?chunks=10000&ms=0 HTTP/1.1\r\nHost: test\r\n\r\n"
        .repeat(streams)
        .into_bytes()
}

/// Bytes of one `/stream?chunks=10000` response body on the wire, framing included.
fn flood_bytes(streams: usize) -> usize {
    let body: usize = (1..=10_000usize)
        .map(|i| {
            let data = format!("chunk {i} of 10000\n").len();
            format!("{data:x}").len() + 2 + data + 2
        })
        .sum();
    streams * (body + 5)
}

#[test]
fn client_that_stops_reading_is_cut_after_the_write_timeout() {
    const STREAMS: usize = 40;
    let server = Server::start(&[("WRITE_TIMEOUT_MS", "300")], &[]);
    let mut stream = server.connect();
    stream.write_all(&flood_request(STREAMS)).expect("send");
    // The client reads nothing; the server's writes stop making progress.
    server.wait_for_log("closed (write timeout)");
    let (end, got) = read_to_end(&mut stream, flood_bytes(STREAMS) + 1024 * 1024);
    assert!(
        matches!(end, None | Some(ErrorKind::ConnectionReset)),
        "the connection ends in EOF or a reset, got {end:?}"
    );
    assert!(
        got < flood_bytes(STREAMS),
        "the responses were cut ({got} bytes of {})",
        flood_bytes(STREAMS)
    );
    assert_eq!(support::get(&server, "/live").status, 200, "still serving");
}

#[test]
fn client_that_pauses_reading_within_the_write_timeout_gets_every_response() {
    // The keep-alive timer is for idle connections. One whose answers are still waiting
    // to be written is not idle, however long ago its last request was handled: only the
    // write timer (here generous) may end it.
    const STREAMS: usize = 40;
    let server = start_short(&[("WRITE_TIMEOUT_MS", "10000")]);
    let mut c = open(&server);
    c.send(&flood_request(STREAMS));
    // The client pauses far past the keep-alive timeout, well within the write timeout.
    // The server needs a moment to fill the socket buffers first (about half a second
    // here); only after that does the connection sit with answers it cannot write.
    thread::sleep(SHORT * 10);
    for i in 0..STREAMS {
        let r = c.response().unwrap_or_else(|e| {
            panic!(
                "response {i} of {STREAMS}: {e:?}; server log:\n{}",
                server.log_text()
            )
        });
        assert_eq!(r.status, 200, "response {i}");
        assert!(
            r.complete,
            "response {i} cut short; server log:\n{}",
            server
                .log_text()
                .lines()
                .filter(|l| l.contains("closed"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}
