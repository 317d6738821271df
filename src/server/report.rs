//! The shutdown report: the numbers behind the last log line, and the line itself.
//!
//! What it is: one loop's numbers when it ends — when its drain began, how many
//! connections it had open at the signal, how many came after, and how each one that
//! closed during the shutdown ended, read from the loop's cells ([`Report::of_loop`]: the
//! same counts `/metrics` shows, counted once) — and, summed over the loops by the
//! coordinator, [`Report::log`], which writes them as one line (shutdown step 9). Each
//! loop's own numbers are logged at debug ([`Report::log_loop`]).
//!
//! What it is not: it decides nothing and never reads the clock; every time is passed in.
//!
//! Invariant: every close during a shutdown is counted exactly once, under the heading
//! its `CloseReason` belongs to (the `match` in `Heading::of` names every reason), in the
//! loop that owned the connection.

use std::time::Instant;

use super::shutdown::Outcome;
use crate::conn::Heading;
use crate::stats::LoopStats;

/// The numbers behind the one-line shutdown report: one loop's, or their sum.
#[derive(Debug, Default, Clone)]
pub(super) struct Report {
    /// When the drain began (the listener's last accept); summed, the earliest loop's.
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
    /// One loop's numbers, from its cells, and when its drain began.
    pub(super) fn of_loop(cells: &LoopStats, drain_at: Option<Instant>) -> Report {
        let closed =
            |heading| usize::try_from(cells.shutdown_closes(heading)).unwrap_or(usize::MAX);
        let count = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        Report {
            drain_at,
            open_at_start: count(cells.open_at_signal.get()),
            accepted_after_start: count(cells.accepted_after_signal.get()),
            idle_closed: closed(Heading::IdleClosed),
            drained: closed(Heading::Drained),
            failed: closed(Heading::Failed),
            answered_503: closed(Heading::Answered503),
            cut: closed(Heading::Cut),
        }
    }

    /// Connections ended by the deadline: answered 503 or cut.
    pub(super) fn forced(&self) -> usize {
        self.answered_503 + self.cut
    }

    /// Adds another loop's numbers to these.
    pub(super) fn add(&mut self, other: &Report) {
        self.drain_at = match (self.drain_at, other.drain_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.open_at_start += other.open_at_start;
        self.accepted_after_start += other.accepted_after_start;
        self.idle_closed += other.idle_closed;
        self.drained += other.drained;
        self.failed += other.failed;
        self.answered_503 += other.answered_503;
        self.cut += other.cut;
    }

    /// The connection counts, as both report lines write them.
    fn counts(&self) -> String {
        format!(
            "connections at signal={} accepted after={} idle_closed={} drained={} failed={} answered_503={} cut={}",
            self.open_at_start,
            self.accepted_after_start,
            self.idle_closed,
            self.drained,
            self.failed,
            self.answered_503,
            self.cut,
        )
    }

    /// One loop's numbers, at debug, when it ends: how the kernel spread the clients
    /// (`accepted` over the loop's life) and how this loop's share ended.
    pub(super) fn log_loop(&self, index: usize, accepted: u64, outcome: Outcome) {
        log::debug!(
            "loop {index} report: accepted={accepted}; {}; exit {}",
            self.counts(),
            outcome.exit_code()
        );
    }

    /// Shutdown step 9: the one-line report over every loop, the last line the server
    /// logs. `began_at` is the signal (or request); `ended_at` when the last loop ended.
    pub(super) fn log(
        &self,
        loops: usize,
        outcome: Outcome,
        began_at: Instant,
        ended_at: Instant,
        pool_ms: u128,
    ) {
        let ms = |from: Instant, to: Instant| to.saturating_duration_since(from).as_millis();
        let drain_at = self.drain_at.unwrap_or(ended_at);
        log::info!(
            "shutdown report: loops={loops} delay={}ms drain={}ms pool={}ms total={}ms; {}; exit {}",
            ms(began_at, drain_at),
            ms(drain_at, ended_at),
            pool_ms,
            ms(began_at, ended_at) + pool_ms,
            self.counts(),
            outcome.exit_code()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::CloseReason;

    #[test]
    fn report_counts_deadline_closes_as_forced_and_client_faults_as_failed() {
        let cells = LoopStats::default();
        for reason in [
            CloseReason::AnsweredUnavailable,
            CloseReason::CutAtDeadline,
            CloseReason::Rejected,
            CloseReason::PeerReset,
            CloseReason::Done,
            CloseReason::PeerClosed,
            CloseReason::IdleOnShutdown,
        ] {
            cells.closed(reason, true);
        }
        // Closed before the shutdown: not the report's.
        cells.closed(CloseReason::PeerReset, false);
        let report = Report::of_loop(&cells, None);
        assert_eq!(report.forced(), 2);
        assert_eq!(
            (report.failed, report.drained, report.idle_closed),
            (2, 2, 1)
        );
    }

    #[test]
    fn report_sums_loops_and_keeps_the_earliest_drain() {
        let t0 = Instant::now();
        let later = t0 + std::time::Duration::from_millis(3);
        let (cells_one, cells_two) = (LoopStats::default(), LoopStats::default());
        cells_one.open_at_signal.set(2);
        cells_one.closed(CloseReason::IdleOnShutdown, true);
        cells_two.accepted_after_signal.add(1);
        cells_two.closed(CloseReason::CutAtDeadline, true);
        let one = Report::of_loop(&cells_one, Some(later));
        let two = Report::of_loop(&cells_two, Some(t0));
        let mut sum = Report::default();
        sum.add(&one);
        sum.add(&two);
        assert_eq!(sum.drain_at, Some(t0));
        assert_eq!(
            sum.counts(),
            "connections at signal=2 accepted after=1 idle_closed=1 drained=0 failed=0 answered_503=0 cut=1"
        );
    }
}
