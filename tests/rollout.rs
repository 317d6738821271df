//! A rolling deploy through a real load balancer, as a user runs one: HAProxy in front of
//! two instances of the real binary, load through the balancer, and each instance in turn
//! stopped with SIGTERM and replaced by a new process on the same port. No request may
//! fail. This is the short version of `benches/rollout.py` (three instances, ten rolls,
//! and the runs that show what each setting protects against).
//!
//! The timing follows the arithmetic of the README's "Deploying" section, scaled down to
//! keep the test short: `/health` checked every 200 ms, two failures to take an instance
//! out (0.2 to 0.4 s after it starts answering 503, plus a check's own time), so
//! `DRAIN_DELAY_MS` is 1500, far above that; a refused connect is retried on the other
//! instance (`retry-on conn-failure`: the request never reached a server), nothing else is
//! retried.
//!
//! Needs `haproxy` (Debian package `haproxy`; `.ci/run` installs it): without it the test
//! fails and says so, because a rolling deploy that was not tried is no evidence. The
//! balancer gets its listening socket from this test as its standard input (`bind fd@0`),
//! so no port is guessed; the instances bind port 0 the first time and their successors
//! the port the first one got. Every wait is bounded.

mod support;

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use support::{PATIENCE, Reader, Server};

/// Rolls in the test: instance 1, 2, then 1 again (its successor is stopped in turn).
const ROLLS: usize = 3;

/// The settings each instance runs with: a drain delay well above the balancer's
/// detection time, and a keep-alive timeout above the balancer's idle hold (see the README).
const INSTANCE_ENV: &[(&str, &str)] = &[
    ("DRAIN_DELAY_MS", "1500"),
    ("SHUTDOWN_TIMEOUT_MS", "10000"),
    ("KEEPALIVE_TIMEOUT_MS", "75000"),
    ("RUST_LOG", "info"),
];

/// How long a client waits for one answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

#[test]
fn rolling_restart_behind_haproxy_loses_no_request() {
    let haproxy = find_haproxy().unwrap_or_else(|| {
        panic!(
            "haproxy not found in PATH, /usr/sbin or /usr/local/sbin: this test needs a real \
             load balancer. Install it (Debian/Ubuntu: apt-get install -y haproxy; .ci/run \
             does this when it is missing), then run the tests again."
        )
    });
    let dir = TempDir::new();
    let mut instances = [start_instance(0), start_instance(0)];
    let ports: Vec<u16> = instances.iter().map(|s| s.addr.port()).collect();
    let balancer = Balancer::start(&haproxy, &dir.0, &ports);
    for name in ["s1", "s2"] {
        balancer.wait_status(name, "UP");
    }

    let load = Load::start(balancer.addr);
    thread::sleep(Duration::from_millis(500)); // load before the first roll
    for roll in 0..ROLLS {
        let i = roll % instances.len();
        let name = format!("s{}", i + 1);
        instances[i].signal("TERM");
        let status = instances[i].wait_exit(PATIENCE);
        assert_eq!(
            status.code(),
            Some(0),
            "roll {roll}: {name} exited with {status:?}; log:\n{}",
            instances[i].log_text()
        );
        instances[i] = start_instance(ports[i]);
        balancer.wait_status(&name, "UP");
    }
    thread::sleep(Duration::from_millis(500)); // load after the last roll
    let (ok, failures) = load.finish();

    assert!(
        failures.is_empty(),
        "{} of {} requests failed during {ROLLS} rolls (first 20): {:#?}\nhaproxy log:\n{}",
        failures.len(),
        ok + failures.len(),
        &failures[..failures.len().min(20)],
        fs::read_to_string(dir.0.join("haproxy.log")).unwrap_or_default()
    );
    assert!(
        ok >= 100,
        "only {ok} requests went through: the load did not run"
    );
}

/// An instance on `127.0.0.1:port` (0: any free port), with [`INSTANCE_ENV`]. The second
/// `--listen` wins over the one `support::command` puts first.
fn start_instance(port: u16) -> Server {
    let listen = format!("127.0.0.1:{port}");
    Server::start(INSTANCE_ENV, &["--listen", &listen])
}

/// `haproxy` from PATH or the sbin directories a non-root PATH often lacks.
fn find_haproxy() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|dir| dir.join("haproxy"))
        .find(|candidate| candidate.is_file())
}

/// A directory of our own for the config and the stats socket, removed at the end.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let dir =
            std::env::temp_dir().join(format!("lastcall-rollout-{}-{nanos}", std::process::id()));
        fs::create_dir(&dir).expect("create the test's directory");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// HAProxy in the foreground (`-db`), its frontend socket bound here and handed over as
/// its standard input. Killed on drop (the process we started, by PID).
struct Balancer {
    child: Child,
    addr: SocketAddr,
    stats: PathBuf,
}

