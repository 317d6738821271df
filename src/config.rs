//! Configuration: every setting lastcall reads, with its default and the reason for it.
//!
//! What it is: the start-up step that turns the environment and the command line into one
//! validated [`Config`] (or a request for [`help_text`] or [`version_text`]). Each setting
//! is one row of the `SETTINGS` table (`config/settings.rs`): its environment name, its
//! range, and the line `--help` prints for it.
//! Parsing, flag names and the help text are all driven by that table, so a setting cannot
//! be readable from the environment but missing from `--help`, or the other way round.
//!
//! What it is not: it does not log, exit or set up the logger (`RUST_LOG` belongs to
//! `env_logger`; `--help` only mentions it). `main` prints a [`ConfigError`] and exits 2.
//! Apart from [`Config::from_process`], it never touches the process environment:
//! [`Config::parse`] takes the environment as a lookup function so tests stay pure.
//!
//! Where a value comes from, lowest to highest precedence:
//!
//! ```text
//!   Config::default()  →  environment (PORT, DB_POOL_SIZE, ...)  →  flags, left to right
//! ```
//!
//! Every setting `FOO_BAR` has the flag `--foo-bar VALUE` (or `--foo-bar=VALUE`). Three flags
//! have no environment variable: `--listen ADDR` binds one socket address, `-h`/`--help`,
//! and `-V`/`--version`.
//!
//! A flag given twice keeps its later value. `--listen` and `--port` both set the listening
//! address, so a command line may give one of them but not both (a usage error); either
//! wins over `PORT`.
//!
//! Invariants:
//! - A [`Config`] returned in [`Command::Run`] has every field in its documented range, and
//!   `drain_delay < shutdown_timeout`: the rest of the server never re-checks them.
//! - Every value given is checked, even one a later flag overrides: a typo is reported
//!   rather than hidden by whichever source happened to win.
//! - [`ConfigError::Invalid`] names the setting by its environment name (`PORT`, not
//!   `--port`) whichever source the bad value came from: one name per setting in errors,
//!   docs and tests. `--listen` has no environment name, so it is named `--listen`.
//! - No input can make it panic.

mod settings;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use settings::{Kind, SETTINGS, Setting};

/// Everything the server needs to know before it binds its listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Where to listen. Default `0.0.0.0:3000`: `PORT` is the convention of Heroku, Cloud Run
    /// and Node apps (`process.env.PORT || 3000`), and `0.0.0.0` is reachable through a
    /// container's port mapping, where `127.0.0.1` would not be. Port 0 asks the kernel for
    /// any free port (tests use it; `Listening on ...` logs the real one).
    pub listen: SocketAddr,
    /// PostgreSQL connection string. Default `None`: the server runs without a database and
    /// the database routes answer 503, so a demo or benchmark needs no PostgreSQL.
    pub database_url: Option<String>,
    /// Worker threads, each holding one PostgreSQL connection. Default 4: enough to overlap
    /// a few queries, while replicas × pool size stays well under PostgreSQL's default
    /// `max_connections` of 100. At most 64 for the same reason.
    pub db_pool_size: usize,
    /// The whole shutdown budget, counted from the signal; past it, connections are cut and
    /// the exit code is 1. Default 10 s: docker stop's grace period, and well inside
    /// Kubernetes' 30 s. It must stay below the orchestrator's grace period, or SIGKILL
    /// arrives first and nobody gets a 503 or a shutdown report.
    pub shutdown_timeout: Duration,
    /// How long to keep serving (with `/health` answering 503) before closing the listener.
    /// Default 0: without a load balancer nobody needs the warning. Behind Kubernetes, a few
    /// seconds let the endpoint removal reach every proxy before the port closes.
    /// Always below `shutdown_timeout`, so some budget is left to drain.
    pub drain_delay: Duration,
    /// How long an idle keep-alive connection is kept. Default 5 s, Node's default (nginx:
    /// 75 s): idle sockets cost memory and file descriptors. Behind a load balancer, set it
    /// above the balancer's idle timeout (AWS ALB: 60 s) so the server never closes a
    /// connection the balancer is about to reuse.
    pub keepalive_timeout: Duration,
    /// Longest time from the first byte of a request head to its end: the slowloris bound
    /// (408 after it). Default 10 s; nginx `client_header_timeout` and Node `headersTimeout`
    /// allow 60 s, but a real client sends a head in one packet, so 10 s is still generous.
    pub header_timeout: Duration,
    /// Longest gap without body progress (408 after it). Default 10 s. A gap, not a total
    /// (like nginx `client_body_timeout`, 60 s), so a large upload that keeps moving is fine.
    pub body_timeout: Duration,
    /// Longest time from the first byte of a request to the end of its body (408 after it):
    /// the bound the two gaps above cannot give, since a client that trickles one byte
    /// every few seconds never opens a gap. Default 30 s. Node's `requestTimeout` (the
    /// model) allows 300 s, but Node takes bodies of any size; ours are at most
    /// `MAX_BODY_BYTES` (1 MiB), and 30 s still lets 1 MiB arrive at 280 kbit/s. The header
    /// timeout still applies on its own; raise this one with `MAX_BODY_BYTES`.
    pub request_timeout: Duration,
    /// Longest gap without write progress before the connection is cut. Default 10 s. A gap,
    /// not a total (like nginx `send_timeout`, 60 s; unlike Go's `WriteTimeout`), so a slow
    /// stream that keeps moving is fine while a client that stopped reading is not.
    pub write_timeout: Duration,
    /// Open connections at most, so overload costs bounded memory and file descriptors.
    /// Default 16384: TechEmpower's highest concurrency. The process's file-descriptor
    /// limit (`ulimit -n`) may cap it lower.
    pub max_connections: usize,
    /// Connections the kernel may hold completed for us before we accept them: where
    /// clients beyond `MAX_CONNECTIONS` (or arriving faster than one loop turn) wait.
    /// Default 4096, Go's on a current Linux (it uses `net.core.somaxconn`, 4096 since
    /// Linux 5.4; nginx uses 511). The library default of 128 drops the SYNs of any
    /// client past it, which retry only after 1, 3, 7 s. The kernel caps the value at
    /// `net.core.somaxconn`; start-up says so when it does.
    pub listen_backlog: usize,
    /// Bytes of request line plus headers at most (414 or 431 beyond). Default 16 KiB:
    /// Node's default (nginx allows 4 × 8 KiB, Go 1 MiB). Also bounds per-connection memory.
    pub max_header_bytes: usize,
    /// Bytes of request body at most (413 beyond). Default 1 MiB: nginx's
    /// `client_max_body_size`. 0 refuses every body.
    pub max_body_bytes: usize,
    /// Bytes all connections together may hold in buffers: request heads and bodies
    /// being read, responses not yet written. Past it, new requests get 503 instead of
    /// memory, so the worst case is a sum, not a product of per-connection bounds (the
    /// README's memory formula). Default 64 MiB. At least `MAX_BODY_BYTES` plus two
    /// buffers of `MAX_HEADER_BYTES`, or the largest body could never be taken.
    pub buffer_budget_bytes: usize,
    /// How long a successor started by SIGHUP has to say it is ready before the hand-over
    /// is given up (it is killed, and this process serves on). Default 10 s: a successor
    /// starts in milliseconds (it binds nothing and connects to the database in the
    /// background), so one that needs longer than a whole shutdown budget is broken.
    pub handover_timeout: Duration,
    /// Event loops, each on its own thread with its own connections. Default 1: one loop
    /// already serves a core's worth of requests, and a benchmark or a deployment that
    /// pays for more cores asks for them (`auto`: one per CPU the process may use).
    pub workers: Workers,
    /// A second address that serves `GET /metrics` alone, so the public port need not
    /// expose it (then the main port answers `/metrics` 404). Default unset: the main
    /// port serves `/metrics`, as most exporters do. It stays open through a shutdown,
    /// until the process exits, so a drain can be watched.
    pub metrics_listen: Option<SocketAddr>,
    /// The access log: one line per request on standard output, written off the event
    /// loop. Default off: a benchmark pays nothing for it, and nginx's `access_log off`
    /// is the first line of every tuning guide.
    pub access_log: Option<crate::access_log::Format>,
}

