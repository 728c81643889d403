#!/usr/bin/python3
"""Benchmark: is the same-host path (capability 4) at least as fast as TCP loopback, per client?

Three arms, side by side in one run, interleaved per repeat (the order rotates):

  tcp  TCP over loopback, the path not used (servers on ports 38000+, outside the policy)
  shm  TCP over loopback with bpf/shm_path.bpf.c capturing the connections (servers on
       ports 31000+, inside the policy 30000-32767; the policy stops below the ephemeral
       port range so that no client port of anybody else's connection can match it), in
       the path's default capture mode "segments" (--capture handshake: the other mode)
  uds  Unix domain stream sockets, where the client can use one: the floor a same-host
       transport can aim for

Clients and cases:
  nsbench pp  benchmarks/shm/nsbench.c (compiled at run time): 64 B ping-pong, one message in
              flight per connection, 1 and 16 connections; TCP and UDS identically
  sockperf    ping-pong --full-rtt, 64 B and 16 KiB messages, 1 connection: p50 (p99) RTT;
              no UDS (sockperf 3.7 has no Unix sockets)
  iperf3      -P 1 and -P 4: Gbit/s at the receiver; no UDS
  redis       redis-benchmark -t set,get, -c 1 and 50, -d 64 and 65536: requests/s (p50);
              UDS via -s
  wrk         nginx, static files of 1 KiB and 1 MiB, keep-alive, -t 1 -c 16: requests/s;
              no UDS (wrk has none)
  pgbench     a private PostgreSQL (initdb into the temp dir, run as the postgres user):
              -S -M prepared, -c 1 and 8: tps; UDS via the server's socket directory

Each row gets the median over repeats of the per-repeat ratio shm/tcp (and uds/tcp) and a
verdict: "at least TCP" when that median is >= 1 for throughput, <= 1 for latency, or "kept
on TCP" when capture: segments left every connection of the case plain TCP.  Every
shm measurement reads the path's counters before and after (shm_bytes must grow, no capture
errors, what went over TCP is a trace unless a direction overflowed its max_queue; or, with
capture: segments, every connection kept on TCP for a large segment), every
tcp measurement must capture no socket.  Must run as root with /usr/bin/python3 (bcc).
Loopback and /tmp only; the path, the servers and the temp dir are removed at the end, also
on failure, Ctrl-C or SIGTERM.
Results: benchmarks/results/shm_path.json and shm_path.md (--quick: a directory under /tmp).
"""
import argparse
import collections
import contextlib
import datetime
import glob
import json
import os
import platform
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "collections"))

from figures import fmt, fmt_ratio, fmt_spread, spread, tool_versions  # noqa: E402
from ansible_collections.netstack.tuning.plugins.module_utils.shm_path import path as shm  # noqa: E402
sys.path.insert(0, os.path.join(ROOT, "tests", "support"))
import machine_headers  # noqa: E402  bcc_runtime's headers fallback, as the lab tests make it

NAME = "shmbench"
POLICY_PORTS = "30000-32767"
SHM_BASE = 31000      # inside the policy (31000-31999)
TCP_BASE = 38000      # outside it, 38000-38999 (and no ephemeral client port can fall into the policy)
PORT = {"nsbench": 1, "sockperf": 2, "iperf3": 3, "redis": 4, "nginx": 5, "postgres": 6}
ARMS = ("tcp", "shm", "uds")
PG_USER = PG_DB = "postgres"
FULL = {"repeats": 5, "seconds": 4}
QUICK = {"repeats": 2, "seconds": 1}
COUNTERS_S = 0.1      # reading the path's counters before and after each measurement
SETUP_S = 20          # compile nsbench, load the path, start the servers, initdb and pgbench -i
QUICK_OUT = os.path.join(tempfile.gettempdir(), "shm_path_bench_quick")


OFFSET = [0]          # per run: the first block of ports that are all free (TIME_WAIT of a last run)


def port(arm, tool):
    return (SHM_BASE if arm == "shm" else TCP_BASE) + OFFSET[0] + PORT[tool]


def pick_ports():
    for off in range(0, 1000, 10):
        OFFSET[0] = off
        try:
            for arm in ("tcp", "shm"):
                for tool in PORT:
                    s = socket.socket()
                    try:
                        s.bind(("127.0.0.1", port(arm, tool)))
                    finally:
                        s.close()
            return
        except OSError:
            continue
    raise RuntimeError("no free block of ports")


# ------------------------------------------------------------------------------ servers
class Servers(object):
    def __init__(self, tmp):
        self.tmp = tmp
        self.procs = []

    def start(self, argv, ready, log, stop_signal=signal.SIGTERM, **popen):
        with open(os.path.join(self.tmp, log), "w") as f:
            p = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **popen)
        self.procs.append((p, stop_signal))
        wait_ready(ready, p)
        return p

    def stop(self):
        for p, sig in self.procs:
            if p.poll() is None:
                p.send_signal(sig)
        for p, _sig in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def wait_ready(addr, proc, timeout=10):
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            raise RuntimeError("server %s exited with %s" % (proc.args, proc.returncode))
        try:
            if isinstance(addr, str):
                s = socket.socket(socket.AF_UNIX)
            else:
                s = socket.socket()
            s.settimeout(1)
            s.connect(addr)
            s.close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("server %s not ready at %s" % (proc.args, addr))


