# -*- coding: utf-8 -*-
"""Run one module invocation in a throwaway sandbox and judge what came out.

Used by the property suite (tests/unit/test_properties*.py).  Each case runs in a forked
child that can change nothing on the host:

* the child unshares mount, network and PID namespaces; ``/`` is made rprivate and then
  read-only, recursively (``mount_setattr``), so a write the sandbox did not foresee fails
  with EROFS instead of reaching the host;
* what modules may write is writable again, on throwaway layers: a tmpfs on ``/tmp`` (the
  case's own directory, ``CASE_DIR``, lives there), overlays with tmpfs upper layers over
  ``/etc``, ``/var``, ``/run``, ``/root`` and ``/home`` (so ``/var/lib/netstack``,
  ``/etc/sysctl.d``, ``/run/netstack`` and ``/etc/netstack`` behave as on a host, and every
  file written is visible in the upper layer), a fresh bpffs on ``/sys/fs/bpf``, a tmpfs on
  ``/dev/shm``, and ``/proc/sys/net`` (which is the child's network namespace's own);
* the child's init (PID 1 of its PID namespace) runs the module; when it exits every
  process the module started dies with it, and with the last process the namespaces and
  every mount go too.

Inside, the child snapshots every writable layer before and after the module ran, so the
parent can tell "failed but left a file", "check mode wrote something" and the like.  The
parent reads one JSON payload back through a pipe, with a deadline (a hang is a finding).

The oracle (``judge``) is the suite's contract for every module: a JSON result on stdout
that either succeeds or fails with a message naming the offending field; never a
traceback, never a hang, never a change after a failure, never a write in check mode.
"""

from __future__ import absolute_import, division, print_function

import contextlib
import ctypes
import errno
import fcntl
import fnmatch
import io
import json
import os
import re
import select
import shutil
import signal
import socket
import stat
import struct
import sys
import time
import traceback

from ansible_collections.netstack.tuning.plugins.module_utils.core import nsutil

CLONE_NEWNS, CLONE_NEWNET, CLONE_NEWPID = 0x00020000, 0x40000000, 0x20000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 0x1, 0x2, 0x4, 0x8
MS_REMOUNT, MS_BIND, MS_MOVE, MS_REC, MS_PRIVATE = 0x20, 0x1000, 0x2000, 0x4000, 0x40000
MNT_DETACH = 2
SYS_MOUNT_SETATTR = 442  # x86_64 and aarch64 share it (asm-generic numbering since 5.12)
AT_FDCWD, AT_RECURSIVE = -100, 0x8000
MOUNT_ATTR_RDONLY = 0x1

CASE_DIR = "/tmp/nsprop"            # inside the child's own /tmp tmpfs
WORK_DIR = CASE_DIR + "/work"       # the module's cwd (relative paths land here)
STATE_DIR = CASE_DIR + "/state"     # state_dir-like options point here by default
ANSIBLE_TMP = CASE_DIR + "/.ansible-tmp"
OVERLAY_ROOT = "/tmp/.ov"
OVERLAID = ("/etc", "/var", "/run", "/root", "/home")
HIDDEN = ("/var/lib/netstack", "/var/log/netstack", "/run/netstack", "/etc/netstack", "/run/netns")
# what the snapshot shows as "host places" a module may write (overlay upper dirs name them)
NETSTACK_PLACES = ("/var/lib/netstack", "/var/log/netstack", "/etc/sysctl.d", "/run/netstack", "/etc/netstack",
                   "/sys/fs/bpf")
CASE_TIMEOUT = 20.0
OUT_LIMIT = 200000


class WorkReached(BaseException):
    """Raised by a tripwire: the module got past validation to real work (a benchmark, a
    BPF load, a cgroup/IRQ write) that the sandbox must not run."""


# ------------------------------------------------------------------ syscalls

def _libc():
    return nsutil.libc()


def _mount(src, target, fstype, flags=0, data=None):
    enc = (lambda s: s.encode() if isinstance(s, str) else s)
    nsutil.libc_call("mount", "mount %s on %s" % (fstype or src, target), enc(src or ""), enc(target),
                     enc(fstype or ""), ctypes.c_ulong(flags), enc(data) if data else None)


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def _mount_setattr(path, attr_set=0, attr_clr=0, recursive=False):
    attr = _MountAttr(attr_set, attr_clr, 0, 0)
    rc = _libc().syscall(ctypes.c_long(SYS_MOUNT_SETATTR), ctypes.c_int(AT_FDCWD), path.encode(),
                         ctypes.c_uint(AT_RECURSIVE if recursive else 0), ctypes.byref(attr),
                         ctypes.c_size_t(ctypes.sizeof(attr)))
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, "mount_setattr(%s): %s" % (path, os.strerror(err)))


def _lo_up():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        ifr = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s.fileno(), 0x8913, ifr))[1]  # SIOCGIFFLAGS
        fcntl.ioctl(s.fileno(), 0x8914, struct.pack("16sH14x", b"lo", flags | 0x1))  # SIOCSIFFLAGS IFF_UP
    finally:
        s.close()


