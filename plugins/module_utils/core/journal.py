# -*- coding: utf-8 -*-
# Copyright: netstack.tuning contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The transactional journal: every kernel-state change goes through here.

Layout of a state directory (default /var/lib/netstack, mode 0700)::

    journal.jsonl    append-only, one JSON record per line, fsync'd after every record
    journal.lock     flock(2) target serialising writers (modules, watchdogs, the agent)
    journal.damaged  lines set aside by ``repair()`` (raw bytes, never read back)
    watchdog.log     what detached commit-confirm watchdogs did

A transaction is written ahead of the change::

    begin     {id, seq, ts, source, reason, pid, pid_start, items: [{kind, key, netns,
               before, after}], confirm_deadline, on_confirm}
    watchdog  the pid of its commit-confirm watchdog
    applied   every write succeeded and read back as written
    failed    a write failed; the items already written were restored (all-or-nothing)
    confirmed a commit-confirmed transaction was confirmed in time
    rolled_back  the items were restored to ``before`` (by: rollback | watchdog | expire |
              recover), with the keys left alone because something else changed them since
              (``conflicts``)

and two records that belong to no transaction: ``torn`` (a crash cut the previous record;
the cut bytes were set aside) and ``repaired`` (``repair()`` moved damaged lines to
journal.damaged).  Both carry ``high_seq``, the highest sequence number ever seen, so an id
is never given out twice.

Invariants (docs/sysctl.md, "The journal's format"): ``begin`` of a transaction, with every
prior value, is durable before the first write; ids are ``%06d`` of a ``seq`` that only
grows; a transaction moves begun -> applied | failed | rolled_back, applied -> confirmed |
rolled_back, confirmed -> rolled_back, and nothing leaves failed or rolled_back.

Damage.  The reader never raises on content: a line that is not UTF-8, not JSON, not a
record of the shape above, or out of order is reported (line number, what is wrong) and set
aside; the transactions before and after it are kept, and a complete record glued after the
damaged bytes (a cut that removed a newline) is kept too.  Writes that depend on the whole
history (apply, rollback, confirm) refuse a damaged journal with a message naming the file
and the first damaged line, until ``repair()``.  Reverting one expired or interrupted
transaction's own keys does not depend on the rest of the history and always proceeds.

Commit-confirmed: ``apply(..., confirm_timeout=N)`` starts a detached watchdog (double
fork, new session, no inherited descriptors) *before* the first write.  Unless a
``confirmed`` record appears by the deadline it reverts the transaction, even if the
process that applied it, its Ansible connection or the controller are gone.  If the
watchdog itself is gone (SIGKILL, OOM, reboot), ``settle()``, which every writer and the
agent run first, reverts expired transactions.  A revert puts back only the keys that
still hold the value the transaction set; a key changed since by a later transaction or by
hand is left as it is and reported as a conflict, so a later, unrelated change is never
undone silently.  Items in ``on_confirm`` (a sysctl.d drop-in) are written only when the
transaction is confirmed, so a reboot before the deadline cannot make the change permanent.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import fcntl
import json
import math
import os
import re
import signal
import socket
import sys
import time
import traceback

from ansible_collections.netstack.tuning.plugins.module_utils.core.common import NetstackError, check_path
from ansible_collections.netstack.tuning.plugins.module_utils.core import kstate

DEFAULT_STATE_DIR = "/var/lib/netstack"
ACTIVE_STATES = ("begun", "applied", "confirmed")
TXN_RECORDS = ("begin", "watchdog", "applied", "failed", "confirmed", "rolled_back")
META_RECORDS = ("torn", "repaired")
ITEM_KINDS = ("sysctl", "sysfs", "file", "irq", "cpuset", "unit")
# state -> records that may follow it ("watchdog" is informational and may follow any live state)
TRANSITIONS = {
    "begun": ("watchdog", "applied", "failed", "rolled_back"),
    "applied": ("watchdog", "confirmed", "rolled_back"),
    "confirmed": ("rolled_back",),
    "failed": (),
    "rolled_back": (),
}
MAX_SEQ = 10 ** 12 - 1
_ID_RE = re.compile(r"\A[0-9]{6,12}\Z")
_NETNS_RE = re.compile(r"\A[A-Za-z0-9_.@:+-]{1,64}\Z")
_SEQ_HINT_RE = re.compile(r'"(?:seq|high_seq)"\s*:\s*([0-9]{1,12})\b|"id"\s*:\s*"([0-9]{1,12})"')
_SHOW = 120  # characters of a damaged line quoted in a report


