# -*- coding: utf-8 -*-
# Copyright: netstack.tuning contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The traffic collector (capability 5): BPF counters on tc hooks -> traffic records -> a CSV store.

``bpf/traffic.bpf.c`` counts L3 bytes and packets per key (interface, direction,
family, protocol, port class, DSCP, remote prefix) in a per-CPU hash.  This module loads
it through the bpf engine on ingress and egress of each watched interface, configures
it through its pinned maps, and turns the running totals into ``trafficdata.HEADER``
rows: the deltas since the previous scrape.

Layout on a host::

    /sys/fs/bpf/netstack/<name>/           the program set (bpf engine; record under <state_dir>/bpf)
    <state_dir>/traffic/<name>.state.json  totals at the last scrape (so a restart does not count twice)
    <state_dir>/traffic/store/YYYY-MM-DD.csv   the store (``Store``; one file per UTC day)

Deltas: totals are summed over CPUs and compared with the previous scrape's.  A total
that went backwards, a map created anew (another map id or another boot) means the
program was reloaded: the new total is the delta.  A replace through ``present`` copies
the counters into the new map (the engine migrates maps) and keeps the baseline.
Entries idle for ``idle_scrapes`` scrapes are removed from the map with an atomic
lookup-and-delete, so what arrived since the last read is still counted.

Attachment: tc filters at ``priority`` (default 1) on ingress and egress, one program set
for all interfaces (rows keep them apart by ifindex).  The programs return "no verdict", so
filters after them still run; a priority already held by another program is refused
(field ``priority``), never replaced.  ``absent`` removes clsact only where it added it.

Order of a scrape: the baseline is saved before the caller stores the rows, so a crash in
between loses that interval rather than counting it twice.

Standard library only: it runs on managed hosts (bcc is needed by ``present`` only).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import calendar
import csv
import ctypes
import errno
import fcntl
import io
import json
import os
import re
import socket
import struct
import threading
import time
import zlib

from ansible_collections.netstack.tuning.plugins.module_utils.bpf import program as bpf
from ansible_collections.netstack.tuning.plugins.module_utils.core import kstate, nsutil
from ansible_collections.netstack.tuning.plugins.module_utils.traffic import data as trafficdata
from ansible_collections.netstack.tuning.plugins.module_utils.core.common import NetstackError, collection_file
from ansible_collections.netstack.tuning.plugins.module_utils.core import metrics as prom

SOURCE_NAME = "traffic.bpf.c"
KEY_FMT = "=IBBBBBBH16s"     # struct ta_key: ifindex, direction, family, proto, port_class, dscp, plen, pad, addr
VAL_FMT = "=QQ"              # struct ta_val: packets, bytes
CFG_FMT = "=IIII"            # struct ta_cfg: prefix_v4, prefix_v6, flags, table_crc
CFG_SET = 1
KEY_SIZE = struct.calcsize(KEY_FMT)
MAPS = ("flows", "overflow", "cfg", "port_class", "links")
DEFAULT_PRIORITY = 1
ETH_HLEN = 14
# Link types (``ip -j link``'s link_type) whose packets have no link-layer header at tc.
L3_LINK_TYPES = ("none", "ipip", "sit", "gre", "ip6gre", "tunnel6", "ip6tnl", "rawip")
# ARPHRD_* (a link's ifi_type) -> the name ``ip link`` gives it (iproute2's ll_types.c); other types
# read "[n]" (they all have a link-layer header as far as the collector is concerned).
ARPHRD_NAMES = {0: "generic", 1: "ether", 2: "eether", 3: "ax25", 4: "pronet", 5: "chaos", 6: "ieee802", 7: "arcnet",
                8: "atalk", 15: "dlci", 19: "atm", 23: "metricom", 24: "ieee1394", 32: "infiniband", 256: "slip",
                257: "cslip", 258: "slip6", 259: "cslip6", 260: "rsrvd", 264: "adapt", 270: "rose", 271: "x25",
                272: "hwx25", 280: "can", 512: "ppp", 513: "hdlc", 516: "lapb", 517: "ddcmp", 518: "rawhdlc",
                519: "rawip", 768: "ipip", 769: "tunnel6", 770: "frad", 771: "skip", 772: "loopback", 773: "ltalk",
                774: "fddi", 775: "bif", 776: "sit", 777: "ip/ddp", 778: "gre", 779: "pimreg", 780: "hippi", 823: "ip6gre",
                0xFFFE: "none", 0xFFFF: "void"}
IFNAME_RE = re.compile(r"\A[A-Za-z0-9_.@:-]{1,15}\Z")
DAY_RE = re.compile(r"\A(\d{4})-(\d{2})-(\d{2})\.csv\Z")
MAX_INTERFACES = 64

