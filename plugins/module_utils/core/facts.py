# -*- coding: utf-8 -*-
# Copyright: netstack.tuning contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What this host's network stack can do, probed rather than guessed.

``gather(subset, netns)`` returns one dict per probe (see ``PROBES``).  Capabilities are
*tried*: BPF program and map types are loaded/created with the bpf(2) syscall, qdiscs are
installed on ``lo`` of a throwaway network namespace, MSG_ZEROCOPY and io_uring are set
up for real.  Nothing on the host changes: every probe object is closed, and the
namespaces die with the forked child that made them.

Plain Python (3.9+, stdlib only): this runs on managed hosts.  docs/facts.md describes
every fact.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ctypes
import errno
import glob
import mmap
import os
import re
import socket
import struct

from ansible_collections.netstack.tuning.plugins.module_utils.core.common import NetstackError, read_text, run, which
from ansible_collections.netstack.tuning.plugins.module_utils.core.cpus import mask_to_cpus, parse_cpulist
from ansible_collections.netstack.tuning.plugins.module_utils.core.nsutil import (
    enter_netns, errno_text, in_child, iproute, netns_path, new_netns, set_up)
from ansible_collections.netstack.tuning.plugins.module_utils.core.syscall import syscall

PROBES = ("kernel", "bpf", "bcc", "tcp", "qdiscs", "zerocopy", "cpu", "interfaces", "cgroups", "tuners")
# Probes whose answer depends on the network namespace; with ``netns`` they run inside it.
NETNS_PROBES = ("tcp", "interfaces")
SO_ZEROCOPY = 60
# Raw syscalls (bpf, io_uring_setup, io_uring_register) go through core/syscall.py, the
# engine's one table of syscall numbers.


# --------------------------------------------------------------------------- kernel


def kernel_version_code(release):
    """``"6.18.44-fc"`` -> ``(6, 18, 44)``."""
    nums = [int(x) for x in re.findall(r"\d+", release.split("-")[0])[:3]]
    return tuple(nums + [0] * (3 - len(nums)))


def probe_kernel():
    u = os.uname()
    return {"release": u.release, "version": u.version, "arch": u.machine,
            "version_tuple": list(kernel_version_code(u.release))}


# --------------------------------------------------------------------------- bpf

BPF_MAP_CREATE, BPF_PROG_LOAD = 0, 5
PROG_LOAD_ATTEMPTS = 5          # BPF_PROG_LOAD tries before an EAGAIN is an answer (libbpf's count)
_ATTR_SIZE = 128  # enough for the fields used; the rest is zero, which every kernel accepts
# r0 = 0; exit
_PROG = struct.pack("=BBhiBBhi", 0xB7, 0, 0, 0, 0x95, 0, 0, 0)

# name: (prog type, expected attach type)
PROG_TYPES = {
    "socket_filter": (1, 0), "kprobe": (2, 0), "sched_cls": (3, 0), "sched_act": (4, 0),
    "tracepoint": (5, 0), "xdp": (6, 0), "perf_event": (7, 0), "cgroup_skb": (8, 0),
    "cgroup_sock": (9, 0), "lwt_in": (10, 0), "lwt_out": (11, 0), "lwt_xmit": (12, 0),
    "sock_ops": (13, 0), "sk_skb": (14, 0), "cgroup_device": (15, 6), "sk_msg": (16, 0),
    "raw_tracepoint": (17, 0),
    "cgroup_sock_addr": (18, 10),  # BPF_CGROUP_INET4_CONNECT
    "lwt_seg6local": (19, 0), "sk_reuseport": (21, 0), "flow_dissector": (22, 17),
    "cgroup_sysctl": (23, 18),
    "cgroup_sockopt": (25, 21),  # BPF_CGROUP_GETSOCKOPT
    "sk_lookup": (30, 36),
}

