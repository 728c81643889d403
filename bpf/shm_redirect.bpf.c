// SPDX-License-Identifier: GPL-2.0
// shm_redirect: transparent same-host path for TCP payload (netstack.tuning capability 4).
//
// Hooks:  cgroup sock_ops, function `shm_sockops`: adds established same-host connections
//         that match a policy to `socks`, keyed by its own 4-tuple and netns;
//         sk_msg verdict on `socks`, function `shm_msg`: moves each sendmsg payload straight
//         into the peer socket's receive queue (bpf_msg_redirect_hash, BPF_F_INGRESS).
// Maps (pinned by netstack.tuning.bpf_program under /sys/fs/bpf/netstack/<name>/maps/):
//   socks    SOCKHASH conn_key -> socket; the kernel drops an entry when its socket closes
//   policies ARRAY[2 * MAX_POLICIES] of struct policy, two sets (double buffer)
//   prefixes ARRAY[2 * MAX_PREFIXES] of struct prefix: addresses that count as this host
//   cfg      ARRAY[1] of struct config: active set, counts per set, flags
//   stats    PERCPU_ARRAY[MAX_POLICIES + 1] of struct stats; the last slot: no policy
//   conns    SK_STORAGE per socket: policy index and path state
//
// Ordering rule (the bug that broke earlier sockmap accelerators): a direction of a
// connection uses one path for its whole life.  It starts PENDING; the first payload that
// finds the peer in `socks` fixes it to SHM, the first that does not fixes it to TCP.  A SHM
// direction whose peer has left the map (peer closed) falls back to TCP for good.  Payload
// is never split between the peer's ingress queue and TCP while both are live, so bytes
// arrive in order.  Connections outside the policy are not touched at all.
//
// Uses only UAPI context (struct bpf_sock_ops, struct sk_msg_md).

#include <uapi/linux/bpf.h>

#define MAX_POLICIES 16
#define MAX_PREFIXES 16
#define NS_AF_INET 2

// policy.flags
#define P_VALID  (1u << 0)
// config.flags
#define C_ENABLED (1u << 0)

// conn_state.state
#define S_PENDING 0
#define S_SHM     1
#define S_TCP     2

struct conn_key {
    __u32 lip[4];           // network order, IPv4 as ::ffff:a.b.c.d
    __u32 rip[4];
    __u32 lport;            // host order
    __u32 rport;            // host order
    __u64 netns;            // netns cookie: both ends of a pair live in one namespace
};

struct policy {
    __u32 flags;
    __u16 port_lo, port_hi; // service (listening) ports
};

struct prefix {
    __u32 addr[4];
    __u32 mask[4];
};

struct config {
    __u32 active_set;
    __u32 npolicies[2];
    __u32 nprefixes[2];
    __u32 flags;
};

struct stats {
    __u64 captured;         // sockets added to `socks`
    __u64 capture_errors;   // sock_hash_update failed (map full, ...)
    __u64 shm_conns;        // directions that took the shared path
    __u64 tcp_conns;        // directions that stayed on TCP (no peer in the map)
    __u64 shm_msgs;
    __u64 shm_bytes;        // payload moved socket-to-socket
    __u64 tcp_msgs;
    __u64 tcp_bytes;        // payload of captured sockets sent over TCP
};

struct conn_state {
    __u32 policy;
    __u32 state;
};

BPF_SOCKHASH(socks, struct conn_key, 65536);
BPF_ARRAY(policies, struct policy, 2 * MAX_POLICIES);
BPF_ARRAY(prefixes, struct prefix, 2 * MAX_PREFIXES);
BPF_ARRAY(cfg, struct config, 1);
BPF_PERCPU_ARRAY(stats, struct stats, MAX_POLICIES + 1);
BPF_SK_STORAGE(conns, struct conn_state);
BPF_PERCPU_ARRAY(scratch, __u32, 1);

static __always_inline void v4mapped(__u32 *a, __u32 ip4)
{
    a[0] = 0;
    a[1] = 0;
    a[2] = bpf_htonl(0x0000ffff);
    a[3] = ip4;
}

// One end's address of a context (struct bpf_sock_ops and struct sk_msg_md use the same
// field names), IPv4 as ::ffff:a.b.c.d.  Every field is read before the branch: the verifier
// rejects the offset context pointers that branch-dependent reads tend to produce, and the
// empty asm keeps the compiler from sinking the loads into the branches.
#define LOAD_ADDR(dst, ctx, end) do {                                             \
        __u32 fam_ = (ctx)->family, v4_ = (ctx)->end##_ip4;                      \
        __u32 a0_ = (ctx)->end##_ip6[0], a1_ = (ctx)->end##_ip6[1];               \
        __u32 a2_ = (ctx)->end##_ip6[2], a3_ = (ctx)->end##_ip6[3];               \
        asm volatile("" : "+r"(v4_), "+r"(a0_), "+r"(a1_), "+r"(a2_), "+r"(a3_)); \
        if (fam_ == NS_AF_INET) {                                                 \
            v4mapped(dst, v4_);                                                   \
        } else {                                                                  \
            (dst)[0] = a0_; (dst)[1] = a1_; (dst)[2] = a2_; (dst)[3] = a3_;       \
        }                                                                         \
    } while (0)

static __always_inline int in_prefix(__u32 idx, __u32 *a)
{
    struct prefix *p = prefixes.lookup(&idx);
    if (!p)
        return 0;
    return !(((a[0] & p->mask[0]) ^ p->addr[0]) | ((a[1] & p->mask[1]) ^ p->addr[1]) |
             ((a[2] & p->mask[2]) ^ p->addr[2]) | ((a[3] & p->mask[3]) ^ p->addr[3]));
}

