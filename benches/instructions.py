#!/usr/bin/env python3
"""User-space instructions per request, lastcall against nginx, counted by callgrind.

    python3 benches/instructions.py [--requests N] [--top K] [--access-log combined|json]

Why: on this kind of machine the server's CPU time per request (load.py) is ~85% kernel
(the loopback TCP work, the same for both servers) and moves 10-20% between runs with the
host's load. An instruction count does not move: it is the figure to watch when changing
the hot path, and the one that shows what the server itself spends.

What one measurement does, for each server and workload:
 1. start the server under `valgrind --tool=callgrind` (nginx as one process,
    `master_process off`, so the process counted is the one serving);
 2. over one keep-alive connection, send requests in batches of `depth` (one write per
    batch, as a pipelining client does) and read every response whole;
 3. stop it (lastcall SIGTERM, nginx SIGQUIT) and read callgrind's instruction total.
Done twice, with a small and a large number of requests; the difference over the difference
in requests is the cost of one request in steady state: start-up and shutdown cancel out.
What is counted: every instruction the process executes in user space, its libc included
(the system-call wrappers, memcpy). The kernel's work is not counted: for that, see load.py.

Python 3 standard library only; needs valgrind (it says how to install it when missing)
and nginx. Every loop is bounded in count and time; it only signals the processes it
started, by PID.
"""

import argparse
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time

from benchlib import (
    Lastcall, Nginx, build_lastcall, check_args, fail, git_rev, log, render_table, require_tools, stop,
    version_of,
)

# (title, path, requests per write)
WORKLOADS = [
    ("/plaintext pipelined 16", "/plaintext", 16),
    ("/plaintext", "/plaintext", 1),
    ("/json", "/json", 1),
]
# Under callgrind a server runs ~50x slower; these bound one measurement run.
START_TIMEOUT = 60
RUN_TIMEOUT = 300
READ_TIMEOUT = 30


def drive(port, path, depth, requests):
    """Sends `requests` requests in writes of `depth`, reading each batch's responses whole
    (by Content-Length) before the next write. Raises on anything but a 200."""
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    batch = request * depth
    deadline = time.monotonic() + RUN_TIMEOUT
    with socket.create_connection(("127.0.0.1", port), timeout=READ_TIMEOUT) as s:
        buf = b""
        for _ in range(requests // depth):
            s.sendall(batch)
            answered = 0
            while answered < depth:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{requests} requests took over {RUN_TIMEOUT} s")
                end = buf.find(b"\r\n\r\n")
                if end >= 0:
                    if not buf.startswith(b"HTTP/1.1 200 "):
                        raise RuntimeError(f"not a 200: {buf[:40]!r}")
                    m = re.search(rb"\r\ncontent-length: *(\d+)", buf[:end], re.I)
                    if not m:
                        raise RuntimeError(f"a response without Content-Length: {buf[:end]!r}")
                    if len(buf) >= end + 4 + int(m.group(1)):
                        buf = buf[end + 4 + int(m.group(1)):]
                        answered += 1
                        continue
                chunk = s.recv(65536)
                if not chunk:
                    raise RuntimeError("the server closed the connection")
                buf += chunk


def signal_until_gone(proc, sig, tries=6, wait=10):
    """Sends `sig` until the process exits, every `wait` seconds; SIGKILL after `tries`.

    nginx notices a signal in a handler that sets a flag it checks between epoll_wait calls,
    so a signal landing just before epoll_wait blocks is seen only at the next wake-up; under
    valgrind, which delivers signals at its own points, nginx has been seen to sleep on for
    good after one SIGQUIT. (lastcall reads signals through a pipe in its poll set, so it
    cannot miss one.) Both ignore a repeated stop signal. A repeat adds the instructions of
    handling it to that run's count, so the per-request slope of a run that needed one is
    off by a few hundred instructions over thousands of requests: negligible."""
    for _ in range(tries):
        if proc.poll() is not None:
            break
        proc.send_signal(sig)
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            continue
    return stop(proc, timeout=wait)


def instructions(make_server, path, depth, requests, workdir):
    """Starts a server under callgrind, drives `requests` requests, stops it; callgrind's
    instruction total for the whole process."""
    os.makedirs(workdir)
    out = os.path.join(workdir, "callgrind.out")
    server = make_server(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                          f"--log-file={os.path.join(workdir, 'valgrind.log')}"])
    proc, port = server.start(workdir, START_TIMEOUT)
    try:
        drive(port, path, depth, requests)
    finally:
        code = signal_until_gone(proc, server.stop_signal)
    if code != 0:
        raise RuntimeError(f"{server.name} exited with {code} under callgrind; see {workdir}")
    with open(out) as f:
        m = re.search(r"^(?:summary|totals): (\d+)", f.read(), re.M)
    if not m:
        raise RuntimeError(f"no instruction total in {out}")
    return int(m.group(1)), out