def start_nsbench(srv, ctx):
    nsbench = os.path.join(ctx["tmp"], "nsbench")
    run(["gcc", "-O2", "-Wall", "-o", nsbench, os.path.join(ROOT, "benchmarks", "shm", "nsbench.c")], 120)
    ctx["nsbench"] = nsbench
    for arm in ARMS:
        a = addr(arm, "nsbench", ctx["tmp"])
        srv.start([nsbench, "server", a], a[5:] if arm == "uds" else ("127.0.0.1", port(arm, "nsbench")),
                  "nsbench-%s.log" % arm)


def start_sockperf(srv, ctx):
    for arm in ("tcp", "shm"):
        # started from a feed file: a server started with -i/-p never answers a client that
        # opens its connections from a feed file (sockperf 3.7)
        srv.start(["sockperf", "server", "-f", sockperf_feed(ctx, arm), "--uc-reuseaddr"],
                  ("127.0.0.1", port(arm, "sockperf")), "sockperf-%s.log" % arm)


def start_iperf3(srv, ctx):
    for arm in ("tcp", "shm"):
        srv.start(["iperf3", "-s", "-p", str(port(arm, "iperf3"))], ("127.0.0.1", port(arm, "iperf3")),
                  "iperf3-%s.log" % arm)


def start_redis(srv, ctx):
    # the TCP arm's server also listens on the Unix socket (the UDS arm)
    for arm in ("tcp", "shm"):
        argv = ["redis-server", "--port", str(port(arm, "redis")), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", ctx["tmp"], "--daemonize", "no",
                "--protected-mode", "no", "--maxclients", "10000", "--loglevel", "warning"]
        if arm == "tcp":
            argv += ["--unixsocket", "%s/redis.sock" % ctx["tmp"], "--unixsocketperm", "700"]
        p = srv.start(argv, ("127.0.0.1", port(arm, "redis")), "redis-%s.log" % arm)
        if arm == "tcp":
            wait_ready("%s/redis.sock" % ctx["tmp"], p)


NGINX_CONF = """
daemon off;
master_process on;
worker_processes 1;
user root;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    client_body_temp_path {tmp}/ngx-body;
    proxy_temp_path {tmp}/ngx-proxy;
    fastcgi_temp_path {tmp}/ngx-fcgi;
    uwsgi_temp_path {tmp}/ngx-uwsgi;
    scgi_temp_path {tmp}/ngx-scgi;
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{shm_port} backlog=4096;
        listen 127.0.0.1:{tcp_port} backlog=4096;
        root {tmp}/www;
        location / {{ }}
    }}
}}
"""
WWW_FILES = {"1k.bin": 1024, "1m.bin": 1 << 20}


def start_nginx(srv, ctx):
    tmp = ctx["tmp"]
    os.makedirs(os.path.join(tmp, "www"))
    for name, size in WWW_FILES.items():
        with open(os.path.join(tmp, "www", name), "wb") as f:
            f.write(b"n" * size)
    with open(os.path.join(tmp, "nginx.conf"), "w") as f:
        f.write(NGINX_CONF.format(tmp=tmp, shm_port=port("shm", "nginx"), tcp_port=port("tcp", "nginx")))
    p = srv.start(["nginx", "-c", os.path.join(tmp, "nginx.conf"), "-p", tmp],
                  ("127.0.0.1", port("tcp", "nginx")), "nginx.log")
    wait_ready(("127.0.0.1", port("shm", "nginx")), p)


def pg_bindir():
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: [int(x) for x in re.findall(r"\d+", p)])
    if not found:
        raise RuntimeError("no PostgreSQL server binaries (/usr/lib/postgresql/*/bin/initdb)")
    return os.path.dirname(found[-1])


def start_postgres(srv, ctx):
    """Two PostgreSQL servers run as the postgres user from tmp/pg: data dir "tcp" (also on
    the Unix socket in tmp/pg/sock: the uds arm) and "shm", a copy of it made before either
    starts.  No fsync; each gets the pgbench tables at scale 1."""
    bindir = pg_bindir()
    pw = pwd.getpwnam(PG_USER)
    as_pg = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
    base = os.path.join(ctx["tmp"], "pg")
    os.chmod(ctx["tmp"], 0o711)   # the postgres user passes through to its own directory
    os.mkdir(base, 0o700)
    os.chown(base, pw.pw_uid, pw.pw_gid)
    sock = os.path.join(base, "sock")
    os.mkdir(sock, 0o700)
    os.chown(sock, pw.pw_uid, pw.pw_gid)
    run([os.path.join(bindir, "initdb"), "-D", os.path.join(base, "tcp"), "-A", "trust", "-U", PG_USER,
         "--no-sync", "-E", "UTF8", "--locale=C"], 120, cwd=base, **as_pg)
    run(["cp", "-a", os.path.join(base, "tcp"), os.path.join(base, "shm")], 60)
    ctx["pg"] = {"bindir": bindir, "sock": sock}
    for arm in ("tcp", "shm"):
        srv.start([os.path.join(bindir, "postgres"), "-D", os.path.join(base, arm), "-p", str(port(arm, "postgres")),
                   "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=" + sock,
                   "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"],
                  ("127.0.0.1", port(arm, "postgres")), "postgres-%s.log" % arm,
                  stop_signal=signal.SIGINT, cwd=base, **as_pg)  # SIGINT: fast shutdown
        target = pg_target(ctx, arm)
        run([os.path.join(bindir, "pg_isready"), "-t", "30"] + target, 40)
        run([os.path.join(bindir, "pgbench"), "-i", "-s", "1", "-q"] + target + [PG_DB], 120)


