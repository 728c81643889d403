# -*- coding: utf-8 -*-
# Copyright: netstack.tuning contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Zero-copy send checks: where MSG_ZEROCOPY and io_uring SEND_ZC pay, per path, protocol
and message size.

A cell is (path, protocol, size, mode).  Each run of a cell starts a receiver, runs a
sender for ``duration`` seconds and takes both sides' counters: bytes, sends, CPU
seconds (getrusage of each process), zerocopy completions and notifications, and how
many completions the kernel flagged SO_EE_CODE_ZEROCOPY_COPIED (it copied anyway).

The sender and receiver are ``src/zc_bench.c``, compiled on the host when a C compiler
exists (``CHelper``); without one, ``PyHelper`` runs the same protocol in forked Python
processes, with copy and MSG_ZEROCOPY only and, for small messages, the interpreter as
the bottleneck (docs/zerocopy.md says how far).

Paths: ``loopback``; ``veth`` (two throwaway namespaces joined by a veth pair, in the
198.18.0.0/15 benchmarking range, removed afterwards); ``peer`` (another host running
``serve``: a small control protocol over TCP starts a receiver there per run and returns
its counters).  Loopback and veth deliver to a local socket, where the kernel copies
zerocopy pages before queueing them (Documentation/networking/msg_zerocopy.rst,
"Loopback"), so the copied fraction there is ~1 and the report says so.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import json
import math
import os
import platform
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time

from ansible_collections.netstack.tuning.plugins.module_utils.core.common import NetstackError, run, strict_int, strict_number, which
from ansible_collections.netstack.tuning.plugins.module_utils.core import nsutil, stats

MODES = ("copy", "io_uring", "msg_zerocopy", "io_uring_zc", "zc_cmsg")
ZEROCOPY_MODES = ("msg_zerocopy", "io_uring_zc", "zc_cmsg")
# Each zerocopy mode is judged against the copy mode with the same submission model.
BASELINE = {"msg_zerocopy": "copy", "zc_cmsg": "copy", "io_uring_zc": "io_uring"}
PATHS = ("loopback", "veth", "peer")
PROTOCOLS = ("tcp", "udp")
DEFAULT_SIZES = (1024, 4096, 16384, 65536, 262144, 1048576)
UDP_MAX_PAYLOAD = 65507
MAX_SIZE = 16 << 20
COPIED_BY_DESIGN = 0.99
DRAIN_SECONDS = 2.0  # a sender waits this long after its last send for outstanding completions (zc_bench.c too)
LOCAL_PATHS = ("loopback", "veth")

VETH_SERVER, VETH_CLIENT, VETH_PREFIXLEN = "198.18.101.1", "198.18.101.2", 30
SERVER_IFNAME, CLIENT_IFNAME = "zc-srv", "zc-cli"

DEFAULTS = {
    "paths": ["loopback", "veth"],
    "protocols": ["tcp", "udp"],
    "sizes": list(DEFAULT_SIZES),
    "modes": list(MODES),
    "duration": 1.0,
    "repeats": 3,
    "notification_batch": 32,
    "queue_depth": 8,
    "sender_cpu": None,
    "receiver_cpu": None,
    "peer": None,
    "peer_port": 18391,
    "implementation": "auto",
    "margin": 0.05,
    "netns_prefix": "nszc",
    "receiver_timeout": 10.0,
}

SO_ZEROCOPY = 60
MSG_ZEROCOPY = 0x4000000
MSG_ERRQUEUE = 0x2000
SO_EE_ORIGIN_ZEROCOPY = 5
SO_EE_CODE_ZEROCOPY_COPIED = 1
SOL_IP, IP_RECVERR, SOL_IPV6, IPV6_RECVERR = 0, 11, 41, 25
SCM_ZC_NOTIFICATION = 78
ZC_INFO_ELEM = 12  # struct zc_info_elem {u32 lo; u32 hi; u8 zerocopy;} with padding

LOOPBACK_NOTE = ("loopback and veth deliver to a local socket: the kernel copies MSG_ZEROCOPY pages before it "
                 "queues them there (Documentation/networking/msg_zerocopy.rst, 'Loopback'), so zerocopy on "
                 "these paths measures its overhead, never a saving")


# --------------------------------------------------------------------------- input

_SIZE = re.compile(r"\A[ \t]*([0-9]{1,9})[ \t]*(?:([KkMm])(?:i?[Bb])?|[Bb])?[ \t]*\Z")


