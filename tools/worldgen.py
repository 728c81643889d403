# -*- coding: utf-8 -*-
# Copyright: netstack.tuning contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A second evaluation world: synthetic WAN traffic of sites around the globe, with ground truth.

This generator is designed independently of the traffic analyzer and of trafficgen.py, so
that a detector tuned on one generator can be judged on another whose traffic it has never
seen.  It returns the same ``Records`` (see plugins/module_utils/traffic/data.py) and labels
of the same form as trafficgen, plus a ``truth`` dict describing every feature of the world.

The world
---------
``sites`` sites are taken in order from ``SITES`` (Frankfurt, New York, Sao Paulo, Tokyo,
Sydney, Mumbai, Los Angeles, London, Johannesburg, Singapore, Auckland, Mexico City), each
with its own IANA time zone and one link "<site>:wan".  The default run (5 sites, 42 days
from 2026-02-23) holds the US (Mar 8) and EU (Mar 29) spring-forward and Sydney's fall-back
(Apr 5): everything calendar-like below happens in the site's LOCAL time, so it moves in UTC
when the site's clock changes.

* Site type (drawn per seed; the first three sites get one of each): ``office`` (morning
  ramp, lunch dip, afternoon plateau, evening decay; Saturday half-day; Sunday low),
  ``residential`` (evening peak 19-23 h, busier weekends, "in" far above "out") or
  ``datacenter`` (flat, a mild daytime hump, "out" above "in").  Each day is a piecewise
  linear curve over local hours (``SHAPES``), evaluated at the middle of each step.
* A nightly batch job (backups, replication) at 02:00 local for 30-90 min adds a fixed block
  of traffic.  Like a naive local-time scheduler it is skipped in the spring-forward night
  (02:00 does not exist) and runs twice in the fall-back night.  Benign, not a label.
* 2-4 local public holidays per site, on local weekdays, get the Sunday curve.  Benign,
  not labels; ``truth["holidays"]`` gives their UTC bounds.
* The first business day of each month (first local weekday that is no holiday) is 20-40 %
  busier in business hours (09-17 h, ramps an hour either side) at office sites.  Benign.
* Growth of 1-3 %/week, compounded; peak rates of 200 Mbit/s to 5 Gbit/s per link.
* Multiplicative lognormal noise, mean one, whose log-sd ``noise_sigma`` is spread over the
  sites from 0.05 (smooth) to 0.35 (very noisy); half of its variance is white, half an
  AR(1) with a two-hour correlation time (``truth["noise"]``).
* Benign bursts, about one per link-day: +10 % times a Pareto(1.5) factor, capped at +40 %,
  for 1-2 steps, carried by one of the link's prefixes (``truth["bursts"]``; not labels).
* One collector outage per run: one link has NO records at all for 2-4 hours
  (``truth["gaps"]``; not a label, the traffic itself did not stop).

Anomalies (labels)
------------------
Several of each kind (``labels_per_kind``, 4 in the default run), none in the first 7 days,
at least 6 hours apart on one link (end of one to start of the next), never touching a local
holiday of the link nor within 6 hours of the data gap.  ``magnitude`` is always the relative
change of the link total (both directions) against the traffic without the anomaly: +2.0
triples the link, -0.8 leaves a fifth of it.

* ``spike``: +0.5 to +9.0 (every other one moderate, +0.5 to +0.99) for 1-6 steps, the extra
  bytes carried by one prefix or one port class (``dims``).
* ``dip``: -0.5 to -0.95 for one step up to one hour, the whole link (``dims`` = link).
* ``outage``: -0.70 to -0.98 for 1-6 hours, the whole link; records keep coming, just tiny.
* ``level_shift``: +/-0.35 to +/-0.80 for 1-4 days (``"reverts": True``), or from a start in
  the last quarter of the run to its end (``"reverts": False``).  Rises are carried by a
  prefix or port class, drops scale the whole link.  The first goes to the noisiest link.
* ``drift``: a linear ramp from 0 to ``magnitude`` (+0.6 to +2.0) over 2-6 days, held for
  2-12 hours, then ramping back to normal within 2-8 hours; carried by a prefix or port class.
  The first one is slow (at most +25 %/day).  ``ramp_steps``, ``hold_steps`` say the shape.
* ``new_prefix``: a prefix never seen anywhere else in the run carries ``share`` (5-40 %) of
  the link total for 4-48 hours; it comes on top of the usual traffic, so ``magnitude`` is
  ``share / (1 - share)``.

Label dict (bounds are the ``ts`` of the first and last affected steps, both inclusive)::

    {"id": 0, "kind": "spike", "link": "nyc:wan", "start": ts, "end": ts, "steps": n,
     "magnitude": m, "prefix": "198.18.7.0/24" or None,
     "dims": {"prefix": ...} | {"port_class": ...} | {"link": ...}, ...kind extras}

Records
-------
A record's ``ts`` is the END of its step: step ``i`` covers ``[start + i*step, start +
(i+1)*step)`` and its rows have ``ts = start + (i+1)*step`` (``truth["ts"]``).  Each link has
a fixed table of ``rows_per_step`` keys (direction x remote prefix x service), drawn by weight
from 64 prefixes (IPv4 /24s of 198.18.0.0/15 and the documentation nets, IPv6 /48s of
2001:db8::/32; popular ones are shared between links) and the site type's services (port
class, proto 6/17, dscp 0/10/46).  Key shares follow a slow daily log random walk and a small
per-step jitter; anomalies and bursts add bytes to their carrier's rows, and new_prefix
anomalies add rows of their own.  Bytes are int64 and the rows of a link-step sum EXACTLY to
``truth["total"]``; packets are bytes over the service's mean packet size.  Rows of zero
bytes are left out.

