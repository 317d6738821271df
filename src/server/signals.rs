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
//! [`install_signal_handlers`] on, no signal an operator may send kills the process; it
//! waits, queued, for the loop or for `Server::bind` to read it.
//!
//! Invariants: every signal caught has a meaning ([`Received::of`] names each one); an
//! ignored signal never reaches the phase machine, so it never counts as a reason to stop.

use std::io;

use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2};
pub use signal_hook_mio::v1_0::Signals;

/// Which signal asked us to stop; named in the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM: what an orchestrator sends (Kubernetes, `docker stop`, systemd).
    Term,
    /// SIGINT: Ctrl+C in a terminal.
    Int,
    /// SIGQUIT: nginx's graceful stop (`nginx -s quit`), so its operators' habit drains
    /// here too instead of killing the process with a core dump.
    Quit,
}

impl Signal {
    /// The signal's name as the logs say it: `SIGTERM`, `SIGINT`.
    pub fn name(self) -> &'static str {
        match self {
            Signal::Term => "SIGTERM",
            Signal::Int => "SIGINT",
            Signal::Quit => "SIGQUIT",
        }
    }
}

/// Installs the handlers for every signal an operator may send, and
/// returns them to hand to [`Server::bind`](super::Server::bind). From here on those
/// signals no longer kill the process; they queue up until the loop reads them, so `main`
/// calls this before anything else. SIGTERM, SIGINT and SIGQUIT start the graceful
/// shutdown; SIGHUP starts a hand-over to a successor; SIGUSR1 and SIGUSR2 are logged
/// and ignored. (SIGPIPE is ignored by
/// the Rust runtime itself: a write to a closed socket is an error, never a kill.)
pub fn install_signal_handlers() -> io::Result<Signals> {
    Signals::new(Received::HANDLED)
}

/// What a signal means to the server. The one place raw signal numbers get a meaning, so
/// the shutdown phase machine only ever sees shutdown signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Received {
    /// SIGTERM, SIGINT or SIGQUIT: start the graceful shutdown (or, during one, a repeat).
    Shutdown(Signal),
    /// SIGHUP: hand the listener over to a successor started from the binary now at our
    /// path, then drain (systemd's `ExecReload`, nginx's "reload" habit).
    HandOver,
    /// A signal whose default action would kill the process on the spot, with no drain,
    /// so it is caught, and that means nothing here: logged and otherwise ignored, in any
    /// phase. SIGUSR1, SIGUSR2: nginx reopens its logs and upgrades its binary with them;
    /// lastcall writes no log file, and its upgrade is the hand-over, on SIGHUP.
    Ignored(&'static str),
}

impl Received {
    /// The signals [`install_signal_handlers`] catches; [`Received::of`] names each one.
    const HANDLED: [i32; 6] = [SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2];

    fn of(raw: i32) -> Option<Received> {
        match raw {
            SIGTERM => Some(Received::Shutdown(Signal::Term)),
            SIGINT => Some(Received::Shutdown(Signal::Int)),
            SIGQUIT => Some(Received::Shutdown(Signal::Quit)),
            SIGHUP => Some(Received::HandOver),
            SIGUSR1 => Some(Received::Ignored("SIGUSR1")),
            SIGUSR2 => Some(Received::Ignored("SIGUSR2")),
            _ => None,
        }
    }
}

/// What the operator asked for with one signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Asked {
    /// Stop, gracefully.
    Stop(Signal),
    /// Hand over to a successor.
    HandOver,
}

/// What the signals among `raw` (as `Signals::pending` reads them) ask, in order; each
/// ignored one is logged on the way and goes no further, so nothing counts it as a reason
/// to stop.
pub(super) fn asked(raw: impl Iterator<Item = i32>) -> impl Iterator<Item = Asked> {
    raw.filter_map(|raw| match Received::of(raw)? {
        Received::Shutdown(signal) => Some(Asked::Stop(signal)),
        Received::HandOver => Some(Asked::HandOver),
        Received::Ignored(name) => {
            log::info!("{name} received: ignored (no meaning here; SIGTERM stops gracefully)");
            None
        }
    })
}

/// The shutdown signals among `raw`, for start-up: a SIGHUP before the server serves has
/// nothing to hand over, and is logged and dropped.
pub(super) fn shutdown_signals(raw: impl Iterator<Item = i32>) -> impl Iterator<Item = Signal> {
    asked(raw).filter_map(|asked| match asked {
        Asked::Stop(signal) => Some(signal),
        Asked::HandOver => {
            log::info!("SIGHUP received while starting: ignored (nothing to hand over yet)");
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
    fn shutdown_signals_pass_term_int_and_quit_and_drop_the_others() {
        let read: Vec<Signal> =
            shutdown_signals([SIGHUP, SIGTERM, SIGUSR1, SIGINT, SIGUSR2, SIGQUIT].into_iter())
                .collect();
        assert_eq!(read, [Signal::Term, Signal::Int, Signal::Quit]);
        // What `bind` asks during start-up: a SIGHUP alone is no reason to stop.
        assert_eq!(shutdown_signals([SIGHUP].into_iter()).next(), None);
    }

    #[test]
    fn asked_keeps_hand_overs_and_stops_in_order() {
        let read: Vec<Asked> = asked([SIGUSR1, SIGHUP, SIGTERM, SIGHUP].into_iter()).collect();
        assert_eq!(
            read,
            [Asked::HandOver, Asked::Stop(Signal::Term), Asked::HandOver]
        );
    }
}
