//! The drain rule, state by state: what `Conn::start_drain` does to a connection in each
//! state when the drain begins.

use super::*;

#[test]
fn drain_closes_an_idle_connection_at_once() {
    let (mut rig, mut conn) = idle();
    assert_eq!(rig.start_drain(&mut conn), Err(CloseReason::IdleOnShutdown));
}

#[test]
fn drain_gives_a_fresh_connection_its_grace_then_closes_it() {
    let (mut rig, mut conn) = fresh();
    assert_eq!(rig.start_drain(&mut conn), Ok(()));
    assert_eq!(
        conn.deadline(&rig.limits, Stage::Draining),
        Some(rig.now + FRESH_GRACE)
    );
    rig.advance(FRESH_GRACE);
    assert_eq!(rig.timer(&mut conn), Err(CloseReason::IdleOnShutdown));
}

#[test]
fn drain_serves_a_request_already_in_the_socket_with_connection_close() {
    let (mut rig, mut conn) = idle();
    conn.socket
        .reads
        .push_back(Read::Bytes(GET_PLAINTEXT.to_vec()));
    assert_eq!(rig.start_drain(&mut conn), Ok(()));
    let answer = received(&mut conn);
    assert!(answer.contains("Connection: close") && answer.ends_with(HELLO));
    assert_eq!(state(&conn), "Lingering");
}

#[test]
fn drain_lets_a_request_in_progress_finish_with_connection_close() {
    // Head, body, timer and reply: each finishes its one request, then closes.
    let (mut rig, mut conn) = in_head();
    assert_eq!(rig.start_drain(&mut conn), Ok(()));
    rig.send(&mut conn, b"st: t\r\n\r\n").unwrap();
    assert!(received(&mut conn).contains("Connection: close"));
    assert_eq!(state(&conn), "Lingering");

    let (mut rig, mut conn) = in_body();
    assert_eq!(rig.start_drain(&mut conn), Ok(()));
    rig.send(&mut conn, b"56789").unwrap();
    assert!(received(&mut conn).contains("Connection: close"));
    assert_eq!(state(&conn), "Lingering");

    let (mut rig, mut conn) = waiting_on_timer();
    assert_eq!(rig.start_drain(&mut conn), Ok(()));
    assert_eq!(state(&conn), "Waiting");
    rig.advance(Duration::from_millis(100));
    rig.timer(&mut conn).unwrap();
    assert!(received(&mut conn).contains("Connection: close"));
    assert_eq!(state(&conn), "Lingering");
}

#[test]
fn drain_lets_a_stream_end_then_closes() {
    let (mut rig, mut conn) = streaming();
    assert_eq!(rig.start_drain(&mut conn), Ok(()));
    for _ in 0..3 {
        rig.advance(Duration::from_millis(10));
        rig.timer(&mut conn).unwrap();
    }
    assert!(received(&mut conn).ends_with("0\r\n\r\n"));
    assert_eq!(state(&conn), "Lingering");
}

#[test]
fn drain_closes_a_connection_reading_past_an_answered_body() {
    let (mut rig, mut conn) = discarding();
    assert_eq!(rig.start_drain(&mut conn), Ok(()));
    assert_eq!(state(&conn), "Lingering");
}

#[test]
fn drain_leaves_closing_and_lingering_connections_to_finish() {
    let (mut rig, mut conn) = closing();
    assert_eq!(rig.start_drain(&mut conn), Ok(()));
    assert_eq!(state(&conn), "Closing");
    let (mut rig, mut conn) = lingering();
    assert_eq!(rig.start_drain(&mut conn), Ok(()));
    assert_eq!(state(&conn), "Lingering");
}
