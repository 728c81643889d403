#!/usr/bin/env python3
"""Benchmark: traffic insight analyzer (capability 5).

Part 1, detection, on two generators designed apart:

* trafficgen (the project's first: 4 sites, 28 days at 5 minutes, seasonality, growth, noise,
  benign bursts, holidays; 8 spikes, 4 level shifts, 4 drifts, 4 new heavy prefixes per run),
  --seeds seeds the detector was NOT tuned on (tuning used seeds 0-4; these start at 100);
* worldgen (written separately, without reading the detector: 5 sites in their own time
  zones with daylight-saving changes, piecewise office / residential / datacenter day shapes,
  a 02:00 local batch job, half-day Saturdays, local holidays, first-business-day peaks,
  per-site noise with AR(1) correlation, heavy-tailed benign bursts, growth, a 2-4 h data gap;
  labelled spikes (+50 % up), dips, 1-6 h outages, level shifts, slow drifts and new
  prefixes), 42 days per run: the seeds looked at while tuning (WORLD_TUNING_SEEDS) and
  --seeds unseen ones from 1000, reported apart; the unseen ones also with the sites' time
  zones and holidays withheld (UTC only), to show what the calendars are worth.

Precision, recall and F1 per anomaly kind (trafficgen.score, tolerance 2 bins), kind
accuracy, and attribution: the share of detected labels whose carrying dimension value is
among the anomaly's top-3 contributors.

Part 2, forecast: the same runs cut after day 21; a 7-day forecast per link at 5-minute
resolution from the first 21 days (trafficanalysis.forecast) against the seasonal-naive
forecast (the last week repeated), both scored on the actual days 22-28 (MAE, sMAPE, MASE =
MAE / naive MAE).  Runs whose forecast week holds a labelled anomaly are scored as they are.

Part 3, throughput: analyze() on 1M and 10M generated records (--repeats each), records per
second; flowfile.read() of a 1M-row native CSV (the store's format); and end to end, what a
user waits for: the CLI (`netstack-traffic analyze FILE`, a fresh process each time, reading
included) on native CSV files and flow logs of 1M and 10M records, the flow logs in a
third-party layout (start,end,srcaddr,dstaddr,srcport,dstport,protocol,packets,bytes: the
generic reader, addresses to prefixes), repeats interleaved; the figure is the records/s
the CLI itself prints.

Results: benchmarks/results/traffic.json and traffic.md.  Needs numpy (the venv).
"""
import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "collections"))
sys.path.insert(0, HERE)

from ansible_collections.netstack.tuning.plugins.module_utils.traffic import ingest as flowfile, profile as traffic, analysis as trafficanalysis  # noqa: E402
from ansible_collections.netstack.tuning.tools import trafficgen, worldgen  # noqa: E402
from figures import fmt_spread, spread  # noqa: E402

RESULTS = os.path.join(HERE, "results")
KINDS = ("spike", "level_shift", "drift", "new_prefix")
WORLD_KINDS = ("spike", "dip", "outage", "level_shift", "drift", "new_prefix")
WORLD_TUNING_SEEDS = (0, 1, 2)
WORLD_FIRST_UNSEEN = 1000
STEP = 300


def holidays(truth):
    return sorted(set(h["date"] for h in truth["holidays"]))


def world_calendars(truth):
    """The analysis options that tell the analyzer each worldgen site's zone and holidays."""
    return {"timezones": dict((lk, s["tz"]) for lk, s in truth["sites"].items()),
            "link_holidays": dict((lk, s["holidays"]) for lk, s in truth["sites"].items())}


