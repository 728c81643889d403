#!/usr/bin/python3
"""Benchmark: the same-host shared path (capability 4) against TCP loopback and Unix sockets.

Three arms, side by side in one run, interleaved per repeat (the order rotates):

  tcp  TCP over loopback, the path not used (servers on ports 38000+, outside the policy)
  shm  TCP over loopback with bpf/shm_redirect.bpf.c capturing the connections (servers on
       ports 31000+, inside the policy 30000-32767; the policy stops below the ephemeral
       port range so that no client port of anybody else's connection can match it)
  uds  Unix domain stream sockets: the floor a same-host transport can aim for

Tools, at 1, 16 and 256 concurrent connections where the tool allows:
  nsbench pp    benchmarks/shm/nsbench.c (compiled at run time): 64 B ping-pong, one message
                in flight per connection, one epoll thread per side; TCP and UDS identically
  sockperf      ping-pong, --full-rtt; TCP only (3.7 has no Unix sockets); 1 and 16
                connections (256 hangs sockperf 3.7); several connections come from a feed
                file and sockperf then has ONE message in flight, round-robin over them
  nsbench bulk  one-way stream, 128 KiB writes, counted where the bytes arrive
  iperf3        -P 1 and 16, receiver's figure; TCP only
  redis         redis-benchmark -t set,get -P 1 (--csv: rps, p50, p99); UDS via -s
  wrk           nginx, 1 KiB static file, keep-alive, -t 1; TCP only (wrk has no UDS)
  nsbench http  the same nginx and file, keep-alive GET, one request in flight per
                connection: the wrk stand-in that can also do the UDS arm

Every shm measurement reads the path's counters before and after: shm_bytes must grow and
tcp_conns must stay small (the figures are recorded), every tcp measurement must capture no
socket.  Must run as root with /usr/bin/python3 (bcc).  Loopback and /tmp only; the path,
servers and temp dir are removed at the end.
Results: benchmarks/results/shm.json and shm.md.
"""
import argparse
import datetime
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "collections"))

from figures import fmt, fmt_spread, spread, tool_versions  # noqa: E402
from ansible_collections.netstack.tuning.plugins.module_utils import shm  # noqa: E402

