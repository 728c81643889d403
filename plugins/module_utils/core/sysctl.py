# -*- coding: utf-8 -*-
# Copyright: netstack.tuning contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Sysctl sets: validation and planning, sysctl.d drop-ins, and other managers of a key.

``plan()`` turns a user's {name: value} into per-key before/after pairs without writing
anything; every error (unknown key, path tricks, wrong type, read-only key) is raised
before the first write.  ``Journal.apply`` then writes the changed keys all-or-nothing.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import glob
import os
import re

from ansible_collections.netstack.tuning.plugins.module_utils.core.common import NetstackError, read_text
from ansible_collections.netstack.tuning.plugins.module_utils.core import kstate

SYSCTL_D_DIRS = ("/etc/sysctl.d", "/run/sysctl.d", "/usr/local/lib/sysctl.d", "/usr/lib/sysctl.d",
                 "/lib/sysctl.d")
SYSCTL_CONF = "/etc/sysctl.conf"
DROPIN_RE = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_.-]*\.conf\Z")


class Change(object):
    __slots__ = ("item", "before", "after")

    def __init__(self, item, before, after):
        self.item, self.before, self.after = item, before, after

    @property
    def changed(self):
        return self.before != self.after

    def as_dict(self):
        d = {"key": self.item.key, "before": self.before, "after": self.after}
        if self.item.netns:
            d["netns"] = self.item.netns
        return d


def plan(sysctls, netns=None):
    """Validate ``sysctls`` ({name: value}) and return [Change] in the given order.

    Raises NetstackError naming the offending key: bad name, unknown key (checked inside
    ``netns`` when given), unreadable key, read-only key, wrong value type.  Nothing is
    written.
    """
    if not isinstance(sysctls, dict) or not sysctls:
        raise NetstackError("must be a non-empty dict of sysctl name -> value", field="sysctls")
    if netns:
        kstate.netns_file(netns)
    seen = {}
    changes = []
    for name, value in sysctls.items():
        if not isinstance(name, str) or not name:
            raise NetstackError("sysctl names are non-empty strings, got %r" % (name,), field="sysctls")
        item = kstate.Item("sysctl", name, netns)
        if item.key in seen:
            raise NetstackError("given twice (also as %r)" % seen[item.key], field=name)
        seen[item.key] = name
        try:
            after = kstate.normalize(value, item.key)
        except NetstackError as e:
            raise NetstackError(e.msg, field=item.key)
        if after == "":
            raise NetstackError("empty value", field=item.key)
        before = item.read()
        kstate.check_type(item.key, before, after)
        if before != after:
            with kstate.in_netns(netns):
                writable = os.access(item.path, os.W_OK)
            if not writable:
                raise NetstackError("read-only key (cannot be written%s)"
                                    % (" in a network namespace" if netns else ""), field=item.key)
        changes.append(Change(item, before, after))
    return changes


def check(sysctls, field="sysctls"):
    """Validate ``sysctls`` ({name: value}) without writing anything and without a
    namespace: each name (no path tricks, no key twice), each value (kstate.normalize) and
    its shape against the key's current value in the caller's namespace (read-only, the
    check_type plan() does), so a set meant for a lab namespace is refused before the lab
    is built.  A key that is not there is refused.  Returns {canonical key: normalised
    value}; NetstackError naming the key (or ``field`` when the set is not a mapping or a
    name is not a string)."""
    if not isinstance(sysctls, dict):
        raise NetstackError("must be a mapping of sysctl name -> value", field=field)
    out, seen = {}, {}
    for name, value in sysctls.items():
        if not isinstance(name, str) or not name:
            raise NetstackError("sysctl names are non-empty strings, got %r" % (name,), field=field)
        key = kstate.canonical_sysctl(name)
        if key in seen:
            raise NetstackError("given twice (also as %r)" % seen[key], field=name)
        seen[key] = name
        try:
            after = kstate.normalize(value, key)
        except NetstackError as e:
            raise NetstackError(e.msg, field=key)
        if after == "":
            raise NetstackError("empty value", field=key)
        kstate.check_type(key, kstate.Item("sysctl", key).read(), after)
        out[key] = after
    return out


