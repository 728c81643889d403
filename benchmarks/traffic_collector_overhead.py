#!/usr/bin/python3
"""Benchmark: what the traffic collector costs the traffic it counts (capability 5).

Two throwaway namespaces joined by a veth pair (198.18.104.0/30); iperf3 server in one, client
in the other (server CPU 1, client CPU 0).  Each repeat runs, in rotating order, the same test
with the collector detached and attached (tc clsact ingress + egress on the server's veth end,
the program of bpf/traffic.bpf.c loaded through trafficcollect.Collector, a scrape every
second into a temporary store, as the agent would):

  * TCP bulk, 3 s (Gbit/s): few, large (GSO) packets per byte;
  * UDP 64-byte datagrams, 3 s, unlimited rate (packets/s received): the per-packet cost.

The ratio attached / detached is taken per repeat; median and min-max are reported.  The
collector's own count of the UDP test is checked against iperf3's (packets received).

Host state: namespaces, pins and temporary directories, all removed.  Root; Debian's python3.
Results: benchmarks/results/traffic_overhead.json and traffic_overhead.md.
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
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "collections"))
sys.path.insert(0, HERE)

from ansible_collections.netstack.tuning.plugins.module_utils.core import nsutil  # noqa: E402
from ansible_collections.netstack.tuning.plugins.module_utils.traffic import collect as trafficcollect  # noqa: E402
from figures import fmt_ratio, fmt_spread, spread  # noqa: E402

RESULTS = os.path.join(HERE, "results")
SRV, CLI = "nstrfo-srv", "nstrfo-cli"
SRV_ADDR, CLI_ADDR = "198.18.104.2", "198.18.104.1"
NAME = "bench-traffic"


def iperf(test, seconds):
    """One iperf3 run; returns (value, received packets or None)."""
    args = ["ip", "netns", "exec", CLI, "taskset", "-c", "0", "iperf3", "-c", SRV_ADDR, "-t", str(seconds), "-J"]
    if test == "udp64":
        args += ["-u", "-b", "0", "-l", "64"]
    out = json.loads(subprocess.run(args, capture_output=True, text=True, check=True, timeout=seconds + 30).stdout)
    end = out["end"]
    if test == "tcp":
        return end["sum_received"]["bits_per_second"] / 1e9, None
    s = end["sum"]
    received = s["packets"] - s["lost_packets"]
    return received / s["seconds"], received


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=3)
    args = ap.parse_args()
    ip = shutil.which("ip")
    tmp = tempfile.mkdtemp(prefix="netstack-traffic-bench-")
    results = {"tcp": {"off": [], "on": [], "ratio": []}, "udp64": {"off": [], "on": [], "ratio": []}}
    checks = []
    server = None
    coll = trafficcollect.Collector(name=NAME, interfaces=["srv0"], netns=SRV, state_dir=os.path.join(tmp, "state"),
                                    link_prefix="bench")
    try:
        for ns in (SRV, CLI):
            nsutil.delete_netns(ip, ns)
            subprocess.run([ip, "netns", "add", ns], check=True)
        nsutil.link_veth(ip, (SRV, "srv0", SRV_ADDR), (CLI, "cli0", CLI_ADDR), 30)
        server = subprocess.Popen(["ip", "netns", "exec", SRV, "taskset", "-c", "1", "iperf3", "-s"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1)
        for r in range(args.repeats):
            order = ("off", "on") if r % 2 == 0 else ("on", "off")
            for test in ("tcp", "udp64"):
                vals = {}
                for state in order:
                    store = trafficcollect.Store(os.path.join(tmp, "store-%d-%s-%s" % (r, test, state)))
                    stop = threading.Event()
                    loop = None
                    if state == "on":
                        coll.present()
                        coll.scrape()   # baseline: count only this run
                        out = {}
                        loop = threading.Thread(target=lambda: out.update(trafficcollect.scrape_loop(coll, store, 1, stop_event=stop)))
                        loop.start()
                    vals[state], received = iperf(test, args.seconds)
                    if loop is not None:
                        time.sleep(0.5)
                        stop.set()
                        loop.join()
                        coll.absent()
                        if test == "udp64":
                            counted = sum(int(line.split(",")[8]) for f in store.files() for line in open(f).read().splitlines()[1:]
                                          if line.split(",")[2] == "in" and line.split(",")[4] == "17")
                            checks.append({"iperf3_received": received, "collector_in_udp_packets": counted})
                    time.sleep(0.5)
                results[test]["off"].append(vals["off"])
                results[test]["on"].append(vals["on"])
                results[test]["ratio"].append(vals["on"] / vals["off"])
                print("repeat %d %s: off %.3g on %.3g ratio %.3f" % (r, test, vals["off"], vals["on"], vals["on"] / vals["off"]),
                      flush=True)
    finally:
        if server is not None:
            server.kill()
            server.wait()
        try:
            coll.absent()
        finally:
            for ns in (SRV, CLI):
                nsutil.delete_netns(ip, ns)
            shutil.rmtree(tmp, ignore_errors=True)
    out = {"date": datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M UTC"), "host": platform.node(),
           "kernel": platform.release(), "repeats": args.repeats, "seconds": args.seconds, "checks": checks}
    for test, v in results.items():
        out[test] = {"off": spread(v["off"]), "on": spread(v["on"]), "ratio": spread(v["ratio"]), "raw": v}
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "traffic_overhead.json"), "w") as f:
        json.dump(out, f, indent=1, sort_keys=True)
    md = ["# Traffic collector overhead on a veth pair", "",
          "%s, %s, kernel %s; %d interleaved repeats of %d s, iperf3 client CPU 0, server CPU 1; collector on the server's "
          "veth (ingress + egress), scraping every second." % (out["date"], out["host"], out["kernel"], args.repeats, args.seconds), "",
          "| test | detached | attached | attached / detached |", "|---|---|---|---|",
          "| TCP bulk, Gbit/s | %s | %s | %s |" % (fmt_spread(out["tcp"]["off"]), fmt_spread(out["tcp"]["on"]), fmt_ratio(out["tcp"]["ratio"])),
          "| UDP 64 B, packets/s received | %s | %s | %s |" % (fmt_spread(out["udp64"]["off"]), fmt_spread(out["udp64"]["on"]),
                                                              fmt_ratio(out["udp64"]["ratio"])), "",
          "Counting check (UDP runs): %s" % "; ".join("iperf3 received %d, collector counted %d in"
                                                     % (c["iperf3_received"], c["collector_in_udp_packets"]) for c in checks), ""]
    with open(os.path.join(RESULTS, "traffic_overhead.md"), "w") as f:
        f.write("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
