# -*- coding: utf-8 -*-
# Copyright: netstack.tuning contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One tuning trial on a host: apply a sysctl set, benchmark nginx with wrk, revert.

The set is split by scope: net.* keys that exist in a network namespace are applied in
the lab's server namespace (where nginx runs), every other key on the host.  Both go
into ONE journal transaction with a confirm timeout, so if this process dies (the
controller was killed, the connection dropped) the host's watchdog reverts the host
keys by itself; a detached reaper also removes the lab's namespaces and nginx once this
process is gone.  On a normal run the transaction is rolled back before returning:
the host ends every trial as it started.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import signal
import sys
import time

from ansible_collections.netstack.tuning.plugins.module_utils.core.common import NetstackError, strict_int, strict_number
from ansible_collections.netstack.tuning.plugins.module_utils.tuning import httpbench, netpath
from ansible_collections.netstack.tuning.plugins.module_utils.core import kstate, nsutil
from ansible_collections.netstack.tuning.plugins.module_utils.core import sysctl as sysctl_engine
from ansible_collections.netstack.tuning.plugins.module_utils.core.journal import Journal, _proc_start

BENCH_DEFAULTS = {"nginx_mode": "static", "payload_bytes": 1024, "connections": 16, "threads": 1,
                  "duration": 5, "warmup": 1, "repeats": 3, "worker_processes": "auto", "timeout": 2,
                  "listen_backlog": 511, "keepalive": True, "path": None}

MAX_CONFIRM_TIMEOUT = 7 * 24 * 3600       # as sysctl_set: a week
MAX_REPEATS = httpbench.LIMITS["repeats"][1]
MAX_PRUNE_P99_MS = 3600 * 1000.0           # an hour: any p99 above it is no measurement


# --------------------------------------------------------------------------- input

def validate_bench(bench, field="bench"):
    """The benchmark settings of a trial (keys of BENCH_DEFAULTS), checked as http_bench
    checks its options; returns the full settings.  NetstackError naming ``bench`` (an
    unknown key) or ``bench.<key>`` (a bad value: NaN, 10**30, 0 seconds, ...)."""
    if bench is None:
        bench = {}
    if not isinstance(bench, dict):
        raise NetstackError("must be a mapping of benchmark settings (%s)" % ", ".join(sorted(BENCH_DEFAULTS)),
                            field=field)
    unknown = sorted((k for k in bench if k not in BENCH_DEFAULTS), key=repr)
    if unknown:
        raise NetstackError("unknown keys %s (known: %s)" % ([str(k)[:40] for k in unknown], sorted(BENCH_DEFAULTS)),
                            field=field)
    b = dict(BENCH_DEFAULTS)
    b.update(dict((k, v) for k, v in bench.items() if v is not None))
    params = dict(b, mode="lab")
    try:
        p = httpbench.validate(params)
    except NetstackError as e:
        raise NetstackError(e.msg, field="%s.%s" % (field, e.field) if e.field else field)
    p["path"] = netpath.validate(p["path"], field="%s.path" % field) if p.get("path") is not None else None
    return dict((k, p[k]) for k in BENCH_DEFAULTS)


def validate_sysctls(sysctls, field="sysctls"):
    """{canonical key: normalised value} of a trial's sysctls (sysctl.check): each name
    checked (no path tricks), each value parsed strictly (kstate.normalize) and its shape
    compared with the key's current value on this host (read-only): an integer key takes an
    integer, tcp_rmem three.  A key this host does not have is refused.  NetstackError
    naming the key (or ``sysctls``)."""
    return sysctl_engine.check(sysctls, field)


def validate(sysctls, bench=None, confirm_timeout=300, prune_p99_above=None, repeats=None):
    """Everything a trial takes, checked before anything starts (no lab, no namespace, no
    journal): returns (sysctls normalised, bench settings with ``repeats`` applied)."""
    strict_int(confirm_timeout, "confirm_timeout")
    if confirm_timeout <= 0:
        raise NetstackError("must be > 0: a trial is always commit-confirmed", field="confirm_timeout")
    strict_int(confirm_timeout, "confirm_timeout", 1, MAX_CONFIRM_TIMEOUT)
    if repeats is not None:
        strict_int(repeats, "repeats", 1, MAX_REPEATS)
    if prune_p99_above is not None:
        strict_number(prune_p99_above, "prune_p99_above", 0, MAX_PRUNE_P99_MS)
    b = validate_bench(bench)
    if repeats:
        b["repeats"] = repeats
    return validate_sysctls(sysctls), b


