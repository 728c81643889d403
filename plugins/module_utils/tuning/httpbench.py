# -*- coding: utf-8 -*-
# Copyright: netstack.tuning contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""HTTP latency benchmark: nginx serves, wrk drives, percentiles come from wrk's histogram.

Lab form (``Lab``): two throwaway network namespaces joined by a veth pair (addresses in
198.18.0.0/15, the benchmarking range), nginx with a private prefix in the server
namespace, wrk in the client namespace.  ``Lab.server_netns`` is where a sysctl trial
goes (net.* sysctls are per namespace), so a study can tune the server side without
touching the host.  Everything the lab makes (namespaces, the veth pair that lives only
inside them, nginx, its temporary directory) is removed on exit, also on error; labs left
by a process that was SIGKILLed are reaped by the next one.

Fleet form: ``run_benchmark(target_url, ...)`` runs wrk here against a server elsewhere.

Latency percentiles are wrk's own: a Lua ``done()`` hook (``WRK_LUA``) prints
``latency:percentile(p)`` from wrk's per-microsecond histogram as one JSON line, which
``parse_wrk_output`` reads.  ``aggregate`` folds repeats into medians and spreads.

Standard library only (Jinja2 is used when importable, with an equivalent minimal
renderer otherwise): this file runs on managed hosts.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import grp
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from urllib.parse import urlsplit

from ansible_collections.netstack.tuning.plugins.module_utils.core.common import NetstackError, run, strict_int, which
from ansible_collections.netstack.tuning.plugins.module_utils.core import kstate, nsutil, stats
from ansible_collections.netstack.tuning.plugins.module_utils.tuning import netpath
from ansible_collections.netstack.tuning.plugins.module_utils.core import sysctl as sysctl_engine

try:
    import jinja2
    HAS_JINJA2 = True
except ImportError:
    jinja2 = None
    HAS_JINJA2 = False

SERVER_ADDR = "198.18.100.1"
CLIENT_ADDR = "198.18.100.2"
PREFIXLEN = 30
SERVER_PORT = 80
UPSTREAM_PORT = 8081
PAYLOAD_PATH = "/payload"
SERVER_IFNAME = "veth-srv"
CLIENT_IFNAME = "veth-cli"
TMP_PREFIX = "netstack-httpbench-"
MARKER = "NETSTACK_WRK_JSON "
ERROR_KINDS = ("connect", "read", "write", "status", "timeout")
LATENCY_KEYS = ("p50", "p90", "p99", "p99_9", "mean", "stdev", "min", "max")
SPREAD_KEYS = ("p50", "p90", "p99", "p99_9", "mean", "stdev", "max")

LIMITS = {
    "payload_bytes": (0, 256 * 1024 * 1024),
    "connections": (1, 100000),
    "threads": (1, 256),
    "duration": (1, 3600),
    "warmup": (0, 3600),
    "repeats": (1, 100),
    # wrk keeps one 8-byte counter per microsecond up to the timeout: 16 MB at 2 s.
    "timeout": (1, 30),
    "listen_backlog": (1, 1 << 20),
}

TOOL_PACKAGES = {"nginx": "nginx", "wrk": "wrk", "ip": "iproute2"}

# wrk calls done() once, in the main thread, after every thread has finished, with the
# merged latency histogram (microseconds).  wrk's Lua has no JSON library; numbers are
# written with %.17g and NaN/inf become null so the line is always valid JSON.
WRK_LUA = r"""-- netstack.tuning http_bench: print wrk's own statistics as one JSON line.
local function num(x)
  if x == nil or x ~= x or x == math.huge or x == -math.huge then return "null" end
  return string.format("%.17g", x)
end

done = function(summary, latency, requests)
  local e = summary.errors
  local parts = {
    '"requests":' .. num(summary.requests),
    '"duration_us":' .. num(summary.duration),
    '"bytes":' .. num(summary.bytes),
    '"errors":{"connect":' .. num(e.connect) .. ',"read":' .. num(e.read) ..
      ',"write":' .. num(e.write) .. ',"status":' .. num(e.status) ..
      ',"timeout":' .. num(e.timeout) .. '}',
    '"latency_us":{"min":' .. num(latency.min) .. ',"max":' .. num(latency.max) ..
      ',"mean":' .. num(latency.mean) .. ',"stdev":' .. num(latency.stdev) ..
      ',"p50":' .. num(latency:percentile(50)) .. ',"p90":' .. num(latency:percentile(90)) ..
      ',"p99":' .. num(latency:percentile(99)) .. ',"p99_9":' .. num(latency:percentile(99.9)) .. '}',
    '"thread_rps":{"mean":' .. num(requests.mean) .. ',"stdev":' .. num(requests.stdev) ..
      ',"max":' .. num(requests.max) .. '}',
  }
  io.write("NETSTACK_WRK_JSON {" .. table.concat(parts, ",") .. "}\n")
  io.flush()
end
"""

