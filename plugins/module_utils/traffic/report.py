# -*- coding: utf-8 -*-
# Copyright: netstack.tuning contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The traffic insight report: a ``trafficanalysis.analyze()`` result as one self-contained
HTML page (inline SVG charts, no scripts, nothing fetched) and as a short Markdown summary.

Per link the page shows traffic over time against the seasonal baseline with the anomaly
windows shaded and marked, the hour x weekday profile, the anomalies with their top
contributors, 95th-percentile billing, water levels and the capacity projection; then the
top talkers over all links.  Pure functions of the (JSON-like) result: no numpy, so the
page can be rendered anywhere the result can be read.  The page is a Jinja2 template
(report/templates/traffic.py) with autoescaping on: link names, prefixes and host names are
user data, and the functions here give it as text, never as markup."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import calendar
import math
import time

from ansible_collections.netstack.tuning.plugins.module_utils.report import svgplot, templating
from ansible_collections.netstack.tuning.plugins.module_utils.report.templates import traffic as page

DAY = 86400
WEEK = 7 * DAY
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
LEVELS = ("ok", "warn", "critical")
COLORS = {"in": "#1f77b4", "out": "#2ca02c", "in expected": "#9ecae1", "out expected": "#a1d99b"}


# ------------------------------------------------------------------ formatting

