# -*- coding: utf-8 -*-
# Copyright: netstack.tuning contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""netstack-agent's controller of the same-host path (the ``shm`` section, written by shm_agent)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy

from ansible_collections.netstack.tuning.plugins.module_utils.core.common import NetstackError
from ansible_collections.netstack.tuning.plugins.module_utils.shm_path import path as shm


class ShmController(object):
    """Keeps the same-host path as the ``shm`` section says."""

    section = "shm"

    @staticmethod
    def schema():
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

    @staticmethod
    def check(section, cfg):
        if section["state"] != "present":
            return
        if "policy" not in section:
            raise NetstackError("required when state is present", field="shm.policy")
        shm.validate(section["policy"], field="shm.policy")

    def __init__(self, agent):
        self.agent = agent
        self.path = None
        self.source = None

    def _path(self, cfg):
        name = (cfg.get("shm") or {}).get("name") or "shm"
        if self.path is None or self.path.name != name or self.path.state_dir != cfg["state_dir"]:
            self.path = shm.ShmPath(name=name, state_dir=cfg["state_dir"])
        return self.path

    def reconcile(self, cfg, why):
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
        sec = cfg.get("shm")
        if not sec or sec["state"] != "present":
            return []
        return shm.metrics(self._path(cfg).counters())
