// SPDX-License-Identifier: GPL-2.0
// shm_redirect: transparent same-host path for TCP payload (netstack.tuning capability 4).
//
// Hooks:  cgroup sock_ops, function `shm_sockops`: marks established same-host connections
//         that match a policy; in capture mode "handshake" it adds both sockets to `socks`
//         there, keyed by its own 4-tuple and netns;
//         tc ingress on lo, function `shm_tc` (capture mode "segments"): adds a marked socket
//         to `socks` once both directions of its connection have carried `seg_count` data
//         segments, none large (above `seg_large`, or half that without PSH), and keeps a
//         connection with a large one on TCP for good (it never enters `socks`: plain TCP);
//         sk_msg verdict on `socks`, function `shm_msg`: moves each sendmsg payload straight
//         into the peer socket's receive queue (bpf_msg_redirect_hash, BPF_F_INGRESS).
// Maps (pinned by netstack.tuning.bpf_program under /sys/fs/bpf/netstack/<name>/maps/):
//   socks    SOCKHASH conn_key -> socket; the kernel drops an entry when its socket closes
//   policies ARRAY[2 * MAX_POLICIES] of struct policy, two sets (double buffer)
//   prefixes ARRAY[2 * MAX_PREFIXES] of struct prefix: addresses that count as this host
//   cfg      ARRAY[1] of struct config: active set, counts per set, flags
//   stats    PERCPU_ARRAY[MAX_POLICIES + 1] of struct stats; the last slot: no policy
//   conns    SK_STORAGE per socket: policy index, path state, the peer's socket
//   peers    HASH conn_key -> struct peer_ref: each captured socket's address and cookie,
//            from establishment to close (the peer's queue is read through it)
//   watch    HASH seg_key -> struct seg_val ("segments"): each marked socket's segment count
//            and decision, keyed by the tuple of the segments it receives, to close
//
// Why "segments": a socket in a sockhash sends through tcp_bpf_sendmsg even when its payload
// goes over TCP, and that is slower than TCP for bulk; taking a socket out of a sockhash can
// lose the bytes queued for it.  So connections that carry large segments are never put in.
// A socket is put in only from tc, while a data segment for it passes: a recvmsg that was
// already blocked in TCP's own recvmsg when it joined is woken by that very segment, and
// every later call goes through the sockhash's recvmsg, which reads both queues.
//
// Ordering rule (the bug that broke earlier sockmap accelerators): payload is never split
// between the peer's path queue and TCP while both hold unread bytes of one direction.
// The reader drains its path queue before TCP's (tcp_bpf_recvmsg), so a direction may
// leave the path for TCP at any message, and may come (back) onto the path only when
// every byte it sent over TCP has been acknowledged and read (own write_seq == snd_una,
// the peer's copied_seq == rcv_nxt).  Connections outside the policy are not touched.
//
// Bounded queue: a direction stays on the path while the peer's path queue holds less
// than its bound (policy max_queue, or the peer's SO_RCVBUF); past it, the direction goes
// to TCP, whose flow control then stops the sender as it always does, and comes back
// when TCP has drained and the path queue is down to half the bound (docs/shm_path.md).
// The default bound grows for a reader that reads, as TCP's receive autotuning grows
// SO_RCVBUF: reaching it after the reader had consumed half a bound since the last growth
// doubles it, up to the reader's namespace's tcp_rmem[2]; a reader that does not read
// keeps SO_RCVBUF.
//
// The kernel gives an sk_msg program no way to read another socket (a sockhash lookup
// returns a reference it cannot release: bpf_sk_release is not offered to sk_msg), so
// each socket records its own address at establishment (peers) and the program reads
// the peer with bpf_probe_read_kernel at offsets taken from the running kernel's BTF
// (shm.py kernel_cflags; -D OFF_*).  TCP sockets are SLAB_TYPESAFE_BY_RCU and the program
// runs under RCU, so a read never faults; the socket cookie read next to it tells a
// reused slot from the peer, and any doubt counts as "queue full".

#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/in.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/ipv6.h>
#include <uapi/linux/tcp.h>

#ifndef OFF_SK_USER_DATA
#error "build through netstack.tuning's shm.py: it passes the running kernel's offsets (-D OFF_*)"
#endif