def _proc_start(pid):
    """Start time of a process in clock ticks (guards against pid reuse), or None."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            stat = f.read()
        return int(stat[stat.rindex(")") + 2:].split()[19])
    except (IOError, OSError, ValueError, IndexError, OverflowError):
        return None


def _alive(pid, start):
    return bool(pid) and _proc_start(pid) == start


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _is_finite(v):
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)


def _short(value, n=_SHOW):
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= n else text[:n] + "..."


# ------------------------------------------------------------------------- records

def check_item(d, where="item"):
    """Why ``d`` is not a valid journal item, or None."""
    if not isinstance(d, dict):
        return "%s is not an object" % where
    if d.get("kind") not in ITEM_KINDS:
        return "%s has kind %s, not one of %s" % (where, _short(d.get("kind"), 40), ", ".join(ITEM_KINDS))
    if not isinstance(d.get("key"), str) or not d["key"]:
        return "%s has no key string" % where
    netns = d.get("netns")
    if netns is not None and not (isinstance(netns, str) and _NETNS_RE.match(netns) and netns not in (".", "..")):
        return "%s has an invalid netns %s" % (where, _short(netns, 40))
    for f in ("before", "after"):
        if f not in d:
            return "%s has no %s" % (where, f)
        if d[f] is not None and not isinstance(d[f], str):
            return "%s: %s is not a string or null" % (where, f)
    try:
        kstate.Item(d["kind"], d["key"], netns)
    except NetstackError as e:
        return "%s: %s" % (where, e)
    return None


def check_record(rec):
    """Why ``rec`` (parsed JSON) is not a valid journal record, or None.

    This is the format's definition (docs/sysctl.md, "The journal's format").  It is plain
    Python, not a JSON Schema, because the journal must be readable on every host, also
    where python3-jsonschema is not installed, and the reader must never fail.
    """
    if not isinstance(rec, dict):
        return "not a JSON object"
    kind = rec.get("rec")
    if kind not in TXN_RECORDS + META_RECORDS:
        return "unknown record type %s" % _short(kind, 40)
    if "ts" in rec and not _is_finite(rec["ts"]):
        return "ts is not a finite number"
    if kind in META_RECORDS:
        hs = rec.get("high_seq")
        if not _is_int(hs) or not 0 <= hs <= MAX_SEQ:
            return "%s record: high_seq is not an integer in 0..%d" % (kind, MAX_SEQ)
        return None
    txn_id = rec.get("id")
    if not isinstance(txn_id, str) or not _ID_RE.match(txn_id):
        return "%s record: id is not a string of 6 to 12 digits" % kind
    if "confirm_deadline" in rec and rec["confirm_deadline"] is not None \
            and not _is_finite(rec["confirm_deadline"]):
        return "%s record: confirm_deadline is not a finite number" % kind
    for f in ("source", "reason", "by", "host", "error"):
        if f in rec and rec[f] is not None and not isinstance(rec[f], str):
            return "%s record: %s is not a string" % (kind, f)
    for f in ("pid", "pid_start"):
        if f in rec and rec[f] is not None and not _is_int(rec[f]):
            return "%s record: %s is not an integer" % (kind, f)
    if kind == "begin":
        seq = rec.get("seq")
        if not _is_int(seq) or not 1 <= seq <= MAX_SEQ:
            return "begin record: seq is not an integer in 1..%d" % MAX_SEQ
        if txn_id != "%06d" % seq:
            return "begin record: id %s does not match seq %d" % (txn_id, seq)
        items = rec.get("items")
        if not isinstance(items, list) or not items:
            return "begin record: items is not a non-empty list"
        for n, d in enumerate(items):
            err = check_item(d, "items[%d]" % n)
            if err:
                return "begin record: " + err
        deferred = rec.get("on_confirm", [])
        if not isinstance(deferred, list):
            return "begin record: on_confirm is not a list"
        for n, d in enumerate(deferred):
            err = check_item(d, "on_confirm[%d]" % n)
            if err:
                return "begin record: " + err
    return None


class Txn(object):
    """A transaction folded from its journal records."""

    def __init__(self, begin, line=None):
        self.id = begin["id"]
        self.seq = begin["seq"]
        self.begin = begin
        self.line = line
        self.state = "begun"
        self.records = [begin]

    def add(self, rec):
        self.records.append(rec)
        if rec["rec"] != "watchdog":
            self.state = rec["rec"]

    @property
    def items(self):
        return self.begin["items"]

    @property
    def on_confirm(self):
        return self.begin.get("on_confirm") or []

    @property
    def deadline(self):
        for rec in reversed(self.records):
            if rec.get("confirm_deadline"):
                return rec["confirm_deadline"]
        return None

    @property
    def rolled_back_by(self):
        return self.records[-1].get("by") if self.state == "rolled_back" else None

    def expired(self, now=None):
        d = self.deadline
        return bool(d) and self.state in ("begun", "applied") and (now or time.time()) >= d

    def summary(self):
        b = self.begin
        return {
            "id": self.id, "seq": self.seq, "ts": b.get("ts"), "source": b.get("source"),
            "reason": b.get("reason"), "state": self.state, "confirm_deadline": self.deadline,
            "items": [dict(i) for i in self.items],
            "on_confirm": [dict(i) for i in self.on_confirm],
            "events": [{k: v for k, v in r.items() if k not in ("items",)} for r in self.records[1:]],
        }


class View(object):
    """One read of the journal: transactions in order, damaged lines, the id high-water mark."""

    def __init__(self, path):
        self.path = path
        self.txns = []
        self.by_id = {}
        self.damage = []      # [{"line": n, "error": text, "text": first characters}]
        self.torn = None      # {"line": n, "bytes": k} when the file ends in a cut record
        self.high_seq = 0

    def get(self, txn_id):
        t = self.by_id.get(str(txn_id))
        if t is None:
            raise NetstackError("no journal entry %r in %s" % (_short(str(txn_id), 40), self.path),
                                field="journal_id")
        return t

    def damage_message(self):
        first = self.damage[0]
        more = len(self.damage) - 1
        return ("journal %s is damaged: line %d: %s%s. Nothing was changed. See the damaged lines "
                "with netstack_journal action=list, then set them aside with netstack_journal "
                "action=repair (they are kept in journal.damaged)"
                % (self.path, first["line"], first["error"],
                   " (and %d more damaged line%s)" % (more, "s" if more > 1 else "") if more else ""))

    def require_intact(self):
        if self.damage:
            raise NetstackError(self.damage_message(), field="state_dir", journal=self.path,
                                damaged=self.damage[:20])
        return self


def _seq_hints(text):
    best = 0
    for m in _SEQ_HINT_RE.finditer(text):
        best = max(best, int(m.group(1) or m.group(2)))
    return min(best, MAX_SEQ)


def _parse_line(raw):
    """(record, error, salvaged) for one line of bytes."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        text = None
        error = "not UTF-8 (byte 0x%02x at column %d)" % (raw[e.start], e.start + 1)
    else:
        if not text.strip():
            return None, "empty line", None
        try:
            rec = json.loads(text)
        except (ValueError, RecursionError) as e:
            error = "not JSON (%s)" % _short(str(e), 80)
        else:
            error = check_record(rec)
            if error is None:
                return rec, None, None
    # A cut that removed a newline glues a damaged prefix to a complete record: keep the record.
    body = text if text is not None else raw.decode("utf-8", "replace")
    dec = json.JSONDecoder()
    start, tries = body.find('{"', 1), 0
    while start > 0 and tries < 64:
        tries += 1
        try:
            rec, end = dec.raw_decode(body, start)
        except (ValueError, RecursionError):
            rec, end = None, -1
        if end == len(body.rstrip()) and rec is not None and check_record(rec) is None \
                and (text is not None or "\ufffd" not in body[start:end]):
            return None, error + "; a complete record after column %d was kept" % start, rec
        start = body.find('{"', start + 1)
    return None, error, None