def _fresh_netns_values(keys):
    """{key: value in a fresh network namespace, or None where the key is not there or
    is read-only there (net.core.rmem_max and friends exist in every namespace since 6.x
    but only the initial one may write them: they are host keys)."""
    def work():
        out = {}
        for k in keys:
            path = os.path.join(kstate.PROC_SYS, kstate.sysctl_path(k))
            try:
                with open(path) as f:
                    out[k] = kstate.normalize_kernel(f.read()) if os.access(path, os.W_OK) else None
            except (IOError, OSError):
                out[k] = None
        return out
    return nsutil.in_child(work, setup=nsutil.new_netns)


def netns_scoped(keys):
    """{key: True if it is a net.* key that exists inside a fresh network namespace}."""
    keys = [kstate.canonical_sysctl(k) for k in keys]
    fresh = _fresh_netns_values(keys)
    return {k: k.startswith("net.") and fresh[k] is not None for k in keys}


def inspect(keys, live=False):
    """Current values and scope of ``keys``: netns-scoped ones as a fresh namespace has
    them (what a lab trial starts from), the rest from the host; with ``live`` every key as
    this process's own network namespace has it (what a study of the host itself, with a
    remote client, starts from).  Keys this kernel does not have are listed in
    ``missing`` instead of failing (a space or profile may name optional keys)."""
    canon = [kstate.canonical_sysctl(k) for k in keys]
    missing = [k for k in canon if not os.path.exists(os.path.join(kstate.PROC_SYS, kstate.sysctl_path(k)))]
    present = [k for k in canon if k not in missing]
    fresh = _fresh_netns_values(present) if present else {}
    scoped = {k: k.startswith("net.") and fresh[k] is not None for k in present}
    current = {k: fresh[k] if scoped[k] and not live else kstate.Item("sysctl", k).read() for k in present}
    return {"current": current, "missing": missing,
            "scopes": {k: ("netns" if v else "host") for k, v in scoped.items()}}


def metrics_of(runs):
    """A trial's metrics (ms; p50 .. p999, req/s, errors, per-run samples) from wrk runs
    as run_wrk returns them."""
    agg = httpbench.aggregate(runs)
    lat = agg["latency_us"]
    m = {"p50": lat["p50"] / 1000.0, "p90": lat["p90"] / 1000.0, "p99": lat["p99"] / 1000.0,
         "p999": lat["p99_9"] / 1000.0, "rps": agg["requests_per_sec"], "errors": agg["errors"]["total"],
         "requests": agg["requests"], "repeats": agg["repeats"],
         "samples": {"p99": [r["latency_us"]["p99"] / 1000.0 for r in runs],
                     "p999": [r["latency_us"]["p99_9"] / 1000.0 for r in runs],
                     "rps": [r["requests_per_sec"] for r in runs]},
         "spread": agg["spread"]}
    return m


_REAPERS = set()


def spawn_reaper(owner_pid, prefix):
    """Detached process: once ``owner_pid`` is gone, remove labs it left (namespaces,
    nginx, temp dirs).  Harmless when the owner cleaned up itself.  One per owner and
    prefix: a benchmark running hundreds of trials in one process needs only one."""
    if (owner_pid, prefix) in _REAPERS:
        return
    _REAPERS.add((owner_pid, prefix))
    start = _proc_start(owner_pid)
    pid = os.fork()
    if pid:
        os.waitpid(pid, 0)
        return
    try:
        os.setsid()
        if os.fork():
            os._exit(0)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        os.closerange(3, 65536)
        sys.stdout = sys.stderr = open(os.devnull, "w")
        deadline = time.time() + 24 * 3600
        while _proc_start(owner_pid) == start and time.time() < deadline:
            time.sleep(0.5)
        httpbench.reap_stale(prefix)
    finally:
        os._exit(0)


