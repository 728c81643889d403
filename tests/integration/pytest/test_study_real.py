"""The tuning study against real parts: the controller killed mid-trial (the host
reverts by itself), and one study shared by two hosts through a real PostgreSQL server
started by the test."""
import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest
from conftest import kill_controller

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
BIN = os.path.dirname(sys.executable)


def sysctl(key):
    return subprocess.run(["sysctl", "-n", key], capture_output=True, text=True, check=True).stdout.strip()


def lab_namespaces():
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith("nstrial-")]


def playbook(tmp_path, text, inventory=None):
    play = tmp_path / "play.yml"
    play.write_text(text)
    inv = inventory or os.path.join(ROOT, "tests/integration/inventory.yml")
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"))
    return [os.path.join(BIN, "ansible-playbook"), "-i", inv, str(play)], env


SPACE = """
name: kill
parameters:
  - {name: vm.stat_interval, type: int, low: 4, high: 6, reason: host-wide key the watchdog must revert}
  - {name: net.core.somaxconn, type: int, low: 256, high: 1024, reason: namespace key}
"""


def ansiballz_payloads():
    return set(glob.glob("/tmp/ansible_netstack.tuning.*_payload_*"))


def test_controller_killed_mid_trial_host_reverts_by_itself(tmp_path):
    payloads = ansiballz_payloads()
    (tmp_path / "space.yml").write_text(SPACE)
    orig = sysctl("vm.stat_interval")
    assert orig not in ("4", "5", "6")
    argv, env = playbook(tmp_path, """
- hosts: testhost
  gather_facts: false
  tasks:
    - netstack.tuning.sysctl_study:
        space: {d}/space.yml
        trials: 3
        storage: {d}/s.db
        state_dir: {d}/state
        confirm_timeout: 12
        bench: {{duration: 4, warmup: 0, repeats: 2, connections: 4}}
""".format(d=tmp_path))
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 90
        while sysctl("vm.stat_interval") == orig:  # wait until a trial has applied its set
            assert proc.poll() is None and time.time() < deadline, "no trial applied anything"
            time.sleep(0.2)
        assert lab_namespaces(), "the trial's lab should exist while it runs"
        killed = time.time()
        # The controller and everything it started on this host, module process included,
        # die at once; only the detached watchdog and reaper are left to clean up.
        kill_controller(proc)
        assert sysctl("vm.stat_interval") != orig  # nobody reverted it yet
        while (sysctl("vm.stat_interval") != orig or lab_namespaces()) and time.time() < killed + 30:
            time.sleep(0.5)
        assert sysctl("vm.stat_interval") == orig, "the watchdog did not revert the host-wide key"
        assert lab_namespaces() == [], "the reaper did not remove the lab"
        assert subprocess.run(["pgrep", "-f", "[n]etstack-httpbench-"], capture_output=True).stdout == b""
        # the watchdog logs its rollback just after restoring the key: allow it a moment
        wlog = tmp_path / "state" / "watchdog.log"
        while "rolled back" not in wlog.read_text() and time.time() < killed + 40:
            time.sleep(0.2)
        log = wlog.read_text()
        assert "rolled back" in log and "confirm timeout" in log
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        # The SIGKILLed module process could not remove AnsiballZ's payload directory (that
        # is ansible's, not netstack's, to clean; a dead controller on a real host leaves it too).
        for d in ansiballz_payloads() - payloads:
            shutil.rmtree(d, ignore_errors=True)


PG_BIN = "/usr/lib/postgresql/15/bin"


@pytest.fixture
def postgres():
    """A real PostgreSQL server on 127.0.0.1, in a scratch directory, trust auth."""
    if not os.path.exists(os.path.join(PG_BIN, "initdb")):
        pytest.fail("PostgreSQL 15 server binaries missing: scripts/bootstrap.sh installs postgresql")
    d = tempfile.mkdtemp(prefix="netstack-pg-")
    os.chmod(d, 0o777)
    port = 55000 + os.getpid() % 1000
    run_as = ["runuser", "-u", "postgres", "--"]
    subprocess.run(run_as + [PG_BIN + "/initdb", "-D", d + "/data", "--auth=trust", "-U", "postgres"],
                   check=True, capture_output=True)
    subprocess.run(run_as + [PG_BIN + "/pg_ctl", "-D", d + "/data", "-l", d + "/log", "-w", "-o",
                             "-p %d -k %s -h 127.0.0.1" % (port, d), "start"], check=True, capture_output=True)
    try:
        subprocess.run(run_as + ["psql", "-h", "127.0.0.1", "-p", str(port), "-c", "CREATE DATABASE optuna"],
                       check=True, capture_output=True)
        yield "postgresql+psycopg2://postgres@127.0.0.1:%d/optuna" % port
    finally:
        subprocess.run(run_as + [PG_BIN + "/pg_ctl", "-D", d + "/data", "-m", "fast", "stop"], capture_output=True)
        shutil.rmtree(d, ignore_errors=True)


def test_two_hosts_share_one_study_in_postgresql(tmp_path, postgres):
    import optuna
    (tmp_path / "space.yml").write_text("""
name: shared
parameters:
  - {name: net.core.somaxconn, type: int, low: 256, high: 8192, log: true, reason: namespace key}
  - {name: net.ipv4.tcp_slow_start_after_idle, type: categorical, choices: [0, 1], reason: namespace key}
""")
    inv = tmp_path / "inv.yml"
    inv.write_text("all:\n  hosts:\n    h1: {ansible_connection: local, ansible_python_interpreter: /usr/bin/python3}\n"
                   "    h2: {ansible_connection: local, ansible_python_interpreter: /usr/bin/python3}\n")
    argv, env = playbook(tmp_path, """
- hosts: all
  gather_facts: false
  tasks:
    - netstack.tuning.sysctl_study:
        space: {d}/space.yml
        trials: 2
        storage: {url}
        study_name: shared-class
        state_dir: {d}/state-{{{{ inventory_hostname }}}}
        bench: {{duration: 1, warmup: 0, repeats: 1, connections: 4}}
        verify_rounds: 3
        min_rps_ratio: 0.0
        prune_factor: 0
        compare_tuned: false
""".format(d=tmp_path, url=postgres), inventory=str(inv))
    p = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:]
    st = optuna.load_study(study_name="shared-class", storage=postgres)
    hosts = sorted(t.user_attrs.get("host") for t in st.trials)
    assert hosts == ["h1", "h1", "h2", "h2"]
    states = [(t.state.name, t.user_attrs.get("error")) for t in st.trials]
    assert all(s == "COMPLETE" for s, _ in states), states
    assert {"baseline:h1", "baseline:h2"} <= set(st.user_attrs)