def read_view(path):
    """Read and fold the journal at ``path``; never raises on content."""
    view = View(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return view
    except (IOError, OSError) as e:
        raise NetstackError("cannot read journal %s: %s" % (path, e.strerror or e), field="state_dir")
    lines = data.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline
    parsed = []
    for n, raw in enumerate(lines, 1):
        rec, error, salvaged = _parse_line(raw)
        if error:
            view.damage.append({"line": n, "error": error,
                                "text": _short(raw.decode("utf-8", "backslashreplace"))})
            view.high_seq = max(view.high_seq, _seq_hints(raw.decode("utf-8", "replace")))
        for r in (rec, salvaged):
            if r is not None:
                parsed.append((n, r))
    if tail:
        rec, error, _salvaged = _parse_line(tail)
        if error:  # a crash mid-append: the writer died before its record was durable
            view.torn = {"line": len(lines) + 1, "bytes": len(tail)}
            view.high_seq = max(view.high_seq, _seq_hints(tail.decode("utf-8", "replace")))
        else:
            parsed.append((len(lines) + 1, rec))
    for n, rec in parsed:
        kind = rec["rec"]
        # Any number that looks like a sequence number raises the high-water mark, also in a
        # record that is set aside below: an id is never given out twice, whatever was read.
        view.high_seq = max(view.high_seq, _seq_hints(json.dumps(rec)))
        if kind in META_RECORDS:
            view.high_seq = max(view.high_seq, rec["high_seq"])
            continue
        if kind == "begin":
            if rec["id"] in view.by_id:
                view.damage.append({"line": n, "error": "a second begin for transaction %s" % rec["id"],
                                    "text": rec["id"]})
                continue
            if rec["seq"] <= max([t.seq for t in view.txns[-1:]] or [0]):
                view.damage.append({"line": n, "error": "seq %d is not above the previous transaction's"
                                    % rec["seq"], "text": rec["id"]})
                view.high_seq = max(view.high_seq, rec["seq"])
                continue
            t = Txn(rec, n)
            view.txns.append(t)
            view.by_id[t.id] = t
            view.high_seq = max(view.high_seq, t.seq)
            continue
        t = view.by_id.get(rec["id"])
        if t is None:
            view.damage.append({"line": n, "error": "%s record for unknown transaction %s"
                                % (kind, rec["id"]), "text": rec["id"]})
            view.high_seq = max(view.high_seq, int(rec["id"]))
            continue
        if kind not in TRANSITIONS[t.state]:
            view.damage.append({"line": n, "error": "%s record for transaction %s, which is %s"
                                % (kind, t.id, t.state), "text": rec["id"]})
            continue
        t.add(rec)
    view.damage.sort(key=lambda d: d["line"])
    return view


class Journal(object):
    """Append-only journal of kernel-state transactions in ``state_dir``."""

    def __init__(self, state_dir=None):
        self.dir = check_path(state_dir or DEFAULT_STATE_DIR, "state_dir")
        self.path = os.path.join(self.dir, "journal.jsonl")
        self.lock_path = os.path.join(self.dir, "journal.lock")
        self.damaged_path = os.path.join(self.dir, "journal.damaged")
        self._lock_fd = None
        self._depth = 0

    # -- storage -----------------------------------------------------------------
    def ensure(self):
        if not os.path.isdir(self.dir):
            try:
                os.makedirs(self.dir, 0o700)
            except OSError as e:
                raise NetstackError("cannot create %s: %s" % (self.dir, e.strerror or e), field="state_dir")
            kstate.fsync_dir(os.path.dirname(self.dir.rstrip("/")) or "/")

    @contextlib.contextmanager
    def lock(self):
        """Re-entrant exclusive lock (flock) over the journal."""
        if self._depth == 0:
            self.ensure()
            try:
                self._lock_fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            except OSError as e:
                raise NetstackError("cannot open %s: %s" % (self.lock_path, e.strerror or e), field="state_dir")
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        self._depth += 1
        try:
            yield self
        finally:
            self._depth -= 1
            if self._depth == 0:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
                os.close(self._lock_fd)
                self._lock_fd = None

    def _append(self, rec):
        """Append one record durably.  A torn tail (a writer killed mid-append) is cut off
        first and kept, escaped, in a ``torn`` record, so the file stays one record per line."""
        rec.setdefault("ts", time.time())
        line = (json.dumps(rec, sort_keys=True) + "\n").encode()
        new = not os.path.exists(self.path)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                start = size
                while start > 0:
                    chunk = os.pread(fd, min(4096, start), max(0, start - 4096))
                    nl = chunk.rfind(b"\n")
                    if nl >= 0:
                        start = max(0, start - 4096) + nl + 1
                        break
                    start = max(0, start - 4096)
                tail = os.pread(fd, size - start, start)
                if _parse_line(tail)[1] is None:
                    line = b"\n" + line  # a complete record that only lacks its newline
                else:
                    os.ftruncate(fd, start)
                    text = tail.decode("utf-8", "replace")
                    torn = {"rec": "torn", "ts": time.time(), "bytes": len(tail),
                            "high_seq": _seq_hints(text), "text": _short(tail.decode("utf-8", "backslashreplace"), 400)}
                    line = (json.dumps(torn, sort_keys=True) + "\n").encode() + line
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        if new:
            kstate.fsync_dir(self.dir)

    def view(self):
        """The journal as read now (see read_view); damage is reported, not raised."""
        return read_view(self.path)

    def transactions(self):
        """Ordered list of Txn, oldest first (damaged lines left out; see view())."""
        return self.view().txns

    def get(self, txn_id):
        return self.view().get(txn_id)

    # -- transactions --------------------------------------------------------------
    def apply(self, changes, source="engine", reason="", confirm_timeout=0, on_confirm=None):
        """Apply [(Item, value)] all-or-nothing.  Returns the transaction summary.

        Every value must already be validated and normalised (see plan_sysctls).
        ``on_confirm`` [(Item, value)] is written only when the transaction is confirmed
        (needs ``confirm_timeout``).  Raises NetstackError naming the first key that failed
        after restoring the keys written before it, or naming the journal when it is
        damaged (nothing written).
        """
        if not changes:
            raise NetstackError("nothing to apply")
        if on_confirm and not confirm_timeout:
            raise NetstackError("on_confirm needs a confirm timeout", field="confirm_timeout")
        with self.lock():
            settled = self.settle()
            view = self.view().require_intact()
            seq = view.high_seq + 1
            if seq > MAX_SEQ:
                raise NetstackError("journal %s has used every id up to %d: move it aside to start a new one"
                                    % (self.path, MAX_SEQ), field="state_dir")
            txn_id = "%06d" % seq
            items = []
            for item, value in changes:
                d = item.as_dict()
                d["before"] = item.read_raw()
                d["after"] = value
                items.append(d)
            begin = {"rec": "begin", "id": txn_id, "seq": seq, "source": source, "reason": reason,
                     "pid": os.getpid(), "pid_start": _proc_start(os.getpid()),
                     "host": socket.gethostname(), "items": items}
            if on_confirm:
                begin["on_confirm"] = [dict(item.as_dict(), before=None, after=value)
                                       for item, value in on_confirm]
            if confirm_timeout:
                # The window covers the apply itself, so a crash mid-apply is also reverted.
                begin["confirm_deadline"] = time.time() + float(confirm_timeout)
            self._append(begin)
            if confirm_timeout:
                wd = spawn_watchdog(self.dir, txn_id, begin)
                self._append({"rec": "watchdog", "id": txn_id, "pid": wd})
            done = []
            try:
                for (item, value), d in zip(changes, items):
                    if d["before"] == value:
                        continue
                    item.write_raw(value)
                    done.append((item, d))
                    got = item.read_raw()
                    if got != value:
                        raise NetstackError("kernel stored %r after writing %r" % (got, value),
                                            field=item.label())
            except NetstackError as e:
                restored, restore_errors = self._restore([(i, d["before"]) for i, d in reversed(done)])
                pos = next((n + 1 for n, (it, _v) in enumerate(changes)
                            if e.field in (it.key, it.label())), 0)
                if pos:
                    e.msg += " (key %d of %d; the %d key(s) written before it were restored)" % (
                        pos, len(changes), len(restored))
                e.details["failed_key"] = e.field
                self._append({"rec": "failed", "id": txn_id, "error": str(e), "failed_key": e.field,
                              "restored": restored, "restore_errors": restore_errors})
                e.details.update({"journal_id": txn_id, "restored": restored,
                                  "restore_errors": restore_errors})
                raise
            applied = {"rec": "applied", "id": txn_id}
            if confirm_timeout:
                applied["confirm_deadline"] = time.time() + float(confirm_timeout)
            self._append(applied)
            txn = Txn(begin)
            txn.add(applied)
            summary = txn.summary()
            summary["recovered"] = settled["recovered"] + settled["expired"]
            return summary

    def _restore(self, pairs):
        """Write back prior values; keep going past errors and report them."""
        restored, errors = [], []
        for item, before in pairs:
            if item.netns and not os.path.exists(os.path.join(kstate.NETNS_DIR, item.netns)):
                continue  # the namespace is gone, and its state with it: nothing to restore
            try:
                if item.read_raw() != before:
                    item.write_raw(before)
                restored.append(item.label())
            except NetstackError as e:
                errors.append(str(e))
        return restored, errors

    def _revert_own(self, items):
        """Put back the keys of one transaction that still hold the value it set.

        A key that holds something else was changed since (by a later transaction or by
        hand): it is left alone and reported as a conflict.  Returns (restored, conflicts,
        errors)."""
        restored, conflicts, errors = [], [], []
        for d in reversed(items):
            try:
                item = kstate.item_from_dict(d)
                if item.netns and not os.path.exists(os.path.join(kstate.NETNS_DIR, item.netns)):
                    continue
                now = item.read_raw()
                if now == d["after"] and now != d["before"]:
                    item.write_raw(d["before"])
                    restored.append(item.label())
                elif now != d["before"]:
                    conflicts.append({"key": item.label(), "set": _short(d["after"] or "", 200),
                                      "found": _short(now or "", 200), "kept": True})
            except NetstackError as e:
                errors.append(str(e))
        return restored, conflicts, errors

    def _revert_txn(self, t_id, items, by, reason):
        restored, conflicts, errors = self._revert_own(items)
        self._append({"rec": "rolled_back", "id": t_id, "by": by, "reason": reason,
                      "restored": restored, "conflicts": conflicts, "restore_errors": errors})
        return {"id": t_id, "restored": restored, "conflicts": conflicts, "restore_errors": errors}

    def settle(self, check=False):
        """What every netstack run does first: revert transactions whose writer died
        mid-apply (``recover``) and commit-confirmed transactions past their deadline whose
        watchdog did not (``expire``).  Works on a damaged journal (each revert concerns one
        transaction's own keys).  With ``check`` only reports.  No journal, nothing to do."""
        out = {"recovered": [], "expired": [], "conflicts": []}
        if not os.path.exists(self.path):
            return out
        with (contextlib.nullcontext() if check else self.lock()):
            now = time.time()
            for t in self.view().txns:
                b = t.begin
                writer_gone = b.get("pid") != os.getpid() and not _alive(b.get("pid"), b.get("pid_start"))
                if t.state == "begun" and writer_gone:
                    key, why = "recovered", "writer pid %s died mid-transaction" % b.get("pid")
                elif t.expired(now) and (t.state == "applied" or writer_gone):
                    key, why = "expired", "not confirmed before the deadline (%s); its watchdog did not " \
                        "revert it" % time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t.deadline))
                else:
                    continue
                out[key].append(t.id)
                if not check:
                    res = self._revert_txn(t.id, t.items, "recover" if key == "recovered" else "expire", why)
                    out["conflicts"] += [dict(c, id=t.id) for c in res["conflicts"]]
        return out

    def recover(self):
        """Revert interrupted and expired transactions (see settle); returns their ids."""
        res = self.settle()
        return res["recovered"] + res["expired"]

    def confirm(self, txn_id, check=False):
        """Confirm a commit-confirmed transaction.  Refused once its deadline has passed
        (the change was or will be reverted).  Writes its ``on_confirm`` items as a new
        transaction.  Returns False if it was already confirmed, else True (in check mode:
        what would happen)."""
        with (contextlib.nullcontext() if check else self.lock()):
            if not check:
                self.settle()
            view = self.view()
            t = view.get(txn_id)
            if t.state == "confirmed":
                return False
            when = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t.deadline)) if t.deadline else None
            if t.state == "rolled_back" and t.rolled_back_by in ("watchdog", "expire"):
                raise NetstackError("journal entry %s was not confirmed before its deadline (%s, %.0f s ago) "
                                    "and was reverted (by %s); the confirm timeout expired: apply the change "
                                    "again" % (t.id, when, time.time() - t.deadline, t.rolled_back_by),
                                    field="journal_id")
            if t.state != "applied":
                raise NetstackError("journal entry %s is %s and cannot be confirmed" % (t.id, t.state),
                                    field="journal_id")
            if not t.deadline:
                raise NetstackError("journal entry %s was applied without a confirm timeout: nothing to "
                                    "confirm" % t.id, field="journal_id")
            if time.time() >= t.deadline:
                raise NetstackError("journal entry %s: the confirm timeout expired at %s (%.0f s ago); the "
                                    "change will be reverted" % (t.id, when, time.time() - t.deadline),
                                    field="journal_id")
            view.require_intact()
            if check:
                return True
            self._append({"rec": "confirmed", "id": t.id})
            if t.on_confirm:
                pairs = [(kstate.item_from_dict(d), d["after"]) for d in t.on_confirm]
                self.apply(pairs, source="confirm", reason="written on confirm of %s" % t.id)
            return True

    def rollback(self, to, by="rollback", reason=""):
        """Restore the state from before transaction ``to``: undo it and every later
        transaction still in force, newest first.  Returns the ids undone."""
        with self.lock():
            self.settle()
            view = self.view().require_intact()
            target = view.get(to)
            undone = []
            for t in reversed(view.txns):
                if t.seq < target.seq or t.state not in ACTIVE_STATES:
                    continue
                self._undo(t, by, reason)
                undone.append(t.id)
            return undone

    def rollback_all(self, by="rollback", reason=""):
        """The host's state before netstack: undo every transaction still in force."""
        with self.lock():
            self.settle()
            active = [t for t in self.view().require_intact().txns if t.state in ACTIVE_STATES]
            if not active:
                return []
            return self.rollback(active[0].id, by=by, reason=reason)

    def _undo(self, t, by, reason):
        pairs = [(kstate.item_from_dict(d), d["before"]) for d in reversed(t.items)]
        restored, errors = self._restore(pairs)
        self._append({"rec": "rolled_back", "id": t.id, "by": by, "reason": reason,
                      "restored": restored, "restore_errors": errors})
        if errors:
            raise NetstackError("rollback of %s incomplete: %s" % (t.id, "; ".join(errors)),
                                field="journal_id")

    def repair(self, check=False):
        """Set damaged lines aside: append them (raw) to journal.damaged, rewrite the journal
        with the valid records and a ``repaired`` record carrying the id high-water mark.
        Returns {"damaged": [...], "moved_to": path} (empty when there is nothing to do)."""
        with (contextlib.nullcontext() if check else self.lock()):
            view = self.view()
            if not view.damage and not view.torn:
                return {"damaged": [], "moved_to": None}
            out = {"damaged": view.damage + ([dict(view.torn, error="cut record at the end")]
                                             if view.torn else []),
                   "moved_to": self.damaged_path}
            if check:
                return out
            for _round in range(3):  # a kept record may be out of order once others are gone
                self._set_aside(view)
                view = self.view()
                if not view.damage:
                    break
                out["damaged"] += view.damage
            return out

    def _set_aside(self, view):
        with open(self.path, "rb") as f:
            data = f.read()
        lines = data.split(b"\n")
        tail = lines.pop()
        fold_damaged = set(d["line"] for d in view.damage)
        keep, drop = [], []
        for n, raw in enumerate(lines, 1):
            rec, error, salvaged = _parse_line(raw)
            if error is None and n not in fold_damaged:
                keep.append(raw)
                continue
            drop.append(raw)
            if error is not None and salvaged is not None:
                keep.append(json.dumps(salvaged, sort_keys=True).encode())
        if tail:
            (keep if _parse_line(tail)[1] is None else drop).append(tail)
        header = ("# %s: %d line(s) set aside from %s by netstack repair\n"
                  % (time.strftime("%Y-%m-%dT%H:%M:%S"), len(drop), self.path)).encode()
        fd = os.open(self.damaged_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, header + b"".join(r + b"\n" for r in drop))
            os.fsync(fd)
        finally:
            os.close(fd)
        marker = {"rec": "repaired", "ts": time.time(), "high_seq": view.high_seq,
                  "lines": [d["line"] for d in view.damage] + ([view.torn["line"]] if view.torn else []),
                  "moved_to": self.damaged_path}
        body = b"".join(r + b"\n" for r in keep) + (json.dumps(marker, sort_keys=True) + "\n").encode()
        _atomic_write_bytes(self.path, body)
        return len(drop)

    def pending_confirm(self):
        return [t.summary() for t in self.transactions() if t.state == "applied" and t.deadline]

    def original_values(self, idents):
        """For each (kind, netns, key): the ``before`` of the oldest transaction still in
        force that touched it, i.e. its value before netstack changed it."""
        want = set(idents)
        found = {}
        for t in self.transactions():
            if t.state not in ACTIVE_STATES:
                continue
            for d in t.items:
                ident = (d["kind"], d.get("netns") or "", d["key"])
                if ident in want and ident not in found and d["before"] != d["after"]:
                    found[ident] = d["before"]
        return found


