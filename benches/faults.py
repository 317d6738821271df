#!/usr/bin/env python3
"""Database faults under load: what clients of `GET /users/1` get while the database is
stopped, frozen, restarted, or replaced by a listener that never speaks.

    python3 benches/faults.py [--clients C] [--phase-seconds S]

What it does:
 1. starts a throwaway PostgreSQL cluster (db.py's `Cluster`: a temp dir, a Unix socket,
    no TCP port; as the `postgres` user when run as root) and loads schema.sql;
 2. `cargo build --release`, starts lastcall on it (`DB_POOL_SIZE=4`, `--listen
    127.0.0.1:0`) and waits (bounded) for `/users/1` to answer 200;
 3. runs C client threads, each asking `/users/1` on a fresh connection, one request at a
    time, with a client timeout of CLIENT_TIMEOUT, through these phases of S seconds:
    up; stopped (`pg_ctl stop -m immediate`); restarted (`pg_ctl start`); frozen (the
    postmaster and its children stopped with SIGSTOP); thawed (SIGCONT);
 4. SIGTERMs lastcall and notes its exit code and how long it took;
 5. starts a second lastcall whose DATABASE_URL points at a TCP listener of this script
    that accepts and never writes, runs the same clients for one phase, and SIGTERMs it;
 6. prints one table: per phase, how many requests got 200, 503, another status, an
    error (reset, refused, a bad response), or no answer within CLIENT_TIMEOUT. A request
    counts in the phase it started in.

Python 3 standard library only; Linux only. Every wait is bounded, every loop ends with
its phase, and it only signals the processes it started (the cluster's, by PID).
"""

import argparse
import http.client
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from benchlib import ROOT, build_lastcall, fail, log, render_table  # benches/ is sys.path[0]
from db import Cluster, listening_port, pg_bin_dir

POOL_SIZE = 4
# Longer than lastcall's own bounds on a database request (queue 2 s + queries 5 s, after
# at most a 1 s connect): a client that waits this long has met a hang.
CLIENT_TIMEOUT = 10.0
READY_TIMEOUT = 30.0  # s: lastcall listening and /users/1 answering 200
EXIT_TIMEOUT = 20.0  # s after SIGTERM (lastcall's own shutdown budget is 10 s)
OUTCOMES = ("200", "503", "other", "errors", "timeouts")


class Tally:
    """Outcome counts and the slowest answer per phase; one lock, many client threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.phase = None
        self.order = []
        self.counts = {}
        self.slowest = {}

    def begin(self, phase):
        with self.lock:
            self.phase = phase
            self.order.append(phase)
            self.counts[phase] = dict.fromkeys(OUTCOMES, 0)
            self.slowest[phase] = 0.0

    def current(self):
        with self.lock:
            return self.phase

    def add(self, phase, outcome, seconds):
        with self.lock:
            self.counts[phase][outcome] += 1
            self.slowest[phase] = max(self.slowest[phase], seconds)


def one_request(port):
    """One GET /users/1 on a fresh connection: its outcome, one of OUTCOMES."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=CLIENT_TIMEOUT)
    try:
        conn.request("GET", "/users/1", headers={"Connection": "close"})
        resp = conn.getresponse()
        resp.read()
        return str(resp.status) if resp.status in (200, 503) else "other"
    except (socket.timeout, TimeoutError):
        return "timeouts"
    except (OSError, http.client.HTTPException):
        return "errors"
    finally:
        conn.close()


def client(port, tally, stop):
    while not stop.is_set():
        phase = tally.current()
        started = time.monotonic()
        outcome = one_request(port)
        tally.add(phase, outcome, time.monotonic() - started)