# bpf(2) batch and lookup-and-delete commands (the engine's Map has the single-element ones)
MAP_LOOKUP_AND_DELETE_ELEM, MAP_LOOKUP_BATCH, MAP_UPDATE_BATCH = 21, 24, 26
_UNSUPPORTED = (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, 524)  # 524: ENOTSUPP (kernel-internal)


def default_source():
    """Path of bpf/traffic.bpf.c next to this engine, or None."""
    cand = collection_file("bpf", SOURCE_NAME)
    return cand if os.path.isfile(cand) else None


# ------------------------------------------------------------------ settings

def _int(value, lo, hi, field):
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise NetstackError("must be an integer in %d..%d" % (lo, hi), field=field)
    return value


def settings(name="traffic", interfaces=None, netns=None, prefix_v4=24, prefix_v6=48, max_flows=16384,
             priority=DEFAULT_PRIORITY, idle_scrapes=6, field_prefix=""):
    """Validate the collector's settings; NetstackError names the field."""
    f = field_prefix
    if not isinstance(name, str) or not bpf.NAME_RE.match(name):
        raise NetstackError("must be 1-63 characters of letters, digits, '_', '-'", field=f + "name")
    if isinstance(interfaces, str):
        interfaces = [interfaces]
    if interfaces is None:  # enough to scrape or remove what is loaded, not to load
        interfaces = []
    elif not isinstance(interfaces, (list, tuple)) or not interfaces:
        raise NetstackError("at least one interface is required", field=f + "interfaces")
    if len(interfaces) > MAX_INTERFACES:
        raise NetstackError("at most %d interfaces" % MAX_INTERFACES, field=f + "interfaces")
    for i, dev in enumerate(interfaces):
        if not isinstance(dev, str) or not IFNAME_RE.match(dev):
            raise NetstackError("not an interface name: %r" % (dev,), field="%sinterfaces[%d]" % (f, i))
    if len(set(interfaces)) != len(interfaces):
        raise NetstackError("an interface is listed twice", field=f + "interfaces")
    if netns is not None and (not isinstance(netns, str) or not re.match(r"\A[A-Za-z0-9_.@:+-]{1,64}\Z", netns)):
        raise NetstackError("invalid network namespace name %r" % (netns,), field=f + "netns")
    return {"name": name, "interfaces": list(interfaces), "netns": netns or None,
            "prefix_v4": _int(prefix_v4, 0, 32, f + "prefix_v4"), "prefix_v6": _int(prefix_v6, 0, 128, f + "prefix_v6"),
            "max_flows": _int(max_flows, 64, 1 << 20, f + "max_flows"),
            "priority": _int(priority, 1, 65535, f + "priority"),
            "idle_scrapes": _int(idle_scrapes, 1, 100000, f + "idle_scrapes")}


def function_names(interfaces):
    """{interface: (ingress function, egress function)}: stable per interface name."""
    out, used = {}, set()
    for dev in interfaces:
        tag = re.sub(r"[^A-Za-z0-9_]", "_", dev)
        cand, n = tag, 2
        while cand in used:
            cand, n = "%s_%d" % (tag, n), n + 1
        used.add(cand)
        out[dev] = ("traffic_ingress_%s" % cand, "traffic_egress_%s" % cand)
    return out


# ------------------------------------------------------------------ bpf(2) helpers

def _attr(fmt, *vals):
    raw = struct.pack(fmt, *vals)
    buf = ctypes.create_string_buffer(len(raw) + 8)
    ctypes.memmove(buf, raw, len(raw))
    return buf


def read_all(m):
    """{key bytes: value bytes} of a map: batched where the kernel can, else key by key."""
    ks, vs = m.info["key_size"], m.vsize
    out, chunk, first = {}, 1024, True
    tok_in, tok_out = ctypes.create_string_buffer(max(ks, 8)), ctypes.create_string_buffer(max(ks, 8))
    while True:
        keys, vals = ctypes.create_string_buffer(ks * chunk), ctypes.create_string_buffer(vs * chunk)
        attr = _attr("=QQQQIIQQ", 0 if first else ctypes.addressof(tok_in), ctypes.addressof(tok_out),
                     ctypes.addressof(keys), ctypes.addressof(vals), chunk, m.fd, 0, 0)
        done = False
        try:
            bpf.sys_bpf(MAP_LOOKUP_BATCH, attr)
        except OSError as e:
            if e.errno == errno.ENOENT:
                done = True
            elif e.errno == errno.ENOSPC and chunk < 1 << 16:
                chunk *= 4
                continue
            elif first and e.errno in _UNSUPPORTED:
                return dict(m.items())
            else:
                raise
        n = struct.unpack_from("=I", attr.raw, 32)[0]
        raw_k, raw_v = keys.raw, vals.raw
        for i in range(n):
            out[raw_k[i * ks:(i + 1) * ks]] = raw_v[i * vs:(i + 1) * vs]
        if done:
            return out
        ctypes.memmove(tok_in, tok_out, len(tok_out.raw))
        first = False


