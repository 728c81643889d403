"""Byte-exact integrity on the same-host path: random message sizes both ways, partial
reads (odd recv sizes, MSG_PEEK, recv_into with short buffers), MSG_WAITALL."""

import os
import random
import socket

import pytest
import struct
import time

from shmlib import (KERNEL_DIFF, OFF_HI, OFF_LO, Stream, Worker, carried, delta, listener, pair, recv_all,
                    recv_all_blocking, send_stream, sha, snap, wait_sockets)

MiB = 1 << 20


def _send_mixed(sock, stream):
    """Like send_stream, but every other message goes out through sendmsg() with the
    payload split over several iovecs."""
    import hashlib
    h = hashlib.sha256()
    n = 0
    rng = random.Random(7)
    for i, msg in enumerate(stream.messages()):
        if i % 2 and len(msg) > 2:
            a, b = sorted(rng.sample(range(1, len(msg)), 2))
            sent = sock.sendmsg([msg[:a], msg[a:b], msg[b:]])
            if sent < len(msg):
                sock.sendall(msg[sent:])
        else:
            sock.sendall(msg)
        h.update(msg)
        n += len(msg)
    sock.shutdown(socket.SHUT_WR)
    return n, h.hexdigest()


def test_random_sizes_both_directions(path, lsock, closer):
    before = snap(path)
    c, s = closer(*pair(lsock))
    assert wait_sockets(path, 2) == 2, "both ends of the connection are in the sockhash"
    up = Stream(seed=11, total=40 * MiB, min_size=1, max_size=MiB)
    down = Stream(seed=12, total=32 * MiB, min_size=1, max_size=MiB)
    w = [Worker(_send_mixed, c, up), Worker(recv_all, s), Worker(_send_mixed, s, down), Worker(recv_all, c)]
    (n_up, h_up), (r_up, rh_up), (n_dn, h_dn), (r_dn, rh_dn) = [x.join(120) for x in w]
    assert (r_up, rh_up) == (n_up, h_up) == (40 * MiB, h_up)
    assert (r_dn, rh_dn) == (n_dn, h_dn) == (32 * MiB, h_dn)
    d = delta(snap(path), before)
    assert d["captured"] == 2 and d["capture_errors"] == 0
    assert d["shm_conns"] == 2 and d["tcp_conns"] == 0, d
    carried(d, n_up + n_dn)
    c.close()
    s.close()
    assert wait_sockets(path, 0) == 0, "sockhash empty after close"


def test_random_sizes_many_connections_sequential(path, lsock, closer):
    """Many short connections with random sizes, each message echoed back whole."""
    before = snap(path)
    rng = random.Random(5)
    total = 0
    for i in range(40):
        c, s = closer(*pair(lsock))
        data = os.urandom(int(2 ** rng.uniform(0, 20)))
        w = Worker(recv_all, s)
        c.sendall(data)
        c.shutdown(socket.SHUT_WR)
        n, h = w.join(30)
        assert (n, h) == (len(data), sha(data))
        s.sendall(data[::-1])
        s.close()
        got = b"".join(iter(lambda: c.recv(65536), b""))
        assert got == data[::-1]
        c.close()
        total += 2 * len(data)
    d = delta(snap(path), before)
    assert d["captured"] == 80 and d["shm_conns"] == 80 and d["tcp_conns"] == 0, d
    carried(d, total)
    assert wait_sockets(path, 0) == 0


def test_partial_reads_peek_recv_into(path, lsock, closer):
    before = snap(path)
    c, s = closer(*pair(lsock))
    data = os.urandom(3 * MiB + 17)
    rng = random.Random(3)

    def sender():
        off = 0
        while off < len(data):
            k = min(len(data) - off, rng.choice([1, 2, 5, 100, 1000, 4096, 65536, 300000]))
            c.sendall(data[off:off + k])
            off += k
        c.shutdown(socket.SHUT_WR)
        return off
    w = Worker(sender)

    sizes = [1, 3, 7, 17, 251, 509, 4093, 8191, 65521]
    got = bytearray()
    small = bytearray(13)
    peeks = recv_intos = 0
    i = 0
    while True:
        k = sizes[i % len(sizes)]
        op = i % 5
        i += 1
        if op == 1:
            # MSG_PEEK: the same bytes again on the next read, nothing consumed.
            pk = s.recv(k, socket.MSG_PEEK)
            if not pk:
                assert s.recv(k) == b""
                break
            pk2 = s.recv(len(pk), socket.MSG_PEEK)
            assert pk2[:len(pk)] == pk[:len(pk2)]
            real = s.recv(len(pk))
            assert real == pk, "recv after MSG_PEEK returned other bytes than the peek"
            got += real
            peeks += 1
        elif op == 3:
            # recv_into a short buffer, with nbytes below the buffer size.
            want = 1 + (k % 12)
            mv = memoryview(small)
            n = s.recv_into(mv, want)
            assert n <= want
            if n == 0:
                break
            got += small[:n]
            recv_intos += 1
        else:
            d = s.recv(k)
            assert len(d) <= k
            if not d:
                break
            got += d
    assert w.join(60) == len(data)
    assert len(got) == len(data) and sha(got) == sha(data)
    assert peeks > 10 and recv_intos > 10
    dd = delta(snap(path), before)
    assert dd["shm_conns"] == 1, dd
    carried(dd, len(data))
    assert snap(path)["sockets"] == 2


def _blocking(sock, seconds=20):
    """MSG_WAITALL needs a blocking descriptor (Python's socket timeouts make it
    non-blocking): block, with SO_RCVTIMEO/SO_SNDTIMEO as the guard against a hang."""
    sock.settimeout(None)
    tv = struct.pack("ll", seconds, 0)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)


