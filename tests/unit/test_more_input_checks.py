"""Input defects found alongside the strict-input work (several first reported by the
property suite): each is a NetstackError naming the field, not a traceback."""
import pytest

from ansible_collections.netstack.tuning.plugins.module_utils.bpf import program as bpf
from ansible_collections.netstack.tuning.plugins.module_utils.shm_path import path as shm
from ansible_collections.netstack.tuning.plugins.module_utils.core import sysctl
from ansible_collections.netstack.tuning.plugins.module_utils.tcp_tuning import policy as tcppolicy
from ansible_collections.netstack.tuning.plugins.module_utils.tuning import httpbench as hb
from ansible_collections.netstack.tuning.plugins.module_utils.core.common import NetstackError


@pytest.mark.parametrize("name", ["", 5, None])
def test_empty_or_non_string_sysctl_name_names_the_option(name):
    with pytest.raises(NetstackError) as e:
        sysctl.plan({name: 1})
    assert e.value.field == "sysctls"
    with pytest.raises(NetstackError) as e:
        hb.validate({"server_sysctls": {name: 1}})
    assert e.value.field == "server_sysctls"


@pytest.mark.parametrize("name", ["a\x00b", "a/b", "", "x" * 41, 3])
def test_shm_path_name_is_checked(name, tmp_path):
    with pytest.raises(NetstackError) as e:
        shm.ShmPath(name=name, state_dir=str(tmp_path))
    assert e.value.field == "name"


def test_bpf_state_dir_that_is_a_file_names_state_dir(tmp_path):
    f = tmp_path / "file"
    f.write_text("")
    eng = bpf.Engine(state_dir=str(f), pin_root=str(tmp_path / "pins"))
    with pytest.raises(NetstackError) as e:
        with eng.lock("x"):
            pass
    assert e.value.field == "state_dir"
    with pytest.raises(NetstackError) as e:
        eng.lock_dir()
    assert e.value.field == "state_dir"


@pytest.mark.parametrize("hz", [-1, 0, 10 ** 30, 2.5, "9" * 5000, True])
def test_tcp_policy_kernel_hz_bounded(hz):
    with pytest.raises(NetstackError) as e:
        tcppolicy.plan([{"name": "s", "set": {"syn_rto_ms": 300}}], 1 << 20, None, hz, ["cubic"])
    assert e.value.field == "kernel_hz"


@pytest.mark.parametrize("n", [0, -1, 2 ** 64, 10 ** 30, 1.5, True])
def test_tcp_policy_long_flow_bytes_bounded(n):
    with pytest.raises(NetstackError) as e:
        tcppolicy.plan([], n, None, 250, ["cubic"])
    assert e.value.field == "long_flow_bytes"


def test_tcp_policy_long_flow_bytes_max_accepted():
    tcppolicy.plan([], tcppolicy.MAX_LONG_FLOW_BYTES, None, 250, ["cubic"])   # 2**48 (was 2**64-1)
