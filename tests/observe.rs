//! What an operator sees, against the real binary: `/metrics` (on the main port, and on
//! `METRICS_LISTEN` through a drain), the access log, and the log lines.
//!
//! The numbers are checked exactly against what the clients did: requests by route and
//! status class, bytes both ways, connections accepted and closed by reason, the duration
//! histogram, and — through a shutdown with idle, in-flight, 503-at-deadline and cut
//! connections — the shutdown's own counts, which must agree with the one-line report.
//! Every exposition is checked with `promtool check metrics`. Every wait is bounded.

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant};

use support::{PATIENCE, Reader, Server, command, get, metric, parse_metrics, promtool_check};

/// One scrape of `/metrics` at `addr`: the text, checked by promtool, and its samples.
fn scrape(addr: SocketAddr) -> (String, HashMap<String, f64>) {
    let conn = TcpStream::connect_timeout(&addr, PATIENCE).expect("connect to /metrics");
    conn.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut reader = Reader::new(conn);
    reader.send(b"GET /metrics HTTP/1.1\r\nHost: prometheus\r\n\r\n");
    let response = reader.response().expect("a /metrics response");
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(
        response.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = response.body_text();
    promtool_check(&text);
    let samples = parse_metrics(&text);
    (text, samples)
}

/// Scrapes `addr` until `done` holds for the samples, at most [`PATIENCE`].
fn scrape_until(
    addr: SocketAddr,
    what: &str,
    done: impl Fn(&HashMap<String, f64>) -> bool,
) -> HashMap<String, f64> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (text, samples) = scrape(addr);
        if done(&samples) {
            return samples;
        }
        assert!(
            Instant::now() < deadline,
            "never {what}; last scrape:\n{text}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// Sends `request` whole on a new connection and reads until the server closes: the
/// bytes each way, exactly.
fn exchange(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut conn = TcpStream::connect_timeout(&addr, PATIENCE).expect("connect");
    conn.set_read_timeout(Some(PATIENCE)).unwrap();
    conn.write_all(request).expect("send");
    let mut got = Vec::new();
    conn.read_to_end(&mut got).expect("read to the close");
    got
}

/// How many responses in `bytes` start with `status_line`.
fn count(bytes: &[u8], status_line: &str) -> usize {
    String::from_utf8_lossy(bytes).matches(status_line).count()
}

/// `name{labels}` as the exposition writes a series.
fn series(name: &str, labels: &[(&str, &str)]) -> String {
    let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    format!("{name}{{{}}}", labels.join(","))
}

fn requests(route: &str, class: &str) -> String {
    series(
        "lastcall_requests_total",
        &[("route", route), ("class", class)],
    )
}

#[test]
fn metrics_on_the_main_port_pass_promtool_and_count_their_own_requests() {
    let server = Server::start(&[], &[]);
    assert_eq!(get(&server, "/plaintext").status, 200);
    let (text, samples) = scrape(server.addr);
    assert_eq!(metric(&samples, &requests("/plaintext", "2xx")), 1.0);
    // The scrape is answered after its text is written: it is not in it yet.
    assert!(
        !samples.contains_key(&requests("/metrics", "2xx")),
        "{text}"
    );
    let (_, samples) = scrape(server.addr);
    assert_eq!(metric(&samples, &requests("/metrics", "2xx")), 1.0);
    let loops = std::env::var("LASTCALL_TEST_WORKERS").map_or(1.0, |n| n.parse().unwrap());
    assert_eq!(metric(&samples, "lastcall_loops"), loops);
    assert_eq!(
        metric(
            &samples,
            &series("lastcall_shutdown_phase", &[("phase", "serving")])
        ),
        1.0
    );
}

/// A known mix on the main port, and `/metrics` on `METRICS_LISTEN` agreeing with it in
/// every number the clients can know.
#[test]
fn metrics_agree_exactly_with_what_the_clients_did() {
    let server = Server::start(&[("METRICS_LISTEN", "127.0.0.1:0")], &[]);
    let metrics = server.metrics_addr();

    // One keep-alive connection: 5 × 200, 3 × 404, 2 × 405, and a slow 200 that closes.
    let mut mix = Vec::new();
    for _ in 0..5 {
        mix.extend_from_slice(b"GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n");
    }
    for _ in 0..3 {
        mix.extend_from_slice(b"GET /nope HTTP/1.1\r\nHost: t\r\n\r\n");
    }
    for _ in 0..2 {
        mix.extend_from_slice(b"POST /plaintext HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n");
    }
    mix.extend_from_slice(b"GET /work?ms=300 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    let answered = exchange(server.addr, &mix);
    assert_eq!(count(&answered, "HTTP/1.1 200 "), 6);
    assert_eq!(count(&answered, "HTTP/1.1 404 "), 3);
    assert_eq!(count(&answered, "HTTP/1.1 405 "), 2);
    // Two requests that break a rule: answered 400 by the server itself, and closed.
    let bad = b"GET /a#b HTTP/1.1\r\nHost: t\r\n\r\n";
    let refused = [exchange(server.addr, bad), exchange(server.addr, bad)];
    for r in &refused {
        assert_eq!(count(r, "HTTP/1.1 400 "), 1);
    }
    // The main port does not serve `/metrics` when it has an address of its own.
    let ask_hidden = b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    let hidden = exchange(server.addr, ask_hidden);
    assert_eq!(count(&hidden, "HTTP/1.1 404 "), 1);

    // `METRICS_LISTEN` serves `/metrics` and nothing else.
    let elsewhere = exchange(metrics, b"GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(count(&elsewhere, "HTTP/1.1 404 "), 1);
    let posted = exchange(metrics, b"POST /metrics HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(count(&posted, "HTTP/1.1 405 "), 1);
    assert!(String::from_utf8_lossy(&posted).contains("Allow: GET, HEAD\r\n"));

    let s = scrape_until(metrics, "every connection closed", |s| {
        s.get("lastcall_connections_open") == Some(&0.0)
    });
    assert_eq!(metric(&s, &requests("/plaintext", "2xx")), 5.0);
    assert_eq!(metric(&s, &requests("/work", "2xx")), 1.0);
    // 404s and 405s: the handler named no route for them.
    assert_eq!(metric(&s, &requests("other", "4xx")), 5.0);
    // Refused before any handler: the server's own answers.
    assert_eq!(metric(&s, &requests("none", "4xx")), 2.0);
    assert_eq!(metric(&s, &requests("/metrics", "4xx")), 1.0);
    let total = 5.0 + 1.0 + 5.0 + 2.0 + 1.0;
    let histogram = "lastcall_request_duration_seconds";
    assert_eq!(metric(&s, &format!("{histogram}_count")), total);
    assert_eq!(
        metric(
            &s,
            &series(&format!("{histogram}_bucket"), &[("le", "+Inf")])
        ),
        total
    );
    // The slow one took its 300 ms: past the 0.25 s bucket, within 0.5 s... or later,
    // on a loaded machine; never in the small buckets.
    let small = metric(
        &s,
        &series(&format!("{histogram}_bucket"), &[("le", "0.25")]),
    );
    assert_eq!(small, total - 1.0);
    assert!(metric(&s, &format!("{histogram}_sum")) >= 0.3);

    assert_eq!(metric(&s, "lastcall_connections_accepted_total"), 4.0);
    let closed = |reason| {
        metric(
            &s,
            &series("lastcall_connections_closed_total", &[("reason", reason)]),
        )
    };
    let closes: Vec<_> = s
        .iter()
        .filter(|(k, v)| k.starts_with("lastcall_connections_closed_total{") && **v > 0.0)
        .collect();
    assert_eq!(
        closed("done"),
        2.0,
        "the mix and the hidden /metrics asked to close: {closes:?}"
    );
    assert_eq!(closed("rejected"), 2.0);
    let all_closed: f64 = s
        .iter()
        .filter(|(k, _)| k.starts_with("lastcall_connections_closed_total{"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(all_closed, 4.0, "no other close");
    assert_eq!(metric(&s, "lastcall_connections_idle"), 0.0);
    assert_eq!(metric(&s, "lastcall_connections_active"), 0.0);

    let sent_by_clients = mix.len() + 2 * bad.len() + ask_hidden.len();
    assert_eq!(
        metric(&s, "lastcall_received_bytes_total"),
        sent_by_clients as f64
    );
    let received_by_clients =
        answered.len() + refused.iter().map(Vec::len).sum::<usize>() + hidden.len();
    assert_eq!(
        metric(&s, "lastcall_sent_bytes_total"),
        received_by_clients as f64
    );
    for kind in ["idle", "request", "write"] {
        assert_eq!(
            metric(&s, &series("lastcall_timeouts_total", &[("kind", kind)])),
            0.0
        );
    }
}

/// The shutdown, watched on `METRICS_LISTEN` while the main listener is closed: idle
/// connections closed at once, one request drained, then at the deadline one answered
/// 503 and one stream cut. What the clients saw, what `/metrics` said during the drain,
/// and the report line agree.
#[test]
fn a_drain_is_watched_on_metrics_listen_and_agrees_with_the_report() {
    let mut server = Server::start(
        &[
            ("METRICS_LISTEN", "127.0.0.1:0"),
            ("SHUTDOWN_TIMEOUT_MS", "2500"),
        ],
        &[],
    );
    let metrics = server.metrics_addr();
    let keepalive = |path: &str| {
        let mut conn = Reader::new(server.connect());
        conn.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        conn
    };
    let mut idle: Vec<Reader> = (0..2).map(|_| keepalive("/plaintext")).collect();
    for conn in &mut idle {
        assert_eq!(conn.response().expect("answered").status, 200);
    }
    let mut drained = keepalive("/work?ms=700");
    let mut answered_503 = keepalive("/work?ms=20000");
    let mut cut = keepalive("/stream?chunks=10000&ms=50");
    // A request is in flight once a later one has been answered: scraped, all five are
    // open, two of them idle.
    scrape_until(metrics, "five connections open, two idle", |s| {
        s.get("lastcall_connections_open") == Some(&5.0)
            && s.get("lastcall_connections_idle") == Some(&2.0)
    });

    server.signal("TERM");
    let s = scrape_until(
        metrics,
        "the idle two closed and the short request drained",
        |s| {
            let outcome = |o: &str| {
                s.get(&series(
                    "lastcall_shutdown_connections_total",
                    &[("outcome", o)],
                ))
                .copied()
            };
            outcome("idle_closed") == Some(2.0)
                && outcome("drained") == Some(1.0)
                && s.get("lastcall_connections_open") == Some(&2.0)
        },
    );
    assert_eq!(
        metric(
            &s,
            &series("lastcall_shutdown_phase", &[("phase", "draining")])
        ),
        1.0
    );
    assert_eq!(
        metric(
            &s,
            &series("lastcall_shutdown_phase", &[("phase", "serving")])
        ),
        0.0
    );
    assert!(metric(&s, "lastcall_shutdown_seconds_since_signal") > 0.0);
    assert_eq!(metric(&s, "lastcall_shutdown_open_at_signal"), 5.0);
    assert_eq!(
        metric(&s, "lastcall_connections_open"),
        2.0,
        "the two past the deadline"
    );
    for outcome in ["failed", "answered_503", "cut"] {
        let n = metric(
            &s,
            &series(
                "lastcall_shutdown_connections_total",
                &[("outcome", outcome)],
            ),
        );
        assert_eq!(n, 0.0, "{outcome} before the deadline");
    }

    // What the clients saw.
    for conn in &mut idle {
        assert!(conn.at_eof(), "an idle connection is closed at once");
    }
    let r = drained.response().expect("the short request is answered");
    assert_eq!((r.status, r.closes()), (200, true));
    let r = answered_503
        .response()
        .expect("the long request is answered");
    assert_eq!(r.status, 503);
    let mut streamed = Vec::new();
    let _ = cut.stream.read_to_end(&mut streamed);
    let streamed = String::from_utf8_lossy(&streamed);
    assert!(streamed.starts_with("HTTP/1.1 200 "), "{streamed}");
    assert!(
        !streamed.ends_with("0\r\n\r\n"),
        "a cut stream never gets its last chunk"
    );

    let status = server.wait_exit(PATIENCE);
    assert_eq!(status.code(), Some(1), "a deadline was needed: exit 1");
    let report = server.wait_for_log("shutdown report");
    for field in [
        "connections at signal=5 accepted after=0",
        "idle_closed=2 drained=1 failed=0 answered_503=1 cut=1",
    ] {
        assert!(report.contains(field), "{field} in {report}");
    }
}

/// Each answered request is one line of the access log in nginx's `combined` format,
/// with the client's address, the request line as sent, status and body bytes.
#[test]
fn access_log_combined_is_nginx_format() {
    let mut cmd = command(&[("ACCESS_LOG", "combined")]);
    cmd.stdout(Stdio::piped());
    let mut server = Server::start_command(&mut cmd);
    let stdout = BufReader::new(server.take_stdout());
    let mut conn = Reader::new(server.connect());
    conn.send(b"GET /plaintext?x=1 HTTP/1.1\r\nHost: t\r\nUser-Agent: probe \"1\"\r\nReferer: http://r/\r\n\r\n");
    assert_eq!(conn.response().expect("answered").status, 200);
    conn.send(b"GET /nope HTTP/1.0\r\n\r\n");
    assert_eq!(conn.response().expect("answered").status, 404);
    let mut lines = stdout.lines();
    let first = lines.next().expect("a line").expect("text");
    let second = lines.next().expect("a line").expect("text");
    let shape = |line: &str, request: &str, rest: &str| {
        assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
        assert!(line.contains(" +0000] "), "{line}");
        assert!(line.contains(&format!("] \"{request}\" {rest}")), "{line}");
    };
    shape(
        &first,
        "GET /plaintext?x=1 HTTP/1.1",
        "200 13 \"http://r/\" \"probe \\\"1\\\"\"",
    );
    shape(&second, "GET /nope HTTP/1.0", "404 21 \"-\" \"-\"");
}

/// `ACCESS_LOG=json`: one object a line, every field named; the line of a connection's
/// last answer says how it ended.
#[test]
fn access_log_json_names_every_field() {
    let mut cmd = command(&[("ACCESS_LOG", "json")]);
    cmd.stdout(Stdio::piped());
    let mut server = Server::start_command(&mut cmd);
    let stdout = BufReader::new(server.take_stdout());
    let ok = exchange(
        server.addr,
        b"GET /json HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(count(&ok, "HTTP/1.1 200 "), 1);
    let refused = exchange(server.addr, b"GET /a#b HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(count(&refused, "HTTP/1.1 400 "), 1);
    let mut lines = stdout.lines();
    let first = lines.next().expect("a line").expect("text");
    for field in [
        "{\"time\":\"20",
        "\"remote\":\"127.0.0.1:",
        "\"method\":\"GET\"",
        "\"target\":\"/json\"",
        "\"version\":\"HTTP/1.1\"",
        "\"status\":200",
        "\"bytes\":27",
        "\"duration_s\":",
        "\"ended\":\"done\"",
    ] {
        assert!(first.contains(field), "{field} in {first}");
    }
    let second = lines.next().expect("a line").expect("text");
    for field in [
        "\"method\":\"-\"",
        "\"status\":400",
        "\"ended\":\"rejected\"",
    ] {
        assert!(second.contains(field), "{field} in {second}");
    }
    assert_ne!(
        conn_id(&first),
        conn_id(&second),
        "two connections, two ids"
    );
}

/// The `c<N>` id in a JSON access-log line.
fn conn_id(line: &str) -> u64 {
    let (_, rest) = line.split_once("\"conn\":\"c").expect("a conn id");
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().expect("c and a number")
}

/// An output that never takes its lines (a pipe nobody reads) costs lines, counted in
/// `/metrics` and in the log at exit — never a request: every request is still answered,
/// and the shutdown still ends within its bound.
#[test]
fn a_stalled_access_log_drops_lines_and_never_a_request() {
    let mut cmd = command(&[("ACCESS_LOG", "json"), ("METRICS_LISTEN", "127.0.0.1:0")]);
    cmd.stdout(Stdio::piped());
    let mut server = Server::start_command(&mut cmd);
    let _unread = server.take_stdout();
    let metrics = server.metrics_addr();
    let mut conn = Reader::new(server.connect());
    // Each line over 4 KiB (its User-Agent), so each is a batch of its own: the pipe fills
    // (64 KiB), then the writer's queue, then lines are dropped.
    let request = format!(
        "GET /plaintext HTTP/1.1\r\nHost: t\r\nUser-Agent: {}\r\n\r\n",
        "a".repeat(5000)
    );
    for i in 0..3000 {
        conn.send(request.as_bytes());
        let r = conn
            .response()
            .unwrap_or_else(|e| panic!("request {i} not answered: {e:?}"));
        assert_eq!(r.status, 200);
    }
    let s = scrape_until(metrics, "dropped lines counted", |s| {
        s.get("lastcall_access_log_dropped_lines_total")
            .is_some_and(|n| *n > 0.0)
    });
    assert_eq!(metric(&s, &requests("/plaintext", "2xx")), 3000.0);
    drop(conn);
    server.signal("TERM");
    assert_eq!(server.wait_exit(PATIENCE).code(), Some(0));
    server.wait_for_log("lines dropped, the output did not keep up");
}

/// Debug logs name connections `c1`, `c2`... and give one line per request: method,
/// target, status, duration.
#[test]
fn debug_lines_name_connections_and_requests() {
    let server = Server::start(&[], &[]);
    assert_eq!(get(&server, "/json").status, 200);
    assert_eq!(get(&server, "/nope").status, 404);
    let line = server.wait_for_log(" GET /json 200 ");
    let id = line
        .split(' ')
        .find(|w| w.starts_with('c') && w[1..].parse::<u64>().is_ok())
        .unwrap_or_else(|| panic!("no connection id in {line:?}"));
    assert!(line.ends_with("ms"), "a duration: {line}");
    server.wait_for_log(" GET /nope 404 ");
    // The same name in its close line.
    server.wait_for_log(&format!("{id}: closed ("));
    assert!(
        !server.log_text().contains("conn "),
        "{}",
        server.log_text()
    );
}

/// A client that connects to `METRICS_LISTEN` and never asks holds that port's thread for
/// its timeout (5 s), never the exit: the process ends right after its report.
#[test]
fn a_stalled_scrape_does_not_hold_the_exit() {
    let mut server = Server::start(&[("METRICS_LISTEN", "127.0.0.1:0")], &[]);
    let metrics = server.metrics_addr();
    scrape(metrics);
    let _silent = TcpStream::connect_timeout(&metrics, PATIENCE).expect("connect");
    // Time for the scrape thread to take it and wait on it (it looks every 200 ms).
    thread::sleep(Duration::from_millis(300));
    let signalled = Instant::now();
    server.signal("TERM");
    assert_eq!(server.wait_exit(PATIENCE).code(), Some(0));
    // Below the scrape's 5 s timeout: only catches an exit that waited for it.
    assert!(
        signalled.elapsed() < Duration::from_secs(4),
        "{:?}",
        signalled.elapsed()
    );
}