/// `WORKERS`: how many event loops to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workers {
    /// This many, from 1 to 1024.
    Count(usize),
    /// One per CPU the process may use (`std::thread::available_parallelism`, which
    /// honours the affinity mask and cgroup quotas), counted when the server binds.
    Auto,
}

impl Workers {
    /// How many loops to start: `Auto` counted now, 1 if the count cannot be had.
    pub fn count(self) -> usize {
        match self {
            Workers::Count(n) => n,
            Workers::Auto => std::thread::available_parallelism().map_or(1, usize::from),
        }
    }
}

impl fmt::Display for Workers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Workers::Count(n) => write!(f, "{n}"),
            Workers::Auto => f.write_str("auto"),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: any_host(3000),
            database_url: None,
            db_pool_size: 4,
            shutdown_timeout: Duration::from_millis(10_000),
            drain_delay: Duration::ZERO,
            keepalive_timeout: Duration::from_millis(5_000),
            header_timeout: Duration::from_millis(10_000),
            body_timeout: Duration::from_millis(10_000),
            request_timeout: Duration::from_millis(30_000),
            write_timeout: Duration::from_millis(10_000),
            max_connections: 16_384,
            listen_backlog: 4096,
            max_header_bytes: 16_384,
            max_body_bytes: 1_048_576,
            workers: Workers::Count(1),
            buffer_budget_bytes: 64 << 20,
            handover_timeout: Duration::from_millis(10_000),
            metrics_listen: None,
            access_log: None,
        }
    }
}

/// What the command line asks for.
// Made once, at start-up, and matched at once: boxing the large variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Start the server with this configuration.
    Run(Config),
    /// Print [`help_text`] and exit 0.
    Help,
    /// Print [`version_text`] and exit 0.
    Version,
}

