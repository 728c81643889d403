#!/usr/bin/python3
"""Benchmark: what tcp_tuner rules buy short flows on a lossy path shared with long flows.

Lab (everything made here and removed at the end, also on failure):

* two network namespaces joined by a veth pair, client 198.18.60.1/30, server 198.18.60.2/30;
* loss: bpf/netpath.bpf.c (tc, loaded with the bpf_program engine) on the ingress of
  *both* veth ends, so client->server (data, SYN, ACK) and server->client (SYN-ACK, ACK,
  reply) each lose ``--loss`` of their TCP packets at random.  GSO is limited to one
  segment per skb on both ends, so a "packet" is one MSS-sized segment, as on a wire.  This host's kernel has no
  sch_netem; ingress, not egress, because a drop on the sender's own egress is reported to
  the sending socket (NET_XMIT_DROP -> CWR) and is not what path loss looks like.  No delay
  is emulated (veth RTT is tens of microseconds; the Molecule/lab VMs have netem);
* a server in the server namespace: port 5001 reads a ``--size`` request, writes a 64 B reply
  and closes; port 5002 is a sink for bulk senders;
* two sibling cgroups v2 for the client: ``on`` has bpf/tcp_tuning.bpf.c attached with the
  rules below, ``off`` has nothing (kernel defaults).  Per run, one client process tree is
  started in the client namespace inside one of them: ``--long`` bulk senders to 5002
  (paced with SO_MAX_PACING_RATE to ``--long-mbit`` each, so they do not eat the 2 CPUs)
  and ``--short-procs`` processes doing short flows back to back for ``--seconds``: fresh
  connection, ``--size`` request, 64 B reply.  Data flows client -> server, so the tuned
  (client) side is the sender whose initial window and timers matter.

Rules of the ``on`` arm (remote 198.18.60.2, remote port 5001 only; the bulk flows to 5002
keep the defaults in both arms): initial_cwnd 48 (a 64 KiB request in one flight),
rto_min_ms 10, syn_rto_ms 50, delack_max_ms 5.  ``--flow-aware`` adds
``peer_long_flows_gt: 0`` (the rule applies only while a long flow to the server exists).

Measured per flow: completion time (connect start -> reply received), connect time,
retransmissions (TCP_INFO).  Per run: p50/p90/p99 of flow completion time, flows/s; long
flows: goodput (tcpi_bytes_acked over the short-flow window), retransmissions.  Arms
interleaved with alternating order, ``--repeats`` pairs per loss level; medians, min-max
and on/off ratios.  It reports; it does not pass or fail.

Run as root with /usr/bin/python3 (bcc).  Results: benchmarks/results/tcp_tuning_gain.{json,md}.
"""
import argparse
import json
import multiprocessing
import os
import platform
import selectors
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "collections"))

NS_C, NS_S = "nsbench-gain-c", "nsbench-gain-s"
VETH_C, VETH_S = "vgain-c", "vgain-s"
ADDR_C, ADDR_S = "198.18.60.1", "198.18.60.2"
SHORT_PORT, LONG_PORT = 5001, 5002
REPLY = 64
STATE = "/tmp/netstack-bench-gain"
TUNER = "bench_gain_tuner"
LOSS_SETS = {"bench_gain_loss_s": (NS_S, VETH_S), "bench_gain_loss_c": (NS_C, VETH_C)}
TCP_INFO = 11
SO_MAX_PACING_RATE = 47


def tcp_info(s):
    raw = s.getsockopt(socket.IPPROTO_TCP, TCP_INFO, 232)
    out = {"total_retrans": struct.unpack_from("I", raw, 100)[0]}
    if len(raw) >= 128:
        out["bytes_acked"] = struct.unpack_from("Q", raw, 120)[0]
    return out


# ------------------------------------------------------------------ server (server netns)