def _setup_sandbox():
    """In the child's PID 1, with private mount, net and PID namespaces already made."""
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    _mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777,size=512m")
    # a sysfs of this network namespace (as `ip netns exec` does), keeping the cgroup tree
    os.makedirs("/tmp/.cg")
    have_cg = os.path.ismount("/sys/fs/cgroup")
    if have_cg:
        _mount("/sys/fs/cgroup", "/tmp/.cg", None, MS_BIND | MS_REC)
    _libc().umount2(b"/sys", MNT_DETACH)
    _mount("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    if have_cg:
        _mount("/tmp/.cg", "/sys/fs/cgroup", None, MS_MOVE)
    # everything read-only, recursively, then the throwaway layers on top
    _mount_setattr("/", attr_set=MOUNT_ATTR_RDONLY, recursive=True)
    _mount_setattr("/tmp", attr_clr=MOUNT_ATTR_RDONLY)
    for d in OVERLAID:
        if not os.path.isdir(d) or os.path.islink(d):
            continue
        base = OVERLAY_ROOT + d
        for sub in ("/l", "/u", "/w"):
            os.makedirs(base + sub)
        _mount(d, base + "/l", None, MS_BIND)   # the host's view, to tell a copy-up from a change
        _mount("overlay", d, "overlay", 0, "lowerdir=%s/l,upperdir=%s/u,workdir=%s/w" % (base, base, base))
    for d in HIDDEN:   # netstack's own places start empty, whatever another run left on the host
        if os.path.isdir(d) and not os.path.islink(d):
            for name in os.listdir(d):
                full = os.path.join(d, name)
                if os.path.isdir(full) and not os.path.islink(full):
                    shutil.rmtree(full)
                else:
                    os.unlink(full)
    if os.path.isdir("/sys/fs/bpf"):
        _mount("bpf", "/sys/fs/bpf", "bpf", 0, "mode=0700")
    if os.path.isdir("/dev/shm"):
        _mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777,size=64m")
    _mount("/proc/sys/net", "/proc/sys/net", None, MS_BIND)
    _mount_setattr("/proc/sys/net", attr_clr=MOUNT_ATTR_RDONLY)
    _lo_up()
    for d in (CASE_DIR, WORK_DIR, STATE_DIR, ANSIBLE_TMP):
        os.makedirs(d, exist_ok=True)
    os.chdir(WORK_DIR)
    os.environ["HOME"] = "/root"
    os.environ["TMPDIR"] = "/tmp"


# ------------------------------------------------------------------ snapshots (in the child)

SNAP_SKIP = (OVERLAY_ROOT + "/", "/tmp/.cg", ANSIBLE_TMP)
MAX_SNAP_READ = 1 << 16


def _walk(root, shown_as=None, skip=(), lower=None):
    """{path: (type, mode, digest-ish)} for every entry under ``root``.  With ``lower`` (an
    overlay's lower dir), entries equal to their lower counterpart are left out: a copy-up
    (a directory a new file was made in, a file opened for writing but not changed) is no
    change."""
    out = {}
    shown_as = shown_as or root
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        if any((os.path.join(root, rel) + "/").startswith(s) for s in skip):
            dirnames[:] = []
            continue
        for name in sorted(dirnames + filenames):
            full = os.path.join(dirpath, name)
            if any(full.startswith(s.rstrip("/")) for s in skip):
                continue
            shown = os.path.normpath(os.path.join(shown_as, rel, name))
            try:
                st = os.lstat(full)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                try:
                    with open(full, "rb") as f:
                        data = f.read(MAX_SNAP_READ)
                    sig = "%d:%x" % (st.st_size, hash(data) & 0xffffffff)
                except OSError as e:
                    sig = "unreadable:%s" % e.errno
                out[shown] = ("f", oct(st.st_mode & 0o7777), sig)
            elif stat.S_ISDIR(st.st_mode):
                out[shown] = ("d", oct(st.st_mode & 0o7777), "")
            elif stat.S_ISLNK(st.st_mode):
                out[shown] = ("l", "", os.readlink(full))
            elif stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                out[shown] = ("whiteout", "", "")   # an overlay deletion
            else:
                out[shown] = ("o", oct(st.st_mode), "")
            if lower is not None and out[shown][0] != "whiteout":
                low = os.path.join(lower, rel, name)
                if os.path.lexists(low) and _walk_one(low) == out[shown]:
                    del out[shown]
    return out


def _walk_one(path):
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if stat.S_ISREG(st.st_mode):
        try:
            with open(path, "rb") as f:
                data = f.read(MAX_SNAP_READ)
            sig = "%d:%x" % (st.st_size, hash(data) & 0xffffffff)
        except OSError as e:
            sig = "unreadable:%s" % e.errno
        return ("f", oct(st.st_mode & 0o7777), sig)
    if stat.S_ISDIR(st.st_mode):
        return ("d", oct(st.st_mode & 0o7777), "")
    if stat.S_ISLNK(st.st_mode):
        return ("l", "", os.readlink(path))
    return ("o", oct(st.st_mode), "")


def sysctl_names_in(args):
    """Sysctl-looking keys and names the arguments mention (dotted ``net.`` names)."""
    names = set()

    def visit(v):
        if isinstance(v, dict):
            for k, x in v.items():
                if isinstance(k, str):
                    names.add(k)
                visit(x)
        elif isinstance(v, (list, tuple)):
            for x in v:
                visit(x)
        elif isinstance(v, str):
            names.add(v)
    visit(args)
    ok = re.compile(r"^[a-z0-9_]+([./][a-zA-Z0-9_-]+){1,5}$")
    return sorted(n.replace("/", ".") for n in names if len(n) < 120 and ok.match(n) and n.startswith("net"))


FIXED_SYSCTLS = ("net.core.somaxconn", "net.ipv4.tcp_congestion_control", "net.ipv4.tcp_keepalive_time",
                 "net.ipv4.ip_local_port_range", "net.ipv4.tcp_rmem")


def _read_sysctls(names):
    out = {}
    for n in names:
        try:
            with open("/proc/sys/" + n.replace(".", "/")) as f:
                out[n] = f.read(4096).strip()
        except (OSError, UnicodeDecodeError):
            out[n] = None
    return out


def sandbox_snapshot(args):
    snap = {}
    for d in OVERLAID:
        up = OVERLAY_ROOT + d + "/u"
        if os.path.isdir(up):
            snap.update(_walk(up, shown_as=d, lower=OVERLAY_ROOT + d + "/l"))
    snap.update(_walk("/tmp", skip=SNAP_SKIP))
    for d in ("/sys/fs/bpf", "/dev/shm"):
        if os.path.isdir(d):
            snap.update(_walk(d))
    for k, v in _read_sysctls(sorted(set(FIXED_SYSCTLS) | set(sysctl_names_in(args)))).items():
        snap["sysctl:" + k] = ("s", "", v)
    return snap


def snapshot_diff(before, after):
    diff = []
    for k in sorted(set(before) | set(after)):
        b, a = before.get(k), after.get(k)
        if b != a:
            if b is None:
                diff.append("created %s [%s]" % (k, a[0]))
            elif a is None:
                diff.append("removed %s [%s]" % (k, b[0]))
            else:
                diff.append("changed %s (%s -> %s)" % (k, _short(b), _short(a)))
    return diff


def _short(v, n=80):
    s = repr(v)
    return s if len(s) <= n else s[:n] + "..."


# ------------------------------------------------------------------ the host (in the parent)

HOST_DIRS = ("/var/lib/netstack", "/var/log/netstack", "/etc/sysctl.d", "/run/netstack", "/etc/netstack",
             "/sys/fs/bpf", "/sys/fs/bpf/netstack", "/run/netns", "/etc/netstack/agent.d")


def host_snapshot(args):
    """A cheap look at the real host: the netstack places, named netns, BPF pins, and the
    sysctls the arguments name (host namespace)."""
    snap = {}
    for d in HOST_DIRS:
        try:
            snap["ls:" + d] = tuple(sorted(os.listdir(d)))
        except OSError as e:
            snap["ls:" + d] = "E%d" % e.errno
    names = set(FIXED_SYSCTLS) | set(sysctl_names_in(args))
    for k, v in _read_sysctls(sorted(names)).items():
        snap["sysctl:" + k] = v
    return snap


def host_changes(before, after, args, pid):
    """Differences a case can be blamed for.  Another suite may run on this machine at the
    same time (namespaces, pins, sysctls come and go), so a difference counts only when it
    carries the case's mark: a new entry named after the child's pid or after a string of
    the arguments, or a sysctl that now holds a value the arguments asked for."""
    strings = set()

    def visit(v):
        if isinstance(v, dict):
            for k, x in v.items():
                visit(k)
                visit(x)
        elif isinstance(v, (list, tuple)):
            for x in v:
                visit(x)
        elif isinstance(v, (str, int, float)) and not isinstance(v, bool):
            s = str(v)
            if 3 <= len(s) <= 300:
                strings.add(s)
    visit(args)
    blamed = []
    for k in sorted(set(before) | set(after)):
        b, a = before.get(k), after.get(k)
        if b == a:
            continue
        if k.startswith("ls:"):
            new = set(a if isinstance(a, tuple) else ()) - set(b if isinstance(b, tuple) else ())
            for n in sorted(new):
                if str(pid) in n or any(s in n or n in s for s in strings if len(n) >= 3):
                    blamed.append("%s: new entry %s" % (k[3:], n))
        elif k.startswith("sysctl:") and a is not None and a != b:
            if any(re.sub(r"\s+", " ", s.strip()) == re.sub(r"\s+", " ", a) for s in strings):
                blamed.append("%s: %r -> %r" % (k, b, a))
    return blamed


# ------------------------------------------------------------------ running main() in-process

@contextlib.contextmanager
def _captured_fds():
    """Point fd 1/2 and sys.stdout/sys.stderr at memfds; yield a dict filled on exit."""
    box = {}
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    out_fd, err_fd = os.memfd_create("stdout"), os.memfd_create("stderr")
    old = sys.stdout, sys.stderr
    os.dup2(out_fd, 1)
    os.dup2(err_fd, 2)
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8", errors="surrogateescape",
                                  line_buffering=False)
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), encoding="utf-8", errors="surrogateescape")
    try:
        yield box
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except Exception:
            pass
        sys.stdout, sys.stderr = old
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd, key in ((out_fd, "stdout"), (err_fd, "stderr")):
            os.lseek(fd, 0, 0)
            data = os.read(fd, OUT_LIMIT)
            box[key] = data.decode("utf-8", "replace")
            os.close(fd)
        os.close(saved[0])
        os.close(saved[1])


def module_args(args, check_mode, diff=False):
    full = dict(args)
    full.update(_ansible_check_mode=bool(check_mode), _ansible_diff=bool(diff), _ansible_tmpdir=ANSIBLE_TMP,
                _ansible_remote_tmp=ANSIBLE_TMP, _ansible_keep_remote_files=False)
    return full


def call_main(main, args, check_mode, diff=False):
    """Run ``main()`` with ``args`` as ansible-core's unit tests do.  Returns a dict:
    exit (SystemExit code or None), exception (text of anything else that escaped), work
    (a tripwire's message), stdout, stderr, result (the parsed JSON or None)."""
    from ansible.module_utils.testing import patch_module_args
    out = {"exit": None, "exception": None, "work": None}
    with _captured_fds() as box:
        try:
            with patch_module_args(module_args(args, check_mode, diff)):
                main()
            out["exception"] = "main() returned without exit_json/fail_json"
        except SystemExit as e:
            out["exit"] = e.code if isinstance(e.code, int) else str(e.code)
        except WorkReached as e:
            out["work"] = str(e)
        except BaseException as e:
            out["exception"], out["exception_sig"] = describe_exception(e)
    out["stdout"], out["stderr"] = box["stdout"], box["stderr"][-4000:]
    out["result"] = parse_result(out["stdout"])
    if len(out["stdout"]) > 20000:
        out["stdout"] = out["stdout"][:20000] + "...(cut)"
    return out


