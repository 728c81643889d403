#!/usr/bin/python3
"""Benchmark: zero-copy check (capability 2).

Part 1, the table: the zerocopy_test engine over loopback and a veth pair between two
namespaces it creates, TCP and UDP, message sizes 1K to 1M, every mode (copy, io_uring SEND,
MSG_ZEROCOPY, io_uring SEND_ZC, the lightweight SCM_ZC_NOTIFICATION), --repeats runs per
cell with the modes interleaved; sender pinned to CPU 0, receiver to CPU 1.  Written with the
crossover sizes and recommendations.

Part 2, is the measuring loop the bottleneck?  TCP copy-mode throughput on the same paths
and sizes from three senders, interleaved per repeat (order rotating): a plain C loop
(benchmarks/zerocopy/plain_loop.c: send() in a loop, recv() in a loop, nothing else), the
module's C helper (src/zc_bench.c through the engine, as the module runs it) and the module's
Python fallback.  The ratio helper / plain loop is quoted per repeat.

Host state: only namespaces and temporary directories, all removed.  Must run as root.
Results: benchmarks/results/zerocopy.json and zerocopy.md.
"""
import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "collections"))
sys.path.insert(0, HERE)

from ansible_collections.netstack.tuning.plugins.module_utils.zerocopy import report as zcreport, measure as zerocopy  # noqa: E402
from figures import fmt_ratio, spread, tool_versions  # noqa: E402

RESULTS = os.path.join(HERE, "results")


def plain_run(binary, path, lab, size, duration):
    """Gbit/s of the plain C loop on ``path`` (receiver CPU 1, sender CPU 0)."""
    addr = "127.0.0.1" if path == "loopback" else zerocopy.VETH_SERVER
    pre_r = ["ip", "netns", "exec", lab.server] if path == "veth" else []
    pre_s = ["ip", "netns", "exec", lab.client] if path == "veth" else []
    rx = subprocess.Popen(pre_r + ["taskset", "-c", "1", binary, "recv", addr], stdout=subprocess.PIPE,
                          universal_newlines=True)
    try:
        port = int(rx.stdout.readline().split()[1])
        subprocess.run(pre_s + ["taskset", "-c", "0", binary, "send", addr, str(port), str(size), str(duration)],
                       check=True, timeout=duration + 30)
        nbytes, secs = rx.stdout.readline().split()
        rx.wait(timeout=30)
    finally:
        if rx.poll() is None:
            rx.kill()
            rx.wait()
    return int(nbytes) * 8 / float(secs) / 1e9


def engine_run(helper, p, path, lab, size):
    tx, rx = zerocopy.one_run(helper, p, path, "tcp", size, "copy", lab)
    if tx.get("status") != "ok" or not rx or rx.get("status") != "ok":
        raise RuntimeError("run failed: %s %s" % (tx, rx))
    return zerocopy.run_metrics(tx, rx)["throughput_gbps"]


def loop_comparison(args, source):
    work = tempfile.mkdtemp(prefix="netstack-zcbench-")
    try:
        plain = os.path.join(work, "plain_loop")
        subprocess.run(["cc", "-O2", "-o", plain, os.path.join(HERE, "zerocopy", "plain_loop.c")], check=True)
        chelper, why = zerocopy.build_c_helper(source, work)
        if not chelper:
            raise SystemExit("cannot build the C helper: %s" % why)
        pyhelper = zerocopy.PyHelper()
        p = zerocopy.validate({"duration": args.loop_duration, "sender_cpu": 0, "receiver_cpu": 1})
        arms = [("plain C loop", lambda path, lab, s: plain_run(plain, path, lab, s, args.loop_duration)),
                ("zc_bench (module, C)", lambda path, lab, s: engine_run(chelper, p, path, lab, s)),
                ("module, Python fallback", lambda path, lab, s: engine_run(pyhelper, p, path, lab, s))]
        out = {}
        with zerocopy.VethLab("nszcb") as lab:
            for rep in range(args.loop_repeats):
                for path in ("loopback", "veth"):
                    for size in args.loop_sizes:
                        k = rep % len(arms)
                        for name, fn in arms[k:] + arms[:k]:
                            gbps = fn(path, lab, size)
                            out.setdefault("%s/%d" % (path, size), {}).setdefault(name, []).append(gbps)
                            print("  loop %s %s %s: %.2f Gbit/s" % (path, zerocopy.fmt_size(size), name, gbps),
                                  flush=True)
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


