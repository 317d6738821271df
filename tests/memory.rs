//! Memory under clients that hold on to it, against the real binary: the worst case is a
//! sum the operator sets (`BUFFER_BUDGET_BYTES`), not a product of per-connection bounds.
//! The figures asserted are bounds that separate "a buffer each" from "a body each"
//! (tens of MiB apart), not measurements.

mod support;

use std::io::Write;
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};
use support::{PATIENCE, Reader, Server, get};

/// The server's resident memory, in KiB.
fn rss_kib(server: &Server) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A client with a 4 KiB receive buffer, so the kernel cannot take a large answer off
/// the server's hands: what the client does not read, the server has to hold.
fn stingy_client(server: &Server) -> TcpStream {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket
        .connect_timeout(&server.addr.into(), PATIENCE)
        .unwrap();
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream
}

/// Waits until every client has the first bytes of its answer: the server has taken
/// each request and encoded its answer.
fn wait_for_answers(clients: &[TcpStream]) {
    let start = Instant::now();
    for client in clients {
        let mut byte = [0u8; 1];
        while client.peek(&mut byte).unwrap_or(0) == 0 {
            assert!(start.elapsed() < PATIENCE, "no answer in {PATIENCE:?}");
            thread::sleep(Duration::from_millis(5));
        }
    }
}

#[test]
fn clients_that_never_read_large_bodies_do_not_each_cost_them() {
    let server = Server::start(&[], &[]);
    assert_eq!(get(&server, "/bytes/1048576").body.len(), 1 << 20);
    let before = rss_kib(&server);
    // 8 MiB asked for by each: more than the kernel holds for a client that reads
    // nothing (its send buffer grows to about 4 MiB), so the rest waits on the server.
    let ask = b"GET /bytes/1048576 HTTP/1.1\r\nHost: x\r\n\r\n".repeat(8);
    let mut clients: Vec<TcpStream> = (0..100).map(|_| stingy_client(&server)).collect();
    for client in &mut clients {
        client.write_all(&ask).unwrap();
    }
    wait_for_answers(&clients);
    thread::sleep(Duration::from_millis(200));
    let grown = rss_kib(&server).saturating_sub(before);
    // A body each would be 100 MiB; a buffer each is at most 100 × 16 KiB.
    assert!(grown < 32 * 1024, "RSS grew by {grown} KiB for 100 readers");
    // And each still gets all of its bodies, in order, when it does read.
    let mut reader = Reader::new(clients.pop().unwrap());
    for _ in 0..8 {
        let r = reader.response().unwrap();
        assert_eq!((r.status, r.body.len()), (200, 1 << 20));
        assert!(
            r.body
                .iter()
                .enumerate()
                .all(|(i, &b)| b == b'a' + (i % 26) as u8)
        );
    }
}

/// Echo requests each slow client pipelines, of `BODY` bytes each: 8 MiB of answers,
/// more than the kernel holds for a client that reads nothing (its send buffer grows to
/// about 4 MiB), so the rest waits in the server's buffers.
const PIPELINED: usize = 8;
const BODY: usize = 1 << 20;

#[test]
fn past_the_budget_requests_get_503_and_what_was_taken_is_answered_whole() {
    // The least budget that takes a 1 MiB body (1 MiB + 2 × 16 KiB), and a little more.
    let server = Server::start(&[("BUFFER_BUDGET_BYTES", "1200000")], &[]);
    let before = rss_kib(&server);
    // Written from threads: the server stops reading a client whose answers back up, so
    // a write can block until the client reads.
    let request = [
        format!("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {BODY}\r\n\r\n").as_bytes(),
        &vec![b'e'; BODY],
    ]
    .concat();
    let slow: Vec<TcpStream> = (0..16).map(|_| stingy_client(&server)).collect();
    for client in &slow {
        let mut writer = client.try_clone().unwrap();
        let batch = request.repeat(PIPELINED);
        writer.set_write_timeout(Some(PATIENCE)).unwrap();
        // The client's half: sent while its answers are read below, or given up on.
        thread::spawn(move || writer.write_all(&batch));
    }
    wait_for_answers(&slow);
    thread::sleep(Duration::from_millis(200));
    // Without the budget each client holds a body in and an answer out: 16 × 2 MiB.
    let grown = rss_kib(&server).saturating_sub(before);
    assert!(grown < 12 * 1024, "RSS grew by {grown} KiB");
    // The slow clients read: every answer they were owed arrives whole; a request the
    // budget refused is refused in the open, and its connection closes after it.
    let mut refused = 0;
    for client in slow {
        let mut reader = Reader::new(client);
        for _ in 0..PIPELINED {
            let r = reader.response().unwrap();
            match r.status {
                200 => assert_eq!(r.body.len(), BODY),
                503 => {
                    assert_eq!(
                        r.body_text(),
                        r#"{"error":"server busy: its buffers are full, retry later"}"#
                    );
                    assert!(r.closes());
                    refused += 1;
                    break;
                }
                other => panic!("status {other}"),
            }
        }
    }
    assert!(refused > 0, "16 × 8 MiB and nothing refused");
    // Everything is written: the budget is free again.
    let start = Instant::now();
    while get(&server, "/plaintext").status != 200 {
        assert!(start.elapsed() < PATIENCE, "the budget never freed");
        thread::sleep(Duration::from_millis(20));
    }
}
