//! The engine embedded in an application, and stopped the way an application stops it:
//! through a `ShutdownHandle`, from another thread, instead of a signal.
//!
//! Each test starts the engine on a thread of the test process with a handler that keeps
//! state of its own (a greeting from its configuration and a visit counter; every other
//! path goes to the reference routes), talks raw HTTP/1.1 to it over TCP with timeouts on
//! every client, and joins `run`'s outcome within a bound. What they hold the engine to:
//! - the handler's state is one value, kept across requests and connections;
//! - `shutdown()` from another thread runs the sequence a SIGTERM runs: readiness turns
//!   503, a request in flight is answered with `Connection: close`, idle connections
//!   close, and `run` returns `Outcome::Drained` (or `TimedOut` past the deadline);
//! - asking again is harmless: logged as ignored, like a repeated signal, and a handle that
//!   outlives its server asks nobody;
//! - the log says who asked;
//! - the numbers it hands the application (`Server::stats`, what `/metrics` shows), read
//!   once `run` has returned, are the shutdown report's and the clients'.
//!
//! How the tests see the log: a logger of this test process keeps every line the engine
//! logs, with the thread that logged it, so each test reads only its own server's lines.
//! No test sleeps for correctness; every wait is bounded.

mod support;

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::{self, ThreadId};
use std::time::{Duration, Instant};

use lastcall::config::Config;
use lastcall::handler::{Answer, Ctx, Handler};
use lastcall::http::request::Request;
use lastcall::http::response::{Body, Response, Status, TEXT};
use lastcall::server::{self, Outcome, Server, ShutdownHandle, Started};
use lastcall::stats::Stats;
use support::{PATIENCE, ReadError, Reader};

/// What a drained server answers on `/health`.
const SHUTTING_DOWN: &str = r#"{"status":"shutting_down"}"#;

/// An application with state of its own: a greeting it was configured with, and how many
/// visits it has counted.
struct Visits {
    greeting: String,
    count: AtomicU64,
}

impl Handler for Visits {
    fn handle(&self, req: &Request<'_>, ctx: &mut Ctx<'_>) -> Answer {
        match req.path {
            "/visit" => {
                let n = self.count.fetch_add(1, Ordering::Relaxed) + 1;
                let body = format!("{}, visitor #{n}", self.greeting);
                Answer::Now(Response::new(
                    Status::OK,
                    TEXT,
                    Body::Bytes(body.into_bytes()),
                ))
            }
            _ => lastcall::routes::handle(req, ctx),
        }
    }
}

/// An engine running on a thread of the test process.
struct Embedded {
    addr: SocketAddr,
    handle: ShutdownHandle,
    /// What `run` returned, sent when it returns.
    outcome: mpsc::Receiver<io::Result<Outcome>>,
    /// The loop's thread: its log lines are this server's.
    thread: ThreadId,
    /// Its numbers, as `/metrics` shows them.
    stats: Arc<Stats>,
}

impl Embedded {
    /// Starts the engine with `config` (on a free loopback port) and a fresh `Visits`.
    /// `ask_first` asks for the shutdown between `bind` and `run`.
    fn start_with(config: Config, ask_first: bool) -> Embedded {
        capture_logs();
        let (started_tx, started) = mpsc::channel();
        let (outcome_tx, outcome) = mpsc::channel();
        let runner = thread::spawn(move || {
            let config = Config {
                listen: "127.0.0.1:0".parse().unwrap(),
                ..config
            };
            let app = Visits {
                greeting: "Hello".to_owned(),
                count: AtomicU64::new(0),
            };
            let signals = server::install_signal_handlers().unwrap();
            let Ok(Started::Ready(server)) = Server::bind(&config, app, signals) else {
                panic!("server did not start");
            };
            let handle = server.shutdown_handle();
            if ask_first {
                handle.shutdown();
            }
            started_tx
                .send((server.local_addr(), handle, server.stats()))
                .unwrap();
            let _ = outcome_tx.send(server.run());
        });
        let (addr, handle, stats) = started.recv_timeout(PATIENCE).expect("server started");
        Embedded {
            addr,
            handle,
            outcome,
            thread: runner.thread().id(),
            stats,
        }
    }

    fn start(config: Config) -> Embedded {
        Embedded::start_with(config, false)
    }

    /// A raw TCP client with read and write timeouts.
    fn connect(&self) -> Reader {
        let stream = TcpStream::connect_timeout(&self.addr, PATIENCE).expect("connect");
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        stream.set_write_timeout(Some(PATIENCE)).unwrap();
        Reader::new(stream)
    }

