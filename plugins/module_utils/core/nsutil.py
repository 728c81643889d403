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

Links, addresses, routes and qdiscs are made through pyroute2 (``iproute(netns)``: a
netlink socket made while this thread is inside the namespace belongs to it); named
namespaces are made and removed the way ``ip netns add``/``del`` do it (a bind mount at
/run/netns/NAME), so ``ip netns exec NAME`` still starts programs inside them.  pyroute2 is
imported when first needed (Debian and RHEL: python3-pyroute2), so importing this module
needs nothing beyond the standard library.  ``NetnsLab`` is the one throwaway lab of named
namespaces that the HTTP benchmark and the zero-copy test build on.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import ctypes
import errno
import json
import os
import re
import select
import signal
import time

from ansible_collections.netstack.tuning.plugins.module_utils.core.common import NetstackError

NETNS_DIR = "/var/run/netns"
CLONE_NEWNS, CLONE_NEWNET = 0x00020000, 0x40000000
MS_BIND, MS_REC, MS_SLAVE, MS_SHARED, MNT_DETACH = 0x1000, 0x4000, 0x80000, 0x100000, 2
_NETNS_NAME = re.compile(r"\A[A-Za-z0-9_.@:+-]{1,64}\Z")


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


class Child(object):
    """``work()`` running in a forked child (after ``setup()``); its JSON-able result, or its
    error, comes back through a pipe.

    The child is where namespaces are entered or cgroups joined, so the caller's process and
    the host never change.  ``result()`` waits for the answer (an exception in the child comes
    back as NetstackError, keeping its field); ``kill()`` ends a child that serves until told
    (pingpong's echo server).  The child takes SIGTERM's default action, whatever handler the
    parent installed.
    """

    def __init__(self, work, setup=None):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: never returns into the caller's code
            try:
                os.close(r)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                if setup:
                    setup()
                payload = {"result": work()}
            except NetstackError as e:
                payload = {"error": e.msg, "field": e.field}
            except BaseException as e:  # noqa: B902  # everything must reach the parent
                payload = {"error": "%s: %s" % (type(e).__name__, e)}
            try:
                data = json.dumps(payload).encode("utf-8")
                while data:
                    data = data[os.write(w, data):]
            finally:
                os._exit(0)
        os.close(w)
        self.pid, self.fd = pid, r

    def result(self, timeout, timed_out=None):
        """The child's result; raises its error, or ``timed_out`` (a NetstackError) when no
        answer came in ``timeout`` seconds (the child is killed)."""
        chunks, deadline, answered = [], time.monotonic() + timeout, False
        try:
            while not answered:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                    raise timed_out or NetstackError("probe child timed out after %ss" % timeout)
                chunk = os.read(self.fd, 65536)
                chunks.append(chunk)
                answered = not chunk  # end of file: the child wrote all it had and is exiting
        finally:
            self.kill(force=not answered)
        try:
            payload = json.loads(b"".join(chunks).decode("utf-8"))
        except ValueError:
            raise NetstackError("probe child died without an answer")
        if "error" in payload:
            raise NetstackError(payload["error"], field=payload.get("field"))
        return payload["result"]

    def kill(self, force=True):
        """Reap the child (SIGKILL first unless ``force`` is false); idempotent."""
        if self.pid is None:
            return
        if force:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except OSError:
                pass
        try:
            os.waitpid(self.pid, 0)
        except OSError:
            pass
        os.close(self.fd)
        self.pid = None


def in_child(work, setup=None, timeout=120):
    """Run ``work()`` in a forked child (after ``setup()``), return its JSON-able result
    (Child, waited for)."""
    return Child(work, setup).result(timeout)


def netns_path(name):
    """Validate a named network namespace (``ip netns`` style) and return its path."""
    path = _netns_file(name)
    if not os.path.exists(path):
        raise NetstackError("network namespace %r not found (no %s; create it with 'ip netns add %s')"
                            % (name, path, name), field="netns")
    return path


def _setns(path):
    """This thread into the network namespace at ``path``."""
    fd = os.open(path, os.O_RDONLY)
    try:
        libc_call("setns", "setns(%s)" % path, fd, CLONE_NEWNET)
    finally:
        os.close(fd)


