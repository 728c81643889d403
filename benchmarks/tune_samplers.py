#!/usr/bin/env python3
"""Benchmark: TPE against random search on one real scenario, over several seeds.

For each seed and sampler, a study of ``--trials`` trials on the scenario's lab (the same
engine as sysctl_study: commit-confirmed trial, wrk against nginx through the impaired
path, rolled back), no verification.  Per study: the baseline p99 (kernel defaults), the
best feasible p99 after each trial, and the number of trials it took to reach 90% of that
study's final gain (baseline - best at the end).  Samplers interleaved per seed.

Results: benchmarks/results/tune_samplers.{json,md}.  Must run as root.
"""
import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "collections"))

from ansible_collections.netstack.tuning.plugins.module_utils.core import journal, stats  # noqa: E402
from ansible_collections.netstack.tuning.plugins.module_utils.tuning import scenario, searchspace, study, trial  # noqa: E402
from tune_scenarios import study_inputs  # noqa: E402


def trials_to(curve, baseline, share=0.9):
    """First trial (1-based) whose best-so-far reaches ``share`` of the final gain."""
    final = baseline - curve[-1]
    if final <= 0:
        return None
    for i, v in enumerate(curve):
        if baseline - v >= share * final:
            return i + 1
    return None


def one_study(space, bench, current, sampler, seed, trials, work, state):
    curve, best = [], float("inf")

    def run_trial(sysctls, prune, repeats):
        return trial.run(sysctls, bench, 300, state, prune, repeats)

    base = run_trial({}, None, None)
    if not base.get("ok"):
        raise SystemExit("baseline failed: %s" % base.get("error"))
    optuna = study._optuna()
    st = study.open_study(os.path.join(work, "%s-%d.db" % (sampler, seed)), "s", sampler, ("p99",), seed)
    for _n in range(trials):
        t = st.ask()
        sysctls = searchspace.to_sysctls(space, searchspace.suggest(t, space), current)
        r = run_trial(sysctls, None, None)
        if not r.get("ok"):
            st.tell(t, state=optuna.trial.TrialState.FAIL)
        else:
            m = r["metrics"]
            st.tell(t, m["p99"])
            if m["errors"] == 0:
                best = min(best, m["p99"])
        curve.append(best if best < float("inf") else base["metrics"]["p99"])
    return {"baseline": base["metrics"]["p99"], "curve": curve,
            "trials_to_90pct": trials_to(curve, base["metrics"]["p99"])}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenario", default="wan-lossy-keepalive")
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--trial-duration", type=int, default=3)
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results"))
    args = ap.parse_args()
    sc, space, skipped, insp = study_inputs(scenario.shipped()[args.scenario])
    bench = scenario.bench(sc, repeats=1, duration=args.trial_duration)
    work = tempfile.mkdtemp(prefix="bench-samplers-")
    state = os.path.join(work, "state")
    runs = {"tpe": [], "random": []}
    t0 = time.time()
    try:
        for seed in range(1, args.seeds + 1):
            for sampler in (("tpe", "random") if seed % 2 else ("random", "tpe")):
                r = one_study(space, bench, insp["current"], sampler, seed, args.trials, work, state)
                runs[sampler].append(dict(r, seed=seed))
                print("[%s] seed %d %s: baseline %.1f ms, best %.1f ms, 90%% of the gain at trial %s" % (
                    time.strftime("%H:%M:%S"), seed, sampler, r["baseline"], r["curve"][-1], r["trials_to_90pct"]),
                    flush=True)
    finally:
        # the scratch dir goes once every watchdog has seen its trial rolled back
        if journal.wait_for_watchdogs(state):
            shutil.rmtree(work, ignore_errors=True)
    out = {"benchmark": "tune_samplers", "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "host": {"kernel": platform.release(), "cpus": os.cpu_count()}, "scenario": args.scenario,
           "trials": args.trials, "seeds": args.seeds, "trial_duration": args.trial_duration,
           "skipped_keys": skipped, "elapsed_s": time.time() - t0, "runs": runs}
    summary = {}
    for s, rs in runs.items():
        reach = [r["trials_to_90pct"] for r in rs if r["trials_to_90pct"]]
        ratio = [r["curve"][-1] / r["baseline"] for r in rs]
        summary[s] = {"trials_to_90pct": reach, "median_trials_to_90pct": stats.median(reach) if reach else None,
                      "final_best_over_baseline": ratio, "median_final_ratio": stats.median(ratio)}
    out["summary"] = summary
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "tune_samplers.json"), "w") as f:
        json.dump(out, f, indent=2)
    md = ["# TPE vs random search on `%s`" % args.scenario, "",
          "%s, kernel %s, %d CPUs. %d seeds x %d trials per sampler (one %d s wrk run per trial, no verification), "
          "samplers interleaved per seed, %.0f s in all." % (out["date"], out["host"]["kernel"], out["host"]["cpus"],
                                                             args.seeds, args.trials, args.trial_duration,
                                                             out["elapsed_s"]), "",
          "| sampler | trials to 90% of the final gain (per seed) | median | best p99 / baseline at the end (per seed) |",
          "|---|---|---|---|"]
    for s, v in summary.items():
        md.append("| %s | %s | %s | %s |" % (s, ", ".join(str(r["trials_to_90pct"]) for r in runs[s]),
                                           v["median_trials_to_90pct"],
                                           ", ".join("%.3f" % x for x in v["final_best_over_baseline"])))
    md.append("")
    with open(os.path.join(args.out, "tune_samplers.md"), "w") as f:
        f.write("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
