//! Timers, back-pressure and yielding: when a connection next needs the loop, how it
//! stops taking work while its client does not read, and how it gives the loop back.

use super::*;

#[test]
fn deadline_is_the_nearest_timer_of_each_state() {
    let t = TIMEOUTS;
    let (rig, conn) = idle();
    assert_eq!(
        conn.deadline(&rig.limits, Stage::Serving),
        Some(rig.now + t.keepalive)
    );
    let (rig, conn) = in_head();
    assert_eq!(
        conn.deadline(&rig.limits, Stage::Serving),
        Some(rig.now + t.header)
    );
    let (rig, conn) = in_body();
    assert_eq!(
        conn.deadline(&rig.limits, Stage::Serving),
        Some(rig.now + t.body)
    );
    let (rig, conn) = waiting_on_timer();
    assert_eq!(
        conn.deadline(&rig.limits, Stage::Serving),
        Some(rig.now + Duration::from_millis(100))
    );
    let (rig, conn) = waiting_on_reply();
    assert_eq!(conn.deadline(&rig.limits, Stage::Serving), None);
    let (rig, conn) = closing();
    assert_eq!(
        conn.deadline(&rig.limits, Stage::Serving),
        Some(rig.now + t.write)
    );
    let (rig, conn) = lingering();
    assert_eq!(
        conn.deadline(&rig.limits, Stage::Serving),
        Some(rig.now + LINGER)
    );
}

#[test]
fn pipelined_requests_wait_while_output_backs_up_and_resume_when_it_drains() {
    let (mut rig, mut conn) = fresh();
    conn.socket.room = Some(0);
    let batch = GET_PLAINTEXT.repeat(1000);
    rig.send(&mut conn, &batch).unwrap();
    let queued = conn.output.as_ref().map_or(0, |o| o.len());
    assert!(
        queued >= crate::conn::exchange::OUTPUT_HIGH_WATER,
        "{queued}"
    );
    assert!(
        queued < 1000 * 100,
        "stopped taking requests at the high-water mark"
    );
    // The client reads: the rest is answered, every request once, in order.
    for _ in 0..20 {
        rig.client_reads(&mut conn).unwrap();
        if conn.take_yielded() {
            conn.resume(&mut rig.cx()).unwrap();
        }
    }
    assert_eq!(received(&mut conn).matches(HELLO).count(), 1000);
}

#[test]
fn client_that_never_reads_is_cut_at_the_write_timeout() {
    let (mut rig, mut conn) = closing();
    rig.advance(TIMEOUTS.write);
    assert_eq!(rig.timer(&mut conn), Err(CloseReason::WriteTimeout));
}

#[test]
fn connection_with_endless_input_yields_after_its_round_budget() {
    let (mut rig, mut conn) = fresh();
    for _ in 0..100 {
        conn.socket
            .reads
            .push_back(Read::Bytes(GET_PLAINTEXT.repeat(500)));
    }
    conn.ready(&mut rig.cx(), true, false).unwrap();
    assert!(conn.take_yielded(), "held the loop past its budget");
    let answered = received(&mut conn).matches(HELLO).count();
    assert!(answered > 0 && answered < 100 * 500, "{answered}");
    // Resumed on the loop's next turn, it carries on where it stopped.
    conn.resume(&mut rig.cx()).unwrap();
    assert!(received(&mut conn).matches(HELLO).count() > 0);
}
