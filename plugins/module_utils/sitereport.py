# -*- coding: utf-8 -*-
# Copyright: netstack.tuning contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fleet report of playbooks/report.yml: every host's facts, journal and BPF pins,
plus the capability reports found on the controller (site rollout, zero-copy, traffic,
tuning), on one self-contained HTML page.  Plain Python; rendered by the site_report
filter on the controller."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

from ansible_collections.netstack.tuning.plugins.module_utils import svgplot

ACTIVE = ("begun", "applied", "confirmed")

CSS = """body{font-family:sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f0f0f0}.bad{color:#b00}.ok{color:#070}.muted{color:#777}h2{border-bottom:2px solid #ddd;margin-top:2em}
code{background:#f6f6f6}"""


def esc(value):
    s = "" if value is None else str(value)
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def table(head, rows):
    out = ["<table><tr>%s</tr>" % "".join("<th>%s</th>" % esc(h) for h in head)]
    for row in rows:
        out.append("<tr>%s</tr>" % "".join("<td>%s</td>" % c for c in row))
    out.append("</table>")
    return "\n".join(out)


def fmt_ts(ts):
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(float(ts)))
    except (TypeError, ValueError):
        return esc(ts)


def fmt_bps(v):
    v = float(v or 0)
    for unit, scale in (("Gbit/s", 1e9), ("Mbit/s", 1e6), ("kbit/s", 1e3)):
        if v >= scale:
            return "%.2f %s" % (v / scale, unit)
    return "%.0f bit/s" % v


def host_summary(hostvars):
    """One host's line in site.json, from its hostvars after site.yml."""
    hv = hostvars or {}
    healthy = hv.get("site_healthy")
    if healthy is None:
        status = "not reached"
    elif healthy and not hv.get("site_batch_failed"):
        status = "applied"
    else:
        status = "rolled back"
    return {"status": status, "capabilities": list(hv.get("site_caps") or []),
            "journal_mark": hv.get("site_journal_mark"), "error": hv.get("site_error") or "",
            "unhealthy_in_batch": list(hv.get("site_batch_unhealthy") or [])}


def host_data(facts, journal, pins, agent_metrics=None):
    """What report.yml gathers from one host, reduced to what the page shows."""
    facts = facts or {}
    entries = list(journal or [])
    tcp = facts.get("tcp") or {}
    bpf = facts.get("bpf") or {}
    cpu = facts.get("cpu") or {}
    tuners = facts.get("tuners") or {}
    running = sorted(k for k in ("tuned", "irqbalance", "bpftune") if (tuners.get(k) or {}).get("running"))
    return {
        "kernel": (facts.get("kernel") or {}).get("release"),
        "cpus": cpu.get("count"), "smt": cpu.get("smt_active"),
        "congestion_control": tcp.get("congestion_control"),
        "available_cc": tcp.get("available_congestion_control") or [],
        "sock_ops": (bpf.get("prog_types") or {}).get("sock_ops"),
        "btf": bpf.get("btf_vmlinux"),
        "other_tuners": running,
        "sysctl_files": len(tuners.get("sysctl_files") or []),
        "journal": entries[-10:], "journal_total": len(entries),
        "journal_in_force": sum(1 for e in entries if e.get("state") in ACTIVE),
        "pins": sorted(pins or []),
        "agent_up": bool(agent_metrics) and "netstack_agent_up 1" in agent_metrics,
    }


def fleet_section(hosts, site):
    site_hosts = (site or {}).get("hosts") or {}
    rows = []
    for name in sorted(hosts):
        h = hosts[name]
        s = site_hosts.get(name) or {}
        status = s.get("status", "-")
        cls = "ok" if status == "applied" else ("bad" if status in ("rolled back", "not reached") else "muted")
        rows.append([esc(name), esc(h.get("kernel")), esc(h.get("cpus")), esc(h.get("congestion_control")),
                     esc("yes" if h.get("sock_ops") else "no"), esc(", ".join(h.get("other_tuners") or []) or "-"),
                     "%d / %d" % (h.get("journal_in_force", 0), h.get("journal_total", 0)),
                     esc(", ".join(h.get("pins") or []) or "-"), esc("up" if h.get("agent_up") else "-"),
                     '<span class="%s">%s</span> %s' % (cls, esc(status), esc(", ".join(s.get("capabilities") or [])))])
    head = ["host", "kernel", "CPUs", "congestion control", "sock_ops BPF", "other tuners running",
            "journal in force / all", "BPF pins", "agent", "site rollout"]
    out = ["<h2>Fleet</h2>", table(head, rows)]
    failed = [(n, s) for n, s in sorted(site_hosts.items()) if s.get("error")]
    if failed:
        out.append("<p class=bad>Rolled back: %s</p>" % "; ".join(
            "%s: %s" % (esc(n), esc(s["error"])) for n, s in failed))
    if site:
        out.append("<p class=muted>site.yml finished %s</p>" % esc(site.get("finished")))
    return "\n".join(out)


