//! The PostgreSQL worker pool: `DB_POOL_SIZE` threads, each owning one `postgres::Client`.
//!
//! What it is: a bounded job queue in front of worker threads. The event loop hands a job
//! (a closure that runs queries on a `Client`) and a [`ReplyHandle`]; a worker runs it and
//! sends the response back through the handle, which wakes the loop.
//!
//! What it is not: its work never runs on the event-loop thread, and the loop never waits
//! on it while there is anything to serve. [`Pool::submit`] does not block: a full queue
//! is refused at once (503), never waited on. The one exception, bounded: [`Pool::close`],
//! which the last shutdown step calls on the loop's thread after the last connection is
//! gone, blocks for at most the bound it is given, and reads the clock to keep to it.
//!
//! Lifecycle:
//! - start: workers connect in the background; the server serves whether or not the
//!   database is up. While no worker is connected, [`Pool::submit`] refuses at once
//!   (`503 database unavailable`) instead of queueing work nobody can do;
//! - a worker whose connection breaks answers its job 503 and reconnects with exponential
//!   backoff (100 ms up to 5 s), whether or not jobs arrive; a disconnected worker takes
//!   no jobs while another worker is connected;
//! - shutdown, clean: after the last connection, [`Pool::close`] closes the queue; workers
//!   finish what is queued, disconnect (a clean `Terminate`), and are joined, within a bound;
//! - shutdown, deadline: [`Pool::cancel_in_flight`] sends PostgreSQL's cancel request for
//!   every query still running, then `close` as above.
//!
//! Why a mutex and a condvar rather than a channel: every worker must be able to wait at
//! once — connected ones for a job, disconnected ones for their retry time — and a shared
//! `Receiver` lets only one thread wait on it at a time.
//!
//! Invariant: a job's reply is always sent — with the job's response, an error response,
//! or (if a worker panics mid-job) the 500 a dropped `ReplyHandle` sends by itself.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
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
/// The default bound on one statement, passed as a server option at connect.
const STATEMENT_TIMEOUT: &str = "-c statement_timeout=30000";

/// How long one connection attempt may take. It runs on a worker thread, but while it
/// runs that worker answers nothing.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

struct Task {
    job: Job,
    reply: ReplyHandle,
}

/// Why [`Pool::submit`] did not take a job; the reply handle comes back to answer with.
pub enum Refused {
    /// No worker is connected to the database.
    Unavailable(ReplyHandle),
    /// The queue is full (or closed).
    Busy(ReplyHandle),
}

/// What the loop and the workers share.
struct Shared {
    queue: Mutex<Queue>,
    /// Connected workers wait here for a task (one is woken per task).
    task_queued: Condvar,
    /// Disconnected workers wait here for their retry time, woken early when a worker
    /// goes down (they may have to answer queued tasks) or the queue closes. Two condvars,
    /// so a task's wake-up can never go to a worker that will not take it.
    availability_changed: Condvar,
    /// Workers connected, or making their first connection attempt: the ones that may
    /// serve a job soon. Read by the loop without taking the lock.
    available: AtomicUsize,
    capacity: usize,
    /// The cancel token of the query each worker is running, if any.
    in_flight: Mutex<Vec<Option<CancelToken>>>,
}

struct Queue {
    tasks: VecDeque<Task>,
    closed: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The worker pool: started by the server when `DATABASE_URL` is set, handed jobs by
/// [`Ctx::query`](crate::handler::Ctx::query), closed by the last shutdown step.
pub struct Pool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// Each worker reports here when it has disconnected and is about to return.
    finished: Receiver<usize>,
}

