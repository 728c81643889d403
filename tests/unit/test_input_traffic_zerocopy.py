"""Input defects of traffic_profile and zerocopy_test reported by the property suite
(tests/unit/test_properties.py): each bad value is a NetstackError naming the field,
refused before any work (and in check mode as in real mode), never a traceback, never a
NaN echoed in the result, and nothing is written."""
import math
import os

import pytest

from ansible_collections.netstack.tuning.plugins.module_utils.traffic import profile as traffic, analysis as trafficanalysis
from ansible_collections.netstack.tuning.plugins.module_utils.traffic import cli as traffic_cli
from ansible_collections.netstack.tuning.plugins.module_utils.zerocopy import measure as zerocopy
from ansible_collections.netstack.tuning.plugins.module_utils.core.common import NetstackError

NAN, INF = float("nan"), float("inf")


def _flows(tmp_path):
    d = tmp_path / "flows"
    d.mkdir()
    rows = ["ts,link,direction,prefix,proto,port_class,dscp,bytes,packets"]
    t0 = 1757203200
    for i in range(24):
        rows.append("%d,eth0,%s,10.1.0.0/24,6,web,0,%d,%d" % (t0 + i * 900, "in" if i % 3 else "out", 1000 + 37 * i, 10 + i))
    (d / "2025-09-07.csv").write_text("\n".join(rows) + "\n")
    return str(d)


def _entries(tmp_path):
    return sorted(p.name for p in tmp_path.iterdir())


# ------------------------------------------------------------------ traffic_profile: analysis options

@pytest.mark.parametrize("opts,field", [
    ({"price_per_mbps": NAN}, "analysis.price_per_mbps"),
    ({"price_per_mbps": INF}, "analysis.price_per_mbps"),
    ({"price_per_mbps": -1}, "analysis.price_per_mbps"),
    ({"price_per_mbps": True}, "analysis.price_per_mbps"),
    ({"price_per_mbps": 10 ** 30}, "analysis.price_per_mbps"),
    ({"holidays": NAN}, "analysis.holidays"),
    ({"holidays": "2026-12-25"}, "analysis.holidays"),
    ({"holidays": {"a": 1}}, "analysis.holidays"),
    ({"holidays": [NAN]}, "analysis.holidays[0]"),
    ({"holidays": ["2026-12-25", "9" * 5000]}, "analysis.holidays[1]"),
    ({"holidays": ["2026-13-01"]}, "analysis.holidays[0]"),
    ({"percentiles": NAN}, "analysis.percentiles"),
    ({"percentiles": [NAN]}, "analysis.percentiles[0]"),
    ({"percentiles": [95, True]}, "analysis.percentiles[1]"),
    ({"capacity": {"eth0": NAN}}, "analysis.capacity.eth0"),
    ({"capacity": {"eth0": INF}}, "analysis.capacity.eth0"),
    ({"capacity": [1]}, "analysis.capacity"),
    ({"spike_sigma": NAN}, "analysis.spike_sigma"),
    ({"spike_sigma": INF}, "analysis.spike_sigma"),
    ({"warn": NAN}, "analysis.warn"),
    ({"critical": INF}, "analysis.critical"),
    ({"new_prefix_share": 2}, "analysis.new_prefix_share"),
    ({"step": 10 ** 30}, "analysis.step"),
    ({"step": NAN}, "analysis.step"),
    ({"step": "9" * 5000}, "analysis.step"),
    ({"horizon_days": 10 ** 30}, "analysis.horizon_days"),
    ({"top_k": 2 ** 63}, "analysis.top_k"),
    ({"plot_points": -1}, "analysis.plot_points"),
    ({"shift_window": 0}, "analysis.shift_window"),
    ({"shift_window": 10 ** 30}, "analysis.shift_window"),
    ({"warn": "nan"}, "analysis.warn"),
    ({"warn": "1e400"}, "analysis.warn"),
    ({"warn": "\u0660.5"}, "analysis.warn"),
    ({"nosuch": 1}, "analysis.nosuch"),
    ({"timezone": "Mars/Olympus"}, "analysis.timezone"),
    ({"timezone": 5}, "analysis.timezone"),
    ({"timezone": "../../etc/passwd"}, "analysis.timezone"),
    ({"timezones": ["Europe/Berlin"]}, "analysis.timezones"),
    ({"timezones": {"eth0": "Nowhere/City"}}, "analysis.timezones.eth0"),
    ({"timezones": {"": "UTC"}}, "analysis.timezones"),
    ({"link_holidays": ["2026-12-25"]}, "analysis.link_holidays"),
    ({"link_holidays": {"eth0": "2026-12-25"}}, "analysis.link_holidays.eth0"),
    ({"link_holidays": {"eth0": ["2026-02-30"]}}, "analysis.link_holidays.eth0[0]"),
    ({"outage_min": 1.5}, "analysis.outage_min"),
    ({"outage_min": NAN}, "analysis.outage_min"),
])
def test_analysis_options_are_strict_and_named(tmp_path, opts, field):
    src = _flows(tmp_path)
    for check_mode in (True, False):
        with pytest.raises(NetstackError) as e:
            traffic.analyze_files({"sources": [src], "analysis": opts, "output": str(tmp_path / "out.json")},
                                  check_mode=check_mode)
        assert e.value.field == field, (opts, e.value.field, str(e.value))
    assert _entries(tmp_path) == ["flows"]


