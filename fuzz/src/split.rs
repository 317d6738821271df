//! The split rule, stated once: a verdict on bytes does not depend on how they arrive.
//!
//! What it is: checks, written as plain functions returning `Err(message)`, that the head
//! parser and the body decoder give the same answer for bytes fed whole and fed in pieces;
//! and the small deterministic generator the checks and their callers use to pick the
//! pieces. The fuzz targets call these with fuzzer-chosen inputs; `tests/properties.rs`
//! includes this very file and calls them with generated ones, so both enforce one rule.
//!
//! What it is not: a parser or a fuzzer. It needs nothing but the standard library and
//! `lastcall`, so the test build can compile it without new dependencies.
//!
//! Invariants: every loop here is bounded by the length of its input; nothing reads the
//! clock or the environment, so a failing input fails the same way every time.

use lastcall::http::body::{BodyDecoder, BodyError, Framing};
use lastcall::http::request::{Head, parse_head};

/// xorshift64*: a few lines, deterministic, and good enough to pick split points.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (zero, the one state xorshift cannot leave, is moved off).
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (`0` when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        // `n` fits in a u64 and the result is below `n`, so neither cast loses bits.
        (self.next_u64() % n as u64) as usize
    }
}

/// Up to `count` cut points in `0..=len`, sorted and distinct: where the bytes are split
/// into pieces.
pub fn cut_points(rng: &mut Rng, len: usize, count: usize) -> Vec<usize> {
    let mut cuts: Vec<usize> = (0..count).map(|_| rng.below(len + 1)).collect();
    cuts.sort_unstable();
    cuts.dedup();
    cuts
}

/// A head's offsets all lie within the bytes it was parsed from.
pub fn head_in_bounds(data: &[u8], head: &Head) -> Result<(), String> {
    let within = |r: &std::ops::Range<usize>| r.start <= r.end && r.end <= head.len;
    if head.len > data.len() {
        return Err(format!("head.len {} > input {}", head.len, data.len()));
    }
    if !within(&head.path) || !head.query.as_ref().is_none_or(within) {
        return Err(format!("ranges outside the head: {head:?}"));
    }
    Ok(())
}

/// Every prefix of `data` ending at one of `ends` is still partial (`Ok(None)`) or already
/// the whole input's verdict.
pub fn head_split(
    data: &[u8],
    max_head: usize,
    ends: impl IntoIterator<Item = usize>,
) -> Result<(), String> {
    let whole = parse_head(data, max_head);
    if let Ok(Some(head)) = &whole {
        head_in_bounds(data, head)?;
    }
    for end in ends.into_iter().filter(|&end| end <= data.len()) {
        let prefix = parse_head(&data[..end], max_head);
        if prefix != Ok(None) && prefix != whole {
            return Err(format!(
                "max_head {max_head}, input {:?} cut at {end}: prefix {prefix:?}, whole {whole:?}",
                String::from_utf8_lossy(data)
            ));
        }
    }
    Ok(())
}

/// What decoding a body came to: the data handed out, then either where it stopped (bytes
/// consumed and whether the body was complete) or the error.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// No error: `data` decoded, `consumed` input bytes used, `done` if the body ended.
    Fine {
        data: Vec<u8>,
        consumed: usize,
        done: bool,
    },
    /// Decoding failed. (The data before an error is not compared: an error in a call
    /// wins over the data found earlier in that call, so it depends on the pieces.)
    Failed(BodyError),
}

/// Feeds `data` to a fresh decoder in pieces cut at `cuts` (sorted), the way the
/// connection does: unconsumed bytes are kept and the next piece appended to them, and
/// `decode` is called again while it makes progress. Checks each step's own promises on
/// the way.
pub fn decode_in_pieces(
    framing: Framing,
    limit: u64,
    data: &[u8],
    cuts: &[usize],
) -> Result<Decoded, String> {
    let mut decoder = match BodyDecoder::new(framing, limit) {
        Ok(decoder) => decoder,
        Err(e) => return Ok(Decoded::Failed(e)),
    };
    let mut out = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    let mut consumed = 0;
    let ends = cuts.iter().copied().chain([data.len()]);
    let mut from = 0;
    for end in ends.filter(|&end| end <= data.len()) {
        if decoder.is_done() {
            break;
        }
        pending.extend_from_slice(&data[from..end.max(from)]);
        from = end.max(from);
        // Each call consumes at least one byte or stops the loop: bounded by the input.
        for _ in 0..=pending.len() {
            let step = match decoder.decode(&pending) {
                Ok(step) => step,
                Err(e) => return Ok(Decoded::Failed(e)),
            };
            let data_ok = step.data.start <= step.data.end && step.data.end <= step.consumed;
            if step.consumed > pending.len() || !data_ok {
                return Err(format!(
                    "step {step:?} over {} pending bytes",
                    pending.len()
                ));
            }
            out.extend_from_slice(&pending[step.data.clone()]);
            pending.drain(..step.consumed);
            consumed += step.consumed;
            if decoder.received() > limit || decoder.received() != out.len() as u64 {
                return Err(format!(
                    "received {} with {} handed out, limit {limit}",
                    decoder.received(),
                    out.len()
                ));
            }
            if step.done || step.consumed == 0 {
                break;
            }
        }
    }
    Ok(Decoded::Fine {
        data: out,
        consumed,
        done: decoder.is_done(),
    })
}

/// `data` decoded whole and decoded in pieces cut at `cuts` come to the same thing.
pub fn body_split(framing: Framing, limit: u64, data: &[u8], cuts: &[usize]) -> Result<(), String> {
    let whole = decode_in_pieces(framing, limit, data, &[])?;
    let pieces = decode_in_pieces(framing, limit, data, cuts)?;
    if whole != pieces {
        return Err(format!(
            "{framing:?} limit {limit}, input {:?} cut at {cuts:?}: pieces {pieces:?}, whole {whole:?}",
            String::from_utf8_lossy(data)
        ));
    }
    Ok(())
}
