"""Module front ends (plugins/module_utils/core/frontend.py and the modules' run()), each run in
the property suite's sandbox (tests/unit/modharness.py: private mount, network and PID
namespaces, read-only root with throwaway layers), so nothing reaches the host."""
import os

import pytest

from modharness import module_runner, run_case

SANDBOX_DROPINS = "/etc/sysctl.d"  # an overlay inside the sandbox: the host's is untouched


def result_of(payload):
    assert not payload.get("timed_out") and not payload.get("harness_error"), payload
    out = payload["run"] if "run" in payload else payload
    assert out["exception"] is None, out["exception"]
    return out["result"]


@pytest.mark.root
def test_an_integer_too_large_to_print_is_refused_naming_the_option():
    """Ansible turned '9'*5000 into an int, then its invocation log raised ValueError."""
    for name, args, field in (
            ("sysctl_set", {"sysctls": {"net.ipv4.tcp_syn_retries": 3}, "confirm_timeout": "9" * 5000}, "confirm_timeout"),
            ("http_bench", {"connections": "9" * 5000}, "connections"),
            ("netstack_journal", {"limit": "9" * 5000}, "limit"),
            ("netstack_journal", {"limit": "1e999999999"}, "limit")):  # not a billion-digit int first
        res = result_of(run_case(module_runner(name), args, check_mode=True))
        assert res["failed"] and "'%s'" % field in res["msg"] and "at most 20 ASCII digits" in res["msg"], res


def _sysctl_set_dropin_case(args, check_mode, diff):
    """Inside the sandbox: a commit-confirmed sysctl_set with persist=file writes no drop-in
    until netstack_journal confirms it."""
    from modharness import call_main
    from ansible_collections.netstack.tuning.plugins.modules import netstack_journal, sysctl_set
    path = os.path.join(SANDBOX_DROPINS, "60-nsfront.conf")
    first = call_main(sysctl_set.main, {"sysctls": {"net.ipv4.tcp_syn_retries": 3}, "persist": "file",
                                        "persist_file": "60-nsfront.conf", "confirm_timeout": 30,
                                        "state_dir": "/tmp/nsprop/state"}, False)
    before_confirm = os.path.exists(path)
    conf = call_main(netstack_journal.main, {"action": "confirm", "journal_id": first["result"]["journal_id"],
                                             "state_dir": "/tmp/nsprop/state"}, False)
    text = open(path).read() if os.path.exists(path) else None
    return {"exception": first["exception"] or conf["exception"],
            "result": {"first": first["result"], "before_confirm": before_confirm, "confirm": conf["result"],
                       "dropin": text}}


@pytest.mark.root
def test_sysctl_set_writes_the_dropin_of_a_commit_confirmed_change_on_confirm():
    res = result_of(run_case(_sysctl_set_dropin_case, {}, check_mode=False))
    assert res["first"]["changed"] and res["first"]["persist_on_confirm"] is True, res["first"]
    assert res["before_confirm"] is False          # a reboot now boots the old values
    assert res["confirm"]["changed"] is True, res["confirm"]
    assert "net.ipv4.tcp_syn_retries = 3" in res["dropin"]


@pytest.mark.root
def test_a_non_finite_float_for_an_int_option_is_refused_naming_it():
    """YAML .inf for an int option was an OverflowError traceback in Ansible's conversion."""
    for name, args, field in (("traffic_profile", {"action": "analyze", "duration": float("inf")}, "duration"),
                              ("sysctl_set", {"sysctls": {"net.ipv4.tcp_syn_retries": 3},
                                              "confirm_timeout": float("nan")}, "confirm_timeout")):
        res = result_of(run_case(module_runner(name), args, check_mode=True))
        assert res["failed"] and field in res["msg"], res


def _journal_remove_case(args, check_mode, diff):
    """Inside the sandbox: remove refuses while an entry is in force, removes nothing in
    check mode, and deletes the directory once everything was rolled back."""
    from modharness import call_main
    from ansible_collections.netstack.tuning.plugins.modules import netstack_journal, sysctl_set
    state = "/tmp/nsprop/remove-state"
    applied = call_main(sysctl_set.main, {"sysctls": {"net.ipv4.tcp_syn_retries": 4}, "state_dir": state}, False)
    steps = {"applied": applied}
    steps["refused"] = call_main(netstack_journal.main, {"action": "remove", "state_dir": state}, False)
    steps["rollback"] = call_main(netstack_journal.main, {"action": "rollback", "state_dir": state}, False)
    steps["check"] = call_main(netstack_journal.main, {"action": "remove", "state_dir": state}, True)
    after_check = os.path.isdir(state)
    steps["remove"] = call_main(netstack_journal.main, {"action": "remove", "state_dir": state}, False)
    steps["again"] = call_main(netstack_journal.main, {"action": "remove", "state_dir": state}, False)
    exc = [s["exception"] for s in steps.values() if s["exception"]]
    return {"exception": exc[0] if exc else None,
            "result": dict([(k, v["result"]) for k, v in steps.items()],
                           after_check=after_check, after_remove=os.path.exists(state))}


