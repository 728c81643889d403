# -*- coding: utf-8 -*-
# Copyright: netstack.tuning contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The transparent same-host path (capability 4): policy, encoding, and the pinned maps of
bpf/shm_path.bpf.c.

A policy says which same-host TCP connections take the path:

    {"policies": [{"name": "redis", "ports": 6379},
                  {"name": "web", "ports": "8000-8099", "max_queue": 4194304}],
     "local_addresses": ["127.0.0.0/8", "::1/128"],
     "cgroup": "/",
     "capture": "segments"}

A connection is captured when both of its addresses are in ``local_addresses`` (this host's
addresses: loopback by default) and its service port (the port the server listens on) is in a
policy's ``ports``; the first
matching policy counts it.  ``cgroup`` (relative to the cgroup v2 root) scopes the sock_ops
hook: only sockets of processes in that cgroup subtree are seen.

``capture`` says when a matching connection joins the path.  "segments" (the default): once
each direction has carried ``capture_segments`` data segments (default 8), none larger than
``capture_max_segment`` bytes (default 32 KiB); a connection with a larger segment stays
plain TCP for its whole life, because a socket on the path sends large messages slower than
TCP does.  A tc program on this namespace's ``lo`` (clsact ingress, pref ``TC_PRIORITY``)
watches the segments; connections in other network namespaces stay on TCP.  "handshake":
every matching connection joins at establishment (fastest start, slower on bulk).

The program keeps two policy sets (double buffer): a change fills the inactive set and
flips, so a new connection sees the old or the new policy, never a mix.  Connections
already on the path keep it until they close (taking them off would drop the bytes queued
for the reader); connections on TCP stay on TCP.

``max_queue`` bounds what one direction of a connection may hold queued at its reader on
the path (bytes, fixed; default: the reader's SO_RCVBUF, grown as TCP's receive autotuning
grows it for a reader that reads, up to its tcp_rmem[2]).  Past it the direction goes to
TCP, whose flow control stops the sender, and comes back once TCP has drained.  The program
reads the reader's queue at offsets of the running kernel (``kernel_cflags``, from BTF).

Encoding (must match shm_path.bpf.c):
    policy  <IHHI>    flags, port_lo, port_hi, max_queue
    prefix  <16s16s>  addr, mask (network order, IPv4 as ::ffff:a.b.c.d)
    config  <IIIIII>  active_set, npolicies[2], nprefixes[2], flags
    stats   <11Q>     captured, capture_errors, shm_conns, tcp_conns, shm_msgs, shm_bytes,
                      tcp_msgs, tcp_bytes, overflows, resumes, grows   (per CPU)
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ipaddress
import json
import os
import re
import socket
import struct

from ansible_collections.netstack.tuning.plugins.module_utils.core.common import NetstackError, collection_file, schema_error, schema_field
from ansible_collections.netstack.tuning.plugins.module_utils.core import metrics as prom
from ansible_collections.netstack.tuning.plugins.module_utils.bpf import program as bpf, btf
from ansible_collections.netstack.tuning.plugins.module_utils.tcp_tuning import policy as tcppolicy

MAX_POLICIES = 16
MAX_PREFIXES = 16
POLICY_FMT = "<IHHI"
POLICY_SIZE = struct.calcsize(POLICY_FMT)
PREFIX_FMT = "<16s16s"
CFG_FMT = "<IIIIIIIIQ"
STATS_FMT = "<12Q"
STATS_SIZE = struct.calcsize(STATS_FMT)
STATS_FIELDS = ("captured", "capture_errors", "shm_conns", "tcp_conns", "shm_msgs", "shm_bytes",
                "tcp_msgs", "tcp_bytes", "overflows", "resumes", "grows", "large_conns")
P_VALID = 1
C_ENABLED = 1
C_SEGMENTS = 2
CAPTURE_MODES = ("segments", "handshake")
CAPTURE_SEGMENTS, CAPTURE_MAX_SEGMENT = 8, 32768
TC_PRIORITY = 100       # tc pref of shm_tc on lo's clsact ingress
SOURCE_NAME = "shm_path.bpf.c"
MAPS = ("socks", "policies", "prefixes", "cfg", "stats")
DEFAULT_LOCAL = ["127.0.0.0/8", "::1/128"]
MIN_QUEUE, MAX_QUEUE = 16384, 1 << 30

