# -*- coding: utf-8 -*-
# Copyright: netstack.tuning contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Traffic records: the one shape every traffic source is turned into (capability 5).

A record is traffic of one aggregation key seen in one interval:

    ts          int, UNIX seconds: the end of the interval (collector) or of the flow (flow files)
    link        str: where it was seen ("<host>:<interface>", "<exporter>:<ifindex>", a CSV's link)
    direction   "in" (the remote side sent it) or "out" (the remote side received it)
    prefix      the remote address masked to the prefix length ("198.51.100.0/24",
                "2001:db8::/48"), "-" for non-IP frames
    proto       IP protocol number (6 TCP, 17 UDP, ...; 0 for non-IP)
    port_class  the service class of the flow's ports (see PORT_CLASSES)
    dscp        0-63
    bytes       L3 bytes (IP header and payload)
    packets     packets

The collector's on-host store and the native CSV flow log use exactly these columns
(``HEADER``), so the store is itself a CSV flow log.

``Records`` holds a batch column-wise in numpy arrays (string columns as integer codes
plus their categories) so the analyzer works on millions of rows without Python loops.
This module needs numpy for ``Records`` only; the port classes and header are plain
Python (the collector runs on hosts without numpy).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import os
import re

try:
    import numpy as np
    HAS_NUMPY = True
except ImportError:  # managed hosts: the collector needs no numpy
    np = None
    HAS_NUMPY = False

from ansible_collections.netstack.tuning.plugins.module_utils.core.common import NetstackError

HEADER = ("ts", "link", "direction", "prefix", "proto", "port_class", "dscp", "bytes", "packets")
STRING_COLUMNS = ("link", "direction", "prefix", "port_class")
INT_COLUMNS = ("ts", "proto", "dscp", "bytes", "packets")
DIRECTIONS = ("in", "out")

# Service classes by port, most specific first.  A flow's class is the more specific of
# the classes of its two ports (the lower class id), so a client on 49152+ talking to
# 5432 is "db", and two ephemeral ports are "ephemeral".  Protocols without ports are
# "none".  The BPF collector receives this table as a 65536-entry array of class ids.
PORT_CLASSES = (
    ("web", (80, 443, 8080, 8443)),
    ("dns", (53, 853)),
    ("ssh", (22,)),
    ("mail", (25, 110, 143, 465, 587, 993, 995)),
    ("db", (1433, 1521, 3306, 5432, 9042, 27017)),
    ("cache", (6379, 11211)),
    ("ntp", (123,)),
    ("well_known", None),     # other ports below 1024
    ("registered", None),     # 1024-49151
    ("ephemeral", None),      # 49152-65535
    ("none", None),           # no ports (ICMP, non-IP, other protocols)
)
CLASS_NAMES = tuple(name for name, _p in PORT_CLASSES)
CLASS_ID = dict((name, i) for i, name in enumerate(CLASS_NAMES))
PORTED_PROTOS = (6, 17, 132, 136)  # TCP, UDP, SCTP, UDP-Lite


def port_class_table():
    """A list of 65536 class ids, index = port."""
    table = [CLASS_ID["registered"]] * 65536
    for p in range(0, 1024):
        table[p] = CLASS_ID["well_known"]
    for p in range(49152, 65536):
        table[p] = CLASS_ID["ephemeral"]
    for i, (_name, ports) in enumerate(PORT_CLASSES):
        for p in ports or ():
            table[p] = i
    return table


def port_class(proto, sport, dport):
    """The class name of one flow."""
    if proto not in PORTED_PROTOS:
        return "none"
    t = port_class_table()
    return CLASS_NAMES[min(t[sport], t[dport])]


def port_class_ids(proto, sport, dport):
    """Vectorised ``port_class``: numpy arrays in, an array of class ids out."""
    table = np.asarray(port_class_table(), dtype=np.uint8)
    ids = np.minimum(table[_as_index(sport, 16)], table[_as_index(dport, 16)])
    ported = np.zeros(256, dtype=bool)              # a table lookup: np.isin took 0.47 s on 10 M rows, this 0.06
    ported[list(PORTED_PROTOS)] = True
    proto = np.asarray(proto)
    is_ported = ported[_as_index(proto, 8)]
    if not _narrow_unsigned(proto, 8):
        is_ported &= (proto >= 0) & (proto <= 0xFF)
    return np.where(is_ported, ids, CLASS_ID["none"]).astype(np.uint8)


def _narrow_unsigned(values, bits):
    return values.dtype.kind == "u" and values.dtype.itemsize * 8 <= bits


def _as_index(values, bits):
    """``values`` (an array) as indexes into a table of 2**bits: as they are where they are
    unsigned and that narrow (the reader's columns), else their low bits as int64."""
    values = np.asarray(values)
    return values if _narrow_unsigned(values, bits) else np.asarray(values, dtype=np.int64) & ((1 << bits) - 1)


def require_numpy(what="traffic analysis"):
    """NetstackError naming numpy when it is missing (the engine modules that work on
    records import it guarded, so hosts and sanity can import them without it)."""
    if not HAS_NUMPY:
        raise NetstackError("numpy is required for %s (python3-numpy on the host, or run it on the controller)" % what,
                            field="numpy")


THP_DEFRAG = "/sys/kernel/mm/transparent_hugepage/defrag"
# Defrag modes in which a page fault in a region marked MADV_HUGEPAGE may compact memory
# synchronously (Documentation/admin-guide/mm/transhuge.rst); "defer" and "never" do not.
STALLING_DEFRAG = ("always", "madvise", "defer+madvise")


def _hugepage_switch():
    """numpy's (private, 1.20+) setter of its MADV_HUGEPAGE hint; None where there is none."""
    core = getattr(np, "_core", None) if np is not None else None
    if core is None and np is not None:
        core = getattr(np, "core", None)            # numpy 1.x (Debian 12's 1.24)
    return getattr(getattr(core, "multiarray", None), "_set_madvise_hugepage", None)


@contextlib.contextmanager
def large_arrays(defrag_path=None, environ=None):
    """Within it, numpy does not mark its large arrays MADV_HUGEPAGE where the kernel's THP
    defrag mode makes such a fault compact memory synchronously.  numpy marks every array of
    4 MiB or more; where free memory is fragmented (a large file in the page cache), each
    fault of a marked region may then stall in compaction.  Reading and analysing a 10 M-row
    flow log made many such arrays: 0.92-0.99 M records/s end to end with the hint against
    1.13-1.16 M/s without it, interleaved (docs/traffic.md).  numpy's own switch
    (NUMPY_MADVISE_HUGEPAGE in the environment) wins where it is set.  Yields whether the
    hint was turned off; the setting is put back on the way out."""
    environ = os.environ if environ is None else environ
    switch = _hugepage_switch()
    mode = None
    if switch is not None and "NUMPY_MADVISE_HUGEPAGE" not in environ:
        try:
            with open(defrag_path or THP_DEFRAG) as f:
                chosen = re.search(r"\[([^\]]+)\]", f.read())
            mode = chosen.group(1) if chosen else None
        except (IOError, OSError):
            mode = None
    if mode not in STALLING_DEFRAG:
        yield False
        return
    before = switch(False)
    try:
        yield True
    finally:
        switch(before)


class Records(object):
    """A batch of traffic records, column-wise.

    ``ints``: name -> int64 array for INT_COLUMNS; ``codes``: name -> int32 array and
    ``cats``: name -> list of strings for STRING_COLUMNS (value = cats[name][codes[name]]).
    """

    def __init__(self, ints, codes, cats):
        require_numpy()
        self.ints = dict((k, np.asarray(ints[k], dtype=np.int64)) for k in INT_COLUMNS)
        self.codes = dict((k, np.asarray(codes[k], dtype=np.int32)) for k in STRING_COLUMNS)
        self.cats = dict((k, list(cats[k])) for k in STRING_COLUMNS)
        n = len(self.ints["ts"])
        for k in INT_COLUMNS + STRING_COLUMNS:
            col = self.ints.get(k, self.codes.get(k))
            if len(col) != n:
                raise NetstackError("column %s has %d rows, ts has %d" % (k, len(col), n), field=k)

    def __len__(self):
        return len(self.ints["ts"])

    @classmethod
    def empty(cls):
        require_numpy()
        return cls(dict((k, []) for k in INT_COLUMNS), dict((k, []) for k in STRING_COLUMNS),
                   dict((k, []) for k in STRING_COLUMNS))

    @classmethod
    def from_columns(cls, columns):
        """From plain columns: ints as sequences, strings as sequences of str."""
        require_numpy()
        codes, cats = {}, {}
        for k in STRING_COLUMNS:
            values = np.asarray(columns[k], dtype=object)
            if len(values):
                uniq, inv = np.unique(values.astype(str), return_inverse=True)
                cats[k], codes[k] = [str(u) for u in uniq], inv
            else:
                cats[k], codes[k] = [], []
        return cls(dict((k, columns[k]) for k in INT_COLUMNS), codes, cats)

    @classmethod
    def from_rows(cls, rows):
        """From dicts with the HEADER keys."""
        return cls.from_columns(dict((k, [r[k] for r in rows]) for k in HEADER))

    @classmethod
    def concat(cls, batches):
        """One batch from many; categories are merged."""
        require_numpy()
        batches = [b for b in batches if len(b)]
        if not batches:
            return cls.empty()
        if len(batches) == 1:
            return batches[0]
        ints = dict((k, np.concatenate([b.ints[k] for b in batches])) for k in INT_COLUMNS)
        codes, cats = {}, {}
        for k in STRING_COLUMNS:
            merged = sorted(set().union(*[set(b.cats[k]) for b in batches]))
            index = dict((c, i) for i, c in enumerate(merged))
            parts = []
            for b in batches:
                remap = np.asarray([index[c] for c in b.cats[k]], dtype=np.int32)
                parts.append(remap[b.codes[k]] if len(remap) else b.codes[k])
            codes[k], cats[k] = np.concatenate(parts), merged
        return cls(ints, codes, cats)

    def take(self, index):
        """The rows selected by a boolean mask or an index array."""
        return Records(dict((k, v[index]) for k, v in self.ints.items()),
                       dict((k, v[index]) for k, v in self.codes.items()), self.cats)

    def strings(self, name):
        """A string column as a numpy array of str."""
        cats = np.asarray(self.cats[name] or [""], dtype=object)
        return cats[self.codes[name]]

    def rows(self):
        """Dicts with the HEADER keys (slow; for small batches and tests)."""
        cols = dict((k, self.ints[k].tolist()) for k in INT_COLUMNS)
        cols.update((k, self.strings(k).tolist()) for k in STRING_COLUMNS)
        return [dict((k, cols[k][i]) for k in HEADER) for i in range(len(self))]
