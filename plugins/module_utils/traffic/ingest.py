# -*- coding: utf-8 -*-
# Copyright: netstack.tuning contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Flow data exported by others, read into traffic ``Records`` (capability 5).

``read(path)`` takes one file and tells its kind from its content:

CSV, two dialects told apart by the header line
    native   exactly ``trafficdata.HEADER`` (the collector's on-host store is such a file);
             every cell is checked.
    generic  a flow log with at least src, dst, bytes and a time (end, ts or start) column
             under common names (srcaddr, dst_ip, octets, nfdump's sa/da/ibyt/te, ...).
             The remote side and the direction come from ``local_prefixes``; the remote
             address is masked to ``prefix_v4``/``prefix_v6``.
NetFlow v5, v9 (RFC 3954) and IPFIX (RFC 7011)
    as a raw stream of export packets back to back, or as UDP datagrams in a classic
    libpcap file (Ethernet, raw IP, Linux cooked v1/v2, BSD loopback).

Errors are ``NetstackError`` naming the file, the line (CSV) or the packet and byte
offset (binary) and the field; ``field`` is "<path>:<line or packet>:<field>".  The parser
is pure: it reads the file and returns, nothing else happens on error.

The encoders that write such files for tests and the evaluation data are evaluation
tooling: tools/flowencode.py.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import array
import calendar
import csv
import datetime
import gc
import io
import ipaddress
import itertools
import mmap
import os
import re
import socket
import struct
import tempfile
import time

try:
    import numpy as np
except ImportError:  # ansible-test sanity imports module_utils without numpy
    np = None  # trafficdata.require_numpy() says so where it is needed

from ansible_collections.netstack.tuning.plugins.module_utils.core import cpus, nsutil
from ansible_collections.netstack.tuning.plugins.module_utils.core.common import NetstackError
from ansible_collections.netstack.tuning.plugins.module_utils.traffic import data as trafficdata

FORMATS = ("auto", "csv", "netflow")
CHUNK_ROWS = 200000            # rows per step of the csv-module reader
CSV_BLOCK_BYTES = 128 << 10    # bytes per step of the fast CSV reader (small: stays in the CPU caches)
PARALLEL_MIN_BYTES = 16 << 20  # a CSV file this large is read in two processes (below, a fork costs more than it saves)
CHILD_TIMEOUT = 3600           # seconds the reader of a second half may take after the first is done

PCAP_MAGICS = {
    b"\xa1\xb2\xc3\xd4": ">", b"\xd4\xc3\xb2\xa1": "<",      # microseconds
    b"\xa1\xb2\x3c\x4d": ">", b"\x4d\x3c\xb2\xa1": "<",      # nanoseconds
}
PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"
EXPORT_VERSIONS = (5, 9, 10)


# ----------------------------------------------------------------------------- public API

def read(path, fmt="auto", link=None, local_prefixes=(), prefix_v4=24, prefix_v6=48, stats=None):
    """Read one flow file into ``Records``.

    ``fmt``: "auto" (by content), "csv" or "netflow" (v5/v9/IPFIX raw stream or pcap).
    ``link``: the link of generic CSV rows without a link column (default: the file's
    basename) and the exporter name of raw NetFlow streams (default "netflow"; a pcap's
    exporter is the datagram's source address).
    ``local_prefixes``: networks of this side; a flow to a local address is "in" (remote =
    source), one from a local address "out" (remote = destination); otherwise (or without
    local prefixes) a NetFlow DIRECTION field decides (egress = "out"), else "in".
    ``stats``: a dict, updated with counters (rows, packets, skipped_no_template, ...);
    the same dict is also set as the returned batch's ``stats`` attribute.
    """
    trafficdata.require_numpy("reading flow files")
    if fmt not in FORMATS:
        raise NetstackError("fmt must be one of %s, not %r" % (", ".join(FORMATS), fmt), field="fmt")
    loc = _Localizer(local_prefixes, prefix_v4, prefix_v6)
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except (IOError, OSError) as e:
        raise NetstackError("%s: cannot read: %s" % (path, e.strerror or e), field=path)
    if not head:
        raise NetstackError("%s: empty file (no header line, no export packets)" % path, field=path)
    kind = _sniff(head)
    if fmt == "auto":
        if kind is None:
            raise NetstackError("%s: neither a text CSV flow log nor a NetFlow/IPFIX stream or pcap file (first bytes %s)"
                                % (path, _hex(head[:8])), field="%s:1:version" % path)
        fmt = "csv" if kind == "csv" else "netflow"
    st = {"format": None, "rows": 0}
    if fmt == "csv":
        records = _read_csv(path, link, loc, st)
    else:
        if kind == "pcapng":
            raise NetstackError("%s packet 1 (offset 0): field 'magic': pcapng is not supported, save it as classic pcap "
                                "(editcap -F pcap in out)" % path, field="%s:1:magic" % path)
        with open(path, "rb") as f:
            data = f.read()
        records = _read_netflow(path, data, link, loc, st)
    if stats is not None:
        stats.update(st)
        st = stats
    records.stats = st
    return records


def read_many(paths, **kw):
    """``read`` each path and concatenate; ``stats`` (if given) gets summed counters and ``files``."""
    stats = kw.pop("stats", None)
    batches, total = [], {}
    for p in paths:
        st = {}
        batches.append(read(p, stats=st, **kw))
        for k, v in st.items():
            if isinstance(v, int) and not isinstance(v, bool):
                total[k] = total.get(k, 0) + v
            elif k == "format":
                total.setdefault("formats", []).append(v)
    total["files"] = len(batches)
    records = trafficdata.Records.concat(batches)
    if stats is not None:
        stats.update(total)
        total = stats
    records.stats = total
    return records


def _sniff(head):
    """'pcap', 'pcapng', 'raw', 'csv' or None, from the first bytes."""
    if head[:4] in PCAP_MAGICS:
        return "pcap"
    if head[:4] == PCAPNG_MAGIC:
        return "pcapng"
    if len(head) >= 2 and struct.unpack("!H", head[:2])[0] in EXPORT_VERSIONS:
        return "raw"
    first = head[3:4] if head.startswith(b"\xef\xbb\xbf") else head[:1]
    if b"\x00" not in head and (b" " <= first <= b"~" or first == b"\t"):
        return "csv"       # text with a header line (the CSV reader names any line that is not UTF-8)
    return None


def _hex(b):
    return " ".join("%02x" % c for c in bytearray(b))


# ----------------------------------------------------------------------------- common pieces

class _Coder(object):
    """Strings (or keys) to dense int codes; ``canon`` validates/normalises new values."""

    def __init__(self, canon=None):
        self.index = {}
        self.cats = []
        self.canon = canon
        self._by_cat = {}
        self._sorted_keys = self._sorted_codes = None     # encode_keys

    def add(self, raw, cat=None):
        if cat is None:
            cat = raw if self.canon is None else self.canon(raw)
        code = self.index[raw] = self.code_of(cat)
        return code

    def encode(self, values):
        """An int32 array of codes; raises _BadValues(set of bad raw values) on invalid ones."""
        index = self.index
        codes = np.fromiter(map(index.get, values, itertools.repeat(-1)), dtype=np.int32, count=len(values))
        missing = np.flatnonzero(codes < 0)     # values not seen before (usually none: few links, classes)
        bad = {}
        for i in missing.tolist():
            v = values[i]
            code = index.get(v)
            if code is None and v not in bad:
                try:
                    code = self.add(v)
                except ValueError as e:
                    bad[v] = str(e)
            if code is not None:
                codes[i] = code
        if bad:
            raise _BadValues(bad)
        return codes

    def encode_keys(self, keys):
        """An int32 array of the codes of canonical values ``keys`` (an int64 array), looked
        up in a sorted array of the keys met this way (a column of many distinct addresses
        would otherwise cost a dict lookup per cell)."""
        if self._sorted_keys is None:
            self._sorted_keys, self._sorted_codes = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int32)
        if len(self._sorted_keys):      # usually every key is known by now: one binary search each
            at = np.minimum(np.searchsorted(self._sorted_keys, keys), len(self._sorted_keys) - 1)
            if (self._sorted_keys[at] == keys).all():
                return self._sorted_codes[at]
        uniq, inv = np.unique(keys, return_inverse=True)
        known = self._sorted_keys
        at = np.searchsorted(known, uniq)
        found = at < len(known)
        found[found] = known[at[found]] == uniq[found]
        codes = np.empty(len(uniq), dtype=np.int32)
        codes[found] = self._sorted_codes[at[found]]
        new = np.flatnonzero(~found)
        if len(new):
            codes[new] = np.fromiter(map(self.code_of, uniq[new].tolist()), dtype=np.int32, count=len(new))
            self._sorted_keys = np.insert(known, at[new], uniq[new])
            self._sorted_codes = np.insert(self._sorted_codes, at[new], codes[new])
        return codes[inv.reshape(-1)]

    def code_of(self, cat):
        """The code of canonical value ``cat``, given a new code if it has none."""
        code = self._by_cat.get(cat)
        if code is None:
            code = self._by_cat[cat] = len(self.cats)
            self.cats.append(cat)
        return code

    def sorted(self, codes):
        """(sorted cats, codes remapped to them)."""
        order = sorted(range(len(self.cats)), key=self.cats.__getitem__)
        if order == list(range(len(order))):        # already in order (directions): no pass over the codes
            return list(self.cats), np.asarray(codes, dtype=np.int32)
        remap = np.empty(len(order), dtype=np.int32)
        remap[np.asarray(order, dtype=np.int64)] = np.arange(len(order), dtype=np.int32)
        codes = np.asarray(codes, dtype=np.int32)
        return [self.cats[i] for i in order], (remap[codes] if len(codes) else codes)


class _BadValues(Exception):
    def __init__(self, bad):
        Exception.__init__(self, "bad values")
        self.bad = bad


class _Localizer(object):
    """Which addresses are local, and an address masked to its remote prefix.

    Addresses are ints: IPv4 as is, IPv6 with bit 128 set; -1 means "no address".
    """

    V6 = 1 << 128

    def __init__(self, local_prefixes, prefix_v4, prefix_v6):
        if isinstance(local_prefixes, str):
            local_prefixes = [p for p in re.split(r"[,\s]+", local_prefixes) if p]
        self.nets = []
        for p in local_prefixes or ():
            try:
                net = ipaddress.ip_network(str(p).strip(), strict=False)
            except ValueError as e:
                raise NetstackError("local_prefixes: %r is not a network: %s" % (p, e), field="local_prefixes")
            flag = self.V6 if net.version == 6 else 0
            self.nets.append((int(net.netmask) | flag, int(net.network_address) | flag))
        for name, value, top in (("prefix_v4", prefix_v4, 32), ("prefix_v6", prefix_v6, 128)):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
                raise NetstackError("%s must be an integer 0-%d, not %r" % (name, top, value), field=name)
        self.mask4 = (0xFFFFFFFF << (32 - prefix_v4)) & 0xFFFFFFFF
        self.mask6 = ((1 << 128) - 1) ^ ((1 << (128 - prefix_v6)) - 1)
        self.len4, self.len6 = prefix_v4, prefix_v6
        self._pref = {}

    def is_local(self, key):
        if key < 0:
            return False
        for mask, net in self.nets:
            if key & (mask | self.V6) == net:
                return True
        return False

    def prefix(self, key):
        if key < 0:
            return "-"
        if key & self.V6:
            masked = key & self.mask6
            s = self._pref.get(masked | self.V6)
            if s is None:
                s = self._pref[masked | self.V6] = "%s/%d" % (ipaddress.IPv6Address(masked), self.len6)
            return s
        masked = key & self.mask4
        s = self._pref.get(masked)
        if s is None:
            s = self._pref[masked] = "%s/%d" % (ipaddress.IPv4Address(masked), self.len4)
        return s

    def _local_and_prefix(self, keys):
        """(is local, prefix code) of each address key, and the prefix coder.  IPv4 keys go at
        once (a mask per local network, one string per distinct prefix); the rest one by one."""
        local = np.zeros(len(keys), dtype=bool)
        pref = np.zeros(len(keys), dtype=np.int32)
        pcoder = _Coder()
        # one pass in C: as floats, IPv4 keys are exact and every other key (-1, IPv6 with bit
        # 128 set) falls outside 0 .. 2**32
        approx = np.fromiter(keys, dtype=np.float64, count=len(keys))
        v4 = (approx >= 0) & (approx < float(1 << 32))
        if v4.any():
            k4 = approx[v4].astype(np.int64)
            hit = np.zeros(len(k4), dtype=bool)
            for mask, net in self.nets:
                if not net & self.V6:
                    hit |= (k4 & (mask & 0xFFFFFFFF)) == net
            local[v4] = hit
            nets, inv = np.unique(k4 & self.mask4, return_inverse=True)
            codes = np.fromiter((pcoder.add(self.prefix(int(m))) for m in nets.tolist()), dtype=np.int32, count=len(nets))
            pref[v4] = codes[inv.reshape(-1)]
        for i in np.flatnonzero(~v4).tolist():
            local[i] = self.is_local(keys[i])
            pref[i] = pcoder.add(self.prefix(keys[i]))       # add gives a known prefix its code
        return local, pref, pcoder

    def assemble(self, cols, addr_keys, link_coder):
        """Records from decoded flow columns.

        ``cols``: ts, link (codes), src, dst (indexes into addr_keys), dirflag (-1 unknown,
        0 ingress, 1 egress), proto, sport, dport, dscp, bytes, packets.
        """
        n = len(cols["ts"])
        keys = list(addr_keys) or [-1]
        local, pref, pcoder = self._local_and_prefix(keys)
        src, dst = cols["src"], cols["dst"]             # codes: indexes into addr_keys
        dst_local, src_local = local[dst], local[src]
        out = ~dst_local & (src_local | (np.asarray(cols["dirflag"]) == 1))
        prefix_codes = np.where(out, pref[dst], pref[src])
        pclass = trafficdata.port_class_ids(cols["proto"], cols["sport"], cols["dport"]) if n else np.zeros(0, dtype=np.uint8)
        ccoder = _Coder()
        for name in trafficdata.CLASS_NAMES:
            ccoder.add(name)
        dcoder = _Coder()
        for name in trafficdata.DIRECTIONS:
            dcoder.add(name)
        ints = dict((k, cols[k]) for k in trafficdata.INT_COLUMNS)      # Records makes them int64
        codes, cats = {}, {}
        cats["link"], codes["link"] = link_coder.sorted(cols["link"])
        cats["prefix"], codes["prefix"] = pcoder.sorted(prefix_codes)
        cats["direction"], codes["direction"] = dcoder.sorted(out.astype(np.int32))
        cats["port_class"], codes["port_class"] = ccoder.sorted(pclass.astype(np.int32))
        return _compact(trafficdata.Records(ints, codes, cats))


def _compact(records):
    """Drop categories no row uses (so cats are exactly the values present, sorted)."""
    for k in trafficdata.STRING_COLUMNS:
        codes, cats = records.codes[k], records.cats[k]
        if not len(codes):
            records.cats[k] = []
            continue
        used = np.zeros(len(cats), dtype=bool)
        used[codes] = True
        if used.all():
            continue
        remap = np.cumsum(used, dtype=np.int64) - 1
        records.codes[k] = remap[codes].astype(np.int32)
        records.cats[k] = [c for c, u in zip(cats, used) if u]
    return records


# ----------------------------------------------------------------------------- CSV

# generic dialect: canonical name -> aliases (lower case, '-' and ' ' read as '_')
_ALIASES = {
    "src": ("src", "srcaddr", "src_addr", "src_ip", "srcip", "source", "source_ip", "source_address", "saddr", "sa",
            "ipv4_src_addr", "ipv6_src_addr", "src_address", "sourceipv4address", "sourceipv6address"),
    "dst": ("dst", "dstaddr", "dst_addr", "dst_ip", "dstip", "destination", "destination_ip", "destination_address",
            "daddr", "da", "ipv4_dst_addr", "ipv6_dst_addr", "dst_address", "destinationipv4address",
            "destinationipv6address"),
    "sport": ("sport", "srcport", "src_port", "source_port", "sp", "l4_src_port", "sourcetransportport"),
    "dport": ("dport", "dstport", "dst_port", "destination_port", "dp", "l4_dst_port", "destinationtransportport"),
    "proto": ("proto", "protocol", "prot", "pr", "ip_proto", "ip_protocol", "protocolidentifier"),
    "packets": ("packets", "pkts", "ipkt", "in_pkts", "dpkts", "npackets", "packet_count", "packetdeltacount"),
    "dscp": ("dscp",),
    "tos": ("tos", "stos", "src_tos", "ip_tos", "ipclassofservice"),
    "link": ("link", "interface", "iface", "ifname"),
    "end": ("end", "end_time", "endtime", "te", "last", "last_switched", "flow_end", "ts_end", "end_ts", "stop",
            "flowendseconds"),
    "ts": ("ts", "time", "timestamp", "t"),
    "start": ("start", "start_time", "starttime", "first", "first_switched", "flow_start", "ts_start", "start_ts",
              "flowstartseconds"),
}
# the bytes column, with the unit its header names
_BYTES_UNITS = (
    (1, ("bytes", "octets", "byt", "ibyt", "in_bytes", "doctets", "nbytes", "byte_count", "octetdeltacount")),
    (1000, ("kbytes", "kb", "kilobytes")),
    (1000000, ("mbytes", "mb", "megabytes")),
)
_BYTES_ALIASES = dict((a, scale) for scale, names in _BYTES_UNITS for a in names)
_ALIAS = dict((a, canon) for canon, names in _ALIASES.items() for a in names)
_TIME_ORDER = ("end", "ts", "start")   # a record's ts is the end of the flow

_PROTO_NAMES = {"icmp": 1, "igmp": 2, "ipip": 4, "tcp": 6, "egp": 8, "udp": 17, "ipv6": 41, "rsvp": 46, "gre": 47,
                "esp": 50, "ah": 51, "icmp6": 58, "icmpv6": 58, "ipv6-icmp": 58, "ospf": 89, "pim": 103, "vrrp": 112,
                "l2tp": 115, "sctp": 132, "udplite": 136, "udp-lite": 136}

_UINT_RE = re.compile(r"[0-9]{1,18}\Z")
_INT64_MAX = (1 << 63) - 1
_DECIMAL_RE = re.compile(r"[0-9]{1,15}(\.[0-9]{1,9})?\Z")
_ISO_RE = re.compile(r"(\d{4})-(\d\d)-(\d\d)[T ](\d\d):(\d\d)(?::(\d\d)(?:[.,](\d+))?)?\s*(Z|z|UTC|[+-]\d\d(?::?\d\d)?)?\Z")
_UNIT_TEXT = re.compile(r"\s*[0-9.]+\s*[A-Za-z]+\s*\Z")


class _CellError(Exception):
    """A bad cell at row ``index`` of the chunk being converted."""

    def __init__(self, index, column, msg):
        Exception.__init__(self, msg)
        self.index, self.column, self.msg = index, column, msg


def _first_bad(values, bad):
    """The row index of the first value in ``bad`` (a dict value -> reason), and its reason."""
    first = min(values.index(v) for v in bad)
    return first, bad[values[first]]


def _uint_column(values, column, what):
    """Non-negative integers (digits only) -> int64 array; _CellError on the first bad cell."""
    joined = "\n".join(values)
    try:
        plain = not joined.encode("ascii").translate(None, b"0123456789\n") and "" not in values
    except UnicodeEncodeError:
        plain = False
    if plain:
        try:
            out = np.fromstring(joined, dtype=np.int64, sep="\n")
            if len(out) == len(values) and not (out == _INT64_MAX).any():     # saturated: too big
                return out
        except (ValueError, DeprecationWarning):
            pass
    for i, v in enumerate(values):
        if not _UINT_RE.match(v):
            raise _CellError(i, column, "%r is not %s" % (v, what))
    return np.array([int(v) for v in values], dtype=np.int64)


def _check_range(arr, values, column, lo, hi):
    bad = (arr < lo) | (arr > hi)
    if bad.any():
        i = int(np.argmax(bad))
        raise _CellError(i, column, "%r is out of range %d-%d" % (values[i], lo, hi))


def _byte_count_what(v):
    if _UNIT_TEXT.match(v):
        return "an integer byte count (the column wants a plain integer count of bytes, no unit text)"
    return "an integer byte count (the column wants a plain integer count of bytes)"


def _bytes_column(values, column, scale):
    if scale == 1:
        try:
            return _uint_column(values, column, "an integer byte count")
        except _CellError as e:
            raise _CellError(e.index, column, "%r is not %s" % (values[e.index], _byte_count_what(values[e.index])))
    cache, bad = {}, {}
    for v in set(values):
        if _DECIMAL_RE.match(v):
            cache[v] = int(round(float(v) * scale))
        else:
            bad[v] = "%r is not a number of %s (the column wants a plain number, no unit text)" % (
                v, "kilobytes" if scale == 1000 else "megabytes")
    if bad:
        i, msg = _first_bad(values, bad)
        raise _CellError(i, column, msg)
    return np.fromiter(map(cache.__getitem__, values), dtype=np.int64, count=len(values))


def _mapped_column(values, column, conv, cache=None):
    """Per distinct value conversion (conv raises ValueError with the reason) -> int64 array.
    ``cache`` (value -> int) may be kept across calls."""
    if cache is None:
        cache = {}
    elif len(cache) > 1000000:
        cache.clear()
    try:
        return np.fromiter(map(cache.__getitem__, values), dtype=np.int64, count=len(values))
    except KeyError:
        pass
    bad = {}
    for v in set(values).difference(cache):
        try:
            cache[v] = conv(v)
        except ValueError as e:
            bad[v] = "%r %s" % (v, e)
    if bad:
        i, msg = _first_bad(values, bad)
        raise _CellError(i, column, msg)
    return np.fromiter(map(cache.__getitem__, values), dtype=np.int64, count=len(values))


def _small_int_column(values, column, lo, hi, conv, cache):
    """Integers lo-hi: plain digits the fast way, anything else (names, '-') through ``conv``."""
    try:
        arr = _uint_column(values, column, "")
    except _CellError:
        return _mapped_column(values, column, conv, cache)
    _check_range(arr, values, column, lo, hi)
    return arr


def _parse_time(v):
    s = v.strip()
    if _DECIMAL_RE.match(s):
        return int(float(s)) if "." in s else int(s)
    m = _ISO_RE.match(s)
    if not m:
        raise ValueError("is not a time (UNIX seconds or ISO-8601 like 2026-11-24T10:00:00Z)")
    y, mo, d, h, mi, sec, _frac, tz = m.groups()
    try:
        when = datetime.datetime(int(y), int(mo), int(d), int(h), int(mi), min(int(sec or 0), 59))
    except ValueError:
        raise ValueError("is not a valid date and time")
    ts = calendar.timegm(when.timetuple())
    if tz and tz.upper() not in ("Z", "UTC"):
        sign = -1 if tz[0] == "-" else 1
        digits = tz[1:].replace(":", "")
        offset = int(digits[:2]) * 3600 + int(digits[2:4] or 0) * 60
        ts -= sign * offset
    if ts < 0:
        raise ValueError("is before 1970")
    return ts


def _parse_proto(v):
    s = v.strip().lower()
    if s.isdigit():
        n = int(s)
        if n > 255:
            raise ValueError("is out of range 0-255")
        return n
    if s in _PROTO_NAMES:
        return _PROTO_NAMES[s]
    raise ValueError("is not an IP protocol (a number 0-255 or a name: tcp, udp, icmp, ...)")


def _parse_port(v):
    s = v.strip()
    if s in ("", "-"):
        return 0
    if not _UINT_RE.match(s) or int(s) > 65535:
        raise ValueError("is not a port number 0-65535")
    return int(s)


def _int_in(lo, hi, what):
    def conv(v):
        s = v.strip()
        if not _UINT_RE.match(s) or not lo <= int(s) <= hi:
            raise ValueError("is not %s %d-%d" % (what, lo, hi))
        return int(s)
    return conv


# the generic dialect's small integer columns: (name, highest value, reader of a cell that is not plain digits)
_SMALL_INTS = (("proto", 255, _parse_proto), ("sport", 65535, _parse_port), ("dport", 65535, _parse_port),
               ("dscp", 63, _int_in(0, 63, "a DSCP value")), ("tos", 255, _int_in(0, 255, "a TOS byte")))


# The small columns of a flow as they are kept until the records are made: at 10 M rows a
# byte or two instead of eight is 230 MB less to copy, and less fresh memory to fault in.
if np is not None:
    _NARROW = (("proto", np.uint8), ("sport", np.uint16), ("dport", np.uint16), ("dscp", np.uint8))


def _line_error(path, line, column, msg):
    """The error of a bad cell, naming the file, the line and the column."""
    return NetstackError("%s line %d: field '%s': %s" % (path, line, column, msg), field="%s:%d:%s" % (path, line, column))


def _ipv4_keys(values):
    """The 32-bit values of a column of dotted quads (int64), read at once; None unless every
    cell is one exactly as inet_pton reads it (four decimal parts 0-255, no leading zeros, no
    spaces): then _addr_key decides, cell by cell."""
    if not values:
        return None
    text = "\n".join(values)
    try:
        raw = text.encode("ascii")
    except UnicodeEncodeError:
        return None
    if raw.translate(None, b"0123456789.\n"):
        return None
    b = np.frombuffer(raw, dtype=np.uint8)
    sep = np.flatnonzero((b == 46) | (b == 10))
    if len(sep) != 4 * len(values) - 1:
        return None
    kinds = np.append(b[sep], 10).reshape(-1, 4)
    if (kinds[:, :3] != 46).any() or (kinds[:, 3] != 10).any():
        return None
    starts = np.concatenate([[0], sep + 1])
    lens = np.append(sep, len(b)) - starts
    if (lens < 1).any() or (lens > 3).any() or ((lens > 1) & (b[np.minimum(starts, len(b) - 1)] == 48)).any():
        return None
    parts = np.fromstring(text.replace(".", "\n"), dtype=np.int64, sep="\n")
    if len(parts) != 4 * len(values) or (parts > 255).any():
        return None
    parts = parts.reshape(-1, 4)
    return (parts[:, 0] << 24) | (parts[:, 1] << 16) | (parts[:, 2] << 8) | parts[:, 3]


def _addr_key(v):
    s = v.strip()
    try:    # the usual dotted quad, in C (inet_pton is as strict as ipaddress: no leading zeros)
        return int.from_bytes(socket.inet_pton(socket.AF_INET, s), "big")
    except (OSError, ValueError):
        pass
    try:
        a = ipaddress.ip_address(s)
    except ValueError:
        raise ValueError("not an IP address")
    return int(a) | (_Localizer.V6 if a.version == 6 else 0)


def _canon_prefix(v):
    if v == "-":
        return v
    try:
        return str(ipaddress.ip_network(v, strict=True))
    except ValueError as e:
        raise ValueError("is not '-' or a network in CIDR form (%s)" % e)


def _canon_in(allowed, what):
    def canon(v):
        if v not in allowed:
            raise ValueError("is not %s (%s)" % (what, ", ".join(allowed)))
        return v
    return canon


def _canon_link(v):
    if not v:
        raise ValueError("is empty (a link name is required)")
    return v


def _norm_header(name):
    return re.sub(r"[\s\-]+", "_", name.strip().strip("\ufeff").strip().lower())


def _read_csv(path, link, loc, st):
    """Blocks of whole lines go the fast way (split on the delimiter, columns by slicing)
    while every line has exactly the header's number of fields and no quotes; from the
    first block that does not, the csv module reads the rest of the file.  A large file is
    read in two processes, the second half in a forked child (see _read_halves)."""
    try:
        with open(path, "rb") as f:
            header_bytes = f.readline()
            try:
                header_line = header_bytes.decode("utf-8-sig")
            except UnicodeDecodeError:
                raise NetstackError("%s line 1: field 'header': not UTF-8 text" % path, field="%s:1:header" % path)
            delim = _delimiter(header_line)
            header = next(csv.reader([header_line], delimiter=delim), [])
            names = [_norm_header(h) for h in header]
            parser = _csv_dialect(path, names, link, loc, st)
            parser.delim = delim
            offset = len(header_bytes)
            if os.fstat(f.fileno()).st_size - offset >= PARALLEL_MIN_BYTES and cpus.usable() > 1:
                if _read_halves(path, f, parser, offset):
                    return parser.finish()
                # a block the fast way cannot read (quotes, bare CRs): all of it again, one process
                st.clear()
                st.update({"format": None, "rows": 0})
                parser = _csv_dialect(path, names, link, loc, st)
                parser.delim = delim
            f.seek(offset)
            fast, offset, line = _read_blocks(f, parser, offset, 2, None)
            if not fast:
                _read_csv_module(path, f, offset, line, delim, parser)
    except (IOError, OSError) as e:
        raise NetstackError("%s: cannot read: %s" % (path, e.strerror or e), field=path)
    return parser.finish()


def _read_blocks(f, parser, offset, line, end):
    """Read whole lines from ``offset`` (line number ``line``; ``f`` positioned there) to
    ``end`` (a line start; None: the end of the file) the fast way.  (True, ...) when done;
    (False, offset, line) at the first block the fast way cannot read."""
    while end is None or offset < end:
        size = parser.block_bytes
        data = f.read(size if end is None else min(size, end - offset))
        block = data
        if data and (end is None or offset + len(data) < end):
            cut = data.rfind(b"\n") + 1
            if cut == 0:                        # a line longer than a block: take it whole
                block = data + f.readline()
            elif cut < len(data):
                block = data[:cut]
                f.seek(offset + cut)
        if not block:
            break
        if not parser.fast_block(block, line):
            f.seek(offset)
            return False, offset, line
        offset += len(block)
        line += block.count(b"\n")
    return True, offset, line


def _read_halves(path, f, parser, offset):
    """Read a large file in two processes: this one from ``offset`` to the middle, a forked
    child the rest, whose columns come back (pickled, through a pipe) and are appended with
    their category codes mapped to this parser's coders.  The first block is read before
    the fork, so both halves check times against the same reference.  An error in the first
    half wins (it is the earlier line); False if either half meets a block the fast way
    cannot read (the caller reads the whole file again in one process)."""
    size = os.fstat(f.fileno()).st_size
    f.seek(offset + parser.block_bytes)
    f.readline()
    first_end = min(f.tell(), size)
    f.seek(offset)
    fast, offset, line = _read_blocks(f, parser, offset, 2, first_end)
    if not fast:
        return False
    f.seek(offset + (size - offset) // 2)
    f.readline()
    mid = f.tell()

    def second_half(lines_before):
        with open(path, "rb") as g:
            g.seek(mid)
            parser.parts = []
            parser.st = {"rows": 0}
            done = _read_blocks(g, parser, mid, 1 + lines_before, size)[0]
            return parser.handover(scratch) if done else None

    def child_work():
        try:
            return second_half(0)       # line numbers are only needed for an error message...
        except NetstackError:
            with open(path, "rb") as g:
                before = _count_newlines(g, mid)
            return second_half(before)  # ...so only then are the lines before the half counted

    with _scratch() as scratch:
        child = nsutil.Child(child_work)
        try:
            f.seek(offset)
            fast = _read_blocks(f, parser, offset, line, mid)[0]
        except BaseException:
            child.kill()
            raise
        if not fast:
            child.kill()
            return False
        theirs = child.result(CHILD_TIMEOUT, NetstackError("%s: the process reading the second half gave no answer in "
                                                           "%d s" % (path, CHILD_TIMEOUT), field=path))
        if theirs is None:
            return False
        parser.take_over(theirs, scratch)
    return True


def _scratch():
    """An unnamed file in memory (memfd; a deleted temporary file where there is none) that a
    child writes its columns to and this process maps: no copy through a pipe, no pickling."""
    if hasattr(os, "memfd_create"):
        try:
            return os.fdopen(os.memfd_create("netstack-traffic-csv", os.MFD_CLOEXEC), "r+b", buffering=0)
        except OSError:
            pass
    return tempfile.TemporaryFile(buffering=0)


def _json_key(c):
    """A category as JSON brought it back (a list where it was a tuple)."""
    return tuple(c) if isinstance(c, list) else c


def _count_newlines(f, end):
    """Newlines in the first ``end`` bytes of ``f`` (then positioned at ``end``)."""
    f.seek(0)
    n, left = 0, end
    while left > 0:
        chunk = f.read(min(left, 8 << 20))
        if not chunk:
            break
        n += chunk.count(b"\n")
        left -= len(chunk)
    f.seek(end)
    return n


def _read_csv_module(path, f, offset, first_line, delim, parser):
    """The rest of the file (from ``offset``, which is line ``first_line``) through the csv module."""
    f.seek(0, 2)
    size = f.tell()
    f.seek(max(size - 1, 0))
    ends_with_newline = f.read(1) in (b"\n", b"\r")
    f.seek(offset)
    text = io.TextIOWrapper(f, encoding="utf-8", newline="")
    enabled = gc.isenabled()
    gc.disable()    # millions of short-lived row lists: the cyclic collector only slows this down
    try:
        reader = csv.reader(text, delimiter=delim)
        base = 0
        chunk = _csv_chunk(path, reader, first_line)
        while chunk:
            following = _csv_chunk(path, reader, first_line)
            try:
                parser.chunk(chunk, not following and not ends_with_newline)
            except _CellError as e:
                line = _csv_line(path, delim, offset, first_line, base + e.index)
                raise _line_error(path, line, e.column, e.msg)
            base += len(chunk)
            chunk = following
    except UnicodeDecodeError:
        f.seek(offset)
        raw = f.read()
        try:
            raw.decode("utf-8")
            line = first_line
        except UnicodeDecodeError as e:
            line = first_line + raw.count(b"\n", 0, e.start)
        raise NetstackError("%s line %d: field 'row': not UTF-8 text" % (path, line), field="%s:%d:row" % (path, line))
    finally:
        if enabled:
            gc.enable()
        text.detach()


def _csv_chunk(path, reader, first_line):
    try:
        return list(itertools.islice(reader, CHUNK_ROWS))
    except csv.Error as e:
        line = first_line + reader.line_num - 1
        raise NetstackError("%s line %d: field 'row': not valid CSV: %s" % (path, line, e), field="%s:%d:row" % (path, line))


def _delimiter(header_line):
    counts = [(header_line.count(d), d) for d in (",", "\t", ";", "|")]
    best = max(counts)
    return best[1] if best[0] else ","


def _csv_line(path, delim, offset, first_line, row_index):
    """The line where data row ``row_index`` (0-based from ``offset``, blank rows counted) starts."""
    with open(path, "rb") as f:
        f.seek(offset)
        text = io.TextIOWrapper(f, encoding="utf-8", newline="")
        reader = csv.reader(text, delimiter=delim)
        prev = 0
        for i, _row in enumerate(reader):
            if i == row_index:
                break
            prev = reader.line_num
        text.detach()
    return first_line + prev


def _csv_dialect(path, names, link, loc, st):
    if not names or names == [""]:
        raise NetstackError("%s line 1: field 'header': empty header line (expected the native columns %s or a flow log "
                            "header with src, dst, bytes and a time column)" % (path, ",".join(trafficdata.HEADER)),
                            field="%s:1:header" % path)
    if tuple(names) == trafficdata.HEADER:
        st["format"] = "csv-native"
        return _NativeCsv(path, st)
    if sorted(names) == sorted(trafficdata.HEADER):
        raise NetstackError("%s line 1: field 'header': the native columns in another order; the native header is "
                            "exactly %s" % (path, ",".join(trafficdata.HEADER)), field="%s:1:header" % path)
    cols, scale = {}, None
    for i, n in enumerate(names):
        canon = _ALIAS.get(n)
        if canon is None and n in _BYTES_ALIASES:
            if "bytes" not in cols:
                cols["bytes"], scale = i, _BYTES_ALIASES[n]
            continue
        if canon is not None and canon not in cols:
            cols[canon] = i
    if not cols:
        raise NetstackError("%s line 1: field 'header': unknown header %r: neither the native columns (%s) nor a flow log "
                            "with src, dst, bytes and end/ts/start columns" % (path, ",".join(names), ",".join(trafficdata.HEADER)),
                            field="%s:1:header" % path)
    for need, aliases in (("src", _ALIASES["src"][:6]), ("dst", _ALIASES["dst"][:6]), ("bytes", ("octets", "kbytes", "mbytes"))):
        if need not in cols:
            raise NetstackError("%s line 1: field '%s': the header has no %s column (also read as %s); columns: %s"
                                % (path, need, need, ", ".join(aliases), ",".join(names)), field="%s:1:%s" % (path, need))
    time_col = next((t for t in _TIME_ORDER if t in cols), None)
    if time_col is None:
        raise NetstackError("%s line 1: field 'ts': the header has no time column (end, ts or start, also read as end_time, "
                            "timestamp, start_time, ...); columns: %s" % (path, ",".join(names)), field="%s:1:ts" % path)
    st["format"] = "csv-generic"
    return _GenericCsv(path, names, cols, scale, time_col, link, loc, st)


# Plausible record times: Unix seconds before 2100 (a millisecond time is around 1.7e12
# and would make the analysis allocate bins for thousands of years), and within MAX_SPAN of
# the first rows of the file (a record ten years ahead, a typo in one row).
TS_MIN, TS_MAX = 0, 4102444800              # 1970, 2100-01-01 UTC
MAX_SPAN = 3 * 366 * 86400


def _time_error(v, ref):
    if v > 1e11:
        return "%d is not a Unix time in seconds (%s?)" % (v, "microseconds" if v > 1e14 else "milliseconds")
    if not TS_MIN <= v < TS_MAX:
        return "%d is after 2100 as a Unix time in seconds" % v
    return "%d (%s) is %d days away from the file's first records (around %s): a wrong time, or split the file" % (
        v, time.strftime("%Y-%m-%d", time.gmtime(v)), abs(v - ref) // 86400, time.strftime("%Y-%m-%d", time.gmtime(ref)))


class _PlainRows(object):
    """The shape of a plain row of a generic CSV: every cell an unsigned integer, or (the
    address columns) a dotted quad, so the row is a fixed run of numbers with '.' between
    an address's parts, the delimiter between cells and a newline at its end."""

    def __init__(self, ncol, addr_cols, delim):
        seps, self.first, octets, ints = [], [], [], []
        for col in range(ncol):
            self.first.append(len(seps))
            last = "\n" if col == ncol - 1 else delim
            if col in addr_cols:
                octets += range(len(seps), len(seps) + 4)
                seps += [".", ".", ".", last]
            else:
                ints.append(len(seps))
                seps.append(last)
        self.ncol, self.addr_cols, self.delim = ncol, addr_cols, delim
        self.pattern = "".join(seps).encode()
        self.m = len(seps)
        self.octets, self.ints = np.array(octets, dtype=np.int64), np.array(ints, dtype=np.int64)
        self.dbyte = ord(delim)
        self.table = bytes.maketrans(b".\n" + delim.encode(), b",,,")

    def with_delim(self, delim):
        """The same shape with another delimiter (None unless one ASCII byte that is not a
        digit, '.' or a newline)."""
        if len(delim) != 1 or ord(delim) > 127 or delim in "0123456789.\n\r":
            return None
        return _PlainRows(self.ncol, self.addr_cols, delim)

    def is_sep(self, raw):
        """'.', newline, the delimiter, and any other byte under '0' (which breaks the shape)."""
        low = raw < 48
        return low if self.dbyte < 48 else low | (raw == self.dbyte)

    def is_odd(self, raw):
        """Bytes above '9' other than the delimiter: such a row is read the usual way."""
        high = raw > 57
        return high if self.dbyte < 58 else high & (raw != self.dbyte)


class _CsvBase(object):
    """Reads blocks of lines or chunks of csv rows; subclasses ``convert`` columns and ``finish``."""

    def __init__(self, path, names, st):
        self.path, self.names, self.st = path, names, st
        self.ncol = len(names)
        self.delim = ","
        self.parts = []
        self.ref_ts = None           # median time of the first chunk: what "far away" is measured from
        self.plain = None            # _PlainRows: the dialect's rows may be all numbers (see _plain_block)
        self.block_bytes = CSV_BLOCK_BYTES
        self.defer_times = False     # convert leaves check_times to its caller

    def check_times(self, ts, column):
        """_CellError at the first implausible time of a chunk (see TS_MIN, MAX_SPAN)."""
        if not len(ts):
            return
        if self.ref_ts is None:
            ok = ts[(ts >= TS_MIN) & (ts < TS_MAX)]
            self.ref_ts = int(np.median(ok)) if len(ok) else None
        bad = (ts < TS_MIN) | (ts >= TS_MAX)
        if self.ref_ts is not None:
            bad |= np.abs(ts - self.ref_ts) > MAX_SPAN
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise _CellError(i, column, _time_error(int(ts[i]), self.ref_ts or 0))

    def chunk(self, chunk, truncated_last):
        """Convert one chunk of csv rows (blank rows are skipped) and keep the result."""
        index = self.check_rows(chunk, truncated_last)
        rows = chunk if index is None else [chunk[i] for i in index]
        if not rows:
            return
        try:
            self.parts.append(self.convert(list(zip(*rows))))
        except _CellError as e:
            if index is not None:
                e.index = index[e.index]
            raise
        self.st["rows"] += len(rows)

    def fast_block(self, block, first_line):
        """Convert a block of whole lines (bytes; only the file's last line may lack its newline)
        without the csv module, if it has no quotes (and no bare CR).  False: let the csv
        module read the rest of the file."""
        if b'"' in block:
            return False
        if b"\r" in block:
            block = block.replace(b"\r\n", b"\n")
            if b"\r" in block:
                return False
        if self.plain is not None and self._plain_block(block, first_line):
            return True
        try:
            text = block.decode("utf-8")
        except UnicodeDecodeError as e:
            line = first_line + block.count(b"\n", 0, e.start)
            raise NetstackError("%s line %d: field 'row': not UTF-8 text" % (self.path, line),
                                field="%s:%d:row" % (self.path, line))
        raw = np.frombuffer(block, dtype=np.uint8)
        ends = np.flatnonzero(raw == 10)
        seps = np.flatnonzero(raw == ord(self.delim))
        keep = None
        if block[-1:] == b"\n" and (np.diff(np.searchsorted(seps, ends), prepend=0) == self.ncol - 1).all():
            body = text[:-1]                     # the usual case: every line complete and plain
        else:
            lines = text.split("\n")
            newline_at_end = not lines[-1]
            if newline_at_end:
                lines.pop()
            keep = []
            for i, row in enumerate(lines):
                if not row:
                    continue                     # blank lines are skipped
                have = row.count(self.delim) + 1
                if have != self.ncol:
                    e = self.count_error(have, i == len(lines) - 1 and not newline_at_end)
                    line = first_line + i
                    raise _line_error(self.path, line, e.column, e.msg)
                keep.append(i)
            if not keep:
                return True
            body = "\n".join([lines[i] for i in keep])
        cells = body.replace("\n", self.delim).split(self.delim)
        cols = [cells[i::self.ncol] for i in range(self.ncol)]
        del cells
        try:
            self.parts.append(self.convert(cols))
        except _CellError as e:
            line = first_line + (e.index if keep is None else keep[e.index])
            raise _line_error(self.path, line, e.column, e.msg)
        self.st["rows"] += len(cols[0])
        return True

    def handover(self, scratch):
        """What a child that read part of the file sends back: its columns, written one after
        the other to ``scratch`` (each at a 64-byte boundary), and as JSON their places there,
        the categories its codes stand for and its row count."""
        layout, at = [], 0
        for k in (sorted(self.parts[0]) if self.parts else ()):
            at = -(-at // 64) * 64
            scratch.seek(at)
            count = 0
            for p in self.parts:
                data = memoryview(np.ascontiguousarray(p[k])).cast("B")
                while data:
                    data = data[scratch.write(data):]
                count += len(p[k])
            layout.append((k, self.parts[0][k].dtype.str, at, count))
            at += count * self.parts[0][k].dtype.itemsize
        return {"layout": layout, "bytes": at, "rows": self.st["rows"],
                "cats": dict((name, coder.cats) for name, coder in self.coders.items())}

    def take_over(self, theirs, scratch):
        """Append a child's ``handover()``, mapped from ``scratch`` (read-only; the final
        concatenation copies it), its codes mapped to this parser's coders."""
        if theirs["layout"] and theirs["bytes"]:
            mm = mmap.mmap(scratch.fileno(), theirs["bytes"], prot=mmap.PROT_READ)
            cols = dict((k, np.frombuffer(mm, dtype=np.dtype(dt), count=count, offset=at))
                        for k, dt, at, count in theirs["layout"])
            for name, coder in self.coders.items():
                remap = np.array([coder.code_of(_json_key(c)) for c in theirs["cats"][name]] or [0], dtype=np.int32)
                for column in self.code_columns[name]:
                    cols[column] = remap[cols[column]]
            self.parts.append(cols)
        self.st["rows"] += theirs["rows"]

    def count_error(self, have, truncated_last):
        """The error of a row with ``have`` fields."""
        if have < self.ncol:
            missing = self.names[have:]
            if truncated_last:
                return _CellError(0, missing[0], "truncated last line (no newline at the end of the file): %d of %d fields, "
                                  "missing %s" % (have, self.ncol, ", ".join(missing)))
            return _CellError(0, missing[0], "row has %d fields, the header has %d (missing %s)" % (have, self.ncol, ", ".join(missing)))
        return _CellError(0, "columns", "row has %d fields, the header has %d" % (have, self.ncol))

    def check_rows(self, chunk, truncated_last):
        """None if every row has all fields, else the indexes of the non-blank rows;
        _CellError on a row with the wrong number of fields."""
        lens = set(map(len, chunk))
        if lens == {self.ncol}:
            return None
        for i, row in enumerate(chunk):
            if len(row) != self.ncol and row:
                e = self.count_error(len(row), truncated_last and i == len(chunk) - 1)
                e.index = i
                raise e
        return [i for i, row in enumerate(chunk) if row]


_WORD_PAD = b"\0" * 64                 # words read past a block's last cell
if np is not None:                      # (ansible-test's import test runs without numpy)
    _WORD_MASKS = np.array([(1 << (8 * k)) - 1 for k in range(8)] + [(1 << 64) - 1], dtype=np.uint64)  # low k bytes
    _WORD_MIX = np.array([0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9], dtype=np.uint64)
    _ASCII_ZEROS = np.uint64(0x3030303030303030)
    _HIGH_NIBBLES = np.uint64(0xF0F0F0F0F0F0F0F0)
    _PLUS_SIX = np.uint64(0x0606060606060606)
    _EIGHT_DIGITS = np.array([1, 10 ** 8, 10 ** 16], dtype=np.uint64)       # the place of a word's eight digits
    _KEEP_HIGH = np.array([((1 << 64) - 1) ^ ((1 << (8 * (8 - k))) - 1) for k in range(8)] + [(1 << 64) - 1],
                          dtype=np.uint64)                                  # the top k bytes of a word


class _TextWords(object):
    """One text column of the native CSV (link, direction, prefix, port class) read by its
    bytes: a cell of up to 8 * ``words`` bytes is its length and that many 8-byte words,
    which a table of the cells met so far turns into the coder's codes (one binary search on
    a hash of them per cell, then an exact comparison of them all).  A cell not in the table
    goes through the coder once, which checks and canonicalises it as the usual way does."""

    def __init__(self, coder, words):
        self.coder, self.nwords = coder, words
        self.hashes = np.zeros(0, dtype=np.uint64)
        self.parts = np.zeros((1 + words, 0), dtype=np.uint64)
        self.codes = np.zeros(0, dtype=np.int32)

    def codes_of(self, block, words, starts, lens):
        """The codes of the cells at ``starts`` (``lens`` bytes each) of ``block``, read
        through ``words`` (its 8-byte words at every offset); None where a cell is longer
        than 8 * nwords bytes, empty, not UTF-8, refused by the coder, or two cells collide."""
        if not len(lens) or lens.min() < 1 or lens.max() > 8 * self.nwords:
            return None
        # words past the longest cell are zero in every cell here: equal lengths and equal
        # words up to there are equal cells, and a zero word adds nothing to the hash
        parts = [lens.astype(np.uint64)]
        for k in range(-(-int(lens.max()) // 8)):
            parts.append(words[starts + 8 * k] & _WORD_MASKS[np.minimum(np.maximum(lens - 8 * k, 0), 8)])
        h = parts[0].copy()
        for k, part in enumerate(parts[1:]):
            h += part * _WORD_MIX[k % len(_WORD_MIX)] * np.uint64(2 * k + 1)
        for _attempt in range(2):
            if len(self.hashes):
                at = np.minimum(np.searchsorted(self.hashes, h), len(self.hashes) - 1)
                ok = self.hashes[at] == h
                for k, part in enumerate(parts):
                    ok &= self.parts[k][at] == part
                if ok.all():
                    return self.codes[at]
                miss = np.flatnonzero(~ok)
            else:
                miss = np.arange(len(h))
            if not self._learn(block, starts, lens, h, miss):
                return None
        return None

    def _learn(self, block, starts, lens, h, miss):
        uniq, first = np.unique(h[miss], return_index=True)
        if np.isin(uniq, self.hashes).any():
            return False                    # a hash already taken by other bytes
        rows = miss[first].tolist()
        try:
            cells = [block[a:a + n].decode("utf-8") for a, n in zip(starts[rows].tolist(), lens[rows].tolist())]
            codes = self.coder.encode(cells)
        except (UnicodeDecodeError, _BadValues):
            return False                    # the usual way names the line
        at = np.searchsorted(self.hashes, uniq)
        self.hashes = np.insert(self.hashes, at, uniq)
        self.codes = np.insert(self.codes, at, codes)
        new = np.zeros((1 + self.nwords, len(rows)), dtype=np.uint64)
        new[0] = lens[rows]
        for j, (a, n) in enumerate(zip(starts[rows].tolist(), lens[rows].tolist())):
            new[1:, j] = np.frombuffer(block[a:a + n].ljust(8 * self.nwords, b"\0"), dtype="<u8")
        self.parts = np.insert(self.parts, at, new, axis=1)
        return True


def _digit_words(words, ends, lens):
    """The unsigned integers of cells of up to 18 digits ending at ``ends`` (``lens`` bytes
    each), read eight digits to a word of ``words`` (the little-endian 8-byte word at every
    offset): the bytes before a cell in its first word are set to '0', every byte is checked
    to be a digit, and the eight digits become one number in three multiplications.  None
    where a cell is empty, longer than 18 bytes or has a byte that is not a digit."""
    if not len(lens) or lens.min() < 1 or lens.max() > 18:
        return None
    value = np.zeros(len(lens), dtype=np.uint64)
    wrong = np.zeros(len(lens), dtype=np.uint64)            # a high nibble not 3 (before or after +6)
    for k in range(-(-int(lens.max()) // 8)):
        keep = _KEEP_HIGH[np.minimum(np.maximum(lens - 8 * k, 0), 8)]
        w = (words[ends - 8 * (k + 1)] & keep) | (_ASCII_ZEROS & ~keep)
        wrong |= ((w & _HIGH_NIBBLES) ^ _ASCII_ZEROS) | (((w + _PLUS_SIX) & _HIGH_NIBBLES) ^ _ASCII_ZEROS)
        w = w - _ASCII_ZEROS                               # one digit per byte, the first lowest
        w = ((w * np.uint64(10)) + (w >> np.uint64(8))) & np.uint64(0x00FF00FF00FF00FF)
        w = ((w * np.uint64(100)) + (w >> np.uint64(16))) & np.uint64(0x0000FFFF0000FFFF)
        w = ((w * np.uint64(10000)) + (w >> np.uint64(32))) & np.uint64(0xFFFFFFFF)
        value += w * _EIGHT_DIGITS[k]
    if wrong.any():
        return None
    return value.astype(np.int64)


class _NativeWords(object):
    """How _NativeCsv._words_block reads a native row: its text columns with the most 8-byte
    words a cell of each may take (an IPv6 prefix with its length fits in 48 bytes), and its
    number columns with their highest value."""

    TEXT = (("link", 4), ("direction", 1), ("prefix", 6), ("port_class", 2))
    NUMBERS = (("ts", None), ("proto", 255), ("dscp", 63), ("bytes", None), ("packets", None))

    def __init__(self, delim):
        self.dbyte = ord(delim)
        self.cols = dict((name, i) for i, name in enumerate(trafficdata.HEADER))

    @staticmethod
    def usable(delim):
        return len(delim) == 1 and ord(delim) < 128 and delim not in "0123456789\n\r\"\0"


class _NativeCsv(_CsvBase):

    def __init__(self, path, st):
        _CsvBase.__init__(self, path, list(trafficdata.HEADER), st)
        self.coders = {
            "link": _Coder(_canon_link),
            "direction": _Coder(_canon_in(trafficdata.DIRECTIONS, "a direction")),
            "prefix": _Coder(_canon_prefix),
            "port_class": _Coder(_canon_in(trafficdata.CLASS_NAMES, "a port class")),
        }
        self.code_columns = dict((name, (name,)) for name in self.coders)
        self.words = None                  # _NativeWords of this delimiter; False: not this file
        self.texts = dict((name, _TextWords(self.coders[name], words)) for name, words in _NativeWords.TEXT)
        self.word_misses = 0
        self.block_bytes = 4 * CSV_BLOCK_BYTES

    def fast_block(self, block, first_line):
        if self.words is None:
            self.words = _NativeWords(self.delim) if _NativeWords.usable(self.delim) else False
        if self.words and self._words_block(block, first_line):
            return True
        return _CsvBase.fast_block(self, block, first_line)

    def _words_miss(self):
        """A block the words way could not read: after three in a row, stop trying (the
        blocks keep their size: see _GenericCsv._plain_miss)."""
        self.word_misses += 1
        if self.word_misses >= 3:
            self.words = False
        return False

    def _words_block(self, block, first_line):
        """Read a block of native rows without splitting it into strings.  The separators are
        found at once, then every cell is read through 8-byte words of the block: the text
        cells (link, direction, prefix, port class) are coded through a table of the cells
        met so far (_TextWords), the number cells are parsed eight digits to a word
        (_digit_words).  False, for the usual way to read the block (and name the line of an
        error), on anything else: quotes, a CR, a blank line, an empty cell, a byte that is
        not a digit in a number, a number of more than 18 digits or out of its column's
        range, a text cell too long for its words or one the coder refuses."""
        plan = self.words
        if b'"' in block or b"\r" in block or block[-1:] != b"\n":
            return False
        raw = np.frombuffer(block, dtype=np.uint8)
        seps = np.flatnonzero((raw == plan.dbyte) | (raw == 10))
        ncol = len(trafficdata.HEADER)
        if len(seps) % ncol:
            return self._words_miss()
        n = len(seps) // ncol
        if (raw[seps[ncol - 1::ncol]] != 10).any() or np.count_nonzero(raw[seps] == 10) != n:
            return self._words_miss()
        ends = seps.reshape(n, ncol).T.copy()                   # a row per column
        starts = np.concatenate(([0], seps[:-1] + 1)).reshape(n, ncol).T.copy()
        lens = ends - starts
        # the block's 8-byte words at every offset, from 24 bytes before it to 64 after it
        words = np.ndarray((len(block) + 24 + len(_WORD_PAD) - 7,), dtype="<u8",
                           buffer=_WORD_PAD[:24] + block + _WORD_PAD, strides=(1,))
        out = {}
        for name, _words in plan.TEXT:
            col = plan.cols[name]
            codes = self.texts[name].codes_of(block, words[24:], starts[col], lens[col])
            if codes is None:
                return self._words_miss()
            out[name] = codes
        for name, hi in plan.NUMBERS:
            col = plan.cols[name]
            values = _digit_words(words, ends[col] + 24, lens[col])
            if values is None or (hi is not None and (values > hi).any()):
                return self._words_miss()
            out[name] = values
        self.word_misses = 0
        try:
            self.check_times(out["ts"], "ts")
        except _CellError as e:         # every line of the block is a row: its index is its line
            raise _line_error(self.path, first_line + e.index, e.column, e.msg)
        self.parts.append(out)
        self.st["rows"] += n
        return True

    def convert(self, cols):
        h = trafficdata.HEADER
        out = {}
        for name, lo, hi, what in (("ts", 0, None, "a UNIX time in whole seconds (a non-negative integer)"),
                                   ("proto", 0, 255, "an IP protocol number 0-255"),
                                   ("dscp", 0, 63, "a DSCP value 0-63"),
                                   ("bytes", 0, None, "an integer byte count"),
                                   ("packets", 0, None, "an integer packet count")):
            values = cols[h.index(name)]
            try:
                arr = _uint_column(values, name, what)
            except _CellError as e:
                if name == "bytes":
                    e.msg = "%r is not %s" % (values[e.index], _byte_count_what(values[e.index]))
                raise
            if hi is not None:
                _check_range(arr, values, name, lo, hi)
            out[name] = arr
        for name, coder in self.coders.items():
            values = cols[h.index(name)]
            try:
                out[name] = coder.encode(values)
            except _BadValues as e:
                i, reason = _first_bad(values, e.bad)
                raise _CellError(i, name, "%r %s" % (values[i], reason))
        self.check_times(out["ts"], "ts")       # last: a malformed cell is named first
        return out

    def finish(self):
        if not self.parts:
            return trafficdata.Records.empty()
        ints = dict((k, np.concatenate([p[k] for p in self.parts])) for k in trafficdata.INT_COLUMNS)
        codes, cats = {}, {}
        for k, coder in self.coders.items():
            cats[k], codes[k] = coder.sorted(np.concatenate([p[k] for p in self.parts]))
        return _compact(trafficdata.Records(ints, codes, cats))


class _GenericCsv(_CsvBase):

    def __init__(self, path, names, cols, scale, time_col, link, loc, st):
        _CsvBase.__init__(self, path, names, st)
        self.cols, self.scale, self.time_col, self.loc = cols, scale, time_col, loc
        self.default_link = link if link else os.path.basename(path)
        self.links = _Coder()
        self.addrs = _Coder(_addr_key)
        self.coders = {"link": self.links, "addr": self.addrs}
        self.code_columns = {"link": ("link",), "addr": ("src", "dst")}
        self.caches = dict((k, {}) for k in ("ts", "proto", "sport", "dport", "dscp", "tos"))
        if scale == 1 and "link" not in cols:
            self.plain = _PlainRows(len(names), (cols["src"], cols["dst"]), self.delim)
            self.block_bytes = 4 * CSV_BLOCK_BYTES      # fewer calls: each plain block's cost is mostly per call
        self.ranges = [(k, hi) for k, hi, _conv in _SMALL_INTS if k in cols]
        self.plain_misses = 0

    def convert(self, cols):
        c = self.cols
        n = len(cols[0])
        name = self.names
        out = {}
        tvals = cols[c[self.time_col]]
        try:
            out["ts"] = _uint_column(tvals, name[c[self.time_col]], "")
        except _CellError:
            out["ts"] = _mapped_column(tvals, name[c[self.time_col]], _parse_time, self.caches["ts"])
        out["bytes"] = _bytes_column(cols[c["bytes"]], name[c["bytes"]], self.scale)
        if "packets" in c:
            out["packets"] = _uint_column(cols[c["packets"]], name[c["packets"]], "an integer packet count")
        for key, hi, conv in _SMALL_INTS:
            if key in c:
                out[key] = _small_int_column(cols[c[key]], name[c[key]], 0, hi, conv, self.caches[key])
        for side in ("src", "dst"):
            values = cols[c[side]]
            keys = _ipv4_keys(values)
            if keys is not None:            # the usual column of dotted quads, without a dict lookup per cell
                out[side] = self.addrs.encode_keys(keys)
                continue
            try:
                out[side] = self.addrs.encode(values)
            except _BadValues as e:
                i, reason = _first_bad(values, e.bad)
                raise _CellError(i, name[c[side]], "%r is %s" % (values[i], reason))
        if "link" in c:
            values = [v if v.strip() else self.default_link for v in cols[c["link"]]]
            out["link"] = self.links.encode(values)
        self._fill_missing(out, n)
        if not self.defer_times:
            self.check_times(out["ts"], name[c[self.time_col]])     # last: a malformed cell is named first
        return out

    def _fill_missing(self, out, n):
        """The columns the file does not have, and the direction flag (not in CSV); the small
        ones narrowed (_NARROW)."""
        c = self.cols
        if "packets" not in c:
            out["packets"] = np.ones(n, dtype=np.int64)
        for key, _hi, _conv in _SMALL_INTS:
            if key not in c:
                out[key] = np.zeros(n, dtype=np.int64)
        if "dscp" not in c:
            out["dscp"] = out["tos"] >> 2
        del out["tos"]
        for key, dtype in _NARROW:       # every value is in its column's range by now
            out[key] = out[key].astype(dtype)
        if "link" not in c:
            link = self.links.index[self.default_link] if self.default_link in self.links.index else self.links.add(self.default_link)
            out["link"] = np.full(n, link, dtype=np.int32)
        out["dirflag"] = np.full(n, -1, dtype=np.int8)

    def _plain_block(self, block, first_line):
        """Read a block of plain rows at once: where every cell is an unsigned integer or (src,
        dst) a dotted quad, the block is one run of numbers, which np.fromstring reads in one
        call.  Rows with a byte above '9' (IPv6 addresses, protocol names) are cut out first
        and read the usual way, then put back in file order.  False, for the usual way to
        read the whole block (and name the line of an error): anything else in the block,
        such as an empty cell, a leading zero, a value out of range, a blank line."""
        plan = self.plain
        if plan.delim != self.delim:
            plan = self.plain = plan.with_delim(self.delim)
            if plan is None:
                return False
        raw = np.frombuffer(block, dtype=np.uint8)
        if not len(raw) or raw[-1] != 10:
            return False
        odd = np.flatnonzero(plan.is_odd(raw))
        others = None
        if len(odd):
            ends = np.flatnonzero(raw == 10)
            others = np.unique(np.searchsorted(ends, odd))
            if len(others) * 2 > len(ends):
                return self._plain_miss()
            cut_from = np.where(others > 0, ends[others - 1] + 1, 0).tolist()
            cut_to = (ends[others] + 1).tolist()
            keep, cut, at = [], [], 0
            for a, b in zip(cut_from, cut_to):
                keep.append(block[at:a])
                cut.append(block[a:b])
                at = b
            keep.append(block[at:])
            block, others_block = b"".join(keep), b"".join(cut)
            raw = np.frombuffer(block, dtype=np.uint8)
        nums = self._plain_numbers(block, raw, plan)
        if nums is None:
            return self._plain_miss()
        self.plain_misses = 0
        out = self._plain_columns(nums, plan)
        if others is not None:
            before = len(self.parts)
            self.plain, self.defer_times = None, True
            try:
                done = _CsvBase.fast_block(self, others_block, first_line)
            except NetstackError:
                done = False        # read the block again the usual way, which names the line
            finally:
                self.plain, self.defer_times = plan, False
            if not done or len(self.parts) != before + 1:
                return False
            theirs = self.parts.pop()
            mine = np.ones(len(nums) + len(others), dtype=bool)
            mine[others] = False
            for k in out:
                col = np.empty(len(mine), dtype=out[k].dtype)
                col[mine] = out[k]
                col[others] = theirs[k]
                out[k] = col
        try:
            self.check_times(out["ts"], self.names[self.cols[self.time_col]])
        except _CellError as e:       # every line of the block is a row: its index is its line
            line = first_line + e.index
            raise _line_error(self.path, line, e.column, e.msg)
        self.parts.append(out)
        self.st["rows"] += len(nums)
        return True

    def _plain_miss(self):
        """A block the plain way could not read: after three in a row, stop trying.  The
        blocks keep their size: within a block a malformed cell is named before a bad time,
        so the line an error names must not depend on which way the blocks before went."""
        self.plain_misses += 1
        if self.plain_misses >= 3:
            self.plain = None
        return False

    def _plain_numbers(self, block, raw, plan):
        """The numbers of a block of plain rows, one row of ``plan.m`` each; None unless every
        line has the plain shape, with no empty cell, no leading zero (inet_pton refuses one
        in an address; a count with one goes the usual way), no octet over 255, no value
        saturated (too big for int64) or out of its column's range."""
        if not len(raw):
            return None
        skeleton = block.translate(None, b"0123456789")      # the separators, in order
        rows = len(skeleton) // plan.m
        if skeleton != plan.pattern * rows:
            return None
        sep = plan.is_sep(raw)
        if sep[0] or (sep[1:] & sep[:-1]).any() or (raw[0] == 48 and not sep[1]) or \
                ((raw[1:-1] == 48) & sep[:-2] & ~sep[2:]).any():
            return None
        nums = np.fromstring(block[:-1].translate(plan.table), dtype=np.int64, sep=",")
        if len(nums) != rows * plan.m:
            return None
        nums = nums.reshape(rows, plan.m)
        if (nums[:, plan.octets] > 255).any() or (nums[:, plan.ints] == _INT64_MAX).any():
            return None
        for key, hi in self.ranges:
            if (nums[:, plan.first[self.cols[key]]] > hi).any():
                return None
        return nums

    def _plain_columns(self, nums, plan):
        """convert()'s columns from the numbers of plain rows."""
        c = self.cols
        out = dict((key, np.ascontiguousarray(nums[:, plan.first[c[key]]]))
                   for key in ("bytes", "packets") + tuple(k for k, _hi, _conv in _SMALL_INTS) if key in c)
        out["ts"] = np.ascontiguousarray(nums[:, plan.first[c[self.time_col]]])
        keys = [(nums[:, o] << 24) | (nums[:, o + 1] << 16) | (nums[:, o + 2] << 8) | nums[:, o + 3]
                for o in (plan.first[c["src"]], plan.first[c["dst"]])]
        out["src"], out["dst"] = np.split(self.addrs.encode_keys(np.concatenate(keys)), 2)
        self._fill_missing(out, len(nums))
        return out

    def finish(self):
        keys = _FLOW_COLUMNS
        if self.parts:
            cols = dict((k, np.concatenate([p[k] for p in self.parts])) for k in keys)
        else:
            cols = dict((k, np.zeros(0, dtype=np.int64)) for k in keys)
        return self.loc.assemble(cols, self.addrs.cats, self.links)


# ----------------------------------------------------------------------------- NetFlow / IPFIX

class _BinError(Exception):
    def __init__(self, offset, field, msg):
        Exception.__init__(self, msg)
        self.offset, self.field, self.msg = offset, field, msg


_V5_HEADER = struct.Struct("!HHIIIIBBH")
_V5_RECORD = struct.Struct("!IIIHHIIIIHHBBBBHHBBH")
_V9_HEADER = struct.Struct("!HHIIII")
_IPFIX_HEADER = struct.Struct("!HHIII")
_U16 = struct.Struct("!H")
_U16X2 = struct.Struct("!HH")
_U32 = struct.Struct("!I")

# decoded fields, in the order of a compiled template's output tuple (+ defaults)
_SEM = ("bytes", "packets", "proto", "tos", "sport", "dport", "src4", "dst4", "src6", "dst6", "in_if", "out_if",
        "direction", "last_up", "first_up", "end_s", "end_ms", "start_s", "start_ms")
_SEM_DEFAULT = (0, 1, 0, 0, 0, 0, -1, -1, -1, -1, 0, None, -1, None, None, None, None, None, None)
_SEM_POS = dict((s, i) for i, s in enumerate(_SEM))
_COMMON_IE = {1: "bytes", 2: "packets", 4: "proto", 5: "tos", 7: "sport", 8: "src4", 10: "in_if", 11: "dport",
              12: "dst4", 14: "out_if", 27: "src6", 28: "dst6", 61: "direction"}
_V9_IE = dict(list(_COMMON_IE.items()) + [(21, "last_up"), (22, "first_up")])
_IPFIX_IE = dict(list(_COMMON_IE.items()) + [(150, "start_s"), (151, "end_s"), (152, "start_ms"), (153, "end_ms")])
_ADDR_LEN = {"src4": 4, "dst4": 4, "src6": 16, "dst6": 16}
_INT_CODE = {1: "B", 2: "H", 4: "I", 8: "Q"}
VARLEN = 65535


class _Template(object):
    """A compiled (v9 or IPFIX) data template: segments of fixed fields between variable-length ones."""

    def __init__(self, tid, fields, ie_map):
        self.tid = tid
        self.fields = fields
        seg_codes, self.segments = [], []   # segments: (struct, [(tuple index, converter)]), None = varlen field
        self.positions = {}
        slots = []
        out_index = 0
        self.min_size = 0
        for ie, length in fields:
            if length == VARLEN:
                self.segments.append(struct.Struct("!" + "".join(seg_codes)))
                self.segments.append(None)
                seg_codes = []
                self.min_size += 1
                continue
            self.min_size += length
            sem = ie_map.get(ie)
            if sem is not None and sem not in self.positions:
                want = _ADDR_LEN.get(sem)
                if want is not None and length != want:
                    raise ValueError("field %d (%s) has length %d, expected %d" % (ie, sem, length, want))
                if sem in ("src6", "dst6"):
                    seg_codes.append("16s")
                    slots.append((out_index, _v6_key))
                elif length in _INT_CODE:
                    seg_codes.append(_INT_CODE[length])
                elif 0 < length <= 16:
                    seg_codes.append("%ds" % length)
                    slots.append((out_index, _be_int))
                else:
                    seg_codes.append("%dx" % length)
                    continue
                self.positions[sem] = out_index
                out_index += 1
            elif length:
                seg_codes.append("%dx" % length)
        self.segments.append(struct.Struct("!" + "".join(seg_codes)))
        self.converters = slots
        self.fixed = len(self.segments) == 1
        self.size = self.segments[0].size if self.fixed else None
        # tuple index of each _SEM field in (unpacked values + defaults)
        self.take = [self.positions.get(s, out_index + i) for i, s in enumerate(_SEM)]


def _v6_key(b):
    return int.from_bytes(b, "big") | _Localizer.V6


def _be_int(b):
    return int.from_bytes(b, "big")


_FLOW_COLUMNS = ("ts", "link", "src", "dst", "dirflag", "proto", "sport", "dport", "dscp", "bytes", "packets")


class _FlowSink(object):
    """Decoded flows, column-wise in compact arrays."""

    def __init__(self):
        self.cols = dict((k, array.array("q")) for k in _FLOW_COLUMNS)
        self.links = _Coder()
        self.addrs = _Coder()
        self.addr = self.addrs.code_of       # address key -> its index (in the order first seen)

    def link_code(self, exporter, ifindex):
        key = (exporter, ifindex)
        code = self.links.index.get(key)
        if code is None:
            code = self.links.add(key, "%s:%d" % (exporter, ifindex))
        return code

    def records(self, loc):
        cols = dict((k, np.frombuffer(v, dtype=np.int64).copy() if len(v) else np.zeros(0, dtype=np.int64))
                    for k, v in self.cols.items())
        return loc.assemble(cols, self.addrs.cats, self.links)


class _Exporter(object):
    """Parse state over one file: templates per (exporter, version, domain), counters."""

    def __init__(self, st):
        self.templates = {}
        self.st = st
        self.sink = _FlowSink()
        for k in ("packets", "flows", "templates", "skipped_no_template", "skipped_no_template_bytes", "options_sets"):
            st.setdefault(k, 0)

    # -- one export packet at buf[off:end]; returns its end offset
    def packet(self, buf, off, end, exporter, stream):
        if end - off < 4:
            raise _BinError(off, "version", "%d bytes left, too short for an export header" % (end - off))
        version = _U16.unpack_from(buf, off)[0]
        if version == 5:
            return self.v5(buf, off, end, exporter)
        if version == 9:
            return self.v9(buf, off, end, exporter, stream)
        if version == 10:
            return self.ipfix(buf, off, end, exporter)
        raise _BinError(off, "version", "unknown export version %d (expected 5, 9 or 10 for NetFlow v5, v9, IPFIX)" % version)

    def v5(self, buf, off, end, exporter):
        if end - off < _V5_HEADER.size:
            raise _BinError(off, "header", "v5 header needs %d bytes, %d present (truncated)" % (_V5_HEADER.size, end - off))
        _v, count, uptime, unix_secs, _ns, _seq, _et, _ei, _si = _V5_HEADER.unpack_from(buf, off)
        present = (end - off - _V5_HEADER.size) // _V5_RECORD.size
        if present < count:
            raise _BinError(off, "count", "header says %d records, %d present (truncated)" % (count, present))
        sink, cols = self.sink, self.sink.cols
        p = off + _V5_HEADER.size
        stop = p + count * _V5_RECORD.size
        for rec in _V5_RECORD.iter_unpack(memoryview(buf)[p:stop]):
            src, dst, _nh, in_if, _out, pkts, octets, _first, last, sport, dport, _p1, _fl, prot, tos = rec[:15]
            cols["ts"].append(_uptime_ts(unix_secs, uptime, last))
            cols["link"].append(sink.link_code(exporter, in_if))
            cols["src"].append(sink.addr(src))
            cols["dst"].append(sink.addr(dst))
            cols["dirflag"].append(-1)
            cols["proto"].append(prot)
            cols["sport"].append(sport)
            cols["dport"].append(dport)
            cols["dscp"].append(tos >> 2)
            cols["bytes"].append(octets)
            cols["packets"].append(pkts)
        self.st["packets"] += 1
        self.st["flows"] += count
        return stop

    def v9(self, buf, off, end, exporter, stream):
        if end - off < _V9_HEADER.size:
            raise _BinError(off, "header", "v9 header needs %d bytes, %d present (truncated)" % (_V9_HEADER.size, end - off))
        _v, _count, uptime, unix_secs, _seq, source_id = _V9_HEADER.unpack_from(buf, off)
        hdr = ("v9", uptime, unix_secs)
        scope = (exporter, 9, source_id)
        p = off + _V9_HEADER.size
        while end - p >= 4:
            fsid, length = _U16X2.unpack_from(buf, p)
            if fsid == 0 and length == 0:
                break              # zero padding at the end
            if 1 < fsid < 256:
                if stream:
                    break          # the next export packet's header (flowset ids 2-255 are reserved)
                raise _BinError(p, "flowset_id", "reserved flowset id %d" % fsid)
            if length < 4:
                raise _BinError(p, "length", "flowset length %d is less than its 4-byte header" % length)
            if p + length > end:
                raise _BinError(p, "length", "flowset says %d bytes, %d present (truncated)" % (length, end - p))
            if fsid == 0:
                self.v9_templates(buf, p + 4, p + length, scope)
            elif fsid == 1:
                self.options_template(buf, p + 4, p + length, scope, 9)
            else:
                self.data(buf, p, p + length, scope, fsid, hdr, exporter)
            p += length
        if not stream:
            p = end
        self.st["packets"] += 1
        return p

    def ipfix(self, buf, off, end, exporter):
        if end - off < _IPFIX_HEADER.size:
            raise _BinError(off, "header", "IPFIX header needs %d bytes, %d present (truncated)" % (_IPFIX_HEADER.size, end - off))
        _v, length, export_time, _seq, domain = _IPFIX_HEADER.unpack_from(buf, off)
        if length < _IPFIX_HEADER.size:
            raise _BinError(off, "length", "message length %d is less than the 16-byte header" % length)
        if off + length > end:
            raise _BinError(off, "length", "message says %d bytes, %d present (truncated)" % (length, end - off))
        end = off + length
        hdr = ("ipfix", 0, export_time)
        scope = (exporter, 10, domain)
        p = off + _IPFIX_HEADER.size
        while p < end:
            if end - p < 4:
                raise _BinError(p, "length", "%d bytes left in the message, too short for a set header" % (end - p))
            sid, slen = _U16X2.unpack_from(buf, p)
            if slen < 4:
                raise _BinError(p, "length", "set length %d is less than its 4-byte header" % slen)
            if p + slen > end:
                raise _BinError(p, "length", "set says %d bytes, %d present in the message (truncated)" % (slen, end - p))
            if sid == 2:
                self.ipfix_templates(buf, p + 4, p + slen, scope)
            elif sid == 3:
                self.options_template(buf, p + 4, p + slen, scope, 10)
            elif sid >= 256:
                self.data(buf, p, p + slen, scope, sid, hdr, exporter)
            else:
                raise _BinError(p, "set_id", "reserved set id %d" % sid)
            p += slen
        self.st["packets"] += 1
        return end

    def v9_templates(self, buf, p, end, scope):
        while end - p >= 4:
            tid, nfields = _U16X2.unpack_from(buf, p)
            if tid == 0 and nfields == 0:
                break                              # padding
            if p + 4 + 4 * nfields > end:
                raise _BinError(p, "field_count", "template %d says %d fields, %d present (truncated)"
                                % (tid, nfields, (end - p - 4) // 4))
            fields = [_U16X2.unpack_from(buf, p + 4 + 4 * i) for i in range(nfields)]
            self.add_template(scope, tid, fields, _V9_IE, p)
            p += 4 + 4 * nfields

    def ipfix_templates(self, buf, p, end, scope):
        while end - p >= 4:
            tid, nfields = _U16X2.unpack_from(buf, p)
            q = p + 4
            if nfields == 0:                       # withdrawal (tid 2: all templates)
                if tid == 2:
                    for k in [k for k in self.templates if k[0] == scope]:
                        del self.templates[k]
                else:
                    self.templates.pop((scope, tid), None)
                p = q
                continue
            fields = []
            for _i in range(nfields):
                if end - q < 4:
                    raise _BinError(p, "field_count", "template %d says %d fields, %d present (truncated)"
                                    % (tid, nfields, len(fields)))
                ie, length = _U16X2.unpack_from(buf, q)
                q += 4
                if ie & 0x8000:                    # enterprise-specific: skip by length
                    if end - q < 4:
                        raise _BinError(p, "field_count", "template %d: enterprise number cut off (truncated)" % tid)
                    q += 4
                    ie = -1
                fields.append((ie, length))
            self.add_template(scope, tid, fields, _IPFIX_IE, p)
            p = q

    def add_template(self, scope, tid, fields, ie_map, offset):
        if tid < 256:
            raise _BinError(offset, "template_id", "template id %d (data template ids start at 256)" % tid)
        try:
            self.templates[(scope, tid)] = _Template(tid, fields, ie_map)
        except ValueError as e:
            raise _BinError(offset, "template", "template %d: %s" % (tid, e))
        self.st["templates"] += 1

    def options_template(self, buf, p, end, scope, version):
        """Options templates describe exporter metadata: remember their ids so their data is skipped."""
        while end - p >= 6:
            tid = _U16.unpack_from(buf, p)[0]
            if version == 9:
                scope_len, opt_len = _U16X2.unpack_from(buf, p + 2)
                size = 6 + scope_len + opt_len
            else:
                nfields, nscope = _U16X2.unpack_from(buf, p + 2)
                if nfields == 0:
                    self.templates.pop((scope, tid), None)
                    p += 4
                    continue
                q, size = p + 6, 6
                for _i in range(nfields):
                    if end - q < 4:
                        break
                    ie = _U16.unpack_from(buf, q)[0]
                    step = 8 if ie & 0x8000 else 4
                    q += step
                    size += step
            if tid < 256 or p + size > end:
                break                              # padding
            self.templates[(scope, tid)] = "options"
            p += size

    def data(self, buf, p, end, scope, sid, hdr, exporter):
        tpl = self.templates.get((scope, sid))
        if tpl is None:
            self.st["skipped_no_template"] += 1
            self.st["skipped_no_template_bytes"] += end - p - 4
            return
        if tpl == "options":
            self.st["options_sets"] += 1
            return
        p += 4
        sink, cols = self.sink, self.sink.cols
        kind, uptime, secs = hdr
        take, conv = tpl.take, tpl.converters
        records = []
        if tpl.fixed:
            size = tpl.size
            if size == 0:
                return
            n = (end - p) // size
            if n:
                records = tpl.segments[0].iter_unpack(memoryview(buf)[p:p + n * size])
        else:
            records = self.varlen_records(buf, p, end, tpl)
        count = 0
        for vals in records:
            if conv:
                vals = list(vals)
                for i, f in conv:
                    vals[i] = f(vals[i])
                vals = tuple(vals)
            v = vals + _SEM_DEFAULT
            (nbytes, pkts, proto, tos, sport, dport, src4, dst4, src6, dst6, in_if, out_if, direction,
             last_up, first_up, end_s, end_ms, start_s, start_ms) = [v[i] for i in take]
            if kind == "v9":
                up = last_up if last_up is not None else first_up
                ts = secs if up is None else _uptime_ts(secs, uptime, up)
            elif end_s is not None:
                ts = end_s
            elif end_ms is not None:
                ts = end_ms // 1000
            elif start_s is not None:
                ts = start_s
            elif start_ms is not None:
                ts = start_ms // 1000
            else:
                ts = secs
            if direction not in (0, 1):
                direction = -1
            ifindex = out_if if direction == 1 and out_if is not None else in_if
            cols["ts"].append(ts)
            cols["link"].append(sink.link_code(exporter, ifindex))
            cols["src"].append(sink.addr(src4 if src4 != -1 else src6))
            cols["dst"].append(sink.addr(dst4 if dst4 != -1 else dst6))
            cols["dirflag"].append(direction)
            cols["proto"].append(proto)
            cols["sport"].append(sport)
            cols["dport"].append(dport)
            cols["dscp"].append((tos >> 2) & 63)
            cols["bytes"].append(nbytes)
            cols["packets"].append(pkts)
            count += 1
        self.st["flows"] += count

    @staticmethod
    def varlen_records(buf, p, end, tpl):
        while end - p >= tpl.min_size:
            vals = ()
            for seg in tpl.segments:
                if seg is None:
                    n = buf[p]
                    p += 1
                    if n == 255:
                        if end - p < 2:
                            raise _BinError(p, "length", "variable-length field length cut off (truncated)")
                        n = _U16.unpack_from(buf, p)[0]
                        p += 2
                    if p + n > end:
                        raise _BinError(p, "length", "variable-length field says %d bytes, %d present (truncated)" % (n, end - p))
                    p += n
                    continue
                if p + seg.size > end:
                    raise _BinError(p, "length", "record of template %d cut off (truncated)" % tpl.tid)
                vals += seg.unpack_from(buf, p)
                p += seg.size
            yield vals


def _uptime_ts(unix_secs, uptime, switched):
    """UNIX seconds (floor) of a sysUptime (ms) timestamp, given the header's uptime and time."""
    delta = (uptime - switched) & 0xFFFFFFFF
    if delta >= 0x80000000:        # switched after the header's uptime (exporter clock skew)
        delta -= 0x100000000
    ts = unix_secs - (-(-delta // 1000))
    return ts if ts > 0 else 0


def _read_netflow(path, data, link, loc, st):
    ex = _Exporter(st)
    exporter = link or "netflow"
    number, off = 1, 0
    if data[:4] in PCAP_MAGICS:
        st["format"] = "pcap"
        try:
            _read_pcap(data, ex, st)
        except _PcapError as e:
            raise NetstackError("%s packet %d (offset %d): field '%s': %s" % (path, e.number, e.offset, e.field, e.msg),
                                field="%s:%d:%s" % (path, e.number, e.field))
    else:
        st["format"] = "netflow"
        try:
            while off < len(data):
                off = ex.packet(data, off, len(data), exporter, True)
                number += 1
        except _BinError as e:
            raise NetstackError("%s packet %d (offset %d): field '%s': %s" % (path, number, e.offset, e.field, e.msg),
                                field="%s:%d:%s" % (path, number, e.field))
    st["rows"] = st["flows"]
    return ex.sink.records(loc)


class _PcapError(Exception):
    def __init__(self, number, offset, field, msg):
        Exception.__init__(self, msg)
        self.number, self.offset, self.field, self.msg = number, offset, field, msg


def _read_pcap(data, ex, st):
    order = PCAP_MAGICS[data[:4]]
    if len(data) < 24:
        raise _PcapError(0, 0, "header", "pcap file header needs 24 bytes, %d present (truncated)" % len(data))
    linktype = struct.unpack_from(order + "I", data, 20)[0] & 0x0FFFFFFF
    if linktype not in _LINK_OFFSETS:
        raise _PcapError(0, 20, "linktype", "link type %d is not supported (Ethernet 1, raw IP 101/228/229, "
                         "Linux cooked 113/276, BSD loopback 0)" % linktype)
    rec = struct.Struct(order + "IIII")
    for k in ("ignored_packets", "fragments", "pcap_packets"):
        st.setdefault(k, 0)
    off, number, n = 24, 0, len(data)
    while off < n:
        number += 1
        if n - off < rec.size:
            raise _PcapError(number, off, "record_header", "packet record header needs 16 bytes, %d present (truncated)" % (n - off))
        _s, _us, incl, _orig = rec.unpack_from(data, off)
        start = off + rec.size
        if start + incl > n:
            raise _PcapError(number, off, "incl_len", "record says %d bytes, %d present (truncated)" % (incl, n - start))
        st["pcap_packets"] += 1
        found = _udp_payload(data, start, start + incl, linktype, order)
        off = start + incl
        if found is None:
            st["ignored_packets"] += 1
            continue
        if found == "fragment":
            st["fragments"] += 1
            continue
        exporter, p, end = found
        if end - p < 4 or _U16.unpack_from(data, p)[0] not in EXPORT_VERSIONS:
            st["ignored_packets"] += 1
            continue
        try:
            ex.packet(data, p, end, exporter, False)
        except _BinError as e:
            raise _PcapError(number, e.offset, e.field, e.msg)


# link type -> (header length, offset of the ethertype/family, kind)
_LINK_OFFSETS = {1: (14, 12, "ether"), 101: (0, None, "raw"), 228: (0, None, "raw"), 229: (0, None, "raw"),
                 113: (16, 14, "ether"), 276: (20, 0, "ether"), 0: (4, 0, "null")}


def _udp_payload(data, p, end, linktype, order):
    """(exporter address, payload start, payload end) of a UDP datagram, "fragment", or None."""
    hlen, at, kind = _LINK_OFFSETS[linktype]
    if end - p < hlen:
        return None
    if kind == "ether":
        etype = _U16.unpack_from(data, p + at)[0]
        q = p + hlen
        while etype in (0x8100, 0x88A8) and end - q >= 4:
            etype = _U16.unpack_from(data, q + 2)[0]
            q += 4
        ipver = {0x0800: 4, 0x86DD: 6}.get(etype)
        p = q
    elif kind == "null":
        fam = struct.unpack_from(order + "I", data, p)[0]
        ipver = 4 if fam == 2 else 6 if fam in (10, 24, 28, 30) else None
        p += 4
    else:
        ipver = (data[p] >> 4) if end > p else None
    if ipver == 4:
        if end - p < 20 or data[p] >> 4 != 4:
            return None
        ihl = (data[p] & 15) * 4
        if ihl < 20:
            return None
        total, frag = struct.unpack_from("!H2xH", data, p + 2)
        if data[p + 9] != 17:
            return None
        if frag & 0x3FFF:
            return "fragment"
        src = socket.inet_ntoa(data[p + 12:p + 16])
        end = min(end, p + total) if total >= ihl else end
        p += ihl
    elif ipver == 6:
        if end - p < 40:
            return None
        nxt = data[p + 6]
        src = str(ipaddress.IPv6Address(data[p + 8:p + 24]))
        plen = _U16.unpack_from(data, p + 4)[0]
        end = min(end, p + 40 + plen) if plen else end
        p += 40
        while nxt in (0, 43, 60) and end - p >= 8:     # hop-by-hop, routing, destination options
            nxt, hl = data[p], data[p + 1]
            p += 8 + hl * 8
        if nxt == 44:
            return "fragment"
        if nxt != 17:
            return None
    else:
        return None
    if end - p < 8:
        return None
    ulen = _U16.unpack_from(data, p + 4)[0]
    if ulen >= 8:
        end = min(end, p + ulen)
    return src, p + 8, end
