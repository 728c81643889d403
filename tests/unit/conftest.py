"""Make the checkout importable as ansible_collections.netstack.tuning (see collections/)."""
import contextlib
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "collections"))


# Tests that need root's capabilities (network namespaces, mounts, kernel writes) carry the
# marker ``root``; `pytest -m "not root" tests/unit` is the hermetic rest, which runs
# anywhere.  Tests using test_engine's named-netns fixture are marked by that.  Without the
# capabilities the marked tests are skipped, saying why; CI runs them all as root.
ROOT_FIXTURES = ("netns",)
CAP_NET_ADMIN, CAP_SYS_ADMIN = 12, 21


def has_root_capabilities():
    try:
        with open("/proc/self/status") as f:
            eff = int([ln.split()[1] for ln in f if ln.startswith("CapEff:")][0], 16)
    except (OSError, IndexError, ValueError):
        return False
    return all(eff >> bit & 1 for bit in (CAP_NET_ADMIN, CAP_SYS_ADMIN))


def pytest_configure(config):
    config.addinivalue_line("markers", "root: needs root's capabilities (network namespaces, mounts, kernel writes)")


def pytest_collection_modifyitems(config, items):
    import pytest
    privileged = has_root_capabilities()
    for item in items:
        if any(f in getattr(item, "fixturenames", ()) for f in ROOT_FIXTURES):
            item.add_marker(pytest.mark.root)
        if not privileged and item.get_closest_marker("root"):
            item.add_marker(pytest.mark.skip(reason="needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN): namespaces, mounts, "
                                                    "kernel writes; run as root, or -m 'not root' for the hermetic tests"))


def pytest_terminal_summary(terminalreporter):
    """The property suite's per-module counts (tests/unit/test_properties.py)."""
    harness = sys.modules.get("modharness")
    if harness is not None and getattr(harness, "SESSION", None):
        terminalreporter.section("module properties (tests/output/properties-summary.json)")
        for name in sorted(harness.SESSION):
            terminalreporter.write_line(harness.summary_line(harness.SESSION[name]))


@contextlib.contextmanager
def throwaway_netns(name):
    """A named network namespace for the body (net.* sysctls are per namespace, so tests
    that write them never touch the host's); removed afterwards, and checked gone."""
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=True)
    assert name not in os.listdir("/var/run/netns")


def text_of(path):
    """A log file's text, or "" while it does not exist yet (tests poll logs that detached
    watchdogs and agents write just after the state change a test waits for)."""
    try:
        with open(str(path)) as f:
            return f.read()
    except FileNotFoundError:
        return ""
