//! The connection buffers, the pool that lends them, and the budget that bounds them.
//!
//! What it is: [`InBuf`] (bytes read but not yet used), [`OutBuf`] (bytes encoded but not
//! yet written, and perhaps a body written straight from static memory) and [`BufPool`],
//! owned by the event loop, which lends both to a connection only while it has a request
//! in progress or output pending, and counts every byte it has lent against one budget.
//!
//! Why lend: an idle keep-alive connection has nothing to say and nothing to hear, so it
//! holds no buffer at all; 10,000 idle connections then cost a few hundred bytes each,
//! not 10,000 × (read buffer + write buffer). A busy connection takes a buffer that some
//! other request just gave back, so steady state allocates nothing.
//!
//! Why park: a connection that waits for the rest of a request (a head trickling in)
//! keeps only the bytes it has, in a buffer their size, and gives the full one back: a
//! slowloris client costs what it sent, not a whole `MAX_HEADER_BYTES` buffer for the
//! length of its trickle. The bytes move back into a full buffer when more arrive.
//!
//! Why a budget: per-connection bounds alone multiply by the number of connections
//! (16,384 × a 1 MiB answer nobody reads is 16 GiB). The pool knows every buffer it has
//! lent, so it keeps the sum (`held`): the connection refuses new requests with 503 while
//! it is over `BUFFER_BUDGET_BYTES` (see the memory formula in the README).
//!
//! Buffers are lent boxed: a connection holds a pointer-sized `Option<Box<_>>` for each,
//! which keeps the connection itself small (see the memory figure in the README).
//!
//! Invariants: `held` is the sum of `counted` over the lent buffers — every buffer is
//! counted when lent and uncounted when given back, whatever became of it meanwhile;
//! buffers go back into the pool cleared, and oversized or parked ones are dropped rather
//! than kept, so the pool's own memory stays bounded too.

use crate::http::response::ByReference;

/// Input bytes: `data[start..end]` is unread. `data` is fully initialised once, when the
/// buffer is made, so a read can fill it without zeroing it again every time.
#[derive(Debug)]
pub struct InBuf {
    data: Vec<u8>,
    start: usize,
    end: usize,
    /// What this buffer adds to the pool's `held` while lent.
    counted: usize,
}

impl InBuf {
    pub fn with_capacity(size: usize) -> InBuf {
        InBuf {
            data: vec![0; size],
            start: 0,
            end: 0,
            counted: 0,
        }
    }

    /// The bytes received and not yet consumed.
    pub fn bytes(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.data[self.start..self.end]
    }

