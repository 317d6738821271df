#!/usr/bin/env python3
"""Soak: N keep-alive clients for T seconds against the release binary, with churn,
slowloris and non-reading clients alongside; the server's RSS and descriptors and the
clients' latency sampled every second; a table, then a verdict: flat or not.

    python3 benches/soak.py [--seconds T] [--warmup W] [--connections N] [--slowloris S]
                            [--non-readers R] [--churn C]

`cargo build --release`, then lastcall on `--listen 127.0.0.1:0` (CPU 0, this script on
CPU 1) with short timeouts, so every kind of client cycles many times even in a 10 s run:
HEADER_TIMEOUT_MS=3000, WRITE_TIMEOUT_MS=3000, KEEPALIVE_TIMEOUT_MS=2000. The workload runs
W seconds (warm-up), then T seconds (soak); after each, every client closes and the server
settles (the keep-alive timeout, then until its descriptors are back to the idle count).
"flat" when the RSS settled after the soak is within RSS_TOLERANCE of the one settled after
the warm-up, the descriptors are not above theirs, no client met an unexpected outcome and
the server logged no WARN/ERROR; else "NOT flat", exit 1. Like is compared with like: the
warm-up primes pools and allocator high-water marks, what is left is growth (W >= 10 s, one
non-reader cycle). Then SIGTERM: exit 0 expected (else exit 1), the shutdown report shown.

The clients, in one epoll loop in this thread, each reconnecting after its cycle:
 - keep-alive: /plaintext, /json, /plaintext, /bytes/65536 in turn, one at a time; latency
   from send to last byte as this client sees it (its queueing included: a trend is the
   server's, the level is the client's);
 - churn: connect, one /plaintext, close (every other one asks `Connection: close`);
 - slowloris: a head that never ends, a byte every HEADER_TIMEOUT/10; a 408 then EOF is
   expected after the header timeout, not before it ("early"), not SLACK after ("timeout");
 - non-readers: `pipelined()` requests for /bytes/1048576, nothing read for WRITE_TIMEOUT
   + SLACK, then all read to EOF: short of every response in full means the server cut it
   (expected), all of them is "uncut". Other errors: a wrong status, a reset, an EOF
   mid-response, a failed connect, a malformed response, no answer within REQUEST_BOUND.

Not a throughput benchmark (load.py is): one Python thread drives every client and, with
the kernel's loopback work, is the bottleneck on two cores (the report shows each side's
CPU, the cores' and other processes'). Nor a database test: it runs without one.
Python 3 standard library only; Linux only (epoll, /proc). Every loop is bounded in count
and time, and it only signals the process it started, by PID.
"""

import argparse
import errno
import math
import os
import random
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time

from benchlib import (  # benches/ is sys.path[0]
    CLIENT_CPU, CLK_TCK, SERVER_CPU, all_cpu_ticks, build_lastcall, check_args, cpu_ticks, cpu_times, fail,
    git_rev, log, machine_line, nofile_for, nproc, others_cpu, render_table, rss_bytes, stop,
)

HEADER_TIMEOUT = 3.0  # s, as HEADER_TIMEOUT_MS: the slowloris bound
WRITE_TIMEOUT = 3.0  # s, as WRITE_TIMEOUT_MS: the non-reader bound
KEEPALIVE_TIMEOUT = 2.0  # s, as KEEPALIVE_TIMEOUT_MS: the settle waits it out
SLACK = 2.0  # s: how late a 408 or a cut may come before it counts as a timeout
REQUEST_BOUND = 10.0  # s: a keep-alive, churn or draining exchange not done by then is a timeout
SETTLE_MAX = 15.0  # s: the most a settle waits for the descriptors to come back
RSS_TOLERANCE, RSS_FLOOR = 0.10, 1 << 20  # settled RSS: warm-up level + 10 %, at least + 1 MiB
START_TIMEOUT, EXIT_TIMEOUT = 30.0, 20.0  # s: until `Listening on`; after SIGTERM (budget 10 s)
SCAN = 0.05  # s between timer scans (slowloris bytes, deadlines, reconnects)
RETRY = 0.05  # s before a client that met an error reconnects: a dead server must not spin us
MIX = [b"/plaintext", b"/json", b"/plaintext", b"/bytes/65536"]
SIZES = {b"/plaintext": 13, b"/json": 27, b"/bytes/65536": 65536}
BIG = 1 << 20  # the non-readers' bodies: the most /bytes serves
SLOW_HEAD = b"GET /plaintext HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"z" * 2000  # no blank line: never ends
KINDS = ("status", "reset", "eof", "timeout", "connect", "malformed", "uncut", "early")
STEP = math.log(1.02)  # latency histogram buckets 2 % wide: bounded memory however long the run


