# Copyright: netstack.tuning contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Open loopback TCP connections from inside a cgroup and report what they got.

The listener is made before this process joins the cgroup, so accepted (server) sockets
stay outside it; only the client sockets are subject to the cgroup's sock_ops program.

  probe.py conn CGROUP [--rounds N]     one connection: congestion control, cwnd right
                                         after connect, rto after data, SO_SNDBUF,
                                         TCP_NOTSENT_LOWAT, and ss -i's view of it
  probe.py flow CGROUP --long BYTES      a flow that turns long, then a second connection:
                                         the second one's congestion control
"""

import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time

TCP_CONGESTION = 13
TCP_INFO = 11
TCP_NOTSENT_LOWAT = 25


def info(s):
    raw = s.getsockopt(socket.IPPROTO_TCP, TCP_INFO, 104)
    rto, = struct.unpack_from("I", raw, 8)
    snd_cwnd, = struct.unpack_from("I", raw, 80)
    return {"rto_us": rto, "snd_cwnd": snd_cwnd}


def cc(s):
    return s.getsockopt(socket.IPPROTO_TCP, TCP_CONGESTION, 16).split(b"\0", 1)[0].decode()


def ss(port):
    out = subprocess.run(["ss", "-tinH", "state", "established", "( sport = :%d )" % port],
                         capture_output=True, text=True, check=False).stdout
    return " ".join(out.split())


def sink(conn, stop):
    conn.settimeout(0.2)
    while not stop.is_set():
        try:
            if not conn.recv(1 << 16):
                return
        except socket.timeout:
            continue
        except OSError:
            return


def main():
    mode, cgroup = sys.argv[1], sys.argv[2]
    args = dict(zip(sys.argv[3::2], sys.argv[4::2]))
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(16)
    with open(os.path.join(cgroup, "cgroup.procs"), "w") as f:
        f.write(str(os.getpid()))
    stop = threading.Event()
    res = {}
    socks = []

    def open_conn():
        c = socket.create_connection(lst.getsockname())
        srv, _a = lst.accept()
        t = threading.Thread(target=sink, args=(srv, stop), daemon=True)
        t.start()
        socks.append((c, srv))
        return c

    try:
        if mode == "conn":
            c = open_conn()
            res["cc"] = cc(c)
            res["cwnd_at_connect"] = info(c)["snd_cwnd"]
            # ss's view before any data: later, a gap in the sends longer than the RTO (a busy
            # machine) restarts the window at the route's initcwnd (slow start after idle).
            res["ss_at_connect"] = ss(c.getsockname()[1])
            res["sndbuf"] = c.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
            res["notsent_lowat"] = c.getsockopt(socket.IPPROTO_TCP, TCP_NOTSENT_LOWAT)
            for _i in range(int(args.get("--rounds", "30"))):  # many RTT samples: rto settles
                c.sendall(b"x" * 4096)
                time.sleep(0.005)
            time.sleep(0.1)
            res.update(info(c))
            res["ss"] = ss(c.getsockname()[1])
        elif mode == "flow":
            first = open_conn()
            res["first_cc"] = cc(first)
            before = open_conn()
            res["before_long_cc"] = cc(before)
            first.sendall(b"x" * (int(args["--long"]) * 2))
            time.sleep(0.5)  # acks arrive; the RTT callback classifies the flow as long
            after = open_conn()
            res["after_long_cc"] = cc(after)
        else:
            raise SystemExit("unknown mode %s" % mode)
    finally:
        stop.set()
        for c, srv in socks:
            c.close()
            srv.close()
        lst.close()
    print(json.dumps(res))


if __name__ == "__main__":
    main()
