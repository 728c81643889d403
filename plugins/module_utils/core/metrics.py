# -*- coding: utf-8 -*-
# Copyright: netstack.tuning contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Prometheus text exposition (format 0.0.4), the one writer every capability's metrics use.

    family("netstack_shm_captured_total", "counter", "Sockets added to the path",
           [({"policy": "web"}, 12)])

gives the ``# HELP`` and ``# TYPE`` lines and one sample line per (labels, value).  Label
values are escaped (backslash, double quote, newline), HELP text too (backslash, newline);
metric and label names are checked against the format's grammar, so a bad name is a bug
found here rather than a scrape that fails on the server.  Values: integers as integers,
floats in Python's shortest round-trip form, +Inf/-Inf/NaN spelled as the format wants.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import math
import re

NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
KINDS = ("counter", "gauge", "untyped", "summary", "histogram")


def escape_label(value):
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def escape_help(text):
    return str(text).replace("\\", "\\\\").replace("\n", "\\n")


def number(value):
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return "%d" % value
    v = float(value)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(v)


def sample(name, labels, value):
    """One sample line."""
    if not NAME.match(name):
        raise ValueError("not a Prometheus metric name: %r" % name)
    if not labels:
        return "%s %s" % (name, number(value))
    parts = []
    for k, v in labels.items():
        if not LABEL.match(k) or k.startswith("__"):
            raise ValueError("not a Prometheus label name: %r" % k)
        parts.append('%s="%s"' % (k, escape_label(v)))
    return "%s{%s} %s" % (name, ",".join(parts), number(value))


def family(name, kind, help_text, samples):
    """HELP, TYPE and sample lines of one metric family; ``samples``: (labels or None,
    value) pairs (a value of None is left out)."""
    if kind not in KINDS:
        raise ValueError("not a Prometheus metric type: %r" % kind)
    lines = ["# HELP %s %s" % (name, escape_help(help_text)), "# TYPE %s %s" % (name, kind)]
    lines += [sample(name, labels, value) for labels, value in samples if value is not None]
    return lines


def one(name, kind, help_text, value, labels=None):
    """A family with one sample; nothing when ``value`` is None."""
    return [] if value is None else family(name, kind, help_text, [(labels, value)])


def text(lines):
    """The exposition body: lines joined, ending in a newline."""
    return "\n".join(lines) + "\n"