def pipelined():
    """How many 1 MiB requests a non-reader sends: more than the kernel holds, so the server
    must. The kernel grows the server's send buffer to tcp_wmem's max (4 MiB by default) even
    against a shut window: one response would sit there, written as far as the server can
    tell, and the write timeout never fire. An unread receive buffer stays at tcp_rmem's default."""
    with open("/proc/sys/net/ipv4/tcp_wmem") as w, open("/proc/sys/net/ipv4/tcp_rmem") as r:
        return (int(w.read().split()[2]) + 2 * int(r.read().split()[1])) // BIG + 2


class Client:
    """One client's state: waiting (to connect) -> connecting -> reading (-> closing, a churn
    client waiting for the EOF) | trickling -> answered (slowloris) | holding -> draining."""

    __slots__ = ("kind", "sock", "state", "due", "t0", "buf", "left", "status", "n", "sent", "got", "path")

    def __init__(self, kind, due):
        self.kind, self.state, self.due, self.sock, self.n = kind, "waiting", due, None, random.randrange(4)
        self.t0, self.buf, self.left, self.status, self.sent, self.got, self.path = due, b"", None, b"", 0, 0, b""


class Interval:
    """What happened between two samples."""

    def __init__(self):
        self.requests = self.churned = self.r408 = self.cuts = 0
        self.hist, self.max, self.errors = {}, 0.0, dict.fromkeys(KINDS, 0)

    def latency(self, seconds):
        b = int(math.log(max(seconds, 1e-6) * 1e6) / STEP)
        self.hist[b] = self.hist.get(b, 0) + 1
        self.max = max(self.max, seconds)


def percentile(hist, q):
    """The q-quantile (ms) of a merged histogram: a bucket's middle, within 1 %."""
    total, seen = sum(hist.values()), 0
    for b in sorted(hist):
        seen += hist[b]
        if seen >= q * total:
            return math.exp((b + 0.5) * STEP) / 1000
    return float("nan")