def update_all(m, items):
    """Write [(key bytes, value bytes)] into a (non-per-CPU) map: one batch, else key by key."""
    if not items:
        return
    ks, vs = m.info["key_size"], m.info["value_size"]
    keys = ctypes.create_string_buffer(b"".join(k for k, _v in items), ks * len(items))
    vals = ctypes.create_string_buffer(b"".join(v for _k, v in items), vs * len(items))
    attr = _attr("=QQQQIIQQ", 0, 0, ctypes.addressof(keys), ctypes.addressof(vals), len(items), m.fd, 0, 0)
    try:
        bpf.sys_bpf(MAP_UPDATE_BATCH, attr)
        return
    except OSError as e:
        if e.errno not in _UNSUPPORTED:
            raise
    for k, v in items:
        m.update(k, v)


def lookup_and_delete(m, key):
    """Remove ``key`` and return its last value (None if absent).  Kernels that cannot do it
    atomically for this map type get a lookup then a delete."""
    k = ctypes.create_string_buffer(bytes(key), m.info["key_size"])
    v = ctypes.create_string_buffer(m.vsize)
    try:
        bpf.sys_bpf(MAP_LOOKUP_AND_DELETE_ELEM, _attr("=IIQQQ", m.fd, 0, ctypes.addressof(k), ctypes.addressof(v), 0))
        return v.raw[:m.vsize]
    except OSError as e:
        if e.errno == errno.ENOENT:
            return None
        if e.errno not in _UNSUPPORTED:
            raise
    val = m.lookup(key)
    m.delete(key)
    return val


def _sum_percpu(m, value):
    p = b = 0
    for part in m.per_cpu(value):
        pp, bb = struct.unpack(VAL_FMT, part)
        p += pp
        b += bb
    return p, b


def _boot_id():
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except (IOError, OSError):
        return None


# ------------------------------------------------------------------ keys and rows

def decode_key(raw):
    """A ``struct ta_key`` as a dict."""
    ifindex, direction, family, proto, pclass, dscp, plen, _pad, addr = struct.unpack(KEY_FMT, raw)
    return {"ifindex": ifindex, "direction": direction, "family": family, "proto": proto, "port_class": pclass,
            "dscp": dscp, "plen": plen, "addr": addr}


def prefix_text(family, plen, addr):
    """"198.18.102.0/24", "2001:db8::/48", or "-" for non-IP."""
    if family == 4:
        return "%s/%d" % (socket.inet_ntop(socket.AF_INET, addr[:4]), plen)
    if family == 6:
        return "%s/%d" % (socket.inet_ntop(socket.AF_INET6, addr[:16]), plen)
    return "-"


def class_name(class_id):
    names = trafficdata.CLASS_NAMES
    return names[class_id] if class_id < len(names) else "class%d" % class_id


# ------------------------------------------------------------------ the collector

