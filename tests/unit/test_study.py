"""Unit tests of the tuning capability's engine: search-space schema and validation,
statistics, and the study loop.

The study-loop tests drive ``run_study`` with a *synthetic* benchmark (a deterministic
function of the sysctls plus seeded noise), because what they test is the loop: resume,
constraints, pruning, verification and sampler wiring.  The real benchmark is exercised
by tests/integration/targets/sysctl_study.
"""
import os
import random

import pytest

from ansible_collections.netstack.tuning.plugins.module_utils.tuning import searchspace, study
from ansible_collections.netstack.tuning.plugins.module_utils.core import stats
from ansible_collections.netstack.tuning.plugins.module_utils.core.common import NetstackError
from htmlcheck import IMG, IMG_SQ, SCRIPT, assert_inert

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_SPACE = os.path.join(ROOT, "roles", "sysctl_tuner", "files", "spaces", "nginx_latency.yml")


def small_space():
    return searchspace.load("""
name: t
parameters:
  - {name: net.core.somaxconn, type: int, low: 128, high: 8192, log: true, reason: r}
  - {name: rmem1, sysctl: net.ipv4.tcp_rmem, index: 1, type: int, low: 16384, high: 1048576, log: true, reason: r}
  - {name: net.ipv4.tcp_congestion_control, type: categorical, choices: [cubic, bbr], reason: r}
""")


# ------------------------------------------------------------------ search space

def test_default_space_is_valid_and_sized():
    with open(DEFAULT_SPACE) as f:
        sp = searchspace.load(f.read())
    assert 16 <= len(sp["parameters"]) <= 20
    prefixes = {p["sysctl"].split(".")[0] for p in sp["parameters"]}
    assert prefixes == {"net", "vm", "kernel"}
    assert all(len(p["reason"]) > 20 for p in sp["parameters"])
    # every sysctl of the default space exists on this kernel
    for p in sp["parameters"]:
        assert os.path.exists("/proc/sys/" + p["sysctl"].replace(".", "/")), p["sysctl"]


@pytest.mark.parametrize("yaml_text,field,says", [
    ("name: x\nparameters: []", "parameters", "should be non-empty"),
    ("name: x\nparameters:\n  - {name: a, type: int, low: 1, high: 2}", "parameters[0] (a)", "'reason' is a required"),
    ("name: x\nparameters:\n  - {name: a, type: integer, low: 1, high: 2, reason: r}", "parameters[0].type (a)", "is not one of"),
    ("name: x\nparameters:\n  - {name: a, type: int, low: 1, reason: r}", "parameters[0] (a)", "'high' is a required"),
    ("name: x\nparameters:\n  - {name: a, type: categorical, reason: r}", "parameters[0] (a)", "'choices' is a required"),
    ("name: x\nparameters:\n  - {name: a, type: int, low: 5, high: 2, reason: r}", "parameters[0] (a).low", "below high"),
    ("name: x\nparameters:\n  - {name: a, type: int, low: 0, high: 9, log: true, reason: r}", "parameters[0] (a).log", "low > 0"),
    ("name: x\nparameters:\n  - {name: a, type: int, low: 1, high: 9, step: 0.5, reason: r}", "parameters[0] (a).step", "integer"),
    ("name: x\nparameters:\n  - {name: ../x, type: int, low: 1, high: 9, reason: r}", "parameters[0] (../x).sysctl", "'..'"),
    ("name: x\nparameters:\n  - {name: a, type: int, low: 1, high: 9, reason: r, colour: red}", "parameters[0] (a)", "Additional properties"),
    ("name: x\nparameters:\n  - {name: a, type: int, low: 1, high: 9, reason: r}\n  - {name: a, type: int, low: 1, high: 9, reason: r}",
     "parameters[1] (a).name", "duplicate"),
    ("name: x\nparameters:\n  - {name: a, sysctl: net.ipv4.tcp_rmem, type: int, low: 1, high: 9, reason: r}\n"
     "  - {name: b, sysctl: net.ipv4.tcp_rmem, index: 1, type: int, low: 1, high: 9, reason: r}", "b", "whole"),
    ("[1, 2]", "space", "mapping"),
    ("name: x\nparameters: [", "space", "not valid YAML"),
])
def test_bad_spaces_name_the_field(yaml_text, field, says):
    with pytest.raises(NetstackError) as e:
        searchspace.load(yaml_text)
    assert e.value.field == field, str(e.value)
    assert says in str(e.value)


