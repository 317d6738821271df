#!/usr/bin/env python3
"""Shutdown latency: time from the stop signal to process exit with N idle keep-alive
connections and no request in flight, lastcall (SIGTERM) against nginx's graceful quit
(SIGQUIT to the master, which is what `nginx -s quit` sends; one worker), in the same run.

    python3 benches/shutdown.py [--connections N] [--runs R]

What one run of one server does:
 1. start the server on 127.0.0.1 (pinned to CPU 0 with `taskset -c 0` when it exists;
    this client runs on CPU 1 when there is one);
 2. open N connections, send one `GET /plaintext HTTP/1.1` on each and read the whole
    200 response, so every connection is a real idle keep-alive connection;
 3. check that no connection was closed before the signal, then send the signal
    (t0 = time.monotonic() just before os.kill);
 4. wait, on a pidfd, for the process to exit (signal->exit), and, on epoll, for every
    client socket to see EOF (signal->all-EOF);
 5. check the exit code is 0 and, for lastcall, that its shutdown report line says
    idle_closed=N.
Runs alternate which server goes first, so drift (page cache, TIME_WAIT, thermal) hits
both. The table goes to stdout twice: as text, then as Markdown for the README.

Why `/plaintext` and not `/`: both servers answer `/` with a 404; `/plaintext` is a 200 on
both (the generated nginx config has the same two TechEmpower routes as lastcall), so both
sides hold the same kind of connection: one that just finished a successful keep-alive
exchange.

The setup (building, starting and pinning the servers, opening the idle connections) lives
in benchlib.py, shared with load.py, which also imports this file for `one_run`.

Python 3 standard library only; Linux only (epoll, pidfd, taskset, /proc). It installs
nothing: it tells you how to install nginx when it is missing. Every loop is bounded in
count and time, and it only ever signals or kills the processes it started, by PID.
"""

import argparse
import gc
import os
import select
import shutil
import statistics
import sys
import tempfile
import time

from benchlib import (
    CLIENT_CPU, DEFAULT_WINDOW, Lastcall, Nginx, build_lastcall, check_args, git_rev, log,
    machine_lines, nofile_for, nproc, open_idle_connections, pin_prefix, require_tools,
    render_table, stop, version_of,
)

# Events taken from the client sockets per turn while measuring, so the pidfd (polled
# separately) is looked at least every BATCH socket events.
BATCH = 256


# --------------------------------------------------------------------------- one run


def measure_shutdown(proc, sig, socks, timeout):
    """Sends `sig` to `proc` and times, from just before os.kill, the process exit and the
    last client EOF. Returns a dict; never waits longer than `timeout` seconds."""
    n = len(socks)
    by_fd = {s.fileno(): s for s in socks}
    inner = select.epoll(sizehint=n)
    outer = select.epoll()
    pidfd = None
    result = {"exit_ms": None, "eof_ms": None, "first_eof_ms": None, "eofs": 0, "resets": 0, "data": 0,
              "early": 0, "returncode": None}
    try:
        for fd in by_fd:
            inner.register(fd, select.EPOLLIN | select.EPOLLRDHUP)
        # Before the signal, no client may be readable: each is idle, nothing was closed.
        early = inner.poll(0)
        if early:
            result["early"] = len(early)
            return result
        # The sockets sit in their own epoll, nested in `outer` next to the pidfd, so the
        # exit is noticed within one BATCH of EOFs however many are queued before it.
        outer.register(inner.fileno(), select.EPOLLIN)
        if hasattr(os, "pidfd_open"):
            pidfd = os.pidfd_open(proc.pid)
            outer.register(pidfd, select.EPOLLIN)

        t0 = time.monotonic()
        os.kill(proc.pid, sig)
        deadline = t0 + timeout
        t_exit = None
        t_first_eof = None
        t_last_eof = None
        for _ in range(n + 200_000):
            now = time.monotonic()
            if (t_exit is not None and result["eofs"] == n) or now >= deadline:
                break
            wait = deadline - now
            if pidfd is None and t_exit is None:
                wait = min(wait, 0.001)  # no pidfd: poll the child every millisecond
            ready = outer.poll(wait)
            ts = time.monotonic()
            if t_exit is None:
                if pidfd is not None:
                    if any(fd == pidfd for fd, _ in ready):
                        t_exit = ts
                        outer.unregister(pidfd)
                elif proc.poll() is not None:
                    t_exit = ts
            if any(fd == inner.fileno() for fd, _ in ready):
                batch = inner.poll(0, BATCH)
                ts = time.monotonic()
                for fd, _events in batch:
                    inner.unregister(fd)
                    try:
                        if by_fd[fd].recv(1):
                            result["data"] += 1  # bytes after the response: unexpected
                    except ConnectionResetError:
                        result["resets"] += 1
                    result["eofs"] += 1
                    t_last_eof = ts
                    if t_first_eof is None:
                        t_first_eof = ts
        if t_exit is not None:
            result["exit_ms"] = (t_exit - t0) * 1000
        if t_first_eof is not None:
            result["first_eof_ms"] = (t_first_eof - t0) * 1000
        if result["eofs"] == n and t_last_eof is not None:
            result["eof_ms"] = (t_last_eof - t0) * 1000
        return result
    finally:
        if pidfd is not None:
            os.close(pidfd)
        outer.close()
        inner.close()


