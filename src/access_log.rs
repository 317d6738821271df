//! The access log: one line per request, formatted on the event loop, written off it.
//!
//! What it is: an [`AccessLog`] per event loop, which formats each [`Entry`] into the
//! loop's batch (nginx's `combined` format, or one JSON object a line), and hands the
//! batch to one writer thread once it is full enough or old enough; and [`Writer`], that thread,
//! which writes batches to standard output (or any `Write`) in the order they come.
//!
//! Why a thread and a bounded queue: writing to standard output can block (a pipe to a
//! slow log shipper, a full disk, a terminal scrolled back), and the event loop must never
//! block. So the loop only formats into memory and offers the batch with `try_send`; when
//! the queue is full, the batch is dropped and its lines counted ([`AccessLog::dropped`]),
//! never waited for. A request is never slower because its line could not be written.
//!
//! Why batches: a hand-over wakes the writer thread, which costs more than formatting a
//! line, so it happens once per `FLUSH_BYTES` of lines or `FLUSH_AFTER` (nginx's
//! `buffer=` and `flush=`), not per request; the writer makes one `write` call for the
//! batch. A line reaches the output at most `FLUSH_AFTER` late (and at once at the exit).
//!
//! Invariant: lines of one loop reach the output in the order the requests were answered;
//! lines of different loops interleave only at batch boundaries, never mid-line.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::http::response::{push_decimal, push_json_string};

/// How each line is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// nginx's `combined`: `addr - - [time] "request" status bytes "referer" "agent"`, so
    /// every tool that reads nginx logs reads these.
    Combined,
    /// One JSON object a line, for log pipelines that parse fields by name.
    Json,
}

/// What is known of one answered request when its line is written.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    /// When it was answered, as the loop's cached `Date` value (IMF-fixdate, one-second
    /// resolution, as nginx's `$time_local`).
    pub date: &'a [u8],
    /// The client's address.
    pub remote: Option<&'a Peer>,
    /// The method, as sent.
    pub method: &'a str,
    /// The request target, as sent.
    pub target: &'a str,
    /// `HTTP/1.0` or `HTTP/1.1`.
    pub version: &'a str,
    /// The status sent.
    pub status: u16,
    /// Body bytes sent.
    pub bytes: u64,
    /// From the head's first byte to the answer's encoding.
    pub duration: Duration,
    /// The connection's id (`c17`).
    pub conn: u64,
    /// `Referer`, when sent (raw bytes: a field may hold any visible byte).
    pub referer: Option<&'a [u8]>,
    /// `User-Agent`, when sent.
    pub user_agent: Option<&'a [u8]>,
    /// How the connection ended, when this request was its last.
    pub ended: Option<&'a str>,
}

/// A client's address as the lines write it, formatted once per connection rather than
/// once per request: `ip` for the combined format (`::1`, as nginx's `$remote_addr`), and
/// `addr` with the port for JSON (`[::1]:50312`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    ip: String,
    addr: String,
}

impl Peer {
    /// The client at `addr`.
    pub fn new(addr: SocketAddr) -> Peer {
        Peer {
            ip: addr.ip().to_string(),
            addr: addr.to_string(),
        }
    }
}

/// Batches that may wait for the writer before the next one is dropped: at one batch per
/// loop turn, a few hundred turns of output.
const QUEUE: usize = 256;

/// One loop's access log: its current batch, and the queue to the writer.
#[derive(Debug)]
pub struct AccessLog {
    format: Format,
    batch: Vec<u8>,
    lines: u64,
    queue: SyncSender<Batch>,
    dropped: Arc<AtomicU64>,
    /// Where the writer sends this log's batches back once written, emptied, to be filled
    /// again: a busy log allocates no buffer per turn (a channel per log, so no lock is
    /// shared between the loops and the writer).
    back: SyncSender<Vec<u8>>,
    returned: Receiver<Vec<u8>>,
    /// The time of the last line, formatted, and the `Date` value it was made from: the
    /// value changes once a second, the lines far more often.
    time: Time,
    /// When the oldest line of the batch was written, by the loop's clock.
    first_at: Option<Instant>,
}

