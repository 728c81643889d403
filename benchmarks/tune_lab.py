#!/usr/bin/env python3
"""Benchmark 7a: nginx p99 / p99.9 / req/s under kernel defaults vs tuned's
network-latency sysctls vs the study's winner, on this machine's namespace lab.

1. A study (TPE, the default 19-parameter space) runs through the same engine the
   sysctl_study action uses (trial.run: apply commit-confirmed, wrk against nginx, revert).
2. Then the three arms are measured in interleaved rounds (arm order rotated each
   round), each run a fresh lab; medians with bootstrap 95% CIs, ratios with CIs and
   one-sided Mann-Whitney p-values.  The host is left as it was (every trial and arm is
   rolled back; checked at the end).

Results: benchmarks/results/tune_lab.{json,md}.  Must run as root (namespaces).
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "collections"))

from ansible_collections.netstack.tuning.plugins.module_utils import searchspace, stats, study, trial  # noqa: E402

SPACE = os.path.join(ROOT, "roles", "sysctl_tuner", "files", "spaces", "nginx_latency.yml")


def snapshot():
    return subprocess.run(["bash", os.path.join(ROOT, "tests", "integration", "sysctl-snapshot.sh")],
                          capture_output=True, text=True, check=True).stdout


def median_ci(xs, rounds=2000, seed=0):
    import random
    rng = random.Random(seed)
    meds = sorted(stats.median([rng.choice(xs) for _ in xs]) for _ in range(rounds))
    return [stats.quantile(meds, 0.025), stats.quantile(meds, 0.975)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--trial-duration", type=int, default=3)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results"))
    args = ap.parse_args()
    before = snapshot()
    work = tempfile.mkdtemp(prefix="bench-tune-")
    state = os.path.join(work, "state")
    with open(SPACE) as f:
        space = searchspace.load(f.read())
    keys = sorted({p["sysctl"] for p in space["parameters"]} | set(study.TUNED_NETWORK_LATENCY))
    insp = trial.inspect(keys)
    tuned = {k: v for k, v in study.TUNED_NETWORK_LATENCY.items() if k not in insp["missing"]}
    bench_trial = {"duration": args.trial_duration, "warmup": 1, "repeats": 2, "connections": args.connections}

    def run_trial(sysctls, prune, repeats):
        return trial.run(sysctls, bench_trial, 300, state, prune, repeats)

    t0 = time.time()
    res = study.run_study(space, run_trial, args.trials, os.path.join(work, "s.db"), "bench", insp["current"],
                          sampler="tpe", seed=args.seed, host="bench", log=lambda m: print(m, flush=True),
                          verify_rounds=5, tuned_sysctls=tuned)
    study_s = time.time() - t0
    if "best" not in res:
        sys.exit("no feasible trial: " + res.get("reason", ""))
    arms = [("defaults", {}), ("tuned-network-latency", tuned), ("study-winner", res["best"]["sysctls"])]
    bench = {"duration": args.duration, "warmup": 1, "repeats": 1, "connections": args.connections}
    samples = {a: {"p99": [], "p999": [], "rps": [], "errors": 0} for a, _ in arms}
    for r in range(args.rounds):
        k = r % len(arms)
        for name, sc in arms[k:] + arms[:k]:
            out = trial.run(sc, bench, 300, state)
            if not out["ok"]:
                sys.exit("%s failed: %s" % (name, out.get("error")))
            for key in ("p99", "p999", "rps"):
                samples[name][key].append(out["metrics"][key])
            samples[name]["errors"] += out["metrics"]["errors"]
        print("round %d/%d: %s" % (r + 1, args.rounds, ", ".join(
            "%s p99 %.3f" % (a, samples[a]["p99"][-1]) for a, _ in arms)), flush=True)
    after = snapshot()
    summary = {}
    for a, _ in arms:
        s = samples[a]
        summary[a] = {m: dict(stats.spread(s[m]), ci95=median_ci(s[m])) for m in ("p99", "p999", "rps")}
        summary[a]["errors"] = s["errors"]
        summary[a]["samples"] = {m: s[m] for m in ("p99", "p999", "rps")}
    comps = {}
    for a, b in (("study-winner", "defaults"), ("study-winner", "tuned-network-latency"),
                 ("tuned-network-latency", "defaults")):
        comps["%s vs %s" % (a, b)] = {m: stats.compare(samples[a][m], samples[b][m]) for m in ("p99", "p999")}
        comps["%s vs %s" % (a, b)]["rps_ratio_of_medians"] = (stats.median(samples[a]["rps"])
                                                              / stats.median(samples[b]["rps"]))
    out = {"benchmark": "tune_lab", "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "host": {"kernel": platform.release(), "cpus": os.cpu_count()},
           "setup": {"trials": args.trials, "trial_bench": bench_trial, "arm_bench": bench, "rounds": args.rounds,
                     "seed": args.seed, "space": space["name"]},
           "study": {"elapsed_s": study_s, "accepted": res["accepted"], "reason": res["reason"],
                     "best": res["best"], "baseline": res["baseline"], "importances": res["importances"],
                     "verification": res.get("verification"), "history": res["history"]},
           "tuned_sysctls": tuned, "tuned_skipped": [k for k in study.TUNED_NETWORK_LATENCY if k not in tuned],
           "arms": summary, "comparisons": comps, "host_state_restored": before == after}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "tune_lab.json"), "w") as f:
        json.dump(out, f, indent=2)
    with open(os.path.join(args.out, "tune_lab.html"), "w") as f:
        f.write(study.render_report(dict(res, study_name="bench", storage="(scratch)"),
                                    "tune_lab benchmark study"))
    md = ["# tune_lab: nginx latency, kernel defaults vs tuned network-latency vs the study's winner", "",
          "%s, kernel %s, %d CPUs. Study: %d TPE trials (%ds x2 per trial), %.0f s. Then %d interleaved rounds "
          "of %d s runs per arm, %d connections, 1 KiB static payload, nginx and wrk in two namespaces over veth."
          % (out["date"], out["host"]["kernel"], out["host"]["cpus"], args.trials, args.trial_duration, study_s,
             args.rounds, args.duration, args.connections), "",
          "| arm | p99 ms median [95% CI] | p99.9 ms median [95% CI] | req/s median [95% CI] | errors |",
          "|---|---|---|---|---|"]
    for a, _ in arms:
        s = summary[a]
        md.append("| %s | %.3f [%.3f-%.3f] | %.3f [%.3f-%.3f] | %.0f [%.0f-%.0f] | %d |" % (
            a, s["p99"]["median"], s["p99"]["ci95"][0], s["p99"]["ci95"][1], s["p999"]["median"],
            s["p999"]["ci95"][0], s["p999"]["ci95"][1], s["rps"]["median"], s["rps"]["ci95"][0],
            s["rps"]["ci95"][1], s["errors"]))
    md += ["", "| comparison | p99 ratio [95% CI] | p (one-sided MWU) | p99.9 ratio | p | req/s ratio |",
           "|---|---|---|---|---|---|"]
    for k, c in comps.items():
        md.append("| %s | %.3f [%.3f-%.3f] | %.4f | %.3f | %.4f | %.3f |" % (
            k, c["p99"]["ratio_of_medians"], c["p99"]["ratio_ci95"][0], c["p99"]["ratio_ci95"][1],
            c["p99"]["p_value"], c["p999"]["ratio_of_medians"], c["p999"]["p_value"], c["rps_ratio_of_medians"]))
    md += ["", "Study verdict: %s (%s)." % ("accepted" if res["accepted"] else "not accepted", res["reason"]),
           "Winner: `%s`" % json.dumps(res["best"]["sysctls"], sort_keys=True),
           "", "Host state restored after the run: %s." % out["host_state_restored"], ""]
    with open(os.path.join(args.out, "tune_lab.md"), "w") as f:
        f.write("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
