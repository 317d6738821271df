#!/usr/bin/env python3
"""Hand-overs under load: N SIGHUPs in a row to a lastcall serving a mixed load on loopback,
every request's outcome recorded; then the same load across N plain restarts (SIGTERM, wait
for the exit, start a new process on the same port), for contrast. benches/README.md has a
run and what it shows.

    python3 benches/handover.py [--rounds N] [--only handover|restart]

Hand-over run: SIGHUP to the current generation; the log (one for all generations, polled
every millisecond: its timestamps are whole seconds) says when `successor PID is ready`; wait
for the old generation's exit; the listening socket's inode in /proc/net/tcp must not
change. The binary is a copy in a temporary directory, so a build in the tree cannot change
what a successor execs. Restart run: the gap is signal to the new `Listening on`.

Load: threads, each pausing --pause-ms between requests: --keepalive `/plaintext` on
persistent connections, --fresh `/json` on a new connection each, --slow `/work?ms=200` (half
keep-alive). Rounds are --gap apart +-50% at random (the slow clients fall into step, and a
fixed gap would signal at the same point of their 200 ms each time). Classes: ok; retried (a
reused keep-alive connection closed before any byte of the response, EOF or EPIPE on the
send: the race of RFC 9112 section 9.3.1 that HTTP/1.1 clients retry, as this one does;
counted apart, not a failure); refused; reset; closed (EOF before any byte, new connection);
truncated; status (not a 200); timeout; other. Exit 1 when the hand-over run failed a
request (ok and retried aside), a hand-over failed, the inode changed or a generation did not
exit 0; the restart run is reported, not judged. Exit 2 on a usage or setup problem.

Not a throughput benchmark (one Python process drives the load), nor a test of failing
successors (tests/handover.rs). Python 3 standard library only; Linux only (/proc); all on
127.0.0.1. Every loop is bounded in count and time. It signals only its own children and the
successors its log names, by PID; at the end, only once /proc/PID/exe shows its binary.
"""

import argparse
import os
import random
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
    build_lastcall, check_args, failure_class, git_rev, log, machine_line, nproc, render_table,
    stop_threads,
)

SLOW_PATH = "/work?ms=200"
SWITCH_TIMEOUT = 15  # seconds for a successor to be ready, an exit, a restart
CLASSES = ["ok", "retried", "refused", "reset", "closed", "truncated", "status", "timeout", "other"]
OTHER = ["closed", "truncated", "status", "timeout", "other"]


def read_response(sock, buf):
    """One response from `sock`: (status, closes), or (None, True) on EOF before any byte.
    Bytes after it stay in `buf`. Raises EOFError on EOF inside it."""
    need = None  # the response's length, once its head is in
    for _ in range(100_000):
        end = buf.find(b"\r\n\r\n") if need is None else -1
        if end >= 0:
            lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
            headers = {n.strip().lower(): v.strip() for n, _, v in (h.partition(":") for h in lines[1:])}
            # No Content-Length (a KeyError) or no status: an unreadable response, "other".
            status, need = int(lines[0].split(" ", 2)[1]), end + 4 + int(headers["content-length"])
        if need is not None and len(buf) >= need:
            del buf[:need]
            return status, "close" in headers.get("connection", "").lower()
        chunk = sock.recv(65536)
        if not chunk:
            if buf:
                raise EOFError()
            return None, True
        buf += chunk
    raise ValueError("a response over 100,000 reads")


class Load:
    """Client threads; each request's (start, end, kind, class) goes to `records`."""

    def __init__(self, port, args):
        self.addr = ("127.0.0.1", port)
        self.args = args
        self.records = []  # list.append is atomic under the GIL
        self.stop = threading.Event()
        self.threads = []

    def start(self):
        a = self.args
        plan = ([("keep-alive", "/plaintext", True)] * a.keepalive + [("new-conn", "/json", False)] * a.fresh
                + [("slow", SLOW_PATH, i % 2 == 0) for i in range(a.slow)])
        self.threads = [threading.Thread(target=self.client, args=p, daemon=True) for p in plan]
        for t in self.threads:
            t.start()

    def finish(self, timeout):
        """Stops the clients; how many did not stop within `timeout` seconds."""
        return stop_threads(self.stop, self.threads, timeout)

    def client(self, kind, path, keep):
        request = f"GET {path} HTTP/1.1\r\nHost: h\r\n\r\n".encode()
        sock, buf = None, bytearray()
        for _ in range(10_000_000):  # bounded; the stop event ends it long before
            if self.stop.is_set():
                break
            t0 = time.monotonic()
            reused = sock is not None
            try:
                if sock is None:
                    sock = socket.create_connection(self.addr, timeout=self.args.client_timeout)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    buf.clear()
                try:
                    sock.sendall(request)
                    status, closes = read_response(sock, buf)
                except BrokenPipeError:
                    if not reused:
                        raise
                    status, closes = None, True
                if status is None:
                    outcome = "retried" if reused else "closed"
                else:
                    outcome = "ok" if status == 200 else "status"
                if closes or not keep:
                    sock.close()
                    sock = None
            except EOFError:
                outcome = "truncated"
            except (OSError, ValueError, KeyError, IndexError) as e:
                outcome = failure_class(e)
            if sock is not None and outcome not in ("ok", "status"):
                sock.close()  # the connection's state is unknown: start over on a new one
                sock = None
            self.records.append((t0, time.monotonic(), kind, outcome))
            self.stop.wait(self.args.pause_ms / 1000)
        if sock is not None:
            sock.close()


