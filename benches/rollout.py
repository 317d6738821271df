#!/usr/bin/env python3
"""Rolling deploys through a real load balancer: HAProxy in front of three lastcall
instances on loopback, a load client that records the outcome of every request, and ten
rolls (each instance in turn: SIGTERM, wait for its exit, start its successor on the same
port, wait until the balancer routes to it again). Then the same with the drain delay at 0,
at 0 with the balancer's retries off too, and with the deadline forced short, to show what
each setting protects against.

    python3 benches/rollout.py [--rolls N] [--only baseline|no-delay|short-deadline]

The balancer (the generated haproxy.cfg is printed at the start):
  - active health checks, `GET /health` every `inter 500ms`, `fall 2`, `rise 2`: an
    instance that starts answering 503 is taken out of rotation 0.5 to 1.0 s after the
    signal (two failed checks, the first at most one interval away), plus a check's own
    time. The baseline's DRAIN_DELAY_MS (2000) is twice that: lastcall keeps its port
    open and serves everything the balancer still sends it until the balancer has stopped
    sending; the run measures signal -> DOWN for every roll and prints it. A successor is
    back in rotation after two good checks (0.5 to 1.0 s).
  - `retries 3`, `option redispatch 1`, `retry-on conn-failure`: a request whose
    connection to an instance could not be made (refused, connect timeout) is sent again,
    to another instance. That is always safe: the request never reached a server. Nothing
    else is retried: not an empty response, not a reset, not a timeout after the request
    was sent (`retry-on empty-response` and friends), because by then the instance may
    have acted on it, which is fine for a GET and wrong for a POST. So a request lastcall
    drops shows up here as a failure instead of being hidden by a retry.
  - keep-alive on both sides (HAProxy's default, `http-reuse safe`), so lastcall's closing
    of idle keep-alive connections is part of what is tested. KEEPALIVE_TIMEOUT_MS is 75 s
    (above HAProxy's idle hold), as the README says for instances behind a proxy.
  - HAProxy's own listening socket is bound here and passed to it (`bind fd@N`), so its
    port is never guessed; it runs in the foreground (`-db`) with an admin stats socket,
    which this script reads to know when an instance is DOWN or UP.

The load (all GETs, through the balancer): `--keepalive` threads sending `/plaintext` on
persistent connections, `--fresh` threads opening a new connection for each `/json` request
(`Connection: close`), and `--slow` threads sending `/work?ms=SLOW_MS` (300 ms) on
persistent connections; each pauses `--pause-ms` between requests. Every request ends in
exactly one class:
  ok             2xx with the whole body
  refused        connect refused (the balancer's port never closes, so: never expected)
  reset          ECONNRESET or EPIPE while sending or reading
  timeout        no answer within --client-timeout
  no response    EOF before the first byte of a response
  incomplete     EOF inside a response's head or body
  balancer 5xx   a 5xx without `Server: lastcall` (HAProxy's own 502/503/504 pages)
  lastcall 5xx   a 5xx with `Server: lastcall` (e.g. the deadline's 503)
  other          anything else (a 4xx, an unreadable response)
A request counts as "during a roll" when it overlaps a roll's window, from the signal to
the successor being UP in the balancer; otherwise "outside". Latency is measured on ok
requests, from the connect (fresh) or the first byte sent (keep-alive) to the body's end.

The four runs (each with the same load and the same number of rolls):
  baseline        DRAIN_DELAY_MS=2000 SHUTDOWN_TIMEOUT_MS=10000: expected to lose nothing,
                  every instance exiting 0; the script exits 1 otherwise.
  no-delay        DRAIN_DELAY_MS=0: the port closes at the signal, while the balancer still
                  routes there for up to a second: its connects are refused and retried on
                  another instance; left at risk is a request the balancer sends on a
                  keep-alive connection as lastcall closes it (a narrow race).
  no-delay-no-retry
                  DRAIN_DELAY_MS=0 behind a balancer that retries nothing (`retries 0`), as
                  a layer-4 balancer does (kube-proxy's iptables rules, a cloud TCP
                  balancer): the connects refused before the balancer notices are lost.
  short-deadline  SHUTDOWN_TIMEOUT_MS=150, below the 300 ms slow requests (the delay must
                  be below the deadline, so it is 0 here too; compare with no-delay): slow
                  requests in flight are answered 503 by lastcall at the deadline and the
                  instances exit 1.
The ablations are expected to lose requests; they are reported, not judged.

Python 3 standard library only; Linux only. It installs nothing: it tells you how to install
HAProxy when it is missing and exits 2. Everything listens on 127.0.0.1. Every loop is
bounded in count and time, and it only ever signals or kills the processes it started, by
PID.
"""

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from benchlib import (
    build_lastcall, check_args, fail, failure_class, find_tool, git_rev, log, machine_line, nproc,
    render_table, stop_threads, version_of,
)

