# -*- coding: utf-8 -*-
# Copyright: netstack.tuning contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""AMP: partition CPUs between the network stack and applications (capability 6).

The *network set* gets the NIC queue IRQs, receive packet steering (RPS) and the RFS
flow tables; the *application set* gets the applications, fenced by cpusets (cgroup v2
where the cpuset controller is there, v1 otherwise) or by systemd's AllowedCPUs.  XPS maps
every CPU to a transmit queue so senders do not contend for one queue lock.

Pieces, each usable alone:

* ``Topology``: online CPUs, SMT siblings (cores), NUMA nodes and packages, read from sysfs
  or from a recorded dict (``record`` writes one; unit tests replay many);
* ``nic_info``: queues, IRQs and NUMA node of each interface;
* ``plan``: which CPUs are the network set, and every mask that follows from it.  The
  network set of k cores is always the first k cores of ``core_order`` (NUMA-local to the
  NICs first, lowest CPU first, SMT siblings together), so growing or shrinking by one core
  moves one core and nothing else;
* ``Partition``: a named partition on this host.  ``present`` turns a plan into kernel
  writes through the journal (all-or-nothing, each prior value kept); ``absent`` writes
  back the value every key had before the partition first touched it.

irqbalance would move the pinned IRQs back; where it is installed the partition bans the
NIC IRQs and the application CPUs in its defaults file (``--banirq``,
``IRQBALANCE_BANNED_CPULIST``) and restarts it when systemd runs it.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import copy
import errno
import fcntl
import glob
import json
import os
import re

from ansible_collections.netstack.tuning.plugins.module_utils.core.common import (
    NetstackError, read_text, run, strict_int, which)
from ansible_collections.netstack.tuning.plugins.module_utils.core.cpus import (
    cpus_to_mask, format_cpulist, parse_cpulist)
from ansible_collections.netstack.tuning.plugins.module_utils.core import facts, journal, kstate

SYS_CPU = "/sys/devices/system"
SYS_NET = "/sys/class/net"
PROC = "/proc"
IRQBALANCE_DEFAULTS = "/etc/default/irqbalance"
DEFAULT_FLOW_ENTRIES = 32768  # kernel Documentation/networking/scaling.rst: "32768 ... a moderately loaded server"
NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,40}$")
IFNAME_RE = re.compile(r"^[A-Za-z0-9_.@:-]{1,15}$")


MAX_CPUS = 8192  # the kernel's largest NR_CPUS (CONFIG_MAXSMP): CPU numbers are below it

# A user's CPU list: ASCII digits only (``\d`` would take Arabic-Indic digits), at most
# 4 digits a number (every CPU number is below MAX_CPUS), checked before parse_cpulist
# expands a range, so "0-99999999" or a 5,000-digit number is an error, not a huge set.
_USER_CPULIST_RE = re.compile(r"\A[0-9,\-:/ \t]*\Z")
_NUMBER_RE = re.compile(r"[0-9]+")


def _cpus_arg(value, field):
    """A CPU list given as "0-3,8", [0, 1] or an int CPU number -> sorted list; strict:
    ASCII digits, every CPU number (and stride) below MAX_CPUS; NetstackError naming
    ``field`` otherwise."""
    if isinstance(value, (list, tuple)):
        out = set()
        for v in value:
            if isinstance(v, (list, tuple)):
                raise NetstackError("a CPU list holds CPU numbers or ranges, not a nested list", field=field)
            out.update(_cpus_arg(v, field))
        return sorted(out)
    if isinstance(value, bool):
        raise NetstackError("a boolean is not a CPU list", field=field)
    if isinstance(value, int):
        if value < 0 or value >= MAX_CPUS:
            shown = value if abs(value) < 10 ** 20 else "of %d bits" % value.bit_length()
            raise NetstackError("CPU number %s out of range (0 to %d)" % (shown, MAX_CPUS - 1), field=field)
        return [value]
    if not isinstance(value, str):
        raise NetstackError("a CPU list is text such as 0-3,8, a CPU number or a list of them, not %s"
                            % type(value).__name__, field=field)
    if not _USER_CPULIST_RE.match(value):
        raise NetstackError("bad CPU list %r: only ASCII digits, ',', '-', ':' and '/' are allowed"
                            % value[:40], field=field)
    for num in _NUMBER_RE.findall(value):
        if len(num) > 4 or int(num) >= MAX_CPUS:
            raise NetstackError("bad CPU list %r: %s is beyond the largest CPU number (%d)"
                                % (value[:40], num[:20] + ("..." if len(num) > 20 else ""), MAX_CPUS - 1),
                                field=field)
    try:
        return parse_cpulist(value)
    except ValueError as e:
        raise NetstackError(str(e), field=field)


