"""Helpers for the same-host path (capability 4) integration tests.

Port discipline: every policy and every server here uses ports 20000-29999 only.
The default policy covers ON_PORTS (20000-24999); servers that must stay off the path
listen on OFF_PORTS (25000-29999).  Client sockets get ephemeral ports (32768-60999 here),
so a connection matches the policy through its server port only.
"""

import errno
import hashlib
import os
import random
import socket
import struct
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
COLLECTIONS = os.path.join(REPO, "collections")
if COLLECTIONS not in sys.path:
    sys.path.insert(0, COLLECTIONS)

from ansible_collections.netstack.tuning.plugins.module_utils.shm_path import path as shm  # noqa: E402,F401 - for the tests
from ansible_collections.netstack.tuning.plugins.module_utils.bpf import program as bpf  # noqa: E402

ON_LO, ON_HI = 20000, 24999
OFF_LO, OFF_HI = 25000, 29999
# Prefix of pytest.xfail() messages: a test that reaches one has passed every other check
# and met a difference of the kernel's sockmap receive path from TCP (docs/shm_path.md).
KERNEL_DIFF = "kernel sockmap (tcp_bpf) difference from TCP, see docs/shm_path.md 'Known differences from TCP': "
LOCAL = ["127.0.0.0/8", "::1/128"]
TIMEOUT = 30.0          # default socket timeout: nothing in this suite may block longer
NAME_PREFIX = "shmtest"


def policy(ports="%d-%d" % (ON_LO, ON_HI), local=None, cgroup="/", name="t", capture="handshake"):
    """Capture at the handshake unless told: most tests here exercise the path itself
    (test_segments.py the other mode)."""
    return {"policies": [{"name": name, "ports": ports}], "local_addresses": list(local or LOCAL),
            "cgroup": cgroup, "capture": capture}


# ------------------------------------------------------------------ counters

def snap(p):
    """Totals plus 'sockets' of a loaded path (all zeros when it has no counters)."""
    c = p.counters()
    if c is None:
        return None
    out = dict(c["total"])
    out["sockets"] = c["sockets"]
    out["watched"] = c["watched"]
    return out


def delta(after, before):
    return dict((k, after[k] - before[k]) for k in after if k not in ("sockets", "watched"))


def carried(d, total, peer_closed=False):
    """Counter deltas `d` account for `total` payload bytes: on the path, or over TCP for
    the stretches where a reader had fallen its queue bound behind (docs/shm_path.md, "Bounded
    queue"); nothing over TCP without such an overflow or a first message that found no
    peer yet, unless the test closed a peer (sends after that go over TCP, for good)."""
    assert d["shm_bytes"] + d["tcp_bytes"] >= total and d["shm_bytes"] > 0, d
    assert peer_closed or d["tcp_bytes"] == 0 or d["overflows"] > 0 or d["tcp_conns"] > 0, d
    assert d["resumes"] <= d["overflows"] + d["tcp_conns"], d


def wait_sockets(p, want, timeout=10.0):
    """Poll until the sockhash holds `want` sockets (the kernel removes an entry when its
    socket closes; a socket in TIME_WAIT/closing is gone at once).  Returns the last count."""
    deadline = time.monotonic() + timeout
    n = None
    while time.monotonic() < deadline:
        n = p.counters()["sockets"]
        if n == want:
            return n
        time.sleep(0.05)
    return n


# ------------------------------------------------------------------ sockets

