//! Whether the database is reachable, as the pool's workers find it, and which of their
//! findings are worth a log line.
//!
//! What it is: [`Outage`], one small state machine for the whole pool, fed the end of
//! every connection attempt by every worker. Each transition returns the [`Report`] to log,
//! if any: one warning when an outage starts, a summary at most every
//! [`SUMMARY_INTERVAL`] while it lasts, one line when it ends. Without it each worker
//! would warn on every retry: four workers backing off up to 5 s print some thirty lines
//! in the first twelve seconds of an outage, and a reader cannot tell one outage from many.
//!
//! What it is not: the retrying (each worker keeps its own backoff, `worker.rs`), nor the
//! logging (the worker logs what it is handed, and keeps its per-attempt details at
//! debug). It never reads the clock: `now` is passed in, so every rule is tested here
//! without threads, a database or waiting.
//!
//! States, one line each:
//! - `Unknown`: start-up; no attempt has ended yet;
//! - `Reachable`: the last attempt to end, by any worker, connected;
//! - `Unreachable`: attempts have failed since `since`, and none has connected since.
//!
//! ```text
//!              connected                      connected: "reachable (again) after"
//!   Unknown ─────────────► Reachable ◄──────────────────────────────┐
//!      │                      │                                      │
//!      │ failed               │ failed: "unreachable"                │
//!      └──────────────────────┴─────────────────────────────► Unreachable ◄─┐
//!                                                                    │       │
//!                                                                    └───────┘
//!                                      failed: counted; "still unreachable" once the
//!                                      last line is SUMMARY_INTERVAL old
//! ```
//!
//! Invariant: while `Unreachable`, every failed attempt is counted exactly once, in the
//! next summary and in the recovery line's total.

use std::fmt;
use std::time::{Duration, Instant};

use super::worker::BACKOFF_MAX;

/// The shortest time between two lines about one outage. Long enough that a database
/// down for an hour costs sixty lines, not thousands; short enough that someone tailing
/// the log sees within a minute that it is still down, and how hard the workers are trying.
pub(super) const SUMMARY_INTERVAL: Duration = Duration::from_secs(60);

/// The pool's view of the database (see the module doc).
#[derive(Debug, Default)]
pub(super) struct Outage {
    state: State,
}

#[derive(Debug, Default)]
enum State {
    #[default]
    Unknown,
    Reachable,
    Unreachable(Down),
}

/// What an outage has seen so far.
#[derive(Debug)]
struct Down {
    /// The first failed attempt.
    since: Instant,
    /// Whether a worker had connected before it: its end reads "reachable again".
    was_reached: bool,
    /// Failed attempts since `since`, by all workers.
    failures: u64,
    /// When the last line about this outage was logged: the next summary is due
    /// [`SUMMARY_INTERVAL`] after it.
    reported_at: Instant,
    /// Failed attempts since that line.
    unreported: u64,
    last_error: String,
}

/// A line worth logging, with its level ([`Report::level`]); its text is its `Display`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Report {
    /// The first failed attempt since the database was reached, or at start-up.
    Unreachable { error: String },
    /// Still down, a summary interval or more after the last line.
    StillUnreachable {
        failures: u64,
        over: Duration,
        last_error: String,
    },
    /// A worker connected after the outage.
    Reachable {
        again: bool,
        after: Duration,
        failures: u64,
    },
}

impl Outage {
    /// A connection attempt failed with `error`.
    pub(super) fn failed(&mut self, now: Instant, error: String) -> Option<Report> {
        match &mut self.state {
            // An outage's first failure is its one warning, whoever meets it first.
            State::Unknown | State::Reachable => {
                let was_reached = matches!(self.state, State::Reachable);
                self.set(State::Unreachable(Down {
                    since: now,
                    was_reached,
                    failures: 1,
                    reported_at: now,
                    unreported: 0,
                    last_error: error.clone(),
                }));
                Some(Report::Unreachable { error })
            }
            // While down, failures are counted, and summed up once the last line is old.
            State::Unreachable(down) => {
                down.failures += 1;
                down.unreported += 1;
                down.last_error = error;
                let over = now.saturating_duration_since(down.reported_at);
                if over < SUMMARY_INTERVAL {
                    return None;
                }
                down.reported_at = now;
                Some(Report::StillUnreachable {
                    failures: std::mem::take(&mut down.unreported),
                    over,
                    last_error: down.last_error.clone(),
                })
            }
        }
    }

    /// A connection attempt succeeded.
    pub(super) fn connected(&mut self, now: Instant) -> Option<Report> {
        let report = match &self.state {
            // The first worker back ends the outage, for all of them.
            State::Unreachable(down) => Some(Report::Reachable {
                again: down.was_reached,
                after: now.saturating_duration_since(down.since),
                failures: down.failures,
            }),
            // Connecting while the database is up is no news.
            State::Unknown | State::Reachable => None,
        };
        if !matches!(self.state, State::Reachable) {
            self.set(State::Reachable);
        }
        report
    }

    /// True while attempts fail and none has connected since: a worker's own warnings
    /// (a lost connection, a query with no answer) are then part of the outage already
    /// reported, and go to debug.
    pub(super) fn is_down(&self) -> bool {
        matches!(self.state, State::Unreachable(_))
    }

    /// The one place the state changes.
    fn set(&mut self, new: State) {
        log::trace!("db outage: {}=>{}", self.state.name(), new.name());
        self.state = new;
    }
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            State::Unknown => "Unknown",
            State::Reachable => "Reachable",
            State::Unreachable(_) => "Unreachable",
        }
    }
}

