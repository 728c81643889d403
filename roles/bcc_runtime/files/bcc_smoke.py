"""Compile and load a trivial sockops program with bcc: proves the headers and toolchain work.

On success prints {"ok": true, "proven": {kernel, bcc_version, build}}: what the proof
holds for, which the role records for files/bcc_ready.py to compare against later.
"""
import json
import os
import sys

import bcc
from bcc import BPF

PROG = r"""
#include <uapi/linux/bpf.h>
int smoke(struct bpf_sock_ops *skops) { return 1; }
"""
try:
    b = BPF(text=PROG)
    fn = b.load_func("smoke", BPF.SOCK_OPS)
    kernel = os.uname().release
    print(json.dumps({"ok": True, "fd": fn.fd, "proven": {
        "kernel": kernel,
        "bcc_version": getattr(bcc, "__version__", "unknown"),
        "build": os.path.realpath("/lib/modules/%s/build" % kernel)}}))
except Exception as e:  # report any compile/load error as data
    print(json.dumps({"ok": False, "error": str(e)}))
    sys.exit(1)
