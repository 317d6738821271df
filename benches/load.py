#!/usr/bin/env python3
"""Load benchmark: lastcall against nginx on one core, in the same run, against the
performance targets ("beat nginx on one core").

    python3 benches/load.py [--duration S] [--rounds N] [--repeats N] [--warmup S] [--idle N]
                            [--shutdown-runs R] [--workers N]

--workers N (default 1) runs lastcall with N event loops (WORKERS=N) against nginx with
`worker_processes N`, under the same pinning discipline: both servers on CPUs 0..N-1, wrk
with one thread per CPU left over (on CPU N and up), or, when none is left, on CPU N-1,
sharing it with the servers (said in the output: such figures compare the two servers
under the same handicap, but cannot show how either scales). The tables go to
benches/results-workers-N.md and .svg, so the one-core figures stay where they are.

What it does:
 1. checks that wrk and nginx are installed (and says how to install them when not: exit 2),
    builds lastcall (`cargo build --release`);
 2. starts lastcall (`--listen 127.0.0.1:0`, RUST_LOG=warn plus the `Listening on` line) and
    nginx (generated config: 1 worker, `return 200` for /plaintext and /json, no access
    log), both pinned to CPU 0 with `taskset -c 0`; wrk runs pinned to CPU 1
    (`taskset -c 1 wrk -t1 ...`);
 3. --rounds times (default 5), for each workload, for each server (which goes first
    alternates from round to round, so with an odd count one of them goes first once more):
    a short wrk warm-up, then a measured wrk run of --duration seconds (default 5).
    Measured: req/s and p99 latency (wrk), the server's CPU time per request (utime+stime
    from /proc/PID/stat before and after the run, nginx's master and worker summed,
    divided by the requests wrk completed), wrk's own CPU use (to see when the client, not
    the server, is the limit), and the CPU other processes used meanwhile (noise);
       a. /plaintext, 256 connections, pipelined 16 deep (a wrk Lua script);
       b. /plaintext, 256 connections;
       c. /json, 256 connections;
       d. /plaintext, 16 connections (the p99 latency target);
    A run during which other processes or the hypervisor (steal) took more than 5% of a
    CPU measured the machine, not the server: it is set aside and run again, at most
    --repeats times (default 2; a run still disturbed after the last repeat is kept and
    flagged as noise). Set-aside runs are listed with their figures under the tables,
    never silently dropped, and a kept re-run says which try it was;
 4. memory and shutdown, on a fresh server each (shutdown.py's `one_run`): RSS before and
    after opening --idle idle keep-alive connections (one request each), as bytes per
    connection (nginx: the worker's RSS, the process that holds the connections), then
    signal -> exit with those connections open (lastcall SIGTERM, nginx SIGQUIT);
 5. prints the machine, the exact command and the table (workload, measure, lastcall,
    nginx, ratio lastcall/nginx, target, met; medians over the rounds), a line per wrk run
    (who was the bottleneck, what else ran on the machine), and writes it as Markdown to
    benches/results.md and as an SVG bar chart of the ratios against the targets to
    benches/results.svg.

A wrk run with any non-2xx/3xx response or socket error, a server that dies or logs a
warning, or a failed shutdown run is reported as a problem and makes the exit code 1.
Missed targets are results, not problems: exit 0.

Python 3 standard library only; Linux only (epoll, pidfd, taskset, /proc). It installs
nothing. Every loop is bounded in count and time; it only signals or kills processes it
started, by PID.
"""

import argparse
import html
import math
import os
import re
import resource
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import shutdown as shutdown_bench  # benches/ is sys.path[0] when run as a script
from benchlib import (
    BODY, CLIENT_CPU, CLK_TCK, DEFAULT_WINDOW, JSON_BODY, SERVER_CPU, Lastcall, Nginx, all_cpu_ticks,
    check_args,
    build_lastcall, cpu_split, cpu_times, git_rev, log, machine_lines,
    nofile_for, nproc, others_cpu, parse_response, pin_prefix, require_tools,
    render_table, rss_bytes, stop, version_of,
)

HERE = os.path.dirname(os.path.abspath(__file__))
# Other processes (or the hypervisor, as steal time) may take this much of a CPU during a
# run before the run is called noisy.
NOISE_LIMIT = 0.05

# One line at the end of every wrk run, for this script to parse: the same numbers wrk's
# summary prints ("N requests in ...", "Non-2xx or 3xx responses", "Socket errors"), plus
# exact latency percentiles in µs. It defines no `request`/`response` function, so wrk
# keeps its fast path (no Lua call per request).
REPORT_LUA = """\
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "LOADPY requests=%d duration_us=%d bytes=%d connect=%d read=%d write=%d status=%d timeout=%d p50_us=%.0f p99_us=%.0f max_us=%.0f\\n",
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(99), latency.max))
end
"""

