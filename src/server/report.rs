//! The shutdown report: the numbers behind the last log line, and the line itself.
//!
//! What it is: counters and timestamps that the shutdown steps fill in as they happen —
//! when the shutdown began and when the drain did, how many connections were open then,
//! how many came after, and how each one that closed during the shutdown ended — and
//! [`Report::log`], which writes them as one line (shutdown step 9).
//!
//! What it is not: it decides nothing and never reads the clock; every time is passed in.
//!
//! Invariant: every close during a shutdown is counted exactly once, under the heading
//! its [`CloseReason`] belongs to (the `match` in [`Report::count`] names every reason).

use std::time::Instant;

use super::shutdown::Outcome;
use crate::conn::CloseReason;

/// The numbers behind the one-line shutdown report.
#[derive(Debug, Default)]
pub(super) struct Report {
    pub(super) began_at: Option<Instant>,
    pub(super) drain_at: Option<Instant>,
    pub(super) open_at_start: usize,
    pub(super) accepted_after_start: usize,
    idle_closed: usize,
    /// Finished their request and closed, or the client closed them.
    drained: usize,
    /// Ended by the client's fault during the drain: a reset, a timeout, a request left
    /// half-sent.
    failed: usize,
    answered_503: usize,
    cut: usize,
}

impl Report {
    /// Counts one connection closed during the shutdown.
    pub(super) fn count(&mut self, reason: CloseReason) {
        match reason {
            CloseReason::IdleOnShutdown => self.idle_closed += 1,
            CloseReason::AnsweredUnavailable => self.answered_503 += 1,
            CloseReason::CutAtDeadline => self.cut += 1,
            CloseReason::Done | CloseReason::PeerClosed => self.drained += 1,
            CloseReason::PeerReset
            | CloseReason::Rejected
            | CloseReason::PeerClosedMidRequest
            | CloseReason::UnreadBody
            | CloseReason::IdleTimeout
            | CloseReason::RequestTimeout
            | CloseReason::WriteTimeout
            | CloseReason::StreamFailed => self.failed += 1,
        }
    }

    /// Connections ended by the deadline so far: answered 503 or cut.
    pub(super) fn forced(&self) -> usize {
        self.answered_503 + self.cut
    }

    /// Shutdown step 9: the one-line report, the last line the server logs.
    pub(super) fn log(&self, outcome: Outcome, now: Instant, pool_ms: u128) {
        let ms = |from: Option<Instant>, to: Option<Instant>| match (from, to) {
            (Some(a), Some(b)) => b.saturating_duration_since(a).as_millis(),
            _ => 0,
        };
        log::info!(
            "shutdown report: delay={}ms drain={}ms pool={}ms total={}ms; connections at signal={} accepted after={} idle_closed={} drained={} failed={} answered_503={} cut={}; exit {}",
            ms(self.began_at, self.drain_at),
            ms(self.drain_at, Some(now)),
            pool_ms,
            ms(self.began_at, Some(now)) + pool_ms,
            self.open_at_start,
            self.accepted_after_start,
            self.idle_closed,
            self.drained,
            self.failed,
            self.answered_503,
            self.cut,
            outcome.exit_code()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_counts_deadline_closes_as_forced_and_client_faults_as_failed() {
        let mut report = Report::default();
        for reason in [
            CloseReason::AnsweredUnavailable,
            CloseReason::CutAtDeadline,
            CloseReason::Rejected,
            CloseReason::PeerReset,
            CloseReason::Done,
            CloseReason::PeerClosed,
            CloseReason::IdleOnShutdown,
        ] {
            report.count(reason);
        }
        assert_eq!(report.forced(), 2);
        assert_eq!(
            (report.failed, report.drained, report.idle_closed),
            (2, 2, 1)
        );
    }
}
