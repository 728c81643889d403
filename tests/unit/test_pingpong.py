"""The request/response probe behind shm_probe (plugins/module_utils/shm_path/pingpong.py), over real
loopback sockets (no BPF here: both ports are plain TCP; the main job's test runs it with
the same-host path on)."""
import os
import socket

import pytest

from ansible_collections.netstack.tuning.plugins.module_utils.shm_path import pingpong
from ansible_collections.netstack.tuning.plugins.module_utils.core.common import NetstackError


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _children():
    me = str(os.getpid())
    out = []
    for pid in os.listdir("/proc"):
        try:
            with open("/proc/%s/stat" % pid) as f:
                if f.read().rsplit(")", 1)[1].split()[1] == me:
                    out.append(pid)
        except (OSError, IndexError):
            pass
    return out


def test_both_arms_measure_round_trips_and_leave_no_process():
    before = _children()
    a, b = _free_ports(2)
    res = pingpong.run([("path", a), ("tcp", b)], size=200, seconds=0.2, rounds=2)
    for arm in ("path", "tcp"):
        r = res[arm]
        assert r["round_trips"] > 10 and r["round_trips_per_s"] > 0, r
        assert 0 < r["rtt_us"]["p50"] <= r["rtt_us"]["p90"] <= r["rtt_us"]["p99"], r
    assert _children() == before


def test_a_port_in_use_is_an_error_naming_the_ports():
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        with pytest.raises(NetstackError) as e:
            pingpong.run([("path", busy.getsockname()[1]), ("tcp", _free_ports(1)[0])], seconds=0.1, rounds=1)
        assert e.value.field == "ports" and "cannot listen" in str(e.value)
    finally:
        busy.close()


def test_a_failing_client_is_an_error_and_leaves_no_process(tmp_path):
    before = _children()
    with pytest.raises(NetstackError) as e:
        pingpong.run([("path", _free_ports(1)[0])], seconds=0.1, rounds=1,
                     cgroup_procs=str(tmp_path / "no-such-cgroup" / "cgroup.procs"))
    assert e.value.field == "ports" and "the client failed: FileNotFoundError" in str(e.value)
    assert _children() == before


def test_a_client_past_its_timeout_is_killed_and_named():
    before = _children()
    with pytest.raises(NetstackError) as e:
        pingpong.run([("path", _free_ports(1)[0])], seconds=5, rounds=1, timeout=0.3)
    assert e.value.field == "seconds" and "did not finish in time" in str(e.value)
    assert _children() == before


def test_percentiles_of_few_values():
    """No round trip gives no percentile; one gives itself; more interpolate (core/stats.quantile)."""
    none = pingpong.summarize({"rtts": [], "count": 0, "elapsed": 0.0})
    assert none["rtt_us"] == {"p50": None, "p90": None, "p99": None} and none["round_trips_per_s"] == 0.0
    one = pingpong.summarize({"rtts": [5000], "count": 1, "elapsed": 1.0})
    assert one["rtt_us"] == {"p50": 5.0, "p90": 5.0, "p99": 5.0}
    three = pingpong.summarize({"rtts": [3000, 1000, 2000], "count": 3, "elapsed": 2.0})
    assert three["rtt_us"]["p50"] == 2.0 and three["rtt_us"]["p90"] == pytest.approx(2.8)
    assert three["round_trips_per_s"] == 1.5


@pytest.mark.parametrize("args, field", [
    ((0, 2, 64, 1.0, 3), "path_port"), ((1, 65536, 64, 1.0, 3), "tcp_port"), ((5, 5, 64, 1.0, 3), "tcp_port"),
    ((1, 2, 0, 1.0, 3), "size"), ((1, 2, (1 << 20) + 1, 1.0, 3), "size"), ((1, 2, 64, float("nan"), 3), "seconds"),
    ((1, 2, 64, 0.05, 3), "seconds"), ((1, 2, 64, 1.0, 21), "rounds"), ((1, 2, 64, 1.0, 0), "rounds"),
])
def test_check_names_the_option(args, field):
    """shm_probe's settings, checked by the engine before anything is forked."""
    with pytest.raises(NetstackError) as e:
        pingpong.check(*args)
    assert e.value.field == field, e.value.msg
    pingpong.check(1, 2, 1, 0.1, 1)
