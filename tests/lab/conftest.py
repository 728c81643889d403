"""Shared pieces of the lab tests: the lab script, a test lab's names, its fixture."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "support"))
import machine_headers  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
LAB = HERE / "netns_lab.sh"
PREFIX = "nslabt"
STATE = "/run/netstack-lab-pytest"


def lab(env, *args, check=True):
    return subprocess.run([str(LAB), *args], env=env, capture_output=True, text=True, check=check)


def leftovers():
    """Everything with the test lab's names that still exists on this machine."""
    left = []
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    left += [line.split()[0] for line in netns.splitlines() if line.startswith(PREFIX + "-")]
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    for line in links.splitlines():
        name = line.split(": ")[1].split("@")[0]
        if name.startswith(PREFIX):
            left.append("link " + name)
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path("/proc", pid, "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if STATE in cmdline:
            left.append("process %s: %s" % (pid, cmdline.strip()))
    if os.path.exists(STATE):
        left.append(STATE)
    return left


@pytest.fixture(scope="session", autouse=True)
def lab_headers():
    """Kernel headers for the lab hosts' bcc, made once for the session where the machine has
    none (this Firecracker kernel has no headers package), and removed after it."""
    with machine_headers.for_session():
        yield


@pytest.fixture
def lab_env(tmp_path):
    env = dict(os.environ)
    env.update(
        NETSTACK_LAB_PREFIX=PREFIX,
        NETSTACK_LAB_NET="198.19",
        NETSTACK_LAB_STATE=STATE,
        NETSTACK_LAB_INVENTORY=str(tmp_path / "hosts.yml"),
        ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
        PATH=os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", ""),
    )
    assert not leftovers(), "a previous test lab was not cleaned up: %s" % leftovers()
    yield env
    lab(env, "stop", check=False)
