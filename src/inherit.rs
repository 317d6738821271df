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
//! Invariant: a standard input that is not a listening TCP socket (a terminal, a pipe,
//! `/dev/null`, a connected socket) is left alone, and the server opens its own listener.

use std::io;
use std::net::TcpListener;
use std::os::fd::AsFd;

use socket2::{SockRef, Type};

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
