//! The connection machine without a socket: each test builds a connection in one state
//! (the per-state constructors below, smoltcp's `socket_established()` style), feeds it
//! bytes, events and time, and checks the state it reaches, what it wrote and why it
//! closed.
//!
//! The seam is [`Socket`]: a [`Fake`] whose reads return scripted bytes (then
//! `WouldBlock`, as a real non-blocking socket does) and whose writes take what they are
//! allowed to. Time is the rig's `now`, moved by hand: no test sleeps.
//!
//! Read in order: the arrows of the state diagram (`state.rs`), the drain rule in each
//! state, the deadline rule in each state, then back-pressure, yielding and lingering.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mio::{Poll, Token, Waker};

use super::state::{LINGER, LINGER_MAX};
use super::{BufPool, CloseReason, Conn, FRESH_GRACE, Limits, LoopCx, Socket, Stage, Timeouts};
use crate::handler::{Answer, Ctx, Handler, Inbox, ReplyHandle, Stream};
use crate::http::request::Request;
use crate::http::response::{self, Body, Response, Status};

/// What one read of the fake socket returns.
enum Read {
    Bytes(Vec<u8>),
    /// The client shut its write side; every later read returns 0 as well.
    Eof,
}

/// A socket that reads scripted bytes and records what is written.
#[derive(Default)]
struct Fake {
    reads: VecDeque<Read>,
    written: Vec<u8>,
    /// Bytes a write may still take before `WouldBlock`; `None`: any number.
    room: Option<usize>,
    write_shut: bool,
}

/// Like a kernel's receive queue: a read takes all the bytes queued, up to the buffer,
/// and an EOF only once the bytes before it are read.
impl io::Read for Fake {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut n = 0;
        while n < buf.len() {
            match self.reads.front_mut() {
                Some(Read::Bytes(bytes)) => {
                    let take = bytes.len().min(buf.len() - n);
                    buf[n..n + take].copy_from_slice(&bytes[..take]);
                    bytes.drain(..take);
                    n += take;
                    if bytes.is_empty() {
                        self.reads.pop_front();
                    }
                }
                Some(Read::Eof) => return Ok(n),
                None if n > 0 => return Ok(n),
                None => return Err(io::ErrorKind::WouldBlock.into()),
            }
        }
        Ok(n)
    }
}

impl io::Write for Fake {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = match self.room {
            Some(0) => return Err(io::ErrorKind::WouldBlock.into()),
            Some(room) => room.min(buf.len()),
            None => buf.len(),
        };
        self.room = self.room.map(|room| room - n);
        self.written.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Socket for Fake {
    fn shutdown_write(&mut self) -> io::Result<()> {
        self.write_shut = true;
        Ok(())
    }
}

const TIMEOUTS: Timeouts = Timeouts {
    keepalive: Duration::from_secs(5),
    header: Duration::from_secs(10),
    body: Duration::from_secs(10),
    request: Duration::from_secs(30),
    write: Duration::from_secs(10),
};

/// Everything the loop lends a connection, owned by the test: the clock included.
struct Rig {
    _poll: Poll,
    inbox: Arc<Inbox>,
    bufs: BufPool,
    limits: Limits,
    handler: Box<dyn Handler>,
    /// Reply handles `/later` promised, for the test to answer.
    promised: Arc<Mutex<Vec<ReplyHandle>>>,
    now: Instant,
    stage: Stage,
}

impl Rig {
    /// The reference routes, plus `/later` (answers through a reply handle) and
    /// `/panic-stream` (a stream whose second chunk panics).
    fn new() -> Rig {
        let poll = Poll::new().expect("a poll");
        let waker = Waker::new(poll.registry(), Token(0)).expect("a waker");
        let promised = Arc::new(Mutex::new(Vec::new()));
        let keep = Arc::clone(&promised);
        let handler = move |req: &Request<'_>, ctx: &mut Ctx<'_>| match req.path {
            "/later" => {
                let (handle, pending) = ctx.defer();
                keep.lock().unwrap().push(handle);
                Answer::Later(pending)
            }
            "/panic-stream" => Answer::Stream(Stream {
                head: Response::new(Status::OK, response::TEXT, Body::Empty),
                interval: Duration::from_millis(10),
                chunks: Box::new((0..3).map(|i| match i {
                    1 => panic!("a chunk that panics"),
                    _ => b"chunk".to_vec(),
                })),
            }),
            _ => crate::routes::handle(req, ctx),
        };
        Rig {
            _poll: poll,
            inbox: Arc::new(Inbox::new(waker)),
            bufs: BufPool::new(16 * 1024),
            limits: Limits {
                timeouts: TIMEOUTS,
                max_head: 16 * 1024,
                max_body: 1024 * 1024,
            },
            handler: Box::new(handler),
            promised,
            now: Instant::now(),
            stage: Stage::Serving,
        }
    }

