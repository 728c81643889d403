# -*- coding: utf-8 -*-
# Copyright: netstack.tuning contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin: ship bpf/shm_path.bpf.c from the controller to the shm_agent module."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.plugins.action import ActionBase
from ansible_collections.netstack.tuning.plugins.action.bpf_program import find_source, read_source

SOURCE = "shm_path.bpf.c"


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = True

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        args = dict(self._task.args)
        if args.get("state", "present") == "present" and not args.get("source_text"):
            args["source_text"] = read_source(find_source(SOURCE))
        result.update(self._execute_module(module_name="netstack.tuning.shm_agent", module_args=args,
                                           task_vars=task_vars))
        return result
