//! What the fuzz targets share: the split rule's checks (`split`, also compiled into
//! `tests/properties.rs`), a strict reader of the responses a connection writes (`wire`),
//! and what the connection targets lend a connection in the event loop's place
//! (`harness`). The targets themselves live in `fuzz_targets/`, one file each.
//!
//! Nothing here is part of the server: this crate is its own workspace, built only by
//! `cargo fuzz` (see README.md).

pub mod harness;
pub mod split;
pub mod wire;
