#!/usr/bin/python3
"""What capture mode "segments" costs the TCP traffic it does not capture.

The path's tc program runs on every segment on lo: a data segment costs it a socket lookup.
`make bench-shm` compares the path with TCP while both arms run under that program, so
this script measures the program itself: the same TCP clients against servers outside
the policy, with the path absent and with the path present (capture: segments), the two
states alternating and their order rotating per repeat.

  /usr/bin/python3 benchmarks/shm/tc_cost.py [--repeats 5] [--seconds 4]

Root and Debian's python (bcc).  It starts the bench's sockperf, iperf3 and nginx servers
(benchmarks/shm_path_bench.py, loopback only), loads and removes the path each repeat, and
writes benchmarks/results/shm_tc_cost.md (median and range of the per-repeat ratios
present/absent).  Everything it starts or loads is removed at the end, also on failure.
"""
import argparse
import contextlib
import datetime
import os
import platform
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "tests", "support"))
import shm_path_bench as B  # noqa: E402
import machine_headers  # noqa: E402  bcc_runtime's headers fallback where the kernel has none
from ansible_collections.netstack.tuning.plugins.module_utils.shm_path import path as shm  # noqa: E402

CASES = (("sockperf", "64 B", "rtt_mean_us"), ("iperf3", "-P 1", "receiver_gbps"),
         ("iperf3", "-P 4", "receiver_gbps"), ("wrk", "1 KiB", "req_per_s"), ("wrk", "1 MiB", "req_per_s"))
STATES = ("absent", "present")
OUT = os.path.join(os.path.dirname(HERE), "results", "shm_tc_cost.md")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=4)
    ap.add_argument("--out", default=OUT)
    args = ap.parse_args()
    tools = dict((t.name, t) for t in B.TOOLS)
    tmp = tempfile.mkdtemp(prefix="shm-tccost-")
    ctx = {"tmp": tmp, "seconds": args.seconds, "rate": {}}
    path = shm.ShmPath(name="shm_tccost", state_dir=os.path.join(tmp, "state"))
    config = {"policies": [{"name": "bench", "ports": B.POLICY_PORTS}], "capture": "segments"}
    source = open(shm.default_source()).read()
    rows, t0 = [], time.time()
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, tmp, ignore_errors=True)
        cleanup.callback(path.absent)
        srv = B.Servers(tmp)
        cleanup.callback(srv.stop)
        cleanup.enter_context(machine_headers.for_session())
        B.pick_ports()
        for name in ("sockperf", "iperf3", "wrk"):
            tools[name].servers(srv, ctx)
        for rep in range(args.repeats):
            row = {}
            for state in STATES[rep % 2:] + STATES[:rep % 2]:
                if state == "present":
                    path.present(config, source)
                else:
                    path.absent()
                for tool, label, metric in CASES:
                    params = dict(tools[tool].cases)[label]
                    row[(tool, label, state)] = tools[tool].fn(ctx, "tcp", params)[metric]
                    B.log("rep %d %-8s %-6s %-7s %s=%s" % (rep, tool, label, state, metric,
                                                           B.fmt(row[(tool, label, state)])))
            rows.append(row)
    with open(args.out, "w") as f:
        f.write(render(rows, args, time.time() - t0))
    B.log("wrote %s" % args.out)
    return 0


def render(rows, args, took):
    L = ["# What capture mode \"segments\" costs the TCP traffic it does not capture\n",
         "`/usr/bin/python3 benchmarks/shm/tc_cost.py --repeats %d --seconds %d`, %s UTC, %d CPUs, kernel %s, "
         "%.0f s. TCP clients of `make bench-shm` against servers outside the path's policy, with the path "
         "**absent** and **present** (capture: segments: sock_ops, sk_msg and the tc program on lo's clsact "
         "ingress), alternating per repeat with the order rotating, %d s per measurement. Ratio: "
         "present/absent per repeat, median (min-max); for latency lower is better, for throughput higher.\n"
         % (args.repeats, args.seconds, datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M"), os.cpu_count(),
            platform.release(), took, args.seconds),
         "| client | case | metric | absent | present | present/absent |", "|---|---|---|---|---|---|"]
    for tool, label, metric in CASES:
        a = [r[(tool, label, "absent")] for r in rows]
        p = [r[(tool, label, "present")] for r in rows]
        ratio = B.spread([y / x for x, y in zip(a, p) if x])
        L.append("| %s | %s | %s | %s | %s | %s |" % (tool, label, metric, B.fmt_spread(B.spread(a)),
                                                     B.fmt_spread(B.spread(p)), B.fmt_ratio(ratio)))
    return "\n".join(L) + "\n"


if __name__ == "__main__":
    sys.exit(main())
