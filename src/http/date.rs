//! The `Date` header value (RFC 9110 §6.6.1), formatted once a second.
//!
//! What it is: a pure formatter from Unix seconds to IMF-fixdate
//! (`Sun, 06 Nov 1994 08:49:37 GMT`) and a [`DateCache`] that re-formats only when the
//! second changes. A server answering a million requests a second formats the date once a
//! second, not a million times.
//!
//! Invariant: never reads the clock itself. The event loop passes in the monotonic time it
//! read for its turn, and a way to read the wall clock, which the cache uses only when the
//! second it formatted has run out: once a second, not once per turn. Tests pass both in.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Length of an IMF-fixdate: `Sun, 06 Nov 1994 08:49:37 GMT`.
pub const DATE_LEN: usize = 29;

/// The last formatted date, the second it is for, and when to look at the wall clock again.
#[derive(Debug, Clone)]
pub struct DateCache {
    second: u64,
    text: [u8; DATE_LEN],
    refresh_at: Instant,
}

impl DateCache {
    /// A cache holding the `Date` of `wall`, read at the loop's `now`.
    pub fn new(now: Instant, wall: SystemTime) -> DateCache {
        let mut cache = DateCache {
            second: 0,
            text: format_imf_fixdate(0),
            refresh_at: now,
        };
        cache.update(now, || wall);
        cache
    }

    /// Brings the cached value up to `now`. Reads the wall clock (`wall`) only when the
    /// second it last saw has ended by the monotonic clock, and formats only when the
    /// second changed. A step of the wall clock (settimeofday) shows within a second.
    pub fn update(&mut self, now: Instant, wall: impl FnOnce() -> SystemTime) {
        if now < self.refresh_at {
            return;
        }
        // A clock set before 1970 is a broken clock; 1970 is the least wrong answer.
        let since_epoch = wall().duration_since(UNIX_EPOCH).unwrap_or_default();
        let second = since_epoch.as_secs();
        if second != self.second {
            self.second = second;
            self.text = format_imf_fixdate(second);
        }
        let rest_of_second =
            Duration::from_secs(1) - Duration::from_nanos(u64::from(since_epoch.subsec_nanos()));
        self.refresh_at = now + rest_of_second;
    }

    /// The current value, e.g. `Wed, 02 Dec 2026 06:00:00 GMT`.
    pub fn as_bytes(&self) -> &[u8] {
        &self.text
    }
}

/// Formats Unix seconds as IMF-fixdate, always in GMT.
pub fn format_imf_fixdate(unix: u64) -> [u8; DATE_LEN] {
    const DAYS: [&[u8; 3]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
    const MONTHS: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let days = unix / 86_400;
    let secs = unix % 86_400;
    let (year, month, day) = civil_from_days(days);
    let (hh, mm, ss) = (secs / 3600, secs / 60 % 60, secs % 60);

    let mut out = *b"Thu, 01 Jan 1970 00:00:00 GMT";
    out[0..3].copy_from_slice(DAYS[(days % 7) as usize]); // 1970-01-01 was a Thursday
    two_digits(&mut out[5..7], day);
    out[8..11].copy_from_slice(MONTHS[(month - 1) as usize]);
    two_digits(&mut out[12..14], year / 100 % 100);
    two_digits(&mut out[14..16], year % 100);
    two_digits(&mut out[17..19], hh);
    two_digits(&mut out[20..22], mm);
    two_digits(&mut out[23..25], ss);
    out
}

fn two_digits(out: &mut [u8], n: u64) {
    out[0] = b'0' + (n / 10 % 10) as u8;
    out[1] = b'0' + (n % 10) as u8;
}

/// Days since 1970-01-01 to (year, month 1..=12, day 1..=31) in the proleptic Gregorian
/// calendar. This is Howard Hinnant's `civil_from_days`: it shifts the year to start in
/// March so the leap day falls at the end, then works in 400-year eras of 146097 days.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097; // day of era, 0..=146096
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // year of era
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of year, March-based
    let mp = (5 * doy + 2) / 153; // month, March = 0
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn format_imf_fixdate_matches_known_dates() {
        let cases: &[(u64, &str)] = &[
            (0, "Thu, 01 Jan 1970 00:00:00 GMT"),
            (784_111_777, "Sun, 06 Nov 1994 08:49:37 GMT"), // RFC 9110's example
            (951_782_400, "Tue, 29 Feb 2000 00:00:00 GMT"),
            (1_709_164_799, "Wed, 28 Feb 2024 23:59:59 GMT"),
            (1_709_251_199, "Thu, 29 Feb 2024 23:59:59 GMT"),
            (4_102_444_800, "Fri, 01 Jan 2100 00:00:00 GMT"),
        ];
        for (unix, want) in cases {
            let got = format_imf_fixdate(*unix);
            assert_eq!(std::str::from_utf8(&got).unwrap(), *want, "{unix}");
        }
    }

    #[test]
    fn date_cache_changes_only_with_the_second() {
        let wall0 = UNIX_EPOCH + Duration::from_millis(784_111_777_100);
        let t0 = Instant::now();
        let at = |ms| {
            (
                t0 + Duration::from_millis(ms),
                wall0 + Duration::from_millis(ms),
            )
        };
        let mut cache = DateCache::new(t0, wall0);
        let (now, wall) = at(800);
        cache.update(now, || wall);
        assert_eq!(cache.as_bytes(), b"Sun, 06 Nov 1994 08:49:37 GMT");
        let (now, wall) = at(900);
        cache.update(now, || wall);
        assert_eq!(cache.as_bytes(), b"Sun, 06 Nov 1994 08:49:38 GMT");
    }

    #[test]
    fn date_cache_reads_the_wall_clock_once_a_second() {
        let wall0 = UNIX_EPOCH + Duration::from_millis(784_111_777_250);
        let t0 = Instant::now();
        let mut cache = DateCache::new(t0, wall0);
        let mut reads = 0;
        for ms in (0..2_000).step_by(10) {
            let wall = wall0 + Duration::from_millis(ms);
            cache.update(t0 + Duration::from_millis(ms), || {
                reads += 1;
                wall
            });
        }
        // At 750 ms (…:38) and 1750 ms (…:39), each when its second began.
        assert_eq!(reads, 2);
        assert_eq!(cache.as_bytes(), b"Sun, 06 Nov 1994 08:49:39 GMT");
    }

    #[test]
    fn date_cache_follows_a_wall_clock_step_within_a_second() {
        let ms = Duration::from_millis;
        let wall0 = UNIX_EPOCH + ms(784_111_777_000); // 08:49:37.000
        let t0 = Instant::now();
        let hour = Duration::from_secs(3600);
        // The system clock is set an hour back, or forward, 200 ms in: the new time shows
        // when the next second begins by the monotonic clock.
        let steps: [(SystemTime, &[u8]); 2] = [
            (wall0 - hour, b"Sun, 06 Nov 1994 07:49:38 GMT"),
            (wall0 + hour, b"Sun, 06 Nov 1994 09:49:38 GMT"),
        ];
        for (stepped, want) in steps {
            let mut cache = DateCache::new(t0, wall0);
            cache.update(t0 + ms(200), || stepped + ms(200));
            assert_eq!(cache.as_bytes(), b"Sun, 06 Nov 1994 08:49:37 GMT");
            cache.update(t0 + ms(1000), || stepped + ms(1000));
            assert_eq!(cache.as_bytes(), want);
        }
    }
}
