# -*- coding: utf-8 -*-
# Copyright: netstack.tuning contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Kernel state items: sysctls (procfs), sysfs attributes, small files, IRQ affinities,
cpuset cgroups and systemd unit CPU fences.

Each item is addressed by a *kind* and a *key*, optionally inside a named network
namespace.  This module validates names (no path escapes), reads and writes values and
normalises them so that equal settings compare equal ("4096  131072\t6291456" ==
"4096 131072 6291456").  It knows nothing of journals; see journal.py for transactions.

Network namespaces: net.* sysctls are per namespace.  Procfs resolves /proc/sys/net
against the *calling thread's* network namespace, so ``in_netns`` switches the thread
with setns(2) for the duration of a read/write and switches back.  Sysfs is different:
/sys/class/net shows the namespace of whoever mounted sysfs, so sysfs items inside a
namespace are handled in a short-lived child that mounts its own sysfs in a private
mount namespace (nsutil.enter_netns, what ``ip netns exec`` does).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import errno
import os
import re

from ansible_collections.netstack.tuning.plugins.module_utils.core.common import NetstackError, run, strict_int, which
from ansible_collections.netstack.tuning.plugins.module_utils.core import nsutil

PROC_SYS = "/proc/sys"
SYS = "/sys"
NETNS_DIR = nsutil.NETNS_DIR

_SYSCTL_RE = re.compile(r"\A[A-Za-z0-9_\-.:/@+]+\Z")
_GLOB_CHARS = set("*?[]{}")
# ASCII digits only: ``\d`` would take Arabic-Indic or full-width digits, which the kernel
# does not read as numbers.
_INT_RE = re.compile(r"\A[+-]?[0-9]+\Z")
# Control characters left after whitespace runs are collapsed (NUL, ESC, DEL, ...).
_CTRL_RE = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")


# --------------------------------------------------------------------------- names

def sysctl_path(name):
    """Validate a sysctl name and return its path relative to /proc/sys.

    Accepts the dotted form (``net.ipv4.tcp_rmem``) and the slash form
    (``net/ipv4/tcp_rmem``; needed when a component itself contains a dot, as in
    ``net/ipv4/conf/eth0.100/rp_filter``).  Rejects absolute paths, ``..``, empty
    components and glob characters.
    """
    if not isinstance(name, str) or not name:
        raise NetstackError("sysctl name must be a non-empty string", field=repr(name))
    if name.startswith("/"):
        raise NetstackError("absolute paths are not sysctl names", field=name)
    if _GLOB_CHARS & set(name):
        raise NetstackError("glob characters are not allowed in sysctl names", field=name)
    if not _SYSCTL_RE.match(name):
        raise NetstackError("invalid characters in sysctl name", field=name)
    parts = name.split("/") if "/" in name else name.split(".")
    if any(p in ("", ".", "..") for p in parts):
        raise NetstackError("sysctl name may not contain empty, '.' or '..' components", field=name)
    return "/".join(parts)


def sysctl_name(relpath):
    """Canonical display name for a /proc/sys relative path (dots unless ambiguous)."""
    parts = relpath.split("/")
    if any("." in p for p in parts):
        return relpath
    return ".".join(parts)


def canonical_sysctl(name):
    return sysctl_name(sysctl_path(name))


def sysfs_path(path):
    """Validate a sysfs attribute path (absolute, under /sys, no escapes)."""
    if not isinstance(path, str) or not path.startswith(SYS + "/"):
        raise NetstackError("sysfs path must be absolute and under /sys", field=repr(path))
    if _GLOB_CHARS & set(path):
        raise NetstackError("glob characters are not allowed in sysfs paths", field=path)
    parts = path.split("/")[1:]
    if any(p in ("", ".", "..") for p in parts):
        raise NetstackError("sysfs path may not contain empty, '.' or '..' components", field=path)
    return path


# --------------------------------------------------------------------------- values