    fn cx(&mut self) -> LoopCx<'_> {
        LoopCx {
            now: self.now,
            token: Token(7),
            date: b"Wed, 02 Dec 2026 06:00:00 GMT",
            limits: &self.limits,
            bufs: &mut self.bufs,
            handler: &*self.handler,
            inbox: &self.inbox,
            db: None,
            stage: self.stage,
        }
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
    }

    /// The client sends `bytes` and the socket turns readable.
    fn send(&mut self, conn: &mut Conn<Fake>, bytes: &[u8]) -> Result<(), CloseReason> {
        conn.socket.reads.push_back(Read::Bytes(bytes.to_vec()));
        conn.ready(&mut self.cx(), true, false)
    }

    /// The client shuts its write side.
    fn send_eof(&mut self, conn: &mut Conn<Fake>) -> Result<(), CloseReason> {
        conn.socket.reads.push_back(Read::Eof);
        conn.ready(&mut self.cx(), true, true)
    }

    /// The client reads everything written so far, and the socket turns writable.
    fn client_reads(&mut self, conn: &mut Conn<Fake>) -> Result<(), CloseReason> {
        conn.socket.room = None;
        conn.ready(&mut self.cx(), false, false)
    }

    fn timer(&mut self, conn: &mut Conn<Fake>) -> Result<(), CloseReason> {
        conn.timer(&mut self.cx())
    }

    fn start_drain(&mut self, conn: &mut Conn<Fake>) -> Result<(), CloseReason> {
        self.stage = Stage::Draining;
        conn.start_drain(&mut self.cx())
    }
}

/// What the client has received and not looked at yet, as text.
fn received(conn: &mut Conn<Fake>) -> String {
    String::from_utf8_lossy(&std::mem::take(&mut conn.socket.written)).into_owned()
}

/// A connection built in some state, with the rig that drives it.
type Built = (Rig, Conn<Fake>);

fn state(conn: &Conn<Fake>) -> &'static str {
    conn.state.name()
}

const GET_PLAINTEXT: &[u8] = b"GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n";
const HELLO: &str = "Hello, World!";

// ---------------------------------------------------------------------------------------
// One constructor per state, each reached the way a client would lead it there.
// ---------------------------------------------------------------------------------------

/// A connection just accepted: idle, nothing sent yet.
fn fresh() -> Built {
    let rig = Rig::new();
    let conn = Conn::new(Fake::default(), rig.now);
    (rig, conn)
}

/// A fresh connection after the client sent `wire`, asserted to be in `state` then. What
/// it wrote is left for the caller to look at.
fn reached(wire: &[u8], room: Option<usize>, want: &str) -> Built {
    let (mut rig, mut conn) = fresh();
    conn.socket.room = room;
    rig.send(&mut conn, wire).unwrap();
    assert_eq!(
        state(&conn),
        want,
        "after {:?}",
        String::from_utf8_lossy(wire)
    );
    (rig, conn)
}

/// Idle after one answered keep-alive request, its answer read by the client.
fn idle() -> Built {
    let (rig, mut conn) = reached(GET_PLAINTEXT, None, "Idle");
    assert!(received(&mut conn).ends_with(HELLO));
    (rig, conn)
}

/// Part of a request head has arrived.
fn in_head() -> Built {
    reached(b"GET /plaintext HTTP/1.1\r\nHo", None, "Head")
}

