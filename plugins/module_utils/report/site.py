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

from ansible_collections.netstack.tuning.plugins.module_utils.report import svgplot

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


BPS_UNITS = (("Gbit/s", 1e9), ("Mbit/s", 1e6), ("kbit/s", 1e3))


def bps_unit(v):
    """(unit, scale) a rate of v bit/s is best read in."""
    v = float(v or 0)
    for unit, scale in BPS_UNITS:
        if v >= scale:
            return unit, scale
    return "bit/s", 1.0


def fmt_bps(v):
    unit, scale = bps_unit(v)
    return ("%.2f %s" if scale > 1 else "%.0f %s") % (float(v or 0) / scale, unit)


def plural(n, word):
    return "%d %s%s" % (n, word, "" if n == 1 else "s")


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
    # the chart in the unit the table uses for the largest value, so both read alike
    unit, scale = bps_unit(max(float(s.get("mean_bps") or 0) for s in tr["series"]))
    chart = svgplot.bar_chart([("%s %s" % (s["link"], s["direction"]), float(s.get("mean_bps") or 0) / scale)
                               for s in tr["series"]], "Mean rate per link and direction", unit,
                              vfmt=lambda v: "%.3g %s" % (v, unit))
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
    rows = []
    for h, r in sorted(hosts_tuned.items()):
        p99 = r.get("p99_ms") or {}
        gain = ("%.1f ms -> %.1f ms (%.2fx)" % (p99["defaults"], p99["winner"], p99["winner"] / p99["defaults"])
                if p99.get("defaults") and p99.get("winner") is not None else "-")
        rows.append([esc(h), esc(r.get("scenario") or "-"), esc("yes" if r.get("accepted") else "no"), esc(gain),
                     esc(", ".join("%s=%s" % kv for kv in sorted((r.get("sysctls") or {}).items())))])
    return "\n".join(["<h2>Sysctl tuning</h2>",
                      "<p>The study's winner against the kernel defaults in the interleaved verification (p99 "
                      "latency, medians); accepted only when significantly better.</p>",
                      table(["canary", "scenario", "accepted", "p99 defaults -> winner", "winner"], rows)])


def after_section(after):
    """The hosts as they are after a rollback ({host: host_data}), shown first: what the page
    below shows is the state while everything was applied."""
    if not after:
        return ""
    rows = []
    for name in sorted(after):
        h = after[name]
        clean = not h.get("journal_in_force") and not h.get("pins") and not h.get("agent_up")
        rows.append([esc(name), esc(h.get("journal_in_force", 0)), esc(", ".join(h.get("pins") or []) or "none"),
                     esc("up" if h.get("agent_up") else "stopped"),
                     '<span class="%s">%s</span>' % ("ok" if clean else "bad", "as before netstack" if clean else "changes remain")])
    return "\n".join(["<h2>After the rollback</h2>",
                      "<p>Everything below was measured while the capabilities were applied; this is each host "
                      "once the job had taken them back.</p>",
                      table(["host", "journal entries in force", "BPF pins", "agent", "state"], rows)])


def _kv(d):
    return ", ".join("%s %s" % (esc(k), esc(v)) for k, v in d)


