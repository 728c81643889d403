"""netstack-agent config: every number finite (NaN compares false with every bound, so
``interval: NaN`` made the agent reconcile ~450 times a second), and the metrics endpoint
(no authentication) on a non-loopback address only with ``metrics.allow_remote: true``.
Both with and without the jsonschema package."""
import json
import os

import pytest
import yaml

from ansible_collections.netstack.tuning.plugins.module_utils.agent import config as agent_config, control
from ansible_collections.netstack.tuning.plugins.module_utils.agent import daemon
from ansible_collections.netstack.tuning.plugins.module_utils.amp import controller as ampctl
from ansible_collections.netstack.tuning.plugins.module_utils.core.common import NetstackError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ROLE = os.path.join(ROOT, "roles", "netstack_agent")
NAN, INF = float("nan"), float("inf")

AMP_SEC = {"state": "present",
           "partition": {"name": "amp", "interfaces": ["eth0"], "app_cgroups": ["apps.slice"], "net_cpus": 2},
           "controller": {"high": 0.7, "low": 0.2, "max_cores": 4, "probe": {"port": 6379}}}


def _amp(**controller):
    sec = json.loads(json.dumps(AMP_SEC))
    sec["controller"].update(controller)
    return {"amp": sec}


NON_FINITE = [pytest.param(NAN, id="nan"), pytest.param(INF, id="inf"), pytest.param(-INF, id="-inf")]


@pytest.mark.parametrize("bad", NON_FINITE)
@pytest.mark.parametrize("cfg,field", [
    (lambda v: {"interval": v}, "interval"),
    (lambda v: {"metrics": {"port": v}}, "metrics.port"),
    (lambda v: _amp(interval=v), "amp.controller.interval"),
    (lambda v: _amp(high=v), "amp.controller.high"),
    (lambda v: _amp(cooldown=v), "amp.controller.cooldown"),
    (lambda v: _amp(squeeze_per_s=v), "amp.controller.squeeze_per_s"),
    (lambda v: _amp(latency_high_us=v), "amp.controller.latency_high_us"),
    (lambda v: {"traffic": {"state": "present", "interfaces": ["lo"], "interval": v}}, "traffic.interval"),
    (lambda v: {"shm": {"state": "present", "policy": {"policies": [{"name": "r", "ports": v}]}}},
     "shm.policy.policies[0].ports"),
])
def test_non_finite_numbers_are_refused_naming_the_field(cfg, field, bad):
    with pytest.raises(NetstackError) as e:
        agent_config.validate(cfg(bad), origin="agent.json")
    assert e.value.field == field, (e.value.field, e.value.msg)
    assert "finite" in e.value.msg and "agent.json" in str(e.value)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_nan_in_the_config_file_is_refused(tmp_path, literal):
    (tmp_path / "agent.json").write_text('{"interval": %s}' % literal)
    with pytest.raises(NetstackError) as e:
        agent_config.load(str(tmp_path / "agent.json"), None)
    assert e.value.field == "interval"


@pytest.mark.parametrize("key", ["cooldown", "squeeze_per_s", "latency_high_us", "app_high", "interval", "high"])
def test_controller_settings_refuse_nan(key):
    # the cpu_partition module checks its controller option with ampctl.settings
    with pytest.raises(NetstackError) as e:
        ampctl.settings({key: NAN})
    assert e.value.field == "controller." + key


@pytest.mark.parametrize("listen", ["0.0.0.0", "::", "10.1.2.3", "198.18.0.1", "2001:db8::1", "metrics.example.com",
                                    "::ffff:10.0.0.1"])
def test_metrics_on_a_non_loopback_address_needs_allow_remote(listen):
    with pytest.raises(NetstackError) as e:
        agent_config.validate({"metrics": {"listen": listen}}, origin="agent.json")
    assert e.value.field == "metrics.listen"
    assert "allow_remote" in e.value.msg
    out = agent_config.validate({"metrics": {"listen": listen, "allow_remote": True}})
    assert out["metrics"]["listen"] == listen and out["metrics"]["allow_remote"] is True


@pytest.mark.parametrize("listen", ["127.0.0.1", "127.0.0.53", "::1", "localhost", "::ffff:127.0.0.1"])
def test_metrics_on_loopback_needs_nothing(listen):
    out = agent_config.validate({"metrics": {"listen": listen}})
    assert out["metrics"]["listen"] == listen and out["metrics"]["allow_remote"] is False


def test_metrics_defaults_are_loopback_and_no_remote():
    out = agent_config.validate({})
    assert out["metrics"]["listen"] == "127.0.0.1" and out["metrics"]["allow_remote"] is False


@pytest.mark.parametrize("bad", ["yes", 1, None])
def test_allow_remote_is_a_boolean(bad):
    with pytest.raises(NetstackError) as e:
        agent_config.validate({"metrics": {"listen": "0.0.0.0", "allow_remote": bad}})
    assert e.value.field == "metrics.allow_remote"


# ------------------------------------------------------------------ the role

