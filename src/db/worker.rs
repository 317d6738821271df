//! One worker thread of the pool: it connects (and reconnects with backoff), takes jobs
//! from the shared queue while connected, runs each within [`QUERY_TIMEOUT`], and always
//! answers its reply handle.
//!
//! What it is not: the queue's rules or the pool's lifecycle (`pool.rs`), the session's
//! bounds (`session.rs`), or the judgement of which connection news is worth a line
//! (`outage.rs`): a worker logs each of its attempts at debug, and at warn or info only
//! what the pool's [`Outage`](super::outage::Outage) hands back, plus the news that is its
//! own (a connection that broke and came straight back, a query with no answer, a query
//! that failed) — the last two at debug while an outage is already reported.

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use std::sync::atomic::Ordering;

use tokio_postgres::{CancelToken, Config};

use super::pool::{Shared, Task};
use super::session::{Error, QUERY_TIMEOUT, Session, send_cancel};
use crate::http::response::{Response, Status};

pub(super) const BACKOFF_MIN: Duration = Duration::from_millis(100);
pub(super) const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// One worker thread.
pub(super) struct Worker {
    pub(super) index: usize,
    pub(super) config: Config,
    pub(super) shared: Arc<Shared>,
}

/// Why a worker is connecting: it decides what the attempt's success or failure is
/// worth telling, and whether a success counts as a reconnect.
pub(super) enum Attempt {
    /// The worker's first, at start-up.
    First,
    /// After a failed attempt, or a connection given up on for a query with no answer
    /// (already logged).
    Again,
    /// Straight after a working connection broke, with why: news of its own if the
    /// reconnect works, part of the outage's first warning if it does not.
    AfterLoss(String),
}

/// A worker's connection: up, or down with when to try again.
/// One per worker thread, so the size difference between the variants is not worth a box.
#[allow(clippy::large_enum_variant)]
pub(super) enum Link {
    Up(Session),
    Down {
        retry_at: Instant,
        backoff: Duration,
        attempt: Attempt,
    },
}

/// What a worker does next.
pub(super) enum Next {
    Serve(Task),
    Reconnect,
    Exit,
}

impl Worker {
    pub(super) fn run(self) {
        // Not available during this first attempt, but counted in `starting`, so jobs
        // that arrive right after start-up wait for it (within CONNECT_TIMEOUT) instead
        // of being refused.
        let mut link = self.connect(BACKOFF_MIN, Attempt::First);
        self.shared.starting.fetch_sub(1, Ordering::AcqRel);
        // Nobody may be left to connect: disconnected workers must answer queued tasks.
        self.shared.availability_changed.notify_all();
        loop {
            match (self.next(&link), link) {
                (Next::Serve(task), current) => link = self.serve(current, task),
                (
                    Next::Reconnect,
                    Link::Down {
                        backoff, attempt, ..
                    },
                ) => link = self.connect(backoff, attempt),
                (Next::Reconnect, up) => link = up,
                (Next::Exit, last) => {
                    if let Link::Up(session) = last {
                        session.close();
                    }
                    break;
                }
            }
        }
        log::debug!("db worker {} finished", self.index);
    }

