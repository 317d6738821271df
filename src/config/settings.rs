//! The settings table: every setting lastcall reads, and how its text becomes a value.
//!
//! What it is: [`SETTINGS`], one row per setting — its environment name (the flag is
//! derived from it), its kind (port, URL, milliseconds or a count, with its range and the
//! [`Config`] field it lands in) and the line `--help` prints for it — and the code that
//! checks a value against its row and stores it.
//!
//! What it is not: it does not decide where a value comes from or in which order
//! (environment, then flags: that is `Config::parse`), and it does not check settings
//! against each other (the shutdown budget is checked last, in `Config::parse`).
//!
//! Invariants: a value is stored only once it is in its row's range; an error names the
//! setting by its environment name, whichever source the value came from.

use std::time::Duration;

use super::{Config, ConfigError, LISTEN_EXPECTED, Workers, any_host, parse_address};
use crate::access_log::Format;

/// One setting: where it is read from, what it accepts, and why you would change it.
pub(super) struct Setting {
    /// The environment variable. The flag is its lower-kebab form (`DB_POOL_SIZE` →
    /// `--db-pool-size`), by construction rather than by a second column that could drift.
    pub(super) env: &'static str,
    pub(super) kind: Kind,
    /// One line for `--help`.
    pub(super) reason: &'static str,
}

/// How a setting's text becomes a value, and which field of [`Config`] it lands in.
pub(super) enum Kind {
    /// A port on `0.0.0.0`, written into `listen`.
    Port,
    /// Free text for `database_url`; empty means no database.
    Url,
    /// Milliseconds in `min..=max`.
    Millis {
        min: u64,
        max: u64,
        expected: &'static str,
        field: fn(&mut Config) -> &mut Duration,
    },
    /// `WORKERS`: a count of event loops in `1..=max`, or `auto` (one per CPU).
    Workers { max: u64 },
    /// `METRICS_LISTEN`: a socket address, or empty for none.
    MetricsListen,
    /// `ACCESS_LOG`: `off`, `combined` or `json`.
    AccessLog,
    /// A count in `min..=max`.
    Count {
        min: u64,
        max: u64,
        expected: &'static str,
        field: fn(&mut Config) -> &mut usize,
    },
}

pub(super) const PORT_EXPECTED: &str = "a port from 0 to 65535 (0 picks any free port)";

pub(super) const ACCESS_LOG_EXPECTED: &str = "off, combined (nginx's format) or json";

pub(super) const WORKERS_EXPECTED: &str = "a count from 1 to 1024, or auto (one per CPU)";

