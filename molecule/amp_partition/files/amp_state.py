# Read, straight from procfs/sysfs/cgroupfs/systemd, every key an AMP partition of the
# given interfaces touches, as JSON:
#   raw      the values (what absent must restore): each NIC IRQ's smp_affinity_list,
#            every queue's rps_cpus/rps_flow_cnt/xps_cpus, net.core.rps_sock_flow_entries,
#            /etc/default/irqbalance (null when absent), the unit's AllowedCPUs, the cgroup
#            (null when it does not exist)
#   decoded  the same as CPU lists (masks decoded, effective affinity and cpusets), and the
#            CPUs the unit's main process may run on
# Usage: amp_state.py [--out FILE] [--unit UNIT] [--cgroup NAME] [--record FILE] IFACE...
# (guest side of molecule/amp_partition; Python 3 standard library only)
import argparse
import json
import os
import re
import subprocess


def read(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def cpulist(cpus):
    cpus, out, i = sorted(cpus), [], 0
    while i < len(cpus):
        j = i
        while j + 1 < len(cpus) and cpus[j + 1] == cpus[j] + 1:
            j += 1
        out.append(str(cpus[i]) if i == j else "%d-%d" % (cpus[i], cpus[j]))
        i = j + 1
    return ",".join(out)


def parse(text):
    out = []
    for part in (text or "").replace("\n", "").split(","):
        if "-" in part:
            lo, hi = part.split("-")
            out += range(int(lo), int(hi) + 1)
        elif part.strip():
            out.append(int(part))
    return sorted(out)


def mask_to_list(mask):
    if mask is None:
        return None
    v = int(mask.replace(",", ""), 16)
    return cpulist([b for b in range(v.bit_length()) if v >> b & 1])


def nic_irqs(ifname):
    """MSI vectors of the interface's device (or the PCI device above a virtio one) and
    every /proc/interrupts action naming the interface: {irq: actions}."""
    actions = {}
    with open("/proc/interrupts") as f:
        next(f)
        for line in f:
            m = re.match(r"\s*(\d+):", line)
            if m:
                actions[int(m.group(1))] = line.split()[-1]
    irqs = set()
    dev = "/sys/class/net/%s/device" % ifname
    if os.path.exists(dev):
        dev = os.path.realpath(dev)
        for d in (dev, os.path.dirname(dev)):
            if os.path.isdir(os.path.join(d, "msi_irqs")):
                irqs.update(int(n) for n in os.listdir(os.path.join(d, "msi_irqs")))
                break
    irqs.update(n for n, a in actions.items() if re.search(r"(^|[^A-Za-z0-9])%s([^A-Za-z0-9]|$)" % re.escape(ifname), a))
    return dict((n, actions.get(n, "")) for n in sorted(irqs))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out")
    ap.add_argument("--unit")
    ap.add_argument("--cgroup")
    ap.add_argument("--record", help="a partition record: its CPU sets go into decoded.record")
    ap.add_argument("ifaces", nargs="+")
    a = ap.parse_args()
    raw = {"irq": {}, "queues": {}, "sysctl": {}, "files": {}, "units": {}, "cgroups": {}}
    dec = {"online": read("/sys/devices/system/cpu/online"), "irq": {}, "queues": {}, "cgroups": {}, "unit_tasks": {}}
    for ifname in a.ifaces:
        for n, name in nic_irqs(ifname).items():
            raw["irq"][str(n)] = read("/proc/irq/%d/smp_affinity_list" % n)
            dec["irq"][str(n)] = {"iface": ifname, "name": name,
                                  "queue": bool(re.search(r"(input|output|rx|tx|TxRx)[-_.]?\d+$", name)),
                                  "affinity": raw["irq"][str(n)],
                                  "affinity_cpus": parse(raw["irq"][str(n)]),
                                  "effective": read("/proc/irq/%d/effective_affinity_list" % n)}
        qdir = "/sys/class/net/%s/queues" % ifname
        for q in sorted(os.listdir(qdir)):
            files = ("rps_cpus", "rps_flow_cnt") if q.startswith("rx-") else ("xps_cpus",)
            vals = dict((f, read(os.path.join(qdir, q, f))) for f in files)
            raw["queues"]["%s/%s" % (ifname, q)] = vals
            dec["queues"]["%s/%s" % (ifname, q)] = dict(
                (f, mask_to_list(v) if f.endswith("_cpus") else v) for f, v in vals.items())
    raw["sysctl"]["net.core.rps_sock_flow_entries"] = read("/proc/sys/net/core/rps_sock_flow_entries")
    raw["files"]["/etc/default/irqbalance"] = read("/etc/default/irqbalance")
    if a.unit:
        raw["units"][a.unit] = subprocess.run(["systemctl", "show", "-P", "AllowedCPUs", a.unit],
                                               stdout=subprocess.PIPE, universal_newlines=True, check=True).stdout.strip()
        pid = subprocess.run(["systemctl", "show", "-P", "MainPID", a.unit], stdout=subprocess.PIPE,
                             universal_newlines=True, check=True).stdout.strip()
        allowed = None
        if pid and pid != "0":
            for line in (read("/proc/%s/status" % pid) or "").splitlines():
                if line.startswith("Cpus_allowed_list:"):
                    allowed = line.split()[1]
        dec["unit_tasks"][a.unit] = {"main_pid": int(pid or 0), "cpus_allowed": allowed}
    if a.cgroup:
        path = "/sys/fs/cgroup/%s" % a.cgroup
        if os.path.isdir(path):
            raw["cgroups"][a.cgroup] = "cpus=%s mems=%s" % (read(path + "/cpuset.cpus"), read(path + "/cpuset.mems"))
            dec["cgroups"][a.cgroup] = {"cpus": read(path + "/cpuset.cpus"),
                                        "effective": read(path + "/cpuset.cpus.effective"),
                                        "procs": len((read(path + "/cgroup.procs") or "").split())}
        else:
            raw["cgroups"][a.cgroup] = None
            dec["cgroups"][a.cgroup] = None
    if a.record:
        rec = json.loads(read(a.record) or "null")
        dec["record"] = rec and {"net_cpus": rec["net_cpus"], "app_cpus": rec["app_cpus"],
                                 "net": parse(rec["net_cpus"]), "app": parse(rec["app_cpus"])}
    out = json.dumps({"raw": raw, "decoded": dec}, indent=1, sort_keys=True)
    if a.out:
        with open(a.out, "w") as f:
            f.write(out + "\n")
    print(out)


main()