# name: (map type, key size, value size, max entries, flags)
MAP_TYPES = {
    "hash": (1, 4, 8, 1, 0), "array": (2, 4, 8, 1, 0), "prog_array": (3, 4, 4, 1, 0),
    "perf_event_array": (4, 4, 4, 1, 0), "percpu_hash": (5, 4, 8, 1, 0),
    "percpu_array": (6, 4, 8, 1, 0), "lru_hash": (9, 4, 8, 1, 0),
    "lpm_trie": (11, 8, 8, 1, 1),  # BPF_F_NO_PREALLOC is mandatory
    "devmap": (14, 4, 4, 1, 0), "sockmap": (15, 4, 4, 1, 0), "cpumap": (16, 4, 4, 1, 0),
    "xskmap": (17, 4, 4, 1, 0), "sockhash": (18, 4, 4, 1, 0), "queue": (22, 0, 4, 1, 0),
    "stack": (23, 0, 4, 1, 0), "ringbuf": (27, 0, 0, mmap.PAGESIZE, 0),
    "bloom_filter": (30, 0, 4, 1, 0),
}


def _bpf(cmd, attr):
    buf = ctypes.create_string_buffer(bytes(attr), _ATTR_SIZE)
    return syscall("bpf", ctypes.c_long(cmd), buf, ctypes.c_long(_ATTR_SIZE))


def bpf_prog_load(prog_type, attach_type=0, log_size=0):
    """Load ``r0 = 0; exit`` as ``prog_type``; return the fd (caller closes) or raise OSError.

    With ``log_size`` the verifier log is requested and its last line added to the error.
    """
    insns = ctypes.create_string_buffer(_PROG, len(_PROG))
    lic = ctypes.create_string_buffer(b"GPL")
    log = ctypes.create_string_buffer(log_size or 1)
    attr = bytearray(_ATTR_SIZE)
    maj, minor, patch = kernel_version_code(os.uname().release)
    struct.pack_into("=IIQQIIQII", attr, 0, prog_type, len(_PROG) // 8, ctypes.addressof(insns),
                     ctypes.addressof(lic), 1 if log_size else 0, log_size,
                     ctypes.addressof(log) if log_size else 0,
                     (maj << 16) | (minor << 8) | min(patch, 255), 0)
    struct.pack_into("=I", attr, 68, attach_type)  # after prog_name[16] and prog_ifindex
    for attempt in range(1, PROG_LOAD_ATTEMPTS + 1):
        try:
            return _bpf(BPF_PROG_LOAD, attr)
        except OSError as e:
            # the verifier stops with EAGAIN when a signal is pending (a child exiting, on a
            # busy machine): load again, as libbpf does
            if e.errno == errno.EAGAIN and attempt < PROG_LOAD_ATTEMPTS:
                continue
            lines = [ln for ln in log.value.decode("utf-8", "replace").splitlines() if ln.strip()]
            if lines:
                raise OSError(e.errno, "%s (verifier: %s)" % (e.strerror, lines[-1].strip()))
            raise


def bpf_map_create(map_type, key_size, value_size, max_entries, flags=0):
    attr = bytearray(_ATTR_SIZE)
    struct.pack_into("=IIIII", attr, 0, map_type, key_size, value_size, max_entries, flags)
    return _bpf(BPF_MAP_CREATE, attr)


def _try_fd(fn, *args):
    """(True, None) if ``fn`` returned an fd (closed here), else (False, error text)."""
    try:
        os.close(fn(*args))
        return True, None
    except OSError as e:
        return False, e.strerror or str(e)


def probe_bpf():
    progs, prog_errors = {}, {}
    for name, (ptype, attach) in sorted(PROG_TYPES.items()):
        ok, err = _try_fd(bpf_prog_load, ptype, attach)
        if not ok and "EPERM" not in err and "ENOSYS" not in err:
            err = _try_fd(bpf_prog_load, ptype, attach, 65536)[1] or err
        progs[name] = ok
        if err:
            prog_errors[name] = err
    maps, map_errors = {}, {}
    for name, spec in sorted(MAP_TYPES.items()):
        maps[name], err = _try_fd(bpf_map_create, *spec)
        if err:
            map_errors[name] = err
    mounts = read_text("/proc/mounts", "").splitlines()
    bpffs = [ln.split()[1] for ln in mounts if len(ln.split()) > 2 and ln.split()[2] == "bpf"]
    tracefs = [ln.split()[1] for ln in mounts if len(ln.split()) > 2 and ln.split()[2] == "tracefs"]
    kprobe_pmu = os.path.isdir("/sys/bus/event_source/devices/kprobe")
    kprobe_events = any(os.path.exists(os.path.join(t, "kprobe_events")) for t in tracefs)
    return {
        "syscall": any(progs.values()) or any(maps.values()),
        "prog_types": progs, "prog_type_errors": prog_errors,
        "map_types": maps, "map_type_errors": map_errors,
        "btf_vmlinux": os.path.exists("/sys/kernel/btf/vmlinux"),
        "kprobes": kprobe_pmu or kprobe_events,
        "kprobe_pmu": kprobe_pmu, "uprobe_pmu": os.path.isdir("/sys/bus/event_source/devices/uprobe"),
        "tracefs": tracefs,
        "bpffs": {"mounted": "/sys/fs/bpf" in bpffs, "mounts": bpffs},
        "jit_enable": _int(read_text("/proc/sys/net/core/bpf_jit_enable")),
        "unprivileged_bpf_disabled": _int(read_text("/proc/sys/kernel/unprivileged_bpf_disabled")),
    }