/// Every setting, in the order `--help` lists them.
pub(super) const SETTINGS: &[Setting] = &[
    Setting {
        env: "PORT",
        kind: Kind::Port,
        reason: "Listen on 0.0.0.0 (every interface) at this port.",
    },
    Setting {
        env: "DATABASE_URL",
        kind: Kind::Url,
        reason: "PostgreSQL connection string; unset or empty runs without a database.",
    },
    Setting {
        env: "DB_POOL_SIZE",
        kind: Kind::Count {
            min: 1,
            max: 64,
            expected: "a count from 1 to 64",
            field: |c| &mut c.db_pool_size,
        },
        reason: "Database worker threads, one connection each.",
    },
    Setting {
        env: "SHUTDOWN_TIMEOUT_MS",
        kind: Kind::Millis {
            min: 1,
            max: 3_600_000,
            expected: "milliseconds from 1 to 3600000",
            field: |c| &mut c.shutdown_timeout,
        },
        reason: "Whole shutdown budget from the signal; keep it below the orchestrator's grace period.",
    },
    Setting {
        env: "DRAIN_DELAY_MS",
        kind: Kind::Millis {
            min: 0,
            max: 3_600_000,
            expected: "milliseconds from 0 to 3600000",
            field: |c| &mut c.drain_delay,
        },
        reason: "Keep serving (health 503) this long after the signal, so load balancers notice.",
    },
    Setting {
        env: "KEEPALIVE_TIMEOUT_MS",
        kind: Kind::Millis {
            min: 1,
            max: 3_600_000,
            expected: "milliseconds from 1 to 3600000",
            field: |c| &mut c.keepalive_timeout,
        },
        reason: "Close idle keep-alive connections after this; behind a proxy, exceed its idle timeout.",
    },
    Setting {
        env: "HEADER_TIMEOUT_MS",
        kind: Kind::Millis {
            min: 1,
            max: 3_600_000,
            expected: "milliseconds from 1 to 3600000",
            field: |c| &mut c.header_timeout,
        },
        reason: "Most time from a request head's first byte to its end (slowloris bound, 408).",
    },
    Setting {
        env: "BODY_TIMEOUT_MS",
        kind: Kind::Millis {
            min: 1,
            max: 3_600_000,
            expected: "milliseconds from 1 to 3600000",
            field: |c| &mut c.body_timeout,
        },
        reason: "Longest gap without request-body progress (408).",
    },
    Setting {
        env: "REQUEST_TIMEOUT_MS",
        kind: Kind::Millis {
            min: 1,
            max: 3_600_000,
            expected: "milliseconds from 1 to 3600000",
            field: |c| &mut c.request_timeout,
        },
        reason: "Most time from a request's first byte to the end of its body (slow-body bound, 408).",
    },
    Setting {
        env: "WRITE_TIMEOUT_MS",
        kind: Kind::Millis {
            min: 1,
            max: 3_600_000,
            expected: "milliseconds from 1 to 3600000",
            field: |c| &mut c.write_timeout,
        },
        reason: "Longest gap without response-write progress before the connection is cut.",
    },
    Setting {
        env: "HANDOVER_TIMEOUT_MS",
        kind: Kind::Millis {
            min: 1,
            max: 3_600_000,
            expected: "milliseconds from 1 to 3600000",
            field: |c| &mut c.handover_timeout,
        },
        reason: "How long a successor started by SIGHUP has to be ready; past it, it is killed and we serve on.",
    },
    Setting {
        env: "MAX_CONNECTIONS",
        kind: Kind::Count {
            min: 1,
            max: 1_000_000,
            expected: "a count from 1 to 1000000",
            field: |c| &mut c.max_connections,
        },
        reason: "Open connections at most; the file-descriptor limit (ulimit -n) may cap it lower.",
    },
    Setting {
        env: "LISTEN_BACKLOG",
        kind: Kind::Count {
            min: 1,
            max: 65_535,
            expected: "a count from 1 to 65535",
            field: |c| &mut c.listen_backlog,
        },
        reason: "Connections the kernel holds for us before we accept them; capped by net.core.somaxconn.",
    },
    Setting {
        env: "MAX_HEADER_BYTES",
        kind: Kind::Count {
            min: 256,
            max: 1_048_576,
            expected: "bytes from 256 to 1048576",
            field: |c| &mut c.max_header_bytes,
        },
        reason: "Request line plus headers at most (414/431 beyond).",
    },
    Setting {
        env: "MAX_BODY_BYTES",
        kind: Kind::Count {
            min: 0,
            max: 1_073_741_824,
            expected: "bytes from 0 to 1073741824",
            field: |c| &mut c.max_body_bytes,
        },
        reason: "Request body at most (413 beyond); 0 refuses bodies.",
    },
    Setting {
        env: "WORKERS",
        kind: Kind::Workers { max: 1024 },
        reason: "Event loops, one thread each, sharing the listener; auto: one per CPU we may use.",
    },
    Setting {
        env: "BUFFER_BUDGET_BYTES",
        kind: Kind::Count {
            min: 1_048_576,
            max: 1 << 40,
            expected: "bytes from 1048576 to 1099511627776",
            field: |c| &mut c.buffer_budget_bytes,
        },
        reason: "Buffered request and response bytes, all connections together (503 beyond).",
    },
    Setting {
        env: "METRICS_LISTEN",
        kind: Kind::MetricsListen,
        reason: "Serve GET /metrics on this address alone (e.g. 127.0.0.1:9090) instead of the main port.",
    },
    Setting {
        env: "ACCESS_LOG",
        kind: Kind::AccessLog,
        reason: "One line per request on stdout: combined (nginx's format) or json; off costs nothing.",
    },
];

impl Setting {
    /// The command-line flag, without its leading `--`.
    pub(super) fn flag(&self) -> String {
        self.env
            .chars()
            .map(|c| {
                if c == '_' {
                    '-'
                } else {
                    c.to_ascii_lowercase()
                }
            })
            .collect()
    }

