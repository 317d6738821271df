//! The arrows of the state diagram (`state.rs`), one or a few per test: each connection is
//! built in a state by a constructor of `tests/mod.rs`, then led along one arrow.

use super::*;

#[test]
fn idle_becomes_head_on_a_partial_request_and_idle_again_once_answered() {
    let (mut rig, mut conn) = in_head();
    rig.send(&mut conn, b"st: t\r\n\r\n").unwrap();
    assert!(received(&mut conn).ends_with(HELLO));
    assert_eq!(state(&conn), "Idle");
}

#[test]
fn head_of_only_an_empty_line_split_in_two_is_idle_again() {
    let (mut rig, mut conn) = fresh();
    rig.send(&mut conn, b"\r").unwrap();
    assert_eq!(state(&conn), "Head");
    rig.send(&mut conn, b"\n").unwrap();
    assert_eq!(state(&conn), "Idle");
    assert!(received(&mut conn).is_empty());
}

#[test]
fn body_the_handler_asked_for_is_read_then_answered_and_idle() {
    let (mut rig, mut conn) = in_body();
    rig.send(&mut conn, b"56789").unwrap();
    assert!(received(&mut conn).ends_with("\r\n\r\n0123456789"));
    assert_eq!(state(&conn), "Idle");
}

#[test]
fn expect_continue_gets_100_only_when_the_handler_asks_for_the_body() {
    let expecting = |path: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n"
        )
    };
    let (mut rig, mut conn) = fresh();
    rig.send(&mut conn, expecting("/echo").as_bytes()).unwrap();
    assert_eq!(received(&mut conn), "HTTP/1.1 100 Continue\r\n\r\n");
    assert_eq!(state(&conn), "Body");

    // Answered from the head: a 404 and no 100, and the connection closes rather than
    // wait for a body the client may never send.
    let (mut rig, mut conn) = fresh();
    rig.send(&mut conn, expecting("/nope").as_bytes()).unwrap();
    let answer = received(&mut conn);
    assert!(answer.starts_with("HTTP/1.1 404 "), "{answer}");
    assert!(answer.contains("Connection: close"), "{answer}");
    assert_eq!(state(&conn), "Lingering");
}

#[test]
fn discarding_reads_past_the_body_and_serves_the_next_request() {
    let (mut rig, mut conn) = discarding();
    // The rest of the body looks like a request on purpose: it is body, not a request.
    rig.send(&mut conn, b"GET /").unwrap();
    assert_eq!(state(&conn), "Idle");
    rig.send(&mut conn, GET_PLAINTEXT).unwrap();
    let answer = received(&mut conn);
    assert!(
        answer.starts_with("HTTP/1.1 200 ") && answer.ends_with(HELLO),
        "{answer}"
    );
}

#[test]
fn discarding_ends_the_connection_when_the_body_outgrows_its_bound() {
    let (mut rig, mut conn) = fresh();
    rig.send(
        &mut conn,
        b"POST /nope HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n",
    )
    .unwrap();
    assert_eq!(state(&conn), "Discarding");
    let chunk = format!("10000\r\n{}\r\n", "x".repeat(0x10000));
    let mut outcome = Ok(());
    for _ in 0..8 {
        outcome = rig.send(&mut conn, chunk.as_bytes());
        if state(&conn) != "Discarding" {
            break;
        }
    }
    assert_eq!(outcome, Ok(()));
    assert_eq!(state(&conn), "Lingering");
    assert_eq!(lingering_for(&conn), Some(CloseReason::UnreadBody));
}

#[test]
fn discarding_ends_the_connection_at_the_request_timeout() {
    let (mut rig, mut conn) = discarding();
    rig.advance(TIMEOUTS.body);
    assert_eq!(rig.timer(&mut conn), Ok(()));
    assert_eq!(state(&conn), "Lingering");
    assert!(received(&mut conn).is_empty(), "no second answer");
}