def _num(v):
    """A finite float, or None (None, NaN, infinities and non-numbers all read as missing)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def _scaled(v, units):
    v = _num(v)
    if v is None:
        return None
    a, k = abs(v), 0
    while a >= 999.5 and k < len(units) - 1:  # 999.7 reads 1.00 k, not 1e+03
        a /= 1000.0
        k += 1
    s = ("%.3g" % a) if a < 1000 else ("%.0f" % a)
    return "%s%s%s" % ("-" if v < 0 else "", s, units[k])


def fmt_rate(bps):
    """Bits per second, human-readable: 965 Mbit/s, 1.95 Gbit/s; "-" when missing."""
    s = _scaled(bps, (" bit/s", " kbit/s", " Mbit/s", " Gbit/s", " Tbit/s", " Pbit/s", " Ebit/s"))
    return "-" if s is None else s


def _rate_tick(bps):
    s = _scaled(bps, ("", "k", "M", "G", "T", "P", "E"))
    return "-" if s is None else s


def fmt_bytes(n):
    """Bytes, human-readable (decimal units)."""
    s = _scaled(n, (" B", " kB", " MB", " GB", " TB", " PB", " EB"))
    return "-" if s is None else s


def fmt_pct(v, signed=True):
    """A fraction as a percentage (0.555 -> +55.5 %); very large growth as a factor."""
    v = _num(v)
    if v is None:
        return "-"
    if abs(v) >= 100:
        return "x%.3g" % (1 + v)
    p = v * 100
    digits = "%.0f" if abs(p) >= 100 else "%.1f"
    return (("+" if signed and p > 0 else "") + digits % p) + " %"


def fmt_ts(t, fmt="%Y-%m-%d %H:%M"):
    """UNIX seconds as UTC text; "-" when missing; other values as their text."""
    v = _num(t)
    if v is None:
        return "-" if t is None else str(t)
    return time.strftime(fmt, time.gmtime(int(v)))


def _day_ts(day):
    """'YYYY-MM-DD' -> UNIX seconds of its UTC midnight, None if it does not parse."""
    try:
        return calendar.timegm(time.strptime(str(day), "%Y-%m-%d"))
    except ValueError:
        return None


def _duration(secs):
    secs = _num(secs)
    if secs is None:
        return "-"
    if secs < 3600:
        return "%.0f min" % (secs / 60.0)
    if secs < 2 * DAY:
        return "%.1f h" % (secs / 3600.0)
    return "%.1f d" % (secs / float(DAY))


def _time_axis(lo, hi):
    """(tick positions, formatter) for a UTC time axis over [lo, hi] seconds."""
    span = max(1, hi - lo)
    steps = (60, 300, 600, 900, 1800, 3600, 2 * 3600, 3 * 3600, 6 * 3600, 12 * 3600, DAY, 2 * DAY, WEEK,
             2 * WEEK, 4 * WEEK, 13 * WEEK, 26 * WEEK, 52 * WEEK)
    step = next((s for s in steps if span / float(s) <= 7), steps[-1])
    off = 4 * DAY if step >= WEEK else 0  # weeks start on Monday (1970-01-05)
    first = int(math.ceil((lo - off) / float(step))) * step + off
    ticks = list(range(first, int(hi) + 1, step))
    long_span = span > 300 * DAY

    def fmt(t):
        if step >= DAY:
            return fmt_ts(t, "%Y-%m-%d" if long_span else "%b %d")
        return fmt_ts(t, "%b %d" if int(t) % DAY == 0 else "%H:%M")
    return ticks, fmt


def _td(v, cls=None, kind=None):
    """A table cell of the page (templates/traffic.py): its text, escaped there, and class."""
    return (v if kind else str(v), cls, kind)


def _table(head, rows):
    """rows: lists of _td() cells."""
    return {"head": head, "rows": rows}


def _level_cell(level):
    level = str(level or "-")
    return _td(level, "lvl-%s" % level if level in LEVELS else "na")


def _pct_keys(pct):
    def key(k):
        try:
            return float(str(k).lstrip("p"))
        except ValueError:
            return float("inf")
    return sorted(pct or {}, key=key)


def _magnitude(a):
    """An anomaly's magnitude as text: the relative change, or a new prefix's share."""
    if a.get("kind") == "new_prefix":
        share = _num(a.get("share"))
        return "%s of link" % fmt_pct(share if share is not None else a.get("magnitude"), signed=False)
    return fmt_pct(a.get("magnitude"))


def _contributor(c):
    """One contributor as short text: 'prefix 10.0.0.0/24 +1.2 GB (80 % of change, new)'."""
    text = "%s %s" % (c.get("dimension", "?"), c.get("value", "?"))
    extra = []
    delta = _num(c.get("delta_bytes"))
    if delta is not None:
        text += " %s%s" % ("+" if delta > 0 else "-", fmt_bytes(abs(delta)))
    if c.get("dimension") == "link":
        extra.append("the whole link: every prefix and class alike")
    elif _num(c.get("share_of_change")) is not None:
        extra.append("%s of change" % fmt_pct(c["share_of_change"], signed=False))
    elif _num(c.get("share")) is not None:
        extra.append("%s of link" % fmt_pct(c["share"], signed=False))
    if c.get("new"):
        extra.append("new")
    return text + (" (%s)" % ", ".join(extra) if extra else "")


def _links(r):
    """Every link named anywhere in the result, the result's own order first."""
    out = []
    named = [x.get("link") for key in ("series", "plots", "anomalies", "billing", "projection", "water_levels")
             for x in (r.get(key) or []) if isinstance(x, dict)]
    for link in list(r.get("links") or []) + named:
        if link is not None and link not in out:
            out.append(link)
    return out


def _of(r, key, link):
    return [x for x in (r.get(key) or []) if isinstance(x, dict) and x.get("link") == link]


def _dir_order(d):
    return (0 if d == "in" else 1 if d == "out" else 2, str(d))


def _thresholds(r):
    o = r.get("options") or {}
    warn, crit = _num(o.get("warn")), _num(o.get("critical"))
    return 0.7 if warn is None else warn, 0.9 if crit is None else crit


def _capacity(r, link):
    for w in _of(r, "water_levels", link):
        if _num(w.get("capacity_bps")):
            return _num(w["capacity_bps"])
    cap = ((r.get("options") or {}).get("capacity") or {}).get(link)
    return _num(cap)


# ------------------------------------------------------------------ page sections

def _hosts_table(hosts):
    rows = []
    for host in sorted(hosts, key=str):
        h = hosts[host] or {}
        status = str(h.get("status", "?"))
        rec = _num(h.get("records"))
        rows.append([_td(host), _td(status, "lvl-ok" if status == "ok" else "st-failed"),
                     _td("-" if rec is None else "%.0f" % rec), _td(fmt_ts(h.get("first"))), _td(fmt_ts(h.get("last"))),
                     _td(h.get("msg") or "", "l")])
    return _table(["host", "status", "records", "first (UTC)", "last (UTC)", "message"], rows)


