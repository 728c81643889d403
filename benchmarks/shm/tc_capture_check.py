#!/usr/bin/python3
"""A feasibility check for issue 20, not part of the product: can a tc program put an
ESTABLISHED TCP socket into a SOCKHASH in the middle of a connection, and does the sk_msg
program attached to that map then redirect the socket's next sends?

Why it matters: a socket in a sockhash sends through tcp_bpf_sendmsg even when it leaves
its payload to TCP, which is slower than TCP for large messages (docs/shm_path.md, "Measured").
Capturing at the handshake (sock_ops) puts every connection of a policy there. Capturing
later, from tc, would let the path first look at a connection's segments and leave the
large-message ones out of the sockhash altogether.

What it does, in a network namespace of its own (deleted afterwards):
- tc ingress on lo: for each data segment (PSH), bpf_sk_lookup_tcp finds the receiving
  socket; an ESTABLISHED one goes into the sockhash under (local port, remote port);
- an sk_msg verdict on the sockhash redirects each sendmsg to the peer's key (BPF_F_INGRESS);
- a client and a server exchange three short messages, then 1000 B and 1 MiB.

Run as root with Debian's python (bcc): /usr/bin/python3 benchmarks/shm/tc_capture_check.py
It prints the counters and whether the bytes arrived intact.
"""
import os
import socket
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "collections"))
NETNS = "nstc-capture"

SOURCE = r"""
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/in.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/tcp.h>

BPF_SOCKHASH(sh, u64, 1024);
// 0 data segment seen, 1 socket inserted, 2 insert failed, 3 last error,
// 4 sendmsg redirected, 5 sendmsg left to TCP (no peer in the map yet)
BPF_ARRAY(res, s64, 6);

static __always_inline void bump(int i)
{
    s64 *v = res.lookup(&i);
    if (v)
        __sync_fetch_and_add(v, 1);
}

int tc_capture(struct __sk_buff *skb)
{
    void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
        return TC_ACT_OK;
    struct iphdr *ip = (void *)(eth + 1);
    if ((void *)(ip + 1) > end || ip->protocol != IPPROTO_TCP || ip->ihl != 5)
        return TC_ACT_OK;
    struct tcphdr *th = (void *)(ip + 1);
    if ((void *)(th + 1) > end || !th->psh)
        return TC_ACT_OK;
    bump(0);
    struct bpf_sock_tuple t = {};
    t.ipv4.saddr = ip->saddr;
    t.ipv4.daddr = ip->daddr;
    t.ipv4.sport = th->source;
    t.ipv4.dport = th->dest;
    struct bpf_sock *sk = bpf_sk_lookup_tcp(skb, &t, sizeof(t.ipv4), BPF_F_CURRENT_NETNS, 0);
    if (!sk)
        return TC_ACT_OK;
    if (sk->state == BPF_TCP_ESTABLISHED) {
        u64 key = ((u64)bpf_ntohs(th->dest) << 16) | bpf_ntohs(th->source);
        long r = sh.update(&key, (void *)sk);
        if (r == 0) {
            bump(1);
        } else {
            int i = 3;
            s64 e = r;
            res.update(&i, &e);
            bump(2);
        }
    }
    bpf_sk_release(sk);
    return TC_ACT_OK;
}

int msg_verdict(struct sk_msg_md *msg)
{
    u64 peer = ((u64)(bpf_ntohl(msg->remote_port) & 0xffff) << 16) | (msg->local_port & 0xffff);
    long v = sh.msg_redirect_hash(msg, &peer, BPF_F_INGRESS);
    bump(v == SK_PASS ? 4 : 5);
    return SK_PASS;
}
"""


def inside():
    from bcc import BPF, BPFAttachType
    from bcc.libbcc import lib
    from ansible_collections.netstack.tuning.plugins.module_utils.bpf import program
    b = BPF(text=SOURCE)
    tc = b.load_func("tc_capture", BPF.SCHED_CLS)
    mv = b.load_func("msg_verdict", BPF.SK_MSG)
    BPF.attach_func(mv, lib.bpf_table_fd(b.module, b"sh"), BPFAttachType.SK_MSG_VERDICT)
    with program._tc(None) as t:        # the engine's tc over rtnetlink, in this (the check's) netns
        lo = t.ifindex("lo")
        t.ipr.link("set", index=lo, state="up")
        t.add_clsact(lo)
        t.replace_filter(lo, "ingress", 1, tc.fd, tc.name)
    res = b["res"]
    names = ("data segments seen", "sockets inserted", "inserts failed", "last insert error",
             "sendmsg redirected", "sendmsg left to TCP")

    def counters():
        return dict((names[k], res[res.Key(k)].value) for k in range(len(names)))

    ls = socket.socket()
    ls.bind(("127.0.0.1", 5000))
    ls.listen(8)
    c = socket.create_connection(("127.0.0.1", 5000))
    s, _ = ls.accept()
    for i in range(3):
        c.sendall(b"hello %d" % i)
        assert s.recv(100) == b"hello %d" % i
        s.sendall(b"reply %d" % i)
        assert c.recv(100) == b"reply %d" % i
    print("after 3 exchanges:", counters())
    blob = os.urandom(1 << 20)
    c.sendall(blob[:1000])
    ok_small = s.recv(2000) == blob[:1000]
    c.sendall(blob)
    got = bytearray()
    while len(got) < len(blob):
        got += s.recv(1 << 20)
    print("1000 B intact:", ok_small, "| 1 MiB intact:", bytes(got) == blob)
    print("after 1 MiB:", counters())
    ss = subprocess.run(["ss", "-tni", "sport", "= :5000"], capture_output=True, text=True).stdout
    print("server socket, bytes that came over TCP:",
          [w for w in ss.split() if w.startswith("bytes_received:")])
    for sock in (c, s, ls):
        sock.close()


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--inside":
        inside()
        return 0
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "tests", "support"))
    import machine_headers  # bcc_runtime's headers fallback where the kernel has no headers
    subprocess.run(["ip", "netns", "add", NETNS], check=True)
    try:
        with machine_headers.for_session():
            r = subprocess.run(["ip", "netns", "exec", NETNS, sys.executable, os.path.abspath(__file__), "--inside"],
                               timeout=300)
    finally:
        subprocess.run(["ip", "netns", "del", NETNS], check=False)
    return r.returncode


if __name__ == "__main__":
    sys.exit(main())
