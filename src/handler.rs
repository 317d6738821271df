//! The contract between the engine and a handler: what a handler is given, and the ways
//! it can answer.
//!
//! What it is: [`Answer`] (now, after a loop timer, later from another thread, as a
//! stream of chunks — or "read the body first"), the [`Ctx`] a handler is called with,
//! and the one-shot [`ReplyHandle`] that carries a response back to the event loop from
//! any thread.
//!
//! When a handler is called: as soon as a request's head is complete. A request with a
//! body comes with [`Request::body`] still `None`: a handler whose answer does not depend
//! on the body (a 404, a 405, a route that takes none) answers at once, before the body
//! is read — and a client waiting on `Expect: 100-continue` never gets a `100` before
//! that 4xx. A handler that needs the body returns [`Answer::ReadBody`]; the engine sends
//! the `100 Continue`, reads the body within `MAX_BODY_BYTES`, and calls the handler again
//! with it. (Go's net/http works the same way: its `100 Continue` goes out on the
//! handler's first read of the body.)
//!
//! What it is not: it never blocks. A handler runs on the event-loop thread, so anything
//! slow — a timer, a database query — must be expressed as `After`, `Later` or `Stream`,
//! and the loop goes on serving other connections meanwhile.
//!
//! Invariants:
//! - a `ReplyHandle` answers exactly once: `send` consumes it, and dropping it unsent
//!   (a worker that panicked, a bug) answers 500 instead of leaving the client hanging;
//! - a reply for a connection that has since closed, or for an earlier request on it,
//!   is recognised by its [`ReplyId`] and dropped by the loop.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use mio::{Token, Waker};

use crate::db::Pool;
use crate::http::request::Request;
use crate::http::response::{Body, Response, Status};
use crate::stats::{ROUTE_OTHER, Stats};

/// What answers requests: the reference routes, or an embedder's application.
///
/// A plain function `fn(&Request, &mut Ctx) -> Answer` is a handler, and so is a closure;
/// an application with state of its own (its database pool, its configuration) implements
/// the trait on its own type. Called on the event loop's thread once a request's head is
/// complete, and once more with the body if it answers [`Answer::ReadBody`]; it must not
/// block (see the module doc). `Send + Sync`, so one handler can serve several loops.
///
/// An application with state, its own routes, and the reference routes for the rest:
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use lastcall::handler::{Answer, Ctx, Handler};
/// use lastcall::http::request::Request;
/// use lastcall::http::response::{Body, Response, Status, TEXT};
///
/// struct Counter {
///     greeting: String,
///     hits: AtomicU64,
/// }
///
/// impl Handler for Counter {
///     fn handle(&self, req: &Request<'_>, ctx: &mut Ctx<'_>) -> Answer {
///         match req.path {
///             "/hello" => {
///                 // `&self`, and `Sync` (one handler may serve several loops): state
///                 // that changes lives in atomics or behind a lock.
///                 let n = self.hits.fetch_add(1, Ordering::Relaxed) + 1;
///                 let body = format!("{} #{n}", self.greeting);
///                 Answer::Now(Response::new(Status::OK, TEXT, Body::Bytes(body.into_bytes())))
///             }
///             _ => lastcall::routes::handle(req, ctx),
///         }
///     }
/// }
///
/// fn serves<H: Handler>(_: &H) {}
/// serves(&Counter { greeting: "Hello".into(), hits: AtomicU64::new(0) });
/// serves(&lastcall::routes::handle); // a plain function is a handler too
/// ```
pub trait Handler: Send + Sync + 'static {
    /// Answers one request.
    fn handle(&self, req: &Request<'_>, ctx: &mut Ctx<'_>) -> Answer;
}

impl<F> Handler for F
where
    F: Fn(&Request<'_>, &mut Ctx<'_>) -> Answer + Send + Sync + 'static,
{
    fn handle(&self, req: &Request<'_>, ctx: &mut Ctx<'_>) -> Answer {
        self(req, ctx)
    }
}

