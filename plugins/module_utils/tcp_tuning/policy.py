# -*- coding: utf-8 -*-
# Copyright: netstack.tuning contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Per-connection TCP policy: rules for bpf/tcp_tuning.bpf.c, validated, encoded and written
to its pinned maps.

The program keeps two rule sets (double buffer).  A change writes the inactive set, resets
its hit counters, publishes its rule count, then flips ``cfg.active_set``: a connection is
matched against the old rules or the new ones, never a mix.  Rules apply to connections
opened after the change (the program decides at connect / accept time).

Encoding (must match struct rule / struct config in tcp_tuning.bpf.c):

    rule   <I 16s 16s HHHH 10I 16s>  flags, addr, mask (network order, IPv4 as ::ffff:a.b.c.d),
           remote port lo/hi, local port lo/hi, min_active, min_long, init_cwnd, rto_min_us,
           delack_max_us, sndbuf, rcvbuf, cwnd_clamp, notsent_lowat, syn_rto_jiffies, cc
    config <IIII Q>  active_set, nrules[2], flags, long_bytes
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import gzip
import ipaddress
import json
import os
import re
import struct

from ansible_collections.netstack.tuning.plugins.module_utils.bpf import program as bpf
from ansible_collections.netstack.tuning.plugins.module_utils.core.common import NetstackError, read_text, schema_error, schema_field, strict_int

MAX_RULES = 32
RULE_FMT = "<I16s16sHHHH10I16s"
RULE_SIZE = struct.calcsize(RULE_FMT)  # 100
CFG_FMT = "<IIIIQ"
STATS_FMT = "<QQ"
PEER_FMT = "<IIQQ"

R_VALID, R_CC, R_IW, R_RTO_MIN, R_DELACK, R_SNDBUF, R_RCVBUF, R_CLAMP, R_LOWAT, R_SYN_RTO, R_FLOWCOND = \
    [1 << i for i in range(11)]
C_TRACK = 1

ACTIONS = {  # option -> (flag, kernel limits (lo, hi), unit text)
    "congestion_control": (R_CC, None, ""),
    "initial_cwnd": (R_IW, (1, 1024), "packets"),
    "rto_min_ms": (R_RTO_MIN, (1, 200), "ms; the kernel only allows lowering it below 200 ms"),
    "delack_max_ms": (R_DELACK, (1, 200), "ms"),
    "sndbuf": (R_SNDBUF, (4096, 2 ** 31 - 1), "bytes"),
    "rcvbuf": (R_RCVBUF, (4096, 2 ** 31 - 1), "bytes"),
    "cwnd_clamp": (R_CLAMP, (1, 2 ** 31 - 1), "packets"),
    "notsent_lowat": (R_LOWAT, (1, 2 ** 31 - 1), "bytes"),
    "syn_rto_ms": (R_SYN_RTO, (10, 120000), "ms"),
}

_PORTS = {"oneOf": [{"type": "integer", "minimum": 0, "maximum": 65535},
                    {"type": "string", "pattern": r"^\s*\d{1,5}\s*(-\s*\d{1,5}\s*)?$"}]}
SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "array",
    "maxItems": MAX_RULES,
    "items": {
        "type": "object",
        "additionalProperties": False,
        "required": ["name", "set"],
        "properties": {
            "name": {"type": "string", "pattern": r"^[A-Za-z0-9_.:-]{1,48}$"},
            "match": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "remote": {"type": "string"},
                    "remote_ports": _PORTS,
                    "local_ports": _PORTS,
                    "peer_active_flows_gt": {"type": "integer", "minimum": 0, "maximum": 1000000},
                    "peer_long_flows_gt": {"type": "integer", "minimum": 0, "maximum": 1000000},
                },
            },
            "set": {
                "type": "object",
                "additionalProperties": False,
                "minProperties": 1,
                "properties": dict(
                    [("congestion_control", {"type": "string", "pattern": r"^[a-z0-9_]{1,15}$"})]
                    + [(k, {"type": "integer", "minimum": v[1][0], "maximum": v[1][1]})
                       for k, v in ACTIONS.items() if v[1]]),
            },
        },
    },
}


# ------------------------------------------------------------------ host facts

def available_ccs():
    text = read_text("/proc/sys/net/ipv4/tcp_available_congestion_control", "")
    return text.split()


def kernel_hz():
    """CONFIG_HZ of the running kernel (jiffies per second), or None if unknown."""
    text = None
    try:
        with gzip.open("/proc/config.gz", "rt") as f:
            text = f.read()
    except (IOError, OSError):
        text = read_text("/boot/config-%s" % os.uname()[2])
    if text:
        m = re.search(r"^CONFIG_HZ=(\d+)$", text, re.M)
        if m:
            return int(m.group(1))
    return None