def describe_exception(e):
    """(text, signature) of an exception: the last frames and a message cut to size, and
    'Type at file:line function' of the deepest frame in the project or ansible (the
    place to fix), so 5,000-character names do not make every case a different finding."""
    tb = traceback.extract_tb(e.__traceback__)
    ours = [f for f in tb if "/plugins/" in f.filename or "/ansible/" in f.filename] or tb
    f = ours[-1] if ours else None
    where = "%s:%s %s" % (os.path.basename(f.filename), f.lineno, f.name) if f else "?"
    msg = str(e)
    if len(msg) > 300:
        msg = msg[:300] + "...(%d chars)" % len(msg)
    text = "Traceback (most recent call last):\n" + "".join(traceback.format_list(tb[-8:])) + \
        "%s: %s" % (type(e).__name__, msg)
    return text, "%s at %s" % (type(e).__name__, where)


def parse_result(stdout):
    """The module's JSON object: the last line of stdout that is one, as Ansible reads it."""
    text = stdout.strip()
    if not text:
        return None
    try:
        r = json.loads(text)
        return r if isinstance(r, dict) else None
    except ValueError:
        pass
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                r = json.loads(line)
                return r if isinstance(r, dict) else None
            except ValueError:
                continue
    return None


# ------------------------------------------------------------------ one case in a sandbox

def _child(w, runner, args, check_mode, diff, setup):
    """PID 1 of the case's PID namespace.  Never returns."""
    payload = {}
    try:
        _setup_sandbox()
        args = setup(args) if setup else args
        before = sandbox_snapshot(args)
        t0 = time.time()
        payload.update(runner(args, check_mode, diff))
        payload["seconds"] = round(time.time() - t0, 3)
        payload["args_used"] = _jsonable(args)
        after = sandbox_snapshot(args)
        payload["changes"] = snapshot_diff(before, after)
    except BaseException:
        payload["harness_error"] = traceback.format_exc()[-4000:]
    try:
        data = json.dumps(payload, default=repr).encode("utf-8", "surrogateescape")
    except Exception:
        data = json.dumps({"harness_error": "payload not JSON-able: " + traceback.format_exc()[-2000:]}).encode()
    try:
        while data:
            data = data[os.write(w, data):]
    finally:
        os._exit(0)


def _jsonable(v):
    try:
        json.dumps(v)
        return v
    except (TypeError, ValueError):
        return repr(v)


