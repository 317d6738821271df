//! What the server counts, and the scrape that shows it: the numbers behind `/metrics`.
//!
//! What it is: [`LoopStats`], one event loop's cells, which that loop alone adds to as it
//! works (see `metrics` for why a cell has one writer); and [`Stats`], shared by the loops,
//! the coordinator and whoever scrapes: every loop's cells, plus the few numbers that
//! belong to no loop — where the shutdown stands, hand-overs, the database pool, access-log
//! lines dropped. [`Stats::render`] sums the loops' cells and writes the exposition; the
//! README lists every family it writes.
//!
//! What it is not: it decides nothing and never reads the clock on the request path (the
//! loop's `now` is passed in); it does not serve HTTP (`/metrics` is a route, and
//! `METRICS_LISTEN` a small server of its own, `server/scrape.rs`).
//!
//! Invariants:
//! - a request adds to its own loop's cells only: no shared atomic, no lock on the
//!   request path; a scrape reads every loop's cells and writes none;
//! - every answered request is counted once, under one route and one status class, and
//!   once in the duration histogram; every closed connection once, under its
//!   [`CloseReason`]; every close during a shutdown once more, under the [`Heading`] the
//!   shutdown report files it under; the report is read from these cells
//!   (`Report::of_loop`), so `/metrics` and the report agree by construction;
//! - a loop counts an accept before its `open` gauge rises, and a close (with its reason)
//!   before the gauge falls: a scrape that sees a connection gone also sees why.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::{Duration, Instant};

use crate::access_log::AccessLog;
use crate::conn::{CloseReason, Heading};
use crate::db::{Pool, PoolStats};
use crate::metrics::{Counter, Exposition, Gauge, Histogram, Kind};

/// The route of an answer the server gave itself, without the handler: a request that
/// broke a rule, timed out, or met the shutdown deadline.
pub const ROUTE_NONE: &str = "none";

/// The route of an answer whose handler named none ([`Ctx::route`](crate::handler::Ctx::route)),
/// and of every route past the table's room.
pub const ROUTE_OTHER: &str = "other";

/// Distinct routes a loop counts apart. Route names are a handler's templates
/// (`/users/:id`, never the path itself), so a few dozen is plenty; a handler that names
/// more has the rest counted as `other`, so a bug cannot grow the scrape without bound.
const ROUTE_SLOTS: usize = 32;

/// Status classes, 1xx to 5xx.
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// One loop's cells: written by that loop only, read by a scrape.
#[derive(Debug, Default)]
pub struct LoopStats {
    /// The route each row of `requests` counts; a row is named once, by its loop, the
    /// first time it sees the route (a `OnceLock`, so a scrape on another thread reads
    /// the name only once it is whole). The last row is always [`ROUTE_OTHER`].
    routes: [OnceLock<&'static str>; ROUTE_SLOTS],
    requests: [[Counter; CLASSES.len()]; ROUTE_SLOTS],
    duration: Histogram,
    /// Connections accepted.
    pub accepted: Counter,
    closed: [Counter; CloseReason::ALL.len()],
    shutdown: [Counter; Heading::ALL.len()],
    /// Bytes read from clients.
    pub received: Counter,
    /// Bytes written to clients.
    pub sent: Counter,
    /// Connections open now.
    pub open: Gauge,
    /// Of those, connections between requests (state `Idle`: keep-alive, or not yet
    /// sent one).
    idle: Gauge,
    /// Connections open when the shutdown order came, as the report says.
    pub open_at_signal: Gauge,
    /// Connections accepted after the shutdown order (the drain delay, the backlog).
    pub accepted_after_signal: Counter,
}

impl LoopStats {
    /// A request was answered with `status`: counted under its route and class, and its
    /// time from `started` (its first byte) to `now` in the histogram. The loop only.
    #[inline(always)] // once a request: a call would cost more than the adds it makes
    pub fn answered(&self, route: &'static str, status: u16, started: Instant, now: Instant) {
        // 1xx..5xx to 0..4; a status below 100 (a handler's bug) wraps, and counts as 5xx.
        let class = usize::from(status / 100)
            .wrapping_sub(1)
            .min(CLASSES.len() - 1);
        self.requests[self.row(route)][class].add(1);
        // Most requests are answered in the loop turn their bytes arrived in: no
        // subtraction (two checked 64-bit ones, and a 128-bit multiply) for those.
        if started == now {
            self.duration.observe_zero();
        } else {
            self.duration
                .observe(now.saturating_duration_since(started));
        }
    }