def detection(seed, generator="trafficgen", calendars=True):
    if generator == "worldgen":
        rec, labels, truth = worldgen.generate(seed=seed)
        res = trafficanalysis.analyze(rec, world_calendars(truth) if calendars else {})
    else:
        rec, labels, truth = trafficgen.generate(seed=seed)
        res = trafficanalysis.analyze(rec, {"holidays": holidays(truth)})
    sc = trafficgen.score(labels, res["anomalies"], tolerance=2 * STEP, holidays=truth["holidays"])
    hits, detected, own = 0, 0, {}
    for lb in labels:
        over = [a for a in res["anomalies"] if a["link"] == lb["link"] and a["start"] <= lb["end"] + 2 * STEP
                and a["end"] >= lb["start"] - 2 * STEP]
        if over:
            detected += 1
            hits += any(trafficgen.attribution_hit(lb, a.get("top_contributors"), k=3) for a in over)
            lo, hi = lb["start"] - 2 * STEP, lb["end"] + 2 * STEP
            best = max(over, key=lambda a: min(a["end"], hi) - max(a["start"], lo))
            own[lb["kind"]] = own.get(lb["kind"], 0) + (best["kind"] == lb["kind"])
    sc["attribution_top3"] = hits / float(detected) if detected else None
    sc["own_kind"] = own     # detected labels whose best-overlapping detection names their kind
    sc["records"] = len(rec)
    gaps = truth.get("gaps") or []
    sc["gaps"] = len(gaps)
    sc["gaps_reported"] = sum(1 for g in gaps if any(r.get("link", g["link"]) == g["link"] and r["start"] <= g["end"]
                                                     and r["end"] >= g["start"] - STEP for r in res["gaps"]))
    sc["anomalies_in_gaps"] = sum(1 for a in res["anomalies"] for g in gaps
                                  if a["link"] == g["link"] and a["start"] <= g["end"] and a["end"] >= g["start"])
    if generator == "worldgen":
        sc["projection"] = projection_check(res, labels, truth)
    return sc


def projection_check(res, labels, truth):
    """Growth per year against worldgen's own (its sites' weekly growth): whether the 90 %
    interval holds it, apart for series with a level shift or drift lasting to the end."""
    out = {"clean": 0, "clean_held": 0, "stepped": 0, "stepped_held": 0, "stepped_named": 0, "abs_errors": []}
    for p in res["projection"]:
        if "growth_per_year" not in p:
            continue
        true = (1 + truth["sites"][p["link"]]["growth_per_week"]) ** 52 - 1
        lo, hi = p["growth_per_year_interval"]
        lasting = any(lb["link"] == p["link"] and lb["kind"] in ("level_shift", "drift") and lb["end"] >= res["end"] - 86400
                      for lb in labels)
        key = "stepped" if lasting else "clean"
        out[key] += 1
        out[key + "_held"] += lo <= true <= hi
        if lasting:
            out["stepped_named"] += "level_shift" in p or "recent_change" in p
        else:
            out["abs_errors"].append(abs(p["growth_per_year"] - true))
    return out


def forecast(seed, cut_day=21, days=7):
    rec, labels, truth = trafficgen.generate(seed=seed)
    start = int(truth["ts"][0])
    cutoff = start + cut_day * 86400
    hist, _fut, _hl, fut_labels = trafficgen.split(rec, labels, cutoff)
    bins = days * 86400 // STEP
    fc = trafficanalysis.forecast(hist, cutoff, bins, {"holidays": holidays(truth)})
    steps = len(truth["ts"])
    actual = trafficgen.link_series(rec, start, STEP, steps)
    out = {}
    c = cut_day * 86400 // STEP
    for link in truth["links"]:
        model = sum(v for (lk, _d), v in fc.items() if lk == link)
        naive = trafficgen.seasonal_naive(actual[link][:c], 7 * 86400 // STEP, bins)
        err = trafficgen.forecast_error(actual[link][c:c + bins], model, naive)
        err["anomaly_in_window"] = any(lb["link"] == link for lb in fut_labels)
        # against the generator's clean series (no noise, no anomalies): forecasting skill alone
        err["vs_clean"] = trafficgen.forecast_error(truth["clean"][link][c:c + bins], model, naive)
        err["naive_vs_clean"] = trafficgen.forecast_error(truth["clean"][link][c:c + bins], naive, naive)
        out[link] = err
    return out


def throughput(n, repeats):
    rec, _labels, truth = trafficgen.generate(seed=7, records=n)
    times = []
    for _r in range(repeats):
        t = time.perf_counter()
        trafficanalysis.analyze(rec, {"holidays": holidays(truth)})
        times.append(time.perf_counter() - t)
    return {"records": len(rec), "seconds": spread(times), "records_per_s": spread([len(rec) / t for t in times])}


def ingest(n, repeats):
    rec, _labels, _truth = trafficgen.generate(seed=8, records=n)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "store.csv")
        traffic.write_csv(path, rec)
        size = os.path.getsize(path)
        times = []
        for _r in range(repeats):
            t = time.perf_counter()
            got = flowfile.read(path)
            times.append(time.perf_counter() - t)
        assert len(got) == len(rec)
    return {"records": len(rec), "file_bytes": size, "seconds": spread(times), "records_per_s": spread([len(rec) / t for t in times])}


