"""Input defects of sysctl_study, sysctl_trial, http_bench and cpu_partition found by the
property suite (tests/unit/test_properties.py): every invalid value is a NetstackError
naming the field, raised BEFORE any work starts (the lab, a benchmark, the study's
storage file), in check mode exactly as in real mode."""
import math
import os

import pytest

from ansible_collections.netstack.tuning.plugins.module_utils.amp import partition as amp
from ansible_collections.netstack.tuning.plugins.module_utils.tuning import httpbench, study, trial
from ansible_collections.netstack.tuning.plugins.module_utils.core import journal
from ansible_collections.netstack.tuning.plugins.module_utils.core.common import NetstackError
from ansible_collections.netstack.tuning.plugins.modules import cpu_partition, http_bench, sysctl_trial

BIG = 10 ** 30


class FakeModule(object):
    def __init__(self, params, check_mode=True):
        self.params = params
        self.check_mode = check_mode
        self._diff = False
        self.warnings = []

    def warn(self, msg):
        self.warnings.append(msg)


@pytest.fixture
def no_work(monkeypatch):
    """Whatever starts work (the lab, a benchmark, the trial's namespaces and journal, the
    study loop) fails the test."""
    def refuse(*a, **k):
        raise AssertionError("test guard: work started before the input was validated")

    monkeypatch.setattr(httpbench.Lab, "__enter__", refuse)
    monkeypatch.setattr(httpbench, "benchmark", refuse)
    monkeypatch.setattr(trial, "netns_scoped", refuse)
    monkeypatch.setattr(trial, "spawn_reaper", refuse)
    monkeypatch.setattr(trial, "run", refuse)
    monkeypatch.setattr(journal.Journal, "apply", refuse)
    monkeypatch.setattr(study, "run_study", refuse)
    monkeypatch.setattr(study, "open_study", refuse)
    return refuse


# ------------------------------------------------------------------ cpu_partition

def partition_params(tmp_path, **kw):
    p = {"name": "amp", "state": "present", "net_cpus": "auto", "interfaces": ["lo"], "app_cgroups": ["nsprop.slice"],
         "app_units": [], "rfs": False, "rps_sock_flow_entries": 32768, "xps": True, "irqbalance": "ban",
         "controller": None, "config_dir": str(tmp_path / "agent.d"), "notify_agent": True,
         "state_dir": str(tmp_path / "state")}
    p.update(kw)
    return p


@pytest.mark.parametrize("check_mode", [True, False])
def test_cpu_partition_state_dir_that_is_not_a_directory_names_state_dir(tmp_path, no_work, check_mode):
    for bad in ("/proc/self/environ", str(tmp_path / "file")):
        (tmp_path / "file").write_text("x")
        with pytest.raises(NetstackError) as e:
            cpu_partition.run(FakeModule(partition_params(tmp_path, state_dir=bad), check_mode=check_mode))
        assert e.value.field == "state_dir", str(e.value)
    assert sorted(os.listdir(str(tmp_path))) == ["file"]


@pytest.mark.parametrize("check_mode", [True, False])
@pytest.mark.parametrize("state", ["present", "absent"])
def test_cpu_partition_config_dir_that_is_not_a_directory_names_config_dir(tmp_path, no_work, check_mode, state):
    (tmp_path / "file").write_text("x")
    for bad in ("/proc/self/environ", str(tmp_path / "file"), str(tmp_path / "file" / "sub")):
        with pytest.raises(NetstackError) as e:
            cpu_partition.run(FakeModule(partition_params(tmp_path, config_dir=bad, state=state,
                                                          controller={"max_cores": 2}), check_mode=check_mode))
        assert e.value.field == "config_dir", str(e.value)
    assert sorted(os.listdir(str(tmp_path))) == ["file"]


def test_cpu_partition_record_under_a_file_names_state_dir(tmp_path):
    (tmp_path / "amp").write_text("x")   # <state_dir>/amp is a file
    part = amp.Partition("amp", state_dir=str(tmp_path))
    with pytest.raises(NetstackError) as e:
        part.record()
    assert e.value.field == "state_dir"


@pytest.mark.parametrize("net_cpus", ["9" * 5000, "9" * 21, "0-" + "9" * 5000, "0-99999999", "8192", 8192, [8192],
                                      "1,9000", "\u0663", "0-\u0663", [-1], -1, "0-7:1/99999999", BIG, [BIG],
                                      "1e400", 1.5, True, None, {"a": 1}])