_PORTS = {"oneOf": [{"type": "integer", "minimum": 1, "maximum": 65535},
                    {"type": "string", "pattern": r"^\s*\d{1,5}\s*(-\s*\d{1,5}\s*)?$"}]}
SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "required": ["policies"],
    "properties": {
        "policies": {
            "type": "array",
            "maxItems": MAX_POLICIES,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name", "ports"],
                "properties": {
                    "name": {"type": "string", "pattern": r"^[A-Za-z0-9_.:-]{1,48}$"},
                    "ports": _PORTS,
                    "max_queue": {"type": "integer", "minimum": MIN_QUEUE, "maximum": MAX_QUEUE},
                },
            },
        },
        "local_addresses": {"type": "array", "minItems": 1, "maxItems": MAX_PREFIXES,
                            "items": {"type": "string", "minLength": 2, "maxLength": 64}},
        "cgroup": {"type": "string", "maxLength": 4096},
        "capture": {"enum": list(CAPTURE_MODES)},
        "capture_segments": {"type": "integer", "minimum": 1, "maximum": 64},
        "capture_max_segment": {"type": "integer", "minimum": 1024, "maximum": 1 << 20},
    },
}


def default_source():
    """Path of bpf/shm_path.bpf.c next to this engine (a collection checkout or the
    agent's installed copy), or None."""
    cand = collection_file("bpf", SOURCE_NAME)
    return cand if os.path.isfile(cand) else None


# ------------------------------------------------------------------ validation

def ports(value, field):
    """(lo, hi) of a port or 'lo-hi' range; 0 is not a service port."""
    if value is None:
        raise NetstackError("a port or 'lo-hi' range is required", field=field)
    lo, hi = tcppolicy._ports(value, field)
    if lo < 1:
        raise NetstackError("port range %s-%s is out of order or outside 1-65535" % (lo, hi), field=field)
    return lo, hi


def _sub(field, key):
    return "%s.%s" % (field, key) if field else key


def validate(config, field="shm"):
    """Validate a policy (its JSON Schema, plus the checks a
    schema cannot express); returns it normalised.  NetstackError names the field."""
    if not isinstance(config, dict):
        raise NetstackError("must be a dict with policies, local_addresses, cgroup", field=field)
    err = schema_error(SCHEMA, config)
    if err:
        raise NetstackError(err.message, field=schema_field(err, field))
    pols = config.get("policies")
    if not isinstance(pols, list) or len(pols) > MAX_POLICIES:
        raise NetstackError("a list of at most %d policies is required" % MAX_POLICIES, field=_sub(field, "policies"))
    out, names = [], set()
    for i, p in enumerate(pols):
        where = _sub(field, "policies[%d]" % i)
        if not isinstance(p, dict) or not isinstance(p.get("name"), str) or \
                not re.match(r"^[A-Za-z0-9_.:-]{1,48}$", p["name"]):
            raise NetstackError("each policy is a dict with a name of 1-48 letters, digits, '_.:-'",
                                field=where + ".name")
        if p["name"] in names:
            raise NetstackError("duplicate policy name %s" % p["name"], field=where + ".name")
        names.add(p["name"])
        unknown = set(p) - {"name", "ports", "max_queue"}
        if unknown:
            raise NetstackError("unknown key(s) %s" % ", ".join(sorted(unknown)), field=where)
        if "ports" not in p:
            raise NetstackError("required", field=where + ".ports")
        lo, hi = ports(p["ports"], where + ".ports")
        mq = p.get("max_queue")
        if mq is not None and (isinstance(mq, bool) or not isinstance(mq, int) or not MIN_QUEUE <= mq <= MAX_QUEUE):
            raise NetstackError("bytes from %d to %d (omit it for the reader's SO_RCVBUF)" % (MIN_QUEUE, MAX_QUEUE),
                                field=where + ".max_queue")
        out.append({"name": p["name"], "ports": "%d-%d" % (lo, hi) if lo != hi else str(lo), "lo": lo, "hi": hi,
                    "max_queue": mq or 0})
    addrs = config.get("local_addresses") or list(DEFAULT_LOCAL)
    if not isinstance(addrs, list) or len(addrs) > MAX_PREFIXES:
        raise NetstackError("a list of at most %d prefixes is required" % MAX_PREFIXES,
                            field=_sub(field, "local_addresses"))
    nets = []
    for i, a in enumerate(addrs):
        try:
            net = ipaddress.ip_network(str(a).strip(), strict=False)
        except ValueError as e:
            raise NetstackError("not an address or prefix: %s" % e, field=_sub(field, "local_addresses[%d]" % i))
        if net.prefixlen == 0:
            raise NetstackError("%s matches every address, so connections to other hosts would be captured; "
                                "list this host's addresses" % net, field=_sub(field, "local_addresses[%d]" % i))
        if str(net) not in nets:
            nets.append(str(net))
    cg = config.get("cgroup") or "/"
    if not isinstance(cg, str) or "\0" in cg or "/../" in cg + "/" or cg.endswith("/.."):
        raise NetstackError("a cgroup v2 path (relative to the cgroup v2 root) is required", field=_sub(field, "cgroup"))
    mode = config.get("capture") or "segments"
    segs = config.get("capture_segments") or CAPTURE_SEGMENTS
    big = config.get("capture_max_segment") or CAPTURE_MAX_SEGMENT
    if mode == "handshake" and ("capture_segments" in config or "capture_max_segment" in config):
        raise NetstackError("capture_segments and capture_max_segment apply to capture: segments only",
                            field=_sub(field, "capture"))
    return {"policies": out, "local_addresses": nets, "cgroup": "/" + cg.strip("/") if cg.strip("/") else "/",
            "capture": mode, "capture_segments": segs, "capture_max_segment": big}