def plan_restore(names, journal, netns=None, before_id=None):
    """Changes that put ``names`` back to their values from before netstack changed them
    (or from before journal entry ``before_id``).  Keys netstack never changed are left
    as they are."""
    items = [kstate.Item("sysctl", n, netns) for n in names]
    idents = [i.ident() for i in items]
    if before_id is not None:
        target = journal.get(before_id)
        originals = {}
        for t in journal.transactions():
            if t.seq < target.seq or t.state not in ("begun", "applied", "confirmed"):
                continue
            for d in t.items:
                ident = (d["kind"], d.get("netns") or "", d["key"])
                if ident in idents and ident not in originals:
                    originals[ident] = d["before"]
    else:
        originals = journal.original_values(idents)
    changes = []
    for item in items:
        before = item.read()
        if item.ident() in originals:
            changes.append(Change(item, before, originals[item.ident()]))
    return changes


# ------------------------------------------------------------------------- drop-ins

def dropin_path(name, directory="/etc/sysctl.d"):
    if not isinstance(name, str) or not DROPIN_RE.match(name):
        raise NetstackError("must be a plain file name ending in .conf (e.g. 60-netstack.conf)",
                            field="persist_file")
    return os.path.join(directory, name)


def render_dropin(changes, source="netstack.tuning.sysctl_set"):
    lines = ["# Managed by %s; changes here are overwritten." % source,
             "# Every change to this file is journaled under /var/lib/netstack."]
    for c in changes:
        lines.append("%s = %s" % (c.item.key, c.after))
    return "\n".join(lines) + "\n"


def parse_sysctl_conf(text):
    """{key: value} from sysctl.conf syntax (comments, '-' prefix, dotted or slashed)."""
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;" or "=" not in line:
            continue
        k, v = line.split("=", 1)
        k = k.strip().lstrip("-").strip()
        try:
            k = kstate.canonical_sysctl(k)
        except NetstackError:
            continue  # globs and the like: not our concern here
        out[k] = " ".join(v.split())
    return out


# ------------------------------------------------------------------------- conflicts

def _processes():
    """{comm: [pid]} for running processes, from /proc."""
    procs = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        comm = read_text("/proc/%s/comm" % d)
        if comm:
            procs.setdefault(comm, []).append(int(d))
    return procs


def tuned_profile_sysctls(profile, roots=("/etc/tuned", "/usr/lib/tuned")):
    """Sysctls a tuned profile sets (following include=), best effort."""
    out, seen = {}, set()

    def load(name):
        if name in seen:
            return
        seen.add(name)
        for root in roots:
            conf = os.path.join(root, name, "tuned.conf")
            text = read_text(conf)
            if text is None:
                continue
            section = None
            for line in text.splitlines():
                s = line.strip()
                if s.startswith("[") and s.endswith("]"):
                    section = s[1:-1]
                elif section == "main" and s.startswith("include"):
                    for inc in s.split("=", 1)[1].split(","):
                        load(inc.strip())
                elif section == "sysctl" and "=" in s and not s.startswith("#"):
                    k, v = s.split("=", 1)
                    try:
                        out[kstate.canonical_sysctl(k.strip())] = v.strip()
                    except NetstackError:
                        pass
            return
    for p in profile.split():
        load(p)
    return out


def detect_conflicts(keys, own_files=(), dirs=SYSCTL_D_DIRS, conf=SYSCTL_CONF, procs=None,
                     tuned_active="/etc/tuned/active_profile"):
    """Other managers of ``keys``: sysctl.d/sysctl.conf files setting them (other than
    ``own_files``), an active tuned profile setting them, a running bpftune.

    Returns a list of {key, manager, where, value}.
    """
    keys = set(keys)
    found = []
    own = set(os.path.realpath(f) for f in own_files)
    files = []
    for d in dirs:
        files.extend(sorted(glob.glob(os.path.join(d, "*.conf"))))
    files.append(conf)
    for f in files:
        if os.path.realpath(f) in own:
            continue
        text = read_text(f)
        if not text:
            continue
        for k, v in parse_sysctl_conf(text).items():
            if k in keys:
                found.append({"key": k, "manager": "sysctl.d", "where": f, "value": v})
    procs = _processes() if procs is None else procs
    if "tuned" in procs:
        profile = read_text(tuned_active) or ""
        for k, v in tuned_profile_sysctls(profile).items():
            if k in keys:
                found.append({"key": k, "manager": "tuned", "where": "profile %s" % profile, "value": v})
    if "bpftune" in procs:
        # bpftune retunes net.* buffers, congestion and neighbour tables at run time.
        for k in sorted(keys):
            if k.startswith(("net.ipv4.tcp_", "net.core.", "net.ipv4.neigh", "net.ipv6.neigh")):
                found.append({"key": k, "manager": "bpftune", "where": "pid %s" % procs["bpftune"][0],
                              "value": None})
    return found
