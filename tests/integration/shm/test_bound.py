"""What a connection may hold queued on the same-host path (docs/shm.md, "Bounded queue").

A reader that stops reading while its peer keeps sending: over plain TCP the sender stops
after a few MiB (flow control).  The path moves payload straight into the reader's queue,
where the kernel applies no SO_RCVBUF; the program bounds it itself, and past the bound the
direction goes over TCP, whose flow control stops the sender.  These tests read what the
kernel holds (ss's skmem and SIOCINQ of the reader, /proc/net/sockstat for the host), never
the program's own counters, for 30 s with one pair and with 100 pairs at once, while an
unrelated TCP transfer runs beside them; then every reader drains and checks every byte.
"""

import fcntl
import hashlib
import os
import selectors
import socket
import struct
import subprocess
import termios
import threading
import time

from shmlib import OFF_HI, OFF_LO, Worker, delta, listener, pair, recv_all, snap

MiB = 1 << 20
BLOCK = 64 * 1024
SECONDS = 30.0
SAMPLE = 0.5
# What one direction may hold on the path past its bound: the last message the program let
# through while the queue was under it (one sendmsg is cut into pieces of at most what the
# sender's send buffer holds, a few hundred KiB).
SLACK = 4 * MiB


def _stamp(i):
    """Block i of a stream: its index in every 8 bytes, so any loss or reordering shows."""
    return struct.pack("<Q", i) * (BLOCK // 8)


class Sender(object):
    """One non-blocking sender writing stamped blocks as fast as its socket takes them."""

    def __init__(self, sock):
        self.sock = sock
        self.sock.setblocking(False)
        self.block = 0
        self.offset = 0       # into the current block
        self.sent = 0
        self.eagain = 0

    def pump(self):
        """Write until the socket pushes back (EAGAIN); returns bytes written now."""
        n = 0
        while True:
            data = _stamp(self.block)[self.offset:]
            try:
                k = self.sock.send(data)
            except BlockingIOError:
                self.eagain += 1
                return n
            n += k
            self.sent += k
            self.offset += k
            if self.offset == BLOCK:
                self.block += 1
                self.offset = 0


def _check_stream(sock, expect):
    """Read `expect` bytes and check they are blocks 0, 1, 2, ... in order."""
    sock.setblocking(True)
    sock.settimeout(30)
    buf = bytearray()
    got = i = 0
    while got < expect:
        d = sock.recv(min(1 << 20, expect - got))
        assert d, "EOF after %d of %d bytes" % (got, expect)
        buf += d
        got += len(d)
        while len(buf) >= BLOCK:
            assert bytes(buf[:BLOCK]) == _stamp(i), "block %d arrived damaged or out of order" % i
            del buf[:BLOCK]
            i += 1
    assert bytes(buf) == _stamp(i)[:len(buf)], "the last partial block %d differs" % i
    return got


# ------------------------------------------------------------------ what the kernel holds

def skmem(port):
    """{(local port, peer port): {r, rb, ...}} of the sockets on local port `port` (ss -tm)."""
    out = subprocess.run(["ss", "-tmnH", "state", "established", "( sport = :%d )" % port],
                         stdout=subprocess.PIPE, check=True, timeout=30).stdout.decode()
    res = {}
    lines = out.splitlines()
    for i, line in enumerate(lines):
        if "skmem:(" not in line:
            continue
        fields = line.split()
        head = fields if ":" in fields[2] else lines[i - 1].split()
        local, peer = head[2], head[3]
        mem = line[line.index("skmem:(") + 7:].split(")")[0]
        vals = dict((k.rstrip("0123456789"), int(k[len(k.rstrip("0123456789")):])) for k in mem.split(","))
        res[(int(local.rsplit(":", 1)[1]), int(peer.rsplit(":", 1)[1]))] = vals
    return res


def siocinq(sock):
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]


def tcp_mem_pages():
    """(pages TCP holds on this host now, the tcp_mem thresholds)."""
    with open("/proc/net/sockstat") as f:
        for line in f:
            if line.startswith("TCP:"):
                parts = line.split()
                now = int(parts[parts.index("mem") + 1])
    with open("/proc/sys/net/ipv4/tcp_mem") as f:
        limits = [int(x) for x in f.read().split()]
    return now, limits