def one_run(server, args, keep_logs, observe=None):
    """One start, N idle connections, signal, exit, checks. `args` needs connections, window,
    setup_timeout, settle and exit_timeout. `observe(stage, proc)`, when given, is called
    with "started" once the server answers and with "idle" once the N connections are idle,
    just before the signal: load.py reads the server's memory there."""
    workdir = tempfile.mkdtemp(prefix=f"shutdown-{server.name}-")
    proc = None
    socks = []
    row = {"ok": False}
    try:
        proc, port = server.start(workdir, timeout=10)
        if observe:
            observe("started", proc)
        socks = open_idle_connections(port, args.connections, args.window, args.setup_timeout)
        gc.collect()
        gc.disable()
        time.sleep(args.settle)  # let the server go quiet before the signal
        if proc.poll() is not None:
            raise RuntimeError(f"{server.name} exited with {proc.returncode} before the signal")
        if observe:
            observe("idle", proc)
        r = measure_shutdown(proc, server.stop_signal, socks, args.exit_timeout)
        gc.enable()
        if r["early"]:
            raise RuntimeError(f"{r['early']} connections were readable (closed?) before the signal")
        if r["exit_ms"] is None:
            log(f"    {server.name} did not exit within {args.exit_timeout}s: killing PID {proc.pid}")
            proc.kill()
        r["returncode"] = stop(proc)
        log_ok, note = server.check_log(args.connections)
        problems = []
        if r["exit_ms"] is None:
            problems.append("no exit in time")
        if r["returncode"] != 0:
            problems.append(f"exit code {r['returncode']}")
        if r["eofs"] != args.connections:
            problems.append(f"only {r['eofs']} of {args.connections} clients saw EOF")
        if r["resets"]:
            problems.append(f"{r['resets']} clients got RST instead of FIN")
        if r["data"]:
            problems.append(f"{r['data']} clients got unexpected bytes")
        if not log_ok:
            problems.append("log check failed")
        row.update(r, ok=not problems, note=note, problems=problems)
        fmt = lambda v: "-" if v is None else f"{v:.1f} ms"  # noqa: E731
        log(f"    {server.name:8} signal->exit {fmt(r['exit_ms'])}, signal->first/all-EOF {fmt(r['first_eof_ms'])}/{fmt(r['eof_ms'])}, "
            f"exit code {r['returncode']}; {note}" + (f"  PROBLEMS: {'; '.join(problems)}" if problems else ""))
    except RuntimeError as e:
        row.update(problems=[str(e)])
        log(f"    {server.name:8} FAILED: {e}")
    finally:
        gc.enable()
        for s in socks:
            s.close()
        if proc is not None:
            stop(proc)
        if keep_logs or not row["ok"]:
            log(f"    logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return row


# --------------------------------------------------------------------------- report


def summarize(name, rows):
    good = [r for r in rows if r["ok"]]
    exits = [r["exit_ms"] for r in good]
    eofs = [r["eof_ms"] for r in good]
    return {
        "name": name,
        "runs": f"{len(good)}/{len(rows)}",
        "median": statistics.median(exits) if exits else None,
        "min": min(exits) if exits else None,
        "max": max(exits) if exits else None,
        "eof": statistics.median(eofs) if eofs else None,
    }


def render(summaries, ratio, markdown):
    f = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
    header = ["server", "ok runs", "signal→exit median ms", "min ms", "max ms", "signal→all-EOF median ms"]
    rows = [[s["name"], s["runs"], f(s["median"]), f(s["min"]), f(s["max"]), f(s["eof"])] for s in summaries]
    ratio_line = ("ratio of medians lastcall/nginx (signal→exit): "
                  + ("-" if ratio is None else f"{ratio:.2f}"))
    return render_table(header, rows, markdown) + ([""] if markdown else []) + [ratio_line]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--connections", type=int, default=10_000, help="idle keep-alive connections (default 10000)")
    p.add_argument("--runs", type=int, default=5, help="runs per server, alternating (default 5)")
    p.add_argument("--window", type=int, default=DEFAULT_WINDOW,
                   help=f"connections in progress at once during setup (default {DEFAULT_WINDOW})")
    p.add_argument("--settle", type=float, default=0.5, help="seconds of quiet before the signal (default 0.5)")
    p.add_argument("--setup-timeout", type=float, default=120, help="seconds to open all connections (default 120)")
    p.add_argument("--exit-timeout", type=float, default=30, help="seconds to wait for exit and EOFs (default 30)")
    p.add_argument("--keep-logs", action="store_true", help="keep every run's server logs (failed runs' always are)")
    args = p.parse_args()
    command = check_args(args, [
        ("--connections", 1, 500_000),
        ("--runs", 1, 100),
        ("--window", 1, 4096),
    ])

    nginx = require_tools(["nginx"], "This benchmark compares lastcall's shutdown with nginx's "
                          "graceful quit, so it needs it.")["nginx"]
    binary = build_lastcall()
    nofile = nofile_for(args.connections, "--connections")

    prefix = pin_prefix()
    nproc_all = nproc()
    cpus = os.sched_getaffinity(0)
    if CLIENT_CPU in cpus and len(cpus) > 1:
        os.sched_setaffinity(0, {CLIENT_CPU})  # after the build, which wants every core
    client_cpus = os.sched_getaffinity(0)

    servers = [Lastcall(binary, prefix, args.connections), Nginx(nginx, prefix, args.connections, nofile)]
    head = machine_lines(nproc_all, bool(prefix), client_cpus) + [
        f"lastcall {git_rev()} ({binary}); {version_of([nginx, '-v'])} ({nginx})",
        f"{args.connections} idle keep-alive connections, {args.runs} runs per server (alternating), "
        f"RLIMIT_NOFILE {nofile}",
        f"command: {command}",
    ]
    for line in head:
        log(line)

    rows = {s.name: [] for s in servers}
    for run in range(args.runs):
        log(f"run {run + 1}/{args.runs}")
        order = servers if run % 2 == 0 else list(reversed(servers))
        for server in order:
            rows[server.name].append(one_run(server, args, args.keep_logs))
            time.sleep(0.5)  # let the kernel reap the last run's sockets

    summaries = [summarize(s.name, rows[s.name]) for s in servers]
    a, b = summaries[0]["median"], summaries[1]["median"]
    ratio = a / b if a is not None and b else None

    log()
    for line in head:
        log(line)
    for line in render(summaries, ratio, markdown=False):
        log(line)
    log()
    log("Markdown:")
    log()
    for line in head:
        log(f"{line}  ")
    log()
    for line in render(summaries, ratio, markdown=True):
        log(line)

    failed = sum(not r["ok"] for rs in rows.values() for r in rs)
    if failed:
        log(f"\n{failed} run(s) failed; see the PROBLEMS/FAILED lines above")
        sys.exit(1)


if __name__ == "__main__":
    main()
