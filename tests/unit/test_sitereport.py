"""Unit tests: the fleet report of playbooks/report.yml (sitereport.py) and the filters
that wrap it. Inputs are shaped like the real ones: netstack_facts facts, journal
summaries, a zerocopy_test result and a traffic analysis result (as their JSON files)."""
import json
import re

import pytest

from ansible.errors import AnsibleFilterError
from htmlcheck import IMG, IMG_SQ, SCRIPT, assert_inert
from ansible_collections.netstack.tuning.plugins.filter import site as site_filters
from ansible_collections.netstack.tuning.plugins.module_utils.report import site as sr

FACTS = {
    "kernel": {"release": "6.1.0-28-amd64"},
    "bpf": {"prog_types": {"sock_ops": True}, "btf_vmlinux": True},
    "tcp": {"congestion_control": "cubic", "available_congestion_control": ["reno", "cubic"]},
    "cpu": {"count": 4, "smt_active": False},
    "tuners": {"tuned": {"running": False}, "irqbalance": {"running": True}, "bpftune": {"running": False},
               "sysctl_files": [{"path": "/etc/sysctl.d/99-x.conf"}]},
}


def entry(i, state, reason="sysctl_profile site"):
    return {"id": "%06d" % i, "seq": i, "ts": 1790000000 + i, "state": state, "reason": reason, "items": [{}, {}]}


JOURNAL = [entry(1, "rolled_back"), entry(2, "confirmed"), entry(3, "applied", "AMP partition amp")]


def test_host_data_counts_what_is_in_force_and_names_running_tuners():
    d = sr.host_data(FACTS, JOURNAL, ["tcp_tuner", "shm"], "netstack_agent_up 1\n")
    assert d["kernel"] == "6.1.0-28-amd64" and d["cpus"] == 4 and d["congestion_control"] == "cubic"
    assert d["journal_total"] == 3 and d["journal_in_force"] == 2
    assert d["other_tuners"] == ["irqbalance"] and d["sysctl_files"] == 1
    assert d["pins"] == ["shm", "tcp_tuner"] and d["agent_up"] is True
    assert sr.host_data({}, [], [], "")["agent_up"] is False
    assert sr.host_data(None, None, None)["journal_in_force"] == 0


def test_host_data_keeps_only_the_newest_ten_entries():
    many = [entry(i, "confirmed") for i in range(1, 26)]
    d = sr.host_data(FACTS, many, [])
    assert [e["id"] for e in d["journal"]] == ["%06d" % i for i in range(16, 26)]
    assert d["journal_total"] == 25 and d["journal_in_force"] == 25


@pytest.mark.parametrize("hv,status", [
    ({"site_healthy": True, "site_batch_failed": False, "site_caps": ["sysctl"]}, "applied"),
    ({"site_healthy": True, "site_batch_failed": True}, "rolled back"),      # healthy, but its batch failed
    ({"site_healthy": False, "site_batch_failed": False, "site_error": "gate"}, "rolled back"),
    ({}, "not reached"),
])
def test_host_summary_status(hv, status):
    s = sr.host_summary(hv)
    assert s["status"] == status
    assert s["error"] == hv.get("site_error", "")