class Collector(object):
    """The BPF traffic counters of some interfaces (optionally inside a named netns)."""

    def __init__(self, name="traffic", interfaces=None, netns=None, prefix_v4=24, prefix_v6=48, max_flows=16384,
                 state_dir="/var/lib/netstack", link_prefix=None, priority=DEFAULT_PRIORITY, idle_scrapes=6,
                 pin_root=None, source=None, source_text=None):
        s = settings(name, interfaces, netns, prefix_v4, prefix_v6, max_flows, priority, idle_scrapes)
        self.name, self.interfaces, self.netns = s["name"], s["interfaces"], s["netns"]
        self.prefix_v4, self.prefix_v6, self.max_flows = s["prefix_v4"], s["prefix_v6"], s["max_flows"]
        self.priority, self.idle_scrapes = s["priority"], s["idle_scrapes"]
        self.state_dir = state_dir
        self.link_prefix = link_prefix if link_prefix is not None else socket.gethostname()
        self.source_path = source
        self.source_text = source_text   # the text itself (the module gets it from the controller)
        self.engine = bpf.Engine(state_dir=state_dir, pin_root=pin_root or bpf.PIN_ROOT)
        self.ifnames = {}      # ifindex -> interface name (in the collector's netns)
        self.counts = {"scrapes": 0, "rows": 0, "deleted": 0, "overflow_packets": 0, "overflow_bytes": 0}
        self.traffic = {}      # (interface, direction) -> [packets, bytes] counted by this object
        self.flows = None      # entries in the map after the last scrape
        self.last_scrape = None
        self._refreshed = False
        self._tlock = threading.Lock()

    # -- paths -------------------------------------------------------------------
    def state_path(self):
        return os.path.join(self.state_dir, "traffic", "%s.state.json" % self.name)

    def pin_dir(self):
        return self.engine.pin_dir(self.name)

    def _map_path(self, m):
        return os.path.join(self.pin_dir(), "maps", m)

    def lock(self, check_mode=False):
        return self.engine.lock("traffic-" + self.name, check_mode)

    # -- what to load -----------------------------------------------------------
    def source(self):
        if self.source_text:
            text = self.source_text
        else:
            path = self.source_path or default_source()
            if not path:
                raise NetstackError("bpf/%s is not installed next to the engine" % SOURCE_NAME, field="source")
            with open(path) as f:
                text = f.read()
        fns = function_names(self.interfaces)
        hooks = "".join("TA_HOOKS(%s)\n" % fns[dev][0][len("traffic_ingress_"):] for dev in self.interfaces)
        return text + "\n// per-interface hooks (netstack.tuning traffic collector)\n" + hooks

    def cflags(self):
        return ["-DTA_MAX_FLOWS=%d" % self.max_flows, "-DTA_CLASS_NONE=%d" % trafficdata.CLASS_ID["none"]]

    def programs(self):
        fns = function_names(self.interfaces)
        out = []
        for dev in self.interfaces:
            for fn, direction in zip(fns[dev], ("ingress", "egress")):
                out.append({"function": fn, "type": "sched_cls", "interface": dev, "direction": direction,
                            "netns": self.netns, "priority": self.priority})
        return out

    # -- interfaces ---------------------------------------------------------------
    def links(self):
        """{name: {"ifindex", "l2_len", "link_type"}} of every interface in the collector's netns."""
        field = "netns" if self.netns else "interfaces"
        if self.netns:
            kstate.netns_file(self.netns)
        with nsutil.iproute(self.netns, field=field) as ipr:
            data = nsutil.netlink("ip link show", ipr.get_links, field=field)
        res = {}
        for li in data:
            lt = ARPHRD_NAMES.get(li["ifi_type"], "[%d]" % li["ifi_type"])
            res[li.get_attr("IFLA_IFNAME")] = {"ifindex": int(li["index"]), "link_type": lt,
                                               "l2_len": 0 if lt in L3_LINK_TYPES else ETH_HLEN}
        return res

    def _watched_links(self):
        all_links = self.links()
        missing = [d for d in self.interfaces if d not in all_links]
        if missing:
            raise NetstackError("no interface %s%s" % (", ".join(missing), " in netns %s" % self.netns if self.netns else ""),
                                field="interfaces")
        self.ifnames = dict((v["ifindex"], k) for k, v in all_links.items())
        return dict((d, all_links[d]) for d in self.interfaces)

    def _check_priority(self):
        """Refuse to replace another program's tc filter at our priority."""
        rec = self.engine.record(self.name) or {}
        st = self.engine.status(self.name) or {}
        ours = set(p.get("id") for p in rec.get("programs", [])) | set(p.get("id") for p in st.get("programs", []))
        for p in self.programs():
            ids = bpf.tc_filter_prog_ids(p)
            if ids and not set(ids) & ours:
                raise NetstackError("tc %s %s pref %d already holds another program (id %s); choose another "
                                    "priority" % (p["interface"], p["direction"], self.priority, ids[0]),
                                    field="priority")

    # -- the maps ------------------------------------------------------------------
    def _want_cfg(self, table):
        crc = zlib.crc32(bytes(bytearray(table))) & 0xffffffff
        return struct.pack(CFG_FMT, self.prefix_v4, self.prefix_v6, CFG_SET, crc)

    def _sync_maps(self, links, check_mode=False):
        """Write cfg, port_class and links where they differ; returns what changed."""
        changed = []
        table = trafficdata.port_class_table()
        want = self._want_cfg(table)
        maps = {}
        try:
            for m in ("cfg", "port_class", "links"):
                maps[m] = bpf.Map.pinned(self._map_path(m))
            zero = struct.pack("=I", 0)
            cur = maps["cfg"].lookup(zero)
            if cur != want:
                if cur is None or cur[12:16] != want[12:16]:
                    changed.append("port_class")
                    if not check_mode:
                        update_all(maps["port_class"], [(struct.pack("=I", p), struct.pack("=B", c))
                                                        for p, c in enumerate(table)])
                changed.append("cfg")
                if not check_mode:
                    maps["cfg"].update(zero, want)
            want_links = dict((struct.pack("=I", v["ifindex"]), struct.pack("=I", v["l2_len"])) for v in links.values())
            have = dict(maps["links"].items())
            if have != want_links:
                changed.append("links")
                if not check_mode:
                    for k in set(have) - set(want_links):
                        maps["links"].delete(k)
                    for k, v in want_links.items():
                        if have.get(k) != v:
                            maps["links"].update(k, v)
        finally:
            for m in maps.values():
                m.close()
        return changed

    def _settings_in_kernel(self):
        """Prefix lengths and flow table size as loaded, or None."""
        try:
            with bpf.Map.pinned(self._map_path("cfg")) as m:
                raw = m.lookup(struct.pack("=I", 0))
            with bpf.Map.pinned(self._map_path("flows")) as m:
                max_flows = m.info["max_entries"]
        except NetstackError:
            return None
        p4, p6, flags, _crc = struct.unpack(CFG_FMT, raw)
        if not flags & CFG_SET:
            p4, p6 = 24, 48
        return {"prefix_v4": p4, "prefix_v6": p6, "max_flows": max_flows}

    def _summary(self):
        st = self.engine.status(self.name)
        if not st:
            return None
        rec = self.engine.record(self.name) or {}
        ifs = []
        for p in rec.get("programs", []):
            if p.get("interface") and p["interface"] not in ifs:
                ifs.append(p["interface"])
        out = {"interfaces": ifs, "netns": (rec.get("programs") or [{}])[0].get("netns"),
               "attached": all(p["pinned"] and p["attached"] for p in st["programs"])}
        out.update(self._settings_in_kernel() or {})
        return out

    def _wanted(self):
        return {"interfaces": list(self.interfaces), "netns": self.netns, "attached": True,
                "prefix_v4": self.prefix_v4, "prefix_v6": self.prefix_v6, "max_flows": self.max_flows}

    # -- present / absent / status ---------------------------------------------------
    def present(self, check_mode=False):
        """Load and attach (ingress and egress of every interface), then configure the maps."""
        if not self.interfaces:
            raise NetstackError("at least one interface is required", field="interfaces")
        with self.lock(check_mode):
            links = self._watched_links()
            self._check_priority()
            before = self._summary()
            after = self._wanted()
            if check_mode:
                res = self.engine.present(self.name, self.source(), self.programs(), cflags=self.cflags(),
                                          check_mode=True)
                changed = res["changed"] or bool(self._sync_maps(links, check_mode=True))
                return {"changed": changed, "diff": {"before": before, "after": after}, "pin_dir": self.pin_dir(),
                        "notes": res.get("notes", [])}
            res = self.engine.present(self.name, self.source(), self.programs(), cflags=self.cflags(),
                                      origin="traffic collector")
            notes = list(res.get("notes", []))
            if res["changed"]:
                carried = any(re.search(r"\bflows \(\d+\)", n) for n in notes)
                self._rebase(carried)
            changed_maps = self._sync_maps(links)
            if changed_maps:
                notes.append("maps written: %s" % ", ".join(changed_maps))
            return {"changed": bool(res["changed"] or changed_maps), "action": res.get("action"),
                    "diff": {"before": before, "after": after}, "pin_dir": res["pin_dir"],
                    "programs": res.get("programs", []), "notes": notes}

    def absent(self, check_mode=False):
        """Detach and unpin; forget the scrape baseline.  A store is not touched."""
        with self.lock(check_mode):
            before = self._summary()
            state = os.path.exists(self.state_path())
            if before is None and not state and not os.path.exists(self.pin_dir()):
                return {"changed": False, "diff": {"before": None, "after": None}, "removed": [], "notes": []}
            if check_mode:
                return {"changed": True, "diff": {"before": before, "after": None}, "removed": [], "notes": []}
            res = self.engine.absent(self.name)
            removed = list(res.get("removed", []))
            if state:
                os.unlink(self.state_path())
                removed.append("removed %s" % self.state_path())
            return {"changed": True, "diff": {"before": before, "after": None}, "removed": removed,
                    "notes": res.get("notes", [])}

    def status(self):
        """None when not loaded; else the summary, programs, entries in the flow map, overflow."""
        st = self.engine.status(self.name)
        if not st:
            return None
        out = self._summary() or {}
        out.update(name=self.name, pin_dir=st["pin_dir"], programs=st["programs"], flows=None, overflow=None)
        try:
            with bpf.Map.pinned(self._map_path("flows")) as m:
                out["flows"] = len(m.keys())
            with bpf.Map.pinned(self._map_path("overflow")) as m:
                p, b = _sum_percpu(m, m.lookup(struct.pack("=I", 0)))
                out["overflow"] = {"packets": p, "bytes": b}
        except NetstackError:
            pass
        return out

    # -- scrape state ------------------------------------------------------------------
    def _load_state(self):
        try:
            with open(self.state_path()) as f:
                st = json.load(f)
            return st if isinstance(st, dict) else {}
        except (IOError, OSError, ValueError):
            return {}

    def _save_state(self, st):
        d = os.path.dirname(self.state_path())
        if not os.path.isdir(d):
            os.makedirs(d, 0o755)
        kstate.atomic_write(self.state_path(), json.dumps(st, sort_keys=True, separators=(",", ":")), 0o600)

    def _rebase(self, carried):
        """After a load or replace: keep the baseline if the counters were carried into the new
        map, else start from zero.  Either way it now belongs to the new map."""
        st = self._load_state()
        try:
            with bpf.Map.pinned(self._map_path("flows")) as m:
                map_id = m.info["id"]
        except NetstackError:
            return
        if not carried:
            st["prev"], st["overflow"] = {}, [0, 0]
        st.update(map_id=map_id, boot_id=_boot_id())
        self._save_state(st)

    def _ifname(self, ifindex):
        """The interface's name; an ifindex not known asks ``ip`` again, once per scrape."""
        if ifindex not in self.ifnames and not self._refreshed:
            self._refreshed = True
            try:
                self.ifnames.update((v["ifindex"], k) for k, v in self.links().items())
            except NetstackError:
                pass
        return self.ifnames.get(ifindex) or "if%d" % ifindex

    # -- scrape ----------------------------------------------------------------------------
    def scrape(self, now=None):
        """Rows (dicts with trafficdata.HEADER keys) of the traffic since the previous scrape."""
        with self.lock():
            return self._scrape(now)

    def _scrape(self, now):
        if not os.path.exists(self._map_path("flows")):
            raise NetstackError("the traffic collector %s is not loaded (no %s)" % (self.name, self._map_path("flows")),
                                field="name")
        ts = int(now if now is not None else time.time())
        self._refreshed = False
        with bpf.Map.pinned(self._map_path("flows")) as flows, bpf.Map.pinned(self._map_path("overflow")) as ovf:
            st = self._load_state()
            same = st.get("map_id") == flows.info["id"] and st.get("boot_id") == _boot_id()
            prev = st.get("prev", {}) if same else {}
            old_ovf = st.get("overflow", [0, 0]) if same else [0, 0]
            agg, per_if, new_prev, deleted = {}, {}, {}, 0
            for raw, value in read_all(flows).items():
                p, b = _sum_percpu(flows, value)
                hk = raw.hex()
                old = prev.get(hk)
                dp, db = (p - old[0], b - old[1]) if old and p >= old[0] and b >= old[1] else (p, b)
                idle = old[2] + 1 if old and not dp and not db else 0
                if idle >= self.idle_scrapes:
                    last = lookup_and_delete(flows, raw)
                    deleted += 1
                    if last is not None:
                        lp, lb = _sum_percpu(flows, last)
                        dp, db = (lp - p, lb - b) if lp >= p and lb >= b else (lp, lb)
                else:
                    new_prev[hk] = [p, b, idle]
                if dp or db:
                    self._add(agg, per_if, decode_key(raw), dp, db)
            op, ob = _sum_percpu(ovf, ovf.lookup(struct.pack("=I", 0)))
            dop, dob = (op - old_ovf[0], ob - old_ovf[1]) if op >= old_ovf[0] and ob >= old_ovf[1] else (op, ob)
            self._save_state({"map_id": flows.info["id"], "boot_id": _boot_id(), "prev": new_prev, "overflow": [op, ob],
                              "ts": ts, "scrapes": int(st.get("scrapes", 0)) + 1})
        rows = []
        for k in sorted(agg):
            link, direction, prefix, proto, pclass, dscp = k
            rows.append({"ts": ts, "link": link, "direction": direction, "prefix": prefix, "proto": proto,
                         "port_class": pclass, "dscp": dscp, "bytes": agg[k][1], "packets": agg[k][0]})
        with self._tlock:
            self.counts["scrapes"] += 1
            self.counts["rows"] += len(rows)
            self.counts["deleted"] += deleted
            self.counts["overflow_packets"] += dop
            self.counts["overflow_bytes"] += dob
            for k, (p, b) in per_if.items():
                t = self.traffic.setdefault(k, [0, 0])
                t[0] += p
                t[1] += b
            self.flows = len(new_prev)
            self.last_scrape = ts
        return rows

    def _add(self, agg, per_if, k, packets, nbytes):
        dev = self._ifname(k["ifindex"])
        direction = trafficdata.DIRECTIONS[k["direction"] & 1]
        row_key = ("%s:%s" % (self.link_prefix, dev), direction, prefix_text(k["family"], k["plen"], k["addr"]),
                   k["proto"], class_name(k["port_class"]), k["dscp"])
        for d, key in ((agg, row_key), (per_if, (dev, direction))):
            cur = d.setdefault(key, [0, 0])
            cur[0] += packets
            cur[1] += nbytes

    def metrics(self, prefix="netstack_traffic"):
        """Prometheus text exposition lines of what this object has scraped."""
        with self._tlock:
            traffic = dict((k, list(v)) for k, v in self.traffic.items())
            counts = dict(self.counts)
            flows = self.flows
        me = {"collector": self.name}
        lines = []
        for what, i in (("packets", 0), ("bytes", 1)):
            lines += prom.family("%s_%s_total" % (prefix, what), "counter", "L3 %s counted by the traffic collector" % what,
                                 [(dict(me, interface=dev, direction=direction), v[i])
                                  for (dev, direction), v in sorted(traffic.items())])
        for k, kind, help_text in (("scrapes", "counter", "Scrapes of the flow map"),
                                   ("rows", "counter", "Traffic records produced"),
                                   ("deleted", "counter", "Idle flow entries removed from the map"),
                                   ("overflow_packets", "counter", "Packets not counted per key: the flow map was full"),
                                   ("overflow_bytes", "counter", "Bytes not counted per key: the flow map was full")):
            lines += prom.one("%s_%s_total" % (prefix, k), kind, help_text, counts[k], me)
        lines += prom.one("%s_flows" % prefix, "gauge", "Entries in the flow map after the last scrape", flows, me)
        return lines


