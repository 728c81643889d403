"""Senders that do not call send(): os.sendfile (file -> socket) and os.splice
(pipe -> socket), alone and interleaved with sendall(), byte-exact on the path."""

import hashlib
import os
import random
import socket
import struct

import pytest

from shmlib import Worker, carried, delta, pair, recv_all, recv_all_blocking, snap, wait_sockets

MiB = 1 << 20


def _blocking(sock, seconds=20):
    # os.sendfile/os.splice want a blocking descriptor; SO_SNDTIMEO guards against a hang.
    sock.settimeout(None)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", seconds, 0))


def _sendfile(sock, fd, offset, count):
    done = 0
    while done < count:
        n = os.sendfile(sock.fileno(), fd, offset + done, count - done)
        assert n > 0, "sendfile made no progress"
        done += n


def _splice(sock, data):
    """data -> pipe -> socket with os.splice, in pipe-sized pieces."""
    r, w = os.pipe()
    try:
        off = 0
        while off < len(data):
            piece = data[off:off + 65536]
            k = os.write(w, piece)
            left = k
            while left:
                n = os.splice(r, sock.fileno(), left)
                assert n > 0, "splice made no progress"
                left -= n
            off += k
    finally:
        os.close(r)
        os.close(w)


@pytest.fixture
def blob(tmpdir_shm):
    data = os.urandom(16 * MiB + 1234)
    fn = os.path.join(tmpdir_shm, "blob.bin")
    with open(fn, "wb") as f:
        f.write(data)
    fd = os.open(fn, os.O_RDONLY)
    yield fd, data
    os.close(fd)


def test_sendfile(path, lsock, closer, blob):
    fd, data = blob
    before = snap(path)
    c, s = closer(*pair(lsock))
    rx = Worker(recv_all, s)
    _blocking(c)
    _sendfile(c, fd, 0, len(data))
    c.shutdown(socket.SHUT_WR)
    n, h = rx.join(60)
    assert (n, h) == (len(data), hashlib.sha256(data).hexdigest())
    d = delta(snap(path), before)
    assert d["shm_conns"] == 1 and d["tcp_conns"] == 0, d
    carried(d, len(data))
    c.close()
    s.close()
    assert wait_sockets(path, 0) == 0


def test_splice(path, lsock, closer):
    data = os.urandom(8 * MiB + 77)
    before = snap(path)
    c, s = closer(*pair(lsock))
    rx = Worker(recv_all, s)
    _blocking(c)
    _splice(c, data)
    c.shutdown(socket.SHUT_WR)
    n, h = rx.join(60)
    assert (n, h) == (len(data), hashlib.sha256(data).hexdigest())
    d = delta(snap(path), before)
    assert d["shm_conns"] == 1 and d["tcp_conns"] == 0, d
    carried(d, len(data))


def test_sendfile_splice_send_interleaved_both_directions(path, lsock, closer, blob):
    """send, sendfile, splice one after another on one connection (both directions at
    once): every byte in order."""
    fd, data = blob
    before = snap(path)
    c, s = closer(*pair(lsock))

    # Both sockets blocking (SO_RCVTIMEO/SO_SNDTIMEO guards) before the threads start: a
    # socket's mode must not change while another thread reads from it.
    for x in (c, s):
        _blocking(x)
        x.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 20, 0))

    def sender(sock, seed):
        h = hashlib.sha256()
        rnd = random.Random(seed)
        total = 0
        for i in range(24):
            kind = ("send", "sendfile", "splice")[i % 3]
            off = rnd.randrange(0, len(data) - 1)
            cnt = min(len(data) - off, rnd.choice([1, 7, 4096, 65537, 300000, MiB + 5]))
            chunk = data[off:off + cnt]
            if kind == "send":
                sock.sendall(chunk)
            elif kind == "sendfile":
                _sendfile(sock, fd, off, cnt)
            else:
                _splice(sock, chunk)
            h.update(chunk)
            total += cnt
        sock.shutdown(socket.SHUT_WR)
        return total, h.hexdigest()

    w = [Worker(sender, c, 1), Worker(recv_all_blocking, s), Worker(sender, s, 2), Worker(recv_all_blocking, c)]
    (n1, h1), (r1, rh1, e1), (n2, h2), (r2, rh2, e2) = [x.join(60) for x in w]
    assert (r1, rh1) == (n1, h1), "client -> server stream differs"
    assert (r2, rh2) == (n2, h2), "server -> client stream differs"
    d = delta(snap(path), before)
    assert d["shm_conns"] == 2 and d["tcp_conns"] == 0, d
    carried(d, n1 + n2)
    # The streams are intact.  The reader retries the spurious EAGAIN a blocking recv() can
    # return on the path while the same socket sends (a kernel limitation, asserted on its
    # own in test_integrity.py::test_blocking_recv_full_duplex_no_eagain).
