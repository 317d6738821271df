//! Test support: start the real `lastcall` binary on a free loopback port and talk raw
//! HTTP/1.1 to it over TCP, with timeouts on everything.
//!
//! The binary binds `127.0.0.1:0` and logs the address it got (`Listening on http://…`);
//! tests read that line instead of probing for a free port. Every wait here is bounded,
//! so a hang fails a test instead of stalling the suite.

#![allow(dead_code)] // each test file uses a different part of this module

pub mod pg;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Upper bound for anything that should happen "at once": only catches hangs.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Every setting the binary reads from its environment: cleared for each test, so the
/// environment the suite runs in cannot change what a test sees.
const SETTINGS: &[&str] = &[
    "PORT",
    "DATABASE_URL",
    "DB_POOL_SIZE",
    "SHUTDOWN_TIMEOUT_MS",
    "DRAIN_DELAY_MS",
    "KEEPALIVE_TIMEOUT_MS",
    "HEADER_TIMEOUT_MS",
    "BODY_TIMEOUT_MS",
    "REQUEST_TIMEOUT_MS",
    "WRITE_TIMEOUT_MS",
    "MAX_CONNECTIONS",
    "LISTEN_BACKLOG",
    "MAX_HEADER_BYTES",
    "MAX_BODY_BYTES",
    "WORKERS",
    "BUFFER_BUDGET_BYTES",
    "HANDOVER_TIMEOUT_MS",
    "METRICS_LISTEN",
    "ACCESS_LOG",
    "NOTIFY_SOCKET",
    "LASTCALL_SUPERVISOR_NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
];

/// The binary on `127.0.0.1:0` with debug logs on a piped stderr, a clean configuration
/// and the given environment on top. `LASTCALL_TEST_WORKERS=N` in the suite's environment
/// runs every such binary with N event loops (a test's own `--workers` still wins), so a
/// whole file can be checked with several loops: `LASTCALL_TEST_WORKERS=4 cargo test
/// --test shutdown`.
pub fn command(env: &[(&str, &str)]) -> Command {
    command_for(Path::new(env!("CARGO_BIN_EXE_lastcall")), env)
}