def run_case(runner, args, check_mode=False, diff=False, setup=None, timeout=CASE_TIMEOUT):
    """Fork a sandboxed child, run ``runner(args, check_mode, diff)`` there, return its payload
    (plus ``timed_out``, ``pid`` and ``wall``)."""
    r, w = os.pipe()
    t0 = time.time()
    pid = os.fork()
    if pid == 0:
        # intermediate: its own session (so the parent can kill the group), new namespaces,
        # then a fork whose child is PID 1 of the new PID namespace
        code = 0
        try:
            os.close(r)
            os.setsid()
            global HOST_NETNS_FD
            HOST_NETNS_FD = os.open("/proc/self/ns/net", os.O_RDONLY)
            host_mnt = os.readlink("/proc/self/ns/mnt")
            nsutil.libc_call("unshare", "unshare", CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID)
            if os.readlink("/proc/self/ns/mnt") == host_mnt:
                raise OSError(errno.EPERM, "no private mount namespace")
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            init = os.fork()
            if init == 0:
                _child(w, runner, args, check_mode, diff, setup)
            os.close(w)
            _p, status = os.waitpid(init, 0)
            code = os.waitstatus_to_exitcode(status) & 0xff
        except BaseException:
            try:
                os.write(w, json.dumps({"harness_error": traceback.format_exc()[-2000:]}).encode())
            except Exception:
                pass
            code = 70
        os._exit(code)
    os.close(w)
    chunks, timed_out = [], False
    deadline = t0 + timeout
    try:
        while True:
            left = deadline - time.time()
            ready = select.select([r], [], [], max(0.0, left))[0] if left > 0 else []
            if not ready:
                timed_out = True
                break
            chunk = os.read(r, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(r)
        if timed_out:
            _kill_group(pid)
        os.waitpid(pid, 0)
        _kill_group(pid)  # stragglers of the session, if any escaped the PID namespace
    wall = round(time.time() - t0, 3)
    if timed_out:
        return {"timed_out": True, "pid": pid, "wall": wall}
    try:
        payload = json.loads(b"".join(chunks).decode("utf-8", "surrogateescape"))
    except ValueError:
        payload = {"harness_error": "child died without an answer (%d bytes)" % sum(map(len, chunks))}
    payload.update(timed_out=False, pid=pid, wall=wall)
    return payload


HOST_NETNS_FD = None


def in_host_netns_readonly(fn, timeout=15.0):
    """In the sandbox: run ``fn()`` in a grandchild that re-entered the host's network
    namespace with /proc/sys/net read-only (the rest of the root is read-only already), and
    return its JSON-able result.  For probes that must see the host's sysctls (the study's
    inspection of host-wide keys); never for anything that writes."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            nsutil.libc_call("setns", "setns(host netns)", HOST_NETNS_FD, CLONE_NEWNET)
            nsutil.libc_call("unshare", "unshare(CLONE_NEWNS)", CLONE_NEWNS)
            _mount_setattr("/proc/sys/net", attr_set=MOUNT_ATTR_RDONLY)
            data = json.dumps({"r": fn()}, default=repr)
        except BaseException as e:
            data = json.dumps({"e": describe_exception(e)[0]})
        data = data.encode("utf-8", "surrogateescape")
        while data:
            data = data[os.write(w, data):]
        os._exit(0)
    os.close(w)
    chunks, deadline = [], time.time() + timeout
    while True:
        ready = select.select([r], [], [], max(0.0, deadline - time.time()))[0]
        if not ready:
            os.kill(pid, signal.SIGKILL)
            break
        c = os.read(r, 1 << 16)
        if not c:
            break
        chunks.append(c)
    os.close(r)
    os.waitpid(pid, 0)
    out = json.loads(b"".join(chunks).decode("utf-8", "surrogateescape") or '{"e": "no answer"}')
    if "e" in out:
        raise RuntimeError("host-netns probe failed: %s" % out["e"])
    return out["r"]


def _kill_group(pgid):
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass


def sandbox_works():
    """None when a case can run here, else why not (not root, no namespaces, ...)."""
    if os.geteuid() != 0:
        return "needs root (namespaces, mounts)"
    res = run_case(lambda a, c, d: {"ok": os.path.exists(WORK_DIR)}, {}, timeout=30)
    if res.get("harness_error") or not res.get("ok"):
        return "the sandbox cannot be made here: %s" % (res.get("harness_error") or res)
    return None


# ------------------------------------------------------------------ the argument spec, from the module itself

PKG = "ansible_collections.netstack.tuning"


class _Captured(Exception):
    pass


def module_spec(name):
    """The keyword arguments the module gives AnsibleModule (argument_spec, mutually_exclusive,
    required_if, ...), captured by running its main() against a stand-in that stops there.
    A module that is an action plugin on the controller (sysctl_study: its file is
    documentation only) has its spec in the action plugin's ``ARGS``."""
    import importlib
    mod = importlib.import_module(PKG + ".plugins.modules." + name)
    if not hasattr(mod, "main"):
        act = importlib.import_module(PKG + ".plugins.action." + name)
        return {"argument_spec": act.ARGS, "supports_check_mode": True}, "action"
    box = {}

    class Capture(object):
        def __init__(self, *a, **kw):
            box.update(kw)
            raise _Captured()
    # Modules build NetstackModule (plugins/module_utils/core/frontend.py), an AnsibleModule.
    cls_name = "NetstackModule" if hasattr(mod, "NetstackModule") else "AnsibleModule"
    orig, sigterm = getattr(mod, cls_name), signal.getsignal(signal.SIGTERM)
    setattr(mod, cls_name, Capture)
    try:
        mod.main()
    except _Captured:
        pass
    finally:
        setattr(mod, cls_name, orig)
        signal.signal(signal.SIGTERM, sigterm)
    if "argument_spec" not in box:
        raise AssertionError("%s: main() did not build an AnsibleModule" % name)
    return box, "module"


def doc_keys(name, option):
    """Keys a dict option's documentation names (``C(key)``), for plausible dicts."""
    import importlib
    import yaml
    mod = importlib.import_module(PKG + ".plugins.modules." + name)
    doc = yaml.safe_load(mod.DOCUMENTATION)
    desc = (doc.get("options", {}).get(option) or {}).get("description") or []
    text = " ".join(desc if isinstance(desc, list) else [desc])
    return sorted(set(k for k in re.findall(r"C\(([A-Za-z_][A-Za-z0-9_]*)\)", text)))


def doc_scopes(name):
    """{option: {other option: value}} for options whose documentation starts "With
    O(action=collect), ..." or "With O(mode=oneshot) and O(state=present)": what they
    hold does not matter in another mode."""
    import importlib
    import yaml
    mod = importlib.import_module(PKG + ".plugins.modules." + name)
    if not getattr(mod, "DOCUMENTATION", None):
        return {}
    doc = yaml.safe_load(mod.DOCUMENTATION) or {}
    out = {}
    for opt, o in (doc.get("options") or {}).items():
        desc = o.get("description") or []
        first = (desc[0] if isinstance(desc, list) and desc else str(desc))
        m = re.match(r"^With ((?:O\(\w+=[^)]+\)(?:,? and )?)+)", first)
        if m:
            out[opt] = dict(re.findall(r"O\((\w+)=([^)]+)\)", m.group(1)))
    return out


def in_doc_scope(scope, args, spec):
    for k, want in (scope or {}).items():
        have = args.get(k, (spec.get(k) or {}).get("default"))
        if str(have).lower() != str(want).lower():
            return False
    return True


def all_option_names(spec):
    names = set()
    for k, o in spec.items():
        names.add(k)
        names.update(o.get("aliases") or [])
        if o.get("options"):
            names |= all_option_names(o["options"])
    return names


# ------------------------------------------------------------------ values

BIG_DIGITS = "9" * 5000
LONG_NAME = "n" * 5000
EVIL_STRINGS = [
    "", " ", "\x00", "a\x00b", "x" * 5000, "\u00e9\u4e2d\U0001f600" * 50, "\u0663\u0664\u0665", "\uff11\uff12",
    "\u202ertl", "line\nbreak", "nan", "NaN", "inf", "-inf", "Infinity", "1e400", "-1e400", BIG_DIGITS,
    "-" + BIG_DIGITS, "0x10", "1_000", " 5 ", "-1", "00", "1.5", "True", "None", "null", "{{ 7*7 }}", "$(id)",
    "; true", "%s%n", "*", "?", "[a-z]",
]
PATH_TRICKS = [
    "..", "../..", "../../etc", "/proc/self/environ", "/proc/self/fd/1", "/proc/sys/vm", "relative/path", "./x",
    "/", "//", "/tmp/nsprop/../../etc", "/tmp/" + LONG_NAME, "/tmp/nsprop/a\x00b", "/etc/passwd", "/dev/null",
    "~", "~nosuchuser/x", "/sys/fs/bpf/../../..", "/var/lib/netstack/../../../etc", "/tmp/nsprop/state/",
]
EVIL_NUMBERS = [-1, 0, -10 ** 30, 10 ** 30, 2 ** 31, 2 ** 63, 2 ** 64, -2 ** 63 - 1, float("nan"), float("inf"),
                float("-inf"), 1e308, -0.0, 0.5, 1e-300]
WRONG_SHAPES = [None, {}, {"a": 1}, {"a": {"b": [None]}}, [], [1, "a"], [[]], [None], True, False]
EVIL_KEYS = ["", "\x00", "a\x00b", "../..", "/proc/self/environ", "x" * 5000, "\u0663", "k" * 300, ".", "a.b..c",
             "net.ipv4..tcp_rmem", "net/ipv4/../../vm/swappiness", "kernel.sysrq", "vm.swappiness", "1e400",
             BIG_DIGITS, "nan", " net.core.somaxconn", "NET.CORE.SOMAXCONN"]
PLAIN = "abcdefghijklmnopqrstuvwxyz0123456789_-."

# one-factor sweep: per option type, the values every option of that type gets ("core"),
# and values of which each option gets two, in rotation over the options ("rotating"), so
# every value meets several options without multiplying the cases
SWEEP_CORE = {
    "str": ["a\x00b", "x" * 5000, BIG_DIGITS],
    "path": ["/tmp/nsprop/a\x00b", "/proc/self/environ", "/", "relative/dir"],
    "int": [-1, 10 ** 30],
    "float": ["nan", "1e400"],
    "bool": [],
    "list": [["a\x00b"], ["x" * 5000]],
    "dict": [{"": 1}, {"a\x00b": 1}],
    "raw": ["a\x00b", BIG_DIGITS, "1e400", float("nan"), 10 ** 30],
}
SWEEP_ROTATING = {
    "str": [{"a": 1}, "", "\u0663\u0664", "../..", "1e400", 5],
    "path": [{"a": 1}, "", "../../etc", "/tmp/" + LONG_NAME, "..", "/dev/null"],
    "int": [BIG_DIGITS, "abc", float("nan"), [1], 1.5, "1e400", "\u0663", -10 ** 30, "0x10"],
    "float": [float("inf"), -1, "abc", BIG_DIGITS, "-inf", 10 ** 30],
    "bool": ["maybe", {"a": 1}, 2],
    "list": [[""], [BIG_DIGITS], ["nan"], ["\u0663\u0664"], [{"a": 1}], [None], "a,b", {"a": 1}, ["../.."], 5],
    "dict": [[], "k=v", {}, {"k": {"n": [1]}}, 5],
    "raw": ["", "nan", -1, [], "\u0663", {"a": 1}],
}
SWEEP = dict((t, SWEEP_CORE[t] + SWEEP_ROTATING[t]) for t in SWEEP_CORE)


def sweep_values(typ, index):
    """The sweep's values for the ``index``-th option of type ``typ``."""
    core, rot = SWEEP_CORE.get(typ, SWEEP_CORE["raw"]), SWEEP_ROTATING.get(typ, SWEEP_ROTATING["raw"])
    n = 1 if typ == "bool" else 2
    return core + [rot[(n * index + k) % len(rot)] for k in range(n)]


DICT_VALUE_SWEEP = ["", "9" * 5000, "1e400", "nan", float("nan"), float("inf"), "\u0663\u0664\u0665", "-1", 10 ** 30,
                    "7\x00", "x" * 5000, [1], {"a": 1}, True, 1.5, "4096 1e400 6291456"]
SWEEP_KEYS = ["", "a\x00b", "../..", "x" * 5000, "\u0663", "net/ipv4/../../vm/swappiness", "kernel.sysrq", BIG_DIGITS]


def _weighted(*pairs):
    """st.one_of with integer weights: ((3, s1), (1, s2))."""
    from hypothesis import strategies as st
    flat = []
    for w, s in pairs:
        flat += [s] * w
    return st.sampled_from(list(range(len(flat)))).flatmap(lambda i: flat[i])


def scalar_evil():
    from hypothesis import strategies as st
    return st.one_of(st.sampled_from(EVIL_STRINGS), st.sampled_from(PATH_TRICKS), st.sampled_from(EVIL_NUMBERS),
                     st.sampled_from(WRONG_SHAPES), st.text(max_size=12), st.integers(-10 ** 40, 10 ** 40))


def _typ(o):
    t = o.get("type", "str")
    return t if isinstance(t, str) else "raw"


class Values(object):
    """Strategies for one module's options: valid-shaped, evil, and forced-invalid."""

    def __init__(self, spec, hints=None, dict_keys=None, dir_paths=None):
        self.spec = spec
        self.hints = hints or {}            # option (or "opt.sub") -> strategy of plausible values
        self.dict_keys = dict_keys or {}    # dict option -> plausible keys
        self.dir_paths = dir_paths or [CASE_DIR + "/d", STATE_DIR, CASE_DIR + "/new/sub", WORK_DIR]

    # -- valid-shaped
    def valid(self, name, o, path=None):
        from hypothesis import strategies as st
        key = path or name
        if key in self.hints:
            return self.hints[key]
        t, el = _typ(o), o.get("elements")
        if o.get("choices"):
            if t == "list":
                return st.lists(st.sampled_from(o["choices"]), min_size=1, max_size=3, unique=True)
            return st.sampled_from(o["choices"])
        if t == "bool":
            return st.booleans()
        if t == "int":
            return st.one_of(st.integers(0, 64), st.integers(0, 10 ** 6))
        if t == "float":
            return st.floats(0, 1000, allow_nan=False, allow_infinity=False)
        if t == "path":
            return st.sampled_from(self.dir_paths)
        if t == "list":
            if o.get("options"):
                return st.lists(self.valid_suboptions(key, o["options"]), min_size=1, max_size=2)
            return st.lists(self.valid(name, {"type": el or "str"}, key + "[]"), max_size=3)
        if t == "dict":
            if o.get("options"):
                return self.valid_suboptions(key, o["options"])
            keys = self.dict_keys.get(key) or [PLAIN[:3], "key"]
            return st.dictionaries(st.sampled_from(keys), self.plain_scalar(), max_size=3)
        if t == "raw":
            return st.one_of(st.text(PLAIN, min_size=1, max_size=10), st.integers(0, 100))
        return st.text(PLAIN, min_size=1, max_size=12)

    def plain_scalar(self):
        from hypothesis import strategies as st
        return st.one_of(st.integers(0, 10 ** 6), st.text(PLAIN, min_size=1, max_size=8), st.booleans(),
                         st.floats(0, 100, allow_nan=False))

    def valid_suboptions(self, key, subs):
        from hypothesis import strategies as st
        req = dict((k, self.valid(k, o, key + "." + k)) for k, o in subs.items() if o.get("required"))
        opt = dict((k, self.valid(k, o, key + "." + k)) for k, o in subs.items() if not o.get("required"))
        return st.fixed_dictionaries(req, optional=opt)

    # -- evil
    def evil(self, name, o, path=None):
        from hypothesis import strategies as st
        key = path or name
        t = _typ(o)
        sweep = st.sampled_from(SWEEP.get(t, SWEEP["raw"]))
        if t == "path":
            return st.one_of(sweep, st.sampled_from(PATH_TRICKS), st.text(max_size=16))
        if t == "list":
            el = o.get("elements") or "str"
            if o.get("options"):
                return st.one_of(sweep, st.lists(self.evil_suboptions(key, o["options"]), min_size=1, max_size=2))
            return st.one_of(sweep, st.lists(st.one_of(scalar_evil(), self.valid(name, {"type": el}, key + "[]")),
                                             min_size=1, max_size=3))
        if t == "dict":
            if o.get("options"):
                return st.one_of(sweep, self.evil_suboptions(key, o["options"]))
            keys = self.dict_keys.get(key) or ["key"]
            return st.one_of(
                sweep,
                st.dictionaries(st.one_of(st.sampled_from(keys), st.sampled_from(EVIL_KEYS)),
                                st.one_of(st.sampled_from(DICT_VALUE_SWEEP), scalar_evil(), self.plain_scalar()),
                                min_size=1, max_size=3))
        return st.one_of(sweep, scalar_evil())

    def evil_suboptions(self, key, subs):
        """A valid sub-dict with one sub-option made evil (or an unknown one added)."""
        from hypothesis import strategies as st
        names = sorted(subs)

        def spoil(d_i):
            d, i = d_i
            return st.one_of(self.evil(names[i], subs[names[i]], key + "." + names[i]),
                             st.just(None)).map(lambda v: dict(d, **{names[i]: v}))
        return st.tuples(self.valid_suboptions(key, subs), st.integers(0, len(names) - 1)).flatmap(spoil) | \
            self.valid_suboptions(key, subs).map(lambda d: dict(d, nsprop_unknown_sub=1))

    # -- forced invalid: rejected before any work, by AnsibleModule or by the module's own checks
    def forced_candidates(self, extra=()):
        """[(description, option, value)] every one of which the module must reject."""
        out = [("unknown option", "nsprop_unknown_option", "x")]
        for name in sorted(self.spec):
            o = self.spec[name]
            t = _typ(o)
            if o.get("choices"):
                out.append(("value not in choices", name, ["nsprop-bogus"] if t == "list" else "nsprop-bogus"))
            if t in ("int", "float", "bool", "list"):
                out.append(("unconvertible type", name, {"nsprop": {"x": 1}}))
            if t == "dict":
                out.append(("unconvertible type", name, [["nsprop"]]))
            if t == "int":
                out += [("absurd int", name, 10 ** 30), ("absurd int", name, -10 ** 30)]
            if t == "float":
                out += [("non-finite float", name, float("nan")), ("non-finite float", name, "1e400"),
                        ("non-finite float", name, float("-inf"))]
            if t == "path":
                out.append(("NUL in path", name, "/tmp/nsprop/st\x00ate"))
        out += list(extra)
        return out


def compact(v, n=60):
    """A short repr for reports: long strings as 'c'*N or a prefix with their length."""
    if isinstance(v, str):
        if len(v) > n:
            if len(set(v)) == 1:
                return "%r*%d" % (v[0], len(v))
            if len(set(v[n:])) == 1:
                return "%r+%r*%d" % (v[:n - 20].rstrip(v[-1]) or v[:1], v[-1], len(v) - len(v[:n - 20].rstrip(v[-1])))
            return "%r...(%d chars)" % (v[:n], len(v))
        return repr(v)
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) >= 10 ** 12:
        s = str(abs(v))
        if s == "1" + "0" * (len(s) - 1):
            return "%s10**%d" % ("-" if v < 0 else "", len(s) - 1)
        return "%sint(%d digits)" % ("-" if v < 0 else "", len(s))
    if isinstance(v, float) and v != v:
        return "nan"
    if isinstance(v, dict):
        return "{" + ", ".join("%s: %s" % (compact(k, n), compact(x, n)) for k, x in v.items()) + "}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(compact(x, n) for x in v) + "]"
    return repr(v)