#define MAX_POLICIES 16
#define MAX_PREFIXES 16
#define NS_AF_INET 2

// policy.flags
#define P_VALID  (1u << 0)
// config.flags
#define C_ENABLED (1u << 0)
#define C_SEGMENTS (1u << 1)  // capture mode "segments" (else "handshake")

// conn_state.state
#define S_PENDING 0         // no payload yet
#define S_SHM     1         // on the path
#define S_TCP     2         // on TCP; may come onto the path once TCP has drained
#define S_DONE    3         // on TCP for good: the peer left the sockhash (closed), or the
                            // connection carried a large segment (never entered the sockhash)
#define S_WATCH   4         // capture mode "segments": not in the sockhash yet, segments counted

#define SOCK_RCVBUF_LOCK 2  // sk_userlocks: the reader set SO_RCVBUF (TCP then never autotunes)

// low bits of sk_user_data are flags (SK_USER_DATA_NOCOPY, _BPF, _PSOCK)
#define USER_DATA_PTRMASK (~7ULL)

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
    __u32 max_queue;        // bytes a direction may hold queued at its reader; 0: SO_RCVBUF
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
    __u32 seg_count;        // "segments": data segments each direction carries before capture
    __u32 seg_large;        // "segments": a larger segment keeps its connection on TCP
    __u64 tc_netns;         // "segments": cookie of the namespace whose lo runs shm_tc (0: any)
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
    __u64 overflows;        // a direction left the path: its reader's queue was at the bound
    __u64 resumes;          // a direction came (back) onto the path after TCP drained
    __u64 grows;            // a reading reader's default bound doubled (receive autotuning)
    __u64 large_conns;      // "segments": connections kept on TCP for a large segment
};

struct conn_state {
    __u32 policy;
    __u32 state;
    __u32 max_queue;        // from the policy at capture; 0: the peer's SO_RCVBUF
    __u32 pending;          // list mode: bytes sent since the peer's queue was seen empty
    __u32 grown;            // default bound after growth (0: not grown, SO_RCVBUF applies)
    __u32 pad;
    __u64 sent;             // bytes this direction put on the path
    __u64 mark;             // bytes the reader had consumed at the last growth
    __u64 peer_sk;          // the peer's struct sock, from `peers` (0: not known yet)
    __u64 peer_cookie;
    __u64 netns;            // the socket's netns cookie: its key in `socks`
};

struct peer_ref {
    __u64 sk;
    __u64 cookie;
};

BPF_SOCKHASH(socks, struct conn_key, 65536);
BPF_ARRAY(policies, struct policy, 2 * MAX_POLICIES);
BPF_ARRAY(prefixes, struct prefix, 2 * MAX_PREFIXES);
BPF_ARRAY(cfg, struct config, 1);
BPF_PERCPU_ARRAY(stats, struct stats, MAX_POLICIES + 1);
BPF_SK_STORAGE(conns, struct conn_state);
BPF_PERCPU_ARRAY(scratch, __u32, 1);
BPF_F_TABLE("hash", struct conn_key, struct peer_ref, peers, 65536, BPF_F_NO_PREALLOC);

// "segments": what shm_tc knows of a watched socket, keyed as its incoming segments name it
// (source = the peer), so that a segment of any other connection costs one lookup that misses.
struct seg_key {
    __u32 saddr[4];         // network order, IPv4 as ::ffff:a.b.c.d
    __u32 daddr[4];
    __u16 sport;            // host order
    __u16 dport;
};

#define W_WATCH  0          // counting its data segments
#define W_JOINED 1          // in `socks`
#define W_DONE   2          // never joins: a large segment, or the insert failed

struct seg_val {
    __u32 segs;
    __u16 state;
    __u16 policy;
};
BPF_HASH(watch, struct seg_key, struct seg_val, 65536);

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

// The connection key of a context, with `l`/`r` naming which end is "local".
#define LOAD_KEY(k, ctx, l, r, lport_, rport_) do {                               \
        LOAD_ADDR((k).lip, ctx, l);                                               \
        LOAD_ADDR((k).rip, ctx, r);                                               \
        (k).lport = (lport_);                                                     \
        (k).rport = (rport_);                                                     \
        (k).netns = bpf_get_netns_cookie(ctx);                                    \
    } while (0)

