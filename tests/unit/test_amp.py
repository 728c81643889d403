"""Unit tests: the AMP CPU partition engine (amp.py) and its controller (ampctl.py).

Everything replays recorded or written data (tests/unit/fixtures): topologies in the form
``amp.record()`` writes, /proc text and controller load traces recorded on the development
host with fixtures/amp/record_trace.py.  Each fixture says in ``_source`` how it was made.
The tests assert properties of the plans and decisions, not hard-coded outputs.
"""
import glob
import json
import os
import random
import statistics

import pytest

from ansible_collections.netstack.tuning.plugins.module_utils.agent import config as agent_config
from ansible_collections.netstack.tuning.plugins.module_utils.amp import partition as amp, controller as ampctl
from ansible_collections.netstack.tuning.plugins.module_utils.core.common import NetstackError
from ansible_collections.netstack.tuning.plugins.module_utils.core.cpus import format_cpulist, mask_to_cpus, parse_cpulist

HERE = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.join(HERE, "fixtures")
TOPO_FILES = sorted(glob.glob(os.path.join(FIX, "topologies", "*.json")))
TOPO_IDS = [os.path.basename(p)[:-5] for p in TOPO_FILES]

# what each topology fixture is: CPUs, NUMA nodes, threads per core, one pair of SMT siblings
SHAPES = {
    "host-2cpu": (2, 1, 1, None),
    "vm-4cpu": (4, 1, 1, None),
    "desktop-16t-smt-adjacent": (16, 1, 2, (6, 7)),
    "intel-2s-80t": (80, 2, 2, (5, 45)),
    "2node-64cpu-nosmt": (64, 2, 1, None),
    "epyc-1n-128t": (128, 1, 2, (3, 67)),
    "2node-128t": (128, 2, 2, (40, 104)),
}


def _json(path):
    with open(path) as f:
        return json.load(f)


@pytest.fixture(params=TOPO_FILES, ids=TOPO_IDS)
def topo(request):
    t = amp.Topology.from_dict(_json(request.param))
    t.fixture = os.path.basename(request.param)[:-5]
    return t


def nic(node=None, queues=4, tx=None, config=True, irq_base=100, name="eth0"):
    """A nic_info() entry: ``queues`` queue IRQs (queue i), rx/tx queues, a config IRQ."""
    irqs = [{"irq": irq_base + q, "name": "%s-TxRx-%d" % (name, q), "queue": q} for q in range(queues)]
    if config:
        irqs.append({"irq": irq_base + queues, "name": "%s-config" % name, "queue": None})
    return {"numa_node": node, "virtual": False, "rx": ["rx-%d" % q for q in range(queues)],
            "tx": ["tx-%d" % q for q in range(queues if tx is None else tx)], "irqs": irqs}


def nic_node(topo):
    """The node the tests put the NIC on: 1 where the topology has it (the far node)."""
    return 1 if 1 in topo.nodes else 0


def whole_cores(topo, cpus):
    return all(set(topo.core_of(c)) <= set(cpus) for c in cpus)


def counts(topo):
    """Every count of network CPUs worth trying (all of them, up to 128)."""
    return range(1, len(topo.online))


# ------------------------------------------------------------------ topology fixtures

def test_every_topology_fixture_is_there_and_says_where_it_came_from():
    assert set(TOPO_IDS) == set(SHAPES)
    for path in TOPO_FILES:
        d = _json(path)
        if path.endswith("host-2cpu.json"):
            assert d["_source"].startswith("recorded on")
        else:
            assert d["_source"].startswith("not recorded")


def test_topology_fixture_shape(topo):
    ncpu, nnodes, threads, pair = SHAPES[topo.fixture]
    assert len(topo.online) == ncpu == topo.possible
    assert len(topo.nodes) == nnodes
    assert topo.smt == (threads > 1)
    assert all(len(c) == threads for c in topo.cores)
    # cores and nodes each partition the online CPUs
    assert sorted(c for core in topo.cores for c in core) == topo.online
    assert sorted(c for cs in topo.nodes.values() for c in cs) == topo.online
    if pair:
        a, b = pair
        assert topo.core_of(a) == [a, b] == topo.core_of(b)
        assert topo.node_of(a) == topo.node_of(b)
    # the recorded form (plus our _source key) reads back to the same topology
    again = amp.Topology.from_dict(dict(topo.as_dict(), _source="x", extra={"ignored": True}))
    assert again.as_dict() == topo.as_dict()


def test_node_numbering_of_the_two_socket_fixtures():
    t = amp.Topology.from_dict(_json(os.path.join(FIX, "topologies", "intel-2s-80t.json")))
    assert t.nodes[0] == list(range(20)) + list(range(40, 60))
    assert [t.node_of(c) for c in (0, 19, 20, 39, 40, 59, 60, 79)] == [0, 0, 1, 1, 0, 0, 1, 1]


def test_this_hosts_sysfs_reads_back_through_the_recorded_form():
    """from_sysfs on the machine running the tests: cores partition the online CPUs, and
    record() -> from_dict gives the same topology (what the recorded fixtures rely on)."""
    rec = amp.record()
    t = amp.Topology.from_dict(rec)
    assert t.online and sorted(c for core in t.cores for c in core) == t.online
    assert amp.Topology.from_dict(json.loads(json.dumps(rec))).as_dict() == rec