/// `/echo` asked for its body; half of it has arrived.
fn in_body() -> Built {
    let wire = b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n01234";
    reached(wire, None, "Body")
}

/// A POST to a path that takes no body: answered 404 from the head, half its body read
/// past.
fn discarding() -> Built {
    let wire = b"POST /nope HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n01234";
    let (rig, mut conn) = reached(wire, None, "Discarding");
    assert!(received(&mut conn).starts_with("HTTP/1.1 404 "));
    (rig, conn)
}

/// `/work?ms=100`: the answer waits on a loop timer.
fn waiting_on_timer() -> Built {
    reached(
        b"GET /work?ms=100 HTTP/1.1\r\nHost: t\r\n\r\n",
        None,
        "Waiting",
    )
}

/// `/later`: the answer waits on a reply handle.
fn waiting_on_reply() -> Built {
    reached(b"GET /later HTTP/1.1\r\nHost: t\r\n\r\n", None, "Waiting")
}

/// `/stream?chunks=3&ms=10`: the head is out, the chunks go out on a timer.
fn streaming() -> Built {
    let wire = b"GET /stream?chunks=3&ms=10 HTTP/1.1\r\nHost: t\r\n\r\n";
    let (rig, mut conn) = reached(wire, None, "Streaming");
    assert!(received(&mut conn).contains("Transfer-Encoding: chunked"));
    (rig, conn)
}

const GET_AND_CLOSE: &[u8] = b"GET /plaintext HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";

/// `Connection: close` answered, but the client reads nothing: the answer waits.
fn closing() -> Built {
    reached(GET_AND_CLOSE, Some(0), "Closing")
}

/// `Connection: close` answered and written: our side is shut, the client's is read.
fn lingering() -> Built {
    let (rig, mut conn) = reached(GET_AND_CLOSE, None, "Lingering");
    assert!(received(&mut conn).contains("Connection: close"));
    assert!(conn.socket.write_shut);
    (rig, conn)
}

// ---------------------------------------------------------------------------------------
// The arrows of the state diagram
// ---------------------------------------------------------------------------------------

#[test]
fn idle_becomes_head_on_a_partial_request_and_idle_again_once_answered() {
    let (mut rig, mut conn) = in_head();
    rig.send(&mut conn, b"st: t\r\n\r\n").unwrap();
    assert!(received(&mut conn).ends_with(HELLO));
    assert_eq!(state(&conn), "Idle");
}

#[test]
fn head_of_only_an_empty_line_split_in_two_is_idle_again() {
    let (mut rig, mut conn) = fresh();
    rig.send(&mut conn, b"\r").unwrap();
    assert_eq!(state(&conn), "Head");
    rig.send(&mut conn, b"\n").unwrap();
    assert_eq!(state(&conn), "Idle");
    assert!(received(&mut conn).is_empty());
}

#[test]
fn body_the_handler_asked_for_is_read_then_answered_and_idle() {
    let (mut rig, mut conn) = in_body();
    rig.send(&mut conn, b"56789").unwrap();
    assert!(received(&mut conn).ends_with("\r\n\r\n0123456789"));
    assert_eq!(state(&conn), "Idle");
}

#[test]
fn expect_continue_gets_100_only_when_the_handler_asks_for_the_body() {
    let expecting = |path: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n"
        )
    };
    let (mut rig, mut conn) = fresh();
    rig.send(&mut conn, expecting("/echo").as_bytes()).unwrap();
    assert_eq!(received(&mut conn), "HTTP/1.1 100 Continue\r\n\r\n");
    assert_eq!(state(&conn), "Body");

    // Answered from the head: a 404 and no 100, and the connection closes rather than
    // wait for a body the client may never send.
    let (mut rig, mut conn) = fresh();
    rig.send(&mut conn, expecting("/nope").as_bytes()).unwrap();
    let answer = received(&mut conn);
    assert!(answer.starts_with("HTTP/1.1 404 "), "{answer}");
    assert!(answer.contains("Connection: close"), "{answer}");
    assert_eq!(state(&conn), "Lingering");
}