/// Why the configuration was refused; `main` prints it and exits 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// A setting has a value that does not parse or is out of range.
    Invalid {
        /// The environment name (`PORT`), even for a value from a flag; `--listen` for
        /// that flag, which has no environment name.
        setting: &'static str,
        /// The text as given, untrimmed, so the user sees what was actually read.
        value: String,
        /// What would have been accepted, e.g. "milliseconds from 1 to 3600000".
        expected: &'static str,
    },
    /// `DRAIN_DELAY_MS` must be below `SHUTDOWN_TIMEOUT_MS` (the shutdown budget).
    Budget {
        /// The final drain delay, from whichever source set it.
        drain_delay_ms: u64,
        /// The final shutdown timeout, from whichever source set it.
        shutdown_timeout_ms: u64,
    },
    /// `BUFFER_BUDGET_BYTES` must hold the largest body a request may send.
    BufferBudget {
        /// The final budget.
        budget: usize,
        /// `MAX_BODY_BYTES` plus two buffers of `MAX_HEADER_BYTES`.
        needed: usize,
    },
    /// A command-line word we do not know, a flag missing its value, or both `--listen`
    /// and `--port`.
    Usage(String),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Invalid {
                setting,
                value,
                expected,
            } => write!(f, "invalid {setting}={value}: expected {expected}"),
            ConfigError::Budget {
                drain_delay_ms,
                shutdown_timeout_ms,
            } => write!(
                f,
                "DRAIN_DELAY_MS ({drain_delay_ms}) must be below SHUTDOWN_TIMEOUT_MS \
                 ({shutdown_timeout_ms}): the drain delay has to leave time to drain"
            ),
            ConfigError::BufferBudget { budget, needed } => write!(
                f,
                "BUFFER_BUDGET_BYTES ({budget}) must be at least {needed}: MAX_BODY_BYTES \
                 plus two buffers of MAX_HEADER_BYTES, or the largest body is never taken"
            ),
            ConfigError::Usage(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads settings from `env` (a lookup, so tests need not touch the process environment)
    /// and then the command-line `args` (without the program name); flags override the
    /// environment, and a later flag overrides an earlier one of the same name.
    ///
    /// `-h` or `--help` anywhere wins over everything else, even a broken environment: the
    /// user asked how to run the program, so that is what they get. `-V` or `--version`
    /// anywhere wins the same way over everything but help, which is the fuller answer
    /// (and names the program too).
    ///
    /// # Errors
    ///
    /// [`ConfigError::Usage`] for an unknown word, a flag without its value, or `--listen`
    /// with `--port`; [`ConfigError::Invalid`] for the first bad value (environment first,
    /// then flags in order); [`ConfigError::Budget`] when the final drain delay does not
    /// fit the timeout.
    pub fn parse<E>(env: E, args: &[String]) -> Result<Command, ConfigError>
    where
        E: Fn(&str) -> Option<String>,
    {
        if args.iter().any(|word| word == "-h" || word == "--help") {
            return Ok(Command::Help);
        }
        if args.iter().any(|word| word == "-V" || word == "--version") {
            return Ok(Command::Version);
        }

        let mut config = Config::default();

        // An empty (or all-blank) variable counts as unset: `PORT=` in a compose file or a
        // Kubernetes manifest usually means "not configured", not "port nothing".
        for setting in SETTINGS {
            if let Some(raw) = env(setting.env)
                && !raw.trim().is_empty()
            {
                setting.apply(&mut config, &raw)?;
            }
        }

        apply_flags(&mut config, args)?;

        // Checked last, on the final values: which source set either one does not matter.
        if config.drain_delay >= config.shutdown_timeout {
            return Err(ConfigError::Budget {
                drain_delay_ms: millis(config.drain_delay),
                shutdown_timeout_ms: millis(config.shutdown_timeout),
            });
        }
        let needed = config.max_body_bytes + 2 * config.max_header_bytes;
        if config.buffer_budget_bytes < needed {
            return Err(ConfigError::BufferBudget {
                budget: config.buffer_budget_bytes,
                needed,
            });
        }
        Ok(Command::Run(config))
    }

    /// Convenience: [`Config::parse`] with the process environment and arguments.
    ///
    /// Values that are not UTF-8 are read lossily rather than skipped, so they are reported as
    /// invalid instead of silently falling back to a default (and `std::env::args` would panic).
    ///
    /// # Errors
    ///
    /// As [`Config::parse`].
    pub fn from_process() -> Result<Command, ConfigError> {
        let args: Vec<String> = std::env::args_os()
            .skip(1)
            .map(|arg| arg.to_string_lossy().into_owned())
            .collect();
        Config::parse(
            |key| std::env::var_os(key).map(|value| value.to_string_lossy().into_owned()),
            &args,
        )
    }
}

/// Applies the command-line `args` to `config`, left to right: a later flag overrides an
/// earlier one of the same name, except that `--listen` and `--port` refuse each other.
fn apply_flags(config: &mut Config, args: &[String]) -> Result<(), ConfigError> {
    // The first of `--listen` and `--port` given, so the other one can be refused.
    let mut address_flag: Option<AddressFlag> = None;
    let mut words = args.iter().peekable();
    while let Some(word) = words.next() {
        let Some(body) = word.strip_prefix("--") else {
            return Err(usage(format!("unknown argument '{word}' (see --help)")));
        };
        let (name, inline_value) = match body.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (body, None),
        };
        let target = if name == "listen" {
            Target::Listen
        } else if let Some(setting) = SETTINGS.iter().find(|s| s.flag() == name) {
            Target::Setting(setting)
        } else {
            // Only the name is echoed: the value of a mistyped `--databse-url=...`
            // may hold a password.
            return Err(usage(format!("unknown argument '--{name}' (see --help)")));
        };
        // A following word that starts with `--` is the next flag, not this one's value:
        // `--port --drain-delay-ms 5` is a forgotten port, not a port named
        // "--drain-delay-ms". A value that really starts with `--` can use `--flag=VALUE`.
        let value = match inline_value {
            Some(value) => value,
            None => match words.next_if(|next| !next.starts_with("--")) {
                Some(value) => value.as_str(),
                None => {
                    return Err(usage(format!("missing value for --{name} (see --help)")));
                }
            },
        };
        // Had the later of the two replaced the earlier, as a repeated flag does,
        // `--listen 127.0.0.1:8080 --port 9090` would listen on every interface: a
        // wider exposure than the user asked for. Two answers to one question are a
        // usage error instead, found at the second of them.
        if let Some(flag) = target.address_flag() {
            match address_flag {
                Some(first) if first != flag => {
                    return Err(usage(BOTH_ADDRESS_FLAGS.to_owned()));
                }
                _ => address_flag = Some(flag),
            }
        }
        match target {
            Target::Listen => config.listen = parse_listen(value)?,
            Target::Setting(setting) => setting.apply(config, value)?,
        }
    }
    Ok(())
}