# HTTP pipelining as TechEmpower drives it: every write carries `depth` requests (wrk
# counts them when it checks the script, and expects that many responses per write).
# wrk's latency figures are useless here: it records one latency per batch but corrects for
# coordinated omission as if every response were one (`runtime / (responses / connections)`),
# and the synthetic samples land below the recorded minimum, where its percentile walk never
# looks: p99 comes out as 0 (wg/wrk#236). So the pipelined run reports no latency.
PIPELINE_LUA = """\
init = function(args)
  local depth = tonumber(args[1]) or 16
  local r = {}
  for i = 1, depth do
    r[i] = wrk.format(nil, nil)
  end
  req = table.concat(r)
end

request = function()
  return req
end
""" + REPORT_LUA


class Workload:
    def __init__(self, key, title, path, connections, depth):
        self.key, self.title, self.path = key, title, path
        self.connections, self.depth = connections, depth


WORKLOADS = [
    Workload("pipelined", "/plaintext 256 conn pipelined 16", "/plaintext", 256, 16),
    Workload("plaintext", "/plaintext 256 conn", "/plaintext", 256, 1),
    Workload("json", "/json 256 conn", "/json", 256, 1),
    Workload("plaintext16", "/plaintext 16 conn", "/plaintext", 16, 1),
]

# The rows of the table: (workload key, measure key, measure label, target), where a target
# is (op, ratio) on lastcall/nginx, from the performance targets; None when the row is context only.
ROWS = [
    ("pipelined", "rps", "req/s", (">=", 8.0)),
    ("pipelined", "cpu_us", "server CPU µs/req", ("<=", 0.1)),
    ("plaintext", "rps", "req/s", None),
    ("plaintext", "cpu_us", "server CPU µs/req", ("<=", 0.8)),
    ("plaintext", "p99_ms", "p99 latency ms", None),
    ("json", "rps", "req/s", None),
    ("json", "cpu_us", "server CPU µs/req", ("<=", 0.8)),
    ("json", "p99_ms", "p99 latency ms", None),
    ("plaintext16", "rps", "req/s", None),
    ("plaintext16", "cpu_us", "server CPU µs/req", None),
    ("plaintext16", "p99_ms", "p99 latency ms", ("<=", 1.0)),
    ("idle", "rss_per_conn", "RSS bytes/conn", ("<=", 0.5)),
    ("shutdown", "exit_ms", "SIGTERM/quit → exit ms", ("<=", 1.5)),
]


# --------------------------------------------------------------------------- wrk


def fetch(port, path, timeout=5):
    """One GET on a fresh connection: (status line, headers, body). Bounded by `timeout`."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        buf = b""
        for _ in range(1000):
            data = s.recv(65536)
            if not data:
                raise RuntimeError(f"GET {path}: connection closed after {len(buf)} bytes")
            buf += data
            parsed = parse_response(buf)
            if parsed:
                return parsed[0], parsed[1], buf[buf.index(b"\r\n\r\n") + 4:].decode("latin-1")
    raise RuntimeError(f"GET {path}: no complete response")


def check_routes(name, port):
    """Both servers must answer the two routes alike before they are compared."""
    for path, body, ctype in (("/plaintext", BODY, "text/plain"), ("/json", JSON_BODY, "application/json")):
        status, headers, got = fetch(port, path)
        if not status.startswith("HTTP/1.1 200") or got != body or not headers.get("content-type", "").startswith(ctype):
            raise RuntimeError(f"{name} GET {path}: {status!r} {headers.get('content-type')!r} {got!r}")


def parse_wrk(out):
    """The LOADPY line, cross-checked against wrk's own summary text."""
    m = re.search(r"^LOADPY (.*)$", out, re.M)
    if not m:
        raise RuntimeError("wrk printed no LOADPY line (did the Lua script load?)")
    r = {k: float(v) for k, v in (kv.split("=") for kv in m.group(1).split())}
    text = re.search(r"(\d+) requests in ", out)
    if not text or int(text.group(1)) != int(r["requests"]):
        raise RuntimeError(f"wrk's summary ({text and text.group(1)} requests) disagrees with its done() ({r['requests']:.0f})")
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    r["non2xx_text"] = int(non2xx.group(1)) if non2xx else 0
    return r


