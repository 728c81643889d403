"""Commit-confirmed changes survive the death of the controller.

ansible-playbook applies a change with confirm_timeout and then waits; the test SIGKILLs
the whole controller process group (ansible-playbook, its workers and the module's
parent) before the confirm task can run.  The detached watchdog on the host must restore
the prior value by itself.  The change happens inside a throwaway network namespace.
"""
import json
import os
import subprocess
import sys
import time

from conftest import kill_controller

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
NS = "it-kill-%d" % os.getpid()
KEY = "net.ipv4.tcp_keepalive_time"

PLAY = """
- hosts: testhost
  gather_facts: false
  tasks:
    - name: Apply commit-confirmed
      netstack.tuning.sysctl_set:
        netns: {ns}
        state_dir: {sd}
        sysctls: {{{key}: 4242}}
        confirm_timeout: 4
      register: applied
    - name: A long health check the controller never finishes
      ansible.builtin.wait_for:
        timeout: 120
    - name: Confirm (never reached)
      netstack.tuning.netstack_journal:
        action: confirm
        journal_id: "{{{{ applied.journal_id }}}}"
        state_dir: {sd}
"""


def read(ns):
    return subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-n", KEY], check=True,
                          capture_output=True, text=True).stdout.strip()


def test_watchdog_reverts_after_controller_is_killed(tmp_path):
    sd = tmp_path / "state"
    play = tmp_path / "play.yml"
    play.write_text(PLAY.format(ns=NS, sd=sd, key=KEY))
    subprocess.run(["ip", "netns", "add", NS], check=True)
    try:
        orig = read(NS)
        env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"))
        bindir = os.path.dirname(sys.executable)
        proc = subprocess.Popen([os.path.join(bindir, "ansible-playbook"), "-i",
                                 os.path.join(ROOT, "tests/integration/inventory.yml"), str(play)],
                                cwd=ROOT, env=env, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while read(NS) != "4242":
            assert proc.poll() is None, "playbook ended before applying"
            assert time.time() < deadline, "change never applied"
            time.sleep(0.1)
        killed_at = time.time()
        kill_controller(proc)
        assert read(NS) == "4242"  # still in force right after the controller died
        while read(NS) != orig and time.time() < killed_at + 15:
            time.sleep(0.2)
        assert read(NS) == orig, "watchdog did not restore the prior value"
        recs = [json.loads(line) for line in open(str(sd / "journal.jsonl"))]
        assert recs[-1]["rec"] == "rolled_back" and recs[-1]["by"] == "watchdog"
        assert "confirm" not in [r["rec"] for r in recs]
    finally:
        subprocess.run(["ip", "netns", "del", NS], check=True)