def public(norm):
    """The normalised policy as a user writes it (for diffs and return values)."""
    out = {"policies": [_public_policy(p["name"], p) for p in norm["policies"]],
           "local_addresses": list(norm["local_addresses"]), "cgroup": norm["cgroup"]}
    out.update(_public_capture(norm["capture"], norm["capture_segments"], norm["capture_max_segment"]))
    return out


def _public_capture(mode, segs, big):
    out = {"capture": mode}
    if mode == "segments":
        out.update(capture_segments=segs, capture_max_segment=big)
    return out


def _public_policy(name, p):
    out = {"name": name, "ports": p["ports"]}
    if p.get("max_queue"):
        out["max_queue"] = p["max_queue"]
    return out


# ------------------------------------------------------------------ the running kernel

_REQUIRED = (("OFF_SK_USER_DATA", "sock", "sk_user_data"),
             ("OFF_SK_COOKIE", "sock", "__sk_common.skc_cookie"),
             ("OFF_SK_RCVBUF", "sock", "sk_rcvbuf"),
             ("OFF_PSOCK_SK", "sk_psock", "sk"),
             ("OFF_PSOCK_INGRESS_MSG", "sk_psock", "ingress_msg"),
             ("OFF_TP_WRITE_SEQ", "tcp_sock", "write_seq"),
             ("OFF_TP_SND_UNA", "tcp_sock", "snd_una"),
             ("OFF_TP_RCV_NXT", "tcp_sock", "rcv_nxt"),
             ("OFF_TP_COPIED_SEQ", "tcp_sock", "copied_seq"))


def kernel_layout(vmlinux=None):
    """Offsets of the kernel fields the program reads, from the running kernel's BTF:
    {"defines": {macro: offset}, "queue": "msg_tot_len" | "list"}.  "msg_tot_len" (kernels
    that count a psock's queued bytes) bounds exactly; "list" bounds the bytes sent since
    the reader's queue was last seen empty (older kernels, e.g. 6.1)."""
    b = vmlinux or btf.vmlinux()
    defines = {}
    for macro, struct_name, member in _REQUIRED:
        off = b.offset(struct_name, member)
        if off is None:
            raise NetstackError("this kernel's struct %s has no %s, which the same-host path reads to bound "
                                "each connection's queue" % (struct_name, member), field="btf")
        defines[macro] = off
    tot = b.offset("sk_psock", "msg_tot_len")
    if tot is not None:
        defines["OFF_PSOCK_MSG_TOT_LEN"] = tot
    grow = _optional(b, _GROWTH)
    defines.update(grow)
    return {"defines": defines, "queue": "msg_tot_len" if tot is not None else "list", "growth": bool(grow)}


