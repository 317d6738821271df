//! The database: a PostgreSQL worker pool behind the default-on cargo feature `postgres`.
//!
//! With the feature, [`Pool`] is the worker pool of `pool.rs`. Without it, `Pool` is an
//! enum with no variants: no value of it can exist, so `Option<&Pool>` is always `None`,
//! every database route answers `503 database not configured`, and the crate carries no
//! PostgreSQL code at all. Such a build refuses a `DATABASE_URL` at start-up
//! ([`check_url`]) rather than run without the database it was given.

#[cfg(feature = "postgres")]
mod outage;
#[cfg(feature = "postgres")]
mod pool;
#[cfg(feature = "postgres")]
mod session;
#[cfg(feature = "postgres")]
mod worker;

#[cfg(feature = "postgres")]
pub use pool::{Closed, Pool, QUEUE_TIMEOUT, Refused};
#[cfg(feature = "postgres")]
pub use session::{CANCEL_TIMEOUT, CONNECT_TIMEOUT, Error, Job, QUERY_TIMEOUT, Session};

/// Without the `postgres` feature there is no pool to have.
#[cfg(not(feature = "postgres"))]
pub enum Pool {}

/// How a pool close went; without the `postgres` feature no pool closes, so none is made.
#[cfg(not(feature = "postgres"))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed {
    /// Workers the pool had.
    pub workers: usize,
    /// Workers that finished and were joined within the bound.
    pub joined: usize,
}

/// What the pool is doing and has done, read from any thread (a scrape): gauges are the
/// state now, counters count since start. (In both builds: without the `postgres` feature
/// no pool exists to report it.)
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Worker threads configured (`DB_POOL_SIZE`).
    pub workers: u64,
    /// Workers connected to the database now.
    pub connected: u64,
    /// Jobs waiting in the queue for a worker now.
    pub queued: u64,
    /// Jobs refused at submit because the queue was full (answered 503 "database busy").
    pub rejected_busy: u64,
    /// Jobs refused at submit because no database was reachable (503 "database unavailable").
    pub rejected_unavailable: u64,
    /// Jobs answered 503 by the queue's timer after waiting `QUEUE_TIMEOUT`.
    pub queue_timeouts: u64,
    /// Connections established after a worker had lost one (or failed to get one): reconnects.
    pub reconnects: u64,
    /// Connection attempts that failed.
    pub connect_failures: u64,
}

/// Checks that `url` is a connection string PostgreSQL's client understands, at start-up,
/// so a typo is a configuration error (exit 2) naming `DATABASE_URL`, not a worker that
/// retries forever.
#[cfg(feature = "postgres")]
pub fn check_url(url: &str) -> Result<(), String> {
    url.parse::<tokio_postgres::Config>()
        .map(drop)
        .map_err(|e| format!("invalid DATABASE_URL: {e}"))
}

/// Without the `postgres` feature no URL can be used, so any is refused: a deployment that
/// sets `DATABASE_URL` expects its database routes to work, and should learn at start-up
/// (exit 2) that this build cannot serve them, not from a 503 in production. An empty
/// `DATABASE_URL` never gets here: it counts as unset (`config`).
#[cfg(not(feature = "postgres"))]
pub fn check_url(_url: &str) -> Result<(), String> {
    Err(
        "DATABASE_URL is set, but this build has no PostgreSQL support (cargo feature \"postgres\")"
            .to_owned(),
    )
}

/// The pool's shutdown side, so the server reads the same in both builds; with no value
/// of `Pool` possible, neither can be called.
#[cfg(not(feature = "postgres"))]
impl Pool {
    /// Cancels the queries in flight: there are none.
    pub fn cancel_in_flight(&self) -> usize {
        match *self {}
    }

    /// Reads the pool's numbers: there is no pool.
    pub fn stats(&self) -> PoolStats {
        match *self {}
    }

    /// Closes the pool: there is none.
    pub fn close(self, _bound: std::time::Duration) -> Closed {
        match self {}
    }
}