# ------------------------------------------------------------------ the agent's section

AGENT_DEFAULTS = {"name": "traffic", "netns": None, "prefix_v4": 24, "prefix_v6": 48, "max_flows": 16384,
                  "priority": DEFAULT_PRIORITY, "interval": 10, "retention_days": 14}


def agent_settings(sec, state_dir):
    """netstack-agent's ``traffic`` section with its defaults (store: <state_dir>/traffic/store);
    NetstackError names ``traffic.<field>``."""
    s = dict(AGENT_DEFAULTS)
    s.update((k, v) for k, v in sec.items() if v is not None)
    if not s.get("store"):
        s["store"] = os.path.join(state_dir, "traffic", "store")
    if not isinstance(s["store"], str) or not s["store"].startswith("/"):
        raise NetstackError("must be an absolute path", field="traffic.store")
    iv = s["interval"]
    if isinstance(iv, bool) or not isinstance(iv, (int, float)) or not 1 <= iv <= 3600:
        raise NetstackError("must be a number of seconds in 1..3600", field="traffic.interval")
    _int(s["retention_days"], 1, 3650, "traffic.retention_days")
    if sec.get("state") == "present" and not sec.get("interfaces"):
        raise NetstackError("required when state is present", field="traffic.interfaces")
    settings(s["name"], s.get("interfaces"), s["netns"], s["prefix_v4"], s["prefix_v6"], s["max_flows"], s["priority"],
             field_prefix="traffic.")
    return s


