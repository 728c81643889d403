// SPDX-License-Identifier: GPL-2.0
// tcp_tuner: per-connection TCP tuning from declarative rules (netstack.tuning capability 3).
//
// Hooks:  cgroup sock_ops (BPF_PROG_TYPE_SOCK_OPS), function `tcp_tuner`.
// Maps (pinned by netstack.tuning.bpf_program under /sys/fs/bpf/netstack/<name>/maps/):
//   rules    ARRAY[2 * MAX_RULES] of struct rule, two rule sets (double buffer); the
//            userspace writer (tcp_policy) fills the inactive set, then flips cfg.active_set
//   cfg      ARRAY[1] of struct config: active set, rule count per set, long-flow threshold
//   hits     PERCPU_ARRAY[2 * MAX_RULES] of struct rule_stats: per-rule hits / setsockopt errors
//   peers    LRU_HASH peer address -> struct peer_state: active flows, long flows, bytes
//   flows    SK_STORAGE per socket: matched rule, long/short classification
//   scratch  PERCPU_ARRAY[1]: verifier aid (see match())
//
// Uses only UAPI context (struct bpf_sock_ops), so it compiles against any recent headers.
// Rule matching (first match wins): remote prefix (IPv4 kept as ::ffff:a.b.c.d), remote and
// local port ranges, and flow conditions on the peer ("more than N long flows to this peer").
// Actions: congestion control, initial cwnd, RTO min, delayed-ACK max, SO_SNDBUF/SO_RCVBUF,
// cwnd clamp, TCP_NOTSENT_LOWAT, SYN RTO.  A flow is "long" once bytes_acked reaches
// cfg.long_bytes (checked from RTT callbacks, which are switched off once it is long).

#include <uapi/linux/bpf.h>
#include <uapi/linux/tcp.h>
#include <uapi/linux/in.h>
#include <uapi/linux/in6.h>

#define MAX_RULES 32
#define CC_LEN 16

#ifndef SOL_SOCKET
#define SOL_SOCKET 1
#endif
#ifndef SO_SNDBUF
#define SO_SNDBUF 7
#endif
#ifndef SO_RCVBUF
#define SO_RCVBUF 8
#endif
#ifndef SOL_TCP
#define SOL_TCP 6
#endif
#define NS_AF_INET 2
#define NS_AF_INET6 10

// rule.flags
#define R_VALID      (1u << 0)
#define R_CC         (1u << 1)
#define R_IW         (1u << 2)
#define R_RTO_MIN    (1u << 3)
#define R_DELACK     (1u << 4)
#define R_SNDBUF     (1u << 5)
#define R_RCVBUF     (1u << 6)
#define R_CLAMP      (1u << 7)
#define R_LOWAT      (1u << 8)
#define R_SYN_RTO    (1u << 9)
#define R_FLOWCOND   (1u << 10)

// config.flags
#define C_TRACK      (1u << 0)

// flow_state.flags
#define F_COUNTED    (1u << 0)
#define F_LONG       (1u << 1)
#define F_MATCHED    (1u << 2)

struct rule {
    __u32 flags;
    __u32 addr[4];          // network order, IPv4 as ::ffff:a.b.c.d
    __u32 mask[4];
    __u16 rport_lo, rport_hi, lport_lo, lport_hi;
    __u32 min_active;       // match only when active flows to the peer >= min_active
    __u32 min_long;         // match only when long flows to the peer >= min_long
    __u32 init_cwnd;
    __u32 rto_min_us;
    __u32 delack_max_us;
    __u32 sndbuf;
    __u32 rcvbuf;
    __u32 cwnd_clamp;
    __u32 notsent_lowat;
    __u32 syn_rto_jiffies;
    char cc[CC_LEN];
};

struct config {
    __u32 active_set;
    __u32 nrules[2];
    __u32 flags;
    __u64 long_bytes;
};

struct rule_stats {
    __u64 hits;
    __u64 errors;
};

struct peer_key {
    __u32 addr[4];
};

struct peer_state {
    __u32 active;
    __u32 long_flows;
    __u64 bytes;
    __u64 flows;
};

struct flow_state {
    __u32 flags;
    __u32 rule;             // index in the rules map + 1 (0: none)
    struct peer_key peer;
};

BPF_ARRAY(rules, struct rule, 64);
BPF_ARRAY(cfg, struct config, 1);
BPF_PERCPU_ARRAY(hits, struct rule_stats, 64);
BPF_TABLE("lru_hash", struct peer_key, struct peer_state, peers, 4096);
BPF_SK_STORAGE(flows, struct flow_state);
BPF_PERCPU_ARRAY(scratch, __u32, 1);

