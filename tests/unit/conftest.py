"""Make the checkout importable as ansible_collections.netstack.tuning (see collections/)."""
import os
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
