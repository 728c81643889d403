# -*- coding: utf-8 -*-
# Copyright: netstack.tuning contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The sysctl study loop (controller side): Optuna proposes, a real benchmark scores.

``run_study`` is independent of Ansible: it takes ``run_trial(sysctls, prune_p99_above,
repeats)``, a callable that applies a set on the host (commit-confirmed through the
journal), benchmarks it, reverts it and returns the metrics.  The action plugin
``sysctl_study`` passes one that runs the ``sysctl_trial`` module; tests and the
optimizer benchmark pass synthetic ones.

Noise handling: each trial is scored by the median p99 over ``repeats`` runs; a trial
whose first run is far worse than the baseline is pruned; the winner is re-measured in
interleaved rounds against the kernel defaults (and tuned's network-latency profile)
and accepted only if a one-sided Mann-Whitney U test says it is better (p < alpha).
Constraints: zero errors, and throughput at least ``min_rps_ratio`` of the baseline.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import random
import re
import time

from ansible_collections.netstack.tuning.plugins.module_utils.core.common import NetstackError, strict_int, strict_number
from ansible_collections.netstack.tuning.plugins.module_utils.tuning import searchspace
from ansible_collections.netstack.tuning.plugins.module_utils.core import stats

SAMPLERS = ("tpe", "random", "cmaes", "nsga2")

# Bounds of the study's options (documented in plugins/modules/sysctl_study.py).
MAX_TRIALS = 10000
MAX_SEED = 2 ** 32 - 1           # numpy's RandomState takes seeds of 0 .. 2**32 - 1
MIN_VERIFY_ROUNDS, MAX_VERIFY_ROUNDS = 3, 1000
MAX_PRUNE_FACTOR = 1000.0
MAX_ALPHA = 0.5
MAX_HALVING = 10                 # reduction factor of successive halving: keep 1/halving of trials

# tuned's network-latency profile (tuned 2.x: profiles/network-latency/tuned.conf, which
# includes latency-performance): its [sysctl] settings, used as the hand-tuned arm.
# CPU governor / PM QoS settings of those profiles are not sysctls and are not applied.
TUNED_NETWORK_LATENCY = {
    "net.core.busy_read": "50",
    "net.core.busy_poll": "50",
    "net.ipv4.tcp_fastopen": "3",
    "kernel.numa_balancing": "0",
    "kernel.hung_task_timeout_secs": "600",
    "kernel.nmi_watchdog": "0",
    "vm.stat_interval": "10",
    "kernel.timer_migration": "0",
    "vm.dirty_ratio": "10",
    "vm.dirty_background_ratio": "3",
    "vm.swappiness": "10",
}
# tuned's network-throughput profile (tuned 2.x: profiles/network-throughput/tuned.conf, which
# includes throughput-performance): larger socket buffer ceilings and its [sysctl] settings.
TUNED_NETWORK_THROUGHPUT = {
    "net.core.rmem_max": "16777216",
    "net.core.wmem_max": "16777216",
    "net.ipv4.tcp_rmem": "4096 87380 16777216",
    "net.ipv4.tcp_wmem": "4096 16384 16777216",
    "net.ipv4.udp_mem": "3145728 4194304 16777216",
    "vm.dirty_ratio": "40",
    "vm.dirty_background_ratio": "10",
    "vm.swappiness": "10",
}


def _optuna():
    try:
        import optuna
    except ImportError:
        raise NetstackError("optuna is not installed on the controller (pip install -r requirements.txt)",
                            field="sampler")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def _constraints(trial):
    return trial.user_attrs.get("constraints", [0.0])


def _constraint_kwargs(optuna):
    # Optuna 5 reads constraints set on the trial (Trial.set_constraint); older releases
    # take a constraints_func.  Either way the values are those stored by run_study.
    return {} if hasattr(optuna.trial.Trial, "set_constraint") else {"constraints_func": _constraints}


def check_options(n_trials=20, seed=None, verify_rounds=5, min_rps_ratio=0.95, prune_factor=2.0, alpha=0.05,
                  halving=0):
    """The study's numeric options, strictly (no bool, NaN or inf; ints in ASCII digits) and
    within bounds; NetstackError naming the option (``trials`` for ``n_trials``).  Called
    before the storage is opened or anything runs on a host."""
    strict_int(n_trials, "trials", 1, MAX_TRIALS)
    if seed is not None:
        strict_int(seed, "seed", 0, MAX_SEED)
    strict_int(verify_rounds, "verify_rounds")
    if verify_rounds < MIN_VERIFY_ROUNDS:
        raise NetstackError("must be >= %d for a meaningful test" % MIN_VERIFY_ROUNDS, field="verify_rounds")
    strict_int(verify_rounds, "verify_rounds", MIN_VERIFY_ROUNDS, MAX_VERIFY_ROUNDS)
    strict_number(min_rps_ratio, "min_rps_ratio", 0, 1)
    strict_number(prune_factor, "prune_factor", 0, MAX_PRUNE_FACTOR)
    strict_number(alpha, "alpha")
    if not 0 < alpha <= MAX_ALPHA:
        raise NetstackError("must be above 0 and at most %s, got %s" % (MAX_ALPHA, alpha), field="alpha")
    strict_int(halving, "halving", 0, MAX_HALVING)
    if halving == 1:
        raise NetstackError("must be 0 (off) or 2-%d (keep the best 1/halving of first runs)" % MAX_HALVING,
                            field="halving")


def halving_threshold(study, host, halving):
    """Successive halving with one rung: a trial's first benchmark run is its short,
    low-fidelity measurement; only a trial whose first-run p99 is among the best
    1/``halving`` of the first runs so far (this host's trials, pruned ones included) goes
    on to its remaining runs.  Returns that p99 in ms, or None until ``halving`` trials
    have a first run (the rung needs something to compare with)."""
    if not halving:
        return None
    firsts = sorted(t.user_attrs["first_p99"] for t in finished(study, host) if "first_p99" in t.user_attrs)
    if len(firsts) < halving:
        return None
    return stats.quantile(firsts, 1.0 / halving)


def make_sampler(name, seed=None, multi=False):
    if seed is not None:
        strict_int(seed, "seed", 0, MAX_SEED)
    optuna = _optuna()
    if name == "tpe":
        return optuna.samplers.TPESampler(multivariate=True, seed=seed, **_constraint_kwargs(optuna))
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=8, **_constraint_kwargs(optuna))
    raise NetstackError("unknown sampler %r (one of %s)" % (name, ", ".join(SAMPLERS)), field="sampler")