class Workload:
    """Every client, as a state machine driven by one epoll and one timer scan."""

    def __init__(self, port, args):
        self.addr, self.ep, self.by_fd, self.now = ("127.0.0.1", port), select.epoll(), {}, Interval()
        self.scratch, self.pipelined = memoryview(bytearray(1 << 18)), pipelined()
        t = time.monotonic()
        # Staggered starts, so that the 408s and cuts do not all come in the same second.
        self.clients = ([Client("ka", t) for _ in range(args.connections)]
                        + [Client("churn", t) for _ in range(args.churn)]
                        + [Client("slow", t + random.uniform(0, HEADER_TIMEOUT)) for _ in range(args.slowloris)]
                        + [Client("nonreader", t + random.uniform(0, WRITE_TIMEOUT)) for _ in range(args.non_readers)])

    def start(self, c, now):
        c.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        c.sock.setblocking(False)
        c.state, c.t0, c.due, c.buf, c.left, c.got = "connecting", now, now + REQUEST_BOUND, bytearray(), None, 0
        err = c.sock.connect_ex(self.addr)
        if err not in (0, errno.EINPROGRESS):
            return self.error(c, "connect", now)
        self.by_fd[c.sock.fileno()] = c
        self.ep.register(c.sock.fileno(), select.EPOLLOUT)

    def close(self, c):
        if c.sock is not None:
            self.by_fd.pop(c.sock.fileno(), None)
            try:
                self.ep.unregister(c.sock.fileno())
            except OSError:
                pass  # a holding non-reader is not registered
            c.sock.close()
            c.sock = None

    def error(self, c, kind, now):
        self.now.errors[kind] += 1
        self.close(c)
        c.state, c.due = "waiting", now + RETRY

    def restart(self, c, now):
        self.close(c)
        self.start(c, now)

    def request(self, c, now):
        """The next request: a few dozen bytes into an empty socket buffer, never short."""
        c.path = MIX[c.n % len(MIX)] if c.kind == "ka" else b"/plaintext"
        close = b"Connection: close\r\n" if c.kind == "churn" and c.n % 2 else b""
        c.sock.send(b"GET " + c.path + b" HTTP/1.1\r\nHost: x\r\n" + close + b"\r\n")
        c.buf, c.left, c.state, c.t0, c.due = bytearray(), None, "reading", now, now + REQUEST_BOUND

    def on_event(self, c, now):
        try:
            if c.state == "connecting":
                if c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                    return self.error(c, "connect", now)
                self.ep.modify(c.sock.fileno(), select.EPOLLIN)
                if c.kind in ("ka", "churn"):
                    return self.request(c, now)
                if c.kind == "slow":
                    c.sock.send(SLOW_HEAD[:1])
                    c.sent, c.state, c.t0, c.due = 1, "trickling", now, now + HEADER_TIMEOUT / 10
                    return None
                c.sock.send(b"GET /bytes/%d HTTP/1.1\r\nHost: x\r\n\r\n" % BIG * self.pipelined)
                self.ep.unregister(c.sock.fileno())  # not woken by what arrives
                c.state, c.due = "holding", now + WRITE_TIMEOUT + SLACK
                return None
            if c.kind == "nonreader":
                return self.drain(c, now)
            data = c.sock.recv(1 << 18)
        except OSError:  # ECONNRESET, EPIPE: the server reset the connection
            return self.error(c, "reset", now)
        if c.kind == "slow":
            return self.slow_read(c, data, now)
        if not data:
            if c.state == "closing":  # the EOF a `Connection: close` churn client waits for
                self.now.churned += 1
                return self.restart(c, now)
            return self.error(c, "eof", now)
        if c.state == "closing":
            return self.error(c, "malformed", now)  # bytes after a complete response
        if c.left is None:
            c.buf += data
            end = c.buf.find(b"\r\n\r\n")
            if end < 0:
                return self.error(c, "malformed", now) if len(c.buf) > 16384 else None
            head = bytes(c.buf[:end + 2]).lower()
            at = head.find(b"\r\ncontent-length:")
            if at < 0 or not head.startswith(b"http/1.1 "):
                return self.error(c, "malformed", now)
            length = int(head[at + 17:head.index(b"\r\n", at + 2)])
            c.status, c.left = head[9:12], length - (len(c.buf) - end - 4)
            if c.status == b"200" and length != SIZES[c.path]:
                return self.error(c, "malformed", now)
            if b"\r\nconnection: close" in head and not (c.kind == "churn" and c.n % 2):
                c.status = b"close"  # the server ends a keep-alive connection: unexpected
        else:
            c.left -= len(data)
        if c.left > 0:
            return None
        if c.left < 0:
            return self.error(c, "malformed", now)
        if c.status != b"200":
            return self.error(c, "eof" if c.status == b"close" else "status", now)
        c.n += 1
        if c.kind == "churn":
            if c.n % 2 == 0:  # it asked `Connection: close` (n was odd): wait for the EOF
                c.state = "closing"
                return None
            self.now.churned += 1
            return self.restart(c, now)
        self.now.requests += 1
        self.now.latency(now - c.t0)
        return self.request(c, now)

    def slow_read(self, c, data, now):
        if data:
            c.buf += data  # the answer: no more head bytes, wait for the EOF
            c.state, c.due = "answered", c.t0 + HEADER_TIMEOUT + SLACK
            return None
        if not c.buf.startswith(b"HTTP/1.1 408 "):
            return self.error(c, "status" if c.buf else "eof", now)
        if now - c.t0 < HEADER_TIMEOUT - 0.01:  # t0 is before the server saw the byte: never late
            return self.error(c, "early", now)
        self.now.r408 += 1
        self.restart(c, now)

    def drain(self, c, now):
        try:
            n = c.sock.recv_into(self.scratch)
        except OSError:
            n = -1  # a reset while draining: a cut too, told harshly
        if n > 0:
            if c.got == 0:
                c.buf = bytes(self.scratch[:min(n, 1024)])
            c.got += n
            return None
        end = c.buf.find(b"\r\n\r\n")
        if n == 0 and c.got == 0:
            return self.error(c, "eof", now)
        if n == 0 and not c.buf.startswith(b"HTTP/1.1 200 "):
            return self.error(c, "status", now)
        if n == 0 and end >= 0 and c.got >= (end + 4 + BIG) * self.pipelined:
            return self.error(c, "uncut", now)
        self.now.cuts += 1
        self.restart(c, now)

    def on_timer(self, c, now):
        if c.state == "waiting":
            return self.start(c, now)
        if c.state == "trickling" and now < c.t0 + HEADER_TIMEOUT + SLACK:
            try:
                c.sock.send(SLOW_HEAD[c.sent:c.sent + 1])
            except OSError:
                return self.error(c, "reset", now)
            c.sent, c.due = c.sent + 1, c.due + HEADER_TIMEOUT / 10
            return None
        if c.state == "holding":  # the write timeout is past: read what the server sent
            self.ep.register(c.sock.fileno(), select.EPOLLIN)
            c.state, c.due = "draining", now + REQUEST_BOUND
            return None
        self.error(c, "timeout", now)

    def run(self, seconds, sampler):
        end = time.monotonic() + seconds
        next_scan = 0.0
        for _ in range(int(seconds * 200_000) + 1000):  # a loop turn takes well over 5 µs
            now = time.monotonic()
            if now >= end:
                return
            if now >= next_scan:
                for c in self.clients:
                    if c.due <= now:
                        self.on_timer(c, now)
                next_scan = now + SCAN
            if now >= sampler.due:
                sampler.sample(self.now)
                self.now = Interval()
            for fd, _ in self.ep.poll(SCAN):
                c = self.by_fd.get(fd)
                if c is not None:  # else closed earlier in this batch
                    self.on_event(c, time.monotonic())
        raise RuntimeError("workload loop: iteration bound reached")

    def stop(self):
        for c in self.clients:
            self.close(c)
        self.ep.close()


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


