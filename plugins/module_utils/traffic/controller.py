# -*- coding: utf-8 -*-
# Copyright: netstack.tuning contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""netstack-agent's controller of the traffic collector (the ``traffic`` section, written by
traffic_profile): keeps the collector loaded and scrapes it into its store."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

from ansible_collections.netstack.tuning.plugins.module_utils.agent.worker import Worker
from ansible_collections.netstack.tuning.plugins.module_utils.core import metrics as prom
from ansible_collections.netstack.tuning.plugins.module_utils.traffic import collect as trafficcollect


class TrafficController(object):
    """Keeps the traffic collector of the ``traffic`` section loaded and scrapes it into its
    store every ``interval`` seconds, on a thread of its own (trafficcollect.scrape_loop)."""

    section = "traffic"

    @staticmethod
    def schema():
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

    @staticmethod
    def check(section, cfg):
        trafficcollect.agent_settings(section, cfg["state_dir"])

    def __init__(self, agent):
        self.agent = agent
        self.worker = Worker("traffic", join_timeout=30)
        self.collector = None
        self.store = None
        self.key = None
        self.counts = {"errors": 0}

    def reconcile(self, cfg, why):
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
        def failed(e):
            self.counts["errors"] += 1
            self.agent.log("traffic", "scrape failed", str(e))

        self.worker.start(trafficcollect.scrape_loop, self.collector, self.store, interval, on_error=failed)

    def close(self):
        self._stop()

    def _stop(self):
        self.worker.stop()

    def metrics(self, cfg):
        sec = cfg.get("traffic")
        if not sec or sec["state"] != "present" or self.collector is None:
            return []
        return self.collector.metrics() + prom.one(
            "netstack_traffic_scrape_errors_total", "counter", "Failed scrapes of the traffic collector",
            self.counts["errors"], {"collector": self.collector.name})
