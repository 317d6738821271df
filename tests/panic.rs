//! Handler code that misbehaves costs its own response, never the server: a panicking
//! handler gets a 500, a stream whose chunks panic is cut, and an absurd wait is not an
//! overflow in the loop. And a panic that does escape an event loop (one no request's
//! catch can stop) never leaves the process half-alive: the other loops drain and the
//! outcome names the loop that died.
//!
//! The reference application has none of these, so these tests embed the engine with a
//! handler of their own (everything else goes to the reference routes). Each server runs
//! on a thread of the test process and is left to end with it.

mod support;

use std::net::SocketAddr;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use lastcall::config::{Config, Workers};
use lastcall::handler::{Answer, Ctx, Stream};
use lastcall::http::request::Request;
use lastcall::http::response::{Body, Response, Status, TEXT};
use lastcall::server::{self, Outcome, Server, Started};
use support::{PATIENCE, Reader};

fn misbehaving(req: &Request<'_>, ctx: &mut Ctx<'_>) -> Answer {
    match req.path {
        "/panic" => panic!("this handler always panics"),
        // The first chunk, then a panic while the loop asks for the second.
        "/panic-stream" => Answer::Stream(Stream {
            head: Response::new(Status::OK, TEXT, Body::Empty),
            interval: Duration::ZERO,
            chunks: Box::new((1..=3).map(|i| {
                assert!(i < 2, "this stream panics at its second chunk");
                b"first chunk\n".to_vec()
            })),
        }),
        // A panic before the first chunk: the head alone went out.
        "/panic-first" => Answer::Stream(Stream {
            head: Response::new(Status::OK, TEXT, Body::Empty),
            interval: Duration::ZERO,
            chunks: Box::new(std::iter::from_fn(|| panic!("this stream panics at once"))),
        }),
        "/never" => Answer::After(
            Duration::MAX,
            Response::new(Status::OK, TEXT, Body::Static(b"never")),
        ),
        "/never-stream" => Answer::Stream(Stream {
            head: Response::new(Status::OK, TEXT, Body::Empty),
            interval: Duration::MAX,
            chunks: Box::new(std::iter::once(b"never".to_vec())),
        }),
        // A stream whose iterator panics when the loop drops it, after its last chunk:
        // outside every per-request catch, so it escapes the loop, as a bug would.
        "/panic-on-drop" => Answer::Stream(Stream {
            head: Response::new(Status::OK, TEXT, Body::Empty),
            interval: Duration::ZERO,
            chunks: Box::new(PanicsWhenDropped(Some(b"last chunk\n".to_vec()))),
        }),
        _ => lastcall::routes::handle(req, ctx),
    }
}

/// One chunk, then a panic in `drop`.
struct PanicsWhenDropped(Option<Vec<u8>>);

impl Iterator for PanicsWhenDropped {
    type Item = Vec<u8>;

    fn next(&mut self) -> Option<Vec<u8>> {
        self.0.take()
    }
}

impl Drop for PanicsWhenDropped {
    fn drop(&mut self) {
        // Never while already unwinding: that would abort the whole test process.
        if !thread::panicking() {
            panic!("this stream panics when dropped");
        }
    }
}

/// Starts the engine with `misbehaving` on a thread; returns its address.
fn start() -> SocketAddr {
    let (addr_tx, addr_rx) = mpsc::channel();
    thread::spawn(move || {
        let config = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            ..Config::default()
        };
        let signals = server::install_signal_handlers().unwrap();
        let Ok(Started::Ready(server)) = Server::bind(&config, misbehaving, signals) else {
            panic!("server did not start");
        };
        addr_tx.send(server.local_addr()).unwrap();
        let _ = server.run();
    });
    addr_rx.recv_timeout(PATIENCE).expect("server address")
}