/// A shared handler is a handler: an application can give the server an `Arc` of its
/// state and keep another, to read it or to complete it after `bind` (a shutdown handle
/// for an admin route, say).
impl<H: Handler + ?Sized> Handler for Arc<H> {
    fn handle(&self, req: &Request<'_>, ctx: &mut Ctx<'_>) -> Answer {
        (**self).handle(req, ctx)
    }
}

/// How a handler answers.
pub enum Answer {
    /// The response is ready.
    Now(Response),
    /// Send this response once `Duration` has passed — a loop timer, no sleeping thread.
    After(Duration, Response),
    /// The response will come through the [`ReplyHandle`] that [`Ctx::defer`] handed out.
    Later(Pending),
    /// A chunked response whose chunks the loop sends over time.
    Stream(Stream),
    /// Only while [`Request::body`] is `None`: read the body, then call the handler again
    /// with it.
    ReadBody,
}

/// A response whose body is produced over time: the head goes out at once, then one
/// chunk every `interval`, then the end of the body when `chunks` runs out.
pub struct Stream {
    /// Status, content type and extra fields; its body is ignored.
    pub head: Response,
    /// The wait before each chunk (a loop timer, no sleeping thread).
    pub interval: Duration,
    /// The chunks, produced one at a time on the loop's thread: an iterator must not
    /// block either. A panic in it cuts the response.
    pub chunks: Box<dyn Iterator<Item = Vec<u8>>>,
}

/// What a handler may know and do besides reading its request.
pub struct Ctx<'a> {
    shutting_down: bool,
    id: ReplyId,
    inbox: &'a Arc<Inbox>,
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    db: Option<&'a Pool>,
    stats: &'a Stats,
    now: Instant,
    route: &'static str,
}

impl<'a> Ctx<'a> {
    pub(crate) fn new(
        shutting_down: bool,
        id: ReplyId,
        inbox: &'a Arc<Inbox>,
        db: Option<&'a Pool>,
        stats: &'a Stats,
        now: Instant,
    ) -> Ctx<'a> {
        Ctx {
            shutting_down,
            id,
            inbox,
            db,
            stats,
            now,
            route: ROUTE_OTHER,
        }
    }

    /// Names the route this request matched, for `/metrics`: a template such as
    /// `/users/:id`, never the path as sent (each name is a series of its own, so one per
    /// route). A request whose handler names none is counted as `other`.
    pub fn route(&mut self, name: &'static str) {
        self.route = name;
    }

    /// The route the handler named.
    pub(crate) fn route_name(&self) -> &'static str {
        self.route
    }

    /// `GET /metrics`: every loop's numbers in Prometheus' text format — or 404 when
    /// `METRICS_LISTEN` serves them on an address of their own, so the public port does
    /// not expose them.
    pub fn metrics(&self) -> Response {
        if !self.stats.on_main_port() {
            return Response::error(Status::NOT_FOUND, "not found");
        }
        metrics_response(self.stats, self.now)
    }

    /// True once the server has begun its graceful shutdown (readiness says 503).
    pub fn shutting_down(&self) -> bool {
        self.shutting_down
    }

    /// Promises an answer later: send the handle to whoever will produce the response
    /// (a worker thread, a timer), and return `Answer::Later(pending)`.
    pub fn defer(&mut self) -> (ReplyHandle, Pending) {
        let handle = ReplyHandle {
            id: self.id,
            inbox: Some(Arc::clone(self.inbox)),
        };
        (handle, Pending(self.id))
    }
}

