//! Accepting: the listener, and whether to take the next client from its backlog now.
//!
//! What it is: the listening socket's making ([`listener`], once) and sharing ([`share`],
//! a copy per loop), and [`Acceptor`], which owns one loop's copy and its accept state —
//! open, full (at the loop's share of `MAX_CONNECTIONS`), or paused after the process ran
//! out of file descriptors — and hands the loop one accepted socket at a time ([`Acceptor::next`]) until the backlog is
//! empty or a limit says stop. It also keeps the one number the drain delay reports: when
//! the last client accepted during the delay arrived.
//!
//! What it is not: it does not register connections, build them or count them (the loop
//! does, and passes the count in), and it does not decide when the listener closes (the
//! phase machine does; [`Acceptor::close`] carries it out). Lifecycle steps: accepting
//! while serving and during the drain delay (shutdown step 2), then the last accept of
//! the backlog and the close of this loop's copy (step 3); the socket closes with the
//! last copy.
//!
//! States, and what moves between them:
//!
//! ```text
//!   Open ──at MAX_CONNECTIONS──▶ Full ──a connection closed──▶ Open
//!   Open ──EMFILE, ENFILE, …───▶ Paused { until } ──until passed──▶ Open
//!   any ──the drain's last accept──▶ Open (the limit no longer applies)
//! ```
//!
//! Invariants: an overload never spins the loop (full waits for a close, a failing
//! accept waits `ACCEPT_PAUSE`) and never floods the log (one warning per episode, or per
//! `OVERLOAD_WARNING_EVERY`); once closed, the listener is never used again.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};
use socket2::{Domain, Protocol, Socket, Type};

use super::BindError;

/// How long to stop accepting after the process or system ran out of file descriptors.
/// Retrying at once would spin on the same error; nginx waits 500 ms, we retry sooner
/// because a closing connection frees a descriptor quickly.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// At most one "at MAX_CONNECTIONS" warning this often.
const OVERLOAD_WARNING_EVERY: Duration = Duration::from_secs(10);

/// Whether the listener is being accepted from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Accept {
    Open,
    /// At `MAX_CONNECTIONS`: the kernel's backlog holds new clients until one closes.
    Full,
    /// Out of file descriptors: try again at `until`.
    Paused {
        until: Instant,
    },
}

/// The listener and the state of accepting from it.
pub(super) struct Acceptor {
    /// `None` once the drain has closed it.
    listener: Option<TcpListener>,
    state: Accept,
    /// Failed accepts in a row, so a long EMFILE episode logs once, not ten times a second.
    failures: u64,
    /// When the connection limit was last reported.
    full_warned: Option<Instant>,
    max_connections: usize,
    /// When the last client accepted during the drain delay arrived: logged when the delay
    /// ends, since operators tune their delay from it.
    last_in_delay: Option<Instant>,
}

/// A non-blocking listening socket on `addr` with a listen backlog of `backlog`. mio's and
/// the standard library's `bind` fix the backlog at 128; `socket2` is the safe way to the
/// `listen(2)` call that chooses it (this crate has no `unsafe`). One socket, however
/// many loops: each gets a copy ([`share`]) of the same accept queue.
pub(super) fn listener(addr: SocketAddr, backlog: usize) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // A restarted server can bind at once, without waiting out the old one's TIME_WAIT.
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    warn_if_capped(backlog);
    Ok(socket.into())
}

/// A copy of `listener` for one loop: another descriptor for the same socket, so every
/// loop accepts from the one queue, and the socket closes only with its last copy.
pub(super) fn share(listener: &std::net::TcpListener) -> io::Result<TcpListener> {
    listener.try_clone().map(TcpListener::from_std)
}

/// The kernel silently caps a listen backlog at `net.core.somaxconn`: say so at start-up,
/// so an operator who asked for more knows what they got.
fn warn_if_capped(backlog: usize) {
    let somaxconn = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|text| text.trim().parse::<usize>().ok());
    if let Some(cap) = somaxconn.filter(|&cap| backlog > cap) {
        log::info!(
            "LISTEN_BACKLOG={backlog} is capped by net.core.somaxconn at {cap} (raise it with sysctl)"
        );
    }
}

