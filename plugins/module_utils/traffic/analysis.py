# -*- coding: utf-8 -*-
# Copyright: netstack.tuning contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Traffic analysis (capability 5): profile, percentiles and 95th-percentile billing,
anomalies with their top contributors, water-level alerts, capacity and cost projection.

Everything works on ``trafficdata.Records`` with numpy, column-wise: records are binned
once into a (series x time) matrix with ``bincount`` (a series is one link and direction),
and every later step is array arithmetic on that matrix or on sorted record slices.

The model, per series, on y = log(rate + floor):

* seasonal profile P[slot]: the median of y over every past day of the same kind at the
  same time of day (and its two neighbour bins).  The season is the richest one the data
  supports: hour-of-week with >= 14 days, time-of-day with >= 2 days, none below.  Days
  listed in ``holidays`` take Sunday's profile.  Medians make the profile robust to the
  anomalies it must later expose.
* d = y - P is the deseasonalised series; sigma is its noise, estimated from the median
  absolute first difference (robust to level changes as well as outliers).
* spikes / dips: d against its centred 2-hour rolling median, in sigmas; runs of at most
  ``spike_max`` bins.
* level shifts and drifts: the change of d's median between the ``shift_window`` after and
  the one before each time; a sustained change of at least ``shift_min`` (log units) that
  also shows within one hour is a level shift, one that does not is a drift.  A drift is
  also looked for at day scale (24 h windows), where a slow ramp adds up.  A sharp change
  that ends a gradual climb (or fall) of 12 h to 4 days back to where it started is that
  drift's end: reported as one drift from where the ramp began.
* new heavy prefix: a remote prefix first seen after the first ``warmup_days`` that carries
  at least ``new_prefix_share`` of its link while present.
* attribution: for each anomaly, every dimension value's bytes in the anomaly window
  against its expected bytes (its share in the preceding day times the expected total);
  ranked by its part of the excess (or deficit).
* projection: daily 95th percentiles, weekday factors removed, a Theil-Sen line on their
  logarithm; intervals from the spread of pairwise slopes and of the residuals.

All rates are bits per second; timestamps UNIX seconds (UTC).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import bisect
import datetime
import math
import re
import time
import warnings

try:
    import zoneinfo
except ImportError:  # Python < 3.9: UTC only, a named zone says so
    zoneinfo = None

try:
    import numpy as np
except ImportError:
    np = None  # trafficdata.require_numpy() says so where it is needed

from ansible_collections.netstack.tuning.plugins.module_utils.core import cpus, nsutil
from ansible_collections.netstack.tuning.plugins.module_utils.core.common import NetstackError, strict_int, strict_number
from ansible_collections.netstack.tuning.plugins.module_utils.traffic import data as trafficdata

DAY = 86400
WEEK = 7 * DAY
DIMENSIONS = ("prefix", "port_class", "proto", "dscp", "direction")

DEFAULTS = {
    "step": 300,             # bin width, s (5 minutes: the billing convention)
    "percentiles": [50, 90, 95, 99],
    "spike_sigma": 6.0,      # spike threshold, in noise sigmas
    "spike_max": 12,         # longest spike, bins
    "spike_min": 1.0,        # and at least this relative change (1.0: double, or half for a dip)
    "spike_min_sustained": 0.5,  # ... or this much, when above spike_sigma for spike_sustained seconds or more
    "spike_sustained": 900,
    "outage_min": 0.5,       # an outage: the link at least this much below its expected rate (0.5: halved)
    "shift_window": 6 * 3600,  # level-shift comparison window, s
    "shift_min": 0.25,       # smallest sustained change, log units (~ +28 % / -22 %)
    "shift_sigma": 6.0,      # and in sigmas of the windowed median (8 before the second generator)
    "drift_min": 0.25,       # smallest change over a day for a drift, log units
    "warmup_days": 7,        # history before new prefixes count as new
    "new_prefix_share": 0.08,
    "top_k": 5,
    "capacity": {},          # link -> bits/s
    "warn": 0.7,             # water levels, fraction of capacity
    "critical": 0.9,
    "price_per_mbps": None,  # per month, on the billable 95th percentile
    "horizon_days": 90,
    "holidays": [],          # "YYYY-MM-DD" days that behave like a Sunday (every link, its local date)
    "link_holidays": {},     # link -> more such days for that link only
    "timezone": "UTC",       # IANA zone the day shape is built in (each link's local time)
    "timezones": {},         # link -> its own zone
    "plot_points": 1500,
}


# Bounds of each option: (kind, smallest, largest).  "int" takes an int or ASCII digits,
# "number" a finite int or float (or its ASCII decimal text); inf and NaN never pass.
BOUNDS = {
    "step": ("int", 1, DAY),
    "spike_max": ("int", 1, 100000),
    "shift_window": ("int", 1, 30 * DAY),
    "warmup_days": ("int", 1, 3650),
    "top_k": ("int", 1, 1000),
    "horizon_days": ("int", 1, 3650),
    "plot_points": ("int", 1, 1000000),
    "spike_sigma": ("number", 1e-9, 1e6),
    "spike_min": ("number", 1e-9, 1e6),
    "spike_min_sustained": ("number", 1e-9, 1e6),
    "spike_sustained": ("int", 1, DAY),
    "outage_min": ("number", 0.01, 0.999),
    "shift_min": ("number", 1e-9, 1e6),
    "shift_sigma": ("number", 1e-9, 1e6),
    "drift_min": ("number", 1e-9, 1e6),
    "new_prefix_share": ("number", 1e-9, 1.0),
    "warn": ("number", 1e-9, 10.0),
    "critical": ("number", 1e-9, 10.0),
}
MAX_CAPACITY_BPS = 1e15      # 1 Pbit/s
MAX_PRICE = 1e9              # per Mbit/s per month
MAX_BINS = 4000000           # bins per series (about 38 years at 300 s, 7.6 at 60 s)
GAP_DENSITY = 0.9            # empty bins count as gaps in data with records in at least 90 % of bins
MAX_LIST = 10000             # holidays, percentiles
LINK_WIDE_SHARE = 0.1        # attribution: values with this share of a link's bytes must all change alike for "the whole link"
PARALLEL_MIN_RECORDS = 200000  # from this many records, a forked child analyses two of every three series
CHILD_TIMEOUT = 3600
SLIDING_MIN = 32             # windows from this many bins take sliding_nanmedian (below, a partition per window is faster)
_DECIMAL = re.compile(r"\A\s*[-+]?(?:[0-9]{1,20}(?:\.[0-9]{0,20})?|\.[0-9]{1,20})(?:[eE][-+]?[0-9]{1,3})?\s*\Z")
_DATE = re.compile(r"\A([0-9]{4})-([0-9]{2})-([0-9]{2})\Z")
EPOCH_ORDINAL = datetime.date(1970, 1, 1).toordinal()


def _number(value, field, lo, hi):
    """A finite number in [lo, hi] from an int, a float or ASCII decimal text."""
    if isinstance(value, str):
        if not _DECIMAL.match(value):
            raise NetstackError("must be a number, got %r" % value[:40], field=field)
        value = float(value)
    return strict_number(value, field, lo, hi)


def _list(value, field):
    if not isinstance(value, (list, tuple)):
        raise NetstackError("must be a list, got %s" % type(value).__name__, field=field)
    if len(value) > MAX_LIST:
        raise NetstackError("at most %d entries, got %d" % (MAX_LIST, len(value)), field=field)
    return list(value)


def holiday_day(value, field):
    """UNIX day number (UTC) of a ``YYYY-MM-DD`` date (text or a date)."""
    if isinstance(value, datetime.datetime):
        value = value.date()
    if isinstance(value, datetime.date):
        return value.toordinal() - EPOCH_ORDINAL
    m = _DATE.match(value) if isinstance(value, str) else None
    try:
        if not m:
            raise ValueError()
        return datetime.date(*(int(g) for g in m.groups())).toordinal() - EPOCH_ORDINAL
    except ValueError:
        raise NetstackError("%s is not a YYYY-MM-DD date" % (repr(value)[:40],), field=field)


