"""The safety core under damage, crashes and late operators (issue 19, defects 1-6 and 10).

Each test reproduces one defect that was found by hand: a damaged journal, a killed
watchdog, a late confirm, a watchdog that undid later unrelated changes, a SIGKILL at each
step of Journal.apply.  Kernel values live in a throwaway network namespace (net.* sysctls
are per namespace), so the host is never touched.

Timing on a busy machine: what must happen *before* a confirm deadline (killing a
watchdog, appending damage, a second operator's apply) gets 3-4 s of window, and what
must happen *after* it is polled for up to 15-20 s, so a stalled test process (seconds,
beside a CPU hog) cannot turn the order around.
"""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import text_of, throwaway_netns

from ansible_collections.netstack.tuning.plugins.module_utils.core import journal as journal_mod
from ansible_collections.netstack.tuning.plugins.module_utils.core import kstate, sysctl
from ansible_collections.netstack.tuning.plugins.module_utils.core.common import NetstackError
from ansible_collections.netstack.tuning.plugins.module_utils.core.journal import Journal
from ansible_collections.netstack.tuning.plugins.modules import netstack_journal

NS = "nstest-jsafe-%d" % os.getpid()
K1, K2, K3 = "net.ipv4.tcp_syn_retries", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_probes"
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "collections")


@pytest.fixture
def netns():
    with throwaway_netns(NS) as name:
        yield name


def val(ns, key):
    return kstate.Item("sysctl", key, ns).read()


def apply_set(j, ns, values, **kw):
    changes = [c for c in sysctl.plan(values, ns) if c.changed]
    return j.apply([(c.item, c.after) for c in changes], **kw)


def wait_for(pred, timeout=15.0):
    """Poll ``pred`` for up to ``timeout`` s: generous, so a busy machine cannot fail it."""
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(0.1)
    return pred()


def read_log(path):
    """The agent's JSON-lines log; a missing file or a line still being written reads as nothing."""
    out = []
    try:
        with open(str(path)) as f:
            for line in f:
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
    except FileNotFoundError:
        pass
    return out


def watchdog_pid(j, txn_id):
    for t in j.transactions():
        if t.id == txn_id:
            return next(r["pid"] for r in t.records if r["rec"] == "watchdog")


def kill_watchdog(j, txn_id):
    pid = watchdog_pid(j, txn_id)
    os.kill(pid, signal.SIGKILL)
    assert wait_for(lambda: not os.path.exists("/proc/%d" % pid) or
                    open("/proc/%d/stat" % pid).read().split(")")[1].split()[0] == "Z")


def expired_without_watchdog(j, ns, values):
    """Apply ``values`` commit-confirmed (3 s), SIGKILL the watchdog, wait past the deadline:
    an unconfirmed change that nothing has reverted yet."""
    s = apply_set(j, ns, values, confirm_timeout=3)
    kill_watchdog(j, s["id"])
    time.sleep(max(0.0, s["confirm_deadline"] - time.time()) + 0.3)
    return s


class FakeModule(object):
    """Just what netstack_journal.run uses of AnsibleModule (params, check_mode, warn)."""

    def __init__(self, check_mode=False, **params):
        self.params = dict({"action": "list", "journal_id": None, "state_dir": None, "limit": 50}, **params)
        self.check_mode = check_mode
        self.warnings = []

    def warn(self, msg):
        self.warnings.append(msg)


def journal_module(**params):
    m = FakeModule(**params)
    return netstack_journal.run(m), m


# ---------------------------------------------------------------- 1: bytes that are not UTF-8

