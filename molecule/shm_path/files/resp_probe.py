#!/usr/bin/python3
"""SET/GET random values through redis on 127.0.0.1:6379 with a minimal RESP client, one
connection; prints JSON {values, bytes, intact}.

  resp_probe.py small    values of 1 B .. 4 KiB
  resp_probe.py mixed    values of 1 B .. 1 MiB (the default)
"""
import json
import os
import random
import socket
import sys

SIZES = {"small": [1, 100, 1000, 4096], "mixed": [1, 100, 4096, 65536, 300000, 1 << 20]}


def cmd(s, f, *args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    s.sendall(out)
    line = f.readline()
    if line[:1] == b"$":
        n = int(line[1:])
        return None if n < 0 else f.read(n + 2)[:-2]
    return line.strip()


def main():
    sizes = SIZES[sys.argv[1] if len(sys.argv) > 1 else "mixed"]
    rnd = random.Random(7)
    s = socket.create_connection(("127.0.0.1", 6379), timeout=30)
    f = s.makefile("rb")
    ok, total, n = True, 0, 0
    for i in range(60):
        size = rnd.choice(sizes)
        v = os.urandom(size)
        assert cmd(s, f, "SET", "netstack:%d" % i, v) == b"+OK"
        ok = ok and cmd(s, f, "GET", "netstack:%d" % i) == v
        cmd(s, f, "DEL", "netstack:%d" % i)
        total += 2 * size
        n += 1
    s.close()
    print(json.dumps({"values": n, "bytes": total, "intact": ok}))


if __name__ == "__main__":
    main()
