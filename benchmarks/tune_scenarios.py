#!/usr/bin/env python3
"""Benchmark: does the study make nginx faster where kernel settings matter?  One study
per scenario (roles/sysctl_tuner/files/scenarios/*.yml), then every arm measured side by
side.

Per scenario:

1. The lab's fidelity: the impaired path (netpath.py) is built once and measured against
   what the scenario asks (RTT, loss per direction, rate per direction).
2. A study (TPE by default) over the scenario's search space, keys this kernel lacks
   skipped and listed: short trials (one run of ``--trial-duration`` s each) for every
   candidate, trials far worse than the baseline pruned after that run, and the study's
   own interleaved verification of its best trial (``--verify-rounds``), which decides
   whether the study accepts it.
3. The arms, measured in ``--rounds`` interleaved rounds (order rotated every round), a
   fresh lab per run: kernel defaults, tuned's network-latency sysctls, tuned's
   network-throughput sysctls, the study's winner.  Medians with bootstrap 95% CIs;
   winner/defaults and winner/best-tuned p99 ratios with CIs and one-sided Mann-Whitney
   p-values; throughput ratios.  ``trials_to_best`` is the trial at which the winner was
   found.

Everything runs in throwaway namespaces; host keys of the tuned arms go through the
journal and are rolled back after every run (checked at the end).  Results:
benchmarks/results/tune_scenarios.{json,md} and tune_<scenario>.html (the study report).
Must run as root.
"""
import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "collections"))

from ansible_collections.netstack.tuning.plugins.module_utils.core import journal, stats  # noqa: E402
from ansible_collections.netstack.tuning.plugins.module_utils.tuning import httpbench, netpath, scenario, searchspace, study, trial  # noqa: E402


def snapshot():
    return subprocess.run(["bash", os.path.join(ROOT, "tests", "integration", "sysctl-snapshot.sh")],
                          capture_output=True, text=True, check=True).stdout


def median_ci(xs, rounds=2000, seed=0):
    import random
    rng = random.Random(seed)
    meds = sorted(stats.median([rng.choice(xs) for _ in xs]) for _ in range(rounds))
    return [stats.quantile(meds, 0.025), stats.quantile(meds, 0.975)]


def log(msg):
    print("[%s] %s" % (time.strftime("%H:%M:%S"), msg), flush=True)


def fidelity_of(bench):
    if not bench.get("path"):
        return None
    with httpbench.Lab(nginx_mode=bench.get("nginx_mode", "static"), payload_bytes=1024, netns_prefix="nsfid",
                       path=bench["path"]) as lab:
        return netpath.fidelity(lab)


def study_inputs(path, extra_keys=()):
    """A scenario file's scenario, its search space as this kernel offers it (keys the
    kernel lacks left out, and listed), and trial.inspect of those keys and ``extra_keys``
    (current values, missing keys).  Shared by the tuning benchmarks."""
    sc = scenario.load(path)
    space = searchspace.load(open(scenario.space_path(sc, path)).read())
    insp = trial.inspect(sorted({p["sysctl"] for p in space["parameters"]} | set(extra_keys)))
    space, skipped = searchspace.available(space, insp["missing"])
    return sc, space, skipped, insp


