//! Counting without slowing the count down, and showing the counts in Prometheus' text
//! exposition format (version 0.0.4), written by hand.
//!
//! What it is: [`Counter`] and [`Histogram`], cells an event loop adds to as it works, and
//! [`Exposition`], which writes families of samples (`# HELP`, `# TYPE`, then one line per
//! sample) for a scrape. Each loop owns its cells; a scrape reads every loop's cells and
//! sums them.
//!
//! Why cells of one writer: a counter shared by the loops would be an atomic
//! read-modify-write (a locked instruction, and a cache line bouncing between cores) on
//! every request. A cell written by its loop alone needs neither: a relaxed load and a
//! relaxed store are plain moves on x86 and ARM, and a reader on another thread (the
//! scrape) sees a value at most one update old. Only the owning loop may call
//! [`Counter::add`]; two writers would lose updates.
//!
//! Why by hand: the format is lines of `name{label="value"} number`; a crate for it would
//! be the largest dependency for the least code.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A count only its own loop adds to, read by anyone.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`. The owning loop only: a load and a store, not a locked add.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }

    /// The count so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Upper bounds of the duration buckets, in microseconds: from half a millisecond (a
/// request served from memory) to ten seconds (the longest the default timeouts allow a
/// request to take), roughly ×2.5 apart, as Prometheus' default buckets are.
pub const BUCKETS_US: [u64; 14] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000,
];

/// A value its own loop sets, read by anyone: a gauge.
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    /// Sets it. The owning loop only.
    #[inline]
    pub fn set(&self, n: u64) {
        self.0.store(n, Ordering::Relaxed);
    }

    /// The value now.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A histogram of durations: a count per bucket, the last one past every bound (`+Inf`
/// alone), and the sum. Not cumulative, and no count of its own: one add per observation
/// and one to the sum; the exposition sums buckets into what the format asks.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [Counter; BUCKETS_US.len() + 1],
    sum_us: Counter,
}

impl Histogram {
    /// Records one duration. The owning loop only.
    #[inline]
    pub fn observe(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let i = BUCKETS_US
            .iter()
            .position(|&bound| us <= bound)
            .unwrap_or(BUCKETS_US.len());
        self.buckets[i].add(1);
        self.sum_us.add(us);
    }

    /// Records a duration of zero: a request answered in the loop turn it arrived in,
    /// which is most of them. The first bucket, without measuring anything.
    #[inline]
    pub fn observe_zero(&self) {
        self.buckets[0].add(1);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(Counter::get).sum()
    }
}

/// The kind of a family, as `# TYPE` says it.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// Only goes up (resets with the process); the name ends in `_total`.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Buckets, a sum and a count ([`Exposition::histogram`] writes them).
    Histogram,
}

/// A scrape's text, family by family.
#[derive(Debug, Default)]
pub struct Exposition {
    text: String,
}