def test_cpu_partition_net_cpus_parsed_strictly(net_cpus):
    spec = {"interfaces": ["lo"], "app_cgroups": ["x.slice"], "net_cpus": net_cpus}
    with pytest.raises(NetstackError) as e:
        amp.validate(spec)
    assert e.value.field == "net_cpus", str(e.value)


@pytest.mark.parametrize("net_cpus", ["auto", 1, "1", "0-1", [0], "1,3", "0-8191", [8191], " 2 ", "0-7:2/4"])
def test_cpu_partition_net_cpus_valid_forms_still_accepted(net_cpus):
    spec = {"interfaces": ["lo"], "app_cgroups": ["x.slice"], "net_cpus": net_cpus}
    amp.validate(spec)


@pytest.mark.parametrize("net_cpus", [0, "0"])
def test_cpu_partition_net_cpus_count_of_zero_still_refused(net_cpus):
    with pytest.raises(NetstackError) as e:   # digits alone are a count, as before
        amp.validate({"interfaces": ["lo"], "app_cgroups": ["x.slice"], "net_cpus": net_cpus})
    assert e.value.field == "net_cpus"


# ------------------------------------------------------------------ sysctl_trial

def trial_params(**kw):
    p = {"action": "run", "sysctls": {"net.core.somaxconn": 1024}, "keys": [], "bench": {}, "repeats": None,
         "prune_p99_above": None, "confirm_timeout": 300, "state_dir": "/var/lib/netstack"}
    p.update(kw)
    return p


TRIAL_BAD = [
    ({"confirm_timeout": BIG}, "confirm_timeout"),
    ({"confirm_timeout": 0}, "confirm_timeout"),
    ({"confirm_timeout": -5}, "confirm_timeout"),
    ({"confirm_timeout": 7 * 24 * 3600 + 1}, "confirm_timeout"),
    ({"repeats": -BIG}, "repeats"),
    ({"repeats": BIG}, "repeats"),
    ({"repeats": -1}, "repeats"),
    ({"repeats": 0}, "repeats"),
    ({"repeats": 101}, "repeats"),
    ({"prune_p99_above": float("inf")}, "prune_p99_above"),
    ({"prune_p99_above": float("nan")}, "prune_p99_above"),
    ({"prune_p99_above": -1.0}, "prune_p99_above"),
    ({"sysctls": {"k": {"n": [1]}}}, "k"),
    ({"sysctls": {"net.core.somaxconn": "9" * 5000}}, "net.core.somaxconn"),
    ({"sysctls": {"net.core.somaxconn": "nan"}}, "net.core.somaxconn"),
    ({"sysctls": {"net.core.somaxconn": float("nan")}}, "net.core.somaxconn"),
    ({"sysctls": {"net.core.somaxconn": "1e400"}}, "net.core.somaxconn"),
    ({"sysctls": {"net.ipv4.tcp_rmem": "1e400"}}, "net.ipv4.tcp_rmem"),
    ({"sysctls": {"net.ipv4.tcp_rmem": "4096 87380"}}, "net.ipv4.tcp_rmem"),
    ({"sysctls": {"net.core.somaxconn": "\u0663"}}, "net.core.somaxconn"),
    ({"sysctls": {"net.ipv4.nosuch_key": 1}}, "net.ipv4.nosuch_key"),
    ({"sysctls": {"../etc/passwd": 1}}, "../etc/passwd"),
    ({"sysctls": {"net.core.somaxconn": 1, "net/core/somaxconn": 2}}, "net/core/somaxconn"),
    ({"sysctls": {"": 1}}, "sysctls"),
    ({"sysctls": "net.core.somaxconn=1"}, "sysctls"),
    ({"bench": {"duration": float("nan")}}, "bench.duration"),
    ({"bench": {"duration": 0}}, "bench.duration"),
    ({"bench": {"connections": BIG}}, "bench.connections"),
    ({"bench": {"nginx_mode": "fast"}}, "bench.nginx_mode"),
    ({"bench": {"worker_processes": "9" * 5000}}, "bench.worker_processes"),
    ({"bench": {"nsprop": 1}}, "bench"),
    ({"bench": {"": 1}}, "bench"),
    ({"bench": "duration=1"}, "bench"),
]


