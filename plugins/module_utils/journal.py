# -*- coding: utf-8 -*-
# Copyright: netstack.tuning contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The transactional journal: every kernel-state change goes through here.

Layout of a state directory (default /var/lib/netstack, mode 0700)::

    journal.jsonl   append-only, one JSON record per line, fsync'd after every record
    journal.lock    flock(2) target serialising writers (modules, watchdogs, the agent)
    watchdog.log    what detached commit-confirm watchdogs did

A transaction is written ahead of the change::

    begin     {id, seq, ts, source, reason, pid, pid_start, items: [{kind, key, netns,
               before, after}], confirm_deadline}
    applied   every write succeeded and read back as written
    failed    a write failed; the items already written were restored (all-or-nothing)
    confirmed a commit-confirmed transaction was confirmed in time
    rolled_back  the items were restored to ``before`` (by: rollback | watchdog | recover)

Because ``begin`` (with every prior value) is durable before the first write, a crash
at any point leaves enough to restore: ``recover()`` finds transactions whose writer died
between ``begin`` and ``applied``/``failed`` and restores them.  ``rollback(to)`` undoes
the given transaction and every later one still in force, newest first, so the host
returns to exactly the state before ``to``.

Commit-confirmed: ``apply(..., confirm_timeout=N)`` starts a detached watchdog (double
fork, new session, no inherited descriptors) *before* the first write.  Unless a
``confirmed`` record appears by the deadline it rolls the transaction back, even if the
process that applied it, its Ansible connection or the controller are gone.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import fcntl
import json
import os
import signal
import socket
import sys
import time

from ansible_collections.netstack.tuning.plugins.module_utils.common import NetstackError
from ansible_collections.netstack.tuning.plugins.module_utils import kstate

DEFAULT_STATE_DIR = "/var/lib/netstack"
ACTIVE_STATES = ("begun", "applied", "confirmed")


