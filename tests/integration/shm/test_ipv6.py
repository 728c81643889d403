"""IPv6 over ::1 with AF_INET6 sockets: byte-exact both ways on the path, and a v6
connection left alone when ::1 is not in local_addresses."""

import os
import socket

from shmlib import Stream, Worker, carried, delta, listener, pair, policy, recv_all, send_stream, snap, wait_sockets

MiB = 1 << 20


def _both_ways(c, s, n_up, n_down):
    up = Stream(seed=61, total=n_up)
    down = Stream(seed=62, total=n_down)
    w = [Worker(send_stream, c, up), Worker(recv_all, s), Worker(send_stream, s, down), Worker(recv_all, c)]
    (a, ha, _), (ra, rha), (b, hb, _), (rb, rhb) = [x.join(90) for x in w]
    assert (ra, rha) == (a, ha) == (n_up, ha), "::1 client -> server differs"
    assert (rb, rhb) == (b, hb) == (n_down, hb), "::1 server -> client differs"
    return a + b


def test_ipv6_loopback(path, closer):
    lis = closer(listener(host="::1", family=socket.AF_INET6))
    before = snap(path)
    c, s = closer(*pair(lis))
    assert c.family == socket.AF_INET6 and s.family == socket.AF_INET6
    assert c.getpeername()[0] == "::1" and s.getpeername()[0] == "::1"
    assert wait_sockets(path, before["sockets"] + 2) == before["sockets"] + 2
    total = _both_ways(c, s, 24 * MiB, 16 * MiB + 3)
    d = delta(snap(path), before)
    assert d["captured"] == 2 and d["shm_conns"] == 2 and d["tcp_conns"] == 0, d
    carried(d, total)
    c.close()
    s.close()
    assert wait_sockets(path, before["sockets"]) == before["sockets"]


def test_ipv6_not_in_local_addresses(make_path, closer):
    p = make_path(policy(local=["127.0.0.0/8"]))
    lis = closer(listener(host="::1", family=socket.AF_INET6))
    before = snap(p)
    c, s = closer(*pair(lis))
    _both_ways(c, s, 4 * MiB, 4 * MiB)
    d = delta(snap(p), before)
    assert all(v == 0 for v in d.values()), "::1 captured with local_addresses 127.0.0.0/8: %s" % d
    # The same policy captures IPv4 loopback (the policy is live).
    l4 = closer(listener())
    c4, s4 = closer(*pair(l4))
    data = os.urandom(MiB)
    w = Worker(recv_all, s4)
    c4.sendall(data)
    c4.shutdown(socket.SHUT_WR)
    w.join(30)
    d = delta(snap(p), before)
    assert d["captured"] == 2, d
    carried(d, len(data))
