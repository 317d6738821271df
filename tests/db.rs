//! The database routes against a real PostgreSQL: the real binary, raw TCP, and a
//! throwaway cluster per test (`support::pg`), never the machine's own database.
//!
//! The tests follow a database's life as the server sees it:
//! 1. rows: every column type rendered as PostgreSQL renders it, `null`, 400, `/db`; with
//!    four event loops, every answer reaching the loop that owns its connection;
//! 2. no database: down at start-up (503, then 200 once it is up, without restarting
//!    lastcall), lost mid-run (503, then 200 after it restarts);
//! 3. shutdown: a query in flight at SIGTERM completes and the pool disconnects; a query
//!    still running at the deadline is cancelled in PostgreSQL itself; nothing of ours
//!    stays connected after an exit;
//! 4. a database that never answers (a listener that accepts and stays silent, a cluster
//!    frozen with SIGSTOP): every request gets `503 database unavailable` within the
//!    pool's own bounds, the server lets go of every client connection, a SIGTERM exits
//!    0, and a database that wakes up is used again; a database that is alive but slow
//!    stops the query itself (its `statement_timeout` comes first) and keeps the session.
//!
//! How the tests know where things are: a query is "running" once `pg_stat_activity`
//! shows our session waiting in `pg_sleep`; PostgreSQL notices a client leaving
//! asynchronously, so "no connection left" is polled for, within a bound. No test sleeps
//! for correctness; every loop is bounded.
//!
//! Every test here needs PostgreSQL support, so the file is built only with the
//! `postgres` feature (the default). What every build does without a database
//! (`DATABASE_URL` unset, or set in a build without the feature) is in `tests/cli.rs`.

#![cfg(feature = "postgres")]

mod support;

use std::collections::HashSet;
use std::fs;
use std::thread;
use std::time::{Duration, Instant};

use lastcall::db::{CONNECT_TIMEOUT, QUERY_TIMEOUT, QUEUE_TIMEOUT};
use support::pg::{Postgres, SilentListener};
use support::{PATIENCE, Reader, Server, get};

/// Workers in each test's pool: more than one, so a test cannot pass by luck of which
/// worker takes a job, and few, so a cluster's connection slots are never a concern.
const POOL_SIZE: &str = "2";

/// How long a database that came back may take to be used again: the workers retry with
/// a backoff of at most 5 s, plus a connect.
const RECOVERY: Duration = Duration::from_secs(15);

/// How often conditions outside the server (PostgreSQL's view of its sessions, a
/// recovering pool) are polled.
const POLL_EVERY: Duration = Duration::from_millis(200);

/// Slack on top of any time the server promises: catches hangs, not scheduling delays.
const SLACK: Duration = Duration::from_millis(1500);

/// What `/users/1` renders from `schema.sql`, written out by hand: bigint, text, int,
/// double, numeric, bool, timestamptz (the test cluster runs in UTC), text[] and jsonb.
const ADA: &str = concat!(
    r#"{"id":1,"name":"Ada Lovelace","email":"ada@example.com","age":36,"score":99.5,"#,
    r#""balance":1234.56,"active":true,"created_at":"2024-01-02T03:04:05+00:00","#,
    r#""tags":["math","engines"],"profile":{"lang": "en", "notes": [1, 2]}}"#
);

/// `/users/3`: every nullable column NULL, and a name with double quotes in it.
const GRACE: &str = concat!(
    r#"{"id":3,"name":"Grace \"Amazing\" Hopper","email":null,"age":null,"score":null,"#,
    r#""balance":null,"active":true,"created_at":"2024-12-31T23:59:59+00:00","#,
    r#""tags":null,"profile":null}"#
);

const UNAVAILABLE: &str = r#"{"error":"database unavailable"}"#;

// ---------------------------------------------------------------------------------------
// 1. Rows
// ---------------------------------------------------------------------------------------