DEFAULT_HZ = 250


def effective_hz(given=None):
    """(hz, notes): the kernel_hz option when given (plan() checks it: 0 is refused, not
    taken as "unset"), else the running kernel's CONFIG_HZ, else 250 with a note."""
    if given is not None:
        return given, []
    hz = kernel_hz()
    if hz:
        return hz, []
    return DEFAULT_HZ, ["kernel HZ unknown (no kernel config found); assuming %d for syn_rto_ms" % DEFAULT_HZ]


# ------------------------------------------------------------------ validation

def _ports(value, field):
    if value is None:
        return 0, 65535
    if isinstance(value, bool):
        raise NetstackError("a port or 'lo-hi' range is required", field=field)
    if isinstance(value, int):
        lo = hi = value
    else:
        m = re.match(r"^\s*(\d{1,5})\s*(?:-\s*(\d{1,5})\s*)?$", str(value))
        if not m:
            raise NetstackError("%r is not a port or 'lo-hi' range" % (value,), field=field)
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) else lo
    if not (0 <= lo <= hi <= 65535):
        raise NetstackError("port range %s-%s is out of order or beyond 65535" % (lo, hi), field=field)
    return lo, hi


def validate(rules, ccs=None):
    """Validate user rules (their JSON Schema, plus the checks a
    schema cannot express); returns them normalised.  NetstackError names the field."""
    if rules is None:
        rules = []
    if not isinstance(rules, list):
        raise NetstackError("must be a list of rules", field="rules")
    e = schema_error(SCHEMA, rules)
    if e:
        field = schema_field(e, "rules")
        try:
            field = field.replace("rules[%d]" % e.absolute_path[0],
                                  "rules[%d] (%s)" % (e.absolute_path[0], rules[e.absolute_path[0]]["name"]), 1)
        except (IndexError, KeyError, TypeError):
            pass
        raise NetstackError(e.message, field=field)
    if len(rules) > MAX_RULES:
        raise NetstackError("at most %d rules" % MAX_RULES, field="rules")
    ccs = available_ccs() if ccs is None else ccs
    out, names = [], set()
    for i, r in enumerate(rules):
        where = "rules[%d]" % i
        if not isinstance(r, dict) or not r.get("name"):
            raise NetstackError("each rule is a dict with a name", field=where)
        where = "rules[%d] (%s)" % (i, r["name"])
        if r["name"] in names:
            raise NetstackError("duplicate rule name", field=where + ".name")
        names.add(r["name"])
        m = dict(r.get("match") or {})
        s = dict(r.get("set") or {})
        unknown = set(m) - {"remote", "remote_ports", "local_ports", "peer_active_flows_gt", "peer_long_flows_gt"}
        if unknown:
            raise NetstackError("unknown match key(s) %s" % ", ".join(sorted(unknown)), field=where + ".match")
        if not s:
            raise NetstackError("a rule needs at least one setting", field=where + ".set")
        for k, v in s.items():
            if k not in ACTIONS:
                raise NetstackError("unknown setting %s (known: %s)" % (k, ", ".join(sorted(ACTIONS))),
                                    field="%s.set.%s" % (where, k))
            lim = ACTIONS[k][1]
            if lim:
                if isinstance(v, bool) or not isinstance(v, int) or not lim[0] <= v <= lim[1]:
                    raise NetstackError("must be an integer in %d..%d (%s)" % (lim[0], lim[1], ACTIONS[k][2]),
                                        field="%s.set.%s" % (where, k))
        cc = s.get("congestion_control")
        if cc is not None and cc not in ccs:
            raise NetstackError("congestion control %r is not available on this host (available: %s; load its "
                                "module, e.g. modprobe tcp_%s)" % (cc, " ".join(ccs), cc),
                                field=where + ".set.congestion_control")
        remote = m.get("remote") or "::/0"
        try:
            net = ipaddress.ip_network(remote, strict=False)
        except ValueError as e:
            raise NetstackError("not an address or prefix: %s" % e, field=where + ".match.remote")
        rp = _ports(m.get("remote_ports"), where + ".match.remote_ports")
        lp = _ports(m.get("local_ports"), where + ".match.local_ports")
        for k in ("peer_active_flows_gt", "peer_long_flows_gt"):
            v = m.get(k)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
                raise NetstackError("must be an integer >= 0", field="%s.match.%s" % (where, k))
        norm_match = {"remote": str(net) if m.get("remote") else "any", "remote_ports": "%d-%d" % rp,
                      "local_ports": "%d-%d" % lp}
        for k in ("peer_active_flows_gt", "peer_long_flows_gt"):
            if m.get(k) is not None:
                norm_match[k] = m[k]
        out.append({"name": r["name"], "match": norm_match, "set": s, "_net": net, "_rp": rp, "_lp": lp})
    return out


