"""Kernel headers for bcc on THIS machine, for the test suites that compile BPF programs in
the test process itself (tests/integration/shm, tests/integration/traffic) or on lab hosts
sharing this machine's filesystem (tests/lab).

Where the running kernel has headers of its own nothing is made.  Where it has none (this
Firecracker kernel has no headers package), bcc_runtime's documented fallback is applied
once for the test session through tests/lab/headers.yml and removed afterwards, so the
machine is left as it was found.  Usable from the virtualenv's python and from Debian's
/usr/bin/python3 alike: ansible-playbook is taken from the repository's .venv.
"""
import contextlib
import json
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent.parent
PLAYBOOK = REPO / "tests" / "lab" / "headers.yml"
# One journal directory per test process, named by its PID: a process killed in the middle
# of its session (a CI timeout, an ended session) leaves the fallback links behind, and
# recover() undoes them from the journal before the next `make test` snapshots the machine.
STATE_ROOT = Path("/run/netstack-test-headers")


def present():
    """True when bcc can find headers for the running kernel."""
    return Path("/lib/modules", platform.release(), "build/include/generated/uapi/linux/version.h").exists()


def _ansible_playbook():
    venv = REPO / ".venv" / "bin" / "ansible-playbook"
    if venv.exists():
        return str(venv)
    found = shutil.which("ansible-playbook")
    if not found:
        raise RuntimeError("ansible-playbook not found (run `make setup` for the .venv)")
    return found


def apply(state, state_dir):
    """bcc_runtime's headers fallback on this machine, present or absent."""
    exe = _ansible_playbook()
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
               PATH=os.path.dirname(exe) + os.pathsep + os.environ.get("PATH", ""))
    r = subprocess.run([exe, "-i", "localhost,", str(PLAYBOOK), "-e",
                        json.dumps({"headers_state": state, "headers_state_dir": str(state_dir)})],
                       env=env, capture_output=True, text=True, cwd=str(REPO))
    if r.returncode != 0:
        raise RuntimeError("headers %s failed:\n%s" % (state, (r.stdout + r.stderr)[-3000:]))


@contextlib.contextmanager
def for_session():
    """Headers present for the block; made (and afterwards removed) only if missing."""
    made = not present()
    STATE_ROOT.mkdir(exist_ok=True)
    state_dir = tempfile.mkdtemp(prefix="%d-" % os.getpid(), dir=str(STATE_ROOT))
    try:
        if made:
            apply("present", state_dir)
            assert present(), "bcc_runtime's headers fallback left no version.h"
        yield made
    finally:
        if made:
            apply("absent", state_dir)
        shutil.rmtree(state_dir, ignore_errors=True)
        _rmdir_if_empty(STATE_ROOT)
    if made:
        assert not present(), "the headers fallback was not removed"


def _rmdir_if_empty(path):
    try:
        path.rmdir()
    except OSError:  # absent, or another session's journal is in it
        pass


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover():
    """Undo the fallback of every test process that died inside for_session(); returns what
    was undone, one line each.  A live process's journal is left alone."""
    undone = []
    if not STATE_ROOT.is_dir():
        return undone
    for d in sorted(STATE_ROOT.iterdir()):
        pid = d.name.split("-", 1)[0]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        if any(d.iterdir()):
            apply("absent", str(d))
            undone.append("headers fallback of killed process %s (journal %s)" % (pid, d))
        shutil.rmtree(d, ignore_errors=True)
    _rmdir_if_empty(STATE_ROOT)
    return undone


@pytest.fixture(scope="session")
def headers():
    """Session fixture for suites that compile with bcc: import it into a conftest
    (``from machine_headers import headers``) and depend on it."""
    with for_session() as made:
        yield made
