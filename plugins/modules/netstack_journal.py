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
  - V(recover) restores transactions whose writing process died before finishing.
  - V(list) returns the transactions.
author:
  - netstack.tuning maintainers (@netstack-tuning)
options:
  action:
    description: What to do.
    type: str
    choices: [list, confirm, rollback, recover]
    default: list
  journal_id:
    description: Journal entry to confirm or roll back to.
    type: str
  state_dir:
    description: Directory of the journal.
    type: path
    default: /var/lib/netstack
  limit:
    description: With V(list), return only the newest O(limit) entries (0 = all).
    type: int
    default: 50
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
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
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.netstack.tuning.plugins.module_utils.common import NetstackError
from ansible_collections.netstack.tuning.plugins.module_utils.journal import ACTIVE_STATES, Journal


def run(module):
    p = module.params
    j = Journal(p["state_dir"])
    action = p["action"]
    result = {"changed": False, "entries": [], "pending_confirm": []}
    txns = j.transactions()
    if action == "list":
        sel = txns[-p["limit"]:] if p["limit"] else txns
        result["entries"] = [t.summary() for t in sel]
    elif action == "confirm":
        if not p["journal_id"]:
            raise NetstackError("required with action=confirm", field="journal_id")
        t = j.get(p["journal_id"])
        if t.state == "applied":
            result["changed"] = True
            if not module.check_mode:
                j.confirm(t.id)
        elif t.state != "confirmed":
            j.confirm(t.id)  # raises the explanation (rolled back, failed, ...)
        result["entries"] = [j.get(t.id).summary()]
    elif action == "rollback":
        if p["journal_id"]:
            target = j.get(p["journal_id"])
            todo = [t.id for t in reversed(txns) if t.seq >= target.seq and t.state in ACTIVE_STATES]
        else:
            todo = [t.id for t in reversed(txns) if t.state in ACTIVE_STATES]
        result["undone"] = todo
        result["changed"] = bool(todo)
        if todo and not module.check_mode:
            j.rollback(todo[-1], by="rollback", reason="netstack_journal action=rollback")
        result["entries"] = [j.get(i).summary() for i in todo]
    elif action == "recover":
        if module.check_mode:
            result["undone"] = [t.id for t in txns if t.state == "begun"]
        else:
            result["undone"] = j.recover()
        result["changed"] = bool(result["undone"])
    result["pending_confirm"] = j.pending_confirm()
    return result


def main():
    module = AnsibleModule(
        argument_spec=dict(
            action=dict(type="str", default="list", choices=["list", "confirm", "rollback", "recover"]),
            journal_id=dict(type="str"),
            state_dir=dict(type="path", default="/var/lib/netstack"),
            limit=dict(type="int", default=50),
        ),
        supports_check_mode=True,
    )
    try:
        result = run(module)
    except NetstackError as e:
        module.fail_json(**e.as_dict())
    module.exit_json(**result)


if __name__ == "__main__":
    main()
