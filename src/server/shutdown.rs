//! The shutdown phase machine: `Serving → (Delaying →) Draining → Done`.
//!
//! | phase | listener | idle connections | active connections | pool |
//! | --- | --- | --- | --- | --- |
//! | `Serving` | accepting | kept (keep-alive timer) | served | open |
//! | `Delaying` | still accepting (LB sees /health 503 first) | served, `Connection: close` | served, `Connection: close` | open |
//! | `Draining` | backlog accepted, then closed: connects refused | closed at once, after reading what was already sent | finish one request with `Connection: close`, lingering close | open |
//! | `Done` | closed | — | — | closed after the last connection |
//!
//! ```text
//!   Serving ──stop──▶ Delaying ──DRAIN_DELAY_MS over──▶ Draining ──last connection gone──▶ Done (exit 0)
//!      └──────stop (no delay)───────────────────────────▲    └──SHUTDOWN_TIMEOUT_MS──▶ Done (exit 1)
//! ```
//!
//! "stop" is a SIGTERM, SIGINT or SIGQUIT, the application's
//! [`ShutdownHandle::shutdown`](super::ShutdownHandle::shutdown), another event loop's
//! death, or a successor ready after a hand-over: the same sequence follows either way,
//! and only the log says which ([`Source`]) — except that after a hand-over there is no
//! drain delay and the backlog is left in the queue, which the successor accepts from.
//!
//! What it is: [`Phase`] and the one function that advances it, [`Phase::on`], whose
//! `match (phase, event)` arms are the rules. Each event loop has its own phase, fed with
//! the same stop order (the same `at`, so the same delay and deadline everywhere), and
//! carries out the [`Step`] each transition returns; this file decides, the loop acts.
//! How the loops' outcomes and the pool's close make one outcome is [`Outcome::worst`].
//!
//! Invariants: never reads the clock (every event carries `now`); a second request (a
//! signal, or the application's) never starts a second shutdown; the deadline is counted
//! from the first request, whatever the phase; the outcome lives in `Phase::Done` and
//! nowhere else (the loop returns [`Phase::outcome`]).

use std::fmt;
use std::time::{Duration, Instant};

use super::signals::Signal;
use crate::conn::Stage;

/// Who asked for the shutdown; named in the logs. Either way the shutdown is the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A signal from outside the process: an orchestrator's SIGTERM, a Ctrl+C.
    Signal(Signal),
    /// The application embedding the server, through a
    /// [`ShutdownHandle`](super::ShutdownHandle).
    Application,
    /// Event loop number `.0` ended without being asked (a panic escaped it, or its poll
    /// failed): the other loops drain, so the process does not live on half-served.
    LoopDied(usize),
    /// A successor (process id `.0`) started by a SIGHUP is ready and serves from the
    /// listener: this process drains without a delay and leaves the accept queue to it.
    HandedOver(u32),
}

impl Source {
    /// What asked, as "after …" says it in the drain-delay log line.
    pub(super) fn noun(self) -> &'static str {
        match self {
            Source::Signal(_) => "the signal",
            Source::Application => "the request",
            Source::LoopDied(_) => "the loop died",
            Source::HandedOver(_) => "the hand-over",
        }
    }
}

impl fmt::Display for Source {
    /// How a log line opens when someone asks for a shutdown: `SIGTERM received`,
    /// `shutdown requested by the application`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Signal(signal) => write!(f, "{} received", signal.name()),
            Source::Application => f.write_str("shutdown requested by the application"),
            Source::LoopDied(index) => write!(f, "event loop {index} died"),
            Source::HandedOver(pid) => write!(f, "successor {pid} ready"),
        }
    }
}

/// Where the shutdown stands (see the module doc for what each phase means to the
/// listener, the connections and the pool).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// No shutdown asked for: accepting and serving.
    Serving,
    /// Still accepting until `until`, so a load balancer that polls /health sees the 503
    /// and stops routing here before our port closes.
    Delaying {
        /// Who asked for the shutdown.
        by: Source,
        /// When they asked: the drain delay and the deadline count from here.
        at: Instant,
        /// When the drain delay ends and the drain begins.
        until: Instant,
        /// When whatever is left is answered 503 or cut (`SHUTDOWN_TIMEOUT_MS` after `at`).
        deadline: Instant,
    },
    /// The listener is closed; connections finish their current request and close.
    Draining {
        /// Who asked for the shutdown.
        by: Source,
        /// When they asked.
        at: Instant,
        /// When whatever is left is answered 503 or cut.
        deadline: Instant,
    },
    /// Nothing is left to serve: the loop returns `outcome`.
    Done {
        /// How the shutdown went; the one place it is kept.
        outcome: Outcome,
    },
}

