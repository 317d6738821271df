//! What the connection targets lend a connection in place of the event loop: a scripted
//! socket ([`Fake`]), the things `LoopCx` borrows ([`Lent`]), and the loop's rule for a
//! connection that yielded ([`resume_yielded`]).
//!
//! What it is not: the event loop. There is no poll and no clock: time is `Lent::now`,
//! moved by the caller, and readiness is whatever the caller says it is.
//!
//! Invariants: nothing here sleeps or reads the clock after `Lent::new`; every loop is
//! bounded.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lastcall::conn::{BufPool, CloseReason, Conn, ConnId, Limits, LoopCx, Socket, Stage, Timeouts};
use lastcall::handler::{Handler, Inbox};
use lastcall::stats::{Stats, Telemetry};
use mio::{Poll, Token, Waker};

/// A socket that reads scripted bytes, then `WouldBlock` (or 0 once the client has shut
/// its side), and records what is written and how much room each call was offered.
#[derive(Default)]
pub struct Fake {
    /// What the client sent and the server has not read yet.
    pub unread: VecDeque<u8>,
    /// The client shut its write side: reads past `unread` return 0.
    pub eof: bool,
    pub written: Vec<u8>,
    /// Bytes writes may still take before `WouldBlock` (`usize::MAX`: the client reads
    /// all it is sent).
    pub room: usize,
    pub write_shut: bool,
    pub widest_read: usize,
    pub widest_write: usize,
}

impl io::Read for Fake {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.widest_read = self.widest_read.max(buf.len());
        if self.unread.is_empty() && !self.eof {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        // As a kernel's queue does, a read takes all that is queued, up to the buffer (a
        // short read means "now empty" to the connection). `VecDeque`'s `Read` takes only
        // its front slice, so make that slice the whole queue first.
        self.unread.make_contiguous();
        self.unread.read(buf)
    }
}

impl io::Write for Fake {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        assert!(!self.write_shut, "a write after shutdown_write");
        self.widest_write = self.widest_write.max(buf.len());
        let n = buf.len().min(self.room);
        if n == 0 && !buf.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.room -= n;
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

/// The default timeouts in units of `unit`: a short unit lets the time steps of a short
/// script reach more of them, in more orders.
pub fn timeouts(unit: Duration) -> Timeouts {
    let [keepalive, header, body, request, write] = [5, 10, 10, 30, 10].map(|n| unit * n);
    Timeouts {
        keepalive,
        header,
        body,
        request,
        write,
    }
}

/// What the loop lends a connection, owned here: limits, buffers, the reply inbox (and
/// the poll its waker needs), the clock and the shutdown stage.
pub struct Lent {
    pub now: Instant,
    pub stage: Stage,
    pub limits: Limits,
    pub bufs: BufPool,
    inbox: Arc<Inbox>,
    telemetry: Telemetry,
    _poll: Poll,
}

impl Lent {
    /// From a configuration byte: bits 0-1 the header limit (64 B to 16 KiB), bits 2-3 the
    /// body limit (0 to 1 MiB), bits 6-7 the unit of the timeouts (1 s down to 30 ms).
    /// (Bits 4-5 are the targets' own.)
    pub fn new(config: u8) -> Lent {
        let max_head = [64, 256, 1024, 16 * 1024][usize::from(config & 3)];
        let max_body = [0, 16, 1024, 1 << 20][usize::from(config >> 2 & 3)];
        let unit = Duration::from_millis([1000, 300, 100, 30][usize::from(config >> 6)]);
        let poll = Poll::new().expect("a poll");
        let waker = Waker::new(poll.registry(), Token(0)).expect("a waker");
        Lent {
            now: Instant::now(),
            stage: Stage::Serving,
            limits: Limits {
                timeouts: timeouts(unit),
                max_head,
                max_body,
            },
            bufs: BufPool::new(max_head, 64 << 20),
            inbox: Arc::new(Inbox::new(waker)),
            telemetry: Telemetry::new(Arc::new(Stats::new(1, true)), 0, None),
            _poll: poll,
        }
    }

    /// The context of one call, with the reference routes as the handler and no database.
    pub fn cx(&mut self) -> LoopCx<'_> {
        let handler: &dyn Handler = &lastcall::routes::handle;
        LoopCx {
            now: self.now,
            token: Token(1),
            date: b"Wed, 02 Dec 2026 06:00:00 GMT",
            limits: &self.limits,
            bufs: &mut self.bufs,
            handler,
            inbox: &self.inbox,
            db: None,
            stage: self.stage,
            id: ConnId(1),
            telemetry: &mut self.telemetry,
        }
    }
}

/// The loop's next turns for a connection that stopped at its round budget.
pub fn resume_yielded(lent: &mut Lent, conn: &mut Conn<Fake>) -> Result<(), CloseReason> {
    // A yield means a full round budget of progress; the script's bytes run out.
    for _ in 0..1024 {
        if !conn.take_yielded() {
            return Ok(());
        }
        conn.resume(&mut lent.cx())?;
    }
    panic!("still yielding after 1024 turns");
}
