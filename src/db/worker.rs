//! One worker thread of the pool: it connects (and reconnects with backoff), takes jobs
//! from the shared queue while connected, runs each within [`QUERY_TIMEOUT`], and always
//! answers its reply handle.
//!
//! What it is not: the queue's rules or the pool's lifecycle (`pool.rs`), or the session's
//! bounds (`session.rs`).

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

/// A worker's connection: up, or down with when to try again.
/// One per worker thread, so the size difference between the variants is not worth a box.
#[allow(clippy::large_enum_variant)]
pub(super) enum Link {
    Up(Session),
    Down {
        retry_at: Instant,
        backoff: Duration,
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
        let mut link = self.connect(BACKOFF_MIN);
        self.shared.starting.fetch_sub(1, Ordering::AcqRel);
        // Nobody may be left to connect: disconnected workers must answer queued tasks.
        self.shared.availability_changed.notify_all();
        loop {
            match (self.next(&link), link) {
                (Next::Serve(task), current) => link = self.serve(current, task),
                (Next::Reconnect, Link::Down { backoff, .. }) => link = self.connect(backoff),
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

    /// One connection attempt, bounded by [`CONNECT_TIMEOUT`].
    fn connect(&self, backoff: Duration) -> Link {
        match Session::open(&self.config) {
            Ok(session) => {
                log::info!("db worker {}: connected", self.index);
                self.shared.available.fetch_add(1, Ordering::AcqRel);
                Link::Up(session)
            }
            Err(e) => {
                log::warn!(
                    "db worker {}: database unavailable ({e}); retrying in {}ms",
                    self.index,
                    backoff.as_millis()
                );
                Link::Down {
                    retry_at: Instant::now() + backoff,
                    backoff: (backoff * 2).min(BACKOFF_MAX),
                }
            }
        }
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
                log::warn!(
                    "db worker {}: no answer within {}ms; cancelling and reconnecting",
                    self.index,
                    QUERY_TIMEOUT.as_millis()
                );
                reply.send(unavailable());
                // A live but stuck database stops the query; a dead one is past caring.
                if let Err(e) = send_cancel(&token) {
                    log::debug!("db worker {}: cancel request failed: {e}", self.index);
                }
                // Dropped, not closed: the connection is mid-protocol, and the socket
                // closing is all a dead server can be told.
                drop(session);
                return self.lost();
            }
            Ok(Err(e)) if session.client.is_closed() => {
                log::warn!("db worker {}: connection lost ({e})", self.index);
                reply.send(unavailable());
                return self.lost();
            }
            Ok(Err(e)) => {
                log::warn!("db worker {}: query failed: {e}", self.index);
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
    fn lost(&self) -> Link {
        self.went_down();
        Link::Down {
            retry_at: Instant::now(),
            backoff: BACKOFF_MIN,
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
