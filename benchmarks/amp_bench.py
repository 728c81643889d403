#!/usr/bin/python3
"""Benchmark: AMP (capability 6) - redis-server under redis-benchmark with a noisy neighbour.

Traffic goes over a veth pair between two network namespaces this benchmark creates
(198.18.7.1/24 server side, 198.18.7.2/24 client side): redis-server in one, redis-benchmark in
the other, and stress-ng (``--cpu S``) as the noisy neighbour.  Four arms, interleaved per
repeat (the order rotates), each set up before and torn down after its own measurement:

  default     nothing pinned, RPS off (rps_cpus 0 on both veth ends, no RFS)
  irqbalance  the real ``irqbalance --foreground`` running, plus RPS on both veth ends spread
              over all experiment CPUs (what an irqbalance-style "spread everything" gives;
              veth has no IRQs for irqbalance to move); IRQ affinities it moved are put back
  static      amp.Partition.present with net_cpus = --net-cpus; redis-server, the client and
              stress-ng each in an application cpuset cgroup of the partition (their PIDs
              written to the cgroup's cgroup.procs); Partition.absent afterwards
  dynamic     netstack-agent (agent.main run --config FILE --no-confd) with the amp section
              and its controller (interval 1 s): the agent applies the same partition and may
              resize it; its JSON-lines log and the controller's signals are kept

The client is placed in the APPLICATION set in static/dynamic: it stands in for remote
clients, which in production would not use this host's CPUs at all.  Putting it on the
network CPUs would hand the partitioned arms an application CPU the others do not get and
muddle the network set's softirq load; the application set is the honest (pessimistic) place.

Measured per run: ops/s and p50/p99/p99.9 latency (redis-benchmark's own summary; p99.9 from
its percentile distribution), ops per CPU-second (requests / (CPU seconds of redis-server +
softirq time on the experiment CPUs) over the run, from /proc/<pid>/stat and /proc/stat),
plus where the softirq time and NET_RX softirqs landed per CPU, the client's and the noisy
neighbour's CPU seconds, and each process's Cpus_allowed_list.

The experiment uses CPUs 0..N-1 only (--cpus N): every process is started with that
affinity, RPS masks cover only them, and when N is less than the online CPUs the benchmark's
private mount namespace shows a cpu/online of 0-(N-1) so the partition and the agent plan
within it.  Host state: the benchmark runs in a private mount namespace (unshare -m; its
sysfs views and a tmpfs over /run/netstack vanish with it); namespaces, cgroups
(netstack-bench-<pid>-*), the partitions (private state_dir), irqbalance, IRQ affinities and
the rps_cpus written by hand are all removed or restored in a finally block, Ctrl-C included.
Must run as root.  Results: benchmarks/results/amp.json and amp.md.
"""
import argparse
import datetime
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLL = os.path.join(ROOT, "collections")
sys.path.insert(0, COLL)

from figures import fmt, fmt_spread, spread, fmt_ratio, tool_versions  # noqa: E402
from ansible_collections.netstack.tuning.plugins.module_utils.amp import partition as amp  # noqa: E402
from ansible_collections.netstack.tuning.plugins.module_utils.core.cpus import (  # noqa: E402
    cpus_to_mask, format_cpulist, parse_cpulist)

ARMS = ("default", "irqbalance", "static", "dynamic")
CPUSET = "/sys/fs/cgroup/cpuset"
SRV_ADDR, CLI_ADDR, PREFIX = "198.18.7.1", "198.18.7.2", 24
REDIS_PORT = 6379
KEYSPACE = 100000
DATA_SIZE = 64
HZ = os.sysconf("SC_CLK_TCK")
AGENT_CODE = ("import sys; from ansible_collections.netstack.tuning.plugins.module_utils.agent.cli import main; "
              "sys.exit(main())")
ENV_FLAG = "NETSTACK_AMP_BENCH_UNSHARED"


class Interrupted(Exception):
    pass


def _on_signal(signum, _frame):
    raise Interrupted("signal %d" % signum)


# ------------------------------------------------------------------------------ small helpers
def sh(argv, check=True, timeout=60):
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                       timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError("%s exited %d: %s" % (" ".join(argv), r.returncode, r.stdout[-2000:]))
    return r.stdout


def read(path, default=None):
    try:
        with open(path) as f:
            return f.read()
    except (IOError, OSError):
        return default


def write(path, text):
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def cpu_stat():
    """/proc/stat per CPU -> {cpu: {"busy", "softirq", "irq", "total"}} in seconds."""
    out = {}
    for line in read("/proc/stat", "").splitlines():
        if not line.startswith("cpu") or line.startswith("cpu "):
            continue
        f = line.split()
        v = [int(x) for x in f[1:]] + [0] * 10
        user, nice, system, idle, iowait, irq, softirq, steal = v[:8]
        total = user + nice + system + idle + iowait + irq + softirq + steal
        out[int(f[0][3:])] = {"busy": (total - idle - iowait) / float(HZ), "softirq": softirq / float(HZ),
                              "irq": irq / float(HZ), "total": total / float(HZ)}
    return out


def net_rx_counts():
    lines = read("/proc/softirqs", "").splitlines()
    cpus = [int(h[3:]) for h in lines[0].split()]
    for line in lines[1:]:
        name, _s, rest = line.partition(":")
        if name.strip() == "NET_RX":
            return dict(zip(cpus, (int(x) for x in rest.split())))
    return {}


def proc_cpu_s(pid):
    """utime+stime of a process (all its threads), seconds; None when it is gone."""
    s = read("/proc/%d/stat" % pid)
    if not s:
        return None
    f = s[s.rindex(")") + 2:].split()
    return (int(f[11]) + int(f[12])) / float(HZ)


def children(pid):
    out = []
    for t in os.listdir("/proc/%d/task" % pid) if os.path.isdir("/proc/%d/task" % pid) else []:
        out += [int(x) for x in (read("/proc/%d/task/%s/children" % (pid, t), "") or "").split()]
    return out


def tree_cpu_s(pid):
    """CPU seconds of a process and its (live) descendants."""
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        c = proc_cpu_s(p)
        if c is not None:
            total += c
            todo += children(p)
    return total


def busiest(window=1.0, top=4, floor=0.05):
    """Processes other than this one using the most CPU over ``window`` seconds, as text."""
    def snap():
        out = {}
        for d in os.listdir("/proc"):
            if d.isdigit() and int(d) != os.getpid():
                c = proc_cpu_s(int(d))
                if c is not None:
                    out[int(d)] = c
        return out
    a = snap()
    time.sleep(window)
    b = snap()
    use = sorted(((b[p] - a[p]) / window, p) for p in b if p in a)
    use = [(u, p) for u, p in reversed(use) if u >= floor][:top]
    return ", ".join("%s (pid %d) %.0f%% of a CPU" % ((read("/proc/%d/comm" % p, "?") or "?").strip(), p, 100 * u)
                     for u, p in use) or "none above %.0f%% of a CPU" % (100 * floor)


