# -*- coding: utf-8 -*-
# Copyright: netstack.tuning contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Sysctl sets: validation and planning, sysctl.d drop-ins, other managers of a key, and
``set_sysctls()``, the whole of what the sysctl_set module does.

``plan()`` turns a user's {name: value} into per-key before/after pairs without writing
anything; every error (unknown key, path tricks, wrong type, read-only key) is raised
before the first write.  ``Journal.apply`` then writes the changed keys all-or-nothing.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import glob
import os
import re

from ansible_collections.netstack.tuning.plugins.module_utils.core.common import NetstackError, check_path, check_txn_id, read_text
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


# ------------------------------------------------------------------------- sysctl_set

MAX_CONFIRM_TIMEOUT = 7 * 24 * 3600   # a week


def check_set_options(opts):
    """What sysctl_set's argument_spec cannot say about its options (their presence and
    combinations it declares), checked before the journal is read: the confirm window's
    range, the journal id's form, the drop-in directory, and a drop-in in a namespace."""
    check_path(opts["persist_dir"], "persist_dir")
    if not 0 <= opts["confirm_timeout"] <= MAX_CONFIRM_TIMEOUT:
        raise NetstackError("must be between 0 and %d seconds, got %d" % (MAX_CONFIRM_TIMEOUT, opts["confirm_timeout"]),
                            field="confirm_timeout")
    check_txn_id(opts.get("journal_id"))
    if opts["persist"] == "file" and opts.get("netns"):
        raise NetstackError("persist=file cannot be combined with netns: a drop-in applies to "
                            "the host namespace at boot", field="persist")


def _diff(changes, path=None, file_before=None, file_after=None):
    before = "".join("%s = %s\n" % (c.item.key, c.before) for c in changes)
    after = "".join("%s = %s\n" % (c.item.key, c.after) for c in changes)
    diffs = [{"before_header": "sysctl (running kernel)", "after_header": "sysctl (running kernel)",
              "before": before, "after": after}]
    if path and file_before != file_after:
        diffs.append({"before_header": path, "after_header": path,
                      "before": file_before or "", "after": file_after or ""})
    return diffs


def _conflicts(opts, changes, path):
    """Other managers of the keys to set, and the warnings about them; NetstackError with
    conflicts=fail.  Files and tuned apply to the host namespace, not to a named one."""
    if opts["conflicts"] == "ignore" or opts.get("netns"):
        return [], []
    found = detect_conflicts([c.item.key for c in changes], own_files=[path] if path else [])
    msgs = ["%s is also set by %s (%s%s)" % (c["key"], c["manager"], c["where"], ", value %s" % c["value"] if c["value"] else "")
            for c in found]
    if found and opts["conflicts"] == "fail":
        raise NetstackError("other managers set these keys: " + "; ".join(msgs), field="conflicts", conflicts=found)
    return found, msgs


def set_sysctls(journal, opts, check_mode=False, diff=False):
    """sysctl_set's work (see its documentation): ``opts`` are its options. Sets
    (state=present) or restores (state=rolled_back) the keys, and the drop-in with
    persist=file, as one journaled transaction; a commit-confirmed change defers its
    drop-in to the confirm.  Interrupted or expired transactions are settled first.
    Returns (result, warnings); in check mode nothing is written."""
    check_set_options(opts)
    netns = opts.get("netns")
    # Interrupted or expired transactions are reverted before anything is planned on top of them.
    settled = journal.settle(check=check_mode)
    recovered = settled["recovered"] + settled["expired"]
    path = None
    if opts["persist"] == "file" or (opts["state"] == "rolled_back" and opts.get("persist_file")):
        path = dropin_path(opts.get("persist_file"), opts["persist_dir"])
        if not os.path.isdir(opts["persist_dir"]):
            raise NetstackError("directory %s does not exist" % opts["persist_dir"], field="persist_dir")

    file_item = kstate.Item("file", path) if path else None
    file_before = file_item.read_raw() if file_item else None
    file_after = file_before
    warnings = []
    if opts["state"] == "present":
        changes = plan(opts.get("sysctls"), netns)
        if file_item:
            file_after = render_dropin(changes)
        conflicts, warnings = _conflicts(opts, changes, path)
    else:
        names = list(opts.get("names") or []) + list((opts.get("sysctls") or {}).keys())
        if not names:
            raise NetstackError("state=rolled_back needs names or sysctls", field="names")
        changes = plan_restore(names, journal, netns, opts.get("journal_id"))
        conflicts = []
        if file_item:
            orig = journal.original_values([file_item.ident()])
            if file_item.ident() in orig:
                file_after = orig[file_item.ident()]

    changed_items = [c for c in changes if c.changed]
    file_changed = file_item is not None and file_before != file_after
    result = {
        "changed": bool(changed_items) or file_changed,
        "changes": [c.as_dict() for c in changed_items],
        "unchanged": [c.item.key for c in changes if not c.changed],
        "journal_id": None,
        "confirm_deadline": None,
        "conflicts": conflicts,
        "recovered": recovered,
    }
    if path:
        result["persist_path"] = path
    if diff:
        result["diff"] = _diff(changed_items, path, file_before, file_after)
    if not result["changed"] or check_mode:
        return result, warnings

    writes = [(c.item, c.after) for c in changed_items]
    deferred = []
    if file_changed:
        if opts["confirm_timeout"] and writes:
            deferred.append((file_item, file_after))  # written by the confirm (see persist)
            result["persist_on_confirm"] = True
        else:
            writes.append((file_item, file_after))
    reason = opts.get("reason") or ("sysctl_set state=%s" % opts["state"])
    summary = journal.apply(writes, source="sysctl_set", reason=reason,
                            confirm_timeout=opts["confirm_timeout"], on_confirm=deferred)
    result["journal_id"] = summary["id"]
    result["confirm_deadline"] = summary["confirm_deadline"]
    result["recovered"] = recovered + summary["recovered"]
    return result, warnings