@pytest.mark.parametrize("check_mode", [True, False])
@pytest.mark.parametrize("kw,field", TRIAL_BAD, ids=[repr(k)[:60] for k, _f in TRIAL_BAD])
def test_sysctl_trial_refuses_before_the_lab(no_work, check_mode, kw, field):
    with pytest.raises(NetstackError) as e:
        sysctl_trial.run(FakeModule(trial_params(**kw), check_mode=check_mode))
    assert e.value.field == field, str(e.value)


def test_sysctl_trial_check_mode_accepts_valid_input(no_work):
    res = sysctl_trial.run(FakeModule(trial_params(
        sysctls={"net.core.somaxconn": 1024, "net.ipv4.tcp_rmem": "4096 131072 6291456",
                 "net.ipv4.tcp_congestion_control": "cubic"},
        bench={"duration": 2, "repeats": 1, "worker_processes": "auto"}, repeats=2, prune_p99_above=5.0,
        confirm_timeout=600)))
    assert res["skipped"] is True and res["changed"] is False


def test_trial_engine_validates_before_the_lab(no_work, monkeypatch):
    # trial.run itself (used by the study's synthetic runs and the agent) checks too
    monkeypatch.undo()
    monkeypatch.setattr(httpbench.Lab, "__enter__", no_work)
    monkeypatch.setattr(trial, "netns_scoped", no_work)
    monkeypatch.setattr(trial, "spawn_reaper", no_work)
    with pytest.raises(NetstackError) as e:
        trial.run({"net.core.somaxconn": "nan"}, {}, 300, "/nonexistent-netstack-state")
    assert e.value.field == "net.core.somaxconn"
    with pytest.raises(NetstackError) as e:
        trial.run({}, {"repeats": 0}, 300, "/nonexistent-netstack-state")
    assert e.value.field == "bench.repeats"


# ------------------------------------------------------------------ http_bench server_sysctls

def bench_params(**kw):
    p = dict(httpbench.DEFAULTS)
    p.update(kw)
    return p


@pytest.mark.parametrize("check_mode", [True, False])
@pytest.mark.parametrize("key,value", [("net.ipv4.tcp_rmem", "1e400"), ("net.ipv4.tcp_keepalive_time", "1e400"),
                                       ("net.ipv4.tcp_keepalive_time", "nan"), ("net.ipv4.tcp_rmem", "1 2"),
                                       ("net.ipv4.tcp_keepalive_time", "fast"), ("net.ipv4.nosuch_key", 1)])
def test_http_bench_server_sysctl_shape_checked_before_the_lab(no_work, check_mode, key, value):
    with pytest.raises(NetstackError) as e:
        http_bench.run(FakeModule(bench_params(server_sysctls={key: value}), check_mode=check_mode))
    assert e.value.field == key, str(e.value)


def test_http_bench_check_mode_accepts_well_shaped_server_sysctls(no_work):
    res = http_bench.run(FakeModule(bench_params(server_sysctls={
        "net.ipv4.tcp_rmem": "4096 87380 6291456", "net.ipv4.tcp_keepalive_time": 300,
        "net.ipv4.tcp_congestion_control": "reno"})))
    assert res["changed"] is False


# ------------------------------------------------------------------ sysctl_study

def inspect_host(keys):
    """sysctl_trial's inspect, read from this host's /proc/sys (no namespace made)."""
    from ansible_collections.netstack.tuning.plugins.module_utils.core import kstate
    missing = [k for k in keys if not os.path.exists(os.path.join(kstate.PROC_SYS, kstate.sysctl_path(k)))]
    current = dict((k, kstate.Item("sysctl", k).read()) for k in keys if k not in missing)
    return {"current": current, "missing": missing, "scopes": dict((k, "host") for k in current)}


