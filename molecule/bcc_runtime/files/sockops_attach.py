#!/usr/bin/python3
"""Prove bcc works end to end in the guest: compile a trivial sockops program against the
installed kernel headers, load it, attach it to a scratch cgroup v2, open one TCP
connection on loopback from inside that cgroup and read back from a map that the program
ran for it; then detach it and remove the cgroup.

Prints one JSON object; exit status 0 only when the program saw the connection.
Run by molecule/bcc_runtime/verify.yml with the guest's /usr/bin/python3.
"""
import json
import os
import socket
import sys

from bcc import BPF, BPFAttachType

PROG = r"""
#include <uapi/linux/bpf.h>

/* hits[op]: how often the program ran per sockops callback (BPF_SOCK_OPS_*). */
BPF_ARRAY(hits, u64, 16);

int count_sockops(struct bpf_sock_ops *skops)
{
    u32 op = skops->op;
    u64 *n = hits.lookup(&op);
    if (n)
        __sync_fetch_and_add(n, 1);
    return 1;
}
"""

# From include/uapi/linux/bpf.h
OPS = {3: "TCP_CONNECT_CB", 4: "ACTIVE_ESTABLISHED_CB", 5: "PASSIVE_ESTABLISHED_CB"}
CGROUP_ROOT = "/sys/fs/cgroup"


def own_cgroup():
    with open("/proc/self/cgroup") as f:
        for line in f:
            if line.startswith("0::"):
                return CGROUP_ROOT + line.strip()[3:]
    raise RuntimeError("no cgroup v2 membership in /proc/self/cgroup")


def move_to(cgroup):
    with open(os.path.join(cgroup, "cgroup.procs"), "w") as f:
        f.write(str(os.getpid()))


def one_connection():
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    cli = socket.create_connection(srv.getsockname(), timeout=10)
    conn, _ = srv.accept()
    cli.sendall(b"ping")
    got = conn.recv(4)
    for s in (cli, conn, srv):
        s.close()
    return got == b"ping"


def main():
    result = {"ok": False}
    home = own_cgroup()
    scratch = os.path.join(CGROUP_ROOT, "netstack-molecule-%d" % os.getpid())
    os.mkdir(scratch)
    fd = os.open(scratch, os.O_RDONLY)
    attached = False
    b = None
    try:
        b = BPF(text=PROG)
        fn = b.load_func("count_sockops", BPF.SOCK_OPS)
        BPF.attach_func(fn, fd, BPFAttachType.CGROUP_SOCK_OPS)
        attached = True
        move_to(scratch)  # sockets take the cgroup of the process that creates them
        try:
            result["data_ok"] = one_connection()
        finally:
            move_to(home)
        hits = {OPS.get(k.value, str(k.value)): v.value for k, v in b["hits"].items() if v.value}
        result["hits"] = hits
        result["ok"] = bool(result["data_ok"]) and all(hits.get(name, 0) >= 1 for name in OPS.values())
    except Exception as e:  # reported as data; the exit status says it failed
        result["error"] = "%s: %s" % (type(e).__name__, e)
    finally:
        if attached:
            BPF.detach_func(fn, fd, BPFAttachType.CGROUP_SOCK_OPS)
        os.close(fd)
        os.rmdir(scratch)
        if b is not None:
            b.cleanup()
    result["cgroup_removed"] = not os.path.exists(scratch)
    print(json.dumps(result, sort_keys=True))
    return 0 if result["ok"] and result["cgroup_removed"] else 1


if __name__ == "__main__":
    sys.exit(main())
