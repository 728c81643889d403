# -*- coding: utf-8 -*-
# Copyright: netstack.tuning contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fleet report of playbooks/report.yml: every host's facts, journal and BPF pins,
plus the capability reports found on the controller (site rollout, zero-copy, traffic,
tuning), on one self-contained HTML page (templates/site.py, autoescaped).  Rendered by the
site_report filter on the controller."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

from ansible_collections.netstack.tuning.plugins.module_utils.report import svgplot, templating
from ansible_collections.netstack.tuning.plugins.module_utils.report.templates import site as page

ACTIVE = ("begun", "applied", "confirmed")


def fmt_ts(ts):
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(float(ts)))
    except (TypeError, ValueError):
        return "" if ts is None else str(ts)


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


# Each *_section gives its section's values as text (never markup); templates/site.py makes
# the page of them and escapes every value.
def fleet_section(hosts, site):
    site_hosts = (site or {}).get("hosts") or {}
    rows = []
    for name in sorted(hosts):
        h = hosts[name]
        s = site_hosts.get(name) or {}
        status = s.get("status", "-")
        cls = "ok" if status == "applied" else ("bad" if status in ("rolled back", "not reached") else "muted")
        rows.append({"cells": [name, h.get("kernel"), h.get("cpus"), h.get("congestion_control"),
                               "yes" if h.get("sock_ops") else "no", ", ".join(h.get("other_tuners") or []) or "-",
                               "%d / %d" % (h.get("journal_in_force", 0), h.get("journal_total", 0)),
                               ", ".join(h.get("pins") or []) or "-", "up" if h.get("agent_up") else "-"],
                     "cls": cls, "status": status, "capabilities": ", ".join(s.get("capabilities") or [])})
    failed = [(n, s["error"]) for n, s in sorted(site_hosts.items()) if s.get("error")]
    return {"rows": rows, "failed": failed, "site": bool(site), "finished": (site or {}).get("finished")}


def journal_section(hosts):
    out = []
    for name in sorted(hosts):
        entries = hosts[name].get("journal") or []
        if entries:
            out.append({"name": name, "rows": [[e.get("id"), fmt_ts(e.get("ts")), e.get("state"), e.get("reason"),
                                                len(e.get("items") or [])] for e in reversed(entries)]})
    return out


def zerocopy_section(zc, link):
    if not zc:
        return None
    rows = []
    for host in sorted(zc):
        res = zc[host] or {}
        if res.get("failed") or "recommendations" not in res:
            rows.append({"host": host, "path": "-", "proto": "-", "failed": True, "msg": res.get("msg", "no result")})
            continue
        for path, protos in sorted(res["recommendations"].items()):
            for proto, rec in sorted(protos.items()):
                rows.append({"host": host, "path": path, "proto": proto, "failed": False,
                             "verdict": rec.get("verdict"), "text": rec.get("text")})
    return {"link": link, "rows": rows}


def traffic_section(tr, link):
    if not tr:
        return None
    if not tr.get("series"):
        return {"rows": [], "notes": " ".join(tr.get("notes") or [])}
    rows = [[s["link"], s["direction"], fmt_bps(s.get("mean_bps")), fmt_bps(s.get("peak_bps")),
             fmt_bps((s.get("percentiles_bps") or {}).get("p95"))] for s in tr["series"]]
    # the chart in the unit the table uses for the largest value, so both read alike
    unit, scale = bps_unit(max(float(s.get("mean_bps") or 0) for s in tr["series"]))
    chart = svgplot.bar_chart([("%s %s" % (s["link"], s["direction"]), float(s.get("mean_bps") or 0) / scale)
                               for s in tr["series"]], "Mean rate per link and direction", unit,
                              vfmt=lambda v: "%.3g %s" % (v, unit))
    anomalies = [[a.get("kind"), a.get("link"), fmt_ts(a.get("start")), fmt_ts(a.get("end")), a.get("score")]
                 for a in tr.get("anomalies") or []]
    levels = [[w.get("link"), w.get("level"), w.get("p95_utilisation")] for w in tr.get("water_levels") or []]
    return {"link": link, "chart": templating.trusted(chart), "rows": rows, "anomalies": anomalies, "levels": levels}


