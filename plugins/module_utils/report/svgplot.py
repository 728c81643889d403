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
    # A range below float resolution (259.84 vs 259.8399999999999) is no range: the tick
    # step would not move v and the loop below would never end.
    if hi - lo <= 1e-9 * max(abs(lo), abs(hi), 1e-300):
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((s * mag for s in (1, 2, 2.5, 5, 10) if s * mag >= raw), default=10 * mag)
    start = math.floor(lo / step) * step
    ticks = []
    v = start
    while v <= hi + step * 1e-9 and len(ticks) < 100:
        ticks.append(round(v, 10))
        v += step
    if ticks[-1] < hi - step * 1e-9:  # the top tick must cover the data, or the line leaves the frame
        ticks.append(round(v, 10))
    return ticks[0], ticks[-1], ticks


def _fmt(v):
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e6 or a < 1e-3:
        return "%.2g" % v
    return ("%.3f" % v).rstrip("0").rstrip(".")


def _frame(title, xlabel, ylabel, xlo, xhi, ylo, yhi, xticks, yticks, xfmt=_fmt, yfmt=_fmt):
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
        parts.append('<text x="%d" y="%.1f" text-anchor="end">%s</text>' % (L - 4, sy(t) + 4, _esc(yfmt(t))))
    for t in xticks:
        parts.append('<text x="%.1f" y="%d" text-anchor="middle">%s</text>' % (sx(t), H - B + 14, _esc(xfmt(t))))
    parts.append('<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#888"/>' % (L, T, pw, ph))
    parts.append('<text x="%d" y="%d" text-anchor="middle">%s</text>' % (L + pw / 2, H - 8, _esc(xlabel)))
    parts.append('<text transform="translate(14,%d) rotate(-90)" text-anchor="middle">%s</text>'
                 % (T + ph / 2, _esc(ylabel)))
    return parts, sx, sy