def run_wrk(wrk_cmd, timeout):
    """Runs wrk; returns (stdout, wrk's CPU seconds, wall seconds). wrk's CPU comes from
    RUSAGE_CHILDREN, which grows when a child is reaped: the servers are not reaped while
    wrk runs, so the difference is wrk's alone."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    r = subprocess.run(wrk_cmd, capture_output=True, text=True, timeout=timeout)
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    if r.returncode != 0:
        raise RuntimeError(f"wrk exited {r.returncode}: {r.stderr.strip() or r.stdout.strip()}")
    return r.stdout, cpu, wall


def measure(server, proc, port, w, duration, warmup, wrk_prefix, scripts, wrk_threads=1):
    """A warm-up, then one measured wrk run of `w` against a running server."""
    script = scripts["pipeline" if w.depth > 1 else "report"]

    def wrk_cmd(seconds):
        cmd = wrk_prefix + [f"-t{wrk_threads}", f"-c{w.connections}", f"-d{seconds}s", "--latency", "-s", script,
                            f"http://127.0.0.1:{port}{w.path}"]
        return cmd + (["--", str(w.depth)] if w.depth > 1 else [])

    if warmup > 0:
        run_wrk(wrk_cmd(warmup), timeout=warmup + 30)
        time.sleep(0.5)  # the warm-up's connections close: not counted in the run
    pids = server.cpu_pids(proc)
    cmd = wrk_cmd(duration)
    everyone0, cores0 = all_cpu_ticks(), cpu_times()
    t0 = time.monotonic()
    split0 = [cpu_split(p) for p in pids]
    out, wrk_cpu, wrk_wall = run_wrk(cmd, timeout=duration + 30)
    split1 = [cpu_split(p) for p in pids]
    wall = time.monotonic() - t0
    everyone1, cores1 = all_cpu_ticks(), cpu_times()
    others, others_list = others_cpu(everyone0, everyone1, set(pids) | {os.getpid()})
    if proc.poll() is not None:
        raise RuntimeError(f"{server.name} exited with {proc.returncode} during the run")
    r = parse_wrk(out)
    user = sum(a[0] for a in split1) - sum(b[0] for b in split0)
    system = sum(a[1] for a in split1) - sum(b[1] for b in split0)
    server_cpu = (user + system) / CLK_TCK
    requests = r["requests"]
    res = {
        "requests": requests,
        "rps": requests / (r["duration_us"] / 1e6) if r["duration_us"] else 0.0,
        "p99_ms": r["p99_us"] / 1000 if w.depth == 1 else None,  # see PIPELINE_LUA
        "p50_ms": r["p50_us"] / 1000 if w.depth == 1 else None,
        "cpu_us": server_cpu * 1e6 / requests if requests else None,
        "user_us": user / CLK_TCK * 1e6 / requests if requests else None,
        "sys_us": system / CLK_TCK * 1e6 / requests if requests else None,
        "server_util": server_cpu / wall,
        "wrk_util": wrk_cpu / wrk_wall,
        # The rest of the machine during the run: other processes' CPU (another benchmark
        # on the same cores makes every number here wrong), each core's busy time, steal.
        "others_util": others / wall,
        "others_top": [f"{name} {100 * t / wall:.0f}%" for t, name in others_list[:3]],
        "core_util": {c: (cores1[c][0] - cores0[c][0]) / wall for c in cores1 if c in cores0},
        "steal_util": sum(cores1[c][1] - cores0[c][1] for c in cores1 if c in cores0) / wall,
        "bytes_per_resp": r["bytes"] / requests if requests else 0.0,
        "non2xx": int(max(r["status"], r["non2xx_text"])),
        "sock_errors": {k: int(r[k]) for k in ("connect", "read", "write", "timeout") if r[k]},
        "command": shlex.join(cmd),
        "output": out,
    }
    problems = []
    if requests == 0:
        problems.append("no request completed")
    if res["non2xx"]:
        problems.append(f"{res['non2xx']} non-2xx/3xx responses")
    if res["sock_errors"]:
        problems.append("socket errors " + ", ".join(f"{k} {v}" for k, v in res["sock_errors"].items()))
    res["problems"] = problems
    return res


def taskset_prefix(cpu_set):
    """`taskset -c LIST` for a set of CPUs, or nothing when taskset is missing."""
    taskset = shutil.which("taskset")
    return [taskset, "-c", ",".join(map(str, sorted(cpu_set)))] if taskset else []


def pin_workers(n, cpus):
    """--workers N: the servers on the first N of our CPUs, wrk on the rest. With no CPU
    left, wrk shares the servers' last one. Returns (server prefix, client CPUs, shared)."""
    ours = sorted(cpus)
    servers = ours[:n]
    rest = set(ours[n:])
    shared = not rest
    client = rest or {servers[-1]}
    return taskset_prefix(servers), client, shared


def bound_by(res):
    """Which side ran out of CPU: the server (core 0) or wrk (core 1), or neither."""
    sides = [name for name, util in (("server", res["server_util"]), ("wrk", res["wrk_util"])) if util >= 0.95]
    return "+".join(sides) if sides else "neither (latency-bound)"


# --------------------------------------------------------------------------- idle + shutdown


