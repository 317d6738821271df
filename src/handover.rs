//! Starting a successor and waiting, without blocking, until it says it is ready: the
//! parent's half of a hand-over.
//!
//! What it is: [`Successor::start`] runs a command (the binary at the path this process
//! was started from, with its arguments) with the listening socket as its standard input
//! and `NOTIFY_SOCKET` naming a datagram socket of ours; [`Successor::check`], called by the
//! event loop whenever that socket is readable or its timer fires, says whether the
//! successor is ready (it sent `READY=1`, as it would to systemd), has failed (it exited,
//! or the time ran out), or is still starting. The listener crosses `exec` as standard
//! input, the inetd convention (see `inherit.rs`), so no descriptor number has to be
//! named, and no `unsafe` is needed on either side.
//!
//! What it is not: it decides nothing about the shutdown that follows a ready successor;
//! the server does (it stops without taking the accept queue, which is the successor's
//! now).
//!
//! Invariant: a successor that failed is killed if still running and always reaped, so a
//! failed hand-over leaves no process behind; the server keeps serving as before.

use std::io;
use std::net::TcpListener;
use std::os::fd::AsFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The environment variable that tells a successor where its supervisor's notifications
/// go once it has told its parent it is ready: the parent's own `NOTIFY_SOCKET` (systemd's),
/// passed on, since the successor's `NOTIFY_SOCKET` is the parent's. Empty when the parent
/// had no supervisor.
pub const SUPERVISOR_SOCKET: &str = "LASTCALL_SUPERVISOR_NOTIFY_SOCKET";

/// A successor being started.
#[derive(Debug)]
pub struct Successor {
    child: Child,
    /// Where it says `READY=1`: an abstract socket, so nothing is left on disk.
    socket: UnixDatagram,
    deadline: Instant,
}

/// Where a successor stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Still starting: check again when the socket is readable or at [`Successor::deadline`].
    Starting,
    /// It said `READY=1`: it serves from the listener now.
    Ready,
    /// It exited, could not be heard, or was not ready in time; the reason, for the log,
    /// completes "the successor …". It has been killed (if need be) and reaped.
    Failed(String),
}

