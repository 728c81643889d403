# -*- coding: utf-8 -*-
# Copyright: netstack.tuning contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What netstack's modules share as Ansible front ends (the one module_utils file that
imports AnsibleModule; the engine never does).

``NetstackModule`` is AnsibleModule with one guard.  Ansible converts a 5,000-digit integer
argument to an int happily, then ends in a ValueError traceback when it logs the
invocation (Python refuses to print integers of more than 4,300 digits).  No netstack
option takes more than 20 digits, so such an argument is refused here, naming the option,
before anything is logged or done.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.module_utils.basic import AnsibleModule

MAX_INT_BITS = 67  # 10**20 - 1 needs 67 bits: every netstack number fits


def oversized_int(value, path):
    """Dotted path of the first integer in ``value`` (walked through dicts and lists) too
    large for any netstack option, or None."""
    if isinstance(value, int) and not isinstance(value, bool):
        return path if value.bit_length() > MAX_INT_BITS else None
    if isinstance(value, dict):
        for k, v in value.items():
            found = oversized_int(v, "%s.%s" % (path, k))
            if found:
                return found
    elif isinstance(value, (list, tuple)):
        for n, v in enumerate(value):
            found = oversized_int(v, "%s[%d]" % (path, n))
            if found:
                return found
    return None


class NetstackModule(AnsibleModule):

    def _log_invocation(self):
        for name, value in self.params.items():
            where = oversized_int(value, name)
            if where:
                # The result echoes the arguments (invocation.module_args): not this one.
                self.params[name] = "(not shown: an integer too large to print)"
                self.fail_json(msg="%s: integer too large (netstack options take at most 20 digits)" % where,
                               field=where)
        super(NetstackModule, self)._log_invocation()
