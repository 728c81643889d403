"""playbooks/tune.yml on the many-host lab, end to end over real SSH: a study on the
canary, the winner rolled out in serial batches behind the health gate, then every host
rolled back through its journal and the lab stopped with nothing left.

The lab hosts are network namespaces of this machine, so the run uses the
per-namespace search space and rolls out only per-namespace keys (docs/tuning.md)."""
import json
import subprocess

from conftest import PREFIX, REPO, lab, leftovers

SPACE = REPO / "roles" / "sysctl_tuner" / "files" / "spaces" / "nginx_latency_netns.yml"


def ns_sysctl(ns, key):
    return subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-n", key], capture_output=True, text=True,
                          check=True).stdout.strip()


def test_tune_playbook_on_three_lab_hosts(lab_env, tmp_path):
    inventory = tmp_path / "hosts.yml"
    assert lab(lab_env, "start", "3", check=False).returncode == 0
    hosts = ["%s-%03d" % (PREFIX, i) for i in (1, 2, 3)]
    keys = ["net.core.somaxconn", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_wmem"]
    before = {h: [ns_sysctl(h, k) for k in keys] for h in hosts}
    extra = {
        "tune_targets": "lab", "tune_gate_factor": 50, "tune_serial": [1, 2],
        "sysctl_tuner_space": str(SPACE), "sysctl_tuner_rollout_scope": "netns", "sysctl_tuner_persist": "runtime",
        "sysctl_tuner_state_dir": "{{ netstack_state_dir }}", "sysctl_tuner_storage": str(tmp_path / "s.db"),
        "sysctl_tuner_trials": 3, "sysctl_tuner_verify_rounds": 3, "sysctl_tuner_require_accepted": False,
        "sysctl_tuner_prune_factor": 0, "sysctl_tuner_min_rps_ratio": 0.0,
        "sysctl_tuner_bench": {"duration": 1, "warmup": 0, "repeats": 1, "connections": 4},
        "sysctl_tuner_gate_bench": {"duration": 1, "warmup": 0, "repeats": 1, "connections": 4},
    }
    play = subprocess.run(["ansible-playbook", "-i", str(inventory), str(REPO / "playbooks" / "tune.yml"),
                           "-e", json.dumps(extra)], env=lab_env, capture_output=True, text=True, cwd=str(REPO))
    assert play.returncode == 0, play.stdout[-4000:] + play.stderr[-2000:]
    assert "trial 3/3" in play.stdout
    for h in hosts:
        assert "%s " % h in play.stdout and "failed=0" in play.stdout
    rolled = {h: [ns_sysctl(h, k) for k in keys] for h in hosts}
    # every host got the same winner, and the winner differs from the defaults somewhere
    assert rolled[hosts[0]] == rolled[hosts[1]] == rolled[hosts[2]]
    assert rolled[hosts[0]] != before[hosts[0]]
    back = subprocess.run(["ansible", "-i", str(inventory), "lab", "-m", "netstack.tuning.netstack_journal",
                           "-a", "action=rollback state_dir={{ netstack_state_dir }}"],
                          env=lab_env, capture_output=True, text=True, cwd=str(REPO))
    assert back.returncode == 0, back.stdout[-3000:]
    assert {h: [ns_sysctl(h, k) for k in keys] for h in hosts} == before
    assert lab(lab_env, "stop", check=False).returncode == 0
    assert leftovers() == []
