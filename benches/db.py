#!/usr/bin/env python3
"""Database benchmark: TechEmpower's single-query test (`GET /db`, one random row of the
10,000-row `world` table as `{"id":N,"randomNumber":M}`) driven by wrk, at several
`DB_POOL_SIZE`s.

    python3 benches/db.py [--duration S] [--connections C] [--pool-sizes 1,2,4,8] [--runs R] [--pin-wrk CPU]

What it does:
 1. checks for wrk and the PostgreSQL server tools (initdb, pg_ctl, psql; on PATH or in
    /usr/lib/postgresql/*/bin) and says how to install them when missing (exit 2);
 2. starts a throwaway PostgreSQL cluster in a temp dir, as tests/support/pg.rs does:
    `initdb --auth=trust -U postgres`, as the `postgres` user (via runuser) when run as
    root, a Unix socket in a private directory and no TCP port (listen_addresses = ''),
    fsync/synchronous_commit/full_page_writes off (the cluster is deleted afterwards; /db only
    reads). Loads schema.sql. The cluster is stopped and removed at the end, also on error
    and Ctrl-C;
 3. `cargo build --release`, then for each pool size: starts lastcall with DATABASE_URL on
    that socket, DB_POOL_SIZE=n, RUST_LOG=warn, `--listen 127.0.0.1:0` (the port is read from
    /proc: at RUST_LOG=warn the `Listening on` line is not logged); waits (bounded) until /db
    answers 200 and pg_stat_activity shows n lastcall sessions; checks 20 /db bodies against
    the table; a 1 s wrk warm-up; `wrk -t1 -cC -dS --latency http://ADDR/db`; SIGTERM and
    checks exit 0, no lastcall session left in pg_stat_activity, and nothing in its log;
 4. prints the machine, the exact command and the table, as text and as Markdown. With
    --runs R, each size runs R times (order alternating) and the table shows medians.

Nothing is pinned unless --pin-wrk is given: PostgreSQL, lastcall (its loop and its
workers) and wrk share every core, and the numbers are for that setting.

The generic parts (logging, the build, /proc readers, the machine line, tables) come from
benchlib.py, shared with load.py and shutdown.py.

Python 3 standard library only; Linux only (/proc). Loopback and a Unix socket only. Every
wait is bounded, and it only signals the processes it started, by PID.
"""

import argparse
import glob
import http.client
import json
import os
import pwd
import re
import resource
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

from benchlib import (  # benches/ is sys.path[0] when run as a script
    CLK_TCK, ROOT, build_lastcall, children, cpu_ticks, cpu_times, fail, find_tool, git_rev, log, machine_line,
    pin_prefix, render_table, version_of,
)

PG_PORT = 5432  # only names the socket file (.s.PGSQL.5432); no TCP port is opened
PG_SETTINGS = """
listen_addresses = ''
port = 5432
fsync = off
synchronous_commit = off
full_page_writes = off
timezone = 'UTC'
"""
ROWS = 10_000
SAMPLES = 20  # /db bodies checked against the table before each run
READY_TIMEOUT = 30.0  # s: lastcall listening, /db 200, all pool sessions up
EXIT_TIMEOUT = 20.0  # s after SIGTERM (lastcall's own shutdown budget is 10 s)


# --------------------------------------------------------------------------- tools


def pg_bin_dir():
    """The directory holding initdb, pg_ctl and psql: on PATH, else the newest
    /usr/lib/postgresql/*/bin (Debian installs the server there, off PATH)."""
    tools = ("initdb", "pg_ctl", "psql")
    for d in os.environ.get("PATH", "").split(os.pathsep):
        if d and all(os.access(os.path.join(d, t), os.X_OK) for t in tools):
            return d
    found = []
    for d in glob.glob("/usr/lib/postgresql/*/bin"):
        version = os.path.basename(os.path.dirname(d))
        if version.isdigit() and all(os.access(os.path.join(d, t), os.X_OK) for t in tools):
            found.append((int(version), d))
    return max(found)[1] if found else None


