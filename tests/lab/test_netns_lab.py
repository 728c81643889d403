"""The many-host lab end to end: start 3 hosts, run a playbook over real SSH, stop, and
check that nothing the lab made is left (namespaces, veths, bridge, sshd processes,
state directory, inventory).

Runs beside a default lab (if one is up) with its own prefix, network half and state dir.
Needs root, iproute2 and openssh-server.  Run: .venv/bin/python -m pytest tests/lab -q
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
LAB = HERE / "netns_lab.sh"
PREFIX = "nslabt"
STATE = "/run/netstack-lab-pytest"

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("ip") or not os.path.exists("/usr/sbin/sshd"),
    reason="needs root, iproute2 and /usr/sbin/sshd",
)


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


def test_three_hosts_over_ssh_then_nothing_left(lab_env, tmp_path):
    inventory = tmp_path / "hosts.yml"
    started = lab(lab_env, "start", "3", check=False)
    assert started.returncode == 0, started.stderr

    status = lab(lab_env, "status", check=False)
    assert status.returncode == 0, status.stdout + status.stderr
    assert "sshd answering: 3/3" in status.stdout
    assert inventory.exists()

    play = subprocess.run(
        ["ansible-playbook", "-i", str(inventory), str(HERE / "ping.yml")],
        env=lab_env, capture_output=True, text=True, cwd=str(REPO),
    )
    assert play.returncode == 0, play.stdout[-4000:] + play.stderr[-2000:]
    for i in (1, 2, 3):
        assert "%s-%03d" % (PREFIX, i) in play.stdout
    assert "unreachable=1" not in play.stdout and "failed=1" not in play.stdout

    stopped = lab(lab_env, "stop", check=False)
    assert stopped.returncode == 0, stopped.stderr
    assert leftovers() == []
    assert not inventory.exists()