def run(sysctls, bench=None, confirm_timeout=300, state_dir=None, prune_p99_above=None, repeats=None,
        netns_prefix="nstrial", tune_client=False):
    """Apply ``sysctls`` (may be empty: the baseline), benchmark, revert.  Returns a dict
    with ``ok``, ``metrics``, ``pruned``, ``applied``, ``journal_id``, ``scopes``.

    The per-namespace keys go to the server's namespace, and with ``tune_client`` to the
    client's (wrk's) as well: loss recovery of the requests, and the connect side of a
    handshake, are the client kernel's."""
    validate(sysctls, bench, confirm_timeout, prune_p99_above, repeats)  # before any namespace, lab or journal
    b = dict(BENCH_DEFAULTS)
    b.update({k: v for k, v in (bench or {}).items() if v is not None})
    if repeats:
        b["repeats"] = repeats
    keys = [kstate.canonical_sysctl(k) for k in sysctls]
    scoped = netns_scoped(keys) if keys else {}
    journal = Journal(state_dir)
    spawn_reaper(os.getpid(), netns_prefix)
    out = {"ok": False, "pruned": False, "applied": [], "journal_id": None,
           "scopes": {k: ("netns" if v else "host") for k, v in scoped.items()}}
    with httpbench.Lab(nginx_mode=b["nginx_mode"], payload_bytes=b["payload_bytes"],
                       worker_processes=b["worker_processes"], connections=b["connections"],
                       netns_prefix=netns_prefix, listen_backlog=b["listen_backlog"], path=b["path"]) as lab:
        txn = None
        try:
            if sysctls:
                ns_part = {k: v for k, v in sysctls.items() if scoped[kstate.canonical_sysctl(k)]}
                host_part = {k: v for k, v in sysctls.items() if not scoped[kstate.canonical_sysctl(k)]}
                cc = ns_part.get("net.ipv4.tcp_congestion_control")
                if cc:
                    # Outside the initial namespace the kernel only lets a namespace pick a
                    # congestion control from the host's allowed list (EPERM otherwise).
                    allowed = kstate.Item("sysctl", "net.ipv4.tcp_allowed_congestion_control").read().split()
                    if str(cc) not in allowed:
                        if not os.access(os.path.join(kstate.PROC_SYS, "net/ipv4/tcp_allowed_congestion_control"),
                                         os.W_OK):
                            raise NetstackError(
                                "%s is not in this host's tcp_allowed_congestion_control (%s), which only the "
                                "initial network namespace can change: use one of those in the search space"
                                % (cc, " ".join(allowed)), field="net.ipv4.tcp_congestion_control")
                        host_part["net.ipv4.tcp_allowed_congestion_control"] = " ".join(allowed + [str(cc)])
                # host keys first: the namespace's settings may depend on them
                changes = (sysctl_engine.plan(host_part) if host_part else []) + \
                    (sysctl_engine.plan(ns_part, lab.server_netns) if ns_part else []) + \
                    (sysctl_engine.plan(ns_part, lab.client_netns) if ns_part and tune_client else [])
                writes = [(c.item, c.after) for c in changes if c.changed]
                out["applied"] = [c.as_dict() for c in changes if c.changed]
                if writes:
                    txn = journal.apply(writes, source="sysctl_trial", reason="tuning trial",
                                        confirm_timeout=confirm_timeout)
                    out["journal_id"] = txn["id"]
                lab.restart_server()  # listen-time settings (accept queue) take effect
            script = httpbench.write_lua(lab.tmpdir)
            if b["warmup"]:
                httpbench.run_wrk(lab.url, b["warmup"], b["connections"], b["threads"], b["timeout"],
                                  lab.client_netns, script, lab.wrk, lab.ip, keepalive=b["keepalive"])
            runs = []
            for i in range(b["repeats"]):
                runs.append(httpbench.run_wrk(lab.url, b["duration"], b["connections"], b["threads"],
                                              b["timeout"], lab.client_netns, script, lab.wrk, lab.ip,
                                              keepalive=b["keepalive"]))
                if i == 0 and prune_p99_above and (runs[0]["latency_us"]["p99"] or 0) / 1000.0 > prune_p99_above:
                    out["pruned"] = True
                    break
            if any(r["latency_us"].get("p99") is None for r in runs):
                raise NetstackError("a benchmark run completed no request (errors: %s)"
                                    % [r["errors"] for r in runs], field="bench")
            out["metrics"] = metrics_of(runs)
            out["ok"] = True
        except NetstackError as e:
            out["error"] = str(e)
            out["field"] = e.field
        finally:
            if txn:
                journal.rollback(txn["id"], by="rollback", reason="end of tuning trial")
    return out
