# -*- coding: utf-8 -*-
# Copyright: netstack.tuning contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""CPU list <-> CPU mask conversions, in the formats the kernel reads and prints.

* a *cpulist* is what ``/sys/devices/system/cpu/online`` or ``smp_affinity_list`` hold:
  ``"0-3,8"`` (the kernel also accepts a stride form ``"0-7:2/4"``: of each group of 4,
  use the first 2);
* a *mask* is what ``rps_cpus``, ``xps_cpus`` or ``smp_affinity`` hold: hexadecimal,
  32-bit words separated by commas, most significant word first (``"ff,00000001"``).

Plain Python, shared by the facts module, the AMP partitioning engine and the filter
plugins.  Bad input raises ``ValueError`` with a message that quotes it.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re

_RANGE = re.compile(r"^([0-9]+)(?:-([0-9]+)(?::([0-9]+)/([0-9]+))?)?$")


def parse_cpulist(text):
    """``"0-3,8"`` -> ``[0, 1, 2, 3, 8]`` (sorted, no duplicates); ``""`` -> ``[]``."""
    cpus = set()
    text = (text or "").strip()
    for part in filter(None, (p.strip() for p in text.split(","))):
        m = _RANGE.match(part)
        if not m:
            raise ValueError("bad CPU list %r: cannot parse %r" % (text, part))
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        used, group = (int(m.group(3)), int(m.group(4))) if m.group(3) else (1, 1)
        if hi < lo or group == 0 or used == 0 or used > group:
            raise ValueError("bad CPU list %r: bad range %r" % (text, part))
        cpus.update(c for c in range(lo, hi + 1) if (c - lo) % group < used)
    return sorted(cpus)


def format_cpulist(cpus):
    """``[0, 1, 2, 3, 8]`` -> ``"0-3,8"`` (the kernel's own compact form)."""
    out, run = [], []
    for c in sorted(set(int(c) for c in cpus)):
        if c < 0:
            raise ValueError("negative CPU number %d" % c)
        if run and c != run[-1] + 1:
            out.append(_span(run))
            run = []
        run.append(c)
    if run:
        out.append(_span(run))
    return ",".join(out)


def _span(run):
    return str(run[0]) if len(run) == 1 else "%d-%d" % (run[0], run[-1])


def mask_to_cpus(mask):
    """``"ff,00000001"`` -> ``[0, 32, 33, ..., 39]``; ``"0"`` or ``""`` -> ``[]``.

    Each comma-separated word is 32 bits, as the kernel's bitmap parser reads it.
    """
    text = (mask or "").strip().lower()
    if text.startswith("0x"):
        text = text[2:]
    words = text.split(",") if text else []
    if any(not re.match(r"^[0-9a-f]{1,8}$", w) for w in words):
        raise ValueError("bad CPU mask %r: expected hex words like 'ff,00000001'" % mask)
    value = 0
    for w in words:
        value = (value << 32) | int(w, 16)
    return [i for i in range(value.bit_length()) if value >> i & 1]


def cpus_to_mask(cpus, nbits=None):
    """``[0, 1]`` -> ``"3"``.

    With ``nbits`` (the number of possible CPUs) the mask is zero-padded the way the kernel
    prints it: ``cpus_to_mask([0, 1], 64)`` -> ``"00000000,00000003"``.  The kernel accepts
    either form when written.
    """
    value = 0
    for c in cpus:
        c = int(c)
        if c < 0:
            raise ValueError("negative CPU number %d" % c)
        if nbits is not None and c >= nbits:
            raise ValueError("CPU %d out of range: only %d CPUs" % (c, nbits))
        value |= 1 << c
    digits = "%x" % value
    width = max(len(digits), (int(nbits) + 3) // 4 if nbits else 1)
    digits = digits.rjust(width, "0")
    words = []
    while digits:
        words.insert(0, digits[-8:])
        digits = digits[:-8]
    return ",".join(words)


def cpulist_to_mask(text, nbits=None):
    """``"0-1"`` -> ``"3"``."""
    return cpus_to_mask(parse_cpulist(text), nbits)


def mask_to_cpulist(mask):
    """``"3"`` -> ``"0-1"``."""
    return format_cpulist(mask_to_cpus(mask))


def usable():
    """How many CPUs this process may run on (its affinity mask; the machine's count where
    the platform has no mask)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1
