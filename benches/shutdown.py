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

Why `/plaintext` and not `/`: lastcall answers `/` with a 404; `/plaintext` is a 200 on
both servers (nginx answers every path from `location /`), so both sides hold the same
kind of connection: one that just finished a successful keep-alive exchange.

Python 3 standard library only; Linux only (epoll, pidfd, taskset, /proc). It installs
nothing: it tells you how to install nginx when it is missing. Every loop is bounded in
count and time, and it only ever signals or kills the processes it started, by PID.
"""

import argparse
import errno
import gc
import os
import platform
import re
import resource
import select
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The request each client sends once. Same bytes to both servers.
REQUEST = b"GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n"
BODY = "Hello, World!"

SERVER_CPU = 0
CLIENT_CPU = 1

# How many connections may be between connect() and the end of their response at once:
# below both listen backlogs (nginx 511, mio 1024), so no SYN is dropped and retried.
DEFAULT_WINDOW = 256
# Events taken from the client sockets per turn while measuring, so the pidfd (polled
# separately) is looked at least every BATCH socket events.
BATCH = 256


def log(msg=""):
    print(msg, flush=True)


def fail(msg):
    print(f"shutdown.py: {msg}", file=sys.stderr, flush=True)
    sys.exit(2)


# --------------------------------------------------------------------------- setup


def find_nginx():
    path = shutil.which("nginx")
    if path:
        return path
    for candidate in ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def nginx_missing_message():
    return (
        "nginx was not found (looked in PATH, /usr/sbin, /usr/local/sbin).\n"
        "This benchmark compares lastcall's shutdown with nginx's graceful quit, so it needs it.\n"
        "Install it, then run this again:\n"
        "  Debian/Ubuntu:  sudo apt-get update && sudo apt-get install -y nginx\n"
        "  Fedora/RHEL:    sudo dnf install -y nginx\n"
        "  Alpine:         sudo apk add nginx\n"
        "(The benchmark starts its own nginx with a generated config on 127.0.0.1 and a free\n"
        "port; the system's nginx service is neither used nor touched.)"
    )


def build_lastcall():
    if not shutil.which("cargo"):
        fail("cargo not found: install Rust (https://rustup.rs) to build lastcall")
    log(f"building lastcall: cargo build --release (in {ROOT})")
    result = subprocess.run(["cargo", "build", "--release"], cwd=ROOT)
    if result.returncode != 0:
        fail(f"cargo build --release failed with exit code {result.returncode}")
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")
    binary = os.path.join(target, "release", "lastcall")
    if not os.access(binary, os.X_OK):
        fail(f"built, but {binary} is not there")
    return binary


def raise_nofile(wanted):
    """Raises RLIMIT_NOFILE (soft, and hard when we may) to `wanted`, or as far as allowed.
    Children inherit it. Returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return soft
    if hard != resource.RLIM_INFINITY and hard < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))  # root only
            return wanted
        except (ValueError, OSError):
            wanted = hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return wanted


