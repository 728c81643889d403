# -*- coding: utf-8 -*-
# Copyright: netstack.tuning contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""BPF programs: compile with bcc, load, attach, pin, replace and remove, exactly.

Two layers:

* the ``bpf(2)`` syscall through ctypes (pin/get, attach/detach/query, object info, map
  elements) on top of ``core/syscall.py``'s ``sys_bpf``, the engine's one bpf(2) layer.
  Standard library only, so ``tcp_policy`` and tests can read and write pinned maps without
  bcc;
* ``Engine``: the declarative resource behind the ``bpf_program`` module.  bcc is imported
  only inside the function that compiles (it exists only for the distribution's Python).

Layout on a host::

    /sys/fs/bpf/netstack/<name>/progs/<function>   pinned programs
    /sys/fs/bpf/netstack/<name>/maps/<map>         pinned maps
    <state_dir>/bpf/<name>.json                    what was made (absent removes exactly that)
    <state_dir>/bpf/bpffs.json                     present when netstack mounted bpffs
    <state_dir>/bpf/events.jsonl                   every load/attach/pin/detach, with why

bpffs refuses '.' in names, so program set names, functions and maps have none.

Identity is the program tag (the kernel's hash of the instructions, map fds zeroed):
re-applying the same source finds the pinned program attached and changes nothing.
A changed source is loaded, pinned under a staging directory, maps with the same name and
shape are copied over (rules survive), and each attachment is swapped atomically
(``BPF_F_REPLACE`` on cgroups, a tc filter replace over rtnetlink, re-attach on sockmaps), so
there is no moment without a program.  Any failure before the swap leaves the old program as
it was.

``sched_cls`` programs are attached with rtnetlink through pyroute2 (imported only there; the
distribution's python3-pyroute2, 0.7 or later): a clsact qdisc, then a direct-action bpf filter
at the program's priority, handle 1, given the program's fd.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import ctypes
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import struct
import tempfile
import time

from ansible_collections.netstack.tuning.plugins.module_utils.core import nsutil
from ansible_collections.netstack.tuning.plugins.module_utils.core.common import NetstackError
from ansible_collections.netstack.tuning.plugins.module_utils.core import kstate
from ansible_collections.netstack.tuning.plugins.module_utils.core.syscall import sys_bpf

BPFFS = "/sys/fs/bpf"
PIN_ROOT = BPFFS + "/netstack"
CGROUP2_CANDIDATES = ("/sys/fs/cgroup/unified", "/sys/fs/cgroup")
NAME_RE = re.compile(r"\A(?!__)[A-Za-z0-9_][A-Za-z0-9_-]{0,62}\Z")  # bpffs refuses '.' in names
FUNC_RE = re.compile(r"\A[A-Za-z_][A-Za-z0-9_]{0,63}\Z")
LOG_LINES = 60

# bpf(2) commands
MAP_LOOKUP_ELEM, MAP_UPDATE_ELEM, MAP_DELETE_ELEM, MAP_GET_NEXT_KEY = 1, 2, 3, 4
OBJ_PIN, OBJ_GET, PROG_ATTACH, PROG_DETACH = 6, 7, 8, 9
PROG_GET_FD_BY_ID, MAP_GET_FD_BY_ID, OBJ_GET_INFO_BY_FD, PROG_QUERY = 13, 14, 15, 16
F_ALLOW_MULTI, F_REPLACE = 2, 4

PROG_TYPES = {  # module name -> (kernel prog type, bcc load attach type or -1)
    "sock_ops": 13, "sk_msg": 16, "sock_addr": 18, "sched_cls": 3,
}
ATTACH_TYPES = {
    "sock_ops": 3, "sk_msg_verdict": 7,
    "bind4": 8, "bind6": 9, "connect4": 10, "connect6": 11, "sendmsg4": 14, "sendmsg6": 15,
    "recvmsg4": 19, "recvmsg6": 20, "getpeername4": 29, "getpeername6": 30,
    "getsockname4": 31, "getsockname6": 32,
}
MAP_TYPE_NAMES = {1: "hash", 2: "array", 5: "percpu_hash", 6: "percpu_array", 9: "lru_hash",
                  10: "lru_percpu_hash", 11: "lpm_trie", 15: "sockmap", 18: "sockhash", 24: "sk_storage"}
COPYABLE_MAPS = (1, 2, 5, 6, 9, 10, 11)
PERCPU_MAPS = (5, 6, 10)


# ------------------------------------------------------------------ bpf(2) commands
# sys_bpf (core/syscall.py) is the one bpf(2) call; it stays importable from here as bpf.sys_bpf.

_libc = nsutil.libc  # the one libc handle of the engine (errno kept, syscall returns long)


def _attr(fmt, *vals):
    raw = struct.pack(fmt, *vals)
    buf = ctypes.create_string_buffer(max(len(raw), 8) + 8)
    ctypes.memmove(buf, raw, len(raw))
    return buf


def _addr(buf):
    return ctypes.addressof(buf)


def obj_pin(fd, path):
    p = ctypes.create_string_buffer(path.encode())
    sys_bpf(OBJ_PIN, _attr("=QII", _addr(p), fd, 0))


def obj_get(path):
    p = ctypes.create_string_buffer(path.encode())
    return sys_bpf(OBJ_GET, _attr("=QII", _addr(p), 0, 0))


def prog_attach(prog_fd, target_fd, attach_type, flags=0, replace_fd=0):
    sys_bpf(PROG_ATTACH, _attr("=IIIII", target_fd, prog_fd, attach_type, flags, replace_fd))


def prog_detach(prog_fd, target_fd, attach_type):
    sys_bpf(PROG_DETACH, _attr("=IIIII", target_fd, prog_fd, attach_type, 0, 0))


def prog_fd_by_id(prog_id):
    return sys_bpf(PROG_GET_FD_BY_ID, _attr("=III", prog_id, 0, 0))


def map_fd_by_id(map_id):
    return sys_bpf(MAP_GET_FD_BY_ID, _attr("=III", map_id, 0, 0))


def prog_query(target_fd, attach_type):
    """Ids of the programs attached to a cgroup (or map) for one attach type."""
    ids = (ctypes.c_uint32 * 64)()
    attr = _attr("=IIIIQI", target_fd, attach_type, 0, 0, _addr(ids), 64)
    sys_bpf(PROG_QUERY, attr)
    cnt = struct.unpack_from("=I", attr.raw, 24)[0]
    return [ids[i] for i in range(min(cnt, 64))]


def prog_info(fd):
    """{id, type, tag, name, map_ids} of a program fd."""
    map_ids = (ctypes.c_uint32 * 64)()
    info = ctypes.create_string_buffer(80)
    struct.pack_into("=IQ", info, 52, 64, _addr(map_ids))
    sys_bpf(OBJ_GET_INFO_BY_FD, _attr("=IIQ", fd, 80, _addr(info)))
    ptype, pid = struct.unpack_from("=II", info.raw, 0)
    tag = info.raw[8:16].hex()
    nr_maps = struct.unpack_from("=I", info.raw, 52)[0]
    name = info.raw[64:80].split(b"\0", 1)[0].decode("ascii", "replace")
    return {"id": pid, "type": ptype, "tag": tag, "name": name,
            "map_ids": [map_ids[i] for i in range(min(nr_maps, 64))]}


def map_info(fd):
    info = ctypes.create_string_buffer(40)
    sys_bpf(OBJ_GET_INFO_BY_FD, _attr("=IIQ", fd, 40, _addr(info)))
    mtype, mid, ks, vs, maxe, flags = struct.unpack_from("=IIIIII", info.raw, 0)
    name = info.raw[24:40].split(b"\0", 1)[0].decode("ascii", "replace")
    return {"type": mtype, "id": mid, "key_size": ks, "value_size": vs, "max_entries": maxe,
            "flags": flags, "name": name, "type_name": MAP_TYPE_NAMES.get(mtype, str(mtype))}


def possible_cpus():
    text = open("/sys/devices/system/cpu/possible").read().strip()
    n = 0
    for part in text.split(","):
        lo, _s, hi = part.partition("-")
        n = max(n, int(hi or lo) + 1)
    return n


class Map(object):
    """A BPF map by fd (from a pin, an id or bcc) with byte-level element access.

    Per-CPU maps take and return ``value_size * possible CPUs`` bytes (each CPU's value
    padded to 8 bytes), as the kernel does.
    """

    def __init__(self, fd, owned=True):
        self.fd = fd
        self.owned = owned
        self.info = map_info(fd)
        vs = self.info["value_size"]
        self.percpu = self.info["type"] in PERCPU_MAPS
        self.slot = (vs + 7) // 8 * 8 if self.percpu else vs
        self.ncpu = possible_cpus() if self.percpu else 1
        self.vsize = self.slot * self.ncpu

    @classmethod
    def pinned(cls, path):
        try:
            return cls(obj_get(path))
        except OSError as e:
            raise NetstackError("cannot open pinned map %s: %s" % (path, e.strerror), field="maps")

    def close(self):
        if self.owned and self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def _kv(self, key, value=None):
        k = ctypes.create_string_buffer(bytes(key), self.info["key_size"])
        v = ctypes.create_string_buffer(bytes(value) if value is not None else b"", self.vsize)
        return k, v

    def lookup(self, key):
        k, v = self._kv(key)
        try:
            sys_bpf(MAP_LOOKUP_ELEM, _attr("=IIQQQ", self.fd, 0, _addr(k), _addr(v), 0))
        except OSError as e:
            if e.errno == errno.ENOENT:
                return None
            raise
        return v.raw[:self.vsize]

    def update(self, key, value, flags=0):
        if len(value) == self.info["value_size"] and self.percpu:
            value = b"".join(value.ljust(self.slot, b"\0") for _i in range(self.ncpu))
        k, v = self._kv(key, value)
        sys_bpf(MAP_UPDATE_ELEM, _attr("=IIQQQ", self.fd, 0, _addr(k), _addr(v), flags))

    def delete(self, key):
        k, _v = self._kv(key)
        try:
            sys_bpf(MAP_DELETE_ELEM, _attr("=IIQQQ", self.fd, 0, _addr(k), 0, 0))
        except OSError as e:
            if e.errno != errno.ENOENT:
                raise

    def keys(self):
        out, prev = [], None
        while True:
            nk = ctypes.create_string_buffer(self.info["key_size"])
            if prev is None:
                attr = _attr("=IIQQQ", self.fd, 0, 0, _addr(nk), 0)
            else:
                pk = ctypes.create_string_buffer(prev, self.info["key_size"])
                attr = _attr("=IIQQQ", self.fd, 0, _addr(pk), _addr(nk), 0)
            try:
                sys_bpf(MAP_GET_NEXT_KEY, attr)
            except OSError as e:
                if e.errno == errno.ENOENT:
                    return out
                raise
            prev = nk.raw[:self.info["key_size"]]
            out.append(prev)
            if len(out) > 1 << 20:
                return out

    def items(self):
        for k in self.keys():
            v = self.lookup(k)
            if v is not None:
                yield k, v

    def per_cpu(self, value):
        """Split a per-CPU value into the CPUs' values."""
        vs = self.info["value_size"]
        return [value[i * self.slot:i * self.slot + vs] for i in range(self.ncpu)]


# ------------------------------------------------------------------ bpffs and cgroups

class PinnedMaps(object):
    """The maps ``NAMES`` of one program set, opened together from <pin_dir>/maps/<name>.
    Subclasses add the program-specific encoding (tcppolicy.Policy, shm.Maps)."""

    NAMES = ()
    MISSING_HINT = ""   # appended to the error when maps are missing
    FIELD = "name"      # the option the error is about

    def __init__(self, pin_dir):
        self.pin_dir = pin_dir
        missing = [m for m in self.NAMES if not os.path.exists(os.path.join(pin_dir, "maps", m))]
        if missing:
            raise NetstackError("%s has no pinned map(s) %s%s" % (pin_dir, ", ".join(missing), self.MISSING_HINT),
                                field=self.FIELD)
        self.maps = {}
        try:
            for m in self.NAMES:
                self.maps[m] = Map.pinned(os.path.join(pin_dir, "maps", m))
        except NetstackError:
            self.close()
            raise

    def close(self):
        for m in self.maps.values():
            m.close()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    @staticmethod
    def _key(i):
        return struct.pack("<I", i)


def mounts():
    out = []
    with open("/proc/self/mounts") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3:
                out.append((parts[1].replace("\\040", " "), parts[2]))
    return out


def bpffs_mounted(path=BPFFS):
    return any(mp == path and fs == "bpf" for mp, fs in mounts())


def mount_bpffs(path=BPFFS):
    if not os.path.isdir(path):
        os.makedirs(path, 0o700)
    libc = _libc()
    if libc.mount(b"bpf", path.encode(), b"bpf", ctypes.c_ulong(0), b"mode=0700") != 0:
        err = ctypes.get_errno()
        raise NetstackError("cannot mount bpffs at %s: %s" % (path, os.strerror(err)), field="bpffs")


def umount(path):
    if _libc().umount2(path.encode(), 0) != 0:
        err = ctypes.get_errno()
        raise NetstackError("cannot unmount %s: %s" % (path, os.strerror(err)))


def cgroup2_root():
    for mp, fs in mounts():
        if fs == "cgroup2" and mp in CGROUP2_CANDIDATES:
            return mp
    for mp, fs in mounts():
        if fs == "cgroup2":
            return mp
    raise NetstackError("no cgroup v2 hierarchy is mounted", field="cgroup")


def cgroup_path(path):
    """Validate a cgroup v2 directory (absolute, or relative to the v2 root)."""
    if not isinstance(path, str) or not path:
        raise NetstackError("cgroup must be a non-empty path", field="cgroup")
    root = cgroup2_root()
    full = path if path.startswith("/") else os.path.join(root, path)
    full = os.path.normpath(full)
    if not (full == root or full.startswith(root + "/")):
        raise NetstackError("%s is not inside the cgroup v2 hierarchy at %s" % (path, root), field="cgroup")
    if not os.path.isdir(full):
        raise NetstackError("cgroup %s does not exist" % full, field="cgroup")
    return full


@contextlib.contextmanager
def opened(path, flags=os.O_RDONLY | os.O_DIRECTORY):
    fd = os.open(path, flags)
    try:
        yield fd
    finally:
        os.close(fd)


# ------------------------------------------------------------------ compile (bcc)

class Loaded(object):
    """What bcc compiled and loaded: function -> fd, map name -> fd (owned by ``bpf``)."""

    def __init__(self, bpf, progs, maps, log):
        self.bpf = bpf
        self.progs = progs
        self.maps = maps
        self.log = log

    def close(self):
        try:
            self.bpf.cleanup()
        except Exception:
            pass


@contextlib.contextmanager
def _capture_stderr():
    """Collect what C code (clang, libbpf, the verifier log) writes to fd 2."""
    tmp = tempfile.TemporaryFile(mode="w+b")
    saved = os.dup(2)
    os.dup2(tmp.fileno(), 2)
    box = {"text": ""}
    try:
        yield box
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        tmp.seek(0)
        box["text"] = tmp.read().decode("utf-8", "replace")
        tmp.close()


def _tail(text, n=LOG_LINES):
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if len(lines) <= n:
        return lines
    # The verifier's reason is at the end; the error lines of clang are at the start.
    errs = [ln for ln in lines if "error:" in ln][:10]
    return errs + ["... (%d lines omitted)" % (len(lines) - n - len(errs))] + lines[-n:]


def compile_and_load(source, programs, cflags=()):
    """Compile ``source`` with bcc and load each program; NetstackError with log lines on failure."""
    try:
        import bcc  # only the distribution's Python has it
        from bcc.libbcc import lib
    except ImportError as e:
        raise NetstackError("bcc is not importable by this Python (%s); install python3-bpfcc "
                            "(role netstack.tuning.bcc_runtime) and use /usr/bin/python3" % e, field="source")
    lib.bpf_table_name.restype = ctypes.c_char_p
    lib.bpf_table_name.argtypes = [ctypes.c_void_p, ctypes.c_ulonglong]
    lib.bpf_num_tables.restype = ctypes.c_ulonglong
    lib.bpf_num_tables.argtypes = [ctypes.c_void_p]
    b = None
    with _capture_stderr() as cap:
        try:
            b = bcc.BPF(text=source.encode(), cflags=list(cflags))
        except Exception as e:
            err = e
        else:
            err = None
    if err is not None:
        raise NetstackError("compile failed: %s" % err, field="source", log=_tail(cap["text"]), stage="compile")
    progs = {}
    log = cap["text"]
    for p in programs:
        fn = p["function"]
        with _capture_stderr() as cap:
            try:
                loaded = b.load_func(fn.encode(), PROG_TYPES[p["type"]],
                                     attach_type=ATTACH_TYPES.get(p.get("attach_type") or "", -1)
                                     if p["type"] == "sock_addr" else -1)
            except Exception as e:
                err = e
            else:
                err = None
        if err is not None:
            b.cleanup()
            raise NetstackError("the kernel rejected program %s: %s" % (fn, err), field="programs",
                                log=_tail(cap["text"]), stage="verifier")
        log += cap["text"]
        progs[fn] = loaded.fd
    maps = {}
    for i in range(lib.bpf_num_tables(b.module)):
        name = lib.bpf_table_name(b.module, i).decode()
        fd = lib.bpf_table_fd(b.module, name.encode())
        if fd >= 0:
            maps[name] = fd
    return Loaded(b, progs, maps, [ln for ln in log.splitlines() if ln.strip()][-20:])


# ------------------------------------------------------------------ the resource

def source_digest(source, cflags, programs):
    h = hashlib.sha256()
    h.update(source.encode())
    h.update(json.dumps({"cflags": list(cflags), "programs": programs}, sort_keys=True).encode())
    return h.hexdigest()


def normalize_programs(programs):
    """Validate the ``programs`` option; returns a list of clean dicts."""
    if not programs:
        raise NetstackError("at least one program is required", field="programs")
    out, seen = [], set()
    for n, p in enumerate(programs):
        where = "programs[%d]" % n
        if not isinstance(p, dict):
            raise NetstackError("must be a dict", field=where)
        fn = p.get("function")
        if not isinstance(fn, str) or not FUNC_RE.match(fn):
            raise NetstackError("a C function name is required", field=where + ".function")
        if fn in seen:
            raise NetstackError("function %s listed twice" % fn, field=where + ".function")
        seen.add(fn)
        t = p.get("type")
        if t not in PROG_TYPES:
            raise NetstackError("type must be one of %s" % ", ".join(sorted(PROG_TYPES)), field=where + ".type")
        q = {"function": fn, "type": t}
        if t in ("sock_ops", "sock_addr"):
            if not p.get("cgroup"):
                raise NetstackError("required for type %s" % t, field=where + ".cgroup")
            q["cgroup"] = cgroup_path(p["cgroup"])
            if t == "sock_ops":
                q["attach_type"] = "sock_ops"
            else:
                at = p.get("attach_type")
                if at not in ATTACH_TYPES or at in ("sock_ops", "sk_msg_verdict"):
                    raise NetstackError("a sock_addr hook is required (connect4, bind4, sendmsg4, ...)",
                                        field=where + ".attach_type")
                q["attach_type"] = at
        elif t == "sk_msg":
            if not p.get("map"):
                raise NetstackError("required for sk_msg: a sockmap/sockhash of this source, or a pinned path",
                                    field=where + ".map")
            q["map"] = p["map"]
            q["attach_type"] = "sk_msg_verdict"
        elif t == "sched_cls":
            dev = p.get("interface")
            if not dev or not re.match(r"\A[A-Za-z0-9_.@:-]{1,15}\Z", dev):
                raise NetstackError("a network interface name is required", field=where + ".interface")
            d = p.get("direction") or "ingress"
            if d not in ("ingress", "egress"):
                raise NetstackError("must be ingress or egress", field=where + ".direction")
            q.update(interface=dev, direction=d, netns=p.get("netns") or None,
                     priority=int(p.get("priority") or 1))
            if q["netns"]:
                kstate.netns_file(q["netns"])
        out.append(q)
    return out


# ------------------------------------------------------------------ tc over rtnetlink

TC_PARENTS = {"ingress": "ffff:fff2", "egress": "ffff:fff3"}  # clsact's hooks (TC_H_MIN_INGRESS/EGRESS)
TC_HANDLE = 1
TCA_BPF_ID = 11  # in a bpf filter's TCA_OPTIONS: the id of its program


def _pyroute2():
    """(IPRoute, NetlinkError) of pyroute2, imported here only: hosts need it for sched_cls alone."""
    try:
        from pyroute2 import IPRoute
        from pyroute2.netlink.exceptions import NetlinkError
    except ImportError as e:
        raise NetstackError("pyroute2 (python3-pyroute2) is required for sched_cls programs: %s" % e, field="programs")
    return IPRoute, NetlinkError


class _Tc(object):
    """The clsact/bpf-filter operations of tc, over one rtnetlink socket; NetlinkError -> OSError."""

    def __init__(self, ipr, nl_error, netns):
        self.ipr, self.nl_error, self.netns = ipr, nl_error, netns

    def _call(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except self.nl_error as e:
            code = e.code if isinstance(e.code, int) and e.code > 0 else errno.EIO
            raise OSError(code, nsutil.errno_text(code))

    def ifindex(self, dev, required=True):
        """Index of interface ``dev``; None (or with ``required`` a NetstackError) when there is none."""
        idx = self._call(self.ipr.link_lookup, ifname=dev)
        if not idx and not required:
            return None
        if not idx:
            raise NetstackError("interface %s: no such device%s" % (dev, " in netns %s" % self.netns if self.netns else ""),
                                field="programs.interface")
        return idx[0]

    def has_clsact(self, idx):
        return any(q.get_attr("TCA_KIND") == "clsact" for q in self._call(lambda: list(self.ipr.get_qdiscs(index=idx))))

    def add_clsact(self, idx):
        self._call(self.ipr.tc, "add", "clsact", idx)

    def del_clsact(self, idx):
        self._call(self.ipr.tc, "del", "clsact", idx)

    def replace_filter(self, idx, direction, prio, fd, name):
        """``tc filter replace dev X <direction> pref <prio> handle 1 bpf direct-action`` with program ``fd``:
        created if missing, else the program is swapped in one step."""
        self._call(self.ipr.tc, "replace-filter", "bpf", idx, TC_HANDLE, parent=TC_PARENTS[direction], prio=prio,
                   fd=fd, name=name, direct_action=True)

    def del_filter(self, idx, direction, prio):
        self._call(self.ipr.tc, "del-filter", "bpf", idx, TC_HANDLE, parent=TC_PARENTS[direction], prio=prio)

    def filter_prog_ids(self, idx, direction, prio):
        """Ids of the programs of the bpf filters at ``prio`` of one clsact hook."""
        msgs = self._call(lambda: list(self.ipr.get_filters(index=idx, parent=TC_PARENTS[direction])))
        ids = []
        for m in msgs:
            if (m["info"] >> 16) != prio or m.get_attr("TCA_KIND") != "bpf":
                continue
            pid = _bpf_filter_prog_id(m.get_attr("TCA_OPTIONS"))
            if pid:
                ids.append(pid)
        return ids


def _bpf_filter_prog_id(opts):
    """TCA_BPF_ID of a bpf filter's options.  pyroute2 (0.7 to 0.9 at least) does not decode it, so
    it is read from the attribute's raw bytes, which every pyroute2 keeps (``data``, ``offset``)."""
    if opts is None:
        return None
    decoded = opts.get_attr("TCA_BPF_ID")
    if decoded:
        return decoded
    raw = bytes(opts.data[opts.offset:opts.offset + opts.length])
    off = 4  # after the TCA_OPTIONS header: the nested attributes
    while off + 4 <= len(raw):
        alen, atype = struct.unpack_from("=HH", raw, off)
        if alen < 4:
            break
        if atype & 0x3FFF == TCA_BPF_ID and alen >= 8:
            return struct.unpack_from("=I", raw, off + 4)[0]
        off += (alen + 3) & ~3
    return None


@contextlib.contextmanager
def _tc(netns):
    """A ``_Tc`` whose rtnetlink socket belongs to network namespace ``netns`` (None: this one).

    The socket is created while this thread is inside ``netns`` (a netlink socket talks to the
    namespace it was made in), and all its work is done there.  Only the network namespace is
    switched, never the mount namespace: ``tc -n`` would remount /sys privately and so hide
    /sys/fs/bpf; here the program is passed by the fd already held.
    """
    iproute, nl_error = _pyroute2()
    with kstate.in_netns(netns):
        try:
            ipr = iproute()
        except nl_error as e:
            raise OSError(e.code or errno.EIO, "rtnetlink: %s" % e)
        try:
            yield _Tc(ipr, nl_error, netns)
        finally:
            ipr.close()


def tc_filter_prog_ids(p):
    """Ids of the programs in the tc bpf filters at ``p``'s interface, direction and priority;
    [] when there are none (no such interface, no clsact).  A missing netns or pyroute2 is a
    NetstackError."""
    try:
        with _tc(p["netns"]) as tc:
            idx = tc.ifindex(p["interface"], required=False)
            return tc.filter_prog_ids(idx, p["direction"], p["priority"]) if idx else []
    except OSError:
        return []


class Engine(object):
    """Declarative BPF programs under ``/sys/fs/bpf/netstack/<name>``."""

    def __init__(self, state_dir="/var/lib/netstack", pin_root=PIN_ROOT):
        self.state_dir = os.path.join(state_dir, "bpf")
        self.pin_root = pin_root
        self.bpffs = os.path.dirname(pin_root.rstrip("/"))

    # -- records ---------------------------------------------------------------
    def _ensure_dir(self):
        if not os.path.isdir(self.state_dir):
            try:
                os.makedirs(self.state_dir, 0o700)
            except OSError as e:
                raise NetstackError("cannot create %s: %s" % (self.state_dir, e.strerror or e), field="state_dir")

    def lock_dir(self):
        """Make sure the record directory exists (mode 0700)."""
        self._ensure_dir()
        return self.state_dir

    def record_path(self, name):
        return os.path.join(self.state_dir, "%s.json" % name)

    def record(self, name):
        try:
            with open(self.record_path(name)) as f:
                return json.load(f)
        except (IOError, OSError, ValueError):
            return None

    def _write_record(self, name, rec):
        self._ensure_dir()
        kstate.atomic_write(self.record_path(name), json.dumps(rec, indent=1, sort_keys=True) + "\n", 0o600)

    def event(self, name, what, why, **extra):
        self._ensure_dir()
        rec = {"ts": time.time(), "name": name, "what": what, "why": why}
        rec.update(extra)
        fd = os.open(os.path.join(self.state_dir, "events.jsonl"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, (json.dumps(rec, sort_keys=True) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def lock(self, name, check_mode=False):
        """One writer at a time for ``name`` (flock on <state_dir>/bpf/<name>.lock).

        With ``check_mode`` nothing is created: the lock file, when it exists, is opened
        read-only and locked shared (so a check waits for a writer instead of reading a
        half-made state); when it does not exist no writer has ever run and there is
        nothing to wait for."""
        path = os.path.join(self.state_dir, "%s.lock" % name)
        if check_mode:
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError as e:
                if e.errno not in (errno.ENOENT, errno.ENOTDIR):
                    raise NetstackError("cannot open %s: %s" % (path, e.strerror), field="state_dir")
                yield
                return
            mode = fcntl.LOCK_SH
        else:
            self._ensure_dir()
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            except OSError as e:
                raise NetstackError("cannot open %s: %s" % (path, e.strerror or e), field="state_dir")
            mode = fcntl.LOCK_EX
        try:
            fcntl.flock(fd, mode)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def pin_dir(self, name):
        return os.path.join(self.pin_root, name)

    # -- bpffs -------------------------------------------------------------------
    def ensure_bpffs(self, name, notes):
        if bpffs_mounted(self.bpffs):
            return False
        mount_bpffs(self.bpffs)
        self._ensure_dir()
        kstate.atomic_write(os.path.join(self.state_dir, "bpffs.json"),
                            json.dumps({"mounted_by": "netstack.tuning", "path": self.bpffs, "ts": time.time()}), 0o600)
        self.event(name, "mount bpffs", "no BPF filesystem at %s; pins need one" % self.bpffs)
        notes.append("mounted the BPF filesystem at %s (it was not mounted); state: absent unmounts it "
                     "when nothing else is pinned" % self.bpffs)
        return True

    def maybe_umount_bpffs(self, name, notes):
        marker = os.path.join(self.state_dir, "bpffs.json")
        if not os.path.exists(marker) or not bpffs_mounted(self.bpffs):
            return False
        if os.path.isdir(self.pin_root) and not os.listdir(self.pin_root):
            os.rmdir(self.pin_root)
        # maps.debug / progs.debug are the kernel's own preloaded iterators, not pins.
        if [e for e in os.listdir(self.bpffs) if e not in ("maps.debug", "progs.debug")]:
            notes.append("left the BPF filesystem at %s mounted: other pins exist" % self.bpffs)
            return False
        umount(self.bpffs)
        os.unlink(marker)
        self.event(name, "umount bpffs", "netstack mounted it and nothing is pinned any more")
        notes.append("unmounted the BPF filesystem at %s (netstack had mounted it)" % self.bpffs)
        return True

    # -- inspection ------------------------------------------------------------
    def _pinned_prog(self, path):
        try:
            fd = obj_get(path)
        except OSError:
            return None
        try:
            return prog_info(fd)
        finally:
            os.close(fd)

    def _attached(self, p, prog_id, maps_by_name=None):
        """Is program ``prog_id`` attached as ``p`` says?"""
        try:
            if p["type"] in ("sock_ops", "sock_addr"):
                with opened(p["cgroup"]) as cg:
                    return prog_id in prog_query(cg, ATTACH_TYPES[p["attach_type"]])
            if p["type"] == "sched_cls":
                return prog_id in tc_filter_prog_ids(p)
            if p["type"] == "sk_msg":
                mpath = self._map_target(p, maps_by_name or {})
                fd = obj_get(mpath)
                try:
                    return prog_id in prog_query(fd, ATTACH_TYPES["sk_msg_verdict"])
                except OSError:
                    return True  # kernels before 5.19 cannot query a sockmap; the pin is what we have
                finally:
                    os.close(fd)
        except (OSError, NetstackError):
            return False
        return False

    def _map_target(self, p, map_pins):
        m = p["map"]
        if m.startswith("/"):
            return m
        if m in map_pins:
            return map_pins[m]
        raise NetstackError("map %s is not a map of this source (maps: %s)" % (m, ", ".join(sorted(map_pins))),
                            field="programs.map")

    def status(self, name):
        """What is in place for ``name`` now (from the record, checked against the kernel)."""
        rec = self.record(name)
        if not rec:
            return None
        progs = []
        map_pins = {m["name"]: m["pin"] for m in rec.get("maps", [])}
        for p in rec["programs"]:
            info = self._pinned_prog(p["pin"])
            progs.append({"function": p["function"], "type": p["type"], "pin": p["pin"],
                          "tag": info["tag"] if info else None, "id": info["id"] if info else None,
                          "pinned": info is not None,
                          "attached": bool(info) and self._attached(p, info["id"], map_pins)})
        return {"name": name, "digest": rec.get("digest"), "programs": progs, "maps": rec.get("maps", []),
                "pin_dir": rec.get("pin_dir")}

    # -- present -----------------------------------------------------------------
    def present(self, name, source, programs, cflags=(), origin=None, check_mode=False, migrate_maps=True):
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise NetstackError("must be 1-63 characters of letters, digits, '_', '-' (not starting with '__')", field="name")
        if not source or not source.strip():
            raise NetstackError("the program source is empty", field="source")
        progs = normalize_programs(programs)
        digest = source_digest(source, cflags, progs)
        notes = []
        with self.lock(name, check_mode):
            cur = self.status(name)
            before = self._summary(cur)
            if cur and cur["digest"] == digest and all(p["pinned"] and p["attached"] for p in cur["programs"]) \
                    and [p["function"] for p in cur["programs"]] == [p["function"] for p in progs]:
                return {"changed": False, "action": "none", "programs": cur["programs"], "maps": cur["maps"],
                        "pin_dir": cur["pin_dir"], "before": before, "after": before, "notes": notes}
            if check_mode:
                return {"changed": True, "action": "replace" if cur else "create",
                        "programs": cur["programs"] if cur else [], "maps": cur["maps"] if cur else [],
                        "pin_dir": self.pin_dir(name), "before": before,
                        "after": {"digest": digest, "programs": [p["function"] for p in progs]}, "notes": notes}
            mounted = self.ensure_bpffs(name, notes)
            try:
                loaded = compile_and_load(source, progs, cflags)
            except NetstackError:
                # a compile error or a verifier rejection pinned nothing: a BPF filesystem
                # mounted just now for this program goes again (absent would find no record)
                if mounted:
                    self.maybe_umount_bpffs(name, [])
                raise
            try:
                return self._install(name, progs, loaded, digest, cur, before, notes, origin, migrate_maps)
            finally:
                loaded.close()

    @staticmethod
    def _summary(st):
        if not st:
            return None
        return {"digest": st["digest"],
                "programs": ["%s %s tag=%s%s" % (p["function"], p["type"], p["tag"], "" if p["attached"] else " (NOT attached)")
                             for p in st["programs"]]}

    def _install(self, name, progs, loaded, digest, cur, before, notes, origin, migrate_maps):
        final = self.pin_dir(name)
        infos = {fn: prog_info(fd) for fn, fd in loaded.progs.items()}
        # Same tags, same attach points, all attached: the running program is this one.
        if cur and all(p["pinned"] and p["attached"] for p in cur["programs"]):
            old = {p["function"]: p for p in cur["programs"]}
            rec = self.record(name)
            same_spec = [dict((k, v) for k, v in p.items() if k not in ("pin", "id", "tag"))
                         for p in rec["programs"]] == progs
            if same_spec and all(fn in old and old[fn]["tag"] == infos[fn]["tag"] for fn in infos):
                rec["digest"] = digest
                self._write_record(name, rec)
                return {"changed": False, "action": "none", "programs": cur["programs"], "maps": cur["maps"],
                        "pin_dir": final, "before": before, "after": before, "notes": notes + [
                            "source text differs but the programs' tags are unchanged"]}
        if not os.path.isdir(self.pin_root):
            os.makedirs(self.pin_root, 0o700)
        stage = os.path.join(self.pin_root, "__staging_%s" % name)
        if os.path.exists(stage):
            shutil.rmtree(stage)
        os.makedirs(stage, 0o700)  # makedirs' mode applies to the leaf only: make each level 0700
        os.makedirs(os.path.join(stage, "progs"), 0o700)
        os.makedirs(os.path.join(stage, "maps"), 0o700)
        attached_new = []
        try:
            map_recs = []
            for mname, fd in sorted(loaded.maps.items()):
                obj_pin(fd, os.path.join(stage, "maps", mname))
                mi = map_info(fd)
                map_recs.append({"name": mname, "id": mi["id"], "type": mi["type_name"], "key_size": mi["key_size"],
                                 "value_size": mi["value_size"], "max_entries": mi["max_entries"],
                                 "pin": os.path.join(final, "maps", mname)})
            for fn, fd in loaded.progs.items():
                obj_pin(fd, os.path.join(stage, "progs", fn))
            copied = self._migrate(cur, loaded) if (cur and migrate_maps) else []
            if copied:
                notes.append("carried over map contents: %s" % ", ".join(copied))
            stage_maps = {m["name"]: os.path.join(stage, "maps", m["name"]) for m in map_recs}
            old_by_fn = {p["function"]: p for p in (cur["programs"] if cur else []) if p["pinned"]}
            old_rec = {p["function"]: p for p in (self.record(name) or {}).get("programs", [])}
            replaced = set()  # functions whose old program the new one replaced in place
            for p in progs:
                fd = loaded.progs[p["function"]]
                old = old_by_fn.get(p["function"])
                same_point = old is not None and self._same_point(old_rec.get(p["function"]), p)
                if same_point and old_rec[p["function"]].get("_added_clsact"):
                    p["_added_clsact"] = True
                self._attach(p, fd, old_rec[p["function"]] if same_point else None, stage_maps)
                if same_point:
                    replaced.add(p["function"])
                attached_new.append(p)
                self.event(name, "attach", "%s program %s (tag %s) %s" % (
                    p["type"], p["function"], infos[p["function"]]["tag"],
                    "replacing tag %s atomically" % old["tag"] if same_point else "attached"),
                    target=self._target_text(p))
        except (OSError, NetstackError) as e:
            for p in attached_new:  # nothing new may stay attached
                try:
                    self._detach(p, loaded.progs[p["function"]], stage_maps)
                except (OSError, NetstackError):
                    pass
            shutil.rmtree(stage, ignore_errors=True)
            if isinstance(e, NetstackError):
                raise
            raise NetstackError("attach failed: %s" % (e.strerror or e), field="programs", errno=e.errno)
        # Old attachments that the new set does not replace in place are removed now.
        if cur:
            new_fns = {p["function"]: p for p in progs}
            for p in (self.record(name) or {}).get("programs", []):
                np_ = new_fns.get(p["function"])
                # Not replaced in place (another point, or its pin was lost while it stayed
                # attached): detach it by id, so no stale copy keeps running.
                if np_ is None or not self._same_point(p, np_) or p["function"] not in replaced:
                    self._detach_recorded(name, p)
        self._swap_dirs(stage, final)
        prog_recs = []
        for p in progs:
            r = dict(p)
            r.update(pin=os.path.join(final, "progs", p["function"]), id=infos[p["function"]]["id"],
                     tag=infos[p["function"]]["tag"])
            prog_recs.append(r)
        rec = {"name": name, "digest": digest, "origin": origin, "pin_dir": final, "programs": prog_recs,
               "maps": map_recs, "updated": time.time()}
        self._write_record(name, rec)
        self.event(name, "pin", "pinned %d program(s) and %d map(s) under %s" % (len(prog_recs), len(map_recs), final))
        after = self.status(name)
        return {"changed": True, "action": "replace" if cur else "create", "programs": after["programs"],
                "maps": map_recs, "pin_dir": final, "before": before, "after": self._summary(after),
                "notes": notes, "load_log": loaded.log}

    @staticmethod
    def _same_point(old, new):
        if not old:
            return False
        keys = ("type", "cgroup", "attach_type", "map", "interface", "direction", "netns", "priority")
        return all(old.get(k) == new.get(k) for k in keys) and not (new["type"] == "sk_msg" and not new["map"].startswith("/"))

    def _target_text(self, p):
        if p["type"] in ("sock_ops", "sock_addr"):
            return "cgroup %s (%s)" % (p["cgroup"], p["attach_type"])
        if p["type"] == "sk_msg":
            return "map %s" % p["map"]
        return "tc %s %s%s pref %d" % (p["interface"], p["direction"], " netns %s" % p["netns"] if p["netns"] else "",
                                       p["priority"])

    def _migrate(self, cur, loaded):
        """Copy entries of old maps into new maps of the same name and shape."""
        copied = []
        for m in cur.get("maps", []):
            new_fd = loaded.maps.get(m["name"])
            if new_fd is None:
                continue
            try:
                old = Map.pinned(m["pin"])
            except NetstackError:
                continue
            try:
                new = Map(new_fd, owned=False)
                oi, ni = old.info, new.info
                if oi["type"] != ni["type"] or oi["type"] not in COPYABLE_MAPS or \
                        (oi["key_size"], oi["value_size"]) != (ni["key_size"], ni["value_size"]):
                    continue
                n = 0
                for k, v in old.items():
                    try:
                        new.update(k, v)
                        n += 1
                    except OSError:
                        pass
                copied.append("%s (%d)" % (m["name"], n))
            finally:
                old.close()
        return copied

    def _attach(self, p, fd, old, stage_maps):
        if p["type"] in ("sock_ops", "sock_addr"):
            at = ATTACH_TYPES[p["attach_type"]]
            with opened(p["cgroup"]) as cg:
                if old:
                    ofd = obj_get(old["pin"])
                    try:
                        try:
                            prog_attach(fd, cg, at, F_ALLOW_MULTI | F_REPLACE, ofd)
                        except OSError as e:
                            if e.errno not in (errno.EINVAL, errno.ENOENT):
                                raise
                            # Kernels without BPF_F_REPLACE: attach the new one, then detach the old.
                            prog_attach(fd, cg, at, F_ALLOW_MULTI)
                            prog_detach(ofd, cg, at)
                    finally:
                        os.close(ofd)
                else:
                    try:
                        prog_attach(fd, cg, at, F_ALLOW_MULTI)
                    except OSError as e:
                        raise NetstackError("cannot attach to %s: %s%s" % (
                            p["cgroup"], e.strerror,
                            " (another program is attached there without BPF_F_ALLOW_MULTI)"
                            if e.errno in (errno.EPERM, errno.EEXIST) else ""), field="programs.cgroup")
        elif p["type"] == "sk_msg":
            target = p["map"] if p["map"].startswith("/") else stage_maps.get(p["map"])
            if not target:
                raise NetstackError("map %s is not a map of this source" % p["map"], field="programs.map")
            mfd = obj_get(target)
            try:
                prog_attach(fd, mfd, ATTACH_TYPES["sk_msg_verdict"], 0)
            finally:
                os.close(mfd)
        else:
            with _tc(p["netns"]) as tc:
                idx = tc.ifindex(p["interface"])
                try:
                    if not tc.has_clsact(idx):
                        tc.add_clsact(idx)
                        p["_added_clsact"] = True
                except OSError as e:
                    raise NetstackError("cannot add clsact on %s: %s" % (p["interface"], e.strerror),
                                        field="programs.interface")
                try:
                    tc.replace_filter(idx, p["direction"], p["priority"], fd, p["function"])
                except OSError as e:
                    raise NetstackError("tc filter replace failed: %s" % e.strerror, field="programs")

    def _detach(self, p, fd, map_pins):
        if p["type"] in ("sock_ops", "sock_addr"):
            with opened(p["cgroup"]) as cg:
                prog_detach(fd, cg, ATTACH_TYPES[p["attach_type"]])
        elif p["type"] == "sk_msg":
            target = p["map"] if p["map"].startswith("/") else map_pins.get(p["map"])
            if target and os.path.exists(target):
                mfd = obj_get(target)
                try:
                    prog_detach(fd, mfd, ATTACH_TYPES["sk_msg_verdict"])
                finally:
                    os.close(mfd)
        else:
            # As `tc filter del` / `tc qdisc del` were: what is already gone is no error.
            with _tc(p["netns"]) as tc:
                idx = tc.ifindex(p["interface"], required=False)
                if not idx:
                    return
                try:
                    tc.del_filter(idx, p["direction"], p["priority"])
                except OSError:
                    pass
                if p.get("_added_clsact") or p.get("added_clsact"):
                    try:
                        tc.del_clsact(idx)
                    except OSError:
                        pass

    def _detach_recorded(self, name, p, maps=None):
        """Detach a program recorded in the state file; tolerate what is already gone."""
        fd = None
        try:
            fd = obj_get(p["pin"])
        except OSError:
            try:
                fd = prog_fd_by_id(p["id"])
                if prog_info(fd)["tag"] != p["tag"]:
                    os.close(fd)
                    fd = None
            except OSError:
                fd = None
        if fd is None and p["type"] != "sched_cls":
            return False
        try:
            if p["type"] == "sched_cls":
                ids = tc_filter_prog_ids(p)
                if p["id"] not in ids and (fd is None or prog_info(fd)["id"] not in ids):
                    return False
            self._detach(p, fd, {m["name"]: m["pin"] for m in (maps or [])})
            self.event(name, "detach", "%s program %s (tag %s) from %s" % (p["type"], p["function"], p["tag"],
                                                                           self._target_text(p)))
            return True
        except (OSError, NetstackError):
            return False
        finally:
            if fd is not None:
                os.close(fd)

    def _swap_dirs(self, stage, final):
        if not os.path.exists(final):
            os.rename(stage, final)
            return
        # renameat2(RENAME_EXCHANGE): the pins switch in one step; then drop the old ones.
        libc = _libc()
        AT_FDCWD, RENAME_EXCHANGE = -100, 2
        ok = False
        try:
            ok = libc.renameat2(AT_FDCWD, stage.encode(), AT_FDCWD, final.encode(), RENAME_EXCHANGE) == 0
        except AttributeError:
            ok = False
        if not ok:
            old = os.path.join(self.pin_root, "__old_" + os.path.basename(final))
            shutil.rmtree(old, ignore_errors=True)
            os.rename(final, old)
            os.rename(stage, final)
            stage = old
        shutil.rmtree(stage, ignore_errors=True)

    # -- absent -----------------------------------------------------------------
    def absent(self, name, check_mode=False):
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise NetstackError("must be 1-63 characters of letters, digits, '_', '-' (not starting with '__')", field="name")
        notes = []
        with self.lock(name, check_mode):
            rec = self.record(name)
            pdir = self.pin_dir(name)
            if not rec and not os.path.exists(pdir):
                return {"changed": False, "action": "none", "removed": [], "before": None, "after": None,
                        "notes": notes}
            before = self._summary(self.status(name)) if rec else {"pin_dir": pdir}
            if check_mode:
                return {"changed": True, "action": "remove", "removed": [], "before": before, "after": None,
                        "notes": notes}
            removed = []
            for p in (rec or {}).get("programs", []):
                if self._detach_recorded(name, p, rec.get("maps")):
                    removed.append("detached %s from %s" % (p["function"], self._target_text(p)))
            if os.path.isdir(pdir):
                shutil.rmtree(pdir)
                removed.append("unpinned %s" % pdir)
                self.event(name, "unpin", "removed %s" % pdir)
            stage = os.path.join(self.pin_root, "__staging_%s" % name)
            shutil.rmtree(stage, ignore_errors=True)
            if rec:
                os.unlink(self.record_path(name))
            if self.maybe_umount_bpffs(name, notes):
                removed.append("unmounted %s" % self.bpffs)
            return {"changed": True, "action": "remove", "removed": removed, "before": before, "after": None,
                    "notes": notes}