# What the default bound's growth reads: the reader's namespace's tcp_rmem[2] and whether it
# set SO_RCVBUF itself.  Without all three the bound stays at SO_RCVBUF.
_GROWTH = (("OFF_SK_NET", "sock", "__sk_common.skc_net"),
           ("OFF_NET_TCP_RMEM", "net", "ipv4.sysctl_tcp_rmem"),
           ("OFF_SK_USERLOCKS", "sock", "sk_userlocks"))


def _optional(b, fields):
    out = {}
    for macro, struct_name, member in fields:
        try:
            off = b.offset(struct_name, member)
        except NetstackError:       # a bit field in this kernel
            off = None
        if off is None:
            return {}
        out[macro] = off
    return out


def kernel_cflags(layout=None):
    layout = layout or kernel_layout()
    return ["-D%s=%d" % (k, v) for k, v in sorted(layout["defines"].items())]


# ------------------------------------------------------------------ encoding

def encode_prefix(net):
    return struct.pack(PREFIX_FMT, *tcppolicy.mapped_prefix(ipaddress.ip_network(net, strict=False)))


def decode_prefix(raw):
    return tcppolicy.prefix_text(*struct.unpack(PREFIX_FMT, raw[:32]))


def encode_policy(p):
    return struct.pack(POLICY_FMT, P_VALID, p["lo"], p["hi"], p.get("max_queue") or 0)


def decode_policy(raw):
    flags, lo, hi, mq = struct.unpack(POLICY_FMT, raw[:POLICY_SIZE])
    return {"valid": bool(flags & P_VALID), "ports": "%d-%d" % (lo, hi) if lo != hi else str(lo), "lo": lo, "hi": hi,
            "max_queue": mq}


# ------------------------------------------------------------------ the maps

SO_NETNS_COOKIE = 71


