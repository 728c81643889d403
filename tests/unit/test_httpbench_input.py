"""http_bench input bounds: every integer option is ASCII digits within its range, and
worker_processes is 'auto' or 1..1024; each refusal is a NetstackError naming the option,
raised by validate() before anything starts (no namespace, no nginx, no wrk)."""
import pytest

from ansible_collections.netstack.tuning.plugins.module_utils.tuning import httpbench as hb
from ansible_collections.netstack.tuning.plugins.module_utils.core.common import NetstackError
from ansible_collections.netstack.tuning.plugins.modules import http_bench as http_bench_module

HUGE = "9" * 5000

INT_OPTIONS = ["payload_bytes", "connections", "threads", "duration", "warmup", "repeats", "timeout",
               "listen_backlog"]
BAD_INTS = [
    pytest.param(HUGE, id="5000-digits"),
    pytest.param(10 ** 30, id="huge-int"),
    pytest.param(-(10 ** 30), id="huge-negative"),
    pytest.param(-5, id="negative"),
    pytest.param("\u0661\u0662", id="arabic-indic"),
    pytest.param("1_0", id="underscore"),
    pytest.param(2.5, id="float"),
    pytest.param(float("nan"), id="nan"),
    pytest.param(float("inf"), id="inf"),
    pytest.param(True, id="bool"),
    pytest.param([1], id="list"),
]


@pytest.mark.parametrize("value", BAD_INTS)
@pytest.mark.parametrize("name", INT_OPTIONS)
def test_int_options_out_of_range_name_the_field(name, value):
    with pytest.raises(NetstackError) as e:
        hb.validate({name: value})
    assert e.value.field == name
    assert len(str(e.value)) < 300  # a 5,000-digit value is not echoed back whole


@pytest.mark.parametrize("name", INT_OPTIONS)
def test_int_options_upper_bounds(name):
    hi = hb.LIMITS[name][1]
    with pytest.raises(NetstackError) as e:
        hb.validate({name: hi + 1})
    assert e.value.field == name


@pytest.mark.parametrize("value", [HUGE, "0", "1025", "-1", "\u0661\u0662", "2.0", 2.0, True, "", "auto1",
                                   10 ** 30, [2], "1\x00"])
def test_worker_processes_is_auto_or_1_to_1024(value):
    with pytest.raises(NetstackError) as e:
        hb.validate({"worker_processes": value})
    assert e.value.field == "worker_processes"
    assert len(str(e.value)) < 300


@pytest.mark.parametrize("value,want", [("auto", "auto"), ("1", "1"), (1024, "1024"), (" 8 ", "8")])
def test_worker_processes_accepted(value, want):
    assert hb.validate({"worker_processes": value})["worker_processes"] == want


@pytest.mark.parametrize("url", ["http://h/\x00x", "http://h/a b", "http://h/\x1bx", "http://h:99999999999999999999999/"])
def test_target_url_with_control_characters_is_refused(url):
    with pytest.raises(NetstackError) as e:
        hb.validate({"mode": "fleet", "target_url": url})
    assert e.value.field == "target_url"


@pytest.mark.parametrize("value", [HUGE, 1.5, 1e30, float("nan"), [1, [2]], {"a": 1}, "\u0661\u0662"])
def test_server_sysctl_values_checked_before_the_lab(value):
    key = "net.core.somaxconn"
    if value == "\u0661\u0662":
        # a string of non-ASCII digits is a string: only the kernel's shape (read in the
        # lab) can refuse it, so validate() passes it through unchanged
        assert hb.validate({"server_sysctls": {key: value}})["server_sysctls"][key] == value
        return
    with pytest.raises(NetstackError) as e:
        hb.validate({"server_sysctls": {key: value}})
    assert e.value.field == key


class FakeModule(object):
    """What the module's run() uses of AnsibleModule."""

    def __init__(self, check_mode=True, **params):
        self.params = dict((k, None) for k in http_bench_module.OPTIONS)
        self.params.update(mode="lab", nginx_mode="static", netns_prefix="nsbench")
        self.params.update(params)
        self.check_mode = check_mode
        self._diff = False


def test_module_refuses_huge_worker_processes_before_anything_starts(monkeypatch):
    started = []
    monkeypatch.setattr(hb, "require_tool", lambda name: started.append(name))
    monkeypatch.setattr(hb, "benchmark", lambda p: started.append("benchmark"))
    with pytest.raises(NetstackError) as e:
        http_bench_module.run(FakeModule(check_mode=False, worker_processes=HUGE))
    assert e.value.field == "worker_processes"
    assert started == []
