//! The hand-over on SIGHUP, socket activation and `sd_notify`, against the real binary:
//! real signals, raw sockets, the kernel's own view of the listening socket, and systemd's
//! own `systemd-socket-activate`.
//!
//! Every generation of the server writes to the same standard error (a successor inherits
//! it), so one log holds them all; successors are not this test's children, so each test
//! keeps a [`Successors`] guard that stops any still running when it ends.

mod support;

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use support::{PATIENCE, ReadError, Reader, Server, command_for, get, signal};

/// Stops the successors a test's server started, when the test ends however it ends.
struct Successors<'a>(&'a Server);

impl Successors<'_> {
    /// The successors named in the log so far, in order.
    fn pids(&self) -> Vec<u32> {
        pids_after(&self.0.log_text(), "started successor ")
    }

    /// Waits for the `n`th successor (from 1) to be ready; returns its process id.
    fn ready(&self, n: usize) -> u32 {
        let start = Instant::now();
        loop {
            let log = self.0.log_text();
            let ready: Vec<u32> = log
                .lines()
                .filter(|l| l.contains(" is ready: it accepts"))
                .flat_map(|l| pids_after(l, "successor "))
                .collect();
            if let Some(pid) = ready.get(n - 1) {
                return *pid;
            }
            assert!(
                start.elapsed() < PATIENCE,
                "successor {n} never ready; log:\n{log}"
            );
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Successors<'_> {
    fn drop(&mut self) {
        for pid in self.pids() {
            if alive(pid) {
                signal(pid, "KILL");
            }
        }
    }
}

/// The numbers that follow `marker` in `text`, one per occurrence.
fn pids_after(text: &str, marker: &str) -> Vec<u32> {
    text.match_indices(marker)
        .filter_map(|(at, _)| {
            let rest = &text[at + marker.len()..];
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .collect()
}

fn alive(pid: u32) -> bool {
    // A zombie is gone for our purposes: it serves nothing.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| !stat.contains(") Z "))
}

fn wait_gone(pid: u32) {
    let start = Instant::now();
    while alive(pid) {
        assert!(start.elapsed() < PATIENCE, "process {pid} did not exit");
        thread::sleep(Duration::from_millis(10));
    }
}

/// The inode of the socket listening on `port`, as the kernel lists it in /proc/net/tcp:
/// the same number before and after a hand-over means the same socket and queue.
fn listening_inode(port: u16) -> u64 {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table
        .lines()
        .skip(1)
        .find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = fields.get(1)?.rsplit(':').next()?;
            let listening = fields.get(3) == Some(&"0A");
            (listening && u16::from_str_radix(local_port, 16).ok()? == port)
                .then(|| fields.get(9)?.parse().ok())?
        })
        .unwrap_or_else(|| panic!("nothing listens on port {port}"))
}

/// What a load client saw, by kind.
#[derive(Default)]
struct Tally {
    ok: AtomicUsize,
    /// A reused keep-alive connection closed (EOF, or a reset: the request reached a
    /// socket already closed) before any byte of a response: the race every HTTP/1.1
    /// client retries (RFC 9112 §9.3.1); retried here, and counted.
    retried: AtomicUsize,
    failed: AtomicUsize,
}

/// One load client until `stop`: keep-alive (`reuse`) or a new connection per request,
/// asking for `path`. Any refused connect, reset, cut response or wrong status is a
/// failure, printed.
fn client(addr: SocketAddr, path: &'static str, reuse: bool, stop: &AtomicBool, tally: &Tally) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n");
    let mut conn: Option<Reader> = None;
    while !stop.load(Ordering::Relaxed) {
        let reused = conn.is_some();
        let reader = match conn.as_mut() {
            Some(reader) => reader,
            None => match TcpStream::connect_timeout(&addr, PATIENCE) {
                Ok(stream) => {
                    stream.set_read_timeout(Some(PATIENCE)).unwrap();
                    conn.insert(Reader::new(stream))
                }
                Err(e) => {
                    eprintln!("connect to {addr}: {e}");
                    tally.failed.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            },
        };
        let sent = reader.try_send(request.as_bytes());
        let outcome = sent.map_err(|e| ReadError::Io(e.kind()));
        match outcome.and_then(|()| reader.response()) {
            Ok(r) if r.status == 200 => {
                tally.ok.fetch_add(1, Ordering::Relaxed);
                if r.closes() || !reuse {
                    conn = None;
                }
            }
            Err(ReadError::ClosedBeforeResponse | ReadError::Io(ErrorKind::BrokenPipe))
                if reused =>
            {
                tally.retried.fetch_add(1, Ordering::Relaxed);
                conn = None;
            }
            other => {
                eprintln!("{path}: {:?}", other.map(|r| r.status));
                tally.failed.fetch_add(1, Ordering::Relaxed);
                conn = None;
            }
        }
    }
}

/// Under load — keep-alive clients, a client opening a connection per request, slow
/// requests in flight — five hand-overs in a row: every request answered in full, no
/// connect refused, no response cut; every old generation exits 0; one listening socket
/// throughout.
#[test]
fn five_hand_overs_under_load_lose_nothing() {
    let server = Server::start(&[], &[]);
    let successors = Successors(&server);
    let addr = server.addr;
    let inode = listening_inode(addr.port());
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let kinds = [
        ("/plaintext", true),
        ("/plaintext", true),
        ("/json", false),
        ("/work?ms=200", true),
        ("/work?ms=200", false),
    ];
    let clients: Vec<_> = kinds
        .into_iter()
        .map(|(path, reuse)| {
            let (stop, tally) = (Arc::clone(&stop), Arc::clone(&tally));
            thread::spawn(move || client(addr, path, reuse, &stop, &tally))
        })
        .collect();

    let mut current = server.pid();
    for n in 1..=5 {
        thread::sleep(Duration::from_millis(300));
        signal(current, "HUP");
        let next = successors.ready(n);
        wait_gone(current);
        assert_eq!(listening_inode(addr.port()), inode, "hand-over {n}");
        current = next;
    }
    thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().unwrap();
    }
    signal(current, "TERM");
    wait_gone(current);

    let log = server.log_text();
    let reports: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("shutdown report"))
        .collect();
    assert_eq!(reports.len(), 6, "{log}");
    assert!(reports.iter().all(|r| r.ends_with("exit 0")), "{log}");
    let (ok, retried) = (
        tally.ok.load(Ordering::Relaxed),
        tally.retried.load(Ordering::Relaxed),
    );
    assert_eq!(
        tally.failed.load(Ordering::Relaxed),
        0,
        "{ok} ok; log:\n{log}"
    );
    assert!(ok > 50, "{ok} answered");
    eprintln!("5 hand-overs: {ok} answered, {retried} keep-alive requests retried");
}