def _int(text):
    try:
        return int(text)
    except (TypeError, ValueError):
        return None


# --------------------------------------------------------------------------- bcc

SYSTEM_PYTHON = "/usr/bin/python3"


def kernel_headers(release=None, modules_dir="/lib/modules"):
    """Status of ``/lib/modules/<release>/build``: exact, fallback (other version) or missing."""
    release = release or os.uname().release
    build = os.path.join(modules_dir, release, "build")
    out = {"path": build, "target": None}
    if os.path.islink(build):
        out["target"] = os.path.realpath(build)
    if not os.path.isdir(build):
        out["status"] = "missing"
    elif out["target"] is None or release in os.path.basename(out["target"]):
        out["status"] = "exact"
    else:
        out["status"] = "fallback"
    out["installed"] = sorted(glob.glob("/usr/src/linux-headers-*"))
    return out


def probe_bcc(python=SYSTEM_PYTHON):
    out = {"python": python, "importable": False, "version": None, "error": None}
    if not os.access(python, os.X_OK):
        out["error"] = "%s not found" % python
    else:
        try:
            rc, stdout, stderr = run([python, "-c", "import bcc; print(bcc.__version__)"], timeout=60)
        except NetstackError as e:
            rc, stdout, stderr = 1, "", str(e)
        if rc == 0:
            out.update(importable=True, version=stdout.strip() or None)
        else:
            lines = stderr.strip().splitlines()
            out["error"] = lines[-1] if lines else "rc=%d" % rc
    out["kernel_headers"] = kernel_headers()
    return out


# --------------------------------------------------------------------------- tcp

def probe_tcp():
    rel = os.uname().release
    mod_dir = "/lib/modules/%s/kernel/net/ipv4" % rel
    loadable = set()
    for path in glob.glob(os.path.join(mod_dir, "tcp_*.ko*")):
        loadable.add(re.sub(r"\.ko(\.\w+)?$", "", os.path.basename(path))[4:])
    return {
        "available_congestion_control": (read_text("/proc/sys/net/ipv4/tcp_available_congestion_control") or "").split(),
        "allowed_congestion_control": (read_text("/proc/sys/net/ipv4/tcp_allowed_congestion_control") or "").split(),
        "congestion_control": read_text("/proc/sys/net/ipv4/tcp_congestion_control"),
        "loadable": sorted(loadable),
        "modules_dir": os.path.isdir("/lib/modules/%s" % rel),
    }


# --------------------------------------------------------------------------- qdiscs

# qdisc: the tc arguments after "dev lo"
QDISCS = {
    "pfifo_fast": "root pfifo_fast", "pfifo": "root pfifo", "bfifo": "root bfifo",
    "noqueue": "root noqueue", "fq": "root fq", "fq_codel": "root fq_codel", "cake": "root cake",
    "netem": "root netem", "htb": "root htb", "tbf": "root tbf rate 1mbit burst 32kbit latency 400ms",
    "sfq": "root sfq", "prio": "root prio", "red": "root red limit 400000 avpkt 1000 min 30000 max 90000 burst 55",
    "codel": "root codel", "ingress": "ingress", "clsact": "clsact",
}
# mq needs a multi-queue device: probed on a 2-tx-queue veth (or dummy) inside the netns
# (pyroute2 link arguments; the links go with the probe's throwaway netns)
MQ_DEVICES = (("veth", "nsf-mq1"), ("dummy", None))  # (kind, peer)