def _overview(r, links):
    rows = []
    warn, crit = _thresholds(r)
    for n, link in enumerate(links):
        ser = dict((s.get("direction"), s) for s in _of(r, "series", link))
        p95 = dict((d, (s.get("percentiles_bps") or {}).get("p95")) for d, s in ser.items())
        peaks = [_num(s.get("peak_bps")) for s in ser.values() if _num(s.get("peak_bps")) is not None]
        peak = max(peaks) if peaks else None
        bills = sorted(_of(r, "billing", link), key=lambda b: str(b.get("month")))
        wl = _of(r, "water_levels", link)
        rows.append([_td(("#link-%d" % (n + 1), str(link)), kind="href"),
                     _td(fmt_rate(p95.get("in"))), _td(fmt_rate(p95.get("out"))), _td(fmt_rate(peak)),
                     _td(len(_of(r, "anomalies", link))),
                     _level_cell(wl[0].get("level")) if wl else _td("no capacity set", "na"),
                     _td("%s: %s" % (bills[-1].get("month"), fmt_rate(bills[-1].get("billable_bps"))) if bills else "-")])
    return {"table": _table(["link", "p95 in", "p95 out", "peak", "anomalies", "water level", "billable p95 (latest month)"], rows),
            "warn": "%g" % (warn * 100), "critical": "%g" % (crit * 100)}


def _series_table(r, link):
    ser = sorted(_of(r, "series", link), key=lambda s: _dir_order(s.get("direction")))
    if not ser:
        return None
    keys = []
    for s in ser:
        keys += [k for k in _pct_keys(s.get("percentiles_bps")) if k not in keys]
    rows = []
    step = _num(r.get("step")) or 0
    for s in ser:
        pct = s.get("percentiles_bps") or {}
        season = str(s.get("season", "-"))
        if season == "none":
            season = "none (too short: baseline is the overall median)"
        sigma = _num(s.get("noise_sigma"))
        rows.append([_td(s.get("direction", "?")), _td(_duration((_num(s.get("bins")) or 0) * step)),
                     _td(fmt_bytes(s.get("bytes"))), _td(fmt_rate(s.get("mean_bps")))]
                    + [_td(fmt_rate(pct.get(k))) for k in keys]
                    + [_td(fmt_rate(s.get("peak_bps"))), _td(season, "l"), _td("-" if sigma is None else "%.3f" % sigma)])
    return _table(["direction", "data", "bytes", "mean"] + keys + ["peak", "season", "noise (log sigma)"], rows)


def _traffic_chart(r, link):
    plots = sorted(_of(r, "plots", link), key=lambda p: _dir_order(p.get("direction")))
    series, styles, values = {}, {}, {}
    for p in plots:
        d = str(p.get("direction", "?"))
        t = p.get("t") or []
        obs = [(x, _num(y)) for x, y in zip(t, p.get("bps") or []) if _num(x) is not None]
        exp = [(x, _num(y)) for x, y in zip(t, p.get("expected_bps") or []) if _num(x) is not None]
        if any(y is not None for _x, y in obs):
            series[d] = obs
            styles[d] = {"color": COLORS.get(d)}
            values[d] = obs
        if any(y is not None for _x, y in exp):
            series[d + " expected"] = exp
            styles[d + " expected"] = {"color": COLORS.get(d + " expected"), "dash": "5,3", "width": 1.2}
    title = "%s: traffic (bit/s)" % link
    if not series:
        return None
    marks, spans = [], []
    for a in _of(r, "anomalies", link):
        start, end = _num(a.get("start")), _num(a.get("end"))
        if start is None:
            continue
        label = "%s %s %s, %s UTC (score %s)" % (
            a.get("kind", "?"), _magnitude(a), "/".join(map(str, a.get("directions") or [])), fmt_ts(start), a.get("score", "-"))
        spans.append((start, (end if end is not None else start) + 1, label))
        y = _num(a.get("observed_bps"))
        if y is None:  # new prefixes carry no rate: put the mark on the line at the start
            for d in list(a.get("directions") or []) + list(values):
                pts = [(abs(x - start), v) for x, v in values.get(d, []) if v is not None]
                if pts:
                    y = min(pts)[1]
                    break
        if y is not None:
            marks.append((start, y, label))
    xs = [x for pts in series.values() for x, _y in pts]
    ticks, xfmt = _time_axis(min(xs), max(xs))
    return svgplot.line_chart(series, title, "time (UTC), from %s" % fmt_ts(min(xs)), "bit/s", marks=marks, xfmt=xfmt,
                              spans=spans, yfmt=_rate_tick, xticks=ticks, styles=styles)


