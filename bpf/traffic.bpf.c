// SPDX-License-Identifier: GPL-2.0
// traffic_acct: count L3 bytes and packets per aggregation key on tc hooks, for the
// traffic collector (netstack.tuning capability 5; plugins/module_utils/traffic/collect.py).
//
// Hooks:  tc clsact ingress and egress (BPF_PROG_TYPE_SCHED_CLS, direct-action), functions
//         `traffic_ingress` and `traffic_egress` (direction 0 "in" and 1 "out").  The
//         collector attaches both to every interface it watches; for the second and later
//         interfaces it appends TA_HOOKS(n) to this source, which defines the same two
//         functions again as `traffic_ingress_<n>` / `traffic_egress_<n>` (the bpf engine
//         attaches each function once).  All of them share the maps below.
//         They never change a packet and return TC_ACT_UNSPEC ("no verdict"): the packet
//         goes on to the next filter of the chain, or passes when there is none.  (A
//         direct-action TC_ACT_OK would end the chain and silently disable the filters of
//         other programs at a later priority on the same hook.)
// Maps (pinned under /sys/fs/bpf/netstack/<name>/maps/):
//   flows       PERCPU_HASH[TA_MAX_FLOWS] struct ta_key -> struct ta_val {packets, bytes}:
//               running totals since the map was created; userspace sums the CPUs, takes
//               deltas between scrapes, and deletes entries that stay idle
//   overflow    PERCPU_ARRAY[1] struct ta_val: traffic not counted in `flows` because the
//               map was full
//   cfg         ARRAY[1] struct ta_cfg: prefix lengths for the remote address (IPv4, IPv6);
//               until userspace sets TA_CFG_SET they are 24 and 48
//   port_class  ARRAY[65536] __u8: service class id by port (trafficdata.port_class_table())
//   links       HASH[256] ifindex -> struct ta_link: link-layer header length of an interface
//               (0 for L3 devices: tun, wireguard, ipip, ...); an interface not listed has an
//               Ethernet header (14 bytes)
//
// Key:  ifindex, direction (0 in, 1 out), family (0 non-IP, 4, 6), IP protocol (IPv6: the
//       upper-layer protocol after extension headers), port class id, DSCP, the prefix
//       length used, and the remote address masked to it (network byte order, IPv4 in the
//       first 4 bytes).  Remote = source on ingress, destination on egress.  Non-IP frames
//       (ARP, LLDP, ...) count with family 0, protocol 0, class "none", address zero.
// Semantics:
//   bytes    L3 bytes (IP header and payload): skb->len less the link-layer header.  At
//            tc ingress cls_bpf pushes the MAC header back before running the program, so
//            skb->len includes it on both hooks.  A GSO/GRO packet of n segments counts
//            n packets and its payload plus n copies of its L3+L4 headers, i.e. the bytes
//            the segments have (or had) on the wire
//   packets  max(1, gso_segs)
//   class    min(port_class[sport], port_class[dport]) for TCP, UDP, SCTP and UDP-Lite;
//            TA_CLASS_NONE for other protocols, and for fragments other than the first
//            (they carry no ports; their bytes count under the flow's protocol and prefix)
// Limits: IPv6 extension headers are walked up to TA_MAX_EXT deep (hop-by-hop, routing,
// destination options, fragment, AH); ESP and anything deeper end the walk, with that
// header as the protocol and no ports.  802.1Q tags the NIC did not strip count as non-IP.
//
// Uses only UAPI context (struct __sk_buff), so it compiles against any recent headers.

#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>
#include <uapi/linux/if_ether.h>

#ifndef TA_MAX_FLOWS
#define TA_MAX_FLOWS 16384
#endif
#ifndef TA_CLASS_NONE
#define TA_CLASS_NONE 10
#endif
#define TA_MAX_EXT 6
#define TA_CFG_SET (1u << 0)     // ta_cfg: the prefix lengths are set (0 is a valid length)

struct ta_key {
    __u32 ifindex;
    __u8  direction;
    __u8  family;
    __u8  proto;
    __u8  port_class;
    __u8  dscp;
    __u8  plen;
    __u16 pad;
    __u32 addr[4];
};

struct ta_val {
    __u64 packets;
    __u64 bytes;
};

struct ta_cfg {
    __u32 prefix_v4;
    __u32 prefix_v6;
    __u32 flags;
    __u32 table_crc;    // userspace's mark of the port_class contents it wrote
};

struct ta_link {
    __u32 l2_len;
};

struct ta_ip4 {
    __u8   vihl;
    __u8   tos;
    __be16 tot_len;
    __be16 id;
    __be16 frag_off;
    __u8   ttl;
    __u8   protocol;
    __u16  check;
    __be32 saddr;
    __be32 daddr;
};

struct ta_ip6 {
    __be32 vtcfl;        // version 4 bits, traffic class 8, flow label 20
    __be16 payload_len;
    __u8   nexthdr;
    __u8   hop_limit;
    __be32 saddr[4];
    __be32 daddr[4];
};

BPF_PERCPU_HASH(flows, struct ta_key, struct ta_val, TA_MAX_FLOWS);
BPF_PERCPU_ARRAY(overflow, struct ta_val, 1);
BPF_ARRAY(cfg, struct ta_cfg, 1);
BPF_ARRAY(port_class, __u8, 65536);
BPF_HASH(links, __u32, struct ta_link, 256);

static __always_inline __be32 mask_word(__be32 w, __u32 bits)
{
    if (bits >= 32)
        return w;
    if (bits == 0)
        return 0;
    return w & bpf_htonl(~0u << (32 - bits));
}

static __always_inline __u8 class_of(__u16 port)
{
    __u32 k = port;
    __u8 *c = port_class.lookup(&k);
    return c ? *c : TA_CLASS_NONE;
}

