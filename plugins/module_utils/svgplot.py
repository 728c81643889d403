# -*- coding: utf-8 -*-
# Copyright: netstack.tuning contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Dependency-free SVG charts for the HTML reports (no plotting library on hosts or in
execution environments is assumed).  Each function returns an ``<svg>`` string."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import math

try:
    from html import escape as _esc
except ImportError:  # pragma: no cover
    from cgi import escape as _esc

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf", "#7f7f7f"]
W, H = 640, 320
L, R, T, B = 64, 16, 32, 44


def _nice(lo, hi, n=5):
    if hi == lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((s * mag for s in (1, 2, 2.5, 5, 10) if s * mag >= raw), default=10 * mag)
    start = math.floor(lo / step) * step
    ticks = []
    v = start
    while v <= hi + step * 1e-9:
        ticks.append(round(v, 10))
        v += step
    return ticks[0], ticks[-1], ticks


def _fmt(v):
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e6 or a < 1e-3:
        return "%.2g" % v
    return ("%.3f" % v).rstrip("0").rstrip(".")


def _frame(title, xlabel, ylabel, xlo, xhi, ylo, yhi, xticks, yticks, xfmt=_fmt):
    pw, ph = W - L - R, H - T - B
    parts = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" '
             'font-family="sans-serif" font-size="11">' % (W, H, W, H),
             '<rect width="100%" height="100%" fill="white"/>',
             '<text x="%d" y="18" font-size="13" font-weight="bold">%s</text>' % (L, _esc(title))]

    def sx(x):
        return L + (x - xlo) / ((xhi - xlo) or 1) * pw

    def sy(y):
        return T + ph - (y - ylo) / ((yhi - ylo) or 1) * ph

    for t in yticks:
        parts.append('<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#e5e5e5"/>' % (L, W - R, sy(t), sy(t)))
        parts.append('<text x="%d" y="%.1f" text-anchor="end">%s</text>' % (L - 4, sy(t) + 4, _fmt(t)))
    for t in xticks:
        parts.append('<text x="%.1f" y="%d" text-anchor="middle">%s</text>' % (sx(t), H - B + 14, _esc(xfmt(t))))
    parts.append('<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#888"/>' % (L, T, pw, ph))
    parts.append('<text x="%d" y="%d" text-anchor="middle">%s</text>' % (L + pw / 2, H - 8, _esc(xlabel)))
    parts.append('<text transform="translate(14,%d) rotate(-90)" text-anchor="middle">%s</text>'
                 % (T + ph / 2, _esc(ylabel)))
    return parts, sx, sy


def _legend(parts, names):
    for i, name in enumerate(names):
        x = L + 8 + (i % 4) * 140
        y = T + 12 + (i // 4) * 14
        parts.append('<rect x="%d" y="%d" width="10" height="10" fill="%s"/>' % (x, y - 9, PALETTE[i % len(PALETTE)]))
        parts.append('<text x="%d" y="%d">%s</text>' % (x + 14, y, _esc(name)))


def line_chart(series, title="", xlabel="", ylabel="", points=False, marks=(), xfmt=_fmt):
    """series: {name: [(x, y), ...]}; marks: [(x, y, label)] drawn as red circles."""
    xs = [pt[0] for s in series.values() for pt in s] + [m[0] for m in marks]
    ys = [pt[1] for s in series.values() for pt in s if pt[1] is not None] + [m[1] for m in marks]
    if not xs or not ys:
        return "<p>(no data for %s)</p>" % _esc(title)
    xlo, xhi, xt = _nice(min(xs), max(xs))
    ylo, yhi, yt = _nice(min(ys), max(ys))
    parts, sx, sy = _frame(title, xlabel, ylabel, xlo, xhi, ylo, yhi, xt, yt, xfmt)
    for i, (name, pts) in enumerate(series.items()):
        c = PALETTE[i % len(PALETTE)]
        pts = [(x, y) for x, y in pts if y is not None]
        if points:
            parts += ['<circle cx="%.1f" cy="%.1f" r="2.5" fill="%s"/>' % (sx(x), sy(y), c) for x, y in pts]
        else:
            parts.append('<polyline fill="none" stroke="%s" stroke-width="1.5" points="%s"/>'
                         % (c, " ".join("%.1f,%.1f" % (sx(x), sy(y)) for x, y in pts)))
    for x, y, label in marks:
        parts.append('<circle cx="%.1f" cy="%.1f" r="4" fill="none" stroke="#d62728" stroke-width="2">'
                     '<title>%s</title></circle>' % (sx(x), sy(y), _esc(label)))
    _legend(parts, list(series))
    return "\n".join(parts + ["</svg>"])


def bar_chart(items, title="", xlabel="", ylabel="", horizontal=True):
    """items: [(label, value)], drawn as horizontal bars (long labels fit)."""
    if not items:
        return "<p>(no data for %s)</p>" % _esc(title)
    h = max(H, T + B + 18 * len(items))
    vmax = max(it[1] for it in items) or 1.0
    left = 220
    pw = W - left - R
    parts = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" '
             'font-family="sans-serif" font-size="11">' % (W, h, W, h),
             '<rect width="100%" height="100%" fill="white"/>',
             '<text x="8" y="18" font-size="13" font-weight="bold">%s</text>' % _esc(title)]
    for i, (label, v) in enumerate(items):
        y = T + i * 18
        parts.append('<text x="%d" y="%d" text-anchor="end">%s</text>' % (left - 6, y + 12, _esc(str(label))))
        parts.append('<rect x="%d" y="%d" width="%.1f" height="13" fill="%s"/>'
                     % (left, y + 2, max(1.0, v / vmax * pw), PALETTE[0]))
        parts.append('<text x="%.1f" y="%d">%s</text>' % (left + v / vmax * pw + 4, y + 12, _fmt(v)))
    parts.append('<text x="%d" y="%d" text-anchor="middle">%s</text>' % (left + pw / 2, h - 8, _esc(xlabel)))
    return "\n".join(parts + ["</svg>"])


