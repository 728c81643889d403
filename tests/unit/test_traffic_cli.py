"""The traffic_profile front end (module_utils/traffic/profile.py): sources, settings, the CLI."""
import io
import json
import re

import numpy as np
import pytest

from ansible_collections.netstack.tuning.plugins.module_utils.traffic import profile as traffic
from ansible_collections.netstack.tuning.plugins.module_utils.traffic import cli as traffic_cli
from ansible_collections.netstack.tuning.tools import trafficgen
from ansible_collections.netstack.tuning.plugins.module_utils.core.common import NetstackError


def test_sources_expand_dirs_files_and_globs(tmp_path):
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "2026-09-07.csv").write_text("x")
    (tmp_path / "store" / "notes.txt").write_text("x")
    (tmp_path / "empty").mkdir()
    (tmp_path / "a.pcap").write_bytes(b"x")
    files = traffic.expand_sources([str(tmp_path / "store"), str(tmp_path / "empty"), str(tmp_path / "*.pcap")])
    assert files == [str(tmp_path / "store" / "2026-09-07.csv"), str(tmp_path / "a.pcap")]
    with pytest.raises(NetstackError) as e:
        traffic.expand_sources([str(tmp_path / "store"), str(tmp_path / "missing.csv")])
    assert e.value.field == "sources[1]"
    with pytest.raises(NetstackError) as e:
        traffic.expand_sources([])
    assert e.value.field == "sources"


@pytest.mark.parametrize("params,field", [
    ({"interfaces": []}, "interfaces"),
    ({"interfaces": ["eth0/1"]}, "interfaces[0]"),
    ({"interfaces": ["eth0"], "prefix_v4": 33}, "prefix_v4"),
    ({"interfaces": ["eth0"], "prefix_v6": -1}, "prefix_v6"),
    ({"interfaces": ["eth0"], "interval": 0}, "interval"),
    ({"interfaces": ["eth0"], "retention_days": 0}, "retention_days"),
    ({"interfaces": ["eth0"], "max_flows": 10}, "max_flows"),
])
def test_collect_settings_name_the_field(params, field):
    base = {"state": "present", "prefix_v4": 24, "prefix_v6": 48, "max_flows": 16384, "interval": 10, "retention_days": 14}
    base.update(params)
    with pytest.raises(NetstackError) as e:
        traffic.collect_settings(base)
    assert e.value.field == field


def test_collect_refuses_an_interval_longer_than_the_run_before_touching_anything(tmp_path):
    p = {"state": "present", "mode": "oneshot", "interfaces": ["lo"], "prefix_v4": 24, "prefix_v6": 48, "max_flows": 16384,
         "interval": 30, "duration": 10, "retention_days": 14, "state_dir": str(tmp_path), "source_text": "int x;"}
    with pytest.raises(NetstackError) as e:
        traffic.collect(p)
    assert e.value.field == "interval"
    assert list(tmp_path.iterdir()) == []


def test_analyze_empty_store_gives_an_empty_report(tmp_path):
    (tmp_path / "store").mkdir()
    res = traffic.analyze_files({"sources": [str(tmp_path / "store")], "report": str(tmp_path / "r.html"),
                                 "output": str(tmp_path / "r.json")})
    assert res["records"] == 0 and res["anomalies"] == [] and "no traffic records" in res["notes"][0]
    assert (tmp_path / "r.html").read_text().startswith("<!doctype html>")


def test_analyze_bad_option_fails_before_reading_and_writes_nothing(tmp_path):
    (tmp_path / "x.csv").write_text("not a flow log\n")
    with pytest.raises(NetstackError) as e:
        traffic.analyze_files({"sources": [str(tmp_path / "x.csv")], "analysis": {"step": 7}, "output": str(tmp_path / "o.json")})
    assert e.value.field == "analysis.step"
    assert not (tmp_path / "o.json").exists()


def test_cli_generate_then_analyze_round_trip(tmp_path):
    out = io.StringIO()
    assert traffic_cli.main(["generate", str(tmp_path), "--seed", "3", "--records", "1000000", "--days", "14"], out=out) == 0
    labels = json.loads((tmp_path / "labels.json").read_text())
    assert labels and "records" in out.getvalue()
    out = io.StringIO()
    rc = traffic_cli.main(["analyze", str(tmp_path / "traffic.csv"), "--json", str(tmp_path / "r.json"), "--report",
                       str(tmp_path / "r.html"), "--capacity", "dc1:uplink=5e9", "--price", "0.5"], out=out)
    assert rc == 0
    res = json.loads((tmp_path / "r.json").read_text())
    assert res["records"] > 900000
    score = trafficgen.score(labels, res["anomalies"])
    assert score["overall"]["recall"] >= 0.6, score["overall"]
    assert any(b.get("cost") is not None for b in res["billing"])
    assert "Anomalies" in out.getvalue()
    # the throughput printed is the whole run's, reading the CSV included, next to the analysis alone
    m = re.search(r"(\d+) records in ([0-9.]+) s end to end, reading included: (\d+) records/s \(analysis alone ([0-9.]+) s",
                  out.getvalue())
    assert m, out.getvalue()[-400:]
    n, total, rate, alone = int(m.group(1)), float(m.group(2)), int(m.group(3)), float(m.group(4))
    assert n == res["records"] and total > alone > 0 and abs(rate - n / total) <= 0.02 * rate + 1
    assert "end_to_end_seconds" not in res        # timings stay out of the stable JSON


