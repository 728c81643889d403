#!/usr/bin/env python3
"""Benchmark: successive halving (sysctl_study ``halving``) against full-fidelity trials.

On one scenario, for each seed, two studies with the same sampler seed, run back to back
in alternating order: every trial measured with ``--repeats`` wrk runs (full), and the
same with ``halving: N`` (a trial whose first run is outside the best 1/N of first runs
so far stops after that run).  Each study then verifies its winner against the kernel
defaults in its own interleaved rounds.

Per study: wall time of the search (baseline and trials, without verification), wrk
runs spent, trials pruned, the verified winner/defaults p99 ratio with its 95% CI and
one-sided p-value, and whether the study accepted it.  The question: does halving cut
the search time without a worse winner?

Everything runs in throwaway namespaces through the study engine (commit-confirmed
trials, rolled back).  Results: benchmarks/results/tune_halving.{json,md}.  Must run as
root.
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
from ansible_collections.netstack.tuning.plugins.module_utils.tuning import scenario, study, trial  # noqa: E402
from tune_scenarios import study_inputs  # noqa: E402


def log(msg):
    print("[%s] %s" % (time.strftime("%H:%M:%S"), msg), flush=True)


class Counted(object):
    """run_trial for run_study that counts the wrk runs and the time of the search phase
    (every call before the first verification run, which asks for exactly one repeat)."""

    def __init__(self, bench, state):
        self.bench, self.state = bench, state
        self.search_runs = self.search_s = 0
        self.verifying = False

    def __call__(self, sysctls, prune, repeats):
        self.verifying = self.verifying or repeats == 1
        t0 = time.time()
        out = trial.run(sysctls, self.bench, 300, self.state, prune, repeats)
        if not self.verifying:
            self.search_s += time.time() - t0
            self.search_runs += len(((out.get("metrics") or {}).get("samples") or {}).get("p99") or [])
        return out


def one_study(space, current, bench, seed, halving, args, work, state):
    run = Counted(bench, state)
    name = "s%d-h%d" % (seed, halving)
    res = study.run_study(space, run, args.trials, os.path.join(work, name + ".db"), name, current,
                          sampler="tpe", seed=seed, host="bench", log=lambda m: log("    " + m),
                          verify_rounds=args.verify_rounds, prune_factor=0, halving=halving)
    v = (res.get("verification") or {}).get("vs_defaults") or {}
    return {"seed": seed, "halving": halving, "search_s": run.search_s, "search_runs": run.search_runs,
            "pruned": res["pruned"], "trials": res["trials"], "accepted": res["accepted"],
            "best_trial": (res.get("best") or {}).get("trial"),
            "winner_over_defaults": v.get("ratio_of_medians"), "ci95": v.get("ratio_ci95"),
            "p_value": v.get("p_value"), "elapsed_s": res["elapsed_s"]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenario", default="wan-lossy-keepalive")
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--halving", type=int, default=3)
    ap.add_argument("--trial-duration", type=int, default=2)
    ap.add_argument("--verify-rounds", type=int, default=6)
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results"))
    args = ap.parse_args()
    sc, space, skipped, insp = study_inputs(scenario.shipped()[args.scenario])
    bench = scenario.bench(sc, repeats=args.repeats, duration=args.trial_duration)
    work = tempfile.mkdtemp(prefix="bench-halving-")
    state = os.path.join(work, "state")
    est = args.seeds * 2 * (args.trials * (args.repeats * args.trial_duration + 3)
                            + 2 * args.verify_rounds * (args.trial_duration + 3))
    log("%s: %d seeds x (full, halving %d) x %d trials of %d x %d s; about %d min"
        % (args.scenario, args.seeds, args.halving, args.trials, args.repeats, args.trial_duration, est // 60))
    runs, t0 = [], time.time()
    try:
        for seed in range(1, args.seeds + 1):
            for h in ((0, args.halving) if seed % 2 else (args.halving, 0)):
                log("  seed %d, %s" % (seed, "halving %d" % h if h else "full fidelity"))
                r = one_study(space, insp["current"], bench, seed, h, args, work, state)
                runs.append(r)
                log("  -> search %.0f s, %d wrk runs, %d pruned; winner/defaults %s, accepted %s" % (
                    r["search_s"], r["search_runs"], r["pruned"],
                    "%.3f" % r["winner_over_defaults"] if r["winner_over_defaults"] else "-", r["accepted"]))
    finally:
        # every trial was rolled back; the scratch dir goes once the watchdogs have seen it
        if journal.wait_for_watchdogs(state):
            shutil.rmtree(work, ignore_errors=True)
        else:
            log("watchdogs of %s still waiting: left in place" % state)
    out = {"benchmark": "tune_halving", "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "host": {"kernel": platform.release(), "cpus": os.cpu_count()}, "scenario": args.scenario,
           "trials": args.trials, "repeats": args.repeats, "halving": args.halving,
           "trial_duration": args.trial_duration, "verify_rounds": args.verify_rounds, "skipped_keys": skipped,
           "elapsed_s": time.time() - t0, "runs": runs}
    full = [r for r in runs if not r["halving"]]
    half = [r for r in runs if r["halving"]]
    out["summary"] = {
        "search_time_ratio": [h["search_s"] / f["search_s"] for f, h in zip(full, half)],
        "search_runs_ratio": [h["search_runs"] / f["search_runs"] for f, h in zip(full, half)],
    }
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "tune_halving.json"), "w") as f:
        json.dump(out, f, indent=2)
    md = ["# Successive halving vs full-fidelity trials on `%s`" % args.scenario, "",
          "%s, kernel %s, %d CPUs. Per seed, two TPE studies with the same seed (order alternated): %d trials of "
          "%d x %d s wrk runs each, without and with `halving: %d`; each verifies its winner against the defaults "
          "in %d interleaved rounds. %.0f s in all." % (
              out["date"], out["host"]["kernel"], out["host"]["cpus"], args.trials, args.repeats,
              args.trial_duration, args.halving, args.verify_rounds, out["elapsed_s"]), "",
          "| seed | trials | search time (s) | wrk runs | pruned | winner p99 / defaults [95% CI] | p | accepted |",
          "|---|---|---|---|---|---|---|---|"]
    for r in sorted(runs, key=lambda x: (x["seed"], x["halving"])):
        md.append("| %d | %s | %.0f | %d | %d | %s | %s | %s |" % (
            r["seed"], "halving %d" % r["halving"] if r["halving"] else "full", r["search_s"], r["search_runs"],
            r["pruned"], "%.3f [%.3f-%.3f]" % (r["winner_over_defaults"], r["ci95"][0], r["ci95"][1])
            if r["winner_over_defaults"] else "-", "%.4f" % r["p_value"] if r["p_value"] is not None else "-",
            "yes" if r["accepted"] else "no"))
    md += ["", "Search time with halving / without, per seed: %s (median %.2f); wrk runs: %s." % (
        ", ".join("%.2f" % x for x in out["summary"]["search_time_ratio"]),
        stats.median(out["summary"]["search_time_ratio"]),
        ", ".join("%.2f" % x for x in out["summary"]["search_runs_ratio"])), ""]
    with open(os.path.join(args.out, "tune_halving.md"), "w") as f:
        f.write("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