def _atomic_write_bytes(path, data, mode=0o600):
    """Replace ``path`` durably: temp file beside it, fsync, rename, fsync the directory."""
    d = os.path.dirname(path)
    tmp = os.path.join(d, ".%s.netstack-tmp" % os.path.basename(path))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)
    kstate.fsync_dir(d)


# ------------------------------------------------------------------------- watchdog

def watchdog_loop(state_dir, txn_id, begin):
    """Body of the detached watchdog: wait for the deadline, then revert unless confirmed.

    It holds the transaction's ``begin`` record in memory, so a journal that becomes
    unreadable or damaged while it waits does not stop the revert: the keys it set are put
    back (where they still hold its values) and what went wrong is logged."""
    j = Journal(state_dir)
    log = os.path.join(state_dir, "watchdog.log")

    def note(msg):
        try:
            with open(log, "a") as f:
                f.write("%s pid=%d txn=%s %s\n" % (time.strftime("%Y-%m-%dT%H:%M:%S"), os.getpid(), txn_id, msg))
        except (IOError, OSError):
            pass

    note("armed")
    deadline = begin.get("confirm_deadline") or 0
    seen, warned = None, False
    while True:
        try:
            st = os.stat(j.path)
            stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        except OSError:
            stamp = None
        if stamp != seen:  # re-read the journal only when it changed
            seen = stamp
            try:
                view = j.view()
                t = view.by_id.get(txn_id)
                if view.damage and not warned:
                    warned = True
                    note("journal damaged (line %d: %s); still watching" % (view.damage[0]["line"],
                                                                            view.damage[0]["error"]))
            except Exception as e:  # noqa: BLE001 - a watchdog keeps watching whatever happens
                t = None
                note("cannot read the journal (%s); still watching" % e)
            if t is not None:
                if t.state in ("confirmed", "failed", "rolled_back"):
                    note("done: transaction %s" % t.state)
                    return
                deadline = t.deadline or deadline
        now = time.time()
        if now >= deadline:
            break
        time.sleep(min(0.25, deadline - now))
    try:
        with j.lock():
            t = None
            try:
                t = j.view().by_id.get(txn_id)
            except NetstackError as e:
                note("cannot read the journal (%s); reverting from memory" % e)
            if t is not None and t.state not in ("begun", "applied"):
                note("done: transaction %s" % t.state)
                return
            res = j._revert_txn(txn_id, begin["items"], "watchdog", "not confirmed before the deadline")
            note("rolled back %s: confirm timeout; restored %s%s%s"
                 % (txn_id, ", ".join(res["restored"]) or "nothing",
                    "; left alone (changed since): %s" % ", ".join(c["key"] for c in res["conflicts"])
                    if res["conflicts"] else "",
                    "; errors: %s" % "; ".join(res["restore_errors"]) if res["restore_errors"] else ""))
    except Exception:  # noqa: BLE001
        note("revert failed:\n%s" % traceback.format_exc())
        raise