def check_tools():
    wrk, pg = find_tool("wrk"), pg_bin_dir()
    missing = [name for name, path in (("wrk", wrk), ("PostgreSQL server (initdb, pg_ctl, psql)", pg)) if not path]
    if not shutil.which("cargo"):
        missing.append("cargo (Rust: https://rustup.rs)")
    if missing:
        fail(
            "missing: " + ", ".join(missing) + "\n"
            "Install, then run this again:\n"
            "  Debian/Ubuntu:  sudo apt-get update && sudo apt-get install -y wrk postgresql\n"
            "(Only the server binaries are used, from PATH or /usr/lib/postgresql/*/bin; the\n"
            "machine's own PostgreSQL service is neither started nor touched.)"
        )
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            fail("running as root needs a `postgres` user to own the throwaway cluster "
                 "(PostgreSQL refuses to run as root); the postgresql package creates it")
    return wrk, pg


# --------------------------------------------------------------------------- PostgreSQL


class Cluster:
    """A throwaway cluster in a fresh temp dir: data/, sock/, server.log."""

    def __init__(self, bin_dir):
        self.bin = bin_dir
        self.owner = None
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            self.owner = (pw.pw_uid, pw.pw_gid)
        # Short path: the socket path must fit in 107 bytes.
        self.root = tempfile.mkdtemp(prefix="lastcall-dbbench-", dir="/tmp")
        self.data = os.path.join(self.root, "data")
        self.sock = os.path.join(self.root, "sock")
        self.server_log = os.path.join(self.root, "server.log")
        self.started = False
        os.mkdir(self.sock, 0o700)
        os.chmod(self.root, 0o755)  # the postgres user must reach it
        if self.owner:
            for d in (self.root, self.sock):
                os.chown(d, *self.owner)

    def url(self):
        return f"host={self.sock} port={PG_PORT} user=postgres dbname=postgres"

    def _tool(self, tool, args, timeout):
        cmd = [os.path.join(self.bin, tool)] + args
        if self.owner:
            cmd = ["runuser", "-u", "postgres", "--"] + cmd
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}
        # Own session: a Ctrl+C on the bench reaches us, not the postmaster; we stop it.
        r = subprocess.run(cmd, cwd=self.root, env=env, stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=timeout, start_new_session=True)
        if r.returncode != 0:
            raise RuntimeError(f"{tool} {' '.join(args)}: exit {r.returncode}\n{r.stdout}{r.stderr}\n"
                               f"server log:\n{self.read_log()}")
        return r.stdout

    def start(self):
        self._tool("initdb", ["--auth=trust", "-U", "postgres", "--no-sync", "--locale=C",
                              "-E", "UTF8", "-D", self.data], timeout=120)
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            f.write(PG_SETTINGS + f"unix_socket_directories = '{self.sock}'\n")
        self.started = True  # from here on, stop() has something to stop
        self._tool("pg_ctl", ["-w", "-t", "30", "-D", self.data, "-l", self.server_log, "start"], timeout=60)

    def psql(self, sql=None, file=None):
        cmd = [os.path.join(self.bin, "psql"), "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1",
               "-h", self.sock, "-p", str(PG_PORT), "-U", "postgres", "-d", "postgres"]
        cmd += ["-f", file] if file else ["-c", sql]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}
        r = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=60, start_new_session=True)
        if r.returncode != 0:
            raise RuntimeError(f"psql {sql or file}: exit {r.returncode}\n{r.stderr}")
        return r.stdout.strip()

    def postmaster_pid(self):
        try:
            with open(os.path.join(self.data, "postmaster.pid")) as f:
                return int(f.readline())
        except (OSError, ValueError):
            return None

    def read_log(self):
        try:
            with open(self.server_log, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def destroy(self):
        """Stops the cluster (fast, then immediate) and deletes its directory."""
        if self.started and os.path.exists(os.path.join(self.data, "postmaster.pid")):
            for mode in ("fast", "immediate"):
                try:
                    self._tool("pg_ctl", ["-w", "-t", "30", "-D", self.data, "stop", "-m", mode], timeout=60)
                    break
                except (RuntimeError, subprocess.TimeoutExpired) as e:
                    log(f"pg_ctl stop -m {mode} failed: {str(e).splitlines()[0]}")
        shutil.rmtree(self.root, ignore_errors=True)


# --------------------------------------------------------------------------- measuring


def ticks_or_none(pid):
    """benchlib's cpu_ticks (utime+stime, clock ticks), or None when the process is gone."""
    try:
        return cpu_ticks(pid)
    except (OSError, IndexError, ValueError):
        return None


def children_ticks(ppid):
    """utime+stime summed over the direct children of `ppid` (the PostgreSQL backends)."""
    return sum(t for t in map(ticks_or_none, children(ppid)) if t is not None)


def busy_seconds():
    """CPU seconds the whole machine has been busy (every CPU, idle and iowait left out)."""
    return sum(busy for busy, _steal in cpu_times().values())


def listening_port(pid):
    """The TCP port `pid` listens on, found through /proc (its socket inodes)."""
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
        with open(f"/proc/{pid}/net/tcp") as f:
            next(f)
            for line in f:
                parts = line.split()
                if parts[3] == "0A" and parts[9] in inodes:  # 0A = LISTEN
                    return int(parts[1].split(":")[1], 16)
    except (OSError, StopIteration):
        pass
    return None


def get(port, path, timeout=2.0):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def to_ms(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    return float(m.group(1)) * UNITS_MS[m.group(2)] if m else None


def parse_wrk(out):
    def find(pattern, conv=float, default=None):
        m = re.search(pattern, out, re.M)
        return conv(m.group(1)) if m else default

    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "rps": find(r"^Requests/sec:\s+([\d.]+)"),
        "requests": find(r"^\s*(\d+) requests in", int),
        "p50": find(r"^\s+50%\s+(\S+)", to_ms),
        "p99": find(r"^\s+99%\s+(\S+)", to_ms),
        "non2xx": find(r"Non-2xx or 3xx responses: (\d+)", int, 0),
        "sock_errors": dict(zip(("connect", "read", "write", "timeout"), map(int, socket_errors.groups())))
        if socket_errors else {},
    }


class Lastcall:
    def __init__(self, binary, cluster, pool, workdir):
        self.cluster = cluster
        self.pool = pool
        self.log_path = os.path.join(workdir, f"lastcall-pool{pool}.log")
        env = dict(os.environ)
        env.update(DATABASE_URL=cluster.url(), DB_POOL_SIZE=str(pool), RUST_LOG="warn")
        self.cmd = [binary, "--listen", "127.0.0.1:0"]
        with open(self.log_path, "wb") as err:
            self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                         env=env, start_new_session=True)
        self.port = None

    def wait_ready(self):
        """Bounded: a port, /db 200, and every pool worker's session in pg_stat_activity."""
        deadline = time.monotonic() + READY_TIMEOUT
        last = "nothing yet"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"lastcall exited with {self.proc.returncode} during start-up:\n{self.read_log()}")
            if self.port is None:
                self.port = listening_port(self.proc.pid)
            elif last != "200":
                try:
                    status, body = get(self.port, "/db")
                    last = str(status) if status == 200 else f"{status} {body[:80]!r}"
                except OSError as e:
                    last = repr(e)
            else:
                sessions = int(self.cluster.psql(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'lastcall'"))
                if sessions == self.pool:
                    return
                last = f"200, but {sessions}/{self.pool} pool sessions"
            time.sleep(0.05)
        raise RuntimeError(f"lastcall not ready within {READY_TIMEOUT}s (port={self.port}, last /db: {last})")

    def stop(self):
        """SIGTERM, bounded wait; SIGKILL (by PID) only if it does not exit. Returns the code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=EXIT_TIMEOUT)
            except subprocess.TimeoutExpired:
                log(f"lastcall (pid {self.proc.pid}) still running {EXIT_TIMEOUT}s after SIGTERM: SIGKILL")
                self.proc.kill()
                self.proc.wait(timeout=10)
                return None
        return self.proc.returncode

    def read_log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()


def check_bodies(port, world):
    """SAMPLES /db answers: 200, exactly {"id":N,"randomNumber":M} with M the table's value."""
    ids = set()
    for _ in range(SAMPLES):
        status, body = get(port, "/db")
        if status != 200:
            return f"/db answered {status}: {body[:200]!r}"
        try:
            obj = json.loads(body)
        except ValueError:
            return f"/db body is not JSON: {body[:200]!r}"
        if set(obj) != {"id", "randomNumber"} or world.get(obj["id"]) != obj["randomNumber"]:
            return f"/db body does not match the table: {body[:200]!r}"
        ids.add(obj["id"])
    if len(ids) < SAMPLES // 2:
        return f"/db ids hardly random: {len(ids)} distinct in {SAMPLES}"
    return None


def run_pool(binary, wrk_prefix, cluster, world, pool, args, workdir):
    server = Lastcall(binary, cluster, pool, workdir)
    result = {"pool": pool, "problems": []}
    try:
        server.wait_ready()
        bad = check_bodies(server.port, world)
        if bad:
            result["problems"].append(bad)
        url = f"http://127.0.0.1:{server.port}/db"
        warm = wrk_prefix + ["-t1", f"-c{args.connections}", "-d1s", url]
        subprocess.run(warm, capture_output=True, timeout=60)
        cmd = wrk_prefix + ["-t1", f"-c{args.connections}", f"-d{args.duration}s", "--latency", url]
        pg_pid = cluster.postmaster_pid()
        before = (ticks_or_none(server.proc.pid), children_ticks(pg_pid),
                  resource.getrusage(resource.RUSAGE_CHILDREN), busy_seconds())
        t0 = time.monotonic()
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=args.duration + 60)
        wall = time.monotonic() - t0
        after = (ticks_or_none(server.proc.pid), children_ticks(pg_pid),
                 resource.getrusage(resource.RUSAGE_CHILDREN), busy_seconds())
        if r.returncode != 0:
            result["problems"].append(f"wrk exit {r.returncode}: {r.stderr.strip()}")
        result.update(parse_wrk(r.stdout))
        result["wrk_out"] = r.stdout
        result["cpu"] = {  # cores used on average during the measured run
            "lastcall": (after[0] - before[0]) / CLK_TCK / wall if None not in (after[0], before[0]) else None,
            "postgres": (after[1] - before[1]) / CLK_TCK / wall,
            "wrk": (after[2].ru_utime + after[2].ru_stime - before[2].ru_utime - before[2].ru_stime) / wall,
            "machine": (after[3] - before[3]) / wall,
        }
        ours = sum(v for k, v in result["cpu"].items() if k != "machine" and v is not None)
        if result["cpu"]["machine"] - ours > 0.25:  # kernel threads, other users: noisy numbers
            result["note"] = (f"the machine was busier than the benchmark's processes by "
                              f"{result['cpu']['machine'] - ours:.2f} cores: something else ran")
        if result.get("rps") is None:
            result["problems"].append("could not parse wrk's output")
        if result.get("non2xx"):
            result["problems"].append(f"{result['non2xx']} non-2xx responses")
        if any(result.get("sock_errors", {}).values()):
            result["problems"].append(f"wrk socket errors {result['sock_errors']}")
    finally:
        code = server.stop()
    result["exit"] = code
    if code != 0:
        result["problems"].append(f"lastcall exit code {code} after SIGTERM (expected 0)")
    # Its sessions end when the workers' Terminate reaches the backends: bounded wait.
    left = None
    for _ in range(50):
        left = int(cluster.psql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'lastcall'"))
        if left == 0:
            break
        time.sleep(0.1)
    if left:
        result["problems"].append(f"{left} lastcall sessions still in pg_stat_activity 5 s after exit")
    text = server.read_log().strip()
    if text:  # at RUST_LOG=warn, any line is a warning or an error
        lines = text.splitlines()
        result["problems"].append(f"{len(lines)} log lines (warn/error), first: " + " | ".join(lines[:3]))
    return result


# --------------------------------------------------------------------------- report


def machine_lines(cluster, wrk, pin_cpu):
    pin = (f"wrk pinned to CPU {pin_cpu} (taskset); PostgreSQL and lastcall unpinned"
           if pin_cpu is not None else "no pinning: PostgreSQL, lastcall (loop + workers) and wrk share all cores")
    return [
        machine_line(len(os.sched_getaffinity(0))),  # the CPUs this bench may use, as `nproc` counts
        f"PostgreSQL {cluster.psql('SHOW server_version')} (throwaway cluster, Unix socket, "
        "fsync=off synchronous_commit=off full_page_writes=off, other settings default)",
        f"{version_of([wrk, '--version']).split(' Copyright')[0]}; "
        f"lastcall at {git_rev()} (release build), RUST_LOG=warn",
        pin,
    ]


def fmt(v, spec):
    return "-" if v is None else format(v, spec)


def median(values):
    values = sorted(v for v in values if v is not None)
    return statistics.median(values) if values else None


def table(results, pools, markdown):
    """One row per pool size: medians over its runs (req/s min-max too when several)."""
    runs = max(sum(1 for r in results if r["pool"] == p) for p in pools)
    head = ["pool size", "req/s"] + (["req/s min-max", "runs"] if runs > 1 else [])
    head += ["p50 ms", "p99 ms", "non-2xx", "CPU cores busy: lastcall / postgres / wrk / machine"]
    rows = []
    for pool in pools:
        mine = [r for r in results if r["pool"] == pool]
        if not mine:
            continue
        rps = [r.get("rps") for r in mine if r.get("rps") is not None]
        row = [str(pool), fmt(median(rps), ",.0f")]
        if runs > 1:
            row += [f"{fmt(min(rps), ',.0f')}-{fmt(max(rps), ',.0f')}" if rps else "-", str(len(mine))]
        row += [
            fmt(median(r.get("p50") for r in mine), ".2f"), fmt(median(r.get("p99") for r in mine), ".2f"),
            str(sum(r.get("non2xx") or 0 for r in mine)),
            " / ".join(fmt(median(r.get("cpu", {}).get(k) for r in mine), ".2f")
                       for k in ("lastcall", "postgres", "wrk", "machine")),
        ]
        rows.append(row)
    return "\n".join(render_table(head, rows, markdown))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=int, default=10, help="seconds per measured wrk run (default 10)")
    ap.add_argument("--connections", type=int, default=64, help="wrk connections (default 64)")
    ap.add_argument("--pool-sizes", default="1,2,4,8", help="DB_POOL_SIZE values (default 1,2,4,8)")
    ap.add_argument("--runs", type=int, default=1,
                    help="measured runs per pool size, order alternating; the table shows medians (default 1)")
    ap.add_argument("--pin-wrk", type=int, metavar="CPU", help="pin wrk to this CPU with taskset (default: no pinning)")
    ap.add_argument("--keep-logs", action="store_true", help="keep lastcall's logs (kept anyway when a run has problems)")
    args = ap.parse_args()
    try:
        pools = [int(x) for x in args.pool_sizes.split(",") if x.strip()]
    except ValueError:
        fail(f"--pool-sizes: not a comma-separated list of integers: {args.pool_sizes!r}")
    if not pools or not all(1 <= p <= 64 for p in pools):
        fail("--pool-sizes: each must be 1..64 (lastcall's DB_POOL_SIZE range)")
    if args.duration < 1 or args.connections < 1 or args.runs < 1:
        fail("--duration, --connections and --runs must be at least 1")

    wrk, pg_bin = check_tools()
    pin = [] if args.pin_wrk is None else pin_prefix(args.pin_wrk)
    if args.pin_wrk is not None and not pin:
        fail(f"--pin-wrk {args.pin_wrk}: needs taskset and an available CPU")
    wrk_prefix = pin + [wrk]
    binary = build_lastcall(quiet=True)

    # SIGTERM to the bench unwinds like Ctrl+C, through the finally below.
    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    workdir = tempfile.mkdtemp(prefix="lastcall-dbbench-logs-")
    cluster = Cluster(pg_bin)
    results, keep = [], args.keep_logs
    try:
        log(f"starting a throwaway PostgreSQL in {cluster.root} (fsync=off: a benchmark cluster, deleted at the end)")
        cluster.start()
        cluster.psql(file=os.path.join(ROOT, "schema.sql"))
        cluster.psql("VACUUM ANALYZE world")
        world = {}
        for line in cluster.psql("SELECT id, randomnumber FROM world").splitlines():
            i, n = line.split("|")
            world[int(i)] = int(n)
        if len(world) != ROWS:
            fail(f"world has {len(world)} rows after loading schema.sql, expected {ROWS}")
        machine = machine_lines(cluster, wrk, args.pin_wrk)
        for run in range(args.runs):
            # Alternate the order, so drift (other load, page cache) does not favour one size.
            for pool in (pools if run % 2 == 0 else pools[::-1]):
                tag = f"run {run + 1}/{args.runs}, " if args.runs > 1 else ""
                log(f"{tag}pool size {pool}: warm-up 1 s, then wrk -t1 -c{args.connections} -d{args.duration}s ...")
                r = run_pool(binary, wrk_prefix, cluster, world, pool, args, workdir)
                results.append(r)
                cpu = r.get("cpu", {})
                log(f"  {fmt(r.get('rps'), ',.0f')} req/s, p50 {fmt(r.get('p50'), '.2f')} ms, "
                    f"p99 {fmt(r.get('p99'), '.2f')} ms, non-2xx {r.get('non2xx')}, exit {r['exit']}, cores used "
                    + ", ".join(f"{k} {fmt(v, '.2f')}" for k, v in cpu.items()))
                if r.get("note"):
                    log(f"  note: {r['note']}")
                for p in r["problems"]:
                    log(f"  PROBLEM: {p}")
                    keep = True
                if r["problems"] and r.get("wrk_out"):
                    log("  wrk output:\n    " + r["wrk_out"].strip().replace("\n", "\n    "))
    except KeyboardInterrupt:
        log("interrupted: cleaning up")
        keep = True
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
        log(f"error: {e}")
        keep = True
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # let the clean-up finish
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        cluster.destroy()
        log(f"PostgreSQL stopped and {cluster.root} removed")
        if keep:
            log(f"lastcall logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if not results:
        return 1

    command = "python3 benches/db.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    log()
    for line in machine:
        log(line)
    log(f"command: {command.strip()}")
    log(f"each run: wrk -t1 -c{args.connections} -d{args.duration}s --latency http://127.0.0.1:PORT/db after a 1 s warm-up;"
        " numbers are for this shared-core setting")
    log()
    log(table(results, pools, markdown=False))
    log()
    log("Markdown for the README:")
    log()
    for line in machine:
        log(f"{line}  ")
    log()
    log(f"`{command.strip()}`")
    log()
    log(table(results, pools, markdown=True))
    noisy = sum(1 for r in results if r.get("note"))
    if noisy:
        log()
        log(f"{noisy}/{len(results)} runs saw other load: the machine was busier than lastcall + "
            "PostgreSQL + wrk by more than 0.25 cores (other processes), so those numbers are low and noisy")
    problems = sum(len(r["problems"]) for r in results)
    if problems or len(results) < len(pools) * args.runs:
        log(f"\n{problems} problem(s); {len(results)}/{len(pools) * args.runs} runs measured")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
