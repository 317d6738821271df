//! The process's relations beyond its clients: the supervisor that started it, told how
//! the server is doing, and the successor a SIGHUP starts.
//!
//! What it is: [`Supervision`], owned by the coordinator, which
//! - speaks `sd_notify` (see `notify.rs`) when `NOTIFY_SOCKET` is set: `READY=1` once the
//!   loops run, `STATUS=` lines a person reads in `systemctl status`, `STOPPING=1` at a
//!   shutdown, `RELOADING=1` and then `MAINPID=` during a hand-over, and `WATCHDOG=1` from
//!   loop 0's turns when `WATCHDOG_USEC` asks for it (a stuck loop 0 stops feeding it, and
//!   systemd restarts the service);
//! - starts a successor on SIGHUP (see `handover.rs`): the binary now at the path this
//!   process was started from, with the same arguments and environment, the listener as
//!   its standard input; and says when it is ready, so the coordinator can stop this
//!   generation, or that it failed, so this one serves on.
//!
//! Who is told what, in a hand-over: the successor's `NOTIFY_SOCKET` is ours, so its
//! `READY=1` reaches us, exactly as it would reach systemd; our own supervisor's socket
//! (if any) travels in `LASTCALL_SUPERVISOR_NOTIFY_SOCKET`, and the successor speaks to it
//! from then on. We tell the supervisor `MAINPID=` of the successor, so systemd follows
//! the new main process (`NotifyAccess=all` in the unit).
//!
//! Invariants: one successor at a time; none during a shutdown; nothing here blocks (the
//! successor is checked when its socket is readable or its time is up).

use std::ffi::OsString;
use std::io;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::handover::{Progress, SUPERVISOR_SOCKET, Successor};
use crate::inherit::KEPT_ELSEWHERE;
use crate::notify::{Notifier, watchdog_interval};
use crate::stats::{Handover, Stats};

/// How often a successor is looked at besides its socket: often enough to see an early
/// exit quickly, rarely enough to cost nothing.
const SUCCESSOR_CHECK: Duration = Duration::from_millis(50);

/// What the supervisor and the successor need from the coordinator, and what they said.
#[derive(Debug)]
pub(super) struct Supervision {
    /// Where notifications go now: `NOTIFY_SOCKET`, then (a successor, once it has told
    /// its parent) the supervisor's socket it was given. Its name is what a successor of
    /// ours is told to speak to after us.
    notifier: Option<Notifier>,
    /// Set when we are a successor: the supervisor's socket (empty: none), used once the
    /// parent knows we are ready.
    supervisor_after: Option<String>,
    watchdog: Option<(Duration, Instant)>,
    /// A copy of the listener while serving, for a successor's standard input.
    listener: Option<TcpListener>,
    /// Another holder keeps the listener (see `inherit::kept_elsewhere`); a successor is
    /// told, so that it knows too.
    kept: bool,
    exe: PathBuf,
    args: Vec<OsString>,
    timeout: Duration,
    successor: Option<Successor>,
    /// When a starting successor is next looked at, besides when its socket rings.
    check_at: Option<Instant>,
    /// Where hand-overs are counted (`lastcall_handovers_total`).
    stats: Arc<Stats>,
}

/// What a successor's check came to.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Succession {
    /// Nothing new.
    Pending,
    /// The successor (process id) serves from the listener: stop this generation.
    Ready(u32),
}

impl Supervision {
    /// From the process environment: `NOTIFY_SOCKET`, `WATCHDOG_USEC`/`WATCHDOG_PID`, and
    /// the path and arguments this process was started with (read now, at start-up: once
    /// a new build replaces the file, `/proc/self/exe` names a deleted one).
    pub(super) fn new(
        listener: &TcpListener,
        kept: bool,
        timeout: Duration,
        now: Instant,
        stats: Arc<Stats>,
    ) -> Supervision {
        let env = |key: &str| std::env::var(key).ok();
        let notifier = Notifier::from_env(env).unwrap_or_else(|e| {
            log::warn!("NOTIFY_SOCKET unusable: {e}; no notifications");
            None
        });
        let watchdog = watchdog_interval(env, std::process::id()).map(|every| (every, now));
        let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
        Supervision {
            notifier,
            supervisor_after: env(SUPERVISOR_SOCKET),
            watchdog,
            listener: listener.try_clone().ok(),
            kept,
            exe,
            args: std::env::args_os().skip(1).collect(),
            timeout,
            successor: None,
            check_at: None,
            stats,
        }
    }

    /// Tells the supervisor we serve. A successor tells its parent first, then speaks to
    /// the parent's supervisor from here on.
    pub(super) fn ready(&mut self, status: &str) {
        self.notify(&format!("READY=1\nSTATUS={status}"));
        if let Some(name) = self.supervisor_after.take() {
            self.notifier = Some(name)
                .filter(|name| !name.is_empty())
                .and_then(|name| Notifier::to(&name).ok());
            self.notify(&format!(
                "MAINPID={}\nREADY=1\nSTATUS={status}",
                std::process::id()
            ));
        }
    }

