//! The PostgreSQL worker pool: `DB_POOL_SIZE` threads, each owning one `postgres::Client`.
//!
//! What it is: a bounded job queue in front of worker threads. The event loop hands a job
//! (a closure that runs queries on a `Client`) and a [`ReplyHandle`]; a worker runs it and
//! sends the response back through the handle, which wakes the loop.
//!
//! What it is not: it never runs on the event-loop thread and the loop never waits on it.
//! [`Pool::submit`] does not block: a full queue is refused at once (503), never waited on.
//!
//! Lifecycle:
//! - start: workers connect in the background; the server serves whether or not the
//!   database is up;
//! - a worker whose connection is down answers `503 database unavailable` at once and
//!   reconnects with exponential backoff (100 ms up to 5 s), also while idle;
//! - shutdown, clean: after the last connection, [`Pool::close`] closes the queue; workers
//!   finish, disconnect (a clean `Terminate`), and are joined, within a bound;
//! - shutdown, deadline: [`Pool::cancel_in_flight`] sends PostgreSQL's cancel request for
//!   every query still running, then `close` as above.
//!
//! Invariant: a job's reply is always sent — with the job's response, an error response,
//! or (if a worker panics mid-job) the 500 a dropped `ReplyHandle` sends by itself.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use postgres::types::ToSql;
use postgres::{CancelToken, Client, NoTls, Row, Statement};

use crate::handler::ReplyHandle;
use crate::http::response::{Response, Status};

/// A unit of database work: runs on a worker's session, returns the response to send.
pub type Job = Box<dyn FnOnce(&mut Session) -> Result<Response, postgres::Error> + Send>;

/// A worker's connection with its prepared statements. Jobs name their SQL as
/// `&'static str`; each statement is prepared once per connection, so a query costs one
/// round trip instead of two.
pub struct Session {
    client: Client,
    prepared: Vec<(&'static str, Statement)>,
}

impl Session {
    fn new(client: Client) -> Session {
        Session {
            client,
            prepared: Vec::new(),
        }
    }

    /// Runs a query that returns at most one row.
    pub fn query_opt(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, postgres::Error> {
        let statement = self.statement(sql)?;
        self.client.query_opt(&statement, params)
    }

    fn statement(&mut self, sql: &'static str) -> Result<Statement, postgres::Error> {
        // A handful of statements per pool: a linear scan beats hashing.
        if let Some((_, statement)) = self
            .prepared
            .iter()
            .find(|(s, _)| std::ptr::eq(*s, sql) || *s == sql)
        {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare(sql)?;
        self.prepared.push((sql, statement.clone()));
        Ok(statement)
    }
}

/// Queued jobs per worker before new ones are refused: enough to absorb a burst, small
/// enough that a request never waits behind minutes of queries.
const QUEUE_PER_WORKER: usize = 64;

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How long one connection attempt may take. It runs on a worker thread, but while it
/// runs that worker answers nothing.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

struct Task {
    job: Job,
    reply: ReplyHandle,
}

pub struct Pool {
    queue: Option<SyncSender<Task>>,
    workers: Vec<JoinHandle<()>>,
    /// Each worker reports here when it has disconnected and is about to return.
    finished: Receiver<usize>,
    /// The cancel token of the query each worker is running, if any.
    in_flight: Arc<Mutex<Vec<Option<CancelToken>>>>,
}

/// How a pool close went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed {
    pub workers: usize,
    pub joined: usize,
}

impl Pool {
    /// Parses `url` and starts `size` workers. Only a URL that does not parse is an error;
    /// an unreachable database is not (the workers keep trying).
    pub fn start(url: &str, size: usize) -> Result<Pool, postgres::Error> {
        let mut config: postgres::Config = url.parse()?;
        if config.get_application_name().is_none() {
            // So `pg_stat_activity` shows which connections are ours.
            config.application_name("lastcall");
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        let (queue, jobs) = mpsc::sync_channel(size * QUEUE_PER_WORKER);
        let jobs = Arc::new(Mutex::new(jobs));
        let (finished_tx, finished) = mpsc::channel();
        let in_flight = Arc::new(Mutex::new(vec![None; size]));
        let workers = (0..size)
            .map(|index| {
                let worker = Worker {
                    index,
                    config: config.clone(),
                    jobs: Arc::clone(&jobs),
                    in_flight: Arc::clone(&in_flight),
                };
                let finished = finished_tx.clone();
                thread::Builder::new()
                    .name(format!("db-worker-{index}"))
                    .spawn(move || {
                        worker.run();
                        let _ = finished.send(index);
                    })
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                log::error!("cannot start database workers: {e}");
                e
            });
        let workers = workers.unwrap_or_default();
        Ok(Pool {
            queue: Some(queue),
            workers,
            finished,
            in_flight,
        })
    }

    /// Queues `job`; its response goes to `reply`. Never blocks: when the queue is full
    /// the handle comes back so the caller can answer 503 at once.
    pub fn submit(&self, job: Job, reply: ReplyHandle) -> Result<(), ReplyHandle> {
        let Some(queue) = self.queue.as_ref() else {
            return Err(reply);
        };
        match queue.try_send(Task { job, reply }) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(task) | TrySendError::Disconnected(task)) => Err(task.reply),
        }
    }

