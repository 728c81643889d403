# -*- coding: utf-8 -*-
# Copyright: netstack.tuning contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Small, dependency-free statistics for noisy benchmarks.

Medians and spreads over repeats, a one-sided Mann-Whitney U test (exact for small
samples, normal approximation with tie correction otherwise) to decide whether a
candidate is really better than a baseline, and a bootstrap confidence interval of the
ratio of medians.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import itertools
import math
import random


def median(xs):
    s = sorted(xs)
    n = len(s)
    if not n:
        raise ValueError("median of nothing")
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2.0


def quantile(xs, q):
    """Linear interpolation between order statistics (numpy's default)."""
    s = sorted(xs)
    if not s:
        raise ValueError("quantile of nothing")
    pos = (len(s) - 1) * q
    lo = int(math.floor(pos))
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def spread(xs):
    """median, min, max, IQR and relative IQR of a sample."""
    m = median(xs)
    iqr = quantile(xs, 0.75) - quantile(xs, 0.25)
    return {"median": m, "min": min(xs), "max": max(xs), "iqr": iqr,
            "rel_iqr": (iqr / m) if m else None, "n": len(xs)}


def _ranks(values):
    """Average ranks (1-based) with ties sharing the mean rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        r = (i + j) / 2.0 + 1
        for k in range(i, j + 1):
            ranks[order[k]] = r
        i = j + 1
    return ranks


def mann_whitney_less(a, b):
    """One-sided Mann-Whitney U test of H1: values in ``a`` tend to be smaller than in ``b``.

    Returns {"u": U of a, "p": p-value, "method": "exact" | "normal"}.  Exact enumeration
    of every split when C(n, len(a)) <= 200000, else the normal approximation with tie
    correction and continuity correction.
    """
    n1, n2 = len(a), len(b)
    if not n1 or not n2:
        raise ValueError("both samples need values")
    pooled = list(a) + list(b)
    ranks = _ranks(pooled)
    r1 = sum(ranks[:n1])
    u1 = r1 - n1 * (n1 + 1) / 2.0
    n = n1 + n2
    if math.comb(n, n1) <= 200000:
        # P(U <= observed) under H0: every assignment of ranks to group a is equally likely.
        count = total = 0
        for combo in itertools.combinations(range(n), n1):
            u = sum(ranks[i] for i in combo) - n1 * (n1 + 1) / 2.0
            total += 1
            if u <= u1 + 1e-9:
                count += 1
        return {"u": u1, "p": count / float(total), "method": "exact"}
    mu = n1 * n2 / 2.0
    ties = {}
    for v in pooled:
        ties[v] = ties.get(v, 0) + 1
    tie_term = sum(t ** 3 - t for t in ties.values()) / float(n * (n - 1))
    sigma = math.sqrt(n1 * n2 / 12.0 * ((n + 1) - tie_term))
    if sigma == 0:
        return {"u": u1, "p": 1.0, "method": "normal"}
    z = (u1 - mu + 0.5) / sigma
    return {"u": u1, "p": 0.5 * math.erfc(-z / math.sqrt(2)), "method": "normal"}


def bootstrap_ratio_ci(a, b, level=0.95, rounds=2000, seed=0):
    """Confidence interval of median(a)/median(b) by the percentile bootstrap."""
    rng = random.Random(seed)
    ratios = []
    for dummy in range(rounds):
        ra = [rng.choice(a) for dummy in a]
        rb = [rng.choice(b) for dummy in b]
        mb = median(rb)
        if mb:
            ratios.append(median(ra) / mb)
    alpha = (1 - level) / 2
    return [quantile(ratios, alpha), quantile(ratios, 1 - alpha)]


def compare(candidate, baseline, alpha=0.05):
    """Is ``candidate`` (lower is better) better than ``baseline`` with confidence?"""
    t = mann_whitney_less(candidate, baseline)
    ratio = median(candidate) / median(baseline) if median(baseline) else None
    return {"test": "Mann-Whitney U, one-sided (candidate < baseline), %s" % t["method"],
            "u": t["u"], "p_value": t["p"], "alpha": alpha, "better": t["p"] < alpha,
            "ratio_of_medians": ratio, "ratio_ci95": bootstrap_ratio_ci(candidate, baseline),
            "n_candidate": len(candidate), "n_baseline": len(baseline)}