def parse_size(value, field):
    """``4096``, ``"4K"``, ``"64KiB"``, ``"1M"`` -> bytes (1 byte to 16 MiB).  Text is ASCII
    digits (at most 9) with an optional unit; anything else names ``field``."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise NetstackError("%s is not a message size (bytes, or a number with K or M)" % (repr(value)[:40],),
                            field=field)
    if isinstance(value, int):
        n = value
    else:
        m = _SIZE.match(value)
        if not m:
            raise NetstackError("%s is not a message size (bytes, or a number with K or M)" % (repr(value)[:40],),
                                field=field)
        n = int(m.group(1)) * {None: 1, "k": 1024, "m": 1 << 20}[(m.group(2) or "").lower() or None]
    if not 1 <= n <= MAX_SIZE:
        shown = "%d" % n if abs(n) < 10 ** 20 else "a %d-bit number" % n.bit_length()
        raise NetstackError("%s is not a message size: sizes run from 1 byte to 16 MiB" % shown, field=field)
    return n


def _choices(value, allowed, field):
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value:
        raise NetstackError("must be a non-empty list of %s" % ", ".join(allowed), field=field)
    out = []
    for i, v in enumerate(value):
        if v not in allowed:
            raise NetstackError("unknown value %r; choose from %s" % (v, ", ".join(allowed)), field="%s[%d]" % (field, i))
        if v not in out:
            out.append(v)
    return out


_DECIMAL = re.compile(r"\A\s*[-+]?(?:[0-9]{1,20}(?:\.[0-9]{0,20})?|\.[0-9]{1,20})(?:[eE][-+]?[0-9]{1,3})?\s*\Z")


def number(value, key, lo, hi, kind=float):
    """``value`` as a ``kind`` (int or float) in [lo, hi]: ints strictly (an int, a whole
    finite float or ASCII digits), floats finite (NaN and infinity never pass, nor do
    non-ASCII digits); NetstackError naming ``key`` otherwise."""
    if kind is int:
        if isinstance(value, float) and math.isfinite(value) and value == int(value):
            value = int(value)
        return strict_int(value, key, lo, hi)
    if isinstance(value, str):
        if not _DECIMAL.match(value):
            raise NetstackError("%s is not a number" % (repr(value)[:40],), field=key)
        value = float(value)
    return float(strict_number(value, key, lo, hi))


def _number(p, key, lo, hi, kind=float):
    p[key] = number(p[key], key, lo, hi, kind)


def resolve(host, field="peer"):
    """An address literal for ``host`` (an address or a resolvable name)."""
    try:
        infos = socket.getaddrinfo(host, None, 0, socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, ValueError, TypeError) as e:
        raise NetstackError("cannot resolve %s: %s" % (repr(host)[:80], str(e)[:200]), field=field)
    return infos[0][4][0]


def validate(params, measure=True):
    """Checked, normalised parameters; NetstackError naming the field otherwise.  With
    ``measure=False`` (serving or stopping, which measure nothing) the peer path's peer is
    not required or resolved; every value given is still checked."""
    params = {k: v for k, v in params.items() if k != "peer_address"}  # derived: re-resolved below
    unknown = set(params) - set(DEFAULTS)
    if unknown:
        raise NetstackError("unknown option(s): %s" % ", ".join(sorted(unknown)), field=sorted(unknown)[0])
    p = dict(DEFAULTS)
    p.update({k: v for k, v in params.items() if v is not None})
    p["paths"] = _choices(p["paths"], PATHS, "paths")
    p["protocols"] = _choices(p["protocols"], PROTOCOLS, "protocols")
    p["modes"] = _choices(p["modes"], MODES, "modes")
    sizes = p["sizes"] if isinstance(p["sizes"], (list, tuple)) else [p["sizes"]]
    if not sizes:
        raise NetstackError("must list at least one message size", field="sizes")
    p["sizes"] = sorted(set(parse_size(v, "sizes[%d]" % i) for i, v in enumerate(sizes)))
    _number(p, "duration", 0.05, 600.0)
    _number(p, "repeats", 1, 50, int)
    _number(p, "notification_batch", 1, 1 << 16, int)
    _number(p, "queue_depth", 1, 256, int)
    _number(p, "peer_port", 1, 65535, int)
    _number(p, "margin", 0.0, 0.99)
    _number(p, "receiver_timeout", 1.0, 600.0)
    if p["implementation"] not in ("auto", "c", "python"):
        raise NetstackError("unknown value %r; choose from auto, c, python" % (p["implementation"],),
                            field="implementation")
    if not isinstance(p["netns_prefix"], str) or not re.match(r"\A[A-Za-z][A-Za-z0-9_]{0,23}\Z", p["netns_prefix"]):
        raise NetstackError("%r is not a namespace prefix (a letter, then up to 23 letters, digits or _)"
                            % (p["netns_prefix"],), field="netns_prefix")
    allowed = sorted(os.sched_getaffinity(0))
    for key in ("sender_cpu", "receiver_cpu"):
        if p[key] is not None:
            _number(p, key, 0, 4095, int)
            if p[key] not in allowed:
                raise NetstackError("CPU %s is not one this process may run on (%s)" % (p[key], allowed), field=key)
    if p["peer"] is not None and (not isinstance(p["peer"], str) or not p["peer"] or len(p["peer"]) > 253
                                  or "\x00" in p["peer"]):
        raise NetstackError("%s is not a host name or address" % (repr(p["peer"])[:40],), field="peer")
    if "peer" in p["paths"] and measure:
        if not p["peer"]:
            raise NetstackError("the peer path needs a peer host (an address or name)", field="peer")
        p["peer_address"] = resolve(p["peer"])
    return p


# --------------------------------------------------------------------------- line I/O

class Lines(object):
    """Lines from a pipe with a timeout per line (select + os.read, no Python buffering)."""

    def __init__(self, fd):
        self.fd, self.buf = fd, b""

    def next(self, timeout, what):
        deadline = time.time() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.time()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                raise NetstackError("no answer from the %s within %.0f s" % (what, timeout))
            chunk = os.read(self.fd, 65536)
            if not chunk:
                line, self.buf = self.buf, b""
                if line.strip():
                    return line.decode("utf-8", "replace").strip()
                raise NetstackError("the %s exited without an answer" % what)
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode("utf-8", "replace").strip()


def _json_line(line, what):
    try:
        out = json.loads(line)
    except ValueError:
        raise NetstackError("the %s answered %r, not JSON" % (what, line[:200]))
    if not isinstance(out, dict):
        raise NetstackError("the %s answered %r" % (what, line[:200]))
    return out


class Receiver(object):
    """A started receiver: ``port()`` once it listens, ``result()`` when the sender is done."""

    def __init__(self, fd, stop):
        self.lines, self._stop = Lines(fd), stop

    def port(self, timeout=10.0):
        line = self.lines.next(timeout, "receiver")
        if line.startswith("listening "):
            return int(line.split()[1])
        answer = _json_line(line, "receiver")
        raise NetstackError("receiver failed at %s: %s" % (answer.get("where", "start"), answer.get("error", line)))

    def result(self, timeout):
        return _json_line(self.lines.next(timeout, "receiver"), "receiver")

    def close(self):
        self._stop()


# --------------------------------------------------------------------------- C helper

class CHelper(object):
    """src/zc_bench.c compiled on this host."""

    kind = "c"

    def __init__(self, path, compiler=None):
        self.path, self.compiler = path, compiler

    def probe(self):
        rc, out, err = run([self.path, "probe"], timeout=30)
        if rc != 0:
            raise NetstackError("zc_bench probe failed: %s" % (err.strip() or out.strip()))
        return _json_line(out.strip().splitlines()[-1], "probe")

    def receiver(self, proto, addr, netns=None, cpu=None, timeout=10.0):
        argv = [self.path, "recv", "-P", proto, "-a", addr, "-t", "%g" % timeout]
        if netns:
            argv += ["-N", nsutil.netns_path(netns)]
        if cpu is not None:
            argv += ["-c", str(cpu)]
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                close_fds=True)

        def stop():
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            proc.stdout.close()
        return Receiver(proc.stdout.fileno(), stop)

    def send(self, proto, addr, port, size, mode, duration, batch=32, depth=8, cpu=None, netns=None):
        argv = [self.path, "send", "-P", proto, "-a", addr, "-p", str(port), "-s", str(size), "-m", mode,
                "-d", "%g" % duration, "-b", str(batch), "-q", str(depth)]
        if netns:
            argv += ["-N", nsutil.netns_path(netns)]
        if cpu is not None:
            argv += ["-c", str(cpu)]
        _rc, out, err = run(argv, timeout=duration + 60)
        lines = out.strip().splitlines()
        if not lines:
            raise NetstackError("zc_bench send gave no result: %s" % err.strip()[-500:])
        return _json_line(lines[-1], "sender")


def build_c_helper(source_text, workdir):
    """(CHelper, None) or (None, why not): compile zc_bench.c with the host's compiler."""
    cc = which("cc") or which("gcc") or which("clang")
    if not cc:
        return None, "no C compiler (cc, gcc or clang) on this host"
    if not source_text:
        return None, "no zc_bench.c source was shipped to the module"
    src = os.path.join(workdir, "zc_bench.c")
    out = os.path.join(workdir, "zc_bench")
    with open(src, "w") as f:
        f.write(source_text)
    rc, _o, err = run([cc, "-O2", "-Wall", "-o", out, src], timeout=180)
    if rc != 0:
        return None, "%s could not compile zc_bench.c: %s" % (cc, " | ".join(err.strip().splitlines()[-4:]))
    return CHelper(out, cc), None