def wait_for_watchdogs(state_dir, timeout=30.0):
    """Wait until every commit-confirm watchdog of ``state_dir`` has logged that it is done
    (each logs "armed" when it starts and "done: ..." once it has seen its transaction
    settle).  True when they all have, False at the timeout.  Whoever removes a state
    directory must wait for this first: a watchdog whose journal vanished before it looked
    waits out its deadline and then reverts from memory into a re-created directory."""
    log = os.path.join(state_dir, "watchdog.log")
    deadline = time.time() + timeout
    while True:
        try:
            with open(log) as f:
                text = f.read()
        except (IOError, OSError):
            text = ""
        if text.count(" done: ") >= text.count(" armed"):
            return True
        if time.time() >= deadline:
            return False
        time.sleep(0.1)


def spawn_watchdog(state_dir, txn_id, begin):
    """Double-fork a watchdog in its own session; return its pid.

    The grandchild holds no descriptor of the caller (so Ansible sees the module's
    output end), ignores SIGHUP, and runs code already imported in memory, so it keeps
    working after AnsiballZ removes its temporary files.  An exception that escapes it is
    written to watchdog.log, never swallowed.
    """
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            os.setsid()
            pid2 = os.fork()
            if pid2 != 0:
                os.write(w, str(pid2).encode())
                os._exit(0)
            os.close(w)
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
            os.chdir("/")
            devnull = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(devnull, fd)
            os.closerange(3, 65536)
            try:
                sys.stdout = sys.stderr = open(os.devnull, "w")
            except Exception:
                pass
            code = 0
            try:
                watchdog_loop(state_dir, txn_id, begin)
            except BaseException:
                code = 1
                try:
                    with open(os.path.join(state_dir, "watchdog.log"), "a") as f:
                        f.write("%s pid=%d txn=%s watchdog died:\n%s" % (
                            time.strftime("%Y-%m-%dT%H:%M:%S"), os.getpid(), txn_id, traceback.format_exc()))
                except Exception:
                    pass
            os._exit(code)
        except BaseException:
            os._exit(1)
    os.close(w)
    data = b""
    while True:
        b = os.read(r, 64)
        if not b:
            break
        data += b
    os.close(r)
    os.waitpid(pid, 0)
    return int(data or 0)
