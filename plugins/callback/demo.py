# -*- coding: utf-8 -*-
# Copyright: netstack.tuning contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: demo
type: stdout
short_description: Quiet output for netstack.tuning's main job
version_added: 0.2.0
description:
  - Ansible's default output without the noise of a long job - a task is shown only when it
    changed something, failed, or is a message (C(debug)); skipped and unchanged results and
    the C(included:) lines are left out, and so is the banner of a task that shows nothing.
  - C(make demo) uses it. Set O(display_ok_hosts=true) and O(display_skipped_hosts=true)
    (C(ANSIBLE_DISPLAY_OK_HOSTS), C(ANSIBLE_DISPLAY_SKIPPED_HOSTS)) for the default's detail.
author:
  - netstack.tuning maintainers (@netstack-tuning)
extends_documentation_fragment:
  - default_callback
  - result_format_callback
requirements:
  - set as the stdout callback (C(ANSIBLE_STDOUT_CALLBACK=netstack.tuning.demo))
"""

from ansible.plugins.callback.default import CallbackModule as DefaultCallback

MESSAGES = frozenset(("debug", "ansible.builtin.debug", "ansible.legacy.debug"))


class CallbackModule(DefaultCallback):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "stdout"
    CALLBACK_NAME = "netstack.tuning.demo"

    def set_options(self, task_keys=None, var_options=None, direct=None):
        super(CallbackModule, self).set_options(task_keys=task_keys, var_options=var_options, direct=direct)
        # Quiet unless asked otherwise: the defaults of these two options are the default
        # callback's (true); an explicit setting in the environment or ansible.cfg wins.
        for opt in ("display_ok_hosts", "display_skipped_hosts"):
            if self.get_option_and_origin(opt)[1] == "default":
                self._plugin_options[opt] = False

    def _shown(self, result, call, *args):
        """Show a message task's result even when unchanged results are hidden."""
        if result._task.action in MESSAGES and not self.get_option("display_ok_hosts"):
            self._plugin_options["display_ok_hosts"] = True
            try:
                return call(result, *args)
            finally:
                self._plugin_options["display_ok_hosts"] = False
        return call(result, *args)

    def v2_runner_on_ok(self, result):
        return self._shown(result, super(CallbackModule, self).v2_runner_on_ok)

    def v2_runner_item_on_ok(self, result):
        return self._shown(result, super(CallbackModule, self).v2_runner_item_on_ok)

    def v2_playbook_on_include(self, included_file):
        # "included: <file> for <host>" says where the next tasks come from, not what they did
        if self.get_option("display_ok_hosts"):
            super(CallbackModule, self).v2_playbook_on_include(included_file)