def journal_section(hosts):
    out = ["<h2>Journal (newest 10 per host)</h2>"]
    for name in sorted(hosts):
        entries = hosts[name].get("journal") or []
        if not entries:
            continue
        rows = [[esc(e.get("id")), fmt_ts(e.get("ts")), esc(e.get("state")), esc(e.get("reason")),
                 esc(len(e.get("items") or []))] for e in reversed(entries)]
        out.append("<h3>%s</h3>" % esc(name))
        out.append(table(["id", "time (UTC)", "state", "reason", "items"], rows))
    return "\n".join(out) if len(out) > 1 else ""


def zerocopy_section(zc, link):
    if not zc:
        return ""
    rows = []
    for host in sorted(zc):
        res = zc[host] or {}
        if res.get("failed") or "recommendations" not in res:
            rows.append([esc(host), "-", "-", '<span class=bad>%s</span>' % esc(res.get("msg", "no result"))])
            continue
        for path, protos in sorted(res["recommendations"].items()):
            for proto, rec in sorted(protos.items()):
                rows.append([esc(host), esc(path), esc(proto), "<b>%s</b>: %s" % (esc(rec.get("verdict")), esc(rec.get("text")))])
    return "\n".join(["<h2>Zero-copy</h2>", '<p><a href="%s">full report</a></p>' % esc(link) if link else "",
                      table(["host", "path", "protocol", "verdict"], rows)])


def traffic_section(tr, link):
    if not tr:
        return ""
    if not tr.get("series"):
        return "<h2>Traffic</h2><p>no traffic recorded. %s</p>" % esc(" ".join(tr.get("notes") or []))
    rows = [[esc(s["link"]), esc(s["direction"]), fmt_bps(s.get("mean_bps")), fmt_bps(s.get("peak_bps")),
             fmt_bps((s.get("percentiles_bps") or {}).get("p95"))] for s in tr["series"]]
    chart = svgplot.bar_chart([("%s %s" % (s["link"], s["direction"]), float(s.get("mean_bps") or 0) / 1e6)
                               for s in tr["series"]], "Mean rate per link and direction", "Mbit/s",
                              vfmt=lambda v: "%.3g" % v)
    anomalies = [[esc(a.get("kind")), esc(a.get("link")), fmt_ts(a.get("start")), fmt_ts(a.get("end")), esc(a.get("score"))]
                 for a in tr.get("anomalies") or []]
    levels = [[esc(w.get("link")), esc(w.get("level")), esc(w.get("p95_utilisation"))] for w in tr.get("water_levels") or []]
    out = ["<h2>Traffic</h2>", '<p><a href="%s">full report</a> (profile, anomalies, billing, projection)</p>' % esc(link)
           if link else "", chart, table(["link", "direction", "mean", "peak", "p95"], rows)]
    if anomalies:
        out.append(table(["anomaly", "link", "start", "end", "score"], anomalies))
    if levels:
        out.append(table(["link", "water level", "p95 utilisation"], levels))
    return "\n".join(out)


def tuning_section(hosts_tuned):
    """Winners found by sysctl_study, if report.yml was given the study results."""
    if not hosts_tuned:
        return ""
    rows = [[esc(h), esc(r.get("accepted")), esc(", ".join("%s=%s" % kv for kv in sorted((r.get("sysctls") or {}).items())))]
            for h, r in sorted(hosts_tuned.items())]
    return "\n".join(["<h2>Sysctl tuning</h2>", table(["canary", "accepted", "winner"], rows)])


def html(hosts, reports=None, title="netstack.tuning fleet report"):
    """hosts: {name: host_data(...)}; reports: {"site", "zerocopy", "traffic", "tuning",
    "links": {"zerocopy": href, "traffic": href}}, each optional."""
    reports = reports or {}
    links = reports.get("links") or {}
    parts = ["<!DOCTYPE html><html><head><meta charset=utf-8><title>%s</title><style>%s</style></head><body>"
             % (esc(title), CSS), "<h1>%s</h1>" % esc(title),
             "<p class=muted>%d hosts; generated %s UTC</p>" % (len(hosts), time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())),
             fleet_section(hosts, reports.get("site")),
             tuning_section(reports.get("tuning")),
             zerocopy_section(reports.get("zerocopy"), links.get("zerocopy")),
             traffic_section(reports.get("traffic"), links.get("traffic")),
             journal_section(hosts), "</body></html>"]
    return "\n".join(p for p in parts if p)