@pytest.mark.root
def test_non_utf8_bytes_do_not_kill_the_watchdog_nor_any_reader(netns, tmp_path):
    j = Journal(str(tmp_path))
    orig = val(netns, K1)
    s = apply_set(j, netns, {K1: 2}, confirm_timeout=3)
    with open(j.path, "ab") as f:
        f.write(b"\xff\xfe\x80 not text\n")
    assert wait_for(lambda: val(netns, K1) == orig), "the watchdog did not revert"
    # the watchdog logs its rollback just after writing it: wait for the line too
    assert wait_for(lambda: "rolled back %s" % s["id"] in text_of(tmp_path / "watchdog.log"))
    assert "journal damaged (line 4: not UTF-8" in text_of(tmp_path / "watchdog.log")
    res, m = journal_module(state_dir=str(tmp_path))
    assert [e["state"] for e in res["entries"]] == ["rolled_back"]
    assert res["damaged"][0]["line"] == 4 and "not UTF-8 (byte 0xff at column 1)" in res["damaged"][0]["error"]
    assert "line 4" in m.warnings[0]
    with pytest.raises(NetstackError) as e:
        apply_set(j, netns, {K1: 3})
    assert e.value.field == "state_dir" and "%s is damaged: line 4: not UTF-8" % j.path in str(e.value)
    assert val(netns, K1) == orig  # refused before any write


# ---------------------------------------------------------------- 2: a record cut in the middle

def _lines(j):
    return open(j.path, "rb").read().split(b"\n")[:-1]