def per_request(make_server, path, depth, small, large, workdir):
    """Instructions per request in steady state: the slope between two runs."""
    a, _ = instructions(make_server, path, depth, small, os.path.join(workdir, "small"))
    b, out = instructions(make_server, path, depth, large, os.path.join(workdir, "large"))
    return (b - a) / (large - small), out


def top_functions(out, k):
    """The `k` functions with the most instructions of their own, as (percent, name).
    callgrind_annotate lists a function once per source file its inlined code came from;
    those rows are summed."""
    text = subprocess.run(["callgrind_annotate", "--auto=no", "--threshold=100", out],
                          capture_output=True, text=True).stdout
    listing = text.split("file:function", 1)[-1]
    rows = re.findall(r"^\s*[\d,]+ \(\s*([\d.]+)%\)\s+(\S.*)$", listing, re.M)
    totals = {}
    for pct, where in rows:
        name = where.split(":", 1)[-1].split(" [")[0]
        totals[name] = totals.get(name, 0.0) + float(pct)
    return sorted(((pct, name) for name, pct in totals.items()), reverse=True)[:k]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=16_000,
                    help="requests in the larger run of each pair (the smaller has a tenth)")
    ap.add_argument("--top", type=int, default=12, help="lastcall's hottest functions to list")
    ap.add_argument("--access-log", choices=["combined", "json"],
                    help="both servers write an access log to a file: lastcall in this format, "
                         "nginx in its combined format (default: off for both)")
    args = ap.parse_args()
    command = check_args(args, [("--requests", 320, 1_000_000), ("--top", 0, 100)])

    nginx = require_tools(["valgrind", "nginx"], "instructions.py counts instructions with "
                          "valgrind's callgrind, for lastcall and for nginx.")["nginx"]
    binary = build_lastcall(quiet=True)
    large = args.requests // 16 * 16
    small = large // 10 // 16 * 16

    servers = [
        ("lastcall", lambda prefix: Lastcall(binary, prefix, 16, "warn,lastcall::server=info",
                                             access_log=args.access_log)),
        ("nginx", lambda prefix: Nginx(nginx, prefix, 16, 1024, master=False,
                                       access_log=args.access_log is not None)),
    ]
    log(f"lastcall {git_rev()} ({binary}); {version_of([nginx, '-v'])}; "
        f"{version_of(['valgrind', '--version'])}")
    log(f"requests: {small} and {large} per measurement, one keep-alive connection")
    log(f"command: {command}")
    workdir = tempfile.mkdtemp(prefix="lastcall-instructions-")
    rows, hottest = [], None
    try:
        for title, path, depth in WORKLOADS:
            counts = {}
            for name, make in servers:
                where = os.path.join(workdir, f"{name}{path.replace('/', '-')}-{depth}")
                counts[name], out = per_request(make, path, depth, small, large, where)
                log(f"  {title:26} {name:9} {counts[name]:8,.0f} instructions/request")
                if name == "lastcall" and hottest is None:
                    hottest = (title, out)
            ratio = counts["lastcall"] / counts["nginx"]
            rows.append([title, f"{counts['lastcall']:,.0f}", f"{counts['nginx']:,.0f}", f"{ratio:.2f}"])
        header = ["workload", "lastcall instr/req", "nginx instr/req", "ratio"]
        log()
        for markdown in (False, True):
            log("\n".join(render_table(header, rows, markdown)))
            log()
        if args.top and hottest:
            log(f"lastcall, {hottest[0]} (the first workload): the hottest functions by their "
                "own instructions, over the whole larger run, start-up included")
            for pct, name in top_functions(hottest[1], args.top):
                log(f"  {pct:5.1f}%  {name}")
    except (RuntimeError, OSError) as e:
        fail(f"{e} (files in {workdir})")
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