def test_to_sysctls_merges_vector_elements_over_current():
    sp = small_space()
    cur = {"net.ipv4.tcp_rmem": "4096 131072 6291456"}
    out = searchspace.to_sysctls(sp, {"net.core.somaxconn": 1024, "rmem1": 65536.4,
                                      "net.ipv4.tcp_congestion_control": "cubic"}, cur)
    assert out == {"net.core.somaxconn": "1024", "net.ipv4.tcp_rmem": "4096 65536 6291456",
                   "net.ipv4.tcp_congestion_control": "cubic"}


# ------------------------------------------------------------------ statistics

def test_mann_whitney_exact_matches_hand_computation():
    # a entirely below b: U=0, p = 1/C(6,3) = 0.05
    r = stats.mann_whitney_less([1, 2, 3], [4, 5, 6])
    assert r["u"] == 0 and r["method"] == "exact"
    assert r["p"] == pytest.approx(1 / 20.0)
    # a entirely above b: p = 1
    assert stats.mann_whitney_less([4, 5, 6], [1, 2, 3])["p"] == pytest.approx(1.0)


def test_mann_whitney_normal_approximation_against_scipy():
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = random.Random(7)
    a = [rng.gauss(1.0, 0.3) for _ in range(15)]
    b = [rng.gauss(1.3, 0.3) for _ in range(15)]
    ours = stats.mann_whitney_less(a, b)
    ref = scipy_stats.mannwhitneyu(a, b, alternative="less", method="asymptotic")
    assert ours["method"] == "normal"
    assert ours["p"] == pytest.approx(ref.pvalue, rel=1e-6)


def test_spread_and_quantile():
    s = stats.spread([5, 1, 3, 2, 4])
    assert s["median"] == 3 and s["min"] == 1 and s["max"] == 5 and s["iqr"] == 2
    assert stats.quantile([1, 2, 3, 4], 0.5) == 2.5


def test_compare_reports_ratio_and_ci():
    c = stats.compare([0.8, 0.82, 0.79, 0.81, 0.8], [1.0, 1.01, 0.99, 1.02, 1.0])
    assert c["better"] and c["p_value"] < 0.01
    assert c["ratio_of_medians"] == pytest.approx(0.8)
    assert c["ratio_ci95"][0] <= 0.8 <= c["ratio_ci95"][1]


# ------------------------------------------------------------------ study loop

class Synthetic(object):
    """p99 = 1 ms at somaxconn=4096, rmem1=262144, cubic; worse elsewhere; seeded noise.
    bbr costs throughput (infeasible), so constraints must steer away from it."""

    def __init__(self, seed=0, noise=0.01, crash_after=None):
        self.rng = random.Random(seed)
        self.noise = noise
        self.calls = []
        self.crash_after = crash_after

    def __call__(self, sysctls, prune_above, repeats):
        import math
        self.calls.append((dict(sysctls), prune_above, repeats))
        if self.crash_after is not None and len(self.calls) > self.crash_after:
            raise KeyboardInterrupt("controller died")
        som = int(sysctls.get("net.core.somaxconn", 128))
        rm = int(sysctls.get("net.ipv4.tcp_rmem", "4096 16384 6291456").split()[1])
        cc = sysctls.get("net.ipv4.tcp_congestion_control", "reno")
        p99 = 1.0 + 0.3 * (math.log(som / 4096.0)) ** 2 + 0.2 * (math.log(rm / 262144.0)) ** 2 \
            + (0.5 if cc == "reno" else 0)
        p99 *= 1 + self.rng.gauss(0, self.noise)
        rps = 10000.0 * (0.8 if cc == "bbr" else 1.0)
        m = {"p50": p99 / 3, "p90": p99 / 2, "p99": p99, "p999": p99 * 1.5, "rps": rps, "errors": 0}
        return {"ok": True, "metrics": m, "pruned": bool(prune_above and p99 > prune_above)}


CURRENT = {"net.ipv4.tcp_rmem": "4096 131072 6291456"}