def box_plot(groups, title="", ylabel=""):
    """groups: {name: [values]}: box (IQR), whiskers (min-max), median line, points."""
    vals = [v for g in groups.values() for v in g]
    if not vals:
        return "<p>(no data for %s)</p>" % _esc(title)
    ylo, yhi, yt = _nice(min(vals), max(vals))
    n = len(groups)
    parts, sx, sy = _frame(title, "", ylabel, 0, n, ylo, yhi, [], yt)
    for i, (name, g) in enumerate(groups.items()):
        if not g:
            continue
        s = sorted(g)

        def q(p):
            pos = (len(s) - 1) * p
            lo = int(pos)
            hi = min(lo + 1, len(s) - 1)
            return s[lo] + (s[hi] - s[lo]) * (pos - lo)
        cx = sx(i + 0.5)
        c = PALETTE[i % len(PALETTE)]
        parts.append('<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="%s"/>' % (cx, cx, sy(s[0]), sy(s[-1]), c))
        parts.append('<rect x="%.1f" y="%.1f" width="40" height="%.1f" fill="%s" fill-opacity="0.25" stroke="%s"/>'
                     % (cx - 20, sy(q(0.75)), max(1.0, sy(q(0.25)) - sy(q(0.75))), c, c))
        parts.append('<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="%s" stroke-width="2"/>'
                     % (cx - 20, cx + 20, sy(q(0.5)), sy(q(0.5)), c))
        parts += ['<circle cx="%.1f" cy="%.1f" r="2" fill="%s"/>' % (cx + 28, sy(v), c) for v in s]
        parts.append('<text x="%.1f" y="%d" text-anchor="middle">%s</text>' % (cx, H - B + 14, _esc(name)))
    return "\n".join(parts + ["</svg>"])


def heatmap(rows, cols, matrix, title="", fmt=_fmt):
    """matrix[r][c] numbers (None = blank), colour from white to blue."""
    flat = [v for row in matrix for v in row if v is not None]
    if not flat:
        return "<p>(no data for %s)</p>" % _esc(title)
    lo, hi = min(flat), max(flat)
    cw = max(18, (W - 90) // max(1, len(cols)))
    ch = 18
    w, h = 90 + cw * len(cols), 40 + ch * len(rows) + 20
    parts = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" '
             'font-size="10">' % (w, h), '<rect width="100%" height="100%" fill="white"/>',
             '<text x="4" y="14" font-size="13" font-weight="bold">%s</text>' % _esc(title)]
    for j, c in enumerate(cols):
        parts.append('<text x="%d" y="34" text-anchor="middle">%s</text>' % (90 + j * cw + cw / 2, _esc(str(c))))
    for i, r in enumerate(rows):
        y = 40 + i * ch
        parts.append('<text x="84" y="%d" text-anchor="end">%s</text>' % (y + 13, _esc(str(r))))
        for j, v in enumerate(matrix[i]):
            if v is None:
                continue
            f = (v - lo) / ((hi - lo) or 1)
            col = "rgb(%d,%d,%d)" % (255 - 224 * f, 255 - 136 * f, 255 - 75 * f)
            parts.append('<rect x="%d" y="%d" width="%d" height="%d" fill="%s"><title>%s</title></rect>'
                         % (90 + j * cw, y, cw - 1, ch - 1, col, _esc(fmt(v))))
    return "\n".join(parts + ["</svg>"])