/// The `--help` text: usage, every setting with its variable, flag, default and reason, and
/// the exit codes.
pub fn help_text() -> String {
    let mut text = String::from(
        "lastcall: an HTTP/1.1 server that shuts down gracefully\n\
         \n\
         usage: lastcall [--listen ADDR | --port N] [--SETTING VALUE | --SETTING=VALUE]...\n\
         \x20      lastcall -h | --help       print this help and exit\n\
         \x20      lastcall -V | --version    print \"lastcall <version>\" and exit\n\
         \n\
         --help wins over anything else on the command line; --version over anything but\n\
         --help.\n\
         \n\
         Each setting is read from its environment variable, then from its flag: flags win,\n\
         and a flag given twice keeps its later value. Durations are in milliseconds.\n\
         \n\
         settings:\n",
    );
    for setting in SETTINGS {
        text.push_str(&format!(
            "  {}, --{} {}  (default {})\n      {}\n",
            setting.env,
            setting.flag(),
            setting.kind.metavar(),
            setting.default_text(),
            setting.reason,
        ));
        if let Some(expected) = setting.kind.expected() {
            text.push_str(&format!("      Accepts {expected}.\n"));
        }
        if setting.env == "PORT" {
            text.push_str(&format!(
                "  --listen ADDR  (flag only; wins over PORT)\n      \
                 Listen on one socket address instead; not together with --port.\n      \
                 Accepts {LISTEN_EXPECTED}.\n"
            ));
        }
    }
    text.push_str(
        "  RUST_LOG  (default info)\n      \
         Log filter, read by env_logger: e.g. debug, or lastcall=trace for state changes.\n\
         \n\
         exit codes:\n  \
         0  clean drain (or a signal during start-up)\n  \
         1  shutdown deadline hit, a shutdown step failed, or start-up failed (port in use)\n  \
         2  bad configuration or usage\n",
    );
    text
}

/// The `--version` line: the program and the version Cargo built, as `lastcall 0.1.0`.
pub fn version_text() -> String {
    format!("lastcall {}\n", env!("CARGO_PKG_VERSION"))
}

/// Where a flag's value goes: a table row, or the one flag without an environment variable.
enum Target {
    Listen,
    Setting(&'static Setting),
}

impl Target {
    /// Which of the two flags that set the listening address this is, if either.
    fn address_flag(&self) -> Option<AddressFlag> {
        match self {
            Target::Listen => Some(AddressFlag::Listen),
            Target::Setting(Setting {
                kind: Kind::Port, ..
            }) => Some(AddressFlag::Port),
            Target::Setting(_) => None,
        }
    }
}

/// The two flags that set [`Config::listen`]; one command line may use only one of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AddressFlag {
    Listen,
    Port,
}

const BOTH_ADDRESS_FLAGS: &str =
    "--listen and --port both set the listening address: give one (see --help)";

pub(crate) const LISTEN_EXPECTED: &str = "a socket address such as 127.0.0.1:8080 or [::1]:8080";

/// `--listen ADDR`: a full socket address, IPv6 in brackets. Host names are refused: the
/// address is bound before anything could resolve them, and "localhost" may mean two.
fn parse_listen(raw: &str) -> Result<SocketAddr, ConfigError> {
    parse_address(raw, "--listen")
}

/// A socket address for the setting `setting`, or [`ConfigError::Invalid`] naming it.
fn parse_address(raw: &str, setting: &'static str) -> Result<SocketAddr, ConfigError> {
    raw.trim().parse().map_err(|_| ConfigError::Invalid {
        setting,
        value: raw.to_owned(),
        expected: LISTEN_EXPECTED,
    })
}

/// `0.0.0.0:port`, the address `PORT` and `--port` mean.
fn any_host(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port)
}

