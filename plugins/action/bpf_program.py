# -*- coding: utf-8 -*-
# Copyright: netstack.tuning contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin: ship a BPF C source from the controller (the collection's bpf/ directory,
or a controller path) to the bpf_program module as ``source_text``."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ansible.errors import AnsibleActionFail
from ansible.module_utils.common.text.converters import to_text
from ansible.plugins.action import ActionBase

COLLECTION_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BPF_DIR = os.path.join(COLLECTION_ROOT, "bpf")
MAX_SOURCE = 1 << 20


def find_source(src, search=None):
    """Path of ``src`` on the controller: a name in the collection's bpf/ directory first,
    then ``search`` (the role's or playbook's files lookup), then an absolute path."""
    if not src or "\0" in src:
        raise AnsibleActionFail("src: a source file name is required")
    if "/" not in src:
        cand = os.path.join(BPF_DIR, src)
        if os.path.isfile(cand):
            return cand
    if search:
        try:
            found = search(src)
            if found and os.path.isfile(found):
                return found
        except Exception:
            pass
    if os.path.isabs(src) and os.path.isfile(src):
        return src
    raise AnsibleActionFail("src: %s is not in the collection's bpf/ directory (%s) nor a controller file"
                            % (src, BPF_DIR))


def read_source(path):
    """The text of a controller-side BPF source, refusing oversized files."""
    if os.path.getsize(path) > MAX_SOURCE:
        raise AnsibleActionFail("src: %s is larger than %d bytes" % (path, MAX_SOURCE))
    with open(path, "rb") as f:
        return to_text(f.read(), errors="surrogate_or_strict")


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = True

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        args = dict(self._task.args)
        if args.get("state", "present") == "present" and args.get("source_text") is None \
                and not args.get("remote_src") and args.get("src"):
            args["source_text"] = read_source(find_source(args["src"], lambda s: self._find_needle("files", s)))
        result.update(self._execute_module(module_name="netstack.tuning.bpf_program", module_args=args,
                                           task_vars=task_vars))
        return result