def run_study_action(args, check_mode, tmp_path, monkeypatch, calls=None):
    """The action plugin's run() as the task executor calls it, with the sysctl_trial calls
    it makes recorded (inspect answered from this host, anything else refused)."""
    from unittest import mock
    from ansible.errors import AnsibleActionFail
    from ansible.parsing.dataloader import DataLoader
    from ansible.playbook.play_context import PlayContext
    from ansible_collections.netstack.tuning.plugins.action import sysctl_study as act

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    os.mkdir(str(tmp_path / "home"))
    calls = [] if calls is None else calls
    task = mock.MagicMock()
    task.args = dict(args)
    task.async_val = 0
    task.check_mode = check_mode
    task.diff = False
    task.action = "netstack.tuning.sysctl_study"
    task.get_search_path.return_value = [str(tmp_path)]
    pc = PlayContext()
    pc.check_mode = check_mode
    conn = mock.MagicMock()
    conn._shell.tmpdir = None
    am = act.ActionModule(task, conn, pc, DataLoader(), None, None)

    def execute(module_name=None, module_args=None, task_vars=None, **kw):
        calls.append(module_args)
        if module_args.get("action") == "inspect":
            return dict(changed=False, **inspect_host(module_args["keys"]))
        raise AssertionError("test guard: a trial ran before the input was validated")
    am._execute_module = execute
    try:
        return am.run(task_vars={"inventory_hostname": "h1"})
    except AnsibleActionFail as e:
        r = dict(getattr(e, "result", None) or {})
        r.update(failed=True, msg=e.message)
        return r


STUDY_BAD = [
    ({"trials": BIG}, "trials"),
    ({"trials": 0}, "trials"),
    ({"trials": 10001}, "trials"),
    ({"seed": -1}, "seed"),
    ({"seed": 2 ** 32}, "seed"),
    ({"seed": BIG}, "seed"),
    ({"confirm_timeout": -5}, "confirm_timeout"),
    ({"confirm_timeout": 0}, "confirm_timeout"),
    ({"confirm_timeout": BIG}, "confirm_timeout"),
    ({"verify_rounds": 2}, "verify_rounds"),
    ({"verify_rounds": BIG}, "verify_rounds"),
    ({"alpha": float("-inf")}, "alpha"),
    ({"alpha": float("nan")}, "alpha"),
    ({"alpha": 0.0}, "alpha"),
    ({"alpha": 1.0}, "alpha"),
    ({"min_rps_ratio": float("nan")}, "min_rps_ratio"),
    ({"min_rps_ratio": -0.1}, "min_rps_ratio"),
    ({"min_rps_ratio": 1.5}, "min_rps_ratio"),
    ({"prune_factor": float("nan")}, "prune_factor"),
    ({"prune_factor": float("inf")}, "prune_factor"),
    ({"prune_factor": 1000.5}, "prune_factor"),
    ({"prune_factor": -1.0}, "prune_factor"),
    ({"bench": {"": 1}}, "bench"),
    ({"bench": {"nsprop": 1}}, "bench"),
    ({"bench": {"duration": float("nan")}}, "bench.duration"),
    ({"bench": {"repeats": BIG}}, "bench.repeats"),
    ({"space": "1e400"}, "space"),
    ({"alpha": 10 ** 400}, "alpha"),              # was an OverflowError traceback (int -> float)
    ({"storage": "/proc/self/environ/x.db"}, "storage"),
    ({"storage": "/etc/passwd/sub/x.db"}, "storage"),
    ({"report": "/etc/passwd/sub/r.html"}, "report"),   # was a FileExistsError traceback after the study
    ({"report": "/tmp"}, "report"),
    ({"objectives": ["rps"]}, "objectives"),
    ({"objectives": []}, "objectives"),
    ({"halving": 1}, "halving"),
    ({"halving": 11}, "halving"),
    ({"halving": BIG}, "halving"),
    ({"client": "web9"}, "client"),                   # not in the inventory
    ({"client": "h1"}, "client"),                     # the tuned host itself
    ({"target_url": "http://web1/"}, "target_url"),   # only with client
]


@pytest.mark.parametrize("check_mode", [True, False])
@pytest.mark.parametrize("kw,field", STUDY_BAD, ids=[repr(k)[:60] for k, _f in STUDY_BAD])
def test_sysctl_study_refuses_before_any_work(tmp_path, monkeypatch, no_work, check_mode, kw, field):
    calls = []
    res = run_study_action(kw, check_mode, tmp_path, monkeypatch, calls)
    assert res.get("failed"), res
    assert res.get("field") == field, res
    assert res["msg"].startswith(field), res["msg"]
    # nothing ran on the host and no storage was made (~/.netstack/studies.db)
    assert [c for c in calls if c.get("action") != "inspect"] == []
    assert os.listdir(str(tmp_path / "home")) == []


