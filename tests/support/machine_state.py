"""What the test suite could leave behind on this machine, snapshotted before `make test` and
compared after it: the leftover check of the suite (tests/support/suite.py runs it last).

    python3 tests/support/machine_state.py snapshot FILE   record the machine now
    python3 tests/support/machine_state.py compare FILE    exit 1 naming what differs

Compared, each as a sorted listing so a difference names the path, the name or the key:
  * netstack's state, log, run and config places (recursive listings, file modes included),
    its systemd units and installed agent, sysctl.d drop-ins, /etc/default/irqbalance, and
    AnsiballZ payload directories of its modules in /tmp (a module process SIGKILLed by a
    test leaves ``/tmp/ansible_netstack.tuning.<module>_payload_*``: one per suite run went
    unnoticed until this listing);
  * /lib/modules, two levels deep with link targets (bcc_runtime's headers fallback: its
    build/source links; the one-level listing before missed links in an existing release);
  * network namespaces, this namespace's links, their qdiscs, RPS masks and IRQ affinity;
  * BPF pins under /sys/fs/bpf, loaded BPF programs (type, name, tag: ids change), and the
    cgroup directories (v2 and every v1 hierarchy, three levels);
  * every sysctl of this namespace but counters (tests/integration/sysctl-snapshot.sh);
  * processes: a process that did not exist at the snapshot and is now a daemon or an
    orphan (parent PID 1) is a leftover, with its children; the checker's own ancestors are
    not (the shell that runs the suite may itself be a background job).

Exempt, with the reason: /run/netstack-vm-accel, the per-boot memo of tests/vm/vm.sh (KVM or
TCG: the answer cannot change before the host reboots, and probing costs 20 s).
"""
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TREES = ["/var/lib/netstack", "/var/lib/netstack-lab", "/var/log/netstack", "/run/netstack",
         "/run/netstack-lab", "/etc/netstack", "/sys/fs/bpf"]
FILES_IN = {"/etc/systemd/system": "netstack", "/usr/local/sbin": "netstack", "/usr/local/bin": "netstack",
            "/etc/sysctl.d": "", "/run": "netstack", "/tmp": "ansible_netstack.tuning."}
EXEMPT = {"/run/netstack-vm-accel"}
CGROUP_ROOT = "/sys/fs/cgroup"


def tree(root, depth=64):
    """Every path under root with its type and mode (link targets for links)."""
    out = []
    if not os.path.lexists(root):
        return None
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames) + sorted(filenames):
            p = os.path.join(dirpath, name)
            try:
                st = os.lstat(p)
            except OSError:
                continue
            if stat.S_ISLNK(st.st_mode):
                out.append("%s -> %s" % (p, os.readlink(p)))
            else:
                out.append("%s %s %o" % (p, "d" if stat.S_ISDIR(st.st_mode) else "f", stat.S_IMODE(st.st_mode)))
        # listed above, descended into only within depth and never through a link
        deeper = dirpath[len(root):].count(os.sep) + 1 < depth
        dirnames[:] = [d for d in dirnames if deeper and not os.path.islink(os.path.join(dirpath, d))]
    return sorted(out)


def named(directory, prefix):
    try:
        return sorted(os.path.join(directory, n) for n in os.listdir(directory)
                      if n.startswith(prefix) and os.path.join(directory, n) not in EXEMPT)
    except OSError:
        return []


def read(path):
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def cgroups():
    out = []
    for hier in sorted(os.listdir(CGROUP_ROOT)) if os.path.isdir(CGROUP_ROOT) else []:
        base = os.path.join(CGROUP_ROOT, hier)
        if os.path.islink(base) or not os.path.isdir(base):
            continue
        for dirpath, dirnames, _files in os.walk(base):
            if dirpath[len(base):].count(os.sep) >= 3:
                dirnames[:] = []
            out.extend(os.path.join(dirpath, d) for d in dirnames)
    return sorted(out)


def net():
    links, rps, qdisc = [], {}, ""
    for dev in sorted(os.listdir("/sys/class/net")):
        links.append(dev)
        qdir = Path("/sys/class/net", dev, "queues")
        for q in sorted(qdir.glob("rx-*")) if qdir.is_dir() else []:
            rps["%s/%s" % (dev, q.name)] = read(q / "rps_cpus")
        for q in sorted(qdir.glob("tx-*")) if qdir.is_dir() else []:
            rps["%s/%s xps" % (dev, q.name)] = read(q / "xps_cpus")
    tc = subprocess.run(["tc", "qdisc", "show"], capture_output=True, text=True)
    if tc.returncode == 0:
        qdisc = sorted(tc.stdout.splitlines())
    irq = {}
    for d in sorted(Path("/proc/irq").glob("[0-9]*")):
        v = read(d / "smp_affinity_list")
        if v is not None:
            irq[d.name] = v
    return {"links": links, "queues": rps, "qdiscs": qdisc, "irq_affinity": irq,
            "netns": sorted(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else []}


def bpf_programs():
    r = subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True)
    if r.returncode != 0:
        return None
    return sorted("%s %s %s" % (p.get("type"), p.get("name", "-"), p.get("tag")) for p in json.loads(r.stdout or "[]"))