def allowed(pid):
    m = re.search(r"^Cpus_allowed_list:\s*(\S+)", read("/proc/%d/status" % pid, "") or "", re.M)
    return m.group(1) if m else None


def cg_join(cgroup_dir):
    """preexec_fn: put the starting process into a cgroup (before exec, so all it runs is in)."""
    def f():
        if cgroup_dir:
            write(os.path.join(cgroup_dir, "cgroup.procs"), str(os.getpid()))
    return f


def move_to(cgroup_dir, pid):
    write(os.path.join(cgroup_dir, "cgroup.procs"), str(pid))


def stop(p, sig=signal.SIGTERM, wait=10):
    if p is None or p.poll() is not None:
        return
    try:
        os.killpg(p.pid, sig)
    except OSError:
        p.send_signal(sig)
    try:
        p.wait(timeout=wait)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except OSError:
            p.kill()
        p.wait()










# ------------------------------------------------------------------------------ redis-benchmark output
PCT_RE = re.compile(r"^\s*([\d.]+)% <= ([\d.]+) milliseconds \(cumulative count (\d+)\)")


def parse_redis_benchmark(out):
    """Throughput, latency summary and p99.9 from redis-benchmark 7's default (non -q, non --csv)
    report.  p99.9: the first point of its "Latency by percentile distribution" (an HDR histogram,
    3 significant digits) whose cumulative count reaches 99.9 % of the requests."""
    text = out.replace("\r", "\n")
    res = {}
    m = re.search(r"throughput summary: ([\d.]+) requests per second", text)
    if not m:
        raise RuntimeError("no throughput summary in redis-benchmark output: %s" % text[-1500:])
    res["ops_per_s"] = float(m.group(1))
    m = re.search(r"avg\s+min\s+p50\s+p95\s+p99\s+max\s*\n\s*([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+"
                  r"([\d.]+)\s+([\d.]+)", text)
    if m:
        for k, v in zip(("avg_ms", "min_ms", "p50_ms", "p95_ms", "p99_ms", "max_ms"), m.groups()):
            res[k] = float(v)
    sec = text.split("Latency by percentile distribution:", 1)
    pts = []
    if len(sec) == 2:
        for line in sec[1].split("Cumulative distribution of latencies:", 1)[0].splitlines():
            mm = PCT_RE.match(line)
            if mm:
                pts.append((float(mm.group(1)), float(mm.group(2)), int(mm.group(3))))
    if pts:
        total = pts[-1][2]
        want = 0.999 * total
        res["p999_ms"] = next(v for _p, v, c in pts if c >= want)
    m = re.search(r"(\d+) requests completed in ([\d.]+) seconds", text)
    if m:
        res["requests"], res["client_wall_s"] = int(m.group(1)), float(m.group(2))
    return res