def check_storage(storage):
    """Read-only check of a storage path before anything runs: its directory must be a
    directory or creatable (the nearest existing ancestor a directory), and the file, when
    there, not a directory.  URLs are left to SQLAlchemy.  NetstackError naming
    ``storage``; returns the absolute path (None for a URL)."""
    if not storage or not isinstance(storage, str):
        raise NetstackError("a storage path or SQLAlchemy URL is needed", field="storage")
    if "://" in storage:
        return None
    path = os.path.abspath(os.path.expanduser(storage))
    if os.path.isdir(path):
        raise NetstackError("%s is a directory: give the path of the SQLite file" % path, field="storage")
    d = os.path.dirname(path)
    while not os.path.lexists(d):
        d = os.path.dirname(d)
    if not os.path.isdir(d):
        raise NetstackError("%s is not a directory: cannot hold the study file %s" % (d, path), field="storage")
    return path


def storage_url(storage):
    """A path becomes an SQLite URL (its directory created); URLs (sqlite:///,
    postgresql://, ...) pass through."""
    path = check_storage(storage)
    if path is None:
        return storage
    d = os.path.dirname(path)
    if not os.path.isdir(d):
        try:
            os.makedirs(d)
        except OSError as e:
            raise NetstackError("cannot create %s: %s" % (d, e.strerror or e), field="storage")
    return "sqlite:///" + path