_PORTS = {"web": 443, "dns": 53, "ssh": 22, "mail": 25, "db": 5432, "none": 0}


def _host_in(net, h):
    """An address in network ``net`` (its address part), host number ``h``."""
    if "." in net:
        return net.rsplit(".", 1)[0] + ".%d" % h
    if ":" in net:
        return net + "%x" % h if net.endswith("::") else net
    return "192.0.2.%d" % h


def write_flow_log(path, rec, seed=9):
    """``rec`` as a third-party flow log: a random host of each record's prefix talking to a
    local address (10.0.0.0/16 is local), the port its class names, start 60 s before ts."""
    rng = np.random.default_rng(seed)
    prefixes, classes = rec.strings("prefix"), rec.strings("port_class")
    outward = rec.strings("direction") == "out"
    hosts = rng.integers(1, 255, len(rec)).tolist()
    local = ["10.0.%d.%d" % (a, b) for a, b in zip(rng.integers(0, 4, 64), rng.integers(1, 255, 64))]
    ts, proto, packets, nbytes = (rec.ints[k].tolist() for k in ("ts", "proto", "packets", "bytes"))
    with open(path, "w") as f:
        f.write("start,end,srcaddr,dstaddr,srcport,dstport,protocol,packets,bytes\n")
        for i in range(len(rec)):
            remote, here = _host_in(prefixes[i].split("/")[0], hosts[i]), local[i % 64]
            src, dst = (here, remote) if outward[i] else (remote, here)
            f.write("%d,%d,%s,%s,%d,%d,%d,%d,%d\n" % (ts[i] - 60, ts[i], src, dst, 40000 + i % 20000,
                                                      _PORTS.get(classes[i], 0), proto[i], packets[i], nbytes[i]))


_CLI_LINE = re.compile(r"(\d+) records in ([0-9.]+) s end to end, reading included: (\d+) records/s "
                       r"\(analysis alone ([0-9.]+) s")


def end_to_end(sizes, repeats):
    """The CLI on files, a fresh process per run, repeats interleaved across the files."""
    cli = os.path.join(REPO, "scripts", "netstack-traffic")
    with tempfile.TemporaryDirectory() as d:
        cases = []
        for n in sizes:
            rec, _labels, _truth = trafficgen.generate(seed=7, records=n)
            path = os.path.join(d, "store-%d.csv" % n)
            traffic.write_csv(path, rec)
            cases.append({"format": "native CSV", "path": path, "args": []})
            log = os.path.join(d, "flowlog-%d.csv" % n)
            write_flow_log(log, rec)
            cases.append({"format": "flow log CSV (generic reader)", "path": log, "args": ["--local", "10.0.0.0/16"]})
            del rec
        for c in cases:
            c.update(file_bytes=os.path.getsize(c["path"]), runs=[])
        for _r in range(repeats):
            for c in cases:
                p = subprocess.run([sys.executable, cli, "analyze"] + c["args"] + [c["path"]], stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, universal_newlines=True, check=False)
                m = _CLI_LINE.search(p.stdout)
                if p.returncode != 0 or not m:
                    raise SystemExit("netstack-traffic failed on %s: %s" % (c["path"], p.stdout[-2000:]))
                c["records"] = int(m.group(1))
                c["runs"].append({"seconds": float(m.group(2)), "records_per_s": int(m.group(3)),
                                  "analysis_seconds": float(m.group(4))})
                print("end to end, %s, %d records: %d records/s" % (c["format"], c["records"], c["runs"][-1]["records_per_s"]),
                      flush=True)
    out = []
    for c in cases:
        out.append({"format": c["format"], "records": c["records"], "file_bytes": c["file_bytes"],
                    "seconds": spread([r["seconds"] for r in c["runs"]]),
                    "analysis_seconds": spread([r["analysis_seconds"] for r in c["runs"]]),
                    "records_per_s": spread([r["records_per_s"] for r in c["runs"]])})
    return out