    /// A shutdown began: tell the supervisor, and let go of our copy of the listener so
    /// the socket closes with the loops' copies (or lives on in a successor's).
    pub(super) fn stopping(&mut self, why: &str) {
        self.listener = None;
        if let Some(successor) = self.successor.take() {
            log::info!("hand-over to {} abandoned: shutting down", successor.pid());
            successor.abandon();
            self.stats.handover(Handover::Failed);
        }
        self.notify(&format!("STOPPING=1\nSTATUS=draining: {why}"));
    }

    /// Whether another holder keeps the listening socket after us.
    pub(super) fn listener_kept(&self) -> bool {
        self.kept
    }

    /// A line for `systemctl status`.
    pub(super) fn status(&self, status: &str) {
        self.notify(&format!("STATUS={status}"));
    }

    /// SIGHUP: starts a successor, unless one is starting. The caller checks that the
    /// server is serving.
    pub(super) fn start_successor(&mut self, now: Instant) -> io::Result<()> {
        if let Some(successor) = &self.successor {
            log::info!(
                "SIGHUP received: a hand-over to {} is under way; ignored",
                successor.pid()
            );
            return Ok(());
        }
        let Some(listener) = &self.listener else {
            return Err(io::Error::other("no listener to hand over"));
        };
        let mut command = Command::new(&self.exe);
        command
            .args(&self.args)
            .env(KEPT_ELSEWHERE, if self.kept { "1" } else { "0" });
        // Said before the start: a fast successor may speak to the supervisor (its
        // `MAINPID=`) before this process is scheduled again.
        self.notify("RELOADING=1\nSTATUS=starting a successor");
        let started = Successor::start(
            command,
            listener,
            self.notifier.as_ref().map(Notifier::name),
            now,
            self.timeout,
        );
        let successor = match started {
            Ok(successor) => successor,
            Err(e) => {
                self.notify(&format!("READY=1\nSTATUS=serving (hand-over failed: {e})"));
                self.stats.handover(Handover::Failed);
                return Err(e);
            }
        };
        self.stats.handover(Handover::Started);
        log::info!(
            "SIGHUP received: started successor {} from {}; serving until it is ready (max {}ms)",
            successor.pid(),
            self.exe.display(),
            self.timeout.as_millis()
        );
        self.notify(&format!("STATUS=handing over to {}", successor.pid()));
        self.successor = Some(successor);
        self.check_at = Some(now + SUCCESSOR_CHECK);
        Ok(())
    }

    /// The successor's socket, while one is starting, for the coordinator's poll.
    pub(super) fn successor_socket(&self) -> Option<&std::os::unix::net::UnixDatagram> {
        self.successor.as_ref().map(Successor::socket)
    }

    /// Looks at the successor: ready (this generation should stop), failed (logged; we
    /// serve on), or still starting.
    pub(super) fn check_successor(&mut self, now: Instant) -> Succession {
        let Some(successor) = self.successor.as_mut() else {
            return Succession::Pending;
        };
        // The clock itself, not the turn's reading: the turn that started the successor
        // spent the spawn's milliseconds since, and a `READY=1` that came after the limit
        // must not pass for one that came in time.
        let now = now.max(Instant::now());
        self.check_at = Some(now + SUCCESSOR_CHECK);
        match successor.check(now) {
            Progress::Starting => Succession::Pending,
            Progress::Ready => {
                let pid = successor.pid();
                self.successor = None;
                log::info!("successor {pid} is ready: it accepts from the listener now");
                self.stats.handover(Handover::Completed);
                self.notify(&format!(
                    "MAINPID={pid}\nREADY=1\nSTATUS=handed over to {pid}; draining"
                ));
                Succession::Ready(pid)
            }
            Progress::Failed(reason) => {
                log::warn!(
                    "hand-over failed: the successor ({}) {reason}; still serving",
                    successor.pid()
                );
                self.successor = None;
                self.stats.handover(Handover::Failed);
                self.notify(&format!(
                    "READY=1\nSTATUS=serving (hand-over failed: {reason})"
                ));
                Succession::Pending
            }
        }
    }

    /// When the coordinator must next look: the watchdog's next feed, a starting
    /// successor's next check.
    pub(super) fn next_wakeup(&self, now: Instant) -> Option<Instant> {
        let watchdog = self.watchdog.map(|(_, due)| due);
        let successor = self.successor.as_ref().map(|s| {
            let check_at = self.check_at.unwrap_or(now);
            s.deadline().min(check_at)
        });
        watchdog.into_iter().chain(successor).min()
    }

    /// Feeds the watchdog when it is due. Called from loop 0's turns: if loop 0 stops
    /// turning, the feeding stops, and systemd restarts the service.
    pub(super) fn feed_watchdog(&mut self, now: Instant) {
        if let Some((every, due)) = self.watchdog
            && now >= due
        {
            self.notify("WATCHDOG=1");
            self.watchdog = Some((every, now + every));
        }
    }

    fn notify(&self, message: &str) {
        if let Some(notifier) = &self.notifier {
            notifier.send(message);
        }
    }
}