/// A copy of the binary in a directory of the test's own, to be replaced.
fn binary_copy(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lastcall-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("lastcall");
    std::fs::copy(env!("CARGO_BIN_EXE_lastcall"), &path).unwrap();
    path
}

/// Puts a shell script where the binary was, the way a deploy drops a new build in place
/// (write beside it, rename over it).
fn replace_with_script(path: &Path, script: &str) {
    let beside = path.with_extension("new");
    std::fs::write(&beside, format!("#!/bin/sh\n{script}\n")).unwrap();
    let mode = std::os::unix::fs::PermissionsExt::from_mode(0o755);
    std::fs::set_permissions(&beside, mode).unwrap();
    std::fs::rename(&beside, path).unwrap();
}

/// A successor that exits, then one that never says it is ready: each time the old
/// process logs why, keeps serving on the same connection, and leaves no process behind.
#[test]
fn a_failed_successor_leaves_the_old_process_serving() {
    let path = binary_copy("failing");
    let mut server =
        Server::start_command(&mut command_for(&path, &[("HANDOVER_TIMEOUT_MS", "500")]));
    let successors = Successors(&server);
    let mut kept = Reader::new(server.connect());
    let ask = b"GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n";

    replace_with_script(&path, "exit 1");
    server.signal("HUP");
    server.wait_for_log("exited (exit status: 1); still serving");
    kept.send(ask);
    assert_eq!(kept.response().unwrap().status, 200);

    replace_with_script(&path, "sleep 30");
    server.signal("HUP");
    server.wait_for_log("was not ready in time; still serving");
    kept.send(ask);
    assert_eq!(kept.response().unwrap().status, 200);
    assert_eq!(get(&server, "/health").status, 200);
    for pid in successors.pids() {
        assert!(!alive(pid), "successor {pid} left running");
    }
    drop(successors);

    server.signal("TERM");
    assert_eq!(server.wait_exit(PATIENCE).code(), Some(0));
    std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
}

