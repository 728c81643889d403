"""Helpers for the traffic collector (capability 5) integration tests.

A lab is two throwaway network namespaces joined by a veth pair (names
``tatest-<pid>-<seq>-srv`` / ``-cli``, so ``nsutil.reap_stale_netns`` removes what a killed
run left): the collector watches ``tas0`` in the server namespace, traffic comes from the
client namespace.  Addresses are in the benchmark range 198.18.0.0/15 and the
documentation range 2001:db8::/32.  Sockets are made with this thread switched into the
namespace (kstate.in_netns); a socket stays in the namespace it was made in.
"""

import fcntl
import itertools
import os
import socket
import struct
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
COLLECTIONS = os.path.join(REPO, "collections")
if COLLECTIONS not in sys.path:
    sys.path.insert(0, COLLECTIONS)

from ansible_collections.netstack.tuning.plugins.module_utils.core import kstate, nsutil  # noqa: E402
# re-exported for the tests and conftest
from ansible_collections.netstack.tuning.plugins.module_utils.bpf import program as bpf  # noqa: E402,F401 pylint: disable=unused-import
from ansible_collections.netstack.tuning.plugins.module_utils.traffic import collect as trafficcollect  # noqa: E402,F401 pylint: disable=unused-import
from ansible_collections.netstack.tuning.plugins.module_utils.core.common import NetstackError, run, which  # noqa: E402

PREFIX = "tatest"
SRV4, CLI4 = "198.18.102.1", "198.18.102.2"
SRV6, CLI6 = "2001:db8:102::1", "2001:db8:102::2"
SRV_IF, CLI_IF = "tas0", "tac0"
UDP4_HDR, UDP6_HDR = 28, 48          # IPv4 + UDP, IPv6 + UDP header bytes
TIMEOUT = 10.0
IP = which("ip")
_seq = itertools.count()


def sh(*argv):
    rc, out, err = run(list(argv), timeout=30)
    if rc != 0:
        raise NetstackError("%s failed: %s" % (" ".join(argv), err.strip()))
    return out


class Lab(object):
    """Two namespaces and a veth pair with IPv4 and IPv6 addresses; ``close`` removes both."""

    def __init__(self):
        n = next(_seq)
        self.srv = "%s-%d-%d-srv" % (PREFIX, os.getpid(), n)
        self.cli = "%s-%d-%d-cli" % (PREFIX, os.getpid(), n)
        self.fds = []
        try:
            for ns in (self.srv, self.cli):
                sh(IP, "netns", "add", ns)
            nsutil.link_veth(IP, (self.srv, SRV_IF, SRV4), (self.cli, CLI_IF, CLI4), 30)
            sh(IP, "-n", self.srv, "addr", "add", SRV6 + "/64", "dev", SRV_IF, "nodad")
            sh(IP, "-n", self.cli, "addr", "add", CLI6 + "/64", "dev", CLI_IF, "nodad")
            # Neighbours resolved before anything is counted: no packet waits in an ARP/ND queue.
            self.udp(1, 1, 7)
            self.udp(1, 1, 7, family=6)
        except BaseException:
            self.close()
            raise

    def close(self):
        for fd in self.fds:
            os.close(fd)
        self.fds = []
        for ns in (self.srv, self.cli):
            nsutil.delete_netns(IP, ns)

    def tun(self, ifname, cidr):
        """A tun device (an L3 device: no link-layer header) in the server namespace, up, with
        ``cidr``; returns its fd (packets routed to it are read there, packets written to it
        arrive on it).  It vanishes when the lab closes the fd."""
        with kstate.in_netns(self.srv):
            fd = os.open("/dev/net/tun", os.O_RDWR)
            self.fds.append(fd)
            fcntl.ioctl(fd, 0x400454ca, struct.pack("16sH22x", ifname.encode(), 0x0001 | 0x1000))  # TUNSETIFF: TUN, NO_PI
        sh(IP, "-n", self.srv, "addr", "add", cidr, "dev", ifname)
        sh(IP, "-n", self.srv, "link", "set", ifname, "up")
        return fd

    def sock(self, ns, family, kind=socket.SOCK_DGRAM):
        with kstate.in_netns(ns):
            s = socket.socket(socket.AF_INET6 if family == 6 else socket.AF_INET, kind)
        s.settimeout(TIMEOUT)
        return s

    def udp(self, count, size, port, tos=0, family=4, replies=0, reply_size=0, deliver=True):
        """``count`` datagrams of ``size`` payload bytes client -> server:port (each received),
        then ``replies`` of ``reply_size`` back from that port.  ``deliver=False``: they must
        not arrive (returns how many did)."""
        srv_addr, cli_addr = (SRV6, CLI6) if family == 6 else (SRV4, CLI4)
        rx, tx = self.sock(self.srv, family), self.sock(self.cli, family)
        try:
            rx.bind((srv_addr, port))
            tx.bind((cli_addr, 0))
            if tos:
                if family == 6:
                    tx.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, tos)
                else:
                    tx.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, tos)
            if not deliver:
                for _i in range(count):
                    tx.sendto(b"q" * size, (srv_addr, port))
                rx.settimeout(0.5)
                n = 0
                try:
                    while True:
                        rx.recv(65536)
                        n += 1
                except socket.timeout:
                    return n
            for _i in range(count):
                tx.sendto(b"q" * size, (srv_addr, port))
                rx.recv(65536)
            for _i in range(replies):
                rx.sendto(b"r" * reply_size, (cli_addr, tx.getsockname()[1]))
                tx.recv(65536)
        finally:
            rx.close()
            tx.close()

    def tcp(self, nbytes, port, sender=None):
        """One TCP connection client -> server:port carrying ``nbytes``; returns what arrived.
        ``sender``, a dict, gets the client socket's own counts from TCP_INFO once the
        server's FIN is in: ``segs_out`` (every segment it sent: SYN, data, retransmissions,
        ACKs, FIN) and ``total_retrans``."""
        import threading
        ls, cs = self.sock(self.srv, 4, socket.SOCK_STREAM), self.sock(self.cli, 4, socket.SOCK_STREAM)
        got = [0]

        def serve():
            c, _a = ls.accept()
            c.settimeout(TIMEOUT)
            try:
                while True:
                    d = c.recv(1 << 16)
                    if not d:
                        break
                    got[0] += len(d)
            finally:
                c.close()
        try:
            ls.bind((SRV4, port))
            ls.listen(1)
            t = threading.Thread(target=serve)
            t.start()
            cs.connect((SRV4, port))
            cs.sendall(b"t" * nbytes)
            cs.shutdown(socket.SHUT_WR)
            t.join(TIMEOUT)
            # the server closed its end too: wait for its FIN so every packet is in before a scrape
            cs.recv(1)
            if sender is not None:
                sender.update(tcp_counts(cs))
        finally:
            cs.close()
            ls.close()
        time.sleep(0.2)
        return got[0]

    def tc(self, *args):
        return sh("nsenter", "--net=%s" % os.path.join(nsutil.NETNS_DIR, self.srv), "tc", *args)


