# -*- coding: utf-8 -*-
"""Property-based tests of every module's input surface (hypothesis).

For each of the 12 modules in plugins/modules/ the arguments are generated from the
module's own argument_spec (captured from its main(), see modharness.module_spec; for
sysctl_study, an action plugin whose module file is documentation only, from the action
plugin's ARGS).  Every case runs the real main() (or the action plugin's run()) in a
forked, sandboxed child (modharness: private mount/net/PID namespaces, read-only root,
throwaway layers for what modules write) and must end in:

* a JSON result that succeeds, or fails with a message naming the offending field (an
  option, a dotted sub-field, or an input key such as a sysctl name);
* never an exception escaping main(), never "Traceback"/"MODULE FAILURE" in the result;
* never a hang (20 s per case);
* never a change after a failure, never a write of any kind in check mode;
* never a change to the real host (checked from the parent, before/after each case).

Two phases per module:

1. a one-factor sweep: each option (and each sub-option, dict key and list element of a
   plausible base value) gets each value of a fixed list for its type - wrong types,
   NUL bytes, 5,000-character and 5,000-digit strings, 1e400, nan, inf, Arabic-Indic
   digits, path tricks (``..``, ``/proc/self/...``, relative paths), 10**30 - plus one
   unknown option and every conflict the spec declares (mutually_exclusive, required_if);
2. hypothesis: plausible arguments with 0-3 random mutations (an evil value, a spoiled
   nested leaf, an unknown option, a conflict, a dropped required option), check mode
   and diff drawn at random.

Modules that would start real work on valid input never do it here:

* in check mode (the sweep of every heavy module, half of the random cases) they must not
  reach it at all;
* in real mode a heavy case always carries one *forced-invalid* field (an unknown option, a
  value outside ``choices``, an unconvertible type, an int of 10**30, a NaN/inf float, a
  NUL byte in a path, plus the module's own documented limits below), so the module must
  fail before any work;
* and tripwires stand where the work starts (named per module below): reaching one raises
  WorkReached in the child, which is a finding in check mode or with a forced-invalid
  field, and simply ends the case otherwise.

Light modules (sysctl_set, netstack_journal, netstack_facts, tcp_policy with maps the
sandbox pins itself, traffic_profile's analyze action, bpf_program/shm_agent state=absent)
run with fully random arguments in both modes: whatever they write lands in the sandbox.

The suite is bounded: NETSTACK_PROPS_SCALE (default 1) scales the number of cases, and each
module has a time budget; ``tests/output/properties-summary.json`` records per module the
cases run, their outcomes and every distinct violation with a minimized argument set
(printed at the end of the pytest run).  NETSTACK_PROPS_RANDOM=1 draws new random cases
(the default is derandomized: the same cases every run).
"""

from __future__ import absolute_import, division, print_function

import os
import re
import time

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, Phase, given, settings, strategies as st  # noqa: E402

import modharness as H  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCALE = float(os.environ.get("NETSTACK_PROPS_SCALE", "1"))

settings.register_profile(
    "netstack-props", database=None, deadline=None, print_blob=False,
    derandomize=os.environ.get("NETSTACK_PROPS_RANDOM", "") not in ("1", "yes", "true"),
    phases=[Phase.explicit, Phase.generate],   # violations are minimized by the harness, see Suite.minimize
    suppress_health_check=list(HealthCheck))
PROFILE = settings.get_profile("netstack-props")


def _read(rel):
    with open(os.path.join(ROOT, rel)) as f:
        return f.read()


# ------------------------------------------------------------------ plausible values (not the spec: that is read)

NET_KEYS = ["net.ipv4.tcp_keepalive_time", "net.core.somaxconn", "net.ipv4.tcp_rmem", "net.ipv4.tcp_fin_timeout",
            "net.ipv4.tcp_congestion_control", "net.ipv4.ip_local_port_range", "net.ipv4.tcp_fastopen",
            "net/ipv4/tcp_syncookies", "net.ipv6.conf.lo.disable_ipv6", "net.ipv4.conf.all.rp_filter",
            "vm.swappiness", "kernel.sched_autogroup_enabled", "net.core.rmem_max", "net.ipv4.nosuch_key"]
NET_VALUES = st.one_of(st.integers(0, 100000), st.sampled_from(["4096 87380 6291456", "cubic", "reno", "bbr",
                                                                 "1024 65000", "1", "0", " 300 "]))
SYSCTL_DICT = st.dictionaries(st.sampled_from(NET_KEYS), NET_VALUES, min_size=1, max_size=3)
JOURNAL_IDS = st.sampled_from(["000001", "000002", "000003", "000004", "000099", "1", "../000001", "latest"])
NETNS = st.sampled_from(["nsprop0", "nsprop-missing", "a" * 64, "lo"])
DIRS = st.sampled_from([H.STATE_DIR, H.CASE_DIR + "/d", H.CASE_DIR + "/new/sub", H.WORK_DIR])
TCP_SOURCE = _read("bpf/tcp_tuning.bpf.c")
SHM_SOURCE = _read("bpf/shm_path.bpf.c")
TRAFFIC_SOURCE = _read("bpf/traffic.bpf.c")
BENCH_KEYS = ["nginx_mode", "payload_bytes", "connections", "threads", "duration", "warmup", "repeats",
              "worker_processes", "timeout"]
