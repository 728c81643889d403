// Test program the verifier must reject: a map value is used without a NULL check.
#include <uapi/linux/bpf.h>

BPF_ARRAY(vals, __u64, 4);

int bad(struct bpf_sock_ops *skops)
{
    __u32 k = skops->op & 3;
    __u64 *v = vals.lookup(&k);
    return (int)(*v & 1);
}