def read_log(path):
    with open(path, errors="replace") as f:
        return f.read()


def wait_log(path, pattern, n, timeout):
    """Reads the log every millisecond until `pattern` matched `n` times (it is a few KiB);
    the matches, or None after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout * 1000) + 10):
        found = re.findall(pattern, read_log(path))
        if len(found) >= n or time.monotonic() >= deadline:
            break
        time.sleep(0.001)
    return found if len(found) >= n else None


def listening_inode(port):
    """The inode of the socket listening on 127.0.0.1:`port` in /proc/net/tcp, or None."""
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                return int(fields[9])
    return None


def alive(pid, binary):
    """True while `pid` runs `binary` (a zombie, or a reused PID, is not ours to stop)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                return False
        return os.readlink(f"/proc/{pid}/exe") == binary
    except (OSError, IndexError):
        return False


def stop_pid(pid, binary, timeout):
    """SIGTERM to `pid` if it still runs `binary`, SIGKILL after `timeout` s; True if it
    ended on the SIGTERM (or was gone already)."""
    if not alive(pid, binary):
        return True
    os.kill(pid, signal.SIGTERM)
    for _ in range(int(timeout * 200)):  # 5 ms apart: at least `timeout` seconds
        if not alive(pid, binary):
            break
        time.sleep(0.005)
    if alive(pid, binary):
        os.kill(pid, signal.SIGKILL)
        return False
    return True


def start_server(binary, port, log_path, env):
    with open(log_path, "ab") as err:  # O_APPEND: every generation writes to one log
        return subprocess.Popen([binary, "--listen", f"127.0.0.1:{port}"], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=err, env=env, start_new_session=True)


def one_run(mode, binary, args, workdir):
    """The load across `args.rounds` hand-overs or restarts; a result dict."""
    env = dict(os.environ, RUST_LOG="info")
    for name in ("DATABASE_URL", "PORT", "LISTEN_FDS", "LISTEN_PID", "NOTIFY_SOCKET"):
        env.pop(name, None)
    log_path = os.path.join(workdir, f"{mode}.log")
    listening = r"Listening on http://127\.0\.0\.1:(\d+)"
    proc = start_server(binary, 0, log_path, env)
    pid, load, switches, inodes, problems = proc.pid, None, [], [], []
    try:
        found = wait_log(log_path, listening, 1, 10)
        if not found:
            raise RuntimeError(f"no 'Listening on' within 10 s; see {log_path}")
        port = int(found[0])
        inodes.append(listening_inode(port))
        load = Load(port, args)
        load.start()
        time.sleep(args.settle)
        for n in range(1, args.rounds + 1):
            if mode == "handover":
                sw, pid = hand_over(pid, proc, n, log_path, binary, args)
            else:
                sw, proc = restart(proc, n, log_path, binary, port, env, listening, args)
                pid = proc.pid
            inodes.append(listening_inode(port))
            sw["inode"] = inodes[-1]
            switches.append(sw)
            log(f"  {mode} {n:2}/{args.rounds}: " + ", ".join(f"{k} {v}" for k, v in sw.items() if k != "problem")
                + (f"  PROBLEM: {sw['problem']}" if sw.get("problem") else ""))
            if sw.get("problem"):
                problems.append(f"{mode} {n}: {sw['problem']}")
                break
            # Jittered: the slow clients are in step after each round (they all reconnect as
            # it ends), so a fixed gap would signal at the same point of their 200 ms every time.
            time.sleep(args.gap * random.uniform(0.5, 1.5))
        time.sleep(args.settle)
    except RuntimeError as e:
        problems.append(str(e))
    finally:
        if load is not None and load.finish(args.client_timeout + 2):
            problems.append("client threads did not stop")
        # Our child (the first generation, or the last restart), then the generations named
        # in the log, last first: by PID, and only while /proc says it runs our binary.
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            problems.append(f"PID {proc.pid} killed at the end")
        for p in sorted({pid} | set(map(int, re.findall(r"started successor (\d+)", read_log(log_path)))) - {proc.pid},
                        key=lambda p: p != pid):
            if not stop_pid(p, binary, 15):
                problems.append(f"PID {p} killed at the end")
    time.sleep(0.05)
    text = read_log(log_path)
    codes = [int(c) for c in re.findall(r"shutdown report: .*; exit (\d+)", text)]
    if len(codes) != len(switches) + 1 or any(codes):
        problems.append(f"generations' exit codes {codes}, expected {len(switches) + 1} x 0")
    problems += re.findall(r"hand-over failed: .*", text)
    if mode == "handover" and len(set(inodes)) != 1:
        problems.append(f"listening socket inodes changed: {inodes}")
    return {"mode": mode, "records": load.records if load else [], "switches": switches, "codes": codes,
            "inodes": inodes, "problems": problems, "log": log_path,
            "warnings": len(re.findall(r"\] *(?:WARN|ERROR) ", text))}