# ------------------------------------------------------------------ the oracle

GENERIC_NAMES = {"name", "state", "action", "mode", "format", "keys", "title", "output", "report", "src", "map",
                 "type", "stop", "serve", "keep", "peer", "netns", "function", "hosts", "names", "direction",
                 "interface", "sizes", "modes", "paths", "protocols", "threads", "timeout", "duration", "repeats",
                 "interval", "space", "bench", "trials", "seed", "storage", "rules", "program", "cgroup"}


def known_names(spec, args):
    """(option names, input keys): the options (and sub-options) a message may name, and
    the keys of dict arguments and the elements of list arguments (a sysctl name, an
    interface, a source file) it may name instead."""
    options = all_option_names(spec) | set(k for k in args if isinstance(k, str))
    keys = set()

    def visit(v, depth=0):
        if depth > 4:
            return
        if isinstance(v, dict):
            for k, x in v.items():
                if isinstance(k, str):
                    keys.add(k)
                    keys.add(k.replace("/", "."))
                visit(x, depth + 1)
        elif isinstance(v, list):
            for x in v:
                if isinstance(x, str):
                    keys.add(x)
                elif x is None:
                    keys.add("")                  # ansible makes '' of a None element
                elif not isinstance(x, list):
                    keys.add(str(x))              # and "{'a': 1}" of a dict one
                visit(x, depth + 1)
        elif isinstance(v, str) and "=" in v and depth == 1:   # ansible turns "k=v" into {"k": "v"}
            keys.update(p.split("=", 1)[0].strip() for p in re.split(r"[,\s]+", v) if "=" in p)
    for x in args.values():
        visit(x, 1)
    return options, keys


def names_a_field(result, spec, args):
    options, keys = known_names(spec, args)
    field = result.get("field")
    msg = result.get("msg")
    if isinstance(field, str):
        head = re.split(r"[.\[:]", field, 1)[0]
        if field in options or head in options or field in keys or field.replace("/", ".") in keys:
            return True
        if field and any(k and len(k) >= 2 and field.startswith(k) for k in keys):
            return True
    if not isinstance(msg, str):
        return False
    for n in options:
        if n in GENERIC_NAMES or len(n) < 4:
            # a common word must appear as a field: "name: ...", "'name'", "name=", "(name)", "argument name"
            pat = r"(^%s\b|['\"(|]%s['\")|]|\b%s=|: %s\b|\b%s\[\d|\b%s\.\w|argument %s\b|option %s\b|" \
                  r"parameters?:? %s\b|of %s\b|, %s\b|\b%s is required|\b%s must)" % ((re.escape(n),) * 13)
            if re.search(pat, msg):
                return True
        elif re.search(r"(?<![A-Za-z0-9_])%s(?![A-Za-z0-9_])" % re.escape(n), msg):
            return True
    paths = re.findall(r"/[^\s:'\"()]+", msg) + ([field] if isinstance(field, str) and field.startswith("/") else [])
    for k in keys:
        if len(k) >= 2 and (k in msg or (len(k) > 300 and k[:40] in msg)):
            return True
        if k.startswith("/") and any(fnmatch.fnmatchcase(p.split(":")[0], k) or
                                     p.startswith(k.rstrip("/") + "/") for p in paths):
            return True   # a file a source glob or directory expanded to ("<file>:<line>:<column>")
        if len(k) < 2 and (repr(k) in msg or '"%s"' % k in msg):   # '' or 'x', quoted
            return True
    return False


