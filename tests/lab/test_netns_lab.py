"""The many-host lab end to end: start 3 hosts, run a playbook over real SSH, stop, and
check that nothing the lab made is left (namespaces, veths, bridge, sshd processes,
state directory, inventory).

Runs beside a default lab (if one is up) with its own prefix, network half and state dir.
Needs root, iproute2 and openssh-server.  Run: .venv/bin/python -m pytest tests/lab -q
"""
import subprocess

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
