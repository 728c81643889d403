"""Unit tests of the impaired-path description (netpath.py), the scenarios (scenario.py)
and searchspace.available: validation names the field, the numbers handed to the C
helper and to netem are the ones asked for, and generated input never raises anything but
NetstackError.  Pure: nothing here touches the host (the lab itself is tested in
tests/integration/pytest/test_netpath.py)."""
import math
import os
import subprocess
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from ansible_collections.netstack.tuning.plugins.module_utils.tuning import netpath, netpath_src, scenario, searchspace, trial
from ansible_collections.netstack.tuning.plugins.module_utils.core.common import NetstackError, which


def test_validate_fills_both_directions():
    spec = netpath.validate({"down": {"delay_ms": 10, "loss_pct": 2}})
    assert spec["up"]["delay_ms"] == 0 and spec["down"]["delay_ms"] == 10
    assert spec["down"]["loss_pct"] == 2 and spec["backend"] == "auto"
    assert netpath.impaired(spec)
    assert not netpath.impaired(netpath.validate({}))
    assert netpath.rtt_ms(netpath.validate({"up": {"delay_ms": 3}, "down": {"delay_ms": 7}})) == 10


@pytest.mark.parametrize("spec, field", [
    ({"down": {"loss_pct": 101}}, "path.down.loss_pct"),
    ({"up": {"delay_ms": -1}}, "path.up.delay_ms"),
    ({"up": {"delay_ms": 5, "jitter_ms": 6}}, "path.up.jitter_ms"),
    ({"down": {"queue_kbytes": 100}}, "path.down.queue_kbytes"),
    ({"down": {"rate_mbit": 0}}, "path.down.rate_mbit"),
    ({"down": {"gilbert": {"p_pct": 1}}}, "path.down.gilbert"),
    ({"sideways": {}}, "path"),
    ({"backend": "dummynet"}, "path.backend"),
    ({"up": {"delay_ms": True}}, "path.up.delay_ms"),
])
def test_validate_names_the_field(spec, field):
    with pytest.raises(NetstackError) as e:
        netpath.validate(spec)
    assert e.value.field == field


def test_helper_and_netem_numbers():
    d = netpath.validate({"down": {"delay_ms": 12.5, "jitter_ms": 1, "loss_pct": 0.5, "reorder_pct": 2}})["down"]
    assert netpath.helper_args(d) == "12500 1000 5000 0 0 0 20000"
    assert netpath.netem_args(d) == ["delay", "12500us", "1000us", "loss", "random", "0.5%", "reorder", "2%",
                                     "limit", "100000"]
    g = netpath.validate({"up": {"loss_pct": 0.1, "gilbert": {"p_pct": 1, "r_pct": 25, "loss_bad_pct": 50}}})["up"]
    assert netpath.helper_args(g) == "0 0 1000 10000 250000 500000 0"
    assert netpath.netem_args(g)[:7] == ["delay", "0us", "loss", "gemodel", "1%", "25%", "50%"]


def test_stationary_loss_of_gilbert_elliott():
    g = netpath.validate({"up": {"loss_pct": 0, "gilbert": {"p_pct": 1, "r_pct": 9, "loss_bad_pct": 50}}})["up"]
    # a tenth of the time in the bad state, half lost there
    assert math.isclose(netpath.stationary_loss(g), 0.05)


def test_queue_defaults_to_one_bdp_with_a_floor():
    spec = netpath.validate({"up": {"delay_ms": 10}, "down": {"delay_ms": 10, "rate_mbit": 80}})
    assert netpath.queue_bytes(spec["down"], netpath.rtt_ms(spec)) == int(80e6 / 8 * 0.020)
    slow = netpath.validate({"down": {"rate_mbit": 1}})["down"]
    assert netpath.queue_bytes(slow, 0) == 16 * netpath.MTU_WIRE


def test_wilson_interval_covers_the_estimate():
    lo, hi = netpath.wilson(20, 1000)
    assert lo < 0.02 < hi and 0 < lo and hi < 0.05
    assert netpath.wilson(0, 0) == (0.0, 1.0)


