//! The command line and start-up, as a user meets them: what the real binary prints, how
//! it exits, and what it serves when no database is configured.
//!
//! 1. the database setting: without `DATABASE_URL` (unset or empty) the server runs and
//!    its database routes answer 503, in both builds; a build without the `postgres`
//!    feature refuses a `DATABASE_URL` (exit 2) instead of ignoring it;
//! 2. `--version` and `--help`: printed on stdout, exit 0, help winning over version;
//! 3. the listening address: `--listen` and `--port` together are a usage error (exit 2),
//!    and an address already in use fails the start (exit 1) with one line saying so;
//! 4. the event loops: a bad `WORKERS` exits 2 naming it; `auto` runs one per CPU.

mod support;

use support::{Server, get, run_to_exit};

// ---------------------------------------------------------------------------------------
// 1. The database setting
// ---------------------------------------------------------------------------------------

#[test]
fn users_id_answers_503_not_configured_without_database_url() {
    // An empty variable (`DATABASE_URL=` in a compose file) counts as unset.
    let unset: &[(&str, &str)] = &[];
    for env in [unset, &[("DATABASE_URL", "")]] {
        let server = Server::start(env, &[]);
        for path in ["/users/1", "/db"] {
            let response = get(&server, path);
            assert_eq!(response.status, 503, "{env:?} {path}: {response:?}");
            assert_eq!(
                response.body_text(),
                r#"{"error":"database not configured"}"#,
                "{env:?} {path}"
            );
        }
    }
}

#[cfg(not(feature = "postgres"))]
#[test]
fn database_url_exits_2_when_the_build_has_no_postgres_support() {
    let url = "postgres://app@db.internal/app";
    let flag = format!("--database-url={url}");
    let from_env = run_to_exit(&[("DATABASE_URL", url)], &[]);
    let from_flag = run_to_exit(&[], &[&flag]);
    for exited in [from_env, from_flag] {
        assert_eq!(exited.status.code(), Some(2), "{exited:?}");
        assert_eq!(
            exited.stderr,
            "lastcall: DATABASE_URL is set, but this build has no PostgreSQL support \
             (cargo feature \"postgres\")\n",
            "one line on stderr, and nothing else"
        );
    }
}

// ---------------------------------------------------------------------------------------
// 2. --version and --help
// ---------------------------------------------------------------------------------------

#[test]
fn version_prints_the_name_and_version_on_stdout_and_exits_0() {
    for flag in ["--version", "-V"] {
        let exited = run_to_exit(&[], &[flag]);
        assert_eq!(exited.status.code(), Some(0), "{flag}: {exited:?}");
        assert_eq!(
            exited.stdout,
            format!("lastcall {}\n", env!("CARGO_PKG_VERSION")),
            "{flag}"
        );
        assert_eq!(exited.stderr, "", "{flag}");
    }
}

#[test]
fn help_lists_version_and_wins_when_both_are_given() {
    for args in [["--version", "--help"], ["--help", "-V"]] {
        let exited = run_to_exit(&[], &args);
        assert_eq!(exited.status.code(), Some(0), "{args:?}: {exited:?}");
        assert!(
            exited.stdout.starts_with("lastcall: an HTTP/1.1 server"),
            "{args:?}: {}",
            exited.stdout
        );
        assert!(
            exited.stdout.contains("lastcall -V | --version"),
            "{args:?}: {}",
            exited.stdout
        );
        assert_eq!(exited.stderr, "", "{args:?}");
    }
}

// ---------------------------------------------------------------------------------------
// 3. The listening address
// ---------------------------------------------------------------------------------------

#[test]
fn listen_and_port_together_exit_2_naming_both_flags() {
    // `command()` already gives `--listen 127.0.0.1:0`.
    let exited = run_to_exit(&[], &["--port", "0"]);
    assert_eq!(exited.status.code(), Some(2), "{exited:?}");
    assert_eq!(
        exited.stderr,
        "lastcall: --listen and --port both set the listening address: give one (see --help)\n"
    );
}

#[test]
fn port_in_use_exits_1_saying_it_cannot_listen_on_the_address() {
    let first = Server::start(&[], &[]);
    let addr = first.addr.to_string();
    // A later `--listen` wins over the one `command()` gives.
    let exited = run_to_exit(&[], &["--listen", &addr]);
    assert_eq!(exited.status.code(), Some(1), "{exited:?}");
    assert!(
        exited
            .stderr
            .starts_with(&format!("lastcall: cannot listen on {addr}: ")),
        "{}",
        exited.stderr
    );
    assert!(exited.stderr.contains("in use"), "{}", exited.stderr);
    assert!(!exited.stderr.contains("Listening on"), "{}", exited.stderr);
    // The server that holds the address is not disturbed.
    assert_eq!(get(&first, "/live").status, 200);
}

// ---------------------------------------------------------------------------------------
// 4. The event loops
// ---------------------------------------------------------------------------------------

#[test]
fn workers_out_of_range_exits_2_naming_the_setting() {
    let exited = run_to_exit(&[("WORKERS", "0")], &[]);
    assert_eq!(exited.status.code(), Some(2), "{exited:?}");
    assert_eq!(
        exited.stderr,
        "lastcall: invalid WORKERS=0: expected a count from 1 to 1024, or auto (one per CPU)\n"
    );
}

#[test]
fn workers_auto_runs_one_loop_per_cpu_the_process_may_use() {
    // The binary inherits this process's CPU affinity, so it counts what we count.
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let server = Server::start(&[], &["--workers", "auto"]);
    if cpus > 1 {
        server.wait_for_log(&format!("{cpus} event loops share the listener"));
    }
    assert_eq!(get(&server, "/live").status, 200);
}

#[test]
fn metrics_listen_in_use_exits_1_naming_the_setting() {
    let first = Server::start(&[], &[]);
    let addr = first.addr.to_string();
    let exited = run_to_exit(&[("METRICS_LISTEN", &addr)], &[]);
    assert_eq!(exited.status.code(), Some(1), "{exited:?}");
    assert!(
        exited.stderr.starts_with(&format!(
            "lastcall: cannot listen on {addr} (METRICS_LISTEN): "
        )),
        "{}",
        exited.stderr
    );
    assert!(!exited.stderr.contains("Listening on"), "{}", exited.stderr);
}
