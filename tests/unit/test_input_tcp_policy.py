"""tcp_policy input found by the property suite (tests/unit/test_properties.py with
NETSTACK_PROPS_RANDOM=1): long_flow_bytes of 19 digits was accepted.  A flow is "long"
once that many bytes were acknowledged; no flow reaches 2**48 bytes (256 TiB), and
track_flows=false is the way to switch the counting off, so 1..2**48 is the range."""
import pytest

from ansible_collections.netstack.tuning.plugins.module_utils.tcp_tuning import policy as tcppolicy
from ansible_collections.netstack.tuning.plugins.module_utils.core.common import NetstackError


@pytest.mark.parametrize("n", [2 ** 48 + 1, 10 ** 15, 2 ** 63, 2 ** 64 - 1, 9223372036854775807])
def test_long_flow_bytes_above_256_tib_is_refused(n):
    with pytest.raises(NetstackError) as e:
        tcppolicy.plan([], n, None, 250, ["cubic"])
    assert e.value.field == "long_flow_bytes"


@pytest.mark.parametrize("n", [1, 1048576, 2 ** 48])
def test_long_flow_bytes_up_to_256_tib_is_accepted(n):
    tcppolicy.plan([], n, None, 250, ["cubic"])


@pytest.mark.parametrize("args,field", [
    ({"kernel_hz": 0}, "kernel_hz"),                   # was taken as "unset": the kernel's HZ was read instead
    ({"long_flow_bytes": 2 ** 63}, "long_flow_bytes"),
])
def test_tcp_policy_module_refuses_naming_the_field(args, field):
    from modharness import module_runner, run_case, sandbox_works
    why = sandbox_works()
    if why:
        pytest.skip(why)
    for check_mode in (True, False):
        payload = run_case(module_runner("tcp_policy"), dict(args, rules=[]), check_mode=check_mode)
        assert not payload.get("timed_out") and not payload.get("harness_error"), payload
        assert payload["exception"] is None, payload["exception"]
        res = payload["result"]
        assert res["failed"] and field in res["msg"], res
        assert not payload.get("changes"), payload["changes"]
