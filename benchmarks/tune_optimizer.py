#!/usr/bin/env python3
"""Benchmark 7b: optimizer quality on a synthetic objective with a known optimum.

The objective lives on the *same search space* the study uses (the default
nginx-latency space, 19 parameters): each numeric parameter has a hidden optimum position
in its own (log-)scaled [0, 1] coordinate and adds w * (u - u*)^2; each categorical adds
a penalty unless it takes its hidden best choice.  The optimum is exactly 1.0.  For each
of 20 seeds (optimum positions and sampler seed both vary) we count the trials a sampler
needs until its best value is within 5% of the optimum (<= 1.05), with a budget; runs
that do not get there are reported as censored.

TPE (multivariate, the study's default) vs random search, same seeds, same budget.
Results: benchmarks/results/tune_optimizer.{json,md}.
"""
import argparse
import json
import math
import os
import random
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "collections"))

from ansible_collections.netstack.tuning.plugins.module_utils.tuning import searchspace  # noqa: E402

import optuna  # noqa: E402

SPACE = os.path.join(ROOT, "roles", "sysctl_tuner", "files", "spaces", "nginx_latency.yml")


def make_objective(space, seed):
    rng = random.Random(seed)
    hidden = {}
    for p in space["parameters"]:
        if p["type"] == "categorical":
            hidden[p["name"]] = ("cat", rng.choice(p["choices"]), 0.03)
        else:
            hidden[p["name"]] = ("num", rng.uniform(0.1, 0.9), 0.15)

    def pos(p, v):
        lo, hi = float(p["low"]), float(p["high"])
        if p.get("log"):
            return (math.log(v) - math.log(lo)) / (math.log(hi) - math.log(lo))
        return (v - lo) / (hi - lo)

    def f(values):
        total = 1.0
        for p in space["parameters"]:
            kind, target, w = hidden[p["name"]]
            v = values[p["name"]]
            total += (w if v != target else 0.0) if kind == "cat" else w * (pos(p, v) - target) ** 2
        return total

    # the optimum is 1.0 in the continuous relaxation; with integer steps it is within
    # rounding of it (a step is at most 1/20 of a range: error <= w*(1/40)^2 per parameter)
    return f


def trials_to_target(space, sampler_name, seed, budget, target):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = (optuna.samplers.TPESampler(multivariate=True, seed=seed) if sampler_name == "tpe"
               else optuna.samplers.RandomSampler(seed=seed))
    study = optuna.create_study(sampler=sampler)
    f = make_objective(space, seed)
    best = float("inf")
    for n in range(1, budget + 1):
        t = study.ask()
        v = f(searchspace.suggest(t, space))
        study.tell(t, v)
        best = min(best, v)
        if best <= target:
            return n, best
    return None, best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--budget", type=int, default=300)
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results"))
    args = ap.parse_args()
    with open(SPACE) as fh:
        space = searchspace.load(fh.read())
    target = 1.05
    res = {}
    t0 = time.time()
    for name in ("tpe", "random"):
        runs = []
        for seed in range(args.seeds):
            n, best = trials_to_target(space, name, seed, args.budget, target)
            runs.append({"seed": seed, "trials": n, "best": best})
            print("%-6s seed %2d: %s (best %.4f)" % (name, seed, n if n else "not within budget", best), flush=True)
        reached = [r["trials"] for r in runs if r["trials"]]
        # median with censored runs counted as budget+1 (a lower bound for them)
        med = statistics.median([r["trials"] or args.budget + 1 for r in runs])
        res[name] = {"runs": runs, "reached": len(reached), "median_trials": med,
                     "median_trials_censored": med > args.budget,
                     "min": min(reached) if reached else None, "max": max(reached) if reached else None,
                     "median_best_value": statistics.median(r["best"] for r in runs)}
    out = {"benchmark": "tune_optimizer", "space": space["name"], "parameters": len(space["parameters"]),
           "target": "within 5%% of the optimum (<= %.2f)" % target, "budget": args.budget, "seeds": args.seeds,
           "optuna": optuna.__version__, "elapsed_s": time.time() - t0, "samplers": res}
    if not res["tpe"]["median_trials_censored"] and res["random"]["median_trials"]:
        out["random_over_tpe_median_trials"] = res["random"]["median_trials"] / res["tpe"]["median_trials"]
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "tune_optimizer.json"), "w") as fh:
        json.dump(out, fh, indent=2)
    md = ["# tune_optimizer: trials to get within 5% of a known optimum (19-parameter space)", "",
          "Synthetic objective on the default nginx-latency space; %d seeds; budget %d trials; optuna %s."
          % (args.seeds, args.budget, optuna.__version__), "",
          "| sampler | reached target | median trials (censored at budget+1) | range when reached | median best value |",
          "|---|---|---|---|---|"]
    for name in ("tpe", "random"):
        r = res[name]
        md.append("| %s | %d/%d | %s%s | %s | %.4f |" % (
            name, r["reached"], args.seeds, r["median_trials"], " (>budget)" if r["median_trials_censored"] else "",
            "%s-%s" % (r["min"], r["max"]) if r["min"] else "-", r["median_best_value"]))
    if "random_over_tpe_median_trials" in out:
        md += ["", "Random search needs %.1fx the trials TPE needs (medians; censored random runs count "
               "as budget+1, so the ratio is a lower bound)." % out["random_over_tpe_median_trials"]]
    md.append("")
    with open(os.path.join(args.out, "tune_optimizer.md"), "w") as fh:
        fh.write("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
