"""Shared pieces of the lab tests: the lab script, a test lab's names, its fixture."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "support"))
import machine_headers  # noqa: E402
import lab_names  # noqa: E402

LAB, PREFIX, STATE, leftovers = lab_names.LAB, lab_names.PREFIX, lab_names.STATE, lab_names.leftovers  # the tests import these from here

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent


def lab(env, *args, check=True):
    return subprocess.run([str(LAB), *args], env=env, capture_output=True, text=True, check=check)


@pytest.fixture(scope="session", autouse=True)
def lab_headers():
    """Kernel headers for the lab hosts' bcc, made once for the session where the machine has
    none (this Firecracker kernel has no headers package), and removed after it."""
    with machine_headers.for_session():
        yield


@pytest.fixture
def lab_env(tmp_path):
    env = lab_names.env(tmp_path / "hosts.yml")
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    assert not leftovers(), "a previous test lab was not cleaned up: %s" % leftovers()
    yield env
    lab(env, "stop", check=False)
