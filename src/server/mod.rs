//! The server: `WORKERS` event loops, each on its own thread with its own `mio::Poll`,
//! and one coordinator that shuts them down together.
//!
//! What it is: [`Server::bind`] sets up in the order the shutdown contract needs (signals
//! first, then the listener, then each loop's poll with its copy of the listener), and
//! [`Server::run`] runs them until the shutdown is over: loop 0 on the calling thread,
//! hosting the coordinator (so `WORKERS=1` is one thread), the others on their own.
//!
//! What it is not: it does not parse HTTP or decide responses (that is `conn` and
//! `http`), and it does not decide *when* a shutdown moves on (that is `shutdown`): it
//! carries out those decisions.
//!
//! Where each concern lives:
//!
//! | file | concern |
//! | --- | --- |
//! | `mod.rs` | `bind` and `run`: the loops' seeds, their threads, loop 0 hosting the coordinator |
//! | `event_loop.rs` | one loop: the turn, calling a connection and closing it |
//! | `coordinator.rs` | one shutdown for every loop: signals, orders, notes, the outcome |
//! | `accept.rs` | the listener: sharing it, accepting, `MAX_CONNECTIONS`, the EMFILE pause |
//! | `balance.rs` | spreading new clients over the loops |
//! | `resume.rs` | connections that yielded, resumed next turn |
//! | `timers.rs` | connections' wake-ups |
//! | `slab.rs` | connections by token, tokens never reused |
//! | `signals.rs` | which signals are caught and what each one means |
//! | `handle.rs` | the application's way to ask for the shutdown: [`ShutdownHandle`] |
//! | `shutdown.rs` | the phase machine: when a loop's shutdown moves on |
//! | `steps.rs` | the shutdown steps, carried out by a loop |
//! | `report.rs` | the one-line shutdown report |
//!
//! How connections reach the loops: one listening socket, one accept queue; every loop
//! registers its own copy (`try_clone`) in its own poll and accepts from it. The kernel
//! wakes every loop for a new client and the first to call `accept` takes it (the others
//! find `WouldBlock`); the socket closes only when the last loop closes its copy, so no
//! client in the queue is dropped by one loop closing early (see the README).
//!
//! Invariants:
//! - no loop blocks except in `poll`: the one bounded wait of a shutdown, the pool's
//!   close, happens after the last loop has ended;
//! - a loop owns its connections for their life, and a reply reaches the loop that owns
//!   its connection (each loop has its own inbox; a reply handle carries it);
//! - a panic that escapes a loop (a bug: handlers' panics are caught per request) ends
//!   that loop only; the coordinator drains the others and exits 1 naming it.

mod accept;
mod balance;
mod coordinator;
mod event_loop;
mod handle;
mod report;
mod resume;
mod scrape;
mod shutdown;
mod signals;
mod slab;
mod steps;
mod supervise;
mod timers;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Instant;

use mio::unix::SourceFd;
use mio::{Interest, Poll, Waker};

pub use handle::ShutdownHandle;
pub use shutdown::{Budget, Event, Outcome, Phase, Source, Step};
pub use signals::{Signal, Signals, install_signal_handlers};

use crate::access_log::Writer;
use crate::config::Config;
use crate::conn::{Limits, Timeouts};
use crate::db::Pool;
use crate::handler::{Handler, Inbox};
use crate::stats::Stats;
use accept::Acceptor;
use balance::Balance;
use coordinator::{BOARD, Board, Coordinator, Ended, Note, Orders, SIGNALS, panic_message};
use event_loop::{COORDINATOR, LISTENER, Loop, Seed, WAKER};
use scrape::Scrape;
use signals::shutdown_signals;
use supervise::Supervision;

/// Why [`Server::bind`] failed, by the step that failed. `main` prints it as one line and
/// exits 1.
#[derive(Debug)]
pub enum BindError {
    /// The listening socket: the address is in use, not this host's, or needs privileges.
    Listen {
        /// The address asked for.
        addr: SocketAddr,
        /// What the system said.
        error: io::Error,
    },
    /// `METRICS_LISTEN`'s address: in use (the main port's, say), or not this host's.
    MetricsListen {
        /// The address asked for.
        addr: SocketAddr,
        /// What the system said.
        error: io::Error,
    },
    /// The event loop's own parts: the poll, its waker, or registering the signals or the
    /// listener with it.
    EventLoop(io::Error),
    /// `DATABASE_URL` cannot be used: it does not parse, or this build has no PostgreSQL
    /// support. `main` checks it first (`db::check_url`) and exits 2; this is for an
    /// embedder that did not.
    Database(String),
}

