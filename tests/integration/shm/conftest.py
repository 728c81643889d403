"""Fixtures for the same-host path (capability 4) integration tests.

Run as root with Debian's python (the one that sees bcc):

    /usr/bin/python3 -m pytest tests/integration/shm -q

Every test loads its own instance (name shmtest-<pid>-<n>, pins under
/sys/fs/bpf/netstack/), always removed in a finalizer, also on failure.  The session checks
at the end that the machine is as it found it: no shmtest* pins, the BPF filesystem mounted
or not as before, no scratch directories, no child processes.
"""

import itertools
import os
import shutil
import signal
import socket
import sys
import tempfile

import pytest

import shmlib
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "support"))
from machine_headers import headers  # noqa: E402,F401  # pylint: disable=unused-import
from shmlib import bpf, shm

_counter = itertools.count()


def _our_pins():
    root = bpf.PIN_ROOT
    try:
        return sorted(e for e in os.listdir(root) if e.startswith(shmlib.NAME_PREFIX))
    except OSError:
        return []


def _foreign_pins():
    out = [e for e in os.listdir(bpf.BPFFS) if e not in ("maps.debug", "progs.debug", "netstack")]
    try:
        out += ["netstack/" + e for e in os.listdir(bpf.PIN_ROOT) if not e.startswith(shmlib.NAME_PREFIX)]
    except OSError:
        pass
    return out


def _using(path):
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if path.encode() in cmd:
            out.append(pid)
    return out


def _children():
    me = str(os.getpid())
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == me and fields[0] != "Z":
            out.append(pid)
    return out


@pytest.fixture(scope="session")
def session(headers):
    if os.geteuid() != 0:
        pytest.fail("these tests need root (BPF programs, cgroups, servers)")
    if shm.default_source() is None:
        pytest.fail("bpf/shm_path.bpf.c not found next to the engine")
    pins_before = _our_pins()
    assert not pins_before, "leftover pins from an earlier run: %s" % pins_before
    mounted_before = bpf.bpffs_mounted()
    tmp = tempfile.mkdtemp(prefix="shmtest-")
    os.chmod(tmp, 0o755)  # servers that drop privileges (postgres) need to traverse it
    # NETSTACK_SHM_SOURCE: run the suite against another version of the program (a fix
    # under test) instead of bpf/shm_path.bpf.c.
    with open(os.environ.get("NETSTACK_SHM_SOURCE") or shm.default_source()) as f:
        src = f.read()
    sess = {"tmp": tmp, "state_dir": os.path.join(tmp, "state"), "source": src,
            "mounted_before": mounted_before}
    yield sess
    problems = []
    left = _our_pins()
    if left:
        problems.append("pins left under %s: %s" % (bpf.PIN_ROOT, left))
    # bpffs: when this session mounted it and someone else's pins were there at our last
    # `absent`, the marker is still in our state dir: try once more now.
    eng = bpf.Engine(state_dir=sess["state_dir"], pin_root=bpf.PIN_ROOT)
    try:
        eng.maybe_umount_bpffs("shmtest-session", [])
    except Exception as e:  # noqa: BLE001 - reported below
        problems.append("bpffs unmount: %s" % e)
    mounted_after = bpf.bpffs_mounted()
    if mounted_after and not mounted_before:
        # Mounted now, not before: fine only while someone else's pins are there (other
        # people load their own instances concurrently and mount it themselves).
        foreign = _foreign_pins()
        if not foreign:
            problems.append("bpffs left mounted at %s with nothing but our own traces" % bpf.BPFFS)
    elif mounted_before and not mounted_after and os.path.exists(os.path.join(sess["state_dir"], "bpf",
                                                                              "bpffs.json")):
        problems.append("bpffs at %s was unmounted by this session" % bpf.BPFFS)
    kids = _children()
    if kids:
        problems.append("child processes left: %s" % kids)
    # Daemonised servers (pg_ctl's postmaster) are not our children: find them by the
    # scratch directory on their command line, kill them by pid, and report them.
    strays = _using(tmp)
    for pid in strays:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except OSError:
            pass
    if strays:
        problems.append("processes still using %s (killed): %s" % (tmp, strays))
    shutil.rmtree(tmp, ignore_errors=True)
    if os.path.exists(tmp):
        problems.append("scratch dir %s left" % tmp)
    assert not problems, "; ".join(problems)


@pytest.fixture
def tmpdir_shm(session, request):
    d = tempfile.mkdtemp(prefix="t-", dir=session["tmp"])
    os.chmod(d, 0o755)
    request.addfinalizer(lambda: shutil.rmtree(d, ignore_errors=True))
    return d


@pytest.fixture
def make_path(session, request):
    """Factory: load an instance with a policy; removed (absent) in a finalizer."""
    made = []

    def make(config=None):
        name = "%s-%d-%d" % (shmlib.NAME_PREFIX, os.getpid(), next(_counter))
        p = shm.ShmPath(name=name, state_dir=session["state_dir"])
        made.append(p)
        p.present(config or shmlib.policy(), session["source"])
        return p

    def fin():
        errors = []
        for p in made:
            try:
                p.absent()
            except Exception as e:  # noqa: BLE001 - every instance is removed, then reported
                errors.append("%s: %s" % (p.name, e))
        assert not errors, "absent failed: %s" % errors
    request.addfinalizer(fin)
    return make


@pytest.fixture
def path(make_path):
    """The path loaded with the default policy (ports 20000-24999, loopback)."""
    return make_path()


@pytest.fixture
def src(session):
    return session["source"]


@pytest.fixture
def lsock(request):
    """A listener on the path's ports (127.0.0.1); closed in a finalizer."""
    s = shmlib.listener()
    request.addfinalizer(s.close)
    return s


@pytest.fixture
def closer(request):
    """closer(sock, ...) closes the sockets after the test whatever happens."""
    socks = []

    def add(*ss):
        socks.extend(ss)
        return ss[0] if len(ss) == 1 else ss

    def fin():
        for s in socks:
            try:
                s.close()
            except OSError:
                pass
    request.addfinalizer(fin)
    return add


def pytest_report_header(config):
    return "shm path tests: ports %d-%d on the path, %d-%d off; source %s" % (
        shmlib.ON_LO, shmlib.ON_HI, shmlib.OFF_LO, shmlib.OFF_HI,
        os.environ.get("NETSTACK_SHM_SOURCE") or shm.default_source())


# Make the session fixture apply to every test, first.
@pytest.fixture(autouse=True)
def _session_guard(session):
    socket.setdefaulttimeout(shmlib.TIMEOUT)
    yield