BENCH = st.fixed_dictionaries({}, optional={
    "nginx_mode": st.sampled_from(["static", "proxy"]), "payload_bytes": st.integers(0, 1 << 20),
    "connections": st.integers(1, 256), "threads": st.integers(1, 4), "duration": st.integers(1, 30),
    "warmup": st.integers(0, 5), "repeats": st.integers(1, 5), "worker_processes": st.sampled_from(["auto", "1", "2"]),
    "timeout": st.integers(1, 10)})
PORTS = st.one_of(st.integers(1, 65535).map(str), st.sampled_from(["80", "1000-2000", "6379", "443", "0-0"]),
                  st.integers(1, 65535))
CIDRS = st.sampled_from(["10.0.0.0/8", "198.18.0.0/15", "::1/128", "127.0.0.1", "fd00::/8", "0.0.0.0/0"])
TCP_RULE = st.fixed_dictionaries(
    {"name": st.text("abcdefgh_", min_size=1, max_size=8)},
    optional={
        "match": st.fixed_dictionaries({}, optional={
            "remote": CIDRS, "remote_ports": PORTS, "local_ports": PORTS,
            "peer_active_flows_gt": st.integers(0, 100), "peer_long_flows_gt": st.integers(0, 100)}),
        "set": st.fixed_dictionaries({}, optional={
            "congestion_control": st.sampled_from(["cubic", "reno", "bbr"]), "initial_cwnd": st.integers(1, 100),
            "rto_min_ms": st.integers(1, 1000), "delack_max_ms": st.integers(1, 200),
            "sndbuf": st.integers(4096, 1 << 24), "rcvbuf": st.integers(4096, 1 << 24),
            "cwnd_clamp": st.integers(1, 10000), "notsent_lowat": st.integers(1, 1 << 20),
            "syn_rto_ms": st.integers(1, 3000)})})
SHM_POLICY = st.fixed_dictionaries({"name": st.sampled_from(["redis", "pg", "app_1"]), "ports": PORTS})
SPACE_PATH = os.path.join(ROOT, "roles", "sysctl_tuner", "files", "spaces", "nginx_latency.yml")


def UNKNOWN_BENCH_KEY(v):
    return isinstance(v, dict) and any(k not in BENCH_KEYS for k in v)


def _space_dict():
    import yaml
    return yaml.safe_load(_read("roles/sysctl_tuner/files/spaces/nginx_latency.yml"))


# ------------------------------------------------------------------ sandbox setup hooks (run in the child)

def _seed_journal(args):
    """Three transactions in the case's state dir (net.* keys of the child's namespace):
    000001 applied, 000002 applied and waiting for confirmation (its watchdog dies with
    the sandbox), 000003 rolled back."""
    from ansible_collections.netstack.tuning.plugins.module_utils.core import journal, kstate
    j = journal.Journal(H.STATE_DIR)
    j.apply([(kstate.Item("sysctl", "net.ipv4.tcp_keepalive_time"), "7201")], source="nsprop", reason="seed")
    real_spawn = journal.spawn_watchdog
    journal.spawn_watchdog = _standin_watchdog   # alive, silent: its log lines would race the snapshot
    try:
        j.apply([(kstate.Item("sysctl", "net.core.somaxconn"), "1000")], source="nsprop", reason="seed",
                confirm_timeout=3600)
    finally:
        journal.spawn_watchdog = real_spawn
    s = j.apply([(kstate.Item("sysctl", "net.ipv4.tcp_fin_timeout"), "33")], source="nsprop", reason="seed")
    j.rollback(s["id"], by="nsprop", reason="seed")


def _standin_watchdog(*_args):
    """A live process in the watchdog's place (it dies with the sandbox's PID namespace)."""
    pid = os.fork()
    if pid == 0:
        os.closerange(3, 4096)
        while True:
            time.sleep(3600)
    return pid


def _mentions(args, text):
    return text in repr(args)


def _named_netns(name):
    """A named network namespace inside the sandbox (as `ip netns add`), for netns options."""
    import ctypes
    path = "/run/netns/" + name
    os.makedirs("/run/netns", exist_ok=True)
    open(path, "w").close()
    pid = os.fork()
    if pid == 0:
        try:
            H.nsutil.libc_call("unshare", "unshare", H.CLONE_NEWNET)
            H.nsutil.libc_call("mount", "bind netns", b"/proc/self/ns/net", path.encode(), b"none",
                               ctypes.c_ulong(H.MS_BIND), None)
            os._exit(0)
        except BaseException:
            os._exit(1)
    os.waitpid(pid, 0)