Truth
-----
``{"ts", "step", "start", "links", "sites": {link: {...}}, "holidays": [{"link", "start",
"end", "date"}], "gaps": [{"link", "start", "end"}], "first_business_days": [...],
"dst_changes": [{"link", "ts", "offset_before", "offset_after"}], "bursts": [...],
"clean", "noise", "burst", "effect", "total", "params"}`` where the five per-link series
(aligned with ``ts``) are: ``clean``, the expected bytes per step without noise, bursts or
anomalies; ``noise``, the lognormal factor; ``burst``, the bursts' relative extra; ``effect``,
the anomalies' factor on the link total; ``total``, the bytes in the records (0 in the gap).
Outside the gap, ``total == rint(clean * noise * effect * (1 + burst))`` up to rounding.

``main`` writes the records as the native CSV (``data.HEADER``) and the labels with the
truth minus its series as JSON beside it (``<out>.labels.json``).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import argparse
import datetime
import json
import os
import sys

if __name__ == "__main__" and not __package__:  # run as a script: make the collection importable
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "collections"))

from zoneinfo import ZoneInfo  # noqa: E402

import numpy as np  # noqa: E402

from ansible_collections.netstack.tuning.plugins.module_utils.core.common import NetstackError  # noqa: E402
from ansible_collections.netstack.tuning.plugins.module_utils.traffic.data import (  # noqa: E402
    HEADER, INT_COLUMNS, STRING_COLUMNS, Records)

DAY = 86400
HOUR = 3600
WARMUP_DAYS = 7
MIN_SEPARATION_S = 6 * HOUR
EPOCH = datetime.date(1970, 1, 1)
KINDS = ("spike", "dip", "outage", "level_shift", "drift", "new_prefix")
MAX_ROWS = 25 * 1000 * 1000

SITES = (
    ("fra", "Europe/Berlin"),
    ("nyc", "America/New_York"),
    ("sao", "America/Sao_Paulo"),
    ("tyo", "Asia/Tokyo"),
    ("syd", "Australia/Sydney"),
    ("bom", "Asia/Kolkata"),
    ("lax", "America/Los_Angeles"),
    ("lon", "Europe/London"),
    ("jnb", "Africa/Johannesburg"),
    ("sin", "Asia/Singapore"),
    ("akl", "Pacific/Auckland"),
    ("mex", "America/Mexico_City"),
)
TYPES = ("office", "residential", "datacenter")

# Day curves, (local hour, fraction of the site's peak rate); linear in between.
SHAPES = {
    "office": {
        "weekday": ((0, .16), (6, .16), (7, .30), (9, 1.0), (11.5, 1.0), (12.25, .80), (13.5, .95),
                    (16.5, .95), (18, .60), (21, .28), (24, .16)),
        "saturday": ((0, .14), (8, .14), (9.5, .45), (12.5, .45), (14, .18), (24, .14)),
        "sunday": ((0, .13), (10, .13), (12, .16), (16, .16), (18, .13), (24, .13)),
    },
    "residential": {
        "weekday": ((0, .55), (1.5, .30), (5, .12), (7, .28), (9, .36), (12, .42), (17, .55), (19, .90),
                    (21, 1.0), (23, .85), (24, .55)),
        "saturday": ((0, .65), (2, .38), (6, .14), (9, .40), (12, .62), (17, .70), (19, .92), (21.5, 1.05),
                     (23, .92), (24, .65)),
        "sunday": ((0, .65), (2, .38), (6, .14), (9, .45), (12, .66), (17, .72), (19, .90), (21, .98),
                   (23, .80), (24, .55)),
    },
    "datacenter": {
        "weekday": ((0, .72), (6, .66), (9, .86), (14, .95), (18, .88), (22, .78), (24, .72)),
        "saturday": ((0, .68), (6, .62), (12, .74), (18, .72), (24, .68)),
        "sunday": ((0, .66), (6, .60), (12, .70), (18, .70), (24, .66)),
    },
}
DAY_KINDS = ("weekday", "saturday", "sunday")
BUSINESS_HOURS = ((0, 0.), (8, 0.), (9, 1.), (17, 1.), (18, 0.), (24, 0.))
BATCH_START_H = 2
BATCH_MINUTES = (30, 90)
BATCH_AMPLITUDE = {"office": (0.3, 0.6), "residential": (0.2, 0.4), "datacenter": (0.5, 1.0)}
IN_SHARE = {"office": 0.62, "residential": 0.85, "datacenter": 0.40}

# Services per site type: (port class, proto, dscp, weight "in", weight "out", mean packet bytes).
SERVICES = {
    "office": (
        ("web", 6, 0, 50, 30, 1100), ("web", 17, 0, 12, 4, 1200), ("mail", 6, 0, 5, 5, 900),
        ("registered", 17, 46, 6, 6, 220), ("ssh", 6, 10, 2, 3, 400), ("dns", 17, 0, 1, 1, 130),
        ("db", 6, 10, 4, 6, 700), ("ephemeral", 6, 0, 8, 10, 1000), ("well_known", 6, 0, 2, 2, 600),
        ("ntp", 17, 0, .2, .2, 90), ("cache", 6, 0, 1, 1, 500),
    ),
    "residential": (
        ("web", 6, 0, 40, 20, 1200), ("web", 17, 0, 30, 6, 1250), ("registered", 17, 46, 5, 5, 180),
        ("ephemeral", 17, 0, 10, 10, 1100), ("dns", 17, 0, 1, 1, 120), ("ntp", 17, 0, .1, .1, 90),
        ("mail", 6, 0, 1, .5, 800), ("well_known", 6, 0, 2, 1, 600), ("ssh", 6, 10, .3, .3, 300),
    ),
    "datacenter": (
        ("web", 6, 0, 25, 50, 1300), ("db", 6, 10, 10, 12, 900), ("cache", 6, 0, 6, 6, 400),
        ("ssh", 6, 10, 3, 3, 500), ("registered", 6, 10, 15, 20, 1400), ("ephemeral", 6, 0, 10, 10, 1200),
        ("dns", 17, 0, 2, 2, 140), ("ntp", 17, 0, .2, .2, 90), ("mail", 6, 0, .5, .5, 800),
        ("well_known", 6, 0, 2, 2, 600), ("web", 17, 0, 2, 5, 1200),
    ),
}
PREFIXES_PER_LINK = 64
POOL_SIZE = 320
MAX_ROWS_PER_STEP = 512


