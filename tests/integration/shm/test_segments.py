"""Capture mode "segments" (the path's default): a connection joins the sockhash from tc on
lo once each direction carried capture_segments (8) data segments of at most
capture_max_segment (32 KiB) bytes; one with a larger segment stays plain TCP for good.

Real kernel, real tc filter on this namespace's lo (removed by `absent`, checked here).
Counters are the program's; the sockhash's size is read from the kernel map."""

import hashlib
import os
import random
import socket
import threading
import time

import pytest

from shmlib import Stream, Worker, bpf, delta, listener, pair, policy, recv_all, send_stream, shm, snap, wait_sockets

MiB = 1 << 20
SEGS = shm.CAPTURE_SEGMENTS


@pytest.fixture
def seg_path(make_path):
    """The path in capture mode "segments"; after the test, its tc filter must be gone."""
    p = make_path(policy(capture="segments"))
    yield p
    p.absent()
    assert bpf.tc_filter_prog_ids(shm.TC_PROGRAM) == [], "the tc filter on lo outlived absent"


def exchange(c, s, size):
    """One request of `size` bytes and an equal reply, each read in full."""
    msg = os.urandom(size)
    c.sendall(msg)
    assert _read(s, size) == msg
    s.sendall(msg[::-1])
    assert _read(c, size) == msg[::-1]


def _read(sock, n):
    buf = bytearray()
    while len(buf) < n:
        d = sock.recv(n - len(buf))
        assert d, "EOF after %d of %d bytes" % (len(buf), n)
        buf += d
    return bytes(buf)


def test_joins_after_its_first_segments(seg_path, closer):
    p = seg_path
    lis = closer(listener())
    before = snap(p)
    c, s = closer(*pair(lis))
    for _ in range(SEGS - 1):
        exchange(c, s, 100)
    d = delta(snap(p), before)
    assert d["captured"] == 0 and p.counters()["sockets"] == before["sockets"], d
    for _ in range(SEGS + 30):
        exchange(c, s, random.randint(1, 32768))
    d = delta(snap(p), before)
    # Both sockets joined; from then on every message but the first of each direction
    # (sent while its peer had not joined yet or TCP still held unread bytes) went
    # socket-to-socket.
    assert d["captured"] == 2 and d["large_conns"] == 0 and d["capture_errors"] == 0, d
    assert d["shm_conns"] + d["tcp_conns"] == 2 and d["shm_conns"] + d["resumes"] >= 2, d
    assert d["shm_msgs"] >= 2 * 30, d
    assert p.counters()["sockets"] == before["sockets"] + 2
    assert p.counters()["watched"] == before["watched"] + 2
    c.close()
    s.close()
    assert wait_sockets(p, before["sockets"]) == before["sockets"]
    # The program forgets a socket at close (its STATE_CB): nothing is left to leak.
    assert p.counters()["watched"] == before["watched"]


