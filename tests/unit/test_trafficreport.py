"""Unit tests: the traffic insight report (trafficreport.py) and the svgplot extensions it uses.

The results are made by running the real analysis (trafficanalysis.analyze) on small
synthetic record sets built here: ten days on two links with a spike and a new heavy prefix
(one link named like a script tag, to check escaping), and a 30-minute set that is too
short for a season or a projection."""
import json
import math
import re

import pytest

np = pytest.importorskip("numpy")

from ansible_collections.netstack.tuning.plugins.module_utils.report import svgplot  # noqa: E402
from ansible_collections.netstack.tuning.plugins.module_utils.traffic import report as tr  # noqa: E402
from ansible_collections.netstack.tuning.plugins.module_utils.traffic import analysis as ta, data as td  # noqa: E402
from htmlcheck import IMG, IMG_SQ, SCRIPT, assert_inert  # noqa: E402

T0 = 1788739200          # 2026-09-07 00:00 UTC, a Monday
STEP = 300
HOSTILE = "<script>x</script>|evil"
HOSTILE_PREFIX = "<b>198.51.100.0/24</b>"


def _records(days, links, spikes=(), new_prefix=None, seed=1):
    """links: [(link, direction, scale)]; spikes: [(link index, bin, factor)];
    new_prefix: (link index, first bin, bins): a hostile-named prefix carrying half the link."""
    rng = np.random.default_rng(seed)
    n = int(days * DAY_BINS)
    t = T0 + np.arange(n) * STEP
    hour = (t % 86400) / 3600.0
    ts, link, direction, prefix, by = [], [], [], [], []
    for li, (_name, dname, scale) in enumerate(links):
        rate = scale * (0.5 + 0.5 * np.exp(-((hour - 14) / 4) ** 2)) * rng.lognormal(0, 0.05, n)
        for lk, b0, factor in spikes:
            if lk == li:
                rate[b0:b0 + 3] *= factor
        for k in range(4):
            ts.append(t)
            link.append(np.full(n, li))
            direction.append(np.full(n, 0 if dname == "in" else 1))
            prefix.append(np.full(n, k))
            by.append(rate * STEP / 8 / 4)
        if new_prefix and new_prefix[0] == li:
            extra = np.zeros(n)
            b0, nb = new_prefix[1], new_prefix[2]
            extra[b0:b0 + nb] = rate[b0:b0 + nb] * STEP / 8
            ts.append(t)
            link.append(np.full(n, li))
            direction.append(np.full(n, 0 if dname == "in" else 1))
            prefix.append(np.full(n, 4))
            by.append(extra)
    b = np.concatenate(by).astype(np.int64)
    keep = b > 0
    cnt = int(keep.sum())
    names = []
    for name, _d, _s in links:
        if name not in names:
            names.append(name)
    link_codes = np.concatenate(link)
    link_codes = np.asarray([names.index(links[i][0]) for i in range(len(links))])[link_codes]
    return td.Records(
        {"ts": np.concatenate(ts)[keep], "proto": np.full(cnt, 6), "dscp": np.zeros(cnt, dtype=np.int64),
         "bytes": b[keep], "packets": b[keep] // 1000},
        {"link": link_codes[keep], "direction": np.concatenate(direction)[keep], "prefix": np.concatenate(prefix)[keep],
         "port_class": np.zeros(cnt, dtype=np.int64)},
        {"link": names, "direction": ["in", "out"],
         "prefix": ["10.0.%d.0/24" % k for k in range(4)] + [HOSTILE_PREFIX], "port_class": ["web"]})


DAY_BINS = 86400 // STEP


@pytest.fixture(scope="module")
def full():
    links = [("dc1:up", "in", 1e9), ("dc1:up", "out", 3e8), (HOSTILE, "in", 2e8)]
    rec = _records(10, links, spikes=[(0, 6 * DAY_BINS + 150, 6.0), (2, 7 * DAY_BINS + 40, 8.0)],
                   new_prefix=(0, 8 * DAY_BINS + 100, 40))
    return ta.analyze(rec, {"capacity": {"dc1:up": 4e9}, "price_per_mbps": 0.5})


@pytest.fixture(scope="module")
def tiny():
    return ta.analyze(_records(30 * 60 / 86400.0, [("edge:eth0", "in", 5e7)]))


def _svgs(page):
    return re.findall(r"<svg.*?</svg>", page, re.S)


# --------------------------------------------------------------------------- the full page

def test_page_has_every_chart(full):
    page = tr.html(full)
    links = full["links"]
    assert len(links) == 2
    projected = [p for p in full["projection"] if p.get("history")]
    assert len(projected) == 3       # 10 days: every series has a projection
    # per link a traffic chart, per series a heatmap and a projection chart, two top-talker bars
    assert page.count("<svg") == len(links) + len(full["series"]) + len(projected) + 2
    assert page.startswith("<!doctype html>") and page.rstrip().endswith("</html>")
    assert "<script" not in page.lower() and "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")


