//! What a person reading the log sees when the database goes away and comes back: the
//! real binary, four workers, and a throwaway cluster per test (`support::pg`).
//!
//! An outage reads as one warning when it starts and one line when it ends, however many
//! workers retry how often; each attempt is still there at debug (the tests run the
//! server with `RUST_LOG=debug`). The per-minute summary of a long outage is tested
//! without waiting a minute, in `src/db/outage.rs`.

#![cfg(feature = "postgres")]

mod support;

use support::pg::Postgres;
use support::{Server, get};

/// Enough workers that one line per worker per retry would show.
const POOL_SIZE: &str = "4";

/// The level env_logger prints after the timestamp: `[<time> WARN  lastcall::db] ...`.
fn level(line: &str) -> &str {
    line.trim_start_matches('[')
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
}

/// The lines containing `needle`, as (level, line).
fn lines_with<'a>(log: &'a str, needle: &str) -> Vec<(&'a str, &'a str)> {
    log.lines()
        .filter(|line| line.contains(needle))
        .map(|line| (level(line), line))
        .collect()
}

/// No worker warns about its own attempts: only the outage's lines are above debug.
fn assert_no_worker_warnings(log: &str) {
    let warned: Vec<_> = lines_with(log, "db worker")
        .into_iter()
        .filter(|(level, _)| *level == "WARN")
        .collect();
    assert!(warned.is_empty(), "{warned:?}; log:\n{log}");
}

fn lastcall(pg: &Postgres) -> Server {
    let url = pg.url();
    Server::start(
        &[("DATABASE_URL", url.as_str()), ("DB_POOL_SIZE", POOL_SIZE)],
        &[],
    )
}

#[test]
fn database_down_at_start_up_warns_once_then_says_once_that_it_is_reachable() {
    let pg = Postgres::start_new();
    pg.load_schema();
    pg.stop_immediate();
    let server = lastcall(&pg);
    server.wait_for_log("database unreachable");
    // Several rounds of retries by every worker (backoff 100, 200, 400, 800 ms...).
    server.wait_for_log("retrying in 1600ms");

    pg.start();
    let back = server.wait_for_log("database reachable after");
    assert_eq!(level(&back), "INFO", "{back}");
    assert!(back.contains("failed attempts)"), "{back}");

    let log = server.log_text();
    let unreachable = lines_with(&log, "database unreachable");
    assert_eq!(unreachable.len(), 1, "log:\n{log}");
    assert_eq!(unreachable[0].0, "WARN", "{unreachable:?}");
    assert!(
        unreachable[0]
            .1
            .ends_with("workers retry with backoff up to 5s"),
        "{unreachable:?}"
    );
    assert_eq!(
        lines_with(&log, "database reachable").len(),
        1,
        "log:\n{log}"
    );
    assert_no_worker_warnings(&log);
}

#[test]
fn database_killed_mid_run_is_one_warning_with_the_lost_connection_then_one_line_back() {
    let pg = Postgres::start_new();
    pg.load_schema();
    let server = lastcall(&pg);
    for worker in 0..4 {
        server.wait_for_log(&format!("db worker {worker}: connected"));
    }

    pg.stop_immediate();
    // Each request finds a worker's session dead, or no worker connected.
    for _ in 0..4 {
        assert_eq!(get(&server, "/users/1").status, 503);
    }
    let warning = server.wait_for_log("database unreachable");
    assert_eq!(level(&warning), "WARN", "{warning}");
    assert!(warning.contains("connection lost"), "{warning}");
    server.wait_for_log("retrying in 800ms");

    pg.start();
    let back = server.wait_for_log("database reachable again after");
    assert_eq!(level(&back), "INFO", "{back}");

    let log = server.log_text();
    assert_eq!(
        lines_with(&log, "database unreachable").len(),
        1,
        "log:\n{log}"
    );
    assert_eq!(
        lines_with(&log, "database reachable").len(),
        1,
        "log:\n{log}"
    );
    assert_no_worker_warnings(&log);
}