/// How a shutdown ended: what [`Server::run`](super::Server::run) returns, and the exit
/// code the process reports it with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every connection finished: exit 0.
    Drained,
    /// The deadline passed first: exit 1.
    TimedOut,
    /// Every connection finished, but a later step did not (the pool missed its bound):
    /// exit 1.
    StepFailed,
    /// Event loop `index` ended without being asked (a panic escaped it, a bug): its
    /// connections were lost, the other loops drained. Exit 1.
    LoopDied {
        /// The loop's number, from 0, as the logs name it.
        index: usize,
    },
}

impl Outcome {
    /// The process exit code that tells an orchestrator how the shutdown went.
    pub fn exit_code(self) -> u8 {
        match self {
            Outcome::Drained => 0,
            Outcome::TimedOut | Outcome::StepFailed | Outcome::LoopDied { .. } => 1,
        }
    }

    /// The worse of two outcomes: how the loops' outcomes, and the pool's close after
    /// them, make the process's one. A lost loop is worst (work was lost unasked), then a
    /// deadline hit (work was cut), then a failed step after a clean drain.
    ///
    /// ```
    /// use lastcall::server::Outcome;
    ///
    /// assert_eq!(Outcome::Drained.worst(Outcome::TimedOut), Outcome::TimedOut);
    /// // A pool that misses its bound after a deadline hit: still the deadline.
    /// assert_eq!(Outcome::TimedOut.worst(Outcome::StepFailed), Outcome::TimedOut);
    /// ```
    #[must_use]
    pub fn worst(self, other: Outcome) -> Outcome {
        let rank = |outcome: Outcome| match outcome {
            Outcome::Drained => 0,
            Outcome::StepFailed => 1,
            Outcome::TimedOut => 2,
            Outcome::LoopDied { .. } => 3,
        };
        if rank(other) > rank(self) {
            other
        } else {
            self
        }
    }
}

/// What happened, as far as the phase machine cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A shutdown signal arrived, or the application asked for a shutdown.
    Stop(Source, Instant),
    /// Time passed (the loop woke up). Fed only once a shutdown has begun: `Serving`
    /// has no timed transitions.
    Tick(Instant),
    /// No connection remains (a pending database job always belongs to a connection).
    /// Fed, during a shutdown, before and after each `Tick`.
    Empty(Instant),
}

/// What the loop must do after a transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nothing to do: the event changed nothing the loop acts on.
    Nothing,
    /// Shutdown began: say so (readiness flips with the phase itself), and drain at once
    /// unless a drain delay keeps the listener open first.
    Announce {
        /// No drain delay: start the drain in the same turn.
        drain_now: bool,
    },
    /// The drain delay is over: accept the backlog, close the listener, close idle
    /// connections.
    StartDrain,
    /// The deadline passed: answer or cut what is left.
    Force,
    /// Everything is closed: the loop ends with [`Phase::outcome`].
    Finish,
    /// A repeated request (a second signal, a second `shutdown()`, one after the
    /// other): log it, change nothing.
    IgnoreRepeat(Source),
}

/// The two shutdown settings, checked at start-up (`DRAIN_DELAY_MS` < `SHUTDOWN_TIMEOUT_MS`).
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// `DRAIN_DELAY_MS`: how long to keep accepting after the request, `/health` saying 503.
    pub drain_delay: Duration,
    /// `SHUTDOWN_TIMEOUT_MS`: the whole budget, counted from the request.
    pub shutdown_timeout: Duration,
}

impl Phase {
    /// True from the first signal on: readiness answers 503 and every response closes.
    pub fn shutting_down(&self) -> bool {
        !matches!(self, Phase::Serving)
    }

    /// True once the drain has begun (after any drain delay): the listener is closing and
    /// connections are being drained, so one that has not sent a request gets only its
    /// short grace. During the delay the server still serves as usual.
    pub fn draining(&self) -> bool {
        matches!(self, Phase::Draining { .. } | Phase::Done { .. })
    }

    /// True when a successor took over the listener: the backlog is not ours to accept.
    pub fn handed_over(&self) -> bool {
        matches!(
            self,
            Phase::Draining {
                by: Source::HandedOver(_),
                ..
            }
        )
    }

    /// What the phase means for a connection.
    pub fn stage(&self) -> Stage {
        match self {
            Phase::Serving => Stage::Serving,
            Phase::Delaying { .. } => Stage::Announced,
            Phase::Draining { .. } | Phase::Done { .. } => Stage::Draining,
        }
    }

    /// How the shutdown ended, once it has: what [`Server::run`](super::Server::run)
    /// returns. The one place the outcome is kept.
    pub fn outcome(&self) -> Option<Outcome> {
        match *self {
            Phase::Done { outcome } => Some(outcome),
            Phase::Serving | Phase::Delaying { .. } | Phase::Draining { .. } => None,
        }
    }