/// A batch of lines, and where to return its buffer.
type Batch = (Vec<u8>, SyncSender<Vec<u8>>);

/// The current second in a line's format, and the `Date` it came from.
#[derive(Debug, Default)]
struct Time {
    date: Vec<u8>,
    text: Vec<u8>,
}

/// A batch's buffer is made for this many bytes: a few dozen lines before it grows.
const BATCH_BYTES: usize = 8 * 1024;

/// A batch goes to the writer once it holds this much (nginx's `access_log ... buffer=`)...
const FLUSH_BYTES: usize = 4 * 1024;

/// ... or once its first line has waited this long (nginx's `flush=`). Handing a batch
/// over wakes the writer thread, which costs more than formatting a line: a client that
/// sends one request at a time would pay it for every request. A line is at most this late.
const FLUSH_AFTER: Duration = Duration::from_millis(10);

/// The writer thread, and the count of dropped lines every loop adds to.
#[derive(Debug)]
pub struct Writer {
    queue: SyncSender<Batch>,
    dropped: Arc<AtomicU64>,
    thread: JoinHandle<()>,
}

impl Writer {
    /// Starts the thread that writes batches to `out` until every [`AccessLog`] made from
    /// it is gone and [`Writer::finish`] is called.
    pub fn start(out: impl Write + Send + 'static) -> std::io::Result<Writer> {
        let (queue, batches) = sync_channel(QUEUE);
        let thread = std::thread::Builder::new()
            .name("lastcall-access-log".into())
            .spawn(move || write_all(batches, out))?;
        Ok(Writer {
            queue,
            dropped: Arc::new(AtomicU64::new(0)),
            thread,
        })
    }

    /// An access log for one loop, writing through this thread.
    pub fn log(&self, format: Format) -> AccessLog {
        // Room for every batch that can be out at once: the writer never waits to return one.
        let (back, returned) = sync_channel(QUEUE + 1);
        AccessLog {
            format,
            batch: Vec::with_capacity(BATCH_BYTES),
            lines: 0,
            queue: self.queue.clone(),
            dropped: Arc::clone(&self.dropped),
            back,
            returned,
            time: Time::default(),
            first_at: None,
        }
    }

    /// The count of lines dropped because the output did not keep up, for `/metrics` to
    /// read.
    pub fn dropped_counter(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.dropped)
    }

    /// Waits until every batch queued so far is written (the loops' logs must be gone,
    /// or flushed, first), for at most `bound`: the last step of a shutdown. An output
    /// that does not take the lines by then (a stalled pipe) loses them rather than hold
    /// the exit; the thread is left to the process's end. Returns the lines dropped.
    pub fn finish(self, bound: Duration) -> u64 {
        drop(self.queue);
        let until = std::time::Instant::now() + bound;
        while !self.thread.is_finished() && std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        if self.thread.is_finished() {
            let _ = self.thread.join();
        }
        self.dropped.load(Ordering::Relaxed)
    }
}

/// The writer thread's body: one `write_all` per batch. A failing output (closed pipe)
/// ends the thread; batches offered later are then counted as dropped.
fn write_all(batches: Receiver<Batch>, mut out: impl Write) {
    for (mut batch, back) in batches {
        if out.write_all(&batch).and_then(|()| out.flush()).is_err() {
            return;
        }
        batch.clear();
        // Its log may be gone (its loop ended): the buffer is then freed here.
        let _ = back.try_send(batch);
    }
}

impl AccessLog {
    /// Adds one request's line to the batch.
    pub fn record(&mut self, entry: &Entry<'_>) {
        if self.time.date != entry.date {
            self.time.date.clear();
            self.time.date.extend_from_slice(entry.date);
            self.time.text.clear();
            match self.format {
                Format::Combined => clf_time(&mut self.time.text, entry.date),
                Format::Json => iso_time(&mut self.time.text, entry.date),
            }
        }
        let time = &self.time.text;
        match self.format {
            Format::Combined => combined(&mut self.batch, time, entry),
            Format::Json => json(&mut self.batch, time, entry),
        }
        self.lines += 1;
    }