def loop_markdown(loops):
    lines = ["| path / size | plain C loop Gbit/s | zc_bench (module, C) | ratio to plain | Python fallback | ratio to plain |",
             "|---|---|---|---|---|---|"]
    summary = {}
    for key, arms in loops.items():
        plain = arms["plain C loop"]
        c, py = arms["zc_bench (module, C)"], arms["module, Python fallback"]
        rc = spread([a / b for a, b in zip(c, plain)])
        rp = spread([a / b for a, b in zip(py, plain)])
        summary[key] = {"c_ratio": rc, "python_ratio": rp, "plain": spread(plain), "c": spread(c),
                        "python": spread(py)}
        path, size = key.split("/")
        lines.append("| %s %s | %.2f (%.2f-%.2f) | %.2f (%.2f-%.2f) | %s | %.2f (%.2f-%.2f) | %s |" % (
            path, zerocopy.fmt_size(int(size)), *[summary[key]["plain"][k] for k in ("median", "min", "max")],
            *[summary[key]["c"][k] for k in ("median", "min", "max")], fmt_ratio(rc),
            *[summary[key]["python"][k] for k in ("median", "min", "max")], fmt_ratio(rp)))
    return "\n".join(lines), summary


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--duration", type=float, default=1.0)
    ap.add_argument("--sizes", default="1K,4K,16K,64K,256K,1M")
    ap.add_argument("--loop-repeats", type=int, default=5)
    ap.add_argument("--loop-duration", type=float, default=1.0)
    ap.add_argument("--loop-sizes", default="1K,16K,256K")
    ap.add_argument("--skip-table", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (network namespaces)")
    args.loop_sizes = [zerocopy.parse_size(s, "loop-sizes") for s in args.loop_sizes.split(",")]
    with open(os.path.join(REPO, "src", "zc_bench.c")) as f:
        source = f.read()
    t0 = time.time()
    result = None
    if not args.skip_table:
        print("part 1: the table (%s repeats x %.1f s per cell)" % (args.repeats, args.duration), flush=True)
        result = zerocopy.zerocopy_test({
            "paths": ["loopback", "veth"], "protocols": ["tcp", "udp"], "sizes": args.sizes.split(","),
            "duration": args.duration, "repeats": args.repeats, "sender_cpu": 0, "receiver_cpu": 1,
            "implementation": "c", "netns_prefix": "nszcb"}, source,
            log=lambda key, m: print("  %s/%s %s %s: %.2f Gbit/s" % (key[0], key[1], zerocopy.fmt_size(key[2]),
                                                                      key[3], m["throughput_gbps"]), flush=True))
    t1 = time.time()
    print("part 2: the C-loop comparison", flush=True)
    loops = loop_comparison(args, source)
    loop_md, loop_summary = loop_markdown(loops)
    env = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "kernel": platform.release(),
           "cpus": os.cpu_count(), "table_s": round(t1 - t0), "loop_s": round(time.time() - t1),
           "tools": tool_versions([("cc", ["cc", "--version"]), ("python", [sys.executable, "--version"])])}
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "zerocopy.json"), "w") as f:
        json.dump({"env": env, "args": {k: v for k, v in vars(args).items()}, "table": result, "loops": loops,
                   "loop_summary": loop_summary}, f, indent=1, default=str)
    md = ["# Zero-copy check: benchmark", "",
          "`make bench-zerocopy` (benchmarks/zerocopy_bench.py), %s, kernel %s, %d CPUs; sender on CPU 0, "
          "receiver on CPU 1; %s; %s." % (env["date"], env["kernel"], env["cpus"], env["tools"]["cc"],
                                          env["tools"]["python"]), ""]
    if result:
        md += ["## Part 1: size x mode (%d runs per cell, %.1f s each, modes interleaved; %d s)" % (
            args.repeats, args.duration, env["table_s"]), "", zcreport.markdown(result, "this machine")]
    md += ["## Part 2: is the measuring loop the bottleneck? (TCP copy mode, %d interleaved repeats x %.1f s; %d s)"
           % (args.loop_repeats, args.loop_duration, env["loop_s"]), "",
           "Median (min-max) Gbit/s; ratios per repeat against the plain C loop in the same repeat.", "", loop_md, ""]
    with open(os.path.join(RESULTS, "zerocopy.md"), "w") as f:
        f.write("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
