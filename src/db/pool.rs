//! The PostgreSQL worker pool: `DB_POOL_SIZE` threads, each owning one session
//! (`session.rs`), each a `Worker` (`worker.rs`); this file is the queue between them and
//! the event loop, and the pool's lifecycle.
//!
//! What it is: a bounded job queue in front of worker threads. The event loop hands a job
//! (a closure that runs queries on a `Client`) and a [`ReplyHandle`]; a worker runs it and
//! sends the response back through the handle, which wakes the loop.
//!
//! What it is not: its work never runs on an event loop's thread, and no loop ever waits
//! on it. [`Pool::submit`] does not block: a full queue is refused at once (503), never
//! waited on. One pool serves every loop (`WORKERS`); a reply goes back through the
//! submitting loop's own inbox, which its [`ReplyHandle`] carries. [`Pool::close`] blocks,
//! for at most the bound it is given: the server calls it on the thread that coordinates
//! the loops, after the last loop has drained.
//!
//! Every database wait is bounded on our side, because a database that stops answering
//! (frozen, half-dead, or a port that accepts and never speaks) enforces nothing — not
//! its `statement_timeout`, not a TCP timeout (its kernel still acknowledges our bytes):
//! - a connection attempt, start-up handshake included: [`CONNECT_TIMEOUT`];
//! - a job's queries: [`QUERY_TIMEOUT`](super::QUERY_TIMEOUT); past it the worker sends PostgreSQL's cancel
//!   request (within [`CANCEL_TIMEOUT`](super::CANCEL_TIMEOUT)), drops the connection and reconnects;
//! - a job's wait in the queue: [`QUEUE_TIMEOUT`]; past it the job is answered without
//!   running, by the queue's timer thread (the workers may all be busy or connecting).
//!
//! Each ends in `503 database unavailable`. Together they stay well inside the default
//! `SHUTDOWN_TIMEOUT_MS` (10 s), so a dead database never holds a drain. Each worker runs
//! the asynchronous client on a current-thread runtime of its own, which is what the
//! sync `postgres` crate does too; owning the runtime is what lets every wait race a timer.
//!
//! Lifecycle:
//! - start: workers connect in the background; the server serves whether or not the
//!   database is up. A worker counts as available only once connected. While none is
//!   connected, [`Pool::submit`] refuses at once (`503 database unavailable`) instead of
//!   queueing work nobody can do — except while some worker is still on its first
//!   attempt, bounded by [`CONNECT_TIMEOUT`], so requests right after start-up wait for
//!   it instead of being refused;
//! - a worker whose connection breaks answers its job 503 and reconnects with exponential
//!   backoff (100 ms up to 5 s), whether or not jobs arrive; a disconnected worker takes
//!   no jobs while another worker is connected;
//! - shutdown, clean: after the last connection, [`Pool::close`] closes the queue; workers
//!   finish what is queued, disconnect (a clean `Terminate`), and are joined, within a bound;
//!   the connect bound, below that bound, keeps a dead database from holding it (a job
//!   still running for a client that has left may, up to [`QUERY_TIMEOUT`](super::QUERY_TIMEOUT));
//! - shutdown, deadline: [`Pool::cancel_in_flight`] sends PostgreSQL's cancel request for
//!   every query still running, then `close` as above.
//!
//! Observability: [`Pool::stats`] reads what the pool is doing (gauges) and has done
//! (counters) for a metrics scrape, from any thread; the counters are [`Counters`] in the
//! shared state. What the workers find out about the database reaches the log through one
//! pool-wide [`Outage`], so an outage reads as one warning, a summary a minute, and one
//! line when it ends, however many workers retry how often.
//!
//! Why a mutex and a condvar rather than a channel: every worker must be able to wait at
//! once — connected ones for a job, disconnected ones for their retry time — and a shared
//! `Receiver` lets only one thread wait on it at a time.
//!
//! Invariants: a job's reply is always sent — with the job's response, an error response,
//! or (if a worker panics mid-job) the 500 a dropped `ReplyHandle` sends by itself; and it
//! is sent within `QUEUE_TIMEOUT + QUERY_TIMEOUT` of the submit, whatever the database does.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use tokio_postgres::{CancelToken, Config};

use super::PoolStats;
use super::outage::Outage;
use super::session::{CONNECT_TIMEOUT, Job, STATEMENT_TIMEOUT, send_cancel};
use super::worker::{Worker, unavailable};
use crate::handler::ReplyHandle;

/// Queued jobs per worker before new ones are refused: enough to absorb a burst, small
/// enough that a request never waits behind minutes of queries.
pub(super) const QUEUE_PER_WORKER: usize = 64;

