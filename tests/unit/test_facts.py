# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""netstack_facts engine: real probes on this machine, parsers on recorded inputs."""

import errno
import json
import os
import shutil
import subprocess
import time

import pytest

from ansible_collections.netstack.tuning.plugins.module_utils.core import facts
from ansible_collections.netstack.tuning.plugins.module_utils.core.common import NetstackError

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="probe needs root")
needs_iproute = pytest.mark.skipif(not (shutil.which("ip", path="/usr/sbin:/sbin:/usr/bin:/bin")
                                        and shutil.which("tc", path="/usr/sbin:/sbin:/usr/bin:/bin")),
                                   reason="needs iproute2")


def _read(path):
    with open(path) as f:
        return f.read().strip()


# --------------------------------------------------------------------------- gather

@pytest.mark.root
def test_gather_all_is_json_and_complete():
    out = facts.gather()
    assert set(facts.PROBES) <= set(out)
    assert out["gather_subset"] == list(facts.PROBES)
    json.dumps(out)  # goes back to Ansible as JSON


@pytest.mark.root
def test_gather_subset_only_runs_what_is_asked():
    out = facts.gather(["cpu", "kernel"])
    assert set(out) == {"cpu", "kernel", "gather_subset"}
    assert facts.gather(["all", "cpu"])["gather_subset"] == list(facts.PROBES)


def test_gather_subset_rejects_unknown_names():
    with pytest.raises(NetstackError) as e:
        facts.gather(["cpu", "gpu"])
    assert e.value.field == "gather_subset" and "gpu" in str(e.value)


# --------------------------------------------------------------------------- kernel

def test_kernel_is_this_kernel():
    k = facts.probe_kernel()
    assert k["release"] == os.uname().release and k["arch"] == os.uname().machine
    assert k["version_tuple"][0] >= 3


@pytest.mark.parametrize("release,code", [("6.18.44-fc-v657", (6, 18, 44)), ("6.1.0-18-amd64", (6, 1, 0)),
                                          ("5.15", (5, 15, 0)), ("4.19.300+", (4, 19, 300))])
def test_kernel_version_code(release, code):
    assert facts.kernel_version_code(release) == code


# --------------------------------------------------------------------------- bpf

@pytest.mark.root
@needs_root
def test_bpf_probe_loads_what_netstack_needs():
    b = facts.probe_bpf()
    # the capabilities' own programs: sockops (per-connection TCP) and sk_msg (shm path)
    for t in ("socket_filter", "sched_cls", "sock_ops", "sk_msg", "sk_skb", "cgroup_skb"):
        assert b["prog_types"][t] is True, b["prog_type_errors"].get(t)
    for m in ("hash", "array", "sockhash", "sockmap", "percpu_array", "lpm_trie"):
        assert b["map_types"][m] is True, b["map_type_errors"].get(m)
    assert set(b["prog_types"]) == set(facts.PROG_TYPES)
    # every failure carries the kernel's reason
    assert set(b["prog_type_errors"]) == set(k for k, v in b["prog_types"].items() if not v)


@pytest.mark.root
@needs_root
def test_bpf_failures_are_reported_with_errno():
    with pytest.raises(OSError) as e:
        facts.bpf_prog_load(9999)  # no such program type
    assert "EINVAL" in str(e.value)
    ok, err = facts._try_fd(facts.bpf_map_create, 2, 4, 8, 0)  # array with 0 entries
    assert ok is False and err.startswith("EINVAL")


def test_bpf_environment_facts_match_the_filesystem():
    b = facts.probe_bpf()
    assert b["btf_vmlinux"] == os.path.exists("/sys/kernel/btf/vmlinux")
    assert b["kprobe_pmu"] == os.path.isdir("/sys/bus/event_source/devices/kprobe")
    assert b["jit_enable"] == int(_read("/proc/sys/net/core/bpf_jit_enable"))
    mounted = any(ln.split()[1:3] == ["/sys/fs/bpf", "bpf"] for ln in open("/proc/mounts"))
    assert b["bpffs"]["mounted"] == mounted


# --------------------------------------------------------------------------- bcc