SLOW_MS = 300  # the slow request: /work?ms=SLOW_MS

# The balancer's health-check timing; see the module doc for why against DRAIN_DELAY_MS.
CHECK_INTER_MS = 500
CHECK_FALL = 2
CHECK_RISE = 2

# The runs: name, DRAIN_DELAY_MS, SHUTDOWN_TIMEOUT_MS, whether the balancer retries a
# failed connect, what it shows.
RUNS = {
    "baseline": (2000, 10000, True, "the settings recommended behind a balancer"),
    "no-delay": (0, 10000, True, "the port closes at the signal"),
    "no-delay-no-retry": (0, 10000, False, "the same, behind a balancer that does not retry a refused connect"),
    "short-deadline": (0, 150, True, f"the deadline below the {SLOW_MS} ms slow requests"),
}

CLASSES = ["ok", "refused", "reset", "timeout", "no response", "incomplete", "balancer 5xx",
           "lastcall 5xx", "other"]
FAILURES = CLASSES[1:]


# --------------------------------------------------------------------------- the instances


class Instance:
    """One lastcall process on 127.0.0.1, restartable on the port it first got."""

    def __init__(self, name, binary, workdir, env):
        self.name = name
        self.binary = binary
        self.workdir = workdir
        self.env = env
        self.port = 0
        self.proc = None
        self.generation = 0

    def start(self, timeout=10):
        """Starts a new process on self.port (0 the first time: any free port, read from its
        `Listening on` line). Returns once it listens."""
        self.generation += 1
        self.log_path = os.path.join(self.workdir, f"{self.name}.{self.generation}.log")
        with open(self.log_path, "wb") as err:
            self.proc = subprocess.Popen(
                [self.binary, "--listen", f"127.0.0.1:{self.port}"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, env=self.env,
                start_new_session=True,  # a Ctrl+C on the script must not signal it mid-run
            )
        pattern = re.compile(r"Listening on http://127\.0\.0\.1:(\d+)")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(self.log_path, errors="replace") as f:
                m = pattern.search(f.read())
            if m:
                self.port = int(m.group(1))
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode} at start; see {self.log_path}")
            time.sleep(0.01)
        raise RuntimeError(f"{self.name} did not log 'Listening on' within {timeout}s; see {self.log_path}")

    def report(self):
        """The shutdown report line of the current process's log, or None."""
        with open(self.log_path, errors="replace") as f:
            m = re.search(r"shutdown report: (.*)", f.read())
        return m.group(1).strip() if m else None

    def stop(self, timeout):
        """SIGTERM to the process we started, by PID; SIGKILL if it outlives `timeout`."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def instance_env(drain_delay_ms, shutdown_timeout_ms):
    env = dict(os.environ)
    env.pop("DATABASE_URL", None)  # no database: the deploy story without the pool
    env.pop("PORT", None)
    env.update(
        RUST_LOG="info",
        DRAIN_DELAY_MS=str(drain_delay_ms),
        SHUTDOWN_TIMEOUT_MS=str(shutdown_timeout_ms),
        KEEPALIVE_TIMEOUT_MS="75000",
    )
    return env


# --------------------------------------------------------------------------- the balancer


class Balancer:
    """HAProxy in the foreground with a generated config, its frontend socket bound here."""

    def __init__(self, haproxy, workdir, instances, client_timeout, retry_connects):
        self.retry_connects = retry_connects
        self.haproxy = haproxy
        self.workdir = workdir
        self.instances = instances
        self.client_timeout = client_timeout
        self.stats_path = os.path.join(workdir, "admin.sock")
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1024)
        self.port = self.listener.getsockname()[1]
        self.proc = None

    def config(self):
        fd = self.listener.fileno()
        timeout_s = max(1, int(self.client_timeout))
        if self.retry_connects:
            retries = (
                "    # A request whose connection to an instance failed (refused, connect timeout)\n"
                "    # never reached it: send it again, to another instance. Nothing else is retried.\n"
                "    retries 3\n    option redispatch 1\n    retry-on conn-failure\n")
        else:
            retries = "    # No retries at all, like a layer-4 balancer (kube-proxy, a cloud TCP balancer).\n    retries 0\n"
        servers = "\n".join(
            f"    server {i.name} 127.0.0.1:{i.port} check inter {CHECK_INTER_MS}ms "
            f"fall {CHECK_FALL} rise {CHECK_RISE}"
            for i in self.instances
        )
        return f"""\
