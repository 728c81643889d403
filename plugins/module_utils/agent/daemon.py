# -*- coding: utf-8 -*-
# Copyright: netstack.tuning contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""netstack-agent: the one long-running process per host.

It holds what must keep running: the same-host path (capability 4), the AMP controller
(capability 6, amp/controller.py) and the traffic collector (capability 5,
traffic/controller.py), and the journal watch; each is a controller class found through
agent/registry.py and imported only when the config has its section.

Config: ``/etc/netstack/agent.json`` (agent settings, rendered by the netstack_agent role
from a Jinja2 template) merged with ``/etc/netstack/agent.d/*.json`` (one file per
capability, written by its module, e.g. shm_agent writes ``shm.json``), validated as a
whole by JSON Schema (agent/config.py).  A config that does not validate is refused: at start the agent
exits with the field named; on reload it keeps the config it has and counts the error.

Each controller reconciles the host to its section at start, on SIGHUP and every
``interval`` seconds (so pins removed by hand, or lost with a reboot, come back), and logs
every change it makes with what and why, as JSON lines (a rotated log file).  Metrics (agent/metrics_server.py): Prometheus text on
http://<metrics.listen>:<metrics.port>/metrics and, optionally, a textfile for
node_exporter's textfile collector.  The endpoint has no authentication: it listens on a
loopback address unless the config opts in with ``metrics.allow_remote: true``.

Run it under systemd (the role installs a unit) or, where PID 1 is not systemd, as
``netstack-agent supervise --daemon``: a small supervisor (agent/supervisor.py) that restarts the agent when it
dies (backoff 1 s doubling to 30 s, reset after a minute of uptime) and forwards SIGHUP
and SIGTERM.  Killing the agent never disturbs the data path: programs stay attached and
pinned; the restarted agent adopts them (same tag, same policy: nothing changes).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import logging
import logging.handlers
import os
import signal
import sys
import threading
import time

from ansible_collections.netstack.tuning.plugins.module_utils.agent import metrics_server, registry
from ansible_collections.netstack.tuning.plugins.module_utils.agent.config import load
from ansible_collections.netstack.tuning.plugins.module_utils.agent.control import CONFD, CONFIG, PIDFILE, STATUS, _write_pid, read_pid
from ansible_collections.netstack.tuning.plugins.module_utils.core import metrics as prom
from ansible_collections.netstack.tuning.plugins.module_utils.core.common import NetstackError

LOG_BYTES = 10 * 1024 * 1024
LOG_KEEP = 5


class Agent(object):

    def __init__(self, config=CONFIG, confd=CONFD, pidfile=PIDFILE, status=STATUS):
        self.config_path, self.confd, self.pidfile, self.status_path = config, confd, pidfile, status
        self.cfg, self.sources, self.digest = load(config, confd)
        self.generation = 1
        self.controllers = {}  # section -> controller, loaded as configs name them (registry)
        self.logger = None
        self._log_path = False
        self._sync()
        # Set by signal handlers, so plain flags: a handler must not take a lock (the
        # threading.Event these were deadlocked when `stop` sent two SIGTERMs at once).
        self.reload_wanted = False
        self.stop_wanted = False
        self.counts = {"reconciles": 0, "errors": 0, "config_errors": 0, "changes": 0}
        self.last = {}
        self.started = time.time()
        self.lock = threading.Lock()
        self.server = None

    def _sync(self):
        """Load the controllers of the config's sections (registry order); a controller whose
        section went away stays, so that its reconcile can take its work down."""
        for name in registry.wanted(self.cfg):
            if name not in self.controllers:
                self.controllers[name] = registry.controller(name)(self)
        order = [name for name, _where in registry.CONTROLLERS]
        self.controllers = dict(sorted(self.controllers.items(), key=lambda kv: order.index(kv[0])))

    # -- log -----------------------------------------------------------------
    def log(self, controller, what, why, **extra):
        """One JSON line per change: to stderr and to the config's ``log`` file (rotated at
        LOG_BYTES, LOG_KEEP old files kept)."""
        rec = {"ts": round(time.time(), 3), "pid": os.getpid(), "controller": controller, "what": what, "why": why}
        rec.update(extra)
        self._logger().info(json.dumps(rec, sort_keys=True))

    def _logger(self):
        path = self.cfg.get("log")
        if self.logger is not None and path == self._log_path:
            return self.logger
        logger = logging.getLogger("netstack-agent.%d" % id(self))
        logger.propagate = False
        logger.setLevel(logging.INFO)
        for h in list(logger.handlers):
            logger.removeHandler(h)
            h.close()
        fmt = logging.Formatter("%(message)s")
        handlers = [logging.StreamHandler(sys.stderr)]
        if path:
            d = os.path.dirname(path)
            if not os.path.isdir(d):
                os.makedirs(d, 0o755)
            handlers.append(logging.handlers.RotatingFileHandler(path, maxBytes=LOG_BYTES, backupCount=LOG_KEEP))
        for h in handlers:
            h.setFormatter(fmt)
            logger.addHandler(h)
        self.logger, self._log_path = logger, path
        return logger

    # -- one pass ------------------------------------------------------------
    def reconcile(self, why):
        with self.lock:
            self.counts["reconciles"] += 1
            for c in list(self.controllers.values()):
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
            self._sync()
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
        lines = prom.one("netstack_agent_up", "gauge", "The agent is running", 1)
        lines += prom.one("netstack_agent_config_generation", "gauge", "Config generation in force", self.generation)
        for k in ("reconciles", "errors", "config_errors", "changes"):
            lines += prom.one("netstack_agent_%s_total" % k, "counter", "Agent %s" % k.replace("_", " "), self.counts[k])
        with self.lock:
            for c in self.controllers.values():
                try:
                    lines += c.metrics(self.cfg)
                except (NetstackError, OSError) as e:
                    lines.append("# %s metrics unavailable: %s" % (c.section, str(e).replace("\n", " ")))
        return prom.text(lines)

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
        m = self.cfg["metrics"]
        self.server = metrics_server.serve(m["listen"], m["port"], self.metrics_text)
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
                journal = self.controllers["journal"]
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
            for c in self.controllers.values():
                if hasattr(c, "close"):
                    c.close()
            if self.server is not None:
                self.server.shutdown()
            if read_pid(self.pidfile) == os.getpid():
                os.unlink(self.pidfile)
        return 0