# --------------------------------------------------------------------------- Python fallback

def _cpu():
    t = os.times()
    return t.user, t.system


def _place(netns, cpu):
    if netns:
        nsutil.enter_netns(nsutil.netns_path(netns))
    if cpu is not None:
        os.sched_setaffinity(0, [cpu])


def _family(addr):
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def py_receive(proto, addr, out, timeout):
    """The receiver, in a forked child: writes "listening PORT" then one JSON line to fd ``out``."""
    tcp = proto == "tcp"
    s = socket.socket(_family(addr), socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if not tcp:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    s.bind((addr, 0))
    if tcp:
        s.listen(1)
    os.write(out, ("listening %d\n" % s.getsockname()[1]).encode())
    if not select.select([s], [], [], timeout)[0]:
        raise NetstackError("no sender within %ss" % timeout)
    conn = s.accept()[0] if tcp else s
    buf = bytearray(1 << 20 if tcp else 65536)
    nbytes = msgs = 0
    u0, s0 = _cpu()
    t0 = t_last = time.monotonic()
    while True:
        if not tcp and not select.select([conn], [], [], 1.0 if msgs else timeout)[0]:
            break
        n = conn.recv_into(buf)
        if n == 0:
            break
        if not tcp and not msgs:
            u0, s0 = _cpu()
            t0 = time.monotonic()
        nbytes += n
        msgs += 1
        t_last = time.monotonic()
    u1, s1 = _cpu()
    if tcp:
        t_last = time.monotonic()
    return {"status": "ok", "role": "recv", "proto": proto, "bytes": nbytes, "msgs": msgs, "wall_s": t_last - t0,
            "cpu_user_s": u1 - u0, "cpu_sys_s": s1 - s0}


def py_read_errqueue(sock, st, wait_ms=0):
    """Read every queued zerocopy notification into ``st`` (the C helper's read_errqueue)."""
    if wait_ms:
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLERR)
        poller.poll(wait_ms)
    while True:
        try:
            _d, anc, _f, _a = sock.recvmsg(0, 256, MSG_ERRQUEUE | socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return
        st["errqueue_reads"] += 1
        for level, kind, data in anc:
            if (level, kind) not in ((SOL_IP, IP_RECVERR), (SOL_IPV6, IPV6_RECVERR)) or len(data) < 16:
                continue
            ee_errno, origin, _type, code, _pad, lo, hi = struct.unpack_from("=IBBBBII", data)
            if origin != SO_EE_ORIGIN_ZEROCOPY or ee_errno:
                continue
            n = ((hi - lo) & 0xffffffff) + 1
            st["completions"] += n
            st["notifications"] += 1
            if code & SO_EE_CODE_ZEROCOPY_COPIED:
                st["copied"] += n


def py_send(proto, addr, port, size, mode, duration, batch):
    """The sender, in a forked child: copy or MSG_ZEROCOPY; the C helper's JSON fields."""
    if mode not in ("copy", "msg_zerocopy"):
        return {"status": "unsupported", "reason": "the Python fallback has no %s (it needs the C helper: "
                                                   "install a C compiler)" % mode}
    if proto == "udp" and size > UDP_MAX_PAYLOAD:
        return {"status": "error", "where": "size", "errno": errno.EMSGSIZE, "error": os.strerror(errno.EMSGSIZE)}
    s = socket.socket(_family(addr), socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
    s.connect((addr, port))
    buf = (b"abcdefghijklmnopqrstuvwxyz" * (size // 26 + 1))[:size]
    st = dict(bytes=0, sends=0, short_sends=0, completions=0, notifications=0, errqueue_reads=0, copied=0, enobufs=0)
    flags = 0
    if mode == "msg_zerocopy":
        s.setsockopt(socket.SOL_SOCKET, SO_ZEROCOPY, 1)
        flags = MSG_ZEROCOPY
    u0, s0 = _cpu()
    t0 = time.monotonic()
    end = t0 + duration
    while time.monotonic() < end:
        try:
            n = s.send(buf, flags)
        except OSError as e:
            if e.errno != errno.ENOBUFS:
                raise
            st["enobufs"] += 1
            if flags:
                py_read_errqueue(s, st, 10)
            continue
        st["sends"] += 1
        st["bytes"] += n
        st["short_sends"] += n < size
        if flags and st["sends"] - st["completions"] >= batch:
            py_read_errqueue(s, st)
    deadline = time.monotonic() + DRAIN_SECONDS
    while flags and st["completions"] < st["sends"] and time.monotonic() < deadline:
        py_read_errqueue(s, st, 100)
    t1 = time.monotonic()
    u1, s1 = _cpu()
    if proto == "tcp":
        s.close()
    else:
        for _i in range(10):  # end markers; the receiver stops at the first (later ones may be refused)
            try:
                s.send(b"")
            except OSError:
                break
            time.sleep(0.002)
    st.update(status="ok", role="send", proto=proto, mode=mode, size=size, wall_s=t1 - t0, cpu_user_s=u1 - u0,
              cpu_sys_s=s1 - s0, copied_known=bool(flags))
    return st


def _fork(work, netns, cpu):
    """Run ``work(out_fd)`` in a forked child placed in ``netns``/on ``cpu``; its return value
    (a dict) is written as the last JSON line.  Returns (pid, read fd)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns
        try:
            os.close(r)
            _place(netns, cpu)
            answer = work(w)
        except NetstackError as e:
            answer = {"status": "error", "where": e.field or "python", "errno": 0, "error": e.msg}
        except OSError as e:
            answer = {"status": "error", "where": "python", "errno": e.errno or 0, "error": str(e)}
        except BaseException as e:  # everything must reach the parent
            answer = {"status": "error", "where": "python", "errno": 0, "error": "%s: %s" % (type(e).__name__, e)}
        try:
            os.write(w, (json.dumps(answer) + "\n").encode())
        finally:
            os._exit(0)
    os.close(w)
    return pid, r


def _reap(pid, fd):
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
    os.waitpid(pid, 0)
    os.close(fd)


class PyHelper(object):
    """The same protocol as zc_bench, in forked Python processes (copy and MSG_ZEROCOPY)."""

    kind = "python"
    path = compiler = None

    def probe(self):
        out = {"status": "ok", "io_uring": None, "io_uring_error": "not probed: the Python fallback has no io_uring",
               "io_uring_send_zc": False}
        s = socket.socket()
        try:
            s.setsockopt(socket.SOL_SOCKET, SO_ZEROCOPY, 1)
            out.update(so_zerocopy=True, so_zerocopy_error="")
        except OSError as e:
            out.update(so_zerocopy=False, so_zerocopy_error=e.strerror)
        finally:
            s.close()
        out["zc_cmsg"] = probe_zc_cmsg() if out["so_zerocopy"] else "no: SO_ZEROCOPY is refused"
        return out

    def receiver(self, proto, addr, netns=None, cpu=None, timeout=10.0):
        pid, fd = _fork(lambda out: py_receive(proto, addr, out, timeout), netns, cpu)
        return Receiver(fd, lambda: _reap(pid, fd))

    def send(self, proto, addr, port, size, mode, duration, batch=32, depth=8, cpu=None, netns=None):
        pid, fd = _fork(lambda _out: py_send(proto, addr, port, size, mode, duration, batch), netns, cpu)
        try:
            return _json_line(Lines(fd).next(duration + 60, "sender"), "sender")
        finally:
            _reap(pid, fd)


def probe_zc_cmsg():
    """The lightweight notification probe (as zc_bench's): EINVAL for SCM_ZC_NOTIFICATION
    on a socket whose plain MSG_ZEROCOPY send works means the kernel lacks the series."""
    lsock = socket.socket()
    sock = socket.socket()
    try:
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(1)
        sock.connect(lsock.getsockname())
        sock.setsockopt(socket.SOL_SOCKET, SO_ZEROCOPY, 1)
        sock.send(b"x", MSG_ZEROCOPY)
        try:
            sock.sendmsg([b"x"], [(socket.SOL_SOCKET, SCM_ZC_NOTIFICATION, b"\xff" * (16 * ZC_INFO_ELEM))], MSG_ZEROCOPY)
            return "yes"
        except OSError as e:
            if e.errno == errno.EINVAL:
                return "no: the kernel rejects the SCM_ZC_NOTIFICATION control message (EINVAL)"
            return "error: sendmsg with SCM_ZC_NOTIFICATION failed: %s" % e.strerror
    except OSError as e:
        return "error: %s" % e
    finally:
        sock.close()
        lsock.close()


def make_helper(implementation, source_text, workdir):
    """The helper to measure with, and the record of why it is that one."""
    if implementation == "python":
        return PyHelper(), {"kind": "python", "reason": "implementation=python was asked for"}
    helper, why = build_c_helper(source_text, workdir)
    if helper:
        return helper, {"kind": "c", "compiler": helper.compiler, "reason": None}
    if implementation == "c":
        raise NetstackError("the C helper is not available: %s" % why, field="implementation")
    return PyHelper(), {"kind": "python", "reason": "Python fallback: %s; small-message figures measure the "
                                                    "interpreter more than the kernel" % why}


# --------------------------------------------------------------------------- paths

class VethLab(nsutil.NetnsLab):
    """Two throwaway namespaces joined by a veth pair (nsutil.NetnsLab, the lab the HTTP
    benchmark uses too); the receiver lives in ``server``."""

    def __init__(self, prefix):
        super(VethLab, self).__init__(prefix, ("srv", "cli"))
        self.server, self.client = self.name("srv"), self.name("cli")

    def __enter__(self):
        if os.geteuid() != 0:
            raise NetstackError("the veth path needs root (it creates network namespaces)", field="paths")
        nsutil.iproute_class(field="paths")  # pyroute2 builds the links: say so before anything is made
        return super(VethLab, self).__enter__()

    def setup(self):
        self.veth(("srv", SERVER_IFNAME, VETH_SERVER), ("cli", CLIENT_IFNAME, VETH_CLIENT), VETH_PREFIXLEN)


PEER_START_WAIT = 20.0   # s a refused hello is retried (the peer's serve may still be starting)


class PeerReceiver(object):
    """A receiver on another host, started through its ``serve`` control port."""

    def __init__(self, address, control_port, proto, timeout, connect_timeout=5.0):
        self.sock = connect_control(address, control_port, connect_timeout)
        self.file = self.sock.makefile("rwb")
        self.timeout = timeout
        self._send({"op": "recv", "proto": proto, "timeout": timeout})

    def _send(self, obj):
        self.file.write((json.dumps(obj) + "\n").encode())
        self.file.flush()

    def _answer(self, timeout):
        self.sock.settimeout(timeout)
        try:
            line = self.file.readline()
        except (OSError, socket.timeout) as e:
            raise NetstackError("no answer from the peer within %.0f s: %s" % (timeout, e), field="peer")
        if not line:
            raise NetstackError("the peer closed the control connection", field="peer")
        return _json_line(line.decode("utf-8", "replace"), "peer")

    def port(self, timeout=10.0):
        answer = self._answer(timeout + 10)
        if "port" not in answer:
            raise NetstackError("the peer could not start a receiver: %s" % answer.get("error", answer), field="peer")
        return int(answer["port"])

    def result(self, timeout):
        return self._answer(timeout)

    def close(self):
        try:
            self.file.close()
        finally:
            self.sock.close()


def connect_control(address, port, timeout=5.0, refused_wait=0.0):
    """The control connection to a serving peer.  ``refused_wait``: for how long a refused
    connection is tried again (a ring's servers start in the background while other hosts
    already measure, so the neighbour may not listen yet)."""
    deadline = time.time() + refused_wait
    while True:
        try:
            return socket.create_connection((address, port), timeout=timeout)
        except ConnectionRefusedError as e:
            if time.time() < deadline:
                time.sleep(0.2)
                continue
            err = e
        except (OSError, socket.timeout) as e:
            err = e
        raise NetstackError("peer %s port %d is not reachable: %s (is zerocopy_test serve running there?)"
                            % (address, port, getattr(err, "strerror", None) or err), field="peer")


def peer_request(address, port, op, refused_wait=0.0):
    """One control request (``hello``, ``done``) to a serving peer; its JSON answer."""
    sock = connect_control(address, port, refused_wait=refused_wait)
    try:
        sock.settimeout(10)
        sock.sendall((json.dumps({"op": op}) + "\n").encode())
        f = sock.makefile("rb")
        line = f.readline(4096).decode("utf-8", "replace")
        f.close()
    except (OSError, socket.timeout) as e:
        raise NetstackError("peer %s port %d did not answer: %s" % (address, port, e), field="peer")
    finally:
        sock.close()
    try:
        answer = json.loads(line)
    except ValueError:
        answer = None
    if not isinstance(answer, dict) or not answer.get("ok"):
        raise NetstackError("peer %s port %d answered %r: that is not zerocopy_test serve" % (address, port, line[:80]),
                            field="peer")
    return answer


def serve(helper, listen_address, control_port, clients=1, timeout=600.0):
    """Serve receivers to ``clients`` peers until each says done, or ``timeout``.

    Control protocol (one JSON line each way): ``{"op": "recv", "proto": ...}`` ->
    ``{"port": N}``, the sender runs, -> the receiver's counters; ``{"op": "hello"}``
    (a client checks it reached a server), ``{"op": "done"}`` (a client is finished),
    ``{"op": "stop"}`` (stop now: the role's cleanup).
    """
    ls = socket.socket(_family(listen_address), socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        ls.bind((listen_address, control_port))
    except OSError as e:
        ls.close()
        raise NetstackError("cannot listen on %s port %d: %s" % (listen_address, control_port, e.strerror),
                            field="peer_port")
    ls.listen(8)
    served = done = 0
    stopped = False
    deadline = time.time() + timeout
    try:
        while done < clients and time.time() < deadline:
            if not select.select([ls], [], [], max(0.0, deadline - time.time()))[0]:
                break
            conn = ls.accept()[0]
            try:
                served += _serve_one(helper, listen_address, conn)
            except _Done:
                done += 1
            except _Stop:
                stopped = True
                break
            except (OSError, NetstackError, ValueError):
                pass  # a client that went away: keep serving the others
            finally:
                conn.close()
    finally:
        ls.close()
    return {"served": served, "clients_done": done, "stopped": stopped, "timed_out": done < clients and not stopped}


class _Done(Exception):
    pass


class _Stop(Exception):
    pass


def _serve_one(helper, listen_address, conn):
    conn.settimeout(30)
    f = conn.makefile("rwb")
    req = _json_line(f.readline().decode("utf-8", "replace"), "client")
    if req.get("op") in ("hello", "done", "stop"):
        f.write((json.dumps({"ok": True, "implementation": helper.kind}) + "\n").encode())
        f.flush()
        if req["op"] == "done":
            raise _Done()
        if req["op"] == "stop":
            raise _Stop()
        return 0
    if req.get("op") != "recv" or req.get("proto") not in PROTOCOLS:
        f.write(b'{"error": "unknown request"}\n')
        f.flush()
        return 0
    timeout = float(req.get("timeout") or 10)
    rx = helper.receiver(req["proto"], listen_address, None, None, timeout)
    try:
        try:
            port = rx.port()
        except NetstackError as e:
            f.write((json.dumps({"error": str(e)}) + "\n").encode())
            f.flush()
            return 0
        f.write((json.dumps({"port": port}) + "\n").encode())
        f.flush()
        conn.settimeout(None)
        answer = rx.result(timeout + 600)
        f.write((json.dumps(answer) + "\n").encode())
        f.flush()
        return 1
    finally:
        rx.close()


# --------------------------------------------------------------------------- runs

def one_run(helper, p, path, proto, size, mode, lab=None):
    """One sender/receiver run of a cell: the sender's and receiver's counters."""
    timeout = p["receiver_timeout"]
    if path == "peer":
        addr = p["peer_address"]
        rx = PeerReceiver(addr, p["peer_port"], proto, timeout)
        send_ns = None
    else:
        addr = "127.0.0.1" if path == "loopback" else VETH_SERVER
        recv_ns = lab.server if path == "veth" else None
        send_ns = lab.client if path == "veth" else None
        rx = helper.receiver(proto, addr, recv_ns, p["receiver_cpu"], timeout)
    try:
        port = rx.port(timeout)
        tx = helper.send(proto, addr, port, size, mode, p["duration"], p["notification_batch"], p["queue_depth"],
                         p["sender_cpu"], send_ns)
        if tx.get("status") != "ok":
            return tx, None
        return tx, rx.result(p["duration"] + timeout + 30)
    finally:
        rx.close()


def run_metrics(tx, rx):
    """Per-run figures from the two sides' counters."""
    sent, got = tx["bytes"], rx["bytes"]
    out = {
        "throughput_gbps": got * 8 / rx["wall_s"] / 1e9 if rx["wall_s"] > 0 else 0.0,
        "sent_gbps": sent * 8 / tx["wall_s"] / 1e9 if tx["wall_s"] > 0 else 0.0,
        "sender_cpu_s_per_gb": (tx["cpu_user_s"] + tx["cpu_sys_s"]) / (sent / 1e9) if sent else None,
        "receiver_cpu_s_per_gb": (rx["cpu_user_s"] + rx["cpu_sys_s"]) / (got / 1e9) if got else None,
        "sends": tx["sends"], "completions": tx["completions"], "notifications": tx["notifications"],
        "errqueue_reads": tx["errqueue_reads"], "copied": tx["copied"], "enobufs": tx["enobufs"],
        "short_sends": tx["short_sends"], "copied_known": tx["copied_known"],
        "loss_fraction": max(0.0, 1.0 - got / sent) if sent and tx["proto"] == "udp" else 0.0,
    }
    return out


def _median(xs):
    xs = [x for x in xs if x is not None]
    return stats.median(xs) if xs else None


def summarize_cell(key, runs):
    """Median and spread of a cell's runs."""
    path, proto, size, mode = key
    cell = {"path": path, "proto": proto, "size": size, "mode": mode, "status": "ok", "runs": len(runs)}
    for m in ("throughput_gbps", "sender_cpu_s_per_gb", "receiver_cpu_s_per_gb"):
        vals = [r[m] for r in runs if r[m] is not None]
        cell[m] = {"median": _median(vals), "min": min(vals) if vals else None, "max": max(vals) if vals else None}
    comp = sum(r["completions"] for r in runs)
    notes = sum(r["notifications"] for r in runs)
    cell["sends"] = sum(r["sends"] for r in runs)
    cell["completions"] = comp
    cell["notifications"] = notes
    cell["completions_per_notification"] = comp / notes if notes else None
    known = all(r["copied_known"] for r in runs) and mode in ZEROCOPY_MODES
    cell["copied_fraction"] = (sum(r["copied"] for r in runs) / comp if comp else None) if known else None
    # zerocopy sends whose completion had not arrived DRAIN_SECONDS after the last send
    cell["completions_missing"] = sum(r["sends"] - r["completions"] for r in runs) if mode in ZEROCOPY_MODES else 0
    cell["enobufs"] = sum(r["enobufs"] for r in runs)
    cell["loss_fraction"] = _median([r["loss_fraction"] for r in runs])
    return cell


def crossover(cells, margin, metric="throughput"):
    """{(path, proto, mode): {"size": smallest size from which the zerocopy mode wins at
    every larger size, "ratios": {size: median per-repeat ratio}}} for each zerocopy mode
    against its baseline.  Throughput: zc / base; sender_cpu: base / zc (>1: zc cheaper)."""
    by = {(c["path"], c["proto"], c["size"], c["mode"]): c for c in cells}
    out = {}
    for (path, proto, size, mode), c in sorted(by.items(), key=lambda kv: kv[0][:3]):
        base = by.get((path, proto, size, BASELINE.get(mode)))
        if mode not in ZEROCOPY_MODES or c["status"] != "ok" or not base or base["status"] != "ok":
            continue
        ratios = []
        for a, b in zip(c["per_run"], base["per_run"]):
            if metric == "throughput" and b["throughput_gbps"]:
                ratios.append(a["throughput_gbps"] / b["throughput_gbps"])
            elif metric == "sender_cpu" and a["sender_cpu_s_per_gb"]:
                ratios.append(b["sender_cpu_s_per_gb"] / a["sender_cpu_s_per_gb"])
        if ratios:
            out.setdefault((path, proto, mode), {"ratios": {}})["ratios"][size] = stats.median(ratios)
    for entry in out.values():
        sizes = sorted(entry["ratios"])
        entry["size"] = None
        for i, s in enumerate(sizes):
            if all(entry["ratios"][t] >= 1.0 + margin for t in sizes[i:]):
                entry["size"] = s
                break
    return out


def fmt_size(n):
    if n >= 1 << 20 and n % (1 << 20) == 0:
        return "%dM" % (n >> 20)
    if n >= 1024 and n % 1024 == 0:
        return "%dK" % (n >> 10)
    return "%dB" % n


def recommend(cells, cross, path, proto, margin):
    """A verdict for one path and protocol: ("copies-by-design"|"zerocopy"|"copy", text)."""
    zc = [c for c in cells if c["path"] == path and c["proto"] == proto and c["mode"] in ZEROCOPY_MODES
          and c["status"] == "ok"]
    copied = [c["copied_fraction"] for c in zc if c["copied_fraction"] is not None]
    if copied and min(copied) >= COPIED_BY_DESIGN:
        return ("copies-by-design", "keep copies on %s/%s: the kernel copied %.0f%% of zerocopy sends (%s)"
                % (path, proto, 100 * min(copied), "a local socket copies zerocopy pages on delivery"
                   if path in LOCAL_PATHS else "the receiver is on this machine, or the route's device cannot send "
                                               "user pages"))
    wins = []
    for mode in ZEROCOPY_MODES:
        t = cross.get("throughput", {}).get((path, proto, mode))
        if t and t["size"] is not None:
            wins.append((t["size"], mode, t["ratios"][t["size"]]))
    if not wins:
        tested = [c["mode"] for c in zc]
        if not tested:
            return ("copy", "no zerocopy mode could run on %s/%s" % (path, proto))
        return ("copy", "keep copies on %s/%s: no zerocopy mode beat its copy baseline by %.0f%% or more at any "
                        "tested size" % (path, proto, 100 * margin))
    size, mode, ratio = min(wins)
    return ("zerocopy", "%s for %s messages of %s and larger on %s (throughput x%.2f at %s vs %s)"
            % (mode, proto.upper(), fmt_size(size), path, ratio, fmt_size(size), BASELINE[mode]))


def unsupported_modes(kernel, helper):
    """{mode: reason} for modes the probe already rules out, so no run is spent on them."""
    out = {}
    if not str(kernel.get("zc_cmsg", "")).startswith("yes"):
        out["zc_cmsg"] = "kernel: %s" % kernel.get("zc_cmsg")
    if helper.kind == "python":
        for mode in ("io_uring", "io_uring_zc"):
            out[mode] = "the Python fallback has no io_uring (it needs the C helper: install a C compiler)"
    elif not kernel.get("io_uring"):
        out["io_uring"] = out["io_uring_zc"] = "kernel: io_uring is not available (%s)" % kernel.get("io_uring_error")
    elif not kernel.get("io_uring_send_zc"):
        out["io_uring_zc"] = "kernel: io_uring has no IORING_OP_SEND_ZC"
    if not kernel.get("so_zerocopy"):
        for mode in ("msg_zerocopy", "zc_cmsg"):
            out[mode] = "kernel: SO_ZEROCOPY is refused (%s)" % kernel.get("so_zerocopy_error")
    return out


def measure(p, helper, log=None, ruled_out=None):
    """Every cell of ``p`` (validated), interleaved: for each repeat, each path, protocol and
    size, the modes in an order that rotates per repeat.  ``ruled_out``: {mode: reason}."""
    runs, status = {}, {}
    for mode, why in (ruled_out or {}).items():
        for path in p["paths"]:
            for proto in p["protocols"]:
                status[(path, proto, None, mode)] = ("unsupported", why)
    lab = None
    paths = p["paths"]
    try:
        if "veth" in paths:
            lab = VethLab(p["netns_prefix"]).__enter__()
        for rep in range(p["repeats"]):
            for path in paths:
                for proto in p["protocols"]:
                    for size in p["sizes"]:
                        k = rep % len(p["modes"])
                        for mode in p["modes"][k:] + p["modes"][:k]:
                            key = (path, proto, size, mode)
                            if key in status:
                                continue  # unsupported / not applicable: said once
                            if proto == "udp" and size > UDP_MAX_PAYLOAD:
                                status[key] = ("n/a", "above the UDP datagram limit (%d bytes)" % UDP_MAX_PAYLOAD)
                                continue
                            if (path, proto, None, mode) in status:
                                status[key] = status[(path, proto, None, mode)]
                                continue
                            tx, rx = one_run(helper, p, path, proto, size, mode, lab)
                            if tx.get("status") == "unsupported":
                                status[(path, proto, None, mode)] = status[key] = ("unsupported", tx.get("reason"))
                                continue
                            if tx.get("status") != "ok" or rx is None or rx.get("status") != "ok":
                                bad = tx if tx.get("status") != "ok" else (rx or {})
                                raise NetstackError("%s/%s %s %s failed at %s: %s" % (
                                    path, proto, fmt_size(size), mode, bad.get("where", "?"), bad.get("error", bad)),
                                    field="peer" if path == "peer" else None)
                            runs.setdefault(key, []).append(run_metrics(tx, rx))
                            if log:
                                log(key, runs[key][-1])
    finally:
        if lab:
            lab.close()
    cells = []
    for path in paths:
        for proto in p["protocols"]:
            for size in p["sizes"]:
                for mode in p["modes"]:
                    key = (path, proto, size, mode)
                    if key in runs:
                        cell = summarize_cell(key, runs[key])
                        cell["per_run"] = runs[key]
                    else:
                        st, why = status.get(key, ("unsupported", "not run"))
                        cell = {"path": path, "proto": proto, "size": size, "mode": mode, "status": st, "reason": why}
                    cells.append(cell)
    return cells, (lab.reaped if lab else [])


def analyse(cells, p):
    """Crossover sizes and per-path recommendations from measured cells."""
    cross = {"throughput": crossover(cells, p["margin"], "throughput"),
             "sender_cpu": crossover(cells, p["margin"], "sender_cpu")}
    recs, crossover_out = {}, {}
    for path in p["paths"]:
        for proto in p["protocols"]:
            verdict, text = recommend(cells, cross, path, proto, p["margin"])
            recs.setdefault(path, {})[proto] = {"verdict": verdict, "text": text}
            for mode in ZEROCOPY_MODES:
                t = cross["throughput"].get((path, proto, mode))
                c = cross["sender_cpu"].get((path, proto, mode))
                if t or c:
                    copied = [x["copied_fraction"] for x in cells if (x["path"], x["proto"], x["mode"]) == (path, proto, mode)
                              and x["status"] == "ok" and x["copied_fraction"] is not None]
                    crossover_out.setdefault(path, {}).setdefault(proto, {})[mode] = {
                        "baseline": BASELINE[mode],
                        # >= 0.99: any "win" is not zero copy (the kernel copied, later or elsewhere)
                        "min_copied_fraction": round(min(copied), 4) if copied else None,
                        "throughput_size": t["size"] if t else None,
                        "sender_cpu_size": c["size"] if c else None,
                        "throughput_ratio": {str(s): round(r, 4) for s, r in sorted((t or {}).get("ratios", {}).items())},
                        "sender_cpu_ratio": {str(s): round(r, 4) for s, r in sorted((c or {}).get("ratios", {}).items())},
                    }
    return crossover_out, recs


def zerocopy_test(params, source_text=None, log=None):
    """The whole check from module-style parameters: probe, measure, analyse."""
    p = validate(params)
    workdir = tempfile.mkdtemp(prefix="netstack-zc-")
    try:
        helper, impl = make_helper(p["implementation"], source_text, workdir)
        kernel = helper.probe()
        kernel.pop("status", None)
        kernel["release"] = platform.release()
        if "peer" in p["paths"]:
            # fail before any run; wait a little for a neighbour whose server is still starting
            peer_request(p["peer_address"], p["peer_port"], "hello", refused_wait=PEER_START_WAIT)
        t0 = time.time()
        cells, reaped = measure(p, helper, log, unsupported_modes(kernel, helper))
        crossovers, recs = analyse(cells, p)
        if "peer" in p["paths"]:
            peer_request(p["peer_address"], p["peer_port"], "done")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    notes = []
    if set(p["paths"]) & set(LOCAL_PATHS):
        notes.append(LOOPBACK_NOTE)
    late = ["%s/%s %s %s: %d" % (c["path"], c["proto"], fmt_size(c["size"]), c["mode"], c["completions_missing"])
            for c in cells if c["status"] == "ok" and c.get("completions_missing")]
    if late:
        notes.append("zerocopy completions still outstanding %.0f s after the last send (%s): seen with UDP "
                     "datagrams above the path MTU, whose fragments wait in reassembly (net.ipv4.ipfrag_time) "
                     "holding the sender's pages when a sibling fragment was dropped" % (DRAIN_SECONDS, "; ".join(late)))
    if impl["kind"] == "python":
        notes.append(impl["reason"])
    shown = dict(p)
    return {"changed": False, "implementation": impl, "kernel": kernel, "cells": cells, "crossover": crossovers,
            "recommendations": recs, "notes": notes, "params": shown, "elapsed_s": round(time.time() - t0, 1),
            "reaped": reaped}


SERVE_DEFAULTS = {"listen_address": None, "peer_port": DEFAULTS["peer_port"], "serve_clients": 1,
                  "serve_timeout": 600.0, "implementation": "auto"}
MAX_SERVE_CLIENTS = 10000
MAX_SERVE_TIMEOUT = 7 * 86400.0


def validate_serve(params, action):
    """The serve options (SERVE_DEFAULTS), checked and normalised: ``peer_port`` 1 to 65535,
    ``serve_clients`` 1 to 10000, ``serve_timeout`` finite, 1 s to a week, ``implementation``
    one of auto, c, python.  ``action`` ``serve`` and ``stop`` need ``listen_address`` and
    resolve it (``listen_ip``); ``run`` only checks it when given.  NetstackError naming the
    field otherwise, before anything starts."""
    p = dict(SERVE_DEFAULTS)
    p.update({k: v for k, v in params.items() if k in SERVE_DEFAULTS and v is not None})
    p["peer_port"] = number(p["peer_port"], "peer_port", 1, 65535, int)
    p["serve_clients"] = number(p["serve_clients"], "serve_clients", 1, MAX_SERVE_CLIENTS, int)
    p["serve_timeout"] = number(p["serve_timeout"], "serve_timeout", 1.0, MAX_SERVE_TIMEOUT)
    if p["implementation"] not in ("auto", "c", "python"):
        raise NetstackError("unknown value %s; choose from auto, c, python" % (repr(p["implementation"])[:40],),
                            field="implementation")
    listen = p["listen_address"]
    if listen is None or listen == "":
        if action in ("serve", "stop"):
            raise NetstackError("%s needs the address to listen on" % ("serving" if action == "serve" else
                                                                       "stopping a server"), field="listen_address")
    elif not isinstance(listen, str) or len(listen) > 253 or any(ord(c) < 33 or ord(c) == 127 for c in listen):
        raise NetstackError("%s is not a host name or address" % (repr(listen)[:40],), field="listen_address")
    if action in ("serve", "stop"):
        p["listen_ip"] = resolve(listen, "listen_address")
    return p


def stop_serving(params):
    """Ask the server on listen_address:peer_port to stop; False when none answers."""
    p = validate_serve(params, "stop")
    try:
        peer_request(p["listen_ip"], p["peer_port"], "stop")
    except NetstackError:
        return {"changed": False, "stopped": False, "msg": "no server answered"}
    return {"changed": False, "stopped": True}


def serve_peer(params, source_text=None):
    """Serve receivers for other hosts' peer path (see ``serve``)."""
    p = validate_serve(params, "serve")
    workdir = tempfile.mkdtemp(prefix="netstack-zc-")
    try:
        helper, info = make_helper(p["implementation"], source_text, workdir)
        out = serve(helper, p["listen_ip"], p["peer_port"], p["serve_clients"], p["serve_timeout"])
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    out.update(changed=False, implementation=info)
    return out