    /// One keep-alive GET on `conn`, answered.
    fn get(conn: &mut Reader, path: &str) -> support::Response {
        conn.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        conn.response()
            .unwrap_or_else(|e| panic!("GET {path}: {e:?}"))
    }

    /// A `/work?ms=<ms>` request in flight, on a connection of its own, and the idle
    /// keep-alive connection that proved it: a request is in flight once a later request
    /// on another connection has been answered.
    fn work_in_flight(&self, ms: u64) -> (Reader, Reader) {
        let mut working = self.connect();
        working.send(format!("GET /work?ms={ms} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        let mut idle = self.connect();
        Embedded::get(&mut idle, "/visit");
        (working, idle)
    }

    /// Asks for the shutdown from a thread of its own, as an application would.
    fn shutdown_from_another_thread(&self) {
        let handle = self.handle.clone();
        thread::spawn(move || handle.shutdown())
            .join()
            .expect("shutdown() returns");
    }

    /// What `run` returned, waiting at most `limit`.
    fn outcome(&self, limit: Duration) -> Outcome {
        match self.outcome.recv_timeout(limit) {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(e)) => panic!("run failed: {e}"),
            Err(_) => panic!("run did not return within {limit:?}; log:\n{}", self.log()),
        }
    }

    /// Every line this server logged so far.
    fn log(&self) -> String {
        let lines = LOG.lock().unwrap_or_else(|e| e.into_inner());
        let mine: Vec<&str> = lines
            .iter()
            .filter(|(thread, _)| *thread == self.thread)
            .map(|(_, line)| line.as_str())
            .collect();
        mine.join("\n")
    }
}

/// The engine's log lines, with the thread that logged each one.
static LOG: Mutex<Vec<(ThreadId, String)>> = Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.target().starts_with("lastcall")
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            let line = record.args().to_string();
            let mut lines = LOG.lock().unwrap_or_else(|e| e.into_inner());
            lines.push((thread::current().id(), line));
        }
    }

    fn flush(&self) {}
}

/// Installs [`Capture`] as this process's logger (once; later calls find it there).
fn capture_logs() {
    if log::set_logger(&Capture).is_ok() {
        log::set_max_level(log::LevelFilter::Info);
    }
}

/// `/health` on a fresh connection, until it answers 503 (the shutdown has been taken),
/// at most [`PATIENCE`].
fn wait_for_health_503(server: &Embedded) -> support::Response {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let health = Embedded::get(&mut server.connect(), "/health");
        if health.status == 503 || Instant::now() >= deadline {
            return health;
        }
        thread::yield_now();
    }
}

#[test]
fn handler_state_is_kept_across_requests_and_connections() {
    let server = Embedded::start(Config::default());
    let mut first = server.connect();
    let mut second = server.connect();
    let answers = [
        Embedded::get(&mut first, "/visit"),
        Embedded::get(&mut first, "/visit"),
        Embedded::get(&mut second, "/visit"),
    ];
    let bodies: Vec<String> = answers.iter().map(|r| r.body_text()).collect();
    assert_eq!(
        bodies,
        [
            "Hello, visitor #1",
            "Hello, visitor #2",
            "Hello, visitor #3"
        ]
    );
    // The reference routes answer what the application does not.
    let plaintext = Embedded::get(&mut second, "/plaintext");
    assert_eq!(
        (plaintext.status, plaintext.body_text().as_str()),
        (200, "Hello, World!")
    );
    server.shutdown_from_another_thread();
    assert_eq!(server.outcome(PATIENCE), Outcome::Drained);
}

