"""Path options of every module (sysctl_set and netstack_journal have their own tests) are
checked first thing in run(): a NUL byte or a control character is a NetstackError naming
the option, not a ValueError traceback from os.stat ("embedded null byte"), and nothing is
looked up or written.

The modules' run() is called with a stand-in for AnsibleModule that has the module's own
argument_spec defaults (captured from main())."""
import importlib

import pytest

from ansible_collections.netstack.tuning.plugins.module_utils.core.common import NetstackError

# Appended to a directory inside the test's tmp_path, so that a module that does not check
# (the bug) makes its directories there and nowhere else.
BAD = [pytest.param("x\x00y", id="nul"), pytest.param("x\ny", id="newline"),
       pytest.param("\x1b[31mx", id="escape")]


@pytest.fixture(autouse=True)
def guard_the_host(monkeypatch):
    """A module that misses a check must fail here, not mount bpffs, load a program, signal
    the agent or write a sysctl on the test machine."""
    from ansible_collections.netstack.tuning.plugins.module_utils.agent import control as agent
    from ansible_collections.netstack.tuning.plugins.module_utils.bpf import program as bpf
    from ansible_collections.netstack.tuning.plugins.module_utils.core import journal

    def refuse(*a, **k):
        raise AssertionError("test guard: the module went on to change the host")

    monkeypatch.setattr(bpf, "mount_bpffs", refuse)
    monkeypatch.setattr(bpf, "compile_and_load", refuse)
    monkeypatch.setattr(agent, "notify", refuse)
    monkeypatch.setattr(journal.Journal, "apply", refuse)


class _Captured(Exception):
    pass


def argument_spec(mod, monkeypatch):
    spec = {}

    def fake(argument_spec, **kw):
        spec.update(argument_spec)
        raise _Captured()

    # Modules build NetstackModule (plugins/module_utils/core/frontend.py), an AnsibleModule.
    monkeypatch.setattr(mod, "NetstackModule" if hasattr(mod, "NetstackModule") else "AnsibleModule", fake)
    with pytest.raises(_Captured):
        mod.main()
    return spec


class FakeModule(object):
    """What the modules' run() uses of AnsibleModule."""

    def __init__(self, params, check_mode=True):
        self.params = params
        self.check_mode = check_mode
        self._diff = False
        self.warnings = []

    def warn(self, msg):
        self.warnings.append(msg)


def params_for(module_name, monkeypatch, tmp_path, **over):
    mod = importlib.import_module("ansible_collections.netstack.tuning.plugins.modules." + module_name)
    spec = argument_spec(mod, monkeypatch)
    p = dict((k, v.get("default")) for k, v in spec.items())
    for k in ("state_dir", "config_dir"):
        if k in p:
            p[k] = str(tmp_path / k)
    if "pin_root" in p:
        p["pin_root"] = str(tmp_path / "pins")
    p.update(over)
    return mod, p


