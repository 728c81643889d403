"""The test lab's names (tests/lab), what of it exists on this machine, and its removal after
a killed run: shared by tests/lab/conftest.py and the suite (tests/support/suite.py), which
removes a lab that an interrupted run left behind before it snapshots the machine."""
import os
import subprocess
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LAB = REPO / "tests" / "lab" / "netns_lab.sh"
PREFIX = "nslabt"
NET = "198.19"
STATE = "/run/netstack-lab-pytest"


def env(inventory):
    """The lab script's environment for the test lab, its inventory written to INVENTORY."""
    return dict(os.environ, NETSTACK_LAB_PREFIX=PREFIX, NETSTACK_LAB_NET=NET, NETSTACK_LAB_STATE=STATE,
                NETSTACK_LAB_INVENTORY=str(inventory), ANSIBLE_CONFIG=str(REPO / "ansible.cfg"))


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
    left += ["cgroup " + d for d in _cgroups()]
    return left


def _cgroups():
    """The lab hosts' cgroups (inventories/lab: netstack-lab-HOST, made by the roles the lab
    tests apply and removed by their rollbacks) in the machine's cgroup v2 hierarchy."""
    found = []
    for root in ("/sys/fs/cgroup/unified", "/sys/fs/cgroup"):
        if os.path.isfile(os.path.join(root, "cgroup.procs")) and os.path.isfile(os.path.join(root, "cgroup.controllers")):
            found += sorted(str(p) for p in Path(root).glob("netstack-lab-%s-*" % PREFIX) if p.is_dir())
    return found


def _rmdir_tree(path):
    for sub in sorted((p for p in Path(path).iterdir() if p.is_dir()), reverse=True):
        _rmdir_tree(sub)
    os.rmdir(path)


def remove_stale():
    """Stop a test lab that a killed run left (the lab script's own stop) and remove its
    hosts' cgroups; returns what was there.  Only the suite calls this, before its first stage: no test lab is in use then."""
    found = leftovers()
    if found:
        with tempfile.TemporaryDirectory() as tmp:  # stop removes the inventory it is given
            subprocess.run([str(LAB), "stop"], env=env(Path(tmp, "hosts.yml")), capture_output=True, text=True,
                           check=True)
        for d in _cgroups():        # empty once the lab's processes are gone
            _rmdir_tree(d)
        still = leftovers()
        if still:
            raise RuntimeError("a test lab left by an earlier run could not be removed: %s" % still)
    return found