def memory_and_shutdown(server, n, runs_args, keep_logs):
    """shutdown.py's one run, with the server's RSS read when it has started and when its
    n connections are idle."""
    rss = {}

    def observe(stage, proc):
        rss[stage] = sum(rss_bytes(pid) for pid in server.memory_pids(proc))

    row = shutdown_bench.one_run(server, runs_args, keep_logs, observe)
    if "started" in rss and "idle" in rss:
        row["rss_before"], row["rss_after"] = rss["started"], rss["idle"]
        row["rss_per_conn"] = (rss["idle"] - rss["started"]) / n
    return row


# --------------------------------------------------------------------------- report


def fmt_value(measure, v):
    if v is None:
        return "-"
    if measure == "rps":
        return f"{v:,.0f}"
    if measure == "cpu_us":
        return f"{v:.3f}" if v < 10 else f"{v:.1f}"
    if measure == "p99_ms":
        return f"{v:.2f}"
    if measure == "rss_per_conn":
        return f"{v:,.0f}"
    return f"{v:.1f}"


def fmt_ratio(ratio):
    """Three significant digits, so a ratio just past its target never prints as the target."""
    return "-" if ratio is None else f"{ratio:.3g}"


def judge(ratio, target):
    if target is None:
        return "-", "-"
    op, value = target
    text = f"{'≥' if op == '>=' else '≤'} {value:g}×"
    if ratio is None:
        return text, "n/a"
    met = ratio >= value if op == ">=" else ratio <= value
    return text, "yes" if met else "no"


def bound_note(runs, key):
    """For a req/s row: which server's runs were mostly held back by wrk (its req/s is then
    wrk's ceiling, a lower bound for the server)."""
    held = []
    for name in ("lastcall", "nginx"):
        rs = runs.get((name, key), [])
        if rs and sum(r["wrk_util"] >= 0.95 for r in rs) * 2 > len(rs):
            held.append(name)
    return f"{' and '.join(held)}: wrk-bound" if held else ""


def table_rows(results, runs, idle):
    """One dict per ROWS entry: the printed cells, and the raw ratio and target for the chart."""
    titles = {w.key: w.title for w in WORKLOADS}
    titles.update(idle=f"{idle:,} idle keep-alive conn", shutdown=f"shutdown, {idle:,} idle conn")
    rows = []
    for key, measure, label, target in ROWS:
        a = results.get(("lastcall", key), {}).get(measure)
        b = results.get(("nginx", key), {}).get(measure)
        ratio = a / b if a is not None and b else None
        target_text, met = judge(ratio, target)
        rows.append({
            "workload": titles[key], "measure": label, "lastcall": fmt_value(measure, a),
            "nginx": fmt_value(measure, b), "ratio": fmt_ratio(ratio),
            "target": target_text, "met": met, "raw_ratio": ratio, "raw_target": target,
            "note": bound_note(runs, key) if measure == "rps" else "",
        })
    return rows


def render_main(rows, markdown):
    header = ["workload", "measure", "lastcall", "nginx", "ratio", "target", "met", "note"]
    cells = [[r[h] for h in header] for r in rows]
    return render_table(header, cells, markdown)