def _seed_flows():
    d = H.CASE_DIR + "/flows"
    os.makedirs(d, exist_ok=True)
    rows = ["ts,link,direction,prefix,proto,port_class,dscp,bytes,packets"]
    t0 = 1757203200
    for i in range(24):
        for pfx, port in (("10.1.0.0/24", "web"), ("198.18.3.0/24", "dns"), ("2001:db8::/48", "ephemeral")):
            rows.append("%d,eth0,%s,%s,6,%s,0,%d,%d" % (t0 + i * 900, "in" if i % 3 else "out", pfx, port,
                                                          1000 + 37 * i * len(pfx), 10 + i))
    with open(d + "/2025-09-07.csv", "w") as f:
        f.write("\n".join(rows) + "\n")
    with open(H.CASE_DIR + "/garbage.csv", "w") as f:
        f.write("not,a\x00,flow log\n" + "\u0663" * 50 + "\n")


def _seed_tcp_maps(pin_dir="/sys/fs/bpf/netstack/tcp_tuner"):
    """The maps of a loaded tcp_tuner, made and pinned with bpf(2) in the sandbox's own
    bpffs (no program, no bcc): tcp_policy then reads and writes real maps."""
    from ansible_collections.netstack.tuning.plugins.module_utils.bpf import program as bpf
    from ansible_collections.netstack.tuning.plugins.module_utils.tcp_tuning import policy as tcppolicy
    os.makedirs(pin_dir + "/maps", exist_ok=True)
    maps = {"rules": (2, 4, tcppolicy.RULE_SIZE, 64), "cfg": (2, 4, 24, 1), "hits": (6, 4, 16, 64),
            "peers": (9, 16, 24, 4096)}
    for name, (typ, ks, vs, n) in maps.items():
        fd = bpf.sys_bpf(0, bpf._attr("<IIIII", typ, ks, vs, n, 0))   # BPF_MAP_CREATE
        bpf.obj_pin(fd, os.path.join(pin_dir, "maps", name))
        os.close(fd)


def make_setup(dir_defaults, journal=False, flows=False, tcp_maps=False):
    def setup(args):
        for opt, d in dir_defaults.items():
            os.makedirs(d, exist_ok=True)
        if journal is True or (journal and journal(args)):
            _seed_journal(args)
        if flows:
            _seed_flows()
        if tcp_maps:
            _seed_tcp_maps()
        if _mentions(args, "nsprop0"):
            _named_netns("nsprop0")
        return args
    return setup


# ------------------------------------------------------------------ the modules

class Target(object):
    def __init__(self, name, base=None, hints=None, dict_keys=None, heavy=lambda a: False, tripwires=(),
                 setup_kw=None, env_failures=(), forced_extra=(), examples=60, budget=15.0, inner=None,
                 host_readonly=None, sysctl_dicts=(), number_dicts=(), sweep_alt=(), why=""):
        self.name = name
        self.spec_kw, self.kind = H.module_spec(name)
        self.spec = self.spec_kw["argument_spec"]
        self.dir_defaults = {}
        for opt, o in sorted(self.spec.items()):
            d = o.get("default")
            if o.get("type") == "path" and isinstance(d, str) and d.startswith("/") and \
                    not d.startswith("/sys/fs/bpf"):
                self.dir_defaults[opt] = H.STATE_DIR if opt == "state_dir" else H.CASE_DIR + "/" + opt
        self.base = dict(base or {})
        self.sweep_alt = sweep_alt   # [(base, [options])]: options swept from another mode's base
        self.heavy = heavy
        self.tripwires = tuple(tripwires)
        self.env_failures = env_failures
        self.forced_extra = [(why, opt, val) for why, opt, val, _p in forced_extra]
        self.forced_preds = [(why, opt, pred) for why, opt, _v, pred in forced_extra]
        self.sysctl_dicts, self.number_dicts = sysctl_dicts, number_dicts
        self.examples = max(5, int(examples * SCALE))
        self.budget = budget * max(SCALE, 1.0)
        self.why = why
        hints = dict(hints or {})
        self.values = H.Values(self.spec, hints=hints, dict_keys=dict_keys or {})
        self.setup = make_setup(self.dir_defaults, **(setup_kw or {}))
        if self.kind == "action":
            self.runner = H.action_runner(name, tripwires, inner=inner, host_readonly=host_readonly)
        else:
            self.runner = H.module_runner(name, tripwires)

    def forced(self, args):
        return H.classify_forced(self.spec, args, self.sysctl_dicts, self.number_dicts, self.forced_preds)


def _state(a):
    return a.get("state", "present")


TARGETS = {}


def _t(name, **kw):
    TARGETS[name] = kw


_t("sysctl_set", why="light: writes net.* sysctls of the sandbox's namespace and files in its layers",
   base={"sysctls": {"net.ipv4.tcp_keepalive_time": 7300}},
   hints={"sysctls": SYSCTL_DICT, "names": st.lists(st.sampled_from(NET_KEYS), max_size=3),
          "journal_id": JOURNAL_IDS, "netns": NETNS, "persist_file": st.sampled_from(["90-nsprop.conf", "nsprop"]),
          "confirm_timeout": st.integers(0, 3600), "reason": st.text(max_size=20)},
   dict_keys={"sysctls": NET_KEYS}, sysctl_dicts=("sysctls",), examples=80, budget=18,
   setup_kw={"journal": lambda a: a.get("state") == "rolled_back" or "journal_id" in a or "names" in a})