def _legend(parts, names, colors=None):
    for i, name in enumerate(names):
        x = L + 8 + (i % 4) * 140
        y = T + 12 + (i // 4) * 14
        c = colors[i] if colors else PALETTE[i % len(PALETTE)]
        parts.append('<rect x="%d" y="%d" width="10" height="10" fill="%s"/>' % (x, y - 9, c))
        parts.append('<text x="%d" y="%d">%s</text>' % (x + 14, y, _esc(name)))


def _log_ticks(lo, hi):
    """Tick positions (log10 units) for a log axis over [lo, hi] (log10 units): decades,
    with 2 and 5 in between when the range is short."""
    a, b = int(math.floor(lo)), int(math.ceil(hi))
    if b == a:
        b = a + 1
    mults = (1, 2, 5) if b - a <= 2 else (1,)
    ticks = [math.log10(m * 10.0 ** e) for e in range(a, b + 1) for m in mults]
    return float(a), float(b), [t for t in ticks if a - 1e-9 <= t <= b + 1e-9]


def line_chart(series, title="", xlabel="", ylabel="", points=False, marks=(), xfmt=_fmt,
               spans=(), hlines=(), yfmt=None, ylog=False, xticks=None, styles=None):
    """series: {name: [(x, y), ...]}; marks: [(x, y, label)] drawn as red circles.

    Optional extras (all off by default): spans [(x0, x1, label[, colour])] shaded x-ranges
    with a tooltip; hlines [(y, label[, colour])] dashed horizontal lines; yfmt formats y
    tick labels; ylog draws a log10 y axis (values <= 0 are left out); xticks fixes the x
    tick positions (the x range is then the data's own); styles {name: {"color", "dash",
    "width"}} overrides a series' look."""
    styles = styles or {}
    yfmt = yfmt or _fmt
    if ylog:
        def ty(v):
            return math.log10(v) if v is not None and v > 0 else None
    else:
        def ty(v):
            return v
    xs = [pt[0] for s in series.values() for pt in s] + [m[0] for m in marks]
    ys = [ty(pt[1]) for s in series.values() for pt in s if pt[1] is not None] + [ty(m[1]) for m in marks]
    ys = [y for y in ys if y is not None]
    if not xs or not ys:
        return "<p>(no data for %s)</p>" % _esc(title)
    xs += [x for sp in spans for x in sp[:2]]
    ys += [y for y in (ty(h[0]) for h in hlines) if y is not None]
    if hlines:  # headroom for the label above the top line
        ys.append(max(ys) + 0.06 * ((max(ys) - min(ys)) or 1.0))
    if xticks is None:
        xlo, xhi, xt = _nice(min(xs), max(xs))
    else:
        xlo, xhi = min(xs), max(xs)
        if xhi == xlo:
            xlo, xhi = xlo - 1, xhi + 1
        xt = [x for x in xticks if xlo <= x <= xhi]
    if ylog:
        ylo, yhi, yt = _log_ticks(min(ys), max(ys))

        def tick_fmt(t):
            return yfmt(10 ** t)
    else:
        ylo, yhi, yt = _nice(min(ys), max(ys))
        tick_fmt = yfmt
    parts, sx, sy = _frame(title, xlabel, ylabel, xlo, xhi, ylo, yhi, xt, yt, xfmt, tick_fmt)
    for sp in spans:
        x0, x1 = sorted((sx(max(xlo, min(xhi, sp[0]))), sx(max(xlo, min(xhi, sp[1])))))
        if x1 - x0 < 2:
            x0, x1 = x0 - 1, x0 + 1
        parts.append('<rect x="%.1f" y="%d" width="%.1f" height="%d" fill="%s" fill-opacity="0.15">'
                     '<title>%s</title></rect>' % (x0, T, x1 - x0, H - T - B, _esc(str(sp[3] if len(sp) > 3 else "#d62728")),
                                                   _esc(str(sp[2]))))
    for i, h in enumerate(hlines):
        y = ty(h[0])
        if y is None:
            continue
        c = _esc(str(h[2] if len(h) > 2 else "#555"))
        parts.append('<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="%s" stroke-dasharray="6,3"/>'
                     % (L, W - R, sy(y), sy(y), c))
        # labels staggered from the right so that close levels stay readable
        parts.append('<text x="%d" y="%.1f" text-anchor="end" fill="%s">%s</text>' % (W - R - 4 - 150 * (i % 3), sy(y) - 3, c,
                                                                                      _esc(str(h[1]))))
    colors = []
    for i, (name, pts) in enumerate(series.items()):
        st = styles.get(name, {})
        c = _esc(str(st.get("color") or PALETTE[i % len(PALETTE)]))
        colors.append(c)
        pts = [(x, ty(y)) for x, y in pts if y is not None]
        pts = [(x, y) for x, y in pts if y is not None]
        if points or len(pts) == 1:
            # a single point draws no line: mark it, or a one-bin series is invisible
            parts += ['<circle cx="%.1f" cy="%.1f" r="%s" fill="%s"/>' % (sx(x), sy(y), 2.5 if points else 3.5, c)
                      for x, y in pts]
        else:
            extra = ""
            if st.get("dash"):
                extra += ' stroke-dasharray="%s"' % _esc(str(st["dash"]))
            parts.append('<polyline fill="none" stroke="%s" stroke-width="%s"%s points="%s"/>'
                         % (c, _esc(str(st.get("width", 1.5))), extra, " ".join("%.1f,%.1f" % (sx(x), sy(y)) for x, y in pts)))
    for x, y, label in marks:
        y = ty(y)
        if y is None:
            continue
        parts.append('<circle cx="%.1f" cy="%.1f" r="4" fill="none" stroke="#d62728" stroke-width="2">'
                     '<title>%s</title></circle>' % (sx(x), sy(y), _esc(label)))
    _legend(parts, list(series), colors if styles else None)
    return "\n".join(parts + ["</svg>"])


def bar_chart(items, title="", xlabel="", ylabel="", horizontal=True, vfmt=None):
    """items: [(label, value)], drawn as horizontal bars (long labels fit); vfmt formats
    the value printed after each bar."""
    vfmt = vfmt or _fmt
    if not items:
        return "<p>(no data for %s)</p>" % _esc(title)
    # As tall as the bars need, plus the value axis below them (ticks and its label).
    h = T + 18 * len(items) + 8 + 36
    _lo, vmax, ticks = _nice(0.0, max(max(it[1] for it in items), 0.0) or 1.0, 4)
    left = 220
    pw = W - left - R - 56  # room for the value printed after the longest bar
    axis = T + 18 * len(items) + 6
    parts = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" '
             'font-family="sans-serif" font-size="11">' % (W, h, W, h),
             '<rect width="100%" height="100%" fill="white"/>',
             '<text x="8" y="18" font-size="13" font-weight="bold">%s</text>' % _esc(title)]
    for t in ticks:
        x = left + t / vmax * pw
        parts.append('<line x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="#e5e5e5"/>' % (x, x, T, axis))
        parts.append('<text x="%.1f" y="%d" text-anchor="middle">%s</text>' % (x, axis + 13, _esc(_fmt(t))))
    parts.append('<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="#888"/>' % (left, left + pw, axis, axis))
    for i, (label, v) in enumerate(items):
        y = T + i * 18
        parts.append('<text x="%d" y="%d" text-anchor="end">%s</text>' % (left - 6, y + 12, _esc(str(label))))
        parts.append('<rect x="%d" y="%d" width="%.1f" height="13" fill="%s"/>'
                     % (left, y + 2, max(1.0, v / vmax * pw), PALETTE[0]))
        parts.append('<text x="%.1f" y="%d">%s</text>' % (left + v / vmax * pw + 4, y + 12, _esc(vfmt(v))))
    parts.append('<text x="%d" y="%d" text-anchor="middle">%s</text>' % (left + pw / 2, h - 6, _esc(xlabel)))
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
    w, h = max(90 + cw * len(cols), 300), 40 + ch * len(rows) + 24
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
            # from a light tint (lowest) to full blue (highest); one value (or all equal) is
            # drawn in full, never white on white
            f = 0.15 + 0.85 * (v - lo) / (hi - lo) if hi > lo else 1.0
            col = "rgb(%d,%d,%d)" % (255 - 224 * f, 255 - 136 * f, 255 - 75 * f)
            parts.append('<rect x="%d" y="%d" width="%d" height="%d" fill="%s" stroke="#ccc" stroke-width="0.5">'
                         '<title>%s</title></rect>' % (90 + j * cw, y, cw - 1, ch - 1, col, _esc(fmt(v))))
    parts.append('<text x="90" y="%d">lightest %s, darkest %s</text>' % (h - 6, _esc(fmt(lo)), _esc(fmt(hi))))
    return "\n".join(parts + ["</svg>"])