def normalize(value, field=None):
    """Normalise a sysctl value as given by a user (str, int, bool, list); strict.

    Whitespace runs collapse to one space; integers lose a leading '+' and zeros; lists
    become space-separated vectors.  Strings that are not numbers are kept as they are
    (stripped).  Integer tokens are ASCII digits with an optional sign, at most 20 digits
    (a u64 fits); a string of other digits (Arabic-Indic, full-width) is a string.  Booleans
    are 1 and 0.

    Refused with a NetstackError naming ``field`` (the sysctl key): floats, whole or not,
    inf and NaN (the kernel takes integers; ``1.0e30`` is not silently a 31-digit integer),
    null, integers longer than 20 digits, control characters, and anything that is not a
    string, an integer or a flat list of them (nested lists, dicts).
    """
    if isinstance(value, (list, tuple)):
        parts = []
        for i, v in enumerate(value):
            if not isinstance(v, (str, int)):
                raise NetstackError("element %d of the list is %s: a vector value is a flat list of "
                                    "integers or strings" % (i, _type_name(v)), field=field)
            parts.append(normalize(v, field))
        return " ".join(" ".join(parts).split())
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(strict_int(value, field))
    if isinstance(value, float):
        raise NetstackError("sysctl values are integers or strings, not the float %r: write an "
                            "integer (no decimal point or exponent) or quote the value"
                            % value, field=field)
    if value is None:
        raise NetstackError("value may not be null", field=field)
    if not isinstance(value, str):
        raise NetstackError("sysctl values are integers, strings or lists of them, not %s"
                            % _type_name(value), field=field)
    text = " ".join(value.split())
    if _CTRL_RE.search(text):
        raise NetstackError("value contains a control character", field=field)
    tokens = text.split(" ") if text else []
    if tokens and all(_INT_RE.match(t) for t in tokens):
        return " ".join(str(strict_int(t, field)) for t in tokens)
    return text


def normalize_kernel(value):
    """Normalise a value read from the kernel (or written in the kernel's own format).

    The same canonical form as normalize() gives, but it never raises: integer tokens are
    canonicalised on their text (no length limit, no ``int()``), anything else is kept as
    text.
    """
    text = " ".join(str(value).split())
    tokens = text.split(" ") if text else []
    if tokens and all(_INT_RE.match(t) for t in tokens):
        return " ".join(_int_text(t) for t in tokens)
    return text


def _int_text(token):
    """'+007' -> '7', '-0' -> '0', without converting to int (any length)."""
    digits = token.lstrip("+-").lstrip("0") or "0"
    return "-" + digits if token.startswith("-") and digits != "0" else digits


def _type_name(value):
    if value is None:
        return "null"
    return {dict: "a mapping", list: "a list", tuple: "a list", float: "a float",
            bool: "a boolean"}.get(type(value), type(value).__name__)


def value_shape(normalized):
    """('int', n) for n integers, ('str', 0) otherwise."""
    tokens = normalized.split(" ") if normalized else []
    if tokens and all(_INT_RE.match(t) for t in tokens):
        return ("int", len(tokens))
    return ("str", 0)


def check_type(key, current, wanted):
    """Reject a value whose shape differs from what the kernel holds now.

    An integer sysctl takes an integer, a 3-vector (tcp_rmem) takes three integers.
    String sysctls (tcp_congestion_control, core_pattern) take any string.
    """
    cur_kind, cur_n = value_shape(current)
    new_kind, new_n = value_shape(wanted)
    if cur_kind == "int":
        if new_kind != "int":
            raise NetstackError("wrong type: expected %s, got %r"
                                % ("an integer" if cur_n == 1 else "%d integers" % cur_n, wanted),
                                field=key)
        if new_n != cur_n:
            raise NetstackError("wrong type: expected %d integer(s) (current value %r), got %d"
                                % (cur_n, current, new_n), field=key)


# --------------------------------------------------------------------------- namespaces

def netns_file(name):
    """Path of a named network namespace; NetstackError naming ``netns`` if it is not there."""
    return nsutil.netns_path(name)


@contextlib.contextmanager
def in_netns(name):
    """Run the body with this thread inside network namespace ``name`` (None: no switch)."""
    if not name:
        yield
        return
    with nsutil.thread_in_netns(netns_file(name)):
        yield