# The one nginx configuration template.  Rendered by Jinja2 when it is importable and by
# _render_minimal otherwise, which understands exactly what is used here: {{ name }},
# and {% if name %} / {% if name == "literal" %} / {% else %} / {% endif %} on lines of
# their own (the Jinja2 environment uses trim_blocks + lstrip_blocks, so both agree
# byte for byte; a unit test checks it).
NGINX_TEMPLATE = r"""# nginx for netstack.tuning http_bench ({{ nginx_mode }} mode). Generated; every path is
# under the private prefix {{ prefix }} so nothing of the host's nginx is used.
{% if worker_user %}
user {{ worker_user }};
{% endif %}
worker_processes {{ worker_processes }};
worker_rlimit_nofile {{ rlimit_nofile }};
pid {{ prefix }}/nginx.pid;
error_log {{ prefix }}/logs/error.log warn;

events {
    worker_connections {{ worker_connections }};
}

http {
    access_log off;
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 65;
    client_body_temp_path {{ prefix }}/tmp/body;
    proxy_temp_path {{ prefix }}/tmp/proxy;
    fastcgi_temp_path {{ prefix }}/tmp/fastcgi;
    uwsgi_temp_path {{ prefix }}/tmp/uwsgi;
    scgi_temp_path {{ prefix }}/tmp/scgi;
{% if nginx_mode == "proxy" %}

    # The upstream: a second server block of the same nginx, on the server namespace's
    # loopback, serving the payload.  Keep-alive upstream connections, as a real
    # reverse proxy would use.
    upstream netstack_upstream {
        server 127.0.0.1:{{ upstream_port }};
        keepalive {{ upstream_keepalive }};
    }

    server {
        listen 127.0.0.1:{{ upstream_port }};
        root {{ docroot }};
        location = {{ path }} {
        }
        location / {
            return 404;
        }
    }
{% endif %}

    server {
        listen {{ listen_addr }}:{{ port }} backlog={{ backlog }};
{% if nginx_mode == "proxy" %}
        location = {{ path }} {
            proxy_pass http://netstack_upstream;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
{% else %}
        root {{ docroot }};
        location = {{ path }} {
        }
{% endif %}
        location / {
            return 404;
        }
    }
}
"""


# --------------------------------------------------------------------------- validation

def _int(params, name):
    """An integer option within LIMITS, written in ASCII digits (common.strict_int); floats,
    booleans and 5,000-digit strings are NetstackErrors naming the option."""
    lo, hi = LIMITS[name]
    value = strict_int(params.get(name), name)
    if value < lo or value > hi:
        if name == "duration":
            raise NetstackError("must be > 0 seconds (at most %d), got %d" % (hi, value), field=name)
        raise NetstackError("must be between %d and %d, got %d" % (lo, hi, value), field=name)
    return value


def _worker_processes(value):
    """'auto' or an integer from 1 to 1024 (ASCII digits), as nginx's text."""
    if isinstance(value, str) and value.strip() == "auto":
        return "auto"
    try:
        return str(strict_int(value, "worker_processes", 1, 1024))
    except NetstackError as e:
        raise NetstackError("must be 'auto' or an integer from 1 to 1024 (%s)" % e.msg, field="worker_processes")


