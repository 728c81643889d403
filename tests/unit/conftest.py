"""Make the checkout importable as ansible_collections.netstack.tuning (see collections/)."""
import contextlib
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "collections"))


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
