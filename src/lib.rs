//! # lastcall
//!
//! A hand-rolled HTTP/1.1 server on single-threaded mio event loops (one, or `WORKERS` of
//! them sharing the listener, one per core), whose specialty is
//! graceful shutdown: on SIGTERM, SIGINT or SIGQUIT (or when the application embedding it
//! asks) it stops taking new work, finishes the work it took, releases its resources in
//! order, and exits within a deadline with an exit code that says how it went.
//!
//! ## A tour, in the order a request meets the code
//!
//! 1. [`server`] — the event loops and their coordinator. A loop accepts connections,
//!    turns readiness events, timers and replies into calls on connections, and runs its
//!    shutdown phases ([`server::Phase`] decides, `server/steps.rs` acts); the coordinator
//!    reads the signals and shuts every loop down together.
//! 2. [`conn`] — one connection: reads into a lent buffer, drives the state machine
//!    (`conn/state.rs`), calls the handler from the head, writes answers in order with
//!    back-pressure; testable without a socket through its [`conn::Socket`] seam.
//! 3. [`http`] — sans-IO HTTP/1.1: request heads (a one-pass reader for the common shape,
//!    `httparse` for the rest, and the RFC 9112 rules on top of both), body decoding,
//!    response encoding, the `Date` cache.
//! 4. [`handler`] — what a handler gets and how it answers: now, after a loop timer,
//!    later through a reply handle from another thread, or as a stream.
//! 5. [`routes`] — the reference application, one `match` on (method, path).
//! 6. [`db`] — the PostgreSQL worker pool (feature `postgres`): queries run on worker
//!    threads and answer through reply handles; the pool closes after the drain.
//! 7. [`config`] — every setting, its default and why.
//! 8. [`stats`], [`metrics`], [`access_log`] — what an operator sees: each loop counts
//!    into cells of its own, a scrape of `/metrics` sums them ([`metrics`] writes
//!    Prometheus' text format), and the access log is formatted on the loop and written
//!    off it, never waited for.
//!
//! ## Embedding
//!
//! The binary is one application of the engine; yours can be another. Give
//! [`server::Server::bind`] a [`handler::Handler`] — a function, or a type of your own
//! with state — and run it. Signals still stop it gracefully; a
//! [`server::ShutdownHandle`] stops it the same way from any thread of yours, and
//! [`server::Server::run`] returns how the shutdown went. `examples/embed.rs` is a
//! complete application (`cargo run --example embed`).
//!
//! ```no_run
//! use std::sync::atomic::{AtomicU64, Ordering};
//! use lastcall::config::Config;
//! use lastcall::handler::{Answer, Ctx, Handler};
//! use lastcall::http::request::Request;
//! use lastcall::http::response::{Body, Response, Status, TEXT};
//! use lastcall::server::{self, Server, Started};
//!
//! struct Hits(AtomicU64);
//!
//! impl Handler for Hits {
//!     fn handle(&self, req: &Request<'_>, ctx: &mut Ctx<'_>) -> Answer {
//!         match req.path {
//!             "/hits" => {
//!                 let n = self.0.fetch_add(1, Ordering::Relaxed) + 1;
//!                 let body = Body::Bytes(n.to_string().into_bytes());
//!                 Answer::Now(Response::new(Status::OK, TEXT, body))
//!             }
//!             _ => lastcall::routes::handle(req, ctx), // the reference routes
//!         }
//!     }
//! }
//!
//! // First, so a signal during start-up stops us cleanly instead of killing us.
//! let signals = server::install_signal_handlers()?;
//! let config = Config::default(); // or Config::from_process(), as the binary does
//! let Started::Ready(server) = Server::bind(&config, Hits(AtomicU64::new(0)), signals)?
//! else {
//!     return Ok(()); // a signal arrived during start-up: never ready, exit 0
//! };
//! // Clone + Send + Sync: give it to whatever may decide to stop us (a supervisor, an
//! // admin route); `shutdown()` from any thread then drains like a SIGTERM.
//! let stop = server.shutdown_handle();
//! std::thread::spawn(move || {
//!     std::thread::sleep(std::time::Duration::from_secs(3600)); // an hour of service, say
//!     stop.shutdown();
//! });
//! let outcome = server.run()?; // until SIGTERM, SIGINT or stop.shutdown()
//! std::process::exit(outcome.exit_code().into());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Invariants
//!
//! - One thread runs each loop, and nothing on it blocks except `poll` itself. The one
//!   bounded wait of a shutdown — closing the database pool, at most its bound (2 s) — is
//!   the coordinator's, on its own thread, after the last loop has ended.
//! - On a loop's thread only `server` reads the clock; everything below it takes `now` as
//!   an argument. (The coordinator and the database workers, on threads of their own,
//!   read it for their own waits.)
//! - Tokens are never reused for a new socket while an event or reply may name the old one.
//! - A quiet keep-alive connection (between requests, nothing read or owed:
//!   `Conn::is_quiet`) owns no buffers; they are lent per request.
//! - Every close has a [`conn::CloseReason`], and is counted once under it in `/metrics`.
//! - Nothing shared between loops is written on the request path: each loop's counters
//!   are its own ([`stats`]); a scrape only reads.
//! - A panicking handler costs its request a 500, never the loop; a panic that escapes a
//!   loop anyway (a bug) ends that loop only: the others drain, and the exit is 1.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod access_log;
pub mod config;
pub mod conn;
pub mod db;
pub mod handler;
pub mod handover;
pub mod http;
pub mod inherit;
pub mod metrics;
pub mod notify;
pub mod routes;
pub mod server;
pub mod stats;