def netns_cookie():
    """This process's network namespace cookie (the namespace whose lo runs shm_tc), or 0
    where the kernel cannot tell it (before 5.14): then every namespace's connections are
    watched, and only this one's lo decides."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        return struct.unpack("<Q", s.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE, 8))[0]
    except OSError:
        return 0
    finally:
        s.close()


def _padded(raw, fmt):
    """A map value cut or zero-padded to ``fmt``: a program pinned by an older version of this
    engine has shorter values (fewer fields), read until `present` replaces it."""
    size = struct.calcsize(fmt)
    return bytes(raw[:size]).ljust(size, b"\0")


class Maps(bpf.PinnedMaps):
    """The pinned maps of one loaded shm_redirect program."""

    NAMES = MAPS

    def config(self):
        raw = _padded(self.maps["cfg"].lookup(self._key(0)), CFG_FMT)
        active, p0, p1, x0, x1, flags, segs, big, netns = struct.unpack(CFG_FMT, raw)
        return {"active_set": active & 1, "npolicies": [p0, p1], "nprefixes": [x0, x1], "flags": flags,
                "capture": "segments" if flags & C_SEGMENTS else "handshake", "capture_segments": segs,
                "capture_max_segment": big, "tc_netns": netns}

    def active(self):
        """(config, [policy dicts], [prefix strings]) of the active set, read from the kernel."""
        c = self.config()
        s = c["active_set"]
        n = min(c["npolicies"][s], MAX_POLICIES)
        k = min(c["nprefixes"][s], MAX_PREFIXES)
        pols = [decode_policy(self.maps["policies"].lookup(self._key(s * MAX_POLICIES + i))) for i in range(n)]
        nets = [decode_prefix(self.maps["prefixes"].lookup(self._key(s * MAX_PREFIXES + i))) for i in range(k)]
        return c, pols, nets

    def stats(self):
        """Per slot (0..MAX_POLICIES, the last: no policy) dicts of counters summed over CPUs."""
        sm = self.maps["stats"]
        out = []
        for i in range(MAX_POLICIES + 1):
            tot = [0] * len(STATS_FIELDS)
            for v in sm.per_cpu(sm.lookup(self._key(i))):
                for j, x in enumerate(struct.unpack(STATS_FMT, _padded(v, STATS_FMT))):
                    tot[j] += x
            out.append(dict(zip(STATS_FIELDS, tot)))
        return out

    def reset_stats(self, slot):
        sm = self.maps["stats"]
        ncpu = len(sm.per_cpu(sm.lookup(self._key(slot))))
        sm.update(self._key(slot), b"\0" * (STATS_SIZE * ncpu))

    def connections(self):
        """Sockets now in the sockhash (each captured connection has two)."""
        return sum(1 for key in self.maps["socks"].keys())

    def watched(self):
        """Sockets that capture: segments is watching or has decided on, while they are open
        (0 where the program has no such map)."""
        path = os.path.join(self.pin_dir, "maps", "watch")
        if not os.path.exists(path):
            return 0
        with bpf.Map.pinned(path) as m:
            return sum(1 for key in m.keys())

    def write(self, norm, enabled=True):
        """Publish a policy: fill the inactive set, then flip."""
        c = self.config()
        new = 1 - c["active_set"]
        for i in range(MAX_POLICIES):
            raw = encode_policy(norm["policies"][i]) if i < len(norm["policies"]) else b"\0" * POLICY_SIZE
            self.maps["policies"].update(self._key(new * MAX_POLICIES + i), raw)
        for i in range(MAX_PREFIXES):
            raw = encode_prefix(norm["local_addresses"][i]) if i < len(norm["local_addresses"]) else b"\0" * 32
            self.maps["prefixes"].update(self._key(new * MAX_PREFIXES + i), raw)
        np_, nx = list(c["npolicies"]), list(c["nprefixes"])
        np_[new] = len(norm["policies"])
        nx[new] = len(norm["local_addresses"])
        flags = (C_ENABLED if enabled else 0) | (C_SEGMENTS if norm["capture"] == "segments" else 0)
        segs, big = norm["capture_segments"], norm["capture_max_segment"]
        # Counts of the still inactive set first, then the flip: a reader sees either set whole.
        self.maps["cfg"].update(self._key(0), struct.pack(CFG_FMT, c["active_set"], np_[0], np_[1], nx[0], nx[1],
                                                          c["flags"], c["capture_segments"], c["capture_max_segment"],
                                                          c["tc_netns"]))
        self.maps["cfg"].update(self._key(0), struct.pack(CFG_FMT, new, np_[0], np_[1], nx[0], nx[1], flags, segs, big,
                                                          netns_cookie()))
        return new


# ------------------------------------------------------------------ the path on a host

TC_PROGRAM = {"function": "shm_tc", "type": "sched_cls", "interface": "lo", "direction": "ingress",
              "netns": None, "priority": TC_PRIORITY}


class ShmPath(object):
    """Load, configure, inspect and remove the path on this host.

    The programs are loaded through the bpf engine (pins under <pin_root>/<name>, records
    under <state_dir>/bpf); the policy's names live in <state_dir>/shm/<name>.json, the
    policy itself only in the kernel maps (what is compared is what the kernel holds).
    """

    def __init__(self, name="shm", state_dir="/var/lib/netstack", pin_root=None):
        if not isinstance(name, str) or not re.match(r"\A[A-Za-z0-9_-]{1,40}\Z", name):
            # as the agent's schema says; the name becomes a pin directory and lock file name
            raise NetstackError("must be 1-40 letters, digits, '_' or '-', got %r" % (name,), field="name")
        self.name = name
        self.state_dir = state_dir
        self.engine = bpf.Engine(state_dir=state_dir, pin_root=pin_root or bpf.PIN_ROOT)

    # -- records -------------------------------------------------------------
    def _names_path(self):
        return os.path.join(self.state_dir, "shm", "%s.json" % self.name)

    def _names(self):
        try:
            with open(self._names_path()) as f:
                return json.load(f).get("names", [])
        except (IOError, OSError, ValueError):
            return []

    def _write_names(self, names):
        d = os.path.dirname(self._names_path())
        if not os.path.isdir(d):
            os.makedirs(d, 0o700)
        tmp = self._names_path() + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"names": names}, f)
        os.rename(tmp, self._names_path())

    def programs(self, cgroup, capture="segments"):
        root = bpf.cgroup2_root()
        if root is None:
            raise NetstackError("no cgroup v2 hierarchy is mounted on this host", field="cgroup")
        path = root if cgroup in ("", "/") else os.path.join(root, cgroup.strip("/"))
        if not os.path.isdir(path):
            raise NetstackError("cgroup %s does not exist (%s)" % (cgroup, path), field="cgroup")
        progs = [{"function": "shm_sockops", "type": "sock_ops", "cgroup": path},
                 {"function": "shm_msg", "type": "sk_msg", "map": "socks"}]
        if capture == "segments":
            progs.append(TC_PROGRAM)
        return progs

    def _check_tc(self, progs):
        """Refuse to replace another program's tc filter on lo at our priority."""
        if TC_PROGRAM not in progs:
            return
        ours = set(p.get("id") for p in (self.engine.record(self.name) or {}).get("programs", []))
        ids = bpf.tc_filter_prog_ids(TC_PROGRAM)
        if ids and not set(ids) & ours:
            raise NetstackError("tc lo ingress pref %d already holds another program (id %s); capture: segments "
                                "needs it (capture: handshake does not use tc)" % (TC_PRIORITY, ids[0]),
                                field="capture")

    # -- reading -------------------------------------------------------------
    def state(self):
        """What is in place: None, or {programs, policy (public form, from the kernel),
        loaded, attached}."""
        st = self.engine.status(self.name)
        if not st:
            return None
        out = {"pin_dir": st["pin_dir"], "programs": st["programs"],
               "attached": all(p["pinned"] and p["attached"] for p in st["programs"]),
               "cgroup": None, "policy": None, "enabled": False}
        ops = [r for r in (self.engine.record(self.name) or {}).get("programs", []) if r["type"] == "sock_ops"]
        if ops:
            root = bpf.cgroup2_root() or ""
            rel = os.path.relpath(ops[0]["cgroup"], root) if root else ops[0]["cgroup"]
            out["cgroup"] = "/" if rel == "." else "/" + rel.strip("/")
        try:
            with Maps(st["pin_dir"]) as m:
                c, pols, nets = m.active()
        except NetstackError:
            return out
        names = self._names()
        out["enabled"] = bool(c["flags"] & C_ENABLED)
        out["policy"] = {"policies": [_public_policy(names[i] if i < len(names) else "slot%d" % i, p)
                                      for i, p in enumerate(pols)],
                         "local_addresses": nets, "cgroup": out["cgroup"]}
        out["policy"].update(_public_capture(c["capture"], c["capture_segments"], c["capture_max_segment"]))
        return out

    def counters(self):
        """Counters per policy name, totals, and the number of sockets on the path now."""
        st = self.engine.status(self.name)
        if not st:
            return None
        try:
            with Maps(st["pin_dir"]) as m:
                slots = m.stats()
                sockets = m.connections()
                watched = m.watched()
        except NetstackError:
            return None
        names = self._names()
        per = {}
        for i, s in enumerate(slots[:MAX_POLICIES]):
            if i < len(names) or any(s.values()):
                per[names[i] if i < len(names) else "slot%d" % i] = s
        total = dict((k, sum(s[k] for s in slots)) for k in STATS_FIELDS)
        return {"policies": per, "total": total, "sockets": sockets, "watched": watched}

    # -- changing ------------------------------------------------------------
    def present(self, config, source, check_mode=False, origin=None):
        norm = validate(config)
        # the module and the agent may both apply
        with self.engine.lock("shm-" + self.name, check_mode):
            return self._present(norm, source, check_mode, origin)

    def _present(self, norm, source, check_mode, origin):
        progs = self.programs(norm["cgroup"], norm["capture"])  # checks the cgroup before anything is loaded
        self._check_tc(progs)
        if not source:
            raise NetstackError("the BPF source %s was not found" % SOURCE_NAME, field="source")
        cflags = kernel_cflags()  # and the kernel's layout (BTF), also in check mode
        cur = self.state()
        before = {"policy": cur["policy"], "attached": cur["attached"]} if cur else None
        want = public(norm)
        after = {"policy": want, "attached": True}
        notes = []
        if before == after and cur.get("enabled"):
            return {"changed": False, "before": before, "after": after, "notes": notes, "pin_dir": cur["pin_dir"]}
        if check_mode:
            return {"changed": True, "before": before, "after": after, "notes": notes,
                    "pin_dir": self.engine.pin_dir(self.name)}
        res = self.engine.present(self.name, source, progs, cflags=cflags, origin=origin or "shm")
        notes.extend(res.get("notes", []))
        if res["changed"] and cur and cur.get("attached"):
            notes.append("programs replaced: connections already on the path keep the old program "
                         "until they close; new connections use the new one")
        old_names = self._names()
        with Maps(res["pin_dir"]) as m:
            # Counters follow policy names: a slot that now holds another policy starts at zero.
            for i in range(MAX_POLICIES):
                new_name = norm["policies"][i]["name"] if i < len(norm["policies"]) else None
                old_name = old_names[i] if i < len(old_names) else None
                if new_name != old_name:
                    m.reset_stats(i)
            self._write_names([p["name"] for p in norm["policies"]])
            m.write(norm, enabled=True)
        self.engine.event(self.name, "policy", "shm policy set: %s" % json.dumps(want, sort_keys=True))
        return {"changed": True, "before": before, "after": after, "notes": notes, "pin_dir": res["pin_dir"]}

    def absent(self, check_mode=False):
        """Detach and unpin.  Connections already on the path keep working until they close:
        each captured socket holds its own reference to the program (and through it the
        map), the kernel frees both when the last such socket closes."""
        with self.engine.lock("shm-" + self.name, check_mode):
            return self._absent(check_mode)

    def _absent(self, check_mode):
        cur = self.state()
        if not cur and not os.path.exists(self._names_path()):
            return {"changed": False, "before": None, "after": None, "removed": [], "draining": 0}
        before = {"policy": cur["policy"], "attached": cur["attached"]} if cur else None
        draining = (self.counters() or {}).get("sockets", 0)
        if check_mode:
            return {"changed": True, "before": before, "after": None, "removed": [], "draining": draining}
        res = self.engine.absent(self.name)
        try:
            os.unlink(self._names_path())
        except OSError:
            pass
        return {"changed": True, "before": before, "after": None, "removed": res.get("removed", []),
                "draining": draining, "notes": res.get("notes", [])}