def serve(size):
    """Selector loop: short port reads `size` bytes, replies, closes; long port discards."""
    sel = selectors.DefaultSelector()
    for port in (SHORT_PORT, LONG_PORT):
        lst = socket.socket()
        lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lst.bind((ADDR_S, port))
        lst.listen(4096)
        lst.setblocking(False)
        sel.register(lst, selectors.EVENT_READ, ("listen", port))
    print("ready", flush=True)
    buf = bytearray(1 << 18)
    reply = b"r" * REPLY
    while True:
        for key, _ev in sel.select(1.0):
            kind, data = key.data
            sock = key.fileobj
            if kind == "listen":
                while True:
                    try:
                        c, _a = sock.accept()
                    except (BlockingIOError, InterruptedError):
                        break
                    c.setblocking(False)
                    sel.register(c, selectors.EVENT_READ, ("short", [0]) if data == SHORT_PORT else ("long", None))
                continue
            try:
                n = sock.recv_into(buf)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                n = 0
            if n == 0:
                sel.unregister(sock)
                sock.close()
                continue
            if kind == "short":
                data[0] += n
                if data[0] >= size:
                    sel.unregister(sock)
                    sock.setblocking(True)
                    sock.settimeout(10)
                    try:
                        sock.sendall(reply)
                    except OSError:
                        pass
                    sock.close()


# ------------------------------------------------------------------ client (client netns, one cgroup)

def short_worker(t_start, seconds, size, q):
    payload = b"q" * size
    flows = []
    errors = 0
    while time.monotonic() < t_start:
        time.sleep(0.005)
    end = t_start + seconds
    while time.monotonic() < end:
        t0 = time.perf_counter()
        s = socket.socket()
        s.settimeout(15)
        try:
            s.connect((ADDR_S, SHORT_PORT))
            t1 = time.perf_counter()
            s.sendall(payload)
            got = 0
            while got < REPLY:
                d = s.recv(REPLY - got)
                if not d:
                    break
                got += len(d)
            t2 = time.perf_counter()
            if got < REPLY:
                errors += 1
            else:
                flows.append(((t2 - t0) * 1e3, (t1 - t0) * 1e3, tcp_info(s)["total_retrans"]))
        except OSError:
            errors += 1
        finally:
            s.close()
    q.put({"flows": flows, "errors": errors})


def long_worker(n, mbit, t_start, seconds, q):
    socks = []
    stop = threading.Event()

    def pump(s):
        chunk = b"b" * (1 << 18)
        while not stop.is_set():
            try:
                s.sendall(chunk)
            except OSError:
                return

    threads = []
    for _i in range(n):
        s = socket.socket()
        if mbit:
            s.setsockopt(socket.SOL_SOCKET, SO_MAX_PACING_RATE, int(mbit * 1e6 / 8))
        s.connect((ADDR_S, LONG_PORT))
        s.settimeout(5)
        socks.append(s)
        t = threading.Thread(target=pump, args=(s,), daemon=True)
        t.start()
        threads.append(t)
    while time.monotonic() < t_start:
        time.sleep(0.005)
    a = [tcp_info(s) for s in socks]
    t0 = time.monotonic()
    time.sleep(max(0.0, t_start + seconds - time.monotonic()))
    b = [tcp_info(s) for s in socks]
    dt = time.monotonic() - t0
    stop.set()
    for s in socks:
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    for t in threads:
        t.join(5)
    for s in socks:
        s.close()
    q.put({"mbit": [(y["bytes_acked"] - x["bytes_acked"]) * 8 / dt / 1e6 for x, y in zip(a, b)],
           "retrans": [y["total_retrans"] - x["total_retrans"] for x, y in zip(a, b)]})


def client(cgroup, seconds, size, short_procs, nlong, mbit, warm):
    """Runs in the client netns (via nsenter); joins `cgroup` before any socket exists."""
    with open(os.path.join(cgroup, "cgroup.procs"), "w") as f:
        f.write(str(os.getpid()))
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    t_start = time.monotonic() + warm
    procs = [ctx.Process(target=long_worker, args=(nlong, mbit, t_start, seconds, q))] if nlong else []
    procs += [ctx.Process(target=short_worker, args=(t_start, seconds, size, q)) for _i in range(short_procs)]
    for p in procs:
        p.start()
    out = {"flows": [], "errors": 0, "long_mbit": [], "long_retrans": []}
    for _p in procs:
        r = q.get(timeout=warm + seconds + 120)
        if "flows" in r:
            out["flows"] += r["flows"]
            out["errors"] += r["errors"]
        else:
            out["long_mbit"] += r["mbit"]
            out["long_retrans"] += r["retrans"]
    for p in procs:
        p.join(10)
    print(json.dumps(out))


# ------------------------------------------------------------------ lab

def sh(*argv, check=True):
    r = subprocess.run(list(argv), capture_output=True, text=True, timeout=60)
    if check and r.returncode != 0:
        raise RuntimeError("%s: %s" % (" ".join(argv), r.stderr.strip()))
    return r.stdout