@pytest.mark.parametrize("sampler", ["tpe", "random", "cmaes"])
def test_study_improves_on_synthetic_objective(tmp_path, sampler):
    bench = Synthetic()
    res = study.run_study(small_space(), bench, 25, str(tmp_path / "s.db"), "t-" + sampler, CURRENT,
                          sampler=sampler, seed=1, host="h1", verify_rounds=4,
                          tuned_sysctls={"net.ipv4.tcp_congestion_control": "cubic"})
    assert res["trials"] == 25
    assert res["best"]["sysctls"]["net.ipv4.tcp_congestion_control"] == "cubic"  # bbr is infeasible
    assert res["best"]["metrics"]["p99"] < res["baseline"]["p99"]
    assert res["accepted"] and res["verification"]["vs_defaults"]["p_value"] < 0.05
    assert set(res["verification"]["arms"]) == {"defaults", "tuned-network-latency", "best"}
    # verification ran one repeat per call, interleaved and rotated
    verify_calls = [c for c in bench.calls if c[2] == 1]
    assert len(verify_calls) == 3 * 4
    assert verify_calls[0][0] == {} and verify_calls[3][0] != {}


def test_nsga2_two_objectives(tmp_path):
    res = study.run_study(small_space(), Synthetic(), 16, str(tmp_path / "s.db"), "mo", CURRENT,
                          sampler="nsga2", objectives=("p99", "rps"), seed=3, host="h", verify_rounds=3)
    assert res["objectives"] == ["p99", "rps"] and res["trials"] == 16
    # both objectives were measured and told for every trial; the winner is the lowest p99
    # among the feasible complete trials (bbr costs 20 % of the throughput: infeasible)
    done = [h for h in res["history"] if h["state"] == "COMPLETE"]
    assert len(done) == 16 and all(h["p99"] is not None and h["rps"] is not None for h in done)
    feasible = [h for h in done if h["feasible"]]
    assert feasible and len(feasible) < len(done) or all(h["rps"] >= 9000 for h in done)
    assert res["best"]["metrics"]["p99"] == min(h["p99"] for h in feasible)
    assert res["best"]["sysctls"].get("net.ipv4.tcp_congestion_control") != "bbr"
    assert res["best"]["metrics"]["p99"] < res["baseline"]["p99"]


def test_study_resumes_after_interruption(tmp_path):
    db = str(tmp_path / "s.db")
    with pytest.raises(KeyboardInterrupt):
        study.run_study(small_space(), Synthetic(crash_after=6), 10, db, "r", CURRENT, seed=1, host="h")
    res = study.run_study(small_space(), Synthetic(), 10, db, "r", CURRENT, seed=1, host="h", verify_rounds=3)
    assert res["stale_failed"] == [5]  # the trial running when the controller died
    assert res["trials"] == 10
    states = [h["state"] for h in res["history"]]
    assert states.count("FAIL") == 1 and len(states) == 10


def test_clearly_bad_trials_are_pruned(tmp_path):
    bench = Synthetic()
    res = study.run_study(small_space(), bench, 12, str(tmp_path / "s.db"), "p", CURRENT, sampler="random",
                          seed=2, host="h", prune_factor=0.4, verify_rounds=3)
    assert "PRUNED" in [h["state"] for h in res["history"]]
    assert all(c[1] == pytest.approx(0.4 * res["baseline"]["p99"]) for c in bench.calls[1:13])
    assert "COMPLETE" in [h["state"] for h in res["history"]]


def test_successive_halving_runs_only_the_best_first_runs_to_the_end(tmp_path):
    """halving=3: once three trials have a first run, a trial goes on to its other repeats
    only if its first-run p99 is within the best third so far; the limit handed to the
    trial is that third's boundary, recomputed before every trial from the study's own
    record (pruned trials included), and the pruned trial's first run reaches Optuna."""
    bench = Synthetic()
    res = study.run_study(small_space(), bench, 15, str(tmp_path / "s.db"), "sh", CURRENT, sampler="random",
                          seed=4, host="h", prune_factor=0, verify_rounds=4, halving=3)
    trial_calls = bench.calls[1:16]
    assert [c[1] for c in trial_calls[:3]] == [None, None, None]  # the rung needs three first runs
    firsts = []
    for (sysctls, limit, _repeats), h in zip(trial_calls, res["history"]):
        if len(firsts) >= 3:
            assert limit == pytest.approx(stats.quantile(sorted(firsts), 1.0 / 3))
        firsts.append(h["p99"])
        assert (h["state"] == "PRUNED") == (limit is not None and h["p99"] > limit)
    pruned = [h for h in res["history"] if h["state"] == "PRUNED"]
    assert res["pruned"] == len(pruned) and 0 < len(pruned) < 12 and res["halving"] == 3
    assert res["best"] is not None and res["accepted"]