_t("netstack_journal", why="light: reads and rolls back the seeded journal in the sandbox",
   hints={"journal_id": JOURNAL_IDS, "limit": st.integers(0, 100)}, setup_kw={"journal": True},
   forced_extra=[("limit beyond the documented 100000", "limit", 100001, lambda v: (H._as_int(v) or 0) > 100000)],
   sweep_alt=[({"action": "rollback", "journal_id": "000001"}, ["journal_id"])],
   examples=60, budget=12)
_t("netstack_facts", why="light: reads only", hints={"netns": NETNS}, examples=30, budget=8)
_t("shm_probe", why="heavy (forks an echo server and a client for seconds x rounds): check mode, or real mode with "
                    "a forced-invalid field; tripwire pingpong.run",
   base={"path_port": 16380, "tcp_port": 16480},
   heavy=lambda a: True, tripwires=["shm_path.pingpong.run"],
   hints={"path_port": st.integers(-1, 70000), "tcp_port": st.integers(-1, 70000), "size": st.integers(0, 2 << 20),
          "seconds": st.floats(0, 100), "rounds": st.integers(0, 30),
          "cgroup": st.sampled_from(["/", "netstack-none", "../../etc", "/sys/fs/cgroup"]),
          "name": st.sampled_from(["shm", "site_shm", "a/b", ""])},
   forced_extra=[("rounds beyond 20", "rounds", 21, lambda v: (H._as_int(v) or 0) > 20)], examples=40, budget=10)
_t("tcp_policy", why="light here: the sandbox pins tcp_tuner's maps itself (no program, no bcc), so rules are "
                     "really written, into maps that die with the sandbox",
   base={"rules": [{"name": "web", "match": {"remote_ports": "80"}, "set": {"initial_cwnd": 20}}]},
   hints={"rules": st.lists(TCP_RULE, max_size=3), "program": st.sampled_from(["tcp_tuner", "other", "a/b"]),
          "pin_root": st.sampled_from(["/sys/fs/bpf/netstack", "/sys/fs/bpf/nsprop", H.CASE_DIR]),
          "kernel_hz": st.sampled_from([100, 250, 300, 1000]), "long_flow_bytes": st.integers(1, 1 << 30)},
   setup_kw={"tcp_maps": True}, examples=50, budget=12)
_t("traffic_profile", why="analyze is light (reads flow files, writes output/report in the sandbox); collect is "
                          "heavy (loads BPF, scrapes): check mode, or real mode with a forced-invalid field; "
                          "tripwires bpf.compile_and_load, trafficcollect.scrape_loop, agent.notify",
   base={"action": "analyze", "sources": [H.CASE_DIR + "/flows"]},
   heavy=lambda a: a.get("action") != "analyze",
   tripwires=["bpf.program.compile_and_load", "traffic.collect.scrape_loop", "agent.control.notify"],
   hints={"sources": st.lists(st.sampled_from([H.CASE_DIR + "/flows", H.CASE_DIR + "/flows/2025-09-07.csv",
                                               H.CASE_DIR + "/flows/*.csv", H.CASE_DIR + "/garbage.csv",
                                               H.CASE_DIR + "/missing.csv"]), min_size=1, max_size=2),
          "interfaces": st.lists(st.sampled_from(["lo", "eth0", "nsprop9"]), min_size=1, max_size=2),
          "netns": NETNS, "output": st.sampled_from([H.CASE_DIR + "/out.json", H.CASE_DIR + "/new/out.json"]),
          "report": st.sampled_from([H.CASE_DIR + "/report.html"]), "store": DIRS,
          "local_prefixes": st.lists(CIDRS, max_size=2), "link_prefix": st.sampled_from(["lab", "h1"]),
          "source_text": st.sampled_from([TRAFFIC_SOURCE, "int x;"]),
          "hosts": st.dictionaries(st.sampled_from(["h1", "h2"]), st.dictionaries(st.sampled_from(["note"]),
                                                                                 st.text(max_size=8)))},
   dict_keys={"analysis": H.doc_keys("traffic_profile", "analysis")}, number_dicts=("analysis",),
   sweep_alt=[({"action": "collect", "interfaces": ["lo"], "source_text": TRAFFIC_SOURCE},
               ["state", "mode", "duration", "keep", "config_dir", "interfaces", "netns", "max_flows", "interval",
                "store", "retention_days", "link_prefix", "name", "notify_agent", "source_text"])],
   setup_kw={"flows": True}, examples=50, budget=18)