# ------------------------------------------------------------------------------ clients
def run(argv, timeout, **kw):
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout,
                       universal_newlines=True, **kw)
    if r.returncode != 0:
        raise RuntimeError("%s exited %d: %s" % (" ".join(argv), r.returncode, r.stdout[-2000:]))
    return r.stdout


def grab(pattern, out, conv=float):
    """conv(first group) of the pattern's first match in out (multi-line); RuntimeError if none."""
    m = re.search(pattern, out, re.M)
    if not m:
        raise RuntimeError("no %r in the output: %s" % (pattern, out[-1500:]))
    return conv(m.group(1))


def addr(arm, tool, tmp):
    if arm == "uds":
        return "unix:%s/%s.sock" % (tmp, tool)
    return "tcp:127.0.0.1:%d" % port(arm, tool)


def m_nsbench_pp(ctx, arm, case):
    out = json.loads(run([ctx["nsbench"], "pp", addr(arm, "nsbench", ctx["tmp"]), "-c", str(case["c"]),
                          "-m", "64", "-t", str(ctx["seconds"])], ctx["seconds"] + 30).strip().splitlines()[-1])
    return {"ops_per_s": out["ops_per_s"], "rtt_p50_us": out["rtt_p50_us"], "rtt_p99_us": out["rtt_p99_us"],
            "rtt_mean_us": out["rtt_mean_us"], "errors": out["errors"]}


def sockperf_feed(ctx, arm):
    feed = os.path.join(ctx["tmp"], "sockperf-%s.feed" % arm)
    with open(feed, "w") as f:
        f.write("T:127.0.0.1:%d\n" % port(arm, "sockperf"))
    return feed


def m_sockperf(ctx, arm, case):
    out = run(["sockperf", "ping-pong", "-f", sockperf_feed(ctx, arm), "-m", str(case["m"]),
               "-t", str(ctx["seconds"]), "--full-rtt"], ctx["seconds"] + 30)
    return {"rtt_p50_us": grab(r"percentile 50\.000 =\s*([\d.]+)", out),
            "rtt_p99_us": grab(r"percentile 99\.000 =\s*([\d.]+)", out),
            "rtt_mean_us": grab(r"avg-rtt=([\d.]+)", out),
            "ops_per_s": grab(r"\[Valid Duration\].*ReceivedMessages=(\d+)", out, int)
            / grab(r"\[Valid Duration\] RunTime=([\d.]+) sec", out)}


def m_iperf3(ctx, arm, case):
    out = run(["iperf3", "-c", "127.0.0.1", "-p", str(port(arm, "iperf3")), "-t", str(ctx["seconds"]),
               "-P", str(case["P"]), "-J"], ctx["seconds"] + 60)
    j = json.loads(out)
    return {"receiver_gbps": j["end"]["sum_received"]["bits_per_second"] / 1e9,
            "sender_gbps": j["end"]["sum_sent"]["bits_per_second"] / 1e9}


# requests/s to size the first repeat's -n (later repeats use the arm's last rate)
REDIS_GUESS = {(1, 64): 80000, (50, 64): 120000, (1, 65536): 15000, (50, 65536): 25000}
REDIS_KEYS = 1000     # -r: at 64 KiB values, 64 MB per server


def m_redis(ctx, arm, case):
    conc, size = case["c"], case["d"]
    key = ("redis", conc, size, arm)
    rate = ctx["rate"].get(key, REDIS_GUESS[(conc, size)])
    n = max(1000, int(rate * ctx["seconds"] / 2.0))   # two tests (set, get) of n requests
    target = ["-s", "%s/redis.sock" % ctx["tmp"]] if arm == "uds" else \
        ["-h", "127.0.0.1", "-p", str(port(arm, "redis"))]
    out = run(["redis-benchmark"] + target + ["-c", str(conc), "-n", str(n), "-d", str(size), "-t", "set,get",
                                              "-P", "1", "--csv", "-r", str(REDIS_KEYS)], ctx["seconds"] * 10 + 60)
    res = {"requests": n}
    rows = [line.replace('"', "").split(",") for line in out.strip().splitlines() if line.startswith('"')]
    head = rows[0]
    for r in rows[1:]:
        d = dict(zip(head, r))
        t = d["test"].lower()
        res["%s_rps" % t] = float(d["rps"])
        res["%s_p50_ms" % t] = float(d["p50_latency_ms"])
        res["%s_p99_ms" % t] = float(d["p99_latency_ms"])
    ctx["rate"][key] = (res["set_rps"] + res["get_rps"]) / 2.0
    return res


def _wrk_time(s):
    m = re.match(r"([\d.]+)(us|ms|s)$", s)
    return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]


WRK_CONNS = 16


def m_wrk(ctx, arm, case):
    out = run(["wrk", "-t", "1", "-c", str(WRK_CONNS), "-d", "%ds" % ctx["seconds"], "--latency",
               "http://127.0.0.1:%d/%s" % (port(arm, "nginx"), case["file"])], ctx["seconds"] + 60)
    res = {"req_per_s": grab(r"Requests/sec:\s*([\d.]+)", out)}
    for q in ("50", "99"):
        res["p%s_ms" % q] = grab(r"^\s*%s%%\s+(\S+)" % q, out, _wrk_time)
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    res["non2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: (.*)", out)
    res["socket_errors"] = m.group(1) if m else ""
    return res


