//! The shutdown handle: how an application that embeds the server asks it to stop, from
//! any thread — the in-process twin of a SIGTERM.
//!
//! What it is: [`ShutdownHandle`], a cheap clonable token holding the coordinator's board
//! (a flag and its waker). [`ShutdownHandle::shutdown`] raises the flag and wakes the
//! coordinator, which lowers the flag and orders every loop to stop, exactly as for a
//! SIGTERM: readiness 503, drain delay, drain, deadline, report, outcome.
//!
//! What it is not: it does not wait for the shutdown to finish (the thread running
//! [`Server::run`] gets the [`Outcome`](super::Outcome) when it does), it does not decide
//! anything (the coordinator and the loops' phase machines do), and it never connects to
//! the server to wake it: the coordinator's poll has a waker for it and the loops' notes.
//!
//! Invariants: asking twice is harmless — a second request, taken after the first, is
//! logged and ignored like a repeated signal; two requests before the coordinator looks
//! are one, as two SIGTERMs before it reads its signals are. A handle that outlives its
//! server asks nobody, and nothing happens.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::Server;
use super::coordinator::Board;

/// Asks the server it came from to shut down gracefully, from any thread.
///
/// `Clone + Send + Sync`: hand clones to whatever may decide the process should stop (an
/// admin route, a supervisor thread, a test). Get one with [`Server::shutdown_handle`]
/// before calling [`Server::run`], which takes the server.
#[derive(Clone)]
pub struct ShutdownHandle {
    board: Arc<Board>,
}

impl ShutdownHandle {
    /// Starts the graceful shutdown, exactly as a SIGTERM would, and returns at once.
    ///
    /// The server logs `shutdown requested by the application: starting graceful shutdown
    /// (draining, max <N>ms)`, readiness turns 503, and the drain follows; the thread in
    /// [`Server::run`] gets the [`Outcome`](super::Outcome) when it is over. Calling it
    /// again, or a signal after it, changes nothing (it is logged and ignored).
    pub fn shutdown(&self) {
        self.board.requests.requested.store(true, Ordering::Release);
        self.board.wake();
    }
}

/// Shows no state: whether a request is pending lasts only until the loop looks.
impl fmt::Debug for ShutdownHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShutdownHandle").finish_non_exhaustive()
    }
}

/// The coordinator's side of the handles: the flag they raise.
#[derive(Default)]
pub(super) struct Requests {
    requested: AtomicBool,
}

impl Requests {
    /// Whether a handle asked since the last look; looking lowers the flag, so a later
    /// request is seen as a new one.
    pub(super) fn take(&self) -> bool {
        self.requested.swap(false, Ordering::AcqRel)
    }
}

impl Server {
    /// A handle that starts this server's graceful shutdown from any thread, like a
    /// SIGTERM (see [`ShutdownHandle::shutdown`]). Take it before [`Server::run`].
    ///
    /// ```no_run
    /// use std::sync::mpsc;
    /// use std::thread;
    /// use lastcall::config::Config;
    /// use lastcall::server::{self, Outcome, Server, Started};
    ///
    /// let (handles, started) = mpsc::channel();
    /// let app = thread::spawn(move || {
    ///     // Bound and run on a thread of its own; its loops get threads of theirs.
    ///     let signals = server::install_signal_handlers().expect("signal handlers");
    ///     let config = Config::default();
    ///     match Server::bind(&config, lastcall::routes::handle, signals).expect("bind") {
    ///         Started::Ready(server) => {
    ///             handles.send(server.shutdown_handle()).expect("someone to stop us");
    ///             server.run().expect("the event loop")
    ///         }
    ///         Started::Signalled(_) => Outcome::Drained, // stopped before it started
    ///     }
    /// });
    /// let stop = started.recv().expect("the server started");
    ///
    /// // ... later, from this thread or any other: drain and stop, as a SIGTERM would.
    /// stop.shutdown();
    /// assert_eq!(app.join().expect("the loop's thread"), Outcome::Drained);
    /// ```
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            board: Arc::clone(&self.coordinator.board),
        }
    }
}

#[cfg(test)]
mod tests {
    use mio::{Poll, Token, Waker};

    use super::*;

    fn handle_and_board() -> (ShutdownHandle, Arc<Board>, Poll) {
        let poll = Poll::new().unwrap();
        let waker = Waker::new(poll.registry(), Token(0)).unwrap();
        let board = Arc::new(Board::new(waker));
        let handle = ShutdownHandle {
            board: Arc::clone(&board),
        };
        (handle, board, poll)
    }

    #[test]
    fn shutdown_handle_is_clone_send_and_sync() {
        fn usable_from_any_thread<T: Clone + Send + Sync + 'static>() {}
        usable_from_any_thread::<ShutdownHandle>();
    }

    #[test]
    fn shutdown_request_wakes_the_loop_and_is_taken_once() {
        let (handle, board, mut poll) = handle_and_board();
        let requests = &board.requests;
        assert!(!requests.take(), "nobody asked yet");
        let asker = handle.clone();
        std::thread::spawn(move || asker.shutdown()).join().unwrap();
        let mut events = mio::Events::with_capacity(4);
        poll.poll(&mut events, Some(std::time::Duration::from_secs(10)))
            .unwrap();
        assert!(
            events.iter().any(|e| e.token() == Token(0)),
            "the loop woke up"
        );
        assert!(requests.take());
        assert!(!requests.take(), "taken once");
        handle.shutdown();
        assert!(requests.take(), "a later request is a new one");
    }
}