def run_detection(seeds, generator="trafficgen", calendars=True):
    det = []
    for s in seeds:
        det.append(detection(s, generator, calendars))
        print("%s detection seed %d%s: overall F1 %.2f" % (generator, s, "" if calendars else " (UTC only)",
                                                            det[-1]["overall"]["f1"] or 0), flush=True)
    per_kind = {}
    for k in (WORLD_KINDS if generator == "worldgen" else KINDS):
        per_kind[k] = dict((m, spread([d["per_kind"][k][m] for d in det])) for m in ("precision", "recall", "f1"))
        per_kind[k]["labels"] = sum(d["per_kind"][k]["labels"] for d in det)
        per_kind[k]["tp"] = sum(d["per_kind"][k]["tp"] for d in det)
        per_kind[k]["detections"] = sum(d["per_kind"][k]["detections"] for d in det)
        per_kind[k]["tp_detections"] = sum(d["per_kind"][k]["tp_detections"] for d in det)
        per_kind[k]["own_kind"] = sum(d["own_kind"].get(k, 0) for d in det)
    return {
        "per_kind": per_kind,
        "overall": dict((m, spread([d["overall"][m] for d in det])) for m in ("precision", "recall", "f1")),
        "false_positives": sum(d["overall"]["false_positives"] for d in det),
        "on_holiday": sum(d["overall"]["on_holiday"] for d in det),
        "kind_accuracy": spread([d["kind_accuracy"] for d in det]),
        "attribution_top3": spread([d["attribution_top3"] for d in det]),
        "gaps": sum(d["gaps"] for d in det), "gaps_reported": sum(d["gaps_reported"] for d in det),
        "anomalies_in_gaps": sum(d["anomalies_in_gaps"] for d in det),
        "generator": generator, "seeds": list(seeds), "calendars": calendars,
        "projection": dict((k, sum(d["projection"][k] for d in det)) for k in ("clean", "clean_held", "stepped", "stepped_held",
                                                                               "stepped_named"))
        if generator == "worldgen" else None,
        "growth_abs_error": spread([e for d in det for e in d["projection"]["abs_errors"]]) if generator == "worldgen" else None,
        "runs": det,
    }