def validate(params):
    """Check benchmark parameters; return a normalised copy.  Errors name the field.

    Keys (all optional but ``mode``): mode (lab|fleet), nginx_mode (static|proxy),
    payload_bytes, connections, threads, duration, warmup, repeats, timeout, target_url,
    netns_prefix, worker_processes, listen_backlog, server_sysctls, keepalive.
    """
    p = dict(DEFAULTS)
    p.update({k: v for k, v in params.items() if v is not None})
    if p["mode"] not in ("lab", "fleet"):
        raise NetstackError("must be 'lab' or 'fleet', got %r" % (p["mode"],), field="mode")
    if p["nginx_mode"] not in ("static", "proxy"):
        raise NetstackError("must be 'static' or 'proxy', got %r" % (p["nginx_mode"],), field="nginx_mode")
    for name in LIMITS:
        p[name] = _int(p, name)
    if p["connections"] < p["threads"]:
        raise NetstackError("must be >= threads (%d): wrk gives every thread at least one connection, got %d"
                            % (p["threads"], p["connections"]), field="connections")
    p["worker_processes"] = _worker_processes(p["worker_processes"])
    if not isinstance(p["keepalive"], bool):
        raise NetstackError("must be true or false, got %r" % (p["keepalive"],), field="keepalive")
    if not isinstance(p["netns_prefix"], str) or not re.match(r"\A[A-Za-z][A-Za-z0-9_]{0,23}\Z", p["netns_prefix"]):
        raise NetstackError("must start with a letter and hold only letters, digits and '_' (at most 24), got %r"
                            % (p["netns_prefix"],), field="netns_prefix")
    if p["mode"] == "fleet":
        if not p.get("target_url"):
            raise NetstackError("required with mode=fleet (the URL wrk requests)", field="target_url")
        p["target_url"] = check_url(p["target_url"])
        if p.get("server_sysctls"):
            raise NetstackError("only with mode=lab (fleet mode does not manage the server; use sysctl_set on it)",
                                field="server_sysctls")
    else:
        if p.get("target_url"):
            raise NetstackError("only with mode=fleet; lab mode serves its own URL", field="target_url")
    sysctls = p.get("server_sysctls") or {}
    if not isinstance(sysctls, dict):
        raise NetstackError("must be a dict of net.* sysctl name -> value", field="server_sysctls")
    for name, value in sysctls.items():
        if not isinstance(name, str) or not name:
            raise NetstackError("sysctl names are non-empty strings, got %r" % (name,), field="server_sysctls")
        key = kstate.canonical_sysctl(name)
        if not key.startswith(("net.", "net/")):
            raise NetstackError("only net.* sysctls belong to a network namespace; %s would change the host" % key,
                                field=key)
        kstate.normalize(value, key)  # floats, 5,000 digits, nested lists: refused before the lab starts
    p["server_sysctls"] = sysctls
    return p


def check_server_sysctls(sysctls):
    """The shape of each server sysctl's value against the key's current value on this host
    (read-only, as sysctl.plan's check_type; the lab's namespace has the same keys with the
    same shapes): an integer key takes an integer, tcp_rmem three.  validate() checks the
    names and values; this reads /proc/sys, so it is a separate step, run before anything
    starts, in check mode too.  NetstackError naming the key."""
    return sysctl_engine.check(sysctls or {}, field="server_sysctls")


DEFAULTS = {
    "mode": "lab",
    "nginx_mode": "static",
    "payload_bytes": 1024,
    "connections": 16,
    "threads": 1,
    "duration": 10,
    "warmup": 2,
    "repeats": 3,
    "timeout": 2,
    "target_url": None,
    "netns_prefix": "nsbench",
    "worker_processes": "auto",
    "listen_backlog": 511,
    "server_sysctls": None,
    "keepalive": True,
}


def check_url(url):
    if not isinstance(url, str) or any(ord(c) <= 32 or ord(c) == 127 for c in url):
        raise NetstackError("must be a URL without spaces or control characters", field="target_url")
    try:
        parts = urlsplit(url)
        port = parts.port
    except (ValueError, TypeError, AttributeError) as e:
        raise NetstackError("not a valid URL: %s" % e, field="target_url")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise NetstackError("must be an http:// or https:// URL with a host, got %r" % (url,), field="target_url")
    if port == 0:
        raise NetstackError("port 0 is not a valid port", field="target_url")
    return url


def require_tool(name):
    """Path of ``name``; NetstackError naming the tool and its package when missing."""
    path = which(name)
    if not path:
        raise NetstackError("required tool '%s' not found (install the '%s' package)" % (name, TOOL_PACKAGES.get(name, name)),
                            field=name)
    return path


# --------------------------------------------------------------------------- templates

def render_nginx_conf(variables, use_jinja2=None):
    """Render NGINX_TEMPLATE with Jinja2 (when importable) or the minimal renderer."""
    if use_jinja2 is None:
        use_jinja2 = HAS_JINJA2
    if use_jinja2:
        if not HAS_JINJA2:
            raise NetstackError("jinja2 is not importable")
        env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
                                 undefined=jinja2.StrictUndefined, autoescape=False)
        return env.from_string(NGINX_TEMPLATE).render(**variables)
    return render_minimal(NGINX_TEMPLATE, variables)


_VAR_RE = re.compile(r"{{\s*([A-Za-z_][A-Za-z0-9_]*)\s*}}")
_TAG_RE = re.compile(r"\A\s*{%-?\s*(.*?)\s*-?%}\s*\Z")
_IF_RE = re.compile(r"\Aif\s+([A-Za-z_][A-Za-z0-9_]*)(?:\s*==\s*\"([^\"]*)\")?\Z")


