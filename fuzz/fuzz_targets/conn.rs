//! The connection machine driven through its I/O seam, as the event loop would drive it,
//! with a scripted socket and a clock that only moves when the input says so.
//!
//! The input is a script. Byte 0 is the configuration: bits 0-1 the header limit (64 B
//! to 16 KiB), bits 2-3 the body limit (0 to 1 MiB), bits 4-5 how much the client reads
//! at first (everything, nothing, 7 or 100 bytes), bits 6-7 the unit of the timeouts
//! (1 s down to 30 ms). Then each op is one byte, some followed by an argument:
//!
//! ```text
//!   op % 8   what happens                                 argument
//!   0, 1, 2  the client sends bytes; socket readable      a length byte, then the bytes
//!   3        the client shuts its write side (EOF)        -
//!   4        time moves on; the timer fires               a byte: 50 ms steps, doubled
//!                                                         op >> 5 times
//!   5        time moves to the connection's deadline;     -
//!            the timer fires
//!   6        the client reads: (op >> 3) x 7 bytes more   -
//!            (0: everything from now on); socket writable
//!   7        the shutdown moves on: announced, then the   -
//!            drain, then the deadline (force_close)
//! ```
//!
//! A connection that yields is resumed, as the loop does on its next turn. At the end a
//! connection still open is flushed to a client that reads everything, and then closed at
//! the shutdown deadline.
//!
//! Checks: nothing panics; nothing is written after the write side is shut; what was
//! written reads as complete HTTP/1.1 responses, nothing after a `Connection: close` one,
//! with a cut final response only where the close reason says the answer was cut (the
//! deadline, a write timeout, a reset); a connection still open after everything was
//! read has a deadline (it cannot be forgotten); and the buffers stay bounded: no read is
//! offered more room than the input limits allow, no write more than the output
//! high-water mark plus the largest single answer.

#![no_main]

use std::time::Duration;

use lastcall::conn::{CloseReason, Conn, ConnId, Stage};
use lastcall_fuzz::harness::{Fake, Lent, resume_yielded};
use lastcall_fuzz::wire;
use libfuzzer_sys::fuzz_target;

/// `conn`'s output high-water mark: past it, no new request is taken.
const OUTPUT_HIGH_WATER: usize = 64 * 1024;
/// The largest answer a route gives from the head alone (`/bytes/:n`).
const LARGEST_ROUTE_ANSWER: usize = 1 << 20;
/// Room for a response head, a `100 Continue` and a 503 on top of a body.
const HEADS: usize = 4 * 1024;

/// Why the connection ended, as the loop would see it.
enum End {
    /// An entry point returned `Err(reason)`.
    Closed(CloseReason),
    /// The shutdown deadline: `force_close`.
    Forced(CloseReason),
}

impl End {
    /// The reason the connection closed for.
    fn reason(&self) -> CloseReason {
        match self {
            End::Closed(reason) | End::Forced(reason) => *reason,
        }
    }

    /// The close may cut a response short: the deadline, a write timeout, a reset.
    fn may_cut(&self) -> bool {
        match self {
            End::Forced(_) => true,
            End::Closed(reason) => matches!(
                reason,
                CloseReason::WriteTimeout | CloseReason::PeerReset | CloseReason::CutAtDeadline
            ),
        }
    }
}

/// The loop's side of one connection, and the script that drives it.
struct Rig<'a> {
    lent: Lent,
    script: &'a [u8],
    /// What the client sent before its EOF, to know which requests were complete.
    sent: Vec<u8>,
    eof: bool,
}