global
    stats socket {self.stats_path} mode 600 level admin
    maxconn 4096

defaults
    mode http
    timeout connect 1s
    timeout client {timeout_s}s
    timeout server {timeout_s}s
    timeout http-keep-alive {timeout_s}s
    timeout check 400ms
{retries}
frontend web
    bind fd@{fd}
    default_backend lastcall

backend lastcall
    balance roundrobin
    option httpchk
    http-check send meth GET uri /health ver HTTP/1.1 hdr Host localhost
    http-check expect status 200
{servers}
"""

    def start(self, timeout=10):
        path = os.path.join(self.workdir, "haproxy.cfg")
        with open(path, "w") as f:
            f.write(self.config())
        self.log_path = os.path.join(self.workdir, "haproxy.log")
        with open(self.log_path, "wb") as err:
            self.proc = subprocess.Popen(
                [self.haproxy, "-db", "-f", path], stdin=subprocess.DEVNULL,
                stdout=err, stderr=err, pass_fds=(self.listener.fileno(),), start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"haproxy exited with {self.proc.returncode} at start; see {self.log_path}")
            if os.path.exists(self.stats_path) and self.statuses() is not None:
                return path
            time.sleep(0.05)
        raise RuntimeError(f"haproxy's stats socket did not answer within {timeout}s; see {self.log_path}")

    def statuses(self):
        """{server name: status} from `show stat` ("UP", "DOWN", "UP 1/2", ...), or None
        when the socket does not answer."""
        rows = self.stat_rows()
        if rows is None:
            return None
        return {row["svname"]: row["status"] for row in rows
                if row["pxname"] == "lastcall" and row["svname"] not in ("BACKEND", "FRONTEND")}

    def counters(self):
        """The backend's totals from `show stat`: connection retries (`wretr`),
        redispatches (`wredis`), connection errors (`econ`), response errors (`eresp`)."""
        for row in self.stat_rows() or []:
            if row["pxname"] == "lastcall" and row["svname"] == "BACKEND":
                return {k: int(row[k] or 0) for k in ("wretr", "wredis", "econ", "eresp")}
        return None

    def stat_rows(self):
        """`show stat` as a list of {column: value}, or None when the socket does not answer."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(1)
                s.connect(self.stats_path)
                s.sendall(b"show stat\n")
                chunks = []
                for _ in range(1000):
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    chunks.append(chunk)
        except OSError:
            return None
        lines = b"".join(chunks).decode(errors="replace").splitlines()
        if not lines or not lines[0].startswith("# "):
            return None
        header = lines[0][2:].split(",")
        return [dict(zip(header, line.split(","))) for line in lines[1:] if line.count(",") >= len(header) - 1]

    def wait_status(self, name, wanted, timeout):
        """Polls until server `name` is exactly `wanted` ("UP"/"DOWN"); the time it was
        seen, or None after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = self.statuses() or {}
            if st.get(name) == wanted:
                return time.monotonic()
            time.sleep(0.01)
        return None

    def stop(self):
        """SIGUSR1 (HAProxy's soft stop) to the process we started, then SIGKILL if needed."""
        self.listener.close()
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGUSR1)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


# --------------------------------------------------------------------------- the load