def sysctls():
    r = subprocess.run([str(REPO / "tests" / "integration" / "sysctl-snapshot.sh")], capture_output=True, text=True)
    out = {}
    for line in r.stdout.splitlines():
        k, _sep, v = line.partition(" = ")
        out[k] = v
    return out


def processes():
    procs = {}
    for d in Path("/proc").glob("[0-9]*"):
        try:
            st = (d / "stat").read_text()
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace").strip()
        except OSError:
            continue
        ppid = int(st[st.rindex(")") + 2:].split()[1])
        if not cmd:       # kernel threads
            continue
        procs[int(d.name)] = {"ppid": ppid, "cmd": cmd[:200], "start": int(st[st.rindex(")") + 2:].split()[19])}
    return procs


def snapshot():
    return {
        "trees": {t: tree(t) for t in TREES},
        "named": {d: named(d, p) for d, p in FILES_IN.items()},
        "irqbalance": read("/etc/default/irqbalance"),
        "lib_modules": tree("/lib/modules", depth=2),
        "cgroups": cgroups(),
        "net": net(),
        "bpf_programs": bpf_programs(),
        "sysctl": sysctls(),
        "processes": {str(k): v for k, v in processes().items()},
    }


def ancestors():
    out, pid = set(), os.getpid()
    while pid > 1:
        out.add(pid)
        try:
            st = Path("/proc/%d/stat" % pid).read_text()
        except OSError:
            break
        pid = int(st[st.rindex(")") + 2:].split()[1])
    return out


def new_orphans(before, now):
    """Processes born after the snapshot that hang off PID 1, and their descendants."""
    old = {(int(p), v["start"]) for p, v in before.items()}
    mine = ancestors()
    roots = [p for p, v in now.items() if v["ppid"] == 1 and (p, v["start"]) not in old and p not in mine]
    children = {}
    for p, v in now.items():
        children.setdefault(v["ppid"], []).append(p)
    out, todo = [], list(roots)
    while todo:
        p = todo.pop()
        out.append("pid %d: %s" % (p, now[p]["cmd"]))
        todo.extend(children.get(p, []))
    return sorted(out)


def diff_lists(name, a, b):
    a, b = a or [], b or []
    sa, sb = set(a), set(b)
    return (["%s: left behind: %s" % (name, x) for x in sorted(sb - sa)] +
            ["%s: gone: %s" % (name, x) for x in sorted(sa - sb)])


def diff_maps(name, a, b):
    a, b = a or {}, b or {}
    out = []
    for k in sorted(set(a) | set(b)):
        if a.get(k) != b.get(k):
            out.append("%s: %s was %r, now %r" % (name, k, a.get(k), b.get(k)))
    return out


def compare(before, now):
    problems = []
    for t in TREES:
        b, n = before["trees"].get(t), now["trees"].get(t)
        if b is None and n is not None:
            problems.append("%s: left behind (did not exist before): %s" % (t, ", ".join(n[:8]) or "empty directory"))
        elif b is not None and n is None:
            problems.append("%s: removed (it existed before)" % t)
        else:
            problems += diff_lists(t, b, n)
    for d in FILES_IN:
        problems += diff_lists(d, before["named"].get(d), now["named"].get(d))
    if before["irqbalance"] != now["irqbalance"]:
        problems.append("/etc/default/irqbalance changed")
    problems += diff_lists("/lib/modules", before["lib_modules"], now["lib_modules"])
    problems += diff_lists("cgroup", before["cgroups"], now["cgroups"])
    bn, nn = before["net"], now["net"]
    problems += diff_lists("netns", bn["netns"], nn["netns"])
    problems += diff_lists("link", bn["links"], nn["links"])
    problems += diff_lists("qdisc", bn["qdiscs"], nn["qdiscs"])
    problems += diff_maps("queue mask", bn["queues"], nn["queues"])
    problems += diff_maps("irq affinity", bn["irq_affinity"], nn["irq_affinity"])
    problems += diff_lists("bpf program", before["bpf_programs"], now["bpf_programs"])
    problems += diff_maps("sysctl", before["sysctl"], now["sysctl"])
    now_procs = {int(k): v for k, v in now["processes"].items()}
    problems += ["process: left running: %s" % p for p in new_orphans(before["processes"], now_procs)]
    return problems


def main(argv):
    if len(argv) != 3 or argv[1] not in ("snapshot", "compare"):
        sys.stderr.write(__doc__)
        return 2
    path = Path(argv[2])
    if argv[1] == "snapshot":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(snapshot(), indent=1, sort_keys=True))
        return 0
    problems = compare(json.loads(path.read_text()), snapshot())
    if problems:
        print("leftover check: the machine is not as the suite found it (%d differences):" % len(problems))
        for p in problems:
            print("  " + p)
        return 1
    print("leftover check: the machine is as the suite found it (state dirs, /lib/modules, namespaces, "
          "links, qdiscs, masks, BPF pins and programs, cgroups, sysctls, processes)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
