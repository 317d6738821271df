"""Shared parts of the benchmarks that run lastcall against nginx (`shutdown.py`, `load.py`);
`db.py` uses the generic ones (logging, the build, /proc readers, machine line, tables).

What it is: finding and building the two servers, starting each on 127.0.0.1 pinned to one
CPU, holding N idle keep-alive connections open, and reading a process's CPU time and memory
from /proc. What it is not: a measurement of its own; each script decides what it times.

Python 3 standard library only; Linux only (epoll, taskset, /proc). It installs nothing.
Every loop is bounded in count and time, and it only ever signals or kills the processes it
started, by PID.
"""

import errno
import os
import platform
import re
import resource
import select
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The request each idle client sends once. Same bytes to both servers.
REQUEST = b"GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n"
BODY = "Hello, World!"
JSON_BODY = '{"message":"Hello, World!"}'

CLK_TCK = os.sysconf("SC_CLK_TCK")  # the unit of /proc/PID/stat and /proc/stat times

SERVER_CPU = 0
CLIENT_CPU = 1

# How many connections may be between connect() and the end of their response at once:
# below both listen backlogs (nginx 511, mio 1024), so no SYN is dropped and retried.
DEFAULT_WINDOW = 256


def log(msg=""):
    print(msg, flush=True)


def check_args(args, ranges):
    """Checks each `(option, low, high)` of the parsed `args` and that this is Linux;
    exits 2 naming the option otherwise. Returns the command line, for the report."""
    for option, low, high in ranges:
        value = getattr(args, option.lstrip("-").replace("-", "_"))
        if not low <= value <= high:
            fail(f"{option} must be from {low} to {high}")
    if sys.platform != "linux":
        fail("Linux only (epoll, pidfd, taskset, /proc)")
    return shlex.join(["python3"] + sys.argv)


def fail(msg):
    """Prints `<script>: msg` and exits 2 (a usage or setup problem, not a measurement)."""
    print(f"{os.path.basename(sys.argv[0])}: {msg}", file=sys.stderr, flush=True)
    sys.exit(2)


# --------------------------------------------------------------------------- setup


def find_tool(name):
    """The path of `name` from PATH or the usual sbin directories (nginx lives in /usr/sbin,
    which a non-root PATH often lacks), or None."""
    path = shutil.which(name)
    if path:
        return path
    for directory in ("/usr/sbin", "/usr/local/sbin", "/usr/local/bin", f"/usr/local/{name}/sbin"):
        candidate = os.path.join(directory, name)
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def find_nginx():
    return find_tool("nginx")


def missing_tools_message(missing, why):
    """How to install the tools in `missing` (e.g. ["wrk", "nginx"]), and why they are needed."""
    names = " ".join(missing)
    return (
        f"{' and '.join(missing)} not found (looked in PATH, /usr/sbin, /usr/local/sbin, /usr/local/bin).\n"
        f"{why}\n"
        "Install, then run this again:\n"
        f"  Debian/Ubuntu:  sudo apt-get update && sudo apt-get install -y {names}\n"
        f"  Fedora/RHEL:    sudo dnf install -y {names}\n"
        f"  Alpine:         sudo apk add {names}\n"
        "(The benchmark starts its own nginx with a generated config on 127.0.0.1 and a free\n"
        "port; the system's nginx service is neither used nor touched.)"
    )


def require_tools(names, why):
    """The path of each tool in `names`, by name; exits 2 saying how to install the ones
    that are missing, and `why` they are needed."""
    tools = {name: find_tool(name) for name in names}
    missing = [name for name, path in tools.items() if not path]
    if missing:
        fail(missing_tools_message(missing, why))
    return tools


def build_lastcall(quiet=False):
    """`cargo build --release` in ROOT; the path of the binary. `quiet` adds cargo's --quiet."""
    if not shutil.which("cargo"):
        fail("cargo not found: install Rust (https://rustup.rs) to build lastcall")
    log(f"building lastcall: cargo build --release (in {ROOT})")
    result = subprocess.run(["cargo", "build", "--release"] + (["--quiet"] if quiet else []), cwd=ROOT)
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