/// A process that came from a hand-over drains exactly as a first one: a request in
/// flight at its SIGTERM finishes with `Connection: close`, it exits 0, and nothing is
/// left listening.
#[test]
fn sigterm_to_a_successor_drains_like_a_first_generation() {
    let server = Server::start(&[], &[]);
    let successors = Successors(&server);
    signal(server.pid(), "HUP");
    let successor = successors.ready(1);
    wait_gone(server.pid());

    let mut work = Reader::new(server.connect());
    work.send(b"GET /work?ms=300 HTTP/1.1\r\nHost: t\r\n\r\n");
    thread::sleep(Duration::from_millis(100));
    signal(successor, "TERM");
    let response = work.response().expect("the request in flight is answered");
    assert_eq!(response.status, 200);
    assert!(response.closes());
    wait_gone(successor);
    let log = server.log_text();
    let last = log.lines().rfind(|l| l.contains("shutdown report"));
    assert!(
        last.is_some_and(|r| r.contains("drained=1") && r.ends_with("exit 0")),
        "{log}"
    );
    assert!(TcpStream::connect(server.addr).is_err(), "still listening");
}

/// The notifications a test supervisor receives: an abstract datagram socket.
struct Supervisor {
    socket: UnixDatagram,
    name: String,
}

impl Supervisor {
    fn new(tag: &str) -> Supervisor {
        let name = format!("lastcall-test-{tag}-{}", std::process::id());
        let socket =
            UnixDatagram::bind_addr(&UnixAddr::from_abstract_name(&name).unwrap()).unwrap();
        socket.set_read_timeout(Some(PATIENCE)).unwrap();
        Supervisor {
            socket,
            name: format!("@{name}"),
        }
    }