def tcp_counts(s):
    """segs_out and total_retrans of a TCP socket (struct tcp_info, include/uapi/linux/tcp.h:
    8 bytes of u8 fields, then u32s: tcpi_total_retrans is the 24th; after four u64s come
    tcpi_segs_out and tcpi_segs_in)."""
    info = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 144)
    total_retrans, = struct.unpack_from("I", info, 8 + 23 * 4)
    segs_out, segs_in = struct.unpack_from("II", info, 136)
    return {"segs_out": segs_out, "segs_in": segs_in, "total_retrans": total_retrans}


def read_ipv4(fd, count):
    """Lengths of the next ``count`` IPv4 packets read from a tun fd (IPv6 router
    solicitations and the like skipped)."""
    import select
    out, deadline = [], time.time() + TIMEOUT
    while len(out) < count and select.select([fd], [], [], max(0.0, deadline - time.time()))[0]:
        pkt = os.read(fd, 65536)
        if pkt[:1] and pkt[0] >> 4 == 4:
            out.append(len(pkt))
    return out


def ipv4_udp(src, dst, sport, dport, payload):
    """An IPv4/UDP packet (header checksum set, UDP checksum 0)."""
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0,
                      socket.inet_aton(src), socket.inet_aton(dst))
    words = sum(struct.unpack("!10H", hdr))
    while words >> 16:
        words = (words & 0xffff) + (words >> 16)
    return hdr[:10] + struct.pack("!H", ~words & 0xffff) + hdr[12:] + udp


def ipv4_fragment(src, dst, proto, offset8, data):
    """An IPv4 fragment at ``offset8`` 8-byte units (not the first one: no L4 header)."""
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(data), 7, offset8 & 0x1fff, 64, proto, 0,
                      socket.inet_aton(src), socket.inet_aton(dst))
    return hdr + data


def ipv6_udp(src, dst, sport, dport, payload, ext=b"", first_next=17):
    """An IPv6 packet: fixed header (next header ``first_next``), ``ext`` (extension headers,
    the last one naming UDP), then UDP (checksum 0 is invalid for IPv6 but never checked at tc)."""
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    body = ext + udp
    return struct.pack("!IHBB16s16s", 6 << 28, len(body), first_next, 64, socket.inet_pton(socket.AF_INET6, src),
                       socket.inet_pton(socket.AF_INET6, dst)) + body


def rows_for(rows, **match):
    return [r for r in rows if all(r[k] == v for k, v in match.items())]


def one(rows, **match):
    """The single row matching; fails listing the rows otherwise."""
    found = rows_for(rows, **match)
    assert len(found) == 1, "want one row %s, got %d in:\n%s" % (match, len(found), "\n".join(map(str, rows)))
    return found[0]
