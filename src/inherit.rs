//! A listening socket handed to this process rather than opened by it.
//!
//! What it is: [`stdin_listener`], which takes the listening TCP socket this process was
//! given as its standard input, when it was: systemd's `StandardInput=socket` (and
//! `systemd-socket-activate --inetd`), inetd's convention for a socket unit without
//! `Accept=`, and the hand-over from a previous generation of lastcall, which passes its
//! listener the same way.
//!
//! Why standard input: it is the one descriptor a process can take over with the standard
//! library alone (`stdin().as_fd().try_clone_to_owned()`), so no `unsafe` is needed to turn
//! a raw descriptor number into a socket. systemd's other protocol (`LISTEN_FDS`, starting
//! at descriptor 3) would need exactly that.
//!
//! Who else holds it ([`kept_elsewhere`]) decides what a shutdown does with its accept
//! queue: a socket that outlives this process (systemd's socket unit keeps it, to start the
//! next instance on the next connect) keeps its queue for that instance; a socket this
//! process holds alone is closed with it, so its queue is accepted and served first.
//!
//! Invariant: a standard input that is not a listening TCP socket (a terminal, a pipe,
//! `/dev/null`, a connected socket) is left alone, and the server opens its own listener.

use std::io;
use std::net::TcpListener;
use std::os::fd::AsFd;

use socket2::{SockRef, Type};

/// Set by a parent for its successor: `1` when the inherited listener is also kept open by
/// another holder (systemd's socket unit), `0` when the successor will be its only holder.
pub const KEPT_ELSEWHERE: &str = "LASTCALL_LISTENER_KEPT";

/// Whether an inherited listener outlives this process elsewhere. A successor is told by
/// its parent ([`KEPT_ELSEWHERE`]); a first generation given a socket on standard input
/// by a systemd service (`INVOCATION_ID` is set for every unit systemd runs) got it from a
/// socket unit, which keeps it. `systemd-socket-activate --inetd` and inetd hand theirs
/// over and keep nothing.
pub fn kept_elsewhere(env: impl Fn(&str) -> Option<String>) -> bool {
    match env(KEPT_ELSEWHERE) {
        Some(told) => told == "1",
        None => env("INVOCATION_ID").is_some_and(|id| !id.is_empty()),
    }
}

/// The listening TCP socket on standard input, if there is one, as a listener of this
/// process's own (standard input itself stays as it was).
pub fn stdin_listener() -> io::Result<Option<TcpListener>> {
    let stdin = io::stdin();
    let fd = stdin.as_fd();
    let socket = SockRef::from(&fd);
    // Not a socket at all (ENOTSOCK), or not a listening stream: not ours to take.
    let listening = matches!(socket.r#type(), Ok(kind) if kind == Type::STREAM)
        && socket.is_listener().unwrap_or(false)
        && socket.local_addr().is_ok_and(|a| a.as_socket().is_some());
    if !listening {
        return Ok(None);
    }
    let owned = fd.try_clone_to_owned()?;
    Ok(Some(TcpListener::from(owned)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_is_kept_elsewhere_by_a_socket_unit_or_when_a_parent_says_so() {
        let env = |pairs: &'static [(&str, &str)]| {
            move |key: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == key)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        assert!(!kept_elsewhere(env(&[])));
        assert!(kept_elsewhere(env(&[("INVOCATION_ID", "0a1b")])));
        assert!(kept_elsewhere(env(&[(KEPT_ELSEWHERE, "1")])));
        // The parent's word wins over the environment it passed on.
        assert!(!kept_elsewhere(env(&[
            (KEPT_ELSEWHERE, "0"),
            ("INVOCATION_ID", "0a1b")
        ])));
    }
}