def render_minimal(template, variables):
    """The subset of Jinja2 NGINX_TEMPLATE uses, with trim_blocks/lstrip_blocks semantics.

    ``{{ name }}`` substitutes (an unknown name is an error, like StrictUndefined);
    ``{% if name %}``, ``{% if name == "x" %}``, ``{% else %}``, ``{% endif %}`` may nest
    and must stand on lines of their own.
    """
    def subst(m):
        if m.group(1) not in variables:
            raise NetstackError("template variable %r is undefined" % m.group(1), field="template")
        return str(variables[m.group(1)])

    out, stack = [], []  # stack of [condition, in_else]
    for lineno, line in enumerate(template.splitlines(True), 1):
        tag = _TAG_RE.match(line)
        if tag:
            stmt = tag.group(1)
            m = _IF_RE.match(stmt)
            if m:
                name, literal = m.group(1), m.group(2)
                if name not in variables:
                    raise NetstackError("template variable %r is undefined (line %d)" % (name, lineno), field="template")
                value = variables[name]
                cond = (str(value) == literal) if literal is not None else bool(value)
                stack.append([cond, False])
            elif stmt == "else" and stack and not stack[-1][1]:
                stack[-1][1] = True
            elif stmt == "endif" and stack:
                stack.pop()
            else:
                raise NetstackError("unsupported template statement %r (line %d)" % (stmt, lineno), field="template")
            continue
        if "{%" in line:
            raise NetstackError("template tags must stand on their own line (line %d)" % lineno, field="template")
        if all(cond != in_else for cond, in_else in stack):
            out.append(_VAR_RE.sub(subst, line))
    if stack:
        raise NetstackError("unterminated {% if %} in template", field="template")
    return "".join(out)


def nginx_variables(prefix, nginx_mode="static", worker_processes="auto", connections=16,
                    listen_addr=SERVER_ADDR, port=SERVER_PORT, backlog=511, worker_user=None):
    """Template variables for a lab nginx under ``prefix``."""
    worker_connections = max(1024, 2 * int(connections) + 64)  # proxy: one client + one upstream each
    return {
        "prefix": prefix,
        "docroot": os.path.join(prefix, "www"),
        "path": PAYLOAD_PATH,
        "nginx_mode": nginx_mode,
        "worker_processes": worker_processes,
        "worker_connections": worker_connections,
        "rlimit_nofile": 2 * worker_connections + 64,
        "listen_addr": listen_addr,
        "port": port,
        "backlog": backlog,
        "upstream_port": UPSTREAM_PORT,
        "upstream_keepalive": 64,
        "worker_user": worker_user or "",
    }


def payload_bytes_of(size):
    """Deterministic payload content of ``size`` bytes (printable, so logs stay readable)."""
    unit = b"netstack.tuning http_bench payload 0123456789abcdefghijklmnopqrstuvwxyz\n"
    reps = size // len(unit) + 1
    return (unit * reps)[:size]


# --------------------------------------------------------------------------- wrk

def parse_wrk_output(stdout):
    """One run's numbers from wrk's stdout (the line the Lua ``done()`` printed).

    Latencies are microseconds.  With no completed request the latency fields are None
    (wrk then reports min = 2^64-1 and percentiles of 0, which mean nothing).
    """
    line = None
    for candidate in (stdout or "").splitlines():
        if candidate.startswith(MARKER):
            line = candidate[len(MARKER):]
    if line is None:
        raise NetstackError("wrk printed no result line (the Lua done() hook did not run)", field="wrk")
    try:
        raw = json.loads(line)
    except ValueError as e:
        raise NetstackError("cannot parse wrk's result line: %s: %r" % (e, line[:200]), field="wrk")
    requests = int(raw.get("requests") or 0)
    duration_us = float(raw.get("duration_us") or 0)
    errors = {k: int((raw.get("errors") or {}).get(k) or 0) for k in ERROR_KINDS}
    errors["total"] = sum(errors[k] for k in ERROR_KINDS)
    lat_raw = raw.get("latency_us") or {}
    latency = {}
    for k in LATENCY_KEYS:
        v = lat_raw.get(k)
        if requests == 0 or v is None:
            latency[k] = None
        elif k in ("mean", "stdev"):
            latency[k] = round(float(v), 3)
        else:
            latency[k] = int(v)
    thr = raw.get("thread_rps") or {}
    return {
        "requests": requests,
        "duration_s": round(duration_us / 1e6, 6),
        "bytes": int(raw.get("bytes") or 0),
        "requests_per_sec": round(requests / (duration_us / 1e6), 3) if duration_us > 0 else 0.0,
        "latency_us": latency,
        "errors": errors,
        "thread_requests_per_sec": {k: None if thr.get(k) is None else round(float(thr[k]), 3)
                                    for k in ("mean", "stdev", "max")},
    }


def write_lua(directory):
    path = os.path.join(directory, "netstack-wrk.lua")
    with open(path, "w") as f:
        f.write(WRK_LUA)
    os.chmod(path, 0o644)
    return path