def options(opts=None, prefix=""):
    """Defaults merged with ``opts``; bad values raise NetstackError naming the option
    (``prefix`` + its key: the module passes ``analysis.``).  Every value is checked
    strictly: numbers finite and bounded, lists where lists are expected."""
    o = dict(DEFAULTS)
    if opts is None:
        opts = {}
    if not isinstance(opts, dict):
        raise NetstackError("must be a mapping of analysis options", field=prefix.rstrip(".") or "analysis")
    for k, v in opts.items():
        if k not in DEFAULTS:
            raise NetstackError("unknown analysis option (known: %s)" % ", ".join(sorted(DEFAULTS)),
                                field=prefix + str(k)[:60])
        if v is not None:
            o[k] = v
    for k, (kind, lo, hi) in sorted(BOUNDS.items()):
        if kind == "int":
            o[k] = strict_int(o[k], prefix + k, lo, hi)
        else:
            o[k] = _number(o[k], prefix + k, lo, hi)
    if DAY % o["step"]:
        raise NetstackError("must divide a day (86400 s) evenly, e.g. 60, 300, 900, 3600", field=prefix + "step")
    if o["warn"] >= o["critical"]:
        raise NetstackError("warn (%s) must be below critical (%s)" % (o["warn"], o["critical"]), field=prefix + "warn")
    pcts = _list(o["percentiles"], prefix + "percentiles")
    o["percentiles"] = [_number(p, "%spercentiles[%d]" % (prefix, i), 1e-9, 100) for i, p in enumerate(pcts)]
    if not isinstance(o["capacity"], dict):
        raise NetstackError("must map link names to bits per second", field=prefix + "capacity")
    caps = {}
    for link, bps in o["capacity"].items():
        if not isinstance(link, str) or not link or len(link) > 256:
            raise NetstackError("link names are non-empty text of at most 256 characters, got %s"
                                % repr(link)[:40], field=prefix + "capacity")
        caps[link] = _number(bps, "%scapacity.%s" % (prefix, link), 1e-9, MAX_CAPACITY_BPS)
    o["capacity"] = caps
    if o["price_per_mbps"] is not None:
        o["price_per_mbps"] = _number(o["price_per_mbps"], prefix + "price_per_mbps", 0, MAX_PRICE)
    holidays = _list(o["holidays"] or [], prefix + "holidays")
    o["_holiday_days"] = [holiday_day(h, "%sholidays[%d]" % (prefix, i)) for i, h in enumerate(holidays)]
    o["_link_holidays"] = {}
    for link, days in _link_map(o["link_holidays"], prefix + "link_holidays", "link names to lists of YYYY-MM-DD days").items():
        field = "%slink_holidays.%s" % (prefix, link)
        o["_link_holidays"][link] = [holiday_day(h, "%s[%d]" % (field, i)) for i, h in enumerate(_list(days, field))]
    o["_zones"] = {None: zone(o["timezone"], prefix + "timezone")}
    for link, name in _link_map(o["timezones"], prefix + "timezones", "link names to IANA time zones").items():
        o["_zones"][link] = zone(name, "%stimezones.%s" % (prefix, link))
    return o


def _link_map(value, field, what):
    if not isinstance(value, dict):
        raise NetstackError("must map %s" % what, field=field)
    if len(value) > MAX_LIST:
        raise NetstackError("at most %d links, got %d" % (MAX_LIST, len(value)), field=field)
    for link in value:
        if not isinstance(link, str) or not link or len(link) > 256:
            raise NetstackError("link names are non-empty text of at most 256 characters, got %s"
                                % repr(link)[:40], field=field)
    return value


def zone(name, field="timezone"):
    """The tzinfo of an IANA zone name ("Europe/Berlin"); None for UTC."""
    if name in ("UTC", "Etc/UTC", "Z"):
        return None
    if not isinstance(name, str) or not name or len(name) > 64:
        raise NetstackError("must be an IANA time zone name such as Europe/Berlin, got %s" % repr(name)[:40],
                            field=field)
    if zoneinfo is None:
        raise NetstackError("time zones need Python 3.9 or later (zoneinfo); use UTC", field=field)
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        raise NetstackError("unknown time zone %r (an IANA name such as Europe/Berlin)" % name[:64], field=field)


def link_calendar(o, link):
    """(tzinfo or None, holiday day numbers) of ``link``: its own zone or the common one, and
    the common holidays plus its own."""
    return o["_zones"].get(link, o["_zones"][None]), sorted(set(o["_holiday_days"]) | set(o["_link_holidays"].get(link, ())))