    /// The next message, or a panic naming what was expected.
    fn next(&self, expecting: &str) -> String {
        let mut buf = [0u8; 1024];
        let n = self
            .socket
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no notification ({e}); expected {expecting:?}"));
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    /// Reads messages until one contains `wanted`, skipping the others (watchdog feeds,
    /// another generation's last status).
    fn until(&self, wanted: &str) -> String {
        loop {
            let message = self.next(wanted);
            if message.contains(wanted) {
                return message;
            }
        }
    }
}

/// lastcall started by `systemd-socket-activate --inetd` (the listener on standard input,
/// as `StandardInput=socket` gives it) on the first connect to `port`, with `env` added;
/// returns the tool's process (lastcall, once it has exec'd) and a client that was served.
fn socket_activated(port: u16, env: &[String]) -> (Child, Reader) {
    let mut tool = Command::new("systemd-socket-activate");
    tool.args(["--inetd", "-l", &format!("127.0.0.1:{port}")]);
    for pair in env {
        tool.args(["-E", pair]);
    }
    let child = tool
        .arg(env!("CARGO_BIN_EXE_lastcall"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("systemd-socket-activate (Debian: apt-get install systemd)");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    // The tool listens at once and starts lastcall on the first connection.
    let start = Instant::now();
    let stream = loop {
        match TcpStream::connect(addr) {
            Ok(stream) => break stream,
            Err(_) if start.elapsed() < PATIENCE => thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("systemd-socket-activate never listened: {e}"),
        }
    };
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut reader = Reader::new(stream);
    reader.send(b"GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(reader.response().unwrap().body_text(), "Hello, World!");
    (child, reader)
}

/// A free loopback port (free when asked; nothing else here binds it meanwhile).
fn free_port() -> u16 {
    let probe = TcpListener::bind("127.0.0.1:0").unwrap();
    probe.local_addr().unwrap().port()
}

/// The exit status and standard error of a socket-activated lastcall after its SIGTERM.
fn stop_activated(mut child: Child) -> (Option<i32>, String) {
    signal(child.id(), "TERM");
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    (child.wait().unwrap().code(), stderr)
}

/// Socket activation with systemd's own tool and `NOTIFY_SOCKET`: serves from the
/// inherited socket, and the notifications arrive in order with their content, the
/// watchdog fed in between. The tool keeps no copy of the socket, so the shutdown serves
/// the queue and closes it.
#[test]
fn socket_activated_with_notify_and_watchdog() {
    let port = free_port();
    let supervisor = Supervisor::new("activate");
    let env = [
        format!("NOTIFY_SOCKET={}", supervisor.name),
        "WATCHDOG_USEC=200000".to_owned(),
        "RUST_LOG=info".to_owned(),
    ];
    let (child, _served) = socket_activated(port, &env);
    let ready = supervisor.next("READY=1");
    assert_eq!(
        ready,
        format!("READY=1\nSTATUS=serving on 127.0.0.1:{port} with 1 loops")
    );
    assert_eq!(supervisor.next("WATCHDOG=1"), "WATCHDOG=1");
    // The tool execs lastcall in its own place: the child is lastcall now.
    let (code, log) = stop_activated(child);
    assert_eq!(
        supervisor.until("STOPPING=1"),
        "STOPPING=1\nSTATUS=draining: SIGTERM received"
    );
    assert_eq!(supervisor.until("STATUS=stopped"), "STATUS=stopped: exit 0");
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("(inherited listener)"), "{log}");
    assert!(
        log.contains("listener closed: new connections are refused"),
        "{log}"
    );
}

/// Under a systemd service (`INVOCATION_ID` set), a socket on standard input comes from a
/// socket unit, which keeps it: the shutdown leaves the queue for the next start.
#[test]
fn a_socket_kept_by_systemd_keeps_its_queue_at_the_shutdown() {
    let env = ["INVOCATION_ID=5f0c".to_owned(), "RUST_LOG=info".to_owned()];
    let (child, _served) = socket_activated(free_port(), &env);
    thread::sleep(Duration::from_millis(100));
    let (code, log) = stop_activated(child);
    assert_eq!(code, Some(0), "{log}");
    assert!(
        log.contains("listener left to the socket's keeper (systemd's socket unit)"),
        "{log}"
    );
}

/// A hand-over under a supervisor: it hears the reload begin, the successor's process id
/// as the new main process, and the successor's own readiness, in that order.
#[test]
fn a_hand_over_tells_the_supervisor_the_new_main_process() {
    let supervisor = Supervisor::new("handover");
    let server = Server::start(&[("NOTIFY_SOCKET", &supervisor.name)], &[]);
    let successors = Successors(&server);
    assert!(
        supervisor
            .next("READY=1")
            .starts_with("READY=1\nSTATUS=serving on")
    );
    signal(server.pid(), "HUP");
    let successor = successors.ready(1);
    assert_eq!(
        supervisor.next("RELOADING=1"),
        "RELOADING=1\nSTATUS=starting a successor"
    );
    // Then, from two processes, so interleaved any way: the parent's new main process and
    // its own drain (and, later, its last status), and the successor's own word.
    let own = format!("MAINPID={successor}\nREADY=1\nSTATUS=serving on");
    let mut told: Vec<String> = Vec::new();
    // Until both the successor's word and the parent's drain have come; each read is
    // bounded by the socket's timeout, and the count by the messages there can be.
    while told.len() < 10
        && !(told.iter().any(|m| m.starts_with(&own))
            && told.iter().any(|m| m.starts_with("STOPPING=1")))
    {
        told.push(supervisor.next("MAINPID or STOPPING"));
    }
    let at = |wanted: &str| {
        told.iter()
            .position(|m| m == wanted)
            .unwrap_or_else(|| panic!("no {wanted:?} in {told:?}"))
    };
    let handed = at(&format!(
        "MAINPID={successor}\nREADY=1\nSTATUS=handed over to {successor}; draining"
    ));
    let stopping = at(&format!(
        "STOPPING=1\nSTATUS=draining: successor {successor} ready"
    ));
    let handing = at(&format!("STATUS=handing over to {successor}"));
    assert!(handing < handed && handed < stopping, "{told:?}");
    assert!(told.iter().any(|m| m.starts_with(&own)), "{told:?}");
    wait_gone(server.pid());
    signal(successor, "TERM");
    assert_eq!(
        supervisor.until("STOPPING=1"),
        "STOPPING=1\nSTATUS=draining: SIGTERM received"
    );
    wait_gone(successor);
}