impl Rig<'_> {
    /// The next script byte, 0 once the script is over.
    fn byte(&mut self) -> u8 {
        let (&first, rest) = self.script.split_first().unwrap_or((&0, &[]));
        self.script = rest;
        first
    }

    /// Runs one op of the script. `Err` when the connection ended.
    fn step(&mut self, conn: &mut Conn<Fake>, op: u8) -> Result<(), End> {
        let result = match op % 8 {
            0..=2 => {
                let len = usize::from(self.byte()).min(self.script.len());
                let (bytes, rest) = self.script.split_at(len);
                self.script = rest;
                // After its EOF a client has nothing more to send.
                if !self.eof {
                    self.sent.extend_from_slice(bytes);
                    conn.socket_mut().unread.extend(bytes);
                }
                conn.ready(&mut self.lent.cx(), true, false)
            }
            3 => {
                self.eof = true;
                conn.socket_mut().eof = true;
                conn.ready(&mut self.lent.cx(), true, true)
            }
            4 => {
                let ms = (u64::from(self.byte()) * 50) << (op >> 5);
                self.lent.now += Duration::from_millis(ms);
                conn.timer(&mut self.lent.cx())
            }
            5 => {
                if let Some(at) = conn.deadline(&self.lent.limits, self.lent.stage) {
                    self.lent.now = self.lent.now.max(at);
                }
                conn.timer(&mut self.lent.cx())
            }
            6 => {
                conn.socket_mut().room = match op >> 3 {
                    0 => usize::MAX,
                    n => usize::from(n) * 7,
                };
                conn.ready(&mut self.lent.cx(), false, false)
            }
            _ => match self.lent.stage {
                Stage::Serving => {
                    self.lent.stage = Stage::Announced;
                    Ok(())
                }
                Stage::Announced => {
                    self.lent.stage = Stage::Draining;
                    conn.start_drain(&mut self.lent.cx())
                }
                Stage::Draining => return Err(End::Forced(conn.force_close(&mut self.lent.cx()))),
            },
        };
        result.map_err(End::Closed)?;
        resume_yielded(&mut self.lent, conn).map_err(End::Closed)
    }

    /// The end of the script: a connection still open is read out by its client, must
    /// still have a deadline, and is then closed at the shutdown deadline.
    fn finish(&mut self, conn: &mut Conn<Fake>) -> End {
        conn.socket_mut().room = usize::MAX;
        let flushed = conn
            .ready(&mut self.lent.cx(), false, false)
            .map_err(End::Closed)
            .and_then(|()| resume_yielded(&mut self.lent, conn).map_err(End::Closed));
        if let Err(end) = flushed {
            return end;
        }
        assert!(
            conn.deadline(&self.lent.limits, self.lent.stage).is_some(),
            "an open connection with nothing left to write has no deadline"
        );
        End::Forced(conn.force_close(&mut self.lent.cx()))
    }
}

fuzz_target!(|input: &[u8]| {
    let [config, script @ ..] = input else {
        return;
    };
    let room = [usize::MAX, 0, 7, 100][usize::from(config >> 4 & 3)];
    let lent = Lent::new(*config);
    let max_head = lent.limits.max_head;
    let max_body = lent.limits.max_body;
    let mut rig = Rig {
        lent,
        script,
        sent: Vec::new(),
        eof: false,
    };
    let mut conn = Conn::new(Fake::default(), rig.lent.now, ConnId(1), None);
    conn.socket_mut().room = room;

    // Each op takes a byte off the script at least: bounded by its length.
    let mut end = None;
    while end.is_none() && !rig.script.is_empty() {
        let op = rig.byte();
        end = rig.step(&mut conn, op).err();
    }
    let end = end.unwrap_or_else(|| rig.finish(&mut conn));
    conn.release(&mut rig.lent.bufs);
    assert_eq!(
        rig.lent.bufs.held(),
        0,
        "the budget still counts buffers of a released connection"
    );

    let socket = conn.socket_mut();
    let methods = wire::requests(&rig.sent, max_head);
    let read = wire::responses(&socket.written, &methods)
        .unwrap_or_else(|e| panic!("{e}\nsent: {:?}", String::from_utf8_lossy(&rig.sent)));
    assert!(
        !read.cut || end.may_cut(),
        "a response cut short, closed {:?}\nsent: {:?}\nwritten: {:?}",
        end.reason(),
        String::from_utf8_lossy(&rig.sent),
        String::from_utf8_lossy(&socket.written),
    );
    let read_bound = 2 * max_head + max_body;
    assert!(
        socket.widest_read <= read_bound,
        "a read offered {} bytes of room, over {read_bound}",
        socket.widest_read
    );
    let write_bound = OUTPUT_HIGH_WATER + LARGEST_ROUTE_ANSWER.max(max_body) + HEADS;
    assert!(
        socket.widest_write <= write_bound,
        "{} bytes pending output, over {write_bound}",
        socket.widest_write
    );
});
