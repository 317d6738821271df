//! Signals: which ones the process catches, and what each one means to the server.
//!
//! What it is: the one place raw signal numbers get a meaning ([`Received`]), the
//! installer `main` calls first of all ([`install_signal_handlers`]), and the filter that
//! turns what `signal-hook` read into the shutdown signals the phase machine sees
//! ([`shutdown_signals`]).
//!
//! What it is not: it does not decide what a shutdown signal does (that is the phase
//! machine in `shutdown`), and it does not read the signals off the poll (that is the
//! loop, on the `SIGNALS` token). Lifecycle step: the very first one — from
//! [`install_signal_handlers`] on, a SIGTERM or SIGINT no longer kills the process; it
//! waits, queued, for the loop or for `Server::bind` to read it.
//!
//! Invariants: every signal caught has a meaning ([`Received::of`] names each one); a
//! SIGHUP never reaches the phase machine, so it never counts as a reason to stop.

use std::io;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
pub use signal_hook_mio::v1_0::Signals;

/// Which signal asked us to stop; named in the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM: what an orchestrator sends (Kubernetes, `docker stop`, systemd).
    Term,
    /// SIGINT: Ctrl+C in a terminal.
    Int,
}

impl Signal {
    /// The signal's name as the logs say it: `SIGTERM`, `SIGINT`.
    pub fn name(self) -> &'static str {
        match self {
            Signal::Term => "SIGTERM",
            Signal::Int => "SIGINT",
        }
    }
}

/// Installs the handlers for SIGTERM, SIGINT and SIGHUP, and returns them to hand to
/// [`Server::bind`](super::Server::bind). From here on those signals no longer kill the
/// process; they queue up until the loop reads them, so `main` calls this before anything
/// else. SIGTERM and SIGINT start the graceful shutdown; SIGHUP is logged and ignored.
pub fn install_signal_handlers() -> io::Result<Signals> {
    Signals::new(Received::HANDLED)
}

/// What a signal means to the server. The one place raw signal numbers get a meaning, so
/// the shutdown phase machine only ever sees shutdown signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Received {
    /// SIGTERM or SIGINT: start the graceful shutdown (or, during one, a repeat).
    Shutdown(Signal),
    /// SIGHUP: its default action would kill the process on the spot, with no drain, so
    /// it is caught. Daemons use it for "reload" (nginx) and systemd's `ExecReload` often
    /// sends it; lastcall has nothing to reload yet (the signal is kept for handing the
    /// listener to a new process one day), so it is logged and otherwise ignored, in any
    /// phase.
    Hangup,
}

impl Received {
    /// The signals [`install_signal_handlers`] catches; [`Received::of`] names each one.
    const HANDLED: [i32; 3] = [SIGTERM, SIGINT, SIGHUP];

    fn of(raw: i32) -> Option<Received> {
        match raw {
            SIGTERM => Some(Received::Shutdown(Signal::Term)),
            SIGINT => Some(Received::Shutdown(Signal::Int)),
            SIGHUP => Some(Received::Hangup),
            _ => None,
        }
    }
}

/// The shutdown signals among `raw` (as `Signals::pending` reads them), in order; each
/// SIGHUP is logged on the way and goes no further, so neither start-up nor the phase
/// machine counts it as a reason to stop.
pub(super) fn shutdown_signals(raw: impl Iterator<Item = i32>) -> impl Iterator<Item = Signal> {
    raw.filter_map(|raw| match Received::of(raw)? {
        Received::Shutdown(signal) => Some(signal),
        Received::Hangup => {
            log::info!("SIGHUP received: ignored (nothing to reload; SIGTERM stops gracefully)");
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn received_names_every_handled_signal() {
        for raw in Received::HANDLED {
            assert!(
                Received::of(raw).is_some(),
                "signal {raw} is caught but means nothing"
            );
        }
    }

    #[test]
    fn shutdown_signals_pass_sigterm_and_sigint_and_drop_sighup() {
        let read: Vec<Signal> =
            shutdown_signals([SIGHUP, SIGTERM, SIGHUP, SIGINT].into_iter()).collect();
        assert_eq!(read, [Signal::Term, Signal::Int]);
        // What `bind` asks during start-up: a SIGHUP alone is no reason to stop.
        assert_eq!(shutdown_signals([SIGHUP].into_iter()).next(), None);
    }
}