def run_forecast(seeds):
    fcs = []
    for s in seeds:
        fcs.append(forecast(s))
        print("forecast seed %d: MASE %s" % (s, [round(v["mase"], 2) for v in fcs[-1].values()]), flush=True)
    flat = [v for f in fcs for v in f.values()]
    clean = [v for v in flat if not v["anomaly_in_window"]]
    return {
        "mase": spread([v["mase"] for v in flat]), "mase_clean_windows": spread([v["mase"] for v in clean]),
        "smape": spread([v["smape"] for v in flat]),
        "mase_vs_clean": spread([v["vs_clean"]["mase"] for v in flat]),
        "smape_vs_clean": spread([v["vs_clean"]["smape"] for v in flat]),
        "naive_smape_vs_clean": spread([v["naive_vs_clean"]["smape"] for v in flat]),
        "model_better_share": sum(1 for v in flat if v["mase"] is not None and v["mase"] < 1) / float(len(flat)),
        "links": len(flat), "clean_links": len(clean), "runs": fcs,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--first-seed", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sizes", default="1000000,10000000")
    ap.add_argument("--world-seeds", type=int, default=10, help="unseen worldgen seeds, from %d" % WORLD_FIRST_UNSEEN)
    ap.add_argument("--parts", default="detection,world,forecast,throughput",
                    help="which parts to run; the others are kept from the last results file")
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    started = time.time()
    out = {}
    if parts != {"detection", "world", "forecast", "throughput"} and os.path.exists(os.path.join(RESULTS, "traffic.json")):
        with open(os.path.join(RESULTS, "traffic.json")) as f:
            out = json.load(f)
    now = datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M UTC")
    ran = out.get("part_dates") or dict((p, out["date"]) for p in ("detection", "world", "forecast", "throughput")
                                        if out.get("date"))
    ran.update((p, now) for p in parts)
    out["part_dates"] = ran
    out.update({"date": now, "host": platform.node(),
           "kernel": platform.release(), "cpus": os.cpu_count(), "seeds": seeds, "numpy": np.__version__,
           "parts_run_last": sorted(parts)})
    if "throughput" in parts:
        out["repeats"] = args.repeats      # of the throughput runs, which a run without them keeps

    if "detection" in parts:
        out["detection"] = run_detection(seeds)
    if "world" in parts:
        unseen = list(range(WORLD_FIRST_UNSEEN, WORLD_FIRST_UNSEEN + args.world_seeds))
        out["world"] = {"tuning": run_detection(WORLD_TUNING_SEEDS, "worldgen"),
                        "unseen": run_detection(unseen, "worldgen"),
                        "unseen_utc_only": run_detection(unseen, "worldgen", calendars=False)}
    if "forecast" in parts:
        out["forecast"] = run_forecast(seeds)
    if "throughput" in parts:
        out["throughput"] = []
        for n in [int(x) for x in args.sizes.split(",") if x]:
            out["throughput"].append(throughput(n, args.repeats))
            print("analyze %d records: %s records/s" % (n, fmt_spread(out["throughput"][-1]["records_per_s"])), flush=True)
        out["ingest"] = ingest(1000000, args.repeats)
        print("ingest 1M CSV rows: %s records/s" % fmt_spread(out["ingest"]["records_per_s"]), flush=True)
        out["end_to_end"] = end_to_end([int(x) for x in args.sizes.split(",") if x], args.repeats)
    out["wall_seconds"] = round(time.time() - started, 1)

    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "traffic.json"), "w") as f:
        json.dump(out, f, indent=1, sort_keys=True, default=float)
    with open(os.path.join(RESULTS, "traffic.md"), "w") as f:
        f.write(markdown(out))
    print(markdown(out))


def _p(s):
    return "n/a" if not s else "%.2f (%.2f-%.2f)" % (s["median"], s["min"], s["max"])


def detection_table(d, kinds):
    lines = ["| kind | labels | detected | named as this kind | precision | recall | F1 |", "|---|---|---|---|---|---|---|"]
    for k in kinds:
        p = d["per_kind"][k]
        lines.append("| %s | %d | %d | %s | %s | %s | %s |" % (k, p["labels"], p["tp"], p.get("own_kind", "n/a"), _p(p["precision"]),
                                                               _p(p["recall"]), _p(p["f1"])))
    lines.append("| overall | | | | %s | %s | %s |" % (_p(d["overall"]["precision"]), _p(d["overall"]["recall"]),
                                                        _p(d["overall"]["f1"])))
    lines += ["", "False positives in all runs: %d (%d of them on a holiday). Kind accuracy %s. Attribution: the carrying "
              "dimension value is in the top-3 contributors for %s of detected labels." % (
                  d["false_positives"], d["on_holiday"], _p(d["kind_accuracy"]), _p(d["attribution_top3"]))]
    if d.get("gaps"):
        lines.append("Data gaps: %d, reported as gaps %d; anomalies reported inside a gap: %d."
                     % (d["gaps"], d["gaps_reported"], d["anomalies_in_gaps"]))
    if d.get("projection"):
        pr = d["projection"]
        lines.append("Projection, growth per year against the generator's: the 90 %% interval holds it for %d of %d series "
                     "without a lasting change (absolute error %s) and %d of %d series whose level shift or drift lasts to "
                     "the end, %d of which the projection names (a level shift it stepped over, or a change too recent)."
                     % (pr["clean_held"], pr["clean"], _p(d["growth_abs_error"]), pr["stepped_held"], pr["stepped"],
                        pr["stepped_named"]))
    return lines + [""]