# ------------------------------------------------------------------------------ the lab
class Lab(object):
    """Namespaces, veth pair, redis-server, cgroups and the arms' host state."""

    def __init__(self, args, tmp):
        self.a = args
        self.tmp = tmp
        tag = str(os.getpid())
        self.tag = tag
        self.ns_srv, self.ns_cli = "netstack-bench-%s-srv" % tag, "netstack-bench-%s-cli" % tag
        self.if_srv, self.if_cli = ("nsb%ss" % tag)[:15], ("nsb%sc" % tag)[:15]
        self.cpus = list(range(args.cpus))
        self.cpulist = format_cpulist(self.cpus)
        self.cg_names = {"redis": "netstack-bench-%s-redis" % tag, "client": "netstack-bench-%s-client" % tag,
                         "noise": "netstack-bench-%s-noise" % tag}
        self.state_dir = os.path.join(tmp, "state")
        self.redis = None
        self.irqbalance = None
        self.agent = None
        self.irq_saved = None
        self.rps_saved = {}
        self.ns_made = []
        self.partitions = {}
        self.events = []
        self.agent_log = os.path.join(tmp, "agent.log")
        self.agent_textfile = os.path.join(tmp, "agent.prom")
        self.irqbalance_log = os.path.join(tmp, "irqbalance.log")
        self.irqbalance_moves = []
        self.mounts = []

    # -- the private mount namespace's views ------------------------------------------------
    def setup_mounts(self):
        online = parse_cpulist(read("/sys/devices/system/cpu/online", "").strip())
        if self.a.cpus < len(online):
            f = os.path.join(self.tmp, "cpu-online")
            with open(f, "w") as fh:
                fh.write(self.cpulist + "\n")
            sh(["mount", "--bind", f, "/sys/devices/system/cpu/online"])
            self.mounts.append("/sys/devices/system/cpu/online")
        if not os.path.isdir("/run/netstack"):
            os.makedirs("/run/netstack", 0o755)
            self.events.append("created /run/netstack (run directly in a mount namespace: left in place, empty)")
        # the agent writes its pid and status files there: keep the host's untouched
        sh(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", "/run/netstack"])

    def setup_net(self):
        a = self
        for ns in (a.ns_srv, a.ns_cli):
            sh(["ip", "netns", "add", ns])
            self.ns_made.append(ns)
        sh(["ip", "link", "add", a.if_srv, "type", "veth", "peer", "name", a.if_cli])
        sh(["ip", "link", "set", a.if_srv, "netns", a.ns_srv])
        sh(["ip", "link", "set", a.if_cli, "netns", a.ns_cli])
        for ns, ifn, addr in ((a.ns_srv, a.if_srv, SRV_ADDR), (a.ns_cli, a.if_cli, CLI_ADDR)):
            sh(["ip", "-n", ns, "addr", "add", "%s/%d" % (addr, PREFIX), "dev", ifn])
            sh(["ip", "-n", ns, "link", "set", "lo", "up"])
            sh(["ip", "-n", ns, "link", "set", ifn, "up"])
        # sysfs sees only the mounting process's network namespace: mount each namespace's
        # sysfs (nsenter --net keeps this mount namespace) and show both veth ends under
        # /sys/class/net, so amp.nic_info and the kernel writes find them by name
        links = {}
        for ns, ifn in ((a.ns_srv, a.if_srv), (a.ns_cli, a.if_cli)):
            d = os.path.join(self.tmp, "sys-" + ns)
            os.makedirs(d)
            sh(["nsenter", "--net=/run/netns/%s" % ns, "mount", "-t", "sysfs", "sysfs", d])
            self.mounts.append(d)
            links[ifn] = os.path.join(d, "class", "net", ifn)
        sh(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", "/sys/class/net"])
        self.mounts.append("/sys/class/net")
        for ifn, target in links.items():
            os.symlink(target, os.path.join("/sys/class/net", ifn))
        self.rx_queues = {}
        for ifn in (a.if_srv, a.if_cli):
            q = sorted(x for x in os.listdir("/sys/class/net/%s/queues" % ifn) if x.startswith("rx-"))
            self.rx_queues[ifn] = q

    def rps_files(self):
        return ["/sys/class/net/%s/queues/%s/rps_cpus" % (ifn, q) for ifn, qs in sorted(self.rx_queues.items())
                for q in qs]

    def rps_state(self):
        out = dict((f, (read(f, "") or "").strip()) for f in self.rps_files())
        for f in self.rps_files():
            fc = f.replace("rps_cpus", "rps_flow_cnt")
            out[fc] = (read(fc, "") or "").strip()
        out["net.core.rps_sock_flow_entries"] = (read("/proc/sys/net/core/rps_sock_flow_entries", "") or "").strip()
        return out

    def start_redis(self):
        argv = ["ip", "netns", "exec", self.ns_srv, "taskset", "-c", self.cpulist, "redis-server",
                "--bind", SRV_ADDR, "--port", str(REDIS_PORT), "--save", "", "--appendonly", "no",
                "--protected-mode", "no", "--daemonize", "no", "--dir", self.tmp, "--maxclients", "10000",
                "--loglevel", "warning"]
        log = open(os.path.join(self.tmp, "redis.log"), "w")
        self.redis = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      start_new_session=True)
        end = time.time() + 15
        while time.time() < end:
            if self.redis.poll() is not None:
                raise RuntimeError("redis-server exited: %s" % read(os.path.join(self.tmp, "redis.log")))
            r = subprocess.run(["ip", "netns", "exec", self.ns_cli, "redis-cli", "-h", SRV_ADDR, "-p",
                                str(REDIS_PORT), "ping"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               universal_newlines=True)
            if r.stdout.strip() == "PONG":
                break
            time.sleep(0.1)
        else:
            raise RuntimeError("redis-server does not answer over the veth pair")
        # the keyspace GETs hit: the same key:__rand_int__ names redis-benchmark -r uses
        sh(["ip", "netns", "exec", self.ns_cli, "redis-benchmark", "-h", SRV_ADDR, "-p", str(REDIS_PORT),
            "-t", "set", "-n", str(KEYSPACE * 3), "-r", str(KEYSPACE), "-d", str(DATA_SIZE), "-c", "50", "-P", "16",
            "-q"], timeout=300)
        dbsize = sh(["ip", "netns", "exec", self.ns_cli, "redis-cli", "-h", SRV_ADDR, "-p", str(REDIS_PORT),
                     "dbsize"]).strip()
        self.events.append("redis keyspace preloaded: %s keys of %d B" % (dbsize, DATA_SIZE))

    def cg(self, role):
        return os.path.join(CPUSET, self.cg_names[role])

    # -- arms ----------------------------------------------------------------------------
    def spec(self, name):
        return {"name": name, "interfaces": [self.if_srv, self.if_cli],
                "app_cgroups": [self.cg_names[r] for r in ("redis", "client", "noise")],
                "net_cpus": self.a.net_cpus, "irqbalance": "ignore", "rfs": self.a.rfs == "on"}

    def set_rps(self, mask):
        for f in self.rps_files():
            if f not in self.rps_saved:
                self.rps_saved[f] = (read(f, "") or "").strip()
            write(f, mask)

    def restore_rps(self):
        for f, v in list(self.rps_saved.items()):
            try:
                write(f, v)
                del self.rps_saved[f]
            except OSError as e:
                self.events.append("could not restore %s: %s" % (f, e))

    def save_irqs(self):
        out = {}
        for n in os.listdir("/proc/irq"):
            if n.isdigit():
                v = read("/proc/irq/%s/smp_affinity_list" % n)
                if v is not None:
                    out[n] = v.strip()
        return out

    def restore_irqs(self):
        if self.irq_saved is None:
            return []
        moved = []
        now = self.save_irqs()
        for n, v in sorted(self.irq_saved.items(), key=lambda x: int(x[0])):
            if n in now and now[n] != v:
                moved.append({"irq": int(n), "was": v, "irqbalance_set": now[n]})
                try:
                    write("/proc/irq/%s/smp_affinity_list" % n, v)
                except OSError as e:
                    moved[-1]["restore_error"] = str(e)
        self.irq_saved = None
        return moved

    def arm_up(self, arm, rep):
        """Set the arm's host state up; returns {role: cgroup dir or None} and notes."""
        info = {"cgroups": {"redis": None, "client": None, "noise": None}}
        if arm == "default":
            self.set_rps("0")
        elif arm == "irqbalance":
            self.set_rps(cpus_to_mask(self.cpus, amp.Topology.from_sysfs().possible))
            self.irq_saved = self.save_irqs()
            env = dict(os.environ)
            online = parse_cpulist(read("/sys/devices/system/cpu/possible", "").strip())
            rest = [c for c in online if c not in self.cpus]
            if rest:
                env["IRQBALANCE_BANNED_CPULIST"] = format_cpulist(rest)
            log = open(self.irqbalance_log, "a")
            log.write("--- repeat %d\n" % rep)
            log.flush()
            self.irqbalance = subprocess.Popen(["irqbalance", "--foreground"], stdout=log, stderr=subprocess.STDOUT,
                                               stdin=subprocess.DEVNULL, env=env, start_new_session=True)
            time.sleep(1.0)
            if self.irqbalance.poll() is not None:
                raise RuntimeError("irqbalance exited with %s: %s" % (
                    self.irqbalance.returncode, (read(self.irqbalance_log, "") or "")[-1000:]))
        elif arm == "static":
            name = "netstack-bench-%s-static" % self.tag
            p = amp.Partition(name, state_dir=self.state_dir)
            self.partitions[name] = p
            res = p.present(self.spec(name), source="amp_bench", reason="benchmark static arm")
            info["plan"] = {"net_cpus": res["net_cpus"], "app_cpus": res["app_cpus"],
                            "keys": sorted(res["diff"]["after"]), "warnings": res["warnings"]}
        elif arm == "dynamic":
            name = "netstack-bench-%s-dynamic" % self.tag
            self.partitions[name] = amp.Partition(name, state_dir=self.state_dir)
            cfg = {"interval": 1, "state_dir": self.state_dir, "log": self.agent_log,
                   "metrics": {"port": 0, "textfile": self.agent_textfile},
                   "amp": {"state": "present", "partition": self.spec(name),
                           "controller": {"interval": 1}}}
            cfgf = os.path.join(self.tmp, "agent.json")
            with open(cfgf, "w") as f:
                json.dump(cfg, f, indent=1)
            with open(self.agent_log, "a") as f:
                f.write(json.dumps({"bench": "repeat %d: agent starting" % rep, "ts": round(time.time(), 3)}) + "\n")
            err = open(os.path.join(self.tmp, "agent.stderr"), "a")
            self.agent = subprocess.Popen([sys.executable, "-c", AGENT_CODE, "run", "--config", cfgf, "--no-confd"],
                                          cwd=COLL, stdout=err, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          start_new_session=True)
            p = self.partitions[name]
            end = time.time() + 30
            while time.time() < end and not p.record():
                if self.agent.poll() is not None:
                    raise RuntimeError("netstack-agent exited with %s: %s" % (
                        self.agent.returncode, read(os.path.join(self.tmp, "agent.stderr"), "")[-2000:]))
                time.sleep(0.1)
            rec = p.record()
            if not rec:
                raise RuntimeError("netstack-agent did not apply the partition within 30 s")
            info["plan"] = {"net_cpus": rec["net_cpus"], "app_cpus": rec["app_cpus"]}
        if arm in ("static", "dynamic"):
            for role in ("redis", "client", "noise"):
                info["cgroups"][role] = self.cg(role)
            move_to(self.cg("redis"), self.redis.pid)
        info["rps"] = self.rps_state()
        return info

    def arm_down(self, arm):
        out = {}
        if arm in ("static", "dynamic"):
            move_to(CPUSET, self.redis.pid)
        if arm == "dynamic" and self.agent is not None:
            stop(self.agent, signal.SIGTERM, wait=15)
            out["agent_rc"] = self.agent.returncode
            self.agent = None
        if arm == "irqbalance":
            stop(self.irqbalance, signal.SIGTERM)
            self.irqbalance = None
            out["irqs_moved"] = self.restore_irqs()
        for name, p in list(self.partitions.items()):
            if p.record():
                res = p.absent(source="amp_bench", reason="benchmark arm done")
                out.setdefault("restored", []).extend(res["restored"])
            del self.partitions[name]
        self.restore_rps()
        return out

    # -- one measurement -----------------------------------------------------------------
    def measure(self, arm, cgroups, n, seconds):
        a = self.a
        noise = subprocess.Popen(["taskset", "-c", self.cpulist, "stress-ng", "--cpu", str(a.stress), "--timeout",
                                  "%ds" % int(seconds * 10 + 120), "--metrics-brief"],
                                 stdout=open(os.path.join(self.tmp, "stress.log"), "a"), stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, preexec_fn=cg_join(cgroups["noise"]),
                                 start_new_session=True)
        try:
            time.sleep(1.0)  # the workers are up and spinning
            placement = {"redis": allowed(self.redis.pid), "stress-ng": sorted(set(
                allowed(c) for c in [noise.pid] + children(noise.pid) if allowed(c)))}
            samples = []
            st0, rx0, r0, n0, t0 = cpu_stat(), net_rx_counts(), proc_cpu_s(self.redis.pid), tree_cpu_s(noise.pid), \
                time.time()
            argv = ["ip", "netns", "exec", self.ns_cli, "taskset", "-c", self.cpulist, "redis-benchmark",
                    "-h", SRV_ADDR, "-p", str(REDIS_PORT), "-t", "get", "-n", str(n), "-r", str(KEYSPACE),
                    "-d", str(DATA_SIZE), "-c", str(a.clients), "-P", str(a.pipeline)]
            outf = open(os.path.join(self.tmp, "client.out"), "w+")
            client = subprocess.Popen(argv, stdout=outf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      preexec_fn=cg_join(cgroups["client"]), start_new_session=True)
            poller = None
            stop_poll = threading.Event()
            if arm == "dynamic":
                poller = threading.Thread(target=self._poll_textfile, args=(samples, stop_poll, t0))
                poller.daemon = True
                poller.start()
            time.sleep(0.3)
            placement["client"] = allowed(client.pid)
            try:
                _pid, status, ru = os.wait4(client.pid, 0)
            except BaseException:
                stop(client, signal.SIGKILL)
                raise
            client.returncode = os.waitstatus_to_exitcode(status)
            t1, st1, rx1, r1, n1 = time.time(), cpu_stat(), net_rx_counts(), proc_cpu_s(self.redis.pid), \
                tree_cpu_s(noise.pid)
            stop_poll.set()
            if poller:
                poller.join(3)
            outf.seek(0)
            out = outf.read()
            outf.close()
            if client.returncode != 0:
                raise RuntimeError("redis-benchmark exited %d: %s" % (client.returncode, out[-2000:]))
        finally:
            stop(noise, signal.SIGTERM)
        res = parse_redis_benchmark(out)
        wall = t1 - t0
        per_cpu = {}
        for c in self.cpus:
            per_cpu[str(c)] = {"softirq_s": round(st1[c]["softirq"] - st0[c]["softirq"], 3),
                               "busy_s": round(st1[c]["busy"] - st0[c]["busy"], 3),
                               "net_rx": rx1.get(c, 0) - rx0.get(c, 0)}
        softirq = sum(v["softirq_s"] for v in per_cpu.values())
        redis_cpu = r1 - r0
        res.update({"wall_s": round(wall, 2), "redis_cpu_s": round(redis_cpu, 3), "softirq_s": round(softirq, 3),
                    "ops_per_cpu_s": res["requests"] / (redis_cpu + softirq) if redis_cpu + softirq > 0 else None,
                    "client_cpu_s": round(ru.ru_utime + ru.ru_stime, 3),
                    "noise_cpu_s": round(n1 - n0, 3), "noise_cpu_share": round((n1 - n0) / wall / len(self.cpus), 4),
                    "per_cpu": per_cpu, "placement": placement})
        if samples:
            res["controller_samples"] = samples
        return res

    def _poll_textfile(self, samples, ev, t0):
        last = None
        while not ev.wait(0.5):
            txt = read(self.agent_textfile)
            if not txt or txt == last:
                continue
            last = txt
            d = {"t": round(time.time() - t0, 1)}
            for k in ("net_cpus", "net_util", "app_util", "squeeze_per_s", "drops_per_s"):
                m = re.search(r"^netstack_amp_%s (\S+)$" % k, txt, re.M)
                if m:
                    d[k] = float(m.group(1))
            m = re.search(r'^netstack_amp_resizes_total\{direction="grow"\} (\d+)', txt, re.M)
            if m:
                d["grows"] = int(m.group(1))
            samples.append(d)

    # -- teardown ------------------------------------------------------------------------
    def cleanup(self):
        errs = []

        def step(what, fn):
            try:
                fn()
            except BaseException as e:  # keep going: every later step must still run
                errs.append("%s: %s" % (what, e))

        step("stop agent", lambda: stop(self.agent, signal.SIGTERM, wait=15))
        step("stop irqbalance", lambda: stop(self.irqbalance, signal.SIGTERM))
        step("restore IRQ affinities", self.restore_irqs)
        if self.redis is not None and os.path.isdir(self.cg("redis")):
            step("redis out of its cgroup", lambda: move_to(CPUSET, self.redis.pid))
        for name in sorted(set(list(self.partitions) + ["netstack-bench-%s-static" % self.tag,
                                                        "netstack-bench-%s-dynamic" % self.tag])):
            p = amp.Partition(name, state_dir=self.state_dir)
            step("Partition(%s).absent" % name, lambda p=p: p.record() and p.absent(source="amp_bench",
                                                                                    reason="benchmark cleanup"))
        step("restore rps_cpus", self.restore_rps)
        step("stop redis", lambda: stop(self.redis, signal.SIGTERM))
        for role in self.cg_names:
            d = self.cg(role)
            if os.path.isdir(d):
                step("rmdir %s" % d, lambda d=d: os.rmdir(d))
        # the namespaces' sysfs mounts hold them (and the veth pair) alive: unmount first
        for m in list(self.mounts):
            step("umount %s" % m, lambda m=m: sh(["umount", m]))
            self.mounts.remove(m)
        for ns in self.ns_made:
            step("ip netns del %s" % ns, lambda ns=ns: sh(["ip", "netns", "del", ns]))
        self.ns_made = []
        return errs


# ------------------------------------------------------------------------------ summary & report
METRICS = ("ops_per_s", "p50_ms", "p99_ms", "p999_ms", "ops_per_cpu_s", "redis_cpu_s", "softirq_s",
           "client_cpu_s", "noise_cpu_s")


def other_cpu_s(x):
    """Busy CPU time of the experiment CPUs not charged to redis-server, the client or stress-ng:
    softirq that ran in idle or ksoftirqd context, the agent or irqbalance, the benchmark itself and
    any other job on the host.  (Tick accounting charges a softirq that interrupts a task to that
    task, so softirq time cannot be subtracted here.)"""
    busy = sum(v["busy_s"] for v in x["per_cpu"].values())
    return round(busy - x["redis_cpu_s"] - x["client_cpu_s"] - x["noise_cpu_s"], 3)


def summarize(raw, net_cpus):
    out = {}
    for arm in ARMS:
        rows = [r[arm] for r in raw if r.get(arm)]
        s = dict((m, spread([x.get(m) for x in rows])) for m in METRICS)
        s["other_cpu_s"] = spread([other_cpu_s(x) for x in rows])
        # softirq time on the network CPUs' share of all softirq time, and NET_RX likewise
        s["softirq_on_net_cpus"] = spread([
            sum(x["per_cpu"][str(c)]["softirq_s"] for c in net_cpus) / x["softirq_s"] if x["softirq_s"] else None
            for x in rows])
        s["net_rx_on_net_cpus"] = spread([
            sum(x["per_cpu"][str(c)]["net_rx"] for c in net_cpus) / float(sum(v["net_rx"] for v in x["per_cpu"].values()))
            if sum(v["net_rx"] for v in x["per_cpu"].values()) else None for x in rows])
        s["ratio"] = {}
        for m in METRICS:
            s["ratio"][m] = spread([r[arm][m] / r["default"][m] for r in raw
                                    if r.get(arm) and r.get("default") and r[arm].get(m) is not None
                                    and r["default"].get(m)])
        out[arm] = s
    return out


def render(meta, summary, raw, agent_log):
    L = []
    arms_run = [arm for arm in ARMS if any(r.get(arm) for r in raw)]
    a = meta["params"]
    L.append("# AMP: redis-server with a noisy neighbour, four CPU arrangements\n")
    L.append("Run finished %s on kernel %s, %d online CPUs (%s); the experiment used CPUs %s, network set %d "
             "CPU(s). Load average before %s, after %s. Command: `%s` (%.0f s). %d repeats x ~%s s per "
             "measurement, arms interleaved per repeat (order rotating), each arm set up before and torn down "
             "after its own measurement. Workload: `redis-benchmark -t get -c %d -P %d -r %d -d %d`, requests "
             "sized to ~%s s per run from the arm's last rate, over a veth pair between two network namespaces "
             "(%s/%d redis-server, %s/%d client); noisy neighbour `stress-ng --cpu %d` started 1 s before each "
             "measurement. Versions: %s. Cells: median (min-max over repeats); ratios are per-repeat "
             "arm/default, median (min-max).\n" % (
                 meta["date"], meta["kernel"], meta["online_cpus"], meta["cpu_model"], meta["cpus"],
                 a["net_cpus"], " ".join("%.2f" % x for x in meta["loadavg_before"]),
                 " ".join("%.2f" % x for x in meta["loadavg_after"]), meta["command"], meta["duration_s"],
                 a["repeats"], a["seconds"], a["clients"], a["pipeline"], KEYSPACE, DATA_SIZE, a["seconds"],
                 SRV_ADDR, PREFIX, CLI_ADDR, PREFIX, a["stress"], "; ".join(meta["versions"].values())))
    if meta.get("rerendered"):
        L.append("Tables and notes re-rendered from the JSON with `--render` at %s (same measurements).\n"
                 % meta["rerendered"])
    if meta.get("host_load"):
        L.append("Other CPU users on the host over 1 s before the run: %s; after: %s.\n" % (
            meta["host_load"], meta.get("host_load_after", "?")))
    L.append("Arms: **default** = nothing pinned, RPS off; **irqbalance** = `irqbalance --foreground` running "
             "(killed after the arm, IRQ affinities it moved put back) and RPS on both veth ends spread over "
             "CPUs %s, no RFS; **static** = `amp.Partition.present` (net_cpus %d, rfs %s, irqbalance: ignore; "
             "network CPUs %s, application CPUs %s) with redis-server, the client and stress-ng each in an "
             "application cpuset cgroup; **dynamic** = netstack-agent running the same partition with its AMP "
             "controller (interval 1 s) allowed to resize it.\n" % (
                 meta["cpus"], a["net_cpus"], a["rfs"], meta.get("net_cpus_planned", "?"),
                 meta.get("app_cpus_planned", "?")))
    L.append("**Where the client runs**: in the application set (its own cgroup, one of the partition's "
             "app_cgroups). It stands in for remote clients, which would not use this host's CPUs at all; on "
             "the network CPUs it would give the partitioned arms a CPU the other arms do not get and mix "
             "application time into the network set's softirq load the controller reads. So the application "
             "set carries redis-server + client + stress-ng: the pessimistic placement for the partition.\n")
    L.append("\n## Results\n")
    L.append("| arm | ops/s | p50 ms | p99 ms | p99.9 ms | ops per CPU-s | redis CPU-s | softirq CPU-s | "
             "client CPU-s | stress-ng CPU-s |")
    L.append("|---|---|---|---|---|---|---|---|---|---|")
    for arm in arms_run:
        s = summary[arm]
        L.append("| %s | %s |" % (arm, " | ".join(fmt_spread(s[m]) for m in METRICS)))
    L.append("\nRatios to default (per repeat):\n")
    L.append("| arm | ops/s | p50 | p99 | p99.9 | ops per CPU-s | stress-ng CPU-s |")
    L.append("|---|---|---|---|---|---|---|")
    for arm in arms_run[1:]:
        r = summary[arm]["ratio"]
        cols = ("ops_per_s", "p50_ms", "p99_ms", "p999_ms", "ops_per_cpu_s", "noise_cpu_s")
        L.append("| %s/default | %s |" % (arm, " | ".join(fmt_ratio(r[m]) for m in cols)))
    L.append("\nWhere the network work ran: share of all softirq time (/proc/stat) and of NET_RX softirqs "
             "(/proc/softirqs) that landed on the network CPUs %s during the measurement (in default and "
             "irqbalance there is no network set; the same CPUs are shown for comparison):\n"
             % meta.get("net_cpus_planned", "?"))
    L.append("| arm | softirq time on network CPUs | NET_RX softirqs on network CPUs | Cpus_allowed redis / client "
             "/ stress-ng (first repeat) |")
    L.append("|---|---|---|---|")
    for arm in arms_run:
        first = next((r[arm] for r in raw if r.get(arm)), None)
        pl = first["placement"] if first else {}
        L.append("| %s | %s | %s | %s / %s / %s |" % (
            arm, fmt_spread(summary[arm]["softirq_on_net_cpus"]), fmt_spread(summary[arm]["net_rx_on_net_cpus"]),
            pl.get("redis"), pl.get("client"), ",".join(pl.get("stress-ng") or [])))
    L.append("\nPer run, in the order run. *other CPU-s*: busy time of the experiment CPUs not charged to "
             "redis-server, the client or stress-ng (softirq run from idle or ksoftirqd, the agent or irqbalance, "
             "the benchmark, and other jobs on the host such as a TCG VM; tick-sampled, so approximate):\n")
    L.append("| repeat | arm | s | ops/s | p99.9 ms | ops/CPU-s | other CPU-s | per CPU: busy / softirq s, NET_RX |")
    L.append("|---|---|---|---|---|---|---|---|")
    for i, r in enumerate(raw):
        for arm in r.get("_order", ARMS):
            x = r.get(arm)
            if not x:
                continue
            L.append("| %d | %s | %.1f | %s | %s | %s | %s | %s |" % (
                i, arm, x["wall_s"], fmt(x["ops_per_s"]), fmt(x.get("p999_ms")), fmt(x["ops_per_cpu_s"]),
                fmt(other_cpu_s(x)),
                "; ".join("cpu%s %.1f / %.2f s, %d" % (c, v["busy_s"], v["softirq_s"], v["net_rx"])
                          for c, v in sorted(x["per_cpu"].items()))))
    L.append("\n## The dynamic arm: what the controller saw and did\n")
    ctl = meta.get("controller_bounds")
    L.append("%s\n" % ctl)
    samp = [s for r in raw if r.get("dynamic") for s in r["dynamic"].get("controller_samples", [])]
    if samp:
        L.append("Controller signals read from the agent's metrics textfile during the measurements "
                 "(netstack_amp_net_util = softirq+irq share of the network CPUs' time): net_util median %s "
                 "(min %s, max %s) over %d samples; network set size (CPUs) %s; grow decisions %d.\n" % (
                     fmt(statistics.median(s["net_util"] for s in samp if "net_util" in s)),
                     fmt(min(s["net_util"] for s in samp if "net_util" in s)),
                     fmt(max(s["net_util"] for s in samp if "net_util" in s)),
                     len(samp), sorted(set(int(s["net_cpus"]) for s in samp if "net_cpus" in s)),
                     max(s.get("grows", 0) for s in samp)))
    L.append("The agent's JSON-lines log (all repeats; `bench` lines are the benchmark's markers):\n")
    L.append("```")
    L.extend(agent_log or ["(empty)"])
    L.append("```\n")
    L.append("## Notes\n")
    for n in meta["notes"]:
        L.append("- " + n)
    if meta.get("events"):
        L.append("\nEvents: " + "; ".join(meta["events"]) + ".")
    if meta.get("cleanup_errors"):
        L.append("\n**Cleanup errors**: " + "; ".join(meta["cleanup_errors"]))
    return "\n".join(L) + "\n"


def notes(meta, summary, raw):
    a = meta["params"]
    ncpu = len(parse_cpulist(meta["cpus"]))
    n = []
    n.append("With %d experiment CPUs and a network set of %d, the application set is %s: redis-server, the "
             "client and %d stress-ng workers share it, while in default and irqbalance they share all %d CPUs. "
             "The partition trades application CPU for network isolation%s." % (
                 ncpu, a["net_cpus"], meta.get("app_cpus_planned", "?"), a["stress"], ncpu,
                 "; on a host this small that trade is most of what the numbers show" if ncpu <= 4 else ""))
    if meta.get("controller_max_cores") is not None and meta["controller_max_cores"] <= meta.get("net_cores", 1):
        n.append("The dynamic arm cannot grow here: the controller's upper bound is the cores minus min_app_cores "
                 "(1) = %d core(s), which is where the partition starts (%d network core(s)), and min_cores is 1, "
                 "so on this host it can neither grow nor shrink. It is measured for its cost (the agent, its 1 s "
                 "sampling and its reconcile every second) and to log what the controller decides; resizing needs a "
                 "host with more cores." % (meta["controller_max_cores"], meta.get("net_cores", 1)))
    dyn = summary.get("dynamic", {})
    samp = [x for r in raw if r.get("dynamic") for x in r["dynamic"].get("controller_samples", [])
            if "net_util" in x]
    if samp:
        med = statistics.median(x["net_util"] for x in samp)
        n.append("The controller read a network-set softirq+irq utilisation of %.1f%% (median of %d samples) "
                 "against its watermarks low 20%% / high 60%%: %s." % (
                     100 * med, len(samp),
                     "cold, so it would shrink the set if it could (it is at min_cores)" if med <= 0.2 else
                     "hot, so it would grow the set if it could" if med >= 0.6 else "between the watermarks: hold"))
    moved = [len(r["irqbalance"]["arm_down"].get("irqs_moved") or []) for r in raw if r.get("irqbalance")]
    if moved:
        n.append("veth has no IRQs: irqbalance has nothing of the benchmark's to move, so the irqbalance arm differs "
                 "from default mainly by RPS spreading the receive processing over all CPUs (and irqbalance's own "
                 "wake-ups). It moved %s of the host's IRQs per run (put back after each run)." % (
                     "/".join(str(m) for m in moved)))
    n.append("ops per CPU-second = requests / (redis-server utime+stime + softirq time of the experiment CPUs). "
             "This kernel has tick-based CPU accounting (CONFIG_IRQ_TIME_ACCOUNTING off, HZ 250): softirq time "
             "is sampled at ticks, and a tick that lands in a softirq is charged both to /proc/stat softirq "
             "and to whichever task it interrupted (its stime). So softirq run on top of redis-server is counted "
             "twice in this metric, softirq run on top of stress-ng or the client is counted in their CPU-s too, "
             "and softirq run from idle or ksoftirqd counts once. Read ops per CPU-s and the per-process CPU-s "
             "as indicative. The softirq column is all softirq types, not only NET_RX/NET_TX.")
    st = summary.get("static", {})
    if st.get("net_rx_on_net_cpus") and a["rfs"] == "on" and st["net_rx_on_net_cpus"]["median"] < 0.5:
        n.append("**RFS takes the receive processing off the network CPUs.** With rfs on (not the partition's "
                 "default since this finding) only %.1f%% (median) of the NET_RX softirqs ran on the network CPUs in the static "
                 "arm%s. The kernel's get_rps_cpu() gives an RFS match (rps_sock_flow_entries + rps_flow_cnt) "
                 "precedence over the rps_cpus map: the packet goes to the CPU where the consuming thread last "
                 "called recvmsg, whatever CPU that is, not only one in the map (Documentation/networking/"
                 "scaling.rst). Under a partition the consumers run on the application CPUs by construction, so "
                 "RFS steers their flows there and the network set idles; amp.plan's docstring ('packets follow "
                 "the consuming thread's CPU within the set') does not hold. The controller's own logged signals "
                 "show it (net_rx_per_s 0 on the network CPUs, net_rx_app_per_s in the tens of thousands), and it "
                 "reads the network set as cold. Compare amp.md (rfs off, the default) where "
                 "present." % (
                     100 * st["net_rx_on_net_cpus"]["median"],
                     " (%.1f%% in the dynamic arm)" % (100 * dyn["net_rx_on_net_cpus"]["median"])
                     if dyn.get("net_rx_on_net_cpus") else ""))
    if a["rfs"] == "off" and st.get("softirq_on_net_cpus"):
        r = st.get("ratio", {})
        n.append("With rfs off the rps_cpus map holds: %.0f%% (median) of the softirq time ran on the network "
                 "CPUs in the static arm. Moving the receive work there did not buy application throughput here "
                 "(static/default ops/s %s: the application CPU stays saturated by redis-server, the client and "
                 "stress-ng) and it costs CPU (ops per CPU-s %s of default: cross-CPU steering adds IPIs and "
                 "cache-line transfers)." % (100 * st["softirq_on_net_cpus"]["median"], fmt_ratio(r.get("ops_per_s")),
                                             fmt_ratio(r.get("ops_per_cpu_s"))))
    n.append("NET_RX counts are softirq raises, not packets: with RPS the sending CPU raises NET_RX to send the "
             "RPS IPIs, so an RPS target set of network CPUs still shows about half the NET_RX raises on the "
             "application CPUs; the softirq time share is the better measure of where the work ran.")
    n.append("GET hit ratio: the keyspace is preloaded with SETs of random keys from the same %d-key space "
             "(%s); the GETs that miss return nil (same share in every arm)." % (
                 KEYSPACE, "; ".join(e for e in meta.get("events", []) if "preloaded" in e) or "?"))
    n.append("Single %d-CPU VM shared with other jobs (VMs under TCG emulation may run beside it): read spreads "
             "before ratios. The host lock /tmp/amp-host.lock was held for the run by the caller (flock), which "
             "keeps the other host-changing jobs of this project out, not unrelated load." % meta["online_cpus"])
    return n


# ------------------------------------------------------------------------------ main
def _cpu_model():
    for line in (read("/proc/cpuinfo", "") or "").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def _versions():
    return tool_versions((("redis", ["redis-server", "--version"]), ("redis-benchmark", ["redis-benchmark", "--version"]),
                          ("stress-ng", ["stress-ng", "--version"]), ("irqbalance", ["irqbalance", "--version"])), 80)


def parse_args(argv=None):
    online = parse_cpulist(read("/sys/devices/system/cpu/online", "0").strip())
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpus", type=int, default=None, help="use CPUs 0..N-1 (default: all online, %d)" % len(online))
    ap.add_argument("--net-cpus", type=int, default=1, help="CPUs in the network set (default 1)")
    ap.add_argument("--repeats", type=int, default=None, help="repeats per arm (default 5, --quick 1)")
    ap.add_argument("--seconds", type=float, default=None, help="seconds per measurement (default 25, --quick 4)")
    ap.add_argument("--clients", type=int, default=50, help="redis-benchmark -c (default 50)")
    ap.add_argument("--pipeline", type=int, default=1, help="redis-benchmark -P (default 1)")
    ap.add_argument("--stress", type=int, default=None, help="stress-ng --cpu workers (default N)")
    ap.add_argument("--rfs", choices=("on", "off"), default="off",
                    help="the partition's rfs setting in static/dynamic (default off, the partition's default)")
    ap.add_argument("--arms", default=",".join(ARMS), help="comma-separated arms (default all; default is always run)")
    ap.add_argument("--quick", action="store_true", help="short smoke run (about a minute)")
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results"))
    ap.add_argument("--name", default="amp", help="results file stem (default amp: amp.json, amp.md)")
    ap.add_argument("--render", metavar="JSON", help="recompute the summary and notes from an amp.json and rewrite "
                    "<name>.json and <name>.md in --out (no measurement, no root needed)")
    a = ap.parse_args(argv)
    a.cpus = a.cpus or len(online)
    if a.cpus < 2 or a.cpus > len(online) or list(range(a.cpus)) != [c for c in online if c < a.cpus]:
        ap.error("--cpus must be 2..%d and CPUs 0..N-1 must be online" % len(online))
    if not 1 <= a.net_cpus < a.cpus:
        ap.error("--net-cpus must leave at least one CPU to applications")
    a.repeats = a.repeats or (1 if a.quick else 5)
    a.seconds = a.seconds or (4 if a.quick else 25)
    if a.seconds == int(a.seconds):
        a.seconds = int(a.seconds)
    a.stress = a.cpus if a.stress is None else a.stress
    a.arm_list = [x for x in ARMS if x in a.arms.split(",") or x == "default"]
    return a


def rerender(src, outdir, name):
    with open(src) as f:
        doc = json.load(f)
    meta, raw = doc["meta"], doc["raw"]
    summary = summarize(raw, parse_cpulist(meta["net_cpus_planned"]))
    meta["notes"] = notes(meta, summary, raw)
    meta["rerendered"] = datetime.datetime.utcnow().strftime("%Y-%m-%dT%H:%M:%SZ")
    doc["summary"] = summary
    with open(os.path.join(outdir, "%s.json" % name), "w") as f:
        json.dump(doc, f, indent=1, sort_keys=True)
    with open(os.path.join(outdir, "%s.md" % name), "w") as f:
        f.write(render(meta, summary, raw, doc.get("agent_log")))
    print("rewrote %s/%s.md and %s.json" % (outdir, name, name))
    return 0


def main():
    args = parse_args()
    if args.render:
        return rerender(args.render, args.out, args.name)
    if os.geteuid() != 0:
        sys.exit("run as root")
    for tool in ("redis-server", "redis-benchmark", "redis-cli", "stress-ng", "irqbalance", "ip", "taskset",
                 "nsenter", "unshare", "mount"):
        if not shutil.which(tool):
            sys.exit("missing tool: %s" % tool)
    if os.environ.get(ENV_FLAG) != "1":
        # a private mount namespace: the sysfs views and tmpfs mounts below die with its process.
        # /run/netstack, the mount point of the tmpfs the agent writes to, is made here when the
        # host has none and removed afterwards, so the host is left as it was found.
        os.environ[ENV_FLAG] = "1"
        made = not os.path.isdir("/run/netstack")
        if made:
            os.makedirs("/run/netstack", 0o755)
        try:
            return subprocess.call(["unshare", "--mount", "--propagation", "private", sys.executable,
                                    os.path.abspath(__file__)] + sys.argv[1:])
        finally:
            if made:
                os.rmdir("/run/netstack")
    for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(s, _on_signal)
    leftovers = [d for d in os.listdir(CPUSET) if d.startswith("netstack-bench-")]
    t_start = time.time()
    tmp = tempfile.mkdtemp(prefix="ampbench-")
    lab = Lab(args, tmp)
    load_before = os.getloadavg()
    meta_host_load = busiest()
    raw, arm_info, cleanup_errors, failure = [], {}, [], None
    rate = {}
    meta = {"events": []}
    if leftovers:
        meta["events"].append("cgroups of an earlier run left in %s: %s" % (CPUSET, ", ".join(leftovers)))
    try:
        lab.setup_mounts()
        lab.setup_net()
        lab.start_redis()
        topo = amp.Topology.from_sysfs()
        net_cpus = amp.resolve_net_cpus(topo, amp.nic_info([lab.if_srv, lab.if_cli]), args.net_cpus)[0]
        meta["net_cpus_planned"] = format_cpulist(net_cpus)
        meta["app_cpus_planned"] = format_cpulist([c for c in topo.online if c not in net_cpus])
        meta["controller_max_cores"] = len(topo.cores) - 1
        meta["net_cores"] = len(set(tuple(topo.core_of(c)) for c in net_cpus))
        meta["rps_before"] = lab.rps_state()
        # calibration (not recorded): the default arm's rate sizes the first runs
        info = lab.arm_up("default", -1)
        try:
            cal = lab.measure("default", info["cgroups"], max(5000, int(20000 * min(args.seconds, 3))), 3)
        finally:
            lab.arm_down("default")
        for arm in ARMS:
            rate[arm] = cal["ops_per_s"]
        print("calibration: %.0f ops/s (default arm, stress-ng on)" % cal["ops_per_s"], flush=True)
        for rep in range(args.repeats):
            order = list(args.arm_list)
            k = rep % len(order)
            order = order[k:] + order[:k]
            row = {"_order": order}
            for arm in order:
                n = max(5000, int(rate[arm] * args.seconds))
                t0 = time.time()
                info = lab.arm_up(arm, rep)
                try:
                    res = lab.measure(arm, info["cgroups"], n, args.seconds)
                finally:
                    down = lab.arm_down(arm)
                res["rps_during"] = info["rps"]
                res["arm_down"] = down
                if "plan" in info:
                    res["plan"] = info["plan"]
                    arm_info.setdefault(arm, info["plan"])
                res["arm_wall_s"] = round(time.time() - t0, 2)
                rate[arm] = res["ops_per_s"]
                row[arm] = res
                print("rep %d %-10s ops/s=%-8s p50=%s p99=%s p99.9=%s ms ops/CPU-s=%s softirq cpu%s  redis=%s "
                      "client=%s" % (rep, arm, fmt(res["ops_per_s"]), fmt(res.get("p50_ms")), fmt(res.get("p99_ms")),
                                     fmt(res.get("p999_ms")), fmt(res["ops_per_cpu_s"]),
                                     ",".join("%s:%.2f/%d" % (c, v["softirq_s"], v["net_rx"])
                                              for c, v in sorted(res["per_cpu"].items())),
                                     res["placement"]["redis"], res["placement"]["client"]), flush=True)
            raw.append(row)
    except (Interrupted, KeyboardInterrupt) as e:
        failure = "interrupted (%s)" % (e or "Ctrl-C")
        print(failure, file=sys.stderr)
    except Exception as e:  # noqa: BLE001 - report it after restoring the host
        import traceback
        traceback.print_exc()
        failure = "%s: %s" % (type(e).__name__, e)
    finally:
        for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(s, signal.SIG_IGN)  # a second Ctrl-C must not cut the restore short
        cleanup_errors = lab.cleanup()
        for ev in lab.events:
            meta["events"].append(ev)
    agent_log = [x.rstrip("\n") for x in (read(lab.agent_log, "") or "").splitlines() if x.strip()]
    irqbalance_log = (read(lab.irqbalance_log, "") or "")[-3000:]
    if tmp in (read("/proc/self/mountinfo", "") or ""):
        cleanup_errors.append("mounts left under %s (not removed)" % tmp)
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    leftover_after = [d for d in os.listdir(CPUSET) if d.startswith("netstack-bench-%s-" % lab.tag)]
    netns_after = [n for n in (sh(["ip", "netns", "list"], check=False) or "").split() if n.startswith(
        "netstack-bench-%s-" % lab.tag)]
    if leftover_after or netns_after:
        cleanup_errors.append("left behind: cgroups %s, namespaces %s" % (leftover_after, netns_after))
    for e in cleanup_errors:
        print("CLEANUP ERROR: %s" % e, file=sys.stderr)
    if failure or not raw:
        print("no results written: %s" % (failure or "no measurement"), file=sys.stderr)
        return 1
    duration = time.time() - t_start
    summary = summarize(raw, parse_cpulist(meta["net_cpus_planned"]))
    params = {"cpus": args.cpus, "net_cpus": args.net_cpus, "repeats": args.repeats, "seconds": args.seconds,
              "clients": args.clients, "pipeline": args.pipeline, "stress": args.stress, "rfs": args.rfs,
              "quick": args.quick, "arms": args.arm_list}
    meta.update({
        "date": datetime.datetime.utcnow().strftime("%Y-%m-%dT%H:%M:%SZ"),
        "kernel": platform.release(),
        "online_cpus": len(parse_cpulist(read("/sys/devices/system/cpu/online", "0").strip())),
        "cpu_model": _cpu_model(),
        "cpus": format_cpulist(list(range(args.cpus))),
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "host_load": meta_host_load,
        "host_load_after": busiest(),
        "command": "/usr/bin/python3 benchmarks/amp_bench.py " + " ".join(sys.argv[1:]),
        "params": params,
        "duration_s": round(duration, 1),
        "versions": _versions(),
        "partition_plans": arm_info,
        "calibration_ops_per_s": cal["ops_per_s"],
        "cleanup_errors": cleanup_errors,
        "irqbalance_log_tail": irqbalance_log,
        "interfaces": [lab.if_srv, lab.if_cli],
        "cgroups": sorted(lab.cg_names.values()),
    })
    meta["controller_bounds"] = (
        "Controller bounds on this host: %d core(s) in all, max_cores = cores - min_app_cores (1) = %d, "
        "min_cores 1; the partition starts at %d network CPU(s) (%s)." % (
            meta["controller_max_cores"] + 1, meta["controller_max_cores"], args.net_cpus, meta["net_cpus_planned"]))
    meta["notes"] = notes(meta, summary, raw)
    os.makedirs(args.out, exist_ok=True)
    doc = {"meta": meta, "summary": summary, "raw": raw, "agent_log": agent_log}
    with open(os.path.join(args.out, "%s.json" % args.name), "w") as f:
        json.dump(doc, f, indent=1, sort_keys=True)
    with open(os.path.join(args.out, "%s.md" % args.name), "w") as f:
        f.write(render(meta, summary, raw, agent_log))
    print("wrote %s/%s.md and %s.json in %.0f s" % (args.out, args.name, args.name, duration))
    return 1 if cleanup_errors else 0


if __name__ == "__main__":
    sys.exit(main())
