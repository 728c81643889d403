# -*- coding: utf-8 -*-
# Copyright: netstack.tuning contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Request/response over loopback, on two ports side by side: one inside the same-host
path's policy, one outside it (module shm_probe).

An echo server (one process, both ports) and a client (another process, optionally moved
into a cgroup first so that cgroup-scoped BPF programs see its sockets) exchange messages
of ``size`` bytes, one in flight, for ``seconds`` per arm and round; the arms alternate and
their order flips every round.  Each arm's result: round trips per second and the RTT
percentiles of every round trip.  Nothing on the host changes; both processes are gone
when ``run`` returns, also on error."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import select
import selectors
import socket
import time

from ansible_collections.netstack.tuning.plugins.module_utils.core import nsutil, stats
from ansible_collections.netstack.tuning.plugins.module_utils.core.common import NetstackError

HOST = "127.0.0.1"


def _listen(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((HOST, port))
    except OSError as e:
        s.close()
        raise NetstackError("cannot listen on %s:%d: %s" % (HOST, port, e.strerror), field="ports")
    s.listen(64)
    return s


def _serve(listeners, ready):
    """The echo server's loop (in its own process): echo whatever arrives."""
    sel = selectors.DefaultSelector()
    for s in listeners:
        sel.register(s, selectors.EVENT_READ, None)
    os.write(ready, b"+")
    os.close(ready)
    while True:
        for key, _events in sel.select():
            if key.data is None:
                conn = key.fileobj.accept()[0]
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sel.register(conn, selectors.EVENT_READ, "conn")
                continue
            data = key.fileobj.recv(1 << 20)
            if not data:
                sel.unregister(key.fileobj)
                key.fileobj.close()
                continue
            key.fileobj.sendall(data)


def _one_arm(port, size, seconds):
    """Round trips of `size` bytes for `seconds` on one connection: (count, elapsed s, RTTs ns)."""
    msg = b"x" * size
    c = socket.create_connection((HOST, port), timeout=10)
    try:
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = bytearray(size)
        view = memoryview(buf)
        rtts = []
        for warm in (True, False):
            t_end = time.monotonic() + (0.1 if warm else seconds)
            t0 = time.perf_counter()
            while time.monotonic() < t_end:
                a = time.perf_counter_ns()
                c.sendall(msg)
                got = 0
                while got < size:
                    n = c.recv_into(view[got:])
                    if not n:
                        raise NetstackError("the echo server closed the connection", field="ports")
                    got += n
                if not warm:
                    rtts.append(time.perf_counter_ns() - a)
            elapsed = time.perf_counter() - t0
        return len(rtts), elapsed, rtts
    finally:
        c.close()


def _client(arms, size, seconds, rounds, cgroup_procs):
    """The client (in its own process): join the cgroup, run the rounds; {arm: summary}."""
    if cgroup_procs:
        with open(cgroup_procs, "w") as f:
            f.write(str(os.getpid()))
    res = dict((arm[0], {"count": 0, "elapsed": 0.0, "rtts": []}) for arm in arms)
    for r in range(rounds):
        for name, port in (arms if r % 2 == 0 else list(reversed(arms))):
            n, el, rtts = _one_arm(port, size, seconds)
            res[name]["count"] += n
            res[name]["elapsed"] += el
            res[name]["rtts"].extend(rtts)
    return dict((k, summarize(v)) for k, v in res.items())


def summarize(arm):
    us = [x / 1000.0 for x in arm["rtts"]]
    return {"round_trips": arm["count"],
            "round_trips_per_s": round(arm["count"] / arm["elapsed"], 1) if arm["elapsed"] > 0 else 0.0,
            "rtt_us": dict(("p%d" % q, _r(stats.quantile(us, q / 100.0)) if us else None) for q in (50, 90, 99))}


def _r(v):
    return None if v is None else round(v, 2)


def check(path_port, tcp_port, size, seconds, rounds):
    """shm_probe's settings (NetstackError naming the option): two different ports, a
    message of 1 byte to 1 MiB, 0.1 to 60 s per round (NaN refused), 1 to 20 rounds."""
    for field, port in (("path_port", path_port), ("tcp_port", tcp_port)):
        if not 1 <= port <= 65535:
            raise NetstackError("must be a port (1-65535), got %d" % port, field=field)
    if path_port == tcp_port:
        raise NetstackError("must differ from path_port", field="tcp_port")
    if not 1 <= size <= 1 << 20:
        raise NetstackError("must be 1 to 1048576 bytes, got %d" % size, field="size")
    if not 0.1 <= seconds <= 60:
        raise NetstackError("must be 0.1 to 60 s, got %r" % seconds, field="seconds")
    if not 1 <= rounds <= 20:
        raise NetstackError("must be 1 to 20, got %d" % rounds, field="rounds")


def run(arms, size=64, seconds=1.0, rounds=3, cgroup_procs=None, timeout=None):
    """arms: [(name, port), ...].  Returns {name: summary}; raises NetstackError."""
    listeners = [_listen(arm[1]) for arm in arms]
    server = client = None
    try:
        ready_r, ready_w = os.pipe()
        try:
            try:
                server = nsutil.Child(lambda: _serve(listeners, ready_w))
            finally:
                os.close(ready_w)
            if not select.select([ready_r], [], [], 10)[0] or os.read(ready_r, 1) != b"+":
                raise NetstackError("the echo server did not start", field="ports")
        finally:
            os.close(ready_r)
        client = nsutil.Child(lambda: _client(arms, size, seconds, rounds, cgroup_procs))
        late = NetstackError("the client did not finish in time", field="seconds")
        try:
            return client.result(timeout or (seconds + 0.2) * rounds * len(arms) + 30, timed_out=late)
        except NetstackError as e:
            if e is late:
                raise
            raise NetstackError("the client failed: %s" % e.msg, field="ports")
    finally:
        for child in (client, server):
            if child:
                child.kill()
        for s in listeners:
            s.close()