def local_times(times, tz):
    """``times`` (UNIX s) as wall-clock seconds in ``tz`` counted from 1970-01-01 00:00 local,
    so that ``// DAY`` is the local date's day number and ``% DAY`` the local time of day;
    ``times`` itself for UTC (tz None).  The offset is looked up once per UTC day, and per
    time only on days where it changes (a daylight-saving switch)."""
    t = np.asarray(times, dtype=np.int64)
    if tz is None or not len(t):
        return t

    def offset(x):
        return int(datetime.datetime.fromtimestamp(int(x), datetime.timezone.utc).astimezone(tz).utcoffset().total_seconds())

    days, inv = np.unique(t // DAY, return_inverse=True)
    at_start = np.asarray([offset(d * DAY) for d in days], dtype=np.int64)
    at_end = np.asarray([offset(d * DAY + DAY - 1) for d in days], dtype=np.int64)
    off = at_start[inv]
    for k in np.flatnonzero(at_start != at_end):
        sel = np.flatnonzero(inv == k)
        off[sel] = [offset(x) for x in t[sel]]
    return t + off


# ------------------------------------------------------------------ binning

class Binned(object):
    """Bytes per (series, bin).  Series i is (links[i], directions[i])."""

    def __init__(self, rec, step):
        ts = rec.ints["ts"]
        self.step = step
        self.t0 = int(ts.min()) // step * step
        self.nbins = int(ts.max()) // step * step // step - self.t0 // step + 1
        if self.nbins > MAX_BINS:
            # a wrong time in some source (milliseconds, a year off) would allocate years of bins
            raise NetstackError("the records run from %s to %s UTC: %d bins of %d s, more than %d; a time in the "
                                "sources is wrong, or analyse fewer days at once"
                                % (_day(int(ts.min()) // DAY), _day(int(ts.max()) // DAY), self.nbins, step, MAX_BINS),
                                field="sources")
        dir_map = np.asarray([trafficdata.DIRECTIONS.index(d) if d in trafficdata.DIRECTIONS else 0
                              for d in rec.cats["direction"]] or [0], dtype=np.int64)
        sid_all = rec.codes["link"].astype(np.int64) * 2 + dir_map[rec.codes["direction"]]
        present = np.flatnonzero(np.bincount(sid_all, minlength=2))    # the series there are (a sort of every record, for a handful of values, cost more)
        remap = np.full(2 * max(1, len(rec.cats["link"])), -1, dtype=np.int64)
        remap[present] = np.arange(len(present))
        self.sid = remap[sid_all]                       # per record
        self.bin = (ts - self.t0) // step               # per record
        self.links = [rec.cats["link"][int(s) // 2] for s in present]
        self.directions = [trafficdata.DIRECTIONS[int(s) % 2] for s in present]
        n = len(present) * self.nbins
        key = self.sid * self.nbins + self.bin
        self.bytes = np.bincount(key, weights=rec.ints["bytes"], minlength=n).reshape(len(present), self.nbins)
        # records per (series, bin): where each series has data, and (summed) each link and the
        # whole set, without another pass over the records
        has = np.bincount(key, minlength=n).reshape(len(present), self.nbins) > 0
        del key
        # bins before a series' first record and after its last are "no data", not zero traffic
        first = has.argmax(axis=1)
        last = self.nbins - 1 - has[:, ::-1].argmax(axis=1)
        idx = np.arange(self.nbins)
        self.valid = (idx[None, :] >= first[:, None]) & (idx[None, :] <= last[:, None])
        self.times = self.t0 + idx * step               # bin starts
        # Gaps in the data: bins in which no link has a single record, in data that has records
        # in nearly every bin (a collector or an export that stopped, not a quiet network).
        # They are "no data" for every series: not an outage, not zero traffic for billing.
        empty = ~has.any(axis=0)
        self.gap = empty if self.nbins >= 8 and empty.mean() <= 1.0 - GAP_DENSITY else np.zeros(self.nbins, bool)
        self.valid &= ~self.gap[None, :]
        # The same per link: a bin without a single record of a link that has records in
        # nearly every bin of its span is that link's exporter or collector missing, not its
        # traffic stopping (an outage leaves some flows: the routing protocol, the monitoring).
        self.link_gap = {}
        for code in np.unique(present // 2):
            seen_any = has[present // 2 == code].any(axis=0)
            seen = np.flatnonzero(seen_any)
            span = np.zeros(self.nbins, bool)
            span[seen[0]:seen[-1] + 1] = True
            missing = span & ~seen_any & ~self.gap
            if missing.any() and span.sum() >= 8 and missing.sum() <= (1.0 - GAP_DENSITY) * span.sum():
                self.link_gap[rec.cats["link"][int(code)]] = missing
        for i, link in enumerate(self.links):
            if link in self.link_gap:
                self.valid[i] &= ~self.link_gap[link]
        self._bps = self.bytes * 8.0 / step
        self._local = {}

    def gaps(self):
        """[{start, end, bins}] of each run of gap bins (times in UNIX s, end inclusive), and
        [{link, start, end, bins}] of each run of one link's own gap bins."""
        out = []
        for link, mask in [(None, self.gap)] + sorted(self.link_gap.items()):
            edges = np.flatnonzero(np.diff(np.concatenate(([0], mask.astype(np.int8), [0]))))
            for i0, i1 in zip(edges[::2], edges[1::2]):
                g = {"start": int(self.times[i0]), "end": int(self.times[i1 - 1]) + self.step - 1, "bins": int(i1 - i0)}
                if link is not None:
                    g["link"] = link
                out.append(g)
        return out

    def bps(self):
        """Rates, bits/s per (series, bin); computed once, shared by every step."""
        return self._bps

    def local(self, tz):
        """local_times of the bin starts in ``tz``, computed once per zone (a link's two
        directions and the projection share them)."""
        key = str(tz)
        if key not in self._local:
            self._local[key] = local_times(self.times, tz)
        return self._local[key]


# ------------------------------------------------------------------ helpers

def row_nanmedian(a):
    """``np.nanmedian(a, axis=1)`` of a 2-D float array, NaN for an all-NaN row.  numpy's
    nanmedian of small rows goes through a masked-array sort (slow: it was half of the whole
    analysis); here rows without NaN take np.median (a partition) and the others a plain sort,
    where NaN sorts last and the valid count says where the middle is."""
    a = np.asarray(a, dtype=float)
    out = np.empty(a.shape[0])
    if not a.size:
        out.fill(np.nan)
        return out
    nan = np.isnan(a)
    holed = nan.any(axis=1)
    whole = ~holed
    if whole.all():
        return np.median(a, axis=1)
    if whole.any():
        out[whole] = np.median(a[whole], axis=1)
    rows = np.sort(a[holed], axis=1)
    cnt = a.shape[1] - nan[holed].sum(axis=1)
    lo, hi = np.maximum(cnt - 1, 0) // 2, cnt // 2
    at = np.arange(len(rows))
    with np.errstate(invalid="ignore"):
        out[holed] = np.where(cnt > 0, (rows[at, lo] + rows[at, hi]) / 2, np.nan)
    return out


def sliding_nanmedian(pad, w):
    """``row_nanmedian`` of every ``w``-long window of ``pad`` (len(pad) - w + 1 of them), by
    a sorted list of the window's values (NaN left out) that each step inserts into and
    deletes from: O(log w) to find, a short memmove to shift, where a partition per window
    is O(w).  Faster from a few dozen bins on (a day of 5-minute bins: 13x); the same values."""
    vals = pad.tolist()
    known = (~np.isnan(pad)).tolist()
    out, win = [], []
    insort, left, nan = bisect.insort, bisect.bisect_left, math.nan
    for i, v in enumerate(vals):
        if known[i]:
            insort(win, v)
        if i >= w and known[i - w]:
            del win[left(win, vals[i - w])]
        if i >= w - 1:
            c = len(win)
            out.append((win[(c - 1) // 2] + win[c // 2]) / 2 if c else nan)
    return np.array(out, dtype=float)


def _window_nanmedian(pad, w):
    """row_nanmedian of the ``w``-long windows of ``pad``, the faster way for ``w``."""
    if w >= SLIDING_MIN:
        return sliding_nanmedian(pad, w)
    return row_nanmedian(np.lib.stride_tricks.sliding_window_view(pad, w))


def _rolling(x, w, fn):
    """Centred rolling ``fn`` (np.nanmedian, ...) over an odd window, NaN-padded edges."""
    h = w // 2
    pad = np.concatenate([np.full(h, np.nan), x, np.full(h, np.nan)])
    if fn is np.nanmedian:
        return _window_nanmedian(pad, w)
    view = np.lib.stride_tricks.sliding_window_view(pad, w)
    with np.errstate(all="ignore"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return fn(view, axis=1)


def _block_rolling_median(x, w, k):
    """Centred rolling median over about ``w`` bins, taken over the medians of ``k``-bin
    blocks (hours): a day-long window for a fraction of the cost, centred to within a block."""
    n = len(x)
    m = -(-n // k) * k
    blocks = row_nanmedian(np.concatenate([x, np.full(m - n, np.nan)]).reshape(-1, k))
    return np.repeat(_rolling(blocks, max(1, w // k) | 1, np.nanmedian), k)[:n]


def _windowed_median(x, w):
    """(median of x[t-w:t], median of x[t:t+w]) for every t, NaN where a side is short."""
    n = len(x)
    pad = np.concatenate([np.full(w, np.nan), x, np.full(w, np.nan)])
    med = _window_nanmedian(pad, w)
    valid = np.concatenate([[0], np.cumsum(~np.isnan(pad))])
    med[valid[w:] - valid[:-w] < w // 2] = np.nan
    before = med[:n]          # window pad[t .. t+w) = x[t-w .. t)
    after = med[w:w + n]      # x[t .. t+w)
    return before, after


def _runs(mask):
    """[start, end] index pairs (inclusive) of True runs."""
    if not mask.any():
        return []
    m = np.concatenate([[False], mask, [False]]).astype(np.int8)
    d = np.diff(m)
    starts = np.flatnonzero(d == 1)
    ends = np.flatnonzero(d == -1) - 1
    return list(zip(starts.tolist(), ends.tolist()))


def _day_kind(days, holidays):
    """Weekday index (Mon 0) of each UNIX day number; holidays count as Sunday."""
    wd = (days + 3) % 7
    if holidays:
        wd = np.where(np.isin(days, holidays), 6, wd)
    return wd


# ------------------------------------------------------------------ the seasonal model

class Model(object):
    """Seasonal profile + noise scale of one series (see the module docstring).  ``times``
    are the bins' starts in the link's local time (local_times), so days and times of day
    are the link's own; a day of a daylight-saving switch has one hour more or less."""

    def __init__(self, bps, valid, times, step, holidays):
        self.step = step
        self.per_day = DAY // step
        self.floor = max(1000.0, 0.01 * float(np.median(bps[valid])) if valid.any() else 1000.0)
        y = np.log(bps + self.floor)
        y[~valid] = np.nan
        self.y = y
        days = times // DAY
        span_days = valid.sum() * step / DAY
        self.season = "weekly" if span_days >= 14 else "daily" if span_days >= 2 else "none"
        tod = (times % DAY) // step
        kind = _day_kind(days, holidays) if self.season == "weekly" else np.zeros_like(days)
        self.slot = kind * self.per_day + tod
        self.profile = None
        self.level = np.zeros_like(y)
        if self.season != "none":
            # The shape of a day and the level of a day are estimated apart, so growth, a
            # level shift or a drift (which move whole days) cannot leak into the shape:
            # shape = median over days of the same kind of (y - that day's median);
            # weekday effect = median over days of a kind of (day median - the median of
            # the working days in the centred 7-day window around it).
            first = int(days[0])
            dn = days - first
            daily = self._daily_median(y, dn)
            shape = self._profile(y - daily[dn], kind, tod, dn)
            wk = np.zeros(7)
            day_kind = _day_kind(np.arange(len(daily)) + first, holidays) if self.season == "weekly" else np.zeros(len(daily), int)
            if self.season == "weekly":
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    # against the working days (Monday to Friday, holidays not) around each
                    # day: a week with holidays in it would pull a plain 7-day median down
                    # to the weekend's level and hide the weekend effect
                    work = np.where(day_kind < 5, daily, np.nan)
                    base = _rolling(work, 7, np.nanmedian)
                    few = _rolling(np.isfinite(work).astype(float), 7, np.nansum) < 2
                    base = np.where(few, _rolling(work, 15, np.nanmedian), base)
                    rel = daily - base
                    for k in range(7):
                        if np.isfinite(rel[day_kind == k]).any():
                            wk[k] = np.nanmedian(rel[day_kind == k])
            nk = len(shape) // self.per_day
            self.profile = shape + np.repeat(wk[:nk], self.per_day)
            # level: the median of the three previous days' deseasonalised medians (causal,
            # so the expected rate of a day does not contain that day's anomaly)
            dd = daily - wk[day_kind]
            lvl = np.full(len(dd), np.nan)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                for j in range(len(dd)):
                    lvl[j] = np.nanmedian(dd[max(0, j - 3):j]) if j else dd[0]
            lvl = np.where(np.isnan(lvl), np.nanmedian(dd), lvl)
            self.level = lvl[dn]
            self.wk, self.dd, self.first_day = wk, dd, first
        if self.profile is None:
            base = np.nanmedian(y) if valid.any() else 0.0
            self.expected_y = np.full_like(y, base)
            self.d = y - self.expected_y
        else:
            self.expected_y = self.profile[self.slot] + self.level
            self.d = y - self.profile[self.slot]
        diffs = np.diff(self.d)
        diffs = diffs[~np.isnan(diffs)]
        self.sigma = max(1e-3, 1.4826 * float(np.median(np.abs(diffs))) / math.sqrt(2)) if len(diffs) else 1.0

    def _profile(self, y, kind, tod, dn):
        nk = int(kind.max()) + 1 if len(kind) else 1
        prof = np.full(nk * self.per_day, np.nan)
        ndays = int(dn.max()) + 1 if len(dn) else 1
        pooled = None
        for k in range(nk):
            sel = kind == k
            if not sel.any():
                continue
            rows = np.full((ndays, self.per_day), np.nan)
            # place each sample by (day number relative to the first day, time of day); the
            # hour repeated when clocks go back keeps its later sample
            rows[dn[sel], tod[sel]] = y[sel]
            # A working day's kind seen on fewer than 3 days (two weeks of data: two Mondays)
            # also takes the median working day as one more day: the median of two days is
            # their mean, and one day's 2-hour outage would put half of it into the shape.
            if nk > 1 and k < 5 and len(np.unique(dn[sel])) < 3:
                if pooled is None:
                    work = kind < 5
                    every = np.full((ndays, self.per_day), np.nan)
                    every[dn[work], tod[work]] = y[work]
                    pooled = row_nanmedian(every.T)[None, :]
                rows = np.concatenate([rows, pooled])
            stacked = np.concatenate([np.roll(rows, -1, axis=1), rows, np.roll(rows, 1, axis=1)], axis=0)
            prof[k * self.per_day:(k + 1) * self.per_day] = row_nanmedian(stacked.T)
        # a kind of day never seen (e.g. no Sunday yet) falls back to the all-days profile
        if np.isnan(prof).any():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                allday = np.nanmedian(prof.reshape(nk, self.per_day), axis=0)
            allday = np.where(np.isnan(allday), np.nanmedian(y), allday)
            prof = np.where(np.isnan(prof), np.tile(allday, nk), prof)
        return prof

    def _daily_median(self, y, dn):
        """Median of y per day number (NaN for a day without data)."""
        out = np.full(int(dn.max()) + 1, np.nan)
        order = np.argsort(dn, kind="stable")
        bounds = np.searchsorted(dn[order], np.arange(len(out) + 1))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            for k in range(len(out)):
                seg = y[order[bounds[k]:bounds[k + 1]]]
                if len(seg):
                    out[k] = np.nanmedian(seg)
        return out

    def forecast_y(self, times, holidays):
        """Expected y at future bin starts: the profile, the level of the last three days and
        the Theil-Sen trend of the deseasonalised daily medians (with >= 7 days)."""
        if self.profile is None:
            return np.full(len(times), float(self.expected_y[-1]))
        days = times // DAY
        kind = _day_kind(days, holidays) if self.season == "weekly" else np.zeros_like(days)
        slot = kind * self.per_day + (times % DAY) // self.step
        ok = np.isfinite(self.dd)
        x = np.flatnonzero(ok).astype(float)
        level = float(np.median(self.dd[ok][-3:]))
        slope = 0.0
        if ok.sum() >= 7:
            slope, _lo, _hi, _a = theil_sen(x, self.dd[ok])
        # the level is centred on the day before the last one
        ahead = days - (self.first_day + x[-1]) + 1
        return self.profile[slot] + level + slope * ahead

    def expected_bps(self):
        return np.maximum(np.exp(self.expected_y) - self.floor, 0.0)


# ------------------------------------------------------------------ detection

def _volume_events(model, o):
    """Spikes/dips, level shifts and drifts of one series: list of (kind, i0, i1, score, magnitude)."""
    d, sigma, step = model.d, model.sigma, o["step"]
    events = []
    n = len(d)
    if n < 8 or np.all(np.isnan(d)):
        return events
    # spikes and dips: against a centred 2-hour rolling median
    w = max(5, (2 * 3600 // step) | 1)
    base = _rolling(d, w, np.nanmedian)
    z = (d - base) / sigma
    # a run: bins at least half the threshold out, one of them past it (so a spike that dips
    # under the threshold for a bin is one spike, and its length is its own)
    absz = np.abs(np.nan_to_num(z))
    for i0, i1 in _runs(absz > o["spike_sigma"] / 2):
        seg = z[i0:i1 + 1]
        peak = float(seg[np.nanargmax(np.abs(seg))])
        if abs(peak) <= o["spike_sigma"] or i1 - i0 + 1 > o["spike_max"]:
            continue
        dev = (d - base)[i0:i1 + 1]
        mag = float(np.exp(dev[np.nanargmax(np.abs(dev))]) - 1)   # +1.0: doubled, -0.5: halved
        least = o["spike_min_sustained"] if (i1 - i0 + 1) * step >= o["spike_sustained"] else o["spike_min"]
        if (peak > 0 and mag < least) or (peak < 0 and mag > -least / (1 + least)):
            continue
        events.append(("spike" if peak > 0 else "dip", i0, i1, abs(peak), mag))
    events.extend(_outages(model, o))
    smooth = _rolling(d, max(3, (3 * 3600 // step) | 1), np.nanmedian) if n >= DAY // step else None
    hb, ha = _windowed_median(d, max(2, 3600 // step))
    quick = ha - hb            # the change over the hour around each bin
    # sustained changes at two scales: hours (shift or fast drift) and a day (slow drift)
    for scale, win in (("hours", o["shift_window"] // step), ("day", DAY // step)):
        if n < 2 * win:
            continue
        before, after = _windowed_median(d, win)
        delta = after - before
        noise = 1.4826 * np.nanmedian(np.abs(delta - np.nanmedian(delta))) if np.isfinite(delta).any() else 0.0
        thr = max(o["shift_min"] if scale == "hours" else o["drift_min"], o["shift_sigma"] * noise)
        big = np.abs(np.nan_to_num(delta)) > thr
        for i0, i1 in _runs(big):
            seg = delta[i0:i1 + 1]
            j = i0 + int(np.nanargmax(np.abs(seg)))
            size = float(delta[j])
            # how much of the change happens within the hour around its sharpest point
            k0, k1 = max(0, i0 - win // 2), min(n, i1 + win // 2 + 1)
            qj = k0 + int(np.nanargmax(np.abs(np.nan_to_num(quick[k0:k1]) * np.sign(size))))
            sharp = float(np.nan_to_num(quick[qj])) / size if size else 0.0
            # a day-window find must be sharper to be a step: the day's windows also see a
            # drift, and a spike on its ramp is sharp for an hour
            kind = "level_shift" if sharp >= (0.6 if scale == "hours" else 0.8) else "drift"
            start = qj if kind == "level_shift" else i0
            if kind == "level_shift" and smooth is not None:
                ramp0 = _ramp_start(smooth, d, qj, size, step)
                if ramp0 is not None:
                    kind, start = "drift", ramp0
            events.append((kind, start, i1 if kind == "drift" else min(n - 1, qj + win), abs(size) / max(noise, 1e-6),
                           float(math.exp(size) - 1)))
    return _merge_events(events, o["shift_window"] // step, d, o["drift_min"])


def _outages(model, o):
    """Drops longer than a dip (``spike_max`` bins) and no longer than ``shift_window``: the
    link at least ``outage_min`` below the rate this time of day and the previous days' level
    lead to expect (the model's expected_y, which a few hours of outage cannot move), and at
    least 3 noise sigmas below it, on a 5-bin running median.  A drop that lasts longer is a
    level shift; one still running at the end of the data is reported (it may yet become one).
    Bins without data (gaps) end a run: a gap is not an outage."""
    if model.profile is None or len(model.y) < 5:
        return []
    step = o["step"]
    resid = model.y - model.expected_y
    low = _rolling(resid, 5, np.nanmedian)
    # and against the day around it: d's median over a centred 24-hour window, which a drop of
    # at most 6 hours cannot move, while a day the model puts at the wrong level (a weekend
    # or a holiday unlike the ones before) moves with it
    day = _block_rolling_median(model.d, DAY // step, max(1, 3600 // step))
    local = _rolling(model.d, 5, np.nanmedian) - day
    thr = min(math.log1p(-o["outage_min"]), -3.0 * model.sigma)
    out = []
    for i0, i1 in _runs((np.nan_to_num(low, nan=0.0) < thr) & (np.nan_to_num(local, nan=0.0) < thr)):
        length = i1 - i0 + 1
        if length <= o["spike_max"] or length * step > o["shift_window"]:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            depth = float(np.nanmedian(resid[i0:i1 + 1]))
        out.append(("outage", i0, i1, abs(depth) / model.sigma, float(math.exp(depth) - 1)))
    return out


def _ramp_start(smooth, d, qj, size, step):
    """Where the ramp began if the sharp change at ``qj`` is a drift's end (d climbed, or
    sank, gradually over 12 h to 4 days and now snaps back), else None.  Walk back from qj
    to the last time the smoothed d was at the level it returns to; the ramp is gradual when
    halfway back in time d was 20-85 % of the way up."""
    w3 = max(2, 3 * 3600 // step)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        after = np.nanmedian(d[qj:qj + 2 * w3])
    if not np.isfinite(after):
        return None
    lo_t = max(0, qj - 4 * DAY // step)
    seg = smooth[lo_t:max(lo_t, qj - w3)]
    near = np.flatnonzero(np.abs(seg - after) < 0.25 * abs(size))
    if not len(near):
        return None
    t = lo_t + int(near[-1])
    length = qj - t
    if length < DAY // (2 * step):
        return None
    top = smooth[max(0, qj - w3)]
    mid = smooth[t + length // 2]
    if not (np.isfinite(top) and np.isfinite(mid)) or top == after or np.sign(top - after) != -np.sign(size):
        return None
    frac = (mid - after) / (top - after)
    return t if 0.2 < frac < 0.85 else None


def _merge_events(events, margin, d, drift_min):
    """One event per group: a level shift explains the spike at its edge; a drift found at
    both scales is one drift; a drift that ends in (or within ``margin`` bins of) a level
    shift is the ramp before it only when d moved by ``drift_min`` between the drift's start
    and the shift's start (then it is cut where the shift begins), otherwise it is the
    shift's own edge seen through a day-long window."""
    rank = {"outage": 0, "level_shift": 1, "drift": 2, "spike": 3, "dip": 3}
    edge = max(1, margin // 6)   # an hour at the defaults: the 2-hour rolling median's half width
    events = sorted(events, key=lambda e: (rank[e[0]], e[1]))
    kept = []
    for e in events:
        if e[0] in ("spike", "dip"):
            k = next((k for k in kept if _explains(k, e, edge)), None)
            if k is None:
                kept.append(e)   # a spike inside a drift or a shift is an event of its own
                continue
            if k[0] == e[0]:     # one spike seen twice: one event
                kept[kept.index(k)] = (k[0], min(k[1], e[1]), max(k[2], e[2]), max(k[3], e[3]),
                                       k[4] if abs(k[4]) >= abs(e[4]) else e[4])
            continue             # else the outage, or the shift's or drift's sharp edge
        if e[0] in ("level_shift", "drift") and any(k[0] == "outage" and k[1] - edge <= e[1] <= k[2] + edge for k in kept):
            continue             # the outage's fall or its recovery, seen through a longer window
        if e[0] == "drift":
            shift = next((k for k in kept if k[0] == "level_shift" and e[1] <= k[2] + margin and k[1] <= e[2] + margin), None)
            if shift is not None:
                w = max(2, margin // 2)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    rise = np.nanmedian(d[max(0, shift[1] - w):shift[1]]) - np.nanmedian(d[max(0, e[1] - w):e[1] + 1])
                if shift[1] - e[1] < margin or not abs(rise) >= drift_min:
                    continue
                e = (e[0], e[1], shift[1] - 1, e[3], e[4])
        clash = None
        for i, k in enumerate(kept):
            if e[1] <= k[2] and k[1] <= e[2]:
                clash = i
                break
        if clash is None:
            kept.append(e)
            continue
        k = kept[clash]
        if rank[e[0]] == rank[k[0]]:
            kept[clash] = (k[0], min(k[1], e[1]), max(k[2], e[2]), max(k[3], e[3]),
                           k[4] if abs(k[4]) >= abs(e[4]) else e[4])
        # a lower-ranked event overlapping a kept one is explained by it
    return sorted(kept, key=lambda e: e[1])


def _explains(k, e, edge):
    """Whether the kept event ``k`` accounts for the spike or dip ``e``: e lies inside an outage
    (or within ``edge`` bins of it), or at the sharp edge of a level shift (its start) or of a
    drift (its end, where a ramp snaps back), or it is the same kind and overlaps."""
    if k[0] == e[0]:
        return e[1] <= k[2] and k[1] <= e[2]
    if k[0] == "outage":
        return k[1] - edge <= e[1] and e[2] <= k[2] + edge
    at = k[1] if k[0] == "level_shift" else k[2] if k[0] == "drift" else None
    return at is not None and abs(e[1] - at) <= edge


def _new_prefixes(rec, binned, o):
    """New heavy prefixes per link: list of (link, prefix, first_bin, last_bin, share)."""
    if not len(rec):
        return []
    link = rec.codes["link"].astype(np.int64)
    pre = rec.codes["prefix"].astype(np.int64)
    npre = max(1, len(rec.cats["prefix"]))
    key = link * npre + pre
    nkeys = max(1, len(rec.cats["link"])) * npre
    if nkeys <= max(4 * len(key), 1 << 16):
        # a dense table of (link, prefix) pairs instead of a sort of every record
        first_all = np.full(nkeys, np.iinfo(np.int64).max)
        np.minimum.at(first_all, key, binned.bin)
        ukey = np.flatnonzero(first_all != np.iinfo(np.int64).max)
        first = first_all[ukey]
        dense = np.full(nkeys, -1, dtype=np.int64)
        dense[ukey] = np.arange(len(ukey))
        inv = dense[key]
    else:
        ukey, inv = np.unique(key, return_inverse=True)
        first = np.full(len(ukey), np.iinfo(np.int64).max)
        np.minimum.at(first, inv, binned.bin)
    warm = o["warmup_days"] * DAY // binned.step
    link_first = np.full(len(rec.cats["link"]), np.iinfo(np.int64).max)
    np.minimum.at(link_first, link, binned.bin)
    cand = np.flatnonzero(first > link_first[ukey // npre] + warm)
    out = []
    if not len(cand):
        return out
    # bytes per (link, bin): the binned series' (a link's directions summed), not another pass over the records
    link_bytes = np.zeros((len(rec.cats["link"]), binned.nbins))
    link_index = dict((name, i) for i, name in enumerate(rec.cats["link"]))
    for i, name in enumerate(binned.links):
        link_bytes[link_index[name]] += binned.bytes[i]
    is_cand = np.zeros(len(ukey), dtype=bool)
    is_cand[cand] = True
    rows = is_cand[inv]
    cidx = np.searchsorted(cand, inv[rows])
    per = np.bincount(cidx * binned.nbins + binned.bin[rows], weights=rec.ints["bytes"][rows],
                      minlength=len(cand) * binned.nbins).reshape(len(cand), binned.nbins)
    for c, u in enumerate(cand):
        li = int(ukey[u] // npre)
        active = per[c] > 0
        share = np.where(link_bytes[li] > 0, per[c] / np.maximum(link_bytes[li], 1), 0.0)
        heavy = active & (share >= o["new_prefix_share"])
        if heavy.sum() < 3:
            continue
        i0, i1 = int(np.flatnonzero(heavy)[0]), int(np.flatnonzero(heavy)[-1])
        mean_share = float(per[c][i0:i1 + 1].sum() / max(1.0, link_bytes[li][i0:i1 + 1].sum()))
        out.append((rec.cats["link"][li], rec.cats["prefix"][int(ukey[u] % npre)], i0, i1, mean_share))
    return out


# ------------------------------------------------------------------ attribution

class Slicer(object):
    """Records sorted by (link, ts) for fast windows (the sort is made on the first window:
    an analysis without anomalies never pays for it)."""

    def __init__(self, rec):
        self.rec = rec
        self.order = None
        self.link_index = dict((name, i) for i, name in enumerate(rec.cats["link"]))

    def window(self, link, t0, t1):
        if self.order is None:
            self.order = np.lexsort((self.rec.ints["ts"], self.rec.codes["link"]))
            self.ts = self.rec.ints["ts"][self.order]
            self.bounds = np.concatenate([[0], np.cumsum(np.bincount(self.rec.codes["link"],
                                                                     minlength=len(self.link_index)))]).tolist()
        li = self.link_index[link]
        lo, hi = self.bounds[li], self.bounds[li + 1]
        a = lo + np.searchsorted(self.ts[lo:hi], t0)
        b = lo + np.searchsorted(self.ts[lo:hi], t1)
        return self.order[a:b]


def _values(rec, dim, idx):
    if dim in trafficdata.STRING_COLUMNS:
        return rec.codes[dim][idx], rec.cats[dim]
    return rec.ints[dim][idx], None


def attribute(rec, slicer, link, t0, t1, ref0, ref1, expected_total, top_k, direction=None):
    """Top contributors to the difference between what a window carried and what was expected.

    Each dimension value's expected bytes = its share of the reference window [ref0, ref1)
    times ``expected_total``.  Returns a list sorted by |delta|."""
    cur = slicer.window(link, t0, t1)
    ref = slicer.window(link, ref0, ref1)
    if direction is not None:
        dcode = rec.cats["direction"].index(direction) if direction in rec.cats["direction"] else -1
        cur = cur[rec.codes["direction"][cur] == dcode]
        ref = ref[rec.codes["direction"][ref] == dcode]
    actual_total = float(rec.ints["bytes"][cur].sum())
    ref_total = float(rec.ints["bytes"][ref].sum()) or 1.0
    excess = actual_total - expected_total
    out = []
    # Link-wide: in every dimension, each value with a tenth of the expected bytes or more,
    # and the rest taken together, changed in proportion (0.5-2x its share of the change):
    # the link itself changed (an outage, a shift of everything), not one prefix or class,
    # which would stand out against the others.
    link_wide = excess != 0 and expected_total > 0
    for dim in DIMENSIONS:
        if dim == "direction" and direction is not None:
            continue
        cv, cats = _values(rec, dim, cur)
        rv, _c = _values(rec, dim, ref)
        size = int(max(cv.max() if len(cv) else 0, rv.max() if len(rv) else 0)) + 1
        a = np.bincount(cv, weights=rec.ints["bytes"][cur], minlength=size)
        r = np.bincount(rv, weights=rec.ints["bytes"][ref], minlength=size)
        e = r / ref_total * expected_total
        delta = a - e
        if link_wide:
            share = e / expected_total
            big = share >= LINK_WIDE_SHARE
            # the values under a tenth each, taken together as one more value
            groups_share = np.append(share[big], share[~big].sum())
            groups_delta = np.append(delta[big], delta[~big].sum())
            seen = groups_share >= LINK_WIDE_SHARE
            ratio = (groups_delta[seen] / excess) / groups_share[seen]
            link_wide = bool(len(ratio)) and bool(((ratio >= 0.5) & (ratio <= 2.0)).all())
        for v in np.argsort(-np.abs(delta))[:top_k]:
            if delta[v] == 0:
                continue
            out.append({"dimension": dim, "value": cats[v] if cats is not None else int(v),
                        "bytes": float(a[v]), "expected_bytes": float(e[v]), "delta_bytes": float(delta[v]),
                        "share_of_change": float(delta[v] / excess) if excess else None,
                        "new": bool(r[v] == 0 and a[v] > 0)})
    # Rank by change x relative change: among values that carry the same change, the one
    # whose own traffic changed the most (the specific culprit, not the class it sits in) wins.
    out.sort(key=lambda c: -abs(c["delta_bytes"]) * abs(c["delta_bytes"]) / max(c["bytes"], c["expected_bytes"], 1.0))
    if link_wide:
        out.insert(0, {"dimension": "link", "value": link, "bytes": actual_total, "expected_bytes": float(expected_total),
                       "delta_bytes": excess, "share_of_change": 1.0, "new": False})
    return out[:top_k]


# ------------------------------------------------------------------ billing, levels, projection

def months_utc(times):
    """'YYYY-MM' (UTC calendar month) of each Unix time in ``times``."""
    return np.asarray(times, dtype="int64").astype("datetime64[s]").astype("datetime64[M]").astype(str)


def billing(binned, o):
    """95th percentile per link and calendar month (UTC: each bin counts in the month its
    start falls in), in and out, billable = the greater."""
    bps = binned.bps()
    month_of_bin = months_utc(binned.times)
    out = []
    links = sorted(set(binned.links))
    for link in links:
        for m in sorted(set(month_of_bin.tolist())):
            row = {"link": link, "month": m}
            sel_m = month_of_bin == m
            for i, (lk, dr) in enumerate(zip(binned.links, binned.directions)):
                if lk != link:
                    continue
                v = bps[i][sel_m & binned.valid[i]]
                row["p95_%s_bps" % dr] = float(np.percentile(v, 95)) if len(v) else 0.0
                row["samples_%s" % dr] = int(len(v))
            row["billable_bps"] = max(row.get("p95_in_bps", 0.0), row.get("p95_out_bps", 0.0))
            if o["price_per_mbps"] is not None:
                row["cost"] = round(row["billable_bps"] / 1e6 * o["price_per_mbps"], 2)
            out.append(row)
    return out


def _lag1(r):
    """Lag-1 autocorrelation of residuals ``r`` (0 when it cannot be told)."""
    r = np.asarray(r, dtype=float) - np.mean(r) if len(r) else np.asarray(r, dtype=float)
    den = float((r * r).sum())
    return float((r[1:] * r[:-1]).sum() / den) if len(r) > 3 and den > 0 else 0.0


def theil_sen(x, y, z=1.645, groups=None):
    """Theil-Sen slope with Sen's rank-based 90 % interval (z = 1.645), and the intercept.
    ``groups`` (small ints): only pairs within one group count, so a step between groups
    is no slope (the interval's variance is then the groups' sum, as in a blocked Kendall
    test); the intercept is over all points (with groups, take each group's level instead)."""
    i, j = np.triu_indices(len(x), 1)
    sizes = [len(x)]
    if groups is not None:
        same = groups[i] == groups[j]
        i, j = i[same], j[same]
        sizes = np.bincount(groups).tolist()
    dx = x[j] - x[i]
    ok = dx != 0
    slopes = np.sort((y[j] - y[i])[ok] / dx[ok])
    if not len(slopes):
        return 0.0, 0.0, 0.0, float(np.median(y)) if len(y) else 0.0
    b = float(np.median(slopes))
    m = len(slopes)
    c = z * math.sqrt(sum(k * (k - 1) * (2 * k + 5) for k in sizes) / 18.0)
    lo = slopes[max(0, int(math.floor((m - c) / 2.0)))]
    hi = slopes[min(m - 1, int(math.ceil((m + c) / 2.0)))]
    a = float(np.median(y - b * x))
    return b, float(lo), float(hi), a


def project(binned, o):
    """Daily 95th percentile per series, trend and interval out to ``horizon_days``."""
    per_day = DAY // binned.step
    bps = binned.bps()
    out = []
    horizon = o["horizon_days"]
    for i in range(len(binned.links)):
        valid = binned.valid[i]
        tz, holidays = link_calendar(o, binned.links[i])
        days = binned.local(tz) // DAY
        udays = np.unique(days[valid])
        # whole days only (at least 80 % of the bins present)
        counts = np.bincount(days[valid] - udays[0], minlength=len(udays)) if len(udays) else np.array([])
        full = udays[counts[udays - udays[0]] >= 0.8 * per_day] if len(udays) else udays
        rec = {"link": binned.links[i], "direction": binned.directions[i], "days_used": int(len(full))}
        if len(full) < 3:
            rec["note"] = "needs at least 3 whole days of data; has %d" % len(full)
            out.append(rec)
            continue
        p95 = np.asarray([np.percentile(bps[i][valid & (days == dday)], 95) for dday in full])
        ly = np.log(np.maximum(p95, 1.0))
        wd = _day_kind(full, holidays)
        factor = np.zeros(7)
        if len(full) >= 14:
            for k in range(7):
                if (wd == k).any():
                    factor[k] = np.median(ly[wd == k]) - np.median(ly)
        x = (full - full[-1]).astype(float)
        adj = ly - factor[wd]
        b, blo, bhi, a = theil_sen(x, adj)
        resid = adj - (a + b * x)
        shift = _level_shift(adj, resid)
        after = None
        if shift is not None:
            # A lasting step is not growth. The trend is the whole history's with the step
            # taken out (a few days after a step are far too few for a slope: they gave
            # +10^14 %/year), and the projection starts from the level after the step.
            k, ratio = shift
            after = (np.arange(len(adj)) >= k).astype(np.int64)
            b, blo, bhi, _a = theil_sen(x, adj, groups=after)       # pairs on one side of the step only
            flat = adj - b * x
            level = np.where(after == 1, np.median(flat[after == 1]), np.median(flat[after == 0]))
            resid = flat - level
            a = float(level[-1])
            rec["level_shift"] = {"day": _day(full[k]), "ratio": round(ratio, 3)}
            rec["note"] = ("a lasting level shift on %s (x%.2f): growth is the trend of all %d days with the step "
                           "taken out, projected from the level after it" % (_day(full[k]), ratio, len(full)))
        # days are not independent (a busy week is busy on every day of it): with lag-1
        # autocorrelation rho > 0 the slope's interval is widened by sqrt((1 + rho) / (1 - rho))
        rho = min(max(_lag1(resid), 0.0), 0.9)
        if rho > 0:
            _b, blo, bhi, _a = theil_sen(x, adj, z=1.645 * math.sqrt((1 + rho) / (1 - rho)), groups=after)
        rlo, rhi = np.percentile(resid, [5, 95])
        fut = np.arange(1, horizon + 1, dtype=float)
        fwd = _day_kind(full[-1] + fut.astype(np.int64), holidays)
        point = a + b * fut + factor[fwd]
        # slope uncertainty grows with the horizon, residual spread does not
        lo = point + (blo - b) * fut + rlo
        hi = point + (bhi - b) * fut + rhi
        rec.update({
            "growth_per_year": float(math.exp(b * 365) - 1),
            "growth_per_year_interval": [float(math.exp(blo * 365) - 1), float(math.exp(bhi * 365) - 1)],
            "last_day_p95_bps": float(p95[-1]),
            "history": [{"day": _day(d), "p95_bps": float(v)} for d, v in zip(full, p95)],
            "daily": [{"day": _day(full[-1] + int(f)), "p95_bps": float(math.exp(p)), "lo_bps": float(math.exp(lw)),
                       "hi_bps": float(math.exp(h))} for f, p, lw, h in zip(fut, point, lo, hi)],
        })
        for label, k in (("p95_in_30d", 30), ("p95_in_90d", 90)):
            if k <= horizon:
                rec[label] = {"point_bps": float(math.exp(point[k - 1])), "lo_bps": float(math.exp(lo[k - 1])),
                              "hi_bps": float(math.exp(hi[k - 1]))}
        out.append(rec)
    return out


def _note_recent_changes(proj, anomalies, end):
    """A level shift or drift that began in the last 3 days of the data has too few days
    after it for the projection to tell it from growth (it needs 3 whole days on each side of
    a step): say so on the series' projection."""
    for rec in proj:
        recent = [a for a in anomalies if a["kind"] in ("level_shift", "drift") and a["link"] == rec["link"]
                  and rec["direction"] in a["directions"] and a["start"] >= end - 3 * DAY]
        if not recent or "level_shift" in rec or "growth_per_year" not in rec:
            continue
        a = max(recent, key=lambda x: x["start"])
        rec["recent_change"] = {"kind": a["kind"], "start": a["start"], "magnitude": a["magnitude"]}
        rec["note"] = ("a %s of %+.0f %% began %s, %.1f days before the end of the data: too recent for the trend "
                       "to tell it from growth; the projection does not include it yet"
                       % (a["kind"].replace("_", " "), 100 * a["magnitude"], _day(a["start"] // DAY),
                          (end - a["start"]) / float(DAY)))


def _level_shift(adj, resid, min_ratio=1.25):
    """(first day index after a lasting step, its ratio) when one step explains the daily
    levels far better than a trend (half the squared error or less) and moves them by at
    least ``min_ratio`` either way; else None.  Both sides of the step hold at least 3 days."""
    n = len(adj)
    if n < 6:
        return None
    best = None
    for k in range(3, n - 2):
        left, right = adj[:k], adj[k:]
        sse = float(((left - np.median(left)) ** 2).sum() + ((right - np.median(right)) ** 2).sum())
        if best is None or sse < best[0]:
            best = (sse, k)
    sse, k = best
    step = float(np.median(adj[k:]) - np.median(adj[:k]))
    if abs(step) < math.log(min_ratio) or sse > 0.5 * float((resid ** 2).sum()):
        return None
    return k, math.exp(step)


def _day(dnum):
    return time.strftime("%Y-%m-%d", time.gmtime(int(dnum) * DAY))


def water_levels(binned, proj, o):
    """Utilisation against link capacity now and when the projection crosses each level."""
    out = []
    bps = binned.bps()
    for link, cap in sorted(o["capacity"].items()):
        rows = [i for i, lk in enumerate(binned.links) if lk == link]
        if not rows:
            out.append({"link": link, "capacity_bps": cap, "level": "no data"})
            continue
        last_day = binned.times >= binned.times[-1] - DAY
        util = {}
        for i in rows:
            v = bps[i][binned.valid[i] & last_day]
            util[binned.directions[i]] = v / cap if len(v) else np.zeros(1)
        worst = max(util, key=lambda d: float(np.percentile(util[d], 95)))
        u = util[worst]
        p95u, peaku = float(np.percentile(u, 95)), float(u.max())
        level = "critical" if p95u >= o["critical"] else "warn" if p95u >= o["warn"] else "ok"
        rec = {"link": link, "capacity_bps": cap, "direction": worst, "p95_utilisation": p95u,
               "peak_utilisation": peaku, "level": level,
               "time_above_warn": float((u >= o["warn"]).mean()), "time_above_critical": float((u >= o["critical"]).mean()),
               "crossing": {}}
        for p in proj:
            if p["link"] != link or p["direction"] != worst or "daily" not in p:
                continue
            for name in ("warn", "critical"):
                lim = o[name] * cap
                when = [(d["day"], d["hi_bps"] >= lim, d["p95_bps"] >= lim) for d in p["daily"]]
                rec["crossing"][name] = {
                    "likely": next((d for d, _h, pt in when if pt), None),
                    "earliest": next((d for d, h, _p in when if h), None)}
        out.append(rec)
    return out


# ------------------------------------------------------------------ profile

def profile(binned, i, holidays, local):
    """Median rate per weekday x hour (7 x 24, NaN where unseen), hourly and daily means, in
    the link's local time (``local``: local_times of the bins)."""
    bps = binned.bps()[i]
    valid = binned.valid[i]
    t = local[valid]
    v = bps[valid]
    wd = _day_kind(t // DAY, holidays)
    hr = (t % DAY) // 3600
    cell = wd * 24 + hr
    order = np.argsort(cell, kind="stable")
    cs, vs = cell[order], v[order]
    bounds = np.searchsorted(cs, np.arange(169))
    hw = [float(np.median(vs[bounds[c]:bounds[c + 1]])) if bounds[c + 1] > bounds[c] else None for c in range(168)]
    hour = [float(v[hr == h].mean()) if (hr == h).any() else None for h in range(24)]
    weekday = [float(v[wd == k].mean()) if (wd == k).any() else None for k in range(7)]
    return {"hour_weekday": [hw[k * 24:(k + 1) * 24] for k in range(7)], "hourly_mean_bps": hour,
            "weekday_mean_bps": weekday}


def _downsample(times, values, points):
    """At most ``points`` samples (max per chunk for rates, so peaks stay visible)."""
    n = len(values)
    if n <= points:
        return times.tolist(), values.tolist()
    k = int(math.ceil(n / float(points)))
    m = n // k * k
    v = values[:m].reshape(-1, k)
    with np.errstate(all="ignore"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            agg = np.nanmax(v, axis=1)
    return times[:m:k].tolist(), agg.tolist()


# ------------------------------------------------------------------ the whole analysis

def _series(rec, binned, slicer, o, i):
    """(series entry, its volume anomalies, its plot) of series ``i``."""
    step, bps = o["step"], binned.bps()
    link, direction = binned.links[i], binned.directions[i]
    valid = binned.valid[i]
    v = bps[i][valid]
    tz, holidays = link_calendar(o, link)
    local = binned.local(tz)
    model = Model(bps[i], valid, local, step, holidays)
    expected = model.expected_bps()
    pct = dict(("p%g" % p, float(np.percentile(v, p))) for p in o["percentiles"])
    one = {"link": link, "direction": direction, "bins": int(valid.sum()), "bytes": float(binned.bytes[i].sum()),
           "mean_bps": float(v.mean()), "peak_bps": float(v.max()), "percentiles_bps": pct,
           "season": model.season, "noise_sigma": model.sigma,
           "timezone": str(tz) if tz is not None else "UTC",
           "profile": profile(binned, i, holidays, local)}
    found = []
    for kind, i0, i1, score, mag in _volume_events(model, o):
        t0, t1 = int(binned.times[i0]), int(binned.times[i1]) + step
        exp_bytes = float(expected[i0:i1 + 1].sum() * step / 8)
        ref0 = max(int(binned.times[0]), t0 - DAY)
        found.append({
            "kind": kind, "link": link, "directions": [direction], "start": t0, "end": t1 - 1,
            "score": round(float(score), 2), "magnitude": round(mag, 3),
            "observed_bps": float(bps[i][i0:i1 + 1].mean()), "expected_bps": float(expected[i0:i1 + 1].mean()),
            "top_contributors": attribute(rec, slicer, link, t0, t1, ref0, t0, exp_bytes, o["top_k"], direction)
            if t0 > ref0 else []})
    tt, vv = _downsample(binned.times, np.where(valid, bps[i], np.nan), o["plot_points"])
    _te, ee = _downsample(binned.times, np.where(valid, expected, np.nan), o["plot_points"])
    return one, found, {"link": link, "direction": direction, "t": tt, "bps": vv, "expected_bps": ee}


def _each_series(rec, binned, slicer, o, meanwhile):
    """(_series of every series, in order; ``meanwhile()``).  With PARALLEL_MIN_RECORDS records
    or more and two CPUs, a forked child works out two of every three series while this
    process works out the third and ``meanwhile`` (the rest of the analysis, which does not
    need the series).  The series are independent; the child's answer comes back as JSON,
    which keeps every float exactly."""
    n = len(binned.links)
    if len(rec) < PARALLEL_MIN_RECORDS or n < 2 or cpus.usable() < 2:
        return [_series(rec, binned, slicer, o, i) for i in range(n)], meanwhile()
    theirs = [i for i in range(n) if i % 3]
    child = nsutil.Child(lambda: [_series(rec, binned, slicer, o, i) for i in theirs])
    try:
        done = dict((i, _series(rec, binned, slicer, o, i)) for i in range(0, n, 3))
        extra = meanwhile()
    except BaseException:
        child.kill()
        raise
    answer = child.result(CHILD_TIMEOUT, NetstackError("the process analysing part of the series gave no answer in %d s"
                                                       % CHILD_TIMEOUT, field="records"))
    done.update(zip(theirs, (tuple(t) for t in answer)))
    return [done[i] for i in range(n)], extra


def analyze(rec, opts=None):
    """Everything above, as one JSON-ready dict."""
    trafficdata.require_numpy()
    o = options(opts)
    started = time.time()
    if not len(rec):
        raise NetstackError("no traffic records to analyse", field="records")
    step = o["step"]
    binned = Binned(rec, step)
    slicer = Slicer(rec)
    series, anomalies, plots = [], [], []
    each, (new, proj, bill, talkers) = _each_series(
        rec, binned, slicer, o, lambda: (_new_prefixes(rec, binned, o), project(binned, o), billing(binned, o),
                                         top_talkers(rec, o["top_k"])))
    for one, found, plot in each:
        series.append(one)
        anomalies.extend(found)
        plots.append(plot)
    for link, prefix, i0, i1, share in new:
        t0, t1 = int(binned.times[i0]), int(binned.times[i1]) + step
        anomalies.append({"kind": "new_prefix", "link": link, "directions": sorted(set(binned.directions)),
                          "start": t0, "end": t1 - 1, "prefix": prefix, "share": round(share, 3),
                          "score": round(share / o["new_prefix_share"], 2), "magnitude": round(share, 3),
                          "top_contributors": [{"dimension": "prefix", "value": prefix, "new": True, "share": share}]})
    anomalies = _combine(anomalies, o["shift_window"])
    _note_recent_changes(proj, anomalies, int(binned.times[-1]) + step)
    result = {
        "step": step, "start": int(binned.times[0]), "end": int(binned.times[-1]) + step - 1,
        "records": int(len(rec)), "bytes": float(rec.ints["bytes"].sum()),
        "links": sorted(set(binned.links)), "series": series, "anomalies": anomalies, "gaps": binned.gaps(),
        "billing": bill, "projection": proj, "water_levels": water_levels(binned, proj, o),
        "top_talkers": talkers, "plots": plots,
        "options": dict((k, v) for k, v in o.items() if not k.startswith("_")),
    }
    secs = time.time() - started
    result["analysis_seconds"] = round(secs, 3)
    result["records_per_second"] = round(len(rec) / secs) if secs > 0 else None
    return result


def forecast(rec, start, bins, opts=None):
    """Forecast bytes per bin for ``bins`` bins from ``start`` (UNIX s, aligned to the step),
    per series, from the history in ``rec``: ``{(link, direction): float array}``."""
    trafficdata.require_numpy()
    o = options(opts)
    step = o["step"]
    binned = Binned(rec, step)
    times = int(start) + np.arange(bins) * step
    out = {}
    for i, key in enumerate(zip(binned.links, binned.directions)):
        tz, holidays = link_calendar(o, key[0])
        model = Model(binned.bps()[i], binned.valid[i], binned.local(tz), step, holidays)
        y = model.forecast_y(local_times(times, tz), holidays)
        out[key] = np.maximum(np.exp(y) - model.floor, 0.0) * step / 8.0
    return out


def _explained_by(event, new):
    """Whether a new heavy prefix accounts for a volume event: it carries at least half of the
    event's change among the event's contributors."""
    for c in event.get("top_contributors") or []:
        if c.get("dimension") == "prefix" and c.get("value") == new["prefix"]:
            share = c.get("share_of_change")
            return share is None or share >= 0.5
    return False


def _combine(anomalies, margin):
    """Merge the per-direction events of one link; a volume event overlapping a new heavy
    prefix on its link (or within ``margin`` seconds of it: its departure) is that prefix when
    the prefix carries its change; otherwise both are reported (a prefix with a small share
    that stays for weeks must not hide a spike or a shift of the rest of the link)."""
    out = []
    news = [a for a in anomalies if a["kind"] == "new_prefix"]
    for a in sorted((a for a in anomalies if a["kind"] != "new_prefix"), key=lambda a: (a["link"], a["start"])):
        n = next((x for x in news if x["link"] == a["link"] and a["start"] <= x["end"] + margin
                  and x["start"] - margin <= a["end"] and _explained_by(a, x)), None)
        if n is not None and a["kind"] in ("level_shift", "spike", "drift"):
            continue
        # one event: overlapping windows of one kind, or pieces of one drift (same way) that
        # the day windows' threshold cut apart less than an hour from each other
        gap = 3600 if a["kind"] == "drift" else 0
        prev = next((x for x in out if x["link"] == a["link"] and x["kind"] == a["kind"]
                     and a["start"] <= x["end"] + gap and x["start"] - gap <= a["end"]
                     and (not gap or (x["magnitude"] > 0) == (a["magnitude"] > 0))), None)
        if prev is not None:
            prev["directions"] = sorted(set(prev["directions"] + a["directions"]))
            prev["start"], prev["end"] = min(prev["start"], a["start"]), max(prev["end"], a["end"])
            if a["score"] > prev["score"]:
                prev.update(score=a["score"], magnitude=a["magnitude"], top_contributors=a["top_contributors"])
            continue
        out.append(a)
    return sorted(out + news, key=lambda a: (a["start"], a["link"]))


def top_talkers(rec, k):
    """The biggest values of each dimension over the whole span."""
    out = {}
    total = float(rec.ints["bytes"].sum()) or 1.0
    weights = rec.ints["bytes"].astype(np.float64)     # once (bincount would convert it for every dimension)
    for dim in DIMENSIONS + ("link",):
        vals, cats = (rec.codes[dim], rec.cats[dim]) if dim in trafficdata.STRING_COLUMNS else (rec.ints[dim], None)
        b = np.bincount(vals, weights=weights)
        top = np.argsort(-b)[:k]
        out[dim] = [{"value": cats[v] if cats is not None else int(v), "bytes": float(b[v]), "share": float(b[v] / total)}
                    for v in top if b[v] > 0]
    return out
