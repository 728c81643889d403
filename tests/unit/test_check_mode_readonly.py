"""Check mode writes nothing anywhere: no state directory, no lock file, no record.

Every case runs with its state and config directories inside tmp_path (which must stay
empty), with the host-changing calls (bpffs mount, program load, agent signal, journal
apply) replaced by a guard that fails the test."""
import json
import os

import pytest

from ansible_collections.netstack.tuning.plugins.module_utils.agent import control as agent
from ansible_collections.netstack.tuning.plugins.module_utils.bpf import program as bpf
from ansible_collections.netstack.tuning.plugins.module_utils.core import journal
from ansible_collections.netstack.tuning.plugins.module_utils.shm_path import path as shm
from ansible_collections.netstack.tuning.plugins.module_utils.tcp_tuning import policy as tcppolicy
from ansible_collections.netstack.tuning.plugins.module_utils.traffic import collect as trafficcollect
from ansible_collections.netstack.tuning.plugins.module_utils.core.common import NetstackError
from ansible_collections.netstack.tuning.plugins.modules import bpf_program, cpu_partition, shm_agent, tcp_policy


@pytest.fixture(autouse=True)
def guard_the_host(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("test guard: check mode went on to change the host")

    monkeypatch.setattr(bpf, "mount_bpffs", refuse)
    monkeypatch.setattr(bpf, "compile_and_load", refuse)
    monkeypatch.setattr(agent, "notify", refuse)
    monkeypatch.setattr(journal.Journal, "apply", refuse)


class FakeModule(object):
    def __init__(self, params, check_mode=True):
        self.params = params
        self.check_mode = check_mode
        self._diff = True
        self.warnings = []

    def warn(self, msg):
        self.warnings.append(msg)


def nothing_in(path):
    made = []
    for root, dirs, files in os.walk(str(path)):
        made += [os.path.join(root, n) for n in dirs + files]
    return made


def test_bpf_engine_absent_in_check_mode_makes_no_directory(tmp_path):
    eng = bpf.Engine(state_dir=str(tmp_path / "state"), pin_root=str(tmp_path / "pins"))
    res = eng.absent("x", check_mode=True)
    assert res["changed"] is False
    assert nothing_in(tmp_path) == []


def test_bpf_program_module_absent_in_check_mode_writes_nothing(tmp_path):
    p = {"name": "x", "state": "absent", "state_dir": str(tmp_path / "state"), "src": None,
         "remote_src": False, "source_text": None, "programs": None, "cflags": [], "migrate_maps": True}
    bpf_program.run(FakeModule(p))
    assert nothing_in(tmp_path) == []


def test_bpf_engine_absent_in_check_mode_with_a_record_reports_and_writes_nothing(tmp_path):
    state = tmp_path / "state"
    (state / "bpf").mkdir(parents=True)
    rec = {"digest": "d", "programs": [], "maps": [], "pin_dir": str(tmp_path / "pins" / "x")}
    (state / "bpf" / "x.json").write_text(json.dumps(rec))
    before = sorted(nothing_in(tmp_path))
    eng = bpf.Engine(state_dir=str(state), pin_root=str(tmp_path / "pins"))
    res = eng.absent("x", check_mode=True)
    assert res["changed"] is True and res["action"] == "remove"
    assert sorted(nothing_in(tmp_path)) == before   # no x.lock, no events.jsonl


def test_bpf_engine_check_mode_waits_for_a_writer_holding_the_lock(tmp_path):
    """Check mode still reads under the lock when its file exists (a shared lock, opened
    read-only), so it never reports a half-made state."""
    import fcntl
    import threading
    state = tmp_path / "state"
    eng = bpf.Engine(state_dir=str(state), pin_root=str(tmp_path / "pins"))
    (state / "bpf").mkdir(parents=True)
    lock = state / "bpf" / "x.lock"
    lock.write_text("")
    fd = os.open(str(lock), os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    done = threading.Event()
    t = threading.Thread(target=lambda: (eng.absent("x", check_mode=True), done.set()))
    t.start()
    assert not done.wait(0.3)
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
    t.join(5)
    assert done.is_set()


def test_shm_path_absent_in_check_mode_writes_nothing(tmp_path):
    path = shm.ShmPath(name="shm", state_dir=str(tmp_path / "state"), pin_root=str(tmp_path / "pins"))
    res = path.absent(check_mode=True)
    assert res["changed"] is False
    assert nothing_in(tmp_path) == []


def test_shm_agent_module_in_check_mode_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(agent, "running", lambda *a: None)
    p = {"state": "absent", "policies": None, "local_addresses": ["127.0.0.0/8"], "cgroup": "/", "name": "shm",
         "config_dir": str(tmp_path / "conf"), "notify_agent": True, "state_dir": str(tmp_path / "state"),
         "source_text": None}
    shm_agent.run(FakeModule(p))
    assert nothing_in(tmp_path) == []


def test_shm_path_present_in_check_mode_writes_nothing(tmp_path):
    if bpf.cgroup2_root() is None:
        pytest.skip("no cgroup v2 hierarchy")
    path = shm.ShmPath(name="shm", state_dir=str(tmp_path / "state"), pin_root=str(tmp_path / "pins"))
    res = path.present({"policies": [{"name": "r", "ports": 6379}]}, "/* source */", check_mode=True)
    assert res["changed"] is True
    assert nothing_in(tmp_path) == []


def test_traffic_collector_absent_in_check_mode_writes_nothing(tmp_path):
    coll = trafficcollect.Collector(name="traffic", state_dir=str(tmp_path / "state"), pin_root=str(tmp_path / "pins"))
    coll.absent(check_mode=True)
    assert nothing_in(tmp_path) == []


class FakePolicy(object):
    """tcppolicy.Policy without a kernel: an empty active rule set."""

    def __init__(self, pin_dir):
        self.pin_dir = pin_dir

    def active_raw(self):
        return {"active_set": 0, "nrules": [0, 0], "flags": 0, "long_bytes": 1 << 20}, []

    def config(self):
        return self.active_raw()[0]

    def counters(self, n):
        return [{"hits": 0, "errors": 0}] * n

    def peers(self):
        return []

    def write(self, *a):
        raise AssertionError("test guard: check mode wrote the rules")

    def close(self):
        pass


def test_tcp_policy_module_in_check_mode_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(tcppolicy, "Policy", FakePolicy)
    monkeypatch.setattr(tcppolicy, "available_congestion_controls", lambda: ["reno", "cubic"], raising=False)
    p = {"program": "tcp_tuner", "rules": [{"name": "a", "set": {"initial_cwnd": 10}}], "long_flow_bytes": 1 << 20,
         "track_flows": None, "kernel_hz": 250, "state": "present", "pin_root": str(tmp_path / "pins"),
         "state_dir": str(tmp_path / "state")}
    res = tcp_policy.run(FakeModule(p))
    assert res["changed"] is True
    assert nothing_in(tmp_path) == []


def test_cpu_partition_module_absent_in_check_mode_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(agent, "running", lambda *a: None)
    p = {"name": "amp", "state": "absent", "net_cpus": "auto", "interfaces": None, "app_cgroups": [],
         "app_units": [], "rfs": False, "rps_sock_flow_entries": 32768, "xps": True, "irqbalance": "ban",
         "controller": None, "config_dir": str(tmp_path / "conf"), "notify_agent": True,
         "state_dir": str(tmp_path / "state")}
    cpu_partition.run(FakeModule(p))
    assert nothing_in(tmp_path) == []


def test_check_mode_failure_also_writes_nothing(tmp_path):
    """A check-mode run that fails (here: a name the engine refuses) leaves nothing either."""
    eng = bpf.Engine(state_dir=str(tmp_path / "state"), pin_root=str(tmp_path / "pins"))
    with pytest.raises(NetstackError):
        eng.absent("bad name!", check_mode=True)
    assert nothing_in(tmp_path) == []


def _nic_with_irqs():
    from ansible_collections.netstack.tuning.plugins.module_utils.amp import partition as amp
    for name in sorted(os.listdir("/sys/class/net")):
        try:
            if amp.nic_info([name])[name]["irqs"]:
                return name
        except NetstackError:
            continue
    return None


def test_cpu_partition_check_mode_does_not_write_irq_affinities(tmp_path, monkeypatch):
    """The movability probe writes each IRQ's affinity back (EIO for kernel-managed ones);
    a write, so check mode skips it (irqbalance moving an IRQ between the read and the
    write-back would have been undone by a dry run)."""
    from ansible_collections.netstack.tuning.plugins.module_utils.amp import partition as amp
    from ansible_collections.netstack.tuning.plugins.module_utils.core import kstate
    nic = _nic_with_irqs()
    if nic is None:
        pytest.skip("no interface with IRQs here")
    writes = []

    def refuse(self, *a):
        writes.append(self.key)
        raise NetstackError("test guard: write in check mode", field=self.key)

    monkeypatch.setattr(kstate.Item, "write", refuse)
    monkeypatch.setattr(kstate.Item, "write_raw", refuse)
    part = amp.Partition("amp", state_dir=str(tmp_path / "state"))
    try:
        part.present({"interfaces": [nic], "app_units": ["netstack-test.service"]}, check_mode=True)
    except NetstackError as e:
        assert "test guard" not in e.msg
    assert writes == []
    assert nothing_in(tmp_path) == []
