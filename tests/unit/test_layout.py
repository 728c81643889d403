"""The engine's layout keeps its promises (docs/architecture.md):

* each module ships only the engine packages it uses (what Ansible's AnsiballZ builder puts in
  the module's zip, computed by Ansible itself);
* netstack-agent imports the controller of a capability only when its config has that
  capability's section (agent/registry.py);
* the evaluation tooling (tools/) is never part of what a host receives.
"""
import glob
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COLLECTIONS = os.path.join(ROOT, "collections")
PKG = "ansible_collections.netstack.tuning.plugins.module_utils."


FINDER = """
import datetime, glob, io, json, os, sys, zipfile
collections, root = sys.argv[1], sys.argv[2]
os.environ["ANSIBLE_COLLECTIONS_PATH"] = collections
from ansible.plugins.loader import init_plugin_loader
init_plugin_loader([collections])
from ansible._internal._ansiballz import _builder
from ansible.executor import module_common
out = {}
for path in sorted(glob.glob(os.path.join(root, "plugins", "modules", "*.py"))):
    name = os.path.basename(path)[:-3]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        with open(path, "rb") as f:
            module_common.recursive_finder(name, "ansible_collections.netstack.tuning.plugins.modules." + name, f.read(),
                                           zf, datetime.datetime.now(datetime.timezone.utc),
                                           _builder.ExtensionManager.create(task_vars={}))
    with zipfile.ZipFile(buf) as zf:
        out[name] = sorted(n.split("plugins/module_utils/", 1)[1] for n in zf.namelist()
                           if "netstack/tuning/plugins/module_utils/" in n and not n.endswith("__init__.py"))
print(json.dumps(out))
"""
_SHIPPED = {}


def shipped(module):
    """The engine files (relative to plugins/module_utils) Ansible's own AnsiballZ builder packs
    with ``module`` (run in a fresh interpreter: the builder needs Ansible's collection loader,
    which these tests' plain sys.path import of the checkout does not install)."""
    if not _SHIPPED:
        out = subprocess.run([sys.executable, "-c", FINDER, COLLECTIONS, ROOT], capture_output=True, text=True,
                             timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
        _SHIPPED.update(json.loads(out.stdout.strip().splitlines()[-1]))
    return _SHIPPED[module]


# module -> engine packages it must not carry (the ones it has no use for)
NOT_SHIPPED = {
    "cpu_partition": ["shm_path/", "traffic/", "tuning/", "bpf/", "agent/daemon.py", "agent/config.py"],
    "shm_agent": ["amp/", "traffic/", "tuning/", "agent/daemon.py", "agent/config.py"],
    "traffic_profile": ["amp/", "shm_path/", "tuning/", "agent/daemon.py", "agent/config.py"],
    "tcp_policy": ["amp/", "shm_path/", "traffic/", "tuning/", "agent/"],
    "sysctl_set": ["amp/", "shm_path/", "traffic/", "tuning/", "bpf/", "agent/"],
    "netstack_journal": ["amp/", "shm_path/", "traffic/", "tuning/", "bpf/", "agent/"],
    "http_bench": ["amp/", "shm_path/", "traffic/", "bpf/", "agent/", "core/journal.py"],
}


@pytest.mark.parametrize("module", sorted(NOT_SHIPPED))
def test_a_module_ships_only_the_engine_it_uses(module):
    files = shipped(module)
    assert "core/common.py" in files, files  # the finder did find the engine
    extra = [f for f in files for bad in NOT_SHIPPED[module] if f.startswith(bad)]
    assert not extra, "%s ships %s" % (module, extra)


def test_every_module_ships_at_most_its_share():
    """No module ships most of the engine (before the layout, traffic_profile shipped 22 of 36
    files and cpu_partition 16)."""
    every = [os.path.relpath(p, os.path.join(ROOT, "plugins", "module_utils"))
             for p in glob.glob(os.path.join(ROOT, "plugins", "module_utils", "*", "*.py"))
             if not p.endswith("__init__.py")]
    for path in sorted(glob.glob(os.path.join(ROOT, "plugins", "modules", "*.py"))):
        module = os.path.basename(path)[:-3]
        n = len(shipped(module))
        assert n <= len(every) // 2, "%s ships %d of %d engine files" % (module, n, len(every))


def _imported_by_agent(cfg, tmp_path):
    """The engine modules a process has imported after loading ``cfg`` and building the
    agent (its controllers made, nothing run)."""
    (tmp_path / "agent.json").write_text(json.dumps(cfg))
    code = """
import json, sys
sys.path.insert(0, %r)
from ansible_collections.netstack.tuning.plugins.module_utils.agent import daemon
a = daemon.Agent(%r, None, pidfile=%r, status=%r)
print(json.dumps({"controllers": list(a.controllers),
                  "modules": sorted(m for m in sys.modules if m.startswith(%r))}))
""" % (COLLECTIONS, str(tmp_path / "agent.json"), str(tmp_path / "agent.pid"), str(tmp_path / "status.json"), PKG)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout.strip().splitlines()[-1])
    return res["controllers"], [m[len(PKG):] for m in res["modules"]]


def test_the_agent_imports_only_the_capabilities_its_config_names(tmp_path):
    amp = {"amp": {"state": "present", "partition": {"name": "amp", "net_cpus": 1, "interfaces": ["lo"],
                                                     "app_cgroups": ["apps.slice"]}}}
    controllers, mods = _imported_by_agent(dict(amp, log=None), tmp_path)
    assert controllers == ["journal", "amp"]
    assert "amp.controller" in mods
    assert not [m for m in mods if m.startswith(("shm_path", "traffic", "tuning", "zerocopy", "tcp_tuning", "bpf"))], mods


def test_an_agent_with_no_sections_runs_the_journal_watch_only(tmp_path):
    controllers, mods = _imported_by_agent({"log": None}, tmp_path)
    assert controllers == ["journal"]
    assert not [m for m in mods if m.startswith(("shm_path", "traffic", "amp", "tuning", "bpf"))], mods


def test_an_unknown_section_is_refused_naming_it():
    from ansible_collections.netstack.tuning.plugins.module_utils.agent import config
    from ansible_collections.netstack.tuning.plugins.module_utils.core.common import NetstackError
    with pytest.raises(NetstackError) as e:
        config.validate({"shmm": {"state": "present"}}, origin="agent.d/shmm.json")
    assert e.value.field == "shmm" and "agent.d/shmm.json" in str(e.value)


def test_the_registry_names_classes_that_exist_with_the_controller_interface():
    from ansible_collections.netstack.tuning.plugins.module_utils.agent import registry
    for name, _where in registry.CONTROLLERS:
        cls = registry.controller(name)
        for attr in ("schema", "check", "reconcile", "metrics"):
            assert callable(getattr(cls, attr, None)), (name, attr)
        assert cls.section == name
        if name not in registry.ALWAYS:
            assert cls.schema()["type"] == "object", name


def test_the_evaluation_tooling_is_not_in_the_engine():
    assert not glob.glob(os.path.join(ROOT, "plugins", "module_utils", "**", "trafficgen.py"), recursive=True)
    for module in ("traffic_profile",):
        assert not [f for f in shipped(module) if "tools" in f or "trafficgen" in f or "flowencode" in f]
    from ansible_collections.netstack.tuning.plugins.module_utils.traffic import ingest
    assert not hasattr(ingest, "encode_v5")  # the encoders live in tools/flowencode.py
