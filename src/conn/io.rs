//! The socket side of a connection: reading into the lent input buffer, writing the lent
//! output buffer, and reading to throw away during a lingering close.
//!
//! What it is: [`Socket`], the seam between a connection and its socket (a
//! `mio::net::TcpStream` in the server, a scripted fake in the unit tests), the
//! `ReadSide` the edge-triggered events leave us to remember, and the three loops that
//! follow mio's rules: read and write until `WouldBlock` (or the round budget), retry on
//! `Interrupted`, treat a short write as progress and keep the unsent bytes.
//!
//! What it is not: it decides nothing about requests or states; a failed read or write is
//! a `CloseReason` for the caller to act on.

use std::io::{self, Read, Write};
use std::net::Shutdown;

use mio::net::TcpStream;

use super::state::State;
use super::{CloseReason, Conn, LoopCx, ROUNDS_PER_CALL};

/// What a connection needs of its socket: bytes in, bytes out, and a way to shut its write
/// side (the FIN of a lingering close, RFC 9112 §9.6). The seam that lets the connection
/// logic run in tests without a socket.
pub trait Socket: Read + Write {
    /// Shuts the write side; reading goes on.
    fn shutdown_write(&mut self) -> io::Result<()>;
}

impl Socket for TcpStream {
    fn shutdown_write(&mut self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
}

/// What we know about the socket's read side. Events are edge-triggered: after a
/// readable event we must read until the socket is drained, and we must remember that we
/// stopped early (buffer full, back-pressure) because no new event will remind us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ReadSide {
    /// There may be bytes to read. A read that returns less than it asked for has
    /// emptied the kernel's queue, so it counts as empty without a second read to see
    /// `WouldBlock` (nginx does the same): anything arriving later raises a new edge.
    Ready,
    /// The event also said the peer hung up: its FIN is queued behind the data and raises
    /// no further edge, so read until the read returns 0, short reads or not.
    ReadyUntilEof,
    /// The socket's queue is empty: wait for an event.
    Empty,
    /// The client shut its write side (read returned 0).
    Eof,
}

/// What one round of discarding input found.
pub(super) enum Discarded {
    /// The socket was empty.
    Nothing,
    /// Some bytes, then the socket was empty.
    Some,
    /// EOF (or an error): the client's side is done.
    Finished,
}

impl<S: Socket> Conn<S> {
    /// Reads into the input buffer until `WouldBlock`, EOF, or the buffer's limit.
    /// Returns whether any byte was read.
    #[inline(always)] // one round of `drive`: kept in its loop, as before the split into files
    pub(super) fn fill(&mut self, cx: &mut LoopCx<'_>) -> Result<bool, CloseReason> {
        if !self.state.reads_input()
            || !matches!(self.read, ReadSide::Ready | ReadSide::ReadyUntilEof)
        {
            return Ok(false);
        }
        let limit = match &mut self.state {
            State::Body(b) => {
                // Close the gap of spent chunk framing first, so it does not count
                // against the limit (see `BodyState`).
                let body_end = b.head.len + b.decoded;
                if let Some(input) = self.input.as_mut() {
                    input.cut(body_end, b.raw);
                }
                b.raw = body_end;
                b.head.len + cx.limits.max_body + cx.limits.max_head
            }
            _ => cx.limits.max_head,
        };
        let lent = cx.bufs.lend_input(self.input.take());
        let input = self.input.insert(lent);
        let mut any = false;
        loop {
            let spare = input.spare(limit);
            let asked = spare.len();
            if asked == 0 {
                break; // full: the parser will decide (431/413) or make room
            }
            match self.socket.read(spare) {
                Ok(0) => {
                    self.read = ReadSide::Eof;
                    break;
                }
                Ok(n) => {
                    input.filled(n);
                    cx.telemetry.cells.received.add(n as u64);
                    any = true;
                    if n < asked && self.read == ReadSide::Ready {
                        self.read = ReadSide::Empty;
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.read = ReadSide::Empty;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::debug!("{}: read failed: {e}", cx.id);
                    return Err(CloseReason::PeerReset);
                }
            }
        }
        Ok(any)
    }

    /// Writes pending output until `WouldBlock`. Returns whether any byte was written.
    #[inline(always)] // one round of `drive`: kept in its loop, as before the split into files
    pub(super) fn flush(&mut self, cx: &mut LoopCx<'_>) -> Result<bool, CloseReason> {
        let Some(out) = self.output.as_mut() else {
            return Ok(false);
        };
        // Everything encoded since the last flush is counted before it waits on the
        // client: the budget sees the buffer at its largest.
        cx.bufs.recount(out);
        let mut wrote = false;
        while !out.is_empty() {
            match self.socket.write(out.pending()) {
                Ok(0) => return Err(CloseReason::PeerReset),
                Ok(n) => {
                    out.advance(n);
                    cx.telemetry.cells.sent.add(n as u64);
                    wrote = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::debug!("{}: write failed: {e}", cx.id);
                    return Err(CloseReason::PeerReset);
                }
            }
        }
        if out.is_empty() {
            if let Some(out) = self.output.take() {
                cx.bufs.give_output(out);
            }
            self.write_since = None;
            // The keep-alive idle time starts when the last response is out, not when
            // it was queued.
            if let State::Idle { since } = &mut self.state {
                *since = cx.now;
            }
        } else if wrote || self.write_since.is_none() {
            self.write_since = Some(cx.now);
        }
        Ok(wrote)
    }

    /// Reads and throws away whatever the socket holds, until `WouldBlock`, EOF or an
    /// error — or `ROUNDS_PER_CALL` full buffers: then it yields (see `drive`), and at the
    /// shutdown deadline the connection closes with those bytes unread.
    pub(super) fn discard_input(&mut self, cx: &mut LoopCx<'_>) -> Discarded {
        let mut scratch = self.input.take().unwrap_or_else(|| cx.bufs.take_input());
        let mut outcome = Discarded::Nothing;
        let mut rounds = 0;
        loop {
            if rounds == ROUNDS_PER_CALL {
                self.yielded = true;
                break;
            }
            rounds += 1;
            scratch.consume(scratch.len());
            match self.socket.read(scratch.spare(usize::MAX)) {
                Ok(0) => {
                    outcome = Discarded::Finished;
                    break;
                }
                Ok(n) => {
                    cx.telemetry.cells.received.add(n as u64);
                    outcome = Discarded::Some;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    outcome = Discarded::Finished;
                    break;
                }
            }
        }
        scratch.consume(scratch.len());
        cx.bufs.give_input(scratch);
        outcome
    }
}