@pytest.mark.root
def test_journal_remove_refuses_while_in_force_and_deletes_after_rollback():
    res = result_of(run_case(_journal_remove_case, {}, check_mode=False))
    assert res["applied"]["changed"], res["applied"]
    assert res["refused"]["failed"] and "still in force" in res["refused"]["msg"], res["refused"]
    assert res["rollback"]["changed"] and res["check"]["changed"] and res["after_check"] is True, res
    assert res["remove"]["changed"] and res["after_remove"] is False, res["remove"]
    assert res["again"]["changed"] is False, res["again"]


# (module, arguments, check mode, what the message must name): the cross-option rules the
# modules declare in their argument_spec (required_if, mutually_exclusive), each broken by
# leaving the option out, by giving it as null (NetstackModule drops a null option without a
# default, so Ansible's checks count it as not given) and by an empty value (the engine's
# check); every case fails naming the option, also in real mode, with nothing written.
CONSTRAINT_CASES = [
    ("sysctl_set", {"state": "present"}, "sysctls"),
    ("sysctl_set", {"sysctls": None}, "sysctls"),
    ("sysctl_set", {"sysctls": {}}, "sysctls"),
    ("sysctl_set", {"sysctls": {"net.ipv4.tcp_syn_retries": 4}, "persist": "file"}, "persist_file"),
    ("sysctl_set", {"sysctls": {"net.ipv4.tcp_syn_retries": 4}, "persist": "file", "persist_file": None}, "persist_file"),
    ("sysctl_set", {"sysctls": {"net.ipv4.tcp_syn_retries": 4}, "persist": "file", "persist_file": ""}, "persist_file"),
    ("sysctl_set", {"sysctls": {"net.ipv4.tcp_syn_retries": 4}, "persist": "file", "persist_file": "60-x.conf",
                    "netns": "nsfront-none"}, "persist"),
    ("sysctl_set", {"state": "rolled_back"}, "names"),
    ("sysctl_set", {"state": "rolled_back", "names": []}, "names"),
    ("sysctl_set", {"state": "rolled_back", "names": ["net.ipv4.tcp_syn_retries"],
                    "sysctls": {"net.ipv4.tcp_syn_retries": 4}}, "names|sysctls"),
    ("sysctl_set", {"sysctls": {"net.ipv4.tcp_syn_retries": 4}, "journal_id": "../000001"}, "journal_id"),
    ("netstack_journal", {"action": "confirm"}, "journal_id"),
    ("netstack_journal", {"action": "confirm", "journal_id": None}, "journal_id"),
    ("netstack_journal", {"action": "confirm", "journal_id": ""}, "journal_id"),
    ("shm_agent", {"source_text": "int x;"}, "policies"),
    ("shm_agent", {"source_text": "int x;", "policies": None}, "policies"),
    ("shm_agent", {"policies": [{"name": "redis", "ports": "6379"}]}, "source_text"),
    ("shm_agent", {"policies": [{"name": "redis", "ports": "6379"}], "source_text": ""}, "source_text"),
    ("bpf_program", {"name": "nsfront", "programs": [{"function": "f", "type": "sock_ops"}]}, "src, source_text"),
    ("bpf_program", {"name": "nsfront", "programs": [{"function": "f", "type": "sock_ops"}], "src": ""}, "src"),
    ("traffic_profile", {"action": "analyze"}, "sources"),
    ("traffic_profile", {"action": "analyze", "sources": None}, "sources"),
    ("cpu_partition", {"interfaces": ["lo"], "app_cgroups": ["nsfront.slice"], "controller": {"nsfront": 1}}, "controller"),
]


def _constraint_cases(args, check_mode, diff):
    from modharness import call_main, sandbox_snapshot, snapshot_diff
    import importlib
    out = []
    for name, margs, check, want in args["cases"]:
        mod = importlib.import_module("ansible_collections.netstack.tuning.plugins.modules." + name)
        before = sandbox_snapshot(margs)
        res = call_main(mod.main, dict(margs, state_dir="/tmp/nsprop/state"), check)
        out.append({"name": name, "args": repr(margs), "check": check, "want": want, "exception": res["exception"],
                    "result": res["result"], "changes": snapshot_diff(before, sandbox_snapshot(margs))})
    return {"exception": None, "result": out}


@pytest.mark.root
def test_declared_constraints_fail_naming_the_option_null_and_empty_included():
    cases = [(n, a, check, w) for n, a, w in CONSTRAINT_CASES for check in (True, False)]
    res = result_of(run_case(_constraint_cases, {"cases": cases}, check_mode=False, timeout=120))
    for r in res:
        assert r["exception"] is None, r
        assert r["result"]["failed"] and r["want"] in r["result"]["msg"] + " " + str(r["result"].get("field")), r
        assert not [c for c in r["changes"] if "/tmp/nsprop/state" not in c], r
