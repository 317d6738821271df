//! The split rule as a property test: the head parser's verdict and the body decoder's
//! output do not depend on how the bytes arrive.
//!
//! What it is: a few thousand generated cases per property, from seed requests and bodies
//! (the fuzz targets' seed corpora) mutated by a deterministic generator (xorshift, fixed
//! seeds), each checked whole against every prefix (heads) or against random and
//! byte-by-byte pieces (bodies). The checks themselves are the fuzz targets' (`fuzz/src/split.rs`, included below), so the
//! rule is written once; the fuzz targets search far more inputs (see `fuzz/README.md`).
//!
//! What it is not: a fuzzer. Runs are deterministic, bounded, and take a few seconds; a
//! failure prints the input that broke the rule.

#[path = "../fuzz/src/split.rs"]
mod split;

use std::fs;
use std::path::{Path, PathBuf};

use lastcall::http::body::Framing;
use split::{Rng, body_split, cut_points, head_split};

/// Generated cases per property.
const CASES: usize = 3000;

/// The default `MAX_HEADER_BYTES`: far above every generated head.
const MAX_HEAD: usize = 16 * 1024;

/// The fuzz targets' seeds, `fuzz/corpus/<target>/`, in file-name order: the same
/// requests start both searches.
fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let entries = fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut paths: Vec<PathBuf> = entries.map(|entry| entry.unwrap().path()).collect();
    paths.sort();
    paths.iter().map(|path| fs::read(path).unwrap()).collect()
}

/// Request heads to mutate: valid ones, and one per rule a head can break.
fn heads() -> Vec<Vec<u8>> {
    seeds("head")
}

/// Chunked bodies to mutate, most followed by the start of a pipelined request that must
/// stay unconsumed: the `body_split` seeds whose config byte (the first) says chunked.
fn chunked_bodies() -> Vec<Vec<u8>> {
    let chunked = |seed: &Vec<u8>| seed.len() >= 2 && seed[0] & 3 <= 1;
    let seeds = seeds("body_split").into_iter().filter(chunked);
    seeds.map(|seed| seed[2..].to_vec()).collect()
}

/// The bytes that decide HTTP's structure, favoured by the mutations.
const INTERESTING: &[u8] = b"\r\n \t:;=\"\\%/?#,0aAfF9\x00\x7f\x80\xff";

/// A mutated copy of `seed`: up to four bytes changed, inserted or removed, or a slice
/// repeated.
fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut bytes = seed.to_vec();
    for _ in 0..rng.below(5) {
        let at = rng.below(bytes.len() + 1);
        let byte = match rng.below(2) {
            0 => INTERESTING[rng.below(INTERESTING.len())],
            // `below(256)` is below 256, so it fits a byte.
            _ => rng.below(256) as u8,
        };
        match rng.below(4) {
            0 if at < bytes.len() => bytes[at] = byte,
            1 => bytes.insert(at, byte),
            2 if at < bytes.len() => {
                bytes.remove(at);
            }
            _ => {
                let end = (at + rng.below(16)).min(bytes.len());
                let slice = bytes[at..end].to_vec();
                bytes.splice(at..at, slice);
            }
        }
    }
    bytes
}

/// A random chunked body: a few chunks (sometimes with extensions), the last chunk,
/// sometimes a trailer, then a pipelined request.
fn chunked_body(rng: &mut Rng) -> Vec<u8> {
    let mut body = Vec::new();
    for _ in 0..rng.below(4) {
        let size = rng.below(20);
        body.extend_from_slice(format!("{size:x}").as_bytes());
        if rng.below(3) == 0 {
            body.extend_from_slice(b" ;ext=\"a b\"");
        }
        body.extend_from_slice(b"\r\n");
        body.extend((0..size).map(|i| b'a' + (i % 26) as u8));
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\n");
    if rng.below(2) == 0 {
        body.extend_from_slice(b"X-Sum: 1\r\n");
    }
    body.extend_from_slice(b"\r\nGET / HTTP/1.1\r\n");
    body
}

/// Checks the seeds and `CASES` heads made from them; panics with the first failure.
fn check_heads(max_head: usize) {
    let mut rng = Rng::new(0x5eed_0001);
    let heads = heads();
    let generated = (0..CASES).map(|_| {
        let seed = &heads[rng.below(heads.len())];
        mutate(&mut rng, seed)
    });
    for (case, head) in heads.iter().cloned().chain(generated).enumerate() {
        if let Err(e) = head_split(&head, max_head, 0..=head.len()) {
            panic!("case {case}: {e}");
        }
    }
}

#[test]
fn parse_head_verdict_is_the_same_for_every_prefix() {
    check_heads(MAX_HEAD);
}

/// A head limit the generated heads cross, so prefixes end on both sides of it.
#[test]
fn parse_head_verdict_is_the_same_for_every_prefix_across_the_limit() {
    check_heads(64);
}

/// The inputs the `head_split` fuzz target found, as they were found.
#[test]
fn parse_head_verdict_is_the_same_for_every_prefix_of_the_fuzz_findings() {
    let version_past_limit: &[u8] = b"GET /caf%C3%A9?q=%20 HTT\x8c\x8c\x8c\x8c\x8c\x8c\x8c\
        \x8c\x8c\x8c\x8c\x8c\x8c\x8c\x8c\x8c\x8c\x8c\x8c\x8c\x8c\x8c\x8c\x8c\x8c\x8c\x8c\
        \x8c\x8c\x8c\x8c\x8c\x8c\x8c\x8c\x8c\x8c\x8c\x8cP/1.2\r\nHost: a\r\n\r\n\x02";
    let version_after_empty_line: &[u8] = b"\r\nGET b HTTP/0.a/aT /a#b HTTP/1.a\r\n\r\n";
    let failures: Vec<String> = [
        (version_past_limit, 64),
        (version_after_empty_line, MAX_HEAD),
    ]
    .into_iter()
    .filter_map(|(input, max_head)| head_split(input, max_head, 0..=input.len()).err())
    .collect();
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn body_decoder_output_is_the_same_however_the_body_is_split() {
    let mut rng = Rng::new(0x5eed_0002);
    let bodies = chunked_bodies();
    for case in 0..CASES {
        let (framing, body) = match rng.below(4) {
            0 => (Framing::Chunked, chunked_body(&mut rng)),
            1 => {
                let seed = &bodies[rng.below(bodies.len())];
                (Framing::Chunked, mutate(&mut rng, seed))
            }
            2 => {
                let seed = chunked_body(&mut rng);
                (Framing::Chunked, mutate(&mut rng, &seed))
            }
            _ => {
                let len = rng.below(40);
                let body = (0..len + rng.below(10)).map(|i| i as u8).collect();
                (Framing::Length(len as u64), body)
            }
        };
        let limit = [0, 5, 30, 1 << 20][rng.below(4)];
        let cuts = match rng.below(4) {
            0 => (1..body.len()).collect(),
            n => cut_points(&mut rng, body.len(), n * 3),
        };
        if let Err(e) = body_split(framing, limit, &body, &cuts) {
            panic!("case {case}: {e}");
        }
    }
}
