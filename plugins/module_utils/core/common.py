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

import math
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


def collection_file(*parts):
    """A path inside the collection (``bpf/``, ``roles/``): this file is
    plugins/module_utils/core/common.py, four levels below the collection's root, in a checkout,
    an installed collection and the agent's engine tree alike."""
    root = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
    return os.path.join(root, *parts)


def schema_error(schema, instance):
    """The first JSON Schema (draft 2020-12) error of ``instance`` in path order, or None.
    jsonschema is a requirement on the controller and on hosts (Debian: python3-jsonschema,
    installed by the bcc_runtime and netstack_agent roles); its absence is a clear error."""
    try:
        import jsonschema
    except ImportError:
        raise NetstackError("the jsonschema Python package is required on this host (Debian: python3-jsonschema)",
                            field="jsonschema")
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(instance), key=lambda e: list(e.absolute_path))
    return errors[0] if errors else None


def schema_field(err, prefix=""):
    """The field a jsonschema error is about, written ``prefix.a[3].b`` (``prefix`` alone for
    the instance itself)."""
    out = prefix
    for p in err.absolute_path:
        out += "[%d]" % p if isinstance(p, int) else ("." if out else "") + str(p)
    return out


def first_non_finite(value, path=""):
    """(path, value) of the first NaN or infinity in ``value`` (dicts and lists walked), or
    None.  Checked before a schema: jsonschema takes NaN as a number, and NaN passes every
    bound."""
    if isinstance(value, float):
        return None if math.isfinite(value) else (path, value)
    if isinstance(value, dict):
        items = (("%s.%s" % (path, k) if path else str(k), v) for k, v in value.items())
    elif isinstance(value, (list, tuple)):
        items = (("%s[%d]" % (path, i), v) for i, v in enumerate(value))
    else:
        return None
    for p, v in items:
        found = first_non_finite(v, p)
        if found:
            return found
    return None


def check_schema(schema, instance, field):
    """NetstackError naming the field (under ``field``) of ``instance``'s first NaN or
    infinity, else of its first JSON Schema error; nothing when it conforms."""
    bad = first_non_finite(instance, field)
    if bad:
        raise NetstackError("must be a finite number, got %r" % (bad[1],), field=bad[0])
    err = schema_error(schema, instance)
    if err:
        raise NetstackError(err.message, field=schema_field(err, field))


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


# --------------------------------------------------------------------------- strict input

_ASCII_INT_MAX_DIGITS = 20  # 2**64 has 20 digits; no kernel or netstack number is longer


def strict_int(value, field, minimum=None, maximum=None):
    """An integer from user input, parsed strictly; NetstackError naming ``field`` otherwise.

    Accepts an int (not a bool) or a string of ASCII digits with an optional sign, at most
    20 digits (Python's ``int()`` would take Arabic-Indic digits, underscores and
    4,300-digit strings).  Floats are refused even when whole: ``1.0e30`` is not planned as
    a 31-digit integer.
    """
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise NetstackError("must be an integer, got %s" % type(value).__name__, field=field)
    if isinstance(value, str):
        text = value.strip(" \t")
        digits = text[1:] if text[:1] in ("+", "-") else text
        if not digits or not digits.isascii() or not digits.isdigit():
            raise NetstackError("must be an integer written in ASCII digits, got %r" % value[:40],
                                field=field)
        if len(digits) > _ASCII_INT_MAX_DIGITS:
            raise NetstackError("integer too long (%d digits, at most %d)"
                                % (len(digits), _ASCII_INT_MAX_DIGITS), field=field)
        value = int(text)
    elif abs(value) >= 10 ** _ASCII_INT_MAX_DIGITS:
        raise NetstackError("integer too large (at most %d digits)" % _ASCII_INT_MAX_DIGITS,
                            field=field)
    if minimum is not None and value < minimum:
        raise NetstackError("must be >= %d, got %d" % (minimum, value), field=field)
    if maximum is not None and value > maximum:
        raise NetstackError("must be <= %d, got %d" % (maximum, value), field=field)
    return value


def strict_number(value, field, minimum=None, maximum=None):
    """A finite int or float (not a bool, not inf/NaN) within bounds; NetstackError naming
    ``field`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise NetstackError("must be a number, got %s" % type(value).__name__, field=field)
    if isinstance(value, float) and not math.isfinite(value):
        raise NetstackError("must be a finite number, got %r" % value, field=field)
    if minimum is not None and value < minimum:
        raise NetstackError("must be >= %s, got %s" % (minimum, value), field=field)
    if maximum is not None and value > maximum:
        raise NetstackError("must be <= %s, got %s" % (maximum, value), field=field)
    return value


def check_txn_id(value, field="journal_id"):
    """A journal id from user input (None: not given): a string of up to 12 ASCII digits,
    refused before any journal is read (``../000001``, ``latest``)."""
    if value is not None and not (isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 12):
        raise NetstackError("a journal id is a string of up to 12 ASCII digits, got %r" % (str(value)[:40],),
                            field=field)
    return value


PATH_MAX = 4095


def check_path(value, field, absolute=True):
    """A file system path from user input: a string without NUL bytes or control characters,
    at most PATH_MAX bytes, absolute when ``absolute``.  Returns it unchanged."""
    if not isinstance(value, str) or not value:
        raise NetstackError("must be a non-empty path", field=field)
    if "\x00" in value:
        raise NetstackError("path contains a NUL byte", field=field)
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise NetstackError("path contains a control character", field=field)
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise NetstackError("path is not valid UTF-8 (lone surrogate)", field=field)
    if size > PATH_MAX:
        raise NetstackError("path longer than %d bytes" % PATH_MAX, field=field)
    if absolute and not value.startswith("/"):
        raise NetstackError("must be an absolute path", field=field)
    return value


def check_path_options(params, names, absolute=True):
    """check_path() on each option of ``names`` that is set in ``params`` (a module's
    params); a list option's elements are checked one by one, as ``name[i]``.  Modules call
    it first thing, so a NUL byte or a control character in a path is a NetstackError
    naming the option instead of a ValueError from the first os.stat()."""
    for name in names:
        value = params.get(name)
        if value is None:
            continue
        if isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                check_path(v, "%s[%d]" % (name, i), absolute)
        else:
            check_path(value, name, absolute)