# (module, option the bad value goes into, other options, field named in the error)
CASES = [
    ("bpf_program", "state_dir", {"name": "x", "state": "absent"}, "state_dir"),
    ("bpf_program", "src", {"name": "x", "remote_src": True, "programs": [{"function": "f", "type": "sock_ops",
                                                                           "cgroup": "/", "priority": 1}]}, "src"),
    ("bpf_program", "programs.0.cgroup", {"name": "x", "source_text": "int f(void *c) { return 1; }",
                                          "programs": [{"function": "f", "type": "sock_ops", "cgroup": None}]},
     "programs[0].cgroup"),
    ("bpf_program", "programs.0.map", {"name": "x", "source_text": "int f(void *c) { return 1; }",
                                       "programs": [{"function": "f", "type": "sk_msg", "map": None}]},
     "programs[0].map"),
    ("cpu_partition", "state_dir", {"state": "absent"}, "state_dir"),
    ("cpu_partition", "config_dir", {"state": "absent"}, "config_dir"),
    ("cpu_partition", "app_cgroups.0", {"interfaces": ["lo"], "app_cgroups": [None]}, "app_cgroups[0]"),
    ("shm_agent", "state_dir", {"state": "absent"}, "state_dir"),
    ("shm_agent", "config_dir", {"state": "absent"}, "config_dir"),
    ("shm_agent", "cgroup", {"policies": [{"name": "r", "ports": 6379}], "source_text": "x"}, "cgroup"),
    ("sysctl_trial", "state_dir", {"sysctls": {"net.core.no_such_key_netstack_test": 1}}, "state_dir"),
    ("tcp_policy", "state_dir", {"rules": []}, "state_dir"),
    ("tcp_policy", "pin_root", {"rules": []}, "pin_root"),
    ("traffic_profile", "state_dir", {"action": "collect", "state": "absent"}, "state_dir"),
    ("traffic_profile", "config_dir", {"action": "collect", "state": "absent"}, "config_dir"),
    ("traffic_profile", "store", {"action": "collect", "state": "absent"}, "store"),
    ("traffic_profile", "sources.0", {"action": "analyze", "sources": [None]}, "sources[0]"),
    ("traffic_profile", "output", {"action": "analyze", "sources": ["/nonexistent-netstack-dir"]}, "output"),
    ("traffic_profile", "report", {"action": "analyze", "sources": ["/nonexistent-netstack-dir"]}, "report"),
]


def _put(p, where, value):
    parts = where.split(".")
    if len(parts) == 1:
        p[where] = value
    elif len(parts) == 2:
        p[parts[0]][int(parts[1])] = value
    else:
        p[parts[0]][int(parts[1])][parts[2]] = value


@pytest.mark.parametrize("bad", BAD)
@pytest.mark.parametrize("check_mode", [True, False], ids=["check", "run"])
@pytest.mark.parametrize("name,where,over,field", CASES, ids=["%s:%s" % (c[0], c[1]) for c in CASES])
def test_bad_path_option_names_the_field(monkeypatch, tmp_path, name, where, over, field, bad, check_mode):
    over = dict((k, [dict(e) if isinstance(e, dict) else e for e in v] if isinstance(v, list) else v)
                for k, v in over.items())
    work = tmp_path / "work"
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    mod, p = params_for(name, monkeypatch, work, **over)
    _put(p, where, str(bad_dir / bad))
    with pytest.raises(NetstackError) as e:
        mod.run(FakeModule(p, check_mode=check_mode))
    assert e.value.field == field
    assert not work.exists() and list(bad_dir.iterdir()) == []  # nothing made before the check


@pytest.mark.parametrize("name", ["state_dir", "storage", "report", "space"])
@pytest.mark.parametrize("bad", BAD)
def test_sysctl_study_action_checks_its_paths(name, bad):
    from ansible_collections.netstack.tuning.plugins.action import sysctl_study
    p = dict((k, v.get("default")) for k, v in sysctl_study.ARGS.items())
    p[name] = "/nonexistent-netstack-dir/" + bad
    with pytest.raises(NetstackError) as e:
        sysctl_study.check_paths(p)
    assert e.value.field == name


def test_sysctl_study_action_accepts_urls_and_relative_paths():
    from ansible_collections.netstack.tuning.plugins.action import sysctl_study
    p = dict((k, v.get("default")) for k, v in sysctl_study.ARGS.items())
    p.update(storage="postgresql+psycopg2://user@db/studies", report="out/report.html", space="spaces/x.yml")
    sysctl_study.check_paths(p)
    p.update(space={"name": "inline", "parameters": []})
    sysctl_study.check_paths(p)


def test_netstack_facts_netns_with_nul_names_netns(monkeypatch, tmp_path):
    mod, p = params_for("netstack_facts", monkeypatch, tmp_path, netns="ns\x00x", gather_subset=["tcp"])
    with pytest.raises(NetstackError) as e:
        mod.run(FakeModule(p))
    assert e.value.field == "netns"