/// [`command`] for the binary at `program`: a copy, for a test that replaces it.
pub fn command_for(program: &Path, env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(program);
    cmd.args(["--listen", "127.0.0.1:0"]);
    if let Ok(workers) = std::env::var("LASTCALL_TEST_WORKERS") {
        cmd.args(["--workers", &workers]);
    }
    cmd.env("RUST_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for name in SETTINGS {
        cmd.env_remove(name);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Spawns `cmd`, retrying while its program is "busy": a binary a test has just copied can
/// still be open for writing in a child another test thread forked meanwhile, until that
/// child's `exec` closes it (ETXTBSY).
pub fn spawn(cmd: &mut Command) -> Child {
    let start = Instant::now();
    loop {
        match cmd.spawn() {
            Ok(child) => return child,
            Err(e) if e.kind() == ErrorKind::ExecutableFileBusy && start.elapsed() < PATIENCE => {
                thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("spawn lastcall: {e}"),
        }
    }
}

/// Sends a signal by name to a process by id with kill(1).
pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{name} {pid} failed");
}

/// A running `lastcall` process. Killed on drop if still running.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    log: Arc<(Mutex<Vec<String>>, Condvar)>,
}

impl Server {
    /// Starts the binary with extra environment variables and arguments.
    pub fn start(env: &[(&str, &str)], args: &[&str]) -> Server {
        Server::start_command(command(env).args(args))
    }

    /// Starts a command made by [`command`] or [`command_for`].
    pub fn start_command(cmd: &mut Command) -> Server {
        let mut child = spawn(cmd);
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let sink = Arc::clone(&log);
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let (lines, cond) = &*sink;
                lines.lock().unwrap().push(line);
                cond.notify_all();
            }
        });
        let mut server = Server {
            child,
            addr: "0.0.0.0:0".parse().unwrap(),
            log,
        };
        let line = server.wait_for_log("Listening on http://");
        let addr = line.rsplit("http://").next().unwrap().trim();
        server.addr = addr
            .parse()
            .unwrap_or_else(|_| panic!("bad address in {line:?}"));
        server
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The process's standard output, for a test that started it piped.
    pub fn take_stdout(&mut self) -> std::process::ChildStdout {
        self.child.stdout.take().expect("stdout was piped")
    }

    /// The address `/metrics` is served on alone (`METRICS_LISTEN`), from its log line.
    pub fn metrics_addr(&self) -> SocketAddr {
        let line = self.wait_for_log("Metrics on http://");
        let addr = line.rsplit("http://").next().unwrap().trim();
        let addr = addr.strip_suffix("/metrics").unwrap_or(addr);
        addr.parse()
            .unwrap_or_else(|_| panic!("bad address in {line:?}"))
    }

    /// A raw TCP client with read and write timeouts.
    pub fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect_timeout(&self.addr, PATIENCE).expect("connect");
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        stream.set_write_timeout(Some(PATIENCE)).unwrap();
        stream
    }

    /// Sends a signal by name (`TERM`, `INT`) with kill(1): no libc needed.
    pub fn signal(&self, name: &str) {
        signal(self.pid(), name);
    }

    /// Waits for the process to exit, at most `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                start.elapsed() < limit,
                "server did not exit within {limit:?}; log:\n{}",
                self.log_text()
            );
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits until a log line contains `needle`; returns that line.
    pub fn wait_for_log(&self, needle: &str) -> String {
        let (lines, cond) = &*self.log;
        let deadline = Instant::now() + PATIENCE;
        let mut guard = lines.lock().unwrap();
        loop {
            if let Some(line) = guard.iter().find(|l| l.contains(needle)) {
                return line.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no log line with {needle:?}; log:\n{}",
                guard.join("\n")
            );
            guard = cond.wait_timeout(guard, left).unwrap().0;
        }
    }

    pub fn log_text(&self) -> String {
        self.log.0.lock().unwrap().join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A parsed response, as a client sees it.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The body was chunked and ended with the last chunk (not cut short).
    pub complete: bool,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

/// Reads responses off one connection, keeping bytes that belong to the next response.
pub struct Reader {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

/// Why reading a response failed.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadError {
    /// The connection closed before any byte of a response: an EOF, or a reset (a request
    /// that reached a socket the server had just closed; RFC 9112 §9.3.1's race, which
    /// clients retry either way, as Go's transport does).
    ClosedBeforeResponse,
    /// The connection closed partway through a response.
    Truncated,
    /// Reset or timed out.
    Io(ErrorKind),
}

impl Reader {
    pub fn new(stream: TcpStream) -> Reader {
        Reader {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write request");
    }

    /// Sends, reporting a failed write instead of panicking: for clients under load,
    /// whose server may close an idle connection just as they write.
    pub fn try_send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Reads one response to a request with method `method` (HEAD has no body).
    pub fn response_to(&mut self, method: &str) -> Result<Response, ReadError> {
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            let filled = match self.fill() {
                Err(ReadError::Io(kind)) if self.buf.is_empty() && is_reset(kind) => {
                    return Err(ReadError::ClosedBeforeResponse);
                }
                filled => filled?,
            };
            if filled == 0 {
                return Err(if self.buf.is_empty() {
                    ReadError::ClosedBeforeResponse
                } else {
                    ReadError::Truncated
                });
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        self.buf.drain(..head_end);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or("");
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let headers: Vec<(String, String)> = lines
            .filter(|l| !l.is_empty())
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
            .collect();
        let mut response = Response {
            status,
            headers,
            body: Vec::new(),
            complete: true,
        };
        if method == "HEAD" || status == 100 || status == 204 || status == 304 {
            return Ok(response);
        }
        if let Some(len) = response.header("content-length") {
            let len: usize = len.parse().expect("numeric content-length");
            while self.buf.len() < len {
                if self.fill()? == 0 {
                    return Err(ReadError::Truncated);
                }
            }
            response.body = self.buf.drain(..len).collect();
        } else if response
            .header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
        {
            response.complete = false;
            loop {
                let line_end = loop {
                    if let Some(i) = find(&self.buf, b"\r\n") {
                        break i;
                    }
                    if self.fill()? == 0 {
                        return Ok(response); // cut: `complete` stays false
                    }
                };
                let size_text = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
                let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16)
                    .unwrap_or_else(|_| panic!("bad chunk size {size_text:?}"));
                while self.buf.len() < line_end + 2 + size + 2 {
                    if self.fill()? == 0 {
                        return Ok(response);
                    }
                }
                if size == 0 {
                    self.buf.drain(..line_end + 4);
                    response.complete = true;
                    return Ok(response);
                }
                response
                    .body
                    .extend_from_slice(&self.buf[line_end + 2..line_end + 2 + size]);
                self.buf.drain(..line_end + 2 + size + 2);
            }
        } else {
            // Close-delimited (HTTP/1.0 stream).
            while self.fill()? > 0 {}
            response.body = std::mem::take(&mut self.buf);
        }
        Ok(response)
    }

    /// Reads one response to a GET.
    pub fn response(&mut self) -> Result<Response, ReadError> {
        self.response_to("GET")
    }

    /// True when the server closed the connection (EOF) with nothing more to read.
    pub fn at_eof(&mut self) -> bool {
        self.buf.is_empty() && matches!(self.fill(), Ok(0))
    }

    fn fill(&mut self) -> Result<usize, ReadError> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(ReadError::Io(e.kind())),
            }
        }
    }
}