NAME = "shmbench"
POLICY_PORTS = "30000-32767"
SHM_BASE = 31000      # inside the policy (31000-31999)
TCP_BASE = 38000      # outside it, 38000-38999 (and no ephemeral client port can fall into the policy)
PORT = {"nsbench": 1, "sockperf": 2, "iperf3": 3, "redis": 4, "nginx": 5}
ARMS = ("tcp", "shm", "uds")


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

    def start(self, argv, ready, log):
        with open(os.path.join(self.tmp, log), "w") as f:
            p = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.procs.append(p)
        wait_ready(ready, p)
        return p

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=5)
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
        listen unix:{tmp}/nginx.sock backlog=4096;
        root {tmp}/www;
        location / {{ }}
    }}
}}
"""


def start_servers(srv, tmp, nsbench):
    for arm in ("tcp", "shm"):
        srv.start([nsbench, "server", "tcp:127.0.0.1:%d" % port(arm, "nsbench")],
                  ("127.0.0.1", port(arm, "nsbench")), "nsbench-%s.log" % arm)
        # started from a feed file: a server started with -i/-p never answers a client that
        # opens several connections from a feed file (sockperf 3.7)
        feed = os.path.join(tmp, "sockperf-server-%s" % arm)
        with open(feed, "w") as f:
            f.write("T:127.0.0.1:%d\n" % port(arm, "sockperf"))
        srv.start(["sockperf", "server", "-f", feed, "--uc-reuseaddr"],
                  ("127.0.0.1", port(arm, "sockperf")), "sockperf-%s.log" % arm)
        srv.start(["iperf3", "-s", "-p", str(port(arm, "iperf3"))],
                  ("127.0.0.1", port(arm, "iperf3")), "iperf3-%s.log" % arm)
    srv.start([nsbench, "server", "unix:%s/nsbench.sock" % tmp], "%s/nsbench.sock" % tmp, "nsbench-uds.log")
    # redis: the TCP arm's server also listens on the Unix socket (the UDS arm)
    for arm in ("tcp", "shm"):
        argv = ["redis-server", "--port", str(port(arm, "redis")), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", tmp, "--daemonize", "no",
                "--protected-mode", "no", "--maxclients", "10000", "--loglevel", "warning"]
        if arm == "tcp":
            argv += ["--unixsocket", "%s/redis.sock" % tmp, "--unixsocketperm", "700"]
        srv.start(argv, ("127.0.0.1", port(arm, "redis")), "redis-%s.log" % arm)
    wait_ready("%s/redis.sock" % tmp, srv.procs[-2])
    os.makedirs(os.path.join(tmp, "www"))
    with open(os.path.join(tmp, "www", "1k.bin"), "wb") as f:
        f.write(b"n" * 1024)
    with open(os.path.join(tmp, "nginx.conf"), "w") as f:
        f.write(NGINX_CONF.format(tmp=tmp, shm_port=port("shm", "nginx"), tcp_port=port("tcp", "nginx")))
    p = srv.start(["nginx", "-c", os.path.join(tmp, "nginx.conf"), "-p", tmp],
                  ("127.0.0.1", port("tcp", "nginx")), "nginx.log")
    wait_ready(("127.0.0.1", port("shm", "nginx")), p)
    wait_ready("%s/nginx.sock" % tmp, p)


# ------------------------------------------------------------------------------ clients
def run(argv, timeout):
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout,
                       universal_newlines=True)
    if r.returncode != 0:
        raise RuntimeError("%s exited %d: %s" % (" ".join(argv), r.returncode, r.stdout[-2000:]))
    return r.stdout


def addr(arm, tool, tmp):
    if arm == "uds":
        return "unix:%s/%s.sock" % (tmp, tool)
    return "tcp:127.0.0.1:%d" % port(arm, tool)


def m_nsbench_pp(ctx, arm, conc):
    out = json.loads(run([ctx["nsbench"], "pp", addr(arm, "nsbench", ctx["tmp"]), "-c", str(conc),
                          "-m", "64", "-t", str(ctx["seconds"])], ctx["seconds"] + 30).strip().splitlines()[-1])
    return {"ops_per_s": out["ops_per_s"], "rtt_p50_us": out["rtt_p50_us"], "rtt_p99_us": out["rtt_p99_us"],
            "rtt_mean_us": out["rtt_mean_us"], "errors": out["errors"]}


def m_sockperf(ctx, arm, conc):
    feed = os.path.join(ctx["tmp"], "feed-%s-%d" % (arm, conc))
    with open(feed, "w") as f:
        f.write("T:127.0.0.1:%d\n" % port(arm, "sockperf") * conc)
    out = run(["sockperf", "ping-pong", "-f", feed, "-m", "64", "-t", str(ctx["seconds"]), "--full-rtt"],
              ctx["seconds"] + 20)
    res = {}
    m = re.search(r"\[Valid Duration\] RunTime=([\d.]+) sec; SentMessages=(\d+); ReceivedMessages=(\d+)", out)
    res["ops_per_s"] = int(m.group(3)) / float(m.group(1))
    res["rtt_mean_us"] = float(re.search(r"avg-rtt=([\d.]+)", out).group(1))
    res["rtt_p50_us"] = float(re.search(r"percentile 50\.000 =\s*([\d.]+)", out).group(1))
    res["rtt_p99_us"] = float(re.search(r"percentile 99\.000 =\s*([\d.]+)", out).group(1))
    return res


def m_nsbench_bulk(ctx, arm, conc):
    out = json.loads(run([ctx["nsbench"], "bulk", addr(arm, "nsbench", ctx["tmp"]), "-c", str(conc),
                          "-m", "131072", "-t", str(ctx["seconds"])], ctx["seconds"] + 60).strip().splitlines()[-1])
    return {"receiver_gbps": out["receiver_gbps"], "sender_gbps": out["sender_gbps"], "drain_s": out["drain_s"],
            "lost_conns": out["lost_conns"], "blocking_eagain": out["blocking_eagain"]}


def m_iperf3(ctx, arm, conc):
    out = run(["iperf3", "-c", "127.0.0.1", "-p", str(port(arm, "iperf3")), "-t", str(ctx["seconds"]),
               "-P", str(conc), "-J"], ctx["seconds"] + 60)
    j = json.loads(out)
    return {"receiver_gbps": j["end"]["sum_received"]["bits_per_second"] / 1e9,
            "sender_gbps": j["end"]["sum_sent"]["bits_per_second"] / 1e9}


REDIS_GUESS = {1: 20000, 16: 60000, 256: 60000}


def m_redis(ctx, arm, conc):
    key = ("redis", conc)
    rate = ctx["rate"].get(key, REDIS_GUESS.get(conc, 50000))
    n = max(2000, int(rate * ctx["seconds"] / 2.0))
    target = ["-s", "%s/redis.sock" % ctx["tmp"]] if arm == "uds" else \
        ["-h", "127.0.0.1", "-p", str(port(arm, "redis"))]
    out = run(["redis-benchmark"] + target + ["-c", str(conc), "-n", str(n), "-t", "set,get", "-P", "1",
                                              "--csv", "-r", "100000"], ctx["seconds"] * 10 + 60)
    res = {"requests": n}
    rows = [l.replace('"', "").split(",") for l in out.strip().splitlines() if l.startswith('"')]
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


def m_wrk(ctx, arm, conc):
    if arm == "uds":
        return None
    out = run(["wrk", "-t", "1", "-c", str(conc), "-d", "%ss" % ctx["seconds"], "--latency",
               "http://127.0.0.1:%d/1k.bin" % port(arm, "nginx")], ctx["seconds"] + 60)
    res = {"req_per_s": float(re.search(r"Requests/sec:\s*([\d.]+)", out).group(1))}
    for q in ("50", "99"):
        res["p%s_ms" % q] = _wrk_time(re.search(r"^\s*%s%%\s+(\S+)" % q, out, re.M).group(1))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    res["non2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: (.*)", out)
    res["socket_errors"] = m.group(1) if m else ""
    return res


def m_nsbench_http(ctx, arm, conc):
    a = "unix:%s/nginx.sock" % ctx["tmp"] if arm == "uds" else "tcp:127.0.0.1:%d" % port(arm, "nginx")
    out = json.loads(run([ctx["nsbench"], "http", a, "-c", str(conc), "-t", str(ctx["seconds"]), "-u", "/1k.bin"],
                         ctx["seconds"] + 30).strip().splitlines()[-1])
    return {"req_per_s": out["ops_per_s"], "p50_ms": out["rtt_p50_us"] / 1000.0,
            "p99_ms": out["rtt_p99_us"] / 1000.0, "errors": out["errors"]}


# tool -> (function, concurrencies, arms, headline metric, [other metrics], note)
TOOLS = [
    ("nsbench_pp", m_nsbench_pp, (1, 16, 256), ARMS, "ops_per_s", ["rtt_p50_us", "rtt_p99_us"],
     "64 B ping-pong, one message in flight per connection; ops/s = round trips/s"),
    ("sockperf", m_sockperf, (1, 16), ("tcp", "shm"), "rtt_p50_us", ["rtt_p99_us", "rtt_mean_us", "ops_per_s"],
     "64 B ping-pong, --full-rtt; N>1: N connections from a feed file, ONE message in flight, "
     "round-robin over them (not N-way load); 256 connections: sockperf 3.7 hangs (plain TCP too); "
     "UDS: n/a (sockperf 3.7 has no Unix sockets)"),
    ("nsbench_bulk", m_nsbench_bulk, (1, 16), ARMS, "receiver_gbps", ["sender_gbps", "drain_s"],
     "one-way stream, 128 KiB writes; Gbit/s counted at the receiver, including the drain after the sender stops"),
    ("iperf3", m_iperf3, (1, 16), ("tcp", "shm"), "receiver_gbps", ["sender_gbps"],
     "-P N, receiver's figure; UDS: n/a (iperf3 has no Unix sockets)"),
    ("redis", m_redis, (1, 16, 256), ARMS, "get_rps", ["set_rps", "get_p50_ms", "get_p99_ms", "set_p50_ms", "set_p99_ms"],
     "redis-benchmark -t set,get -P 1 -r 100000, no persistence; UDS: -s on the TCP arm's server"),
    ("wrk", m_wrk, (1, 16, 256), ("tcp", "shm"), "req_per_s", ["p50_ms", "p99_ms"],
     "nginx 1 worker, 1 KiB static file, keep-alive, wrk -t 1 -c N; UDS: n/a (wrk has no unix-socket support)"),
    ("nsbench_http", m_nsbench_http, (1, 16, 256), ARMS, "req_per_s", ["p50_ms", "p99_ms"],
     "same nginx and file, keep-alive GET, one request in flight per connection (wrk stand-in that can do UDS)"),
]


# ------------------------------------------------------------------------------ stats
def path_ok(arm, d):
    """shm: payload went socket-to-socket, and what went over TCP is a trace (a response
    written after the client closed: its peer has left the map, that direction falls back
    to TCP; wrk and nsbench http close with requests in flight).  tcp: nothing captured."""
    if arm == "shm":
        return d["shm_bytes"] > 0 and d["captured"] > 0 and d["tcp_bytes"] <= 0.01 * d["shm_bytes"]
    return d["captured"] == 0


NO_RATIO = ("drain_s",)  # ~0 on the tcp arm: a ratio means nothing








def fmt_count(s):
    if not s:
        return "n/a"
    if s["min"] == s["max"]:
        return "%d" % s["median"]
    return "%d (%d-%d)" % (s["median"], s["min"], s["max"])


def fmt_ratio(s):
    if not s:
        return "n/a"
    return "%.2f (%.2f-%.2f)" % (s["median"], s["min"], s["max"])


def summarize(raw, tools):
    out = {}
    for (tool, _f, concs, arms, head, others, _note) in tools:
        for conc in concs:
            cell = raw.get("%s/%d" % (tool, conc))
            if not cell:
                continue
            res = {}
            for metric in [head] + others:
                per = {}
                for arm in ARMS:
                    per[arm] = spread([r[arm][metric] if r.get(arm) else None for r in cell]) if arm in arms else None
                ratios = {}
                for arm in ("shm", "uds"):
                    if arm in arms and metric not in NO_RATIO:
                        ratios[arm] = spread([r[arm][metric] / r["tcp"][metric]
                                              for r in cell if r.get(arm) and r.get("tcp") and r["tcp"][metric]])
                per["ratio"] = ratios
                res[metric] = per
            out["%s/%d" % (tool, conc)] = res
    return out


# ------------------------------------------------------------------------------ main
def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=None, help="repeats per arm (default 5, --quick 2)")
    ap.add_argument("--seconds", type=float, default=None, help="seconds per measurement (default 2, --quick 1)")
    ap.add_argument("--quick", action="store_true", help="short run (about 2-3 minutes; the full run: about 11)")
    ap.add_argument("--only", default="", help="comma-separated tools to run (default all)")
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results"))
    ap.add_argument("--render", metavar="JSON", help="recompute checks and summary from a shm.json and rewrite "
                    "shm.md and shm.json (no measurement)")
    args = ap.parse_args()
    if args.render:
        return rerender(args.render, args.out)
    repeats = args.repeats or (2 if args.quick else 5)
    seconds = args.seconds or (1 if args.quick else 2)
    if seconds == int(seconds):
        seconds = int(seconds)
    tools = [t for t in TOOLS if not args.only or t[0] in args.only.split(",")]
    if os.geteuid() != 0:
        sys.exit("run as root")
    t_start = time.time()
    tmp = tempfile.mkdtemp(prefix="shmbench-")
    nsbench = os.path.join(tmp, "nsbench")
    subprocess.check_call(["gcc", "-O2", "-Wall", "-o", nsbench, os.path.join(ROOT, "benchmarks", "shm", "nsbench.c")])
    ctx = {"tmp": tmp, "nsbench": nsbench, "seconds": seconds, "rate": {}}
    path = shm.ShmPath(name=NAME, state_dir=os.path.join(tmp, "state"))
    srv = Servers(tmp)
    load_before = os.getloadavg()
    raw, checks = {}, []
    try:
        src = open(shm.default_source()).read()
        path.present({"policies": [{"name": "bench", "ports": POLICY_PORTS}],
                      "local_addresses": ["127.0.0.0/8", "::1/128"], "cgroup": "/"}, src)
        pick_ports()
        start_servers(srv, tmp, nsbench)
        cells = [(t, c) for t in tools for c in t[2]]
        for rep in range(repeats):
            for ci, (tool, conc) in enumerate(cells):
                name, fn, _c, arms = tool[0], tool[1], tool[2], tool[3]
                order = list(ARMS)
                k = (rep + ci) % len(order)
                order = order[k:] + order[:k]
                row = {}
                for arm in order:
                    if arm not in arms:
                        continue
                    before = path.counters()["total"]
                    t0 = time.time()
                    res = fn(ctx, arm, conc)
                    after = path.counters()
                    d = dict((k2, after["total"][k2] - before[k2]) for k2 in before)
                    if res is None:
                        continue
                    res["wall_s"] = round(time.time() - t0, 2)
                    res["counters"] = d
                    ok = path_ok(arm, d)
                    res["path_check"] = "ok" if ok else "FAILED"
                    checks.append({"tool": name, "conc": conc, "arm": arm, "repeat": rep, "ok": ok, "counters": d})
                    row[arm] = res
                    print("rep %d %-13s c=%-3d %-3s %s=%s  %s" % (
                        rep, name, conc, arm, tool[4], fmt(res[tool[4]]),
                        "shm_bytes=%d tcp_conns=%d captured=%d" % (d["shm_bytes"], d["tcp_conns"], d["captured"])
                        if arm != "uds" else ""), flush=True)
                raw.setdefault("%s/%d" % (name, conc), []).append(row)
        final_counters = path.counters()
    finally:
        srv.stop()
        removed = path.absent()
        shutil.rmtree(tmp, ignore_errors=True)
    duration = time.time() - t_start
    summary = summarize(raw, tools)
    meta = {
        "date": datetime.datetime.utcnow().strftime("%Y-%m-%dT%H:%M:%SZ"),
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "command": "/usr/bin/python3 benchmarks/shm_bench.py " + " ".join(sys.argv[1:]),
        "repeats": repeats,
        "seconds": seconds,
        "duration_s": round(duration, 1),
        "policy_ports": POLICY_PORTS,
        "server_ports": {"shm": SHM_BASE + OFFSET[0], "tcp": TCP_BASE + OFFSET[0], "plus": PORT},
        "tcp_mem": open("/proc/sys/net/ipv4/tcp_mem").read().split(),
        "versions": _versions(),
        "path_removed": removed.get("removed"),
        "final_counters": final_counters,
        "path_checks_failed": [c for c in checks if not c["ok"]],
    }
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "shm.json"), "w") as f:
        json.dump({"meta": meta, "summary": summary, "raw": raw, "checks": checks}, f, indent=1, sort_keys=True)
    with open(os.path.join(args.out, "shm.md"), "w") as f:
        f.write(render(meta, summary, raw, tools, checks))
    print("wrote %s/shm.md and shm.json in %.0f s" % (args.out, duration))
    if meta["path_checks_failed"]:
        print("PATH CHECKS FAILED: %d" % len(meta["path_checks_failed"]))
        return 1
    return 0


def rerender(src, outdir):
    with open(src) as f:
        doc = json.load(f)
    raw, meta = doc["raw"], doc["meta"]
    checks = []
    for key, rows in sorted(raw.items()):
        tool, conc = key.rsplit("/", 1)
        for rep, row in enumerate(rows):
            for arm, res in sorted(row.items()):
                if "counters" in res:
                    ok = path_ok(arm, res["counters"])
                    res["path_check"] = "ok" if ok else "FAILED"
                    checks.append({"tool": tool, "conc": int(conc), "arm": arm, "repeat": rep, "ok": ok,
                                   "counters": res["counters"]})
    meta["path_checks_failed"] = [c for c in checks if not c["ok"]]
    meta["rerendered"] = datetime.datetime.utcnow().strftime("%Y-%m-%dT%H:%M:%SZ")
    tools = [t for t in TOOLS if any(k.startswith(t[0] + "/") for k in raw)]
    summary = summarize(raw, tools)
    with open(os.path.join(outdir, "shm.json"), "w") as f:
        json.dump({"meta": meta, "summary": summary, "raw": raw, "checks": checks}, f, indent=1, sort_keys=True)
    with open(os.path.join(outdir, "shm.md"), "w") as f:
        f.write(render(meta, summary, raw, tools, checks))
    print("rewrote %s/shm.md and shm.json; failed checks: %d" % (outdir, len(meta["path_checks_failed"])))
    return 1 if meta["path_checks_failed"] else 0


def _cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _versions():
    return tool_versions((("sockperf", ["sockperf", "--version"]), ("iperf3", ["iperf3", "--version"]),
                          ("redis", ["redis-server", "--version"]), ("nginx", ["nginx", "-v"]),
                          ("wrk", ["wrk", "--version"]), ("gcc", ["gcc", "--version"])))


def render(meta, summary, raw, tools, checks):
    L = []
    L.append("# shm: same-host path vs TCP loopback vs Unix sockets\n")
    L.append("Run finished %s on kernel %s, %d CPUs (%s); load average before %s, after %s. "
             "Command: `%s` (%.0f s). %d repeats x %s s per measurement, arms interleaved per repeat "
             "(order rotating). Arms: **tcp** = TCP over 127.0.0.1, servers outside the path's policy "
             "(the programs are loaded, so this arm pays the sock_ops callback but no sk_msg); **shm** = "
             "the same servers' twins on ports inside the policy %s, connections captured by "
             "bpf/shm_redirect.bpf.c; **uds** = Unix domain stream sockets. Cells: median (min-max over "
             "repeats); ratios are per-repeat arm/tcp ratios, median (min-max). Tool versions: %s. "
             "net.ipv4.tcp_mem = %s pages.\n" % (
                 meta["date"], meta["kernel"], meta["cpus"], meta["cpu_model"],
                 " ".join("%.2f" % x for x in meta["loadavg_before"]),
                 " ".join("%.2f" % x for x in meta["loadavg_after"]),
                 meta["command"], meta["duration_s"], meta["repeats"], meta["seconds"], meta["policy_ports"],
                 "; ".join("%s" % v for v in meta["versions"].values()), " ".join(meta["tcp_mem"])))
    L.append("The machine is shared (2 CPUs, other jobs running): read spreads before ratios.\n")
    if meta.get("rerendered"):
        L.append("Tables and checks re-rendered from shm.json with `--render` at %s (same measurements).\n"
                 % meta["rerendered"])
    for (tool, _f, concs, arms, head, others, note) in tools:
        L.append("\n## %s\n\n%s.\n" % (tool, note))
        L.append("| conns | metric | tcp | shm | uds | shm/tcp | uds/tcp |")
        L.append("|---|---|---|---|---|---|---|")
        for conc in concs:
            s = summary.get("%s/%d" % (tool, conc))
            if not s:
                continue
            for metric in [head] + others:
                m = s[metric]
                uds = fmt_spread(m["uds"]) if "uds" in arms else (
                    "n/a (wrk has no unix-socket support)" if tool == "wrk" else "n/a (no UDS mode)")
                L.append("| %d | %s%s%s | %s | %s | %s | %s | %s |" % (
                    conc, "**" if metric == head else "", metric, "**" if metric == head else "",
                    fmt_spread(m["tcp"]), fmt_spread(m["shm"]), uds,
                    fmt_ratio(m["ratio"].get("shm")), fmt_ratio(m["ratio"].get("uds"))))
    L.append("\n## Path checks (shm arm)\n")
    L.append("Counter deltas of the path over each shm measurement, median (min-max) over repeats. "
             "A shm measurement passes when shm_bytes > 0, sockets were captured and tcp_bytes is at most "
             "1% of shm_bytes; a tcp measurement passes when it captured nothing. tcp_conns > 0 in the HTTP "
             "rows is teardown: wrk and nsbench http close with a request in flight, nginx's response then "
             "finds no peer in the map and that direction falls back to TCP (about one response each); such "
             "late responses can land in the next measurement's window.\n")
    L.append("| tool | conns | captured | shm_conns | tcp_conns | shm_bytes | tcp_bytes | tcp-arm captured (max) | check |")
    L.append("|---|---|---|---|---|---|---|---|---|")
    for (tool, _f, concs, arms, head, others, note) in tools:
        for conc in concs:
            rows = raw.get("%s/%d" % (tool, conc), [])
            sh = [r["shm"]["counters"] for r in rows if r.get("shm")]
            tc = [r["tcp"]["counters"]["captured"] for r in rows if r.get("tcp")]
            okc = [c["ok"] for c in checks if c["tool"] == tool and c["conc"] == conc]
            if not sh:
                continue
            L.append("| %s | %d | %s | %s | %s | %s | %s | %s | %s |" % (
                tool, conc, *[fmt_count(spread([c[k] for c in sh])) for k in
                              ("captured", "shm_conns", "tcp_conns", "shm_bytes", "tcp_bytes")],
                max(tc) if tc else "n/a", "ok" if all(okc) else "FAILED (%d)" % okc.count(False)))
    failed = meta["path_checks_failed"]
    L.append("\nFailed checks: %d.\n" % len(failed))
    eag = [r["shm"].get("blocking_eagain", 0) for k, rows in raw.items() if k.startswith("nsbench_bulk/")
           for r in rows if r.get("shm")]
    L.append("\n## Notes\n")
    L.append("- No backpressure on the shm path: bpf_msg_redirect_hash(BPF_F_INGRESS) queues the payload on "
             "the receiver's ingress list, bounded only by net.ipv4.tcp_mem, not by the receiver's buffer. "
             "The sender can run ahead of the receiver: nsbench bulk's drain_s (time from the sender's last "
             "write to the receiver having read everything) is ~0 on TCP and UDS and tens of ms on shm, i.e. "
             "tens to hundreds of MB queued at the receiver. Bulk figures are therefore counted at the "
             "receiver (nsbench: including the drain; iperf3: its receiver figure), and bulk throughput on "
             "shm swings widely between repeats.")
    L.append("- A blocking read() on a captured socket can fail with EAGAIN (tcp_bpf_recvmsg woken with no "
             "data, e.g. by a write-space wake-up): nsbench bulk's client waits for the server's byte count "
             "with a blocking read after shutdown(SHUT_WR) and saw it in %d of %d shm measurements "
             "(it retries; without the retry the connection's bytes went uncounted). Plain TCP and UDS never "
             "do this." % (sum(1 for e in eag if e), len(eag)))
    L.append("- sockperf 3.7: no Unix sockets; with a feed file it keeps one message in flight round-robin "
             "over the connections, so its 16-connection row is latency with 16 sockets open, not 16-way "
             "load; 256 connections hang (plain TCP too). A sockperf server started with -i/-p never "
             "answers a multi-connection client; the servers here are started from a feed file.")
    L.append("- The tcp arm runs with the programs loaded (its connections get the sock_ops callback, which "
             "returns at the policy check, and no sk_msg program).")
    return "\n".join(L) + "\n"


if __name__ == "__main__":
    sys.exit(main())
