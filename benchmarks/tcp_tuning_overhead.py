#!/usr/bin/python3
"""Benchmark: cost of the tcp_tuner sockops program on short connections, side by side.

Two sibling cgroups in one run: ``on`` has bpf/tcp_tuning.bpf.c attached with a rule that
matches loopback (flow tracking on, so every callback path runs), ``off`` has nothing.
A client process is started in one cgroup at a time (arms interleaved, order alternating)
and does connect / 64-byte request / 64-byte reply / close against a loopback server that
is outside both cgroups, for ``--seconds``.  Reported: connections per second per arm,
medians and min-max over repeats, and the on/off ratio of medians and per pair.

Must run as root with /usr/bin/python3 (bcc).  Loopback only; everything it makes
(cgroups, pins, program) is removed at the end.
Results: benchmarks/results/tcp_tuning_overhead.json and .md.
"""
import argparse
import json
import multiprocessing
import os
import platform
import shutil
import socket
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "collections"))

from ansible_collections.netstack.tuning.plugins.module_utils.bpf import program as bpf  # noqa: E402
from ansible_collections.netstack.tuning.plugins.module_utils.tcp_tuning import policy as tcppolicy  # noqa: E402

STATE = "/tmp/netstack-bench-overhead"
NAME = "bench_overhead"


def server(port_q, stop):
    lst = socket.socket()
    lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lst.bind(("127.0.0.1", 0))
    lst.listen(1024)
    port_q.put(lst.getsockname()[1])
    lst.settimeout(0.5)
    while not stop.is_set():
        try:
            c, _a = lst.accept()
        except socket.timeout:
            continue
        try:
            c.recv(64)
            c.sendall(b"y" * 64)
        except OSError:
            pass
        c.close()


def client(cgroup, port, seconds, out_q):
    with open(os.path.join(cgroup, "cgroup.procs"), "w") as f:
        f.write(str(os.getpid()))
    n = 0
    req = b"x" * 64
    end = time.perf_counter() + seconds
    start = time.perf_counter()
    while time.perf_counter() < end:
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(req)
        s.recv(64)
        s.close()
        n += 1
    out_q.put(n / (time.perf_counter() - start))


def measure(cgroup, port, seconds):
    q = multiprocessing.Queue()
    p = multiprocessing.Process(target=client, args=(cgroup, port, seconds, q))
    p.start()
    rate = q.get(timeout=seconds + 30)
    p.join()
    return rate


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results"))
    ap.add_argument("--no-track", action="store_true", help="flow tracking off (no per-peer state, no state/RTT callbacks)")
    ap.add_argument("--tag", default="", help="suffix of the result files")
    a = ap.parse_args()
    root = bpf.cgroup2_root()
    cg = {"on": os.path.join(root, "netstack-bench-on"), "off": os.path.join(root, "netstack-bench-off")}
    for d in cg.values():
        os.makedirs(d, exist_ok=True)
    eng = bpf.Engine(STATE)
    stop = multiprocessing.Event()
    port_q = multiprocessing.Queue()
    srv = multiprocessing.Process(target=server, args=(port_q, stop))
    srv.start()
    port = port_q.get(timeout=10)
    rates = {"on": [], "off": []}
    try:
        src = open(os.path.join(ROOT, "bpf", "tcp_tuning.bpf.c")).read()
        eng.present(NAME, src, [{"function": "tcp_tuner", "type": "sock_ops", "cgroup": cg["on"]}])
        pol = tcppolicy.Policy(os.path.join(bpf.PIN_ROOT, NAME))
        _n, enc, _f = tcppolicy.plan([{"name": "lo", "match": {"remote": "127.0.0.0/8"},
                                       "set": {"initial_cwnd": 10, "delack_max_ms": 40}}], 1 << 20, not a.no_track, 250)
        pol.write(enc, 0 if a.no_track else tcppolicy.C_TRACK, 1 << 20)
        measure(cg["off"], port, 1.0)  # warm-up
        for i in range(a.repeats):
            order = ("on", "off") if i % 2 == 0 else ("off", "on")
            for arm in order:
                rates[arm].append(measure(cg[arm], port, a.seconds))
        hits = pol.counters(1)[0]
        pol.close()
    finally:
        stop.set()
        srv.join(5)
        eng.absent(NAME)
        for d in cg.values():
            try:
                os.rmdir(d)
            except OSError:
                pass
        shutil.rmtree(STATE, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in rates.items()}
    pair = [on / off for on, off in zip(rates["on"], rates["off"])]
    res = {
        "benchmark": "tcp_tuning_overhead", "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "kernel": platform.release(), "cpus": os.cpu_count(), "repeats": a.repeats, "seconds": a.seconds,
        "rates": rates, "median": med, "min": {k: min(v) for k, v in rates.items()},
        "max": {k: max(v) for k, v in rates.items()},
        "ratio_of_medians": med["on"] / med["off"], "pair_ratios": pair,
        "pair_ratio_median": statistics.median(pair), "cost_pct": (1 - med["on"] / med["off"]) * 100,
        "rule_hits": hits, "flow_tracking": not a.no_track,
    }
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "tcp_tuning_overhead%s.json" % a.tag), "w") as f:
        json.dump(res, f, indent=1)
    md = ["# tcp_tuning_overhead: short-connection rate with and without tcp_tuner attached", "",
          "Run %s on kernel %s, %d CPUs; %d repeats x %.0f s per arm, arms interleaved (order alternating). "
          "Client: connect, 64 B request, 64 B reply, close, one Python process; loopback server outside both cgroups. "
          "Arm `on`: tcp_tuner attached to the client's cgroup, one loopback rule (initial_cwnd, delack_max), "
          "flow tracking %s." % (res["ts"], res["kernel"], res["cpus"], a.repeats, a.seconds, "off" if a.no_track else "on"), "",
          "| arm | median conn/s | min-max |", "|---|---|---|"]
    for k in ("off", "on"):
        md.append("| %s | %.0f | %.0f-%.0f |" % (k, med[k], res["min"][k], res["max"][k]))
    md += ["", "on/off ratio of medians: %.4f (cost %.2f%%); per-pair ratios median %.4f, min-max %.4f-%.4f."
           % (res["ratio_of_medians"], res["cost_pct"], res["pair_ratio_median"], min(pair), max(pair)),
           "Rule hits counted by the program: %d (errors %d)." % (hits["hits"], hits["errors"]),
           "Target: under 2% cost. This benchmark reports; it does not pass or fail.", ""]
    with open(os.path.join(a.out, "tcp_tuning_overhead%s.md" % a.tag), "w") as f:
        f.write("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
