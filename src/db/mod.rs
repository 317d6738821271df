//! The database: a PostgreSQL worker pool behind the default-on cargo feature `postgres`.
//!
//! With the feature, [`Pool`] is the worker pool of `pool.rs`. Without it, `Pool` is an
//! enum with no variants: no value of it can exist, so `Option<&Pool>` is always `None`,
//! every database route answers `503 database not configured`, and the crate carries no
//! PostgreSQL code at all.

#[cfg(feature = "postgres")]
mod pool;

#[cfg(feature = "postgres")]
pub use pool::{Closed, Job, Pool, Refused, Session};

/// Without the `postgres` feature there is no pool to have.
#[cfg(not(feature = "postgres"))]
pub enum Pool {}

#[cfg(not(feature = "postgres"))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed {
    pub workers: usize,
    pub joined: usize,
}

/// Checks that `url` is a connection string PostgreSQL's client understands, at start-up,
/// so a typo is a configuration error (exit 2) naming `DATABASE_URL`, not a worker that
/// retries forever.
#[cfg(feature = "postgres")]
pub fn check_url(url: &str) -> Result<(), String> {
    url.parse::<postgres::Config>()
        .map(drop)
        .map_err(|e| format!("invalid DATABASE_URL: {e}"))
}

/// Without the `postgres` feature any URL is accepted: it is never used.
#[cfg(not(feature = "postgres"))]
pub fn check_url(_url: &str) -> Result<(), String> {
    Ok(())
}

#[cfg(not(feature = "postgres"))]
impl Pool {
    pub fn cancel_in_flight(&self) -> usize {
        match *self {}
    }

    pub fn close(self, _bound: std::time::Duration) -> Closed {
        match self {}
    }
}