def _waitall_scenario(c, s):
    """Returns [(case, bytes returned, bytes expected)] and checks the content."""
    out = []
    _blocking(c)
    _blocking(s)

    # 1. Many small messages, sent slowly: one MSG_WAITALL read gets all of them.
    piece = os.urandom(1000)
    pieces = [bytes([i]) + piece[1:] for i in range(64)]

    def slow():
        for p in pieces:
            c.sendall(p)
            time.sleep(0.003)
    w = Worker(slow)
    got = bytearray()
    first = s.recv(64000, socket.MSG_WAITALL)
    out.append(("64 x 1000 B sent 3 ms apart, recv(64000, MSG_WAITALL)", len(first), 64000))
    got += first
    while len(got) < 64000:
        got += s.recv(64000 - len(got), socket.MSG_WAITALL)
    w.join(30)
    assert got == b"".join(pieces)

    # 2. Large messages: reads spanning several of them.
    big = os.urandom(5 * MiB + 3)
    w = Worker(c.sendall, big)
    got = bytearray()
    for want in (1, 2 * MiB, MiB + 1, len(big) - 1 - 2 * MiB - (MiB + 1)):
        part = s.recv(want, socket.MSG_WAITALL)
        out.append(("5 MiB in one sendall, recv(%d, MSG_WAITALL)" % want, len(part), want))
        got += part
        while len(got) < sum(x[2] for x in out[1:]):
            got += s.recv(sum(x[2] for x in out[1:]) - len(got))
    w.join(30)
    assert got == big

    # 3. recv_into with MSG_WAITALL.
    buf = bytearray(300000)
    payload = os.urandom(300000)
    w = Worker(lambda: [c.sendall(payload[i:i + 7000]) for i in range(0, len(payload), 7000)])
    n = s.recv_into(buf, 0, socket.MSG_WAITALL)
    out.append(("300000 B in 7000 B sends, recv_into(300000, MSG_WAITALL)", n, len(payload)))
    while n < len(payload):
        n += s.recv_into(memoryview(buf)[n:], 0, socket.MSG_WAITALL)
    w.join(30)
    assert bytes(buf) == payload

    # 4. MSG_WAITALL at end of stream returns what there is, like TCP.
    c.sendall(b"tail-100" * 12 + b"!!!!")
    c.shutdown(socket.SHUT_WR)
    time.sleep(0.05)
    tail = s.recv(1000, socket.MSG_WAITALL)
    out.append(("100 B then FIN, recv(1000, MSG_WAITALL)", len(tail), 100))
    while len(tail) < 100:
        more = s.recv(1000, socket.MSG_WAITALL)
        if not more:
            break
        tail += more
    assert tail == b"tail-100" * 12 + b"!!!!"
    assert s.recv(10, socket.MSG_WAITALL) == b""
    return out, 64000 + len(big) + len(payload) + 100


def test_msg_waitall(path, lsock, closer):
    # The same reads over plain TCP first (a port outside the policy): the reference.
    off = closer(listener(OFF_LO, OFF_HI))
    tc, ts = closer(*pair(off))
    ref, _ = _waitall_scenario(tc, ts)
    assert all(got == want for _, got, want in ref), ref
    assert delta(snap(path), {k: 0 for k in snap(path)})["captured"] == 0

    before = snap(path)
    c, s = closer(*pair(lsock))
    res, sent = _waitall_scenario(c, s)
    d = delta(snap(path), before)
    assert d["shm_conns"] == 1, d
    carried(d, sent)
    short = ["%s: %d bytes (TCP: %d)" % (case, got, want) for case, got, want in res if got != want]
    if short:  # everything else held: the one known difference remains
        pytest.xfail(KERNEL_DIFF + "MSG_WAITALL returns short reads:\n" + "\n".join(short))


REPS = 30


def test_blocking_recv_full_duplex_no_eagain(path, lsock, closer):
    """A blocking recv() waits for data; it never fails with EAGAIN (only a receive
    timeout, SO_RCVTIMEO, may end the wait that way).  Both ends read and write at once
    from two threads each, on plain TCP (reference) and on the path."""
    res = {}
    off = closer(listener(OFF_LO, OFF_HI))
    for label, l in (("tcp", off), ("shm", lsock)):
        before = snap(path)
        waits = []
        sent = 0
        for rep in range(REPS):
            c, s = closer(*pair(l))
            for x in (c, s):
                _blocking(x, seconds=20)

            def sender(sock, seed):
                stream = Stream(seed=seed, total=6 * MiB, min_size=1, max_size=MiB)
                return send_stream(sock, stream)
            w = [Worker(sender, c, 2 * rep), Worker(recv_all_blocking, s), Worker(sender, s, 2 * rep + 1),
                 Worker(recv_all_blocking, c)]
            (n1, h1, _), (r1, rh1, e1), (n2, h2, _), (r2, rh2, e2) = [x.join(60) for x in w]
            assert (r1, rh1) == (n1, h1) and (r2, rh2) == (n2, h2), "%s: stream differs" % label
            waits += e1 + e2
            sent += n1 + n2
            c.close()
            s.close()
        res[label] = waits
        if label == "shm":
            d = delta(snap(path), before)
            assert d["shm_conns"] == 2 * REPS, d
            carried(d, sent)
    assert not res["tcp"], "reference (TCP): EAGAIN from a blocking recv(): %s" % res["tcp"]
    if res["shm"]:
        pytest.xfail(KERNEL_DIFF + "a blocking recv() failed with EAGAIN %d times in %d full-duplex connections, "
                     "after waiting only %s s (SO_RCVTIMEO is 20 s)"
                     % (len(res["shm"]), REPS, ["%.4f" % x for x in res["shm"][:8]]))
