# -*- coding: utf-8 -*-
# Copyright: netstack.tuning contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Namespaces and forked helpers: the one place the engine enters or makes namespaces.

Throwaway labs (the HTTP benchmark's, the zero-copy test's) are pairs of named namespaces
joined by a veth pair whose names carry the owner's pid (``<prefix>-<pid>-<seq>-srv``), so
``reap_stale_netns`` can remove what a killed run left behind.

``in_child(work, setup)`` runs ``work`` in a forked child after ``setup`` (enter a named
network namespace, or make a throwaway one) and returns its JSON-able result, so the
calling process and the host never change namespace.  ``enter_netns`` also gives the
child a private mount namespace with its own sysfs (as ``ip netns exec`` does) and
refuses to mount anything unless the mount namespace really is private.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ctypes
import errno
import json
import os
import re
import select
import signal
import time

from ansible_collections.netstack.tuning.plugins.module_utils.core.common import NetstackError, run

NETNS_DIR = "/var/run/netns"
CLONE_NEWNS, CLONE_NEWNET = 0x00020000, 0x40000000
MS_REC, MS_SLAVE, MNT_DETACH = 0x4000, 0x80000, 2


def errno_text(err):
    """``22`` -> ``"EINVAL: Invalid argument"``."""
    return "%s: %s" % (errno.errorcode.get(err, "E%d" % err), os.strerror(err))


_LIBC = None


def libc():
    global _LIBC
    if _LIBC is None:
        _LIBC = ctypes.CDLL(None, use_errno=True)
        _LIBC.syscall.restype = ctypes.c_long
    return _LIBC


def libc_call(fn, what, *args):
    if getattr(libc(), fn)(*args) != 0:
        err = ctypes.get_errno()
        raise OSError(err, "%s: %s" % (what, errno_text(err)))


def in_child(work, setup=None, timeout=120):
    """Run ``work()`` in a forked child (after ``setup()``), return its JSON-able result.

    The child is where namespaces are entered or created, so the caller's process and the
    host never change.  Exceptions in the child come back as NetstackError.
    """
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns
        try:
            os.close(r)
            if setup:
                setup()
            payload = {"result": work()}
        except NetstackError as e:
            payload = {"error": e.msg, "field": e.field}
        except BaseException as e:  # everything must reach the parent
            payload = {"error": "%s: %s" % (type(e).__name__, e)}
        try:
            data = json.dumps(payload).encode("utf-8")
            while data:
                data = data[os.write(w, data):]
        finally:
            os._exit(0)
    os.close(w)
    chunks, deadline = [], time.time() + timeout
    try:
        while True:
            ready = select.select([r], [], [], max(0.0, deadline - time.time()))[0]
            if not ready:
                os.kill(pid, signal.SIGKILL)
                raise NetstackError("probe child timed out after %ss" % timeout)
            chunk = os.read(r, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(r)
        os.waitpid(pid, 0)
    try:
        payload = json.loads(b"".join(chunks).decode("utf-8"))
    except ValueError:
        raise NetstackError("probe child died without an answer")
    if "error" in payload:
        raise NetstackError(payload["error"], field=payload.get("field"))
    return payload["result"]


def netns_path(name):
    """Validate a named network namespace (``ip netns`` style) and return its path."""
    if not isinstance(name, str) or not re.match(r"^[A-Za-z0-9_.@:+-]{1,64}$", name) or name in (".", ".."):
        raise NetstackError("invalid network namespace name %r" % (name,), field="netns")
    path = os.path.join(NETNS_DIR, name)
    if not os.path.exists(path):
        raise NetstackError("network namespace %r not found (no %s; create it with 'ip netns add %s')"
                            % (name, path, name), field="netns")
    return path


def enter_netns(path):
    """In a child: join a named netns and mount its own sysfs, as ``ip netns exec`` does."""
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            libc_call("setns", "setns(%s)" % path, fd, CLONE_NEWNET)
        finally:
            os.close(fd)
    except OSError as e:
        raise NetstackError("cannot enter network namespace at %s: %s" % (path, e.strerror or e), field="netns")
    host_mnt = os.readlink("/proc/self/ns/mnt")
    libc_call("unshare", "unshare(CLONE_NEWNS)", CLONE_NEWNS)
    if os.readlink("/proc/self/ns/mnt") == host_mnt:  # never remount the host's /sys
        raise NetstackError("unshare(CLONE_NEWNS) did not give a private mount namespace")
    libc_call("mount", "make / rslave", b"", b"/", b"none", ctypes.c_ulong(MS_SLAVE | MS_REC), None)
    libc().umount2(b"/sys", MNT_DETACH)  # may not be a mount point of its own
    libc_call("mount", "mount sysfs", b"sysfs", b"/sys", b"sysfs", ctypes.c_ulong(0), None)


def new_netns():
    """In a child: a fresh, empty network namespace that vanishes when the child exits."""
    libc_call("unshare", "unshare(CLONE_NEWNET)", CLONE_NEWNET)


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except OSError as e:
        return e.errno == errno.EPERM
    return True


def netns_pids(ip, name):
    rc, out, _err = run([ip, "netns", "pids", name], timeout=15)
    if rc != 0:
        return []
    return [int(x) for x in out.split() if x.isdigit()]


def kill_netns_processes(ip, name):
    """SIGKILL every process still inside namespace ``name``; the pids killed."""
    killed = []
    for _i in range(50):
        pids = netns_pids(ip, name)
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except OSError:
                pass
        time.sleep(0.1)
    return sorted(set(killed))


def delete_netns(ip, name):
    """Remove a named namespace (and whatever still runs inside it); absent is fine."""
    if not os.path.exists(os.path.join(NETNS_DIR, name)):
        return
    kill_netns_processes(ip, name)
    rc, _out, err = run([ip, "netns", "del", name], timeout=30)
    if rc != 0 and os.path.exists(os.path.join(NETNS_DIR, name)):
        raise NetstackError("cannot delete network namespace %s: %s" % (name, err.strip()), field="netns")


def reap_stale_netns(prefix, ip):
    """Delete the ``<prefix>-<pid>-<seq>-(srv|cli|path)`` namespaces whose owner process is gone."""
    pat = re.compile(r"\A%s-(\d+)-\d+-(srv|cli|path)\Z" % re.escape(prefix))
    reaped = []
    try:
        names = sorted(os.listdir(NETNS_DIR))
    except OSError:
        names = []
    for name in names:
        m = pat.match(name)
        if m and not pid_alive(int(m.group(1))):
            delete_netns(ip, name)
            reaped.append(name)
    return reaped


def link_veth(ip, server, client, prefixlen):
    """A veth pair between two existing namespaces; ``server``/``client`` are
    (netns, ifname, address).  Both ends are created inside the namespaces, so the host
    never sees them and they vanish with the namespaces."""
    def ip_(*args):
        rc, _out, err = run([ip] + list(args), timeout=30)
        if rc != 0:
            raise NetstackError("ip %s failed: %s" % (" ".join(args), err.strip()), field="netns")

    ip_("link", "add", server[1], "netns", server[0], "type", "veth", "peer", "name", client[1], "netns", client[0])
    for ns, ifname, addr in (server, client):
        ip_("-n", ns, "addr", "add", "%s/%d" % (addr, prefixlen), "dev", ifname)
        ip_("-n", ns, "link", "set", "lo", "up")
        ip_("-n", ns, "link", "set", ifname, "up")
