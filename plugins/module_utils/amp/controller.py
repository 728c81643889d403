# -*- coding: utf-8 -*-
# Copyright: netstack.tuning contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The AMP controller: resize the network CPU set of a partition from measured load.

Three layers, so each can be tested alone:

* parsers for /proc/stat (irq and softirq time per CPU), /proc/softirqs (NET_RX/NET_TX
  counts) and /proc/net/softnet_stat (drops, time_squeeze);
* ``Sampler``: two snapshots -> ``signals`` for a given network set: softirq+irq share of
  the network CPUs' time (``net_util``), busy share of the application CPUs (``app_util``),
  time_squeeze and drops per second, NET_RX per second, and an optional latency probe
  (TCP connect time to a local service, median of a few, microseconds);
* ``Controller``: a pure function of signals and time.  Grow by one core when the network
  set is hot (``net_util`` >= ``high``, squeezes, or latency above its bound) for
  ``grow_after`` consecutive samples; shrink by one core when it is cold (``net_util`` <=
  ``low``) for ``shrink_after`` samples *and* the load would still sit below ``high`` on one
  core fewer (the projection stops a shrink that the next sample would undo); nothing
  happens for ``cooldown`` seconds after a change; ``min_cores`` <= size <= ``max_cores``
  and at least ``min_app_cores`` left to applications.  Between the watermarks the streaks
  reset, so noise around one level never resizes.

The agent plug-in (``AmpController``) ties them to a ``Partition`` and the decision log.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import socket
import time

from ansible_collections.netstack.tuning.plugins.module_utils.core.common import NetstackError, check_schema, read_text
from ansible_collections.netstack.tuning.plugins.module_utils.core.cpus import parse_cpulist
from ansible_collections.netstack.tuning.plugins.module_utils.agent.worker import Worker
from ansible_collections.netstack.tuning.plugins.module_utils.core import metrics as prom

DEFAULTS = {
    "interval": 2.0,        # seconds between samples
    "high": 0.60,           # net_util at or above: hot
    "low": 0.20,            # net_util at or below: cold
    "grow_after": 3,        # consecutive hot samples before growing
    "shrink_after": 10,     # consecutive cold samples before shrinking
    "cooldown": 20.0,       # seconds after a change with no other change
    "min_cores": 1,
    "max_cores": None,      # None: all but min_app_cores
    "min_app_cores": 1,
    "app_high": 0.9,        # grow only if the applications stay below this on one core fewer
    "squeeze_per_s": 50.0,  # time_squeeze events/s on the network set that count as hot
    "latency_high_us": None,
    "probe": None,          # {"host": "127.0.0.1", "port": 6379, "count": 5}
}


# ------------------------------------------------------------------ parsers

def parse_stat(text):
    """/proc/stat -> {cpu: {"total": jiffies, "busy": jiffies, "irq": irq+softirq jiffies}}."""
    out = {}
    for line in text.splitlines():
        if not line.startswith("cpu") or line.startswith("cpu "):
            continue
        f = line.split()
        vals = [int(x) for x in f[1:]]
        vals += [0] * (10 - len(vals))
        user, nice, system, idle, iowait, irq, softirq, steal = vals[:8]
        total = user + nice + system + idle + iowait + irq + softirq + steal
        out[int(f[0][3:])] = {"total": total, "busy": total - idle - iowait, "irq": irq + softirq}
    return out


def parse_softirqs(text):
    """/proc/softirqs -> {"NET_RX": {cpu: count}, ...} (CPU numbers from the header)."""
    lines = text.splitlines()
    if not lines:
        return {}
    cpus = [int(h[3:]) for h in lines[0].split()]
    out = {}
    for line in lines[1:]:
        name, _sep, rest = line.partition(":")
        vals = [int(x) for x in rest.split()]
        out[name.strip()] = dict(zip(cpus, vals))
    return out


def parse_softnet(text, online=None):
    """/proc/net/softnet_stat -> {cpu: {"processed", "dropped", "squeezed"}}.

    Rows are per online CPU; kernels since 5.10 print the CPU number in column 13, older
    ones are mapped by row order onto ``online``."""
    out = {}
    for row, line in enumerate(text.splitlines()):
        f = [int(x, 16) for x in line.split()]
        if len(f) < 3:
            continue
        if len(f) >= 13:
            cpu = f[12]
        elif online is not None and row < len(online):
            cpu = online[row]
        else:
            cpu = row
        out[cpu] = {"processed": f[0], "dropped": f[1], "squeezed": f[2]}
    return out