def markdown(out):
    d = out["detection"]
    lines = ["# Traffic insight analyzer benchmark", "",
             "%s, %s, kernel %s, %d CPUs, numpy %s; held-out seeds %d-%d (the detector was tuned on 0-4)."
             % (out["date"], out["host"], out["kernel"], out["cpus"], out["numpy"], out["seeds"][0], out["seeds"][-1]), "",
             "## Detection, trafficgen (per run: median (min-max) over %d runs of 4 sites x 28 days)" % len(out["seeds"]), ""]
    dates = out.get("part_dates", {})
    if len(set(dates.values())) > 1:
        lines[4:4] = ["Parts run at different times (`--parts`): %s." % "; ".join(
            "%s %s" % (p, dates[p]) for p in ("detection", "world", "forecast", "throughput") if p in dates), ""]
    lines += detection_table(d, KINDS)
    lines += ["Recall counts a label as detected by a detection of any kind on its link that overlaps it (2-bin "
              "tolerance); precision counts detections reported as the kind that overlap any label; \"named as this "
              "kind\" counts detected labels whose best-overlapping detection reports their kind.", ""]
    w = out.get("world")
    if w:
        lines += ["## Detection, worldgen (the second generator: 5 sites in their own time zones x 42 days)", ""]
        for key, title in (("unseen", "Unseen seeds %s, with each site's time zone and holidays"),
                           ("unseen_utc_only", "The same unseen seeds %s, time zones and holidays withheld (UTC only)"),
                           ("tuning", "Seeds looked at while tuning %s")):
            r = w[key]
            lines += ["### " + title % ("%d-%d" % (r["seeds"][0], r["seeds"][-1]) if len(r["seeds"]) > 1 else r["seeds"][0]), ""]
            lines += detection_table(r, WORLD_KINDS)
    f = out["forecast"]
    lines += ["## Forecast (7 days at 5 minutes from 21 days of history, per link)", "",
              "MASE (model MAE / seasonal-naive MAE; < 1 is better than naive): all %d links %s; the %d links without a "
              "labelled anomaly in the forecast week %s. sMAPE %s. The model beats seasonal-naive on %.0f %% of links."
              % (f["links"], _p(f["mase"]), f["clean_links"], _p(f["mase_clean_windows"]), _p(f["smape"]),
                 100 * f["model_better_share"]),
              "",
              "Against the generator's clean series (no noise, no anomalies: forecasting skill alone), MASE %s, "
              "sMAPE %s (seasonal-naive's sMAPE against it: %s)." % (_p(f["mase_vs_clean"]), _p(f["smape_vs_clean"]),
                                                                      _p(f["naive_smape_vs_clean"])), ""]
    lines += ["## Throughput (analyze() on generated records, %d repeats)" % out["repeats"], "",
              "| records | seconds | records/s |", "|---|---|---|"]
    for t in out["throughput"]:
        lines.append("| %d | %s | %s |" % (t["records"], fmt_spread(t["seconds"]), fmt_spread(t["records_per_s"])))
    g = out["ingest"]
    lines += ["", "Ingest (flowfile.read of a native CSV, the store's format): %d rows, %.0f MB, %s records/s."
              % (g["records"], g["file_bytes"] / 1e6, fmt_spread(g["records_per_s"])), ""]
    if out.get("end_to_end"):
        lines += ["## End to end (`netstack-traffic analyze FILE`, a fresh process per run, reading included; "
                  "%d repeats, interleaved)" % out["repeats"], "",
                  "| file | records | MB | seconds | of which analysis | records/s end to end |", "|---|---|---|---|---|---|"]
        for e in out["end_to_end"]:
            lines.append("| %s | %d | %.0f | %s | %s | %s |" % (e["format"], e["records"], e["file_bytes"] / 1e6,
                                                              fmt_spread(e["seconds"]), fmt_spread(e["analysis_seconds"]),
                                                              fmt_spread(e["records_per_s"])))
        lines += ["", "CSV files from %d MiB are read in two processes (this machine has %d CPUs)."
                  % (flowfile.PARALLEL_MIN_BYTES >> 20, out["cpus"]), ""]
    lines += ["Wall time %.0f s." % out["wall_seconds"], ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