@pytest.mark.parametrize("check_mode", [True, False])
@pytest.mark.parametrize("kw", [{"trials": float("inf")}, {"trials": "1e999999999"}, {"seed": "-inf"},
                                {"confirm_timeout": "\u0663"}, {"nsprop": 1}])
def test_sysctl_study_ansible_conversion_fails_cleanly(tmp_path, monkeypatch, no_work, check_mode, kw):
    # .inf was an OverflowError traceback, '1e999999999' a billion-digit int in Ansible's int
    # conversion; the action plugin guards its arguments as NetstackModule guards a module's
    res = run_study_action(kw, check_mode, tmp_path, monkeypatch)
    assert res.get("failed"), res
    assert list(kw)[0] in res["msg"]
    assert os.listdir(str(tmp_path / "home")) == []


def test_sysctl_study_check_mode_accepts_valid_options(tmp_path, monkeypatch, no_work):
    res = run_study_action({"trials": 5, "seed": 0, "alpha": 0.1, "min_rps_ratio": 0.9, "prune_factor": 0,
                            "confirm_timeout": 60, "verify_rounds": 3, "bench": {"duration": 2},
                            "objectives": ["p99", "rps"], "report": str(tmp_path / "reports" / "r.html")},
                           True, tmp_path, monkeypatch)
    assert not res.get("failed"), res
    assert res["skipped"] is True
    assert os.listdir(str(tmp_path / "home")) == []


def test_study_engine_checks_its_options(no_work, monkeypatch):
    monkeypatch.undo()
    for kw, field in [({"alpha": math.nan}, "alpha"), ({"prune_factor": math.inf}, "prune_factor"),
                      ({"seed": -1}, "seed"), ({"n_trials": 0}, "trials"), ({"verify_rounds": 1}, "verify_rounds"),
                      ({"min_rps_ratio": math.nan}, "min_rps_ratio")]:
        with pytest.raises(NetstackError) as e:
            study.check_options(**kw)
        assert e.value.field == field
    with pytest.raises(NetstackError) as e:
        study.make_sampler("random", seed=-1)
    assert e.value.field == "seed"


# ------------------------------------------------------------------ remote-client options

def remote(**kw):
    p = {"client": "load1", "target_url": None, "tune_client": False, "scenario": None, "bench": {},
         "client_state_dir": None}
    p.update(kw)
    return p


def test_remote_client_url_defaults_to_the_tuned_hosts_address():
    from ansible_collections.netstack.tuning.plugins.action.sysctl_study import check_remote
    hosts = {"web1", "load1"}.__contains__
    assert check_remote(remote(), "web1", "198.18.0.11", hosts) == "http://198.18.0.11/"
    assert check_remote(remote(), "web1", "2001:db8::1", hosts) == "http://[2001:db8::1]/"
    assert check_remote(remote(target_url="https://web1:8443/x"), "web1", "a", hosts) == "https://web1:8443/x"
    # the lab's own defaults (the role passes nginx_mode: static) are no lab settings
    assert check_remote(remote(bench={"nginx_mode": "static", "duration": 3}), "web1", "a", hosts)
    assert check_remote(remote(client=None), "web1", "a", hosts) is None


@pytest.mark.parametrize("kw,field", [
    ({"client": "web1"}, "client"),
    ({"client": "nowhere"}, "client"),
    ({"scenario": "wan-lossy-keepalive"}, "scenario"),
    ({"bench": {"path": {"down": {"delay_ms": 5}}}}, "bench.path"),
    ({"bench": {"nginx_mode": "proxy"}}, "bench.nginx_mode"),
    ({"bench": {"payload_bytes": 65536}}, "bench.payload_bytes"),
    ({"target_url": "ftp://web1/"}, "target_url"),
    ({"target_url": "http://web1/\nHost: x"}, "target_url"),
    ({"client": None, "target_url": "http://web1/"}, "target_url"),
    ({"client": None, "client_state_dir": "/var/lib/netstack"}, "client_state_dir"),
])
def test_remote_client_options_name_the_field(kw, field):
    from ansible_collections.netstack.tuning.plugins.action.sysctl_study import check_remote
    with pytest.raises(NetstackError) as e:
        check_remote(remote(**kw), "web1", "198.18.0.11", {"web1", "load1"}.__contains__)
    assert e.value.field == field, str(e.value)
