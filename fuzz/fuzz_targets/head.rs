//! `parse_head` on any bytes: it never panics, and a complete head's offsets lie within
//! the bytes it was parsed from (`head.len <= data.len()`, path and query inside the head).
//!
//! The input is the raw bytes, parsed with the default header limit and with a small one,
//! so the 431 paths are reached by short inputs too.

#![no_main]

use lastcall::http::request::parse_head;
use lastcall_fuzz::split::head_in_bounds;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for max_head in [16 * 1024, 64] {
        if let Ok(Some(head)) = parse_head(data, max_head)
            && let Err(e) = head_in_bounds(data, &head)
        {
            panic!("{e}: {:?}", String::from_utf8_lossy(data));
        }
    }
});