#[test]
fn waiting_on_a_timer_answers_when_it_fires() {
    let (mut rig, mut conn) = waiting_on_timer();
    rig.advance(Duration::from_millis(99));
    rig.timer(&mut conn).unwrap();
    assert_eq!(state(&conn), "Waiting");
    rig.advance(Duration::from_millis(1));
    rig.timer(&mut conn).unwrap();
    assert!(received(&mut conn).ends_with(r#"{"done":true}"#));
    assert_eq!(state(&conn), "Idle");
}

#[test]
fn waiting_on_a_reply_takes_its_own_and_drops_a_stale_one() {
    let (mut rig, mut conn) = waiting_on_reply();
    let handle = rig
        .promised
        .lock()
        .unwrap()
        .pop()
        .expect("a promised reply");
    handle.send(Response::json_static(Status::OK, r#"{"late":true}"#));
    let mut replies = Vec::new();
    rig.inbox.drain_into(&mut replies);
    let (id, response) = replies.pop().expect("the reply in the inbox");
    // A reply for another request number changes nothing.
    conn.reply(&mut rig.cx(), id.seq.wrapping_add(1), response.clone())
        .unwrap();
    assert_eq!(state(&conn), "Waiting");
    conn.reply(&mut rig.cx(), id.seq, response).unwrap();
    assert!(received(&mut conn).ends_with(r#"{"late":true}"#));
    assert_eq!(state(&conn), "Idle");
}

#[test]
fn streaming_sends_a_chunk_per_tick_and_is_idle_after_the_last() {
    let (mut rig, mut conn) = streaming();
    for i in 1..=3 {
        assert_eq!(state(&conn), "Streaming");
        rig.advance(Duration::from_millis(10));
        rig.timer(&mut conn).unwrap();
        assert!(received(&mut conn).contains(&format!("chunk {i} of 3")));
    }
    assert_eq!(state(&conn), "Idle");
}

#[test]
fn streaming_whose_chunks_panic_is_cut_without_its_last_chunk() {
    let (mut rig, mut conn) = fresh();
    rig.send(&mut conn, b"GET /panic-stream HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    rig.advance(Duration::from_millis(10));
    rig.timer(&mut conn).unwrap();
    let sent = received(&mut conn);
    assert!(!sent.ends_with("0\r\n\r\n"), "{sent}");
    assert_eq!(lingering_for(&conn), Some(CloseReason::StreamFailed));
}

#[test]
fn closing_waits_for_its_answer_to_go_out_then_lingers() {
    let (mut rig, mut conn) = closing();
    rig.client_reads(&mut conn).unwrap();
    assert!(received(&mut conn).ends_with(HELLO));
    assert!(conn.socket.write_shut);
    assert_eq!(state(&conn), "Lingering");
}

#[test]
fn lingering_closes_at_the_clients_eof() {
    let (mut rig, mut conn) = lingering();
    assert_eq!(rig.send_eof(&mut conn), Err(CloseReason::Done));
}

#[test]
fn lingering_closes_once_the_client_is_quiet_for_linger() {
    let (mut rig, mut conn) = lingering();
    rig.advance(LINGER - Duration::from_millis(1));
    assert_eq!(rig.timer(&mut conn), Ok(()));
    rig.advance(Duration::from_millis(1));
    assert_eq!(rig.timer(&mut conn), Err(CloseReason::Done));
}

#[test]
fn lingering_waits_on_for_a_client_still_sending_but_not_past_linger_max() {
    let (mut rig, mut conn) = lingering();
    let mut waited = Duration::ZERO;
    // Bytes every 400 ms keep it open, each round restarting the quiet time...
    while waited + Duration::from_millis(400) < LINGER_MAX {
        rig.advance(Duration::from_millis(400));
        waited += Duration::from_millis(400);
        rig.send(&mut conn, b"more").unwrap();
        assert_eq!(rig.timer(&mut conn), Ok(()), "after {waited:?}");
    }
    // ...until its bound.
    rig.advance(LINGER_MAX - waited);
    rig.send(&mut conn, b"more").unwrap();
    assert_eq!(rig.timer(&mut conn), Err(CloseReason::Done));
}

#[test]
fn request_that_breaks_a_rule_is_rejected_and_closes_as_rejected() {
    let (mut rig, mut conn) = fresh();
    rig.send(&mut conn, b"GET /a#b HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let answer = received(&mut conn);
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert_eq!(lingering_for(&conn), Some(CloseReason::Rejected));
}

#[test]
fn byte_that_can_never_be_valid_is_answered_when_it_arrives_however_the_head_is_split() {
    for (first, rest) in [
        (&b"G"[..], &b"ET/\x03"[..]),
        (b"GET /pla", b"in\x7f"),
        (b"GET /caf", b"\xc3\xa9"),
        (b"GET / HTTP/1.1\r\nX-A: b", b"\x01c"),
    ] {
        let (mut rig, mut conn) = fresh();
        rig.send(&mut conn, first).unwrap();
        assert_eq!(state(&conn), "Head");
        rig.send(&mut conn, rest).unwrap();
        let answer = received(&mut conn);
        assert!(
            answer.starts_with("HTTP/1.1 400 "),
            "{first:?} + {rest:?}: {answer}"
        );
    }
    // A head that breaks a rule, cut off by the client's EOF before its line ends, is
    // answered before the close, as it is when it arrives in one read.
    for (first, rest) in [
        (&b"GET / HTTP/1.1\r\nX: a"[..], &b"\x00"[..]),
        (b"POST /", b"\te"),
        (b"GET / HTTP/1.1\r\nX\"", b"a: b"),
    ] {
        let (mut rig, mut conn) = fresh();
        rig.send(&mut conn, first).unwrap();
        let _ = rig.send(&mut conn, rest);
        let _ = rig.send_eof(&mut conn);
        let answer = received(&mut conn);
        assert!(
            answer.starts_with("HTTP/1.1 400 "),
            "{first:?} + {rest:?}: {answer}"
        );
    }
    // A byte valid where it stands waits for its line end, as before.
    let (mut rig, mut conn) = fresh();
    rig.send(&mut conn, b"GET / HTTP/1.1\r\nX-A: b").unwrap();
    rig.send(&mut conn, "\u{e9}\"<>".as_bytes()).unwrap();
    assert!(received(&mut conn).is_empty());
    assert_eq!(state(&conn), "Head");
}

#[test]
fn head_or_body_too_slow_is_answered_408() {
    // The head: within the header timeout, from its first byte.
    let (mut rig, mut conn) = in_head();
    rig.advance(TIMEOUTS.header);
    rig.timer(&mut conn).unwrap();
    assert!(received(&mut conn).starts_with("HTTP/1.1 408 "));

    // The body: a gap longer than the body timeout.
    let (mut rig, mut conn) = in_body();
    rig.advance(TIMEOUTS.body);
    rig.timer(&mut conn).unwrap();
    assert!(received(&mut conn).starts_with("HTTP/1.1 408 "));

    // The whole request: a body that never pauses long still ends at the request
    // timeout, counted from the head's first byte. One byte per step restarts the gap,
    // not the total.
    let (mut rig, mut conn) = fresh();
    rig.send(
        &mut conn,
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n",
    )
    .unwrap();
    let step = TIMEOUTS.body / 2;
    let mut elapsed = Duration::ZERO;
    while elapsed + step < TIMEOUTS.request {
        rig.advance(step);
        elapsed += step;
        rig.send(&mut conn, b"x").unwrap();
        rig.timer(&mut conn).unwrap();
        assert_eq!(state(&conn), "Body", "after {elapsed:?}");
    }
    rig.advance(TIMEOUTS.request - elapsed);
    rig.timer(&mut conn).unwrap();
    assert!(received(&mut conn).starts_with("HTTP/1.1 408 "));
}

#[test]
fn eof_between_requests_closes_and_inside_one_closes_mid_request() {
    let (mut rig, mut conn) = idle();
    assert_eq!(rig.send_eof(&mut conn), Err(CloseReason::PeerClosed));
    let (mut rig, mut conn) = in_head();
    assert_eq!(
        rig.send_eof(&mut conn),
        Err(CloseReason::PeerClosedMidRequest)
    );
    let (mut rig, mut conn) = discarding();
    assert_eq!(
        rig.send_eof(&mut conn),
        Err(CloseReason::PeerClosedMidRequest)
    );
}

#[test]
fn eof_inside_a_request_still_delivers_the_answers_before_it() {
    let (mut rig, mut conn) = fresh();
    conn.socket.room = Some(0);
    let mut wire = GET_PLAINTEXT.to_vec();
    wire.extend_from_slice(b"GET /json HT");
    rig.send(&mut conn, &wire).unwrap();
    assert_eq!(rig.send_eof(&mut conn), Ok(()));
    assert_eq!(state(&conn), "Closing");
    assert_eq!(
        rig.client_reads(&mut conn),
        Err(CloseReason::PeerClosedMidRequest)
    );
    assert!(received(&mut conn).ends_with(HELLO));
}

#[test]
fn idle_connection_closes_at_the_keepalive_timeout_counted_from_its_last_answer() {
    let (mut rig, mut conn) = idle();
    rig.advance(TIMEOUTS.keepalive - Duration::from_millis(1));
    assert_eq!(rig.timer(&mut conn), Ok(()));
    rig.advance(Duration::from_millis(1));
    assert_eq!(rig.timer(&mut conn), Err(CloseReason::IdleTimeout));
}
