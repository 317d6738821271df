//! The connection buffers, and the pool that lends them.
//!
//! What it is: [`InBuf`] (bytes read but not yet used), [`OutBuf`] (bytes encoded but not
//! yet written) and [`BufPool`], owned by the event loop, which lends both to a
//! connection only while it has a request in progress or output pending.
//!
//! Why lend: an idle keep-alive connection has nothing to say and nothing to hear, so it
//! holds no buffer at all; 10,000 idle connections then cost a few hundred bytes each,
//! not 10,000 × (read buffer + write buffer). A busy connection takes a buffer that some
//! other request just gave back, so steady state allocates nothing.
//!
//! Buffers are lent boxed: a connection holds a pointer-sized `Option<Box<_>>` for each,
//! which keeps the connection itself small (see the memory figure in the README).
//!
//! Invariant: buffers go back into the pool cleared, and oversized ones (grown for a large
//! body) are dropped rather than kept, so the pool's memory stays bounded.

/// Input bytes: `data[start..end]` is unread. `data` is fully initialised once, when the
/// buffer is made, so a read can fill it without zeroing it again every time.
#[derive(Debug)]
pub struct InBuf {
    data: Vec<u8>,
    start: usize,
    end: usize,
}

impl InBuf {
    pub fn with_capacity(size: usize) -> InBuf {
        InBuf {
            data: vec![0; size],
            start: 0,
            end: 0,
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
    pub fn spare(&mut self, limit: usize) -> &mut [u8] {
        if self.end == self.data.len() && self.start > 0 {
            // Full at the back but with consumed space at the front: slide down.
            self.data.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.data.len() && self.len() < limit {
            let grown = (self.data.len() * 2).min(limit.max(self.data.len()));
            self.data.resize(grown, 0);
        }
        let room = limit.saturating_sub(self.len());
        let stop = self.data.len().min(self.end + room);
        &mut self.data[self.end..stop]
    }

    /// Records that `n` bytes were read into the slice `spare` returned.
    pub fn filled(&mut self, n: usize) {
        self.end += n;
    }

    fn capacity(&self) -> usize {
        self.data.len()
    }
}

/// Output bytes: `data[written..]` still has to reach the socket.
#[derive(Debug, Default)]
pub struct OutBuf {
    data: Vec<u8>,
    written: usize,
}

impl OutBuf {
    pub fn with_capacity(size: usize) -> OutBuf {
        OutBuf {
            data: Vec::with_capacity(size),
            written: 0,
        }
    }

    /// The encoders append here.
    pub fn vec(&mut self) -> &mut Vec<u8> {
        &mut self.data
    }

    pub fn pending(&self) -> &[u8] {
        &self.data[self.written..]
    }

    pub fn len(&self) -> usize {
        self.data.len() - self.written
    }

    pub fn is_empty(&self) -> bool {
        self.written == self.data.len()
    }

    /// Records a (possibly short) write. A short write is normal, not an error.
    pub fn advance(&mut self, n: usize) {
        self.written += n;
        if self.written == self.data.len() {
            self.data.clear();
            self.written = 0;
        }
    }

    fn capacity(&self) -> usize {
        self.data.capacity()
    }
}

/// Lends buffers to connections and takes them back.
#[derive(Debug)]
pub struct BufPool {
    // Boxed here too, so lending one is a pointer move, not a re-allocation.
    #[allow(clippy::vec_box)]
    inputs: Vec<Box<InBuf>>,
    #[allow(clippy::vec_box)]
    outputs: Vec<Box<OutBuf>>,
    /// Size of a fresh buffer: `MAX_HEADER_BYTES`, so any legal head fits without growing.
    size: usize,
}

/// How many free buffers of each kind the pool keeps; beyond that they are freed.
const POOL_MAX: usize = 1024;

impl BufPool {
    /// An empty pool whose input buffers hold `size` bytes (`MAX_HEADER_BYTES`).
    pub fn new(size: usize) -> BufPool {
        BufPool {
            inputs: Vec::new(),
            outputs: Vec::new(),
            size,
        }
    }

    /// Lends an input buffer: a pooled one, or a new one when the pool is empty.
    pub fn take_input(&mut self) -> Box<InBuf> {
        self.inputs
            .pop()
            .unwrap_or_else(|| Box::new(InBuf::with_capacity(self.size)))
    }

    /// Lends an output buffer: a pooled one, or a new one when the pool is empty.
    pub fn take_output(&mut self) -> Box<OutBuf> {
        self.outputs
            .pop()
            .unwrap_or_else(|| Box::new(OutBuf::with_capacity(self.size)))
    }

    /// Takes an input buffer back, emptied, for the next connection that needs one; one
    /// that grew past twice its usual size is freed instead.
    pub fn give_input(&mut self, mut buf: Box<InBuf>) {
        if self.inputs.len() < POOL_MAX && buf.capacity() <= self.size * 2 {
            buf.consume(buf.len());
            self.inputs.push(buf);
        }
    }

    /// Takes an output buffer back, emptied; one that grew far past its usual size is
    /// freed instead, so one large answer does not pin its memory for good.
    pub fn give_output(&mut self, mut buf: Box<OutBuf>) {
        if self.outputs.len() < POOL_MAX && buf.capacity() <= self.size * 4 {
            buf.data.clear();
            buf.written = 0;
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
