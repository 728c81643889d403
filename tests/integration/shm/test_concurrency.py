"""1100 concurrent connections on the path in one process (epoll via selectors), each
echoing a unique payload; the sockhash is empty again once they close."""

import os
import random
import resource
import selectors
import socket
import struct
import threading
import time

from shmlib import accept_all, carried, delta, listener, snap, wait_sockets

N = 1100


def _server(lsock, stop, errors, stats):
    """Echo server: reads a length-prefixed payload, echoes it whole, closes at EOF."""
    sel = selectors.DefaultSelector()
    lsock.setblocking(False)
    sel.register(lsock, selectors.EVENT_READ, None)
    conns = {}
    try:
        while not stop.is_set():
            for key, ev in sel.select(0.2):
                if key.data is None:
                    for s in accept_all(lsock):
                        st = {"in": bytearray(), "out": b"", "need": None}
                        conns[s] = st
                        sel.register(s, selectors.EVENT_READ, st)
                        stats["accepted"] += 1
                    continue
                s, st = key.fileobj, key.data
                if ev & selectors.EVENT_READ:
                    try:
                        d = s.recv(262144)
                    except (BlockingIOError, InterruptedError):
                        d = None
                    if d == b"":
                        sel.unregister(s)
                        s.close()
                        del conns[s]
                        stats["closed"] += 1
                        continue
                    if d:
                        st["in"] += d
                        if st["need"] is None and len(st["in"]) >= 4:
                            st["need"] = struct.unpack("<I", st["in"][:4])[0]
                        if st["need"] is not None and len(st["in"]) >= st["need"]:
                            if len(st["in"]) > st["need"]:
                                errors.append("server got %d bytes, expected %d" % (len(st["in"]), st["need"]))
                            st["out"] = bytes(st["in"])
                            st["in"] = bytearray()
                            st["need"] = -1
                            sel.modify(s, selectors.EVENT_READ | selectors.EVENT_WRITE, st)
                if ev & selectors.EVENT_WRITE and st["out"]:
                    try:
                        k = s.send(st["out"])
                        st["out"] = st["out"][k:]
                    except BlockingIOError:
                        pass
                    if not st["out"]:
                        sel.modify(s, selectors.EVENT_READ, st)
    except Exception as e:  # noqa: BLE001 - handed to the test
        errors.append("server: %r" % e)
    finally:
        for s in list(conns):
            s.close()
        sel.close()


def test_1100_concurrent_connections(path, closer):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, 4 * N + 256))
    assert want >= 2 * N + 64, "RLIMIT_NOFILE hard limit %d is too low for %d connections" % (hard, N)
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    lsock = closer(listener(backlog=2048))
    stop = threading.Event()
    errors = []
    stats = {"accepted": 0, "closed": 0}
    t = threading.Thread(target=_server, args=(lsock, stop, errors, stats), daemon=True)
    t.start()
    clients = []
    try:
        base = snap(path)
        rng = random.Random(1100)
        addr = lsock.getsockname()
        payloads = {}
        for i in range(N):
            c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            clients.append(c)
            c.settimeout(10)
            c.connect(addr)
            c.setblocking(False)
            size = rng.choice([16, 100, 1000, 4096, 20000, 65536, 150000])
            body = struct.pack("<II", size, i) + os.urandom(size - 8)
            payloads[c] = body
        # Both ends of every connection in the sockhash before the first byte (a client
        # that wrote before its peer was captured would rightly stay on TCP).
        assert wait_sockets(path, base["sockets"] + 2 * N, timeout=20) == base["sockets"] + 2 * N
        sel = selectors.DefaultSelector()
        state = {}
        for c in clients:
            state[c] = {"out": payloads[c], "in": bytearray()}
            sel.register(c, selectors.EVENT_WRITE | selectors.EVENT_READ, state[c])
        done = 0
        deadline = time.monotonic() + 60
        while done < N:
            assert time.monotonic() < deadline, "only %d of %d echoes back after 60 s" % (done, N)
            assert not errors, errors
            for key, ev in sel.select(0.5):
                c, st = key.fileobj, key.data
                if ev & selectors.EVENT_WRITE and st["out"]:
                    k = c.send(st["out"])
                    st["out"] = st["out"][k:]
                    if not st["out"]:
                        sel.modify(c, selectors.EVENT_READ, st)
                if ev & selectors.EVENT_READ:
                    try:
                        d = c.recv(262144)
                    except BlockingIOError:
                        continue
                    assert d, "server closed connection %d early" % clients.index(c)
                    st["in"] += d
                    if len(st["in"]) >= len(payloads[c]):
                        assert bytes(st["in"]) == payloads[c], "echo of connection %d differs" % clients.index(c)
                        sel.unregister(c)
                        done += 1
        sel.close()
        # All N connections are open at once now.
        now = snap(path)
        assert stats["accepted"] == N
        assert now["sockets"] - base["sockets"] == 2 * N, "sockhash holds %d sockets, want %d" % (
            now["sockets"] - base["sockets"], 2 * N)
        d = delta(now, base)
        total = sum(len(p) for p in payloads.values())
        assert d["captured"] == 2 * N and d["capture_errors"] == 0, d
        assert d["shm_conns"] == 2 * N and d["tcp_conns"] == 0, d
        carried(d, 2 * total)
    finally:
        for c in clients:
            c.close()
        deadline = time.monotonic() + 20
        while stats["closed"] < len(clients) and time.monotonic() < deadline and t.is_alive():
            time.sleep(0.05)
        stop.set()
        t.join(10)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert not t.is_alive(), "server thread hangs"
    assert not errors, errors
    assert stats["closed"] == N
    assert wait_sockets(path, base["sockets"], timeout=15) == base["sockets"], "sockhash not empty after close"