#[test]
fn discarding_reads_past_the_body_and_serves_the_next_request() {
    let (mut rig, mut conn) = discarding();
    // The rest of the body looks like a request on purpose: it is body, not a request.
    rig.send(&mut conn, b"GET /").unwrap();
    assert_eq!(state(&conn), "Idle");
    rig.send(&mut conn, GET_PLAINTEXT).unwrap();
    let answer = received(&mut conn);
    assert!(
        answer.starts_with("HTTP/1.1 200 ") && answer.ends_with(HELLO),
        "{answer}"
    );
}

#[test]
fn discarding_ends_the_connection_when_the_body_outgrows_its_bound() {
    let (mut rig, mut conn) = fresh();
    rig.send(
        &mut conn,
        b"POST /nope HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n",
    )
    .unwrap();
    assert_eq!(state(&conn), "Discarding");
    let chunk = format!("10000\r\n{}\r\n", "x".repeat(0x10000));
    let mut outcome = Ok(());
    for _ in 0..8 {
        outcome = rig.send(&mut conn, chunk.as_bytes());
        if state(&conn) != "Discarding" {
            break;
        }
    }
    assert_eq!(outcome, Ok(()));
    assert_eq!(state(&conn), "Lingering");
    assert!(matches!(
        conn.state,
        super::state::State::Lingering {
            reason: CloseReason::UnreadBody,
            ..
        }
    ));
}

#[test]
fn discarding_ends_the_connection_at_the_request_timeout() {
    let (mut rig, mut conn) = discarding();
    rig.advance(TIMEOUTS.body);
    assert_eq!(rig.timer(&mut conn), Ok(()));
    assert_eq!(state(&conn), "Lingering");
    assert!(received(&mut conn).is_empty(), "no second answer");
}