impl Balancer {
    fn start(haproxy: &Path, dir: &Path, ports: &[u16]) -> Balancer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the balancer's socket");
        let addr = listener.local_addr().unwrap();
        let stats = dir.join("admin.sock");
        let servers: String = ports
            .iter()
            .enumerate()
            .map(|(i, port)| {
                format!(
                    "    server s{} 127.0.0.1:{port} check inter 200ms fall 2 rise 2\n",
                    i + 1
                )
            })
            .collect();
        let config = format!(
            "global\n\
             \x20   stats socket {stats} mode 600 level admin\n\
             defaults\n\
             \x20   mode http\n\
             \x20   timeout connect 1s\n\
             \x20   timeout client 10s\n\
             \x20   timeout server 10s\n\
             \x20   timeout http-keep-alive 10s\n\
             \x20   timeout check 150ms\n\
             \x20   retries 3\n\
             \x20   option redispatch 1\n\
             \x20   retry-on conn-failure\n\
             frontend web\n\
             \x20   bind fd@0\n\
             \x20   default_backend lastcall\n\
             backend lastcall\n\
             \x20   balance roundrobin\n\
             \x20   option httpchk\n\
             \x20   http-check send meth GET uri /health ver HTTP/1.1 hdr Host localhost\n\
             \x20   http-check expect status 200\n\
             {servers}",
            stats = stats.display()
        );
        let config_path = dir.join("haproxy.cfg");
        fs::write(&config_path, config).expect("write haproxy.cfg");
        let log = fs::File::create(dir.join("haproxy.log")).expect("create haproxy.log");
        let child = Command::new(haproxy)
            .arg("-db")
            .arg("-f")
            .arg(&config_path)
            .stdin(Stdio::from(OwnedFd::from(listener)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn haproxy");
        let balancer = Balancer { child, addr, stats };
        let start = Instant::now();
        while balancer.statuses().is_none() {
            assert!(
                start.elapsed() < PATIENCE,
                "haproxy's stats socket did not answer within {PATIENCE:?}"
            );
            thread::sleep(Duration::from_millis(20));
        }
        balancer
    }

    /// (server, status) pairs of the `lastcall` backend from `show stat`, or None while
    /// the stats socket does not answer.
    fn statuses(&self) -> Option<Vec<(String, String)>> {
        let mut socket = UnixStream::connect(&self.stats).ok()?;
        socket.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
        socket.write_all(b"show stat\n").ok()?;
        let mut csv = String::new();
        socket.read_to_string(&mut csv).ok()?;
        let mut lines = csv.lines();
        let header: Vec<&str> = lines.next()?.strip_prefix("# ")?.split(',').collect();
        let column = |name: &str| header.iter().position(|h| *h == name);
        let (px, sv, status) = (column("pxname")?, column("svname")?, column("status")?);
        Some(
            lines
                .map(|line| line.split(',').collect::<Vec<_>>())
                .filter(|f| f.len() > status && f[px] == "lastcall")
                .filter(|f| f[sv] != "BACKEND" && f[sv] != "FRONTEND")
                .map(|f| (f[sv].to_string(), f[status].to_string()))
                .collect(),
        )
    }

    /// Waits until `server` is exactly `wanted` in the balancer, at most [`PATIENCE`].
    fn wait_status(&self, server: &str, wanted: &str) {
        let start = Instant::now();
        loop {
            let statuses = self.statuses().unwrap_or_default();
            if statuses.iter().any(|(s, st)| s == server && st == wanted) {
                return;
            }
            assert!(
                start.elapsed() < PATIENCE,
                "{server} not {wanted} in haproxy within {PATIENCE:?}: {statuses:?}"
            );
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Client threads through the balancer: keep-alive `/plaintext`, a new connection per
/// `/json`, and keep-alive `/work?ms=200` (requests in flight at every signal).
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<()>>,
    ok: Arc<Mutex<usize>>,
    failures: Arc<Mutex<Vec<String>>>,
}

impl Load {
    fn start(addr: SocketAddr) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(Mutex::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let plan = [
            ("/plaintext", true),
            ("/plaintext", true),
            ("/json", false),
            ("/work?ms=200", true),
        ];
        let threads = plan
            .into_iter()
            .map(|(path, keep_alive)| {
                let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
                thread::spawn(move || client(addr, path, keep_alive, &stop, &ok, &failures))
            })
            .collect();
        Load {
            stop,
            threads,
            ok,
            failures,
        }
    }

    /// Stops the clients; how many requests succeeded, and what each failure was.
    fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().expect("client thread");
        }
        let ok = *self.ok.lock().unwrap();
        let failures = self.failures.lock().unwrap().clone();
        (ok, failures)
    }
}

/// One client: requests until `stop`, reconnecting after `Connection: close` or an error.
/// Every request that does not end in a 2xx with its whole body is a failure.
fn client(
    addr: SocketAddr,
    path: &str,
    keep_alive: bool,
    stop: &AtomicBool,
    ok: &Mutex<usize>,
    failures: &Mutex<Vec<String>>,
) {
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: lb\r\n{}\r\n",
        if keep_alive {
            ""
        } else {
            "Connection: close\r\n"
        }
    );
    let mut conn: Option<Reader> = None;
    // Bounded by the stop flag, and by a count no run reaches.
    for _ in 0..1_000_000 {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let reader = match conn.take() {
            Some(reader) => Ok(reader),
            None => TcpStream::connect_timeout(&addr, CLIENT_TIMEOUT).map(|stream| {
                stream.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
                stream.set_write_timeout(Some(CLIENT_TIMEOUT)).unwrap();
                Reader::new(stream)
            }),
        };
        let mut reader = match reader {
            Ok(reader) => reader,
            Err(e) => {
                failures
                    .lock()
                    .unwrap()
                    .push(format!("{path}: connect: {e}"));
                continue;
            }
        };
        if let Err(e) = reader.stream.write_all(request.as_bytes()) {
            failures.lock().unwrap().push(format!("{path}: send: {e}"));
            continue;
        }
        match reader.response() {
            Ok(r) if (200..300).contains(&r.status) => {
                *ok.lock().unwrap() += 1;
                if keep_alive && !r.closes() {
                    conn = Some(reader);
                }
            }
            Ok(r) => failures.lock().unwrap().push(format!(
                "{path}: {} from {} {:?}",
                r.status,
                r.header("server").unwrap_or("the balancer"),
                r.body_text()
            )),
            Err(e) => failures.lock().unwrap().push(format!("{path}: {e:?}")),
        }
        thread::sleep(Duration::from_millis(2));
    }
}