# ------------------------------------------------------------------ encoding

def mapped_prefix(net):
    """(addr16, mask16) of a network, IPv4 mapped into ::ffff:0:0/96 (the layout of the
    BPF programs' address matches)."""
    if net.version == 4:
        addr = b"\0" * 10 + b"\xff\xff" + net.network_address.packed
        plen = 96 + net.prefixlen
    else:
        addr = net.network_address.packed
        plen = net.prefixlen
    if str(net) == "::/0":
        plen = 0
    mask_int = ((1 << 128) - 1) ^ ((1 << (128 - plen)) - 1) if plen else 0
    mask = mask_int.to_bytes(16, "big")
    addr = bytes(a & b for a, b in zip(addr, mask))
    return addr, mask


def prefix_text(addr, mask):
    """The network of ``mapped_prefix`` output, as text (IPv4 back out of ::ffff:0:0/96)."""
    plen = bin(int.from_bytes(mask, "big")).count("1")
    if addr[:12] == b"\0" * 10 + b"\xff\xff" and plen >= 96:
        return str(ipaddress.ip_network((addr[12:], plen - 96)))
    return str(ipaddress.ip_network((addr, plen)))


def encode_rule(r, hz):
    s, m = r["set"], r["match"]
    flags = R_VALID
    for k in s:
        flags |= ACTIONS[k][0]
    min_active = min_long = 0
    if "peer_active_flows_gt" in m:
        min_active = m["peer_active_flows_gt"] + 1
    if "peer_long_flows_gt" in m:
        min_long = m["peer_long_flows_gt"] + 1
    if min_active or min_long:
        flags |= R_FLOWCOND
    addr, mask = mapped_prefix(r["_net"])
    syn = 0
    if "syn_rto_ms" in s:
        syn = max(1, (s["syn_rto_ms"] * hz + 999) // 1000)
    return struct.pack(RULE_FMT, flags, addr, mask, r["_rp"][0], r["_rp"][1], r["_lp"][0], r["_lp"][1],
                       min_active, min_long, s.get("initial_cwnd", 0), s.get("rto_min_ms", 0) * 1000,
                       s.get("delack_max_ms", 0) * 1000, s.get("sndbuf", 0), s.get("rcvbuf", 0),
                       s.get("cwnd_clamp", 0), s.get("notsent_lowat", 0), syn,
                       (s.get("congestion_control") or "").encode().ljust(16, b"\0"))


def decode_rule(raw, hz):
    """Readable form of an encoded rule (for diffs and for what the kernel holds)."""
    (flags, addr, mask, rlo, rhi, llo, lhi, min_active, min_long, iw, rto_us, delack_us, sndbuf, rcvbuf,
     clamp, lowat, syn, cc) = struct.unpack(RULE_FMT, raw[:RULE_SIZE])
    remote = prefix_text(addr, mask) if any(mask) else "any"
    m = {"remote": remote, "remote_ports": "%d-%d" % (rlo, rhi), "local_ports": "%d-%d" % (llo, lhi)}
    if flags & R_FLOWCOND:
        if min_active:
            m["peer_active_flows_gt"] = min_active - 1
        if min_long:
            m["peer_long_flows_gt"] = min_long - 1
    s = {}
    if flags & R_CC:
        s["congestion_control"] = cc.split(b"\0", 1)[0].decode("ascii", "replace")
    for key, flag, val in (("initial_cwnd", R_IW, iw), ("rto_min_ms", R_RTO_MIN, rto_us // 1000),
                           ("delack_max_ms", R_DELACK, delack_us // 1000), ("sndbuf", R_SNDBUF, sndbuf),
                           ("rcvbuf", R_RCVBUF, rcvbuf), ("cwnd_clamp", R_CLAMP, clamp),
                           ("notsent_lowat", R_LOWAT, lowat),
                           ("syn_rto_ms", R_SYN_RTO, (syn * 1000) // hz if hz else syn)):
        if flags & flag:
            s[key] = val
    return {"valid": bool(flags & R_VALID), "match": m, "set": s}


def render(rules):
    """Diff text: one rule per block, stable key order."""
    out = []
    for i, r in enumerate(rules):
        out.append("- %s\n" % json.dumps({"name": r.get("name"), "match": r["match"], "set": r["set"]},
                                         sort_keys=True))
    return "".join(out)


# ------------------------------------------------------------------ the maps

class Policy(bpf.PinnedMaps):
    """The pinned maps of one tcp_tuner instance."""

    NAMES = ("rules", "cfg", "hits", "peers")
    MISSING_HINT = ": load bpf/tcp_tuning.bpf.c with bpf_program first"
    FIELD = "program"

    def __init__(self, pin_dir):
        super(Policy, self).__init__(pin_dir)
        ri = self.maps["rules"].info
        if ri["value_size"] != RULE_SIZE or ri["max_entries"] < 2 * MAX_RULES:
            self.close()
            sizes = (ri["value_size"], ri["max_entries"], RULE_SIZE, 2 * MAX_RULES)
            raise NetstackError("the pinned rules map has value size %d / %d entries, this module expects %d / %d "
                                "(program and module versions differ)" % sizes, field="program")

    def config(self):
        raw = self.maps["cfg"].lookup(self._key(0))
        active, n0, n1, flags, long_bytes = struct.unpack(CFG_FMT, raw[:24])
        return {"active_set": active & 1, "nrules": [n0, n1], "flags": flags, "long_bytes": long_bytes}

    def active_raw(self):
        c = self.config()
        base = c["active_set"] * MAX_RULES
        n = min(c["nrules"][c["active_set"]], MAX_RULES)
        return c, [self.maps["rules"].lookup(self._key(base + i))[:RULE_SIZE] for i in range(n)]

    def counters(self, n):
        c = self.config()
        base = c["active_set"] * MAX_RULES
        hm = self.maps["hits"]
        out = []
        for i in range(n):
            raw = hm.lookup(self._key(base + i))
            hits = errors = 0
            for v in hm.per_cpu(raw):
                h, e = struct.unpack(STATS_FMT, v[:16])
                hits += h
                errors += e
            out.append({"hits": hits, "errors": errors})
        return out

    def peers(self, limit=50):
        out = []
        pm = self.maps["peers"]
        for k, v in pm.items():
            active, longf, nbytes, flows = struct.unpack(PEER_FMT, v[:24])
            if k[:12] == b"\0" * 10 + b"\xff\xff":
                addr = str(ipaddress.IPv4Address(k[12:16]))
            else:
                addr = str(ipaddress.IPv6Address(k[:16]))
            out.append({"peer": addr, "active_flows": active, "long_flows": longf, "bytes_closed": nbytes,
                        "flows": flows})
        out.sort(key=lambda p: (-p["active_flows"], -p["flows"]))
        return out[:limit]

    def write(self, encoded, flags, long_bytes):
        """Publish a new rule set: fill the inactive set, then flip."""
        c = self.config()
        new = 1 - c["active_set"]
        base = new * MAX_RULES
        zero_rule = b"\0" * RULE_SIZE
        for i in range(MAX_RULES):
            self.maps["rules"].update(self._key(base + i), encoded[i] if i < len(encoded) else zero_rule)
            self.maps["hits"].update(self._key(base + i), b"\0" * 16)
        nr = list(c["nrules"])
        nr[new] = len(encoded)
        # Step 1: the count of the (still inactive) set; step 2: flip.  A reader sees either
        # the old set with its count or the new set with its count.
        self.maps["cfg"].update(self._key(0), struct.pack(CFG_FMT, c["active_set"], nr[0], nr[1], flags, long_bytes))
        self.maps["cfg"].update(self._key(0), struct.pack(CFG_FMT, new, nr[0], nr[1], flags, long_bytes))
        return new


MAX_LONG_FLOW_BYTES = 2 ** 48   # 256 TiB


def plan(rules, long_flow_bytes, track_flows, hz, ccs=None):
    """Validate and encode; returns (normalised rules, encoded list, cfg flags).

    ``hz`` (kernel_hz) is 1..100000; ``long_flow_bytes`` 1..MAX_LONG_FLOW_BYTES (a u64 in the
    cfg map, but no flow acknowledges 256 TiB: a larger threshold is a typo, and
    track_flows=false is how the counting is switched off)."""
    strict_int(hz, "kernel_hz", 1, 100000)
    strict_int(long_flow_bytes, "long_flow_bytes", 1, MAX_LONG_FLOW_BYTES)
    norm = validate(rules, ccs)
    encoded = [encode_rule(r, hz) for r in norm]
    flowcond = any("peer_active_flows_gt" in r["match"] or "peer_long_flows_gt" in r["match"] for r in norm)
    flags = C_TRACK if (track_flows or (track_flows is None and flowcond)) else 0
    return norm, encoded, flags


def public(rules):
    return [{"name": r["name"], "match": r["match"], "set": r["set"]} for r in rules]