    /// When the loop must wake up for this phase, if ever.
    pub fn deadline(&self) -> Option<Instant> {
        match *self {
            Phase::Delaying { until, .. } => Some(until),
            Phase::Draining { deadline, .. } => Some(deadline),
            Phase::Serving | Phase::Done { .. } => None,
        }
    }

    /// The one place the phase changes: applies `event` and returns the [`Step`] the loop
    /// must carry out. The `match (phase, event)` arms below are the rules, one line each.
    ///
    /// A shutdown with no drain delay, asked for twice, drained clean:
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use lastcall::server::{Budget, Event, Outcome, Phase, Signal, Source, Step};
    ///
    /// let budget = Budget {
    ///     drain_delay: Duration::ZERO,
    ///     shutdown_timeout: Duration::from_secs(10),
    /// };
    /// let t0 = Instant::now();
    /// let mut phase = Phase::Serving;
    ///
    /// // The first SIGTERM: announce it, and drain at once (there is no delay).
    /// let sigterm = Event::Stop(Source::Signal(Signal::Term), t0);
    /// assert_eq!(phase.on(sigterm, budget), Step::Announce { drain_now: true });
    /// assert_eq!(phase.deadline(), Some(t0 + Duration::from_secs(10)));
    ///
    /// // The application asks too: logged and ignored, one shutdown only.
    /// let asked = Event::Stop(Source::Application, t0);
    /// assert_eq!(phase.on(asked, budget), Step::IgnoreRepeat(Source::Application));
    ///
    /// // Time passes with connections still open: nothing to do before the deadline.
    /// let later = t0 + Duration::from_secs(1);
    /// assert_eq!(phase.on(Event::Tick(later), budget), Step::Nothing);
    ///
    /// // The last connection is gone: finish, with a clean outcome.
    /// assert_eq!(phase.on(Event::Empty(later), budget), Step::Finish);
    /// assert_eq!(phase.outcome(), Some(Outcome::Drained));
    /// assert_eq!(phase.outcome().map(Outcome::exit_code), Some(0));
    /// ```
    pub fn on(&mut self, event: Event, budget: Budget) -> Step {
        // Longer than sixty lines on purpose: every rule stays in this one `match`, where
        // the whole machine reads on a screen or two; the length is the phases' fields.
        let (next, step) = match (*self, event) {
            // Rule: the first request (a signal or the application's) starts the
            // shutdown; the deadline counts from here. A hand-over has no drain delay:
            // the successor accepts from the same queue, so no client needs the warning.
            (Phase::Serving, Event::Stop(by, now))
                if budget.drain_delay.is_zero() || matches!(by, Source::HandedOver(_)) =>
            {
                (
                    Phase::Draining {
                        by,
                        at: now,
                        deadline: now + budget.shutdown_timeout,
                    },
                    Step::Announce { drain_now: true },
                )
            }
            (Phase::Serving, Event::Stop(by, now)) => (
                Phase::Delaying {
                    by,
                    at: now,
                    until: now + budget.drain_delay,
                    deadline: now + budget.shutdown_timeout,
                },
                Step::Announce { drain_now: false },
            ),
            // Rule: further requests during a shutdown are logged and ignored.
            (Phase::Delaying { .. } | Phase::Draining { .. }, Event::Stop(by, _)) => {
                (*self, Step::IgnoreRepeat(by))
            }
            // Rule: the delay is over: drain.
            (
                Phase::Delaying {
                    by,
                    at,
                    until,
                    deadline,
                },
                Event::Tick(now),
            ) if now >= until => (Phase::Draining { by, at, deadline }, Step::StartDrain),
            // Rule: the last connection is gone: a clean drain.
            (Phase::Draining { .. }, Event::Empty(_)) => (
                Phase::Done {
                    outcome: Outcome::Drained,
                },
                Step::Finish,
            ),
            // Rule: the deadline passed first: force what is left, then finish.
            (Phase::Draining { deadline, .. }, Event::Tick(now)) if now >= deadline => (
                Phase::Done {
                    outcome: Outcome::TimedOut,
                },
                Step::Force,
            ),
            (phase, _) => (phase, Step::Nothing),
        };
        if next != *self {
            log::trace!("shutdown: {}=>{}", self.name(), next.name());
        }
        *self = next;
        step
    }