def in_ns(ns, *argv):
    return ["nsenter", "--net=/run/netns/%s" % ns] + list(argv)


def make_lab():
    sh("ip", "netns", "add", NS_C)
    sh("ip", "netns", "add", NS_S)
    sh("ip", "link", "add", VETH_C, "netns", NS_C, "type", "veth", "peer", "name", VETH_S, "netns", NS_S)
    for ns, dev, addr in ((NS_C, VETH_C, ADDR_C), (NS_S, VETH_S, ADDR_S)):
        sh("ip", "-n", ns, "addr", "add", addr + "/30", "dev", dev)
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        # One MSS per skb: with GSO a drop would take out a whole 64 KiB batch at once.
        sh("ip", "-n", ns, "link", "set", dev, "gso_max_segs", "1")
        sh("ip", "-n", ns, "link", "set", dev, "up")
    # Plenty of ephemeral ports; the server closes first, so TIME_WAIT sits on the server side.
    sh(*in_ns(NS_C, "sysctl", "-q", "-w", "net.ipv4.ip_local_port_range=10000 65000"))
    sh(*in_ns(NS_C, "sysctl", "-q", "-w", "net.ipv4.tcp_tw_reuse=1"))
    sh(*in_ns(NS_S, "sysctl", "-q", "-w", "net.core.somaxconn=4096"))


def remove_lab():
    for ns in (NS_C, NS_S):
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


NETSTAT = ("TcpExt:TCPSynRetrans", "TcpExt:TCPLossProbes", "TcpExt:TCPTimeouts", "Tcp:RetransSegs",
           "TcpExt:TCPSpuriousRTOs", "TcpExt:TCPLostRetransmit")


def netstat(ns):
    """Counters of the client namespace (/proc/net/{snmp,netstat} read from inside it)."""
    out = {}
    text = sh(*in_ns(ns, "cat", "/proc/net/snmp", "/proc/net/netstat"))
    lines = text.splitlines()
    for head, vals in zip(lines[0::2], lines[1::2]):
        h, v = head.split(), vals.split()
        if h and v and h[0] == v[0]:
            for k, x in zip(h[1:], v[1:]):
                out[h[0] + k] = int(x) if x.lstrip("-").isdigit() else 0
    return {k: out.get(k, 0) for k in NETSTAT}


