"""Every eligible connection is captured, also in connection storms.

1,000 connections in bursts of 100, each client sending its request as soon as connect()
returns.  A client's first payload can leave before the server's end exists in the
sockhash (the server socket is created when the handshake's last ACK is processed, which
the kernel may defer while the listener is busy); that payload goes over TCP, and the
direction comes onto the path as soon as TCP has drained (docs/shm_path.md, "Ordering").
The counters must account for every socket and every direction, and every direction's
second message must take the path.
"""

import selectors
import socket
import threading
import time

from shmlib import Worker, accept_all, delta, listener, snap, wait_sockets

BURSTS = 10
PER_BURST = 100
MSG = 100


def _serve(lsock, stop, errors):
    """Answers each MSG-byte request with MSG bytes (the request reversed), twice per
    connection, until EOF."""
    sel = selectors.DefaultSelector()
    lsock.setblocking(False)
    sel.register(lsock, selectors.EVENT_READ, None)
    while not stop.is_set():
        for key, _ in sel.select(0.1):
            if key.data is None:
                for s in accept_all(lsock):
                    sel.register(s, selectors.EVENT_READ, bytearray())
                continue
            s, buf = key.fileobj, key.data
            try:
                d = s.recv(4096)
            except BlockingIOError:
                continue
            except OSError as e:
                errors.append("server recv: %s" % e)
                d = b""
            if not d:
                sel.unregister(s)
                s.close()
                continue
            buf += d
            while len(buf) >= MSG:
                req = bytes(buf[:MSG])
                del buf[:MSG]
                s.setblocking(True)
                s.sendall(req[::-1])
                s.setblocking(False)
    for key in list(sel.get_map().values()):
        if key.data is not None:
            key.fileobj.close()
    sel.close()


def _request(c, tag):
    req = (b"%08d" % tag) * (MSG // 8) + b"x" * (MSG % 8)
    c.sendall(req)
    got = b""
    while len(got) < MSG:
        d = c.recv(MSG - len(got))
        assert d, "EOF before the answer"
        got += d
    assert got == req[::-1], "wrong answer"


def test_a_thousand_connections_in_bursts_all_take_the_path(path, lsock, closer):
    lsock.listen(1024)
    addr = lsock.getsockname()
    stop, errors = threading.Event(), []
    server = Worker(_serve, lsock, stop, errors)
    before = snap(path)
    try:
        for b in range(BURSTS):
            conns = []
            for i in range(PER_BURST):
                c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                c.settimeout(30)
                c.connect(addr)
                closer(c)
                _request(c, b * PER_BURST + i)  # at once: the storm
                conns.append(c)
            # TCP has drained once every request was answered and acknowledged (a delayed
            # ACK leaves within 200 ms); each second message must then take the path.
            time.sleep(0.3)
            for i, c in enumerate(conns):
                _request(c, b * PER_BURST + i)
            for c in conns:
                c.close()
    finally:
        stop.set()
        server.join(30)
    assert not errors, errors
    d = delta(snap(path), before)
    n = BURSTS * PER_BURST
    print("%d connections: %s" % (n, d))
    assert d["captured"] == 2 * n and d["capture_errors"] == 0, d
    # Every direction decided once: on the path from its first message, or over TCP first.
    assert d["shm_conns"] + d["tcp_conns"] == 2 * n, d
    # Those that began over TCP came onto the path, and only first messages went over TCP.
    assert d["resumes"] == d["tcp_conns"] and d["overflows"] == 0, d
    assert d["tcp_msgs"] == d["tcp_conns"] and d["shm_msgs"] == 4 * n - d["tcp_msgs"], d
    assert wait_sockets(path, 0) == 0