def test_analysis_options_without_prefix_keep_their_bare_names():
    with pytest.raises(NetstackError) as e:
        trafficanalysis.options({"price_per_mbps": NAN})
    assert e.value.field == "price_per_mbps"


def test_valid_analysis_options_still_work(tmp_path):
    src = _flows(tmp_path)
    res = traffic.analyze_files({"sources": [src], "analysis": {"price_per_mbps": 0.35, "holidays": ["2025-09-07"],
                                                                "capacity": {"eth0": 1e9}, "step": "900",
                                                                "percentiles": [50, 95.5]}})
    assert res["records"] == 24
    assert all(math.isfinite(b["cost"]) for b in res["billing"] if "cost" in b)
    o = trafficanalysis.options({"holidays": ["1970-01-02", "2025-09-07"], "step": "900"})
    assert o["_holiday_days"] == [1, 20338] and o["step"] == 900


def test_holidays_are_utc_days_in_any_time_zone(monkeypatch):
    """time.mktime put a summer date of a zone east of UTC on the day before."""
    import time
    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    try:
        assert trafficanalysis.options({"holidays": ["2025-07-01"]})["_holiday_days"] == [20270]
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_prefix_length_zero_is_not_unset(tmp_path):
    """prefix_v4: 0 counts every remote address as 0.0.0.0/0; it was taken as the default 24."""
    log = tmp_path / "generic.csv"
    log.write_text("ts,src,dst,bytes\n" + "".join("%d,198.51.100.7,203.0.113.%d,1000\n" % (1757203200 + 300 * i, i)
                                                   for i in range(1, 20)))
    res = traffic.analyze_files({"sources": [str(log)], "local_prefixes": ["198.51.100.0/24"], "prefix_v4": 0})
    assert [t["value"] for t in res["top_talkers"]["prefix"]] == ["0.0.0.0/0"], res["top_talkers"]


# ------------------------------------------------------------------ traffic_profile: output and report paths

@pytest.mark.parametrize("where", ["/proc/self/environ", "/sys/kernel/x.json", "/dev/null", "/dev/shm/x.json", "/",
                                   "DIR", "DIR/missing/out.json", "FILE/out.json", "DIR/" + "n" * 252, "DIR/" + "n" * 300])
@pytest.mark.parametrize("key", ["output", "report"])
def test_output_and_report_paths_are_checked_before_any_work(tmp_path, monkeypatch, where, key):
    src = _flows(tmp_path)
    (tmp_path / "file").write_text("x")
    path = where.replace("DIR", str(tmp_path)).replace("FILE", str(tmp_path / "file"))
    from ansible_collections.netstack.tuning.plugins.module_utils.traffic import ingest as flowfile

    def no_reading(*a, **k):
        raise AssertionError("read the sources before checking %s" % key)
    monkeypatch.setattr(flowfile, "read_many", no_reading)
    for check_mode in (True, False):
        with pytest.raises(NetstackError) as e:
            traffic.analyze_files({"sources": [src], key: path}, check_mode=check_mode)
        assert e.value.field == key, str(e.value)
    assert _entries(tmp_path) == ["file", "flows"]


def test_output_and_report_must_differ(tmp_path):
    src = _flows(tmp_path)
    with pytest.raises(NetstackError) as e:
        traffic.analyze_files({"sources": [src], "output": str(tmp_path / "x"), "report": str(tmp_path / "x")})
    assert e.value.field == "report"