#[test]
fn users_id_renders_every_column_type_as_postgresql_does() {
    let pg = with_schema();
    let server = lastcall(&pg, &[]);

    let response = get(&server, "/users/1");
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.header("content-type"), Some("application/json"));
    let psql = pg.psql("SELECT row_to_json(u)::text FROM users u WHERE id = 1");
    assert_eq!(response.body_text(), psql, "lastcall and psql disagree");
    assert_eq!(response.body_text(), ADA);
}

/// With four event loops, every answer from the pool's worker threads reaches the loop
/// that owns its connection (each loop's own inbox): sixteen keep-alive clients, spread
/// over the loops, each get their own rows back, in order.
#[test]
fn four_loops_each_get_the_answers_to_their_own_queries() {
    const CLIENTS: usize = 16;
    let pg = with_schema();
    let mut server = lastcall(&pg, &[("WORKERS", "4")]);
    wait_connected(&server, &pg, 2);
    let addr = server.addr;
    // Connected one by one, a few milliseconds apart: a burst of connects can land on
    // whichever loop is on a CPU at that instant (see the README on the shared listener),
    // and this test needs clients on several loops.
    let streams: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let stream = std::net::TcpStream::connect_timeout(&addr, PATIENCE).unwrap();
            thread::sleep(std::time::Duration::from_millis(5));
            stream
        })
        .collect();
    let clients: Vec<_> = streams
        .into_iter()
        .enumerate()
        .map(|(i, stream)| {
            thread::spawn(move || {
                stream.set_read_timeout(Some(PATIENCE)).unwrap();
                let mut conn = Reader::new(stream);
                for j in 0..10 {
                    let (id, row) = [(1, ADA), (3, GRACE), (4, "null")][(i + j) % 3];
                    conn.send(format!("GET /users/{id} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
                    let response = conn.response().expect("an answer");
                    assert_eq!((response.status, response.body_text().as_str()), (200, row));
                }
            })
        })
        .collect();
    for client in clients {
        client.join().expect("every client got its own rows");
    }
    server.signal("TERM");
    assert_eq!(
        server.wait_exit(PATIENCE).code(),
        Some(0),
        "{}",
        server.log_text()
    );
    let served = (0..4)
        .filter(|i| {
            let line = server.wait_for_log(&format!("loop {i} report: accepted="));
            !line.contains("accepted=0;")
        })
        .count();
    assert!(
        served > 1,
        "one loop took every client; log:\n{}",
        server.log_text()
    );
}

#[test]
fn users_id_answers_json_null_when_no_row_matches() {
    let pg = with_schema();
    let server = lastcall(&pg, &[]);

    for id in ["4", "0", "-1", "9223372036854775807"] {
        let response = get(&server, &format!("/users/{id}"));
        assert_eq!(response.status, 200, "/users/{id}: {response:?}");
        assert_eq!(response.header("content-type"), Some("application/json"));
        assert_eq!(response.body_text(), "null", "/users/{id}");
    }
}

#[test]
fn users_id_answers_400_when_the_id_is_not_an_integer() {
    let pg = with_schema();
    let server = lastcall(&pg, &[]);

    for id in ["abc", "1.5", "1e3", "9223372036854775808", "%31"] {
        let response = get(&server, &format!("/users/{id}"));
        assert_eq!(response.status, 400, "/users/{id}: {response:?}");
        assert_eq!(
            response.body_text(),
            r#"{"error":"id must be an integer"}"#,
            "/users/{id}"
        );
    }
    // A bad id never reaches the database: the pool still answers the next request.
    assert_eq!(get(&server, "/users/1").body_text(), ADA);
}

#[test]
fn users_id_renders_sql_null_as_json_null_and_escapes_quotes() {
    let pg = with_schema();
    let server = lastcall(&pg, &[]);

    let response = get(&server, "/users/3");
    assert_eq!(response.status, 200, "{response:?}");
    let psql = pg.psql("SELECT row_to_json(u)::text FROM users u WHERE id = 3");
    assert_eq!(response.body_text(), psql, "lastcall and psql disagree");
    assert_eq!(response.body_text(), GRACE);
}

#[test]
fn db_answers_a_random_world_row_as_it_is_stored() {
    let pg = with_schema();
    let server = lastcall(&pg, &[]);

    // Several requests on one keep-alive connection, each checked against the table.
    let mut conn = Reader::new(server.connect());
    for _ in 0..5 {
        conn.send(b"GET /db HTTP/1.1\r\nHost: test\r\n\r\n");
        let response = conn.response().expect("a response to /db");
        assert_eq!(response.status, 200, "{response:?}");
        assert_eq!(response.header("content-type"), Some("application/json"));
        let body = response.body_text();
        let (id, n) = world_row(&body).unwrap_or_else(|| panic!("bad /db body {body:?}"));
        assert!((1..=10_000).contains(&id), "{body}");
        let stored = pg.psql(&format!("SELECT randomnumber FROM world WHERE id = {id}"));
        assert_eq!(n.to_string(), stored, "{body}");
    }
}

// ---------------------------------------------------------------------------------------
// 2. No database
// ---------------------------------------------------------------------------------------

#[test]
fn database_down_at_startup_answers_503_then_recovers_without_a_restart() {
    let pg = with_schema();
    pg.stop_immediate();
    let server = lastcall(&pg, &[]);
    server.wait_for_log("database unavailable");

    let response = get(&server, "/users/1");
    assert_eq!(response.status, 503, "{response:?}");
    assert_eq!(response.body_text(), UNAVAILABLE);

    pg.start();
    wait_users_1_recovers(&server);
}

#[test]
fn database_killed_mid_run_answers_503_then_200_after_it_restarts() {
    let pg = with_schema();
    // Both workers hold a session; the kill leaves both dead without telling them.
    let server = serving(&pg);

    pg.stop_immediate();
    // A worker finds its session dead on its next job; with the database still down,
    // a reconnect fails too, so whichever worker takes each request answers 503.
    for attempt in 0..2 {
        let response = get(&server, "/users/1");
        assert_eq!(
            response.status,
            503,
            "attempt {attempt}: {response:?}; log:\n{}",
            server.log_text()
        );
        assert_eq!(response.body_text(), UNAVAILABLE, "attempt {attempt}");
    }

    pg.start();
    wait_users_1_recovers(&server);
}

/// pool.rs promises that a worker whose connection is down "reconnects with exponential
/// backoff (100 ms up to 5 s), also while idle". Here the database dies under a running
/// query: that worker answers 503 and knows it is down. The database comes back, and with
/// no further request the worker must be connected again within its first backoff step
/// (100 ms) plus a connect — we allow 5 s. The other worker has been idle all along.
#[test]
fn worker_whose_query_died_with_the_database_reconnects_while_idle() {
    let (pg, server) = serving_slowly(30);

    let mut conn = Reader::new(server.connect());
    conn.send(b"GET /users/1 HTTP/1.1\r\nHost: test\r\n\r\n");
    wait_sleeping_queries(&pg, 1);
    pg.stop_immediate();
    let response = conn.response().expect("a response when the database dies");
    assert_eq!(response.status, 503, "{response:?}");
    assert_eq!(response.body_text(), UNAVAILABLE);
    server.wait_for_log("connection lost");

    pg.start();
    let back = poll(Duration::from_secs(5), || {
        (pg.our_connections() >= 1).then_some(())
    });
    assert!(
        back.is_some(),
        "no worker reconnected while idle within 5 s; log:\n{}",
        server.log_text()
    );
}

// ---------------------------------------------------------------------------------------
// 3. Shutdown
// ---------------------------------------------------------------------------------------

#[test]
fn query_in_flight_at_sigterm_completes_and_the_pool_disconnects() {
    let pg = with_schema();
    slow_users(&pg, 2);
    let mut server = lastcall(&pg, &[]);

    let mut conn = Reader::new(server.connect());
    conn.send(b"GET /users/1 HTTP/1.1\r\nHost: test\r\n\r\n");
    wait_sleeping_queries(&pg, 1);
    let signalled = Instant::now();
    server.signal("TERM");

    let response = conn.response().expect("the in-flight query's response");
    assert_eq!(response.status, 200, "{response:?}");
    assert!(response.closes(), "{response:?}");
    let body = response.body_text();
    assert!(
        body.starts_with(r#"{"id":1,"name":"Ada Lovelace","#),
        "{body}"
    );
    assert!(body.ends_with(r#","slept":""}"#), "{body}");
    assert!(
        conn.at_eof(),
        "the connection stays open after Connection: close"
    );
    drop(conn);

    let status = server.wait_exit(Duration::from_secs(2) + SLACK);
    assert_eq!(status.code(), Some(0), "log:\n{}", server.log_text());
    assert!(signalled.elapsed() < Duration::from_secs(2) + SLACK);
    let closed = server.wait_for_log("DB pool closed");
    assert!(
        closed.contains("2 workers disconnected and joined"),
        "{closed}"
    );
    server.wait_for_log("Drained requests and closed DB pool. Bye.");
    wait_no_connections(&pg);
}

#[test]
fn query_running_at_the_deadline_is_cancelled_and_the_client_gets_503() {
    let pg = with_schema();
    slow_users(&pg, 30);
    let mut server = lastcall(&pg, &[("SHUTDOWN_TIMEOUT_MS", "1000")]);

    let mut conn = Reader::new(server.connect());
    conn.send(b"GET /users/1 HTTP/1.1\r\nHost: test\r\n\r\n");
    wait_sleeping_queries(&pg, 1);
    let signalled = Instant::now();
    server.signal("TERM");

    let response = conn.response().expect("a 503 at the deadline");
    assert_eq!(response.status, 503, "{response:?}");
    assert_eq!(response.header("retry-after"), Some("1"), "{response:?}");
    assert!(response.closes(), "{response:?}");

    // The deadline (1 s) plus the pool's close bound (2 s) at most, far from the 30 s
    // the query would take if it were left running.
    let status = server.wait_exit(Duration::from_secs(3) + SLACK);
    assert_eq!(status.code(), Some(1), "log:\n{}", server.log_text());
    assert!(
        signalled.elapsed() < Duration::from_secs(3) + SLACK,
        "exit took {:?}",
        signalled.elapsed()
    );
    server.wait_for_log("cancelled 1 database queries");
    // PostgreSQL itself stopped the query: without the cancel, the backend would sleep
    // on until its statement_timeout (4.5 s), whether or not its client is still there.
    wait_sleeping_queries(&pg, 0);
    wait_no_connections(&pg);
}

#[test]
fn sigterm_while_the_database_is_down_exits_0_at_once() {
    let pg = with_schema();
    pg.stop_immediate();
    let mut server = lastcall(&pg, &[]);
    server.wait_for_log("database unavailable");

    let signalled = Instant::now();
    server.signal("TERM");
    // Workers waiting to reconnect are not waiting for the database: the pool closes
    // in milliseconds, far inside its 2 s bound.
    let status = server.wait_exit(SLACK);
    assert_eq!(status.code(), Some(0), "log:\n{}", server.log_text());
    assert!(
        signalled.elapsed() < SLACK,
        "exit took {:?}",
        signalled.elapsed()
    );
    let closed = server.wait_for_log("DB pool closed");
    assert!(
        closed.contains("2 workers disconnected and joined"),
        "{closed}"
    );
}

#[test]
fn clean_exit_leaves_no_connection_behind() {
    let pg = with_schema();
    let mut server = lastcall(&pg, &[("DB_POOL_SIZE", "3")]);
    wait_connected(&server, &pg, 3);
    assert_eq!(get(&server, "/users/1").body_text(), ADA);

    server.signal("TERM");
    let status = server.wait_exit(PATIENCE);
    assert_eq!(status.code(), Some(0), "log:\n{}", server.log_text());
    let closed = server.wait_for_log("DB pool closed");
    assert!(
        closed.contains("3 workers disconnected and joined"),
        "{closed}"
    );
    wait_no_connections(&pg);
}

// ---------------------------------------------------------------------------------------
// 4. A database that never answers
// ---------------------------------------------------------------------------------------

/// The longest a database request may wait for its answer: its time in the queue plus
/// its queries' time, on top of a first connection attempt. Used only to catch hangs.
fn answer_bound() -> Duration {
    CONNECT_TIMEOUT + QUEUE_TIMEOUT + QUERY_TIMEOUT + SLACK
}

#[test]
fn silent_database_answers_503_within_the_bounds_instead_of_hanging() {
    let silent = SilentListener::start();
    let server = Server::start(
        &[("DATABASE_URL", &silent.url()), ("DB_POOL_SIZE", POOL_SIZE)],
        &[],
    );

    // Sent at once: the request may meet the workers' first attempts, which the connect
    // bound ends.
    let asked = Instant::now();
    let response = get(&server, "/users/1");
    assert_eq!(response.status, 503, "{response:?}");
    assert_eq!(response.body_text(), UNAVAILABLE);
    assert!(
        asked.elapsed() < answer_bound(),
        "answered after {:?}",
        asked.elapsed()
    );
    server.wait_for_log("db worker 0: database unavailable");
}

#[test]
fn silent_database_answers_every_client_frees_their_sockets_and_exits_0_on_sigterm() {
    let silent = SilentListener::start();
    let mut server = Server::start(
        &[("DATABASE_URL", &silent.url()), ("DB_POOL_SIZE", POOL_SIZE)],
        &[],
    );
    for worker in 0..2 {
        server.wait_for_log(&format!("db worker {worker}: database unavailable"));
    }
    let baseline = held_connections(&server);

    all_answered_unavailable(&server, 100);
    // The clients have left (their sockets dropped with their threads).
    wait_held_connections(&server, baseline);

    let signalled = Instant::now();
    server.signal("TERM");
    let status = server.wait_exit(PATIENCE);
    assert_eq!(status.code(), Some(0), "log:\n{}", server.log_text());
    assert!(
        signalled.elapsed() < CONNECT_TIMEOUT + SLACK,
        "exit took {:?}",
        signalled.elapsed()
    );
}

#[test]
fn frozen_database_answers_503_within_the_bounds_then_recovers_after_sigcont() {
    let pg = with_schema();
    let server = serving(&pg);
    let baseline = held_connections(&server);

    let frozen = pg.freeze();
    // More requests than workers. Five clients ask and leave at once: their jobs take
    // both workers into the query bound, with nobody left to answer, and must hold
    // nothing when they end. The twenty that wait meet the queue's bound.
    let asked = Instant::now();
    for _ in 0..5 {
        let mut conn = Reader::new(server.connect());
        conn.send(b"GET /users/1 HTTP/1.1\r\nHost: test\r\n\r\n");
    }
    all_answered_unavailable(&server, 20);
    assert!(
        asked.elapsed() < answer_bound(),
        "answered after {:?}",
        asked.elapsed()
    );
    server.wait_for_log("no answer within");
    wait_held_connections(&server, baseline);

    drop(frozen);
    wait_users_1_recovers(&server);
}

#[test]
fn slow_query_on_a_live_database_is_stopped_by_postgresql_and_the_worker_stays_connected() {
    let (pg, server) = serving_slowly(30);

    // The statement bound PostgreSQL enforces comes inside ours: the database cancels
    // the query itself and the session survives.
    let asked = Instant::now();
    let response = get(&server, "/users/1");
    assert_eq!(response.status, 503, "{response:?}");
    assert_eq!(response.body_text(), r#"{"error":"query failed"}"#);
    assert!(
        asked.elapsed() < QUERY_TIMEOUT + SLACK,
        "answered after {:?}",
        asked.elapsed()
    );
    let db = get(&server, "/db");
    assert_eq!(db.status, 200, "{db:?}");
    let log = server.log_text();
    assert!(!log.contains("no answer within"), "log:\n{log}");
    assert!(!log.contains("connection lost"), "log:\n{log}");
    assert_eq!(pg.our_connections(), 2);
}

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// Sends `/users/1` on `n` connections at once, then checks that each got
/// `503 database unavailable`. Each client waits on a thread of its own; the sockets are
/// dropped with their threads.
fn all_answered_unavailable(server: &Server, n: usize) {
    let clients: Vec<_> = (0..n)
        .map(|_| {
            let mut conn = Reader::new(server.connect());
            conn.send(b"GET /users/1 HTTP/1.1\r\nHost: test\r\n\r\n");
            thread::spawn(move || conn.response())
        })
        .collect();
    for (i, client) in clients.into_iter().enumerate() {
        let response = client.join().expect("client thread");
        let response = response.unwrap_or_else(|e| panic!("client {i}: {e:?}"));
        assert_eq!(response.status, 503, "client {i}: {response:?}");
        assert_eq!(response.body_text(), UNAVAILABLE, "client {i}");
    }
}

/// How many sockets on its HTTP port the server holds (its listener and the client
/// connections it has not closed): its descriptors in `/proc/<pid>/fd` whose inodes
/// `/proc/<pid>/net/tcp` lists with the server's local port. The database sockets are left
/// out on purpose: the workers open and close them as they retry, on their own schedule.
fn held_connections(server: &Server) -> usize {
    let pid = server.pid();
    let port = format!(":{:04X}", server.addr.port());
    let tcp = fs::read_to_string(format!("/proc/{pid}/net/tcp")).unwrap_or_default();
    // "sl local_address rem_address st tx_queue:rx_queue tr:when retrnsmt uid timeout inode"
    let on_port: HashSet<&str> = tcp
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local = *fields.get(1)?;
            local.ends_with(&port).then(|| fields.get(9).copied())?
        })
        .collect();
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    fds.flatten()
        .filter_map(|fd| fs::read_link(fd.path()).ok())
        .filter_map(|target| {
            let target = target.to_str()?.to_owned();
            let inode = target
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .to_owned();
            on_port.contains(inode.as_str()).then_some(())
        })
        .count()
}

/// Waits until the server holds no more sockets on its port than `baseline`.
fn wait_held_connections(server: &Server, baseline: usize) {
    // The listener is always among them: a count of 0 means /proc was misread.
    assert!(
        baseline >= 1,
        "the server's listener was not found in /proc"
    );
    let settled = poll(PATIENCE, || {
        (held_connections(server) <= baseline).then_some(())
    });
    assert!(
        settled.is_some(),
        "the server still holds {} sockets on its port, {baseline} before the clients came",
        held_connections(server)
    );
}

/// A fresh cluster with `schema.sql` loaded.
fn with_schema() -> Postgres {
    let pg = Postgres::start_new();
    pg.load_schema();
    pg
}

/// Starts lastcall on `pg` with a small pool; `env` adds or overrides settings.
fn lastcall(pg: &Postgres, env: &[(&str, &str)]) -> Server {
    let url = pg.url();
    let mut all = vec![("DATABASE_URL", url.as_str()), ("DB_POOL_SIZE", POOL_SIZE)];
    all.extend_from_slice(env);
    Server::start(&all, &[])
}

/// lastcall on `pg` with both workers connected and `/users/1` answered from the table.
fn serving(pg: &Postgres) -> Server {
    let server = lastcall(pg, &[]);
    wait_connected(&server, pg, 2);
    assert_eq!(get(&server, "/users/1").body_text(), ADA);
    server
}

/// A cluster whose `users` sleeps `secs` per row, and lastcall on it with both workers
/// connected.
fn serving_slowly(secs: u32) -> (Postgres, Server) {
    let pg = with_schema();
    slow_users(&pg, secs);
    let server = lastcall(&pg, &[]);
    wait_connected(&server, &pg, 2);
    (pg, server)
}

/// Makes `users` slow: a view over the real table that sleeps `secs` per row it returns.
/// `/users/1` then holds a worker (and a PostgreSQL backend) for that long, and its row
/// gains a `"slept":""` column.
fn slow_users(pg: &Postgres, secs: u32) {
    pg.psql(&format!(
        "ALTER TABLE users RENAME TO users_t; \
         CREATE VIEW users AS SELECT u.*, pg_sleep({secs})::text AS slept FROM users_t u;"
    ));
}

/// Waits until `n` workers have logged their connection and PostgreSQL counts `n` of
/// our sessions.
fn wait_connected(server: &Server, pg: &Postgres, n: usize) {
    for worker in 0..n {
        server.wait_for_log(&format!("db worker {worker}: connected"));
    }
    let seen = poll(PATIENCE, || (pg.our_connections() == n).then_some(()));
    assert!(
        seen.is_some(),
        "PostgreSQL never counted {n} lastcall sessions (now {})",
        pg.our_connections()
    );
}

/// Waits until exactly `n` sessions are inside `pg_sleep`: 1 means our query is
/// running, 0 means no query of ours is left running.
fn wait_sleeping_queries(pg: &Postgres, n: usize) {
    let sql = "SELECT count(*) FROM pg_stat_activity \
               WHERE wait_event = 'PgSleep' AND application_name = 'lastcall'";
    let seen = poll(PATIENCE, || (pg.psql(sql) == n.to_string()).then_some(()));
    assert!(
        seen.is_some(),
        "expected {n} lastcall sessions in pg_sleep: {}",
        pg.psql(
            "SELECT string_agg(application_name || ' ' || coalesce(state, '') || ' ' \
             || coalesce(wait_event, '') || ' ' || query, E'\\n') FROM pg_stat_activity"
        )
    );
}

/// Waits until PostgreSQL has noticed every lastcall session end.
fn wait_no_connections(pg: &Postgres) {
    let gone = poll(PATIENCE, || (pg.our_connections() == 0).then_some(()));
    assert!(
        gone.is_some(),
        "{} lastcall sessions remain after exit",
        pg.our_connections()
    );
}

/// Asks `/users/1` every `POLL_EVERY` until it answers 200 with Ada's row, within
/// `RECOVERY`. Anything but 200 on the way must be the 503 of a database that is not
/// back yet.
fn wait_users_1_recovers(server: &Server) {
    let answered = poll(RECOVERY, || {
        let response = get(server, "/users/1");
        if response.status == 200 {
            return Some(response);
        }
        assert_eq!(response.status, 503, "{response:?}");
        assert_eq!(response.body_text(), UNAVAILABLE);
        None
    });
    let recovered = answered.unwrap_or_else(|| {
        panic!(
            "/users/1 did not recover within {RECOVERY:?}; log:\n{}",
            server.log_text()
        )
    });
    assert_eq!(recovered.body_text(), ADA);
}

/// Calls `f` every `POLL_EVERY` until it returns `Some`, for at most `limit`.
fn poll<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(value) = f() {
            return Some(value);
        }
        if start.elapsed() >= limit {
            return None;
        }
        thread::sleep(POLL_EVERY);
    }
}

/// Parses `{"id":N,"randomNumber":M}`, exactly that shape.
fn world_row(body: &str) -> Option<(i64, i64)> {
    let rest = body.strip_prefix(r#"{"id":"#)?;
    let (id, rest) = rest.split_once(r#","randomNumber":"#)?;
    let n = rest.strip_suffix('}')?;
    Some((id.parse().ok()?, n.parse().ok()?))
}