# ------------------------------------------------------------------ topology

class Topology(object):
    """Online CPUs grouped into cores (SMT siblings), NUMA nodes and packages."""

    def __init__(self, online, cores, nodes, packages=None, possible=None):
        self.online = sorted(online)
        self.cores = sorted((sorted(c) for c in cores), key=lambda c: c[0])
        self.nodes = dict((int(n), sorted(c)) for n, c in nodes.items())
        self.packages = dict((int(p), sorted(c)) for p, c in (packages or {"0": online}).items())
        self.possible = possible or (max(self.online) + 1 if self.online else 0)
        self._node_of = {}
        for n, cs in self.nodes.items():
            for c in cs:
                self._node_of[c] = n
        self._core_of = {}
        for core in self.cores:
            for c in core:
                self._core_of[c] = core
        missing = [c for c in self.online if c not in self._core_of]
        for c in missing:  # a CPU without topology files is a core of its own
            self.cores.append([c])
            self._core_of[c] = [c]
        self.cores.sort(key=lambda c: c[0])

    @property
    def smt(self):
        return any(len(c) > 1 for c in self.cores)

    def node_of(self, cpu):
        return self._node_of.get(cpu, 0)

    def core_of(self, cpu):
        return self._core_of[cpu]

    def as_dict(self):
        return {"online": format_cpulist(self.online), "possible": self.possible,
                "siblings": [format_cpulist(c) for c in self.cores],
                "nodes": dict((str(n), format_cpulist(c)) for n, c in sorted(self.nodes.items())),
                "packages": dict((str(p), format_cpulist(c)) for p, c in sorted(self.packages.items())),
                "smt": self.smt}

    @classmethod
    def from_dict(cls, d):
        """From a recorded topology (``record`` / ``as_dict``)."""
        online = parse_cpulist(d["online"])
        return cls(online, [parse_cpulist(s) for s in d.get("siblings") or []],
                   dict((n, parse_cpulist(c)) for n, c in (d.get("nodes") or {"0": d["online"]}).items()),
                   dict((p, parse_cpulist(c)) for p, c in (d.get("packages") or {"0": d["online"]}).items()),
                   possible=d.get("possible"))

    @classmethod
    def from_sysfs(cls, root=SYS_CPU):
        cpu_dir = os.path.join(root, "cpu")
        online = parse_cpulist(read_text(os.path.join(cpu_dir, "online"), ""))
        if not online:
            raise NetstackError("cannot read the online CPUs from %s" % cpu_dir, field="topology")
        cores, packages = [], {}
        for c in online:
            topo = os.path.join(cpu_dir, "cpu%d" % c, "topology")
            placed = set(x for g in cores for x in g)
            if c not in placed:  # else a sibling's list placed it (its own files may be missing)
                sib = read_text(os.path.join(topo, "thread_siblings_list"))
                group = [x for x in parse_cpulist(sib) if x in online and x not in placed] if sib else [c]
                cores.append(group)
            pkg = read_text(os.path.join(topo, "physical_package_id"), "0")
            packages.setdefault(pkg, []).append(c)
        nodes = {}
        for path in glob.glob(os.path.join(root, "node", "node[0-9]*")):
            cs = [x for x in parse_cpulist(read_text(os.path.join(path, "cpulist"), "")) if x in online]
            if cs:
                nodes[os.path.basename(path)[4:]] = cs
        if not nodes:
            nodes = {"0": online}
        possible = parse_cpulist(read_text(os.path.join(cpu_dir, "possible"), "") or "")
        return cls(online, cores, nodes, packages, possible=(max(possible) + 1) if possible else None)


def record(root=SYS_CPU):
    """The topology of this host as a dict, in the form the unit tests replay."""
    return Topology.from_sysfs(root).as_dict()


# ------------------------------------------------------------------ NICs

_QUEUE_RE = re.compile(r"(?:^|[-_.])(?:(rx|tx|input|output|txrx|TxRx|combined|comp)[-_.]?(\d+)|(\d+)$)", re.I)


def _queue_of(action):
    """Queue number named by an IRQ action ('virtio2-input.0', 'eth0-TxRx-3', 'mlx5_comp5@...')."""
    m = None
    for m in _QUEUE_RE.finditer(action.split("@")[0]):
        pass
    if not m:
        return None
    return int(m.group(2) if m.group(2) is not None else m.group(3))