def agent_collector(s, state_dir):
    """The Collector of a section normalised by ``agent_settings``."""
    return Collector(name=s["name"], interfaces=s.get("interfaces"), netns=s["netns"], prefix_v4=s["prefix_v4"],
                     prefix_v6=s["prefix_v6"], max_flows=s["max_flows"], priority=s["priority"], state_dir=state_dir,
                     link_prefix=s.get("link_prefix"))


# ------------------------------------------------------------------ the store

def _day_of(ts):
    return time.strftime("%Y-%m-%d", time.gmtime(ts))


def _day_start(fname):
    m = DAY_RE.match(fname)
    if not m:
        return None
    return calendar.timegm((int(m.group(1)), int(m.group(2)), int(m.group(3)), 0, 0, 0, 0, 0, 0))


class Store(object):
    """Traffic records in daily CSV files ``<path>/YYYY-MM-DD.csv`` (UTC day of ``ts``), each
    starting with the header line ``",".join(trafficdata.HEADER)``: a native CSV flow log."""

    def __init__(self, path, retention_days=14):
        if not isinstance(path, str) or not path:
            raise NetstackError("a directory path is required", field="store")
        self.path = path
        self.retention_days = _int(retention_days, 1, 3650, "retention_days")

    def _ensure(self):
        if not os.path.isdir(self.path):
            os.makedirs(self.path, 0o755)
            os.chmod(self.path, 0o755)

    def append(self, rows):
        """Append rows to their day files; returns the number written.  Each day's rows go out
        in one write(2) on an O_APPEND file under flock, so concurrent appenders neither
        interleave lines nor put rows before the header."""
        if not rows:
            return 0
        self._ensure()
        by_day = {}
        for r in rows:
            by_day.setdefault(_day_of(int(r["ts"])), []).append(r)
        header = ",".join(trafficdata.HEADER) + "\n"
        for day, day_rows in sorted(by_day.items()):
            buf = io.StringIO()
            w = csv.writer(buf, lineterminator="\n")
            for r in day_rows:
                w.writerow([r[k] for k in trafficdata.HEADER])
            path = os.path.join(self.path, "%s.csv" % day)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)  # the header goes first even with two writers
                data = buf.getvalue()
                if os.fstat(fd).st_size == 0:
                    os.fchmod(fd, 0o644)
                    data = header + data
                raw = data.encode("utf-8")
                while raw:
                    raw = raw[os.write(fd, raw):]
            finally:
                os.close(fd)
        return len(rows)

    def files(self, since=None):
        """Day files, oldest first; with ``since`` (UNIX seconds) only those that can hold rows
        at or after it."""
        try:
            names = os.listdir(self.path)
        except OSError:
            return []
        out = []
        for n in sorted(names):
            start = _day_start(n)
            if start is None:
                continue
            if since is not None and start + 86400 <= since:
                continue
            out.append(os.path.join(self.path, n))
        return out

    def prune(self, now=None):
        """Delete day files whose whole day ended more than ``retention_days`` before ``now``;
        returns the paths removed."""
        now = time.time() if now is None else now
        limit = now - self.retention_days * 86400
        removed = []
        for p in self.files():
            if _day_start(os.path.basename(p)) + 86400 <= limit:
                try:
                    os.unlink(p)
                    removed.append(p)
                except OSError as e:
                    if e.errno != errno.ENOENT:
                        raise
        return removed

    def summary(self):
        """{path, files, rows, bytes, first_ts, last_ts, retention_days}."""
        files = self.files()
        rows, size, first, last = 0, 0, None, None
        for p in files:
            with open(p, "rb") as f:
                head = f.readline()
                n = 0
                while True:
                    block = f.read(1 << 20)
                    if not block:
                        break
                    n += block.count(b"\n")
                if n and first is None:
                    f.seek(len(head))
                    first = _ts_of(f.readline())
                if n:
                    f.seek(max(len(head), os.fstat(f.fileno()).st_size - 4096))
                    tail = [ln for ln in f.read().split(b"\n") if ln.strip()]
                    if tail:
                        last = _ts_of(tail[-1])
            rows += n
            size += os.path.getsize(p)
        return {"path": self.path, "files": len(files), "rows": rows, "bytes": size, "first_ts": first, "last_ts": last,
                "retention_days": self.retention_days}


