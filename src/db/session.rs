//! A worker's PostgreSQL session: one connection, and every wait on it bounded.
//!
//! What it is: [`Session`], the connection a [`Job`] runs its queries on, opened within
//! [`CONNECT_TIMEOUT`] (handshake and login included), each call raced against a deadline
//! on the session's own current-thread runtime, and PostgreSQL's cancel request
//! ([`CANCEL_TIMEOUT`]); the bounds of a connection and a query, with their reasons.
//!
//! What it is not: the queue or the threads (`pool.rs`, `worker.rs`). A session is used
//! by one worker thread at a time and never by the event loop.

use std::fmt;
use std::future::Future;
use std::time::{Duration, Instant};

use tokio::runtime::{Builder, Runtime};
use tokio::task::JoinHandle as TaskHandle;
use tokio_postgres::types::ToSql;
use tokio_postgres::{CancelToken, Client, Config, NoTls, Row, Statement};

use crate::http::response::Response;

/// How long one connection attempt may take, from the TCP (or Unix socket) connect to the
/// end of the start-up handshake and authentication. A local or same-region PostgreSQL
/// answers in milliseconds; one second leaves room for a slow authentication and stays
/// below the pool's 2 s close bound, so a worker caught mid-attempt by a shutdown is
/// still joined in time. `connect_timeout` in the URL bounds only the socket connect and
/// is kept as given.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// How long one job's queries may run, counted from when a worker takes it. The reference
/// queries take milliseconds; five seconds lets a loaded database be slow without failing
/// requests, and with [`QUEUE_TIMEOUT`](super::QUEUE_TIMEOUT) keeps a reply within 7 s of its request, inside
/// the default 10 s shutdown deadline. Past it the worker cancels, drops the connection
/// and reconnects: the connection's protocol state is unknown after an abandoned call.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a cancel request, or a goodbye on a closing connection, may take: both only
/// write a few bytes, so a second means the host is gone.
pub const CANCEL_TIMEOUT: Duration = Duration::from_secs(1);

/// The server-side bound on one statement, passed as a server option at connect: a little
/// inside [`QUERY_TIMEOUT`], so a database that is alive stops a slow query itself first,
/// answers `query_canceled` (503) and keeps the connection; ours then fires only for a
/// database that cannot answer at all.
pub(super) const STATEMENT_TIMEOUT: &str = "-c statement_timeout=4500";

/// A unit of database work: runs on a worker's session, returns the response to send.
pub type Job = Box<dyn FnOnce(&mut Session) -> Result<Response, Error> + Send>;

/// Why a database call failed.
#[derive(Debug)]
pub enum Error {
    /// PostgreSQL answered with an error, or the connection broke.
    Postgres(tokio_postgres::Error),
    /// Our own bound ran out before PostgreSQL answered.
    TimedOut,
    /// The worker's runtime could not be built (out of descriptors, say).
    Runtime(std::io::Error),
}

impl From<tokio_postgres::Error> for Error {
    fn from(e: tokio_postgres::Error) -> Error {
        Error::Postgres(e)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // The client's own text names only the kind ("error connecting to server",
            // "db error"); the why ("Connection refused", PostgreSQL's message) is in
            // its sources, and is what a person reading the log needs.
            Error::Postgres(e) => {
                e.fmt(f)?;
                let mut source = std::error::Error::source(e);
                while let Some(cause) = source {
                    write!(f, ": {cause}")?;
                    source = cause.source();
                }
                Ok(())
            }
            Error::TimedOut => f.write_str("no answer within our bound"),
            Error::Runtime(e) => write!(f, "cannot start a runtime: {e}"),
        }
    }
}

/// A worker's connection with its prepared statements. Jobs name their SQL as
/// `&'static str`; each statement is prepared once per connection, so a query costs one
/// round trip instead of two.
///
/// The connection's socket is driven by a task on the session's own runtime, polled only
/// while a call runs (as the sync `postgres` client does); dropping the session drops
/// the runtime, the task and so the socket.
pub struct Session {
    runtime: Runtime,
    pub(super) client: Client,
    /// The task that drives the socket; it ends once the client is dropped and the
    /// `Terminate` is sent, or the connection breaks.
    connection: TaskHandle<()>,
    prepared: Vec<(&'static str, Statement)>,
    /// When the current job's time is up: every call races it.
    pub(super) deadline: Instant,
}

impl Session {
    /// Connects, handshake included, within [`CONNECT_TIMEOUT`].
    pub(super) fn open(config: &Config) -> Result<Session, Error> {
        let runtime = Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(Error::Runtime)?;
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        let (client, connection) = within(&runtime, deadline, config.connect(NoTls))?;
        let connection = runtime.spawn(async move {
            if let Err(e) = connection.await {
                log::debug!("db connection ended: {e}");
            }
        });
        Ok(Session {
            runtime,
            client,
            connection,
            prepared: Vec::new(),
            deadline,
        })
    }

    /// Runs a query that returns at most one row.
    pub fn query_opt(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, Error> {
        let statement = self.statement(sql)?;
        within(
            &self.runtime,
            self.deadline,
            self.client.query_opt(&statement, params),
        )
    }

    fn statement(&mut self, sql: &'static str) -> Result<Statement, Error> {
        // A handful of statements per pool: a linear scan beats hashing.
        if let Some((_, statement)) = self
            .prepared
            .iter()
            .find(|(s, _)| std::ptr::eq(*s, sql) || *s == sql)
        {
            return Ok(statement.clone());
        }
        let statement = within(&self.runtime, self.deadline, self.client.prepare(sql))?;
        self.prepared.push((sql, statement.clone()));
        Ok(statement)
    }

    /// Says goodbye: PostgreSQL gets a `Terminate` and the socket closes, within
    /// [`CANCEL_TIMEOUT`] (a frozen server cannot hold a worker's exit).
    pub(super) fn close(self) {
        let Session {
            runtime,
            client,
            connection,
            ..
        } = self;
        // With the client gone, the connection task sends `Terminate` and ends.
        drop(client);
        let deadline = Instant::now() + CANCEL_TIMEOUT;
        let _ =
            runtime.block_on(async { tokio::time::timeout_at(deadline.into(), connection).await });
        // Dropping the runtime drops the task, and its socket, if it has not ended.
        drop(runtime);
    }
}

/// Runs `call` on `runtime` until it ends or `deadline` passes, whichever comes first.
/// Dropping a call that timed out leaves its connection mid-protocol: the caller must not
/// use that connection again.
pub(super) fn within<T>(
    runtime: &Runtime,
    deadline: Instant,
    call: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, Error> {
    // The timer is made inside `block_on`: a tokio timer needs the runtime it runs on.
    let outcome = runtime.block_on(async { tokio::time::timeout_at(deadline.into(), call).await });
    match outcome {
        Ok(result) => result.map_err(Error::Postgres),
        Err(_) => Err(Error::TimedOut),
    }
}

/// Sends PostgreSQL's cancel request for the query `token` names. The request opens its
/// own connection, writes 16 bytes and closes, expecting no answer; it is bounded all the
/// same, since even a connect can hang on a dead host.
pub(super) fn send_cancel(token: &CancelToken) -> Result<(), Error> {
    let runtime = Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    let deadline = Instant::now() + CANCEL_TIMEOUT;
    within(&runtime, deadline, token.cancel_query(NoTls))
}
