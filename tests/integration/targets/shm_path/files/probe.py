"""Traffic for the shm_path integration target (loopback only).

  probe.py transfer PORT MBYTES            one connection, hashed both ways; JSON result
  probe.py kill-agent PORT MBYTES PIDFILE  the same, with the agent SIGKILLed mid-transfer
"""
import hashlib
import json
import os
import signal
import socket
import sys
import threading
import time

CHUNK = 1 << 16


def transfer(port, mbytes, during=None):
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(1)
    srv.settimeout(30)
    got = {}

    def serve():
        c = srv.accept()[0]
        c.settimeout(60)
        h, n = hashlib.sha256(), 0
        while True:
            d = c.recv(CHUNK - 17)  # odd read sizes: partial reads of redirected messages
            if not d:
                break
            h.update(d)
            n += len(d)
        c.sendall(h.hexdigest().encode())
        c.close()
        got.update(n=n)

    t = threading.Thread(target=serve)
    t.start()
    c = socket.create_connection(("127.0.0.1", port), timeout=60)
    h, total = hashlib.sha256(), mbytes << 20
    block = os.urandom(CHUNK)
    sent, t0, fired = 0, time.time(), None
    while sent < total:
        n = min(CHUNK, total - sent)
        c.sendall(block[:n])
        h.update(block[:n])
        sent += n
        if during and fired is None and sent >= total // 3:
            fired = during()
    c.shutdown(socket.SHUT_WR)
    echoed = c.recv(64).decode()
    t.join(60)
    c.close()
    srv.close()
    return {"bytes": sent, "received": got.get("n"), "intact": echoed == h.hexdigest(),
            "seconds": round(time.time() - t0, 3), "during": fired}


def main():
    cmd, port, mbytes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    during = None
    if cmd == "kill-agent":
        pidfile = sys.argv[4]

        def during():
            pid = int(open(pidfile).read())
            os.kill(pid, signal.SIGKILL)
            return {"killed": pid}
    print(json.dumps(transfer(port, mbytes, during)))


if __name__ == "__main__":
    main()