def pg_target(ctx, arm):
    if arm == "uds":   # the tcp arm's server, through its socket directory
        return ["-h", ctx["pg"]["sock"], "-p", str(port("tcp", "postgres")), "-U", PG_USER]
    return ["-h", "127.0.0.1", "-p", str(port(arm, "postgres")), "-U", PG_USER]


def m_pgbench(ctx, arm, case):
    conc = case["c"]
    out = run([os.path.join(ctx["pg"]["bindir"], "pgbench"), "-n", "-S", "-M", "prepared", "-c", str(conc),
               "-j", str(min(conc, os.cpu_count() or 1)), "-T", str(ctx["seconds"])] + pg_target(ctx, arm) + [PG_DB],
              ctx["seconds"] + 60)
    return {"tps": grab(r"^tps = ([\d.]+)", out),
            "latency_avg_ms": grab(r"^latency average = ([\d.]+) ms", out),
            "failed": grab(r"^number of failed transactions: (\d+)", out, int)}


# A client: its measurement function(ctx, arm, case) -> {metric: value}; the servers it needs
# (started once per run); cases: (label, parameters); the arms it can do; headline metrics
# (the verdict table) and other metrics shown; a note; its fixed cost per measurement
# beyond the measured seconds (start-up, warm-up; sockperf 3.7 spends about 2.2 s outside
# its -t), for the time estimate.
Tool = collections.namedtuple("Tool", "name fn servers cases arms heads others note overhead_s")

TOOLS = [
    Tool("nsbench_pp", m_nsbench_pp, start_nsbench, (("c=1", {"c": 1}), ("c=16", {"c": 16})), ARMS,
         ["ops_per_s"], ["rtt_p50_us", "rtt_p99_us"],
         "benchmarks/shm/nsbench.c: 64 B ping-pong, one message in flight per connection, one epoll thread "
         "per side; ops/s = round trips/s", 0.35),
    Tool("sockperf", m_sockperf, start_sockperf, (("64 B", {"m": 64}), ("16 KiB", {"m": 16384})), ("tcp", "shm"),
         ["rtt_p50_us"], ["rtt_mean_us", "rtt_p99_us"],
         "sockperf ping-pong --full-rtt, 1 connection, message size per case; UDS: n/a "
         "(sockperf 3.7 has no Unix sockets). Its round trips on this machine fall into two groups, "
         "about 5 us (both ends awake) and about 60 us (a wake-up), on either arm: the p50 shows which "
         "group holds the median; the mean weighs both", 2.3),
    Tool("iperf3", m_iperf3, start_iperf3, (("-P 1", {"P": 1}), ("-P 4", {"P": 4})), ("tcp", "shm"),
         ["receiver_gbps"], [],
         "iperf3 -P N, Gbit/s at the receiver; UDS: n/a (iperf3 has no Unix sockets)", 0.2),
    Tool("redis", m_redis, start_redis,
         tuple(("-c %d -d %s" % (c, label), {"c": c, "d": d})
               for c in (1, 50) for (label, d) in (("64", 64), ("64KiB", 65536))), ARMS,
         ["get_rps", "set_rps"], ["get_p50_ms", "set_p50_ms"],
         "redis-benchmark -t set,get -P 1 -r %d (values of -d bytes), no persistence, -n sized for about "
         "the measurement's seconds from the arm's last rate; UDS: -s on the tcp arm's server" % REDIS_KEYS, 0.3),
    Tool("wrk", m_wrk, start_nginx, (("1 KiB", {"file": "1k.bin"}), ("1 MiB", {"file": "1m.bin"})), ("tcp", "shm"),
         ["req_per_s"], ["p50_ms"],
         "nginx 1 worker, static file, keep-alive, wrk -t 1 -c %d; UDS: n/a (wrk has no unix-socket support)"
         % WRK_CONNS, 0.2),
    Tool("pgbench", m_pgbench, start_postgres, (("-c 1", {"c": 1}), ("-c 8", {"c": 8})), ARMS,
         ["tps"], ["latency_avg_ms"],
         "pgbench -n -S -M prepared (select-only, prepared statements) -j min(c, CPUs) -T seconds, scale 1, "
         "against a private PostgreSQL (fsync off) per arm; UDS: the tcp arm's server through its "
         "socket directory", 0.2),
]


def estimate_s(tools, repeats, seconds):
    return SETUP_S + repeats * sum(len(t.cases) * len(t.arms) * (seconds + t.overhead_s + COUNTERS_S)
                                   for t in tools)


# ------------------------------------------------------------------------------ stats
def path_ok(arm, d):
    """shm: no capture errors; either (capture: segments) every connection was kept on TCP
    for a large segment and nothing went socket-to-socket, or payload went socket-to-socket
    and what went over TCP is a trace (a response written after the client closed: its peer has left the map, that
    direction falls back to TCP; wrk closes with requests in flight) unless a direction
    overflowed its max_queue (then TCP carries it until drained, by design).  tcp and uds:
    nothing captured."""
    if arm == "shm":
        if d["capture_errors"]:
            return False
        if d.get("large_conns") and not d["captured"]:
            return d["shm_bytes"] == 0      # capture: segments kept every connection on TCP
        spill_ok = d["tcp_bytes"] <= 0.01 * d["shm_bytes"] or d.get("overflows", 0) > 0
        return d["shm_bytes"] > 0 and d["captured"] > 0 and spill_ok
    return d["captured"] == 0


