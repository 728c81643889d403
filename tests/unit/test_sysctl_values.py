"""Strict sysctl values: what a user may give ``sysctl_set``/``sysctl.plan`` and what the
kernel may give back.

User values: integers are ASCII digits with an optional sign, at most 20 digits; floats
(whole or not, inf, NaN) are refused; nested lists and dicts are refused; a string of
non-ASCII digits is a string.  Every refusal is a NetstackError naming the sysctl key.
Kernel values are read with the same normalisation but never raise.
"""
import os

import pytest
from conftest import throwaway_netns

from ansible_collections.netstack.tuning.plugins.module_utils.core import kstate, sysctl
from ansible_collections.netstack.tuning.plugins.module_utils.core.common import NetstackError

NS = "nstest-values-%d" % os.getpid()
KEY = "net.ipv4.tcp_syn_retries"


@pytest.fixture(scope="module")
def netns():
    with throwaway_netns(NS) as name:
        yield name


BAD_VALUES = [
    pytest.param("9" * 5000, id="5000-digit-string"),
    pytest.param("-" + "1" * 21, id="21-digit-negative"),
    pytest.param(10 ** 25, id="huge-int"),
    pytest.param(float("1e400"), id="inf-from-1e400"),
    pytest.param(float("-inf"), id="minus-inf"),
    pytest.param(float("nan"), id="nan"),
    pytest.param(1.0e30, id="whole-float-1e30"),
    pytest.param(3.0, id="whole-float-3.0"),
    pytest.param(1.5, id="fraction"),
    pytest.param(None, id="null"),
    pytest.param([1, [2, 3]], id="nested-list"),
    pytest.param([1, {"a": 2}], id="dict-in-list"),
    pytest.param({"a": 1}, id="dict"),
    pytest.param([1, 2.0], id="float-in-list"),
    pytest.param([1, None], id="null-in-list"),
    pytest.param(["9" * 30], id="long-digits-in-list"),
    pytest.param("1\x002", id="nul-byte"),
    pytest.param(b"1", id="bytes"),
]


@pytest.mark.parametrize("value", BAD_VALUES)
def test_normalize_refuses_bad_user_values_with_field(value):
    with pytest.raises(NetstackError) as e:
        kstate.normalize(value, field="k.e.y")
    assert e.value.field == "k.e.y"


@pytest.mark.root
@pytest.mark.parametrize("value", BAD_VALUES)
def test_plan_refuses_bad_user_values_naming_the_key(netns, value):
    with pytest.raises(NetstackError) as e:
        sysctl.plan({KEY: value}, netns)
    assert e.value.field == KEY


def test_whole_float_is_not_silently_an_integer():
    with pytest.raises(NetstackError) as e:
        kstate.normalize(1.0e30, field="k")
    assert "float" in str(e.value) or "integer" in str(e.value)


@pytest.mark.parametrize("digits", ["\u0661\u0662\u0663\u0664", "\uff11\uff12", "\u0967\u0968"])
def test_non_ascii_digits_are_a_string_not_an_integer(digits):
    assert kstate.normalize(digits) == digits
    assert kstate.value_shape(digits) == ("str", 0)
    with pytest.raises(NetstackError) as e:
        kstate.check_type("k", "3", kstate.normalize(digits))
    assert e.value.field == "k"


@pytest.mark.root
def test_plan_refuses_arabic_indic_digits_for_an_integer_key(netns):
    with pytest.raises(NetstackError) as e:
        sysctl.plan({KEY: "\u0661\u0662\u0663\u0664"}, netns)
    assert e.value.field == KEY
    assert "1234" not in str(e.value) or "\u0661" in str(e.value)


@pytest.mark.parametrize("given,norm", [
    ("18446744073692774399", "18446744073692774399"),       # u64, 20 digits
    ("-9223372036854775808", "-9223372036854775808"),
    (18446744073709551615, "18446744073709551615"),
    ("+" + "0" * 5 + "7", "7"),
    ([4096, "131072", 6291456], "4096 131072 6291456"),
    (True, "1"), (False, "0"),
])
def test_normalize_still_accepts_good_values(given, norm):
    assert kstate.normalize(given) == norm


@pytest.mark.parametrize("content,norm", [
    ("18446744073692774399\n", "18446744073692774399"),
    ("9" * 5000 + "\n", "9" * 5000),
    ("0" * 30 + "12\n", "12"),
    ("\u0661\u0662 3\n", "\u0661\u0662 3"),
    ("4096\t131072\t6291456\n", "4096 131072 6291456"),
    ("", ""),
])
def test_kernel_values_never_raise(tmp_path, content, norm):
    p = tmp_path / "value"
    p.write_text(content)
    assert kstate.Item("file", str(p)).read() == norm
    assert kstate.normalize_kernel(content) == norm


@pytest.mark.root
def test_kernel_u64_value_plans_as_an_integer(netns):
    # kernel.shmmax-like values: 20 digits round-trip through read and plan unchanged
    assert kstate.value_shape(kstate.normalize_kernel("18446744073692774399")) == ("int", 1)
    kstate.check_type("kernel.shmmax", "18446744073692774399", kstate.normalize("18446744073692774399"))


@pytest.mark.parametrize("bad", [float("inf"), float("nan"), 1e400])
def test_search_space_non_finite_value_names_the_parameter(bad):
    from ansible_collections.netstack.tuning.plugins.module_utils.tuning import searchspace
    space = {"parameters": [{"name": "somax", "sysctl": "net.core.somaxconn", "index": None}]}
    with pytest.raises(NetstackError) as e:
        searchspace.to_sysctls(space, {"somax": bad}, {})
    assert e.value.field == "somax"
