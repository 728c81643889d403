"""The one Prometheus writer (plugins/module_utils/core/metrics.py) and every capability's
metrics, read back by prometheus_client's own parser of the text format (an independent
implementation), including label values that need escaping."""
import math

import pytest
from hypothesis import given, settings, strategies as st
from prometheus_client.parser import text_string_to_metric_families

from ansible_collections.netstack.tuning.plugins.module_utils.core import metrics as prom


def parse(lines):
    return {f.name: f for f in text_string_to_metric_families(prom.text(lines))}


def samples(fam):
    return [(dict(s.labels), s.value) for s in fam.samples]


@settings(max_examples=200, deadline=None)
@given(value=st.text(max_size=40),
       # HELP is one line of the format: its outer spaces and other control characters than
       # newline (escaped) are not carried; ours are fixed English sentences
       help_text=st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zs", "Zl", "Zp"), whitelist_characters="\n\\"), max_size=40),
       number=st.one_of(st.integers(-2 ** 52, 2 ** 52), st.floats(allow_nan=False)))
def test_any_label_value_and_help_text_round_trip(value, help_text, number):
    fam = parse(prom.family("netstack_test", "gauge", help_text, [({"policy": value, "dir": "in"}, number)]))["netstack_test"]
    assert fam.documentation == help_text
    (labels, got), = samples(fam)
    assert labels == {"policy": value, "dir": "in"}
    assert got == float(number) or (math.isinf(number) and got == number)


def test_quote_backslash_and_newline_in_a_label():
    text = prom.sample("netstack_x", {"interface": 'a"b\\c\nd'}, 1)
    assert text == 'netstack_x{interface="a\\"b\\\\c\\nd"} 1'
    fam = parse(prom.family("netstack_x", "gauge", "h", [({"interface": 'a"b\\c\nd'}, 1)]))["netstack_x"]
    assert samples(fam) == [({"interface": 'a"b\\c\nd'}, 1.0)]


@pytest.mark.parametrize("bad", ["9lives", "has space", "dash-ed", ""])
def test_a_bad_metric_name_is_refused(bad):
    with pytest.raises(ValueError):
        prom.sample(bad, None, 1)


@pytest.mark.parametrize("bad", ["__reserved", "1x", "a-b"])
def test_a_bad_label_name_is_refused(bad):
    with pytest.raises(ValueError):
        prom.sample("netstack_x", {bad: "v"}, 1)


def test_special_values():
    assert [prom.number(v) for v in (float("inf"), float("-inf"), float("nan"), True, 3, 0.25)] == \
        ["+Inf", "-Inf", "NaN", "1", "3", "0.25"]


def test_a_none_value_is_left_out():
    assert prom.one("netstack_x", "gauge", "h", None) == []
    assert prom.family("netstack_x", "gauge", "h", [(None, None), ({"a": "b"}, 2)])[2:] == ['netstack_x{a="b"} 2']


def test_the_same_host_path_metrics_parse():
    from ansible_collections.netstack.tuning.plugins.module_utils.shm_path import path as shm
    pol = dict((k, i) for i, k in enumerate(shm.STATS_FIELDS))
    fams = parse(shm.metrics({"policies": {'we"b': pol, "redis": pol}, "sockets": 4}))
    assert samples(fams["netstack_shm_sockets"]) == [({}, 4.0)]
    # prometheus_client names a counter family without its _total suffix
    got = samples(fams["netstack_shm_shm_bytes"])
    assert ({"policy": 'we"b'}, float(pol["shm_bytes"])) in got and len(got) == 2


def test_the_agent_metrics_parse(tmp_path):
    """The agent's own metrics and its journal watch, as served on /metrics."""
    import json
    from ansible_collections.netstack.tuning.plugins.module_utils.agent import daemon
    (tmp_path / "agent.json").write_text(json.dumps({"log": None, "state_dir": str(tmp_path / "state")}))
    a = daemon.Agent(str(tmp_path / "agent.json"), None, pidfile=str(tmp_path / "pid"), status=str(tmp_path / "st"))
    a.reconcile("test")
    fams = parse(a.metrics_text().splitlines())
    assert samples(fams["netstack_agent_up"]) == [({}, 1.0)]
    assert samples(fams["netstack_agent_reconciles"]) == [({}, 1.0)]
    assert samples(fams["netstack_journal_pending_confirm"]) == [({}, 0.0)]