@pytest.mark.parametrize("halving", [1, -1, 11, 2.5, True, "three"])
def test_halving_bounds_name_the_option(tmp_path, halving):
    with pytest.raises(NetstackError) as e:
        study.run_study(small_space(), Synthetic(), 2, str(tmp_path / "s.db"), "x", CURRENT, halving=halving)
    assert e.value.field == "halving"


def test_study_names_bad_sampler_and_storage(tmp_path):
    with pytest.raises(NetstackError) as e:
        study.run_study(small_space(), Synthetic(), 1, str(tmp_path / "s.db"), "x", CURRENT, sampler="grid")
    assert e.value.field == "sampler"
    with pytest.raises(NetstackError) as e:
        study.run_study(small_space(), Synthetic(), 1, str(tmp_path / "s.db"), "x", CURRENT, sampler="nsga2")
    assert e.value.field == "sampler"


def test_warm_start_runs_the_earlier_best_first(tmp_path):
    db = str(tmp_path / "s.db")
    first = study.run_study(small_space(), Synthetic(), 12, db, "class-a", CURRENT, seed=1, host="h1", verify_rounds=3)
    bench = Synthetic()
    study.run_study(small_space(), bench, 3, db, "class-a-2", CURRENT, seed=2, host="h2", verify_rounds=3,
                    warm_start="class-a")
    # after the baseline, the new study's first trial is the earlier study's best
    assert bench.calls[1][0] == first["best"]["sysctls"]
    with pytest.raises(NetstackError) as e:
        study.run_study(small_space(), Synthetic(), 1, db, "x", CURRENT, warm_start="no-such-study")
    assert e.value.field == "warm_start"


def test_report_shows_the_winner_with_reasons_remote_client_and_pruning(tmp_path):
    """render_report on a real (synthetic-benchmark) study result: every value is escaped,
    the winner's reasons are there, and a remote-client study with halving says so."""
    sp = small_space()
    sp["parameters"][0]["reason"] = "<script>alert(1)</script> queue & backlog"
    res = study.run_study(sp, Synthetic(), 8, str(tmp_path / "s.db"), "rep", CURRENT, seed=1, host="web<1>",
                          verify_rounds=4, prune_factor=0, halving=2)
    res.update(client="load&1", target_url="http://web1/?a=1&b=2", tune_client=True)
    html = study.render_report(res, "study <x>")
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt; queue &amp; backlog" in html
    assert "<title>study &lt;x&gt;</title>" in html
    assert "Remote client <b>load&amp;1</b> requested http://web1/?a=1&amp;b=2; each trial changed " \
           "web&lt;1&gt; and load&amp;1" in html
    assert res["pruned"] > 0  # seeded: 2 of the 8 trials
    assert "%d trial(s) pruned after their first run (successive halving: the best 1/2 of first runs went on)" \
        % res["pruned"] in html
    assert "<td style='text-align:left'>&lt;script&gt;" in html
    assert html.count("<svg") >= 4 and html.rstrip().endswith("</html>")


def test_report_hostile_values_show_as_text_never_as_markup():
    """Every value of a (hand-made) study result, arm names and statistics' test names
    included, is escaped by the page's template (autoescape); the charts are still there."""
    arm = {"p99": {"median": 2.0, "iqr": 0.1}, "p999": {"median": 3.0}, "rps": {"median": 900.0}, "errors": IMG_SQ,
           "p99_samples": [1.9, 2.0, 2.1]}
    res = {"study_name": SCRIPT, "storage": IMG, "sampler": IMG_SQ, "objectives": [SCRIPT], "host": IMG, "trials": 2,
           "accepted": False, "reason": SCRIPT, "client": IMG_SQ, "target_url": IMG, "tune_client": True,
           "history": [{"number": 0, "state": "COMPLETE", "p99": 2.0, "feasible": True},
                       {"number": 1, "state": "COMPLETE", "p99": 1.5, "feasible": True}],
           "importances": {SCRIPT: 1.0},
           "verification": {"rounds": 3, "arms": {SCRIPT: arm, IMG: arm},
                            "vs_defaults": {"ratio_of_medians": 0.9, "ratio_ci95": [0.8, 1.0], "test": IMG, "p_value": 0.01}},
           "best": {"trial": 1, "sysctls": {SCRIPT: IMG}}, "defaults": {SCRIPT: IMG_SQ}, "reasons": {SCRIPT: IMG_SQ}}
    html = study.render_report(res, IMG)
    assert_inert(html, SCRIPT, IMG, IMG_SQ)
    assert "<b>Not accepted</b>: &lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert html.count("<svg") == 4 and "<h2>Best set (trial 1)</h2>" in html