impl Ctx<'_> {
    /// Runs `job` on a database worker and answers with what it returns. Answers 503 at
    /// once when no database is configured, none is reachable, or the pool's queue is
    /// full: a request never waits without bound for a worker.
    #[cfg(feature = "postgres")]
    pub fn query(&mut self, job: crate::db::Job) -> Answer {
        let Some(pool) = self.db else {
            return Answer::Now(not_configured());
        };
        let (handle, pending) = self.defer();
        let (handle, reason) = match pool.submit(job, handle) {
            Ok(()) => return Answer::Later(pending),
            Err(crate::db::Refused::Unavailable(handle)) => (handle, "database unavailable"),
            Err(crate::db::Refused::Busy(handle)) => (handle, "database busy"),
        };
        handle.abandon();
        Answer::Now(Response::error(Status::SERVICE_UNAVAILABLE, reason))
    }
}

/// The `/metrics` answer: Prometheus' text exposition format, version 0.0.4.
pub(crate) fn metrics_response(stats: &Stats, now: Instant) -> Response {
    let body = stats.render(now).into_bytes();
    Response::new(Status::OK, METRICS_TYPE, Body::Bytes(body))
}

/// The content type Prometheus asks text scrapes to carry.
const METRICS_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The answer of every database route when `DATABASE_URL` is unset.
pub fn not_configured() -> Response {
    Response::error(Status::SERVICE_UNAVAILABLE, "database not configured")
}

/// Proof that a [`ReplyHandle`] exists for this request; only [`Ctx::defer`] makes one,
/// so `Answer::Later` cannot be returned with nobody to answer.
pub struct Pending(pub(crate) ReplyId);

/// Which request a reply is for: the connection's token and the request's number on it.
/// Tokens are never reused for another socket while replies may still name them (see
/// `server`), and the number tells an old request from the current one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyId {
    /// The connection.
    pub token: Token,
    /// The request's number on that connection.
    pub seq: u32,
}

/// Where replies wait for the loop: a queue behind a mutex, and the waker that makes
/// the loop's `poll` return to read it.
pub struct Inbox {
    queue: Mutex<Vec<(ReplyId, Response)>>,
    waker: Waker,
}

impl Inbox {
    /// An empty inbox that wakes its loop with `waker`.
    pub fn new(waker: Waker) -> Inbox {
        Inbox {
            queue: Mutex::new(Vec::new()),
            waker,
        }
    }

    /// Moves every waiting reply into `into` (the loop's reusable vector). The lock is
    /// held only for a swap, never while a reply is handled.
    pub fn drain_into(&self, into: &mut Vec<(ReplyId, Response)>) {
        // A poisoned lock means a sender panicked mid-push; the queue is still a valid Vec.
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        std::mem::swap(&mut *queue, into);
    }

    fn push(&self, id: ReplyId, response: Response) {
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((id, response));
        self.wake();
    }

    /// Makes the loop's `poll` return. Besides replies, the server's shutdown handle
    /// rings it: mio allows one waker per poll, so everything that wakes the loop from
    /// another thread shares this one.
    pub(crate) fn wake(&self) {
        // Failing to wake means the loop is gone; nobody is left to answer.
        let _ = self.waker.wake();
    }
}

/// The one-shot handle a deferred handler answers through. `Send`: it may cross threads.
pub struct ReplyHandle {
    id: ReplyId,
    inbox: Option<Arc<Inbox>>,
}

impl ReplyHandle {
    /// Delivers the response and wakes the event loop.
    pub fn send(mut self, response: Response) {
        if let Some(inbox) = self.inbox.take() {
            inbox.push(self.id, response);
        }
    }

    /// Withdraws the promise without answering: only for a handle that never left the
    /// handler (the pool refused the job), whose request is answered directly instead.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    fn abandon(mut self) {
        self.inbox = None;
    }
}

impl Drop for ReplyHandle {
    /// A handle dropped unsent still answers, with a 500, so no client waits forever on a
    /// worker that died.
    fn drop(&mut self) {
        if let Some(inbox) = self.inbox.take() {
            let response = Response::internal_error();
            inbox.push(self.id, response);
        }
    }
}