static __always_inline void peer_of(struct bpf_sock_ops *skops, struct peer_key *p)
{
    // Read every context field unconditionally: the verifier rejects a context pointer
    // that the compiler has offset, which branch-dependent reads tend to produce.
    __u32 family = skops->family;
    __u32 ip4 = skops->remote_ip4;
    __u32 a0 = skops->remote_ip6[0];
    __u32 a1 = skops->remote_ip6[1];
    __u32 a2 = skops->remote_ip6[2];
    __u32 a3 = skops->remote_ip6[3];
    asm volatile("" : "+r"(ip4), "+r"(a0), "+r"(a1), "+r"(a2), "+r"(a3));
    if (family == NS_AF_INET) {
        a0 = 0;
        a1 = 0;
        a2 = bpf_htonl(0x0000ffff);
        a3 = ip4;
    }
    p->addr[0] = a0;
    p->addr[1] = a1;
    p->addr[2] = a2;
    p->addr[3] = a3;
}

// One rule: sets *found to its index + 1 when it matches.  Written out MAX_RULES times
// by hand (RULES32 below): this bcc has no bpf_loop callbacks, and clang rewrites a
// counted loop into a form whose bound the verifier cannot see.
static __always_inline void match_one(__u32 idx, struct peer_key *p, __u32 rport, __u32 lport,
                                      __u32 active, __u32 longf, __u32 *found)
{
    struct rule *r = rules.lookup(&idx);
    if (!r || !(r->flags & R_VALID))
        return;
    if (((p->addr[0] & r->mask[0]) ^ r->addr[0]) | ((p->addr[1] & r->mask[1]) ^ r->addr[1]) |
        ((p->addr[2] & r->mask[2]) ^ r->addr[2]) | ((p->addr[3] & r->mask[3]) ^ r->addr[3]))
        return;
    if ((__u32)(rport - r->rport_lo) > (__u32)(r->rport_hi - r->rport_lo) ||
        (__u32)(lport - r->lport_lo) > (__u32)(r->lport_hi - r->lport_lo))
        return;
    if (active < r->min_active || longf < r->min_long)
        return;
    *found = idx + 1;
}

#define STEP(i) if (!found && (i) < n) match_one(base + (i), p, rport, lport, active, longf, &found);
#define RULES8(b) STEP(b) STEP(b + 1) STEP(b + 2) STEP(b + 3) STEP(b + 4) STEP(b + 5) STEP(b + 6) STEP(b + 7)

// Index (into `rules`) of the first matching rule + 1, or 0.
static __always_inline __u32 match(struct bpf_sock_ops *skops, struct config *c, struct peer_key *p)
{
    __u32 set = c->active_set & 1;
    __u32 base = set * MAX_RULES;
    __u32 n = c->nrules[set];
    __u32 rport = bpf_ntohl(skops->remote_port) & 0xffff;
    __u32 lport = skops->local_port & 0xffff;
    __u32 active = 0, longf = 0, found = 0, zero = 0;

    if (c->flags & C_TRACK) {
        struct peer_state *ps = peers.lookup(p);
        if (ps) {
            active = ps->active;
            longf = ps->long_flows;
        }
    }
    RULES8(0) RULES8(8) RULES8(16) RULES8(24)
    // Pass the result through a map value: the verifier then treats it as one unknown
    // scalar instead of walking the rest of the program once per possible rule index.
    __u32 *slot = scratch.lookup(&zero);
    if (!slot)
        return 0;
    *slot = found;
    return *(volatile __u32 *)slot;
}

static __always_inline void count(__u32 idx, int errors)
{
    struct rule_stats *s = hits.lookup(&idx);
    if (s) {
        s->hits += 1;
        s->errors += errors;
    }
}

// Options that must be set before the SYN (buffers decide the window scale) or that are
// fine to set early (congestion control: no reinit later).
static __always_inline int apply_early(struct bpf_sock_ops *skops, struct rule *r)
{
    int err = 0, v;
    if (r->flags & R_CC) {
        char cc[CC_LEN];
        __builtin_memcpy(cc, r->cc, CC_LEN);
        cc[CC_LEN - 1] = 0;
        if (bpf_setsockopt(skops, SOL_TCP, TCP_CONGESTION, cc, sizeof(cc)))
            err++;
    }
    if (r->flags & R_SNDBUF) {
        v = r->sndbuf;
        if (bpf_setsockopt(skops, SOL_SOCKET, SO_SNDBUF, &v, sizeof(v)))
            err++;
    }
    if (r->flags & R_RCVBUF) {
        v = r->rcvbuf;
        if (bpf_setsockopt(skops, SOL_SOCKET, SO_RCVBUF, &v, sizeof(v)))
            err++;
    }
    return err;
}

// Options that act on the established connection.
static __always_inline int apply_late(struct bpf_sock_ops *skops, struct rule *r)
{
    int err = 0, v;
    if (r->flags & R_IW) {
        v = r->init_cwnd;
        if (bpf_setsockopt(skops, SOL_TCP, TCP_BPF_IW, &v, sizeof(v)))
            err++;
    }
    if (r->flags & R_CLAMP) {
        v = r->cwnd_clamp;
        if (bpf_setsockopt(skops, SOL_TCP, TCP_BPF_SNDCWND_CLAMP, &v, sizeof(v)))
            err++;
    }
    if (r->flags & R_RTO_MIN) {
        v = r->rto_min_us;
        if (bpf_setsockopt(skops, SOL_TCP, TCP_BPF_RTO_MIN, &v, sizeof(v)))
            err++;
    }
    if (r->flags & R_DELACK) {
        v = r->delack_max_us;
        if (bpf_setsockopt(skops, SOL_TCP, TCP_BPF_DELACK_MAX, &v, sizeof(v)))
            err++;
    }
    if (r->flags & R_LOWAT) {
        v = r->notsent_lowat;
        if (bpf_setsockopt(skops, SOL_TCP, TCP_NOTSENT_LOWAT, &v, sizeof(v)))
            err++;
    }
    return err;
}