def evidence_section(evidence):
    """What each capability did on each host while applied (playbooks/tasks/demo_evidence.yml):
    {host: {"sysctl": {...}, "tcp_rules": [...], "shm": {...}, "amp": {...}}}."""
    if not evidence:
        return ""
    out = ["<h2>Evidence per capability</h2>"]
    for name in sorted(evidence):
        ev = evidence[name] or {}
        out.append("<h3>%s</h3>" % esc(name))
        sy = ev.get("sysctl") or {}
        if sy.get("changes"):
            out.append("<p><b>Sysctl profile</b> %s (namespace %s): %s set, before and after:</p>" % (
                esc(sy.get("name")), esc(sy.get("netns") or "host"), plural(len(sy["changes"]), "key")))
            rows = [[esc(c.get("key")), esc(c.get("before")), esc(c.get("after"))] for c in sy["changes"]]
            out.append(table(["key", "before", "after"], rows))
        rules = ev.get("tcp_rules") or []
        if rules:
            out.append("<p><b>TCP tuning</b>: connections each rule matched (and settings the kernel refused):</p>")
            out.append(table(["rule", "sets", "connections", "refused"],
                             [[esc(r.get("name")), esc(", ".join("%s=%s" % kv for kv in sorted((r.get("set") or {}).items()))),
                               esc(r.get("hits")), esc(r.get("errors"))] for r in rules]))
        sh = ev.get("shm") or {}
        if sh.get("arms"):
            a, t = sh["arms"]["path"], sh["arms"]["tcp"]
            c = sh.get("counters") or {}
            out.append("<p><b>Same-host path</b>: request/response (%s B, one in flight) on a port in the policy and "
                       "on one outside it, interleaved; the path %s.</p>" % (
                           esc(sh.get("size", 64)), "carried it" if sh.get("on_path") else "<span class=bad>did not carry it</span>"))
            out.append(table(["", "round trips/s", "RTT p50 (us)", "RTT p99 (us)"],
                             [["same-host path", esc(a["round_trips_per_s"]), esc(a["rtt_us"]["p50"]), esc(a["rtt_us"]["p99"])],
                              ["TCP", esc(t["round_trips_per_s"]), esc(t["rtt_us"]["p50"]), esc(t["rtt_us"]["p99"])],
                              ["path / TCP", esc((sh.get("ratio") or {}).get("round_trips_per_s")),
                               esc((sh.get("ratio") or {}).get("rtt_p50")), ""]]))
            out.append("<p class=muted>path counters over the run: %s</p>" % _kv(sorted(c.items())))
        amp = ev.get("amp") or {}
        if amp.get("net_cpus") is not None:
            out.append("<p><b>AMP</b>: network CPUs %s, application CPUs %s.</p>" % (esc(amp["net_cpus"]), esc(amp.get("app_cpus"))))
            soft = amp.get("softirq") or {}
            if soft:
                cpus = sorted(set(k for v in soft.values() for k in v))
                out.append(table(["softirq during %s" % esc(amp.get("load", "the burst"))] + [esc(c) for c in cpus],
                                 [[esc(kind)] + [esc(soft[kind].get(c, 0)) for c in cpus] for kind in sorted(soft)]))
    return "\n".join(out)


def softirq_delta(before, after, kinds=("NET_RX", "NET_TX")):
    """Per-CPU growth of /proc/softirqs lines between two readings: {kind: {"CPU0": n}}."""
    def parse(text):
        lines = (text or "").splitlines()
        if not lines:
            return [], {}
        cpus = lines[0].split()
        rows = {}
        for line in lines[1:]:
            name, _sep, rest = line.partition(":")
            vals = rest.split()
            if len(vals) >= len(cpus) and all(v.isdigit() for v in vals[:len(cpus)]):
                rows[name.strip()] = [int(v) for v in vals[:len(cpus)]]
        return cpus, rows
    cpus, b = parse(before)
    cpus2, a = parse(after)
    if cpus != cpus2:
        return {}
    return dict((k, dict((c, a[k][i] - b[k][i]) for i, c in enumerate(cpus))) for k in kinds if k in a and k in b)


def html(hosts, reports=None, title="netstack.tuning fleet report"):
    """hosts: {name: host_data(...)}; reports: {"site", "zerocopy", "traffic", "tuning",
    "evidence", "after", "links": {"zerocopy": href, "traffic": href}}, each optional."""
    reports = reports or {}
    links = reports.get("links") or {}
    parts = ["<!DOCTYPE html><html><head><meta charset=utf-8><title>%s</title><style>%s</style></head><body>"
             % (esc(title), CSS), "<h1>%s</h1>" % esc(title),
             "<p class=muted>%s; generated %s UTC</p>" % (plural(len(hosts), "host"),
                                                          time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())),
             after_section(reports.get("after")),
             fleet_section(hosts, reports.get("site")),
             evidence_section(reports.get("evidence")),
             tuning_section(reports.get("tuning")),
             zerocopy_section(reports.get("zerocopy"), links.get("zerocopy")),
             traffic_section(reports.get("traffic"), links.get("traffic")),
             journal_section(hosts), "</body></html>"]
    return "\n".join(p for p in parts if p)