class Sampler:
    """A row a second: the interval's counts; the server's RSS, descriptors and CPU; ours."""

    def __init__(self, proc):
        self.proc, self.rows = proc, []
        self.reset()

    def reset(self):
        self.due = time.monotonic() + 1.0
        self.last = (time.monotonic(), cpu_ticks(self.proc.pid), sum(os.times()[:2]))

    def sample(self, interval):
        if self.proc.poll() is not None:
            raise RuntimeError(f"lastcall exited with {self.proc.returncode} under load")
        now, ticks, mine = time.monotonic(), cpu_ticks(self.proc.pid), sum(os.times()[:2])
        span = now - self.last[0]
        self.rows.append(dict(iv=interval, span=span, rss=rss_bytes(self.proc.pid), fds=fds(self.proc.pid),
                              srv=(ticks - self.last[1]) / CLK_TCK / span, cli=(mine - self.last[2]) / span))
        self.last, self.due = (now, ticks, mine), self.due + 1.0


def start_server(binary, workdir, max_connections):
    """lastcall on 127.0.0.1, on a port of the kernel's choosing (read from `Listening on`)."""
    log_path = os.path.join(workdir, "lastcall.log")
    ms = lambda s: str(int(s * 1000))  # noqa: E731
    env = dict(os.environ, RUST_LOG="info", MAX_CONNECTIONS=str(max_connections), HEADER_TIMEOUT_MS=ms(HEADER_TIMEOUT),
               WRITE_TIMEOUT_MS=ms(WRITE_TIMEOUT), KEEPALIVE_TIMEOUT_MS=ms(KEEPALIVE_TIMEOUT))
    env.pop("DATABASE_URL", None)
    with open(log_path, "wb") as err:
        proc = subprocess.Popen([binary, "--listen", "127.0.0.1:0"], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=err, env=env, start_new_session=True)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline and proc.poll() is None:
        with open(log_path, errors="replace") as f:
            for line in f:
                if "Listening on http://" in line:
                    return proc, int(line.rsplit(":", 1)[1]), log_path
        time.sleep(0.02)
    proc.kill()  # a no-op once it has exited and been waited for
    stop(proc)
    fail(f"lastcall did not log 'Listening on' within {START_TIMEOUT}s; see {log_path}")


def settle(pid, idle_fds):
    """After every client closed: the keep-alive timeout, then until the descriptors are back
    to the idle count (lingering closes end within about a second), bounded. (RSS, fds)."""
    time.sleep(KEEPALIVE_TIMEOUT + 0.5)
    deadline = time.monotonic() + SETTLE_MAX
    while fds(pid) > idle_fds and time.monotonic() < deadline:
        time.sleep(0.1)
    return rss_bytes(pid), fds(pid)


