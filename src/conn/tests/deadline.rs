//! The deadline rule, state by state: what `Conn::force_close` does to a connection in
//! each state when the shutdown deadline passes.

use super::*;

#[test]
fn deadline_answers_503_to_requests_whose_answer_has_not_started() {
    for (name, (mut rig, mut conn)) in [
        ("head", in_head()),
        ("body", in_body()),
        ("timer", waiting_on_timer()),
        ("reply", waiting_on_reply()),
    ] {
        rig.stage = Stage::Draining;
        assert_eq!(
            conn.force_close(&mut rig.cx()),
            CloseReason::AnsweredUnavailable,
            "{name}"
        );
        let answer = received(&mut conn);
        assert!(answer.starts_with("HTTP/1.1 503 "), "{name}: {answer}");
        assert!(answer.contains("Retry-After: 1"), "{name}");
        assert!(conn.socket.write_shut, "{name}: a lingering close");
    }
}

#[test]
fn deadline_cuts_answers_being_written_and_closes_the_rest_as_they_are() {
    let cases: [(&str, Built, CloseReason); 5] = [
        ("idle", idle(), CloseReason::IdleOnShutdown),
        ("streaming", streaming(), CloseReason::CutAtDeadline),
        (
            "closing, answer unsent",
            closing(),
            CloseReason::CutAtDeadline,
        ),
        ("lingering", lingering(), CloseReason::Done),
        ("discarding", discarding(), CloseReason::Done),
    ];
    for (name, (mut rig, mut conn), want) in cases {
        rig.stage = Stage::Draining;
        assert_eq!(conn.force_close(&mut rig.cx()), want, "{name}");
    }
    // Idle, but its last answer is still going out: cut.
    let (mut rig, mut conn) = fresh();
    conn.socket.room = Some(10);
    rig.send(&mut conn, GET_PLAINTEXT).unwrap();
    assert_eq!(state(&conn), "Idle");
    assert_eq!(conn.force_close(&mut rig.cx()), CloseReason::CutAtDeadline);
}
