#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: netstack.tuning contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: sysctl_set
short_description: Set many sysctls at once, all-or-nothing, journaled and reversible
version_added: 0.1.0
description:
  - Sets a dict of kernel parameters in one task. Every key is validated before anything is
    written (the name must exist under C(/proc/sys) and may not escape it; the value must
    have the shape the kernel holds, for example three integers for C(net.ipv4.tcp_rmem)).
  - The changed keys are written as one transaction. If a key fails, the keys written
    before it are restored and the error names the key and the kernel's reason.
  - Every prior value is recorded durably in the journal under O(state_dir) before it is
    overwritten, so M(netstack.tuning.netstack_journal) can roll back any change, also after
    a crash of the process that wrote it.
  - With O(confirm_timeout), a detached watchdog on the host restores the prior values
    unless the change is confirmed with M(netstack.tuning.netstack_journal) in time, even if
    the Ansible connection or the controller dies.
  - Values are compared normalised, so C(4096  131072 6291456) equals C(4096 131072 6291456);
    the task reports C(changed) only when a value really changes.
  - Other managers of the same keys (sysctl.d and sysctl.conf files, an active tuned profile,
    a running bpftune) are detected and reported.
author:
  - netstack.tuning maintainers (@netstack-tuning)
options:
  sysctls:
    description:
      - Sysctl name to value. Names in dotted (C(net.core.somaxconn)) or slash form
        (C(net/ipv4/conf/eth0.100/rp_filter)). Values are integers, strings, or lists of
        integers for vector sysctls.
      - Required with O(state=present). With O(state=rolled_back) only the names are used; O(names) or
        O(sysctls) is required there.
    type: dict
  names:
    description:
      - Names of the sysctls to restore, with O(state=rolled_back), as an alternative to O(sysctls).
    type: list
    elements: str
  state:
    description:
      - V(present) sets the values.
      - V(rolled_back) restores the named keys to the values they had before netstack first
        changed them (or before journal entry O(journal_id)); keys netstack never changed stay
        as they are.
    type: str
    choices: [present, rolled_back]
    default: present
  persist:
    description:
      - V(runtime) changes the running kernel only.
      - V(file) also writes the set to the drop-in O(persist_file) under O(persist_dir) so it
        survives a reboot. The file is part of the same journaled transaction.
      - With O(confirm_timeout), the drop-in is written only when the change is confirmed, so a
        reboot before the deadline boots with the old values instead of making the change
        permanent.
    type: str
    choices: [runtime, file]
    default: runtime
  persist_file:
    description: Name of the drop-in (for example C(60-netstack.conf)). Required with O(persist=file).
    type: str
  persist_dir:
    description: Directory of the drop-in.
    type: path
    default: /etc/sysctl.d
  netns:
    description:
      - Name of a network namespace (as in C(ip netns)) whose C(net.*) sysctls to change.
        Non-C(net.*) sysctls are global whatever the namespace.
    type: str
  confirm_timeout:
    description:
      - Seconds within which the change must be confirmed (at most 604800, a week); V(0)
        disables commit-confirm.
      - The returned RV(journal_id) is what to confirm. A confirm after the deadline is refused.
      - If the watchdog that reverts an unconfirmed change is gone (killed, or the host
        rebooted), the next netstack run on the host reverts it; a key changed since by
        another transaction is left alone and reported as a conflict.
    type: int
    default: 0
  conflicts:
    description: What to do when another manager sets one of the keys.
    type: str
    choices: [warn, fail, ignore]
    default: warn
  journal_id:
    description: With O(state=rolled_back), restore the values from before this journal entry.
    type: str
  reason:
    description: Why the change is made; recorded in the journal.
    type: str
    default: ""
extends_documentation_fragment:
  - netstack.tuning.attributes
  - netstack.tuning.state_dir
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
notes:
  - Runs on the managed host; needs root to write most sysctls.
seealso:
  - module: netstack.tuning.netstack_journal
  - module: ansible.posix.sysctl