    /// A connection became idle (`true`) or stopped being idle. The loop only.
    #[inline]
    pub fn idle_changed(&self, idle: bool) {
        let n = self.idle.get();
        self.idle
            .set(if idle { n + 1 } else { n.saturating_sub(1) });
    }

    /// Connections closed during the shutdown under `heading`, so far.
    pub fn shutdown_closes(&self, heading: Heading) -> u64 {
        self.shutdown[heading as usize].get()
    }

    /// A connection closed for `reason`; `shutting_down`: during a shutdown, so the report
    /// counts it too. The loop only.
    pub fn closed(&self, reason: CloseReason, shutting_down: bool) {
        self.closed[reason.index()].add(1);
        if shutting_down {
            self.shutdown[Heading::of(reason) as usize].add(1);
        }
    }

    /// The row of `route`: the row that has its name, or the first unnamed one, which
    /// takes it. A scan, not a map: a loop meets a handful of routes, the benchmark
    /// routes are met first, and a name is compared by its address before its bytes
    /// (a route is a literal, and the same literal is the same address).
    #[inline(always)] // see `answered`
    fn row(&self, route: &'static str) -> usize {
        let last = ROUTE_SLOTS - 1;
        for (i, name) in self.routes[..last].iter().enumerate() {
            let name = match name.get() {
                Some(name) => *name,
                None => *name.get_or_init(|| route),
            };
            if std::ptr::eq(name, route) || name == route {
                return i;
            }
        }
        last
    }

    /// Each named row with its counts.
    fn rows(&self) -> impl Iterator<Item = (&'static str, &[Counter; CLASSES.len()])> {
        self.routes
            .iter()
            .zip(&self.requests)
            .enumerate()
            .filter_map(|(i, (name, row))| {
                let name = if i == ROUTE_SLOTS - 1 {
                    Some(&ROUTE_OTHER)
                } else {
                    name.get()
                };
                name.map(|name| (*name, row))
            })
    }
}

/// What a loop lends each connection call for counting and logging, in one piece (one
/// pointer in `LoopCx`, not four).
#[derive(Debug)]
pub struct Telemetry {
    /// The loop's cells.
    pub cells: Arc<LoopStats>,
    /// Every loop's numbers, for a handler that serves `/metrics`.
    pub stats: Arc<Stats>,
    /// The loop's access log, when it is on.
    pub access_log: Option<AccessLog>,
    /// Whether anyone reads a request's details: the access log is on, or debug logging
    /// is enabled (decided once: the logger's level is set once, at start-up). Off, a
    /// request's log lines cost nothing but this test.
    pub details: bool,
}

impl Telemetry {
    /// Loop `index`'s telemetry.
    pub fn new(stats: Arc<Stats>, index: usize, access_log: Option<AccessLog>) -> Telemetry {
        Telemetry {
            cells: stats.of_loop(index).unwrap_or_default(),
            stats,
            details: access_log.is_some() || log::max_level() >= log::LevelFilter::Debug,
            access_log,
        }
    }
}

/// Where the shutdown stands, as `lastcall_shutdown_phase` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// No shutdown.
    Serving = 0,
    /// The order came: readiness says 503, and the drain delay (if any) runs.
    Announced = 1,
    /// The listener is closed (or left to a successor): in-flight requests finish.
    Draining = 2,
    /// Every loop has ended; the pool closes and the process exits.
    Stopped = 3,
}

