//! The split rule for bodies: `BodyDecoder` fed the input whole and fed it in pieces (the
//! unconsumed bytes kept and the next piece appended, as the connection does) hands out
//! the same bytes, consumes the same number, and ends the same way (done, partial, or the
//! same error).
//!
//! Input layout: byte 0 picks the framing and the limit, byte 1 how the pieces are cut
//! (0: one byte at a time; otherwise the seed of up to 16 random cuts), the rest is the
//! body as it would follow a head.

#![no_main]

use lastcall::http::body::Framing;
use lastcall_fuzz::split::{Rng, body_split, cut_points};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let [config, cut_seed, data @ ..] = input else {
        return;
    };
    // Limits that the short bodies of a fuzz run reach, and one they never do.
    let limit = [0, 1, 16, 100, 1 << 20][usize::from(config >> 4) % 5];
    let framing = match config & 3 {
        0 | 1 => Framing::Chunked,
        2 => Framing::Length(u64::from(config >> 2 & 3) * 5),
        _ => Framing::None,
    };
    let cuts: Vec<usize> = match cut_seed {
        0 => (1..data.len()).collect(),
        seed => {
            let mut rng = Rng::new(u64::from(*seed) << 32 | data.len() as u64);
            cut_points(&mut rng, data.len(), 1 + usize::from(seed % 16))
        }
    };
    if let Err(e) = body_split(framing, limit, data, &cuts) {
        panic!("{e}");
    }
});