def lower_is_better(metric):
    return metric.endswith(("_us", "_ms"))


def verdict(metric, ratio, kept=False):
    """"at least TCP" / "below TCP" by the median ratio; "kept on TCP" when capture: segments
    left every connection of the case plain TCP (the shm arm then is TCP: its ratio shows the
    two arms' noise and the tc program's cost, both arms pay it)."""
    if not ratio:
        return "n/a"
    if kept:
        return "kept on TCP"
    at_least = ratio["median"] <= 1 if lower_is_better(metric) else ratio["median"] >= 1
    return "at least TCP" if at_least else "below TCP"


def value(row, arm, metric):
    res = row.get(arm)
    return res.get(metric) if res and "error" not in res else None


def summarize(raw, tools):
    """{tool: {case: {metric: {tcp, shm, uds: spread, ratio: {shm, uds: spread}, verdict}}}}"""
    out = {}
    for t in tools:
        for label, _params in t.cases:
            rows = raw.get(t.name, {}).get(label)
            if not rows:
                continue
            sh = [r["shm"]["counters"] for r in rows if r.get("shm") and "counters" in r["shm"]]
            kept = bool(sh) and all(c["captured"] == 0 and c.get("large_conns") for c in sh)
            res = {}
            for metric in t.heads + t.others:
                per = dict((arm, spread([value(r, arm, metric) for r in rows]) if arm in t.arms else None)
                           for arm in ARMS)
                per["ratio"] = {}
                for arm in ("shm", "uds"):
                    if arm in t.arms:
                        per["ratio"][arm] = spread([value(r, arm, metric) / value(r, "tcp", metric) for r in rows
                                                    if value(r, arm, metric) is not None and value(r, "tcp", metric)])
                per["verdict"] = verdict(metric, per["ratio"].get("shm"), kept)
                res[metric] = per
            out.setdefault(t.name, {})[label] = res
    return out


def check_of(tool, label, arm, rep, res):
    ok = "error" not in res and path_ok(arm, res["counters"])
    return {"tool": tool, "case": label, "arm": arm, "repeat": rep, "ok": ok, "counters": res["counters"],
            "error": res.get("error")}


