"""Fixtures for the traffic collector (capability 5) integration tests.

Run as root with Debian's python (the one that sees bcc):

    /usr/bin/python3 -m pytest tests/integration/traffic -q

Every test gets its own lab (two namespaces and a veth pair, ``talib.Lab``) and its own
collector instances (pins /sys/fs/bpf/netstack/tatest-<pid>-<n>), all removed in
finalizers, also on failure.  The session reaps what a killed earlier run left
(namespaces and pins of dead pids) and checks at the end that nothing of its own is left.
"""

import itertools
import os
import re
import shutil
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))), "collections"))

import talib  # noqa: E402
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "support"))
from machine_headers import headers  # noqa: E402,F401  # pylint: disable=unused-import
from talib import bpf, nsutil, trafficcollect  # noqa: E402

_counter = itertools.count()
_PIN_RE = re.compile(r"\A%s-(\d+)-(\d+|loss|agent)\Z" % talib.PREFIX)  # what the tests pin


def _pins(pid=None):
    try:
        names = os.listdir(bpf.PIN_ROOT)
    except OSError:
        return []
    return sorted(n for n in names if _PIN_RE.match(n) and (pid is None or int(_PIN_RE.match(n).group(1)) == pid))


def _netns(pid):
    try:
        names = os.listdir(nsutil.NETNS_DIR)
    except OSError:
        return []
    return sorted(n for n in names if n.startswith("%s-%d-" % (talib.PREFIX, pid)))


@pytest.fixture(scope="session")
def session(headers):
    if os.geteuid() != 0:
        pytest.fail("these tests need root (BPF programs, network namespaces)")
    try:
        import bcc  # noqa: F401
    except ImportError:
        pytest.fail("bcc is not importable: run with /usr/bin/python3 (Debian's python3-bpfcc)")
    if trafficcollect.default_source() is None:
        pytest.fail("bpf/traffic.bpf.c not found next to the engine")
    tmp = tempfile.mkdtemp(prefix="%s-%d-" % (talib.PREFIX, os.getpid()))
    state_dir = os.path.join(tmp, "state")
    # What a killed run left: its namespaces, its pins, its scratch directory.
    nsutil.reap_stale_netns(talib.PREFIX, talib.IP)
    for name in _pins():
        if not nsutil.pid_alive(int(_PIN_RE.match(name).group(1))):
            bpf.Engine(state_dir=state_dir).absent(name)
    base = os.path.dirname(tmp)
    for d in os.listdir(base):
        m = re.match(r"\A%s-(\d+)-\w+\Z" % talib.PREFIX, d)
        if m and int(m.group(1)) != os.getpid() and not nsutil.pid_alive(int(m.group(1))):
            shutil.rmtree(os.path.join(base, d), ignore_errors=True)
    mounted_before = bpf.bpffs_mounted()
    yield {"tmp": tmp, "state_dir": state_dir}
    problems = []
    left = _pins(os.getpid())
    if left:
        problems.append("pins left under %s: %s" % (bpf.PIN_ROOT, left))
    ns_left = _netns(os.getpid())
    if ns_left:
        problems.append("network namespaces left: %s" % ns_left)
    eng = bpf.Engine(state_dir=state_dir)
    eng.maybe_umount_bpffs("tatest-session", [])
    if bpf.bpffs_mounted() and not mounted_before and not os.listdir(bpf.BPFFS):
        problems.append("bpffs left mounted")
    shutil.rmtree(tmp, ignore_errors=True)
    assert not problems, "; ".join(problems)


@pytest.fixture(autouse=True)
def _session_guard(session):
    yield


@pytest.fixture
def lab(request):
    lb = talib.Lab()
    request.addfinalizer(lb.close)
    return lb


@pytest.fixture
def scratch(session, request):
    d = tempfile.mkdtemp(prefix="t-", dir=session["tmp"])
    request.addfinalizer(lambda: shutil.rmtree(d, ignore_errors=True))
    return d


@pytest.fixture
def make_collector(session, request):
    """Factory: a Collector on the lab's server end (not yet present); every name it hands
    out is removed (absent) in a finalizer."""
    names = []

    def make(lab, name=None, **kw):
        if name is None:
            name = "%s-%d-%d" % (talib.PREFIX, os.getpid(), next(_counter))
            names.append(name)
        kw.setdefault("interfaces", [talib.SRV_IF])
        kw.setdefault("state_dir", session["state_dir"])
        kw.setdefault("link_prefix", "lab")
        return trafficcollect.Collector(name=name, netns=lab.srv, **kw)

    def fin():
        errors = []
        for n in names:
            try:
                trafficcollect.Collector(name=n, state_dir=session["state_dir"]).absent()
            except Exception as e:  # noqa: BLE001 - every instance is removed, then reported
                errors.append("%s: %s" % (n, e))
        assert not errors, "absent failed: %s" % errors
    request.addfinalizer(fin)
    return make