class Load:
    """Client threads; each request's (start, end, kind, class, status) is appended to
    `records` (list.append is atomic under the GIL)."""

    def __init__(self, port, args):
        self.port = port
        self.args = args
        self.records = []
        self.stop = threading.Event()
        self.threads = []

    def start(self):
        a = self.args
        plan = ([("keepalive", "/plaintext", True)] * a.keepalive + [("fresh", "/json", False)] * a.fresh
                + [("slow", f"/work?ms={SLOW_MS}", True)] * a.slow)
        for kind, path, keep in plan:
            t = threading.Thread(target=self.client, args=(kind, path, keep), daemon=True)
            t.start()
            self.threads.append(t)

    def finish(self, timeout):
        """Stops the clients; how many did not stop within `timeout` seconds."""
        return stop_threads(self.stop, self.threads, timeout)

    def client(self, kind, path, keep_alive):
        request = (f"GET {path} HTTP/1.1\r\nHost: lb\r\n"
                   + ("" if keep_alive else "Connection: close\r\n") + "\r\n").encode()
        pause = self.args.pause_ms / 1000
        sock = None
        buf = bytearray()
        # Bounded: the stop event ends it, and so does a count no run can reach.
        for _ in range(10_000_000):
            if self.stop.is_set():
                break
            t0 = time.monotonic()
            status = None
            try:
                if sock is None:
                    sock = socket.create_connection(("127.0.0.1", self.port), timeout=self.args.client_timeout)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    buf.clear()
                sock.sendall(request)
                status, server, closes = read_response(sock, buf)
                if status is None:
                    outcome = "no response"
                elif 200 <= status < 300:
                    outcome = "ok"
                elif status >= 500:
                    outcome = "lastcall 5xx" if server == "lastcall" else "balancer 5xx"
                else:
                    outcome = "other"
                if closes or not keep_alive or status is None:
                    sock.close()
                    sock = None
            except Incomplete:
                outcome = "incomplete"
            except (OSError, ValueError) as e:
                outcome = failure_class(e)
            t1 = time.monotonic()
            if sock is not None and outcome in ("refused", "reset", "timeout", "incomplete", "other"):
                sock.close()  # after an error the connection's state is unknown: start over
                sock = None
            self.records.append((t0, t1, kind, outcome, status))
            if pause:
                self.stop.wait(pause)
        if sock is not None:
            sock.close()


class Incomplete(Exception):
    """EOF inside a response."""


def read_response(sock, buf):
    """Reads one response; returns (status, Server header, closes) or (None, None, True) on
    EOF before any byte. Bytes after it stay in `buf`. Raises Incomplete on EOF inside it."""
    for _ in range(10_000):
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            break
        chunk = sock.recv(65536)
        if not chunk:
            if buf:
                raise Incomplete()
            return None, None, True
        buf += chunk
        if len(buf) > 65536:
            raise ValueError("response head over 64 KiB")
    else:
        raise ValueError("no response head")
    lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    del buf[:end + 4]
    closes = "close" in [t.strip().lower() for t in headers.get("connection", "").split(",")]
    if "content-length" in headers:
        length = int(headers["content-length"])
        for _ in range(100_000):
            if len(buf) >= length:
                break
            chunk = sock.recv(65536)
            if not chunk:
                raise Incomplete()
            buf += chunk
        del buf[:length]
    elif headers.get("transfer-encoding"):
        raise ValueError("chunked response: not expected on these routes")
    else:
        for _ in range(100_000):  # close-delimited
            chunk = sock.recv(65536)
            if not chunk:
                break
        buf.clear()
        closes = True
    return status, headers.get("server"), closes


# --------------------------------------------------------------------------- one run