/// How long a job may wait in the queue before it is answered 503 without running. A
/// queue that has not moved for two seconds means the workers are stuck on a database
/// that does not answer; a request that waited that long is better answered now, so its
/// client can retry elsewhere, than run late.
pub const QUEUE_TIMEOUT: Duration = Duration::from_secs(2);

pub(super) struct Task {
    pub(super) job: Job,
    pub(super) reply: ReplyHandle,
    /// When it was queued: [`QUEUE_TIMEOUT`] counts from here.
    pub(super) queued_at: Instant,
}

/// Why [`Pool::submit`] did not take a job; the reply handle comes back to answer with.
pub enum Refused {
    /// No worker is connected to the database.
    Unavailable(ReplyHandle),
    /// The queue is full (or closed).
    Busy(ReplyHandle),
}

/// What the loop and the workers share.
pub(super) struct Shared {
    queue: Mutex<Queue>,
    /// Connected workers wait here for a task (one is woken per task).
    pub(super) task_queued: Condvar,
    /// Disconnected workers wait here for their retry time, woken early when a worker
    /// goes down (they may have to answer queued tasks) or the queue closes. Two condvars,
    /// so a task's wake-up can never go to a worker that will not take it.
    pub(super) availability_changed: Condvar,
    /// The queue's timer waits here for the oldest task's time to run out; woken when a
    /// task arrives in an empty queue (it then has a new oldest task) or the queue closes.
    oldest_changed: Condvar,
    /// Workers connected: the ones that may serve a job now. Read by the loop without
    /// taking the lock.
    pub(super) available: AtomicUsize,
    /// Workers still on their first connection attempt: while there are any, a job is
    /// queued rather than refused (the attempt, and the queue, are bounded).
    pub(super) starting: AtomicUsize,
    capacity: usize,
    /// The cancel token of the query each worker is running, if any.
    pub(super) in_flight: Mutex<Vec<Option<CancelToken>>>,
    /// Whether the database is reachable, as the workers last found it: decides which of
    /// their findings are logged. A lock of its own, taken once per connection attempt
    /// and never with the queue's.
    outage: Mutex<Outage>,
    pub(super) counters: Counters,
}

/// What the pool has done since start, for [`Pool::stats`]. Each is a tally that orders
/// no other memory access, so `Relaxed` is enough everywhere: a scrape may see one counter
/// a moment ahead of another, never a wrong total.
#[derive(Default)]
pub(super) struct Counters {
    pub(super) rejected_busy: AtomicU64,
    pub(super) rejected_unavailable: AtomicU64,
    pub(super) queue_timeouts: AtomicU64,
    pub(super) reconnects: AtomicU64,
    pub(super) connect_failures: AtomicU64,
}

pub(super) struct Queue {
    pub(super) tasks: VecDeque<Task>,
    pub(super) closed: bool,
}

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn outage(&self) -> MutexGuard<'_, Outage> {
        self.outage.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The worker pool: started by the server when `DATABASE_URL` is set, handed jobs by