static __always_inline int ported(__u8 proto)
{
    return proto == 6 || proto == 17 || proto == 132 || proto == 136;
}

static __always_inline void account(struct __sk_buff *skb, __u8 dir)
{
    struct ta_key key = {};
    struct ta_val zero_val = {};
    struct ta_val *v;
    __u32 zero = 0;
    __u32 ifx = skb->ifindex;
    __u32 l2 = ETH_HLEN, l4 = 0, hdrs = 0, len, segs;
    __u32 p4 = 24, p6 = 48;
    __u8 proto = 0;
    int frag_later = 0;

    struct ta_link *lk = links.lookup(&ifx);
    if (lk)
        l2 = lk->l2_len > 64 ? 64 : lk->l2_len;
    struct ta_cfg *c = cfg.lookup(&zero);
    if (c && (c->flags & TA_CFG_SET)) {
        p4 = c->prefix_v4 > 32 ? 32 : c->prefix_v4;
        p6 = c->prefix_v6 > 128 ? 128 : c->prefix_v6;
    }
    key.ifindex = ifx;
    key.direction = dir;
    key.port_class = TA_CLASS_NONE;

    if (skb->protocol == bpf_htons(ETH_P_IP)) {
        struct ta_ip4 ip = {};
        if (bpf_skb_load_bytes(skb, l2, &ip, sizeof(ip)) == 0) {
            __u32 ihl = (ip.vihl & 0x0f) * 4;
            key.family = 4;
            key.plen = p4;
            proto = ip.protocol;
            key.dscp = ip.tos >> 2;
            key.addr[0] = mask_word(dir == 0 ? ip.saddr : ip.daddr, p4);
            hdrs = ihl;
            frag_later = (bpf_ntohs(ip.frag_off) & 0x1fff) != 0;
            if (ihl >= 20)
                l4 = l2 + ihl;
        }
    } else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
        struct ta_ip6 ip6 = {};
        if (bpf_skb_load_bytes(skb, l2, &ip6, sizeof(ip6)) == 0) {
            __u32 off = l2 + sizeof(ip6);
            __u8 nh = ip6.nexthdr;
            int i;
            key.family = 6;
            key.plen = p6;
            key.dscp = (bpf_ntohl(ip6.vtcfl) >> 22) & 0x3f;
#pragma unroll
            for (i = 0; i < 4; i++) {
                __u32 bits = p6 > 32 * i ? p6 - 32 * i : 0;
                key.addr[i] = mask_word(dir == 0 ? ip6.saddr[i] : ip6.daddr[i], bits);
            }
#pragma unroll
            for (i = 0; i < TA_MAX_EXT; i++) {
                __u8 h[4] = {};
                if (nh != 0 && nh != 43 && nh != 60 && nh != 44 && nh != 51)
                    break;                     // not hop-by-hop, routing, dest opts, fragment, AH
                if (bpf_skb_load_bytes(skb, off, h, 4) < 0) {
                    off = 0;
                    break;
                }
                if (nh == 44) {                // fragment header: 8 bytes, offset in h[2..3]
                    if (((h[2] << 8) | h[3]) & 0xfff8)
                        frag_later = 1;
                    off += 8;
                } else if (nh == 51) {         // AH: length in 4-byte units, minus 2
                    off += ((__u32)h[1] + 2) * 4;
                } else {
                    off += ((__u32)h[1] + 1) * 8;
                }
                nh = h[0];
            }
            proto = nh;
            if (off) {
                hdrs = off - l2;
                l4 = off;
            }
        }
    }
    key.proto = proto;

    if (l4 && !frag_later && ported(proto)) {
        __u8 p[4] = {};
        if (bpf_skb_load_bytes(skb, l4, p, 4) == 0) {
            __u8 a = class_of((p[0] << 8) | p[1]);
            __u8 b = class_of((p[2] << 8) | p[3]);
            key.port_class = a < b ? a : b;
            if (proto == 6) {
                __u8 doff = 0;
                if (bpf_skb_load_bytes(skb, l4 + 12, &doff, 1) == 0)
                    hdrs += (doff >> 4) * 4;
            } else if (proto == 132) {
                hdrs += 12;
            } else {
                hdrs += 8;
            }
        }
    }

    len = skb->len > l2 ? skb->len - l2 : 0;
    segs = skb->gso_segs;
    if (segs == 0)
        segs = 1;
    if (segs > 1 && key.family)
        len += (segs - 1) * hdrs;

    v = flows.lookup(&key);
    if (!v) {
        flows.update(&key, &zero_val);   // fails when the map is full
        v = flows.lookup(&key);
    }
    if (!v) {
        // TA_MAX_FLOWS as an instruction: the program's tag (the bpf engine's identity of a
        // program) then changes with the table size, so a new size is loaded, not ignored.
        __u64 cap = TA_MAX_FLOWS;
        asm volatile("" : "+r"(cap));
        v = overflow.lookup(&zero);
    }
    if (v) {
        v->packets += segs;
        v->bytes += len;
    }
}

#define TA_HOOKS(n)                                                  \
    int traffic_ingress_##n(struct __sk_buff *skb)                   \
    {                                                                \
        account(skb, 0);                                             \
        return TC_ACT_UNSPEC;                                        \
    }                                                                \
    int traffic_egress_##n(struct __sk_buff *skb)                    \
    {                                                                \
        account(skb, 1);                                             \
        return TC_ACT_UNSPEC;                                        \
    }

int traffic_ingress(struct __sk_buff *skb)
{
    account(skb, 0);
    return TC_ACT_UNSPEC;
}

int traffic_egress(struct __sk_buff *skb)
{
    account(skb, 1);
    return TC_ACT_UNSPEC;
}