#define PSTEP(i) if (!hit && (i) < n && in_prefix(base + (i), a)) hit = 1;
#define PREFIXES8(b) PSTEP(b) PSTEP(b + 1) PSTEP(b + 2) PSTEP(b + 3) PSTEP(b + 4) PSTEP(b + 5) \
                     PSTEP(b + 6) PSTEP(b + 7)

static __always_inline int local_addr(struct config *c, __u32 *a)
{
    __u32 set = c->active_set & 1;
    __u32 base = set * MAX_PREFIXES;
    __u32 n = c->nprefixes[set];
    int hit = 0;
    PREFIXES8(0) PREFIXES8(8)
    return hit;
}

static __always_inline void match_one(__u32 idx, __u32 port, __u32 *found)
{
    struct policy *p = policies.lookup(&idx);
    if (!p || !(p->flags & P_VALID))
        return;
    if ((__u32)(port - p->port_lo) <= (__u32)(p->port_hi - p->port_lo))
        *found = idx + 1;
}

#define STEP(i) if (!found && (i) < n) match_one(base + (i), port, &found);
#define POLICIES8(b) STEP(b) STEP(b + 1) STEP(b + 2) STEP(b + 3) STEP(b + 4) STEP(b + 5) \
                     STEP(b + 6) STEP(b + 7)

// Slot (0..MAX_POLICIES-1) of the first policy whose ports hold the service port + 1, or 0.
static __always_inline __u32 match(struct config *c, __u32 port)
{
    __u32 set = c->active_set & 1;
    __u32 base = set * MAX_POLICIES;
    __u32 n = c->npolicies[set];
    __u32 found = 0, zero = 0;
    POLICIES8(0) POLICIES8(8)
    if (found)
        found -= base;
    // Through a map value: the verifier then sees one unknown scalar, not one path per slot.
    __u32 *slot = scratch.lookup(&zero);
    if (!slot)
        return 0;
    *slot = found;
    return *(volatile __u32 *)slot;
}

static __always_inline struct stats *stats_of(__u32 policy)
{
    __u32 idx = policy < MAX_POLICIES ? policy : MAX_POLICIES;
    return stats.lookup(&idx);
}

int shm_sockops(struct bpf_sock_ops *skops)
{
    __u32 op = skops->op;
    if (op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB && op != BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB)
        return 1;

    struct conn_key key = {};
    LOAD_ADDR(key.lip, skops, local);
    LOAD_ADDR(key.rip, skops, remote);
    key.lport = skops->local_port & 0xffff;
    key.rport = bpf_ntohl(skops->remote_port) & 0xffff;
    key.netns = bpf_get_netns_cookie(skops);

    __u32 zero = 0;
    struct config *c = cfg.lookup(&zero);
    if (!c || !(c->flags & C_ENABLED))
        return 1;
    // Both ends must be addresses of this host: anything else has no peer socket here.
    if (!local_addr(c, key.lip) || !local_addr(c, key.rip))
        return 1;
    // The service port: ours when we accepted, the peer's when we connected (matching
    // either end would also catch clients whose ephemeral port happens to be in range).
    __u32 pol = match(c, op == BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB ? key.lport : key.rport);
    if (!pol)
        return 1;
    pol -= 1;
    struct stats *st = stats_of(pol);

    struct bpf_sock *sk = skops->sk;
    if (!sk)
        return 1;
    struct conn_state *cs = conns.sk_storage_get(sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
    if (!cs)
        return 1;
    cs->policy = pol;
    cs->state = S_PENDING;
    // bcc rewrites map methods into statements: keep each call on a line of its own.
    long rc = socks.sock_hash_update(skops, &key, BPF_NOEXIST);
    if (rc == 0) {
        if (st)
            st->captured += 1;
    } else {
        cs->state = S_TCP;
        if (st)
            st->capture_errors += 1;
    }
    return 1;
}

int shm_msg(struct sk_msg_md *msg)
{
    struct bpf_sock *sk = msg->sk;
    if (!sk)
        return SK_PASS;
    struct conn_state *cs = conns.sk_storage_get(sk, 0, 0);
    if (!cs)
        return SK_PASS;
    __u32 size = msg->size;
    struct stats *st = stats_of(cs->policy);
    // Only ESTABLISHED (1) and CLOSE_WAIT (8) may send.  After shutdown(SHUT_WR) TCP must
    // answer the write itself (EPIPE); the redirect path would deliver bytes after EOF.
    __u32 tcpstate = sk->state;
    if (tcpstate != 1 && tcpstate != 8)
        return SK_PASS;

    if (cs->state != S_TCP) {
        // The peer's key is this socket's key with the ends swapped.
        struct conn_key peer = {};
        LOAD_ADDR(peer.lip, msg, remote);
        LOAD_ADDR(peer.rip, msg, local);
        peer.lport = bpf_ntohl(msg->remote_port) & 0xffff;
        peer.rport = msg->local_port & 0xffff;
        peer.netns = bpf_get_netns_cookie(msg);
        // A closed peer has left `socks` (the kernel unlinks it on close), so this fails
        // and the rest goes over TCP, which answers with RST/EPIPE as usual.
        long verdict = socks.msg_redirect_hash(msg, &peer, BPF_F_INGRESS);
        if (verdict == SK_PASS) {
            if (cs->state == S_PENDING) {
                cs->state = S_SHM;
                if (st)
                    st->shm_conns += 1;
            }
            if (st) {
                st->shm_msgs += 1;
                st->shm_bytes += size;
            }
            return SK_PASS;
        }
        // No peer: fall back to TCP for the rest of this direction's life.
        cs->state = S_TCP;
        if (st)
            st->tcp_conns += 1;
    }
    if (st) {
        st->tcp_msgs += 1;
        st->tcp_bytes += size;
    }
    return SK_PASS;
}