def _render(**overrides):
    import jinja2
    from ansible.plugins.filter.core import FilterModule
    with open(os.path.join(ROLE, "defaults", "main.yml")) as f:
        variables = yaml.safe_load(f)
    variables.update(overrides)
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    env.filters.update(FilterModule().filters())  # to_nice_json, bool, ... as Ansible has them
    with open(os.path.join(ROLE, "templates", "agent.json.j2")) as f:
        return json.loads(env.from_string(f.read()).render(**variables))


def test_role_renders_allow_remote_and_the_agent_accepts_the_defaults():
    cfg = _render()
    assert cfg["metrics"]["allow_remote"] is False
    agent_config.validate(cfg)


def test_role_with_a_remote_listen_address_needs_the_opt_in():
    with pytest.raises(NetstackError) as e:
        agent_config.validate(_render(netstack_agent_metrics_listen="0.0.0.0"))
    assert e.value.field == "metrics.listen"
    assert "netstack_agent_metrics_allow_remote" in e.value.msg or "allow_remote" in e.value.msg
    agent_config.validate(_render(netstack_agent_metrics_listen="0.0.0.0", netstack_agent_metrics_allow_remote=True))


def test_role_documents_allow_remote():
    with open(os.path.join(ROLE, "meta", "argument_specs.yml")) as f:
        spec = yaml.safe_load(f)
    opts = spec["argument_specs"]["main"]["options"]
    assert opts["netstack_agent_metrics_allow_remote"]["type"] == "bool"
    assert opts["netstack_agent_metrics_allow_remote"]["default"] is False
    with open(os.path.join(ROLE, "README.md")) as f:
        assert "netstack_agent_metrics_allow_remote" in f.read()


def test_metrics_endpoint_serves_on_ipv6_loopback(tmp_path):
    """``::1`` passes validation, so the endpoint must be able to bind it (HTTPServer is
    IPv4 only: the agent died at start with an IPv6 listen address)."""
    import socket
    import urllib.request
    try:
        probe = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        probe.bind(("::1", 0))
        port = probe.getsockname()[1]
        probe.close()
    except OSError:
        pytest.skip("no IPv6 loopback here")
    (tmp_path / "agent.json").write_text(json.dumps({"metrics": {"listen": "::1", "port": port}, "log": None}))
    a = daemon.Agent(config=str(tmp_path / "agent.json"), confd=str(tmp_path / "agent.d"),
                    pidfile=str(tmp_path / "agent.pid"), status=str(tmp_path / "status.json"))
    server = a.serve_metrics()
    try:
        body = urllib.request.urlopen("http://[::1]:%d/metrics" % port, timeout=5).read().decode()
        assert "netstack_agent" in body
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("controller,field", [
    ({"cooldown": NAN}, "controller.cooldown"),
    ({"interval": INF}, "controller.interval"),
    ({"probe": {"port": 99999}}, "controller.probe.port"),
    ({"probe": {"port": 6379, "count": NAN}}, "controller.probe.count"),
    ({"probe": {"port": 6379, "bogus": 1}}, "controller.probe"),
])
def test_cpu_partition_refuses_a_controller_the_agent_would_refuse(tmp_path, monkeypatch,
                                                                   controller, field):
    """The module writes the controller into the agent's amp.json: a value the agent's own
    validation refuses must fail the task (naming the option) before anything is written,
    not be written and then refused by the agent on reload."""
    from ansible_collections.netstack.tuning.plugins.module_utils.amp import partition as amp
    from ansible_collections.netstack.tuning.plugins.modules import cpu_partition

    class FakeModule(object):
        check_mode = False
        _diff = False

        def __init__(self, params):
            self.params = params

        def warn(self, msg):
            pass

    monkeypatch.setattr(amp.Partition, "present", lambda *a, **k: pytest.fail("the partition was applied"))
    monkeypatch.setattr(control, "write_section", lambda *a, **k: pytest.fail("the agent config was written"))
    p = {"name": "amp", "state": "present", "net_cpus": 1, "interfaces": ["lo"], "app_cgroups": ["apps.slice"],
         "app_units": [], "rfs": False, "rps_sock_flow_entries": 32768, "xps": True, "irqbalance": "ban",
         "controller": controller, "config_dir": str(tmp_path / "conf"), "notify_agent": False,
         "state_dir": str(tmp_path / "state")}
    with pytest.raises(NetstackError) as e:
        cpu_partition.run(FakeModule(p))
    assert (e.value.field or "").startswith(field), (e.value.field, e.value.msg)


def test_the_command_line(tmp_path, capsys):
    """netstack-agent's argparse CLI: check-config names the bad field and exits 1, a good
    file prints its digest, no command is a usage error (2), --help exits 0."""
    from ansible_collections.netstack.tuning.plugins.module_utils.agent import cli
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps({"interval": 5}))
    bad.write_text(json.dumps({"interval": 0}))
    assert cli.main(["check-config", str(good), "--no-confd"]) == 0
    assert capsys.readouterr().out.startswith("ok ")
    assert cli.main(["check-config", str(bad), "--no-confd"]) == 1
    assert "interval" in capsys.readouterr().err
    assert cli.main([]) == 2
    assert cli.main(["--help"]) == 0
    assert "check-config" in capsys.readouterr().out
    assert cli.main(["frobnicate"]) == 2