    /// At the end of a loop turn: offers the batch to the writer once it holds
    /// `FLUSH_BYTES`, or once its first line has waited `FLUSH_AFTER` (the loop wakes
    /// for that: [`AccessLog::flush_at`]). Never blocks.
    pub fn flush_due(&mut self, now: Instant) {
        match self.first_at {
            None if self.lines > 0 => self.first_at = Some(now),
            _ => {}
        }
        if self.batch.len() >= FLUSH_BYTES || self.flush_at().is_some_and(|at| now >= at) {
            self.flush();
        }
    }

    /// When the lines held now must be offered to the writer, if any are held.
    pub fn flush_at(&self) -> Option<Instant> {
        self.first_at.map(|at| at + FLUSH_AFTER)
    }

    /// Offers the batch to the writer now (the loop's last turn). Never blocks; a full
    /// queue (or a writer that is gone) drops the batch and counts its lines.
    pub fn flush(&mut self) {
        self.first_at = None;
        if self.lines == 0 {
            return;
        }
        let next = self
            .returned
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(BATCH_BYTES));
        let batch = std::mem::replace(&mut self.batch, next);
        match self.queue.try_send((batch, self.back.clone())) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(self.lines, Ordering::Relaxed);
            }
        }
        self.lines = 0;
    }

    /// Lines dropped so far, by every loop.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// `02/Dec/2026:08:35:18 +0000` from `Wed, 02 Dec 2026 08:35:18 GMT` (both UTC).
fn clf_time(out: &mut Vec<u8>, date: &[u8]) {
    match (
        date.get(5..7),
        date.get(8..11),
        date.get(12..16),
        date.get(17..25),
    ) {
        (Some(day), Some(month), Some(year), Some(time)) => {
            for part in [day, b"/", month, b"/", year, b":", time, b" +0000"] {
                out.extend_from_slice(part);
            }
        }
        _ => out.extend_from_slice(date),
    }
}

/// `2026-12-02T08:35:18Z` from `Wed, 02 Dec 2026 08:35:18 GMT`.
fn iso_time(out: &mut Vec<u8>, date: &[u8]) {
    const MONTHS: [&[u8]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let month = date
        .get(8..11)
        .and_then(|m| MONTHS.iter().position(|name| *name == m));
    match (date.get(5..7), month, date.get(12..16), date.get(17..25)) {
        (Some(day), Some(month), Some(year), Some(time)) => {
            let month = [b'0' + (month as u8 + 1) / 10, b'0' + (month as u8 + 1) % 10];
            for part in [year, b"-", &month, b"-", day, b"T", time, b"Z"] {
                out.extend_from_slice(part);
            }
        }
        _ => out.extend_from_slice(date),
    }
}

/// `parts` between one pair of quotes in a combined line, escaped as nginx does (`\"`,
/// `\\`, and `\xHH` for anything not printable ASCII), so a line is always one line.
fn quoted(out: &mut Vec<u8>, parts: &[&[u8]]) {
    const PLAIN: [bool; 256] = {
        let mut plain = [false; 256];
        let mut b = 0x20;
        while b <= 0x7e {
            plain[b] = b != b'"' as usize && b != b'\\' as usize;
            b += 1;
        }
        plain
    };
    out.push(b'"');
    for part in parts {
        escape_into(out, part, &PLAIN, |out, b| match b {
            b'"' | b'\\' => out.extend_from_slice(&[b'\\', b]),
            _ => out.extend_from_slice(&[
                b'\\',
                b'x',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 15)],
            ]),
        });
    }
    out.push(b'"');
}

/// Copies `bytes` into `out`: runs of `plain` bytes whole, found with the table (one load
/// a byte), and each other byte as `escape` writes it.
fn escape_into(
    out: &mut Vec<u8>,
    mut bytes: &[u8],
    plain: &[bool; 256],
    escape: fn(&mut Vec<u8>, u8),
) {
    loop {
        let run = bytes
            .iter()
            .position(|&b| !plain[usize::from(b)])
            .unwrap_or(bytes.len());
        out.extend_from_slice(&bytes[..run]);
        let Some((&b, rest)) = bytes[run..].split_first() else {
            return;
        };
        escape(out, b);
        bytes = rest;
    }
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// A JSON string of raw bytes (a header field may hold any): bytes that are not UTF-8
/// become U+FFFD, so the line stays valid JSON.
fn json_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(text) => push_json_string(out, text),
        Err(_) => push_json_string(out, &String::from_utf8_lossy(bytes)),
    }
}

