// Test program: counts sock_ops callbacks per op into `ops` (VARIANT changes the code,
// hence the tag, so a re-apply with -DVARIANT=1 is a real replacement).
#include <uapi/linux/bpf.h>

BPF_ARRAY(ops, __u64, 32);

int count_ops(struct bpf_sock_ops *skops)
{
    __u32 op = skops->op & 31;
    __u64 *v = ops.lookup(&op);
    if (v)
        __sync_fetch_and_add(v, 1);
#ifdef VARIANT
    op = (op + VARIANT) & 31;
    v = ops.lookup(&op);
    if (v)
        __sync_fetch_and_add(v, 0);
#endif
    return 1;
}