def _tc_error(stderr, rc):
    """The line of tc's stderr that says what failed (tc may print notes before it)."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for ln in lines:
        if ln.startswith(("Error", "RTNETLINK")):
            return ln
    return lines[-1] if lines else "rc=%d" % rc


def _qdisc_work():
    """In the probe's throwaway netns: links through pyroute2; each qdisc through tc, because
    what it reports is tc's own error line and pyroute2 (0.7 and 0.9) can build neither prio
    nor red (no encoders) nor report the kernel's extended error text."""
    tc = which("tc")
    if not tc:
        raise NetstackError("qdisc probe needs 'tc' (iproute2)", field="gather_subset")
    with iproute(field="gather_subset") as ipr:
        set_up(ipr, "lo", field="gather_subset")
        mq_dev = False
        for kind, peer in MQ_DEVICES:
            try:
                ipr.link("add", ifname="nsf-mq0", num_tx_queues=2, kind=kind, **({"peer": {"ifname": peer}} if peer else {}))
                mq_dev = True
                break
            except Exception:  # noqa: BLE001 - that kind of device is not available; try the next
                continue
    ok, errors = {}, {}
    for name, args in sorted(QDISCS.items()):
        verb = "add" if name in ("ingress", "clsact") else "replace"
        rc, _out, err = run([tc, "qdisc", verb, "dev", "lo"] + args.split())
        ok[name] = rc == 0
        if rc:
            errors[name] = _tc_error(err, rc)
        elif verb == "add":
            run([tc, "qdisc", "del", "dev", "lo", name])
    ok["mq"], errors["mq"] = None, "no multi-queue device could be created to try mq on"
    if mq_dev:
        rc, _out, err = run([tc, "qdisc", "replace", "dev", "nsf-mq0", "root", "mq"])
        ok["mq"], errors["mq"] = rc == 0, _tc_error(err, rc) if rc else None
    return {"probed": ok, "errors": dict((k, v) for k, v in errors.items() if v)}


def probe_qdiscs():
    res = in_child(_qdisc_work, setup=new_netns)
    res["available"] = sorted(k for k, v in res["probed"].items() if v)
    res["default_qdisc"] = read_text("/proc/sys/net/core/default_qdisc")
    return res


# --------------------------------------------------------------------------- zerocopy

IORING_REGISTER_PROBE, IORING_OP_SEND_ZC, IORING_OP_SENDMSG_ZC = 8, 47, 48


def io_uring_probe():
    """Set up a 2-entry ring; return (available, error, supported opcodes or None)."""
    params = ctypes.create_string_buffer(120)
    try:
        fd = syscall("io_uring_setup", ctypes.c_long(2), params)
    except OSError as e:
        return False, e.strerror, None
    try:
        probe = ctypes.create_string_buffer(16 + 8 * 256)
        syscall("io_uring_register", ctypes.c_long(fd), ctypes.c_long(IORING_REGISTER_PROBE),
                probe, ctypes.c_long(256))
        raw = probe.raw
        ops_len = raw[1]
        ops = set(raw[16 + 8 * i] for i in range(ops_len) if struct.unpack_from("=H", raw, 16 + 8 * i + 2)[0] & 1)
    except OSError:
        ops = None
    finally:
        os.close(fd)
    return True, None, ops


def _importable(name):
    try:
        __import__(name)
        return True
    except Exception:
        return False


def probe_zerocopy():
    out = {"optmem_max": _int(read_text("/proc/sys/net/core/optmem_max"))}
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, SO_ZEROCOPY, 1)
        out.update(msg_zerocopy=True, msg_zerocopy_error=None)
    except OSError as e:
        out.update(msg_zerocopy=False, msg_zerocopy_error=errno_text(e.errno) if e.errno else str(e))
    finally:
        s.close()
    ok, err, ops = io_uring_probe()
    out["io_uring"] = {
        "available": ok, "error": err,
        "disabled": _int(read_text("/proc/sys/kernel/io_uring_disabled")),
        "send_zc": None if ops is None else IORING_OP_SEND_ZC in ops,
        "sendmsg_zc": None if ops is None else IORING_OP_SENDMSG_ZC in ops,
        "python_bindings": {m: _importable(m) for m in ("liburing", "io_uring")},
    }
    return out


# --------------------------------------------------------------------------- cpu

