# -*- coding: utf-8 -*-
# Copyright: netstack.tuning contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Shared pieces of the netstack engine: the error type and small helpers.

The engine (everything under plugins/module_utils) is plain Python: it never prints,
never exits and never imports AnsibleModule, so modules, action plugins, the agent and
unit tests can all use it.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import subprocess


class NetstackError(Exception):
    """An error the user can act on.

    ``field`` names the input (a module option, a sysctl key, a file line) the error is
    about, so front ends can say exactly what was wrong.  ``details`` carries structured
    extras (kernel errno text, verifier log lines, ...) for the return value.
    """

    def __init__(self, msg, field=None, **details):
        super(NetstackError, self).__init__(msg)
        self.msg = msg
        self.field = field
        self.details = details

    def __str__(self):
        if self.field and not self.msg.startswith(self.field):
            return "%s: %s" % (self.field, self.msg)
        return self.msg

    def as_dict(self):
        d = {"msg": str(self)}
        if self.field:
            d["field"] = self.field
        d.update(self.details)
        return d


def read_text(path, default=None):
    """Return the stripped content of a small text file, or ``default`` if unreadable."""
    try:
        with open(path, "r") as f:
            return f.read().strip()
    except (IOError, OSError):
        return default


def which(name, extra=("/usr/sbin", "/sbin", "/usr/local/sbin")):
    """Locate an executable on PATH plus the sbin directories a non-login shell may miss."""
    paths = os.environ.get("PATH", "").split(os.pathsep) + list(extra)
    for d in paths:
        p = os.path.join(d, name)
        if d and os.path.isfile(p) and os.access(p, os.X_OK):
            return p
    return None


def run(argv, timeout=60, check=False, input_text=None):
    """Run a command without a shell; return (rc, stdout, stderr) as text."""
    p = subprocess.Popen(argv, stdin=subprocess.PIPE if input_text is not None else subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    try:
        out, err = p.communicate(input_text, timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        raise NetstackError("command timed out after %ss: %s" % (timeout, " ".join(argv)))
    if check and p.returncode != 0:
        raise NetstackError("command failed (rc=%d): %s: %s" % (p.returncode, " ".join(argv), err.strip()))
    return p.returncode, out, err