def median_of(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def render_diagnostics(runs, markdown):
    header = ["workload", "server", "round", "requests", "req/s", "p50 ms", "p99 ms", "CPU µs/req user+sys", "server CPU",
              f"core {SERVER_CPU} busy", "wrk CPU", f"core {CLIENT_CPU} busy", "others", "steal",
              "bound by", "bytes/resp", "non-2xx", "socket errors"]
    pct = lambda v: "-" if v is None else f"{100 * v:.0f}%"  # noqa: E731
    cells = []
    for w in WORKLOADS:
        for name in ("lastcall", "nginx"):
            for r in runs.get((name, w.key), []):
                cells.append(diagnostic_cells(w, name, r, pct))
    return render_table(header, cells, markdown)


def diagnostic_cells(w, name, r, pct):
    errors = ", ".join(f"{k} {v}" for k, v in r["sock_errors"].items()) or "0"
    return [
        w.title, name, str(r["round"]) + (f" (try {r['attempt']})" if r["attempt"] > 1 else ""),
        f"{r['requests']:,.0f}", f"{r['rps']:,.0f}",
        fmt_value("p99_ms", r["p50_ms"]), fmt_value("p99_ms", r["p99_ms"]),
        f"{r['user_us']:.2f}+{r['sys_us']:.2f}",
        pct(r["server_util"]), pct(r["core_util"].get(SERVER_CPU)),
        pct(r["wrk_util"]), pct(r["core_util"].get(CLIENT_CPU)),
        pct(r["others_util"]), pct(r["steal_util"]), bound_by(r),
        f"{r['bytes_per_resp']:.0f}", str(r["non2xx"]), errors,
    ]


def render_idle(results, n, markdown):
    header = ["server", "RSS before", "RSS with idle conns", "bytes/conn", "RSS measured on",
              "signal→exit ms", "signal→all-EOF ms", "ok runs"]
    cells = []
    for name, where in (("lastcall", "the process"), ("nginx", "the worker")):
        m = results.get((name, "idle"), {})
        s = results.get((name, "shutdown"), {})
        kib = lambda v: "-" if v is None else f"{v / 1024:,.0f} KiB"  # noqa: E731
        cells.append([name, kib(m.get("rss_before")), kib(m.get("rss_after")),
                      fmt_value("rss_per_conn", m.get("rss_per_conn")), where,
                      fmt_value("exit_ms", s.get("exit_ms")), fmt_value("exit_ms", s.get("eof_ms")),
                      s.get("runs", "-")])
    return render_table(header, cells, markdown)


def svg_chart(rows, subtitle):
    """A horizontal bar per targeted row: the ratio lastcall/nginx on a log axis, drawn from
    parity (1×), green when the target is met, red when not; the target a dashed line."""
    rows = [r for r in rows if r["raw_target"] is not None]
    lo, hi = 0.01, 100.0  # the axis: four decades
    left, plot_w, top, row_h = 330, 520, 70, 44
    width, height = left + plot_w + 40, top + row_h * len(rows) + 60

    def x(v):
        v = min(max(v, lo), hi)
        return left + plot_w * (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))

    e = html.escape
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        '<text x="12" y="22" font-size="15" font-weight="bold">lastcall ÷ nginx, same run, '
        'one core each (log scale)</text>',
        f'<text x="12" y="40" fill="#555">{e(subtitle)}</text>',
        '<text x="12" y="56" fill="#555">bar: ratio, from parity (1×); dashed line: target; '
        'green = target met, red = missed</text>',
    ]
    bottom = top + row_h * len(rows)
    for tick in (0.01, 0.1, 1, 10, 100):
        tx = x(tick)
        out.append(f'<line x1="{tx:.1f}" y1="{top - 4}" x2="{tx:.1f}" y2="{bottom}" '
                   f'stroke="{"#333" if tick == 1 else "#ddd"}"/>')
        out.append(f'<text x="{tx:.1f}" y="{bottom + 16}" text-anchor="middle">{tick:g}×</text>')
    for i, r in enumerate(rows):
        y = top + i * row_h
        out.append(f'<text x="{left - 10}" y="{y + 18}" text-anchor="end">{e(r["workload"])}</text>')
        out.append(f'<text x="{left - 10}" y="{y + 33}" text-anchor="end" fill="#555">'
                   f'{e(r["measure"])}, target {e(r["target"])}'
                   f'{e(" (" + r["note"] + ")") if r["note"] else ""}</text>')
        ratio = r["raw_ratio"]
        if ratio is not None:
            x0, x1 = sorted((x(1), x(ratio)))
            colour = "#2e7d32" if r["met"] == "yes" else "#c62828"
            out.append(f'<rect x="{x0:.1f}" y="{y + 10}" width="{max(x1 - x0, 1):.1f}" height="22" '
                       f'fill="{colour}" fill-opacity="0.85"/>')
            label_x = x(ratio) + (6 if ratio >= 1 else -6)
            anchor = "start" if ratio >= 1 else "end"
            out.append(f'<text x="{label_x:.1f}" y="{y + 25}" text-anchor="{anchor}" '
                       f'font-weight="bold" stroke="white" stroke-width="3" paint-order="stroke">{fmt_ratio(ratio)}×</text>')
        else:
            out.append(f'<text x="{x(1) + 6:.1f}" y="{y + 25}">no data</text>')
        tx = x(r["raw_target"][1])
        out.append(f'<line x1="{tx:.1f}" y1="{y + 4}" x2="{tx:.1f}" y2="{y + 38}" stroke="#000" '
                   f'stroke-width="2" stroke-dasharray="4,3"/>')
    out.append(f'<text x="{left + plot_w / 2:.1f}" y="{bottom + 36}" text-anchor="middle" fill="#555">'
               f'lastcall ÷ nginx</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- main


def noise_of(r):
    """What disturbed a wrk run from outside both servers, if anything: other processes or
    the hypervisor (steal) taking more than NOISE_LIMIT of a CPU."""
    found = []
    if r["others_util"] > NOISE_LIMIT:
        found.append(f"other processes used {100 * r['others_util']:.0f}% of a CPU during the run "
                     f"({', '.join(r['others_top'])})")
    if r["steal_util"] > NOISE_LIMIT:
        found.append(f"the hypervisor took {100 * r['steal_util']:.0f}% of a CPU from this VM "
                     "during the run (steal)")
    return found


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=int, default=5, help="seconds per measured wrk run (default 5)")
    p.add_argument("--warmup", type=int, default=1, help="seconds of wrk warm-up before each run, 0 for none (default 1)")
    p.add_argument("--rounds", type=int, default=5,
                   help="times to run every workload on both servers; the table shows medians (default 5)")
    p.add_argument("--repeats", type=int, default=2,
                   help="times a wrk run disturbed from outside (steal, other processes) is set aside "
                        "and run again; the set-aside runs are listed (default 2)")
    p.add_argument("--idle", type=int, default=10_000,
                   help="idle keep-alive connections for the memory and shutdown figures (default 10000)")
    p.add_argument("--shutdown-runs", type=int, default=1,
                   help="memory+shutdown runs per server, alternating; medians reported (default 1)")
    p.add_argument("--workers", type=int, default=1,
                   help="lastcall's event loops and nginx's worker_processes, on CPUs 0..N-1 (default 1)")
    p.add_argument("--keep-logs", action="store_true", help="keep the servers' logs and wrk's output")
    args = p.parse_args()
    command = check_args(args, [
        ("--duration", 1, 600),
        ("--warmup", 0, 60),
        ("--rounds", 1, 20),
        ("--repeats", 0, 10),
        ("--idle", 1, 500_000),
        ("--shutdown-runs", 1, 20),
        ("--workers", 1, 256),
    ])

    tools = require_tools(["wrk", "nginx"], "This benchmark drives lastcall and nginx with wrk, so it needs both.")
    binary = build_lastcall()
    nofile = nofile_for(args.idle, "--idle")

    nproc_all = nproc()
    cpus = os.sched_getaffinity(0)
    if args.workers == 1:
        server_prefix = pin_prefix()
        wrk_prefix = pin_prefix(CLIENT_CPU) + [tools["wrk"]]
        client_cpus, wrk_threads = {CLIENT_CPU}, 1
    else:
        server_prefix, client_cpus, shared = pin_workers(args.workers, cpus)
        wrk_threads = len(client_cpus)
        wrk_prefix = taskset_prefix(client_cpus) + [tools["wrk"]]
        if shared:
            log(f"--workers {args.workers} on {len(cpus)} CPUs: wrk shares CPU {min(client_cpus)} with the "
                f"servers; the figures compare both servers under that handicap, not how either scales")
    if client_cpus <= cpus and len(cpus) > 1:
        os.sched_setaffinity(0, client_cpus)  # after the build, which wants every core
    pinning = machine_lines(nproc_all, bool(server_prefix), os.sched_getaffinity(0))
    if args.workers > 1:
        pinning[1] = (f"pinning: servers on CPUs {server_prefix[-1] if server_prefix else 'any (no taskset)'}, "
                      f"client on CPU {','.join(map(str, sorted(client_cpus)))}")
    head = pinning + [
        f"lastcall {git_rev()} ({binary}); {version_of([tools['nginx'], '-v'])} ({tools['nginx']}); "
        f"{version_of([tools['wrk'], '-v'])}",
        f"servers: {args.workers} loop(s) / worker process(es); "
        f"wrk: {wrk_threads} thread(s) on CPU {','.join(map(str, sorted(client_cpus)))} ({shlex.join(wrk_prefix)}), {args.duration} s per run after a "
        f"{args.warmup} s warm-up, {args.rounds} round(s) (the table: medians), a run disturbed from outside run again up to {args.repeats} time(s); {args.idle} idle connections, {args.shutdown_runs} memory/shutdown run(s) per server",
        f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"command: {command}",
    ]
    for line in head:
        log(line)

    workdir = tempfile.mkdtemp(prefix="load-")
    scripts = {"report": os.path.join(workdir, "report.lua"), "pipeline": os.path.join(workdir, "pipeline.lua")}
    for key, text in (("report", REPORT_LUA), ("pipeline", PIPELINE_LUA)):
        with open(scripts[key], "w") as f:
            f.write(text)

    results = {}  # (server, workload) -> {measure: value}, what the table shows
    runs = {}  # (server, workload) -> [one dict per wrk run], for the diagnostics table
    problems = []  # the measurement went wrong: exit 1
    noise = []  # the measurement is right but the machine was not quiet: read with care
    discarded = []  # (where, run, why): disturbed runs measured again, listed in the output
    everyone0 = all_cpu_ticks()
    time.sleep(1)
    others, others_list = others_cpu(everyone0, all_cpu_ticks(), {os.getpid()})
    quiet = (f"before the runs: other processes used {100 * others:.0f}% of a CPU over 1 s"
             + (f" ({', '.join(f'{n} {100 * t:.0f}%' for t, n in others_list[:3])})" if others_list else ""))
    log(quiet)
    head.append(quiet)
    if others > NOISE_LIMIT:
        noise.append(quiet)
    servers = [
        Lastcall(binary, server_prefix, args.idle, log_filter="warn,lastcall::server=info",
                 workers=args.workers),
        Nginx(tools["nginx"], server_prefix, args.idle, nofile, workers=args.workers),
    ]
    running = {}
    try:
        # ---- throughput, latency and CPU per request: both servers up, driven in turn
        for server in servers:
            sdir = os.path.join(workdir, server.name)
            os.mkdir(sdir)
            proc, port = server.start(sdir, timeout=10)
            running[server.name] = (server, proc, port)
            check_routes(server.name, port)
            log(f"{server.name}: PID {proc.pid}, port {port}, CPU time from PIDs {server.cpu_pids(proc)}")
        for rnd in range(1, args.rounds + 1):
            for i, w in enumerate(WORKLOADS):
                # Who goes first alternates from round to round for every workload (and
                # from one workload to the next within a round), so neither server is
                # always the one measured right after a warm-up of the other.
                order = servers if (rnd + i) % 2 == 1 else list(reversed(servers))
                for server in order:
                    _, proc, port = running[server.name]
                    where = f"{server.name} {w.title}" + (f" round {rnd}" if args.rounds > 1 else "")
                    for attempt in range(1, args.repeats + 2):
                        try:
                            r = measure(server, proc, port, w, args.duration, args.warmup, wrk_prefix, scripts,
                                        wrk_threads)
                        except (RuntimeError, subprocess.TimeoutExpired) as e:
                            problems.append(f"{where}: {e}")
                            log(f"  {w.title:34} {server.name:8} FAILED: {e}")
                            break
                        r["round"], r["attempt"] = rnd, attempt
                        with open(os.path.join(workdir, f"wrk-{w.key}-{server.name}-{rnd}-{attempt}.txt"), "w") as f:
                            f.write(r["command"] + "\n" + r["output"])
                        log(f"  {w.title:34} {server.name:8} {r['rps']:>12,.0f} req/s  "
                            f"p99 {fmt_value('p99_ms', r['p99_ms']):>7} ms  {r['cpu_us']:.3f} µs CPU/req  "
                            f"server CPU {100 * r['server_util']:3.0f}%  wrk CPU {100 * r['wrk_util']:3.0f}%  "
                            f"others {100 * r['others_util']:3.0f}%  steal {100 * r['steal_util']:3.0f}%"
                            + (f"  PROBLEMS: {'; '.join(r['problems'])}" if r["problems"] else ""))
                        disturbed = noise_of(r)
                        if disturbed and attempt <= args.repeats and not r["problems"]:
                            # Measured while something outside both servers took a CPU:
                            # not a figure of either server. Set aside (and reported), run again.
                            discarded.append((where, r, disturbed))
                            log(f"    set aside, run again: {'; '.join(disturbed)}")
                            continue
                        runs.setdefault((server.name, w.key), []).append(r)
                        problems += [f"{where}: {p}" for p in r["problems"]]
                        noise += [f"{where}: {d}" for d in disturbed]
                        break
        # The table's figure for each measure: the median over the rounds.
        for key, rs in runs.items():
            results[key] = {m: median_of([r[m] for r in rs]) for m in ("rps", "cpu_us", "p99_ms")}
        for name, (server, proc, _) in list(running.items()):
            proc.send_signal(server.stop_signal)
            code = stop(proc, timeout=15)
            del running[name]
            if code != 0:
                problems.append(f"{name} exited {code} after the load runs")
            for line in server.log_problems():
                problems.append(f"{name} logged: {line}")

        # ---- memory with N idle connections, then signal -> exit with them open
        runs_args = argparse.Namespace(connections=args.idle, window=DEFAULT_WINDOW, setup_timeout=120,
                                       settle=0.5, exit_timeout=30)
        idle_servers = [
            # RUST_LOG=info: its shutdown report is checked
            Lastcall(binary, server_prefix, args.idle, workers=args.workers),
            Nginx(tools["nginx"], server_prefix, args.idle, nofile, workers=args.workers),
        ]
        rows = {s.name: [] for s in idle_servers}
        log(f"memory and shutdown with {args.idle} idle connections:")
        for run in range(args.shutdown_runs):
            order = idle_servers if run % 2 == 0 else list(reversed(idle_servers))
            for server in order:
                everyone0, t0 = all_cpu_ticks(), time.monotonic()
                row = memory_and_shutdown(server, args.idle, runs_args, args.keep_logs)
                # The server has exited: only processes alive at both samples are counted.
                others, others_list = others_cpu(everyone0, all_cpu_ticks(), {os.getpid()})
                if others / (time.monotonic() - t0) > NOISE_LIMIT:
                    noise.append(f"{server.name} memory/shutdown run {run + 1}: other processes used "
                                 f"{100 * others / (time.monotonic() - t0):.0f}% of a CPU "
                                 f"({', '.join(f'{n} {t:.1f} s' for t, n in others_list[:3])})")
                rows[server.name].append(row)
                if "rss_per_conn" in row:
                    log(f"    {server.name:8} RSS {row['rss_before'] / 1024:,.0f} KiB -> {row['rss_after'] / 1024:,.0f} KiB: "
                        f"{row['rss_per_conn']:,.0f} bytes/conn")
                if not row["ok"]:
                    problems.append(f"{server.name} shutdown run {run + 1}: {'; '.join(row.get('problems', []))}")
                time.sleep(0.5)  # let the kernel reap the last run's sockets
        for server in idle_servers:
            rs = rows[server.name]
            per_conn = [r["rss_per_conn"] for r in rs if "rss_per_conn" in r]
            good = [r for r in rs if r["ok"]]
            results[(server.name, "idle")] = {
                "rss_per_conn": statistics.median(per_conn) if per_conn else None,
                "rss_before": statistics.median([r["rss_before"] for r in rs if "rss_before" in r]) if per_conn else None,
                "rss_after": statistics.median([r["rss_after"] for r in rs if "rss_after" in r]) if per_conn else None,
            }
            results[(server.name, "shutdown")] = {
                "exit_ms": statistics.median([r["exit_ms"] for r in good]) if good else None,
                "eof_ms": statistics.median([r["eof_ms"] for r in good]) if good else None,
                "runs": f"{len(good)}/{len(rs)}",
            }
    finally:
        for name, (server, proc, _) in running.items():
            proc.send_signal(server.stop_signal)
            stop(proc, timeout=15)

    rows = table_rows(results, runs, args.idle)
    targeted = [r for r in rows if r["raw_target"] is not None]
    met = sum(r["met"] == "yes" for r in targeted)
    verdict = f"targets met: {met}/{len(targeted)}" + (" — all met" if met == len(targeted) else "")
    notes = [
        "ratio = lastcall ÷ nginx; server CPU µs/req = (utime+stime of the server, nginx master+worker) "
        "over the run ÷ requests wrk completed",
        "RSS bytes/conn = (VmRSS with the idle connections − VmRSS after start) ÷ connections; "
        "nginx: the worker's VmRSS",
        "p99 latency: wrk's, which corrects for coordinated omission; none for the pipelined run "
        "(wrk reports 0 there, wg/wrk#236)",
        "shutdown: lastcall SIGTERM, nginx SIGQUIT (nginx -s quit), median of the ok runs (shutdown.py's one_run)",
    ]

    log()
    for line in head:
        log(line)
    log()
    for line in render_main(rows, markdown=False):
        log(line)
    log(verdict)
    log()
    for line in render_diagnostics(runs, markdown=False):
        log(line)
    log()
    for line in render_idle(results, args.idle, markdown=False):
        log(line)
    for line in notes:
        log(f"  {line}")
    set_aside = [f"{where} (try {r['attempt']}): {r['rps']:,.0f} req/s, {r['cpu_us']:.3f} µs CPU/req, "
                 f"p99 {fmt_value('p99_ms', r['p99_ms'])} ms — {'; '.join(why)}"
                 for where, r, why in discarded]
    if set_aside:
        log()
        log(f"SET ASIDE ({len(set_aside)}): runs disturbed from outside, measured again (not in the tables)")
        for line in set_aside:
            log(f"  - {line}")
    if noise:
        log()
        log(f"NOISE ({len(noise)}): the machine was not quiet; numbers above are suspect")
        for line in noise:
            log(f"  - {line}")
    if problems:
        log()
        log(f"PROBLEMS ({len(problems)}):")
        for line in problems:
            log(f"  - {line}")

    md = ["# Load benchmark: lastcall against nginx", ""] + [f"{line}  " for line in head] + [""]
    md += render_main(rows, markdown=True) + ["", verdict, "", "![ratios against targets](results.svg)", ""]
    md += ["Per run: who was the bottleneck (≥ 95% of its core)", ""]
    md += render_diagnostics(runs, markdown=True) + [""]
    md += render_idle(results, args.idle, markdown=True) + [""]
    md += [f"- {line}" for line in notes]
    if set_aside:
        md += ["", "Set aside (runs disturbed from outside, measured again; not in the tables):", ""]
        md += [f"- {line}" for line in set_aside]
    if noise:
        md += ["", "Noise (the machine was not quiet during these runs):", ""] + [f"- {line}" for line in noise]
    if problems:
        md += ["", "Problems:", ""] + [f"- {line}" for line in problems]
    stem = "results" if args.workers == 1 else f"results-workers-{args.workers}"
    with open(os.path.join(HERE, f"{stem}.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    subtitle = f"{machine_lines(nproc_all, bool(server_prefix), client_cpus)[0]}; lastcall {git_rev()}; {verdict}"
    with open(os.path.join(HERE, f"{stem}.svg"), "w") as f:
        f.write(svg_chart(rows, subtitle))
    log()
    log(f"wrote {os.path.join(HERE, stem + '.md')} and {os.path.join(HERE, stem + '.svg')}")

    if args.keep_logs or problems:
        log(f"server logs and wrk output kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
