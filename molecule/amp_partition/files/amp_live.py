# A live run of netstack-agent's AMP controller (guest side of molecule/amp_partition).
# Starts redis-benchmark inside the fenced cgroup against the fenced redis-server over
# loopback (RPS of lo steers its protocol work to the network CPUs), keeps it running for
# --seconds, waits for the agent to log a grow, stops the load and waits for a shrink.
# Prints JSON: the amp decision lines logged meanwhile, the partition as the grow left it
# (read back from the kernel), and the times.  Python 3 standard library only.
import argparse
import json
import os
import subprocess
import time


def read(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def allowed(pid):
    for line in (read("/proc/%s/status" % pid) or "").splitlines():
        if line.startswith("Cpus_allowed_list:"):
            return line.split()[1]
    return None


def mask_to_list(mask):
    """Hex CPU mask -> CPU list text as the kernel writes it ("0-1,3")."""
    v = int(mask.replace(",", ""), 16)
    cpus, out, i = [b for b in range(v.bit_length()) if v >> b & 1], [], 0
    while i < len(cpus):
        j = i
        while j + 1 < len(cpus) and cpus[j + 1] == cpus[j] + 1:
            j += 1
        out.append(str(cpus[i]) if i == j else "%d-%d" % (cpus[i], cpus[j]))
        i = j + 1
    return ",".join(out)


class Log(object):
    def __init__(self, path):
        self.path = path
        self.offset = os.path.getsize(path) if os.path.exists(path) else 0
        self.lines = []

    def poll(self):
        if not os.path.exists(self.path):
            return
        with open(self.path) as f:
            f.seek(self.offset)
            data = f.read()
        end = data.rfind("\n") + 1
        self.offset += len(data[:end].encode())
        for line in data[:end].splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("controller") == "amp":
                self.lines.append(rec)

    def actions(self, verb, since=0):
        return [r for r in self.lines if r["what"].startswith(verb + " ") and r["ts"] >= since]


def snapshot(a, bench):
    rec = json.loads(read(a.record) or "{}")
    pid = subprocess.run(["systemctl", "show", "-P", "MainPID", a.unit], stdout=subprocess.PIPE,
                         universal_newlines=True).stdout.strip()
    return {"record_net_cpus": rec.get("net_cpus"), "record_app_cpus": rec.get("app_cpus"),
            "lo_rps_cpus": mask_to_list(read("/sys/class/net/lo/queues/rx-0/rps_cpus")),
            "eth0_rps_cpus": mask_to_list(read("/sys/class/net/eth0/queues/rx-0/rps_cpus")),
            "cgroup_cpus": read("/sys/fs/cgroup/%s/cpuset.cpus" % a.cgroup),
            "unit_allowed_cpus": subprocess.run(["systemctl", "show", "-P", "AllowedCPUs", a.unit],
                                                stdout=subprocess.PIPE, universal_newlines=True).stdout.strip(),
            "unit_main_cpus_allowed": allowed(pid) if pid and pid != "0" else None,
            "load_cpus_allowed": allowed(bench.pid) if bench.poll() is None else None}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--log", default="/var/log/netstack/agent.log")
    ap.add_argument("--record", default="/var/lib/netstack/amp/amp.json")
    ap.add_argument("--cgroup", default="netstack-app")
    ap.add_argument("--unit", default="redis-server.service")
    ap.add_argument("--port", type=int, default=6379)
    ap.add_argument("--seconds", type=float, default=40)
    ap.add_argument("--grow-timeout", type=float, default=60)
    ap.add_argument("--shrink-timeout", type=float, default=120)
    a = ap.parse_args()
    log = Log(a.log)
    procs = "/sys/fs/cgroup/%s/cgroup.procs" % a.cgroup

    def into_cgroup():
        with open(procs, "w") as f:
            f.write(str(os.getpid()))

    out = {"load": "redis-benchmark -c 20 -t set,get -d 64 (loopback, in cgroup %s) against %s"
           % (a.cgroup, a.unit), "at_start": None, "at_grow": None}
    t0 = time.time()
    bench = subprocess.Popen(["redis-benchmark", "-p", str(a.port), "-q", "-c", "20", "-n", "2000000000",
                              "-t", "set,get", "-d", "64"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=into_cgroup)
    try:
        time.sleep(0.5)
        out["at_start"] = snapshot(a, bench)
        grow_at = None
        while True:
            time.sleep(0.5)
            log.poll()
            now = time.time()
            if grow_at is None and log.actions("grow"):
                grow_at = now
                out["at_grow"] = snapshot(a, bench)
            if bench.poll() is not None:
                out["load_exited"] = bench.returncode
                break
            if now - t0 >= a.seconds and (grow_at is not None or now - t0 >= a.grow_timeout):
                break
    finally:
        if bench.poll() is None:
            bench.terminate()
            try:
                bench.wait(10)
            except subprocess.TimeoutExpired:
                bench.kill()
                bench.wait()
    t_stop = time.time()
    out["load_s"] = round(t_stop - t0, 1)
    out["grow_after_s"] = round(grow_at - t0, 1) if grow_at else None
    shrink_at = None
    while time.time() - t_stop < a.shrink_timeout:
        time.sleep(0.5)
        log.poll()
        if log.actions("shrink", since=t_stop):
            shrink_at = time.time()
            break
    out["shrink_after_stop_s"] = round(shrink_at - t_stop, 1) if shrink_at else None
    out["at_end"] = snapshot(a, bench)
    out["decisions"] = log.lines
    out["grow"] = log.actions("grow")
    out["shrink"] = log.actions("shrink", since=t_stop)
    print(json.dumps(out, sort_keys=True))


main()