def probe_cpu(sysfs="/sys/devices/system"):
    cpu_dir = os.path.join(sysfs, "cpu")
    online = parse_cpulist(read_text(os.path.join(cpu_dir, "online"), ""))
    siblings, packages = [], {}
    for c in online:
        topo = os.path.join(cpu_dir, "cpu%d" % c, "topology")
        sib = read_text(os.path.join(topo, "thread_siblings_list"))
        if sib and sib not in siblings:
            siblings.append(sib)
        pkg = read_text(os.path.join(topo, "physical_package_id"))
        if pkg is not None:
            packages.setdefault(pkg, []).append(c)
    nodes = {}
    for path in sorted(glob.glob(os.path.join(sysfs, "node", "node[0-9]*"))):
        nodes[os.path.basename(path)[4:]] = read_text(os.path.join(path, "cpulist"), "")
    if not nodes:  # kernel without NUMA: one node holding every CPU
        nodes["0"] = read_text(os.path.join(cpu_dir, "online"), "")
    smt = read_text(os.path.join(cpu_dir, "smt", "active"))
    return {
        "online": read_text(os.path.join(cpu_dir, "online"), ""),
        "online_list": online, "count": len(online),
        "possible": read_text(os.path.join(cpu_dir, "possible")),
        "isolated": read_text(os.path.join(cpu_dir, "isolated")) or "",
        "nohz_full": read_text(os.path.join(cpu_dir, "nohz_full")) or "",
        "smt_active": None if smt is None else smt == "1",
        "smt_control": read_text(os.path.join(cpu_dir, "smt", "control")),
        "thread_siblings": siblings,
        "packages": dict(sorted(packages.items())),
        "numa_nodes": nodes,
    }


# --------------------------------------------------------------------------- interfaces

_IRQ_KIND = re.compile(r"^\S*-(edge|level|fasteoi)$")


def parse_interrupts(text):
    """``/proc/interrupts`` -> {irq (int): {"chip", "actions", "counts"}} for numbered IRQs."""
    lines = text.splitlines()
    if not lines:
        return {}
    ncpu = len(lines[0].split())
    out = {}
    for line in lines[1:]:
        head, _sep, rest = line.partition(":")
        if not head.strip().isdigit():
            continue
        fields = rest.split()
        counts = [int(x) for x in fields[:ncpu] if x.isdigit()]
        desc = fields[len(counts):]
        kind = [i for i, f in enumerate(desc) if _IRQ_KIND.match(f)]
        if kind:
            chip, actions = " ".join(desc[:kind[0] + 1]), " ".join(desc[kind[0] + 1:])
        else:
            chip, actions = " ".join(desc[:-1]), desc[-1] if desc else ""
        out[int(head)] = {"chip": chip, "actions": actions, "counts": counts}
    return out


def irqs_for(ifname, device_path, interrupts):
    """IRQ numbers of an interface: MSI vectors of its device (or the PCI device above a
    virtio one) and every /proc/interrupts action naming the interface or its queues."""
    irqs = set()
    if device_path:
        for d in (device_path, os.path.dirname(device_path)):
            msi = os.path.join(d, "msi_irqs")
            if os.path.isdir(msi):
                irqs.update(int(n) for n in os.listdir(msi) if n.isdigit())
                break
    name_re = re.compile(r"(^|[^A-Za-z0-9])%s([^A-Za-z0-9]|$)" % re.escape(ifname))
    irqs.update(n for n, i in interrupts.items() if name_re.search(i["actions"]))
    return sorted(irqs)


def _queue_files(qdir, names):
    return {n: (read_text(os.path.join(qdir, n)) if n != "rps_flow_cnt" else _int(read_text(os.path.join(qdir, n))))
            for n in names}


