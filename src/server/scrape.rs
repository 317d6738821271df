//! `METRICS_LISTEN`: a second address that answers `GET /metrics` and nothing else, on a
//! thread of its own.
//!
//! What it is: [`Scrape`], one thread with one blocking listener, serving one scrape at a
//! time: read a head (bounded in size and time), answer it with `Connection: close`,
//! close. It reads the same [`Stats`] as the main port's `/metrics` route.
//!
//! Why a thread and blocking sockets, in a server of event loops: a scrape comes every few
//! seconds from one Prometheus, and it must be answered when the loops cannot be — during
//! the drain, after the main listener has closed, which is when an operator most wants to
//! watch. It shares nothing with the loops but the cells it reads, so it can never delay
//! a request; and its timeouts bound what a client that stalls can hold (this thread
//! only, for `IO_TIMEOUT`).
//!
//! What it is not: a general HTTP server. The head is parsed by the same `http` code as
//! the main port's, and anything but `GET`/`HEAD /metrics` gets 404 or 405.
//!
//! Lifecycle: bound in `Server::bind` (a bad address is a bind error, before anything
//! starts), served from `Server::run` until `run` returns, after the shutdown report;
//! the thread is told to stop, not waited for (`Serving::stop`).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime};

use crate::handler::metrics_response;
use crate::http::date::DateCache;
use crate::http::request::{Method, Request, Version, parse_request};
use crate::http::response::{self, Delivery, Response, Status};
use crate::stats::Stats;

/// How long one scrape may take to send its head, or to take our answer.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// How often the thread looks up from `accept` to see whether it should stop.
const STOP_CHECK: Duration = Duration::from_millis(200);

/// A scrape's head at most: a Prometheus scrape is a few hundred bytes.
const MAX_HEAD: usize = 8 * 1024;

/// The `METRICS_LISTEN` listener, bound and not yet served.
pub(super) struct Scrape {
    listener: TcpListener,
}

/// The serving thread, and how to stop it.
pub(super) struct Serving {
    stop: Arc<AtomicBool>,
    /// Detached at `stop`, not joined.
    thread: JoinHandle<()>,
}

impl Scrape {
    /// Binds `addr`.
    pub(super) fn bind(addr: SocketAddr) -> io::Result<Scrape> {
        let listener = TcpListener::bind(addr)?;
        // `accept` returns every `STOP_CHECK` with nothing (SO_RCVTIMEO applies to a
        // listening socket on Linux), so the thread sees its stop flag.
        socket2::SockRef::from(&listener).set_read_timeout(Some(STOP_CHECK))?;
        Ok(Scrape { listener })
    }

    /// The address bound (the real port for port 0).
    pub(super) fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves scrapes of `stats` on a thread of its own.
    pub(super) fn serve(self, stats: Arc<Stats>) -> io::Result<Serving> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = thread::Builder::new()
            .name("lastcall-metrics".into())
            .spawn(move || {
                while !stopped.load(Ordering::Relaxed) {
                    match self.listener.accept() {
                        Ok((client, _)) => {
                            if let Err(e) = answer(client, &stats) {
                                log::debug!("metrics scrape: {e}");
                            }
                        }
                        Err(e)
                            if matches!(
                                e.kind(),
                                io::ErrorKind::WouldBlock
                                    | io::ErrorKind::TimedOut
                                    | io::ErrorKind::Interrupted
                            ) => {}
                        Err(e) => {
                            // Out of descriptors, most likely: back off, as the main
                            // listener does, rather than spin.
                            log::warn!("metrics listener: accept failed: {e}");
                            thread::sleep(STOP_CHECK);
                        }
                    }
                }
            })?;
        Ok(Serving { stop, thread })
    }
}

impl Serving {
    /// Stops serving: the thread notices within `STOP_CHECK`, or after the scrape in
    /// progress (bounded by `IO_TIMEOUT`). Not waited for: a client that stalls on this
    /// port must not hold the exit, which comes right after the report.
    pub(super) fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        drop(self.thread);
    }
}

/// Reads one request head from `client` and answers it.
fn answer(mut client: TcpStream, stats: &Stats) -> io::Result<()> {
    client.set_read_timeout(Some(IO_TIMEOUT))?;
    client.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0; 1024];
    let (response, head_only) = loop {
        let n = client.read(&mut buf)?;
        if n == 0 {
            return Ok(()); // gone before asking anything
        }
        head.extend_from_slice(&buf[..n]);
        match parse_request(&head, MAX_HEAD) {
            Ok(Some(parsed)) => break route(&Request::parsed(&parsed, &head, Some(&[])), stats),
            Ok(None) => {}
            Err(e) => {
                let (status, reason) = e.status();
                break (Response::error(status, reason), false);
            }
        }
    };
    let delivery = Delivery {
        version: Version::Http11,
        close: true,
        head_only,
    };
    let date = DateCache::new(Instant::now(), SystemTime::now());
    let mut out = Vec::with_capacity(16 * 1024);
    // Every body here is built per request, so the encoder copies it whole.
    let _ = response::encode(&response, delivery, date.as_bytes(), &mut out);
    client.write_all(&out)?;
    client.flush()
}

/// The one route: `/metrics`. Returns the answer, and whether it goes without its body.
fn route(req: &Request<'_>, stats: &Stats) -> (Response, bool) {
    match (req.method, req.path) {
        (Method::Get | Method::Head, "/metrics") => (
            metrics_response(stats, Instant::now()),
            req.method == Method::Head,
        ),
        (_, "/metrics") => {
            let r = Response::error(Status::METHOD_NOT_ALLOWED, "method not allowed");
            (r.with_header("Allow", "GET, HEAD"), false)
        }
        _ => (Response::error(Status::NOT_FOUND, "not found"), false),
    }
}