def run_clients(port, tally, phases, clients):
    """Runs `clients` threads through `phases`: (name, action before it, seconds)."""
    stop = threading.Event()
    tally.begin(phases[0][0])
    threads = [threading.Thread(target=client, args=(port, tally, stop), daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    for i, (name, action, seconds) in enumerate(phases):
        if i > 0:
            tally.begin(name)
        if action:
            action()
        time.sleep(seconds)
    stop.set()
    deadline = time.monotonic() + CLIENT_TIMEOUT + 5
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    return sum(t.is_alive() for t in threads)


class Lastcall:
    def __init__(self, binary, url, workdir, name):
        self.log_path = os.path.join(workdir, f"lastcall-{name}.log")
        env = dict(os.environ, DATABASE_URL=url, DB_POOL_SIZE=str(POOL_SIZE), RUST_LOG="warn")
        with open(self.log_path, "wb") as err:
            self.proc = subprocess.Popen([binary, "--listen", "127.0.0.1:0"], stdin=subprocess.DEVNULL,
                                         stdout=err, stderr=err, env=env, start_new_session=True)
        deadline = time.monotonic() + READY_TIMEOUT
        self.port = None
        while self.port is None and time.monotonic() < deadline and self.proc.poll() is None:
            self.port = listening_port(self.proc.pid)
            time.sleep(0.05)
        if self.port is None:
            self.stop()
            raise RuntimeError(f"lastcall did not listen within {READY_TIMEOUT}s")

    def wait_status(self, status):
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if one_request(self.port) == status:
                return
            time.sleep(0.1)
        raise RuntimeError(f"/users/1 never answered {status} within {READY_TIMEOUT}s")

    def stop(self):
        """SIGTERM, bounded wait; SIGKILL (by PID) if it does not exit. (code, seconds)."""
        started = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=EXIT_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
                return None, time.monotonic() - started
        return self.proc.returncode, time.monotonic() - started


class SilentListener:
    """Accepts connections on 127.0.0.1 and never writes; holds them until closed."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.held = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while not self.stop.is_set():
            try:
                self.held.append(self.sock.accept()[0])
            except (socket.timeout, TimeoutError):
                pass

    def close(self):
        self.stop.set()
        self.thread.join(5)
        for s in self.held:
            s.close()
        self.sock.close()


def cluster_pids(cluster):
    """The postmaster and its children, postmaster first."""
    pm = cluster.postmaster_pid()
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pm:
                        kids.append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    return [pm] + kids


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=32, help="concurrent clients (default 32)")
    ap.add_argument("--phase-seconds", type=float, default=6.0, help="seconds per phase (default 6)")
    args = ap.parse_args()
    if not 1 <= args.clients <= 1000 or not 1 <= args.phase_seconds <= 600:
        fail("--clients must be 1..1000 and --phase-seconds 1..600")
    if sys.platform != "linux":
        fail("Linux only (/proc)")
    pg_bin = pg_bin_dir()
    if not pg_bin:
        fail("PostgreSQL server tools (initdb, pg_ctl, psql) not found; Debian: apt-get install postgresql")
    binary = build_lastcall(quiet=True)
    workdir = tempfile.mkdtemp(prefix="lastcall-faults-")
    cluster = Cluster(pg_bin)
    frozen = []
    tally = Tally()
    exits = []
    try:
        cluster.start()
        cluster.psql(file=os.path.join(ROOT, "schema.sql"))
        server = Lastcall(binary, cluster.url(), workdir, "postgres")
        server.wait_status("200")
        ctl = lambda *a: cluster._tool("pg_ctl", ["-w", "-t", "30", "-D", cluster.data, "-l", cluster.server_log, *a], timeout=60)  # noqa: E731

        def freeze():
            frozen.extend(cluster_pids(cluster))
            os.kill(frozen[0], signal.SIGSTOP)  # the postmaster first: then it starts no child
            for pid in frozen[1:]:
                os.kill(pid, signal.SIGSTOP)

        def thaw():
            for pid in frozen:
                os.kill(pid, signal.SIGCONT)
            frozen.clear()

        s = args.phase_seconds
        log(f"{args.clients} clients, {s:g} s per phase, DB_POOL_SIZE={POOL_SIZE}")
        stuck = run_clients(server.port, tally, [
            ("up", None, s),
            ("stopped", lambda: ctl("stop", "-m", "immediate"), s),
            ("restarted", lambda: ctl("start"), s),
            ("frozen (SIGSTOP)", freeze, s),
            ("thawed (SIGCONT)", thaw, s),
        ], args.clients)
        exits.append(("PostgreSQL", *server.stop(), stuck))

        silent = SilentListener()
        try:
            url = f"host=127.0.0.1 port={silent.port} user=postgres dbname=postgres"
            server = Lastcall(binary, url, workdir, "silent")
            stuck = run_clients(server.port, tally, [("silent listener", None, s)], args.clients)
            exits.append(("silent listener", *server.stop(), stuck))
        finally:
            silent.close()
    except KeyboardInterrupt:
        log("interrupted")
        return 1
    finally:
        if frozen:
            for pid in frozen:
                os.kill(pid, signal.SIGCONT)
        cluster.destroy()

    rows = []
    for phase in tally.order:
        c = tally.counts[phase]
        rows.append([phase, str(sum(c.values()))] + [str(c[o]) for o in OUTCOMES]
                    + [f"{tally.slowest[phase] * 1000:.0f}"])
    log()
    for line in render_table(["phase", "requests", *OUTCOMES, "slowest ms"], rows, markdown=False):
        log(line)
    log()
    for name, code, seconds, stuck in exits:
        log(f"SIGTERM with {name}: exit {code} after {seconds:.2f} s; clients still waiting: {stuck}")
    log(f"lastcall logs: {workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