def test_large_segment_keeps_it_plain_tcp(seg_path, closer):
    p = seg_path
    lis = closer(listener())
    before = snap(p)
    c, s = closer(*pair(lis))
    exchange(c, s, 100)
    exchange(c, s, 64 * 1024)          # one segment above 32 KiB (lo's MTU is 64 KiB)
    for _ in range(3 * SEGS):
        exchange(c, s, 100)
    # A one-way bulk connection: never captured either.
    c2, s2 = closer(*pair(lis))
    up = Stream(seed=5, total=32 * MiB)
    w = [Worker(send_stream, c2, up), Worker(recv_all, s2)]
    (n, h, _), (rn, rh) = [x.join(90) for x in w]
    assert (rn, rh) == (n, h) == (32 * MiB, h)
    d = delta(snap(p), before)
    assert d["large_conns"] == 2 and d["captured"] == 0, d
    # Never in the sockhash, so the path counted none of their bytes.
    assert d["shm_bytes"] == d["tcp_bytes"] == 0, d
    assert p.counters()["sockets"] == before["sockets"]
    for x in (c, s, c2, s2):
        x.close()
    deadline = time.monotonic() + 10
    while p.counters()["watched"] != before["watched"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert p.counters()["watched"] == before["watched"]


def test_ipv6(seg_path, closer):
    p = seg_path
    lis = closer(listener(host="::1", family=socket.AF_INET6))
    before = snap(p)
    c, s = closer(*pair(lis))
    for _ in range(SEGS + 30):
        exchange(c, s, 1000)
    d = delta(snap(p), before)
    assert d["captured"] == 2 and d["shm_msgs"] >= 2 * 20, d


def test_joins_with_unread_tcp_bytes_in_order(seg_path, closer):
    """The client joins with the reply of the 8th exchange; then it pipelines messages at a
    server that reads late, so its socket and the server's join while TCP holds unread bytes
    of both directions.  The ordering rule keeps every byte in order; the directions come
    onto the path once TCP has drained."""
    p = seg_path
    lis = closer(listener())
    before = snap(p)
    c, s = closer(*pair(lis))
    for _ in range(SEGS):
        exchange(c, s, 200)
    rnd = random.Random(11)
    up_h, down_h = hashlib.sha256(), hashlib.sha256()
    got_up, got_down = hashlib.sha256(), hashlib.sha256()
    sent = 0
    for burst in range(20):
        msgs = [os.urandom(rnd.randint(1, 4000)) for _ in range(rnd.randint(1, 12))]
        for m in msgs:
            c.sendall(m)
            up_h.update(m)
        n = sum(len(m) for m in msgs)
        time.sleep(0.005 * (burst % 3))  # the server reads late
        data = _read(s, n)
        got_up.update(data)
        s.sendall(data[::-1])
        down_h.update(data[::-1])
        got_down.update(_read(c, n))
        sent += 2 * n
    assert got_up.digest() == up_h.digest() and got_down.digest() == down_h.digest()
    d = delta(snap(p), before)
    assert d["captured"] == 2 and d["capture_errors"] == 0, d
    assert d["shm_bytes"] > sent // 2, d


def test_full_duplex_reader_blocked_while_joining(seg_path, closer):
    """Each side's reader is a thread blocked in recv() when its socket joins (the client's
    with the 8th reply, the server's with the 9th request): the segment that made it join
    wakes it, and its later calls read the path's queue too.  Then the writer streams while
    both readers run: nothing stalls, every byte arrives in order."""
    p = seg_path
    lis = closer(listener())
    before = snap(p)
    c, s = closer(*pair(lis))
    spaced, total = 2 * SEGS, 4 * MiB
    echoed = threading.Semaphore(0)
    out_h, in_h = hashlib.sha256(), hashlib.sha256()

    def echo():
        n = 0
        while n < total:
            d = s.recv(65536)
            if not d:
                break
            s.sendall(d)
            n += len(d)
        return n

    def writer():
        rnd = random.Random(3)
        n = 0
        for i in range(spaced):         # one 100-byte message per round trip
            m = os.urandom(100)
            c.sendall(m)
            out_h.update(m)
            n += len(m)
            assert echoed.acquire(timeout=30), "no echo of message %d" % i
        while n < total:
            m = os.urandom(min(rnd.randint(1, 3000), total - n))
            c.sendall(m)
            out_h.update(m)
            n += len(m)
        return n

    def reader():
        n = 0
        while n < total:
            d = c.recv(65536)
            assert d, "EOF after %d bytes" % n
            in_h.update(d)
            n += len(d)
            if n <= 100 * spaced and n % 100 == 0:
                echoed.release()
        return n

    ws = [Worker(echo), Worker(reader), Worker(writer)]
    assert [w.join(120) for w in ws] == [total, total, total]
    assert in_h.digest() == out_h.digest()
    d = delta(snap(p), before)
    assert d["captured"] == 2 and d["capture_errors"] == 0 and d["large_conns"] == 0, d
    assert d["shm_bytes"] > total // 2, d


def test_waitall_reader_across_the_join(seg_path, closer):
    """A client blocked in recv(MSG_WAITALL) when its socket joins: the server joined first
    (it sent a banner, so its count filled first); its reply's first half goes over TCP and
    makes the client join, the second half goes onto the path.  Measured on 6.18: the waiting
    call returns the first half (a short read, as MSG_WAITALL on the path does anyway) and the
    next call the rest; nothing stalls until the timeout and every byte arrives in order."""
    p = seg_path
    lis = closer(listener())
    c, s = closer(*pair(lis))
    s.sendall(b"banner")
    assert _read(c, 6) == b"banner"
    for _ in range(SEGS - 1):
        exchange(c, s, 100)
    c.sendall(b"q" * 100)
    assert _read(s, 100) == b"q" * 100          # the server's 8th: it joins
    got, took = [], []

    def client():
        t0 = time.monotonic()
        while sum(len(x) for x in got) < 200:
            got.append(c.recv(200 - sum(len(x) for x in got), socket.MSG_WAITALL))
            took.append(time.monotonic() - t0)
        return len(got)

    before = snap(p)
    w = Worker(client)
    time.sleep(0.1)
    s.sendall(b"A" * 100)
    time.sleep(0.5)                            # TCP drains, so the rest takes the path
    s.sendall(b"B" * 100)
    calls = w.join(30)
    assert b"".join(got) == b"A" * 100 + b"B" * 100
    assert calls <= 2 and took[-1] < 5, (calls, took)
    d = delta(snap(p), before)
    assert d["captured"] == 1 and d["tcp_bytes"] == 100 and d["shm_bytes"] == 100, d