impl Phase {
    const ALL: [Phase; 4] = [
        Phase::Serving,
        Phase::Announced,
        Phase::Draining,
        Phase::Stopped,
    ];

    fn label(self) -> &'static str {
        match self {
            Phase::Serving => "serving",
            Phase::Announced => "announced",
            Phase::Draining => "draining",
            Phase::Stopped => "stopped",
        }
    }
}

/// How a hand-over (SIGHUP) ended, as `lastcall_handovers_total` counts it.
#[derive(Debug, Clone, Copy)]
pub enum Handover {
    /// A successor was started.
    Started = 0,
    /// It said it was ready, and this process left it the listener.
    Completed = 1,
    /// It exited, missed its deadline, or could not be started: this process serves on.
    Failed = 2,
}

/// The database pool as a scrape sees it: live, or its last numbers once closed (the
/// pool must be the coordinator's alone to close, so a scrape never holds it then).
#[derive(Debug, Default)]
enum PoolView {
    #[default]
    None,
    Live(Weak<Pool>),
    Closed(PoolStats),
}

/// Everything a scrape reads: every loop's cells, and the numbers of no single loop.
#[derive(Debug)]
pub struct Stats {
    loops: Vec<Arc<LoopStats>>,
    phase: AtomicU8,
    signal_at: Mutex<Option<Instant>>,
    handovers: [AtomicU64; 3],
    pool: Mutex<PoolView>,
    access_log_dropped: OnceLock<Arc<AtomicU64>>,
    /// `/metrics` on the main port; false when `METRICS_LISTEN` serves it instead.
    on_main_port: bool,
}

impl Stats {
    /// The stats of a server of `loops` loops; `on_main_port`: whether the main port
    /// serves `/metrics`.
    pub fn new(loops: usize, on_main_port: bool) -> Stats {
        Stats {
            loops: (0..loops).map(|_| Arc::default()).collect(),
            phase: AtomicU8::new(Phase::Serving as u8),
            signal_at: Mutex::new(None),
            handovers: Default::default(),
            pool: Mutex::new(PoolView::None),
            access_log_dropped: OnceLock::new(),
            on_main_port,
        }
    }

    /// Loop `index`'s cells.
    pub fn of_loop(&self, index: usize) -> Option<Arc<LoopStats>> {
        self.loops.get(index).cloned()
    }

    /// Whether the main port answers `/metrics`.
    pub fn on_main_port(&self) -> bool {
        self.on_main_port
    }

    /// The shutdown moved on; `signal_at` is set with the first step past serving.
    pub fn set_phase(&self, phase: Phase, signal_at: Option<Instant>) {
        if let Some(at) = signal_at {
            let mut slot = self
                .signal_at
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            slot.get_or_insert(at);
        }
        self.phase.store(phase as u8, Ordering::Relaxed);
    }