impl fmt::Display for BindError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BindError::Listen { addr, error } => write!(f, "cannot listen on {addr}: {error}"),
            BindError::MetricsListen { addr, error } => {
                write!(f, "cannot listen on {addr} (METRICS_LISTEN): {error}")
            }
            BindError::EventLoop(error) => write!(f, "cannot set up the event loop: {error}"),
            BindError::Database(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for BindError {}

/// What `bind` produced.
pub enum Started {
    /// Bound and ready: call [`Server::run`].
    Ready(Box<Server>),
    /// A shutdown signal (not a SIGHUP) arrived during start-up: never report ready, exit 0.
    Signalled(Signal),
}

/// The engine: `WORKERS` event loops serving one listener with one [`Handler`], and
/// shutting down together, gracefully, when a signal or a [`ShutdownHandle`] asks.
///
/// [`Server::bind`] it, take a [`Server::shutdown_handle`] if the application wants to
/// stop it itself, then [`Server::run`] it; `run` returns the [`Outcome`] once the
/// shutdown is over. The thread that calls `run` runs loop 0 and coordinates the
/// shutdown; the other loops run on threads of their own (`lastcall-loop-N`).
pub struct Server {
    coordinator: Coordinator,
    seeds: Vec<Seed>,
    local_addr: SocketAddr,
    /// The listener came on standard input (socket activation, or a hand-over).
    inherited: bool,
    /// Every loop's numbers, for `/metrics` and [`Server::stats`].
    stats: Arc<Stats>,
    /// The `METRICS_LISTEN` listener, when one was asked for.
    scrape: Option<Scrape>,
}

impl Server {
    /// Registers the signal handlers (installed by [`install_signal_handlers`], first thing
    /// in `main`), then binds the listener. In that order: a SIGTERM that arrives while we
    /// start must not kill us half-started, it must stop us cleanly.
    pub fn bind(
        config: &Config,
        handler: impl Handler,
        mut signals: Signals,
    ) -> Result<Started, BindError> {
        let poll = Poll::new().map_err(BindError::EventLoop)?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)
            .map_err(BindError::EventLoop)?;
        let listen = |error| BindError::Listen {
            addr: config.listen,
            error,
        };
        // A listener handed to us (systemd's socket, or a parent's in a hand-over) comes
        // first: its address is whatever its owner bound, and its queue may already hold
        // clients.
        let (listener, inherited) = match crate::inherit::stdin_listener() {
            Ok(Some(listener)) => (listener, true),
            Ok(None) => (
                accept::listener(config.listen, config.listen_backlog).map_err(listen)?,
                false,
            ),
            Err(error) => return Err(listen(error)),
        };
        listener.set_nonblocking(true).map_err(listen)?;
        let kept = inherited && crate::inherit::kept_elsewhere(|key| std::env::var(key).ok());
        let local_addr = listener.local_addr().map_err(listen)?;
        let board = Arc::new(Board::new(
            Waker::new(poll.registry(), BOARD).map_err(BindError::EventLoop)?,
        ));

        if let Some(signal) = shutdown_signals(signals.pending()).next() {
            return Ok(Started::Signalled(signal));
        }
        let budget = Budget {
            drain_delay: config.drain_delay,
            shutdown_timeout: config.shutdown_timeout,
        };
        let workers = config.workers.count().max(1);
        // Each loop counts its own buffers (no lock on the request path), so each gets its
        // share of the budget — but never less than one largest body needs.
        let buffer_budget = (config.buffer_budget_bytes / workers)
            .max(config.max_body_bytes + 2 * config.max_header_bytes);
        // The limit is the process's: each loop takes its share, rounded up.
        let max_per_loop = config.max_connections.div_ceil(workers);
        let handler: Arc<dyn Handler> = Arc::new(handler);
        let stats = Arc::new(Stats::new(workers, config.metrics_listen.is_none()));
        let scrape = match config.metrics_listen {
            Some(addr) => {
                Some(Scrape::bind(addr).map_err(|error| BindError::MetricsListen { addr, error })?)
            }
            None => None,
        };
        let supervision = Supervision::new(
            &listener,
            kept,
            config.handover_timeout,
            Instant::now(),
            Arc::clone(&stats),
        );
        let mut coordinator = Coordinator::new(
            poll,
            signals,
            Arc::clone(&board),
            budget,
            supervision,
            Arc::clone(&stats),
        );
        let mut seeds = Vec::with_capacity(workers);
        let mut balances = Balance::new(workers, max_per_loop).into_iter();
        for index in 0..workers {
            let poll = Poll::new().map_err(BindError::EventLoop)?;
            let copy = accept::share(&listener).map_err(BindError::EventLoop)?;
            let accept = Acceptor::new(copy, max_per_loop, poll.registry(), LISTENER)?;
            let waker = Waker::new(poll.registry(), WAKER).map_err(BindError::EventLoop)?;
            if index == 0 {
                // Loop 0 runs on the thread that calls `run`, and hosts the coordinator.
                poll.registry()
                    .register(
                        &mut SourceFd(&coordinator.fd()),
                        COORDINATOR,
                        Interest::READABLE,
                    )
                    .map_err(BindError::EventLoop)?;
            }
            let inbox = Arc::new(Inbox::new(waker));
            let orders = Arc::new(Orders::new(Arc::clone(&inbox)));
            coordinator.add_loop(Arc::clone(&orders));
            seeds.push(Seed {
                index,
                poll,
                accept,
                inbox,
                orders,
                board: Arc::clone(&board),
                handler: Arc::clone(&handler),
                pool: None,
                limits: limits(config),
                buffer_budget,
                queue_kept: kept,
                balance: balances.next().expect("one view per loop"),
                budget,
                stats: Arc::clone(&stats),
                loops: workers,
                access_log: None,
            });
        }
        // Last, as the one step that starts threads: nothing after it can fail and leave
        // them behind.
        let pool = start_pool(config)?.map(Arc::new);
        for seed in &mut seeds {
            seed.pool.clone_from(&pool);
        }
        if let Some(pool) = &pool {
            stats.watch_pool(pool);
        }
        coordinator.pool = pool;
        if let Some(format) = config.access_log {
            let writer = Writer::start(io::stdout()).map_err(BindError::EventLoop)?;
            for seed in &mut seeds {
                seed.access_log = Some(writer.log(format));
            }
            stats.watch_access_log(writer.dropped_counter());
            coordinator.access_log = Some(writer);
        }
        // `listener` itself closes here: the loops' copies hold the socket open.
        Ok(Started::Ready(Box::new(Server {
            coordinator,
            seeds,
            local_addr,
            inherited,
            stats,
            scrape,
        })))
    }

    /// The address the server listens on: the real port when the configuration asked for
    /// port 0.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Runs the loops until the shutdown is complete, and returns how it went
    /// ([`Outcome::exit_code`] is the code to exit with): loop 0 here, hosting the
    /// coordinator, the others on threads of their own (`lastcall-loop-N`). An error means
    /// the coordinator's poll failed once loop 0 had ended, which leaves no way to hear a
    /// signal: every loop is then told to stop.
    pub fn run(self) -> io::Result<Outcome> {
        let from = if self.inherited {
            " (inherited listener)"
        } else {
            ""
        };
        log::info!("Listening on http://{}{from}", self.local_addr);
        let scraping = match self.scrape {
            Some(scrape) => {
                if let Ok(addr) = scrape.local_addr() {
                    log::info!("Metrics on http://{addr}/metrics");
                }
                Some(scrape.serve(Arc::clone(&self.stats))?)
            }
            None => None,
        };
        let loops = self.seeds.len();
        if loops > 1 {
            log::info!("{loops} event loops share the listener, one thread each");
        }
        let mut coordinator = self.coordinator;
        let mut seeds = self.seeds.into_iter();
        let first = seeds.next();
        let threads = seeds.map(spawn_loop).collect();
        // The loops take clients from here on (any that came sooner wait in the queue).
        coordinator.ready(&format!(
            "serving on {} with {loops} loops",
            self.local_addr
        ));
        if let Some(seed) = first {
            let (index, board) = (seed.index, Arc::clone(&seed.board));
            let ended = run_loop(seed, Some(&mut coordinator));
            board.note(Note::Exited { index, ended });
        }
        let outcome = coordinator.run(threads);
        if let Some(scraping) = scraping {
            scraping.stop();
        }
        outcome
    }

    /// Every loop's numbers, as `/metrics` shows them: take it before [`Server::run`] to
    /// read them while the server runs, or after it has returned (the final numbers, the
    /// same the shutdown report was made of).
    pub fn stats(&self) -> Arc<Stats> {
        Arc::clone(&self.stats)
    }
}

