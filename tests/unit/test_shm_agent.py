"""Unit tests: the same-host path's policy engine and netstack-agent's config handling."""
import json
import os
import signal
import struct
import sys
import time

import pytest

from ansible_collections.netstack.tuning.plugins.module_utils.agent import config as agent_config, control
from ansible_collections.netstack.tuning.plugins.module_utils.agent import daemon
from ansible_collections.netstack.tuning.plugins.module_utils.agent import supervisor
from ansible_collections.netstack.tuning.plugins.module_utils.shm_path import path as shm
from ansible_collections.netstack.tuning.plugins.module_utils.core.common import NetstackError


def test_validate_normalises():
    n = shm.validate({"policies": [{"name": "r", "ports": 6379}, {"name": "w", "ports": " 8000 - 8099 "}],
                      "local_addresses": ["127.0.0.1/8", "::1"], "cgroup": "apps/"})
    assert [(p["lo"], p["hi"]) for p in n["policies"]] == [(6379, 6379), (8000, 8099)]
    assert n["local_addresses"] == ["127.0.0.0/8", "::1/128"]
    assert n["cgroup"] == "/apps"


@pytest.mark.parametrize("cfg,field", [
    ({"policies": [{"name": "a", "ports": 0}]}, "shm.policies[0].ports"),
    ({"policies": [{"name": "a", "ports": "90-80"}]}, "shm.policies[0].ports"),
    ({"policies": [{"name": "a", "ports": 1}, {"name": "a", "ports": 2}]}, "shm.policies[1].name"),
    ({"policies": [{"name": "a"}]}, "shm.policies[0]"),
    ({"policies": [], "local_addresses": ["::/0"]}, "shm.local_addresses[0]"),
    ({"policies": [], "local_addresses": ["not-an-ip"]}, "shm.local_addresses[0]"),
    ({"policies": [], "cgroup": "/a/../b"}, "shm.cgroup"),
    ({"policies": [{"name": "p%d" % i, "ports": i + 1} for i in range(17)]}, "shm.policies"),
    ({"policies": [{"name": "a", "ports": 1, "max_queue": 100}]}, "shm.policies[0].max_queue"),
    ({"policies": [{"name": "a", "ports": 1, "max_queue": 1 << 31}]}, "shm.policies[0].max_queue"),
    ({"policies": [{"name": "a", "ports": 1, "max_queue": "4M"}]}, "shm.policies[0].max_queue"),
    ({"policies": [{"name": "a", "ports": 1, "max_queue": True}]}, "shm.policies[0].max_queue"),
    ({"policies": [], "capture": "later"}, "shm.capture"),
    ({"policies": [], "capture_segments": 0}, "shm.capture_segments"),
    ({"policies": [], "capture_segments": 65}, "shm.capture_segments"),
    ({"policies": [], "capture_max_segment": 100}, "shm.capture_max_segment"),
    ({"policies": [], "capture_max_segment": "32K"}, "shm.capture_max_segment"),
    ({"policies": [], "capture": "handshake", "capture_segments": 4}, "shm.capture"),
])
def test_validate_names_the_field(cfg, field):
    with pytest.raises(NetstackError) as e:
        shm.validate(cfg)
    assert e.value.field.startswith(field), e.value.field


def test_capture_defaults_and_public_form():
    n = shm.validate({"policies": []})
    assert (n["capture"], n["capture_segments"], n["capture_max_segment"]) == ("segments", 8, 32768)
    assert shm.public(n)["capture"] == "segments" and shm.public(n)["capture_segments"] == 8
    h = shm.public(shm.validate({"policies": [], "capture": "handshake"}))
    assert h["capture"] == "handshake" and "capture_segments" not in h and "capture_max_segment" not in h
    n = shm.validate({"policies": [], "capture_segments": 3, "capture_max_segment": 4096})
    assert shm.public(shm.validate(shm.public(n))) == shm.public(n)


