"""Policy change and removal while transfers run: running transfers complete intact and
keep their path; new connections follow the new policy (or, after absent, plain TCP)."""

import hashlib
import os
import socket
import threading
import time

from shmlib import (Worker, carried, cgroup2_root, cgroup_prog_ids, delta, listener, pair, policy, prog_exists,
                    recv_all, sha, snap, wait_sockets)
from shmlib import bpf, shm

MiB = 1 << 20
HALF = 24 * MiB


def _half_and_half(sock, seed, half_done, go):
    """Send HALF bytes, report, wait for `go`, send another HALF, shut down writing."""
    blk = hashlib.sha256(str(seed).encode()).digest() * (MiB // 32)
    h = hashlib.sha256()
    sent = 0
    for phase in (0, 1):
        if phase:
            half_done.release()
            assert go.wait(60), "the test never said go"
        for i in range(HALF // MiB):
            chunk = bytes([i & 255, seed & 255]) + blk[2:]
            sock.sendall(chunk)
            h.update(chunk)
            sent += len(chunk)
    sock.shutdown(socket.SHUT_WR)
    return sent, h.hexdigest()


def _start_transfers(lsock, closer, k):
    """k connections, both directions each: returns (workers, half_done, go)."""
    half_done = threading.Semaphore(0)
    go = threading.Event()
    workers = []
    socks = []
    for i in range(k):
        c, s = closer(*pair(lsock))
        socks += [c, s]
        workers.append((Worker(_half_and_half, c, 2 * i, half_done, go), Worker(recv_all, s)))
        workers.append((Worker(_half_and_half, s, 2 * i + 1, half_done, go), Worker(recv_all, c)))
    for _ in workers:
        assert half_done.acquire(timeout=60), "a sender did not reach half way"
    return (workers, socks), go


def _finish(transfers):
    workers, socks = transfers
    total = 0
    for tx, rx in workers:
        n, h = tx.join(60)
        assert rx.join(60) == (n, h), "a running transfer arrived damaged"
        assert n == 2 * HALF
        total += n
    for x in socks:
        x.close()
    return total


def _echo_once(lsock, closer, data, family=socket.AF_INET):
    c, s = closer(*pair(lsock))
    w = Worker(recv_all, s)
    c.sendall(data)
    c.shutdown(socket.SHUT_WR)
    assert w.join(30) == (len(data), sha(data))
    s.sendall(data)
    s.close()
    got = b"".join(iter(lambda: c.recv(MiB), b""))
    assert got == data
    c.close()


def test_policy_change_mid_flight(make_path, closer, src):
    p = make_path(policy("20000-20999"))
    old_l = closer(listener(20000, 20999))
    new_l = closer(listener(21000, 21999))
    before = snap(p)
    workers, go = _start_transfers(old_l, closer, 3)
    mid = snap(p)
    assert mid["sockets"] - before["sockets"] == 6
    # The new policy covers none of the running connections' ports.
    res = p.present(policy("21000-21999"), src)
    assert res["changed"]
    assert p.state()["policy"]["policies"] == [{"name": "t", "ports": "21000-21999"}]
    go.set()
    total = _finish(workers)
    d = delta(snap(p), before)
    assert d["captured"] == 6 and d["shm_conns"] == 6, d
    # running transfers kept the path after the change (TCP only where a reader fell behind)
    carried(d, total)
    assert wait_sockets(p, before["sockets"]) == before["sockets"]

    # New connections follow the new policy.
    data = os.urandom(3 * MiB + 1)
    b1 = snap(p)
    _echo_once(old_l, closer, data)
    d1 = delta(snap(p), b1)
    assert d1 == dict((k, 0) for k in d1), "old-policy port still captured: %s" % d1
    b2 = snap(p)
    _echo_once(new_l, closer, data)
    d2 = delta(snap(p), b2)
    assert d2["captured"] == 2 and d2["shm_conns"] == 2, d2
    carried(d2, 2 * len(data))


def test_absent_mid_transfer(make_path, lsock, closer):
    p = make_path()
    st = p.engine.status(p.name)
    ids = dict((x["function"], x["id"]) for x in st["programs"])
    assert set(ids) == {"shm_sockops", "shm_msg"} and all(ids.values()), st
    root = cgroup2_root()
    assert ids["shm_sockops"] in cgroup_prog_ids(root)
    # Keep the maps open past absent: the running connections' counters stay readable.
    maps = shm.Maps(st["pin_dir"])
    try:
        workers, go = _start_transfers(lsock, closer, 2)
        assert maps.connections() == 4
        res = p.absent()
        assert res["changed"] and res["draining"] == 4, res
        # Detached and unpinned.
        assert p.counters() is None and p.state() is None
        assert not os.path.exists(st["pin_dir"])
        # `bpftool cgroup show <root>`: our shm_sockops is gone (other people's instances
        # may have their own shm_sockops attached there: compared by program id).
        attached = cgroup_prog_ids(root)
        assert not set(ids.values()) & set(attached), attached
        go.set()
        total = _finish(workers)
        s = dict((k, sum(x[k] for x in maps.stats())) for k in shm.STATS_FIELDS)
        assert s["shm_conns"] == 4, s
        carried(s, total)

        # After absent: a new connection on a policy port is plain TCP (nothing captured).
        data = os.urandom(2 * MiB + 3)
        _echo_once(lsock, closer, data)
        s2 = dict((k, sum(x[k] for x in maps.stats())) for k in shm.STATS_FIELDS)
        assert s2 == s, "connection made after absent touched the path: %s -> %s" % (s, s2)
        deadline = time.monotonic() + 10
        while maps.connections() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert maps.connections() == 0
    finally:
        maps.close()
    # With the last socket and map reference gone, the programs are freed.
    deadline = time.monotonic() + 15
    while any(prog_exists(i) for i in ids.values()) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = [f for f, i in ids.items() if prog_exists(i)]
    assert not left, "programs still loaded after absent and close: %s" % left
    assert not any(e.startswith(p.name) for e in os.listdir(bpf.PIN_ROOT)) if os.path.isdir(bpf.PIN_ROOT) else True
