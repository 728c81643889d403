"""The many-host lab end to end: start 3 hosts, run a playbook over real SSH, stop, and
check that nothing the lab made is left (namespaces, veths, bridge, sshd processes,
state directory, inventory).

Runs beside a default lab (if one is up) with its own prefix, network half and state dir.
Needs root, iproute2 and openssh-server.  Run: .venv/bin/python -m pytest tests/lab -q
"""
import os
import stat
import subprocess

import lab_names
import machine_headers
from conftest import HERE, PREFIX, REPO, lab, leftovers


def test_three_hosts_over_ssh_then_nothing_left(lab_env, tmp_path):
    inventory = tmp_path / "hosts.yml"
    started = lab(lab_env, "start", "3", check=False)
    assert started.returncode == 0, started.stderr

    status = lab(lab_env, "status", check=False)
    assert status.returncode == 0, status.stdout + status.stderr
    assert "sshd answering: 3/3" in status.stdout
    assert inventory.exists()

    play = subprocess.run(
        ["ansible-playbook", "-i", str(inventory), str(HERE / "ping.yml")],
        env=lab_env, capture_output=True, text=True, cwd=str(REPO),
    )
    assert play.returncode == 0, play.stdout[-4000:] + play.stderr[-2000:]
    for i in (1, 2, 3):
        assert "%s-%03d" % (PREFIX, i) in play.stdout
    assert "unreachable=1" not in play.stdout and "failed=1" not in play.stdout

    stopped = lab(lab_env, "stop", check=False)
    assert stopped.returncode == 0, stopped.stderr
    assert leftovers() == []
    assert not inventory.exists()


def test_the_suite_removes_a_lab_and_a_headers_journal_left_by_a_killed_run(lab_env, tmp_path):
    """What `make test` does before its snapshot (tests/support/suite.py): a CI job cut off in
    the lab stage left the test lab and the headers fallback behind, and the next run failed
    on them.  A live process's headers journal is kept; a dead one's is undone and removed."""
    assert lab(lab_env, "start", "2", check=False).returncode == 0
    assert leftovers()
    dead = subprocess.Popen(["true"])
    dead.wait()
    machine_headers.STATE_ROOT.mkdir(exist_ok=True)
    dead_dir = machine_headers.STATE_ROOT / ("%d-t" % dead.pid)
    live_dir = machine_headers.STATE_ROOT / ("%d-t" % os.getpid())
    dead_dir.mkdir()
    live_dir.mkdir()
    try:
        found = lab_names.remove_stale()
        undone = machine_headers.recover()
        assert "%s-001" % PREFIX in found and lab_names.STATE in found
        assert leftovers() == []
        assert stat.S_ISCHR(os.stat("/dev/null").st_mode)  # the lab's stop removes its inventory
        assert not dead_dir.exists() and live_dir.exists()
        assert undone == []  # the dead process's journal was empty: nothing to undo
        assert lab_names.remove_stale() == []
    finally:
        live_dir.rmdir()
        machine_headers.recover()
