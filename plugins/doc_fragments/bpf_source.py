# -*- coding: utf-8 -*-
# Copyright: netstack.tuning contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # Modules whose action plugin ships a BPF program of the collection (bpf/*.bpf.c).
    DOCUMENTATION = r"""
options:
  source_text:
    description:
      - The BPF C source. Filled in by the module's action plugin from the collection's
        C(bpf/) directory; set it only to test another build of the program.
    type: str
"""