def test_page_has_every_section_and_escapes_names():
    hosts = {"web-1": sr.host_data(FACTS, JOURNAL, ["tcp_tuner"]), "<b>x</b>": sr.host_data(FACTS, [], [])}
    site = {"finished": "2026-11-25T07:00:00Z",
            "hosts": {"web-1": sr.host_summary({"site_healthy": True, "site_caps": ["sysctl", "tcp_tuning"]}),
                      "<b>x</b>": sr.host_summary({"site_healthy": False, "site_error": "gate <failed>"})}}
    zc = {"web-1": {"recommendations": {"loopback": {"tcp": {"verdict": "copies-by-design", "text": "keep copies"}}},
                    "cells": []},
          "<b>x</b>": {"failed": True, "msg": "unreachable"}}
    tr = {"series": [{"link": "web-1:eth0", "direction": "in", "mean_bps": 2.5e6, "peak_bps": 9e6,
                      "percentiles_bps": {"p95": 7e6}}],
          "anomalies": [{"kind": "spike", "link": "web-1:eth0", "start": 1790000000, "end": 1790000300, "score": 6.1}],
          "water_levels": [{"link": "web-1:eth0", "level": "ok", "p95_utilisation": 0.07}]}
    page = sr.html(hosts, {"site": site, "zerocopy": zc, "traffic": tr,
                           "tuning": {"web-1": {"accepted": True, "sysctls": {"net.core.somaxconn": 8192}}},
                           "links": {"zerocopy": "zerocopy.html", "traffic": "traffic/traffic.html"}})
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page and "gate &lt;failed&gt;" in page
    heads = re.findall(r"<h2>([^<]+)</h2>", page)
    assert heads == ["Fleet", "Sysctl tuning", "Zero-copy", "Traffic", "Journal (newest 10 per host)"]
    assert "copies-by-design" in page and "unreachable" in page
    assert "2.50 Mbit/s" in page and "7.00 Mbit/s" in page and "<svg" in page
    assert "net.core.somaxconn=8192" in page
    assert 'href="traffic/traffic.html"' in page
    # the fleet row: 2 of 3 journal entries in force, the rollout status per host
    assert "2 / 3" in page and '<span class="ok">applied</span>' in page and '<span class="bad">rolled back</span>' in page


def test_page_without_capability_reports_is_just_the_fleet():
    page = sr.html({"h": sr.host_data(FACTS, [], [])})
    assert re.findall(r"<h2>([^<]+)</h2>", page) == ["Fleet"]
    empty_traffic = sr.html({"h": sr.host_data(FACTS, [], [])}, {"traffic": {"series": [], "notes": ["no files"]}})
    assert "no traffic recorded. no files" in empty_traffic


def test_fmt_bps():
    assert [sr.fmt_bps(v) for v in (0, 999, 1500, 2.5e6, 3e9)] == ["0 bit/s", "999 bit/s", "1.50 kbit/s", "2.50 Mbit/s",
                                                                 "3.00 Gbit/s"]


def test_filters():
    f = site_filters.FilterModule().filters()
    assert sorted(f) == ["site_host_data", "site_host_summary", "site_report", "softirq_delta"]
    data = f["site_host_data"](FACTS, JOURNAL, ["p"])
    assert json.loads(json.dumps(data))["journal_in_force"] == 2
    assert f["site_report"]({"h": data}).startswith("<!DOCTYPE html>")
    with pytest.raises(AnsibleFilterError, match="site_report: expects a dict"):
        f["site_report"](["h"])


SOFTIRQ_BEFORE = """                    CPU0       CPU1
          HI:          0          0
      NET_TX:         10         20
      NET_RX:        100        200
"""
SOFTIRQ_AFTER = """                    CPU0       CPU1
          HI:          0          0
      NET_TX:         12         20
      NET_RX:       1100        201
"""


def test_softirq_delta_per_cpu():
    f = site_filters.FilterModule().filters()["softirq_delta"]
    assert f(SOFTIRQ_AFTER, SOFTIRQ_BEFORE) == {"NET_RX": {"CPU0": 1000, "CPU1": 1}, "NET_TX": {"CPU0": 2, "CPU1": 0}}
    # another CPU list (a CPU came online between the readings): nothing comparable
    assert f(SOFTIRQ_AFTER.replace("CPU1", "CPU2"), SOFTIRQ_BEFORE) == {}
    assert f("", SOFTIRQ_BEFORE) == {}