def hand_over(pid, first, n, log_path, binary, args):
    """SIGHUP to `pid`; times the successor's ready line and the old generation's exit."""
    t0 = time.monotonic()
    os.kill(pid, signal.SIGHUP)  # a generation we started, or one named in our log
    ready = wait_log(log_path, r"successor (\d+) is ready: it accepts", n, SWITCH_TIMEOUT)
    t_ready = time.monotonic()
    if ready is None:
        return {"problem": f"no successor ready within {SWITCH_TIMEOUT} s; see {log_path}"}, pid
    successor = int(ready[n - 1])
    deadline = t_ready + SWITCH_TIMEOUT
    for _ in range(int(SWITCH_TIMEOUT * 500) + 10):
        gone = first.poll() is not None if pid == first.pid else not alive(pid, binary)
        if gone or time.monotonic() >= deadline:
            break
        time.sleep(0.002)
    t_exit = time.monotonic()
    sw = {"old": pid, "new": successor, "SIGHUP->ready ms": round((t_ready - t0) * 1000, 1),
          "ready->old exit ms": round((t_exit - t_ready) * 1000, 1)}
    if not gone:
        sw["problem"] = f"generation {pid} still running {SWITCH_TIMEOUT} s after its successor was ready"
    return sw, successor


def restart(proc, n, log_path, binary, port, env, listening, args):
    """SIGTERM to our child, wait for its exit, start a new one on `port`; times the gap."""
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    # Polled every millisecond: Popen.wait(timeout) sleeps up to 50 ms between looks, which
    # would stretch the gap by as much.
    for _ in range(int(SWITCH_TIMEOUT * 1000)):
        if proc.poll() is not None:
            break
        time.sleep(0.001)
    if proc.poll() is None:
        proc.kill()
        proc.wait(5)
        return {"problem": "no exit in time: killed"}, proc
    t_exit = time.monotonic()
    new = start_server(binary, port, log_path, env)
    found = wait_log(log_path, listening, n + 1, SWITCH_TIMEOUT)
    t_listen = time.monotonic()
    sw = {"old": proc.pid, "new": new.pid, "exit": proc.returncode,
          "signal->exit ms": round((t_exit - t0) * 1000, 1), "gap ms": round((t_listen - t0) * 1000, 1)}
    if found is None:
        sw["problem"] = f"no 'Listening on' from the new process within {SWITCH_TIMEOUT} s"
    return sw, new


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, max(0, int(round(p / 100 * len(values) + 0.5)) - 1))] if values else None


def row_of(r):
    counts = {c: 0 for c in CLASSES}
    for rec in r["records"]:
        counts[rec[3]] += 1
    fast = [(t1 - t0) * 1000 for t0, t1, kind, o in r["records"] if o == "ok" and kind != "slow"]
    slow = [(t1 - t0) * 1000 for t0, t1, kind, o in r["records"] if o == "ok" and kind == "slow"]
    key = "SIGHUP->ready ms" if r["mode"] == "handover" else "gap ms"
    times = [s[key] for s in r["switches"] if key in s]
    f = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
    mode = f"{'hand-over' if r['mode'] == 'handover' else 'restart'} x{len(r['switches'])}"
    return [mode, f"{len(r['records']):,}", f"{counts['ok']:,}", str(counts["retried"]), str(counts["refused"]),
            str(counts["reset"]), str(sum(counts[c] for c in OTHER)), f(percentile(fast, 50)),
            f(percentile(fast, 99)), f(percentile(slow, 99)),
            f"{f(percentile(times, 50))} / {f(max(times, default=None))}", " ".join(map(str, r["codes"]))]