def tuning_section(hosts_tuned):
    """Winners found by sysctl_study, if report.yml was given the study results."""
    rows = []
    for h, r in sorted((hosts_tuned or {}).items()):
        p99 = r.get("p99_ms") or {}
        gain = ("%.1f ms -> %.1f ms (%.2fx)" % (p99["defaults"], p99["winner"], p99["winner"] / p99["defaults"])
                if p99.get("defaults") and p99.get("winner") is not None else "-")
        rows.append([h, r.get("scenario") or "-", "yes" if r.get("accepted") else "no", gain,
                     ", ".join("%s=%s" % kv for kv in sorted((r.get("sysctls") or {}).items()))])
    return rows


def after_section(after):
    """The hosts as they are after a rollback ({host: host_data}), shown first: what the page
    below shows is the state while everything was applied."""
    rows = []
    for name in sorted(after or {}):
        h = after[name]
        rows.append({"name": name, "in_force": h.get("journal_in_force", 0), "pins": ", ".join(h.get("pins") or []) or "none",
                     "agent": "up" if h.get("agent_up") else "stopped",
                     "clean": not h.get("journal_in_force") and not h.get("pins") and not h.get("agent_up")})
    return rows


def evidence_section(evidence):
    """What each capability did on each host while applied (playbooks/tasks/demo_evidence.yml):
    {host: {"sysctl": {...}, "tcp_rules": [...], "shm": {...}, "amp": {...}}}."""
    out = []
    for name in sorted(evidence or {}):
        ev = evidence[name] or {}
        item = {"name": name, "sysctl": None, "tcp_rules": None, "shm": None, "amp": None}
        sy = ev.get("sysctl") or {}
        if sy.get("changes"):
            item["sysctl"] = {"name": sy.get("name"), "netns": sy.get("netns") or "host",
                              "count": plural(len(sy["changes"]), "key"),
                              "rows": [[c.get("key"), c.get("before"), c.get("after")] for c in sy["changes"]]}
        rules = ev.get("tcp_rules") or []
        if rules:
            item["tcp_rules"] = [[r.get("name"), ", ".join("%s=%s" % kv for kv in sorted((r.get("set") or {}).items())),
                                  r.get("hits"), r.get("errors")] for r in rules]
        sh = ev.get("shm") or {}
        if sh.get("arms"):
            a, t = sh["arms"]["path"], sh["arms"]["tcp"]
            ratio = sh.get("ratio") or {}
            item["shm"] = {"size": sh.get("size", 64), "on_path": bool(sh.get("on_path")),
                           "counters": sorted((sh.get("counters") or {}).items()),
                           "rows": [["same-host path", a["round_trips_per_s"], a["rtt_us"]["p50"], a["rtt_us"]["p99"]],
                                    ["TCP", t["round_trips_per_s"], t["rtt_us"]["p50"], t["rtt_us"]["p99"]],
                                    ["path / TCP", ratio.get("round_trips_per_s"), ratio.get("rtt_p50"), ""]]}
        amp = ev.get("amp") or {}
        if amp.get("net_cpus") is not None:
            soft = amp.get("softirq") or {}
            cpus = sorted(set(k for v in soft.values() for k in v))
            item["amp"] = {"net_cpus": amp["net_cpus"], "app_cpus": amp.get("app_cpus"), "load": amp.get("load", "the burst"),
                           "cpus": cpus, "softirq_rows": [[kind] + [soft[kind].get(c, 0) for c in cpus] for kind in sorted(soft)]}
        out.append(item)
    return out


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
    return templating.render(page.NAME, page.SOURCE, title=title, host_count=plural(len(hosts), "host"),
                             generated=time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
                             after=after_section(reports.get("after")),
                             fleet=fleet_section(hosts, reports.get("site")),
                             evidence=evidence_section(reports.get("evidence")),
                             tuning=tuning_section(reports.get("tuning")),
                             zerocopy=zerocopy_section(reports.get("zerocopy"), links.get("zerocopy")),
                             traffic=traffic_section(reports.get("traffic"), links.get("traffic")),
                             journal=journal_section(hosts))