/// Milliseconds for [`ConfigError::Budget`]; every duration here is far below `u64::MAX`.
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn usage(message: String) -> ConfigError {
    ConfigError::Usage(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An environment lookup over fixed pairs.
    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |key| pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
    }

    fn args(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| (*w).to_owned()).collect()
    }

    fn parse(env: &[(&str, &str)], argv: &[&str]) -> Result<Command, ConfigError> {
        Config::parse(env_of(env), &args(argv))
    }

    /// Parses and expects a configuration (not help).
    fn run(env: &[(&str, &str)], argv: &[&str]) -> Result<Config, ConfigError> {
        match parse(env, argv)? {
            Command::Run(config) => Ok(config),
            other => panic!("expected a configuration, got {other:?} for {argv:?}"),
        }
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse().expect("test address")
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn defaults_match_the_documented_values() {
        let config = run(&[], &[]).expect("defaults are valid");
        assert_eq!(config, Config::default());
        assert_eq!(config.listen, addr("0.0.0.0:3000"));
        assert_eq!(config.database_url, None);
        assert_eq!(config.db_pool_size, 4);
        assert_eq!(config.shutdown_timeout, ms(10_000));
        assert_eq!(config.drain_delay, ms(0));
        assert_eq!(config.keepalive_timeout, ms(5_000));
        assert_eq!(config.header_timeout, ms(10_000));
        assert_eq!(config.body_timeout, ms(10_000));
        assert_eq!(config.request_timeout, ms(30_000));
        assert_eq!(config.write_timeout, ms(10_000));
        assert_eq!(config.max_connections, 16_384);
        assert_eq!(config.listen_backlog, 4096);
        assert_eq!(config.max_header_bytes, 16_384);
        assert_eq!(config.max_body_bytes, 1_048_576);
        assert_eq!(config.workers, Workers::Count(1));
        assert_eq!(config.buffer_budget_bytes, 64 << 20);
        assert_eq!(config.handover_timeout, ms(10_000));
    }

    /// A fixed environment and a command line, as test tables write them.
    type Env = &'static [(&'static str, &'static str)];
    type Args = &'static [&'static str];

    /// (env name, value, change expected from the defaults)
    type EnvCase = (&'static str, &'static str, fn(&mut Config));

    #[test]
    fn each_env_var_sets_its_field() {
        let cases: &[EnvCase] = &[
            ("PORT", "8080", |c| c.listen = addr("0.0.0.0:8080")),
            ("PORT", "0", |c| c.listen = addr("0.0.0.0:0")),
            ("PORT", "65535", |c| c.listen = addr("0.0.0.0:65535")),
            ("PORT", " 8080 ", |c| c.listen = addr("0.0.0.0:8080")),
            ("PORT", "", |_| {}),
            ("PORT", "   ", |_| {}),
            ("DATABASE_URL", "postgres://u@h/db", |c| {
                c.database_url = Some("postgres://u@h/db".to_owned())
            }),
            ("DATABASE_URL", "", |_| {}),
            ("DB_POOL_SIZE", "1", |c| c.db_pool_size = 1),
            ("DB_POOL_SIZE", "64", |c| c.db_pool_size = 64),
            ("SHUTDOWN_TIMEOUT_MS", "3000", |c| {
                c.shutdown_timeout = ms(3000)
            }),
            ("SHUTDOWN_TIMEOUT_MS", "3600000", |c| {
                c.shutdown_timeout = ms(3_600_000)
            }),
            ("DRAIN_DELAY_MS", "5000", |c| c.drain_delay = ms(5000)),
            ("KEEPALIVE_TIMEOUT_MS", "75000", |c| {
                c.keepalive_timeout = ms(75_000)
            }),
            ("HEADER_TIMEOUT_MS", "1", |c| c.header_timeout = ms(1)),
            ("BODY_TIMEOUT_MS", "60000", |c| c.body_timeout = ms(60_000)),
            ("REQUEST_TIMEOUT_MS", "300000", |c| {
                c.request_timeout = ms(300_000)
            }),
            ("WRITE_TIMEOUT_MS", "60000", |c| {
                c.write_timeout = ms(60_000)
            }),
            ("MAX_CONNECTIONS", "1000000", |c| {
                c.max_connections = 1_000_000
            }),
            ("LISTEN_BACKLOG", "511", |c| c.listen_backlog = 511),
            ("MAX_HEADER_BYTES", "256", |c| c.max_header_bytes = 256),
            ("MAX_BODY_BYTES", "0", |c| c.max_body_bytes = 0),
            ("MAX_BODY_BYTES", "007", |c| c.max_body_bytes = 7),
            ("WORKERS", "4", |c| c.workers = Workers::Count(4)),
            ("WORKERS", "1024", |c| c.workers = Workers::Count(1024)),
            ("WORKERS", "auto", |c| c.workers = Workers::Auto),
            ("WORKERS", " AUTO ", |c| c.workers = Workers::Auto),
            ("BUFFER_BUDGET_BYTES", "1081344", |c| {
                c.buffer_budget_bytes = 1_081_344
            }),
        ];
        for (name, value, change) in cases {
            let mut expected = Config::default();
            change(&mut expected);
            assert_eq!(run(&[(name, value)], &[]), Ok(expected), "{name}={value:?}");
        }
    }

    /// (environment, arguments, change expected from the defaults)
    type FlagCase = (Env, Args, fn(&mut Config));

    // Table-driven: its length is its table, one row per case.
    #[test]
    fn flags_set_fields_and_override_env() {
        let cases: &[FlagCase] = &[
            // Both spellings of every kind of flag.
            (&[], &["--port", "8080"], |c| {
                c.listen = addr("0.0.0.0:8080")
            }),
            (&[], &["--port=8080"], |c| c.listen = addr("0.0.0.0:8080")),
            (&[], &["--db-pool-size", "8"], |c| c.db_pool_size = 8),
            (&[], &["--shutdown-timeout-ms=3000"], |c| {
                c.shutdown_timeout = ms(3000)
            }),
            (&[], &["--drain-delay-ms", "2000"], |c| {
                c.drain_delay = ms(2000)
            }),
            (&[], &["--keepalive-timeout-ms=1"], |c| {
                c.keepalive_timeout = ms(1)
            }),
            (&[], &["--header-timeout-ms", "2"], |c| {
                c.header_timeout = ms(2)
            }),
            (&[], &["--body-timeout-ms=3"], |c| c.body_timeout = ms(3)),
            (&[], &["--request-timeout-ms", "5"], |c| {
                c.request_timeout = ms(5)
            }),
            (&[], &["--write-timeout-ms", "4"], |c| {
                c.write_timeout = ms(4)
            }),
            (&[], &["--max-connections=5"], |c| c.max_connections = 5),
            (&[], &["--max-header-bytes", "1024"], |c| {
                c.max_header_bytes = 1024
            }),
            (&[], &["--max-body-bytes=0"], |c| c.max_body_bytes = 0),
            (&[], &["--database-url", "postgres://x"], |c| {
                c.database_url = Some("postgres://x".to_owned())
            }),
            // `=` splits once: the value may contain `=` itself.
            (&[], &["--database-url=postgres://h/db?opt=1"], |c| {
                c.database_url = Some("postgres://h/db?opt=1".to_owned())
            }),
            // Flags win over the environment.
            (
                &[("SHUTDOWN_TIMEOUT_MS", "3000")],
                &["--shutdown-timeout-ms", "4000"],
                |c| c.shutdown_timeout = ms(4000),
            ),
            (&[("PORT", "8080")], &["--port", "9090"], |c| {
                c.listen = addr("0.0.0.0:9090")
            }),
            (&[("PORT", "8080")], &["--listen", "127.0.0.1:0"], |c| {
                c.listen = addr("127.0.0.1:0")
            }),
            // An empty --database-url clears one set in the environment.
            (
                &[("DATABASE_URL", "postgres://x")],
                &["--database-url="],
                |_| {},
            ),
            // A flag given twice keeps its later value; --port means host 0.0.0.0.
            (&[], &["--db-pool-size", "2", "--db-pool-size=3"], |c| {
                c.db_pool_size = 3
            }),
            (&[], &["--port", "1", "--port", "2"], |c| {
                c.listen = addr("0.0.0.0:2")
            }),
            (
                &[],
                &["--listen", "127.0.0.1:1", "--listen=127.0.0.1:2"],
                |c| c.listen = addr("127.0.0.1:2"),
            ),
            // --listen takes IPv6 in brackets, and either spelling.
            (&[], &["--listen", "[::1]:8080"], |c| {
                c.listen = addr("[::1]:8080")
            }),
            (&[], &["--listen=[::]:0"], |c| c.listen = addr("[::]:0")),
            (&[], &["--listen", "0.0.0.0:80"], |c| {
                c.listen = addr("0.0.0.0:80")
            }),
        ];
        for (env, argv, change) in cases {
            let mut expected = Config::default();
            change(&mut expected);
            assert_eq!(run(env, argv), Ok(expected), "env {env:?} args {argv:?}");
        }
    }

    /// (environment, arguments, setting the error must name, value it must quote)
    type InvalidCase = (Env, Args, &'static str, &'static str);

    // Table-driven: its length is its table, one row per case.
    #[test]
    fn bad_or_out_of_range_values_name_the_setting() {
        let cases: &[InvalidCase] = &[
            // Not decimal digits.
            (
                &[("SHUTDOWN_TIMEOUT_MS", "abc")],
                &[],
                "SHUTDOWN_TIMEOUT_MS",
                "abc",
            ),
            (&[("PORT", "-1")], &[], "PORT", "-1"),
            (&[("PORT", "+80")], &[], "PORT", "+80"),
            (&[("DB_POOL_SIZE", "1.5")], &[], "DB_POOL_SIZE", "1.5"),
            (&[("MAX_BODY_BYTES", "1e6")], &[], "MAX_BODY_BYTES", "1e6"),
            (&[("MAX_BODY_BYTES", "0x10")], &[], "MAX_BODY_BYTES", "0x10"),
            (
                &[("MAX_BODY_BYTES", "1_000")],
                &[],
                "MAX_BODY_BYTES",
                "1_000",
            ),
            (
                &[("KEEPALIVE_TIMEOUT_MS", "5s")],
                &[],
                "KEEPALIVE_TIMEOUT_MS",
                "5s",
            ),
            (
                &[("HEADER_TIMEOUT_MS", "1 0")],
                &[],
                "HEADER_TIMEOUT_MS",
                "1 0",
            ),
            (&[("BODY_TIMEOUT_MS", "١٠")], &[], "BODY_TIMEOUT_MS", "١٠"),
            // Out of range, at both ends, and past u64.
            (&[("PORT", "65536")], &[], "PORT", "65536"),
            (&[("DB_POOL_SIZE", "0")], &[], "DB_POOL_SIZE", "0"),
            (&[("DB_POOL_SIZE", "65")], &[], "DB_POOL_SIZE", "65"),
            (&[("WORKERS", "0")], &[], "WORKERS", "0"),
            (&[("WORKERS", "1025")], &[], "WORKERS", "1025"),
            (&[("WORKERS", "many")], &[], "WORKERS", "many"),
            (
                &[("METRICS_LISTEN", "localhost:9090")],
                &[],
                "METRICS_LISTEN",
                "localhost:9090",
            ),
            (&[], &["--metrics-listen", "9090"], "METRICS_LISTEN", "9090"),
            (&[("ACCESS_LOG", "apache")], &[], "ACCESS_LOG", "apache"),
            (&[], &["--access-log", "on"], "ACCESS_LOG", "on"),
            (&[], &["--workers", "-1"], "WORKERS", "-1"),
            (
                &[("SHUTDOWN_TIMEOUT_MS", "0")],
                &[],
                "SHUTDOWN_TIMEOUT_MS",
                "0",
            ),
            (
                &[("SHUTDOWN_TIMEOUT_MS", "3600001")],
                &[],
                "SHUTDOWN_TIMEOUT_MS",
                "3600001",
            ),
            (
                &[("DRAIN_DELAY_MS", "3600001")],
                &[],
                "DRAIN_DELAY_MS",
                "3600001",
            ),
            (&[("WRITE_TIMEOUT_MS", "0")], &[], "WRITE_TIMEOUT_MS", "0"),
            (&[("MAX_CONNECTIONS", "0")], &[], "MAX_CONNECTIONS", "0"),
            (
                &[("MAX_CONNECTIONS", "1000001")],
                &[],
                "MAX_CONNECTIONS",
                "1000001",
            ),
            (
                &[("MAX_HEADER_BYTES", "255")],
                &[],
                "MAX_HEADER_BYTES",
                "255",
            ),
            (
                &[("MAX_HEADER_BYTES", "1048577")],
                &[],
                "MAX_HEADER_BYTES",
                "1048577",
            ),
            (
                &[("MAX_BODY_BYTES", "1073741825")],
                &[],
                "MAX_BODY_BYTES",
                "1073741825",
            ),
            (
                &[("MAX_BODY_BYTES", "99999999999999999999999")],
                &[],
                "MAX_BODY_BYTES",
                "99999999999999999999999",
            ),
            // From a flag, the error still names the environment variable.
            (
                &[],
                &["--shutdown-timeout-ms", "abc"],
                "SHUTDOWN_TIMEOUT_MS",
                "abc",
            ),
            (&[], &["--port=70000"], "PORT", "70000"),
            (&[], &["--drain-delay-ms", "-5"], "DRAIN_DELAY_MS", "-5"),
            // An empty flag value is a mistake, unlike an empty variable.
            (&[], &["--db-pool-size="], "DB_POOL_SIZE", ""),
            // A value later overridden is still checked.
            (
                &[("DB_POOL_SIZE", "many")],
                &["--db-pool-size", "2"],
                "DB_POOL_SIZE",
                "many",
            ),
            // --listen has no environment name; host names are not socket addresses.
            (
                &[],
                &["--listen", "localhost:80"],
                "--listen",
                "localhost:80",
            ),
            (&[], &["--listen", "::1:8080"], "--listen", "::1:8080"),
            (&[], &["--listen=8080"], "--listen", "8080"),
            (
                &[],
                &["--listen", "127.0.0.1:65536"],
                "--listen",
                "127.0.0.1:65536",
            ),
        ];
        for (env, argv, setting, value) in cases {
            match parse(env, argv) {
                Err(ConfigError::Invalid {
                    setting: named,
                    value: quoted,
                    ..
                }) => {
                    assert_eq!(
                        (named, quoted.as_str()),
                        (*setting, *value),
                        "env {env:?} args {argv:?}"
                    );
                }
                other => panic!("env {env:?} args {argv:?}: expected Invalid, got {other:?}"),
            }
        }
    }

    #[test]
    fn drain_delay_must_stay_below_shutdown_timeout() {
        let cases: &[(Env, Args, u64, u64)] = &[
            (
                &[("DRAIN_DELAY_MS", "5000"), ("SHUTDOWN_TIMEOUT_MS", "3000")],
                &[],
                5000,
                3000,
            ),
            (&[("DRAIN_DELAY_MS", "10000")], &[], 10_000, 10_000),
            (
                &[],
                &["--shutdown-timeout-ms", "1", "--drain-delay-ms=1"],
                1,
                1,
            ),
            // Checked on final values: the environment's delay against the flag's timeout.
            (
                &[("DRAIN_DELAY_MS", "4000")],
                &["--shutdown-timeout-ms", "2000"],
                4000,
                2000,
            ),
        ];
        for (env, argv, drain_delay_ms, shutdown_timeout_ms) in cases {
            assert_eq!(
                parse(env, argv),
                Err(ConfigError::Budget {
                    drain_delay_ms: *drain_delay_ms,
                    shutdown_timeout_ms: *shutdown_timeout_ms,
                }),
                "env {env:?} args {argv:?}"
            );
        }
        // One millisecond under is enough.
        let config = run(&[("DRAIN_DELAY_MS", "9999")], &[]).expect("within budget");
        assert_eq!(config.drain_delay, ms(9999));
    }

    #[test]
    fn buffer_budget_must_hold_the_largest_body() {
        // The largest body alone is refused with the default budget, naming both settings.
        assert_eq!(
            parse(&[("MAX_BODY_BYTES", "1073741824")], &[]),
            Err(ConfigError::BufferBudget {
                budget: 64 << 20,
                needed: 1_073_741_824 + 2 * 16_384,
            })
        );
        // A budget raised with it is enough, whichever source sets which.
        let config = run(
            &[("MAX_BODY_BYTES", "1073741824")],
            &["--buffer-budget-bytes", "1073774592"],
        )
        .expect("the budget holds the body");
        assert_eq!(config.max_body_bytes, 1_073_741_824);
        assert_eq!(config.buffer_budget_bytes, 1_073_774_592);
    }

    #[test]
    fn unknown_words_and_missing_values_are_usage_errors() {
        let cases: &[(Args, &str)] = &[
            (&["--frob"], "unknown argument '--frob' (see --help)"),
            (&["--frob=1"], "unknown argument '--frob' (see --help)"),
            (&["serve"], "unknown argument 'serve' (see --help)"),
            (&["-p", "80"], "unknown argument '-p' (see --help)"),
            // -V is the version, as for rustc and cargo; -v, verbose to many tools, is not.
            (&["-v"], "unknown argument '-v' (see --help)"),
            (&["--"], "unknown argument '--' (see --help)"),
            // Environment spellings are not flags.
            (&["--PORT", "80"], "unknown argument '--PORT' (see --help)"),
            (
                &["--db_pool_size", "2"],
                "unknown argument '--db_pool_size' (see --help)",
            ),
            // A mistyped flag's value is not echoed: it may be a password.
            (
                &["--databse-url=postgres://u:secret@h"],
                "unknown argument '--databse-url' (see --help)",
            ),
            (&["--port"], "missing value for --port (see --help)"),
            (&["--listen"], "missing value for --listen (see --help)"),
            (
                &["--port", "--drain-delay-ms", "5"],
                "missing value for --port (see --help)",
            ),
            (
                &["--port", "80", "--max-body-bytes"],
                "missing value for --max-body-bytes (see --help)",
            ),
            // --listen and --port together, in either order and spelling; the second of
            // them is refused before its value is judged.
            (
                &["--listen", "127.0.0.1:1", "--port", "2"],
                BOTH_ADDRESS_FLAGS,
            ),
            (&["--port=2", "--listen=127.0.0.1:1"], BOTH_ADDRESS_FLAGS),
            (
                &["--port", "1", "--port", "2", "--listen", "[::1]:3"],
                BOTH_ADDRESS_FLAGS,
            ),
            (
                &["--listen", "127.0.0.1:1", "--port", "abc"],
                BOTH_ADDRESS_FLAGS,
            ),
        ];
        for (argv, message) in cases {
            assert_eq!(
                parse(&[], argv),
                Err(ConfigError::Usage((*message).to_owned())),
                "args {argv:?}"
            );
        }
    }

    #[test]
    fn help_and_version_win_anywhere_even_over_a_broken_environment() {
        let cases: &[(Env, Args, Command)] = &[
            (&[], &["--help"], Command::Help),
            (&[], &["-h"], Command::Help),
            (&[], &["--port", "80", "--help"], Command::Help),
            (&[], &["--frob", "-h"], Command::Help),
            (
                &[("PORT", "nope"), ("DRAIN_DELAY_MS", "99999999")],
                &["--help"],
                Command::Help,
            ),
            (&[], &["--version"], Command::Version),
            (&[], &["-V"], Command::Version),
            (&[], &["--port", "80", "--version"], Command::Version),
            (&[], &["--frob", "-V"], Command::Version),
            (&[("PORT", "nope")], &["--version"], Command::Version),
            // Help wins over version, in either order.
            (&[], &["--version", "--help"], Command::Help),
            (&[], &["-h", "-V"], Command::Help),
        ];
        for (env, argv, command) in cases {
            assert_eq!(
                parse(env, argv).as_ref(),
                Ok(command),
                "env {env:?} args {argv:?}"
            );
        }
        assert_eq!(
            version_text(),
            format!("lastcall {}\n", env!("CARGO_PKG_VERSION"))
        );
    }

    #[test]
    fn errors_display_as_one_line_naming_the_setting() {
        let cases: &[(ConfigError, &str)] = &[
            (
                ConfigError::Invalid {
                    setting: "SHUTDOWN_TIMEOUT_MS",
                    value: "abc".to_owned(),
                    expected: "milliseconds from 1 to 3600000",
                },
                "invalid SHUTDOWN_TIMEOUT_MS=abc: expected milliseconds from 1 to 3600000",
            ),
            (
                ConfigError::Budget {
                    drain_delay_ms: 5000,
                    shutdown_timeout_ms: 3000,
                },
                "DRAIN_DELAY_MS (5000) must be below SHUTDOWN_TIMEOUT_MS (3000): \
                 the drain delay has to leave time to drain",
            ),
            (
                ConfigError::BufferBudget {
                    budget: 1_048_576,
                    needed: 1_081_344,
                },
                "BUFFER_BUDGET_BYTES (1048576) must be at least 1081344: MAX_BODY_BYTES \
                 plus two buffers of MAX_HEADER_BYTES, or the largest body is never taken",
            ),
            (
                ConfigError::Usage("unknown argument '--frob' (see --help)".to_owned()),
                "unknown argument '--frob' (see --help)",
            ),
        ];
        for (error, line) in cases {
            assert_eq!(error.to_string(), *line);
        }
        // And the parser produces that exact first message.
        let error = parse(&[("SHUTDOWN_TIMEOUT_MS", "abc")], &[]).expect_err("invalid");
        assert_eq!(
            error.to_string(),
            "invalid SHUTDOWN_TIMEOUT_MS=abc: expected milliseconds from 1 to 3600000"
        );
    }

    #[test]
    fn help_text_lists_every_setting_and_exit_code() {
        let text = help_text();
        for setting in SETTINGS {
            assert!(text.contains(setting.env), "{} missing", setting.env);
            assert!(
                text.contains(&format!("--{} ", setting.flag())),
                "{} flag missing",
                setting.env
            );
            assert!(
                text.contains(&format!("(default {})", setting.default_text())),
                "{} default missing",
                setting.env
            );
        }
        for needle in [
            "--listen ADDR",
            "--help",
            "--version",
            "not together with --port",
            "RUST_LOG",
            "0  clean drain",
            "1  shutdown deadline",
            "2  bad configuration",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from help");
        }
        assert!(text.contains("--shutdown-timeout-ms MS  (default 10000)"));
        assert!(text.contains("--port N  (default 3000)"));
    }

    /// The table's hand-written `expected` texts and its defaults must agree with its ranges.
    #[test]
    fn settings_table_is_consistent() {
        let defaults = Config::default();
        for setting in SETTINGS {
            match setting.kind {
                Kind::Millis {
                    min,
                    max,
                    expected,
                    field,
                } => {
                    assert_eq!(
                        expected,
                        format!("milliseconds from {min} to {max}"),
                        "{}",
                        setting.env
                    );
                    let mut d = defaults.clone();
                    let default = millis(*field(&mut d));
                    assert!(
                        (min..=max).contains(&default),
                        "{} default out of range",
                        setting.env
                    );
                }
                Kind::Count {
                    min,
                    max,
                    expected,
                    field,
                } => {
                    assert!(
                        expected.ends_with(&format!(" from {min} to {max}")),
                        "{}",
                        setting.env
                    );
                    let mut d = defaults.clone();
                    let default = u64::try_from(*field(&mut d)).expect("fits");
                    assert!(
                        (min..=max).contains(&default),
                        "{} default out of range",
                        setting.env
                    );
                }
                Kind::Workers { max } => {
                    assert!(
                        settings::WORKERS_EXPECTED.contains(&format!(" from 1 to {max}")),
                        "{}",
                        setting.env
                    );
                }
                Kind::Port | Kind::Url | Kind::MetricsListen | Kind::AccessLog => {}
            }
        }
    }

    #[test]
    fn metrics_listen_and_access_log_are_read_and_default_off() {
        let run = |env: Env, args: Args| match parse(env, args) {
            Ok(Command::Run(config)) => config,
            other => panic!("{other:?}"),
        };
        let defaults = run(&[], &[]);
        assert_eq!((defaults.metrics_listen, defaults.access_log), (None, None));
        let set = run(
            &[("METRICS_LISTEN", "127.0.0.1:9090"), ("ACCESS_LOG", "JSON")],
            &[],
        );
        assert_eq!(set.metrics_listen, Some("127.0.0.1:9090".parse().unwrap()));
        assert_eq!(set.access_log, Some(crate::access_log::Format::Json));
        // Empty and `off` are the defaults, so a deployment can unset them explicitly.
        let off = run(&[("METRICS_LISTEN", ""), ("ACCESS_LOG", "off")], &[]);
        assert_eq!((off.metrics_listen, off.access_log), (None, None));
        let flags = run(
            &[],
            &["--metrics-listen", "[::1]:9090", "--access-log=combined"],
        );
        assert_eq!(flags.metrics_listen, Some("[::1]:9090".parse().unwrap()));
        assert_eq!(flags.access_log, Some(crate::access_log::Format::Combined));
    }

    /// A copy-pasted row writing a neighbour's field would make two settings one.
    #[test]
    fn each_setting_writes_its_own_field() {
        let mut seen: Vec<Config> = Vec::new();
        for setting in SETTINGS {
            let mut config = Config::default();
            let value = match setting.kind {
                Kind::Port => "1".to_owned(),
                Kind::Url => "postgres://x".to_owned(),
                Kind::MetricsListen => "127.0.0.1:9090".to_owned(),
                Kind::AccessLog => "json".to_owned(),
                Kind::Millis { max, .. } | Kind::Count { max, .. } | Kind::Workers { max } => {
                    max.to_string()
                }
            };
            setting
                .apply(&mut config, &value)
                .expect("the maximum is valid");
            assert_ne!(config, Config::default(), "{} changed nothing", setting.env);
            assert!(
                !seen.contains(&config),
                "{} writes another row's field",
                setting.env
            );
            seen.push(config);
        }
    }
}