impl Acceptor {
    /// Takes a loop's copy of the listener (from [`share`]), registered under `token`;
    /// `max_connections` is this loop's share of the limit.
    pub(super) fn new(
        mut listener: TcpListener,
        max_connections: usize,
        registry: &Registry,
        token: Token,
    ) -> Result<Acceptor, BindError> {
        registry
            .register(&mut listener, token, Interest::READABLE)
            .map_err(BindError::EventLoop)?;
        Ok(Acceptor {
            listener: Some(listener),
            state: Accept::Open,
            failures: 0,
            full_warned: None,
            max_connections,
            last_in_delay: None,
        })
    }

    /// The next client to serve, or `None` when accepting stops for now: the backlog is
    /// empty (`WouldBlock`), `open` connections reach the limit (when `limited`), accepts
    /// fail for want of descriptors, or the listener is closed. Call it until `None`.
    pub(super) fn next(
        &mut self,
        now: Instant,
        open: usize,
        limited: bool,
    ) -> Option<(TcpStream, SocketAddr)> {
        while self.state == Accept::Open {
            let listener = self.listener.as_ref()?;
            if limited && open >= self.max_connections {
                self.full(now);
                return None;
            }
            match listener.accept() {
                Ok((socket, peer)) => {
                    if self.failures > 0 {
                        log::info!("accepting again after {} failed attempts", self.failures);
                        self.failures = 0;
                    }
                    return Some((socket, peer));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // The client gave up between the handshake and our accept: nothing to do.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
                    ) => {}
                Err(e) => self.pause(now, &e),
            }
        }
        None
    }

    /// At the limit: new clients wait in the kernel's backlog until a connection closes.
    fn full(&mut self, now: Instant) {
        // Under sustained overload this happens at every close: warn at most once per
        // `OVERLOAD_WARNING_EVERY`.
        if self
            .full_warned
            .is_none_or(|t| now >= t + OVERLOAD_WARNING_EVERY)
        {
            log::warn!(
                "at MAX_CONNECTIONS ({}): new connections wait in the backlog",
                self.max_connections
            );
            self.full_warned = Some(now);
        }
        self.state = Accept::Full;
    }

    /// EMFILE/ENFILE/ENOBUFS/ENOMEM and anything unexpected: retrying now would fail the
    /// same way and spin the loop. Warn once per episode, not every `ACCEPT_PAUSE`.
    fn pause(&mut self, now: Instant, e: &io::Error) {
        if self.failures == 0 {
            log::warn!(
                "accept failed: {e}; pausing accepts for {}ms at a time until it works",
                ACCEPT_PAUSE.as_millis()
            );
        }
        self.failures += 1;
        self.state = Accept::Paused {
            until: now + ACCEPT_PAUSE,
        };
    }

    /// When the loop must wake up to accept again, if accepting is paused.
    pub(super) fn paused_until(&self) -> Option<Instant> {
        match self.state {
            Accept::Paused { until } => Some(until),
            Accept::Open | Accept::Full => None,
        }
    }

    /// Ends a pause whose time has come; true if it did (the loop then accepts).
    pub(super) fn pause_over(&mut self, now: Instant) -> bool {
        match self.state {
            Accept::Paused { until } if now >= until => {
                self.state = Accept::Open;
                true
            }
            _ => false,
        }
    }

    /// A connection closed; true if accepting was waiting for that (the loop then
    /// accepts).
    pub(super) fn slot_freed(&mut self) -> bool {
        if self.state == Accept::Full {
            self.state = Accept::Open;
            true
        } else {
            false
        }
    }

    /// Shutdown step 3, first half: accept again, whatever stopped it, for the last
    /// accept of the backlog (its clients completed their handshake before we stopped).
    pub(super) fn reopen(&mut self) {
        self.state = Accept::Open;
    }

    /// Shutdown step 3, second half: deregister and close this copy of the listener. From
    /// here on [`Acceptor::next`] finds nothing; once every loop's copy is closed, new
    /// connects are refused (the coordinator logs that).
    pub(super) fn close(&mut self, registry: &Registry) {
        if let Some(mut listener) = self.listener.take() {
            let _ = registry.deregister(&mut listener);
            drop(listener);
        }
    }

    /// Notes a client accepted during the drain delay.
    pub(super) fn accepted_in_delay(&mut self, now: Instant) {
        self.last_in_delay = Some(now);
    }

