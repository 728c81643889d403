"""Shared pieces of the lab tests: the lab script, a test lab's names, its fixture."""
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

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


def headers_present():
    return Path("/lib/modules", platform.release(), "build/include/generated/uapi/linux/version.h").exists()


def machine_headers(state, state_dir):
    """bcc_runtime's headers fallback on this machine (tests/lab/headers.yml), present or absent."""
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    r = subprocess.run(["ansible-playbook", "-i", "localhost,", str(HERE / "headers.yml"), "-e",
                        json.dumps({"headers_state": state, "headers_state_dir": str(state_dir)})],
                       env=env, capture_output=True, text=True, cwd=str(REPO))
    assert r.returncode == 0, r.stdout[-3000:]


@pytest.fixture(scope="session", autouse=True)
def lab_headers(tmp_path_factory):
    """Kernel headers for the lab hosts' bcc, made once for the session where the machine has
    none (this Firecracker kernel has no headers package), and removed after it."""
    made = not headers_present()
    state_dir = tmp_path_factory.mktemp("headers-state")
    if made:
        machine_headers("present", state_dir)
        assert headers_present()
    yield
    if made:
        machine_headers("absent", state_dir)
        assert not headers_present(), "the lab's headers fallback was not removed"


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