# ------------------------------------------------------------------------------ main
def _terminated(_sig, _frame):
    sys.exit(143)   # SystemExit: the finally blocks remove the servers, the path and the temp dir


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=None,
                    help="repeats per arm (default %d, --quick %d)" % (FULL["repeats"], QUICK["repeats"]))
    ap.add_argument("--seconds", type=int, default=None,
                    help="seconds per measurement (default %d, --quick %d)" % (FULL["seconds"], QUICK["seconds"]))
    ap.add_argument("--quick", action="store_true",
                    help="short run for development (about %.0f min; the full run: about %.0f); writes to %s "
                    "unless --out says otherwise" % (estimate_s(TOOLS, **QUICK) / 60, estimate_s(TOOLS, **FULL) / 60,
                                                     QUICK_OUT))
    ap.add_argument("--only", default="", help="comma-separated clients to run (default all: %s)"
                    % ",".join(t.name for t in TOOLS))
    ap.add_argument("--max-queue", type=int, default=None,
                    help="the policy's max_queue in bytes (default: not set, the path's own default)")
    ap.add_argument("--capture", default="segments", choices=list(shm.CAPTURE_MODES),
                    help="when connections join the path (default segments, the path's default)")
    ap.add_argument("--out", default=None, help="directory for shm_path.json and shm_path.md (default benchmarks/results)")
    ap.add_argument("--render", metavar="JSON", help="recompute checks and summary from a shm_path.json and rewrite "
                    "shm_path.md and shm_path.json (no measurement)")
    args = ap.parse_args()
    out_dir = args.out or (QUICK_OUT if args.quick else os.path.join(ROOT, "benchmarks", "results"))
    if args.render:
        return rerender(args.render, out_dir)
    base = QUICK if args.quick else FULL
    repeats = args.repeats or base["repeats"]
    seconds = args.seconds or base["seconds"]
    only = [x for x in args.only.split(",") if x]
    unknown = set(only) - set(t.name for t in TOOLS)
    if unknown:
        sys.exit("unknown client(s) in --only: %s" % ", ".join(sorted(unknown)))
    tools = [t for t in TOOLS if not only or t.name in only]
    if os.geteuid() != 0:
        sys.exit("run as root")
    signal.signal(signal.SIGTERM, _terminated)
    estimate = estimate_s(tools, repeats, seconds)
    log("shm_path_bench: %d repeats x %d s per measurement, %d measurements; estimated %.1f min "
        "(the full run, %d x %d s: about %.0f min)" % (
            repeats, seconds, repeats * sum(len(t.cases) * len(t.arms) for t in tools), estimate / 60,
            FULL["repeats"], FULL["seconds"], estimate_s(TOOLS, **FULL) / 60))
    t_start = time.time()
    tmp = tempfile.mkdtemp(prefix="shmbench-")
    ctx = {"tmp": tmp, "seconds": seconds, "rate": {}}
    policy = {"name": "bench", "ports": POLICY_PORTS}
    if args.max_queue:
        policy["max_queue"] = args.max_queue
    config = {"policies": [policy], "local_addresses": ["127.0.0.0/8", "::1/128"], "cgroup": "/",
              "capture": args.capture}
    capture = dict((k, v) for k, v in shm.public(shm.validate(config)).items() if k.startswith("capture"))
    path = shm.ShmPath(name=NAME, state_dir=os.path.join(tmp, "state"))
    srv = Servers(tmp)
    load_before = os.getloadavg()
    raw, checks, removed = {}, [], {}
    with contextlib.ExitStack() as cleanup:   # undone in reverse, each step also if one before failed
        cleanup.callback(shutil.rmtree, tmp, ignore_errors=True)
        cleanup.callback(lambda: removed.update(path.absent()))
        cleanup.callback(srv.stop)
        # bcc needs the kernel's headers only to compile: where the kernel has none, the
        # bcc_runtime role's fallback is made for the compile and removed right after
        with machine_headers.for_session() as made_headers:
            path.present(config, open(shm.default_source()).read())
        pick_ports()
        for start in collections.OrderedDict((t.servers, None) for t in tools):
            start(srv, ctx)
        log("set up in %.0f s" % (time.time() - t_start))
        measure(ctx, path, tools, repeats, raw, checks, t_start, estimate)
        final_counters = path.counters()
    duration = time.time() - t_start
    meta = {
        "date": datetime.datetime.utcnow().strftime("%Y-%m-%dT%H:%M:%SZ"),
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "command": "/usr/bin/python3 benchmarks/shm_path_bench.py " + " ".join(sys.argv[1:]),
        "repeats": repeats,
        "seconds": seconds,
        "full_run": dict(FULL, estimate_s=round(estimate_s(TOOLS, **FULL))),
        "estimate_s": round(estimate),
        "duration_s": round(duration, 1),
        "policy": policy,
        "capture": capture,
        "headers_fallback_made_for_compile": made_headers,
        "server_ports": {"shm": SHM_BASE + OFFSET[0], "tcp": TCP_BASE + OFFSET[0], "plus": PORT},
        "tcp_mem": open("/proc/sys/net/ipv4/tcp_mem").read().split(),
        "versions": _versions(),
        "path_removed": removed.get("removed"),
        "final_counters": final_counters,
    }
    return write(out_dir, meta, raw, checks, tools)


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def measure(ctx, path, tools, repeats, raw, checks, t_start, estimate):
    """All cells x arms, repeats times; arms back to back per cell, their order rotating."""
    cells = [(t, label, params) for t in tools for (label, params) in t.cases]
    total = repeats * sum(len(t.arms) for t, _l, _p in cells)
    done = 0
    for rep in range(repeats):
        for ci, (t, label, params) in enumerate(cells):
            arms = [a for a in ARMS if a in t.arms]
            k = (rep + ci) % len(arms)
            row = {}
            for arm in arms[k:] + arms[:k]:
                before = path.counters()["total"]
                t0 = time.time()
                try:
                    res = t.fn(ctx, arm, params)
                except (RuntimeError, ValueError, KeyError, subprocess.TimeoutExpired) as e:
                    res = {"error": str(e)[-2000:]}
                after = path.counters()["total"]
                res["wall_s"] = round(time.time() - t0, 2)
                res["counters"] = dict((f, after[f] - before[f]) for f in before)
                check = check_of(t.name, label, arm, rep, res)
                res["path_check"] = "ok" if check["ok"] else "FAILED"
                checks.append(check)
                row[arm] = res
                done += 1
                elapsed = time.time() - t_start
                log("[%d/%d %4.0fs, ~%.0fs left] rep %d %-10s %-12s %-3s %s  %s%s" % (
                    done, total, elapsed, max(0, estimate - elapsed), rep, t.name, label, arm,
                    "ERROR %s" % res["error"].splitlines()[0][:200] if "error" in res else
                    " ".join("%s=%s" % (m, fmt(res[m])) for m in t.heads),
                    " ".join("%s=%d" % (f, res["counters"][f]) for f in PROGRESS_COUNTERS[arm] if f in res["counters"]),
                    "" if check["ok"] else "  PATH CHECK FAILED"))
            raw.setdefault(t.name, {}).setdefault(label, []).append(row)


def write(out_dir, meta, raw, checks, tools):
    meta["path_checks_failed"] = [c for c in checks if not c["ok"]]
    summary = summarize(raw, tools)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "shm_path.json"), "w") as f:
        json.dump({"meta": meta, "summary": summary, "raw": raw, "checks": checks}, f, indent=1, sort_keys=True)
    with open(os.path.join(out_dir, "shm_path.md"), "w") as f:
        f.write(render(meta, summary, raw, tools, checks))
    log("wrote %s/shm_path.md and shm_path.json (run: %.0f s, estimated %s s); failed checks: %d" % (
        out_dir, meta["duration_s"], meta.get("estimate_s", "?"), len(meta["path_checks_failed"])))
    return 1 if meta["path_checks_failed"] else 0