    /// One more hand-over event.
    pub fn handover(&self, what: Handover) {
        self.handovers[what as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// The pool a scrape reports on, until [`Stats::pool_closing`].
    pub fn watch_pool(&self, pool: &Arc<Pool>) {
        *self.pool.lock().unwrap_or_else(PoisonError::into_inner) =
            PoolView::Live(Arc::downgrade(pool));
    }

    /// The pool is about to close: keep its last numbers, and let go of it, so that no
    /// scrape holds it while the coordinator takes it back.
    pub fn pool_closing(&self, pool: &Pool) {
        *self.pool.lock().unwrap_or_else(PoisonError::into_inner) = PoolView::Closed(pool.stats());
    }

    /// The access log's count of dropped lines.
    pub fn watch_access_log(&self, dropped: Arc<AtomicU64>) {
        let _ = self.access_log_dropped.set(dropped);
    }

    /// The exposition of everything, summed over the loops, at `now`.
    pub fn render(&self, now: Instant) -> String {
        let mut e = Exposition::default();
        let loops: Vec<&LoopStats> = self.loops.iter().map(|l| &**l).collect();
        let sum = |f: fn(&LoopStats) -> u64| loops.iter().map(|l| f(l)).sum::<u64>();

        let version = [("version", env!("CARGO_PKG_VERSION"))];
        e.family(
            "lastcall_build_info",
            Kind::Gauge,
            "Always 1; the version as a label.",
        )
        .sample("lastcall_build_info", &version, 1);
        e.single(
            "lastcall_loops",
            Kind::Gauge,
            "Event loops (WORKERS).",
            loops.len() as u64,
        );
        self.render_requests(&mut e, &loops);
        e.histogram(
            "lastcall_request_duration_seconds",
            "From a request's first byte to its answer's encoding.",
            &loops.iter().map(|l| &l.duration).collect::<Vec<_>>(),
        );
        let (open, idle) = (sum(|l| l.open.get()), sum(|l| l.idle.get()));
        let dropped = self
            .access_log_dropped
            .get()
            .map_or(0, |d| d.load(Ordering::Relaxed));
        for (name, kind, help, value) in [
            (
                "lastcall_connections_open",
                Kind::Gauge,
                "Connections open now.",
                open,
            ),
            (
                "lastcall_connections_idle",
                Kind::Gauge,
                "Open connections between requests.",
                idle,
            ),
            (
                "lastcall_connections_active",
                Kind::Gauge,
                "Open connections with a request in progress.",
                open.saturating_sub(idle),
            ),
            (
                "lastcall_connections_accepted_total",
                Kind::Counter,
                "Connections accepted.",
                sum(|l| l.accepted.get()),
            ),
            (
                "lastcall_received_bytes_total",
                Kind::Counter,
                "Bytes read from clients.",
                sum(|l| l.received.get()),
            ),
            (
                "lastcall_sent_bytes_total",
                Kind::Counter,
                "Bytes written to clients.",
                sum(|l| l.sent.get()),
            ),
            (
                "lastcall_access_log_dropped_lines_total",
                Kind::Counter,
                "Access-log lines dropped: the output did not keep up.",
                dropped,
            ),
        ] {
            e.single(name, kind, help, value);
        }
        let closed = |r: CloseReason| loops.iter().map(|l| l.closed[r.index()].get()).sum();
        let name = "lastcall_connections_closed_total";
        e.family(name, Kind::Counter, "Connections closed, by why.");
        for reason in CloseReason::ALL {
            e.sample(name, &[("reason", reason.label())], closed(reason));
        }
        let name = "lastcall_timeouts_total";
        e.family(
            name,
            Kind::Counter,
            "Connections closed by a timeout, by which.",
        );
        for (kind, reason) in [
            ("idle", CloseReason::IdleTimeout),
            ("request", CloseReason::RequestTimeout),
            ("write", CloseReason::WriteTimeout),
        ] {
            e.sample(name, &[("kind", kind)], closed(reason));
        }
        self.render_shutdown(&mut e, &loops, now);
        self.render_pool(&mut e);
        e.finish()
    }

    fn render_requests(&self, e: &mut Exposition, loops: &[&LoopStats]) {
        // Rows are per loop, in the order each loop met its routes: summed by name.
        let mut rows: Vec<(&'static str, [u64; CLASSES.len()])> = Vec::new();
        for (route, counts) in loops.iter().flat_map(|l| l.rows()) {
            let i = match rows.iter().position(|(r, _)| *r == route) {
                Some(i) => i,
                None => {
                    rows.push((route, [0; CLASSES.len()]));
                    rows.len() - 1
                }
            };
            for (total, count) in rows[i].1.iter_mut().zip(counts) {
                *total += count.get();
            }
        }
        let name = "lastcall_requests_total";
        e.family(
            name,
            Kind::Counter,
            "Requests answered, by route (the handler's name for it; none: answered by the server itself) and status class.",
        );
        for (route, counts) in rows {
            for (class, count) in CLASSES.iter().zip(counts) {
                if count > 0 {
                    e.sample(name, &[("route", route), ("class", class)], count);
                }
            }
        }
    }

    fn render_shutdown(&self, e: &mut Exposition, loops: &[&LoopStats], now: Instant) {
        let phase = self.phase.load(Ordering::Relaxed);
        let name = "lastcall_shutdown_phase";
        e.family(name, Kind::Gauge, "1 for the phase the server is in.");
        for p in Phase::ALL {
            e.sample(name, &[("phase", p.label())], u64::from(p as u8 == phase));
        }
        let since = *self
            .signal_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let name = "lastcall_shutdown_seconds_since_signal";
        e.family(
            name,
            Kind::Gauge,
            "Seconds since the shutdown signal; 0 while serving.",
        )
        .seconds(
            name,
            &[],
            since.map_or(Duration::ZERO, |at| now.saturating_duration_since(at)),
        );
        let sum = |f: fn(&LoopStats) -> u64| loops.iter().map(|l| f(l)).sum::<u64>();
        e.single(
            "lastcall_shutdown_open_at_signal",
            Kind::Gauge,
            "Connections open when the shutdown began.",
            sum(|l| l.open_at_signal.get()),
        );
        e.single(
            "lastcall_shutdown_accepted_after_signal_total",
            Kind::Counter,
            "Connections accepted after the shutdown began (drain delay, backlog).",
            sum(|l| l.accepted_after_signal.get()),
        );
        let name = "lastcall_shutdown_connections_total";
        e.family(
            name,
            Kind::Counter,
            "Connections closed during the shutdown, as the shutdown report counts them.",
        );
        for heading in Heading::ALL {
            let count = loops
                .iter()
                .map(|l| l.shutdown[heading as usize].get())
                .sum();
            e.sample(name, &[("outcome", heading.label())], count);
        }
        let name = "lastcall_handovers_total";
        e.family(
            name,
            Kind::Counter,
            "Hand-overs to a successor (SIGHUP), by how they went.",
        );
        for (what, label) in [
            (Handover::Started, "started"),
            (Handover::Completed, "completed"),
            (Handover::Failed, "failed"),
        ] {
            let count = self.handovers[what as usize].load(Ordering::Relaxed);
            e.sample(name, &[("result", label)], count);
        }
    }

    /// The pool's families, when there is a pool.
    fn render_pool(&self, e: &mut Exposition) {
        let stats = match &*self.pool.lock().unwrap_or_else(PoisonError::into_inner) {
            PoolView::None => return,
            PoolView::Live(pool) => match pool.upgrade() {
                Some(pool) => pool.stats(),
                None => return,
            },
            PoolView::Closed(stats) => *stats,
        };
        for (name, help, value) in [
            (
                "lastcall_db_workers",
                "Database worker threads (DB_POOL_SIZE).",
                stats.workers,
            ),
            (
                "lastcall_db_workers_connected",
                "Database workers connected now.",
                stats.connected,
            ),
            (
                "lastcall_db_queue_depth",
                "Database jobs waiting for a worker.",
                stats.queued,
            ),
        ] {
            e.single(name, Kind::Gauge, help, value);
        }
        let name = "lastcall_db_jobs_rejected_total";
        e.family(
            name,
            Kind::Counter,
            "Database jobs answered 503 without running, by why.",
        );
        for (reason, value) in [
            ("busy", stats.rejected_busy),
            ("unavailable", stats.rejected_unavailable),
            ("queue_timeout", stats.queue_timeouts),
        ] {
            e.sample(name, &[("reason", reason)], value);
        }
        for (name, help, value) in [
            (
                "lastcall_db_reconnects_total",
                "Database connections made again after one was lost or failed.",
                stats.reconnects,
            ),
            (
                "lastcall_db_connect_failures_total",
                "Database connection attempts that failed.",
                stats.connect_failures,
            ),
        ] {
            e.single(name, Kind::Counter, help, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str, series: &str) -> u64 {
        let line = text
            .lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .unwrap_or_else(|| panic!("no {series} in\n{text}"));
        line[series.len() + 1..].parse().unwrap()
    }

    #[test]
    fn requests_are_summed_over_loops_by_route_whatever_order_each_loop_met_them() {
        let stats = Stats::new(2, true);
        let (a, b) = (stats.of_loop(0).unwrap(), stats.of_loop(1).unwrap());
        let now = Instant::now();
        a.answered("/a", 200, now, now);
        a.answered("/b", 404, now, now);
        b.answered("/b", 404, now, now);
        b.answered("/a", 503, now, now);
        // A status below 100 is a handler's bug: counted, as 5xx.
        b.answered("/a", 42, now, now);
        let text = stats.render(now);
        assert_eq!(
            value(&text, r#"lastcall_requests_total{route="/a",class="2xx"}"#),
            1
        );
        assert_eq!(
            value(&text, r#"lastcall_requests_total{route="/b",class="4xx"}"#),
            2
        );
        assert_eq!(
            value(&text, r#"lastcall_requests_total{route="/a",class="5xx"}"#),
            2
        );
        assert_eq!(value(&text, "lastcall_request_duration_seconds_count"), 5);
        assert_eq!(value(&text, "lastcall_loops"), 2);
    }

    #[test]
    fn routes_past_the_table_are_counted_as_other() {
        let stats = Stats::new(1, true);
        let cells = stats.of_loop(0).unwrap();
        let now = Instant::now();
        let names: Vec<&'static str> = (0..ROUTE_SLOTS + 5)
            .map(|i| &*Box::leak(format!("/r{i}").into_boxed_str()))
            .collect();
        for name in &names {
            cells.answered(name, 200, now, now);
        }
        let text = stats.render(now);
        assert_eq!(
            value(&text, r#"lastcall_requests_total{route="/r0",class="2xx"}"#),
            1
        );
        // Every row but the last is a route's; the rest share `other`.
        let other = ROUTE_SLOTS + 5 - (ROUTE_SLOTS - 1);
        let series = r#"lastcall_requests_total{route="other",class="2xx"}"#;
        assert_eq!(value(&text, series), other as u64);
        // The same name from another literal (another address) is the same route.
        cells.answered(
            Box::leak(String::from("/r0").into_boxed_str()),
            200,
            now,
            now,
        );
        let text = stats.render(now);
        assert_eq!(
            value(&text, r#"lastcall_requests_total{route="/r0",class="2xx"}"#),
            2
        );
    }

    #[test]
    fn gauges_and_the_shutdown_headings_follow_the_loop() {
        let stats = Stats::new(1, true);
        let cells = stats.of_loop(0).unwrap();
        cells.open.set(3);
        cells.idle_changed(true);
        cells.idle_changed(true);
        cells.idle_changed(false);
        cells.closed(CloseReason::IdleTimeout, false);
        cells.closed(CloseReason::IdleOnShutdown, true);
        cells.closed(CloseReason::CutAtDeadline, true);
        let signal = Instant::now();
        stats.set_phase(Phase::Draining, Some(signal));
        let text = stats.render(signal + Duration::from_millis(1500));
        assert_eq!(value(&text, "lastcall_connections_open"), 3);
        assert_eq!(value(&text, "lastcall_connections_idle"), 1);
        assert_eq!(value(&text, "lastcall_connections_active"), 2);
        assert_eq!(value(&text, r#"lastcall_timeouts_total{kind="idle"}"#), 1);
        let heading = |h: &str| format!(r#"lastcall_shutdown_connections_total{{outcome="{h}"}}"#);
        assert_eq!(value(&text, &heading("idle_closed")), 1);
        assert_eq!(value(&text, &heading("cut")), 1);
        assert_eq!(
            value(&text, &heading("failed")),
            0,
            "the timeout came before the signal"
        );
        assert_eq!(
            value(&text, r#"lastcall_shutdown_phase{phase="draining"}"#),
            1
        );
        assert!(
            text.contains("lastcall_shutdown_seconds_since_signal 1.5\n"),
            "{text}"
        );
        // No pool, no pool families.
        assert!(!text.contains("lastcall_db_"), "{text}");
    }
}