// Counts a `socks` insert's result (0: in); a socket that could not go in stays on TCP.
static __always_inline int counted_insert(long rc, struct conn_state *cs, struct stats *st)
{
    if (rc == 0) {
        if (st)
            st->captured += 1;
        return 1;
    }
    cs->state = S_DONE;
    if (st)
        st->capture_errors += 1;
    return 0;
}

// The `watch` key of a socket from its conn_key: its incoming segments come from the peer.
#define SEG_KEY_OF(wk, k) do {                                                    \
        __builtin_memcpy((wk).saddr, (k).rip, 16);                                \
        __builtin_memcpy((wk).daddr, (k).lip, 16);                                \
        (wk).sport = (k).rport;                                                   \
        (wk).dport = (k).lport;                                                   \
    } while (0)

int shm_sockops(struct bpf_sock_ops *skops)
{
    __u32 op = skops->op;
    struct conn_key key = {};
    if (op == BPF_SOCK_OPS_STATE_CB) {
        // Set only on sockets this program captured: forget the address at close, before
        // the kernel frees the socket.
        if (skops->args[1] == BPF_TCP_CLOSE) {
            LOAD_KEY(key, skops, local, remote, skops->local_port & 0xffff,
                     bpf_ntohl(skops->remote_port) & 0xffff);
            peers.delete(&key);
            struct seg_key wk = {};
            SEG_KEY_OF(wk, key);
            watch.delete(&wk);
        }
        return 1;
    }
    if (op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB && op != BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB)
        return 1;

    LOAD_KEY(key, skops, local, remote, skops->local_port & 0xffff,
             bpf_ntohl(skops->remote_port) & 0xffff);

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
    __u32 pidx = (c->active_set & 1) * MAX_POLICIES + pol;
    struct policy *pp = policies.lookup(&pidx);

    struct bpf_sock *sk = skops->sk;
    if (!sk)
        return 1;
    struct conn_state *cs = conns.sk_storage_get(sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
    if (!cs)
        return 1;
    cs->policy = pol;
    cs->state = S_PENDING;
    cs->max_queue = pp ? pp->max_queue : 0;
    cs->pending = 0;
    cs->grown = 0;
    cs->pad = 0;
    cs->sent = 0;
    cs->mark = 0;
    cs->peer_sk = 0;
    cs->peer_cookie = 0;
    cs->netns = key.netns;
    struct peer_ref ref = {};
    ref.sk = (__u64)(long)sk;
    ref.cookie = bpf_get_socket_cookie(skops);
    if (c->flags & C_SEGMENTS) {
        // shm_tc puts the socket in later, or never; its address is needed from now on
        // and forgotten at close.  Only lo of tc_netns is watched: elsewhere, plain TCP.
        if (c->tc_netns && key.netns != c->tc_netns) {
            cs->state = S_DONE;
            return 1;
        }
        struct seg_key wk = {};
        struct seg_val wv = {};
        SEG_KEY_OF(wk, key);
        wv.policy = pol;
        long wr = watch.update(&wk, &wv);
        if (wr)
            return 1;           // `watch` full: plain TCP
        cs->state = S_WATCH;
        peers.update(&key, &ref);
        bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
        return 1;
    }
    // bcc rewrites map methods into statements: keep each call on a line of its own.
    long rc = socks.sock_hash_update(skops, &key, BPF_NOEXIST);
    if (counted_insert(rc, cs, st)) {
        peers.update(&key, &ref);
        bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
    }
    return 1;
}

// ------------------------------------------------------------------ capture mode "segments"

// One data segment of `len` payload bytes for a watched socket (`w`, found by the segment's
// `wk`; `pk` is its peer's key).  The socket joins `socks` when it and its peer have each
// received `seg_count` data segments, none large; a large one keeps both on TCP for good.
// The peer joins when a segment passes the other way.  Large: above `seg_large`, or at
// least half that without PSH, i.e. the first part of a longer write (TCP cuts a write at
// half the peer's largest window, 32 KiB early in a loopback connection: a 64 KiB write
// then arrives as two 32 KiB segments, PSH on the second).
static __always_inline void watch_segment(struct __sk_buff *skb, struct config *c, struct seg_val *w,
                                          struct seg_key *pk, struct bpf_sock_tuple *t, __u32 tlen,
                                          struct conn_key *key, __u32 len, __u32 psh)
{
    struct stats *st = stats_of(w->policy);
    struct seg_val *pw = watch.lookup(pk);
    if (len > c->seg_large || (!psh && len >= c->seg_large / 2)) {
        w->state = W_DONE;
        if (pw && pw->state == W_WATCH)
            pw->state = W_DONE;
        if (st)
            st->large_conns += 1;
        return;
    }
    if (w->segs < c->seg_count)
        w->segs += 1;
    if (w->segs < c->seg_count || !pw || pw->state == W_DONE ||
        (pw->state == W_WATCH && pw->segs < c->seg_count))
        return;
    // Join: the socket itself, for the insert (and its state, which the sk_msg program reads).
    w->state = W_DONE;
    struct bpf_sock *sk = bpf_sk_lookup_tcp(skb, t, tlen, BPF_F_CURRENT_NETNS, 0);
    if (!sk)
        return;
    struct conn_state *cs = conns.sk_storage_get(sk, 0, 0);
    if (cs && cs->state == S_WATCH) {
        key->netns = cs->netns;
        cs->state = S_PENDING;
        // bcc rewrites map methods into statements: keep each call on a line of its own.
        long rc = socks.update(key, (void *)sk);
        if (counted_insert(rc, cs, st))
            w->state = W_JOINED;
    }
    bpf_sk_release(sk);
}

// Every segment goes on unchanged (TC_ACT_UNSPEC: tc's later filters still see it).
int shm_tc(struct __sk_buff *skb)
{
    void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > end)
        return TC_ACT_UNSPEC;
    struct bpf_sock_tuple t = {};
    struct seg_key wk = {}, pk = {};
    struct tcphdr *th;
    __u32 tlen, hdr;
    if (eth->h_proto == bpf_htons(ETH_P_IP)) {
        struct iphdr *ip = (void *)(eth + 1);
        if ((void *)(ip + 1) > end || ip->protocol != IPPROTO_TCP)
            return TC_ACT_UNSPEC;
        __u32 ihl = ip->ihl * 4;
        if (ihl < sizeof(*ip))
            return TC_ACT_UNSPEC;
        th = (void *)ip + ihl;
        if ((void *)(th + 1) > end)
            return TC_ACT_UNSPEC;
        t.ipv4.saddr = ip->saddr;
        t.ipv4.daddr = ip->daddr;
        t.ipv4.sport = th->source;
        t.ipv4.dport = th->dest;
        v4mapped(wk.saddr, ip->saddr);
        v4mapped(wk.daddr, ip->daddr);
        tlen = sizeof(t.ipv4);
        hdr = sizeof(*eth) + ihl;
    } else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
        struct ipv6hdr *ip6 = (void *)(eth + 1);
        if ((void *)(ip6 + 1) > end || ip6->nexthdr != IPPROTO_TCP)
            return TC_ACT_UNSPEC;
        th = (void *)(ip6 + 1);
        if ((void *)(th + 1) > end)
            return TC_ACT_UNSPEC;
        __builtin_memcpy(t.ipv6.saddr, &ip6->saddr, 16);
        __builtin_memcpy(t.ipv6.daddr, &ip6->daddr, 16);
        t.ipv6.sport = th->source;
        t.ipv6.dport = th->dest;
        __builtin_memcpy(wk.saddr, &ip6->saddr, 16);
        __builtin_memcpy(wk.daddr, &ip6->daddr, 16);
        tlen = sizeof(t.ipv6);
        hdr = sizeof(*eth) + sizeof(*ip6);
    } else {
        return TC_ACT_UNSPEC;
    }
    hdr += th->doff * 4;
    if (skb->len <= hdr)
        return TC_ACT_UNSPEC;   // no payload: SYN, ACK, FIN
    wk.sport = bpf_ntohs(th->source);
    wk.dport = bpf_ntohs(th->dest);
    struct seg_val *w = watch.lookup(&wk);
    if (!w || w->state != W_WATCH)
        return TC_ACT_UNSPEC;   // not watched (other traffic), or decided
    __u32 zero = 0;
    struct config *c = cfg.lookup(&zero);
    if (!c || (c->flags & (C_ENABLED | C_SEGMENTS)) != (C_ENABLED | C_SEGMENTS))
        return TC_ACT_UNSPEC;
    __builtin_memcpy(pk.saddr, wk.daddr, 16);
    __builtin_memcpy(pk.daddr, wk.saddr, 16);
    pk.sport = wk.dport;
    pk.dport = wk.sport;
    struct conn_key key = {};
    __builtin_memcpy(key.lip, wk.daddr, 16);
    __builtin_memcpy(key.rip, wk.saddr, 16);
    key.lport = wk.dport;
    key.rport = wk.sport;
    watch_segment(skb, c, w, &pk, &t, tlen, &key, skb->len - hdr, th->psh);
    return TC_ACT_UNSPEC;
}