def enter_netns(path):
    """In a child: join a named netns and mount its own sysfs, as ``ip netns exec`` does."""
    try:
        _setns(path)
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


def _netns_file(name):
    if not isinstance(name, str) or not _NETNS_NAME.match(name) or name in (".", ".."):
        raise NetstackError("invalid network namespace name %r" % (name,), field="netns")
    return os.path.join(NETNS_DIR, name)


def _bind_new_netns(path):
    """In a child: what ``ip netns add`` does - a shared /run/netns, then a new network
    namespace bind-mounted on its file there."""
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        os.makedirs(directory, 0o755)
    d = directory.encode()
    if libc().mount(b"", d, b"none", ctypes.c_ulong(MS_SHARED | MS_REC), None) != 0:
        # not a mount point yet: make it one (bind onto itself), then share it
        libc_call("mount", "bind %s" % directory, d, d, b"none", ctypes.c_ulong(MS_BIND | MS_REC), None)
        libc_call("mount", "share %s" % directory, b"", d, b"none", ctypes.c_ulong(MS_SHARED | MS_REC), None)
    os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))
    try:
        new_netns()
        libc_call("mount", "bind the new namespace on %s" % path, b"/proc/self/ns/net", path.encode(), b"none",
                  ctypes.c_ulong(MS_BIND), None)
    except BaseException:
        os.unlink(path)
        raise


def create_netns(name):
    """Make the named network namespace ``name`` (as ``ip netns add`` does)."""
    path = _netns_file(name)
    if os.path.exists(path):
        raise NetstackError("network namespace %s already exists" % name, field="netns")

    def work():
        try:
            _bind_new_netns(path)
        except OSError as e:
            raise NetstackError("cannot create network namespace %s: %s" % (name, e.strerror or e), field="netns")

    in_child(work, timeout=30)


def netns_pids(ip, name):
    """The pids whose network namespace is the named one (as ``ip netns pids``; ``ip`` is
    not used any more and stays for callers)."""
    try:
        st = os.stat(_netns_file(name))
    except OSError:
        return []
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ns = os.stat("/proc/%s/ns/net" % entry)
        except OSError:  # gone meanwhile, or not ours to look at
            continue
        if (ns.st_dev, ns.st_ino) == (st.st_dev, st.st_ino):
            pids.append(int(entry))
    return pids


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
    """Remove a named namespace (and whatever still runs inside it); absent is fine.
    (As ``ip netns del``: detach the bind mount, remove the file; ``ip`` is not used.)"""
    path = _netns_file(name)
    if not os.path.exists(path):
        return
    kill_netns_processes(ip, name)
    libc().umount2(path.encode(), MNT_DETACH)
    try:
        os.unlink(path)
    except OSError as e:
        if os.path.exists(path):
            raise NetstackError("cannot delete network namespace %s: %s" % (name, e.strerror or e), field="netns")


def reap_stale_netns(prefix, ip=None):
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


# --------------------------------------------------------------------------- netlink (pyroute2)

def iproute_class(field="netns"):
    """pyroute2's IPRoute, or a NetstackError that names the package."""
    try:
        from pyroute2 import IPRoute
    except ImportError:
        raise NetstackError("pyroute2 is needed for this (the python3-pyroute2 package on Debian, Ubuntu, RHEL "
                            "and Fedora; 'pip install pyroute2' elsewhere)", field=field)
    return IPRoute