def test_report_shows_evidence_the_rollback_and_the_tuning_gain():
    ev = {"h": {"sysctl": {"name": "site", "netns": "ns", "changes": [{"key": "net.core.somaxconn", "before": "4096",
                                                                        "after": "8192"}]},
                "tcp_rules": [{"name": "lo", "set": {"initial_cwnd": 20}, "hits": 6, "errors": 0}],
                "shm": {"arms": {"path": {"round_trips_per_s": 15000.0, "rtt_us": {"p50": 62.1, "p99": 120.0}},
                                 "tcp": {"round_trips_per_s": 14500.0, "rtt_us": {"p50": 65.7, "p99": 121.8}}},
                        "ratio": {"round_trips_per_s": 1.034, "rtt_p50": 0.945}, "counters": {"shm_bytes": 6},
                        "on_path": True},
                "amp": {"net_cpus": "0", "app_cpus": "1", "softirq": {"NET_RX": {"CPU0": 1000, "CPU1": 1}}}}}
    data = sr.host_data(FACTS, JOURNAL, ["p"])
    after = sr.host_data(FACTS, [], [])
    page = sr.html({"h": data}, {"evidence": ev, "after": {"h": after},
                                         "tuning": {"h": {"accepted": True, "sysctls": {"k": 1},
                                                          "p99_ms": {"defaults": 200.0, "winner": 50.0}}}})
    assert "1 host;" in page and "After the rollback" in page and "as before netstack" in page
    assert "net.core.somaxconn" in page and "8192" in page and "<td>6</td>" in page
    assert "<td>62.1</td>" in page and "<td>1000</td>" in page
    assert "200.0 ms -&gt; 50.0 ms (0.25x)" in page
    # a host with something left in force after the rollback is flagged
    left = sr.html({"h": data}, {"after": {"h": data}})
    assert "changes remain" in left


def test_hostile_values_show_as_text_never_as_markup():
    """Host names, link names, messages, rule names and hrefs are escaped by the page's
    template (autoescape), wherever they appear."""
    hosts = {SCRIPT: sr.host_data(FACTS, [entry(1, "applied", IMG)], [IMG_SQ]), IMG: sr.host_data(FACTS, [], [])}
    site = {"finished": IMG, "hosts": {SCRIPT: sr.host_summary({"site_healthy": False, "site_error": IMG, "site_caps": [SCRIPT]})}}
    zc = {SCRIPT: {"recommendations": {IMG: {"tcp": {"verdict": IMG_SQ, "text": SCRIPT}}}, "cells": []},
          IMG: {"failed": True, "msg": SCRIPT}}
    tr = {"series": [{"link": SCRIPT, "direction": IMG, "mean_bps": 2.5e6, "peak_bps": 9e6, "percentiles_bps": {"p95": 7e6}}],
          "anomalies": [{"kind": IMG, "link": SCRIPT, "start": IMG_SQ, "end": 1790000300, "score": SCRIPT}],
          "water_levels": [{"link": SCRIPT, "level": IMG, "p95_utilisation": IMG_SQ}]}
    ev = {SCRIPT: {"sysctl": {"name": IMG, "netns": SCRIPT, "changes": [{"key": SCRIPT, "before": IMG, "after": IMG_SQ}]},
                   "tcp_rules": [{"name": SCRIPT, "set": {IMG: 1}, "hits": IMG_SQ, "errors": 0}],
                   "amp": {"net_cpus": SCRIPT, "app_cpus": IMG, "load": IMG_SQ, "softirq": {SCRIPT: {IMG: 1}}}}}
    page = sr.html(hosts, {"site": site, "zerocopy": zc, "traffic": tr, "evidence": ev, "after": {IMG: hosts[IMG]},
                           "tuning": {SCRIPT: {"scenario": IMG, "accepted": True, "sysctls": {IMG_SQ: SCRIPT}}},
                           "links": {"zerocopy": IMG, "traffic": IMG_SQ}}, title=SCRIPT)
    assert_inert(page, SCRIPT, IMG, IMG_SQ)
    assert "<title>&lt;script&gt;alert(1)&lt;/script&gt;</title>" in page
    assert page.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 10
    # the sections are all there: the values went through every table, not around them
    assert re.findall(r"<h2>([^<]+)</h2>", page) == ["After the rollback", "Fleet", "Evidence per capability", "Sysctl tuning",
                                                     "Zero-copy", "Traffic", "Journal (newest 10 per host)"]