def _heatmaps(r, link):
    parts = []
    for s in sorted(_of(r, "series", link), key=lambda s: _dir_order(s.get("direction"))):
        hw = (s.get("profile") or {}).get("hour_weekday") or []
        matrix = [[_num(v) for v in (list(row or []) + [None] * 24)[:24]] for row in (list(hw) + [[]] * 7)[:7]]
        parts.append(svgplot.heatmap(WEEKDAYS, ["%02d" % h for h in range(24)], matrix,
                                     "%s %s: median rate by hour (UTC) and weekday" % (link, s.get("direction", "?")),
                                     fmt=fmt_rate))
    return "".join(parts)


def _anomaly_table(r, link):
    anomalies = _of(r, "anomalies", link)
    if not anomalies:
        return None
    rows, details = [], []
    for n, a in enumerate(anomalies):
        start, end = _num(a.get("start")), _num(a.get("end"))
        contrib = [c for c in (a.get("top_contributors") or []) if isinstance(c, dict)]
        what = a.get("kind", "?")
        if a.get("prefix") is not None:
            what = "%s %s" % (what, a["prefix"])
        rows.append([_td(fmt_ts(start)), _td(fmt_ts(end + 1 if end is not None else None)),
                     _td(_duration(end + 1 - start if None not in (start, end) else None)),
                     _td(what, "l"), _td(", ".join(map(str, a.get("directions") or [])) or "-"),
                     _td(_magnitude(a)), _td(a.get("score", "-")),
                     _td(fmt_rate(a.get("observed_bps"))), _td(fmt_rate(a.get("expected_bps"))),
                     _td([_contributor(c) for c in contrib[:3]], "l", "lines")])
        if contrib:
            crow = [[_td(c.get("dimension", "?")), _td(c.get("value", "?"), "l"), _td(fmt_bytes(c.get("bytes"))),
                     _td(fmt_bytes(c.get("expected_bytes"))), _td(fmt_bytes(c.get("delta_bytes"))),
                     _td(fmt_pct(c.get("share_of_change") if _num(c.get("share_of_change")) is not None
                                 else c.get("share"), signed=False)), _td("yes" if c.get("new") else "")]
                    for c in contrib]
            details.append({"n": n + 1, "what": str(what), "start": fmt_ts(start),
                            "table": _table(["dimension", "value", "bytes", "expected", "change", "share", "new"], crow)})
    return {"table": _table(["start (UTC)", "end (UTC)", "duration", "kind", "directions", "magnitude", "score",
                             "observed", "expected", "top contributors"], rows), "details": details}


def _billing_table(r, link):
    bills = sorted(_of(r, "billing", link), key=lambda b: str(b.get("month")))
    if not bills:
        return None
    cost = any(_num(b.get("cost")) is not None for b in bills)
    rows = []
    for b in bills:
        row = [_td(b.get("month", "?")), _td(fmt_rate(b.get("p95_in_bps"))), _td(fmt_rate(b.get("p95_out_bps"))),
               _td(fmt_rate(b.get("billable_bps"))),
               _td("%s / %s" % tuple("-" if _num(b.get(k)) is None else "%.0f" % b[k] for k in ("samples_in", "samples_out")))]
        if cost:
            c = _num(b.get("cost"))
            row.append(_td("-" if c is None else "%.2f" % c))
        rows.append(row)
    return _table(["month", "p95 in", "p95 out", "billable", "samples in / out"] + (["cost"] if cost else []), rows)