    /// When the last client accepted during the drain delay arrived, if any did.
    pub(super) fn take_last_in_delay(&mut self) -> Option<Instant> {
        self.last_in_delay.take()
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpStream as StdStream;

    use mio::Poll;

    use super::*;

    const LISTENER: Token = Token(0);

    fn acceptor(max_connections: usize, poll: &Poll) -> Acceptor {
        let addr = "127.0.0.1:0".parse().unwrap();
        let listener = share(&listener(addr, 4096).unwrap()).unwrap();
        Acceptor::new(listener, max_connections, poll.registry(), LISTENER).unwrap()
    }

    fn addr(acceptor: &Acceptor) -> SocketAddr {
        acceptor.listener.as_ref().unwrap().local_addr().unwrap()
    }

    /// Connects `n` clients; their handshakes complete in the kernel, before any accept.
    fn connect(acceptor: &Acceptor, n: usize) -> Vec<StdStream> {
        (0..n)
            .map(|_| StdStream::connect(addr(acceptor)).unwrap())
            .collect()
    }

    /// Takes up to `want` clients, `open` connections being open already; returns how
    /// many it took. Stops early when the acceptor stops for anything but an empty
    /// backlog. A loopback connect returns once the kernel has queued the client, so the
    /// first round normally suffices; the bounded retries only absorb a slow kernel.
    fn take(a: &mut Acceptor, now: Instant, open: usize, limited: bool, want: usize) -> usize {
        let mut taken = 0;
        for _ in 0..1000 {
            while taken < want && a.next(now, open + taken, limited).is_some() {
                taken += 1;
            }
            if taken == want || a.state != Accept::Open {
                break;
            }
            std::thread::yield_now();
        }
        taken
    }

    /// An acceptor filled to its `limit` from a backlog of `limit + waiting` clients:
    /// `Full`, with `waiting` clients left in the backlog (kept connected by the vector).
    fn filled(limit: usize, waiting: usize, poll: &Poll) -> (Acceptor, Vec<StdStream>) {
        let mut a = acceptor(limit, poll);
        let clients = connect(&a, limit + waiting);
        let open = take(&mut a, Instant::now(), 0, true, limit + waiting);
        assert_eq!((open, a.state), (limit, Accept::Full));
        (a, clients)
    }

    #[test]
    fn acceptor_stops_at_the_limit_and_opens_when_a_slot_frees() {
        let poll = Poll::new().unwrap();
        let (mut a, _clients) = filled(2, 1, &poll);
        let (now, open) = (Instant::now(), 2);
        assert!(a.next(now, open, true).is_none(), "full: nothing more");
        assert!(a.slot_freed(), "a close reopens a full acceptor");
        assert!(!a.slot_freed(), "and only a full one");
        assert_eq!(
            take(&mut a, now, open - 1, true, 2),
            1,
            "one slot, one client"
        );
        assert_eq!(a.state, Accept::Full);
    }

    #[test]
    fn acceptor_takes_the_backlog_past_the_limit_for_the_drain_then_closes() {
        let poll = Poll::new().unwrap();
        let (mut a, _clients) = filled(1, 2, &poll);
        let (now, open, at) = (Instant::now(), 1, addr(&a));
        a.reopen();
        let taken = take(&mut a, now, open, false, 2);
        assert_eq!(taken, 2, "the drain's last accept ignores the limit");
        a.close(poll.registry());
        assert!(
            a.next(now, 0, false).is_none(),
            "closed: nothing more, ever"
        );
        assert!(StdStream::connect(at).is_err(), "connects refused");
    }

    #[test]
    fn acceptor_pause_ends_at_its_time() {
        let poll = Poll::new().unwrap();
        let mut a = acceptor(1, &poll);
        let now = Instant::now();
        a.pause(now, &io::Error::from(io::ErrorKind::OutOfMemory));
        assert_eq!(a.paused_until(), Some(now + ACCEPT_PAUSE));
        assert!(a.next(now, 0, true).is_none(), "paused: no accept");
        assert!(!a.pause_over(now + ACCEPT_PAUSE / 2));
        assert!(a.pause_over(now + ACCEPT_PAUSE));
        assert_eq!((a.state, a.paused_until()), (Accept::Open, None));
    }

    #[test]
    fn acceptor_remembers_the_last_arrival_in_the_delay_once() {
        let poll = Poll::new().unwrap();
        let mut a = acceptor(1, &poll);
        let t0 = Instant::now();
        a.accepted_in_delay(t0);
        a.accepted_in_delay(t0 + Duration::from_millis(5));
        assert_eq!(a.take_last_in_delay(), Some(t0 + Duration::from_millis(5)));
        assert_eq!(a.take_last_in_delay(), None);
    }
}