@pytest.mark.skipif(not (which("cc") or which("gcc")), reason="no C compiler on this machine")
def test_helper_source_compiles_without_warnings():
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "netpath.c")
        with open(src, "w") as f:
            f.write(netpath_src.NETPATH_C)
        cc = which("cc") or which("gcc")
        r = subprocess.run([cc, "-O2", "-Wall", "-Wextra", "-Werror", "-o", os.path.join(d, "np"), src],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        bad = subprocess.run([os.path.join(d, "np"), "--tun", "x", "--server", "198.18.0.1", "--up", "1 2 3"],
                             capture_output=True, text=True)
        assert bad.returncode == 2 and "--up/--down" in bad.stderr


# ------------------------------------------------------------------ scenarios

def test_every_shipped_scenario_loads_with_its_space():
    shipped = scenario.shipped()
    assert {"control-veth", "wan-lossy-keepalive", "bulk-bottleneck", "conn-bursts", "proxy-churn"} <= set(shipped)
    for name, path in shipped.items():
        sc = scenario.load(path)
        searchspace.load(open(scenario.space_path(sc, path)).read())
        b = scenario.bench(sc)
        trial.validate_bench(dict(b))  # the trial takes what the scenario gives
        assert sc["expect_gain"] == (name != "control-veth")
        assert (b["path"] is None) == (name == "control-veth")


def test_scenario_bench_overrides():
    sc = scenario.load(scenario.shipped()["wan-lossy-keepalive"])
    b = scenario.bench(sc, duration=1, repeats=2)
    assert b["duration"] == 1 and b["repeats"] == 2 and b["keepalive"] is True
    assert b["path"]["down"]["loss_pct"] == 2


@pytest.mark.parametrize("patch, field", [
    ({"version": 0}, "scenario.version"),
    ({"name": "Bad Name"}, "scenario.name"),
    ({"load": {"connections": 0}}, "scenario.load.connections"),
    ({"nginx": {"mode": "fastcgi"}}, "scenario.nginx.mode"),
    ({"path": {"down": {"loss_pct": -1}}}, "scenario.path.down.loss_pct"),
    ({"space": "../../etc/passwd"}, "scenario.space"),
    ({"extra": 1}, "scenario"),
])
def test_bad_scenario_names_the_field(patch, field):
    sc = {"name": "x", "version": 1, "description": "d", "weakness": "w", "expect_gain": True,
          "nginx": {}, "load": {}, "space": "wan_latency.yml"}
    sc.update(patch)
    with pytest.raises(NetstackError) as e:
        scenario.validate(sc)
    assert e.value.field == field


def test_available_skips_and_lists_missing_keys():
    space = searchspace.load(open(scenario.space_path(scenario.load(scenario.shipped()["wan-lossy-keepalive"]))).read())
    kept, skipped = searchspace.available(space, ["net.ipv4.tcp_rto_max_ms"])
    assert skipped == ["net.ipv4.tcp_rto_max_ms"]
    assert len(kept["parameters"]) == len(space["parameters"]) - 1
    with pytest.raises(NetstackError) as e:
        searchspace.available(space, [p["sysctl"] for p in space["parameters"]])
    assert e.value.field == "space"


# ------------------------------------------------------------------ generated input

_values = st.one_of(st.none(), st.booleans(), st.integers(-10 ** 12, 10 ** 12), st.floats(allow_nan=True),
                    st.text(max_size=8), st.lists(st.integers(), max_size=2))
_dir = st.dictionaries(st.sampled_from(["delay_ms", "jitter_ms", "loss_pct", "reorder_pct", "rate_mbit",
                                        "queue_kbytes", "gilbert", "bogus"]), _values, max_size=5)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(_values, st.dictionaries(st.sampled_from(["up", "down", "backend", "seed", "x"]),
                                          st.one_of(_dir, _values), max_size=4)))
def test_generated_paths_never_traceback(spec):
    try:
        out = netpath.validate(spec)
    except NetstackError as e:
        assert e.field and e.field.startswith("path")
        return
    for d in netpath.DIRECTIONS:  # what validates can be handed to the helper and to netem
        netpath.helper_args(out[d])
        netpath.netem_args(out[d])
        netpath.describe(out)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["name", "version", "description", "weakness", "expect_gain", "path",
                                        "nginx", "load", "space"]), _values, max_size=9))
def test_generated_scenarios_never_traceback(sc):
    try:
        scenario.validate(sc)
    except NetstackError as e:
        assert e.field.startswith("scenario")