def metrics(counters, prefix="netstack_shm"):
    """Prometheus text exposition lines for ``ShmPath.counters()``."""
    help_ = {
        "captured": ("counter", "Sockets added to the same-host path"),
        "capture_errors": ("counter", "Sockets that matched a policy but could not be added"),
        "shm_conns": ("counter", "Connection directions that took the same-host path"),
        "tcp_conns": ("counter", "Connection directions of captured sockets that stayed on TCP"),
        "shm_msgs": ("counter", "Messages moved socket-to-socket"),
        "shm_bytes": ("counter", "Payload bytes moved socket-to-socket"),
        "tcp_msgs": ("counter", "Messages of captured sockets sent over TCP"),
        "tcp_bytes": ("counter", "Payload bytes of captured sockets sent over TCP"),
        "overflows": ("counter", "Connection directions that left the path for TCP: the reader's queue "
                                 "reached max_queue"),
        "resumes": ("counter", "Connection directions that came onto the path after TCP had drained"),
        "grows": ("counter", "Times a reading reader's default queue bound doubled (receive autotuning)"),
        "large_conns": ("counter", "Connections kept on TCP for good: a data segment above capture_max_segment "
                                   "(capture: segments)"),
    }
    if not counters:
        return []
    lines = []
    for k in STATS_FIELDS:
        kind, text = help_[k]
        lines += prom.family("%s_%s_total" % (prefix, k), kind, text,
                             [({"policy": pol}, s[k]) for pol, s in sorted(counters["policies"].items())])
    lines += prom.one("%s_sockets" % prefix, "gauge", "Sockets on the same-host path now", counters["sockets"])
    return lines + prom.one("%s_watched" % prefix, "gauge", "Open sockets capture: segments watches or has decided "
                            "on", counters.get("watched", 0))