def test_hostile_names_are_escaped(full):
    page = tr.html(full, title="<i>t</i>", hosts={"<h>": {"status": "failed", "msg": "<bad & worse>"}})
    assert HOSTILE not in page and "<script>" not in page
    assert "&lt;script&gt;x&lt;/script&gt;|evil" in page
    assert HOSTILE_PREFIX not in page and "&lt;b&gt;198.51.100.0/24&lt;/b&gt;" in page
    assert "<i>t</i>" not in page and "&lt;i&gt;t&lt;/i&gt;" in page
    assert "&lt;bad &amp; worse&gt;" in page and "&lt;h&gt;" in page


def test_hostile_values_show_as_text_never_as_markup(full):
    """Link names, prefixes, host names, messages, the title and analysis options are escaped
    by the page's template (autoescape): none of them becomes an element or an attribute."""
    result = dict(full, options=dict(full["options"], label=IMG_SQ))
    page = tr.html(result, title=IMG, hosts={SCRIPT: {"status": IMG, "msg": IMG_SQ, "records": 3}})
    assert_inert(page, SCRIPT, IMG, IMG_SQ, HOSTILE, HOSTILE_PREFIX)
    assert "<h2 id='link-1'>Link &lt;script&gt;x&lt;/script&gt;|evil</h2>" in page
    assert "<a href='#link-1'>&lt;script&gt;x&lt;/script&gt;|evil</a>" in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "label=&#39;&gt;&lt;img" in page


def test_anomaly_rows_marks_and_spans(full):
    page = tr.html(full)
    kinds = [a["kind"] for a in full["anomalies"]]
    assert "spike" in kinds and "new_prefix" in kinds
    assert any(a["link"] == HOSTILE for a in full["anomalies"])
    for a in full["anomalies"]:
        assert tr.fmt_ts(a["start"]) in page
        # its row: start time, kind, directions, magnitude as %
        row = re.search(r"<tr><td>%s</td>.*?</tr>" % re.escape(tr.fmt_ts(a["start"])), page).group(0)
        assert a["kind"] in row and "%" in row and ", ".join(a["directions"]) in row
        assert str(a["score"]) in row
    spike = next(a for a in full["anomalies"] if a["kind"] == "spike" and a["link"] == "dc1:up")
    assert tr.fmt_pct(spike["magnitude"]).startswith("+")
    assert tr.fmt_pct(spike["magnitude"]) in page
    # a mark (tooltip kind + magnitude) and a shaded span per anomaly, in its link's traffic chart
    titles = re.findall(r'<circle[^>]*stroke="#d62728"[^>]*><title>([^<]*)</title>', page)
    assert any(t.startswith("spike +") for t in titles)
    assert len(titles) >= len(full["anomalies"])
    assert page.count('fill-opacity="0.15"') == len(full["anomalies"])
    # the new prefix's contributors (hostile prefix, escaped) show in its details table
    assert "<details>" in page and "new_prefix &lt;b&gt;" in page