def rerender(src, out_dir):
    with open(src) as f:
        doc = json.load(f)
    raw, meta = doc["raw"], doc["meta"]
    if not all(isinstance(cases, dict) for cases in raw.values()):
        sys.exit("%s is from the earlier version of this benchmark (tool/connections keys): no re-render" % src)
    checks = []
    for tool, cases in sorted(raw.items()):
        for label, rows in sorted(cases.items()):
            for rep, row in enumerate(rows):
                for arm, res in sorted(row.items()):
                    check = check_of(tool, label, arm, rep, res)
                    res["path_check"] = "ok" if check["ok"] else "FAILED"
                    checks.append(check)
    meta["rerendered"] = datetime.datetime.utcnow().strftime("%Y-%m-%dT%H:%M:%SZ")
    return write(out_dir, meta, raw, checks, [t for t in TOOLS if t.name in raw])


def _cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _versions():
    try:
        postgres = os.path.join(pg_bindir(), "postgres")
    except RuntimeError:
        postgres = "postgres"
    return tool_versions((("sockperf", ["sockperf", "--version"]), ("iperf3", ["iperf3", "--version"]),
                          ("redis", ["redis-server", "--version"]), ("nginx", ["nginx", "-v"]),
                          ("wrk", ["wrk", "--version"]), ("postgres", [postgres, "--version"]),
                          ("gcc", ["gcc", "--version"])))


# ------------------------------------------------------------------------------ report
COUNTER_SHOWN = ("captured", "capture_errors", "large_conns", "shm_conns", "tcp_conns", "shm_bytes", "tcp_bytes",
                 "overflows", "resumes", "grows")
SPREAD_KEYS = ("median", "min", "max")
PROGRESS_COUNTERS = {"shm": ("captured", "large_conns", "shm_bytes", "tcp_bytes", "overflows", "resumes", "grows"),
                     "tcp": ("captured",), "uds": ("captured",)}


def fmt_counter(field, s):
    """A counter's median (min-max); bytes in MiB."""
    if not s:
        return "n/a"
    if field.endswith("_bytes"):
        def one(v):
            return fmt(v / 1048576.0) if v else "0"
    else:
        def one(v):
            return "%d" % v
    if s["min"] == s["max"]:
        return one(s["median"])
    return "%s (%s-%s)" % tuple(one(s[k]) for k in SPREAD_KEYS)


def metric_name(metric):
    return "%s (%s)" % (metric, "lower is better" if lower_is_better(metric) else "higher is better")


def case_check(checks, tool, label):
    okc = [c["ok"] for c in checks if c["tool"] == tool and c["case"] == label]
    return "n/a" if not okc else "ok" if all(okc) else "FAILED (%d of %d)" % (okc.count(False), len(okc))


