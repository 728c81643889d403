# -*- coding: utf-8 -*-
# Copyright: netstack.tuning contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Evaluation data for traffic analysis: synthetic multi-site traffic with labelled anomalies,
and the scoring of a detector or a forecaster against the labels.

Real traffic captures come without ground truth, so detectors and forecasters are judged on
generated traffic whose every feature is known:

* ``generate`` makes ``Records`` (the schema of trafficdata.py) for ``sites`` links ("dc1:uplink",
  ...), both directions, at ``step`` resolution: a per-link base rate (200 Mbit/s to 5 Gbit/s),
  a business-hours diurnal shape in the site's own time zone, lower weekends, a multiplicative
  yearly growth trend, holidays at weekend level, multiplicative noise and small benign bursts.
  Each step's link total is split over remote prefixes (Zipf-like, slowly churning), service
  classes (port class x proto x dscp) and directions.  Four kinds of anomaly are injected and
  labelled: ``spike``, ``level_shift``, ``drift`` and ``new_prefix``.  ``truth`` has the clean
  expected series per link (no noise, no anomalies), the series with the anomalies' expected
  effect, the holidays, the unlabelled benign bursts and every parameter.
* ``split`` cuts records and labels at a timestamp for forecasting (history / future).
* ``score`` matches detections to labels (precision, recall and F1 per kind and overall, and
  how often the detector named the right kind); ``forecast_error`` and ``seasonal_naive``
  judge forecasts against the seasonal-naive baseline; ``attribution_hit`` checks whether a
  detector's top contributors name the dimension value that carried an anomaly.

Conventions.  A record's ``ts`` is the end of its interval (as the collector writes it): step
``i`` covers ``[start + i*step, start + (i+1)*step)`` and its rows have ``ts = start +
(i+1)*step``.  ``truth["ts"]`` lists these timestamps; every series in ``truth`` is aligned
with it.  Label bounds are the ``ts`` of the first and last affected step, both inclusive.

Label dict (one per injected anomaly)::

    {"id": 0, "kind": "spike" | "level_shift" | "drift" | "new_prefix",
     "link": "dc2:uplink", "start": ts, "end": ts, "steps": n,
     "magnitude": m, "prefix": "198.18.7.0/24" or None,
     "dims": {"prefix": ...} | {"port_class": ...} | {"link": ...}}

``magnitude`` is the anomaly's effect on the link total (both directions), relative to the
expected traffic without it:

* spike: the link carries ``magnitude`` times its expected bytes (3 to 10) for 1-6 steps,
  the extra bytes all in one remote prefix or one port class (``dims``).
* level_shift: the link total changes by ``magnitude`` (+0.4..+0.8 or -0.4..-0.8, so 0.5 is
  +50 %) for 1-3 days, then reverts (``"reverts": True``) or lasts to the end of the data.
  Rises are carried by one prefix or port class; drops scale the whole link (an upstream or
  routing loss), ``dims`` = ``{"link": link}``.
* drift: a linear ramp of the link total from +0 to ``+magnitude`` (0.5 to 1.5) over 1-3 days,
  held a few hours at the top, then back to normal after the label's end; carried by one prefix
  or port class.
* new_prefix: a prefix never seen anywhere in the data before (nor after) appears and carries
  ``magnitude`` (0.2 to 0.4) of the link's bytes for 4-36 hours; ``prefix`` and ``dims`` name it.

No anomaly starts in the first ``warmup_days`` (7) days, the detector's history; anomalies on
one link are at least 6 hours apart and never on a holiday of that link.