def run_scenario(name, path, args, state, work):
    tuned_keys = set(study.TUNED_NETWORK_LATENCY) | set(study.TUNED_NETWORK_THROUGHPUT)
    sc, space, skipped, insp = study_inputs(path, tuned_keys)
    tuned = {"tuned-network-latency": {k: v for k, v in study.TUNED_NETWORK_LATENCY.items()
                                       if k not in insp["missing"]},
             "tuned-network-throughput": {k: v for k, v in study.TUNED_NETWORK_THROUGHPUT.items()
                                          if k not in insp["missing"]}}
    arm_bench = scenario.bench(sc, repeats=1)
    trial_bench = scenario.bench(sc, repeats=1, duration=args.trial_duration or sc["load"].get("duration"))
    log("%s: %s" % (name, sc["description"]))
    if sc["path"] and netpath.impaired(sc["path"]):
        log("  path: %s" % netpath.describe(sc["path"]))
    if skipped:
        log("  keys this kernel lacks (skipped): %s" % ", ".join(skipped))
    fid = fidelity_of(arm_bench) if not args.no_fidelity else None
    if fid:
        log("  fidelity (%s backend): %s" % (fid["backend"], "; ".join(
            "%s asked %.4g measured %.4g %s" % (i["item"], i["asked"], i["measured"], "ok" if i["ok"] else "MISS")
            for i in fid["items"])))

    def run_trial(sysctls, prune, repeats):
        return trial.run(sysctls, trial_bench if repeats is None else dict(trial_bench, repeats=repeats),
                         300, state, prune, None, tune_client=args.tune_client)

    t0 = time.time()
    res = study.run_study(space, run_trial, args.trials, os.path.join(work, "%s.db" % name), name, insp["current"],
                          sampler=args.sampler, seed=args.seed, host="bench", log=lambda m: log("  " + m),
                          verify_rounds=args.verify_rounds, tuned_sysctls=None, prune_factor=args.prune_factor)
    study_s = time.time() - t0
    with open(os.path.join(args.out, "tune_%s.html" % name), "w") as f:
        f.write(study.render_report(dict(res, study_name=name, storage="(scratch)"), "study: scenario %s" % name))
    arms = [("defaults", {})] + sorted(tuned.items())
    if "best" in res:
        arms.append(("study-winner", res["best"]["sysctls"]))
    samples = {a: {"p99": [], "p50": [], "rps": [], "errors": 0} for a, _ in arms}
    for r in range(args.rounds):
        k = r % len(arms)
        for arm, sysctls in arms[k:] + arms[:k]:
            out = trial.run(sysctls, arm_bench, 300, state, tune_client=args.tune_client)
            if not out["ok"]:
                raise SystemExit("%s/%s failed: %s" % (name, arm, out.get("error")))
            for key in ("p99", "p50", "rps"):
                samples[arm][key].append(out["metrics"][key])
            samples[arm]["errors"] += out["metrics"]["errors"]
        log("  round %d/%d: %s" % (r + 1, args.rounds, ", ".join(
            "%s p99 %.1f" % (a, samples[a]["p99"][-1]) for a, _ in arms)))
    summary = {a: dict({m: dict(stats.spread(s[m]), ci95=median_ci(s[m]), samples=s[m]) for m in ("p99", "p50", "rps")},
                       errors=s["errors"]) for a, s in samples.items()}
    comps = {}
    best_tuned = min(tuned, key=lambda a: stats.median(samples[a]["p99"]))
    pairs = [(t, "defaults") for t in sorted(tuned)]
    if "best" in res:
        pairs = [("study-winner", "defaults"), ("study-winner", best_tuned)] + pairs
    for a, b in pairs:
        c = stats.compare(samples[a]["p99"], samples[b]["p99"])
        c["rps_ratio_of_medians"] = stats.median(samples[a]["rps"]) / stats.median(samples[b]["rps"])
        c["rps_ratio_ci95"] = stats.bootstrap_ratio_ci(samples[a]["rps"], samples[b]["rps"])
        comps["%s vs %s" % (a, b)] = c
    hist = res.get("history") or []
    best_n = res["best"]["trial"] if "best" in res else None
    return {"scenario": name, "version": sc["version"], "description": sc["description"], "weakness": sc["weakness"],
            "expect_gain": sc["expect_gain"], "path": netpath.describe(sc["path"]) if netpath.impaired(sc["path"])
            else "bare veth", "fidelity": fid, "space": space["name"], "parameters": len(space["parameters"]),
            "skipped_keys": skipped, "trial_bench": trial_bench, "arm_bench": arm_bench,
            "study": {"elapsed_s": study_s, "trials": res.get("trials"), "accepted": res.get("accepted"),
                      "reason": res.get("reason"), "best": res.get("best"), "baseline": res.get("baseline"),
                      "importances": res.get("importances"), "verification": res.get("verification"),
                      "winner_trial": best_n, "history_len": len(hist)},
            "tuned": tuned, "best_tuned": best_tuned, "arms": summary, "comparisons": comps}


def fmt_ci(x):
    return "%.3f [%.3f-%.3f]" % (x["ratio_of_medians"], x["ratio_ci95"][0], x["ratio_ci95"][1])