def listener(lo=ON_LO, hi=ON_HI, host="127.0.0.1", family=socket.AF_INET, backlog=128, rng=None):
    """A listening socket on a free random port in [lo, hi]."""
    rng = rng or random.Random()
    last = None
    for _ in range(200):
        port = rng.randint(lo, hi)
        s = socket.socket(family, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            s.close()
            last = e
            continue
        s.listen(backlog)
        s.settimeout(TIMEOUT)
        return s
    raise RuntimeError("no free port in %d-%d: %s" % (lo, hi, last))


def accept_all(lsock):
    """Every connection waiting on a non-blocking listener, as non-blocking sockets."""
    while True:
        try:
            s, _ = lsock.accept()
        except BlockingIOError:
            return
        s.setblocking(False)
        yield s


def free_port(lo=ON_LO, hi=ON_HI, host="127.0.0.1"):
    """A port in [lo, hi] free right now for a server started by another program."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randint(lo, hi)
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind((host, port))
        except OSError:
            continue
        finally:
            s.close()
        return port
    raise RuntimeError("no free port in %d-%d" % (lo, hi))


def pair(lsock, timeout=TIMEOUT):
    """(client, server) sockets of one new connection to `lsock`."""
    fam = lsock.family
    addr = lsock.getsockname()[:2]
    c = socket.socket(fam, socket.SOCK_STREAM)
    c.settimeout(timeout)
    c.connect(addr)
    s, _ = lsock.accept()
    s.settimeout(timeout)
    return c, s


def wait_port(host, port, timeout=30.0, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("server exited with %s" % proc.returncode)
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("nothing listens on %s:%d after %.0f s" % (host, port, timeout))


# ------------------------------------------------------------------ threads

class Worker(object):
    """A daemon thread whose result or exception comes back through join()."""

    def __init__(self, fn, *args, **kw):
        self.result = None
        self.error = None
        self.name = getattr(fn, "__name__", "worker")

        def run():
            try:
                self.result = fn(*args, **kw)
            except BaseException as e:  # noqa: B902 - handed to the joiner
                self.error = e
        self.t = threading.Thread(target=run, name=self.name, daemon=True)
        self.t.start()

    def join(self, timeout=60.0):
        self.t.join(timeout)
        if self.t.is_alive():
            raise AssertionError("%s still running after %.0f s (hang)" % (self.name, timeout))
        if self.error is not None:
            raise self.error
        return self.result


# ------------------------------------------------------------------ streams

class Stream(object):
    """A deterministic byte stream of random-sized messages, not held in memory whole:
    each message is a slice of a pool of random blocks, starting with its own sequence
    number so no two messages are alike."""

    POOL = 8

    def __init__(self, seed, total, min_size=1, max_size=1 << 20, pool_block=(1 << 20) + 4096):
        self.rng = random.Random(seed)
        self.total = total
        self.min_size = min_size
        self.max_size = max_size
        prng = random.Random(seed ^ 0x5A5A)
        self.pool = [prng.randbytes(pool_block) for _ in range(self.POOL)]

    def size(self):
        # Log-uniform between min_size and max_size: small messages are as common as big ones.
        lo, hi = self.min_size, self.max_size
        if lo == hi:
            return lo
        import math
        return max(lo, min(hi, int(math.exp(self.rng.uniform(math.log(lo), math.log(hi + 1))))))

    def messages(self):
        sent = 0
        i = 0
        while sent < self.total:
            n = min(self.size(), self.total - sent)
            blk = self.pool[i % self.POOL]
            off = self.rng.randrange(0, len(blk) - n + 1)
            msg = bytearray(blk[off:off + n])
            tag = struct.pack("<Q", i)[:n]
            msg[:len(tag)] = tag
            yield bytes(msg)
            sent += n
            i += 1


def send_stream(sock, stream, shut=True):
    """sendall() every message of `stream`; returns (bytes, sha256 hex, messages)."""
    h = hashlib.sha256()
    n = m = 0
    for msg in stream.messages():
        sock.sendall(msg)
        h.update(msg)
        n += len(msg)
        m += 1
    if shut:
        sock.shutdown(socket.SHUT_WR)
    return n, h.hexdigest(), m


def recv_all(sock, bufsize=1 << 20):
    """Read to EOF with recv_into; returns (bytes, sha256 hex)."""
    h = hashlib.sha256()
    buf = bytearray(bufsize)
    mv = memoryview(buf)
    n = 0
    while True:
        k = sock.recv_into(buf)
        if k == 0:
            break
        h.update(mv[:k])
        n += k
    return n, h.hexdigest()


def recv_all_blocking(sock, bufsize=1 << 20):
    """Like recv_all, for a blocking socket (SO_RCVTIMEO as the guard): an EAGAIN from a
    blocking recv() is not an end of stream; it is counted and reading goes on.
    Returns (bytes, sha256 hex, [seconds each EAGAIN'd recv() had waited])."""
    h = hashlib.sha256()
    buf = bytearray(bufsize)
    mv = memoryview(buf)
    n = 0
    eagain = []
    while True:
        t0 = time.monotonic()
        try:
            k = sock.recv_into(buf)
        except BlockingIOError:
            eagain.append(time.monotonic() - t0)
            if len(eagain) > 10000:
                raise
            continue
        if k == 0:
            break
        h.update(mv[:k])
        n += k
    return n, h.hexdigest(), eagain


def sha(data):
    return hashlib.sha256(data).hexdigest()


def is_reset(e):
    return isinstance(e, OSError) and e.errno in (errno.EPIPE, errno.ECONNRESET)


# ------------------------------------------------------------------ processes

def run(cmd, timeout=60, check=True, **kw):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise AssertionError("%s -> rc %d\nstdout: %s\nstderr: %s" % (
            " ".join(cmd), r.returncode, r.stdout.decode(errors="replace")[-3000:],
            r.stderr.decode(errors="replace")[-3000:]))
    return r


def stop(proc, timeout=10):
    """Terminate a Popen, then kill it; always reaps."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


def cgroup2_root():
    return bpf.cgroup2_root()


def cgroup_prog_ids(path):
    """Ids of the programs attached to cgroup `path` (bpftool cgroup show)."""
    import json
    r = run(["bpftool", "-j", "cgroup", "show", path], timeout=20)
    out = r.stdout.decode().strip() or "[]"
    return dict((e["id"], e.get("name", "")) for e in json.loads(out))


def prog_exists(prog_id):
    r = subprocess.run(["bpftool", "prog", "show", "id", str(prog_id)], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=20)
    return r.returncode == 0


def kernel_log_tail(lines=40):
    try:
        r = subprocess.run(["dmesg"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=10)
        return "\n".join(r.stdout.decode(errors="replace").splitlines()[-lines:])
    except Exception:  # noqa: BLE001 - diagnostics only
        return ""
