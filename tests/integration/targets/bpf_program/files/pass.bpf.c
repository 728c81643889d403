// Test tc program: counts packets, passes them all.
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>

BPF_ARRAY(pkts, __u64, 1);

int pass(struct __sk_buff *skb)
{
    __u32 k = 0;
    __u64 *v = pkts.lookup(&k);
    if (v)
        __sync_fetch_and_add(v, 1);
    return TC_ACT_OK;
}