/// How a pool close went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed {
    /// Workers the pool had.
    pub workers: usize,
    /// Workers that finished and were joined within the bound.
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
        if config.get_options().is_none() {
            // A query stuck on a lock must not hold its client's connection (and a worker)
            // forever: PostgreSQL cancels it, and the client gets a 503. A URL that sets
            // its own `options` keeps them.
            config.options(STATEMENT_TIMEOUT);
        }
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                tasks: VecDeque::new(),
                closed: false,
            }),
            task_queued: Condvar::new(),
            availability_changed: Condvar::new(),
            available: AtomicUsize::new(size),
            capacity: size * QUEUE_PER_WORKER,
            in_flight: Mutex::new(vec![None; size]),
        });
        let (finished_tx, finished) = mpsc::channel();
        let mut workers = Vec::with_capacity(size);
        for index in 0..size {
            let worker = Worker {
                index,
                config: config.clone(),
                shared: Arc::clone(&shared),
            };
            let finished = finished_tx.clone();
            let spawned = thread::Builder::new()
                .name(format!("db-worker-{index}"))
                .spawn(move || {
                    worker.run();
                    let _ = finished.send(index);
                });
            match spawned {
                Ok(handle) => workers.push(handle),
                Err(e) => log::error!("cannot start database worker {index}: {e}"),
            }
        }
        Ok(Pool {
            shared,
            workers,
            finished,
        })
    }

    /// Queues `job`; its response goes to `reply`. Never blocks on the database: with no
    /// worker connected, or the queue full, the handle comes back at once.
    pub fn submit(&self, job: Job, reply: ReplyHandle) -> Result<(), Refused> {
        if self.shared.available.load(Ordering::Acquire) == 0 {
            return Err(Refused::Unavailable(reply));
        }
        let mut queue = self.shared.lock();
        if queue.closed || queue.tasks.len() >= self.shared.capacity {
            return Err(Refused::Busy(reply));
        }
        queue.tasks.push_back(Task { job, reply });
        drop(queue);
        self.shared.task_queued.notify_one();
        Ok(())
    }

    /// At the shutdown deadline: drops the queued jobs and asks PostgreSQL to cancel every
    /// query still running
    /// (the cancel request opens its own connection, so it is sent from short-lived
    /// threads, never from the loop). Returns how many were asked.
    pub fn cancel_in_flight(&self) -> usize {
        // Jobs still queued are dropped first: their clients are being answered 503, and
        // a worker must not start a query for nobody after its cancel. Dropping a task
        // drops its reply handle, whose 500 the loop ignores (the connection is gone).
        let queued = std::mem::take(&mut self.shared.lock().tasks);
        drop(queued);
        let tokens: Vec<CancelToken> = self
            .shared
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
    ///
    /// Blocks the calling thread, and reads the clock, for up to `bound`: the one wait the
    /// event loop allows itself, in its last shutdown step, when no connection is left.
    pub fn close(mut self, bound: Duration) -> Closed {
        self.shared.lock().closed = true;
        self.shared.task_queued.notify_all();
        self.shared.availability_changed.notify_all();
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

/// One worker thread.
struct Worker {
    index: usize,
    config: postgres::Config,
    shared: Arc<Shared>,
}

/// A worker's connection: up, or down with when to try again.
/// One per worker thread, so the size difference between the variants is not worth a box.
#[allow(clippy::large_enum_variant)]
enum Link {
    Up(Session),
    Down {
        retry_at: Instant,
        backoff: Duration,
    },
}

/// What a worker does next.
enum Next {
    Serve(Task),
    Reconnect,
    Exit,
}

impl Worker {
    fn run(self) {
        // Counted as available while this first attempt runs, so jobs that arrive right
        // after start-up wait for it instead of being refused.
        let mut link = self.connect(BACKOFF_MIN, true);
        loop {
            match (self.next(&link), link) {
                (Next::Serve(task), current) => link = self.serve(current, task),
                (Next::Reconnect, Link::Down { backoff, .. }) => {
                    link = self.connect(backoff, false)
                }
                (Next::Reconnect, up) => link = up,
                (Next::Exit, last) => {
                    // Dropping the client sends PostgreSQL a Terminate and closes the socket.
                    drop(last);
                    break;
                }
            }
        }
        log::debug!("db worker {} finished", self.index);
    }

    /// Waits for something to do. A connected worker takes queued tasks (and exits once
    /// the queue is closed and empty). A disconnected one waits for its retry time, taking
    /// tasks only when no worker at all is connected (to answer them 503 at once).
    fn next(&self, link: &Link) -> Next {
        let mut queue = self.shared.lock();
        loop {
            let nobody_up = self.shared.available.load(Ordering::Acquire) == 0;
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

    /// One connection attempt. `counted`: this worker already counts as available.
    fn connect(&self, backoff: Duration, counted: bool) -> Link {
        match self.config.connect(NoTls) {
            Ok(client) => {
                log::info!("db worker {}: connected", self.index);
                if !counted {
                    self.shared.available.fetch_add(1, Ordering::AcqRel);
                }
                Link::Up(Session::new(client))
            }
            Err(e) => {
                if counted {
                    self.went_down();
                }
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
                self.went_down();
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
            .shared
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