def _tb_signature(text):
    """'ValueError at basic.py:1358 _log_invocation' from a traceback text."""
    frames = re.findall(r'File "([^"]+)", line (\d+), in (\S+)', text or "")
    last = frames[-1] if frames else ("?", "?", "?")
    exc = (text or "").strip().splitlines()[-1] if text and text.strip() else "?"
    exc_type = exc.split(":", 1)[0]
    return "%s at %s:%s %s" % (exc_type, os.path.basename(last[0]), last[1], last[2])


# Messages of ansible-core's own argument validation that do not name the option; the
# collection cannot change them short of giving up the spec's types (counted as "exempt").
ANSIBLE_CORE_EXEMPT = [r"^dictionary requested, could not parse JSON or key=value$"]


def is_bookkeeping(change, state_dirs):
    """A change a failed run may leave in a state directory: the journal's record of the
    failed transaction, lock files, the watchdog's log, directories made to hold them."""
    m = re.match(r"(created|changed|removed) (.+?)( \[(\w+)\])?( \(.*)?$", change)
    if not m:
        return False
    path, typ = m.group(2), m.group(4)
    if not any(d and (path + "/").startswith(d.rstrip("/") + "/") for d in state_dirs):
        return False
    base = os.path.basename(path)
    return base.startswith("journal.jsonl") or base.endswith(".lock") or base in ("watchdog.log", "lock") or \
        typ == "d"


def judge(payload, case, spec, env_failures=(), host_blamed=()):
    """(outcome, [violations]).  outcome: ok | failed | env | work | violation | harness.
    A violation is (kind, signature, detail)."""
    v = []
    if payload.get("harness_error"):
        return "harness", [("harness", "harness", payload["harness_error"][-600:])]
    if payload.get("timed_out"):
        return "violation", [("hang", "hang", "no answer within %.0f s" % CASE_TIMEOUT)]
    res = payload.get("result")
    check = case["check"]
    changes = payload.get("changes") or []
    for h in host_blamed:
        v.append(("host-change", "host-change", h))
    if payload.get("work"):
        if check:
            v.append(("work-in-check-mode", "work in check mode: " + payload["work"], payload["work"]))
        elif case.get("forced"):
            desc = case["forced"]
            v.append(("invalid-input-reached-work",
                      "reached work with %s on %s" % (desc[0], desc[1]),
                      "%s=%s got past validation to %s" % (desc[1], compact(desc[2]), payload["work"])))
        if check and changes:
            v.append(("check-mode-write", "check-mode-write", "; ".join(changes[:8])))
        return ("violation" if v else "work"), v
    if payload.get("exception"):
        sig = payload.get("exception_sig") or _tb_signature(payload["exception"])
        v.append(("traceback", "traceback: " + sig, payload["exception"][-1500:]))
        if check and changes:
            v.append(("check-mode-write", "check-mode-write", "; ".join(changes[:8])))
        return "violation", v
    if res is None:
        v.append(("no-json", "no JSON result", (payload.get("stdout") or "")[-300:] + " | stderr: " +
                  (payload.get("stderr") or "")[-300:]))
        return "violation", v
    try:   # NaN/inf in what the module returns (ansible's echo of the arguments aside)
        json.dumps(dict((k, x) for k, x in res.items() if k != "invocation"), allow_nan=False)
    except (TypeError, ValueError) as e:
        v.append(("result-not-json", "result holds NaN/inf (accepted a non-finite input?)", str(e)[:200]))
    msg = res.get("msg")
    text = "%s %s" % (msg, res.get("exception", ""))
    if "Traceback (most recent call last)" in text or "MODULE FAILURE" in text:
        v.append(("traceback", "traceback in msg: " + _tb_signature(text), text[-1500:]))
    failed = bool(res.get("failed"))
    outcome = "ok"
    if failed:
        outcome = "failed"
        if any(re.search(p, str(msg)) for p in env_failures):
            outcome = "env"
        elif any(re.search(p, str(msg)) for p in ANSIBLE_CORE_EXEMPT):
            outcome = "exempt"
        elif not names_a_field(res, spec, case["args"]):
            norm = re.sub(r"\d+", "N", str(msg))[:70]
            v.append(("unnamed-field", "failure names no field: " + norm, str(msg)[:400]))
        sd = case["args"].get("state_dir")
        dirs = [STATE_DIR, "/var/lib/netstack"] + ([sd] if isinstance(sd, str) and sd.startswith("/") else [])
        real = [c for c in changes if not is_bookkeeping(c, dirs)]
        if real:
            v.append(("changed-after-failure", "changed after failure", "; ".join(real[:8])))
    if not failed and case.get("forced"):
        why, opt, val = case["forced"]
        v.append(("accepted-invalid", "accepted %s on %s" % (why, opt),
                  "%s=%s was accepted%s" % (opt, compact(val), " in check mode" if check else "")))
    if check and changes:
        kinds = sorted(set(re.sub(r" .*", "", c) for c in changes))
        v.append(("check-mode-write", "check-mode-write", "; ".join(changes[:8]) + " (%s)" % ",".join(kinds)))
    return ("violation" if v else outcome), v


# ------------------------------------------------------------------ runners (called in the child)

def install_tripwires(tripwires):
    """``tripwires``: ["tuning.httpbench.Lab.__init__", ...] (module_utils package and module, then attributes).
    Each is replaced by a function raising WorkReached: the sandbox never runs real work."""
    import importlib
    for spec in tripwires:
        pkg, modname, attrs = spec.split(".", 2)
        owner = importlib.import_module("%s.plugins.module_utils.%s.%s" % (PKG, pkg, modname))
        parts = attrs.split(".")
        for p in parts[:-1]:
            owner = getattr(owner, p)

        def stub(*a, **kw):
            raise WorkReached(stub.what)
        stub.what = spec
        setattr(owner, parts[-1], stub)


def module_runner(modname, tripwires=()):
    def run(args, check_mode, diff):
        import importlib
        mod = importlib.import_module(PKG + ".plugins.modules." + modname)
        install_tripwires(tripwires)
        return call_main(mod.main, args, check_mode, diff)
    return run


def action_runner(modname, tripwires=(), inner=None, host_readonly=None):
    """Run an action plugin's ``run()`` as the task executor would, with the modules it
    executes run in-process (``inner``: module name -> predicate(args) that says whether
    that call is real work, which raises WorkReached instead)."""
    def run(args, check_mode, diff):
        import importlib
        from unittest import mock
        from ansible.errors import AnsibleActionFail, AnsibleActionSkip, AnsibleError
        from ansible.parsing.dataloader import DataLoader
        from ansible.playbook.play_context import PlayContext
        act = importlib.import_module(PKG + ".plugins.action." + modname)
        install_tripwires(tripwires)
        task = mock.MagicMock()
        task.args = dict(args)
        task.async_val = 0
        task.check_mode = check_mode
        task.diff = diff
        task.action = "netstack.tuning." + modname
        task.get_search_path.return_value = [WORK_DIR]
        pc = PlayContext()
        pc.check_mode = check_mode
        pc.diff = diff
        conn = mock.MagicMock()
        conn._shell.tmpdir = None
        am = act.ActionModule(task, conn, pc, DataLoader(), None, None)

        def execute(module_name=None, module_args=None, task_vars=None, **kw):
            short = module_name.split(".")[-1]
            if inner and inner.get(short) and inner[short](module_args):
                raise WorkReached("module %s %s" % (short, sorted(module_args)))
            m = importlib.import_module(PKG + ".plugins.modules." + short)
            if host_readonly and host_readonly.get(short) and host_readonly[short](module_args):
                out = in_host_netns_readonly(lambda: call_main(m.main, module_args, check_mode, diff))
            else:
                out = call_main(m.main, module_args, check_mode, diff)
            if out.get("work"):
                raise WorkReached("%s (module %s)" % (out["work"], short))
            if out["exception"]:
                raise RuntimeError("inner module %s raised:\n%s" % (short, out["exception"]))
            return out["result"] or {"failed": True, "msg": "MODULE FAILURE (no JSON)"}
        am._execute_module = execute
        out = {"exit": None, "exception": None, "work": None, "stdout": "", "stderr": ""}
        try:
            with _captured_fds() as box:
                try:
                    out["result"] = am.run(task_vars={"inventory_hostname": "nsprop-host"})
                except AnsibleActionFail as e:
                    r = dict(getattr(e, "result", None) or {})
                    r.update(failed=True, msg=e.message)
                    out["result"] = r
                except AnsibleActionSkip as e:
                    out["result"] = {"skipped": True, "msg": e.message}
                except AnsibleError as e:
                    out["result"] = {"failed": True, "msg": str(e)}
                except WorkReached as e:
                    out["work"] = str(e)
                    out["result"] = None
                except Exception as e:
                    out["exception"], out["exception_sig"] = describe_exception(e)
                    out["result"] = None
            out["stderr"] = box.get("stderr", "")[-2000:]
        except Exception as e:
            out["exception"], out["exception_sig"] = describe_exception(e)
        if isinstance(out.get("result"), dict):
            out["result"] = json.loads(json.dumps(out["result"], default=repr))
        return out
    return run