def free_port():
    """Lets the kernel pick a free port, then gives it back for nginx to bind. Racy (another
    process could take it in between): acceptable in a benchmark, not in tests."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pin_prefix():
    taskset = shutil.which("taskset")
    if taskset and SERVER_CPU in os.sched_getaffinity(0):
        return [taskset, "-c", str(SERVER_CPU)]
    return []


def nproc():
    try:
        return subprocess.run(["nproc", "--all"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return str(os.cpu_count())


def machine_lines(nproc_all, pinned_server, client_cpus):
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return [
        f"machine: nproc={nproc_all}, kernel {platform.release()}, CPU {model}",
        "pinning: server on CPU {}, client on CPU {}".format(
            SERVER_CPU if pinned_server else "any (no taskset)",
            ",".join(map(str, sorted(client_cpus))),
        ),
    ]


def version_of(cmd):
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        return (r.stdout + r.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "unknown"


def git_rev():
    try:
        rev = subprocess.run(
            ["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10,
        ).stdout.strip()
        return rev + ("+dirty" if dirty else "") if rev else "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


# --------------------------------------------------------------------------- servers


class Lastcall:
    name = "lastcall"
    stop_signal = signal.SIGTERM

    def __init__(self, binary, prefix, connections):
        self.binary = binary
        self.prefix = prefix
        self.connections = connections

    def start(self, workdir, timeout):
        self.log_path = os.path.join(workdir, "lastcall.log")
        env = dict(os.environ)
        env.pop("DATABASE_URL", None)  # no pool: the shutdown of the connections alone
        env.update(
            RUST_LOG="info",
            # Room for every connection, and a keep-alive timeout far longer than the setup
            # takes (the default 5 s would close the first connections before the signal).
            MAX_CONNECTIONS=str(min(1_000_000, self.connections + 1024)),
            KEEPALIVE_TIMEOUT_MS="600000",
        )
        cmd = self.prefix + [self.binary, "--listen", "127.0.0.1:0"]
        with open(self.log_path, "wb") as err:
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, env=env,
                start_new_session=True,  # a Ctrl+C on the bench must not SIGINT it mid-run
            )
        deadline = time.monotonic() + timeout
        pattern = re.compile(r"Listening on http://(\S+)")
        while time.monotonic() < deadline:
            with open(self.log_path, errors="replace") as f:
                m = pattern.search(f.read())
            if m:
                port = int(m.group(1).rsplit(":", 1)[1])
                return proc, port
            if proc.poll() is not None:
                raise RuntimeError(f"lastcall exited with {proc.returncode} before listening; see {self.log_path}")
            time.sleep(0.01)
        raise RuntimeError(f"lastcall did not log 'Listening on' within {timeout}s; see {self.log_path}")

    def check_log(self, n):
        """The shutdown report line, and whether it says every connection was idle-closed."""
        with open(self.log_path, errors="replace") as f:
            text = f.read()
        m = re.search(
            r"shutdown report: .*total=(\d+)ms; connections at signal=(\d+) idle_closed=(\d+) "
            r"drained=(\d+) answered_503=(\d+) cut=(\d+); exit (\d+)",
            text,
        )
        if not m:
            return False, f"no shutdown report line in {self.log_path}"
        total, at_signal, idle, drained, a503, cut, code = map(int, m.groups())
        note = (f"report: total={total}ms at_signal={at_signal} idle_closed={idle} "
                f"drained={drained} answered_503={a503} cut={cut} exit={code}")
        ok = at_signal == n and idle == n and drained == a503 == cut == 0 and code == 0
        if not ok:
            note += f"  <-- expected at_signal=idle_closed={n}, others 0, exit 0"
        return ok, note


class Nginx:
    name = "nginx"
    stop_signal = signal.SIGQUIT  # graceful quit, as `nginx -s quit`

    def __init__(self, binary, prefix, connections, nofile):
        self.binary = binary
        self.prefix = prefix
        # 20000, or more for more connections; never above the descriptor limit.
        self.worker_connections = min(max(20000, connections + 1024), nofile)
        self.nofile = nofile

    def start(self, workdir, timeout):
        port = free_port()
        self.workdir = workdir
        self.error_log = os.path.join(workdir, "error.log")
        conf = os.path.join(workdir, "nginx.conf")
        temp = lambda name: os.path.join(workdir, name)  # noqa: E731
        with open(conf, "w") as f:
            f.write(f"""\
worker_processes 1;
daemon off;
master_process on;
pid {temp("nginx.pid")};
error_log {self.error_log} notice;
worker_rlimit_nofile {self.nofile};
events {{
    use epoll;
    worker_connections {self.worker_connections};
}}
http {{
    access_log off;
    keepalive_timeout 75s;
    keepalive_requests 1000000;
    client_body_temp_path {temp("client_body")};
    proxy_temp_path {temp("proxy")};
    fastcgi_temp_path {temp("fastcgi")};
    uwsgi_temp_path {temp("uwsgi")};
    scgi_temp_path {temp("scgi")};
    server {{
        listen 127.0.0.1:{port};
        location / {{
            default_type text/plain;
            return 200 "{BODY}";
        }}
    }}
}}
""")
        # daemon off: the process we start is the master, the PID to send SIGQUIT to.
        cmd = self.prefix + [self.binary, "-p", workdir, "-c", conf, "-e", self.error_log]
        with open(os.path.join(workdir, "stderr.log"), "wb") as err:
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                start_new_session=True,
            )
        # Ready when a worker answers a request (the master binds before workers exist).
        deadline = time.monotonic() + timeout
        last_error = None
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"nginx exited with {proc.returncode} at start; see {self.error_log}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    if s.recv(64).startswith(b"HTTP/1.1 200"):
                        return proc, port
            except OSError as e:
                last_error = e
            time.sleep(0.02)
        raise RuntimeError(f"nginx not answering on port {port} within {timeout}s ({last_error}); see {self.error_log}")

    def check_log(self, n):
        with open(self.error_log, errors="replace") as f:
            text = f.read()
        codes = re.findall(r"worker process \d+ exited with code (\d+)", text)
        graceful = "gracefully shutting down" in text
        ok = graceful and codes == ["0"]
        note = f"error.log: gracefully shutting down={'yes' if graceful else 'NO'}, worker exit codes={codes or 'none logged'}"
        return ok, note


# --------------------------------------------------------------------------- clients


def parse_response(buf):
    """Returns None while incomplete, else (status line, headers dict). Raises on a
    response this benchmark cannot use."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if len(buf) > 16384:
            raise RuntimeError("response head over 16 KiB")
        return None
    lines = buf[:end].decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" not in headers:
        raise RuntimeError(f"response without Content-Length: {lines[0]!r}")
    if len(buf) < end + 4 + int(headers["content-length"]):
        return None
    if len(buf) > end + 4 + int(headers["content-length"]):
        raise RuntimeError("more bytes than one response")
    return lines[0], headers