def render_md(out):
    md = ["# Tuning scenarios: defaults vs tuned profiles vs the study's winner", "",
          "%s, kernel %s, %d CPUs. `%s`. Per scenario: a %s study of %d trials (one %s s run each, pruned at "
          "%gx the baseline p99), the study's own verification (%d interleaved rounds), then %d interleaved rounds "
          "of every arm, a fresh lab per run." % (
              out["date"], out["host"]["kernel"], out["host"]["cpus"], out["command"], out["setup"]["sampler"],
              out["setup"]["trials"], out["setup"]["trial_duration"] or "scenario", out["setup"]["prune_factor"],
              out["setup"]["verify_rounds"], out["setup"]["rounds"]) + (
              " Every arm and trial also set its per-namespace keys in wrk's namespace (`--tune-client`)."
              if out["setup"].get("tune_client") else ""), "",
          "| scenario | path | study | winner p99 / defaults [95% CI], p | winner p99 / best tuned [95% CI], p "
          "| winner req/s / defaults [95% CI] | winner was trial |", "|---|---|---|---|---|---|---|"]
    for r in out["scenarios"]:
        c = r["comparisons"]
        wd, wt = c.get("study-winner vs defaults"), c.get("study-winner vs %s" % r["best_tuned"])
        md.append("| %s | %s | %s | %s | %s | %s | %s |" % (
            r["scenario"], r["path"], "accepted" if r["study"]["accepted"] else "declined",
            "%s, p=%.4f" % (fmt_ci(wd), wd["p_value"]) if wd else "-",
            "%s (%s), p=%.4f" % (fmt_ci(wt), r["best_tuned"], wt["p_value"]) if wt else "-",
            "%.3f [%.3f-%.3f]" % (wd["rps_ratio_of_medians"], wd["rps_ratio_ci95"][0], wd["rps_ratio_ci95"][1])
            if wd else "-", "%s of %s" % (r["study"]["winner_trial"] + 1 if r["study"]["winner_trial"] is not None
                                           else "-", r["study"]["trials"])))
    for r in out["scenarios"]:
        md += ["", "## %s (v%d)" % (r["scenario"], r["version"]), "", r["description"] + ".", "",
               "Weakness: " + r["weakness"], ""]
        if r["fidelity"]:
            md += ["Lab fidelity (%s backend): %s." % (r["fidelity"]["backend"], "; ".join(
                "%s asked %.4g, measured %.4g (%s)" % (i["item"], i["asked"], i["measured"], "ok" if i["ok"] else "MISS")
                for i in r["fidelity"]["items"])), ""]
        if r["skipped_keys"]:
            md += ["Keys this kernel lacks (skipped): %s." % ", ".join(r["skipped_keys"]), ""]
        md += ["| arm | p99 ms [95% CI] | p50 ms | req/s [95% CI] | errors |", "|---|---|---|---|---|"]
        for a, s in r["arms"].items():
            md.append("| %s | %.3g [%.3g-%.3g] | %.3g | %.0f [%.0f-%.0f] | %d |" % (
                a, s["p99"]["median"], s["p99"]["ci95"][0], s["p99"]["ci95"][1], s["p50"]["median"],
                s["rps"]["median"], s["rps"]["ci95"][0], s["rps"]["ci95"][1], s["errors"]))
        md += ["", "| comparison | p99 ratio [95% CI] | p (one-sided MWU) | req/s ratio |", "|---|---|---|---|"]
        for k, c in r["comparisons"].items():
            md.append("| %s | %s | %.4f | %.3f |" % (k, fmt_ci(c), c["p_value"], c["rps_ratio_of_medians"]))
        st = r["study"]
        md += ["", "Study: %s trials in %.0f s; %s (%s)." % (st["trials"], st["elapsed_s"],
                                                             "accepted" if st["accepted"] else "declined", st["reason"])]
        if st.get("best"):
            md.append("Winner (Optuna trial #%d): `%s`" % (st["best"]["trial"], json.dumps(st["best"]["sysctls"], sort_keys=True)))
    md += ["", "Host state restored after the run: %s." % out["host_state_restored"], ""]
    return "\n".join(md)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenario", action="append", help="scenario name (repeatable); default: all shipped")
    ap.add_argument("--trials", type=int, default=40)
    ap.add_argument("--trial-duration", type=int, default=None, help="seconds per trial run (default: the scenario's)")
    ap.add_argument("--verify-rounds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--prune-factor", type=float, default=1.5)
    ap.add_argument("--sampler", default="tpe")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-fidelity", action="store_true")
    ap.add_argument("--tune-client", action="store_true",
                    help="every arm and trial also sets its per-namespace keys in wrk's namespace")
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results"))
    ap.add_argument("--tag", default="", help="suffix of the result files (tune_scenarios<tag>.md)")
    args = ap.parse_args()
    shipped = scenario.shipped()
    names = args.scenario or sorted(shipped, key=lambda n: (n.startswith("control"), n))
    unknown = [n for n in names if n not in shipped]
    if unknown:
        sys.exit("unknown scenario(s) %s; shipped: %s" % (unknown, sorted(shipped)))
    os.makedirs(args.out, exist_ok=True)
    before = snapshot()
    work = tempfile.mkdtemp(prefix="bench-tune-")
    state = os.path.join(work, "state")
    results = []
    t0 = time.time()
    try:
        for n in names:
            results.append(run_scenario(n, shipped[n], args, state, work))
            # written after every scenario, so a later failure keeps what was measured
            md = write(args, results, t0, before, done=len(results) == len(names))
    finally:
        remove_scratch(work, state)
    print(md)


def remove_scratch(work, state):
    """The scratch dir (study databases, journal) goes once every watchdog has seen its
    trial rolled back; otherwise it stays, and says so."""
    if journal.wait_for_watchdogs(state):
        shutil.rmtree(work, ignore_errors=True)
    else:
        log("watchdogs of %s still waiting: %s left in place" % (state, work))


def write(args, results, t0, before, done):
    out = {"benchmark": "tune_scenarios", "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "command": " ".join(["benchmarks/tune_scenarios.py"] + sys.argv[1:]),
           "host": {"kernel": platform.release(), "cpus": os.cpu_count()},
           "setup": {"trials": args.trials, "trial_duration": args.trial_duration, "verify_rounds": args.verify_rounds,
                     "rounds": args.rounds, "prune_factor": args.prune_factor, "sampler": args.sampler,
                     "seed": args.seed, "tune_client": args.tune_client},
           "elapsed_s": time.time() - t0, "complete": done, "scenarios": results}
    out["host_state_restored"] = snapshot() == before
    with open(os.path.join(args.out, "tune_scenarios%s.json" % args.tag), "w") as f:
        json.dump(out, f, indent=2, default=str)
    md = render_md(out)
    with open(os.path.join(args.out, "tune_scenarios%s.md" % args.tag), "w") as f:
        f.write(md)
    return md


if __name__ == "__main__":
    main()