def pct(v, p):
    v = sorted(v)
    if not v:
        return float("nan")
    k = (len(v) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def summarise_run(r, seconds):
    fct = [f[0] for f in r["flows"]]
    conn = [f[1] for f in r["flows"]]
    return {
        "flows": len(fct), "flows_per_s": len(fct) / seconds, "errors": r["errors"],
        "fct_p50_ms": pct(fct, 50), "fct_p90_ms": pct(fct, 90), "fct_p99_ms": pct(fct, 99),
        "fct_mean_ms": statistics.fmean(fct) if fct else float("nan"),
        "conn_p99_ms": pct(conn, 99),
        "retrans_flows_pct": 100.0 * sum(1 for f in r["flows"] if f[2]) / max(1, len(fct)),
        "retrans_per_flow": sum(f[2] for f in r["flows"]) / max(1, len(fct)),
        "long_mbit": sum(r["long_mbit"]), "long_retrans": sum(r["long_retrans"]),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--worker", choices=["server", "client"], help=argparse.SUPPRESS)
    ap.add_argument("--cgroup", help=argparse.SUPPRESS)
    ap.add_argument("--loss", default="0,0.01",
                    help="comma-separated drop probabilities per direction; 0 is the control")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=8.0, help="short-flow window per run")
    ap.add_argument("--warm", type=float, default=1.0, help="long flows run this long before the window")
    ap.add_argument("--size", type=int, default=65536, help="short-flow request bytes")
    ap.add_argument("--short-procs", type=int, default=2)
    ap.add_argument("--long", type=int, default=2, help="bulk senders")
    ap.add_argument("--long-mbit", type=float, default=100.0, help="pacing cap per bulk sender (0: none)")
    ap.add_argument("--flow-aware", action="store_true", help="rule only while a long flow to the server exists")
    ap.add_argument("--set", dest="rule_set", help="JSON object replacing the rule's settings (ablations)")
    ap.add_argument("--cc", help="default congestion control of both namespaces (default: inherited from the host)")
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results"))
    ap.add_argument("--tag", default="")
    a = ap.parse_args()
    if a.worker == "server":
        serve(a.size)
        return
    if a.worker == "client":
        client(a.cgroup, a.seconds, a.size, a.short_procs, a.long, a.long_mbit, a.warm)
        return

    from ansible_collections.netstack.tuning.plugins.module_utils.bpf import program as bpf
    from ansible_collections.netstack.tuning.plugins.module_utils.tcp_tuning import policy as tcppolicy
    losses = [float(x) for x in a.loss.split(",")]
    rule = {"name": "short-rpc", "match": {"remote": ADDR_S + "/32", "remote_ports": SHORT_PORT},
            "set": {"initial_cwnd": 48, "rto_min_ms": 10, "syn_rto_ms": 50, "delack_max_ms": 5}}
    if a.flow_aware:
        rule["match"]["peer_long_flows_gt"] = 0
    if a.rule_set:
        rule["set"] = json.loads(a.rule_set)
    root = bpf.cgroup2_root()
    cg = {"on": os.path.join(root, "netstack-bench-gain-on"), "off": os.path.join(root, "netstack-bench-gain-off")}
    eng = bpf.Engine(STATE)
    srv = None
    runs = {loss: {"on": [], "off": []} for loss in losses}
    loss_stats = {}
    children = []
    old_term = signal.signal(signal.SIGTERM, lambda *_x: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        remove_lab()
        make_lab()
        if a.cc:
            for ns in (NS_C, NS_S):
                sh(*in_ns(ns, "sysctl", "-q", "-w", "net.ipv4.tcp_congestion_control=" + a.cc))
        for d in cg.values():
            os.makedirs(d, exist_ok=True)
        # loss emulators: ingress of both veth ends
        lsrc = open(os.path.join(ROOT, "bpf", "netpath.bpf.c")).read()
        for name, (ns, dev) in LOSS_SETS.items():
            eng.present(name, lsrc, [{"function": "loss_emulator", "type": "sched_cls", "interface": dev,
                                      "direction": "ingress", "netns": ns}])
        # tcp_tuner on the `on` cgroup
        tsrc = open(os.path.join(ROOT, "bpf", "tcp_tuning.bpf.c")).read()
        eng.present(TUNER, tsrc, [{"function": "tcp_tuner", "type": "sock_ops", "cgroup": cg["on"]}])
        pol = tcppolicy.Policy(os.path.join(bpf.PIN_ROOT, TUNER))
        norm, enc, flags = tcppolicy.plan([rule], 1 << 20, None, tcppolicy.kernel_hz() or 250)
        pol.write(enc, flags, 1 << 20)
        default_cc = sh(*in_ns(NS_C, "sysctl", "-n", "net.ipv4.tcp_congestion_control")).strip()
        srv = subprocess.Popen(in_ns(NS_S, sys.executable, os.path.abspath(__file__), "--worker", "server",
                                     "--size", str(a.size)), stdout=subprocess.PIPE, text=True)
        children.append(srv)
        if srv.stdout.readline().strip() != "ready":
            raise RuntimeError("server did not start")

        def set_loss(p):
            thr = min(int(round(p * (1 << 32))), (1 << 32) - 1)
            for name in LOSS_SETS:
                with bpf.Map.pinned(os.path.join(bpf.PIN_ROOT, name, "maps", "cfg")) as m:
                    m.update(struct.pack("<I", 0), struct.pack("<II", thr, 1))
                with bpf.Map.pinned(os.path.join(bpf.PIN_ROOT, name, "maps", "stats")) as m:
                    m.update(struct.pack("<I", 0), b"\0" * 16)  # replicated to every CPU

        def read_loss():
            out = {}
            for name in LOSS_SETS:
                with bpf.Map.pinned(os.path.join(bpf.PIN_ROOT, name, "maps", "stats")) as m:
                    seen = dropped = 0
                    for v in m.per_cpu(m.lookup(struct.pack("<I", 0))):
                        s, d = struct.unpack("<QQ", v[:16])
                        seen += s
                        dropped += d
                out[name] = {"seen": seen, "dropped": dropped, "rate": dropped / seen if seen else 0.0}
            return out

        def run_arm(arm):
            argv = in_ns(NS_C, sys.executable, os.path.abspath(__file__), "--worker", "client", "--cgroup", cg[arm],
                         "--seconds", str(a.seconds), "--warm", str(a.warm), "--size", str(a.size),
                         "--short-procs", str(a.short_procs), "--long", str(a.long), "--long-mbit", str(a.long_mbit))
            before = netstat(NS_C)
            p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            children.append(p)
            out, err = p.communicate(timeout=a.warm + a.seconds + 180)
            children.remove(p)
            if p.returncode != 0:
                raise RuntimeError("client failed: %s" % err.strip()[-2000:])
            after = netstat(NS_C)
            r = summarise_run(json.loads(out), a.seconds)
            r.update({"ns_" + k.split(":")[1]: after[k] - before[k] for k in NETSTAT})
            r.update({"ns_" + k.split(":")[1] + "_per_kflow": (after[k] - before[k]) * 1000.0 / max(1, r["flows"])
                      for k in NETSTAT})
            return r

        for loss in losses:
            set_loss(loss)
            run_arm("off")  # warm-up, discarded
            for i in range(a.repeats):
                for arm in (("on", "off") if i % 2 == 0 else ("off", "on")):
                    r = run_arm(arm)
                    runs[loss][arm].append(r)
                    print("loss %.3f rep %d %-3s p50 %.2f p99 %.2f ms flows %d long %.0f Mbit/s"
                          % (loss, i, arm, r["fct_p50_ms"], r["fct_p99_ms"], r["flows"], r["long_mbit"]),
                          flush=True)
            loss_stats[loss] = read_loss()
        hits = pol.counters(1)[0]
        pol.close()
    finally:
        signal.signal(signal.SIGTERM, old_term)
        for p in children:
            if p.poll() is None:
                p.kill()
                p.wait(10)
        for d in cg.values():  # clients are gone; anything left in the cgroups is ours
            try:
                with open(os.path.join(d, "cgroup.procs")) as f:
                    for pid in f.read().split():
                        os.kill(int(pid), signal.SIGKILL)
            except (OSError, ValueError):
                pass
        for name in list(LOSS_SETS) + [TUNER]:
            try:
                eng.absent(name)
            except Exception as e:  # keep cleaning up
                print("cleanup %s: %s" % (name, e), file=sys.stderr)
        remove_lab()
        for d in cg.values():
            for _i in range(50):
                try:
                    os.rmdir(d)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.1)
        shutil.rmtree(STATE, ignore_errors=True)

    report(a, losses, runs, loss_stats, hits, rule, default_cc)


KEYS = [("fct_p50_ms", "FCT p50 ms"), ("fct_p90_ms", "FCT p90 ms"), ("fct_p99_ms", "FCT p99 ms"),
        ("fct_mean_ms", "FCT mean ms"), ("conn_p99_ms", "connect p99 ms"), ("flows_per_s", "short flows/s"),
        ("retrans_flows_pct", "short flows with a retransmit %"), ("retrans_per_flow", "retransmits per short flow"),
        ("ns_TCPSynRetrans_per_kflow", "SYN retransmits per 1000 short flows"),
        ("long_mbit", "long flows Mbit/s (sum)"), ("long_retrans", "long-flow retransmits")]


def report(a, losses, runs, loss_stats, hits, rule, default_cc):
    res = {"benchmark": "tcp_tuning_gain", "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "kernel": platform.release(), "cpus": os.cpu_count(), "default_cc": default_cc,
           "params": {k: v for k, v in vars(a).items() if k not in ("worker", "cgroup", "out")},
           "rule": rule, "rule_hits": hits, "levels": []}
    md = ["# tcp_tuning_gain: short-flow completion time on a lossy path, tcp_tuner rules vs defaults", "",
          "Run %s on kernel %s, %d CPUs (shared with other work on this VM). Two netns joined by a veth pair "
          "(198.18.60.1 -> .2), no added delay (veth RTT ~tens of us; this kernel has no netem). Loss: "
          "bpf/netpath.bpf.c on the ingress of both veth ends (each direction, TCP packets, independent). "
          "Short flows: fresh connection, %d B request, 64 B reply, server closes; %d client processes back to back "
          "for %.0f s per run. Long flows: %d bulk senders to another port, %s, running through the window. "
          "Client default congestion control: %s. Arm `on`: tcp_tuner on the client's cgroup with rule `%s` "
          "(%s; bulk flows do not match); arm `off`: no program. %d repeats per arm and loss level, arms "
          "interleaved (order alternating), one discarded warm-up run per level."
          % (res["ts"], res["kernel"], res["cpus"], a.size, a.short_procs, a.seconds, a.long,
             "paced to %.0f Mbit/s each" % a.long_mbit if a.long_mbit else "unpaced", default_cc, rule["name"],
             json.dumps(rule["match"]) + " -> " + json.dumps(rule["set"]), a.repeats), ""]
    for loss in losses:
        lv = {"loss": loss, "runs": runs[loss], "measured_loss": loss_stats.get(loss), "median": {}, "min": {},
              "max": {}, "ratio_of_medians": {}, "pair_ratio_median": {}}
        for k, _t in KEYS:
            for arm in ("on", "off"):
                vals = [r[k] for r in runs[loss][arm]]
                lv["median"].setdefault(arm, {})[k] = statistics.median(vals)
                lv["min"].setdefault(arm, {})[k] = min(vals)
                lv["max"].setdefault(arm, {})[k] = max(vals)
            off = lv["median"]["off"][k]
            lv["ratio_of_medians"][k] = lv["median"]["on"][k] / off if off else None
            pr = [x[k] / y[k] for x, y in zip(runs[loss]["on"], runs[loss]["off"]) if y[k]]
            lv["pair_ratio_median"][k] = statistics.median(pr) if pr else None
        res["levels"].append(lv)
        ml = loss_stats.get(loss) or {}
        meas = ", ".join("%s %.3f%% of %d" % ("server ingress" if n.endswith("_s") else "client ingress",
                                               100 * v["rate"], v["seen"]) for n, v in ml.items())
        md += ["## loss %.2f%% per direction" % (100 * loss), "",
               ("Measured drops: %s." % (meas or "none")) if loss else "Emulator attached, dropping nothing.", "",
               "| metric | off (defaults) median [min-max] | on (rules) median [min-max] | on/off (medians) "
               "| on/off per pair, median |", "|---|---|---|---|---|"]
        for k, t in KEYS:
            fmt = "%.1f" if k.startswith("ns_") else "%.2f"
            if k in ("flows_per_s", "long_mbit", "long_retrans"):
                fmt = "%.0f"
            cells = [(fmt + " [" + fmt + "-" + fmt + "]") % (lv["median"][arm][k], lv["min"][arm][k], lv["max"][arm][k])
                     for arm in ("off", "on")]
            ratios = ["%.3f" % x if x is not None else "-"
                      for x in (lv["ratio_of_medians"][k], lv["pair_ratio_median"][k])]
            md.append("| %s | %s | %s | %s | %s |" % tuple([t] + cells + ratios))
        md.append("")
    md += ["Rule hits counted by the program (short-flow connections of the `on` arm): %d (setsockopt errors %d)."
           % (hits["hits"], hits["errors"]),
           "Reading the tail: without a rule a lost SYN or SYN-ACK costs the kernel's 1 s initial RTO and a lost "
           "tail segment the 200 ms minimum RTO; `connect p99` shows how much of FCT p99 is the handshake. "
           "Ablations (one setting at a time): `--set '{\"syn_rto_ms\": 50}' --tag _only_syn` etc.",
           "At loss 0 the retransmits come from reordering, not drops: on this 2-CPU host a veth flow's packets "
           "can pass through both CPUs' backlogs (checked once: client TCPSACKReorder/TCPDSACKUndo, server "
           "TCPOFOQueue, softnet drops 0); the 64 KiB request then sees spurious fast retransmits that DSACK "
           "undoes. With initial_cwnd 48 it leaves in one flight from one CPU and is not reordered.",
           "Retransmits per short flow: the flow's own tcpi_total_retrans (SYN retransmits included). SYN "
           "retransmits per 1000 short flows: TcpExt.TCPSynRetrans of the client namespace over the run (the "
           "long flows connect once, before the window); the JSON also has the run's raw deltas of RetransSegs, "
           "TCPTimeouts, TCPLossProbes, TCPLostRetransmit, which mix short and long flows.",
           "Percentiles are per run (hundreds to thousands of flows each: a closed loop, so an arm with slow flows "
           "completes fewer; counts per run are in the JSON); the table gives the median run and the range over runs.",
           "This benchmark reports; it does not pass or fail.", ""]
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "tcp_tuning_gain%s.json" % a.tag), "w") as f:
        json.dump(res, f, indent=1, default=str)
    with open(os.path.join(a.out, "tcp_tuning_gain%s.md" % a.tag), "w") as f:
        f.write("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