def _crossing(w, name):
    c = (w.get("crossing") or {}).get(name) or {}
    if not c:
        return "-"
    if not c.get("likely") and not c.get("earliest"):
        return "not within the horizon"
    return "likely %s, earliest %s" % (c.get("likely") or "not within the horizon", c.get("earliest") or "-")


def _water_table(r, link):
    wl = _of(r, "water_levels", link)
    if not wl:
        return None
    rows = []
    for w in wl:
        rows.append([_level_cell(w.get("level")), _td(fmt_rate(w.get("capacity_bps"))), _td(w.get("direction", "-")),
                     _td(fmt_pct(w.get("p95_utilisation"), False)), _td(fmt_pct(w.get("peak_utilisation"), False)),
                     _td(fmt_pct(w.get("time_above_warn"), False)), _td(fmt_pct(w.get("time_above_critical"), False)),
                     _td(_crossing(w, "warn"), "l"), _td(_crossing(w, "critical"), "l")])
    return _table(["level", "capacity", "direction", "p95 utilisation", "peak", "time above warn", "time above critical",
                   "reaches warn", "reaches critical"], rows)


def _interval(x):
    x = x or {}
    return "%s (%s .. %s)" % (fmt_rate(x.get("point_bps")), fmt_rate(x.get("lo_bps")), fmt_rate(x.get("hi_bps")))


def _growth(p):
    iv = p.get("growth_per_year_interval") or [None, None]
    iv = (list(iv) + [None, None])[:2]
    return "%s (%s .. %s)" % (fmt_pct(p.get("growth_per_year")), fmt_pct(iv[0]), fmt_pct(iv[1]))


def _projection_table(r, link):
    proj = sorted(_of(r, "projection", link), key=lambda p: _dir_order(p.get("direction")))
    if not proj:
        return None
    rows = []
    for p in proj:
        head = [_td(p.get("direction", "?")), _td(p.get("days_used", "-"))]
        if "growth_per_year" not in p:
            rows.append(head + [_td(str(p.get("note", "no projection")), "l na", "colspan")])
            continue
        rows.append(head + [_td(_growth(p)), _td(fmt_rate(p.get("last_day_p95_bps"))),
                            _td(_interval(p.get("p95_in_30d")) if p.get("p95_in_30d") else "-"),
                            _td(_interval(p.get("p95_in_90d")) if p.get("p95_in_90d") else "-")])
    return _table(["direction", "days used", "growth per year (90 % interval)", "last day p95",
                   "p95 in 30 days (interval)", "p95 in 90 days (interval)"], rows)


def _projection_charts(r, link):
    parts = []
    cap = _capacity(r, link)
    warn, crit = _thresholds(r)
    hlines = []
    if cap:
        hlines = [(cap, "capacity %s" % fmt_rate(cap), "#555"),
                  (cap * crit, "critical %g %%" % (crit * 100), "#d62728"),
                  (cap * warn, "warn %g %%" % (warn * 100), "#ff7f0e")]
    wl = _of(r, "water_levels", link)
    for p in sorted(_of(r, "projection", link), key=lambda p: _dir_order(p.get("direction"))):
        d = p.get("direction", "?")
        hist = [(_day_ts(h.get("day")), _num(h.get("p95_bps"))) for h in (p.get("history") or [])]
        hist = [(x, y) for x, y in hist if x is not None]
        daily = [(_day_ts(f.get("day")), f) for f in (p.get("daily") or [])]
        daily = [(x, f) for x, f in daily if x is not None]
        if not hist and not daily:
            continue
        series = {"daily p95": hist,
                  "forecast": [(x, _num(f.get("p95_bps"))) for x, f in daily],
                  "90 % lo": [(x, _num(f.get("lo_bps"))) for x, f in daily],
                  "90 % hi": [(x, _num(f.get("hi_bps"))) for x, f in daily]}
        styles = {"daily p95": {"color": COLORS.get(d, "#1f77b4")}, "forecast": {"color": "#9467bd", "dash": "6,3"},
                  "90 % lo": {"color": "#bbbbbb", "dash": "2,2", "width": 1},
                  "90 % hi": {"color": "#bbbbbb", "dash": "2,2", "width": 1}}
        marks = []
        for w in wl:
            if w.get("direction") != d or not cap:
                continue
            for name, frac in (("warn", warn), ("critical", crit)):
                day = ((w.get("crossing") or {}).get(name) or {}).get("likely")
                if _day_ts(day) is not None:
                    marks.append((_day_ts(day), cap * frac, "%s level likely reached %s" % (name, day)))
        ys = [y for pts in series.values() for _x, y in pts if y is not None and y > 0] + [h[0] for h in hlines]
        ylog = bool(ys) and max(ys) / min(ys) > 20
        xs = [x for pts in series.values() for x, _y in pts]
        ticks, xfmt = _time_axis(min(xs), max(xs))
        parts.append(svgplot.line_chart(
            series, "%s %s: daily 95th percentile and %s-day projection" % (link, d, len(daily)),
            "day (UTC)", "bit/s%s" % (" (log scale)" if ylog else ""), marks=marks, xfmt=xfmt, hlines=hlines,
            yfmt=_rate_tick, ylog=ylog, xticks=ticks, styles=styles))
    return "".join(parts)


