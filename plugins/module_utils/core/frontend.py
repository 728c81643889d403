# -*- coding: utf-8 -*-
# Copyright: netstack.tuning contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What netstack's modules share as Ansible front ends (the one module_utils file that
imports AnsibleModule; the engine never does).

``NetstackModule`` is AnsibleModule with two guards against tracebacks in Ansible's own
argument handling, before any netstack code runs:

* Ansible converts a 5,000-digit integer argument to an int happily, then ends in a
  ValueError traceback when it logs the invocation (Python refuses to print integers of
  more than 4,300 digits).  No netstack option takes more than 20 digits, so such an
  argument is refused here, naming the option, before anything is logged or done.
* Ansible's int conversion goes through ``decimal.Decimal``: ``.inf`` or ``"inf"`` for an
  ``int`` option ends in an OverflowError traceback, and ``"1e999999999"`` builds an integer
  of a billion digits first.  An ``int`` option (suboptions included) is therefore taken
  only as an int, a whole finite float, or ASCII digits (at most 20, optional sign); any
  other value is handed to Ansible as text that names it, so its conversion fails with a
  message naming the option.

It also makes an option given as null the same as an option not given, for options
without a default (after validation Ansible holds None for both anyway): Ansible's own
cross-option checks (``required_if``, ``mutually_exclusive``, ``required_together``,
``required_one_of``) count an option as given when its key is present, so ``policies:
null`` passed ``required_if`` and reached the module as None.  With the key dropped these
checks are the modules' whole check of what they declare.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import math
import re

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


_INT_TEXT = re.compile(r"\A\s*[-+]?[0-9]{1,20}(\.0*)?\s*\Z")


def _plain_int(value):
    if isinstance(value, (bool, int)):
        return True
    if isinstance(value, float):
        return math.isfinite(value) and value == int(value) and abs(value) < 1e20
    return isinstance(value, str) and bool(_INT_TEXT.match(value))


def guard_ints(params, spec):
    """Replace, in place, each value of an ``int`` option of ``spec`` that Ansible's
    conversion could choke on by text that fails it cleanly."""
    for name, opts in spec.items():
        if not isinstance(params, dict) or name not in params or params[name] is None:
            continue
        value, typ = params[name], opts.get("type", "str")
        if typ == "int" and not _plain_int(value):
            params[name] = "%s (not an integer of at most 20 ASCII digits)" % repr(value)[:40]
        sub = opts.get("options")
        if sub and isinstance(value, dict):
            guard_ints(value, sub)
        elif sub and isinstance(value, list):
            for element in value:
                guard_ints(element, sub)


def drop_nulls(params, spec):
    """Remove, in place, the top-level options of ``spec`` given as None that have no default."""
    if not isinstance(params, dict):
        return
    for name, opts in spec.items():
        if name in params and params[name] is None and opts.get("default") is None:
            del params[name]


class NetstackModule(AnsibleModule):

    def _load_params(self):
        super(NetstackModule, self)._load_params()
        drop_nulls(self.params, self.argument_spec)
        guard_ints(self.params, self.argument_spec)

    def _log_invocation(self):
        for name, value in self.params.items():
            where = oversized_int(value, name)
            if where:
                # The result echoes the arguments (invocation.module_args): not this one.
                self.params[name] = "(not shown: an integer too large to print)"
                self.fail_json(msg="%s: integer too large (netstack options take at most 20 digits)" % where,
                               field=where)
        super(NetstackModule, self)._log_invocation()