    pub fn len(&self) -> usize {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Drops `n` bytes from the front: a request that has been handled.
    pub fn consume(&mut self, n: usize) {
        self.start += n.min(self.len());
        if self.start == self.end {
            // Empty: start over at the front, so the next read has the whole buffer.
            self.start = 0;
            self.end = 0;
        }
    }

    /// Removes `range` (relative to `bytes()`) and closes the gap: used to drop raw chunk
    /// framing once the data in it has been moved into place.
    pub fn cut(&mut self, from: usize, to: usize) {
        let (from, to) = (self.start + from, self.start + to);
        self.data.copy_within(to..self.end, from);
        self.end -= to - from;
    }

    /// Room to read into, growing the buffer up to `limit` bytes of unread data. Returns an
    /// empty slice when the limit is reached: the caller must stop reading (back-pressure).
    #[inline] // once or twice a read: the rare work, making room, is out of line
    pub fn spare(&mut self, limit: usize) -> &mut [u8] {
        if self.end == self.data.len() {
            self.make_room(limit);
        }
        let room = limit.saturating_sub(self.len());
        let stop = self.data.len().min(self.end + room);
        &mut self.data[self.end..stop]
    }

    /// Full at the back: slide the unread bytes down over the consumed ones, and grow the
    /// buffer (up to `limit` bytes of unread data) if that freed nothing.
    #[cold]
    fn make_room(&mut self, limit: usize) {
        if self.start > 0 {
            self.data.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.data.len() && self.len() < limit {
            let grown = (self.data.len() * 2).min(limit.max(self.data.len()));
            self.data.resize(grown, 0);
        }
    }

    /// Records that `n` bytes were read into the slice `spare` returned.
    pub fn filled(&mut self, n: usize) {
        self.end += n;
    }

    fn capacity(&self) -> usize {
        self.data.len()
    }
}

/// Output bytes: `data[written..]` still has to reach the socket, and then `shared`.
#[derive(Debug, Default)]
pub struct OutBuf {
    data: Vec<u8>,
    written: usize,
    /// A large body written from static memory after `data`, never copied into it.
    shared: Shared,
    /// What this buffer adds to the pool's `held` while lent.
    counted: usize,
}

impl OutBuf {
    pub fn with_capacity(size: usize) -> OutBuf {
        OutBuf {
            data: Vec::with_capacity(size),
            ..OutBuf::default()
        }
    }

    /// The encoders append here.
    pub fn vec(&mut self) -> &mut Vec<u8> {
        &mut self.data
    }

    /// Sends `body` after what is in the buffer now. The caller appends nothing more
    /// until it is written (see `Conn::backed_up`): it would overtake the body.
    pub fn follow_with(&mut self, body: Shared) {
        debug_assert!(self.shared.is_empty(), "one shared body at a time");
        self.shared = body;
    }

    /// A shared body is still on its way: nothing may be appended.
    pub fn has_shared(&self) -> bool {
        !self.shared.is_empty()
    }

    /// The next bytes to write: the buffer's, then the shared body's.
    pub fn pending(&self) -> &[u8] {
        if self.written < self.data.len() {
            &self.data[self.written..]
        } else {
            self.shared.next()
        }
    }

    pub fn len(&self) -> usize {
        self.data.len() - self.written + self.shared.len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Records a (possibly short) write of `pending()`. A short write is normal, not an
    /// error.
    pub fn advance(&mut self, n: usize) {
        if self.written < self.data.len() {
            self.written += n;
            if self.written == self.data.len() {
                self.data.clear();
                self.written = 0;
            }
        } else {
            self.shared.advance(n);
        }
    }

    fn capacity(&self) -> usize {
        self.data.capacity()
    }
}

/// A body in static memory, shared by every connection that sends it, and written from
/// there as the socket takes it: what is left of a [`ByReference`] body.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Shared {
    unit: &'static [u8],
    /// Where in `unit` the next byte comes from.
    at: usize,
    /// Bytes still to send.
    len: usize,
}

impl From<ByReference> for Shared {
    fn from(body: ByReference) -> Shared {
        // An empty unit repeated is empty, whatever length it claims.
        let len = if body.unit.is_empty() { 0 } else { body.len };
        Shared {
            unit: body.unit,
            at: 0,
            len,
        }
    }
}

impl Shared {
    fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The longest run that can go out in one write: up to the end of `unit`.
    fn next(&self) -> &[u8] {
        let end = self.unit.len().min(self.at + self.len);
        &self.unit[self.at..end]
    }

    fn advance(&mut self, n: usize) {
        self.len -= n;
        self.at += n;
        if self.at == self.unit.len() {
            self.at = 0;
        }
    }
}

/// Lends buffers to connections, takes them back, and keeps the sum of what is lent.
#[derive(Debug)]
pub struct BufPool {
    // Boxed here too, so lending one is a pointer move, not a re-allocation.
    #[allow(clippy::vec_box)]
    inputs: Vec<Box<InBuf>>,
    #[allow(clippy::vec_box)]
    outputs: Vec<Box<OutBuf>>,
    /// Size of a fresh buffer: `MAX_HEADER_BYTES`, so any legal head fits without growing.
    size: usize,
    /// Bytes lent out now: the sum of the lent buffers' `counted`.
    held: usize,
    /// `BUFFER_BUDGET_BYTES`: past it, new requests are refused.
    budget: usize,
}

/// How many free buffers of each kind the pool keeps; beyond that they are freed. A
/// request borrows its buffers and gives them back within one call unless its client is
/// slow, so a few dozen cover a busy loop; more would only keep the peak of a burst.
const POOL_MAX: usize = 64;

impl BufPool {
    /// An empty pool whose input buffers hold `size` bytes (`MAX_HEADER_BYTES`), and that
    /// calls itself over budget past `budget` bytes lent (`BUFFER_BUDGET_BYTES`).
    pub fn new(size: usize, budget: usize) -> BufPool {
        BufPool {
            inputs: Vec::new(),
            outputs: Vec::new(),
            size,
            held: 0,
            budget,
        }
    }

    /// Lends an input buffer: a pooled one, or a new one when the pool is empty.
    #[inline]
    pub fn take_input(&mut self) -> Box<InBuf> {
        let mut buf = self
            .inputs
            .pop()
            .unwrap_or_else(|| Box::new(InBuf::with_capacity(self.size)));
        buf.counted = buf.capacity();
        self.held += buf.counted;
        buf
    }

    /// The buffer to read into: `held` itself when it is a full one, else a full one
    /// with a parked buffer's bytes moved into it.
    #[inline]
    pub fn lend_input(&mut self, held: Option<Box<InBuf>>) -> Box<InBuf> {
        match held {
            Some(buf) if buf.capacity() >= self.size => buf,
            Some(parked) => self.unpark(parked),
            None => self.take_input(),
        }
    }

    /// A parked buffer's bytes move back into a full buffer: more of its request came.
    /// What was reserved on it for a body (its head was parsed from the parked bytes)
    /// moves with them.
    #[cold]
    fn unpark(&mut self, parked: Box<InBuf>) -> Box<InBuf> {
        let mut buf = self.take_input();
        let bytes = parked.bytes();
        buf.spare(self.size)[..bytes.len()].copy_from_slice(bytes);
        buf.filled(bytes.len());
        let reserved = parked.counted - parked.capacity();
        buf.counted += reserved;
        self.held += reserved;
        self.give_input(parked);
        buf
    }

    /// A connection is about to wait with `buf` holding part of a request: when those
    /// bytes would fill at most a quarter of a fresh buffer, they move to a buffer of
    /// their own size and the full one comes back to the pool. (A quarter: a head that
    /// far along is likely to finish soon, and parking it would copy more for less.)
    pub fn park_input(&mut self, buf: Box<InBuf>) -> Box<InBuf> {
        if buf.len() * 4 > self.size || buf.capacity() < self.size {
            return buf;
        }
        let bytes = buf.bytes().to_vec();
        let len = bytes.len();
        let parked = Box::new(InBuf {
            data: bytes,
            start: 0,
            end: len,
            counted: len,
        });
        self.held += len;
        self.give_input(buf);
        parked
    }

    /// Lends an output buffer: a pooled one, or a new one when the pool is empty.
    pub fn take_output(&mut self) -> Box<OutBuf> {
        let mut buf = self
            .outputs
            .pop()
            .unwrap_or_else(|| Box::new(OutBuf::with_capacity(self.size)));
        buf.counted = buf.capacity();
        self.held += buf.counted;
        buf
    }

    /// Counts what a lent output buffer grew (or shrank) to since it was last counted.
    pub fn recount(&mut self, buf: &mut OutBuf) {
        self.held = self.held - buf.counted + buf.capacity();
        buf.counted = buf.capacity();
    }

    /// Counts `bytes` more against a lent input buffer before it grows to hold a body:
    /// refused, leaving everything as it was, when that would go past the budget.
    pub fn reserve(&mut self, buf: &mut InBuf, bytes: usize) -> bool {
        if self.held + bytes > self.budget {
            return false;
        }
        buf.counted += bytes;
        self.held += bytes;
        true
    }

    /// More is lent than the budget allows: take no new request until some comes back.
    pub fn over_budget(&self) -> bool {
        self.held >= self.budget
    }

    /// Bytes lent out now.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Takes an input buffer back, emptied, for the next connection that needs one; a
    /// parked one, or one that grew past twice its usual size, is freed instead.
    pub fn give_input(&mut self, mut buf: Box<InBuf>) {
        self.held -= buf.counted;
        let cap = buf.capacity();
        if self.inputs.len() < POOL_MAX && (self.size..=self.size * 2).contains(&cap) {
            buf.consume(buf.len());
            buf.counted = 0;
            self.inputs.push(buf);
        }
    }

    /// Takes an output buffer back, emptied; one that grew far past its usual size is
    /// freed instead, so one large answer does not pin its memory for good.
    pub fn give_output(&mut self, mut buf: Box<OutBuf>) {
        self.held -= buf.counted;
        if self.outputs.len() < POOL_MAX && buf.capacity() <= self.size * 4 {
            buf.data.clear();
            buf.written = 0;
            buf.shared = Shared::default();
            buf.counted = 0;
            self.outputs.push(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_buf_reads_consumes_and_slides() {
        let mut buf = InBuf::with_capacity(8);
        let spare = buf.spare(8);
        assert_eq!(spare.len(), 8);
        spare[..6].copy_from_slice(b"abcdef");
        buf.filled(6);
        buf.consume(4);
        assert_eq!(buf.bytes(), b"ef");
        // 2 bytes of room at the back; asking for room slides nothing yet.
        assert_eq!(buf.spare(8).len(), 2);
        buf.filled(2);
        // Full at the back: slides "ef??" down and offers the freed room.
        assert_eq!(buf.spare(8).len(), 4);
        assert_eq!(buf.len(), 4);
    }

    #[test]
    fn in_buf_grows_up_to_the_limit_and_then_refuses() {
        let mut buf = InBuf::with_capacity(4);
        let n = buf.spare(10).len();
        buf.filled(n);
        let n = buf.spare(10).len();
        buf.filled(n);
        let n = buf.spare(10).len();
        buf.filled(n);
        assert_eq!(buf.len(), 10);
        assert!(buf.spare(10).is_empty());
    }

    #[test]
    fn in_buf_cut_closes_the_gap() {
        let mut buf = InBuf::with_capacity(16);
        buf.spare(16)[..8].copy_from_slice(b"ab\r\nXYcd");
        buf.filled(8);
        buf.cut(2, 4);
        assert_eq!(buf.bytes(), b"abXYcd");
    }

    #[test]
    fn the_budget_counts_what_is_lent_whatever_becomes_of_it() {
        let mut pool = BufPool::new(64, 1024);
        let mut input = pool.take_input();
        input.spare(64)[..5].copy_from_slice(b"GET /");
        input.filled(5);
        assert_eq!(pool.held(), 64);
        // Parked: its five bytes, not its 64.
        let mut parked = pool.park_input(input);
        assert_eq!((pool.held(), parked.bytes()), (5, &b"GET /"[..]));
        // A body reserved while parked moves with the bytes when they are unparked.
        assert!(pool.reserve(&mut parked, 100));
        assert!(!pool.reserve(&mut parked, 1000), "past the budget: refused");
        assert_eq!(pool.held(), 105);
        let input = pool.lend_input(Some(parked));
        assert_eq!((pool.held(), input.bytes()), (164, &b"GET /"[..]));
        let mut output = pool.take_output();
        output.vec().extend_from_slice(&[b'x'; 200]);
        pool.recount(&mut output);
        assert!(pool.held() >= 164 + 200);
        pool.give_input(input);
        pool.give_output(output);
        assert_eq!(pool.held(), 0);
    }

    #[test]
    fn a_shared_body_follows_the_buffer_and_wraps_its_unit() {
        let mut out = OutBuf::with_capacity(8);
        out.vec().extend_from_slice(b"head:");
        out.follow_with(Shared::from(ByReference {
            unit: b"abc",
            len: 7,
        }));
        assert!(out.has_shared());
        let mut sent = Vec::new();
        while !out.is_empty() {
            // Short writes of two bytes at most, as a full socket takes them.
            let n = out.pending().len().min(2);
            sent.extend_from_slice(&out.pending()[..n]);
            out.advance(n);
        }
        assert_eq!(sent, b"head:abcabca");
        assert!(!out.has_shared());
    }

    #[test]
    fn out_buf_tracks_short_writes() {
        let mut out = OutBuf::with_capacity(8);
        out.vec().extend_from_slice(b"hello");
        out.advance(2);
        assert_eq!(out.pending(), b"llo");
        out.advance(3);
        assert!(out.is_empty());
        assert_eq!(out.len(), 0);
    }
}