def one_run(name, binary, haproxy, args):
    """Three instances, HAProxy, the load, `args.rolls` rolls. Returns a result dict."""
    drain_delay_ms, timeout_ms, retry_connects, _ = RUNS[name]
    workdir = tempfile.mkdtemp(prefix=f"rollout-{name}-")
    env = instance_env(drain_delay_ms, timeout_ms)
    instances = [Instance(f"s{i + 1}", binary, workdir, env) for i in range(args.instances)]
    balancer = None
    load = None
    rolls = []
    problems = []
    counters = None
    try:
        for inst in instances:
            inst.start()
        balancer = Balancer(haproxy, workdir, instances, args.client_timeout, retry_connects)
        cfg_path = balancer.start()
        for inst in instances:
            if balancer.wait_status(inst.name, "UP", 10) is None:
                raise RuntimeError(f"{inst.name} not UP in haproxy within 10 s; see {balancer.log_path}")
        if args.show_config and name == args.only_runs[0]:
            log(f"  haproxy config ({cfg_path}):")
            with open(cfg_path) as f:
                for line in f:
                    log("    " + line.rstrip())
        load = Load(balancer.port, args)
        t_load = time.monotonic()
        load.start()
        time.sleep(args.settle)
        for r in range(args.rolls):
            inst = instances[r % len(instances)]
            roll = roll_one(inst, balancer, timeout_ms, args)
            roll["n"] = r + 1
            rolls.append(roll)
            log(f"  roll {r + 1:2}/{args.rolls} {inst.name}: exit {roll['code']}, "
                f"signal->DOWN {fmt_ms(roll['down_ms'])}, signal->exit {fmt_ms(roll['exit_ms'])}, "
                f"restart->UP {fmt_ms(roll['up_ms'])}; report: {roll['report']}")
            if roll.get("problem"):
                problems.append(f"roll {r + 1}: {roll['problem']}")
                break
            time.sleep(args.gap)
        time.sleep(args.settle)
        left = load.finish(args.client_timeout + 2)
        t_end = time.monotonic()
        counters = balancer.counters()
        if left:
            problems.append(f"{left} client threads did not stop")
    except RuntimeError as e:
        problems.append(str(e))
        t_load = t_end = time.monotonic()
    finally:
        if load is not None:
            load.finish(args.client_timeout + 2)
        for inst in instances:
            inst.stop(timeout_ms / 1000 + 5)
        if balancer is not None:
            balancer.stop()
    records = load.records if load else []
    ok = not problems
    if args.keep_logs or not ok:
        log(f"  logs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return {"name": name, "records": records, "rolls": rolls, "problems": problems, "retry": retry_connects,
            "counters": counters,
            "seconds": t_end - t_load, "drain_delay_ms": drain_delay_ms, "timeout_ms": timeout_ms}


def roll_one(inst, balancer, timeout_ms, args):
    """SIGTERM, wait for DOWN in the balancer and for the exit, start the successor on the
    same port, wait for UP. Times are monotonic seconds; *_ms fields are from the signal."""
    proc = inst.proc
    t_sig = time.monotonic()
    proc.send_signal(signal.SIGTERM)  # the process we started, by PID
    t_down = t_exit = None
    limit = t_sig + timeout_ms / 1000 + 5
    while time.monotonic() < limit and (t_down is None or t_exit is None):
        if t_exit is None and proc.poll() is not None:
            t_exit = time.monotonic()
        if t_down is None and (balancer.statuses() or {}).get(inst.name, "").startswith("DOWN"):
            t_down = time.monotonic()
        time.sleep(0.005)
    roll = {"instance": inst.name, "t_sig": t_sig, "code": proc.returncode,
            "down_ms": None if t_down is None else (t_down - t_sig) * 1000,
            "exit_ms": None if t_exit is None else (t_exit - t_sig) * 1000,
            "report": inst.report(), "up_ms": None}
    if t_exit is None:
        proc.kill()
        proc.wait(5)
        roll.update(code=proc.returncode, t_up=time.monotonic(), problem="no exit in time: killed")
        return roll
    t_start = time.monotonic()
    try:
        inst.start()
    except RuntimeError as e:
        roll.update(t_up=time.monotonic(), problem=str(e))
        return roll
    t_up = balancer.wait_status(inst.name, "UP", 10)
    if t_up is None:
        roll.update(t_up=time.monotonic(), problem=f"{inst.name} not UP again within 10 s")
        return roll
    roll.update(t_up=t_up, up_ms=(t_up - t_start) * 1000)
    return roll


# --------------------------------------------------------------------------- report


def fmt_ms(v):
    return "-" if v is None else f"{v:.0f} ms"