def _ts_of(line):
    try:
        return int(line.split(b",", 1)[0])
    except ValueError:
        return None


# ------------------------------------------------------------------ the loop

def scrape_loop(collector, store, interval, duration=None, stop_event=None, on_error=None, on_scrape=None):
    """Scrape ``collector`` every ``interval`` seconds into ``store`` (and prune it) until
    ``duration`` seconds have passed or ``stop_event`` is set; either way one last scrape
    at the end, so nothing counted is left behind.

    ``on_error(exc)``: called for a failed scrape (NetstackError, OSError), which is then
    skipped; without it the error is raised.  ``on_scrape(rows)``: after each stored scrape.
    Returns {"scrapes", "rows", "packets", "bytes", "errors"}."""
    stop = stop_event or threading.Event()
    interval = float(interval)
    start = time.time()
    end = start + float(duration) if duration is not None else None
    out = {"scrapes": 0, "rows": 0, "packets": 0, "bytes": 0, "errors": 0}
    next_t = start + interval
    while True:
        now = time.time()
        wait = next_t - now if end is None else min(next_t, end) - now
        stopped = stop.wait(max(0.0, wait))
        last = stopped or (end is not None and time.time() >= end - 1e-3)
        try:
            rows = collector.scrape()
            store.append(rows)
            store.prune()
            out["scrapes"] += 1
            out["rows"] += len(rows)
            out["packets"] += sum(r["packets"] for r in rows)
            out["bytes"] += sum(r["bytes"] for r in rows)
            if on_scrape:
                on_scrape(rows)
        except (NetstackError, OSError) as e:
            out["errors"] += 1
            if on_error is None:
                raise
            on_error(e)
        if last:
            return out
        next_t += interval
        if next_t < time.time():  # fell behind (a slow scrape, a suspended host): no burst of catch-up scrapes
            next_t = time.time() + interval