def redact(url):
    """A storage URL without its password, for logs and results."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def open_study(storage, study_name, sampler="tpe", objectives=("p99",), seed=None):
    optuna = _optuna()
    multi = len(objectives) > 1
    if sampler == "nsga2" and not multi:
        raise NetstackError("nsga2 is for two objectives: set objectives [p99, rps]", field="sampler")
    if sampler == "cmaes" and multi:
        raise NetstackError("cmaes optimises one objective", field="sampler")
    directions = ["minimize" if o != "rps" else "maximize" for o in objectives]
    url = storage_url(storage)
    smp = make_sampler(sampler, seed, multi)
    for attempt in range(5):
        try:
            return optuna.create_study(storage=url, study_name=study_name, directions=directions,
                                       sampler=smp, load_if_exists=True)
        except ValueError as e:  # e.g. directions differ from an existing study of that name
            raise NetstackError("cannot open study %r: %s" % (study_name, e), field="study_name")
        except Exception as e:  # pylint: disable=broad-except
            # Hosts that reach a fresh shared database at once race to create its schema
            # (PostgreSQL: duplicate type/table); the loser retries and finds it made.
            if "sqlalchemy" not in type(e).__module__ or attempt == 4:
                raise NetstackError("cannot open storage %s: %s" % (redact(url), e), field="storage")
            time.sleep(0.5 + random.random())


def fail_stale(study, host):
    """Trials of this host left RUNNING by an interrupted run become FAIL (resume)."""
    optuna = _optuna()
    stale = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if t.user_attrs.get("host") == host:
            study.tell(t.number, state=optuna.trial.TrialState.FAIL)
            stale.append(t.number)
    return stale


def finished(study, host=None):
    optuna = _optuna()
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)
    return [t for t in study.get_trials(deepcopy=False, states=states)
            if host is None or t.user_attrs.get("host") == host]


def best_trial(study, objectives):
    """Lowest p99 among complete trials that meet every constraint."""
    optuna = _optuna()
    ok = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
          if all(c <= 0 for c in _constraints(t))]
    if not ok:
        return None
    return min(ok, key=lambda t: t.values[0])


def _objective_values(metrics, objectives):
    return [metrics["rps"] if o == "rps" else metrics[o] for o in objectives]


def run_study(space, run_trial, n_trials, storage, study_name, current, sampler="tpe",
              objectives=("p99",), seed=None, host="", log=None, verify_rounds=5,
              tuned_sysctls=None, min_rps_ratio=0.95, prune_factor=2.0, alpha=0.05, warm_start=None, halving=0,
              baseline="kernel defaults"):
    """Run (or resume) a study to ``n_trials`` finished trials of this host, verify the
    winner, and return a result dict (see the sysctl_study action plugin's RETURN).

    ``warm_start`` names an earlier study in the same storage (of the same hardware class
    and scenario): its best feasible trials (up to 3) are the first trials this one runs.

    Two ways cut a trial short after its first run (``run_trial``'s ``prune_p99_above``):
    ``prune_factor`` (first-run p99 above that many times the baseline's) and ``halving``
    (successive halving: first-run p99 outside the best 1/halving so far; see
    ``halving_threshold``).  The lower of the two applies."""
    check_options(n_trials, seed, verify_rounds, min_rps_ratio, prune_factor, alpha, halving)
    halving = int(halving or 0)
    optuna = _optuna()
    log = log or (lambda msg: None)
    t_start = time.time()
    study = open_study(storage, study_name, sampler, objectives, seed)
    stale = fail_stale(study, host)
    if stale:
        log("resume: trials %s of %s were interrupted and are marked failed" % (stale, host))

    base = run_trial({}, None, None)
    if not base.get("ok"):
        raise NetstackError("baseline benchmark failed: %s" % base.get("error"), field="bench")
    bm = base["metrics"]
    log("baseline (%s): p99 %.3f ms, %.0f req/s, errors %d" % (baseline, bm["p99"], bm["rps"], bm["errors"]))
    study.set_user_attr("baseline:%s" % host, {"p99": bm["p99"], "rps": bm["rps"]})

    done = len(finished(study, host))
    if warm_start and not done:
        seeded = enqueue_warm_start(study, storage, warm_start, space, objectives)
        log("warm start from study %r: its %d best trial(s) go first" % (warm_start, len(seeded)))
    todo = max(0, n_trials - done)
    if done:
        log("resume: %d trials already finished for %s, %d to go" % (done, host, todo))
    for i in range(todo):
        trial = study.ask()
        trial.set_user_attr("host", host)
        values = searchspace.suggest(trial, space)
        sysctls = searchspace.to_sysctls(space, values, current)
        by_factor = prune_factor * bm["p99"] if prune_factor else None
        by_rung = halving_threshold(study, host, halving)
        limits = [x for x in (by_factor, by_rung) if x is not None]
        res = run_trial(sysctls, min(limits) if limits else None, None)
        n = done + i + 1
        if not res.get("ok"):
            trial.set_user_attr("error", str(res.get("error"))[:500])
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            log("trial %d/%d #%d FAILED: %s" % (n, n_trials, trial.number, res.get("error")))
            continue
        m = res["metrics"]
        trial.set_user_attr("metrics", {k: m[k] for k in ("p50", "p90", "p99", "p999", "rps", "errors")})
        trial.set_user_attr("sysctls", sysctls)
        first = (m.get("samples") or {}).get("p99") or [m["p99"]]
        trial.set_user_attr("first_p99", first[0])
        if res.get("pruned"):
            if len(objectives) == 1:
                trial.report(first[0], 1)  # the samplers rank a pruned trial by its first run
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            why = ("> %.1fx baseline" % prune_factor if by_factor is not None and first[0] > by_factor
                   else "outside the best 1/%d of first runs (> %.3f ms)" % (halving, by_rung))
            log("trial %d/%d #%d pruned: first run p99 %.3f ms %s" % (n, n_trials, trial.number, first[0], why))
            continue
        cons = [float(m["errors"]), min_rps_ratio * bm["rps"] - m["rps"]]
        trial.set_user_attr("constraints", cons)
        if hasattr(trial, "set_constraint"):
            trial.set_constraint("errors", cons[0])
            trial.set_constraint("throughput", cons[1])
        if sampler == "cmaes" and any(c > 0 for c in cons):
            study.tell(trial, state=optuna.trial.TrialState.FAIL)  # CMA-ES has no constraints
        else:
            study.tell(trial, _objective_values(m, objectives))
        best = best_trial(study, objectives)
        log("trial %d/%d #%d p99 %.3f ms, %.0f req/s%s; best so far: %s"
            % (n, n_trials, trial.number, m["p99"], m["rps"],
               " (infeasible: %s)" % ("errors" if cons[0] > 0 else "throughput < %d%% of baseline"
                                      % (min_rps_ratio * 100)) if any(c > 0 for c in cons) else "",
               "#%d p99 %.3f ms" % (best.number, best.values[0]) if best else "none"))

    best = best_trial(study, objectives)
    result = {"importances": importances(study, objectives), "history": history(study, host),
              "study_name": study_name, "storage": redact(storage_url(storage)), "sampler": sampler, "objectives": list(objectives), "host": host,
              "trials": len(finished(study, host)), "baseline": bm, "stale_failed": stale,
              "halving": halving,
              "pruned": sum(1 for t in finished(study, host) if t.state == optuna.trial.TrialState.PRUNED)}
    if best is None:
        result.update({"accepted": False, "reason": "no trial met the constraints",
                       "elapsed_s": time.time() - t_start})
        return result
    best_sysctls = best.user_attrs["sysctls"]
    result["best"] = {"trial": best.number, "params": dict(best.params), "sysctls": best_sysctls,
                      "metrics": best.user_attrs["metrics"]}
    # why each key of the space is there, for the report next to the winner's values
    result["reasons"] = {q["sysctl"]: q["reason"] for q in space["parameters"]}
    result["defaults"] = {k: current[k] for k in best_sysctls if k in current}

    # Verification: interleaved rounds, arm order rotated each round.
    arms = [("defaults", {}), ("best", best_sysctls)]
    if tuned_sysctls:
        arms.insert(1, ("tuned-network-latency", tuned_sysctls))
    samples = {arm[0]: {"p50": [], "p90": [], "p99": [], "p999": [], "rps": [], "errors": 0} for arm in arms}
    log("verify: %d interleaved rounds of %s" % (verify_rounds, ", ".join(arm[0] for arm in arms)))
    for r in range(verify_rounds):
        k = r % len(arms)
        for name, sc in arms[k:] + arms[:k]:
            res = run_trial(sc, None, 1)
            if not res.get("ok"):
                raise NetstackError("verification run of %s failed: %s" % (name, res.get("error")), field="bench")
            m = res["metrics"]
            for key in ("p50", "p90", "p99", "p999", "rps"):
                samples[name][key].append(m[key])
            samples[name]["errors"] += m["errors"]
    summary = {name: {"p50": stats.spread(s["p50"]), "p90": stats.spread(s["p90"]), "p99": stats.spread(s["p99"]),
                      "p999": stats.spread(s["p999"]), "rps": stats.spread(s["rps"]), "errors": s["errors"],
                      "p99_samples": s["p99"]}
               for name, s in samples.items()}
    vs_defaults = stats.compare(samples["best"]["p99"], samples["defaults"]["p99"], alpha)
    result["verification"] = {"rounds": verify_rounds, "arms": summary, "vs_defaults": vs_defaults}
    if tuned_sysctls:
        result["verification"]["vs_tuned"] = stats.compare(samples["best"]["p99"],
                                                           samples["tuned-network-latency"]["p99"], alpha)
        result["verification"]["tuned_vs_defaults"] = stats.compare(samples["tuned-network-latency"]["p99"],
                                                                    samples["defaults"]["p99"], alpha)
    rps_ok = summary["best"]["rps"]["median"] >= min_rps_ratio * summary["defaults"]["rps"]["median"]
    result["accepted"] = bool(vs_defaults["better"] and rps_ok and summary["best"]["errors"] == 0)
    result["reason"] = ("p99 better than defaults (p=%.4f), throughput %.0f%% of defaults"
                        % (vs_defaults["p_value"], 100.0 * summary["best"]["rps"]["median"]
                           / summary["defaults"]["rps"]["median"])
                        if result["accepted"] else
                        "not accepted: p=%.4f (alpha %.2f), throughput ok=%s, errors=%d"
                        % (vs_defaults["p_value"], alpha, rps_ok, summary["best"]["errors"]))
    log("verify: best/defaults p99 ratio %.3f (95%% CI %.3f-%.3f), p=%.4f -> %s"
        % (vs_defaults["ratio_of_medians"], vs_defaults["ratio_ci95"][0], vs_defaults["ratio_ci95"][1],
           vs_defaults["p_value"], "ACCEPTED" if result["accepted"] else "rejected"))
    result["elapsed_s"] = time.time() - t_start
    return result


def enqueue_warm_start(study, storage, source, space, objectives, k=3):
    """Queue the ``k`` best feasible trials of study ``source`` (same storage) as this
    study's first trials; only the parameters this space has, with values inside its
    ranges (a parameter out of range or missing is left to the sampler)."""
    optuna = _optuna()
    try:
        old = optuna.load_study(study_name=source, storage=storage_url(storage))
    except KeyError:
        raise NetstackError("no study named %r in the storage" % source, field="warm_start")
    ranked = sorted((t for t in old.trials if t.state == optuna.trial.TrialState.COMPLETE and t.values
                     and all(c <= 0 for c in t.user_attrs.get("constraints", [0]))),
                    key=lambda t: t.values[0])
    by_name = {p["name"]: p for p in space["parameters"]}
    queued = []
    for t in ranked[:k]:
        params = {}
        for name, value in t.params.items():
            p = by_name.get(name)
            if p is None:
                continue
            if p["type"] == "categorical" and value in p["choices"]:
                params[name] = value
            elif p["type"] != "categorical" and p["low"] <= value <= p["high"]:
                params[name] = value
        if params:
            study.enqueue_trial(params, skip_if_exists=True)
            queued.append(params)
    return queued


def importances(study, objectives):
    import warnings
    optuna = _optuna()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "too few trials" and friends: reported as {} or equal values
            return dict(optuna.importance.get_param_importances(study, target=lambda t: t.values[0]))
    except (RuntimeError, ValueError, ZeroDivisionError):
        return {}


def history(study, host=None):
    out = []
    for t in study.get_trials(deepcopy=False):
        if host is not None and t.user_attrs.get("host") != host:
            continue
        m = t.user_attrs.get("metrics") or {}
        out.append({"number": t.number, "state": t.state.name, "p99": m.get("p99"), "rps": m.get("rps"),
                    "feasible": all(c <= 0 for c in t.user_attrs.get("constraints", [0]))})
    return out


def render_report(result, title="sysctl study"):
    """One self-contained HTML page: summary, optimisation history, importances,
    verification latency distributions, and the winning sysctls against the arms
    (the page is report/templates/study.py)."""
    from ansible_collections.netstack.tuning.plugins.module_utils.report import svgplot, templating
    from ansible_collections.netstack.tuning.plugins.module_utils.report.templates import study as page

    h = result.get("history", [])
    done = [x for x in h if x["state"] == "COMPLETE" and x["p99"] is not None]
    best_so_far, pts = float("inf"), []
    for x in done:
        if x["feasible"]:
            best_so_far = min(best_so_far, x["p99"])
        pts.append((x["number"], best_so_far if best_so_far < float("inf") else None))
    charts = [svgplot.line_chart({"trial p99": [(x["number"], x["p99"]) for x in done]}, "Optimisation history", "trial",
                                 "p99 (ms)", points=True),
              svgplot.line_chart({"best feasible so far": pts}, "Best so far", "trial", "p99 (ms)"),
              svgplot.bar_chart(sorted(result.get("importances", {}).items(), key=lambda kv: -kv[1]),
                                "Parameter importances (PED-ANOVA)", "importance")]
    verification = None
    v = result.get("verification")
    if v:
        verification = {"rounds": "%d" % v["rounds"], "distribution": None, "comparisons": [],
                        "box_plot": templating.trusted(svgplot.box_plot({k: a["p99_samples"] for k, a in v["arms"].items()},
                                                                        "Verification: p99 per interleaved run", "p99 (ms)")),
                        "rows": [[str(k), "%.3f" % a["p99"]["median"], "%.3f" % a["p99"]["iqr"], "%.3f" % a["p999"]["median"],
                                  "%.0f" % a["rps"]["median"], str(a["errors"])] for k, a in v["arms"].items()]}
        nines = ((0.301, "p50"), (1.0, "p90"), (2.0, "p99"), (3.0, "p999"))
        if all(k in a for a in v["arms"].values() for _x, k in nines):
            verification["distribution"] = templating.trusted(svgplot.line_chart(
                {k: [(x, a[q]["median"]) for x, q in nines] for k, a in v["arms"].items()},
                "Latency distribution per arm (medians over the verification runs)",
                "percentile (0.3 = p50, 1 = p90, 2 = p99, 3 = p99.9)", "latency (ms)", points=True, ylog=True,
                xticks=[x for x, _q in nines]))
        for label, key in (("best vs defaults", "vs_defaults"), ("best vs tuned network-latency", "vs_tuned"),
                           ("tuned vs defaults", "tuned_vs_defaults")):
            c = v.get(key)
            if c:
                verification["comparisons"].append({
                    "label": label, "ratio": "%.3f" % c["ratio_of_medians"], "lo": "%.3f" % c["ratio_ci95"][0],
                    "hi": "%.3f" % c["ratio_ci95"][1], "test": c["test"], "p_value": "%.4f" % c["p_value"]})
    best = None
    if result.get("best"):
        reasons, base = result.get("reasons") or {}, result.get("defaults") or {}
        best = {"trial": "%d" % result["best"]["trial"],
                "rows": [(str(k), str(val), str(base.get(k, "")), str(reasons.get(k, "")))
                         for k, val in sorted(result["best"]["sysctls"].items())]}
    host = result.get("host", "")
    return templating.render(
        page.NAME, page.SOURCE, title=title, study_name=result.get("study_name", ""), storage=result.get("storage", ""),
        sampler=result.get("sampler", ""), objectives=", ".join(result.get("objectives", [])), host=host,
        trials="%d" % result.get("trials", 0), accepted=bool(result.get("accepted")), reason=result.get("reason", ""),
        client=result.get("client"), target_url=result.get("target_url", ""), tune_client=bool(result.get("tune_client")),
        changed="%s and %s" % (host, result.get("client")) if result.get("tune_client") else host,
        pruned="%d" % result["pruned"] if result.get("pruned") else None,
        halving="%d" % result["halving"] if result.get("halving") else None,
        charts=[templating.trusted(c) for c in charts], verification=verification, best=best)