def nofile_for(connections, option):
    """Raises RLIMIT_NOFILE for `connections` client sockets here and as many server
    connections there (the servers inherit the limit; nginx also gets it as
    worker_rlimit_nofile), with room for nginx's default worker_connections. Exits 2 naming
    `option` when the hard limit is too low. Returns the limit in force."""
    nofile = raise_nofile(max(20000, connections + 1024) + 64)
    needed = connections + 300
    if nofile < needed:
        fail(f"RLIMIT_NOFILE is {nofile}, below the {needed} needed for {option} {connections}; "
             f"raise the hard limit (ulimit -Hn) or use fewer")
    return nofile


def free_port():
    """Lets the kernel pick a free port, then gives it back for nginx to bind. Racy (another
    process could take it in between): acceptable in a benchmark, not in tests."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pin_prefix(cpu=SERVER_CPU):
    """`taskset -c CPU`, or nothing when taskset is missing or the CPU is not ours."""
    taskset = shutil.which("taskset")
    if taskset and cpu in os.sched_getaffinity(0):
        return [taskset, "-c", str(cpu)]
    return []


def nproc():
    try:
        return subprocess.run(["nproc", "--all"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return str(os.cpu_count())


def machine_line(nproc_all):
    """`machine: nproc=N, kernel K, CPU M`, with N as given."""
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"machine: nproc={nproc_all}, kernel {platform.release()}, CPU {model}"


def machine_lines(nproc_all, pinned_server, client_cpus):
    return [
        machine_line(nproc_all),
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


# --------------------------------------------------------------------------- /proc


def cpu_split(pid):
    """(utime, stime) of a process (all its threads), in clock ticks (CLK_TCK per second),
    from /proc/PID/stat: fields 14 and 15, counted after the `(comm)` field, which may
    itself contain spaces and parentheses."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state), so field N is fields[N - 3].
    return int(fields[14 - 3]), int(fields[15 - 3])


def cpu_ticks(pid):
    """utime + stime of a process, in clock ticks."""
    return sum(cpu_split(pid))


def cpu_times():
    """Per-CPU (busy, steal) seconds since boot from /proc/stat: busy is every state but idle
    and iowait (steal included: time the hypervisor gave to another guest); steal alone
    says how much of it this VM did not get."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            m = re.match(r"cpu(\d+) (.*)", line)
            if m:
                v = [int(x) for x in m.group(2).split()]
                idle = v[3] + (v[4] if len(v) > 4 else 0)
                steal = v[7] if len(v) > 7 else 0
                out[int(m.group(1))] = ((sum(v[:8]) - idle) / CLK_TCK, steal / CLK_TCK)
    return out


PF_KTHREAD = 0x00200000  # /proc/PID/stat field 9 (flags): a kernel thread


def all_cpu_ticks():
    """{pid: (name, utime+stime ticks)} for every user-space process now running. Kernel
    threads are left out: ksoftirqd, kworkers and the like mostly do the benchmark's own
    network and memory work, and are no sign that someone else is using the machine."""
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    text = f.read()
            except OSError:
                continue  # it exited meanwhile
            name = text[text.find("(") + 1:text.rfind(")")]
            fields = text.rsplit(")", 1)[1].split()
            if int(fields[9 - 3]) & PF_KTHREAD:
                continue
            out[int(entry)] = (name, int(fields[14 - 3]) + int(fields[15 - 3]))
    return out


def others_cpu(before, after, ours):
    """CPU seconds that processes other than `ours` (PIDs) used between two all_cpu_ticks()
    samples, as (total, [(seconds, "name[pid]"), ...] largest first). Processes that started
    and ended in between are not seen."""
    used = []
    for pid, (name, ticks) in after.items():
        if pid in ours:
            continue
        delta = ticks - before.get(pid, (name, 0))[1]  # new since `before`: all of it
        if delta > 0:
            used.append((delta / CLK_TCK, f"{name}[{pid}]"))
    used.sort(reverse=True)
    return sum(t for t, _ in used), used


def rss_bytes(pid):
    """Resident set size from /proc/PID/status (VmRSS, in kB)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS in /proc/{pid}/status")


def children(pid):
    """The PIDs whose parent is `pid`: /proc/PID/task/*/children, else a scan of /proc."""
    found = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                found += [int(c) for c in f.read().split()]
        return sorted(found)
    except OSError:
        pass
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                found.append(int(entry))
    return sorted(found)


# --------------------------------------------------------------------------- servers