/// Microseconds as seconds with six decimals (`0.001250`), without a float.
fn push_seconds(out: &mut Vec<u8>, d: Duration) {
    push_decimal(out, d.as_secs());
    let micros = d.subsec_micros();
    let mut frac = [b'.', b'0', b'0', b'0', b'0', b'0', b'0'];
    let mut n = micros;
    for digit in frac[1..].iter_mut().rev() {
        *digit = b'0' + (n % 10) as u8;
        n /= 10;
    }
    out.extend_from_slice(&frac);
}

fn combined(out: &mut Vec<u8>, time: &[u8], e: &Entry<'_>) {
    let ip = e.remote.map_or("-", |peer| peer.ip.as_str());
    out.extend_from_slice(ip.as_bytes());
    out.extend_from_slice(b" - - [");
    out.extend_from_slice(time);
    out.extend_from_slice(b"] ");
    // The request line, quoted as one: nginx's `"$request"`.
    let (method, target, version) = (
        e.method.as_bytes(),
        e.target.as_bytes(),
        e.version.as_bytes(),
    );
    quoted(out, &[method, b" ", target, b" ", version]);
    out.push(b' ');
    push_decimal(out, u64::from(e.status));
    out.push(b' ');
    push_decimal(out, e.bytes);
    out.push(b' ');
    quoted(out, &[e.referer.unwrap_or(b"-")]);
    out.push(b' ');
    quoted(out, &[e.user_agent.unwrap_or(b"-")]);
    out.push(b'\n');
}