def test_cli_errors_name_the_option(capsys):
    assert traffic_cli.main(["analyze", "/nonexistent/x.csv"]) == 2
    assert "sources[0]" in capsys.readouterr().err
    assert traffic_cli.main(["analyze", "x.csv", "--capacity", "5e9"]) == 2
    assert "--capacity" in capsys.readouterr().err
    assert traffic_cli.main(["frobnicate"]) == 2
    assert traffic_cli.main(["analyze", "x.csv", "--link-timezone", "Europe/Berlin"]) == 2
    assert "--link-timezone" in capsys.readouterr().err
    assert traffic_cli.main(["analyze", "x.csv", "--link-holiday", "fra:wan="]) == 2
    assert "--link-holiday" in capsys.readouterr().err


def test_cli_calendars_reach_the_analysis_options():
    o = traffic_cli.parser().parse_args(["analyze", "x.csv", "--timezone", "Asia/Tokyo", "--link-timezone",
                                         "fra:wan=Europe/Berlin", "--link-holiday", "fra:wan=2026-04-06",
                                         "--link-holiday", "fra:wan=2026-05-01", "--holiday", "2026-12-25"])
    a = traffic_cli._analysis(o)
    assert a["timezone"] == "Asia/Tokyo" and a["timezones"] == {"fra:wan": "Europe/Berlin"}
    assert a["link_holidays"] == {"fra:wan": ["2026-04-06", "2026-05-01"]} and a["holidays"] == ["2026-12-25"]


def test_oneshot_refuses_to_take_the_agents_collector(tmp_path):
    """A oneshot run removes its program at the end: with netstack-agent keeping a collector
    of the same name it would take the agent's away, so it is refused, naming mode."""
    confd = tmp_path / "agent.d"
    confd.mkdir()
    (confd / "traffic.json").write_text(json.dumps({"traffic": {"state": "present", "name": "traffic", "interfaces": ["eth0"]}}))
    p = {"state": "present", "mode": "oneshot", "interfaces": ["lo"], "prefix_v4": 24, "prefix_v6": 48, "max_flows": 16384,
         "interval": 1, "duration": 2, "retention_days": 14, "state_dir": str(tmp_path / "state"), "source_text": "int x;",
         "config_dir": str(confd), "name": "traffic"}
    with pytest.raises(NetstackError) as e:
        traffic.collect(p)
    assert e.value.field == "mode"
    assert not (tmp_path / "state").exists()


def _numpy_hint():
    core = getattr(np, "_core", None) or np.core
    return core.multiarray._get_madvise_hugepage()


@pytest.mark.parametrize("defrag,env,off", [
    ("always defer defer+madvise [madvise] never\n", {}, True),         # Debian's default
    ("always defer [defer+madvise] madvise never\n", {}, True),
    ("[always] defer defer+madvise madvise never\n", {}, True),
    ("always [defer] defer+madvise madvise never\n", {}, False),        # no fault compacts synchronously
    ("always defer defer+madvise madvise [never]\n", {}, False),
    ("no mode chosen\n", {}, False),
    (None, {}, False),                                                  # no THP in this kernel
    ("always defer defer+madvise [madvise] never\n", {"NUMPY_MADVISE_HUGEPAGE": "1"}, False),   # the user's choice wins
])
def test_large_arrays_drop_the_huge_page_hint_only_where_a_fault_would_compact(tmp_path, request, defrag, env, off):
    from ansible_collections.netstack.tuning.plugins.module_utils.traffic import data as trafficdata
    path = tmp_path / "defrag"
    if defrag is not None:
        path.write_text(defrag)
    set_hint = (getattr(np, "_core", None) or np.core).multiarray._set_madvise_hugepage
    default = set_hint(True)             # on, whatever numpy chose here: turning it off must show
    request.addfinalizer(lambda: set_hint(default))
    before = _numpy_hint()
    with trafficdata.large_arrays(str(path), env) as dropped:
        assert dropped is off
        assert _numpy_hint() == (False if off else before)
    assert _numpy_hint() == before
    with pytest.raises(ZeroDivisionError):
        with trafficdata.large_arrays(str(path), env):
            1 // 0
    assert _numpy_hint() == before                                      # put back on an error too


def test_analyze_reads_and_analyses_without_the_hint_and_puts_it_back(tmp_path, monkeypatch):
    from ansible_collections.netstack.tuning.plugins.module_utils.traffic import data as trafficdata
    from ansible_collections.netstack.tuning.plugins.module_utils.traffic import analysis as trafficanalysis
    (tmp_path / "defrag").write_text("always defer defer+madvise [madvise] never\n")
    monkeypatch.setattr(trafficdata, "THP_DEFRAG", str(tmp_path / "defrag"))
    monkeypatch.delenv("NUMPY_MADVISE_HUGEPAGE", raising=False)
    seen, real = [], trafficanalysis.analyze
    monkeypatch.setattr(trafficanalysis, "analyze", lambda rec, opts: seen.append(_numpy_hint()) or real(rec, opts))
    before = _numpy_hint()
    rec, _labels, _truth = trafficgen.generate(seed=3, sites=1, days=2, step=3600)
    traffic.write_csv(str(tmp_path / "t.csv"), rec)
    res = traffic.analyze_files({"sources": [str(tmp_path / "t.csv")]})
    assert res["records"] == len(rec) and seen == [False]
    assert _numpy_hint() == before
    (tmp_path / "bad.csv").write_text("ts,link\n1,a\n")
    with pytest.raises(NetstackError):
        traffic.analyze_files({"sources": [str(tmp_path / "bad.csv")]})
    assert _numpy_hint() == before
