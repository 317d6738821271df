//! Telling a supervisor how the server is doing: the `sd_notify` protocol, spoken without
//! libsystemd.
//!
//! What it is: [`Notifier`], which sends one datagram per message to the Unix socket named
//! by `NOTIFY_SOCKET` — systemd's for a `Type=notify` service, or a parent's during a
//! hand-over, which waits for its successor's `READY=1` the same way systemd does. The
//! messages are lines of `KEY=value` (sd_notify(3)): `READY=1` once serving, `STATUS=…` for
//! `systemctl status`, `STOPPING=1` at a shutdown signal, `MAINPID=…` when a successor takes
//! over, `WATCHDOG=1` from the event loop while it turns.
//!
//! Why no crate: a message is one `sendto(2)` of a short text on a datagram socket, which
//! the standard library's `UnixDatagram` does, abstract addresses (`@name`) included.
//!
//! Never blocks: the sending socket is non-blocking, and a message the receiver has no room
//! for is dropped (and logged at debug) rather than waited for. Every message is a complete
//! state ("STATUS=draining 3 connections"), so a dropped one is made good by the next.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// Where notifications go: the socket `NOTIFY_SOCKET` names.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    to: SocketAddr,
    /// The socket's name as given, to pass on (to a successor, for one).
    name: String,
}

impl Notifier {
    /// A notifier for the socket named by `NOTIFY_SOCKET` in `env`, when it is set: a
    /// path, or an abstract name written with a leading `@` (systemd's convention).
    /// `Ok(None)` when it is unset or empty: nobody is listening, which is normal.
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> io::Result<Option<Notifier>> {
        match env("NOTIFY_SOCKET") {
            Some(name) if !name.is_empty() => Notifier::to(&name).map(Some),
            _ => Ok(None),
        }
    }

    /// A notifier for the socket at `name` (a path, or `@` and an abstract name).
    pub fn to(name: &str) -> io::Result<Notifier> {
        let to = match name.strip_prefix('@') {
            Some(abstract_name) => SocketAddr::from_abstract_name(abstract_name)?,
            None => SocketAddr::from_pathname(name)?,
        };
        let socket = UnixDatagram::unbound()?;
        socket.set_nonblocking(true)?;
        Ok(Notifier {
            socket,
            to,
            name: name.to_owned(),
        })
    }

    /// The socket's name, as `NOTIFY_SOCKET` spells it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sends one message (one or more `KEY=value` lines). Returns whether it went out;
    /// a receiver that is gone or full costs this message only.
    pub fn send(&self, message: &str) -> bool {
        match self.socket.send_to_addr(message.as_bytes(), &self.to) {
            Ok(_) => true,
            Err(e) => {
                log::debug!("notify {message:?}: {e}");
                false
            }
        }
    }
}

/// How often the event loop must send `WATCHDOG=1`, from `WATCHDOG_USEC` (and
/// `WATCHDOG_PID`, which when set must be this process): half the interval systemd
/// allows, as sd_watchdog_enabled(3) advises, so one late turn is not fatal. `None` when
/// no watchdog is asked for, or it is asked of another process.
pub fn watchdog_interval(env: impl Fn(&str) -> Option<String>, pid: u32) -> Option<Duration> {
    if let Some(owner) = env("WATCHDOG_PID")
        && owner.trim().parse::<u32>().ok() != Some(pid)
    {
        return None;
    }
    let usec = env("WATCHDOG_USEC")?.trim().parse::<u64>().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec) / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |key| {
            pairs
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn messages_arrive_whole_at_an_abstract_or_a_path_socket() {
        let name = format!("lastcall-notify-test-{}", std::process::id());
        let receiver =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(&name).unwrap()).unwrap();
        let notifier = Notifier::from_env(env(&[("NOTIFY_SOCKET", &format!("@{name}"))]))
            .unwrap()
            .expect("set");
        assert!(notifier.send("READY=1\nSTATUS=serving"));
        let mut buf = [0u8; 64];
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=serving");

        let dir = std::env::temp_dir().join(format!("lastcall-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let receiver = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier::to(path.to_str().unwrap()).unwrap();
        assert!(notifier.send("STOPPING=1"));
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn no_socket_is_no_notifier_and_a_gone_receiver_costs_one_message() {
        assert!(Notifier::from_env(env(&[])).unwrap().is_none());
        assert!(
            Notifier::from_env(env(&[("NOTIFY_SOCKET", "")]))
                .unwrap()
                .is_none()
        );
        let gone = Notifier::to("@lastcall-nobody-listens-here").unwrap();
        assert!(!gone.send("READY=1"));
    }

    #[test]
    fn the_watchdog_is_fed_at_half_its_interval_and_only_by_its_process() {
        let with = |pairs: &[(&str, &str)]| watchdog_interval(env(pairs), 42);
        assert_eq!(
            with(&[("WATCHDOG_USEC", "10000000")]),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            with(&[("WATCHDOG_USEC", "2000000"), ("WATCHDOG_PID", "42")]),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            with(&[("WATCHDOG_USEC", "2000000"), ("WATCHDOG_PID", "7")]),
            None
        );
        assert_eq!(with(&[("WATCHDOG_USEC", "0")]), None);
        assert_eq!(with(&[("WATCHDOG_USEC", "soon")]), None);
        assert_eq!(with(&[]), None);
    }
}