def test_from_sysfs_on_a_written_tree(tmp_path):
    """A 2-node, 8-thread tree (siblings n and n+4; CPU 7 offline) written the way sysfs lays
    it out: offline siblings drop out of cores and nodes; a CPU without topology files (5)
    stays in the core its sibling's list names, once."""
    cpu = tmp_path / "cpu"
    cpu.mkdir()
    (cpu / "online").write_text("0-6\n")
    (cpu / "possible").write_text("0-7\n")
    for c in range(8):
        if c == 5:
            continue  # no topology directory
        topo_dir = cpu / ("cpu%d" % c) / "topology"
        topo_dir.mkdir(parents=True)
        (topo_dir / "thread_siblings_list").write_text("%d,%d\n" % (c % 4, c % 4 + 4))
        (topo_dir / "physical_package_id").write_text("%d\n" % ((c % 4) // 2))
    for n, cpus in ((0, "0-1,4-5"), (1, "2-3,6-7")):
        (tmp_path / "node" / ("node%d" % n)).mkdir(parents=True)
        (tmp_path / "node" / ("node%d" % n) / "cpulist").write_text(cpus + "\n")
    t = amp.Topology.from_sysfs(str(tmp_path))
    assert t.online == list(range(7)) and t.possible == 8
    # CPU 5 has no topology files but CPU 1 names it: one core [1, 5], not [1, 5] and [5]
    assert t.cores == [[0, 4], [1, 5], [2, 6], [3]]
    assert t.core_of(3) == [3] and t.core_of(6) == [2, 6]
    assert t.nodes == {0: [0, 1, 4, 5], 1: [2, 3, 6]}
    assert amp.Topology.from_dict(json.loads(json.dumps(t.as_dict()))).as_dict() == t.as_dict()
    with pytest.raises(NetstackError) as e:
        amp.Topology.from_sysfs(str(tmp_path / "nothing"))
    assert e.value.field == "topology"


def test_from_dict_with_only_the_online_cpus():
    t = amp.Topology.from_dict({"online": "0-3", "_source": "minimal"})
    assert t.cores == [[0], [1], [2], [3]] and t.nodes == {0: [0, 1, 2, 3]} and t.possible == 4 and not t.smt


# ------------------------------------------------------------------ planner: which CPUs

def test_counts_round_up_to_whole_cores(topo):
    biggest = max(len(c) for c in topo.cores)
    for count in counts(topo):
        try:
            net, notes = amp.resolve_net_cpus(topo, {}, count)
        except NetstackError as e:
            # only when whole cores leave nothing: count rounded up reaches every CPU
            assert e.field == "net_cpus" and topo.smt and count > len(topo.online) - biggest, (count, e)
            continue
        assert whole_cores(topo, net), (count, net)
        assert count <= len(net) < count + biggest
        rounded = [n for n in notes if "rounded up" in n]
        if len(net) > count:
            assert rounded and ("%d CPUs rounded up to %d" % (count, len(net))) in rounded[0]
            assert "SMT" in rounded[0]
        else:
            assert not rounded


def test_network_set_is_numa_local_to_the_nic_first(topo):
    node = nic_node(topo)
    nics = {"eth0": nic(node=1)}  # node 1: the far node where there is one, ignored where not
    local = set(topo.nodes[node])
    order = amp.core_order(topo, nics)
    assert sorted(order) == sorted(topo.cores)
    for k in range(1, len(order) + 1):
        cpus = [c for core in order[:k] for c in core]
        assert len(local.intersection(cpus)) == min(len(cpus), len(local)), k
    for count in counts(topo):
        try:
            net, _notes = amp.resolve_net_cpus(topo, nics, count)
        except NetstackError:
            continue
        assert len(local.intersection(net)) == min(len(net), len(local)), count


def test_busiest_nic_node_comes_first():
    t = amp.Topology.from_dict(_json(os.path.join(FIX, "topologies", "2node-64cpu-nosmt.json")))
    nics = {"a": nic(node=0, queues=2, name="a"), "b": nic(node=1, queues=8, irq_base=200, name="b")}
    assert amp.local_nodes(t, nics) == [1, 0]
    net, _n = amp.resolve_net_cpus(t, nics, 4)
    assert net == [32, 33, 34, 35]
    # no NIC says where it is: the lowest node
    assert amp.local_nodes(t, {"lo": nic(node=None)}) == [0]
    assert amp.resolve_net_cpus(t, {"lo": nic(node=None)}, 2)[0] == [0, 1]


def test_network_sets_grow_by_prefix(topo):
    """The set for k cores is a subset of the set for k+1 (a resize moves one core only)."""
    nics = {"eth0": nic(node=1)}
    order = amp.core_order(topo, nics)
    prev = set()
    for k in range(1, len(order)):
        cur = set(c for core in order[:k] for c in core)
        assert prev < cur and len(cur - prev) == len(order[k - 1])
        prev = cur
    prev = set()
    for count in counts(topo):
        try:
            cur = set(amp.resolve_net_cpus(topo, nics, count)[0])
        except NetstackError:
            break
        assert prev <= cur, count
        prev = cur


def test_never_every_cpu(topo):
    n = len(topo.online)
    for value in (n, n + 1, list(topo.online), format_cpulist(topo.online)):
        with pytest.raises(NetstackError) as e:
            amp.resolve_net_cpus(topo, {}, value)
        assert e.value.field == "net_cpus"
    if topo.smt:  # one CPU short of all is a whole number of cores only with every core
        with pytest.raises(NetstackError) as e:
            amp.resolve_net_cpus(topo, {}, n - 1)
        assert e.value.field == "net_cpus" and "whole cores" in e.value.msg
    else:
        net, _n = amp.resolve_net_cpus(topo, {}, n - 1)
        assert len(net) == n - 1


@pytest.mark.parametrize("value", [0, -1, True, "", []])
def test_no_network_cpu_is_refused(topo, value):
    with pytest.raises(NetstackError) as e:
        amp.resolve_net_cpus(topo, {}, value)
    assert e.value.field == "net_cpus"


def test_a_cpu_that_does_not_exist_is_named(topo):
    ghost = topo.possible + 3
    for value in ([0, ghost], "0,%d" % ghost, [ghost]):
        with pytest.raises(NetstackError) as e:
            amp.resolve_net_cpus(topo, {}, value)
        assert e.value.field == "net_cpus"
        assert str(ghost) in e.value.msg and "do not exist" in e.value.msg


def test_a_list_splitting_an_smt_core_gets_a_note(topo):
    for core in topo.cores[:3]:
        if len(core) == len(topo.online):
            continue
        _net, notes = amp.resolve_net_cpus(topo, {}, [core[0]])
        split = [n for n in notes if "splits SMT" in n]
        if len(core) > 1:
            assert split and format_cpulist(core) in split[0]
        else:
            assert not split
        _net, notes = amp.resolve_net_cpus(topo, {}, list(core))
        assert not [n for n in notes if "splits SMT" in n]


def test_a_list_off_the_nic_node_gets_a_note(topo):
    if len(topo.nodes) < 2:
        _net, notes = amp.resolve_net_cpus(topo, {"eth0": nic(node=0)}, [topo.online[0]])
        assert not [n for n in notes if "not local" in n]
        return
    far = topo.nodes[0][0]
    _net, notes = amp.resolve_net_cpus(topo, {"eth0": nic(node=1)}, list(topo.core_of(far)))
    assert [n for n in notes if "not local" in n and "0" in n]


def test_auto_is_one_core_in_eight(topo):
    nics = {"eth0": nic(node=1)}
    net, notes = amp.resolve_net_cpus(topo, nics, "auto")
    cores = set(tuple(topo.core_of(c)) for c in net)
    assert len(cores) == max(1, -(-len(topo.cores) // 8)) == amp.auto_cores(topo)
    assert whole_cores(topo, net) and len(net) < len(topo.online)
    assert set(net) <= set(topo.nodes[nic_node(topo)])
    assert any(n.startswith("auto:") for n in notes)
    assert amp.resolve_net_cpus(topo, nics, None)[0] == net


# ------------------------------------------------------------------ planner: the masks

def _cores_for(topo, k):
    return sum(len(c) for c in topo.cores[:k])


def test_queue_irqs_round_robin_over_the_network_cpus(topo):
    nics = {"eth0": nic(node=1, queues=2 * len(topo.online) + 3)}
    count = _cores_for(topo, min(3, len(topo.cores) - 1))
    p = amp.plan(topo, nics, count)
    net = p["net_cpus"]
    local = [c for c in net if topo.node_of(c) == nic_node(topo)] or net
    assert local == net  # a few cores fit on the NIC's node in every fixture
    used = {}
    for i in nics["eth0"]["irqs"]:
        if i["queue"] is None:
            continue
        cpu = int(p["irqs"][i["irq"]])
        assert cpu == net[i["queue"] % len(net)]
        used[cpu] = used.get(cpu, 0) + 1
    assert set(used) == set(net) and max(used.values()) - min(used.values()) <= 1


def test_queue_irqs_take_local_cpus_before_far_ones():
    t = amp.Topology.from_dict(_json(os.path.join(FIX, "topologies", "intel-2s-80t.json")))
    net = [0, 40, 20, 60, 21, 61]  # one core on node 0, two on node 1
    nics = {"eth0": nic(node=1, queues=6)}
    p = amp.plan(t, nics, net)
    got = [int(p["irqs"][100 + q]) for q in range(6)]
    assert got == [20, 21, 60, 61, 0, 40]
    assert p["irqs"][106] == "20-21,60-61"  # the config IRQ: the local part of the set
    assert p["rps"]["eth0/rx-0"] == [20, 21, 60, 61]


def test_non_queue_irqs_and_rps_cover_the_local_network_cpus(topo):
    nodes = sorted(topo.nodes)
    nics = dict(("eth%d" % n, nic(node=n, queues=3, irq_base=100 * (n + 1), name="eth%d" % n)) for n in nodes)
    # two cores from every node, so each NIC has a local part
    cpus = [c for n in nodes for core in [k for k in topo.cores if topo.node_of(k[0]) == n][:2] for c in core]
    if len(cpus) >= len(topo.online):
        cpus = list(topo.cores[0])
    p = amp.plan(topo, nics, cpus)
    for ifname, info in nics.items():
        local = [c for c in p["net_cpus"] if topo.node_of(c) == info["numa_node"]] or p["net_cpus"]
        config = [i for i in info["irqs"] if i["queue"] is None]
        assert config and all(p["irqs"][i["irq"]] == format_cpulist(local) for i in config)
        # queue IRQs: the local CPUs first (distinct ones), then the rest of the set
        ordered = local + [c for c in p["net_cpus"] if c not in local]
        for i in info["irqs"]:
            if i["queue"] is not None:
                assert int(p["irqs"][i["irq"]]) == ordered[i["queue"] % len(ordered)]
        for q in info["rx"]:
            assert p["rps"]["%s/%s" % (ifname, q)] == local


def test_rps_for_every_rx_queue_and_rfs_table_sizes(topo):
    for nq in (1, 3, 8):
        nics = {"eth0": nic(node=1, queues=nq)}
        for entries in (4096, 32768, 1000):
            p = amp.plan(topo, nics, 1, rfs=True, flow_entries=entries)
            local = [c for c in p["net_cpus"] if topo.node_of(c) == nic_node(topo)]
            assert sorted(p["rps"]) == sorted("eth0/rx-%d" % q for q in range(nq))
            assert all(v == local for v in p["rps"].values())
            assert set(p["rps_flow_cnt"]) == set(p["rps"])
            share = max(1, entries // nq)
            for cnt in p["rps_flow_cnt"].values():  # the queue's share, rounded up to a power of two
                assert cnt & (cnt - 1) == 0 and share <= cnt < 2 * share
            fe = p["rps_sock_flow_entries"]
            assert fe & (fe - 1) == 0 and entries <= fe < 2 * entries
    for p in (amp.plan(topo, {"eth0": nic(node=1)}, 1, rfs=False), amp.plan(topo, {"eth0": nic(node=1)}, 1)):
        # RFS off (the default): RPS alone, no flow tables
        assert p["rps_flow_cnt"] == {} and p["rps_sock_flow_entries"] is None and len(p["rps"]) == 4


def test_xps_maps_every_cpu_once_and_only_with_several_tx_queues(topo):
    assert amp.plan(topo, {"eth0": nic(node=1, queues=1)}, 1)["xps"] == {}
    assert amp.plan(topo, {"eth0": nic(node=1, queues=4)}, 1, xps=False)["xps"] == {}
    for ntx in (2, 3, 8, 160):
        p = amp.plan(topo, {"eth0": nic(node=1, queues=2, tx=ntx)}, 1)
        assert sorted(p["xps"]) == sorted("eth0/tx-%d" % q for q in range(ntx))
        seen = [c for cpus in p["xps"].values() for c in cpus]
        assert sorted(seen) == topo.online  # every online CPU exactly once


def test_plan_splits_online_cpus_and_counts_cores(topo):
    p = amp.plan(topo, {"eth0": nic(node=1)}, 1)
    assert sorted(p["net_cpus"] + p["app_cpus"]) == topo.online
    assert not set(p["net_cpus"]) & set(p["app_cpus"])
    assert p["net_cores"] == 1
    text = amp.plan_text(p)
    assert parse_cpulist(text["net_cpus"]) == p["net_cpus"]
    json.dumps(text)  # the plan goes into diffs and the record as JSON


def test_changes_write_masks_the_width_of_the_possible_cpus():
    """128 CPUs: the rps/xps masks are four 32-bit words that read back to the planned CPUs."""
    t = amp.Topology.from_dict(_json(os.path.join(FIX, "topologies", "2node-128t.json")))
    spec = amp.validate({"interfaces": ["eth0"], "app_units": ["app.slice"], "irqbalance": "ignore"})
    nics = {"eth0": nic(node=1, queues=2)}
    p = amp.plan(t, nics, 4, rfs=True)
    assert p["net_cpus"] == [32, 33, 96, 97]
    ch = amp.changes(spec, p, t, nics)
    vals = dict((it.key, v) for it, v in ch)
    rps = vals["/sys/class/net/eth0/queues/rx-0/rps_cpus"]
    assert len(rps.split(",")) == 4 and mask_to_cpus(rps) == p["net_cpus"]
    assert mask_to_cpus(vals["/sys/class/net/eth0/queues/tx-1/xps_cpus"]) == list(range(1, 128, 2))
    assert vals["app.slice"] == format_cpulist(p["app_cpus"])
    # fences first, then IRQs, then steering
    kinds = [it.kind for it, _v in ch]
    assert kinds.index("unit") < kinds.index("irq") < kinds.index("sysctl") < kinds.index("sysfs")


# ------------------------------------------------------------------ NIC discovery

INTERRUPTS = """\
           CPU0       CPU1
 37:          0          0 PCI-MSIX-0000:00:03.0   0-edge      virtio2-config
 38:          0      25669 PCI-MSIX-0000:00:03.0   1-edge      virtio2-input.0
 39:      17767          0 PCI-MSIX-0000:00:03.0   2-edge      virtio2-output.0
 40:          4          0 PCI-MSIX-0000:00:03.0   3-edge      virtio2-input.1
 41:          0          9 PCI-MSIX-0000:00:03.0   4-edge      virtio2-output.1
 42:          0          0 PCI-MSIX-0000:00:04.0   0-edge      virtio3-config
LOC:   17653694   17251420   Local timer interrupts
"""


def _fake_net(tmp_path):
    """A /sys/class/net and /proc with a 2-queue virtio NIC on node 1 and a veth."""
    pci = tmp_path / "devices" / "pci0000:00" / "0000:00:03.0"
    (pci / "virtio2").mkdir(parents=True)
    (pci / "numa_node").write_text("1\n")
    (pci / "msi_irqs").mkdir()
    for n in (37, 38, 39, 40, 41):
        (pci / "msi_irqs" / str(n)).write_text("msix\n")
    net = tmp_path / "class" / "net"
    for ifname, queues in (("eth0", ("rx-0", "rx-1", "tx-0", "tx-1")), ("veth1", ("rx-0", "tx-0"))):
        for q in queues:
            (net / ifname / "queues" / q).mkdir(parents=True)
    (net / "eth0" / "device").symlink_to(pci / "virtio2")
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "interrupts").write_text(INTERRUPTS)
    return str(net), str(proc)


def test_nic_info_reads_queues_irqs_and_node(tmp_path):
    sys_net, proc = _fake_net(tmp_path)
    info = amp.nic_info(["eth0", "veth1"], sys_net=sys_net, proc=proc)
    eth = info["eth0"]
    assert eth["numa_node"] == 1 and not eth["virtual"]
    assert eth["rx"] == ["rx-0", "rx-1"] and eth["tx"] == ["tx-0", "tx-1"]
    assert dict((i["irq"], i["queue"]) for i in eth["irqs"]) == {37: None, 38: 0, 39: 0, 40: 1, 41: 1}
    assert info["veth1"] == {"numa_node": None, "virtual": True, "rx": ["rx-0"], "tx": ["tx-0"], "irqs": []}
    # into the planner: the config IRQ takes the local set, each queue's pair one CPU
    t = amp.Topology.from_dict(_json(os.path.join(FIX, "topologies", "2node-64cpu-nosmt.json")))
    p = amp.plan(t, info, 2)
    assert p["net_cpus"] == [32, 33]
    assert p["irqs"] == {37: "32-33", 38: "32", 39: "32", 40: "33", 41: "33"}
    assert p["rps"]["veth1/rx-0"] == [32, 33]  # no node: the whole network set


@pytest.mark.parametrize("ifname", ["nosuch0", "bad/name", "x" * 16, 7])
def test_nic_info_refuses_unknown_interfaces(tmp_path, ifname):
    sys_net, proc = _fake_net(tmp_path)
    with pytest.raises(NetstackError) as e:
        amp.nic_info([ifname], sys_net=sys_net, proc=proc)
    assert e.value.field == "interfaces"


@pytest.mark.parametrize("action,queue", [
    ("virtio2-input.0", 0), ("virtio2-output.3", 3), ("eth0-TxRx-5", 5), ("mlx5_comp7@pci:0000:3b:00.0", 7),
    ("ens1f0-rx-2", 2), ("i40e-eth1-TxRx-11", 11), ("eth0", None),
])
def test_queue_of_irq_action(action, queue):
    assert amp._queue_of(action) == queue


# ------------------------------------------------------------------ spec validation

GOOD = {"interfaces": ["eth0"], "app_cgroups": ["apps.slice/web"]}


def test_validate_normalises():
    s = amp.validate(dict(GOOD, net_cpus="2"))
    assert s["net_cpus"] == 2 and isinstance(s["net_cpus"], int)
    assert s["name"] == "amp" and s["rfs"] is False and s["xps"] is True and s["irqbalance"] == "ban"
    assert amp.validate(dict(GOOD, rfs=1))["rfs"] is True
    assert s["rps_sock_flow_entries"] == amp.DEFAULT_FLOW_ENTRIES
    assert amp.validate(dict(GOOD, net_cpus="2-3"))["net_cpus"] == "2-3"
    assert amp.validate(dict(GOOD, net_cpus=[2, 3]))["net_cpus"] == [2, 3]
    assert amp.validate(dict(GOOD, app_cgroups=[], app_units=["web.service"]))["app_units"] == ["web.service"]


@pytest.mark.parametrize("spec,field", [
    ({"interfaces": ["eth0"]}, "app_cgroups"),
    ({"interfaces": ["eth0"], "app_cgroups": [], "app_units": []}, "app_cgroups"),
    (dict(GOOD, interfaces=["eth/0"]), "interfaces"),
    (dict(GOOD, interfaces=["a-very-long-name0"]), "interfaces"),
    (dict(GOOD, interfaces=[]), "interfaces"),
    (dict(GOOD, interfaces="eth0"), "interfaces"),
    (dict(GOOD, rps_sock_flow_entries=1000), "rps_sock_flow_entries"),
    (dict(GOOD, rps_sock_flow_entries=0), "rps_sock_flow_entries"),
    (dict(GOOD, rps_sock_flow_entries=True), "rps_sock_flow_entries"),
    (dict(GOOD, rps_sock_flow_entries=1 << 28), "rps_sock_flow_entries"),
    (dict(GOOD, irqbalance="off"), "irqbalance"),
    (dict(GOOD, irqbalance=True), "irqbalance"),
    (dict(GOOD, net_cpus="two"), "net_cpus"),
    (dict(GOOD, net_cpus=1.5), "net_cpus"),
    (dict(GOOD, net_cpus=True), "net_cpus"),
    (dict(GOOD, net_cpus=0), "net_cpus"),
    (dict(GOOD, net_cpus="0"), "net_cpus"),
    (dict(GOOD, net_cpus=-2), "net_cpus"),
    (dict(GOOD, net_cpus=[]), "net_cpus"),
    (dict(GOOD, net_cpus=""), "net_cpus"),
    (dict(GOOD, net_cpus=[2, True]), "net_cpus"),
    (dict(GOOD, net_cpus=["x"]), "net_cpus"),
    (dict(GOOD, net_cpus=[-1]), "net_cpus"),
    (dict(GOOD, app_cgroups=["/a/../b"]), "app_cgroups"),
    (dict(GOOD, app_cgroups="apps"), "app_cgroups"),
    (dict(GOOD, app_units=["not a unit"]), "app_units"),
    (dict(GOOD, name="bad name"), "name"),
])
def test_validate_names_the_field(spec, field):
    with pytest.raises(NetstackError) as e:
        amp.validate(spec)
    assert e.value.field == field, (e.value.field, e.value.msg)


# ------------------------------------------------------------------ irqbalance defaults file

DEBIAN_DEFAULTS = """\
# irqbalance is a daemon process that distributes interrupts across
# CPUs on SMP systems.
#IRQBALANCE_ONESHOT=
#IRQBALANCE_BANNED_CPULIST=
ENABLED="1"
IRQBALANCE_ARGS="--policyscript=/usr/local/bin/irqpol --banirq=5 --deepestcache=2"
"""


def _vars(text):
    from ansible_collections.netstack.tuning.plugins.module_utils.core import facts
    return facts.parse_shell_vars(text)


def test_irqbalance_text_sets_the_bans_and_keeps_the_rest():
    out = amp._irqbalance_text(DEBIAN_DEFAULTS, [41, 38], "1-3")
    v = _vars(out)
    assert v["IRQBALANCE_BANNED_CPULIST"] == "1-3"
    args = v["IRQBALANCE_ARGS"].split()
    assert args == ["--policyscript=/usr/local/bin/irqpol", "--deepestcache=2", "--banirq=38", "--banirq=41"]
    assert v["ENABLED"] == "1"
    # every other line is kept, in order, and the ARGS line stays where it was
    for line in DEBIAN_DEFAULTS.splitlines():
        if not line.startswith("IRQBALANCE_ARGS="):
            assert line in out.splitlines()
    lines = out.splitlines()
    assert lines.index('ENABLED="1"') + 1 == next(i for i, l in enumerate(lines) if l.startswith("IRQBALANCE_ARGS="))
    assert out.count("IRQBALANCE_ARGS=") == 1 and out.count("\nIRQBALANCE_BANNED_CPULIST=") == 1


@pytest.mark.parametrize("old", [None, "", DEBIAN_DEFAULTS, 'IRQBALANCE_BANNED_CPULIST=0\nFOO=bar\n',
                                 'export IRQBALANCE_ARGS="-o"\nIRQBALANCE_ARGS="--banirq=9"\n'])
def test_irqbalance_text_is_idempotent(old):
    once = amp._irqbalance_text(old, [7, 8], "2-5")
    assert amp._irqbalance_text(once, [7, 8], "2-5") == once
    again = amp._irqbalance_text(once, [9], "4")  # a new plan replaces the bans, adds nothing else
    assert _vars(again)["IRQBALANCE_BANNED_CPULIST"] == "4"
    assert [a for a in _vars(again)["IRQBALANCE_ARGS"].split() if a.startswith("--banirq")] == ["--banirq=9"]
    assert len(again.splitlines()) == len(once.splitlines())
    assert once.count("netstack.tuning AMP") <= 1


def test_irqbalance_text_replaces_an_existing_cpulist_line():
    old = "A=1\nIRQBALANCE_BANNED_CPULIST=0-1\nB=2\nIRQBALANCE_BANNED_CPULIST=7\n"
    out = amp._irqbalance_text(old, [], "3")
    lines = out.splitlines()
    assert lines[:3] == ["A=1", 'IRQBALANCE_BANNED_CPULIST="3"', "B=2"]
    assert sum(1 for l in lines if l.startswith("IRQBALANCE_BANNED_CPULIST")) == 1
    assert _vars(out)["IRQBALANCE_ARGS"] == ""


# ------------------------------------------------------------------ /proc parsers (recorded text)

AMPFIX = os.path.join(FIX, "amp")
PROC_DIRS = sorted(glob.glob(os.path.join(AMPFIX, "proc-[0-9]*")))


def _read(path):
    with open(path) as f:
        return f.read()


def test_proc_snapshots_are_there():
    assert len(PROC_DIRS) >= 3
    assert _json(os.path.join(AMPFIX, "proc-snapshots.json"))["_source"].startswith("recorded on a 2-CPU")


def test_parsers_on_recorded_proc_text():
    assert PROC_DIRS
    for d in PROC_DIRS:
        _check_recorded_proc(d)


def _check_recorded_proc(d):
    stat = ampctl.parse_stat(_read(os.path.join(d, "stat")))
    assert sorted(stat) == [0, 1]  # per-CPU lines only, not the "cpu " total
    total_line = [int(x) for x in _read(os.path.join(d, "stat")).splitlines()[0].split()[1:9]]
    assert sum(v["total"] for v in stat.values()) == pytest.approx(sum(total_line), abs=4)
    for v in stat.values():
        assert 0 <= v["irq"] <= v["busy"] <= v["total"]
    soft = ampctl.parse_softirqs(_read(os.path.join(d, "softirqs")))
    assert {"NET_RX", "NET_TX", "TIMER"} <= set(soft)
    assert all(sorted(row) == [0, 1] for row in soft.values())
    raw = _read(os.path.join(d, "net", "softnet_stat")).splitlines()
    assert len(raw[0].split()) >= 13  # this kernel prints the CPU number in column 13
    net = ampctl.parse_softnet("\n".join(raw))
    assert sorted(net) == [int(line.split()[12], 16) for line in raw] == [0, 1]
    assert all(net[c]["processed"] == int(raw[i].split()[0], 16) for i, c in enumerate(sorted(net)))
    snap = ampctl.snapshot(proc=d, now=123.0)
    assert snap["ts"] == 123.0 and snap["stat"] == stat and snap["softirqs"] == soft and snap["softnet"] == net


def test_recorded_counters_only_go_up():
    snaps = [ampctl.snapshot(proc=d, now=float(i)) for i, d in enumerate(PROC_DIRS)]
    for a, b in zip(snaps, snaps[1:]):
        for c in (0, 1):
            for k in ("total", "busy", "irq"):
                assert b["stat"][c][k] >= a["stat"][c][k]
            for k in ("processed", "dropped", "squeezed"):
                assert b["softnet"][c][k] >= a["softnet"][c][k]
            for name, row in a["softirqs"].items():
                assert b["softirqs"][name][c] >= row[c]
        assert sum(b["stat"][c]["total"] - a["stat"][c]["total"] for c in (0, 1)) > 0  # time passed
        sig = ampctl.signals(a, b, [0], [1])
        for k in ("net_util", "net_busy", "app_util", "app_irq"):
            assert 0.0 <= sig[k] <= 1.0
        assert sig["dt"] == 1.0 and sig["squeeze_per_s"] >= 0 and sig["drops_per_s"] >= 0


def test_softnet_without_the_cpu_column_maps_rows_onto_online_cpus():
    # written, not recorded: kernels before 5.10 print 11 columns and one row per online CPU
    text = "00000010 00000001 00000002 0 0 0 0 0 0 00000000 00000000\n" \
           "00000020 00000000 00000003 0 0 0 0 0 0 00000000 00000000\n"
    assert ampctl.parse_softnet(text, online=[0, 2]) == {
        0: {"processed": 16, "dropped": 1, "squeezed": 2}, 2: {"processed": 32, "dropped": 0, "squeezed": 3}}
    assert sorted(ampctl.parse_softnet(text)) == [0, 1]


def test_signals_shares_and_rates():
    def snap(ts, cpu0, cpu1, rx0, squeezed):
        return {"ts": ts, "stat": {0: cpu0, 1: cpu1}, "softirqs": {"NET_RX": {0: rx0, 1: 0}},
                "softnet": {0: {"processed": 0, "dropped": 0, "squeezed": squeezed}, 1: {}}}
    a = snap(10.0, {"total": 100, "busy": 10, "irq": 5}, {"total": 100, "busy": 50, "irq": 0}, 1000, 0)
    b = snap(12.0, {"total": 300, "busy": 170, "irq": 125}, {"total": 300, "busy": 100, "irq": 20}, 5000, 30)
    s = ampctl.signals(a, b, [0], [1])
    assert s["net_util"] == 0.6 and s["net_busy"] == 0.8 and s["app_util"] == 0.25 and s["app_irq"] == 0.1
    assert s["net_rx_per_s"] == 2000.0 and s["squeeze_per_s"] == 15.0 and s["dt"] == 2.0


# ------------------------------------------------------------------ controller on recorded traces

def load_trace(name):
    d = _json(os.path.join(AMPFIX, "trace-%s.json" % name))
    return d, [(t, s) for t, s in d["trace"]]


def median_util(samples):
    return statistics.median(s["net_util"] for s in samples)


def split_phases(doc, trace):
    """(samples wholly inside a load phase, samples at least 0.5 s clear of any load phase).
    A sample at t covers (t - 0.5, t]."""
    loads = [(a, b) for a, b, kind in doc["phases"] if kind == "load"]
    inside = [s for t, s in trace if any(a <= t - 0.5 and t <= b for a, b in loads)]
    clear = [s for t, s in trace if not any(a - 0.5 < t and t - 0.5 < b + 0.5 for a, b in loads)]
    return inside, clear


def recorded_cfg(name="load", **kw):
    """Watermarks derived from a recorded trace's own samples, not typed in: ``high`` is half
    the median net_util of its load-phase samples, ``low`` halfway between the median of its
    idle samples and ``high``.  A trace without a load phase (idle) borrows the load trace's
    load samples, one without idle samples (load) the idle trace's.  squeeze_per_s 0 turns the
    squeeze trigger off, so net_util alone decides.  grow_after 3 / shrink_after 10 samples
    (1.5 s / 5 s at the recorded 0.5 s step), cooldown 2 s.  app_high off: the traces were
    recorded with the load generator pinned to the one application CPU (app_util ~1), which
    the application guard would rightly treat as "no core to spare"; the guard has its own
    closed-loop tests below.

    Recorded figures (median net_util of the load samples; the idle samples' median is 0.0 in
    every trace, tick-based accounting on an idle CPU): load 0.735 -> high 0.367, low 0.183;
    idle-load-idle 0.289 -> high 0.144, low 0.072; noisy 0.275 -> high 0.138, low 0.069."""
    doc, tr = load_trace(name)
    inside, clear = split_phases(doc, tr)
    if not inside:
        inside = split_phases(*load_trace("load"))[0]
    if not clear:
        clear = split_phases(*load_trace("idle"))[1]
    high = round(median_util(inside) / 2, 3)
    cfg = {"high": high, "low": round((median_util(clear) + high) / 2, 3), "grow_after": 3, "shrink_after": 10,
           "cooldown": 2.0, "squeeze_per_s": 0, "app_high": None}
    cfg.update(kw)
    return cfg


def changes_of(decisions):
    return [d for d in decisions if d["action"] != "hold"]


def test_recorded_traces_say_what_they_are():
    """Each trace is what its name says: load samples well above idle ones, and the derived
    watermarks between them (recorded: load trace 40 samples, median net_util 0.73; idle
    trace 40 samples, all 0.0; see recorded_cfg for the others)."""
    for name in ("idle", "load", "idle-load-idle", "noisy"):
        d, tr = load_trace(name)
        assert d["_source"].startswith("recorded on a 2-CPU") and d["net"] == [0] and d["app"] == [1]
        assert len(tr) >= 30 and all(0.0 <= s["net_util"] <= 1.0 for _t, s in tr)
        assert all(b > a for (a, _s), (b, _u) in zip(tr, tr[1:]))
        assert all(abs(s["dt"] - 0.5) < 0.1 for _t, s in tr)
        inside, clear = split_phases(d, tr)
        assert bool(inside) == (name != "idle") and bool(clear) == (name != "load")
        if inside and clear:
            assert median_util(inside) > 0.1 and median_util(clear) < 0.05
        cfg = recorded_cfg(name)
        assert 0 < cfg["low"] < cfg["high"] <= 0.5
        assert median_util(inside or split_phases(*load_trace("load"))[0]) > cfg["high"]
    assert median_util(split_phases(*load_trace("load"))[0]) > 0.4
    assert median_util(split_phases(*load_trace("idle"))[1]) < 0.05


def _load_window(doc):
    loads = [p for p in doc["phases"] if p[2] == "load"]
    return len(loads), loads[0][0], loads[-1][1]


def test_grows_under_sustained_load():
    cfg = recorded_cfg()
    _d, tr = load_trace("load")
    out = ampctl.replay(tr, cfg, cores=1, total_cores=8)
    ch = changes_of(out)
    assert ch and all(d["action"] == "grow" for d in ch)
    sizes = [d["to"] for d in out]
    assert sizes == sorted(sizes) and 1 < sizes[-1] <= 7
    first = next(i for i, d in enumerate(out) if d["action"] != "hold")
    assert first >= cfg["grow_after"] - 1
    assert all(s["net_util"] >= cfg["high"] for _t, s in tr[first - cfg["grow_after"] + 1:first + 1])


def test_shrinks_when_idle():
    cfg = recorded_cfg("idle")
    _d, tr = load_trace("idle")
    out = ampctl.replay(tr, cfg, cores=4, total_cores=8)
    ch = changes_of(out)
    assert ch and all(d["action"] == "shrink" for d in ch)
    first = next(i for i, d in enumerate(out) if d["action"] != "hold")
    assert first == cfg["shrink_after"] - 1
    assert out[-1]["to"] == 1  # down to min_cores, one core at a time
    assert all(d["from"] - d["to"] == 1 for d in ch)


def test_idle_load_idle_grows_in_the_load_and_shrinks_after_it():
    cfg = recorded_cfg("idle-load-idle")
    doc, tr = load_trace("idle-load-idle")
    _n, start, end = _load_window(doc)
    out = ampctl.replay(tr, cfg, cores=1, total_cores=8)
    grows = [d for d in out if d["action"] == "grow"]
    shrinks = [d for d in out if d["action"] == "shrink"]
    assert grows and shrinks
    assert all(start < d["t"] <= end + 0.5 for d in grows)
    assert all(d["t"] > end for d in shrinks)
    peak = max(d["to"] for d in out)
    assert peak > 1 and out[-1]["to"] < peak


def test_no_change_on_the_recorded_noisy_trace():
    """1 s bursts of load, 2 s idle: a burst touches at most 3 samples of 0.5 s, a gap at
    most 4 fully; grow_after 4 and shrink_after 10 ride through both."""
    doc, tr = load_trace("noisy")
    cfg = recorded_cfg("noisy", grow_after=4, shrink_after=10)
    hot = [s for _t, s in tr if s["net_util"] >= cfg["high"]]
    cold = [s for _t, s in tr if s["net_util"] <= cfg["low"]]
    assert len(hot) >= 8 and len(cold) >= 8  # the trace really swings across both watermarks
    assert len([p for p in doc["phases"] if p[2] == "load"]) >= 8
    for cores in (1, 2, 4):
        assert changes_of(ampctl.replay(tr, cfg, cores=cores, total_cores=8)) == [], cores
    # the same trace does resize a controller without hysteresis
    assert changes_of(ampctl.replay(tr, dict(cfg, grow_after=1, shrink_after=1, cooldown=0), cores=2,
                                    total_cores=8))


def test_no_change_on_noise_between_the_watermarks():
    cfg = {"high": 0.6, "low": 0.2, "grow_after": 3, "shrink_after": 10, "cooldown": 0}
    tr = [(0.5 * i, {"net_util": 0.4 + 0.15 * ((-1) ** i) * (i % 3) / 2.0}) for i in range(400)]
    assert all(0.2 < s["net_util"] < 0.6 for _t, s in tr)
    out = ampctl.replay(tr, cfg, cores=3, total_cores=8)
    assert changes_of(out) == [] and all(d["hot_streak"] == d["cold_streak"] == 0 for d in out)


def test_no_change_on_seeded_random_noise():
    """1000 samples of N(0.4, 0.1): some cross a watermark, never enough in a row."""
    rng = random.Random(20240611)
    tr = [(0.5 * i, {"net_util": min(1.0, max(0.0, rng.gauss(0.4, 0.1))), "squeeze_per_s": 0})
          for i in range(1000)]
    cfg = {"high": 0.6, "low": 0.2, "grow_after": 3, "shrink_after": 10, "cooldown": 10}
    assert sum(1 for _t, s in tr if s["net_util"] >= 0.6) >= 5
    assert sum(1 for _t, s in tr if s["net_util"] <= 0.2) >= 5
    assert len(changes_of(ampctl.replay(tr, cfg, cores=2, total_cores=8))) == 0


def test_cooldown_is_respected():
    _doc, tr = load_trace("idle-load-idle")
    eager = recorded_cfg("idle-load-idle", grow_after=1, shrink_after=1, cooldown=0)
    assert len(changes_of(ampctl.replay(tr, eager, cores=1, total_cores=64))) > 10
    for cooldown in (1.0, 3.0, 7.5):
        ch = changes_of(ampctl.replay(tr, dict(eager, cooldown=cooldown), cores=1, total_cores=64))
        assert len(ch) >= 3
        assert all(b["t"] - a["t"] >= cooldown for a, b in zip(ch, ch[1:])), cooldown


def test_min_max_and_min_app_cores_are_respected():
    _d, load = load_trace("load")
    _d, idle = load_trace("idle")
    out = ampctl.replay(load, recorded_cfg(max_cores=3), cores=1, total_cores=8)
    assert max(d["to"] for d in out) == 3
    assert any(d.get("limited") and "max_cores 3" in d["why"] for d in out)
    out = ampctl.replay(load, recorded_cfg(min_app_cores=2), cores=1, total_cores=4)
    assert max(d["to"] for d in out) == 2  # 4 cores, 2 kept for applications
    out = ampctl.replay(load, recorded_cfg(min_app_cores=7), cores=1, total_cores=8)  # 8 - 7: no room
    assert changes_of(out) == [] and any(d.get("limited") for d in out)
    out = ampctl.replay(idle, recorded_cfg("idle", min_cores=2), cores=5, total_cores=8)
    assert min(d["to"] for d in out) == 2 == out[-1]["to"]
    assert any(d.get("limited") and "min_cores 2" in d["why"] for d in out)
    assert ampctl.Controller({"min_cores": 2, "max_cores": 6}, total_cores=None).bounds() == (2, 6)
    assert ampctl.Controller({}, total_cores=16).bounds() == (1, 15)


def test_projection_guard_blocks_a_shrink_that_would_run_hot():
    cfg = {"high": 0.6, "low": 0.4, "grow_after": 3, "shrink_after": 3, "cooldown": 0}
    tr = [(float(i), {"net_util": 0.35}) for i in range(30)]
    out = ampctl.replay(tr, cfg, cores=4, total_cores=8)
    # 4 -> 3 (0.35 * 4/3 = 0.47) and 3 -> 2 (0.525) are safe; 2 -> 1 would run at 0.70
    assert [d["to"] for d in changes_of(out)] == [3, 2]
    assert out[-1]["to"] == 2
    assert "one core fewer would run at 70%" in out[-1]["why"]
    c = ampctl.Controller(dict(cfg, shrink_after=1))
    assert c.step({"net_util": 0.25}, 2, 0.0)["action"] == "shrink"  # 0.5 on one core: fine


def test_hot_by_squeeze_or_latency():
    c = ampctl.Controller({"grow_after": 1, "squeeze_per_s": 50, "latency_high_us": 500})
    assert c.step({"net_util": 0.1, "squeeze_per_s": 80}, 1, 0.0)["action"] == "grow"
    d = ampctl.Controller({"grow_after": 1, "latency_high_us": 500}).step({"net_util": 0.1, "latency_us": 900}, 1, 0)
    assert d["action"] == "grow" and "latency" in d["why"]
    d = ampctl.Controller({"grow_after": 1}).step({"net_util": 0.1, "latency_us": 900}, 2, 0)
    assert d["action"] == "hold"  # no latency bound configured


@pytest.mark.parametrize("cfg,field", [
    ({"low": 0.7, "high": 0.6}, "controller.low"),
    ({"low": 0.6, "high": 0.6}, "controller.low"),
    ({"high": 1.5}, "controller.high"),  # the schema names the bound it breaks
    ({"low": -0.1}, "controller.low"),
    ({"high": "0.6"}, "controller.high"),
    ({"low": [0.1]}, "controller.low"),
    ({"grow_after": 0}, "controller.grow_after"),
    ({"shrink_after": 1.5}, "controller.shrink_after"),
    ({"min_cores": True}, "controller.min_cores"),
    ({"min_app_cores": 0}, "controller.min_app_cores"),
    ({"max_cores": 0}, "controller.max_cores"),
    ({"min_cores": 3, "max_cores": 2}, "controller.max_cores"),
    ({"interval": 0.1}, "controller.interval"),
    ({"interval": "2"}, "controller.interval"),
    ({"cooldown": "20"}, "controller.cooldown"),
    ({"cooldown": -1}, "controller.cooldown"),
    ({"squeeze_per_s": "lots"}, "controller.squeeze_per_s"),
    ({"latency_high_us": "1ms"}, "controller.latency_high_us"),
])
def test_settings_name_the_field(cfg, field):
    with pytest.raises(NetstackError) as e:
        ampctl.settings(cfg)
    assert e.value.field == field, (e.value.field, e.value.msg)


def test_check_controller_refuses_unknown_keys_then_checks_settings():
    with pytest.raises(NetstackError) as e:
        ampctl.check_controller({"interval": 2, "nsprop": 1})
    assert e.value.field == "controller" and "unknown key nsprop" in e.value.msg
    with pytest.raises(NetstackError) as e:
        ampctl.check_controller({"interval": "2"})
    assert e.value.field == "controller.interval"
    assert ampctl.check_controller({"max_cores": None}) == {"max_cores": None}   # as given: the agent fills defaults


def test_settings_defaults():
    assert ampctl.settings(None) == ampctl.DEFAULTS
    s = ampctl.settings({"high": None, "max_cores": None, "low": 0.1})
    assert s["high"] == ampctl.DEFAULTS["high"] and s["max_cores"] is None and s["low"] == 0.1


# ------------------------------------------------------------------ agent config with an amp section

AMP_SEC = {"state": "present",
           "partition": {"name": "amp", "interfaces": ["eth0"], "app_cgroups": ["apps.slice"], "net_cpus": 2},
           "controller": {"high": 0.7, "low": 0.2, "max_cores": 4, "probe": {"port": 6379}}}


def _with(**kw):
    sec = json.loads(json.dumps(AMP_SEC))
    for k, v in kw.items():
        part, _sep, key = k.partition("__")
        if v is None:
            sec[part].pop(key, None)
        else:
            sec[part][key] = v
    return {"amp": sec}


def test_agent_accepts_a_good_amp_section():
    out = agent_config.validate({"amp": AMP_SEC})
    assert out["amp"] == AMP_SEC and out["interval"] == agent_config.DEFAULTS["interval"]
    assert agent_config.validate({"amp": {"state": "absent", "partition": {"name": "amp"}}})["amp"]["state"] == "absent"


@pytest.mark.parametrize("cfg,field", [
    (_with(controller__bogus=1), "amp.controller"),
    (_with(partition__app_cgroups=None), "amp.partition.app_cgroups"),
    (_with(partition__interfaces=["eth/0"]), "amp.partition.interfaces"),
    (_with(partition__net_cpus=0), "amp.partition.net_cpus"),
    (_with(partition__irqbalance="maybe"), "amp.partition.irqbalance"),
    (_with(controller__low=0.9), "amp.controller"),
    (_with(controller__high="0.7"), "amp.controller.high"),
    (_with(controller__grow_after=0), "amp.controller.grow_after"),
    ({"amp": {"state": "present"}}, "amp"),
    ({"amp": {"state": "on", "partition": {"name": "amp"}}}, "amp"),
])
def test_agent_refuses_a_bad_amp_section_naming_the_field(cfg, field):
    with pytest.raises(NetstackError) as e:
        agent_config.validate(cfg, origin="agent.d/amp.json")
    assert (e.value.field or "").startswith(field), (e.value.field, e.value.msg)
    assert "agent.d/amp.json" in str(e.value)


def test_agent_loads_the_amp_drop_in(tmp_path):
    d = tmp_path / "agent.d"
    d.mkdir()
    (d / "amp.json").write_text(json.dumps({"amp": AMP_SEC}))
    cfg, sources, _digest = agent_config.load(str(tmp_path / "agent.json"), str(d))
    assert cfg["amp"]["partition"]["interfaces"] == ["eth0"] and sources == [str(d / "amp.json")]


# ------------------------------------------------------------------ closed loop

def _closed_loop(app_high, steps=300):
    """A host of 4 cores whose network load comes from the applications' own work: the
    applications want 1.6 CPUs, each CPU-second of their work makes 0.3 CPU-seconds of
    softirq, spread over the network set.  Giving the network set a core the applications
    need starves them, their traffic falls, the set looks cold and shrinks: the loop the VM's
    decision log showed before app_high existed."""
    cfg = {"high": 0.2, "low": 0.12, "grow_after": 2, "shrink_after": 4, "cooldown": 4, "app_high": app_high}
    c = ampctl.Controller(cfg, total_cores=4)
    cores, sizes = 1, []
    for t in range(steps):
        app = 4 - cores
        done = min(1.6, app * 0.98)
        sig = {"net_util": min(1.0, 0.3 * done / cores), "app_util": done / app, "squeeze_per_s": 0.0}
        cores = c.step(sig, cores, float(t))["to"]
        sizes.append(cores)
    return sizes


def test_no_flap_when_the_network_load_follows_the_applications():
    sizes = _closed_loop(app_high=0.9)
    changes = sum(1 for a, b in zip(sizes, sizes[1:]) if a != b)
    assert sizes[-1] == 2 and changes == 1 and sizes[1] == 2  # grew once (1 -> 2) at the start, then held


def test_without_the_application_guard_the_same_loop_flaps():
    sizes = _closed_loop(app_high=None)
    changes = sum(1 for a, b in zip(sizes, sizes[1:]) if a != b)
    assert changes > 20  # the model above does flap: the guard is what stops it


def test_the_application_guard_gives_way_to_packet_loss():
    c = ampctl.Controller({"high": 0.5, "grow_after": 1, "cooldown": 0}, total_cores=4)
    busy_apps = {"net_util": 0.9, "app_util": 0.9, "squeeze_per_s": 0.0}
    d = c.step(busy_apps, 2, 0.0)
    assert d["action"] == "hold" and "app_high" in d["why"]
    d = c.step(dict(busy_apps, squeeze_per_s=500.0), 2, 1.0)
    assert d["action"] == "grow" and d["to"] == 3


def test_a_resize_never_brings_back_a_removed_partition(tmp_path):
    p = amp.Partition("gone", state_dir=str(tmp_path))
    with pytest.raises(NetstackError) as e:
        p.present({"interfaces": ["lo"], "app_cgroups": ["x"]}, net_cpus=[0], resize=True)
    assert e.value.field == "name" and "removed" in e.value.msg
    assert not os.path.exists(os.path.join(str(tmp_path), "amp", "gone.json"))