/// [`Ctx::query`](crate::handler::Ctx::query), closed by the last shutdown step.
pub struct Pool {
    shared: Arc<Shared>,
    /// Workers configured, whether or not their threads started.
    size: usize,
    workers: Vec<JoinHandle<()>>,
    /// Answers tasks that waited in the queue too long.
    queue_timer: Option<JoinHandle<()>>,
    /// Each worker reports here when it has disconnected and is about to return. Behind a
    /// lock only so the pool is `Sync`, shared by every event loop (`WORKERS`); only
    /// [`Pool::close`], which owns the pool, reads it.
    finished: Mutex<Receiver<usize>>,
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
    pub fn start(url: &str, size: usize) -> Result<Pool, tokio_postgres::Error> {
        let mut config: Config = url.parse()?;
        if config.get_application_name().is_none() {
            // So `pg_stat_activity` shows which connections are ours.
            config.application_name("lastcall");
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_options().is_none() {
            // A query stuck on a lock is stopped by PostgreSQL itself when we give up on
            // it, rather than run on for nobody. A URL that sets its own `options` keeps them.
            config.options(STATEMENT_TIMEOUT);
        }
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                tasks: VecDeque::new(),
                closed: false,
            }),
            task_queued: Condvar::new(),
            availability_changed: Condvar::new(),
            oldest_changed: Condvar::new(),
            available: AtomicUsize::new(0),
            starting: AtomicUsize::new(size),
            capacity: size * QUEUE_PER_WORKER,
            in_flight: Mutex::new(vec![None; size]),
            outage: Mutex::new(Outage::default()),
            counters: Counters::default(),
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
                Err(e) => {
                    // It will never make its first attempt: stop waiting for it.
                    shared.starting.fetch_sub(1, Ordering::AcqRel);
                    log::error!("cannot start database worker {index}: {e}");
                }
            }
        }
        let timer_shared = Arc::clone(&shared);
        let queue_timer = thread::Builder::new()
            .name("db-queue-timer".into())
            .spawn(move || expire_queued(&timer_shared));
        let queue_timer = match queue_timer {
            Ok(handle) => Some(handle),
            Err(e) => {
                log::error!("cannot start the database queue timer: {e}");
                None
            }
        };
        Ok(Pool {
            shared,
            size,
            workers,
            queue_timer,
            finished: Mutex::new(finished),
        })
    }

    /// Queues `job`; its response goes to `reply`. Never blocks on the database: with no
    /// worker connected (nor about to be), or the queue full, the handle comes back at once.
    pub fn submit(&self, job: Job, reply: ReplyHandle) -> Result<(), Refused> {
        if self.shared.available.load(Ordering::Acquire) == 0
            && self.shared.starting.load(Ordering::Acquire) == 0
        {
            self.shared
                .counters
                .rejected_unavailable
                .fetch_add(1, Ordering::Relaxed);
            return Err(Refused::Unavailable(reply));
        }
        let mut queue = self.shared.lock();
        if queue.closed || queue.tasks.len() >= self.shared.capacity {
            drop(queue);
            self.shared
                .counters
                .rejected_busy
                .fetch_add(1, Ordering::Relaxed);
            return Err(Refused::Busy(reply));
        }
        let was_empty = queue.tasks.is_empty();
        queue.tasks.push_back(Task {
            job,
            reply,
            queued_at: Instant::now(),
        });
        drop(queue);
        self.shared.task_queued.notify_one();
        if was_empty {
            self.shared.oldest_changed.notify_one();
        }
        Ok(())
    }

    /// What the pool is doing now and has done since start, for a metrics scrape.
    pub fn stats(&self) -> PoolStats {
        let counters = &self.shared.counters;
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        PoolStats {
            workers: self.size as u64,
            connected: self.shared.available.load(Ordering::Relaxed) as u64,
            // Read under the queue's lock rather than kept in an atomic: a scrape is rare,
            // and an atomic would cost every submit and every take another write for it.
            queued: self.shared.lock().tasks.len() as u64,
            rejected_busy: read(&counters.rejected_busy),
            rejected_unavailable: read(&counters.rejected_unavailable),
            queue_timeouts: read(&counters.queue_timeouts),
            reconnects: read(&counters.reconnects),
            connect_failures: read(&counters.connect_failures),
        }
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
                    if let Err(e) = send_cancel(&token) {
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
    /// Blocks the calling thread, and reads the clock, for up to `bound`: the server calls
    /// it from the thread that coordinates its event loops, once the last loop has drained,
    /// so no loop ever waits on it.
    pub fn close(mut self, bound: Duration) -> Closed {
        self.shared.lock().closed = true;
        self.shared.task_queued.notify_all();
        self.shared.availability_changed.notify_all();
        self.shared.oldest_changed.notify_all();
        let deadline = Instant::now() + bound;
        let workers = self.workers.len();
        let mut done = Vec::with_capacity(workers);
        while done.len() < workers {
            let left = deadline.saturating_duration_since(Instant::now());
            let finished = self
                .finished
                .get_mut()
                .unwrap_or_else(PoisonError::into_inner);
            match finished.recv_timeout(left) {
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
        // The timer returns as soon as it sees the queue closed: it never waits on the
        // database, only on the lock.
        if let Some(timer) = self.queue_timer.take() {
            let _ = timer.join();
        }
        Closed { workers, joined }
    }
}

/// The queue's timer thread: answers `503 database unavailable` to every task that has
/// waited [`QUEUE_TIMEOUT`], oldest first, until the queue closes. A thread of its own
/// because the workers cannot be counted on to look: all of them may be inside a call or
/// a connection attempt.
pub(super) fn expire_queued(shared: &Shared) {
    let mut queue = shared.lock();
    while !queue.closed {
        let now = Instant::now();
        // Tasks are queued in order, so the expired ones are at the front.
        let mut expired = Vec::new();
        while let Some(task) = queue.tasks.front()
            && now.saturating_duration_since(task.queued_at) >= QUEUE_TIMEOUT
        {
            expired.extend(queue.tasks.pop_front());
        }
        if !expired.is_empty() {
            drop(queue);
            shared
                .counters
                .queue_timeouts
                .fetch_add(expired.len() as u64, Ordering::Relaxed);
            log::warn!(
                "db queue: {} jobs waited {}ms for a worker; answered 503",
                expired.len(),
                QUEUE_TIMEOUT.as_millis()
            );
            for task in expired {
                task.reply.send(unavailable());
            }
            queue = shared.lock();
            continue;
        }
        let oldest = queue.tasks.front().map(|task| task.queued_at);
        queue = match oldest {
            None => shared
                .oldest_changed
                .wait(queue)
                .unwrap_or_else(PoisonError::into_inner),
            Some(at) => {
                let left = (at + QUEUE_TIMEOUT).saturating_duration_since(now);
                shared
                    .oldest_changed
                    .wait_timeout(queue, left)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::sync::Arc;
    use std::thread;
    use std::time::{Duration, Instant};

    use mio::{Poll, Token, Waker};

    use super::super::worker::unavailable;
    use super::{Pool, QUEUE_PER_WORKER, Refused};
    use crate::db::PoolStats;
    use crate::handler::{Ctx, Inbox, ReplyHandle, ReplyId};

    /// Nothing listens on port 1: every attempt is refused at once.
    const CLOSED_PORT: &str = "postgres://lastcall@127.0.0.1:1/lastcall";

    /// Longer than any wait below should take; only a hang reaches it.
    const PATIENCE: Duration = Duration::from_secs(10);

    /// A loop's inbox with nobody reading it: the replies just pile up.
    fn inbox() -> (Poll, Arc<Inbox>) {
        let poll = Poll::new().expect("a poll");
        let waker = Waker::new(poll.registry(), Token(0)).expect("a waker");
        (poll, Arc::new(Inbox::new(waker)))
    }

    fn handle(inbox: &Arc<Inbox>) -> ReplyHandle {
        let id = ReplyId {
            token: Token(1),
            seq: 0,
        };
        let stats = crate::stats::Stats::new(1, true);
        Ctx::new(false, id, inbox, None, &stats, Instant::now())
            .defer()
            .0
    }

    fn submit(pool: &Pool, inbox: &Arc<Inbox>) -> Result<(), Refused> {
        pool.submit(Box::new(|_| Ok(unavailable())), handle(inbox))
    }

    /// Polls `stats` every few milliseconds until `done` holds, for at most [`PATIENCE`].
    fn wait_stats(pool: &Pool, done: impl Fn(&PoolStats) -> bool) -> PoolStats {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let stats = pool.stats();
            if done(&stats) || Instant::now() >= deadline {
                return stats;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn stats_count_failed_connection_attempts_against_a_closed_port() {
        let pool = Pool::start(CLOSED_PORT, 2).expect("a valid URL");
        // Two first attempts, then retries after the shortest backoff.
        let stats = wait_stats(&pool, |s| s.connect_failures >= 4);
        assert!(stats.connect_failures >= 4, "{stats:?}");
        assert_eq!(stats.workers, 2);
        assert_eq!(stats.connected, 0);
        assert_eq!(stats.reconnects, 0);
        pool.close(PATIENCE);
    }

    #[test]
    fn submit_with_no_database_reachable_is_refused_and_counted() {
        let (_poll, inbox) = inbox();
        let pool = Pool::start(CLOSED_PORT, 2).expect("a valid URL");
        let _ = wait_stats(&pool, |s| s.connect_failures >= 2);
        // Both first attempts have failed; a submit may still meet a worker's `starting`
        // count for a moment, and is then queued and answered 503 by that worker.
        let deadline = Instant::now() + PATIENCE;
        let mut refused = 0;
        while refused < 3 && Instant::now() < deadline {
            match submit(&pool, &inbox) {
                Err(Refused::Unavailable(_)) => refused += 1,
                Err(Refused::Busy(_)) => panic!("refused as busy"),
                Ok(()) => thread::sleep(Duration::from_millis(5)),
            }
        }
        let stats = pool.stats();
        assert_eq!(stats.rejected_unavailable, refused, "{stats:?}");
        assert_eq!(refused, 3);
        assert_eq!(stats.rejected_busy, 0);
        pool.close(PATIENCE);
    }

    #[test]
    fn submit_to_a_full_queue_is_refused_as_busy_and_counted() {
        // A listener that never accepts: the worker's first attempt waits out the connect
        // bound, and jobs submitted meanwhile queue for it.
        let silent = TcpListener::bind("127.0.0.1:0").expect("a listener");
        let port = silent.local_addr().expect("its address").port();
        let (_poll, inbox) = inbox();
        let pool = Pool::start(&format!("postgres://lastcall@127.0.0.1:{port}/lastcall"), 1)
            .expect("a valid URL");
        for n in 0..QUEUE_PER_WORKER {
            assert!(submit(&pool, &inbox).is_ok(), "job {n} refused");
        }
        assert!(matches!(submit(&pool, &inbox), Err(Refused::Busy(_))));
        let stats = pool.stats();
        assert_eq!(stats.queued, QUEUE_PER_WORKER as u64, "{stats:?}");
        assert_eq!(stats.rejected_busy, 1);
        assert_eq!(stats.rejected_unavailable, 0);
        pool.close(PATIENCE);
    }
}
