#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: netstack.tuning contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: netstack_journal
short_description: Confirm, roll back and inspect netstack's kernel-state journal
version_added: 0.1.0
description:
  - Every change netstack makes to kernel state is a transaction in a durable journal on the
    host (see M(netstack.tuning.sysctl_set)). This module reads it and acts on it.
  - V(confirm) confirms a commit-confirmed transaction so its watchdog stands down.
  - V(rollback) restores the host to its state before journal entry O(journal_id), undoing
    that entry and every later one still in force, newest first. Without O(journal_id) it
    restores the state from before netstack changed anything.
  - V(recover) restores transactions whose writing process died before finishing, and
    commit-confirmed transactions whose deadline passed without a confirm when their watchdog
    is gone (killed, or the host rebooted). Every writing netstack module does the same first.
  - V(list) returns the transactions, and the journal's damaged lines if it has any.
  - V(repair) sets damaged lines aside into C(journal.damaged) beside the journal and keeps
    every valid transaction; writes refuse a damaged journal until then.
  - V(remove) deletes the journal directory O(state_dir) once no entry in it is in force and
    every commit-confirm watchdog of it has finished (it waits up to 30 s for them), to take
    a lab or a retired host back to nothing. It refuses while an entry is in force.
  - A confirm after the deadline is refused; the change was, or is about to be, reverted.
author:
  - netstack.tuning maintainers (@netstack-tuning)
options:
  action:
    description: What to do.
    type: str
    choices: [list, confirm, rollback, recover, repair, remove]
    default: list
  journal_id:
    description: Journal entry to confirm (required with O(action=confirm)) or roll back to.
    type: str
  limit:
    description: With V(list), return only the newest O(limit) entries (0 = all, at most 100000).
    type: int
    default: 50
extends_documentation_fragment:
  - netstack.tuning.attributes
  - netstack.tuning.state_dir
attributes:
  check_mode:
    support: full
  diff_mode:
    description: Returns no diff; the entries acted on are in the result.
    support: none
seealso:
  - module: netstack.tuning.sysctl_set
"""

EXAMPLES = r"""
- name: Confirm a change applied with confirm_timeout
  netstack.tuning.netstack_journal:
    action: confirm
    journal_id: "{{ applied.journal_id }}"

- name: Restore the host to its state before entry 000012
  netstack.tuning.netstack_journal:
    action: rollback
    journal_id: "000012"

- name: Restore everything netstack ever changed on the host
  netstack.tuning.netstack_journal:
    action: rollback

- name: Set damaged journal lines aside (they are kept in journal.damaged)
  netstack.tuning.netstack_journal:
    action: repair

- name: Remove a lab's journal directory after everything in it was rolled back
  netstack.tuning.netstack_journal:
    action: remove
    state_dir: /var/lib/netstack-lab
"""

RETURN = r"""
entries:
  description: Transactions, oldest first (with V(list)), or the ones acted on.
  returned: always
  type: list
  elements: dict
undone:
  description: Journal entries rolled back (or that would be, in check mode).
  returned: with action rollback or recover
  type: list
  elements: str
pending_confirm:
  description: Applied transactions still waiting for confirmation.
  returned: always
  type: list
  elements: dict
damaged:
  description: Damaged lines of the journal (C(line), C(error), C(text)); with V(repair), the lines set aside.
  returned: always
  type: list
  elements: dict
conflicts:
  description: Keys a revert left alone because they were changed since (C(id), C(key), C(set), C(found)).
  returned: with action recover
  type: list
  elements: dict
"""

import os
import shutil

from ansible_collections.netstack.tuning.plugins.module_utils.core.frontend import NetstackModule
from ansible_collections.netstack.tuning.plugins.module_utils.core.common import NetstackError, check_txn_id
from ansible_collections.netstack.tuning.plugins.module_utils.core.journal import ACTIVE_STATES, Journal, wait_for_watchdogs


def run(module):
    p = module.params
    if not 0 <= p["limit"] <= 100000:
        raise NetstackError("must be between 0 (all) and 100000, got %d" % p["limit"], field="limit")
    check_txn_id(p["journal_id"])
    action = p["action"]
    check = module.check_mode
    result = {"changed": False, "entries": [], "pending_confirm": [], "damaged": []}
    if action == "remove":
        return remove(p["state_dir"], check, result)
    j = Journal(p["state_dir"])
    if action == "recover":
        res = j.settle(check=check)
        result["undone"] = res["recovered"] + res["expired"]
        result["conflicts"] = res["conflicts"]
        result["changed"] = bool(result["undone"])
    elif action == "repair":
        res = j.repair(check=check)
        result["damaged"] = res["damaged"]
        result["changed"] = bool(res["damaged"])
        if res["damaged"]:
            result["moved_to"] = res["moved_to"]
    elif not check and action in ("confirm", "rollback"):
        j.settle()
    view = j.view()
    txns = view.txns
    if action == "list":
        sel = txns[-p["limit"]:] if p["limit"] else txns
        result["entries"] = [t.summary() for t in sel]
    elif action == "confirm":
        t = view.get(p["journal_id"])
        result["changed"] = j.confirm(t.id, check=check)
        result["entries"] = [j.get(t.id).summary()]
    elif action == "rollback":
        view.require_intact()
        if p["journal_id"]:
            target = view.get(p["journal_id"])
            todo = [t.id for t in reversed(txns) if t.seq >= target.seq and t.state in ACTIVE_STATES]
        else:
            todo = [t.id for t in reversed(txns) if t.state in ACTIVE_STATES]
        result["undone"] = todo
        result["changed"] = bool(todo)
        if todo and not check:
            j.rollback(todo[-1], by="rollback", reason="netstack_journal action=rollback")
        result["entries"] = [j.get(i).summary() for i in todo]
    if action != "repair":
        view = j.view()
        result["damaged"] = view.damage
        if view.damage:
            module.warn(view.damage_message())
    result["pending_confirm"] = [t.summary() for t in view.txns if t.state == "applied" and t.deadline]
    return result


def remove(state_dir, check, result):
    """Delete a journal directory nothing in which is in force any more."""
    if not os.path.isdir(state_dir):
        return result
    view = Journal(state_dir).view()
    view.require_intact()
    live = [t.id for t in view.txns if t.state in ACTIVE_STATES]
    if live:
        raise NetstackError("entries %s are still in force; roll them back first (action=rollback)"
                            % ", ".join(live), field="state_dir")
    result["changed"] = True
    if check:
        return result
    # A watchdog that found its journal gone would wait out its deadline and revert into a
    # re-created directory: wait until every one has logged that it is done.
    if not wait_for_watchdogs(state_dir, timeout=30.0):
        raise NetstackError("a commit-confirm watchdog of this journal is still running after 30 s", field="state_dir")
    shutil.rmtree(state_dir)
    return result


def main():
    module = NetstackModule(
        argument_spec=dict(
            action=dict(type="str", default="list", choices=["list", "confirm", "rollback", "recover", "repair", "remove"]),
            journal_id=dict(type="str"),
            state_dir=dict(type="path", default="/var/lib/netstack"),
            limit=dict(type="int", default=50),
        ),
        required_if=[("action", "confirm", ("journal_id",))],
        supports_check_mode=True,
    )
    try:
        result = run(module)
    except NetstackError as e:
        module.fail_json(**e.as_dict())
    module.exit_json(**result)


if __name__ == "__main__":
    main()