def table_row(rows, label):
    hist = {}
    for r in rows:
        for b, n in r["iv"].hist.items():
            hist[b] = hist.get(b, 0) + n
    secs = sum(r["span"] for r in rows)
    total = lambda key: sum(getattr(r["iv"], key) for r in rows)  # noqa: E731
    per_s = lambda key: f"{100 * sum(r[key] * r['span'] for r in rows) / secs:.0f}"  # noqa: E731
    fd_counts = [r["fds"] for r in rows]
    return [label, f"{total('requests') / secs:.0f}", f"{percentile(hist, 0.5):.1f}", f"{percentile(hist, 0.99):.1f}",
            f"{max(r['iv'].max for r in rows) * 1000:.0f}", f"{rows[-1]['rss'] / 2**20:.1f}",
            f"{max(r['rss'] for r in rows) / 2**20:.1f}", f"{min(fd_counts)}-{max(fd_counts)}",
            per_s("srv"), per_s("cli"), f"{total('churned') / secs:.0f}", str(total("r408")), str(total("cuts")),
            str(sum(sum(r["iv"].errors.values()) for r in rows))]


def run_phases(proc, port, args, levels):
    """Warm-up then soak, each then a settle: {phase: rows a second}, and for the soak the
    cores' busy time and other processes' CPU time (the noise of a shared machine)."""
    sampler, phases = Sampler(proc), {}
    for phase, seconds in (("warm-up", args.warmup), ("soak", args.seconds)):
        log(f"{phase}: {seconds} s, then settle")
        work, cores, tasks, started = Workload(port, args), cpu_times(), all_cpu_ticks(), time.monotonic()
        sampler.reset()
        try:
            work.run(seconds, sampler)
        finally:
            work.stop()
        spent = time.monotonic() - started
        busy = {cpu: ((b - cores[cpu][0]) / spent, (st - cores[cpu][1]) / spent)
                for cpu, (b, st) in cpu_times().items() if cpu in cores}
        others = others_cpu(tasks, all_cpu_ticks(), {proc.pid, os.getpid()})
        phases[phase], sampler.rows = sampler.rows, []
        levels[f"after {phase}, settled"] = settle(proc.pid, levels["idle at start"][1])
    return phases, busy, others, spent


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=60, help="seconds of soak after the warm-up (default 60)")
    ap.add_argument("--warmup", type=int, default=10,  # at least one non-reader cycle: 3 + 5 s and the drain
                    help="seconds of the same load first, 10 or more (default 10)")
    ap.add_argument("--connections", type=int, default=500, help="keep-alive clients (default 500)")
    ap.add_argument("--slowloris", type=int, default=200, help="slowloris clients (default 200)")
    ap.add_argument("--non-readers", type=int, default=50, help="clients that never read (default 50)")
    ap.add_argument("--churn", type=int, default=8, help="clients that connect, ask once, close (default 8)")
    args = ap.parse_args()
    command = check_args(args, [("--seconds", 10, 86_400), ("--warmup", 10, 600), ("--connections", 1, 5000),
                                ("--slowloris", 0, 5000), ("--non-readers", 0, 1000), ("--churn", 0, 100)])
    clients = args.connections + args.slowloris + args.non_readers + args.churn
    nofile_for(clients, "--connections")  # the server inherits the limit
    binary = build_lastcall(quiet=True)
    workdir = tempfile.mkdtemp(prefix="lastcall-soak-")
    proc, port, log_path = start_server(binary, workdir, clients + 1024)
    # A core each when there are two (after the build, which wants every core): the server
    # does not compete with this client, and its CPU % says how busy it was.
    pinned = {SERVER_CPU, CLIENT_CPU} <= os.sched_getaffinity(0)
    if pinned:
        for tid in os.listdir(f"/proc/{proc.pid}/task"):  # without a database: one thread
            os.sched_setaffinity(int(tid), {SERVER_CPU})
        os.sched_setaffinity(0, {CLIENT_CPU})
    levels = {"idle at start": (rss_bytes(proc.pid), fds(proc.pid))}
    try:
        phases, busy, others, spent = run_phases(proc, port, args, levels)
    except (RuntimeError, OSError, KeyboardInterrupt) as e:  # the server died, or Ctrl+C
        log(f"aborted: {e!r}")
        proc.kill()  # a no-op once it has exited and been waited for
        log(f"lastcall exit: {stop(proc)}; log: {log_path}")
        return 1
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(EXIT_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        code = f"none: killed after {EXIT_TIMEOUT:.0f} s"
        proc.wait(5)
    took = time.monotonic() - t0
    with open(log_path, errors="replace") as f:
        text = f.read().splitlines()
    problems = [line for line in text if " WARN " in line or " ERROR " in line]
    every = phases["warm-up"] + phases["soak"]
    log()
    log(f"command: {command}")
    log(f"lastcall {git_rev()}; {machine_line(nproc())}")
    log(f"pinning: server on CPU {SERVER_CPU}, this client on CPU {CLIENT_CPU}" if pinned else "pinning: none")
    log("cores busy during the soak: " + ", ".join(f"CPU{c} {b:.0%} (steal {st:.0%})" for c, (b, st) in busy.items())
        + f"; other processes: {others[0] / spent:.0%} of a core ("
        + (", ".join(f"{name} {t / spent:.0%}" for t, name in others[1][:3]) or "none") + ")")
    log(f"clients: {args.connections} keep-alive, {args.churn} churn, {args.slowloris} slowloris, "
        f"{args.non_readers} non-readers ({pipelined()} x 1 MiB each); server: HEADER_TIMEOUT_MS="
        f"{HEADER_TIMEOUT * 1000:.0f} WRITE_TIMEOUT_MS={WRITE_TIMEOUT * 1000:.0f} "
        f"KEEPALIVE_TIMEOUT_MS={KEEPALIVE_TIMEOUT * 1000:.0f} MAX_CONNECTIONS={clients + 1024}")
    log()
    rows = phases["soak"]
    step = max(1, math.ceil(len(rows) / 6))
    body = [table_row(phases["warm-up"], "warm-up")]
    body += [table_row(rows[i:i + step], f"{i}-{min(i + step, len(rows))}") for i in range(0, len(rows), step)]
    header = ["t s", "req/s", "p50 ms", "p99 ms", "max ms", "RSS MiB", "peak MiB", "fds",
              "srv CPU%", "cli CPU%", "churn/s", "408s", "cuts", "errors"]
    for line in render_table(header, body, markdown=False):
        log(line)
    log()
    for name, (rss, n) in levels.items():
        log(f"{name:<24} RSS {rss / 2**20:6.1f} MiB  fds {n}")
    log(f"{'peak under load':<24} RSS {max(r['rss'] for r in every) / 2**20:6.1f} MiB")
    errors = {k: sum(r["iv"].errors[k] for r in every) for k in KINDS}
    log("unexpected outcomes: " + (", ".join(f"{k} {v}" for k, v in errors.items() if v) or "none"))
    log(f"server WARN/ERROR lines: {len(problems)}")
    for line in problems[:5]:
        log(f"  {line}")

    (warm_rss, warm_fds), (end_rss, end_fds) = levels["after warm-up, settled"], levels["after soak, settled"]
    allowed = max(RSS_TOLERANCE * warm_rss, RSS_FLOOR)
    reasons = []
    if end_rss > warm_rss + allowed:
        reasons.append(f"RSS grew {(end_rss - warm_rss) / 2**20:.1f} MiB, more than the {allowed / 2**20:.1f} allowed")
    if end_fds > warm_fds:
        reasons.append(f"{end_fds} descriptors, above the warm-up level {warm_fds}")
    if sum(errors.values()):
        reasons.append(f"{sum(errors.values())} unexpected client outcomes")
    if problems:
        reasons.append(f"{len(problems)} WARN/ERROR lines in the server's log")
    log(f"tolerance: settled RSS at most max({RSS_TOLERANCE:.0%}, {RSS_FLOOR >> 20} MiB) above the warm-up "
        f"level; descriptors not above it; no unexpected outcome; no WARN/ERROR")
    log("verdict: " + ("NOT flat: " + "; ".join(reasons) if reasons else "flat"))
    log()
    log(f"SIGTERM: exit {code} after {took:.2f} s (expected 0)")
    for line in [line for line in text if "shutdown report:" in line] or ["no shutdown report line"]:
        log(f"  {line}")
    log(f"lastcall log: {log_path}")
    return 1 if reasons or code != 0 else 0


if __name__ == "__main__":
    sys.exit(main())