def probe_interfaces(sys_net="/sys/class/net", proc="/proc"):
    interrupts = parse_interrupts(read_text(os.path.join(proc, "interrupts"), ""))
    devices = {}
    for ifname in sorted(os.listdir(sys_net)):
        base = os.path.join(sys_net, ifname)
        dev_link = os.path.join(base, "device")
        dev = os.path.realpath(dev_link) if os.path.exists(dev_link) else None
        numa = None
        if dev:
            numa = _int(read_text(os.path.join(dev, "numa_node"))) if os.path.exists(os.path.join(dev, "numa_node")) \
                else _int(read_text(os.path.join(os.path.dirname(dev), "numa_node")))
        drv = os.path.join(dev_link, "driver")
        qbase = os.path.join(base, "queues")
        queues = sorted(os.listdir(qbase)) if os.path.isdir(qbase) else []
        irqs = []
        for n in irqs_for(ifname, dev, interrupts):
            info = interrupts.get(n, {})
            irqs.append({"irq": n, "name": info.get("actions") or None,
                         "smp_affinity_list": read_text(os.path.join(proc, "irq", str(n), "smp_affinity_list")),
                         "effective_affinity_list": read_text(
                             os.path.join(proc, "irq", str(n), "effective_affinity_list"))})
        devices[ifname] = {
            "mtu": _int(read_text(os.path.join(base, "mtu"))),
            "operstate": read_text(os.path.join(base, "operstate")),
            "address": read_text(os.path.join(base, "address")),
            "virtual": dev is None,
            "driver": os.path.basename(os.path.realpath(drv)) if os.path.exists(drv) else None,
            "numa_node": numa,
            "rx_queues": {q: _queue_files(os.path.join(qbase, q), ("rps_cpus", "rps_flow_cnt"))
                          for q in queues if q.startswith("rx-")},
            "tx_queues": {q: _queue_files(os.path.join(qbase, q), ("xps_cpus",))
                          for q in queues if q.startswith("tx-")},
            "irqs": irqs,
        }
    return {"rps_sock_flow_entries": _int(read_text(os.path.join(proc, "sys/net/core/rps_sock_flow_entries"))),
            "devices": devices}


# --------------------------------------------------------------------------- cgroups

def _unescape(path):
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), path)


def parse_mountinfo(text):
    """``/proc/self/mountinfo`` -> list of {"mountpoint", "fstype", "source", "super_options"}."""
    out = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        lf, rf = left.split(), right.split()
        if len(lf) < 5 or len(rf) < 2:
            continue
        out.append({"mountpoint": _unescape(lf[4]), "root": _unescape(lf[3]), "fstype": rf[0], "source": rf[1],
                    "super_options": rf[2].split(",") if len(rf) > 2 else []})
    return out


# cgroup v1 super options that are not controllers ("name=systemd" is kept: it names a hierarchy)
_V1_OPTIONS = ("rw", "ro", "clone_children", "noprefix", "xattr", "cpuset_v2_mode", "favordynmods")


def cgroup_layout(mountinfo_text, read=read_text):
    """v1/v2/hybrid layout and where the cpuset controller lives."""
    mounts = parse_mountinfo(mountinfo_text)
    v2 = [m["mountpoint"] for m in mounts if m["fstype"] == "cgroup2"]
    v1 = {}
    for m in mounts:
        if m["fstype"] == "cgroup":
            ctrls = [o for o in m["super_options"] if o not in _V1_OPTIONS and not o.startswith("release_agent=")]
            v1[m["mountpoint"]] = sorted(ctrls)
    v2_ctrls = {p: (read(os.path.join(p, "cgroup.controllers")) or "").split() for p in v2}
    mode = "hybrid" if v1 and v2 else "v2" if v2 else "v1" if v1 else "none"
    cpuset = None
    for path, ctrls in sorted(v1.items()):
        if "cpuset" in ctrls:
            cpuset = {"version": 1, "path": path}
            break
    else:
        for path in v2:
            if "cpuset" in v2_ctrls[path]:
                cpuset = {"version": 2, "path": path}
                break
    return {"mode": mode, "v2_mounts": v2, "v2_controllers": v2_ctrls, "v1_mounts": v1, "cpuset": cpuset}


def probe_cgroups():
    out = cgroup_layout(read_text("/proc/self/mountinfo", ""))
    out["self"] = (read_text("/proc/self/cgroup") or "").splitlines()
    return out


# --------------------------------------------------------------------------- tuners

SYSCTL_DIRS = ("/etc/sysctl.d", "/run/sysctl.d", "/usr/local/lib/sysctl.d", "/usr/lib/sysctl.d", "/lib/sysctl.d")


def find_processes(names, proc="/proc"):
    """{name: [pid, ...]} of processes whose comm, or argv[0]/argv[1] basename, is a name."""
    found = {n: [] for n in names}
    for pid in os.listdir(proc):
        if not pid.isdigit():
            continue
        comm = read_text(os.path.join(proc, pid, "comm")) or ""
        try:
            with open(os.path.join(proc, pid, "cmdline"), "rb") as f:
                argv = [a.decode("utf-8", "replace") for a in f.read().split(b"\0")[:2]]
        except (IOError, OSError):
            argv = []
        cands = {comm} | {os.path.basename(a) for a in argv if a}
        for n in names:
            if n in cands:
                found[n].append(int(pid))
    return {n: sorted(p) for n, p in found.items()}