    /// Waits for something to do. A connected worker takes queued tasks (and exits once
    /// the queue is closed and empty). A disconnected one waits for its retry time, taking
    /// tasks only when no worker at all is connected or connecting (to answer them 503 at
    /// once).
    fn next(&self, link: &Link) -> Next {
        let mut queue = self.shared.lock();
        loop {
            let nobody_up = self.shared.available.load(Ordering::Acquire) == 0
                && self.shared.starting.load(Ordering::Acquire) == 0;
            let retry_at = match link {
                Link::Up(_) => None,
                Link::Down { retry_at, .. } => Some(*retry_at),
            };
            if (retry_at.is_none() || nobody_up)
                && let Some(task) = queue.tasks.pop_front()
            {
                return Next::Serve(task);
            }
            if queue.closed {
                return Next::Exit;
            }
            queue = match retry_at {
                None => self
                    .shared
                    .task_queued
                    .wait(queue)
                    .unwrap_or_else(PoisonError::into_inner),
                Some(at) => {
                    let left = at.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Next::Reconnect;
                    }
                    self.shared
                        .availability_changed
                        .wait_timeout(queue, left)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
        }
    }

    /// One connection attempt, bounded by [`CONNECT_TIMEOUT`](super::CONNECT_TIMEOUT).
    fn connect(&self, backoff: Duration, attempt: Attempt) -> Link {
        let opened = Session::open(&self.config);
        let now = Instant::now();
        let counters = &self.shared.counters;
        match opened {
            Ok(session) => {
                self.shared.available.fetch_add(1, Ordering::AcqRel);
                if !matches!(attempt, Attempt::First) {
                    counters.reconnects.fetch_add(1, Ordering::Relaxed);
                }
                let report = self.shared.outage().connected(now);
                match (report, attempt) {
                    // The end of an outage is the line; which worker ended it is a detail.
                    (Some(report), _) => {
                        log::log!(report.level(), "{report}");
                        log::debug!("db worker {}: connected", self.index);
                    }
                    // At start-up with the database up, each worker says so once.
                    (None, Attempt::First) => log::info!("db worker {}: connected", self.index),
                    // A connection that broke and came straight back is news of its own.
                    (None, Attempt::AfterLoss(lost)) => {
                        log::warn!(
                            "db worker {}: connection lost ({lost}); reconnected",
                            self.index
                        );
                    }
                    (None, Attempt::Again) => log::debug!("db worker {}: connected", self.index),
                }
                Link::Up(session)
            }
            Err(e) => {
                counters.connect_failures.fetch_add(1, Ordering::Relaxed);
                let error = match attempt {
                    Attempt::AfterLoss(lost) => {
                        format!("connection lost: {lost}; reconnecting: {e}")
                    }
                    Attempt::First | Attempt::Again => e.to_string(),
                };
                log::debug!(
                    "db worker {}: database unavailable ({error}); retrying in {}ms",
                    self.index,
                    backoff.as_millis()
                );
                if let Some(report) = self.shared.outage().failed(now, error) {
                    log::log!(report.level(), "{report}");
                }
                Link::Down {
                    retry_at: now + backoff,
                    backoff: (backoff * 2).min(BACKOFF_MAX),
                    attempt: Attempt::Again,
                }
            }
        }
    }

    /// Warns about this worker's own trouble, unless the database is already reported
    /// down: then it is part of that outage, and a detail.
    fn warn_unless_down(&self, message: fmt::Arguments<'_>) {
        let level = if self.shared.outage().is_down() {
            log::Level::Debug
        } else {
            log::Level::Warn
        };
        log::log!(level, "db worker {}: {message}", self.index);
    }

    /// This worker can no longer serve. Wake the others: if nobody is available now, a
    /// disconnected worker must take over answering queued tasks with 503.
    fn went_down(&self) {
        self.shared.available.fetch_sub(1, Ordering::AcqRel);
        self.shared.availability_changed.notify_all();
    }

    /// Runs one task and answers it, whatever happens.
    fn serve(&self, link: Link, task: Task) -> Link {
        let Task { job, reply, .. } = task;
        let mut session = match link {
            Link::Up(session) => session,
            down @ Link::Down { .. } => {
                reply.send(unavailable());
                return down;
            }
        };
        let token = session.client.cancel_token();
        self.set_in_flight(Some(token.clone()));
        session.deadline = Instant::now() + QUERY_TIMEOUT;
        let outcome = catch_unwind(AssertUnwindSafe(|| job(&mut session)));
        self.set_in_flight(None);
        match outcome {
            Ok(Ok(response)) => reply.send(response),
            Ok(Err(Error::TimedOut)) => {
                self.warn_unless_down(format_args!(
                    "no answer within {}ms; cancelling and reconnecting",
                    QUERY_TIMEOUT.as_millis()
                ));
                reply.send(unavailable());
                // A live but stuck database stops the query; a dead one is past caring.
                if let Err(e) = send_cancel(&token) {
                    log::debug!("db worker {}: cancel request failed: {e}", self.index);
                }
                // Dropped, not closed: the connection is mid-protocol, and the socket
                // closing is all a dead server can be told.
                drop(session);
                return self.lost(Attempt::Again);
            }
            Ok(Err(e)) if session.client.is_closed() => {
                // Told by the reconnect that follows, which knows whether the database
                // is still there.
                log::debug!("db worker {}: connection lost ({e})", self.index);
                reply.send(unavailable());
                return self.lost(Attempt::AfterLoss(e.to_string()));
            }
            Ok(Err(e)) => {
                self.warn_unless_down(format_args!("query failed: {e}"));
                let status = if is_cancelled(&e) {
                    Status::SERVICE_UNAVAILABLE
                } else {
                    Status::INTERNAL_SERVER_ERROR
                };
                reply.send(Response::error(status, "query failed"));
            }
            // A panicking job costs its request a 500, not the worker.
            Err(_) => {
                log::error!("db worker {}: job panicked", self.index);
                reply.send(Response::internal_error());
            }
        }
        Link::Up(session)
    }

    /// The connection is gone: reconnect at once, then back off.
    fn lost(&self, attempt: Attempt) -> Link {
        self.went_down();
        Link::Down {
            retry_at: Instant::now(),
            backoff: BACKOFF_MIN,
            attempt,
        }
    }

    fn set_in_flight(&self, token: Option<CancelToken>) {
        let mut slots = self
            .shared
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = slots.get_mut(self.index) {
            *slot = token;
        }
    }
}

pub(super) fn unavailable() -> Response {
    Response::error(Status::SERVICE_UNAVAILABLE, "database unavailable")
}

/// SQLSTATE 57014, `query_canceled`: what PostgreSQL answers a cancelled query with.
pub(super) fn is_cancelled(e: &Error) -> bool {
    match e {
        Error::Postgres(e) => e.code() == Some(&tokio_postgres::error::SqlState::QUERY_CANCELED),
        Error::TimedOut | Error::Runtime(_) => false,
    }
}
