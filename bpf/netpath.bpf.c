// SPDX-License-Identifier: GPL-2.0
// loss_emulator: drop a configurable fraction of packets on a tc hook, for labs and
// benchmarks on kernels without sch_netem (netstack.tuning; benchmarks/tcp_tuning_gain.py).
//
// Hooks:  tc clsact ingress or egress (BPF_PROG_TYPE_SCHED_CLS, direct-action), function
//         `loss_emulator`; loaded and attached by netstack.tuning.bpf_program (type sched_cls,
//         optionally in a named netns).
// Maps (pinned under /sys/fs/bpf/netstack/<name>/maps/):
//   cfg    ARRAY[1] of struct loss_cfg: drop threshold and which packets may be dropped; a
//          packet is dropped when bpf_get_prandom_u32() < threshold, so the drop probability
//          is threshold / 2^32 (0: drop nothing; userspace writes round(p * 2^32))
//   stats  PERCPU_ARRAY[1] of struct loss_stats: packets seen (eligible), packets dropped
//
// Uses only UAPI context (struct __sk_buff), so it compiles against any recent headers.
// Drops are independent (Bernoulli), not bursty.  Attach it on the *receiving* side's
// ingress to model loss on the path: a drop on the sender's own egress is reported back to
// the sending socket as a local congestion signal (NET_XMIT_DROP -> tcp_enter_cwr), which
// real path loss never is.

#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/in.h>

// loss_cfg.flags
#define L_TCP_ONLY   (1u << 0)   // only IPv4/IPv6 TCP packets are eligible (ARP, ICMP pass)

struct loss_cfg {
    __u32 threshold;
    __u32 flags;
};

struct loss_stats {
    __u64 seen;
    __u64 dropped;
};

BPF_ARRAY(cfg, struct loss_cfg, 1);
BPF_PERCPU_ARRAY(stats, struct loss_stats, 1);

static __always_inline int is_tcp(struct __sk_buff *skb)
{
    __u8 proto = 0;
    __u32 eth_proto = skb->protocol;   // network byte order

    if (eth_proto == bpf_htons(ETH_P_IP)) {
        if (bpf_skb_load_bytes(skb, ETH_HLEN + 9, &proto, 1) < 0)
            return 0;
    } else if (eth_proto == bpf_htons(ETH_P_IPV6)) {
        // next header of the fixed header; extension headers are not walked
        if (bpf_skb_load_bytes(skb, ETH_HLEN + 6, &proto, 1) < 0)
            return 0;
    } else {
        return 0;
    }
    return proto == IPPROTO_TCP;
}

int loss_emulator(struct __sk_buff *skb)
{
    __u32 zero = 0;
    struct loss_cfg *c = cfg.lookup(&zero);
    struct loss_stats *s;

    if (!c || c->threshold == 0)
        return TC_ACT_OK;
    if ((c->flags & L_TCP_ONLY) && !is_tcp(skb))
        return TC_ACT_OK;
    s = stats.lookup(&zero);
    if (s)
        s->seen++;
    if (bpf_get_prandom_u32() < c->threshold) {
        if (s)
            s->dropped++;
        return TC_ACT_SHOT;
    }
    return TC_ACT_OK;
}