_t("bpf_program", why="present is heavy (compiles and loads with bcc; .venv's Python has no bcc, and the "
                      "tripwire bpf.compile_and_load stops it anyway): check mode, or real mode with a "
                      "forced-invalid field; absent is light (pins and records of the sandbox)",
   base={"name": "nsprop", "source_text": TCP_SOURCE,
         "programs": [{"function": "tcp_tuner", "type": "sock_ops", "cgroup": "/sys/fs/cgroup/unified"}]},
   heavy=lambda a: _state(a) != "absent", tripwires=["bpf.program.compile_and_load"],
   hints={"name": st.sampled_from(["nsprop", "tcp_tuner", "a-b_c"]),
          "source_text": st.sampled_from([TCP_SOURCE, "int x;", ""]),
          "src": st.sampled_from(["tcp_tuning.bpf.c", os.path.join(ROOT, "bpf", "tcp_tuning.bpf.c")]),
          "programs.function": st.sampled_from(["tcp_tuner", "nosuch"]),
          "programs.cgroup": st.sampled_from(["/sys/fs/cgroup/unified", "/", "nsprop.slice"]),
          "programs.interface": st.sampled_from(["lo", "eth0"]), "programs.netns": NETNS,
          "programs.map": st.sampled_from(["rules", "nosuch"]), "cflags": st.lists(st.sampled_from(["-DX=1", "-O2"]))},
   env_failures=[r"bcc is not importable"], examples=40, budget=12)
_t("shm_agent", why="present is heavy (loads BPF): check mode, or real mode with a forced-invalid field; "
                    "tripwires bpf.compile_and_load, agent.notify; absent is light",
   base={"policies": [{"name": "redis", "ports": "6379"}], "source_text": SHM_SOURCE},
   heavy=lambda a: _state(a) != "absent", tripwires=["bpf.program.compile_and_load", "agent.control.notify"],
   hints={"policies": st.lists(SHM_POLICY, max_size=3), "source_text": st.sampled_from([SHM_SOURCE, "int x;"]),
          "local_addresses": st.lists(CIDRS, max_size=3),
          "cgroup": st.sampled_from(["/", "/sys/fs/cgroup/unified", "nsprop.slice"]),
          "name": st.sampled_from(["shm", "other"])},
   env_failures=[r"bcc is not importable"], examples=40, budget=12)
_t("cpu_partition", why="heavy (writes cgroups, IRQ affinity, RPS/XPS): check mode, or real mode with a "
                        "forced-invalid field; tripwires journal.Journal.apply, amp._irqbalance_restart, "
                        "agent.notify",
   base={"interfaces": ["lo"], "app_cgroups": ["nsprop.slice"]}, heavy=lambda a: True,
   tripwires=["core.journal.Journal.apply", "amp.partition._irqbalance_restart", "agent.control.notify"],
   hints={"interfaces": st.lists(st.sampled_from(["lo", "eth0", "nsprop9"]), min_size=1, max_size=2),
          "net_cpus": st.sampled_from(["auto", 1, "1", "0", "0-1", [0], "1,3", 0]),
          "app_cgroups": st.lists(st.sampled_from(["nsprop.slice", "/sys/fs/cgroup/cpuset/x", "system.slice"]),
                                  max_size=2),
          "app_units": st.lists(st.sampled_from(["nginx.service", "nsprop.service"]), max_size=2),
          "name": st.sampled_from(["amp", "nsprop"]), "rps_sock_flow_entries": st.integers(0, 1 << 16)},
   dict_keys={"controller": H.doc_keys("cpu_partition", "controller")}, number_dicts=("controller",),
   examples=40, budget=14)
_t("http_bench", why="heavy (nginx + wrk in namespaces): check mode, or real mode with a forced-invalid field; "
                     "tripwires httpbench.Lab.__enter__, httpbench.run_benchmark",
   heavy=lambda a: True, tripwires=["tuning.httpbench.Lab.__enter__", "tuning.httpbench.run_benchmark"],
   hints={"target_url": st.sampled_from(["http://127.0.0.1:8080/", "https://[::1]/x", "ftp://x", "127.0.0.1"]),
          "worker_processes": st.sampled_from(["auto", "1", "2"]), "server_sysctls": SYSCTL_DICT,
          "netns_prefix": st.sampled_from(["nsbench", "nsprop", "x" * 30]), "connections": st.integers(1, 64),
          "threads": st.integers(1, 4), "duration": st.integers(1, 30)},
   dict_keys={"server_sysctls": NET_KEYS}, sysctl_dicts=("server_sysctls",),
   sweep_alt=[({"mode": "fleet", "target_url": "http://127.0.0.1:8080/"}, ["target_url"])],
   forced_extra=[("absurd number string", "worker_processes", H.BIG_DIGITS,
                  lambda v: isinstance(v, str) and bool(re.search(r"[0-9]{20,}", v)))], examples=40, budget=12)
_t("zerocopy_test", why="heavy (builds a helper, sends traffic): check mode, or real mode with a forced-invalid "
                        "field; tripwire zerocopy.make_helper",
   heavy=lambda a: True, tripwires=["zerocopy.measure.make_helper"],
   hints={"sizes": st.lists(st.sampled_from(["1K", "4K", 64, "1M", "64K"]), min_size=1, max_size=3),
          "peer": st.sampled_from(["198.18.0.2", "::1", "nsprop.invalid"]),
          "listen_address": st.sampled_from(["127.0.0.1", "::1", "198.18.0.1"]),
          "sender_cpu": st.integers(0, 1), "receiver_cpu": st.integers(0, 1),
          "netns_prefix": st.sampled_from(["nszc", "nsprop"]), "duration": st.floats(0.1, 5),
          "helper_source": st.none()},
   sweep_alt=[({"serve": True, "listen_address": "127.0.0.1"}, ["serve_clients", "serve_timeout", "listen_address"])],
   forced_extra=[("absurd size", "sizes", [H.BIG_DIGITS],
                  lambda v: isinstance(v, list) and any(isinstance(x, str) and re.search(r"[0-9]{20,}", x)
                                                        for x in v))], examples=40, budget=14)