fn json(out: &mut Vec<u8>, time: &[u8], e: &Entry<'_>) {
    out.extend_from_slice(b"{\"time\":\"");
    out.extend_from_slice(time);
    out.extend_from_slice(b"\",\"remote\":");
    match e.remote {
        Some(peer) => push_json_string(out, &peer.addr),
        None => out.extend_from_slice(b"null"),
    }
    for (name, value) in [
        (&b",\"method\":"[..], e.method),
        (b",\"target\":", e.target),
        (b",\"version\":", e.version),
    ] {
        out.extend_from_slice(name);
        push_json_string(out, value);
    }
    out.extend_from_slice(b",\"status\":");
    push_decimal(out, u64::from(e.status));
    out.extend_from_slice(b",\"bytes\":");
    push_decimal(out, e.bytes);
    out.extend_from_slice(b",\"duration_s\":");
    push_seconds(out, e.duration);
    out.extend_from_slice(b",\"conn\":\"c");
    push_decimal(out, e.conn);
    out.push(b'"');
    for (name, value) in [
        (&b",\"referer\":"[..], e.referer),
        (b",\"user_agent\":", e.user_agent),
    ] {
        if let Some(value) = value {
            out.extend_from_slice(name);
            json_bytes(out, value);
        }
    }
    if let Some(ended) = e.ended {
        out.extend_from_slice(b",\"ended\":");
        push_json_string(out, ended);
    }
    out.extend_from_slice(b"}\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    const DATE: &[u8] = b"Wed, 02 Dec 2026 08:35:18 GMT";

    static PEER: std::sync::LazyLock<Peer> =
        std::sync::LazyLock::new(|| Peer::new("127.0.0.1:50312".parse().unwrap()));

    fn entry() -> Entry<'static> {
        Entry {
            date: DATE,
            remote: Some(&PEER),
            method: "GET",
            target: "/bytes/5?x=1",
            version: "HTTP/1.1",
            status: 200,
            bytes: 5,
            duration: Duration::from_micros(1250),
            conn: 17,
            referer: None,
            user_agent: Some(b"curl/8.5 \"quoted\" \xff"),
            ended: None,
        }
    }

    /// An output shared with the test, to read what the writer wrote.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn combined_lines_read_as_nginx_writes_them() {
        let mut out = Vec::new();
        let mut time = Vec::new();
        clf_time(&mut time, DATE);
        combined(&mut out, &time, &entry());
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "127.0.0.1 - - [02/Dec/2026:08:35:18 +0000] \"GET /bytes/5?x=1 HTTP/1.1\" 200 5 \
             \"-\" \"curl/8.5 \\\"quoted\\\" \\xFF\"\n"
        );
    }

    #[test]
    fn json_lines_are_one_object_each() {
        let mut e = entry();
        e.ended = Some("closed by the client");
        let mut out = Vec::new();
        let mut time = Vec::new();
        iso_time(&mut time, DATE);
        json(&mut out, &time, &e);
        let line = String::from_utf8(out).unwrap();
        assert_eq!(
            line,
            "{\"time\":\"2026-12-02T08:35:18Z\",\"remote\":\"127.0.0.1:50312\",\"method\":\"GET\",\
             \"target\":\"/bytes/5?x=1\",\"version\":\"HTTP/1.1\",\"status\":200,\"bytes\":5,\
             \"duration_s\":0.001250,\"conn\":\"c17\",\"user_agent\":\"curl/8.5 \\\"quoted\\\" \u{fffd}\",\
             \"ended\":\"closed by the client\"}\n"
        );
    }

    #[test]
    fn batches_reach_the_output_in_order() {
        let out = Shared::default();
        let writer = Writer::start(out.clone()).unwrap();
        let mut log = writer.log(Format::Combined);
        for status in [200, 404, 503] {
            log.record(&Entry { status, ..entry() });
            log.flush();
        }
        drop(log);
        assert_eq!(writer.finish(Duration::from_secs(5)), 0);
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let statuses: Vec<&str> = text.lines().map(|l| l.split(' ').nth(8).unwrap()).collect();
        assert_eq!(statuses, ["200", "404", "503"]);
    }

    #[test]
    fn a_batch_waits_for_its_size_or_its_age_never_longer() {
        let writer = Writer::start(Shared::default()).unwrap();
        let mut log = writer.log(Format::Json);
        let t0 = std::time::Instant::now();
        log.record(&entry());
        log.flush_due(t0);
        assert_eq!(log.lines, 1, "a small batch waits");
        assert_eq!(
            log.flush_at(),
            Some(t0 + FLUSH_AFTER),
            "the loop wakes for it"
        );
        log.flush_due(t0 + FLUSH_AFTER - Duration::from_millis(1));
        assert_eq!(log.lines, 1);
        log.flush_due(t0 + FLUSH_AFTER);
        assert_eq!(
            (log.lines, log.flush_at()),
            (0, None),
            "old enough: offered"
        );
        let long = vec![b'a'; FLUSH_BYTES];
        log.record(&Entry {
            user_agent: Some(&long),
            ..entry()
        });
        log.flush_due(t0);
        assert_eq!(log.lines, 0, "large enough: offered at once");
        drop(log);
        writer.finish(Duration::from_secs(5));
    }

    /// An output that never takes a byte: a pipe nobody reads.
    struct Stuck(Arc<Mutex<()>>);

    impl Write for Stuck {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            let _held = self.0.lock().unwrap();
            Ok(0)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stuck_output_drops_and_counts_lines_and_never_blocks_the_loop() {
        // The writer blocks on its first batch for as long as the test holds the lock.
        let gate = Arc::new(Mutex::new(()));
        let held = gate.lock().unwrap();
        let writer = Writer::start(Stuck(Arc::clone(&gate))).unwrap();
        let mut log = writer.log(Format::Json);
        let start = std::time::Instant::now();
        for _ in 0..QUEUE + 10 {
            log.record(&entry());
            log.record(&entry());
            log.flush();
        }
        assert!(start.elapsed() < Duration::from_secs(5), "the loop waited");
        // One batch taken by the stuck writer, QUEUE waiting: the rest dropped, 2 lines each.
        assert!(log.dropped() >= 2 * 9, "{} dropped", log.dropped());
        assert_eq!(log.dropped() % 2, 0);
        drop(held);
        drop(log);
        // `Stuck` writes nothing and reports 0 bytes: write_all fails, the thread ends.
        writer.finish(Duration::from_secs(5));
    }
}