def test_capture_mode_decides_the_programs(tmp_path, monkeypatch):
    monkeypatch.setattr(shm.bpf, "cgroup2_root", lambda: str(tmp_path))
    p = shm.ShmPath(name="t", state_dir=str(tmp_path / "state"))
    seg = p.programs("/", "segments")
    assert [x["type"] for x in seg] == ["sock_ops", "sk_msg", "sched_cls"]
    assert seg[2]["interface"] == "lo" and seg[2]["direction"] == "ingress" and seg[2]["priority"] == shm.TC_PRIORITY
    assert [x["type"] for x in p.programs("/", "handshake")] == ["sock_ops", "sk_msg"]


def test_values_of_an_older_program_decode():
    """A program pinned by the previous engine has a 24-byte cfg and 11 counters per CPU: read
    as zero-padded (capture mode handshake, no large_conns) until present replaces it."""
    old_cfg = struct.pack("<IIIIII", 1, 2, 3, 4, 5, shm.C_ENABLED)
    vals = struct.unpack(shm.CFG_FMT, shm._padded(old_cfg, shm.CFG_FMT))
    assert vals == (1, 2, 3, 4, 5, shm.C_ENABLED, 0, 0, 0)
    old_stats = struct.pack("<11Q", *range(1, 12))
    assert struct.unpack(shm.STATS_FMT, shm._padded(old_stats, shm.STATS_FMT)) == tuple(range(1, 12)) + (0,)


def test_prefix_round_trip():
    for net in ("127.0.0.0/8", "10.1.2.3/32", "::1/128", "fd00::/8"):
        assert shm.decode_prefix(shm.encode_prefix(net)) == net


def test_policy_round_trip():
    p = shm.validate({"policies": [{"name": "a", "ports": "1000-2000"}]})["policies"][0]
    d = shm.decode_policy(shm.encode_policy(p))
    assert d["valid"] and d["ports"] == "1000-2000" and d["max_queue"] == 0


def test_max_queue_round_trip_and_public_form():
    cfg = {"policies": [{"name": "a", "ports": 80, "max_queue": 1 << 20}, {"name": "b", "ports": 81}]}
    n = shm.validate(cfg)
    assert shm.decode_policy(shm.encode_policy(n["policies"][0]))["max_queue"] == 1 << 20
    # the public form says max_queue only where it was given, so a diff shows what the user wrote
    assert shm.public(n)["policies"] == [{"name": "a", "ports": "80", "max_queue": 1 << 20}, {"name": "b", "ports": "81"}]
    assert len(shm.encode_policy(n["policies"][1])) == shm.POLICY_SIZE


def test_kernel_layout_of_the_running_kernel():
    """Offsets from this machine's BTF; every field the program reads is there."""
    layout = shm.kernel_layout()
    assert set(m for m, _s, _f in shm._REQUIRED) <= set(layout["defines"])
    assert layout["queue"] in ("msg_tot_len", "list")
    assert all(isinstance(v, int) and 0 <= v < 8192 for v in layout["defines"].values())
    assert all(f.startswith("-DOFF_") for f in shm.kernel_cflags(layout))


def test_kernel_layout_names_a_missing_field():
    class NoPsock(object):
        def offset(self, struct_name, member):
            return None if struct_name == "sk_psock" else 8
    with pytest.raises(NetstackError) as e:
        shm.kernel_layout(NoPsock())
    assert e.value.field == "btf" and "sk_psock" in str(e.value)


def test_metrics_lines():
    c = {"policies": {"redis": dict((k, 3) for k in shm.STATS_FIELDS)}, "total": {}, "sockets": 4}
    text = "\n".join(shm.metrics(c))
    assert 'netstack_shm_shm_bytes_total{policy="redis"} 3' in text
    assert "netstack_shm_sockets 4" in text
    assert "# TYPE netstack_shm_captured_total counter" in text


def _write(path, data):
    with open(path, "w") as f:
        json.dump(data, f)


def test_agent_config_merge_and_defaults(tmp_path):
    _write(tmp_path / "agent.json", {"interval": 3, "metrics": {"port": 0}})
    d = tmp_path / "agent.d"
    d.mkdir()
    _write(d / "shm.json", {"shm": {"state": "present", "policy": {"policies": [{"name": "r", "ports": 6379}]}}})
    cfg, sources, digest = agent_config.load(str(tmp_path / "agent.json"), str(d))
    assert cfg["interval"] == 3 and cfg["metrics"]["port"] == 0 and cfg["metrics"]["listen"] == "127.0.0.1"
    assert cfg["shm"]["policy"]["policies"][0]["ports"] == 6379
    assert len(sources) == 2 and len(digest) == 16


