//! HTTP/1.1 without I/O: request heads, request bodies, responses, the `Date` value, and
//! the mapping from request errors to statuses.
//!
//! Everything below this module is sans-IO: functions from bytes to values and back. No
//! sockets, no clock, no logging. That is what makes it testable by tables of byte
//! strings, and what lets the connection code above it stay about *when*, not *how*.
//!
//! | file | role |
//! | --- | --- |
//! | `request.rs` | request line + header fields → [`request::Head`] (RFC 9112 §2–§3) |
//! | `view.rs` | [`request::Request`], what a handler sees of a request |
//! | `uri.rs` | the request target's bytes and form (RFC 3986, RFC 9112 §3.2) |
//! | `plain.rs` | the common head read in one pass; anything else goes the general way |
//! | `fields.rs` | the header fields: `Host`, framing, persistence, `Expect` (RFC 9112 §6.3, §9.3) |
//! | `body.rs` | Content-Length and chunked body decoding (RFC 9112 §6.3, §7.1) |
//! | `response.rs` | [`response::Response`] and its encoding, chunks included |
//! | `error.rs` | [`error::RequestError`] and its one mapping to status codes |
//! | `date.rs` | the `Date` value, formatted once a second |

pub mod body;
pub mod date;
pub mod error;
mod fields;
mod plain;
pub mod request;
pub mod response;
mod uri;
mod view;