def snapshot(proc="/proc", now=None):
    return {"ts": time.time() if now is None else now,
            "stat": parse_stat(read_text(os.path.join(proc, "stat"), "")),
            "softirqs": parse_softirqs(read_text(os.path.join(proc, "softirqs"), "")),
            "softnet": parse_softnet(read_text(os.path.join(proc, "net", "softnet_stat"), ""))}


def probe_latency(host, port, count=5, timeout=0.5):
    """Median TCP connect time to host:port in microseconds (None when nothing answers)."""
    times = []
    for _i in range(count):
        t0 = time.perf_counter()
        try:
            s = socket.create_connection((host, port), timeout=timeout)
        except (OSError, socket.timeout):
            continue
        times.append((time.perf_counter() - t0) * 1e6)
        s.close()
    if not times:
        return None
    times.sort()
    return round(times[len(times) // 2], 1)


def signals(prev, cur, net, app):
    """Load of the network and application sets between two snapshots."""
    def share(cpus, key):
        num = sum(cur["stat"].get(c, {}).get(key, 0) - prev["stat"].get(c, {}).get(key, 0) for c in cpus)
        den = sum(cur["stat"].get(c, {}).get("total", 0) - prev["stat"].get(c, {}).get("total", 0) for c in cpus)
        return (num / float(den)) if den > 0 else 0.0

    def rate(table, field, cpus):
        n = sum(cur[table].get(c, {}).get(field, 0) - prev[table].get(c, {}).get(field, 0) for c in cpus)
        return max(0.0, n / dt)

    dt = max(1e-3, cur["ts"] - prev["ts"])
    rx_now, rx_prev = cur["softirqs"].get("NET_RX", {}), prev["softirqs"].get("NET_RX", {})
    all_cpus = list(net) + list(app)
    return {
        "net_util": round(share(net, "irq"), 4),
        "net_busy": round(share(net, "busy"), 4),
        "app_util": round(share(app, "busy"), 4),
        "app_irq": round(share(app, "irq"), 4),
        "squeeze_per_s": round(rate("softnet", "squeezed", net), 2),
        "drops_per_s": round(rate("softnet", "dropped", all_cpus), 2),
        "net_rx_per_s": round(sum(rx_now.get(c, 0) - rx_prev.get(c, 0) for c in net) / dt, 1),
        "net_rx_app_per_s": round(sum(rx_now.get(c, 0) - rx_prev.get(c, 0) for c in app) / dt, 1),
        "dt": round(dt, 3),
    }


# ------------------------------------------------------------------ the decision

# The ``controller`` keys of the agent's ``amp`` section (cpu_partition checks its
# ``controller`` option against them).
CONTROLLER_KEYS = {
    "enabled": {"type": "boolean"},
    "interval": {"type": "number", "minimum": 0.2, "maximum": 3600},
    "high": {"type": "number", "minimum": 0, "maximum": 1},
    "low": {"type": "number", "minimum": 0, "maximum": 1},
    "grow_after": {"type": "integer", "minimum": 1},
    "shrink_after": {"type": "integer", "minimum": 1},
    "cooldown": {"type": "number", "minimum": 0},
    "min_cores": {"type": "integer", "minimum": 1},
    "max_cores": {"type": ["integer", "null"], "minimum": 1},
    "min_app_cores": {"type": "integer", "minimum": 1},
    "app_high": {"type": ["number", "null"], "minimum": 0},
    "squeeze_per_s": {"type": ["number", "null"], "minimum": 0},
    "latency_high_us": {"type": ["number", "null"], "minimum": 0},
    "probe": {"type": ["object", "null"], "additionalProperties": False, "required": ["port"],
              "properties": {"host": {"type": "string", "minLength": 1},
                             "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                             "count": {"type": "integer", "minimum": 1, "maximum": 100}}},
}
CONTROLLER_SCHEMA = {"type": "object", "additionalProperties": False, "properties": CONTROLLER_KEYS}
# keys whose null means "none" (no cap, no latency rule, no application check); any other
# key given as null takes its default
NULLABLE = ("max_cores", "latency_high_us", "app_high")


def check_controller(cfg, field="controller"):
    """cpu_partition's ``controller`` option: the keys of the agent's schema only
    (CONTROLLER_KEYS), then settings()'s checks.  Returns a copy as given (the agent fills
    in the defaults when it reads the section)."""
    if not isinstance(cfg, dict):
        raise NetstackError("must be a dict of controller settings", field=field)
    bad = sorted(set(cfg) - set(CONTROLLER_KEYS), key=str)
    if bad:
        raise NetstackError("unknown key %s; known: %s" % (bad[0], ", ".join(sorted(CONTROLLER_KEYS))), field=field)
    settings(cfg)
    return dict(cfg)


def settings(cfg):
    """The controller's settings: ``cfg`` (None values of keys that cannot be null mean
    "the default") checked against CONTROLLER_KEYS, the defaults filled in, then the
    relations a schema cannot state.  NetstackError names the field (``controller.high``)."""
    given = dict((k, v) for k, v in (cfg or {}).items() if v is not None or k in NULLABLE)
    check_schema(CONTROLLER_SCHEMA, given, "controller")
    s = dict(DEFAULTS)
    s.update(given)
    if s["low"] >= s["high"]:
        raise NetstackError("need 0 <= low < high <= 1 (low %s, high %s)" % (s["low"], s["high"]), field="controller.low")
    if s["max_cores"] is not None and s["max_cores"] < s["min_cores"]:
        raise NetstackError("must be an integer >= min_cores", field="controller.max_cores")
    return s


class Controller(object):
    """Hysteresis + cooldown + min/max over a stream of signals.  Pure: no I/O."""

    def __init__(self, cfg=None, total_cores=None):
        self.s = settings(cfg)
        self.total_cores = total_cores
        self.hot = 0
        self.cold = 0
        self.last_change = None

    def bounds(self):
        hi = self.s["max_cores"]
        if self.total_cores is not None:
            cap = self.total_cores - self.s["min_app_cores"]
            hi = cap if hi is None else min(hi, cap)
        return self.s["min_cores"], hi

    def _hot_reasons(self, sig):
        s = self.s
        why = []
        if sig["net_util"] >= s["high"]:
            why.append("softirq+irq %.0f%% of the network CPUs >= high %.0f%%" % (100 * sig["net_util"], 100 * s["high"]))
        if s["squeeze_per_s"] and sig.get("squeeze_per_s", 0) >= s["squeeze_per_s"]:
            why.append("time_squeeze %.0f/s >= %.0f/s" % (sig["squeeze_per_s"], s["squeeze_per_s"]))
        lat, bound = sig.get("latency_us"), s["latency_high_us"]
        if bound and lat is not None and lat >= bound:
            why.append("probe latency %d us >= %d us" % (int(lat), int(bound)))
        return why

    def step(self, sig, cores, now):
        """One sample -> {"action": grow|shrink|hold, "to": cores, "why": text}."""
        s = self.s
        lo, hi = self.bounds()
        hot = self._hot_reasons(sig)
        losing = any(r.startswith(("time_squeeze", "probe")) for r in hot)
        app_cores = None if self.total_cores is None else self.total_cores - cores
        # the applications on one core fewer, if their load spreads evenly: a grow that would
        # saturate them only moves the bottleneck (and their lost throughput takes the network
        # load away, so the next samples shrink the set again: a flap)
        app_projected = (sig.get("app_util", 0.0) * app_cores / float(app_cores - 1)
                         if app_cores is not None and app_cores > 1 else None)
        # the load on one core fewer, if it spreads evenly: shrinking must not make it hot
        projected = sig["net_util"] * cores / float(cores - 1) if cores > 1 else None
        cold = not hot and sig["net_util"] <= s["low"]
        if hot:
            self.hot, self.cold = self.hot + 1, 0
        elif cold:
            self.hot, self.cold = 0, self.cold + 1
        else:
            self.hot = self.cold = 0
        out = {"action": "hold", "from": cores, "to": cores, "why": "between watermarks",
               "hot_streak": self.hot, "cold_streak": self.cold}
        cooling = self.last_change is not None and now - self.last_change < s["cooldown"]
        if hot:
            out["why"] = "; ".join(hot) + " (%d/%d samples)" % (self.hot, s["grow_after"])
            if self.hot >= s["grow_after"]:
                if cooling:
                    out["why"] += "; in cooldown"
                elif hi is not None and cores >= hi:
                    out["why"] += "; at max_cores %d" % hi
                    out["limited"] = True
                elif s["app_high"] is not None and app_projected is not None and \
                        app_projected >= s["app_high"] and not losing:
                    out["why"] += ("; held: the applications (busy %.0f%%) would run at %.0f%% on one core "
                                   "fewer (>= app_high %.0f%%)" % (100 * sig.get("app_util", 0.0),
                                                                   100 * app_projected, 100 * s["app_high"]))
                    out["limited"] = True
                else:
                    out.update(action="grow", to=cores + 1)
        elif cold:
            out["why"] = "softirq+irq %.0f%% of the network CPUs <= low %.0f%% (%d/%d samples)" % (
                100 * sig["net_util"], 100 * s["low"], self.cold, s["shrink_after"])
            if self.cold >= s["shrink_after"]:
                if cooling:
                    out["why"] += "; in cooldown"
                elif cores <= lo:
                    out["why"] += "; at min_cores %d" % lo
                    out["limited"] = True
                elif projected is not None and projected >= s["high"]:
                    out["why"] += "; one core fewer would run at %.0f%% (>= high)" % (100 * projected)
                else:
                    out.update(action="shrink", to=cores - 1)
        if out["action"] != "hold":
            self.last_change = now
            self.hot = self.cold = 0
        return out


def replay(trace, cfg=None, cores=1, total_cores=None):
    """Run a recorded trace [(t, signals)] through a Controller; returns the decisions and
    the size after each sample (for tests and for tuning the thresholds offline)."""
    c = Controller(cfg, total_cores)
    out = []
    for t, sig in trace:
        d = c.step(sig, cores, t)
        cores = d["to"]
        out.append(dict(d, t=t))
    return out


# ------------------------------------------------------------------ agent plug-in

class AmpController(object):
    """Keeps the AMP partition of the ``amp`` section and resizes it from load."""

    section = "amp"

    @staticmethod
    def schema():
        return {
            "type": "object",
            "additionalProperties": False,
            "required": ["state", "partition"],
            "properties": {
                "state": {"enum": ["present", "absent"]},
                "partition": {"type": "object", "required": ["name"],
                              "properties": {"name": {"type": "string", "pattern": r"^[A-Za-z0-9_-]{1,40}$"}}},
                "controller": {"type": "object", "additionalProperties": False, "properties": CONTROLLER_KEYS},
            },
        }

    @staticmethod
    def check(section, cfg):
        if section["state"] != "present":
            return
        from ansible_collections.netstack.tuning.plugins.module_utils.amp import partition as amp
        try:
            amp.validate(section["partition"])
        except NetstackError as e:
            raise NetstackError(e.msg, field="amp.partition.%s" % e.field)
        try:
            settings(section.get("controller"))
        except NetstackError as e:
            raise NetstackError(e.msg, field="amp.%s" % e.field)

    def __init__(self, agent):
        self.agent = agent
        self.worker = Worker("amp", join_timeout=10)
        self.sec = None
        self.cfg = None
        self.last = {}
        self.counts = {"grow": 0, "shrink": 0, "errors": 0}
        self.net_cpus = ""

    def _partition(self, sec, cfg):
        from ansible_collections.netstack.tuning.plugins.module_utils.amp import partition as amp
        return amp.Partition(sec["partition"].get("name", "amp"), state_dir=cfg["state_dir"])

    def reconcile(self, cfg, why):
        sec = cfg.get("amp")
        if not sec:
            self._stop()
            return None
        p = self._partition(sec, cfg)
        if sec["state"] == "absent":
            self._stop()
            res = p.absent(source="netstack-agent")
            if res["changed"]:
                self.agent.log("amp", "removed the partition; original values restored", why,
                               restored=res["restored"])
            return {"state": "absent", "changed": res["changed"]}
        res = p.present(sec["partition"], keep_size=True, source="netstack-agent",
                        reason="agent reconcile (%s)" % why)
        if res["changed"]:
            self.agent.log("amp", "applied the partition: network CPUs %s, applications %s"
                           % (res["net_cpus"], res["app_cpus"]), why, journal_id=res["journal_id"],
                           keys=sorted(res["diff"]["after"]))
        self.net_cpus = res["net_cpus"]
        self.sec, self.cfg = sec, cfg
        if (sec.get("controller") or {}).get("enabled", True):
            self._start()
        else:
            self._stop()
        return {"state": "present", "changed": res["changed"], "net_cpus": res["net_cpus"]}

    # -- the sampling thread -----------------------------------------------------
    def _start(self):
        self.worker.start(self._loop)

    def close(self):
        self._stop()

    def _stop(self):
        self.worker.stop()

    def _loop(self, stop_event):
        from ansible_collections.netstack.tuning.plugins.module_utils.amp import partition as amp
        ctl, key, prev, topo = None, None, None, None
        while not stop_event.is_set():
            sec, cfg = self.sec, self.cfg
            s = settings(sec.get("controller"))
            try:
                # topology and controller state last until the config or the online CPUs change
                online = read_text(os.path.join(amp.SYS_CPU, "cpu", "online"))
                if key != (id(sec), online):
                    topo = amp.Topology.from_sysfs()
                    ctl, key = Controller(sec.get("controller"), len(topo.cores)), (id(sec), online)
                p = self._partition(sec, cfg)
                rec = p.record()
                if not rec:
                    raise NetstackError("no partition record: the partition is not applied", field="amp")
                net = parse_cpulist(rec["net_cpus"])
                app = parse_cpulist(rec["app_cpus"])
                cur = snapshot()
                if prev is not None:
                    sig = signals(prev, cur, net, app)
                    probe = s.get("probe")
                    if probe:
                        sig["latency_us"] = probe_latency(probe.get("host", "127.0.0.1"), probe["port"],
                                                          probe.get("count", 5))
                    cores = rec.get("net_cores") or len(net)
                    d = ctl.step(sig, cores, cur["ts"])
                    self.last = dict(sig, cores=cores, net_cpus=rec["net_cpus"], decision=d["action"], why=d["why"])
                    if d["action"] != "hold":
                        self._resize(p, sec, topo, d, sig)
                    elif d.get("limited") and (d["hot_streak"] == s["grow_after"]
                                               or d["cold_streak"] == s["shrink_after"]):
                        self.agent.log("amp", "held at %d core(s)" % cores, d["why"], signals=sig)
                prev = cur
            except (NetstackError, OSError) as e:
                self.counts["errors"] += 1
                self.agent.log("amp", "controller pass failed", str(e))
                prev = None
            stop_event.wait(float(s["interval"]))

    def _resize(self, p, sec, topo, d, sig):
        from ansible_collections.netstack.tuning.plugins.module_utils.amp import partition as amp
        nics = amp.nic_info(sec["partition"]["interfaces"])
        order = amp.core_order(topo, nics)
        cpus = sorted(c for core in order[:d["to"]] for c in core)
        why = d["why"]
        with self.agent.lock:
            if self.worker.stop_event.is_set():  # reconcile stopped us (absent, new config) while we waited
                return
            res = p.present(sec["partition"], net_cpus=cpus, source="netstack-agent", resize=True,
                            reason="AMP %s to %d core(s): %s" % (d["action"], d["to"], why))
        self.counts[d["action"]] += 1
        self.net_cpus = res["net_cpus"]
        self.agent.log("amp", "%s network set %s -> %s (%d -> %d cores)" % (
            d["action"], res["previous_net_cpus"], res["net_cpus"], d["from"], d["to"]), why,
            signals=sig, journal_id=res["journal_id"], app_cpus=res["app_cpus"])

    def metrics(self, cfg):
        sec = cfg.get("amp")
        if not sec or sec["state"] != "present":
            return []
        p = "netstack_amp_"
        lines = prom.one(p + "net_cpus", "gauge", "CPUs in the network set",
                         len(parse_cpulist(self.net_cpus)) if self.net_cpus else None)
        for k, h in (("net_util", "softirq+irq share of the network CPUs' time"),
                     ("app_util", "busy share of the application CPUs' time"),
                     ("squeeze_per_s", "time_squeeze events per second on the network CPUs"),
                     ("drops_per_s", "softnet backlog drops per second"),
                     ("latency_us", "latency probe, median TCP connect time")):
            lines += prom.one(p + k, "gauge", h, self.last.get(k))
        lines += prom.family(p + "resizes_total", "counter", "Network set resizes by the controller",
                             [({"direction": d}, self.counts[d]) for d in ("grow", "shrink")])
        lines += prom.one(p + "controller_errors_total", "counter", "Failed controller passes", self.counts["errors"])
        return lines