def _in_child_with_sysfs(netns, func, *args):
    """func(*args) in a forked child inside ``netns`` with that namespace's own sysfs.

    OSErrors come back as (errno, text) so callers can map them like local ones.
    """
    path = netns_file(netns)

    def work():
        try:
            return {"ok": func(*args)}
        except (IOError, OSError) as e:
            return {"oserr": [e.errno or 0, e.strerror or str(e)]}

    res = nsutil.in_child(work, setup=lambda: nsutil.enter_netns(path))
    if "oserr" in res:
        raise OSError(res["oserr"][0], res["oserr"][1])
    return res["ok"]


# --------------------------------------------------------------------------- I/O

def _read_file(path):
    with open(path, "r") as f:
        return f.read()


def _write_file(path, text):
    # One write(2) of the whole value, as sysctl(8) does; the kernel parses it at once.
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


class Item(object):
    """One piece of kernel state: (kind, key, netns).

    kind is 'sysctl' (key: dotted name), 'sysfs' (key: absolute /sys path), 'file'
    (key: absolute path of a small configuration file such as a sysctl.d drop-in; its
    value is the whole content, or None when the file is absent), 'irq' (key:
    ``/proc/irq/N/smp_affinity_list``), 'cpuset' (key: a cgroup directory under
    /sys/fs/cgroup; value ``"cpus=2-3 mems=0"``, or None when the cgroup does not exist:
    restoring None moves its tasks to the parent and removes it) or 'unit' (key: a systemd
    unit name; value: its AllowedCPUs, "" when unset; written with ``systemctl
    set-property --runtime`` so nothing persists across a reboot).
    """

    __slots__ = ("kind", "key", "netns", "path")

    def __init__(self, kind, key, netns=None):
        self.kind = kind
        self.netns = netns or None
        if kind == "sysctl":
            rel = sysctl_path(key)
            self.key = sysctl_name(rel)
            self.path = os.path.join(PROC_SYS, rel)
        elif kind == "sysfs":
            self.key = self.path = sysfs_path(key)
        elif kind == "file":
            self.key = self.path = file_path(key)
            self.netns = None
        elif kind == "irq":
            self.key = self.path = irq_path(key)
            self.netns = None
        elif kind == "cpuset":
            self.key = self.path = cgroup_dir(key)
            self.netns = None
        elif kind == "unit":
            self.key = unit_name(key)
            self.path = None
            self.netns = None
        else:
            raise NetstackError("unknown state kind %r" % kind, field="kind")

    def ident(self):
        return (self.kind, self.netns or "", self.key)

    def label(self):
        return self.key if not self.netns else "%s@%s" % (self.key, self.netns)

    def as_dict(self):
        return {"kind": self.kind, "key": self.key, "netns": self.netns}

    # -- access -----------------------------------------------------------------
    def _do(self, fn, *args):
        if self.kind == "sysfs" and self.netns:
            return _in_child_with_sysfs(self.netns, fn, self.path, *args)
        with in_netns(self.netns):
            return fn(self.path, *args)

    def read_raw(self):
        """Like read(), but a 'file' item returns its raw content (None if absent)."""
        if self.kind == "cpuset":
            return cpuset_read(self.path)
        if self.kind == "unit":
            return unit_read(self.key)
        if self.kind != "file":
            return self.read()
        try:
            return _read_file(self.path)
        except (IOError, OSError) as e:
            if e.errno == errno.ENOENT:
                return None
            raise NetstackError("read failed: %s" % (e.strerror or e), field=self.key)

    def write_raw(self, value):
        if self.kind == "cpuset":
            return cpuset_write(self.path, value)
        if self.kind == "unit":
            return unit_write(self.key, value)
        if self.kind != "file":
            return self.write(value)
        try:
            if value is None:
                if os.path.exists(self.path):
                    os.unlink(self.path)
            else:
                atomic_write(self.path, value)
        except (IOError, OSError) as e:
            raise NetstackError("cannot write file: %s" % (e.strerror or e), field=self.key)

    def exists(self):
        try:
            return self._do(_exists)
        except OSError:
            return False

    def read(self):
        """Current normalised value.  Raises NetstackError naming the key."""
        try:
            return normalize_kernel(self._do(_read_file))
        except (IOError, OSError) as e:
            if e.errno == errno.ENOENT:
                where = " in netns %s" % self.netns if self.netns else ""
                raise NetstackError("no such %s%s (%s does not exist)" % (self.kind, where, self.path),
                                    field=self.key)
            if e.errno in (errno.EACCES, errno.EPERM, errno.EINVAL):
                raise NetstackError("cannot be read (%s): a write-only or restricted key cannot be "
                                    "journaled" % os.strerror(e.errno), field=self.key)
            raise NetstackError("read failed: %s" % (e.strerror or e), field=self.key)

    def write(self, value):
        """Write a normalised value; the kernel's refusal becomes a NetstackError naming the key."""
        try:
            self._do(_write_file, value)
        except (IOError, OSError) as e:
            reason = os.strerror(e.errno) if e.errno else str(e)
            hint = ""
            if e.errno == errno.EINVAL:
                hint = " (value out of range or malformed for this key)"
            elif e.errno in (errno.EPERM, errno.EACCES):
                hint = " (not writable here; read-only key or namespace restriction)"
            raise NetstackError("kernel rejected %r: %s%s" % (value, reason, hint), field=self.key,
                                errno=e.errno)