#[test]
fn shutdown_from_another_thread_drains_an_in_flight_request_and_run_returns_drained() {
    let server = Embedded::start(Config::default());
    let (mut working, mut idle) = server.work_in_flight(1000);

    server.shutdown_from_another_thread();
    assert!(
        idle.at_eof(),
        "an idle keep-alive connection closes at once"
    );
    let done = working
        .response()
        .expect("the request in flight is answered");
    assert_eq!(
        (done.status, done.body_text().as_str()),
        (200, r#"{"done":true}"#)
    );
    assert!(done.closes(), "answered with Connection: close: {done:?}");
    assert!(working.at_eof(), "then the connection closes");

    let outcome = server.outcome(PATIENCE);
    assert_eq!((outcome, outcome.exit_code()), (Outcome::Drained, 0));
    let log = server.log();
    assert!(
        log.contains(
            "shutdown requested by the application: starting graceful shutdown (draining, max 10000ms)"
        ),
        "log:\n{log}"
    );
    assert!(log.contains("Drained requests"), "log:\n{log}");
    assert!(
        log.lines()
            .last()
            .is_some_and(|l| l.contains("shutdown report")),
        "the report is the last line; log:\n{log}"
    );
    // The loop is gone: asking now reaches nobody, and nothing happens.
    server.handle.shutdown();
}

#[test]
fn readiness_answers_503_after_shutdown_and_a_second_shutdown_changes_nothing() {
    // A drain delay keeps the listener open, so readiness can be asked after the request.
    let server = Embedded::start(Config {
        drain_delay: Duration::from_millis(1000),
        ..Config::default()
    });
    let mut kept = server.connect();
    assert_eq!(Embedded::get(&mut kept, "/health").status, 200);

    server.shutdown_from_another_thread();
    let health = wait_for_health_503(&server);
    assert_eq!(
        (health.status, health.body_text().as_str()),
        (503, SHUTTING_DOWN)
    );
    assert!(health.closes(), "{health:?}");
    let live = Embedded::get(&mut server.connect(), "/live");
    assert_eq!(live.status, 200, "liveness stays 200");

    server.shutdown_from_another_thread();
    let again = Embedded::get(&mut server.connect(), "/visit");
    assert_eq!(again.status, 200, "still serving through the delay");
    assert_eq!(server.outcome(PATIENCE), Outcome::Drained);
    let log = server.log();
    assert_eq!(
        log.matches("starting graceful shutdown").count(),
        1,
        "one shutdown only; log:\n{log}"
    );
    assert!(
        log.contains("shutdown requested by the application again: already shutting down, ignored"),
        "log:\n{log}"
    );
    assert!(
        log.contains("drain delay over"),
        "the same sequence as a signal; log:\n{log}"
    );
    assert!(
        matches!(kept.response(), Err(ReadError::ClosedBeforeResponse)),
        "the idle connection closed when the drain began"
    );
}

#[test]
fn shutdown_past_the_deadline_answers_503_and_run_returns_timed_out() {
    let server = Embedded::start(Config {
        shutdown_timeout: Duration::from_millis(300),
        ..Config::default()
    });
    let (mut working, _idle) = server.work_in_flight(5000);

    server.shutdown_from_another_thread();
    let cut = working.response().expect("a real answer at the deadline");
    assert_eq!(cut.status, 503, "{cut:?}");
    assert_eq!(cut.header("retry-after"), Some("1"));
    let outcome = server.outcome(PATIENCE);
    assert_eq!((outcome, outcome.exit_code()), (Outcome::TimedOut, 1));
    assert!(server.log().contains("Drain timed out"));

    // The final numbers, read once `run` has returned: the report's, and the clients'.
    let report = "idle_closed=1 drained=0 failed=0 answered_503=1 cut=0";
    assert!(server.log().contains(report), "{}", server.log());
    let text = server.stats.render(Instant::now());
    support::promtool_check(&text);
    let metrics = support::parse_metrics(&text);
    for (outcome, n) in [
        ("idle_closed", 1.0),
        ("drained", 0.0),
        ("failed", 0.0),
        ("answered_503", 1.0),
        ("cut", 0.0),
    ] {
        let series = format!("lastcall_shutdown_connections_total{{outcome=\"{outcome}\"}}");
        assert_eq!(support::metric(&metrics, &series), n, "{series}");
    }
    let server_503 = "lastcall_requests_total{route=\"none\",class=\"5xx\"}";
    assert_eq!(support::metric(&metrics, server_503), 1.0);
    let stopped = "lastcall_shutdown_phase{phase=\"stopped\"}";
    assert_eq!(support::metric(&metrics, stopped), 1.0);
    assert_eq!(support::metric(&metrics, "lastcall_connections_open"), 0.0);
}

#[test]
fn shutdown_asked_before_run_stops_the_server_as_soon_as_it_runs() {
    let server = Embedded::start_with(Config::default(), true);
    assert_eq!(server.outcome(PATIENCE), Outcome::Drained);
    let log = server.log();
    assert!(log.contains("Listening on"), "log:\n{log}");
    assert!(
        log.contains("shutdown requested by the application: starting graceful shutdown"),
        "log:\n{log}"
    );
}