def render(meta, summary, raw, tools, checks):
    L = ["# shm: is the same-host path at least as fast as TCP, per client?\n"]
    L.append("Conditions: %d CPUs (%s), kernel %s, everything on this one host: TCP over loopback "
             "(127.0.0.1) and Unix sockets in /tmp; load average before %s, after %s. "
             "**Results are medians of %d interleaved repeats** (per repeat and case the arms run back to "
             "back, their order rotating), %d s per measurement. The full run is %d repeats x %d s "
             "(estimated %.0f min on %d CPUs); this run: `%s`, %.0f s (estimated %.0f s).\n" % (
                 meta["cpus"], meta["cpu_model"], meta["kernel"],
                 " ".join("%.2f" % x for x in meta["loadavg_before"]),
                 " ".join("%.2f" % x for x in meta["loadavg_after"]),
                 meta["repeats"], meta["seconds"], meta["full_run"]["repeats"], meta["full_run"]["seconds"],
                 meta["full_run"]["estimate_s"] / 60.0, meta["cpus"], meta["command"], meta["duration_s"],
                 meta["estimate_s"]))
    L.append("Arms: **tcp** = TCP over 127.0.0.1, servers outside the path's policy (the programs are loaded, "
             "so this arm pays the sock_ops callback and, with capture: segments, the tc program on lo, but no "
             "sk_msg); **shm** = the same servers' twins on ports "
             "inside the policy (%s; %s), connections captured by bpf/shm_path.bpf.c; **uds** = Unix domain "
             "stream sockets where the client has them. Cells: median (min-max over repeats). Ratios: per-repeat "
             "arm/tcp, median (min-max). **path vs TCP**: \"at least TCP\" when the median shm/tcp ratio is "
             ">= 1 for throughput or <= 1 for latency, else \"below TCP\"; \"kept on TCP\" when capture: "
             "segments kept every connection of the case out of the path (the shm arm then runs plain TCP, so "
             "its ratio is the two arms' noise). Tool versions: %s. "
             "net.ipv4.tcp_mem = %s pages.\n" % (
                 json.dumps(meta["policy"], sort_keys=True)
                 + ("" if "max_queue" in meta["policy"] else "; max_queue not set: the path's default"),
                 json.dumps(meta.get("capture") or {"capture": "handshake"}, sort_keys=True),
                 "; ".join("%s" % v for v in meta["versions"].values()),
                 " ".join(meta["tcp_mem"])))
    L.append("The machine is shared (other jobs may run): read spreads before ratios.\n")
    if meta.get("rerendered"):
        L.append("Tables and checks re-rendered from shm_path.json with `--render` at %s (same measurements).\n"
                 % meta["rerendered"])
    L.append("\n## Is the path at least as fast as TCP?\n")
    L.append("Headline metrics; the path check is the counter check of the case's shm and tcp measurements "
             "(below).\n")
    L.append("| client | case | metric | shm/tcp | uds/tcp | path vs TCP | path check |")
    L.append("|---|---|---|---|---|---|---|")
    for t in tools:
        for label, _p in t.cases:
            for metric in t.heads:
                m = summary.get(t.name, {}).get(label, {}).get(metric)
                if m:
                    L.append("| %s | %s | %s | %s | %s | **%s** | %s |" % (
                        t.name, label, metric_name(metric), fmt_ratio(m["ratio"].get("shm")),
                        fmt_ratio(m["ratio"].get("uds")), m["verdict"], case_check(checks, t.name, label)))
    for t in tools:
        L.append("\n## %s\n\n%s.\n" % (t.name, t.note))
        L.append("| case | metric | tcp | shm | uds | shm/tcp | uds/tcp | path vs TCP |")
        L.append("|---|---|---|---|---|---|---|---|")
        for label, _p in t.cases:
            for metric in t.heads + t.others:
                m = summary.get(t.name, {}).get(label, {}).get(metric)
                if not m:
                    continue
                bold = "**" if metric in t.heads else ""
                L.append("| %s | %s%s%s | %s | %s | %s | %s | %s | %s |" % (
                    label, bold, metric, bold, fmt_spread(m["tcp"]), fmt_spread(m["shm"]),
                    fmt_spread(m["uds"]) if "uds" in t.arms else "n/a (no UDS mode)",
                    fmt_ratio(m["ratio"].get("shm")), fmt_ratio(m["ratio"].get("uds")), m["verdict"]))
    L.append("\n## Path counters (shm arm)\n")
    L.append("Counter deltas of the path over each shm measurement, median (min-max) over repeats; \"on path\" = "
             "shm_bytes / (shm_bytes + tcp_bytes). overflows: connection directions that left the path for "
             "TCP because the reader's queue reached max_queue; resumes: directions that came back onto the "
             "path once TCP had drained; grows: times a reading reader's default bound doubled; large_conns: "
             "connections capture: segments kept on TCP for good (a data segment above capture_max_segment; "
             "such a connection never enters the sockhash, its bytes count in neither shm_bytes nor tcp_bytes, "
             "nor do a captured connection's first segments before it joined). A shm measurement passes when "
             "capture_errors = 0 and either every connection was kept on TCP (large_conns > 0, nothing captured, "
             "shm_bytes = 0) or shm_bytes > 0, sockets were captured and tcp_bytes is at most 1% of shm_bytes "
             "unless a direction overflowed; a tcp "
             "or uds measurement passes when it captured nothing; a measurement whose client failed fails. "
             "tcp_conns > 0 in the wrk rows is teardown: wrk closes with requests in flight, nginx's response "
             "then finds no peer in the map and that direction falls back to TCP; such late responses can land "
             "in the next measurement's window.\n")
    L.append("| client | case | %s | on path | tcp-arm captured (max) | check |" % " | ".join(
        k + " (MiB)" if k.endswith("_bytes") else k for k in COUNTER_SHOWN))
    L.append("|---|---|%s---|---|---|" % ("---|" * len(COUNTER_SHOWN)))
    for t in tools:
        for label, _p in t.cases:
            rows = raw.get(t.name, {}).get(label, [])
            sh = [r["shm"]["counters"] for r in rows if r.get("shm")]
            tc = [r["tcp"]["counters"]["captured"] for r in rows if r.get("tcp")]
            if not sh:
                continue
            share = spread([c["shm_bytes"] / float(c["shm_bytes"] + c["tcp_bytes"]) for c in sh
                            if c["shm_bytes"] + c["tcp_bytes"]])
            L.append("| %s | %s | %s | %s | %s | %s |" % (
                t.name, label, " | ".join(fmt_counter(k, spread([c.get(k) for c in sh])) for k in COUNTER_SHOWN),
                "n/a" if not share else "%.1f%% (%.1f-%.1f%%)" % tuple(100 * share[k] for k in SPREAD_KEYS),
                max(tc) if tc else "n/a", case_check(checks, t.name, label)))
    failed = meta["path_checks_failed"]
    L.append("\nFailed checks: %d.\n" % len(failed))
    for c in failed:
        what = c.get("error") or "counters %s" % json.dumps(c["counters"], sort_keys=True)
        L.append("- %s %s %s repeat %d: %s" % (c["tool"], c["case"], c["arm"], c["repeat"], what[:500]))
    L.append("\n## Notes\n")
    L.append("- sockperf 3.7 has no Unix sockets, iperf3 and wrk neither: their uds column is n/a. A sockperf "
             "server started with -i/-p never answers a client that opens its connections from a feed file; the "
             "servers and clients here both use feed files.")
    L.append("- redis-benchmark has no duration option: -n is sized from the arm's rate in the previous repeat "
             "(the first repeat from a guess), so its measurements last about, not exactly, the chosen seconds.")
    L.append("- Each pgbench arm has its own PostgreSQL server (same initdb, copied before start), the uds arm "
             "uses the tcp arm's server through its Unix socket; both run as the postgres user from the temp dir "
             "and are stopped and removed at the end.")
    L.append("- The tcp arm runs with the programs loaded (its connections get the sock_ops callback, which "
             "returns at the policy check, and no sk_msg program).")
    return "\n".join(L) + "\n"


if __name__ == "__main__":
    sys.exit(main())