@contextlib.contextmanager
def thread_in_netns(path):
    """This thread inside the network namespace at ``path`` for the body, then back."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        _setns(path)
        try:
            yield
        finally:
            libc_call("setns", "setns(back)", own, CLONE_NEWNET)
    finally:
        os.close(own)


@contextlib.contextmanager
def iproute(netns=None, field="netns"):
    """A pyroute2 IPRoute of the named network namespace ``netns`` (None: this thread's).

    A netlink socket belongs to the namespace it was made in, so it is made with this
    thread inside ``netns`` (and the thread returns at once); pyroute2 0.7 and 0.9 alike.
    """
    cls = iproute_class(field)
    if netns:
        path = netns_path(netns)
        try:
            with thread_in_netns(path):
                ipr = cls()
        except OSError as e:
            raise NetstackError("cannot open a netlink socket in network namespace %s: %s" % (netns, e.strerror or e),
                                field=field)
    else:
        ipr = cls()
    try:
        yield ipr
    finally:
        ipr.close()


def netlink(what, fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` (an IPRoute method); its failure as a NetstackError(field="netns")
    saying ``what`` failed.  ``field=`` picks another field."""
    field = kwargs.pop("field", "netns")
    try:
        return fn(*args, **kwargs)
    except Exception as e:  # noqa: BLE001 - pyroute2's NetlinkError and friends
        code = getattr(e, "code", None)
        raise NetstackError("%s failed: %s" % (what, errno_text(code) if isinstance(code, int) and code > 0 else e),
                            field=field)


def link_index(ipr, ifname, field="netns"):
    found = ipr.link_lookup(ifname=ifname)
    if not found:
        raise NetstackError("no interface %s" % ifname, field=field)
    return found[0]


def set_up(ipr, ifname, field="netns"):
    netlink("ip link set %s up" % ifname, ipr.link, "set", index=link_index(ipr, ifname, field), state="up",
            field=field)


def link_veth(ip, server, client, prefixlen):
    """A veth pair between two existing namespaces; ``server``/``client`` are
    (netns, ifname, address).  Both ends are created inside the namespaces, so the host
    never sees them and they vanish with the namespaces.  (``ip`` is not used.)"""
    with iproute(server[0]) as srv, iproute(client[0]) as cli:
        fd = os.open(netns_path(client[0]), os.O_RDONLY)
        try:
            netlink("ip link add %s type veth peer name %s" % (server[1], client[1]), srv.link, "add",
                    ifname=server[1], kind="veth", peer={"ifname": client[1], "net_ns_fd": fd})
        finally:
            os.close(fd)
        for ipr, (ns, ifname, addr) in ((srv, server), (cli, client)):
            netlink("ip -n %s addr add %s/%d dev %s" % (ns, addr, prefixlen, ifname), ipr.addr, "add",
                    index=link_index(ipr, ifname), address=addr, prefixlen=prefixlen)
            set_up(ipr, "lo")
            set_up(ipr, ifname)


class Closing(object):
    """A context manager over ``open()`` and ``close()``: when ``open`` fails, ``close``
    removes what it had made before the error goes on; leaving the block closes."""

    def __enter__(self):
        try:
            self.open()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc):
        self.close()
        return False


class NetnsLab(Closing):
    """Throwaway named network namespaces ``<prefix>-<pid>-<seq>-<role>`` (roles ``srv``,
    ``cli``, ``path``), the one lab the HTTP benchmark and the zero-copy test build on.

    ``create()`` first reaps what killed runs of ``prefix`` left (``reaped``; ``reap=False``
    when the caller already did), then makes the namespaces; ``veth(...)`` joins two of
    them; ``close()`` removes every namespace made (killing what still runs inside), each
    even if an earlier one failed.

    As a context manager it creates the namespaces, then runs ``setup()`` (a subclass's links
    and addresses); when either fails, what was made is removed before the error goes on.
    """

    _seq = 0

    def __init__(self, prefix, roles=("srv", "cli")):
        NetnsLab._seq += 1
        self.prefix = prefix
        self.base = "%s-%d-%d" % (prefix, os.getpid(), NetnsLab._seq)
        self.names = dict((role, "%s-%s" % (self.base, role)) for role in roles)
        self.made = []
        self.reaped = []

    def open(self):
        self.create()
        self.setup()

    def setup(self):
        """What a subclass builds once the namespaces exist; nothing here."""

    def name(self, role):
        return self.names.get(role)

    def create(self, reap=True):
        if reap:
            self.reaped = reap_stale_netns(self.prefix)
        for role in ("srv", "cli", "path"):
            if role in self.names:
                create_netns(self.names[role])
                self.made.append(self.names[role])

    def veth(self, server, client, prefixlen):
        """``server``/``client``: (role, ifname, address)."""
        link_veth(None, (self.names[server[0]],) + tuple(server[1:]), (self.names[client[0]],) + tuple(client[1:]),
                  prefixlen)

    def close(self):
        errors = []
        for name in reversed(self.made):
            try:
                delete_netns(None, name)
            except NetstackError as e:
                errors.append(str(e))
        self.made = []
        if errors:
            raise NetstackError("; ".join(errors), field="netns")
