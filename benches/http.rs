//! Micro-benchmarks of the sans-IO hot path: request-head parsing, body decoding and
//! response encoding. Run with `cargo bench --bench http`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lastcall::http::body::{BodyDecoder, Framing};
use lastcall::http::request::{Version, parse_head};
use lastcall::http::response::{self, Body, Delivery, Response, Status};

/// The request wrk sends in TechEmpower's plaintext test.
const PLAINTEXT_REQUEST: &[u8] = b"GET /plaintext HTTP/1.1\r\nHost: 127.0.0.1:3000\r\n\
Accept: text/plain,text/html;q=0.9,application/xhtml+xml;q=0.9,application/xml;q=0.8,*/*;q=0.7\r\n\
Connection: keep-alive\r\n\r\n";

const DATE: &[u8] = b"Sun, 06 Nov 1994 08:49:37 GMT";

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse_head");
    group.throughput(Throughput::Bytes(PLAINTEXT_REQUEST.len() as u64));
    group.bench_function("techempower_plaintext", |b| {
        b.iter(|| parse_head(black_box(PLAINTEXT_REQUEST), 16 * 1024))
    });
    group.finish();
}

fn decode(c: &mut Criterion) {
    let mut chunked = Vec::new();
    for _ in 0..64 {
        chunked.extend_from_slice(b"400\r\n");
        chunked.extend_from_slice(&[b'x'; 0x400]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let mut group = c.benchmark_group("decode_body");
    group.throughput(Throughput::Bytes(chunked.len() as u64));
    group.bench_function("chunked_64x1KiB", |b| {
        b.iter(|| {
            let mut decoder = BodyDecoder::new(Framing::Chunked, 1 << 20).unwrap();
            let mut input = black_box(&chunked[..]);
            while let Ok(step) = decoder.decode(input) {
                input = &input[step.consumed..];
                if step.done || step.consumed == 0 {
                    break;
                }
            }
            decoder.received()
        })
    });
    group.finish();
}

fn encode(c: &mut Criterion) {
    let delivery = Delivery {
        version: Version::Http11,
        close: false,
        head_only: false,
    };
    let plaintext = Response::new(Status::OK, response::TEXT, Body::Static(b"Hello, World!"));
    let mut out = Vec::with_capacity(4096);
    c.bench_function("encode_response/plaintext", |b| {
        b.iter(|| {
            out.clear();
            let _ = response::encode(black_box(&plaintext), delivery, DATE, &mut out);
            out.len()
        })
    });
}

criterion_group!(benches, parse, decode, encode);
criterion_main!(benches);
