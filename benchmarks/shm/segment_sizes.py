#!/usr/bin/python3
"""Data for issue 20's next step, not part of the product: the sizes of the first data
segments of every connection that `make bench-shm`'s clients open (their TCP arm only), as a
tc ingress program on lo sees them.  Which connections would a rule "the first 8 data
segments of both directions are all at most 32 KiB" let onto the path?

It starts the bench's servers (benchmarks/shm_path_bench.py), runs each client case for one
second, and prints per case and direction: connections, the range of the largest of the
first 8 segments, how many of those exceed 32 KiB, and the largest segment seen.  On lo, a
segment is a GSO packet of up to 64 KiB.  It attaches clsact to lo in this namespace and
removes it afterwards; run it on a machine where nothing else uses lo's tc hooks.

Run as root with Debian's python (bcc): /usr/bin/python3 benchmarks/shm/segment_sizes.py
"""
import collections
import os
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "tests", "support"))
import shm_path_bench as B  # noqa: E402
import machine_headers  # noqa: E402  bcc_runtime's headers fallback where the kernel has none
from bcc import BPF  # noqa: E402
from ansible_collections.netstack.tuning.plugins.module_utils.bpf import program  # noqa: E402

SRC = r"""
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/in.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/tcp.h>
struct val { u32 nseg; u32 max8; u32 maxall; };
BPF_HASH(flows, u32, struct val, 65536);
int rec(struct __sk_buff *skb)
{
    void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP)) return TC_ACT_OK;
    struct iphdr *ip = (void *)(eth + 1);
    if ((void *)(ip + 1) > end || ip->protocol != IPPROTO_TCP || ip->ihl != 5) return TC_ACT_OK;
    struct tcphdr *th = (void *)(ip + 1);
    if ((void *)(th + 1) > end) return TC_ACT_OK;
    u32 plen = skb->len - 14 - 20 - th->doff * 4;      // a GSO packet's whole payload too
    if (plen == 0 || plen > 0x7fffffff) return TC_ACT_OK;
    u32 key = ((u32)bpf_ntohs(th->source) << 16) | bpf_ntohs(th->dest);
    struct val zero = {};
    struct val *v = flows.lookup_or_try_init(&key, &zero);
    if (!v) return TC_ACT_OK;
    v->nseg += 1;
    if (v->nseg <= 8 && plen > v->max8) v->max8 = plen;
    if (plen > v->maxall) v->maxall = plen;
    return TC_ACT_OK;
}
"""


def main():
    with machine_headers.for_session():
        b = BPF(text=SRC)
        fn = b.load_func("rec", BPF.SCHED_CLS)
        with program._tc(None) as t:        # the engine's tc over rtnetlink
            lo = t.ifindex("lo")
            t.add_clsact(lo)
            try:
                t.replace_filter(lo, "ingress", 1, fn.fd, fn.name)
                run_cases(b)
            finally:
                t.del_clsact(lo)


def run_cases(b):
    """Each client case for a second, printing its connections' first segment sizes."""
    tmp = tempfile.mkdtemp(prefix="netstack-segsizes-")
    os.chmod(tmp, 0o711)                 # the postgres user passes through to its directory
    ctx = {"tmp": tmp, "seconds": 1, "rate": {}}
    B.pick_ports()
    srv = B.Servers(tmp)
    flows = b["flows"]
    try:
        for tool in B.TOOLS:
            if tool.name == "nsbench_pp":
                continue
            tool.servers(srv, ctx)
            server_port = B.port("tcp", {"wrk": "nginx", "pgbench": "postgres"}.get(tool.name, tool.name))
            for label, case in tool.cases:
                flows.clear()
                tool.fn(ctx, "tcp", case)
                print("%-9s %-14s | %s" % (tool.name, label, summary(flows, server_port)), flush=True)
    finally:
        srv.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def summary(flows, server_port):
    """Per direction: connections, the range of the largest of their first 8 segments, how
    many of those exceed 32 KiB, the largest segment seen."""
    per = collections.defaultdict(list)
    for k, v in flows.items():
        src, dst = k.value >> 16, k.value & 0xffff
        if dst == server_port:
            per["to server"].append(v)
        elif src == server_port:
            per["to client"].append(v)
    out = []
    for side in ("to server", "to client"):
        vs = per[side]
        if vs:
            out.append("%s: %d conns, first-8 max %d-%d B (over 32 KiB: %d), all-seg max %d B" % (
                side, len(vs), min(v.max8 for v in vs), max(v.max8 for v in vs),
                sum(1 for v in vs if v.max8 > 32768), max(v.maxall for v in vs)))
    return " | ".join(out)


if __name__ == "__main__":
    main()