_t("sysctl_trial", why="action=run is heavy (applies sysctls in a lab and benchmarks): check mode, or real mode "
                       "with a forced-invalid field (confirm_timeout <= 0 and unknown bench keys are documented "
                       "refusals); tripwire httpbench.Lab.__enter__; action=inspect is light",
   base={"sysctls": {"net.core.somaxconn": 1024}},
   heavy=lambda a: a.get("action", "run") != "inspect", tripwires=["tuning.httpbench.Lab.__enter__"],
   hints={"sysctls": SYSCTL_DICT, "keys": st.lists(st.sampled_from(NET_KEYS), max_size=3), "bench": BENCH,
          "confirm_timeout": st.integers(1, 600), "repeats": st.integers(1, 5),
          "prune_p99_above": st.floats(0.1, 100)},
   dict_keys={"bench": BENCH_KEYS}, sysctl_dicts=("sysctls",), number_dicts=("bench",),
   sweep_alt=[({"action": "inspect", "keys": ["net.core.somaxconn"]}, ["keys"])],
   forced_extra=[("not commit-confirmed", "confirm_timeout", 0, lambda v: H._as_int(v) == 0),
                 ("unknown bench key", "bench", {"nsprop": 1}, UNKNOWN_BENCH_KEY)], examples=40, budget=12)
_t("sysctl_study", why="an action plugin (the module file is documentation): its run() is called as the task "
                       "executor would, the sysctl_trial calls it makes run in-process with sysctl_trial's tripwire "
                       "httpbench.Lab.__enter__ (the baseline benchmark's lab); the inspection reads the host's sysctls from a grandchild "
                       "back in the host's network namespace with /proc/sys/net read-only (the keys of the default "
                       "space are host-wide). Check mode, or real mode with a forced-invalid field",
   heavy=lambda a: True, tripwires=["tuning.httpbench.Lab.__enter__"],
   host_readonly={"sysctl_trial": lambda a: a.get("action") == "inspect"},
   hints={"space": st.sampled_from([None, SPACE_PATH, "nginx_latency.yml", "/nonexistent.yml"]) |
          st.just(_space_dict()), "bench": BENCH, "trials": st.integers(1, 50),
          "objectives": st.sampled_from([["p99"], ["p99", "rps"], ["rps"]]),
          "storage": st.sampled_from([H.CASE_DIR + "/s.db", "sqlite:///" + H.CASE_DIR + "/s.db",
                                      "postgresql+psycopg2://optuna@db.example/optuna"]),
          "report": st.sampled_from([H.CASE_DIR + "/r.html"]), "verify_rounds": st.integers(3, 9),
          "alpha": st.floats(0.001, 0.2), "min_rps_ratio": st.floats(0.5, 1), "prune_factor": st.floats(1, 4)},
   dict_keys={"bench": BENCH_KEYS}, number_dicts=("bench",),
   forced_extra=[("too few trials", "trials", 0, lambda v: H._as_int(v) == 0),
                 ("fewer than 3 verify rounds", "verify_rounds", 1, lambda v: H._as_int(v) in (0, 1, 2)),
                 ("unknown bench key", "bench", {"nsprop": 1}, UNKNOWN_BENCH_KEY)],
   examples=30, budget=24)


# ------------------------------------------------------------------ case generation

def _spoil(draw, v, depth=0):
    """Replace one leaf of a nested value with an evil one (or spoil a key)."""
    if isinstance(v, dict) and v and depth < 4:
        k = draw(st.sampled_from(sorted(v, key=repr)))
        c = draw(st.integers(0, 9))
        if c == 0:
            return dict((a, b) for a, b in v.items() if a != k)
        if c == 1:
            nv = dict(v)
            nv[draw(st.sampled_from(H.EVIL_KEYS))] = v[k]
            return nv
        nv = dict(v)
        nv[k] = _spoil(draw, v[k], depth + 1)
        return nv
    if isinstance(v, list) and v and depth < 4:
        i = draw(st.integers(0, len(v) - 1))
        nv = list(v)
        nv[i] = _spoil(draw, v[i], depth + 1)
        return nv
    return draw(st.one_of(st.sampled_from(H.DICT_VALUE_SWEEP), H.scalar_evil()))


def _constraints(t):
    kw = t.spec_kw
    out = []
    for pair in kw.get("mutually_exclusive") or []:
        out.append(("mutually_exclusive", tuple(pair)))
    for r in kw.get("required_if") or []:
        out.append(("required_if", tuple(r)))
    for grp in kw.get("required_together") or []:
        out.append(("required_together", tuple(grp)))
    for grp in kw.get("required_one_of") or []:
        out.append(("required_one_of", tuple(grp)))
    return out


