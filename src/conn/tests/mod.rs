//! The connection machine without a socket: each test builds a connection in one state
//! (the per-state constructors below, smoltcp's `socket_established()` style), feeds it
//! bytes, events and time, and checks the state it reaches, what it wrote and why it
//! closed.
//!
//! The seam is [`Socket`]: a [`Fake`] whose reads return scripted bytes (then
//! `WouldBlock`, as a real non-blocking socket does) and whose writes take what they are
//! allowed to. Time is the rig's `now`, moved by hand: no test sleeps.
//!
//! This file holds the rig and the constructors; read the tests in order: `arrows.rs` (the
//! arrows of the state diagram in `state.rs`), `drain.rs` (the drain rule in each state),
//! `deadline.rs` (the deadline rule in each state), `flow.rs` (timers, back-pressure,
//! yielding), `memory.rs` (what a waiting connection holds, and the budget).

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mio::{Poll, Token, Waker};

use super::state::{LINGER, LINGER_MAX};
use super::{
    BufPool, CloseReason, Conn, ConnId, FRESH_GRACE, Limits, LoopCx, Socket, Stage, Timeouts,
};
use crate::handler::{Answer, Ctx, Handler, Inbox, ReplyHandle, Stream};
use crate::http::request::Request;
use crate::http::response::{self, Body, Response, Status};
use crate::stats::{Stats, Telemetry};

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
    telemetry: Telemetry,
}

impl Rig {
    /// The reference routes, plus `/later` (answers through a reply handle) and
    /// `/panic-stream` (a stream whose second chunk panics).
    fn new() -> Rig {
        let stats = Stats::new(1, true);
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
            bufs: BufPool::new(16 * 1024, 64 << 20),
            limits: Limits {
                timeouts: TIMEOUTS,
                max_head: 16 * 1024,
                max_body: 1024 * 1024,
            },
            handler: Box::new(handler),
            promised,
            now: Instant::now(),
            stage: Stage::Serving,
            telemetry: Telemetry::new(Arc::new(stats), 0, None),
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
            telemetry: &mut self.telemetry,
            id: ConnId(7),
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

/// Why a lingering connection will close, once its lingering ends; `None` in any other
/// state.
fn lingering_for(conn: &Conn<Fake>) -> Option<CloseReason> {
    match conn.state {
        super::state::State::Lingering { reason, .. } => Some(reason),
        _ => None,
    }
}

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
    let conn = Conn::new(Fake::default(), rig.now, ConnId(1), None);
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

mod arrows;
mod deadline;
mod drain;
mod flow;
mod memory;