@pytest.mark.root
def test_a_cut_record_keeps_later_transactions_and_ids_are_never_reused(netns, tmp_path):
    j = Journal(str(tmp_path))
    orig = val(netns, K1)
    for v in (2, 3, 4):
        apply_set(j, netns, {K1: v})
    lines = _lines(j)  # begin1 applied1 begin2 applied2 begin3 applied3
    cut = lines[:4] + [lines[4][:len(lines[4]) // 2] + lines[5]]  # begin3 loses its end and newline
    with open(j.path, "wb") as f:
        f.write(b"\n".join(cut) + b"\n")
    view = j.view()
    assert [t.id for t in view.txns] == ["000001", "000002"]
    assert [d["line"] for d in view.damage] == [5, 5]
    assert "a complete record after column" in view.damage[0]["error"]
    assert "applied record for unknown transaction 000003" in view.damage[1]["error"]
    with pytest.raises(NetstackError) as e:
        apply_set(j, netns, {K1: 5})
    assert "line 5" in str(e.value) and "action=repair" in str(e.value)
    res, _m = journal_module(state_dir=str(tmp_path), action="repair")
    assert res["changed"] and res["moved_to"] == str(tmp_path / "journal.damaged")
    assert b"000003" in (tmp_path / "journal.damaged").read_bytes()
    assert j.view().damage == []
    s = apply_set(j, netns, {K1: 5})
    assert s["id"] == "000004"  # 000003 was seen in the damaged line: never given out again
    assert j.rollback_all() == ["000004", "000002", "000001"]
    assert val(netns, K1) == orig


@pytest.mark.root
def test_a_cut_last_line_is_set_aside_and_its_id_not_reused(netns, tmp_path):
    j = Journal(str(tmp_path))
    apply_set(j, netns, {K1: 2})
    with open(j.path, "ab") as f:
        f.write(b'{"id": "000002", "items": [{"af')  # a writer killed mid-append
    assert [t.id for t in j.transactions()] == ["000001"] and j.view().damage == []
    s = apply_set(j, netns, {K1: 3})
    assert s["id"] == "000003"
    recs = [json.loads(x) for x in _lines(j)]
    assert [r["rec"] for r in recs] == ["begin", "applied", "torn", "begin", "applied"]
    assert recs[2]["high_seq"] == 2 and "000002" in recs[2]["text"]


# ---------------------------------------------------------------- 3: valid JSON, invalid records

@pytest.mark.root
@pytest.mark.parametrize("bad,why", [
    ({"rec": "begin", "id": "000002", "items": []}, "seq is not an integer"),
    ({"rec": "applied", "id": ["000001"]}, "id is not a string"),
    ({"rec": "begin", "id": "000002", "seq": "2", "items": []}, "seq is not an integer"),
    ({"rec": "begin", "id": "000002", "seq": 2, "items": [{"kind": "sysctl", "key": "../../etc/x",
                                                           "before": "1", "after": "2"}]}, "items[0]"),
    ({"rec": "begin", "id": "000002", "seq": 2, "items": [{"kind": "sysctl", "key": "net.core.somaxconn",
                                                           "netns": "../x", "before": "1", "after": "2"}]},
     "invalid netns"),
    ({"rec": "applied", "id": "000001", "confirm_deadline": float("nan")}, "confirm_deadline"),
    ({"rec": "applied", "id": "000001"}, "applied record for transaction 000001, which is applied"),
    ([1, 2], "not a JSON object"),
    ({"rec": "rolled_back", "id": "000007"}, "unknown transaction"),
])
def test_records_of_the_wrong_shape_are_reported_not_raised(netns, tmp_path, bad, why):
    j = Journal(str(tmp_path))
    apply_set(j, netns, {K1: 2})
    with open(j.path, "a") as f:
        f.write(json.dumps(bad, allow_nan=True) + "\n")
    view = j.view()
    assert [t.id for t in view.txns] == ["000001"] and view.txns[0].state == "applied"
    assert len(view.damage) == 1 and view.damage[0]["line"] == 3 and why in view.damage[0]["error"]
    res, _m = journal_module(state_dir=str(tmp_path))
    assert res["damaged"] == view.damage
    for action in ("rollback", "confirm"):
        with pytest.raises(NetstackError) as e:
            journal_module(state_dir=str(tmp_path), action=action, journal_id="000001")
        assert e.value.field in ("state_dir", "journal_id")


# ---------------------------------------------------------------- 4: the watchdog is gone

@pytest.mark.root
def test_an_expired_change_is_reverted_by_the_next_run_when_its_watchdog_died(netns, tmp_path):
    j = Journal(str(tmp_path))
    orig1, orig2 = val(netns, K1), val(netns, K2)
    s = expired_without_watchdog(j, netns, {K1: 2})
    assert val(netns, K1) == "2"  # nobody reverted it yet
    res, _m = journal_module(state_dir=str(tmp_path), action="recover", check_mode=True)
    assert res["undone"] == [s["id"]] and val(netns, K1) == "2"  # check mode only reports
    s2 = apply_set(j, netns, {K2: 17})  # the next netstack run on the host
    assert s2["recovered"] == [s["id"]]
    assert val(netns, K1) == orig1 and val(netns, K2) == "17"
    t = j.get(s["id"])
    assert t.state == "rolled_back" and t.rolled_back_by == "expire"
    j.rollback_all()
    assert val(netns, K2) == orig2


@pytest.mark.root
def test_netstack_journal_recover_reverts_an_expired_change(netns, tmp_path):
    j = Journal(str(tmp_path))
    orig = val(netns, K1)
    s = expired_without_watchdog(j, netns, {K1: 2})
    res, _m = journal_module(state_dir=str(tmp_path), action="recover")
    assert res["changed"] and res["undone"] == [s["id"]] and val(netns, K1) == orig


# ---------------------------------------------------------------- 5: a late confirm

@pytest.mark.root
def test_a_confirm_after_the_deadline_is_refused_and_the_change_reverted(netns, tmp_path):
    j = Journal(str(tmp_path))
    orig = val(netns, K1)
    s = expired_without_watchdog(j, netns, {K1: 2})
    with pytest.raises(NetstackError) as e:  # check mode: says it will be reverted, writes nothing
        journal_module(state_dir=str(tmp_path), action="confirm", journal_id=s["id"], check_mode=True)
    assert "will be reverted" in str(e.value) and val(netns, K1) == "2"
    with pytest.raises(NetstackError) as e:
        j.confirm(s["id"])
    assert e.value.field == "journal_id"
    assert "not confirmed before its deadline" in str(e.value) and "was reverted" in str(e.value)
    assert val(netns, K1) == orig and j.get(s["id"]).state == "rolled_back"


# ---------------------------------------------------------------- 6: later transactions

@pytest.mark.root
def test_a_watchdog_reverts_only_its_own_keys_and_reports_conflicts(netns, tmp_path):
    j = Journal(str(tmp_path))
    orig = {k: val(netns, k) for k in (K1, K2, K3)}
    a = apply_set(j, netns, {K1: 2, K3: 5}, confirm_timeout=4)       # operator A, never confirmed
    b = apply_set(j, netns, {K2: 17, K3: 6}, reason="operator B")      # operator B, no confirm
    assert wait_for(lambda: j.get(a["id"]).state == "rolled_back")
    assert val(netns, K1) == orig[K1]           # A's own key: reverted
    assert val(netns, K2) == "17"               # B's unrelated key: kept
    assert val(netns, K3) == "6"                # A's key that B changed since: kept, reported
    rb = j.get(a["id"]).records[-1]
    assert rb["by"] == "watchdog" and rb["conflicts"] == [
        {"key": "%s@%s" % (K3, netns), "set": "5", "found": "6", "kept": True}]
    assert wait_for(lambda: "left alone (changed since): %s@%s" % (K3, netns) in text_of(tmp_path / "watchdog.log"))
    assert j.get(b["id"]).state == "applied"


# ---------------------------------------------------------------- persist=file and a reboot

@pytest.mark.root
def test_a_dropin_of_a_commit_confirmed_change_is_written_only_on_confirm(netns, tmp_path):
    j = Journal(str(tmp_path / "state"))
    dropin = kstate.Item("file", str(tmp_path / "60-x.conf"))
    changes = [(c.item, c.after) for c in sysctl.plan({K1: 2}, netns)]
    s = j.apply(changes, confirm_timeout=30, on_confirm=[(dropin, "%s = 2\n" % K1)])
    assert not os.path.exists(dropin.path)  # a reboot now boots the old values
    assert j.confirm(s["id"]) is True
    assert open(dropin.path).read() == "%s = 2\n" % K1
    follow = j.transactions()[-1]
    assert follow.begin["source"] == "confirm" and follow.items[0]["key"] == dropin.path
    j.rollback_all()
    assert not os.path.exists(dropin.path)


# ---------------------------------------------------------------- 10: list limit

def test_list_limit_must_not_be_negative(tmp_path):
    with pytest.raises(NetstackError) as e:
        journal_module(state_dir=str(tmp_path), limit=-1)
    assert e.value.field == "limit"


def test_state_dir_with_a_nul_byte_is_refused_naming_the_field(tmp_path):
    with pytest.raises(NetstackError) as e:
        journal_module(state_dir=str(tmp_path) + "/a\x00b")
    assert e.value.field == "state_dir"
    assert os.listdir(str(tmp_path)) == []


# ---------------------------------------------------------------- crash tests

CRASHER = r'''
import os, signal, sys
sys.path.insert(0, sys.argv[1])
from ansible_collections.netstack.tuning.plugins.module_utils.core import journal, kstate
state_dir, ns, step = sys.argv[2], sys.argv[3], sys.argv[4]
die = lambda: os.kill(os.getpid(), signal.SIGKILL)
calls = {"fsync": 0, "write_raw": 0, "os_write": 0}
real_fsync, real_write_raw, real_os_write = os.fsync, kstate.Item.write_raw, os.write
def fsync(fd):
    calls["fsync"] += 1
    if step == "before_begin_fsync" and calls["fsync"] == 1:
        die()
    if step == "before_applied_fsync" and calls["fsync"] == 3:  # begin, watchdog, applied
        die()
    real_fsync(fd)
    if step == "after_begin_fsync" and calls["fsync"] == 1:
        die()
def write_raw(self, value):
    calls["write_raw"] += 1
    if step == "between_writes" and calls["write_raw"] == 2:
        die()
    real_write_raw(self, value)
    if step == "after_writes" and calls["write_raw"] == 3:
        die()
def os_write(fd, data):
    if step == "mid_begin_write" and b'"rec": "begin"' in data:
        real_os_write(fd, data[:len(data) // 2])
        die()
    return real_os_write(fd, data)
journal.os.fsync = fsync
journal.os.write = os_write
kstate.Item.write_raw = write_raw
keys = ["net.ipv4.tcp_syn_retries", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_probes"]
changes = [(kstate.Item("sysctl", k, ns), v) for k, v in zip(keys, ("2", "17", "5"))]
journal.Journal(state_dir).apply(changes, source="crash-test", confirm_timeout=1.5)
if step == "after_applied_fsync":
    die()
'''


def _kill_tree_marked(marker):
    """SIGKILL every process whose command line carries ``marker`` (the crasher's
    watchdog: a fork of it in a session of its own)."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            cmd = open("/proc/%s/cmdline" % pid, "rb").read()
        except OSError:
            continue
        if marker.encode() in cmd:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except OSError:
                pass


@pytest.mark.root
@pytest.mark.parametrize("step", ["mid_begin_write", "before_begin_fsync", "after_begin_fsync",
                                  "between_writes", "after_writes", "before_applied_fsync",
                                  "after_applied_fsync"])
def test_sigkill_at_each_step_of_apply_then_the_next_run_restores(netns, tmp_path, step):
    """kill -9 of the applier at each step of Journal.apply, and of its watchdog: the next
    netstack run on the host (here: another apply, on an unrelated key) leaves every key
    with its value from before the transaction."""
    keys = [K1, K2, K3]
    orig = {k: val(netns, k) for k in keys}
    state = str(tmp_path / "state")
    p = subprocess.run([sys.executable, "-c", CRASHER, ROOT, state, netns, step], timeout=60)
    assert p.returncode == -signal.SIGKILL
    _kill_tree_marked(state)
    time.sleep(1.8)  # past the 1.5 s confirm deadline, so "applied" is expired too
    j = Journal(state)
    s = j.apply([(kstate.Item("sysctl", "net.ipv4.ip_default_ttl", netns), "33")], source="next run")
    assert {k: val(netns, k) for k in keys} == orig, step
    assert j.view().damage == []
    ids = [t.id for t in j.transactions()]
    assert len(ids) == len(set(ids)) and s["id"] == ids[-1]
    assert all(t.state == "rolled_back" for t in j.transactions()[:-1])


# ---------------------------------------------------------------- the agent watches deadlines

@pytest.mark.root
def test_the_agent_reverts_an_expired_change_when_its_watchdog_died(netns, tmp_path):
    """A running agent with a one-hour pass interval still reverts within seconds of the
    deadline: it wakes up for pending confirm deadlines."""
    from ansible_collections.netstack.tuning.plugins.module_utils.agent import daemon
    state = str(tmp_path / "state")
    cfg = tmp_path / "agent.json"
    cfg.write_text(json.dumps({"interval": 3600, "state_dir": state, "log": str(tmp_path / "agent.log"),
                               "metrics": {"port": 0}}))
    orig = val(netns, K1)
    j = Journal(state)
    s = apply_set(j, netns, {K1: 2}, confirm_timeout=3)
    kill_watchdog(j, s["id"])
    pidfile = tmp_path / "agent.pid"
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = daemon.Agent(str(cfg), None, pidfile=str(pidfile), status=str(tmp_path / "status.json")).run()
        finally:
            os._exit(code)
    try:
        assert wait_for(lambda: j.get(s["id"]).state == "rolled_back", timeout=20)
        assert val(netns, K1) == orig and j.get(s["id"]).rolled_back_by == "expire"
        # The agent writes its log line just after the journal records the rollback, so on a
        # busy machine the test can look in between: wait for the line as well.
        assert wait_for(lambda: any(r.get("controller") == "journal" and r.get("expired") == [s["id"]]
                                    for r in read_log(tmp_path / "agent.log")), timeout=20)
    finally:
        os.kill(pid, signal.SIGTERM)
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