impl Successor {
    /// Runs `command` with `listener` as its standard input and `NOTIFY_SOCKET` set to a
    /// fresh socket of ours; it has until `now + timeout` to say `READY=1`. The command's
    /// other settings (arguments, environment, standard output and error) are the
    /// caller's.
    pub fn start(
        mut command: Command,
        listener: &TcpListener,
        supervisor: Option<&str>,
        now: Instant,
        timeout: Duration,
    ) -> io::Result<Successor> {
        // Unique per process and attempt: abstract names are system-wide.
        static ATTEMPTS: AtomicU64 = AtomicU64::new(0);
        let attempt = ATTEMPTS.fetch_add(1, Ordering::Relaxed);
        let name = format!("lastcall-handover-{}-{attempt}", std::process::id());
        let socket = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(&name)?)?;
        socket.set_nonblocking(true)?;
        command
            .stdin(Stdio::from(listener.as_fd().try_clone_to_owned()?))
            .env("NOTIFY_SOCKET", format!("@{name}"));
        // Always set, empty when there is no supervisor: its presence is what tells the
        // successor that its `NOTIFY_SOCKET` is a parent's, to be left once it is ready.
        command.env(SUPERVISOR_SOCKET, supervisor.unwrap_or(""));
        let child = command.spawn()?;
        Ok(Successor {
            child,
            socket,
            deadline: now + timeout,
        })
    }

    /// The successor's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The socket it says `READY=1` on, for the loop to register (readable).
    pub fn socket(&self) -> &UnixDatagram {
        &self.socket
    }

    /// When the successor's time is up, for the loop's timer.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Reads what the successor said, and whether it is still alive and in time. Never
    /// blocks. After `Ready` or `Failed`, the successor is the caller's no more.
    pub fn check(&mut self, now: Instant) -> Progress {
        // An exit first: it is the reason, whenever we look.
        match self.child.try_wait() {
            Ok(Some(status)) => return Progress::Failed(format!("exited ({status})")),
            Ok(None) => {}
            Err(e) => return self.fail(format!("could not be waited for: {e}")),
        }
        // Then the time limit: a `READY=1` read after it is late, whenever it was sent
        // (a parent too busy to look is no reason to stretch the limit).
        if now >= self.deadline {
            return self.fail("was not ready in time".to_owned());
        }
        let mut buf = [0u8; 4096];
        loop {
            match self.socket.recv(&mut buf) {
                Ok(n) => {
                    let message = String::from_utf8_lossy(&buf[..n]);
                    // sd_notify(3): newline-separated assignments, any order.
                    for line in message.lines() {
                        if line == "READY=1" {
                            return Progress::Ready;
                        }
                        if let Some(status) = line.strip_prefix("STATUS=") {
                            log::info!("successor {}: {status}", self.pid());
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.fail(format!("could not be heard: {e}")),
            }
        }
        Progress::Starting
    }

    /// Gives up on the successor: kills it if it still runs, and reaps it.
    pub fn abandon(mut self) {
        let _ = self.fail(String::new());
    }

    fn fail(&mut self, reason: String) -> Progress {
        let _ = self.child.kill();
        let _ = self.child.wait();
        Progress::Failed(reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    /// A successor played by a shell: `script` runs with the notify socket in
    /// `$NOTIFY_SOCKET` (`@name`); python3 sends the datagram, as a real one would.
    fn successor(script: &str, timeout: Duration) -> (TcpListener, Successor) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut command = Command::new("sh");
        command.args(["-c", script]);
        let successor =
            Successor::start(command, &listener, None, Instant::now(), timeout).unwrap();
        (listener, successor)
    }

    const SAY_READY: &str = "python3 -c \"import os, socket; \
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); \
        s.sendto(b'STATUS=warming up\\nREADY=1', b'\\0' + os.environ['NOTIFY_SOCKET'][1:].encode())\"";

    fn wait(successor: &mut Successor) -> Progress {
        let start = Instant::now();
        loop {
            match successor.check(Instant::now()) {
                Progress::Starting => {}
                done => return done,
            }
            assert!(start.elapsed() < Duration::from_secs(10), "no verdict");
            thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn a_successor_that_says_ready_is_ready() {
        let script = format!("{SAY_READY}; sleep 5");
        let (_listener, mut successor) = successor(&script, Duration::from_secs(10));
        assert_eq!(wait(&mut successor), Progress::Ready);
        successor.abandon();
    }

    #[test]
    fn the_listener_arrives_as_standard_input() {
        // The successor accepts one client from its standard input and answers it.
        let script = "python3 -c \"import socket; s = socket.socket(fileno=0); \
            c, _ = s.accept(); c.sendall(b'hello from the successor')\"";
        let (listener, mut successor) = successor(script, Duration::from_secs(10));
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let mut got = String::new();
        io::Read::read_to_string(&mut client, &mut got).unwrap();
        assert_eq!(got, "hello from the successor");
        assert!(matches!(wait(&mut successor), Progress::Failed(r) if r.starts_with("exited")));
    }

    #[test]
    fn a_successor_that_exits_or_stays_silent_has_failed_and_is_reaped() {
        let (_l, mut exits) = successor("exit 1", Duration::from_secs(10));
        let failed = wait(&mut exits);
        assert!(
            matches!(&failed, Progress::Failed(r) if r.contains("exit status: 1")),
            "{failed:?}"
        );

        let (_l, mut silent) = successor("sleep 30", Duration::from_millis(200));
        let pid = silent.pid();
        let failed = wait(&mut silent);
        assert_eq!(failed, Progress::Failed("was not ready in time".to_owned()));
        // Killed and reaped: no such process any more.
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    }
}