def nic_info(interfaces, sys_net=SYS_NET, proc=PROC):
    """{ifname: {numa_node, rx: [...], tx: [...], irqs: [{irq, name, queue}]}}.

    Raises NetstackError naming ``interfaces`` for an interface that does not exist."""
    interrupts = facts.parse_interrupts(read_text(os.path.join(proc, "interrupts"), ""))
    out = {}
    for ifname in interfaces:
        if not isinstance(ifname, str) or not IFNAME_RE.match(ifname):
            raise NetstackError("not an interface name: %r" % (ifname,), field="interfaces")
        base = os.path.join(sys_net, ifname)
        if not os.path.isdir(base):
            raise NetstackError("no such interface %s" % ifname, field="interfaces")
        dev_link = os.path.join(base, "device")
        dev = os.path.realpath(dev_link) if os.path.exists(dev_link) else None
        numa = None
        if dev:
            for d in (dev, os.path.dirname(dev)):
                v = read_text(os.path.join(d, "numa_node"))
                if v is not None:
                    numa = int(v) if int(v) >= 0 else None
                    break
        qbase = os.path.join(base, "queues")
        queues = sorted(os.listdir(qbase), key=lambda q: (q[:2], int(q[3:]))) if os.path.isdir(qbase) else []
        irqs = []
        for n in facts.irqs_for(ifname, dev, interrupts):
            name = interrupts.get(n, {}).get("actions") or ""
            queue = None if re.search(r"config|event|async|ctrl|misc", name, re.I) else _queue_of(name)
            irqs.append({"irq": n, "name": name, "queue": queue})
        out[ifname] = {"numa_node": numa, "virtual": dev is None,
                       "rx": [q for q in queues if q.startswith("rx-")],
                       "tx": [q for q in queues if q.startswith("tx-")], "irqs": irqs}
    return out


# ------------------------------------------------------------------ planner

def local_nodes(topo, nics):
    """NUMA nodes the NICs sit on, busiest first (by queue IRQs); node 0 when none says."""
    weight = {}
    for info in nics.values():
        if info.get("numa_node") is not None and info["numa_node"] in topo.nodes:
            weight[info["numa_node"]] = weight.get(info["numa_node"], 0) + max(1, len(info.get("irqs") or []))
    if not weight:
        return [min(topo.nodes)] if topo.nodes else [0]
    return sorted(weight, key=lambda n: (-weight[n], n))


def core_order(topo, nics):
    """Cores in the order the network set takes them: NIC-local nodes first (busiest NIC
    node first), then the other nodes by number; within a node, lowest CPU first."""
    first = local_nodes(topo, nics)
    rank = dict((n, i) for i, n in enumerate(first))
    return sorted(topo.cores, key=lambda core: (rank.get(topo.node_of(core[0]), len(rank) + topo.node_of(core[0])),
                                                core[0]))