#[test]
fn waiting_on_a_timer_answers_when_it_fires() {
    let (mut rig, mut conn) = waiting_on_timer();
    rig.advance(Duration::from_millis(99));
    rig.timer(&mut conn).unwrap();
    assert_eq!(state(&conn), "Waiting");
    rig.advance(Duration::from_millis(1));
    rig.timer(&mut conn).unwrap();
    assert!(received(&mut conn).ends_with(r#"{"done":true}"#));
    assert_eq!(state(&conn), "Idle");
}

#[test]
fn waiting_on_a_reply_takes_its_own_and_drops_a_stale_one() {
    let (mut rig, mut conn) = waiting_on_reply();
    let handle = rig
        .promised
        .lock()
        .unwrap()
        .pop()
        .expect("a promised reply");
    handle.send(Response::json_static(Status::OK, r#"{"late":true}"#));
    let mut replies = Vec::new();
    rig.inbox.drain_into(&mut replies);
    let (id, response) = replies.pop().expect("the reply in the inbox");
    // A reply for another request number changes nothing.
    conn.reply(&mut rig.cx(), id.seq.wrapping_add(1), response.clone())
        .unwrap();
    assert_eq!(state(&conn), "Waiting");
    conn.reply(&mut rig.cx(), id.seq, response).unwrap();
    assert!(received(&mut conn).ends_with(r#"{"late":true}"#));
    assert_eq!(state(&conn), "Idle");
}

#[test]
fn streaming_sends_a_chunk_per_tick_and_is_idle_after_the_last() {
    let (mut rig, mut conn) = streaming();
    for i in 1..=3 {
        assert_eq!(state(&conn), "Streaming");
        rig.advance(Duration::from_millis(10));
        rig.timer(&mut conn).unwrap();
        assert!(received(&mut conn).contains(&format!("chunk {i} of 3")));
    }
    assert_eq!(state(&conn), "Idle");
}

#[test]
fn streaming_whose_chunks_panic_is_cut_without_its_last_chunk() {
    let (mut rig, mut conn) = fresh();
    rig.send(&mut conn, b"GET /panic-stream HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    rig.advance(Duration::from_millis(10));
    rig.timer(&mut conn).unwrap();
    let sent = received(&mut conn);
    assert!(!sent.ends_with("0\r\n\r\n"), "{sent}");
    assert!(matches!(
        conn.state,
        super::state::State::Lingering {
            reason: CloseReason::StreamFailed,
            ..
        }
    ));
}

#[test]
fn closing_waits_for_its_answer_to_go_out_then_lingers() {
    let (mut rig, mut conn) = closing();
    rig.client_reads(&mut conn).unwrap();
    assert!(received(&mut conn).ends_with(HELLO));
    assert!(conn.socket.write_shut);
    assert_eq!(state(&conn), "Lingering");
}

#[test]
fn lingering_closes_at_the_clients_eof() {
    let (mut rig, mut conn) = lingering();
    assert_eq!(rig.send_eof(&mut conn), Err(CloseReason::Done));
}

#[test]
fn lingering_closes_once_the_client_is_quiet_for_linger() {
    let (mut rig, mut conn) = lingering();
    rig.advance(LINGER - Duration::from_millis(1));
    assert_eq!(rig.timer(&mut conn), Ok(()));
    rig.advance(Duration::from_millis(1));
    assert_eq!(rig.timer(&mut conn), Err(CloseReason::Done));
}

#[test]
fn lingering_waits_on_for_a_client_still_sending_but_not_past_linger_max() {
    let (mut rig, mut conn) = lingering();
    let mut waited = Duration::ZERO;
    // Bytes every 400 ms keep it open, each round restarting the quiet time...
    while waited + Duration::from_millis(400) < LINGER_MAX {
        rig.advance(Duration::from_millis(400));
        waited += Duration::from_millis(400);
        rig.send(&mut conn, b"more").unwrap();
        assert_eq!(rig.timer(&mut conn), Ok(()), "after {waited:?}");
    }
    // ...until its bound.
    rig.advance(LINGER_MAX - waited);
    rig.send(&mut conn, b"more").unwrap();
    assert_eq!(rig.timer(&mut conn), Err(CloseReason::Done));
}

#[test]
fn request_that_breaks_a_rule_is_rejected_and_closes_as_rejected() {
    let (mut rig, mut conn) = fresh();
    rig.send(&mut conn, b"GET /a#b HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let answer = received(&mut conn);
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert!(matches!(
        conn.state,
        super::state::State::Lingering {
            reason: CloseReason::Rejected,
            ..
        }
    ));
}

#[test]
fn byte_that_can_never_be_valid_is_answered_when_it_arrives_however_the_head_is_split() {
    for (first, rest) in [
        (&b"G"[..], &b"ET/\x03"[..]),
        (b"GET /pla", b"in\x7f"),
        (b"GET /caf", b"\xc3\xa9"),
        (b"GET / HTTP/1.1\r\nX-A: b", b"\x01c"),
    ] {
        let (mut rig, mut conn) = fresh();
        rig.send(&mut conn, first).unwrap();
        assert_eq!(state(&conn), "Head");
        rig.send(&mut conn, rest).unwrap();
        let answer = received(&mut conn);
        assert!(
            answer.starts_with("HTTP/1.1 400 "),
            "{first:?} + {rest:?}: {answer}"
        );
    }
    // A head that breaks a rule, cut off by the client's EOF before its line ends, is
    // answered before the close, as it is when it arrives in one read.
    for (first, rest) in [
        (&b"GET / HTTP/1.1\r\nX: a"[..], &b"\x00"[..]),
        (b"POST /", b"\te"),
        (b"GET / HTTP/1.1\r\nX\"", b"a: b"),
    ] {
        let (mut rig, mut conn) = fresh();
        rig.send(&mut conn, first).unwrap();
        let _ = rig.send(&mut conn, rest);
        let _ = rig.send_eof(&mut conn);
        let answer = received(&mut conn);
        assert!(
            answer.starts_with("HTTP/1.1 400 "),
            "{first:?} + {rest:?}: {answer}"
        );
    }
    // A byte valid where it stands waits for its line end, as before.
    let (mut rig, mut conn) = fresh();
    rig.send(&mut conn, b"GET / HTTP/1.1\r\nX-A: b").unwrap();
    rig.send(&mut conn, "\u{e9}\"<>".as_bytes()).unwrap();
    assert!(received(&mut conn).is_empty());
    assert_eq!(state(&conn), "Head");
}

#[test]
fn head_or_body_too_slow_is_answered_408() {
    // The head: within the header timeout, from its first byte.
    let (mut rig, mut conn) = in_head();
    rig.advance(TIMEOUTS.header);
    rig.timer(&mut conn).unwrap();
    assert!(received(&mut conn).starts_with("HTTP/1.1 408 "));

    // The body: a gap longer than the body timeout.
    let (mut rig, mut conn) = in_body();
    rig.advance(TIMEOUTS.body);
    rig.timer(&mut conn).unwrap();
    assert!(received(&mut conn).starts_with("HTTP/1.1 408 "));

    // The whole request: a body that never pauses long still ends at the request
    // timeout, counted from the head's first byte. One byte per step restarts the gap,
    // not the total.
    let (mut rig, mut conn) = fresh();
    rig.send(
        &mut conn,
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n",
    )
    .unwrap();
    let step = TIMEOUTS.body / 2;
    let mut elapsed = Duration::ZERO;
    while elapsed + step < TIMEOUTS.request {
        rig.advance(step);
        elapsed += step;
        rig.send(&mut conn, b"x").unwrap();
        rig.timer(&mut conn).unwrap();
        assert_eq!(state(&conn), "Body", "after {elapsed:?}");
    }
    rig.advance(TIMEOUTS.request - elapsed);
    rig.timer(&mut conn).unwrap();
    assert!(received(&mut conn).starts_with("HTTP/1.1 408 "));
}

#[test]
fn eof_between_requests_closes_and_inside_one_closes_mid_request() {
    let (mut rig, mut conn) = idle();
    assert_eq!(rig.send_eof(&mut conn), Err(CloseReason::PeerClosed));
    let (mut rig, mut conn) = in_head();
    assert_eq!(
        rig.send_eof(&mut conn),
        Err(CloseReason::PeerClosedMidRequest)
    );
    let (mut rig, mut conn) = discarding();
    assert_eq!(
        rig.send_eof(&mut conn),
        Err(CloseReason::PeerClosedMidRequest)
    );
}

#[test]
fn eof_inside_a_request_still_delivers_the_answers_before_it() {
    let (mut rig, mut conn) = fresh();
    conn.socket.room = Some(0);
    let mut wire = GET_PLAINTEXT.to_vec();
    wire.extend_from_slice(b"GET /json HT");
    rig.send(&mut conn, &wire).unwrap();
    assert_eq!(rig.send_eof(&mut conn), Ok(()));
    assert_eq!(state(&conn), "Closing");
    assert_eq!(
        rig.client_reads(&mut conn),
        Err(CloseReason::PeerClosedMidRequest)
    );
    assert!(received(&mut conn).ends_with(HELLO));
}

#[test]
fn idle_connection_closes_at_the_keepalive_timeout_counted_from_its_last_answer() {
    let (mut rig, mut conn) = idle();
    rig.advance(TIMEOUTS.keepalive - Duration::from_millis(1));
    assert_eq!(rig.timer(&mut conn), Ok(()));
    rig.advance(Duration::from_millis(1));
    assert_eq!(rig.timer(&mut conn), Err(CloseReason::IdleTimeout));
}

// ---------------------------------------------------------------------------------------
// The drain rule, state by state (`start_drain`)
// ---------------------------------------------------------------------------------------

#[test]
fn drain_closes_an_idle_connection_at_once() {
    let (mut rig, mut conn) = idle();
    assert_eq!(rig.start_drain(&mut conn), Err(CloseReason::IdleOnShutdown));
}

#[test]
fn drain_gives_a_fresh_connection_its_grace_then_closes_it() {
    let (mut rig, mut conn) = fresh();
    assert_eq!(rig.start_drain(&mut conn), Ok(()));
    assert_eq!(
        conn.deadline(&rig.limits, Stage::Draining),
        Some(rig.now + FRESH_GRACE)
    );
    rig.advance(FRESH_GRACE);
    assert_eq!(rig.timer(&mut conn), Err(CloseReason::IdleOnShutdown));
}

#[test]
fn drain_serves_a_request_already_in_the_socket_with_connection_close() {
    let (mut rig, mut conn) = idle();
    conn.socket
        .reads
        .push_back(Read::Bytes(GET_PLAINTEXT.to_vec()));
    assert_eq!(rig.start_drain(&mut conn), Ok(()));
    let answer = received(&mut conn);
    assert!(answer.contains("Connection: close") && answer.ends_with(HELLO));
    assert_eq!(state(&conn), "Lingering");
}

#[test]
fn drain_lets_a_request_in_progress_finish_with_connection_close() {
    // Head, body, timer and reply: each finishes its one request, then closes.
    let (mut rig, mut conn) = in_head();
    assert_eq!(rig.start_drain(&mut conn), Ok(()));
    rig.send(&mut conn, b"st: t\r\n\r\n").unwrap();
    assert!(received(&mut conn).contains("Connection: close"));
    assert_eq!(state(&conn), "Lingering");

    let (mut rig, mut conn) = in_body();
    assert_eq!(rig.start_drain(&mut conn), Ok(()));
    rig.send(&mut conn, b"56789").unwrap();
    assert!(received(&mut conn).contains("Connection: close"));
    assert_eq!(state(&conn), "Lingering");

    let (mut rig, mut conn) = waiting_on_timer();
    assert_eq!(rig.start_drain(&mut conn), Ok(()));
    assert_eq!(state(&conn), "Waiting");
    rig.advance(Duration::from_millis(100));
    rig.timer(&mut conn).unwrap();
    assert!(received(&mut conn).contains("Connection: close"));
    assert_eq!(state(&conn), "Lingering");
}

#[test]
fn drain_lets_a_stream_end_then_closes() {
    let (mut rig, mut conn) = streaming();
    assert_eq!(rig.start_drain(&mut conn), Ok(()));
    for _ in 0..3 {
        rig.advance(Duration::from_millis(10));
        rig.timer(&mut conn).unwrap();
    }
    assert!(received(&mut conn).ends_with("0\r\n\r\n"));
    assert_eq!(state(&conn), "Lingering");
}

#[test]
fn drain_closes_a_connection_reading_past_an_answered_body() {
    let (mut rig, mut conn) = discarding();
    assert_eq!(rig.start_drain(&mut conn), Ok(()));
    assert_eq!(state(&conn), "Lingering");
}

#[test]
fn drain_leaves_closing_and_lingering_connections_to_finish() {
    let (mut rig, mut conn) = closing();
    assert_eq!(rig.start_drain(&mut conn), Ok(()));
    assert_eq!(state(&conn), "Closing");
    let (mut rig, mut conn) = lingering();
    assert_eq!(rig.start_drain(&mut conn), Ok(()));
    assert_eq!(state(&conn), "Lingering");
}

// ---------------------------------------------------------------------------------------
// The deadline rule, state by state (`force_close`)
// ---------------------------------------------------------------------------------------

#[test]
fn deadline_answers_503_to_requests_whose_answer_has_not_started() {
    for (name, (mut rig, mut conn)) in [
        ("head", in_head()),
        ("body", in_body()),
        ("timer", waiting_on_timer()),
        ("reply", waiting_on_reply()),
    ] {
        rig.stage = Stage::Draining;
        assert_eq!(
            conn.force_close(&mut rig.cx()),
            CloseReason::AnsweredUnavailable,
            "{name}"
        );
        let answer = received(&mut conn);
        assert!(answer.starts_with("HTTP/1.1 503 "), "{name}: {answer}");
        assert!(answer.contains("Retry-After: 1"), "{name}");
        assert!(conn.socket.write_shut, "{name}: a lingering close");
    }
}

#[test]
fn deadline_cuts_answers_being_written_and_closes_the_rest_as_they_are() {
    let cases: [(&str, Built, CloseReason); 5] = [
        ("idle", idle(), CloseReason::IdleOnShutdown),
        ("streaming", streaming(), CloseReason::CutAtDeadline),
        (
            "closing, answer unsent",
            closing(),
            CloseReason::CutAtDeadline,
        ),
        ("lingering", lingering(), CloseReason::Done),
        ("discarding", discarding(), CloseReason::Done),
    ];
    for (name, (mut rig, mut conn), want) in cases {
        rig.stage = Stage::Draining;
        assert_eq!(conn.force_close(&mut rig.cx()), want, "{name}");
    }
    // Idle, but its last answer is still going out: cut.
    let (mut rig, mut conn) = fresh();
    conn.socket.room = Some(10);
    rig.send(&mut conn, GET_PLAINTEXT).unwrap();
    assert_eq!(state(&conn), "Idle");
    assert_eq!(conn.force_close(&mut rig.cx()), CloseReason::CutAtDeadline);
}

// ---------------------------------------------------------------------------------------
// Timers, back-pressure, yielding
// ---------------------------------------------------------------------------------------

#[test]
fn deadline_is_the_nearest_timer_of_each_state() {
    let t = TIMEOUTS;
    let (rig, conn) = idle();
    assert_eq!(
        conn.deadline(&rig.limits, Stage::Serving),
        Some(rig.now + t.keepalive)
    );
    let (rig, conn) = in_head();
    assert_eq!(
        conn.deadline(&rig.limits, Stage::Serving),
        Some(rig.now + t.header)
    );
    let (rig, conn) = in_body();
    assert_eq!(
        conn.deadline(&rig.limits, Stage::Serving),
        Some(rig.now + t.body)
    );
    let (rig, conn) = waiting_on_timer();
    assert_eq!(
        conn.deadline(&rig.limits, Stage::Serving),
        Some(rig.now + Duration::from_millis(100))
    );
    let (rig, conn) = waiting_on_reply();
    assert_eq!(conn.deadline(&rig.limits, Stage::Serving), None);
    let (rig, conn) = closing();
    assert_eq!(
        conn.deadline(&rig.limits, Stage::Serving),
        Some(rig.now + t.write)
    );
    let (rig, conn) = lingering();
    assert_eq!(
        conn.deadline(&rig.limits, Stage::Serving),
        Some(rig.now + LINGER)
    );
}

#[test]
fn pipelined_requests_wait_while_output_backs_up_and_resume_when_it_drains() {
    let (mut rig, mut conn) = fresh();
    conn.socket.room = Some(0);
    let batch = GET_PLAINTEXT.repeat(1000);
    rig.send(&mut conn, &batch).unwrap();
    let queued = conn.output.as_ref().map_or(0, |o| o.len());
    assert!(queued >= super::exchange::OUTPUT_HIGH_WATER, "{queued}");
    assert!(
        queued < 1000 * 100,
        "stopped taking requests at the high-water mark"
    );
    // The client reads: the rest is answered, every request once, in order.
    for _ in 0..20 {
        rig.client_reads(&mut conn).unwrap();
        if conn.take_yielded() {
            conn.resume(&mut rig.cx()).unwrap();
        }
    }
    assert_eq!(received(&mut conn).matches(HELLO).count(), 1000);
}

#[test]
fn client_that_never_reads_is_cut_at_the_write_timeout() {
    let (mut rig, mut conn) = closing();
    rig.advance(TIMEOUTS.write);
    assert_eq!(rig.timer(&mut conn), Err(CloseReason::WriteTimeout));
}

#[test]
fn connection_with_endless_input_yields_after_its_round_budget() {
    let (mut rig, mut conn) = fresh();
    for _ in 0..100 {
        conn.socket
            .reads
            .push_back(Read::Bytes(GET_PLAINTEXT.repeat(500)));
    }
    conn.ready(&mut rig.cx(), true, false).unwrap();
    assert!(conn.take_yielded(), "held the loop past its budget");
    let answered = received(&mut conn).matches(HELLO).count();
    assert!(answered > 0 && answered < 100 * 500, "{answered}");
    // Resumed on the loop's next turn, it carries on where it stopped.
    conn.resume(&mut rig.cx()).unwrap();
    assert!(received(&mut conn).matches(HELLO).count() > 0);
}