# ------------------------------------------------------------------ one module's property run

SUMMARY_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "output",
                            "properties-summary.json")
SESSION = {}   # module -> summary of this process's run (conftest prints it)


class Suite(object):
    """Runs cases for one module, counts outcomes, keeps the first case of every distinct
    violation, minimizes those, and writes the summary."""

    def __init__(self, name, spec, runner, setup=None, env_failures=(), budget_s=60.0, max_minimize=6,
                 doc_scopes=None):
        self.name, self.spec, self.runner, self.setup = name, spec, runner, setup
        self.doc_scopes = doc_scopes or {}
        self.env_failures = tuple(env_failures)
        self.budget_s, self.max_minimize = budget_s, max_minimize
        self.t0 = time.time()
        self.counts = {}
        self.by_phase = {}
        self.violations = {}   # signature -> dict
        self.hangs = 0
        self.over_budget = 0
        self.messages = {}     # normalized failure message -> count (what the module says most)
        self.skipped = {}

    def _count(self, d, k):
        d[k] = d.get(k, 0) + 1

    def timeout(self):
        return CASE_TIMEOUT if self.hangs < 2 else 5.0

    def execute(self, case):
        args = case["args"]
        hb = host_snapshot(args)
        payload = run_case(self.runner, args, case["check"], case.get("diff", False), setup=self.setup,
                           timeout=self.timeout())
        ha = host_snapshot(args)
        blamed = host_changes(hb, ha, args, payload.get("pid"))
        outcome, vs = judge(payload, case, self.spec, self.env_failures, blamed)
        if payload.get("timed_out"):
            self.hangs += 1
        return payload, outcome, vs

    SWEEP_SHARE = 0.65   # of the budget; the rest is kept for the random phase

    def run(self, case, phase):
        limit = self.budget_s * (self.SWEEP_SHARE if phase == "sweep" else 1.0)
        if time.time() - self.t0 > limit:
            self.over_budget += 1
            self._count(self.skipped, phase)
            return None
        payload, outcome, vs = self.execute(case)
        if case.get("forced") and any(k in ("accepted-invalid", "invalid-input-reached-work") for k, _s, _d in vs):
            verdict = self.relevance(case, payload)
            if verdict is None:
                vs = [x for x in vs if x[0] not in ("accepted-invalid", "invalid-input-reached-work")]
                outcome = "ignored-invalid" if not vs else outcome
            else:
                vs = [(k, s_, d + " (" + verdict + ")" if k in ("accepted-invalid", "invalid-input-reached-work") else d)
                      for k, s_, d in vs]
        if outcome == "harness":
            raise AssertionError("the sandbox failed (not a module finding):\n%s" % vs[0][2])
        self._count(self.counts, outcome)
        self._count(self.counts, "cases")
        self._count(self.counts, "check_mode" if case["check"] else "real_mode")
        self._count(self.by_phase, phase)
        res = payload.get("result")
        if isinstance(res, dict) and res.get("failed"):
            m = re.sub(r"\d+", "N", str(res.get("msg")))
            self._count(self.messages, m[:110])
        self.record(case, payload, vs, phase)
        return outcome

    def record(self, case, payload, vs, phase):
        for kind, sig, detail in vs:
            rec = self.violations.get(sig)
            if rec is None:
                self.violations[sig] = {"kind": kind, "signature": sig, "detail": detail, "count": 1,
                                        "case": case, "phase": phase,
                                        "result": (payload.get("result") or {}).get("msg") if
                                        isinstance(payload.get("result"), dict) else None}
            else:
                rec["count"] += 1

    def relevance(self, case, payload):
        """None when the module may ignore the forced-invalid value, else why it counts.

        An option the documentation scopes to another mode ("With O(action=collect), ...")
        may hold anything.  In check mode, the same arguments in real mode tell: refused
        there means check mode did not check; real work means the value would be used.  In
        real mode (or when real mode accepts too), the value counts only if leaving it out
        changes the result."""
        opt = case["forced"][1].split(".", 1)[0]
        if opt not in self.spec or opt not in case["args"]:
            return "not an option of the module"
        if not in_doc_scope(self.doc_scopes.get(opt), case["args"], self.spec):
            return None
        base = payload
        if case["check"]:
            real = dict(case, check=False)
            p2, _o2, v2 = self.execute(real)
            # what the real-mode run shows besides the value's fate is a finding of its own
            self.record(real, p2, [x for x in v2 if x[0] not in ("accepted-invalid", "invalid-input-reached-work")],
                        "real mode of a check-mode case")
            r2 = p2.get("result") if isinstance(p2.get("result"), dict) else {}
            if p2.get("work"):
                return "real mode would go on to %s with it" % p2["work"]
            if r2.get("failed"):
                return "real mode refuses it: %s" % str(r2.get("msg"))[:160]
            if p2.get("exception"):
                return "real mode raises %s" % p2.get("exception_sig")
            base = p2
        elif payload.get("work"):
            return "with it the module starts %s" % payload["work"]
        without = dict(case, check=False, forced=None,
                       args=dict((k, x) for k, x in case["args"].items() if k != opt))
        p3 = self.execute(without)[0]
        if not p3.get("work") and not (p3.get("result") or {}).get("failed") and \
                same_result(base.get("result"), p3.get("result")):
            return None
        return "leaving it out changes the result"

    # -- minimization: drop options, dict keys and list elements while the violation stays
    def reproduces(self, case, sig):
        _p, _o, vs = self.execute(case)
        return any(s == sig for _k, s, _d in vs)

    def minimize(self, rec, max_runs=16):
        case = dict(rec["case"], args=dict(rec["case"]["args"]))
        runs = [0]
        sig = rec["signature"]

        def attempt(c):
            if runs[0] >= max_runs:
                return False
            runs[0] += 1
            return self.reproduces(c, sig)
        keep_forced = rec["kind"] in ("accepted-invalid", "invalid-input-reached-work")
        for k in sorted(case["args"], key=lambda k: -len(repr(case["args"][k]))):
            forced_opt = case.get("forced") and k == case["forced"][1].split(".", 1)[0]
            if forced_opt and keep_forced:
                continue
            trial = dict(case, args=dict((a, v) for a, v in case["args"].items() if a != k))
            if forced_opt:
                trial["forced"] = None
            if attempt(trial):
                case = trial
        for k in sorted(case["args"]):
            v = case["args"][k]
            if isinstance(v, dict) and len(v) > 1:
                for dk in list(v):
                    nv = dict((a, b) for a, b in case["args"][k].items() if a != dk)
                    trial = dict(case, args=dict(case["args"], **{k: nv}))
                    if nv and attempt(trial):
                        case = trial
            elif isinstance(v, list) and len(v) > 1:
                for i in range(len(v) - 1, -1, -1):
                    cur = case["args"][k]
                    if i >= len(cur):
                        continue
                    nv = cur[:i] + cur[i + 1:]
                    trial = dict(case, args=dict(case["args"], **{k: nv}))
                    if nv and attempt(trial):
                        case = trial
        rec["minimal"] = case
        rec["minimize_runs"] = runs[0]
        return case

    def finish(self):
        recs = sorted(self.violations.values(), key=lambda r: (r["kind"], r["signature"]))
        # the random phase's cases carry the most noise: they are minimized first
        for rec in sorted(recs, key=lambda r: (r["phase"] != "random", -len(r["case"]["args"])))[:self.max_minimize]:
            if time.time() - self.t0 < self.budget_s * 1.15:
                self.minimize(rec)
        summary = {
            "module": self.name,
            "cases": self.counts.get("cases", 0),
            "outcomes": dict((k, v) for k, v in self.counts.items() if k != "cases"),
            "phases": self.by_phase,
            "skipped_over_budget": self.skipped,
            "seconds": round(time.time() - self.t0, 1),
            "violations": [self.describe(r) for r in recs],
            "top_failure_messages": sorted(self.messages.items(), key=lambda kv: -kv[1])[:10],
        }
        SESSION[self.name] = summary
        write_summary(self.name, summary)
        return summary

    @staticmethod
    def describe(rec):
        c = rec.get("minimal") or rec["case"]
        return {"kind": rec["kind"], "signature": rec["signature"], "count": rec["count"],
                "args": compact(c["args"], 40), "check_mode": c["check"], "phase": rec["phase"],
                "forced": ("%s: %s=%s" % (c["forced"][0], c["forced"][1], compact(c["forced"][2], 40))
                           if c.get("forced") else None),
                "msg": (rec.get("result") or "")[:300] if rec.get("result") else None,
                "detail": rec["detail"][-700:]}