Holidays (1-2 weekdays per run, in each site's local calendar) drop traffic to the weekend
shape.  They are NOT labels: a detector that flags them gets false positives, as it would in
production, and ``score`` can count those separately (``holidays=truth["holidays"]``).  Benign
bursts (+15..60 % for 1-2 steps, about one per link-day, listed in ``truth["bursts"]``) are
likewise unlabelled, so a detector must be robust to them.

Detection dict (what a detector reports; extra keys are ignored)::

    {"kind": "spike", "link": "dc2:uplink", "start": ts, "end": ts}

Prefixes churn slowly and benignly: shares follow a daily log random walk, and a tenth of the
prefixes below rank 8 are born or retired during the run (ramping over a day, small shares),
so a new_prefix detector has to look at the share a new prefix carries, not only at its novelty.

Rows.  Each link-step has exactly ``rows_per_step`` rows (default 64; ``records=N`` picks it so
that the whole run has about N rows): the top keys (prefix x direction x service) of the day by
expected share, plus one row per (direction, service) carrying the rest of the remote address
space under prefix ``0.0.0.0/0``, so per-link, per-direction and per-port-class totals are
exact.  new_prefix anomalies add their own rows; rows that would carry zero bytes are dropped.
Generation is vectorised: 10 M rows take seconds.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import calendar
import math
import time

try:
    import numpy as np
except ImportError:  # sanity tests import module_utils without numpy
    np = None  # trafficdata.require_numpy() says so where it is needed

from ansible_collections.netstack.tuning.plugins.module_utils.core.common import NetstackError
from ansible_collections.netstack.tuning.plugins.module_utils.traffic import data as trafficdata
from ansible_collections.netstack.tuning.plugins.module_utils.traffic.data import Records

DAY = 86400
YEAR = 365.25 * DAY
DEFAULT_START = 1788739200          # Monday 2026-09-07 00:00:00 UTC
KINDS = ("spike", "level_shift", "drift", "new_prefix")
# Anomalies for 4 sites x 21 days after the warm-up; other sizes scale it (at least 1 each).
DEFAULT_MIX = {"spike": 8, "level_shift": 4, "drift": 4, "new_prefix": 4}
DEFAULT_ROWS_PER_STEP = 64
AGGREGATE_PREFIX = "0.0.0.0/0"
WARMUP_DAYS = 7

# Services a link carries: (port_class, proto, dscp, share of bytes, share of it in direction "in",
# bytes per packet in, bytes per packet out).  Shares are normalised; each prefix gets its own mix
# around them.  "in" is what the remote side sent (downloads dominate web).
SERVICES = (
    ("web", 6, 0, 0.50, 0.80, 1350, 320),
    ("web", 17, 0, 0.12, 0.85, 1250, 220),        # QUIC
    ("db", 6, 0, 0.09, 0.35, 900, 650),
    ("cache", 6, 0, 0.05, 0.50, 700, 300),
    ("dns", 17, 0, 0.012, 0.60, 160, 80),
    ("ssh", 6, 0, 0.01, 0.40, 600, 200),
    ("mail", 6, 0, 0.02, 0.65, 1000, 300),
    ("registered", 17, 46, 0.03, 0.50, 214, 214),  # RTP voice, EF
    ("registered", 6, 0, 0.08, 0.60, 1100, 400),
    ("ephemeral", 6, 0, 0.06, 0.50, 1000, 500),
)
# Port classes that may carry a class-wide anomaly, with their odds (dns: reflection floods,
# db/cache: replication and cache-fill storms, web: flash crowds).
CARRIER_CLASSES = (("web", 0.3), ("dns", 0.2), ("db", 0.15), ("cache", 0.1), ("registered", 0.1),
                   ("ssh", 0.05), ("mail", 0.05), ("ephemeral", 0.05))
TZ_OFFSETS = (1.0, -5.0, 8.0, 0.0, 5.5, -8.0, 10.0, 3.0)
_FIRST_OCTETS = tuple(a for a in range(1, 224) if a not in (10, 100, 127, 169, 172, 192, 198, 203))


def _int(value, field, low, high=None):
    try:
        v = int(value)
    except (TypeError, ValueError):
        raise NetstackError("must be an integer, got %r" % (value,), field=field)
    if v != value or v < low or (high is not None and v > high):
        raise NetstackError("must be an integer in [%s, %s], got %r" % (low, high if high is not None else "inf", value), field=field)
    return v


def _iso_day(epoch_day):
    return time.strftime("%Y-%m-%d", time.gmtime(epoch_day * DAY))


def _epoch_day(text, field):
    try:
        return calendar.timegm(time.strptime(text, "%Y-%m-%d")) // DAY
    except (TypeError, ValueError):
        raise NetstackError("holiday %r is not a day offset or a YYYY-MM-DD date" % (text,), field=field)


def _prefix_strings(rng, n, taken):
    """``n`` new remote prefixes (85 % IPv4 /24, 15 % IPv6 /48) not in ``taken`` (updated)."""
    out = []
    while len(out) < n:
        if rng.random() < 0.15:
            p = "2a0%x:%x:%x::/48" % (int(rng.integers(0, 16)), int(rng.integers(1, 65536)), int(rng.integers(1, 65536)))
        else:
            p = "%d.%d.%d.0/24" % (_FIRST_OCTETS[int(rng.integers(0, len(_FIRST_OCTETS)))], int(rng.integers(0, 256)),
                                   int(rng.integers(0, 256)))
        if p not in taken:
            taken.add(p)
            out.append(p)
    return out


# ------------------------------------------------------------------ anomaly schedule

def _draw_anomaly(rng, kind, spd, step):
    """Duration (steps), magnitude, carrier and revert flag of one anomaly of ``kind``."""
    a = {"kind": kind, "reverts": True, "ramp": None}
    if kind == "spike":
        a["steps"] = int(rng.integers(1, 7))
        a["magnitude"] = float(rng.uniform(3.0, 10.0))
        a["carrier"] = "prefix" if rng.random() < 0.5 else "port_class"
    elif kind == "level_shift":
        a["steps"] = int(round(rng.uniform(1.0, 3.0) * spd))
        sign = -1.0 if rng.random() < 0.4 else 1.0
        a["magnitude"] = sign * float(rng.uniform(0.4, 0.8))
        a["reverts"] = bool(rng.random() < 0.67)
        a["carrier"] = "link" if sign < 0 else ("prefix" if rng.random() < 0.5 else "port_class")
    elif kind == "drift":
        ramp = int(round(rng.uniform(1.0, 3.0) * spd))
        hold = max(1, int(round(rng.uniform(2.0, 6.0) * 3600 / step)))
        a["steps"], a["ramp"] = ramp + hold, ramp
        a["magnitude"] = float(rng.uniform(0.5, 1.5))
        a["carrier"] = "prefix" if rng.random() < 0.5 else "port_class"
    elif kind == "new_prefix":
        a["steps"] = max(1, int(round(rng.uniform(4.0, 36.0) * 3600 / step)))
        a["magnitude"] = float(rng.uniform(0.2, 0.4))
        a["carrier"] = "prefix"
    else:
        raise NetstackError("unknown anomaly kind %r (one of %s)" % (kind, ", ".join(KINDS)), field="anomalies")
    return a


def _anomaly_requests(anomalies, rng, sites, usable_days, links, spd, step):
    """The anomalies to place: a list of dicts (kind, link index, steps, magnitude, carrier, ...)
    and whether they were asked for explicitly (then failing to place one is an error)."""
    explicit = anomalies is not None
    if anomalies is None:
        if usable_days < 1:
            return [], False
        f = sites * usable_days / (4.0 * 21.0)
        anomalies = dict((k, max(1, int(round(n * f)))) for k, n in DEFAULT_MIX.items())
    reqs = []
    if isinstance(anomalies, dict):
        at = int(rng.integers(0, sites))
        for kind in KINDS + tuple(sorted(k for k in anomalies if k not in KINDS)):
            for _i in range(_int(anomalies.get(kind, 0), "anomalies.%s" % kind, 0)):
                a = _draw_anomaly(rng, kind, spd, step)
                a["link"], a["movable"] = at % sites, True     # round robin over links; may move if full
                at += 1
                reqs.append(a)
    elif isinstance(anomalies, (list, tuple)):
        for i, spec in enumerate(anomalies):
            field = "anomalies[%d]" % i
            if not isinstance(spec, dict) or "kind" not in spec:
                raise NetstackError("must be a dict with at least a kind", field=field)
            a = _draw_anomaly(rng, spec["kind"], spd, step)
            link = spec.get("link", int(rng.integers(0, sites)))
            if not isinstance(link, int):
                if link not in links:
                    raise NetstackError("unknown link %r (one of %s)" % (link, ", ".join(links)), field=field + ".link")
                link = links.index(link)
            a["link"] = _int(link, field + ".link", 0, sites - 1)
            if "steps" in spec:
                a["steps"] = _int(spec["steps"], field + ".steps", 1)
                a["reverts"] = True
                if a["kind"] == "drift":
                    a["ramp"] = max(1, int(round(a["steps"] * 0.9)))
            if "magnitude" in spec:
                a["magnitude"] = float(spec["magnitude"])
            if "carrier" in spec:
                if spec["carrier"] not in ("prefix", "port_class", "link"):
                    raise NetstackError("carrier must be prefix, port_class or link", field=field + ".carrier")
                a["carrier"] = spec["carrier"]
            if a["kind"] == "level_shift" and a["magnitude"] < 0:
                a["carrier"] = "link"
            if a["kind"] == "new_prefix":
                a["carrier"] = "prefix"
            if "value" in spec:
                a["value"] = spec["value"]
                if "carrier" not in spec and a["carrier"] != "link":
                    a["carrier"] = "port_class" if spec["value"] in set(x[0] for x in SERVICES) else "prefix"
            if "reverts" in spec:
                a["reverts"] = bool(spec["reverts"])
            m, ok = a["magnitude"], {"spike": a["magnitude"] > 1, "level_shift": -1 < a["magnitude"] != 0,
                                     "drift": a["magnitude"] > 0, "new_prefix": 0 < a["magnitude"] < 1}
            if not ok[a["kind"]]:
                raise NetstackError("magnitude %r is out of range for a %s (spike > 1, level_shift > -1 and not 0, drift > 0, "
                                    "new_prefix in (0, 1))" % (m, a["kind"]), field=field + ".magnitude")
            if "start" in spec:
                a["start_ts"] = _int(spec["start"], field + ".start", 0)
            reqs.append(a)
    else:
        raise NetstackError("must be None, a dict of counts per kind, or a list of anomaly dicts", field="anomalies")
    return reqs, explicit


def _place(reqs, explicit, rng, n_steps, warm, gap, busy, ts0, step, spd, n_links):
    """Give each request a start/end step on its link: no overlap (with ``gap`` steps between)
    with other anomalies or the link's holidays (``busy``: link -> list of (a, b)).  Requests
    that do not fit are returned as skipped (an error when they were asked for explicitly)."""
    placed, skipped = [], []
    order = sorted(range(len(reqs)), key=lambda i: ("start_ts" not in reqs[i], reqs[i]["reverts"], -reqs[i]["steps"], i))
    for i in order:
        a = reqs[i]
        start = None
        links = [a["link"]]
        if a.get("movable"):
            load = dict((li, sum(e - s + 1 for s, e in busy.get(li, ()))) for li in range(n_links))
            links += [li for _load, li in sorted((load[li], li) for li in range(n_links) if li != a["link"])]
        for attempt in (0, 1) if a.get("movable") else (0,):
            if attempt:      # a drawn anomaly that fits nowhere: try again at its shortest
                _shorten(a, spd, step)
            for link in links:
                start, e = _place_one(a, busy.setdefault(link, []), rng, n_steps, warm, gap, ts0, step, spd)
                if start is not None:
                    a["link"] = link
                    break
            if start is not None:
                break
        if start is None:
            if explicit:
                raise NetstackError("cannot place anomaly %d (%s, %d steps) on link %d: no free time after the warm-up"
                                    % (i, a["kind"], a["steps"], a["link"]), field="anomalies")
            skipped.append(a)
            continue
        a["a"], a["b"] = start, e
        a["steps"] = e - start + 1
        if a["kind"] == "drift":
            a["ramp"] = min(a["ramp"] or a["steps"], a["steps"])
        busy[a["link"]].append((start, e))
        placed.append(a)
    placed.sort(key=lambda a: (a["a"], a["link"]))
    return placed, skipped


def _shorten(a, spd, step):
    """The shortest duration of ``a``'s kind (see ``_draw_anomaly``)."""
    if a["kind"] == "spike":
        a["steps"] = 1
    elif a["kind"] == "level_shift":
        a["steps"], a["reverts"] = spd, True
    elif a["kind"] == "drift":
        a["ramp"] = spd
        a["steps"] = spd + max(1, int(round(2.0 * 3600 / step)))
    else:
        a["steps"] = max(1, int(round(4.0 * 3600 / step)))


def _place_one(a, taken, rng, n_steps, warm, gap, ts0, step, spd):
    """A free (start, end) step pair for ``a`` on one link, or (None, None)."""

    def free(s, e):
        return s >= warm and e < n_steps and all(e + gap < bs or s - gap > be for bs, be in taken)

    if "start_ts" in a:
        s = int(math.ceil((a["start_ts"] - ts0) / float(step)))
        e = n_steps - 1 if (a["kind"] == "level_shift" and not a["reverts"]) else s + a["steps"] - 1
        return (s, e) if free(s, e) else (None, None)
    if a["kind"] == "level_shift" and not a["reverts"]:       # lasts to the end of the data, at least a day
        lo, hi = max(warm, n_steps - a["steps"]), n_steps - spd
        starts = np.arange(lo, hi + 1)
        ends = np.full(len(starts), n_steps - 1)
    else:
        starts = np.arange(warm, n_steps - a["steps"] + 1)
        ends = starts + a["steps"] - 1
    ok = np.ones(len(starts), dtype=bool)
    for bs, be in taken:
        ok &= (ends + gap < bs) | (starts - gap > be)
    if ok.any():
        j = int(rng.choice(np.flatnonzero(ok)))
        return int(starts[j]), int(ends[j])
    return None, None


# ------------------------------------------------------------------ the generator

def generate(seed=0, sites=4, days=28, step=300, start=DEFAULT_START, prefixes_per_site=40, anomalies=None,
             growth=None, holidays=None, rows_per_step=None, records=None, warmup_days=WARMUP_DAYS, noise=0.06,
             bursts=1.0):
    """Synthetic traffic with labelled anomalies: returns ``(records, labels, truth)``.

    ``seed``: everything is a function of it (same arguments, same output).  ``sites``: links
    "dc1:uplink" ... ; ``days`` x ``step`` seconds (``step`` must divide a day); ``start``: UNIX
    seconds of the first interval (default Monday 2026-09-07 00:00 UTC).
    ``prefixes_per_site``: remote prefixes each link talks to (raised when ``rows_per_step``
    needs more keys).  ``rows_per_step``: rows per link per step (>= 24; default 64, about 2 M
    rows for 4 sites x 28 days) or ``records``: the total row count wanted (about, +-3 %).
    ``anomalies``: None (the default mix: 8 spikes, 4 level shifts, 4 drifts, 4 new prefixes per
    4 sites x 21 days after the warm-up, scaled), ``{kind: count}``, ``[]`` (none), or a list of
    dicts ``{"kind", "link" (name or index), "start" (ts), "steps", "magnitude", "carrier"
    ("prefix" | "port_class" | "link"), "value" (the port class or prefix), "reverts"}`` where
    missing fields are drawn ("start" goes up to the next step's ts; giving "steps" makes a level
    shift revert; "value" alone picks the carrier).  Explicit anomalies that overlap, start in the
    warm-up or run past the end are errors; drawn ones that fit nowhere are shortened, then
    skipped (``truth["params"]["skipped"]``).  ``growth``: yearly growth, None (10-40 % per site), a number or
    one per site.  ``holidays``: None (1 weekday for runs under 21 days, else 2, after the
    warm-up), [] or day offsets from ``start`` / "YYYY-MM-DD" dates.  ``noise``: sigma of each
    of the two multiplicative link noises (AR(1) log-normal and gamma).  ``bursts``: benign
    unlabelled bursts per link-day.

    ``labels``: list of label dicts (module docstring), sorted by start.  ``truth``:
    ``{"ts": int64 array, "step", "start", "links": [...], "clean": {link: float64 bytes per step,
    no noise or anomaly}, "expected": {link: clean times the anomalies' effect}, "holidays":
    [{"date", "link", "start", "end"}], "bursts": [{"link", "start", "end", "magnitude"}],
    "prefixes": {link: [prefix, ...] by rank}, "params": {...}}``.
    """
    trafficdata.require_numpy("traffic evaluation data")
    seed = _int(seed, "seed", 0)
    sites = _int(sites, "sites", 1, 64)
    days = _int(days, "days", 1, 3660)
    step = _int(step, "step", 1, DAY)
    start = _int(start, "start", 0)
    if DAY % step:
        raise NetstackError("must divide a day (86400 s), got %d" % step, field="step")
    prefixes_per_site = _int(prefixes_per_site, "prefixes_per_site", 1, 100000)
    warmup_days = _int(warmup_days, "warmup_days", 0)
    noise, bursts = float(noise), float(bursts)
    if noise < 0 or bursts < 0:
        raise NetstackError("noise and bursts must be >= 0", field="noise")
    rng = np.random.default_rng(seed)
    spd = DAY // step
    n_steps = days * spd
    n_svc = len(SERVICES)
    n_ds = 2 * n_svc
    if rows_per_step is not None and records is not None:
        raise NetstackError("give rows_per_step or records, not both", field="records")
    if records is not None:
        records = _int(records, "records", 1)
        rows_per_step = int(round(records / float(sites * n_steps)))
        if rows_per_step < n_ds + 4:
            raise NetstackError("%d records over %d sites x %d steps is %d rows per link-step, fewer than the %d needed; "
                                "use fewer days or sites or a longer step" % (records, sites, n_steps, rows_per_step, n_ds + 4),
                                field="records")
    rows_per_step = _int(DEFAULT_ROWS_PER_STEP if rows_per_step is None else rows_per_step, "rows_per_step", n_ds + 4)
    n_top = rows_per_step - n_ds
    n_pref = max(prefixes_per_site, int(math.ceil(1.5 * n_top / float(n_ds))) + 4)

    ts = start + step * (np.arange(n_steps, dtype=np.int64) + 1)
    mid = start + step * (np.arange(n_steps, dtype=np.float64) + 0.5)
    links = ["dc%d:uplink" % (i + 1) for i in range(sites)]

    # ---- per-site parameters
    base_bps = np.geomspace(200e6, 5e9, sites) if sites > 1 else np.array([1e9])
    base_bps = np.clip(base_bps[rng.permutation(sites)] * rng.uniform(0.9, 1.1, sites), 200e6, 5e9)
    tz = np.array([TZ_OFFSETS[i % len(TZ_OFFSETS)] for i in range(sites)])
    if growth is None:
        growth_rate = rng.uniform(0.10, 0.40, sites)
    elif isinstance(growth, (list, tuple)):
        if len(growth) != sites:
            raise NetstackError("needs one rate per site (%d), got %d" % (sites, len(growth)), field="growth")
        growth_rate = np.asarray(growth, dtype=np.float64)
    else:
        growth_rate = np.full(sites, float(growth))
    peak_hour = rng.uniform(13.0, 15.0, sites)
    night = rng.uniform(0.22, 0.38, sites)
    weekend_amp = rng.uniform(0.25, 0.45, sites)
    zipf = rng.uniform(0.9, 1.2, sites)

    # ---- holidays: epoch days, taken in each site's local calendar
    start_day = start // DAY
    if holidays is None:
        cand = [d for d in range(warmup_days, days) if (start_day + d + 3) % 7 < 5]
        n_hol = 0 if not cand else (1 if days < 21 else 2)
        hol_days = sorted(int(start_day + d) for d in rng.choice(cand, min(n_hol, len(cand)), replace=False)) if cand else []
    else:
        hol_days = []
        for i, h in enumerate(holidays):
            hol_days.append(start_day + _int(h, "holidays[%d]" % i, 0) if not isinstance(h, str) else _epoch_day(h, "holidays[%d]" % i))
        hol_days = sorted(set(hol_days))
    local_day = np.floor((mid[None, :] + tz[:, None] * 3600.0) / DAY).astype(np.int64)       # (sites, T)
    is_holiday = np.isin(local_day, hol_days) if hol_days else np.zeros((sites, n_steps), dtype=bool)
    busy, holiday_list = {}, []
    for li in range(sites):
        for hd in hol_days:
            idx = np.nonzero(local_day[li] == hd)[0]
            if len(idx):
                busy.setdefault(li, []).append((int(idx[0]), int(idx[-1])))
                holiday_list.append({"date": _iso_day(hd), "link": links[li], "start": int(ts[idx[0]]), "end": int(ts[idx[-1]])})

    # ---- anomaly schedule
    warm = warmup_days * spd
    usable_days = days - warmup_days
    reqs, explicit = _anomaly_requests(anomalies, rng, sites, usable_days, links, spd, step)
    gap = max(1, (6 * 3600) // step)
    placed, skipped = _place(reqs, explicit, rng, n_steps, warm, gap, busy, int(ts[0]), step, spd, sites)

    # ---- prefixes: a shared pool (popular prefixes are seen at several sites), per-site ranks
    taken = set([AGGREGATE_PREFIX])
    pool = _prefix_strings(rng, n_pref + (n_pref * (sites + 1)) // 2, taken)
    pop = 1.0 / np.arange(1, len(pool) + 1) ** 0.8
    site_prefixes = [[pool[j] for j in rng.choice(len(pool), n_pref, replace=False, p=pop / pop.sum())] for _s in range(sites)]
    new_prefixes = _prefix_strings(rng, sum(1 for a in placed if a["kind"] == "new_prefix"), taken)
    used = set([AGGREGATE_PREFIX])
    for sp in site_prefixes:
        used.update(sp)
    used.update(new_prefixes)
    prefix_cats = sorted(used)
    prefix_code = dict((p, i) for i, p in enumerate(prefix_cats))
    class_cats = sorted(set(s[0] for s in SERVICES))
    class_code = dict((c, i) for i, c in enumerate(class_cats))
    link_cats = sorted(links)
    link_code = np.asarray([link_cats.index(name) for name in links], dtype=np.int32)

    # service tables indexed by ds = direction * n_svc + service
    svc_share = np.asarray([s[3] for s in SERVICES])
    svc_share = svc_share / svc_share.sum()
    svc_in = np.asarray([s[4] for s in SERVICES])
    ds_class = np.asarray([class_code[s[0]] for s in SERVICES] * 2, dtype=np.int32)
    ds_proto = np.asarray([s[1] for s in SERVICES] * 2, dtype=np.int64)
    ds_dscp = np.asarray([s[2] for s in SERVICES] * 2, dtype=np.int64)
    ds_dir = np.repeat(np.arange(2, dtype=np.int32), n_svc)
    ds_bpp = np.asarray([s[5] for s in SERVICES] + [s[6] for s in SERVICES], dtype=np.float64)

    # ---- the big arrays, laid out (step, link, row) so the records come sorted by ts then link
    shape = (n_steps, sites, rows_per_step)
    out_bytes = np.empty(shape, dtype=np.float64)
    out_prefix = np.empty(shape, dtype=np.int32)
    out_ds = np.empty(shape, dtype=np.int32)
    out_bpp = np.empty(shape, dtype=np.float32)
    clean_series, expected_series, burst_list, site_info = {}, {}, [], {}
    labels, extra = [], []
    new_iter = iter(new_prefixes)
    t_idx = np.arange(n_steps)
    day_of_step = t_idx // spd
    agg_code = prefix_code[AGGREGATE_PREFIX]

    for li, link in enumerate(links):
        # clean expected link total, bytes per step
        local = mid + tz[li] * 3600.0
        hour = (local % DAY) / 3600.0
        dow = (np.floor(local / DAY).astype(np.int64) + 3) % 7          # 0 = Monday
        weekendish = (dow >= 5) | is_holiday[li]
        business = np.exp(-0.5 * ((hour - peak_hour[li]) / 3.5) ** 2) + 0.15 * np.exp(-0.5 * ((hour - 21.0) / 1.5) ** 2)
        level = night[li] + (1.0 - night[li]) * np.where(weekendish, weekend_amp[li], 1.0) * business
        trend = (1.0 + growth_rate[li]) ** ((mid - start) / YEAR)
        clean = base_bps[li] / 8.0 * step * level * trend
        clean_series[link] = clean

        # link noise: AR(1) log-normal (slow wander) times gamma (step to step)
        mult = np.ones(n_steps)
        if noise > 0:
            kern = 0.9 ** np.arange(48)
            z = np.convolve(rng.standard_normal(n_steps + 47), kern, mode="valid") / math.sqrt(float((kern ** 2).sum()))
            g = 1.0 / noise ** 2
            mult = np.exp(noise * z - noise ** 2 / 2.0) * rng.gamma(g, 1.0 / g, n_steps)
        # benign bursts, away from this link's anomalies
        n_b = int(rng.poisson(bursts * days)) if bursts > 0 else 0
        calm = np.ones(n_steps, dtype=bool)
        for a in placed:
            if a["link"] == li:
                calm[max(0, a["a"] - gap):a["b"] + gap + 1] = False
        for _b in range(n_b):
            s = int(rng.integers(0, n_steps))
            ln = int(rng.integers(1, 3))
            f = float(rng.uniform(0.15, 0.6))
            if calm[s:s + ln].all() and s + ln <= n_steps:
                mult[s:s + ln] *= 1.0 + f
                burst_list.append({"link": link, "start": int(ts[s]), "end": int(ts[s + ln - 1]), "magnitude": round(f, 3)})
        total = clean * mult

        # prefix shares: Zipf by site rank, a daily log random walk, a few prefixes born or retired
        w = 1.0 / np.arange(1, n_pref + 1) ** zipf[li]
        walk = np.cumsum(rng.normal(0.0, 0.08, (days + 1, n_pref)), axis=0)
        pos = (mid - start) / DAY
        k0 = np.minimum(pos.astype(np.int64), days - 1)
        fr = (pos - k0)[:, None]
        pshare = w[None, :] * np.exp(walk[k0] * (1.0 - fr) + walk[k0 + 1] * fr)
        alive = np.ones((n_steps, n_pref))
        churn_ranks = np.arange(min(8, n_pref), n_pref)
        n_churn = int(round(0.1 * len(churn_ranks)))
        if n_churn and days > 2:
            for j, p in enumerate(rng.choice(churn_ranks, n_churn, replace=False)):
                at = int(rng.integers(1, days - 1)) * spd
                if j % 2 == 0:   # born: ramps in over a day
                    alive[:, p] = np.clip((t_idx - at + 1) / float(spd), 0.0, 1.0)
                else:            # retired: ramps out over a day
                    alive[:, p] = np.clip((at - t_idx) / float(spd), 0.0, 1.0)
        pshare *= alive
        pshare /= pshare.sum(axis=1, keepdims=True)

        # each prefix's service mix and direction split, as one (prefix, ds) table
        mix = rng.dirichlet(svc_share * 30.0 + 1e-3, n_pref)                      # (P, S)
        inf = np.clip(svc_in[None, :] + rng.normal(0.0, 0.05, (n_pref, n_svc)), 0.05, 0.95)
        keymix = np.concatenate([mix * inf, mix * (1.0 - inf)], axis=1)            # (P, 2S)
        key_bpp = ds_bpp[None, :] * np.exp(rng.normal(0.0, 0.1, (n_pref, 1)))

        # the day's top keys (prefixes alive all day), the rest aggregated per (direction, service)
        day_share = pshare.reshape(days, spd, n_pref).mean(axis=1) * (alive.reshape(days, spd, n_pref).min(axis=1) > 0)
        score = (day_share[:, :, None] * keymix[None, :, :]).reshape(days, n_pref * n_ds)
        if n_top < score.shape[1]:
            top = np.sort(np.argpartition(-score, n_top - 1, axis=1)[:, :n_top], axis=1)
        else:
            top = np.tile(np.arange(score.shape[1]), (days, 1))
        keyidx = top[day_of_step]                                                 # (T, n_top)
        row_p = keyidx // n_ds
        row_ds = keyidx % n_ds
        share_top = pshare[t_idx[:, None], row_p] * keymix[row_p, row_ds]
        total_ds = pshare.dot(keymix)                                             # (T, 2S)
        emitted = np.bincount((t_idx[:, None] * n_ds + row_ds).ravel(), weights=share_top.ravel(),
                              minlength=n_steps * n_ds).reshape(n_steps, n_ds)
        agg = np.clip(total_ds - emitted, 0.0, None)
        shares = np.concatenate([share_top, agg], axis=1)                         # (T, R)
        codes_p = np.asarray([prefix_code[p] for p in site_prefixes[li]], dtype=np.int32)
        r_prefix = np.concatenate([codes_p[row_p], np.full((n_steps, n_ds), agg_code, dtype=np.int32)], axis=1)
        r_ds = np.concatenate([row_ds, np.broadcast_to(np.arange(n_ds), (n_steps, n_ds))], axis=1).astype(np.int32)
        r_bpp = np.concatenate([key_bpp[row_p, row_ds], np.broadcast_to(ds_bpp, (n_steps, n_ds))], axis=1)
        row_noise = np.exp(0.25 * rng.standard_normal(shares.shape) - 0.25 ** 2 / 2.0)
        b = total[:, None] * shares * row_noise

        # anomalies on this link
        factor = np.ones(n_steps)
        for a in placed:
            if a["link"] != li:
                continue
            s, e = a["a"], a["b"]
            sl = slice(s, e + 1)
            m = a["magnitude"]
            label = {"id": None, "kind": a["kind"], "link": link, "start": int(ts[s]), "end": int(ts[e]), "steps": e - s + 1,
                     "magnitude": round(m, 4), "prefix": None, "dims": {}}
            if a["kind"] == "new_prefix":
                p = next(new_iter)
                label["prefix"], label["dims"] = p, {"prefix": p}
                nb = total[sl] * m / (1.0 - m)
                for ds, frac in ((0, 0.7), (n_svc, 0.15), (1, 0.15)):   # in web/tcp, out web/tcp, in web/udp
                    n = e - s + 1
                    extra.append((ts[sl], np.full(n, link_code[li]), np.full(n, prefix_code[p]), np.full(n, ds),
                                  nb * frac * np.exp(0.25 * rng.standard_normal(n) - 0.03125), np.full(n, ds_bpp[ds])))
                factor[sl] = 1.0 / (1.0 - m)
            elif a["carrier"] == "link":
                b[sl] *= 1.0 + m
                factor[sl] = 1.0 + m
                label["dims"] = {"link": link}
            else:
                if a["kind"] == "spike":
                    rel = np.full(e - s + 1, m - 1.0)
                elif a["kind"] == "drift":
                    rel = m * np.minimum(1.0, (np.arange(e - s + 1) + 1.0) / a["ramp"])
                else:
                    rel = np.full(e - s + 1, m)
                mask = None
                if a["carrier"] == "prefix":
                    present = None
                    for d in range(s // spd, e // spd + 1):
                        pd = set((top[d] // n_ds).tolist())
                        present = pd if present is None else present & pd
                    want = a.get("value")
                    if want is not None:
                        if want not in site_prefixes[li] or site_prefixes[li].index(want) not in present:
                            raise NetstackError("prefix %r has no rows on %s at that time" % (want, link), field="anomalies")
                        cand = [site_prefixes[li].index(want)]
                    else:
                        cand = [q for _m, q in sorted((-pshare[sl, q].mean(), q) for q in present)][:5]
                    if cand:
                        q = int(cand[int(rng.integers(0, len(cand)))])
                        mask = r_prefix[sl] == codes_p[q]
                        label["prefix"], label["dims"] = site_prefixes[li][q], {"prefix": site_prefixes[li][q]}
                if mask is None:
                    cls = a.get("value") if a["carrier"] == "port_class" else None
                    if cls is None:
                        names, odds = zip(*CARRIER_CLASSES)
                        cls = names[int(rng.choice(len(names), p=np.asarray(odds) / sum(odds)))]
                    if cls not in class_code:
                        raise NetstackError("port class %r is not carried (one of %s)" % (cls, ", ".join(class_cats)), field="anomalies")
                    mask = ds_class[r_ds[sl]] == class_code[cls]
                    label["dims"] = {"port_class": cls}
                carried = np.where(mask, b[sl], 0.0)
                tot = carried.sum(axis=1)
                tot[tot <= 0] = 1.0
                b[sl] += carried * (rel * total[sl] / tot)[:, None]
                factor[sl] = 1.0 + rel
            if a["kind"] == "level_shift":
                label["reverts"] = bool(a["reverts"] and e < n_steps - 1)
            labels.append(label)
        expected_series[link] = clean * factor

        out_bytes[:, li, :] = b
        out_prefix[:, li, :] = r_prefix
        out_ds[:, li, :] = r_ds
        out_bpp[:, li, :] = r_bpp
        site_info[link] = {"base_bps": float(base_bps[li]), "tz_offset_h": float(tz[li]), "growth_per_year": float(growth_rate[li]),
                           "peak_hour": float(peak_hour[li]), "night_level": float(night[li]), "weekend_level": float(weekend_amp[li]),
                           "zipf_exponent": float(zipf[li])}

    # ---- columns
    n_base = out_bytes.size
    col_ts = np.broadcast_to(ts[:, None, None], shape).reshape(n_base)
    col_link = np.broadcast_to(link_code[None, :, None], shape).reshape(n_base)
    col_prefix = out_prefix.reshape(n_base)
    col_ds = out_ds.reshape(n_base)
    col_bytes = out_bytes.reshape(n_base)
    col_bpp = out_bpp.reshape(n_base)
    del out_bytes, out_prefix, out_ds, out_bpp
    if extra:
        parts = list(zip(*extra))
        col_ts = np.concatenate([col_ts] + list(parts[0]))
        col_link = np.concatenate([col_link] + list(parts[1]))
        col_prefix = np.concatenate([col_prefix] + list(parts[2]))
        col_ds = np.concatenate([col_ds] + list(parts[3]))
        col_bytes = np.concatenate([col_bytes] + list(parts[4]))
        col_bpp = np.concatenate([col_bpp] + list(parts[5]))
        order = np.argsort((col_ts - start) * sites + col_link, kind="stable")   # nearly sorted already
        col_ts, col_link, col_prefix, col_ds, col_bytes, col_bpp = (c[order] for c in (col_ts, col_link, col_prefix, col_ds, col_bytes, col_bpp))
    col_bytes = np.rint(col_bytes).astype(np.int64)
    keep = col_bytes >= 1
    if not keep.all():
        col_ts, col_link, col_prefix, col_ds, col_bytes, col_bpp = (c[keep] for c in (col_ts, col_link, col_prefix, col_ds, col_bytes, col_bpp))
    packets = np.maximum(1, np.rint(col_bytes / col_bpp)).astype(np.int64)
    recs = Records({"ts": col_ts, "proto": ds_proto[col_ds], "dscp": ds_dscp[col_ds], "bytes": col_bytes, "packets": packets},
                   {"link": col_link, "direction": ds_dir[col_ds], "prefix": col_prefix, "port_class": ds_class[col_ds]},
                   {"link": link_cats, "direction": ["in", "out"], "prefix": prefix_cats, "port_class": class_cats})

    labels.sort(key=lambda lb: (lb["start"], lb["link"]))
    for i, lb in enumerate(labels):
        lb["id"] = i
    counts = dict((k, sum(1 for lb in labels if lb["kind"] == k)) for k in KINDS)
    truth = {"ts": ts, "step": step, "start": start, "links": links, "clean": clean_series, "expected": expected_series,
             "holidays": holiday_list, "bursts": burst_list, "prefixes": dict((links[i], site_prefixes[i]) for i in range(sites)),
             "params": {"seed": seed, "sites": sites, "days": days, "step": step, "start": start, "rows_per_step": rows_per_step,
                        "prefixes_per_site": n_pref, "warmup_days": warmup_days, "noise": noise, "bursts": bursts,
                        "anomaly_counts": counts, "skipped": [dict((k, a[k]) for k in ("kind", "steps", "magnitude")) for a in skipped],
                        "links": site_info}}
    return recs, labels, truth


# ------------------------------------------------------------------ series, split

def link_series(records, first_ts, step, steps):
    """Bytes per link per step from records: ``{link: float64 array of length steps}``, index
    ``(ts - first_ts) // step`` (``first_ts`` = ``truth["ts"][0]``); rows outside are ignored."""
    trafficdata.require_numpy("traffic evaluation data")
    i = (records.ints["ts"] - int(first_ts)) // int(step)
    ok = (i >= 0) & (i < steps)
    n_links = max(1, len(records.cats["link"]))
    flat = records.codes["link"][ok].astype(np.int64) * steps + i[ok]
    sums = np.bincount(flat, weights=records.ints["bytes"][ok].astype(np.float64), minlength=n_links * steps).reshape(n_links, steps)
    return dict((name, sums[j]) for j, name in enumerate(records.cats["link"]))


def split(records, labels, cutoff_ts):
    """Cut for forecasting: ``(history, future, history_labels, future_labels)``.

    ``history`` holds the rows with ``ts < cutoff_ts``, ``future`` those with ``ts >= cutoff_ts``.
    A label goes to the history if it starts before the cutoff and to the future if it ends at
    or after it, so one spanning the cutoff is in both (unclipped)."""
    trafficdata.require_numpy("traffic evaluation data")
    cutoff_ts = int(cutoff_ts)
    before = records.ints["ts"] < cutoff_ts
    return (records.take(before), records.take(~before), [lb for lb in labels if lb["start"] < cutoff_ts],
            [lb for lb in labels if lb["end"] >= cutoff_ts])


# ------------------------------------------------------------------ scoring

def _intervals(items, field):
    out = []
    for i, it in enumerate(items):
        if not isinstance(it, dict) or "link" not in it or "start" not in it or "end" not in it:
            raise NetstackError("must be a dict with link, start and end", field="%s[%d]" % (field, i))
        s, e = it["start"], it["end"]
        if e < s:
            raise NetstackError("end %r is before start %r" % (e, s), field="%s[%d]" % (field, i))
        out.append((str(it.get("kind", "unknown")), it["link"], s, e))
    return out


def _ratio(num, den):
    return (num / float(den)) if den else None


def _f1(p, r):
    if p is None or r is None:
        return None
    return 0.0 if p + r == 0 else 2.0 * p * r / (p + r)


def score(labels, detections, tolerance=600, holidays=None):
    """Score detections against labels.

    A detection *matches* a label when they are on the same link and the detection's
    ``[start, end]`` overlaps the label's ``[start - tolerance, end + tolerance]`` (bounds
    inclusive; default tolerance 600 s = 2 steps of 300 s).

    * recall of kind k = labels of kind k matched by any detection (of any reported kind) /
      labels of kind k (``tp``);
    * precision of kind k = detections reported as kind k that match any label (of any kind;
      ``tp_detections``) / detections reported as kind k;
    * ``overall``: the same with kinds ignored, plus ``false_positives`` (detections matching no
      label) and ``on_holiday`` (those of them overlapping, within the tolerance, a holiday of
      their link when ``holidays`` = ``truth["holidays"]`` is given; still false positives);
    * ``kind_accuracy`` = share of matched labels whose best detection (the largest overlap
      with the tolerance-widened label; ties: the earlier in ``detections``) reports the
      label's kind.

    Ratios with a zero denominator are None (no detections: precision None, not 1.0), and F1
    is None when precision or recall is.  Returns ``{"per_kind": {k: {"precision", "recall",
    "f1", "labels", "detections", "tp", "tp_detections"}}, "overall": {...}, "kind_accuracy": x}``
    with an entry for every standard kind and every kind seen.
    """
    tol = float(tolerance)
    labs = _intervals(labels, "labels")
    dets = _intervals(detections, "detections")
    by_link = {}
    for j, d in enumerate(dets):
        by_link.setdefault(d[1], []).append(j)
    det_hit = [False] * len(dets)
    lab_hit = [False] * len(labs)
    right_kind = 0
    for i, (kind, link, s, e) in enumerate(labs):
        lo, hi = s - tol, e + tol
        best, best_ov = None, None
        for j in by_link.get(link, ()):
            ds, de = dets[j][2], dets[j][3]
            if ds <= hi and de >= lo:
                det_hit[j] = True
                ov = min(de, hi) - max(ds, lo)
                if best is None or ov > best_ov:
                    best, best_ov = j, ov
        if best is not None:
            lab_hit[i] = True
            right_kind += dets[best][0] == kind
    kinds = list(KINDS) + sorted(set(x[0] for x in labs + dets) - set(KINDS))
    per_kind = {}
    for k in kinds:
        n_lab = sum(1 for x in labs if x[0] == k)
        n_det = sum(1 for x in dets if x[0] == k)
        tp = sum(1 for i, x in enumerate(labs) if x[0] == k and lab_hit[i])
        tpd = sum(1 for j, x in enumerate(dets) if x[0] == k and det_hit[j])
        p, r = _ratio(tpd, n_det), _ratio(tp, n_lab)
        per_kind[k] = {"precision": p, "recall": r, "f1": _f1(p, r), "labels": n_lab, "detections": n_det, "tp": tp, "tp_detections": tpd}
    tp, tpd = sum(lab_hit), sum(det_hit)
    p, r = _ratio(tpd, len(dets)), _ratio(tp, len(labs))
    on_holiday = 0
    if holidays:
        hols = _intervals(holidays, "holidays")
        for j, d in enumerate(dets):
            if not det_hit[j] and any(h[1] == d[1] and d[2] <= h[3] + tol and d[3] >= h[2] - tol for h in hols):
                on_holiday += 1
    overall = {"precision": p, "recall": r, "f1": _f1(p, r), "labels": len(labs), "detections": len(dets), "tp": tp,
               "tp_detections": tpd, "false_positives": len(dets) - tpd, "on_holiday": on_holiday}
    return {"per_kind": per_kind, "overall": overall, "kind_accuracy": _ratio(right_kind, tp)}


def seasonal_naive(series, season, horizon):
    """The seasonal-naive forecast: the last ``season`` values of ``series`` repeated over
    ``horizon`` steps (the baseline a forecaster has to beat)."""
    trafficdata.require_numpy("traffic evaluation data")
    x = np.asarray(series, dtype=np.float64)
    season = _int(season, "season", 1)
    horizon = _int(horizon, "horizon", 0)
    if len(x) < season:
        raise NetstackError("series has %d values, fewer than one season (%d)" % (len(x), season), field="season")
    reps = int(math.ceil(horizon / float(season))) if horizon else 0
    return np.tile(x[len(x) - season:], reps)[:horizon]


def forecast_error(actual, forecast, naive):
    """Errors of a forecast against the actual series: ``{"n", "mae", "smape", "naive_mae",
    "mase"}``.  ``smape`` is the mean of ``2|a - f| / (|a| + |f|)`` (0..2; a 0/0 term counts 0);
    ``mase`` is MAE / the MAE of ``naive`` (e.g. ``seasonal_naive``) on the same steps: < 1 means
    better than naive, None when the naive forecast is perfect.  Steps where any of the three
    is not finite are left out."""
    trafficdata.require_numpy("traffic evaluation data")
    a, f, nv = (np.asarray(v, dtype=np.float64).ravel() for v in (actual, forecast, naive))
    if not (len(a) == len(f) == len(nv)):
        raise NetstackError("actual, forecast and naive differ in length (%d, %d, %d)" % (len(a), len(f), len(nv)), field="forecast")
    ok = np.isfinite(a) & np.isfinite(f) & np.isfinite(nv)
    a, f, nv = a[ok], f[ok], nv[ok]
    if not len(a):
        return {"n": 0, "mae": None, "smape": None, "naive_mae": None, "mase": None}
    err = np.abs(a - f)
    den = np.abs(a) + np.abs(f)
    smape = np.where(den > 0, 2.0 * err / np.where(den > 0, den, 1.0), 0.0)
    mae, naive_mae = float(err.mean()), float(np.abs(a - nv).mean())
    return {"n": int(len(a)), "mae": mae, "smape": float(smape.mean()), "naive_mae": naive_mae,
            "mase": (mae / naive_mae) if naive_mae > 0 else None}


def attribution_hit(label, top_contributors, k=None):
    """Whether a detector's attribution names what carried the anomaly: True when one of the
    first ``k`` (default all) ``{"dimension", "value", ...}`` dicts equals one of the label's
    ``dims`` (values compared as strings, so 443 matches "443")."""
    dims = label.get("dims") or {}
    wanted = set((str(d), str(v)) for d, v in dims.items())
    items = list(top_contributors or ())[:k] if k is not None else list(top_contributors or ())
    return any((str(c.get("dimension")), str(c.get("value"))) in wanted for c in items)
