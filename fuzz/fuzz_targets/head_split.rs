//! The split rule for heads: every prefix of the input parses as "not enough bytes yet"
//! (`Ok(None)`) or as exactly the verdict on the whole input.
//!
//! The input is the raw bytes. Every prefix is checked (the cost is quadratic, and
//! inputs stay short under libFuzzer's default `-max_len`), with the default header limit
//! and with a small one, so prefixes cross the 431 limit as well.

#![no_main]

use lastcall_fuzz::split::head_split;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for max_head in [16 * 1024, 64] {
        if let Err(e) = head_split(data, max_head, 0..data.len()) {
            panic!("{e}");
        }
    }
});