def wrk_argv(url, duration, connections, threads, timeout, script, netns=None, wrk=None, ip=None, keepalive=True):
    argv = [wrk or "wrk", "-t", str(threads), "-c", str(connections), "-d", "%ds" % duration,
            "--timeout", "%ds" % timeout, "-s", script, url]
    if not keepalive:  # a new connection per request: nginx closes after each response
        argv[1:1] = ["-H", "Connection: close"]
    if netns:
        argv = [ip or "ip", "netns", "exec", netns] + argv
    return argv


def run_wrk(url, duration, connections, threads, timeout=2, netns=None, script=None, wrk=None, ip=None,
            keepalive=True):
    """One wrk run against ``url`` (from inside ``netns`` when given); parsed numbers.

    ``script`` is the path of WRK_LUA written by ``write_lua``; without it a temporary
    copy is written and removed.
    """
    p = validate({"mode": "lab", "duration": duration, "connections": connections, "threads": threads,
                  "timeout": timeout})
    check_url(url)
    wrk = wrk or require_tool("wrk")
    if netns:
        ip = ip or require_tool("ip")
    tmp = None
    if script is None:
        tmp = tempfile.mkdtemp(prefix=TMP_PREFIX + "%d-lua-" % os.getpid())
        script = write_lua(tmp)
    try:
        argv = wrk_argv(url, p["duration"], p["connections"], p["threads"], p["timeout"], script, netns, wrk, ip,
                        keepalive)
        rc, out, err = run(argv, timeout=p["duration"] + p["timeout"] + 30)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    if rc != 0 or MARKER not in out:
        msg = (err.strip() or out.strip()).splitlines()
        raise NetstackError("wrk failed (rc=%d) against %s: %s" % (rc, url, " | ".join(msg[-3:]) or "no output"),
                            field="target_url" if not netns else "wrk", stderr=err[-2000:])
    result = parse_wrk_output(out)
    result.update({"threads": p["threads"], "connections": p["connections"], "duration": p["duration"]})
    return result


# --------------------------------------------------------------------------- aggregation

def spread(values):
    """median, min, max and IQR (q3 - q1) of the non-None values; all None when there are none."""
    xs = [v for v in values if v is not None]
    if not xs:
        return {"median": None, "min": None, "max": None, "iqr": None}
    s = stats.spread(xs)
    return {k: _round(s[k]) for k in ("median", "min", "max", "iqr")}


def _round(x):
    x = round(float(x), 3)
    return int(x) if x == int(x) else x


def aggregate(runs):
    """Fold per-repeat results (from run_wrk) into the benchmark result.

    Each metric's value is its median over the repeats; ``spread`` holds min, max and
    IQR per metric; error counts and requests are totals; ``runs`` is the raw list.
    """
    if not runs:
        raise NetstackError("no runs to aggregate", field="repeats")
    lat = {k: spread([r["latency_us"].get(k) for r in runs]) for k in SPREAD_KEYS}
    rps = spread([r["requests_per_sec"] for r in runs])
    errors = {k: sum(r["errors"].get(k, 0) for r in runs) for k in ERROR_KINDS}
    errors["total"] = sum(errors[k] for k in ERROR_KINDS)
    requests = sum(r["requests"] for r in runs)

    def strip(s):
        return {k: s[k] for k in ("min", "max", "iqr")}

    return {
        "latency_us": {k: lat[k]["median"] for k in SPREAD_KEYS},
        "requests_per_sec": rps["median"],
        "spread": {"latency_us": {k: strip(lat[k]) for k in SPREAD_KEYS},
                   "requests_per_sec": strip(rps)},
        "errors": errors,
        "requests": requests,
        "error_ratio": round(float(errors["total"]) / (requests + errors["total"]), 6) if requests + errors["total"] else 0.0,
        "repeats": len(runs),
        "runs": [dict(r, repeat=i + 1) for i, r in enumerate(runs)],
    }


def run_benchmark(url, duration=10, connections=16, threads=1, warmup=2, repeats=3, timeout=2, netns=None,
                  keepalive=True):
    """Warm-up (discarded) then ``repeats`` wrk runs; ``aggregate`` of them plus ``warmup``.
    ``keepalive`` false opens a new connection per request."""
    p = validate({"mode": "lab", "duration": duration, "connections": connections, "threads": threads,
                  "warmup": warmup, "repeats": repeats, "timeout": timeout})
    wrk = require_tool("wrk")
    ip = require_tool("ip") if netns else None
    tmp = tempfile.mkdtemp(prefix=TMP_PREFIX + "%d-lua-" % os.getpid())
    try:
        script = write_lua(tmp)
        warm = None
        if p["warmup"] > 0:
            warm = run_wrk(url, p["warmup"], p["connections"], p["threads"], p["timeout"], netns, script, wrk, ip,
                           keepalive)
        runs = [run_wrk(url, p["duration"], p["connections"], p["threads"], p["timeout"], netns, script, wrk, ip,
                        keepalive)
                for _i in range(p["repeats"])]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result = aggregate(runs)
    result["warmup"] = None if warm is None else {
        "duration_s": warm["duration_s"], "requests": warm["requests"], "errors": warm["errors"]["total"]}
    result["target_url"] = url
    return result