    /// Checks `raw` and stores it in `config`. `raw` comes from either source; the error
    /// names the environment variable either way (see the module invariants).
    pub(super) fn apply(&self, config: &mut Config, raw: &str) -> Result<(), ConfigError> {
        match self.kind {
            Kind::Port => {
                let port = self.number(raw, 0, u64::from(u16::MAX), PORT_EXPECTED)?;
                let port = u16::try_from(port).map_err(|_| self.invalid(raw, PORT_EXPECTED))?;
                config.listen = any_host(port);
            }
            Kind::Url => {
                let url = raw.trim();
                config.database_url = (!url.is_empty()).then(|| url.to_owned());
            }
            Kind::MetricsListen => {
                let raw = raw.trim();
                config.metrics_listen = match raw {
                    "" => None,
                    _ => Some(parse_address(raw, self.env)?),
                };
            }
            // Names in any case, as `auto` below.
            Kind::AccessLog => {
                config.access_log = match raw.trim().to_ascii_lowercase().as_str() {
                    "" | "off" => None,
                    "combined" => Some(Format::Combined),
                    "json" => Some(Format::Json),
                    _ => return Err(self.invalid(raw, ACCESS_LOG_EXPECTED)),
                };
            }
            // `auto` in any case, as nginx's `worker_processes auto`.
            Kind::Workers { max } => {
                config.workers = if raw.trim().eq_ignore_ascii_case("auto") {
                    Workers::Auto
                } else {
                    let n = self.number(raw, 1, max, WORKERS_EXPECTED)?;
                    let n = usize::try_from(n).map_err(|_| self.invalid(raw, WORKERS_EXPECTED))?;
                    Workers::Count(n)
                };
            }
            Kind::Millis {
                min,
                max,
                expected,
                field,
            } => {
                let ms = self.number(raw, min, max, expected)?;
                *field(config) = Duration::from_millis(ms);
            }
            Kind::Count {
                min,
                max,
                expected,
                field,
            } => {
                let n = self.number(raw, min, max, expected)?;
                // Every maximum fits in 32 bits, so this only fails on a 16-bit target.
                *field(config) = usize::try_from(n).map_err(|_| self.invalid(raw, expected))?;
            }
        }
        Ok(())
    }

    /// A decimal number in `min..=max`; anything else is [`ConfigError::Invalid`].
    fn number(
        &self,
        raw: &str,
        min: u64,
        max: u64,
        expected: &'static str,
    ) -> Result<u64, ConfigError> {
        parse_decimal(raw)
            .filter(|n| (min..=max).contains(n))
            .ok_or_else(|| self.invalid(raw, expected))
    }

    fn invalid(&self, raw: &str, expected: &'static str) -> ConfigError {
        ConfigError::Invalid {
            setting: self.env,
            value: raw.to_owned(),
            expected,
        }
    }

    /// The default, as `--help` shows it; read from [`Config::default`] so the two agree.
    pub(super) fn default_text(&self) -> String {
        let mut defaults = Config::default();
        match self.kind {
            Kind::Port => defaults.listen.port().to_string(),
            Kind::Url | Kind::MetricsListen => "unset".to_owned(),
            Kind::AccessLog => "off".to_owned(),
            Kind::Workers { .. } => defaults.workers.to_string(),
            Kind::Millis { field, .. } => field(&mut defaults).as_millis().to_string(),
            Kind::Count { field, .. } => field(&mut defaults).to_string(),
        }
    }
}

impl Kind {
    /// The placeholder after the flag in `--help`.
    pub(super) fn metavar(&self) -> &'static str {
        match self {
            Kind::Port | Kind::Count { .. } | Kind::Workers { .. } => "N",
            Kind::Url => "URL",
            Kind::MetricsListen => "ADDR",
            Kind::AccessLog => "FORMAT",
            Kind::Millis { .. } => "MS",
        }
    }

    /// What the setting accepts, or `None` when it accepts any text.
    pub(super) fn expected(&self) -> Option<&'static str> {
        match self {
            Kind::Port => Some(PORT_EXPECTED),
            Kind::Workers { .. } => Some(WORKERS_EXPECTED),
            Kind::Url => None,
            Kind::MetricsListen => Some(LISTEN_EXPECTED),
            Kind::AccessLog => Some(ACCESS_LOG_EXPECTED),
            Kind::Millis { expected, .. } | Kind::Count { expected, .. } => Some(expected),
        }
    }
}

/// Decimal digits only, after trimming surrounding whitespace. Stricter than
/// `u64::from_str`, which also takes a leading `+`: a config value has one spelling.
/// Too many digits for a `u64` is `None` too.
fn parse_decimal(raw: &str) -> Option<u64> {
    let digits = raw.trim();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}
