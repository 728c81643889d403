# -*- coding: utf-8 -*-
# Copyright: netstack.tuning contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # The state directory every module that keeps records on the host shares.
    DOCUMENTATION = r"""
options:
  state_dir:
    description:
      - netstack's state directory on the host (an absolute path). It holds the journal
        (C(journal.jsonl)), the records of what netstack made (BPF programs, CPU partitions,
        rule names) and their locks.
    type: path
    default: /var/lib/netstack
"""
