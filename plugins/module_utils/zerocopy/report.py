# -*- coding: utf-8 -*-
# Copyright: netstack.tuning contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The zero-copy fleet report: zerocopy_test results of many hosts as one HTML page
(verdicts, crossover sizes, the size x mode tables, throughput and CPU/GB plots) and as
Markdown (the benchmark's record).  Pure functions of the results; used by the
``zerocopy_report`` filter on the controller and by benchmarks/zerocopy_bench.py.  The page is
a Jinja2 template (report/templates/zerocopy.py) with autoescaping on."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import math

from ansible_collections.netstack.tuning.plugins.module_utils.report import svgplot, templating
from ansible_collections.netstack.tuning.plugins.module_utils.report.templates import zerocopy as page
from ansible_collections.netstack.tuning.plugins.module_utils.zerocopy.measure import BASELINE, COPIED_BY_DESIGN, ZEROCOPY_MODES, fmt_size


def _m(cell, key):
    v = cell.get(key)
    return v.get("median") if isinstance(v, dict) else None


def _f(v, fmt="%.2f"):
    return "-" if v is None else fmt % v


def cell_text(cell, metric="throughput_gbps"):
    """One table cell: the median with its spread, or the reason there is none."""
    if cell["status"] != "ok":
        return cell["status"]
    v = cell.get(metric) or {}
    if v.get("median") is None:
        return "-"
    if cell.get("runs", 1) > 1 and v.get("min") is not None:
        return "%.2f (%.2f-%.2f)" % (v["median"], v["min"], v["max"])
    return "%.2f" % v["median"]


def _groups(result):
    """(path, proto) -> sizes, modes and cells of one host's result."""
    out = {}
    for c in result.get("cells", []):
        g = out.setdefault((c["path"], c["proto"]), {"sizes": [], "modes": [], "cells": {}})
        if c["size"] not in g["sizes"]:
            g["sizes"].append(c["size"])
        if c["mode"] not in g["modes"]:
            g["modes"].append(c["mode"])
        g["cells"][(c["size"], c["mode"])] = c
    for (path, proto), g in out.items():  # a partial grid (hand-made results) still renders
        for size in g["sizes"]:
            for mode in g["modes"]:
                g["cells"].setdefault((size, mode), {"path": path, "proto": proto, "size": size, "mode": mode,
                                                     "status": "-"})
    return out


def modes_unsupported_in(result):
    """{mode: reason} for modes that could not run anywhere in this result."""
    seen = {}
    for c in result.get("cells", []):
        if c["status"] == "unsupported":
            seen.setdefault(c["mode"], c.get("reason"))
        elif c["status"] == "ok":
            seen[c["mode"]] = None
    return {m: r for m, r in seen.items() if r}


def markdown(result, host="this host"):
    """The size x mode tables of one host's result, with crossover and verdicts, as Markdown."""
    lines = ["### %s: kernel %s, %s helper" % (host, result.get("kernel", {}).get("release", "?"),
                                               result.get("implementation", {}).get("kind", "?"))]
    for mode, why in sorted(modes_unsupported_in(result).items()):
        lines.append("- `%s` unsupported: %s" % (mode, why))
    for (path, proto), g in sorted(_groups(result).items()):
        modes = [m for m in g["modes"] if any(g["cells"][(s, m)]["status"] == "ok" for s in g["sizes"])]
        if not modes:
            continue
        lines += ["", "#### %s, %s" % (path, proto.upper()), "",
                  "Throughput Gbit/s, median (min-max) of %d runs; sender / receiver CPU s per GB; copied %%; "
                  "completions per notification." % max(c.get("runs", 0) for c in g["cells"].values()), ""]
        lines.append("| size | " + " | ".join(modes) + " | " + " | ".join("%s CPU/GB tx/rx" % m for m in modes)
                     + " | copied % | compl/notif |")
        lines.append("|---" * (1 + 2 * len(modes) + 2) + "|")
        for s in g["sizes"]:
            cells = [g["cells"][(s, m)] for m in modes]
            if all(c["status"] != "ok" for c in cells):
                lines.append("| %s | %s |" % (fmt_size(s), " | ".join(c["status"] for c in cells)))
                continue
            cpu = ["%s / %s" % (_f(_m(c, "sender_cpu_s_per_gb")), _f(_m(c, "receiver_cpu_s_per_gb")))
                   if c["status"] == "ok" else c["status"] for c in cells]
            zc = [c for c in cells if c["mode"] in ZEROCOPY_MODES and c["status"] == "ok"]
            copied = ", ".join("%s %s" % (c["mode"], _f(c["copied_fraction"] * 100 if c["copied_fraction"] is not None
                                                        else None, "%.0f")) for c in zc)
            cpn = ", ".join("%s %s" % (c["mode"], _f(c["completions_per_notification"], "%.1f")) for c in zc)
            lines.append("| %s | %s | %s | %s | %s |" % (fmt_size(s), " | ".join(cell_text(c) for c in cells),
                                                         " | ".join(cpu), copied or "-", cpn or "-"))
    cross = result.get("crossover", {})
    if cross:
        lines += ["", "#### Crossover (smallest size from which the mode wins at every larger size by >= margin)", "",
                  "| path | proto | mode | vs | throughput | sender CPU/GB | throughput ratio by size |",
                  "|---|---|---|---|---|---|---|"]
        for path in sorted(cross):
            for proto in sorted(cross[path]):
                for mode, x in sorted(cross[path][proto].items()):
                    ratios = ", ".join("%s x%.2f" % (fmt_size(int(s)), r) for s, r in
                                       sorted(x["throughput_ratio"].items(), key=lambda kv: int(kv[0])))
                    lines.append("| %s | %s | %s | %s | %s | %s | %s |" % (
                        path, proto, mode, x["baseline"], crossover_text(x, "throughput_size"),
                        crossover_text(x, "sender_cpu_size"), ratios))
    recs = result.get("recommendations", {})
    if recs:
        lines += ["", "#### Recommendations", ""]
        for path in sorted(recs):
            for proto in sorted(recs[path]):
                lines.append("- %s/%s: **%s**: %s" % (path, proto, recs[path][proto]["verdict"],
                                                      recs[path][proto]["text"]))
    for note in result.get("notes", []):
        lines.append("- note: %s" % note)
    return "\n".join(lines) + "\n"


def crossover_text(x, key):
    """A crossover size, "never", and a warning when the kernel copied anyway."""
    text = fmt_size(x[key]) if x[key] else "never"
    if x[key] and (x.get("min_copied_fraction") or 0) >= COPIED_BY_DESIGN:
        text += " (kernel copied %.0f%%: not a zerocopy win)" % (100 * x["min_copied_fraction"])
    return text


def _log2_fmt(x):
    return fmt_size(int(round(2 ** x)))


def _plots(result, host):
    parts = []
    for (path, proto), g in sorted(_groups(result).items()):
        thr, cpu = {}, {}
        for m in g["modes"]:
            pts = [(math.log2(s), _m(g["cells"][(s, m)], "throughput_gbps")) for s in g["sizes"]
                   if g["cells"][(s, m)]["status"] == "ok"]
            if pts:
                thr[m] = pts
                cpu[m] = [(math.log2(s), _m(g["cells"][(s, m)], "sender_cpu_s_per_gb")) for s in g["sizes"]
                          if g["cells"][(s, m)]["status"] == "ok"]
        if not thr:
            continue
        parts.append(svgplot.line_chart(thr, "%s %s %s: throughput" % (host, path, proto.upper()), "message size",
                                        "Gbit/s", xfmt=_log2_fmt))
        parts.append(svgplot.line_chart(cpu, "%s %s %s: sender CPU per GB" % (host, path, proto.upper()),
                                        "message size", "CPU s / GB", xfmt=_log2_fmt))
    return parts


def _fleet_row(host, r):
    if r.get("failed") or "cells" not in r:
        return {"host": host, "failed": True, "msg": str(r.get("msg", "no result"))}
    k, impl = r.get("kernel", {}), r.get("implementation", {})
    return {"host": host, "failed": False, "release": str(k.get("release", "?")), "kind": str(impl.get("kind", "?")),
            "so_zerocopy": "yes" if k.get("so_zerocopy") else "no", "send_zc": "yes" if k.get("io_uring_send_zc") else "no",
            "zc_cmsg": str(k.get("zc_cmsg", "?")),
            "verdicts": [(v["verdict"], path, proto, v["text"]) for path, per in sorted(r.get("recommendations", {}).items())
                         for proto, v in sorted(per.items())]}


def _group_view(r, path, proto, g):
    """One size x mode table of a host's result, as the values its cells show."""
    modes = g["modes"]
    rows = []
    for s in g["sizes"]:
        cells = [g["cells"][(s, m)] for m in modes]
        rows.append({"size": fmt_size(s),
                     "throughput": [(cell_text(c), c["status"] == "ok") for c in cells],
                     "cpu": ["%s / %s" % (_f(_m(c, "sender_cpu_s_per_gb")), _f(_m(c, "receiver_cpu_s_per_gb")))
                             if c["status"] == "ok" else None for c in cells],
                     "zerocopy": ["%s / %s" % (_f(c["copied_fraction"] * 100 if c.get("copied_fraction") is not None else None,
                                                  "%.0f"), _f(c.get("completions_per_notification"), "%.1f"))
                                  if c["status"] == "ok" else None for c in cells if c["mode"] in ZEROCOPY_MODES]})
    cross = r.get("crossover", {}).get(path, {}).get(proto, {})
    return {"path": path, "proto": proto.upper(), "modes": modes, "zc_modes": [m for m in modes if m in ZEROCOPY_MODES],
            "rows": rows, "crossover": [(m, BASELINE[m], crossover_text(x, "throughput_size"), crossover_text(x, "sender_cpu_size"))
                                        for m, x in sorted(cross.items())]}


def html(reports, title="netstack.tuning zero-copy check"):
    """One page for ``reports`` = {host: zerocopy_test result} (hosts that failed carry
    ``failed``/``msg`` and are listed as such); the page is templates/zerocopy.py."""
    hosts = []
    for host in sorted(reports):
        r = reports[host] or {}
        if "cells" not in r:
            continue
        hosts.append({"host": host, "unsupported": [(mode, str(why)) for mode, why in sorted(modes_unsupported_in(r).items())],
                      "groups": [_group_view(r, path, proto, g) for (path, proto), g in sorted(_groups(r).items())],
                      "plots": [templating.trusted(p) for p in _plots(r, host)]})
    return templating.render(page.NAME, page.SOURCE, title=title,
                             fleet=[_fleet_row(host, reports[host] or {}) for host in sorted(reports)],
                             notes=sorted(set(n for r in reports.values() if r for n in r.get("notes", []))), hosts=hosts)