def auto_cores(topo):
    """Default size of the network set: one core in eight, at least one.  A starting point
    that the AMP controller then resizes from measured load (katalyst-core aims at 50 %
    softirq utilisation of the network cores; ByteDance's AMP resizes the same way)."""
    return max(1, (len(topo.cores) + 7) // 8)


def _pow2(n):
    p = 1
    while p < n:
        p <<= 1
    return p


def resolve_net_cpus(topo, nics, net_cpus="auto"):
    """(network CPUs, notes).  ``net_cpus``: 'auto', a count of CPUs, or a CPU list."""
    notes = []
    order = core_order(topo, nics)
    if net_cpus in (None, "auto"):
        k = auto_cores(topo)
        chosen = [c for core in order[:k] for c in core]
        notes.append("auto: %d of %d cores (one in eight, at least one)" % (k, len(topo.cores)))
    elif isinstance(net_cpus, int) and not isinstance(net_cpus, bool):
        count = int(net_cpus)
        if count < 1:
            raise NetstackError("must be at least 1", field="net_cpus")
        if count >= len(topo.online):
            raise NetstackError("%d network CPUs would leave no CPU for applications (this host has %d online)"
                                % (count, len(topo.online)), field="net_cpus")
        chosen = []
        for core in order:
            if len(chosen) >= count:
                break
            chosen += core
        if len(chosen) > count:
            notes.append("%d CPUs rounded up to %d to keep SMT siblings together" % (count, len(chosen)))
        if len(chosen) >= len(topo.online):
            raise NetstackError("%d network CPUs, rounded up to whole cores (%d), would leave no CPU for "
                                "applications" % (count, len(chosen)), field="net_cpus")
    else:
        chosen = _cpus_arg(net_cpus, "net_cpus")
        bad = [c for c in chosen if c not in topo.online]
        if bad:
            raise NetstackError("CPU(s) %s do not exist or are offline (online: %s)"
                                % (format_cpulist(bad), format_cpulist(topo.online)), field="net_cpus")
        if not chosen:
            raise NetstackError("the network set is empty", field="net_cpus")
        split = [core for core in topo.cores if 0 < len(set(core) & set(chosen)) < len(core)]
        if split:
            notes.append("the list splits SMT core(s) %s: siblings share one core's caches and execution units"
                         % ", ".join(format_cpulist(c) for c in split))
        far = sorted(set(topo.node_of(c) for c in chosen) - set(local_nodes(topo, nics)))
        if far:
            notes.append("CPUs on NUMA node(s) %s are not local to the NICs" % ",".join(str(n) for n in far))
    chosen = sorted(chosen)
    if len(chosen) >= len(topo.online):
        raise NetstackError("every CPU is in the network set: nothing is left for applications", field="net_cpus")
    return chosen, notes


def plan(topo, nics, net_cpus="auto", rfs=False, flow_entries=DEFAULT_FLOW_ENTRIES, xps=True):
    """Everything a partition writes, as data.

    * each queue IRQ on one network CPU (queue i -> i-th network CPU, round robin; CPUs
      on the NIC's own node first), other IRQs of the NIC (config, events) on the whole set;
    * ``rps_cpus`` of every receive queue: the network CPUs on the NIC's node (all of them
      when none is local), so protocol processing stays there even for one-queue NICs,
      veth and loopback;
    * with ``rfs`` (off by default): ``net.core.rps_sock_flow_entries`` and each queue's
      ``rps_flow_cnt`` (its share, a power of two).  RFS sends a packet to the CPU where its
      consumer last read, ahead of the ``rps_cpus`` map (get_rps_cpu), and under a partition
      the consumers are on the application CPUs: RFS moves the receive work back onto them
      (measured: 0 % of NET_RX on the network CPUs with RFS, 50 % without; docs/amp.md);
    * with ``xps`` and several transmit queues: every online CPU mapped to one transmit queue
      (CPU i -> queue i mod n), so senders on application CPUs do not share a queue lock.
    """
    net, notes = resolve_net_cpus(topo, nics, net_cpus)
    app = [c for c in topo.online if c not in net]
    out = {"net_cpus": net, "app_cpus": app, "net_cores": len(set(tuple(topo.core_of(c)) for c in net)),
           "notes": notes, "irqs": {}, "rps": {}, "xps": {}, "rps_flow_cnt": {}, "rps_sock_flow_entries": None}
    for ifname in sorted(nics):
        info = nics[ifname]
        node = info.get("numa_node")
        local = [c for c in net if node is None or topo.node_of(c) == node] or net
        ordered = local + [c for c in net if c not in local]
        queue_irqs = sorted((i for i in info["irqs"] if i["queue"] is not None), key=lambda i: (i["queue"], i["irq"]))
        queues = sorted(set(i["queue"] for i in queue_irqs))
        for i in info["irqs"]:
            if i["queue"] is None:
                out["irqs"][i["irq"]] = format_cpulist(local)
            else:
                out["irqs"][i["irq"]] = str(ordered[queues.index(i["queue"]) % len(ordered)])
        for q in info["rx"]:
            out["rps"]["%s/%s" % (ifname, q)] = local
            if rfs:
                out["rps_flow_cnt"]["%s/%s" % (ifname, q)] = _pow2(max(1, flow_entries // max(1, len(info["rx"]))))
        if xps and len(info["tx"]) > 1:
            for j, q in enumerate(info["tx"]):
                out["xps"]["%s/%s" % (ifname, q)] = [c for i, c in enumerate(topo.online) if i % len(info["tx"]) == j]
    if rfs:
        out["rps_sock_flow_entries"] = _pow2(flow_entries)
    return out


def plan_text(p):
    """The plan in a form for diffs and logs: CPU lists as text."""
    d = copy.deepcopy(p)
    for k in ("net_cpus", "app_cpus"):
        d[k] = format_cpulist(d[k])
    for k in ("rps", "xps"):
        d[k] = dict((q, format_cpulist(v)) for q, v in d[k].items())
    d["irqs"] = dict((str(k), v) for k, v in d["irqs"].items())
    return d


# ------------------------------------------------------------------ spec

def validate(spec):
    """Check a partition spec (the module's and the agent's); returns it normalised.
    NetstackError names the field."""
    s = dict(spec)
    name = s.get("name", "amp")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise NetstackError("must be 1-40 letters, digits, '_' or '-'", field="name")
    s["name"] = name
    ifs = s.get("interfaces")
    if not isinstance(ifs, list) or not ifs:
        raise NetstackError("give at least one interface", field="interfaces")
    for i in ifs:
        if not isinstance(i, str) or not IFNAME_RE.match(i):
            raise NetstackError("not an interface name: %r" % (i,), field="interfaces")
    cgs = s.get("app_cgroups") or []
    units = s.get("app_units") or []
    if not isinstance(cgs, list) or not isinstance(units, list):
        raise NetstackError("must be a list", field="app_cgroups" if not isinstance(cgs, list) else "app_units")
    if not cgs and not units:
        raise NetstackError("the application set is empty: give app_cgroups or app_units (the CPUs left to "
                            "applications must fence someone)", field="app_cgroups")
    for c in cgs:
        if not isinstance(c, str) or not c.strip("/") or ".." in c.split("/"):
            raise NetstackError("not a cgroup path: %r" % (c,), field="app_cgroups")
    for u in units:
        try:
            kstate.unit_name(u)
        except NetstackError:
            raise NetstackError("not a systemd service, slice or scope name: %r" % (u,), field="app_units")
    n = s.get("net_cpus", "auto")
    if isinstance(n, str) and n.isascii() and n.isdigit():
        # "2" from a survey or extra var is a count; a list is "2-3" or "2,"
        n = strict_int(n, "net_cpus")
    if not (n == "auto" or isinstance(n, (list, str)) or (isinstance(n, int) and not isinstance(n, bool))):
        raise NetstackError("auto, a count of CPUs, or a CPU list", field="net_cpus")
    if isinstance(n, int) and not isinstance(n, bool):
        strict_int(n, "net_cpus", 1, MAX_CPUS - 1)  # a count; it must leave one CPU to applications
    if isinstance(n, list) or (isinstance(n, str) and n != "auto"):
        if not _cpus_arg(n, "net_cpus"):
            raise NetstackError("the network set is empty", field="net_cpus")
    s["net_cpus"] = n
    fe = s.get("rps_sock_flow_entries", DEFAULT_FLOW_ENTRIES)
    if isinstance(fe, bool) or not isinstance(fe, int) or fe < 1 or fe & (fe - 1) or fe > (1 << 27):
        raise NetstackError("must be a power of two up to 2^27", field="rps_sock_flow_entries")
    s["rps_sock_flow_entries"] = fe
    s["rfs"] = bool(s.get("rfs", False))
    s["xps"] = bool(s.get("xps", True))
    ib = s.get("irqbalance", "ban")
    if ib not in ("ban", "ignore"):
        raise NetstackError("ban or ignore", field="irqbalance")
    s["irqbalance"] = ib
    s["interfaces"], s["app_cgroups"], s["app_units"] = list(ifs), list(cgs), list(units)
    return s


# ------------------------------------------------------------------ host changes

def cpuset_root():
    """Mount point of the cpuset hierarchy (v1, or v2 with cpuset available) and its version."""
    layout = facts.cgroup_layout(read_text("/proc/self/mountinfo", ""))
    cs = layout.get("cpuset")
    if not cs:
        return None, None
    return cs["path"], cs["version"]


def cgroup_path(name, root):
    if name.startswith("/sys/fs/cgroup/"):
        return kstate.cgroup_dir(name.rstrip("/"))
    return kstate.cgroup_dir(os.path.join(root, name.strip("/")))


def _irqbalance_text(old, ban_irqs, banned_cpus):
    """/etc/default/irqbalance with our bans set (other lines kept)."""
    lines = (old or "").splitlines()
    args_val = facts.parse_shell_vars(old or "").get("IRQBALANCE_ARGS", "")
    kept = [a for a in args_val.split() if not a.startswith("--banirq=")]
    args = " ".join(kept + ["--banirq=%d" % i for i in sorted(ban_irqs)])
    want = {"IRQBALANCE_BANNED_CPULIST": banned_cpus, "IRQBALANCE_ARGS": args}
    marker = "# netstack.tuning AMP partition: NIC IRQs and application CPUs banned"
    out, seen = [], set()
    for line in lines:
        m = re.match(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=", line)
        if m and m.group(1) in want:
            if m.group(1) not in seen:
                out.append('%s="%s"' % (m.group(1), want[m.group(1)]))
                seen.add(m.group(1))
            continue
        out.append(line)
    missing = [k for k in ("IRQBALANCE_BANNED_CPULIST", "IRQBALANCE_ARGS") if k not in seen]
    if missing:
        if marker not in out:
            out.append(marker)
        out += ['%s="%s"' % (k, want[k]) for k in missing]
    return "\n".join(out) + "\n"


def movable_irqs(irqs, probe=True):
    """{irq: None or why it cannot be moved}: writing the current affinity back is refused
    (EIO) for kernel-managed IRQs; that write changes nothing where it succeeds.

    It is a write all the same (irqbalance moving the IRQ between the read and the write
    back would be undone), so check mode passes ``probe=False``: every IRQ counts as
    movable."""
    if not probe:
        return dict((n, None) for n in irqs)
    out = {}
    for n in irqs:
        item = kstate.Item("irq", str(n))
        try:
            item.write(item.read())
            out[n] = None
        except NetstackError as e:
            out[n] = "kernel-managed or not movable (%s)" % (e.msg,)
    return out


def changes(spec, p, topo, nics, cg_root=None, cg_version=None, irq_ok=None):
    """[(Item, value)] realising plan ``p`` for ``spec``, in a safe order: fences first
    (applications move away from the network CPUs), then IRQs, then steering."""
    nbits = topo.possible
    out = []
    app = format_cpulist(p["app_cpus"])
    for cg in spec["app_cgroups"]:
        if not cg_root:
            raise NetstackError("no cpuset controller on this host (neither cgroup v2 with cpuset nor a v1 "
                                "cpuset hierarchy): use app_units or enable cpuset", field="app_cgroups")
        path = cgroup_path(cg, cg_root)
        cur = kstate.cpuset_read(path)
        if cur is not None:
            mems = kstate.parse_cpuset_value(cur)[1]
        else:
            mems = ""
        if cg_version == 1 and not mems:
            mems = read_text(os.path.join(os.path.dirname(path), "cpuset.effective_mems")) or \
                read_text(os.path.join(os.path.dirname(path), "cpuset.mems")) or ""
        out.append((kstate.Item("cpuset", path), "cpus=%s mems=%s" % (app, mems)))
    for u in spec["app_units"]:
        out.append((kstate.Item("unit", u), app))
    for n, cpus in sorted(p["irqs"].items()):
        if irq_ok is not None and irq_ok.get(n):
            continue
        out.append((kstate.Item("irq", str(n)), kstate.normalize(cpus)))
    if p["rps_sock_flow_entries"] is not None:
        out.append((kstate.Item("sysctl", "net.core.rps_sock_flow_entries"), str(p["rps_sock_flow_entries"])))
    for q, cpus in sorted(p["rps"].items()):
        ifname, qn = q.split("/")
        base = os.path.join(SYS_NET, ifname, "queues", qn)
        out.append((kstate.Item("sysfs", os.path.join(base, "rps_cpus")), kstate.normalize(cpus_to_mask(cpus, nbits))))
        if q in p["rps_flow_cnt"]:
            out.append((kstate.Item("sysfs", os.path.join(base, "rps_flow_cnt")), str(p["rps_flow_cnt"][q])))
    for q, cpus in sorted(p["xps"].items()):
        ifname, qn = q.split("/")
        out.append((kstate.Item("sysfs", os.path.join(SYS_NET, ifname, "queues", qn, "xps_cpus")),
                    kstate.normalize(cpus_to_mask(cpus, nbits))))
    if spec["irqbalance"] == "ban" and os.path.exists(IRQBALANCE_DEFAULTS):
        item = kstate.Item("file", IRQBALANCE_DEFAULTS)
        ban = [n for n in p["irqs"] if not (irq_ok or {}).get(n)]
        out.append((item, _irqbalance_text(item.read_raw(), ban, app)))
    return out


def _irqbalance_restart():
    """Restart irqbalance where systemd runs it (it reads its defaults file only at start).
    Returns a warning for one running outside systemd, or None."""
    pids = facts.find_processes(("irqbalance",))["irqbalance"]
    if not pids:
        return None
    exe = which("systemctl")
    if exe and os.path.isdir("/run/systemd/system"):
        rc, _o, err = run([exe, "try-restart", "irqbalance.service"], timeout=30)
        if rc == 0:
            return None
        return "irqbalance restart failed: %s" % err.strip()
    return ("irqbalance (pid %s) runs outside systemd: restart it so it reads the bans in %s, or it may move "
            "the pinned IRQs" % (",".join(str(x) for x in pids), IRQBALANCE_DEFAULTS))


# ------------------------------------------------------------------ the resource

class Partition(object):
    """A named partition on this host; its record lives in <state_dir>/amp/<name>.json."""

    def __init__(self, name="amp", state_dir=journal.DEFAULT_STATE_DIR, sys_cpu=SYS_CPU):
        self.name = name
        self.state_dir = state_dir
        self.path = os.path.join(state_dir, "amp", "%s.json" % name)
        self.sys_cpu = sys_cpu

    # -- record --------------------------------------------------------------
    def check_state_dir(self):
        """NetstackError naming ``state_dir`` when it (or its ``amp`` subdirectory) exists
        and is not a directory: checked before anything is read or made under it."""
        for d in (self.state_dir, os.path.dirname(self.path)):
            if os.path.lexists(d) and not os.path.isdir(d):
                raise NetstackError("%s exists and is not a directory" % d, field="state_dir")

    def record(self):
        self.check_state_dir()
        try:
            with open(self.path) as f:
                return json.load(f)
        except (IOError, OSError) as e:
            if e.errno == errno.ENOENT:
                return None
            raise NetstackError("cannot read the partition record %s: %s" % (self.path, e.strerror or e),
                                field="state_dir")
        except ValueError:
            raise NetstackError("partition record %s is not valid JSON" % self.path, field="name")

    def _save(self, rec):
        d = os.path.dirname(self.path)
        if not os.path.isdir(d):
            os.makedirs(d, 0o700)
        kstate.atomic_write(self.path, json.dumps(rec, indent=1, sort_keys=True) + "\n", mode=0o600)

    # -- read ----------------------------------------------------------------
    def compute(self, spec, net_cpus=None, check_mode=False):
        """(spec, topology, nics, plan, changes, skipped IRQs).  Writes nothing in check
        mode; otherwise only the movability probe's write-back of IRQ affinities."""
        spec = validate(dict(spec, name=self.name))
        topo = Topology.from_sysfs(self.sys_cpu)
        nics = nic_info(spec["interfaces"])
        p = plan(topo, nics, spec["net_cpus"] if net_cpus is None else net_cpus, rfs=spec["rfs"],
                 flow_entries=spec["rps_sock_flow_entries"], xps=spec["xps"])
        irq_ok = movable_irqs(sorted(p["irqs"]), probe=not check_mode)
        root, version = cpuset_root()
        ch = changes(spec, p, topo, nics, root, version, irq_ok)
        skipped = dict((str(n), why) for n, why in irq_ok.items() if why)
        return spec, topo, nics, p, ch, skipped

    def status(self):
        rec = self.record()
        if not rec:
            return {"state": "absent", "name": self.name}
        items = [kstate.item_from_dict(d) for d in rec["items"]]
        drift = []
        for it, d in zip(items, rec["items"]):
            try:
                cur = it.read_raw()
            except NetstackError as e:
                cur = "unreadable: %s" % e.msg
            if cur != d["value"]:
                drift.append({"key": it.label(), "want": d["value"], "have": cur})
        return {"state": "present", "name": self.name, "net_cpus": rec["net_cpus"], "app_cpus": rec["app_cpus"],
                "spec": rec["spec"], "drift": drift, "journal_ids": rec.get("journal_ids", [])}

    # -- write ---------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self, check_mode=False):
        """One writer at a time per partition, across processes: the module's absent runs
        right after it signals the agent, whose reload runs absent too (and whose controller
        may be resizing); unserialised, both read the record and both unlink it."""
        self.check_state_dir()
        if check_mode:
            yield
            return
        d = os.path.dirname(self.path)
        if not os.path.isdir(d):
            try:
                os.makedirs(d, 0o700)
            except OSError as e:
                raise NetstackError("cannot create %s: %s" % (d, e.strerror or e), field="state_dir")
        fd = os.open(os.path.join(d, "%s.lock" % self.name), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def present(self, spec, net_cpus=None, check_mode=False, source="cpu_partition", reason="", keep_size=False,
                resize=False):
        """Apply the partition.  ``net_cpus`` overrides the spec's (the controller's resize);
        ``keep_size``: keep the network set the record holds (the agent owns its size);
        ``resize``: only change a partition that exists (checked under the lock, so a resize
        decided just before ``absent`` cannot bring the partition back)."""
        with self._locked(check_mode):
            if resize and self.record() is None:
                raise NetstackError("partition %s was removed: not resizing it" % self.name, field="name")
            return self._present(spec, net_cpus, check_mode, source, reason, keep_size)

    def _present(self, spec, net_cpus, check_mode, source, reason, keep_size):
        rec = self.record()
        if keep_size and rec and net_cpus is None:
            net_cpus = rec["net_cpus"]
        spec, topo, nics, p, ch, skipped = self.compute(spec, net_cpus, check_mode)
        before = dict((it.label(), it.read_raw()) for it, _v in ch)
        todo = [(it, v) for it, v in ch if before[it.label()] != v]
        after = dict((it.label(), v) for it, v in ch)
        old_items = rec["items"] if rec else []
        new_idents = set(it.ident() for it, _v in ch)
        # keys the old record set and the new plan no longer does (a queue IRQ gone, a cgroup
        # dropped from the spec): back to their original values
        orphans = [kstate.item_from_dict(d) for d in old_items
                   if tuple(d["ident"]) not in new_idents]
        orig = journal.Journal(self.state_dir).original_values([o.ident() for o in orphans]) if orphans else {}
        for o in orphans:
            if o.ident() in orig:
                todo.append((o, orig[o.ident()]))
                before[o.label()] = o.read_raw()
                after[o.label()] = orig[o.ident()]
        new_rec = {"name": self.name, "spec": spec, "net_cpus": format_cpulist(p["net_cpus"]),
                   "app_cpus": format_cpulist(p["app_cpus"]), "net_cores": p["net_cores"],
                   "items": [dict(it.as_dict(), ident=list(it.ident()), value=v) for it, v in ch],
                   "journal_ids": list(rec.get("journal_ids", [])) if rec else []}
        res = {"changed": bool(todo) or (rec or {}).get("spec") != spec, "plan": plan_text(p),
               "skipped_irqs": skipped, "warnings": [], "journal_id": None,
               "diff": {"before": dict((k, before[k]) for k in sorted(before) if before[k] != after[k]),
                        "after": dict((k, after[k]) for k in sorted(after) if before[k] != after[k])},
               "net_cpus": new_rec["net_cpus"], "app_cpus": new_rec["app_cpus"],
               "previous_net_cpus": rec["net_cpus"] if rec else None}
        if check_mode and p["irqs"]:
            res["warnings"].append("check mode does not probe whether the IRQs can be moved (the probe writes "
                                   "each affinity back); kernel-managed IRQs show up here as planned moves")
        if check_mode or not res["changed"]:
            return res
        if todo:
            summary = journal.Journal(self.state_dir).apply(
                todo, source=source, reason=reason or "AMP partition %s: network CPUs %s, applications %s"
                % (self.name, new_rec["net_cpus"], new_rec["app_cpus"]))
            res["journal_id"] = summary["id"]
            new_rec["journal_ids"].append(summary["id"])
        self._save(new_rec)
        if any(it.kind == "file" and it.key == IRQBALANCE_DEFAULTS for it, _v in todo):
            w = _irqbalance_restart()
            if w:
                res["warnings"].append(w)
        return res

    def absent(self, check_mode=False, source="cpu_partition", reason=""):
        """Write back the value every key had before this partition first changed it."""
        with self._locked(check_mode):
            return self._absent(check_mode, source, reason)

    def _absent(self, check_mode, source, reason):
        rec = self.record()
        if not rec:
            return {"changed": False, "diff": {"before": {}, "after": {}}, "journal_id": None, "restored": []}
        items = [kstate.item_from_dict(d) for d in rec["items"]]
        orig = journal.Journal(self.state_dir).original_values([it.ident() for it in items])
        todo, before, after = [], {}, {}
        # reverse order: steering and IRQs first, the fences (and cgroups we created) last
        for it in reversed(items):
            if it.ident() not in orig:
                continue
            cur = it.read_raw()
            if cur != orig[it.ident()]:
                todo.append((it, orig[it.ident()]))
                before[it.label()], after[it.label()] = cur, orig[it.ident()]
        res = {"changed": True, "diff": {"before": before, "after": after}, "journal_id": None,
               "restored": sorted(before), "warnings": []}
        if check_mode:
            return res
        if todo:
            summary = journal.Journal(self.state_dir).apply(
                todo, source=source, reason=reason or "AMP partition %s removed: original values" % self.name)
            res["journal_id"] = summary["id"]
        os.unlink(self.path)
        if any(it.kind == "file" and it.key == IRQBALANCE_DEFAULTS for it, _v in todo):
            w = _irqbalance_restart()
            if w:
                res["warnings"].append(w)
        return res
