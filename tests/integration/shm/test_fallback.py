"""Connections the path must leave alone, or keep on TCP: outside the policy's ports,
addresses outside local_addresses, and a connection where only one end is captured."""

import os
import socket
import subprocess
import sys
import time

import pytest

from shmlib import (OFF_HI, OFF_LO, Worker, carried, cgroup2_root, delta, listener, pair, policy, recv_all, sha, snap,
                    stop, wait_sockets)

MiB = 1 << 20


def _roundtrip(c, s, up, down):
    """up: c -> s, down: s -> c, concurrently; checks both byte-exact."""
    def send(sock, data):
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
    w = [Worker(send, c, up), Worker(recv_all, s), Worker(send, s, down), Worker(recv_all, c)]
    w[0].join(60)
    w[2].join(60)
    assert w[1].join(60) == (len(up), sha(up))
    assert w[3].join(60) == (len(down), sha(down))


def _zero(d):
    return all(v == 0 for v in d.values())


def test_outside_policy_untouched(path, closer):
    before = snap(path)
    lis = closer(listener(OFF_LO, OFF_HI))
    c, s = closer(*pair(lis))
    assert snap(path)["sockets"] == before["sockets"]
    _roundtrip(c, s, os.urandom(4 * MiB + 5), os.urandom(3 * MiB + 9))
    d = delta(snap(path), before)
    assert _zero(d), "a connection outside the ports was touched: %s" % d
    assert snap(path)["sockets"] == before["sockets"]


def test_addresses_outside_local_addresses(make_path, closer):
    """Policy local_addresses: 127.0.0.2/32 only.  127.0.0.1 <-> 127.0.0.1 and
    127.0.0.1 -> 127.0.0.2 are not captured (both ends must be listed); 127.0.0.2 <->
    127.0.0.2 is (the positive control)."""
    p = make_path(policy(local=["127.0.0.2/32"]))
    up, down = os.urandom(MiB + 1), os.urandom(MiB + 2)

    before = snap(p)
    l1 = closer(listener(host="127.0.0.1"))
    c, s = closer(*pair(l1))
    _roundtrip(c, s, up, down)
    d = delta(snap(p), before)
    assert _zero(d), "127.0.0.1 <-> 127.0.0.1 captured with local_addresses 127.0.0.2/32: %s" % d

    l2 = closer(listener(host="127.0.0.2"))
    before = snap(p)
    c = closer(socket.create_connection(l2.getsockname(), timeout=10, source_address=("127.0.0.1", 0)))
    s, _ = l2.accept()
    closer(s)
    _roundtrip(c, s, up, down)
    d = delta(snap(p), before)
    assert _zero(d), "127.0.0.1 -> 127.0.0.2 captured with local_addresses 127.0.0.2/32: %s" % d

    before = snap(p)
    c = closer(socket.create_connection(l2.getsockname(), timeout=10, source_address=("127.0.0.2", 0)))
    s, _ = l2.accept()
    closer(s)
    assert wait_sockets(p, before["sockets"] + 2) == before["sockets"] + 2
    _roundtrip(c, s, up, down)
    d = delta(snap(p), before)
    assert d["captured"] == 2 and d["shm_conns"] == 2, d
    carried(d, len(up) + len(down))


SERVER = r"""
import hashlib, os, socket, sys
cg, port = sys.argv[1], int(sys.argv[2])
with open(os.path.join(cg, "cgroup.procs"), "w") as f:
    f.write(str(os.getpid()))
l = socket.socket()
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("127.0.0.1", port))
l.listen(4)
l.settimeout(30)
print("ready", flush=True)
c, _ = l.accept()
c.settimeout(30)
data = bytearray()
while True:
    d = c.recv(1 << 20)
    if not d:
        break
    data += d
c.sendall(bytes(data[::-1]))
c.shutdown(socket.SHUT_WR)
c.recv(1)
c.close()
print(hashlib.sha256(data).hexdigest(), flush=True)
"""


@pytest.fixture
def child_cgroup(request):
    root = cgroup2_root()
    path = os.path.join(root, "shmtest-%d" % os.getpid())
    os.mkdir(path)

    def fin():
        deadline = time.monotonic() + 10
        while True:
            try:
                os.rmdir(path)
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
    request.addfinalizer(fin)
    return path


def test_only_one_end_captured(make_path, child_cgroup, closer):
    """The policy's cgroup holds only the server: its accepted socket is captured, the
    client's is not.  The server's direction finds no peer and stays on TCP for life;
    nothing goes the shared way; both directions are byte-exact."""
    rel = "/" + os.path.basename(child_cgroup)
    p = make_path(policy(cgroup=rel))
    port_l = listener()
    port = port_l.getsockname()[1]
    port_l.close()
    proc = subprocess.Popen([sys.executable, "-c", SERVER, child_cgroup, str(port)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        line = proc.stdout.readline()
        assert line.strip() == b"ready", (line, proc.stderr.read() if proc.poll() is not None else b"")
        before = snap(p)
        c = closer(socket.create_connection(("127.0.0.1", port), timeout=10))
        # The server end (accepted in the policy's cgroup) is in the sockhash, ours is not.
        assert wait_sockets(p, before["sockets"] + 1) == before["sockets"] + 1
        data = os.urandom(2 * MiB + 3)
        c.sendall(data)
        c.shutdown(socket.SHUT_WR)
        got = bytearray()
        while True:
            d = c.recv(MiB)
            if not d:
                break
            got += d
        c.close()
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert out.decode().strip() == sha(data)
        assert bytes(got) == data[::-1]
        d = delta(snap(p), before)
        assert d["captured"] == 1, d
        assert d["shm_conns"] == 0 and d["shm_bytes"] == 0, "the path was used without a peer: %s" % d
        assert d["tcp_conns"] == 1 and d["tcp_bytes"] >= len(data), d
    finally:
        stop(proc)
    assert wait_sockets(p, 0) == 0
