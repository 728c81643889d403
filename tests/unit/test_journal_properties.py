"""Property-based tests of the journal reader fed damaged files (issue 19).

A journal of real transactions (file items in a temporary directory, so no kernel state is
involved) is damaged by generated edits: bytes flipped, inserted or deleted, lines cut,
glued, duplicated or dropped, junk and valid-JSON-but-wrong records appended.  Oracle:
reading never raises; every damaged line is reported with its number and a reason; ids of
the transactions read are unique; ``repair`` never raises and leaves a journal with no
damage; the next transaction gets an id above every sequence number in the damaged file;
and ``settle`` (what every run does first) never raises.
"""
import json
import os
import re
import shutil
import tempfile

import pytest

from hypothesis import HealthCheck, given, settings, strategies as st

from ansible_collections.netstack.tuning.plugins.module_utils.core import kstate
from ansible_collections.netstack.tuning.plugins.module_utils.core.common import NetstackError
from ansible_collections.netstack.tuning.plugins.module_utils.core.journal import Journal, check_record, read_view

# The same cases every run (derandomized), so CI never meets a new case by chance;
# NETSTACK_PROPS_RANDOM=1 draws new ones and NETSTACK_PROPS_SCALE multiplies the count.
SETTINGS = settings(max_examples=int(150 * float(os.environ.get("NETSTACK_PROPS_SCALE", "1"))), deadline=None,
                    database=None, derandomize=not os.environ.get("NETSTACK_PROPS_RANDOM"),
                    suppress_health_check=[HealthCheck.too_slow])
SEQ_RE = re.compile(rb'"(?:seq|high_seq)"\s*:\s*([0-9]{1,12})\b|"id"\s*:\s*"([0-9]{1,12})"')


def _journal_bytes(tmp, n_txns):
    """A real journal: n transactions on file items, some rolled back, some confirmed."""
    j = Journal(os.path.join(tmp, "state"))
    for i in range(n_txns):
        item = kstate.Item("file", os.path.join(tmp, "f%d.conf" % (i % 3)))
        s = j.apply([(item, "v = %d\n" % i)], reason="txn %d" % i)
        if i % 3 == 2:
            j.rollback(s["id"])
    with open(j.path, "rb") as f:
        return f.read()


_BASE = {}
STATS = {"cases": 0, "damaged": 0}


def base_journal(n):
    if n not in _BASE:
        tmp = tempfile.mkdtemp(prefix="nsj-base-")
        try:
            _BASE[n] = _journal_bytes(tmp, n)
        finally:
            shutil.rmtree(tmp)
    return _BASE[n]


junk_records = st.one_of(
    st.dictionaries(st.sampled_from(["rec", "id", "seq", "items", "ts", "confirm_deadline", "high_seq", "by"]),
                    st.one_of(st.none(), st.booleans(), st.integers(-2, 10 ** 13), st.floats(allow_nan=True),
                              st.text(max_size=8), st.lists(st.integers(), max_size=2)), max_size=6),
    st.fixed_dictionaries({"rec": st.sampled_from(["begin", "applied", "confirmed", "rolled_back", "torn",
                                                   "repaired", "failed", "watchdog"]),
                           "id": st.one_of(st.text(max_size=7), st.from_regex(r"\A[0-9]{6}\Z")),
                           "seq": st.integers(-1, 10 ** 13)}),
    st.lists(st.integers(), max_size=3),
)

edits = st.lists(st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10 ** 6), st.integers(0, 255)),
    st.tuples(st.just("insert"), st.integers(0, 10 ** 6), st.binary(min_size=1, max_size=12)),
    st.tuples(st.just("delete"), st.integers(0, 10 ** 6), st.integers(1, 80)),
    st.tuples(st.just("truncate"), st.integers(0, 10 ** 6)),
    st.tuples(st.just("dup_line"), st.integers(0, 50)),
    st.tuples(st.just("drop_line"), st.integers(0, 50)),
    st.tuples(st.just("append_json"), junk_records),
), min_size=1, max_size=5)


def damage(data, ops):
    for op in ops:
        kind = op[0]
        if kind == "flip" and data:
            i = op[1] % len(data)
            data = data[:i] + bytes([op[2]]) + data[i + 1:]
        elif kind == "insert":
            i = op[1] % (len(data) + 1)
            data = data[:i] + op[2] + data[i:]
        elif kind == "delete" and data:
            i = op[1] % len(data)
            data = data[:i] + data[i + op[2]:]
        elif kind == "truncate" and data:
            data = data[:op[1] % len(data)]
        elif kind in ("dup_line", "drop_line"):
            lines = data.split(b"\n")
            if len(lines) > 1:
                i = op[1] % (len(lines) - 1)
                lines[i:i + 1] = [lines[i], lines[i]] if kind == "dup_line" else []
                data = b"\n".join(lines)
        elif kind == "append_json":
            data += json.dumps(op[1], allow_nan=True).encode() + b"\n"
    return data


@SETTINGS
@given(n=st.integers(1, 5), ops=edits)
def test_reader_repair_and_next_id_survive_any_damage(n, ops):
    data = damage(base_journal(n), ops)
    tmp = tempfile.mkdtemp(prefix="nsj-prop-")
    try:
        state = os.path.join(tmp, "state")
        os.makedirs(state, 0o700)
        with open(os.path.join(state, "journal.jsonl"), "wb") as f:
            f.write(data)
        view = read_view(os.path.join(state, "journal.jsonl"))  # never raises on content
        nlines = data.count(b"\n") + (0 if data.endswith(b"\n") or not data else 1)
        for d in view.damage:
            assert 1 <= d["line"] <= nlines and isinstance(d["error"], str) and d["error"]
        ids = [t.id for t in view.txns]
        assert len(ids) == len(set(ids))
        assert all(check_record(r) is None for t in view.txns for r in t.records)
        seen = max([int(a or b) for a, b in SEQ_RE.findall(data)] or [0])
        j = Journal(state)
        j.settle()  # what every run does first: must work on whatever is there
        j.repair()
        after = j.view()
        assert after.damage == [] and after.torn is None
        item = kstate.Item("file", os.path.join(tmp, "next.conf"))
        if max(seen, after.high_seq) >= 10 ** 12 - 1:
            with pytest.raises(NetstackError):  # the id space is used up: said, not wrapped around
                j.apply([(item, "next\n")], reason="after repair")
            return
        s = j.apply([(item, "next\n")], reason="after repair")
        assert int(s["id"]) > seen
        assert [t.id for t in j.transactions()].count(s["id"]) == 1
        STATS["damaged"] += bool(view.damage)
        STATS["cases"] += 1
    finally:
        shutil.rmtree(tmp)


def test_most_generated_journals_were_damaged():
    """The generator is doing its job: most cases above met damage, not a clean file."""
    assert STATS["cases"] >= 50 and STATS["damaged"] >= STATS["cases"] // 2, STATS


@SETTINGS
@given(rec=junk_records)
def test_check_record_never_raises(rec):
    assert check_record(rec) is None or isinstance(check_record(rec), str)


def test_unreadable_journal_is_a_clear_error(tmp_path):
    os.makedirs(str(tmp_path / "journal.jsonl"))  # a directory where the file belongs
    try:
        read_view(str(tmp_path / "journal.jsonl"))
    except NetstackError as e:
        assert e.field == "state_dir" and "journal.jsonl" in str(e)
    else:
        raise AssertionError("no error for a journal that is a directory")