@pytest.mark.parametrize("data,field", [
    ({"interval": 0}, "interval"),
    ({"bogus": 1}, ""),
    ({"metrics": {"port": 70000}}, "metrics.port"),
    ({"shm": {"state": "present"}}, "shm.policy"),
    ({"shm": {"state": "present", "policy": {"policies": [{"name": "a", "ports": "9-1"}]}}}, "shm.policy.policies[0].ports"),
])
def test_agent_config_refused_with_field(tmp_path, data, field):
    _write(tmp_path / "agent.json", data)
    with pytest.raises(NetstackError) as e:
        agent_config.load(str(tmp_path / "agent.json"), None)
    assert (e.value.field or "").startswith(field), e.value.field
    assert "agent.json" in str(e.value)


def test_write_section_is_idempotent_and_check_mode_writes_nothing(tmp_path):
    d = str(tmp_path / "agent.d")
    sec = {"state": "absent", "name": "shm"}
    assert control.write_section(d, "shm", sec, check_mode=True)
    assert not os.path.exists(d)
    assert control.write_section(d, "shm", sec)
    assert not control.write_section(d, "shm", sec)
    assert json.load(open(os.path.join(d, "shm.json"))) == {"shm": sec}
    assert control.write_section(d, "shm", None)
    assert not os.path.exists(os.path.join(d, "shm.json"))


def test_supervisor_restarts_a_dying_child(tmp_path):
    """The supervisor restarts its child each time it exits, until SIGTERM."""
    marker = tmp_path / "starts"
    script = tmp_path / "child.py"
    script.write_text("import sys\nopen(%r, 'a').write('x')\nsys.exit(3)\n" % str(marker))
    pidfile = str(tmp_path / "sup.pid")
    pid = os.fork()
    if pid == 0:
        try:
            supervisor.supervise([sys.executable, str(script)], pidfile=pidfile, sleep=lambda s: time.sleep(0.05))
        finally:
            os._exit(0)
    deadline = time.time() + 20
    while time.time() < deadline and (not marker.exists() or len(marker.read_text()) < 3):
        time.sleep(0.05)
    os.kill(pid, signal.SIGTERM)
    os.waitpid(pid, 0)
    assert len(marker.read_text()) >= 3
    assert not os.path.exists(pidfile)


def test_agent_stops_after_a_storm_of_signals(tmp_path):
    """`netstack-agent stop` signals the supervisor (which forwards SIGTERM) and the agent
    at once, and a role may reload it just before: the agent sees signals back to back.  A
    handler that takes a lock (threading.Event.set) deadlocks when a signal lands while the
    main thread, or an earlier handler, holds that lock; the agent must still stop."""
    cfg = tmp_path / "agent.json"
    cfg.write_text(json.dumps({"interval": 1, "state_dir": str(tmp_path / "state"), "log": str(tmp_path / "agent.log"),
                               "metrics": {"port": 0}}))
    pidfile = tmp_path / "agent.pid"
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = daemon.Agent(str(cfg), None, pidfile=str(pidfile), status=str(tmp_path / "status.json")).run()
        finally:
            os._exit(code)
    done, status = 0, None
    try:
        deadline = time.time() + 20
        while time.time() < deadline and not pidfile.exists():
            time.sleep(0.02)
        assert pidfile.exists(), "the agent did not start"
        end = time.time() + 3
        while time.time() < end:  # reload requests, as fast as they can be sent
            os.kill(pid, signal.SIGHUP)
        for _ in range(100):
            os.kill(pid, signal.SIGTERM)
        deadline = time.time() + 10
        while time.time() < deadline and not done:
            done, status = os.waitpid(pid, os.WNOHANG)
            time.sleep(0.05)
        assert done, "the agent did not stop within 10 s of SIGTERM"
        assert os.waitstatus_to_exitcode(status) == 0
        assert not pidfile.exists()
    finally:
        if not done:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