// ------------------------------------------------------------------ sk_msg

static __always_inline __u64 read_u64(__u64 addr)
{
    __u64 v = 0;
    if (bpf_probe_read_kernel(&v, sizeof(v), (void *)addr))
        return 0;
    return v;
}

static __always_inline __u32 read_u32(__u64 addr, __u32 fail)
{
    __u32 v = 0;
    if (bpf_probe_read_kernel(&v, sizeof(v), (void *)addr))
        return fail;
    return v;
}

// The peer's psock (its sockmap state), or 0 when the recorded address no longer holds the
// peer (cookie differs: the slot was reused) or holds no psock.
static __always_inline __u64 peer_psock(struct conn_state *cs)
{
    __u64 sk = cs->peer_sk;
    if (!sk || read_u64(sk + OFF_SK_COOKIE) != cs->peer_cookie)
        return 0;
    __u64 psock = read_u64(sk + OFF_SK_USER_DATA) & USER_DATA_PTRMASK;
    if (!psock || read_u64(psock + OFF_PSOCK_SK) != sk)
        return 0;
    return psock;
}

// Bytes queued on the path at the peer, or 0xffffffff when unknown.  With the kernel's
// counter (sk_psock.msg_tot_len, 6.13+ kernels) exact; without it an upper bound: the bytes
// this direction redirected since it last saw the peer's queue empty.
static __always_inline __u32 peer_queued(struct conn_state *cs, __u64 psock)
{
#ifdef OFF_PSOCK_MSG_TOT_LEN
    return read_u32(psock + OFF_PSOCK_MSG_TOT_LEN, 0xffffffff);
#else
    __u64 head = psock + OFF_PSOCK_INGRESS_MSG;
    if (read_u64(head) == head)
        cs->pending = 0;
    return cs->pending;
#endif
}