impl Report {
    /// An outage and its summaries warn; its end is good news.
    pub(super) fn level(&self) -> log::Level {
        match self {
            Report::Unreachable { .. } | Report::StillUnreachable { .. } => log::Level::Warn,
            Report::Reachable { .. } => log::Level::Info,
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Report::Unreachable { error } => write!(
                f,
                "database unreachable ({error}); workers retry with backoff up to {}s",
                BACKOFF_MAX.as_secs()
            ),
            Report::StillUnreachable {
                failures,
                over,
                last_error,
            } => write!(
                f,
                "database still unreachable: {} in the last {}s (last error: {last_error})",
                FailedAttempts(*failures),
                over.as_secs()
            ),
            Report::Reachable {
                again,
                after,
                failures,
            } => write!(
                f,
                "database reachable {}after {:.1}s ({})",
                if *again { "again " } else { "" },
                after.as_secs_f64(),
                FailedAttempts(*failures)
            ),
        }
    }
}

/// "1 failed attempt", "12 failed attempts".
struct FailedAttempts(u64);

impl fmt::Display for FailedAttempts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plural = if self.0 == 1 { "" } else { "s" };
        write!(f, "{} failed attempt{plural}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    /// An outage that began at `t0` after the database had been reached.
    fn down_since(t0: Instant) -> Outage {
        let mut outage = Outage::default();
        assert_eq!(outage.connected(t0), None);
        assert!(outage.failed(t0, "refused".into()).is_some());
        outage
    }

    #[test]
    fn first_failure_after_reaching_the_database_warns_once() {
        let t0 = Instant::now();
        let mut outage = Outage::default();
        assert_eq!(outage.connected(t0), None);
        let report = outage.failed(t0, "connection refused".into());
        assert_eq!(
            report,
            Some(Report::Unreachable {
                error: "connection refused".into()
            })
        );
        let report = report.map(|r| (r.level(), r.to_string()));
        assert_eq!(
            report,
            Some((
                log::Level::Warn,
                "database unreachable (connection refused); workers retry with backoff up to 5s"
                    .to_owned()
            ))
        );
        assert!(outage.is_down());
    }

    #[test]
    fn first_failure_at_start_up_warns_once() {
        let t0 = Instant::now();
        let mut outage = Outage::default();
        assert!(matches!(
            outage.failed(t0, "refused".into()),
            Some(Report::Unreachable { .. })
        ));
        assert_eq!(outage.failed(t0, "refused".into()), None);
    }

    #[test]
    fn failures_within_the_summary_interval_log_nothing() {
        let t0 = Instant::now();
        let mut outage = down_since(t0);
        for n in 1..60 {
            assert_eq!(
                outage.failed(t0 + secs(n), "refused".into()),
                None,
                "at {n}s"
            );
        }
        assert!(outage.is_down());
    }

    #[test]
    fn summary_after_the_interval_counts_the_failures_since_the_last_line() {
        let t0 = Instant::now();
        let mut outage = down_since(t0);
        for n in 1..=11 {
            assert_eq!(outage.failed(t0 + secs(5 * n), "refused".into()), None);
        }
        let report = outage.failed(t0 + secs(61), "timed out".into());
        assert_eq!(
            report.as_ref().map(ToString::to_string).as_deref(),
            Some(
                "database still unreachable: 12 failed attempts in the last 61s (last error: timed out)"
            )
        );
        assert_eq!(report.map(|r| r.level()), Some(log::Level::Warn));
        // The next summary counts from this one.
        assert_eq!(outage.failed(t0 + secs(100), "refused".into()), None);
        assert_eq!(
            outage.failed(t0 + secs(121), "refused".into()),
            Some(Report::StillUnreachable {
                failures: 2,
                over: secs(60),
                last_error: "refused".into()
            })
        );
    }

    #[test]
    fn recovery_reports_once_with_the_time_and_every_failure() {
        let t0 = Instant::now();
        let mut outage = down_since(t0);
        for n in 1..=69 {
            let _ = outage.failed(t0 + secs(n), "refused".into());
        }
        let report = outage.connected(t0 + Duration::from_millis(72_500));
        assert_eq!(
            report.as_ref().map(|r| (r.level(), r.to_string())),
            Some((
                log::Level::Info,
                "database reachable again after 72.5s (70 failed attempts)".to_owned()
            ))
        );
        assert!(!outage.is_down());
        // The other workers coming back are no news.
        assert_eq!(outage.connected(t0 + secs(73)), None);
        assert_eq!(outage.connected(t0 + secs(74)), None);
    }

    #[test]
    fn recovery_from_a_start_up_outage_does_not_say_again() {
        let t0 = Instant::now();
        let mut outage = Outage::default();
        let _ = outage.failed(t0, "refused".into());
        let report = outage.connected(t0 + secs(3));
        assert_eq!(
            report.map(|r| r.to_string()).as_deref(),
            Some("database reachable after 3.0s (1 failed attempt)")
        );
    }

    #[test]
    fn second_outage_warns_again_and_counts_afresh() {
        let t0 = Instant::now();
        let mut outage = down_since(t0);
        let _ = outage.failed(t0 + secs(1), "refused".into());
        assert!(outage.connected(t0 + secs(2)).is_some());

        assert!(matches!(
            outage.failed(t0 + secs(10), "reset".into()),
            Some(Report::Unreachable { .. })
        ));
        assert_eq!(outage.failed(t0 + secs(11), "reset".into()), None);
        assert_eq!(
            outage.connected(t0 + secs(12)),
            Some(Report::Reachable {
                again: true,
                after: secs(2),
                failures: 2
            })
        );
    }

    #[test]
    fn connecting_without_an_outage_reports_nothing() {
        let t0 = Instant::now();
        let mut outage = Outage::default();
        assert_eq!(outage.connected(t0), None);
        assert_eq!(outage.connected(t0 + secs(1)), None);
        assert!(!outage.is_down());
    }
}
