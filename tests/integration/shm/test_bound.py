"""What a connection may hold queued on the same-host path (docs/shm_path.md, "Bounded queue").

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
BLOCK = 64 * 1024       # each send() writes at most this: the most the path lets past its bound
SECONDS = 30.0
SAMPLE = 0.5


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
        # "Recv-Q Send-Q Local Peer", then skmem on the same line or on the next
        head = (lines[i - 1] if line.lstrip().startswith("skmem") else line).split()
        local, peer = head[2], head[3]
        mem = line[line.index("skmem:(") + 7:].split(")")[0]
        vals = dict((k.rstrip("0123456789"), int(k[len(k.rstrip("0123456789")):])) for k in mem.split(","))
        res[(int(local.rsplit(":", 1)[1]), int(peer.rsplit(":", 1)[1]))] = vals
    return res


def siocinq(sock):
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]


def tcp_pages():
    """Pages TCP holds on this host now (/proc/net/sockstat)."""
    with open("/proc/net/sockstat") as f:
        for line in f:
            if line.startswith("TCP:"):
                parts = line.split()
                return int(parts[parts.index("mem") + 1])
    raise AssertionError("no TCP line in /proc/net/sockstat")


def tcp_mem_limits():
    with open("/proc/sys/net/ipv4/tcp_mem") as f:
        return [int(x) for x in f.read().split()]


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


def _pump(lsock, closer, npairs, seconds):
    """npairs connections to lsock whose readers never read, senders pumping for `seconds`
    while the kernel's view is sampled; the readers then read and check every byte."""
    port = lsock.getsockname()[1]
    pairs = [closer(*pair(lsock)) for _ in range(npairs)]
    bound = pairs[0][1].getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)  # before reading grows it
    senders = [Sender(c) for c, _ in pairs]
    sel = selectors.DefaultSelector()
    for snd in senders:
        sel.register(snd.sock, selectors.EVENT_WRITE, snd)
    peak = {"r": 0, "inq": 0, "tcp_pages": 0, "all_r": 0}
    t_end = time.monotonic() + seconds
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
            peak["inq"] = max([peak["inq"]] + [siocinq(s) for _, s in pairs])
            peak["all_r"] = max(peak["all_r"], sum(m["r"] for m in mem.values()))
            peak["tcp_pages"] = max(peak["tcp_pages"], tcp_pages())
            sent_at.append(sum(s.sent for s in senders))
    sel.close()
    # Every reader now reads what it was sent: in order, nothing lost.
    for snd, (_, s) in zip(senders, pairs):
        assert _check_stream(s, snd.sent) == snd.sent
    return {"bound": bound, "peak": peak,
            "senders": senders, "sent_at": sent_at, "tcp_mem": tcp_mem_limits()}


def _hold(path, lsock, closer, npairs):
    """The reference first: the same pairs over plain TCP for a few seconds (what the host
    holds without the path); then npairs on the path for SECONDS beside an unrelated TCP
    transfer."""
    ref = _pump(closer(listener(OFF_LO, OFF_HI)), closer, npairs, 5.0)
    before = snap(path)
    side = Unrelated(closer)
    res = _pump(lsock, closer, npairs, SECONDS)
    res["unrelated"] = side.finish()
    res["counters"] = delta(snap(path), before)
    res["tcp_reference"] = ref
    return res