# --------------------------------------------------------------------------- lab

def reap_stale(prefix, ip=None):
    """Remove labs of ``prefix`` whose owning process is gone (it was SIGKILLed): their
    namespaces (killing what runs inside) and temporary directories.  Returns their names.
    (``ip`` is not used any more.)"""
    reaped = nsutil.reap_stale_netns(prefix, ip)
    tmpdir = tempfile.gettempdir()
    tpat = re.compile(r"\A%s(\d+)-" % re.escape(TMP_PREFIX))
    try:
        entries = os.listdir(tmpdir)
    except OSError:
        entries = []
    for entry in entries:
        m = tpat.match(entry)
        path = os.path.join(tmpdir, entry)
        if m and not nsutil.pid_alive(int(m.group(1))) and os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
            reaped.append(path)
    return reaped


def nginx_version(nginx):
    _rc, out, err = run([nginx, "-v"], timeout=15)
    m = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", err + out)
    return tuple(int(x) for x in m.groups()) if m else None


def http_get(netns, addr, port, path, timeout=2.0):
    """(status, body length) of GET ``path`` from inside ``netns`` (HTTP/1.0, no keep-alive)."""
    with kstate.in_netns(netns):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.settimeout(timeout)
        s.connect((addr, port))
        s.sendall(("GET %s HTTP/1.0\r\nHost: %s\r\n\r\n" % (path, addr)).encode("ascii"))
        chunks = []
        while True:
            data = s.recv(65536)
            if not data:
                break
            chunks.append(data)
    finally:
        s.close()
    raw = b"".join(chunks)
    head, _sep, body = raw.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].split()
    return (int(status[1]) if len(status) > 1 and status[1].isdigit() else 0), len(body)