def test_billing_water_levels_and_projection_tables(full):
    page = tr.html(full)
    for b in full["billing"]:
        assert tr.fmt_rate(b["billable_bps"]) in page
        assert "%.2f" % b["cost"] in page
    assert "<th>cost</th>" in page
    w = full["water_levels"][0]
    assert w["link"] == "dc1:up" and "class='lvl-%s'>%s<" % (w["level"], w["level"]) in page
    assert "No capacity set for this link" in page      # the hostile link has none
    # capacity and warn/critical lines in dc1:up's projection charts only
    proj_svgs = [s for s in _svgs(page) if "projection" in s]
    assert len(proj_svgs) == 3
    assert sum("capacity 4 Gbit/s" in s for s in proj_svgs) == 2
    assert sum("warn 70 %" in s and "critical 90 %" in s for s in proj_svgs) == 2
    p = full["projection"][0]
    assert tr.fmt_rate(p["p95_in_30d"]["point_bps"]) in page and tr.fmt_pct(p["growth_per_year"]) in page


def test_heatmap_is_weekday_by_hour(full):
    page = tr.html(full)
    heat = [s for s in _svgs(page) if "median rate by hour" in s]
    assert len(heat) == len(full["series"])
    s = heat[0]
    for d in ("Mon", "Sun"):
        assert ">%s</text>" % d in s
    assert ">00</text>" in s and ">23</text>" in s
    assert "bit/s</title>" in s          # cells carry the median as a rate


def test_hosts_table(full):
    hosts = {"b-host": {"records": 120, "first": T0, "last": T0 + 3600, "status": "ok"},
             "a-host": {"records": None, "status": "failed", "msg": "unreachable"}}
    page = tr.html(full, hosts=hosts)
    table = page[page.index("Data sources"):page.index("<h2>Links")]
    assert table.index("a-host") < table.index("b-host")
    assert "2026-09-07 01:00" in table and "unreachable" in table and "st-failed" in table


def test_markdown_lists_the_anomalies(full):
    md = tr.markdown(full)
    rows = [ln for ln in md.splitlines() if ln.startswith("| 20")]
    anomaly_rows = rows[:len(full["anomalies"])]
    assert "### Anomalies (%d)" % len(full["anomalies"]) in md
    for a, row in zip(full["anomalies"], anomaly_rows):
        assert row.startswith("| %s |" % tr.fmt_ts(a["start"])) and a["kind"] in row
        # the link name's pipe is escaped: every anomaly row has exactly 9 column bars
        assert len(re.findall(r"(?<!\\)\|", row)) == 9
    assert "<script>x</script>\\|evil" in md
    for b in full["billing"]:
        assert tr.fmt_rate(b["billable_bps"]) in md and "%.2f" % b["cost"] in md
    assert "### Water levels" in md and "### Projection" in md and "growth" in md


# --------------------------------------------------------------------------- short and partial results

def test_tiny_result_renders_with_notes(tiny):
    assert tiny["series"][0]["season"] == "none" and "note" in tiny["projection"][0] and not tiny["anomalies"]
    page = tr.html(tiny)
    assert page.count("<svg") == 4      # traffic, heatmap and the two top-talker bars; no projection chart
    assert not [s for s in _svgs(page) if "projection" in s]
    assert "needs at least 3 whole days" in page
    assert "none (too short" in page
    assert "No anomalies detected" in page
    assert not any("capacity " in s for s in _svgs(page)) and "No capacity set" in page
    assert "<th>cost</th>" not in page and "p95 out" in page
    md = tr.markdown(tiny)
    assert "### Anomalies (0)" in md and "\nnone\n" in md and "needs at least 3 whole days" in md


def test_missing_pieces_and_nan(full):
    r = json.loads(json.dumps(full))
    for p in r["plots"]:
        p["bps"] = [float("nan") if i % 3 == 0 else v for i, v in enumerate(p["bps"])]
        p["expected_bps"] = [None] * len(p["expected_bps"])
    r["series"][0]["profile"]["hour_weekday"] = [[None] * 24] * 7
    page = tr.html(r)
    assert "nan" not in page.lower().replace("span", "")
    assert "(no data for" in page       # the all-empty heatmap
    r["plots"] = []
    assert page.count("<svg") - len(r["links"]) == tr.html(r).count("<svg")
    assert "no traffic samples to plot" in tr.html(r)
    assert "No links in this result" in tr.html({}) and "### Anomalies (0)" in tr.markdown({})