def test_kernel_headers_status(tmp_path):
    mods, src = tmp_path / "modules", tmp_path / "src"
    (src / "linux-headers-6.1.0-9-amd64").mkdir(parents=True)
    (src / "linux-headers-6.9.0-1-amd64").mkdir()
    rel = "6.9.0-1-amd64"
    (mods / rel).mkdir(parents=True)
    assert facts.kernel_headers(rel, str(mods))["status"] == "missing"

    (mods / rel / "build").symlink_to(src / "linux-headers-6.1.0-9-amd64")
    h = facts.kernel_headers(rel, str(mods))
    assert h["status"] == "fallback" and h["target"].endswith("linux-headers-6.1.0-9-amd64")

    (mods / rel / "build").unlink()
    (mods / rel / "build").symlink_to(src / "linux-headers-6.9.0-1-amd64")
    assert facts.kernel_headers(rel, str(mods))["status"] == "exact"

    (mods / rel / "build").unlink()
    (mods / rel / "build").symlink_to(src / "gone")  # dangling
    assert facts.kernel_headers(rel, str(mods))["status"] == "missing"

    (mods / rel / "build").unlink()
    (mods / rel / "build").mkdir()  # a real tree, as from a self-built kernel
    assert facts.kernel_headers(rel, str(mods))["status"] == "exact"


def _fake_python(tmp_path, body):
    p = tmp_path / "python"
    p.write_text("#!/bin/sh\n" + body + "\n")
    p.chmod(0o755)
    return str(p)


def test_bcc_probe_reports_version_and_errors(tmp_path):
    ok = facts.probe_bcc(_fake_python(tmp_path, "echo 0.99.0"))
    assert ok["importable"] is True and ok["version"] == "0.99.0"
    bad = facts.probe_bcc(_fake_python(tmp_path, "echo 'Traceback' >&2; "
                                                 "echo \"ModuleNotFoundError: No module named 'bcc'\" >&2; exit 1"))
    assert bad["importable"] is False and "No module named 'bcc'" in bad["error"]
    gone = facts.probe_bcc(str(tmp_path / "nope"))
    assert gone["importable"] is False and "not found" in gone["error"]
    # the headers part is this machine's own answer, the same as kernel_headers() gives
    assert gone["kernel_headers"] == facts.kernel_headers()


def test_bcc_probe_agrees_with_system_python():
    if not os.access(facts.SYSTEM_PYTHON, os.X_OK):
        pytest.skip("no /usr/bin/python3")
    rc = subprocess.call([facts.SYSTEM_PYTHON, "-c", "import bcc"], stderr=subprocess.DEVNULL)
    assert facts.probe_bcc()["importable"] == (rc == 0)


# --------------------------------------------------------------------------- tcp

def test_tcp_congestion_controls():
    t = facts.probe_tcp()
    assert t["available_congestion_control"] == _read("/proc/sys/net/ipv4/tcp_available_congestion_control").split()
    assert t["congestion_control"] in t["available_congestion_control"]
    assert t["modules_dir"] == os.path.isdir("/lib/modules/%s" % os.uname().release)
    if not t["modules_dir"]:
        assert t["loadable"] == []


# --------------------------------------------------------------------------- qdiscs

def _qdisc_works_independently(args):
    """Ask util-linux's unshare + tc directly, the way an admin would check."""
    if not shutil.which("unshare"):
        pytest.skip("no unshare(1)")
    return subprocess.call(["unshare", "-n", "sh", "-c", "ip link set lo up && tc qdisc replace dev lo " + args],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) == 0


def _host_state():
    """What the qdisc probe could touch (other tests may change the rest of the host meanwhile)."""
    mounts = [ln for ln in _read("/proc/self/mountinfo").splitlines() if " /run/netns" not in ln]
    return (subprocess.check_output(["tc", "qdisc", "show", "dev", "lo"]),
            subprocess.check_output(["ip", "-o", "link", "show", "dev", "lo"]), mounts)


@pytest.mark.root
@needs_root
@needs_iproute
def test_qdisc_probe_is_real_and_leaves_host_alone():
    before = _host_state()
    q = facts.probe_qdiscs()
    assert _host_state() == before
    assert q["probed"]["pfifo_fast"] is True and q["probed"]["clsact"] is True
    for name in ("fq", "fq_codel", "cake", "netem", "htb", "sfq"):
        assert q["probed"][name] == _qdisc_works_independently(facts.QDISCS[name]), name
        if not q["probed"][name]:
            assert q["errors"][name]
    assert q["available"] == sorted(k for k, v in q["probed"].items() if v)