/// Runs one loop to its end on this thread: how its shutdown went, or why it ended
/// without one. The outermost boundary: a panic that escaped the loop (a bug) stops
/// here, never crossing into the process.
fn run_loop(seed: Seed, host: Option<&mut Coordinator>) -> Result<Ended, String> {
    match catch_unwind(AssertUnwindSafe(|| Loop::new(seed).run(host))) {
        Ok(Ok(ended)) => Ok(ended),
        Ok(Err(e)) => Err(format!("stopped: its poll failed: {e}")),
        Err(panic) => Err(format!("panicked: {}", panic_message(&*panic))),
    }
}

/// Runs one loop on a thread of its own. Whatever way the loop ends — its shutdown done,
/// its poll failed, or a panic that escaped it (a bug) — its last act is a note to the
/// coordinator, so the process never lives on with a loop silently gone.
fn spawn_loop(seed: Seed) -> Option<JoinHandle<()>> {
    let (index, board) = (seed.index, Arc::clone(&seed.board));
    let spawned = thread::Builder::new()
        .name(format!("lastcall-loop-{index}"))
        .spawn(move || {
            let board = Arc::clone(&seed.board);
            let ended = run_loop(seed, None);
            board.note(Note::Exited { index, ended });
        });
    match spawned {
        Ok(thread) => Some(thread),
        Err(e) => {
            board.note(Note::Exited {
                index,
                ended: Err(format!("could not start: {e}")),
            });
            None
        }
    }
}