def open_idle_connections(port, n, window, timeout):
    """Opens n connections with at most `window` in progress, one request-response each.
    Returns the sockets, every one idle in keep-alive. Bounded by `timeout` seconds and by
    an iteration count."""
    ep = select.epoll()
    pending = {}  # fd -> [socket, phase, buffer]
    done = []
    started = 0
    deadline = time.monotonic() + timeout
    try:
        for _ in range(20 * n + 100_000):
            if len(done) == n:
                return done
            if time.monotonic() >= deadline:
                raise RuntimeError(f"only {len(done)} of {n} connections ready after {timeout}s")
            while started < n and len(pending) < window:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setblocking(False)
                err = s.connect_ex(("127.0.0.1", port))
                if err not in (0, errno.EINPROGRESS):
                    s.close()
                    raise RuntimeError(f"connect #{started + 1}: {os.strerror(err)}")
                pending[s.fileno()] = [s, "connecting", b""]
                ep.register(s.fileno(), select.EPOLLOUT)
                started += 1
            for fd, _events in ep.poll(min(1.0, max(0.0, deadline - time.monotonic()))):
                entry = pending[fd]
                s, phase, buf = entry
                if phase == "connecting":
                    err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        raise RuntimeError(f"connect: {os.strerror(err)} after {len(done)} connections")
                    s.send(REQUEST)  # 36 bytes into an empty socket buffer: never short
                    entry[1] = "reading"
                    ep.modify(fd, select.EPOLLIN)
                    continue
                data = s.recv(65536)
                if not data:
                    raise RuntimeError(f"server closed a connection during setup (after {len(done)} ready)")
                entry[2] = buf = buf + data
                parsed = parse_response(buf)
                if parsed is None:
                    continue
                status, headers = parsed
                if not status.startswith("HTTP/1.1 200"):
                    raise RuntimeError(f"unexpected response {status!r}")
                if "close" in headers.get("connection", "").lower():
                    raise RuntimeError("server answered Connection: close during setup")
                ep.unregister(fd)
                del pending[fd]
                done.append(s)
        raise RuntimeError("connection setup: iteration bound reached")
    except BaseException:
        for s in done:
            s.close()
        for s, _, _ in pending.values():
            s.close()
        raise
    finally:
        ep.close()


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


def stop(proc, timeout=5):
    """Makes sure a process we started is gone: by PID, SIGKILL if it does not exit."""
    if proc.poll() is None:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
    return proc.returncode


def one_run(server, args, keep_logs):
    workdir = tempfile.mkdtemp(prefix=f"shutdown-{server.name}-")
    proc = None
    socks = []
    row = {"ok": False}
    try:
        proc, port = server.start(workdir, timeout=10)
        socks = open_idle_connections(port, args.connections, args.window, args.setup_timeout)
        gc.collect()
        gc.disable()
        time.sleep(args.settle)  # let the server go quiet before the signal
        if proc.poll() is not None:
            raise RuntimeError(f"{server.name} exited with {proc.returncode} before the signal")
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
    if markdown:
        out = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
        out += ["| " + " | ".join(r) + " |" for r in rows]
        return out + ["", ratio_line]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return [line(header), line(["-" * w for w in widths])] + [line(r) for r in rows] + [ratio_line]


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
    if not 1 <= args.connections <= 500_000:
        fail("--connections must be from 1 to 500000")
    if not 1 <= args.runs <= 100:
        fail("--runs must be from 1 to 100")
    if not 1 <= args.window <= 4096:
        fail("--window must be from 1 to 4096")
    if sys.platform != "linux":
        fail("Linux only (epoll, pidfd, taskset, /proc)")
    command = shlex.join(["python3"] + sys.argv)

    nginx = find_nginx()
    if not nginx:
        print(nginx_missing_message(), file=sys.stderr)
        sys.exit(2)
    binary = build_lastcall()

    # Every client socket is a descriptor here, every server connection one there; the
    # servers inherit this limit (nginx also gets it as worker_rlimit_nofile).
    wanted = max(20000, args.connections + 1024) + 64
    nofile = raise_nofile(wanted)
    if nofile < args.connections + 64:
        fail(f"RLIMIT_NOFILE is {nofile}, below the {args.connections + 64} needed for "
             f"--connections {args.connections}; raise the hard limit (ulimit -Hn) or use fewer")

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
        f"RLIMIT_NOFILE {nofile}" + ("" if nofile >= wanted else f" (the hard limit; wanted {wanted})"),
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