static __always_inline void track_open(struct bpf_sock_ops *skops, struct flow_state *fs, struct config *c)
{
    struct peer_state zero = {}, *ps;
    if (!(c->flags & C_TRACK) || (fs->flags & F_COUNTED))
        return;
    ps = peers.lookup_or_try_init(&fs->peer, &zero);
    if (!ps)
        return;
    __sync_fetch_and_add(&ps->active, 1);
    __sync_fetch_and_add(&ps->flows, 1);
    fs->flags |= F_COUNTED;
    bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags |
                              BPF_SOCK_OPS_STATE_CB_FLAG | BPF_SOCK_OPS_RTT_CB_FLAG);
}

static __always_inline int flow_event(struct bpf_sock_ops *skops, struct config *c)
{
    __u32 op = skops->op;
    struct flow_state *fs = NULL;
    struct peer_key p = {};
    struct rule *r = NULL;
    struct bpf_sock *sk = skops->sk;
    __u32 idx, k = 0;
    int err = 0;

    if (sk) {
        // TIMEOUT_INIT on the passive side runs on a request socket: no storage there.
        fs = flows.sk_storage_get(sk, 0, op == BPF_SOCK_OPS_TIMEOUT_INIT ? 0 : BPF_SK_STORAGE_GET_F_CREATE);
    }
    if (fs && (fs->flags & F_MATCHED)) {
        idx = fs->rule;
    } else {
        // The one place rules are matched: the verifier walks this loop once.
        peer_of(skops, &p);
        idx = match(skops, c, &p);
        if (fs) {
            fs->peer = p;
            fs->rule = idx;
            fs->flags |= F_MATCHED;
            if (idx && op != BPF_SOCK_OPS_TIMEOUT_INIT) {
                // First sight of this connection: TCP_CONNECT_CB (active) or
                // PASSIVE_ESTABLISHED_CB; count the hit once and set the early options.
                k = idx - 1;
                r = rules.lookup(&k);
                if (r) {
                    err += apply_early(skops, r);
                    count(k, 0);
                }
            }
        }
    }
    if (idx) {
        k = idx - 1;
        r = rules.lookup(&k);
    }
    if (op == BPF_SOCK_OPS_TIMEOUT_INIT) {
        skops->reply = (r && (r->flags & R_SYN_RTO)) ? (int)r->syn_rto_jiffies : -1;
        return 1;
    }
    if (op == BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB || op == BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB) {
        if (r)
            err += apply_late(skops, r);
        if (fs)
            track_open(skops, fs, c);
    }
    if (err && r) {
        struct rule_stats *st = hits.lookup(&k);
        if (st)
            st->errors += err;
    }
    return 1;
}

int tcp_tuner(struct bpf_sock_ops *skops)
{
    __u32 zero = 0, op = skops->op;
    struct config *c;
    struct flow_state *fs;
    struct peer_state *ps;
    struct bpf_sock *sk;

    if (skops->family != NS_AF_INET && skops->family != NS_AF_INET6)
        return 1;
    c = cfg.lookup(&zero);
    if (!c)
        return 1;

    switch (op) {
    case BPF_SOCK_OPS_TIMEOUT_INIT:
    case BPF_SOCK_OPS_TCP_CONNECT_CB:
    case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
    case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
        return flow_event(skops, c);
    case BPF_SOCK_OPS_RTT_CB:
        sk = skops->sk;
        if (!sk)
            return 1;
        fs = flows.sk_storage_get(sk, 0, 0);
        if (!fs || (fs->flags & F_LONG) || !(fs->flags & F_COUNTED))
            return 1;
        if (skops->bytes_acked < c->long_bytes)
            return 1;
        fs->flags |= F_LONG;
        ps = peers.lookup(&fs->peer);
        if (ps)
            __sync_fetch_and_add(&ps->long_flows, 1);
        bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags & ~BPF_SOCK_OPS_RTT_CB_FLAG);
        return 1;
    case BPF_SOCK_OPS_STATE_CB:
        if (skops->args[1] != BPF_TCP_CLOSE)
            return 1;
        sk = skops->sk;
        if (!sk)
            return 1;
        fs = flows.sk_storage_get(sk, 0, 0);
        if (!fs || !(fs->flags & F_COUNTED))
            return 1;
        ps = peers.lookup(&fs->peer);
        if (ps) {
            __sync_fetch_and_add(&ps->active, -1);
            if (fs->flags & F_LONG)
                __sync_fetch_and_add(&ps->long_flows, -1);
            __sync_fetch_and_add(&ps->bytes, skops->bytes_acked);
        }
        fs->flags &= ~(F_COUNTED | F_LONG);
        return 1;
    }
    return 1;
}
