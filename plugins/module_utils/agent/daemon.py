# -*- coding: utf-8 -*-
# Copyright: netstack.tuning contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""netstack-agent: the one long-running process per host.

It holds what must keep running: the same-host path (capability 4), the AMP controller
(capability 6, ampctl.py) and the traffic collector (capability 5, trafficcollect.py);
each is a class with ``section``, ``reconcile`` and ``metrics``.

Config: ``/etc/netstack/agent.json`` (agent settings, rendered by the netstack_agent role
from a Jinja2 template) merged with ``/etc/netstack/agent.d/*.json`` (one file per
capability, written by its module, e.g. shm_agent writes ``shm.json``), validated as a
whole by JSON Schema.  A config that does not validate is refused: at start the agent
exits with the field named; on reload it keeps the config it has and counts the error.

Each controller reconciles the host to its section at start, on SIGHUP and every
``interval`` seconds (so pins removed by hand, or lost with a reboot, come back), and logs
every change it makes with what and why, as JSON lines.  Metrics: Prometheus text on
http://<metrics.listen>:<metrics.port>/metrics and, optionally, a textfile for
node_exporter's textfile collector.  The endpoint has no authentication: it listens on a
loopback address unless the config opts in with ``metrics.allow_remote: true``.

Every number in the config must be finite: NaN compares false with every bound, so a
schema's minimum/maximum (and Python's jsonschema, which takes NaN as a "number") would let
``interval: NaN`` through, and the agent would reconcile without pause.

Run it under systemd (the role installs a unit) or, where PID 1 is not systemd, as
``netstack-agent supervise --daemon``: a small supervisor that restarts the agent when it
dies (backoff 1 s doubling to 30 s, reset after a minute of uptime) and forwards SIGHUP
and SIGTERM.  Killing the agent never disturbs the data path: programs stay attached and
pinned; the restarted agent adopts them (same tag, same policy: nothing changes).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy
import errno
import glob
import hashlib
import ipaddress
import json
import math
import os
import signal
import socket
import sys
import threading
import time

from ansible_collections.netstack.tuning.plugins.module_utils.core.common import NetstackError

CONFIG = "/etc/netstack/agent.json"
CONFD = "/etc/netstack/agent.d"
RUN_DIR = "/run/netstack"
PIDFILE = os.path.join(RUN_DIR, "agent.pid")
SUPERVISOR_PIDFILE = os.path.join(RUN_DIR, "agent-supervisor.pid")
STATUS = os.path.join(RUN_DIR, "agent-status.json")
LOG_DIR = "/var/log/netstack"

DEFAULTS = {
    "interval": 10,
    "state_dir": "/var/lib/netstack",
    "log": "/var/log/netstack/agent.log",
    "metrics": {"listen": "127.0.0.1", "port": 9542, "textfile": None, "allow_remote": False},
}


def _shm_schema():
    from ansible_collections.netstack.tuning.plugins.module_utils.shm_path import path as shm
    pol = copy.deepcopy(shm.SCHEMA)
    pol.pop("$schema", None)
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["state"],
        "properties": {
            "state": {"enum": ["present", "absent"]},
            "name": {"type": "string", "pattern": r"^[A-Za-z0-9_-]{1,40}$"},
            "policy": pol,
        },
    }


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
              "properties": {"host": {"type": "string"}, "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                             "count": {"type": "integer", "minimum": 1, "maximum": 100}}},
}


def _amp_schema():
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


def _traffic_schema():
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["state"],
        "properties": {
            "state": {"enum": ["present", "absent"]},
            "name": {"type": "string", "pattern": r"^[A-Za-z0-9_-]{1,40}$"},
            "interfaces": {"type": "array", "minItems": 1, "maxItems": 64, "uniqueItems": True,
                           "items": {"type": "string", "pattern": r"^[A-Za-z0-9_.@:-]{1,15}$"}},
            "netns": {"type": ["string", "null"], "pattern": r"^[A-Za-z0-9_.@:+-]{1,64}$"},
            "prefix_v4": {"type": "integer", "minimum": 0, "maximum": 32},
            "prefix_v6": {"type": "integer", "minimum": 0, "maximum": 128},
            "max_flows": {"type": "integer", "minimum": 64, "maximum": 1048576},
            "priority": {"type": "integer", "minimum": 1, "maximum": 65535},
            "interval": {"type": "number", "minimum": 1, "maximum": 3600},
            "store": {"type": "string", "pattern": "^/"},
            "retention_days": {"type": "integer", "minimum": 1, "maximum": 3650},
            "link_prefix": {"type": ["string", "null"], "pattern": r"^[A-Za-z0-9_.@:-]{1,64}$"},
        },
    }


def schema():
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "interval": {"type": "number", "minimum": 1, "maximum": 3600},
            "state_dir": {"type": "string", "pattern": "^/"},
            "log": {"type": ["string", "null"], "pattern": "^/"},
            "metrics": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "listen": {"type": "string", "minLength": 1},
                    "port": {"type": "integer", "minimum": 0, "maximum": 65535},
                    "textfile": {"type": ["string", "null"], "pattern": "^/"},
                    # the endpoint has no authentication: a non-loopback listen address
                    # needs this opt-in (checked in validate())
                    "allow_remote": {"type": "boolean"},
                },
            },
            "shm": _shm_schema(),
            "amp": _amp_schema(),
            "traffic": _traffic_schema(),
        },
    }


# ------------------------------------------------------------------ config

def _field(prefix, err):
    out = prefix
    for p in err.absolute_path:
        out += "[%d]" % p if isinstance(p, int) else ("." if out else "") + str(p)
    return out or "config"


def _non_finite(value, path=""):
    """(path, value) of the first NaN or infinity in ``value`` (dicts and lists walked), or
    None."""
    if isinstance(value, float):
        return None if math.isfinite(value) else (path or "config", value)
    if isinstance(value, dict):
        items = (("%s.%s" % (path, k) if path else str(k), v) for k, v in value.items())
    elif isinstance(value, (list, tuple)):
        items = (("%s[%d]" % (path, i), v) for i, v in enumerate(value))
    else:
        return None
    for p, v in items:
        found = _non_finite(v, p)
        if found:
            return found
    return None


def is_loopback(host):
    """True for ``localhost`` and loopback address literals (127.0.0.0/8, ::1, and
    127.x written as IPv4-mapped IPv6)."""
    if host in ("localhost", "localhost."):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def _check_metrics_listen(metrics, origin):
    listen = metrics["listen"]
    if is_loopback(listen) or metrics.get("allow_remote") is True:
        return
    raise NetstackError("%s is not a loopback address: the metrics endpoint has no authentication, so it "
                        "listens beyond this host only with metrics.allow_remote: true (role variable "
                        "netstack_agent_metrics_allow_remote: true); or listen on 127.0.0.1 (in %s)"
                        % (listen, origin), field="metrics.listen")


def validate(cfg, origin="config"):
    """Validate a merged config; returns it with defaults filled in.  NetstackError names
    the field (and the file it came from)."""
    bad = _non_finite(cfg)
    if bad:  # before the schema: jsonschema takes NaN as a number, and NaN passes every bound
        raise NetstackError("must be a finite number, got %r (in %s)" % (bad[1], origin), field=bad[0])
    try:
        import jsonschema
    except ImportError:  # hosts without python3-jsonschema: the checks below and shm.validate
        jsonschema = None
    if jsonschema is not None:
        errors = sorted(jsonschema.Draft202012Validator(schema()).iter_errors(cfg),
                        key=lambda e: list(e.absolute_path))
        if errors:
            raise NetstackError("%s (in %s)" % (errors[0].message, origin), field=_field("", errors[0]))
    else:
        _check_without_jsonschema(cfg, origin)
    out = copy.deepcopy(DEFAULTS)
    for k, v in cfg.items():
        if k == "metrics":
            out["metrics"].update(v)
        else:
            out[k] = v
    _check_metrics_listen(out["metrics"], origin)
    if "shm" in out and out["shm"]["state"] == "present":
        if "policy" not in out["shm"]:
            raise NetstackError("required when state is present (in %s)" % origin, field="shm.policy")
        from ansible_collections.netstack.tuning.plugins.module_utils.shm_path import path as shm
        try:
            shm.validate(out["shm"]["policy"], field="shm.policy")
        except NetstackError as e:
            raise NetstackError("%s (in %s)" % (e.msg, origin), field=e.field)
    if "amp" in out and out["amp"]["state"] == "present":
        from ansible_collections.netstack.tuning.plugins.module_utils.amp import partition as amp, controller as ampctl
        try:
            amp.validate(out["amp"]["partition"])
        except NetstackError as e:
            raise NetstackError("%s (in %s)" % (e.msg, origin), field="amp.partition.%s" % e.field)
        try:
            ampctl.settings(out["amp"].get("controller"))
        except NetstackError as e:
            raise NetstackError("%s (in %s)" % (e.msg, origin), field="amp.%s" % e.field)
    if "traffic" in out:
        from ansible_collections.netstack.tuning.plugins.module_utils.traffic import collect as trafficcollect
        try:
            trafficcollect.agent_settings(out["traffic"], out["state_dir"])
        except NetstackError as e:
            raise NetstackError("%s (in %s)" % (e.msg, origin), field=e.field)
    return out


def _check_without_jsonschema(cfg, origin):
    """The schema's checks that matter, for hosts without the jsonschema package."""
    props = schema()["properties"]
    for k, v in cfg.items():
        if k not in props:
            raise NetstackError("unknown key %s (in %s)" % (k, origin), field=k)
    iv = cfg.get("interval", 10)
    if isinstance(iv, bool) or not isinstance(iv, (int, float)) or not 1 <= iv <= 3600:
        raise NetstackError("must be a number in 1..3600 (in %s)" % origin, field="interval")
    m = cfg.get("metrics", {})
    if not isinstance(m, dict) or set(m) - {"listen", "port", "textfile", "allow_remote"}:
        raise NetstackError("a dict of listen, port, textfile, allow_remote (in %s)" % origin, field="metrics")
    port = m.get("port", 0)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise NetstackError("must be an integer in 0..65535 (in %s)" % origin, field="metrics.port")
    if "listen" in m and (not isinstance(m["listen"], str) or not m["listen"]):
        raise NetstackError("must be a non-empty string (in %s)" % origin, field="metrics.listen")
    if "allow_remote" in m and not isinstance(m["allow_remote"], bool):
        raise NetstackError("must be true or false (in %s)" % origin, field="metrics.allow_remote")
    sec = cfg.get("shm")
    if sec is not None:
        if not isinstance(sec, dict) or sec.get("state") not in ("present", "absent") or \
                set(sec) - {"state", "name", "policy"}:
            raise NetstackError("a dict with state present|absent, name, policy (in %s)" % origin, field="shm")
    sec = cfg.get("amp")
    if sec is not None:
        if not isinstance(sec, dict) or sec.get("state") not in ("present", "absent") or \
                set(sec) - {"state", "partition", "controller"} or not isinstance(sec.get("partition"), dict):
            raise NetstackError("a dict with state present|absent, partition, controller (in %s)" % origin,
                                field="amp")
        ctl = sec.get("controller") or {}
        bad = sorted(set(ctl) - set(CONTROLLER_KEYS)) if isinstance(ctl, dict) else ["controller"]
        if bad:
            raise NetstackError("unknown key %s (in %s)" % (bad[0], origin), field="amp.controller")
    sec = cfg.get("traffic")
    if sec is not None:
        keys = set(_traffic_schema()["properties"])
        if not isinstance(sec, dict) or sec.get("state") not in ("present", "absent") or set(sec) - keys:
            raise NetstackError("a dict with state present|absent and %s (in %s)" % (", ".join(sorted(keys - {"state"})),
                                                                                     origin), field="traffic")


def _read_json(path):
    try:
        with open(path) as f:
            data = json.load(f)
    except ValueError as e:
        raise NetstackError("%s is not valid JSON: %s" % (path, e), field="config")
    if not isinstance(data, dict):
        raise NetstackError("%s must hold a JSON object" % path, field="config")
    return data


def load(config=CONFIG, confd=CONFD):
    """Merge ``config`` and ``confd``/*.json (sorted by name; a key of a later file replaces
    the same key of an earlier one) and validate.  Returns (config, sources, digest)."""
    merged, sources = {}, []
    if os.path.exists(config):
        merged.update(_read_json(config))
        sources.append(config)
    for path in sorted(glob.glob(os.path.join(confd, "*.json"))) if confd else []:
        merged.update(_read_json(path))
        sources.append(path)
    cfg = validate(merged, origin=", ".join(sources) or "defaults")
    digest = hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:16]
    return cfg, sources, digest


def write_section(confd, name, section, check_mode=False):
    """Write ``confd/<name>.json`` holding {name: section} (None: remove the file).  Returns
    True when the file changed."""
    path = os.path.join(confd, "%s.json" % name)
    text = None if section is None else json.dumps({name: section}, indent=2, sort_keys=True) + "\n"
    try:
        with open(path) as f:
            old = f.read()
    except (IOError, OSError):
        old = None
    if old == text:
        return False
    if check_mode:
        return True
    if text is None:
        os.unlink(path)
        return True
    if not os.path.isdir(confd):
        os.makedirs(confd, 0o755)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o644)
    os.rename(tmp, path)
    return True


# ------------------------------------------------------------------ pid files

def read_pid(path):
    try:
        with open(path) as f:
            pid = int(f.read().split()[0])
    except (IOError, OSError, ValueError, IndexError):
        return None
    try:
        os.kill(pid, 0)
    except OSError as e:
        if e.errno == errno.ESRCH:
            return None
    return pid


def _write_pid(path):
    d = os.path.dirname(path)
    if not os.path.isdir(d):
        os.makedirs(d, 0o755)
    tmp = "%s.%d" % (path, os.getpid())
    with open(tmp, "w") as f:
        f.write("%d\n" % os.getpid())
    os.rename(tmp, path)


def running(pidfile=PIDFILE):
    """PID of a live agent, or None."""
    return read_pid(pidfile)


def notify(pidfile=PIDFILE):
    """Ask a running agent to reload its config (SIGHUP).  Returns its PID or None."""
    pid = read_pid(pidfile)
    if pid:
        os.kill(pid, signal.SIGHUP)
    return pid


def read_status(path=STATUS):
    try:
        with open(path) as f:
            return json.load(f)
    except (IOError, OSError, ValueError):
        return None


# ------------------------------------------------------------------ controllers

class ShmController(object):
    """Keeps the same-host path as the ``shm`` section says."""

    section = "shm"

    def __init__(self, agent):
        self.agent = agent
        self.path = None
        self.source = None

    def _path(self, cfg):
        from ansible_collections.netstack.tuning.plugins.module_utils.shm_path import path as shm
        name = (cfg.get("shm") or {}).get("name") or "shm"
        if self.path is None or self.path.name != name or self.path.state_dir != cfg["state_dir"]:
            self.path = shm.ShmPath(name=name, state_dir=cfg["state_dir"])
        return self.path

    def reconcile(self, cfg, why):
        from ansible_collections.netstack.tuning.plugins.module_utils.shm_path import path as shm
        sec = cfg.get("shm")
        if not sec:
            return None
        p = self._path(cfg)
        if sec["state"] == "absent":
            res = p.absent()
            if res["changed"]:
                self.agent.log("shm", "removed the same-host path", why, draining=res.get("draining"))
            return {"state": "absent", "changed": res["changed"]}
        src = shm.default_source()
        if not src:
            raise NetstackError("bpf/%s is not installed next to the agent" % shm.SOURCE_NAME, field="shm")
        with open(src) as f:
            text = f.read()
        res = p.present(sec["policy"], text, origin="netstack-agent")
        if res["changed"]:
            before = res["before"]
            if not before:
                what = "loaded the same-host path"
            elif not before["attached"]:
                what = "re-attached the same-host path (programs or pins were missing)"
            else:
                what = "applied a new same-host policy"
            self.agent.log("shm", what, why, policy=res["after"]["policy"])
        return {"state": "present", "changed": res["changed"]}

    def metrics(self, cfg):
        from ansible_collections.netstack.tuning.plugins.module_utils.shm_path import path as shm
        sec = cfg.get("shm")
        if not sec or sec["state"] != "present":
            return []
        return shm.metrics(self._path(cfg).counters())


def _amp_controller(agent):
    from ansible_collections.netstack.tuning.plugins.module_utils.amp import controller as ampctl
    return ampctl.AmpController(agent)


class TrafficController(object):
    """Keeps the traffic collector of the ``traffic`` section loaded and scrapes it into its
    store every ``interval`` seconds, on a thread of its own (trafficcollect.scrape_loop)."""

    section = "traffic"

    def __init__(self, agent):
        self.agent = agent
        self.thread = None
        self.stop = threading.Event()
        self.collector = None
        self.store = None
        self.key = None
        self.counts = {"errors": 0}

    def reconcile(self, cfg, why):
        from ansible_collections.netstack.tuning.plugins.module_utils.traffic import collect as trafficcollect
        sec = cfg.get("traffic")
        if not sec:
            self._stop()
            return None
        s = trafficcollect.agent_settings(sec, cfg["state_dir"])
        key = json.dumps([s, cfg["state_dir"]], sort_keys=True)
        if key != self.key:
            self._stop()  # its last scrape goes to the old store
            self.collector, self.key = trafficcollect.agent_collector(s, cfg["state_dir"]), key
            self.store = trafficcollect.Store(s["store"], s["retention_days"])
        if sec["state"] == "absent":
            self._stop()
            res = self.collector.absent()
            if res["changed"]:
                self.agent.log("traffic", "removed the traffic collector (the store %s is kept)" % s["store"], why,
                               removed=res["removed"])
            return {"state": "absent", "changed": res["changed"]}
        res = self.collector.present()
        if res["changed"]:
            before = res["diff"]["before"]
            what = "loaded the traffic collector" if not before else (
                "re-attached the traffic collector" if not before.get("attached") else "reconfigured the traffic collector")
            self.agent.log("traffic", "%s on %s" % (what, ", ".join(s["interfaces"])), why, notes=res["notes"])
        self._start(s["interval"])
        return {"state": "present", "changed": res["changed"]}

    def _start(self, interval):
        if self.thread is not None and self.thread.is_alive():
            return
        from ansible_collections.netstack.tuning.plugins.module_utils.traffic import collect as trafficcollect
        self.stop.clear()

        def failed(e):
            self.counts["errors"] += 1
            self.agent.log("traffic", "scrape failed", str(e))

        self.thread = threading.Thread(target=trafficcollect.scrape_loop, name="traffic",
                                       args=(self.collector, self.store, interval),
                                       kwargs={"stop_event": self.stop, "on_error": failed})
        self.thread.daemon = True
        self.thread.start()

    def close(self):
        self._stop()

    def _stop(self):
        if self.thread is not None:
            self.stop.set()
            self.thread.join(30)
            self.thread = None

    def metrics(self, cfg):
        sec = cfg.get("traffic")
        if not sec or sec["state"] != "present" or self.collector is None:
            return []
        return self.collector.metrics() + [
            "# HELP netstack_traffic_scrape_errors_total Failed scrapes of the traffic collector",
            "# TYPE netstack_traffic_scrape_errors_total counter",
            'netstack_traffic_scrape_errors_total{collector="%s"} %d' % (self.collector.name, self.counts["errors"])]


class JournalController(object):
    """Watches the journal's confirm deadlines: a commit-confirmed change whose deadline
    passed with no confirm is reverted here if its watchdog is gone (killed, OOM, a reboot),
    and so is a transaction whose writer died mid-apply (Journal.settle).  Runs on every
    pass and, between passes, as soon as a pending deadline is due."""

    section = "journal"

    def __init__(self, agent):
        self.agent = agent
        self.next_deadline = None
        self.counts = {"reverted": 0, "conflicts": 0}
        self.damaged = 0
        self.pending = 0

    def due(self):
        return self.next_deadline is not None and time.time() >= self.next_deadline + 1.0

    def reconcile(self, cfg, why):
        from ansible_collections.netstack.tuning.plugins.module_utils.core.journal import Journal
        j = Journal(cfg["state_dir"])
        res = j.settle()
        view = j.view()
        pending = [t.deadline for t in view.txns if t.state == "applied" and t.deadline]
        self.next_deadline = min(pending) if pending else None
        self.pending, self.damaged = len(pending), len(view.damage)
        reverted = res["recovered"] + res["expired"]
        if reverted:
            self.counts["reverted"] += len(reverted)
            self.counts["conflicts"] += len(res["conflicts"])
            self.agent.log("journal", "reverted %s" % ", ".join(reverted), why, recovered=res["recovered"],
                           expired=res["expired"], conflicts=res["conflicts"])
        return {"changed": bool(reverted), "reverted": reverted, "pending_confirm": self.pending,
                "damaged_lines": self.damaged}

    def metrics(self, cfg):
        return [
            "# HELP netstack_journal_reverted_total Transactions the agent reverted (expired or interrupted)",
            "# TYPE netstack_journal_reverted_total counter",
            "netstack_journal_reverted_total %d" % self.counts["reverted"],
            "# HELP netstack_journal_pending_confirm Commit-confirmed transactions waiting for a confirm",
            "# TYPE netstack_journal_pending_confirm gauge",
            "netstack_journal_pending_confirm %d" % self.pending,
            "# HELP netstack_journal_damaged_lines Damaged lines in the journal (netstack_journal action=repair)",
            "# TYPE netstack_journal_damaged_lines gauge",
            "netstack_journal_damaged_lines %d" % self.damaged,
        ]


CONTROLLERS = (JournalController, ShmController, _amp_controller, TrafficController)


# ------------------------------------------------------------------ the agent

class Agent(object):

    def __init__(self, config=CONFIG, confd=CONFD, pidfile=PIDFILE, status=STATUS):
        self.config_path, self.confd, self.pidfile, self.status_path = config, confd, pidfile, status
        self.cfg, self.sources, self.digest = load(config, confd)
        self.generation = 1
        self.controllers = [c(self) for c in CONTROLLERS]
        # Set by signal handlers, so plain flags: a handler must not take a lock (the
        # threading.Event these were deadlocked when `stop` sent two SIGTERMs at once).
        self.reload_wanted = False
        self.stop_wanted = False
        self.counts = {"reconciles": 0, "errors": 0, "config_errors": 0, "changes": 0}
        self.last = {}
        self.started = time.time()
        self.lock = threading.Lock()
        self.server = None

    # -- log -----------------------------------------------------------------
    def log(self, controller, what, why, **extra):
        rec = {"ts": round(time.time(), 3), "pid": os.getpid(), "controller": controller, "what": what, "why": why}
        rec.update(extra)
        line = json.dumps(rec, sort_keys=True)
        path = self.cfg.get("log")
        if path:
            d = os.path.dirname(path)
            if not os.path.isdir(d):
                os.makedirs(d, 0o755)
            with open(path, "a") as f:
                f.write(line + "\n")
        sys.stderr.write(line + "\n")
        sys.stderr.flush()

    # -- one pass ------------------------------------------------------------
    def reconcile(self, why):
        with self.lock:
            self.counts["reconciles"] += 1
            for c in self.controllers:
                try:
                    res = c.reconcile(self.cfg, why)
                    if res and res.get("changed"):
                        self.counts["changes"] += 1
                    self.last[c.section] = {"ok": True, "result": res, "ts": time.time()}
                except (NetstackError, OSError) as e:
                    self.counts["errors"] += 1
                    self.last[c.section] = {"ok": False, "error": str(e), "ts": time.time()}
                    self.log(c.section, "reconcile failed", str(e))
            self.write_status()

    def reconcile_one(self, c, why):
        with self.lock:
            try:
                c.reconcile(self.cfg, why)
            except (NetstackError, OSError) as e:
                self.counts["errors"] += 1
                c.next_deadline = None
                self.log(c.section, "reconcile failed", str(e))

    def reload(self):
        try:
            cfg, sources, digest = load(self.config_path, self.confd)
        except NetstackError as e:
            self.counts["config_errors"] += 1
            self.log("agent", "kept the previous config", "new config refused: %s" % e)
            return False
        if digest != self.digest:
            self.cfg, self.sources, self.digest = cfg, sources, digest
            self.generation += 1
            self.log("agent", "config generation %d" % self.generation, "reload (SIGHUP)", digest=digest)
        self.reconcile("config reload")
        return True

    # -- status & metrics ----------------------------------------------------
    def write_status(self):
        st = {"pid": os.getpid(), "started": self.started, "generation": self.generation, "digest": self.digest,
              "sources": self.sources, "counts": self.counts, "controllers": self.last, "ts": time.time()}
        d = os.path.dirname(self.status_path)
        if not os.path.isdir(d):
            os.makedirs(d, 0o755)
        tmp = self.status_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(st, f, sort_keys=True)
        os.rename(tmp, self.status_path)

    def metrics_text(self):
        lines = [
            "# HELP netstack_agent_up The agent is running", "# TYPE netstack_agent_up gauge", "netstack_agent_up 1",
            "# HELP netstack_agent_config_generation Config generation in force",
            "# TYPE netstack_agent_config_generation gauge",
            "netstack_agent_config_generation %d" % self.generation,
        ]
        for k in ("reconciles", "errors", "config_errors", "changes"):
            lines += ["# HELP netstack_agent_%s_total Agent %s" % (k, k.replace("_", " ")),
                      "# TYPE netstack_agent_%s_total counter" % k,
                      "netstack_agent_%s_total %d" % (k, self.counts[k])]
        with self.lock:
            for c in self.controllers:
                try:
                    lines += c.metrics(self.cfg)
                except (NetstackError, OSError) as e:
                    lines.append("# %s metrics unavailable: %s" % (c.section, str(e).replace("\n", " ")))
        return "\n".join(lines) + "\n"

    def write_textfile(self):
        path = self.cfg["metrics"].get("textfile")
        if not path:
            return
        d = os.path.dirname(path)
        if not os.path.isdir(d):
            os.makedirs(d, 0o755)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(self.metrics_text())
        os.rename(tmp, path)

    def serve_metrics(self):
        port = self.cfg["metrics"]["port"]
        if not port:
            return None
        try:
            from http.server import BaseHTTPRequestHandler, HTTPServer
        except ImportError:
            return None
        agent = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path.split("?")[0] not in ("/metrics", "/"):
                    self.send_error(404)
                    return
                body = agent.metrics_text().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        listen = self.cfg["metrics"]["listen"]

        class Server(HTTPServer):
            allow_reuse_address = True
            # HTTPServer is IPv4 only: an IPv6 listen address (::1) failed to bind
            address_family = socket.AF_INET6 if ":" in listen else socket.AF_INET

        self.server = Server((listen, port), Handler)
        t = threading.Thread(target=self.server.serve_forever, name="metrics")
        t.daemon = True
        t.start()
        return self.server

    # -- main loop -----------------------------------------------------------
    def _on_signal(self, signum, _frame):
        if signum == signal.SIGHUP:
            self.reload_wanted = True
        else:
            self.stop_wanted = True

    def run(self):
        for s in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
            signal.signal(s, self._on_signal)
        _write_pid(self.pidfile)
        try:
            self.serve_metrics()
            self.log("agent", "started", "run", generation=self.generation, sources=self.sources)
            self.reconcile("start")
            while not self.stop_wanted:
                deadline = time.time() + float(self.cfg["interval"])
                journal = self.controllers[0]
                while time.time() < deadline and not self.stop_wanted and not self.reload_wanted:
                    if journal.due():
                        self.reconcile_one(journal, "confirm deadline passed")
                    time.sleep(0.1)
                if self.stop_wanted:
                    break
                if self.reload_wanted:
                    self.reload_wanted = False
                    self.reload()
                else:
                    self.reconcile("periodic check")
                self.write_textfile()
            # Pins and attachments stay: the data path does not depend on this process.
            self.log("agent", "stopped", "signal")
        finally:
            for c in self.controllers:
                if hasattr(c, "close"):
                    c.close()
            if self.server is not None:
                self.server.shutdown()
            if read_pid(self.pidfile) == os.getpid():
                os.unlink(self.pidfile)
        return 0


# ------------------------------------------------------------------ supervisor

def supervise(argv, pidfile=SUPERVISOR_PIDFILE, daemon=False, sleep=time.sleep):
    """Run the agent (``argv``, a command list) and restart it whenever it exits, until
    SIGTERM.  Backoff 1 s, doubling to 30 s; back to 1 s after 60 s of uptime."""
    if daemon:
        if os.fork():
            return 0
        os.setsid()
        if os.fork():
            os._exit(0)
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        if not os.path.isdir(LOG_DIR):
            os.makedirs(LOG_DIR, 0o755)
        log = os.open(os.path.join(LOG_DIR, "agent-supervisor.log"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
    _write_pid(pidfile)
    state = {"child": None, "stop": False}

    def forward(signum, _frame):
        if signum in (signal.SIGTERM, signal.SIGINT):
            state["stop"] = True
        if state["child"]:
            try:
                os.kill(state["child"], signal.SIGTERM if signum == signal.SIGINT else signum)
            except OSError:
                pass

    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, forward)
    backoff = 1.0
    try:
        while not state["stop"]:
            started = time.time()
            pid = os.fork()
            if pid == 0:
                try:
                    os.execv(argv[0], argv)
                finally:
                    os._exit(127)
            state["child"] = pid
            while True:
                try:
                    status = os.waitpid(pid, 0)[1]
                    break
                except OSError as e:
                    if e.errno != errno.EINTR:
                        raise
            state["child"] = None
            if state["stop"]:
                break
            if time.time() - started > 60:
                backoff = 1.0
            sys.stderr.write(json.dumps({"ts": time.time(), "controller": "supervisor",
                                         "what": "agent exited (status %d); restart in %.0f s" % (status, backoff),
                                         "why": "supervised"}) + "\n")
            sys.stderr.flush()
            sleep(backoff)
            backoff = min(backoff * 2, 30.0)
    finally:
        if read_pid(pidfile) == os.getpid():
            os.unlink(pidfile)
    return 0


# ------------------------------------------------------------------ command line

USAGE = """usage: netstack-agent COMMAND [options]
  run [--config F] [--confd D]      run in the foreground (systemd's ExecStart)
  supervise [--daemon] [--config F] [--confd D]
                                    run under a restarting supervisor (hosts without systemd);
                                    with a live supervisor already: reload it and exit
  check-config FILE [--confd D | --no-confd]
                                    validate FILE merged with D/*.json; exit 1 naming the field
  reload | stop | status            signal the running agent / print its status
"""


def _opts(args):
    opts = {"config": CONFIG, "confd": CONFD, "daemon": False, "rest": []}
    i = 0
    while i < len(args):
        a = args[i]
        if a in ("--config", "--confd") and i + 1 < len(args):
            opts[a[2:]] = args[i + 1]
            i += 2
            continue
        if a == "--daemon":
            opts["daemon"] = True
        elif a == "--no-confd":
            opts["confd"] = None
        else:
            opts["rest"].append(a)
        i += 1
    return opts


def main(argv=None, launcher=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        sys.stdout.write(USAGE)
        return 0 if argv else 2
    cmd, o = argv[0], _opts(argv[1:])
    try:
        if cmd == "run":
            return Agent(o["config"], o["confd"]).run()
        if cmd == "check-config":
            path = o["rest"][0] if o["rest"] else o["config"]
            cfg, sources, digest = load(path, o["confd"])
            sys.stdout.write("ok %s (%s)\n" % (digest, ", ".join(sources) or "defaults"))
            return 0
        if cmd == "supervise":
            pid = read_pid(SUPERVISOR_PIDFILE)
            if pid:
                os.kill(pid, signal.SIGHUP)
                sys.stdout.write("running (supervisor %d): reload requested\n" % pid)
                return 0
            load(o["config"], o["confd"])  # refuse to start on a bad config
            # The installed launcher is executable itself; a script run as `python x.py` is not.
            cmd = [launcher] if launcher else [sys.executable, os.path.abspath(sys.argv[0])]
            sys.stdout.write("started\n")
            sys.stdout.flush()
            return supervise(cmd + ["run", "--config", o["config"], "--confd", o["confd"]],
                             daemon=o["daemon"])
        if cmd == "reload":
            pid = notify()
            sys.stdout.write("reload requested (pid %d)\n" % pid if pid else "not running\n")
            return 0 if pid else 1
        if cmd == "stop":
            pids = [p for p in (read_pid(SUPERVISOR_PIDFILE), read_pid(PIDFILE)) if p]
            for p in pids:
                os.kill(p, signal.SIGTERM)
            deadline = time.time() + 10
            while time.time() < deadline and (read_pid(SUPERVISOR_PIDFILE) or read_pid(PIDFILE)):
                time.sleep(0.1)
            sys.stdout.write("stopped\n" if pids else "not running\n")
            return 0
        if cmd == "status":
            st = read_status()
            pid = running()
            sys.stdout.write(json.dumps({"running": bool(pid), "pid": pid, "status": st}, indent=2, sort_keys=True)
                             + "\n")
            return 0 if pid else 3
    except NetstackError as e:
        sys.stderr.write("netstack-agent: %s\n" % e)
        return 1
    sys.stderr.write(USAGE)
    return 2