def _proc_start(pid):
    """Start time of a process in clock ticks (guards against pid reuse), or None."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            stat = f.read()
        return int(stat[stat.rindex(")") + 2:].split()[19])
    except (IOError, OSError, ValueError, IndexError):
        return None


def _alive(pid, start):
    return pid and _proc_start(pid) == start


class Txn(object):
    """A transaction folded from its journal records."""

    def __init__(self, begin):
        self.id = begin["id"]
        self.seq = begin["seq"]
        self.begin = begin
        self.state = "begun"
        self.records = [begin]

    def add(self, rec):
        self.records.append(rec)
        r = rec["rec"]
        if r in ("applied", "failed", "confirmed", "rolled_back"):
            self.state = r

    @property
    def items(self):
        return self.begin["items"]

    @property
    def deadline(self):
        for rec in reversed(self.records):
            if rec.get("confirm_deadline"):
                return rec["confirm_deadline"]
        return None

    def summary(self):
        b = self.begin
        return {
            "id": self.id, "seq": self.seq, "ts": b["ts"], "source": b.get("source"),
            "reason": b.get("reason"), "state": self.state, "confirm_deadline": self.deadline,
            "items": [dict(i) for i in self.items],
            "events": [{k: v for k, v in r.items() if k not in ("items",)} for r in self.records[1:]],
        }


class Journal(object):
    """Append-only journal of kernel-state transactions in ``state_dir``."""

    def __init__(self, state_dir=None):
        self.dir = state_dir or DEFAULT_STATE_DIR
        self.path = os.path.join(self.dir, "journal.jsonl")
        self.lock_path = os.path.join(self.dir, "journal.lock")
        self._lock_fd = None
        self._depth = 0

    # -- storage -----------------------------------------------------------------
    def ensure(self):
        if not os.path.isdir(self.dir):
            os.makedirs(self.dir, 0o700)
            kstate.fsync_dir(os.path.dirname(self.dir.rstrip("/")) or "/")

    @contextlib.contextmanager
    def lock(self):
        """Re-entrant exclusive lock (flock) over the journal."""
        if self._depth == 0:
            self.ensure()
            self._lock_fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
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
        rec.setdefault("ts", time.time())
        line = (json.dumps(rec, sort_keys=True) + "\n").encode()
        new = not os.path.exists(self.path)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = b"\n" + line  # a crash tore the last record: start on a fresh line
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        if new:
            kstate.fsync_dir(self.dir)

    def records(self):
        """All well-formed records; a torn last line (crash mid-write) is ignored."""
        out = []
        try:
            with open(self.path, "r") as f:
                for line in f:
                    try:
                        rec = json.loads(line)
                    except ValueError:
                        continue
                    if isinstance(rec, dict) and "rec" in rec and "id" in rec:
                        out.append(rec)
        except (IOError, OSError):
            pass
        return out

    def transactions(self):
        """Ordered list of Txn, oldest first."""
        txns, order = {}, []
        for rec in self.records():
            if rec["rec"] == "begin":
                txns[rec["id"]] = Txn(rec)
                order.append(rec["id"])
            elif rec["id"] in txns:
                txns[rec["id"]].add(rec)
        return [txns[i] for i in order]

    def get(self, txn_id):
        for t in self.transactions():
            if t.id == str(txn_id):
                return t
        raise NetstackError("no journal entry %r in %s" % (txn_id, self.path), field="journal_id")

    # -- transactions --------------------------------------------------------------
    def _new_id(self, txns):
        seq = (txns[-1].seq + 1) if txns else 1
        return seq, "%06d" % seq

    def apply(self, changes, source="engine", reason="", confirm_timeout=0):
        """Apply [(Item, value)] all-or-nothing.  Returns the transaction summary.

        Every value must already be validated and normalised (see plan_sysctls).
        Raises NetstackError naming the first key that failed after restoring the
        keys written before it.
        """
        if not changes:
            raise NetstackError("nothing to apply")
        with self.lock():
            recovered = self.recover()
            txns = self.transactions()
            seq, txn_id = self._new_id(txns)
            items = []
            for item, value in changes:
                d = item.as_dict()
                d["before"] = item.read_raw()
                d["after"] = value
                items.append(d)
            begin = {"rec": "begin", "id": txn_id, "seq": seq, "source": source, "reason": reason,
                     "pid": os.getpid(), "pid_start": _proc_start(os.getpid()),
                     "host": socket.gethostname(), "items": items}
            if confirm_timeout:
                # The window covers the apply itself, so a crash mid-apply is also reverted.
                begin["confirm_deadline"] = time.time() + float(confirm_timeout)
            self._append(begin)
            if confirm_timeout:
                wd = spawn_watchdog(self.dir, txn_id)
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
            summary["recovered"] = recovered
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

    def confirm(self, txn_id):
        """Confirm a commit-confirmed transaction; fails if it was already rolled back."""
        with self.lock():
            t = self.get(txn_id)
            if t.state == "confirmed":
                return False
            if t.state != "applied":
                raise NetstackError("journal entry %s is %s and cannot be confirmed%s"
                                    % (t.id, t.state, " (the confirm timeout expired)"
                                       if t.state == "rolled_back" else ""), field="journal_id")
            self._append({"rec": "confirmed", "id": t.id})
            return True

    def rollback(self, to, by="rollback", reason=""):
        """Restore the state from before transaction ``to``: undo it and every later
        transaction still in force, newest first.  Returns the ids undone."""
        with self.lock():
            txns = self.transactions()
            target = None
            for t in txns:
                if t.id == str(to):
                    target = t
            if target is None:
                raise NetstackError("no journal entry %r" % to, field="journal_id")
            undone = []
            for t in reversed(txns):
                if t.seq < target.seq or t.state not in ACTIVE_STATES:
                    continue
                self._undo(t, by, reason)
                undone.append(t.id)
            return undone

    def rollback_all(self, by="rollback", reason=""):
        """The host's state before netstack: undo every transaction still in force."""
        with self.lock():
            active = [t for t in self.transactions() if t.state in ACTIVE_STATES]
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

    def recover(self):
        """Restore transactions whose writer died between ``begin`` and its outcome."""
        with self.lock():
            fixed = []
            for t in self.transactions():
                b = t.begin
                if t.state == "begun" and not (b.get("pid") == os.getpid()) \
                        and not _alive(b.get("pid"), b.get("pid_start")):
                    self._undo(t, "recover", "writer pid %s died mid-transaction" % b.get("pid"))
                    fixed.append(t.id)
            return fixed

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


# ------------------------------------------------------------------------- watchdog

def watchdog_loop(state_dir, txn_id):
    """Body of the detached watchdog: wait for the deadline, then roll back unless confirmed."""
    j = Journal(state_dir)
    log = os.path.join(state_dir, "watchdog.log")

    def note(msg):
        with open(log, "a") as f:
            f.write("%s pid=%d txn=%s %s\n" % (time.strftime("%Y-%m-%dT%H:%M:%S"), os.getpid(), txn_id, msg))

    note("armed")
    seen, t = None, None
    while True:
        try:
            st = os.stat(j.path)
            stamp = (st.st_size, st.st_mtime_ns)
        except OSError:
            stamp = None
        if stamp != seen:  # re-read the journal only when it changed
            seen, t = stamp, j.get(txn_id)
        if t.state in ("confirmed", "failed", "rolled_back"):
            note("done: transaction %s" % t.state)
            return
        deadline = t.deadline or 0
        now = time.time()
        if now >= deadline:
            break
        time.sleep(min(0.25, deadline - now))
    with j.lock():
        t = j.get(txn_id)
        if t.state in ("begun", "applied") and time.time() >= (t.deadline or 0):
            undone = j.rollback(txn_id, by="watchdog", reason="not confirmed before the deadline")
            note("rolled back %s: confirm timeout" % ",".join(undone))
        else:
            note("done: transaction %s" % t.state)


def spawn_watchdog(state_dir, txn_id):
    """Double-fork a watchdog in its own session; return its pid.

    The grandchild holds no descriptor of the caller (so Ansible sees the module's
    output end), ignores SIGHUP, and runs code already imported in memory, so it keeps
    working after AnsiballZ removes its temporary files.
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
                watchdog_loop(state_dir, txn_id)
            except BaseException:
                code = 1
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
