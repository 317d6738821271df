//! The memory rules: what a connection holds while it waits, and the loop's budget.
//! Every test reads `BufPool::held`, the sum the budget is judged on, and ends with it
//! back at zero once the connection is released: nothing lent is ever lost to the count.

use super::*;

/// Bytes of a fresh buffer in the rig (its `MAX_HEADER_BYTES`).
const BUFFER: usize = 16 * 1024;

#[test]
fn a_trickling_head_holds_its_bytes_not_a_buffer() {
    let (mut rig, mut conn) = fresh();
    let head = b"GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n";
    let (first, rest) = head.split_at(9);
    rig.send(&mut conn, first).unwrap();
    assert_eq!(state(&conn), "Head");
    assert_eq!(
        rig.bufs.held(),
        first.len(),
        "parked: the bytes, not {BUFFER}"
    );
    // Byte by byte, as a slowloris client sends: each wait holds what has come so far.
    for (i, byte) in rest.iter().enumerate() {
        rig.send(&mut conn, &[*byte]).unwrap();
        if i + 1 < rest.len() {
            assert_eq!(rig.bufs.held(), first.len() + i + 1);
        }
    }
    assert!(received(&mut conn).ends_with("Hello, World!"));
    assert_eq!(rig.bufs.held(), 0, "answered: nothing held");
}

#[test]
fn a_large_pattern_body_goes_out_from_its_one_copy() {
    let (mut rig, mut conn) = fresh();
    conn.socket.room = Some(0);
    rig.send(&mut conn, b"GET /bytes/1048576 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    // The client does not read: what waits for it is a response head, not 1 MiB.
    assert!(rig.bufs.held() <= BUFFER, "{} held", rig.bufs.held());
    // A request behind it waits too: answered after the body, never inside it.
    rig.send(&mut conn, GET_PLAINTEXT).unwrap();
    for _ in 0..64 {
        rig.client_reads(&mut conn).unwrap();
    }
    let got = std::mem::take(&mut conn.socket.written);
    let body_at = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let body = &got[body_at..body_at + (1 << 20)];
    assert!(
        body.iter()
            .enumerate()
            .all(|(i, &b)| b == b'a' + (i % 26) as u8)
    );
    let after = String::from_utf8_lossy(&got[body_at + (1 << 20)..]);
    assert!(after.starts_with("HTTP/1.1 200 OK") && after.ends_with("Hello, World!"));
    assert_eq!(rig.bufs.held(), 0);
}

#[test]
fn over_the_budget_a_new_request_gets_503_and_an_old_one_finishes() {
    let (mut rig, mut slow) = fresh();
    // Enough to take a 40,000-byte body, not to hold its echo (the same bytes behind a
    // head of more than 100) for a client that does not read.
    rig.bufs = BufPool::new(BUFFER, 40_100);
    slow.socket.room = Some(0);
    let body = b"e".repeat(40_000);
    let head = format!(
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    rig.send(&mut slow, &[head.as_bytes(), &body].concat())
        .unwrap();
    assert!(rig.bufs.over_budget(), "{} held", rig.bufs.held());

    let mut other = Conn::new(Fake::default(), rig.now, ConnId(1), None);
    let refused = rig.send(&mut other, GET_PLAINTEXT);
    let text = received(&mut other);
    assert!(text.starts_with("HTTP/1.1 503 "), "{text}");
    assert!(text.contains("Connection: close"), "{text}");
    assert!(text.ends_with(r#"{"error":"server busy: its buffers are full, retry later"}"#));
    assert!(refused.is_err() || lingering_for(&other) == Some(CloseReason::Rejected));
    other.release(&mut rig.bufs);
    // A head still arriving is refused too: it holds memory, and would be at its end.
    let mut partial = Conn::new(Fake::default(), rig.now, ConnId(1), None);
    let _ = rig.send(&mut partial, b"GET /plain");
    assert!(received(&mut partial).starts_with("HTTP/1.1 503 "));
    partial.release(&mut rig.bufs);

    // The slow client reads: its answer arrives whole, and the budget frees.
    rig.client_reads(&mut slow).unwrap();
    assert!(received(&mut slow).ends_with(&"e".repeat(40_000)));
    assert_eq!(rig.bufs.held(), 0);
    let mut later = Conn::new(Fake::default(), rig.now, ConnId(1), None);
    rig.send(&mut later, GET_PLAINTEXT).unwrap();
    assert!(received(&mut later).starts_with("HTTP/1.1 200 OK"));
}

#[test]
fn a_body_is_counted_before_it_is_read() {
    let (mut rig, mut conn) = fresh();
    rig.bufs = BufPool::new(BUFFER, 2 * BUFFER + 1000);
    // Declared past what the budget has left: refused before a byte of it is read.
    let head = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 40000\r\n\r\n";
    let _ = rig.send(&mut conn, head);
    assert!(received(&mut conn).starts_with("HTTP/1.1 503 "));
    conn.release(&mut rig.bufs);
    assert_eq!(rig.bufs.held(), 0);
    // Within it: taken, and counted while it arrives.
    let (_, mut conn) = fresh();
    let head = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 16500\r\n\r\n";
    rig.send(&mut conn, head).unwrap();
    assert_eq!(state(&conn), "Body");
    assert!(rig.bufs.held() > BUFFER);
    rig.send(&mut conn, &[b'x'; 16500]).unwrap();
    assert!(received(&mut conn).ends_with(&"x".repeat(16500)));
    conn.release(&mut rig.bufs);
    assert_eq!(rig.bufs.held(), 0);
}