class Unrelated(object):
    """Plain TCP transfers (outside every policy) looping beside the test: each 32 MiB,
    hashed on both ends; any reset or difference is recorded."""

    def __init__(self, closer):
        self.stop = threading.Event()
        self.done = 0
        self.errors = []
        self.lsock = closer(listener(OFF_LO, OFF_HI))
        self.worker = Worker(self._loop)

    def _loop(self):
        payload = os.urandom(MiB)
        want = hashlib.sha256(payload * 32).hexdigest()
        while not self.stop.is_set():
            c, s = pair(self.lsock)
            try:
                rx = Worker(recv_all, s)
                for _ in range(32):
                    c.sendall(payload)
                c.shutdown(socket.SHUT_WR)
                n, h = rx.join(60)
                if n != 32 * MiB or h != want:
                    self.errors.append("transfer %d: %d bytes, %s" % (self.done, n, "same" if h == want else "other"))
                self.done += 1
            except OSError as e:
                self.errors.append("transfer %d: %s" % (self.done, e))
            finally:
                c.close()
                s.close()

    def finish(self):
        self.stop.set()
        self.worker.join(90)
        return self.done, self.errors


def _hold(path, lsock, closer, npairs):
    """npairs connections whose readers never read, senders pumping for SECONDS; returns
    what was sampled.  The readers are checked and drained afterwards."""
    port = lsock.getsockname()[1]
    before = snap(path)
    pairs = [closer(*pair(lsock)) for _ in range(npairs)]
    bound = pairs[0][1].getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    senders = [Sender(c) for c, _ in pairs]
    side = Unrelated(closer)
    sel = selectors.DefaultSelector()
    for snd in senders:
        sel.register(snd.sock, selectors.EVENT_WRITE, snd)
    peak = {"r": 0, "inq": 0, "tcp_pages": 0, "path_total": 0}
    t_end = time.monotonic() + SECONDS
    next_sample = 0.0
    sent_at = []
    while time.monotonic() < t_end:
        for key, _ in sel.select(0.05):
            key.data.pump()
        now = time.monotonic()
        if now >= next_sample:
            next_sample = now + SAMPLE
            mem = skmem(port)
            peak["r"] = max([peak["r"]] + [m["r"] for m in mem.values()])
            inq = [siocinq(s) for _, s in pairs]
            peak["inq"] = max([peak["inq"]] + inq)
            peak["path_total"] = max(peak["path_total"], sum(m["r"] for m in mem.values()))
            peak["tcp_pages"] = max(peak["tcp_pages"], tcp_mem_pages()[0])
            sent_at.append(sum(s.sent for s in senders))
    sel.close()
    done, errors = side.finish()
    d = delta(snap(path), before)
    # Every reader now reads what it was sent: in order, nothing lost.
    for snd, (_, s) in zip(senders, pairs):
        assert _check_stream(s, snd.sent) == snd.sent
    return {"bound": bound, "peak": peak, "senders": senders, "counters": d, "unrelated": (done, errors),
            "sent_at": sent_at, "tcp_mem": tcp_mem_pages()[1]}


def _judge(res, npairs):
    bound, peak, d = res["bound"], res["peak"], res["counters"]
    page = os.sysconf("SC_PAGE_SIZE")
    print("%d pair(s), %.0f s: bound %d B; peak per reader: skmem r %d B, SIOCINQ %d B; all readers' r %d B; "
          "host TCP memory peak %d pages (%.1f MiB) against tcp_mem %s; sent per sender %s; counters %s; "
          "unrelated transfers %d" % (
              npairs, SECONDS, bound, peak["r"], peak["inq"], peak["path_total"], peak["tcp_pages"],
              peak["tcp_pages"] * page / MiB, res["tcp_mem"], sorted(set(s.sent for s in res["senders"]))[:5],
              d, res["unrelated"][0]))
    # The application sees TCP's behaviour: its sends stop (EAGAIN) and stay stopped.
    assert all(s.eagain > 0 for s in res["senders"]), "a sender was never pushed back"
    later = res["sent_at"][len(res["sent_at"]) // 2:]
    assert later[-1] == later[0], "senders kept writing in the second half: %s" % later
    # What the kernel holds for each reader stays within the bound (plus one message and
    # what TCP itself holds once the direction is over TCP: its receive buffer).
    assert peak["r"] <= bound + SLACK + 2 * bound, peak
    assert all(s.sent <= bound + SLACK + 16 * MiB for s in res["senders"]), "a sender queued more than TCP allows"
    # Far from the host's limits: under a tenth of the pressure threshold.
    assert peak["tcp_pages"] < res["tcp_mem"][0] // 10, (peak["tcp_pages"], res["tcp_mem"])
    # Each direction took the path, reached the bound once and went over TCP for the rest.
    assert d["captured"] == 2 * npairs and d["shm_conns"] == npairs, d
    assert d["overflows"] == npairs and d["resumes"] == 0, d
    done, errors = res["unrelated"]
    assert not errors, errors
    assert done >= 1, "the unrelated transfer never completed"


def test_one_reader_that_never_reads(path, lsock, closer):
    res = _hold(path, lsock, closer, 1)
    _judge(res, 1)


def test_a_hundred_readers_that_never_read(path, lsock, closer):
    res = _hold(path, lsock, closer, 100)
    _judge(res, 100)
