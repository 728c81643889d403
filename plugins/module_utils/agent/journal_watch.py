# -*- coding: utf-8 -*-
# Copyright: netstack.tuning contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The agent's journal watch: reverts commit-confirmed changes whose deadline passed."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

from ansible_collections.netstack.tuning.plugins.module_utils.core import metrics as prom
from ansible_collections.netstack.tuning.plugins.module_utils.core.journal import Journal


class JournalController(object):
    """Watches the journal's confirm deadlines: a commit-confirmed change whose deadline
    passed with no confirm is reverted here if its watchdog is gone (killed, OOM, a reboot),
    and so is a transaction whose writer died mid-apply (Journal.settle).  Runs on every
    pass and, between passes, as soon as a pending deadline is due."""

    section = "journal"

    @staticmethod
    def schema():
        return None

    @staticmethod
    def check(section, cfg):
        return None

    def __init__(self, agent):
        self.agent = agent
        self.next_deadline = None
        self.counts = {"reverted": 0, "conflicts": 0}
        self.damaged = 0
        self.pending = 0

    def due(self):
        return self.next_deadline is not None and time.time() >= self.next_deadline + 1.0

    def reconcile(self, cfg, why):
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
        return (prom.one("netstack_journal_reverted_total", "counter",
                         "Transactions the agent reverted (expired or interrupted)", self.counts["reverted"])
                + prom.one("netstack_journal_pending_confirm", "gauge",
                           "Commit-confirmed transactions waiting for a confirm", self.pending)
                + prom.one("netstack_journal_damaged_lines", "gauge",
                           "Damaged lines in the journal (netstack_journal action=repair)", self.damaged))