class Lastcall:
    name = "lastcall"
    stop_signal = signal.SIGTERM

    def __init__(self, binary, prefix, connections, log_filter="info", workers=1, access_log=None):
        """`log_filter` is RUST_LOG. The shutdown check needs `info` (the shutdown report);
        a load run wants `warn,lastcall::server=info`: quiet, but still the `Listening on`
        line (logged at info by lastcall::server, which logs per connection only at debug,
        except for connections cut or answered 503 at the shutdown deadline)."""
        self.binary = binary
        self.prefix = prefix
        self.connections = connections
        self.log_filter = log_filter
        self.workers = workers  # WORKERS: event loops, one thread each
        self.access_log = access_log  # ACCESS_LOG: None (off), "combined" or "json"

    def start(self, workdir, timeout):
        self.log_path = os.path.join(workdir, "lastcall.log")
        env = dict(os.environ)
        env.pop("DATABASE_URL", None)  # no pool: the shutdown of the connections alone
        env.update(
            RUST_LOG=self.log_filter,
            # Room for every connection, and a keep-alive timeout far longer than the setup
            # takes (the default 5 s would close the first connections before the signal).
            MAX_CONNECTIONS=str(min(1_000_000, self.connections + 1024)),
            KEEPALIVE_TIMEOUT_MS="600000",
            WORKERS=str(self.workers),
            ACCESS_LOG=self.access_log or "off",
        )
        cmd = self.prefix + [self.binary, "--listen", "127.0.0.1:0"]
        # The access log goes to a file, as nginx's does.
        access = os.path.join(workdir, "access.log") if self.access_log else os.devnull
        with open(self.log_path, "wb") as err, open(access, "wb") as out:
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env,
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

    def cpu_pids(self, proc):
        """The processes whose CPU time is the server's: lastcall is one process."""
        return [proc.pid]

    def memory_pid(self, proc):
        """The process whose RSS holds the connections."""
        return proc.pid

    def memory_pids(self, proc):
        """Every process whose RSS holds connections: one, whatever its loops."""
        return [proc.pid]

    def log_problems(self):
        """Log lines at WARN or ERROR: none are expected in a benchmark run."""
        with open(self.log_path, errors="replace") as f:
            return [line.rstrip() for line in f if re.search(r"\b(WARN|ERROR)\b", line)]

    def check_log(self, n):
        """The shutdown report line, and whether it says every connection was idle-closed."""
        with open(self.log_path, errors="replace") as f:
            text = f.read()
        m = re.search(
            r"shutdown report: .*total=(\d+)ms; connections at signal=(\d+) accepted after=(\d+) "
            r"idle_closed=(\d+) drained=(\d+) failed=(\d+) answered_503=(\d+) cut=(\d+); exit (\d+)",
            text,
        )
        if not m:
            return False, f"no shutdown report line in {self.log_path}"
        total, at_signal, after, idle, drained, failed, a503, cut, code = map(int, m.groups())
        note = (f"report: total={total}ms at_signal={at_signal} accepted_after={after} "
                f"idle_closed={idle} drained={drained} failed={failed} answered_503={a503} "
                f"cut={cut} exit={code}")
        ok = (at_signal == n and idle == n and after == drained == failed == a503 == cut == 0
              and code == 0)
        if not ok:
            note += f"  <-- expected at_signal=idle_closed={n}, others 0, exit 0"
        return ok, note