def _judge(res, npairs):
    bound, peak, d, ref = res["bound"], res["peak"], res["counters"], res["tcp_reference"]
    page = os.sysconf("SC_PAGE_SIZE")
    print("%d pair(s), %.0f s: bound %d B; peak per reader: path queue (SIOCINQ) %d B, skmem r %d B; all readers' "
          "r %d B; host TCP memory peak %.1f MiB (plain TCP alone, same pairs: %.1f MiB; tcp_mem %s pages); "
          "sent per sender %s (plain TCP %s); counters %s; unrelated transfers %d" % (
              npairs, SECONDS, bound, peak["inq"], peak["r"], peak["all_r"], peak["tcp_pages"] * page / MiB,
              ref["peak"]["tcp_pages"] * page / MiB, res["tcp_mem"],
              sorted(set(s.sent for s in res["senders"]))[:3], sorted(set(s.sent for s in ref["senders"]))[:3],
              d, res["unrelated"][0]))
    # The application sees TCP's behaviour: its sends stop (EAGAIN) and stay stopped.
    assert all(s.eagain > 0 for s in res["senders"]), "a sender was never pushed back"
    later = res["sent_at"][len(res["sent_at"]) // 2:]
    assert later[-1] == later[0], "senders kept writing in the second half: %s" % later
    # The kernel's count of bytes queued on the path for each reader stays within the bound
    # plus the one message that found the queue under it; with what TCP holds once the
    # direction is over TCP, a reader holds what a plain TCP reader does plus the bound.
    assert peak["inq"] <= bound + BLOCK, peak
    assert peak["r"] <= ref["peak"]["r"] + bound + BLOCK, (peak, ref["peak"])
    most_tcp = max(s.sent for s in ref["senders"])
    assert all(s.sent <= most_tcp + bound + BLOCK for s in res["senders"]), "a sender queued more than over TCP"
    # The host: what plain TCP holds for the same pairs, plus each reader's bound, plus the
    # unrelated transfer's buffers (at most 64 MiB); far below TCP memory pressure.
    assert peak["tcp_pages"] * page <= ref["peak"]["tcp_pages"] * page + npairs * (bound + BLOCK) + 64 * MiB, \
        (peak["tcp_pages"], ref["peak"]["tcp_pages"])
    assert peak["tcp_pages"] < res["tcp_mem"][0] // 2, (peak["tcp_pages"], res["tcp_mem"])
    # Each direction took the path, reached the bound once and went over TCP for the rest.
    assert d["captured"] == 2 * npairs and d["shm_conns"] == npairs, d
    assert d["overflows"] == npairs and d["resumes"] == 0, d
    assert d["grows"] == 0, d           # a reader that does not read never grows its bound
    done, errors = res["unrelated"]
    assert not errors, errors
    assert done >= 1, "the unrelated transfer never completed"


def test_one_reader_that_never_reads(path, lsock, closer):
    res = _hold(path, lsock, closer, 1)
    _judge(res, 1)


def test_a_hundred_readers_that_never_read(path, lsock, closer):
    res = _hold(path, lsock, closer, 100)
    _judge(res, 100)


# ------------------------------------------------------------------ a reader that reads

def _lockstep(path, lsock, closer, lock_rcvbuf):
    """Fill the reader's queue to its bound, let it read half a bound, then send one more
    block: the path's decision at that block is what the test reads from the counters.
    Returns (counter deltas, bound)."""
    c, s = closer(*pair(lsock))
    if lock_rcvbuf:
        # SO_RCVBUF set by the application: TCP never autotunes it, nor does the path.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2)
    bound = s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    full = bound // BLOCK                  # blocks that fit under the bound
    half = -(-bound // 2 // BLOCK)         # blocks that make at least half a bound
    before = snap(path)
    sent = 0
    for _ in range(full):
        c.sendall(_stamp(sent))
        sent += 1
    s.settimeout(30)
    buf = bytearray()
    while len(buf) < half * BLOCK:
        buf += s.recv(half * BLOCK - len(buf))
    for i in range(half):
        assert bytes(buf[i * BLOCK:(i + 1) * BLOCK]) == _stamp(i), "block %d damaged" % i
    for _ in range(half + 1):              # the last one would pass the bound
        c.sendall(_stamp(sent))
        sent += 1
    d = delta(snap(path), before)
    # Every byte still arrives, in order, after the blocks already read.
    got = 0
    while got < (sent - half) * BLOCK:
        chunk = s.recv(min(1 << 20, (sent - half) * BLOCK - got))
        assert chunk, "EOF after %d bytes" % got
        buf = chunk if got == 0 else buf + chunk
        got += len(chunk)
    for k in range(sent - half):
        assert bytes(buf[k * BLOCK:(k + 1) * BLOCK]) == _stamp(half + k), "block %d damaged or out of order" % (half + k)
    return d, bound


def test_a_reading_readers_bound_grows(path, lsock, closer):
    """TCP grows a reading socket's receive buffer; the path grows its bound for a reader
    that has consumed half a bound: the block past the bound stays on the path."""
    d, bound = _lockstep(path, lsock, closer, lock_rcvbuf=False)
    print("bound %d B: %s" % (bound, d))
    assert d["grows"] == 1 and d["overflows"] == 0 and d["tcp_bytes"] == 0, d


def test_a_locked_rcvbuf_is_a_fixed_bound(path, lsock, closer):
    """A reader that set SO_RCVBUF keeps it as its bound, reading or not (TCP does not
    autotune a locked buffer either): the block past the bound goes over TCP."""
    d, bound = _lockstep(path, lsock, closer, lock_rcvbuf=True)
    print("bound %d B: %s" % (bound, d))
    assert d["grows"] == 0 and d["overflows"] == 1 and d["tcp_bytes"] > 0, d