def test_tc_error_picks_the_error_line():
    assert facts._tc_error("RED: set bandwidth to 10Mbit\nError: Specified qdisc kind is unknown.\n", 2) \
        == "Error: Specified qdisc kind is unknown."
    assert facts._tc_error("", 1) == "rc=1"


# --------------------------------------------------------------------------- child / netns plumbing

def test_in_child_returns_and_raises():
    assert facts.in_child(lambda: {"pid": os.getpid()})["pid"] != os.getpid()
    with pytest.raises(NetstackError, match="ZeroDivisionError"):
        facts.in_child(lambda: 1 // 0)
    with pytest.raises(NetstackError) as e:
        facts.in_child(lambda: (_ for _ in ()).throw(NetstackError("bad", field="netns")))
    assert e.value.field == "netns"
    with pytest.raises(NetstackError, match="timed out"):
        facts.in_child(lambda: time.sleep(5), timeout=0.5)


@pytest.mark.parametrize("name", ["../etc", "a/b", "..", "", "x" * 65, "with space"])
def test_netns_names_are_validated(name):
    with pytest.raises(NetstackError) as e:
        facts.gather(["interfaces"], netns=name)
    assert e.value.field == "netns"


def test_missing_netns_names_the_field():
    with pytest.raises(NetstackError) as e:
        facts.gather(["interfaces"], netns="netstack-no-such-ns")
    assert e.value.field == "netns" and "not found" in str(e.value)


@pytest.mark.root
@needs_root
@needs_iproute
def test_interfaces_inside_a_netns():
    ns = "nsfacts-unit%d" % os.getpid()
    subprocess.check_call(["ip", "netns", "add", ns])
    try:
        subprocess.check_call(["ip", "-n", ns, "link", "add", "nsu0", "mtu", "1280", "type", "veth",
                               "peer", "name", "nsu1"])
        subprocess.check_call(["ip", "netns", "exec", ns, "sh", "-c",
                               "echo 1 > /sys/class/net/nsu0/queues/rx-0/rps_cpus"])
        sys_mounts = [ln for ln in _read("/proc/self/mountinfo").splitlines() if " /sys" in ln]
        out = facts.gather(["interfaces", "kernel", "tcp"], netns=ns)
        # the sysfs remount stayed in the child
        assert [ln for ln in _read("/proc/self/mountinfo").splitlines() if " /sys" in ln] == sys_mounts
        devs = out["interfaces"]["devices"]
        assert set(devs) == {"lo", "nsu0", "nsu1"}
        assert devs["nsu0"]["mtu"] == 1280 and devs["nsu0"]["virtual"] is True
        assert facts.mask_to_cpus(devs["nsu0"]["rx_queues"]["rx-0"]["rps_cpus"]) == [0]
        assert out["netns"] == ns and out["kernel"]["release"] == os.uname().release
        # the host view is untouched by the namespace's sysfs
        assert "nsu0" not in facts.probe_interfaces()["devices"]
    finally:
        subprocess.call(["ip", "netns", "delete", ns])


# --------------------------------------------------------------------------- zerocopy

def test_zerocopy_and_io_uring():
    z = facts.probe_zerocopy()
    assert z["optmem_max"] == int(_read("/proc/sys/net/core/optmem_max"))
    if facts.kernel_version_code(os.uname().release) >= (4, 14, 0):
        assert z["msg_zerocopy"] is True, z["msg_zerocopy_error"]
    io = z["io_uring"]
    if io["disabled"] in (None, 0) and facts.kernel_version_code(os.uname().release) >= (5, 1, 0) and ROOT:
        assert io["available"] is True, io["error"]
    if io["available"] and facts.kernel_version_code(os.uname().release) >= (6, 0, 0):
        assert io["send_zc"] is True
    if not io["available"]:
        assert io["error"] and io["send_zc"] is None


# --------------------------------------------------------------------------- cpu

def test_cpu_count_is_this_machine():
    c = facts.probe_cpu()
    assert c["count"] == os.cpu_count()
    assert sorted(sum((facts.parse_cpulist(v) for v in c["numa_nodes"].values()), [])) == c["online_list"]
    assert sorted(sum(c["packages"].values(), [])) == c["online_list"]


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


def test_cpu_topology_from_recorded_sysfs(tmp_path):
    sysfs = tmp_path / "system"
    _write(sysfs / "cpu" / "online", "0-3")
    _write(sysfs / "cpu" / "possible", "0-7")
    _write(sysfs / "cpu" / "isolated", "3")
    _write(sysfs / "cpu" / "smt" / "active", "1")
    for c in range(4):
        topo = sysfs / "cpu" / ("cpu%d" % c) / "topology"
        _write(topo / "thread_siblings_list", "0,2" if c in (0, 2) else "1,3")
        _write(topo / "physical_package_id", "0" if c < 2 else "1")
    _write(sysfs / "node" / "node0" / "cpulist", "0-1")
    _write(sysfs / "node" / "node1" / "cpulist", "2-3")
    c = facts.probe_cpu(str(sysfs))
    assert c["count"] == 4 and c["smt_active"] is True and c["isolated"] == "3"
    assert c["thread_siblings"] == ["0,2", "1,3"]
    assert c["packages"] == {"0": [0, 1], "1": [2, 3]}
    assert c["numa_nodes"] == {"0": "0-1", "1": "2-3"}
    shutil.rmtree(str(sysfs / "node"))
    assert facts.probe_cpu(str(sysfs))["numa_nodes"] == {"0": "0-3"}  # no NUMA: one node


# --------------------------------------------------------------------------- interfaces

INTERRUPTS = """\
           CPU0       CPU1       CPU2       CPU3
  0:         38          0          0          0   IO-APIC   2-edge      timer
 16:          0          0          0          0   IO-APIC  16-fasteoi   ehci_hcd:usb1, i801_smbus
 38:          0       2353          0          0   PCI-MSIX-0000:00:03.0   1-edge      virtio2-input.0
 97:       1200          3          0          0   IR-PCI-MSI 524288-edge      eth10-TxRx-0
 98:          1       5000          0          0   IR-PCI-MSI 524289-edge      eth10-TxRx-1
 99:          0          0          0          0   IR-PCI-MSI 524290-edge      eth1
120:          0          0          7          0   IR-PCI-MSI 1048576-edge      mlx5_comp0@pci:0000:3b:00.0
NMI:          0          0          0          0   Non-maskable interrupts
ERR:          0
"""


def test_parse_interrupts():
    irqs = facts.parse_interrupts(INTERRUPTS)
    assert sorted(irqs) == [0, 16, 38, 97, 98, 99, 120]
    assert irqs[16]["actions"] == "ehci_hcd:usb1, i801_smbus" and irqs[16]["chip"] == "IO-APIC 16-fasteoi"
    assert irqs[97] == {"chip": "IR-PCI-MSI 524288-edge", "actions": "eth10-TxRx-0", "counts": [1200, 3, 0, 0]}
    assert irqs[120]["actions"] == "mlx5_comp0@pci:0000:3b:00.0"


def test_irqs_match_whole_interface_names(tmp_path):
    irqs = facts.parse_interrupts(INTERRUPTS)
    assert facts.irqs_for("eth10", None, irqs) == [97, 98]
    assert facts.irqs_for("eth1", None, irqs) == [99]  # not eth10's queues
    pci = tmp_path / "0000:00:03.0"
    (pci / "msi_irqs").mkdir(parents=True)
    for n in ("37", "38", "39"):
        (pci / "msi_irqs" / n).write_text("msix\n")
    (pci / "virtio2").mkdir()
    # a virtio netdev's device is virtio2; its vectors live on the PCI function above it
    assert facts.irqs_for("eth0", str(pci / "virtio2"), irqs) == [37, 38, 39]


def test_interfaces_from_recorded_sysfs(tmp_path):
    net, proc, pci = tmp_path / "net", tmp_path / "proc", tmp_path / "devices" / "0000:3b:00.0"
    drv = tmp_path / "drivers" / "ixgbe"
    drv.mkdir(parents=True)
    _write(pci / "numa_node", "1")
    _write(pci / "msi_irqs" / "97", "msix")
    (pci / "driver").symlink_to(drv)
    eth = net / "eth10"
    _write(eth / "mtu", "9000")
    _write(eth / "operstate", "up")
    (eth / "device").symlink_to(pci)
    for q in (0, 1):
        _write(eth / "queues" / ("rx-%d" % q) / "rps_cpus", "00000000,0000000c")
        _write(eth / "queues" / ("rx-%d" % q) / "rps_flow_cnt", "2048")
        _write(eth / "queues" / ("tx-%d" % q) / "xps_cpus", "%x" % (1 << q))
    _write(net / "lo" / "mtu", "65536")
    _write(proc / "interrupts", INTERRUPTS)
    _write(proc / "sys" / "net" / "core" / "rps_sock_flow_entries", "32768")
    for n, aff in (("97", "0"), ("98", "1")):
        _write(proc / "irq" / n / "smp_affinity_list", aff)
    out = facts.probe_interfaces(str(net), str(proc))
    assert out["rps_sock_flow_entries"] == 32768
    e = out["devices"]["eth10"]
    assert e["mtu"] == 9000 and e["driver"] == "ixgbe" and e["numa_node"] == 1 and e["virtual"] is False
    assert e["rx_queues"]["rx-1"] == {"rps_cpus": "00000000,0000000c", "rps_flow_cnt": 2048}
    assert e["tx_queues"] == {"tx-0": {"xps_cpus": "1"}, "tx-1": {"xps_cpus": "2"}}
    assert [(i["irq"], i["name"], i["smp_affinity_list"]) for i in e["irqs"]] == \
        [(97, "eth10-TxRx-0", "0"), (98, "eth10-TxRx-1", "1")]
    assert out["devices"]["lo"]["virtual"] is True and out["devices"]["lo"]["irqs"] == []


def test_interfaces_on_this_host():
    devs = facts.probe_interfaces()["devices"]
    assert set(devs) == set(os.listdir("/sys/class/net"))
    assert devs["lo"]["mtu"] == int(_read("/sys/class/net/lo/mtu"))


# --------------------------------------------------------------------------- cgroups

HYBRID = """\
23 1 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,clone_children,cpuset
36 31 0:33 / /sys/fs/cgroup/net_cls,net_prio rw,relatime - cgroup cgroup rw,net_cls,net_prio
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,release_agent=/x,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
V2 = """\
25 23 0:22 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
26 23 0:23 / /mnt/my\\040cg rw - cgroup2 none rw
"""


def test_cgroup_layout_hybrid():
    c = facts.cgroup_layout(HYBRID, read=lambda p: "")
    assert c["mode"] == "hybrid" and c["v2_mounts"] == ["/sys/fs/cgroup/unified"]
    assert c["v1_mounts"]["/sys/fs/cgroup/cpuset"] == ["cpuset"]
    assert c["v1_mounts"]["/sys/fs/cgroup/net_cls,net_prio"] == ["net_cls", "net_prio"]
    assert c["v1_mounts"]["/sys/fs/cgroup/systemd"] == ["name=systemd"]
    assert c["cpuset"] == {"version": 1, "path": "/sys/fs/cgroup/cpuset"}


def test_cgroup_layout_v2_and_escapes():
    ctrls = {"/sys/fs/cgroup/cgroup.controllers": "cpuset cpu io memory pids", "/mnt/my cg/cgroup.controllers": ""}
    c = facts.cgroup_layout(V2, read=ctrls.get)
    assert c["mode"] == "v2" and c["v2_mounts"] == ["/sys/fs/cgroup", "/mnt/my cg"]
    assert c["cpuset"] == {"version": 2, "path": "/sys/fs/cgroup"}
    c = facts.cgroup_layout(V2, read=lambda p: "memory pids")
    assert c["cpuset"] is None


def test_cgroup_layout_v1_only_and_none():
    v1 = "\n".join(ln for ln in HYBRID.splitlines() if "cgroup2" not in ln)
    assert facts.cgroup_layout(v1)["mode"] == "v1"
    assert facts.cgroup_layout("")["mode"] == "none"


def test_cgroups_on_this_host():
    c = facts.probe_cgroups()
    text = _read("/proc/self/mountinfo")
    assert (" - cgroup2 " in text) == bool(c["v2_mounts"])
    assert (" - cgroup " in text) == bool(c["v1_mounts"])
    if c["cpuset"] and c["cpuset"]["version"] == 1:
        assert os.path.exists(os.path.join(c["cpuset"]["path"], "cpuset.cpus"))
    elif c["cpuset"]:
        assert "cpuset" in _read(os.path.join(c["cpuset"]["path"], "cgroup.controllers")).split()


# --------------------------------------------------------------------------- tuners

def test_find_processes_sees_a_running_tuner(tmp_path):
    fake = tmp_path / "bpftune"
    shutil.copy(shutil.which("sleep"), str(fake))
    p = subprocess.Popen([str(fake), "30"])
    try:
        for _ in range(50):  # comm is set at exec
            if p.pid in facts.find_processes(("bpftune",))["bpftune"]:
                break
            time.sleep(0.05)
        assert p.pid in facts.find_processes(("bpftune", "tuned"))["bpftune"]
        assert facts.probe_tuners()["bpftune"]["running"] is True
    finally:
        p.kill()
        p.wait()
    assert p.pid not in facts.find_processes(("bpftune",))["bpftune"]


def test_parse_shell_vars():
    v = facts.parse_shell_vars('#IRQBALANCE_ONESHOT=1\nIRQBALANCE_BANNED_CPULIST="0-1"\n'
                               "export IRQBALANCE_ARGS='--policyscript=/x' # comment\nnot a var\n")
    assert v == {"IRQBALANCE_BANNED_CPULIST": "0-1", "IRQBALANCE_ARGS": "--policyscript=/x"}


def test_sysctl_files_precedence_and_keys(tmp_path):
    etc, lib = tmp_path / "etc", tmp_path / "lib"
    _write(etc / "10-net.conf", "# c\nnet.core.somaxconn = 4096\n-net/ipv4/tcp_fastopen=3\n; x")
    _write(lib / "10-net.conf", "net.core.somaxconn = 128")  # shadowed by /etc
    _write(lib / "50-pid.conf", "kernel.pid_max = 4194304")
    _write(lib / "README", "not a conf")
    conf = tmp_path / "sysctl.conf"
    _write(conf, "vm.swappiness=10")
    files = facts.sysctl_files((str(etc), str(lib), str(lib)), str(conf))
    assert [f["path"] for f in files] == [str(etc / "10-net.conf"), str(lib / "50-pid.conf"), str(conf)]
    assert files[0]["keys"] == ["net.core.somaxconn", "net.ipv4.tcp_fastopen"]
    assert files[2]["keys"] == ["vm.swappiness"]


def test_bpf_prog_load_tries_again_when_the_verifier_says_eagain(monkeypatch):
    """The verifier stops with EAGAIN when a signal is pending; the probe once reported
    sock_ops as unsupported on a busy machine for that (a CI run).  A pending signal at the
    right instant cannot be arranged from here, so the syscall is stood in for: EAGAIN twice
    then an fd is a load; EAGAIN on every try is the answer after PROG_LOAD_ATTEMPTS."""
    calls = []

    def flaky(cmd, attr):
        calls.append(cmd)
        if len(calls) <= 2:
            raise OSError(errno.EAGAIN, "Resource temporarily unavailable")
        return 42
    monkeypatch.setattr(facts, "_bpf", flaky)
    assert facts.bpf_prog_load(7) == 42 and len(calls) == 3

    calls[:] = []

    def always(cmd, attr):
        calls.append(cmd)
        raise OSError(errno.EAGAIN, "Resource temporarily unavailable")
    monkeypatch.setattr(facts, "_bpf", always)
    with pytest.raises(OSError) as e:
        facts.bpf_prog_load(7)
    assert e.value.errno == errno.EAGAIN and len(calls) == facts.PROG_LOAD_ATTEMPTS

    calls[:] = []

    def refused(cmd, attr):
        calls.append(cmd)
        raise OSError(errno.EINVAL, "Invalid argument")
    monkeypatch.setattr(facts, "_bpf", refused)
    with pytest.raises(OSError):
        facts.bpf_prog_load(7)
    assert len(calls) == 1                      # any other error is the answer at once