# ------------------------------------------------------------------ arguments

def _int_arg(value, field, lo, hi):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise NetstackError("%s must be an integer, got %r" % (field, value), field=field)
    if not lo <= value <= hi:
        raise NetstackError("%s must be between %d and %d, got %d" % (field, lo, hi, value), field=field)
    return int(value)


def _start_ts(start, step):
    """UNIX seconds of the first step's beginning: a "YYYY-MM-DD" date (UTC midnight) or seconds."""
    if isinstance(start, str):
        try:
            day = datetime.date.fromisoformat(start.strip())
        except ValueError:
            raise NetstackError("start must be a date YYYY-MM-DD or UNIX seconds, got %r" % (start,), field="start")
        ts = int(datetime.datetime(day.year, day.month, day.day, tzinfo=datetime.timezone.utc).timestamp())
    elif isinstance(start, (int, np.integer)) and not isinstance(start, bool):
        ts = int(start)
        if ts % step:
            raise NetstackError("start (UNIX seconds) must be a multiple of step (%d), got %d" % (step, ts),
                                field="start")
    else:
        raise NetstackError("start must be a date YYYY-MM-DD or UNIX seconds, got %r" % (start,), field="start")
    if not 0 <= ts <= 4102444800 - 800 * DAY:
        raise NetstackError("start must lie between 1970 and 2097, got %r" % (start,), field="start")
    return ts


