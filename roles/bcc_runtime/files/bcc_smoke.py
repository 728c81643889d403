"""Compile and load a trivial sockops program with bcc: proves the headers and toolchain work."""
import json
import sys

from bcc import BPF

PROG = r"""
#include <uapi/linux/bpf.h>
int smoke(struct bpf_sock_ops *skops) { return 1; }
"""
try:
    b = BPF(text=PROG)
    fn = b.load_func("smoke", BPF.SOCK_OPS)
    print(json.dumps({"ok": True, "fd": fn.fd}))
except Exception as e:  # report any compile/load error as data
    print(json.dumps({"ok": False, "error": str(e)}))
    sys.exit(1)