"""

EXAMPLES = r"""
- name: Apply a latency profile, reverted by the host unless confirmed within 120 s
  netstack.tuning.sysctl_set:
    sysctls:
      net.core.somaxconn: 8192
      net.ipv4.tcp_rmem: [4096, 131072, 6291456]
      net.ipv4.tcp_congestion_control: cubic
    confirm_timeout: 120
    reason: nginx latency profile
  register: applied

- name: Confirm it
  netstack.tuning.netstack_journal:
    action: confirm
    journal_id: "{{ applied.journal_id }}"
  when: applied.journal_id is not none

- name: Persist a set into a drop-in
  netstack.tuning.sysctl_set:
    sysctls:
      net.ipv4.tcp_fastopen: 3
    persist: file
    persist_file: 60-netstack.conf

- name: Change net.* sysctls inside a network namespace only
  netstack.tuning.sysctl_set:
    netns: lab1
    sysctls:
      net.ipv4.tcp_syn_retries: 4

- name: Put keys back to what they were before netstack changed them
  netstack.tuning.sysctl_set:
    state: rolled_back
    names: [net.core.somaxconn, net.ipv4.tcp_rmem]
"""

RETURN = r"""
changes:
  description: Keys whose value changed (or would change in check mode).
  returned: always
  type: list
  elements: dict
  sample: [{"key": "net.core.somaxconn", "before": "4096", "after": "8192"}]
unchanged:
  description: Keys already at the wanted value.
  returned: always
  type: list
  elements: str
journal_id:
  description: Journal entry of the transaction, or null when nothing was written.
  returned: always
  type: str
  sample: "000042"
confirm_deadline:
  description: Unix time by which the change must be confirmed, when O(confirm_timeout) is set.
  returned: always
  type: float
conflicts:
  description: Other managers of the keys (C(key), C(manager), C(where), C(value)).
  returned: always
  type: list
  elements: dict
persist_path:
  description: Path of the drop-in, with O(persist=file).
  returned: when persist is file
  type: str
persist_on_confirm:
  description: True when the drop-in will be written by the confirm of RV(journal_id), not now.
  returned: when persist is file with confirm_timeout
  type: bool
recovered:
  description: Journal entries of transactions interrupted by a crash, or past their confirm
    deadline with no watchdog left, that were reverted first.
  returned: always
  type: list
  elements: str
"""

from ansible_collections.netstack.tuning.plugins.module_utils.core.frontend import NetstackModule
from ansible_collections.netstack.tuning.plugins.module_utils.core.common import NetstackError
from ansible_collections.netstack.tuning.plugins.module_utils.core import sysctl as sysctl_engine
from ansible_collections.netstack.tuning.plugins.module_utils.core.journal import Journal


def run(module):
    result, warnings = sysctl_engine.set_sysctls(Journal(module.params["state_dir"]), module.params,
                                                 check_mode=module.check_mode, diff=module._diff)
    for w in warnings:
        module.warn(w)
    return result


def main():
    module = NetstackModule(
        argument_spec=dict(
            sysctls=dict(type="dict"),
            names=dict(type="list", elements="str"),
            state=dict(type="str", default="present", choices=["present", "rolled_back"]),
            persist=dict(type="str", default="runtime", choices=["runtime", "file"]),
            persist_file=dict(type="str"),
            persist_dir=dict(type="path", default="/etc/sysctl.d"),
            netns=dict(type="str"),
            confirm_timeout=dict(type="int", default=0),
            conflicts=dict(type="str", default="warn", choices=["warn", "fail", "ignore"]),
            journal_id=dict(type="str"),
            reason=dict(type="str", default=""),
            state_dir=dict(type="path", default="/var/lib/netstack"),
        ),
        mutually_exclusive=[("names", "sysctls")],
        required_if=[("state", "present", ("sysctls",)),
                     ("state", "rolled_back", ("names", "sysctls"), True),
                     ("persist", "file", ("persist_file",))],
        supports_check_mode=True,
    )
    try:
        result = run(module)
    except NetstackError as e:
        module.fail_json(**e.as_dict())
    module.exit_json(**result)


if __name__ == "__main__":
    main()