def test_formatting():
    assert tr.fmt_rate(965455861.8) == "965 Mbit/s"
    assert tr.fmt_rate(1.949e9) == "1.95 Gbit/s"
    assert tr.fmt_rate(999.7e6) == "1 Gbit/s"
    assert tr.fmt_rate(512) == "512 bit/s" and tr.fmt_rate(2500) == "2.5 kbit/s"
    assert tr.fmt_rate(None) == tr.fmt_rate(float("nan")) == "-"
    assert tr.fmt_pct(0.555) == "+55.5 %" and tr.fmt_pct(-0.2) == "-20.0 %" and tr.fmt_pct(3.965) == "+396 %"
    assert tr.fmt_pct(34479794.5) == "x3.45e+07"
    assert tr.fmt_bytes(3.27e11) == "327 GB"
    assert tr.fmt_ts(T0) == "2026-09-07 00:00"


# --------------------------------------------------------------------------- svgplot extensions

def test_line_chart_extensions_are_opt_in():
    series = {"a": [(0, 1.0), (10, 3.7)]}
    plain = svgplot.line_chart(series, "t", "x", "y", False, [(5, 2.0, "m")])
    assert "stroke-dasharray" not in plain and "fill-opacity" not in plain and "<title>m</title>" in plain
    ext = svgplot.line_chart(series, "t", "x", "y", spans=[(2, 4, "win <1>")], hlines=[(5.0, "cap")],
                             styles={"a": {"color": "#123456", "dash": "4,2"}}, yfmt=lambda v: "%gq" % v,
                             xticks=[0, 5, 10, 99], xfmt=lambda v: "T%g" % v)
    assert "<title>win &lt;1&gt;</title>" in ext and ">cap</text>" in ext and 'stroke="#123456"' in ext
    assert 'stroke-dasharray="4,2"' in ext and ">5q</text>" in ext
    assert ">T0<" in ext and ">T10<" in ext and ">T99<" not in ext


def test_axis_covers_the_data():
    svg = svgplot.line_chart({"a": [(0, 0.0), (1, 3.74e9)]})
    ys = [float(y) for y in re.findall(r'points="[^"]*?,([0-9.]+)"', svg)]
    top = int(re.search(r'<rect x="\d+" y="(\d+)" width="\d+" height="\d+" fill="none"', svg).group(1))
    assert ys and min(ys) >= top      # the peak stays inside the frame


def test_log_axis():
    svg = svgplot.line_chart({"a": [(0, 1e9), (1, 1e12), (2, 0.0)]}, ylog=True, yfmt=tr._rate_tick)
    labels = re.findall(r'text-anchor="end">([^<]*)</text>', svg)
    assert labels == ["1G", "10G", "100G", "1T"]
    assert not math.isnan(float(re.search(r'points="([0-9.]+),', svg).group(1)))


def test_axis_of_values_equal_to_float_resolution_terminates():
    """Two rates that differ in the last bit (a one-bin series: observed vs expected) once
    made the tick loop spin forever (the step did not move v) until memory ran out."""
    from ansible_collections.netstack.tuning.plugins.module_utils.report import svgplot
    lo, hi, ticks = svgplot._nice(259.84, 259.8399999999999)
    assert lo <= 259.84 <= hi and 2 <= len(ticks) <= 100
    page = svgplot.line_chart({"a": [(1795579200, 259.84)], "b": [(1795579200, 259.8399999999999)]})
    assert page.startswith("<svg")


def test_a_link_wide_contributor_reads_as_the_whole_link():
    link = {"dimension": "link", "value": "dc1:up", "bytes": 1e9, "expected_bytes": 1e10, "delta_bytes": -9e9,
            "share_of_change": 1.0, "new": False}
    prefix = dict(link, dimension="prefix", value="10.0.0.0/24", share_of_change=0.8)
    assert tr._contributor(link).startswith("link dc1:up -") and "the whole link" in tr._contributor(link)
    assert "80.0 % of change" in tr._contributor(prefix) and "whole link" not in tr._contributor(prefix)