    /// The phase's name, for the `old=>new` trace line.
    pub fn name(&self) -> &'static str {
        match self {
            Phase::Serving => "Serving",
            Phase::Delaying { .. } => "Delaying",
            Phase::Draining { .. } => "Draining",
            // With the outcome.
            Phase::Done {
                outcome: Outcome::Drained,
            } => "Done(Drained)",
            Phase::Done {
                outcome: Outcome::TimedOut,
            } => "Done(TimedOut)",
            // A loop's own phase ends drained or timed out: these two outcomes are the
            // process's, made by the coordinator (`Outcome::worst`).
            Phase::Done {
                outcome: Outcome::StepFailed | Outcome::LoopDied { .. },
            } => "Done",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(delay_ms: u64) -> Budget {
        Budget {
            drain_delay: Duration::from_millis(delay_ms),
            shutdown_timeout: Duration::from_millis(1000),
        }
    }

    #[test]
    fn a_hand_over_drains_at_once_whatever_the_delay_and_leaves_the_backlog() {
        let t0 = Instant::now();
        let mut phase = Phase::Serving;
        assert_eq!(
            phase.on(Event::Stop(Source::HandedOver(42), t0), budget(5000)),
            Step::Announce { drain_now: true }
        );
        assert!(phase.handed_over());
        let mut signalled = Phase::Serving;
        signalled.on(Event::Stop(Source::Signal(Signal::Term), t0), budget(0));
        assert!(!signalled.handed_over());
    }

    #[test]
    fn phase_drains_at_once_without_a_delay_and_ignores_repeats() {
        let t0 = Instant::now();
        let mut phase = Phase::Serving;
        assert_eq!(
            phase.on(Event::Stop(Source::Signal(Signal::Term), t0), budget(0)),
            Step::Announce { drain_now: true }
        );
        assert!(phase.shutting_down());
        assert_eq!(phase.deadline(), Some(t0 + Duration::from_millis(1000)));
        assert_eq!(
            phase.on(Event::Stop(Source::Signal(Signal::Int), t0), budget(0)),
            Step::IgnoreRepeat(Source::Signal(Signal::Int))
        );
        assert_eq!(phase.on(Event::Empty(t0), budget(0)), Step::Finish);
        assert_eq!(phase.outcome(), Some(Outcome::Drained));
    }

    #[test]
    fn phase_takes_the_application_request_like_a_signal_and_ignores_a_signal_after_it() {
        let t0 = Instant::now();
        let mut phase = Phase::Serving;
        assert_eq!(
            phase.on(Event::Stop(Source::Application, t0), budget(0)),
            Step::Announce { drain_now: true }
        );
        assert_eq!(
            phase,
            Phase::Draining {
                by: Source::Application,
                at: t0,
                deadline: t0 + Duration::from_millis(1000)
            }
        );
        let later = t0 + Duration::from_millis(10);
        assert_eq!(
            phase.on(Event::Stop(Source::Signal(Signal::Term), later), budget(0)),
            Step::IgnoreRepeat(Source::Signal(Signal::Term))
        );
        assert_eq!(
            phase.on(Event::Stop(Source::Application, later), budget(0)),
            Step::IgnoreRepeat(Source::Application)
        );
        assert_eq!(phase.deadline(), Some(t0 + Duration::from_millis(1000)));
    }

    #[test]
    fn source_names_who_asked_in_the_log() {
        assert_eq!(Source::Signal(Signal::Int).to_string(), "SIGINT received");
        assert_eq!(
            Source::Application.to_string(),
            "shutdown requested by the application"
        );
    }

    #[test]
    fn outcome_worst_ranks_a_lost_loop_over_a_deadline_over_a_failed_step() {
        let died = Outcome::LoopDied { index: 1 };
        let all = [
            Outcome::Drained,
            Outcome::StepFailed,
            Outcome::TimedOut,
            died,
        ];
        for (i, a) in all.iter().enumerate() {
            for (j, b) in all.iter().enumerate() {
                assert_eq!(a.worst(*b), all[i.max(j)], "{a:?} vs {b:?}");
            }
        }
        assert_eq!(died.exit_code(), 1);
    }

    #[test]
    fn phase_delays_then_drains_then_times_out() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut phase = Phase::Serving;
        assert_eq!(
            phase.on(Event::Stop(Source::Signal(Signal::Int), t0), budget(200)),
            Step::Announce { drain_now: false }
        );
        assert_eq!(
            phase.on(Event::Tick(t0 + ms(100)), budget(200)),
            Step::Nothing
        );
        assert_eq!(
            phase.on(Event::Empty(t0 + ms(100)), budget(200)),
            Step::Nothing,
            "no drain during the delay"
        );
        assert_eq!(
            phase.on(Event::Tick(t0 + ms(200)), budget(200)),
            Step::StartDrain
        );
        assert_eq!(
            phase.on(Event::Tick(t0 + ms(999)), budget(200)),
            Step::Nothing
        );
        assert_eq!(
            phase.on(Event::Tick(t0 + ms(1000)), budget(200)),
            Step::Force
        );
        assert_eq!(phase.outcome(), Some(Outcome::TimedOut));
    }
}