/// The ways a socket says the peer has gone.
pub fn is_reset(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe
    )
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// One GET on a fresh connection with `Connection: close`.
pub fn get(server: &Server, path: &str) -> Response {
    let mut r = Reader::new(server.connect());
    r.send(format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes());
    r.response().expect("a response")
}

/// A run of the binary that ends by itself (a usage error, `--version`, a port in use, a
/// signal during start-up): stdout and stderr are collected on threads, so a full pipe
/// cannot stall the process, and [`Run::wait`] bounds the wait. Killed on drop if still
/// running.
pub struct Run {
    child: Child,
    stdout: Option<thread::JoinHandle<String>>,
    stderr: Option<thread::JoinHandle<String>>,
}

/// How a [`Run`] ended.
#[derive(Debug)]
pub struct Exited {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Spawns `cmd` (usually from [`command`]) with stdout and stderr piped.
    pub fn start(cmd: &mut Command) -> Run {
        let mut child = spawn(cmd.stdout(Stdio::piped()).stderr(Stdio::piped()));
        let stdout = read_to_end(child.stdout.take().expect("stdout is piped"));
        let stderr = read_to_end(child.stderr.take().expect("stderr is piped"));
        Run {
            child,
            stdout: Some(stdout),
            stderr: Some(stderr),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits at most `limit` for the process to exit, then for its output to end.
    pub fn wait(&mut self, limit: Duration) -> Exited {
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            assert!(
                start.elapsed() < limit,
                "lastcall did not exit within {limit:?}"
            );
            thread::sleep(Duration::from_millis(5));
        };
        Exited {
            status,
            stdout: joined(self.stdout.take()),
            stderr: joined(self.stderr.take()),
        }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the binary from [`command`] with `args` until it exits by itself, at most
/// [`PATIENCE`].
pub fn run_to_exit(env: &[(&str, &str)], args: &[&str]) -> Exited {
    Run::start(command(env).args(args)).wait(PATIENCE)
}

/// Reads a child's pipe to its end on a thread of its own.
fn read_to_end(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    })
}

/// What a [`read_to_end`] thread read; empty if it was already taken.
fn joined(reader: Option<thread::JoinHandle<String>>) -> String {
    reader.map_or_else(String::new, |r| r.join().expect("pipe reader"))
}

/// A Prometheus text exposition as `series → value`, the series written as it appears
/// (`lastcall_requests_total{route="/json",class="2xx"}`); comment lines left out.
pub fn parse_metrics(text: &str) -> std::collections::HashMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (series, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("a sample line without a value: {line:?}"));
            let value = value
                .parse()
                .unwrap_or_else(|_| panic!("a sample value that is not a number: {line:?}"));
            (series.to_owned(), value)
        })
        .collect()
}

/// One series' value in a parsed exposition; a missing series fails the test.
pub fn metric(metrics: &std::collections::HashMap<String, f64>, series: &str) -> f64 {
    *metrics.get(series).unwrap_or_else(|| {
        let mut names: Vec<_> = metrics.keys().collect();
        names.sort();
        panic!("no series {series} in /metrics; it has: {names:#?}")
    })
}

/// Checks an exposition with Prometheus' own linter, `promtool check metrics` (Debian's
/// `prometheus` package; `.ci/run` installs it): the format, and its naming conventions
/// (`_total` on counters, base units).
pub fn promtool_check(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (apt-get install prometheus) to validate /metrics");
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool ran");
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics found problems:\n{}{}\nin:\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