def test_a_write_that_fails_is_named_and_leaves_no_temporary(tmp_path, monkeypatch):
    src = _flows(tmp_path)
    real_rename = os.rename

    def failing_rename(a, b):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "rename", failing_rename)
    with pytest.raises(NetstackError) as e:
        traffic.analyze_files({"sources": [src], "report": str(tmp_path / "r.html")})
    monkeypatch.setattr(os, "rename", real_rename)
    assert e.value.field == "report" and "No space left" in str(e.value)
    assert _entries(tmp_path) == ["flows"]


def test_output_and_report_are_written(tmp_path):
    src = _flows(tmp_path)
    p = {"sources": [src], "output": str(tmp_path / "r.json"), "report": "r.html"}
    cwd = os.getcwd()
    os.chdir(str(tmp_path))
    try:
        assert traffic.analyze_files(p, check_mode=True)["changed"] is True
        assert _entries(tmp_path) == ["flows"]
        assert traffic.analyze_files(p)["changed"] is True
        del p["report"]   # the HTML page shows how long the analysis took: it differs every run
        assert traffic.analyze_files(p)["changed"] is False
    finally:
        os.chdir(cwd)
    assert _entries(tmp_path) == ["flows", "r.html", "r.json"]


# ------------------------------------------------------------------ zerocopy_test: sizes, serve and stop

@pytest.mark.parametrize("bad", ["9" * 5000, "9" * 30, "\u0663\u0664", "1" + "0" * 20 + "K", 10 ** 30, -10 ** 30,
                                 2 ** 64, 4096.0, NAN, [1], None])
def test_sizes_are_bounded_ascii_numbers(bad):
    with pytest.raises(NetstackError) as e:
        zerocopy.parse_size(bad, "sizes[0]")
    assert e.value.field == "sizes[0]"
    assert len(str(e.value)) < 200
    with pytest.raises(NetstackError) as e:
        zerocopy.validate({"sizes": ["4K", bad]})
    assert e.value.field == "sizes[1]"


@pytest.mark.parametrize("params,field", [
    ({"serve_clients": -1}, "serve_clients"), ({"serve_clients": 0}, "serve_clients"),
    ({"serve_clients": 10 ** 30}, "serve_clients"), ({"serve_clients": True}, "serve_clients"),
    ({"serve_timeout": NAN}, "serve_timeout"), ({"serve_timeout": "nan"}, "serve_timeout"),
    ({"serve_timeout": INF}, "serve_timeout"), ({"serve_timeout": 0}, "serve_timeout"),
    ({"serve_timeout": -5}, "serve_timeout"), ({"serve_timeout": 10 ** 30}, "serve_timeout"),
    ({"peer_port": 10 ** 30}, "peer_port"), ({"peer_port": 0}, "peer_port"), ({"peer_port": 65536}, "peer_port"),
    ({"peer_port": NAN}, "peer_port"), ({"implementation": "rust"}, "implementation"),
    ({"listen_address": ""}, "listen_address"), ({"listen_address": None}, "listen_address"),
    ({"listen_address": "a\x00b"}, "listen_address"), ({"listen_address": "x" * 5000}, "listen_address"),
    ({"listen_address": "nsprop.invalid"}, "listen_address"),
])
@pytest.mark.parametrize("action", ["serve", "stop"])
def test_serve_and_stop_options_are_validated(params, field, action):
    base = {"listen_address": "127.0.0.1", "peer_port": 18391, "serve_clients": 1, "serve_timeout": 600.0,
            "implementation": "auto"}
    base.update(params)
    with pytest.raises(NetstackError) as e:
        zerocopy.validate_serve(base, action)
    assert e.value.field == field


def test_validate_serve_normalises():
    p = zerocopy.validate_serve({"listen_address": "127.0.0.1", "peer_port": "18391", "serve_clients": 2,
                                 "serve_timeout": 30, "implementation": "python"}, "serve")
    assert p == {"listen_address": "127.0.0.1", "listen_ip": "127.0.0.1", "peer_port": 18391, "serve_clients": 2,
                 "serve_timeout": 30.0, "implementation": "python"}


