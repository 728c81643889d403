"""The impaired-path lab on this machine's kernel (no sch_netem here: the tun backend, with
the netpath C helper compiled on the spot), and one scenario end to end.

* fidelity: what the lab measures (ping RTT, iperf3 UDP loss per direction, iperf3 UDP
  rate through the bottleneck) is what was asked, within the tolerances of the issue
  (RTT 10% or 0.2 ms, loss inside a 99.9% binomial interval, rate 5%); the helper's own
  counters agree;
* the wan-lossy-keepalive scenario: its kernel weakness is real here - the same lab with
  net.ipv4.tcp_rto_min_us at 5 ms has a p99 well below the defaults' (a lost one-segment
  response waits for 2 RTT + rto_min);
* nothing is left: namespaces, the helper, the lab's temporary directory; the host's
  sysctls are as before.
"""
import os
import shutil
import subprocess
import tempfile

import pytest

from ansible_collections.netstack.tuning.plugins.module_utils.tuning import httpbench, netpath, scenario, trial
from ansible_collections.netstack.tuning.plugins.module_utils.core import journal
from ansible_collections.netstack.tuning.plugins.module_utils.core.common import which

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not all(which(t) for t in ("nginx", "wrk", "iperf3", "ping")),
                                reason="needs root, nginx, wrk, iperf3 and ping")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def snapshot():
    return subprocess.run(["bash", os.path.join(ROOT, "tests", "integration", "sysctl-snapshot.sh")],
                          capture_output=True, text=True, check=True).stdout


def lab_leftovers(prefix):
    names = [n for n in os.listdir("/var/run/netns") if n.startswith(prefix)] if os.path.isdir("/var/run/netns") else []
    procs = subprocess.run(["pgrep", "-f", "netpath --tun"], capture_output=True, text=True).stdout.split()
    return names + procs


def test_fidelity_of_the_impaired_path():
    spec = {"up": {"delay_ms": 5, "loss_pct": 1},
            "down": {"delay_ms": 10, "loss_pct": 3, "rate_mbit": 40, "queue_kbytes": 256}}
    with httpbench.Lab(netns_prefix="nsnpfid", path=spec) as lab:
        assert lab.path.backend in ("tun", "netem")
        rep = netpath.fidelity(lab, rtt_count=200, udp_seconds=3)
        stats = lab.path.helper_stats()
        tmpdir = lab.tmpdir
    assert rep["ok"], rep["items"]
    assert [i["item"] for i in rep["items"]] == ["rtt_ms", "loss_up", "loss_down", "rate_down_mbit"]
    if rep["backend"] == "tun":
        # the helper's own view: both directions saw traffic and dropped about what was asked
        for d, p in (("up", 0.01), ("down", 0.03)):
            seen, dropped = stats[d]["seen"], stats[d]["dropped"]
            lo, hi = netpath.wilson(dropped, seen)
            assert seen > 1000 and lo <= p <= hi, stats
    assert not os.path.exists(tmpdir)
    assert lab_leftovers("nsnpfid") == []


def _tail_moved(base, fast):
    """defaults: a lost response costs 2 x 20 ms + 200 ms; with rto_min 5 ms, about 45 ms."""
    return bool(base["ok"] and fast["ok"] and base["metrics"]["p99"] > 200
                and fast["metrics"]["p99"] < 0.6 * base["metrics"]["p99"])


def test_wan_scenario_rto_min_moves_the_tail():
    sc = scenario.load(scenario.shipped()["wan-lossy-keepalive"])
    bench = scenario.bench(sc, duration=3, warmup=1, repeats=1)
    before = snapshot()
    state = tempfile.mkdtemp(prefix="netstack-test-netpath-", dir="/run")
    pairs = []
    try:
        # A 3 s run has a few hundred requests, so its p99 rests on a handful of losses: a
        # burst of them can lift the fast arm's tail too (suite run 22: 154 ms against 248 ms).
        # The pair is measured again once when the first misses; with no effect of rto_min
        # (both tails at 200 ms + RTT) neither pair would pass.
        for _attempt in range(2):
            base = trial.run({}, bench, 300, state, netns_prefix="nsnpwan")
            fast = trial.run({"net.ipv4.tcp_rto_min_us": "5000"}, bench, 300, state, netns_prefix="nsnpwan")
            pairs.append((base, fast))
            if _tail_moved(base, fast):
                break
        # a watchdog whose journal vanished before it looked would re-create the dir (suite run 10)
        assert journal.wait_for_watchdogs(state), open(os.path.join(state, "watchdog.log")).read()
    finally:
        shutil.rmtree(state, ignore_errors=True)
    for base, fast in pairs:
        assert base["ok"] and fast["ok"], (base.get("error"), fast.get("error"))
        assert base["scopes"] == {} and fast["scopes"] == {"net.ipv4.tcp_rto_min_us": "netns"}
    assert any(_tail_moved(b, f) for b, f in pairs), [(b["metrics"], f["metrics"]) for b, f in pairs]
    assert snapshot() == before
    assert lab_leftovers("nsnpwan") == []
