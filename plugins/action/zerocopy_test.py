# -*- coding: utf-8 -*-
# Copyright: netstack.tuning contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin: ship the collection's src/zc_bench.c to the zerocopy_test module as
``helper_source`` (the module compiles it on the host)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ansible.plugins.action import ActionBase
from ansible_collections.netstack.tuning.plugins.action.bpf_program import COLLECTION_ROOT, read_source

HELPER_SOURCE = os.path.join(COLLECTION_ROOT, "src", "zc_bench.c")


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = True
    _supports_check_mode = True
    _supports_async = True  # the role runs ``serve`` in the background

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        args = dict(self._task.args)
        if args.get("helper_source") is None and os.path.isfile(HELPER_SOURCE):
            args["helper_source"] = read_source(HELPER_SOURCE)
        wrap_async = self._task.async_val and not self._connection.has_native_async
        result.update(self._execute_module(module_name="netstack.tuning.zerocopy_test", module_args=args,
                                           task_vars=task_vars, wrap_async=wrap_async))
        if not wrap_async:
            self._remove_tmp_path(self._connection._shell.tmpdir)
        return result