class Lab(nsutil.Closing):
    """Server and client network namespaces joined by a veth pair, nginx in the server one.

    ::

        with Lab(nginx_mode="proxy", server_sysctls={"net.core.somaxconn": 4096}) as lab:
            result = lab.benchmark(duration=10, connections=16, threads=1, repeats=3)

    ``server_netns`` / ``client_netns`` are the names (as in ``ip netns``);
    ``apply_sysctls`` writes net.* sysctls inside the server namespace (no journal: the
    state goes with the namespace) and ``restart_server`` restarts nginx so that
    listen-time settings (the accept queue, net.core.somaxconn) take effect.

    ``path`` (netpath.validate's format) puts an impaired path between them: a third
    namespace, ``path_netns``, routes between the two and adds delay, loss, reordering and a
    bottleneck (netpath.py).  Without it (or with an empty one) the two are one veth apart.
    The namespaces are an nsutil.NetnsLab (``netlab``), the lab the zero-copy test uses too.
    """

    def __init__(self, nginx_mode="static", payload_bytes=1024, worker_processes="auto", connections=16,
                 netns_prefix="nsbench", listen_backlog=511, server_sysctls=None, startup_timeout=15.0,
                 server_addr=SERVER_ADDR, client_addr=CLIENT_ADDR, prefixlen=PREFIXLEN, port=SERVER_PORT,
                 path=None):
        p = validate({"mode": "lab", "nginx_mode": nginx_mode, "payload_bytes": payload_bytes,
                      "worker_processes": worker_processes, "connections": connections,
                      "netns_prefix": netns_prefix, "listen_backlog": listen_backlog,
                      "server_sysctls": server_sysctls})
        self.params = p
        self.path_spec = netpath.validate(path)
        if not netpath.impaired(self.path_spec):
            self.path_spec = None
        elif client_addr == CLIENT_ADDR:
            client_addr = netpath.CLIENT_ADDR_ROUTED
        self.path = None
        self.nginx_mode = p["nginx_mode"]
        self.startup_timeout = startup_timeout
        self.server_addr, self.client_addr, self.prefixlen, self.port = server_addr, client_addr, prefixlen, port
        self.netlab = nsutil.NetnsLab(p["netns_prefix"], ("srv", "cli", "path") if self.path_spec else ("srv", "cli"))
        self.server_netns = self.netlab.name("srv")
        self.client_netns = self.netlab.name("cli")
        self.path_netns = self.netlab.name("path")
        self.url = "http://%s:%d%s" % (server_addr, port, PAYLOAD_PATH)
        self.tmpdir = None
        self.proc = None
        self.nginx_pids_seen = set()
        self.sysctls_applied = []
        self.reaped = []
        self.nginx_version = None
        self.nginx = self.wrk = self.ip = None

    # -- lifecycle ---------------------------------------------------------------
    def open(self):
        self.start()

    def start(self):
        if os.geteuid() != 0:
            raise NetstackError("lab mode needs root (it creates network namespaces)", field="mode")
        self.ip = require_tool("ip")
        self.nginx = require_tool("nginx")
        self.wrk = require_tool("wrk")
        self.nginx_version = nginx_version(self.nginx)
        self.reaped = reap_stale(self.params["netns_prefix"], self.ip)
        self.tmpdir = tempfile.mkdtemp(prefix=TMP_PREFIX + "%d-" % os.getpid())
        self._prepare_files()
        self._make_network()
        if self.params["server_sysctls"]:
            self.apply_sysctls(self.params["server_sysctls"])
        self.start_server()

    def _prepare_files(self):
        # nginx workers run as an unprivileged user: the prefix must be traversable.
        os.chmod(self.tmpdir, 0o755)
        for d in ("www", "logs", "tmp", "conf"):
            os.mkdir(os.path.join(self.tmpdir, d), 0o755)
        with open(os.path.join(self.tmpdir, "www", PAYLOAD_PATH.lstrip("/")), "wb") as f:
            f.write(payload_bytes_of(self.params["payload_bytes"]))
        os.chmod(os.path.join(self.tmpdir, "www", PAYLOAD_PATH.lstrip("/")), 0o644)
        write_lua(self.tmpdir)
        self.conf_text = render_nginx_conf(nginx_variables(
            self.tmpdir, self.nginx_mode, self.params["worker_processes"], self.params["connections"],
            self.server_addr, self.port, self.params["listen_backlog"], worker_user=_worker_user()))
        self.conf_path = os.path.join(self.tmpdir, "conf", "nginx.conf")
        with open(self.conf_path, "w") as f:
            f.write(self.conf_text)

    def _make_network(self):
        self.netlab.create(reap=False)  # start() reaped already (namespaces and directories)
        if self.path_spec:
            self.path = netpath.Path(self.path_spec, self.path_netns, self.server_netns, self.client_netns,
                                     self.server_addr, self.tmpdir)
            self.path.wire(SERVER_IFNAME, CLIENT_IFNAME, self.prefixlen)
            return
        self.netlab.veth(("srv", SERVER_IFNAME, self.server_addr), ("cli", CLIENT_IFNAME, self.client_addr),
                         self.prefixlen)

    def apply_sysctls(self, sysctls):
        """Write net.* sysctls inside the server namespace (validated first, all of them)."""
        for name in sysctls:
            if not kstate.canonical_sysctl(name).startswith(("net.", "net/")):
                raise NetstackError("only net.* sysctls belong to a network namespace", field=name)
        changes = sysctl_engine.plan(sysctls, self.server_netns)
        applied = []
        for c in changes:
            if c.changed:
                c.item.write(c.after)
                now = c.item.read()
                if now != c.after:
                    raise NetstackError("kernel stored %r instead of %r" % (now, c.after), field=c.item.key)
            applied.append({"key": c.item.key, "before": c.before, "after": c.after})
        self.sysctls_applied.extend(applied)
        return applied

    def _nginx_argv(self):
        argv = [self.ip, "netns", "exec", self.server_netns, self.nginx, "-p", self.tmpdir + "/",
                "-c", self.conf_path]
        if self.nginx_version and self.nginx_version >= (1, 19, 5):
            argv += ["-e", os.path.join(self.tmpdir, "logs", "error.log")]
        return argv

    def _log_tail(self, n=8):
        lines = []
        for name in ("error.log", "nginx.stderr"):
            try:
                with open(os.path.join(self.tmpdir, "logs", name)) as f:
                    lines.extend(x.rstrip() for x in f.readlines()[-n:])
            except OSError:
                pass
        return [x for x in lines if x][-n:]

    def start_server(self):
        rc, out, err = run(self._nginx_argv() + ["-t"], timeout=30)
        if rc != 0:
            raise NetstackError("nginx rejected the generated configuration: %s" % (err.strip() or out.strip()),
                                field="nginx", log=self._log_tail())
        with open(os.path.join(self.tmpdir, "logs", "nginx.stderr"), "ab") as stderr:
            # A session of its own: the master and its workers form one process group to kill.
            self.proc = subprocess.Popen(self._nginx_argv() + ["-g", "daemon off;"], stdin=subprocess.DEVNULL,
                                         stdout=stderr, stderr=stderr, start_new_session=True, close_fds=True)
        deadline = time.time() + self.startup_timeout
        last = None
        while True:
            if self.proc.poll() is not None:
                raise NetstackError("nginx exited at start (rc=%s): %s" % (self.proc.returncode, " | ".join(self._log_tail())),
                                    field="nginx")
            try:
                status, length = http_get(self.client_netns, self.server_addr, self.port, PAYLOAD_PATH)
                if status == 200 and length == self.params["payload_bytes"]:
                    break
                last = "HTTP %s with %d bytes" % (status, length)
            except OSError as e:
                last = str(e)
            if time.time() > deadline:
                raise NetstackError("nginx did not serve %s within %ss (last: %s): %s"
                                    % (self.url, self.startup_timeout, last, " | ".join(self._log_tail())), field="nginx")
            time.sleep(0.05)
        self.nginx_pids_seen.update(nsutil.netns_pids(self.ip, self.server_netns))

    def stop_server(self):
        proc, self.proc = self.proc, None
        if proc is None:
            return
        for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            if proc.poll() is not None:
                break
            try:
                os.killpg(proc.pid, sig)
            except OSError:
                pass
            try:
                proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue
        # Workers that outlived the master (SIGKILL of the master) are in the same group.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass

    def restart_server(self):
        self.stop_server()
        self.start_server()

    def benchmark(self, duration=10, connections=None, threads=1, warmup=2, repeats=3, timeout=2, keepalive=True):
        """run_benchmark from the client namespace against this lab's nginx."""
        result = run_benchmark(self.url, duration, connections or self.params["connections"], threads, warmup,
                               repeats, timeout, netns=self.client_netns, keepalive=keepalive)
        result["lab"] = self.describe()
        return result

    def describe(self):
        return {
            "server_netns": self.server_netns, "client_netns": self.client_netns,
            "server_addr": "%s/%d" % (self.server_addr, self.prefixlen),
            "client_addr": "%s/%d" % (self.client_addr, self.prefixlen),
            "nginx_mode": self.nginx_mode, "payload_bytes": self.params["payload_bytes"],
            "worker_processes": self.params["worker_processes"],
            "listen_backlog": self.params["listen_backlog"],
            "nginx_version": ".".join(str(x) for x in self.nginx_version) if self.nginx_version else None,
            "renderer": "jinja2" if HAS_JINJA2 else "minimal",
            "tmpdir": self.tmpdir, "sysctls": list(self.sysctls_applied), "reaped": list(self.reaped),
            "path": netpath.describe(self.path_spec) if self.path_spec else "bare veth",
            "path_backend": self.path.backend if self.path else None,
        }

    def close(self):
        """Tear everything down; every step runs even if an earlier one fails."""
        errors = []
        for step in (self.stop_server, self._stop_path, self._remove_namespaces, self._remove_tmpdir):
            try:
                step()
            except Exception as e:  # noqa: BLE001 - keep tearing down; report at the end
                errors.append(str(e))
        if errors:
            raise NetstackError("lab teardown incomplete: %s" % "; ".join(errors), field="netns")

    def _stop_path(self):
        if self.path:
            self.path.close()

    def _remove_namespaces(self):
        errors = []
        try:
            self.netlab.close()
        except NetstackError as e:
            errors.append(str(e))
        for pid in self.nginx_pids_seen:
            if nsutil.pid_alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        if errors:
            raise NetstackError("; ".join(errors), field="netns")

    def _remove_tmpdir(self):
        if self.tmpdir and os.path.isdir(self.tmpdir):
            shutil.rmtree(self.tmpdir)


def _worker_user():
    """'user group' for nginx workers when running as root (nobody and its group), else None."""
    if os.geteuid() != 0:
        return None
    try:
        pw = pwd.getpwnam("nobody")
    except KeyError:
        return None
    try:
        group = grp.getgrgid(pw.pw_gid).gr_name
    except KeyError:
        group = str(pw.pw_gid)
    return "%s %s" % (pw.pw_name, group)


def benchmark(params):
    """The whole benchmark from module-style parameters (see ``validate``)."""
    p = validate(params)
    if p["mode"] == "fleet":
        return run_benchmark(p["target_url"], p["duration"], p["connections"], p["threads"], p["warmup"],
                             p["repeats"], p["timeout"], keepalive=p["keepalive"])
    with Lab(nginx_mode=p["nginx_mode"], payload_bytes=p["payload_bytes"], worker_processes=p["worker_processes"],
             connections=p["connections"], netns_prefix=p["netns_prefix"], listen_backlog=p["listen_backlog"],
             server_sysctls=p["server_sysctls"]) as lab:
        return lab.benchmark(p["duration"], p["connections"], p["threads"], p["warmup"], p["repeats"], p["timeout"],
                             p["keepalive"])