def percentile(sorted_values, p):
    if not sorted_values:
        return None
    i = min(len(sorted_values) - 1, max(0, int(round(p / 100 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[i]


def summarize(result):
    windows = [(r["t_sig"], r.get("t_up", r["t_sig"])) for r in result["rolls"]]

    def during(rec):
        t0, t1 = rec[0], rec[1]
        return any(t0 <= b and t1 >= a for a, b in windows)

    rows = []
    for part, pick in (("during rolls", during), ("outside rolls", lambda rec: not during(rec)), ("all", lambda rec: True)):
        recs = [rec for rec in result["records"] if pick(rec)]
        counts = {c: 0 for c in CLASSES}
        for rec in recs:
            counts[rec[3]] += 1
        lat = sorted((rec[1] - rec[0]) * 1000 for rec in recs if rec[3] == "ok" and rec[2] != "slow")
        slow = sorted((rec[1] - rec[0]) * 1000 for rec in recs if rec[3] == "ok" and rec[2] == "slow")
        f = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
        rows.append([result["name"], part, f"{len(recs):,}", f"{sum(counts[c] for c in FAILURES)}"]
                    + [str(counts[c]) for c in FAILURES]
                    + [f(percentile(lat, 50)), f(percentile(lat, 99)), f(percentile(slow, 50)), f(percentile(slow, 99))])
    return rows


TABLE_HEADER = (["run", "when", "requests", "failed"] + FAILURES
                + ["p50 ms", "p99 ms", "slow p50 ms", "slow p99 ms"])


def failure_detail(result):
    """Per class and kind, with the statuses, for the lines under the table."""
    by = {}
    for _, _, kind, outcome, status in result["records"]:
        if outcome != "ok":
            key = (outcome, kind, status)
            by[key] = by.get(key, 0) + 1
    return ", ".join(f"{n} {o} ({k}{'' if s is None else ', ' + str(s)})" for (o, k, s), n in sorted(by.items())) or "none"


def fmt_counters(c):
    if c is None:
        return "counters not read"
    return (f"{c['wretr']} connect retries, {c['wredis']} redispatches, {c['econ']} connection errors, "
            f"{c['eresp']} response errors")


def slowest(result, n=3):
    """The `n` slowest ok requests: latency, kind, and when they started relative to the
    nearest roll's signal, so an outlier can be placed in the roll it belongs to."""
    signals = [roll["t_sig"] for roll in result["rolls"]]
    recs = sorted((rec for rec in result["records"] if rec[3] == "ok"), key=lambda rec: rec[0] - rec[1])[:n]
    out = []
    for t0, t1, kind, _, _ in recs:
        if signals:
            i = min(range(len(signals)), key=lambda k: abs(t0 - signals[k]))
            where = f"{(t0 - signals[i]) * 1000:+.0f} ms from roll {i + 1}'s signal"
        else:
            where = "no roll"
        out.append(f"{(t1 - t0) * 1000:.0f} ms ({kind}, {where})")
    return ", ".join(out) or "none"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rolls", type=int, default=10, help="rolls per run, round-robin over the instances (default 10)")
    p.add_argument("--instances", type=int, default=3, help="lastcall instances behind the balancer (default 3)")
    p.add_argument("--only", choices=list(RUNS), action="append",
                   help="run only this one (repeatable); default: all four, baseline first")
    p.add_argument("--keepalive", type=int, default=6, help="keep-alive client threads (default 6)")
    p.add_argument("--fresh", type=int, default=3, help="new-connection-per-request client threads (default 3)")
    p.add_argument("--slow", type=int, default=3, help=f"client threads sending /work?ms={SLOW_MS} (default 3)")
    p.add_argument("--pause-ms", type=int, default=5, help="pause of each client between requests (default 5)")
    p.add_argument("--gap", type=float, default=1.0, help="seconds between one roll's UP and the next signal (default 1)")
    p.add_argument("--settle", type=float, default=2.0, help="seconds of load before the first and after the last roll (default 2)")
    p.add_argument("--client-timeout", type=float, default=5.0, help="seconds a client waits for an answer (default 5)")
    p.add_argument("--keep-logs", action="store_true", help="keep every run's logs and config (failed runs' always are)")
    p.add_argument("--show-config", action="store_true", help="print the generated haproxy.cfg")
    args = p.parse_args()
    command = check_args(args, [
        ("--rolls", 1, 100), ("--instances", 2, 10), ("--keepalive", 0, 64), ("--fresh", 0, 64),
        ("--slow", 0, 64), ("--pause-ms", 0, 1000), ("--gap", 0, 60), ("--settle", 0, 60),
        ("--client-timeout", 1, 60),
    ])
    if args.keepalive + args.fresh + args.slow == 0:
        fail("no client threads: give --keepalive, --fresh or --slow above 0")
    args.only_runs = args.only or list(RUNS)

    haproxy = find_tool("haproxy")
    if not haproxy:
        fail("haproxy not found (looked in PATH, /usr/sbin, /usr/local/sbin, /usr/local/bin).\n"
             "This harness puts a real load balancer in front of the instances.\n"
             "Install, then run this again:\n"
             "  Debian/Ubuntu:  sudo apt-get update && sudo apt-get install -y haproxy\n"
             "  Fedora/RHEL:    sudo dnf install -y haproxy\n"
             "  Alpine:         sudo apk add haproxy\n"
             "(The harness starts its own HAProxy in the foreground with a generated config on\n"
             "127.0.0.1; the system's haproxy service is neither used nor touched.)")
    binary = build_lastcall(quiet=True)

    head = [
        machine_line(nproc()),
        f"lastcall {git_rev()} ({binary}); {version_of([haproxy, '-v'])} ({haproxy})",
        f"{args.instances} instances behind HAProxy (health checks GET /health inter {CHECK_INTER_MS}ms "
        f"fall {CHECK_FALL} rise {CHECK_RISE}); {args.rolls} rolls per run",
        f"load: {args.keepalive} keep-alive /plaintext, {args.fresh} new-connection /json, {args.slow} keep-alive "
        f"/work?ms={SLOW_MS} client threads, {args.pause_ms} ms pause each",
        f"command: {command}",
    ]
    for line in head:
        log(line)

    results = []
    for name in args.only_runs:
        delay, timeout, retry_connects, why = RUNS[name]
        log(f"run {name}: DRAIN_DELAY_MS={delay} SHUTDOWN_TIMEOUT_MS={timeout}, "
            f"{'retry-on conn-failure' if retry_connects else 'retries 0'} ({why})")
        results.append(one_run(name, binary, haproxy, args))

    rows = [row for r in results for row in summarize(r)]
    notes = []
    for r in results:
        codes = [roll["code"] for roll in r["rolls"]]
        downs = [roll["down_ms"] for roll in r["rolls"] if roll["down_ms"] is not None]
        ups = [roll["up_ms"] for roll in r["rolls"] if roll["up_ms"] is not None]
        notes.append(
            f"{r['name']} (DRAIN_DELAY_MS={r['drain_delay_ms']} SHUTDOWN_TIMEOUT_MS={r['timeout_ms']}, "
            f"{'retry-on conn-failure' if r['retry'] else 'retries 0'}): "
            f"{len(r['rolls'])} rolls in {r['seconds']:.1f} s, exit codes {codes}; "
            f"signal->DOWN in the balancer {min(downs, default=0):.0f}-{max(downs, default=0):.0f} ms, "
            f"restart->UP {min(ups, default=0):.0f}-{max(ups, default=0):.0f} ms; failures: {failure_detail(r)}; "
            f"slowest ok: {slowest(r)}; haproxy's backend: {fmt_counters(r['counters'])}"
            + (f"; PROBLEMS: {'; '.join(r['problems'])}" if r["problems"] else ""))

    log()
    for line in head:
        log(line)
    for line in render_table(TABLE_HEADER, rows, markdown=False):
        log(line)
    for line in notes:
        log(line)
    log()
    log("Markdown:")
    log()
    for line in render_table(TABLE_HEADER, rows, markdown=True):
        log(line)
    log()
    for line in notes:
        log(f"- {line}")

    verdict = 0
    for r in results:
        if r["problems"]:
            verdict = 1
        if r["name"] == "baseline":
            lost = sum(1 for rec in r["records"] if rec[3] != "ok")
            if lost or any(roll["code"] != 0 for roll in r["rolls"]) or len(r["rolls"]) != args.rolls:
                verdict = 1
    log()
    log("verdict: " + ("baseline lost no request and every instance exited 0" if verdict == 0
                       else "FAILED: see the baseline row and the PROBLEMS above"))
    sys.exit(verdict)


if __name__ == "__main__":
    main()