/// The connection limits and timeouts, from the configuration.
fn limits(config: &Config) -> Limits {
    Limits {
        timeouts: Timeouts {
            keepalive: config.keepalive_timeout,
            header: config.header_timeout,
            body: config.body_timeout,
            request: config.request_timeout,
            write: config.write_timeout,
        },
        max_head: config.max_header_bytes,
        max_body: config.max_body_bytes,
    }
}

/// Starts the worker pool when `DATABASE_URL` is set. The workers connect in the
/// background: a database that is down does not keep the server from starting.
#[cfg(feature = "postgres")]
fn start_pool(config: &Config) -> Result<Option<Pool>, BindError> {
    let Some(url) = config.database_url.as_deref() else {
        return Ok(None);
    };
    Pool::start(url, config.db_pool_size)
        .map(Some)
        .map_err(|e| BindError::Database(format!("invalid DATABASE_URL: {e}")))
}

/// Without PostgreSQL support there is no pool, and a `DATABASE_URL` is refused by
/// `db::check_url`, which `main` reports first as a configuration error (exit 2). Refused
/// here too, for an embedder that skipped that check: a database that was asked for is
/// never silently done without.
#[cfg(not(feature = "postgres"))]
fn start_pool(config: &Config) -> Result<Option<Pool>, BindError> {
    match config.database_url.as_deref().map(crate::db::check_url) {
        Some(Err(e)) => Err(BindError::Database(e)),
        Some(Ok(())) | None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    /// A `Server` may be bound on one thread and run on another: what is not `Send` (a
    /// connection may hold a handler's stream) is built on each loop's own thread.
    #[test]
    fn server_is_send() {
        fn send<T: Send>() {}
        send::<super::Server>();
    }
}