def _apply_constraint(t, args, c, valid):
    """Break one declared constraint: both of a mutually exclusive pair, a required_if
    trigger without what it requires, ..."""
    kind, what = c
    if kind == "mutually_exclusive":
        for k in what:
            args[k] = valid(k)
    elif kind == "required_if":
        key, val, reqs = what[0], what[1], what[2]
        args[key] = val
        for r in reqs:
            args.pop(r, None)
    elif kind == "required_together":
        args[what[0]] = valid(what[0])
        for k in what[1:]:
            args.pop(k, None)
    elif kind == "required_one_of":
        for k in what:
            args.pop(k, None)
    return "%s %s" % (kind, H.compact(list(what)))


@st.composite
def random_case(draw, t):
    spec = t.spec
    args = {}
    for name in sorted(spec):
        o = spec[name]
        if o.get("required") or draw(st.integers(0, 99)) < 35:
            args[name] = draw(t.values.valid(name, o))
    for name, d in t.dir_defaults.items():
        if name not in args or draw(st.integers(0, 9)) < 7:
            args[name] = d
    mutations = []
    constraints = _constraints(t)
    for _ in range(draw(st.sampled_from([0, 0, 1, 1, 1, 2, 3]))):
        kind = draw(st.sampled_from(["evil"] * 5 + ["nested"] * 3 + ["unknown", "conflict", "drop"]))
        if kind == "evil":
            name = draw(st.sampled_from(sorted(spec)))
            args[name] = draw(t.values.evil(name, spec[name]))
            mutations.append("evil %s" % name)
        elif kind == "nested":
            nested = sorted(k for k, v in args.items() if isinstance(v, (dict, list)) and v)
            if nested:
                name = draw(st.sampled_from(nested))
                args[name] = _spoil(draw, args[name])
                mutations.append("spoiled %s" % name)
        elif kind == "unknown":
            args["nsprop_unknown_option"] = draw(st.one_of(st.just("x"), H.scalar_evil()))
            mutations.append("unknown option")
        elif kind == "conflict" and constraints:
            c = draw(st.sampled_from(constraints))
            mutations.append(_apply_constraint(t, args, c, lambda k: draw(t.values.valid(k, spec[k]))))
        elif kind == "drop":
            req = sorted(k for k, o in spec.items() if o.get("required"))
            if req:
                args.pop(draw(st.sampled_from(req)), None)
                mutations.append("dropped required")
    check = draw(st.booleans())
    forced = t.forced(args)
    if forced is None and ((not check and t.heavy(args)) or draw(st.integers(0, 9)) < 2):
        inject = draw(st.sampled_from(t.values.forced_candidates(t.forced_extra)))
        args[inject[1]] = inject[2]
        forced = t.forced(args) or inject
        mutations.append("forced invalid %s" % inject[1])
    return {"args": args, "check": check, "diff": draw(st.booleans()), "forced": forced, "mutations": mutations}


def _leaves(v, path=()):
    if isinstance(v, dict):
        for k in sorted(v, key=repr):
            for p in _leaves(v[k], path + (k,)):
                yield p
    elif isinstance(v, list):
        for i, x in enumerate(v):
            for p in _leaves(x, path + (i,)):
                yield p
    else:
        yield path


def _set_path(v, path, new):
    if not path:
        return new
    if isinstance(v, dict):
        out = dict(v)
    else:
        out = list(v)
    out[path[0]] = _set_path(v[path[0]], path[1:], new)
    return out


LEAF_SWEEP = [None, "", H.BIG_DIGITS, "nan", -1, 10 ** 30, "a\x00b", {"a": 1}]


def sweep_cases(t):
    """The one-factor sweep (deterministic): each option from the base of the mode it
    belongs to (``sweep_alt``), heavy bases in check mode, light ones in both modes.
    Streams (an option's values, a dict key's values, a nested leaf's values) are merged
    round-robin, so a time budget that cuts the sweep short cuts every stream's tail, not
    the options that sort last."""
    spec = t.spec
    main = dict(t.dir_defaults)
    main.update(t.base)
    bases = {}
    for alt, opts in t.sweep_alt:
        for o in opts:
            bases[o] = dict(t.dir_defaults, **alt)
    first = [(dict(main), "base")] + [(dict(t.dir_defaults, **alt), "alternative base") for alt, _o in t.sweep_alt]
    first.append((dict(main, nsprop_unknown_option="x"), "unknown option"))
    for c in _constraints(t):
        args = dict(main)
        what = _apply_constraint(t, args, c, lambda k: t.base.get(k) or _first_valid(t, k))
        first.append((args, what))
    streams = [first]
    for i, name in enumerate(sorted(spec)):
        o = spec[name]
        base = bases.get(name, main)
        streams.append([(dict(base, **{name: v}), "%s=%s" % (name, H.compact(v, 20)))
                        for v in H.sweep_values(H._typ(o), i)])
        if H._typ(o) == "dict" and not o.get("options"):
            keys = (t.values.dict_keys.get(name) or [])[:1]
            if name in t.sysctl_dicts:   # a sysctl holding one int, one holding several, one holding a name
                keys = ["net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_rmem", "net.ipv4.tcp_congestion_control"]
            for k in keys:
                streams.append([(dict(base, **{name: {k: v}}), "%s.%s=%s" % (name, k, H.compact(v, 20)))
                                for v in H.DICT_VALUE_SWEEP])
            if name in t.number_dicts:
                streams.append([(dict(base, **{name: {k: float("nan")}}), "%s.%s=nan" % (name, k))
                                for k in (t.values.dict_keys.get(name) or [])[1:]])
            streams.append([(dict(base, **{name: {ek: 1}}), "%s key %s" % (name, H.compact(ek, 20)))
                            for ek in H.SWEEP_KEYS])
        if isinstance(base.get(name), (dict, list)) and base.get(name):
            for path in _leaves(base[name]):
                streams.append([(dict(base, **{name: _set_path(base[name], path, v)}),
                                 "%s%s=%s" % (name, list(path), H.compact(v, 20))) for v in LEAF_SWEEP])
    cases = []
    for rank in range(max(len(x) for x in streams)):
        for stream in streams:
            if rank < len(stream):
                args, what = stream[rank]
                n = len(cases)
                cases.append({"args": args, "check": True if t.heavy(args) else bool(n % 2), "diff": bool(n % 3 == 0),
                              "forced": t.forced(args), "mutations": [what]})
    return cases