/// Starts the engine with `misbehaving` and `workers` loops on a thread; returns its
/// address and where `run`'s result will arrive.
fn start_loops(workers: usize) -> (SocketAddr, mpsc::Receiver<Outcome>) {
    let (addr_tx, addr_rx) = mpsc::channel();
    let (outcome_tx, outcome_rx) = mpsc::channel();
    thread::spawn(move || {
        let config = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            workers: Workers::Count(workers),
            ..Config::default()
        };
        let signals = server::install_signal_handlers().unwrap();
        let Ok(Started::Ready(server)) = Server::bind(&config, misbehaving, signals) else {
            panic!("server did not start");
        };
        addr_tx.send(server.local_addr()).unwrap();
        let _ = outcome_tx.send(server.run().expect("the coordinator's poll"));
    });
    let addr = addr_rx.recv_timeout(PATIENCE).expect("server address");
    (addr, outcome_rx)
}

fn connect(addr: SocketAddr) -> Reader {
    let stream = std::net::TcpStream::connect_timeout(&addr, PATIENCE).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    Reader::new(stream)
}

/// The server still answers a new client.
fn assert_alive(addr: SocketAddr) {
    let mut c = connect(addr);
    c.send(b"GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.response().expect("the server still answers");
    assert_eq!((r.status, r.body_text().as_str()), (200, "Hello, World!"));
}

#[test]
fn handler_panic_costs_one_500_and_the_next_request_is_served() {
    let addr = start();
    let mut client = connect(addr);
    // Both requests in one write: the panic must not lose the pipelined request behind it.
    client
        .send(b"GET /panic HTTP/1.1\r\nHost: t\r\n\r\nGET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n");
    let failed = client.response().expect("a 500 for the panicking request");
    assert_eq!(failed.status, 500);
    assert_eq!(failed.body_text(), r#"{"error":"internal error"}"#);
    let next = client
        .response()
        .expect("the next request on the same connection");
    assert_eq!(next.status, 200);
    assert_eq!(next.body_text(), "Hello, World!");
}

#[test]
fn stream_that_panics_is_cut_without_its_last_chunk_and_the_server_goes_on() {
    let addr = start();
    let mut c = connect(addr);
    c.send(b"GET /panic-stream HTTP/1.1\r\nHost: t\r\n\r\n");
    // The head and the first chunk went out; the body never ends properly, so the
    // client sees a truncated response, then the close.
    let cut = c.response().expect("the head and the first chunk");
    assert_eq!(
        (cut.status, cut.body_text().as_str()),
        (200, "first chunk\n")
    );
    assert!(
        !cut.complete,
        "a stream that panicked must not look complete"
    );
    assert!(c.at_eof(), "then the connection closes");
    let mut c = connect(addr);
    c.send(b"GET /panic-first HTTP/1.1\r\nHost: t\r\n\r\n");
    let cut = c.response().expect("the head");
    assert_eq!((cut.status, cut.body.len(), cut.complete), (200, 0, false));
    assert!(c.at_eof(), "then the connection closes");
    assert_alive(addr);
}

#[test]
fn absurdly_long_waits_do_not_overflow_the_loop() {
    let addr = start();
    let mut waits = connect(addr);
    waits.send(b"GET /never HTTP/1.1\r\nHost: t\r\n\r\n");
    let mut streams = connect(addr);
    streams.send(b"GET /never-stream HTTP/1.1\r\nHost: t\r\n\r\n");
    // Both wait (a year, as good as never); the loop that holds them goes on.
    assert_alive(addr);
    drop((waits, streams));
    assert_alive(addr);
}

#[test]
fn loop_that_panics_is_named_and_the_other_loops_drain_and_exit_1() {
    let (addr, outcome) = start_loops(2);
    let mut c = connect(addr);
    c.send(b"GET /panic-on-drop HTTP/1.1\r\nHost: t\r\n\r\n");
    // Whatever reached the client before its loop died, the server must end by itself:
    // the other loop drains (it has nothing to drain) and `run` returns.
    let _ = c.response();
    let outcome = outcome
        .recv_timeout(PATIENCE)
        .expect("the server ended instead of living on with one loop");
    assert!(
        matches!(outcome, Outcome::LoopDied { index } if index < 2),
        "{outcome:?}"
    );
    assert_eq!(outcome.exit_code(), 1);
    let refused = std::net::TcpStream::connect_timeout(&addr, PATIENCE);
    assert!(refused.is_err(), "the listener is closed");
}