def write_summary(name, summary):
    try:
        with open(SUMMARY_PATH) as f:
            data = json.load(f)
    except (IOError, OSError, ValueError):
        data = {}
    data.setdefault("modules", {})[name] = summary
    data["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    os.makedirs(os.path.dirname(SUMMARY_PATH), exist_ok=True)
    tmp = SUMMARY_PATH + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True, default=repr)
    os.replace(tmp, SUMMARY_PATH)


def format_report(summary):
    lines = ["%s: %d cases (%s) in %.1f s; %d distinct violation(s)"
             % (summary["module"], summary["cases"],
                ", ".join("%s %d" % kv for kv in sorted(summary["outcomes"].items())), summary["seconds"],
                len(summary["violations"]))]
    for v in summary["violations"]:
        lines.append("  - [%s] %s (x%d)" % (v["kind"], v["signature"], v["count"]))
        lines.append("      args%s: %s" % (" (check mode)" if v["check_mode"] else "", v["args"]))
        if v["forced"]:
            lines.append("      forced invalid: %s" % v["forced"])
        lines.append("      %s" % (v["detail"].strip().splitlines() or [""])[-1][:300])
    return "\n".join(lines)


def preload():
    """Import in the parent what the children would otherwise import once per case (every
    module_utils module, the modules, action plugins, ansible's test helpers and the
    lazily imported libraries), so a case costs a fork, not an interpreter warm-up."""
    import importlib
    import pkgutil
    base = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    for sub in ("module_utils", "modules", "action"):
        for m in pkgutil.iter_modules([os.path.join(base, "plugins", sub)]):
            try:
                importlib.import_module("%s.plugins.%s.%s" % (PKG, sub, m.name))
            except Exception:
                pass
    for lib in ("ansible.module_utils.testing", "unittest.mock", "ansible.errors", "ansible.parsing.dataloader",
                "ansible.playbook.play_context", "ansible.plugins.action", "jsonschema", "yaml", "jinja2",
                "optuna", "sqlalchemy", "numpy", "ipaddress", "csv", "gzip", "glob", "tempfile", "platform",
                "hashlib", "uuid", "decimal"):
        try:
            importlib.import_module(lib)
        except Exception:
            pass


# ------------------------------------------------------------------ inputs every module must refuse

def _non_finite(v):
    if isinstance(v, float):
        return v != v or v in (float("inf"), float("-inf"))
    if isinstance(v, str):
        try:
            f = float(v.strip())
        except (ValueError, OverflowError):
            return False
        return f != f or f in (float("inf"), float("-inf"))
    return False


def _as_int(v):
    """The int ansible-core would make of ``v`` for an int option, or None."""
    import decimal
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, str) and re.match(r"^\s*[-+]?[0-9]+\s*$", v):
        try:
            return int(decimal.Decimal(v))
        except (decimal.DecimalException, ValueError):
            return None
    if isinstance(v, str) and re.match(r"^\s*[-+]?[0-9.]+[eE][+]?[0-9]+\s*$", v):
        try:
            d = decimal.Decimal(v)
            return int(d) if d == int(d) else None
        except (decimal.DecimalException, ValueError, OverflowError):
            return None
    return None


STRING_SYSCTLS = re.compile(r"(congestion_control|default_qdisc|core_pattern|hostname|domainname)$")


def bad_sysctl_value(v, key=""):
    """A value no sysctl takes: non-finite or fractional numbers, exponent notation, more
    digits than any counter has, non-ASCII digits, NUL bytes, mappings (for a sysctl that
    holds a name, such as tcp_congestion_control, only the numbers, NULs and mappings)."""
    if isinstance(key, str) and STRING_SYSCTLS.search(key.replace("/", ".")) and isinstance(v, str):
        return "\x00" in v
    if isinstance(v, float):
        return v != v or v in (float("inf"), float("-inf")) or v != int(v)
    if isinstance(v, dict):
        return True
    if isinstance(v, list):
        return any(bad_sysctl_value(x, key) for x in v)
    if isinstance(v, str):
        s = v.strip()
        return ("\x00" in v or _non_finite(s) or bool(re.match(r"^[-+]?[0-9.]+[eE][-+]?[0-9]+$", s)) or
                bool(re.search(r"[0-9]{40,}", s)) or any(c.isdigit() and not c.isascii() for c in s))
    return False


def classify_forced(spec, args, sysctl_dicts=(), number_dicts=(), extra=()):
    """(why, option, value) for the first argument no module may accept, or None.

    Top level: an unknown option, a value outside ``choices``, a value ansible cannot
    convert to the option's type, an int that is negative or beyond 10**15 (no int
    option of these modules means either), a NaN/inf float, a NUL byte in a path.
    Nested: a value no sysctl takes in a sysctl dict (``sysctl_dicts``), NaN/inf in a
    dict of numbers (``number_dicts``).  ``extra``: [(why, option, predicate(value))]."""
    for name in sorted(args, key=str):
        v = args[name]
        if name.startswith("_ansible"):
            continue
        if name not in spec:
            return ("unknown option", name, v)
        o = spec[name]
        t = _typ(o)
        if v is None:
            continue
        for why, opt, pred in extra:
            if opt == name and pred(v):
                return (why, name, v)
        if t in ("int", "float", "bool", "list") and isinstance(v, dict):
            return ("unconvertible type", name, v)
        if t == "dict" and isinstance(v, (list, int, float)) and not isinstance(v, bool):
            return ("unconvertible type", name, v)
        if o.get("choices") and t != "list" and isinstance(v, str) and v not in [str(c) for c in o["choices"]]:
            return ("value not in choices", name, v)
        if o.get("choices") and t == "list" and isinstance(v, list) and \
                any(isinstance(x, str) and x not in o["choices"] for x in v):
            return ("value not in choices", name, v)
        if t == "int":
            i = _as_int(v)
            if i is not None and i < 0:
                return ("negative int", name, v)
            if i is not None and abs(i) >= 10 ** 15:
                return ("absurd int", name, v)
            if isinstance(v, float) and (v != v or v in (float("inf"), float("-inf"))):
                return ("non-finite number for an int", name, v)
            if isinstance(v, str) and i is None and not re.match(r"^\s*[-+]?[0-9]+(\.0*)?\s*$", v) and \
                    not any(c.isdigit() for c in v):
                return ("unconvertible type", name, v)
        if t == "float" and _non_finite(v):
            return ("non-finite float", name, v)
        if t == "bool" and isinstance(v, str) and v.lower() not in (
                "yes", "no", "true", "false", "on", "off", "y", "n", "t", "f", "1", "0"):
            return ("unconvertible type", name, v)
        if t == "path" and isinstance(v, str) and "\x00" in v:
            return ("NUL in path", name, v)
        if name in sysctl_dicts and isinstance(v, dict):
            for k, x in v.items():
                if bad_sysctl_value(x, k):
                    return ("invalid sysctl value", "%s.%s" % (name, k), x)
        if name in number_dicts and isinstance(v, dict):
            for k, x in v.items():
                if isinstance(x, float) and _non_finite(x):
                    return ("non-finite number", "%s.%s" % (name, k), x)
    return None


_VOLATILE = re.compile(r"(seconds|_s$|time|deadline|_at$|^pid$|journal_id|^id$|stamp|elapsed|duration_ms|rate|per_second)")


def _stable(v):
    if isinstance(v, dict):
        return dict((k, _stable(x)) for k, x in v.items() if not (isinstance(k, str) and _VOLATILE.search(k))
                    and k != "invocation")
    if isinstance(v, list):
        return [_stable(x) for x in v]
    return v


def same_result(a, b):
    """Two module results equal but for timings, ids and ansible's echo of the arguments."""
    return json.dumps(_stable(a), sort_keys=True, default=repr) == json.dumps(_stable(b), sort_keys=True, default=repr)


def summary_line(summary):
    """One line per module for the end of a pytest run."""
    viol = summary["violations"]
    return "%-16s %4d cases %5.1f s  %s%s" % (
        summary["module"], summary["cases"], summary["seconds"],
        ", ".join("%s %d" % kv for kv in sorted(summary["outcomes"].items()) if kv[0] not in ("check_mode", "real_mode")),
        ("; %d violation(s): %s" % (len(viol), "; ".join(v["signature"].splitlines()[0][:60] for v in viol[:4]) +
                                    (" ..." if len(viol) > 4 else ""))) if viol else "; no violation")