HEADER = ["mode", "requests", "ok", "retried keep-alive", "refused", "reset", "other failures",
          "p50 ms", "p99 ms", "slow p99 ms", "SIGHUP→ready / gap p50 / max ms", "exit codes by generation"]


def notes_of(r):
    by = {}
    for _, _, kind, o in r["records"]:
        by[(o, kind)] = by.get((o, kind), 0) + (o != "ok")
    detail = ", ".join(f"{n} {o} ({k})" for (o, k), n in sorted(by.items()) if n) or "none"
    times = " ".join(str(s.get("SIGHUP->ready ms", s.get("gap ms"))) for s in r["switches"])
    drains = " ".join(str(s["ready->old exit ms"]) for s in r["switches"] if "ready->old exit ms" in s)
    lines = [f"{r['mode']}: not ok, by class and client: {detail}",
             f"{r['mode']}: listening socket inode {' -> '.join(map(str, r['inodes']))} "
             f"({len(set(r['inodes']))} distinct); WARN/ERROR log lines: {r['warnings']}",
             f"{r['mode']}: " + (f"SIGHUP->ready ms: {times}; ready->old generation's exit ms: {drains}"
                                 if r["mode"] == "handover" else f"signal->new 'Listening on' (gap) ms: {times}")]
    if r["problems"]:
        lines.append(f"{r['mode']}: PROBLEMS: {'; '.join(r['problems'])} (log: {r['log']})")
    return lines


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=10, help="hand-overs, and restarts, per run (default 10)")
    p.add_argument("--only", choices=["handover", "restart"], help="one run only (default: both, hand-over first)")
    p.add_argument("--keepalive", type=int, default=4, help="keep-alive /plaintext client threads (default 4)")
    p.add_argument("--fresh", type=int, default=2, help="new-connection /json client threads (default 2)")
    p.add_argument("--slow", type=int, default=4, help=f"{SLOW_PATH} client threads, half keep-alive (default 4)")
    p.add_argument("--pause-ms", type=int, default=5, help="pause of each client between requests (default 5)")
    p.add_argument("--gap", type=float, default=1.0, help="mean seconds of load between rounds, jittered +-50%% (default 1)")
    p.add_argument("--settle", type=float, default=1.0, help="seconds of load before the first and after the last round (default 1)")
    p.add_argument("--client-timeout", type=float, default=5.0, help="seconds a client waits (default 5)")
    p.add_argument("--keep-logs", action="store_true", help="keep the logs (kept anyway when a run has a problem)")
    args = p.parse_args()
    command = check_args(args, [
        ("--rounds", 1, 100), ("--keepalive", 0, 64), ("--fresh", 0, 64), ("--slow", 0, 64),
        ("--pause-ms", 0, 1000), ("--gap", 0, 60), ("--settle", 0, 60), ("--client-timeout", 1, 60),
    ])
    if args.keepalive + args.fresh + args.slow == 0:
        p.error("no client threads: give --keepalive, --fresh or --slow above 0")
    built = build_lastcall(quiet=True)
    workdir = tempfile.mkdtemp(prefix="handover-")
    binary = os.path.join(workdir, "lastcall")
    shutil.copy2(built, binary)
    head = [machine_line(nproc()), f"lastcall {git_rev()} ({built}, run from a copy in {workdir})",
            f"load: {args.keepalive} keep-alive /plaintext, {args.fresh} new-connection /json, {args.slow} "
            f"{SLOW_PATH} ({(args.slow + 1) // 2} keep-alive) client threads, {args.pause_ms} ms pause each; "
            f"{args.rounds} rounds, {args.gap} s +-50% apart", f"command: {command}"]
    for line in head:
        log(line)
    results = []
    for mode in [args.only] if args.only else ["handover", "restart"]:
        log(f"run {mode}:")
        results.append(one_run(mode, binary, args, workdir))
    rows = [row_of(r) for r in results]
    notes = [line for r in results for line in notes_of(r)]
    log()
    for line in head + render_table(HEADER, rows, markdown=False) + notes:
        log(line)
    log("\nMarkdown:\n")
    for line in render_table(HEADER, rows, markdown=True) + [""] + [f"- {n}" for n in notes]:
        log(line)
    lost = {r["mode"]: sum(rec[3] not in ("ok", "retried") for rec in r["records"]) for r in results}
    if "restart" in lost:
        log(f"\nrestart: {lost['restart']} requests lost across {args.rounds} restarts (expected: more than 0)")
    verdict = int(any(r["problems"] for r in results) or lost.get("handover", 0) > 0)
    log("verdict: " + ("no request failed across the hand-overs" if verdict == 0
                       else "FAILED: see the hand-over row and the PROBLEMS above"))
    if args.keep_logs or verdict:
        log(f"logs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    sys.exit(verdict)


if __name__ == "__main__":
    main()
