"""Bulk transfers on the same-host path: 1 GiB hashed on both sides.  A sender whose peer
does not read: test_bound.py."""

import hashlib
import os
import random
import socket
import struct
import time

from shmlib import Worker, carried, delta, pair, recv_all, snap, wait_sockets

GiB = 1 << 30
MiB = 1 << 20


def _send_gib(sock, total, seed):
    """Random-sized chunks (4 KiB .. 1 MiB) cut from a pool of random blocks, each chunk
    stamped with its sequence number; hashed as sent, never held whole."""
    rng = random.Random(seed)
    pool = [os.urandom(MiB) for _ in range(4)]
    buf = bytearray(MiB)
    h = hashlib.sha256()
    sent = i = 0
    while sent < total:
        n = min(total - sent, rng.randint(4096, MiB))
        src = pool[i & 3]
        off = rng.randrange(0, MiB - n + 1)
        buf[:n] = src[off:off + n]
        buf[:8] = struct.pack("<Q", i)
        mv = memoryview(buf)[:n]
        h.update(mv)
        sock.sendall(mv)
        sent += n
        i += 1
    sock.shutdown(socket.SHUT_WR)
    return sent, h.hexdigest(), i


def test_one_gib(path, lsock, closer):
    before = snap(path)
    c, s = closer(*pair(lsock))
    t0 = time.monotonic()
    rx = Worker(recv_all, s)
    tx = Worker(_send_gib, c, GiB, 42)
    sent, h_tx, msgs = tx.join(150)
    got, h_rx = rx.join(60)
    took = time.monotonic() - t0
    assert sent == GiB and got == GiB, (sent, got)
    assert h_rx == h_tx, "1 GiB arrived with other content"
    d = delta(snap(path), before)
    assert d["shm_conns"] == 1 and d["tcp_conns"] == 0, d
    carried(d, GiB)
    assert d["shm_msgs"] + d["tcp_msgs"] >= msgs, d
    print("1 GiB in %.1f s (%.0f MiB/s) in %d sends" % (took, GiB / MiB / took, msgs))
    c.close()
    s.close()
    assert wait_sockets(path, 0) == 0
