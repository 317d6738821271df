//! # lastcall
//!
//! A hand-rolled HTTP/1.1 server on a single-threaded mio event loop, whose specialty is
//! graceful shutdown: on SIGTERM or SIGINT it stops taking new work, finishes the work it
//! took, releases its resources in order, and exits within a deadline with an exit code
//! that says how it went.
//!
//! ## A tour, in the order a request meets the code
//!
//! 1. [`server`] — the event loop. Accepts connections, turns readiness events, timers,
//!    replies and signals into calls on connections, and runs the shutdown phases.
//! 2. [`conn`] — one connection: reads into a lent buffer, drives the state machine
//!    (`conn/state.rs`), writes answers in order with back-pressure.
//! 3. [`http`] — sans-IO HTTP/1.1: request heads (`httparse` plus the RFC 9112 rules it
//!    leaves to us), body decoding, response encoding, the `Date` cache.
//! 4. [`handler`] — what a handler gets and how it answers: now, after a loop timer,
//!    later through a reply handle from another thread, or as a stream.
//! 5. [`routes`] — the reference application, one `match` on (method, path).
//! 6. [`db`] — the PostgreSQL worker pool (feature `postgres`): queries run on worker
//!    threads and answer through reply handles; the pool closes after the drain.
//! 7. [`config`] — every setting, its default and why.
//!
//! ## Invariants
//!
//! - One thread runs the loop, and nothing on it blocks except `poll` itself — with one
//!   exception, bounded: the last shutdown step, once the last connection is gone, closes
//!   the database pool and waits for its workers to disconnect, at most the pool's bound
//!   (2 s). There is nothing left to serve by then.
//! - On the loop's thread only `server` reads the clock; everything below it takes `now`
//!   as an argument — except `db::Pool::close` in that same last step, which reads it to
//!   keep its wait within the bound. (Database workers, on threads of their own, time
//!   their own backoff.)
//! - Tokens are never reused for a new socket while an event or reply may name the old one.
//! - An idle keep-alive connection owns no buffers.
//! - Every close has a [`conn::CloseReason`].
//! - A panicking handler costs its request a 500, never the loop.

#![forbid(unsafe_code)]

pub mod config;
pub mod conn;
pub mod db;
pub mod handler;
pub mod http;
pub mod routes;
pub mod server;
