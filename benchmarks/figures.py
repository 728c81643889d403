"""Summaries and number formats shared by the benchmark reports (median and min-max over
repeats, figures with sensible precision)."""

import statistics


def spread(vals):
    """{"median", "min", "max", "n"} of the values that are not None, or None."""
    vals = sorted(v for v in vals if v is not None)
    if not vals:
        return None
    return {"median": statistics.median(vals), "min": vals[0], "max": vals[-1], "n": len(vals)}


def fmt(v):
    if v is None:
        return "n/a"
    a = abs(v)
    if a >= 1000:
        return "%.0f" % v
    if a >= 100:
        return "%.1f" % v
    if a >= 10:
        return "%.2f" % v
    return "%.3f" % v


def fmt_spread(s):
    return "n/a" if not s else "%s (%s-%s)" % (fmt(s["median"]), fmt(s["min"]), fmt(s["max"]))


def fmt_ratio(s):
    return "n/a" if not s else "%.2f (%.2f-%.2f)" % (s["median"], s["min"], s["max"])


def tool_versions(tools, width=100):
    """{name: first non-empty line of its version output (cut to width), or "?"} for
    ``tools``, a sequence of (name, argv)."""
    import subprocess
    out = {}
    for name, argv in tools:
        try:
            r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                               timeout=10)
            out[name] = [x for x in r.stdout.splitlines() if x.strip()][0].strip()[:width]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            out[name] = "?"
    return out