def _talkers(r):
    tt = r.get("top_talkers") or {}
    if not tt:
        return None
    charts = []
    for dim, label in (("prefix", "remote prefixes"), ("port_class", "port classes")):
        items = [(str(x.get("value")), 100.0 * (_num(x.get("share")) or 0.0)) for x in (tt.get(dim) or [])]
        if items:
            charts.append(templating.trusted(svgplot.bar_chart(items, "Top %s (share of all bytes)" % label, "% of bytes",
                                                               vfmt=lambda v: "%.1f %%" % v)))
    rows = []
    for dim in sorted(tt, key=str):
        for x in tt[dim] or []:
            rows.append([_td(dim), _td(x.get("value", "?"), "l"), _td(fmt_bytes(x.get("bytes"))),
                         _td(fmt_pct(x.get("share"), False))])
    return {"charts": charts, "table": _table(["dimension", "value", "bytes", "share"], rows)}


def _summary(r, links):
    step = _num(r.get("step"))
    rec, rps, secs = _num(r.get("records")), _num(r.get("records_per_second")), _num(r.get("analysis_seconds"))
    text = "%s to %s UTC, %s links, %s records, %s, %s bins." % (
        fmt_ts(r.get("start")), fmt_ts(_num(r.get("end")) + 1 if _num(r.get("end")) is not None else None), len(links),
        "-" if rec is None else "%.0f" % rec, fmt_bytes(r.get("bytes")), _duration(step) if step else "-")
    if secs is not None:
        text += " Analysed in %.2f s%s." % (secs, "" if rps is None else " (%.0f records/s)" % rps)
    e2e, e2e_rps = _num(r.get("end_to_end_seconds")), _num(r.get("end_to_end_records_per_second"))
    if e2e is not None:
        text += " End to end, reading included: %.2f s%s." % (e2e, "" if e2e_rps is None else " (%.0f records/s)" % e2e_rps)
    return text


def _options(r):
    o = r.get("options") or {}
    return "; ".join("%s=%s" % (k, o[k]) for k in sorted(o, key=str)) if o else None


def html(result, title="netstack.tuning traffic insight", hosts=None):
    """One self-contained page for a ``trafficanalysis.analyze()`` result (templates/traffic.py).
    ``hosts`` = {host: {"records", "first", "last", "status", "msg"}} lists the hosts whose
    stores were gathered (shown first)."""
    r = result or {}
    links = _links(r)
    per_link = []
    for link in links:
        chart = _traffic_chart(r, link)
        per_link.append({"name": str(link), "series": _series_table(r, link),
                         "chart": templating.trusted(chart) if chart else None,
                         "heatmaps": templating.trusted(_heatmaps(r, link)), "anomalies": _anomaly_table(r, link),
                         "billing": _billing_table(r, link), "water": _water_table(r, link),
                         "projection": _projection_table(r, link),
                         "projection_charts": templating.trusted(_projection_charts(r, link))})
    return templating.render(page.NAME, page.SOURCE, title=title, summary=_summary(r, links),
                             hosts=_hosts_table(hosts) if hosts else None, overview=_overview(r, links) if links else None,
                             links=per_link, talkers=_talkers(r), options=_options(r))