class Nginx:
    name = "nginx"
    stop_signal = signal.SIGQUIT  # graceful quit, as `nginx -s quit`

    def __init__(self, binary, prefix, connections, nofile, master=True, workers=1, access_log=False):
        """`master=False` runs one process that both listens and serves (nginx's
        `master_process off`), for a profiler that follows one process. `workers` is
        `worker_processes`. `access_log`: the `combined` format to a file, else off."""
        self.binary = binary
        self.workers = workers
        self.master = master
        self.prefix = prefix
        # 20000, or more for more connections; never above the descriptor limit.
        self.worker_connections = min(max(20000, connections + 1024), nofile)
        self.nofile = nofile
        self.access_log = access_log

    def start(self, workdir, timeout):
        port = free_port()
        self.workdir = workdir
        self.error_log = os.path.join(workdir, "error.log")
        conf = os.path.join(workdir, "nginx.conf")
        temp = lambda name: os.path.join(workdir, name)  # noqa: E731
        # The two TechEmpower routes as lastcall answers them (exact matches, the body from
        # `return`), every other path a 404 as in lastcall.
        with open(conf, "w") as f:
            f.write(f"""\
worker_processes {self.workers};
daemon off;
master_process {"on" if self.master else "off"};
pid {temp("nginx.pid")};
error_log {self.error_log} notice;
worker_rlimit_nofile {self.nofile};
events {{
    use epoll;
    worker_connections {self.worker_connections};
}}
http {{
    access_log {f"{temp('access.log')} combined" if self.access_log else "off"};
    keepalive_timeout 75s;
    keepalive_requests 1000000;
    client_body_temp_path {temp("client_body")};
    proxy_temp_path {temp("proxy")};
    fastcgi_temp_path {temp("fastcgi")};
    uwsgi_temp_path {temp("uwsgi")};
    scgi_temp_path {temp("scgi")};
    server {{
        listen 127.0.0.1:{port};
        location = /plaintext {{
            default_type text/plain;
            return 200 "{BODY}";
        }}
        location = /json {{
            default_type application/json;
            return 200 '{JSON_BODY}';
        }}
        location / {{
            return 404;
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
                    s.sendall(b"GET /plaintext HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    if s.recv(64).startswith(b"HTTP/1.1 200"):
                        return proc, port
            except OSError as e:
                last_error = e
            time.sleep(0.02)
        raise RuntimeError(f"nginx not answering on port {port} within {timeout}s ({last_error}); see {self.error_log}")

    def worker_pids(self, proc):
        if not self.master:
            return [proc.pid]  # the one process both listens and serves
        workers = children(proc.pid)
        if len(workers) != self.workers:
            raise RuntimeError(f"expected {self.workers} nginx worker(s) under master {proc.pid}, found {workers}")
        return workers

    def worker_pid(self, proc):
        return self.worker_pids(proc)[0]

    def cpu_pids(self, proc):
        """The master and its workers: the workers serve, the master is counted too (it is
        idle while serving, so this costs nginx nothing but keeps the sum honest)."""
        return [proc.pid] + self.worker_pids(proc)

    def memory_pid(self, proc):
        """The worker: it holds the connections; the master's RSS does not change with them."""
        return self.worker_pid(proc)

    def memory_pids(self, proc):
        """Every worker: together they hold the connections."""
        return self.worker_pids(proc)

    def log_problems(self):
        """error.log lines at warn or worse: none are expected in a benchmark run."""
        with open(self.error_log, errors="replace") as f:
            return [line.rstrip() for line in f if re.search(r"\[(warn|error|crit|alert|emerg)\]", line)]

    def check_log(self, n):
        with open(self.error_log, errors="replace") as f:
            text = f.read()
        codes = re.findall(r"worker process \d+ exited with code (\d+)", text)
        graceful = "gracefully shutting down" in text
        ok = graceful and codes == ["0"] * self.workers
        note = f"error.log: gracefully shutting down={'yes' if graceful else 'NO'}, worker exit codes={codes or 'none logged'}"
        return ok, note


def stop(proc, timeout=5):
    """Makes sure a process we started is gone: by PID, SIGKILL if it does not exit."""
    if proc.poll() is None:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
    return proc.returncode


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


def stop_threads(stop, threads, timeout):
    """Sets `stop` and joins `threads` within `timeout` seconds in all; how many are still
    running (the load clients stop at their next request)."""
    stop.set()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    return sum(t.is_alive() for t in threads)


def failure_class(e):
    """How a load client's request failed, from the exception it raised on the socket:
    "refused" (nothing listened), "reset" (the peer reset or closed under a write),
    "timeout", or "other". The rollout and hand-over clients count by these classes."""
    if isinstance(e, ConnectionRefusedError):
        return "refused"
    if isinstance(e, (ConnectionResetError, BrokenPipeError)):
        return "reset"
    if isinstance(e, socket.timeout):
        return "timeout"
    return "other"


# --------------------------------------------------------------------------- tables


def render_table(header, rows, markdown):
    """Rows of strings as aligned text, or as a Markdown table."""
    if markdown:
        out = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
        return out + ["| " + " | ".join(r) + " |" for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return [line(header), line(["-" * w for w in widths])] + [line(r) for r in rows]