def _check(seed, sites, days, step, start, rows_per_step):
    seed = _int_arg(seed, "seed", 0, 2 ** 63 - 1)
    sites = _int_arg(sites, "sites", 1, len(SITES))
    days = _int_arg(days, "days", WARMUP_DAYS + 3, 730)
    step = _int_arg(step, "step", 60, HOUR)
    if step % 60 or HOUR % step:
        raise NetstackError("step must be whole minutes dividing an hour (60, 120, ..., 900, 1200, 1800, 3600), "
                            "got %d" % step, field="step")
    rows_per_step = _int_arg(rows_per_step, "rows_per_step", 4, MAX_ROWS_PER_STEP)
    rows = sites * days * (DAY // step) * rows_per_step
    if rows > MAX_ROWS:
        raise NetstackError("the run would have %d rows, more than %d: fewer sites, days or rows_per_step, "
                            "or a longer step" % (rows, MAX_ROWS), field="rows_per_step")
    return seed, sites, days, step, _start_ts(start, step), rows_per_step


# ------------------------------------------------------------------ local time

def _offset_at(zone, ts):
    return int(datetime.datetime.fromtimestamp(int(ts), tz=zone).utcoffset().total_seconds())


def _utc_offsets(tz, times):
    """Seconds east of UTC of zone ``tz`` at each UNIX time of ``times``, and the zone's changes
    [(first second of the new offset, offset before, offset after)].

    Vectorised: the zone is read once an hour; only the hours holding a change are looked at
    closer (a bisection for the exact second), so a year of 1-minute steps costs 8760 reads."""
    zone = ZoneInfo(tz)
    t = np.asarray(times, dtype=np.int64)
    h0 = int(t.min()) // HOUR * HOUR
    hours = np.arange(h0, int(t.max()) + 2 * HOUR, HOUR)
    hourly = np.array([_offset_at(zone, h) for h in hours], dtype=np.int64)
    k = (t - h0) // HOUR
    out = hourly[k]
    changes = []
    for j in np.flatnonzero(hourly[1:] != hourly[:-1]):
        lo, hi = int(hours[j]), int(hours[j + 1])
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if _offset_at(zone, mid) == hourly[j]:
                lo = mid
            else:
                hi = mid
        changes.append((hi, int(hourly[j]), int(hourly[j + 1])))
        inside = k == j
        out[inside] = np.where(t[inside] >= hi, hourly[j + 1], hourly[j])
    return out, changes


def _date(local_day):
    return EPOCH + datetime.timedelta(days=int(local_day))


class _Clock(object):
    """A site's local calendar at every step: day number, hour at mid-step, weekday, and the
    local second-of-day at which each step begins."""

    def __init__(self, tz, start_ts, step, n):
        begins = start_ts + step * np.arange(n, dtype=np.int64)
        mids = begins + step // 2
        offsets, changes = _utc_offsets(tz, np.concatenate([begins, mids]))
        local_mid = mids + offsets[n:]
        self.day = local_mid // DAY
        self.hour = (local_mid % DAY) / HOUR
        self.weekday = (self.day + 3) % 7              # 1970-01-01 was a Thursday; Monday = 0
        self.begin_sod = (begins + offsets[:n]) % DAY
        self.changes = [c for c in changes if start_ts < c[0] <= start_ts + n * step]


# ------------------------------------------------------------------ the sites

def _prefix_space(rng):
    """Remote prefixes in random order: IPv4 /24s of 198.18.0.0/15 and the three documentation
    nets, 200 IPv6 /48s of 2001:db8::/32.  The first POOL_SIZE are the world's usual prefixes,
    the rest are fresh (never seen unless a new_prefix anomaly brings one)."""
    v4 = ["198.%d.%d.0/24" % (18 + i // 256, i % 256) for i in range(512)]
    v4 += ["192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24"]
    v6 = ["2001:db8:%x::/48" % g for g in 1 + rng.choice(65535, size=200, replace=False)]
    space = np.asarray(v4 + v6, dtype=object)[rng.permutation(len(v4) + len(v6))]
    return list(space[:POOL_SIZE]), list(space[POOL_SIZE:])


def _shape(site_type, clock, holidays):
    """The day curve at each step, holidays as Sundays."""
    kind = np.where(clock.weekday == 6, 2, np.where(clock.weekday == 5, 1, 0))
    kind[np.isin(clock.day, holidays)] = 2
    out = np.empty(len(kind))
    for i, name in enumerate(DAY_KINDS):
        knots = np.asarray(SHAPES[site_type][name], dtype=float)
        sel = kind == i
        out[sel] = np.interp(clock.hour[sel], knots[:, 0], knots[:, 1])
    return out


def _first_business_days(days, holidays):
    """Local days (numbers) that are the first weekday of their month that is no holiday."""
    holidays = set(int(h) for h in holidays)
    out = []
    for d in days:
        d = int(d)
        date = _date(d)
        if date.weekday() >= 5 or d in holidays:
            continue
        first = d - (date.day - 1)
        if all(_date(e).weekday() >= 5 or e in holidays for e in range(first, d)):
            out.append(d)
    return out


def _site(rng, name, tz, site_type, sigma, start_ts, step, n):
    """One site: its parameters, its clock and its clean series (bytes per step)."""
    clock = _Clock(tz, start_ts, step, n)
    days = np.unique(clock.day)
    inner = days[1:-1]
    candidates = inner[(inner + 3) % 7 < 5]
    count = min(len(candidates), int(rng.integers(2, 5)))
    holidays = np.sort(rng.choice(candidates, size=count, replace=False)) if count else np.zeros(0, dtype=np.int64)
    peak_bps = float(np.exp(rng.uniform(np.log(200e6), np.log(5e9))))
    growth = float(rng.uniform(0.01, 0.03))
    batch_minutes = int(rng.integers(BATCH_MINUTES[0], BATCH_MINUTES[1] + 1))
    batch_amp = float(rng.uniform(*BATCH_AMPLITUDE[site_type]))

    base = peak_bps / 8.0 * step
    weeks = (np.arange(n) + 0.5) * step / (7.0 * DAY)
    trend = (1.0 + growth) ** weeks
    level = _shape(site_type, clock, holidays)
    fbd = _first_business_days(days, holidays)
    boosts = {}
    if site_type == "office":
        knots = np.asarray(BUSINESS_HOURS)
        business = np.interp(clock.hour, knots[:, 0], knots[:, 1])
        for d in fbd:
            boosts[d] = float(rng.uniform(0.2, 0.4))
            sel = clock.day == d
            level[sel] *= 1.0 + boosts[d] * business[sel]
    w0 = BATCH_START_H * HOUR
    w1 = w0 + batch_minutes * 60
    overlap = np.clip(np.minimum(clock.begin_sod + step, w1) - np.maximum(clock.begin_sod, w0), 0, None) / float(step)
    clean = base * trend * (level + batch_amp * overlap)
    return {
        "site": name, "tz": tz, "type": site_type, "clock": clock, "holidays": holidays, "fbd": fbd,
        "boosts": boosts, "clean": clean, "noise_sigma": sigma, "peak_bps": peak_bps, "growth": growth,
        "batch_minutes": batch_minutes, "batch_amplitude": batch_amp,
    }


def _noise(rng, sigma, n, step):
    """Mean-one lognormal factors of log-sd ``sigma``: half white, half AR(1) (2 h correlation)."""
    phi = float(np.exp(-step / (2.0 * HOUR)))
    block = 128
    nb = -(-n // block)
    e = rng.standard_normal(nb * block) * np.sqrt(1.0 - phi * phi)
    e[0] = rng.standard_normal()
    e = e.reshape(nb, block)
    pw = phi ** np.arange(block)
    ar = np.cumsum(e / pw, axis=1) * pw                 # each block from a zero state
    carry = phi ** np.arange(1, block + 1)
    for b in range(1, nb):                              # then the state carried across blocks
        ar[b] += carry * ar[b - 1, -1]
    z = np.sqrt(0.5) * rng.standard_normal(n) + np.sqrt(0.5) * ar.ravel()[:n]
    return np.exp(sigma * z - 0.5 * sigma * sigma)


def _key_table(rng, site_type, pool, popularity, rows):
    """The link's row keys: ``rows`` (direction, prefix, service) drawn by weight, with their
    base shares (the site type's direction split, heavy-tailed within)."""
    services = SERVICES[site_type]
    pick = rng.choice(len(pool), size=PREFIXES_PER_LINK, replace=False, p=popularity)
    prefixes = [pool[i] for i in pick]
    pweight = popularity[pick] * rng.lognormal(0.0, 0.8, PREFIXES_PER_LINK)
    keys = {"direction": [], "prefix": [], "port_class": [], "proto": [], "dscp": [], "size": [], "share": []}
    in_share = IN_SHARE[site_type]
    for d, (direction, dshare) in enumerate((("in", in_share), ("out", 1.0 - in_share))):
        sweight = np.asarray([s[3 + d] for s in services], dtype=float)
        w = (pweight[:, None] * sweight[None, :] * rng.lognormal(0.0, 0.5, (PREFIXES_PER_LINK, len(services)))).ravel()
        count = rows // 2 if direction == "in" else rows - rows // 2
        chosen = rng.choice(len(w), size=count, replace=False, p=w / w.sum())
        for c in chosen:
            p, s = divmod(int(c), len(services))
            keys["direction"].append(direction)
            keys["prefix"].append(prefixes[p])
            keys["port_class"].append(services[s][0])
            keys["proto"].append(services[s][1])
            keys["dscp"].append(services[s][2])
            keys["size"].append(services[s][5])
        keys["share"].extend(list(w[chosen] / w[chosen].sum() * dshare))
    for k in ("direction", "prefix", "port_class", "proto", "dscp", "size", "share"):
        keys[k] = np.asarray(keys[k])
    return keys


def _shares(rng, keys, in_share, step, n):
    """Per-step shares of the keys (rows sum to one): within a direction, base share x a daily
    log random walk (interpolated within the day) x a small per-step jitter; the direction
    split wanders by up to +/-0.03 around the site type's from day to day."""
    k = len(keys["share"])
    ndays = n * step // DAY + 2
    walk = np.cumsum(rng.normal(0.0, 0.04, (ndays, k)), axis=0)
    split = in_share + rng.uniform(-0.03, 0.03, ndays)
    u = np.arange(n) * step / float(DAY)
    d = u.astype(np.int64)
    f = u - d
    w = keys["share"][None, :] * np.exp(walk[d] * (1 - f[:, None]) + walk[d + 1] * f[:, None]
                                        + rng.normal(0.0, 0.12, (n, k)))
    inbound = keys["direction"] == "in"
    split = split[d] * (1 - f) + split[d + 1] * f
    w[:, inbound] *= (split / w[:, inbound].sum(axis=1))[:, None]
    w[:, ~inbound] *= ((1 - split) / w[:, ~inbound].sum(axis=1))[:, None]
    return w


# ------------------------------------------------------------------ anomalies

class _Calendar(object):
    """Where labels may go: busy intervals per link (6 h apart) and blocked ones (holidays,
    the gap with 6 h either side)."""

    def __init__(self, nlinks, sep):
        self.sep = sep
        self.busy = [[] for _link in range(nlinks)]
        self.blocked = [[] for _link in range(nlinks)]

    def free(self, li, a, b):
        if any(a - y < self.sep and x - b < self.sep for x, y in self.busy[li]):
            return False
        return not any(a <= y and b >= x for x, y in self.blocked[li])


def _label_shapes(rng, kind, j, per_hour, per_day):
    """(steps, magnitude, profile of the relative effect (len steps), extras) of the j-th label."""
    extra = {}
    if kind == "spike":
        steps = int(rng.integers(1, 7))
        m = rng.uniform(0.5, 0.99) if j % 2 == 0 else np.exp(rng.uniform(0.0, np.log(9.0)))
    elif kind == "dip":
        steps = int(rng.integers(1, per_hour + 1))
        m = -rng.uniform(0.5, 0.95)
    elif kind == "outage":
        steps = int(rng.integers(per_hour, 6 * per_hour + 1))
        m = -rng.uniform(0.70, 0.98)
    elif kind == "level_shift":
        steps = int(rng.integers(per_day, 4 * per_day + 1))
        m = rng.uniform(0.35, 0.80) * (1 if j % 2 == 0 else -1)
    elif kind == "drift":
        if j == 0:  # a slow one: at most +25 %/day
            m, ramp = rng.uniform(0.6, 1.0), int(rng.integers(4 * per_day, 6 * per_day + 1))
        else:
            m, ramp = rng.uniform(0.6, 2.0), int(rng.integers(2 * per_day, 6 * per_day + 1))
        m = round(float(m), 4)       # the label's magnitude is exactly the injected one
        hold = int(rng.integers(2 * per_hour, 12 * per_hour + 1))
        down = int(rng.integers(2 * per_hour, 8 * per_hour + 1))
        steps = ramp + hold + down
        profile = np.concatenate([m * np.arange(1, ramp + 1) / ramp, np.full(hold, m),
                                  m * (1.0 - np.arange(1, down + 1) / (down + 1.0))])
        extra = {"ramp_steps": ramp, "hold_steps": hold, "revert_steps": down}
        return steps, float(m), profile, extra
    else:  # new_prefix
        steps = int(rng.integers(4 * per_hour, 48 * per_hour + 1))
        share = round(float(rng.uniform(0.05, 0.40)), 4)
        m = share / (1.0 - share)
        extra = {"share": share}
        return steps, m, np.full(steps, m), extra
    m = round(float(m), 4)       # the label's magnitude is exactly the injected one
    return steps, m, np.full(steps, m), extra


def _carrier(rng, keys):
    """A prefix (not the link's biggest) or a port class of the link's rows, and its row mask."""
    if rng.random() < 0.5:
        totals = {}
        for p, s in zip(keys["prefix"], keys["share"]):
            totals[p] = totals.get(p, 0.0) + s
        ranked = sorted(totals, key=lambda p: -totals[p])
        choice = ranked[int(rng.integers(1, min(len(ranked), 16)))] if len(ranked) > 1 else ranked[0]
        return "prefix", str(choice), keys["prefix"] == choice
    classes = sorted(set(keys["port_class"]))
    weight = np.sqrt([keys["share"][keys["port_class"] == c].sum() for c in classes])
    choice = classes[int(rng.choice(len(classes), p=weight / weight.sum()))]
    return "port_class", str(choice), keys["port_class"] == choice


def _place_labels(rng, links, worlds, tables, fresh, n, step, gap):
    per_hour, per_day = HOUR // step, DAY // step
    warm = WARMUP_DAYS * per_day
    cal = _Calendar(len(links), -(-MIN_SEPARATION_S // step))
    for li, w in enumerate(worlds):
        for h in w["holidays"]:
            idx = np.flatnonzero(w["clock"].day == h)
            cal.blocked[li].append((int(idx[0]), int(idx[-1])))
    gli, ga, gb = gap
    cal.blocked[gli].append((ga - cal.sep + 1, gb + cal.sep - 1))
    per_kind = max(2, int(round(len(links) * (n / per_day - WARMUP_DAYS) / 45.0)))
    noisy = sorted(range(len(links)), key=lambda i: -worlds[i]["noise_sigma"])
    placed = []
    plan = [("level_shift", j) for j in range(per_kind)]
    plan = [("level_shift", 1)] + [p for p in plan if p[1] != 1]       # the permanent one first
    plan = [("drift", j) for j in range(per_kind)] + plan
    for kind in ("new_prefix", "outage", "dip", "spike"):
        plan += [(kind, j) for j in range(per_kind)]
    for kind, j in plan:
        steps, m, profile, extra = _label_shapes(rng, kind, j, per_hour, per_day)
        permanent = kind == "level_shift" and j % 4 == 1
        spot = None
        for attempt in range(400):
            li = noisy[j % len(links)] if kind == "level_shift" and j < 2 and attempt < 100 \
                else int(rng.integers(len(links)))
            if permanent:
                lo = max(warm, n - max(4 * per_day, n // 4))
                if lo > n - per_day:
                    break
                a = int(rng.integers(lo, n - per_day + 1))
                b = n - 1
            else:
                if warm + steps > n:
                    break
                a = int(rng.integers(warm, n - steps + 1))
                b = a + steps - 1
            if cal.free(li, a, b):
                spot = (li, a, b)
                break
        if spot is None:
            continue
        li, a, b = spot
        if permanent:
            steps = b - a + 1
            profile = np.full(steps, m)
        cal.busy[li].append((a, b))
        label = {"kind": kind, "li": li, "a": a, "b": b, "m": m, "profile": profile, "extra": dict(extra)}
        if kind == "level_shift":
            label["extra"]["reverts"] = not permanent
        whole = kind in ("dip", "outage") or (kind == "level_shift" and m < 0)
        if whole:
            label["dims"], label["prefix"], label["mask"] = {"link": links[li]}, None, None
        elif kind == "new_prefix":
            p = fresh.pop(0)
            label["dims"], label["prefix"], label["mask"] = {"prefix": p}, p, None
        else:
            dim, value, mask = _carrier(rng, tables[li])
            label["dims"], label["mask"] = {dim: value}, mask
            label["prefix"] = value if dim == "prefix" else None
        placed.append(label)
    placed.sort(key=lambda x: (x["a"], x["li"], KINDS.index(x["kind"])))
    return placed, per_kind


# ------------------------------------------------------------------ rows

def _link_rows(rng, w, keys, labels, bursts, noise, step, n):
    """The link's integer bytes per (step, column), its columns and the truth series."""
    shares = _shares(rng, keys, IN_SHARE[w["type"]], step, n)
    whole = np.ones(n)
    rel = np.zeros(n)
    for lab in labels:
        sl = slice(lab["a"], lab["b"] + 1)
        if lab["mask"] is None and lab["kind"] != "new_prefix":
            whole[sl] *= 1.0 + lab["profile"]
        else:
            rel[sl] += lab["profile"]
    base = w["clean"] * noise * whole
    cols = dict((k, [str(v) for v in keys[k]] if k in ("direction", "prefix", "port_class") else keys[k])
                for k in ("direction", "prefix", "port_class", "proto", "dscp", "size"))
    new = [lab for lab in labels if lab["kind"] == "new_prefix"]
    extra_cols = []
    for lab in new:     # the fresh prefix's rows: web in and out, maybe QUIC in
        parts = [("in", "web", 6, 0, 1100, IN_SHARE[w["type"]]), ("out", "web", 6, 0, 1100, 1 - IN_SHARE[w["type"]])]
        if rng.random() < 0.5:
            parts.append(("in", "web", 17, 0, 1200, 0.3))
        split = np.asarray([p[5] for p in parts])
        lab["cols"] = (len(cols["prefix"]) + len(extra_cols), split / split.sum())
        extra_cols.extend((p[0], lab["prefix"], p[1], p[2], p[3], p[4]) for p in parts)
    for d, p, c, proto, dscp, size in extra_cols:
        cols["direction"].append(d)
        cols["prefix"].append(p)
        cols["port_class"].append(c)
        cols["proto"] = np.append(cols["proto"], proto)
        cols["dscp"] = np.append(cols["dscp"], dscp)
        cols["size"] = np.append(cols["size"], size)
    k = len(keys["share"])
    out = np.zeros((n, k + len(extra_cols)))
    out[:, :k] = base[:, None] * shares

    def carry(a, b, mask, amount):
        idx = np.flatnonzero(mask)
        part = shares[a:b + 1][:, idx]
        out[a:b + 1, idx] += amount[:, None] * part / part.sum(axis=1, keepdims=True)

    for lab in labels:
        a, b = lab["a"], lab["b"]
        if lab["kind"] == "new_prefix":
            first, split = lab["cols"]
            out[a:b + 1, first:first + len(split)] = (base[a:b + 1] * lab["profile"])[:, None] * split[None, :]
        elif lab["mask"] is not None:
            carry(a, b, lab["mask"], base[a:b + 1] * lab["profile"])
    level = base * (1.0 + rel)
    bsum = np.zeros(n)
    for a, b, mag, mask in bursts:
        carry(a, b, mask, level[a:b + 1] * mag)
        bsum[a:b + 1] += mag
    total = np.rint(out.sum(axis=1))
    ints = np.floor(out)
    rest = total - ints.sum(axis=1)
    ints[np.arange(n), np.argmax(out, axis=1)] += rest
    series = {"noise": noise, "burst": bsum, "effect": whole * (1.0 + rel), "total": total.astype(np.int64)}
    return ints.astype(np.int64), cols, series


def _bursts(rng, keys, n, step):
    """Benign bursts: (first step, last step, relative size, carrier rows)."""
    count = int(rng.poisson(n * step / float(DAY)))
    prefixes = sorted(set(keys["prefix"]))
    pshare = np.asarray([keys["share"][keys["prefix"] == p].sum() for p in prefixes])
    out = []
    for _burst in range(count):
        a = int(rng.integers(0, n - 1))
        b = a + int(rng.integers(0, 2))
        mag = float(min(0.40, 0.10 * (1.0 + rng.pareto(1.5))))
        p = prefixes[int(rng.choice(len(prefixes), p=pshare / pshare.sum()))]
        out.append((a, b, mag, keys["prefix"] == p, str(p)))
    return out


def _codes(values, cats):
    index = dict((c, i) for i, c in enumerate(cats))
    return np.asarray([index[v] for v in values], dtype=np.int32)


# ------------------------------------------------------------------ the generator

def generate(seed=0, sites=5, days=42, step=300, start="2026-02-23", rows_per_step=48):
    """Records of a synthetic multi-site world, its labels and its truth (see the module
    docstring): ``(records, labels, truth)``."""
    seed, nsites, days, step, start_ts, rows_per_step = _check(seed, sites, days, step, start, rows_per_step)
    rng = np.random.default_rng(seed)
    n = days * DAY // step
    ts = start_ts + step * np.arange(1, n + 1, dtype=np.int64)
    names = [SITES[i][0] for i in range(nsites)]
    links = ["%s:wan" % s for s in names]

    types = list(rng.permutation(TYPES)) + [TYPES[int(i)] for i in rng.integers(0, 3, max(0, nsites - 3))]
    sigmas = np.linspace(0.05, 0.35, nsites) if nsites > 1 else np.array([rng.uniform(0.05, 0.35)])
    sigmas = np.clip(sigmas + rng.uniform(-0.02, 0.02, nsites), 0.05, 0.35)[rng.permutation(nsites)]
    worlds = [_site(rng, names[i], SITES[i][1], str(types[i]), float(sigmas[i]), start_ts, step, n)
              for i in range(nsites)]

    pool, fresh = _prefix_space(rng)
    popularity = 1.0 / np.arange(1, POOL_SIZE + 1) ** 1.0
    popularity /= popularity.sum()
    tables = [_key_table(rng, w["type"], pool, popularity, rows_per_step) for w in worlds]

    gli = int(rng.integers(nsites))
    glen = int(rng.integers(2 * HOUR // step, 4 * HOUR // step + 1))
    warm = WARMUP_DAYS * DAY // step
    ga = int(rng.integers(warm, n - glen - DAY // step))
    gap = (gli, ga, ga + glen - 1)

    placed, per_kind = _place_labels(rng, links, worlds, tables, fresh, n, step, gap)

    blocks, meta, series, burst_list = [], [], {}, []
    for li, w in enumerate(worlds):
        noise = _noise(rng, w["noise_sigma"], n, step)
        bursts = _bursts(rng, tables[li], n, step)
        burst_list += [{"link": links[li], "start": int(ts[a]), "end": int(ts[b]), "magnitude": round(mag, 4),
                        "prefix": p} for a, b, mag, _m, p in bursts]
        ints, cols, s = _link_rows(rng, w, tables[li], [x for x in placed if x["li"] == li],
                                   [x[:4] for x in bursts], noise, step, n)
        if li == gli:
            ints[gap[1]:gap[2] + 1] = 0
            s["total"][gap[1]:gap[2] + 1] = 0
        cols["link"] = [links[li]] * ints.shape[1]
        blocks.append(ints)
        meta.append(cols)
        series[links[li]] = s

    flat = np.hstack(blocks).ravel()     # step-major: rows come out ordered by ts, then link
    col = dict((k, sum((list(m[k]) for m in meta), [])) for k in ("link", "direction", "prefix", "port_class"))
    num = dict((k, np.concatenate([m[k] for m in meta]).astype(np.int64)) for k in ("proto", "dscp", "size"))
    keep = np.flatnonzero(flat)
    step_i, col_i = np.divmod(keep, len(col["link"]))
    nbytes = flat[keep]
    cats, codes = {}, {}
    for k in STRING_COLUMNS:
        cats[k] = sorted(set(col[k]))
        codes[k] = _codes(col[k], cats[k])[col_i]
    ints = {"ts": ts[step_i], "proto": num["proto"][col_i], "dscp": num["dscp"][col_i], "bytes": nbytes,
            "packets": np.maximum(1, np.rint(nbytes / num["size"][col_i])).astype(np.int64)}
    records = Records(ints, codes, cats)

    labels = []
    for i, lab in enumerate(placed):
        d = {"id": i, "kind": lab["kind"], "link": links[lab["li"]], "start": int(ts[lab["a"]]),
             "end": int(ts[lab["b"]]), "steps": lab["b"] - lab["a"] + 1, "magnitude": round(lab["m"], 4),
             "prefix": lab["prefix"], "dims": lab["dims"]}
        d.update(lab["extra"])
        labels.append(d)

    truth = _truth(worlds, links, ts, step, start_ts, gap, series, burst_list)
    truth["params"] = {
        "seed": seed, "sites": nsites, "days": days, "step": step, "start": start, "start_ts": start_ts,
        "rows_per_step": rows_per_step, "warmup_days": WARMUP_DAYS, "min_separation_s": MIN_SEPARATION_S,
        "labels_per_kind": per_kind, "batch_local_start": "%02d:00" % BATCH_START_H, "noise_ar_fraction": 0.5,
        "noise_ar_correlation_s": 2 * HOUR, "prefixes_per_link": PREFIXES_PER_LINK,
    }
    return records, labels, truth


def _truth(worlds, links, ts, step, start_ts, gap, series, bursts):
    sites, holidays, fbds, changes = {}, [], [], []
    for link, w in zip(links, worlds):
        clock = w["clock"]
        hdates = [_date(h).isoformat() for h in w["holidays"]]
        for h, date in zip(w["holidays"], hdates):
            idx = np.flatnonzero(clock.day == h)
            holidays.append({"link": link, "start": int(ts[idx[0]]), "end": int(ts[idx[-1]]), "date": date})
        for d in (w["fbd"] if w["type"] == "office" else ()):
            idx = np.flatnonzero(clock.day == d)
            if len(idx):
                fbds.append({"link": link, "date": _date(d).isoformat(), "start": int(ts[idx[0]]),
                             "end": int(ts[idx[-1]]), "boost": round(w["boosts"].get(d, 0.0), 4)})
        for t, before, after in clock.changes:
            changes.append({"link": link, "ts": int(t), "offset_before": before, "offset_after": after})
        sites[link] = {
            "site": w["site"], "tz": w["tz"], "type": w["type"], "holidays": hdates,
            "noise_sigma": round(w["noise_sigma"], 4), "peak_bps": round(w["peak_bps"]),
            "growth_per_week": round(w["growth"], 4), "in_share": IN_SHARE[w["type"]],
            "batch": {"local_start": "%02d:00" % BATCH_START_H, "minutes": w["batch_minutes"],
                      "amplitude": round(w["batch_amplitude"], 4)},
        }
    gli, ga, gb = gap
    return {
        "ts": ts, "step": step, "start": start_ts, "links": list(links), "sites": sites,
        "holidays": holidays, "gaps": [{"link": links[gli], "start": int(ts[ga]), "end": int(ts[gb])}],
        "first_business_days": fbds, "dst_changes": changes, "bursts": bursts,
        "clean": dict((link, w["clean"]) for link, w in zip(links, worlds)),
        "noise": dict((k, v["noise"]) for k, v in series.items()),
        "burst": dict((k, v["burst"]) for k, v in series.items()),
        "effect": dict((k, v["effect"]) for k, v in series.items()),
        "total": dict((k, v["total"]) for k, v in series.items()),
    }


# ------------------------------------------------------------------ files

SERIES = ("ts", "clean", "noise", "burst", "effect", "total")


def summary(labels, truth):
    """Labels and truth without the per-step series, as plain JSON-able values."""
    rest = dict((k, v) for k, v in truth.items() if k not in SERIES)
    rest["steps"] = len(truth["ts"])
    rest["ts_first"], rest["ts_last"] = int(truth["ts"][0]), int(truth["ts"][-1])
    return _plain({"labels": labels, "truth": rest})


def _plain(x):
    if isinstance(x, dict):
        return dict((str(k), _plain(v)) for k, v in x.items())
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.floating):
        return float(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def write_csv(records, path, chunk=250000):
    """The records as the native CSV flow log (header = data.HEADER)."""
    with open(path, "w") as f:
        f.write(",".join(HEADER) + "\n")
        for lo in range(0, len(records), chunk):
            cols = []
            for k in HEADER:
                if k in INT_COLUMNS:
                    cols.append(records.ints[k][lo:lo + chunk].astype(str).tolist())
                else:
                    cats = np.asarray(records.cats[k] or [""], dtype=object)
                    cols.append(cats[records.codes[k][lo:lo + chunk]].tolist())
            f.write("\n".join(",".join(row) for row in zip(*cols)) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description="Synthetic multi-site WAN traffic with labelled anomalies "
                                                 "(second, independent evaluation world).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sites", type=int, default=5)
    parser.add_argument("--days", type=int, default=42)
    parser.add_argument("--step", type=int, default=300)
    parser.add_argument("--start", default="2026-02-23")
    parser.add_argument("--rows-per-step", type=int, default=48)
    parser.add_argument("--out", required=True, help="CSV file to write; labels and truth go to <out>.labels.json")
    args = parser.parse_args(argv)
    start = int(args.start) if args.start.isdigit() else args.start
    try:
        records, labels, truth = generate(seed=args.seed, sites=args.sites, days=args.days, step=args.step,
                                          start=start, rows_per_step=args.rows_per_step)
    except NetstackError as e:
        sys.stderr.write("worldgen: %s\n" % e)
        return 2
    write_csv(records, args.out)
    with open(args.out + ".labels.json", "w") as f:
        json.dump(summary(labels, truth), f, indent=1, sort_keys=True)
    sys.stdout.write("%d rows, %d links, %d labels -> %s\n"
                     % (len(records), len(truth["links"]), len(labels), args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