def parse_shell_vars(text):
    """``KEY=value`` lines of an /etc/default file (quotes stripped, comments ignored)."""
    out = {}
    for line in text.splitlines():
        m = re.match(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$", line)
        if m:
            val = m.group(2).split(" #")[0].strip()
            out[m.group(1)] = val[1:-1] if len(val) > 1 and val[0] == val[-1] and val[0] in "'\"" else val
    return out


def sysctl_keys(text):
    keys = []
    for line in text.splitlines():
        line = line.strip()
        if line and line[0] not in "#;" and "=" in line:
            keys.append(line.split("=", 1)[0].strip().lstrip("-").replace("/", "."))
    return keys


def sysctl_files(dirs=SYSCTL_DIRS, conf="/etc/sysctl.conf"):
    """sysctl.d files in systemd-sysctl order of precedence, with the keys each sets."""
    seen_dirs, by_name = set(), {}
    for d in dirs:
        real = os.path.realpath(d)
        if real in seen_dirs or not os.path.isdir(d):
            continue
        seen_dirs.add(real)
        for path in sorted(glob.glob(os.path.join(d, "*.conf"))):
            by_name.setdefault(os.path.basename(path), path)  # earlier directory wins
    files = [by_name[n] for n in sorted(by_name)]
    if os.path.isfile(conf) and os.path.realpath(conf) not in [os.path.realpath(f) for f in files]:
        files.append(conf)
    return [{"path": f, "keys": sysctl_keys(read_text(f, ""))} for f in files]


def probe_tuners():
    procs = find_processes(("tuned", "irqbalance", "bpftune"))
    irqb = parse_shell_vars(read_text("/etc/default/irqbalance", "") or read_text("/etc/sysconfig/irqbalance", ""))
    banned = irqb.get("IRQBALANCE_BANNED_CPULIST")
    if not banned and irqb.get("IRQBALANCE_BANNED_CPUS"):
        try:
            banned = ",".join(str(c) for c in mask_to_cpus(irqb["IRQBALANCE_BANNED_CPUS"]))
        except ValueError:
            banned = irqb["IRQBALANCE_BANNED_CPUS"]
    return {
        "tuned": {"running": bool(procs["tuned"]), "pids": procs["tuned"], "installed": bool(which("tuned")),
                  "active_profile": read_text("/etc/tuned/active_profile") or None},
        "irqbalance": {"running": bool(procs["irqbalance"]), "pids": procs["irqbalance"],
                       "installed": bool(which("irqbalance")), "banned_cpus": banned or None},
        "bpftune": {"running": bool(procs["bpftune"]), "pids": procs["bpftune"], "installed": bool(which("bpftune"))},
        "sysctl_files": sysctl_files(),
    }


# --------------------------------------------------------------------------- gather

PROBE_FUNCS = {
    "kernel": probe_kernel, "bpf": probe_bpf, "bcc": probe_bcc, "tcp": probe_tcp, "qdiscs": probe_qdiscs,
    "zerocopy": probe_zerocopy, "cpu": probe_cpu, "interfaces": probe_interfaces, "cgroups": probe_cgroups,
    "tuners": probe_tuners,
}


def resolve_subset(subset):
    if not subset or "all" in subset:
        return list(PROBES)
    bad = [s for s in subset if s not in PROBES]
    if bad:
        raise NetstackError("unknown probe(s) %s; choose from %s or all" % (", ".join(bad), ", ".join(PROBES)),
                            field="gather_subset")
    return [p for p in PROBES if p in subset]


def gather(subset=None, netns=None):
    """Run the probes in ``subset`` (default: all); namespace-dependent ones inside ``netns``."""
    wanted = resolve_subset(subset)
    facts = {}
    inside = [p for p in wanted if netns and p in NETNS_PROBES]
    if netns is not None:
        path = netns_path(netns)
        if inside:
            facts.update(in_child(lambda: dict((p, PROBE_FUNCS[p]()) for p in inside),
                                  setup=lambda: enter_netns(path)))
        facts["netns"] = netns
    for p in wanted:
        if p not in inside:
            facts[p] = PROBE_FUNCS[p]()
    facts["gather_subset"] = wanted
    return facts
