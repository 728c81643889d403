# -*- coding: utf-8 -*-
# Copyright: netstack.tuning contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin: ship bpf/traffic.bpf.c from the controller to the traffic_profile
module when it collects (analysis needs no BPF source)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.plugins.action import ActionBase
from ansible_collections.netstack.tuning.plugins.action.bpf_program import find_source, read_source

SOURCE = "traffic.bpf.c"


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = True
    _supports_check_mode = True
    _supports_async = True  # a long oneshot collection can run in the background

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        args = dict(self._task.args)
        if args.get("action") == "collect" and args.get("state", "present") == "present" and not args.get("source_text"):
            args["source_text"] = read_source(find_source(SOURCE))
        wrap_async = self._task.async_val and not self._connection.has_native_async
        result.update(self._execute_module(module_name="netstack.tuning.traffic_profile", module_args=args,
                                           task_vars=task_vars, wrap_async=wrap_async))
        if not wrap_async:
            self._remove_tmp_path(self._connection._shell.tmpdir)
        return result
