"""Real servers over loopback with the path on, then the same run with the path off
(absent): identical results.  nginx (static files up to 10 MB, sendfile on) with wrk and
http.client, redis-server with redis-benchmark and binary values up to 4 MiB (RESP by
hand and redis-cli -x), PostgreSQL (throwaway cluster) with pgbench and psql.

Servers listen on 127.0.0.1 ports inside the policy (20000-24999); every server is
stopped in a finalizer, every command has a timeout."""

import glob
import hashlib
import http.client
import os
import pwd
import random
import re
import shutil
import socket
import subprocess

import pytest

from shmlib import carried, delta, free_port, run, snap, stop, wait_port

MiB = 1 << 20


def _need(*tools):
    missing = [t for t in tools if not shutil.which(t)]
    if missing:
        pytest.fail("missing tools: %s" % ", ".join(missing))


# ------------------------------------------------------------------ nginx

FILES = {"one.bin": 1, "small.bin": 1000, "odd.bin": 65537, "mid.bin": MiB + 13, "big.bin": 10000000,
         "empty.bin": 0}


@pytest.fixture
def nginx(tmpdir_shm, request):
    _need("nginx", "wrk")
    www = os.path.join(tmpdir_shm, "www")
    os.mkdir(www)
    rng = random.Random(10)
    sums = {}
    for name, size in FILES.items():
        data = rng.randbytes(size)
        with open(os.path.join(www, name), "wb") as f:
            f.write(data)
        sums[name] = (size, hashlib.sha256(data).hexdigest())
    port = free_port()
    d = tmpdir_shm
    conf = os.path.join(d, "nginx.conf")
    with open(conf, "w") as f:
        f.write("""
worker_processes 1;
daemon off;
user root;
pid %(d)s/nginx.pid;
error_log %(d)s/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    client_body_temp_path %(d)s/body;
    proxy_temp_path %(d)s/proxy;
    fastcgi_temp_path %(d)s/fastcgi;
    uwsgi_temp_path %(d)s/uwsgi;
    scgi_temp_path %(d)s/scgi;
    types { application/octet-stream bin; }
    server {
        listen 127.0.0.1:%(port)d;
        root %(www)s;
    }
}
""" % {"d": d, "port": port, "www": www})
    proc = subprocess.Popen(["nginx", "-p", d, "-c", conf, "-e", os.path.join(d, "error.log")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    request.addfinalizer(lambda: stop(proc))
    wait_port("127.0.0.1", port, proc=proc)
    return {"port": port, "sums": sums, "proc": proc, "log": os.path.join(d, "error.log")}


def _wrk(port, name, seconds=2, conns=4):
    r = run(["wrk", "-t1", "-c%d" % conns, "-d%ds" % seconds, "--timeout", "5s",
             "http://127.0.0.1:%d/%s" % (port, name)], timeout=seconds + 30)
    out = r.stdout.decode()
    m = re.search(r"(\d+) requests in", out)
    assert m, out
    reqs = int(m.group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {"requests": reqs, "non2xx": int(non2xx.group(1)) if non2xx else 0,
            "socket_errors": sum(int(x) for x in sock.groups()) if sock else 0, "out": out}


def _http_fetch(port, sums):
    """Every file on a fresh connection, then all of them again on one keep-alive
    connection, plus a range request: {what: (status, length, sha256)}."""
    res = {}

    def get(conn, name, headers=None):
        conn.request("GET", "/" + name, headers=headers or {})
        r = conn.getresponse()
        body = r.read()
        return r.status, len(body), hashlib.sha256(body).hexdigest()

    for name in sorted(sums):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        res["new " + name] = get(c, name)
        c.close()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for name in sorted(sums) * 2:
        res["keepalive " + name] = get(c, name)
    res["range big.bin"] = get(c, "big.bin", {"Range": "bytes=1000-2000999"})
    res["missing"] = get(c, "nope.bin")[0]
    c.close()
    return res


def test_nginx(make_path, nginx):
    port, sums = nginx["port"], nginx["sums"]
    p = make_path()
    before = snap(p)
    on = _http_fetch(port, sums)
    wrk_on = [_wrk(port, "big.bin"), _wrk(port, "small.bin", seconds=1)]
    d_on = snap(p)
    p.absent()
    assert p.counters() is None
    off = _http_fetch(port, sums)
    wrk_off = [_wrk(port, "big.bin"), _wrk(port, "small.bin", seconds=1)]

    for name, (size, h) in sums.items():
        assert on["new " + name] == (200, size, h), name
        assert on["keepalive " + name] == (200, size, h), name
    assert on["range big.bin"][:2] == (206, 2000000)
    assert on["missing"] == 404
    assert on == off, "nginx results differ with the path on and off"
    for w in wrk_on + wrk_off:
        assert w["requests"] > 0 and w["non2xx"] == 0 and w["socket_errors"] == 0, w["out"]
    fetched = sum(s for s, _ in sums.values()) * 3
    d = delta(d_on, before)
    carried(d, fetched)
    assert d["shm_conns"] > 0 and d["capture_errors"] == 0, d
    assert nginx["proc"].poll() is None, "nginx died"


# ------------------------------------------------------------------ redis

@pytest.fixture
def redis(tmpdir_shm, request):
    _need("redis-server", "redis-cli", "redis-benchmark")
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", tmpdir_shm, "--daemonize", "no",
                             "--protected-mode", "no", "--logfile", os.path.join(tmpdir_shm, "redis.log"),
                             "--proto-max-bulk-len", "64mb"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    request.addfinalizer(lambda: stop(proc))
    wait_port("127.0.0.1", port, proc=proc)
    return {"port": port, "proc": proc, "dir": tmpdir_shm}


class Resp(object):
    """A minimal RESP2 client: binary-safe commands and replies."""

    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.f = self.s.makefile("rb")

    def close(self):
        self.f.close()
        self.s.close()

    def cmd(self, *args):
        parts = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.s.sendall(b"".join(parts))
        return self.reply()

    def reply(self):
        line = self.f.readline()
        assert line.endswith(b"\r\n"), line
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest
        if kind == b"-":
            raise AssertionError("redis error: %r" % rest)
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.f.read(n + 2)
            assert len(data) == n + 2 and data.endswith(b"\r\n")
            return data[:-2]
        if kind == b"*":
            return [self.reply() for _ in range(int(rest))]
        raise AssertionError("bad reply %r" % line)


REDIS_SIZES = [0, 1, 100, 4096, 65537, 500000, MiB, 4 * MiB + 1]


def _redis_run(port, tmp, label):
    """Writes and reads back values; returns digests that must not depend on the path."""
    rng = random.Random(77)
    values = [rng.randbytes(n) for n in REDIS_SIZES]
    r = Resp(port)
    out = {}
    try:
        assert r.cmd("FLUSHALL") == b"OK"
        for i, v in enumerate(values):
            assert r.cmd("SET", "k%d" % i, v) == b"OK"
        for i, v in enumerate(values):
            got = r.cmd("GET", "k%d" % i)
            assert got == v, "value %d (%d B) came back different" % (i, len(v))
        # Pipelined: many commands in one write, replies read back in order.
        pipe = b"".join(b"*3\r\n$3\r\nSET\r\n$%d\r\np%d\r\n$%d\r\n%s\r\n" % (len(b"p%d" % i), i, len(v), v)
                        for i, v in enumerate(values))
        r.s.sendall(pipe)
        assert [r.reply() for _ in values] == [b"OK"] * len(values)
        got = r.cmd("MGET", *["p%d" % i for i in range(len(values))])
        assert got == values, "MGET of pipelined values differs"
        out["resp"] = hashlib.sha256(b"".join(got)).hexdigest()
        out["dbsize"] = r.cmd("DBSIZE")
    finally:
        r.close()
    # redis-cli -x: the value comes from stdin, and back with --raw (plus a newline).
    big = rng.randbytes(MiB + 333)
    fn = os.path.join(tmp, "value-%s.bin" % label)
    with open(fn, "wb") as f:
        f.write(big)
    with open(fn, "rb") as f:
        w = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(port), "-x", "SET", "cli"], stdin=f,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    assert w.returncode == 0 and w.stdout.strip() == b"OK", w
    g = run(["redis-cli", "-h", "127.0.0.1", "-p", str(port), "--raw", "GET", "cli"], timeout=30)
    assert g.stdout == big + b"\n", "redis-cli GET of a 1 MiB value differs"
    out["cli"] = hashlib.sha256(g.stdout).hexdigest()
    out["strlen"] = int(run(["redis-cli", "-h", "127.0.0.1", "-p", str(port), "STRLEN", "cli"]).stdout)
    return out


def _redis_bench(port):
    r = run(["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-t", "set,get", "-n", "20000", "-c", "8",
             "-q"], timeout=120)
    out = r.stdout.decode(errors="replace").replace("\r", "\n")
    pat = re.compile(r"^(SET|GET): ([\d.]+) requests per second", re.M)
    lines = dict((m.group(1), float(m.group(2))) for m in pat.finditer(out))
    assert set(lines) == {"SET", "GET"} and all(v > 0 for v in lines.values()), out
    assert "error" not in out.lower(), out
    return lines


def test_redis(make_path, redis):
    port = redis["port"]
    p = make_path()
    before = snap(p)
    bench_on = _redis_bench(port)
    on = _redis_run(port, redis["dir"], "on")
    d_on = snap(p)
    p.absent()
    bench_off = _redis_bench(port)
    off = _redis_run(port, redis["dir"], "off")
    assert on == off, "redis results differ with the path on and off"
    assert on["strlen"] == MiB + 333
    assert bench_on and bench_off
    total = 2 * sum(REDIS_SIZES) * 2  # each value written and read, twice
    d = delta(d_on, before)
    # Values larger than the reader's queue bound (its SO_RCVBUF) overflow to TCP for the
    # rest of the value (docs/shm_path.md, "Bounded queue"); every byte went one way or the other.
    carried(d, total)
    assert d["shm_conns"] > 0 and d["capture_errors"] == 0, d
    assert redis["proc"].poll() is None, "redis-server died"


# ------------------------------------------------------------------ PostgreSQL

def _pg_bin():
    c = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not c:
        pytest.fail("PostgreSQL server binaries (initdb) not found")
    return os.path.dirname(c[-1])


@pytest.fixture
def postgres(tmpdir_shm, request):
    _need("psql", "pgbench", "runuser")
    bindir = _pg_bin()
    pw = pwd.getpwnam("postgres")
    base = os.path.join(tmpdir_shm, "pg")
    os.mkdir(base, 0o700)
    os.chown(base, pw.pw_uid, pw.pw_gid)
    data, sock, log = os.path.join(base, "data"), os.path.join(base, "sock"), os.path.join(base, "log")
    as_pg = ["runuser", "-u", "postgres", "--"]
    run(as_pg + ["mkdir", "-m", "0700", sock], timeout=10)
    run(as_pg + [os.path.join(bindir, "initdb"), "-D", data, "-A", "trust", "-U", "postgres", "--no-sync",
                 "-E", "UTF8", "--locale=C"], timeout=120)
    port = free_port()
    opts = ("-p %d -c listen_addresses=127.0.0.1 -c unix_socket_directories=%s -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=20" % (port, sock))

    def fin():
        r = subprocess.run(as_pg + [os.path.join(bindir, "pg_ctl"), "-D", data, "-m", "immediate", "-w", "-t", "30",
                                    "stop"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
        if r.returncode != 0 and os.path.exists(os.path.join(data, "postmaster.pid")):
            with open(os.path.join(data, "postmaster.pid")) as f:
                pid = int(f.readline())
            try:
                os.kill(pid, 9)
            except OSError:
                pass
    request.addfinalizer(fin)
    run(as_pg + [os.path.join(bindir, "pg_ctl"), "-D", data, "-l", log, "-w", "-t", "60", "-o", opts, "start"],
        timeout=90)
    wait_port("127.0.0.1", port)
    return {"port": port}


def _pg_env():
    env = dict(os.environ)
    env.update({"PGHOST": "127.0.0.1", "PGUSER": "postgres", "PGDATABASE": "postgres", "PGCONNECT_TIMEOUT": "10",
                "PGSSLMODE": "disable"})
    return env


def _psql(port, sql, stdin=None, timeout=60):
    r = subprocess.run(["psql", "-p", str(port), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql],
                       input=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_pg_env(), timeout=timeout)
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout


def _pgbench(port, *args, timeout=120):
    r = subprocess.run(["pgbench", "-p", str(port)] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       env=_pg_env(), timeout=timeout)
    out = (r.stdout + r.stderr).decode(errors="replace")
    assert r.returncode == 0, out
    return out


def _pg_queries(port, table):
    """Server-side md5 of the accounts table, a COPY of it out (hashed here), and a
    10 MB COPY in whose server-side md5 must equal the one computed here."""
    res = {}
    res["accounts_md5"] = _psql(port, "select md5(string_agg(aid::text||','||bid::text||','||abalance::text||','||"
                                      "filler, ';' order by aid)) from pgbench_accounts").strip()
    out = _psql(port, "copy (select * from pgbench_accounts order by aid) to stdout", timeout=120)
    res["copy_out"] = (len(out), hashlib.sha256(out).hexdigest())
    rows = ["%d\t%s" % (i, hashlib.sha256(b"%d" % i).hexdigest() * 3) for i in range(50000)]
    payload = ("\n".join(rows) + "\n").encode()
    _psql(port, "create table %s (a int primary key, b text)" % table)
    _psql(port, "copy %s from stdin" % table, stdin=payload, timeout=120)
    res["copy_in_md5"] = _psql(port, "select md5(string_agg(a::text||','||b, ';' order by a)) from %s"
                               % table).strip()
    want = hashlib.md5(";".join(r.replace("\t", ",") for r in rows).encode()).hexdigest().encode()
    assert res["copy_in_md5"] == want, "COPY IN arrived different (%s)" % table
    res["copy_in_len"] = len(payload)
    return res


def test_postgres(make_path, postgres):
    port = postgres["port"]
    p = make_path()
    before = snap(p)
    _pgbench(port, "-i", "-s", "2", "-q", timeout=180)
    bench = _pgbench(port, "-c", "4", "-j", "2", "-T", "5", timeout=60)
    m = re.search(r"number of transactions actually processed: (\d+)", bench)
    assert m and int(m.group(1)) > 0, bench
    f = re.search(r"number of failed transactions: (\d+)", bench)
    assert f is None or int(f.group(1)) == 0, bench
    on = _pg_queries(port, "t_on")
    d_on = snap(p)
    p.absent()
    off = _pg_queries(port, "t_off")
    bench_off = _pgbench(port, "-c", "4", "-j", "2", "-T", "2", "-S", timeout=60)
    assert re.search(r"number of transactions actually processed: [1-9]", bench_off), bench_off
    assert on == off, "PostgreSQL results differ with the path on and off:\n%s\n%s" % (on, off)
    d = delta(d_on, before)
    carried(d, on["copy_out"][0] + on["copy_in_len"])
    assert d["shm_conns"] > 0 and d["capture_errors"] == 0, d