static __always_inline __u32 bound_of(struct conn_state *cs)
{
    if (cs->max_queue)
        return cs->max_queue;
    __u32 rcvbuf = read_u32(cs->peer_sk + OFF_SK_RCVBUF, 0);
    if (!(rcvbuf > 0 && rcvbuf < 0x7fffffff))
        return 0;
    return cs->grown > rcvbuf ? cs->grown : rcvbuf;
}

// The most the default bound may grow to: the reader's tcp_rmem[2], TCP's own ceiling for
// an autotuned receive buffer; 0 (no growth) for a policy's fixed max_queue, for a reader
// that set SO_RCVBUF itself (TCP does not autotune it either), or on a kernel whose layout
// was not found.
static __always_inline __u32 grow_limit(struct conn_state *cs)
{
#if defined(OFF_SK_NET) && defined(OFF_NET_TCP_RMEM) && defined(OFF_SK_USERLOCKS)
    if (cs->max_queue)
        return 0;
    __u8 locks = 0xff;
    bpf_probe_read_kernel(&locks, sizeof(locks), (void *)(cs->peer_sk + OFF_SK_USERLOCKS));
    if (locks & SOCK_RCVBUF_LOCK)
        return 0;
    __u64 net = read_u64(cs->peer_sk + OFF_SK_NET);
    if (!net)
        return 0;
    __u32 most = read_u32(net + OFF_NET_TCP_RMEM + 2 * sizeof(__u32), 0);
    return most < 0x7fffffff ? most : 0;
#else
    return 0;
#endif
}