def _first_valid(t, name):
    o = t.spec[name]
    if o.get("choices"):
        return o["choices"][0] if H._typ(o) != "list" else [o["choices"][0]]
    return {"str": "nsprop", "int": 1, "float": 1.0, "bool": True, "path": H.CASE_DIR + "/p", "list": ["lo"],
            "dict": {"k": 1}}.get(H._typ(o), "nsprop")


# ------------------------------------------------------------------ the tests

_SANDBOX = {}
H.preload()


def _sandbox_or_skip():
    if "why" not in _SANDBOX:
        _SANDBOX["why"] = H.sandbox_works()
    if _SANDBOX["why"]:
        pytest.skip(_SANDBOX["why"])


def test_every_module_is_covered():
    """A new module in plugins/modules/ must get a target here."""
    mods = sorted(f[:-3] for f in os.listdir(os.path.join(ROOT, "plugins", "modules"))
                  if f.endswith(".py") and not f.startswith("_"))
    assert mods == sorted(TARGETS)


@pytest.mark.root
@pytest.mark.parametrize("name", sorted(TARGETS))
def test_module_properties(name):
    _sandbox_or_skip()
    t = Target(name, **TARGETS[name])
    suite = H.Suite(name, t.spec, t.runner, setup=t.setup, env_failures=t.env_failures, budget_s=t.budget,
                    doc_scopes=H.doc_scopes(name))
    for case in sweep_cases(t):
        suite.run(case, "sweep")

    @settings(PROFILE, max_examples=t.examples)
    @given(case=random_case(t))
    def random_cases(case):
        suite.run(case, "random")
    random_cases()
    summary = suite.finish()
    report = H.format_report(summary)
    print("\n" + report)
    assert not summary["violations"], report


@pytest.mark.root
def test_oracle_catches_what_it_should():
    """The harness itself: a hang, an escaped exception, a check-mode write, a failure
    that names nothing, and the sandbox holding writes to /etc and /proc/sys."""
    _sandbox_or_skip()
    spec = {"state_dir": {"type": "path"}, "count": {"type": "int"}}
    case = {"args": {"count": 1}, "check": True, "forced": None}

    def hang(args, check, diff):
        time.sleep(60)

    res = H.run_case(hang, {}, timeout=2)
    assert res["timed_out"] and H.judge(res, case, spec)[1][0][0] == "hang"

    def writes(args, check, diff):
        import json as _json
        with open("/etc/nsprop-oracle", "w") as f:
            f.write("x")
        try:
            with open("/proc/sys/vm/swappiness", "w") as f:   # host-wide: the sandbox refuses it
                f.write("1")
            host_wide = "written"
        except OSError as e:
            host_wide = e.strerror
        print(_json.dumps({"failed": True, "msg": "something went wrong"}))
        return {"exit": 1, "exception": None, "work": None, "stdout": "", "stderr": "", "host_wide": host_wide,
                "result": {"failed": True, "msg": "something went wrong"}}

    res = H.run_case(writes, {})
    kinds = sorted(k for k, _s, _d in H.judge(res, case, spec)[1])
    assert kinds == ["changed-after-failure", "check-mode-write", "unnamed-field"], kinds
    assert res["host_wide"] == "Read-only file system"
    assert not os.path.exists("/etc/nsprop-oracle")

    def raises(args, check, diff):
        return H.call_main(lambda: [][1], {}, check)

    res = H.run_case(raises, {})
    assert H.judge(res, case, spec)[1][0][1].startswith("traceback: IndexError")
    named = {"failed": True, "msg": "count: must be >= 1", "field": "count"}
    assert H.names_a_field(named, spec, {"count": 0})
    assert not H.names_a_field({"failed": True, "msg": "bad"}, spec, {"count": 0})