def _exists(path):
    return os.path.exists(path)


def file_path(path):
    """Validate the path of a configuration file the engine may write."""
    if not isinstance(path, str) or not os.path.isabs(path):
        raise NetstackError("file path must be absolute", field=repr(path))
    parts = path.split("/")[1:]
    if any(p in ("", ".", "..") for p in parts):
        raise NetstackError("file path may not contain empty, '.' or '..' components", field=path)
    if path.startswith(("/proc/", "/sys/", "/dev/")):
        raise NetstackError("not a configuration file path", field=path)
    return path


def fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path, text, mode=0o644):
    """Write a file durably: temp file in the same directory, fsync, rename, fsync dir."""
    d = os.path.dirname(path)
    tmp = os.path.join(d, ".%s.netstack-tmp" % os.path.basename(path))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)
    fsync_dir(d)


# --------------------------------------------------------------------------- IRQs

_IRQ_RE = re.compile(r"\A/proc/irq/\d+/smp_affinity_list\Z")


def irq_path(path):
    if isinstance(path, int) or (isinstance(path, str) and path.isdigit()):
        path = "/proc/irq/%s/smp_affinity_list" % path
    if not isinstance(path, str) or not _IRQ_RE.match(path):
        raise NetstackError("IRQ affinity key must be /proc/irq/<n>/smp_affinity_list", field=repr(path))
    return path


# --------------------------------------------------------------------------- cpusets

CGROUP_ROOT = "/sys/fs/cgroup"
_CG_NAME_RE = re.compile(r"\A[A-Za-z0-9_.@:+-]+\Z")


def cgroup_dir(path):
    """Validate a cgroup directory: absolute, under /sys/fs/cgroup, plain components."""
    if not isinstance(path, str) or not path.startswith(CGROUP_ROOT + "/"):
        raise NetstackError("cgroup path must be absolute and under %s" % CGROUP_ROOT, field=repr(path))
    parts = path[len(CGROUP_ROOT) + 1:].split("/")
    if any(p in ("", ".", "..") or not _CG_NAME_RE.match(p) for p in parts):
        raise NetstackError("cgroup path components must be plain names (letters, digits, _.@:+-)", field=path)
    return path


def _cg_file(path, name):
    """cpuset.cpus (v2, v1 with the noprefix mount option: cpus)."""
    p = os.path.join(path, "cpuset." + name)
    return p if os.path.exists(p) else os.path.join(path, name)


def cpuset_read(path):
    """``"cpus=<list> mems=<list>"`` of a cgroup, or None when the directory does not exist."""
    if not os.path.isdir(path):
        return None
    try:
        return "cpus=%s mems=%s" % (_read_file(_cg_file(path, "cpus")).strip(),
                                    _read_file(_cg_file(path, "mems")).strip())
    except (IOError, OSError) as e:
        raise NetstackError("cannot read the cpuset of %s: %s" % (path, e.strerror or e), field=path)


def parse_cpuset_value(value):
    m = re.match(r"\Acpus=(\S*) mems=(\S*)\Z", value or "")
    if not m:
        raise NetstackError("cpuset value must be 'cpus=<list> mems=<list>', got %r" % value, field="cpuset")
    return m.group(1), m.group(2)