// Everything this direction sent over TCP has been acknowledged and read by the peer, so
// bytes put on the path now are read after them.
static __always_inline int tcp_drained(struct sk_msg_md *msg, struct conn_state *cs)
{
    struct bpf_sock *s = msg->sk;
    if (!s)
        return 0;
    void *tp = bpf_skc_to_tcp_sock(s);
    if (!tp)
        return 0;
    __u32 write_seq = *(volatile __u32 *)(tp + OFF_TP_WRITE_SEQ);
    __u32 snd_una = *(volatile __u32 *)(tp + OFF_TP_SND_UNA);
    if (write_seq != snd_una)
        return 0;
    __u32 rcv_nxt = read_u32(cs->peer_sk + OFF_TP_RCV_NXT, 1);
    __u32 copied = read_u32(cs->peer_sk + OFF_TP_COPIED_SEQ, 0);
    return rcv_nxt == copied;
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
    __u32 state = cs->state;
    if (state == S_DONE)
        goto tcp;

    // The peer's key is this socket's key with the ends swapped.
    struct conn_key peer = {};
    LOAD_KEY(peer, msg, remote, local, bpf_ntohl(msg->remote_port) & 0xffff,
             msg->local_port & 0xffff);
    if (!cs->peer_sk) {
        struct peer_ref *ref = peers.lookup(&peer);
        if (ref) {
            cs->peer_sk = ref->sk;
            cs->peer_cookie = ref->cookie;
        }
    }
    __u64 psock = peer_psock(cs);
    __u32 bound = psock ? bound_of(cs) : 0;
    __u32 queued = psock ? peer_queued(cs, psock) : 0xffffffff;

    if (state == S_SHM) {
        if (!psock) {
            // The peer closed (its sockmap state is gone): TCP answers from now on.
            cs->state = S_DONE;
            goto tcp;
        }
        // One message always fits an empty queue; otherwise the bound holds.
        if (bound && (queued == 0 || (__u64)queued + size <= bound))
            goto redirect;
        // At the bound, with a reader that consumed half a bound since the last growth:
        // it reads, and its TCP receive buffer would have grown; double the bound (up to
        // the ceiling).  What the reader consumed: what this direction sent minus what is
        // queued (without msg_tot_len, `queued` is an upper bound: this undercounts).
        __u64 consumed = cs->sent > queued ? cs->sent - queued : 0;
        __u32 most = bound && consumed >= cs->mark + bound / 2 ? grow_limit(cs) : 0;
        if (bound < most) {
            __u64 more = (__u64)bound * 2;
            cs->grown = more < most ? more : most;
            cs->mark = consumed;
            if (st)
                st->grows += 1;
            if ((__u64)queued + size <= cs->grown)
                goto redirect;
        }
        cs->state = S_TCP;
        if (st)
            st->overflows += 1;
        goto tcp;
    }
    // PENDING or TCP: onto the path only when the peer's queue is below half its bound and
    // TCP holds no unread byte of this direction.
    if (bound && queued <= bound / 2 && tcp_drained(msg, cs))
        goto redirect;
    if (state == S_PENDING) {
        cs->state = S_TCP;
        if (st)
            st->tcp_conns += 1;
    }
    goto tcp;

redirect:;
    // A closed peer has left `socks` (the kernel unlinks it on close), so this fails
    // and the rest goes over TCP, which answers with RST/EPIPE as usual.
    long verdict = socks.msg_redirect_hash(msg, &peer, BPF_F_INGRESS);
    if (verdict != SK_PASS) {
        cs->state = S_DONE;
        if (st && state == S_PENDING)
            st->tcp_conns += 1;
        goto tcp;
    }
    if (state != S_SHM) {
        cs->state = S_SHM;
        if (st) {
            if (state == S_PENDING)
                st->shm_conns += 1;
            else
                st->resumes += 1;
        }
    }
#ifndef OFF_PSOCK_MSG_TOT_LEN
    cs->pending += size;
#endif
    cs->sent += size;
    if (st) {
        st->shm_msgs += 1;
        st->shm_bytes += size;
    }
    return SK_PASS;

tcp:
    if (st) {
        st->tcp_msgs += 1;
        st->tcp_bytes += size;
    }
    return SK_PASS;
}