    /// At the shutdown deadline: asks PostgreSQL to cancel every query still running
    /// (the cancel request opens its own connection, so it is sent from short-lived
    /// threads, never from the loop). Returns how many were asked.
    pub fn cancel_in_flight(&self) -> usize {
        let tokens: Vec<CancelToken> = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .flatten()
            .cloned()
            .collect();
        for token in &tokens {
            let token = token.clone();
            let _ = thread::Builder::new()
                .name("db-cancel".into())
                .spawn(move || {
                    if let Err(e) = token.cancel_query(NoTls) {
                        log::warn!("cancel request failed: {e}");
                    }
                });
        }
        tokens.len()
    }

    /// Closes the queue and waits (at most `bound`) for the workers to finish their jobs,
    /// disconnect and return. Workers still busy after `bound` are left to the process
    /// exit: the pool never holds the exit longer than its bound.
    pub fn close(mut self, bound: Duration) -> Closed {
        drop(self.queue.take());
        let deadline = Instant::now() + bound;
        let workers = self.workers.len();
        let mut done = Vec::with_capacity(workers);
        while done.len() < workers {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.finished.recv_timeout(left) {
                Ok(index) => done.push(index),
                Err(_) => break,
            }
        }
        let mut joined = 0;
        for (index, handle) in self.workers.drain(..).enumerate() {
            // Join only the workers that said they are finished: joining a busy one
            // would block past the bound.
            if done.contains(&index) && handle.join().is_ok() {
                joined += 1;
            }
        }
        Closed { workers, joined }
    }
}

/// One worker thread's state.
struct Worker {
    index: usize,
    config: postgres::Config,
    jobs: Arc<Mutex<Receiver<Task>>>,
    in_flight: Arc<Mutex<Vec<Option<CancelToken>>>>,
}

/// A worker's connection: up, or down with when to try again. One per worker thread,
/// so the size difference between the variants costs nothing worth boxing.
#[allow(clippy::large_enum_variant)]
enum Link {
    Up(Session),
    Down {
        retry_at: Instant,
        backoff: Duration,
    },
}

impl Worker {
    fn run(self) {
        let mut link = self.connect(BACKOFF_MIN);
        loop {
            // While down, wake up to reconnect even if no job comes.
            let wait = match &link {
                Link::Up(_) => Duration::from_secs(3600),
                Link::Down { retry_at, .. } => retry_at.saturating_duration_since(Instant::now()),
            };
            let next = {
                let jobs = self.jobs.lock().unwrap_or_else(PoisonError::into_inner);
                jobs.recv_timeout(wait)
            };
            if let Link::Down { retry_at, backoff } = link
                && Instant::now() >= retry_at
            {
                link = self.connect(backoff);
            }
            match next {
                Ok(task) => link = self.serve(link, task),
                Err(RecvTimeoutError::Timeout) => {}
                // The queue is closed: the server is shutting down.
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        // Dropping the client sends PostgreSQL a Terminate and closes the socket.
        drop(link);
        log::debug!("db worker {} finished", self.index);
    }

    fn connect(&self, backoff: Duration) -> Link {
        match self.config.connect(NoTls) {
            Ok(client) => {
                log::info!("db worker {}: connected", self.index);
                Link::Up(Session::new(client))
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

    /// Runs one task and answers it, whatever happens.
    fn serve(&self, link: Link, task: Task) -> Link {
        let Task { job, reply } = task;
        let mut session = match link {
            Link::Up(session) => session,
            down @ Link::Down { .. } => {
                reply.send(unavailable());
                return down;
            }
        };
        self.set_in_flight(Some(session.client.cancel_token()));
        let outcome = catch_unwind(AssertUnwindSafe(|| job(&mut session)));
        self.set_in_flight(None);
        match outcome {
            Ok(Ok(response)) => reply.send(response),
            Ok(Err(e)) if session.client.is_closed() => {
                log::warn!("db worker {}: connection lost ({e})", self.index);
                reply.send(unavailable());
                return Link::Down {
                    retry_at: Instant::now(),
                    backoff: BACKOFF_MIN,
                };
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
                reply.send(Response::error(
                    Status::INTERNAL_SERVER_ERROR,
                    "internal error",
                ));
            }
        }
        Link::Up(session)
    }

    fn set_in_flight(&self, token: Option<CancelToken>) {
        let mut slots = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = slots.get_mut(self.index) {
            *slot = token;
        }
    }
}

fn unavailable() -> Response {
    Response::error(Status::SERVICE_UNAVAILABLE, "database unavailable")
}

/// SQLSTATE 57014, `query_canceled`: what PostgreSQL answers a cancelled query with.
fn is_cancelled(e: &postgres::Error) -> bool {
    e.code() == Some(&postgres::error::SqlState::QUERY_CANCELED)
}