def _enable_v2_cpuset(path):
    """On cgroup v2, the cpuset files of ``path`` exist only when every ancestor delegates the
    controller.  Enabling it changes no placement by itself and is left in place."""
    parent = os.path.dirname(path)
    if parent == path or not os.path.exists(os.path.join(parent, "cgroup.subtree_control")):
        return
    if not os.path.exists(os.path.join(parent, "cgroup.controllers")):
        return
    _enable_v2_cpuset(parent)
    ctl = os.path.join(parent, "cgroup.subtree_control")
    if "cpuset" not in _read_file(ctl).split():
        _write_file(ctl, "+cpuset")


def _move_tasks(path):
    """Move every task of cgroup ``path`` to its parent (so the cgroup can be removed)."""
    parent = os.path.dirname(path)
    v2 = os.path.exists(os.path.join(path, "cgroup.controllers"))
    # v1: move thread by thread (``tasks`` lists and takes TIDs); writing a process id to the
    # parent's ``tasks`` moves its main thread only and the rmdir then fails with EBUSY
    src = os.path.join(path, "cgroup.procs" if v2 else "tasks")
    for _attempt in range(5):
        pids = _read_file(src).split()
        if not pids:
            return
        for pid in pids:
            try:
                _write_file(os.path.join(parent, "cgroup.procs" if v2 else "tasks"), pid)
            except (IOError, OSError) as e:
                if e.errno != errno.ESRCH:
                    raise


def cpuset_write(path, value):
    try:
        if value is None:
            if os.path.isdir(path):
                for sub in sorted(os.listdir(path)):
                    if os.path.isdir(os.path.join(path, sub)):
                        raise NetstackError("cannot remove %s: it has a child cgroup %s" % (path, sub), field=path)
                _move_tasks(path)
                os.rmdir(path)
            return
        cpus, mems = parse_cpuset_value(value)
        if not os.path.isdir(path):
            if not os.path.isdir(os.path.dirname(path)):
                raise NetstackError("parent cgroup %s does not exist" % os.path.dirname(path), field=path)
            os.mkdir(path)
        if os.path.exists(os.path.join(path, "cgroup.controllers")):
            _enable_v2_cpuset(path)
        # mems before cpus: a v1 cpuset takes tasks only once both are set
        for name, want in (("mems", mems), ("cpus", cpus)):
            f = _cg_file(path, name)
            if _read_file(f).strip() != want:
                _write_file(f, want if want else "\n")
    except (IOError, OSError) as e:
        reason = os.strerror(e.errno) if e.errno else str(e)
        hint = ""
        if e.errno == errno.EINVAL:
            hint = " (CPUs or memory nodes outside the parent's set, or empty while tasks are inside)"
        elif e.errno == errno.EBUSY:
            hint = " (a child cgroup still uses CPUs being removed)"
        raise NetstackError("cannot set cpuset %r: %s%s" % (value, reason, hint), field=path, errno=e.errno)


# --------------------------------------------------------------------------- systemd units

_UNIT_RE = re.compile(r"\A[A-Za-z0-9:_.@\\-]+\.(service|slice|scope)\Z")


def unit_name(name):
    if not isinstance(name, str) or not _UNIT_RE.match(name):
        raise NetstackError("not a systemd service, slice or scope name", field=repr(name))
    return name


def _systemctl(argv):
    exe = which("systemctl")
    if not exe or not os.path.isdir("/run/systemd/system"):
        raise NetstackError("systemd is not running here: unit CPU fences need it; fence a cgroup instead",
                            field=argv[-1])
    return run([exe] + argv, timeout=30)


def unit_read(name):
    rc, out, err = _systemctl(["show", "-P", "AllowedCPUs", name])
    if rc != 0:
        raise NetstackError("systemctl show failed: %s" % err.strip(), field=name)
    return out.strip()


def unit_write(name, value):
    rc, _out, err = _systemctl(["set-property", "--runtime", name, "AllowedCPUs=%s" % (value or "")])
    if rc != 0:
        raise NetstackError("systemctl set-property failed: %s" % err.strip(), field=name)


def item_from_dict(d):
    return Item(d["kind"], d["key"], d.get("netns"))