impl Exposition {
    /// Starts a family: its `# HELP` and `# TYPE` lines.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) -> &mut Self {
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        // HELP text escapes `\` and newlines (the format's rule for docstrings).
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} {kind}");
        self
    }

    /// One sample of the family just started.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) -> &mut Self {
        self.text.push_str(name);
        self.labels(labels, None);
        let _ = writeln!(self.text, " {value}");
        self
    }

    /// A family of one sample without labels: its `# HELP`, `# TYPE` and value.
    pub fn single(&mut self, name: &str, kind: Kind, help: &str, value: u64) -> &mut Self {
        self.family(name, kind, help).sample(name, &[], value)
    }

    /// One sample of a duration in seconds (microsecond precision), of the family just
    /// started.
    pub fn seconds(&mut self, name: &str, labels: &[(&str, &str)], value: Duration) -> &mut Self {
        self.text.push_str(name);
        self.labels(labels, None);
        let us = u64::try_from(value.as_micros()).unwrap_or(u64::MAX);
        let _ = writeln!(self.text, " {}", seconds(us));
        self
    }

    /// A histogram family of durations in seconds, summed over `cells` (one per loop).
    pub fn histogram(&mut self, name: &str, help: &str, cells: &[&Histogram]) -> &mut Self {
        self.family(name, Kind::Histogram, help);
        let mut cumulative = 0;
        for (i, bound) in BUCKETS_US.iter().enumerate() {
            cumulative += cells.iter().map(|h| h.buckets[i].get()).sum::<u64>();
            let le = seconds(*bound);
            let _ = write!(self.text, "{name}_bucket");
            self.labels(&[], Some(&le));
            let _ = writeln!(self.text, " {cumulative}");
        }
        let count: u64 = cells.iter().map(|h| h.count()).sum();
        let sum_us: u64 = cells.iter().map(|h| h.sum_us.get()).sum();
        let _ = writeln!(self.text, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(self.text, "{name}_sum {}", seconds(sum_us));
        let _ = writeln!(self.text, "{name}_count {count}");
        self
    }

    /// The finished text.
    pub fn finish(self) -> String {
        self.text
    }

    /// `{a="x",b="y"}` (nothing when there are no labels), values escaped as the format
    /// asks (`\\`, `\"`, `\n`); `le` last when given.
    fn labels(&mut self, labels: &[(&str, &str)], le: Option<&str>) {
        let le = le.map(|le| ("le", le));
        let all = labels.iter().copied().chain(le);
        let mut first = true;
        for (name, value) in all {
            self.text.push(if first { '{' } else { ',' });
            first = false;
            let _ = write!(self.text, "{name}=\"");
            for c in value.chars() {
                match c {
                    '\\' => self.text.push_str("\\\\"),
                    '"' => self.text.push_str("\\\""),
                    '\n' => self.text.push_str("\\n"),
                    c => self.text.push(c),
                }
            }
            self.text.push('"');
        }
        if !first {
            self.text.push('}');
        }
    }
}

/// Microseconds as seconds, exactly (`0.0025`, `10`), without float noise.
fn seconds(us: u64) -> String {
    let (whole, frac) = (us / 1_000_000, us % 1_000_000);
    if frac == 0 {
        return whole.to_string();
    }
    let frac = format!("{frac:06}");
    format!("{whole}.{}", frac.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_labels_read_as_the_format_says() {
        let requests = Counter::default();
        requests.add(2);
        requests.add(1);
        let mut e = Exposition::default();
        e.family(
            "lastcall_requests_total",
            Kind::Counter,
            "Requests answered.",
        )
        .sample(
            "lastcall_requests_total",
            &[("class", "2xx"), ("route", "a \"quoted\\\" one\n")],
            requests.get(),
        )
        .sample("lastcall_requests_total", &[], 0);
        assert_eq!(
            e.finish(),
            "# HELP lastcall_requests_total Requests answered.\n\
             # TYPE lastcall_requests_total counter\n\
             lastcall_requests_total{class=\"2xx\",route=\"a \\\"quoted\\\\\\\" one\\n\"} 3\n\
             lastcall_requests_total 0\n"
        );
    }

    #[test]
    fn histograms_are_cumulative_and_summed_over_loops() {
        let (a, b) = (Histogram::default(), Histogram::default());
        a.observe(Duration::from_micros(400));
        a.observe(Duration::from_millis(3));
        b.observe(Duration::from_millis(3));
        b.observe(Duration::from_secs(60));
        let mut e = Exposition::default();
        e.histogram("d_seconds", "How long.", &[&a, &b]);
        let text = e.finish();
        let line = |le: &str| {
            text.lines()
                .find(|l| l.starts_with(&format!("d_seconds_bucket{{le=\"{le}\"}}")))
                .unwrap()
                .rsplit(' ')
                .next()
                .unwrap()
                .to_owned()
        };
        assert_eq!(line("0.0005"), "1");
        assert_eq!(line("0.0025"), "1");
        assert_eq!(line("0.005"), "3");
        assert_eq!(line("10"), "3");
        assert_eq!(line("+Inf"), "4");
        assert!(text.contains("d_seconds_sum 60.0064\n"), "{text}");
        assert!(text.contains("d_seconds_count 4\n"));
    }

    #[test]
    fn seconds_are_written_exactly() {
        assert_eq!(seconds(500), "0.0005");
        assert_eq!(seconds(2_500_000), "2.5");
        assert_eq!(seconds(10_000_000), "10");
        assert_eq!(seconds(0), "0");
    }
}