# ------------------------------------------------------------------ markdown

def _md(v):
    return str(v).replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def markdown(result):
    """A short text summary: anomalies, billing, water levels and the projection headline."""
    r = result or {}
    links = _links(r)
    end = _num(r.get("end"))
    rec = _num(r.get("records"))
    lines = ["## Traffic insight: %s to %s UTC" % (fmt_ts(r.get("start")), fmt_ts(None if end is None else end + 1)),
             "", "%s records on %d link(s): %s" % ("-" if rec is None else "%.0f" % rec, len(links),
                                                   ", ".join(_md(lk) for lk in links) or "-")]
    anomalies = [a for a in (r.get("anomalies") or []) if isinstance(a, dict)]
    lines += ["", "### Anomalies (%d)" % len(anomalies), ""]
    if anomalies:
        lines += ["| start (UTC) | duration | link | kind | directions | magnitude | score | top contributors |",
                  "|---|---|---|---|---|---|---|---|"]
        for a in anomalies:
            start, end = _num(a.get("start")), _num(a.get("end"))
            kind = str(a.get("kind", "?")) + (" %s" % a["prefix"] if a.get("prefix") is not None else "")
            lines.append("| %s |" % " | ".join(_md(x) for x in (
                fmt_ts(start), _duration(end + 1 - start if None not in (start, end) else None), a.get("link", "?"), kind,
                ", ".join(map(str, a.get("directions") or [])) or "-", _magnitude(a), a.get("score", "-"),
                "; ".join(_contributor(c) for c in (a.get("top_contributors") or [])[:3] if isinstance(c, dict)) or "-")))
    else:
        lines.append("none")
    bills = [b for b in (r.get("billing") or []) if isinstance(b, dict)]
    if bills:
        cost = any(_num(b.get("cost")) is not None for b in bills)
        lines += ["", "### 95th-percentile billing", "",
                  "| link | month | p95 in | p95 out | billable |%s" % (" cost |" if cost else ""),
                  "|---|---|---|---|---|%s" % ("---|" if cost else "")]
        for b in bills:
            cells = [b.get("link", "?"), b.get("month", "?"), fmt_rate(b.get("p95_in_bps")), fmt_rate(b.get("p95_out_bps")),
                     fmt_rate(b.get("billable_bps"))]
            if cost:
                cells.append("-" if _num(b.get("cost")) is None else "%.2f" % b["cost"])
            lines.append("| %s |" % " | ".join(_md(c) for c in cells))
    wl = [w for w in (r.get("water_levels") or []) if isinstance(w, dict)]
    if wl:
        lines += ["", "### Water levels", "", "| link | capacity | level | p95 utilisation | reaches warn | reaches critical |",
                  "|---|---|---|---|---|---|"]
        for w in wl:
            lines.append("| %s |" % " | ".join(_md(c) for c in (
                w.get("link", "?"), fmt_rate(w.get("capacity_bps")), w.get("level", "-"),
                fmt_pct(w.get("p95_utilisation"), False), _crossing(w, "warn"), _crossing(w, "critical"))))
    proj = [p for p in (r.get("projection") or []) if isinstance(p, dict)]
    if proj:
        lines += ["", "### Projection", ""]
        for p in proj:
            who = "%s %s" % (_md(p.get("link", "?")), _md(p.get("direction", "?")))
            if "growth_per_year" not in p:
                lines.append("- %s: %s" % (who, _md(p.get("note", "no projection"))))
                continue
            text = "- %s: growth %s per year; last day p95 %s" % (who, _growth(p), fmt_rate(p.get("last_day_p95_bps")))
            for key, label in (("p95_in_30d", "30 days"), ("p95_in_90d", "90 days")):
                if p.get(key):
                    text += "; p95 in %s %s" % (label, _interval(p[key]))
            lines.append(text)
    return "\n".join(lines) + "\n"