def test_serve_and_stop_refuse_before_anything_starts(monkeypatch):
    def no_work(*a, **k):
        raise AssertionError("reached the helper or the network")
    monkeypatch.setattr(zerocopy, "make_helper", no_work)
    monkeypatch.setattr(zerocopy, "peer_request", no_work)
    with pytest.raises(NetstackError) as e:
        zerocopy.serve_peer({"listen_address": "::1", "peer_port": 10 ** 30})
    assert e.value.field == "peer_port"
    with pytest.raises(NetstackError) as e:
        zerocopy.serve_peer({"listen_address": "::1", "serve_timeout": NAN})
    assert e.value.field == "serve_timeout"
    with pytest.raises(NetstackError) as e:
        zerocopy.stop_serving({"listen_address": "::1", "peer_port": 10 ** 30})
    assert e.value.field == "peer_port"


# ------------------------------------------------------------------ the modules, in the property suite's sandbox

def _module(name, args, check_mode, setup=None):
    from modharness import module_runner, run_case
    tripwires = {"zerocopy_test": ["zerocopy.measure.make_helper"], "traffic_profile": []}[name]
    payload = run_case(module_runner(name, tripwires), args, check_mode=check_mode, setup=setup)
    assert not payload.get("timed_out") and not payload.get("harness_error"), payload
    out = payload["run"] if "run" in payload else payload
    assert out["exception"] is None, out["exception"]
    assert out["work"] is None, out["work"]
    assert out["result"] is not None, out["stdout"]
    assert not payload.get("changes"), payload.get("changes")
    return out["result"]


def _sandbox_flows(args):
    os.makedirs("/tmp/nsprop/flows", exist_ok=True)
    with open("/tmp/nsprop/flows/2025-09-07.csv", "w") as f:
        f.write("ts,link,direction,prefix,proto,port_class,dscp,bytes,packets\n"
                "1757203200,eth0,in,10.1.0.0/24,6,web,0,1000,10\n")
    return args


def _sandbox_or_skip():
    from modharness import sandbox_works
    why = _SANDBOX.setdefault("why", sandbox_works())
    if why:
        pytest.skip(why)


_SANDBOX = {}


@pytest.mark.root
@pytest.mark.parametrize("args,field", [
    ({"analysis": {"price_per_mbps": NAN}}, "analysis.price_per_mbps"),
    ({"analysis": {"holidays": NAN}}, "analysis.holidays"),
    ({"output": "/proc/self/environ"}, "output"),
    ({"output": "/"}, "output"),
    ({"duration": INF}, "duration"),
])
def test_traffic_profile_module_refuses_naming_the_field(args, field):
    _sandbox_or_skip()
    full = {"action": "analyze", "sources": ["/tmp/nsprop/flows"]}
    full.update(args)
    for check_mode in (True, False):
        res = _module("traffic_profile", full, check_mode, setup=_sandbox_flows)
        assert res.get("failed") and field in res["msg"], res


@pytest.mark.root
@pytest.mark.parametrize("args,field", [
    ({"listen_address": "127.0.0.1", "serve_clients": -1}, "serve_clients"),
    ({"listen_address": "127.0.0.1", "serve_clients": 10 ** 30}, "serve_clients"),
    ({"listen_address": "127.0.0.1", "serve_timeout": "nan"}, "serve_timeout"),
    ({"serve": True, "listen_address": "127.0.0.1", "serve_timeout": "nan"}, "serve_timeout"),
    ({"serve": True, "listen_address": "::1", "peer_port": 10 ** 30}, "peer_port"),
    ({"serve": True, "listen_address": "::1", "peer_port": 70000}, "peer_port"),
    ({"stop": True, "listen_address": "::1", "peer_port": 10 ** 30}, "peer_port"),
    ({"stop": True, "listen_address": "::1", "peer_port": 70000}, "peer_port"),
    ({"sizes": ["9" * 5000]}, "sizes[0]"),
    ({"serve": True, "listen_address": "::1", "sizes": ["9" * 5000]}, "sizes[0]"),
])
def test_zerocopy_test_module_refuses_on_every_path(args, field):
    _sandbox_or_skip()
    for check_mode in (True, False):
        res = _module("zerocopy_test", args, check_mode)
        assert res.get("failed") and field in res["msg"], res


@pytest.mark.parametrize("argv,field", [(["--step", "nan"], "--step"), (["--horizon", "inf"], "--horizon"),
                                        (["--price", "nan"], "--price"), (["--capacity", "eth0=inf"], "--capacity")])
def test_cli_refuses_non_finite_numbers(tmp_path, capsys, argv, field):
    """int(float('nan')) was a ValueError traceback, int(float('inf')) an OverflowError."""
    src = _flows(tmp_path)
    assert traffic_cli.main(["analyze", src] + argv) == 2
    assert field in capsys.readouterr().err
